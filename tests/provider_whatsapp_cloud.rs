//! The `whatsapp_cloud` channel through the real binary, against a fake Graph API on
//! 127.0.0.1 that checks each request as Meta documents it (POST
//! /{version}/{phone-number-id}/messages, `Authorization: Bearer`, JSON with
//! messaging_product, recipient_type, to, type and the template) and replays Meta's
//! documented answers: `{"messages": [{"id": "wamid..."}]}`, error 131047 (re-engagement
//! window closed: permanent) and 130429 (throughput: retried). Then Meta's webhook comes
//! back: the GET verification handshake, and notifications signed in X-Hub-Signature-256
//! right, wrong and not at all.

#[path = "support/server.rs"]
mod server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use herald::channels::whatsapp_cloud::signature;
use serde_json::{Value, json};
use server::{Herald, Options};
use sqlx::Row;

const ACCESS_TOKEN: &str = "EAAGm0PX4ZCpsBAKZCtesttoken";
const APP_SECRET: &str = "0123456789abcdef0123456789abcdef";
const VERIFY_TOKEN: &str = "verify-me-please";
const PHONE_NUMBER_ID: &str = "106540352242922";

/// Ana's number works; Luis's window is closed (131047); Rosa's hits the throughput
/// limit (130429) once; Pedro's works (and later fails in a status: 131050).
const ANA: &str = "+51911111111";
const LUIS: &str = "+51922222222";
const ROSA: &str = "+51933333333";
const PEDRO: &str = "+51944444444";

#[derive(Clone, Debug)]
struct Got {
    method: Method,
    path: String,
    authorization: String,
    content_type: String,
    body: Value,
}

struct FakeGraphApi {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

fn graph_error(code: i64, message: &str) -> Value {
    json!({"error": {"message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message},
        "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"}})
}

impl FakeGraphApi {
    async fn start() -> FakeGraphApi {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let app = axum::Router::new().fallback({
            let got = got.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let got = got.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let to = body["to"].as_str().unwrap_or_default().to_string();
                    let mut got = got.lock().unwrap();
                    got.push(Got {
                        method,
                        path: uri.path().to_string(),
                        authorization: header("authorization"),
                        content_type: header("content-type"),
                        body: body.clone(),
                    });
                    let earlier = got.iter().filter(|g| g.body["to"] == to.as_str()).count();
                    if header("authorization") != format!("Bearer {ACCESS_TOKEN}") {
                        return (
                            StatusCode::UNAUTHORIZED,
                            axum::Json(graph_error(190, "Invalid OAuth access token.")),
                        )
                            .into_response();
                    }
                    match to.as_str() {
                        LUIS => (
                            StatusCode::BAD_REQUEST,
                            axum::Json(graph_error(
                                131047,
                                "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
                            )),
                        )
                            .into_response(),
                        ROSA if earlier == 1 => (
                            StatusCode::BAD_REQUEST,
                            axum::Json(graph_error(130429, "Rate limit hit")),
                        )
                            .into_response(),
                        _ => axum::Json(json!({"messaging_product": "whatsapp",
                            "contacts": [{"input": to, "wa_id": to.trim_start_matches('+')}],
                            "messages": [{"id": format!("wamid.{}", to.trim_start_matches('+'))}]}))
                        .into_response(),
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeGraphApi { addr, got }
    }

    fn got_for(&self, to: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.body["to"] == to)
            .cloned()
            .collect()
    }
}

fn site(dir: &std::path::Path, api: &FakeGraphApi) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("site.yaml"),
        format!(
            r#"apiVersion: herald/v1
kind: Channel
metadata: {{name: wa}}
spec:
  type: whatsapp_cloud
  whatsapp_cloud:
    phone_number_id: "{PHONE_NUMBER_ID}"
    access_token: "${{env:WA_TOKEN}}"
    app_secret: "${{env:WA_APP_SECRET}}"
    verify_token: "${{env:WA_VERIFY_TOKEN}}"
    api_version: v21.0
    base_url: "http://{addr}"
---
apiVersion: herald/v1
kind: Template
metadata: {{name: promo-nov}}
spec:
  whatsapp:
    template:
      name: promo_noviembre
      language: es_MX
      body: ["{{{{ contact.name }}}}", "20%"]
      buttons: ["YES"]
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: promo}}
spec:
  audience: {{segment: all-contacts}}
  channels: {{strategy: specific, use: [wa]}}
  template: promo-nov
  schedule: {{now: true}}
  consent: not_required
  delivery:
    retry: {{max_attempts: 3, initial_backoff: 1s, max_backoff: 1s}}
  on_reply:
    - {{match: '^YES$', tag: interested}}
"#,
            addr = api.addr,
        ),
    )
    .unwrap();
}

