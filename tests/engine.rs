//! The run engine against a real SQLite file, a campaign directory applied through
//! reconcile, and real channels: the webhook channel to a local HTTP fake that answers as
//! each test tells it, and the outbox channel to a file. Time-dependent rules (backoff,
//! windows, expiry) run on a manual clock and call `dispatch_once` directly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald::audience::{ExclusionReason, campaign_query};
use herald::contacts::{ImportOptions, import};
use herald::engine::{Clock, DeliveryStatus as Status, Engine, RunState, Trigger};
use herald::reconcile;
use herald::store::Store;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

// ------------------------------------------------------------------ clock

struct ManualClock(Mutex<jiff::Timestamp>);

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        *self.0.lock().unwrap()
    }
}

impl ManualClock {
    fn set(&self, t: &str) {
        *self.0.lock().unwrap() = t.parse().unwrap();
    }
    fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap();
        *t = t
            .checked_add(jiff::SignedDuration::try_from(d).unwrap())
            .unwrap();
    }
}

const START: &str = "2026-11-26T12:00:00Z";

// ------------------------------------------------------------------ the fake receiver

/// What the fake answers.
#[derive(Clone, Debug)]
enum Answer {
    Ok,
    Status(u16, Option<u64>, &'static str),
    /// Close the connection without answering.
    Drop,
    /// Answer 200 after this long.
    Slow(Duration),
}

#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    key: String,
    to: String,
    body: serde_json::Value,
}

type Rule = dyn Fn(&Hit, usize) -> Answer + Send + Sync;

#[derive(Clone)]
struct Fake {
    hits: Arc<Mutex<Vec<Hit>>>,
    rule: Arc<Mutex<Arc<Rule>>>,
    /// Requests being answered now, and the most there ever were.
    in_flight: Arc<Mutex<(usize, usize)>>,
}

struct Receiver {
    addr: SocketAddr,
    fake: Fake,
}

impl Receiver {
    /// Answers by `rule(hit, how many earlier hits had the same key)`.
    async fn start(rule: impl Fn(&Hit, usize) -> Answer + Send + Sync + 'static) -> Receiver {
        let fake = Fake {
            hits: Arc::default(),
            rule: Arc::new(Mutex::new(Arc::new(rule))),
            in_flight: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, fake }
    }

    fn url(&self) -> String {
        format!("http://{}/send", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.fake.hits.lock().unwrap().clone()
    }

    fn most_in_flight(&self) -> usize {
        self.fake.in_flight.lock().unwrap().1
    }
}

async fn answer(State(fake): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let hit = Hit {
        at: Instant::now(),
        key: key.clone(),
        to: body["to"].as_str().unwrap_or_default().to_string(),
        body,
    };
    let earlier = {
        let mut hits = fake.hits.lock().unwrap();
        let n = hits.iter().filter(|h| h.key == key).count();
        hits.push(hit.clone());
        n
    };
    let rule = fake.rule.lock().unwrap().clone();
    match rule(&hit, earlier) {
        Answer::Ok => (StatusCode::OK, format!("{{\"id\":\"p-{key}\"}}")).into_response(),
        Answer::Status(code, retry_after, text) => {
            let mut headers = HeaderMap::new();
            if let Some(s) = retry_after {
                headers.insert("retry-after", s.to_string().parse().unwrap());
            }
            (
                StatusCode::from_u16(code).unwrap(),
                headers,
                text.to_string(),
            )
                .into_response()
        }
        // The connection task ends without a response: the client sees it closed.
        Answer::Drop => panic!("dropping the connection on purpose"),
        Answer::Slow(delay) => {
            {
                let mut f = fake.in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            tokio::time::sleep(delay).await;
            fake.in_flight.lock().unwrap().0 -= 1;
            (StatusCode::OK, "{}").into_response()
        }
    }
}

// ------------------------------------------------------------------ the workspace

/// (contact id, channel, status, reason, attempts) of a delivery.
type DeliveryRow = (String, Option<String>, String, Option<String>, i64);

struct Workspace {
    dir: tempfile::TempDir,
    store: Store,
    clock: Arc<ManualClock>,
    engine: Engine,
}

/// A channel, template and campaign; `campaign_extra` is appended to the campaign's spec.
fn site(url: &str, channel_extra: &str, campaign_extra: &str) -> String {
    format!(
        "apiVersion: herald/v1\nkind: Channel\nmetadata: {{name: gateway}}\nspec:\n  \
         type: webhook\n  medium: sms\n  webhook: {{url: \"{url}\", timeout: 2s}}\n{channel_extra}\
         ---\napiVersion: herald/v1\nkind: Channel\nmetadata: {{name: mailbox}}\nspec:\n  \
         type: outbox\n  medium: email\n  outbox: {{path: out/mail.jsonl}}\n\
         ---\napiVersion: herald/v1\nkind: Template\nmetadata: {{name: hello}}\nspec:\n  \
         sms: {{text: \"Hola {{{{ contact.name | default('cliente') }}}}\"}}\n  \
         email: {{subject: Hola, text: \"Hola {{{{ contact.name | default('cliente') }}}}\"}}\n\
         ---\napiVersion: herald/v1\nkind: Campaign\nmetadata: {{name: promo}}\nspec:\n  \
         audience: {{segment: all-contacts}}\n  \
         channels: {{strategy: fallback, use: [gateway, mailbox]}}\n  template: hello\n  \
         schedule: {{now: true}}\n{campaign_extra}"
    )
}

impl Workspace {
    async fn new(site_text: &str, contacts_csv: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("site")).unwrap();
        std::fs::write(dir.path().join("site/all.yaml"), site_text).unwrap();
        let store = Store::open(&dir.path().join("store.db")).await.unwrap();
        let clock = Arc::new(ManualClock(Mutex::new(START.parse().unwrap())));
        let report = import(
            &store,
            std::io::Cursor::new(contacts_csv.as_bytes().to_vec()),
            ImportOptions {
                now: clock.now(),
                strict: true,
            },
            None,
        )
        .await
        .unwrap();
        assert_eq!(report.bad_rows, 0, "{:?}", report.issues);
        let engine = Engine::new(store.clone(), dir.path().join("site"), clock.clone());
        let ws = Workspace {
            dir,
            store,
            clock,
            engine,
        };
        ws.apply(site_text).await;
        ws
    }

    async fn apply(&self, site_text: &str) {
        let site = self.dir.path().join("site");
        std::fs::write(site.join("all.yaml"), site_text).unwrap();
        let now = self.clock.now();
        let mut prepared = reconcile::prepare(
            &site,
            Some(&self.store),
            &self.dir.path().join("store.db"),
            now,
        )
        .await
        .unwrap();
        assert!(prepared.is_valid(), "{:#?}", prepared.diagnostics());
        let outcome = reconcile::apply(&mut prepared, &self.store, &site, now)
            .await
            .unwrap();
        assert!(
            matches!(outcome, reconcile::ApplyOutcome::Applied(_)),
            "{outcome:?}"
        );
    }

    async fn pool(&self) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(self.dir.path().join("store.db"))
            .busy_timeout(Duration::from_secs(10));
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap()
    }

