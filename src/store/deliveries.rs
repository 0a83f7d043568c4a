//! Deliveries: claiming due rows for sending, recording results, expiry, and crash
//! recovery. The hot path uses multi-row statements: one `UPDATE … WHERE id IN (SELECT …
//! LIMIT n) RETURNING` per (run, channel) to claim, and one `UPDATE … FROM (VALUES …)` per
//! chunk of results to record, each batch inside one write transaction.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, Row};

use super::contacts::ContactRecord;
use super::{Store, StoreError};
use crate::spec::channel::Medium;

/// A delivery's status (the `deliveries.status` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// A contact left out at the snapshot, with the reason; never sent.
    Excluded,
    Pending,
    Sending,
    Retry,
    Sent,
    Delivered,
    Read,
    Failed,
    Skipped,
    Expired,
    Cancelled,
    /// Interrupted while sending on a channel that cannot de-duplicate: may or may not
    /// have been delivered.
    Unknown,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 12] = [
        DeliveryStatus::Excluded,
        DeliveryStatus::Pending,
        DeliveryStatus::Sending,
        DeliveryStatus::Retry,
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Failed,
        DeliveryStatus::Skipped,
        DeliveryStatus::Expired,
        DeliveryStatus::Cancelled,
        DeliveryStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Excluded => "excluded",
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Retry => "retry",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::Expired => "expired",
            DeliveryStatus::Cancelled => "cancelled",
            DeliveryStatus::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A final state of a delivery that was to be sent (`excluded` rows are not
    /// deliveries to send, and the three open states are not final).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            DeliveryStatus::Excluded
                | DeliveryStatus::Pending
                | DeliveryStatus::Sending
                | DeliveryStatus::Retry
        )
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where to claim from, and how many at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimSlot {
    pub run: i64,
    pub channel: String,
    pub limit: u32,
}

/// A delivery claimed for sending: now `sending`, `attempts` already counting this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub run: i64,
    pub contact_pk: i64,
    pub contact_id: String,
    pub channel: String,
    pub address: String,
    pub attempts: u32,
    pub idempotency_key: String,
}

/// What to write for one claimed delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub id: i64,
    pub contact_pk: i64,
    pub medium: Medium,
    /// `sent`, `retry`, `pending` (put back, e.g. outside a send window), `failed`,
    /// `skipped` or `unknown`. A `retry` or `pending` row of a run cancelled meanwhile is
    /// written `cancelled` instead.
    pub status: DeliveryStatus,
    pub reason: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub provider_message_id: Option<String>,
    /// -1 to take back the attempt counted by the claim (nothing was attempted).
    pub attempts_delta: i64,
    /// The provider said the contact opted out: opt them out of `medium`.
    pub opt_out: bool,
}

/// What the housekeeping before a claim did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Housekeeping {
    pub expired: u64,
    /// Runs that finished (no open delivery left).
    pub finished_runs: Vec<i64>,
}

/// Rows per multi-row statement. 8 values per recorded row × 1,000 stays far below
/// SQLite's 32,766 variables.
const CHUNK: usize = 1000;

fn add<'q, T>(args: &mut SqliteArguments, value: T) -> Result<(), sqlx::Error>
where
    T: 'q + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    args.add(value).map_err(sqlx::Error::Encode)
}

fn question_marks(n: usize) -> String {
    vec!["?"; n].join(",")
}

