//! Opting a contact out through an unsubscribe link (the `email_smtp` channel's
//! List-Unsubscribe, `/v1/unsubscribe/{token}`).

use sqlx::Row;

use super::{Store, StoreError, webhooks};
use crate::spec::channel::Medium;

/// The `opted_out_source` of an opt-out recorded through an unsubscribe link.
pub const UNSUBSCRIBE_LINK_SOURCE: &str = "unsubscribe_link";

/// What an unsubscribe link did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The contact is now opted out of the medium (and `contact.opted_out` is queued).
    OptedOut,
    /// The contact was opted out already: nothing changed.
    AlreadyOptedOut,
    /// No contact has that id (any more).
    NoSuchContact,
}

impl Store {
    /// Opts contact `contact_id` out of `medium` with source `unsubscribe_link`, at `now`
    /// (unix ms), and queues `contact.opted_out` naming `channel`. Idempotent: a contact
    /// opted out already (and not opted back in since) is left as it is, its first
    /// opt-out's time and source kept, and no second event is queued.
    pub async fn opt_out_by_unsubscribe_link(
        &self,
        contact_id: &str,
        medium: Medium,
        channel: &str,
        now: i64,
    ) -> Result<Unsubscribed, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT c.pk, m.opted_in_at, m.opted_out_at FROM contacts c \
             LEFT JOIN contact_media m ON m.contact_pk = c.pk AND m.medium = ?2 \
             WHERE c.id = ?1",
        )
        .bind(contact_id)
        .bind(medium.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Unsubscribed::NoSuchContact);
        };
        let pk: i64 = row.try_get(0)?;
        let opted_in_at: Option<i64> = row.try_get(1)?;
        let opted_out_at: Option<i64> = row.try_get(2)?;
        if opted_out_at.is_some() && !crate::audience::is_opted_in(opted_in_at, opted_out_at) {
            return Ok(Unsubscribed::AlreadyOptedOut);
        }
        // Later than any consent, so the opt-out wins even against a clock step back.
        let at = now.max(opted_in_at.unwrap_or(0));
        sqlx::query(
            "INSERT INTO contact_media (contact_pk, medium, opted_out_at, opted_out_source) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (contact_pk, medium) DO UPDATE SET \
             opted_out_at = excluded.opted_out_at, \
             opted_out_source = excluded.opted_out_source",
        )
        .bind(pk)
        .bind(medium.as_str())
        .bind(at)
        .bind(UNSUBSCRIBE_LINK_SOURCE)
        .execute(&mut *tx)
        .await?;
        webhooks::enqueue_contact_opted_out(
            &mut tx,
            contact_id,
            medium,
            UNSUBSCRIBE_LINK_SOURCE,
            Some(channel),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Unsubscribed::OptedOut)
    }
}
