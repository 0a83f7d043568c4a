//! The `sms_twilio` and `whatsapp_twilio` channels through the real binary, against a fake
//! Twilio Messages API on 127.0.0.1 that checks each request as Twilio documents it (POST
//! /2010-04-01/Accounts/{AccountSid}/Messages.json, HTTP Basic `AccountSid:AuthToken`,
//! form encoding, the fields To, From, MessagingServiceSid, Body, MediaUrl, ContentSid,
//! ContentVariables and StatusCallback) and replays Twilio's documented answers: 201
//! `{"sid": "SM...", "status": "queued", ...}`, 400 21610 (unsubscribed recipient:
//! permanent, opted out), 429 20429 and 500 20500 (retried). Then Twilio's callbacks come
//! back form-encoded with an X-Twilio-Signature computed here from Twilio's description
//! (HMAC-SHA1 of the public URL and the sorted parameters), right, wrong and missing.

#[path = "support/fake.rs"]
mod fake;
#[path = "support/server.rs"]
mod server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use server::{Herald, Scratch};

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";
const MESSAGING_SERVICE_SID: &str = "MG9752274e9e519418a7406176694466fa";
const CONTENT_SID: &str = "HXb5b62575e6e4ff6129ad7c8efe1f983e";
const SMS_FROM: &str = "+15005550006";
const WHATSAPP_FROM: &str = "+14155238886";
/// The sms channel's own `public_url`.
const SMS_PUBLIC_URL: &str = "https://herald.example";
/// The daemon's `--public-url` (with a trailing slash herald must not double).
const DAEMON_PUBLIC_URL: &str = "https://hooks.herald.example/";

/// On SMS: Ana's number works; Luis replied STOP to the sender (21610); Rosa's send hits
/// 429 once, Pedro's 500 once. On WhatsApp every send works.
const ANA: &str = "+51911111111";
const LUIS: &str = "+51922222222";
const ROSA: &str = "+51933333333";
const PEDRO: &str = "+51944444444";
/// The only contact of the channel that sends through a Messaging Service alone.
const EVA: &str = "+51955555555";

/// A request the fake Messages API got.
#[derive(Clone, Debug)]
struct Got {
    method: Method,
    path: String,
    authorization: String,
    content_type: String,
    /// The form as a form decoder (serde_urlencoded, through axum) reads it.
    form: Vec<(String, String)>,
}

impl Got {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.form.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        names
    }
}

struct FakeTwilio {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

fn twilio_error(status: StatusCode, code: i64, message: &str) -> axum::response::Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16()})),
    )
        .into_response()
}

