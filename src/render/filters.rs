//! herald's own template filters: dates, times, numbers and amounts written the way the
//! contact reads them (their locale's month names and separators, their time zone), and a
//! `default` that also replaces `none` (a contact field the contact lacks).
//!
//! The locale comes from `contact.locale` (its language: `pt-BR` → `pt`), unless the filter
//! is given `locale='…'`; languages other than en, es, pt, fr, de are written as en. The
//! zone comes from `contact.timezone`, else the campaign schedule's zone, else UTC, unless
//! the filter is given `tz='…'`. The tables are small and hand-written from CLDR (see
//! [`Lang`]); a full i18n library would cost far more to build than these five languages.

use std::fmt::Write as _;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use minijinja::value::{Kwargs, Rest};
use minijinja::{Error, ErrorKind, State, Value};

/// A language herald formats dates and numbers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Es,
    Pt,
    Fr,
    De,
}

impl Lang {
    /// The language of a BCP 47 tag (`pt-BR`, `es_PE`, `FR`); English for the others.
    pub fn of(locale: &str) -> Lang {
        let language = locale.split(['-', '_']).next().unwrap_or_default();
        match language.to_ascii_lowercase().as_str() {
            "es" => Lang::Es,
            "pt" => Lang::Pt,
            "fr" => Lang::Fr,
            "de" => Lang::De,
            _ => Lang::En,
        }
    }

    fn months(self) -> [&'static str; 12] {
        match self {
            Lang::En => [
                "January",
                "February",
                "March",
                "April",
                "May",
                "June",
                "July",
                "August",
                "September",
                "October",
                "November",
                "December",
            ],
            Lang::Es => [
                "enero",
                "febrero",
                "marzo",
                "abril",
                "mayo",
                "junio",
                "julio",
                "agosto",
                "septiembre",
                "octubre",
                "noviembre",
                "diciembre",
            ],
            Lang::Pt => [
                "janeiro",
                "fevereiro",
                "março",
                "abril",
                "maio",
                "junho",
                "julho",
                "agosto",
                "setembro",
                "outubro",
                "novembro",
                "dezembro",
            ],
            Lang::Fr => [
                "janvier",
                "février",
                "mars",
                "avril",
                "mai",
                "juin",
                "juillet",
                "août",
                "septembre",
                "octobre",
                "novembre",
                "décembre",
            ],
            Lang::De => [
                "Januar",
                "Februar",
                "März",
                "April",
                "Mai",
                "Juni",
                "Juli",
                "August",
                "September",
                "Oktober",
                "November",
                "Dezember",
            ],
        }
    }

    fn short_months(self) -> [&'static str; 12] {
        match self {
            Lang::En => [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ],
            Lang::Es => [
                "ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sept", "oct", "nov", "dic",
            ],
            Lang::Pt => [
                "jan", "fev", "mar", "abr", "mai", "jun", "jul", "ago", "set", "out", "nov", "dez",
            ],
            Lang::Fr => [
                "janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.",
                "nov.", "déc.",
            ],
            Lang::De => [
                "Jan.", "Feb.", "März", "Apr.", "Mai", "Juni", "Juli", "Aug.", "Sept.", "Okt.",
                "Nov.", "Dez.",
            ],
        }
    }

    /// Monday first.
    fn weekdays(self) -> [&'static str; 7] {
        match self {
            Lang::En => [
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
                "Sunday",
            ],
            Lang::Es => [
                "lunes",
                "martes",
                "miércoles",
                "jueves",
                "viernes",
                "sábado",
                "domingo",
            ],
            Lang::Pt => [
                "segunda-feira",
                "terça-feira",
                "quarta-feira",
                "quinta-feira",
                "sexta-feira",
                "sábado",
                "domingo",
            ],
            Lang::Fr => [
                "lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche",
            ],
            Lang::De => [
                "Montag",
                "Dienstag",
                "Mittwoch",
                "Donnerstag",
                "Freitag",
                "Samstag",
                "Sonntag",
            ],
        }
    }

