//! Editing one contact at a time (the HTTP API): a JSON body checked at the edge into a
//! [`ContactEdit`] of typed values, with every bad field named; [`apply`] holds the rules of
//! what an edit does to the stored contact as a pure function; [`save`] runs it in one
//! write transaction, so a contact is never left half-written.
//!
//! The values are checked by the same types as a CSV row ([`crate::contacts::row`]): a
//! phone in E.164, an e-mail's shape, a language tag, a known IANA zone, a two-letter
//! country. The consent rules differ from an import's on purpose: an import is a file that
//! may be old, so it never overrides an opt-out given by other means; an API call states
//! consent given now, with its source, so it is recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use super::row::{
    COLUMNS, Country, Email, Locale, PhoneNumber, TelegramChat, TimeZoneName, Update,
};
use crate::spec::channel::Medium;
use crate::store::contacts::{ContactData, ContactRecord, ContactWrite, MediumState};
use crate::store::{Store, StoreError};

/// The longest tag, consent source or contact id accepted, in bytes.
pub const MAX_TEXT: usize = 200;

/// A field of a request that is wrong, and why (`phone: "12" has 2 digits; …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldIssue {
    /// A path into the body: `phone`, `attributes.city`, `tags[2]`, `consent.sms.source`.
    pub field: String,
    pub message: String,
}

impl FieldIssue {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldIssue {
        FieldIssue {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// How a body's absent fields are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditMode {
    /// PUT: the body is the whole contact; an absent field is cleared (consent excepted:
    /// it is never withdrawn by omission).
    Replace,
    /// PATCH (JSON merge patch, RFC 7396): an absent field is kept, `null` removes.
    MergePatch,
}

/// What to do with the attributes.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum AttributesEdit {
    #[default]
    Keep,
    Replace(Map<String, Value>),
    /// Merged by RFC 7396: `null` removes a key, an object merges into an object.
    MergePatch(Map<String, Value>),
}

/// What to do with the tags.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TagsEdit {
    #[default]
    Keep,
    Replace(BTreeSet<String>),
    Add(BTreeSet<String>),
    Remove(BTreeSet<String>),
}

/// A consent statement on one medium: opted in, or out, and where that was said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentChange {
    pub opted_in: bool,
    pub source: String,
}

/// One edit of a contact, checked.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ContactEdit {
    pub name: Update<String>,
    pub phone: Update<PhoneNumber>,
    pub email: Update<Email>,
    pub telegram: Update<TelegramChat>,
    pub locale: Update<Locale>,
    pub timezone: Update<TimeZoneName>,
    pub country: Update<Country>,
    /// `None`: keep the stored value, or now for a new contact.
    pub created_at: Option<jiff::Timestamp>,
    pub attributes: AttributesEdit,
    pub tags: TagsEdit,
    pub consent: BTreeMap<Medium, ConsentChange>,
}

/// What an edit did: the same as what an imported row does.
pub type EditOutcome = super::import::RowOutcome;

/// A contact id as a path gives it: 1 to [`MAX_TEXT`] bytes, no control characters, no
/// surrounding whitespace (a CSV import trims cells, so such an id could never be matched
/// by a file again).
pub fn check_id(id: &str) -> Result<(), FieldIssue> {
    let bad = |why: &str| Err(FieldIssue::new("id", why.to_string()));
    if id.is_empty() {
        return bad("missing");
    }
    if id.len() > MAX_TEXT {
        return bad(&format!("longer than {MAX_TEXT} bytes"));
    }
    if id.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if id.trim() != id {
        return bad("starts or ends with whitespace");
    }
    Ok(())
}

/// A tag: 1 to [`MAX_TEXT`] bytes, no `;` (the CSV's tag separator), no control characters,
/// no surrounding whitespace.
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("a tag cannot be empty".to_string());
    }
    if tag.len() > MAX_TEXT {
        return Err(format!("{tag:?} is longer than {MAX_TEXT} bytes"));
    }
    if tag.contains(';') {
        return Err(format!(
            "{tag:?} contains `;`, which separates tags in CSV files"
        ));
    }
    if tag.chars().any(char::is_control) || tag.trim() != tag {
        return Err(format!(
            "{tag:?} has a control character or surrounding whitespace"
        ));
    }
    Ok(())
}

