//! Running compiled segments: counts, member keys and samples of an audience.
//!
//! The SQL text of a segment comes from [`crate::audience::compile`], whose contract is that
//! no text of the user's files is in it; every value is a bound parameter.

use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe};

use super::{Store, StoreError};
use crate::audience::{CompiledSegment, SqlValue};

/// A contact shown in an audience preview.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SampledContact {
    #[serde(skip)]
    pub pk: i64,
    pub id: String,
    pub name: Option<String>,
}

pub(crate) fn arguments(params: &[SqlValue]) -> Result<SqliteArguments, sqlx::Error> {
    let mut args = SqliteArguments::default();
    for p in params {
        match p {
            SqlValue::Int(i) => args.add(*i),
            SqlValue::Real(f) => args.add(*f),
            SqlValue::Text(s) => args.add(s.clone()),
            SqlValue::Bool(b) => args.add(*b),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

impl Store {
    /// How many contacts the segment holds.
    pub async fn segment_count(&self, compiled: &CompiledSegment) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT count(*) FROM contacts c WHERE {}",
            compiled.where_sql
        );
        let n: i64 = sqlx::query_scalar_with(AssertSqlSafe(sql), arguments(&compiled.params)?)
            .fetch_one(self.reader())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The row keys of every contact in the segment, ascending.
    pub async fn segment_pks(&self, compiled: &CompiledSegment) -> Result<Vec<i64>, StoreError> {
        let sql = format!(
            "SELECT c.pk FROM contacts c WHERE {} ORDER BY c.pk",
            compiled.where_sql
        );
        Ok(
            sqlx::query_scalar_with(AssertSqlSafe(sql), arguments(&compiled.params)?)
                .fetch_all(self.reader())
                .await?,
        )
    }

    /// Up to `n` contacts of the segment, lowest row keys first (stable between calls, so a
    /// preview does not shuffle on every refresh).
    pub async fn segment_sample(
        &self,
        compiled: &CompiledSegment,
        n: u32,
    ) -> Result<Vec<SampledContact>, StoreError> {
        let sql = format!(
            "SELECT c.pk, c.id, c.name FROM contacts c WHERE {} ORDER BY c.pk LIMIT {n}",
            compiled.where_sql
        );
        let rows: Vec<(i64, String, Option<String>)> =
            sqlx::query_as_with(AssertSqlSafe(sql), arguments(&compiled.params)?)
                .fetch_all(self.reader())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(pk, id, name)| SampledContact { pk, id, name })
            .collect())
    }
}
