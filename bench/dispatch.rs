//! Benchmark: the run engine's overhead. A campaign of N recipients (default 50,000;
//! `HERALD_BENCH_RECIPIENTS` to scale) goes through the webhook channel, with no rate
//! limit, to a minimal local HTTP sink; the baseline is a plain reqwest client sending the
//! same number of same-sized POSTs at the same concurrency (16, the webhook channel's
//! `max_in_flight` default) to the same sink.
//!
//! Run with `cargo bench --bench dispatch`. The sink runs in a child process (this binary
//! with `HERALD_BENCH_SINK=1`), so CPU time and peak RSS are herald's alone. Each of 3
//! rounds (`HERALD_BENCH_ROUNDS`) snapshots a new run and drains it with `Engine::run`, then runs the baseline;
//! the table shows medians. CPU µs per delivery come from getrusage (via
//! /proc/self/stat: user + system ticks); peak RSS is VmHWM, reset (clear_refs 5) before
//! the contacts are generated, so it covers snapshot and dispatch. Target (issue 4):
//! throughput ≥ 0.6 of the baseline; peak RSS < 100 MB and flat from 200k to 2M.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald::engine::{Engine, SystemClock, Trigger};
use herald::store::Store;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const CONCURRENCY: usize = 16;

fn main() {
    if std::env::var_os("HERALD_BENCH_SINK").is_some() {
        return sink();
    }
    let n: usize = std::env::var("HERALD_BENCH_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("HERALD_BENCH_SINK", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the sink");
    let rounds: usize = std::env::var("HERALD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().to_string();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench(n, rounds, &addr));
    stop(&mut child);
    print!("{result}");
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The sink: answers every request 200 with a tiny JSON body. Prints its address.
fn sink() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = axum::Router::new().fallback(|| async { "{\"id\":\"x\"}" });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

/// user + system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted after the `(comm)` field.
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
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

async fn bench(n: usize, rounds: usize, addr: &str) -> String {
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
             medium: sms\n  webhook: {{url: \"http://{addr}/send\"}}\n---\n\
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
    let engine = Engine::new(store.clone(), site.clone(), Arc::new(SystemClock));
    let reader = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&db).read_only(true))
        .await
        .unwrap();
    // A webhook body of the same size as herald's, for the baseline.
    let body = serde_json::json!({
        "type": "message", "delivery_id": 123456, "idempotency_key": "h1-19ac1e2f3a4-123456-1",
        "campaign": "bench", "run_id": 1, "channel": "sink", "medium": "sms", "to": "+51900123456",
        "contact_id": "c0123456", "content": {"medium": "sms", "text": "Hola Contact 123456: 30% OFF hoy. STOP para salir"},
        "test": false
    })
    .to_string();
    reset_peak_rss();

    let mut herald_rates = Vec::new();
    let mut plain_rates = Vec::new();
    let mut herald_cpu = Vec::new();
    let mut plain_cpu = Vec::new();
    let mut snapshots = Vec::new();
    let (mut snapshot_rss, mut dispatch_rss) = (0.0f64, 0.0f64);
    let base_rss = peak_rss_mb();
    for _ in 0..rounds {
        reset_peak_rss();
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        let run = engine.start_run("bench", Trigger::Manual).await.unwrap();
        snapshots.push(t0.elapsed());
        snapshot_rss = snapshot_rss.max(peak_rss_mb());
        reset_peak_rss();
        let t1 = Instant::now();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = {
            let engine = engine.clone();
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
                .fetch_one(&reader)
                .await
                .unwrap();
            if status == "finished" {
                break;
            }
        }
        let elapsed = t1.elapsed();
        let _ = stop.send(());
        worker.await.unwrap().unwrap();
        dispatch_rss = dispatch_rss.max(peak_rss_mb());
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deliveries WHERE run_id = ? AND status = 'sent'",
        )
        .bind(run)
        .fetch_one(&reader)
        .await
        .unwrap();
        assert_eq!(sent as usize, n, "every delivery sent");
        herald_rates.push(n as f64 / elapsed.as_secs_f64());
        herald_cpu.push((cpu_time() - cpu0).as_secs_f64() * 1e6 / n as f64);

        let cpu0 = cpu_time();
        let t0 = Instant::now();
        plain(n, addr, &body).await;
        plain_rates.push(n as f64 / t0.elapsed().as_secs_f64());
        plain_cpu.push((cpu_time() - cpu0).as_secs_f64() * 1e6 / n as f64);
    }
    let ratios: Vec<f64> = herald_rates
        .iter()
        .zip(&plain_rates)
        .map(|(h, p)| h / p)
        .collect();
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let mut snap: Vec<f64> = snapshots.iter().map(|d| d.as_secs_f64()).collect();
    snap.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "recipients: {n}, concurrency {CONCURRENCY}, rounds {rounds} (medians)\n\n\
         | | deliveries/s | CPU µs/delivery (incl. snapshot) |\n|---|---|---|\n\
         | herald (webhook channel) | {:.0} | {:.1} |\n\
         | plain reqwest client | {:.0} | {:.1} |\n\n\
         ratio herald / plain: {:.2} (per round: {})\n\
         snapshot: {:.2} s median\n\
         RSS after setup: {base_rss:.1} MB; peak RSS during snapshot: {snapshot_rss:.1} MB, \
         during dispatch: {dispatch_rss:.1} MB\n",
        median(&herald_rates),
        median(&herald_cpu),
        median(&plain_rates),
        median(&plain_cpu),
        median(&ratios),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        snap[snap.len() / 2],
    )
}

/// The baseline: `n` POSTs of `body`, `CONCURRENCY` at a time, one pooled client.
async fn plain(n: usize, addr: &str, body: &str) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("http://{addr}/send");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, next, url, body) =
            (client.clone(), next.clone(), url.clone(), body.to_string());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", "k")
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
}

/// `n` contacts opted in to sms, generated inside SQLite.
async fn fill_contacts(db: &std::path::Path, n: usize) {
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
