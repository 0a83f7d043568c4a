//! Status, read only: the revision in force and the last reload (with every error at
//! file:line), the campaigns in force with their next fire and last run, and runs with
//! their progress, counts by delivery status and estimated time to finish.
//!
//! The views are public so that the HTML status page shows exactly what the JSON API
//! answers: [`status_view`], [`campaigns_view`], [`campaign_view`], [`runs_view`] and
//! [`run_view`]. They read the store only, so they work without a run engine.
//!
//! Test sends are runs (listed under `/v1/runs` with `test: true`) but never a campaign's
//! figures: a campaign's `last_run`, `runs` and `active_runs` leave them out.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Viewer;
use super::error::ErrorBody;
use super::{ApiError, AppState, bool_param, number_param};
use crate::engine::{DeliveryStatus, RunState, RunStatus};
use crate::schedule::{self, Decision};
use crate::store::status::{CampaignInForce, CampaignRunFigures, LastRun, RunSelection};

/// Runs listed when the request names no `limit`.
pub const DEFAULT_RUN_LIMIT: u32 = 50;
/// The most runs one list answers with.
pub const MAX_RUN_LIMIT: u32 = 500;

/// The daemon at a glance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    /// The latest applied revision; `null` before the first one.
    pub revision_in_force: Option<RevisionView>,
    /// The latest reload that found the directory changed: applied, or rejected with its
    /// errors (the revision in force then stays what it was). `null` before the first.
    pub last_reload: Option<ReloadView>,
    /// This daemon's latest look at the directory, whatever it found: `applied`,
    /// `unchanged` (the directory is the revision in force, e.g. after a bad edit was
    /// reverted, while `last_reload` still shows the rejection), `rejected` or `error`.
    /// `null` before the first look, and when the store was changed by `herald apply`
    /// rather than this daemon.
    pub last_check: Option<CheckView>,
    /// Campaigns in the revision in force (enabled or not).
    pub campaigns: u64,
    /// Runs scheduled, running or paused, test sends included.
    pub active_runs: u64,
    /// The webhook outbox: events waiting to be acknowledged by subscribers. Optional so
    /// that a daemon without webhooks support can leave it `null`.
    pub outbox: Option<OutboxView>,
}

/// One look of the daemon at its directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckView {
    /// `applied`, `unchanged`, `rejected` or `error`.
    #[schema(example = "unchanged")]
    pub outcome: String,
    /// RFC 3339, UTC.
    pub at: String,
}

/// A revision in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevisionView {
    pub id: i64,
    /// SHA-256 of the revision's documents, hex.
    pub hash: String,
    /// RFC 3339, UTC.
    pub applied_at: String,
}

/// A reload's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReloadView {
    /// The revision it recorded (applied, or rejected and never in force).
    pub revision_id: i64,
    /// `applied` or `rejected`.
    #[schema(example = "rejected")]
    pub status: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// Every error that rejected it; empty when applied.
    pub errors: Vec<ReloadError>,
}

/// One error of a rejected reload, at its place in the campaign directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReloadError {
    /// Relative to the campaign directory; `null` for errors about the directory as a whole.
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// Stable, e.g. `unknown-reference`.
    pub code: String,
    pub message: String,
    /// A hint (the closest existing name, the expected form).
    pub help: Option<String>,
}

/// The webhook outbox's depth and failures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutboxView {
    /// Events not yet acknowledged.
    pub pending: u64,
    /// Of those, events whose last attempt failed (they wait for their next attempt).
    pub failing: u64,
    /// Events given up on (every attempt failed, or their subscription went away).
    pub expired: u64,
    /// Events acknowledged by their receivers.
    pub delivered: u64,
    /// RFC 3339: when the oldest pending event was queued.
    pub oldest_pending_at: Option<String>,
    /// Subscriptions disabled after their receiver answered 410 Gone.
    pub disabled: Vec<DisabledWebhookView>,
}

/// A webhook subscription the daemon stopped sending to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DisabledWebhookView {
    pub webhook: String,
    /// RFC 3339.
    pub disabled_at: String,
    pub reason: String,
}

