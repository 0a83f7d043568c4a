//! Inbound provider callbacks: replies and delivery receipts, each recorded in one write
//! transaction together with its idempotency key (`inbound_events`, unique per channel and
//! webhook-id), the contact and delivery changes it makes, and the webhook events that
//! report them. A request seen before changes nothing and gets its first answer again.
//!
//! What a reply does (keywords, `on_reply` rules) is decided by [`crate::webhooks::inbound`];
//! this module writes it.

use sqlx::{Row, SqliteConnection};

use super::contacts::{Bound, ContactRecord, fetch_contacts};
use super::deliveries::DeliveryStatus;
use super::revisions::StoredSpec;
use super::{Store, StoreError, webhooks};
use crate::spec::channel::Medium;

/// At most this many contacts share an address and are touched by one reply.
const MAX_CONTACTS_PER_ADDRESS: i64 = 100;

/// How a request ended in the store.
#[derive(Clone, Debug, PartialEq)]
pub enum Inbound<T> {
    /// Recorded now; `event` is its `inbound_events` row (to update the answer).
    Recorded { event: i64, outcome: T },
    /// The channel already handled this webhook-id: its first answer.
    Duplicate(serde_json::Value),
}

/// The delivery a reply answers: the contact's latest one on the channel, within the
/// attribution window.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribution {
    pub delivery_id: i64,
    pub run_id: i64,
    pub campaign: String,
    /// The run's trigger: `schedule`, `manual`, `test` or `reply`.
    pub trigger: String,
    pub contact_pk: i64,
    pub contact_id: String,
    /// The campaign as the run was pinned to it (its `on_reply` rules apply).
    pub campaign_spec: StoredSpec,
}

/// A contact whose opt-out a reply records, and why (`keyword`, `reply_rule`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptOut {
    pub contact_pk: i64,
    pub contact_id: String,
    pub source: &'static str,
}

/// Everything one reply writes.
#[derive(Clone, Debug)]
pub struct ReplyWrite<'a> {
    pub channel: &'a str,
    pub medium: Medium,
    pub webhook_id: &'a str,
    /// When the provider received it (unix ms, never later than now).
    pub received_at: i64,
    /// Every contact with the sender's address: their last inbound time on `medium`.
    pub contacts: &'a [i64],
    /// The contact the reply is attributed to, and the delivery.
    pub contact_pk: Option<i64>,
    pub delivery_id: Option<i64>,
    pub opt_out: &'a [OptOut],
    /// Contacts opted back in (source `keyword`).
    pub opt_in: &'a [i64],
    /// (contact, tag) to add / to remove.
    pub tag: &'a [(i64, String)],
    pub untag: &'a [(i64, String)],
    /// The `message.replied` event's data.
    pub replied: &'a serde_json::Value,
    pub answer: &'a serde_json::Value,
}

/// A receipt as a provider reported it.
#[derive(Clone, Debug)]
pub struct ReceiptWrite<'a> {
    pub channel: &'a str,
    pub webhook_id: &'a str,
    pub provider_message_id: &'a str,
    /// `delivered`, `read` or `failed`.
    pub status: DeliveryStatus,
    pub error: Option<&'a str>,
    /// When it happened (unix ms).
    pub at: i64,
    /// A failed receipt saying the recipient stopped messages from the sender: the
    /// delivery's contact is opted out of this medium in the same transaction.
    pub opt_out: Option<Medium>,
    /// Keep a receipt whose message id no delivery has yet, for when one is recorded
    /// (providers that call back on their own schedule and may beat herald's record).
    pub keep_early: bool,
}

/// What a receipt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiptRecorded {
    /// It met its delivery.
    Applied(ReceiptOutcome),
    /// No delivery has its message id yet: it waits, and is applied when one is recorded.
    Early,
}

/// What a receipt did to its delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptOutcome {
    pub delivery_id: i64,
    pub previous: DeliveryStatus,
    pub status: DeliveryStatus,
    /// False for a receipt that would move the delivery back (or nowhere).
    pub changed: bool,
}

