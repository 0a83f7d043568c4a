//! `herald render CAMPAIGN --dir DIR (--contact ID | --sample N)`: exactly what each chosen
//! contact would receive, per channel, rendered as the daemon renders it.
//!
//! The directory is loaded and validated first (invalid: diagnostics on stderr, exit 1).
//! `--contact` renders for one contact on the channels the campaign would use for them; a
//! contact the campaign would leave out gets a note saying why (the frequency cap is not
//! checked here) and is rendered on the first channel where they have an address.
//! `--sample N` renders for the campaign's first N recipients. A message that fails to
//! render is shown as that message's error; the others are still rendered, and the command
//! exits 1 at the end. This is an operator's tool on their own machine: addresses show.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use super::{DbArg, Outcome, report_invalid};
use crate::audience::{self, AudienceError, CampaignQuery, ContactFacts, Decision, MediumFacts};
use crate::message::Content;
use crate::render::{ContactView, RenderError, Renderer, RunContext};
use crate::spec;
use crate::spec::campaign::CampaignSpec;
use crate::spec::load::{Loaded, Object};
use crate::spec::suggest::did_you_mean;
use crate::store::Store;
use crate::store::contacts::ContactRecord;

/// What `unsubscribe_url` renders as in a preview: the daemon gives each contact a real one.
pub const PREVIEW_UNSUBSCRIBE_URL: &str = "https://herald.invalid/unsubscribe/preview";

#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("who").required(true).args(["contact", "sample"])
))]
pub struct RenderArgs {
    /// The campaign whose messages to render.
    pub campaign: String,
    /// The directory of campaign files.
    #[arg(long)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
    /// Render for this contact (by id).
    #[arg(long, value_name = "ID")]
    pub contact: Option<String>,
    /// Render for the campaign's first N recipients.
    #[arg(long, value_name = "N")]
    pub sample: Option<u32>,
    #[arg(long, value_enum, default_value_t = RenderFormat::Text)]
    pub format: RenderFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RenderFormat {
    Text,
    Json,
}

/// One contact's messages.
#[derive(Serialize)]
struct ContactReport {
    contact: String,
    name: Option<String>,
    locale: Option<String>,
    timezone: Option<String>,
    /// Why the campaign would not send to this contact, when it would not.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    messages: Vec<MessageReport>,
}

#[derive(Serialize)]
struct MessageReport {
    channel: String,
    medium: &'static str,
    to: Option<String>,
    /// The locale override used, `null` for the default content.
    content_locale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(args: RenderArgs, now: jiff::Timestamp) -> anyhow::Result<Outcome> {
    let loaded = spec::load_dir(&args.dir)?;
    let checked = spec::validate(loaded, now);
    if !checked.is_valid() {
        report_invalid(&checked)?;
        return Ok(Outcome::Invalid);
    }
    let loaded = &checked.loaded;
    let query = match audience::campaign_query(loaded, &args.campaign, now) {
        Ok(q) => q,
        Err(AudienceError::UnknownCampaign(name)) => {
            let names = loaded.objects.iter().filter_map(|o| match o {
                Object::Campaign(d) => Some(d.metadata.name.value.as_str()),
                _ => None,
            });
            match did_you_mean(&name, names) {
                Some(s) => eprintln!("error: no campaign is named `{name}`; did you mean `{s}`?"),
                None => eprintln!("error: no campaign is named `{name}`"),
            }
            return Ok(Outcome::Invalid);
        }
        Err(e) => return Err(e.into()),
    };
    let campaign = campaign_spec(loaded, &args.campaign).expect("campaign_query found it");
    let renderer = match renderer_for(loaded, campaign) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Outcome::Invalid);
        }
    };
    let zone = campaign
        .schedule
        .value
        .timezone
        .as_ref()
        .and_then(|tz| spec::values::parse_time_zone(&tz.value).ok());

    let store = Store::open(&args.db.path)
        .await
        .with_context(|| format!("while opening the store {}", args.db.path.display()))?;
    let mut chosen: Vec<(ContactRecord, Vec<usize>, Option<String>)> = Vec::new();
    if let Some(id) = &args.contact {
        let Some(record) = store.contact(id).await? else {
            store.close().await;
            eprintln!("error: no contact has the id `{id}`");
            return Ok(Outcome::Invalid);
        };
        let (channels, note) = channels_for(&query, &record, campaign);
        chosen.push((record, channels, note));
    } else {
        let n = args.sample.expect("clap requires --contact or --sample");
        let sample = store
            .campaign_sample(&query, n)
            .await
            .context("while sampling the campaign's recipients")?;
        for recipient in sample {
            let Some(record) = store.contact(&recipient.id).await? else {
                continue; // deleted between the two reads
            };
            let channels = recipient
                .channels
                .iter()
                .filter_map(|name| query.channels.iter().position(|c| &c.name == name))
                .collect();
            chosen.push((record, channels, None));
        }
    }
    store.close().await;

    let mut reports = Vec::new();
    let (mut messages, mut failed) = (0, 0);
    for (record, channels, note) in chosen {
        let view = ContactView::from(&record);
        let facts = facts_of(&record);
        let mut report = ContactReport {
            contact: view.id.clone(),
            name: view.name.clone(),
            locale: view.locale.clone(),
            timezone: view.timezone.clone(),
            note,
            messages: Vec::new(),
        };
        for i in channels {
            let channel = &query.channels[i];
            let run = RunContext {
                campaign: args.campaign.clone(),
                run_id: 0,
                channel: channel.name.clone(),
                now,
                unsubscribe_url: Some(PREVIEW_UNSUBSCRIBE_URL.to_string()),
                timezone: zone.clone(),
            };
            let rendered = renderer.render(channel.medium, &view, &run);
            messages += 1;
            let (content, error) = match rendered {
                Ok(c) => (Some(c), None),
                Err(e) => {
                    failed += 1;
                    (None, Some(e))
                }
            };
            report.messages.push(MessageReport {
                channel: channel.name.clone(),
                medium: channel.medium.as_str(),
                to: audience::address_of(&facts, channel.medium).map(String::from),
                content_locale: renderer
                    .chosen_locale(channel.medium, view.locale.as_deref())
                    .map(String::from),
                content,
                error: error.as_ref().map(RenderError::to_string),
            });
        }
        reports.push(report);
    }

    let mut stdout = std::io::stdout().lock();
    match args.format {
        RenderFormat::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&reports)?)?,
        RenderFormat::Text => {
            if reports.is_empty() {
                writeln!(stdout, "campaign `{}` has no recipients", args.campaign)?;
            }
            for (i, report) in reports.iter().enumerate() {
                if i > 0 {
                    writeln!(stdout)?;
                }
                stdout.write_all(text(report).as_bytes())?;
            }
        }
    }
    if failed > 0 {
        eprintln!("error: {failed} of {messages} messages could not be rendered");
        return Ok(Outcome::Invalid);
    }
    Ok(Outcome::Ok)
}

