//! A channel held back because its provider asked herald to wait: a 429 or 503 with
//! `Retry-After`, Telegram's `parameters.retry_after`. Such a limit is the provider
//! account's or the bot's, not one message's, so every run sending through the channel
//! waits, not only the delivery that was told: the channel's rows are not claimed until the
//! hold ends, and sends of a batch already under way are put back, their attempt not
//! counted. Times are the engine's clock (unix ms), like every `next_attempt_at`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The longest a provider's answer can hold a channel: a broken `Retry-After` must not stop
/// a channel for days. Each delivery still waits its own full `Retry-After`.
pub const MAX_HOLD: Duration = Duration::from_secs(3600);

/// Until when one channel (by name, across its revisions) is held; 0 when never.
#[derive(Debug, Default)]
pub struct Hold {
    until_ms: AtomicI64,
}

impl Hold {
    /// Holds the channel until `now + wait` (at most [`MAX_HOLD`]) unless it is held longer
    /// already. Returns the new end when the hold moved, for the log.
    pub fn extend(&self, now: jiff::Timestamp, wait: Duration) -> Option<i64> {
        let wait = i64::try_from(wait.min(MAX_HOLD).as_millis()).unwrap_or(i64::MAX);
        let until = now.as_millisecond().saturating_add(wait);
        let before = self.until_ms.fetch_max(until, Ordering::Relaxed);
        (until > before).then_some(until)
    }

    /// The end of the hold in force at `now`, if one is.
    pub fn until(&self, now: jiff::Timestamp) -> Option<i64> {
        let until = self.until_ms.load(Ordering::Relaxed);
        (until > now.as_millisecond()).then_some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(ms).unwrap()
    }

    #[test]
    fn a_hold_lasts_until_its_end_and_only_a_longer_one_moves_it() {
        let hold = Hold::default();
        assert_eq!(hold.until(at(1_000)), None);
        assert_eq!(hold.extend(at(1_000), Duration::from_secs(5)), Some(6_000));
        assert_eq!(hold.until(at(5_999)), Some(6_000));
        assert_eq!(hold.until(at(6_000)), None, "over at its end");
        assert_eq!(
            hold.extend(at(2_000), Duration::from_secs(1)),
            None,
            "shorter"
        );
        assert_eq!(hold.until(at(5_000)), Some(6_000));
        assert_eq!(
            hold.extend(at(2_000), Duration::from_secs(10)),
            Some(12_000)
        );
    }

    #[test]
    fn a_hold_is_capped() {
        let hold = Hold::default();
        let until = hold
            .extend(at(0), Duration::from_secs(86_400 * 30))
            .unwrap();
        assert_eq!(until, MAX_HOLD.as_millis() as i64);
    }
}
