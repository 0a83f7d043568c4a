//! A segment's condition tree resolved into typed predicates: references inlined, built-in
//! segments supplied, fields mapped to a closed set, values parsed, relative times fixed
//! against `now`.
//!
//! Both backends (the SQL compiler and the in-memory evaluator) read this one form, so that
//! the meaning of a value (a duration, a date, a number written on a text field) is decided
//! once. What each predicate *means* on a contact is decided separately by each backend, and
//! the property tests check that the two agree.

use std::collections::BTreeMap;

use serde_json::Value;

use super::AudienceError;
use crate::spec::channel::Medium;
use crate::spec::located::{Located, Pos};
use crate::spec::segment::{Condition, FieldType, Op, field_type};
use crate::spec::values::{parse_duration, parse_instant};

/// A resolved condition. Every node is two-valued: it holds or it does not.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    /// Holds when every child holds (an empty list holds).
    All(Vec<Expr>),
    /// Holds when some child holds (an empty list does not).
    Any(Vec<Expr>),
    Not(Box<Expr>),
    Leaf(Leaf),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Leaf {
    Text(TextField, TextTest),
    Time(TimeField, TimeTest),
    Tags(TagTest),
    /// The contact is (true) or is not (false) opted in on the medium.
    OptedIn(Medium, bool),
    Attribute(String, AttrTest),
}

