//! Schedules: exactly one of at / cron / now, a known time zone, a cron that parses, and
//! a warning for an `at` already past (history in `validate`; `plan` decides if it is an error).

use jiff::{Timestamp, Zoned, tz::TimeZone};

use super::{Index, check_duration};
use crate::spec::campaign::Schedule;
use crate::spec::diagnostic::{Code, Diagnostic};
use crate::spec::located::Located;
use crate::spec::suggest::did_you_mean;
use crate::spec::values::parse_time_zone;

/// A schedule with its text parsed.
#[derive(Clone, Debug)]
pub enum ParsedSchedule {
    At(Zoned),
    Cron {
        cron: Box<croner::Cron>,
        zone: TimeZone,
    },
    Now,
}

impl ParsedSchedule {
    /// Parses a schedule, or says (once) what is wrong with it. Validation reports every
    /// problem; this is for the parts of herald that need the value.
    pub fn parse(schedule: &Located<Schedule>) -> Result<ParsedSchedule, String> {
        let mut out = Vec::new();
        let parsed = parse_schedule(schedule, &mut out);
        match (parsed, out.into_iter().next()) {
            (Some(p), None) => Ok(p),
            (_, Some(d)) => Err(d.message),
            (None, None) => Err("invalid schedule".into()),
        }
    }

    /// The next fire time strictly after `after`, if there is one.
    pub fn next_after(&self, after: &Zoned) -> Option<Zoned> {
        match self {
            ParsedSchedule::At(at) => (at.timestamp() > after.timestamp()).then(|| at.clone()),
            ParsedSchedule::Cron { cron, zone } => next_cron(cron, zone, after.timestamp()),
            ParsedSchedule::Now => None,
        }
    }
}

pub(super) fn check(index: &Index, now: Timestamp, out: &mut Vec<Diagnostic>) {
    for campaign in index.campaigns.values() {
        let spec = &campaign.spec;
        let parsed = parse_schedule(&spec.schedule, out);
        if let Some(grace) = &spec.schedule.grace {
            check_duration(grace, "grace", out);
        }
        // With local_time the first contacts (UTC+14) reach the wall-clock time 14 hours
        // before UTC does, so the send starts that much earlier than `at` in UTC.
        let first_send = |at: &Zoned| {
            if spec.local_time {
                let earliest = TimeZone::fixed(jiff::tz::offset(14));
                parse_at(&at.datetime().to_string(), earliest)
                    .map(|z| z.timestamp())
                    .unwrap_or(at.timestamp())
            } else {
                at.timestamp()
            }
        };
        match parsed {
            Some(ParsedSchedule::At(at)) if first_send(&at) < now => {
                let at_field = spec
                    .schedule
                    .value
                    .at
                    .as_ref()
                    .expect("an at schedule has `at`");
                out.push(
                    Diagnostic::warning(
                        Code::ScheduleInPast,
                        &at_field.at,
                        format!(
                            "campaign `{}` is scheduled at {at}, which is in the past",
                            campaign.metadata.name.value
                        ),
                    )
                    .help("fine for a campaign that already ran; `plan` refuses it for a new or rescheduled one"),
                );
            }
            Some(ParsedSchedule::Now) if spec.local_time => {
                let field = spec
                    .schedule
                    .now
                    .as_ref()
                    .expect("a now schedule has `now`");
                out.push(Diagnostic::error(
                    Code::InvalidSchedule,
                    &field.at,
                    "local_time needs a wall-clock time: use `at` or `cron`, not `now`",
                ));
            }
            _ => {}
        }
    }
}