/// Receipts move a delivery forward only: `sent → delivered → read`, and `sent` or
/// `delivered` → `failed`. Providers call back out of order and may skip `delivered`; a
/// late receipt never moves a delivery back, and a failure after `read` is ignored (the
/// message was read, so it was delivered).
pub fn receipt_moves(from: DeliveryStatus, to: DeliveryStatus) -> bool {
    use DeliveryStatus::*;
    matches!(
        (from, to),
        (Sent, Delivered) | (Sent | Delivered, Read) | (Sent | Delivered, Failed)
    )
}

/// Inserts the request's idempotency row; `None` if the channel already has this
/// webhook-id (then nothing else may be written).
async fn claim_event(
    conn: &mut SqliteConnection,
    channel: &str,
    webhook_id: &str,
    kind: &str,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO inbound_events (channel, webhook_id, kind, received_at, answer) \
         VALUES (?, ?, ?, ?, '{}') ON CONFLICT (channel, webhook_id) DO NOTHING RETURNING id",
    )
    .bind(channel)
    .bind(webhook_id)
    .bind(kind)
    .bind(now)
    .fetch_optional(conn)
    .await
}

impl Store {
    /// The answer already given to `webhook_id` on `channel`, if any.
    pub async fn inbound_answer(
        &self,
        channel: &str,
        webhook_id: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let answer: Option<String> = sqlx::query_scalar(
            "SELECT answer FROM inbound_events WHERE channel = ? AND webhook_id = ?",
        )
        .bind(channel)
        .bind(webhook_id)
        .fetch_optional(self.reader())
        .await?;
        Ok(answer.and_then(|a| serde_json::from_str(&a).ok()))
    }