    /// Every delivery of `run`.
    async fn rows(&self, run: i64) -> Vec<DeliveryRow> {
        sqlx::query_as(
            "SELECT contact_id, channel, status, reason, attempts FROM deliveries \
             WHERE run_id = ? ORDER BY contact_id, channel",
        )
        .bind(run)
        .fetch_all(&self.pool().await)
        .await
        .unwrap()
    }

    async fn status_of(&self, run: i64, contact: &str) -> (String, Option<String>, i64) {
        let rows = self.rows(run).await;
        let row = rows
            .iter()
            .find(|r| r.0 == contact && r.1.is_some())
            .unwrap_or_else(|| panic!("no delivery to {contact} in {rows:?}"));
        (row.2.clone(), row.3.clone(), row.4)
    }

    /// Dispatches until nothing is due (at the clock's current time).
    async fn drain(&self) -> usize {
        let mut total = 0;
        loop {
            let n = self.engine.dispatch_once().await.unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    }
}

/// `n` contacts opted in to sms, `c001`.. with phones.
fn sms_contacts(n: usize) -> String {
    let mut csv = String::from("id,name,phone,opted_in\n");
    for i in 1..=n {
        csv.push_str(&format!("c{i:03},Ana {i},+5198765{i:04},sms\n"));
    }
    csv
}

// ------------------------------------------------------------------ snapshot

/// Snapshots a run of `promo` with `strategy` and checks its rows against the breakdown.
async fn snapshot_matches_breakdown(strategy: &str) {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let csv = "id,name,phone,email,opted_in\n\
               a,Ana,+51987650001,,sms\n\
               b,Bea,+51987650002,b@example.com,email\n\
               c,Cid,,c@example.com,email\n\
               d,Dan,,,\n\
               e,Eva,+51987650005,,\n\
               f,Fio,+51987650006,f@example.com,sms;email\n";
    let text =
        site(&rx.url(), "", "").replace("strategy: fallback", &format!("strategy: {strategy}"));
    let text = if strategy == "specific" {
        text.replace("use: [gateway, mailbox]", "use: [gateway]")
    } else {
        text
    };
    let ws = Workspace::new(&text, csv).await;
    let revision = ws.store.revision_in_force().await.unwrap().unwrap();
    let stored: Vec<reconcile::StoredObject> = revision
        .specs
        .iter()
        .map(|s| reconcile::StoredObject {
            kind: s.kind,
            name: s.name.clone(),
            body: s.body.clone(),
            file: s.file.clone(),
            line: s.line,
        })
        .collect();
    let loaded = reconcile::rebuild(&stored);
    let query = campaign_query(&loaded, "promo", ws.clock.now()).unwrap();
    let breakdown = ws.store.campaign_breakdown(&query).await.unwrap();

    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let status = ws.engine.run_status(run).await.unwrap();
    assert_eq!(status.status, RunState::Running);
    assert_eq!(status.total, breakdown.messages);
    assert_eq!(status.counts[&Status::Pending], breakdown.messages);
    let rows = ws.rows(run).await;
    let mut by_channel: BTreeMap<String, u64> = BTreeMap::new();
    for (_, channel, s, _, _) in &rows {
        if s == "pending" {
            *by_channel.entry(channel.clone().unwrap()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, u64> = breakdown
        .by_channel
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(by_channel, expected, "{strategy}");
    let excluded: BTreeMap<String, u64> = breakdown
        .excluded
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| (r.as_str().to_string(), *n))
        .collect();
    assert_eq!(status.excluded, excluded);
    let recipients: BTreeSet<&String> = rows
        .iter()
        .filter(|r| r.2 == "pending")
        .map(|r| &r.0)
        .collect();
    assert_eq!(recipients.len() as u64, breakdown.recipients, "{strategy}");
    if strategy == "fallback" {
        // Hand-checked: a, f by sms; b, c by e-mail; d no address; e no consent.
        assert_eq!(breakdown.recipients, 4);
        assert_eq!(
            status.excluded.get(ExclusionReason::NoConsent.as_str()),
            Some(&1)
        );
    }
    if strategy == "all" {
        assert_eq!(breakdown.messages, 5, "f gets both");
    }
    let addresses: BTreeSet<(String, String)> = sqlx::query_as(
        "SELECT contact_id, address FROM deliveries WHERE run_id = ? AND status = 'pending'",
    )
    .bind(run)
    .fetch_all(&ws.pool().await)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(addresses.contains(&("a".into(), "+51987650001".into())));
    if strategy != "specific" {
        assert!(addresses.contains(&("b".into(), "b@example.com".into())));
    }
}

#[tokio::test]
async fn the_snapshot_writes_exactly_the_breakdown_the_plan_shows_for_every_strategy() {
    for strategy in ["fallback", "all", "specific"] {
        snapshot_matches_breakdown(strategy).await;
    }
}

#[tokio::test]
async fn a_scheduled_occurrence_never_gets_two_runs() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(3)).await;
    let occurrence: jiff::Timestamp = START.parse().unwrap();
    let a = ws
        .engine
        .start_run("promo", Trigger::Schedule { occurrence })
        .await
        .unwrap();
    let b = ws
        .engine
        .start_run("promo", Trigger::Schedule { occurrence })
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(ws.rows(a).await.len(), 3);
    let skipped = ws
        .engine
        .skip_run("promo", "2026-11-27T12:00:00Z".parse().unwrap(), "missed")
        .await
        .unwrap();
    assert_eq!(
        ws.engine.run_status(skipped).await.unwrap().status,
        RunState::Skipped
    );
}

// ------------------------------------------------------------------ sending and results

#[tokio::test]
async fn every_recipient_ends_in_exactly_one_final_state_and_the_run_finishes() {
    // Every third address is refused for good; the rest are accepted.
    let rx = Receiver::start(|hit, _| {
        let n: u32 = hit.to[hit.to.len() - 2..].parse().unwrap();
        if n.is_multiple_of(3) {
            Answer::Status(400, None, "invalid number")
        } else {
            Answer::Ok
        }
    })
    .await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(40)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.drain().await;
    ws.engine.dispatch_once().await.unwrap(); // housekeeping finishes the run
    let status = ws.engine.run_status(run).await.unwrap();
    assert_eq!(status.status, RunState::Finished, "{status:?}");
    assert_eq!(status.progress, 1.0);
    let rows = ws.rows(run).await;
    assert_eq!(rows.len(), 40);
    let contacts: BTreeSet<&String> = rows.iter().map(|r| &r.0).collect();
    assert_eq!(contacts.len(), 40, "one row per recipient");
    assert_eq!(status.counts[&Status::Sent], 27);
    assert_eq!(status.counts[&Status::Failed], 13);
    assert_eq!(rx.hits().len(), 40, "each message sent once");
    let sent_provider_ids: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries WHERE run_id = ? AND status = 'sent' \
         AND provider_message_id LIKE 'p-%' AND sent_at IS NOT NULL",
    )
    .bind(run)
    .fetch_one(&ws.pool().await)
    .await
    .unwrap();
    assert_eq!(sent_provider_ids, 27);
    let outbound: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contact_media WHERE medium = 'sms' AND last_outbound_at IS NOT NULL",
    )
    .fetch_one(&ws.pool().await)
    .await
    .unwrap();
    assert_eq!(outbound, 27);
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_then_succeed_with_the_same_key() {
    // First a dropped connection, then 503, then accepted.
    let rx = Receiver::start(|_, earlier| match earlier {
        0 => Answer::Drop,
        1 => Answer::Status(503, None, "busy"),
        _ => Answer::Ok,
    })
    .await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(1)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 1);
    let (status, reason, attempts) = ws.status_of(run, "c001").await;
    assert_eq!((status.as_str(), attempts), ("retry", 1), "{reason:?}");
    // Not due yet: the backoff is in the future (at most 30 s with full jitter).
    let due: i64 = sqlx::query_scalar(
        "SELECT next_attempt_at FROM deliveries WHERE run_id = ? AND channel IS NOT NULL",
    )
    .bind(run)
    .fetch_one(&ws.pool().await)
    .await
    .unwrap();
    let now = ws.clock.now().as_millisecond();
    assert!(due >= now && due <= now + 30_000, "{due} vs {now}");
    ws.clock.advance(Duration::from_secs(31));
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 1);
    let (status, reason, attempts) = ws.status_of(run, "c001").await;
    assert_eq!((status.as_str(), attempts), ("retry", 2));
    assert!(reason.unwrap().contains("503"));
    ws.clock.advance(Duration::from_secs(61));
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 1);
    let (status, _, attempts) = ws.status_of(run, "c001").await;
    assert_eq!((status.as_str(), attempts), ("sent", 3));
    let keys: BTreeSet<String> = rx.hits().into_iter().map(|h| h.key).collect();
    assert_eq!(
        keys.len(),
        1,
        "every attempt carries the same idempotency key"
    );
    assert_eq!(rx.hits().len(), 3);
}

