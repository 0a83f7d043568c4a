//! `herald runs`, `herald trigger` and `herald send-test` against a running daemon: the real
//! binary on both sides, the token from HERALD_TOKEN, the server from --url.

#[path = "support/server.rs"]
mod server;

use std::time::{Duration, Instant};

use assert_cmd::Command;
use server::{Herald, Scratch};

/// A site with an SMS outbox channel, a fast campaign `promo` and a `slow` one (2 a
/// second), both on a cron that does not fire during the test; 10 contacts opted in.
fn start() -> (Scratch, Herald) {
    let scratch = Scratch::new();
    let campaign = |name: &str, extra: &str| {
        format!(
            "---\napiVersion: herald/v1\nkind: Campaign\nmetadata: {{name: {name}}}\n\
             spec:\n  audience: {{segment: all-contacts}}\n  \
             channels: {{strategy: specific, use: [sms-out]}}\n  template: hello\n  \
             schedule: {{cron: \"0 9 1 1 *\", timezone: UTC}}\n{extra}"
        )
    };
    let site = format!(
        "apiVersion: herald/v1\nkind: Channel\nmetadata: {{name: sms-out}}\n\
         spec:\n  type: outbox\n  medium: sms\n  outbox: {{path: outbox/sms.jsonl}}\n\
         ---\napiVersion: herald/v1\nkind: Template\nmetadata: {{name: hello}}\n\
         spec:\n  sms: {{text: \"Hi {{{{ contact.name }}}}\"}}\n{}{}",
        campaign("promo", ""),
        campaign("slow", "  delivery: {rate: {per_second: 2}}\n")
    );
    scratch.write_site("site.yaml", &site);
    let mut csv = String::from("id,name,phone,opted_in\n");
    for i in 1..=10 {
        csv.push_str(&format!("c{i:02},Person {i},+5198765{i:04},sms\n"));
    }
    scratch.import_contacts(&csv);
    let herald = scratch.start();
    (scratch, herald)
}

/// `herald ARGS… --url BASE` with `token` in HERALD_TOKEN.
fn herald(base: &str, token: &str, args: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("herald")
        .unwrap()
        .args(args)
        .args(["--url", base])
        .env("HERALD_TOKEN", token)
        .env_remove("HERALD_URL")
        .timeout(Duration::from_secs(60))
        .assert()
}

fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

fn stderr(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

/// The run id in `started run 7 of promo` / `test run 8 of promo to contact c01`.
fn run_id(out: &str) -> i64 {
    out.split_whitespace()
        .skip_while(|w| *w != "run")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {out:?}"))
}

/// `runs show ID --output json`, parsed.
fn show(base: &str, id: i64) -> serde_json::Value {
    let assert = herald(
        base,
        server::VIEWER,
        &["runs", "show", &id.to_string(), "--output", "json"],
    )
    .success();
    serde_json::from_str(&stdout(&assert)).unwrap()
}

#[test]
fn trigger_then_watch_follows_the_run_to_the_end_and_list_and_show_report_it() {
    let (_scratch, server) = start();
    let base = server.base.as_str();
    let assert = herald(base, server::OPERATOR, &["trigger", "promo"]).success();
    let id = run_id(&stdout(&assert));
    let assert = herald(base, server::VIEWER, &["runs", "watch", &id.to_string()]).success();
    let out = stdout(&assert);
    assert!(
        out.contains(&format!("run {id} finished: 10/10 done (100.0%): 10 sent")),
        "{out}"
    );

    let assert = herald(base, server::VIEWER, &["runs", "list"]).success();
    let table = stdout(&assert);
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id.to_string().as_str()))
        .unwrap_or_else(|| panic!("run {id} not listed:\n{table}"));
    for cell in ["promo", "manual", "finished", "100.0%", "10/10"] {
        assert!(row.contains(cell), "{cell} missing from {row:?}");
    }
    let assert = herald(
        base,
        server::VIEWER,
        &["runs", "list", "--campaign", "slow"],
    )
    .success();
    assert_eq!(stdout(&assert).trim(), "no runs");
    let assert = herald(
        base,
        server::VIEWER,
        &["runs", "list", "--output", "json", "--status", "finished"],
    )
    .success();
    let runs: serde_json::Value = serde_json::from_str(&stdout(&assert)).unwrap();
    assert_eq!(runs[0]["id"], id, "{runs}");

    let assert = herald(base, server::VIEWER, &["runs", "show", &id.to_string()]).success();
    let text = stdout(&assert);
    assert!(
        text.contains(&format!("run         {id} of promo (manual)")),
        "{text}"
    );
    assert!(text.contains("status      finished"), "{text}");
    assert!(
        text.contains("progress    100.0% (10 of 10 deliveries done)"),
        "{text}"
    );
    assert!(text.contains("deliveries  10 sent"), "{text}");

    // A test send: one contact, marked as a test.
    let assert = herald(
        base,
        server::OPERATOR,
        &["send-test", "promo", "--contact", "c02", "--watch"],
    )
    .success();
    let out = stdout(&assert);
    let test = run_id(&out);
    assert!(
        out.contains(&format!("run {test} finished: 1/1 done")),
        "{out}"
    );
    assert_eq!(show(base, test)["test"], true);
    let assert = herald(
        base,
        server::OPERATOR,
        &["send-test", "promo", "--contact", "nobody-9"],
    )
    .code(2);
    assert!(
        stderr(&assert).contains("error: no contact has the id `nobody-9`"),
        "{}",
        stderr(&assert)
    );
}