    /// Replaces the stored answer of an inbound request (once its follow-ups started).
    pub async fn set_inbound_answer(
        &self,
        event: i64,
        answer: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE inbound_events SET answer = ? WHERE id = ?")
            .bind(answer.to_string())
            .bind(event)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The channel's spec version in force, if there is one.
    pub async fn channel_in_force(&self, name: &str) -> Result<Option<StoredSpec>, StoreError> {
        let row = sqlx::query(
            "SELECT kind, name, body, hash, file, line, introduced_in FROM specs \
             WHERE kind = 'Channel' AND name = ? AND retired_in IS NULL",
        )
        .bind(name)
        .fetch_optional(self.reader())
        .await?;
        Ok(match row {
            Some(row) => Some(super::revisions::stored_spec(&row)?),
            None => None,
        })
    }

    /// Every channel's spec version in force, by name.
    pub async fn channels_in_force(&self) -> Result<Vec<StoredSpec>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, name, body, hash, file, line, introduced_in FROM specs \
             WHERE kind = 'Channel' AND retired_in IS NULL ORDER BY name",
        )
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| Ok(super::revisions::stored_spec(row)?))
            .collect()
    }

    /// The contacts whose address on `medium` is `address` (phone for SMS and WhatsApp,
    /// e-mail, Telegram chat id), at most 100, by row key. An e-mail matches as written or
    /// in lower case.
    pub async fn contacts_with_address(
        &self,
        medium: Medium,
        address: &str,
    ) -> Result<Vec<ContactRecord>, StoreError> {
        let column = match medium {
            Medium::Sms | Medium::Whatsapp => "phone",
            Medium::Email => "email",
            Medium::Telegram => "telegram",
        };
        // Two equalities, not lower(): the column's index serves both.
        let source = format!(
            "SELECT * FROM contacts WHERE {column} = ? OR {column} = ? ORDER BY pk LIMIT {MAX_CONTACTS_PER_ADDRESS}"
        );
        let lower = if medium == Medium::Email {
            address.to_lowercase()
        } else {
            address.to_string()
        };
        Ok(fetch_contacts(
            self.reader(),
            &source,
            vec![Bound::Text(address.to_string()), Bound::Text(lower)],
        )
        .await?)
    }

    /// The latest delivery sent through `channel` to one of `contacts` at or after
    /// `since` (unix ms), with its run's pinned campaign.
    pub async fn attribute_reply(
        &self,
        contacts: &[i64],
        channel: &str,
        since: i64,
    ) -> Result<Option<Attribution>, StoreError> {
        if contacts.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT d.id AS delivery_id, d.run_id, d.contact_pk, d.contact_id, r.campaign, \
             r.trigger, s.kind, s.name, s.body, s.hash, s.file, s.line, s.introduced_in \
             FROM deliveries d JOIN runs r ON r.id = d.run_id \
             JOIN specs s ON s.id = r.campaign_spec_id \
             WHERE d.contact_pk IN (SELECT value FROM json_each(?1)) AND d.sent_at >= ?2 \
             AND d.channel = ?3 ORDER BY d.sent_at DESC, d.id DESC LIMIT 1",
        )
        .bind(serde_json::to_string(contacts).expect("integers serialize"))
        .bind(since)
        .bind(channel)
        .fetch_optional(self.reader())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Attribution {
            delivery_id: row.try_get("delivery_id")?,
            run_id: row.try_get("run_id")?,
            campaign: row.try_get("campaign")?,
            trigger: row.try_get("trigger")?,
            contact_pk: row.try_get("contact_pk")?,
            contact_id: row.try_get("contact_id")?,
            campaign_spec: super::revisions::stored_spec(&row)?,
        }))
    }

    /// Records a reply in one transaction: its idempotency row, the contacts' last inbound
    /// time (never moved back), opt-outs and opt-ins on the medium, tags, and the
    /// `message.replied` and `contact.opted_out` events.
    pub async fn record_reply(
        &self,
        reply: &ReplyWrite<'_>,
        now: jiff::Timestamp,
    ) -> Result<Inbound<()>, StoreError> {
        let now = now.as_millisecond();
        let mut tx = self.begin_write().await?;
        let Some(event) =
            claim_event(&mut tx, reply.channel, reply.webhook_id, "reply", now).await?
        else {
            drop(tx);
            return Ok(Inbound::Duplicate(
                self.inbound_answer(reply.channel, reply.webhook_id)
                    .await?
                    .unwrap_or_default(),
            ));
        };
        let medium = reply.medium.as_str();
        let json = |v: &[i64]| serde_json::to_string(v).expect("integers serialize");
        // `WHERE true` below: SQLite's parser needs it between an INSERT's SELECT and its
        // ON CONFLICT clause.
        if !reply.contacts.is_empty() {
            sqlx::query(
                "INSERT INTO contact_media (contact_pk, medium, last_inbound_at) \
                 SELECT value, ?1, ?2 FROM json_each(?3) WHERE true \
                 ON CONFLICT (contact_pk, medium) DO UPDATE SET \
                 last_inbound_at = max(coalesce(last_inbound_at, 0), excluded.last_inbound_at)",
            )
            .bind(medium)
            .bind(reply.received_at)
            .bind(json(reply.contacts))
            .execute(&mut *tx)
            .await?;
        }
        for out in reply.opt_out {
            sqlx::query(
                "INSERT INTO contact_media (contact_pk, medium, opted_out_at, opted_out_source) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (contact_pk, medium) DO UPDATE SET \
                 opted_out_at = excluded.opted_out_at, \
                 opted_out_source = excluded.opted_out_source",
            )
            .bind(out.contact_pk)
            .bind(medium)
            .bind(now)
            .bind(out.source)
            .execute(&mut *tx)
            .await?;
            webhooks::enqueue_contact_opted_out(
                &mut tx,
                &out.contact_id,
                reply.medium,
                out.source,
                Some(reply.channel),
                now,
            )
            .await?;
        }
        if !reply.opt_in.is_empty() {
            // Consent wins only if it is later than the opt-out (the same millisecond
            // counts as opted out), so it is recorded a millisecond after it at least.
            sqlx::query(
                "INSERT INTO contact_media (contact_pk, medium, opted_in_at, opted_in_source) \
                 SELECT value, ?1, ?2, 'keyword' FROM json_each(?3) WHERE true \
                 ON CONFLICT (contact_pk, medium) DO UPDATE SET \
                 opted_in_at = max(excluded.opted_in_at, coalesce(opted_out_at, 0) + 1), \
                 opted_in_source = 'keyword'",
            )
            .bind(medium)
            .bind(now)
            .bind(json(reply.opt_in))
            .execute(&mut *tx)
            .await?;
        }
        let mut retagged: Vec<i64> = Vec::new();
        for (pk, tag) in reply.tag {
            let n = sqlx::query(
                "INSERT INTO contact_tags (contact_pk, tag) SELECT pk, ? FROM contacts \
                 WHERE pk = ? ON CONFLICT DO NOTHING",
            )
            .bind(tag)
            .bind(pk)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                retagged.push(*pk);
            }
        }
        for (pk, tag) in reply.untag {
            let n = sqlx::query("DELETE FROM contact_tags WHERE contact_pk = ? AND tag = ?")
                .bind(pk)
                .bind(tag)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                retagged.push(*pk);
            }
        }
        let mut touched: Vec<i64> = retagged;
        touched.extend(reply.opt_out.iter().map(|o| o.contact_pk));
        touched.extend(reply.opt_in);
        if !touched.is_empty() {
            sqlx::query(
                "UPDATE contacts SET updated_at = max(updated_at, ?1) \
                 WHERE pk IN (SELECT value FROM json_each(?2))",
            )
            .bind(now)
            .bind(json(&touched))
            .execute(&mut *tx)
            .await?;
        }
        webhooks::enqueue_event(&mut tx, "message.replied", reply.replied, now).await?;
        sqlx::query(
            "UPDATE inbound_events SET contact_pk = ?, delivery_id = ?, answer = ? WHERE id = ?",
        )
        .bind(reply.contact_pk)
        .bind(reply.delivery_id)
        .bind(reply.answer.to_string())
        .bind(event)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Inbound::Recorded { event, outcome: () })
    }

    /// Records a receipt in one transaction: its idempotency row, the delivery moved
    /// forward (see [`receipt_moves`]) with its time, and the `delivery.*` event when it
    /// moved. `answer` gives the request's answer from what it did (stored for repeats).
    ///
    /// No delivery on the channel has the provider message id (yet: a receipt may arrive
    /// before herald recorded the send): with `keep_early` the receipt is kept and applied
    /// when a delivery is recorded with that id ([`ReceiptRecorded::Early`]); without,
    /// `Ok(None)` and nothing was written, so a retry of the same request is handled afresh.
    pub async fn record_receipt(
        &self,
        receipt: &ReceiptWrite<'_>,
        answer: impl FnOnce(&ReceiptRecorded) -> serde_json::Value,
        now: jiff::Timestamp,
    ) -> Result<Option<Inbound<ReceiptRecorded>>, StoreError> {
        let now = now.as_millisecond();
        let mut tx = self.begin_write().await?;
        let Some(event) =
            claim_event(&mut tx, receipt.channel, receipt.webhook_id, "receipt", now).await?
        else {
            drop(tx);
            return Ok(Some(Inbound::Duplicate(
                self.inbound_answer(receipt.channel, receipt.webhook_id)
                    .await?
                    .unwrap_or_default(),
            )));
        };
        let found: Option<ReceiptDelivery> = sqlx::query_as(
            "SELECT id, status, contact_pk, contact_id FROM deliveries \
             WHERE channel = ? AND provider_message_id = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(receipt.channel)
        .bind(receipt.provider_message_id)
        .fetch_optional(&mut *tx)
        .await?;
        let recorded = match found {
            Some(delivery) => {
                let fields = ReceiptFields {
                    status: receipt.status,
                    error: receipt.error,
                    at: receipt.at,
                    opt_out: receipt.opt_out,
                };
                let outcome =
                    apply_receipt(&mut tx, &delivery, &fields, receipt.channel, now).await?;
                ReceiptRecorded::Applied(outcome)
            }
            None if receipt.keep_early => {
                keep_early(&mut tx, event, receipt, now).await?;
                ReceiptRecorded::Early
            }
            None => {
                tx.rollback().await?;
                return Ok(None);
            }
        };
        let delivery_id = match &recorded {
            ReceiptRecorded::Applied(o) => Some(o.delivery_id),
            ReceiptRecorded::Early => None,
        };
        sqlx::query("UPDATE inbound_events SET delivery_id = ?, answer = ? WHERE id = ?")
            .bind(delivery_id)
            .bind(answer(&recorded).to_string())
            .bind(event)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Inbound::Recorded {
            event,
            outcome: recorded,
        }))
    }
}

