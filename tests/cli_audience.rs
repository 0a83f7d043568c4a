//! `herald audience` as CI runs it: the real binary over a directory and a store in a
//! temporary folder, a fixed `--now`, exact JSON and the text sentence.

use std::path::Path;

use assert_cmd::Command;
use herald::store::Store;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tempfile::TempDir;

const NOW: &str = "2026-06-01T00:00:00Z";

const REVISION: &str = "\
apiVersion: herald/v1
kind: Channel
metadata: {name: sms}
spec: {type: outbox, medium: sms, outbox: {path: out/sms.jsonl}}
---
apiVersion: herald/v1
kind: Channel
metadata: {name: mail}
spec: {type: outbox, medium: email, outbox: {path: out/mail.jsonl}}
---
apiVersion: herald/v1
kind: Template
metadata: {name: hello}
spec:
  sms: {text: Hello}
  email: {subject: Hello, text: Hello}
---
apiVersion: herald/v1
kind: Segment
metadata: {name: vip}
spec:
  match: {field: tags, op: contains, value: vip}
---
apiVersion: herald/v1
kind: Segment
metadata: {name: staff}
spec:
  match: {field: tags, op: contains, value: staff}
---
apiVersion: herald/v1
kind: Campaign
metadata: {name: promo}
spec:
  audience: {segment: vip, exclude: [staff]}
  channels: {strategy: all, use: [sms, mail]}
  template: hello
  schedule: {now: true}
";

/// (pk, id, name, phone, email, tags, [(medium, opted_in_at, opted_out_at)])
type Row = (
    i64,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static [&'static str],
    &'static [(&'static str, Option<i64>, Option<i64>)],
);

const DAY_AGO: i64 = 1_780_185_600_000; // 2026-05-31T00:00:00Z

const CONTACTS: &[Row] = &[
    // both channels pass: 2 messages
    (
        1,
        "ana",
        "Ana",
        Some("+51900000001"),
        Some("ana@example.com"),
        &["vip"],
        &[("sms", Some(DAY_AGO), None), ("email", Some(DAY_AGO), None)],
    ),
    // SMS only
    (
        2,
        "bruno",
        "Bruno",
        Some("+51900000002"),
        None,
        &["vip"],
        &[("sms", Some(DAY_AGO), None)],
    ),
    // an e-mail address but no consent
    (
        3,
        "carla",
        "Carla",
        None,
        Some("carla@example.com"),
        &["vip"],
        &[],
    ),
    // opted out of SMS
    (
        4,
        "dora",
        "Dora",
        Some("+51900000004"),
        None,
        &["vip"],
        &[("sms", None, Some(DAY_AGO))],
    ),
    // staff: an excluded segment
    (
        5,
        "eva",
        "Eva",
        Some("+51900000005"),
        None,
        &["vip", "staff"],
        &[("sms", Some(DAY_AGO), None)],
    ),
    // not in the audience
    (
        6,
        "fabio",
        "Fabio",
        Some("+51900000006"),
        None,
        &[],
        &[("sms", Some(DAY_AGO), None)],
    ),
    // no address at all
    (7, "gil", "Gil", None, None, &["vip"], &[]),
    // e-mail only
    (
        8,
        "hugo",
        "Hugo",
        None,
        Some("hugo@example.com"),
        &["vip"],
        &[("email", Some(DAY_AGO), None)],
    ),
];

/// A directory holding the revision and a store holding the contacts.
fn setup() -> (TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("campaigns");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("all.yaml"), REVISION).unwrap();
    let db = dir.path().join("herald.db");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fill(&db));
    (
        dir,
        files.to_str().unwrap().to_string(),
        db.to_str().unwrap().to_string(),
    )
}

