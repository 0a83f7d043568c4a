//! The channel contract: one way for the engine to send a rendered message through any
//! provider, and to learn what happened.
//!
//! A [`Channel`] is an enum over the provider modules (no boxing: `send` is an `async fn`).
//! Every provider answers a send with a [`SendOutcome`]: `Sent` (with the provider's id),
//! `Transient` (try again, perhaps after a delay the provider asked for) or `Permanent`
//! (do not retry; perhaps the recipient opted out). A channel also says whether it honours
//! the delivery's idempotency key, which decides crash recovery (DESIGN.md 4.4):
//!
//! - `honours_idempotency_key() == true` (webhook): a delivery left in `sending` by a crash
//!   is sent again with the same key; the receiver drops the duplicate.
//! - `false` (outbox): such a delivery is marked `unknown` and reported, never re-sent.
//!
//! Durability: `Sent` from [`Channel::send`] means the provider accepted the message, except
//! for channels that batch their writes (the outbox), where it means "accepted into the
//! pending batch". The engine therefore calls [`Channel::flush`] after each batch of sends
//! and records `sent` in the store only once `flush` has returned `Ok`, so `sent` in the
//! store never precedes the bytes on disk. `flush` is a no-op for HTTP channels.
//!
//! Rate limits are not here: the engine applies the channel's and the campaign's `rate`.
//! A channel only says how many requests it wants in flight ([`Channel::max_in_flight`]).

pub mod email_smtp;
pub mod outbox;
pub mod telegram;
pub mod twilio;
pub mod webhook;
pub mod whatsapp_cloud;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::message::OutboundMessage;
use crate::secrets::{SecretError, SecretResolver};
use crate::spec::channel::{ChannelSpec, ChannelType, Medium};

/// What became of one send. The engine maps it to the delivery's next status:
/// `sent`, `retry` (with backoff, never sooner than `retry_after`) or `failed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider accepted the message (for the outbox: it is in the pending batch,
    /// durable after the next successful [`Channel::flush`]).
    Sent { provider_message_id: Option<String> },
    /// Worth retrying: timeouts, connection errors, 408/425/429/5xx. `retry_after` is the
    /// provider's own request (Retry-After), when it made one.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying will not help. `opted_out`: the provider says the recipient unsubscribed
    /// or blocked the sender; the engine then opts the contact out of the medium.
    Permanent { reason: String, opted_out: bool },
}

impl SendOutcome {
    pub fn transient(reason: impl Into<String>) -> Self {
        SendOutcome::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        SendOutcome::Permanent {
            reason: reason.into(),
            opted_out: false,
        }
    }
}

/// Why a channel could not be built, or its pending writes could not be made durable.
/// Messages name the channel and the field, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel type {} is not available yet", .0.as_str())]
    NotAvailable(ChannelType),
    #[error("channel {channel}: type {} needs a `{}:` block with its settings", .channel_type.as_str(), .channel_type.as_str())]
    MissingSettings {
        channel: String,
        channel_type: ChannelType,
    },
    #[error("channel {channel}: type {} needs a `medium` (sms, whatsapp, telegram or email)", .channel_type.as_str())]
    MissingMedium {
        channel: String,
        channel_type: ChannelType,
    },
    #[error("channel {channel}: `{field}`: {source}")]
    Secret {
        channel: String,
        field: String,
        #[source]
        source: SecretError,
    },
    #[error("channel {channel}: `{field}`: {reason}")]
    InvalidSetting {
        channel: String,
        field: String,
        reason: String,
    },
    #[error("channel {channel}: the outbox file {}: {source}", path.display())]
    Outbox {
        channel: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("channel {channel}: cannot set up the HTTP client: {reason}")]
    HttpClient { channel: String, reason: String },
}

