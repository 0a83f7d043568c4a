//! Rendering: a Template, a contact and a run become the [`Content`] a channel sends.
//!
//! One [`Renderer`] is built per (revision, template, campaign vars) and reused for every
//! contact of a run: each template string is compiled once, into one minijinja
//! environment with herald's settings:
//!
//! - **Strict.** An undefined variable is an error for that message, never an empty string
//!   (`UndefinedBehavior::Strict`). A contact field the contact lacks (`contact.name`
//!   without a name) is `none`: testing it (`{% if contact.name %}`) is fine, printing it
//!   is an error, and `default(…)` replaces it.
//! - **Bounded.** Each template string runs with [`FUEL`] fuel (instructions plus bytes
//!   produced; an endless loop fails with "engine ran out of fuel") and its output may not
//!   exceed [`MAX_OUTPUT`] bytes.
//! - **Escaped where it matters.** `email.html` is HTML-escaped (a contact's name cannot
//!   inject markup; `| safe` opts out); every other string is rendered as is.
//! - **Localized.** The content is chosen per medium by the contact's locale: the exact
//!   tag (`pt-BR`), then its language (`pt`), then the default content. An override that
//!   lacks the medium falls back for that medium. Matching ignores case and `_` vs `-`.
//!
//! What a template sees: `contact` ([`ContactView`]: exactly the fields validation
//! accepts, [`CONTACT_FIELDS`]), `campaign.name`, `run.id`, `channel.name`,
//! `channel.medium`, `unsubscribe_url`, `now` (RFC 3339 text, UTC), and the campaign's
//! `vars` over the template's variable defaults: the names of [`RUN_SCOPE`] plus the vars.
//!
//! Filters, besides minijinja's built-ins (see `filters.rs` for the details):
//!
//! | filter | example | en | es (pt: same shapes, Portuguese names) | fr | de |
//! |---|---|---|---|---|---|
//! | `date(format='long')` | `ends_on \| date` | November 30, 2027 | 30 de noviembre de 2027 | 30 novembre 2027 | 30. November 2027 |
//! | `date('short')` | | 11/30/2027 | 30/11/2027 | 30/11/2027 | 30.11.2027 |
//! | `date('%A %-d %B')` | | Tuesday 30 November | martes 30 noviembre | mardi 30 novembre | Dienstag 30 November |
//! | `datetime(format='long')` | `contact.created_at \| datetime` | March 12, 2024 at 10:20 AM | 12 de marzo de 2024, 10:20 | 12 mars 2024 à 10:20 | 12. März 2024 um 10:20 |
//! | `time(format='short')` | | 10:20 AM | 10:20 | 10:20 | 10:20 |
//! | `number(decimals=None)` | `1234.5 \| number` | 1,234.5 | 1.234,5 | 1 234,5 | 1.234,5 |
//! | `currency(code, decimals=2)` | `9.9 \| currency('EUR')` | €9.90 | 9,90 € | 9,90 € | 9,90 € |
//! | `default(v, boolean=false)` | `contact.name \| default('cliente')` | replaces undefined *and* `none` | | | |
//!
//! Dates take an instant (RFC 3339 text such as `contact.created_at` or `now`, or unix
//! milliseconds) shown in the contact's time zone (else the campaign schedule's, else
//! UTC), or a plain date (`2027-11-30`) shown as written. Every date and number filter
//! takes `locale='pt-BR'` and the date filters `tz='America/Lima'` to override the
//! contact's.

mod filters;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Serde, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;

pub use filters::Lang;

use crate::message::{
    ButtonMessage, Content, EmailMessage, ListMessage, ListRowMessage, ListSectionMessage,
    MediaMessage, ProviderTemplate, SmsMessage, TelegramMessage, WhatsappMessage,
};
use crate::spec::channel::Medium;
use crate::spec::located::Located;
use crate::spec::template::{Button, LocaleContent, Media, TemplateSpec};
pub use crate::spec::validate::{CONTACT_FIELDS, RUN_SCOPE};
use crate::store::contacts::ContactRecord;

