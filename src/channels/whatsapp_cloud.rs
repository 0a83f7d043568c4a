//! The `whatsapp_cloud` channel: Meta's WhatsApp Cloud API (Graph API).
//!
//! A message is one request, `POST {base_url}/{api_version}/{phone_number_id}/messages`
//! with `Authorization: Bearer <access_token>` and a JSON body
//! `{"messaging_product": "whatsapp", "recipient_type": "individual", "to", "type", ...}`:
//!
//! - a template (required outside the 24 h customer-service window): `type: template`,
//!   `template: {name, language: {code}, components}` with a `header` component (text
//!   parameters, or the media as an image/video/document header), a `body` component (text
//!   parameters) and one `button` component per button parameter, by index: a quick-reply
//!   payload (`sub_type: quick_reply`, `{type: payload}`), or, written `url:SUFFIX`, the
//!   dynamic suffix of a URL button (`sub_type: url`, `{type: text}`);
//! - a list: `type: interactive`, `interactive: {type: list, body, action: {button,
//!   sections: [{title, rows: [{id, title, description}]}]}}`;
//! - buttons: reply buttons (`interactive.type: button`, at most 3, `{type: reply, reply:
//!   {id, title}}`, the id being the button's reply), or one URL button (`cta_url`); the
//!   media, if any, as the header;
//! - media by link: `type: image|audio|video|document`, `{link, caption, filename}` (the
//!   text as the caption when the media has none; audio takes no caption);
//! - text: `type: text`, `text: {body, preview_url}`.
//!
//! The answer is `{"messages": [{"id": "wamid..."}]}` (the provider message id), or
//! `{"error": {"message", "type", "code", "error_data": {"details"}, "fbtrace_id"}}`:
//!
//! - codes 130429 (throughput), 131056 (pair rate limit), 131048 (spam rate limit), 80007,
//!   4 and 1/2/131000/131016 (Meta's own trouble), and HTTP 429/5xx: transient;
//! - 131050 (the user stopped marketing messages): permanent, and the contact is opted out
//!   of whatsapp (also when a `failed` status reports it);
//! - 131047 (re-engagement: the 24 h window is closed, send a template), 131026
//!   (undeliverable), 190 (bad token) and every other 4xx: permanent.
//!
//! The access token is sent marked sensitive and never appears in reasons or debug output.
//!
//! Inbound (see [`parse_notification`]): Meta's webhook, verified with
//! `X-Hub-Signature-256` ([`signature_matches`]), carries `statuses` (receipts) and
//! `messages` (replies).

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use super::{ChannelError, SendOutcome, body_excerpt, classify_http, exchange};
use crate::message::{ButtonMessage, Content, MediaMessage, OutboundMessage, WhatsappMessage};
use crate::secrets::SecretResolver;
use crate::spec::channel::{Medium, WhatsappCloudSettings};
use crate::spec::template::MediaType;
use crate::store::deliveries::DeliveryStatus;
use crate::webhooks::inbound::{Receipt, Reply};

/// The Cloud API takes no idempotency key: a delivery left in `sending` by a crash becomes
/// `unknown`.
pub const HONOURS_IDEMPOTENCY_KEY: bool = false;

pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
pub const DEFAULT_API_VERSION: &str = "v21.0";
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The header Meta signs webhook notifications in: `sha256=<hex HMAC-SHA256 of the raw
/// body, keyed with the app secret>`.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Reply buttons WhatsApp shows at most.
const MAX_REPLY_BUTTONS: usize = 3;

/// Graph API error codes worth retrying.
const TRANSIENT_CODES: [i64; 9] = [1, 2, 4, 80007, 130429, 131000, 131016, 131048, 131056];

/// The user stopped marketing messages from the business.
const OPTED_OUT_CODES: [i64; 1] = [131050];