/// A configured sending account, ready to send.
#[derive(Debug)]
pub enum Channel {
    Outbox(outbox::OutboxChannel),
    Webhook(webhook::WebhookChannel),
    Telegram(telegram::TelegramChannel),
    WhatsappCloud(whatsapp_cloud::WhatsappCloudChannel),
    EmailSmtp(email_smtp::EmailSmtpChannel),
    Twilio(twilio::TwilioChannel),
}

impl Channel {
    /// Sends one message. Never panics and never returns an error: every failure is a
    /// classified outcome. A message whose content is for another medium than the
    /// channel's is refused as permanent (the engine should never produce one).
    pub async fn send(&self, message: &OutboundMessage) -> SendOutcome {
        let content_medium = message.content.medium();
        if content_medium != self.medium() {
            return SendOutcome::permanent(format!(
                "content for {content_medium} cannot go through channel {} ({})",
                self.name(),
                self.medium()
            ));
        }
        match self {
            Channel::Outbox(c) => c.send(message).await,
            Channel::Webhook(c) => c.send(message).await,
            Channel::Telegram(c) => c.send(message).await,
            Channel::WhatsappCloud(c) => c.send(message).await,
            Channel::EmailSmtp(c) => c.send(message).await,
            Channel::Twilio(c) => c.send(message).await,
        }
    }

    /// Contact `contact_id`'s unsubscribe link on this channel, for `{{ unsubscribe_url }}`
    /// in templates: e-mail channels with a public URL and a key have one, others none.
    pub fn unsubscribe_url(&self, contact_id: &str) -> Option<String> {
        match self {
            Channel::EmailSmtp(c) => c.unsubscribe_url(contact_id),
            _ => None,
        }
    }

    /// Makes every message sent so far durable where the channel batches writes (the
    /// outbox: write and fsync the pending lines). The engine calls it after each batch,
    /// before recording `sent`, and on shutdown. On `Err`, the batch's `Sent` outcomes are
    /// not known to be durable: call `flush` again, and if it keeps failing record those
    /// deliveries as `unknown`, never as `sent`.
    pub async fn flush(&self) -> Result<(), ChannelError> {
        match self {
            Channel::Outbox(c) => c.flush().await,
            Channel::Webhook(_) | Channel::Telegram(_) | Channel::WhatsappCloud(_) => Ok(()),
            Channel::EmailSmtp(_) | Channel::Twilio(_) => Ok(()),
        }
    }

    /// Whether a re-send with the same idempotency key is harmless (crash recovery re-sends
    /// such deliveries; the others become `unknown`).
    pub fn honours_idempotency_key(&self) -> bool {
        match self {
            Channel::Outbox(_) => outbox::HONOURS_IDEMPOTENCY_KEY,
            Channel::Webhook(_) => webhook::HONOURS_IDEMPOTENCY_KEY,
            Channel::Telegram(_) => telegram::HONOURS_IDEMPOTENCY_KEY,
            Channel::WhatsappCloud(_) => whatsapp_cloud::HONOURS_IDEMPOTENCY_KEY,
            Channel::EmailSmtp(_) => email_smtp::HONOURS_IDEMPOTENCY_KEY,
            Channel::Twilio(_) => twilio::HONOURS_IDEMPOTENCY_KEY,
        }
    }

    /// Requests at once on this channel: the spec's `max_in_flight`, else the type's default
    /// ([`outbox::DEFAULT_MAX_IN_FLIGHT`], [`webhook::DEFAULT_MAX_IN_FLIGHT`],
    /// [`telegram::DEFAULT_MAX_IN_FLIGHT`], [`whatsapp_cloud::DEFAULT_MAX_IN_FLIGHT`]).
    pub fn max_in_flight(&self) -> usize {
        match self {
            Channel::Outbox(c) => c.max_in_flight(),
            Channel::Webhook(c) => c.max_in_flight(),
            Channel::Telegram(c) => c.max_in_flight(),
            Channel::WhatsappCloud(c) => c.max_in_flight(),
            Channel::EmailSmtp(c) => c.max_in_flight(),
            Channel::Twilio(c) => c.max_in_flight(),
        }
    }