/// A campaign in force.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CampaignView {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    /// The schedule, for people: `cron 0 9 * * MON (Europe/Madrid)`, `at 2026-11-27T09:00:00
    /// (America/Lima)`, `now`.
    pub schedule: String,
    /// RFC 3339: the next occurrence the scheduler will fire (the current time if one is
    /// due); `null` for a disabled campaign or a schedule that fires no more.
    pub next_fire: Option<String>,
    /// The latest run, test sends excluded.
    pub last_run: Option<LastRunView>,
    /// Runs so far (skipped occurrences included), test sends excluded.
    pub runs: u64,
    /// Runs scheduled, running or paused, test sends excluded.
    pub active_runs: u64,
    /// Where the campaign is defined, relative to the campaign directory.
    pub file: String,
    pub line: u32,
}

/// A campaign's latest run, in short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LastRunView {
    pub id: i64,
    /// `schedule` or `manual`.
    pub trigger: String,
    #[schema(example = "finished")]
    pub status: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A run: its state, progress, deliveries counted by status, and times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: i64,
    pub campaign: String,
    /// The revision the run is pinned to.
    pub revision: i64,
    /// `schedule`, `manual` or `test`.
    pub trigger: String,
    /// A test send: never counted in the campaign's figures.
    pub test: bool,
    /// `scheduled`, `running`, `paused`, `finished`, `cancelled`, `failed` or `skipped`.
    #[schema(example = "running")]
    pub status: String,
    /// `operator`, or `campaign_disabled` (such runs resume when the campaign is enabled).
    pub paused_by: Option<String>,
    /// Deliveries in a final state over `total`, 0 to 100 (100 for a run with nothing to send).
    pub progress_percent: f64,
    /// Deliveries to attempt (contacts left out are not counted).
    pub total: u64,
    /// Deliveries in a final state (sent, delivered, read, failed, skipped, expired,
    /// cancelled, unknown).
    pub done: u64,
    /// Every delivery status, zeros included; `excluded` counts the contacts left out.
    pub counts: BTreeMap<String, u64>,
    /// The contacts left out, by reason.
    pub excluded: BTreeMap<String, u64>,
    /// The scheduled occurrence (schedule triggers only).
    pub occurrence_at: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Past this, what was not sent expires (`max_duration`).
    pub expires_at: Option<String>,
    /// When the run should be done, at the rate observed so far in it; `null` when nothing
    /// has finished yet or the run is not running.
    pub estimated_finish: Option<String>,
    /// Why the run failed or was skipped.
    pub error: Option<String>,
}

/// Which runs to list (the parsed form of the query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFilter {
    pub campaign: Option<String>,
    pub status: Option<RunState>,
    /// `Some(true)`: test sends only; `Some(false)`: none of them.
    pub test: Option<bool>,
    pub limit: u32,
}

impl Default for RunFilter {
    fn default() -> Self {
        RunFilter {
            campaign: None,
            status: None,
            test: None,
            limit: DEFAULT_RUN_LIMIT,
        }
    }
}

/// The query of `GET /v1/runs`, as sent.
#[derive(Clone, Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Only this campaign's runs.
    pub campaign: Option<String>,
    /// Only runs in this state: scheduled, running, paused, finished, cancelled, failed,
    /// skipped.
    pub status: Option<String>,
    /// `true`: test sends only; `false`: no test sends.
    #[param(value_type = Option<bool>)]
    pub test: Option<String>,
    /// At most this many (1 to 500; default 50).
    #[param(value_type = Option<u32>)]
    pub limit: Option<String>,
}

