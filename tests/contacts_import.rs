//! `herald contacts import` and `export` end to end: the real binary against a real SQLite
//! file in a temporary directory, checked by reading the tables back; plus the library's
//! import from a reader, as the HTTP API will call it.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use sqlx::sqlite::SqlitePoolOptions;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/campaigns.example/contacts.csv"
);
const T1: &str = "2026-11-25T12:00:00Z";
const T2: &str = "2026-11-26T08:30:00Z";

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// `herald contacts ARGS… --db DB` at the instant `now`.
fn herald(db: &Path, now: &str, args: &[&std::ffi::OsStr]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("herald")
        .unwrap()
        .env("HERALD_NOW", now)
        .env_remove("HERALD_DB")
        .arg("contacts")
        .args(args)
        .arg("--db")
        .arg(db)
        .assert()
}

fn import(db: &Path, csv: &Path, now: &str) -> assert_cmd::assert::Assert {
    herald(db, now, &["import".as_ref(), csv.as_ref()])
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn pool(db: &Path) -> sqlx::SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(db))
        .await
        .unwrap()
}

fn query_strings(db: &Path, sql: &'static str) -> Vec<String> {
    block_on(async {
        let pool = pool(db).await;
        let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    })
}

fn execute(db: &Path, sql: &'static str) {
    block_on(async {
        let pool = pool(db).await;
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    })
}

/// Every column of the three contact tables, one JSON array per row (types included: an
/// integer and the same digits as text differ).
fn dump(db: &Path) -> Vec<String> {
    let mut out = query_strings(
        db,
        "SELECT json_array('contacts', pk, id, name, phone, email, telegram, locale, timezone, \
         country, created_at, updated_at, attributes, typeof(created_at)) \
         FROM contacts ORDER BY pk",
    );
    out.extend(query_strings(
        db,
        "SELECT json_array('tag', contact_pk, tag) FROM contact_tags ORDER BY contact_pk, tag",
    ));
    out.extend(query_strings(
        db,
        "SELECT json_array('media', contact_pk, medium, opted_in_at, opted_in_source, \
         opted_out_at, opted_out_source, last_inbound_at, last_outbound_at) \
         FROM contact_media ORDER BY contact_pk, medium",
    ));
    out
}

fn ids(db: &Path) -> Vec<String> {
    query_strings(db, "SELECT id FROM contacts ORDER BY pk")
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(a.get_output().stdout.clone()).unwrap()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(a.get_output().stderr.clone()).unwrap()
}

fn ms(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

#[test]
fn the_example_contacts_file_imports_all_41_rows() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    let a = import(&db, Path::new(EXAMPLE), T1).success();
    assert_eq!(
        stdout(&a).trim_end(),
        format!("imported 41 rows from {EXAMPLE}: 41 created, 0 updated, 0 unchanged; 0 bad rows")
    );
    assert_eq!(stderr(&a), "");
    let ids = ids(&db);
    assert_eq!(ids.len(), 41);
    assert_eq!(ids.first().map(String::as_str), Some("c-1001"));
    assert_eq!(ids.last().map(String::as_str), Some("test-qa-01"));
}

#[test]
fn re_importing_a_file_leaves_every_table_byte_for_byte_equal() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    import(&db, Path::new(EXAMPLE), T1).success();
    let before = dump(&db);
    assert!(
        before.len() > 41 + 41,
        "tags and media rows were written too"
    );
    // A later import time: any time written by mistake would differ.
    let a = import(&db, Path::new(EXAMPLE), T2).success();
    assert!(
        stdout(&a).contains("0 created, 0 updated, 41 unchanged"),
        "{}",
        stdout(&a)
    );
    assert_eq!(dump(&db), before);
}

