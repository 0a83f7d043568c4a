//! The `telegram` channel through the real binary, against a fake Bot API on 127.0.0.1
//! that checks each request as Telegram documents it (POST /bot<token>/<method> for
//! sendMessage, sendPhoto, sendDocument, sendAudio and sendVideo, JSON with chat_id, the
//! text or the media's URL in the field named after it, caption, parse_mode,
//! reply_markup.inline_keyboard) and replays Telegram's documented answers: a 429 with
//! `parameters.retry_after`, a 403 "bot was blocked by the user", a 400 for a request
//! without its text or media, a 404 for any other method, and `{"ok": true, "result":
//! Message}`. Then Bot API updates come back to /v1/inbound/{channel} with the right, a
//! wrong and no secret token header; button presses are answered with an
//! answerCallbackQuery method call in the webhook's answer.

#[path = "support/fake.rs"]
mod fake;
#[path = "support/server.rs"]
mod server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use server::{Herald, Scratch};

const TOKEN: &str = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11";
const WEBHOOK_SECRET: &str = "tg-secret_0123456789";

/// Ana's chat answers 429 (retry after 3 s) once; Luis has blocked the bot; Rosa's works.
const ANA: i64 = 1001;
const LUIS: i64 = 1002;
const ROSA: i64 = 1003;
const RETRY_AFTER_SECONDS: u64 = 3;

/// One chat per media campaign (contact ids `m-<campaign>`), outside the promo's audience
/// so that the chats above keep their request counts.
const PHOTO: i64 = 2001;
const DOCUMENT: i64 = 2002;
const AUDIO: i64 = 2003;
const VIDEO: i64 = 2004;

/// The Bot API methods herald may call, each with the field that must carry the message
/// (the text, or the media's URL for Telegram to fetch).
const METHODS: [(&str, &str); 5] = [
    ("sendMessage", "text"),
    ("sendPhoto", "photo"),
    ("sendDocument", "document"),
    ("sendAudio", "audio"),
    ("sendVideo", "video"),
];

/// A request the fake Bot API got, with when.
#[derive(Clone, Debug)]
struct Got {
    method: Method,
    path: String,
    content_type: String,
    body: Value,
    at: Instant,
}

struct FakeBotApi {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

impl FakeBotApi {
    async fn start() -> FakeBotApi {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let app = axum::Router::new().fallback({
            let got = got.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let got = got.clone();
                async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let chat = body["chat_id"].as_i64().unwrap_or_default();
                    let mut got = got.lock().unwrap();
                    got.push(Got {
                        method: method.clone(),
                        path: uri.path().to_string(),
                        content_type: fake::header(&headers, "content-type"),
                        body: body.clone(),
                        at: Instant::now(),
                    });
                    let earlier = got
                        .iter()
                        .filter(|g| g.body["chat_id"].as_i64() == Some(chat))
                        .count();
                    let called = uri
                        .path()
                        .strip_prefix(&format!("/bot{TOKEN}/"))
                        .and_then(|m| METHODS.iter().find(|(name, _)| *name == m));
                    let Some(&(called, field)) = called.filter(|_| method == Method::POST) else {
                        return (
                            StatusCode::NOT_FOUND,
                            axum::Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})),
                        )
                            .into_response();
                    };
                    // Telegram's own words for a request without its text or media.
                    if body[field].as_str().is_none_or(str::is_empty) {
                        let description = match field {
                            "text" => "Bad Request: message text is empty".to_string(),
                            _ => format!("Bad Request: there is no {field} in the request"),
                        };
                        return (
                            StatusCode::BAD_REQUEST,
                            axum::Json(json!({"ok": false, "error_code": 400, "description": description})),
                        )
                            .into_response();
                    }
                    match chat {
                        ANA if earlier == 1 => (
                            StatusCode::TOO_MANY_REQUESTS,
                            axum::Json(json!({"ok": false, "error_code": 429,
                                "description": format!("Too Many Requests: retry after {RETRY_AFTER_SECONDS}"),
                                "parameters": {"retry_after": RETRY_AFTER_SECONDS}})),
                        )
                            .into_response(),
                        LUIS => (
                            StatusCode::FORBIDDEN,
                            axum::Json(json!({"ok": false, "error_code": 403,
                                "description": "Forbidden: bot was blocked by the user"})),
                        )
                            .into_response(),
                        _ => axum::Json(json!({"ok": true, "result": sent_message(
                            called,
                            500 + earlier as i64,
                            &body,
                        )}))
                        .into_response(),
                    }
                }
            }
        });
        FakeBotApi {
            addr: fake::serve(app).await,
            got,
        }
    }

    fn got_for(&self, chat: i64) -> Vec<Got> {
        fake::matching(&self.got, |g| g.body["chat_id"].as_i64() == Some(chat))
    }
}

