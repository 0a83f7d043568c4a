//! Benchmark: the run engine against a plain HTTP client, on one machine, in one run.
//!
//! Run with `cargo bench --bench dispatch`; it prints one table with three sections:
//!
//! - **overhead**: a campaign of 200,000 recipients (`HERALD_BENCH_RECIPIENTS`) with no rate
//!   limit goes through the webhook channel to a minimal local HTTP sink; in the same round
//!   a plain reqwest client sends as many requests, with the same body bytes and headers, at
//!   the same concurrency (16, the webhook channel's `max_in_flight` default) to the same
//!   sink: the ceiling. 5 rounds (`HERALD_BENCH_ROUNDS`), medians. Target: herald / plain
//!   at least 0.6.
//! - **latency**: the same against a second sink that answers each request after 20 ms;
//!   3 rounds of 4,000 recipients (`HERALD_BENCH_LATENCY_RECIPIENTS`). Target: at least
//!   0.9 of concurrency / latency = 16 / 0.020 s = 800 deliveries/s.
//! - **scale**: peak RSS of a process that only snapshots and dispatches a campaign of
//!   200,000 and of 2,000,000 recipients (`HERALD_BENCH_SCALE=200000,2000000`), one round
//!   each. Target: under 100 MB and flat.
//!
//! `HERALD_BENCH_SECTIONS=overhead,latency,scale` picks sections (profiling one, say).
//!
//! The sinks run in child processes (this binary with `HERALD_BENCH_ROLE=sink`, one tokio
//! worker), so the CPU figures are herald's (or the plain client's) alone; they still take
//! CPU from the same cores, as a real receiver would not. CPU comes from /proc/self/stat
//! (user + system), split by thread name: tokio workers (HTTP, rendering, decoding) and
//! sqlx's SQLite worker threads (the statements themselves). Peak RSS is VmHWM, reset
//! (`clear_refs` 5) before each measured phase; the scale section runs each size in a
//! fresh child process (`HERALD_BENCH_ROLE=scale`), so memory left over from other
//! sections cannot show up in its figures.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald::channels::webhook::{DEFAULT_MAX_IN_FLIGHT, WebhookChannel, WebhookConfig};
use herald::engine::{Engine, SystemClock, Trigger};
use herald::message::{Content, OutboundMessage, SmsMessage};
use herald::spec::channel::Medium;
use herald::store::Store;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// The webhook channel's default `max_in_flight`, which the bench's channel keeps.
const CONCURRENCY: usize = DEFAULT_MAX_IN_FLIGHT;
/// How long the latency section's sink waits before answering.
const LATENCY: Duration = Duration::from_millis(20);
const ROLE: &str = "HERALD_BENCH_ROLE";

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("sink") => sink(),
        Ok("scale") => scale_child(),
        _ => orchestrate(),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn orchestrate() {
    let recipients: usize = env_or("HERALD_BENCH_RECIPIENTS", 200_000);
    let rounds: usize = env_or::<usize>("HERALD_BENCH_ROUNDS", 5).max(1);
    let latency_recipients: usize = env_or("HERALD_BENCH_LATENCY_RECIPIENTS", 4_000);
    let sizes: Vec<usize> = std::env::var("HERALD_BENCH_SCALE")
        .unwrap_or_else(|_| "200000,2000000".into())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect();
    let sections =
        std::env::var("HERALD_BENCH_SECTIONS").unwrap_or_else(|_| "overhead,latency,scale".into());
    let want = |s: &str| sections.split(',').any(|x| x.trim() == s);

    let mut fast = Sink::start(Duration::ZERO);
    let mut slow = Sink::start(LATENCY);
    let mut table = Table::default();
    let rt = runtime();
    if want("overhead") {
        rt.block_on(overhead(recipients, rounds, &fast, &mut table));
    }
    if want("latency") {
        rt.block_on(latency(latency_recipients, 3, &slow, &mut table));
    }
    if want("scale") {
        scale(&sizes, &fast, &mut table);
    }
    fast.stop();
    slow.stop();
    print!("{}", table.render());
}

// ---------------------------------------------------------------------------------------
// The sink.

/// A sink child process: its address and pid.
struct Sink {
    child: Child,
    addr: String,
}

