//! Per-delivery reports through the real binary: a run's deliveries (written straight into
//! the store, so every status and channel is present in known numbers) listed with
//! filters and cursors, and exported as CSV and XLSX.
//!
//! The XLSX is read back with python3's zipfile module (no zip crate among our
//! dependencies). An ignored test exports a million rows while sampling the server's peak
//! memory: `cargo test --release --test http_reports -- --ignored --nocapture`.

#[path = "support/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::Value;
use server::{Herald, Scratch, VIEWER};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const SITE: &str = r#"
apiVersion: herald/v1
kind: Channel
metadata: {name: sms-main}
spec:
  type: outbox
  medium: sms
  outbox: {path: outbox/sms.jsonl}
---
apiVersion: herald/v1
kind: Channel
metadata: {name: email-main}
spec:
  type: outbox
  medium: email
  outbox: {path: outbox/email.jsonl}
---
apiVersion: herald/v1
kind: Segment
metadata: {name: vip}
spec:
  match:
    all:
      - {field: tags, op: contains, value: vip}
---
apiVersion: herald/v1
kind: Template
metadata: {name: hello}
spec:
  sms: {text: "Hola {{ contact.name | default('cliente') }}"}
  email: {subject: "Hola", text: "Hola {{ contact.name | default('cliente') }}"}
---
apiVersion: herald/v1
kind: Campaign
metadata: {name: promo}
spec:
  enabled: false
  audience: {segment: vip}
  channels: {strategy: fallback, use: [sms-main, email-main]}
  template: hello
  schedule: {now: true}
"#;

/// 2026-01-01T00:00:00Z, the first delivery's creation time.
const T0: i64 = 1_767_225_600_000;

/// Delivery `i` (from 1) of a generated run, as [`insert_run`] writes it.
#[derive(Clone, Debug, PartialEq)]
struct Expected {
    contact_id: String,
    channel: Option<&'static str>,
    address: Option<String>,
    status: &'static str,
    reason: Option<&'static str>,
    provider_message_id: Option<String>,
}

fn expected(i: u64) -> Expected {
    let excluded = i.is_multiple_of(10);
    let channel = if excluded {
        None
    } else if i.is_multiple_of(3) {
        Some("email-main")
    } else {
        Some("sms-main")
    };
    let status = if excluded {
        "excluded"
    } else if i.is_multiple_of(7) {
        "failed"
    } else if i.is_multiple_of(2) {
        "sent"
    } else {
        "delivered"
    };
    Expected {
        contact_id: format!("c-{i}"),
        address: channel.map(|c| {
            if c == "email-main" {
                format!("c{i}@example.com")
            } else {
                format!("+5198{i:07}")
            }
        }),
        channel,
        status,
        reason: match status {
            "excluded" => Some("no_consent"),
            "failed" => Some("provider said \"no\", twice"),
            _ => None,
        },
        provider_message_id: matches!(status, "sent" | "delivered").then(|| format!("pm-{i}")),
    }
}

