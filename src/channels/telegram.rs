//! The `telegram` channel: the Telegram Bot API.
//!
//! A message is one request, `POST {base_url}/bot{token}/{method}` with a JSON body:
//!
//! - text only: `sendMessage` `{chat_id, text, parse_mode?, reply_markup?}`;
//! - with media: `sendPhoto` / `sendAudio` / `sendVideo` / `sendDocument`, the media's URL
//!   in `photo` / `audio` / `video` / `document` (Telegram fetches it), the media's caption
//!   (or the text) in `caption`, plus `parse_mode` and `reply_markup`;
//! - buttons become an inline keyboard, one button per row:
//!   `{"inline_keyboard": [[{"text", "url"}], [{"text", "callback_data"}]]}`; a quick reply's
//!   `callback_data` is its `reply` (the text when it has none) and comes back in a
//!   `callback_query` update.
//!
//! The answer is `{"ok": true, "result": {"message_id": N, ...}}`, or `{"ok": false,
//! "error_code", "description", "parameters": {"retry_after"}}`:
//!
//! - 429 (and 5xx): transient, retried no sooner than `parameters.retry_after` seconds;
//! - 403 "bot was blocked by the user" / "user is deactivated": permanent, and the contact
//!   is opted out of telegram;
//! - other 4xx ("chat not found", "bot can't initiate conversation", a bad `parse_mode`
//!   markup): permanent.
//!
//! The bot token is part of the URL: it never appears in a reason (transport errors are
//! reported without their URL) nor in debug output.
//!
//! Inbound updates (see [`parse_update`]): Telegram POSTs each update to the webhook set
//! with `setWebhook`, with the `secret_token` given there in the
//! `X-Telegram-Bot-Api-Secret-Token` header, which must equal the channel's
//! `telegram.webhook_secret`.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde_json::{Value, json};

use super::{ChannelError, SendOutcome, body_excerpt, classify_http, exchange};
use crate::message::{ButtonMessage, Content, OutboundMessage, TelegramMessage};
use crate::secrets::{SecretResolver, SecretString};
use crate::spec::channel::{Medium, ParseMode, TelegramSettings};
use crate::spec::template::MediaType;
use crate::webhooks::inbound::Reply;

/// Telegram has no idempotency key: a re-sent message arrives twice, so a delivery left
/// in `sending` by a crash becomes `unknown`.
pub const HONOURS_IDEMPOTENCY_KEY: bool = false;

/// The default of `max_in_flight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

pub const DEFAULT_BASE_URL: &str = "https://api.telegram.org";

/// The per-request timeout (connect, send and read the answer).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The header Telegram sets on webhook updates to the `secret_token` of `setWebhook`.
pub const SECRET_TOKEN_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Sends through one bot.
pub struct TelegramChannel {
    name: String,
    /// `{base_url}/bot{token}/`: holds the token, so it is never printed.
    api: Url,
    parse_mode: Option<ParseMode>,
    client: reqwest::Client,
    max_in_flight: usize,
}

impl std::fmt::Debug for TelegramChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramChannel")
            .field("name", &self.name)
            .field("parse_mode", &self.parse_mode)
            .finish_non_exhaustive()
    }
}

