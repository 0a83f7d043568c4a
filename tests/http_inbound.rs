//! `POST /v1/inbound/{channel}` through the real binary: a campaign is sent through a
//! webhook channel to a fake gateway (a real HTTP server on 127.0.0.1 that answers with a
//! message id per contact), then the gateway's replies and receipts come back signed with
//! the channel's secret. Checked in the store file itself (read only).

#[path = "support/server.rs"]
mod server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use herald::signing::{self, SigningKey};
use serde_json::{Value, json};
use server::{Herald, Options};
use sqlx::Row;

const GATEWAY_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZg==";
const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A request the fake gateway got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// The gateway behind the channel (`/send`: answers `{"id": "gw-<contact>"}`) and the
/// receiver of herald's own events (`/events`: answers 204).
struct Gateway {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Gateway {
    async fn start() -> Gateway {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let app = axum::Router::new().fallback({
            let got = got.clone();
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let got = got.clone();
                async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let id = format!("gw-{}", body["contact_id"].as_str().unwrap_or("x"));
                    got.lock().unwrap().push(Got {
                        path: uri.path().to_string(),
                        headers,
                        body,
                    });
                    if uri.path() == "/send" {
                        axum::Json(json!({ "id": id })).into_response()
                    } else {
                        axum::http::StatusCode::NO_CONTENT.into_response()
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Gateway { addr, got }
    }

    fn got(&self, path: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }
}

use axum::response::IntoResponse;

fn site(dir: &std::path::Path, gateway: &Gateway) {
    let url = |path: &str| format!("http://{}{path}", gateway.addr);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("site.yaml"),
        format!(
            r#"apiVersion: herald/v1
kind: Channel
metadata: {{name: sms-gateway}}
spec:
  type: webhook
  medium: sms
  webhook: {{url: "{send}", secret: "${{env:GATEWAY_SECRET}}"}}
---
apiVersion: herald/v1
kind: Channel
metadata: {{name: unsigned-gateway}}
spec:
  type: webhook
  medium: sms
  webhook: {{url: "{send}"}}
---
apiVersion: herald/v1
kind: Channel
metadata: {{name: sms-outbox}}
spec:
  type: outbox
  medium: sms
  outbox: {{path: outbox/sms.jsonl}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: hello}}
spec:
  sms: {{text: "Hola {{{{ contact.name }}}}"}}
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: promo}}
spec:
  audience: {{segment: all-contacts}}
  channels: {{strategy: specific, use: [sms-gateway]}}
  template: hello
  schedule: {{now: true}}
  consent: not_required
  on_reply:
    - {{match: '(?i)^\s*si\s*$', tag: interested}}
    - {{match: '(?i)^no$', untag: vip}}
    - {{match: '(?i)^more$', start: follow-up}}
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: follow-up}}
spec:
  enabled: false
  audience: {{segment: all-contacts}}
  channels: {{strategy: specific, use: [sms-gateway]}}
  template: hello
  schedule: {{now: true}}
  consent: not_required
---
apiVersion: herald/v1
kind: Webhook
metadata: {{name: crm}}
spec:
  url: "{events}"
  secret: "${{env:GATEWAY_SECRET}}"
  events: [message.replied, contact.opted_out, delivery.read, delivery.failed]
"#,
            send = url("/send"),
            events = url("/events"),
        ),
    )
    .unwrap();
}

