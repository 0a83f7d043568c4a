//! Outbound webhooks through the real binary: a `now` campaign sends through an outbox
//! channel, and the Webhook subscribers (a real HTTP server on 127.0.0.1 in this test)
//! get its events signed per Standard Webhooks, retried on failure, never redirected,
//! stopped by a 410, and batched when asked. Signatures are checked by an implementation
//! that is not herald's: HMAC-SHA256 computed here from the `hmac` crate, and the
//! Standard Webhooks reference library from PyPI when python3 has it (`.ci/run` installs
//! `standardwebhooks`).

#[path = "support/fake.rs"]
mod fake;
#[path = "support/server.rs"]
mod server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use hmac::Mac;
use serde_json::{Value, json};
use server::{Herald, Scratch};

const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZg==";

/// A request the receiver got, and when.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    at: Instant,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// How the receiver answers the `n`th request (from 0) on a path.
type Script = Arc<dyn Fn(&str, usize) -> axum::response::Response + Send + Sync>;

struct Receiver {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn start(script: Script) -> Receiver {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let app = axum::Router::new().fallback({
            let got = got.clone();
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let (got, script) = (got.clone(), script.clone());
                async move {
                    let path = uri.path().to_string();
                    let n = {
                        let mut got = got.lock().unwrap();
                        let n = got.iter().filter(|g| g.path == path).count();
                        got.push(Got {
                            path: path.clone(),
                            headers,
                            body: body.to_vec(),
                            at: Instant::now(),
                        });
                        n
                    };
                    script(&path, n)
                }
            }
        });
        Receiver {
            addr: fake::serve(app).await,
            got,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn got(&self, path: &str) -> Vec<Got> {
        fake::matching(&self.got, |g| g.path == path)
    }
}

/// 2xx everywhere but the paths that say otherwise.
fn script() -> Script {
    Arc::new(|path: &str, n: usize| match (path, n) {
        ("/flaky", 0) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        ("/slow", 0) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "2")],
            "slow down",
        )
            .into_response(),
        ("/gone", _) => StatusCode::GONE.into_response(),
        ("/redirect", _) => (StatusCode::FOUND, [("location", "/ok")]).into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    })
}

const BASE: &str = r#"apiVersion: herald/v1
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
  sms: {text: "Hola {{ contact.name }}"}
---
apiVersion: herald/v1
kind: Campaign
metadata: {name: promo}
spec:
  audience: {segment: all-contacts}
  channels: {strategy: specific, use: [sms]}
  template: hello
  schedule: {now: true}
  consent: not_required
"#;

/// Another template: a change to the directory that leaves the Webhook spec as it is.
fn template(name: &str) -> String {
    format!(
        "apiVersion: herald/v1\nkind: Template\nmetadata: {{name: {name}}}\nspec:\n  sms: {{text: \"Hi\"}}\n"
    )
}

fn webhook(name: &str, url: &str, events: &[&str], extra: &str) -> String {
    format!(
        "apiVersion: herald/v1\nkind: Webhook\nmetadata: {{name: {name}}}\nspec:\n  url: \"{url}\"\n  secret: \"${{env:HOOK_SECRET}}\"\n  events: [{}]\n{extra}",
        events.join(", ")
    )
}

struct World {
    scratch: Scratch,
    /// contacts.csv.
    contacts: std::path::PathBuf,
    herald: Option<Herald>,
    scale: Option<&'static str>,
}

impl World {
    /// A site with the base documents and `webhooks`, and three contacts.
    fn new(webhooks: &[String], scale: Option<&'static str>) -> World {
        let scratch = Scratch::new();
        scratch.write_site("base.yaml", BASE);
        scratch.write_site("webhooks.yaml", &webhooks.join("---\n"));
        let contacts = scratch.write_contacts(
            "id,name,phone\nc-1,Ana,+51911111111\nc-2,Luis,+51922222222\nc-3,Rosa,+51933333333\n",
        );
        let mut world = World {
            scratch,
            contacts,
            herald: None,
            scale,
        };
        world.start();
        world
    }