#[tokio::test]
async fn full_batches_of_mixed_results_record_every_row_with_its_own_status_and_provider_id() {
    // 6 in 10 first attempts fail: the first batch of 1,000 records 600 retries and 400
    // successes, the retries later come back as one batch of 720 successes. Large parts
    // of a batch are written by statements padded to a full chunk; every row must still
    // get exactly its own result.
    let rx = Receiver::start(|hit, earlier| {
        let n: u32 = hit.to[hit.to.len() - 4..].parse().unwrap();
        if earlier == 0 && n % 10 < 6 {
            Answer::Status(503, None, "busy")
        } else {
            Answer::Ok
        }
    })
    .await;
    // One channel, so that one claim takes a whole batch.
    let text = site(&rx.url(), "", "").replace(
        "{strategy: fallback, use: [gateway, mailbox]}",
        "{strategy: specific, use: [gateway]}",
    );
    let ws = Workspace::new(&text, &sms_contacts(1200)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let counts = |rows: Vec<DeliveryRow>| {
        let mut by: BTreeMap<(String, i64), usize> = BTreeMap::new();
        for (_, channel, status, _, attempts) in rows.into_iter().filter(|r| r.1.is_some()) {
            assert_eq!(channel.as_deref(), Some("gateway"));
            *by.entry((status, attempts)).or_default() += 1;
        }
        by
    };
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 1000);
    assert_eq!(
        counts(ws.rows(run).await),
        BTreeMap::from([
            (("pending".to_string(), 0), 200),
            (("retry".to_string(), 1), 600),
            (("sent".to_string(), 1), 400),
        ])
    );
    // The other 200, then (the backoff is at most 30 s) the 720 retries.
    ws.drain().await;
    ws.clock.advance(Duration::from_secs(31));
    ws.drain().await;
    assert_eq!(
        counts(ws.rows(run).await),
        BTreeMap::from([
            (("sent".to_string(), 1), 480),
            (("sent".to_string(), 2), 720),
        ])
    );
    let pool = ws.pool().await;
    let (own_ids, retried_reasons): (i64, i64) = sqlx::query_as(
        "SELECT sum(provider_message_id = 'p-' || idempotency_key), \
         sum(attempts = 2 AND reason IS NULL) FROM deliveries \
         WHERE run_id = ? AND channel IS NOT NULL AND sent_at IS NOT NULL",
    )
    .bind(run)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((own_ids, retried_reasons), (1200, 720));
    assert_eq!(rx.hits().len(), 1920);
}

#[tokio::test]
async fn retry_after_is_honoured_and_max_attempts_ends_in_failed_with_the_last_reason() {
    let rx = Receiver::start(|_, _| Answer::Status(429, Some(600), "slow down")).await;
    let extra = "  delivery: {retry: {max_attempts: 2}}\n";
    let ws = Workspace::new(&site(&rx.url(), "", extra), &sms_contacts(1)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.engine.dispatch_once().await.unwrap();
    let due: i64 = sqlx::query_scalar(
        "SELECT next_attempt_at FROM deliveries WHERE run_id = ? AND channel IS NOT NULL",
    )
    .bind(run)
    .fetch_one(&ws.pool().await)
    .await
    .unwrap();
    assert!(
        due >= ws.clock.now().as_millisecond() + 600_000,
        "Retry-After 600 s"
    );
    ws.clock.advance(Duration::from_secs(300));
    assert_eq!(
        ws.engine.dispatch_once().await.unwrap(),
        0,
        "not before Retry-After"
    );
    ws.clock.advance(Duration::from_secs(301));
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 1);
    let (status, reason, attempts) = ws.status_of(run, "c001").await;
    assert_eq!((status.as_str(), attempts), ("failed", 2));
    let reason = reason.unwrap();
    assert!(
        reason.contains("429") && reason.contains("slow down"),
        "{reason}"
    );
}

