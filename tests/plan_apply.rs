//! `herald plan` and `herald apply` against a real SQLite file: the real binary for what
//! users see (formats, exit codes, goldens), the library for what only the store shows
//! (atomicity, a rejected revision changing nothing, runs cancelled on removal).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use herald::reconcile::{self, ApplyOutcome};
use herald::spec::Kind;
use herald::store::Store;
use herald::store::revisions::{ApplyError, NewSpec, RevisionWrite};
use sqlx::AssertSqlSafe;
use tempfile::TempDir;

const NOW: &str = "2026-11-24T12:00:00Z";
/// What the example's channels read from the environment (the provider channels under
/// channels/providers/ are used by no campaign: unset, they would only warn).
const EXAMPLE_SECRETS: [(&str, &str); 10] = [
    ("GATEWAY_SECRET", "gateway-value-never-printed"),
    ("HERALD_WEBHOOK_SECRET", "whsec_never_printed"),
    ("TWILIO_AUTH_TOKEN", "twilio-token-never-printed"),
    ("WHATSAPP_TOKEN", "whatsapp-token-never-printed"),
    ("META_APP_SECRET", "meta-secret-never-printed"),
    ("WHATSAPP_VERIFY_TOKEN", "verify-token-never-printed"),
    ("TELEGRAM_BOT_TOKEN", "telegram-token-never-printed"),
    ("TELEGRAM_WEBHOOK_SECRET", "telegram-secret-never-printed"),
    ("SMTP_PASSWORD", "smtp-password-never-printed"),
    ("HERALD_UNSUBSCRIBE_KEY", "unsubscribe-key-never-printed"),
];

fn now() -> jiff::Timestamp {
    NOW.parse().unwrap()
}

/// A scratch folder holding `site/` (a copy of campaigns.example) and, once applied,
/// `store.db`. Commands run inside it with relative paths, so outputs are stable.
struct Workspace {
    root: TempDir,
}