    fn short_weekdays(self) -> [&'static str; 7] {
        match self {
            Lang::En => ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
            Lang::Es => ["lun", "mar", "mié", "jue", "vie", "sáb", "dom"],
            Lang::Pt => ["seg", "ter", "qua", "qui", "sex", "sáb", "dom"],
            Lang::Fr => ["lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."],
            Lang::De => ["Mo.", "Di.", "Mi.", "Do.", "Fr.", "Sa.", "So."],
        }
    }

    /// The date patterns (CLDR's, with four-digit years) of a named style.
    fn date_pattern(self, style: Style) -> &'static str {
        use Style::*;
        match (self, style) {
            (_, Iso) => "%Y-%m-%d",
            (Lang::En, Short) => "%m/%d/%Y",
            (Lang::En, Medium) => "%b %-d, %Y",
            (Lang::En, Long) => "%B %-d, %Y",
            (Lang::En, Full) => "%A, %B %-d, %Y",
            (Lang::Es, Short) | (Lang::Pt, Short) | (Lang::Fr, Short) => "%d/%m/%Y",
            (Lang::Es, Medium) => "%-d %b %Y",
            (Lang::Es, Long) => "%-d de %B de %Y",
            (Lang::Es, Full) => "%A, %-d de %B de %Y",
            (Lang::Pt, Medium) => "%-d de %b. de %Y",
            (Lang::Pt, Long) => "%-d de %B de %Y",
            (Lang::Pt, Full) => "%A, %-d de %B de %Y",
            (Lang::Fr, Medium) => "%-d %b %Y",
            (Lang::Fr, Long) => "%-d %B %Y",
            (Lang::Fr, Full) => "%A %-d %B %Y",
            (Lang::De, Short) | (Lang::De, Medium) => "%d.%m.%Y",
            (Lang::De, Long) => "%-d. %B %Y",
            (Lang::De, Full) => "%A, %-d. %B %Y",
        }
    }

    fn time_pattern(self) -> &'static str {
        match self {
            Lang::En => "%-I:%M %p",
            Lang::Es => "%-H:%M",
            Lang::Pt | Lang::Fr | Lang::De => "%H:%M",
        }
    }

    /// How a date and a time are joined in the long and full styles (short and medium use
    /// a comma, or a space in pt and fr).
    fn date_time_joiner(self, style: Style) -> &'static str {
        match (self, style) {
            (Lang::En, Style::Long | Style::Full) => " at ",
            (Lang::Pt, Style::Long | Style::Full) => " às ",
            (Lang::Fr, Style::Long | Style::Full) => " à ",
            (Lang::De, Style::Long | Style::Full) => " um ",
            (Lang::Pt | Lang::Fr, _) => " ",
            (_, Style::Iso) => "T",
            _ => ", ",
        }
    }

    /// The decimal separator and the grouping separator. French groups with a narrow
    /// no-break space (U+202F), as CLDR does, so that a number never wraps.
    pub fn separators(self) -> (char, char) {
        match self {
            Lang::En => ('.', ','),
            Lang::Es | Lang::Pt | Lang::De => (',', '.'),
            Lang::Fr => (',', '\u{202F}'),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    Short,
    Medium,
    Long,
    Full,
    Iso,
}

impl Style {
    fn parse(name: &str) -> Option<Style> {
        Some(match name {
            "short" => Style::Short,
            "medium" => Style::Medium,
            "long" => Style::Long,
            "full" => Style::Full,
            "iso" => Style::Iso,
            _ => return None,
        })
    }
}

/// A moment a filter was given: an instant (shown in a zone) or a wall-clock date or time
/// that is shown as written (`2027-11-30` stays the 30th in every zone).
enum Moment {
    Instant(jiff::Timestamp),
    Civil(DateTime),
}

fn moment_of(value: &Value) -> Result<Moment, Error> {
    if value.is_number() {
        let ms = match value.as_i64() {
            Some(ms) => ms,
            None => f64::try_from(value.clone()).map_or(i64::MAX, |f| f.round() as i64),
        };
        return jiff::Timestamp::from_millisecond(ms)
            .map(Moment::Instant)
            .map_err(|e| invalid(format!("{value} is not a time in unix milliseconds: {e}")));
    }
    let Some(text) = value.as_str() else {
        return Err(invalid(format!(
            "expected a date (RFC 3339 text, YYYY-MM-DD or unix milliseconds), got {}",
            describe(value)
        )));
    };
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(Moment::Instant(ts));
    }
    if let Ok(dt) = text.parse::<DateTime>() {
        return Ok(Moment::Civil(dt));
    }
    if let Ok(d) = text.parse::<Date>() {
        return Ok(Moment::Civil(d.to_datetime(jiff::civil::Time::midnight())));
    }
    Err(invalid(format!(
        "{text:?} is not a date: write 2026-11-27, 2026-11-27T09:00:00Z or unix milliseconds"
    )))
}

