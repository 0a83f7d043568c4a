//! The `whatsapp_cloud` channel through the real binary, against a fake Graph API on
//! 127.0.0.1 that checks each request as Meta documents it (POST
//! /{version}/{phone-number-id}/messages, `Authorization: Bearer`, JSON with
//! messaging_product, recipient_type, to, type and the object named by type; 404 with a
//! Graph error for another path or method) and replays Meta's documented answers:
//! `{"messages": [{"id": "wamid..."}]}`, error 131047 (re-engagement window closed:
//! permanent) and 130429 (throughput: retried). Every message form herald sends (template,
//! text, media by link, reply buttons, a cta_url button, a list) goes through it and its
//! whole body is compared with Meta's documented shape. Then Meta's webhook comes back:
//! the GET verification handshake, and notifications signed in X-Hub-Signature-256 (the
//! HMAC computed here from Meta's description, not by herald) right, wrong and not at all.

#[path = "support/fake.rs"]
mod fake;
#[path = "support/server.rs"]
mod server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use server::{Herald, Scratch};

const ACCESS_TOKEN: &str = "EAAGm0PX4ZCpsBAKZCtesttoken";
const APP_SECRET: &str = "0123456789abcdef0123456789abcdef";
const VERIFY_TOKEN: &str = "verify-me-please";
const PHONE_NUMBER_ID: &str = "106540352242922";
/// A second number of the same Meta app (channel `wa-2`): Meta posts its statuses to the
/// app's one callback URL, here the `wa` channel's.
const SECOND_NUMBER_ID: &str = "113269274970227";

/// Ana's number works; Luis's window is closed (131047); Rosa's hits the throughput
/// limit (130429) once; Pedro's works (and later fails in a status: 131050).
const ANA: &str = "+51911111111";
const LUIS: &str = "+51922222222";
const ROSA: &str = "+51933333333";
const PEDRO: &str = "+51944444444";

/// One contact per message form, outside the promo's audience (ids start with `wa-`),
/// each sent by the campaign of the same name with the template of the same name:
/// (campaign and contact id, name, phone).
const SHOWCASE: [(&str, &str, &str); 11] = [
    ("wa-text", "Tina", "+51960000001"),
    ("wa-image", "Ines", "+51960000002"),
    ("wa-video", "Vico", "+51960000003"),
    ("wa-audio", "Aldo", "+51960000004"),
    ("wa-document", "Doro", "+51960000005"),
    ("wa-buttons", "Bea", "+51960000006"),
    ("wa-cta", "Ciro", "+51960000007"),
    ("wa-list", "Lia", "+51960000008"),
    ("wa-template-media", "Tito", "+51960000010"),
    // Sent through `wa-2`, the app's second number.
    ("wa-second", "Sara", "+51960000011"),
    // An audio with a text: WhatsApp takes no caption on audio, so herald refuses it
    // before any request.
    ("wa-audio-text", "Olga", "+51960000009"),
];

