//! The plan: what applying the directory would change, as a pure function of the desired
//! objects (a validated [`Loaded`]), the stored ones, the audience counts and "now".
//!
//! No database here: the caller reads the store and counts audiences (only of the campaigns
//! [`touched_campaigns`] names), and this module diffs, works out next fire times and send
//! times, and turns the mistakes only a comparison can see into errors.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::audience::Breakdown;
use crate::schedule::{ParsedSchedule, Upcoming, upcoming};
use crate::spec::campaign::CampaignSpec;
use crate::spec::channel::ChannelSpec;
use crate::spec::located::{Located, Pos};
use crate::spec::segment::Condition;
use crate::spec::validate::is_credential_header;
use crate::spec::values::RateLimit;
use crate::spec::{Code, Diagnostic, Kind, Loaded, Object, Severity};

/// How many fire times of a cron the plan shows.
pub const NEXT_FIRES: usize = 3;

/// An object as the store holds it: its body is `{"metadata": .., "spec": ..}`.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredObject {
    pub kind: Kind,
    pub name: String,
    pub body: Value,
    /// Where it was written when it was applied.
    pub file: String,
    pub line: u32,
}

impl From<&crate::store::revisions::StoredSpec> for StoredObject {
    fn from(s: &crate::store::revisions::StoredSpec) -> Self {
        StoredObject {
            kind: s.kind,
            name: s.name.clone(),
            body: s.body.clone(),
            file: s.file.clone(),
            line: s.line,
        }
    }
}

/// What happens to one object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Create,
    Update { fields: Vec<FieldChange> },
    Delete,
}

impl Action {
    pub fn symbol(&self) -> char {
        match self {
            Action::Create => '+',
            Action::Update { .. } => '~',
            Action::Delete => '-',
        }
    }
}

/// One object's change. `file`/`line` are where the object is written (for a deleted one,
/// where it was written when last applied).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
    pub file: String,
    pub line: u32,
}

/// One changed field. `None` is "absent". A credential's values are `"***"` and `masked`
/// is set: the change is shown, never the value (not even the reference).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
    pub masked: bool,
}

/// Why a campaign appears in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignStatus {
    /// New.
    Created,
    /// Its own spec changed.
    Changed,
    /// Something it uses changed: its template, a segment, a channel.
    Affected,
    /// Removed: its active runs are cancelled on apply.
    Removed,
}

/// When a campaign fires, as of the plan's "now". In JSON: `{"kind": "disabled" |
/// "on_apply"}`, `{"kind": "once" | "passed", "at": T}` or `{"kind": "recurring", "at": [T]}`
/// where T is RFC 9557 (`2027-11-26T09:00:00-05:00[America/Lima]`).
#[derive(Clone, Debug, PartialEq)]
pub enum Fires {
    /// `enabled: false`: it never fires on its own.
    Disabled,
    /// `now: true`.
    OnApply,
    /// A one-off ahead.
    Once(jiff::Zoned),
    /// A one-off already past: it fires no more.
    Passed(jiff::Zoned),
    /// A cron's next fire times.
    Recurring(Vec<jiff::Zoned>),
}

impl Fires {
    /// The next fire, as people read it.
    pub fn summary(&self) -> String {
        let show = crate::schedule::display;
        match self {
            Fires::Disabled => "disabled".into(),
            Fires::OnApply => "on apply".into(),
            Fires::Once(at) => show(at),
            Fires::Passed(at) => format!("past: {}", show(at)),
            Fires::Recurring(times) => times.first().map_or_else(|| "never".into(), show),
        }
    }

    /// Every fire time shown, as people read them.
    pub fn all(&self) -> String {
        match self {
            Fires::Recurring(times) if !times.is_empty() => times
                .iter()
                .map(crate::schedule::display)
                .collect::<Vec<_>>()
                .join(", "),
            other => other.summary(),
        }
    }
}

impl Serialize for Fires {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = match self {
            Fires::Disabled => serde_json::json!({"kind": "disabled"}),
            Fires::OnApply => serde_json::json!({"kind": "on_apply"}),
            Fires::Once(at) => serde_json::json!({"kind": "once", "at": at.to_string()}),
            Fires::Passed(at) => serde_json::json!({"kind": "passed", "at": at.to_string()}),
            Fires::Recurring(times) => serde_json::json!({
                "kind": "recurring",
                "at": times.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        };
        value.serialize(serializer)
    }
}

/// How long a campaign's send would take at its effective rate.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SendTime {
    /// The audience was not counted (no store).
    Unknown,
    /// Neither the campaign nor its channels set a rate.
    NoRateLimit,
    Estimate {
        seconds: u64,
        /// What sets the pace: `campaign (600/min)` or `channel sms-outbox (10/s)`.
        limited_by: String,
        /// max_duration, or its default.
        max_seconds: u64,
    },
}

impl SendTime {
    pub fn summary(&self) -> String {
        match self {
            SendTime::Unknown => "not counted".into(),
            SendTime::NoRateLimit => "no rate limit".into(),
            SendTime::Estimate { seconds: 0, .. } => "nothing to send".into(),
            SendTime::Estimate { seconds, .. } => format_estimate(*seconds),
        }
    }
}

