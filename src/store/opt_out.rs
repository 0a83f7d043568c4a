//! Recording that a contact opted out of a medium, once: the one write behind an
//! unsubscribe link and a provider's "the recipient stopped messages" receipt.

use sqlx::SqliteConnection;

use super::{StoreError, webhooks};
use crate::spec::channel::Medium;

/// Opts contact `contact_pk` (still `contact_id`: a row key can be reused after a delete)
/// out of `medium` with `source`, at `now` (unix ms), and queues `contact.opted_out`
/// naming `channel`, in the caller's transaction. Idempotent: a contact opted out already
/// (and not opted back in since) keeps its first opt-out's time and source, and no second
/// event is queued. Returns whether it changed anything; `None` when no such contact.
pub(super) async fn record_opt_out(
    tx: &mut SqliteConnection,
    contact_pk: i64,
    contact_id: &str,
    medium: Medium,
    source: &str,
    channel: &str,
    now: i64,
) -> Result<Option<bool>, StoreError> {
    let state: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT m.opted_in_at, m.opted_out_at FROM contacts c \
         LEFT JOIN contact_media m ON m.contact_pk = c.pk AND m.medium = ?3 \
         WHERE c.pk = ?1 AND c.id = ?2",
    )
    .bind(contact_pk)
    .bind(contact_id)
    .bind(medium.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((opted_in_at, opted_out_at)) = state else {
        return Ok(None);
    };
    if opted_out_at.is_some() && !crate::audience::is_opted_in(opted_in_at, opted_out_at) {
        return Ok(Some(false));
    }
    // Later than any consent, so the opt-out wins even against a clock step back.
    let at = now.max(opted_in_at.unwrap_or(0));
    sqlx::query(
        "INSERT INTO contact_media (contact_pk, medium, opted_out_at, opted_out_source) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (contact_pk, medium) DO UPDATE SET \
         opted_out_at = excluded.opted_out_at, opted_out_source = excluded.opted_out_source",
    )
    .bind(contact_pk)
    .bind(medium.as_str())
    .bind(at)
    .bind(source)
    .execute(&mut *tx)
    .await?;
    webhooks::enqueue_contact_opted_out(tx, contact_id, medium, source, Some(channel), now).await?;
    Ok(Some(true))
}