/// The Message a send method answers with, as the Bot API documents it: the text, or the
/// media object Telegram made from the URL (with the caption).
fn sent_message(method: &str, message_id: i64, request: &Value) -> Value {
    let mut message = json!({
        "message_id": message_id,
        "from": {"id": 123456, "is_bot": true, "first_name": "Acme", "username": "acme_bot"},
        "chat": {"id": request["chat_id"], "first_name": "X", "type": "private"},
        "date": 1_764_000_000,
    });
    let file = |unique: &str| {
        json!({"file_id": format!("BQACAgEAAxkDAAI{unique}{message_id}"),
        "file_unique_id": format!("AgAD{unique}{message_id}")})
    };
    match method {
        "sendMessage" => message["text"] = request["text"].clone(),
        "sendPhoto" => {
            let mut size = file("p");
            size["width"] = json!(320);
            size["height"] = json!(240);
            message["photo"] = json!([size]);
        }
        "sendDocument" => {
            let mut document = file("d");
            document["file_name"] = json!("f.pdf");
            document["mime_type"] = json!("application/pdf");
            message["document"] = document;
        }
        "sendAudio" => {
            let mut audio = file("a");
            audio["duration"] = json!(12);
            audio["mime_type"] = json!("audio/mpeg");
            message["audio"] = audio;
        }
        _ => {
            let mut video = file("v");
            for (k, v) in [("width", 640), ("height", 360), ("duration", 9)] {
                video[k] = json!(v);
            }
            message["video"] = video;
        }
    }
    if let Some(caption) = request.get("caption") {
        message["caption"] = caption.clone();
    }
    if let Some(markup) = request.get("reply_markup") {
        message["reply_markup"] = markup.clone();
    }
    message
}

fn site(api: &FakeBotApi) -> String {
    format!(
        r#"apiVersion: herald/v1
kind: Channel
metadata: {{name: tg}}
spec:
  type: telegram
  telegram:
    bot_token: "${{env:TG_TOKEN}}"
    webhook_secret: "${{env:TG_WEBHOOK_SECRET}}"
    parse_mode: HTML
    base_url: "http://{addr}"
---
apiVersion: herald/v1
kind: Channel
metadata: {{name: tg-unchecked}}
spec:
  type: telegram
  telegram:
    bot_token: "${{env:TG_TOKEN}}"
    base_url: "http://{addr}"
---
apiVersion: herald/v1
kind: Template
metadata: {{name: hello}}
spec:
  telegram:
    text: "<b>Hola {{{{ contact.name }}}}</b>"
    buttons:
      - {{text: "Ver oferta", url: "https://acme.example/o"}}
      - {{text: "Me interesa", reply: "YES"}}
---
apiVersion: herald/v1
kind: Segment
metadata: {{name: media-chats}}
spec:
  match: {{field: id, op: starts_with, value: "m-"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: photo}}
spec:
  telegram:
    media:
      type: image
      url: "https://cdn.acme.example/p/{{{{ contact.id }}}}.jpg"
      caption: "<b>Oferta</b> para {{{{ contact.name }}}}"
    buttons:
      - {{text: "Comprar", url: "https://acme.example/buy"}}
      - {{text: "Me interesa", reply: "YES"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: document}}
spec:
  telegram:
    text: "Tu factura, {{{{ contact.name }}}}"
    media: {{type: document, url: "https://cdn.acme.example/f/2026-11.pdf", filename: "factura.pdf"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: audio}}
spec:
  telegram:
    text: "Hola {{{{ contact.name }}}}"
    media: {{type: audio, url: "https://cdn.acme.example/a/saludo.mp3", caption: "Escucha, {{{{ contact.name }}}}"}}
    buttons:
      - {{text: "Más", reply: "MORE"}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: video}}
spec:
  telegram:
    media: {{type: video, url: "https://cdn.acme.example/v/demo.mp4"}}
{media_campaigns}---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: promo}}
spec:
  audience: {{segment: all-contacts, exclude: [media-chats]}}
  channels: {{strategy: specific, use: [tg]}}
  template: hello
  schedule: {{now: true}}
  consent: not_required
  delivery:
    retry: {{max_attempts: 3, initial_backoff: 1s, max_backoff: 1s}}
  on_reply:
    - {{match: '^YES$', tag: interested}}
