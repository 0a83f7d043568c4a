//! The webhook outbox: events for Webhook subscribers, and what the sender reads and writes.
//!
//! Each `enqueue_*` function takes the caller's write transaction, so an event is queued in
//! the same transaction as the change it reports (DESIGN.md section 5): it exists exactly
//! when the change does. The fan-out is one `INSERT … SELECT` per call over the
//! subscriptions in force, never one statement per delivery: the subscriptions are the
//! outer loop of the join, so with no Webhook subscribed to the event the statement
//! reads nothing and costs next to nothing on the hot path.
//!
//! A subscription gets an event when its Webhook spec is in force, `enabled`, lists the
//! event, and has not been disabled after a 410 Gone (kept per spec hash in
//! `webhook_disabled`, so a changed spec is a new subscription).
//!
//! Payloads follow the Standard Webhooks conventions: `{"type", "timestamp", "data"}`, the
//! event id (`msg_` and 32 hex digits, random) is the request's webhook-id. No payload
//! carries a secret: only ids, names, statuses, reasons and the reply text.

use serde::Serialize;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};

use super::deliveries::{DeliveryStatus, Recorded};
use super::revisions::RevisionWrite;
use super::{Store, StoreError};
use crate::spec::channel::Medium;

/// `(webhook, event)` for every subscription that gets events now.
const SUBSCRIBERS: &str = "subs(webhook, event) AS (\
    SELECT s.name, e.value FROM specs s, json_each(s.body, '$.spec.events') e \
    WHERE s.kind = 'Webhook' AND s.retired_in IS NULL \
    AND coalesce(json_extract(s.body, '$.spec.enabled'), 1) \
    AND NOT EXISTS (SELECT 1 FROM webhook_disabled x \
        WHERE x.webhook = s.name AND x.spec_hash = s.hash))";

/// A new event id: `msg_` and 128 random bits in hex (no `.`, as webhook-id requires).
const NEW_EVENT_ID: &str = "'msg_' || lower(hex(randomblob(16)))";

/// An instant column (unix ms) as RFC 3339 UTC with milliseconds, or NULL.
fn rfc3339_sql(column: &str) -> String {
    format!(
        "CASE WHEN {column} IS NULL THEN NULL ELSE \
         strftime('%Y-%m-%dT%H:%M:%fZ', {column} / 1000.0, 'unixepoch') END"
    )
}