fn showcase_phone(campaign: &str) -> &'static str {
    SHOWCASE.iter().find(|(c, _, _)| *c == campaign).unwrap().2
}

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
                    let header = |name: &str| fake::header(&headers, name);
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
                    let path = got.last().unwrap().path.clone();
                    if got.last().unwrap().method != Method::POST
                        || (path != format!("/v21.0/{PHONE_NUMBER_ID}/messages")
                            && path != format!("/v21.0/{SECOND_NUMBER_ID}/messages"))
                    {
                        return (
                            StatusCode::NOT_FOUND,
                            axum::Json(json!({"error": {
                                "message": format!("Unsupported request. Object with ID '{}' does not exist, cannot be loaded due to missing permissions, or does not support this operation.", path.trim_start_matches('/')),
                                "type": "GraphMethodException", "code": 100, "error_subcode": 33,
                                "fbtrace_id": "AvBz1mH4xN2kQf7Ql0Gd9tE"}})),
                        )
                            .into_response();
                    }
                    // Every message names its type and carries the object of that name.
                    let kind = body["type"].as_str().unwrap_or_default();
                    if body["messaging_product"] != "whatsapp"
                        || to.is_empty()
                        || kind.is_empty()
                        || !body[kind].is_object()
                    {
                        return (
                            StatusCode::BAD_REQUEST,
                            axum::Json(graph_error(100, "(#100) Invalid parameter")),
                        )
                            .into_response();
                    }
                    // Two rules of Meta's that a body can break: audio takes no caption,
                    // and a list of several sections needs a title on each.
                    let sections = body["interactive"]["action"]["sections"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if !body["audio"]["caption"].is_null()
                        || (sections.len() > 1 && sections.iter().any(|s| s["title"].is_null()))
                    {
                        return (
                            StatusCode::BAD_REQUEST,
                            axum::Json(graph_error(131009, "(#131009) Parameter value is not valid")),
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
        FakeGraphApi {
            addr: fake::serve(app).await,
            got,
        }
    }

    fn got_for(&self, to: &str) -> Vec<Got> {
        fake::matching(&self.got, |g| g.body["to"] == to)
    }
}

fn site(api: &FakeGraphApi) -> String {
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
kind: Channel
metadata: {{name: wa-2}}
spec:
  type: whatsapp_cloud
  whatsapp_cloud:
    phone_number_id: "{SECOND_NUMBER_ID}"
    access_token: "${{env:WA_TOKEN}}"
    app_secret: "${{env:WA_APP_SECRET}}"
    verify_token: "${{env:WA_VERIFY_TOKEN}}"
    api_version: v21.0
    base_url: "http://{addr}"
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-second}}
spec:
  whatsapp:
    text: "Hola {{{{ contact.name }}}}"
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
kind: Segment
metadata: {{name: showcase}}
spec:
  match: {{field: id, op: starts_with, value: "wa-"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-text}}
spec:
  whatsapp:
    text: "Hola {{{{ contact.name }}}}, tu pedido: https://acme.example/o/{{{{ contact.id }}}}"
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-image}}
spec:
  whatsapp:
    text: "Mira la oferta"
    media:
      type: image
      url: "https://cdn.acme.example/p/{{{{ contact.id }}}}.jpg"
      caption: "Oferta para {{{{ contact.name }}}}"
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-video}}
spec:
  whatsapp:
    text: "Mira el video, {{{{ contact.name }}}}"
    media: {{type: video, url: "https://cdn.acme.example/v/demo.mp4"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-audio}}
spec:
  whatsapp:
    media: {{type: audio, url: "https://cdn.acme.example/a/saludo.ogg"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-audio-text}}
spec:
  whatsapp:
    text: "Escucha esto"
    media: {{type: audio, url: "https://cdn.acme.example/a/saludo.ogg"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-document}}
spec:
  whatsapp:
    media:
      type: document
      url: "https://cdn.acme.example/f/2026-11.pdf"
      caption: "Factura de noviembre"
      filename: "factura-{{{{ contact.id }}}}.pdf"
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-buttons}}
spec:
  whatsapp:
    text: "¿Te interesa, {{{{ contact.name }}}}?"
    media: {{type: image, url: "https://cdn.acme.example/p/promo.jpg"}}
    buttons:
      - {{text: "Sí", reply: "YES"}}
      - {{text: "No"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-cta}}
spec:
  whatsapp:
    text: "Tu pedido está en camino"
    buttons:
      - {{text: "Seguir pedido", url: "https://acme.example/track/{{{{ contact.id }}}}"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-list}}
spec:
  whatsapp:
    text: "Elige tu plan, {{{{ contact.name }}}}"
    list:
      button: "Ver planes"
      sections:
        - title: "Planes"
          rows:
            - {{id: plan-basic, title: "Básico", description: "1 línea"}}
            - {{id: plan-pro, title: "Pro"}}
        - title: "Ayuda"
          rows:
            - {{id: talk, title: "Hablar con alguien"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: wa-template-media}}
spec:
  whatsapp:
    media: {{type: document, url: "https://cdn.acme.example/f/{{{{ contact.id }}}}.pdf", filename: "factura.pdf"}}
    template:
      name: invoice_ready
      language: es
      body: ["{{{{ contact.name }}}}"]
{showcase}---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: promo}}
spec:
  audience: {{segment: all-contacts, exclude: [showcase]}}
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
        showcase = SHOWCASE
            .iter()
            .map(|(name, _, _)| showcase_campaign(name))
            .collect::<String>(),
    )
}

