//! What the status API reads: the revision in force and the last reload, the campaigns in
//! force with their last run, and runs listed by campaign and state. Read only: every query
//! here goes to the read pool.
//!
//! Test sends (`trigger = 'test'`) are runs like any other for [`Store::run_ids`], but are
//! left out of a campaign's figures ([`Store::campaign_run_figures`]) and of
//! [`Store::active_run_of`]: a test is not the campaign being sent.

use std::collections::BTreeMap;

use sqlx::Row;

use super::runs::{RunState, ts};
use super::{Store, StoreError};

/// The revision in force, without its specs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionSummary {
    pub id: i64,
    pub hash: String,
    pub applied_at: jiff::Timestamp,
}

/// The latest revision recorded, applied or rejected.
#[derive(Clone, Debug, PartialEq)]
pub struct ReloadRecord {
    pub revision: i64,
    /// `applied` or `rejected`.
    pub status: String,
    pub at: jiff::Timestamp,
    /// The diagnostics, as `validate --format json` prints them (empty when applied).
    pub errors: serde_json::Value,
}

/// A campaign in force, as stored (its body is `{"metadata": .., "spec": ..}`).
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignInForce {
    pub name: String,
    pub body: serde_json::Value,
    pub file: String,
    pub line: u32,
}

/// A campaign's latest run, test sends excluded.
#[derive(Clone, Debug, PartialEq)]
pub struct LastRun {
    pub id: i64,
    pub trigger: String,
    pub status: RunState,
    pub created_at: jiff::Timestamp,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: Option<jiff::Timestamp>,
}

/// A campaign's figures: test sends are never counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CampaignRunFigures {
    pub last_run: Option<LastRun>,
    /// Every run of the campaign (skipped occurrences included).
    pub runs: u64,
    /// Its scheduled, running and paused runs.
    pub active_runs: u64,
}

/// Which runs [`Store::run_ids`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSelection {
    pub campaign: Option<String>,
    pub status: Option<RunState>,
    /// `Some(true)`: test sends only; `Some(false)`: no test sends.
    pub test: Option<bool>,
    pub limit: u32,
}

impl Store {
    /// The latest applied revision's id, hash and apply time.
    pub async fn revision_summary(&self) -> Result<Option<RevisionSummary>, StoreError> {
        let row: Option<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, hash, created_at FROM revisions WHERE status = 'applied' \
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(|(id, hash, at)| RevisionSummary {
            id,
            hash,
            applied_at: ts(at),
        }))
    }

    /// The latest revision recorded, applied or rejected. A reload that found the directory
    /// unchanged records nothing, so this is the last reload that found a change.
    pub async fn last_reload(&self) -> Result<Option<ReloadRecord>, StoreError> {
        let row: Option<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT id, status, created_at, errors FROM revisions ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(self.reader())
        .await?;
        let Some((revision, status, at, errors)) = row else {
            return Ok(None);
        };
        let errors = serde_json::from_str(&errors).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(Some(ReloadRecord {
            revision,
            status,
            at: ts(at),
            errors,
        }))
    }

    /// The campaigns in force, by name.
    pub async fn campaigns_in_force(&self) -> Result<Vec<CampaignInForce>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, body, file, line FROM specs \
             WHERE kind = 'Campaign' AND retired_in IS NULL ORDER BY name",
        )
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                let body: String = row.try_get("body")?;
                Ok(CampaignInForce {
                    name: row.try_get("name")?,
                    body: serde_json::from_str(&body)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    file: row.try_get("file")?,
                    line: u32::try_from(row.try_get::<i64, _>("line")?).unwrap_or(0),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Per campaign: its latest run, how many runs it has and how many are active, test
    /// sends excluded. Campaigns without runs are absent.
    pub async fn campaign_run_figures(
        &self,
    ) -> Result<BTreeMap<String, CampaignRunFigures>, StoreError> {
        let mut out: BTreeMap<String, CampaignRunFigures> = BTreeMap::new();
        let counts: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT campaign, max(id), count(*), \
             sum(status IN ('scheduled', 'running', 'paused')) \
             FROM runs WHERE trigger <> 'test' GROUP BY campaign",
        )
        .fetch_all(self.reader())
        .await?;
        if counts.is_empty() {
            return Ok(out);
        }
        let latest: Vec<i64> = counts.iter().map(|(_, id, _, _)| *id).collect();
        let rows = sqlx::query(
            "SELECT id, campaign, trigger, status, created_at, started_at, finished_at \
             FROM runs WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(&latest).expect("ids serialize"))
        .fetch_all(self.reader())
        .await?;
        let mut last: BTreeMap<String, LastRun> = BTreeMap::new();
        for row in rows {
            let status: String = row.try_get("status")?;
            last.insert(
                row.try_get("campaign")?,
                LastRun {
                    id: row.try_get("id")?,
                    trigger: row.try_get("trigger")?,
                    status: RunState::parse(&status).unwrap_or(RunState::Failed),
                    created_at: ts(row.try_get("created_at")?),
                    started_at: row.try_get::<Option<i64>, _>("started_at")?.map(ts),
                    finished_at: row.try_get::<Option<i64>, _>("finished_at")?.map(ts),
                },
            );
        }
        for (campaign, _, runs, active) in counts {
            let last_run = last.remove(&campaign);
            out.insert(
                campaign,
                CampaignRunFigures {
                    last_run,
                    runs: u64::try_from(runs).unwrap_or(0),
                    active_runs: u64::try_from(active).unwrap_or(0),
                },
            );
        }
        Ok(out)
    }

    /// How many runs are scheduled, running or paused (test sends included: they are
    /// work the daemon is doing).
    pub async fn active_run_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE status IN ('scheduled', 'running', 'paused')",
        )
        .fetch_one(self.reader())
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The newest active run of `campaign` that is not a test send, with its state.
    pub async fn active_run_of(
        &self,
        campaign: &str,
    ) -> Result<Option<(i64, RunState)>, StoreError> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, status FROM runs WHERE campaign = ? AND trigger <> 'test' \
             AND status IN ('scheduled', 'running', 'paused') ORDER BY id DESC LIMIT 1",
        )
        .bind(campaign)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(|(id, status)| (id, RunState::parse(&status).unwrap_or(RunState::Running))))
    }

    /// The ids of the runs `selection` picks, newest first, at most `selection.limit`.
    pub async fn run_ids(&self, selection: &RunSelection) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE (?1 IS NULL OR campaign = ?1) \
             AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR (trigger = 'test') = ?3) \
             ORDER BY id DESC LIMIT ?4",
        )
        .bind(selection.campaign.as_deref())
        .bind(selection.status.map(RunState::as_str))
        .bind(selection.test)
        .bind(i64::from(selection.limit))
        .fetch_all(self.reader())
        .await?)
    }
}