impl FakeTwilio {
    async fn start() -> FakeTwilio {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let app = axum::Router::new().fallback({
            let got = got.clone();
            move |method: Method,
                  uri: Uri,
                  headers: HeaderMap,
                  form: Result<Form<Vec<(String, String)>>, FormRejection>| {
                let got = got.clone();
                async move {
                    let header = |name: &str| fake::header(&headers, name);
                    let form = form.map(|Form(f)| f).unwrap_or_default();
                    let request = Got {
                        method: method.clone(),
                        path: uri.path().to_string(),
                        authorization: header("authorization"),
                        content_type: header("content-type"),
                        form,
                    };
                    let to = request.field("To").unwrap_or_default().to_string();
                    let mut got = got.lock().unwrap();
                    got.push(request.clone());
                    let earlier = got
                        .iter()
                        .filter(|g| g.field("To") == Some(to.as_str()))
                        .count();
                    let basic = base64::engine::general_purpose::STANDARD
                        .encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
                    if request.authorization != format!("Basic {basic}") {
                        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
                    }
                    if method != Method::POST
                        || request.path
                            != format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
                    {
                        return twilio_error(
                            StatusCode::NOT_FOUND,
                            20404,
                            "The requested resource was not found",
                        );
                    }
                    match to.as_str() {
                        LUIS => twilio_error(
                            StatusCode::BAD_REQUEST,
                            21610,
                            "Attempt to send to unsubscribed recipient",
                        ),
                        ROSA if earlier == 1 => twilio_error(
                            StatusCode::TOO_MANY_REQUESTS,
                            20429,
                            "Too Many Requests",
                        ),
                        PEDRO if earlier == 1 => twilio_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            20500,
                            "Internal Server Error",
                        ),
                        _ => {
                            let sid = message_sid(&to, earlier);
                            (
                                StatusCode::CREATED,
                                axum::Json(json!({
                                    "account_sid": ACCOUNT_SID,
                                    "api_version": "2010-04-01",
                                    "body": request.field("Body"),
                                    "date_created": "Thu, 26 Nov 2026 08:00:00 +0000",
                                    "date_sent": null,
                                    "date_updated": "Thu, 26 Nov 2026 08:00:00 +0000",
                                    "direction": "outbound-api",
                                    "error_code": null,
                                    "error_message": null,
                                    "from": request.field("From"),
                                    "messaging_service_sid": request.field("MessagingServiceSid"),
                                    "num_media": "0",
                                    "num_segments": "1",
                                    "price": null,
                                    "price_unit": null,
                                    "sid": sid,
                                    "status": "queued",
                                    "subresource_uris": {"media": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media.json")},
                                    "to": to,
                                    "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"),
                                })),
                            )
                                .into_response()
                        }
                    }
                }
            }
        });
        FakeTwilio {
            addr: fake::serve(app).await,
            got,
        }
    }

    fn got_for(&self, to: &str) -> Vec<Got> {
        fake::matching(&self.got, |g| g.field("To") == Some(to))
    }
}

/// `SM` and 32 hex digits, from the address and the request's rank for it.
fn message_sid(to: &str, rank: usize) -> String {
    let digits: String = to.chars().filter(char::is_ascii_digit).collect();
    let kind = if to.starts_with("whatsapp:") {
        "a"
    } else {
        "0"
    };
    format!("SM{kind}{rank:03}{digits:0>28}")
}

fn site(api: &FakeTwilio) -> String {
    format!(
        r#"apiVersion: herald/v1
kind: Channel
metadata: {{name: sms}}
spec:
  type: sms_twilio
  sms_twilio:
    account_sid: {ACCOUNT_SID}
    auth_token: "${{env:TWILIO_AUTH_TOKEN}}"
    from: "{SMS_FROM}"
    base_url: "http://{addr}"
    public_url: "{SMS_PUBLIC_URL}"
---
apiVersion: herald/v1
kind: Channel
metadata: {{name: sms-mss}}
spec:
  type: sms_twilio
  sms_twilio:
    account_sid: {ACCOUNT_SID}
    auth_token: "${{env:TWILIO_AUTH_TOKEN}}"
    messaging_service_sid: {MESSAGING_SERVICE_SID}
    base_url: "http://{addr}"
---
apiVersion: herald/v1
kind: Segment
metadata: {{name: mss-only}}
spec:
  match: {{field: id, op: eq, value: c-5}}
---
apiVersion: herald/v1
kind: Channel
metadata: {{name: wa}}
spec:
  type: whatsapp_twilio
  whatsapp_twilio:
    account_sid: {ACCOUNT_SID}
    auth_token: "${{env:TWILIO_AUTH_TOKEN}}"
    from: "{WHATSAPP_FROM}"
    messaging_service_sid: {MESSAGING_SERVICE_SID}
    base_url: "http://{addr}/"
---
apiVersion: herald/v1
kind: Template
metadata: {{name: promo-nov}}
spec:
  sms:
    text: "Hola {{{{ contact.name }}}}: 20% este viernes. STOP para salir"
    media_url: "https://cdn.example/promo/{{{{ contact.id }}}}.jpg"
  whatsapp:
    template:
      name: promo_noviembre
      language: es_MX
      body: ["{{{{ contact.name }}}}", "20%"]
      content_sid: {CONTENT_SID}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: invoice}}
