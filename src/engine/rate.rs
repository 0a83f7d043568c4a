//! Rate limits: GCRA (the generic cell rate algorithm) per channel and per campaign, with a
//! burst of 1.
//!
//! Each limiter keeps a theoretical arrival time (TAT). A send conforms when `now >= TAT`,
//! and then moves the TAT to `max(TAT, now) + 1/rate` (from the TAT itself when the send
//! is less than one interval late, so timer lateness does not slow the rate down). So two sends through one limiter
//! leave at least `1/rate` apart, and **no sliding window of the rate's period (one second
//! for `per_second`) ever holds more than `rate + 1` sends (burst 1)**, however many runs
//! share the channel. Sends are spaced 1% wider than the rate ([`JITTER_MARGIN`]), so
//! receivers see the same bound as long as network jitter stays under 1% of the period.
//!
//! A send waits for its channel's and its campaign's limiter *together*
//! ([`acquire`]): both are checked under their locks and both are charged at the same
//! instant, or neither is and the send sleeps until the later of the two is ready. Waiting
//! for one and then the other (what `governor`'s `until_ready` offers) would let sends
//! released by the first bunch up while they wait for the second, breaking the first's bound.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::spec::values::RateLimit;

/// How much wider than `1/rate` sends are spaced: 1%. The bound is measured at the receiver,
/// and a request delayed on the way can land next to the one after it. With sends 1% apart
/// beyond the rate, up to 1% of the period (10 ms for `per_second`) of network jitter still
/// never puts more than `rate + 1` into any window at the receiver; the cost is sending at
/// 99% of the configured rate.
pub const JITTER_MARGIN: f64 = 0.01;

/// One GCRA limiter with a burst of 1. Its rate can be changed while sends wait on it (a
/// Channel file edited while runs send through it): one limiter per channel, whatever
/// revision each run is pinned to, so old and new runs together still keep to one rate.
#[derive(Debug)]
pub struct Gcra {
    /// The spacing between sends, in nanoseconds.
    interval_ns: AtomicU64,
    tat: Mutex<Option<Instant>>,
}

/// `period / count`, plus [`JITTER_MARGIN`].
fn spacing(limit: RateLimit) -> Duration {
    let exact = limit.period.duration() / limit.count.max(1);
    (exact + exact.mul_f64(JITTER_MARGIN)).max(Duration::from_nanos(1))
}

impl Gcra {
    /// A limiter spacing sends `period / count` apart, plus [`JITTER_MARGIN`].
    pub fn new(limit: RateLimit) -> Gcra {
        Gcra {
            interval_ns: AtomicU64::new(nanos(spacing(limit))),
            tat: Mutex::new(None),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns.load(Ordering::Relaxed))
    }

    /// Sends from now on are spaced by `limit`; the next one is still due at the current
    /// theoretical arrival time.
    pub fn set_limit(&self, limit: RateLimit) {
        self.interval_ns
            .store(nanos(spacing(limit)), Ordering::Relaxed);
    }