/// Sends through one business phone number.
pub struct WhatsappCloudChannel {
    name: String,
    /// `{base_url}/{api_version}/{phone_number_id}/messages`.
    url: Url,
    authorization: HeaderValue,
    client: reqwest::Client,
    max_in_flight: usize,
}

impl std::fmt::Debug for WhatsappCloudChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsappCloudChannel")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl WhatsappCloudChannel {
    /// Resolves the access token, checks the URL parts and builds the client. No I/O.
    pub fn from_spec(
        name: &str,
        settings: &WhatsappCloudSettings,
        secrets: &SecretResolver,
        max_in_flight: Option<usize>,
    ) -> Result<WhatsappCloudChannel, ChannelError> {
        let invalid = |field: &str, reason: String| ChannelError::InvalidSetting {
            channel: name.to_string(),
            field: format!("whatsapp_cloud.{field}"),
            reason,
        };
        let token =
            secrets
                .resolve(&settings.access_token)
                .map_err(|source| ChannelError::Secret {
                    channel: name.to_string(),
                    field: "whatsapp_cloud.access_token".into(),
                    source,
                })?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.expose().trim()))
            .map_err(|_| invalid("access_token", "is not a valid header value".into()))?;
        authorization.set_sensitive(true);
        let phone_number_id = settings.phone_number_id.value.trim();
        if phone_number_id.is_empty() || !phone_number_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "phone_number_id",
                format!(
                    "{phone_number_id:?} is not a phone number id (digits, from the WhatsApp Manager)"
                ),
            ));
        }
        let version = settings
            .api_version
            .as_ref()
            .map_or(DEFAULT_API_VERSION, |v| v.value.trim());
        if !version.starts_with('v')
            || !version[1..]
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.')
        {
            return Err(invalid(
                "api_version",
                format!("{version:?} is not a Graph API version (e.g. v21.0)"),
            ));
        }
        let base = settings
            .base_url
            .as_ref()
            .map_or(DEFAULT_BASE_URL, |b| b.value.as_str())
            .trim_end_matches('/');
        let url = Url::parse(&format!("{base}/{version}/{phone_number_id}/messages"))
            .map_err(|e| invalid("base_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                "base_url",
                format!("must be http:// or https://, not {}://", url.scheme()),
            ));
        }
        let client = super::http_client(name, TIMEOUT, TIMEOUT)?;
        Ok(WhatsappCloudChannel {
            name: name.to_string(),
            url,
            authorization,
            client,
            max_in_flight: max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT).max(1),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn medium(&self) -> Medium {
        Medium::Whatsapp
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Sends the message with one Graph API call and classifies the answer (module docs).
    pub async fn send(&self, message: &OutboundMessage) -> SendOutcome {
        let Content::Whatsapp(content) = &message.content else {
            return SendOutcome::permanent("not a whatsapp message");
        };
        let body = match request(&message.to, content) {
            Ok(body) => body,
            Err(reason) => return SendOutcome::permanent(reason),
        };
        let request = self
            .client
            .post(self.url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .json(&body);
        match exchange(request).await {
            Ok(answer) => classify(answer.status, &answer.headers, &answer.body),
            Err(outcome) => outcome,
        }
    }
}

/// The JSON body of the messages request for `content` to `to`.
pub fn request(to: &str, content: &WhatsappMessage) -> Result<Value, String> {
    let mut body = serde_json::Map::new();
    body.insert("messaging_product".into(), json!("whatsapp"));
    body.insert("recipient_type".into(), json!("individual"));
    body.insert("to".into(), json!(to));
    let text = content.text.as_deref().filter(|t| !t.trim().is_empty());
    let (kind, payload) = if let Some(template) = &content.template {
        let mut components = Vec::new();
        let text_parameters = |values: &[String]| -> Vec<Value> {
            values
                .iter()
                .map(|v| json!({"type": "text", "text": v}))
                .collect()
        };
        if let Some(media) = &content.media {
            let kind = media_kind(media.media_type);
            components.push(json!({"type": "header", "parameters": [
                {"type": kind, kind: media_object(media)}
            ]}));
        } else if !template.header.is_empty() {
            components
                .push(json!({"type": "header", "parameters": text_parameters(&template.header)}));
        }
        if !template.body.is_empty() {
            components.push(json!({"type": "body", "parameters": text_parameters(&template.body)}));
        }
        for (index, parameter) in template.buttons.iter().enumerate() {
            let component = match parameter.strip_prefix("url:") {
                Some(suffix) => {
                    json!({"type": "button", "sub_type": "url", "index": index.to_string(),
                    "parameters": [{"type": "text", "text": suffix}]})
                }
                None => {
                    json!({"type": "button", "sub_type": "quick_reply", "index": index.to_string(),
                    "parameters": [{"type": "payload", "payload": parameter}]})
                }
            };
            components.push(component);
        }
        let mut template_json =
            json!({"name": template.name, "language": {"code": template.language}});
        if !components.is_empty() {
            template_json["components"] = Value::Array(components);
        }
        ("template", template_json)
    } else if let Some(list) = &content.list {
        let body_text = text.ok_or("a whatsapp list needs a text (its body)")?;
        let sections: Vec<Value> = list
            .sections
            .iter()
            .map(|s| {
                let rows: Vec<Value> = s
                    .rows
                    .iter()
                    .map(|r| {
                        let mut row = json!({"id": r.id, "title": r.title});
                        if let Some(d) = &r.description {
                            row["description"] = json!(d);
                        }
                        row
                    })
                    .collect();
                let mut section = json!({"rows": rows});
                if let Some(t) = &s.title {
                    section["title"] = json!(t);
                }
                section
            })
            .collect();
        let interactive = json!({"type": "list", "body": {"text": body_text},
            "action": {"button": list.button, "sections": sections}});
        ("interactive", interactive)
    } else if !content.buttons.is_empty() {
        let body_text = text.ok_or("whatsapp buttons need a text (the message body)")?;
        let mut interactive = interactive_buttons(body_text, &content.buttons)?;
        if let Some(media) = &content.media {
            if media.media_type == MediaType::Audio {
                return Err("an audio cannot be the header of whatsapp buttons".into());
            }
            let kind = media_kind(media.media_type);
            interactive["header"] = json!({"type": kind, kind: media_object(media)});
        }
        ("interactive", interactive)
    } else if let Some(media) = &content.media {
        let mut object = media_object(media);
        let caption = media.caption.as_deref().or(text);
        match (media.media_type, caption) {
            (MediaType::Audio, Some(_)) => {
                return Err(
                    "whatsapp audio takes no caption or text: send the text in its own message"
                        .into(),
                );
            }
            (_, Some(caption)) => object["caption"] = json!(caption),
            _ => {}
        }
        (media_kind(media.media_type), object)
    } else {
        let text = text.ok_or("a whatsapp message needs text, media, a list or a template")?;
        let preview_url = text.contains("https://") || text.contains("http://");
        ("text", json!({"body": text, "preview_url": preview_url}))
    };
    body.insert("type".into(), json!(kind));
    body.insert(kind.into(), payload);
    Ok(Value::Object(body))
}

fn media_kind(media_type: MediaType) -> &'static str {
    match media_type {
        MediaType::Image => "image",
        MediaType::Audio => "audio",
        MediaType::Video => "video",
        MediaType::Document => "document",
    }
}

/// `{link, filename?}` (a document's file name); the caption is the caller's.
fn media_object(media: &MediaMessage) -> Value {
    let mut object = json!({"link": media.url});
    if let (MediaType::Document, Some(filename)) = (media.media_type, &media.filename) {
        object["filename"] = json!(filename);
    }
    object
}

/// Up to 3 reply buttons (id = the reply), or a single URL button (`cta_url`). WhatsApp
/// cannot mix them.
fn interactive_buttons(body_text: &str, buttons: &[ButtonMessage]) -> Result<Value, String> {
    let urls = buttons.iter().filter(|b| b.url.is_some()).count();
    match (urls, buttons.len()) {
        (0, n) if n <= MAX_REPLY_BUTTONS => {
            let buttons: Vec<Value> = buttons
                .iter()
                .map(|b| json!({"type": "reply", "reply": {"id": b.reply.as_deref().unwrap_or(&b.text), "title": b.text}}))
                .collect();
            Ok(
                json!({"type": "button", "body": {"text": body_text}, "action": {"buttons": buttons}}),
            )
        }
        (0, n) => Err(format!(
            "whatsapp shows at most {MAX_REPLY_BUTTONS} reply buttons, not {n}"
        )),
        (1, 1) => {
            let b = &buttons[0];
            Ok(
                json!({"type": "cta_url", "body": {"text": body_text}, "action": {"name": "cta_url",
                "parameters": {"display_text": b.text, "url": b.url}}}),
            )
        }
        _ => Err(
            "whatsapp takes either reply buttons or one URL button, not both or several URLs"
                .into(),
        ),
    }
}

/// Classifies a Graph API answer (module docs).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> SendOutcome {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() {
        return match answer["messages"][0]["id"].as_str() {
            Some(id) if !id.is_empty() => SendOutcome::Sent {
                provider_message_id: Some(id.to_string()),
            },
            // Without the id no receipt can ever be matched, and nothing proves the send.
            _ => SendOutcome::permanent(format!(
                "an answer without messages[0].id: {}",
                body_excerpt(body)
            )),
        };
    }
    let error = &answer["error"];
    let Some(code) = error["code"].as_i64() else {
        return classify_http(status, headers, body);
    };
    let message = error["message"].as_str().unwrap_or_default();
    let details = error["error_data"]["details"].as_str().unwrap_or_default();
    let mut reason = format!("WhatsApp error {code}: {message}");
    if !details.is_empty() && details != message {
        reason.push_str(" (");
        reason.push_str(details);
        reason.push(')');
    }
    let reason = body_excerpt(reason.as_bytes());
    if TRANSIENT_CODES.contains(&code) {
        let retry_after = match classify_http(status, headers, body) {
            SendOutcome::Transient { retry_after, .. } => retry_after,
            _ => None,
        };
        return SendOutcome::Transient {
            reason,
            retry_after,
        };
    }
    if OPTED_OUT_CODES.contains(&code) {
        return SendOutcome::Permanent {
            reason,
            opted_out: true,
        };
    }
    match classify_http(status, headers, body) {
        SendOutcome::Transient { retry_after, .. } => SendOutcome::Transient {
            reason,
            retry_after,
        },
        _ => SendOutcome::permanent(reason),
    }
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` keyed with
/// `app_secret`. The comparison is constant-time (`verify_slice`).
pub fn signature_matches(app_secret: &str, header: &str, body: &[u8]) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `sha256=<hex>` header for `body` (for tests and fakes).
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()).expect("any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// One thing a notification carries, with the idempotency key it is recorded under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `whatsapp-message-<wamid>`.
    Reply { key: String, reply: Reply },
    /// `whatsapp-status-<wamid>-<status>`.
    Receipt { key: String, receipt: Receipt },
    /// A `sent` status (herald records sent itself), a message type herald does not read
    /// (image, location...), or a change of another field.
    Ignored,
}

/// [`parse_notification_by_number`] without the numbers (tests read events alone).
#[cfg(test)]
pub fn parse_notification(body: &Value) -> Result<Vec<Event>, (&'static str, String)> {
    Ok(parse_notification_by_number(body)?
        .into_iter()
        .map(|(_, event)| event)
        .collect())
}

/// An event and the business phone number (`phone_number_id`) it is for, when given.
pub type NumberedEvent = (Option<String>, Event);

/// Reads a webhook notification: every `entry[].changes[]` whose `field` is `messages`.
/// `statuses[]`: `delivered`, `read` and `failed` (the first `errors[]` as the error) are
/// receipts; `messages[]` of type `text` (`text.body`), `button` (a template quick reply:
/// its `payload`) and `interactive` (`button_reply.id` / `list_reply.id`) are replies,
/// from `+<from>`. `Err` names the field. Each event comes with the business phone number
/// it is for (`value.metadata.phone_number_id`): one Meta app has one callback URL for all
/// its numbers, so a channel's URL also receives what belongs to the app's other numbers.
pub fn parse_notification_by_number(
    body: &Value,
) -> Result<Vec<NumberedEvent>, (&'static str, String)> {
    if body["object"].as_str() != Some("whatsapp_business_account") {
        return Err(("object", "must be whatsapp_business_account".to_string()));
    }
    let entries = body["entry"]
        .as_array()
        .ok_or(("entry", "is required (an array)".to_string()))?;
    let mut events = Vec::new();
    for change in entries
        .iter()
        .flat_map(|e| e["changes"].as_array().into_iter().flatten())
    {
        if change["field"].as_str() != Some("messages") {
            events.push((None, Event::Ignored));
            continue;
        }
        let value = &change["value"];
        let number = value["metadata"]["phone_number_id"]
            .as_str()
            .map(str::to_string);
        for status in value["statuses"].as_array().into_iter().flatten() {
            events.push((number.clone(), status_event(status)?));
        }
        for message in value["messages"].as_array().into_iter().flatten() {
            events.push((number.clone(), message_event(message)?));
        }
    }
    Ok(events)
}

fn unix_time(
    value: &Value,
    field: &'static str,
) -> Result<Option<jiff::Timestamp>, (&'static str, String)> {
    let seconds = match value {
        Value::Null => return Ok(None),
        Value::String(s) => s.parse::<i64>().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    seconds
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(Some)
        .ok_or((field, "must be unix seconds".to_string()))
}

fn status_event(status: &Value) -> Result<Event, (&'static str, String)> {
    let id = status["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or(("statuses.id", "is required (the wamid)".to_string()))?;
    let name = status["status"]
        .as_str()
        .ok_or(("statuses.status", "is required".to_string()))?;
    let delivery_status = match name {
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" => DeliveryStatus::Failed,
        // `sent` is what herald recorded on the API's answer; `deleted` and others change
        // nothing herald tracks.
        _ => return Ok(Event::Ignored),
    };
    let error = status["errors"][0].as_object().map(|e| {
        let code = e.get("code").map(|c| c.to_string()).unwrap_or_default();
        let title = e
            .get("title")
            .or_else(|| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        format!("WhatsApp error {code}: {title}")
    });
    Ok(Event::Receipt {
        key: format!("whatsapp-status-{id}-{name}"),
        receipt: Receipt {
            message_id: id.to_string(),
            status: delivery_status,
            error,
            at: unix_time(&status["timestamp"], "statuses.timestamp")?,
            opted_out: status["errors"][0]["code"]
                .as_i64()
                .is_some_and(|code| OPTED_OUT_CODES.contains(&code)),
        },
    })
}

fn message_event(message: &Value) -> Result<Event, (&'static str, String)> {
    let id = message["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or(("messages.id", "is required (the wamid)".to_string()))?;
    let from = message["from"].as_str().filter(|s| !s.is_empty()).ok_or((
        "messages.from",
        "is required (the sender's WhatsApp number)".to_string(),
    ))?;
    let text = match message["type"].as_str() {
        Some("text") => message["text"]["body"].as_str(),
        Some("button") => message["button"]["payload"]
            .as_str()
            .or(message["button"]["text"].as_str()),
        Some("interactive") => message["interactive"]["button_reply"]["id"]
            .as_str()
            .or(message["interactive"]["list_reply"]["id"].as_str()),
        _ => None,
    };
    let Some(text) = text else {
        return Ok(Event::Ignored);
    };
    // Meta writes the number without its `+`; contacts are stored in E.164.
    let from = if from.starts_with('+') {
        from.to_string()
    } else {
        format!("+{from}")
    };
    Ok(Event::Reply {
        key: format!("whatsapp-message-{id}"),
        reply: Reply {
            from,
            text: text.to_string(),
            received_at: unix_time(&message["timestamp"], "messages.timestamp")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ListMessage, ListRowMessage, ListSectionMessage, ProviderTemplate};

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    fn graph_error(code: i64) -> Vec<u8> {
        serde_json::to_vec(&json!({"error": {"message": "(#x) something", "type": "OAuthException",
            "code": code, "error_data": {"messaging_product": "whatsapp", "details": "details here"},
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"}}))
        .unwrap()
    }

    #[test]
    fn text_media_buttons_list_and_template_bodies() {
        let to = "+51987654321";
        let text = WhatsappMessage {
            text: Some("Hola https://acme.example".into()),
            ..Default::default()
        };
        assert_eq!(
            request(to, &text).unwrap(),
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
                "type": "text", "text": {"body": "Hola https://acme.example", "preview_url": true}})
        );
        let document = WhatsappMessage {
            text: Some("Tu factura".into()),
            media: Some(MediaMessage {
                media_type: MediaType::Document,
                url: "https://cdn.example/f.pdf".into(),
                caption: None,
                filename: Some("factura.pdf".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            request(to, &document).unwrap()["document"],
            json!({"link": "https://cdn.example/f.pdf", "filename": "factura.pdf", "caption": "Tu factura"})
        );
        let buttons = WhatsappMessage {
            text: Some("¿Te interesa?".into()),
            buttons: vec![
                ButtonMessage {
                    text: "Sí".into(),
                    url: None,
                    reply: Some("YES".into()),
                },
                ButtonMessage {
                    text: "No".into(),
                    url: None,
                    reply: None,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            request(to, &buttons).unwrap()["interactive"],
            json!({"type": "button", "body": {"text": "¿Te interesa?"}, "action": {"buttons": [
                {"type": "reply", "reply": {"id": "YES", "title": "Sí"}},
                {"type": "reply", "reply": {"id": "No", "title": "No"}}]}})
        );
        let list = WhatsappMessage {
            text: Some("Elige".into()),
            list: Some(ListMessage {
                button: "Ver".into(),
                sections: vec![ListSectionMessage {
                    title: Some("Planes".into()),
                    rows: vec![ListRowMessage {
                        id: "p1".into(),
                        title: "Básico".into(),
                        description: None,
                    }],
                }],
            }),
            ..Default::default()
        };
        assert_eq!(
            request(to, &list).unwrap()["interactive"],
            json!({"type": "list", "body": {"text": "Elige"}, "action": {"button": "Ver",
                "sections": [{"title": "Planes", "rows": [{"id": "p1", "title": "Básico"}]}]}})
        );
        let template = WhatsappMessage {
            template: Some(ProviderTemplate {
                name: "promo".into(),
                language: "es_MX".into(),
                header: vec!["Ana".into()],
                body: vec!["20%".into(), "viernes".into()],
                buttons: vec!["YES".into(), "url:o/42".into()],
                content_sid: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            request(to, &template).unwrap()["template"],
            json!({"name": "promo", "language": {"code": "es_MX"}, "components": [
                {"type": "header", "parameters": [{"type": "text", "text": "Ana"}]},
                {"type": "body", "parameters": [{"type": "text", "text": "20%"}, {"type": "text", "text": "viernes"}]},
                {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "YES"}]},
                {"type": "button", "sub_type": "url", "index": "1", "parameters": [{"type": "text", "text": "o/42"}]}]})
        );
    }

    #[test]
    fn graph_errors_are_classified_by_code() {
        let none = HeaderMap::new();
        let class = |code: u16, body: &[u8]| match classify(status(code), &none, body) {
            SendOutcome::Sent { .. } => "sent",
            SendOutcome::Transient { .. } => "transient",
            SendOutcome::Permanent {
                opted_out: true, ..
            } => "opted_out",
            SendOutcome::Permanent { .. } => "permanent",
        };
        assert_eq!(class(400, &graph_error(131047)), "permanent");
        assert_eq!(class(400, &graph_error(131026)), "permanent");
        assert_eq!(class(400, &graph_error(130429)), "transient");
        assert_eq!(class(400, &graph_error(131056)), "transient");
        assert_eq!(class(400, &graph_error(131050)), "opted_out");
        assert_eq!(class(401, &graph_error(190)), "permanent");
        assert_eq!(class(503, b"busy"), "transient");
        assert_eq!(
            classify(status(200), &none, br#"{"messaging_product":"whatsapp","contacts":[{"input":"+1","wa_id":"1"}],"messages":[{"id":"wamid.X"}]}"#),
            SendOutcome::Sent { provider_message_id: Some("wamid.X".into()) }
        );
        let SendOutcome::Permanent { reason, .. } =
            classify(status(400), &none, &graph_error(131047))
        else {
            panic!()
        };
        assert_eq!(
            reason,
            "WhatsApp error 131047: (#x) something (details here)"
        );
    }

    #[test]
    fn the_signature_is_an_hmac_of_the_raw_body() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let header = signature("app-secret", body);
        assert!(signature_matches("app-secret", &header, body));
        assert!(!signature_matches("other", &header, body));
        assert!(!signature_matches("app-secret", &header, b"{}"));
        assert!(!signature_matches(
            "app-secret",
            header.trim_start_matches("sha256="),
            body
        ));
        assert!(!signature_matches("app-secret", "sha256=zz", body));
    }

    #[test]
    fn statuses_and_messages_become_receipts_and_replies() {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550000000", "phone_number_id": "106540352242922"},
            "statuses": [
                {"id": "wamid.A", "status": "sent", "timestamp": "1764000000", "recipient_id": "51911111111"},
                {"id": "wamid.A", "status": "failed", "timestamp": "1764000001", "recipient_id": "51911111111",
                 "errors": [{"code": 131026, "title": "Message undeliverable"}]}],
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "51911111111"}],
            "messages": [
                {"from": "51911111111", "id": "wamid.B", "timestamp": "1764000002", "type": "text", "text": {"body": "SI"}},
                {"from": "51911111111", "id": "wamid.C", "timestamp": "1764000003", "type": "interactive",
                 "interactive": {"type": "button_reply", "button_reply": {"id": "YES", "title": "Sí"}}},
                {"from": "51911111111", "id": "wamid.D", "timestamp": "1764000004", "type": "image", "image": {"id": "m"}}]
        }}]}]});
        let events = parse_notification(&body).unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!(events[0], Event::Ignored);
        let Event::Receipt { key, receipt } = &events[1] else {
            panic!()
        };
        assert_eq!(key, "whatsapp-status-wamid.A-failed");
        assert_eq!(receipt.status, DeliveryStatus::Failed);
        assert_eq!(
            receipt.error.as_deref(),
            Some("WhatsApp error 131026: Message undeliverable")
        );
        let Event::Reply { reply, .. } = &events[2] else {
            panic!()
        };
        assert_eq!(
            (reply.from.as_str(), reply.text.as_str()),
            ("+51911111111", "SI")
        );
        let Event::Reply { reply, .. } = &events[3] else {
            panic!()
        };
        assert_eq!(reply.text, "YES");
        assert_eq!(events[4], Event::Ignored);
        assert_eq!(
            parse_notification(&json!({"object": "page"}))
                .unwrap_err()
                .0,
            "object"
        );
    }
}