spec:
  whatsapp:
    text: "Tu factura, {{{{ contact.name }}}}"
    media: {{type: document, url: "https://cdn.example/f.pdf"}}
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: promo-sms}}
spec:
  audience: {{segment: all-contacts, exclude: [mss-only]}}
  channels: {{strategy: specific, use: [sms]}}
  template: promo-nov
  schedule: {{now: true}}
  consent: not_required
  delivery:
    retry: {{max_attempts: 3, initial_backoff: 1s, max_backoff: 1s}}
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: promo-wa}}
spec:
  audience: {{segment: all-contacts, exclude: [mss-only]}}
  channels: {{strategy: specific, use: [wa]}}
  template: promo-nov
  schedule: {{now: true}}
  consent: not_required
  on_reply:
    - {{match: '^YES$', tag: interested}}
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: invoice}}
spec:
  audience: {{segment: all-contacts, exclude: [mss-only]}}
  channels: {{strategy: specific, use: [wa]}}
  template: invoice
  schedule: {{now: true}}
  consent: not_required
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: promo-mss}}
spec:
  audience: {{segment: mss-only}}
  channels: {{strategy: specific, use: [sms-mss]}}
  template: promo-nov
  schedule: {{now: true}}
  consent: not_required
"#,
        addr = api.addr,
    )
}

struct World {
    herald: Herald,
    api: FakeTwilio,
    _scratch: Scratch,
}

impl World {
    /// herald with the fake, and `--public-url` when given; returns once every send is final.
    async fn start(public_url: Option<&str>) -> World {
        let scratch = Scratch::new();
        let api = FakeTwilio::start().await;
        scratch.write_site("site.yaml", &site(&api));
        let contacts = scratch.write_contacts(&format!(
            "id,name,phone\nc-1,Ana,{ANA}\nc-2,Luis,{LUIS}\nc-3,Rosa,{ROSA}\nc-4,Pedro,{PEDRO}\n\
             c-5,Eva,{EVA}\n"
        ));
        let mut options = scratch
            .options()
            .with_contacts(&contacts)
            .with_env(&[("TWILIO_AUTH_TOKEN", AUTH_TOKEN)]);
        if let Some(url) = public_url {
            options = options.with_args(&["--public-url", url]);
        }
        let world = World {
            herald: options.start(),
            api,
            _scratch: scratch,
        };
        world
            .herald
            .wait_until("every send final", Duration::from_secs(40), || async {
                let mut done = true;
                for (campaign, contact, status) in [
                    ("promo-sms", "c-1", "sent"),
                    ("promo-sms", "c-2", "failed"),
                    ("promo-sms", "c-3", "sent"),
                    ("promo-sms", "c-4", "sent"),
                    ("promo-mss", "c-5", "sent"),
                ] {
                    done &= world.delivery(campaign, contact).await.0 == status;
                }
                for contact in ["c-1", "c-2", "c-3", "c-4"] {
                    done &= world.delivery("promo-wa", contact).await.0 == "sent";
                    done &= world.delivery("invoice", contact).await.0 == "sent";
                }
                done
            })
            .await;
        world
    }

    /// (status, reason, provider_message_id, attempts, delivered_at), or "none".
    async fn delivery(
        &self,
        campaign: &str,
        contact: &str,
    ) -> (String, Option<String>, Option<String>, i64, Option<i64>) {
        match self.herald.delivery(campaign, contact).await {
            Some(d) => (
                d.status,
                d.reason,
                d.provider_message_id,
                d.attempts,
                d.delivered_at,
            ),
            None => ("none".into(), None, None, 0, None),
        }
    }

    /// The read_at of `campaign`'s delivery to `contact`.
    async fn read_at(&self, campaign: &str, contact: &str) -> Option<i64> {
        let delivery = self.herald.delivery(campaign, contact).await;
        delivery.and_then(|d| d.read_at)
    }

    /// A contact's opted_out_at on `medium`.
    async fn opted_out_at(&self, contact: &str, medium: &str) -> Option<i64> {
        let state = self.herald.medium(contact, medium).await;
        state.and_then(|m| m.opted_out_at)
    }

