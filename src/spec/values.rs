//! Small value types shared by several kinds, and the parsers that turn their text into
//! meaning (durations, rates, secrets references, clock times, names).
//!
//! The spec keeps what the user wrote (with its position); these parsers are used by
//! validation to report mistakes and by the rest of herald to get the typed value.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::located::Located;

/// Checks a metadata name: `[a-z0-9-]`, 1 to 63 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "must be 1 to 63 characters long, not {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "may contain only lowercase letters, digits and '-', not {bad:?}"
        ));
    }
    Ok(())
}

/// Parses a duration such as `30s`, `15m`, `12h`, `7d`, `2w` or a sum like `1d12h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a duration cannot be empty (write e.g. 30m, 12h or 7d)".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            c if c.is_whitespace() => {
                return Err(format!(
                    "{text:?} is not a duration: write it without spaces, e.g. 2d or 12h"
                ));
            }
            _ => {
                return Err(format!(
                    "{text:?} is not a duration: unknown unit {c:?} (use s, m, h, d or w, e.g. 12h or 7d)"
                ));
            }
        };
        if digits.is_empty() {
            return Err(format!(
                "{text:?} is not a duration: a number must come before {c:?} (e.g. 12h or 7d)"
            ));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a duration: number too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "{text:?} is not a duration: {digits} has no unit (use s, m, h, d or w, e.g. {digits}h)"
        ));
    }
    if total == 0 {
        return Err(format!("{text:?} is a zero duration"));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way users write them (`2d`, `1h30m`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// A clock time `HH:MM` (24 h).
pub fn parse_clock_time(text: &str) -> Result<jiff::civil::Time, String> {
    let bad = || format!("{text:?} is not a time of day: write HH:MM, e.g. 09:00 or 20:30");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    if h == 24 && m == 0 {
        return Ok(jiff::civil::Time::MAX);
    }
    jiff::civil::Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// Looks up an IANA time zone name.
pub fn parse_time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(name).map_err(|_| {
        format!("{name:?} is not a known IANA time zone (e.g. America/Lima, Europe/Madrid, UTC)")
    })
}

/// The unit of a rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RatePeriod {
    Second,
    Minute,
    Hour,
}

impl RatePeriod {
    pub fn key(self) -> &'static str {
        match self {
            RatePeriod::Second => "per_second",
            RatePeriod::Minute => "per_minute",
            RatePeriod::Hour => "per_hour",
        }
    }
    pub fn duration(self) -> Duration {
        match self {
            RatePeriod::Second => Duration::from_secs(1),
            RatePeriod::Minute => Duration::from_secs(60),
            RatePeriod::Hour => Duration::from_secs(3_600),
        }
    }
}

/// A checked rate: `count` messages per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub period: RatePeriod,
}

impl RateLimit {
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.period.duration().as_secs_f64()
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period {
            RatePeriod::Second => "s",
            RatePeriod::Minute => "min",
            RatePeriod::Hour => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// `rate: {per_second|per_minute|per_hour: N}` as written. Anything else (a bare number,
/// an unknown unit) is kept so that validation can say exactly what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum Rate {
    Units(BTreeMap<String, serde_json::Value>),
    Bare(serde_json::Value),
}

impl Rate {
    pub const UNITS: [&'static str; 3] = ["per_second", "per_minute", "per_hour"];

    pub fn parse(&self) -> Result<RateLimit, String> {
        let units = match self {
            Rate::Bare(v) => {
                return Err(format!(
                    "a rate needs a unit: write {{per_second: {v}}}, {{per_minute: {v}}} or {{per_hour: {v}}}"
                ));
            }
            Rate::Units(units) => units,
        };
        if units.is_empty() {
            return Err("a rate needs one of per_second, per_minute or per_hour".into());
        }
        for key in units.keys() {
            if !Rate::UNITS.contains(&key.as_str()) {
                let hint = super::suggest::did_you_mean(key, Rate::UNITS)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                return Err(format!(
                    "`{key}` is not a rate unit (use per_second, per_minute or per_hour){hint}"
                ));
            }
        }
        if units.len() > 1 {
            return Err(format!(
                "a rate has exactly one unit, this one has {}",
                units.keys().cloned().collect::<Vec<_>>().join(" and ")
            ));
        }
        let (key, value) = units.iter().next().expect("one entry");
        let period = match key.as_str() {
            "per_second" => RatePeriod::Second,
            "per_minute" => RatePeriod::Minute,
            _ => RatePeriod::Hour,
        };
        match value.as_u64() {
            Some(n) if n > 0 && n <= u64::from(u32::MAX) => Ok(RateLimit {
                count: n as u32,
                period,
            }),
            _ => Err(format!(
                "{key} must be a positive whole number of messages, not {value}"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(match value {
            serde_json::Value::Object(map) => Rate::Units(map.into_iter().collect()),
            other => Rate::Bare(other),
        })
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Rate::Units(map) => map.serialize(serializer),
            Rate::Bare(v) => v.serialize(serializer),
        }
    }
}

impl JsonSchema for Rate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rate".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let one = |key: &str| {
            serde_json::json!({
                "type": "object",
                "properties": {key: {"type": "integer", "minimum": 1}},
                "required": [key],
                "additionalProperties": false
            })
        };
        schemars::json_schema!({
            "description": "Messages per unit of time: exactly one of per_second, per_minute, per_hour.",
            "oneOf": [one("per_second"), one("per_minute"), one("per_hour")]
        })
    }
}

/// A credential: never a literal, always `${env:NAME}` or `${file:PATH}`, resolved when
/// the revision is applied. Debug and Serialize never show a literal that slipped in.
#[derive(Clone, PartialEq)]
pub struct Secret(pub Located<String>);

/// Where a secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(String),
}