    fn start(&mut self) {
        let mut options = self
            .scratch
            .options()
            .with_contacts(&self.contacts)
            .with_env(&[("HOOK_SECRET", SECRET)]);
        if let Some(scale) = self.scale {
            options = options.with_env(&[("HERALD_WEBHOOK_RETRY_SCALE", scale)]);
        }
        self.herald = Some(options.start());
    }

    fn restart(&mut self) {
        assert_eq!(self.herald.take().unwrap().stop(), Some(0));
        self.start();
    }

    fn herald(&self) -> &Herald {
        self.herald.as_ref().unwrap()
    }

    fn write(&self, file: &str, text: &str) {
        self.scratch.write_site(file, text);
    }

    async fn wait_for(&self, what: &str, mut check: impl FnMut() -> bool) {
        let check = || std::future::ready(check());
        self.herald().wait_until(what, WAIT, check).await;
    }

    async fn store(&self) -> herald::store::Store {
        herald::store::Store::open_read_only(&self.herald().db)
            .await
            .unwrap()
    }

    async fn wait_for_revisions(&self, n: usize) {
        let applied = || async {
            let sql = "SELECT count(*) FROM revisions WHERE status = 'applied'";
            self.herald().scalar(sql).await as usize >= n
        };
        let what = format!("revision {n} to be applied");
        self.herald().wait_until(&what, WAIT, applied).await;
    }
}

/// How long the tests wait for the server to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

