//! The `sms_twilio` and `whatsapp_twilio` channels: Twilio Programmable Messaging.
//!
//! A message is one request, `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`
//! with HTTP Basic auth (`AccountSid:AuthToken`) and a form-encoded body
//! (`application/x-www-form-urlencoded`):
//!
//! - `To`: the contact's number; on WhatsApp written `whatsapp:+51987654321`;
//! - `From` (the channel's `from`, `whatsapp:`-prefixed on WhatsApp) and/or
//!   `MessagingServiceSid` (the channel's `messaging_service_sid`);
//! - `Body`: the SMS text; on WhatsApp the text, or the media's caption;
//! - `MediaUrl`: a WhatsApp message's media;
//! - `ContentSid` and `ContentVariables`: an approved WhatsApp template, by the template's
//!   `content_sid`. The variables are a JSON object `{"1": ..., "2": ...}` numbering the
//!   template's parameters in order: header, then body, then buttons (a `url:` prefix of a
//!   button parameter dropped);
//! - `StatusCallback`: `{public_url}/v1/inbound/{channel}` when herald knows its public
//!   URL (the channel's `public_url`, else the daemon's `--public-url`, filled in by the
//!   engine): Twilio then posts the message's status changes to herald.
//!
//! The answer is 201 `{"sid": "SM...", "status": "queued", ...}` (the sid is the provider
//! message id), or `{"code", "message", "more_info", "status"}`:
//!
//! - 21610 (the recipient replied STOP to this sender): permanent, and the contact is
//!   opted out of the channel's medium (also when a status callback reports it);
//! - 20429 (too many requests), 20500, 20503, and HTTP 429/5xx: transient;
//! - every other code (invalid number 21211, not a mobile number 21614, WhatsApp's closed
//!   24 h window 63016...) and every other 4xx: permanent.
//!
//! The auth token is sent marked sensitive and never appears in reasons or debug output.
//!
//! Inbound (see [`parse_callback`]): status callbacks and incoming messages, form-encoded,
//! signed in `X-Twilio-Signature` ([`signature_matches`]) over the URL Twilio called and the
//! sorted parameters.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::{ChannelError, SendOutcome, body_excerpt, classify_http, exchange};
use crate::message::{Content, OutboundMessage, WhatsappMessage};
use crate::secrets::SecretResolver;
use crate::spec::channel::{ChannelType, Medium, TwilioSettings};
use crate::store::deliveries::DeliveryStatus;
use crate::webhooks::inbound::{Receipt, Reply};

/// Twilio takes no idempotency key on Messages: a delivery left in `sending` by a crash
/// becomes `unknown`.
pub const HONOURS_IDEMPOTENCY_KEY: bool = false;

pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The header Twilio signs its requests in: base64 of the HMAC-SHA1, keyed with the auth
/// token, of the URL it called followed by each POST parameter's name and value, sorted.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Where herald takes Twilio's callbacks, below its public URL.
pub const INBOUND_PATH: &str = "/v1/inbound/";

/// The empty TwiML answer to an incoming message: herald sends no automatic reply.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// Twilio error codes worth retrying: too many requests, internal error, unavailable.
const TRANSIENT_CODES: [i64; 3] = [20429, 20500, 20503];

/// The recipient unsubscribed (replied STOP) from this sender.
const OPTED_OUT_CODES: [i64; 1] = [21610];

/// Sends through one Twilio account and sender.
pub struct TwilioChannel {
    name: String,
    medium: Medium,
    /// `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`.
    url: Url,
    authorization: HeaderValue,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    status_callback: Option<String>,
    client: reqwest::Client,
    max_in_flight: usize,
}

impl std::fmt::Debug for TwilioChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioChannel")
            .field("name", &self.name)
            .field("medium", &self.medium)
            .field("url", &self.url.as_str())
            .field("from", &self.from)
            .field("messaging_service_sid", &self.messaging_service_sid)
            .finish_non_exhaustive()
    }
}