/// A provider's request to wait is for the whole account, not one message: after a 429 with
/// Retry-After, nothing more goes through the channel (the rest of the batch is put back,
/// its attempts not counted, and no rows are claimed) until the time is up.
#[tokio::test]
async fn a_retry_after_holds_the_whole_channel_until_it_is_up() {
    let told = std::sync::atomic::AtomicBool::new(false);
    let rx = Receiver::start(move |_, _| {
        if told.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Answer::Ok
        } else {
            Answer::Status(429, Some(30), "too many requests")
        }
    })
    .await;
    // One request at a time, so the 429 comes before the batch's other sends.
    let ws = Workspace::new(
        &site(&rx.url(), "  max_in_flight: 1\n", ""),
        &sms_contacts(3),
    )
    .await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    assert_eq!(
        ws.engine.dispatch_once().await.unwrap(),
        1,
        "one attempt made"
    );
    assert_eq!(rx.hits().len(), 1, "nothing sent after the 429");
    let (status, reason, attempts) = ws.status_of(run, "c001").await;
    assert_eq!((status.as_str(), attempts), ("retry", 1));
    assert!(reason.unwrap().contains("429"));
    for contact in ["c002", "c003"] {
        let (status, reason, attempts) = ws.status_of(run, contact).await;
        assert_eq!((status.as_str(), attempts), ("pending", 0), "{contact}");
        assert!(reason.unwrap().contains("asked channel gateway to wait"));
    }

    // Still held: the channel's rows are not even claimed.
    ws.clock.advance(Duration::from_secs(29));
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 0);
    assert_eq!(rx.hits().len(), 1);

    // Time is up: all three go, each with one more attempt.
    ws.clock.advance(Duration::from_secs(2));
    assert_eq!(ws.drain().await, 3);
    assert_eq!(rx.hits().len(), 4);
    for (contact, attempts) in [("c001", 2), ("c002", 1), ("c003", 1)] {
        assert_eq!(
            ws.status_of(run, contact).await,
            ("sent".into(), None, attempts)
        );
    }
}

#[tokio::test]
async fn a_permanent_failure_keeps_the_providers_reason_and_a_provider_opt_out_is_recorded() {
    let rx = Receiver::start(|hit, _| {
        if hit.to.ends_with('1') {
            Answer::Status(400, None, "{\"error\": \"number does not exist\"}")
        } else {
            Answer::Status(403, None, "{\"opted_out\": true}")
        }
    })
    .await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(2)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.drain().await;
    let (status, reason, _) = ws.status_of(run, "c001").await;
    assert_eq!(status, "failed");
    let reason = reason.unwrap();
    assert!(
        reason.contains("HTTP 400") && reason.contains("number does not exist"),
        "{reason}"
    );
    let (status, _, _) = ws.status_of(run, "c002").await;
    assert_eq!(status, "failed");
    let source: Option<String> = sqlx::query_scalar(
        "SELECT m.opted_out_source FROM contact_media m JOIN contacts c ON c.pk = m.contact_pk \
         WHERE c.id = 'c002' AND m.medium = 'sms'",
    )
    .fetch_one(&ws.pool().await)
    .await
    .unwrap();
    assert_eq!(source.as_deref(), Some("provider"));
}

/// A provider may call back before herald has recorded the answer to the send (Twilio
/// never retries a status callback): such a receipt waits, and is applied in the
/// transaction that records the send, after its `delivery.sent` event.
#[tokio::test]
async fn a_receipt_that_beats_the_sends_record_is_applied_when_the_send_is_recorded() {
    use herald::store::inbound::{Inbound, ReceiptRecorded, ReceiptWrite};
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(2)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let key: String = sqlx::query_scalar(
        "SELECT idempotency_key FROM deliveries WHERE run_id = ? AND contact_id = 'c001' \
         AND channel IS NOT NULL",
    )
    .bind(run)
    .fetch_one(&ws.pool().await)
    .await
    .unwrap();
    // The fake provider's message id for it (it answers `{"id": "p-KEY"}`).
    let message_id = format!("p-{key}");
    let now = ws.clock.now();
    let receipt = |webhook_id, keep_early| ReceiptWrite {
        channel: "gateway",
        webhook_id,
        provider_message_id: &message_id,
        status: Status::Failed,
        error: Some("Twilio error 21610 (undelivered)"),
        at: now.as_millisecond(),
        opt_out: Some(herald::spec::channel::Medium::Sms),
        keep_early,
    };
    let answer = |_: &ReceiptRecorded| serde_json::json!({"kept": true});
    let turned_away = ws
        .store
        .record_receipt(&receipt("cb-0", false), answer, now)
        .await
        .unwrap();
    assert_eq!(turned_away, None, "without keep_early: nothing written");
    let kept = ws
        .store
        .record_receipt(&receipt("cb-1", true), answer, now)
        .await
        .unwrap();
    assert!(
        matches!(
            kept,
            Some(Inbound::Recorded {
                outcome: ReceiptRecorded::Early,
                ..
            })
        ),
        "{kept:?}"
    );

    assert_eq!(ws.drain().await, 2);
    let (status, reason, attempts) = ws.status_of(run, "c001").await;
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    assert!(reason.unwrap().contains("21610"));
    assert_eq!(ws.status_of(run, "c002").await.0, "sent");
    let source: Option<String> = sqlx::query_scalar(
        "SELECT m.opted_out_source FROM contact_media m JOIN contacts c ON c.pk = m.contact_pk \
         WHERE c.id = 'c001' AND m.medium = 'sms'",
    )
    .fetch_one(&ws.pool().await)
    .await
    .unwrap();
    assert_eq!(source.as_deref(), Some("provider"));
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM early_receipts")
        .fetch_one(&ws.pool().await)
        .await
        .unwrap();
    assert_eq!(waiting, 0, "applied receipts stop waiting");
    // A repeat of the callback gets its first answer and changes nothing.
    let repeat = ws
        .store
        .record_receipt(&receipt("cb-1", true), answer, now)
        .await
        .unwrap();
    assert_eq!(
        repeat,
        Some(Inbound::Duplicate(serde_json::json!({"kept": true})))
    );
}

#[tokio::test]
async fn a_contact_who_opts_out_after_the_snapshot_is_skipped_not_sent() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(2)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    sqlx::query(
        "UPDATE contact_media SET opted_out_at = ?, opted_out_source = 'reply' \
         WHERE contact_pk = (SELECT pk FROM contacts WHERE id = 'c002')",
    )
    .bind(ws.clock.now().as_millisecond() + 1)
    .execute(&ws.pool().await)
    .await
    .unwrap();
    ws.drain().await;
    assert_eq!(ws.status_of(run, "c001").await.0, "sent");
    let (status, reason, _) = ws.status_of(run, "c002").await;
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("skipped", Some("opted_out"))
    );
    assert_eq!(rx.hits().len(), 1);
}