async fn fill(db: &Path) {
    Store::open(db).await.unwrap().close().await;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(db))
        .await
        .unwrap();
    for (pk, id, name, phone, email, tags, media) in CONTACTS {
        sqlx::query(
            "INSERT INTO contacts (pk, id, name, phone, email, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, 0, 0)",
        )
        .bind(pk)
        .bind(id)
        .bind(name)
        .bind(phone)
        .bind(email)
        .execute(&pool)
        .await
        .unwrap();
        for tag in *tags {
            sqlx::query("INSERT INTO contact_tags (contact_pk, tag) VALUES (?, ?)")
                .bind(pk)
                .bind(tag)
                .execute(&pool)
                .await
                .unwrap();
        }
        for (medium, opted_in_at, opted_out_at) in *media {
            sqlx::query(
                "INSERT INTO contact_media (contact_pk, medium, opted_in_at, opted_out_at) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(pk)
            .bind(medium)
            .bind(opted_in_at)
            .bind(opted_out_at)
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    pool.close().await;
}

fn herald(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("herald")
        .unwrap()
        .args(args)
        .args(["--now", NOW])
        .env_remove("HERALD_DB")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn a_campaign_breakdown_in_json_counts_recipients_messages_channels_and_reasons() {
    let (_dir, files, db) = setup();
    let (code, stdout, stderr) = herald(&[
        "audience",
        "--campaign",
        "promo",
        "--dir",
        &files,
        "--db",
        &db,
        "--format",
        "json",
        "--sample",
        "2",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        json(&stdout),
        serde_json::json!({
            "campaign": "promo",
            "recipients": 3,
            "messages": 4,
            "by_channel": {"mail": 2, "sms": 2},
            "excluded": {
                "excluded_segment": 1,
                "opted_out": 1,
                "no_address": 1,
                "no_consent": 1,
                "not_previously_interacted": 0,
                "frequency_cap": 0
            },
            "sample": [
                {"id": "ana", "name": "Ana", "channels": ["sms", "mail"]},
                {"id": "bruno", "name": "Bruno", "channels": ["sms"]}
            ]
        })
    );
}

#[test]
fn a_campaign_breakdown_in_text_starts_with_the_sentence_and_shows_no_addresses() {
    let (_dir, files, db) = setup();
    let (code, stdout, stderr) = herald(&[
        "audience",
        "--campaign",
        "promo",
        "--dir",
        &files,
        "--db",
        &db,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "Sending 4 messages to 3 recipients; 4 excluded: 1 in an excluded segment, \
         1 opted out, 1 without an address, 1 without consent"
    );
    assert_eq!(lines[1..3], ["  sms: 2", "  mail: 2"]);
    assert!(stdout.contains("ana (Ana) → sms, mail"), "{stdout}");
    assert!(stdout.contains("hugo (Hugo) → mail"), "{stdout}");
    assert!(
        !stdout.contains('@') && !stdout.contains("+519"),
        "{stdout}"
    );
}

#[test]
fn a_segment_in_json_gives_its_count_and_a_sample_of_ids_and_names() {
    let (_dir, files, db) = setup();
    let (code, stdout, stderr) = herald(&[
        "audience", "vip", "--dir", &files, "--db", &db, "--format", "json", "--sample", "3",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        json(&stdout),
        serde_json::json!({
            "segment": "vip",
            "count": 7,
            "sample": [
                {"id": "ana", "name": "Ana"},
                {"id": "bruno", "name": "Bruno"},
                {"id": "carla", "name": "Carla"}
            ]
        })
    );
}

#[test]
fn a_segment_in_text_says_how_many_contacts_and_sample_zero_lists_none() {
    let (_dir, files, db) = setup();
    let (code, stdout, _) = herald(&[
        "audience", "staff", "--dir", &files, "--db", &db, "--sample", "0",
    ]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "staff: 1 contact\n");
    let (code, stdout, _) = herald(&["audience", "all-contacts", "--dir", &files, "--db", &db]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "all-contacts: 8 contacts\n  ana (Ana)\n  bruno (Bruno)\n  carla (Carla)\n  dora (Dora)\n  eva (Eva)\n"
    );
}

#[test]
fn an_unknown_campaign_exits_1_with_a_suggestion() {
    let (_dir, files, db) = setup();
    let (code, stdout, stderr) = herald(&[
        "audience",
        "--campaign",
        "promp",
        "--dir",
        &files,
        "--db",
        &db,
    ]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert!(stderr.contains("did you mean `promo`?"), "{stderr}");
}

#[test]
fn an_unknown_segment_exits_1_with_a_suggestion_among_built_ins() {
    let (_dir, files, db) = setup();
    let (code, _, stderr) = herald(&["audience", "all-contact", "--dir", &files, "--db", &db]);
    assert_eq!(code, 1);
    assert!(stderr.contains("did you mean `all-contacts`?"), "{stderr}");
}

#[test]
fn an_invalid_directory_prints_its_diagnostics_and_exits_1() {
    let (dir, files, db) = setup();
    std::fs::write(
        dir.path().join("campaigns/broken.yaml"),
        "apiVersion: herald/v1\nkind: Segment\nmetadata: {name: broken}\nspec:\n  match: {field: colour, op: eq, value: red}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = herald(&["audience", "vip", "--dir", &files, "--db", &db]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert!(stderr.contains("broken.yaml"), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
}

#[test]
fn a_segment_and_a_campaign_together_are_a_usage_error() {
    let (_dir, files, db) = setup();
    let (code, _, stderr) = herald(&[
        "audience",
        "vip",
        "--campaign",
        "promo",
        "--dir",
        &files,
        "--db",
        &db,
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