fn describe(value: &Value) -> String {
    if value.is_none() {
        "none".into()
    } else {
        format!("{} {value}", value.kind())
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

/// The contact-dependent settings of one filter call, after `locale=` / `tz=` overrides.
struct Settings {
    lang: Lang,
    zone: TimeZone,
}

fn settings(state: &State, kwargs: &Kwargs) -> Result<Settings, Error> {
    let contact = state.lookup("contact");
    let ctx = contact
        .as_ref()
        .and_then(|c| c.downcast_object_ref::<super::ContactObject>());
    let locale: Option<&str> = kwargs.get("locale")?;
    let lang = match (locale, ctx.and_then(|c| c.locale())) {
        (Some(l), _) | (None, Some(l)) => Lang::of(l),
        (None, None) => Lang::En,
    };
    let tz: Option<&str> = kwargs.get("tz")?;
    let zone = match tz {
        Some(name) => TimeZone::get(name)
            .map_err(|_| invalid(format!("`{name}` is not an IANA time zone")))?,
        None => ctx
            .and_then(|c| c.timezone())
            .and_then(|name| TimeZone::get(name).ok())
            .or_else(|| ctx.and_then(|c| c.fallback_zone()).cloned())
            .unwrap_or(TimeZone::UTC),
    };
    Ok(Settings { lang, zone })
}

fn civil(moment: Moment, zone: &TimeZone) -> (DateTime, Option<jiff::Zoned>) {
    match moment {
        Moment::Instant(ts) => {
            let zoned = ts.to_zoned(zone.clone());
            (zoned.datetime(), Some(zoned))
        }
        Moment::Civil(dt) => (dt, None),
    }
}

/// `date(format='long')`: a day. Formats: `short`, `medium`, `long` (the default), `full`,
/// `iso`, or a pattern of `%` codes (see [`strftime`]).
pub(crate) fn date(
    state: &State,
    value: &Value,
    format: Option<&str>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let s = settings(state, &kwargs)?;
    let format = kwarg_or(format, &kwargs, "format")?.unwrap_or("long");
    kwargs.assert_all_used()?;
    let (dt, zoned) = civil(moment_of(value)?, &s.zone);
    let pattern = Style::parse(format).map(|st| s.lang.date_pattern(st));
    strftime(pattern.unwrap_or(format), s.lang, dt, zoned.as_ref())
}

/// `time(format='short')`: a time of day (`short`, `iso`, or a pattern).
pub(crate) fn time(
    state: &State,
    value: &Value,
    format: Option<&str>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let s = settings(state, &kwargs)?;
    let format = kwarg_or(format, &kwargs, "format")?.unwrap_or("short");
    kwargs.assert_all_used()?;
    let (dt, zoned) = civil(moment_of(value)?, &s.zone);
    let pattern = match format {
        "short" => s.lang.time_pattern(),
        "iso" => "%H:%M:%S",
        other => other,
    };
    strftime(pattern, s.lang, dt, zoned.as_ref())
}

/// `datetime(format='long')`: a day and a time, joined as the language joins them.
pub(crate) fn datetime(
    state: &State,
    value: &Value,
    format: Option<&str>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let s = settings(state, &kwargs)?;
    let format = kwarg_or(format, &kwargs, "format")?.unwrap_or("long");
    kwargs.assert_all_used()?;
    let (dt, zoned) = civil(moment_of(value)?, &s.zone);
    match Style::parse(format) {
        Some(Style::Iso) => strftime("%Y-%m-%dT%H:%M:%S%:z", s.lang, dt, zoned.as_ref()),
        Some(style) => {
            let mut out = strftime(s.lang.date_pattern(style), s.lang, dt, zoned.as_ref())?;
            out.push_str(s.lang.date_time_joiner(style));
            out.push_str(&strftime(
                s.lang.time_pattern(),
                s.lang,
                dt,
                zoned.as_ref(),
            )?);
            Ok(out)
        }
        None => strftime(format, s.lang, dt, zoned.as_ref()),
    }
}

fn kwarg_or<'a>(
    positional: Option<&'a str>,
    kwargs: &'a Kwargs,
    name: &'a str,
) -> Result<Option<&'a str>, Error> {
    let named: Option<&str> = kwargs.get(name)?;
    Ok(positional.or(named))
}