/// Fuel per template string: about 50,000 instructions, or 3 MB of data produced.
pub const FUEL: u64 = 50_000;

/// The largest output of one template string, in bytes.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Why a message (or a whole template) could not be rendered. Every variant names the
/// template and, but for [`RenderError::NoContent`], the field (`sms.text`,
/// `locales.pt-BR.whatsapp.template.body[1]`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A template string does not compile (validation reports these first).
    #[error("template `{template}`, {path}: {message}")]
    Syntax {
        template: String,
        path: String,
        message: String,
    },
    /// The template has no content for the medium, in any locale the contact could get.
    #[error("template `{template}` has no {medium} content")]
    NoContent { template: String, medium: Medium },
    /// A variable, a contact field or an attribute the message needs is undefined, or a
    /// `none` value was printed.
    #[error("template `{template}`, {path}: {message}")]
    Undefined {
        template: String,
        path: String,
        message: String,
    },
    /// The string used up its fuel: most likely a loop that runs too long.
    #[error("template `{template}`, {path}: used up its fuel ({fuel}): {message}")]
    OutOfFuel {
        template: String,
        path: String,
        fuel: u64,
        message: String,
    },
    /// The rendered string is longer than [`MAX_OUTPUT`].
    #[error(
        "template `{template}`, {path}: the output is {len} bytes, more than the {limit} allowed"
    )]
    TooLarge {
        template: String,
        path: String,
        len: usize,
        limit: usize,
    },
    /// Any other failure while rendering (a filter given a wrong value, a bad operation).
    #[error("template `{template}`, {path}: {message}")]
    Failed {
        template: String,
        path: String,
        message: String,
    },
}

/// The contact as templates see it: `contact.<field>`. The fields are exactly
/// [`CONTACT_FIELDS`]; a missing value is `none`. `created_at` is RFC 3339 text (UTC).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ContactView {
    pub id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub telegram: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub country: Option<String>,
    pub created_at: String,
    pub tags: Vec<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl From<&ContactRecord> for ContactView {
    fn from(record: &ContactRecord) -> Self {
        ContactView::from(record.clone())
    }
}

impl From<ContactRecord> for ContactView {
    fn from(record: ContactRecord) -> Self {
        let c = record.data;
        let created_at = jiff::Timestamp::from_millisecond(c.created_at)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| c.created_at.to_string());
        ContactView {
            id: c.id,
            name: c.name,
            phone: c.phone,
            email: c.email,
            telegram: c.telegram,
            locale: c.locale,
            timezone: c.timezone,
            country: c.country,
            created_at,
            tags: c.tags.into_iter().collect(),
            attributes: c.attributes,
        }
    }
}

/// What a message knows about its run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunContext {
    /// `campaign.name`.
    pub campaign: String,
    /// `run.id`.
    pub run_id: i64,
    /// `channel.name` (the medium comes from the content being rendered).
    pub channel: String,
    /// `now`, as RFC 3339 text in UTC, whole seconds.
    pub now: jiff::Timestamp,
    /// `unsubscribe_url`; undefined (an error where a template uses it) when `None`.
    pub unsubscribe_url: Option<String>,
    /// The zone dates are shown in for a contact without a (valid) time zone: the
    /// campaign schedule's. `None` is UTC.
    pub timezone: Option<jiff::tz::TimeZone>,
}

/// The part of a message's scope that comes from its run and channel
/// ([`RunContext`] and the medium), made into template values once and shared by every
/// message rendered with it.
#[derive(Clone, Debug)]
pub struct RunScope {
    medium: Medium,
    campaign: Value,
    run: Value,
    channel: Value,
    now: Value,
    timezone: Option<jiff::tz::TimeZone>,
    unsubscribe_url: Option<String>,
}

