//! The `webhook` channel: a generic HTTP gateway. herald POSTs one JSON document per
//! message to the configured URL; the gateway delivers it however it likes.
//!
//! The request:
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! Idempotency-Key: <the delivery's idempotency key, stable across retries and restarts>
//! webhook-id: <the same key>                      \
//! webhook-timestamp: <unix seconds of this attempt> } only when `secret` is set
//! webhook-signature: v1,<base64 HMAC-SHA256>      /  (Standard Webhooks)
//! <each configured extra header>
//!
//! {"type":"message","delivery_id":7,"idempotency_key":"…","campaign":"black-friday",
//!  "run_id":3,"channel":"sms-gateway","medium":"sms","to":"+51987654321",
//!  "contact_id":"c-42","content":{"medium":"sms","text":"Hola …"},"test":false}
//! ```
//!
//! `content` is the rendered content for the medium, tagged by `medium` (see
//! [`crate::message::Content`]). The answer:
//!
//! - 2xx: sent. A JSON body's `id` or `message_id` (string or number) becomes the
//!   provider message id, which later status callbacks refer to.
//! - 408, 425, 429, 5xx, timeouts and connection errors: retried later, no sooner than
//!   the response's Retry-After (seconds or HTTP-date).
//! - 3xx (redirects are not followed) and other 4xx: failed, with the status and the start
//!   of the body as the reason. A 4xx whose JSON body has `"opted_out": true` also opts
//!   the contact out of the medium.
//!
//! Receivers must treat the idempotency key as such: the same message may arrive twice
//! (a retry after a timeout, a re-send after a crash), always with the same key.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Serialize;

use super::{ChannelError, SendOutcome, classify_http, exchange};
use crate::message::{Content, OutboundMessage};
use crate::secrets::{SecretResolver, SecretString};
use crate::signing::{self, SigningKey};
use crate::spec::channel::{Medium, WebhookChannelSettings};
use crate::spec::values::parse_duration;

/// The receiver gets the key in `Idempotency-Key` and `webhook-id` and is expected to drop
/// a message whose key it has already processed, so a re-send is harmless.
pub const HONOURS_IDEMPOTENCY_KEY: bool = true;

/// The default of `max_in_flight` (as the Channel schema documents it).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

/// The default per-request timeout (connect, send and read the response).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Headers herald sets itself; a configured header may not replace them.
const RESERVED_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    IDEMPOTENCY_KEY_HEADER,
    signing::HEADER_ID,
    signing::HEADER_TIMESTAMP,
    signing::HEADER_SIGNATURE,
];

/// A configured header's value: written in the spec, or resolved from a secret (sent
/// marked sensitive, so it never shows in debug output).
#[derive(Clone, Debug)]
pub enum HeaderText {
    Plain(String),
    Secret(SecretString),
}

/// The webhook channel's settings with its secrets resolved.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub url: String,
    /// The Standard Webhooks secret (`whsec_<base64>`); requests are signed when set.
    pub secret: Option<SecretString>,
    pub headers: Vec<(String, HeaderText)>,
    pub timeout: Duration,
    pub max_in_flight: usize,
}

impl WebhookConfig {
    /// A configuration with the defaults: no secret, no extra headers, 10 s, 16 in flight.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            secret: None,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    pub fn with_max_in_flight(mut self, max_in_flight: Option<usize>) -> Self {
        self.max_in_flight = max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        self
    }

    /// Reads the spec block, resolving `secret` and every header value written as
    /// `${env:NAME}` / `${file:PATH}`.
    pub fn from_spec(
        channel: &str,
        settings: &WebhookChannelSettings,
        secrets: &SecretResolver,
    ) -> Result<Self, ChannelError> {
        let secret_error = |field: &str| {
            let field = field.to_string();
            move |source| ChannelError::Secret {
                channel: channel.to_string(),
                field,
                source,
            }
        };
        let secret = match &settings.secret {
            Some(s) => Some(secrets.resolve(s).map_err(secret_error("secret"))?),
            None => None,
        };
        let mut headers = Vec::new();
        for (name, value) in &settings.headers {
            let text = value.value.trim();
            let text = if text.starts_with("${") && text.ends_with('}') {
                HeaderText::Secret(
                    secrets
                        .resolve_reference(text)
                        .map_err(secret_error(&format!("headers.{name}")))?,
                )
            } else {
                HeaderText::Plain(value.value.clone())
            };
            headers.push((name.clone(), text));
        }
        let timeout = match &settings.timeout {
            Some(t) => parse_duration(&t.value).map_err(|reason| ChannelError::InvalidSetting {
                channel: channel.to_string(),
                field: "timeout".into(),
                reason,
            })?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(WebhookConfig {
            url: settings.url.value.clone(),
            secret,
            headers,
            timeout,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        })
    }
}