impl RunQuery {
    /// Reads `campaign=..&status=..` (URL-encoded); an unknown parameter is a 422 naming
    /// it, so that a misspelt filter never silently lists everything.
    pub fn from_query(query: Option<&str>) -> Result<RunQuery, ApiError> {
        let mut out = RunQuery::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (key, value) = (url_decode(key), url_decode(value));
            let slot = match key.as_str() {
                "campaign" => &mut out.campaign,
                "status" => &mut out.status,
                "test" => &mut out.test,
                "limit" => &mut out.limit,
                _ => {
                    return Err(ApiError::invalid(
                        &key,
                        "is not a parameter of this route; use campaign, status, test or limit",
                    ));
                }
            };
            *slot = Some(value);
        }
        Ok(out)
    }

    /// The filter, or 422 naming the parameter that is wrong.
    pub fn parse(&self) -> Result<RunFilter, ApiError> {
        let status = match self.status.as_deref() {
            None | Some("") => None,
            Some(text) => Some(RunState::parse(text).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!(
                        "`{text}` is not a run status; use scheduled, running, paused, finished, cancelled, failed or skipped"
                    ),
                )
            })?),
        };
        let test = bool_param("test", self.test.as_deref())?;
        let limit = number_param(
            "limit",
            self.limit.as_deref(),
            DEFAULT_RUN_LIMIT,
            1..=MAX_RUN_LIMIT,
        )?;
        Ok(RunFilter {
            campaign: self.campaign.clone().filter(|c| !c.is_empty()),
            status,
            test,
            limit,
        })
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space); a malformed
/// escape is kept as written.
fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `file` relative to the campaign directory when it lies inside it (files are stored as
/// the daemon read them: the directory argument joined with the file), so that answers
/// show `campaigns/x.yaml` and not the server's layout.
fn relative(dir: &std::path::Path, file: &str) -> String {
    std::path::Path::new(file)
        .strip_prefix(dir)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| file.to_string())
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.to_string()
}

/// The revision in force, the last reload and its errors, and counts.
pub async fn status_view(state: &AppState) -> Result<StatusView, ApiError> {
    let campaigns = state.store.campaigns_in_force().await?.len() as u64;
    status_view_counted(state, campaigns).await
}

/// [`status_view`], for a caller that has the campaigns in force (`campaigns` of them)
/// already.
pub async fn status_view_counted(state: &AppState, campaigns: u64) -> Result<StatusView, ApiError> {
    let store = &state.store;
    let revision_in_force = store.revision_summary().await?.map(|r| RevisionView {
        id: r.id,
        hash: r.hash,
        applied_at: rfc3339(r.applied_at),
    });
    let last_reload = store.last_reload().await?.map(|r| ReloadView {
        revision_id: r.revision,
        status: r.status,
        at: rfc3339(r.at),
        errors: reload_errors(&r.errors, &state.dir),
    });
    let last_check = crate::metrics::last_reload().map(|r| CheckView {
        outcome: r.outcome.as_str().to_string(),
        at: rfc3339(r.at),
    });
    let active_runs = store.active_run_count().await?;
    let outbox = store.outbox_stats().await?;
    // The outbox's instants as its events' payloads write them.
    let ms = crate::store::webhooks::rfc3339;
    Ok(StatusView {
        revision_in_force,
        last_reload,
        last_check,
        campaigns,
        active_runs,
        outbox: Some(OutboxView {
            pending: outbox.pending,
            failing: outbox.failing,
            expired: outbox.expired,
            delivered: outbox.delivered,
            oldest_pending_at: outbox.oldest_pending_at.map(ms),
            disabled: outbox
                .disabled
                .into_iter()
                .map(|d| DisabledWebhookView {
                    webhook: d.webhook,
                    disabled_at: ms(d.disabled_at),
                    reason: d.reason,
                })
                .collect(),
        }),
    })
}

