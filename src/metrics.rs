//! Process-wide Prometheus metrics: the recorder, installed once, and one function per thing
//! herald counts, named after what it counts. Modules call these functions, never the
//! `metrics` macros directly, so every series has one definition, one HELP line and labels
//! from a closed or configured set (no user text, no contact ids: bounded cardinality).
//!
//! What is counted here, as it happens:
//!
//! | function | series |
//! |---|---|
//! | [`message_result`] | `herald_messages_total{channel,status}` (counter) |
//! | [`rate_limit_wait`] | `herald_rate_limit_waits_total{channel}` (counter), `herald_rate_limit_wait_seconds{channel}` (histogram: `_sum` is the time spent waiting) |
//! | [`provider_latency`] | `herald_provider_request_duration_seconds{channel}` (histogram) |
//! | [`webhook_attempt`] | `herald_webhook_attempts_total{outcome}` (counter) |
//! | [`reload`] | `herald_reloads_total{outcome}` (counter), `herald_reload_duration_seconds` (histogram), `herald_last_reload_success`, `herald_last_reload_timestamp_seconds`, `herald_last_successful_reload_timestamp_seconds` (gauges) |
//!
//! What is read from the store when `/metrics` is scraped (deliveries pending, runs by
//! status, the webhook outbox) is not kept here: `http::metrics` appends it, so it is right
//! after a restart and never drifts from the store.
//!
//! Recording before anything has been scraped is fine: the first call installs the recorder.
//! A process has one global recorder; if something else installed one first, herald's
//! series are missing from `/metrics` and a warning is logged (nothing fails).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const MESSAGES_TOTAL: &str = "herald_messages_total";
pub const RATE_LIMIT_WAITS_TOTAL: &str = "herald_rate_limit_waits_total";
pub const RATE_LIMIT_WAIT_DURATION: &str = "herald_rate_limit_wait_seconds";
pub const PROVIDER_REQUEST_DURATION: &str = "herald_provider_request_duration_seconds";
pub const WEBHOOK_ATTEMPTS_TOTAL: &str = "herald_webhook_attempts_total";
pub const RELOADS_TOTAL: &str = "herald_reloads_total";
pub const RELOAD_DURATION: &str = "herald_reload_duration_seconds";
pub const LAST_RELOAD_SUCCESS: &str = "herald_last_reload_success";
pub const LAST_RELOAD_TIMESTAMP: &str = "herald_last_reload_timestamp_seconds";
pub const LAST_SUCCESSFUL_RELOAD_TIMESTAMP: &str =
    "herald_last_successful_reload_timestamp_seconds";

/// Upper bounds of the provider latency buckets, in seconds: from a local outbox file
/// (sub-millisecond) to a provider API at its timeout.
const PROVIDER_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the rate-limit wait buckets, in seconds: a 50/s channel's gap to an
/// hourly limit's.
const RATE_LIMIT_WAIT_BUCKETS: &[f64] =
    &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0];
/// Upper bounds of the reload duration buckets, in seconds: a few files to thousands.
const RELOAD_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Histogram samples are buffered until drained; `/metrics` drains them, and so does every
/// this-many-th observation, so that a daemon nobody scrapes does not grow without bound.
const UPKEEP_EVERY: u32 = 4096;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static OBSERVATIONS: AtomicU32 = AtomicU32::new(0);
static LAST_RELOAD: Mutex<Option<LastReload>> = Mutex::new(None);

/// The recorder's handle, installing the recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(install)
}

fn install() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(PROVIDER_REQUEST_DURATION.into()),
            PROVIDER_LATENCY_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(RELOAD_DURATION.into()), RELOAD_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(RATE_LIMIT_WAIT_DURATION.into()),
                RATE_LIMIT_WAIT_BUCKETS,
            )
        })
        .expect("the bucket lists are not empty")
        .build_recorder();
    let handle = recorder.handle();
    if let Err(e) = metrics::set_global_recorder(recorder) {
        tracing::warn!(error = %e, "another metrics recorder is installed: herald's own series will be missing from /metrics");
    }
    describe();
    handle
}