struct World {
    herald: Herald,
    api: FakeGraphApi,
    _scratch: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let scratch = tempfile::tempdir().unwrap();
        let api = FakeGraphApi::start().await;
        let dir = scratch.path().join("site");
        site(&dir, &api);
        let contacts = scratch.path().join("contacts.csv");
        std::fs::write(
            &contacts,
            format!(
                "id,name,phone\nc-1,Ana,{ANA}\nc-2,Luis,{LUIS}\nc-3,Rosa,{ROSA}\nc-4,Pedro,{PEDRO}\n"
            ),
        )
        .unwrap();
        let db = scratch.path().join("herald.db");
        let mut options = Options::new(&dir, &db);
        options.args = vec!["--contacts".into(), contacts.display().to_string()];
        options.env = vec![
            ("WA_TOKEN".into(), ACCESS_TOKEN.into()),
            ("WA_APP_SECRET".into(), APP_SECRET.into()),
            ("WA_VERIFY_TOKEN".into(), VERIFY_TOKEN.into()),
        ];
        let herald = Herald::start_with(options);
        let world = World {
            herald,
            api,
            _scratch: scratch,
        };
        world
            .wait_for(
                "Ana's, Rosa's and Pedro's messages sent, Luis's failed",
                || async {
                    world.delivery("c-1").await.0 == "sent"
                        && world.delivery("c-2").await.0 == "failed"
                        && world.delivery("c-3").await.0 == "sent"
                        && world.delivery("c-4").await.0 == "sent"
                },
            )
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
            if started.elapsed() > Duration::from_secs(40) {
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

    /// (status, reason, provider_message_id, attempts, delivered_at, read_at).
    async fn delivery(
        &self,
        contact: &str,
    ) -> (
        String,
        Option<String>,
        Option<String>,
        i64,
        Option<i64>,
        Option<i64>,
    ) {
        // The run snapshots its deliveries shortly after it starts: wait for the row.
        let started = std::time::Instant::now();
        let r = loop {
            let mut db = self.db().await;
            let found = sqlx::query(
                "SELECT d.status, d.reason, d.provider_message_id, d.attempts, d.delivered_at, d.read_at \
                 FROM deliveries d JOIN runs r ON r.id = d.run_id \
                 WHERE r.campaign = 'promo' AND d.contact_id = ?",
            )
            .bind(contact)
        .fetch_optional(&mut db)
                .await
                .unwrap();
            if let Some(r) = found {
                break r;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "no delivery for {contact} within 20 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
    }

    /// (opted_out_at, last_inbound_at) of a contact's whatsapp.
    async fn whatsapp_state(&self, contact: &str) -> (Option<i64>, Option<i64>) {
        let mut db = self.db().await;
        let row = sqlx::query(
            "SELECT m.opted_out_at, m.last_inbound_at FROM contacts c \
             JOIN contact_media m ON m.contact_pk = c.pk AND m.medium = 'whatsapp' WHERE c.id = ?",
        )
        .bind(contact)
        .fetch_optional(&mut db)
        .await
        .unwrap();
        row.map_or((None, None), |r| (r.get(0), r.get(1)))
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

    async fn inbound_events(&self) -> i64 {
        let mut db = self.db().await;
        sqlx::query_scalar("SELECT count(*) FROM inbound_events")
            .fetch_one(&mut db)
            .await
            .unwrap()
    }

    /// POSTs a notification with `signature_header` as X-Hub-Signature-256 (none: `None`).
    async fn notify(&self, body: &Value, signature_header: Option<String>) -> (u16, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        let mut request = reqwest::Client::new()
            .post(self.herald.url("/v1/inbound/wa"))
            .header("content-type", "application/json");
        if let Some(signature_header) = signature_header {
            request = request.header("X-Hub-Signature-256", signature_header);
        }
        let response = request.body(raw).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn signed(&self, body: &Value) -> (u16, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        self.notify(body, Some(signature(APP_SECRET, &raw))).await
    }
}

/// A notification as Meta sends it, with `value`'s statuses and messages.
fn notification(statuses: Value, messages: Value) -> Value {
    let now = jiff::Timestamp::now().as_second().to_string();
    let stamp = |items: Value| -> Value {
        Value::Array(
            items
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    i["timestamp"] = json!(now);
                    i
                })
                .collect(),
        )
    };
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
    "field": "messages",
    "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": "51911111111"}],
        "statuses": stamp(statuses),
        "messages": stamp(messages)
    }}]}]})
}