fn parse_schedule(
    located: &Located<Schedule>,
    out: &mut Vec<Diagnostic>,
) -> Option<ParsedSchedule> {
    let schedule = &located.value;
    let zone = match &schedule.timezone {
        None => Some(TimeZone::UTC),
        Some(tz) => check_time_zone(tz, out),
    };
    let forms: Vec<(&str, &crate::spec::located::Pos)> = [
        schedule.at.as_ref().map(|f| ("at", &f.at)),
        schedule.cron.as_ref().map(|f| ("cron", &f.at)),
        schedule.now.as_ref().map(|f| ("now", &f.at)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if forms.len() != 1 {
        let at = forms.get(1).map(|f| f.1);
        let message = if forms.is_empty() {
            "a schedule needs one of `at`, `cron` or `now`".to_string()
        } else {
            format!(
                "a schedule has exactly one of `at`, `cron` or `now`, not {}",
                forms
                    .iter()
                    .map(|f| format!("`{}`", f.0))
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        };
        let at = at.unwrap_or(&located.at);
        out.push(Diagnostic::error(Code::InvalidSchedule, at, message));
        return None;
    }
    if let Some(now) = &schedule.now {
        if !now.value {
            out.push(
                Diagnostic::error(
                    Code::InvalidSchedule,
                    &now.at,
                    "`now: false` schedules nothing",
                )
                .help("remove the schedule's `now`, or set enabled: false to stop the campaign"),
            );
            return None;
        }
        return Some(ParsedSchedule::Now);
    }
    if let Some(cron) = &schedule.cron {
        return match parse_cron(&cron.value).and_then(|c| {
            // A pattern such as "0 9 31 2 *" parses but never fires.
            let start = Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC);
            match c.find_next_occurrence(&start, false) {
                Ok(_) => Ok(c),
                Err(_) => Err("it never fires".to_string()),
            }
        }) {
            Ok(parsed) => zone.map(|zone| ParsedSchedule::Cron {
                cron: Box::new(parsed),
                zone,
            }),
            Err(e) => {
                out.push(
                    Diagnostic::error(Code::InvalidCron, &cron.at, format!("invalid cron expression `{}`: {e}", cron.value))
                        .help("five fields (minute hour day-of-month month day-of-week), e.g. \"0 9 * * MON\", or @daily"),
                );
                None
            }
        };
    }
    let at = schedule.at.as_ref()?;
    match parse_at(&at.value, zone.clone().unwrap_or(TimeZone::UTC)) {
        Ok(zoned) => zone.map(|_| ParsedSchedule::At(zoned)),
        Err(e) => {
            out.push(Diagnostic::error(Code::InvalidSchedule, &at.at, e));
            None
        }
    }
}

/// Parses a cron pattern: five fields, six with seconds, or an alias such as `@daily`.
pub(crate) fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(text)
        .map_err(|e| e.to_string())
}

/// Parses `at`: a local date-time in `zone` (`2026-11-27T09:00:00`, seconds optional), or an
/// instant with an offset (`2026-11-27T09:00:00-05:00`, `...Z`). A local time that does not
/// exist (a DST gap) moves forward to the next valid instant, the end of the gap; an
/// ambiguous one takes the first.
pub fn parse_at(text: &str, zone: TimeZone) -> Result<Zoned, String> {
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts.to_zoned(zone));
    }
    let civil: jiff::civil::DateTime = text.parse().map_err(|_| {
        format!("`{text}` is not a date and time: write e.g. 2026-11-27T09:00:00 (in the schedule's timezone)")
    })?;
    resolve_local(civil, &zone)
        .map_err(|e| format!("`{text}` cannot be placed in its time zone: {e}"))
}

/// The next cron occurrence strictly after `after`, matched on the zone's wall clock.
///
/// The pattern is matched against civil (wall-clock) times, which are then placed in the
/// zone by [`resolve_local`]: a wall-clock time skipped by a spring-forward fires at the
/// instant the clocks jump (02:30 in New York's gap fires at 03:00 EDT), and one repeated by
/// a fall-back fires once, at its first occurrence. Occurrences that land on or before
/// `after` once placed (the gap's instant already fired, the first pass of a repeated hour
/// already gone) are passed over, so each instant fires at most once.
fn next_cron(cron: &croner::Cron, zone: &TimeZone, after: Timestamp) -> Option<Zoned> {
    let civil = after.to_zoned(zone.clone()).datetime();
    let mut cursor = civil.to_zoned(TimeZone::UTC).ok()?;
    // Bounded: each step moves the civil cursor to the pattern's next match, and at most a
    // few matches per DST change can land on or before `after`.
    for _ in 0..1_000 {
        let next = cron.find_next_occurrence(&cursor, false).ok()?;
        let placed = resolve_local(next.datetime(), zone).ok()?;
        if placed.timestamp() > after {
            return Some(placed);
        }
        cursor = next;
    }
    None
}

/// A wall-clock time placed in `zone`: a time that does not exist (inside a DST gap) becomes
/// the instant the gap ends, the next valid instant (02:30 on New York's spring-forward day
/// is 03:00 EDT); an ambiguous one (a fall-back fold) takes the first, earlier instant.
pub fn resolve_local(civil: jiff::civil::DateTime, zone: &TimeZone) -> Result<Zoned, jiff::Error> {
    use jiff::tz::AmbiguousOffset;
    let ambiguous = zone.to_ambiguous_zoned(civil);
    match ambiguous.offset() {
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset the time falls before the jump; the zone's first
            // transition after that instant is the jump itself.
            let before_jump = after.to_timestamp(civil)?;
            match zone.following(before_jump).next() {
                Some(transition) => Ok(transition.timestamp().to_zoned(zone.clone())),
                None => ambiguous.compatible(),
            }
        }
        _ => ambiguous.earlier(),
    }
}

/// Checks an IANA zone name, suggesting the closest known one.
pub(crate) fn check_time_zone(tz: &Located<String>, out: &mut Vec<Diagnostic>) -> Option<TimeZone> {
    match parse_time_zone(&tz.value) {
        Ok(zone) => Some(zone),
        Err(e) => {
            let names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
            let hint =
                did_you_mean(&tz.value, names.iter()).map(|s| format!("did you mean `{s}`?"));
            out.push(Diagnostic::error(Code::UnknownTimezone, &tz.at, e).maybe_help(hint));
            None
        }
    }
}
