//! `GET /`: the status page for people. Server-rendered HTML (the template is
//! `page.html` beside this file, compiled into the binary), no script, no external asset,
//! and a `<meta http-equiv="refresh">` so an open tab keeps itself current.
//!
//! It shows the configuration (the revision in force; a rejected reload with every error at
//! file:line:column; this process's last reload), the sends (runs in progress with progress
//! bars, then the latest others), the campaigns with their next fire, and the latest failed
//! deliveries. The figures come from the same views as the JSON API ([`super::status`]), so
//! the page and `/v1/...` never disagree.
//!
//! Guarded like any read (viewer role). A browser authenticates with HTTP Basic: any user
//! name, the token as password (the 401 asks for it). Everything shown passes through the
//! template's HTML escaping; addresses are masked, and no secret is ever read here.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Viewer;
use super::error::ErrorBody;
use super::status::{self, RunFilter, RunView};
use super::{ApiError, AppState};
use crate::metrics::LastReload;
use crate::store::deliveries::DeliveryStatus;
use crate::store::metrics::FailedDelivery;
use crate::store::runs::RunState;

/// How often an open page reloads itself.
pub const REFRESH_SECONDS: u32 = 10;
/// Finished (or otherwise ended) runs shown after the active ones.
const RECENT_RUNS: u32 = 8;
/// Active runs shown per state (scheduled, running, paused).
const ACTIVE_RUNS: u32 = 50;
/// Failed deliveries shown.
const RECENT_FAILURES: u32 = 20;

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status_page))
}

/// The status page: configuration, sends with progress bars, campaigns with their next
/// fire, recent failures. Refreshes itself every 10 seconds.
#[utoipa::path(get, path = "/", tag = "status",
    security(("bearer" = ["viewer"])),
    responses(
        (status = 200, description = "the status page", content_type = "text/html", body = String),
        (status = 401, description = "no valid token; a browser is asked for HTTP Basic credentials (any user name, the token as password)", body = ErrorBody)
    ))]
async fn status_page(_: Viewer, State(state): State<AppState>) -> Result<Response, ApiError> {
    let now = state.now();
    let campaigns = status::campaigns_view(&state).await?;
    let status = status::status_view_counted(&state, campaigns.len() as u64).await?;
    let runs = runs_to_show(&state).await?;
    let failures = state.store.recent_failures(RECENT_FAILURES).await?;
    let page = PageView::new(
        now,
        status,
        campaigns,
        runs,
        failures,
        crate::metrics::last_reload(),
    );
    let html = render(&page).map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Always the state of now, never a cached one.
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response())
}

/// Active runs (running, paused, scheduled), newest first, then the latest others.
/// Each run is read once, also when it is both active and among the latest.
async fn runs_to_show(state: &AppState) -> Result<Vec<RunView>, ApiError> {
    let mut ids = Vec::new();
    for active in [RunState::Running, RunState::Paused, RunState::Scheduled] {
        let filter = RunFilter {
            status: Some(active),
            limit: ACTIVE_RUNS,
            ..RunFilter::default()
        };
        ids.extend(status::run_ids(state, filter).await?);
    }
    ids.sort_by_key(|id| std::cmp::Reverse(*id));
    let recent = RunFilter {
        limit: RECENT_RUNS,
        ..RunFilter::default()
    };
    for id in status::run_ids(state, recent).await? {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    status::runs_of(state, ids).await
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Every value is escaped for HTML, whatever the template's name: campaign names,
        // reasons and errors are text from files and providers.
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template("status-page", include_str!("page.html"))
            .expect("the status page template compiles");
        env
    })
}

fn render(page: &PageView) -> Result<String, minijinja::Error> {
    environment()
        .get_template("status-page")?
        .render(minijinja::value::Serde(page))
}

/// Everything the template shows, already in words.
#[derive(Debug, Serialize)]
struct PageView {
    generated_at: String,
    refresh_seconds: u32,
    revision: Option<RevisionLine>,
    /// The latest recorded reload, if it was a rejection newer than the revision in force.
    rejection: Option<Rejection>,
    /// This process's last reload.
    check: Option<ReloadCheck>,
    runs: Vec<RunLine>,
    campaigns: Vec<CampaignLine>,
    failures: Vec<FailureLine>,
}

#[derive(Debug, Serialize)]
struct RevisionLine {
    id: i64,
    /// The first 12 hex digits: enough to tell revisions apart.
    hash: String,
    applied_at: String,
    applied_ago: String,
}

