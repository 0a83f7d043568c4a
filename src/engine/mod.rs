//! The run engine: a campaign's firing becomes a run pinned to its revision, its audience
//! is snapshotted into delivery rows, and a worker drains them in batches through the
//! channels within their limits, recording every result (DESIGN.md section 4).
//!
//! The worker's single step is public: [`Engine::dispatch_once`] claims one batch of due
//! deliveries (fairly across runs and channels), re-checks consent, frequency caps and send
//! windows, renders, sends within the rate limits and the channels' `max_in_flight`, and
//! records the results in batched transactions. [`Engine::run`] loops it until shutdown.

mod hold;
mod pinned;
pub mod rate;
pub mod window;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::audience::{CompiledSegment, SqlValue, campaign_query};
use crate::channels::SendOutcome;
use crate::message::OutboundMessage;
use crate::render::{ContactView, RunContext, RunScope};
use crate::spec::campaign::Consent;
use crate::spec::channel::Medium;
use crate::store::deliveries::{ClaimSlot, Claimed, Recorded};
use crate::store::runs::NewRun;
use crate::store::{Store, StoreError};
use pinned::{ChannelHandle, PinnedRun, Shared};

pub use pinned::{DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF};

/// Deliveries claimed by one [`Engine::dispatch_once`] at most.
pub const BATCH: u32 = 1000;

/// How far ahead a claim looks at a rate limit: a (run, channel) gets no more rows than
/// its limiters can let through in this time, so a slow channel never holds up a batch.
const RATE_HORIZON: Duration = Duration::from_secs(1);

/// How long [`Engine::run`] sleeps when nothing is due (a new run, a resume or shutdown
/// wake it sooner).
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Batches [`Engine::run`] keeps in flight: while one records its results, the next sends.
const PIPELINE: usize = 2;

/// The first and the longest pause between attempts to record a batch's results.
const RECORD_RETRY_INITIAL: Duration = Duration::from_millis(50);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

/// The reason of a delivery interrupted by a crash on a channel that cannot de-duplicate.
pub const INTERRUPTED: &str = "interrupted while sending; may or may not have been delivered";

/// A run's id (the `runs.id` row key).
pub type RunId = i64;

/// Where the engine reads the time. Tests inject a manual clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> jiff::Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// Why a run starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The scheduler fired this occurrence. At most one run exists per occurrence.
    Schedule { occurrence: jiff::Timestamp },
    /// An operator started the campaign now.
    Manual,
    /// A test send to one contact, sent even if the campaign is disabled and never counted
    /// in the campaign's figures.
    Test { contact_id: String },
    /// A follow-up for one contact who replied (an `on_reply` rule's `start`): a real run,
    /// counted in the figures, with consent, frequency cap and exclusions applied. Like a
    /// test send it may start a disabled campaign (follow-ups are usually campaigns that
    /// never fire on their own) and goes out now, never at a local time.
    Reply { contact_id: String },
}

/// Why the engine could not do what was asked. Variants are what callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no revision is applied yet")]
    NoRevision,
    #[error("no campaign is named `{0}` in the revision in force")]
    UnknownCampaign(String),
    #[error("campaign `{0}` is disabled")]
    CampaignDisabled(String),
    #[error("no contact has the id `{0}`")]
    UnknownContact(String),
    #[error("no run has the id {0}")]
    UnknownRun(RunId),
    #[error("run {run} is {status}, so it cannot be {action}")]
    InvalidState {
        run: RunId,
        status: String,
        action: &'static str,
    },
    #[error("campaign `{campaign}` cannot be prepared: {message}")]
    Campaign { campaign: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for EngineError {
    fn from(e: sqlx::Error) -> Self {
        EngineError::Store(StoreError::Sql(e))
    }
}

pub use crate::store::deliveries::DeliveryStatus;
pub use crate::store::runs::{PausedBy, RunState, RunStatus};

/// What [`Engine::recover`] did with the deliveries a previous process left in `sending`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// Put back to `pending`: their channel honours idempotency keys, so they are sent
    /// again with the same key.
    pub resent: u64,
    /// Marked `unknown`: their channel does not honour keys; they may or may not have
    /// been delivered and are never sent twice.
    pub unknown: u64,
    /// Per (run, channel): (resent, unknown).
    pub by_run: Vec<RecoveredRun>,
}

/// One run and channel's share of a [`RecoveryReport`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecoveredRun {
    pub run: RunId,
    pub channel: String,
    pub resent: u64,
    pub unknown: u64,
}

/// The run engine. Cheap to clone: every clone shares one state.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    campaign_dir: PathBuf,
    clock: Arc<dyn Clock>,
    /// Runs' pinned configurations, built on first use and dropped when the run ends.
    pinned: Mutex<HashMap<RunId, Arc<PinnedRun>>>,
    /// Runs whose channel could not be built, already logged (once per run, not per row).
    unbuilt_logged: Mutex<HashSet<RunId>>,
    shared: Mutex<Shared>,
    wake: Notify,
    /// Set once [`Engine::run`] is told to stop: recording stops retrying.
    stopping: AtomicBool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("campaign_dir", &self.inner.campaign_dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Full jitter: uniform in [0, min(max, initial × 2^(attempt − 1))].
fn backoff(initial: Duration, max: Duration, attempt: u32, seed: i64) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(seed);
    h.write_u32(attempt);
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    cap.mul_f64(unit)
}