/// A daemon with three contacts, each sent the `promo` campaign (the gateway's ids are
/// `gw-c-1`, `gw-c-2`, `gw-c-3`).
struct World {
    herald: Herald,
    gateway: Gateway,
    _scratch: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let scratch = tempfile::tempdir().unwrap();
        let gateway = Gateway::start().await;
        let dir = scratch.path().join("site");
        site(&dir, &gateway);
        let contacts = scratch.path().join("contacts.csv");
        std::fs::write(
            &contacts,
            "id,name,phone,tags\nc-1,Ana,+51911111111,vip\nc-2,Luis,+51922222222,vip\nc-3,Rosa,+51933333333,\n",
        )
        .unwrap();
        let db = scratch.path().join("herald.db");
        let mut options = Options::new(&dir, &db);
        options.args = vec!["--contacts".into(), contacts.display().to_string()];
        options.env = vec![("GATEWAY_SECRET".into(), GATEWAY_SECRET.into())];
        let herald = Herald::start_with(options);
        let world = World {
            herald,
            gateway,
            _scratch: scratch,
        };
        world
            .wait_for("the three promo messages to be recorded as sent", || async {
                world.scalar("SELECT count(*) FROM deliveries WHERE status = 'sent' AND provider_message_id LIKE 'gw-%'").await == 3
            })
            .await;
        world
    }

    async fn wait_for<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !check().await {
            if started.elapsed() > Duration::from_secs(30) {
                panic!("timed out waiting for {what}:\n{}", self.herald.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn db(&self) -> sqlx::SqliteConnection {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.herald.db)
            .read_only(true);
        <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
            .await
            .unwrap()
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let mut db = self.db().await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut db)
            .await
            .unwrap()
    }

    /// (opted_in_at, opted_out_at, opted_out_source, last_inbound_at) of a contact's SMS.
    async fn sms_state(
        &self,
        contact: &str,
    ) -> (Option<i64>, Option<i64>, Option<String>, Option<i64>) {
        let mut db = self.db().await;
        let row = sqlx::query(
            "SELECT m.opted_in_at, m.opted_out_at, m.opted_out_source, m.last_inbound_at \
             FROM contacts c JOIN contact_media m ON m.contact_pk = c.pk AND m.medium = 'sms' \
             WHERE c.id = ?",
        )
        .bind(contact)
        .fetch_optional(&mut db)
        .await
        .unwrap();
        match row {
            None => (None, None, None, None),
            Some(r) => (r.get(0), r.get(1), r.get::<Option<String>, _>(2), r.get(3)),
        }
    }

    async fn tags(&self, contact: &str) -> Vec<String> {
        let mut db = self.db().await;
        sqlx::query_scalar(
            "SELECT t.tag FROM contacts c JOIN contact_tags t ON t.contact_pk = c.pk \
             WHERE c.id = ? ORDER BY t.tag",
        )
        .bind(contact)
        .fetch_all(&mut db)
        .await
        .unwrap()
    }

    /// (status, reason, delivered_at, read_at) of the promo delivery to `contact`.
    async fn delivery(&self, contact: &str) -> (String, Option<String>, Option<i64>, Option<i64>) {
        let mut db = self.db().await;
        let r = sqlx::query(
            "SELECT d.status, d.reason, d.delivered_at, d.read_at FROM deliveries d \
             JOIN runs r ON r.id = d.run_id WHERE r.campaign = 'promo' AND d.contact_id = ?",
        )
        .bind(contact)
        .fetch_one(&mut db)
        .await
        .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    }

    /// POSTs `body` to the channel's inbound route with webhook-id `id`, signed with
    /// `secret` (or unsigned with `None`) at `timestamp` (default now).
    async fn post(
        &self,
        channel: &str,
        id: &str,
        body: &Value,
        secret: Option<&str>,
        timestamp: Option<i64>,
    ) -> (u16, Value) {
        let body = serde_json::to_vec(body).unwrap();
        let timestamp = timestamp.unwrap_or_else(|| jiff::Timestamp::now().as_second());
        let mut request = reqwest::Client::new()
            .post(self.herald.url(&format!("/v1/inbound/{channel}")))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(secret) = secret {
            let key = SigningKey::from_secret(secret).unwrap();
            request = request.header(
                "webhook-signature",
                signing::sign(&key, id, timestamp, &body),
            );
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        if status >= 500 {
            eprintln!("herald's log:\n{}", self.herald.log_text());
        }
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn reply(&self, id: &str, from: &str, text: &str) -> (u16, Value) {
        self.post(
            "sms-gateway",
            id,
            &json!({"from": from, "text": text}),
            Some(GATEWAY_SECRET),
            None,
        )
        .await
    }

    async fn receipt(&self, id: &str, message_id: &str, status: &str) -> (u16, Value) {
        self.post(
            "sms-gateway",
            id,
            &json!({"type": "receipt", "message_id": message_id, "status": status, "error": if status == "failed" { json!("handset unreachable") } else { Value::Null }}),
            Some(GATEWAY_SECRET),
            None,
        )
        .await
    }
}

#[tokio::test]
async fn a_reply_updates_last_inbound_runs_the_campaigns_rules_and_is_recorded_once() {
    let world = World::start().await;
    let before = jiff::Timestamp::now().as_millisecond() - 1;
    // Spaces, dashes and case do not matter; the rule's regex matches " SI ".
    let (status, answer) = world.reply("in-1", "+51 911-111-111", " SI ").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], false);
    assert_eq!(answer["kind"], "reply");
    assert_eq!(answer["contact_id"], "c-1");
    assert_eq!(answer["campaign"], "promo");
    assert!(answer["delivery_id"].as_i64().is_some(), "{answer}");
    assert_eq!(answer["rules"], json!([0]));
    assert_eq!(answer["tagged"], json!(["interested"]));
    assert_eq!(world.tags("c-1").await, ["interested", "vip"]);
    let (_, opted_out, _, last_inbound) = world.sms_state("c-1").await;
    assert!(
        last_inbound.is_some_and(|t| t >= before),
        "{last_inbound:?}"
    );
    assert_eq!(opted_out, None);

    // The provider retries the same request (here with another body, signed): nothing
    // changes and the first answer comes back.
    let (status, again) = world.reply("in-1", "+51911111111", "STOP").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["contact_id"], "c-1");
    assert_eq!(again["rules"], json!([0]));
    assert_eq!(
        world.sms_state("c-1").await.1,
        None,
        "the repeat opted nobody out"
    );

    // A rule's untag.
    let (_, answer) = world.reply("in-2", "+51911111111", "no").await;
    assert_eq!(answer["untagged"], json!(["vip"]), "{answer}");
    assert_eq!(world.tags("c-1").await, ["interested"]);

    // A rule's `start`: a real run of the (disabled) follow-up campaign for this contact.
    let (status, answer) = world.reply("in-3", "+51922222222", "MORE").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["follow_ups"][0]["campaign"], "follow-up", "{answer}");
    let run = answer["follow_ups"][0]["run_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("the follow-up started: {answer}"));
    assert_eq!(
        world
            .scalar(&format!(
                "SELECT count(*) FROM runs WHERE id = {run} AND trigger = 'reply' \
                 AND campaign = 'follow-up' AND total = 1"
            ))
            .await,
        1
    );
    world
        .wait_for("the follow-up message at the gateway", || async {
            world
                .gateway
                .got("/send")
                .iter()
                .any(|g| g.body["campaign"] == "follow-up" && g.body["contact_id"] == "c-2")
        })
        .await;
    assert_eq!(
        world
            .gateway
            .got("/send")
            .iter()
            .filter(|g| g.body["campaign"] == "follow-up")
            .count(),
        1,
        "only the contact who replied gets the follow-up"
    );

    // A sender herald does not know: recorded, nothing attributed.
    let (status, answer) = world.reply("in-4", "+10000000000", "hello").await;
    assert_eq!(status, 200);
    assert_eq!(answer["contacts"], json!([]));
    assert_eq!(answer["contact_id"], Value::Null);

    // Bad input is a 422 naming the field.
    let (status, answer) = world
        .post(
            "sms-gateway",
            "in-5",
            &json!({"from": "+51911111111", "text": 7}),
            Some(GATEWAY_SECRET),
            None,
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("text:"),
        "{answer}"
    );
    let (status, answer) = world
        .post(
            "sms-gateway",
            "in-6",
            &json!({"from": "+51911111111", "text": "x", "received_at": "yesterday"}),
            Some(GATEWAY_SECRET),
            None,
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("received_at:")
    );

    // The CRM hears of each reply once, signed; the repeat sent nothing.
    world
        .wait_for("message.replied events at the receiver", || async {
            world.gateway.got("/events").len() >= 4
        })
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let events = world.gateway.got("/events");
    let replied: Vec<&Got> = events
        .iter()
        .filter(|g| g.body["type"] == "message.replied")
        .collect();
    assert_eq!(
        replied.len(),
        4,
        "in-1, in-2, in-3, in-4 once each: {events:#?}"
    );
    let first = replied
        .iter()
        .find(|g| g.body["data"]["webhook_id"] == "in-1")
        .unwrap();
    assert_eq!(first.body["data"]["text"], " SI ");
    assert_eq!(first.body["data"]["contact_id"], "c-1");
    assert_eq!(first.body["data"]["campaign"], "promo");
    assert!(first.headers.get("webhook-signature").is_some());
    assert_eq!(world.herald.stop(), Some(0));
}

