//! The outbound webhook sender: drains the outbox (`webhook_outbox`) to the subscribers.
//!
//! Each request is one event (its `event_id` is the webhook-id) or, for a Webhook with
//! `batching`, up to `max_events` delivery events as one JSON array (the batch's id is the
//! webhook-id, the same on every retry of that batch). Every request carries
//! `webhook-id`, `webhook-timestamp` (the attempt's unix seconds) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the subscription's `whsec_`
//! secret), per the Standard Webhooks specification.
//!
//! Outcomes: a 2xx acknowledges the events. 410 Gone disables the subscription's spec
//! version (kept in the store, so a restart keeps it disabled until the spec changes) and
//! gives up its pending events. Anything else (another status, a redirect, which is never
//! followed, a timeout, a refused connection) is a failed attempt, tried again on the
//! specification's schedule: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h
//! after each failure ([`SCHEDULE`]), or later if the answer's Retry-After asks for it. An
//! event whose eighth attempt fails is given up (`expired`, with its last error). Events
//! of a subscription removed from the files or set `enabled: false` are given up too,
//! with a reason that says so: nothing is dropped silently.
//!
//! The single step is public ([`Sender::deliver_once`]); [`Sender::run`] loops it.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio::task::JoinSet;

use crate::engine::Clock;
use crate::metrics::{WebhookAttempt, webhook_attempt};
use crate::reconcile::{StoredObject, rebuild};
use crate::secrets::SecretResolver;
use crate::signing::{self, SigningKey};
use crate::spec::Object;
use crate::spec::values::parse_duration;
use crate::spec::webhook::WebhookSpec;
use crate::store::webhooks::{AttemptResult, OutboxRow, Subscription};
use crate::store::{Store, StoreError};

/// The waits after each failed attempt (the Standard Webhooks retry schedule): the first
/// attempt is immediate, so an event gets `SCHEDULE.len() + 1` attempts in all.
pub const SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Attempts per event, the first included.
pub const MAX_ATTEMPTS: u32 = SCHEDULE.len() as u32 + 1;

/// The longest herald waits for a receiver's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A receiver's Retry-After is honoured up to this long (a day): a wrong header must not
/// park an event for ever.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A hidden knob for tests: a factor applied to [`SCHEDULE`] (e.g. `0.001` makes 5 s
/// into 5 ms). Retry-After is never scaled.
pub const RETRY_SCALE_ENV: &str = "HERALD_WEBHOOK_RETRY_SCALE";

/// How long [`Sender::run`] sleeps when nothing was due.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Due events read per step, and requests in flight at once.
const DUE_LIMIT: u32 = 256;
const MAX_IN_FLIGHT: usize = 16;

/// Batches formed per subscription per step at most.
const BATCHES_PER_STEP: usize = 16;