/// One HELP line per series (the exporter prints them from these descriptions).
fn describe() {
    metrics::describe_counter!(
        MESSAGES_TOTAL,
        "Messages by channel and result status (sent, retry, failed, skipped, unknown, ...), counted when the engine records the result."
    );
    metrics::describe_counter!(
        RATE_LIMIT_WAITS_TOTAL,
        "Sends that had to wait for their channel's or campaign's rate limit, by channel."
    );
    metrics::describe_histogram!(
        RATE_LIMIT_WAIT_DURATION,
        "How long sends waited for their channel's or campaign's rate limit, in seconds, by channel (the sum is the total time spent waiting)."
    );
    metrics::describe_histogram!(
        PROVIDER_REQUEST_DURATION,
        "How long a channel's provider took to answer one send, in seconds."
    );
    metrics::describe_counter!(
        WEBHOOK_ATTEMPTS_TOTAL,
        "Outbound webhook delivery attempts by outcome (delivered, failed: to be retried, expired: given up)."
    );
    metrics::describe_counter!(
        RELOADS_TOTAL,
        "Reconciles of the campaign directory by outcome: applied, unchanged, rejected (invalid files; the revision in force stays) or error (the store or the directory could not be read)."
    );
    metrics::describe_histogram!(
        RELOAD_DURATION,
        "How long one reconcile of the campaign directory took, in seconds."
    );
    metrics::describe_gauge!(
        LAST_RELOAD_SUCCESS,
        "1 if the last reconcile applied the directory or found it unchanged, 0 if it was rejected or failed."
    );
    metrics::describe_gauge!(
        LAST_RELOAD_TIMESTAMP,
        "When the last reconcile ended, as unix seconds."
    );
    metrics::describe_gauge!(
        LAST_SUCCESSFUL_RELOAD_TIMESTAMP,
        "When the last reconcile that applied the directory or found it unchanged ended, as unix seconds."
    );
}

/// The exposition text of everything recorded in this process so far.
pub fn render() -> String {
    handle().render()
}

/// `count` sends' results on `channel`: `status` is the delivery status written (`sent`,
/// `retry`, `failed`, `skipped`, `unknown`, ...). The engine counts a batch, then calls
/// this once per (channel, status).
pub fn message_result(channel: &str, status: &str, count: u64) {
    handle();
    metrics::counter!(MESSAGES_TOTAL, "channel" => channel.to_string(), "status" => status.to_string())
        .increment(count);
}

/// One channel's per-send series, looked up once: the engine keeps them with the built
/// channel, so a send records without building labels or searching the registry.
#[derive(Clone)]
pub struct ChannelSeries {
    waits: metrics::Counter,
    wait_duration: metrics::Histogram,
    latency: metrics::Histogram,
}

impl std::fmt::Debug for ChannelSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSeries").finish_non_exhaustive()
    }
}

/// `channel`'s per-send series.
pub fn channel_series(channel: &str) -> ChannelSeries {
    handle();
    let label = channel.to_string();
    ChannelSeries {
        waits: metrics::counter!(RATE_LIMIT_WAITS_TOTAL, "channel" => label.clone()),
        wait_duration: metrics::histogram!(RATE_LIMIT_WAIT_DURATION, "channel" => label.clone()),
        latency: metrics::histogram!(PROVIDER_REQUEST_DURATION, "channel" => label),
    }
}

impl ChannelSeries {
    /// A send waited `waited` for a rate limit (its channel's or its campaign's). Call it
    /// only when the send did wait; a send that went at once is not a wait.
    pub fn rate_limit_wait(&self, waited: Duration) {
        self.waits.increment(1);
        self.wait_duration.record(waited.as_secs_f64());
        upkeep_now_and_then();
    }

    /// The provider took `took` to answer one send (whatever the answer).
    pub fn provider_latency(&self, took: Duration) {
        self.latency.record(took.as_secs_f64());
        upkeep_now_and_then();
    }
}

/// A send on `channel` waited `waited` for a rate limit; see [`ChannelSeries`].
#[cfg(test)]
fn rate_limit_wait(channel: &str, waited: Duration) {
    channel_series(channel).rate_limit_wait(waited);
}

/// `channel`'s provider took `took` to answer one send; see [`ChannelSeries`].
#[cfg(test)]
fn provider_latency(channel: &str, took: Duration) {
    channel_series(channel).provider_latency(took);
}

/// What one outbound webhook delivery attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookAttempt {
    /// The receiver acknowledged it (2xx).
    Delivered,
    /// It failed and will be retried.
    Failed,
    /// It failed for the last time: the event is given up (`expired` in the outbox).
    Expired,
}

impl WebhookAttempt {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookAttempt::Delivered => "delivered",
            WebhookAttempt::Failed => "failed",
            WebhookAttempt::Expired => "expired",
        }
    }
}

/// One outbound webhook delivery attempt and its outcome.
pub fn webhook_attempt(outcome: WebhookAttempt) {
    handle();
    metrics::counter!(WEBHOOK_ATTEMPTS_TOTAL, "outcome" => outcome.as_str()).increment(1);
}

/// What one reconcile of the campaign directory came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// A new revision was applied.
    Applied,
    /// The directory is the revision in force.
    Unchanged,
    /// The directory is invalid; the revision in force stays.
    Rejected,
    /// The directory or the store could not be read; retried.
    Error,
}

impl ReloadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Rejected => "rejected",
            ReloadOutcome::Error => "error",
        }
    }

    /// Applied or unchanged: the files on disk are what is in force.
    pub fn is_success(self) -> bool {
        matches!(self, ReloadOutcome::Applied | ReloadOutcome::Unchanged)
    }
}

/// The last reconcile this process did, for the status page.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LastReload {
    pub outcome: ReloadOutcome,
    pub at: jiff::Timestamp,
    pub took: Duration,
}