fn campaign_spec<'a>(loaded: &'a Loaded, name: &str) -> Option<&'a CampaignSpec> {
    loaded.objects.iter().find_map(|o| match o {
        Object::Campaign(d) if d.metadata.name.value == name => Some(&d.spec),
        _ => None,
    })
}

fn renderer_for(loaded: &Loaded, campaign: &CampaignSpec) -> Result<Renderer, RenderError> {
    let name = &campaign.template.value;
    let template = loaded
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Template(d) if &d.metadata.name.value == name => Some(&d.spec),
            _ => None,
        })
        .expect("validation checks that the template exists");
    let vars = campaign
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    Renderer::new(name, template, &vars)
}

/// The channels the campaign would use for this contact, or, when it would leave them
/// out, the first channel where they have an address (else the first channel) and why.
fn channels_for(
    query: &CampaignQuery,
    record: &ContactRecord,
    campaign: &CampaignSpec,
) -> (Vec<usize>, Option<String>) {
    let facts = facts_of(record);
    let why = match query.decide(&facts, &[]) {
        Some(Decision::Send(channels)) => return (channels, None),
        Some(Decision::Excluded(reason)) => {
            format!(
                "the campaign would leave this contact out: {} ({reason})",
                reason.phrase()
            )
        }
        None => format!(
            "this contact is not in the campaign's audience (segment `{}`)",
            campaign.audience.segment.value
        ),
    };
    let channel = query
        .channels
        .iter()
        .position(|c| audience::address_of(&facts, c.medium).is_some())
        .unwrap_or(0);
    let note = format!(
        "{why}; shown as it would render on `{}`",
        query.channels[channel].name
    );
    (vec![channel], Some(note))
}

fn facts_of(record: &ContactRecord) -> ContactFacts {
    let c = &record.data;
    ContactFacts {
        pk: record.pk,
        id: c.id.clone(),
        name: c.name.clone(),
        phone: c.phone.clone(),
        email: c.email.clone(),
        telegram: c.telegram.clone(),
        locale: c.locale.clone(),
        timezone: c.timezone.clone(),
        country: c.country.clone(),
        created_at: c.created_at,
        tags: c.tags.clone(),
        attributes: c.attributes.clone(),
        media: c
            .media
            .iter()
            .map(|(m, s)| {
                let facts = MediumFacts {
                    opted_in_at: s.opted_in_at,
                    opted_out_at: s.opted_out_at,
                    last_inbound_at: s.last_inbound_at,
                };
                (*m, facts)
            })
            .collect(),
    }
}