/// Writes a finished run of `n` deliveries of campaign `promo` straight into the store
/// (the server is running; SQLite in WAL mode lets both write) and returns its id.
async fn insert_run(db: &Path, n: u64) -> i64 {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(db)
                .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO runs (campaign, campaign_spec_id, revision_id, trigger, status, \
         created_at, started_at, finished_at, total) \
         VALUES ('promo', (SELECT id FROM specs WHERE kind = 'Campaign' AND name = 'promo' \
         AND retired_in IS NULL), (SELECT max(id) FROM revisions WHERE status = 'applied'), \
         'manual', 'finished', ?1, ?1, ?1, ?2) RETURNING id",
    )
    .bind(T0)
    .bind(n as i64)
    .fetch_one(&pool)
    .await
    .unwrap();
    // The same rules as `expected`, in SQL.
    sqlx::query(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?2), \
         rows AS (SELECT i, i % 10 = 0 AS x, \
           CASE WHEN i % 10 = 0 THEN NULL WHEN i % 3 = 0 THEN 'email-main' ELSE 'sms-main' END AS ch, \
           CASE WHEN i % 10 = 0 THEN 'excluded' WHEN i % 7 = 0 THEN 'failed' \
                WHEN i % 2 = 0 THEN 'sent' ELSE 'delivered' END AS st FROM seq) \
         INSERT INTO deliveries (run_id, contact_pk, contact_id, channel, address, status, \
           reason, attempts, idempotency_key, provider_message_id, created_at, updated_at, \
           sent_at, delivered_at) \
         SELECT ?1, i, 'c-' || i, ch, \
           CASE ch WHEN 'email-main' THEN 'c' || i || '@example.com' \
                   WHEN 'sms-main' THEN '+5198' || printf('%07d', i) END, \
           st, \
           CASE st WHEN 'excluded' THEN 'no_consent' WHEN 'failed' THEN 'provider said \"no\", twice' END, \
           CASE WHEN x THEN 0 ELSE 1 + i % 3 END, \
           'report-test-' || ?1 || '-' || i, \
           CASE WHEN st IN ('sent', 'delivered') THEN 'pm-' || i END, \
           ?3 + i, ?3 + i + 5000, \
           CASE WHEN st IN ('sent', 'delivered') THEN ?3 + i + 1000 END, \
           CASE WHEN st = 'delivered' THEN ?3 + i + 2000 END \
         FROM rows",
    )
    .bind(run)
    .bind(n as i64)
    .bind(T0)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    run
}

struct Site {
    scratch: Scratch,
    herald: Herald,
    client: reqwest::Client,
}

