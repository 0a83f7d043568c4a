//! Runs: one firing of a campaign, pinned to the revision it started with. Creating a run
//! and snapshotting its audience into delivery rows is one write transaction, so a run
//! either exists with every delivery row or not at all.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::deliveries::DeliveryStatus;
use super::revisions::StoredSpec;
use super::{Store, StoreError};

/// A run's lifecycle: `scheduled → running → finished`, or `paused`, `cancelled`,
/// `failed`; `skipped` for an occurrence missed outside its grace window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Scheduled,
    Running,
    Paused,
    Finished,
    Cancelled,
    Failed,
    Skipped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Scheduled => "scheduled",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Finished => "finished",
            RunState::Cancelled => "cancelled",
            RunState::Failed => "failed",
            RunState::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        [
            RunState::Scheduled,
            RunState::Running,
            RunState::Paused,
            RunState::Finished,
            RunState::Cancelled,
            RunState::Failed,
            RunState::Skipped,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Scheduled, running or paused: the run may still send.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunState::Scheduled | RunState::Running | RunState::Paused
        )
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who paused a run: an operator, or the revision that disabled its campaign (only those
/// resume by themselves when the campaign is enabled again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PausedBy {
    Operator,
    CampaignDisabled,
}

impl PausedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            PausedBy::Operator => "operator",
            PausedBy::CampaignDisabled => "campaign_disabled",
        }
    }
}

/// A run as reported: its state, its deliveries counted by status, and its progress.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunStatus {
    pub id: i64,
    pub campaign: String,
    pub revision: i64,
    /// `schedule`, `manual` or `test`.
    pub trigger: String,
    #[serde(serialize_with = "rfc3339_opt")]
    pub occurrence_at: Option<jiff::Timestamp>,
    pub status: RunState,
    pub paused_by: Option<PausedBy>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: jiff::Timestamp,
    #[serde(serialize_with = "rfc3339_opt")]
    pub started_at: Option<jiff::Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub finished_at: Option<jiff::Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_at: Option<jiff::Timestamp>,
    /// Deliveries to attempt (the snapshot's `pending` rows).
    pub total: u64,
    /// Every delivery row by status, zeros included (`excluded` rows are the contacts left
    /// out, not part of `total`).
    pub counts: BTreeMap<DeliveryStatus, u64>,
    /// `excluded` rows by reason.
    pub excluded: BTreeMap<String, u64>,
    /// Deliveries in a final state, over `total` (1.0 for an empty run).
    pub progress: f64,
    pub error: Option<String>,
}

/// A run as the engine needs it to send.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub campaign: String,
    pub revision: i64,
    pub trigger: String,
    pub status: RunState,
    pub paused_by: Option<PausedBy>,
    pub occurrence_at: Option<i64>,
    pub started_at: Option<i64>,
    pub expires_at: Option<i64>,
}

fn rfc3339<S: serde::Serializer>(t: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<jiff::Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(t),
        None => s.serialize_none(),
    }
}

