//! Status and run control through the real binary: the revision in force and a rejected
//! reload with its file and line, campaigns with their next fire and last run, runs that
//! progress to finished with their counts, pause / resume / cancel and their conflicts,
//! and test sends that stay out of the campaign's figures.

#[path = "support/server.rs"]
mod server;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::{Herald, Scratch};

/// Contacts `c01`..`c20` opted in for SMS, and `x01` who is not (always excluded).
const CONTACTS: usize = 20;

/// A site with one SMS outbox channel and four campaigns, none of which fires by itself
/// (their cron is 09:00 UTC on January 1st): `promo` (unlimited), `slow` (2 a second),
/// `dormant` (disabled) and `other`.
fn write_site(scratch: &Scratch) {
    scratch.write_site(
        "base.yaml",
        "apiVersion: herald/v1\n\
         kind: Channel\n\
         metadata: {name: sms-out}\n\
         spec:\n  type: outbox\n  medium: sms\n  outbox: {path: outbox/sms.jsonl}\n\
         ---\n\
         apiVersion: herald/v1\n\
         kind: Template\n\
         metadata: {name: hello}\n\
         spec:\n  sms: {text: \"Hi {{ contact.name }}\"}\n",
    );
    let campaign = |name: &str, extra: &str| {
        format!(
            "apiVersion: herald/v1\n\
             kind: Campaign\n\
             metadata: {{name: {name}}}\n\
             spec:\n  audience: {{segment: all-contacts}}\n  \
             channels: {{strategy: specific, use: [sms-out]}}\n  template: hello\n  \
             schedule: {{cron: \"0 9 1 1 *\", timezone: UTC}}\n{extra}"
        )
    };
    let files = [
        ("promo", campaign("promo", "")),
        (
            "slow",
            campaign("slow", "  delivery: {rate: {per_second: 2}}\n"),
        ),
        ("dormant", campaign("dormant", "  enabled: false\n")),
        ("other", campaign("other", "")),
    ];
    for (name, text) in files {
        scratch.write_site(&format!("campaigns/{name}.yaml"), &text);
    }
}

/// The contacts, as a CSV file.
fn contacts_csv() -> String {
    let mut csv = String::from("id,name,phone,opted_in\n");
    for i in 1..=CONTACTS {
        csv.push_str(&format!("c{i:02},Person {i},+5198765{i:04},sms\n"));
    }
    csv.push_str("x01,Nobody,+51900000001,\n");
    csv
}

struct Site {
    _scratch: Scratch,
    herald: Herald,
    http: reqwest::Client,
}

fn start() -> Site {
    let scratch = Scratch::new();
    write_site(&scratch);
    scratch.import_contacts(&contacts_csv());
    let herald = scratch.start();
    Site {
        _scratch: scratch,
        herald,
        http: reqwest::Client::new(),
    }
}