#[tokio::test]
async fn stop_opts_out_in_any_case_and_start_opts_back_in() {
    let world = World::start().await;
    let (status, answer) = world.reply("k-1", "+51933333333", "STOP").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["keyword"], "opt_out");
    assert_eq!(answer["opted_out"], json!(["c-3"]));
    assert_eq!(
        answer["rules"],
        json!([]),
        "a keyword runs no on_reply rule"
    );
    let (_, out_at, source, last_inbound) = world.sms_state("c-3").await;
    assert!(out_at.is_some());
    assert_eq!(source.as_deref(), Some("keyword"));
    assert!(
        last_inbound.is_some(),
        "a keyword is an inbound message too"
    );

    // Lower case, surrounded by spaces: still the keyword.
    let (_, answer) = world.reply("k-2", "+51922222222", "  stop \n").await;
    assert_eq!(answer["opted_out"], json!(["c-2"]), "{answer}");
    assert!(world.sms_state("c-2").await.1.is_some());
    // Other default keywords.
    let (_, answer) = world.reply("k-3", "+51911111111", "Baja").await;
    assert_eq!(answer["keyword"], "opt_out", "{answer}");
    // Not alone in the message: not a keyword.
    let (_, answer) = world.reply("k-4", "+51911111111", "please stop it").await;
    assert_eq!(answer["keyword"], Value::Null, "{answer}");

    let (status, answer) = world.reply("k-5", "+51933333333", "start").await;
    assert_eq!(status, 200);
    assert_eq!(answer["keyword"], "opt_in");
    assert_eq!(answer["opted_in"], json!(["c-3"]));
    let (in_at, out_at, _, _) = world.sms_state("c-3").await;
    assert!(
        in_at.unwrap() > out_at.unwrap(),
        "consent later than the opt-out: opted in again"
    );
    let (_, answer) = world.reply("k-6", "+51922222222", "UNSTOP").await;
    assert_eq!(answer["opted_in"], json!(["c-2"]), "{answer}");

    world
        .wait_for("contact.opted_out events", || async {
            world
                .gateway
                .got("/events")
                .iter()
                .filter(|g| g.body["type"] == "contact.opted_out")
                .count()
                >= 3
        })
        .await;
    let opted: Vec<Value> = world
        .gateway
        .got("/events")
        .into_iter()
        .filter(|g| g.body["type"] == "contact.opted_out")
        .map(|g| g.body["data"].clone())
        .collect();
    assert!(
        opted
            .iter()
            .any(|d| d["contact_id"] == "c-3" && d["source"] == "keyword" && d["medium"] == "sms"),
        "{opted:#?}"
    );
    assert_eq!(world.herald.stop(), Some(0));
}