    pub fn medium(&self) -> Medium {
        match self {
            Channel::Outbox(c) => c.medium(),
            Channel::Webhook(c) => c.medium(),
            Channel::Telegram(c) => c.medium(),
            Channel::WhatsappCloud(c) => c.medium(),
            Channel::EmailSmtp(c) => c.medium(),
            Channel::Twilio(c) => c.medium(),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Channel::Outbox(c) => c.name(),
            Channel::Webhook(c) => c.name(),
            Channel::Telegram(c) => c.name(),
            Channel::WhatsappCloud(c) => c.name(),
            Channel::EmailSmtp(c) => c.name(),
            Channel::Twilio(c) => c.name(),
        }
    }

    pub fn channel_type(&self) -> ChannelType {
        match self {
            Channel::Outbox(_) => ChannelType::Outbox,
            Channel::Webhook(_) => ChannelType::Webhook,
            Channel::Telegram(_) => ChannelType::Telegram,
            Channel::WhatsappCloud(_) => ChannelType::WhatsappCloud,
            Channel::EmailSmtp(_) => ChannelType::EmailSmtp,
            Channel::Twilio(c) => c.channel_type(),
        }
    }
}

/// The HTTP client of a provider channel: its timeout for the whole request and for the
/// connection (`connect` at most), redirects never followed (a redirect would re-send the
/// credentials elsewhere), herald's user agent. The error names the channel, not a URL.
pub(crate) fn http_client(
    name: &str,
    timeout: std::time::Duration,
    connect: std::time::Duration,
) -> Result<reqwest::Client, ChannelError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ChannelError::HttpClient {
            channel: name.to_string(),
            reason: e.without_url().to_string(),
        })
}

/// Builds the channel `name` from its spec, resolving its secrets. Provider types that
/// have no module yet are refused with [`ChannelError::NotAvailable`]. Does no network I/O;
/// the outbox opens (and creates) its file.
pub fn build(
    name: &str,
    spec: &ChannelSpec,
    secrets: &SecretResolver,
) -> Result<Channel, ChannelError> {
    let channel_type = spec.channel_type.value;
    let max_in_flight = spec
        .max_in_flight
        .as_ref()
        .map(|n| n.value as usize)
        .filter(|n| *n > 0);
    let missing_settings = || ChannelError::MissingSettings {
        channel: name.to_string(),
        channel_type,
    };
    let medium = || {
        spec.medium().ok_or_else(|| ChannelError::MissingMedium {
            channel: name.to_string(),
            channel_type,
        })
    };
    match channel_type {
        ChannelType::Outbox => {
            let settings = spec.outbox.as_ref().ok_or_else(missing_settings)?;
            let channel = outbox::OutboxChannel::open(
                name,
                medium()?,
                std::path::Path::new(&settings.path.value),
                max_in_flight,
            )?;
            Ok(Channel::Outbox(channel))
        }
        ChannelType::Webhook => {
            let settings = spec.webhook.as_ref().ok_or_else(missing_settings)?;
            let config = webhook::WebhookConfig::from_spec(name, settings, secrets)?;
            let channel = webhook::WebhookChannel::new(
                name,
                medium()?,
                config.with_max_in_flight(max_in_flight),
            )?;
            Ok(Channel::Webhook(channel))
        }
        ChannelType::Telegram => {
            let settings = spec.telegram.as_ref().ok_or_else(missing_settings)?;
            let channel =
                telegram::TelegramChannel::from_spec(name, settings, secrets, max_in_flight)?;
            Ok(Channel::Telegram(channel))
        }
        ChannelType::WhatsappCloud => {
            let settings = spec.whatsapp_cloud.as_ref().ok_or_else(missing_settings)?;
            let channel = whatsapp_cloud::WhatsappCloudChannel::from_spec(
                name,
                settings,
                secrets,
                max_in_flight,
            )?;
            Ok(Channel::WhatsappCloud(channel))
        }
        ChannelType::EmailSmtp => {
            let settings = spec.email_smtp.as_ref().ok_or_else(missing_settings)?;
            let channel =
                email_smtp::EmailSmtpChannel::from_spec(name, settings, secrets, max_in_flight)?;
            Ok(Channel::EmailSmtp(channel))
        }
        ChannelType::SmsTwilio | ChannelType::WhatsappTwilio => {
            let (block, settings, medium) = if channel_type == ChannelType::SmsTwilio {
                ("sms_twilio", &spec.sms_twilio, Medium::Sms)
            } else {
                ("whatsapp_twilio", &spec.whatsapp_twilio, Medium::Whatsapp)
            };
            let settings = settings.as_ref().ok_or_else(missing_settings)?;
            let channel = twilio::TwilioChannel::from_spec(
                name,
                medium,
                block,
                settings,
                secrets,
                max_in_flight,
            )?;
            Ok(Channel::Twilio(channel))
        }
    }
}

