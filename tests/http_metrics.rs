//! `/metrics` through the real binary: after a campaign has sent by itself, the page passes
//! `promtool check metrics` (the Prometheus project's own checker) and reports runs by
//! status, reloads, deliveries pending and the webhook outbox; a bad edit shows as a
//! rejected reload.
//!
//! `promtool` comes from the Debian package `prometheus` (.ci/run installs it). Without it
//! the promtool step is skipped with a printed reason, unless `CI=true`, where it is
//! required.

#[path = "support/server.rs"]
mod server;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server::{Herald, Scratch};

const SITE: &str = r#"apiVersion: herald/v1
kind: Channel
metadata: {name: sms}
spec:
  type: outbox
  medium: sms
  outbox: {path: outbox/sms.jsonl}
---
apiVersion: herald/v1
kind: Template
metadata: {name: hello}
spec:
  sms: {text: "Hello {{ contact.name | default('there') }}"}
---
apiVersion: herald/v1
kind: Campaign
metadata: {name: welcome}
spec:
  audience: {segment: all-contacts}
  channels: {strategy: specific, use: [sms]}
  template: hello
  schedule: {now: true}
"#;

const CONTACTS: &str = "id,name,phone,opted_in\n\
c-1,Ana,+51987650001,sms\n\
c-2,Luis,+51987650002,sms\n\
c-3,Sin Permiso,+51987650003,\n";

/// The value of the sample `series` (name and labels exactly as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn scrape(client: &reqwest::Client, herald: &Herald) -> (String, String) {
    let response = client.get(herald.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200, "no token needed for /metrics");
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    (content_type, response.text().await.unwrap())
}

/// Scrapes until `done` holds for the text (or fails after `limit` with the last text).
async fn scrape_until(
    client: &reqwest::Client,
    herald: &Herald,
    limit: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    loop {
        let (_, text) = scrape(client, herald).await;
        if done(&text) {
            return text;
        }
        if started.elapsed() > limit {
            panic!(
                "{what} within {limit:?}; last /metrics:\n{text}\nserver log:\n{}",
                herald.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `promtool check metrics` on `text` (stdin): `Ok(())`, `Err(its complaints)`, or `None`
/// when promtool is not installed (and `CI` is not `true`).
fn promtool_check(text: &str) -> Option<Result<(), String>> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("promtool is required when CI=true (Debian package prometheus): {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED the promtool check: cannot run promtool ({e}); install the Debian package `prometheus`"
            );
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Some(Ok(()))
    } else {
        Some(Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

#[tokio::test]
async fn metrics_pass_promtool_and_report_runs_reloads_and_pending_deliveries() {
    let scratch = Scratch::new();
    scratch.write_site("site.yaml", SITE);
    scratch.import_contacts(CONTACTS);
    let herald = scratch.start();
    let client = reqwest::Client::new();

    // The `now` campaign fires and sends by itself; its run finishing shows in /metrics.
    scrape_until(
        &client,
        &herald,
        Duration::from_secs(30),
        "the welcome run did not finish",
        |t| sample(t, r#"herald_runs{status="finished"}"#) >= Some(1.0),
    )
    .await;
    let (content_type, text) = scrape(&client, &herald).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );

    match promtool_check(&text) {
        Some(Ok(())) => {}
        Some(Err(complaints)) => {
            panic!("promtool check metrics failed:\n{complaints}\n--- /metrics:\n{text}")
        }
        None => {}
    }

    // Runs by status: every status reported, zeros included.
    assert_eq!(
        sample(&text, r#"herald_runs{status="finished"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"herald_runs{status="running"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"herald_runs{status="failed"}"#),
        Some(0.0),
        "{text}"
    );
    // The engine's counters: two opted-in contacts sent (the third has no consent and is
    // excluded at the snapshot, so it is no send result), and one latency sample each.
    assert_eq!(
        sample(
            &text,
            r#"herald_messages_total{channel="sms",status="sent"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"herald_provider_request_duration_seconds_count{channel="sms"}"#
        ),
        Some(2.0),
        "{text}"
    );
    // Nothing left to send on the channel in force.
    assert_eq!(
        sample(&text, r#"herald_deliveries_pending{channel="sms"}"#),
        Some(0.0),
        "{text}"
    );
    // The first reconcile applied revision 1, and it succeeded.
    assert!(
        sample(&text, r#"herald_reloads_total{outcome="applied"}"#) >= Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "herald_last_reload_success"),
        Some(1.0),
        "{text}"
    );
    let last_reload = sample(&text, "herald_last_reload_timestamp_seconds").unwrap_or(0.0);
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(
        (now - 120.0..=now + 1.0).contains(&last_reload),
        "last reload at {last_reload}, now {now}:\n{text}"
    );
    assert!(
        sample(&text, r#"herald_reload_duration_seconds_bucket{le="+Inf"}"#) >= Some(1.0),
        "the reload time is a histogram:\n{text}"
    );
    assert_eq!(
        sample(&text, "herald_revision_in_force"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "herald_webhook_outbox_pending"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "herald_webhook_outbox_expired"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "herald_store_read_success"),
        Some(1.0),
        "{text}"
    );
    for family in [
        "herald_runs",
        "herald_deliveries_pending",
        "herald_reloads_total",
        "herald_reload_duration_seconds",
        "herald_last_reload_success",
        "herald_webhook_outbox_pending",
        "herald_webhook_outbox_expired",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {family} "))),
            "no HELP line for {family}:\n{text}"
        );
    }
    // No token, contact or address leaks into the metrics.
    for secret in [server::ADMIN, server::VIEWER, "+51987650001", "c-1"] {
        assert!(!text.contains(secret), "{secret} in /metrics:\n{text}");
    }

    // A bad edit: the reload is rejected, counted, and the revision in force stays.
    scratch.write_site(
        "broken.yaml",
        "apiVersion: herald/v1\nkind: Campaign\nmetadata: {name: broken}\nspec:\n  audience: {segment: all-contacts}\n  channels: {strategy: specific, use: [sms]}\n  template: no-such-template\n  schedule: {now: true}\n",
    );
    let text = scrape_until(
        &client,
        &herald,
        Duration::from_secs(30),
        "the bad edit was not reported as a failed reload",
        |t| sample(t, "herald_last_reload_success") == Some(0.0),
    )
    .await;
    assert!(
        sample(&text, r#"herald_reloads_total{outcome="rejected"}"#) >= Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "herald_revision_in_force"),
        Some(1.0),
        "{text}"
    );
    if let Some(Err(complaints)) = promtool_check(&text) {
        panic!("promtool check metrics failed after the rejection:\n{complaints}\n{text}");
    }
    assert_eq!(herald.stop(), Some(0));
}