/// A small strftime with localized names: `%Y` `%y` `%m` `%-m` `%d` `%-d` `%B` (month)
/// `%b` (short month) `%A` (weekday) `%a` (short weekday) `%H` `%-H` `%I` `%-I` `%M` `%S`
/// `%p` (AM/PM) `%Z` (zone abbreviation) `%z` / `%:z` (offset) `%%`. Any other code is an
/// error, so a typo shows up in the preview rather than in a sent message.
pub(crate) fn strftime(
    pattern: &str,
    lang: Lang,
    dt: DateTime,
    zoned: Option<&jiff::Zoned>,
) -> Result<String, Error> {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut code = chars
            .next()
            .ok_or_else(|| invalid("a date pattern ends with `%`"))?;
        let mut unpadded = false;
        let mut colon = false;
        if code == '-' {
            unpadded = true;
            code = chars
                .next()
                .ok_or_else(|| invalid("a date pattern ends with `%-`"))?;
        } else if code == ':' {
            colon = true;
            code = chars
                .next()
                .ok_or_else(|| invalid("a date pattern ends with `%:`"))?;
        }
        let num = |out: &mut String, n: i64| {
            if unpadded {
                let _ = write!(out, "{n}");
            } else {
                let _ = write!(out, "{n:02}");
            }
        };
        let hour12 = || match dt.hour() % 12 {
            0 => 12,
            h => i64::from(h),
        };
        let zone_needed = || {
            zoned.ok_or_else(|| {
                invalid("this date has no time zone (it was written as a plain date or time)")
            })
        };
        match code {
            'Y' => {
                let _ = write!(out, "{}", dt.year());
            }
            'y' => num(&mut out, i64::from(dt.year()).rem_euclid(100)),
            'm' => num(&mut out, i64::from(dt.month())),
            'd' => num(&mut out, i64::from(dt.day())),
            'H' => num(&mut out, i64::from(dt.hour())),
            'I' => num(&mut out, hour12()),
            'M' => num(&mut out, i64::from(dt.minute())),
            'S' => num(&mut out, i64::from(dt.second())),
            'p' => out.push_str(if dt.hour() < 12 { "AM" } else { "PM" }),
            'B' => out.push_str(lang.months()[month_index(dt)]),
            'b' => out.push_str(lang.short_months()[month_index(dt)]),
            'A' => out.push_str(lang.weekdays()[weekday_index(dt)]),
            'a' => out.push_str(lang.short_weekdays()[weekday_index(dt)]),
            'Z' => {
                let z = zone_needed()?;
                let _ = write!(out, "{}", z.strftime("%Z"));
            }
            'z' => {
                let z = zone_needed()?;
                let _ = write!(out, "{}", z.strftime(if colon { "%:z" } else { "%z" }));
            }
            '%' => out.push('%'),
            other => {
                return Err(invalid(format!(
                    "`%{other}` is not a date code herald knows (use %Y %m %d %B %b %A %a %H %I %M %S %p %Z %z)"
                )));
            }
        }
    }
    Ok(out)
}

fn month_index(dt: DateTime) -> usize {
    usize::try_from(dt.month() - 1).unwrap_or(0)
}

fn weekday_index(dt: DateTime) -> usize {
    usize::try_from(dt.weekday().to_monday_zero_offset()).unwrap_or(0)
}

/// `number(decimals=None)`: a number with the language's separators (`1,234.5`,
/// `1.234,5`, `1 234,5`). Without `decimals`, integers show none and other numbers as
/// many as they need.
pub(crate) fn number(
    state: &State,
    value: &Value,
    decimals: Option<u32>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let s = settings(state, &kwargs)?;
    let named: Option<u32> = kwargs.get("decimals")?;
    kwargs.assert_all_used()?;
    let n = number_of(value)?;
    Ok(format_number(n, decimals.or(named), s.lang))
}

