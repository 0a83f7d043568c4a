//! `herald runs list|show|watch|pause|resume|cancel`, `herald trigger` and `herald send-test`:
//! the terminal around a running daemon's API (`/v1/runs`, `/v1/campaigns/{name}/...`),
//! reached with [`ApiClient`] (`--url`, the token from `HERALD_TOKEN`).
//!
//! Exit codes: 0 done; 1 for `runs watch` (and `--watch`) when the run ended failed,
//! cancelled or skipped; 2 when the API refused (the server's message is printed as
//! `error: ...`) or could not be reached.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comfy_table::{Table, presets};

use super::Outcome;
use super::api_client::{ApiArgs, ApiCallError, ApiClient};
use crate::http::control::{StartedRun, TestSendRequest};
use crate::http::status::RunView;

/// How `list` and `show` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// The API's JSON, for scripts.
    Json,
}

#[derive(clap::Subcommand, Debug)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only this campaign's runs.
        #[arg(long)]
        campaign: Option<String>,
        /// Only runs in this state (scheduled, running, paused, finished, cancelled,
        /// failed, skipped).
        #[arg(long)]
        status: Option<String>,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A run's status, progress, counts by delivery status and estimated finish.
    Show {
        id: i64,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Follow a run with a progress bar until it ends (exit 0 if it finished, 1 if it
    /// failed or was cancelled).
    Watch {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop sending a run's messages until it is resumed.
    Pause {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Continue a paused run.
    Resume {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Cancel a run: what was not sent yet is never sent.
    Cancel {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `herald trigger CAMPAIGN`.
#[derive(clap::Args, Debug)]
pub struct TriggerArgs {
    /// The campaign to start now.
    pub campaign: String,
    /// Follow the run until it ends, as `runs watch` does.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `herald send-test CAMPAIGN --contact ID`.
#[derive(clap::Args, Debug)]
pub struct SendTestArgs {
    /// The campaign whose message is sent.
    pub campaign: String,
    /// The contact who receives it (their external id).
    #[arg(long, value_name = "ID")]
    pub contact: String,
    /// Follow the test run until it ends, as `runs watch` does.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// How often `watch` asks for the run.
const POLL: Duration = Duration::from_millis(500);
/// How long `watch` keeps trying while the daemon cannot be reached (e.g. it restarts).
const UNREACHABLE_PATIENCE: Duration = Duration::from_secs(30);

pub async fn run(command: RunsCommand) -> anyhow::Result<Outcome> {
    match command {
        RunsCommand::List {
            campaign,
            status,
            limit,
            output,
            api,
        } => {
            let client = ApiClient::new(&api)?;
            let mut query = vec![format!("limit={limit}")];
            if let Some(c) = &campaign {
                query.push(format!("campaign={}", url_encode(c)));
            }
            if let Some(s) = &status {
                query.push(format!("status={}", url_encode(s)));
            }
            let runs: Vec<RunView> = client.get(&format!("/v1/runs?{}", query.join("&"))).await?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
                OutputFormat::Text if runs.is_empty() => println!("no runs"),
                OutputFormat::Text => println!("{}", runs_table(&runs)),
            }
            Ok(Outcome::Ok)
        }
        RunsCommand::Show { id, output, api } => {
            let client = ApiClient::new(&api)?;
            let run: RunView = client.get(&format!("/v1/runs/{id}")).await?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&run)?),
                OutputFormat::Text => print!("{}", run_details(&run, jiff::Timestamp::now())),
            }
            Ok(Outcome::Ok)
        }
        RunsCommand::Watch { id, api } => watch(&ApiClient::new(&api)?, id).await,
        RunsCommand::Pause { id, api } => control(&api, id, "pause", "paused").await,
        RunsCommand::Resume { id, api } => control(&api, id, "resume", "resumed").await,
        RunsCommand::Cancel { id, api } => control(&api, id, "cancel", "cancelled").await,
    }
}

/// `herald trigger CAMPAIGN [--watch]`.
pub async fn trigger(args: TriggerArgs) -> anyhow::Result<Outcome> {
    let client = ApiClient::new(&args.api)?;
    let started: StartedRun = client
        .post(
            &format!("/v1/campaigns/{}/trigger", path_segment(&args.campaign)),
            None::<&()>,
        )
        .await?;
    println!("started run {} of {}", started.run_id, args.campaign);
    follow(&client, started.run_id, args.watch, "watch").await
}

/// `herald send-test CAMPAIGN --contact ID [--watch]`.
pub async fn send_test(args: SendTestArgs) -> anyhow::Result<Outcome> {
    let client = ApiClient::new(&args.api)?;
    let started: StartedRun = client
        .post(
            &format!("/v1/campaigns/{}/test", path_segment(&args.campaign)),
            Some(&TestSendRequest {
                contact_id: args.contact.clone(),
            }),
        )
        .await?;
    println!(
        "test run {} of {} to contact {}",
        started.run_id, args.campaign, args.contact
    );
    follow(&client, started.run_id, args.watch, "show").await
}

/// Watches a run just started (`--watch`), or says which `herald runs` command follows it.
async fn follow(
    client: &ApiClient,
    id: i64,
    watch_it: bool,
    command: &str,
) -> anyhow::Result<Outcome> {
    if watch_it {
        return watch(client, id).await;
    }
    println!("follow it with: herald runs {command} {id}");
    Ok(Outcome::Ok)
}

async fn control(api: &ApiArgs, id: i64, action: &str, done: &str) -> anyhow::Result<Outcome> {
    let client = ApiClient::new(api)?;
    let run: RunView = client
        .post(&format!("/v1/runs/{id}/{action}"), None::<&()>)
        .await?;
    println!("run {id} {done}: {}", summary(&run));
    Ok(Outcome::Ok)
}

/// Polls the run until it ends, drawing a progress bar on a terminal (a line per change of
/// state otherwise). Finished: exit 0; failed, cancelled or skipped: exit 1.
async fn watch(client: &ApiClient, id: i64) -> anyhow::Result<Outcome> {
    let path = format!("/v1/runs/{id}");
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} {percent}% {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("run {id}"));
        Some(bar)
    } else {
        None
    };
    let mut last_status = String::new();
    let mut unreachable_since: Option<Instant> = None;
    let run = loop {
        let run: RunView = match client.get(&path).await {
            Ok(run) => {
                unreachable_since = None;
                run
            }
            Err(ApiCallError::Unreachable { .. })
                if unreachable_since.is_none_or(|t| t.elapsed() < UNREACHABLE_PATIENCE) =>
            {
                unreachable_since.get_or_insert_with(Instant::now);
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(e) => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                return Err(e).with_context(|| format!("while watching run {id}"));
            }
        };
        match &bar {
            Some(bar) => {
                bar.set_length(run.total);
                bar.set_position(run.done);
                bar.set_message(progress_message(&run));
            }
            None if run.status != last_status => {
                eprintln!("run {id} {}: {}", run.status, summary(&run));
            }
            None => {}
        }
        last_status.clone_from(&run.status);
        if !matches!(run.status.as_str(), "scheduled" | "running" | "paused") {
            break run;
        }
        tokio::time::sleep(POLL).await;
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    println!("run {id} {}: {}", run.status, summary(&run));
    Ok(if run.status == "finished" {
        Outcome::Ok
    } else {
        if let Some(error) = &run.error {
            eprintln!("run {id}: {error}");
        }
        Outcome::Invalid
    })
}

/// The bar's message: state and estimated finish.
fn progress_message(run: &RunView) -> String {
    let mut message = run.status.clone();
    if let Some(by) = &run.paused_by {
        message.push_str(&format!(" by {by}"));
    }
    if let Some(eta) = &run.estimated_finish {
        message.push_str(&format!(", done ~{}", short_time(eta)));
    }
    message
}

/// `450/1000 done (45.0%): 440 sent, 10 failed`: the counts that are not zero.
fn summary(run: &RunView) -> String {
    let counts = nonzero_counts(run);
    format!(
        "{}/{} done ({:.1}%){}",
        run.done,
        run.total,
        run.progress_percent,
        if counts.is_empty() {
            String::new()
        } else {
            format!(": {counts}")
        }
    )
}

/// `440 sent, 10 failed`, excluded rows apart (they are not deliveries).
fn nonzero_counts(run: &RunView) -> String {
    run.counts
        .iter()
        .filter(|(status, n)| **n > 0 && status.as_str() != "excluded")
        .map(|(status, n)| format!("{n} {status}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `2026-11-27 09:00:05Z` from RFC 3339 (drops fractions; keeps the instant UTC).
fn short_time(rfc3339: &str) -> String {
    crate::http::page::reformat_time(rfc3339, "%Y-%m-%d %H:%M:%SZ")
}

fn opt_time(t: &Option<String>) -> String {
    t.as_deref().map_or_else(|| "-".to_string(), short_time)
}

fn runs_table(runs: &[RunView]) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(vec![
        "ID",
        "CAMPAIGN",
        "TRIGGER",
        "STATUS",
        "PROGRESS",
        "DONE",
        "CREATED",
        "FINISHED/ETA",
    ]);
    for run in runs {
        let end = match (&run.finished_at, &run.estimated_finish) {
            (Some(at), _) => short_time(at),
            (None, Some(eta)) => format!("~{}", short_time(eta)),
            (None, None) => "-".to_string(),
        };
        table.add_row(vec![
            run.id.to_string(),
            run.campaign.clone(),
            run.trigger.clone(),
            run.status.clone(),
            format!("{:.1}%", run.progress_percent),
            format!("{}/{}", run.done, run.total),
            short_time(&run.created_at),
            end,
        ]);
    }
    table.trim_fmt()
}

/// `runs show`: every field people look at, one per line.
fn run_details(run: &RunView, now: jiff::Timestamp) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<11} {value}\n"));
    line(
        "run",
        format!(
            "{} of {} ({}{})",
            run.id,
            run.campaign,
            run.trigger,
            if run.test { ", a test send" } else { "" }
        ),
    );
    line(
        "status",
        match &run.paused_by {
            Some(by) => format!("{} (by {by})", run.status),
            None => run.status.clone(),
        },
    );
    line(
        "progress",
        format!(
            "{:.1}% ({} of {} deliveries done)",
            run.progress_percent, run.done, run.total
        ),
    );
    if let Some(eta) = &run.estimated_finish {
        let left = eta
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.duration_since(now))
            .filter(|d| d.is_positive())
            .map(|d| {
                format!(
                    " (in {})",
                    crate::schedule::human(d.unsigned_abs().max(Duration::from_secs(1)))
                )
            })
            .unwrap_or_default();
        line("eta", format!("{}{left}", short_time(eta)));
    }
    line("created", short_time(&run.created_at));
    line("started", opt_time(&run.started_at));
    line("finished", opt_time(&run.finished_at));
    if let Some(expires) = &run.expires_at {
        line("expires", short_time(expires));
    }
    let counts = nonzero_counts(run);
    line(
        "deliveries",
        if counts.is_empty() {
            "none yet".to_string()
        } else {
            counts
        },
    );
    if !run.excluded.is_empty() {
        let excluded = run
            .excluded
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect::<Vec<_>>()
            .join(", ");
        line("excluded", excluded);
    }
    if let Some(error) = &run.error {
        line("error", error.clone());
    }
    out
}

/// Percent-encodes a query value (everything but unreserved characters).
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A campaign name as a path segment (names are `[a-z0-9-]`; anything else is encoded so
/// that it cannot change the route).
fn path_segment(text: &str) -> String {
    url_encode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str, done: u64, total: u64) -> RunView {
        RunView {
            id: 7,
            campaign: "weekly".into(),
            revision: 1,
            trigger: "manual".into(),
            test: false,
            status: status.into(),
            paused_by: None,
            progress_percent: if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            },
            total,
            done,
            counts: [
                ("sent".to_string(), done),
                ("pending".to_string(), total - done),
            ]
            .into_iter()
            .collect(),
            excluded: Default::default(),
            occurrence_at: None,
            created_at: "2026-11-27T09:00:00.123Z".into(),
            started_at: Some("2026-11-27T09:00:00Z".into()),
            finished_at: None,
            expires_at: None,
            estimated_finish: Some("2026-11-27T09:10:00Z".into()),
            error: None,
        }
    }

    #[test]
    fn the_summary_shows_progress_and_the_counts_that_are_not_zero() {
        let s = summary(&run("running", 3, 4));
        assert_eq!(s, "3/4 done (75.0%): 1 pending, 3 sent");
        assert_eq!(summary(&run("finished", 4, 4)), "4/4 done (100.0%): 4 sent");
    }

    #[test]
    fn details_show_the_eta_in_time_left() {
        let now: jiff::Timestamp = "2026-11-27T09:05:00Z".parse().unwrap();
        let text = run_details(&run("running", 1, 2), now);
        assert!(
            text.contains("eta         2026-11-27 09:10:00Z (in 5m)"),
            "{text}"
        );
        assert!(text.contains("created     2026-11-27 09:00:00Z"), "{text}");
    }

    #[test]
    fn query_values_and_path_segments_are_encoded() {
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(path_segment("black-friday"), "black-friday");
    }
}