#[tokio::test]
async fn a_render_error_skips_the_message_with_the_error() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let text = site(&rx.url(), "", "").replace(
        "sms: {text: \"Hola {{ contact.name | default('cliente') }}\"}",
        "sms: {text: \"Hola {{ contact.attributes.plan }}\"}",
    );
    let ws = Workspace::new(&text, &sms_contacts(1)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.drain().await;
    let (status, reason, _) = ws.status_of(run, "c001").await;
    assert_eq!(status, "skipped");
    assert!(reason.unwrap().contains("sms.text"));
    assert!(rx.hits().is_empty());
}

// ------------------------------------------------------------------ rate limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_of_50_per_second_is_never_exceeded_in_any_sliding_second_at_the_receiver() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let channel_extra = "  rate: {per_second: 50}\n";
    let ws = Workspace::new(&site(&rx.url(), channel_extra, ""), &sms_contacts(300)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = ws.engine.clone();
    let task = tokio::spawn(async move {
        engine
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let started = Instant::now();
    while rx.hits().len() < 300 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let mut times: Vec<Instant> = rx.hits().iter().map(|h| h.at).collect();
    assert_eq!(times.len(), 300);
    times.sort();
    let mut worst = 0;
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        worst = worst.max(in_window);
    }
    // Burst 1: rate + 1.
    assert!(worst <= 51, "{worst} requests in one second");
    let span = times[299].duration_since(times[0]);
    assert!(
        span >= Duration::from_millis(5_900),
        "{span:?}: faster than 50/s"
    );
    let status = ws.engine.run_status(run).await.unwrap();
    assert_eq!(status.counts[&Status::Sent], 300);
}

// ------------------------------------------------------------------ run control

#[tokio::test]
async fn pause_stops_claims_resume_continues_and_cancel_cancels_what_is_left() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(5)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.engine.pause(run).await.unwrap();
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 0);
    assert!(rx.hits().is_empty());
    assert_eq!(
        ws.engine.run_status(run).await.unwrap().status,
        RunState::Paused
    );
    ws.engine.resume(run).await.unwrap();
    ws.drain().await;
    assert_eq!(rx.hits().len(), 5);
    assert!(
        ws.engine.resume(run).await.is_err(),
        "a running run is not resumed"
    );

    let second = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.engine.cancel(second).await.unwrap();
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 0);
    let status = ws.engine.run_status(second).await.unwrap();
    assert_eq!(status.status, RunState::Cancelled);
    assert_eq!(status.counts[&Status::Cancelled], 5);
    assert_eq!(rx.hits().len(), 5);
    assert!(ws.engine.pause(second).await.is_err());
}

#[tokio::test]
async fn disabling_a_campaign_pauses_its_runs_enabling_resumes_them_and_deleting_cancels() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let text = site(&rx.url(), "", "");
    let ws = Workspace::new(&text, &sms_contacts(3)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let disabled = text.replace("  audience:", "  enabled: false\n  audience:");
    ws.apply(&disabled).await;
    ws.engine.revision_applied().await.unwrap();
    assert_eq!(
        ws.engine.run_status(run).await.unwrap().status,
        RunState::Paused
    );
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 0);
    assert!(matches!(
        ws.engine.start_run("promo", Trigger::Manual).await,
        Err(herald::engine::EngineError::CampaignDisabled(_))
    ));
    ws.apply(&text).await;
    ws.engine.revision_applied().await.unwrap();
    assert_eq!(
        ws.engine.run_status(run).await.unwrap().status,
        RunState::Running
    );
    ws.drain().await;
    assert_eq!(rx.hits().len(), 3);

    let second = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let without_campaign = text[..text
        .find("---\napiVersion: herald/v1\nkind: Campaign")
        .unwrap()]
        .to_string();
    ws.apply(&without_campaign).await;
    ws.engine.revision_applied().await.unwrap();
    let status = ws.engine.run_status(second).await.unwrap();
    assert_eq!(status.status, RunState::Cancelled);
    assert_eq!(status.counts[&Status::Cancelled], 3);
}

#[tokio::test]
async fn a_run_keeps_the_template_of_its_revision_after_the_campaign_is_edited() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let text = site(&rx.url(), "", "");
    let ws = Workspace::new(&text, &sms_contacts(1)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.apply(&text.replace("sms: {text: \"Hola", "sms: {text: \"Adios"))
        .await;
    ws.engine.revision_applied().await.unwrap();
    ws.drain().await;
    let hits = rx.hits();
    assert_eq!(hits[0].body["content"]["text"], "Hola Ana 1");
    let later = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    assert_ne!(later, run);
    ws.drain().await;
    assert_eq!(rx.hits()[1].body["content"]["text"], "Adios Ana 1");
}

#[tokio::test]
async fn a_test_send_reaches_one_contact_even_when_the_campaign_is_disabled() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let text = site(&rx.url(), "", "").replace("  audience:", "  enabled: false\n  audience:");
    let ws = Workspace::new(&text, &sms_contacts(4)).await;
    let run = ws
        .engine
        .start_run(
            "promo",
            Trigger::Test {
                contact_id: "c003".into(),
            },
        )
        .await
        .unwrap();
    ws.drain().await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].body["contact_id"], "c003");
    assert_eq!(hits[0].body["test"], true);
    let status = ws.engine.run_status(run).await.unwrap();
    assert_eq!(status.trigger, "test");
    assert!(matches!(
        ws.engine
            .start_run(
                "promo",
                Trigger::Test {
                    contact_id: "nobody".into()
                }
            )
            .await,
        Err(herald::engine::EngineError::UnknownContact(_))
    ));
}

// ------------------------------------------------------------------ time

#[tokio::test]
async fn deliveries_past_max_duration_expire_and_the_run_finishes() {
    let rx = Receiver::start(|_, _| Answer::Status(503, None, "down")).await;
    let extra = "  delivery: {max_duration: 1h}\n";
    let ws = Workspace::new(&site(&rx.url(), "", extra), &sms_contacts(3)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.engine.dispatch_once().await.unwrap();
    ws.clock.advance(Duration::from_secs(3_601));
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 0);
    let status = ws.engine.run_status(run).await.unwrap();
    assert_eq!(status.counts[&Status::Expired], 3);
    assert_eq!(status.status, RunState::Finished);
    assert_eq!(status.progress, 1.0);
}