/// A reconcile ended at `at` with `outcome` after `took`.
pub fn reload(outcome: ReloadOutcome, took: Duration, at: jiff::Timestamp) {
    handle();
    metrics::counter!(RELOADS_TOTAL, "outcome" => outcome.as_str()).increment(1);
    metrics::histogram!(RELOAD_DURATION).record(took.as_secs_f64());
    let seconds = at.as_millisecond() as f64 / 1000.0;
    metrics::gauge!(LAST_RELOAD_TIMESTAMP).set(seconds);
    metrics::gauge!(LAST_RELOAD_SUCCESS).set(if outcome.is_success() { 1.0 } else { 0.0 });
    if outcome.is_success() {
        metrics::gauge!(LAST_SUCCESSFUL_RELOAD_TIMESTAMP).set(seconds);
    }
    *LAST_RELOAD.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastReload { outcome, at, took });
}

/// The last reconcile of this process, if any yet.
pub fn last_reload() -> Option<LastReload> {
    *LAST_RELOAD.lock().unwrap_or_else(|p| p.into_inner())
}

fn upkeep_now_and_then() {
    if OBSERVATIONS.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
        handle().run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `name{labels}` (labels as rendered, sorted or not) in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn a_message_result_is_counted_by_channel_and_status() {
        message_result("unit-sms", "sent", 1);
        message_result("unit-sms", "sent", 1);
        message_result("unit-sms", "failed", 1);
        let text = render();
        assert!(
            has_line(&text, "# TYPE herald_messages_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP herald_messages_total Messages by channel"),
            "{text}"
        );
        // The exporter orders labels as given: channel, then status.
        let sent = sample(
            &text,
            r#"herald_messages_total{channel="unit-sms",status="sent"}"#,
        );
        let failed = sample(
            &text,
            r#"herald_messages_total{channel="unit-sms",status="failed"}"#,
        );
        assert!(sent >= Some(2.0), "{text}");
        assert!(failed >= Some(1.0), "{text}");
    }

    #[test]
    fn provider_latency_renders_as_a_histogram_with_buckets() {
        provider_latency("unit-wa", Duration::from_millis(30));
        provider_latency("unit-wa", Duration::from_secs(3));
        let text = render();
        assert!(
            has_line(
                &text,
                "# TYPE herald_provider_request_duration_seconds histogram"
            ),
            "{text}"
        );
        let le = |bound: &str| {
            sample(
                &text,
                &format!(
                    r#"herald_provider_request_duration_seconds_bucket{{channel="unit-wa",le="{bound}"}}"#
                ),
            )
        };
        assert_eq!(le("0.025"), Some(0.0), "{text}");
        assert_eq!(le("0.05"), Some(1.0), "{text}");
        assert_eq!(le("5"), Some(2.0), "{text}");
        assert_eq!(le("+Inf"), Some(2.0), "{text}");
        let count = sample(
            &text,
            r#"herald_provider_request_duration_seconds_count{channel="unit-wa"}"#,
        );
        assert_eq!(count, Some(2.0), "{text}");
    }

    #[test]
    fn rate_limit_waits_count_waits_and_the_time_waited() {
        rate_limit_wait("unit-tg", Duration::from_millis(1500));
        rate_limit_wait("unit-tg", Duration::from_millis(500));
        let text = render();
        assert_eq!(
            sample(&text, r#"herald_rate_limit_waits_total{channel="unit-tg"}"#),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"herald_rate_limit_wait_seconds_sum{channel="unit-tg"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert!(
            text.contains("# HELP herald_rate_limit_wait_seconds "),
            "{text}"
        );
        assert!(
            has_line(&text, "# TYPE herald_rate_limit_wait_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn webhook_attempts_are_counted_by_outcome() {
        webhook_attempt(WebhookAttempt::Expired);
        let text = render();
        assert!(
            sample(&text, r#"herald_webhook_attempts_total{outcome="expired"}"#) >= Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn a_reload_sets_its_outcome_success_and_time() {
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        reload(ReloadOutcome::Rejected, Duration::from_millis(20), at);
        let text = render();
        assert!(
            sample(&text, r#"herald_reloads_total{outcome="rejected"}"#) >= Some(1.0),
            "{text}"
        );
        assert!(
            has_line(&text, "# TYPE herald_reload_duration_seconds histogram"),
            "{text}"
        );
        // Other tests may reload too, but none with a failure after a success at this time.
        let last = last_reload().unwrap();
        if last.at == at {
            assert_eq!(
                sample(&text, "herald_last_reload_success"),
                Some(0.0),
                "{text}"
            );
            assert_eq!(
                sample(&text, "herald_last_reload_timestamp_seconds"),
                Some(1_800_000_000.0),
                "{text}"
            );
            assert_eq!(last.outcome, ReloadOutcome::Rejected);
        }
        reload(
            ReloadOutcome::Unchanged,
            Duration::from_millis(5),
            at + jiff::SignedDuration::from_secs(30),
        );
        let text = render();
        assert!(
            sample(&text, "herald_last_successful_reload_timestamp_seconds").is_some(),
            "{text}"
        );
    }
}