impl Store {
    /// In one write transaction: expires the open deliveries of runs past `expires_at`,
    /// finishes runs with no open delivery left, then claims up to `limit` due deliveries
    /// (`pending` or `retry` with `next_attempt_at <= now`) of each slot whose run is
    /// `running`, oldest due first: `sending`, `attempts + 1`.
    pub async fn claim(
        &self,
        slots: &[ClaimSlot],
        now: jiff::Timestamp,
    ) -> Result<(Vec<Claimed>, Housekeeping), StoreError> {
        let now = now.as_millisecond();
        let mut tx = self.begin_write().await?;
        let mut housekeeping = Housekeeping {
            expired: sqlx::query(
                "UPDATE deliveries SET status = 'expired', reason = 'past the run''s max_duration', \
                 next_attempt_at = NULL, updated_at = ?1 \
                 WHERE status IN ('pending', 'retry') AND run_id IN (SELECT id FROM runs \
                 WHERE status IN ('running', 'paused') AND expires_at <= ?1)",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            finished_runs: Vec::new(),
        };
        housekeeping.finished_runs = sqlx::query_scalar(
            "UPDATE runs SET status = 'finished', finished_at = ?1 \
             WHERE (status = 'running' OR (status = 'paused' AND expires_at <= ?1)) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.run_id = runs.id \
             AND d.status IN ('pending', 'sending', 'retry')) RETURNING id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        super::webhooks::enqueue_runs_finished(&mut tx, &housekeeping.finished_runs, now).await?;
        let mut claimed = Vec::new();
        for slot in slots.iter().filter(|s| s.limit > 0) {
            let rows = sqlx::query(
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, updated_at = ?1 \
                 WHERE id IN (SELECT id FROM deliveries WHERE run_id = ?2 AND channel = ?3 \
                 AND status IN ('pending', 'retry') AND next_attempt_at <= ?1 \
                 AND EXISTS (SELECT 1 FROM runs WHERE id = ?2 AND status = 'running') \
                 ORDER BY next_attempt_at, id LIMIT ?4) \
                 RETURNING id, run_id, contact_pk, contact_id, channel, address, attempts, \
                 idempotency_key",
            )
            .bind(now)
            .bind(slot.run)
            .bind(&slot.channel)
            .bind(i64::from(slot.limit))
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                claimed.push(Claimed {
                    id: row.try_get(0)?,
                    run: row.try_get(1)?,
                    contact_pk: row.try_get(2)?,
                    contact_id: row.try_get(3)?,
                    channel: row.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
                    address: row.try_get::<Option<String>, _>(5)?.unwrap_or_default(),
                    attempts: u32::try_from(row.try_get::<i64, _>(6)?).unwrap_or(u32::MAX),
                    idempotency_key: row.try_get(7)?,
                });
            }
        }
        tx.commit().await?;
        claimed.sort_by_key(|c| c.id);
        Ok((claimed, housekeeping))
    }

    /// The contacts with these row keys (deleted ones are simply absent), by row key.
    pub async fn contacts_by_pk(
        &self,
        pks: &[i64],
    ) -> Result<BTreeMap<i64, ContactRecord>, StoreError> {
        let mut out = BTreeMap::new();
        let mut unique: Vec<i64> = pks.to_vec();
        unique.sort_unstable();
        unique.dedup();
        for chunk in unique.chunks(CHUNK) {
            let source = format!(
                "SELECT * FROM contacts WHERE pk IN ({})",
                question_marks(chunk.len())
            );
            let binds = chunk
                .iter()
                .map(|pk| super::contacts::Bound::Int(*pk))
                .collect();
            for record in super::contacts::fetch_contacts(self.reader(), &source, binds).await? {
                out.insert(record.pk, record);
            }
        }
        Ok(out)
    }

    /// How many deliveries (any campaign) each of these contacts was sent at or after
    /// `since_ms`, or is being sent now (`sending`, whichever batch claimed them);
    /// contacts with none are absent.
    pub async fn sent_since(
        &self,
        pks: &[i64],
        since_ms: i64,
    ) -> Result<BTreeMap<i64, u32>, StoreError> {
        let mut out = BTreeMap::new();
        let mut unique: Vec<i64> = pks.to_vec();
        unique.sort_unstable();
        unique.dedup();
        for chunk in unique.chunks(CHUNK) {
            let sql = format!(
                "SELECT contact_pk, count(*) FROM deliveries WHERE contact_pk IN ({}) \
                 AND (sent_at >= ? OR status = 'sending') GROUP BY contact_pk",
                question_marks(chunk.len())
            );
            let mut args = SqliteArguments::default();
            for pk in chunk {
                add(&mut args, *pk)?;
            }
            add(&mut args, since_ms)?;
            let rows: Vec<(i64, i64)> = sqlx::query_as_with(AssertSqlSafe(sql), args)
                .persistent(false)
                .fetch_all(self.reader())
                .await?;
            for (pk, n) in rows {
                out.insert(pk, u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
        Ok(out)
    }

    /// Records a batch of results in one write transaction: one `UPDATE … FROM (VALUES …)`
    /// per 1,000 rows; then, for `sent` rows, the contacts' `last_outbound_at` per medium,
    /// and for provider opt-outs, the contacts' opt-out (source `provider`).
    pub async fn record(
        &self,
        results: &[Recorded],
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let now = now.as_millisecond();
        let mut tx = self.begin_write().await?;
        for chunk in results.chunks(CHUNK) {
            let values = vec!["(?,?,?,?,?,?)"; chunk.len()].join(",");
            let sql = format!(
                "UPDATE deliveries SET \
                 status = CASE WHEN v.column2 IN ('pending', 'retry') AND \
                   (SELECT r.status FROM runs r WHERE r.id = deliveries.run_id) = 'cancelled' \
                   THEN 'cancelled' ELSE v.column2 END, \
                 reason = CASE WHEN v.column2 IN ('pending', 'retry') AND \
                   (SELECT r.status FROM runs r WHERE r.id = deliveries.run_id) = 'cancelled' \
                   THEN 'run cancelled' ELSE v.column3 END, \
                 next_attempt_at = v.column4, \
                 provider_message_id = coalesce(v.column5, provider_message_id), \
                 attempts = attempts + v.column6, \
                 sent_at = CASE WHEN v.column2 = 'sent' THEN ? ELSE sent_at END, \
                 updated_at = ? \
                 FROM (VALUES {values}) AS v WHERE deliveries.id = v.column1"
            );
            let mut args = SqliteArguments::default();
            add(&mut args, now)?;
            add(&mut args, now)?;
            for r in chunk {
                add(&mut args, r.id)?;
                add(&mut args, r.status.as_str())?;
                add(&mut args, r.reason.clone())?;
                add(&mut args, r.next_attempt_at)?;
                add(&mut args, r.provider_message_id.clone())?;
                add(&mut args, r.attempts_delta)?;
            }
            // Only plain `?` here: sqlx numbers anonymous parameters by their own count,
            // so mixing them with `?1` would bind the wrong values.
            let n = sqlx::query_with(AssertSqlSafe(sql), args)
                .persistent(false)
                .execute(&mut *tx)
                .await?;
            debug_assert_eq!(n.rows_affected(), chunk.len() as u64);
        }
        for medium in Medium::ALL {
            let sent: Vec<i64> = results
                .iter()
                .filter(|r| r.medium == medium && r.status == DeliveryStatus::Sent)
                .map(|r| r.contact_pk)
                .collect();
            for chunk in sent.chunks(CHUNK) {
                let sql = format!(
                    "INSERT INTO contact_media (contact_pk, medium, last_outbound_at) \
                     SELECT pk, ?, ? FROM contacts WHERE pk IN ({}) \
                     ON CONFLICT (contact_pk, medium) DO UPDATE SET \
                     last_outbound_at = max(coalesce(last_outbound_at, 0), excluded.last_outbound_at)",
                    question_marks(chunk.len())
                );
                let mut args = SqliteArguments::default();
                add(&mut args, medium.as_str())?;
                add(&mut args, now)?;
                for pk in chunk {
                    add(&mut args, *pk)?;
                }
                sqlx::query_with(AssertSqlSafe(sql), args)
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?;
            }
            let opted_out: Vec<i64> = results
                .iter()
                .filter(|r| r.medium == medium && r.opt_out)
                .map(|r| r.contact_pk)
                .collect();
            for chunk in opted_out.chunks(CHUNK) {
                let sql = format!(
                    "INSERT INTO contact_media (contact_pk, medium, opted_out_at, opted_out_source) \
                     SELECT pk, ?, ?, 'provider' FROM contacts WHERE pk IN ({}) \
                     ON CONFLICT (contact_pk, medium) DO UPDATE SET \
                     opted_out_at = excluded.opted_out_at, opted_out_source = 'provider'",
                    question_marks(chunk.len())
                );
                let mut args = SqliteArguments::default();
                add(&mut args, medium.as_str())?;
                add(&mut args, now)?;
                for pk in chunk {
                    add(&mut args, *pk)?;
                }
                sqlx::query_with(AssertSqlSafe(sql), args)
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        super::webhooks::enqueue_recorded(&mut tx, results, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deliveries left in `sending` by a previous process, per (run, channel).
    pub async fn sending_by_run(&self) -> Result<Vec<(i64, String, u64)>, StoreError> {
        let rows: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT d.run_id, d.channel, count(*) FROM runs r \
             JOIN deliveries d ON d.run_id = r.id AND d.status = 'sending' \
             GROUP BY d.run_id, d.channel ORDER BY d.run_id, d.channel",
        )
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(run, channel, n)| (run, channel.unwrap_or_default(), n as u64))
            .collect())
    }

    /// Resolves a (run, channel)'s rows left in `sending`: back to `pending`, due now, to be
    /// sent again with the same idempotency key (`resend`), or `unknown` with `reason`.
    /// Returns how many rows changed.
    pub async fn resolve_sending(
        &self,
        run: i64,
        channel: &str,
        resend: bool,
        reason: &str,
        now: jiff::Timestamp,
    ) -> Result<u64, StoreError> {
        let now = now.as_millisecond();
        let mut tx = self.begin_write().await?;
        let n = if resend {
            sqlx::query(
                "UPDATE deliveries SET status = CASE WHEN (SELECT status FROM runs \
                 WHERE id = ?2) = 'cancelled' THEN 'cancelled' ELSE 'pending' END, \
                 next_attempt_at = ?1, updated_at = ?1 \
                 WHERE run_id = ?2 AND channel = ?3 AND status = 'sending'",
            )
            .bind(now)
            .bind(run)
            .bind(channel)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            sqlx::query(
                "UPDATE deliveries SET status = 'unknown', reason = ?4, next_attempt_at = NULL, \
                 updated_at = ?1 WHERE run_id = ?2 AND channel = ?3 AND status = 'sending'",
            )
            .bind(now)
            .bind(run)
            .bind(channel)
            .bind(reason)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        };
        tx.commit().await?;
        Ok(n)
    }
}