/// How much of a provider's response body a failure reason quotes.
pub const REASON_EXCERPT_CHARS: usize = 200;

/// Classifies an HTTP response the way every HTTP provider does unless it knows better:
/// 2xx sent; 408, 425, 429 and 5xx transient (honouring Retry-After, as delta-seconds or an
/// HTTP-date); 3xx (redirects are not followed) and other 4xx permanent. Reasons hold the
/// status and a short excerpt of the body, never request headers.
pub fn classify_http(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> SendOutcome {
    classify_http_at(status, headers, body, jiff::Timestamp::now())
}

/// [`classify_http`] with the clock given, for a Retry-After written as a date.
pub fn classify_http_at(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: jiff::Timestamp,
) -> SendOutcome {
    if status.is_success() {
        return SendOutcome::Sent {
            provider_message_id: None,
        };
    }
    let reason = http_reason(status, body);
    let transient = matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error();
    if transient {
        SendOutcome::Transient {
            reason,
            retry_after: retry_after(headers, now),
        }
    } else if status.is_redirection() {
        SendOutcome::permanent(format!(
            "{reason} (redirects are not followed: configure the final URL)"
        ))
    } else {
        SendOutcome::permanent(reason)
    }
}

/// `HTTP 400 Bad Request: <excerpt>`, the excerpt on one line and cut to
/// [`REASON_EXCERPT_CHARS`].
pub fn http_reason(status: StatusCode, body: &[u8]) -> String {
    let head = match status.canonical_reason() {
        Some(text) => format!("HTTP {} {text}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    let excerpt = body_excerpt(body);
    if excerpt.is_empty() {
        head
    } else {
        format!("{head}: {excerpt}")
    }
}

/// A response body as a short single line: whitespace runs collapsed, cut at
/// [`REASON_EXCERPT_CHARS`] characters with `…`.
pub fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for (count, word) in text.split_whitespace().enumerate() {
        if count > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > REASON_EXCERPT_CHARS {
            break;
        }
    }
    if out.chars().count() > REASON_EXCERPT_CHARS {
        out = out.chars().take(REASON_EXCERPT_CHARS).collect();
        out.push('…');
    }
    out
}

/// The Retry-After header as a delay from `now`: delta-seconds, or an HTTP-date (a date in
/// the past is no delay). Unparsable values are ignored.
pub fn retry_after(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
    let seconds = at.as_second().saturating_sub(now.as_second()).max(0);
    Some(Duration::from_secs(seconds as u64))
}

/// The most of a provider's answer herald reads (for a message id or a failure reason).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A provider's answer to one request.
pub struct ProviderAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The first [`MAX_RESPONSE_BYTES`] of the body; empty when reading it failed.
    pub body: Vec<u8>,
    /// Whether the body was read without error (a body cut off mid-way holds no usable id).
    pub body_read: bool,
}

/// Sends `request` and reads the answer. A request that got no response is the
/// transient outcome of [`classify_transport_error`].
pub async fn exchange(request: reqwest::RequestBuilder) -> Result<ProviderAnswer, SendOutcome> {
    let mut response = request.send().await.map_err(classify_transport_error)?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let (body, body_read) = match read_capped(response).await {
        Ok(body) => (body, true),
        Err(_) => (Vec::new(), false),
    };
    Ok(ProviderAnswer {
        status,
        headers,
        body,
        body_read,
    })
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_RESPONSE_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_RESPONSE_BYTES {
            break;
        }
    }
    Ok(body)
}

