//! Per-delivery reports: a run's deliveries read a page at a time, in id order, after the
//! last id seen (keyset pagination, never OFFSET), so that listing page 1,000 costs what
//! page 1 costs and an export of a million rows reads each row once.
//!
//! Plans (checked by a test below with `EXPLAIN QUERY PLAN`): with a status filter the
//! search is a range of `deliveries_by_run (run_id, status, id)`; without one, a range of
//! `deliveries_by_run_id (run_id, id)` (migration 0008), the channel filter applied to the
//! rows of that range. Neither sorts.

use sqlx::AssertSqlSafe;

use super::deliveries::DeliveryStatus;
use super::{Store, StoreError};

/// Which deliveries of a run to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    /// Only deliveries on one of these channels (`Some(vec![])` matches nothing; excluded
    /// contacts have no channel, so any channel filter leaves them out).
    pub channels: Option<Vec<String>>,
}

/// One delivery as reported. Instants are unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub contact_id: String,
    /// `None` for a contact left out at the snapshot (`excluded`).
    pub channel: Option<String>,
    pub address: Option<String>,
    pub status: DeliveryStatus,
    /// Why it was excluded, skipped, failed or expired (the `reason` column, else `error`).
    pub reason: Option<String>,
    pub attempts: u32,
    pub provider_message_id: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
}

type RawRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<i64>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// The page query for `filter`; its parameters are bound by [`Store::deliveries_page`] in
/// this order: run, after, [status], [channels as a JSON array], limit. Fixed text only.
fn page_sql(filter: &DeliveryFilter) -> String {
    let mut sql = String::from(
        "SELECT id, contact_id, channel, address, status, coalesce(reason, error), attempts, \
         provider_message_id, next_attempt_at, created_at, updated_at, sent_at, delivered_at, \
         read_at FROM deliveries WHERE run_id = ? AND id > ?",
    );
    if filter.status.is_some() {
        sql.push_str(" AND status = ?");
    }
    if filter.channels.is_some() {
        sql.push_str(" AND channel IN (SELECT value FROM json_each(?))");
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    sql
}

impl Store {
    /// Up to `limit` deliveries of `run` matching `filter` whose id is above `after`, by
    /// ascending id. Ids never change, so paging with the last id returned visits every
    /// matching row once, even while the run is sending (a row whose status changes between
    /// pages may leave or enter a status filter, never appear twice).
    pub async fn deliveries_page(
        &self,
        run: i64,
        filter: &DeliveryFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let sql = page_sql(filter);
        let mut query = sqlx::query_as::<_, RawRow>(AssertSqlSafe(sql))
            .bind(run)
            .bind(after);
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(channels) = &filter.channels {
            query = query.bind(serde_json::to_string(channels).expect("strings serialize"));
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await?;
        rows.into_iter()
            .map(|r| {
                let status = DeliveryStatus::parse(&r.4).ok_or_else(|| {
                    sqlx::Error::Decode(format!("unknown delivery status {}", r.4).into())
                })?;
                Ok(DeliveryRow {
                    id: r.0,
                    contact_id: r.1,
                    channel: r.2,
                    address: r.3,
                    status,
                    reason: r.5,
                    attempts: u32::try_from(r.6).unwrap_or(0),
                    provider_message_id: r.7,
                    next_attempt_at: r.8,
                    created_at: r.9,
                    updated_at: r.10,
                    sent_at: r.11,
                    delivered_at: r.12,
                    read_at: r.13,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn plan(store: &Store, filter: &DeliveryFilter) -> String {
        let sql = format!("EXPLAIN QUERY PLAN {}", page_sql(filter));
        let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(AssertSqlSafe(sql))
            .bind(1_i64)
            .bind(0_i64);
        if filter.status.is_some() {
            query = query.bind("sent");
        }
        if filter.channels.is_some() {
            query = query.bind("[\"sms\"]");
        }
        let rows = query.bind(100_i64).fetch_all(store.reader()).await.unwrap();
        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn every_page_query_is_a_range_of_an_index_without_a_sort() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).await.unwrap();
        let channels = Some(vec!["sms".to_string()]);
        let cases = [
            (
                DeliveryFilter::default(),
                "deliveries_by_run_id (run_id=? AND id>?)",
            ),
            (
                DeliveryFilter {
                    status: Some(DeliveryStatus::Sent),
                    channels: None,
                },
                "deliveries_by_run (run_id=? AND status=? AND id>?)",
            ),
            (
                DeliveryFilter {
                    status: None,
                    channels: channels.clone(),
                },
                "deliveries_by_run_id (run_id=? AND id>?)",
            ),
            (
                DeliveryFilter {
                    status: Some(DeliveryStatus::Failed),
                    channels,
                },
                "deliveries_by_run (run_id=? AND status=? AND id>?)",
            ),
        ];
        for (filter, index) in cases {
            let plan = plan(&store, &filter).await;
            assert!(plan.contains(index), "{filter:?}:\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{filter:?}:\n{plan}");
        }
        store.close().await;
    }
}