"#,
        addr = api.addr,
        media_campaigns = MEDIA_CAMPAIGNS
            .iter()
            .map(|name| media_campaign(name))
            .collect::<String>(),
    )
}

/// The campaigns that send media, each with its template of the same name to the one
/// contact `m-<name>`.
const MEDIA_CAMPAIGNS: [&str; 4] = ["photo", "document", "audio", "video"];

fn media_campaign(name: &str) -> String {
    format!(
        r#"---
apiVersion: herald/v1
kind: Segment
metadata: {{name: m-{name}}}
spec:
  match: {{field: id, op: eq, value: m-{name}}}
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: {name}}}
spec:
  audience: {{segment: m-{name}}}
  channels: {{strategy: specific, use: [tg]}}
  template: {name}
  schedule: {{now: true}}
  consent: not_required
"#
    )
}

/// How long the tests wait for the messages to go out.
const WAIT: Duration = Duration::from_secs(40);

struct World {
    herald: Herald,
    api: FakeBotApi,
    _scratch: Scratch,
}

impl World {
    async fn start() -> World {
        let scratch = Scratch::new();
        let api = FakeBotApi::start().await;
        scratch.write_site("site.yaml", &site(&api));
        let contacts = scratch.write_contacts(&format!(
            "id,name,telegram\nc-1,Ana,{ANA}\nc-2,Luis,{LUIS}\nc-3,Rosa,{ROSA}\n\
             m-photo,Pia,{PHOTO}\nm-document,Doro,{DOCUMENT}\nm-audio,Aldo,{AUDIO}\n\
             m-video,Vera,{VIDEO}\n"
        ));
        let herald = scratch
            .options()
            .with_contacts(&contacts)
            .with_env(&[("TG_TOKEN", TOKEN), ("TG_WEBHOOK_SECRET", WEBHOOK_SECRET)])
            .start();
        World {
            herald,
            api,
            _scratch: scratch,
        }
    }

    /// (status, reason, provider_message_id, attempts) of the promo delivery to `contact`.
    async fn delivery(&self, contact: &str) -> (String, Option<String>, Option<String>, i64) {
        self.delivery_of("promo", contact).await
    }

    /// (status, reason, provider_message_id, attempts) of `campaign`'s delivery to `contact`.
    async fn delivery_of(
        &self,
        campaign: &str,
        contact: &str,
    ) -> (String, Option<String>, Option<String>, i64) {
        let d = self.herald.planned_delivery(campaign, contact).await;
        (d.status, d.reason, d.provider_message_id, d.attempts)
    }

