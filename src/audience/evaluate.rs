//! The same predicates evaluated in plain Rust over one contact held in memory: the oracle
//! the SQL compiler is tested against, and a way to check one contact without a query.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::predicate::{
    AttrTest, Cmp, Expr, Leaf, Number, Scalar, TagTest, TextField, TextTest, TimeField, TimeTest,
    number_of,
};
use crate::spec::channel::Medium;

/// What a segment can test about a contact, as the store holds it (times in unix ms).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactFacts {
    /// The store's row key; not testable by segments, carried so that results can be compared.
    pub pk: i64,
    pub id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub telegram: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub country: Option<String>,
    pub created_at: i64,
    pub tags: BTreeSet<String>,
    /// The attributes object.
    pub attributes: serde_json::Map<String, Value>,
    /// One entry per medium the contact has a row for.
    pub media: BTreeMap<Medium, MediumFacts>,
}

/// Consent and interaction on one medium (a `contact_media` row).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediumFacts {
    pub opted_in_at: Option<i64>,
    pub opted_out_at: Option<i64>,
    pub last_inbound_at: Option<i64>,
}

impl MediumFacts {
    /// Opted in: consent was given, and not withdrawn at or after the time it was given.
    pub fn is_opted_in(&self) -> bool {
        is_opted_in(self.opted_in_at, self.opted_out_at)
    }
}

/// The consent rule everywhere (segments, breakdowns, the send-time check, contacts):
/// opted in when consent is recorded and no opt-out is at or after it (an opt-out at the
/// same millisecond wins).
pub fn is_opted_in(opted_in_at: Option<i64>, opted_out_at: Option<i64>) -> bool {
    match (opted_in_at, opted_out_at) {
        (Some(_), None) => true,
        (Some(in_at), Some(out_at)) => out_at < in_at,
        (None, _) => false,
    }
}

impl ContactFacts {
    fn text(&self, field: TextField) -> Option<&str> {
        match field {
            TextField::Id => Some(&self.id),
            TextField::Name => self.name.as_deref(),
            TextField::Phone => self.phone.as_deref(),
            TextField::Email => self.email.as_deref(),
            TextField::Telegram => self.telegram.as_deref(),
            TextField::Locale => self.locale.as_deref(),
            TextField::Timezone => self.timezone.as_deref(),
            TextField::Country => self.country.as_deref(),
        }
    }

    fn time(&self, field: TimeField) -> Option<i64> {
        match field {
            TimeField::CreatedAt => Some(self.created_at),
            TimeField::LastInbound => self.media.values().filter_map(|m| m.last_inbound_at).max(),
            TimeField::LastInboundOn(medium) => self.media.get(&medium)?.last_inbound_at,
        }
    }
}

pub(crate) fn matches(expr: &Expr, contact: &ContactFacts) -> bool {
    match expr {
        Expr::All(children) => children.iter().all(|c| matches(c, contact)),
        Expr::Any(children) => children.iter().any(|c| matches(c, contact)),
        Expr::Not(child) => !matches(child, contact),
        Expr::Leaf(leaf) => leaf_holds(leaf, contact),
    }
}

fn leaf_holds(leaf: &Leaf, contact: &ContactFacts) -> bool {
    match leaf {
        Leaf::Text(field, test) => text_holds(contact.text(*field), test),
        Leaf::Time(field, test) => {
            let time = contact.time(*field);
            match test {
                TimeTest::Exists => time.is_some(),
                TimeTest::NotExists => time.is_none(),
                TimeTest::Cmp(cmp, at) => time.is_some_and(|t| holds(cmp, t.cmp(at))),
            }
        }
        Leaf::Tags(test) => match test {
            TagTest::HasAny(tags) => tags.iter().any(|t| contact.tags.contains(t)),
            TagTest::HasNone(tags) => !tags.iter().any(|t| contact.tags.contains(t)),
            TagTest::Exists => !contact.tags.is_empty(),
            TagTest::NotExists => contact.tags.is_empty(),
        },
        Leaf::OptedIn(medium, want) => {
            let opted_in = contact
                .media
                .get(medium)
                .is_some_and(MediumFacts::is_opted_in);
            opted_in == *want
        }
        Leaf::Attribute(key, test) => {
            let value = contact.attributes.get(key).filter(|v| !v.is_null());
            attribute_holds(value, test)
        }
    }
}