#[tokio::test]
async fn outside_the_send_window_a_delivery_waits_for_the_next_opening_without_an_attempt() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let extra =
        "  delivery:\n    send_window: {start: \"09:00\", end: \"17:00\", timezone: contact}\n";
    let csv = "id,name,phone,timezone,opted_in\n\
               lima,Ana,+51987650001,America/Lima,sms\n\
               tokyo,Ken,+81987650002,Asia/Tokyo,sms\n";
    let ws = Workspace::new(&site(&rx.url(), "", extra), csv).await;
    // 12:00 UTC: 07:00 in Lima (closed until 14:00 UTC), 21:00 in Tokyo (closed until
    // 00:00 UTC the next day).
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 0);
    assert!(rx.hits().is_empty());
    let due: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT contact_id, next_attempt_at, attempts FROM deliveries \
         WHERE run_id = ? ORDER BY contact_id",
    )
    .bind(run)
    .fetch_all(&ws.pool().await)
    .await
    .unwrap();
    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    assert_eq!(
        due,
        vec![
            ("lima".into(), at("2026-11-26T14:00:00Z"), 0),
            ("tokyo".into(), at("2026-11-27T00:00:00Z"), 0)
        ]
    );
    ws.clock.set("2026-11-26T14:00:00Z");
    assert_eq!(ws.drain().await, 1);
    assert_eq!(rx.hits()[0].body["contact_id"], "lima");
    ws.clock.set("2026-11-27T00:30:00Z");
    assert_eq!(ws.drain().await, 1);
    assert_eq!(ws.status_of(run, "tokyo").await.0, "sent");
}

#[tokio::test]
async fn local_time_delivers_at_the_schedules_wall_clock_in_each_contacts_zone() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let extra = "  local_time: true\n";
    let csv = "id,name,phone,timezone,opted_in\n\
               lima,Ana,+51987650001,America/Lima,sms\n\
               tokyo,Ken,+81987650002,Asia/Tokyo,sms\n\
               nowhere,Zoe,+51987650003,,sms\n";
    let text = site(&rx.url(), "", extra).replace(
        "schedule: {now: true}",
        "schedule: {cron: \"0 12 * * *\", timezone: UTC}",
    );
    let ws = Workspace::new(&text, csv).await;
    let occurrence: jiff::Timestamp = START.parse().unwrap();
    let run = ws
        .engine
        .start_run("promo", Trigger::Schedule { occurrence })
        .await
        .unwrap();
    let due: Vec<(String, i64)> = sqlx::query_as(
        "SELECT contact_id, next_attempt_at FROM deliveries WHERE run_id = ? ORDER BY contact_id",
    )
    .bind(run)
    .fetch_all(&ws.pool().await)
    .await
    .unwrap();
    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    // 12:00 (the schedule's zone, UTC) in Lima is 17:00 UTC; in Tokyo it has passed: now.
    assert_eq!(
        due,
        vec![
            ("lima".into(), at("2026-11-26T17:00:00Z")),
            ("nowhere".into(), at(START)),
            ("tokyo".into(), at(START)),
        ]
    );
}

#[tokio::test]
async fn the_frequency_cap_is_checked_again_at_send_time_across_campaigns() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let extra = "  delivery: {frequency_cap: {max: 1, per: 7d}}\n";
    let mut text = site(&rx.url(), "", extra);
    let second = text[text
        .find("---\napiVersion: herald/v1\nkind: Campaign")
        .unwrap()..]
        .replace("name: promo", "name: promo-two");
    text.push_str(&second);
    let ws = Workspace::new(&text, &sms_contacts(1)).await;
    let first = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let other = ws
        .engine
        .start_run("promo-two", Trigger::Manual)
        .await
        .unwrap();
    ws.engine.pause(other).await.unwrap();
    ws.drain().await;
    assert_eq!(ws.status_of(first, "c001").await.0, "sent");
    ws.engine.resume(other).await.unwrap();
    ws.drain().await;
    let (status, reason, _) = ws.status_of(other, "c001").await;
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("skipped", Some("frequency_cap"))
    );
    assert_eq!(rx.hits().len(), 1);
    // A run started now leaves the contact out at the snapshot, as the plan would.
    let third = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let status = ws.engine.run_status(third).await.unwrap();
    assert_eq!(status.total, 0);
    assert_eq!(status.excluded.get("frequency_cap"), Some(&1));
    assert_eq!(status.status, RunState::Finished);
}

// ------------------------------------------------------------------ crash recovery

async fn leave_sending(ws: &Workspace, run: i64) {
    sqlx::query(
        "UPDATE deliveries SET status = 'sending', attempts = 1 WHERE run_id = ? AND status = 'pending'",
    )
    .bind(run)
    .execute(&ws.pool().await)
    .await
    .unwrap();
}

#[tokio::test]
async fn after_a_crash_webhook_deliveries_are_sent_again_with_the_same_key() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(3)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    leave_sending(&ws, run).await;
    let keys: BTreeSet<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM deliveries WHERE run_id = ? AND status = 'sending'",
    )
    .bind(run)
    .fetch_all(&ws.pool().await)
    .await
    .unwrap()
    .into_iter()
    .collect();
    // A new process.
    let engine = Engine::new(
        ws.store.clone(),
        ws.dir.path().join("site"),
        ws.clock.clone(),
    );
    let report = engine.recover().await.unwrap();
    assert_eq!((report.resent, report.unknown), (3, 0));
    while engine.dispatch_once().await.unwrap() > 0 {}
    let sent: BTreeSet<String> = rx.hits().into_iter().map(|h| h.key).collect();
    assert_eq!(sent, keys);
    assert_eq!(
        ws.engine.run_status(run).await.unwrap().counts[&Status::Sent],
        3
    );
}

#[tokio::test]
async fn after_a_crash_outbox_deliveries_are_marked_unknown_and_never_sent_twice() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let text = site(&rx.url(), "", "").replace("use: [gateway, mailbox]", "use: [mailbox]");
    let csv = "id,name,email,opted_in\nm1,Ana,a@example.com,email\nm2,Bea,b@example.com,email\n";
    let ws = Workspace::new(&text, csv).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    leave_sending(&ws, run).await;
    let engine = Engine::new(
        ws.store.clone(),
        ws.dir.path().join("site"),
        ws.clock.clone(),
    );
    let report = engine.recover().await.unwrap();
    assert_eq!((report.resent, report.unknown), (0, 2));
    assert_eq!(engine.dispatch_once().await.unwrap(), 0);
    let rows = ws.rows(run).await;
    assert!(
        rows.iter()
            .all(|r| r.2 == "unknown" && r.3.as_deref() == Some(herald::engine::INTERRUPTED))
    );
    let outbox = ws.dir.path().join("site/out/mail.jsonl");
    let lines = std::fs::read_to_string(&outbox).unwrap_or_default();
    assert_eq!(lines.lines().count(), 0);
}