impl Site {
    fn start() -> Site {
        let scratch = Scratch::new();
        scratch.write_site("site.yaml", SITE);
        let herald = scratch.start();
        Site {
            scratch,
            herald,
            client: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.herald.url(path))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Every delivery the filter `query` selects, page by page with `limit`.
    async fn all_pages(&self, run: i64, query: &str, limit: u32) -> (Vec<Value>, usize) {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v1/runs/{run}/deliveries?limit={limit}{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.json(&path).await;
            assert_eq!(status, 200, "{page}");
            pages += 1;
            let rows = page["deliveries"].as_array().unwrap();
            assert!(rows.len() <= limit as usize);
            out.extend(rows.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        (out, pages)
    }
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn deliveries_are_filtered_and_every_page_visits_each_row_once() {
    let site = Site::start();
    const N: u64 = 2_345;
    let run = insert_run(&site.herald.db, N).await;

    let (all, pages) = site.all_pages(run, "", 1000).await;
    assert_eq!(pages, 3);
    assert_eq!(all.len() as u64, N);
    let mut ids: Vec<i64> = all.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending ids");
    ids.dedup();
    assert_eq!(ids.len() as u64, N);
    let contacts: Vec<&str> = all
        .iter()
        .map(|d| d["contact_id"].as_str().unwrap())
        .collect();
    let wanted: Vec<String> = (1..=N).map(|i| format!("c-{i}")).collect();
    assert_eq!(contacts, wanted);

    // One delivery, field by field.
    let d = &all[6]; // c-7: failed on sms
    assert_eq!(d["status"], "failed");
    assert_eq!(d["channel"], "sms-main");
    assert_eq!(d["medium"], "sms");
    assert_eq!(d["address"], "+51980000007");
    assert_eq!(d["reason"], "provider said \"no\", twice");
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["created_at"], "2026-01-01T00:00:00.007Z");
    assert_eq!(d["sent_at"], Value::Null);
    let excluded = &all[9]; // c-10
    assert_eq!(excluded["status"], "excluded");
    assert_eq!(excluded["channel"], Value::Null);
    assert_eq!(excluded["reason"], "no_consent");

    // A page size that does not divide the total: still every row once.
    let (odd, _) = site.all_pages(run, "", 333).await;
    assert_eq!(odd, all);

    let count = |f: &dyn Fn(&Expected) -> bool| (1..=N).map(expected).filter(|e| f(e)).count();
    let cases: [(&str, usize); 6] = [
        ("&status=sent", count(&|e| e.status == "sent")),
        ("&status=excluded", count(&|e| e.status == "excluded")),
        (
            "&channel=email-main",
            count(&|e| e.channel == Some("email-main")),
        ),
        ("&medium=sms", count(&|e| e.channel == Some("sms-main"))),
        (
            "&status=failed&channel=sms-main",
            count(&|e| e.status == "failed" && e.channel == Some("sms-main")),
        ),
        ("&status=read", 0),
    ];
    for (query, n) in cases {
        let (rows, _) = site.all_pages(run, query, 250).await;
        assert_eq!(rows.len(), n, "{query}");
        let by_contact: BTreeMap<&str, &Value> = all
            .iter()
            .map(|d| (d["contact_id"].as_str().unwrap(), d))
            .collect();
        for row in &rows {
            // Each filtered row is the same as in the unfiltered list.
            assert_eq!(
                &row,
                by_contact.get(row["contact_id"].as_str().unwrap()).unwrap()
            );
        }
    }

    // Bad parameters are named; an unknown run is 404.
    for (query, field) in [
        ("status=shipped", "status: "),
        ("channel=sms", "channel: "),
        ("medium=fax", "medium: "),
        ("channel=sms-main&medium=email", "medium: "),
        ("limit=0", "limit: "),
        ("limit=1001", "limit: "),
        ("cursor=not-a-cursor", "cursor: "),
    ] {
        let (status, body) = site
            .json(&format!("/v1/runs/{run}/deliveries?{query}"))
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(message(&body).starts_with(field), "{query}: {body}");
    }
    let (_, body) = site
        .json(&format!("/v1/runs/{run}/deliveries?channel=sms"))
        .await;
    assert!(message(&body).contains("medium=sms"), "{body}");
    let (status, _) = site.json("/v1/runs/999999/deliveries").await;
    assert_eq!(status, 404);
    let (status, _) = site.json("/v1/runs/999999/report.csv").await;
    assert_eq!(status, 404);
}

/// The first rows of the first worksheet of an XLSX file, as text cells (numbers as
/// written), read with python3; plus the number of `<row` elements in it and the archive's
/// names.
fn read_xlsx(path: &Path, first_rows: usize) -> (usize, Vec<Vec<String>>, Vec<String>) {
    let (rows, first, names, _) = read_xlsx_with(path, first_rows, false);
    (rows, first, names)
}

/// The number of `<row` elements in each worksheet, in sheet order.
fn xlsx_sheet_rows(path: &Path) -> Vec<usize> {
    read_xlsx_with(path, 0, true).3
}

fn read_xlsx_with(
    path: &Path,
    first_rows: usize,
    every_sheet: bool,
) -> (usize, Vec<Vec<String>>, Vec<String>, Vec<usize>) {
    let script = r#"
import html, json, re, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
xml = z.read('xl/worksheets/sheet1.xml').decode('utf-8')
rows = []
for m in re.finditer(r'<row [^>]*>(.*?)</row>', xml):
    if len(rows) >= int(sys.argv[2]):
        break
    cells = []
    for c in re.finditer(r'<c r="([A-Z]+)\d+"[^>]*?(?:/>|>(.*?)</c>)', m.group(1)):
        inner = c.group(2) or ''
        t = re.search(r'<t[^>]*>(.*?)</t>', inner) or re.search(r'<v>(.*?)</v>', inner)
        cells.append([c.group(1), html.unescape(t.group(1)) if t else ''])
    rows.append(cells)
sheets = sorted(n for n in z.namelist() if re.fullmatch(r'xl/worksheets/sheet\d+\.xml', n))
counts = [z.read(n).decode('utf-8').count('<row ') for n in sheets] if sys.argv[3] == 'all' else []
print(json.dumps({"rows": xml.count('<row '), "first": rows, "names": z.namelist(), "counts": counts}))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .arg(first_rows.to_string())
        .arg(if every_sheet { "all" } else { "first" })
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["first"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            // Cells by column letter, blanks where a cell is absent.
            let mut cells = vec![String::new(); 14];
            for c in r.as_array().unwrap() {
                let col = c[0].as_str().unwrap().as_bytes()[0] - b'A';
                cells[col as usize] = c[1].as_str().unwrap().to_string();
            }
            cells
        })
        .collect();
    let names = v["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let counts = v["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap() as usize)
        .collect();
    (v["rows"].as_u64().unwrap() as usize, rows, names, counts)
}

/// Downloads `path` into `file`, streaming; returns the response's head.
async fn download(site: &Site, path: &str, file: &Path) -> reqwest::header::HeaderMap {
    let response = site.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    let headers = response.headers().clone();
    let mut out = std::fs::File::create(file).unwrap();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        std::io::Write::write_all(&mut out, &chunk.unwrap()).unwrap();
    }
    headers
}

#[tokio::test]
async fn reports_export_every_delivery_as_csv_and_xlsx() {
    let site = Site::start();
    const N: u64 = 20_000;
    let run = insert_run(&site.herald.db, N).await;

    let csv_file = site.scratch.path().join("report.csv");
    let head = download(&site, &format!("/v1/runs/{run}/report.csv"), &csv_file).await;
    assert_eq!(head["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        head["content-disposition"],
        format!("attachment; filename=\"run-{run}.csv\"").as_str()
    );
    let mut reader = csv::Reader::from_path(&csv_file).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "delivery_id",
            "contact_id",
            "channel",
            "medium",
            "address",
            "status",
            "attempts",
            "provider_message_id",
            "error",
            "created_at",
            "sent_at",
            "delivered_at",
            "read_at",
            "updated_at"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len() as u64, N);
    for (i, r) in records.iter().enumerate() {
        let e = expected(i as u64 + 1);
        assert_eq!(&r[1], e.contact_id);
        assert_eq!(&r[2], e.channel.unwrap_or(""));
        assert_eq!(&r[4], e.address.unwrap_or_default());
        assert_eq!(&r[5], e.status);
        assert_eq!(&r[7], e.provider_message_id.unwrap_or_default());
        assert_eq!(&r[8], e.reason.unwrap_or(""));
    }
    // c-14 failed on sms; the quotes in its reason survive the CSV.
    assert_eq!(&records[13][5], "failed");
    assert_eq!(&records[13][8], "provider said \"no\", twice");
    // c-4: sent on sms, with its times.
    assert_eq!(
        records[3].iter().skip(2).collect::<Vec<_>>(),
        [
            "sms-main",
            "sms",
            "+51980000004",
            "sent",
            "2",
            "pm-4",
            "",
            "2026-01-01T00:00:00.004Z",
            "2026-01-01T00:00:01.004Z",
            "",
            "",
            "2026-01-01T00:00:05.004Z"
        ]
    );

    // Filters apply to exports too.
    let filtered = site.scratch.path().join("failed.csv");
    download(
        &site,
        &format!("/v1/runs/{run}/report.csv?status=failed&medium=email"),
        &filtered,
    )
    .await;
    let n = csv::Reader::from_path(&filtered).unwrap().records().count();
    let want = (1..=N)
        .map(expected)
        .filter(|e| e.status == "failed" && e.channel == Some("email-main"))
        .count();
    assert_eq!(n, want);
    let bad = site
        .get(&format!("/v1/runs/{run}/report.xlsx?status=nope"))
        .await;
    assert_eq!(bad.status(), 422);

    let xlsx_file = site.scratch.path().join("report.xlsx");
    let head = download(&site, &format!("/v1/runs/{run}/report.xlsx"), &xlsx_file).await;
    assert_eq!(
        head["content-type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert_eq!(
        head["content-disposition"],
        format!("attachment; filename=\"run-{run}.xlsx\"").as_str()
    );
    let (rows, first, names) = read_xlsx(&xlsx_file, 15);
    assert!(
        names.contains(&"xl/worksheets/sheet1.xml".to_string()),
        "{names:?}"
    );
    assert_eq!(rows as u64, N + 1);
    assert_eq!(first[0][0], "delivery_id");
    assert_eq!(first[0][8], "error");
    // c-4 on row 5: strings as text (the phone stays text), attempts a number, times
    // Excel serial dates (2026-01-01 is day 46023).
    let c4 = &first[4];
    assert_eq!(c4[1..6], ["c-4", "sms-main", "sms", "+51980000004", "sent"]);
    assert_eq!(c4[6], "2");
    assert_eq!(c4[7], "pm-4");
    assert_eq!(c4[8], "");
    assert!(c4[9].starts_with("46023.0000000"), "{c4:?}");
    assert_eq!(c4[11], "");
    let c10 = &first[10];
    assert_eq!(c10[1], "c-10");
    assert_eq!(c10[5], "excluded");
    assert_eq!(c10[8], "no_consent");
    assert_eq!(c10[2], "");
    let c14 = &first[14];
    assert_eq!(c14[8], "provider said \"no\", twice");
    assert_eq!(site.herald.stop(), Some(0));
}

/// The peak resident memory (VmHWM, kB) of the `herald serve` process using `db`.
fn server_peak_kb(db: &Path) -> u64 {
    let needle = db.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("serve") && cmdline.contains(&needle) {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap();
            let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no herald serve process for {needle}");
}

#[tokio::test]
#[ignore = "millions of rows: minutes; run with --release --ignored --nocapture"]
async fn a_million_row_export_runs_in_constant_memory() {
    let site = Site::start();
    let sizes = [20_000u64, 1_000_000, 2_000_000];
    let mut runs = Vec::new();
    for n in sizes {
        runs.push((insert_run(&site.herald.db, n).await, n));
    }
    let before = server_peak_kb(&site.herald.db);
    println!("server VmHWM before the exports: {before} kB");
    let mut peaks = Vec::new();
    for (run, rows) in runs {
        for format in ["csv", "xlsx"] {
            let file = site.scratch.path().join(format!("run-{run}.{format}"));
            let started = Instant::now();
            download(&site, &format!("/v1/runs/{run}/report.{format}"), &file).await;
            let took = started.elapsed();
            let size = std::fs::metadata(&file).unwrap().len();
            let peak = server_peak_kb(&site.herald.db);
            if format == "csv" {
                let lines = csv::Reader::from_path(&file).unwrap().records().count();
                assert_eq!(lines as u64, rows);
            } else {
                // Past Excel's 1,048,576 rows a sheet, the report goes on in another sheet,
                // each with its header.
                let sheets = xlsx_sheet_rows(&file);
                assert!(sheets.iter().all(|n| *n <= 1_048_576), "{sheets:?}");
                let data: usize = sheets.iter().map(|n| n - 1).sum();
                assert_eq!(data as u64, rows, "{sheets:?}");
            }
            println!("{rows} rows as {format}: {size} bytes in {took:.1?}; server VmHWM {peak} kB");
            peaks.push(peak);
            std::fs::remove_file(&file).unwrap();
        }
    }
    // Twice the rows, no more memory: the peak after the 2,000,000-row exports stays within
    // a few MB of the one after the 1,000,000-row exports. (From 20,000 to 1,000,000 rows
    // the peak grows by the store's page caches filling up: 8 MiB per read connection.)
    let (one_million, two_million) = (peaks[3], peaks[5]);
    assert!(
        two_million < one_million + 8 * 1024,
        "peak grew from {one_million} kB to {two_million} kB"
    );
    assert!(two_million < 100 * 1024, "peak {two_million} kB");
}