/// A consent source (`signup-form`, `support-call`): 1 to [`MAX_TEXT`] bytes of text.
pub fn check_source(source: &str) -> Result<(), String> {
    if source.trim().is_empty() {
        return Err("say where the consent was given or withdrawn, e.g. signup-form".into());
    }
    if source.len() > MAX_TEXT || source.chars().any(char::is_control) {
        return Err(format!(
            "at most {MAX_TEXT} bytes and no control characters"
        ));
    }
    Ok(())
}

/// A medium's name, or why it is not one.
pub fn parse_medium(text: &str) -> Result<Medium, String> {
    Medium::parse(text)
        .ok_or_else(|| format!("unknown medium {text:?}: use sms, whatsapp, telegram or email"))
}

/// Reads a contact body (`PUT` or `PATCH /v1/contacts/{id}`) into an edit, or every field
/// that is wrong. `path_id` is the id the path names; a body `id` must match it.
pub fn parse_body(
    body: &Value,
    mode: EditMode,
    path_id: &str,
) -> Result<ContactEdit, Vec<FieldIssue>> {
    let Value::Object(fields) = body else {
        return Err(vec![FieldIssue::new(
            "body",
            "must be a JSON object of the contact's fields",
        )]);
    };
    let mut issues = Vec::new();
    // With PUT an absent field is cleared, with PATCH it is kept.
    fn absent<T>(mode: EditMode) -> Update<T> {
        match mode {
            EditMode::Replace => Update::Clear,
            EditMode::MergePatch => Update::Keep,
        }
    }
    let mut edit = ContactEdit {
        name: absent(mode),
        phone: absent(mode),
        email: absent(mode),
        telegram: absent(mode),
        locale: absent(mode),
        timezone: absent(mode),
        country: absent(mode),
        created_at: None,
        attributes: match mode {
            EditMode::Replace => AttributesEdit::Replace(Map::new()),
            EditMode::MergePatch => AttributesEdit::Keep,
        },
        tags: match mode {
            EditMode::Replace => TagsEdit::Replace(BTreeSet::new()),
            EditMode::MergePatch => TagsEdit::Keep,
        },
        consent: BTreeMap::new(),
    };
    for (key, value) in fields {
        let mut issue = |message: String| issues.push(FieldIssue::new(key.clone(), message));
        match key.as_str() {
            "id" => match value {
                Value::String(id) if id == path_id => {}
                Value::String(id) => issue(format!(
                    "{id:?} does not match the id in the path ({path_id:?}); an id cannot change"
                )),
                _ => issue("must be a string (or left out)".to_string()),
            },
            "name" => edit.name = text(value, |s| Ok(s.to_string()), &mut issue),
            "phone" => edit.phone = text(value, PhoneNumber::parse, &mut issue),
            "email" => edit.email = text(value, Email::parse, &mut issue),
            "telegram" => edit.telegram = text(value, TelegramChat::parse, &mut issue),
            "locale" => edit.locale = text(value, Locale::parse, &mut issue),
            "timezone" => edit.timezone = text(value, TimeZoneName::parse, &mut issue),
            "country" => edit.country = text(value, Country::parse, &mut issue),
            "created_at" => match value {
                Value::Null => {}
                Value::String(s) => match s.parse::<jiff::Timestamp>() {
                    Ok(t) => edit.created_at = Some(t),
                    Err(_) => issue(format!(
                        "{s:?} is not an RFC 3339 date and time, e.g. 2026-11-20T14:05:00Z"
                    )),
                },
                _ => issue("must be an RFC 3339 string".to_string()),
            },
            "whatsapp" => {
                issue("not a field: WhatsApp messages go to the contact's `phone`".to_string())
            }
            "updated_at" | "media" => issue(format!(
                "read only: `{key}` is set by herald; send `consent` to record consent"
            )),
            "attributes" => match parse_attributes(value, mode) {
                Ok(a) => edit.attributes = a,
                Err(found) => issues.extend(found),
            },
            "tags" => match value {
                Value::Null => edit.tags = TagsEdit::Replace(BTreeSet::new()),
                other => match parse_tags("tags", other) {
                    Ok(tags) => edit.tags = TagsEdit::Replace(tags),
                    Err(found) => issues.extend(found),
                },
            },
            "consent" => match parse_consent(value) {
                Ok(c) => edit.consent = c,
                Err(found) => issues.extend(found),
            },
            _ => issue(
                "unknown field; a contact has id, name, phone, email, telegram, locale, \
                 timezone, country, created_at, attributes, tags and consent (put other \
                 data in attributes)"
                    .to_string(),
            ),
        }
    }
    if issues.is_empty() {
        Ok(edit)
    } else {
        Err(issues)
    }
}