    /// POSTs `params` form-encoded to /v1/inbound/{channel} with `signature` as
    /// X-Twilio-Signature (none: `None`); answers (status, content type, body).
    async fn callback(
        &self,
        channel: &str,
        params: &[(&str, &str)],
        signature: Option<String>,
    ) -> (u16, String, String) {
        let mut request = reqwest::Client::new()
            .post(self.herald.url(&format!("/v1/inbound/{channel}")))
            .form(params);
        if let Some(signature) = signature {
            request = request.header("X-Twilio-Signature", signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = fake::header(response.headers(), "content-type");
        (status, content_type, response.text().await.unwrap())
    }

    /// A callback signed as Twilio signs it for `public_url`.
    async fn signed(
        &self,
        public_url: &str,
        channel: &str,
        params: &[(&str, &str)],
    ) -> (u16, String, String) {
        let url = format!("{}/v1/inbound/{channel}", public_url.trim_end_matches('/'));
        let signature = twilio_signature(AUTH_TOKEN, &url, params);
        self.callback(channel, params, Some(signature)).await
    }
}

/// Twilio's description, written out here rather than taken from herald: the URL, then
/// each parameter's name and value sorted by name, HMAC-SHA1 with the auth token, base64.
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Borrowed pairs of owned form parameters, as `signed` takes them.
fn pairs<'a>(params: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    params.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn sms_goes_out_through_the_messages_api_with_errors_mapped() {
    let world = World::start(None).await;

    let ana = world.api.got_for(ANA);
    assert_eq!(ana.len(), 1, "{ana:?}");
    assert_eq!(ana[0].method, Method::POST);
    assert_eq!(
        ana[0].path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    assert_eq!(ana[0].authorization, format!("Basic {basic}"));
    assert_eq!(ana[0].content_type, "application/x-www-form-urlencoded");
    assert_eq!(
        ana[0].names(),
        vec!["Body", "From", "MediaUrl", "StatusCallback", "To"]
    );
    assert_eq!(ana[0].field("To"), Some(ANA));
    assert_eq!(ana[0].field("From"), Some(SMS_FROM));
    assert_eq!(
        ana[0].field("Body"),
        Some("Hola Ana: 20% este viernes. STOP para salir")
    );
    // MMS: the template's media_url, rendered for the contact.
    assert_eq!(
        ana[0].field("MediaUrl"),
        Some("https://cdn.example/promo/c-1.jpg")
    );
    assert_eq!(
        ana[0].field("StatusCallback"),
        Some("https://herald.example/v1/inbound/sms")
    );
    let (_, _, sid, attempts, _) = world.delivery("promo-sms", "c-1").await;
    assert_eq!(sid, Some(message_sid(ANA, 1)));
    assert_eq!(attempts, 1);

    // 21610: the recipient unsubscribed from the sender; failed, and opted out of sms only.
    assert_eq!(world.api.got_for(LUIS).len(), 1);
    let (_, reason, _, _, _) = world.delivery("promo-sms", "c-2").await;
    let reason = reason.unwrap();
    assert!(reason.contains("21610"), "{reason}");
    assert!(reason.contains("unsubscribed recipient"), "{reason}");
    assert!(world.opted_out_at("c-2", "sms").await.is_some());
    assert_eq!(world.opted_out_at("c-2", "whatsapp").await, None);

    // 429 and 500: retried, then sent.
    for (number, contact) in [(ROSA, "c-3"), (PEDRO, "c-4")] {
        assert_eq!(world.api.got_for(number).len(), 2, "{number}");
        let (status, _, sid, attempts, _) = world.delivery("promo-sms", contact).await;
        assert_eq!(status, "sent");
        assert_eq!(sid, Some(message_sid(number, 2)));
        assert_eq!(attempts, 2);
        assert_eq!(world.opted_out_at(contact, "sms").await, None);
    }

    // A channel with a Messaging Service and no `from`: Twilio picks the sender from the
    // service's pool, so the form names the service and no From at all.
    let eva = world.api.got_for(EVA);
    assert_eq!(eva.len(), 1, "{eva:?}");
    assert_eq!(eva[0].method, Method::POST);
    assert_eq!(
        eva[0].path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert_eq!(eva[0].authorization, format!("Basic {basic}"));
    assert_eq!(eva[0].content_type, "application/x-www-form-urlencoded");
    assert_eq!(
        eva[0].names(),
        vec!["Body", "MediaUrl", "MessagingServiceSid", "To"],
        "no From, and no StatusCallback without a public URL"
    );
    assert_eq!(
        eva[0].field("MessagingServiceSid"),
        Some(MESSAGING_SERVICE_SID)
    );
    assert_eq!(eva[0].field("To"), Some(EVA));
    assert_eq!(
        eva[0].field("Body"),
        Some("Hola Eva: 20% este viernes. STOP para salir")
    );
    let (_, _, sid, _, _) = world.delivery("promo-mss", "c-5").await;
    assert_eq!(sid, Some(message_sid(EVA, 1)));

    assert!(!world.herald.log_text().contains(AUTH_TOKEN));
    assert!(!world.herald.log_text().contains(&basic));
}

#[tokio::test]
async fn whatsapp_goes_out_as_a_content_template_or_text_and_media() {
    let world = World::start(None).await;
    let to = format!("whatsapp:{ANA}");
    let got = world.api.got_for(&to);
    assert_eq!(got.len(), 2, "{got:?}");
    let template = got
        .iter()
        .find(|g| g.field("ContentSid").is_some())
        .expect("the template request");
    assert_eq!(
        template.names(),
        vec![
            "ContentSid",
            "ContentVariables",
            "From",
            "MessagingServiceSid",
            "To"
        ],
        "no Body, and no StatusCallback without a public URL in the channel"
    );
    assert_eq!(template.field("ContentSid"), Some(CONTENT_SID));
    assert_eq!(
        json(template.field("ContentVariables").unwrap()),
        json!({"1": "Ana", "2": "20%"})
    );
    assert_eq!(
        template.field("From"),
        Some(format!("whatsapp:{WHATSAPP_FROM}").as_str())
    );
    assert_eq!(
        template.field("MessagingServiceSid"),
        Some(MESSAGING_SERVICE_SID)
    );
    assert_eq!(template.content_type, "application/x-www-form-urlencoded");

    let media = got
        .iter()
        .find(|g| g.field("MediaUrl").is_some())
        .expect("the media request");
    assert_eq!(media.field("MediaUrl"), Some("https://cdn.example/f.pdf"));
    assert_eq!(media.field("Body"), Some("Tu factura, Ana"));
    assert_eq!(media.field("ContentSid"), None);

    // Luis's opt-out is from the SMS sender: WhatsApp still reaches him.
    assert_eq!(world.delivery("promo-wa", "c-2").await.0, "sent");
}

#[tokio::test]
async fn signed_status_callbacks_move_deliveries_and_others_change_nothing() {
    // The daemon's public URL lets the wa channel (which has none of its own) check
    // signatures; the sms channel keeps signing over its own `public_url`.
    let world = World::start(Some(DAEMON_PUBLIC_URL)).await;
    let events = world.herald.inbound_events().await;
    let ana_sid = message_sid(ANA, 1);
    let delivered = [
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("From", SMS_FROM),
        ("MessageSid", ana_sid.as_str()),
        ("MessageStatus", "delivered"),
        ("SmsSid", ana_sid.as_str()),
        ("SmsStatus", "delivered"),
        ("To", ANA),
    ];

    // Signed with another token, for another URL, or not at all: 401, nothing recorded.
    let url = format!("{SMS_PUBLIC_URL}/v1/inbound/sms");
    let forged = twilio_signature("not-the-auth-token", &url, &delivered);
    let (status, _, body) = world.callback("sms", &delivered, Some(forged)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(json(&body)["error"]["code"], "invalid_signature");
    assert!(!body.contains(AUTH_TOKEN));
    let elsewhere = twilio_signature(AUTH_TOKEN, &world.herald.url("/v1/inbound/sms"), &delivered);
    let (status, _, _) = world.callback("sms", &delivered, Some(elsewhere)).await;
    assert_eq!(status, 401, "the signed URL is the public one");
    let (status, _, _) = world.callback("sms", &delivered, None).await;
    assert_eq!(status, 401);
    let mut tampered = delivered;
    tampered[4] = ("MessageStatus", "read");
    let signature = twilio_signature(AUTH_TOKEN, &url, &delivered);
    let (status, _, _) = world.callback("sms", &tampered, Some(signature)).await;
    assert_eq!(status, 401, "a changed parameter breaks the signature");
    assert_eq!(world.herald.inbound_events().await, events);
    let (status_now, _, _, _, delivered_at) = world.delivery("promo-sms", "c-1").await;
    assert_eq!((status_now.as_str(), delivered_at), ("sent", None));

    // Signed right: sent → delivered; Twilio's repeat changes nothing.
    let (status, _, body) = world.signed(SMS_PUBLIC_URL, "sms", &delivered).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "delivered");
    let (status_now, _, _, _, delivered_at) = world.delivery("promo-sms", "c-1").await;
    assert_eq!(status_now, "delivered");
    assert!(delivered_at.is_some());
    let (status, _, body) = world.signed(SMS_PUBLIC_URL, "sms", &delivered).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["duplicate"], true);

    // `sent` is what herald recorded itself: acknowledged, ignored.
    let rosa_sid = message_sid(ROSA, 2);
    let sent = [
        ("MessageSid", rosa_sid.as_str()),
        ("MessageStatus", "sent"),
        ("To", ROSA),
    ];
    let (status, _, body) = world.signed(SMS_PUBLIC_URL, "sms", &sent).await;
    assert_eq!(
        (status, json(&body)["kind"].clone()),
        (200, json!("ignored"))
    );
    assert_eq!(world.delivery("promo-sms", "c-3").await.0, "sent");

    // undelivered, with Twilio's error code: failed, with the code as the reason.
    let undelivered = [
        ("AccountSid", ACCOUNT_SID),
        ("ErrorCode", "30003"),
        ("MessageSid", rosa_sid.as_str()),
        ("MessageStatus", "undelivered"),
        ("To", ROSA),
    ];
    let (status, _, body) = world.signed(SMS_PUBLIC_URL, "sms", &undelivered).await;
    assert_eq!(status, 200, "{body}");
    let (status_now, reason, _, _, _) = world.delivery("promo-sms", "c-3").await;
    assert_eq!(status_now, "failed");
    assert!(reason.unwrap_or_default().contains("30003"));
    assert_eq!(
        world.opted_out_at("c-3", "sms").await,
        None,
        "30003 is not an opt-out"
    );

    // undelivered with 21610 (Pedro replied STOP after the send was accepted): failed, and
    // Pedro is opted out of sms (not of whatsapp), as when the API answers 21610.
    let pedro_sid = message_sid(PEDRO, 2);
    let stopped = [
        ("AccountSid", ACCOUNT_SID),
        ("ErrorCode", "21610"),
        ("MessageSid", pedro_sid.as_str()),
        ("MessageStatus", "undelivered"),
        ("To", PEDRO),
    ];
    let (status, _, body) = world.signed(SMS_PUBLIC_URL, "sms", &stopped).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(world.delivery("promo-sms", "c-4").await.0, "failed");
    assert!(world.opted_out_at("c-4", "sms").await.is_some());
    assert_eq!(world.opted_out_at("c-4", "whatsapp").await, None);

    // WhatsApp's `read`, as Twilio posts it for a WhatsApp sender: sent → read, skipping
    // delivered; a late `delivered` does not move it back.
    let (_, _, ana_wa_sid, _, _) = world.delivery("promo-wa", "c-1").await;
    let ana_wa_sid = ana_wa_sid.expect("the promo-wa message's sid");
    // Owned (name, value) pairs, since the sid and addresses are built at run time.
    let whatsapp_status = |sid: &str, to: &str, status: &str, error: Option<(&str, &str)>| {
        let mut params = vec![
            ("AccountSid", ACCOUNT_SID.to_string()),
            ("ApiVersion", "2010-04-01".to_string()),
            ("ChannelPrefix", "whatsapp".to_string()),
            ("ChannelToAddress", to.to_string()),
            ("From", format!("whatsapp:{WHATSAPP_FROM}")),
            ("MessageSid", sid.to_string()),
            ("MessageStatus", status.to_string()),
            ("SmsSid", sid.to_string()),
            ("SmsStatus", status.to_string()),
            ("To", format!("whatsapp:{to}")),
        ];
        if let Some((code, message)) = error {
            params.push(("ErrorCode", code.to_string()));
            params.push(("ErrorMessage", message.to_string()));
        }
        params
    };
    let read = whatsapp_status(&ana_wa_sid, ANA, "read", None);
    let (status, _, body) = world.signed(DAEMON_PUBLIC_URL, "wa", &pairs(&read)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "read");
    assert_eq!(world.delivery("promo-wa", "c-1").await.0, "read");
    assert!(world.read_at("promo-wa", "c-1").await.is_some());
    let late = whatsapp_status(&ana_wa_sid, ANA, "delivered", None);
    let (status, _, body) = world.signed(DAEMON_PUBLIC_URL, "wa", &pairs(&late)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        world.delivery("promo-wa", "c-1").await.0,
        "read",
        "a receipt never moves a delivery back"
    );

    // `failed` (Twilio could not send it: here 63016, the WhatsApp window is closed):
    // failed, the code and Twilio's message as the reason; not an opt-out.
    let (_, _, luis_wa_sid, _, _) = world.delivery("invoice", "c-2").await;
    let luis_wa_sid = luis_wa_sid.expect("the invoice message's sid");
    let failed = whatsapp_status(
        &luis_wa_sid,
        LUIS,
        "failed",
        Some((
            "63016",
            "Failed to send freeform message because you are outside the allowed window.",
        )),
    );
    let (status, _, body) = world.signed(DAEMON_PUBLIC_URL, "wa", &pairs(&failed)).await;
    assert_eq!(status, 200, "{body}");
    let (status_now, reason, _, _, _) = world.delivery("invoice", "c-2").await;
    assert_eq!(status_now, "failed");
    let reason = reason.unwrap_or_default();
    assert!(reason.contains("63016"), "{reason}");
    assert!(reason.contains("outside the allowed window"), "{reason}");
    assert_eq!(world.opted_out_at("c-2", "whatsapp").await, None);
    // The invoice's other message (Ana's) is untouched.
    assert_eq!(world.delivery("invoice", "c-1").await.0, "sent");

    // A message id herald has not recorded (yet: Twilio may call back before herald
    // stores the send's answer, and never retries): kept, waiting for it, not refused.
    let unknown = [
        ("MessageSid", "SM00000000000000000000000000000000"),
        ("MessageStatus", "delivered"),
    ];
    let (status, _, body) = world.signed(SMS_PUBLIC_URL, "sms", &unknown).await;
    assert_eq!(status, 200, "{body}");
    let body = json(&body);
    assert_eq!(
        (&body["pending"], &body["delivery_id"], &body["status"]),
        (&json!(true), &Value::Null, &json!("delivered")),
        "{body}"
    );
}

#[tokio::test]
async fn incoming_messages_are_replies_answered_with_empty_twiml() {
    let world = World::start(Some(DAEMON_PUBLIC_URL)).await;
    let incoming = |sid: &'static str, body: &'static str, payload: Option<&'static str>| {
        let mut params = vec![
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", "2010-04-01"),
            ("Body", body),
            ("From", "whatsapp:+51911111111"),
            ("MessageSid", sid),
            ("NumMedia", "0"),
            ("ProfileName", "Ana"),
            ("SmsMessageSid", sid),
            ("SmsSid", sid),
            ("SmsStatus", "received"),
            ("To", "whatsapp:+14155238886"),
            ("WaId", "51911111111"),
        ];
        if let Some(payload) = payload {
            params.push(("ButtonPayload", payload));
            params.push(("ButtonText", "Sí"));
        }
        params
    };

    // The wa channel has no public_url: its sends ask Twilio to call the daemon's
    // --public-url back (no doubled slash); the sms channel keeps its own.
    let wa_sends = world.api.got_for(&format!("whatsapp:{ANA}"));
    assert_eq!(wa_sends.len(), 2, "{wa_sends:?}");
    for send in &wa_sends {
        assert_eq!(
            send.field("StatusCallback"),
            Some("https://hooks.herald.example/v1/inbound/wa"),
            "{send:?}"
        );
    }
    assert_eq!(
        world.api.got_for(ANA)[0].field("StatusCallback"),
        Some("https://herald.example/v1/inbound/sms")
    );

    // The channel has no public_url: the daemon's --public-url is the signed URL.
    let yes = incoming("SM11111111111111111111111111111111", "Sí", Some("YES"));
    let (status, content_type, body) = world.signed(DAEMON_PUBLIC_URL, "wa", &yes).await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>"
    );
    assert_eq!(
        world.herald.tags("c-1").await,
        vec!["interested".to_string()]
    );