/// How long a shutdown lets the requests in flight finish; those cut off stay pending and
/// go out again after the restart (receivers de-duplicate on webhook-id).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Acknowledged events are kept this long, given-up ones this long, then deleted (checked
/// every [`PRUNE_EVERY`], a bounded number at a time).
pub const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
pub const KEEP_EXPIRED: Duration = Duration::from_secs(30 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_LIMIT: u32 = 10_000;

/// How much of an error answer's body a last error quotes.
const MAX_ANSWER_BYTES: usize = 4096;

/// When to try again after `attempts` failed attempts (1: the first one failed), given
/// the receiver's Retry-After: the later of the schedule's wait (times `scale`) and
/// Retry-After (at most [`MAX_RETRY_AFTER`]). `None`: that was the last attempt.
pub fn next_delay(attempts: u32, retry_after: Option<Duration>, scale: f64) -> Option<Duration> {
    let step = SCHEDULE.get(usize::try_from(attempts.checked_sub(1)?).ok()?)?;
    let scheduled = step.mul_f64(scale.max(0.0));
    let asked = retry_after.unwrap_or_default().min(MAX_RETRY_AFTER);
    Some(scheduled.max(asked))
}

/// The schedule factor from [`RETRY_SCALE_ENV`] (1 when unset or not a positive number).
pub fn retry_scale_from_env() -> f64 {
    std::env::var(RETRY_SCALE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0)
}

/// A subscription in force, parsed.
struct Target {
    hash: String,
    spec: WebhookSpec,
    /// `Err(reason)`: its events are given up with this reason.
    usable: Result<(), String>,
    /// (max_events, max_wait)
    batching: Option<(u32, Duration)>,
}

/// One request: a single event, or a batch.
struct Unit {
    webhook: String,
    /// The request's webhook-id.
    id: String,
    rows: Vec<OutboxRow>,
    batch: bool,
}

/// What one request came to.
enum Answer {
    Acknowledged(u16),
    Gone,
    Failed {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
}

/// Sends the outbox. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    store: Store,
    secrets: Arc<SecretResolver>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    scale: f64,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("scale", &self.scale)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender over `store`; `${file:}` secrets are relative to `campaign_dir`. The HTTP
    /// client never follows redirects and gives up on a request after [`REQUEST_TIMEOUT`].
    pub fn new(
        store: Store,
        campaign_dir: PathBuf,
        clock: Arc<dyn Clock>,
    ) -> Result<Sender, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            store,
            secrets: Arc::new(SecretResolver::new(campaign_dir)),
            clock,
            client,
            scale: 1.0,
        })
    }

    /// Scales the retry schedule (tests); see [`RETRY_SCALE_ENV`].
    pub fn with_retry_scale(mut self, scale: f64) -> Sender {
        self.scale = scale;
        self
    }

    /// Delivers until `stop` resolves; then lets the requests in flight finish (for a few
    /// seconds at most) and returns. A step that fails (the store unavailable) is logged
    /// and tried again.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut pruned_at: Option<std::time::Instant> = None;
        loop {
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(std::time::Instant::now());
                self.prune().await;
            }
            let step = self.deliver_once();
            tokio::pin!(step);
            let idle = tokio::select! {
                result = &mut step => match result {
                    Ok(requests) => requests == 0,
                    Err(e) => {
                        tracing::error!(error = %e, "the webhook sender cannot read or write the outbox; retrying");
                        true
                    }
                },
                () = &mut stop => {
                    let _ = tokio::time::timeout(STOP_GRACE, step).await;
                    return;
                }
            };
            if idle {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
            }
        }
    }

    /// Deletes old settled events (see [`KEEP_DELIVERED`]); a failure is logged only.
    async fn prune(&self) {
        let now = self.clock.now().as_millisecond();
        let before = |keep: Duration| {
            now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
        };
        match self
            .store
            .prune_webhook_events(before(KEEP_DELIVERED), before(KEEP_EXPIRED), PRUNE_LIMIT)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(events = n, "old settled webhook events deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete old webhook events"),
        }
    }

    /// One step: gives up the events of subscriptions that cannot get them, forms the
    /// batches that are ready, sends every due request (a few at a time) and records what
    /// each came to. Returns how many requests were made.
    pub async fn deliver_once(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let pending = self.store.webhooks_with_pending().await?;
        if pending.is_empty() {
            // Nothing waits: no need to read and rebuild the subscriptions (every step).
            return Ok(0);
        }
        let targets = targets(self.store.webhook_subscriptions().await?);
        for webhook in pending {
            let reason = match targets.get(&webhook) {
                None => Some("the webhook is no longer in force".to_string()),
                Some(t) => t.usable.clone().err(),
            };
            if let Some(reason) = reason {
                let n = self
                    .store
                    .expire_webhook_events(&webhook, &reason, now)
                    .await?;
                if n > 0 {
                    tracing::warn!(webhook = %webhook, events = n, "webhook events given up: {reason}");
                }
            }
        }
        let batching: Vec<&str> = targets
            .iter()
            .filter(|(_, t)| t.batching.is_some())
            .map(|(name, _)| name.as_str())
            .collect();
        let mut units: Vec<Unit> = Vec::new();
        let mut batches_seen: HashSet<String> = HashSet::new();
        for row in self
            .store
            .due_webhook_events(now, &batching, DUE_LIMIT)
            .await?
        {
            if targets.get(&row.webhook).is_none_or(|t| t.usable.is_err()) {
                continue;
            }
            match row.batch_id.clone() {
                Some(batch) => {
                    if batches_seen.insert(batch.clone()) {
                        let rows = self.store.batch_events(&batch).await?;
                        if !rows.is_empty() {
                            units.push(Unit {
                                webhook: row.webhook.clone(),
                                id: batch,
                                rows,
                                batch: true,
                            });
                        }
                    }
                }
                None => units.push(Unit {
                    webhook: row.webhook.clone(),
                    id: row.event_id.clone(),
                    rows: vec![row],
                    batch: false,
                }),
            }
        }
        for (name, target) in &targets {
            let Some((max_events, max_wait)) = target.batching else {
                continue;
            };
            if target.usable.is_err() {
                continue;
            }
            for _ in 0..BATCHES_PER_STEP {
                let rows = self.store.unbatched_events(name, max_events).await?;
                let Some(first) = rows.first() else { break };
                let full = rows.len() >= max_events as usize;
                let waited = now.as_millisecond().saturating_sub(first.created_at)
                    >= i64::try_from(max_wait.as_millis()).unwrap_or(i64::MAX);
                if !full && !waited {
                    break;
                }
                let batch = format!("msg_batch_{}", first.event_id.trim_start_matches("msg_"));
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                self.store.form_webhook_batch(&ids, &batch).await?;
                let rows = self.store.batch_events(&batch).await?;
                if !rows.is_empty() {
                    units.push(Unit {
                        webhook: name.clone(),
                        id: batch,
                        rows,
                        batch: true,
                    });
                }
                if !full {
                    break;
                }
            }
        }
        let requests = units.len();
        let targets = Arc::new(targets);
        let mut sends: JoinSet<(Unit, Answer)> = JoinSet::new();
        let mut units = units.into_iter();
        loop {
            while sends.len() < MAX_IN_FLIGHT {
                let Some(unit) = units.next() else { break };
                let sender = self.clone();
                let targets = targets.clone();
                sends.spawn(async move {
                    let answer = match targets.get(&unit.webhook) {
                        Some(target) => sender.send(target, &unit).await,
                        None => Answer::Failed {
                            status: None,
                            error: "the webhook is no longer in force".into(),
                            retry_after: None,
                        },
                    };
                    (unit, answer)
                });
            }
            let Some(done) = sends.join_next().await else {
                break;
            };
            match done {
                Ok((unit, answer)) => self.record(&targets, &unit, answer).await?,
                Err(e) => tracing::error!(error = %e, "a webhook request task failed"),
            }
        }
        Ok(requests)
    }

    /// POSTs one request, signed.
    async fn send(&self, target: &Target, unit: &Unit) -> Answer {
        let failed = |error: String| Answer::Failed {
            status: None,
            error,
            retry_after: None,
        };
        let key = match self
            .secrets
            .resolve(&target.spec.secret)
            .map_err(|e| e.to_string())
            .and_then(|s| SigningKey::from_secret(s.expose()).map_err(|e| e.to_string()))
        {
            Ok(key) => key,
            Err(e) => return failed(format!("cannot use the webhook's secret: {e}")),
        };
        let body = if unit.batch {
            let mut body = String::from("[");
            for (i, row) in unit.rows.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&row.payload);
            }
            body.push(']');
            body
        } else {
            unit.rows[0].payload.clone()
        };
        let timestamp = self.clock.now().as_second();
        let signature = signing::sign(&key, &unit.id, timestamp, body.as_bytes());
        let request = self
            .client
            .post(target.spec.url.value.as_str())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(signing::HEADER_ID, unit.id.as_str())
            .header(signing::HEADER_TIMESTAMP, timestamp.to_string())
            .header(signing::HEADER_SIGNATURE, signature)
            .body(body);
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let reason = match crate::channels::classify_transport_error(e) {
                    crate::channels::SendOutcome::Transient { reason, .. }
                    | crate::channels::SendOutcome::Permanent { reason, .. } => reason,
                    crate::channels::SendOutcome::Sent { .. } => "the request failed".into(),
                };
                return failed(reason);
            }
        };
        let status = response.status();
        if status.is_success() {
            return Answer::Acknowledged(status.as_u16());
        }
        if status == reqwest::StatusCode::GONE {
            return Answer::Gone;
        }
        let retry_after = crate::channels::retry_after(response.headers(), self.clock.now());
        let mut excerpt: Vec<u8> = Vec::new();
        while excerpt.len() < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let mut error = crate::channels::http_reason(status, &excerpt);
        if status.is_redirection() {
            error.push_str(" (redirects are not followed: configure the final URL)");
        }
        Answer::Failed {
            status: Some(status.as_u16()),
            error,
            retry_after,
        }
    }

    /// Writes what a request came to.
    async fn record(
        &self,
        targets: &BTreeMap<String, Target>,
        unit: &Unit,
        answer: Answer,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let ids: Vec<i64> = unit.rows.iter().map(|r| r.id).collect();
        let attempts = unit.rows.iter().map(|r| r.attempts).max().unwrap_or(0) + 1;
        match answer {
            Answer::Acknowledged(status) => {
                webhook_attempt(WebhookAttempt::Delivered);
                self.store
                    .record_webhook_attempt(&ids, &AttemptResult::Delivered { status }, now)
                    .await
            }
            Answer::Gone => {
                webhook_attempt(WebhookAttempt::Expired);
                let reason = "HTTP 410 Gone: the receiver asked to stop; the subscription is \
                              disabled until its Webhook spec changes";
                tracing::warn!(webhook = %unit.webhook, "{reason}");
                self.store
                    .record_webhook_attempt(
                        &ids,
                        &AttemptResult::GiveUp {
                            status: Some(410),
                            error: reason.into(),
                        },
                        now,
                    )
                    .await?;
                if let Some(target) = targets.get(&unit.webhook) {
                    self.store
                        .disable_webhook(&unit.webhook, &target.hash, reason, now)
                        .await?;
                }
                Ok(())
            }
            Answer::Failed {
                status,
                error,
                retry_after,
            } => {
                let result = match next_delay(attempts, retry_after, self.scale) {
                    Some(wait) => {
                        webhook_attempt(WebhookAttempt::Failed);
                        tracing::warn!(webhook = %unit.webhook, id = %unit.id, attempt = attempts, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed: {error}");
                        AttemptResult::Retry {
                            status,
                            error,
                            next_attempt_at: now.as_millisecond().saturating_add(
                                i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
                            ),
                        }
                    }
                    None => {
                        webhook_attempt(WebhookAttempt::Expired);
                        tracing::error!(webhook = %unit.webhook, id = %unit.id, attempts, "webhook delivery given up after the last attempt: {error}");
                        AttemptResult::GiveUp { status, error }
                    }
                };
                self.store.record_webhook_attempt(&ids, &result, now).await
            }
        }
    }
}