#[tokio::test]
async fn the_outbox_channel_writes_one_line_per_sent_delivery_under_the_campaign_dir() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let text = site(&rx.url(), "", "").replace("use: [gateway, mailbox]", "use: [mailbox]");
    let csv = "id,name,email,opted_in\nm1,Ana,a@example.com,email\nm2,Bea,b@example.com,email\n";
    let ws = Workspace::new(&text, csv).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.drain().await;
    let lines = std::fs::read_to_string(ws.dir.path().join("site/out/mail.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    assert_eq!(
        ws.engine.run_status(run).await.unwrap().counts[&Status::Sent],
        2
    );
    let _ = Path::new("");
}

// ------------------------------------------------------------------ concurrency

#[tokio::test]
async fn a_channel_never_has_more_requests_in_flight_than_its_max_in_flight() {
    let rx = Receiver::start(|_, _| Answer::Slow(Duration::from_millis(50))).await;
    let channel_extra = "  max_in_flight: 3\n";
    let ws = Workspace::new(&site(&rx.url(), channel_extra, ""), &sms_contacts(24)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.drain().await;
    assert_eq!(rx.hits().len(), 24);
    assert_eq!(
        rx.most_in_flight(),
        3,
        "the limit is used, and never exceeded"
    );
    assert_eq!(
        ws.engine.run_status(run).await.unwrap().counts[&Status::Sent],
        24
    );
}

#[tokio::test]
async fn a_receiver_that_hangs_past_the_timeout_gets_the_message_again_later() {
    let rx = Receiver::start(|_, earlier| {
        if earlier == 0 {
            Answer::Slow(Duration::from_secs(5))
        } else {
            Answer::Ok
        }
    })
    .await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(1)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let started = Instant::now();
    ws.engine.dispatch_once().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the 2 s timeout applies"
    );
    let (status, reason, _) = ws.status_of(run, "c001").await;
    assert_eq!(status, "retry");
    assert!(reason.unwrap().contains("timed out"));
    ws.clock.advance(Duration::from_secs(31));
    ws.drain().await;
    assert_eq!(ws.status_of(run, "c001").await.0, "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_two_campaigns_share_a_rate_limited_channel_evenly_and_shutdown_leaves_nothing_sending()
 {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let mut text = site(&rx.url(), "  rate: {per_second: 20}\n", "");
    let second = text[text
        .find("---\napiVersion: herald/v1\nkind: Campaign")
        .unwrap()..]
        .replace("name: promo", "name: promo-two");
    text.push_str(&second);
    let ws = Workspace::new(&text, &sms_contacts(40)).await;
    ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.engine
        .start_run("promo-two", Trigger::Manual)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = ws.engine.clone();
    let sending_since = Instant::now();
    let task = tokio::spawn(async move {
        engine
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    // Shutdown finishes the sends already claimed, at the channel's rate: on a loaded
    // machine that takes a while, so the bound is over the whole time sends could leave.
    let span = sending_since.elapsed().as_secs_f64();
    let hits = rx.hits();
    let by_campaign = |name: &str| hits.iter().filter(|h| h.body["campaign"] == name).count();
    let (a, b) = (by_campaign("promo"), by_campaign("promo-two"));
    let bound = (20.0 * span).ceil() as usize + 1;
    assert!(
        a + b <= bound,
        "{a} + {b} in {span:.2} s: over the channel's rate"
    );
    assert!(a >= 8 && b >= 8, "{a} and {b}: one run starved the other");
    assert!(a.abs_diff(b) <= 6, "{a} vs {b}");
    let sending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'sending'")
            .fetch_one(&ws.pool().await)
            .await
            .unwrap();
    assert_eq!(
        sending, 0,
        "shutdown finished and recorded every send in flight"
    );
}

// ------------------------------------------------------------------ review fixes

/// `promo` and `promo-two`, both with `campaign_extra`.
fn two_campaigns(url: &str, campaign_extra: &str) -> String {
    let mut text = site(url, "", campaign_extra);
    let second = text[text
        .find("---\napiVersion: herald/v1\nkind: Campaign")
        .unwrap()..]
        .replace("name: promo", "name: promo-two");
    text.push_str(&second);
    text
}

#[tokio::test]
async fn two_capped_campaigns_firing_together_send_one_contact_exactly_one_message() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let extra = "  delivery: {frequency_cap: {max: 1, per: 7d}}\n";
    let ws = Workspace::new(&two_campaigns(&rx.url(), extra), &sms_contacts(1)).await;
    let first = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let other = ws
        .engine
        .start_run("promo-two", Trigger::Manual)
        .await
        .unwrap();
    ws.drain().await;
    let mut outcomes = vec![
        ws.status_of(first, "c001").await,
        ws.status_of(other, "c001").await,
    ];
    outcomes.sort();
    assert_eq!(outcomes[0].0, "sent", "{outcomes:?}");
    assert_eq!(
        (outcomes[1].0.as_str(), outcomes[1].1.as_deref()),
        ("skipped", Some("frequency_cap")),
        "{outcomes:?}"
    );
    assert_eq!(rx.hits().len(), 1);
}

#[tokio::test]
async fn a_row_being_sent_by_another_batch_counts_against_the_frequency_cap() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let extra = "  delivery: {frequency_cap: {max: 1, per: 7d}}\n";
    let ws = Workspace::new(&two_campaigns(&rx.url(), extra), &sms_contacts(1)).await;
    let first = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let other = ws
        .engine
        .start_run("promo-two", Trigger::Manual)
        .await
        .unwrap();
    // As if another batch had claimed the first run's row and not yet recorded it.
    sqlx::query(
        "UPDATE deliveries SET status = 'sending', attempts = 1 WHERE run_id = ? AND channel IS NOT NULL",
    )
    .bind(first)
    .execute(&ws.pool().await)
    .await
    .unwrap();
    ws.drain().await;
    let (status, reason, _) = ws.status_of(other, "c001").await;
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("skipped", Some("frequency_cap"))
    );
    assert!(rx.hits().is_empty());
}

#[tokio::test]
async fn a_test_send_is_not_held_back_by_the_frequency_cap() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let extra = "  delivery: {frequency_cap: {max: 1, per: 7d}}\n";
    let ws = Workspace::new(&site(&rx.url(), "", extra), &sms_contacts(1)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    ws.drain().await;
    assert_eq!(ws.status_of(run, "c001").await.0, "sent");
    let test = ws
        .engine
        .start_run(
            "promo",
            Trigger::Test {
                contact_id: "c001".into(),
            },
        )
        .await
        .unwrap();
    ws.drain().await;
    let (status, reason, _) = ws.status_of(test, "c001").await;
    assert_eq!((status.as_str(), reason), ("sent", None));
    assert_eq!(rx.hits().len(), 2);
}

#[tokio::test]
async fn a_contact_deleted_after_the_snapshot_is_skipped_even_if_its_row_key_is_reused() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(2)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let pool = ws.pool().await;
    let pk: i64 = sqlx::query_scalar("SELECT pk FROM contacts WHERE id = 'c002'")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM contacts WHERE pk = ?")
        .bind(pk)
        .execute(&pool)
        .await
        .unwrap();
    // SQLite hands the largest row key out again: someone else now has it.
    sqlx::query(
        "INSERT INTO contacts (pk, id, name, phone, created_at, updated_at) \
         VALUES (?, 'intruder', 'Eve', '+51999999999', 0, 0)",
    )
    .bind(pk)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO contact_media (contact_pk, medium, opted_in_at) VALUES (?, 'sms', 0)")
        .bind(pk)
        .execute(&pool)
        .await
        .unwrap();
    ws.drain().await;
    assert_eq!(ws.status_of(run, "c001").await.0, "sent");
    let (status, reason, _) = ws.status_of(run, "c002").await;
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("skipped", Some("contact_deleted"))
    );
    let hits = rx.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].body["contact_id"], "c001");
}