/// A claimed row put back as it was before the claim (nothing was attempted), due again
/// at `due` (unix ms): a batch that could not be prepared, a row outside its send window,
/// a job whose channel the provider asked to wait.
fn put_back(row: &Claimed, medium: Medium, reason: String, due: i64) -> Recorded {
    Recorded {
        id: row.id,
        contact_pk: row.contact_pk,
        medium,
        status: if row.attempts <= 1 {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Retry
        },
        reason: Some(reason),
        next_attempt_at: Some(due),
        provider_message_id: None,
        attempts_delta: -1,
        opt_out: false,
    }
}

/// A batch's contact: its consent per medium for the checks, and what templates see,
/// built once (moved out of the stored record, not copied) and shared by its messages.
struct BatchContact {
    media: BTreeMap<Medium, crate::store::contacts::MediumState>,
    view: Arc<ContactView>,
}

impl From<crate::store::contacts::ContactRecord> for BatchContact {
    fn from(mut record: crate::store::contacts::ContactRecord) -> Self {
        BatchContact {
            media: std::mem::take(&mut record.data.media),
            view: Arc::new(ContactView::from(record)),
        }
    }
}

/// One claimed delivery, decided before sending.
enum Prepared {
    Send(Box<OutboundMessage>, Arc<ChannelHandle>, Arc<PinnedRun>),
    Done(Recorded),
}

impl Engine {
    /// An engine over `store`. `campaign_dir` is the base of `${file:}` secrets and of
    /// relative outbox paths.
    pub fn new(store: Store, campaign_dir: PathBuf, clock: Arc<dyn Clock>) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                store,
                campaign_dir,
                clock,
                pinned: Mutex::new(HashMap::new()),
                unbuilt_logged: Mutex::new(HashSet::new()),
                shared: Mutex::new(Shared::default()),
                wake: Notify::new(),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// The URL providers reach herald at (`serve --public-url`), for channels that set
    /// none of their own. Call before the first run starts.
    pub fn with_public_url(self, url: Option<String>) -> Engine {
        lock(&self.inner.shared).public_url = url;
        self
    }