/// `currency(code, decimals=2)`: an amount with its symbol where the language puts it
/// (`$1,234.50`, `R$ 1.234,50`, `1.234,50 €`).
pub(crate) fn currency(
    state: &State,
    value: &Value,
    code: &str,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let s = settings(state, &kwargs)?;
    let decimals: Option<u32> = kwargs.get("decimals")?;
    kwargs.assert_all_used()?;
    let n = number_of(value)?;
    let amount = format_number(n, Some(decimals.unwrap_or(2)), s.lang);
    let code = code.to_ascii_uppercase();
    let symbol = match code.as_str() {
        "USD" if s.lang == Lang::En => "$",
        "USD" => "US$",
        "EUR" => "€",
        "GBP" => "£",
        "BRL" => "R$",
        "PEN" => "S/",
        "MXN" | "ARS" | "CLP" | "COP" if s.lang == Lang::Es => "$",
        "JPY" => "¥",
        _ => code.as_str(),
    };
    Ok(match s.lang {
        Lang::En => {
            if symbol.chars().all(|c| c.is_ascii_uppercase()) {
                format!("{symbol}\u{a0}{amount}")
            } else {
                format!("{symbol}{amount}")
            }
        }
        Lang::Pt => format!("{symbol}\u{a0}{amount}"),
        Lang::Es if matches!(code.as_str(), "PEN") => format!("{symbol}\u{a0}{amount}"),
        Lang::Es | Lang::Fr | Lang::De => format!("{amount}\u{a0}{symbol}"),
    })
}

fn number_of(value: &Value) -> Result<f64, Error> {
    if let Some(text) = value.as_str() {
        return text
            .trim()
            .parse::<f64>()
            .map_err(|_| invalid(format!("{text:?} is not a number")));
    }
    if value.is_number() {
        return f64::try_from(value.clone()).map_err(|_| invalid("not a number"));
    }
    Err(invalid(format!(
        "expected a number, got {}",
        describe(value)
    )))
}

pub(crate) fn format_number(n: f64, decimals: Option<u32>, lang: Lang) -> String {
    let plain = match decimals {
        // Half away from zero, as people round money (format! rounds half to even).
        Some(d) => {
            let factor = 10f64.powi(i32::try_from(d.min(15)).unwrap_or(15));
            format!("{:.*}", d as usize, (n * factor).round() / factor)
        }
        None if n.fract() == 0.0 && n.abs() < 1e15 => format!("{n:.0}"),
        None => format!("{n}"),
    };
    let (negative, digits) = match plain.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, plain.as_str()),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let (decimal_sep, group_sep) = lang.separators();
    let mut out = String::with_capacity(plain.len() + int.len() / 3 + 1);
    if negative && digits.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.push('-');
    }
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(group_sep);
        }
        out.push(c);
    }
    if let Some(frac) = frac {
        out.push(decimal_sep);
        out.push_str(frac);
    }
    out
}

/// `default(value='', boolean=false)` as in Jinja, except that `none` is replaced like an
/// undefined value: a contact field the contact lacks is `none`, and `{{ contact.name |
/// default('cliente') }}` must not print `none`.
pub(crate) fn default(value: &Value, args: Rest<Value>) -> Result<Value, Error> {
    if args.len() > 2 {
        return Err(Error::from(ErrorKind::TooManyArguments));
    }
    let other = args.first().cloned().unwrap_or_else(|| Value::from(""));
    let lax = match args.get(1) {
        Some(v) => {
            if v.is_undefined() {
                return Err(Error::from(ErrorKind::UndefinedError));
            }
            v.is_true()
        }
        None => false,
    };
    if value.is_undefined() || value.is_none() || (lax && !value.is_true()) {
        Ok(other)
    } else {
        Ok(value.clone())
    }
}

/// Registers the filters on `env`.
pub(crate) fn register(env: &mut minijinja::Environment<'static>) {
    env.add_filter("default", default);
    env.add_filter("d", default);
    env.add_filter("date", date);
    env.add_filter("time", time);
    env.add_filter("datetime", datetime);
    env.add_filter("number", number);
    env.add_filter("currency", currency);
}
