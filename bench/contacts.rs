//! Contacts import benchmark: `cargo bench --bench contacts`.
//!
//! Generates a realistic CSV (every column, five attributes; 1,000,000 rows, or
//! HERALD_BENCH_ROWS) in a temporary directory and times, median of 3 runs each (or
//! HERALD_BENCH_RUNS):
//! (a) herald's import into a fresh store, (b) a re-import of the same file (every row
//! unchanged), and (c) the baseline: a plain sqlx multi-row INSERT of the same rows into an
//! empty contacts table, without checks, tags or media. The ratio to (c) is the figure that
//! survives a noisy machine. Prints a markdown table.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use herald::contacts::{ImportOptions, import};
use herald::store::Store;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Arguments, AssertSqlSafe};

const ZONES: [(&str, &str, &str, &str); 6] = [
    ("America/Lima", "PE", "es-PE", "+51 9"),
    ("America/Sao_Paulo", "BR", "pt-BR", "+55 11 9"),
    ("Europe/Madrid", "ES", "es-ES", "+34 6"),
    ("America/New_York", "US", "en-US", "+1 212"),
    ("America/Mexico_City", "MX", "es-MX", "+52 55"),
    ("America/Bogota", "CO", "es-CO", "+57 3"),
];
const CITIES: [&str; 8] = [
    "Lima",
    "São Paulo",
    "Madrid",
    "New York",
    "Ciudad de México",
    "Bogotá",
    "Cusco",
    "Rio de Janeiro",
];
const TAGS: [&str; 6] = [
    "vip",
    "newsletter",
    "club-member",
    "wholesale",
    "staff",
    "qa",
];
const MEDIA: [&str; 4] = ["sms", "whatsapp", "telegram", "email"];

/// A small deterministic generator, so every run imports the same file.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn generate(path: &Path, rows: u64) {
    let file = std::fs::File::create(path).expect("create the CSV");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(
        out,
        "id,name,phone,email,telegram,locale,timezone,country,created_at,tags,opted_in,\
         opted_out,last_inbound_at,last_inbound_medium,city,orders,score,newsletter,vip_since"
    )
    .expect("write");
    let mut rng = Lcg(42);
    let mut line = String::with_capacity(512);
    for i in 0..rows {
        line.clear();
        let (zone, country, locale, prefix) = ZONES[rng.next(ZONES.len() as u64) as usize];
        let digits = 10_000_000 + rng.next(89_999_999);
        let telegram = if rng.next(4) == 0 {
            (100_000_000 + rng.next(899_999_999)).to_string()
        } else {
            String::new()
        };
        let tags: Vec<&str> = (0..rng.next(4))
            .map(|_| TAGS[rng.next(TAGS.len() as u64) as usize])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let first = rng.next(4) as usize;
        let opted_in: Vec<&str> = (0..1 + rng.next(3) as usize)
            .map(|k| MEDIA[(first + k) % 4])
            .collect();
        let opted_out = if rng.next(20) == 0 {
            MEDIA[(first + 3) % 4]
        } else {
            ""
        };
        let created = 1_600_000_000 + rng.next(160_000_000) as i64;
        let created = jiff::Timestamp::from_second(created).expect("in range");
        let (inbound_at, inbound_medium) = if rng.next(2) == 0 {
            let t = jiff::Timestamp::from_second(1_760_000_000 + rng.next(5_000_000) as i64)
                .expect("in range");
            (t.to_string(), opted_in[0])
        } else {
            (String::new(), "")
        };
        let vip_since = if rng.next(10) == 0 { "2025-06-01" } else { "" };
        write!(
            line,
            "c-{i},Contact {i},{prefix} {digits},contact{i}@example.com,{telegram},{locale},\
             {zone},{country},{created},{},{},{opted_out},{inbound_at},{inbound_medium},\
             {},{},{}.{},{},{vip_since}",
            tags.join(";"),
            opted_in.join(";"),
            CITIES[rng.next(CITIES.len() as u64) as usize],
            rng.next(50),
            rng.next(100),
            rng.next(100),
            rng.next(2) == 0,
        )
        .expect("format");
        line.push('\n');
        out.write_all(line.as_bytes()).expect("write");
    }
    out.flush().expect("flush");
}