/// A campaign's audience now and, when it is in force already, under the stored revision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AudienceChange {
    pub now: Breakdown,
    pub current: Option<Breakdown>,
}

impl AudienceChange {
    /// `1,204 recipients (+120)`, `(new)`, or `(unchanged)`.
    pub fn summary(&self) -> String {
        let now = self.now.recipients;
        let delta = match &self.current {
            None => "new".to_string(),
            Some(c) if c.recipients == now => "unchanged".to_string(),
            Some(c) => {
                let d = now as i128 - c.recipients as i128;
                let sign = if d > 0 { "+" } else { "-" };
                format!("{sign}{}", thousands(d.unsigned_abs() as u64))
            }
        };
        format!(
            "{} recipient{} ({delta})",
            thousands(now),
            if now == 1 { "" } else { "s" }
        )
    }
}

/// A campaign the plan touches, and what it would do.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CampaignImpact {
    pub name: String,
    pub status: CampaignStatus,
    /// Why it is touched: "new", "spec changed", "template offer changed", ...
    pub reasons: Vec<String>,
    /// `None` for a removed campaign, or when there is no store to count in.
    pub audience: Option<AudienceChange>,
    pub fires: Option<Fires>,
    pub send_time: Option<SendTime>,
}

/// The whole plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Sorted by kind, then name.
    pub changes: Vec<Change>,
    /// Sorted by name.
    pub campaigns: Vec<CampaignImpact>,
    /// Validation's warnings, and the errors only the plan can see (`schedule-in-past` for a
    /// new or rescheduled campaign, `send-too-long`).
    pub diagnostics: Vec<Diagnostic>,
    /// The desired revision's hash.
    pub hash: String,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    pub fn is_valid(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn count(&self, symbol: char) -> usize {
        self.changes
            .iter()
            .filter(|c| c.action.symbol() == symbol)
            .count()
    }
}

/// Audience counts for the touched campaigns: under the desired revision and under the one in
/// force. `None`: nothing was counted (no store).
#[derive(Clone, Debug, Default)]
pub struct Audiences {
    pub desired: BTreeMap<String, Breakdown>,
    pub current: BTreeMap<String, Breakdown>,
}

// ---------------------------------------------------------------------------------------
// Bodies and hashes

/// An object's stored body: `{"metadata": .., "spec": ..}`, secrets as references.
pub fn body(object: &Object) -> Value {
    serde_json::json!({
        "metadata": serde_json::to_value(object.metadata()).expect("metadata serializes"),
        "spec": object.spec_json(),
    })
}

/// JSON with object keys sorted at every level, whatever serde_json's map order.
pub fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::to_value(ordered).expect("a map of JSON serializes")
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a body's canonical JSON, hex.
pub fn body_hash(body: &Value) -> String {
    hex(Sha256::digest(canonical(body)))
}

/// A revision's identity: sha256 over its objects' (kind, name, body), sorted by kind and
/// name. Equal hashes mean equal revisions, whatever the files' layout or comments.
pub fn revision_hash<'a>(objects: impl IntoIterator<Item = (Kind, &'a str, &'a Value)>) -> String {
    let mut items: Vec<(Kind, &str, &Value)> = objects.into_iter().collect();
    items.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut hasher = Sha256::new();
    for (kind, name, body) in items {
        let line = serde_json::json!([kind.as_str(), name]).to_string();
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
        hasher.update(canonical(body).as_bytes());
        hasher.update(b"\n");
    }
    hex(hasher.finalize())
}

/// The hash of what was loaded. A directory with documents that did not parse also hashes
/// its files' text, so that two different broken directories do not look alike.
pub fn loaded_hash(loaded: &Loaded) -> String {
    let bodies: Vec<(Kind, String, Value)> = loaded
        .objects
        .iter()
        .map(|o| (o.kind(), o.name().value.clone(), body(o)))
        .collect();
    let objects = revision_hash(bodies.iter().map(|(k, n, b)| (*k, n.as_str(), b)));
    if loaded.diagnostics.is_empty() && loaded.unparsed.is_empty() {
        return objects;
    }
    let mut hasher = Sha256::new();
    hasher.update(objects.as_bytes());
    for file in &loaded.files {
        hasher.update(file.path.as_bytes());
        hasher.update(b"\0");
        hasher.update(file.text.as_bytes());
        hasher.update(b"\0");
    }
    hex(hasher.finalize())
}

// ---------------------------------------------------------------------------------------
// The diff

