//! When a campaign fires: `at`, `cron` or `now` turned into concrete instants in the
//! schedule's time zone, DST-correct, as of an injected "now".
//!
//! Pure functions over [`ParsedSchedule`] (the validated schedule of a campaign): `plan`
//! shows the next fire times with them, and the scheduler computes each next fire from the
//! exact previous instant with them.

use jiff::{Timestamp, Zoned};

pub use crate::spec::validate::ParsedSchedule;

/// What a schedule does from a given instant on.
#[derive(Clone, Debug, PartialEq)]
pub enum Upcoming {
    /// `now: true`: fires once, when the revision is applied.
    OnApply,
    /// A one-off `at` still ahead.
    Once(Zoned),
    /// A one-off `at` that has passed: it fires no more.
    Passed(Zoned),
    /// A cron: the next occurrences, in order, in the schedule's zone (fewer than asked
    /// only when the pattern stops firing, e.g. a year field).
    Recurring(Vec<Zoned>),
}

impl Upcoming {
    /// The instants ahead, in order (none for `OnApply` and `Passed`).
    pub fn instants(&self) -> &[Zoned] {
        match self {
            Upcoming::Once(at) => std::slice::from_ref(at),
            Upcoming::Recurring(times) => times,
            Upcoming::OnApply | Upcoming::Passed(_) => &[],
        }
    }
}

/// What `schedule` does strictly after `now`: for a cron, its next `n` occurrences.
pub fn upcoming(schedule: &ParsedSchedule, now: Timestamp, n: usize) -> Upcoming {
    match schedule {
        ParsedSchedule::Now => Upcoming::OnApply,
        ParsedSchedule::At(at) if at.timestamp() > now => Upcoming::Once(at.clone()),
        ParsedSchedule::At(at) => Upcoming::Passed(at.clone()),
        ParsedSchedule::Cron { zone, .. } => {
            Upcoming::Recurring(next_fires(schedule, &now.to_zoned(zone.clone()), n))
        }
    }
}

/// Up to `n` fire times strictly after `after`, each computed from the exact previous one
/// (so a DST change between two occurrences is handled at each step).
pub fn next_fires(schedule: &ParsedSchedule, after: &Zoned, n: usize) -> Vec<Zoned> {
    let mut out = Vec::with_capacity(n);
    let mut cursor = after.clone();
    while out.len() < n {
        match schedule.next_after(&cursor) {
            Some(next) => {
                cursor = next.clone();
                out.push(next);
            }
            None => break,
        }
    }
    out
}

/// An instant as people read it in a zone: `2027-11-26 09:00 America/Lima (UTC-05)`.
pub fn display(at: &Zoned) -> String {
    let zone = at.time_zone().iana_name().unwrap_or("UTC");
    let offset = at.offset();
    let seconds = offset.seconds();
    let sign = if seconds < 0 { '-' } else { '+' };
    let (h, m) = (seconds.abs() / 3_600, seconds.abs() % 3_600 / 60);
    let offset = if m == 0 {
        format!("UTC{sign}{h:02}")
    } else {
        format!("UTC{sign}{h:02}:{m:02}")
    };
    format!("{} {zone} ({offset})", at.strftime("%Y-%m-%d %H:%M"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::campaign::Schedule;
    use crate::spec::located::{Located, Pos};

    fn schedule(at: Option<&str>, cron: Option<&str>, now: bool, tz: &str) -> ParsedSchedule {
        let field = |s: &str| Located::new(s.to_string(), Pos::default());
        let schedule = Schedule {
            at: at.map(field),
            cron: cron.map(field),
            now: now.then(|| Located::new(true, Pos::default())),
            timezone: Some(field(tz)),
            grace: None,
        };
        ParsedSchedule::parse(&Located::new(schedule, Pos::default())).expect("a valid schedule")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_cron_gives_its_next_three_fires_in_its_own_zone() {
        let weekly = schedule(None, Some("0 9 * * MON"), false, "Europe/Madrid");
        let Upcoming::Recurring(fires) = upcoming(&weekly, ts("2026-11-24T12:00:00Z"), 3) else {
            panic!("a cron recurs");
        };
        let shown: Vec<String> = fires.iter().map(display).collect();
        assert_eq!(
            shown,
            [
                "2026-11-30 09:00 Europe/Madrid (UTC+01)",
                "2026-12-07 09:00 Europe/Madrid (UTC+01)",
                "2026-12-14 09:00 Europe/Madrid (UTC+01)",
            ]
        );
    }

    #[test]
    fn a_cron_inside_the_spring_forward_gap_fires_once_that_day_after_the_gap() {
        // 2027-03-14: New York clocks jump from 02:00 to 03:00; 02:30 does not exist.
        let nightly = schedule(None, Some("30 2 * * *"), false, "America/New_York");
        let fires = next_fires(
            &nightly,
            &ts("2027-03-13T12:00:00Z")
                .to_zoned(jiff::tz::TimeZone::get("America/New_York").unwrap()),
            3,
        );
        let days: Vec<String> = fires.iter().map(|z| z.date().to_string()).collect();
        assert_eq!(
            days,
            ["2027-03-14", "2027-03-15", "2027-03-16"],
            "no day skipped or doubled"
        );
        assert_eq!(fires[0].hour(), 3, "the missing 02:30 becomes 03:30 (EDT)");
        assert_eq!(fires[1].hour(), 2);
        assert_eq!(fires[1].offset().seconds(), -4 * 3_600);
    }

    #[test]
    fn a_cron_on_the_fall_back_night_fires_once_not_twice() {
        // 2026-10-25: Berlin clocks go from 03:00 back to 02:00; 02:30 happens twice.
        let nightly = schedule(None, Some("30 2 * * *"), false, "Europe/Berlin");
        let fires = next_fires(
            &nightly,
            &ts("2026-10-24T12:00:00Z").to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap()),
            2,
        );
        let days: Vec<String> = fires.iter().map(|z| z.date().to_string()).collect();
        assert_eq!(days, ["2026-10-25", "2026-10-26"]);
        assert_eq!(
            fires[0].offset().seconds(),
            2 * 3_600,
            "the first 02:30, still CEST"
        );
    }

    #[test]
    fn an_at_ahead_fires_once_and_an_at_behind_has_passed() {
        let launch = schedule(Some("2027-03-02T09:00:00"), None, false, "America/Lima");
        match upcoming(&launch, ts("2026-11-24T12:00:00Z"), 3) {
            Upcoming::Once(at) => assert_eq!(at.timestamp(), ts("2027-03-02T14:00:00Z")),
            other => panic!("expected once, got {other:?}"),
        }
        assert!(matches!(
            upcoming(&launch, ts("2027-03-02T14:00:00Z"), 3),
            Upcoming::Passed(_)
        ));
    }

    #[test]
    fn now_fires_on_apply_and_has_no_instant() {
        let now = schedule(None, None, true, "UTC");
        let upcoming = upcoming(&now, ts("2026-11-24T12:00:00Z"), 3);
        assert_eq!(upcoming, Upcoming::OnApply);
        assert!(upcoming.instants().is_empty());
    }

    #[test]
    fn display_shows_half_hour_offsets() {
        let at =
            ts("2026-11-24T12:00:00Z").to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").unwrap());
        assert_eq!(display(&at), "2026-11-24 17:30 Asia/Kolkata (UTC+05:30)");
    }
}