impl RunScope {
    /// The scope of messages on `medium` for `run`.
    pub fn new(run: &RunContext, medium: Medium) -> RunScope {
        RunScope {
            medium,
            campaign: Value::from_pairs([("name", Value::from(run.campaign.as_str()))]),
            run: Value::from_pairs([("id", Value::from(run.run_id))]),
            channel: Value::from_pairs([
                ("name", Value::from(run.channel.as_str())),
                ("medium", Value::from(medium.as_str())),
            ]),
            now: Value::from(
                run.now
                    .round(jiff::Unit::Second)
                    .unwrap_or(run.now)
                    .to_string(),
            ),
            timezone: run.timezone.clone(),
            unsubscribe_url: run.unsubscribe_url.clone(),
        }
    }
}

/// A link herald made (the unsubscribe URL) as a template value. HTML escaping would
/// write its slashes as `&#x2f;`: valid in an attribute, but not what anyone expects to
/// read in the source, so a link without characters HTML gives meaning to is marked safe.
fn link_value(url: &str) -> Value {
    if url.contains(['"', '\'', '<', '>', '&']) {
        Value::from(url)
    } else {
        Value::from_safe_string(url.to_string())
    }
}

/// A template compiled for one campaign's vars. Cheap to share between threads (`Sync`);
/// rendering borrows it immutably.
pub struct Renderer {
    name: String,
    env: Environment<'static>,
    /// The default content first, then each locale override: (field-path prefix, content).
    contents: Vec<(String, LocaleContent)>,
    /// Normalized locale tag (lowercase, `-`) → index into `contents`.
    locales: HashMap<String, usize>,
    vars: Arc<BTreeMap<String, Value>>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("template", &self.name)
            .finish_non_exhaustive()
    }
}

impl Renderer {
    /// Compiles every template string of `template` (named `name` in errors) once. `vars`
    /// are the campaign's; the template's variable defaults fill in those it does not set.
    /// Fails with [`RenderError::Syntax`] for a string that does not compile.
    pub fn new(
        name: &str,
        template: &TemplateSpec,
        vars: &BTreeMap<String, serde_json::Value>,
    ) -> Result<Renderer, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_debug(true);
        // Block tags on lines of their own leave no blank lines in text messages.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        // By field, never by name suffix: a name ending in .yaml or .json would otherwise
        // turn on JSON escaping.
        env.set_auto_escape_callback(|name| {
            if name.ends_with("email.html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if value.is_none() {
                return Err(minijinja::Error::new(
                    ErrorKind::UndefinedError,
                    "a `none` value cannot be printed (a contact field this contact lacks?); \
                     give it a fallback with `| default('…')`",
                ));
            }
            minijinja::escape_formatter(out, state, value)
        });
        filters::register(&mut env);

        let mut contents = vec![(String::new(), template.default_content())];
        let mut locales = HashMap::new();
        for (tag, content) in &template.locales {
            locales.insert(normalize(tag), contents.len());
            contents.push((format!("locales.{tag}."), content.clone()));
        }
        for (prefix, content) in &contents {
            for (path, source) in content.template_strings() {
                let full = format!("{prefix}{path}");
                env.add_template_owned(full.clone(), source.value.clone())
                    .map_err(|e| RenderError::Syntax {
                        template: name.to_string(),
                        path: full,
                        message: describe(&e),
                    })?;
            }
        }

        let mut scope_vars = BTreeMap::new();
        for (var, declared) in &template.variables {
            if let Some(default) = &declared.default {
                scope_vars.insert(var.clone(), Value::from(Serde(default)));
            }
        }
        for (var, value) in vars {
            scope_vars.insert(var.clone(), Value::from(Serde(value)));
        }
        Ok(Renderer {
            name: name.to_string(),
            env,
            contents,
            locales,
            vars: Arc::new(scope_vars),
        })
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The locale override a contact with `locale` gets on `medium`: `Some("pt-BR")` as
    /// written in the template, `None` for the default content (also when the template
    /// has no content for the medium at all).
    pub fn chosen_locale(&self, medium: Medium, locale: Option<&str>) -> Option<&str> {
        let i = self.pick(medium, locale)?;
        let prefix = &self.contents[i].0;
        prefix
            .strip_prefix("locales.")
            .and_then(|p| p.strip_suffix('.'))
    }

