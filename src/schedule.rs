//! When a campaign fires: `at`, `cron` or `now` turned into concrete instants in the
//! schedule's time zone, DST-correct, as of an injected "now".
//!
//! Pure functions over [`ParsedSchedule`] (the validated schedule of a campaign): `plan`
//! shows the next fire times with them, and the scheduler computes each next fire from the
//! exact previous instant with them. [`decide`] is the scheduler's whole firing rule: given
//! a campaign's schedule, what the store remembers of it and the time, fire, skip, wait or
//! stop.
//!
//! The rules, in one place:
//! - A wall-clock time that does not exist (a spring-forward gap) fires at the instant the
//!   gap ends; one that happens twice (a fall-back fold) fires once, the first time.
//! - Each occurrence is computed from the exact previous one, never from "now + interval".
//! - An occurrence missed (the daemon was down) fires late, once, if it is at most `grace`
//!   late (default 1h); later than that it is recorded as skipped with the reason.
//! - An occurrence at or before the last one fired or skipped never fires: with the store's
//!   unique (campaign, occurrence) runs, a restart never fires the same occurrence twice.
//! - A new or changed schedule (another hash) starts from when it came into force: a
//!   changed `at` already past does not fire; `now: true` fires once per schedule hash.

use std::time::Duration;

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

/// How late a missed occurrence may still fire when the schedule says nothing.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3_600);

/// The next fire time strictly after `after`, if the schedule fires again.
pub fn next_fire_after(schedule: &ParsedSchedule, after: Timestamp) -> Option<Timestamp> {
    match schedule {
        ParsedSchedule::Now => None,
        ParsedSchedule::At(at) => (at.timestamp() > after).then(|| at.timestamp()),
        ParsedSchedule::Cron { zone, .. } => schedule
            .next_after(&after.to_zoned(zone.clone()))
            .map(|z| z.timestamp()),
    }
}

/// A campaign's schedule as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct CampaignSchedule {
    pub campaign: String,
    pub schedule: ParsedSchedule,
    /// Identifies the schedule's text: a new hash means a new schedule.
    pub hash: String,
    pub grace: Duration,
    /// When this schedule came into force (the apply of its revision), at most now.
    pub since: Timestamp,
}

/// What the store remembers of a campaign's schedule (table `schedule_state`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleState {
    pub schedule_hash: String,
    /// The occurrence to fire next; `None`: the schedule fires no more.
    pub next_fire_at: Option<Timestamp>,
    /// The last occurrence fired or skipped.
    pub last_fired_at: Option<Timestamp>,
}

/// What the scheduler does with a campaign now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start the run of this occurrence (it is due, and at most `grace` late).
    Fire(Timestamp),
    /// Record this occurrence as skipped: it was missed by more than `grace`.
    Skip {
        occurrence: Timestamp,
        reason: String,
    },
    /// Nothing is due before this instant.
    Wait(Timestamp),
    /// The schedule fires no more (a one-off that fired or passed, or `now` that fired).
    Done,
}

/// A [`Decision`] and the state to store once it has been carried out (for `Fire`, after the
/// run exists). Carrying it out and storing `state` repeatedly converges: each step moves
/// `next_fire_at` strictly forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub decision: Decision,
    pub state: ScheduleState,
}