async fn herald_import(store: &Store, csv: &Path) -> (Duration, u64) {
    let options = ImportOptions {
        now: jiff::Timestamp::now(),
        strict: false,
    };
    let input = std::fs::File::open(csv).expect("open the CSV");
    let start = Instant::now();
    let cpu = cpu_seconds();
    let report = import(store, input, options, None).await.expect("import");
    let elapsed = start.elapsed();
    if let (Some(a), Some(b)) = (cpu, cpu_seconds()) {
        eprintln!(
            "  herald import: {:.2} s wall, {:.2} s CPU",
            elapsed.as_secs_f64(),
            b - a
        );
    }
    assert_eq!(report.bad_rows, 0, "{:?}", report.issues.first());
    (elapsed, report.imported())
}

/// The floor: the same rows, read with the csv crate and inserted as they are, 500 per
/// statement, in one transaction, into an empty contacts table of a fresh store.
async fn baseline(db: &Path, csv: &Path) -> Duration {
    Store::open(db)
        .await
        .expect("create the store")
        .close()
        .await;
    let options = SqliteConnectOptions::from_str("sqlite:")
        .expect("options")
        .filename(db)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        // The store's own cache size, so that the floor is measured on equal terms.
        .pragma("cache_size", "-65536");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect");
    let start = Instant::now();
    let cpu = cpu_seconds();
    let mut reader = csv::Reader::from_path(csv).expect("open the CSV");
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
    let mut rows: Vec<csv::StringRecord> = Vec::with_capacity(500);
    let mut records = reader.records();
    loop {
        rows.clear();
        rows.extend(records.by_ref().take(500).map(|r| r.expect("a record")));
        if rows.is_empty() {
            break;
        }
        let group = "(?,?,?,?,?,?,?,?,?,?,'{}')";
        let sql = format!(
            "INSERT INTO contacts (id, name, phone, email, telegram, locale, timezone, country, \
             created_at, updated_at, attributes) VALUES {}",
            vec![group; rows.len()].join(",")
        );
        let mut args = SqliteArguments::default();
        for r in &rows {
            for k in 0..8 {
                args.add(r[k].to_string()).expect("bind");
            }
            args.add(r[8].to_string()).expect("bind");
            args.add(r[8].to_string()).expect("bind");
        }
        sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *tx)
            .await
            .expect("insert");
    }
    tx.commit().await.expect("commit");
    let elapsed = start.elapsed();
    if let (Some(a), Some(b)) = (cpu, cpu_seconds()) {
        eprintln!(
            "  baseline: {:.2} s wall, {:.2} s CPU",
            elapsed.as_secs_f64(),
            b - a
        );
    }
    pool.close().await;
    elapsed
}

/// CPU seconds (user + system, all threads) this process has used so far, from
/// /proc/self/stat on Linux: unlike wall time, it hardly moves when other processes compete
/// for the cores. `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // The kernel's USER_HZ is 100 on every Linux platform we run on.
    Some((utime + stime) / 100.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rows: u64 = std::env::var("HERALD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // Three runs for the median; fewer only to try something quickly.
    let runs: usize = std::env::var("HERALD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let csv = dir.path().join("contacts.csv");
    let t = Instant::now();
    generate(&csv, rows);
    let size = std::fs::metadata(&csv).expect("the CSV").len();
    eprintln!(
        "generated {rows} rows ({:.0} MB) in {:.1} s",
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let (mut first, mut again, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let db = dir.path().join(format!("herald-{run}.db"));
        let store = Store::open(&db).await.expect("open the store");
        let (a, n) = herald_import(&store, &csv).await;
        assert_eq!(n, rows);
        let (b, _) = herald_import(&store, &csv).await;
        store.close().await;
        let c = baseline(&dir.path().join(format!("baseline-{run}.db")), &csv).await;
        eprintln!(
            "run {}: import {:.2} s, re-import {:.2} s, baseline {:.2} s",
            run + 1,
            a.as_secs_f64(),
            b.as_secs_f64(),
            c.as_secs_f64()
        );
        first.push(a);
        again.push(b);
        floor.push(c);
    }
    let (a, b, c) = (median(first), median(again), median(floor));
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!("| {rows} rows, median of {runs} | time | rows/s | × baseline |");
    println!("|---|---:|---:|---:|");
    for (name, d) in [
        ("herald import into a fresh store", a),
        ("herald re-import (all unchanged)", b),
        ("baseline: plain multi-row INSERT", c),
    ] {
        println!(
            "| {name} | {:.2} s | {:.0} | {:.2} |",
            d.as_secs_f64(),
            rate(d),
            d.as_secs_f64() / c.as_secs_f64()
        );
    }
}
