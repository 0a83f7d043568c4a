//! Send windows (business hours): when a delivery may go out, in a fixed zone or in the
//! contact's own.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;

use crate::spec::values::{SendWindow, parse_clock_time, parse_time_zone};

/// A checked send window.
#[derive(Clone, Debug)]
pub struct Window {
    days: Vec<Weekday>,
    start: Time,
    end: Time,
    zone: WindowZone,
}

/// Which zone a window's clock times are in.
#[derive(Clone, Debug)]
enum WindowZone {
    /// The zone the window names.
    Fixed(TimeZone),
    /// `contact`: the contact's zone, falling back to the run's schedule zone.
    Contact,
    /// None named: the run's schedule zone, given at check time (a channel's window is
    /// shared by every campaign using the channel, each with its own zone).
    Schedule,
}

impl Window {
    pub fn from_spec(spec: &SendWindow) -> Result<Window, String> {
        let days = match &spec.days {
            Some(days) => days.iter().map(|d| d.value.to_jiff()).collect(),
            None => vec![
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
                Weekday::Saturday,
                Weekday::Sunday,
            ],
        };
        let zone = match spec.timezone.as_ref().map(|z| z.value.as_str()) {
            Some("contact") => WindowZone::Contact,
            Some(name) => WindowZone::Fixed(parse_time_zone(name)?),
            None => WindowZone::Schedule,
        };
        Ok(Window {
            days,
            start: parse_clock_time(&spec.start.value)?,
            end: parse_clock_time(&spec.end.value)?,
            zone,
        })
    }

    /// The first instant at or after `t` inside the window (`t` itself when open).
    /// `contact_zone` is used for a `contact` window; `schedule_zone` (the run's) for a
    /// window that names no zone, and for a `contact` one when the contact has none.
    pub fn next_open(
        &self,
        t: jiff::Timestamp,
        contact_zone: Option<&TimeZone>,
        schedule_zone: &TimeZone,
    ) -> jiff::Timestamp {
        let zone = match &self.zone {
            WindowZone::Fixed(zone) => zone,
            WindowZone::Contact => contact_zone.unwrap_or(schedule_zone),
            WindowZone::Schedule => schedule_zone,
        };
        let mut date = t.to_zoned(zone.clone()).date();
        for _ in 0..8 {
            if self.days.contains(&date.weekday()) {
                let at = |time: Time| {
                    date.to_datetime(time)
                        .to_zoned(zone.clone())
                        .map(|z| z.timestamp())
                };
                if let (Ok(open), Ok(close)) = (at(self.start), at(self.end))
                    && t < close
                {
                    return open.max(t);
                }
            }
            match date.tomorrow() {
                Ok(next) => date = next,
                Err(_) => break,
            }
        }
        t
    }
}

/// The first instant at or after `t` inside every window.
pub fn next_open_all(
    windows: &[&Window],
    t: jiff::Timestamp,
    contact_zone: Option<&TimeZone>,
    fallback: &TimeZone,
) -> jiff::Timestamp {
    let mut at = t;
    // Each step moves to the next opening of a closed window; windows that never overlap
    // stop after a bounded number of steps at the last candidate.
    for _ in 0..32 {
        let mut moved = false;
        for w in windows {
            let next = w.next_open(at, contact_zone, fallback);
            if next > at {
                at = next;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::located::Located;
    use crate::spec::values::Weekday as W;

    fn window(days: &[W], start: &str, end: &str, tz: Option<&str>) -> Window {
        let spec = SendWindow {
            days: Some(
                days.iter()
                    .map(|d| Located::new(*d, Default::default()))
                    .collect(),
            ),
            start: Located::new(start.to_string(), Default::default()),
            end: Located::new(end.to_string(), Default::default()),
            timezone: tz.map(|t| Located::new(t.to_string(), Default::default())),
        };
        Window::from_spec(&spec).unwrap()
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn inside_the_window_is_now_and_after_it_is_the_next_working_day() {
        let w = window(
            &[W::Mon, W::Tue, W::Wed, W::Thu, W::Fri],
            "09:00",
            "17:00",
            Some("America/Lima"),
        );
        // Wednesday 2026-11-25 12:00 in Lima (UTC-5).
        let open = at("2026-11-25T17:00:00Z");
        assert_eq!(w.next_open(open, None, &TimeZone::UTC), open);
        // Friday 18:00 Lima → Monday 09:00 Lima.
        let late = at("2026-11-27T23:00:00Z");
        assert_eq!(
            w.next_open(late, None, &TimeZone::UTC),
            at("2026-11-30T14:00:00Z")
        );
    }

    #[test]
    fn a_window_naming_no_zone_uses_the_schedule_zone_given_at_check_time() {
        let w = window(
            &[W::Mon, W::Tue, W::Wed, W::Thu, W::Fri],
            "09:00",
            "17:00",
            None,
        );
        // Wednesday 2026-11-25 06:00 UTC: 15:00 in Tokyo (open), 01:00 in Lima (closed).
        let t = at("2026-11-25T06:00:00Z");
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        let lima = TimeZone::get("America/Lima").unwrap();
        assert_eq!(w.next_open(t, None, &tokyo), t);
        assert_eq!(
            w.next_open(t, Some(&tokyo), &lima),
            at("2026-11-25T14:00:00Z")
        );
    }

    #[test]
    fn a_contact_window_uses_the_contacts_zone_then_the_fallback() {
        let w = window(
            &[W::Mon, W::Tue, W::Wed, W::Thu, W::Fri, W::Sat, W::Sun],
            "09:00",
            "20:00",
            Some("contact"),
        );
        let t = at("2026-11-25T06:00:00Z");
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(w.next_open(t, Some(&tokyo), &TimeZone::UTC), t);
        assert_eq!(
            w.next_open(t, None, &TimeZone::UTC),
            at("2026-11-25T09:00:00Z")
        );
    }
}