/// The diagnostics stored with a revision (`validate --format json`'s shape) as API errors.
/// Warnings are not stored; an entry that does not have the shape is shown by its message.
fn reload_errors(errors: &serde_json::Value, dir: &std::path::Path) -> Vec<ReloadError> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let number = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    errors
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| ReloadError {
                    file: text(&e["file"]).map(|f| relative(dir, &f)),
                    line: number(&e["line"]),
                    column: number(&e["column"]),
                    code: text(&e["code"]).unwrap_or_else(|| "error".into()),
                    message: text(&e["message"]).unwrap_or_else(|| e.to_string()),
                    help: text(&e["help"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every campaign in force, by name.
pub async fn campaigns_view(state: &AppState) -> Result<Vec<CampaignView>, ApiError> {
    let campaigns = state.store.campaigns_in_force().await?;
    let mut figures = state.store.campaign_run_figures().await?;
    let next = next_fires(state).await?;
    Ok(campaigns
        .into_iter()
        .map(|c| {
            let figures = figures.remove(&c.name).unwrap_or_default();
            let next_fire = next.get(&c.name).copied().map(rfc3339);
            campaign_of(c, figures, next_fire, &state.dir)
        })
        .collect())
}

/// One campaign in force; 404 if the revision in force has none of that name.
pub async fn campaign_view(state: &AppState, name: &str) -> Result<CampaignView, ApiError> {
    campaigns_view(state)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::not_found(format_args!("campaign `{name}` in force")))
}

fn campaign_of(
    c: CampaignInForce,
    figures: CampaignRunFigures,
    next_fire: Option<String>,
    dir: &std::path::Path,
) -> CampaignView {
    let spec = &c.body["spec"];
    CampaignView {
        description: c.body["metadata"]["description"]
            .as_str()
            .map(str::to_string),
        enabled: spec["enabled"].as_bool().unwrap_or(true),
        schedule: schedule_summary(&spec["schedule"]),
        next_fire,
        last_run: figures.last_run.map(last_run_of),
        runs: figures.runs,
        active_runs: figures.active_runs,
        file: relative(dir, &c.file),
        line: c.line,
        name: c.name,
    }
}

fn last_run_of(r: LastRun) -> LastRunView {
    LastRunView {
        id: r.id,
        trigger: r.trigger,
        status: r.status.to_string(),
        created_at: rfc3339(r.created_at),
        started_at: r.started_at.map(rfc3339),
        finished_at: r.finished_at.map(rfc3339),
    }
}

/// `cron 0 9 * * MON (Europe/Madrid)`, `at 2026-11-27T09:00:00 (America/Lima)`, `now`.
fn schedule_summary(schedule: &serde_json::Value) -> String {
    let zone = schedule["timezone"].as_str().unwrap_or("UTC");
    if let Some(cron) = schedule["cron"].as_str() {
        format!("cron {cron} ({zone})")
    } else if let Some(at) = schedule["at"].as_str() {
        format!("at {at} ({zone})")
    } else if schedule["now"].as_bool() == Some(true) {
        "now".to_string()
    } else {
        "none".to_string()
    }
}

/// Each enabled campaign's next fire, as the scheduler decides it from the stored schedule
/// state: an occurrence already due (about to fire, or be recorded as skipped) shows as now.
async fn next_fires(state: &AppState) -> Result<BTreeMap<String, jiff::Timestamp>, ApiError> {
    let now = state.now();
    let schedules = crate::daemon::campaign_schedules(&state.store)
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let states = state.store.schedule_states().await?;
    Ok(schedules
        .iter()
        .filter_map(|c| {
            let at = match schedule::decide(c, states.get(&c.campaign), now).decision {
                Decision::Fire(_) | Decision::Skip { .. } => now,
                Decision::Wait(at) => at,
                Decision::Done => return None,
            };
            Some((c.campaign.clone(), at))
        })
        .collect())
}

/// The runs `filter` picks, newest first.
pub async fn runs_view(state: &AppState, filter: RunFilter) -> Result<Vec<RunView>, ApiError> {
    let ids = run_ids(state, filter).await?;
    runs_of(state, ids).await
}

/// The ids of the runs `filter` picks, newest first.
pub async fn run_ids(state: &AppState, filter: RunFilter) -> Result<Vec<i64>, ApiError> {
    let selection = RunSelection {
        campaign: filter.campaign,
        status: filter.status,
        test: filter.test,
        limit: filter.limit.clamp(1, MAX_RUN_LIMIT),
    };
    Ok(state.store.run_ids(&selection).await?)
}

/// The runs `ids` names, in that order.
pub async fn runs_of(state: &AppState, ids: Vec<i64>) -> Result<Vec<RunView>, ApiError> {
    let now = state.now();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        // A run listed a moment ago is never deleted, so it is there.
        if let Some(run) = state.store.run_status(id).await? {
            out.push(run_view_of(run, now));
        }
    }
    Ok(out)
}

/// One run; 404 if there is none with this id.
pub async fn run_view(state: &AppState, id: i64) -> Result<RunView, ApiError> {
    let run = state
        .store
        .run_status(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("run {id}")))?;
    Ok(run_view_of(run, state.now()))
}

