//! `herald serve`: owns the daemon's long-lived tasks and their two-phase shutdown.
//!
//! The tasks, named in logs: `watcher` (file events → "look again", [`crate::watch`]),
//! `reconciler` (the single writer of specs: reads the directory, applies a valid revision,
//! records an invalid one as rejected and keeps the one in force), `scheduler` (fires and
//! skips occurrences by [`crate::schedule::decide`]), `engine` (dispatches deliveries) and
//! `http` (the API, [`crate::http`]).
//!
//! Shutdown is two-phase: when `shutdown` resolves, the watcher, reconciler and scheduler
//! stop taking work and the engine is told to stop claiming; the engine then finishes its
//! in-flight sends and flushes, and the store is closed. (A second signal forcing exit is
//! the caller's: see `cli::serve`.) A task that ends on its own, with an error or a panic,
//! is logged with why and brings the whole daemon down with an error.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use jiff::Timestamp;
use sha2::Digest as _;
use tokio::sync::{Notify, mpsc, watch as signal};
use tokio::task::JoinSet;

use crate::engine::{Clock, Engine, SystemClock, Trigger};
use crate::http::{self, Tokens};
use crate::reconcile::{self, ApplyOutcome, StoredObject};
use crate::schedule::{self, CampaignSchedule, Decision, ParsedSchedule, ScheduleState};
use crate::spec::{self, Kind, Object};
use crate::store::Store;
use crate::watch::{self, Pacing};

/// A boxed future, for the object-safe [`Runs`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the daemon asks of the run engine. [`Engine`] is the implementation; tests may
/// substitute a recorder to exercise the daemon without sending.
pub trait Runs: Send + Sync + 'static {
    /// Starts (or finds: idempotent per occurrence) the run of a scheduled occurrence.
    fn start_scheduled(
        &self,
        campaign: &str,
        occurrence: Timestamp,
    ) -> BoxFuture<'_, anyhow::Result<i64>>;
    /// Records an occurrence missed outside its grace window.
    fn skip(
        &self,
        campaign: &str,
        occurrence: Timestamp,
        reason: &str,
    ) -> BoxFuture<'_, anyhow::Result<i64>>;
    /// After a revision is applied (pauses or resumes runs of disabled campaigns).
    fn revision_applied(&self) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Once, before anything else: resolves deliveries a previous process left mid-send.
    fn recover(&self) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Dispatches until `stop` resolves; then stops claiming, finishes in-flight sends and
    /// flushes.
    fn run(&self, stop: BoxFuture<'static, ()>) -> BoxFuture<'_, anyhow::Result<()>>;
}

impl Runs for Engine {
    fn start_scheduled(
        &self,
        campaign: &str,
        occurrence: Timestamp,
    ) -> BoxFuture<'_, anyhow::Result<i64>> {
        let campaign = campaign.to_string();
        Box::pin(async move {
            Ok(self
                .start_run(&campaign, Trigger::Schedule { occurrence })
                .await?)
        })
    }

    fn skip(
        &self,
        campaign: &str,
        occurrence: Timestamp,
        reason: &str,
    ) -> BoxFuture<'_, anyhow::Result<i64>> {
        let (campaign, reason) = (campaign.to_string(), reason.to_string());
        Box::pin(async move { Ok(self.skip_run(&campaign, occurrence, &reason).await?) })
    }

    fn revision_applied(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move { Ok(Engine::revision_applied(self).await?) })
    }

    fn recover(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let report = Engine::recover(self).await?;
            if report.resent > 0 || report.unknown > 0 {
                tracing::warn!(
                    resent = report.resent,
                    unknown = report.unknown,
                    "recovered deliveries a previous process left mid-send"
                );
            }
            Ok(())
        })
    }

    fn run(&self, stop: BoxFuture<'static, ()>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move { Ok(Engine::run(self, stop).await?) })
    }
}