    fn pick(&self, medium: Medium, locale: Option<&str>) -> Option<usize> {
        let has = |i: &usize| has_medium(&self.contents[*i].1, medium);
        if let Some(locale) = locale {
            let tag = normalize(locale);
            if let Some(i) = self.locales.get(&tag).filter(|i| has(i)) {
                return Some(*i);
            }
            let language = tag.split('-').next().unwrap_or_default();
            if let Some(i) = self.locales.get(language).filter(|i| has(i)) {
                return Some(*i);
            }
        }
        Some(0).filter(has)
    }

    /// Renders the content for `medium` for one contact. Fails for this message only:
    /// [`RenderError::NoContent`] when the template has no content for the medium, or the
    /// first template string that fails.
    pub fn render(
        &self,
        medium: Medium,
        contact: &ContactView,
        run: &RunContext,
    ) -> Result<Content, RenderError> {
        self.render_in(Arc::new(contact.clone()), &RunScope::new(run, medium), None)
    }

    /// [`render`](Self::render) for a contact shared between messages, in a scope built
    /// once for many (the engine renders a batch's messages with one scope per run and
    /// channel, and one copy of each contact). `unsubscribe_url`, when given, is this
    /// contact's own link and replaces the scope's (links are signed per contact).
    pub fn render_in(
        &self,
        contact: Arc<ContactView>,
        run: &RunScope,
        unsubscribe_url: Option<String>,
    ) -> Result<Content, RenderError> {
        let unsubscribe = unsubscribe_url.or_else(|| run.unsubscribe_url.clone());
        let unsubscribe_value = unsubscribe
            .as_deref()
            .map(link_value)
            .unwrap_or(Value::UNDEFINED);
        let medium = run.medium;
        let Some(i) = self.pick(medium, contact.locale.as_deref()) else {
            return Err(RenderError::NoContent {
                template: self.name.clone(),
                medium,
            });
        };
        let (prefix, content) = &self.contents[i];
        let scope = Value::from_object(Scope {
            contact: Value::from_object(ContactObject {
                fields: contact,
                fallback_zone: run.timezone.clone(),
            }),
            campaign: run.campaign.clone(),
            run: run.run.clone(),
            channel: run.channel.clone(),
            unsubscribe_url: unsubscribe_value,
            now: run.now.clone(),
            vars: self.vars.clone(),
        });
        let r = Strings {
            renderer: self,
            prefix,
            scope,
        };
        let missing = || RenderError::NoContent {
            template: self.name.clone(),
            medium,
        };
        Ok(match medium {
            Medium::Sms => {
                let sms = content.sms.as_ref().ok_or_else(missing)?;
                Content::Sms(SmsMessage {
                    text: r.one("sms.text", &sms.text)?,
                    media_url: r.opt("sms.media_url", sms.media_url.as_ref())?,
                })
            }
            Medium::Whatsapp => {
                let wa = content.whatsapp.as_ref().ok_or_else(missing)?;
                let list = match &wa.list {
                    None => None,
                    Some(list) => {
                        let mut sections = Vec::with_capacity(list.sections.len());
                        for (s, section) in list.sections.iter().enumerate() {
                            let at = format!("whatsapp.list.sections[{s}]");
                            let mut rows = Vec::with_capacity(section.rows.len());
                            for (n, row) in section.rows.iter().enumerate() {
                                let row_at = format!("{at}.rows[{n}]");
                                rows.push(ListRowMessage {
                                    id: row.id.clone(),
                                    title: r.one(&format!("{row_at}.title"), &row.title)?,
                                    description: r.opt(
                                        &format!("{row_at}.description"),
                                        row.description.as_ref(),
                                    )?,
                                });
                            }
                            sections.push(ListSectionMessage {
                                title: r.opt(&format!("{at}.title"), section.title.as_ref())?,
                                rows,
                            });
                        }
                        Some(ListMessage {
                            button: r.one("whatsapp.list.button", &list.button)?,
                            sections,
                        })
                    }
                };
                let template = match &wa.template {
                    None => None,
                    Some(t) => Some(ProviderTemplate {
                        name: t.name.value.clone(),
                        language: t.language.value.clone(),
                        header: r.all("whatsapp.template.header", &t.header)?,
                        body: r.all("whatsapp.template.body", &t.body)?,
                        buttons: r.all("whatsapp.template.buttons", &t.buttons)?,
                        content_sid: t.content_sid.as_ref().map(|s| s.value.clone()),
                    }),
                };
                Content::Whatsapp(WhatsappMessage {
                    text: r.opt("whatsapp.text", wa.text.as_ref())?,
                    media: r.media("whatsapp.media", wa.media.as_ref())?,
                    buttons: r.buttons("whatsapp.buttons", wa.buttons.as_deref())?,
                    list,
                    template,
                })
            }
            Medium::Telegram => {
                let tg = content.telegram.as_ref().ok_or_else(missing)?;
                Content::Telegram(TelegramMessage {
                    text: r.opt("telegram.text", tg.text.as_ref())?,
                    media: r.media("telegram.media", tg.media.as_ref())?,
                    buttons: r.buttons("telegram.buttons", tg.buttons.as_deref())?,
                })
            }
            Medium::Email => {
                let email = content.email.as_ref().ok_or_else(missing)?;
                Content::Email(EmailMessage {
                    subject: r.one("email.subject", &email.subject)?,
                    html: r.opt("email.html", email.html.as_ref())?,
                    text: r.opt("email.text", email.text.as_ref())?,
                    unsubscribe_url: unsubscribe,
                })
            }
        })
    }
}