const WITH_BAD_ROWS: &str = "\
id,name,phone,timezone,created_at,opted_in
ok-1,Ana,+51 987 654 321,America/Lima,2025-01-01T00:00:00Z,sms
bad-phone,Bea,987654321,America/Lima,,
bad-zone,Caro,+51911111111,America/Atlantis,,
bad-date,Dani,+51922222222,UTC,2025-13-01,
,Eva,+51933333333,UTC,,
bad-medium,Fabi,+51944444444,UTC,,sms;pigeon
ok-2,Gabi,(+34) 612-34-56-78,Europe/Madrid,,email
";

#[test]
fn each_bad_row_is_reported_with_its_line_and_column_while_the_good_rows_land() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    let csv = dir.file("contacts.csv", WITH_BAD_ROWS);
    let a = import(&db, &csv, T1).code(1);
    let err = stderr(&a);
    let f = csv.display();
    for expected in [
        format!("{f}:3: column phone: "),
        format!("{f}:4: column timezone: "),
        format!("{f}:5: column created_at: "),
        format!("{f}:6: column id: missing"),
        format!("{f}:7: column opted_in: unknown medium \"pigeon\""),
    ] {
        assert!(err.contains(&expected), "{expected:?} not in:\n{err}");
    }
    assert_eq!(err.lines().count(), 5, "{err}");
    assert_eq!(
        stdout(&a).trim_end(),
        format!("imported 2 rows from {f}: 2 created, 0 updated, 0 unchanged; 5 bad rows")
    );
    assert_eq!(ids(&db), ["ok-1", "ok-2"]);
    assert_eq!(
        query_strings(&db, "SELECT phone FROM contacts ORDER BY pk"),
        ["+51987654321", "+34612345678"]
    );
}

#[test]
fn strict_imports_nothing_when_any_row_is_bad() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    let csv = dir.file("contacts.csv", WITH_BAD_ROWS);
    let a = herald(
        &db,
        T1,
        &["import".as_ref(), "--strict".as_ref(), csv.as_ref()],
    )
    .code(1);
    assert!(
        stdout(&a).starts_with("imported nothing from "),
        "{}",
        stdout(&a)
    );
    assert!(stderr(&a).contains(":3: column phone: "));
    assert_eq!(dump(&db), Vec::<String>::new());
}

#[test]
fn strict_imports_everything_when_every_row_is_good() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    herald(
        &db,
        T1,
        &["import".as_ref(), "--strict".as_ref(), EXAMPLE.as_ref()],
    )
    .success();
    assert_eq!(ids(&db).len(), 41);
}

#[test]
fn a_repeated_id_is_a_bad_row_naming_the_first_line() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    let csv = dir.file("contacts.csv", "id,name\nc1,Ana\nc2,Bea\nc1,Other Ana\n");
    let a = import(&db, &csv, T1).code(1);
    assert!(
        stderr(&a).contains(":4: column id: id c1 already on line 2"),
        "{}",
        stderr(&a)
    );
    assert_eq!(
        query_strings(&db, "SELECT name FROM contacts ORDER BY pk"),
        ["Ana", "Bea"]
    );
}

#[test]
fn a_file_without_an_id_column_is_refused_before_anything_is_written() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    let csv = dir.file("contacts.csv", "name,phone\nAna,+51987654321\n");
    let a = import(&db, &csv, T1).code(1);
    assert!(stderr(&a).contains(":1: no `id` column"), "{}", stderr(&a));
    assert_eq!(ids(&db), Vec::<String>::new());
}