/// Everything `serve` needs. [`ServeConfig::new`] fills in the defaults.
pub struct ServeConfig {
    /// The campaign directory (it may be a symbolic link, swapped while serving).
    pub dir: PathBuf,
    /// The SQLite store (created if missing).
    pub db: PathBuf,
    /// Where the HTTP server listens; the caller binds it (tests bind 127.0.0.1:0).
    pub listener: tokio::net::TcpListener,
    /// A contacts CSV imported on start; bad rows are logged and left out.
    pub contacts: Option<PathBuf>,
    /// Apply a directory with no documents (retiring every object) instead of refusing it.
    pub allow_empty: bool,
    pub pacing: Pacing,
    pub clock: Arc<dyn Clock>,
    /// The run engine; `None`: [`Engine`] over the store.
    pub runs: Option<Arc<dyn Runs>>,
    /// The API's bearer tokens (none: every guarded route answers 401).
    pub tokens: Tokens,
    /// The URL providers reach herald at, for callback signatures and unsubscribe links.
    pub public_url: Option<String>,
}

impl ServeConfig {
    pub fn new(dir: PathBuf, db: PathBuf, listener: tokio::net::TcpListener) -> ServeConfig {
        ServeConfig {
            dir,
            db,
            listener,
            contacts: None,
            allow_empty: false,
            pacing: Pacing::default(),
            clock: Arc::new(SystemClock),
            runs: None,
            tokens: Tokens::default(),
            public_url: None,
        }
    }
}