/// An instant (unix ms) as the payloads write it: RFC 3339, UTC.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Queues one event of `event_type` with `data` (a JSON object) for every subscriber.
/// Returns how many rows were queued.
pub async fn enqueue_event(
    conn: &mut SqliteConnection,
    event_type: &str,
    data: &serde_json::Value,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "WITH {SUBSCRIBERS} \
         INSERT INTO webhook_outbox (webhook, event_id, event_type, payload, status, \
         next_attempt_at, created_at) \
         SELECT w.webhook, {NEW_EVENT_ID}, ?1, \
         json_object('type', ?1, 'timestamp', ?2, 'data', json(?3)), 'pending', ?4, ?4 \
         FROM subs w WHERE w.event = ?1"
    );
    Ok(sqlx::query(AssertSqlSafe(sql))
        .bind(event_type)
        .bind(rfc3339(now))
        .bind(data.to_string())
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Queues `delivery.<status>` for each of these deliveries, as they are now in the
/// transaction (so call it after writing their new status), for every subscriber of that
/// status's event. Statuses without an event (`retry`, `skipped`, ...) queue nothing.
pub async fn enqueue_delivery_events(
    conn: &mut SqliteConnection,
    ids: &[i64],
    now: i64,
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    // CROSS JOIN keeps the subscriptions the outer loop: with none, neither the ids nor
    // any delivery is read.
    let sql = format!(
        "WITH {SUBSCRIBERS} \
         INSERT INTO webhook_outbox (webhook, event_id, event_type, payload, status, \
         next_attempt_at, created_at) \
         SELECT w.webhook, {NEW_EVENT_ID}, w.event, \
         json_object('type', w.event, 'timestamp', ?1, 'data', json_object(\
           'delivery_id', d.id, 'run_id', d.run_id, 'campaign', r.campaign, \
           'channel', d.channel, 'contact_id', d.contact_id, 'status', d.status, \
           'provider_message_id', d.provider_message_id, 'reason', d.reason, \
           'attempts', d.attempts, 'test', json(CASE WHEN r.trigger = 'test' \
             THEN 'true' ELSE 'false' END), \
           'sent_at', {sent}, 'delivered_at', {delivered}, 'read_at', {read})), \
         'pending', ?2, ?2 \
         FROM subs w CROSS JOIN json_each(?3) j CROSS JOIN deliveries d \
         JOIN runs r ON r.id = d.run_id \
         WHERE w.event LIKE 'delivery.%' AND d.id = j.value \
         AND w.event = 'delivery.' || d.status",
        sent = rfc3339_sql("d.sent_at"),
        delivered = rfc3339_sql("d.delivered_at"),
        read = rfc3339_sql("d.read_at"),
    );
    let ids = serde_json::to_string(ids).expect("integers serialize");
    Ok(sqlx::query(AssertSqlSafe(sql))
        .bind(rfc3339(now))
        .bind(now)
        .bind(ids)
        .execute(conn)
        .await?
        .rows_affected())
}

/// The events of a batch of recorded send results ([`Store::record`]): `delivery.sent` and
/// `delivery.failed` for the rows that became so, and `contact.opted_out` (source
/// `provider`) for the contacts the provider reported as opted out.
pub async fn enqueue_recorded(
    conn: &mut SqliteConnection,
    results: &[Recorded],
    now: i64,
) -> Result<(), sqlx::Error> {
    let settled: Vec<i64> = results
        .iter()
        .filter(|r| matches!(r.status, DeliveryStatus::Sent | DeliveryStatus::Failed))
        .map(|r| r.id)
        .collect();
    enqueue_delivery_events(conn, &settled, now).await?;
    let opted_out: Vec<(i64, &str)> = results
        .iter()
        .filter(|r| r.opt_out)
        .map(|r| (r.id, r.medium.as_str()))
        .collect();
    if opted_out.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "WITH {SUBSCRIBERS} \
         INSERT INTO webhook_outbox (webhook, event_id, event_type, payload, status, \
         next_attempt_at, created_at) \
         SELECT w.webhook, {NEW_EVENT_ID}, w.event, \
         json_object('type', w.event, 'timestamp', ?1, 'data', json_object(\
           'contact_id', d.contact_id, 'medium', j.value ->> 1, 'channel', d.channel, \
           'source', 'provider', 'delivery_id', d.id, 'run_id', d.run_id, \
           'reason', d.reason, 'at', ?1)), 'pending', ?2, ?2 \
         FROM subs w CROSS JOIN json_each(?3) j JOIN deliveries d ON d.id = j.value ->> 0 \
         WHERE w.event = 'contact.opted_out'"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(rfc3339(now))
        .bind(now)
        .bind(serde_json::to_string(&opted_out).expect("pairs serialize"))
        .execute(conn)
        .await?;
    Ok(())
}

/// `contact.opted_out` for one contact: `source` says how (`keyword`, `reply_rule`, `api`,
/// `provider`, `import`), `channel` where, when it came through one.
pub async fn enqueue_contact_opted_out(
    conn: &mut SqliteConnection,
    contact_id: &str,
    medium: Medium,
    source: &str,
    channel: Option<&str>,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let data = serde_json::json!({
        "contact_id": contact_id,
        "medium": medium.as_str(),
        "channel": channel,
        "source": source,
        "at": rfc3339(now),
    });
    enqueue_event(conn, "contact.opted_out", &data, now).await
}

/// The run columns every run event carries.
fn run_data_sql() -> String {
    format!(
        "'run_id', r.id, 'campaign', r.campaign, 'trigger', r.trigger, 'status', r.status, \
         'revision', r.revision_id, 'total', r.total, 'test', json(CASE WHEN \
         r.trigger = 'test' THEN 'true' ELSE 'false' END), 'occurrence_at', {occurrence}, \
         'started_at', {started}, 'finished_at', {finished}, 'error', r.error",
        occurrence = rfc3339_sql("r.occurrence_at"),
        started = rfc3339_sql("r.started_at"),
        finished = rfc3339_sql("r.finished_at"),
    )
}

/// `run.started` for a run just created, and `run.finished` as well when it finished at
/// once (nobody to send to). Call at the end of the creating transaction.
pub async fn enqueue_run_created(
    conn: &mut SqliteConnection,
    run: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "WITH {SUBSCRIBERS} \
         INSERT INTO webhook_outbox (webhook, event_id, event_type, payload, status, \
         next_attempt_at, created_at) \
         SELECT w.webhook, {NEW_EVENT_ID}, w.event, \
         json_object('type', w.event, 'timestamp', ?1, 'data', json_object({data})), \
         'pending', ?2, ?2 FROM subs w CROSS JOIN runs r \
         WHERE w.event = 'run.started' AND r.id = ?3",
        data = run_data_sql()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(rfc3339(now))
        .bind(now)
        .bind(run)
        .execute(&mut *conn)
        .await?;
    enqueue_runs_finished(conn, &[run], now).await?;
    Ok(())
}

/// `run.finished` for those of `runs` that have ended (finished, cancelled or failed),
/// with the run's deliveries counted by status. Runs still active queue nothing, so a
/// caller that may or may not have ended a run can always call it.
pub async fn enqueue_runs_finished(
    conn: &mut SqliteConnection,
    runs: &[i64],
    now: i64,
) -> Result<u64, sqlx::Error> {
    if runs.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "WITH {SUBSCRIBERS} \
         INSERT INTO webhook_outbox (webhook, event_id, event_type, payload, status, \
         next_attempt_at, created_at) \
         SELECT w.webhook, {NEW_EVENT_ID}, w.event, \
         json_object('type', w.event, 'timestamp', ?1, 'data', json_object({data}, \
           'counts', json(coalesce((SELECT json_group_object(status, n) FROM \
             (SELECT status, count(*) AS n FROM deliveries WHERE run_id = r.id \
              GROUP BY status)), '{{}}')))), \
         'pending', ?2, ?2 FROM subs w CROSS JOIN runs r \
         WHERE w.event = 'run.finished' AND r.id IN (SELECT value FROM json_each(?3)) \
         AND r.status IN ('finished', 'cancelled', 'failed')",
        data = run_data_sql()
    );
    Ok(sqlx::query(AssertSqlSafe(sql))
        .bind(rfc3339(now))
        .bind(now)
        .bind(serde_json::to_string(runs).expect("integers serialize"))
        .execute(conn)
        .await?
        .rows_affected())
}