#[test]
fn attribute_cells_are_typed_and_only_their_own_keys_change() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    let first = dir.file(
        "a.csv",
        "id,orders,score,vip,city,zip\nc1,14,2.5,TRUE,Lima,01234\n",
    );
    import(&db, &first, T1).success();
    assert_eq!(
        query_strings(&db, "SELECT attributes FROM contacts"),
        [r#"{"city":"Lima","orders":14,"score":2.5,"vip":true,"zip":"01234"}"#]
    );
    // An empty cell removes its key; keys not in the file stay.
    let second = dir.file("b.csv", "id,orders,vip\nc1,15,\n");
    let a = import(&db, &second, T2).success();
    assert!(stdout(&a).contains("1 updated"), "{}", stdout(&a));
    assert_eq!(
        query_strings(&db, "SELECT attributes FROM contacts"),
        [r#"{"city":"Lima","orders":15,"score":2.5,"zip":"01234"}"#]
    );
    assert_eq!(
        query_strings(
            &db,
            "SELECT json_array(created_at, updated_at) FROM contacts"
        ),
        [format!("[{},{}]", ms(T1), ms(T2))]
    );
}

#[test]
fn consent_is_recorded_from_the_import_and_a_stop_reply_is_never_undone() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    let csv = dir.file("c.csv", "id,phone,opted_in\nc1,+51987654321,sms;email\n");
    import(&db, &csv, T1).success();
    let t1 = ms(T1);
    assert_eq!(
        query_strings(
            &db,
            "SELECT json_array(medium, opted_in_at, opted_in_source, opted_out_at) \
             FROM contact_media ORDER BY medium"
        ),
        [
            format!(r#"["email",{t1},"import",null]"#),
            format!(r#"["sms",{t1},"import",null]"#),
        ]
    );

    // The contact answers STOP by SMS after the import (as the daemon records it).
    assert!(ms(T1) < 1_795_650_000_000 && 1_795_650_000_000 < ms(T2));
    execute(
        &db,
        "UPDATE contact_media SET opted_out_at = 1795650000000, opted_out_source = 'reply' \
         WHERE medium = 'sms'",
    );
    let before = dump(&db);
    let a = import(&db, &csv, T2).success();
    assert!(
        stderr(&a).contains(":2: warning: column opted_in: sms stays opted out"),
        "{}",
        stderr(&a)
    );
    assert!(
        stdout(&a).contains("1 unchanged; 0 bad rows; 1 warning"),
        "{}",
        stdout(&a)
    );
    assert_eq!(dump(&db), before);
}

#[test]
fn an_opt_out_recorded_by_an_import_can_be_undone_by_a_later_import() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    let out = dir.file("out.csv", "id,opted_out\nc1,sms\n");
    let back = dir.file("in.csv", "id,opted_in\nc1,sms\n");
    import(&db, &out, T1).success();
    import(&db, &back, T2).success();
    assert_eq!(
        query_strings(
            &db,
            "SELECT json_array(opted_in_at, opted_in_source, opted_out_at, opted_out_source) \
             FROM contact_media"
        ),
        [format!(r#"[{},"import",{},"import"]"#, ms(T2), ms(T1))]
    );
}

#[test]
fn export_then_import_onto_a_fresh_store_gives_identical_tables() {
    let dir = Dir::new();
    let a = dir.path("a.db");
    let b = dir.path("b.db");
    import(&a, Path::new(EXAMPLE), T1).success();
    let csv = dir.path("export.csv");
    let out = herald(&a, T1, &["export".as_ref(), csv.as_ref()]).success();
    assert!(stdout(&out).starts_with("exported 41 contacts to "));
    import(&b, &csv, T1).success();
    let dumped = dump(&a);
    assert!(
        dumped.len() > 41 + 41,
        "tags and media rows are compared too"
    );
    assert_eq!(dump(&b), dumped);
}

#[test]
fn export_writes_csv_to_stdout_without_a_file() {
    let dir = Dir::new();
    let db = dir.path("herald.db");
    import(&db, Path::new(EXAMPLE), T1).success();
    let a = herald(&db, T1, &["export".as_ref()]).success();
    let text = stdout(&a);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "id,name,phone,email,telegram,locale,timezone,country,created_at,tags,opted_in,\
             opted_out,last_inbound_at,last_inbound_medium,city,orders,vip_since"
        )
    );
    assert_eq!(
        lines.next(),
        Some(
            "c-1001,Lucía Quispe,+51987654321,lucia.quispe@example.com,,es-PE,America/Lima,PE,\
             2024-03-12T15:20:00Z,newsletter;vip,sms;whatsapp;email,,2026-11-20T14:05:00Z,\
             whatsapp,Lima,14,2025-06-01"
        )
    );
    assert_eq!(text.lines().count(), 42);
    // c-1013 opted in on whatsapp and then out: it exports as opted out only.
    assert!(
        text.lines()
            .any(|l| l.starts_with("c-1013,") && l.contains(",sms;email,whatsapp,")),
        "{text}"
    );
}

#[test]
fn the_library_imports_from_any_reader_and_reports_errors_by_line() {
    use herald::contacts::{ImportOptions, import};
    use herald::spec::channel::Medium;
    use herald::store::Store;

    let dir = Dir::new();
    block_on(async {
        let store = Store::open(&dir.path("herald.db")).await.unwrap();
        let csv = "id,name,tags,opted_in,last_inbound_at,last_inbound_medium,plan\n\
                   c1,Ana,vip; newsletter,whatsapp,2026-11-20T14:05:00-05:00,whatsapp,gold\n\
                   c2,Bea,,sms,2026-11-20,sms,\n";
        let options = ImportOptions {
            now: T1.parse().unwrap(),
            strict: false,
        };
        let report = import(&store, std::io::Cursor::new(csv), options, None)
            .await
            .unwrap();
        assert_eq!((report.created, report.bad_rows), (1, 1));
        assert_eq!(report.issues.len(), 1);
        assert_eq!(report.issues[0].line, 3);
        assert_eq!(report.issues[0].column.as_deref(), Some("last_inbound_at"));

        let c1 = store.contact("c1").await.unwrap().expect("c1 was imported");
        assert_eq!(c1.data.name.as_deref(), Some("Ana"));
        assert_eq!(
            c1.data.tags.iter().map(String::as_str).collect::<Vec<_>>(),
            ["newsletter", "vip"]
        );
        assert_eq!(c1.data.attributes["plan"], "gold");
        let whatsapp = &c1.data.media[&Medium::Whatsapp];
        assert_eq!(whatsapp.opted_in_at, Some(ms(T1)));
        assert_eq!(whatsapp.last_inbound_at, Some(ms("2026-11-20T19:05:00Z")));
        assert!(store.contact("c2").await.unwrap().is_none());
        assert_eq!(store.contact_count().await.unwrap(), 1);
        store.close().await;
    });
}

fn contact_indexes(db: &Path) -> Vec<String> {
    query_strings(
        db,
        "SELECT name || ': ' || sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
         AND tbl_name IN ('contacts', 'contact_tags', 'contact_media') ORDER BY name",
    )
}

#[test]
fn the_indexes_set_aside_for_a_first_import_are_all_back_afterwards() {
    let dir = Dir::new();
    let expected_db = dir.path("expected.db");
    block_on(async {
        herald::store::Store::open(&expected_db)
            .await
            .unwrap()
            .close()
            .await
    });
    let expected = contact_indexes(&expected_db);
    assert_eq!(expected.len(), 6, "{expected:?}");

    let db = dir.path("herald.db");
    import(&db, Path::new(EXAMPLE), T1).success();
    assert_eq!(contact_indexes(&db), expected);

    // A bad row after the first batch of 500 was written: --strict rolls back, and the
    // rollback must bring the indexes back too.
    let mut csv = String::from("id,phone\n");
    for i in 0..600 {
        csv.push_str(&format!("c{i},+5198765{i:04}\n"));
    }
    csv.push_str("c-bad,12\n");
    let late_bad = dir.file("late-bad.csv", &csv);
    let rolled_back = dir.path("rolled-back.db");
    let a = herald(
        &rolled_back,
        T1,
        &["import".as_ref(), "--strict".as_ref(), late_bad.as_ref()],
    )
    .code(1);
    assert!(
        stderr(&a).contains(":602: column phone: "),
        "{}",
        stderr(&a)
    );
    assert_eq!(ids(&rolled_back), Vec::<String>::new());
    assert_eq!(contact_indexes(&rolled_back), expected);
}
