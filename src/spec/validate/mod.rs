//! Validation of a whole directory: every error at once, each at file:line:column.
//!
//! Validation has no side effects. It takes what the loader read and the current time
//! (injected, so that "an `at` in the past" is testable) and returns every finding,
//! errors and warnings, in reading order.

mod channels;
mod delivery;
mod names;
mod references;
mod schedule;
mod segments;
mod templates;
mod text_position;

use std::collections::BTreeMap;

use super::campaign::CampaignSpec;
use super::channel::ChannelSpec;
use super::diagnostic::{self, Diagnostic};
use super::envelope::{Document, Kind, Metadata};
use super::load::{Loaded, Object};
use super::located::Located;
use super::segment::SegmentSpec;
use super::template::TemplateSpec;
use super::webhook::WebhookSpec;

pub use channels::is_credential_header;
pub use delivery::MAX_SEND_DURATION;
pub use schedule::{ParsedSchedule, parse_at, resolve_local};
pub use templates::{CONTACT_FIELDS, RUN_SCOPE};

/// A directory that has been read and validated.
#[derive(Clone, Debug)]
pub struct Checked {
    pub loaded: Loaded,
    /// Every finding, loader's and validator's, in reading order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// The objects of a revision by kind and name. A duplicate name keeps its first definition
/// here (the second is reported by the name checks).
pub(crate) struct Index<'a> {
    pub channels: BTreeMap<&'a str, &'a Document<ChannelSpec>>,
    pub segments: BTreeMap<&'a str, &'a Document<SegmentSpec>>,
    pub templates: BTreeMap<&'a str, &'a Document<TemplateSpec>>,
    pub campaigns: BTreeMap<&'a str, &'a Document<CampaignSpec>>,
    pub webhooks: BTreeMap<&'a str, &'a Document<WebhookSpec>>,
    /// Names of documents that did not parse: they exist, but cannot be checked further.
    pub unparsed: Vec<(Kind, &'a str)>,
}

impl<'a> Index<'a> {
    fn new(objects: &'a [Object], unparsed: &'a [(Kind, Metadata)]) -> Self {
        let mut index = Index {
            channels: BTreeMap::new(),
            segments: BTreeMap::new(),
            templates: BTreeMap::new(),
            campaigns: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            unparsed: unparsed
                .iter()
                .map(|(k, m)| (*k, m.name.value.as_str()))
                .collect(),
        };
        for object in objects {
            match object {
                Object::Channel(d) => {
                    index.channels.entry(name_of(d)).or_insert(&**d);
                }
                Object::Segment(d) => {
                    index.segments.entry(name_of(d)).or_insert(&**d);
                }
                Object::Template(d) => {
                    index.templates.entry(name_of(d)).or_insert(&**d);
                }
                Object::Campaign(d) => {
                    index.campaigns.entry(name_of(d)).or_insert(&**d);
                }
                Object::Webhook(d) => {
                    index.webhooks.entry(name_of(d)).or_insert(&**d);
                }
            }
        }
        index
    }

    /// Names of `kind` that are defined, parsed or not.
    pub fn unparsed_names(&self, kind: Kind) -> impl Iterator<Item = &'a str> + '_ {
        self.unparsed
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, n)| *n)
    }
}

fn name_of<S>(d: &Document<S>) -> &str {
    &d.metadata.name.value
}

/// Validates what was loaded, as of `now`.
pub fn validate(loaded: Loaded, now: jiff::Timestamp) -> Checked {
    let mut out = loaded.diagnostics.clone();
    {
        let index = Index::new(&loaded.objects, &loaded.unparsed);
        names::check(&loaded, &mut out);
        references::check(&index, &mut out);
        segments::check(&index, &mut out);
        channels::check(&index, &mut out);
        schedule::check(&index, now, &mut out);
        delivery::check(&index, &mut out);
        templates::check(&index, &loaded, &mut out);
    }
    if loaded.objects.is_empty() && loaded.unparsed.is_empty() && out.is_empty() {
        out.push(Diagnostic {
            code: super::Code::EmptyRevision,
            severity: super::Severity::Error,
            message: "the directory holds no documents; applying it would retire every campaign".into(),
            at: None,
            help: Some("check the path; `herald serve --allow-empty` applies an empty directory on purpose".into()),
            related: Vec::new(),
        });
    }
    diagnostic::sort(&mut out);
    out.dedup();
    Checked {
        loaded,
        diagnostics: out,
    }
}

/// Checks a duration field, reporting a malformed one.
pub(crate) fn check_duration(
    field: &Located<String>,
    what: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<std::time::Duration> {
    match super::values::parse_duration(&field.value) {
        Ok(d) => Some(d),
        Err(e) => {
            out.push(Diagnostic::error(
                super::Code::InvalidDuration,
                &field.at,
                format!("{what}: {e}"),
            ));
            None
        }
    }
}

/// Checks that a URL is absolute http(s) with a host.
pub(crate) fn check_url(field: &Located<String>, what: &str, out: &mut Vec<Diagnostic>) {
    let url = field.value.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    let templated = url.contains("{{");
    if !templated && host.is_none_or(|h| h.is_empty() || h.contains(' ')) {
        out.push(
            Diagnostic::error(
                super::Code::InvalidUrl,
                &field.at,
                format!("{what} is not an absolute http(s) URL"),
            )
            .help("write an absolute URL such as https://example.com/path"),
        );
    }
}
