//! `kind: Segment`: a named audience as a tree of conditions on contacts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::located::Located;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    #[serde(rename = "match")]
    pub condition: Located<Condition>,
}

/// One node of a condition tree. Exactly one form per node: a group (`all`, `any`, `not`),
/// a reference to another segment (`segment`), or a test (`field`, `op`, `value`).
//
// A struct of optional keys rather than an enum, so that every key keeps its position
// (serde buffers untagged enums and loses them) and a wrong combination gets a precise
// error instead of "data did not match any variant".
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Every condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Located<Vec<Located<Condition>>>>,
    /// At least one condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Located<Vec<Located<Condition>>>>,
    /// The condition does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Located<Box<Condition>>>,
    /// Members of another segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Located<String>>,
    /// A contact field: id, name, phone, email, telegram, locale, timezone, country,
    /// created_at, tags, attributes.<key>, last_inbound_at[.<medium>], opted_in.<medium>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Located<Op>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Located<serde_json::Value>>,
}

/// What a condition tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    Exists,
    NotExists,
    Gt,
    Gte,
    Lt,
    Lte,
    Within,
    OlderThan,
    Before,
    After,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Contains => "contains",
            Op::NotContains => "not_contains",
            Op::StartsWith => "starts_with",
            Op::EndsWith => "ends_with",
            Op::Exists => "exists",
            Op::NotExists => "not_exists",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Within => "within",
            Op::OlderThan => "older_than",
            Op::Before => "before",
            Op::After => "after",
        }
    }
}

/// What kind of value a contact field holds; decides which operators apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Time,
    Tags,
    Consent,
    /// `attributes.<key>`: number, boolean or text, decided per contact.
    Attribute,
}

/// The contact fields a condition may name, with their types.
pub const TEXT_FIELDS: [&str; 8] = [
    "id", "name", "phone", "email", "telegram", "locale", "timezone", "country",
];

/// Resolves a field name to its type, or says what is wrong with it.
pub fn field_type(field: &str) -> Result<FieldType, String> {
    if TEXT_FIELDS.contains(&field) {
        return Ok(FieldType::Text);
    }
    match field {
        "created_at" | "last_inbound_at" => return Ok(FieldType::Time),
        "tags" => return Ok(FieldType::Tags),
        _ => {}
    }
    if let Some(key) = field.strip_prefix("attributes.") {
        return if key.is_empty() {
            Err("`attributes.` needs a key, e.g. attributes.city".into())
        } else {
            Ok(FieldType::Attribute)
        };
    }
    for (prefix, ty) in [
        ("last_inbound_at.", FieldType::Time),
        ("opted_in.", FieldType::Consent),
    ] {
        if let Some(medium) = field.strip_prefix(prefix) {
            return if super::channel::Medium::parse(medium).is_some() {
                Ok(ty)
            } else {
                Err(format!(
                    "`{medium}` is not a medium (sms, whatsapp, telegram or email)"
                ))
            };
        }
    }
    match field {
        "opted_in" | "last_inbound_at." => {
            return Err(format!("`{field}` needs a medium, e.g. {field}.sms"));
        }
        "attributes" => return Err("`attributes` needs a key, e.g. attributes.city".into()),
        _ => {}
    }
    let known = TEXT_FIELDS.iter().copied().chain([
        "created_at",
        "last_inbound_at",
        "tags",
        "attributes",
        "opted_in",
    ]);
    let hint = super::suggest::did_you_mean(field, known)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    Err(format!(
        "`{field}` is not a contact field{hint} (custom data lives under attributes.<key>)"
    ))
}

/// The segments herald provides; a file may override one by using its name.
pub const BUILT_IN_SEGMENTS: [&str; 6] = [
    "all-contacts",
    "created-last-7-days",
    "inactive-30-days",
    "with-tags",
    "country-known",
    "language-known",
];