/// The `webhook-signature` herald should have sent, computed without herald's code.
fn expected_signature(got: &Got) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(got.header("webhook-id").as_bytes());
    mac.update(b".");
    mac.update(got.header("webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

fn assert_signed(got: &Got) {
    assert_eq!(got.header("webhook-signature"), expected_signature(got));
    let timestamp: i64 = got.header("webhook-timestamp").parse().unwrap();
    assert!((timestamp - jiff::Timestamp::now().as_second()).abs() < 60);
    assert!(!got.header("webhook-id").contains('.'));
    assert_eq!(got.header("content-type"), "application/json");
}

/// Verifies every request with the Python reference library; `false` when it is absent.
fn python_verifies(requests: &[Got]) -> bool {
    let available = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !available {
        eprintln!(
            "note: the Standard Webhooks reference library is not installed \
             (pip install standardwebhooks==1.1.0): only the in-test HMAC checked the signatures"
        );
        return false;
    }
    let cases: Vec<Value> = requests
        .iter()
        .map(|g| {
            json!({
                "headers": {
                    "webhook-id": g.header("webhook-id"),
                    "webhook-timestamp": g.header("webhook-timestamp"),
                    "webhook-signature": g.header("webhook-signature"),
                },
                "body": String::from_utf8(g.body.clone()).unwrap(),
            })
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
hook = Webhook(sys.argv[1])
for case in json.load(sys.stdin):
    hook.verify(case["body"], case["headers"])
    try:
        hook.verify(case["body"] + " ", case["headers"])
    except Exception:
        pass
    else:
        sys.exit("a changed body verified")
print("ok")
"#;
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&cases).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference library refused herald's signatures: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    true
}

#[tokio::test]
async fn a_runs_events_arrive_signed_and_verify_with_the_reference_library() {
    let receiver = Receiver::start(script()).await;
    let world = World::new(
        &[webhook(
            "crm",
            &receiver.url("/ok"),
            &[
                "config.applied",
                "config.rejected",
                "run.started",
                "delivery.sent",
                "run.finished",
            ],
            "",
        )],
        None,
    );
    world
        .wait_for(
            "config.applied, run.started, 3 × delivery.sent, run.finished",
            || receiver.got("/ok").len() >= 6,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.got("/ok");
    let types: Vec<String> = got
        .iter()
        .map(|g| g.json()["type"].as_str().unwrap().to_string())
        .collect();
    let count = |t: &str| types.iter().filter(|x| *x == t).count();
    assert_eq!(count("config.applied"), 1, "{types:?}");
    assert_eq!(count("run.started"), 1, "{types:?}");
    assert_eq!(count("delivery.sent"), 3, "{types:?}");
    assert_eq!(count("run.finished"), 1, "{types:?}");
    assert_eq!(got.len(), 6, "each event once: {types:?}");
    let mut ids: Vec<&str> = got.iter().map(|g| g.header("webhook-id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every event has its own webhook-id");
    for g in &got {
        assert_signed(g);
        assert!(g.header("webhook-id").starts_with("msg_"));
        let body = g.json();
        assert!(
            body["timestamp"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        assert_eq!(
            body["data"]["run_id"].is_i64(),
            body["type"] != "config.applied"
        );
        let text = String::from_utf8_lossy(&g.body);
        assert!(
            !text.contains("MDEyMzQ1Njc4OWFiY2RlZg"),
            "no secret in {text}"
        );
    }
    let sent: Vec<Value> = got
        .iter()
        .map(|g| g.json())
        .filter(|b| b["type"] == "delivery.sent")
        .collect();
    let mut contacts: Vec<&str> = sent
        .iter()
        .map(|b| b["data"]["contact_id"].as_str().unwrap())
        .collect();
    contacts.sort();
    assert_eq!(contacts, ["c-1", "c-2", "c-3"]);
    for b in &sent {
        assert_eq!(b["data"]["campaign"], "promo");
        assert_eq!(b["data"]["channel"], "sms");
        assert_eq!(b["data"]["status"], "sent");
        assert!(b["data"]["delivery_id"].is_i64());
        assert!(b["data"]["sent_at"].is_string());
    }
    let finished = got
        .iter()
        .map(|g| g.json())
        .find(|b| b["type"] == "run.finished")
        .unwrap();
    assert_eq!(finished["data"]["status"], "finished");
    assert_eq!(finished["data"]["counts"]["sent"], 3, "{finished}");
    python_verifies(&got);
    let stats = world.store().await.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.delivered), (0, 6), "{stats:?}");

    // A rejected edit is reported with its errors; the revision in force stays.
    world.write(
        "broken.yaml",
        "apiVersion: herald/v1\nkind: Template\nmetadata: {name: Bad Name}\nspec: {}\n",
    );
    world
        .wait_for("config.rejected", || receiver.got("/ok").len() >= 7)
        .await;
    let rejected = receiver.got("/ok")[6].json();
    assert_eq!(rejected["type"], "config.rejected");
    let errors = rejected["data"]["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "{rejected}");
    assert!(
        rejected["data"]["errors"]
            .to_string()
            .contains("broken.yaml"),
        "{rejected}"
    );
}

#[tokio::test]
async fn a_failed_event_is_retried_until_acknowledged_and_retry_after_is_honoured() {
    let receiver = Receiver::start(script()).await;
    // The schedule's 5 s become 50 ms; Retry-After is never scaled.
    let world = World::new(
        &[
            webhook("flaky", &receiver.url("/flaky"), &["config.applied"], ""),
            webhook("slow", &receiver.url("/slow"), &["config.applied"], ""),
        ],
        Some("0.01"),
    );
    world
        .wait_for("two attempts at each receiver", || {
            receiver.got("/flaky").len() >= 2 && receiver.got("/slow").len() >= 2
        })
        .await;
    let flaky = receiver.got("/flaky");
    assert_eq!(
        flaky[0].header("webhook-id"),
        flaky[1].header("webhook-id"),
        "the same event again"
    );
    assert_eq!(flaky[0].body, flaky[1].body);
    assert!(flaky[1].at - flaky[0].at < Duration::from_secs(2));
    let slow = receiver.got("/slow");
    let waited = slow[1].at - slow[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 is honoured over the schedule's 50 ms: {waited:?}"
    );
    for g in flaky.iter().chain(&slow) {
        assert_signed(g);
    }
    let store = world.store().await;
    let started = Instant::now();
    loop {
        let stats = store.outbox_stats().await.unwrap();
        if stats.delivered == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = store.webhook_events("flaky").await.unwrap();
    assert_eq!(rows.len(), 1);
    let (row, status, last_status, _) = &rows[0];
    assert_eq!(
        (row.attempts, status.as_str(), *last_status),
        (2, "delivered", Some(204))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.got("/flaky").len(), 2, "no attempt after the 2xx");
}

#[tokio::test]
async fn the_first_retry_comes_five_seconds_after_a_failure() {
    let receiver = Receiver::start(script()).await;
    let world = World::new(
        &[webhook(
            "flaky",
            &receiver.url("/flaky"),
            &["config.applied"],
            "",
        )],
        None,
    );
    world
        .wait_for("the retry", || receiver.got("/flaky").len() >= 2)
        .await;
    let flaky = receiver.got("/flaky");
    let waited = flaky[1].at - flaky[0].at;
    assert!(
        waited >= Duration::from_millis(4900) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_410_disables_the_subscription_until_its_spec_changes_even_across_a_restart() {
    let receiver = Receiver::start(script()).await;
    let mut world = World::new(
        &[webhook(
            "crm",
            &receiver.url("/gone"),
            &["config.applied"],
            "",
        )],
        Some("0.01"),
    );
    world
        .wait_for("the first event", || receiver.got("/gone").len() == 1)
        .await;
    let store = world.store().await;
    let started = Instant::now();
    while store.outbox_stats().await.unwrap().disabled.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!(stats.disabled[0].webhook, "crm");
    assert!(stats.disabled[0].reason.contains("410"), "{stats:?}");

    // Another revision: no event for the disabled subscription.
    world.write("extra.yaml", &template("hello-2"));
    world.wait_for_revisions(2).await;
    world.restart();
    world.write("extra.yaml", &template("hello-3"));
    world.wait_for_revisions(3).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.got("/gone").len(),
        1,
        "disabled, also after a restart"
    );
    let rows = world.store().await.webhook_events("crm").await.unwrap();
    assert_eq!(rows.len(), 1, "nothing was queued for it: {rows:?}");
    assert_eq!(rows[0].1, "expired");
    assert_eq!(rows[0].2, Some(410));

    // A changed spec is a new subscription: enabled again.
    world.write(
        "webhooks.yaml",
        &webhook("crm", &receiver.url("/ok"), &["config.applied"], ""),
    );
    world.wait_for_revisions(4).await;
    world
        .wait_for("the event of the new spec", || {
            receiver.got("/ok").len() == 1
        })
        .await;
    let event = receiver.got("/ok")[0].json();
    assert_eq!(event["type"], "config.applied");
    assert_eq!(event["data"]["changed"], json!(["Webhook/crm"]), "{event}");
    assert!(
        world
            .store()
            .await
            .outbox_stats()
            .await
            .unwrap()
            .disabled
            .is_empty()
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let receiver = Receiver::start(script()).await;
    let world = World::new(
        &[webhook(
            "crm",
            &receiver.url("/redirect"),
            &["config.applied"],
            "",
        )],
        Some("0.01"),
    );
    world
        .wait_for("a retry after the redirect", || {
            receiver.got("/redirect").len() >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.got("/ok").is_empty(),
        "the Location was never visited"
    );
    let rows = world.store().await.webhook_events("crm").await.unwrap();
    let (_, _, last_status, last_error) = &rows[0];
    assert_eq!(*last_status, Some(302));
    assert!(
        last_error
            .as_deref()
            .unwrap()
            .contains("redirects are not followed"),
        "{last_error:?}"
    );
}

#[tokio::test]
async fn delivery_events_are_batched_up_to_max_events_or_max_wait() {
    let receiver = Receiver::start(script()).await;
    let world = World::new(
        &[webhook(
            "warehouse",
            &receiver.url("/ok"),
            &["delivery.sent", "run.started"],
            "  batching: {max_events: 2, max_wait: 1s}\n",
        )],
        None,
    );
    world
        .wait_for("run.started and two batches", || {
            receiver.got("/ok").len() >= 3
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.got("/ok");
    assert_eq!(got.len(), 3, "{got:#?}");
    let batches: Vec<&Got> = got.iter().filter(|g| g.json().is_array()).collect();
    assert_eq!(
        batches.len(),
        2,
        "run.started goes alone, delivery events in arrays"
    );
    let mut sizes: Vec<usize> = batches
        .iter()
        .map(|g| g.json().as_array().unwrap().len())
        .collect();
    sizes.sort();
    assert_eq!(sizes, [1, 2]);
    for g in &got {
        assert_signed(g);
    }
    for b in &batches {
        assert!(b.header("webhook-id").starts_with("msg_batch_"));
        for event in b.json().as_array().unwrap() {
            assert_eq!(event["type"], "delivery.sent");
        }
    }
    python_verifies(&got);
}
