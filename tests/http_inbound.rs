//! `POST /v1/inbound/{channel}` through the real binary: a campaign is sent through a
//! webhook channel to a fake gateway (a real HTTP server on 127.0.0.1 that answers with a
//! message id per contact), then the gateway's replies and receipts come back signed with
//! the channel's secret. Checked in the store file itself (read only).

#[path = "support/fake.rs"]
mod fake;
#[path = "support/server.rs"]
mod server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::IntoResponse;
use herald::signing::{self, SigningKey};
use serde_json::{Value, json};
use server::{Herald, Scratch};

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
        Gateway {
            addr: fake::serve(app).await,
            got,
        }
    }

    fn got(&self, path: &str) -> Vec<Got> {
        fake::matching(&self.got, |g| g.path == path)
    }
}

fn site(gateway: &Gateway) -> String {
    let url = |path: &str| format!("http://{}{path}", gateway.addr);
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
    )
}

/// How long the tests wait for the server to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

/// A daemon with three contacts, each sent the `promo` campaign (the gateway's ids are
/// `gw-c-1`, `gw-c-2`, `gw-c-3`).
struct World {
    herald: Herald,
    gateway: Gateway,
    _scratch: Scratch,
}

impl World {
    async fn start() -> World {
        let scratch = Scratch::new();
        let gateway = Gateway::start().await;
        scratch.write_site("site.yaml", &site(&gateway));
        let contacts = scratch.write_contacts(
            "id,name,phone,tags\nc-1,Ana,+51911111111,vip\nc-2,Luis,+51922222222,vip\nc-3,Rosa,+51933333333,\n",
        );
        let herald = scratch
            .options()
            .with_contacts(&contacts)
            .with_env(&[("GATEWAY_SECRET", GATEWAY_SECRET)])
            .start();
        let world = World {
            herald,
            gateway,
            _scratch: scratch,
        };
        world
            .herald
            .wait_until("the three promo messages to be recorded as sent", WAIT, || async {
                world.herald.scalar("SELECT count(*) FROM deliveries WHERE status = 'sent' AND provider_message_id LIKE 'gw-%'").await == 3
            })
            .await;
        world
    }

    /// (opted_in_at, opted_out_at, opted_out_source, last_inbound_at) of a contact's SMS.
    async fn sms_state(
        &self,
        contact: &str,
    ) -> (Option<i64>, Option<i64>, Option<String>, Option<i64>) {
        let m = self.herald.medium(contact, "sms").await.unwrap_or_default();
        (
            m.opted_in_at,
            m.opted_out_at,
            m.opted_out_source,
            m.last_inbound_at,
        )
    }

    /// (status, reason, delivered_at, read_at) of the promo delivery to `contact`.
    async fn delivery(&self, contact: &str) -> (String, Option<String>, Option<i64>, Option<i64>) {
        let d = self.herald.delivery("promo", contact).await.unwrap();
        (d.status, d.reason, d.delivered_at, d.read_at)
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

    /// Waits until the receiver has `n` of herald's events, then a while longer for any
    /// more; answers them all.
    async fn events(&self, what: &str, n: usize) -> Vec<Got> {
        let arrived = || async { self.gateway.got("/events").len() >= n };
        self.herald.wait_until(what, WAIT, arrived).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        self.gateway.got("/events")
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
    assert_eq!(world.herald.tags("c-1").await, ["interested", "vip"]);
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
    assert_eq!(world.herald.tags("c-1").await, ["interested"]);

    // A rule's `start`: a real run of the (disabled) follow-up campaign for this contact.
    let (status, answer) = world.reply("in-3", "+51922222222", "MORE").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["follow_ups"][0]["campaign"], "follow-up", "{answer}");
    let run = answer["follow_ups"][0]["run_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("the follow-up started: {answer}"));
    assert_eq!(
        world
            .herald
            .scalar(&format!(
                "SELECT count(*) FROM runs WHERE id = {run} AND trigger = 'reply' \
                 AND campaign = 'follow-up' AND total = 1"
            ))
            .await,
        1
    );
    world
        .herald
        .wait_until("the follow-up message at the gateway", WAIT, || async {
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
    let events = world
        .events("message.replied events at the receiver", 4)
        .await;
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
        .herald
        .wait_until("contact.opted_out events", WAIT, || async {
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
            .herald
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

    let types: Vec<String> = world
        .events("delivery events at the receiver", 2)
        .await
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
    assert_eq!(
        world
            .herald
            .scalar("SELECT count(*) FROM inbound_events")
            .await,
        0
    );
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
    let doc = world.herald.get_json("/openapi.json", None).await;
    let route = &doc["paths"]["/v1/inbound/{channel}"]["post"];
    assert!(route.is_object(), "{doc}");
    assert!(route.get("security").is_none(), "{route}");
    assert!(route["requestBody"].is_object(), "{route}");
    assert!(route["responses"]["401"].is_object(), "{route}");
    assert_eq!(world.herald.stop(), Some(0));
}