/// A contact's messages as text: a header line, then per message a line naming the
/// channel, medium, address and content, and each rendered field (multi-line values
/// indented below their name).
fn text(report: &ContactReport) -> String {
    let mut out = report.contact.clone();
    if let Some(name) = &report.name {
        out.push_str(&format!(" ({name})"));
    }
    let about: Vec<String> = [
        report.locale.as_ref().map(|l| format!("locale {l}")),
        report.timezone.as_ref().map(|z| format!("time zone {z}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !about.is_empty() {
        out.push_str(&format!(", {}", about.join(", ")));
    }
    out.push('\n');
    if let Some(note) = &report.note {
        out.push_str(&format!("  note: {note}\n"));
    }
    for m in &report.messages {
        out.push_str(&format!(
            "  {} ({}) to {}, content: {}\n",
            m.channel,
            m.medium,
            m.to.as_deref().unwrap_or("(no address)"),
            m.content_locale.as_deref().unwrap_or("default"),
        ));
        if let Some(error) = &m.error {
            out.push_str(&format!("    error: {error}\n"));
        }
        if let Some(content) = &m.content {
            for (field, value) in fields(content) {
                if value.contains('\n') {
                    out.push_str(&format!("    {field}:\n"));
                    for line in value.lines() {
                        if line.is_empty() {
                            out.push('\n');
                        } else {
                            out.push_str(&format!("      {line}\n"));
                        }
                    }
                } else {
                    out.push_str(&format!("    {field}: {value}\n"));
                }
            }
        }
    }
    out
}

/// Every rendered field of a message with its name, in the order a reader expects.
fn fields(content: &Content) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |name: String, value: Option<&str>| {
        if let Some(v) = value {
            out.push((name, v.to_string()));
        }
    };
    let media_type = |t| match t {
        crate::spec::template::MediaType::Image => "image",
        crate::spec::template::MediaType::Audio => "audio",
        crate::spec::template::MediaType::Video => "video",
        crate::spec::template::MediaType::Document => "document",
    };
    match content {
        Content::Sms(m) => push("text".into(), Some(&m.text)),
        Content::Whatsapp(m) => {
            if let Some(t) = &m.template {
                push(
                    "template".into(),
                    Some(&format!("{} ({})", t.name, t.language)),
                );
                push("template.content_sid".into(), t.content_sid.as_deref());
                for (part, params) in [
                    ("header", &t.header),
                    ("body", &t.body),
                    ("buttons", &t.buttons),
                ] {
                    for (i, p) in params.iter().enumerate() {
                        push(format!("template.{part}[{i}]"), Some(p));
                    }
                }
            }
            if let Some(media) = &m.media {
                push(
                    "media".into(),
                    Some(&format!("{} {}", media_type(media.media_type), media.url)),
                );
                push("media.caption".into(), media.caption.as_deref());
                push("media.filename".into(), media.filename.as_deref());
            }
            push("text".into(), m.text.as_deref());
            for (i, b) in m.buttons.iter().enumerate() {
                push(format!("buttons[{i}]"), Some(&button(b)));
            }
            if let Some(list) = &m.list {
                push("list.button".into(), Some(&list.button));
                for (s, section) in list.sections.iter().enumerate() {
                    push(
                        format!("list.sections[{s}].title"),
                        section.title.as_deref(),
                    );
                    for (r, row) in section.rows.iter().enumerate() {
                        let mut line = format!("{}: {}", row.id, row.title);
                        if let Some(d) = &row.description {
                            line.push_str(&format!(" ({d})"));
                        }
                        push(format!("list.sections[{s}].rows[{r}]"), Some(&line));
                    }
                }
            }
        }
        Content::Telegram(m) => {
            if let Some(media) = &m.media {
                push(
                    "media".into(),
                    Some(&format!("{} {}", media_type(media.media_type), media.url)),
                );
                push("media.caption".into(), media.caption.as_deref());
                push("media.filename".into(), media.filename.as_deref());
            }
            push("text".into(), m.text.as_deref());
            for (i, b) in m.buttons.iter().enumerate() {
                push(format!("buttons[{i}]"), Some(&button(b)));
            }
        }
        Content::Email(m) => {
            push("subject".into(), Some(&m.subject));
            push("html".into(), m.html.as_deref());
            push("text".into(), m.text.as_deref());
        }
    }
    out
}

fn button(b: &crate::message::ButtonMessage) -> String {
    match (&b.url, &b.reply) {
        (Some(url), _) => format!("{} → {url}", b.text),
        (None, Some(reply)) => format!("{} → reply {reply}", b.text),
        (None, None) => b.text.clone(),
    }
}