/// `whatsapp:` before a number that has no such prefix.
fn whatsapp_address(number: &str) -> String {
    let number = number.trim();
    if number.to_ascii_lowercase().starts_with("whatsapp:") {
        number.to_string()
    } else {
        format!("whatsapp:{number}")
    }
}

/// Whether `sid` looks like a Twilio SID of kind `prefix` (two letters and 32 hex digits).
fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.len() == 34 && sid.starts_with(prefix) && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The URL Twilio calls for channel `name` below `public_url`.
pub fn callback_url(public_url: &str, name: &str) -> String {
    format!("{}{INBOUND_PATH}{name}", public_url.trim_end_matches('/'))
}

impl TwilioChannel {
    /// Resolves the auth token, checks the SIDs and URLs and builds the client. No I/O.
    /// `medium` is sms for `sms_twilio`, whatsapp for `whatsapp_twilio`; `block` the
    /// settings block's name, for messages.
    pub fn from_spec(
        name: &str,
        medium: Medium,
        block: &str,
        settings: &TwilioSettings,
        secrets: &SecretResolver,
        max_in_flight: Option<usize>,
    ) -> Result<TwilioChannel, ChannelError> {
        let invalid = |field: &str, reason: String| ChannelError::InvalidSetting {
            channel: name.to_string(),
            field: format!("{block}.{field}"),
            reason,
        };
        let account_sid = settings.account_sid.value.trim();
        if !is_sid(account_sid, "AC") {
            return Err(invalid(
                "account_sid",
                format!("{account_sid:?} is not an Account SID (AC and 32 hex digits)"),
            ));
        }
        let token =
            secrets
                .resolve(&settings.auth_token)
                .map_err(|source| ChannelError::Secret {
                    channel: name.to_string(),
                    field: format!("{block}.auth_token"),
                    source,
                })?;
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{account_sid}:{}", token.expose().trim()));
        let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
            .map_err(|_| invalid("auth_token", "is not a valid header value".into()))?;
        authorization.set_sensitive(true);
        let messaging_service_sid = settings
            .messaging_service_sid
            .as_ref()
            .map(|s| s.value.trim().to_string());
        if let Some(sid) = &messaging_service_sid
            && !is_sid(sid, "MG")
        {
            return Err(invalid(
                "messaging_service_sid",
                format!("{sid:?} is not a Messaging Service SID (MG and 32 hex digits)"),
            ));
        }
        let from = settings.from.as_ref().map(|f| match medium {
            Medium::Whatsapp => whatsapp_address(&f.value),
            _ => f.value.trim().to_string(),
        });
        if from.is_none() && messaging_service_sid.is_none() {
            return Err(invalid(
                "from",
                "Twilio needs a sender: `from` or `messaging_service_sid`".into(),
            ));
        }
        let base = settings
            .base_url
            .as_ref()
            .map_or(DEFAULT_BASE_URL, |b| b.value.as_str())
            .trim_end_matches('/');
        let url = Url::parse(&format!(
            "{base}/2010-04-01/Accounts/{account_sid}/Messages.json"
        ))
        .map_err(|e| invalid("base_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                "base_url",
                format!("must be http:// or https://, not {}://", url.scheme()),
            ));
        }
        let status_callback = match &settings.public_url {
            None => None,
            Some(public) => {
                let callback = callback_url(&public.value, name);
                let parsed = Url::parse(&callback)
                    .map_err(|e| invalid("public_url", format!("not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(invalid(
                        "public_url",
                        format!("must be http:// or https://, not {}://", parsed.scheme()),
                    ));
                }
                Some(callback)
            }
        };
        let client = super::http_client(name, TIMEOUT, TIMEOUT)?;
        Ok(TwilioChannel {
            name: name.to_string(),
            medium,
            url,
            authorization,
            from,
            messaging_service_sid,
            status_callback,
            client,
            max_in_flight: max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT).max(1),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn medium(&self) -> Medium {
        self.medium
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// `sms_twilio` or `whatsapp_twilio`, by the medium.
    pub fn channel_type(&self) -> ChannelType {
        match self.medium {
            Medium::Whatsapp => ChannelType::WhatsappTwilio,
            _ => ChannelType::SmsTwilio,
        }
    }

    /// The form fields of the request for `message` (module docs), in a stable order.
    pub fn form(&self, message: &OutboundMessage) -> Result<Vec<(&'static str, String)>, String> {
        let mut form: Vec<(&'static str, String)> = Vec::new();
        let to = match &message.content {
            Content::Whatsapp(_) => whatsapp_address(&message.to),
            _ => message.to.trim().to_string(),
        };
        form.push(("To", to));
        if let Some(from) = &self.from {
            form.push(("From", from.clone()));
        }
        if let Some(sid) = &self.messaging_service_sid {
            form.push(("MessagingServiceSid", sid.clone()));
        }
        match &message.content {
            Content::Sms(sms) => {
                if sms.text.trim().is_empty() {
                    return Err("an sms needs a text".into());
                }
                form.push(("Body", sms.text.clone()));
                // A URL that rendered empty means no media: Twilio refuses `MediaUrl=`.
                if let Some(url) = sms.media_url.as_ref().filter(|u| !u.trim().is_empty()) {
                    form.push(("MediaUrl", url.trim().to_string()));
                }
            }
            Content::Whatsapp(wa) => form.extend(whatsapp_fields(wa)?),
            other => {
                return Err(format!(
                    "twilio sends sms and whatsapp, not {}",
                    other.medium()
                ));
            }
        }
        if let Some(callback) = &self.status_callback {
            form.push(("StatusCallback", callback.clone()));
        }
        Ok(form)
    }

    /// Sends the message with one Messages API call and classifies the answer (module docs).
    pub async fn send(&self, message: &OutboundMessage) -> SendOutcome {
        let form = match self.form(message) {
            Ok(form) => form,
            Err(reason) => return SendOutcome::permanent(reason),
        };
        let request = self
            .client
            .post(self.url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .form(&form);
        match exchange(request).await {
            Ok(answer) => classify(answer.status, &answer.headers, &answer.body),
            Err(outcome) => outcome,
        }
    }
}

/// The WhatsApp part of the form: a template by its Content SID, or text and media.
/// Buttons and lists exist on Twilio only as Content templates.
fn whatsapp_fields(wa: &WhatsappMessage) -> Result<Vec<(&'static str, String)>, String> {
    let mut fields: Vec<(&'static str, String)> = Vec::new();
    if let Some(template) = &wa.template {
        let sid = template.content_sid.as_deref().ok_or_else(|| {
            format!(
                "template {:?} has no content_sid: whatsapp_twilio sends approved templates by their Twilio Content SID",
                template.name
            )
        })?;
        if wa.media.is_some() {
            // The Cloud API takes a template's media header as `media`; a Twilio Content
            // template carries its media itself, filled by its variables. Sending without
            // the media the author meant would be wrong, so say how to write it instead.
            return Err(format!(
                "template {:?}: whatsapp_twilio takes a Content template's media from the \
                 template itself; remove `media` and pass the URL's variable part in `header`",
                template.name
            ));
        }
        fields.push(("ContentSid", sid.to_string()));
        let values: Vec<&str> = template
            .header
            .iter()
            .chain(&template.body)
            .map(String::as_str)
            .chain(
                template
                    .buttons
                    .iter()
                    .map(|b| b.strip_prefix("url:").unwrap_or(b)),
            )
            .collect();
        if !values.is_empty() {
            let variables: serde_json::Map<String, Value> = values
                .iter()
                .enumerate()
                .map(|(i, v)| ((i + 1).to_string(), Value::String(v.to_string())))
                .collect();
            fields.push(("ContentVariables", Value::Object(variables).to_string()));
        }
        return Ok(fields);
    }
    if !wa.buttons.is_empty() || wa.list.is_some() {
        return Err(
            "whatsapp_twilio sends buttons and lists only as an approved Content template: \
             give the template a `template` with its `content_sid`"
                .into(),
        );
    }
    let text = wa.text.as_deref().filter(|t| !t.trim().is_empty());
    let body = wa
        .media
        .as_ref()
        .and_then(|m| m.caption.as_deref())
        .or(text);
    if body.is_none() && wa.media.is_none() {
        return Err("a whatsapp message needs text, media or a template".into());
    }
    if let Some(body) = body {
        fields.push(("Body", body.to_string()));
    }
    if let Some(media) = &wa.media {
        fields.push(("MediaUrl", media.url.clone()));
    }
    Ok(fields)
}

/// Classifies a Messages API answer (module docs).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> SendOutcome {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() {
        return match answer["sid"].as_str() {
            Some(sid) if !sid.is_empty() => SendOutcome::Sent {
                provider_message_id: Some(sid.to_string()),
            },
            // Without the sid no status callback can ever be matched.
            _ => SendOutcome::permanent(format!("an answer without a sid: {}", body_excerpt(body))),
        };
    }
    let by_status = classify_http(status, headers, body);
    let Some(code) = answer["code"].as_i64() else {
        return by_status;
    };
    let message = answer["message"].as_str().unwrap_or_default();
    let reason = body_excerpt(format!("Twilio error {code}: {message}").as_bytes());
    let retry_after = match &by_status {
        SendOutcome::Transient { retry_after, .. } => *retry_after,
        _ => None,
    };
    if TRANSIENT_CODES.contains(&code) || matches!(by_status, SendOutcome::Transient { .. }) {
        SendOutcome::Transient {
            reason,
            retry_after,
        }
    } else if OPTED_OUT_CODES.contains(&code) {
        SendOutcome::Permanent {
            reason,
            opted_out: true,
        }
    } else {
        SendOutcome::permanent(reason)
    }
}

/// Decodes an `application/x-www-form-urlencoded` body into its pairs, in order (`+` is a
/// space, `%XX` a byte). `Err` when a name or value is not UTF-8 after decoding.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let decode = |part: &[u8]| -> Result<String, String> {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            match part[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < part.len() => {
                    let hex = std::str::from_utf8(&part[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| "the form is not UTF-8".to_string())
    };
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// The `X-Twilio-Signature` of a request to `url` with the POST `params`: base64 of the
/// HMAC-SHA1, keyed with `auth_token`, of the URL followed by each parameter's name and
/// value, sorted by name (then value), with no delimiters.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(signed_mac(auth_token, url, params).finalize().into_bytes())
}

/// The HMAC over the URL and the sorted parameters, ready to finalize or verify.
fn signed_mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<sha1::Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Whether `header` is the signature of a request to `url` with `params`. The comparison
/// is constant-time (`verify_slice`).
pub fn signature_matches(
    auth_token: &str,
    header: &str,
    url: &str,
    params: &[(String, String)],
) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(header.trim()) else {
        return false;
    };
    signed_mac(auth_token, url, params)
        .verify_slice(&given)
        .is_ok()
}

/// What one callback carries, with the idempotency key it is recorded under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An incoming message: `twilio-message-<MessageSid>`.
    Reply { key: String, reply: Reply },
    /// A status callback: `twilio-status-<MessageSid>-<MessageStatus>`.
    Receipt { key: String, receipt: Receipt },
    /// A status herald does not track (queued, sending, sent, accepted...).
    Ignored { status: String },
}