/// The text columns of a contact; a closed set so that SQL never sees a user's field name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextField {
    Id,
    Name,
    Phone,
    Email,
    Telegram,
    Locale,
    Timezone,
    Country,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TextTest {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Contains(String),
    NotContains(String),
    StartsWith(String),
    EndsWith(String),
    Exists,
    NotExists,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeField {
    CreatedAt,
    /// The latest inbound message on any medium.
    LastInbound,
    LastInboundOn(Medium),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum TimeTest {
    Exists,
    NotExists,
    /// Compares the time, in unix milliseconds, with a fixed instant.
    Cmp(Cmp, i64),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TagTest {
    /// Has at least one of these tags.
    HasAny(Vec<String>),
    /// Has none of these tags.
    HasNone(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar {
    Text(String),
    Number(Number),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Number {
    Int(i64),
    Real(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AttrTest {
    Eq(Scalar),
    Ne(Scalar),
    In(Vec<Scalar>),
    NotIn(Vec<Scalar>),
    Contains(String),
    NotContains(String),
    StartsWith(String),
    EndsWith(String),
    Exists,
    NotExists,
    /// Numeric attributes only.
    NumberCmp(Cmp, Number),
    /// Attributes that hold an instant (see [`crate::audience`]), in unix milliseconds.
    InstantCmp(Cmp, i64),
}

/// The condition of a segment by name: the user's definition, else the built-in one.
pub(crate) fn definition(name: &str, segments: &BTreeMap<String, Condition>) -> Option<Condition> {
    segments.get(name).cloned().or_else(|| built_in(name))
}

/// The six built-in segments as condition trees. `all-contacts` is an empty `all`, which
/// validation forbids in files but which means "always" here.
pub(crate) fn built_in(name: &str) -> Option<Condition> {
    let test = |field: &str, op: Op, value: Option<Value>| Condition {
        field: Some(located(field.to_string())),
        op: Some(located(op)),
        value: value.map(located),
        ..Condition::default()
    };
    Some(match name {
        "all-contacts" => Condition {
            all: Some(located(Vec::new())),
            ..Condition::default()
        },
        "created-last-7-days" => test("created_at", Op::Within, Some(Value::from("7d"))),
        "inactive-30-days" => Condition {
            not: Some(located(Box::new(test(
                "last_inbound_at",
                Op::Within,
                Some(Value::from("30d")),
            )))),
            ..Condition::default()
        },
        "with-tags" => test("tags", Op::Exists, None),
        "country-known" => test("country", Op::Exists, None),
        "language-known" => test("locale", Op::Exists, None),
        _ => return None,
    })
}

fn located<T>(value: T) -> Located<T> {
    Located::new(value, Pos::default())
}

/// Resolves the segment `name` into one expression, inlining every segment it refers to.
pub(crate) fn resolve(
    name: &str,
    segments: &BTreeMap<String, Condition>,
    now: jiff::Timestamp,
) -> Result<Expr, AudienceError> {
    let mut resolver = Resolver {
        segments,
        now_ms: now.as_millisecond(),
        stack: Vec::new(),
    };
    resolver.segment(name)
}

struct Resolver<'a> {
    segments: &'a BTreeMap<String, Condition>,
    now_ms: i64,
    /// The segments being resolved, outermost first: a cycle guard (validation rejects
    /// cycles, but a caller may hand us unvalidated segments).
    stack: Vec<String>,
}

impl Resolver<'_> {
    fn segment(&mut self, name: &str) -> Result<Expr, AudienceError> {
        if let Some(start) = self.stack.iter().position(|s| s == name) {
            let mut cycle = self.stack[start..].to_vec();
            cycle.push(name.to_string());
            return Err(AudienceError::Cycle(cycle));
        }
        let condition = definition(name, self.segments)
            .ok_or_else(|| AudienceError::UnknownSegment(name.to_string()))?;
        self.stack.push(name.to_string());
        let expr = self.condition(&condition);
        self.stack.pop();
        expr
    }

    fn invalid(&self, message: impl Into<String>) -> AudienceError {
        AudienceError::InvalidCondition {
            segment: self.stack.last().cloned().unwrap_or_default(),
            message: message.into(),
        }
    }

    fn condition(&mut self, c: &Condition) -> Result<Expr, AudienceError> {
        let forms = [
            c.all.is_some(),
            c.any.is_some(),
            c.not.is_some(),
            c.segment.is_some(),
            c.field.is_some() || c.op.is_some() || c.value.is_some(),
        ];
        if forms.iter().filter(|f| **f).count() != 1 {
            return Err(self.invalid("a condition must have exactly one form"));
        }
        if let Some(all) = &c.all {
            return Ok(Expr::All(self.conditions(&all.value)?));
        }
        if let Some(any) = &c.any {
            return Ok(Expr::Any(self.conditions(&any.value)?));
        }
        if let Some(not) = &c.not {
            return Ok(Expr::Not(Box::new(self.condition(&not.value)?)));
        }
        if let Some(name) = &c.segment {
            return self.segment(&name.value);
        }
        self.test(c).map(Expr::Leaf)
    }

    fn conditions(&mut self, list: &[Located<Condition>]) -> Result<Vec<Expr>, AudienceError> {
        list.iter().map(|c| self.condition(&c.value)).collect()
    }

    fn test(&self, c: &Condition) -> Result<Leaf, AudienceError> {
        let (Some(field), Some(op)) = (&c.field, &c.op) else {
            return Err(self.invalid("a test needs a field and an op"));
        };
        let field = field.value.as_str();
        let op = op.value;
        let value = c.value.as_ref().map(|v| &v.value);
        let ty = field_type(field).map_err(|e| self.invalid(e))?;
        let wrong = || {
            self.invalid(format!(
                "`{}` with value {} does not apply to `{field}`",
                op.as_str(),
                value
                    .map(Value::to_string)
                    .unwrap_or_else(|| "(none)".into())
            ))
        };
        if matches!(op, Op::Exists | Op::NotExists) && value.is_some() {
            return Err(wrong());
        }
        match ty {
            FieldType::Text => {
                let column = text_field(field).ok_or_else(wrong)?;
                let test = match op {
                    Op::Exists => TextTest::Exists,
                    Op::NotExists => TextTest::NotExists,
                    Op::Eq => TextTest::Eq(value.and_then(text_of).ok_or_else(wrong)?),
                    Op::Ne => TextTest::Ne(value.and_then(text_of).ok_or_else(wrong)?),
                    Op::In => TextTest::In(value.and_then(text_list).ok_or_else(wrong)?),
                    Op::NotIn => TextTest::NotIn(value.and_then(text_list).ok_or_else(wrong)?),
                    Op::Contains => TextTest::Contains(nonempty(value).ok_or_else(wrong)?),
                    Op::NotContains => TextTest::NotContains(nonempty(value).ok_or_else(wrong)?),
                    Op::StartsWith => TextTest::StartsWith(nonempty(value).ok_or_else(wrong)?),
                    Op::EndsWith => TextTest::EndsWith(nonempty(value).ok_or_else(wrong)?),
                    _ => return Err(wrong()),
                };
                Ok(Leaf::Text(column, test))
            }
            FieldType::Time => {
                let source = match field {
                    "created_at" => TimeField::CreatedAt,
                    "last_inbound_at" => TimeField::LastInbound,
                    _ => field
                        .strip_prefix("last_inbound_at.")
                        .and_then(Medium::parse)
                        .map(TimeField::LastInboundOn)
                        .ok_or_else(wrong)?,
                };
                let test = match op {
                    Op::Exists => TimeTest::Exists,
                    Op::NotExists => TimeTest::NotExists,
                    _ => {
                        let (cmp, ms) = self.time_cmp(op, value).ok_or_else(wrong)?;
                        TimeTest::Cmp(cmp, ms)
                    }
                };
                Ok(Leaf::Time(source, test))
            }
            FieldType::Tags => {
                let test = match op {
                    Op::Exists => TagTest::Exists,
                    Op::NotExists => TagTest::NotExists,
                    Op::Contains => TagTest::HasAny(vec![nonempty(value).ok_or_else(wrong)?]),
                    Op::NotContains => TagTest::HasNone(vec![nonempty(value).ok_or_else(wrong)?]),
                    Op::In => TagTest::HasAny(value.and_then(text_list).ok_or_else(wrong)?),
                    Op::NotIn => TagTest::HasNone(value.and_then(text_list).ok_or_else(wrong)?),
                    _ => return Err(wrong()),
                };
                Ok(Leaf::Tags(test))
            }
            FieldType::Consent => {
                let medium = field
                    .strip_prefix("opted_in.")
                    .and_then(Medium::parse)
                    .ok_or_else(wrong)?;
                let Some(Value::Bool(b)) = value else {
                    return Err(wrong());
                };
                match op {
                    Op::Eq => Ok(Leaf::OptedIn(medium, *b)),
                    Op::Ne => Ok(Leaf::OptedIn(medium, !*b)),
                    _ => Err(wrong()),
                }
            }
            FieldType::Attribute => {
                let key = field.strip_prefix("attributes.").ok_or_else(wrong)?;
                let test = match op {
                    Op::Exists => AttrTest::Exists,
                    Op::NotExists => AttrTest::NotExists,
                    Op::Eq => AttrTest::Eq(value.and_then(scalar_of).ok_or_else(wrong)?),
                    Op::Ne => AttrTest::Ne(value.and_then(scalar_of).ok_or_else(wrong)?),
                    Op::In => AttrTest::In(value.and_then(scalar_list).ok_or_else(wrong)?),
                    Op::NotIn => AttrTest::NotIn(value.and_then(scalar_list).ok_or_else(wrong)?),
                    Op::Contains => AttrTest::Contains(nonempty(value).ok_or_else(wrong)?),
                    Op::NotContains => AttrTest::NotContains(nonempty(value).ok_or_else(wrong)?),
                    Op::StartsWith => AttrTest::StartsWith(nonempty(value).ok_or_else(wrong)?),
                    Op::EndsWith => AttrTest::EndsWith(nonempty(value).ok_or_else(wrong)?),
                    Op::Gt | Op::Gte | Op::Lt | Op::Lte
                        if matches!(value, Some(Value::Number(_))) =>
                    {
                        let Some(Value::Number(n)) = value else {
                            return Err(wrong());
                        };
                        AttrTest::NumberCmp(plain_cmp(op).ok_or_else(wrong)?, number_of(n))
                    }
                    _ => {
                        let (cmp, ms) = self.time_cmp(op, value).ok_or_else(wrong)?;
                        AttrTest::InstantCmp(cmp, ms)
                    }
                };
                Ok(Leaf::Attribute(key.to_string(), test))
            }
        }
    }

    /// The time comparisons: `gt`..`lte`, `before`, `after` against a date, and `within` /
    /// `older_than` against `now` minus a duration. `within 7d` holds for times at or after
    /// now − 7d (a future time counts as within); `older_than 7d` for times before it.
    fn time_cmp(&self, op: Op, value: Option<&Value>) -> Option<(Cmp, i64)> {
        let text = value?.as_str()?;
        match op {
            Op::Within | Op::OlderThan => {
                let d = parse_duration(text).ok()?;
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                let at = self.now_ms.saturating_sub(ms);
                Some((if op == Op::Within { Cmp::Gte } else { Cmp::Lt }, at))
            }
            Op::Before => Some((Cmp::Lt, parse_instant(text).ok()?.as_millisecond())),
            Op::After => Some((Cmp::Gt, parse_instant(text).ok()?.as_millisecond())),
            _ => Some((plain_cmp(op)?, parse_instant(text).ok()?.as_millisecond())),
        }
    }
}

fn plain_cmp(op: Op) -> Option<Cmp> {
    Some(match op {
        Op::Gt => Cmp::Gt,
        Op::Gte => Cmp::Gte,
        Op::Lt => Cmp::Lt,
        Op::Lte => Cmp::Lte,
        _ => return None,
    })
}

fn text_field(field: &str) -> Option<TextField> {
    Some(match field {
        "id" => TextField::Id,
        "name" => TextField::Name,
        "phone" => TextField::Phone,
        "email" => TextField::Email,
        "telegram" => TextField::Telegram,
        "locale" => TextField::Locale,
        "timezone" => TextField::Timezone,
        "country" => TextField::Country,
        _ => return None,
    })
}

/// A scalar compared with a text field or a tag: text as is, a number or boolean as it is
/// written in JSON (`id: eq 42` matches the id "42").
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text_list(value: &Value) -> Option<Vec<String>> {
    let items = value.as_array()?;
    if items.is_empty() {
        return None;
    }
    items.iter().map(text_of).collect()
}

fn nonempty(value: Option<&Value>) -> Option<String> {
    value?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub(crate) fn number_of(n: &serde_json::Number) -> Number {
    match n.as_i64() {
        Some(i) => Number::Int(i),
        None => Number::Real(n.as_f64().unwrap_or(f64::NAN)),
    }
}

fn scalar_of(value: &Value) -> Option<Scalar> {
    match value {
        Value::String(s) => Some(Scalar::Text(s.clone())),
        Value::Number(n) => Some(Scalar::Number(number_of(n))),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

fn scalar_list(value: &Value) -> Option<Vec<Scalar>> {
    let items = value.as_array()?;
    if items.is_empty() {
        return None;
    }
    items.iter().map(scalar_of).collect()
}