#[test]
fn pause_resume_and_cancel_change_the_run_and_a_wrong_transition_is_an_error() {
    let (_scratch, server) = start();
    let base = server.base.as_str();
    let assert = herald(base, server::OPERATOR, &["trigger", "slow"]).success();
    let id = run_id(&stdout(&assert));
    let ids = id.to_string();
    let assert = herald(base, server::OPERATOR, &["runs", "pause", &ids]).success();
    assert!(
        stdout(&assert).starts_with(&format!("run {id} paused: ")),
        "{}",
        stdout(&assert)
    );
    assert_eq!(show(base, id)["status"], "paused");
    let assert = herald(base, server::OPERATOR, &["runs", "resume", &ids]).success();
    assert!(stdout(&assert).starts_with(&format!("run {id} resumed: ")));
    assert_eq!(show(base, id)["status"], "running");
    let assert = herald(base, server::VIEWER, &["runs", "cancel", &ids]).code(2);
    assert!(
        stderr(&assert).contains("error: this needs the operator role"),
        "{}",
        stderr(&assert)
    );
    let assert = herald(base, server::OPERATOR, &["runs", "cancel", &ids]).success();
    assert!(stdout(&assert).starts_with(&format!("run {id} cancelled: ")));
    let assert = herald(base, server::OPERATOR, &["runs", "cancel", &ids]).code(2);
    assert_eq!(
        stderr(&assert).trim(),
        format!("error: run {id} is cancelled, so it cannot be cancelled")
    );
    // Watching a run that ended cancelled exits non-zero.
    let assert = herald(base, server::VIEWER, &["runs", "watch", &ids]).code(1);
    assert!(
        stdout(&assert).contains(&format!("run {id} cancelled")),
        "{}",
        stdout(&assert)
    );
    let assert = herald(base, server::VIEWER, &["runs", "show", "424242"]).code(2);
    assert!(
        stderr(&assert).contains("error: no run 424242"),
        "{}",
        stderr(&assert)
    );
}

#[test]
fn watch_draws_nothing_but_the_outcome_off_a_terminal_and_waits_through_a_pause() {
    let (_scratch, server) = start();
    let base = server.base.to_string();
    let assert = herald(&base, server::OPERATOR, &["trigger", "slow"]).success();
    let id = run_id(&stdout(&assert));
    herald(&base, server::OPERATOR, &["runs", "pause", &id.to_string()]).success();
    // The watcher keeps going while the run is paused, and ends when it is resumed and done.
    let watcher = {
        let base = base.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let assert = herald(&base, server::VIEWER, &["runs", "watch", &id.to_string()]);
            (assert, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !watcher.is_finished(),
        "watch returned while the run was paused"
    );
    herald(
        &base,
        server::OPERATOR,
        &["runs", "resume", &id.to_string()],
    )
    .success();
    let (assert, _) = watcher.join().unwrap();
    let assert = assert.success();
    let out = stdout(&assert);
    assert!(
        out.contains(&format!("run {id} finished: 10/10 done")),
        "{out}"
    );
    let err = stderr(&assert);
    assert!(
        err.contains(&format!("run {id} paused")),
        "state changes are logged: {err}"
    );
}

#[test]
fn a_wrong_token_or_an_unreachable_server_is_a_clear_error() {
    let (_scratch, server) = start();
    let assert = herald(&server.base, "not-a-token-5150", &["runs", "list"]).code(2);
    let err = stderr(&assert);
    assert!(
        err.starts_with("error: a valid bearer token is required"),
        "{err}"
    );
    assert!(err.contains("HERALD_TOKEN"), "{err}");
    assert!(
        !err.contains("not-a-token-5150"),
        "the token is never printed: {err}"
    );
    let assert = Command::cargo_bin("herald")
        .unwrap()
        .args(["runs", "list", "--url", &server.base])
        .env_remove("HERALD_TOKEN")
        .assert()
        .code(2);
    assert!(
        stderr(&assert).contains("HERALD_TOKEN"),
        "{}",
        stderr(&assert)
    );
    // Port 1 on localhost: nothing listens there.
    let assert = herald("http://127.0.0.1:1", server::VIEWER, &["runs", "show", "1"]).code(2);
    let err = stderr(&assert);
    assert!(
        err.starts_with("error: cannot reach herald at http://127.0.0.1:1"),
        "{err}"
    );
    let assert = herald("127.0.0.1:8080", server::VIEWER, &["runs", "list"]).code(2);
    assert!(
        stderr(&assert).contains("--url 127.0.0.1:8080"),
        "{}",
        stderr(&assert)
    );
}