/// The firing rule (see the module's documentation). Pure: the time is an argument.
pub fn decide(campaign: &CampaignSchedule, stored: Option<&ScheduleState>, now: Timestamp) -> Step {
    let last = stored.and_then(|s| s.last_fired_at);
    let pending = match stored {
        Some(s) if s.schedule_hash == campaign.hash => s.next_fire_at,
        _ => first_occurrence(&campaign.schedule, campaign.since.min(now)),
    };
    // Never an occurrence at or before the last one handled, whatever the schedule says now.
    let pending = match (pending, last) {
        (Some(p), Some(l)) if p <= l => next_fire_after(&campaign.schedule, l),
        (p, _) => p,
    };
    let state = |next: Option<Timestamp>, last: Option<Timestamp>| ScheduleState {
        schedule_hash: campaign.hash.clone(),
        next_fire_at: next,
        last_fired_at: last,
    };
    match pending {
        None => Step {
            decision: Decision::Done,
            state: state(None, last),
        },
        Some(due) if due > now => Step {
            decision: Decision::Wait(due),
            state: state(Some(due), last),
        },
        Some(due) if late_by(due, now) <= campaign.grace => Step {
            decision: Decision::Fire(due),
            state: state(next_fire_after(&campaign.schedule, due), Some(due)),
        },
        Some(due) => {
            // A long outage of a frequent cron is one skipped record, not thousands: the
            // missed occurrences outside the window collapse into the latest of them.
            let mut skipped = due;
            let mut earlier = 0u64;
            while earlier < 1_000_000 {
                match next_fire_after(&campaign.schedule, skipped) {
                    Some(next) if next <= now && late_by(next, now) > campaign.grace => {
                        skipped = next;
                        earlier += 1;
                    }
                    _ => break,
                }
            }
            let mut reason = format!(
                "missed by {}, outside the grace window {}",
                human(late_by(skipped, now)),
                human(campaign.grace)
            );
            if earlier > 0 {
                reason.push_str(&format!(
                    " (with {earlier} earlier occurrence{} also missed)",
                    if earlier == 1 { "" } else { "s" }
                ));
            }
            Step {
                decision: Decision::Skip {
                    occurrence: skipped,
                    reason,
                },
                state: state(next_fire_after(&campaign.schedule, skipped), Some(skipped)),
            }
        }
    }
}

fn late_by(due: Timestamp, now: Timestamp) -> Duration {
    now.duration_since(due).unsigned_abs()
}

/// The first occurrence of a schedule that came into force at `since`.
fn first_occurrence(schedule: &ParsedSchedule, since: Timestamp) -> Option<Timestamp> {
    match schedule {
        ParsedSchedule::Now => Some(since),
        // An `at` equal to `since` is still ahead of the schedule, not passed.
        ParsedSchedule::At(at) => (at.timestamp() >= since).then(|| at.timestamp()),
        ParsedSchedule::Cron { .. } => next_fire_after(schedule, since),
    }
}