/// The API's view of a run's report, with the estimated finish as of `now`.
pub fn run_view_of(run: RunStatus, now: jiff::Timestamp) -> RunView {
    let done: u64 = run
        .counts
        .iter()
        .filter(|(s, _)| s.is_final())
        .map(|(_, n)| n)
        .sum();
    let estimated_finish = estimated_finish(&run, done, now).map(rfc3339);
    let counts = DeliveryStatus::ALL
        .iter()
        .map(|s| {
            (
                s.as_str().to_string(),
                run.counts.get(s).copied().unwrap_or(0),
            )
        })
        .collect();
    RunView {
        id: run.id,
        test: run.trigger == "test",
        campaign: run.campaign,
        revision: run.revision,
        trigger: run.trigger,
        status: run.status.to_string(),
        paused_by: run.paused_by.map(|p| p.as_str().to_string()),
        // One decimal: enough to see a large run move.
        progress_percent: (run.progress * 1000.0).round() / 10.0,
        total: run.total,
        done: done.min(run.total),
        counts,
        excluded: run.excluded,
        occurrence_at: run.occurrence_at.map(rfc3339),
        created_at: rfc3339(run.created_at),
        started_at: run.started_at.map(rfc3339),
        finished_at: run.finished_at.map(rfc3339),
        expires_at: run.expires_at.map(rfc3339),
        estimated_finish,
        error: run.error,
    }
}

/// `now` + what remains at the rate observed so far (deliveries done over the time since
/// the run started). `None` unless the run is running with something done and something
/// left: a paused run's clock does not run, and a finished one needs no estimate. Never
/// after the run's expiry, when what is left expires.
fn estimated_finish(run: &RunStatus, done: u64, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    if run.status != RunState::Running || done == 0 || done >= run.total {
        return None;
    }
    let started = run.started_at?;
    let elapsed_ms = now.duration_since(started).as_millis().max(1) as f64;
    let remaining = (run.total - done) as f64;
    let left_ms = remaining * elapsed_ms / done as f64;
    let left = jiff::SignedDuration::from_millis(left_ms.min(i64::MAX as f64) as i64);
    let at = now.checked_add(left).ok()?;
    Some(match run.expires_at {
        Some(expiry) if expiry < at => expiry,
        _ => at,
    })
}

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_status))
        .routes(routes!(list_campaigns))
        .routes(routes!(get_campaign))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
}

/// The revision in force, the last reload (with every error at file:line) and counts.
#[utoipa::path(get, path = "/v1/status", tag = "status",
    security(("bearer" = ["viewer"])),
    responses(
        (status = 200, description = "the daemon's status", body = StatusView),
        (status = 401, description = "no valid token", body = ErrorBody)
    ))]
async fn get_status(
    _: Viewer,
    State(state): State<AppState>,
) -> Result<Json<StatusView>, ApiError> {
    Ok(Json(status_view(&state).await?))
}

/// Every campaign in force: enabled, schedule, next fire and last run (test sends excluded).
#[utoipa::path(get, path = "/v1/campaigns", tag = "status",
    security(("bearer" = ["viewer"])),
    responses(
        (status = 200, description = "the campaigns in force, by name", body = Vec<CampaignView>),
        (status = 401, description = "no valid token", body = ErrorBody)
    ))]
async fn list_campaigns(
    _: Viewer,
    State(state): State<AppState>,
) -> Result<Json<Vec<CampaignView>>, ApiError> {
    Ok(Json(campaigns_view(&state).await?))
}

/// One campaign in force.
#[utoipa::path(get, path = "/v1/campaigns/{name}", tag = "status",
    security(("bearer" = ["viewer"])),
    params(("name" = String, Path, description = "the campaign's metadata.name")),
    responses(
        (status = 200, description = "the campaign", body = CampaignView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no campaign of that name is in force", body = ErrorBody)
    ))]
async fn get_campaign(
    _: Viewer,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    Ok(Json(campaign_view(&state, &name).await?))
}

/// Runs, newest first, with progress and counts.
#[utoipa::path(get, path = "/v1/runs", tag = "status",
    security(("bearer" = ["viewer"])),
    params(RunQuery),
    responses(
        (status = 200, description = "the runs, newest first", body = Vec<RunView>),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 422, description = "a query parameter is invalid (named in the message)", body = ErrorBody)
    ))]