/// A text field: `null` or `""` clears it, a string is checked by `parse`.
fn text<T>(
    value: &Value,
    parse: impl FnOnce(&str) -> Result<T, String>,
    issue: &mut impl FnMut(String),
) -> Update<T> {
    match value {
        Value::Null => Update::Clear,
        Value::String(s) if s.is_empty() => Update::Clear,
        Value::String(s) => match parse(s) {
            Ok(v) => Update::Set(v),
            Err(e) => {
                issue(e);
                Update::Keep
            }
        },
        _ => {
            issue("must be a string or null".to_string());
            Update::Keep
        }
    }
}

/// `attributes`: an object whose keys are not contact columns (an export would then have
/// the column twice and could not be imported).
fn parse_attributes(value: &Value, mode: EditMode) -> Result<AttributesEdit, Vec<FieldIssue>> {
    let map = match value {
        Value::Null => return Ok(AttributesEdit::Replace(Map::new())),
        Value::Object(map) => map,
        _ => {
            return Err(vec![FieldIssue::new(
                "attributes",
                "must be an object of free-form values, e.g. {\"city\": \"Lima\"}",
            )]);
        }
    };
    let mut issues = Vec::new();
    for key in map.keys() {
        let field = format!("attributes.{key}");
        if key.is_empty() || key.trim() != key || key.chars().any(char::is_control) {
            issues.push(FieldIssue::new(
                field,
                "a key must be non-empty text without surrounding whitespace",
            ));
        } else if COLUMNS.contains(&key.as_str()) {
            issues.push(FieldIssue::new(
                field,
                format!("`{key}` is a contact field, not an attribute"),
            ));
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(match mode {
        // A null value in a whole contact means "no such attribute".
        EditMode::Replace => AttributesEdit::Replace(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        EditMode::MergePatch => AttributesEdit::MergePatch(map.clone()),
    })
}

/// A list of tags (`field` names it in errors).
pub fn parse_tags(field: &str, value: &Value) -> Result<BTreeSet<String>, Vec<FieldIssue>> {
    let Value::Array(items) = value else {
        return Err(vec![FieldIssue::new(
            field,
            "must be a list of tags, e.g. [\"vip\", \"newsletter\"]",
        )]);
    };
    let mut tags = BTreeSet::new();
    let mut issues = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(tag) => match check_tag(tag) {
                Ok(()) => {
                    tags.insert(tag.clone());
                }
                Err(e) => issues.push(FieldIssue::new(format!("{field}[{i}]"), e)),
            },
            _ => issues.push(FieldIssue::new(format!("{field}[{i}]"), "must be a string")),
        }
    }
    if issues.is_empty() {
        Ok(tags)
    } else {
        Err(issues)
    }
}

/// `consent`: `{"sms": {"opted_in": true, "source": "signup-form"}, …}`.
fn parse_consent(value: &Value) -> Result<BTreeMap<Medium, ConsentChange>, Vec<FieldIssue>> {
    let Value::Object(map) = value else {
        return Err(vec![FieldIssue::new(
            "consent",
            "must be an object by medium, e.g. {\"sms\": {\"opted_in\": true, \"source\": \"signup-form\"}}",
        )]);
    };
    let mut out = BTreeMap::new();
    let mut issues = Vec::new();
    for (name, statement) in map {
        let field = format!("consent.{name}");
        let medium = match parse_medium(name) {
            Ok(m) => m,
            Err(e) => {
                issues.push(FieldIssue::new(field, e));
                continue;
            }
        };
        if statement.is_null() {
            issues.push(FieldIssue::new(
                field,
                "consent cannot be erased; send {\"opted_in\": false, \"source\": …} to record an opt-out",
            ));
            continue;
        }
        match parse_statement(&field, statement) {
            Ok(change) => {
                out.insert(medium, change);
            }
            Err(found) => issues.extend(found),
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// `{"opted_in": bool, "source": "…"}` under `field`.
fn parse_statement(field: &str, value: &Value) -> Result<ConsentChange, Vec<FieldIssue>> {
    let Value::Object(map) = value else {
        return Err(vec![FieldIssue::new(
            field,
            "must be {\"opted_in\": true or false, \"source\": \"…\"}",
        )]);
    };
    let mut issues = Vec::new();
    let opted_in = match map.get("opted_in") {
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            issues.push(FieldIssue::new(
                format!("{field}.opted_in"),
                "must be true or false",
            ));
            None
        }
        None => {
            issues.push(FieldIssue::new(
                format!("{field}.opted_in"),
                "missing: true or false",
            ));
            None
        }
    };
    let source = match map.get("source") {
        Some(Value::String(s)) => match check_source(s) {
            Ok(()) => Some(s.clone()),
            Err(e) => {
                issues.push(FieldIssue::new(format!("{field}.source"), e));
                None
            }
        },
        Some(_) => {
            issues.push(FieldIssue::new(
                format!("{field}.source"),
                "must be a string",
            ));
            None
        }
        None => {
            issues.push(FieldIssue::new(
                format!("{field}.source"),
                "missing: say where the consent was given or withdrawn, e.g. signup-form",
            ));
            None
        }
    };
    for key in map.keys().filter(|k| *k != "opted_in" && *k != "source") {
        issues.push(FieldIssue::new(
            format!("{field}.{key}"),
            "unknown field; a consent statement has opted_in and source",
        ));
    }
    match (opted_in, source) {
        (Some(opted_in), Some(source)) if issues.is_empty() => {
            Ok(ConsentChange { opted_in, source })
        }
        _ => Err(issues),
    }
}

/// RFC 7396 on a JSON value: `null` removes a key, an object merges into an object, anything
/// else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Records a consent statement on a medium's state, at `now` (unix ms). A statement that
/// matches the current state changes nothing (the original time and source stay). A new
/// statement is recorded after the latest one even within the same millisecond, so the
/// last call always decides.
fn record_consent(state: &mut MediumState, change: &ConsentChange, now: i64) {
    if change.opted_in {
        if !state.is_opted_in() {
            let after_out = state.opted_out_at.map_or(now, |out| out.saturating_add(1));
            state.opted_in_at = Some(now.max(after_out));
            state.opted_in_source = Some(change.source.clone());
        }
    } else if !state.is_opted_out() {
        state.opted_out_at = Some(now.max(state.opted_in_at.unwrap_or(now)));
        state.opted_out_source = Some(change.source.clone());
    }
}

/// Applies `edit` to the stored contact (`None`: creates contact `id`) at `now` (unix ms).
/// Returns what happened and what to write (`None` when nothing changed). `updated_at`
/// moves only when something changed, so repeating a call is a no-op.
pub fn apply(
    existing: Option<&ContactRecord>,
    id: &str,
    edit: ContactEdit,
    now: i64,
) -> (EditOutcome, Option<ContactWrite>) {
    let before = existing.map(|r| &r.data);
    let mut data = match before {
        Some(before) => before.clone(),
        None => ContactData {
            id: id.to_string(),
            created_at: now,
            updated_at: now,
            ..ContactData::default()
        },
    };
    edit.name.apply_to(&mut data.name);
    edit.phone.apply_to(&mut data.phone);
    edit.email.apply_to(&mut data.email);
    edit.telegram.apply_to(&mut data.telegram);
    edit.locale.apply_to(&mut data.locale);
    edit.timezone.apply_to(&mut data.timezone);
    edit.country.apply_to(&mut data.country);
    if let Some(t) = edit.created_at {
        data.created_at = t.as_millisecond();
    }
    match edit.attributes {
        AttributesEdit::Keep => {}
        AttributesEdit::Replace(map) => data.attributes = map,
        AttributesEdit::MergePatch(patch) => {
            let mut target = Value::Object(std::mem::take(&mut data.attributes));
            merge_patch(&mut target, &Value::Object(patch));
            if let Value::Object(map) = target {
                data.attributes = map;
            }
        }
    }
    match edit.tags {
        TagsEdit::Keep => {}
        TagsEdit::Replace(tags) => data.tags = tags,
        TagsEdit::Add(tags) => data.tags.extend(tags),
        TagsEdit::Remove(tags) => data.tags.retain(|t| !tags.contains(t)),
    }
    let mut media_changed = Vec::new();
    for (medium, change) in &edit.consent {
        let old = data.media.get(medium).cloned().unwrap_or_default();
        let mut new = old.clone();
        record_consent(&mut new, change, now);
        if new != old {
            data.media.insert(*medium, new);
            media_changed.push(*medium);
        }
    }
    super::import::contact_write(existing, data, media_changed, now)
}

/// Applies `edit` to contact `id` in one write transaction and returns the outcome and the
/// contact as stored afterwards. A contact that does not exist is created if `create`, and
/// otherwise the answer is `None` and nothing is written.
pub async fn save(
    store: &Store,
    id: &str,
    edit: ContactEdit,
    now: jiff::Timestamp,
    create: bool,
) -> Result<Option<(EditOutcome, ContactRecord)>, StoreError> {
    let mut writer = store.contacts_writer().await?;
    let existing = writer.existing(&[id]).await?;
    let existing = existing.get(id);
    if existing.is_none() && !create {
        writer.rollback().await?;
        return Ok(None);
    }
    let (outcome, write) = apply(existing, id, edit, now.as_millisecond());
    match write {
        Some(write) => {
            // A medium this edit opts out of (it was not opted out before) is reported to
            // webhook subscribers in the same transaction.
            let opted_out: Vec<(Medium, String)> = write
                .media_changed
                .iter()
                .filter_map(|m| {
                    let state = write.data.media.get(m)?;
                    let before = existing
                        .and_then(|e| e.data.media.get(m))
                        .is_some_and(|s| s.is_opted_out());
                    (state.is_opted_out() && !before).then(|| {
                        let source = state.opted_out_source.clone();
                        (*m, source.unwrap_or_else(|| "api".into()))
                    })
                })
                .collect();
            writer.write(vec![write]).await?;
            for (medium, source) in opted_out {
                writer
                    .report_opt_out(id, medium, &source, now.as_millisecond())
                    .await?;
            }
            writer.commit().await?;
        }
        None => writer.rollback().await?,
    }
    // The writer's commit is visible to the readers from here on.
    let stored = store.contact(id).await?;
    Ok(stored.map(|record| (outcome, record)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn stored(data: ContactData) -> ContactRecord {
        ContactRecord { pk: 3, data }
    }

    fn ana() -> ContactData {
        ContactData {
            id: "c1".into(),
            name: Some("Ana".into()),
            phone: Some("+51987654321".into()),
            created_at: 1,
            updated_at: 2,
            tags: BTreeSet::from(["vip".to_string()]),
            ..ContactData::default()
        }
    }

    #[test]
    fn a_whole_contact_clears_what_it_leaves_out() {
        let edit = parse_body(&json!({"name": "Ana"}), EditMode::Replace, "c1").unwrap();
        let (outcome, write) = apply(Some(&stored(ana())), "c1", edit, NOW);
        assert_eq!(outcome, EditOutcome::Updated);
        let write = write.unwrap();
        assert_eq!(write.data.phone, None);
        assert!(write.data.tags.is_empty() && write.tags_changed);
        assert_eq!(write.data.updated_at, NOW);
        assert_eq!(write.data.created_at, 1);
    }

    #[test]
    fn a_merge_patch_keeps_what_it_leaves_out_and_null_removes() {
        let mut data = ana();
        data.attributes.insert("city".into(), json!("Lima"));
        data.attributes
            .insert("prefs".into(), json!({"lang": "es", "news": true}));
        let body = json!({"phone": null, "attributes": {"city": null, "prefs": {"news": null}}});
        let edit = parse_body(&body, EditMode::MergePatch, "c1").unwrap();
        let write = apply(Some(&stored(data)), "c1", edit, NOW).1.unwrap();
        assert_eq!(write.data.name.as_deref(), Some("Ana"));
        assert_eq!(write.data.phone, None);
        assert_eq!(
            Value::Object(write.data.attributes),
            json!({"prefs": {"lang": "es"}})
        );
        assert!(!write.tags_changed);
    }

    #[test]
    fn every_bad_field_is_named() {
        let body = json!({
            "phone": "12", "email": "nope", "timezone": "Mars/Base", "whatsapp": "+1",
            "tags": ["ok", "a;b", 3], "attributes": {"phone": 1},
            "consent": {"fax": {"opted_in": true, "source": "x"}, "sms": {"opted_in": "yes"}},
            "colour": "red"
        });
        let issues = parse_body(&body, EditMode::Replace, "c1").unwrap_err();
        let fields: BTreeSet<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        for f in [
            "phone",
            "email",
            "timezone",
            "whatsapp",
            "tags[1]",
            "tags[2]",
            "attributes.phone",
            "consent.fax",
            "consent.sms.opted_in",
            "consent.sms.source",
            "colour",
        ] {
            assert!(fields.contains(f), "{f} not in {fields:?}");
        }
        let phone = issues.iter().find(|i| i.field == "phone").unwrap();
        assert!(phone.to_string().starts_with("phone: \"12\""), "{phone}");
    }

    #[test]
    fn a_body_id_must_match_the_path() {
        let issues = parse_body(&json!({"id": "c2"}), EditMode::Replace, "c1").unwrap_err();
        assert_eq!(issues[0].field, "id");
        assert!(parse_body(&json!({"id": "c1"}), EditMode::Replace, "c1").is_ok());
    }

    #[test]
    fn the_same_edit_twice_changes_nothing_the_second_time() {
        let body = json!({"name": "Ana", "phone": "+51 987 654 321", "tags": ["vip"]});
        let edit = parse_body(&body, EditMode::Replace, "c1").unwrap();
        let (outcome, write) = apply(Some(&stored(ana())), "c1", edit, NOW);
        assert_eq!((outcome, write), (EditOutcome::Unchanged, None));
    }

    fn consent(opted_in: bool, source: &str) -> ContactEdit {
        ContactEdit {
            consent: BTreeMap::from([(
                Medium::Sms,
                ConsentChange {
                    opted_in,
                    source: source.into(),
                },
            )]),
            ..ContactEdit::default()
        }
    }

    #[test]
    fn an_opt_in_after_an_opt_out_in_the_same_millisecond_still_wins() {
        let out = apply(
            Some(&stored(ana())),
            "c1",
            consent(false, "stop-reply"),
            NOW,
        );
        let mut data = out.1.unwrap().data;
        assert!(data.media[&Medium::Sms].is_opted_out());
        data.updated_at = NOW;
        let back = apply(Some(&stored(data)), "c1", consent(true, "web-form"), NOW);
        let sms = &back.1.unwrap().data.media[&Medium::Sms];
        assert!(sms.is_opted_in());
        assert_eq!(sms.opted_in_source.as_deref(), Some("web-form"));
        assert_eq!(sms.opted_out_source.as_deref(), Some("stop-reply"));
    }

    #[test]
    fn a_repeated_opt_in_keeps_the_first_time_and_source() {
        let first = apply(Some(&stored(ana())), "c1", consent(true, "form"), NOW);
        let data = first.1.unwrap().data;
        let again = apply(Some(&stored(data)), "c1", consent(true, "other"), NOW + 5);
        assert_eq!(again, (EditOutcome::Unchanged, None));
    }

    #[test]
    fn tags_are_added_and_removed_as_sets() {
        let add = ContactEdit {
            tags: TagsEdit::Add(BTreeSet::from(["a".into(), "vip".into()])),
            ..ContactEdit::default()
        };
        let data = apply(Some(&stored(ana())), "c1", add, NOW).1.unwrap().data;
        assert_eq!(data.tags.len(), 2);
        let remove = ContactEdit {
            tags: TagsEdit::Remove(BTreeSet::from(["vip".into()])),
            ..ContactEdit::default()
        };
        let data = apply(Some(&stored(data)), "c1", remove, NOW)
            .1
            .unwrap()
            .data;
        assert_eq!(data.tags, BTreeSet::from(["a".to_string()]));
    }
}