/// How long a failing reconcile or engine call waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest a failing reconcile waits before it is tried again.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// The longest the scheduler sleeps without looking at the clock again (clock jumps).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Runs the daemon until `shutdown` resolves (then shuts down in two phases and returns
/// `Ok`), or until a task fails (then stops the others the same way and returns its error).
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let ServeConfig {
        dir,
        db,
        listener,
        contacts,
        allow_empty,
        pacing,
        clock,
        runs,
        tokens,
        public_url,
    } = config;
    let address = listener
        .local_addr()
        .context("while reading the listen address")?;
    let store = Store::open(&db)
        .await
        .with_context(|| format!("while opening the store {}", db.display()))?;
    if let Some(csv) = &contacts {
        import_contacts(&store, csv, clock.now()).await?;
    }
    // The HTTP control routes need the engine itself; a substitute (tests) leaves them 503.
    let (engine, runs): (Option<Engine>, Arc<dyn Runs>) = match runs {
        Some(runs) => (None, runs),
        None => {
            let engine = Engine::new(store.clone(), dir.clone(), clock.clone())
                .with_public_url(public_url.clone());
            (Some(engine.clone()), Arc::new(engine))
        }
    };
    if tokens.is_empty() {
        tracing::warn!(
            "no API tokens configured (HERALD_ADMIN_TOKEN or HERALD_TOKENS_FILE): every guarded route answers 401"
        );
    }
    runs.recover()
        .await
        .context("while recovering deliveries left mid-send")?;
    // The revision in force may have been applied while no daemon ran (`herald apply`):
    // pause and resume runs by it now. A failure is retried by every reconcile.
    if let Err(e) = runs.revision_applied().await {
        tracing::error!(error = %format!("{e:#}"), "cannot bring the runs in line with the revision in force; retrying");
    }

    let (revision_tx, revision_rx) = signal::channel::<Option<i64>>(None);
    let wake_scheduler = Arc::new(Notify::new());
    let mut reconciler = Reconciler {
        store: store.clone(),
        dir: dir.clone(),
        db: db.clone(),
        allow_empty,
        clock: clock.clone(),
        runs: runs.clone(),
        last_rejection: None,
        revision: revision_tx,
        wake_scheduler: wake_scheduler.clone(),
    };
    // The first reconcile runs before anything fires, so that the scheduler starts from the
    // directory as it is now. A failure here is retried like any other.
    if let Err(e) = reconciler.reconcile_settled(pacing.quiet).await {
        tracing::error!(error = %format!("{e:#}"), "cannot reconcile the campaign directory; retrying");
    }
    if let Ok(Some(in_force)) = store.revision_in_force().await {
        let _ = reconciler.revision.send(Some(in_force.id));
    }
    announce(&store, &dir, address, clock.now()).await;

    let (stop_tx, stop_rx) = signal::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let (look_tx, look_rx) = mpsc::channel(1);
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    {
        let (dir, stop) = (dir.clone(), stopped());
        tasks.spawn(async move { ("watcher", watch::watch(&dir, pacing, look_tx, stop).await) });
    }
    {
        let stop = stopped();
        tasks.spawn(async move {
            (
                "reconciler",
                reconciler.run(look_rx, pacing.quiet, stop).await,
            )
        });
    }
    {
        let scheduler = Scheduler {
            store: store.clone(),
            clock: clock.clone(),
            runs: runs.clone(),
            wake: wake_scheduler,
        };
        let stop = stopped();
        tasks.spawn(async move { ("scheduler", scheduler.run(stop).await) });
    }
    {
        let (runs, stop) = (runs.clone(), stopped());
        tasks.spawn(async move { ("engine", runs.run(Box::pin(stop)).await) });
    }
    {
        // The webhook outbox sender: events the store queued with each change, to the
        // Webhook subscribers. Stops with the others; what it has not sent stays queued.
        let sender = crate::webhooks::Sender::new(store.clone(), dir.clone(), clock.clone())
            .context("while setting up the webhook sender's HTTP client")?
            .with_retry_scale(crate::webhooks::sender::retry_scale_from_env());
        let stop = stopped();
        tasks.spawn(async move {
            sender.run(stop).await;
            ("webhooks", Ok(()))
        });
    }
    {
        let state = http::AppState {
            store: store.clone(),
            engine,
            tokens: Arc::new(tokens),
            clock: clock.clone(),
            dir: dir.clone(),
            public_url,
            revision: revision_rx,
        };
        let (app, stop) = (http::router(state), stopped());
        tasks.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
                .context("the HTTP server failed");
            ("http", served)
        });
    }

    let mut failure: Option<anyhow::Error> = None;
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {
            tracing::info!("shutting down: no new reconciles or fires; finishing in-flight sends");
        }
        Some(ended) = tasks.join_next() => {
            let error = task_failure(ended);
            tracing::error!(error = %format!("{error:#}"), "a task stopped; shutting down");
            failure = Some(error);
        }
    }
    let _ = stop_tx.send(true);
    while let Some(ended) = tasks.join_next().await {
        match ended {
            Ok((_, Ok(()))) => {}
            other => {
                let error = task_failure(other);
                tracing::error!(error = %format!("{error:#}"), "a task failed while shutting down");
                failure.get_or_insert(error);
            }
        }
    }
    store.close().await;
    match failure {
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Some(error) => Err(error),
    }
}

/// Why a task ended (before shutdown, even `Ok` is a failure: tasks run until stopped).
fn task_failure(
    ended: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Error {
    match ended {
        Ok((name, Ok(()))) => anyhow::anyhow!("the {name} task stopped unexpectedly"),
        Ok((name, Err(e))) => e.context(format!("the {name} task failed")),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            anyhow::anyhow!("a task panicked: {message}")
        }
        Err(e) => anyhow::anyhow!("a task was cancelled: {e}"),
    }
}

async fn import_contacts(store: &Store, csv: &Path, now: Timestamp) -> anyhow::Result<()> {
    let file = std::fs::File::open(csv)
        .with_context(|| format!("while opening the contacts file {}", csv.display()))?;
    let options = crate::contacts::ImportOptions { now, strict: false };
    let report = crate::contacts::import(store, file, options, None)
        .await
        .with_context(|| format!("while importing {}", csv.display()))?;
    for issue in &report.issues {
        tracing::warn!(file = %csv.display(), "bad contact row left out: {}:{issue}", csv.display());
    }
    for warning in &report.warnings {
        tracing::warn!(file = %csv.display(), "{}:{warning}", csv.display());
    }
    tracing::info!(
        file = %csv.display(),
        created = report.created,
        updated = report.updated,
        unchanged = report.unchanged,
        bad_rows = report.bad_rows,
        "imported contacts"
    );
    Ok(())
}

