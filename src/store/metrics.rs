//! What `/metrics` and the status page read from the store: a few aggregate counts taken
//! at scrape time, and the latest failed deliveries. Read only (the read pool).
//!
//! Each query is bounded by what is open or recent, never by history, so a scrape stays
//! cheap with millions of deliveries (plans checked with `EXPLAIN QUERY PLAN`):
//!
//! - pending and retrying deliveries: a covering scan of the partial index `deliveries_due`
//!   (migrations/0004), which holds open rows only;
//! - deliveries being sent: one range of `deliveries_by_run (run_id, status)` per run (runs
//!   are one per firing: thousands, not millions);
//! - runs by status: a scan of `runs` (small, for the same reason);
//! - the webhook outbox: the partial indexes `webhook_outbox_due` (pending, 0002) and
//!   `webhook_outbox_expired` (0007);
//! - recent failures: the end of the partial index `deliveries_failed_by_time` (0007).

use std::collections::BTreeMap;

use sqlx::Row;

use super::runs::{RunState, ts};
use super::{Store, StoreError};

/// Counts for `/metrics`, as of one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// Deliveries still to send (`pending`, `retry` or `sending`) by channel: every channel
    /// in force, with 0 when it has none, and any other channel that still has some.
    pub deliveries_pending: BTreeMap<String, u64>,
    /// Runs by status, every status present (0 when none).
    pub runs: BTreeMap<&'static str, u64>,
    /// Webhook events not yet acknowledged (`pending`).
    pub webhook_outbox_pending: u64,
    /// Webhook events given up on (`expired`).
    pub webhook_outbox_expired: u64,
}

/// A failed delivery, as the status page lists it. `address` is the raw address: mask it
/// before showing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedDelivery {
    pub id: i64,
    pub run: i64,
    pub campaign: String,
    pub channel: Option<String>,
    pub contact_id: String,
    pub address: Option<String>,
    /// `failed`, or `unknown` (interrupted mid-send on a channel that cannot de-duplicate).
    pub status: String,
    pub reason: Option<String>,
    pub at: jiff::Timestamp,
}

/// Pending and retrying deliveries by channel: a covering scan of the partial index
/// `deliveries_due`, which holds open rows only.
const WAITING_BY_CHANNEL: &str = "SELECT channel, count(*) FROM deliveries \
     WHERE status IN ('pending', 'retry') GROUP BY channel";

/// Deliveries being sent, by channel. CROSS JOIN fixes the order (runs first, then one
/// range of `deliveries_by_run` each): without statistics SQLite would rather scan that
/// whole index.
const SENDING_BY_CHANNEL: &str = "SELECT d.channel, count(*) FROM runs r CROSS JOIN deliveries d \
     ON d.run_id = r.id AND d.status = 'sending' GROUP BY d.channel";

/// The newest failed or unknown deliveries: the end of `deliveries_failed_by_time`.
const RECENT_FAILURES: &str = "SELECT d.id, d.run_id, r.campaign, d.channel, d.contact_id, \
     d.address, d.status, d.reason, d.updated_at FROM deliveries d JOIN runs r ON r.id = d.run_id \
     WHERE d.status IN ('failed', 'unknown') ORDER BY d.updated_at DESC, d.id DESC LIMIT ?";

const RUN_STATES: [RunState; 7] = [
    RunState::Scheduled,
    RunState::Running,
    RunState::Paused,
    RunState::Finished,
    RunState::Cancelled,
    RunState::Failed,
    RunState::Skipped,
];