#[derive(Debug, Serialize)]
struct Rejection {
    revision: i64,
    at: String,
    ago: String,
    /// Still the directory's state; false once a later reload found it back to the revision
    /// in force (which records no revision).
    current: bool,
    errors: Vec<ErrorLine>,
}

#[derive(Debug, Serialize)]
struct ErrorLine {
    /// `file:line:column`, or `(the directory)`.
    place: String,
    code: String,
    message: String,
    help: Option<String>,
}

#[derive(Debug, Serialize)]
struct ReloadCheck {
    outcome: &'static str,
    success: bool,
    ago: String,
    took_ms: u128,
}

#[derive(Debug, Serialize)]
struct RunLine {
    id: i64,
    campaign: String,
    status: String,
    /// The badge's colour.
    status_class: &'static str,
    paused_by: Option<String>,
    test: bool,
    done: u64,
    total: u64,
    /// The progress bar's value and maximum: `done` of `total`, or 1 of 1 for a run with
    /// nothing to send (complete: a full bar, not an empty one).
    value: u64,
    max: u64,
    percent: f64,
    /// Non-zero delivery counts, e.g. `sent 120 · retry 3 · 40 left out`.
    counts: String,
    started: Option<String>,
    finish: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct CampaignLine {
    name: String,
    description: Option<String>,
    enabled: bool,
    schedule: String,
    next_fire: Option<String>,
    next_fire_in: Option<String>,
    last_run: Option<LastRunLine>,
    file: String,
    line: u32,
}

#[derive(Debug, Serialize)]
struct LastRunLine {
    id: i64,
    status: String,
}

#[derive(Debug, Serialize)]
struct FailureLine {
    at: String,
    ago: String,
    campaign: String,
    run: i64,
    channel: Option<String>,
    contact_id: String,
    /// Masked: enough to recognise, not to reuse.
    address: Option<String>,
    status: String,
    reason: Option<String>,
}

impl PageView {
    fn new(
        now: jiff::Timestamp,
        status: status::StatusView,
        campaigns: Vec<status::CampaignView>,
        runs: Vec<RunView>,
        failures: Vec<FailedDelivery>,
        last_reload: Option<LastReload>,
    ) -> PageView {
        let in_force = status.revision_in_force.as_ref().map(|r| r.id);
        let revision = status.revision_in_force.map(|r| RevisionLine {
            id: r.id,
            hash: r.hash.chars().take(12).collect(),
            applied_ago: ago_text(now, &r.applied_at),
            applied_at: shown_time(&r.applied_at),
        });
        let rejection = status
            .last_reload
            .filter(|r| r.status == "rejected" && Some(r.revision_id) > in_force)
            .map(|r| {
                let rejected_at = r.at.parse::<jiff::Timestamp>().ok();
                // The rejection was recorded by a reload; a later successful one of this
                // process found the files back to the revision in force.
                let current = !matches!(
                    (last_reload, rejected_at),
                    (Some(last), Some(at)) if last.outcome.is_success() && last.at > at
                );
                Rejection {
                    revision: r.revision_id,
                    ago: ago_text(now, &r.at),
                    at: shown_time(&r.at),
                    current,
                    errors: r
                        .errors
                        .into_iter()
                        .map(|e| ErrorLine {
                            place: match (&e.file, e.line, e.column) {
                                (Some(f), Some(l), Some(c)) => format!("{f}:{l}:{c}"),
                                (Some(f), Some(l), None) => format!("{f}:{l}"),
                                (Some(f), None, _) => f.clone(),
                                (None, _, _) => "(the directory)".to_string(),
                            },
                            code: e.code,
                            message: e.message,
                            help: e.help,
                        })
                        .collect(),
                }
            });
        let check = last_reload.map(|last| ReloadCheck {
            outcome: last.outcome.as_str(),
            success: last.outcome.is_success(),
            ago: relative(now, last.at),
            took_ms: last.took.as_millis(),
        });
        PageView {
            generated_at: now.strftime(SHOWN_TIME).to_string(),
            refresh_seconds: REFRESH_SECONDS,
            revision,
            rejection,
            check,
            runs: runs.into_iter().map(|r| run_line(now, r)).collect(),
            campaigns: campaigns
                .into_iter()
                .map(|c| CampaignLine {
                    next_fire_in: c.next_fire.as_deref().map(|t| ago_text(now, t)),
                    next_fire: c.next_fire.as_deref().map(shown_time),
                    name: c.name,
                    description: c.description,
                    enabled: c.enabled,
                    schedule: c.schedule,
                    last_run: c.last_run.map(|r| LastRunLine {
                        id: r.id,
                        status: r.status,
                    }),
                    file: c.file,
                    line: c.line,
                })
                .collect(),
            failures: failures.into_iter().map(|f| failure_line(now, f)).collect(),
        }
    }
}

fn run_line(now: jiff::Timestamp, r: RunView) -> RunLine {
    // In the order a delivery goes through, not alphabetical.
    let mut counts: Vec<String> = DeliveryStatus::ALL
        .iter()
        .filter(|s| **s != DeliveryStatus::Excluded)
        .filter_map(|s| {
            let n = r.counts.get(s.as_str()).copied().unwrap_or(0);
            (n > 0).then(|| format!("{s} {n}"))
        })
        .collect();
    let left_out: u64 = r.excluded.values().sum();
    if left_out > 0 {
        counts.push(format!("{left_out} left out"));
    }
    let status_class = match r.status.as_str() {
        "running" | "finished" => "ok",
        "failed" | "cancelled" => "bad",
        _ => "warn",
    };
    RunLine {
        id: r.id,
        campaign: r.campaign,
        status_class,
        status: r.status,
        paused_by: r.paused_by,
        test: r.test,
        done: r.done,
        value: if r.total == 0 { 1 } else { r.done },
        max: if r.total == 0 { 1 } else { r.total },
        total: r.total,
        percent: r.progress_percent,
        counts: if counts.is_empty() {
            "nothing to send".to_string()
        } else {
            counts.join(" · ")
        },
        started: r.started_at.as_deref().map(shown_time),
        finish: r.finished_at.as_deref().map(shown_time).or_else(|| {
            r.estimated_finish
                .as_deref()
                .map(|t| format!("estimated {}", ago_text(now, t)))
        }),
        error: r.error,
    }
}

fn failure_line(now: jiff::Timestamp, f: FailedDelivery) -> FailureLine {
    let masked = f.address.as_deref().map(mask_address);
    // A provider's reason may quote the address it refused: mask it there too.
    let reason = match (&f.reason, &f.address) {
        (Some(reason), Some(address)) if !address.is_empty() => {
            Some(reason.replace(address.as_str(), &mask_address(address)))
        }
        (reason, _) => reason.clone(),
    };
    FailureLine {
        at: f.at.strftime(SHOWN_TIME).to_string(),
        ago: relative(now, f.at),
        campaign: f.campaign,
        run: f.run,
        channel: f.channel,
        contact_id: f.contact_id,
        address: masked,
        status: f.status,
        reason,
    }
}

/// Enough of an address to recognise it, not to reuse it: `l***@example.com`,
/// `+51•••••••321`.
fn mask_address(address: &str) -> String {
    if let Some((local, domain)) = address.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = address.chars().collect();
    if chars.len() <= 6 {
        return "•".repeat(chars.len().max(3));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}{}{tail}", "•".repeat(chars.len() - 6))
}

/// An RFC 3339 instant in the strftime `format`; the text as it is when it is no instant.
/// (`herald runs` shows the API's times with it too.)
pub(crate) fn reformat_time(rfc3339: &str, format: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map(|t| t.strftime(format).to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// How the page shows an instant: `2026-11-27 09:00:00 UTC`.
const SHOWN_TIME: &str = "%Y-%m-%d %H:%M:%S UTC";

/// An RFC 3339 instant as people read it.
fn shown_time(rfc3339: &str) -> String {
    reformat_time(rfc3339, SHOWN_TIME)
}

fn ago_text(now: jiff::Timestamp, rfc3339: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map(|t| relative(now, t))
        .unwrap_or_default()
}

/// `in 5 min`, `2 h ago`, `now`.
fn relative(now: jiff::Timestamp, t: jiff::Timestamp) -> String {
    let seconds = t.duration_since(now).as_secs();
    let span = seconds.unsigned_abs();
    let amount = match span {
        0..=4 => return "now".to_string(),
        5..=59 => format!("{span} s"),
        60..=7199 => format!("{} min", span / 60),
        7200..=172_799 => format!("{} h", span / 3600),
        _ => format!("{} days", span / 86_400),
    };
    if seconds > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn run(id: i64, status: &str, done: u64, total: u64) -> RunView {
        RunView {
            id,
            campaign: "black-friday".into(),
            revision: 1,
            trigger: "schedule".into(),
            test: false,
            status: status.into(),
            paused_by: None,
            progress_percent: if total == 0 {
                100.0
            } else {
                (done as f64 * 1000.0 / total as f64).round() / 10.0
            },
            total,
            done,
            counts: BTreeMap::from([
                ("sent".to_string(), done),
                ("pending".to_string(), total - done),
            ]),
            excluded: BTreeMap::from([("no consent".to_string(), 2)]),
            occurrence_at: None,
            created_at: "2026-11-27T09:00:00Z".into(),
            started_at: Some("2026-11-27T09:00:01Z".into()),
            finished_at: None,
            expires_at: None,
            estimated_finish: None,
            error: None,
        }
    }

    fn empty_status() -> status::StatusView {
        status::StatusView {
            revision_in_force: None,
            last_reload: None,
            last_check: None,
            campaigns: 0,
            active_runs: 0,
            outbox: None,
        }
    }

    #[test]
    fn user_text_is_escaped_and_addresses_are_masked() {
        let now = at("2026-11-27T10:00:00Z");
        let failure = FailedDelivery {
            id: 1,
            run: 7,
            campaign: "promo".into(),
            channel: Some("sms".into()),
            contact_id: "<script>alert(1)</script>".into(),
            address: Some("+51987654321".into()),
            status: "failed".into(),
            reason: Some("number +51987654321 is not reachable & <b>blocked</b>".into()),
            at: at("2026-11-27T09:59:00Z"),
        };
        let page = PageView::new(now, empty_status(), vec![], vec![], vec![failure], None);
        let html = render(&page).unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<b>blocked"), "{html}");
        assert!(
            !html.contains("987654321"),
            "the address shows masked only:\n{html}"
        );
        assert!(html.contains("+51••••••321"), "{html}");
        assert!(html.contains("1 min ago"), "{html}");
    }

    #[test]
    fn a_run_shows_a_progress_bar_with_its_counts() {
        let now = at("2026-11-27T10:00:00Z");
        let page = PageView::new(
            now,
            empty_status(),
            vec![],
            vec![run(12, "running", 1, 3), run(9, "finished", 0, 0)],
            vec![],
            None,
        );
        let html = render(&page).unwrap();
        assert!(
            html.contains(r#"<progress id="run-12-progress" value="1" max="3">"#),
            "{html}"
        );
        assert!(html.contains("pending 2 · sent 1 · 2 left out"), "{html}");
        // Nothing to send: a full bar.
        assert!(
            html.contains(r#"<progress id="run-9-progress" value="1" max="1">"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<meta http-equiv="refresh" content="10">"#),
            "{html}"
        );
    }

    #[test]
    fn a_rejection_newer_than_the_revision_in_force_lists_its_errors() {
        let now = at("2026-11-27T10:00:00Z");
        let mut status = empty_status();
        status.revision_in_force = Some(status::RevisionView {
            id: 3,
            hash: "0123456789abcdef0123".into(),
            applied_at: "2026-11-27T09:00:00Z".into(),
        });
        status.last_reload = Some(status::ReloadView {
            revision_id: 4,
            status: "rejected".into(),
            at: "2026-11-27T09:30:00Z".into(),
            errors: vec![status::ReloadError {
                file: Some("campaigns/promo.yaml".into()),
                line: Some(7),
                column: Some(13),
                code: "unknown-reference".into(),
                message: "no template `promo-v2`".into(),
                help: None,
            }],
        });
        let rejected = |last: Option<LastReload>| {
            let page = PageView::new(now, status.clone(), vec![], vec![], vec![], last);
            // The escaping turns `/` into `&#x2f;`; a browser shows it plain.
            render(&page).unwrap().replace("&#x2f;", "/")
        };
        let html = rejected(None);
        assert!(html.contains("campaigns/promo.yaml:7:13"), "{html}");
        assert!(html.contains("revision 3 stays in force"), "{html}");
        assert!(html.contains("0123456789ab"), "{html}");
        // A later reload found the files back to the revision in force.
        let back = LastReload {
            outcome: crate::metrics::ReloadOutcome::Unchanged,
            at: at("2026-11-27T09:45:00Z"),
            took: std::time::Duration::from_millis(4),
        };
        let html = rejected(Some(back));
        assert!(
            html.contains("the directory is back to the revision in force"),
            "{html}"
        );
        assert!(html.contains("took 4 ms"), "{html}");
    }

    #[test]
    fn masking_keeps_only_enough_to_recognise() {
        assert_eq!(mask_address("lucia.quispe@example.com"), "l***@example.com");
        assert_eq!(mask_address("+51987654321"), "+51••••••321");
        assert_eq!(mask_address("1234"), "••••");
        assert_eq!(
            relative(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:05:00Z")),
            "in 5 min"
        );
        assert_eq!(
            relative(at("2026-01-01T03:00:00Z"), at("2026-01-01T00:00:00Z")),
            "3 h ago"
        );
    }
}