/// A campaign sending the template `name` to the contact `name` only. The list's reply
/// `plan-pro` tags the contact, as any reply runs the rules of the campaign it answers.
fn showcase_campaign(name: &str) -> String {
    let channel = if name == "wa-second" { "wa-2" } else { "wa" };
    format!(
        r#"---
apiVersion: herald/v1
kind: Segment
metadata: {{name: only-{name}}}
spec:
  match: {{field: id, op: eq, value: {name}}}
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: {name}}}
spec:
  audience: {{segment: only-{name}}}
  channels: {{strategy: specific, use: [{channel}]}}
  template: {name}
  schedule: {{now: true}}
  consent: not_required
  on_reply:
    - {{match: '^plan-pro$', tag: wants-pro}}
"#
    )
}

struct World {
    herald: Herald,
    api: FakeGraphApi,
    _scratch: Scratch,
}

/// (status, reason, provider_message_id, attempts, delivered_at, read_at) of a delivery.
type DeliveryRow = (
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
);

impl World {
    async fn start() -> World {
        let scratch = Scratch::new();
        let api = FakeGraphApi::start().await;
        scratch.write_site("site.yaml", &site(&api));
        let mut csv = format!(
            "id,name,phone\nc-1,Ana,{ANA}\nc-2,Luis,{LUIS}\nc-3,Rosa,{ROSA}\nc-4,Pedro,{PEDRO}\n"
        );
        for (id, name, phone) in SHOWCASE {
            csv.push_str(&format!("{id},{name},{phone}\n"));
        }
        let contacts = scratch.write_contacts(&csv);
        let herald = scratch
            .options()
            .with_contacts(&contacts)
            .with_env(&[
                ("WA_TOKEN", ACCESS_TOKEN),
                ("WA_APP_SECRET", APP_SECRET),
                ("WA_VERIFY_TOKEN", VERIFY_TOKEN),
            ])
            .start();
        let world = World {
            herald,
            api,
            _scratch: scratch,
        };
        world
            .herald
            .wait_until(
                "Ana's, Rosa's and Pedro's messages sent, Luis's failed, and every showcase \
                 message sent but the audio with a text",
                Duration::from_secs(40),
                || async {
                    let mut done = world.delivery("c-1").await.0 == "sent"
                        && world.delivery("c-2").await.0 == "failed"
                        && world.delivery("c-3").await.0 == "sent"
                        && world.delivery("c-4").await.0 == "sent";
                    for (name, _, _) in SHOWCASE {
                        let want = if name == "wa-audio-text" {
                            "failed"
                        } else {
                            "sent"
                        };
                        done &= world.delivery_of(name, name).await.0 == want;
                    }
                    done
                },
            )
            .await;
        world
    }

    /// The promo's delivery to `contact`.
    async fn delivery(&self, contact: &str) -> DeliveryRow {
        self.delivery_of("promo", contact).await
    }

    /// `campaign`'s delivery to `contact`.
    async fn delivery_of(&self, campaign: &str, contact: &str) -> DeliveryRow {
        let d = self.herald.planned_delivery(campaign, contact).await;
        (
            d.status,
            d.reason,
            d.provider_message_id,
            d.attempts,
            d.delivered_at,
            d.read_at,
        )
    }