/// The start-up line: what is in force, when the next fire is, where to reach the daemon.
async fn announce(store: &Store, dir: &Path, address: std::net::SocketAddr, now: Timestamp) {
    let in_force = store.revision_in_force().await.ok().flatten();
    let revision = in_force.as_ref().map_or_else(
        || "no revision in force".to_string(),
        |r| format!("revision {}", r.id),
    );
    let campaigns = in_force.as_ref().map_or(0, |r| {
        r.specs.iter().filter(|s| s.kind == Kind::Campaign).count()
    });
    let next = match (
        campaign_schedules(store).await,
        store.schedule_states().await,
    ) {
        (Ok(schedules), Ok(states)) => schedules
            .iter()
            .filter_map(
                |c| match schedule::decide(c, states.get(&c.campaign), now).decision {
                    Decision::Fire(_) | Decision::Skip { .. } => Some((now, c.campaign.clone())),
                    Decision::Wait(at) => Some((at, c.campaign.clone())),
                    Decision::Done => None,
                },
            )
            .min(),
        _ => None,
    };
    let next = match next {
        Some((at, campaign)) if at <= now => format!("next fire now: {campaign}"),
        Some((at, campaign)) => format!(
            "next fire {} UTC: {campaign}",
            at.strftime("%Y-%m-%d %H:%M:%S")
        ),
        None => "nothing scheduled".to_string(),
    };
    tracing::info!(
        "herald serving {} ({revision}, {campaigns} campaign{}, {next}) on http://{address}",
        dir.display(),
        if campaigns == 1 { "" } else { "s" }
    );
}

/// The reconciler: the directory against the store, one revision at a time.
struct Reconciler {
    store: Store,
    dir: PathBuf,
    db: PathBuf,
    allow_empty: bool,
    clock: Arc<dyn Clock>,
    runs: Arc<dyn Runs>,
    /// The last rejection logged and recorded: (hash, errors). The same directory with the
    /// same errors (a periodic rescan) is not recorded again.
    last_rejection: Option<(String, Vec<String>)>,
    revision: signal::Sender<Option<i64>>,
    wake_scheduler: Arc<Notify>,
}

/// What one reconcile did.
#[derive(Debug, PartialEq, Eq)]
enum Reconciled {
    Applied(i64),
    Unchanged,
    Rejected(i64),
    /// The same rejection as last time: nothing recorded.
    StillRejected,
    /// The directory changed while it was read: read it again after a quiet moment.
    Unsettled,
}