/// POSTs messages to one URL through one pooled HTTP client.
pub struct WebhookChannel {
    name: String,
    medium: Medium,
    url: Url,
    client: reqwest::Client,
    headers: HeaderMap,
    signing_key: Option<SigningKey>,
    max_in_flight: usize,
}

impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("name", &self.name)
            .field("medium", &self.medium)
            .field("url", &self.url.as_str())
            .field("signed", &self.signing_key.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookChannel {
    /// Checks the URL, the headers and the secret, and builds the HTTP client (rustls,
    /// pooled, no redirects, `timeout` per request). No network I/O.
    pub fn new(
        name: &str,
        medium: Medium,
        config: WebhookConfig,
    ) -> Result<WebhookChannel, ChannelError> {
        let invalid = |field: &str, reason: String| ChannelError::InvalidSetting {
            channel: name.to_string(),
            field: field.to_string(),
            reason,
        };
        let url = Url::parse(&config.url).map_err(|e| invalid("url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                "url",
                format!("must be http:// or https://, not {}://", url.scheme()),
            ));
        }
        let mut headers = HeaderMap::new();
        for (header, text) in &config.headers {
            let field = format!("headers.{header}");
            let header_name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| invalid(&field, "not a valid HTTP header name".into()))?;
            if RESERVED_HEADERS.contains(&header_name.as_str()) {
                return Err(invalid(&field, "herald sets this header itself".into()));
            }
            let value = match text {
                HeaderText::Plain(v) => HeaderValue::from_str(v),
                HeaderText::Secret(s) => HeaderValue::from_str(s.expose()).map(|mut v| {
                    v.set_sensitive(true);
                    v
                }),
            }
            .map_err(|_| invalid(&field, "the value is not a valid HTTP header value".into()))?;
            headers.append(header_name, value);
        }
        let signing_key = match &config.secret {
            Some(secret) => Some(
                SigningKey::from_secret(secret.expose())
                    .map_err(|e| invalid("secret", e.to_string()))?,
            ),
            None => None,
        };
        let client = super::http_client(name, config.timeout, config.timeout.min(DEFAULT_TIMEOUT))?;
        Ok(WebhookChannel {
            name: name.to_string(),
            medium,
            url,
            client,
            headers,
            signing_key,
            max_in_flight: config.max_in_flight.max(1),
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

    /// The exact bytes POSTed for `message` (what the signature covers).
    pub fn body(&self, message: &OutboundMessage) -> Result<Vec<u8>, serde_json::Error> {
        // Room for a typical text message at once, rather than growing from 8 bytes.
        let mut body = Vec::with_capacity(512);
        serde_json::to_writer(&mut body, &WebhookBody::new(message, self.medium))?;
        Ok(body)
    }

    /// POSTs the message once and classifies the answer (see the module docs).
    pub async fn send(&self, message: &OutboundMessage) -> SendOutcome {
        let key = message.idempotency_key.as_str();
        // Standard Webhooks forbids `.` in webhook-id: it would make the signed content
        // ambiguous. The engine's keys never contain one; refuse rather than sign badly.
        let key_value = match HeaderValue::from_str(key) {
            Ok(v) if !key.is_empty() && !key.contains('.') => v,
            _ => {
                return SendOutcome::permanent(
                    "the idempotency key is empty, contains '.', or is not a valid header value",
                );
            }
        };
        let body = match self.body(message) {
            Ok(body) => body,
            Err(e) => return SendOutcome::permanent(format!("cannot encode the message: {e}")),
        };
        // Straight into the request's own header map, without a map of our own to copy:
        // `header` appends, which is right because no name here is set twice (a configured
        // header may not use a reserved name).
        let mut request = self.client.post(self.url.clone());
        if !self.headers.is_empty() {
            request = request.headers(self.headers.clone());
        }
        request = request
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(IDEMPOTENCY_KEY_HEADER, key_value.clone());
        if let Some(signing_key) = &self.signing_key {
            let timestamp = jiff::Timestamp::now().as_second();
            let signature = signing::sign(signing_key, key, timestamp, &body);
            request = request
                .header(signing::HEADER_ID, key_value)
                .header(signing::HEADER_TIMESTAMP, HeaderValue::from(timestamp))
                .header(
                    signing::HEADER_SIGNATURE,
                    HeaderValue::from_str(&signature).expect("base64 is a valid header value"),
                );
        }
        let request = request.body(body);
        let answer = match exchange(request).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        let (status, body) = (answer.status, answer.body);
        if status.is_success() {
            return SendOutcome::Sent {
                provider_message_id: answer
                    .body_read
                    .then(|| provider_message_id(&body))
                    .flatten(),
            };
        }
        // A body cut off mid-way gives no usable reason (it is empty); the status decides.
        match classify_http(status, &answer.headers, &body) {
            SendOutcome::Permanent { reason, .. } if says_opted_out(status, &body) => {
                SendOutcome::Permanent {
                    reason,
                    opted_out: true,
                }
            }
            outcome => outcome,
        }
    }
}

/// The documented request body.
#[derive(Serialize)]
struct WebhookBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    delivery_id: i64,
    idempotency_key: &'a str,
    campaign: &'a str,
    run_id: i64,
    channel: &'a str,
    medium: Medium,
    to: &'a str,
    contact_id: &'a str,
    content: &'a Content,
    test: bool,
}

impl<'a> WebhookBody<'a> {
    fn new(message: &'a OutboundMessage, medium: Medium) -> Self {
        WebhookBody {
            kind: "message",
            delivery_id: message.delivery_id,
            idempotency_key: &message.idempotency_key,
            campaign: &message.campaign,
            run_id: message.run_id,
            channel: &message.channel,
            medium,
            to: &message.to,
            contact_id: &message.contact_id,
            content: &message.content,
            test: message.test,
        }
    }
}

/// `id` or `message_id` of a JSON object body, as text.
fn provider_message_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["id", "message_id"]
        .iter()
        .find_map(|field| match value.get(field)? {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

fn says_opted_out(status: StatusCode, body: &[u8]) -> bool {
    status.is_client_error()
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("opted_out")?.as_bool())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_id_comes_from_id_or_message_id() {
        assert_eq!(provider_message_id(br#"{"id":"abc"}"#), Some("abc".into()));
        assert_eq!(
            provider_message_id(br#"{"message_id":42}"#),
            Some("42".into())
        );
        assert_eq!(
            provider_message_id(br#"{"id":"first","message_id":"second"}"#),
            Some("first".into())
        );
        assert_eq!(provider_message_id(b"ok"), None);
        assert_eq!(provider_message_id(br#"{"id":""}"#), None);
    }

    #[test]
    fn a_configured_header_may_not_replace_one_herald_sets() {
        let mut config = WebhookConfig::new("http://127.0.0.1:9/");
        config
            .headers
            .push(("Idempotency-Key".into(), HeaderText::Plain("x".into())));
        let err = WebhookChannel::new("gw", Medium::Sms, config).unwrap_err();
        assert!(err.to_string().contains("headers.Idempotency-Key"), "{err}");
    }

    #[test]
    fn a_url_that_is_not_http_is_refused() {
        let err =
            WebhookChannel::new("gw", Medium::Sms, WebhookConfig::new("ftp://x/")).unwrap_err();
        assert!(err.to_string().contains("http:// or https://"), "{err}");
    }

    #[test]
    fn a_secret_header_value_is_never_shown_in_errors() {
        let mut config = WebhookConfig::new("http://127.0.0.1:9/");
        config.headers.push((
            "Authorization".into(),
            HeaderText::Secret(SecretString::new("Bearer sk\nlive")),
        ));
        let err = WebhookChannel::new("gw", Medium::Sms, config).unwrap_err();
        assert!(!err.to_string().contains("live"), "{err}");
    }
}
