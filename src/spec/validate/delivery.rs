//! How a campaign sends: channel strategy, rates, max_duration (at most 7 days), send
//! windows, frequency caps, retries and reply rules.

use std::time::Duration;

use super::schedule::check_time_zone;
use super::{Index, check_duration};
use crate::spec::campaign::{CampaignSpec, Strategy};
use crate::spec::diagnostic::{Code, Diagnostic};
use crate::spec::located::Located;
use crate::spec::values::{Rate, RateLimit, SendWindow, parse_clock_time};

/// No send may last longer than this: what cannot go out in time expires.
pub const MAX_SEND_DURATION: Duration = Duration::from_secs(7 * 86_400);

pub(super) fn check(index: &Index, out: &mut Vec<Diagnostic>) {
    for (name, campaign) in &index.campaigns {
        check_campaign(name, &campaign.spec, out);
    }
}

fn check_campaign(name: &str, spec: &CampaignSpec, out: &mut Vec<Diagnostic>) {
    let channels = &spec.channels;
    let count = channels.channels.value.len();
    if count == 0 {
        out.push(Diagnostic::error(
            Code::InvalidStrategy,
            &channels.channels.at,
            "`use` lists no channel",
        ));
    } else if channels.strategy.value == Strategy::Specific && count != 1 {
        out.push(
            Diagnostic::error(
                Code::InvalidStrategy,
                &channels.strategy.at,
                format!(
                    "strategy `specific` sends through exactly one channel, but `use` lists {count}"
                ),
            )
            .help(
                "use `fallback` or `last_interacted` to choose among several channels, or `all` to send on each",
            ),
        );
    }
    let mut seen = Vec::new();
    for channel in channels.channels.value.iter() {
        if seen.contains(&&channel.value) {
            out.push(Diagnostic::error(
                Code::InvalidStrategy,
                &channel.at,
                format!("channel `{}` is listed twice in `use`", channel.value),
            ));
        }
        seen.push(&channel.value);
    }

    if let Some(delivery) = &spec.delivery {
        if let Some(rate) = &delivery.rate {
            check_rate(rate, out);
        }
        if let Some(max) = &delivery.max_duration
            && let Some(d) = check_duration(max, "max_duration", out)
            && d > MAX_SEND_DURATION
        {
            out.push(
                Diagnostic::error(
                    Code::MaxDurationTooLong,
                    &max.at,
                    format!("max_duration `{}` is longer than 7 days", max.value),
                )
                .help("no send lasts more than 7d; split the audience into several campaigns"),
            );
        }
        if let Some(window) = &delivery.send_window {
            check_send_window(window, out);
        }
        if let Some(cap) = &delivery.frequency_cap {
            if cap.max.value == 0 {
                out.push(Diagnostic::error(
                    Code::InvalidValue,
                    &cap.max.at,
                    "frequency_cap.max must be at least 1",
                ));
            }
            check_duration(&cap.per, "frequency_cap.per", out);
        }
        if let Some(retry) = &delivery.retry {
            if !(1..=20).contains(&retry.max_attempts.value) {
                out.push(Diagnostic::error(
                    Code::InvalidValue,
                    &retry.max_attempts.at,
                    "retry.max_attempts must be between 1 and 20",
                ));
            }
            for backoff in [&retry.initial_backoff, &retry.max_backoff]
                .into_iter()
                .flatten()
            {
                check_duration(backoff, "backoff", out);
            }
        }
    }

    for rule in &spec.on_reply {
        for (what, tag) in [("tag", &rule.tag), ("untag", &rule.untag)] {
            if tag.as_ref().is_some_and(|t| t.trim().is_empty()) {
                out.push(Diagnostic::error(
                    Code::InvalidValue,
                    &rule.pattern.at,
                    format!("`{what}` is empty"),
                ));
            }
        }
        if let Some(start) = &rule.start
            && start.value == *name
        {
            out.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    &start.at,
                    format!("campaign `{name}` starts itself on a reply"),
                )
                .help(
                    "a follow-up is another campaign; a reply to it could start it again and again",
                ),
            );
        }
        if let Err(e) = regex::Regex::new(&rule.pattern.value) {
            let first_line = e
                .to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string();
            out.push(Diagnostic::error(
                Code::InvalidRegex,
                &rule.pattern.at,
                format!("`match` is not a valid regular expression: {first_line}"),
            ));
        }
        if rule.tag.is_none() && rule.untag.is_none() && !rule.opt_out && rule.start.is_none() {
            out.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    &rule.pattern.at,
                    "this reply rule does nothing",
                )
                .help("add tag, untag, opt_out: true or start: CAMPAIGN"),
            );
        }
    }
}

/// Reports a rate without a unit, with an unknown unit, or with a non-positive count.
pub(super) fn check_rate(rate: &Located<Rate>, out: &mut Vec<Diagnostic>) -> Option<RateLimit> {
    match rate.value.parse() {
        Ok(limit) => Some(limit),
        Err(e) => {
            out.push(Diagnostic::error(Code::InvalidRate, &rate.at, e));
            None
        }
    }
}

pub(super) fn check_send_window(window: &SendWindow, out: &mut Vec<Diagnostic>) {
    let mut times = Vec::new();
    for field in [&window.start, &window.end] {
        match parse_clock_time(&field.value) {
            Ok(t) => times.push(t),
            Err(e) => out.push(Diagnostic::error(Code::InvalidSendWindow, &field.at, e)),
        }
    }
    if let [start, end] = times[..]
        && end <= start
    {
        out.push(
            Diagnostic::error(
                Code::InvalidSendWindow,
                &window.end.at,
                format!(
                    "the window ends ({}) before it starts ({})",
                    window.end.value, window.start.value
                ),
            )
            .help("a window lies within one day; use end: \"24:00\" for midnight"),
        );
    }
    if let Some(days) = &window.days
        && days.is_empty()
    {
        out.push(Diagnostic::error(
            Code::InvalidSendWindow,
            &window.start.at,
            "`days` is empty, so nothing would ever be sent",
        ));
    }
    if let Some(tz) = &window.timezone
        && tz.value != "contact"
    {
        check_time_zone(tz, out);
    }
}