    fn now(&self) -> jiff::Timestamp {
        self.inner.clock.now()
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Creates a run of `campaign` pinned to the revision in force and snapshots its
    /// deliveries. A schedule trigger for an occurrence that already has a run returns that
    /// run (never two runs per occurrence).
    ///
    /// Fails if no revision is applied, the campaign is not in it, it is disabled (test
    /// sends excepted), or a test contact does not exist.
    pub async fn start_run(&self, campaign: &str, trigger: Trigger) -> Result<RunId, EngineError> {
        let now = self.now();
        if let Trigger::Schedule { occurrence } = &trigger
            && let Some(run) = self
                .store()
                .run_for_occurrence(campaign, *occurrence)
                .await?
        {
            return Ok(run);
        }
        let revision = self
            .store()
            .revision_in_force()
            .await?
            .ok_or(EngineError::NoRevision)?;
        let loaded = crate::reconcile::rebuild_specs(&revision.specs);
        let spec = pinned::campaign_of(&loaded, campaign)
            .ok_or_else(|| EngineError::UnknownCampaign(campaign.to_string()))?;
        let test = matches!(trigger, Trigger::Test { .. });
        let one_contact = matches!(trigger, Trigger::Test { .. } | Trigger::Reply { .. });
        if !spec.enabled && !one_contact {
            return Err(EngineError::CampaignDisabled(campaign.to_string()));
        }
        let mut query =
            campaign_query(&loaded, campaign, now).map_err(|e| EngineError::Campaign {
                campaign: campaign.to_string(),
                message: e.to_string(),
            })?;
        if let Trigger::Test { contact_id } | Trigger::Reply { contact_id } = &trigger {
            if self.store().contact(contact_id).await?.is_none() {
                return Err(EngineError::UnknownContact(contact_id.clone()));
            }
            // One contact, whatever the segments say; consent and opt-out still apply.
            query.audience = CompiledSegment {
                where_sql: "c.id = ?".into(),
                params: vec![SqlValue::Text(contact_id.clone())],
            };
            if test {
                query.exclude.clear();
                query.frequency_cap = None;
            }
        }
        let campaign_spec_id = self
            .store()
            .campaign_spec_id(campaign, revision.id)
            .await?
            .ok_or_else(|| EngineError::UnknownCampaign(campaign.to_string()))?;
        let (trigger_name, occurrence) = match &trigger {
            Trigger::Schedule { occurrence } => ("schedule", Some(*occurrence)),
            Trigger::Manual => ("manual", None),
            Trigger::Test { .. } => ("test", None),
            Trigger::Reply { .. } => ("reply", None),
        };
        let zone = pinned::schedule_zone(spec);
        // local_time: the schedule's wall-clock time, in each contact's zone; a time that
        // has already passed there goes out at once.
        let wall = occurrence.unwrap_or(now).to_zoned(zone.clone()).datetime();
        let local_start = move |name: Option<&str>| -> i64 {
            let tz = name
                .and_then(|n| jiff::tz::TimeZone::get(n).ok())
                .unwrap_or_else(|| zone.clone());
            wall.to_zoned(tz)
                .map(|z| z.timestamp())
                .unwrap_or(now)
                .max(now)
                .as_millisecond()
        };
        let new = NewRun {
            campaign,
            campaign_spec_id,
            revision: revision.id,
            trigger: trigger_name,
            occurrence,
            max_duration_ms: ms(spec.max_duration()),
        };
        let local = (spec.local_time && !one_contact).then_some(&local_start as _);
        let (run, _) = self.store().create_run(&new, &query, local, now).await?;
        self.inner.wake.notify_one();
        Ok(run)
    }

    /// Records a skipped run for an occurrence missed outside its grace window (or returns
    /// the run that occurrence already has).
    pub async fn skip_run(
        &self,
        campaign: &str,
        occurrence: jiff::Timestamp,
        reason: &str,
    ) -> Result<RunId, EngineError> {
        let revision = self
            .store()
            .revision_in_force()
            .await?
            .ok_or(EngineError::NoRevision)?;
        let spec_id = self
            .store()
            .campaign_spec_id(campaign, revision.id)
            .await?
            .ok_or_else(|| EngineError::UnknownCampaign(campaign.to_string()))?;
        Ok(self
            .store()
            .skip_run(
                campaign,
                spec_id,
                revision.id,
                occurrence,
                reason,
                self.now(),
            )
            .await?)
    }

    /// The pinned configuration of `run`, built on first use.
    async fn pinned(
        &self,
        run: &crate::store::runs::RunRow,
    ) -> Result<Arc<PinnedRun>, EngineError> {
        if let Some(p) = lock(&self.inner.pinned).get(&run.id) {
            return Ok(p.clone());
        }
        let specs = self.store().specs_at_revision(run.revision).await?;
        let built = {
            let mut shared = lock(&self.inner.shared);
            pinned::pin(run.clone(), &specs, &self.inner.campaign_dir, &mut shared)
        };
        let p = Arc::new(built.map_err(|message| EngineError::Campaign {
            campaign: run.campaign.clone(),
            message,
        })?);
        lock(&self.inner.pinned).insert(run.id, p.clone());
        Ok(p)
    }

    /// One batch: claim due deliveries (fairly across runs and channels), render, send
    /// within limits, record. Returns how many were attempted (sent, or settled without
    /// sending: skipped or failed); rows put back to wait for a send window do not count.
    ///
    /// Fairness: every running run gets an equal share of [`BATCH`] per channel it uses,
    /// cut to what the channel's and the campaign's rate limits can let through in the next
    /// second (shared by the runs on that channel), so runs of different campaigns proceed
    /// together and split a channel's rate.
    pub async fn dispatch_once(&self) -> Result<usize, EngineError> {
        let now = self.now();
        let active = self.store().active_runs().await?;
        {
            let ids: Vec<RunId> = active.iter().map(|r| r.id).collect();
            lock(&self.inner.pinned).retain(|id, _| ids.contains(id));
            lock(&self.inner.unbuilt_logged).retain(|id| ids.contains(id));
        }
        let mut runs: BTreeMap<RunId, Arc<PinnedRun>> = BTreeMap::new();
        for run in active.iter().filter(|r| r.status == RunState::Running) {
            match self.pinned(run).await {
                Ok(p) => {
                    runs.insert(run.id, p);
                }
                Err(EngineError::Campaign { message, .. }) => {
                    // The pinned revision cannot be sent (it lacks the campaign's template
                    // or channel, or holds an unusable setting): nothing will change that.
                    tracing::error!(run = run.id, error = %message, "the run cannot be sent; it fails");
                    self.store().fail_run(run.id, &message, now).await?;
                }
                Err(e) => return Err(e),
            }
        }
        // A channel that could not be built (a `${file:}` secret mid-swap, an outbox
        // briefly unwritable) is not kept: its rows go back to wait (see `prepare`) and the
        // run is pinned again, channels rebuilt, on the next batch.
        for (id, run) in &runs {
            let unbuilt: Vec<String> = run
                .channels
                .iter()
                .filter_map(|c| c.handle.as_ref().err().map(|e| format!("{}: {e}", c.name)))
                .collect();
            if unbuilt.is_empty() {
                continue;
            }
            lock(&self.inner.pinned).remove(id);
            if lock(&self.inner.unbuilt_logged).insert(*id) {
                tracing::error!(run = id, errors = ?unbuilt, "a channel of the run cannot be built; its deliveries wait and it is retried");
            }
        }
        let slots = claim_slots(&runs, now);
        let (mut claimed, housekeeping) = self.store().claim(&slots, now).await?;
        if !housekeeping.finished_runs.is_empty() {
            let mut pinned = lock(&self.inner.pinned);
            for id in &housekeeping.finished_runs {
                pinned.remove(id);
            }
        }
        if claimed.is_empty() {
            return Ok(0);
        }
        let prepared = match self.prepare(&mut claimed, &runs, now).await {
            Ok(prepared) => prepared,
            Err(e) => {
                // Nothing was sent: the claimed rows go back as they were, never left
                // `sending` until a restart.
                tracing::error!(error = %e, "a claimed batch cannot be prepared; putting it back");
                let reason = format!("not sent: {e}");
                let back: Vec<Recorded> = claimed
                    .iter()
                    .map(|row| put_back(row, Medium::Sms, reason.clone(), now.as_millisecond()))
                    .collect();
                self.record_until_done(&back, now).await?;
                return Err(e);
            }
        };
        let mut counts = ResultCounts::default();
        let mut results: Vec<Recorded> = Vec::with_capacity(claimed.len());
        let mut jobs: Vec<Job> = Vec::new();
        for (row, p) in claimed.into_iter().zip(prepared) {
            match p {
                Prepared::Done(r) => {
                    counts.add(&row.channel, &r);
                    results.push(r);
                }
                Prepared::Send(message, handle, run) => {
                    jobs.push(Job {
                        row,
                        message,
                        handle,
                        run,
                    });
                }
            }
        }
        let jobs: Arc<[Job]> = jobs.into();
        let outcomes = send_all(&jobs, &self.inner.clock).await;
        let flush_failed = flush_channels(&jobs).await;
        let recorded_at = self.now();
        for (job, outcome) in jobs.iter().zip(outcomes) {
            let outcome = match outcome {
                Some(Attempt::Made(outcome)) => outcome,
                Some(Attempt::Held { until }) => {
                    results.push(held_back(job, until));
                    continue;
                }
                None => SendOutcome::transient("the send task stopped"),
            };
            let flush_error = flush_failed.get(&(Arc::as_ptr(&job.handle) as usize));
            let result = result_of(job, outcome, flush_error, recorded_at);
            counts.add(&job.message.channel, &result);
            results.push(result);
        }
        self.record_until_done(&results, recorded_at).await?;
        let attempted = counts.attempted();
        counts.emit();
        Ok(attempted)
    }

    /// Records `results`, retrying with backoff while the store fails (say, its writer is
    /// held past the acquire timeout): results already obtained are never dropped. Gives
    /// up only once the engine is stopping (the rows stay `sending` for [`recover`](Self::recover)).
    async fn record_until_done(
        &self,
        results: &[Recorded],
        at: jiff::Timestamp,
    ) -> Result<(), EngineError> {
        let mut wait = RECORD_RETRY_INITIAL;
        loop {
            match self.store().record(results, at).await {
                Ok(()) => return Ok(()),
                Err(e) if self.inner.stopping.load(Ordering::Relaxed) => return Err(e.into()),
                Err(e) => {
                    tracing::error!(error = %e, rows = results.len(), "cannot record a batch's results; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RECORD_RETRY_MAX);
                }
            }
        }
    }

    /// Re-checks consent, opt-out, frequency cap and send windows, and renders, for each
    /// claimed row: a message to send, or the row's result without sending. A row sent
    /// gives its texts (key, channel, contact id, address) to its message.
    async fn prepare(
        &self,
        claimed: &mut [Claimed],
        runs: &BTreeMap<RunId, Arc<PinnedRun>>,
        now: jiff::Timestamp,
    ) -> Result<Vec<Prepared>, EngineError> {
        let pks: Vec<i64> = claimed.iter().map(|c| c.contact_pk).collect();
        let contacts: BTreeMap<i64, BatchContact> = self
            .store()
            .contacts_by_pk(&pks)
            .await?
            .into_iter()
            .map(|(pk, record)| (pk, BatchContact::from(record)))
            .collect();
        // One per (run, channel) in the batch, shared by its messages.
        let mut scopes: Vec<(RunId, String, RunScope)> = Vec::new();
        let mut sent_counts: BTreeMap<RunId, BTreeMap<i64, u32>> = BTreeMap::new();
        // This batch's own rows are `sending` too: `sent_since` counts them, so take them
        // off; what is left being sent belongs to other batches and counts against the cap.
        let capped = runs.values().any(|r| r.frequency_cap.is_some() && !r.test);
        let mut own_sending: BTreeMap<i64, u32> = BTreeMap::new();
        for c in claimed.iter().filter(|_| capped) {
            *own_sending.entry(c.contact_pk).or_default() += 1;
        }
        // Messages this batch is about to send, per contact: they count against the cap of
        // the rows that follow them in the batch.
        let mut batch_sends: BTreeMap<i64, u32> = BTreeMap::new();
        for (id, run) in runs {
            if run.test {
                continue;
            }
            if let Some((_, per)) = run.frequency_cap {
                let pks: Vec<i64> = claimed
                    .iter()
                    .filter(|c| c.run == *id)
                    .map(|c| c.contact_pk)
                    .collect();
                if !pks.is_empty() {
                    let since = now.as_millisecond().saturating_sub(ms(per));
                    let mut counts = self.store().sent_since(&pks, since).await?;
                    for (pk, n) in counts.iter_mut() {
                        *n = n.saturating_sub(own_sending.get(pk).copied().unwrap_or(0));
                    }
                    sent_counts.insert(*id, counts);
                }
            }
        }
        let mut out = Vec::with_capacity(claimed.len());
        for row in claimed.iter_mut() {
            let done = |status: DeliveryStatus, reason: String, medium| {
                Prepared::Done(Recorded {
                    id: row.id,
                    contact_pk: row.contact_pk,
                    medium,
                    status,
                    reason: Some(reason),
                    next_attempt_at: None,
                    provider_message_id: None,
                    attempts_delta: 0,
                    opt_out: false,
                })
            };
            let fallback_medium = Medium::Sms;
            let Some(run) = runs.get(&row.run) else {
                // Claimed rows always belong to a running run we pinned.
                out.push(done(
                    DeliveryStatus::Failed,
                    "the run could not be prepared".into(),
                    fallback_medium,
                ));
                continue;
            };
            let Some(channel) = run.channel(&row.channel) else {
                out.push(done(
                    DeliveryStatus::Failed,
                    format!("channel {} is not in the run's campaign", row.channel),
                    fallback_medium,
                ));
                continue;
            };
            let medium = channel.medium;
            let handle = match &channel.handle {
                Ok(h) => h.clone(),
                Err(e) => {
                    // Not an attempt: back to wait with the row's backoff (its attempts
                    // unchanged) while the channel is rebuilt on a later batch.
                    let due = now.as_millisecond().saturating_add(ms(backoff(
                        run.initial_backoff,
                        run.max_backoff,
                        row.attempts,
                        row.id,
                    )));
                    let mut back = put_back(row, medium, format!("channel unavailable: {e}"), due);
                    back.status = DeliveryStatus::Retry;
                    out.push(Prepared::Done(back));
                    continue;
                }
            };
            // A row key can be reused by another contact after a delete: only the contact
            // the row was snapshotted for may receive it.
            let Some(contact) = contacts
                .get(&row.contact_pk)
                .filter(|c| c.view.id == row.contact_id)
            else {
                out.push(done(
                    DeliveryStatus::Skipped,
                    "contact_deleted".into(),
                    medium,
                ));
                continue;
            };
            let state = contact.media.get(&medium);
            if state.is_some_and(|s| s.is_opted_out()) {
                out.push(done(DeliveryStatus::Skipped, "opted_out".into(), medium));
                continue;
            }
            if run.consent == Consent::Required && !state.is_some_and(|s| s.is_opted_in()) {
                out.push(done(DeliveryStatus::Skipped, "no_consent".into(), medium));
                continue;
            }
            if let Some((max, _)) = run.frequency_cap.filter(|_| !run.test) {
                let sent = sent_counts
                    .get(&row.run)
                    .and_then(|m| m.get(&row.contact_pk))
                    .copied()
                    .unwrap_or(0)
                    .saturating_add(batch_sends.get(&row.contact_pk).copied().unwrap_or(0));
                if sent >= max {
                    out.push(done(
                        DeliveryStatus::Skipped,
                        "frequency_cap".into(),
                        medium,
                    ));
                    continue;
                }
            }
            let contact_zone = contact
                .view
                .timezone
                .as_deref()
                .and_then(|z| jiff::tz::TimeZone::get(z).ok());
            let windows: Vec<&window::Window> =
                run.window.iter().chain(handle.window.iter()).collect();
            if !windows.is_empty() {
                let open =
                    window::next_open_all(&windows, now, contact_zone.as_ref(), &run.schedule_zone);
                if open > now {
                    let reason = "outside the send window".to_string();
                    out.push(Prepared::Done(put_back(
                        row,
                        medium,
                        reason,
                        open.as_millisecond(),
                    )));
                    continue;
                }
            }
            let renderer = match &run.renderer {
                Ok(r) => r,
                Err(e) => {
                    out.push(done(DeliveryStatus::Skipped, e.clone(), medium));
                    continue;
                }
            };
            let scope = match scopes
                .iter()
                .position(|(id, channel, _)| *id == row.run && *channel == row.channel)
            {
                Some(i) => &scopes[i].2,
                None => {
                    let context = RunContext {
                        campaign: run.run.campaign.clone(),
                        run_id: row.run,
                        channel: row.channel.clone(),
                        now,
                        unsubscribe_url: None,
                        timezone: Some(run.schedule_zone.clone()),
                    };
                    let scope = RunScope::new(&context, medium);
                    scopes.push((row.run, row.channel.clone(), scope));
                    &scopes[scopes.len() - 1].2
                }
            };
            let unsubscribe_url = handle.channel.unsubscribe_url(&contact.view.id);
            let content = match renderer.render_in(contact.view.clone(), scope, unsubscribe_url) {
                Ok(c) => c,
                Err(e) => {
                    out.push(done(DeliveryStatus::Skipped, e.to_string(), medium));
                    continue;
                }
            };
            if capped {
                *batch_sends.entry(row.contact_pk).or_default() += 1;
            }
            out.push(Prepared::Send(
                // The row's texts move into the message: from here on only its numbers
                // are read (for its result, or to put it back).
                Box::new(OutboundMessage {
                    delivery_id: row.id,
                    idempotency_key: std::mem::take(&mut row.idempotency_key),
                    run_id: row.run,
                    campaign: run.run.campaign.clone(),
                    channel: std::mem::take(&mut row.channel),
                    contact_id: std::mem::take(&mut row.contact_id),
                    to: std::mem::take(&mut row.address),
                    content,
                    test: run.test,
                }),
                handle,
                run.clone(),
            ));
        }
        Ok(out)
    }

    /// Loops [`dispatch_once`](Self::dispatch_once) until `shutdown` resolves; then stops
    /// claiming, finishes in-flight sends, records them, and flushes the channels. A batch
    /// is never abandoned half-way: each runs to its end in its own task.
    ///
    /// Errors of a batch (the store unavailable, say) are logged and retried after a pause;
    /// `run` itself returns only at shutdown.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), EngineError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tasks: JoinSet<Result<usize, EngineError>> = JoinSet::new();
        let mut stopping = false;
        let mut idle = false;
        loop {
            if !stopping && !idle && tasks.len() < PIPELINE {
                let engine = self.clone();
                tasks.spawn(async move { engine.dispatch_once().await });
                continue;
            }
            if stopping && tasks.is_empty() {
                break;
            }
            tokio::select! {
                _ = &mut shutdown, if !stopping => {
                    stopping = true;
                    self.inner.stopping.store(true, Ordering::Relaxed);
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => match done {
                    Ok(Ok(n)) => idle = n == 0,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "a dispatch batch failed; retrying shortly");
                        idle = true;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a dispatch batch panicked");
                        idle = true;
                    }
                },
                _ = tokio::time::sleep(IDLE_POLL), if idle && tasks.is_empty() && !stopping => idle = false,
                _ = self.inner.wake.notified(), if idle && !stopping => idle = false,
            }
        }
        let handles: Vec<Arc<ChannelHandle>> = lock(&self.inner.shared)
            .channels
            .values()
            .cloned()
            .collect();
        for handle in handles {
            if let Err(e) = handle.channel.flush().await {
                tracing::error!(channel = handle.channel.name(), error = %e, "flush at shutdown failed");
            }
        }
        Ok(())
    }

