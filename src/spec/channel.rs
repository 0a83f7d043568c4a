//! `kind: Channel`: a configured sending account and the medium it delivers.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::located::Located;
use super::values::{Rate, Secret, SendWindow};

/// What a channel delivers. A contact's address, consent and last interaction are kept per medium.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Medium {
    Sms,
    Whatsapp,
    Telegram,
    Email,
}

impl Medium {
    pub const ALL: [Medium; 4] = [
        Medium::Sms,
        Medium::Whatsapp,
        Medium::Telegram,
        Medium::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Medium::Sms => "sms",
            Medium::Whatsapp => "whatsapp",
            Medium::Telegram => "telegram",
            Medium::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Medium> {
        Medium::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for Medium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The provider behind a channel. Each type's settings sit in a block named after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelType {
    SmsTwilio,
    WhatsappCloud,
    WhatsappTwilio,
    Telegram,
    EmailSmtp,
    Webhook,
    Outbox,
}

impl ChannelType {
    pub const ALL: [ChannelType; 7] = [
        ChannelType::SmsTwilio,
        ChannelType::WhatsappCloud,
        ChannelType::WhatsappTwilio,
        ChannelType::Telegram,
        ChannelType::EmailSmtp,
        ChannelType::Webhook,
        ChannelType::Outbox,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::SmsTwilio => "sms_twilio",
            ChannelType::WhatsappCloud => "whatsapp_cloud",
            ChannelType::WhatsappTwilio => "whatsapp_twilio",
            ChannelType::Telegram => "telegram",
            ChannelType::EmailSmtp => "email_smtp",
            ChannelType::Webhook => "webhook",
            ChannelType::Outbox => "outbox",
        }
    }

    /// The medium a provider type implies; `None` for the generic types that must name one.
    pub fn implied_medium(self) -> Option<Medium> {
        match self {
            ChannelType::SmsTwilio => Some(Medium::Sms),
            ChannelType::WhatsappCloud | ChannelType::WhatsappTwilio => Some(Medium::Whatsapp),
            ChannelType::Telegram => Some(Medium::Telegram),
            ChannelType::EmailSmtp => Some(Medium::Email),
            ChannelType::Webhook | ChannelType::Outbox => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    #[serde(rename = "type")]
    pub channel_type: Located<ChannelType>,
    /// Required for `webhook` and `outbox`; implied by the provider types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<Located<Medium>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_twilio: Option<Located<TwilioSettings>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp_twilio: Option<Located<TwilioSettings>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp_cloud: Option<Located<WhatsappCloudSettings>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<Located<TelegramSettings>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_smtp: Option<Located<SmtpSettings>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Located<WebhookChannelSettings>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<Located<OutboxSettings>>,
    /// The provider's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Located<Rate>>,
    /// Requests in flight at once on this channel (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<Located<u32>>,
    /// Business hours for everything sent through this channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_window: Option<SendWindow>,
    /// Inbound words (alone in a message, any case) that opt the sender out of this medium.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_keywords: Option<Vec<String>>,
    /// Inbound words that opt the sender back in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in_keywords: Option<Vec<String>>,
}

/// Twilio Programmable Messaging (SMS and WhatsApp).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TwilioSettings {
    pub account_sid: Located<String>,
    pub auth_token: Secret,
    /// A sender number (`+15005550006`, or `whatsapp:+1...` for WhatsApp); or use messaging_service_sid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<Located<String>>,
    /// Defaults to https://api.twilio.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<Located<String>>,
    /// The URL Twilio reaches herald at; status callbacks and signatures use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<Located<String>>,
}

/// WhatsApp Cloud API (Meta Graph API).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatsappCloudSettings {
    pub phone_number_id: Located<String>,
    pub access_token: Secret,
    /// Verifies X-Hub-Signature-256 on inbound callbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_secret: Option<Secret>,
    /// Answers the GET verification handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_token: Option<Secret>,
    /// Graph API version, e.g. `v21.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<Located<String>>,
    /// Defaults to https://graph.facebook.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<Located<String>>,
}

/// Telegram Bot API.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelegramSettings {
    pub bot_token: Secret,
    /// Checked against X-Telegram-Bot-Api-Secret-Token on inbound updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<Secret>,
    /// `HTML`, `MarkdownV2` or `Markdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_mode: Option<Located<ParseMode>>,
    /// Defaults to https://api.telegram.org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<Located<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ParseMode {
    #[serde(rename = "HTML")]
    Html,
    MarkdownV2,
    Markdown,
}

