//! `kind: Template`: message content per medium, rendered with minijinja.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::channel::Medium;
use super::located::Located;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Variables the campaign passes in `vars`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, Variable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsappContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailContent>,
    /// Per-locale overrides (`pt-BR`, `es`), picked by the contact's locale, falling back
    /// to the language and then to the default content.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub locales: BTreeMap<String, LocaleContent>,
}

/// The content of one locale: any subset of the media.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocaleContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsappContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailContent>,
}

impl TemplateSpec {
    /// The default content, shaped like a locale override.
    pub fn default_content(&self) -> LocaleContent {
        LocaleContent {
            sms: self.sms.clone(),
            whatsapp: self.whatsapp.clone(),
            telegram: self.telegram.clone(),
            email: self.email.clone(),
        }
    }

    pub fn has_medium(&self, medium: Medium) -> bool {
        match medium {
            Medium::Sms => self.sms.is_some(),
            Medium::Whatsapp => self.whatsapp.is_some(),
            Medium::Telegram => self.telegram.is_some(),
            Medium::Email => self.email.is_some(),
        }
    }
}

impl LocaleContent {
    /// Every template string in this content with a path naming where it sits
    /// (`sms.text`, `whatsapp.template.body[1]`), for compiling and checking variables.
    pub fn template_strings(&self) -> Vec<(String, &Located<String>)> {
        let mut out = Vec::new();
        if let Some(sms) = &self.sms {
            out.push(("sms.text".to_string(), &sms.text));
            push_opt(&mut out, "sms.media_url", sms.media_url.as_ref());
        }
        if let Some(wa) = &self.whatsapp {
            push_opt(&mut out, "whatsapp.text", wa.text.as_ref());
            if let Some(media) = &wa.media {
                media.collect("whatsapp.media", &mut out);
            }
            push_buttons(&mut out, "whatsapp.buttons", wa.buttons.as_deref());
            if let Some(list) = &wa.list {
                out.push(("whatsapp.list.button".into(), &list.button));
                for (s, section) in list.sections.iter().enumerate() {
                    push_opt(
                        &mut out,
                        &format!("whatsapp.list.sections[{s}].title"),
                        section.title.as_ref(),
                    );
                    for (r, row) in section.rows.iter().enumerate() {
                        let at = format!("whatsapp.list.sections[{s}].rows[{r}]");
                        out.push((format!("{at}.title"), &row.title));
                        push_opt(
                            &mut out,
                            &format!("{at}.description"),
                            row.description.as_ref(),
                        );
                    }
                }
            }
            if let Some(t) = &wa.template {
                for (part, params) in [
                    ("header", &t.header),
                    ("body", &t.body),
                    ("buttons", &t.buttons),
                ] {
                    for (i, p) in params.iter().enumerate() {
                        out.push((format!("whatsapp.template.{part}[{i}]"), p));
                    }
                }
            }
        }
        if let Some(tg) = &self.telegram {
            push_opt(&mut out, "telegram.text", tg.text.as_ref());
            if let Some(media) = &tg.media {
                media.collect("telegram.media", &mut out);
            }
            push_buttons(&mut out, "telegram.buttons", tg.buttons.as_deref());
        }
        if let Some(email) = &self.email {
            out.push(("email.subject".into(), &email.subject));
            push_opt(&mut out, "email.html", email.html.as_ref());
            push_opt(&mut out, "email.text", email.text.as_ref());
        }
        out
    }
}

fn push_opt<'a>(
    out: &mut Vec<(String, &'a Located<String>)>,
    path: &str,
    v: Option<&'a Located<String>>,
) {
    if let Some(v) = v {
        out.push((path.to_string(), v));
    }
}

fn push_buttons<'a>(
    out: &mut Vec<(String, &'a Located<String>)>,
    path: &str,
    buttons: Option<&'a [Button]>,
) {
    for (i, b) in buttons.unwrap_or_default().iter().enumerate() {
        out.push((format!("{path}[{i}].text"), &b.text));
        push_opt(out, &format!("{path}[{i}].url"), b.url.as_ref());
        push_opt(out, &format!("{path}[{i}].reply"), b.reply.as_ref());
    }
}

/// A variable a template expects from the campaign.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    #[serde(rename = "type")]
    pub var_type: Located<VariableType>,
    /// A campaign must provide it (unless there is a default).
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VariableType {
    String,
    Number,
    Boolean,
    Date,
    List,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsContent {
    pub text: Located<String>,
    /// A picture or file sent with the text as MMS (Twilio's `MediaUrl`): a public
    /// http(s) URL, templated like the text. Webhook and outbox channels pass it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_url: Option<Located<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatsappContent {
    /// A free-form text message (only inside the 24 h customer-service window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    /// Reply buttons (at most 3) under the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<Vec<Button>>,
    /// An interactive list menu.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<InteractiveList>,
    /// An approved template: required outside the 24 h window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<WhatsappTemplate>,
}

/// A provider-approved WhatsApp template and its parameters.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatsappTemplate {
    pub name: Located<String>,
    /// e.g. `es_MX`, `en_US`.
    pub language: Located<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<Located<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<Located<String>>,
    /// Parameters of the template's buttons (URL suffixes or quick-reply payloads), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Located<String>>,
    /// Twilio's Content SID for the same template (whatsapp_twilio channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sid: Option<Located<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InteractiveList {
    /// The label of the button that opens the list.
    pub button: Located<String>,
    pub sections: Vec<ListSection>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Located<String>>,
    pub rows: Vec<ListRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRow {
    pub id: String,
    pub title: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Located<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelegramContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    /// An inline keyboard: URL buttons or callback buttons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<Vec<Button>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailContent {
    pub subject: Located<String>,
    /// HTML body; auto-escaped as HTML when rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<Located<String>>,
    /// Plain-text body (sent as the multipart/alternative text part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Located<String>>,
}

/// An image, audio, video or document sent by link.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Media {
    #[serde(rename = "type")]
    pub media_type: Located<MediaType>,
    pub url: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<Located<String>>,
    /// Shown for documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<Located<String>>,
}

impl Media {
    fn collect<'a>(&'a self, path: &str, out: &mut Vec<(String, &'a Located<String>)>) {
        out.push((format!("{path}.url"), &self.url));
        push_opt(out, &format!("{path}.caption"), self.caption.as_ref());
        push_opt(out, &format!("{path}.filename"), self.filename.as_ref());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    Image,
    Audio,
    Video,
    Document,
}

/// A button: opens `url`, or sends `reply` back as a quick reply (menus).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Button {
    pub text: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Located<String>>,
    /// The payload sent back when tapped; defaults to the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Located<String>>,
}