impl Sink {
    fn start(delay: Duration) -> Sink {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, "sink")
            .env("HERALD_BENCH_SINK_DELAY_MS", delay.as_millis().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Sink {
            child,
            addr: line.trim().to_string(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/send", self.addr)
    }

    /// The sink's CPU time so far.
    fn cpu(&self) -> Duration {
        Cpu::of_process(self.child.id())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Answers every request 200 with a tiny JSON body, after `HERALD_BENCH_SINK_DELAY_MS`.
/// Prints its address on the first line of stdout.
fn sink() {
    let delay = Duration::from_millis(env_or("HERALD_BENCH_SINK_DELAY_MS", 0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let app = axum::Router::new().fallback(move || async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            "{\"id\":\"x\"}"
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// CPU time and memory.

/// CPU time (user + system) of this process, split by thread name.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    total: Duration,
    tokio: Duration,
    sqlite: Duration,
}

impl Cpu {
    fn now() -> Cpu {
        let mut cpu = Cpu {
            total: stat_time(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default()),
            ..Cpu::default()
        };
        for task in std::fs::read_dir("/proc/self/task").into_iter().flatten() {
            let Ok(task) = task else { continue };
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let t = stat_time(&stat);
            if stat.contains("(tokio-rt-worker)") {
                cpu.tokio += t;
            } else if stat.contains("(sqlx-sqlite-wor") {
                cpu.sqlite += t;
            }
        }
        cpu
    }

    fn of_process(pid: u32) -> Duration {
        stat_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            total: self.total.saturating_sub(earlier.total),
            tokio: self.tokio.saturating_sub(earlier.tokio),
            sqlite: self.sqlite.saturating_sub(earlier.sqlite),
        }
    }
}

/// utime + stime of a `stat` file (fields 14 and 15, counted after the `(comm)` field),
/// in clock ticks of 10 ms.
fn stat_time(stat: &str) -> Duration {
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn per_delivery_us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------
// A store with one campaign, and draining its runs.

/// A temporary store of `n` contacts opted in to sms, with one campaign (`bench`) that sends
/// to all of them through a webhook channel pointed at `url`, no rate limit.
struct Site {
    _dir: tempfile::TempDir,
    engine: Engine,
    /// A read-only connection of the bench's own, to watch the run.
    reader: SqlitePool,
}

impl Site {
    async fn new(n: usize, url: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        std::fs::create_dir_all(&site).unwrap();
        let db = dir.path().join("bench.db");
        let store = Store::open(&db).await.unwrap();
        fill_contacts(&db, n).await;
        std::fs::write(
            site.join("all.yaml"),
            format!(
                "apiVersion: herald/v1\nkind: Channel\nmetadata: {{name: sink}}\nspec:\n  type: webhook\n  \
                 medium: sms\n  webhook: {{url: \"{url}\"}}\n---\n\
                 apiVersion: herald/v1\nkind: Template\nmetadata: {{name: hello}}\nspec:\n  \
                 sms: {{text: \"Hola {{{{ contact.name }}}}: 30% OFF hoy. STOP para salir\"}}\n---\n\
                 apiVersion: herald/v1\nkind: Campaign\nmetadata: {{name: bench}}\nspec:\n  \
                 audience: {{segment: all-contacts}}\n  channels: {{strategy: specific, use: [sink]}}\n  \
                 template: hello\n  schedule: {{now: true}}\n  delivery: {{max_duration: 7d}}\n"
            ),
        )
        .unwrap();
        let now = jiff::Timestamp::now();
        let mut prepared = herald::reconcile::prepare(&site, Some(&store), &db, now)
            .await
            .unwrap();
        herald::reconcile::apply(&mut prepared, &store, &site, now)
            .await
            .unwrap();
        let engine = Engine::new(store, site, Arc::new(SystemClock));
        let reader = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::new().filename(&db).read_only(true))
            .await
            .unwrap();
        Site {
            _dir: dir,
            engine,
            reader,
        }
    }

    /// Starts a run of the campaign (the snapshot); returns its id.
    async fn snapshot(&self) -> i64 {
        self.engine
            .start_run("bench", Trigger::Manual)
            .await
            .unwrap()
    }

    /// Runs the engine until run `run` finishes; checks every delivery was sent.
    async fn drain(&self, run: i64, n: usize) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = {
            let engine = self.engine.clone();
            tokio::spawn(async move {
                engine
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            })
        };
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = ?")
                .bind(run)
                .fetch_one(&self.reader)
                .await
                .unwrap();
            if status == "finished" {
                break;
            }
        }
        let _ = stop.send(());
        worker.await.unwrap().unwrap();
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deliveries WHERE run_id = ? AND status = 'sent'",
        )
        .bind(run)
        .fetch_one(&self.reader)
        .await
        .unwrap();
        assert_eq!(sent as usize, n, "every delivery sent");
    }
}

/// `n` contacts opted in to sms, generated inside SQLite.
async fn fill_contacts(db: &Path, n: usize) {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(db)
                .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    sqlx::query(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?) \
         INSERT INTO contacts (pk, id, name, phone, created_at, updated_at) \
         SELECT i, printf('c%07d', i), 'Contact ' || i, printf('+519%08d', i), ?, ? FROM k",
    )
    .bind(n as i64)
    .bind(now)
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO contact_media (contact_pk, medium, opted_in_at, opted_in_source) \
         SELECT pk, 'sms', ?, 'bench' FROM contacts",
    )
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

// ---------------------------------------------------------------------------------------
// The baseline.

/// What herald POSTs for a typical delivery of the bench's campaign, byte for byte (the
/// webhook channel's own encoder), and its idempotency key.
fn typical_request(url: &str) -> (Vec<u8>, String) {
    let key = format!(
        "h1-{:x}-{}-1",
        jiff::Timestamp::now().as_millisecond(),
        123_456
    );
    let message = OutboundMessage {
        delivery_id: 123_456,
        idempotency_key: key.clone(),
        run_id: 1,
        campaign: "bench".into(),
        channel: "sink".into(),
        contact_id: "c0123456".into(),
        to: "+51900123456".into(),
        content: Content::Sms(SmsMessage {
            text: "Hola Contact 123456: 30% OFF hoy. STOP para salir".into(),
            media_url: None,
        }),
        test: false,
    };
    let channel = WebhookChannel::new("sink", Medium::Sms, WebhookConfig::new(url)).unwrap();
    (channel.body(&message).unwrap(), key)
}

/// The ceiling: `n` POSTs of `body` with the headers herald sends (content type,
/// idempotency key, user agent), `CONCURRENCY` at a time, through one pooled client built
/// as the webhook channel builds its own. Returns deliveries/s.
async fn plain(n: usize, url: &str) -> f64 {
    let (body, key) = typical_request(url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap();
    let url = reqwest::Url::parse(url).unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, next, url, body, key) = (
            client.clone(),
            next.clone(),
            url.clone(),
            body.clone(),
            key.clone(),
        );
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let response = client
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .header("idempotency-key", key.as_str())
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                let _ = response.bytes().await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    n as f64 / t0.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// The sections.

async fn overhead(n: usize, rounds: usize, sink: &Sink, table: &mut Table) {
    let site = Site::new(n, &sink.url()).await;
    let (mut herald_rate, mut plain_rate, mut ratio) = (vec![], vec![], vec![]);
    let (mut cpu_dispatch, mut cpu_tokio, mut cpu_sqlite) = (vec![], vec![], vec![]);
    let (mut cpu_snapshot, mut cpu_plain, mut sink_herald, mut sink_plain) =
        (vec![], vec![], vec![], vec![]);
    let (mut snapshot_s, mut rss) = (vec![], 0.0f64);
    for _ in 0..rounds {
        reset_peak_rss();
        let (cpu0, t0) = (Cpu::now(), Instant::now());
        let run = site.snapshot().await;
        snapshot_s.push(t0.elapsed().as_secs_f64());
        cpu_snapshot.push(per_delivery_us(Cpu::now().since(cpu0).total, n));

        let (cpu0, sink0, t0) = (Cpu::now(), sink.cpu(), Instant::now());
        site.drain(run, n).await;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        let cpu = Cpu::now().since(cpu0);
        sink_herald.push(per_delivery_us(sink.cpu() - sink0, n));
        rss = rss.max(peak_rss_mb());
        herald_rate.push(rate);
        cpu_dispatch.push(per_delivery_us(cpu.total, n));
        cpu_tokio.push(per_delivery_us(cpu.tokio, n));
        cpu_sqlite.push(per_delivery_us(cpu.sqlite, n));

        let (cpu0, sink0) = (Cpu::now(), sink.cpu());
        let base = plain(n, &sink.url()).await;
        cpu_plain.push(per_delivery_us(Cpu::now().since(cpu0).total, n));
        sink_plain.push(per_delivery_us(sink.cpu() - sink0, n));
        plain_rate.push(base);
        ratio.push(rate / base);
        eprintln!(
            "overhead round: herald {rate:.0}/s, plain {base:.0}/s, ratio {:.2}",
            rate / base
        );
    }
    let per_round = ratio
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    table.section(format!(
        "overhead: {n} recipients, no rate limit, concurrency {CONCURRENCY}, median of {rounds} rounds"
    ));
    table.row(
        "herald deliveries/s (webhook channel)",
        format!("{:.0}", median(&herald_rate)),
        "",
    );
    table.row(
        "plain reqwest deliveries/s (the ceiling)",
        format!("{:.0}", median(&plain_rate)),
        "",
    );
    table.row(
        "ratio herald / plain",
        format!("{:.2} (rounds: {per_round})", median(&ratio)),
        "≥ 0.6",
    );
    table.row(
        "herald CPU µs/delivery, dispatch (tokio workers + SQLite threads)",
        format!(
            "{:.1} ({:.1} + {:.1})",
            median(&cpu_dispatch),
            median(&cpu_tokio),
            median(&cpu_sqlite)
        ),
        "",
    );
    table.row(
        "herald CPU µs/delivery, snapshot",
        format!(
            "{:.1} ({:.2} s per snapshot)",
            median(&cpu_snapshot),
            median(&snapshot_s)
        ),
        "",
    );
    table.row(
        "plain CPU µs/request",
        format!("{:.1}", median(&cpu_plain)),
        "",
    );
    table.row(
        "sink CPU µs/request, under herald / under plain",
        format!("{:.1} / {:.1}", median(&sink_herald), median(&sink_plain)),
        "",
    );
    table.row(
        "herald peak RSS (snapshot + dispatch, all rounds)",
        format!("{rss:.1} MB"),
        "< 100 MB",
    );
}

async fn latency(n: usize, rounds: usize, sink: &Sink, table: &mut Table) {
    let site = Site::new(n, &sink.url()).await;
    let ideal = CONCURRENCY as f64 / LATENCY.as_secs_f64();
    let (mut herald_rate, mut plain_rate) = (vec![], vec![]);
    for _ in 0..rounds {
        let run = site.snapshot().await;
        let t0 = Instant::now();
        site.drain(run, n).await;
        herald_rate.push(n as f64 / t0.elapsed().as_secs_f64());
        plain_rate.push(plain(n, &sink.url()).await);
    }
    let rates = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    table.section(format!(
        "latency: the sink answers after {} ms; {n} recipients, median of {rounds} rounds",
        LATENCY.as_millis()
    ));
    table.row(
        "herald deliveries/s",
        format!(
            "{:.0} (rounds: {})",
            median(&herald_rate),
            rates(&herald_rate)
        ),
        "",
    );
    table.row(
        "plain reqwest deliveries/s",
        format!(
            "{:.0} (rounds: {})",
            median(&plain_rate),
            rates(&plain_rate)
        ),
        "",
    );
    table.row(
        "herald / (concurrency / latency)",
        format!("{:.3} of {ideal:.0}/s", median(&herald_rate) / ideal),
        "≥ 0.9",
    );
}

/// Each size in a fresh process (see the module docs).
fn scale(sizes: &[usize], sink: &Sink, table: &mut Table) {
    table.section(
        "scale: one process per size snapshots and dispatches one run (1 round each)".into(),
    );
    for &n in sizes {
        let output = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, "scale")
            .env("HERALD_BENCH_SCALE_N", n.to_string())
            .env("HERALD_BENCH_SINK_URL", sink.url())
            .stderr(Stdio::inherit())
            .output()
            .expect("run the scale child");
        assert!(output.status.success(), "the scale child failed");
        let text = String::from_utf8_lossy(&output.stdout);
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [setup_rss, snapshot_rss, dispatch_rss, snapshot_s, rate] = v[..] else {
            panic!("unexpected output from the scale child: {text}");
        };
        table.row(
            &format!("{n} recipients: peak RSS snapshot / dispatch"),
            format!(
                "{snapshot_rss:.1} / {dispatch_rss:.1} MB (after setup {setup_rss:.1} MB; \
                 snapshot {snapshot_s:.1} s, {rate:.0} deliveries/s)"
            ),
            "< 100 MB, flat",
        );
    }
}

/// The scale child: prints "setup_rss snapshot_rss dispatch_rss snapshot_s rate".
fn scale_child() {
    let n: usize = env_or("HERALD_BENCH_SCALE_N", 200_000);
    let url = std::env::var("HERALD_BENCH_SINK_URL").expect("HERALD_BENCH_SINK_URL");
    let out = runtime().block_on(async move {
        let site = Site::new(n, &url).await;
        let setup_rss = peak_rss_mb();
        reset_peak_rss();
        let t0 = Instant::now();
        let run = site.snapshot().await;
        let snapshot_s = t0.elapsed().as_secs_f64();
        let snapshot_rss = peak_rss_mb();
        reset_peak_rss();
        let t0 = Instant::now();
        site.drain(run, n).await;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        let dispatch_rss = peak_rss_mb();
        format!("{setup_rss} {snapshot_rss} {dispatch_rss} {snapshot_s} {rate}")
    });
    println!("{out}");
}

// ---------------------------------------------------------------------------------------
// The table.

#[derive(Default)]
struct Table {
    rows: Vec<[String; 3]>,
}

impl Table {
    fn section(&mut self, title: String) {
        self.rows
            .push([format!("**{title}**"), String::new(), String::new()]);
    }

    fn row(&mut self, what: &str, value: String, target: &str) {
        self.rows
            .push([what.to_string(), value, target.to_string()]);
    }

    fn render(&self) -> String {
        let mut out = String::from("| measure | value | target |\n|---|---|---|\n");
        for [a, b, c] in &self.rows {
            out.push_str(&format!("| {a} | {b} | {c} |\n"));
        }
        out
    }
}