impl TelegramChannel {
    /// Resolves the bot token, checks `base_url` and builds the HTTP client. No network I/O.
    pub fn from_spec(
        name: &str,
        settings: &TelegramSettings,
        secrets: &SecretResolver,
        max_in_flight: Option<usize>,
    ) -> Result<TelegramChannel, ChannelError> {
        let invalid = |field: &str, reason: String| ChannelError::InvalidSetting {
            channel: name.to_string(),
            field: format!("telegram.{field}"),
            reason,
        };
        let token: SecretString =
            secrets
                .resolve(&settings.bot_token)
                .map_err(|source| ChannelError::Secret {
                    channel: name.to_string(),
                    field: "telegram.bot_token".into(),
                    source,
                })?;
        let token = token.expose().trim();
        // The token goes into the path: refuse what would change the URL's meaning.
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:".contains(&b))
        {
            return Err(invalid(
                "bot_token",
                "is not a bot token (digits, a colon and letters, as @BotFather gives it)".into(),
            ));
        }
        let base = settings
            .base_url
            .as_ref()
            .map_or(DEFAULT_BASE_URL, |b| b.value.as_str())
            .trim_end_matches('/');
        let base_url =
            Url::parse(base).map_err(|e| invalid("base_url", format!("not a URL: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(invalid(
                "base_url",
                format!("must be http:// or https://, not {}://", base_url.scheme()),
            ));
        }
        let api = Url::parse(&format!("{base}/bot{token}/"))
            .map_err(|_| invalid("base_url", "cannot be joined with the bot token".into()))?;
        let client = super::http_client(name, TIMEOUT, TIMEOUT)?;
        Ok(TelegramChannel {
            name: name.to_string(),
            api,
            parse_mode: settings.parse_mode.as_ref().map(|p| p.value),
            client,
            max_in_flight: max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT).max(1),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn medium(&self) -> Medium {
        Medium::Telegram
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Sends the message with one Bot API call and classifies the answer (module docs).
    pub async fn send(&self, message: &OutboundMessage) -> SendOutcome {
        let Content::Telegram(content) = &message.content else {
            return SendOutcome::permanent("not a telegram message");
        };
        let (method, body) = match request(&message.to, content, self.parse_mode) {
            Ok(request) => request,
            Err(reason) => return SendOutcome::permanent(reason),
        };
        let url = self
            .api
            .join(method)
            .expect("a method name is a valid path");
        match exchange(self.client.post(url).json(&body)).await {
            Ok(answer) => classify(&message.to, answer.status, &answer.headers, &answer.body),
            Err(outcome) => outcome,
        }
    }
}

/// The Bot API method and JSON body for `content` to chat `chat_id`.
pub fn request(
    chat_id: &str,
    content: &TelegramMessage,
    parse_mode: Option<ParseMode>,
) -> Result<(&'static str, Value), String> {
    let mut body = serde_json::Map::new();
    body.insert("chat_id".into(), chat_id_value(chat_id));
    let method = match &content.media {
        Some(media) => {
            let (method, field) = match media.media_type {
                MediaType::Image => ("sendPhoto", "photo"),
                MediaType::Audio => ("sendAudio", "audio"),
                MediaType::Video => ("sendVideo", "video"),
                MediaType::Document => ("sendDocument", "document"),
            };
            body.insert(field.into(), Value::String(media.url.clone()));
            if let Some(caption) = media.caption.as_ref().or(content.text.as_ref()) {
                body.insert("caption".into(), Value::String(caption.clone()));
            }
            method
        }
        None => {
            let text = content
                .text
                .as_ref()
                .filter(|t| !t.trim().is_empty())
                .ok_or("a telegram message needs text or media")?;
            body.insert("text".into(), Value::String(text.clone()));
            "sendMessage"
        }
    };
    if let Some(mode) = parse_mode {
        body.insert("parse_mode".into(), json!(mode));
    }
    if !content.buttons.is_empty() {
        body.insert("reply_markup".into(), inline_keyboard(&content.buttons)?);
    }
    Ok((method, Value::Object(body)))
}

/// A numeric chat id goes as a number, an `@channelusername` as a string.
fn chat_id_value(chat_id: &str) -> Value {
    match chat_id.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::String(chat_id.to_string()),
    }
}

#[derive(Serialize)]
struct InlineButton<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_data: Option<&'a str>,
}

/// One button per row. Telegram limits `callback_data` to 1-64 bytes: a longer one is
/// refused here rather than by the API.
fn inline_keyboard(buttons: &[ButtonMessage]) -> Result<Value, String> {
    let mut rows = Vec::with_capacity(buttons.len());
    for button in buttons {
        let inline = match &button.url {
            Some(url) => InlineButton {
                text: &button.text,
                url: Some(url),
                callback_data: None,
            },
            None => {
                let data = button.reply.as_deref().unwrap_or(&button.text);
                if data.is_empty() || data.len() > 64 {
                    return Err(format!(
                        "the button {:?}: its reply must be 1 to 64 bytes for Telegram's callback_data",
                        button.text
                    ));
                }
                InlineButton {
                    text: &button.text,
                    url: None,
                    callback_data: Some(data),
                }
            }
        };
        rows.push(vec![inline]);
    }
    Ok(json!({ "inline_keyboard": rows }))
}

/// Classifies a Bot API answer (module docs). The provider message id is
/// `{chat_id}:{message_id}`: Telegram numbers messages per chat.
pub fn classify(
    chat_id: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> SendOutcome {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() && answer["ok"].as_bool() == Some(true) {
        let id = match &answer["result"]["message_id"] {
            Value::Number(n) => Some(format!("{chat_id}:{n}")),
            _ => None,
        };
        return SendOutcome::Sent {
            provider_message_id: id,
        };
    }
    let description = answer["description"].as_str().unwrap_or_default();
    let reason = if description.is_empty() {
        super::http_reason(status, body)
    } else {
        format!(
            "Telegram {}: {}",
            answer["error_code"]
                .as_u64()
                .unwrap_or(status.as_u16() as u64),
            body_excerpt(description.as_bytes())
        )
    };
    if status.is_success() {
        // 2xx without `ok: true` is not the Bot API: nothing says the message went out.
        return SendOutcome::permanent(format!("an unexpected answer: {reason}"));
    }
    let lower = description.to_lowercase();
    if status == StatusCode::FORBIDDEN
        && (lower.contains("blocked by the user") || lower.contains("user is deactivated"))
    {
        return SendOutcome::Permanent {
            reason,
            opted_out: true,
        };
    }
    match classify_http(status, headers, body) {
        SendOutcome::Transient { retry_after, .. } => SendOutcome::Transient {
            reason,
            retry_after: answer["parameters"]["retry_after"]
                .as_u64()
                .map(Duration::from_secs)
                .or(retry_after),
        },
        SendOutcome::Permanent { .. } => SendOutcome::permanent(reason),
        sent => sent,
    }
}

/// An inbound update, reduced to what herald records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// A text message or a button press (its `callback_data` as the text), from the chat
    /// herald sends to (the contact's telegram address). `update_id` makes repeats
    /// harmless.
    Reply { update_id: i64, reply: Reply },
    /// Anything else (edited messages, stickers, membership changes): acknowledged and
    /// ignored, since Telegram re-sends an update until it gets a 2xx.
    Ignored { update_id: i64 },
}

/// Reads a Bot API `Update`. `Err` names the field that is missing or wrong.
///
/// - `message` with `text`: from `message.chat.id`, at `message.date` (unix seconds);
///   a command addressed to the bot (`/stop@my_bot`) loses its `@my_bot`;
/// - `callback_query` with `data`: from `callback_query.message.chat.id` (else
///   `callback_query.from.id`, the same id in a private chat), now.
pub fn parse_update(update: &Value) -> Result<Update, (&'static str, String)> {
    let update_id = update["update_id"]
        .as_i64()
        .ok_or(("update_id", "is required (an integer)".to_string()))?;
    let id_text = |v: &Value| -> Option<String> {
        match v {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    };
    if let Some(message) = update.get("message").filter(|m| m.is_object()) {
        let Some(text) = message["text"].as_str() else {
            return Ok(Update::Ignored { update_id });
        };
        let from = id_text(&message["chat"]["id"])
            .ok_or(("message.chat.id", "is required".to_string()))?;
        let received_at = match &message["date"] {
            Value::Null => None,
            date => Some(
                date.as_i64()
                    .and_then(|s| jiff::Timestamp::from_second(s).ok())
                    .ok_or(("message.date", "must be unix seconds".to_string()))?,
            ),
        };
        return Ok(Update::Reply {
            update_id,
            reply: Reply {
                from,
                text: without_bot_name(text),
                received_at,
            },
        });
    }
    if let Some(query) = update.get("callback_query").filter(|q| q.is_object()) {
        let Some(data) = query["data"].as_str() else {
            return Ok(Update::Ignored { update_id });
        };
        let from = id_text(&query["message"]["chat"]["id"])
            .or_else(|| id_text(&query["from"]["id"]))
            .ok_or((
                "callback_query.from.id",
                "is required (the chat of the button press)".to_string(),
            ))?;
        return Ok(Update::Reply {
            update_id,
            reply: Reply {
                from,
                text: data.to_string(),
                received_at: None,
            },
        });
    }
    Ok(Update::Ignored { update_id })
}

/// `/stop@my_bot` → `/stop`: in groups, commands name the bot they are for.
fn without_bot_name(text: &str) -> String {
    let trimmed = text.trim();
    if trimmed.starts_with('/')
        && !trimmed.contains(char::is_whitespace)
        && let Some((command, _bot)) = trimmed.split_once('@')
    {
        return command.to_string();
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MediaMessage;

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    #[test]
    fn text_with_buttons_is_a_send_message_with_an_inline_keyboard() {
        let content = TelegramMessage {
            text: Some("<b>Hola</b>".into()),
            media: None,
            buttons: vec![
                ButtonMessage {
                    text: "Ver".into(),
                    url: Some("https://acme.example/p".into()),
                    reply: None,
                },
                ButtonMessage {
                    text: "Sí".into(),
                    url: None,
                    reply: Some("YES".into()),
                },
            ],
        };
        let (method, body) = request("123456789", &content, Some(ParseMode::Html)).unwrap();
        assert_eq!(method, "sendMessage");
        assert_eq!(
            body,
            json!({
                "chat_id": 123456789,
                "text": "<b>Hola</b>",
                "parse_mode": "HTML",
                "reply_markup": {"inline_keyboard": [
                    [{"text": "Ver", "url": "https://acme.example/p"}],
                    [{"text": "Sí", "callback_data": "YES"}]
                ]}
            })
        );
    }

    #[test]
    fn each_media_type_has_its_method_and_field_and_the_text_is_the_caption() {
        for (media_type, method, field) in [
            (MediaType::Image, "sendPhoto", "photo"),
            (MediaType::Audio, "sendAudio", "audio"),
            (MediaType::Video, "sendVideo", "video"),
            (MediaType::Document, "sendDocument", "document"),
        ] {
            let content = TelegramMessage {
                text: Some("caption text".into()),
                media: Some(MediaMessage {
                    media_type,
                    url: "https://cdn.example/f".into(),
                    caption: None,
                    filename: None,
                }),
                buttons: vec![],
            };
            let (m, body) = request("@acme_news", &content, None).unwrap();
            assert_eq!(m, method);
            assert_eq!(
                body,
                json!({"chat_id": "@acme_news", field: "https://cdn.example/f", "caption": "caption text"})
            );
        }
    }

    #[test]
    fn answers_are_classified_as_the_bot_api_documents_them() {
        let none = HeaderMap::new();
        assert_eq!(
            classify(
                "42",
                status(200),
                &none,
                br#"{"ok":true,"result":{"message_id":7,"chat":{"id":42}}}"#
            ),
            SendOutcome::Sent {
                provider_message_id: Some("42:7".into())
            }
        );
        assert_eq!(
            classify(
                "42",
                status(429),
                &none,
                br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 5","parameters":{"retry_after":5}}"#
            ),
            SendOutcome::Transient {
                reason: "Telegram 429: Too Many Requests: retry after 5".into(),
                retry_after: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(
            classify(
                "42",
                status(403),
                &none,
                br#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#
            ),
            SendOutcome::Permanent {
                reason: "Telegram 403: Forbidden: bot was blocked by the user".into(),
                opted_out: true
            }
        );
        let SendOutcome::Permanent { opted_out, .. } = classify(
            "42",
            status(403),
            &none,
            br#"{"ok":false,"error_code":403,"description":"Forbidden: bot can't initiate conversation with a user"}"#,
        ) else {
            panic!("a 403 is permanent")
        };
        assert!(!opted_out, "the user never started the bot: not an opt-out");
        assert!(matches!(
            classify(
                "42",
                status(400),
                &none,
                br#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#
            ),
            SendOutcome::Permanent {
                opted_out: false,
                ..
            }
        ));
        assert!(matches!(
            classify("42", status(502), &none, b"Bad Gateway"),
            SendOutcome::Transient { .. }
        ));
    }

    #[test]
    fn a_message_and_a_button_press_are_replies_from_their_chat() {
        let update = json!({"update_id": 10, "message": {"message_id": 3, "from": {"id": 42},
            "chat": {"id": 42, "type": "private"}, "date": 1_764_000_000, "text": "/stop@acme_bot"}});
        assert_eq!(
            parse_update(&update).unwrap(),
            Update::Reply {
                update_id: 10,
                reply: Reply {
                    from: "42".into(),
                    text: "/stop".into(),
                    received_at: Some(jiff::Timestamp::from_second(1_764_000_000).unwrap())
                }
            }
        );
        let press = json!({"update_id": 11, "callback_query": {"id": "q1", "from": {"id": 42},
            "message": {"message_id": 3, "chat": {"id": 42}}, "data": "YES"}});
        let Update::Reply { reply, .. } = parse_update(&press).unwrap() else {
            panic!("a button press is a reply")
        };
        assert_eq!((reply.from.as_str(), reply.text.as_str()), ("42", "YES"));
        assert_eq!(
            parse_update(&json!({"update_id": 12, "edited_message": {}})).unwrap(),
            Update::Ignored { update_id: 12 }
        );
        assert_eq!(
            parse_update(&json!({"message": {}})).unwrap_err().0,
            "update_id"
        );
        assert_eq!(
            parse_update(&json!({"update_id": 1, "message": {"text": "hi"}}))
                .unwrap_err()
                .0,
            "message.chat.id"
        );
    }
}
