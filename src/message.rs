//! A rendered message: what a channel sends. [`crate::render`] produces it from a Template,
//! a contact and a campaign; the channels turn it into their provider's request. Plain data
//! on the lowest layer, so both sides depend on it and not on each other.

use serde::Serialize;

use crate::spec::channel::Medium;
use crate::spec::template::MediaType;

/// One message for one contact on one channel, ready to send.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboundMessage {
    /// The delivery row this message belongs to.
    pub delivery_id: i64,
    /// Stable across retries and restarts: providers that honour an idempotency key get it.
    pub idempotency_key: String,
    pub run_id: i64,
    pub campaign: String,
    pub channel: String,
    pub contact_id: String,
    /// The contact's address on the channel's medium (E.164 phone, e-mail, Telegram chat id).
    pub to: String,
    pub content: Content,
    /// A test send: delivered like any other, never counted in the campaign's figures.
    pub test: bool,
}

/// The content for one medium, every template string already rendered.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "medium", rename_all = "snake_case")]
pub enum Content {
    Sms(SmsMessage),
    Whatsapp(WhatsappMessage),
    Telegram(TelegramMessage),
    Email(EmailMessage),
}

impl Content {
    pub fn medium(&self) -> Medium {
        match self {
            Content::Sms(_) => Medium::Sms,
            Content::Whatsapp(_) => Medium::Whatsapp,
            Content::Telegram(_) => Medium::Telegram,
            Content::Email(_) => Medium::Email,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SmsMessage {
    pub text: String,
    /// MMS: the media sent with the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_url: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WhatsappMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<ButtonMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<ListMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<ProviderTemplate>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TelegramMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<ButtonMessage>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmailMessage {
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// herald's unsubscribe link for this contact, for the List-Unsubscribe header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MediaMessage {
    #[serde(rename = "type")]
    pub media_type: MediaType,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// A URL button, or a quick reply whose payload comes back in the reply.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ButtonMessage {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListMessage {
    pub button: String,
    pub sections: Vec<ListSectionMessage>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListSectionMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub rows: Vec<ListRowMessage>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListRowMessage {
    pub id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A provider-approved template (WhatsApp) and its rendered parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProviderTemplate {
    pub name: String,
    pub language: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_sid: Option<String>,
}