impl Workspace {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("campaigns.example"),
            &root.path().join("site"),
        );
        Workspace { root }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn edit(&self, relative: &str, from: &str, to: &str) {
        let path = self.path(relative);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{relative} does not contain {from:?}");
        std::fs::write(path, text.replacen(from, to, 1)).unwrap();
    }

    /// Runs herald here with the example's secrets set; returns (exit code, stdout).
    fn herald(&self, args: &[&str]) -> (i32, String) {
        self.herald_at(NOW, args)
    }

    fn herald_at(&self, now: &str, args: &[&str]) -> (i32, String) {
        let mut command = Command::cargo_bin("herald").unwrap();
        command
            .current_dir(self.root.path())
            .args(args)
            .env("HERALD_NOW", now)
            .env("NO_COLOR", "1")
            .env_remove("HERALD_DB");
        for (name, value) in EXAMPLE_SECRETS {
            command.env(name, value);
        }
        let out = command.output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.is_empty(), "stderr: {stderr}\nstdout: {stdout}");
        (out.status.code().unwrap_or(-1), stdout)
    }

    async fn store(&self) -> Store {
        Store::open(&self.path("store.db")).await.unwrap()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A segment nothing uses, applied with the base so that a later revision can remove it.
const UNUSED_SEGMENT: &str = "\
apiVersion: herald/v1
kind: Segment
metadata:
  name: dormant
spec:
  match: {field: tags, op: contains, value: dormant}
";

const SPRING_SALE: &str = "\
apiVersion: herald/v1
kind: Campaign
metadata:
  name: spring-sale
  description: A new campaign added by the pull request.
spec:
  audience: {segment: customers, exclude: [staff-and-test]}
  channels: {strategy: specific, use: [sms-outbox]}
  template: welcome-sms
  vars: {coupon_code: SPRING, discount: 5}
  schedule: {at: \"2027-03-21T10:00:00\", timezone: America/Lima}
  delivery:
    rate: {per_minute: 60}
";

/// Contacts for the audiences, written as the contacts tables hold them (the importer is
/// not what this file tests): id, phone, email, country, created_at, orders, tags, media
/// opted in.
const CONTACTS: &str = "\
c-1,+51900000001,,PE,2024-01-10T00:00:00Z,3,,sms;whatsapp
c-2,+51900000002,c2@example.com,PE,2024-02-10T00:00:00Z,12,vip,sms
c-3,+55900000003,,BR,2024-03-10T00:00:00Z,1,,
c-4,+51900000004,,PE,2026-11-20T00:00:00Z,0,,sms
c-5,+51900000005,,PE,2026-11-22T00:00:00Z,0,,sms
c-6,+51900000006,,PE,2024-05-10T00:00:00Z,2,staff,sms
c-7,,c7@example.com,MX,2024-06-10T00:00:00Z,5,,email
";

async fn insert_contacts(path: &Path) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    for (pk, line) in CONTACTS.lines().enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let (id, country, orders, tags, media) = (f[0], f[3], f[5], f[6], f[7]);
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let (phone, email) = (text(f[1]), text(f[2]));
        let created: jiff::Timestamp = f[4].parse().unwrap();
        let pk = pk as i64 + 1;
        sqlx::query(
            "INSERT INTO contacts (pk, id, phone, email, country, created_at, updated_at, attributes) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(pk)
        .bind(id)
        .bind(phone)
        .bind(email)
        .bind(country)
        .bind(created.as_millisecond())
        .bind(created.as_millisecond())
        .bind(format!("{{\"orders\": {orders}}}"))
        .execute(&pool)
        .await
        .unwrap();
        for tag in tags.split(';').filter(|t| !t.is_empty()) {
            sqlx::query("INSERT INTO contact_tags (contact_pk, tag) VALUES (?, ?)")
                .bind(pk)
                .bind(tag)
                .execute(&pool)
                .await
                .unwrap();
        }
        for medium in media.split(';').filter(|m| !m.is_empty()) {
            sqlx::query(
                "INSERT INTO contact_media (contact_pk, medium, opted_in_at) VALUES (?, ?, ?)",
            )
            .bind(pk)
            .bind(medium)
            .bind(created.as_millisecond())
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    pool.close().await;
}

/// The errors recorded with rejected revision `id`.
async fn rejected_errors(path: &Path, id: i64) -> Vec<serde_json::Value> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=ro", path.display()))
        .await
        .unwrap();
    let errors: String =
        sqlx::query_scalar("SELECT errors FROM revisions WHERE id = ? AND status = 'rejected'")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    serde_json::from_str(&errors).unwrap()
}

/// Every row of every table, as text, table by table.
async fn dump(path: &Path) -> Vec<(String, Vec<String>)> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=ro", path.display()))
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                .bind(&table)
                .fetch_all(&pool)
                .await
                .unwrap();
        let row = columns
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let sql = format!("SELECT {row} FROM \"{table}\" ORDER BY 1");
        let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_all(&pool)
            .await
            .unwrap();
        out.push((table, rows));
    }
    pool.close().await;
    out
}

/// A workspace whose base revision (the example plus an unused segment) is applied, with
/// contacts in the store.
async fn applied_base() -> Workspace {
    let ws = Workspace::new();
    ws.write("site/segments/dormant.yaml", UNUSED_SEGMENT);
    let (code, out) = ws.herald(&["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Applied revision 1."), "{out}");
    insert_contacts(&ws.path("store.db")).await;
    ws
}

/// The pull request of the goldens: a template's text, a channel's rate, a segment and a
/// secret reference change, an unused segment goes, a campaign comes.
fn edit_like_a_pull_request(ws: &Workspace) {
    ws.edit(
        "site/templates/welcome-sms.yaml",
        "welcome to Mercado Sol!",
        "welcome to Mercado Sol, the sunniest shop!",
    );
    ws.edit(
        "site/channels/outbox.yaml",
        "rate: {per_second: 10}",
        "rate: {per_second: 5}",
    );
    ws.edit(
        "site/channels/sms-gateway.yaml",
        "${file:secrets/gateway-secret}",
        "${file:secrets/herald-webhook-secret}",
    );
    std::fs::remove_file(ws.path("site/segments/dormant.yaml")).unwrap();
    ws.write("site/campaigns/spring-sale.yaml", SPRING_SALE);
    // Customers are those with 4 orders or more now: audiences shrink, through segments
    // that include `customers`.
    ws.edit(
        "site/segments/customers.yaml",
        "{field: attributes.orders, op: gte, value: 1}",
        "{field: attributes.orders, op: gte, value: 4}",
    );
}

