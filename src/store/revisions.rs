//! Revisions of the campaign directory and the versions of the specs they put in force.
//!
//! A revision is applied in one write transaction: its row, the retirement of every spec
//! version it changes or removes, the new versions, and the cancellation of the runs of
//! removed campaigns. A rejected revision is one row with its errors and nothing else, so
//! the revision in force (the latest applied one) stays what it was.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::{Store, StoreError, millis};
use crate::spec::Kind;

/// The revision in force and the spec versions it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct RevisionInForce {
    pub id: i64,
    pub hash: String,
    pub applied_at: jiff::Timestamp,
    /// By kind, then name.
    pub specs: Vec<StoredSpec>,
}

/// One spec version as stored. `body` is `{"metadata": .., "spec": ..}` with secrets as
/// references.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSpec {
    pub kind: Kind,
    pub name: String,
    pub body: serde_json::Value,
    pub hash: String,
    pub file: String,
    pub line: u32,
    pub introduced_in: i64,
}

/// A spec version to put in force.
#[derive(Clone, Debug)]
pub struct NewSpec {
    pub kind: Kind,
    pub name: String,
    pub body: serde_json::Value,
    pub hash: String,
    pub file: String,
    pub line: u32,
}

/// What applying a revision changes, as [`Store::apply_revision`] receives it.
#[derive(Clone, Debug, Default)]
pub struct RevisionWrite {
    pub hash: String,
    /// The directory, as given.
    pub source: String,
    /// The revision the plan was computed against (`None`: an empty store). Applying fails
    /// with [`StoreError::Conflict`] if another revision was applied since.
    pub based_on: Option<i64>,
    /// New objects: inserted.
    pub created: Vec<NewSpec>,
    /// Changed objects: the version in force is retired, this one inserted.
    pub changed: Vec<NewSpec>,
    /// Removed objects: the version in force is retired.
    pub removed: Vec<(Kind, String)>,
}

/// What an applied revision did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub revision: i64,
    /// Active runs (scheduled, running, paused) of removed campaigns, now cancelled.
    pub cancelled_runs: u64,
    /// Their pending and retrying deliveries, now cancelled.
    pub cancelled_deliveries: u64,
}

/// Why a revision was not applied. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Another revision was applied between the plan and this apply: plan again.
    #[error(
        "the store changed while planning: the plan was made against revision {}, but {} is in force now",
        show(*expected),
        show(*found)
    )]
    Conflict {
        expected: Option<i64>,
        found: Option<i64>,
    },
    /// The plan changes or removes an object the store does not hold in force.
    #[error("{kind} {name} is not in force in the store, so it cannot be changed or removed")]
    NotInForce { kind: Kind, name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn show(revision: Option<i64>) -> String {
    revision.map_or_else(|| "none".to_string(), |id| id.to_string())
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        ApplyError::Store(StoreError::Sql(e))
    }
}