pub(crate) fn ts(ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn decode_run(row: &sqlx::sqlite::SqliteRow) -> Result<RunRow, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let paused_by: Option<String> = row.try_get("paused_by")?;
    Ok(RunRow {
        id: row.try_get("id")?,
        campaign: row.try_get("campaign")?,
        revision: row.try_get("revision_id")?,
        trigger: row.try_get("trigger")?,
        status: RunState::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown run status {status}").into()))?,
        paused_by: match paused_by.as_deref() {
            Some("operator") => Some(PausedBy::Operator),
            Some("campaign_disabled") => Some(PausedBy::CampaignDisabled),
            _ => None,
        },
        occurrence_at: row.try_get("occurrence_at")?,
        started_at: row.try_get("started_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

const RUN_COLUMNS: &str =
    "id, campaign, revision_id, trigger, status, paused_by, occurrence_at, started_at, expires_at";

impl Store {
    /// The spec versions in force at `revision` (introduced at or before it and not yet
    /// retired by it), by kind then name.
    pub async fn specs_at_revision(&self, revision: i64) -> Result<Vec<StoredSpec>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, name, body, hash, file, line, introduced_in FROM specs \
             WHERE introduced_in <= ?1 AND (retired_in IS NULL OR retired_in > ?1) \
             ORDER BY kind, name",
        )
        .bind(revision)
        .fetch_all(self.reader())
        .await?;
        let specs = rows
            .iter()
            .map(super::revisions::stored_spec)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(specs)
    }

    /// The row key of the campaign's spec version in force at `revision`.
    pub async fn campaign_spec_id(
        &self,
        campaign: &str,
        revision: i64,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM specs WHERE kind = 'Campaign' AND name = ?1 \
             AND introduced_in <= ?2 AND (retired_in IS NULL OR retired_in > ?2)",
        )
        .bind(campaign)
        .bind(revision)
        .fetch_optional(self.reader())
        .await?)
    }

    /// One run, as the engine needs it.
    pub async fn run_row(&self, run: i64) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"
        )))
        .bind(run)
        .fetch_optional(self.reader())
        .await?;
        Ok(match row {
            Some(row) => Some(decode_run(&row)?),
            None => None,
        })
    }

    /// Every run that may still send (scheduled, running, paused).
    pub async fn active_runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs \
             WHERE status IN ('scheduled', 'running', 'paused') ORDER BY id"
        )))
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| decode_run(r).map_err(StoreError::from))
            .collect()
    }

    /// The run of `campaign` for a scheduled `occurrence`, if one exists.
    pub async fn run_for_occurrence(
        &self,
        campaign: &str,
        occurrence: jiff::Timestamp,
    ) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM runs WHERE campaign = ? AND occurrence_at = ?")
                .bind(campaign)
                .bind(occurrence.as_millisecond())
                .fetch_optional(self.reader())
                .await?,
        )
    }

    /// Records a skipped occurrence (or returns the run that occurrence already has).
    pub async fn skip_run(
        &self,
        campaign: &str,
        campaign_spec_id: i64,
        revision: i64,
        occurrence: jiff::Timestamp,
        reason: &str,
        now: jiff::Timestamp,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM runs WHERE campaign = ? AND occurrence_at = ?")
                .bind(campaign)
                .bind(occurrence.as_millisecond())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = existing {
            return Ok(id);
        }
        let id = sqlx::query_scalar(
            "INSERT INTO runs (campaign, campaign_spec_id, revision_id, trigger, occurrence_at, \
             status, created_at, finished_at, error) \
             VALUES (?, ?, ?, 'schedule', ?, 'skipped', ?, ?, ?) RETURNING id",
        )
        .bind(campaign)
        .bind(campaign_spec_id)
        .bind(revision)
        .bind(occurrence.as_millisecond())
        .bind(now.as_millisecond())
        .bind(now.as_millisecond())
        .bind(reason)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Sets a run's status if it is one of `from`. Returns whether it changed. Cancelling
    /// also cancels its pending and retrying deliveries (rows being sent are recorded with
    /// their real outcome).
    pub async fn set_run_state(
        &self,
        run: i64,
        from: &[RunState],
        to: RunState,
        paused_by: Option<PausedBy>,
        now: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        let now = now.as_millisecond();
        let mut tx = self.begin_write().await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM runs WHERE id = ?")
            .bind(run)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(status) = status.and_then(|s| RunState::parse(&s)) else {
            return Ok(false);
        };
        if !from.contains(&status) {
            return Ok(false);
        }
        let finished = matches!(to, RunState::Cancelled | RunState::Finished);
        sqlx::query(
            "UPDATE runs SET status = ?, paused_by = ?, \
             finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE id = ?",
        )
        .bind(to.as_str())
        .bind(paused_by.map(PausedBy::as_str))
        .bind(finished)
        .bind(now)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        if to == RunState::Cancelled {
            sqlx::query(
                "UPDATE deliveries SET status = 'cancelled', reason = 'run cancelled', \
                 next_attempt_at = NULL, updated_at = ? \
                 WHERE run_id = ? AND status IN ('pending', 'retry')",
            )
            .bind(now)
            .bind(run)
            .execute(&mut *tx)
            .await?;
        }
        super::webhooks::enqueue_runs_finished(&mut tx, &[run], now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Resumes a run only while it is `paused` by `paused_by` (checked in the `UPDATE`
    /// itself, so a pause by someone else meanwhile is never overridden). Returns whether
    /// it changed.
    pub async fn resume_paused_by(
        &self,
        run: i64,
        paused_by: PausedBy,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE runs SET status = 'running', paused_by = NULL \
             WHERE id = ? AND status = 'paused' AND paused_by = ?",
        )
        .bind(run)
        .bind(paused_by.as_str())
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Marks an active run `failed` with `error` (its configuration cannot be used: nothing
    /// of it can be sent); its pending and retrying deliveries fail with the same reason.
    pub async fn fail_run(
        &self,
        run: i64,
        error: &str,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let now = now.as_millisecond();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE runs SET status = 'failed', error = ?, finished_at = ? \
             WHERE id = ? AND status IN ('scheduled', 'running', 'paused')",
        )
        .bind(error)
        .bind(now)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'failed', reason = ?, next_attempt_at = NULL, \
             updated_at = ? WHERE run_id = ? AND status IN ('pending', 'retry')",
        )
        .bind(format!("the run failed: {error}"))
        .bind(now)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        super::webhooks::enqueue_runs_finished(&mut tx, &[run], now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A run's report: state, counts by delivery status and exclusion reason, progress.
    pub async fn run_status(&self, run: i64) -> Result<Option<RunStatus>, StoreError> {
        let row = sqlx::query(
            "SELECT id, campaign, revision_id, trigger, occurrence_at, status, paused_by, \
             created_at, started_at, finished_at, expires_at, total, error FROM runs WHERE id = ?",
        )
        .bind(run)
        .fetch_optional(self.reader())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let counted: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT status, CASE WHEN status = 'excluded' THEN reason END, count(*) \
             FROM deliveries WHERE run_id = ? GROUP BY 1, 2",
        )
        .bind(run)
        .fetch_all(self.reader())
        .await?;
        let mut counts: BTreeMap<DeliveryStatus, u64> =
            DeliveryStatus::ALL.iter().map(|s| (*s, 0)).collect();
        let mut excluded = BTreeMap::new();
        for (status, reason, n) in counted {
            let n = u64::try_from(n).unwrap_or(0);
            if let Some(s) = DeliveryStatus::parse(&status) {
                *counts.entry(s).or_insert(0) += n;
            }
            if let Some(reason) = reason {
                *excluded.entry(reason).or_insert(0) += n;
            }
        }
        let total = u64::try_from(row.try_get::<i64, _>("total")?).unwrap_or(0);
        let done: u64 = counts
            .iter()
            .filter(|(s, _)| s.is_final())
            .map(|(_, n)| n)
            .sum();
        let status: String = row.try_get("status")?;
        let paused_by: Option<String> = row.try_get("paused_by")?;
        let opt = |name: &str| -> Result<Option<jiff::Timestamp>, sqlx::Error> {
            Ok(row.try_get::<Option<i64>, _>(name)?.map(ts))
        };
        Ok(Some(RunStatus {
            id: row.try_get("id")?,
            campaign: row.try_get("campaign")?,
            revision: row.try_get("revision_id")?,
            trigger: row.try_get("trigger")?,
            occurrence_at: opt("occurrence_at")?,
            status: RunState::parse(&status).unwrap_or(RunState::Failed),
            paused_by: match paused_by.as_deref() {
                Some("operator") => Some(PausedBy::Operator),
                Some("campaign_disabled") => Some(PausedBy::CampaignDisabled),
                _ => None,
            },
            created_at: ts(row.try_get("created_at")?),
            started_at: opt("started_at")?,
            finished_at: opt("finished_at")?,
            expires_at: opt("expires_at")?,
            total,
            counts,
            excluded,
            progress: if total == 0 {
                1.0
            } else {
                done.min(total) as f64 / total as f64
            },
            error: row.try_get("error")?,
        }))
    }
}

/// A run to create, as [`Store::create_run`] receives it.
#[derive(Clone, Debug)]
pub struct NewRun<'a> {
    pub campaign: &'a str,
    pub campaign_spec_id: i64,
    pub revision: i64,
    /// `schedule`, `manual` or `test`.
    pub trigger: &'a str,
    /// The scheduled instant (schedule triggers only).
    pub occurrence: Option<jiff::Timestamp>,
    /// `max_duration` in milliseconds: the run's deliveries expire this long after it starts.
    pub max_duration_ms: i64,
}

/// A run's first send time per contact time zone (`local_time: true`): given a contact's
/// zone name (`None` for none), the instant in unix ms.
pub type LocalStart<'a> = &'a (dyn Fn(Option<&str>) -> i64 + Sync);

impl Store {
    /// Creates a run and snapshots its audience by `query` (the campaign's decision SQL)
    /// in one transaction: the run row, one `pending` delivery per recipient and channel,
    /// one `excluded` row per contact left out, `total`, then `running` (or `finished` at
    /// once when nobody is left to send to). With `local_start`, each pending row is due at
    /// the instant it gives for its contact's time zone.
    ///
    /// Returns the run and whether it was created: a run that already exists for
    /// `occurrence` is returned as it is (never two runs per occurrence).
    pub async fn create_run(
        &self,
        new: &NewRun<'_>,
        query: &crate::audience::CampaignQuery,
        local_start: Option<LocalStart<'_>>,
        now: jiff::Timestamp,
    ) -> Result<(i64, bool), StoreError> {
        let now = now.as_millisecond();
        let mut tx = self.begin_write().await?;
        if let Some(occurrence) = new.occurrence {
            let existing: Option<i64> =
                sqlx::query_scalar("SELECT id FROM runs WHERE campaign = ? AND occurrence_at = ?")
                    .bind(new.campaign)
                    .bind(occurrence.as_millisecond())
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(id) = existing {
                return Ok((id, false));
            }
        }
        let run: i64 = sqlx::query_scalar(
            "INSERT INTO runs (campaign, campaign_spec_id, revision_id, trigger, occurrence_at, \
             status, created_at, started_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, 'scheduled', ?, ?, ?) RETURNING id",
        )
        .bind(new.campaign)
        .bind(new.campaign_spec_id)
        .bind(new.revision)
        .bind(new.trigger)
        .bind(new.occurrence.map(|t| t.as_millisecond()))
        .bind(now)
        .bind(now)
        .bind(now.saturating_add(new.max_duration_ms))
        .fetch_one(&mut *tx)
        .await?;
        // Keys are unique across stores too (the receiver may see several herald instances):
        // run id and creation time; only [a-z0-9-], as Standard Webhooks ids need.
        let key_prefix = format!("h{run}-{now:x}-");
        if let Some(cap) = query.frequency_cap {
            for (sql, params) in super::segments::capped_sql(cap) {
                sqlx::query_with(
                    sqlx::AssertSqlSafe(sql),
                    super::segments::arguments(&params)?,
                )
                .persistent(false)
                .execute(&mut *tx)
                .await?;
            }
        }
        let (sql, params) = super::segments::snapshot_sql(query, run, &key_prefix, now);
        sqlx::query_with(
            sqlx::AssertSqlSafe(sql),
            super::segments::arguments(&params)?,
        )
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        if let Some(local_start) = local_start {
            let zones: Vec<Option<String>> = sqlx::query_scalar(
                "SELECT DISTINCT c.timezone FROM deliveries d JOIN contacts c ON c.pk = d.contact_pk \
                 WHERE d.run_id = ? AND d.status = 'pending'",
            )
            .bind(run)
            .fetch_all(&mut *tx)
            .await?;
            let fallback = local_start(None);
            let mut case = String::from("CASE c.timezone");
            let mut args = sqlx::sqlite::SqliteArguments::default();
            use sqlx::Arguments as _;
            for zone in zones.iter().flatten() {
                case.push_str(" WHEN ? THEN ?");
                args.add(zone.clone()).map_err(sqlx::Error::Encode)?;
                args.add(local_start(Some(zone)))
                    .map_err(sqlx::Error::Encode)?;
            }
            case.push_str(" ELSE ? END");
            args.add(fallback).map_err(sqlx::Error::Encode)?;
            args.add(fallback).map_err(sqlx::Error::Encode)?;
            args.add(run).map_err(sqlx::Error::Encode)?;
            let sql = format!(
                "UPDATE deliveries SET next_attempt_at = coalesce((SELECT {case} FROM contacts c \
                 WHERE c.pk = deliveries.contact_pk), ?) WHERE run_id = ? AND status = 'pending'"
            );
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE runs SET total = (SELECT count(*) FROM deliveries \
             WHERE run_id = ?1 AND status = 'pending') WHERE id = ?1",
        )
        .bind(run)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE runs SET status = CASE WHEN total = 0 THEN 'finished' ELSE 'running' END, \
             finished_at = CASE WHEN total = 0 THEN ? END WHERE id = ?",
        )
        .bind(now)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        super::webhooks::enqueue_run_created(&mut tx, run, now).await?;
        tx.commit().await?;
        Ok((run, true))
    }
}