/// Reads a callback's form. A `MessageStatus` other than `received` makes it a status
/// callback: `delivered` and `read` are receipts, `undelivered` and `failed` failed
/// receipts with `ErrorCode` (and `ErrorMessage`, when sent) as the error. Otherwise it is
/// an incoming message: a reply from `From` (without `whatsapp:`), its text the quick
/// reply's `ButtonPayload` when there is one, else `Body`. `Err` names the field.
pub fn parse_callback(params: &[(String, String)]) -> Result<Event, (&'static str, String)> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let sid = get("MessageSid")
        .or(get("SmsSid"))
        .filter(|s| !s.trim().is_empty())
        .ok_or(("MessageSid", "is required".to_string()))?
        .trim();
    match get("MessageStatus").map(str::trim) {
        Some(status) if !status.is_empty() && status != "received" => {
            let delivery_status = match status {
                "delivered" => DeliveryStatus::Delivered,
                "read" => DeliveryStatus::Read,
                "undelivered" | "failed" => DeliveryStatus::Failed,
                _ => {
                    return Ok(Event::Ignored {
                        status: status.to_string(),
                    });
                }
            };
            let error = (delivery_status == DeliveryStatus::Failed).then(|| {
                let code = get("ErrorCode").unwrap_or_default().trim();
                let message = get("ErrorMessage").unwrap_or_default().trim();
                match (code.is_empty(), message.is_empty()) {
                    (false, false) => format!("Twilio error {code}: {message} ({status})"),
                    (false, true) => format!("Twilio error {code} ({status})"),
                    _ => format!("Twilio: {status}"),
                }
            });
            Ok(Event::Receipt {
                key: format!("twilio-status-{sid}-{status}"),
                receipt: Receipt {
                    message_id: sid.to_string(),
                    status: delivery_status,
                    error,
                    at: None,
                    opted_out: get("ErrorCode")
                        .and_then(|c| c.trim().parse::<i64>().ok())
                        .is_some_and(|code| OPTED_OUT_CODES.contains(&code)),
                },
            })
        }
        _ => {
            let from = get("From")
                .filter(|s| !s.trim().is_empty())
                .ok_or(("From", "is required (the sender's number)".to_string()))?;
            let payload = get("ButtonPayload").filter(|p| !p.trim().is_empty());
            let text = payload.or(get("Body")).unwrap_or_default();
            let lower = from.trim().to_ascii_lowercase();
            let from = match lower.strip_prefix("whatsapp:") {
                Some(_) => from.trim()["whatsapp:".len()..].to_string(),
                None => from.trim().to_string(),
            };
            Ok(Event::Reply {
                key: format!("twilio-message-{sid}"),
                reply: Reply {
                    from,
                    text: text.to_string(),
                    received_at: None,
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MediaMessage, ProviderTemplate, SmsMessage};
    use crate::spec::template::MediaType;

    const SID: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn channel(medium: Medium, public_url: Option<&str>) -> TwilioChannel {
        let block = if medium == Medium::Sms {
            "sms_twilio"
        } else {
            "whatsapp_twilio"
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "token\n").unwrap();
        let mut settings = serde_json::json!({
            "account_sid": SID,
            "auth_token": "${file:token}",
            "from": "+15005550006",
        });
        if let Some(url) = public_url {
            settings["public_url"] = serde_json::json!(url);
        }
        let settings: TwilioSettings = serde_json::from_value(settings).unwrap();
        let secrets = SecretResolver::new(dir.path());
        TwilioChannel::from_spec("tw", medium, block, &settings, &secrets, None).unwrap()
    }

    fn message(to: &str, content: Content) -> OutboundMessage {
        OutboundMessage {
            delivery_id: 1,
            idempotency_key: "k".into(),
            run_id: 1,
            campaign: "c".into(),
            channel: "tw".into(),
            contact_id: "c-1".into(),
            to: to.into(),
            content,
            test: false,
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn an_sms_form_has_to_from_body_and_the_status_callback() {
        let c = channel(Medium::Sms, Some("https://herald.example/"));
        let form = c
            .form(&message(
                "+51911111111",
                Content::Sms(SmsMessage {
                    text: "Hola".into(),
                    media_url: None,
                }),
            ))
            .unwrap();
        assert_eq!(
            form,
            vec![
                ("To", "+51911111111".to_string()),
                ("From", "+15005550006".to_string()),
                ("Body", "Hola".to_string()),
                (
                    "StatusCallback",
                    "https://herald.example/v1/inbound/tw".to_string()
                ),
            ]
        );
        // MMS: the media's URL; one that rendered empty is no media (Twilio refuses
        // `MediaUrl=`).
        let mms = |url: &str| {
            c.form(&message(
                "+51911111111",
                Content::Sms(SmsMessage {
                    text: "Hola".into(),
                    media_url: Some(url.into()),
                }),
            ))
            .unwrap()
        };
        assert!(
            mms("https://cdn.example/a.jpg")
                .contains(&("MediaUrl", "https://cdn.example/a.jpg".to_string()))
        );
        assert!(mms("  ").iter().all(|(name, _)| *name != "MediaUrl"));
    }

    #[test]
    fn whatsapp_addresses_media_and_templates() {
        let c = channel(Medium::Whatsapp, None);
        let media = WhatsappMessage {
            text: Some("Tu factura".into()),
            media: Some(MediaMessage {
                media_type: MediaType::Document,
                url: "https://cdn.example/f.pdf".into(),
                caption: None,
                filename: None,
            }),
            ..Default::default()
        };
        let form = c
            .form(&message("+51911111111", Content::Whatsapp(media)))
            .unwrap();
        assert_eq!(
            form,
            vec![
                ("To", "whatsapp:+51911111111".to_string()),
                ("From", "whatsapp:+15005550006".to_string()),
                ("Body", "Tu factura".to_string()),
                ("MediaUrl", "https://cdn.example/f.pdf".to_string()),
            ]
        );
        let template = WhatsappMessage {
            template: Some(ProviderTemplate {
                name: "promo".into(),
                language: "es".into(),
                header: vec!["Ana".into()],
                body: vec!["20%".into()],
                buttons: vec!["url:o/42".into()],
                content_sid: Some("HXb5b62575e6e4ff6129ad7c8efe1f983e".into()),
            }),
            ..Default::default()
        };
        let form = c
            .form(&message(
                "+51911111111",
                Content::Whatsapp(template.clone()),
            ))
            .unwrap();
        assert_eq!(
            form[2],
            (
                "ContentSid",
                "HXb5b62575e6e4ff6129ad7c8efe1f983e".to_string()
            )
        );
        let variables: Value = serde_json::from_str(&form[3].1).unwrap();
        assert_eq!(form[3].0, "ContentVariables");
        assert_eq!(
            variables,
            serde_json::json!({"1": "Ana", "2": "20%", "3": "o/42"})
        );
        let mut with_media = template.clone();
        with_media.media = Some(MediaMessage {
            media_type: MediaType::Document,
            url: "https://cdn.example/f.pdf".into(),
            caption: None,
            filename: None,
        });
        let e = c
            .form(&message("+51911111111", Content::Whatsapp(with_media)))
            .unwrap_err();
        assert!(e.contains("remove `media`"), "{e}");
        let mut no_sid = template;
        no_sid.template.as_mut().unwrap().content_sid = None;
        let e = c
            .form(&message("+51911111111", Content::Whatsapp(no_sid)))
            .unwrap_err();
        assert!(e.contains("content_sid"), "{e}");
    }

    #[test]
    fn twilio_errors_are_classified_by_code_and_status() {
        let none = HeaderMap::new();
        let error = |code: i64, status: u16| {
            serde_json::to_vec(&serde_json::json!({"code": code, "message": "m",
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status}))
            .unwrap()
        };
        let class = |status: u16, body: &[u8]| match classify(
            StatusCode::from_u16(status).unwrap(),
            &none,
            body,
        ) {
            SendOutcome::Sent { .. } => "sent",
            SendOutcome::Transient { .. } => "transient",
            SendOutcome::Permanent {
                opted_out: true, ..
            } => "opted_out",
            SendOutcome::Permanent { .. } => "permanent",
        };
        assert_eq!(class(400, &error(21610, 400)), "opted_out");
        assert_eq!(class(400, &error(21211, 400)), "permanent");
        assert_eq!(class(429, &error(20429, 429)), "transient");
        assert_eq!(class(500, &error(20500, 500)), "transient");
        assert_eq!(class(503, b"<html>busy</html>"), "transient");
        assert_eq!(class(401, &error(20003, 401)), "permanent");
        assert_eq!(
            classify(
                StatusCode::CREATED,
                &none,
                br#"{"sid":"SM1","status":"queued"}"#
            ),
            SendOutcome::Sent {
                provider_message_id: Some("SM1".into())
            }
        );
    }

    /// Twilio's own example (its security docs and TwilioDevEd/api-snippets): the URL,
    /// parameters, token and the signature Twilio computed.
    #[test]
    fn the_signature_reproduces_twilios_documented_example() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        let token = "12345";
        assert_eq!(
            signature(token, url, &params),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert!(signature_matches(
            token,
            "GvWf1cFY/Q7PnoempGyD5oXAezc=",
            url,
            &params
        ));
        assert!(!signature_matches(
            "other",
            "GvWf1cFY/Q7PnoempGyD5oXAezc=",
            url,
            &params
        ));
        assert!(!signature_matches(token, "not base64!", url, &params));
        assert!(!signature_matches(
            token,
            "GvWf1cFY/Q7PnoempGyD5oXAezc=",
            "https://mycompany.com/myapp.php",
            &params
        ));
    }

    #[test]
    fn forms_decode_plus_and_percent_escapes() {
        assert_eq!(
            parse_form(b"Body=Hola+mundo%21&From=whatsapp%3A%2B51911111111&Empty=&Flag").unwrap(),
            pairs(&[
                ("Body", "Hola mundo!"),
                ("From", "whatsapp:+51911111111"),
                ("Empty", ""),
                ("Flag", ""),
            ])
        );
        assert_eq!(parse_form(b"a=%E2%82%AC").unwrap(), pairs(&[("a", "€")]));
        assert_eq!(parse_form(b"a=100%").unwrap(), pairs(&[("a", "100%")]));
        assert!(parse_form(b"a=%FF").is_err());
    }

    #[test]
    fn callbacks_become_receipts_and_replies() {
        let delivered = parse_callback(&pairs(&[
            ("MessageSid", "SM1"),
            ("MessageStatus", "delivered"),
        ]))
        .unwrap();
        let Event::Receipt { key, receipt } = delivered else {
            panic!()
        };
        assert_eq!(key, "twilio-status-SM1-delivered");
        assert_eq!(receipt.status, DeliveryStatus::Delivered);
        let Event::Receipt { receipt, .. } = parse_callback(&pairs(&[
            ("MessageSid", "SM1"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ]))
        .unwrap() else {
            panic!()
        };
        assert_eq!(receipt.status, DeliveryStatus::Failed);
        assert_eq!(
            receipt.error.as_deref(),
            Some("Twilio error 30003 (undelivered)")
        );
        assert_eq!(
            parse_callback(&pairs(&[("MessageSid", "SM1"), ("MessageStatus", "sent")])).unwrap(),
            Event::Ignored {
                status: "sent".into()
            }
        );
        let Event::Reply { key, reply } = parse_callback(&pairs(&[
            ("MessageSid", "SM2"),
            ("From", "whatsapp:+51911111111"),
            ("Body", "Sí"),
            ("ButtonPayload", "YES"),
            ("SmsStatus", "received"),
        ]))
        .unwrap() else {
            panic!()
        };
        assert_eq!(key, "twilio-message-SM2");
        assert_eq!(
            (reply.from.as_str(), reply.text.as_str()),
            ("+51911111111", "YES")
        );
        assert_eq!(
            parse_callback(&pairs(&[("From", "+1"), ("Body", "x")]))
                .unwrap_err()
                .0,
            "MessageSid"
        );
        assert_eq!(
            parse_callback(&pairs(&[("MessageSid", "SM3"), ("Body", "x")]))
                .unwrap_err()
                .0,
            "From"
        );
    }
}