/// A duration as people say it: `1h`, `2d 3h`, `45s`, `1m 30s`.
pub fn human(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
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
        assert_eq!(
            (fires[0].hour(), fires[0].minute()),
            (3, 0),
            "the missing 02:30 fires when the gap ends, 03:00 EDT"
        );
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

    fn in_force(schedule: ParsedSchedule, since: &str) -> CampaignSchedule {
        CampaignSchedule {
            campaign: "c".into(),
            schedule,
            hash: "h1".into(),
            grace: DEFAULT_GRACE,
            since: ts(since),
        }
    }

    fn local(ts: Timestamp, tz: &str) -> String {
        ts.to_zoned(jiff::tz::TimeZone::get(tz).unwrap())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    /// Runs the scheduler's loop over `decide` from `from` to `to`, firing every due
    /// occurrence at its due instant, and returns the fires.
    fn fires_between(campaign: &CampaignSchedule, from: &str, to: &str) -> Vec<Timestamp> {
        let mut state: Option<ScheduleState> = None;
        let mut now = ts(from);
        let mut fired = Vec::new();
        while now < ts(to) {
            let step = decide(campaign, state.as_ref(), now);
            match step.decision {
                Decision::Fire(at) => fired.push(at),
                Decision::Skip { occurrence, .. } => panic!("skipped {occurrence}"),
                Decision::Wait(until) => now = until,
                Decision::Done => break,
            }
            state = Some(step.state);
        }
        fired
    }

    #[test]
    fn a_daily_cron_at_0230_fires_at_0300_on_the_spring_forward_day_in_new_york() {
        let nightly = in_force(
            schedule(None, Some("30 2 * * *"), false, "America/New_York"),
            "2027-03-13T12:00:00Z",
        );
        let fires = fires_between(&nightly, "2027-03-13T12:00:00Z", "2027-03-16T12:00:00Z");
        let shown: Vec<String> = fires
            .iter()
            .map(|t| local(*t, "America/New_York"))
            .collect();
        assert_eq!(
            shown,
            [
                "2027-03-14 03:00 EDT",
                "2027-03-15 02:30 EDT",
                "2027-03-16 02:30 EDT"
            ]
        );
    }

    #[test]
    fn an_at_inside_the_spring_forward_gap_fires_when_the_gap_ends() {
        let launch = in_force(
            schedule(Some("2027-03-14T02:30:00"), None, false, "America/New_York"),
            "2027-03-13T12:00:00Z",
        );
        let fires = fires_between(&launch, "2027-03-13T12:00:00Z", "2027-03-15T00:00:00Z");
        assert_eq!(fires, [ts("2027-03-14T07:00:00Z")], "03:00 EDT, once");
    }

    #[test]
    fn a_daily_cron_at_0130_fires_once_on_the_fall_back_night_in_new_york() {
        // 2026-11-01: New York clocks go from 02:00 EDT back to 01:00 EST; 01:30 happens twice.
        let nightly = in_force(
            schedule(None, Some("30 1 * * *"), false, "America/New_York"),
            "2026-10-31T12:00:00Z",
        );
        let fires = fires_between(&nightly, "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z");
        assert_eq!(
            fires,
            [ts("2026-11-01T05:30:00Z"), ts("2026-11-02T06:30:00Z")],
            "the first 01:30 (EDT) only, then 01:30 EST the next day"
        );
    }

    #[test]
    fn an_hourly_cron_fires_each_wall_clock_hour_once_across_both_dst_changes() {
        let hourly = in_force(
            schedule(None, Some("0 * * * *"), false, "America/New_York"),
            "2026-11-01T03:30:00Z",
        );
        // Fall back: 00:00 EDT, 01:00 EDT, (01:00 EST is the same wall clock: not again), 02:00 EST.
        let fires = fires_between(&hourly, "2026-11-01T03:30:00Z", "2026-11-01T07:30:00Z");
        assert_eq!(
            fires,
            [
                ts("2026-11-01T04:00:00Z"),
                ts("2026-11-01T05:00:00Z"),
                ts("2026-11-01T07:00:00Z")
            ]
        );
        let hourly = in_force(
            schedule(None, Some("0 * * * *"), false, "America/New_York"),
            "2027-03-14T05:30:00Z",
        );
        // Spring forward: 01:00 EST, 02:00 (missing) and 03:00 EDT are one instant, then 04:00.
        let fires = fires_between(&hourly, "2027-03-14T05:30:00Z", "2027-03-14T08:30:00Z");
        assert_eq!(
            fires,
            [
                ts("2027-03-14T06:00:00Z"),
                ts("2027-03-14T07:00:00Z"),
                ts("2027-03-14T08:00:00Z")
            ]
        );
    }

    #[test]
    fn an_occurrence_missed_within_the_grace_window_fires_late_once() {
        let daily = in_force(
            schedule(None, Some("0 9 * * *"), false, "UTC"),
            "2026-11-20T00:00:00Z",
        );
        let stored = ScheduleState {
            schedule_hash: "h1".into(),
            next_fire_at: Some(ts("2026-11-24T09:00:00Z")),
            last_fired_at: Some(ts("2026-11-23T09:00:00Z")),
        };
        let step = decide(&daily, Some(&stored), ts("2026-11-24T09:40:00Z"));
        assert_eq!(step.decision, Decision::Fire(ts("2026-11-24T09:00:00Z")));
        assert_eq!(step.state.next_fire_at, Some(ts("2026-11-25T09:00:00Z")));
        let again = decide(&daily, Some(&step.state), ts("2026-11-24T09:41:00Z"));
        assert_eq!(again.decision, Decision::Wait(ts("2026-11-25T09:00:00Z")));
    }

    #[test]
    fn an_occurrence_missed_outside_the_grace_window_is_skipped_with_the_reason() {
        let daily = in_force(
            schedule(None, Some("0 9 * * *"), false, "UTC"),
            "2026-11-20T00:00:00Z",
        );
        let stored = ScheduleState {
            schedule_hash: "h1".into(),
            next_fire_at: Some(ts("2026-11-24T09:00:00Z")),
            last_fired_at: None,
        };
        let step = decide(&daily, Some(&stored), ts("2026-11-24T11:30:00Z"));
        assert_eq!(
            step.decision,
            Decision::Skip {
                occurrence: ts("2026-11-24T09:00:00Z"),
                reason: "missed by 2h 30m, outside the grace window 1h".into()
            }
        );
        assert_eq!(step.state.last_fired_at, Some(ts("2026-11-24T09:00:00Z")));
        assert_eq!(
            decide(&daily, Some(&step.state), ts("2026-11-24T11:30:00Z")).decision,
            Decision::Wait(ts("2026-11-25T09:00:00Z"))
        );
    }

    #[test]
    fn a_long_outage_of_a_frequent_cron_is_one_skip_then_the_occurrence_inside_grace_fires() {
        let mut every_minute = in_force(
            schedule(None, Some("* * * * *"), false, "UTC"),
            "2026-11-20T00:00:00Z",
        );
        every_minute.grace = Duration::from_secs(90);
        let stored = ScheduleState {
            schedule_hash: "h1".into(),
            next_fire_at: Some(ts("2026-11-24T09:00:00Z")),
            last_fired_at: None,
        };
        let now = ts("2026-11-24T10:00:30Z");
        let step = decide(&every_minute, Some(&stored), now);
        let Decision::Skip { occurrence, reason } = &step.decision else {
            panic!("expected a skip, got {:?}", step.decision);
        };
        assert_eq!(*occurrence, ts("2026-11-24T09:58:00Z"));
        assert!(reason.contains("58 earlier occurrences"), "{reason}");
        let next = decide(&every_minute, Some(&step.state), now);
        assert_eq!(next.decision, Decision::Fire(ts("2026-11-24T09:59:00Z")));
    }

    #[test]
    fn a_restart_after_a_fire_does_not_fire_the_same_occurrence_again() {
        let daily = in_force(
            schedule(None, Some("0 9 * * *"), false, "UTC"),
            "2026-11-20T00:00:00Z",
        );
        // A crash between the run and the advance of next_fire_at: next is still the fired one.
        let stored = ScheduleState {
            schedule_hash: "h1".into(),
            next_fire_at: Some(ts("2026-11-24T09:00:00Z")),
            last_fired_at: Some(ts("2026-11-24T09:00:00Z")),
        };
        let step = decide(&daily, Some(&stored), ts("2026-11-24T09:00:05Z"));
        assert_eq!(step.decision, Decision::Wait(ts("2026-11-25T09:00:00Z")));
    }

    #[test]
    fn now_fires_once_per_schedule_hash() {
        let mut demo = in_force(schedule(None, None, true, "UTC"), "2026-11-24T09:00:00Z");
        let first = decide(&demo, None, ts("2026-11-24T09:00:01Z"));
        assert_eq!(first.decision, Decision::Fire(ts("2026-11-24T09:00:00Z")));
        let later = decide(&demo, Some(&first.state), ts("2026-11-24T10:00:00Z"));
        assert_eq!(later.decision, Decision::Done);
        demo.hash = "h2".into();
        demo.since = ts("2026-11-24T11:00:00Z");
        let changed = decide(&demo, Some(&later.state), ts("2026-11-24T11:00:00Z"));
        assert_eq!(changed.decision, Decision::Fire(ts("2026-11-24T11:00:00Z")));
    }

    #[test]
    fn a_changed_at_already_past_does_not_fire() {
        let mut launch = in_force(
            schedule(Some("2026-11-24T09:00:00"), None, false, "UTC"),
            "2026-11-24T10:00:00Z",
        );
        let step = decide(&launch, None, ts("2026-11-24T10:00:00Z"));
        assert_eq!(step.decision, Decision::Done);
        launch.since = ts("2026-11-24T08:00:00Z");
        let while_down = decide(&launch, None, ts("2026-11-24T09:30:00Z"));
        assert_eq!(
            while_down.decision,
            Decision::Fire(ts("2026-11-24T09:00:00Z")),
            "applied before it was due, missed while down: fires inside the grace window"
        );
    }

    #[test]
    fn a_due_occurrence_fires_at_its_instant_not_now_plus_an_interval() {
        let every_5 = in_force(
            schedule(None, Some("*/5 * * * *"), false, "UTC"),
            "2026-11-24T09:01:13Z",
        );
        let fires = fires_between(&every_5, "2026-11-24T09:01:13Z", "2026-11-24T09:16:00Z");
        assert_eq!(
            fires,
            [
                ts("2026-11-24T09:05:00Z"),
                ts("2026-11-24T09:10:00Z"),
                ts("2026-11-24T09:15:00Z")
            ]
        );
    }
}