async fn list_runs(
    _: Viewer,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<RunView>>, ApiError> {
    let filter = RunQuery::from_query(query.as_deref())?.parse()?;
    Ok(Json(runs_view(&state, filter).await?))
}

/// One run: status, progress, counts by delivery status, times and estimated finish.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "status",
    security(("bearer" = ["viewer"])),
    params(("id" = i64, Path, description = "the run's id")),
    responses(
        (status = 200, description = "the run", body = RunView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no run has this id", body = ErrorBody),
        (status = 422, description = "the id is not an integer", body = ErrorBody)
    ))]
async fn get_run(
    _: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    Ok(Json(run_view(&state, parse_run_id(&id)?).await?))
}

/// A run id from a path, or 422 naming `id`.
pub(super) fn parse_run_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .map_err(|_| ApiError::invalid("id", format!("`{text}` is not a run id (an integer)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn running(total: u64, sent: u64) -> RunStatus {
        RunStatus {
            id: 1,
            campaign: "c".into(),
            revision: 1,
            trigger: "manual".into(),
            occurrence_at: None,
            status: RunState::Running,
            paused_by: None,
            created_at: at("2026-11-27T09:00:00Z"),
            started_at: Some(at("2026-11-27T09:00:00Z")),
            finished_at: None,
            expires_at: Some(at("2026-11-27T10:00:00Z")),
            total,
            counts: [
                (DeliveryStatus::Sent, sent),
                (DeliveryStatus::Pending, total - sent),
            ]
            .into_iter()
            .collect(),
            excluded: BTreeMap::new(),
            progress: sent as f64 / total as f64,
            error: None,
        }
    }

    #[test]
    fn the_estimate_extrapolates_the_pace_so_far_and_never_passes_the_expiry() {
        // 100 of 400 in 10 minutes: 300 more take 30 minutes.
        let view = run_view_of(running(400, 100), at("2026-11-27T09:10:00Z"));
        assert_eq!(
            view.estimated_finish.as_deref(),
            Some("2026-11-27T09:40:00Z")
        );
        assert_eq!(view.progress_percent, 25.0);
        assert_eq!(view.counts.len(), DeliveryStatus::ALL.len());
        // 10 of 400 in 10 minutes would take 6.5 hours: what is left expires at 10:00.
        let view = run_view_of(running(400, 10), at("2026-11-27T09:10:00Z"));
        assert_eq!(
            view.estimated_finish.as_deref(),
            Some("2026-11-27T10:00:00Z")
        );
        // Nothing done yet, or paused: no estimate.
        let view = run_view_of(running(400, 0), at("2026-11-27T09:10:00Z"));
        assert_eq!(view.estimated_finish, None);
        let mut paused = running(400, 100);
        paused.status = RunState::Paused;
        assert_eq!(
            run_view_of(paused, at("2026-11-27T09:10:00Z")).estimated_finish,
            None
        );
    }

    #[test]
    fn a_query_is_decoded_and_a_wrong_parameter_is_named() {
        let query =
            RunQuery::from_query(Some("campaign=black%2Dfriday+x&status=running&limit=5")).unwrap();
        let filter = query.parse().unwrap();
        assert_eq!(filter.campaign.as_deref(), Some("black-friday x"));
        assert_eq!(filter.status, Some(RunState::Running));
        assert_eq!(filter.limit, 5);
        assert_eq!(
            RunQuery::from_query(None).unwrap().parse().unwrap(),
            RunFilter::default()
        );
        let e = RunQuery::from_query(Some("sort=id")).unwrap_err();
        assert!(e.message.starts_with("sort:"), "{e}");
        for (query, field) in [
            ("status=done", "status:"),
            ("limit=501", "limit:"),
            ("test=yes", "test:"),
        ] {
            let e = RunQuery::from_query(Some(query))
                .unwrap()
                .parse()
                .unwrap_err();
            assert!(e.message.starts_with(field), "{query}: {e}");
        }
        assert_eq!(
            url_decode("%zz%4"),
            "%zz%4",
            "a malformed escape stays as written"
        );
    }
}