/// The changes from `stored` to `desired`, by kind then name. Duplicate names in `desired`
/// keep their first definition (validation rejects duplicates anyway).
pub fn diff(desired: &Loaded, stored: &[StoredObject]) -> Vec<Change> {
    let mut wanted: BTreeMap<(Kind, &str), &Object> = BTreeMap::new();
    for object in &desired.objects {
        wanted
            .entry((object.kind(), object.name().value.as_str()))
            .or_insert(object);
    }
    let held: BTreeMap<(Kind, &str), &StoredObject> = stored
        .iter()
        .map(|s| ((s.kind, s.name.as_str()), s))
        .collect();
    let keys: BTreeSet<(Kind, &str)> = wanted.keys().chain(held.keys()).copied().collect();
    let mut changes = Vec::new();
    for key @ (kind, name) in keys {
        let change = |action, file: &str, line| Change {
            kind,
            name: name.to_string(),
            action,
            file: file.to_string(),
            line,
        };
        match (wanted.get(&key), held.get(&key)) {
            (Some(object), None) => {
                let at = &object.name().at;
                changes.push(change(Action::Create, &at.file, at.line));
            }
            (Some(object), Some(stored)) => {
                let mut fields = Vec::new();
                let new = body(object);
                compare(
                    kind,
                    &mut Vec::new(),
                    Some(&stored.body),
                    Some(&new),
                    &mut fields,
                );
                if !fields.is_empty() {
                    let at = &object.name().at;
                    changes.push(change(Action::Update { fields }, &at.file, at.line));
                }
            }
            (None, Some(stored)) => changes.push(change(Action::Delete, &stored.file, stored.line)),
            (None, None) => unreachable!("the key came from one of the maps"),
        }
    }
    changes
}

/// Arrays whose JSON is at most this long (and holds only scalars) are shown whole.
const SHORT_ARRAY: usize = 60;

fn compare(
    kind: Kind,
    path: &mut Vec<String>,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<FieldChange>,
) {
    if old == new {
        return;
    }
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                path.push(key.clone());
                compare(kind, path, a.get(key), b.get(key), out);
                path.pop();
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if !(is_short(a) && is_short(b)) => {
            for i in 0..a.len().max(b.len()) {
                path.push(format!("[{i}]"));
                compare(kind, path, a.get(i), b.get(i), out);
                path.pop();
            }
        }
        _ => {
            let (old, old_masked) = masked(kind, path, old);
            let (new, new_masked) = masked(kind, path, new);
            out.push(FieldChange {
                path: render_path(path),
                old,
                new,
                masked: old_masked || new_masked,
            });
        }
    }
}

fn is_short(items: &[Value]) -> bool {
    items.iter().all(|v| !v.is_object() && !v.is_array())
        && Value::Array(items.to_vec()).to_string().len() <= SHORT_ARRAY
}

/// `spec.webhook.headers["X-Api.Key"]`, `spec.match.all[1].value`.
fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if segment.starts_with('[') {
            out.push_str(segment);
        } else if segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        } else {
            out.push_str(&format!("[{}]", Value::String(segment.clone())));
        }
    }
    out
}

/// The credential fields of channels (any provider block) and webhooks.
const CREDENTIAL_FIELDS: [&str; 8] = [
    "auth_token",
    "access_token",
    "app_secret",
    "verify_token",
    "bot_token",
    "webhook_secret",
    "password",
    "secret",
];

/// Whether the value at `path` of an object of `kind` is a credential.
fn is_credential(kind: Kind, path: &[String], value: &Value) -> bool {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match (kind, path.as_slice()) {
        (Kind::Webhook, ["spec", "secret"]) => true,
        (Kind::Channel, ["spec", "webhook", "headers", header]) => {
            value.as_str().is_some_and(|v| v.starts_with("${")) || is_credential_header(header)
        }
        (Kind::Channel, ["spec", _provider, field]) => CREDENTIAL_FIELDS.contains(field),
        _ => false,
    }
}

