//! Audiences: segments compiled to one parameterized SQL query (run by
//! [`crate::store::Store::segment_count`] and its siblings), and an in-memory evaluator of the
//! same meaning; and a campaign's breakdown (who receives what on which channel, and why the
//! others are left out: see [`campaign_query`] and the rules in `breakdown.rs`).
//!
//! A segment (validated by [`crate::spec::validate`]) is resolved by name, with the segments
//! it refers to inlined and the built-in segments available unless a file overrides them,
//! into one typed predicate tree. That tree has two readings which must agree: [`compile`]
//! turns it into a WHERE expression over `contacts c` with bound parameters, and [`Matcher`]
//! evaluates it over a [`ContactFacts`] in memory (the oracle the SQL is tested against).
//!
//! # What a condition means
//!
//! Every condition is two-valued: it holds or it does not; there is no "unknown". So `not`
//! is plain negation, and `not` of anything about a missing value holds.
//!
//! - **Missing values match nothing but `not_exists`.** A NULL text field, an absent
//!   attribute (or one set to JSON `null`), a contact with no inbound message: `eq`, `ne`,
//!   `in`, `not_in`, `contains`, `not_contains`, `starts_with`, `ends_with` and every time
//!   comparison are false, as in SQL. So `{field: country, op: ne, value: BR}` does *not*
//!   include contacts without a country; write `not: {field: country, op: eq, value: BR}`
//!   to include them.
//! - **Type mismatches match nothing.** An attribute is compared only with values of its own
//!   JSON type: numbers as numbers (`5` equals `5.0`), text as text, booleans as booleans.
//!   `attributes.age eq "30"` does not match the number 30, and neither does `ne "30"`.
//!   `not_in` holds when the attribute has the type of at least one listed value and equals
//!   none. Arrays and objects exist but match no comparison.
//! - **Text fields are text.** A number or boolean written as the value of a text field or a
//!   tag is compared as its JSON text (`id eq 42` matches the id `"42"`). Text comparisons
//!   are case-sensitive and exact; `%`, `_` and `*` are ordinary characters. An empty
//!   string is a value (it `exists`).
//! - **Times** are unix milliseconds. `created_at` always exists; `last_inbound_at` is the
//!   latest inbound time over all media. `before`/`after` are `lt`/`gt`; `within 7d` holds
//!   for times at or after now − 7d (a future time counts), `older_than 7d` for times before
//!   it. An attribute holds an instant if it is a number (taken as unix ms) or text written
//!   exactly `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ` naming a real date;
//!   `gt`..`lte` with a *number* compare numeric attributes only.
//! - **Tags** are a set, never missing: a contact without tags `not_contains` every tag.
//!   `in` holds when the contact has any listed tag, `not_in` when it has none.
//! - **Consent**: `opted_in.<medium>` is true when the medium's `opted_in_at` is set and
//!   there is no `opted_out_at` at or after it (an opt-out at the same millisecond wins).
//!   A contact with no row for the medium is not opted in.

mod breakdown;
mod evaluate;
mod predicate;
mod sql;

use std::collections::BTreeMap;

pub use breakdown::{
    Breakdown, CampaignQuery, Decision, ExclusionReason, FrequencyCapQuery, QueryChannel,
    address_of, campaign_query,
};
pub use evaluate::{ContactFacts, MediumFacts, is_opted_in};

use crate::spec::load::{Loaded, Object};
use crate::spec::segment::Condition;

/// Why a segment could not be compiled. Validation rules out all of these for a valid
/// revision; they exist so that unvalidated input fails cleanly instead of panicking.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AudienceError {
    #[error("no segment is named `{0}`")]
    UnknownSegment(String),
    #[error("segments refer to each other in a cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
    #[error("segment `{segment}`: {message}")]
    InvalidCondition { segment: String, message: String },
    #[error("no campaign is named `{0}`")]
    UnknownCampaign(String),
    /// A campaign validation would have rejected (an unknown channel, a channel without a
    /// medium, a malformed frequency cap).
    #[error("campaign `{campaign}`: {message}")]
    InvalidCampaign { campaign: String, message: String },
}

/// A value bound to a `?` of a compiled query.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

/// A segment as SQL: a WHERE expression over `contacts c` and its parameters, in order.
///
/// Contract: `where_sql` contains no text taken from the segment files; every value is one
/// of `params`. Its value is 0 or 1 for every contact (never NULL).
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledSegment {
    pub where_sql: String,
    pub params: Vec<SqlValue>,
}

/// The segments of a loaded revision by name, for [`compile`] and [`Matcher::new`]. A
/// duplicate name keeps its first definition, as validation does.
pub fn segments_of(loaded: &Loaded) -> BTreeMap<String, Condition> {
    let mut out = BTreeMap::new();
    for object in &loaded.objects {
        if let Object::Segment(doc) = object {
            out.entry(doc.metadata.name.value.clone())
                .or_insert_with(|| doc.spec.condition.value.clone());
        }
    }
    out
}

/// Compiles the segment `name` to one parameterized query. `segments` are the user's
/// segments by name (they override built-ins of the same name); `now` fixes `within` and
/// `older_than`. Fails only for an unknown name, a cycle, or a condition validation would
/// have rejected.
pub fn compile(
    name: &str,
    segments: &BTreeMap<String, Condition>,
    now: jiff::Timestamp,
) -> Result<CompiledSegment, AudienceError> {
    let expr = predicate::resolve(name, segments, now)?;
    let (where_sql, params) = sql::where_clause(&expr);
    Ok(CompiledSegment { where_sql, params })
}

/// A segment evaluated in memory, with the same meaning as its [`compile`]d query.
#[derive(Clone, Debug)]
pub struct Matcher {
    expr: predicate::Expr,
}

impl Matcher {
    /// Resolves like [`compile`], and fails in the same cases.
    pub fn new(
        name: &str,
        segments: &BTreeMap<String, Condition>,
        now: jiff::Timestamp,
    ) -> Result<Self, AudienceError> {
        Ok(Matcher {
            expr: predicate::resolve(name, segments, now)?,
        })
    }

    /// Whether the contact belongs to the segment.
    pub fn matches(&self, contact: &ContactFacts) -> bool {
        evaluate::matches(&self.expr, contact)
    }
}