    /// (opted_out_at, opted_out_source, last_inbound_at) of a contact's telegram.
    async fn telegram_state(&self, contact: &str) -> (Option<i64>, Option<String>, Option<i64>) {
        let m = self
            .herald
            .medium(contact, "telegram")
            .await
            .unwrap_or_default();
        (m.opted_out_at, m.opted_out_source, m.last_inbound_at)
    }

    /// POSTs a Bot API update to the channel's inbound route with `secret` in the
    /// X-Telegram-Bot-Api-Secret-Token header (none with `None`).
    async fn update(&self, channel: &str, update: &Value, secret: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(self.herald.url(&format!("/v1/inbound/{channel}")))
            .header("content-type", "application/json");
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        let response = request.json(update).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn text_update(update_id: i64, chat: i64, text: &str) -> Value {
    json!({"update_id": update_id, "message": {"message_id": 77, "from": {"id": chat, "is_bot": false, "first_name": "X"},
        "chat": {"id": chat, "type": "private"}, "date": jiff::Timestamp::now().as_second(), "text": text}})
}

#[tokio::test]
async fn a_campaign_goes_out_through_the_bot_api_honouring_429_and_blocked_users() {
    let world = World::start().await;
    world
        .herald
        .wait_until(
            "Rosa's message to be sent, Luis's failed and Ana's retried",
            WAIT,
            || async {
                world.delivery("c-3").await.0 == "sent"
                    && world.delivery("c-2").await.0 == "failed"
                    && world.delivery("c-1").await.0 == "sent"
            },
        )
        .await;

    // Rosa: exactly the documented sendMessage request, once.
    let rosa = world.api.got_for(ROSA);
    assert_eq!(rosa.len(), 1, "{rosa:?}");
    assert_eq!(rosa[0].method, Method::POST);
    assert_eq!(rosa[0].path, format!("/bot{TOKEN}/sendMessage"));
    assert!(
        rosa[0].content_type.starts_with("application/json"),
        "{}",
        rosa[0].content_type
    );
    assert_eq!(
        rosa[0].body,
        json!({
            "chat_id": ROSA,
            "text": "<b>Hola Rosa</b>",
            "parse_mode": "HTML",
            "reply_markup": {"inline_keyboard": [
                [{"text": "Ver oferta", "url": "https://acme.example/o"}],
                [{"text": "Me interesa", "callback_data": "YES"}]
            ]}
        })
    );
    let (_, _, id, attempts) = world.delivery("c-3").await;
    assert_eq!(id.as_deref(), Some(&*format!("{ROSA}:501")));
    assert_eq!(attempts, 1);

    // Ana: the 429's retry_after is honoured over the campaign's 1 s backoff.
    let ana = world.api.got_for(ANA);
    assert_eq!(ana.len(), 2, "one 429, then the retry: {ana:?}");
    let waited = ana[1].at - ana[0].at;
    assert!(
        waited >= Duration::from_secs(RETRY_AFTER_SECONDS),
        "the retry came after {waited:?}, sooner than retry_after"
    );
    assert_eq!(ana[0].body, ana[1].body);
    assert_eq!(
        world.delivery("c-1").await.2.as_deref(),
        Some(&*format!("{ANA}:502"))
    );

    // Luis: failed once, not retried, opted out of telegram by the provider.
    let luis = world.api.got_for(LUIS);
    assert_eq!(luis.len(), 1, "a blocked bot is not retried: {luis:?}");
    let (_, reason, _, _) = world.delivery("c-2").await;
    let reason = reason.unwrap();
    assert!(reason.contains("bot was blocked by the user"), "{reason}");
    let (opted_out_at, _, _) = world.telegram_state("c-2").await;
    assert!(opted_out_at.is_some(), "Luis is opted out of telegram");
    assert!(world.telegram_state("c-3").await.0.is_none());

    // The token is in the URL path only: never in reasons or logs.
    assert!(!reason.contains(TOKEN));
    assert!(
        !world.herald.log_text().contains(TOKEN),
        "the bot token leaked into the log"
    );
}

#[tokio::test]
async fn media_go_out_through_send_photo_document_audio_and_video() {
    let world = World::start().await;
    world
        .herald
        .wait_until("the four media messages to be sent", WAIT, || async {
            let mut sent = true;
            for name in MEDIA_CAMPAIGNS {
                sent &= world.delivery_of(name, &format!("m-{name}")).await.0 == "sent";
            }
            sent
        })
        .await;

    let keyboard = json!({"inline_keyboard": [
        [{"text": "Comprar", "url": "https://acme.example/buy"}],
        [{"text": "Me interesa", "callback_data": "YES"}]
    ]});
    let expected = [
        // The media's own caption; the buttons as the inline keyboard, as under a text.
        (
            PHOTO,
            "sendPhoto",
            json!({
                "chat_id": PHOTO,
                "photo": "https://cdn.acme.example/p/m-photo.jpg",
                "caption": "<b>Oferta</b> para Pia",
                "parse_mode": "HTML",
                "reply_markup": keyboard,
            }),
        ),
        // No caption of its own: the template's text is the caption. Telegram takes no
        // file name for a document sent by URL (it names it after the URL), so none goes.
        (
            DOCUMENT,
            "sendDocument",
            json!({
                "chat_id": DOCUMENT,
                "document": "https://cdn.acme.example/f/2026-11.pdf",
                "caption": "Tu factura, Doro",
                "parse_mode": "HTML",
            }),
        ),
        // The media's caption wins over the text, which is not sent.
        (
            AUDIO,
            "sendAudio",
            json!({
                "chat_id": AUDIO,
                "audio": "https://cdn.acme.example/a/saludo.mp3",
                "caption": "Escucha, Aldo",
                "parse_mode": "HTML",
                "reply_markup": {"inline_keyboard": [[{"text": "Más", "callback_data": "MORE"}]]},
            }),
        ),
        // Neither caption nor text: no caption field at all.
        (
            VIDEO,
            "sendVideo",
            json!({
                "chat_id": VIDEO,
                "video": "https://cdn.acme.example/v/demo.mp4",
                "parse_mode": "HTML",
            }),
        ),
    ];
    for (chat, method, body) in expected {
        let got = world.api.got_for(chat);
        assert_eq!(got.len(), 1, "one request for chat {chat}: {got:?}");
        assert_eq!(got[0].method, Method::POST);
        assert_eq!(got[0].path, format!("/bot{TOKEN}/{method}"));
        assert!(
            got[0].content_type.starts_with("application/json"),
            "{}",
            got[0].content_type
        );
        assert_eq!(got[0].body, body, "{method}");
    }
    for (name, chat) in MEDIA_CAMPAIGNS.iter().zip([PHOTO, DOCUMENT, AUDIO, VIDEO]) {
        let (_, _, id, attempts) = world.delivery_of(name, &format!("m-{name}")).await;
        assert_eq!(id.as_deref(), Some(&*format!("{chat}:501")), "{name}");
        assert_eq!(attempts, 1, "{name}");
    }
    assert!(!world.herald.log_text().contains(TOKEN));
}

#[tokio::test]
async fn updates_are_checked_by_their_secret_token_and_recorded_as_replies() {
    let world = World::start().await;
    world
        .herald
        .wait_until("Rosa's and Ana's messages to be sent", WAIT, || async {
            world.delivery("c-3").await.0 == "sent" && world.delivery("c-1").await.0 == "sent"
        })
        .await;
    let events = world.herald.inbound_events().await;

    // Wrong and missing secret tokens: 401, nothing recorded.
    let stop = text_update(9001, ROSA, "/stop");
    let (status, answer) = world.update("tg", &stop, Some("not-the-secret")).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_signature");
    assert!(!answer.to_string().contains(WEBHOOK_SECRET));
    let (status, _) = world.update("tg", &stop, None).await;
    assert_eq!(status, 401);
    // A channel without a webhook_secret takes no updates at all.
    let (status, _) = world
        .update("tg-unchecked", &stop, Some(WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 403);
    assert_eq!(world.herald.inbound_events().await, events);
    assert_eq!(world.telegram_state("c-3").await, (None, None, None));

    // A text message: a reply from the chat's contact.
    let (status, answer) = world
        .update("tg", &text_update(9002, ROSA, "hola"), Some(WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["kind"], "reply");
    assert_eq!(answer["contacts"], json!(["c-3"]));
    assert_eq!(answer["campaign"], "promo");
    assert!(
        world.telegram_state("c-3").await.2.is_some(),
        "last inbound recorded"
    );

    // A button press: its callback_data runs the campaign's on_reply rule.
    let press = json!({"update_id": 9003, "callback_query": {"id": "4382bfdwdsb323b2d9",
        "from": {"id": ANA, "is_bot": false, "first_name": "Ana"},
        "message": {"message_id": 502, "chat": {"id": ANA, "type": "private"}, "date": 1_764_000_000},
        "chat_instance": "-1", "data": "YES"}});
    // The webhook's answer is the answerCallbackQuery call that stops the button's progress
    // indicator, exactly as the Bot API takes a method call in a webhook's answer.
    let answered =
        json!({"method": "answerCallbackQuery", "callback_query_id": "4382bfdwdsb323b2d9"});
    let before = world.herald.inbound_events().await;
    let (status, answer) = world.update("tg", &press, Some(WEBHOOK_SECRET)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, answered);
    assert_eq!(
        world.herald.tags("c-1").await,
        vec!["interested".to_string()]
    );
    assert_eq!(world.herald.inbound_events().await, before + 1);
    assert!(
        world.telegram_state("c-1").await.2.is_some(),
        "the press is recorded as Ana's reply"
    );
    // Telegram re-sends an update it got no 2xx for: the repeat is answered again (the
    // first answer may be what got lost) and changes nothing.
    let (status, answer) = world.update("tg", &press, Some(WEBHOOK_SECRET)).await;
    assert_eq!(status, 200);
    assert_eq!(answer, answered);
    assert_eq!(world.herald.inbound_events().await, before + 1);
    // A press herald has no use for (a game button: no `data`) still stops the spinner.
    let game = json!({"update_id": 9006, "callback_query": {"id": "4382bfdwdsb323b2e0",
        "from": {"id": ANA, "is_bot": false, "first_name": "Ana"},
        "chat_instance": "-1", "game_short_name": "tetris"}});
    let (status, answer) = world.update("tg", &game, Some(WEBHOOK_SECRET)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"method": "answerCallbackQuery", "callback_query_id": "4382bfdwdsb323b2e0"})
    );
    assert_eq!(world.herald.inbound_events().await, before + 1);

    // /stop (also addressed to the bot by name) opts the contact out of telegram.
    let (status, answer) = world
        .update(
            "tg",
            &text_update(9004, ROSA, "/stop@acme_bot"),
            Some(WEBHOOK_SECRET),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["keyword"], "opt_out");
    assert_eq!(answer["opted_out"], json!(["c-3"]));
    let (opted_out_at, source, _) = world.telegram_state("c-3").await;
    assert!(opted_out_at.is_some());
    assert_eq!(source.as_deref(), Some("keyword"));

    // Updates herald has no use for are acknowledged, so Telegram stops re-sending them.
    let edited = json!({"update_id": 9005, "edited_message": {"message_id": 1, "chat": {"id": ROSA}, "date": 1, "text": "x"}});
    let (status, answer) = world.update("tg", &edited, Some(WEBHOOK_SECRET)).await;
    assert_eq!((status, answer["kind"].as_str()), (200, Some("ignored")));

    // A body that is no Update: 422 naming the field.
    let (status, answer) = world
        .update(
            "tg",
            &json!({"message": {"text": "hi"}}),
            Some(WEBHOOK_SECRET),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("update_id"),
        "{answer}"
    );
}