fn has_medium(content: &LocaleContent, medium: Medium) -> bool {
    match medium {
        Medium::Sms => content.sms.is_some(),
        Medium::Whatsapp => content.whatsapp.is_some(),
        Medium::Telegram => content.telegram.is_some(),
        Medium::Email => content.email.is_some(),
    }
}

/// `pt_BR`, `PT-br` → `pt-br`.
fn normalize(tag: &str) -> String {
    tag.trim().replace('_', "-").to_ascii_lowercase()
}

/// One message's rendering: the content's field-path prefix and the scope.
struct Strings<'a> {
    renderer: &'a Renderer,
    prefix: &'a str,
    scope: Value,
}

impl Strings<'_> {
    fn one(&self, path: &str, source: &Located<String>) -> Result<String, RenderError> {
        let full = format!("{}{path}", self.prefix);
        let r = self.renderer;
        let fail = |e: minijinja::Error| {
            let template = r.name.clone();
            let path = full.clone();
            let message = describe(&e);
            match e.kind() {
                ErrorKind::UndefinedError => RenderError::Undefined {
                    template,
                    path,
                    message,
                },
                ErrorKind::OutOfFuel => RenderError::OutOfFuel {
                    template,
                    path,
                    fuel: FUEL,
                    message,
                },
                _ => RenderError::Failed {
                    template,
                    path,
                    message,
                },
            }
        };
        let template = r.env.get_template(&full).map_err(fail)?;
        // The path names the string it was compiled from (`template_strings` and this walk
        // must agree).
        debug_assert_eq!(template.source(), source.value, "{full}");
        let out = template.render(self.scope.clone()).map_err(fail)?;
        if out.len() > MAX_OUTPUT {
            return Err(RenderError::TooLarge {
                template: r.name.clone(),
                path: full,
                len: out.len(),
                limit: MAX_OUTPUT,
            });
        }
        Ok(out)
    }

    fn opt(
        &self,
        path: &str,
        source: Option<&Located<String>>,
    ) -> Result<Option<String>, RenderError> {
        source.map(|s| self.one(path, s)).transpose()
    }

    fn all(&self, path: &str, sources: &[Located<String>]) -> Result<Vec<String>, RenderError> {
        sources
            .iter()
            .enumerate()
            .map(|(i, s)| self.one(&format!("{path}[{i}]"), s))
            .collect()
    }

    fn media(
        &self,
        path: &str,
        media: Option<&Media>,
    ) -> Result<Option<MediaMessage>, RenderError> {
        let Some(media) = media else {
            return Ok(None);
        };
        Ok(Some(MediaMessage {
            media_type: media.media_type.value,
            url: self.one(&format!("{path}.url"), &media.url)?,
            caption: self.opt(&format!("{path}.caption"), media.caption.as_ref())?,
            filename: self.opt(&format!("{path}.filename"), media.filename.as_ref())?,
        }))
    }

    /// A button without `url` or `reply` replies with its text (the spec's default), so
    /// that channels always get one or the other.
    fn buttons(
        &self,
        path: &str,
        buttons: Option<&[Button]>,
    ) -> Result<Vec<ButtonMessage>, RenderError> {
        let mut out = Vec::new();
        for (i, b) in buttons.unwrap_or_default().iter().enumerate() {
            let text = self.one(&format!("{path}[{i}].text"), &b.text)?;
            let url = self.opt(&format!("{path}[{i}].url"), b.url.as_ref())?;
            let mut reply = self.opt(&format!("{path}[{i}].reply"), b.reply.as_ref())?;
            if url.is_none() && reply.is_none() {
                reply = Some(text.clone());
            }
            out.push(ButtonMessage { text, url, reply });
        }
        Ok(out)
    }
}

