//! One CSV row checked at the edge: the header read into [`Columns`], each row into a
//! [`ContactRow`] of typed values, or into every reason it is bad. No side effects: nothing
//! here touches the store.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde_json::Value;

use crate::spec::channel::Medium;

/// The columns with a meaning of their own; every other column is an attribute.
pub const COLUMNS: [&str; 14] = [
    "id",
    "name",
    "phone",
    "email",
    "telegram",
    "locale",
    "timezone",
    "country",
    "created_at",
    "tags",
    "opted_in",
    "opted_out",
    "last_inbound_at",
    "last_inbound_medium",
];

/// A phone number in E.164: `+` and 8 to 15 digits, the first not 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Accepts spaces, dashes, dots and parentheses between the digits (`+51 (987) 654-321`)
    /// and drops them. Anything else, including a number without its `+` country code, is
    /// refused: guessing a country would send messages to strangers.
    pub fn parse(text: &str) -> Result<PhoneNumber, String> {
        let mut digits = String::with_capacity(16);
        for c in text.chars() {
            match c {
                '0'..='9' if !digits.is_empty() => digits.push(c),
                '+' if digits.is_empty() => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                '0'..='9' => {
                    return Err(format!(
                        "{text:?} is not an E.164 number: write + and the country code, \
                         e.g. +51987654321"
                    ));
                }
                _ => {
                    return Err(format!(
                        "{text:?} is not a phone number: {c:?} is not allowed"
                    ));
                }
            }
        }
        if digits.is_empty() {
            return Err(format!("{text:?} is not a phone number"));
        }
        let n = digits.len() - 1;
        if !(8..=15).contains(&n) {
            return Err(format!(
                "{text:?} has {n} digits; an E.164 number has 8 to 15"
            ));
        }
        if digits.as_bytes()[1] == b'0' {
            return Err(format!(
                "{text:?} is not an E.164 number: a country code never starts with 0"
            ));
        }
        Ok(PhoneNumber(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address, checked loosely: one `@`, a non-empty local part, a domain with a
/// dot, no whitespace. Whether it receives mail is for the provider to find out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Email, String> {
        let bad = |why: &str| Err(format!("{text:?} is not an e-mail address: {why}"));
        if text.chars().any(char::is_whitespace) {
            return bad("it contains whitespace");
        }
        let mut parts = text.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return bad("it needs exactly one @");
        };
        if local.is_empty() {
            return bad("nothing before the @");
        }
        if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return bad("the domain needs a dot, e.g. example.com");
        }
        Ok(Email(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Telegram chat: a numeric chat id (negative for groups) or a public `@username`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TelegramChat(String);

impl TelegramChat {
    pub fn parse(text: &str) -> Result<TelegramChat, String> {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let numeric = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        let username = text.strip_prefix('@').is_some_and(|u| {
            (5..=32).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if numeric || username {
            Ok(TelegramChat(text.to_string()))
        } else {
            Err(format!(
                "{text:?} is not a Telegram chat: write its numeric chat id or @username"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP 47 language tag, normalized: `pt_br` → `pt-BR`, `zh-hant-tw` → `zh-Hant-TW`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Locale(String);

impl Locale {
    pub fn parse(text: &str) -> Result<Locale, String> {
        let bad = || {
            Err(format!(
                "{text:?} is not a language tag: write e.g. es, pt-BR or zh-Hant-TW"
            ))
        };
        let mut out = String::with_capacity(text.len());
        for (i, part) in text.split(['-', '_']).enumerate() {
            if !part.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return bad();
            }
            if i == 0 {
                if !(2..=3).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_alphabetic())
                {
                    return bad();
                }
                out.push_str(&part.to_ascii_lowercase());
                continue;
            }
            if !(1..=8).contains(&part.len()) {
                return bad();
            }
            out.push('-');
            let alphabetic = part.bytes().all(|b| b.is_ascii_alphabetic());
            match part.len() {
                2 if alphabetic => out.push_str(&part.to_ascii_uppercase()),
                4 if alphabetic => {
                    out.push_str(&part[..1].to_ascii_uppercase());
                    out.push_str(&part[1..].to_ascii_lowercase());
                }
                _ => out.push_str(&part.to_ascii_lowercase()),
            }
        }
        Ok(Locale(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 3166-1 alpha-2 country code, uppercase. Only its shape is checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Country(String);

impl Country {
    pub fn parse(text: &str) -> Result<Country, String> {
        if text.len() == 2 && text.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Country(text.to_ascii_uppercase()))
        } else {
            Err(format!(
                "{text:?} is not a country code: write two letters (ISO 3166-1), e.g. PE"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A time zone known to jiff's IANA database, under its canonical spelling.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(text: &str) -> Result<TimeZoneName, String> {
        match jiff::tz::TimeZone::get(text) {
            Ok(tz) => Ok(TimeZoneName(tz.iana_name().unwrap_or(text).to_string())),
            Err(_) => Err(format!(
                "{text:?} is not a known IANA time zone (e.g. America/Lima, Europe/Madrid, UTC)"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a cell does to a stored field.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Update<T> {
    /// The column is not in the file: the field is left alone.
    #[default]
    Keep,
    /// The cell is empty: the field is cleared.
    Clear,
    /// The cell holds a value.
    Set(T),
}

/// One good row: what it asks of the contact with its id.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ContactRow {
    /// The physical line of the row in the file (the header is line 1).
    pub line: u64,
    pub id: String,
    pub name: Update<String>,
    pub phone: Update<PhoneNumber>,
    pub email: Update<Email>,
    pub telegram: Update<TelegramChat>,
    pub locale: Update<Locale>,
    pub timezone: Update<TimeZoneName>,
    pub country: Update<Country>,
    /// `None`: keep the stored value, or the import time for a new contact.
    pub created_at: Option<jiff::Timestamp>,
    /// `None`: the column is absent and the tags stay; else the contact's whole tag set.
    pub tags: Option<BTreeSet<String>>,
    /// Media to record consent on (never withdraws consent by omission). A medium also
    /// listed in `opted_out` is not in here: the opt-out wins.
    pub opted_in: BTreeSet<Medium>,
    /// Media to record an opt-out on.
    pub opted_out: BTreeSet<Medium>,
    /// An inbound message at this time on this medium (the stored time only moves forward).
    pub last_inbound: Option<(Medium, jiff::Timestamp)>,
    /// Attributes to set (`Some`) or remove (`None`, an empty cell), in column order.
    pub attributes: Vec<(String, Option<Value>)>,
}

/// A reason a row is bad.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowIssue {
    /// The physical line in the file (the header is line 1).
    pub line: u64,
    /// The column at fault; `None` when the row as a whole is (e.g. a wrong field count).
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for RowIssue {
    /// `LINE: column NAME: why`; prefix it with the file name for `FILE:LINE: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(f, "{}: column {column}: {}", self.line, self.message),
            None => write!(f, "{}: {}", self.line, self.message),
        }
    }
}

/// Why a header cannot be imported at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("the file is empty: the first line must name the columns, with `id` among them")]
    Empty,
    #[error("no `id` column: it is required, as the key that matches rows to contacts")]
    MissingId,
    #[error("column {0:?} appears twice")]
    Duplicate(String),
    #[error("column {0} has no name")]
    Unnamed(usize),
    #[error("the header is not UTF-8")]
    NotUtf8,
    #[error("column {present} needs column {missing} too")]
    Unpaired {
        present: &'static str,
        missing: &'static str,
    },
}

/// Where each column is, read from the header.
#[derive(Clone, Debug)]
pub struct Columns {
    len: usize,
    known: [Option<usize>; COLUMNS.len()],
    attributes: Vec<(usize, String)>,
}

impl Columns {
    /// Reads the header (cells already trimmed). Names are case-sensitive: `Name` is an
    /// attribute, as any column not listed in [`COLUMNS`].
    pub fn from_header<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Columns, HeaderError> {
        let mut known = [None; COLUMNS.len()];
        let mut attributes = Vec::new();
        let mut seen = BTreeSet::new();
        let mut len = 0;
        for (index, name) in names.into_iter().enumerate() {
            len += 1;
            if name.is_empty() {
                return Err(HeaderError::Unnamed(index + 1));
            }
            if !seen.insert(name) {
                return Err(HeaderError::Duplicate(name.to_string()));
            }
            match COLUMNS.iter().position(|c| *c == name) {
                Some(k) => known[k] = Some(index),
                None => attributes.push((index, name.to_string())),
            }
        }
        if len == 0 {
            return Err(HeaderError::Empty);
        }
        if known[0].is_none() {
            return Err(HeaderError::MissingId);
        }
        let pos = |name: &str| COLUMNS.iter().position(|c| *c == name).expect("a column");
        let (at, medium) = (pos("last_inbound_at"), pos("last_inbound_medium"));
        match (known[at], known[medium]) {
            (Some(_), None) => Err(HeaderError::Unpaired {
                present: "last_inbound_at",
                missing: "last_inbound_medium",
            }),
            (None, Some(_)) => Err(HeaderError::Unpaired {
                present: "last_inbound_medium",
                missing: "last_inbound_at",
            }),
            _ => Ok(Columns {
                len,
                known,
                attributes,
            }),
        }
    }

    /// The attribute columns' names, in file order.
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.attributes.iter().map(|(_, n)| n.as_str())
    }
}

/// Reads rows against one header, remembering the ids seen so that a repeated id is
/// reported instead of letting row order decide which row wins.
pub struct RowParser {
    columns: Columns,
    /// Each id seen, with its line.
    seen: HashMap<Box<str>, u64>,
    /// Time zone names already looked up: a million rows share a few hundred zones.
    zones: HashMap<String, Result<TimeZoneName, String>>,
}

impl RowParser {
    pub fn new(columns: Columns) -> RowParser {
        RowParser {
            columns,
            seen: HashMap::new(),
            zones: HashMap::new(),
        }
    }

    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Checks one record (cells already trimmed). `line` is its physical line. Returns the
    /// typed row, or every issue found in it.
    pub fn parse(&mut self, line: u64, cells: &[&[u8]]) -> Result<ContactRow, Vec<RowIssue>> {
        let mut issues = Vec::new();
        if cells.len() != self.columns.len {
            return Err(vec![RowIssue {
                line,
                column: None,
                message: format!(
                    "the row has {} fields, the header has {}",
                    cells.len(),
                    self.columns.len
                ),
            }]);
        }
        let mut text = |k: usize| -> Option<&str> {
            let index = self.columns.known[k]?;
            match std::str::from_utf8(cells[index]) {
                Ok(s) => Some(s),
                Err(_) => {
                    issues.push(RowIssue {
                        line,
                        column: Some(COLUMNS[k].to_string()),
                        message: "not UTF-8 text".to_string(),
                    });
                    None
                }
            }
        };
        let raw: [Option<&str>; COLUMNS.len()] = std::array::from_fn(&mut text);
        let mut row = ContactRow {
            line,
            ..ContactRow::default()
        };
        let issue = |k: usize, message: String| RowIssue {
            line,
            column: Some(COLUMNS[k].to_string()),
            message,
        };

        match raw[0] {
            Some("") => issues.push(issue(0, "missing: every row needs an id".to_string())),
            Some(id) => {
                if let Some(first) = self.seen.get(id) {
                    issues.push(issue(0, format!("id {id} already on line {first}")));
                } else {
                    self.seen.insert(id.into(), line);
                }
                row.id = id.to_string();
            }
            None => {}
        }

        fn field<T>(
            cell: Option<&str>,
            parse: impl FnOnce(&str) -> Result<T, String>,
            on_err: impl FnOnce(String),
        ) -> Update<T> {
            match cell {
                None => Update::Keep,
                Some("") => Update::Clear,
                Some(s) => match parse(s) {
                    Ok(v) => Update::Set(v),
                    Err(e) => {
                        on_err(e);
                        Update::Keep
                    }
                },
            }
        }
        let mut errs: Vec<(usize, String)> = Vec::new();
        row.name = field(raw[1], |s| Ok(s.to_string()), |_| {});
        row.phone = field(raw[2], PhoneNumber::parse, |e| errs.push((2, e)));
        row.email = field(raw[3], Email::parse, |e| errs.push((3, e)));
        row.telegram = field(raw[4], TelegramChat::parse, |e| errs.push((4, e)));
        row.locale = field(raw[5], Locale::parse, |e| errs.push((5, e)));
        let zones = &mut self.zones;
        row.timezone = field(
            raw[6],
            |s| {
                zones
                    .entry(s.to_string())
                    .or_insert_with(|| TimeZoneName::parse(s))
                    .clone()
            },
            |e| errs.push((6, e)),
        );
        row.country = field(raw[7], Country::parse, |e| errs.push((7, e)));
        row.created_at = match field(raw[8], parse_instant, |e| errs.push((8, e))) {
            Update::Set(t) => Some(t),
            Update::Keep | Update::Clear => None,
        };
        row.tags = raw[9].map(|s| {
            s.split(';')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        });
        let mut media = |k: usize| match raw[k] {
            None | Some("") => BTreeSet::new(),
            Some(s) => match parse_media(s) {
                Ok(set) => set,
                Err(e) => {
                    errs.push((k, e));
                    BTreeSet::new()
                }
            },
        };
        row.opted_out = media(11);
        // A medium in both lists reads as "opted in, then opted out" (the example file
        // says so of two contacts): the opt-out wins, as a STOP at the same instant does,
        // and the opt-in is not recorded, so the contact exports as opted out only.
        row.opted_in = &media(10) - &row.opted_out;
        let at = field(raw[12], parse_instant, |e| errs.push((12, e)));
        let medium = field(
            raw[13],
            |s| {
                Medium::parse(&s.to_ascii_lowercase())
                    .ok_or_else(|| format!("unknown medium {s:?}: {}", MEDIA_HINT))
            },
            |e| errs.push((13, e)),
        );
        match (at, medium) {
            (Update::Set(at), Update::Set(medium)) => row.last_inbound = Some((medium, at)),
            (Update::Set(_), Update::Clear) => errs.push((
                13,
                "required when last_inbound_at is given: on which medium did they write?"
                    .to_string(),
            )),
            (Update::Clear, Update::Set(_)) => {
                errs.push((12, "required when last_inbound_medium is given".to_string()))
            }
            _ => {}
        }
        issues.extend(errs.into_iter().map(|(k, m)| issue(k, m)));

        for (index, name) in &self.columns.attributes {
            match std::str::from_utf8(cells[*index]) {
                Ok(s) => row.attributes.push((name.clone(), attribute_value(s))),
                Err(_) => issues.push(RowIssue {
                    line,
                    column: Some(name.clone()),
                    message: "not UTF-8 text".to_string(),
                }),
            }
        }
        if issues.is_empty() {
            Ok(row)
        } else {
            Err(issues)
        }
    }
}

const MEDIA_HINT: &str = "write sms, whatsapp, telegram or email";

/// An RFC 3339 instant with its offset, e.g. `2026-11-20T14:05:00Z`.
fn parse_instant(text: &str) -> Result<jiff::Timestamp, String> {
    text.parse::<jiff::Timestamp>().map_err(|_| {
        format!(
            "{text:?} is not an RFC 3339 date and time: write e.g. 2026-11-20T14:05:00Z or \
             2026-11-20T09:05:00-05:00"
        )
    })
}

/// `sms;whatsapp` → the set of media. Names are case-insensitive; empty items are skipped.
pub fn parse_media(text: &str) -> Result<BTreeSet<Medium>, String> {
    let mut out = BTreeSet::new();
    for name in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        match Medium::parse(&name.to_ascii_lowercase()) {
            Some(m) => {
                out.insert(m);
            }
            None => return Err(format!("unknown medium {name:?}: {MEDIA_HINT}")),
        }
    }
    Ok(out)
}

/// An attribute cell's value: `None` for an empty cell (the key is removed), an integer or
/// a float as a JSON number, `true`/`false` (any case) as a boolean, anything else as text.
///
/// Only canonical numbers are numbers: `0123`, `+5` or `1_000` stay text, so that codes
/// such as ZIP codes keep their leading zeros, and an export reads back to the same value.
/// Integers beyond 64 bits stay text too (a float would round them).
pub fn attribute_value(text: &str) -> Option<Value> {
    if text.is_empty() {
        return None;
    }
    if text.eq_ignore_ascii_case("true") {
        return Some(Value::Bool(true));
    }
    if text.eq_ignore_ascii_case("false") {
        return Some(Value::Bool(false));
    }
    Some(number(text).unwrap_or_else(|| Value::String(text.to_string())))
}

/// A JSON number when `text` is written as one: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number(text: &str) -> Option<Value> {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if int_digits == 0 || (int_digits > 1 && b[int_start] == b'0') {
        return None;
    }
    if i == b.len() {
        return text.parse::<i64>().ok().map(Value::from);
    }
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    let f: f64 = text.parse().ok()?;
    serde_json::Number::from_f64(f).map(Value::Number)
}

impl<T: Into<String>> Update<T> {
    /// Applies the update to a stored field.
    pub fn apply_to(self, field: &mut Option<String>) {
        match self {
            Update::Keep => {}
            Update::Clear => *field = None,
            Update::Set(v) => *field = Some(v.into()),
        }
    }
}

macro_rules! as_ref_str {
    ($($t:ty),*) => {$(
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
as_ref_str!(
    PhoneNumber,
    Email,
    TelegramChat,
    Locale,
    Country,
    TimeZoneName
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_lose_their_punctuation_and_keep_the_plus() {
        assert_eq!(
            PhoneNumber::parse("+51 (987) 654-321").unwrap().as_str(),
            "+51987654321"
        );
        assert_eq!(
            PhoneNumber::parse("+1.212.555.0101").unwrap().as_str(),
            "+12125550101"
        );
        assert_eq!(
            PhoneNumber::parse("(+34) 612-34-56-78").unwrap().as_str(),
            "+34612345678"
        );
    }

    #[test]
    fn phone_numbers_without_a_country_code_or_with_letters_are_refused() {
        for bad in [
            "987654321",
            "+0987654321",
            "+51 98765 abc",
            "+1234567",
            "+1234567890123456",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_need_one_at_and_a_dotted_domain() {
        assert!(Email::parse("a@b.co").is_ok());
        for bad in ["a@b", "@b.co", "a@@b.co", "a b@c.co", "a@b.", "ab.co"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locales_are_normalized_to_bcp_47_case() {
        assert_eq!(Locale::parse("pt_br").unwrap().as_str(), "pt-BR");
        assert_eq!(Locale::parse("ZH-hant-tw").unwrap().as_str(), "zh-Hant-TW");
        assert_eq!(Locale::parse("es-419").unwrap().as_str(), "es-419");
        for bad in ["p", "português", "pt-", "1a"] {
            assert!(Locale::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_zones_must_be_known_to_the_iana_database() {
        assert_eq!(
            TimeZoneName::parse("America/Lima").unwrap().as_str(),
            "America/Lima"
        );
        assert!(TimeZoneName::parse("Mars/Olympus_Mons").is_err());
    }

    #[test]
    fn attribute_cells_become_numbers_booleans_or_text() {
        assert_eq!(attribute_value("14"), Some(Value::from(14)));
        assert_eq!(attribute_value("-2.5"), Some(Value::from(-2.5)));
        assert_eq!(attribute_value("1e3"), Some(Value::from(1000.0)));
        assert_eq!(attribute_value("TRUE"), Some(Value::Bool(true)));
        assert_eq!(attribute_value("false"), Some(Value::Bool(false)));
        assert_eq!(attribute_value("01234"), Some(Value::from("01234")));
        assert_eq!(attribute_value("+5"), Some(Value::from("+5")));
        assert_eq!(attribute_value("NaN"), Some(Value::from("NaN")));
        assert_eq!(
            attribute_value("99999999999999999999"),
            Some(Value::from("99999999999999999999"))
        );
        assert_eq!(attribute_value("Lima"), Some(Value::from("Lima")));
        assert_eq!(attribute_value(""), None);
    }

    fn parse(header: &str, line: &str) -> Result<ContactRow, Vec<RowIssue>> {
        let columns = Columns::from_header(header.split(',')).unwrap();
        let cells: Vec<&[u8]> = line.split(',').map(str::as_bytes).collect();
        RowParser::new(columns).parse(2, &cells)
    }

    #[test]
    fn a_medium_both_opted_in_and_out_counts_as_opted_out() {
        let row = parse("id,opted_in,opted_out", "c1,sms;email,email").unwrap();
        assert_eq!(row.opted_in, BTreeSet::from([Medium::Sms]));
        assert_eq!(row.opted_out, BTreeSet::from([Medium::Email]));
    }

    #[test]
    fn last_inbound_at_without_its_medium_makes_the_row_bad() {
        let issues = parse(
            "id,last_inbound_at,last_inbound_medium",
            "c1,2026-01-01T00:00:00Z,",
        )
        .unwrap_err();
        assert_eq!(issues[0].column.as_deref(), Some("last_inbound_medium"));
    }

    #[test]
    fn every_bad_cell_of_a_row_is_reported() {
        let issues = parse("id,phone,timezone,country", "c1,12,Nowhere,PER").unwrap_err();
        let columns: Vec<_> = issues.iter().filter_map(|i| i.column.as_deref()).collect();
        assert_eq!(columns, ["phone", "timezone", "country"]);
    }

    #[test]
    fn absent_columns_keep_and_empty_cells_clear() {
        let row = parse("id,name,phone", "c1,,+51987654321").unwrap();
        assert_eq!(row.name, Update::Clear);
        assert_eq!(row.email, Update::Keep);
        assert_eq!(row.tags, None);
    }

    #[test]
    fn a_header_without_id_or_with_a_repeated_column_is_refused() {
        assert_eq!(
            Columns::from_header(["name", "phone"]).unwrap_err(),
            HeaderError::MissingId
        );
        assert_eq!(
            Columns::from_header(["id", "city", "city"]).unwrap_err(),
            HeaderError::Duplicate("city".into())
        );
    }
}