/// A missing (NULL) text matches only `not_exists`.
fn text_holds(text: Option<&str>, test: &TextTest) -> bool {
    let Some(text) = text else {
        return matches!(test, TextTest::NotExists);
    };
    match test {
        TextTest::Eq(v) => text == v,
        TextTest::Ne(v) => text != v,
        TextTest::In(vs) => vs.iter().any(|v| v == text),
        TextTest::NotIn(vs) => !vs.iter().any(|v| v == text),
        TextTest::Contains(v) => text.contains(v.as_str()),
        TextTest::NotContains(v) => !text.contains(v.as_str()),
        TextTest::StartsWith(v) => text.starts_with(v.as_str()),
        TextTest::EndsWith(v) => text.ends_with(v.as_str()),
        TextTest::Exists => true,
        TextTest::NotExists => false,
    }
}

/// A missing attribute matches only `not_exists`; a present one of another type than the
/// test's value matches no comparison (`ne` and `not_in` included).
fn attribute_holds(value: Option<&Value>, test: &AttrTest) -> bool {
    let Some(value) = value else {
        return matches!(test, AttrTest::NotExists);
    };
    match test {
        AttrTest::Exists => true,
        AttrTest::NotExists => false,
        AttrTest::Eq(v) => scalar_eq(value, v),
        AttrTest::Ne(v) => comparable(value, v) && !scalar_eq(value, v),
        AttrTest::In(vs) => vs.iter().any(|v| scalar_eq(value, v)),
        AttrTest::NotIn(vs) => {
            vs.iter().any(|v| comparable(value, v)) && !vs.iter().any(|v| scalar_eq(value, v))
        }
        AttrTest::Contains(v) => value.as_str().is_some_and(|s| s.contains(v.as_str())),
        AttrTest::NotContains(v) => value.as_str().is_some_and(|s| !s.contains(v.as_str())),
        AttrTest::StartsWith(v) => value.as_str().is_some_and(|s| s.starts_with(v.as_str())),
        AttrTest::EndsWith(v) => value.as_str().is_some_and(|s| s.ends_with(v.as_str())),
        AttrTest::NumberCmp(cmp, n) => match value {
            Value::Number(x) => compare_numbers(number_of(x), *n).is_some_and(|o| holds(cmp, o)),
            _ => false,
        },
        AttrTest::InstantCmp(cmp, at) => instant_of(value)
            .and_then(|t| compare_numbers(t, Number::Int(*at)))
            .is_some_and(|o| holds(cmp, o)),
    }
}

fn comparable(value: &Value, v: &Scalar) -> bool {
    matches!(
        (value, v),
        (Value::String(_), Scalar::Text(_))
            | (Value::Number(_), Scalar::Number(_))
            | (Value::Bool(_), Scalar::Bool(_))
    )
}

fn scalar_eq(value: &Value, v: &Scalar) -> bool {
    match (value, v) {
        (Value::String(s), Scalar::Text(t)) => s == t,
        (Value::Bool(b), Scalar::Bool(c)) => b == c,
        (Value::Number(x), Scalar::Number(n)) => {
            compare_numbers(number_of(x), *n) == Some(Ordering::Equal)
        }
        _ => false,
    }
}

fn compare_numbers(a: Number, b: Number) -> Option<Ordering> {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => Some(x.cmp(&y)),
        _ => as_f64(a).partial_cmp(&as_f64(b)),
    }
}

fn as_f64(n: Number) -> f64 {
    match n {
        Number::Int(i) => i as f64,
        Number::Real(f) => f,
    }
}

/// The instant an attribute holds, in unix ms: a number as is; text only as `YYYY-MM-DD`
/// (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ`, and only when it is a real date and time.
pub(crate) fn instant_of(value: &Value) -> Option<Number> {
    match value {
        Value::Number(n) => Some(number_of(n)),
        Value::String(s) if s.len() == 10 => {
            let date: jiff::civil::Date = s.parse().ok()?;
            if date.to_string() != *s {
                return None;
            }
            let ts = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
            Some(Number::Int(ts.as_millisecond()))
        }
        Value::String(s) if s.len() == 20 => {
            let ts: jiff::Timestamp = s.parse().ok()?;
            if ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string() != *s {
                return None;
            }
            Some(Number::Int(ts.as_millisecond()))
        }
        _ => None,
    }
}

fn holds(cmp: &Cmp, ordering: Ordering) -> bool {
    match cmp {
        Cmp::Gt => ordering == Ordering::Greater,
        Cmp::Gte => ordering != Ordering::Less,
        Cmp::Lt => ordering == Ordering::Less,
        Cmp::Lte => ordering != Ordering::Greater,
    }
}