#[tokio::test]
async fn a_template_campaign_goes_out_through_the_graph_api_with_errors_mapped() {
    let world = World::start().await;

    let ana = world.api.got_for(ANA);
    assert_eq!(ana.len(), 1, "{ana:?}");
    assert_eq!(ana[0].method, Method::POST);
    assert_eq!(ana[0].path, format!("/v21.0/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(ana[0].authorization, format!("Bearer {ACCESS_TOKEN}"));
    assert!(ana[0].content_type.starts_with("application/json"));
    assert_eq!(
        ana[0].body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": ANA,
            "type": "template",
            "template": {
                "name": "promo_noviembre",
                "language": {"code": "es_MX"},
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "20%"}]},
                    {"type": "button", "sub_type": "quick_reply", "index": "0",
                     "parameters": [{"type": "payload", "payload": "YES"}]}
                ]
            }
        })
    );
    let (_, _, id, attempts, _, _) = world.delivery("c-1").await;
    assert_eq!(id.as_deref(), Some("wamid.51911111111"));
    assert_eq!(attempts, 1);

    // 131047: the window is closed; retrying cannot help.
    assert_eq!(world.api.got_for(LUIS).len(), 1);
    let (_, reason, _, _, _, _) = world.delivery("c-2").await;
    let reason = reason.unwrap();
    assert!(reason.contains("131047"), "{reason}");
    assert!(!reason.contains(ACCESS_TOKEN));
    assert_eq!(
        world.whatsapp_state("c-2").await.0,
        None,
        "a closed window is no opt-out"
    );

    // 130429: throughput; retried, then sent.
    assert_eq!(world.api.got_for(ROSA).len(), 2);
    let (_, _, id, attempts, _, _) = world.delivery("c-3").await;
    assert_eq!(id.as_deref(), Some("wamid.51933333333"));
    assert_eq!(attempts, 2);

    assert!(!world.herald.log_text().contains(ACCESS_TOKEN));
}