impl Reconciler {
    async fn run(
        mut self,
        mut look_again: mpsc::Receiver<()>,
        quiet: Duration,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        // After a failure (a file vanishing mid-read, a busy store), retry soon, then less
        // and less often while it keeps failing.
        let mut retry: Option<Duration> = None;
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return Ok(()),
                got = look_again.recv() => if got.is_none() { return Ok(()) },
                () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
            }
            retry = match self.reconcile_settled(quiet).await {
                Ok(_) => None,
                Err(e) => {
                    let next = retry.map_or(Duration::from_secs(1), |d| (d * 2).min(MAX_RETRY));
                    tracing::error!(error = %format!("{e:#}"), "cannot reconcile the campaign directory; retrying in {}s", next.as_secs());
                    Some(next)
                }
            };
        }
    }

    /// Reconciles, reading again (after `quiet`) while the directory changes under it, and
    /// records the outcome and how long it took in the reload metrics ([`crate::metrics`]).
    async fn reconcile_settled(&mut self, quiet: Duration) -> anyhow::Result<Reconciled> {
        use crate::metrics::ReloadOutcome;
        let started = std::time::Instant::now();
        let result = self.settle(quiet).await;
        let outcome = match &result {
            Ok(Reconciled::Applied(_)) => ReloadOutcome::Applied,
            Ok(Reconciled::Unchanged) => ReloadOutcome::Unchanged,
            Ok(Reconciled::Rejected(_) | Reconciled::StillRejected) => ReloadOutcome::Rejected,
            Ok(Reconciled::Unsettled) | Err(_) => ReloadOutcome::Error,
        };
        crate::metrics::reload(outcome, started.elapsed(), self.clock.now());
        result
    }

    async fn settle(&mut self, quiet: Duration) -> anyhow::Result<Reconciled> {
        for _ in 0..10 {
            match self.reconcile_once().await? {
                Reconciled::Unsettled => {
                    tracing::debug!("the directory changed while it was read; reading it again");
                    tokio::time::sleep(quiet).await;
                }
                done => return Ok(done),
            }
        }
        anyhow::bail!("the directory keeps changing; trying again later")
    }

    async fn reconcile_once(&mut self) -> anyhow::Result<Reconciled> {
        let now = self.clock.now();
        let mut prepared = reconcile::prepare_with(
            &self.dir,
            Some(&self.store),
            &self.db,
            now,
            self.allow_empty,
        )
        .await
        .with_context(|| format!("while reading {}", self.dir.display()))?;
        // Never apply a mix: what was read must still be what is there.
        let read = reconcile::plan::loaded_hash(&prepared.checked.loaded);
        let again = reconcile::plan::loaded_hash(&spec::load_dir(&self.dir)?);
        if read != again {
            return Ok(Reconciled::Unsettled);
        }
        let errors = self.errors(&prepared);
        if !errors.is_empty()
            && self.last_rejection.as_ref() == Some(&(prepared.hash.clone(), errors.clone()))
        {
            return Ok(Reconciled::StillRejected);
        }
        let outcome = reconcile::apply(&mut prepared, &self.store, &self.dir, now)
            .await
            .context("while applying the campaign directory")?;
        let in_force = prepared.against.revision();
        match outcome {
            ApplyOutcome::Applied(applied) => {
                let (created, changed, removed) = prepared.plan.as_ref().map_or((0, 0, 0), |p| {
                    p.changes
                        .iter()
                        .fold((0, 0, 0), |(c, u, d), change| match change.action {
                            reconcile::Action::Create => (c + 1, u, d),
                            reconcile::Action::Update { .. } => (c, u + 1, d),
                            reconcile::Action::Delete => (c, u, d + 1),
                        })
                });
                tracing::info!(
                    revision = applied.revision,
                    hash = %prepared.hash,
                    created,
                    changed,
                    removed,
                    cancelled_runs = applied.cancelled_runs,
                    "applied revision {}",
                    applied.revision
                );
                self.last_rejection = None;
                let _ = self.revision.send(Some(applied.revision));
                self.runs
                    .revision_applied()
                    .await
                    .context("while telling the engine about the new revision")?;
                self.wake_scheduler.notify_one();
                Ok(Reconciled::Applied(applied.revision))
            }
            ApplyOutcome::Unchanged => {
                if self.last_rejection.take().is_some() {
                    tracing::info!(
                        revision = in_force,
                        "the directory is back to the revision in force"
                    );
                }
                let _ = self.revision.send(in_force);
                // Idempotent: catches a revision applied by `herald apply` meanwhile, and a
                // previous call that failed after its revision was applied.
                self.runs
                    .revision_applied()
                    .await
                    .context("while telling the engine about the revision in force")?;
                self.wake_scheduler.notify_one();
                Ok(Reconciled::Unchanged)
            }
            ApplyOutcome::Rejected { revision } => {
                for d in prepared.diagnostics().iter().filter(|d| d.is_error()) {
                    let at = d.at.as_ref().map(ToString::to_string);
                    tracing::error!(
                        at = at.as_deref().unwrap_or("(the directory)"),
                        code = %d.code,
                        "{}{}",
                        at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default(),
                        d.message
                    );
                }
                let count = errors.len();
                tracing::error!(
                    rejected = revision,
                    in_force = in_force,
                    errors = count,
                    "rejected the campaign directory as revision {revision} ({count} error{}); {} stays in force",
                    if count == 1 { "" } else { "s" },
                    in_force.map_or_else(|| "no revision".to_string(), |r| format!("revision {r}"))
                );
                self.last_rejection = Some((prepared.hash.clone(), errors));
                Ok(Reconciled::Rejected(revision))
            }
        }
    }

    /// The errors `apply` would find: validation's and the plan's, and unresolved secrets.
    fn errors(&self, prepared: &reconcile::Prepared) -> Vec<String> {
        let mut errors: Vec<String> = prepared
            .diagnostics()
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        if prepared.plan.is_some() && !prepared.unchanged() {
            errors.extend(
                reconcile::unresolved_secrets(&prepared.checked.loaded, &self.dir)
                    .iter()
                    .filter(|d| d.is_error())
                    .map(ToString::to_string),
            );
        }
        errors
    }
}