impl Store {
    /// Opens an existing store for reading only: no file is created, no migration runs and
    /// any write fails. `plan` uses it, so that planning never changes the store.
    pub async fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_err)?
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let read = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        Ok(Store {
            path: path.to_path_buf(),
            write: read.clone(),
            read,
        })
    }

    /// The latest applied revision and its specs; `None` for a store nothing was applied to.
    pub async fn revision_in_force(&self) -> Result<Option<RevisionInForce>, StoreError> {
        let row: Option<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, hash, created_at FROM revisions WHERE status = 'applied' \
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(self.reader())
        .await?;
        let Some((id, hash, applied_at)) = row else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT kind, name, body, hash, file, line, introduced_in FROM specs \
             WHERE retired_in IS NULL ORDER BY kind, name",
        )
        .fetch_all(self.reader())
        .await?;
        let mut specs = rows
            .iter()
            .map(stored_spec)
            .collect::<Result<Vec<_>, _>>()?;
        specs.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(Some(RevisionInForce {
            id,
            hash,
            applied_at: jiff::Timestamp::from_millisecond(applied_at)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            specs,
        }))
    }

    /// When the campaign's schedule `schedule` (its body's `spec.schedule`) came into
    /// force: the apply time of the revision that introduced the earliest spec version of an
    /// unbroken line of versions, ending with the one in force, that all have this schedule.
    /// Other edits to the campaign (or to anything else) do not move it. `None` if the
    /// campaign is not in force with this schedule.
    pub async fn schedule_in_force_since(
        &self,
        campaign: &str,
        schedule: &serde_json::Value,
    ) -> Result<Option<jiff::Timestamp>, StoreError> {
        let rows: Vec<(i64, Option<i64>, String)> = sqlx::query_as(
            "SELECT introduced_in, retired_in, body FROM specs \
             WHERE kind = 'Campaign' AND name = ?1 ORDER BY introduced_in DESC",
        )
        .bind(campaign)
        .fetch_all(self.reader())
        .await?;
        let mut since: Option<i64> = None;
        for (introduced_in, retired_in, body) in rows {
            // The first row is the version in force; each next one must end where the
            // previous began, or the campaign was deleted in between.
            let contiguous = match since {
                None => retired_in.is_none(),
                Some(later) => retired_in == Some(later),
            };
            let body: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| sqlx::Error::Decode(e.into()))?;
            if !contiguous || body["spec"]["schedule"] != *schedule {
                break;
            }
            since = Some(introduced_in);
        }
        let Some(revision) = since else {
            return Ok(None);
        };
        let at: Option<i64> = sqlx::query_scalar("SELECT created_at FROM revisions WHERE id = ?")
            .bind(revision)
            .fetch_optional(self.reader())
            .await?;
        Ok(at.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()))
    }

    /// Records a rejected revision with its errors (a JSON array of diagnostics). Nothing
    /// else changes. Returns the revision's id.
    pub async fn record_rejected(
        &self,
        hash: &str,
        source: &str,
        errors_json: &str,
        now: jiff::Timestamp,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = sqlx::query_scalar(
            "INSERT INTO revisions (hash, status, source, created_at, errors) \
             VALUES (?, 'rejected', ?, ?, ?) RETURNING id",
        )
        .bind(hash)
        .bind(source)
        .bind(millis(now))
        .bind(errors_json)
        .fetch_one(&mut *tx)
        .await?;
        super::webhooks::enqueue_config_rejected(&mut tx, id, hash, errors_json, millis(now))
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Applies a revision in one transaction: all of it, or (on any error) none of it.
    ///
    /// Removing a campaign cancels its active runs and their pending and retrying
    /// deliveries; the runs and deliveries themselves stay, as history.
    pub async fn apply_revision(
        &self,
        write: &RevisionWrite,
        now: jiff::Timestamp,
    ) -> Result<Applied, ApplyError> {
        let now = millis(now);
        let mut tx = self.begin_write().await?;
        let in_force: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM revisions WHERE status = 'applied' ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if in_force != write.based_on {
            return Err(ApplyError::Conflict {
                expected: write.based_on,
                found: in_force,
            });
        }
        let revision: i64 = sqlx::query_scalar(
            "INSERT INTO revisions (hash, status, source, created_at) \
             VALUES (?, 'applied', ?, ?) RETURNING id",
        )
        .bind(&write.hash)
        .bind(&write.source)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let retiring = write
            .changed
            .iter()
            .map(|s| (s.kind, s.name.as_str()))
            .chain(write.removed.iter().map(|(k, n)| (*k, n.as_str())));
        for (kind, name) in retiring {
            let retired = sqlx::query(
                "UPDATE specs SET retired_in = ? \
                 WHERE kind = ? AND name = ? AND retired_in IS NULL",
            )
            .bind(revision)
            .bind(kind.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if retired != 1 {
                return Err(ApplyError::NotInForce {
                    kind,
                    name: name.to_string(),
                });
            }
        }
        for spec in write.created.iter().chain(&write.changed) {
            sqlx::query(
                "INSERT INTO specs (kind, name, introduced_in, hash, body, file, line) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(spec.kind.as_str())
            .bind(&spec.name)
            .bind(revision)
            .bind(&spec.hash)
            .bind(spec.body.to_string())
            .bind(&spec.file)
            .bind(i64::from(spec.line))
            .execute(&mut *tx)
            .await?;
        }
        let mut applied = Applied {
            revision,
            cancelled_runs: 0,
            cancelled_deliveries: 0,
        };
        for (_, campaign) in write.removed.iter().filter(|(k, _)| *k == Kind::Campaign) {
            applied.cancelled_deliveries += sqlx::query(
                "UPDATE deliveries SET status = 'cancelled', updated_at = ?, next_attempt_at = NULL, \
                 reason = 'campaign removed' \
                 WHERE status IN ('pending', 'retry') AND run_id IN \
                 (SELECT id FROM runs WHERE campaign = ? \
                  AND status IN ('scheduled', 'running', 'paused'))",
            )
            .bind(now)
            .bind(campaign)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            applied.cancelled_runs += sqlx::query(
                "UPDATE runs SET status = 'cancelled', finished_at = ?, \
                 error = 'campaign removed in revision ' || ? \
                 WHERE campaign = ? AND status IN ('scheduled', 'running', 'paused')",
            )
            .bind(now)
            .bind(revision)
            .bind(campaign)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        super::webhooks::enqueue_runs_cancelled_by_revision(&mut tx, revision, now).await?;
        super::webhooks::enqueue_config_applied(&mut tx, revision, write, now).await?;
        tx.commit().await?;
        Ok(applied)
    }
}

/// A `specs` row (`kind, name, body, hash, file, line, introduced_in`) as a [`StoredSpec`].
pub(super) fn stored_spec(row: &sqlx::sqlite::SqliteRow) -> Result<StoredSpec, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let body: String = row.try_get("body")?;
    let decode = |e: String| sqlx::Error::Decode(e.into());
    Ok(StoredSpec {
        kind: Kind::parse(&kind).ok_or_else(|| decode(format!("unknown kind {kind}")))?,
        name: row.try_get("name")?,
        body: serde_json::from_str(&body).map_err(|e| decode(e.to_string()))?,
        hash: row.try_get("hash")?,
        file: row.try_get("file")?,
        line: u32::try_from(row.try_get::<i64, _>("line")?).unwrap_or(0),
        introduced_in: row.try_get("introduced_in")?,
    })
}
