//! Opting a contact out through an unsubscribe link (the `email_smtp` channel's
//! List-Unsubscribe, `/v1/unsubscribe/{token}`).

use super::{Store, StoreError};
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
        let pk: Option<i64> = sqlx::query_scalar("SELECT pk FROM contacts WHERE id = ?")
            .bind(contact_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(pk) = pk else {
            return Ok(Unsubscribed::NoSuchContact);
        };
        let changed = super::opt_out::record_opt_out(
            &mut tx,
            pk,
            contact_id,
            medium,
            UNSUBSCRIBE_LINK_SOURCE,
            channel,
            now,
        )
        .await?;
        if changed != Some(true) {
            return Ok(Unsubscribed::AlreadyOptedOut);
        }
        tx.commit().await?;
        Ok(Unsubscribed::OptedOut)
    }
}