/// `run.finished` for the runs that applying `revision` cancelled (their campaign was
/// removed).
pub async fn enqueue_runs_cancelled_by_revision(
    conn: &mut SqliteConnection,
    revision: i64,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let runs: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM runs WHERE status = 'cancelled' AND finished_at = ?1 \
         AND error = 'campaign removed in revision ' || ?2",
    )
    .bind(now)
    .bind(revision)
    .fetch_all(&mut *conn)
    .await?;
    enqueue_runs_finished(conn, &runs, now).await
}

/// `config.applied`: the revision, its hash and what it changed (kinds and names).
pub async fn enqueue_config_applied(
    conn: &mut SqliteConnection,
    revision: i64,
    write: &RevisionWrite,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let names = |specs: &[super::revisions::NewSpec]| -> Vec<String> {
        specs
            .iter()
            .map(|s| format!("{}/{}", s.kind, s.name))
            .collect()
    };
    let data = serde_json::json!({
        "revision": revision,
        "hash": write.hash,
        "created": names(&write.created),
        "changed": names(&write.changed),
        "removed": write.removed.iter().map(|(k, n)| format!("{k}/{n}")).collect::<Vec<_>>(),
        "at": rfc3339(now),
    });
    enqueue_event(conn, "config.applied", &data, now).await
}