#[tokio::test]
async fn the_verification_handshake_echoes_the_challenge_only_for_the_verify_token() {
    let world = World::start().await;
    let get = |query: &str| {
        let url = world.herald.url(&format!("/v1/inbound/wa?{query}"));
        async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, body) = get(&format!(
        "hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
    ))
    .await;
    assert_eq!((status, body.as_str()), (200, "1158201444"));
    let (status, body) =
        get("hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1158201444").await;
    assert_eq!(status, 403);
    assert!(
        !body.contains("1158201444") && !body.contains(VERIFY_TOKEN),
        "{body}"
    );
    let (status, _) = get(&format!(
        "hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"
    ))
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn signed_notifications_record_statuses_and_replies_and_others_change_nothing() {
    let world = World::start().await;
    let events = world.inbound_events().await;
    let delivered = notification(
        json!([{"id": "wamid.51911111111", "status": "delivered", "recipient_id": "51911111111",
            "conversation": {"id": "c1", "origin": {"type": "marketing"}},
            "pricing": {"billable": true, "pricing_model": "CBP", "category": "marketing"}}]),
        json!([]),
    );

    // Wrong and missing signatures: 401, nothing recorded.
    let raw = serde_json::to_vec(&delivered).unwrap();
    let (status, answer) = world
        .notify(&delivered, Some(signature("not-the-app-secret", &raw)))
        .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_signature");
    let (status, _) = world.notify(&delivered, None).await;
    assert_eq!(status, 401);
    assert_eq!(world.inbound_events().await, events);
    assert_eq!(world.delivery("c-1").await.4, None);

    // Signed: the delivery moves to delivered, then read.
    let (status, answer) = world.signed(&delivered).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"][0]["status"], "delivered");
    let (status_now, _, _, _, delivered_at, _) = world.delivery("c-1").await;
    assert_eq!(status_now, "delivered");
    assert!(delivered_at.is_some());
    // Meta re-delivers: the repeat changes nothing.
    let (status, answer) = world.signed(&delivered).await;
    assert_eq!(status, 200);
    assert_eq!(answer["events"][0]["duplicate"], true);
    let read = notification(
        json!([{"id": "wamid.51911111111", "status": "read", "recipient_id": "51911111111"}]),
        json!([]),
    );
    assert_eq!(world.signed(&read).await.0, 200);
    assert_eq!(world.delivery("c-1").await.0, "read");

    // A failed status with its error.
    let failed = notification(
        json!([{"id": "wamid.51933333333", "status": "failed", "recipient_id": "51933333333",
            "errors": [{"code": 131026, "title": "Message undeliverable",
                "error_data": {"details": "Message Undeliverable."}}]}]),
        json!([]),
    );
    assert_eq!(world.signed(&failed).await.0, 200);
    let (status_now, reason, _, _, _, _) = world.delivery("c-3").await;
    assert_eq!(status_now, "failed");
    assert!(reason.unwrap_or_default().contains("131026"));
    assert_eq!(
        world.whatsapp_state("c-3").await.0,
        None,
        "131026 is no opt-out"
    );

    // Failed with 131050 (Pedro stopped marketing messages after the send was accepted):
    // failed, and Pedro is opted out of whatsapp, as when the API answers 131050.
    let stopped = notification(
        json!([{"id": "wamid.51944444444", "status": "failed", "recipient_id": "51944444444",
            "errors": [{"code": 131050,
                "title": "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business"}]}]),
        json!([]),
    );
    assert_eq!(world.signed(&stopped).await.0, 200);
    let (status_now, reason, _, _, _, _) = world.delivery("c-4").await;
    assert_eq!(status_now, "failed");
    assert!(reason.unwrap_or_default().contains("131050"));
    assert!(world.whatsapp_state("c-4").await.0.is_some());

    // A status for a message herald does not know (yet): 404, so Meta retries.
    let unknown = notification(
        json!([{"id": "wamid.nobody", "status": "delivered", "recipient_id": "1"}]),
        json!([]),
    );
    assert_eq!(world.signed(&unknown).await.0, 404);

    // The quick-reply button of the template: a reply whose payload runs the rule.
    let button = notification(
        json!([]),
        json!([{"from": "51911111111", "id": "wamid.in1", "type": "button",
            "context": {"from": "15550783881", "id": "wamid.51911111111"},
            "button": {"payload": "YES", "text": "Sí"}}]),
    );
    let (status, answer) = world.signed(&button).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"][0]["contact_id"], "c-1");
    assert_eq!(answer["events"][0]["campaign"], "promo");
    assert_eq!(world.tags("c-1").await, vec!["interested".to_string()]);
    assert!(
        world.whatsapp_state("c-1").await.1.is_some(),
        "last inbound recorded"
    );

    // A text STOP opts the sender out of whatsapp.
    let stop = notification(
        json!([]),
        json!([{"from": "51911111111", "id": "wamid.in2", "type": "text", "text": {"body": "STOP"}}]),
    );
    let (status, answer) = world.signed(&stop).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"][0]["opted_out"], json!(["c-1"]));
    assert!(world.whatsapp_state("c-1").await.0.is_some());

    // Not a WhatsApp notification: 422 naming the field.
    let (status, answer) = world.signed(&json!({"object": "page", "entry": []})).await;
    assert_eq!(status, 422);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("object")
    );
}