    /// (opted_out_at, last_inbound_at) of a contact's whatsapp.
    async fn whatsapp_state(&self, contact: &str) -> (Option<i64>, Option<i64>) {
        let m = self
            .herald
            .medium(contact, "whatsapp")
            .await
            .unwrap_or_default();
        (m.opted_out_at, m.last_inbound_at)
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

/// X-Hub-Signature-256 as Meta describes it, written out here rather than taken from
/// herald: `sha256=` and the lowercase hex HMAC-SHA256 of the raw body, keyed with the
/// app secret.
fn signature(app_secret: &str, raw_body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()).unwrap();
    mac.update(raw_body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
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
async fn every_message_form_goes_out_as_meta_documents_it() {
    let world = World::start().await;
    let message = |to: &str, kind: &str, object: Value| {
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": kind,
        });
        body[kind] = object;
        body
    };
    let expected = [
        // A link in the text asks for its preview.
        (
            "wa-text",
            "text",
            json!({"body": "Hola Tina, tu pedido: https://acme.example/o/wa-text", "preview_url": true}),
        ),
        // The media's caption wins over the text.
        (
            "wa-image",
            "image",
            json!({"link": "https://cdn.acme.example/p/wa-image.jpg", "caption": "Oferta para Ines"}),
        ),
        // No caption of its own: the text is the caption.
        (
            "wa-video",
            "video",
            json!({"link": "https://cdn.acme.example/v/demo.mp4", "caption": "Mira el video, Vico"}),
        ),
        // Audio takes no caption.
        (
            "wa-audio",
            "audio",
            json!({"link": "https://cdn.acme.example/a/saludo.ogg"}),
        ),
        (
            "wa-document",
            "document",
            json!({"link": "https://cdn.acme.example/f/2026-11.pdf",
                "caption": "Factura de noviembre", "filename": "factura-wa-document.pdf"}),
        ),
        // Reply buttons: the id is the button's reply, else its text; the image is the
        // header.
        (
            "wa-buttons",
            "interactive",
            json!({
                "type": "button",
                "header": {"type": "image", "image": {"link": "https://cdn.acme.example/p/promo.jpg"}},
                "body": {"text": "¿Te interesa, Bea?"},
                "action": {"buttons": [
                    {"type": "reply", "reply": {"id": "YES", "title": "Sí"}},
                    {"type": "reply", "reply": {"id": "No", "title": "No"}}
                ]}
            }),
        ),
        // One URL button: a call-to-action URL button.
        (
            "wa-cta",
            "interactive",
            json!({
                "type": "cta_url",
                "body": {"text": "Tu pedido está en camino"},
                "action": {"name": "cta_url", "parameters": {
                    "display_text": "Seguir pedido",
                    "url": "https://acme.example/track/wa-cta"
                }}
            }),
        ),
        (
            "wa-list",
            "interactive",
            json!({
                "type": "list",
                "body": {"text": "Elige tu plan, Lia"},
                "action": {"button": "Ver planes", "sections": [
                    {"title": "Planes", "rows": [
                        {"id": "plan-basic", "title": "Básico", "description": "1 línea"},
                        {"id": "plan-pro", "title": "Pro"}
                    ]},
                    {"title": "Ayuda", "rows": [{"id": "talk", "title": "Hablar con alguien"}]}
                ]}
            }),
        ),
        // A template whose header is a document: the media is the header's parameter.
        (
            "wa-template-media",
            "template",
            json!({
                "name": "invoice_ready",
                "language": {"code": "es"},
                "components": [
                    {"type": "header", "parameters": [{"type": "document", "document": {
                        "link": "https://cdn.acme.example/f/wa-template-media.pdf",
                        "filename": "factura.pdf"}}]},
                    {"type": "body", "parameters": [{"type": "text", "text": "Tito"}]}
                ]
            }),
        ),
    ];
    for (campaign, kind, object) in expected {
        let to = showcase_phone(campaign);
        let got = world.api.got_for(to);
        assert_eq!(got.len(), 1, "{campaign}: {got:?}");
        assert_eq!(got[0].method, Method::POST);
        assert_eq!(got[0].path, format!("/v21.0/{PHONE_NUMBER_ID}/messages"));
        assert_eq!(got[0].authorization, format!("Bearer {ACCESS_TOKEN}"));
        assert!(got[0].content_type.starts_with("application/json"));
        assert_eq!(got[0].body, message(to, kind, object), "{campaign}");
        let (_, _, id, attempts, _, _) = world.delivery_of(campaign, campaign).await;
        assert_eq!(
            id,
            Some(format!("wamid.{}", to.trim_start_matches('+'))),
            "{campaign}"
        );
        assert_eq!(attempts, 1, "{campaign}");
    }

    // An audio with a text: refused before any request, the reason saying why.
    assert_eq!(world.api.got_for(showcase_phone("wa-audio-text")).len(), 0);
    let (status, reason, _, _, _, _) = world.delivery_of("wa-audio-text", "wa-audio-text").await;
    assert_eq!(status, "failed");
    let reason = reason.unwrap_or_default();
    assert!(reason.contains("audio takes no caption"), "{reason}");
}

#[tokio::test]
async fn a_wrong_path_or_method_gets_the_graph_api_404() {
    // The fake's own check, so that a request herald sent elsewhere would fail loudly
    // rather than be answered as a sent message.
    let api = FakeGraphApi::start().await;
    let client = reqwest::Client::new();
    let bearer = format!("Bearer {ACCESS_TOKEN}");
    let body = json!({"messaging_product": "whatsapp", "recipient_type": "individual",
        "to": ANA, "type": "text", "text": {"body": "hola"}});
    let wrong_path = client
        .post(format!("http://{}/v21.0/999/messages", api.addr))
        .header("authorization", &bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_path.status().as_u16(), 404);
    let answer: Value = wrong_path.json().await.unwrap();
    assert_eq!(answer["error"]["code"], 100);
    let wrong_method = client
        .get(format!(
            "http://{}/v21.0/{PHONE_NUMBER_ID}/messages",
            api.addr
        ))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status().as_u16(), 404);
    let right = client
        .post(format!(
            "http://{}/v21.0/{PHONE_NUMBER_ID}/messages",
            api.addr
        ))
        .header("authorization", &bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
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
    let events = world.herald.inbound_events().await;
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
    assert_eq!(world.herald.inbound_events().await, events);
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

    // A status for a message herald does not know (yet): kept until a send is recorded
    // with that wamid (dropped after a day), answered 200 so Meta does not retry it.
    let unknown = notification(
        json!([{"id": "wamid.nobody", "status": "delivered", "recipient_id": "1"}]),
        json!([]),
    );
    let (status, answer) = world.signed(&unknown).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"][0]["pending"], true, "{answer}");

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
    assert_eq!(
        world.herald.tags("c-1").await,
        vec!["interested".to_string()]
    );
    assert!(
        world.whatsapp_state("c-1").await.1.is_some(),
        "last inbound recorded"
    );

    // A choice from the interactive list: a reply whose text is the row's id, attributed
    // to the list's campaign, whose rule tags the contact.
    let lia = showcase_phone("wa-list").trim_start_matches('+');
    let mut choice = notification(
        json!([]),
        json!([{"from": lia, "id": "wamid.in3", "type": "interactive",
            "context": {"from": "15550783881", "id": format!("wamid.{lia}")},
            "interactive": {"type": "list_reply",
                "list_reply": {"id": "plan-pro", "title": "Pro"}}}]),
    );
    choice["entry"][0]["changes"][0]["value"]["contacts"] =
        json!([{"profile": {"name": "Lia"}, "wa_id": lia}]);
    let (status, answer) = world.signed(&choice).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"][0]["contact_id"], "wa-list");
    assert_eq!(answer["events"][0]["campaign"], "wa-list");
    assert_eq!(answer["events"][0]["tagged"], json!(["wants-pro"]));
    assert_eq!(
        world.herald.tags("wa-list").await,
        vec!["wants-pro".to_string()]
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

/// One Meta app has one callback URL for all its numbers: a status for the app's second
/// number, posted to the first number's channel, moves the delivery on the second
/// number's channel (routed by `metadata.phone_number_id`).
#[tokio::test]
async fn a_status_for_another_number_of_the_app_is_recorded_on_that_numbers_channel() {
    let world = World::start().await;
    let sara = showcase_phone("wa-second");
    let got = world.api.got_for(sara);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, format!("/v21.0/{SECOND_NUMBER_ID}/messages"));
    let wamid = format!("wamid.{}", sara.trim_start_matches('+'));
    let for_number = |number: &str, status: &str| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783882", "phone_number_id": number},
            "statuses": [{"id": wamid, "status": status, "timestamp": "1764000000",
                "recipient_id": sara.trim_start_matches('+')}]
        }}]}]})
    };

    // Posted to `wa`'s URL, for `wa-2`'s number: applied to the delivery on `wa-2`.
    let (status, answer) = world
        .signed(&for_number(SECOND_NUMBER_ID, "delivered"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"][0]["pending"], false, "{answer}");
    assert_eq!(answer["events"][0]["status"], "delivered", "{answer}");
    assert_eq!(
        world.delivery_of("wa-second", "wa-second").await.0,
        "delivered"
    );

    // A number no channel in force has: kept on `wa` as an early receipt (it never meets a
    // `wa` delivery), the `wa-2` delivery untouched.
    let (status, answer) = world.signed(&for_number("999999999999999", "read")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"][0]["pending"], true, "{answer}");
    assert_eq!(
        world.delivery_of("wa-second", "wa-second").await.0,
        "delivered"
    );
}