#[tokio::test]
async fn receipts_move_a_delivery_forward_only() {
    let world = World::start().await;
    let (status, answer) = world.receipt("r-1", "gw-c-1", "read").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["kind"], "receipt");
    assert_eq!(answer["previous_status"], "sent");
    assert_eq!(answer["status"], "read");
    assert_eq!(answer["changed"], true);
    // Late and out of order: `delivered` after `read` never moves it back, nor does a
    // failure after it was read.
    let (status, answer) = world.receipt("r-2", "gw-c-1", "delivered").await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], "read");
    assert_eq!(answer["changed"], false);
    let (_, answer) = world.receipt("r-3", "gw-c-1", "failed").await;
    assert_eq!(answer["changed"], false);
    let (status, _, delivered_at, read_at) = world.delivery("c-1").await;
    assert_eq!(status, "read");
    assert!(
        delivered_at.is_some() && read_at.is_some(),
        "read implies delivered"
    );

    let (_, answer) = world.receipt("r-4", "gw-c-2", "delivered").await;
    assert_eq!(answer["changed"], true);
    let (_, answer) = world.receipt("r-5", "gw-c-2", "failed").await;
    assert_eq!(answer["status"], "failed", "{answer}");
    let (status, reason, _, _) = world.delivery("c-2").await;
    assert_eq!(status, "failed");
    assert_eq!(reason.as_deref(), Some("handset unreachable"));

    // A repeat of a receipt changes nothing and answers as the first time.
    let (_, answer) = world.receipt("r-4", "gw-c-2", "delivered").await;
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["status"], "delivered");
    assert_eq!(world.delivery("c-2").await.0, "failed");

    // An id herald does not know (yet): 404, nothing recorded, so a retry is handled afresh.
    let (status, answer) = world.receipt("r-6", "gw-nobody", "read").await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(
        world
            .scalar("SELECT count(*) FROM inbound_events WHERE webhook_id = 'r-6'")
            .await,
        0
    );
    let (status, answer) = world.receipt("r-7", "gw-c-3", "opened").await;
    assert_eq!(status, 422);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("status:")
    );

    world
        .wait_for("delivery events at the receiver", || async {
            world.gateway.got("/events").len() >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let types: Vec<String> = world
        .gateway
        .got("/events")
        .iter()
        .map(|g| g.body["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "delivery.read").count(),
        1,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| *t == "delivery.failed").count(),
        1,
        "{types:?}"
    );
    assert_eq!(world.herald.stop(), Some(0));
}

#[tokio::test]
async fn a_request_without_a_good_signature_is_refused_and_changes_nothing() {
    let world = World::start().await;
    let stop = json!({"from": "+51911111111", "text": "STOP"});
    let post = |id: &'static str, secret: Option<&'static str>, ts: Option<i64>| {
        let world = &world;
        let stop = stop.clone();
        async move { world.post("sms-gateway", id, &stop, secret, ts).await }
    };
    let (status, answer) = post("s-1", Some(OTHER_SECRET), None).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_signature");
    let (status, _) = post("s-2", None, None).await;
    assert_eq!(status, 401, "no signature header");
    let ten_minutes_ago = jiff::Timestamp::now().as_second() - 600;
    let (status, answer) = post("s-3", Some(GATEWAY_SECRET), Some(ten_minutes_ago)).await;
    assert_eq!(status, 401, "a replayed old request: {answer}");
    assert_eq!(world.sms_state("c-1").await.1, None, "nobody opted out");
    assert_eq!(world.scalar("SELECT count(*) FROM inbound_events").await, 0);
    // The same request, rightly signed, is accepted even after the refusals.
    let (status, _) = post("s-1", Some(GATEWAY_SECRET), None).await;
    assert_eq!(status, 200);
    assert!(world.sms_state("c-1").await.1.is_some());

    // A channel without a secret refuses inbound requests; unknown and non-webhook
    // channels have none.
    let (status, answer) = world
        .post("unsigned-gateway", "u-1", &stop, Some(GATEWAY_SECRET), None)
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook.secret"),
        "{answer}"
    );
    let (status, _) = world
        .post("no-such-channel", "u-2", &stop, Some(GATEWAY_SECRET), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = world
        .post("sms-outbox", "u-3", &stop, Some(GATEWAY_SECRET), None)
        .await;
    assert_eq!(status, 404);
    assert!(
        !world.herald.log_text().contains("MDEyMzQ1Njc4OWFiY2RlZg"),
        "the secret never reaches the log"
    );

    // The route is in the OpenAPI document, documented and without a bearer requirement.
    let doc: Value = reqwest::get(world.herald.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let route = &doc["paths"]["/v1/inbound/{channel}"]["post"];
    assert!(route.is_object(), "{doc}");
    assert!(route.get("security").is_none(), "{route}");
    assert!(route["requestBody"].is_object(), "{route}");
    assert!(route["responses"]["401"].is_object(), "{route}");
    assert_eq!(world.herald.stop(), Some(0));
}