/// E-mail over SMTP.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Located<u16>>,
    /// `starttls` (default), `implicit` (SMTPS) or `none` (only for local test servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Located<SmtpTls>>,
    /// A PEM file of CA certificates to trust besides the public roots, for a relay whose
    /// certificate a private CA signed. Relative paths are relative to the campaign
    /// directory, like `${file:PATH}` secrets. Not with `tls: none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The From header, e.g. `"Acme News <news@acme.example>"`.
    pub from: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Located<String>>,
    /// herald's public URL, for List-Unsubscribe links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<Located<String>>,
    /// Keys the HMAC of unsubscribe links (any long random string). Without it the links
    /// are keyed by `password`; changing the key invalidates the links already sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe_secret: Option<Secret>,
    /// Connections kept open to the server (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<Located<u32>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    Starttls,
    Implicit,
    None,
}

/// A generic HTTP gateway: herald POSTs a documented JSON body per message.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannelSettings {
    pub url: Located<String>,
    /// Signs each request per Standard Webhooks when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Extra request headers; values may be secrets (`${env:NAME}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Located<String>>,
    /// Per-request timeout, e.g. `10s` (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Located<String>>,
}

/// Appends each message as a JSON line to a file: the offline channel for demos and tests.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// Relative paths are relative to the campaign directory, like `${file:PATH}` secrets, so
    /// the file is the same wherever herald is started.
    pub path: Located<String>,
}

impl ChannelSpec {
    /// The spec as a channel is built from it where it runs: relative outbox and CA paths
    /// made relative to the campaign directory (like `${file:}` secrets), and the daemon's
    /// `public_url` given to the settings that call back or link to herald (Twilio's
    /// StatusCallback, e-mail unsubscribe links) where the channel names none of its own
    /// (its own wins: one channel may sit behind a different proxy).
    pub fn resolved(
        &self,
        campaign_dir: &std::path::Path,
        public_url: Option<&str>,
    ) -> ChannelSpec {
        let mut spec = self.clone();
        let relative_to_dir = |path: &mut String| {
            if std::path::Path::new(path.as_str()).is_relative() {
                *path = campaign_dir.join(&*path).display().to_string();
            }
        };
        if let Some(outbox) = spec.outbox.as_mut() {
            relative_to_dir(&mut outbox.value.path.value);
        }
        if let Some(ca) = spec
            .email_smtp
            .as_mut()
            .and_then(|s| s.value.ca_file.as_mut())
        {
            relative_to_dir(&mut ca.value);
        }
        if let Some(url) = public_url {
            // Errors about the URL point at the channel's `type:` line: it came from no file.
            let at = spec.channel_type.at.clone();
            let slots = [
                spec.sms_twilio.as_mut().map(|t| &mut t.value.public_url),
                spec.whatsapp_twilio
                    .as_mut()
                    .map(|t| &mut t.value.public_url),
                spec.email_smtp.as_mut().map(|s| &mut s.value.public_url),
            ];
            for slot in slots.into_iter().flatten() {
                if slot.is_none() {
                    *slot = Some(Located::new(url.to_string(), at.clone()));
                }
            }
        }
        spec
    }

    /// The medium this channel delivers: implied by provider types, named by the others.
    pub fn medium(&self) -> Option<Medium> {
        self.channel_type
            .implied_medium()
            .or(self.medium.as_ref().map(|m| m.value))
    }
}