/// The value with every credential inside it replaced by `"***"`, and whether any was.
fn masked(kind: Kind, path: &mut Vec<String>, value: Option<&Value>) -> (Option<Value>, bool) {
    fn walk(kind: Kind, path: &mut Vec<String>, value: &Value, hit: &mut bool) -> Value {
        if is_credential(kind, path, value) {
            *hit = true;
            return Value::String("***".into());
        }
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        path.push(k.clone());
                        let v = walk(kind, path, v, hit);
                        path.pop();
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let mut hit = false;
    let value = value.map(|v| walk(kind, path, v, &mut hit));
    (value, hit)
}

// ---------------------------------------------------------------------------------------
// Campaigns touched

/// The campaigns the changes touch, by name, with the reasons: created or changed
/// themselves, or using (in `desired`) a template, segment (also through other segments and
/// exclusions) or channel that changed. Removed campaigns are listed as removed.
pub fn touched_campaigns(
    desired: &Loaded,
    changes: &[Change],
) -> BTreeMap<String, (CampaignStatus, Vec<String>)> {
    // Created dependencies count too: a Segment named like a built-in one overrides it.
    let changed: BTreeSet<(Kind, &str)> =
        changes.iter().map(|c| (c.kind, c.name.as_str())).collect();
    let segments = segment_refs(desired);
    let mut out = BTreeMap::new();
    for change in changes.iter().filter(|c| c.kind == Kind::Campaign) {
        let entry = match &change.action {
            Action::Create => (CampaignStatus::Created, vec!["new".to_string()]),
            Action::Update { fields } => {
                let mut parts: Vec<String> = fields
                    .iter()
                    .map(|f| {
                        f.path
                            .split(['.', '['])
                            .take(2)
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .collect();
                parts.dedup();
                (
                    CampaignStatus::Changed,
                    vec![format!("changed: {}", parts.join(", "))],
                )
            }
            Action::Delete => (CampaignStatus::Removed, vec!["removed".to_string()]),
        };
        out.insert(change.name.clone(), entry);
    }
    for object in &desired.objects {
        let Object::Campaign(doc) = object else {
            continue;
        };
        let spec = &doc.spec;
        let mut reasons = Vec::new();
        if changed.contains(&(Kind::Template, spec.template.value.as_str())) {
            reasons.push(format!("template {} changed", spec.template.value));
        }
        let roots = std::iter::once(&spec.audience.segment).chain(&spec.audience.exclude);
        let mut seen = BTreeSet::new();
        for root in roots {
            for segment in reachable(&root.value, &segments) {
                if seen.insert(segment) && changed.contains(&(Kind::Segment, segment)) {
                    reasons.push(format!("segment {segment} changed"));
                }
            }
        }
        for channel in spec.channels.channels.value.iter() {
            if changed.contains(&(Kind::Channel, channel.value.as_str())) {
                reasons.push(format!("channel {} changed", channel.value));
            }
        }
        if reasons.is_empty() {
            continue;
        }
        let entry = out
            .entry(doc.metadata.name.value.clone())
            .or_insert((CampaignStatus::Affected, Vec::new()));
        if entry.0 != CampaignStatus::Created {
            entry.1.extend(reasons);
        }
    }
    out
}

/// Each segment's `{segment: ..}` references.
fn segment_refs(loaded: &Loaded) -> BTreeMap<&str, Vec<&str>> {
    fn collect<'a>(condition: &'a Condition, out: &mut Vec<&'a str>) {
        if let Some(name) = &condition.segment {
            out.push(&name.value);
        }
        for group in [&condition.all, &condition.any].into_iter().flatten() {
            for c in group.value.iter() {
                collect(&c.value, out);
            }
        }
        if let Some(not) = &condition.not {
            collect(&not.value, out);
        }
    }
    let mut refs = BTreeMap::new();
    for object in &loaded.objects {
        if let Object::Segment(doc) = object {
            let mut names = Vec::new();
            collect(&doc.spec.condition.value, &mut names);
            refs.entry(doc.metadata.name.value.as_str())
                .or_insert(names);
        }
    }
    refs
}

/// `root` and every segment it refers to, transitively (cycles are cut).
fn reachable<'a>(root: &'a str, refs: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<&'a str> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        for next in refs.get(out[i]).into_iter().flatten() {
            if !out.contains(next) {
                out.push(next);
            }
        }
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------
// The plan

/// What [`plan`] needs.
pub struct PlanInput<'a> {
    /// The directory, validated and valid.
    pub desired: &'a Loaded,
    /// Validation's findings (warnings only, for a valid directory).
    pub diagnostics: &'a [Diagnostic],
    pub stored: &'a [StoredObject],
    /// `None`: there is no store to count audiences in.
    pub audiences: Option<&'a Audiences>,
    pub now: jiff::Timestamp,
}

/// Computes the plan.
pub fn plan(input: &PlanInput) -> Plan {
    let changes = diff(input.desired, input.stored);
    let touched = touched_campaigns(input.desired, &changes);
    let mut diagnostics: Vec<Diagnostic> = input.diagnostics.to_vec();
    let campaigns_by_name: BTreeMap<&str, &crate::spec::Document<CampaignSpec>> = input
        .desired
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::Campaign(d) => Some((d.metadata.name.value.as_str(), &**d)),
            _ => None,
        })
        .collect();
    let stored_schedule = |name: &str| {
        input
            .stored
            .iter()
            .find(|s| s.kind == Kind::Campaign && s.name == name)
            .map(|s| s.body["spec"]["schedule"].clone())
    };
    // An `at` already past is history for a campaign that ran; for a new or rescheduled
    // one it is a send that will never happen.
    for (name, doc) in &campaigns_by_name {
        let rescheduled = match stored_schedule(name) {
            None => true,
            Some(old) => old != serde_json::to_value(&doc.spec.schedule).expect("serializes"),
        };
        let Some(at) = &doc.spec.schedule.value.at else {
            continue;
        };
        if !rescheduled {
            continue;
        }
        for d in diagnostics.iter_mut() {
            if d.code == Code::ScheduleInPast && d.at.as_ref() == Some(&at.at) {
                d.severity = Severity::Error;
                d.help = Some(if stored_schedule(name).is_none() {
                    "a new campaign at a past time would never fire: set `at` ahead, or use `now: true`".into()
                } else {
                    "the schedule changed to a past time, so it would never fire: set `at` ahead, or use `now: true`".into()
                });
            }
        }
    }
    let channels: BTreeMap<&str, &ChannelSpec> = input
        .desired
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::Channel(d) => Some((d.metadata.name.value.as_str(), &d.spec)),
            _ => None,
        })
        .collect();
    let mut campaigns = Vec::new();
    for (name, (status, reasons)) in touched {
        let mut impact = CampaignImpact {
            name: name.clone(),
            status,
            reasons,
            audience: None,
            fires: None,
            send_time: None,
        };
        if let Some(doc) = campaigns_by_name.get(name.as_str()) {
            let spec = &doc.spec;
            impact.fires = Some(fires(spec, input.now));
            if let Some(audiences) = input.audiences {
                impact.audience = audiences.desired.get(&name).map(|now| AudienceChange {
                    now: now.clone(),
                    current: audiences.current.get(&name).cloned(),
                });
            }
            let send_time = match &impact.audience {
                None => SendTime::Unknown,
                Some(a) => send_time(spec, &channels, &a.now),
            };
            if let Some(d) = too_long(&name, spec, &send_time, impact.audience.as_ref()) {
                diagnostics.push(d);
            }
            impact.send_time = Some(send_time);
        }
        campaigns.push(impact);
    }
    crate::spec::diagnostic::sort(&mut diagnostics);
    let bodies: Vec<(Kind, String, Value)> = input
        .desired
        .objects
        .iter()
        .map(|o| (o.kind(), o.name().value.clone(), body(o)))
        .collect();
    Plan {
        changes,
        campaigns,
        diagnostics,
        hash: revision_hash(bodies.iter().map(|(k, n, b)| (*k, n.as_str(), b))),
    }
}