    /// How many sends this limiter would let through between now and `now + horizon`
    /// (a claim takes no more rows than its limiters can send soon).
    pub fn capacity_within(&self, horizon: Duration) -> u32 {
        let now = Instant::now();
        let tat = lock(&self.tat).unwrap_or(now).max(now);
        let end = now + horizon;
        if tat > end {
            return 0;
        }
        let spare = end - tat;
        let n = spare.as_nanos() / self.interval().as_nanos().max(1) + 1;
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the TAT half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until every limiter in `limiters` lets a send through, and charges them all at
/// that same instant.
pub async fn acquire(limiters: &[&Gcra]) {
    if limiters.is_empty() {
        return;
    }
    // A fixed locking order (by address) so that two sends never wait on each other.
    let mut ordered: Vec<&Gcra> = limiters.to_vec();
    ordered.sort_by_key(|g| *g as *const Gcra as usize);
    ordered.dedup_by_key(|g| *g as *const Gcra as usize);
    loop {
        let now = Instant::now();
        let ready_at = {
            let mut guards: Vec<_> = ordered.iter().map(|g| lock(&g.tat)).collect();
            let ready_at = guards
                .iter()
                .map(|tat| tat.unwrap_or(now))
                .max()
                .unwrap_or(now);
            if ready_at <= now {
                for (guard, g) in guards.iter_mut().zip(&ordered) {
                    **guard = Some(next_tat(**guard, now, g.interval()));
                }
                return;
            }
            ready_at
        };
        tokio::time::sleep_until(ready_at).await;
    }
}

/// The TAT after a send at `now`. A sender that slept until its TAT wakes a little late
/// (timer granularity, scheduling): charging from `now` would lose that lateness on every
/// send, and a limiter set to 200/s measured about 164/s at the receiver. So a send within
/// one interval of its TAT is charged from the TAT, keeping the schedule; the bound still
/// holds, because no send ever goes out before its TAT and the lateness carried over is
/// under one interval. A limiter idle for longer restarts from `now` (no saved-up burst).
fn next_tat(tat: Option<Instant>, now: Instant, interval: Duration) -> Instant {
    match tat {
        Some(tat) if tat <= now && now - tat < interval => tat + interval,
        Some(tat) => tat.max(now) + interval,
        None => now + interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::values::RatePeriod;

    #[tokio::test]
    async fn sends_through_one_limiter_keep_to_a_schedule_one_interval_apart() {
        let g = Gcra::new(RateLimit {
            count: 50,
            period: RatePeriod::Second,
        });
        let mut times = Vec::new();
        for _ in 0..5 {
            acquire(&[&g]).await;
            times.push(Instant::now());
        }
        // Each send keeps to the schedule: the k-th leaves at least k intervals after the
        // first (a single gap may be shorter when the previous send woke late).
        for (k, t) in times.iter().enumerate() {
            assert!(
                *t - times[0] >= Duration::from_millis(20) * k as u32,
                "send {k} left {:?} after the first",
                *t - times[0]
            );
        }
    }

    #[tokio::test]
    async fn two_limiters_are_charged_together_at_the_slower_ones_pace() {
        let fast = Gcra::new(RateLimit {
            count: 1000,
            period: RatePeriod::Second,
        });
        let slow = Gcra::new(RateLimit {
            count: 20,
            period: RatePeriod::Second,
        });
        let start = Instant::now();
        for _ in 0..3 {
            acquire(&[&fast, &slow]).await;
        }
        assert!(Instant::now() - start >= Duration::from_millis(100));
        // The fast one was charged only when a send went out: it is ready again at once,
        // not owed the sends the slow one held back.
        assert!(fast.capacity_within(Duration::from_millis(5)) >= 4);
    }

    #[test]
    fn a_changed_limit_spaces_the_sends_that_follow() {
        let g = Gcra::new(RateLimit {
            count: 10,
            period: RatePeriod::Second,
        });
        assert_eq!(g.capacity_within(Duration::from_millis(950)), 10);
        g.set_limit(RateLimit {
            count: 100,
            period: RatePeriod::Second,
        });
        assert_eq!(g.interval(), Duration::from_micros(10_100));
        assert_eq!(g.capacity_within(Duration::from_millis(950)), 95);
    }

    #[test]
    fn a_send_woken_late_keeps_the_schedule_and_an_idle_limiter_saves_no_burst() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(5);
        // Woken 1 ms late: the next send is due one interval after the scheduled time.
        let late = t0 + Duration::from_millis(1);
        assert_eq!(next_tat(Some(t0), late, interval), t0 + interval);
        // Idle for a long time: the next send is due one interval after now, not at once.
        let much_later = t0 + Duration::from_secs(1);
        assert_eq!(
            next_tat(Some(t0), much_later, interval),
            much_later + interval
        );
        assert_eq!(next_tat(None, t0, interval), t0 + interval);
    }
}