/// `config.rejected`: the rejected revision, its hash and every error (`errors_json`, the
/// JSON array stored with it). The revision in force stays; its subscribers are told.
pub async fn enqueue_config_rejected(
    conn: &mut SqliteConnection,
    revision: i64,
    hash: &str,
    errors_json: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let errors: serde_json::Value =
        serde_json::from_str(errors_json).unwrap_or(serde_json::Value::Array(Vec::new()));
    let data = serde_json::json!({
        "revision": revision,
        "hash": hash,
        "errors": errors,
        "at": rfc3339(now),
    });
    enqueue_event(conn, "config.rejected", &data, now).await
}

/// A Webhook spec in force, as the sender needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub name: String,
    /// The spec version's hash: a 410 disables this version only.
    pub hash: String,
    /// `{"metadata": .., "spec": ..}`; the secret is still a reference.
    pub body: serde_json::Value,
    /// Set when the receiver answered 410 Gone to this spec version.
    pub disabled: Option<Disabled>,
}

/// A subscription disabled after a 410 Gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disabled {
    pub webhook: String,
    #[serde(serialize_with = "serialize_ms")]
    pub disabled_at: i64,
    pub reason: String,
}

fn serialize_ms<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

/// One queued event as the sender reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub webhook: String,
    /// The webhook-id of a request carrying this event alone.
    pub event_id: String,
    pub event_type: String,
    /// The exact JSON text to send (and sign).
    pub payload: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Set once the event went out in a batch: the batch's webhook-id.
    pub batch_id: Option<String>,
    pub created_at: i64,
}

/// What one attempt to deliver some outbox rows came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// A 2xx.
    Delivered { status: u16 },
    /// Failed; try again at `next_attempt_at` (unix ms).
    Retry {
        status: Option<u16>,
        error: String,
        next_attempt_at: i64,
    },
    /// Failed for the last time: given up (`expired`).
    GiveUp { status: Option<u16>, error: String },
}

/// The outbox's depth and failures, for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxStats {
    /// Events not yet acknowledged.
    pub pending: u64,
    /// Of those, events whose last attempt failed (they wait for their next attempt).
    pub failing: u64,
    /// Events given up on: every attempt failed, or their subscription was removed,
    /// disabled or answered 410 Gone (`last_error` says which).
    pub expired: u64,
    /// Events acknowledged by their receiver.
    pub delivered: u64,
    /// When the oldest pending event was queued, unix ms.
    pub oldest_pending_at: Option<i64>,
    /// Subscriptions disabled after a 410 Gone (until their spec changes).
    pub disabled: Vec<Disabled>,
}

fn decode_outbox(row: &sqlx::sqlite::SqliteRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        id: row.try_get("id")?,
        webhook: row.try_get("webhook")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        payload: row.try_get("payload")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        batch_id: row.try_get("batch_id")?,
        created_at: row.try_get("created_at")?,
    })
}

const OUTBOX_COLUMNS: &str =
    "id, webhook, event_id, event_type, payload, attempts, batch_id, created_at";