impl Site {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = self.herald.url(path);
        let mut request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, server::VIEWER, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call("POST", path, server::OPERATOR, body).await
    }

    /// Polls the run until `done` says so (or panics after `limit`, with the run and log).
    async fn wait_run(&self, id: i64, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (status, run) = self.get(&format!("/v1/runs/{id}")).await;
            assert_eq!(status, 200, "{run}");
            if done(&run) {
                return run;
            }
            if started.elapsed() > limit {
                panic!(
                    "run {id} did not get there in {limit:?}: {run}\n{}",
                    self.herald.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn trigger(&self, campaign: &str) -> i64 {
        let (status, body) = self
            .post(&format!("/v1/campaigns/{campaign}/trigger"), None)
            .await;
        assert_eq!(status, 201, "{body}");
        body["run_id"].as_i64().unwrap()
    }
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn status_keeps_the_revision_in_force_and_shows_a_rejected_reload_at_file_and_line() {
    let site = start();
    let (status, before) = site.get("/v1/status").await;
    assert_eq!(status, 200, "{before}");
    let in_force = before["revision_in_force"]["id"]
        .as_i64()
        .expect("a revision in force");
    assert_eq!(
        before["revision_in_force"]["hash"].as_str().unwrap().len(),
        64
    );
    assert_eq!(before["last_reload"]["status"], "applied");
    assert_eq!(before["last_reload"]["revision_id"], in_force);
    assert_eq!(before["last_reload"]["errors"], json!([]));
    assert_eq!(before["campaigns"], 4);
    assert_eq!(before["active_runs"], 0);
    assert_eq!(before["outbox"]["pending"], 0, "{before}");
    assert_eq!(before["outbox"]["oldest_pending_at"], Value::Null);
    assert_eq!(site.call("GET", "/v1/status", "", None).await.0, 401);

    // Line 8 names a template that does not exist.
    std::fs::write(
        site.herald.dir.join("campaigns/broken.yaml"),
        "apiVersion: herald/v1\n\
         kind: Campaign\n\
         metadata:\n  name: broken\n\
         spec:\n  audience: {segment: all-contacts}\n  \
         channels: {strategy: specific, use: [sms-out]}\n  \
         template: no-such-template\n  \
         schedule: {cron: \"0 9 1 1 *\"}\n",
    )
    .unwrap();
    let started = Instant::now();
    let after = loop {
        let (_, now) = site.get("/v1/status").await;
        if now["last_reload"]["status"] == "rejected" {
            break now;
        }
        if started.elapsed() > Duration::from_secs(20) {
            panic!(
                "the bad file was not rejected in 20 s: {now}\n{}",
                site.herald.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(after["revision_in_force"]["id"], in_force, "{after}");
    assert_ne!(after["last_reload"]["revision_id"], in_force);
    let errors = after["last_reload"]["errors"].as_array().unwrap();
    let error = errors
        .iter()
        .find(|e| {
            e["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("broken.yaml"))
        })
        .unwrap_or_else(|| panic!("no error names broken.yaml: {after}"));
    assert_eq!(error["line"], 8, "{error}");
    assert!(error["column"].as_u64().unwrap() > 0, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no-such-template"),
        "{error}"
    );
    // The broken campaign is not in force; the others still are.
    let (_, campaigns) = site.get("/v1/campaigns").await;
    let names: Vec<&str> = campaigns
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dormant", "other", "promo", "slow"]);
    assert_eq!(after["last_check"]["outcome"], "rejected", "{after}");

    // The bad file removed: the directory is the revision in force again. The last
    // reload still shows the rejection; the last check says the directory is back.
    std::fs::remove_file(site.herald.dir.join("campaigns/broken.yaml")).unwrap();
    let started = Instant::now();
    let back = loop {
        let (_, now) = site.get("/v1/status").await;
        if now["last_check"]["outcome"] == "unchanged" {
            break now;
        }
        if started.elapsed() > Duration::from_secs(20) {
            panic!("the revert was not seen in 20 s: {now}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(back["revision_in_force"]["id"], in_force, "{back}");
    assert_eq!(back["last_reload"]["status"], "rejected", "{back}");
}

#[tokio::test]
async fn campaigns_show_their_next_fire_and_their_last_run_but_never_a_test_send() {
    let site = start();
    let (status, promo) = site.get("/v1/campaigns/promo").await;
    assert_eq!(status, 200, "{promo}");
    assert_eq!(promo["enabled"], true);
    assert_eq!(promo["schedule"], "cron 0 9 1 1 * (UTC)");
    assert_eq!(promo["file"], "campaigns/promo.yaml");
    let next: jiff::Timestamp = promo["next_fire"].as_str().unwrap().parse().unwrap();
    assert!(next > jiff::Timestamp::now(), "{promo}");
    assert!(
        promo["next_fire"]
            .as_str()
            .unwrap()
            .ends_with("-01-01T09:00:00Z"),
        "{promo}"
    );
    assert_eq!(promo["last_run"], Value::Null);
    let (_, dormant) = site.get("/v1/campaigns/dormant").await;
    assert_eq!(dormant["enabled"], false);
    assert_eq!(
        dormant["next_fire"],
        Value::Null,
        "a disabled campaign never fires"
    );
    let (status, missing) = site.get("/v1/campaigns/nope").await;
    assert_eq!(status, 404);
    assert!(message(&missing).contains("nope"), "{missing}");

    // A test send is a run of its own, to one contact, marked as a test...
    let (status, started) = site
        .post(
            "/v1/campaigns/promo/test",
            Some(json!({"contact_id": "c03"})),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let test_run = started["run_id"].as_i64().unwrap();
    let run = site
        .wait_run(test_run, Duration::from_secs(20), |r| {
            r["status"] == "finished"
        })
        .await;
    assert_eq!(run["test"], true);
    assert_eq!(run["trigger"], "test");
    assert_eq!(run["total"], 1);
    assert_eq!(run["counts"]["sent"], 1, "{run}");
    let outbox = std::fs::read_to_string(site.herald.dir.join("outbox/sms.jsonl")).unwrap();
    let line: Value = serde_json::from_str(outbox.lines().next().unwrap()).unwrap();
    assert_eq!(
        (line["contact_id"].as_str(), line["test"].as_bool()),
        (Some("c03"), Some(true))
    );
    // ...that is not the campaign's last run, nor counted in its runs.
    let (_, promo) = site.get("/v1/campaigns/promo").await;
    assert_eq!(promo["last_run"], Value::Null, "{promo}");
    assert_eq!(promo["runs"], 0);
    let real = site.trigger("promo").await;
    site.wait_run(real, Duration::from_secs(20), |r| r["status"] == "finished")
        .await;
    site.post(
        "/v1/campaigns/promo/test",
        Some(json!({"contact_id": "c04"})),
    )
    .await;
    let (_, promo) = site.get("/v1/campaigns/promo").await;
    assert_eq!(promo["last_run"]["id"], real, "{promo}");
    assert_eq!(promo["last_run"]["status"], "finished");
    assert_eq!(promo["runs"], 1);
    let (_, tests) = site.get("/v1/runs?test=true").await;
    let ids: Vec<i64> = tests
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{tests}");
    assert!(ids.contains(&test_run) && !ids.contains(&real), "{tests}");

    // A disabled campaign can be tested; a contact that does not exist is named.
    let (status, body) = site
        .post(
            "/v1/campaigns/dormant/test",
            Some(json!({"contact_id": "c05"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = site
        .post(
            "/v1/campaigns/promo/test",
            Some(json!({"contact_id": "ghost-7"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(message(&body).contains("ghost-7"), "{body}");
    let (status, body) = site.post("/v1/campaigns/promo/test", Some(json!({}))).await;
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).contains("contact_id"), "{body}");
    let (status, body) = site
        .post("/v1/campaigns/promo/test", Some(json!({"contact_id": " "})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).starts_with("contact_id:"), "{body}");
}

#[tokio::test]
async fn a_triggered_run_progresses_to_finished_with_counts_matching_the_contacts() {
    let site = start();
    let (status, body) = site
        .call("POST", "/v1/campaigns/promo/trigger", server::VIEWER, None)
        .await;
    assert_eq!(status, 403, "a viewer cannot trigger: {body}");
    let id = site.trigger("promo").await;
    let run = site
        .wait_run(id, Duration::from_secs(30), |r| r["status"] == "finished")
        .await;
    assert_eq!(run["campaign"], "promo");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["test"], false);
    assert_eq!(run["total"], CONTACTS);
    assert_eq!(run["done"], CONTACTS);
    assert_eq!(run["progress_percent"], 100.0);
    assert_eq!(run["counts"]["sent"], CONTACTS, "{run}");
    assert_eq!(run["counts"]["excluded"], 1, "x01 has no SMS consent");
    assert_eq!(
        run["counts"].as_object().unwrap().len(),
        12,
        "every status, zeros included"
    );
    assert_eq!(run["counts"]["failed"], 0);
    assert_eq!(
        run["estimated_finish"],
        Value::Null,
        "a finished run needs no estimate"
    );
    let created: jiff::Timestamp = run["created_at"].as_str().unwrap().parse().unwrap();
    let finished: jiff::Timestamp = run["finished_at"].as_str().unwrap().parse().unwrap();
    assert!(finished >= created);
    assert!(
        run["excluded"]
            .as_object()
            .unwrap()
            .values()
            .any(|n| n == 1),
        "{run}"
    );

    let (_, listed) = site.get("/v1/runs?campaign=promo&status=finished").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], id);
    let (_, none) = site.get("/v1/runs?campaign=other").await;
    assert_eq!(none, json!([]));
    let (_, promo) = site.get("/v1/campaigns/promo").await;
    assert_eq!(promo["last_run"]["id"], id);
    assert_eq!(promo["last_run"]["trigger"], "manual");

    let (status, body) = site.post(&format!("/v1/runs/{id}/pause"), None).await;
    assert_eq!(status, 409, "a finished run cannot be paused: {body}");
    assert!(message(&body).contains("finished"), "{body}");
    let (status, body) = site.post("/v1/campaigns/dormant/trigger", None).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("disabled"), "{body}");
    let (status, body) = site.post("/v1/campaigns/nope/trigger", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(site.get("/v1/runs/999999").await.0, 404);
    assert_eq!(site.post("/v1/runs/999999/cancel", None).await.0, 404);
    let (status, body) = site.get("/v1/runs/abc").await;
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).starts_with("id:"), "{body}");
    let (status, body) = site.get("/v1/runs?status=bogus").await;
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).starts_with("status:"), "{body}");
    let (status, body) = site.get("/v1/runs?limit=0").await;
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).starts_with("limit:"), "{body}");
    let (status, body) = site.get("/v1/runs?campain=promo").await;
    assert_eq!(
        status, 422,
        "a misspelt filter must not list everything: {body}"
    );
    assert!(message(&body).starts_with("campain:"), "{body}");
}

#[tokio::test]
async fn an_operator_pauses_resumes_and_cancels_a_run_and_wrong_transitions_conflict() {
    let site = start();
    let id = site.trigger("slow").await;
    let (status, paused) = site.post(&format!("/v1/runs/{id}/pause"), None).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["paused_by"], "operator");
    assert_eq!(paused["estimated_finish"], Value::Null);
    let (_, status_view) = site.get("/v1/status").await;
    assert_eq!(status_view["active_runs"], 1);
    // A paused run sends nothing (what was in flight at the pause settles first: rows
    // claimed before it still wait for the campaign's rate, longer on a loaded machine).
    let settling = Instant::now();
    let first = loop {
        let (_, run) = site.get(&format!("/v1/runs/{id}")).await;
        if run["counts"]["sending"] == 0 {
            break run;
        }
        assert!(
            settling.elapsed() < Duration::from_secs(20),
            "the sends in flight at the pause never settled: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, second) = site.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(first["done"], second["done"], "{first}\n{second}");
    assert!(second["done"].as_u64().unwrap() < CONTACTS as u64);

    // A second trigger while the campaign has a run that may still send is refused.
    let (status, body) = site.post("/v1/campaigns/slow/trigger", None).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains(&format!("run {id}")), "{body}");

    let (status, resumed) = site.post(&format!("/v1/runs/{id}/resume"), None).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["status"], "running");
    assert_eq!(resumed["paused_by"], Value::Null);
    let (status, body) = site.post(&format!("/v1/runs/{id}/resume"), None).await;
    assert_eq!(status, 409, "a running run cannot be resumed: {body}");
    let (status, body) = site
        .call(
            "POST",
            &format!("/v1/runs/{id}/cancel"),
            server::VIEWER,
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // Sending again, with an estimate once something has gone out at this pace.
    let running = site
        .wait_run(id, Duration::from_secs(20), |r| {
            r["done"].as_u64().unwrap() > second["done"].as_u64().unwrap()
        })
        .await;
    assert_eq!(running["status"], "running", "{running}");
    let eta: jiff::Timestamp = running["estimated_finish"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(eta > jiff::Timestamp::now(), "{running}");

    let (status, cancelled) = site.post(&format!("/v1/runs/{id}/cancel"), None).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(
        cancelled["counts"]["cancelled"].as_u64().unwrap() > 0,
        "{cancelled}"
    );
    assert!(cancelled["finished_at"].is_string());
    for action in ["cancel", "pause", "resume"] {
        let (status, body) = site.post(&format!("/v1/runs/{id}/{action}"), None).await;
        assert_eq!(status, 409, "{action} after cancel: {body}");
        assert!(message(&body).contains("cancelled"), "{body}");
    }
    // The campaign can be triggered again now.
    let again = site.trigger("slow").await;
    assert!(again > id);
    let (_, slow) = site.get("/v1/campaigns/slow").await;
    assert_eq!(slow["last_run"]["id"], again);
    assert_eq!(slow["runs"], 2);
}
