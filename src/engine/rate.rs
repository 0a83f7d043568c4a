//! Rate limits: GCRA (the generic cell rate algorithm) per channel and per campaign, with a
//! burst of 1.
//!
//! Each limiter keeps a theoretical arrival time (TAT). A send conforms when `now >= TAT`,
//! and then moves the TAT to `max(TAT, now) + 1/rate`. So two sends through one limiter
//! leave at least `1/rate` apart, and **no sliding window of the rate's period (one second
//! for `per_second`) ever holds more than `rate + 1` sends (burst 1)**, however many runs
//! share the channel. Receivers see the same bound as long as their network jitter is
//! below `1/rate`.
//!
//! A send waits for its channel's and its campaign's limiter *together*
//! ([`acquire`]): both are checked under their locks and both are charged at the same
//! instant, or neither is and the send sleeps until the later of the two is ready. Waiting
//! for one and then the other (what `governor`'s `until_ready` offers) would let sends
//! released by the first bunch up while they wait for the second, breaking the first's bound.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::spec::values::RateLimit;

/// One GCRA limiter with a burst of 1.
#[derive(Debug)]
pub struct Gcra {
    interval: Duration,
    tat: Mutex<Option<Instant>>,
}

impl Gcra {
    /// A limiter spacing sends `period / count` apart.
    pub fn new(limit: RateLimit) -> Gcra {
        let interval = limit.period.duration() / limit.count.max(1);
        Gcra {
            interval: interval.max(Duration::from_nanos(1)),
            tat: Mutex::new(None),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
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
        let n = spare.as_nanos() / self.interval.as_nanos().max(1) + 1;
        u32::try_from(n).unwrap_or(u32::MAX)
    }
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
                    **guard = Some(guard.unwrap_or(now).max(now) + g.interval);
                }
                return;
            }
            ready_at
        };
        tokio::time::sleep_until(ready_at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::values::RatePeriod;

    #[tokio::test]
    async fn sends_through_one_limiter_leave_at_least_one_interval_apart() {
        let g = Gcra::new(RateLimit {
            count: 50,
            period: RatePeriod::Second,
        });
        let mut times = Vec::new();
        for _ in 0..5 {
            acquire(&[&g]).await;
            times.push(Instant::now());
        }
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(20), "{pair:?}");
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
}