/// The subscriptions in force, parsed, by name.
fn targets(subscriptions: Vec<Subscription>) -> BTreeMap<String, Target> {
    let stored: Vec<StoredObject> = subscriptions
        .iter()
        .map(|s| StoredObject {
            kind: crate::spec::Kind::Webhook,
            name: s.name.clone(),
            body: s.body.clone(),
            file: String::new(),
            line: 0,
        })
        .collect();
    let loaded = rebuild(&stored);
    let mut specs: BTreeMap<String, WebhookSpec> = BTreeMap::new();
    for object in loaded.objects {
        if let Object::Webhook(doc) = object {
            specs.insert(doc.metadata.name.value.clone(), doc.spec);
        }
    }
    let mut out = BTreeMap::new();
    for s in subscriptions {
        let Some(spec) = specs.remove(&s.name) else {
            tracing::error!(webhook = %s.name, "the Webhook spec in force cannot be read; its events wait");
            continue;
        };
        let usable = if !spec.enabled {
            Err("the webhook is disabled (`enabled: false`)".to_string())
        } else if let Some(d) = &s.disabled {
            Err(d.reason.clone())
        } else {
            Ok(())
        };
        let batching = spec.batching.as_ref().map(|b| {
            (
                b.max_events.value.max(1),
                parse_duration(&b.max_wait.value).unwrap_or(Duration::from_secs(5)),
            )
        });
        out.insert(
            s.name,
            Target {
                hash: s.hash,
                spec,
                usable,
                batching,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_standard_webhooks_one() {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        let hours = |h: u64| Duration::from_secs(3600 * h);
        let waits: Vec<Duration> = (1..MAX_ATTEMPTS)
            .map(|n| next_delay(n, None, 1.0).unwrap())
            .collect();
        assert_eq!(
            waits,
            [
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                hours(2),
                hours(5),
                hours(10),
                hours(10)
            ]
        );
        assert_eq!(MAX_ATTEMPTS, 8);
        assert_eq!(
            next_delay(MAX_ATTEMPTS, None, 1.0),
            None,
            "the 8th failure gives up"
        );
        assert_eq!(next_delay(0, None, 1.0), None);
    }

    #[test]
    fn retry_after_wins_when_it_is_later_than_the_schedule() {
        let after = |s| Some(Duration::from_secs(s));
        assert_eq!(next_delay(1, after(60), 1.0), Some(Duration::from_secs(60)));
        assert_eq!(
            next_delay(2, after(60), 1.0),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            next_delay(1, after(10 * 24 * 3600), 1.0),
            Some(MAX_RETRY_AFTER),
            "a Retry-After is honoured up to a day"
        );
    }

    #[test]
    fn the_scale_shortens_the_schedule_but_not_retry_after() {
        assert_eq!(next_delay(1, None, 0.001), Some(Duration::from_millis(5)));
        assert_eq!(
            next_delay(1, Some(Duration::from_secs(2)), 0.001),
            Some(Duration::from_secs(2))
        );
    }
}