/// A request that got no response (connection refused or reset, DNS, TLS, timeout) is
/// transient. The reason leaves out the URL, which for some providers holds a token.
pub fn classify_transport_error(error: reqwest::Error) -> SendOutcome {
    let error = error.without_url();
    let kind = if error.is_timeout() {
        "the request timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "the response could not be read"
    } else {
        "the request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = cause.source();
    }
    SendOutcome::transient(format!("{kind}{detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_delta_seconds() {
        let now = at("2026-11-26T00:00:00Z");
        assert_eq!(
            retry_after(&with_retry_after("120"), now),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn retry_after_reads_an_http_date_relative_to_now() {
        let now = at("2015-10-21T07:27:00Z");
        assert_eq!(
            retry_after(&with_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Some(Duration::from_secs(60))
        );
        let later = at("2015-10-21T08:00:00Z");
        assert_eq!(
            retry_after(&with_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), later),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn an_unreadable_retry_after_is_ignored() {
        let now = at("2026-11-26T00:00:00Z");
        assert_eq!(retry_after(&with_retry_after("soon"), now), None);
        assert_eq!(retry_after(&with_retry_after("-5"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn statuses_are_classified_as_sent_transient_or_permanent() {
        let now = at("2026-11-26T00:00:00Z");
        let none = HeaderMap::new();
        let class = |code: u16| match classify_http_at(
            StatusCode::from_u16(code).unwrap(),
            &none,
            b"",
            now,
        ) {
            SendOutcome::Sent { .. } => "sent",
            SendOutcome::Transient { .. } => "transient",
            SendOutcome::Permanent { .. } => "permanent",
        };
        for code in [200, 201, 202, 204] {
            assert_eq!(class(code), "sent", "{code}");
        }
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(class(code), "transient", "{code}");
        }
        for code in [301, 302, 400, 401, 403, 404, 410, 413, 422] {
            assert_eq!(class(code), "permanent", "{code}");
        }
    }

    #[test]
    fn a_permanent_reason_has_the_status_and_a_short_excerpt_of_the_body() {
        let body = format!("{{\"error\": \"bad\n number\"}} {}", "x".repeat(500));
        let outcome = classify_http_at(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            body.as_bytes(),
            at("2026-11-26T00:00:00Z"),
        );
        let SendOutcome::Permanent { reason, opted_out } = outcome else {
            panic!("expected permanent, got {outcome:?}");
        };
        assert!(!opted_out);
        assert!(
            reason.starts_with("HTTP 400 Bad Request: {\"error\": \"bad number\"} xxx"),
            "{reason}"
        );
        assert!(reason.ends_with('…'), "{reason}");
        assert!(
            reason.chars().count() <= "HTTP 400 Bad Request: ".len() + REASON_EXCERPT_CHARS + 1
        );
    }

    #[test]
    fn a_503_carries_its_retry_after() {
        let outcome = classify_http_at(
            StatusCode::SERVICE_UNAVAILABLE,
            &with_retry_after("7"),
            b"busy",
            at("2026-11-26T00:00:00Z"),
        );
        assert_eq!(
            outcome,
            SendOutcome::Transient {
                reason: "HTTP 503 Service Unavailable: busy".into(),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
    }

    #[test]
    fn the_excerpt_of_an_empty_body_leaves_only_the_status() {
        assert_eq!(
            http_reason(StatusCode::NOT_FOUND, b"  \n"),
            "HTTP 404 Not Found"
        );
    }
}