/// How long a receipt waits for its message id before it is dropped.
const EARLY_RECEIPT_TTL_MS: i64 = 24 * 3600 * 1000;

/// The delivery a receipt is for: (id, status, contact_pk, contact_id).
type ReceiptDelivery = (i64, String, i64, String);

/// What a receipt says, whether it arrived now or waited for its message id.
struct ReceiptFields<'a> {
    status: DeliveryStatus,
    error: Option<&'a str>,
    at: i64,
    opt_out: Option<Medium>,
}

/// Keeps a receipt whose message id no delivery has yet (see migration 0009), and drops
/// those that waited longer than [`EARLY_RECEIPT_TTL_MS`].
async fn keep_early(
    tx: &mut SqliteConnection,
    event: i64,
    receipt: &ReceiptWrite<'_>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM early_receipts WHERE received_at < ?")
        .bind(now - EARLY_RECEIPT_TTL_MS)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO early_receipts (event_id, channel, provider_message_id, status, error, \
         at, opt_out, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(event)
    .bind(receipt.channel)
    .bind(receipt.provider_message_id)
    .bind(receipt.status.as_str())
    .bind(receipt.error)
    .bind(receipt.at)
    .bind(receipt.opt_out.map(|m| m.as_str()))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Moves `delivery` forward per the receipt (see [`receipt_moves`]), with the
/// `delivery.*` event, and the provider's opt-out when a failed receipt carries one.
async fn apply_receipt(
    tx: &mut SqliteConnection,
    delivery: &ReceiptDelivery,
    receipt: &ReceiptFields<'_>,
    channel: &str,
    now: i64,
) -> Result<ReceiptOutcome, StoreError> {
    let (delivery_id, status, contact_pk, contact_id) = delivery;
    let previous = DeliveryStatus::parse(status).unwrap_or(DeliveryStatus::Unknown);
    let changed = receipt_moves(previous, receipt.status);
    if changed {
        let reason = match receipt.status {
            DeliveryStatus::Failed => Some(
                receipt
                    .error
                    .unwrap_or("the provider reported the message as failed"),
            ),
            _ => None,
        };
        // The status is checked again in the UPDATE itself: forward only, whatever
        // happened since the read above.
        sqlx::query(
            "UPDATE deliveries SET status = ?1, updated_at = ?2, \
             delivered_at = CASE WHEN ?1 IN ('delivered', 'read') \
               THEN coalesce(delivered_at, ?3) ELSE delivered_at END, \
             read_at = CASE WHEN ?1 = 'read' THEN ?3 ELSE read_at END, \
             reason = coalesce(?4, reason), error = coalesce(?5, error) \
             WHERE id = ?6 AND status = ?7",
        )
        .bind(receipt.status.as_str())
        .bind(now)
        .bind(receipt.at)
        .bind(reason)
        .bind(receipt.error)
        .bind(delivery_id)
        .bind(previous.as_str())
        .execute(&mut *tx)
        .await?;
        webhooks::enqueue_delivery_events(&mut *tx, &[*delivery_id], now).await?;
        if let Some(medium) = receipt
            .opt_out
            .filter(|_| receipt.status == DeliveryStatus::Failed)
        {
            // A deleted contact, or one opted out already, is left as it is.
            super::opt_out::record_opt_out(
                tx,
                *contact_pk,
                contact_id,
                medium,
                PROVIDER_SOURCE,
                channel,
                now,
            )
            .await?;
        }
    }
    Ok(ReceiptOutcome {
        delivery_id: *delivery_id,
        previous,
        status: if changed { receipt.status } else { previous },
        changed,
    })
}

/// A kept receipt that met its delivery: (event id, channel, status, error, at, opt-out
/// medium, delivery id).
type WaitingReceipt = (
    i64,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    i64,
);

/// Applies the receipts that were waiting for the message ids of `delivery_ids` (just
/// recorded as sent), in the order they happened, in the caller's transaction. Costs one
/// indexed lookup when none wait.
pub(super) async fn apply_early_receipts(
    tx: &mut SqliteConnection,
    delivery_ids: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    if delivery_ids.is_empty() {
        return Ok(());
    }
    let waiting: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM early_receipts)")
        .fetch_one(&mut *tx)
        .await?;
    if !waiting {
        return Ok(());
    }
    // Receipts that never met their message (a number also used outside herald) would
    // keep this path busy: drop the stale ones here too, not only when one is kept.
    sqlx::query("DELETE FROM early_receipts WHERE received_at < ?")
        .bind(now - EARLY_RECEIPT_TTL_MS)
        .execute(&mut *tx)
        .await?;
    let ids = serde_json::to_string(delivery_ids).expect("ids serialize");
    let rows: Vec<WaitingReceipt> = sqlx::query_as(
        "SELECT e.event_id, e.channel, e.status, e.error, e.at, e.opt_out, d.id \
         FROM deliveries d JOIN early_receipts e \
           ON e.channel = d.channel AND e.provider_message_id = d.provider_message_id \
         WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY e.at, e.event_id",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    for (event, channel, status, error, at, opt_out, delivery_id) in rows {
        // Read again for each: an earlier receipt of the same message may have moved it.
        let delivery: ReceiptDelivery = sqlx::query_as(
            "SELECT id, status, contact_pk, contact_id FROM deliveries WHERE id = ?",
        )
        .bind(delivery_id)
        .fetch_one(&mut *tx)
        .await?;
        let fields = ReceiptFields {
            status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Unknown),
            error: error.as_deref(),
            at,
            opt_out: opt_out.as_deref().and_then(Medium::parse),
        };
        apply_receipt(&mut *tx, &delivery, &fields, &channel, now).await?;
        sqlx::query("UPDATE inbound_events SET delivery_id = ? WHERE id = ?")
            .bind(delivery_id)
            .bind(event)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM early_receipts WHERE event_id = ?")
            .bind(event)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// The `opted_out_source` of an opt-out a provider reported (at send time or in a receipt).
pub const PROVIDER_SOURCE: &str = "provider";

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryStatus::*;

    #[test]
    fn receipts_move_a_delivery_forward_only() {
        assert!(receipt_moves(Sent, Delivered));
        assert!(receipt_moves(Sent, Read), "a provider may skip delivered");
        assert!(receipt_moves(Delivered, Read));
        assert!(receipt_moves(Sent, Failed));
        assert!(receipt_moves(Delivered, Failed));
        assert!(
            !receipt_moves(Read, Delivered),
            "a late delivered never moves back"
        );
        assert!(!receipt_moves(Read, Failed), "a read message was delivered");
        assert!(!receipt_moves(Delivered, Delivered));
        assert!(!receipt_moves(Failed, Delivered));
        assert!(!receipt_moves(Pending, Delivered));
        assert!(!receipt_moves(Sending, Read));
    }
}