fn fires(spec: &CampaignSpec, now: jiff::Timestamp) -> Fires {
    if !spec.enabled {
        return Fires::Disabled;
    }
    let Ok(schedule) = ParsedSchedule::parse(&spec.schedule) else {
        return Fires::Recurring(Vec::new());
    };
    match upcoming(&schedule, now, NEXT_FIRES) {
        Upcoming::OnApply => Fires::OnApply,
        Upcoming::Once(at) => Fires::Once(at),
        Upcoming::Passed(at) => Fires::Passed(at),
        Upcoming::Recurring(times) => Fires::Recurring(times),
    }
}

/// The send time at the effective rate: each channel at min(its rate, the campaign's), and
/// all channels together at the campaign's rate; the slowest of those sets the pace.
pub fn send_time(
    spec: &CampaignSpec,
    channels: &BTreeMap<&str, &ChannelSpec>,
    audience: &Breakdown,
) -> SendTime {
    let rate_of = |rate: &Option<Located<crate::spec::values::Rate>>| {
        rate.as_ref().and_then(|r| r.value.parse().ok())
    };
    let campaign_rate: Option<RateLimit> = spec.delivery.as_ref().and_then(|d| rate_of(&d.rate));
    let max_seconds = spec.max_duration().as_secs();
    let mut slowest: Option<(f64, String)> = None;
    let mut consider = |seconds: f64, why: String| {
        if slowest.as_ref().is_none_or(|(s, _)| seconds > *s) {
            slowest = Some((seconds, why));
        }
    };
    let mut any_rate = campaign_rate.is_some();
    for (channel, &messages) in &audience.by_channel {
        let own = channels
            .get(channel.as_str())
            .and_then(|c| rate_of(&c.rate));
        any_rate |= own.is_some();
        let effective = match (own, campaign_rate) {
            (Some(c), Some(k)) if k.per_second() < c.per_second() => {
                Some((k, "campaign".to_string()))
            }
            (Some(c), _) => Some((c, format!("channel {channel}"))),
            (None, Some(k)) => Some((k, "campaign".to_string())),
            (None, None) => None,
        };
        if let Some((rate, who)) = effective {
            consider(
                messages as f64 / rate.per_second(),
                format!("{who} ({rate})"),
            );
        }
    }
    if let Some(k) = campaign_rate {
        consider(
            audience.messages as f64 / k.per_second(),
            format!("campaign ({k})"),
        );
    }
    if !any_rate {
        return SendTime::NoRateLimit;
    }
    let (seconds, limited_by) = slowest.unwrap_or((0.0, "campaign".into()));
    SendTime::Estimate {
        seconds: seconds.ceil() as u64,
        limited_by,
        max_seconds,
    }
}

/// `send-too-long` when the estimate exceeds max_duration (or 7 days): the rest would expire.
fn too_long(
    name: &str,
    spec: &CampaignSpec,
    send_time: &SendTime,
    audience: Option<&AudienceChange>,
) -> Option<Diagnostic> {
    let SendTime::Estimate {
        seconds,
        limited_by,
        max_seconds,
    } = send_time
    else {
        return None;
    };
    if seconds <= max_seconds {
        return None;
    }
    let delivery = spec.delivery.as_ref();
    let at: &Pos = delivery
        .and_then(|d| d.max_duration.as_ref().map(|m| &m.at))
        .or_else(|| delivery.and_then(|d| d.rate.as_ref().map(|r| &r.at)))
        .unwrap_or(&spec.schedule.at);
    let messages = audience.map_or(0, |a| a.now.messages);
    let limit = if delivery.and_then(|d| d.max_duration.as_ref()).is_some() {
        "its max_duration"
    } else {
        "the default max_duration"
    };
    Some(
        Diagnostic::error(
            Code::SendTooLong,
            at,
            format!(
                "campaign `{name}` needs about {} to send {} messages at {limited_by}, longer than {limit} of {}: the rest would expire",
                format_estimate(*seconds),
                thousands(messages),
                format_estimate(*max_seconds),
            ),
        )
        .help("raise the rate (the campaign's and its channels'), narrow the audience, or allow a longer max_duration (at most 7d)"),
    )
}