    /// Crash recovery of rows left in `sending`; call once on start, before [`run`](Self::run).
    /// Where the channel honours idempotency keys, the rows go back to `pending` and are
    /// sent again with the same key; otherwise (or if the channel cannot be built) they
    /// become `unknown` with [`INTERRUPTED`] as the reason, and are never re-sent.
    pub async fn recover(&self) -> Result<RecoveryReport, EngineError> {
        let now = self.now();
        let mut report = RecoveryReport::default();
        for (run, channel, _) in self.store().sending_by_run().await? {
            let resend = match self.store().run_row(run).await? {
                Some(row) => match self.pinned(&row).await {
                    Ok(p) => p
                        .channel(&channel)
                        .and_then(|c| c.handle.as_ref().ok())
                        .is_some_and(|h| h.channel.honours_idempotency_key()),
                    Err(_) => false,
                },
                None => false,
            };
            let n = self
                .store()
                .resolve_sending(run, &channel, resend, INTERRUPTED, now)
                .await?;
            let (resent, unknown) = if resend { (n, 0) } else { (0, n) };
            report.resent += resent;
            report.unknown += unknown;
            report.by_run.push(RecoveredRun {
                run,
                channel,
                resent,
                unknown,
            });
        }
        if report.unknown > 0 {
            tracing::warn!(
                unknown = report.unknown,
                "deliveries interrupted while sending were marked unknown"
            );
        }
        Ok(report)
    }