/// Makes every write of a delivery's result fail while `faults` has a row (the claim,
/// which writes `sending`, still works).
async fn inject_record_faults(pool: &SqlitePool) {
    sqlx::query("CREATE TABLE faults (x INTEGER)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER fail_records BEFORE UPDATE ON deliveries \
         WHEN NEW.status <> 'sending' AND EXISTS (SELECT 1 FROM faults) \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO faults VALUES (1)")
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn results_the_store_refuses_for_a_while_are_kept_and_recorded_once_it_accepts_them() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(3)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let pool = ws.pool().await;
    inject_record_faults(&pool).await;
    let engine = ws.engine.clone();
    let batch = tokio::spawn(async move { engine.dispatch_once().await });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.hits().len(), 3, "the batch was sent");
    sqlx::query("DELETE FROM faults")
        .execute(&pool)
        .await
        .unwrap();
    let attempted = tokio::time::timeout(Duration::from_secs(10), batch)
        .await
        .expect("the batch records once the store accepts it")
        .unwrap()
        .expect("the batch succeeds");
    assert_eq!(attempted, 3);
    for c in ["c001", "c002", "c003"] {
        assert_eq!(ws.status_of(run, c).await, ("sent".into(), None, 1));
    }
    ws.drain().await;
    assert_eq!(
        ws.engine.run_status(run).await.unwrap().status,
        RunState::Finished
    );
    assert_eq!(rx.hits().len(), 3, "never sent twice");
}

#[tokio::test]
async fn a_claimed_batch_that_cannot_be_prepared_is_put_back_not_left_sending() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let ws = Workspace::new(&site(&rx.url(), "", ""), &sms_contacts(2)).await;
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let pool = ws.pool().await;
    // Reading the contacts fails after the claim.
    sqlx::query("ALTER TABLE contacts RENAME TO contacts_away")
        .execute(&pool)
        .await
        .unwrap();
    assert!(ws.engine.dispatch_once().await.is_err());
    for c in ["c001", "c002"] {
        let (status, _, attempts) = ws.status_of(run, c).await;
        assert_eq!((status.as_str(), attempts), ("pending", 0), "{c}");
    }
    assert!(rx.hits().is_empty());
    sqlx::query("ALTER TABLE contacts_away RENAME TO contacts")
        .execute(&pool)
        .await
        .unwrap();
    ws.drain().await;
    for c in ["c001", "c002"] {
        assert_eq!(ws.status_of(run, c).await.0, "sent");
    }
    assert_eq!(rx.hits().len(), 2);
}

#[tokio::test]
async fn a_channel_window_naming_no_zone_follows_each_campaigns_own_schedule_zone() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let channel_extra = "  send_window: {start: \"09:00\", end: \"17:00\"}\n";
    let mut text = site(&rx.url(), channel_extra, "");
    let second = text[text
        .find("---\napiVersion: herald/v1\nkind: Campaign")
        .unwrap()..]
        .replace("name: promo", "name: promo-two");
    text = text.replace(
        "schedule: {now: true}",
        "schedule: {now: true, timezone: Asia/Tokyo}",
    );
    text.push_str(&second.replace(
        "schedule: {now: true}",
        "schedule: {now: true, timezone: Europe/Madrid}",
    ));
    let ws = Workspace::new(&text, &sms_contacts(1)).await;
    // 12:00 UTC: 21:00 in Tokyo (closed), 13:00 in Madrid (open).
    let tokyo = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    let madrid = ws
        .engine
        .start_run("promo-two", Trigger::Manual)
        .await
        .unwrap();
    ws.drain().await;
    assert_eq!(ws.status_of(madrid, "c001").await.0, "sent");
    assert_eq!(ws.status_of(tokyo, "c001").await.0, "pending");
    assert_eq!(rx.hits().len(), 1);
}

#[tokio::test]
async fn a_channel_that_cannot_be_built_at_first_is_rebuilt_later_and_fails_no_delivery() {
    let rx = Receiver::start(|_, _| Answer::Ok).await;
    let text = site(&rx.url(), "", "").replace("use: [gateway, mailbox]", "use: [mailbox]");
    let csv = "id,name,email,opted_in\nm1,Ana,a@example.com,email\nm2,Bea,b@example.com,email\n";
    let ws = Workspace::new(&text, csv).await;
    // The outbox's directory is a regular file for the first batch: the channel cannot be
    // built (opened).
    let blocker = ws.dir.path().join("site/out");
    std::fs::write(&blocker, "not a directory").unwrap();
    let run = ws.engine.start_run("promo", Trigger::Manual).await.unwrap();
    assert_eq!(ws.engine.dispatch_once().await.unwrap(), 0, "nothing sent");
    let rows = ws.rows(run).await;
    assert!(
        rows.iter()
            .filter(|r| r.1.is_some())
            .all(|r| r.2 == "retry" && r.4 == 0),
        "back to wait, no attempt spent: {rows:?}"
    );

    std::fs::remove_file(&blocker).unwrap();
    // Past the backoff (at most the initial 30 s, with full jitter).
    ws.clock.advance(Duration::from_secs(31));
    ws.drain().await;
    ws.engine.dispatch_once().await.unwrap(); // housekeeping finishes the run
    let status = ws.engine.run_status(run).await.unwrap();
    assert_eq!(status.status, RunState::Finished, "{status:?}");
    assert_eq!(status.counts[&Status::Sent], 2, "{status:?}");
    assert!(!status.counts.contains_key(&Status::Failed) || status.counts[&Status::Failed] == 0);
    let lines = std::fs::read_to_string(ws.dir.path().join("site/out/mail.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
}