/// `45s`, `12m30s`, `2h10m` (rounded up to the minute past an hour), `3d4h`.
pub fn format_estimate(seconds: u64) -> String {
    let rounded = if seconds >= 3_600 {
        seconds.div_ceil(60) * 60
    } else {
        seconds
    };
    crate::spec::values::format_duration(Duration::from_secs(rounded))
}

/// `1204` → `1,204`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SourceFile, load_sources, validate};

    fn load(files: &[(&str, &str)]) -> Loaded {
        let loaded = load_sources(
            files
                .iter()
                .map(|(path, text)| SourceFile {
                    path: (*path).into(),
                    text: (*text).to_string(),
                })
                .collect(),
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        loaded
    }

    fn stored(loaded: &Loaded) -> Vec<StoredObject> {
        loaded
            .objects
            .iter()
            .map(|o| StoredObject {
                kind: o.kind(),
                name: o.name().value.clone(),
                body: body(o),
                file: o.name().at.file.to_string(),
                line: o.name().at.line,
            })
            .collect()
    }

    fn fields(changes: &[Change], name: &str) -> Vec<FieldChange> {
        match &changes.iter().find(|c| c.name == name).unwrap().action {
            Action::Update { fields } => fields.clone(),
            other => panic!("{name}: {other:?}"),
        }
    }

    const CHANNEL: &str = "apiVersion: herald/v1\nkind: Channel\nmetadata: {name: sms}\nspec:\n  type: webhook\n  medium: sms\n  webhook:\n    url: https://gw.example.com/send\n    secret: \"${env:OLD}\"\n    headers: {Authorization: \"${env:AUTH}\", X-Tenant: a}\n  rate: {per_second: 10}\n";
    const SEGMENTS: &str = "apiVersion: herald/v1\nkind: Segment\nmetadata: {name: base}\nspec:\n  match: {field: tags, op: in, value: [a, b]}\n---\napiVersion: herald/v1\nkind: Segment\nmetadata: {name: outer}\nspec:\n  match:\n    all:\n      - {segment: base}\n      - {field: country, op: eq, value: PE}\n---\napiVersion: herald/v1\nkind: Segment\nmetadata: {name: unrelated}\nspec:\n  match: {field: country, op: exists}\n";
    const TEMPLATE: &str = "apiVersion: herald/v1\nkind: Template\nmetadata: {name: hello}\nspec:\n  sms: {text: \"Hello\"}\n";
    const CAMPAIGN: &str = "apiVersion: herald/v1\nkind: Campaign\nmetadata: {name: promo}\nspec:\n  audience: {segment: outer}\n  channels: {strategy: specific, use: [sms]}\n  template: hello\n  schedule: {at: \"2026-12-01T09:00:00\"}\n  consent: not_required\n  delivery:\n    rate: {per_minute: 60}\n";

    fn base() -> Loaded {
        load(&[
            ("c.yaml", CHANNEL),
            ("s.yaml", SEGMENTS),
            ("t.yaml", TEMPLATE),
            ("k.yaml", CAMPAIGN),
        ])
    }

    #[test]
    fn an_unchanged_directory_has_no_changes_and_the_same_hash() {
        let loaded = base();
        assert!(diff(&loaded, &stored(&loaded)).is_empty());
        // Layout and comments do not count: one file instead of four.
        let joined = format!("# a comment\n{CHANNEL}---\n{SEGMENTS}---\n{TEMPLATE}---\n{CAMPAIGN}");
        assert_eq!(
            loaded_hash(&load(&[("all.yaml", &joined)])),
            loaded_hash(&loaded)
        );
        let edited = TEMPLATE.replace("Hello", "Hello!");
        assert_ne!(
            loaded_hash(&load(&[("all.yaml", &joined.replace(TEMPLATE, &edited))])),
            loaded_hash(&loaded)
        );
    }

    #[test]
    fn changes_name_each_field_by_path_and_show_short_arrays_whole() {
        let before = base();
        let after = load(&[
            (
                "c.yaml",
                &CHANNEL.replace("per_second: 10", "per_second: 5"),
            ),
            (
                "s.yaml",
                &SEGMENTS
                    .replace("[a, b]", "[a, b, c]")
                    .replace("eq, value: PE", "eq, value: BR"),
            ),
            ("t.yaml", TEMPLATE),
            ("k.yaml", CAMPAIGN),
        ]);
        let changes = diff(&after, &stored(&before));
        let shown = |name| {
            fields(&changes, name)
                .iter()
                .map(|f| {
                    format!(
                        "{} {} {}",
                        f.path,
                        f.old.clone().unwrap(),
                        f.new.clone().unwrap()
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shown("sms"), ["spec.rate.per_second 10 5"]);
        assert_eq!(
            shown("base"),
            [r#"spec.match.value ["a","b"] ["a","b","c"]"#]
        );
        assert_eq!(shown("outer"), [r#"spec.match.all[1].value "PE" "BR""#]);
    }

    #[test]
    fn credentials_are_masked_in_every_change_but_the_change_is_shown() {
        let before = base();
        let after = load(&[
            (
                "c.yaml",
                &CHANNEL
                    .replace("${env:OLD}", "${env:NEW}")
                    .replace("${env:AUTH}", "${file:auth}")
                    .replace("X-Tenant: a", "X-Tenant: b, X-Api-Key: \"${env:KEY}\""),
            ),
            ("s.yaml", SEGMENTS),
            ("t.yaml", TEMPLATE),
            ("k.yaml", CAMPAIGN),
        ]);
        let changes = diff(&after, &stored(&before));
        let fields = fields(&changes, "sms");
        let shown: Vec<(&str, Option<&Value>, Option<&Value>, bool)> = fields
            .iter()
            .map(|f| (f.path.as_str(), f.old.as_ref(), f.new.as_ref(), f.masked))
            .collect();
        let stars = Value::String("***".into());
        let b = Value::String("b".into());
        let a = Value::String("a".into());
        assert_eq!(
            shown,
            [
                (
                    "spec.webhook.headers.Authorization",
                    Some(&stars),
                    Some(&stars),
                    true
                ),
                ("spec.webhook.headers.X-Api-Key", None, Some(&stars), true),
                ("spec.webhook.headers.X-Tenant", Some(&a), Some(&b), false),
                ("spec.webhook.secret", Some(&stars), Some(&stars), true),
            ]
        );
        let text = format!("{changes:?}");
        for reference in ["OLD", "NEW", "AUTH", "auth", "KEY"] {
            assert!(!text.contains(reference), "{reference} leaked: {text}");
        }
    }

    #[test]
    fn a_credential_inside_an_added_block_is_masked_too() {
        let before = load(&[(
            "c.yaml",
            "apiVersion: herald/v1\nkind: Channel\nmetadata: {name: o}\nspec:\n  type: outbox\n  medium: sms\n  outbox: {path: o.jsonl}\n",
        )]);
        let after = load(&[(
            "c.yaml",
            "apiVersion: herald/v1\nkind: Channel\nmetadata: {name: o}\nspec:\n  type: sms_twilio\n  sms_twilio: {account_sid: AC1, auth_token: \"${env:TWILIO}\", from: \"+15005550006\"}\n",
        )]);
        let changes = diff(&after, &stored(&before));
        let added = fields(&changes, "o")
            .into_iter()
            .find(|f| f.path == "spec.sms_twilio")
            .unwrap();
        assert!(added.masked);
        assert_eq!(added.new.unwrap()["auth_token"], "***");
    }

    #[test]
    fn a_campaign_is_touched_by_what_it_uses_even_through_other_segments() {
        let before = base();
        let changed_base = SEGMENTS.replace("[a, b]", "[a]");
        let after = load(&[
            ("c.yaml", CHANNEL),
            ("s.yaml", &changed_base),
            ("t.yaml", &TEMPLATE.replace("Hello", "Hi")),
            ("k.yaml", CAMPAIGN),
        ]);
        let touched = touched_campaigns(&after, &diff(&after, &stored(&before)));
        assert_eq!(
            touched["promo"],
            (
                CampaignStatus::Affected,
                vec![
                    "template hello changed".to_string(),
                    "segment base changed".to_string()
                ]
            )
        );
        let unrelated = load(&[
            ("c.yaml", CHANNEL),
            ("s.yaml", &SEGMENTS.replace("op: exists", "op: not_exists")),
            ("t.yaml", TEMPLATE),
            ("k.yaml", CAMPAIGN),
        ]);
        assert!(touched_campaigns(&unrelated, &diff(&unrelated, &stored(&before))).is_empty());
    }

    fn planned(desired: &Loaded, stored: &[StoredObject], now: &str) -> Plan {
        let checked = validate(desired.clone(), now.parse().unwrap());
        assert!(checked.is_valid(), "{:?}", checked.diagnostics);
        plan(&PlanInput {
            desired,
            diagnostics: &checked.diagnostics,
            stored,
            audiences: None,
            now: now.parse().unwrap(),
        })
    }

    #[test]
    fn a_past_at_is_an_error_for_a_new_or_rescheduled_campaign_and_history_otherwise() {
        let after_it_ran = "2026-12-05T00:00:00Z";
        let loaded = base();
        let new = planned(&loaded, &[], after_it_ran);
        assert_eq!(new.diagnostics.len(), 1);
        assert_eq!(
            (new.diagnostics[0].code, new.diagnostics[0].severity),
            (Code::ScheduleInPast, Severity::Error)
        );
        let unchanged = planned(&loaded, &stored(&loaded), after_it_ran);
        assert_eq!(unchanged.diagnostics[0].severity, Severity::Warning);
        assert!(unchanged.is_valid());
        let rescheduled = load(&[
            ("c.yaml", CHANNEL),
            ("s.yaml", SEGMENTS),
            ("t.yaml", TEMPLATE),
            ("k.yaml", &CAMPAIGN.replace("2026-12-01", "2026-12-02")),
        ]);
        let plan = planned(&rescheduled, &stored(&loaded), after_it_ran);
        assert!(!plan.is_valid());
        let other_change = load(&[
            ("c.yaml", CHANNEL),
            ("s.yaml", SEGMENTS),
            ("t.yaml", TEMPLATE),
            (
                "k.yaml",
                &CAMPAIGN.replace("per_minute: 60", "per_minute: 30"),
            ),
        ]);
        assert!(planned(&other_change, &stored(&loaded), after_it_ran).is_valid());
    }

    fn breakdown(by_channel: &[(&str, u64)]) -> Breakdown {
        Breakdown {
            recipients: by_channel.iter().map(|(_, n)| n).sum(),
            messages: by_channel.iter().map(|(_, n)| n).sum(),
            by_channel: by_channel
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect(),
            excluded: BTreeMap::new(),
        }
    }

    fn campaign_and_channels(
        campaign_rate: &str,
        rates: &[(&str, &str)],
    ) -> (CampaignSpec, Vec<(String, ChannelSpec)>) {
        let mut files = vec![(
            "k.yaml".to_string(),
            CAMPAIGN.replace("rate: {per_minute: 60}", campaign_rate),
        )];
        for (name, rate) in rates {
            files.push((
                format!("{name}.yaml"),
                CHANNEL
                    .replace("name: sms", &format!("name: {name}"))
                    .replace("rate: {per_second: 10}", rate),
            ));
        }
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let loaded = load(&refs);
        let mut campaign = None;
        let mut channels = Vec::new();
        for o in loaded.objects {
            match o {
                Object::Campaign(d) => campaign = Some(d.spec),
                Object::Channel(d) => channels.push((d.metadata.name.value, d.spec)),
                _ => {}
            }
        }
        (campaign.unwrap(), channels)
    }

    fn estimate(campaign_rate: &str, rates: &[(&str, &str)], audience: &[(&str, u64)]) -> SendTime {
        let (campaign, channels) = campaign_and_channels(campaign_rate, rates);
        let by_name = channels.iter().map(|(n, c)| (n.as_str(), c)).collect();
        send_time(&campaign, &by_name, &breakdown(audience))
    }

    #[test]
    fn the_send_time_is_set_by_the_slowest_channel_or_the_campaign_cap_on_the_total() {
        // 600 on a 10/s channel: 60 s; 600 on a 100/s channel: 6 s; the campaign's 20/s
        // over all 1,200 messages: 60 s; per channel the campaign caps b at 20/s: 30 s.
        let time = estimate(
            "rate: {per_second: 20}",
            &[
                ("a", "rate: {per_second: 10}"),
                ("b", "rate: {per_second: 100}"),
            ],
            &[("a", 600), ("b", 600)],
        );
        assert!(
            matches!(time, SendTime::Estimate { seconds: 60, .. }),
            "{time:?}"
        );
        let time = estimate(
            "rate: {per_second: 100}",
            &[
                ("a", "rate: {per_second: 10}"),
                ("b", "rate: {per_second: 100}"),
            ],
            &[("a", 600), ("b", 600)],
        );
        assert_eq!(
            time,
            SendTime::Estimate {
                seconds: 60,
                limited_by: "channel a (10/s)".into(),
                max_seconds: 86_400
            }
        );
        let time = estimate(
            "rate: {per_second: 5}",
            &[("a", "rate: {per_second: 10}")],
            &[("a", 100)],
        );
        assert!(
            matches!(&time, SendTime::Estimate { seconds: 20, limited_by, .. } if limited_by == "campaign (5/s)"),
            "{time:?}"
        );
    }

    #[test]
    fn no_rate_anywhere_is_no_rate_limit_and_no_error() {
        let time = estimate(
            "max_duration: 1h",
            &[("a", "max_in_flight: 4")],
            &[("a", 1_000_000)],
        );
        assert_eq!(time, SendTime::NoRateLimit);
    }

    #[test]
    fn a_send_over_max_duration_is_an_error_at_max_duration() {
        let (campaign, channels) = campaign_and_channels(
            "rate: {per_minute: 60}\n    max_duration: 1h",
            &[("sms", "rate: {per_second: 10}")],
        );
        let by_name = channels.iter().map(|(n, c)| (n.as_str(), c)).collect();
        let audience = AudienceChange {
            now: breakdown(&[("sms", 3_601)]),
            current: None,
        };
        let time = send_time(&campaign, &by_name, &audience.now);
        let error = too_long("promo", &campaign, &time, Some(&audience)).expect("too long");
        assert_eq!(error.code, Code::SendTooLong);
        assert_eq!(error.at.unwrap().line, 12, "the max_duration line");
        let audience = AudienceChange {
            now: breakdown(&[("sms", 3_600)]),
            current: None,
        };
        let time = send_time(&campaign, &by_name, &audience.now);
        assert!(too_long("promo", &campaign, &time, Some(&audience)).is_none());
    }

    #[test]
    fn audience_summaries_show_the_change_from_the_current_revision() {
        let change = |now, current: Option<u64>| AudienceChange {
            now: Breakdown {
                recipients: now,
                ..Breakdown::default()
            },
            current: current.map(|c| Breakdown {
                recipients: c,
                ..Breakdown::default()
            }),
        };
        assert_eq!(
            change(1_204, Some(1_084)).summary(),
            "1,204 recipients (+120)"
        );
        assert_eq!(change(1, Some(2)).summary(), "1 recipient (-1)");
        assert_eq!(change(5, Some(5)).summary(), "5 recipients (unchanged)");
        assert_eq!(
            change(1_000_000, None).summary(),
            "1,000,000 recipients (new)"
        );
    }
}