impl Store {
    /// The Webhook specs in force, with their 410 state (a disabled entry for an older spec
    /// version does not count).
    pub async fn webhook_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.name, s.hash, s.body, x.disabled_at, x.reason FROM specs s \
             LEFT JOIN webhook_disabled x ON x.webhook = s.name AND x.spec_hash = s.hash \
             WHERE s.kind = 'Webhook' AND s.retired_in IS NULL ORDER BY s.name",
        )
        .fetch_all(self.reader())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get("name")?;
            let body: String = row.try_get("body")?;
            let disabled_at: Option<i64> = row.try_get("disabled_at")?;
            let reason: Option<String> = row.try_get("reason")?;
            out.push(Subscription {
                disabled: disabled_at.map(|at| Disabled {
                    webhook: name.clone(),
                    disabled_at: at,
                    reason: reason.unwrap_or_default(),
                }),
                name,
                hash: row.try_get("hash")?,
                body: serde_json::from_str(&body).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            });
        }
        Ok(out)
    }

    /// The subscriptions that have events still pending.
    pub async fn webhooks_with_pending(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT webhook FROM webhook_outbox WHERE status = 'pending' ORDER BY 1",
        )
        .fetch_all(self.reader())
        .await?)
    }

    /// Gives up every pending event of `webhook` (`expired`, with `reason` as the last
    /// error): its subscription is gone, disabled, or answered 410. Returns how many.
    pub async fn expire_webhook_events(
        &self,
        webhook: &str,
        reason: &str,
        now: jiff::Timestamp,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE webhook_outbox SET status = 'expired', last_error = ?1, next_attempt_at = ?2 \
             WHERE webhook = ?3 AND status = 'pending'",
        )
        .bind(reason)
        .bind(now.as_millisecond())
        .bind(webhook)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Pending events due at `now`, oldest due first, at most `limit`. Events that wait
    /// to be batched (`delivery.*` of the subscriptions in `batching`, not yet in a batch)
    /// are left out: [`Store::unbatched_events`] finds them.
    pub async fn due_webhook_events(
        &self,
        now: jiff::Timestamp,
        batching: &[&str],
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM webhook_outbox \
             WHERE status = 'pending' AND next_attempt_at <= ?1 \
             AND NOT (batch_id IS NULL AND event_type LIKE 'delivery.%' \
                 AND webhook IN (SELECT value FROM json_each(?2))) \
             ORDER BY next_attempt_at, id LIMIT ?3"
        )))
        .bind(now.as_millisecond())
        .bind(serde_json::to_string(batching).expect("names serialize"))
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| decode_outbox(r).map_err(StoreError::from))
            .collect()
    }

    /// The oldest `delivery.*` events of `webhook` not yet in a batch, at most `limit`.
    pub async fn unbatched_events(
        &self,
        webhook: &str,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM webhook_outbox \
             WHERE webhook = ?1 AND status = 'pending' AND batch_id IS NULL \
             AND event_type LIKE 'delivery.%' ORDER BY created_at, id LIMIT ?2"
        )))
        .bind(webhook)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| decode_outbox(r).map_err(StoreError::from))
            .collect()
    }

    /// The pending events of one batch, in the order they were queued.
    pub async fn batch_events(&self, batch_id: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM webhook_outbox \
             WHERE batch_id = ?1 AND status = 'pending' ORDER BY created_at, id"
        )))
        .bind(batch_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| decode_outbox(r).map_err(StoreError::from))
            .collect()
    }

    /// Puts these events into one batch: `batch_id` is the webhook-id of the request that
    /// carries them, on every attempt. Events already in a batch, or no longer pending,
    /// are left as they are; returns how many joined.
    pub async fn form_webhook_batch(&self, ids: &[i64], batch_id: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE webhook_outbox SET batch_id = ?1 WHERE id IN \
             (SELECT value FROM json_each(?2)) AND batch_id IS NULL AND status = 'pending'",
        )
        .bind(batch_id)
        .bind(serde_json::to_string(ids).expect("integers serialize"))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Records one attempt at delivering these events (one request).
    pub async fn record_webhook_attempt(
        &self,
        ids: &[i64],
        result: &AttemptResult,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let now = now.as_millisecond();
        let ids = serde_json::to_string(ids).expect("integers serialize");
        let (status, last_status, last_error, next, delivered_at) = match result {
            AttemptResult::Delivered { status } => {
                ("delivered", Some(*status), None, now, Some(now))
            }
            AttemptResult::Retry {
                status,
                error,
                next_attempt_at,
            } => (
                "pending",
                *status,
                Some(error.as_str()),
                *next_attempt_at,
                None,
            ),
            AttemptResult::GiveUp { status, error } => {
                ("expired", *status, Some(error.as_str()), now, None)
            }
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE webhook_outbox SET status = ?1, attempts = attempts + 1, last_status = ?2, \
             last_error = ?3, next_attempt_at = ?4, delivered_at = ?5 \
             WHERE id IN (SELECT value FROM json_each(?6)) AND status = 'pending'",
        )
        .bind(status)
        .bind(last_status.map(i64::from))
        .bind(last_error)
        .bind(next)
        .bind(delivered_at)
        .bind(ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables the subscription's spec version `spec_hash` after a 410 Gone, and gives up
    /// its pending events with `reason`, in one transaction. It stays disabled across
    /// restarts, until its spec changes.
    pub async fn disable_webhook(
        &self,
        webhook: &str,
        spec_hash: &str,
        reason: &str,
        now: jiff::Timestamp,
    ) -> Result<u64, StoreError> {
        let now = now.as_millisecond();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO webhook_disabled (webhook, spec_hash, disabled_at, reason) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (webhook) DO UPDATE SET \
             spec_hash = excluded.spec_hash, disabled_at = excluded.disabled_at, \
             reason = excluded.reason",
        )
        .bind(webhook)
        .bind(spec_hash)
        .bind(now)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(
            "UPDATE webhook_outbox SET status = 'expired', last_error = ?1, \
             next_attempt_at = ?2 WHERE webhook = ?3 AND status = 'pending'",
        )
        .bind(reason)
        .bind(now)
        .bind(webhook)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Deletes at most `limit` settled events: acknowledged before `delivered_before`, and
    /// given up before `expired_before` (unix ms both). Pending events are never deleted.
    /// Returns how many went.
    pub async fn prune_webhook_events(
        &self,
        delivered_before: i64,
        expired_before: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "DELETE FROM webhook_outbox WHERE id IN (SELECT id FROM webhook_outbox \
             WHERE (status = 'delivered' AND delivered_at < ?1) \
             OR (status = 'expired' AND next_attempt_at < ?2) LIMIT ?3)",
        )
        .bind(delivered_before)
        .bind(expired_before)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// The outbox's depth and failures, and the subscriptions disabled by a 410 whose
    /// spec is still the one in force.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let (pending, failing, oldest): (i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), count(last_error), min(created_at) FROM webhook_outbox \
             WHERE status = 'pending'",
        )
        .fetch_one(self.reader())
        .await?;
        let counted: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM webhook_outbox WHERE status <> 'pending' GROUP BY 1",
        )
        .fetch_all(self.reader())
        .await?;
        let count_of = |status: &str| {
            counted
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0))
        };
        let disabled = self
            .webhook_subscriptions()
            .await?
            .into_iter()
            .filter_map(|s| s.disabled)
            .collect();
        Ok(OutboxStats {
            pending: u64::try_from(pending).unwrap_or(0),
            failing: u64::try_from(failing).unwrap_or(0),
            expired: count_of("expired"),
            delivered: count_of("delivered"),
            oldest_pending_at: oldest,
            disabled,
        })
    }

    /// Every queued event of `webhook`, oldest first, with its state: for tests and
    /// diagnostics.
    pub async fn webhook_events(
        &self,
        webhook: &str,
    ) -> Result<Vec<(OutboxRow, String, Option<i64>, Option<String>)>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS}, status, last_status, last_error FROM webhook_outbox \
             WHERE webhook = ?1 ORDER BY id"
        )))
        .bind(webhook)
        .fetch_all(self.reader())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push((
                decode_outbox(row)?,
                row.try_get("status")?,
                row.try_get("last_status")?,
                row.try_get("last_error")?,
            ));
        }
        Ok(out)
    }
}