    async fn state_error(&self, run: RunId, action: &'static str) -> EngineError {
        match self.store().run_row(run).await {
            Ok(Some(row)) => EngineError::InvalidState {
                run,
                status: row.status.to_string(),
                action,
            },
            Ok(None) => EngineError::UnknownRun(run),
            Err(e) => e.into(),
        }
    }

    /// Stops claiming the run's deliveries; those being sent finish and are recorded.
    /// Fails unless the run is scheduled or running (pausing a paused run is fine).
    pub async fn pause(&self, run: RunId) -> Result<(), EngineError> {
        let changed = self
            .store()
            .set_run_state(
                run,
                &[RunState::Scheduled, RunState::Running, RunState::Paused],
                RunState::Paused,
                Some(PausedBy::Operator),
                self.now(),
            )
            .await?;
        if changed {
            Ok(())
        } else {
            Err(self.state_error(run, "paused").await)
        }
    }

    /// Continues a paused run. Fails for a run that is not paused, or whose campaign is
    /// disabled (test runs excepted).
    pub async fn resume(&self, run: RunId) -> Result<(), EngineError> {
        let row = self
            .store()
            .run_row(run)
            .await?
            .ok_or(EngineError::UnknownRun(run))?;
        if !matches!(row.trigger.as_str(), "test" | "reply")
            && !self.campaign_enabled(&row.campaign).await?
        {
            return Err(EngineError::CampaignDisabled(row.campaign));
        }
        let changed = self
            .store()
            .set_run_state(
                run,
                &[RunState::Paused],
                RunState::Running,
                None,
                self.now(),
            )
            .await?;
        if !changed {
            return Err(self.state_error(run, "resumed").await);
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Cancels the run: its pending and retrying deliveries become `cancelled`; those being
    /// sent finish and are recorded as what they became.
    pub async fn cancel(&self, run: RunId) -> Result<(), EngineError> {
        let changed = self
            .store()
            .set_run_state(
                run,
                &[RunState::Scheduled, RunState::Running, RunState::Paused],
                RunState::Cancelled,
                None,
                self.now(),
            )
            .await?;
        if !changed {
            return Err(self.state_error(run, "cancelled").await);
        }
        lock(&self.inner.pinned).remove(&run);
        Ok(())
    }

    async fn campaign_enabled(&self, campaign: &str) -> Result<bool, EngineError> {
        let Some(revision) = self.store().revision_in_force().await? else {
            return Ok(false);
        };
        Ok(revision
            .specs
            .iter()
            .find(|s| s.kind == crate::spec::Kind::Campaign && s.name == campaign)
            .is_some_and(|s| s.body["spec"]["enabled"].as_bool().unwrap_or(true)))
    }

    /// After a revision is applied: pauses the runs of disabled campaigns, resumes the
    /// runs paused only because their campaign was disabled, and cancels the runs of
    /// campaigns no longer in force (applying already does; this catches any left).
    /// Test runs are left alone.
    pub async fn revision_applied(&self) -> Result<(), EngineError> {
        let Some(revision) = self.store().revision_in_force().await? else {
            return Ok(());
        };
        let enabled: HashMap<&str, bool> = revision
            .specs
            .iter()
            .filter(|s| s.kind == crate::spec::Kind::Campaign)
            .map(|s| {
                (
                    s.name.as_str(),
                    s.body["spec"]["enabled"].as_bool().unwrap_or(true),
                )
            })
            .collect();
        let now = self.now();
        for run in self.store().active_runs().await? {
            // Runs for one contact may run while their campaign is disabled; a removed
            // campaign still cancels them (apply does).
            if matches!(run.trigger.as_str(), "test" | "reply") {
                continue;
            }
            match enabled.get(run.campaign.as_str()) {
                None => {
                    self.store()
                        .set_run_state(
                            run.id,
                            &[RunState::Scheduled, RunState::Running, RunState::Paused],
                            RunState::Cancelled,
                            None,
                            now,
                        )
                        .await?;
                }
                Some(false) if run.status != RunState::Paused => {
                    self.store()
                        .set_run_state(
                            run.id,
                            &[RunState::Scheduled, RunState::Running],
                            RunState::Paused,
                            Some(PausedBy::CampaignDisabled),
                            now,
                        )
                        .await?;
                }
                Some(true) if run.paused_by == Some(PausedBy::CampaignDisabled) => {
                    // Only while still paused because of that: never over an operator's
                    // pause made since the read above.
                    self.store()
                        .resume_paused_by(run.id, PausedBy::CampaignDisabled)
                        .await?;
                    self.inner.wake.notify_one();
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The run's status, counts by delivery status, progress, and times.
    pub async fn run_status(&self, run: RunId) -> Result<RunStatus, EngineError> {
        self.store()
            .run_status(run)
            .await?
            .ok_or(EngineError::UnknownRun(run))
    }
}

/// Counts a recorded batch in the `herald_messages_total` metric, once per (channel,
/// status). Rows put back without an attempt (a closed send window) are not results.
/// A batch's attempts by (channel, status), for the messages metric and the count
/// `dispatch_once` returns. Rows put back (their attempt not counted) are left out. A
/// batch has a handful of such pairs: a list searched in place, nothing allocated per row.
#[derive(Default)]
struct ResultCounts(Vec<(String, DeliveryStatus, u64)>);

impl ResultCounts {
    fn add(&mut self, channel: &str, result: &Recorded) {
        if result.attempts_delta != 0 {
            return;
        }
        match self
            .0
            .iter_mut()
            .find(|(c, s, _)| *s == result.status && c == channel)
        {
            Some(entry) => entry.2 += 1,
            None => self.0.push((channel.to_string(), result.status, 1)),
        }
    }

    fn attempted(&self) -> usize {
        self.0.iter().map(|(_, _, n)| *n as usize).sum()
    }

    fn emit(self) {
        for (channel, status, n) in self.0 {
            crate::metrics::message_result(&channel, status.as_str(), n);
        }
    }
}

/// One message to send, with what it was claimed as and where it goes.
struct Job {
    row: Claimed,
    message: Box<OutboundMessage>,
    handle: Arc<ChannelHandle>,
    run: Arc<PinnedRun>,
}

/// A channel's share of a batch: its jobs (indexes into the batch's), taken in order by
/// its worker tasks.
struct Queue {
    next: std::sync::atomic::AtomicUsize,
    jobs: Vec<usize>,
}

/// Sends every job and returns each one's outcome (`None` if its worker died). Each
/// channel's jobs are taken in claim order by as many worker tasks as the channel has
/// requests in flight (`max_in_flight`), not by one task per message: a task costs an
/// allocation the size of the whole send future, and 1,000 of them per batch waiting on
/// the semaphore measured about 2 µs a delivery. Each worker holds one of the channel's
/// permits (a semaphore shared with the other batches and runs on the channel) while it
/// finds jobs, so what is in flight stays within `max_in_flight`.
async fn send_all(jobs: &Arc<[Job]>, clock: &Arc<dyn Clock>) -> Vec<Option<Attempt>> {
    let outcomes: Arc<Mutex<Vec<Option<Attempt>>>> = Arc::new(Mutex::new(
        std::iter::repeat_with(|| None).take(jobs.len()).collect(),
    ));
    let mut queues: Vec<(Arc<ChannelHandle>, Vec<usize>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match queues.iter_mut().find(|(h, _)| Arc::ptr_eq(h, &job.handle)) {
            Some((_, q)) => q.push(i),
            None => queues.push((job.handle.clone(), vec![i])),
        }
    }
    let mut workers = JoinSet::new();
    for (handle, indexes) in queues {
        let count = handle.channel.max_in_flight().clamp(1, indexes.len());
        let queue = Arc::new(Queue {
            next: Default::default(),
            jobs: indexes,
        });
        for _ in 0..count {
            let (jobs, queue, outcomes, handle, clock) = (
                jobs.clone(),
                queue.clone(),
                outcomes.clone(),
                handle.clone(),
                clock.clone(),
            );
            workers.spawn(async move {
                // One request in flight for as long as this worker finds jobs: handing the
                // permit back and waiting again between two sends would wake another task
                // for every message. Other batches' workers get the permits as this
                // batch's queue runs out.
                let _permit = handle.in_flight.acquire().await;
                while let Some(&i) = queue.jobs.get(queue.next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = send_one(&jobs[i], clock.as_ref()).await;
                    lock(&outcomes)[i] = Some(outcome);
                }
            });
        }
    }
    while let Some(done) = workers.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a send task failed");
        }
    }
    std::mem::take(&mut *lock(&outcomes))
}

/// What became of one job of a batch.
enum Attempt {
    Made(SendOutcome),
    /// Not sent: the provider had asked the channel to wait until `until` (unix ms).
    Held {
        until: i64,
    },
}

/// One send within the rate limits, its worker holding one of the channel's in-flight
/// permits. In-flight first, then the rate: a send leaves the moment its limiters let it,
/// never queued behind a full channel after that. Not sent while the channel is held; a
/// provider's request to wait holds it ([`hold`]).
async fn send_one(job: &Job, clock: &dyn Clock) -> Attempt {
    let limiters: Vec<&rate::Gcra> = job
        .handle
        .limiter
        .iter()
        .chain(job.run.campaign_limit.iter())
        .map(|g| g.as_ref())
        .collect();
    // Checked before the limiters too: a held channel's jobs go back without waiting
    // their turn (and without using the campaign's rate other channels could use).
    if let Some(until) = job.handle.hold.until(clock.now()) {
        return Attempt::Held { until };
    }
    let asked = std::time::Instant::now();
    rate::acquire(&limiters).await;
    let waited = asked.elapsed();
    if waited >= Duration::from_millis(1) {
        job.handle.metrics.rate_limit_wait(waited);
    }
    if let Some(until) = job.handle.hold.until(clock.now()) {
        return Attempt::Held { until };
    }
    let sending = std::time::Instant::now();
    let outcome = job.handle.channel.send(&job.message).await;
    job.handle.metrics.provider_latency(sending.elapsed());
    if let SendOutcome::Transient {
        retry_after: Some(wait),
        ..
    } = &outcome
        && let Some(until) = job.handle.hold.extend(clock.now(), *wait)
    {
        tracing::warn!(
            channel = job.handle.channel.name(),
            wait_s = wait.as_secs_f64(),
            until = %jiff::Timestamp::from_millisecond(until).unwrap_or_default(),
            "the provider asked to wait: no sends through the channel until then"
        );
    }
    Attempt::Made(outcome)
}

/// A job not sent because its channel is held: due again when the hold ends, the attempt
/// not counted (like a row outside its send window).
fn held_back(job: &Job, until: i64) -> Recorded {
    let channel = &job.handle.channel;
    let reason = format!(
        "not sent: the provider asked channel {} to wait",
        channel.name()
    );
    put_back(&job.row, channel.medium(), reason, until)
}

/// Flushes each channel the jobs used, once (retried once): `sent` is recorded only once
/// the channel made it durable (the outbox batches). Returns the channels that failed
/// (keyed by handle address), with the error.
async fn flush_channels(jobs: &[Job]) -> HashMap<usize, String> {
    let mut failed = HashMap::new();
    let mut flushed: Vec<usize> = Vec::new();
    for job in jobs {
        let key = Arc::as_ptr(&job.handle) as usize;
        if flushed.contains(&key) {
            continue;
        }
        flushed.push(key);
        let mut result = job.handle.channel.flush().await;
        if result.is_err() {
            result = job.handle.channel.flush().await;
        }
        if let Err(e) = result {
            failed.insert(key, e.to_string());
        }
    }
    failed
}

/// What to record for a sent job: `sent`, or per the outcome `retry` (with backoff) or
/// `failed` once its attempts are used up; `unknown` when the channel accepted it but
/// could not make it durable (`flush_error`).
fn result_of(
    job: &Job,
    outcome: SendOutcome,
    flush_error: Option<&String>,
    recorded_at: jiff::Timestamp,
) -> Recorded {
    let (row, run) = (&job.row, &job.run);
    let mut r = Recorded {
        id: row.id,
        contact_pk: row.contact_pk,
        medium: job.handle.channel.medium(),
        status: DeliveryStatus::Sent,
        reason: None,
        next_attempt_at: None,
        provider_message_id: None,
        attempts_delta: 0,
        opt_out: false,
    };
    match outcome {
        SendOutcome::Sent {
            provider_message_id,
        } => {
            if let Some(e) = flush_error {
                r.status = DeliveryStatus::Unknown;
                r.reason = Some(format!("accepted but not made durable: {e}"));
            } else {
                r.provider_message_id = provider_message_id;
            }
        }
        SendOutcome::Transient {
            reason,
            retry_after,
        } => {
            if row.attempts >= run.max_attempts {
                r.status = DeliveryStatus::Failed;
                r.reason = Some(format!(
                    "{reason} (gave up after {} attempts)",
                    row.attempts
                ));
            } else {
                let wait = backoff(run.initial_backoff, run.max_backoff, row.attempts, row.id)
                    .max(retry_after.unwrap_or_default());
                r.status = DeliveryStatus::Retry;
                r.reason = Some(reason);
                r.next_attempt_at = Some(recorded_at.as_millisecond().saturating_add(ms(wait)));
            }
        }
        SendOutcome::Permanent { reason, opted_out } => {
            r.status = DeliveryStatus::Failed;
            r.reason = Some(reason);
            r.opt_out = opted_out;
        }
    }
    r
}

/// Where to claim from: each running run's channels, with an equal share of [`BATCH`] cut
/// to what the rate limits let through within [`RATE_HORIZON`] (a channel's capacity split
/// between the runs using it).
fn claim_slots(runs: &BTreeMap<RunId, Arc<PinnedRun>>, now: jiff::Timestamp) -> Vec<ClaimSlot> {
    let mut users: HashMap<*const rate::Gcra, u32> = HashMap::new();
    let mut count = 0u32;
    for run in runs.values() {
        for c in &run.channels {
            count += 1;
            if let Ok(h) = &c.handle
                && let Some(l) = &h.limiter
            {
                *users.entry(Arc::as_ptr(l)).or_default() += 1;
            }
        }
    }
    let share = (BATCH / count.max(1)).max(1);
    let mut slots = Vec::new();
    for (id, run) in runs {
        let campaign_cap = run.campaign_limit.as_ref().map(|l| {
            let cap = l.capacity_within(RATE_HORIZON);
            if cap == 0 {
                0
            } else {
                (cap / (run.channels.len() as u32).max(1)).max(1)
            }
        });
        for c in &run.channels {
            let mut limit = share;
            if let Some(cap) = campaign_cap {
                limit = limit.min(cap);
            }
            if let Ok(h) = &c.handle {
                // The provider asked to wait: the rows stay due in the store.
                if h.hold.until(now).is_some() {
                    limit = 0;
                }
                if let Some(l) = &h.limiter {
                    let n = users.get(&Arc::as_ptr(l)).copied().unwrap_or(1).max(1);
                    let cap = l.capacity_within(RATE_HORIZON);
                    limit = limit.min(if cap == 0 { 0 } else { (cap / n).max(1) });
                }
                // Never more than a few rounds of the channel's in-flight requests: a slow
                // channel's rows wait in the store, not in a batch.
                limit = limit.min(
                    u32::try_from(h.channel.max_in_flight())
                        .unwrap_or(u32::MAX)
                        .saturating_mul(64)
                        .max(1),
                );
            }
            slots.push(ClaimSlot {
                run: *id,
                channel: c.name.clone(),
                limit,
            });
        }
    }
    slots
}