#[test]
fn plan_of_the_example_on_an_empty_store_creates_everything_and_creates_no_file() {
    let ws = Workspace::new();
    let (code, out) = ws.herald(&["plan", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("store.db does not exist"), "{out}");
    assert!(
        out.contains("38 to create, 0 to change, 0 to remove; 8 campaigns touched."),
        "{out}"
    );
    assert!(out.contains("+ Campaign black-friday-2027"), "{out}");
    assert!(
        out.contains("2026-11-30 09:00 Europe/Madrid (UTC+01), 2026-12-07 09:00 Europe/Madrid (UTC+01), 2026-12-14 09:00 Europe/Madrid (UTC+01)"),
        "the weekly newsletter's next three Mondays:\n{out}"
    );
    assert!(!ws.path("store.db").exists(), "plan created the store");

    let (code, _) = ws.herald(&["plan", "site", "--db", "store.db", "--detailed-exitcode"]);
    assert_eq!(code, 2, "changes with --detailed-exitcode");
    assert!(!ws.path("store.db").exists());
}

#[tokio::test]
async fn applying_then_planning_again_finds_no_changes_and_plan_never_writes() {
    let ws = Workspace::new();
    let (code, out) = ws.herald(&["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Applied revision 1."), "{out}");
    let before = dump(&ws.path("store.db")).await;
    let file_before = std::fs::read(ws.path("store.db")).unwrap();

    let (code, out) = ws.herald(&["plan", "site", "--db", "store.db", "--detailed-exitcode"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No changes"), "{out}");
    assert!(out.contains("against revision 1"), "{out}");
    assert_eq!(std::fs::read(ws.path("store.db")).unwrap(), file_before);

    let (code, out) = ws.herald(&["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Nothing to apply"), "{out}");
    assert_eq!(
        dump(&ws.path("store.db")).await,
        before,
        "a no-op apply wrote"
    );
}

#[tokio::test]
async fn plan_of_a_pull_request_matches_the_golden_text_markdown_and_json() {
    let ws = applied_base().await;
    edit_like_a_pull_request(&ws);
    for (format, extension) in [("text", "txt"), ("markdown", "md"), ("json", "json")] {
        let (code, out) = ws.herald(&[
            "plan",
            "site",
            "--db",
            "store.db",
            "--format",
            format,
            "--detailed-exitcode",
        ]);
        assert_eq!(code, 2, "{out}");
        for (_, secret) in EXAMPLE_SECRETS {
            assert!(!out.contains(secret), "a secret value was printed:\n{out}");
        }
        assert!(
            !out.contains("GATEWAY_SECRET"),
            "a secret reference was printed:\n{out}"
        );
        insta::assert_snapshot!(format!("pull_request_plan_{extension}"), out);
    }
}

#[tokio::test]
async fn the_pull_request_applies_and_its_json_plan_then_says_unchanged() {
    let ws = applied_base().await;
    edit_like_a_pull_request(&ws);
    let (code, out) = ws.herald(&["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Applied revision 2."), "{out}");
    let (code, out) = ws.herald(&["plan", "site", "--db", "store.db", "--format", "json"]);
    assert_eq!(code, 0);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["changed"], false);
    assert_eq!(plan["against"]["id"], 2);
    assert_eq!(plan["changes"].as_array().unwrap().len(), 0);

    let store = ws.store().await;
    let in_force = store.revision_in_force().await.unwrap().unwrap();
    assert!(
        !in_force.specs.iter().any(|s| s.name == "dormant"),
        "the removed segment is retired"
    );
    let template = in_force
        .specs
        .iter()
        .find(|s| s.kind == Kind::Template && s.name == "welcome-sms")
        .unwrap();
    assert_eq!(template.introduced_in, 2);
    store.close().await;
    let specs = dump(&ws.path("store.db")).await;
    let specs = &specs.iter().find(|(t, _)| t == "specs").unwrap().1;
    assert_eq!(
        specs.len(),
        39 + 5,
        "39 versions from revision 1, then 4 changed and 1 new; none deleted"
    );
}

#[tokio::test]
async fn a_rejected_revision_leaves_every_table_as_it_was_but_one_revision_row() {
    let ws = applied_base().await;
    // Some history that must survive: a running run with deliveries.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", ws.path("store.db").display()))
        .await
        .unwrap();
    add_run(&pool, 1, "weekly-newsletter", "running").await;
    pool.close().await;
    let before = dump(&ws.path("store.db")).await;

    edit_like_a_pull_request(&ws);
    ws.write(
        "site/segments/broken.yaml",
        "apiVersion: herald/v1\nkind: Segment\nmetadata: {name: broken}\nspec:\n  match: {field: tags, op: gt, value: 3}\n",
    );
    let (code, out) = ws.herald(&["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Rejected: recorded as revision 2"), "{out}");

    let after = dump(&ws.path("store.db")).await;
    assert_eq!(before.len(), after.len());
    for ((table, rows_before), (_, rows_after)) in before.iter().zip(&after) {
        if table == "revisions" {
            assert_eq!(rows_after.len(), rows_before.len() + 1);
            assert_eq!(&rows_after[..rows_before.len()], &rows_before[..]);
            let new = &rows_after[rows_before.len()];
            assert!(new.starts_with("2|"), "{new}");
            assert!(new.contains("'rejected'"), "{new}");
            assert!(new.contains("operator-value-mismatch"), "{new}");
        } else if table == "webhook_outbox" {
            // The rejection is reported to the example's Webhook (it subscribes to
            // config.rejected), in the same transaction: one event, nothing else.
            assert_eq!(rows_after.len(), rows_before.len() + 1, "{rows_after:?}");
            assert_eq!(&rows_after[..rows_before.len()], &rows_before[..]);
            assert!(
                rows_after[rows_before.len()].contains("'config.rejected'"),
                "{rows_after:?}"
            );
        } else {
            assert_eq!(rows_after, rows_before, "table {table} changed");
        }
    }
    let store = ws.store().await;
    assert_eq!(store.revision_in_force().await.unwrap().unwrap().id, 1);
    store.close().await;
}

#[tokio::test]
async fn a_secret_that_does_not_resolve_rejects_the_revision_naming_the_variable_not_a_value() {
    let ws = Workspace::new();
    ws.edit(
        "site/webhooks/herald-events.yaml",
        "${file:secrets/herald-webhook-secret}",
        "${env:HERALD_TEST_UNSET_VARIABLE}",
    );
    ws.edit(
        "site/channels/sms-gateway.yaml",
        "${file:secrets/gateway-secret}",
        "${file:secrets/gateway}",
    );
    let (code, out) = ws.herald(&["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[unresolved-secret]"), "{out}");
    let errors = rejected_errors(&ws.path("store.db"), 1).await;
    let found: Vec<(&str, &str, u64)> = errors
        .iter()
        .map(|e| {
            (
                e["message"].as_str().unwrap(),
                e["file"].as_str().unwrap(),
                e["line"].as_u64().unwrap(),
            )
        })
        .collect();
    // sms-gateway is used by no campaign of the example: its unreadable secret is a
    // warning, shown but not refusing; the webhook's is an error.
    assert_eq!(
        found,
        [(
            "webhook herald-events secret: the environment variable HERALD_TEST_UNSET_VARIABLE is not set",
            "site/webhooks/herald-events.yaml",
            13
        )],
        "{errors:?}"
    );
    assert!(
        out.contains(
            "channel sms-gateway webhook.secret: the file site/secrets/gateway cannot be read"
        ) && out.contains("no campaign uses the channel yet"),
        "{out}"
    );

    ws.write("site/secrets/gateway", "gateway-file-value");
    let mut command = Command::cargo_bin("herald").unwrap();
    let out = command
        .current_dir(ws.root.path())
        .args(["apply", "site", "--db", "store.db"])
        .env("HERALD_NOW", NOW)
        .env("HERALD_TEST_UNSET_VARIABLE", "set-now")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("gateway-file-value") && !stdout.contains("set-now"));
    let store = ws.store().await;
    let revisions = dump(&ws.path("store.db")).await;
    let revisions = &revisions.iter().find(|(t, _)| t == "revisions").unwrap().1;
    assert_eq!(revisions.len(), 2);
    assert!(revisions[0].contains("'rejected'"), "{revisions:?}");
    assert!(revisions[1].contains("'applied'"), "{revisions:?}");
    assert_eq!(store.revision_in_force().await.unwrap().unwrap().id, 2);
    store.close().await;
}

#[tokio::test]
async fn a_channel_no_campaign_uses_may_wait_for_its_secret_with_a_warning() {
    let ws = Workspace::new();
    ws.write(
        "site/channels/telegram-later.yaml",
        "apiVersion: herald/v1\nkind: Channel\nmetadata: {name: telegram-later}\nspec:\n  \
         type: telegram\n  telegram: {bot_token: \"${env:HERALD_TEST_UNSET_BOT_TOKEN}\"}\n",
    );
    let (code, out) = ws.herald(&["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[unresolved-secret]"), "{out}");
    assert!(out.contains("no campaign uses the channel yet"), "{out}");
    let store = ws.store().await;
    assert_eq!(store.revision_in_force().await.unwrap().unwrap().id, 1);
    store.close().await;

    // The campaign that starts using it is refused until the variable is set.
    ws.edit(
        "site/campaigns/club-launch.yaml",
        "use: [telegram-outbox",
        "use: [telegram-later",
    );
    let (code, out) = ws.herald(&["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("HERALD_TEST_UNSET_BOT_TOKEN is not set")
            && !out.contains("uses the channel yet"),
        "{out}"
    );
}

async fn add_run(pool: &sqlx::SqlitePool, id: i64, campaign: &str, status: &str) {
    let spec: i64 = sqlx::query_scalar(
        "SELECT id FROM specs WHERE kind = 'Campaign' AND name = ? AND retired_in IS NULL",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO runs (id, campaign, campaign_spec_id, revision_id, trigger, status, created_at, total) \
         VALUES (?, ?, ?, 1, 'manual', ?, 0, 3)",
    )
    .bind(id)
    .bind(campaign)
    .bind(spec)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
    for (i, delivery) in ["pending", "retry", "sent"].iter().enumerate() {
        sqlx::query(
            "INSERT INTO deliveries (run_id, contact_pk, contact_id, channel, status, idempotency_key, created_at, updated_at) \
             VALUES (?, ?, ?, 'sms-outbox', ?, ?, 0, 0)",
        )
        .bind(id)
        .bind(i as i64 + 1)
        .bind(format!("c-{}", i + 1))
        .bind(delivery)
        .bind(format!("{campaign}-{id}-{i}"))
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn removing_a_campaign_cancels_its_active_runs_and_their_unsent_deliveries_only() {
    let ws = applied_base().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", ws.path("store.db").display()))
        .await
        .unwrap();
    add_run(&pool, 1, "weekly-newsletter", "running").await;
    add_run(&pool, 2, "weekly-newsletter", "finished").await;
    add_run(&pool, 3, "reactivation-30-days", "running").await;
    pool.close().await;

    std::fs::remove_file(ws.path("site/campaigns/weekly-newsletter.yaml")).unwrap();
    let (code, plan) = ws.herald(&["plan", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("- Campaign weekly-newsletter"), "{plan}");
    let (code, out) = ws.herald(&["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Cancelled 1 run of removed campaigns and 2 pending deliveries."),
        "{out}"
    );

    let tables = dump(&ws.path("store.db")).await;
    let rows = |name: &str| tables.iter().find(|(t, _)| t == name).unwrap().1.clone();
    let runs = rows("runs");
    let status = |run: &str| {
        runs.iter()
            .find(|r| r.starts_with(&format!("{run}|")))
            .unwrap()
            .clone()
    };
    assert!(status("1").contains("'cancelled'"), "{runs:?}");
    assert!(
        status("2").contains("'finished'"),
        "history stays: {runs:?}"
    );
    assert!(
        status("3").contains("'running'"),
        "other campaigns untouched: {runs:?}"
    );
    let deliveries = rows("deliveries");
    let of_run = |run: &str, status: &str| {
        deliveries
            .iter()
            .filter(|d| d.split('|').nth(1) == Some(run) && d.contains(&format!("'{status}'")))
            .count()
    };
    assert_eq!(of_run("1", "cancelled"), 2);
    assert_eq!(of_run("1", "sent"), 1, "a sent delivery stays sent");
    assert_eq!(
        of_run("2", "pending"),
        1,
        "a finished run's rows are not touched"
    );
    assert_eq!(of_run("3", "pending"), 1);
    let specs = rows("specs");
    let newsletter: Vec<&String> = specs
        .iter()
        .filter(|s| s.contains("'weekly-newsletter'") && s.contains("'Campaign'"))
        .collect();
    assert_eq!(newsletter.len(), 1, "the version stays, retired");
    assert!(
        newsletter[0].contains("|1|2|"),
        "introduced in 1, retired in 2: {}",
        newsletter[0]
    );
}

#[tokio::test]
async fn apply_is_all_or_nothing_when_a_step_fails_midway() {
    let ws = applied_base().await;
    let before = dump(&ws.path("store.db")).await;
    let store = ws.store().await;
    let spec = NewSpec {
        kind: Kind::Segment,
        name: "fresh".into(),
        body: serde_json::json!({"metadata": {"name": "fresh"}, "spec": {}}),
        hash: "h".into(),
        file: "f.yaml".into(),
        line: 1,
    };
    let write = RevisionWrite {
        hash: "new".into(),
        source: "site".into(),
        based_on: Some(1),
        created: vec![spec],
        changed: Vec::new(),
        // Retiring comes after the revision row is inserted; this one fails.
        removed: vec![(Kind::Segment, "no-such-segment".into())],
    };
    let result = store.apply_revision(&write, now()).await;
    assert!(
        matches!(result, Err(ApplyError::NotInForce { .. })),
        "{result:?}"
    );
    store.close().await;
    assert_eq!(dump(&ws.path("store.db")).await, before);
}

#[tokio::test]
async fn apply_refuses_a_plan_made_against_a_revision_no_longer_in_force() {
    let ws = applied_base().await;
    let store = ws.store().await;
    let site = ws.path("site");
    edit_like_a_pull_request(&ws);
    // In-process, the secrets come from files (setting variables would need unsafe code).
    for file in [
        "site/channels/sms-gateway.yaml",
        "site/webhooks/herald-events.yaml",
    ] {
        ws.edit(
            file,
            "${file:secrets/herald-webhook-secret}",
            "${file:signing-key}",
        );
    }
    ws.write("site/signing-key", "whsec_in_a_file");
    let mut stale = reconcile::prepare(&site, Some(&store), Path::new("store.db"), now())
        .await
        .unwrap();
    let mut first = reconcile::prepare(&site, Some(&store), Path::new("store.db"), now())
        .await
        .unwrap();
    let applied = reconcile::apply(&mut first, &store, &site, now())
        .await
        .unwrap();
    assert!(matches!(applied, ApplyOutcome::Applied(a) if a.revision == 2));
    let before = dump(&ws.path("store.db")).await;
    let error = reconcile::apply(&mut stale, &store, &site, now())
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}")
            .contains("the plan was made against revision 1, but 2 is in force now"),
        "{error:#}"
    );
    store.close().await;
    assert_eq!(dump(&ws.path("store.db")).await, before);
}

const PAST_CAMPAIGN: &str = "\
apiVersion: herald/v1
kind: Campaign
metadata:
  name: winter-notice
spec:
  audience: {segment: customers}
  channels: {strategy: specific, use: [sms-outbox]}
  template: welcome-sms
  vars: {coupon_code: WINTER, discount: 5}
  schedule: {at: \"2026-12-01T09:00:00\", timezone: America/Lima}
";

#[tokio::test]
async fn a_past_at_is_an_error_only_for_a_new_or_rescheduled_campaign() {
    let ws = Workspace::new();
    ws.write("site/campaigns/winter.yaml", PAST_CAMPAIGN);
    let (code, out) = ws.herald(&["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{out}");

    // A week after it ran: unchanged, it is history.
    let later = "2026-12-08T12:00:00Z";
    let (code, out) = ws.herald_at(
        later,
        &["plan", "site", "--db", "store.db", "--detailed-exitcode"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No changes"), "{out}");
    assert!(out.contains("[schedule-in-past]"), "still a warning: {out}");

    // Rescheduled into the past: an error.
    ws.edit(
        "site/campaigns/winter.yaml",
        "2026-12-01T09:00:00",
        "2026-12-02T09:00:00",
    );
    let (code, out) = ws.herald_at(
        later,
        &["plan", "site", "--db", "store.db", "--format", "json"],
    );
    assert_eq!(code, 1, "{out}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let errors: Vec<&serde_json::Value> = plan["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{out}");
    assert_eq!(errors[0]["code"], "schedule-in-past");
    assert_eq!(errors[0]["file"], "site/campaigns/winter.yaml");
    assert_eq!(errors[0]["line"], 10);

    // Changed otherwise, schedule untouched: still history.
    ws.edit(
        "site/campaigns/winter.yaml",
        "2026-12-02T09:00:00",
        "2026-12-01T09:00:00",
    );
    ws.edit("site/campaigns/winter.yaml", "WINTER", "WINTER2");
    let (code, out) = ws.herald_at(later, &["plan", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{out}");

    // New with a past `at`: an error, and apply rejects it.
    ws.write(
        "site/campaigns/late.yaml",
        &PAST_CAMPAIGN.replace("winter-notice", "late-notice"),
    );
    let (code, out) = ws.herald_at(later, &["apply", "site", "--db", "store.db"]);
    assert_eq!(code, 1, "{out}");
    let errors = rejected_errors(&ws.path("store.db"), 2).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "schedule-in-past");
    assert_eq!(errors[0]["file"], "site/campaigns/late.yaml");
    assert!(
        errors[0]["help"]
            .as_str()
            .unwrap()
            .starts_with("a new campaign at a past time"),
        "{errors:?}"
    );
}

const SLOW_CAMPAIGN: &str = "\
apiVersion: herald/v1
kind: Campaign
metadata:
  name: slow-drip
spec:
  audience: {segment: all-contacts}
  channels: {strategy: specific, use: [sms-outbox]}
  template: welcome-sms
  vars: {coupon_code: SLOW, discount: 5}
  schedule: {at: \"2027-01-10T09:00:00\"}
  consent: not_required
  delivery:
    rate: {per_hour: 2}
    max_duration: 2h
";

#[tokio::test]
async fn a_send_longer_than_max_duration_is_an_error_at_max_duration() {
    let ws = applied_base().await;
    ws.write("site/campaigns/slow.yaml", SLOW_CAMPAIGN);
    let (code, out) = ws.herald(&["plan", "site", "--db", "store.db", "--format", "json"]);
    assert_eq!(code, 1, "{out}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let error = &plan["diagnostics"][0];
    assert_eq!(error["code"], "send-too-long", "{out}");
    assert_eq!(error["severity"], "error");
    // 6 contacts with a phone at 2 an hour: 3h, more than 2h.
    assert_eq!(
        error["message"],
        "campaign `slow-drip` needs about 3h to send 6 messages at campaign (2/h), longer than its max_duration of 2h: the rest would expire"
    );
    assert_eq!(
        (
            error["file"].as_str(),
            error["line"].as_u64(),
            error["column"].as_u64()
        ),
        (Some("site/campaigns/slow.yaml"), Some(14), Some(19))
    );

    ws.edit(
        "site/campaigns/slow.yaml",
        "max_duration: 2h",
        "max_duration: 4h",
    );
    let (code, out) = ws.herald(&["plan", "site", "--db", "store.db"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("send time: about 3h at campaign (2/h); max_duration 4h"),
        "{out}"
    );
}

#[test]
fn plan_of_an_invalid_directory_exits_1_in_every_format_and_plans_nothing() {
    let ws = Workspace::new();
    ws.edit(
        "site/campaigns/weekly-newsletter.yaml",
        "template: weekly-newsletter",
        "template: weekly-newsleter",
    );
    for format in ["text", "markdown", "json"] {
        let (code, out) = ws.herald(&[
            "plan",
            "site",
            "--db",
            "store.db",
            "--format",
            format,
            "--detailed-exitcode",
        ]);
        assert_eq!(code, 1, "{format}: {out}");
        assert!(out.contains("missing-reference"), "{format}: {out}");
        assert!(
            !out.contains("+ Campaign"),
            "{format} planned anyway: {out}"
        );
        if format == "json" {
            let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(plan["valid"], false);
            assert!(plan["changes"].is_null());
        }
    }
    assert!(!ws.path("store.db").exists());
}