/// The enabled campaigns of the revision in force, with their parsed schedules.
pub async fn campaign_schedules(store: &Store) -> anyhow::Result<Vec<CampaignSchedule>> {
    let Some(in_force) = store
        .revision_in_force()
        .await
        .context("while reading the revision in force")?
    else {
        return Ok(Vec::new());
    };
    let campaigns: Vec<StoredObject> = in_force
        .specs
        .iter()
        .filter(|s| s.kind == Kind::Campaign)
        .map(StoredObject::from)
        .collect();
    let bodies: BTreeMap<&str, &serde_json::Value> = campaigns
        .iter()
        .map(|c| (c.name.as_str(), &c.body))
        .collect();
    let loaded = reconcile::rebuild(&campaigns);
    let mut out = Vec::new();
    for object in &loaded.objects {
        let Object::Campaign(doc) = object else {
            continue;
        };
        if !doc.spec.enabled {
            continue;
        }
        let name = doc.metadata.name.value.clone();
        let parsed = match ParsedSchedule::parse(&doc.spec.schedule) {
            Ok(parsed) => parsed,
            Err(e) => {
                // It validated when applied; a rule that got stricter since must not stop
                // every other campaign.
                tracing::warn!(campaign = %name, error = %e, "cannot parse the schedule in force; not scheduling it");
                continue;
            }
        };
        let grace = doc
            .spec
            .schedule
            .value
            .grace
            .as_ref()
            .and_then(|g| spec::values::parse_duration(&g.value).ok())
            .unwrap_or(schedule::DEFAULT_GRACE);
        let schedule_value = bodies
            .get(name.as_str())
            .map_or(&serde_json::Value::Null, |b| &b["spec"]["schedule"]);
        let schedule_json = bodies
            .get(name.as_str())
            .map(|b| b["spec"]["schedule"].to_string())
            .unwrap_or_default();
        // Since this schedule came into force, not since the revision in force: a `now`
        // occurrence must not move when an unrelated revision is applied.
        let since = store
            .schedule_in_force_since(&name, schedule_value)
            .await
            .context("while reading when the schedule came into force")?
            .unwrap_or(in_force.applied_at);
        out.push(CampaignSchedule {
            campaign: name,
            schedule: parsed,
            hash: hex(&sha2::Sha256::digest(schedule_json.as_bytes())),
            grace,
            since,
        });
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The scheduler: fires and skips due occurrences, then sleeps until the next one or a wake.
struct Scheduler {
    store: Store,
    clock: Arc<dyn Clock>,
    runs: Arc<dyn Runs>,
    wake: Arc<Notify>,
}

impl Scheduler {
    async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let mut schedules: Option<Vec<CampaignSchedule>> = None;
        // Campaigns whose engine call failed, and when to try them again.
        let mut backoff: BTreeMap<String, Timestamp> = BTreeMap::new();
        loop {
            let earliest = match self.tick(&mut schedules, &mut backoff).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "the scheduler cannot read the store; retrying in {}s", RETRY_AFTER.as_secs());
                    schedules = None;
                    Some(self.clock.now() + RETRY_AFTER)
                }
            };
            let sleep = earliest.map_or(MAX_SLEEP, |at| {
                let now = self.clock.now();
                if at <= now {
                    Duration::ZERO
                } else {
                    // +1 ms: the timer rounds, and a fire must not find itself early.
                    (at.duration_since(now).unsigned_abs() + Duration::from_millis(1))
                        .min(MAX_SLEEP)
                }
            });
            tokio::select! {
                biased;
                () = &mut stop => return Ok(()),
                () = self.wake.notified() => schedules = None,
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Handles every due occurrence; returns when the next is due.
    async fn tick(
        &self,
        schedules: &mut Option<Vec<CampaignSchedule>>,
        backoff: &mut BTreeMap<String, Timestamp>,
    ) -> anyhow::Result<Option<Timestamp>> {
        if schedules.is_none() {
            *schedules = Some(campaign_schedules(&self.store).await?);
        }
        let schedules = schedules.as_ref().expect("loaded above");
        let states = self
            .store
            .schedule_states()
            .await
            .context("while reading the schedule state")?;
        let mut earliest: Option<Timestamp> = None;
        let mut consider = |at: Timestamp| {
            earliest = Some(earliest.map_or(at, |e: Timestamp| e.min(at)));
        };
        for campaign in schedules {
            let now = self.clock.now();
            if let Some(until) = backoff.get(&campaign.campaign) {
                if *until > now {
                    consider(*until);
                    continue;
                }
                backoff.remove(&campaign.campaign);
            }
            let mut state: Option<ScheduleState> = states.get(&campaign.campaign).cloned();
            // Bounded: each step moves next_fire_at forward; a catch-up is a few steps.
            for _ in 0..100 {
                let now = self.clock.now();
                let step = schedule::decide(campaign, state.as_ref(), now);
                let done = match &step.decision {
                    Decision::Fire(occurrence) => {
                        match self
                            .runs
                            .start_scheduled(&campaign.campaign, *occurrence)
                            .await
                        {
                            Ok(run) => {
                                tracing::info!(
                                    campaign = %campaign.campaign,
                                    run,
                                    occurrence = %occurrence,
                                    late_ms = now.duration_since(*occurrence).as_millis() as i64,
                                    "fired {} (run {run})",
                                    campaign.campaign
                                );
                                false
                            }
                            Err(e) => {
                                tracing::error!(campaign = %campaign.campaign, occurrence = %occurrence, error = %format!("{e:#}"), "cannot start the run; retrying in {}s", RETRY_AFTER.as_secs());
                                let until = now + RETRY_AFTER;
                                backoff.insert(campaign.campaign.clone(), until);
                                consider(until);
                                break;
                            }
                        }
                    }
                    Decision::Skip { occurrence, reason } => {
                        match self
                            .runs
                            .skip(&campaign.campaign, *occurrence, reason)
                            .await
                        {
                            Ok(run) => {
                                tracing::warn!(campaign = %campaign.campaign, run, occurrence = %occurrence, "skipped: {reason}");
                                false
                            }
                            Err(e) => {
                                tracing::error!(campaign = %campaign.campaign, occurrence = %occurrence, error = %format!("{e:#}"), "cannot record the skipped run; retrying in {}s", RETRY_AFTER.as_secs());
                                let until = now + RETRY_AFTER;
                                backoff.insert(campaign.campaign.clone(), until);
                                consider(until);
                                break;
                            }
                        }
                    }
                    Decision::Wait(at) => {
                        consider(*at);
                        true
                    }
                    Decision::Done => true,
                };
                if state.as_ref() != Some(&step.state) {
                    self.store
                        .put_schedule_state(&campaign.campaign, &step.state, now)
                        .await
                        .context("while recording the schedule state")?;
                }
                state = Some(step.state);
                if done {
                    break;
                }
            }
        }
        Ok(earliest)
    }
}