/// minijinja's message without its internal template name: the kind, the detail (which
/// names the undefined expression) and the line within the string.
fn describe(e: &minijinja::Error) -> String {
    let mut out = e.kind().to_string();
    if let Some(detail) = e.detail() {
        out.push_str(": ");
        out.push_str(detail);
    }
    if let Some(line) = e.line() {
        out.push_str(&format!(" (line {line})"));
    }
    out
}

/// The root of a message's scope: the run names, then the vars.
#[derive(Debug)]
struct Scope {
    contact: Value,
    campaign: Value,
    run: Value,
    channel: Value,
    unsubscribe_url: Value,
    now: Value,
    vars: Arc<BTreeMap<String, Value>>,
}

impl Object for Scope {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        let found = match key {
            "contact" => &self.contact,
            "campaign" => &self.campaign,
            "run" => &self.run,
            "channel" => &self.channel,
            "unsubscribe_url" => &self.unsubscribe_url,
            "now" => &self.now,
            _ => return self.vars.get(key).cloned(),
        };
        Some(found.clone()).filter(|v| !v.is_undefined())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<Value> = RUN_SCOPE.iter().map(|k| Value::from(*k)).collect();
        keys.extend(self.vars.keys().map(|k| Value::from(k.as_str())));
        Enumerator::Values(keys)
    }
}

/// `contact`: the [`ContactView`]'s fields, plus what the date and number filters need.
/// A field becomes a template value only when a template reads it (most read one or two),
/// as serde would make it: `none` for a missing value, a list for `tags`, a map for
/// `attributes`.
#[derive(Debug)]
pub(crate) struct ContactObject {
    fields: Arc<ContactView>,
    fallback_zone: Option<jiff::tz::TimeZone>,
}

impl ContactObject {
    pub(crate) fn locale(&self) -> Option<&str> {
        self.fields.locale.as_deref()
    }

    pub(crate) fn timezone(&self) -> Option<&str> {
        self.fields.timezone.as_deref()
    }

    pub(crate) fn fallback_zone(&self) -> Option<&jiff::tz::TimeZone> {
        self.fallback_zone.as_ref()
    }
}

impl Object for ContactObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let c = &self.fields;
        let text = |v: &Option<String>| Value::from(Serde(v));
        Some(match key.as_str()? {
            "id" => Value::from(c.id.as_str()),
            "name" => text(&c.name),
            "phone" => text(&c.phone),
            "email" => text(&c.email),
            "telegram" => text(&c.telegram),
            "locale" => text(&c.locale),
            "timezone" => text(&c.timezone),
            "country" => text(&c.country),
            "created_at" => Value::from(c.created_at.as_str()),
            "tags" => Value::from(Serde(&c.tags)),
            "attributes" => Value::from(Serde(&c.attributes)),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&CONTACT_FIELDS)
    }
}