impl Store {
    /// The counts `/metrics` reports as gauges.
    pub async fn metric_gauges(&self) -> Result<StoreGauges, StoreError> {
        let mut gauges = StoreGauges::default();
        let channels: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM specs WHERE kind = 'Channel' AND retired_in IS NULL",
        )
        .fetch_all(self.reader())
        .await?;
        for channel in channels {
            gauges.deliveries_pending.insert(channel, 0);
        }
        // Two queries, not one `IN ('pending', 'retry', 'sending')`: the partial index holds
        // only pending and retrying rows, and `sending` rows are found per run.
        let waiting: Vec<(Option<String>, i64)> = sqlx::query_as(WAITING_BY_CHANNEL)
            .fetch_all(self.reader())
            .await?;
        let sending: Vec<(Option<String>, i64)> = sqlx::query_as(SENDING_BY_CHANNEL)
            .fetch_all(self.reader())
            .await?;
        for (channel, n) in waiting.into_iter().chain(sending) {
            *gauges
                .deliveries_pending
                .entry(channel.unwrap_or_default())
                .or_insert(0) += u64::try_from(n).unwrap_or(0);
        }
        gauges.runs = RUN_STATES.iter().map(|s| (s.as_str(), 0)).collect();
        let runs: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM runs GROUP BY status")
                .fetch_all(self.reader())
                .await?;
        for (status, n) in runs {
            if let Some(state) = RunState::parse(&status) {
                gauges
                    .runs
                    .insert(state.as_str(), u64::try_from(n).unwrap_or(0));
            }
        }
        let (pending, expired): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_outbox WHERE status = 'pending'), \
             (SELECT count(*) FROM webhook_outbox WHERE status = 'expired')",
        )
        .fetch_one(self.reader())
        .await?;
        gauges.webhook_outbox_pending = u64::try_from(pending).unwrap_or(0);
        gauges.webhook_outbox_expired = u64::try_from(expired).unwrap_or(0);
        Ok(gauges)
    }

    /// The `limit` latest failed (or unknown) deliveries, newest first.
    pub async fn recent_failures(&self, limit: u32) -> Result<Vec<FailedDelivery>, StoreError> {
        let rows = sqlx::query(RECENT_FAILURES)
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(FailedDelivery {
                    id: row.try_get("id")?,
                    run: row.try_get("run_id")?,
                    campaign: row.try_get("campaign")?,
                    channel: row.try_get("channel")?,
                    contact_id: row.try_get("contact_id")?,
                    address: row.try_get("address")?,
                    status: row.try_get("status")?,
                    reason: row.try_get("reason")?,
                    at: ts(row.try_get("updated_at")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with one run (revision, campaign spec) and the given deliveries:
    /// (channel, status, updated_at).
    async fn store_with(deliveries: &[(&str, &str, i64)]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        for sql in [
            "INSERT INTO revisions (id, hash, status, source, created_at) VALUES (1, 'h', 'applied', 'd', 0)",
            "INSERT INTO specs (id, kind, name, introduced_in, hash, body, file, line) \
             VALUES (1, 'Campaign', 'promo', 1, 'h', '{}', 'c.yaml', 1), \
             (2, 'Channel', 'sms', 1, 'h', '{}', 'ch.yaml', 1), \
             (3, 'Channel', 'idle', 1, 'h', '{}', 'ch.yaml', 9)",
            "INSERT INTO runs (id, campaign, campaign_spec_id, revision_id, trigger, status, created_at) \
             VALUES (1, 'promo', 1, 1, 'manual', 'running', 0), (2, 'promo', 1, 1, 'manual', 'finished', 0)",
            "INSERT INTO webhook_outbox (webhook, event_id, event_type, payload, status, next_attempt_at, created_at) \
             VALUES ('w', 'e1', 't', '{}', 'pending', 0, 0), ('w', 'e2', 't', '{}', 'expired', 0, 0), \
             ('w', 'e3', 't', '{}', 'delivered', 0, 0), ('w', 'e4', 't', '{}', 'pending', 0, 0)",
        ] {
            sqlx::query(sql).execute(&mut *tx).await.unwrap();
        }
        for (i, (channel, status, at)) in deliveries.iter().enumerate() {
            sqlx::query(
                "INSERT INTO deliveries (run_id, contact_pk, contact_id, channel, address, status, \
                 reason, idempotency_key, created_at, updated_at) VALUES (1, ?, ?, ?, '+51987654321', ?, 'why', ?, 0, ?)",
            )
            .bind(i as i64)
            .bind(format!("c-{i}"))
            .bind(channel)
            .bind(status)
            .bind(format!("k{i}"))
            .bind(at)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn open_deliveries_are_counted_by_channel_with_zeros_for_idle_channels() {
        let (_dir, store) = store_with(&[
            ("sms", "pending", 1),
            ("sms", "retry", 1),
            ("sms", "sending", 1),
            ("sms", "sent", 1),
            ("sms", "failed", 1),
            ("email", "pending", 1),
        ])
        .await;
        let g = store.metric_gauges().await.unwrap();
        assert_eq!(g.deliveries_pending.get("sms"), Some(&3));
        assert_eq!(g.deliveries_pending.get("idle"), Some(&0));
        // Not in force, but still has open rows: reported, not hidden.
        assert_eq!(g.deliveries_pending.get("email"), Some(&1));
        assert_eq!(g.runs["running"], 1);
        assert_eq!(g.runs["finished"], 1);
        assert_eq!(g.runs["skipped"], 0);
        assert_eq!(g.runs.len(), 7);
        assert_eq!(g.webhook_outbox_pending, 2);
        assert_eq!(g.webhook_outbox_expired, 1);
    }

    #[tokio::test]
    async fn recent_failures_are_the_newest_failed_or_unknown_first() {
        let (_dir, store) = store_with(&[
            ("sms", "failed", 10),
            ("sms", "sent", 50),
            ("sms", "unknown", 30),
            ("sms", "failed", 20),
        ])
        .await;
        let failures = store.recent_failures(2).await.unwrap();
        let seen: Vec<(&str, i64)> = failures
            .iter()
            .map(|f| (f.status.as_str(), f.at.as_millisecond()))
            .collect();
        assert_eq!(seen, [("unknown", 30), ("failed", 20)]);
        assert_eq!(failures[0].campaign, "promo");
        assert_eq!(failures[0].reason.as_deref(), Some("why"));
    }

    #[tokio::test]
    async fn the_scrape_queries_use_indexes_not_a_scan_of_deliveries() {
        let (_dir, store) = store_with(&[]).await;
        let plan = |sql: &'static str| {
            let store = store.clone();
            async move {
                let mut query =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
                if sql.contains('?') {
                    query = query.bind(10_i64);
                }
                let rows: Vec<(i64, i64, i64, String)> =
                    query.fetch_all(store.reader()).await.unwrap();
                rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
            }
        };
        let waiting = plan(WAITING_BY_CHANNEL).await;
        assert!(waiting.contains("deliveries_due"), "{waiting}");
        let sending = plan(SENDING_BY_CHANNEL).await;
        assert!(
            sending.contains("SEARCH d USING INDEX deliveries_by_run (run_id=? AND status=?)"),
            "{sending}"
        );
        let failures = plan(RECENT_FAILURES).await;
        assert!(failures.contains("deliveries_failed_by_time"), "{failures}");
        assert!(!failures.contains("TEMP B-TREE FOR ORDER BY"), "{failures}");
        let expired = plan("SELECT count(*) FROM webhook_outbox WHERE status = 'expired'").await;
        assert!(expired.contains("webhook_outbox_expired"), "{expired}");
    }
}