impl Secret {
    pub fn source(&self) -> Result<SecretSource, String> {
        parse_secret_reference(&self.0.value)
    }
}

/// Parses `${env:NAME}` or `${file:PATH}`. The error never repeats the text, which may be
/// a credential pasted by mistake.
pub fn parse_secret_reference(text: &str) -> Result<SecretSource, String> {
    let refuse = || {
        "a literal value is not allowed: credentials are read from ${env:NAME} or ${file:PATH}"
            .to_string()
    };
    let inner = text
        .strip_prefix("${")
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(refuse)?;
    if let Some(name) = inner.strip_prefix("env:") {
        let ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        return if ok {
            Ok(SecretSource::Env(name.to_string()))
        } else {
            Err(format!(
                "`{name}` is not an environment variable name (letters, digits and _)"
            ))
        };
    }
    if let Some(path) = inner.strip_prefix("file:") {
        return if path.is_empty() {
            Err("${file:} needs a path".into())
        } else {
            Ok(SecretSource::File(path.to_string()))
        };
    }
    Err(refuse())
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source() {
            Ok(_) => write!(f, "{:?}", self.0.value),
            Err(_) => f.write_str("***"),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Located::<String>::deserialize(deserializer).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.source() {
            Ok(_) => serializer.serialize_str(&self.0.value),
            Err(_) => serializer.serialize_str("***"),
        }
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A reference to a secret: ${env:NAME} or ${file:PATH}. Literal credentials are rejected.",
            "pattern": r"^\$\{(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)\}$"
        })
    }
}

/// A day of the week in a send window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub fn to_jiff(self) -> jiff::civil::Weekday {
        use jiff::civil::Weekday as W;
        match self {
            Weekday::Mon => W::Monday,
            Weekday::Tue => W::Tuesday,
            Weekday::Wed => W::Wednesday,
            Weekday::Thu => W::Thursday,
            Weekday::Fri => W::Friday,
            Weekday::Sat => W::Saturday,
            Weekday::Sun => W::Sunday,
        }
    }
}

/// Business hours: sends happen only on these days between start and end, in a time zone
/// (an IANA name, or `contact` for each contact's own zone).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendWindow {
    /// Defaults to every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<Located<Weekday>>>,
    /// `HH:MM`
    pub start: Located<String>,
    /// `HH:MM`, after start (`24:00` for midnight)
    pub end: Located<String>,
    /// An IANA zone, or `contact`. Defaults to the campaign schedule's zone, else UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Located<String>>,
}

/// Parses an absolute date or instant: `2026-11-27` (midnight UTC) or RFC 3339
/// (`2026-11-27T09:00:00Z`, `2026-11-27T09:00:00-05:00`).
pub fn parse_instant(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>()
        && text.len() == 10
    {
        return date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| e.to_string());
    }
    Err(format!(
        "{text:?} is not a date: write 2026-11-27 or an RFC 3339 time such as 2026-11-27T09:00:00Z"
    ))
}