    // A wrong signature: 401, and the STOP is not applied.
    let stop = incoming("SM22222222222222222222222222222222", "STOP", None);
    let forged = twilio_signature("guess", "https://hooks.herald.example/v1/inbound/wa", &stop);
    let (status, _, _) = world.callback("wa", &stop, Some(forged)).await;
    assert_eq!(status, 401);
    assert_eq!(world.opted_out_at("c-1", "whatsapp").await, None);

    // Signed: STOP opts Ana out of whatsapp (not of sms).
    let (status, _, body) = world.signed(DAEMON_PUBLIC_URL, "wa", &stop).await;
    assert_eq!(status, 200, "{body}");
    assert!(world.opted_out_at("c-1", "whatsapp").await.is_some());
    assert_eq!(world.opted_out_at("c-1", "sms").await, None);

    // An incoming SMS STOP on the sms channel (signed for its own public_url).
    let sms_stop = [
        ("Body", "Stop"),
        ("From", ROSA),
        ("MessageSid", "SM33333333333333333333333333333333"),
        ("To", SMS_FROM),
    ];
    let (status, _, body) = world.signed(SMS_PUBLIC_URL, "sms", &sms_stop).await;
    assert_eq!(status, 200, "{body}");
    assert!(world.opted_out_at("c-3", "sms").await.is_some());

    // A callback without MessageSid: 422 naming the field.
    let nameless = [("Body", "hola"), ("From", ANA)];
    let (status, _, body) = world.signed(SMS_PUBLIC_URL, "sms", &nameless).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("MessageSid"), "{body}");
}

#[tokio::test]
async fn without_a_public_url_twilio_callbacks_are_refused() {
    let world = World::start(None).await;
    let events = world.herald.inbound_events().await;
    let stop = [
        ("Body", "STOP"),
        ("From", "whatsapp:+51911111111"),
        ("MessageSid", "SM44444444444444444444444444444444"),
    ];
    // Signed for the address herald listens on: still refused, herald cannot know it is
    // the URL Twilio called.
    let signature = twilio_signature(AUTH_TOKEN, &world.herald.url("/v1/inbound/wa"), &stop);
    let (status, _, body) = world.callback("wa", &stop, Some(signature)).await;
    assert_eq!(status, 503, "{body}");
    let message = json(&body)["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("--public-url"), "{message}");
    assert!(message.contains("whatsapp_twilio.public_url"), "{message}");
    assert_eq!(world.herald.inbound_events().await, events);
    assert_eq!(world.opted_out_at("c-1", "whatsapp").await, None);
}
