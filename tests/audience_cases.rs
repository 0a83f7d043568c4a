//! Tricky segment cases, each checked three ways: the expected contact ids, the compiled SQL
//! against a real SQLite file, and the in-memory evaluator.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use herald::audience::{self, AudienceError, ContactFacts, Matcher, MediumFacts, SqlValue};
use herald::spec::channel::Medium;
use herald::spec::segment::Condition;
use herald::spec::{SourceFile, load_sources, validate};
use herald::store::Store;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const DAY: i64 = 86_400_000;

fn now() -> jiff::Timestamp {
    "2026-03-15T12:00:00Z".parse().unwrap()
}

/// Loads and validates segment documents written in YAML.
fn segments(yaml: &str) -> BTreeMap<String, Condition> {
    let loaded = load_sources(vec![SourceFile {
        path: Arc::from("segments.yaml"),
        text: yaml.to_string(),
    }]);
    let checked = validate(loaded, now());
    assert!(checked.is_valid(), "{:#?}", checked.diagnostics);
    audience::segments_of(&checked.loaded)
}

fn segment(name: &str, condition: &str) -> String {
    format!(
        "---\napiVersion: herald/v1\nkind: Segment\nmetadata: {{name: {name}}}\nspec:\n  match: {condition}\n"
    )
}

fn contact(pk: i64, id: &str) -> ContactFacts {
    ContactFacts {
        pk,
        id: id.into(),
        created_at: now().as_millisecond() - 100 * DAY,
        ..ContactFacts::default()
    }
}

/// A store in a temporary file holding `contacts`, written directly as rows so that the
/// test controls every column.
async fn database(contacts: &[ContactFacts]) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let store = Store::open(&path).await.unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    for c in contacts {
        common::insert_contact(&mut conn, c).await;
    }
    drop(conn);
    pool.close().await;
    (store, dir)
}

/// Asserts that segment `name` selects exactly `expected` (contact ids), in SQL and in memory.
async fn assert_selects(
    contacts: &[ContactFacts],
    segments: &BTreeMap<String, Condition>,
    name: &str,
    expected: &[&str],
) {
    let (store, _dir) = database(contacts).await;
    let compiled = audience::compile(name, segments, now()).unwrap();
    let from_sql: Vec<String> = store
        .segment_sample(&compiled, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let matcher = Matcher::new(name, segments, now()).unwrap();
    let in_memory: Vec<String> = contacts
        .iter()
        .filter(|c| matcher.matches(c))
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(from_sql, expected, "SQL for {name}: {}", compiled.where_sql);
    assert_eq!(in_memory, expected, "evaluator for {name}");
    assert_eq!(
        store.segment_count(&compiled).await.unwrap(),
        expected.len() as u64
    );
}

fn named(pk: i64, id: &str, name: Option<&str>) -> ContactFacts {
    ContactFacts {
        name: name.map(String::from),
        ..contact(pk, id)
    }
}

#[tokio::test]
async fn text_comparisons_are_case_sensitive() {
    let contacts = [
        named(1, "upper", Some("Ana")),
        named(2, "lower", Some("ana")),
        named(3, "shout", Some("ANA MARIA")),
        named(4, "none", None),
    ];
    let s = segments(
        &[
            segment("eq", "{field: name, op: eq, value: ana}"),
            segment("contains", "{field: name, op: contains, value: An}"),
            segment("starts", "{field: name, op: starts_with, value: A}"),
            segment("ends", "{field: name, op: ends_with, value: na}"),
        ]
        .concat(),
    );
    assert_selects(&contacts, &s, "eq", &["lower"]).await;
    assert_selects(&contacts, &s, "contains", &["upper"]).await;
    assert_selects(&contacts, &s, "starts", &["upper", "shout"]).await;
    assert_selects(&contacts, &s, "ends", &["upper", "lower"]).await;
}

#[tokio::test]
async fn percent_underscore_and_star_are_plain_characters() {
    let contacts = [
        named(1, "percent", Some("50% off")),
        named(2, "fifty", Some("500 off")),
        named(3, "underscore", Some("a_b")),
        named(4, "axb", Some("axb")),
        named(5, "star", Some("a*b")),
    ];
    let s = segments(
        &[
            segment("percent", "{field: name, op: contains, value: '0%'}"),
            segment("underscore", "{field: name, op: contains, value: a_b}"),
            segment("star", "{field: name, op: starts_with, value: 'a*'}"),
            segment("not-star", "{field: name, op: not_contains, value: '*'}"),
        ]
        .concat(),
    );
    assert_selects(&contacts, &s, "percent", &["percent"]).await;
    assert_selects(&contacts, &s, "underscore", &["underscore"]).await;
    assert_selects(&contacts, &s, "star", &["star"]).await;
    assert_selects(
        &contacts,
        &s,
        "not-star",
        &["percent", "fifty", "underscore", "axb"],
    )
    .await;
}

fn with_city(pk: i64, id: &str, city: Option<serde_json::Value>) -> ContactFacts {
    let mut c = contact(pk, id);
    if let Some(city) = city {
        c.attributes.insert("city".into(), city);
    }
    c
}

#[tokio::test]
async fn a_missing_attribute_matches_neither_eq_nor_ne_but_not_eq_includes_it() {
    let contacts = [
        with_city(1, "lima", Some(json!("Lima"))),
        with_city(2, "cusco", Some(json!("Cusco"))),
        with_city(3, "missing", None),
        with_city(4, "null", Some(json!(null))),
        with_city(5, "number", Some(json!(5))),
    ];
    let s = segments(
        &[
            segment("ne", "{field: attributes.city, op: ne, value: Lima}"),
            segment(
                "not-eq",
                "{not: {field: attributes.city, op: eq, value: Lima}}",
            ),
            segment(
                "not-in",
                "{field: attributes.city, op: not_in, value: [Lima, Tacna]}",
            ),
            segment("absent", "{field: attributes.city, op: not_exists}"),
            segment(
                "not-ne",
                "{not: {field: attributes.city, op: ne, value: Lima}}",
            ),
        ]
        .concat(),
    );
    assert_selects(&contacts, &s, "ne", &["cusco"]).await;
    assert_selects(
        &contacts,
        &s,
        "not-eq",
        &["cusco", "missing", "null", "number"],
    )
    .await;
    assert_selects(&contacts, &s, "not-in", &["cusco"]).await;
    assert_selects(&contacts, &s, "absent", &["missing", "null"]).await;
    assert_selects(
        &contacts,
        &s,
        "not-ne",
        &["lima", "missing", "null", "number"],
    )
    .await;
}

#[tokio::test]
async fn attributes_compare_only_with_values_of_their_own_type() {
    let contacts = [
        with_city(1, "int", Some(json!(20))),
        with_city(2, "real", Some(json!(20.0))),
        with_city(3, "text", Some(json!("20"))),
        with_city(4, "bool", Some(json!(true))),
        with_city(5, "one", Some(json!(1))),
    ];
    let s = segments(
        &[
            segment("number", "{field: attributes.city, op: eq, value: 20}"),
            segment("text", "{field: attributes.city, op: eq, value: '20'}"),
            segment("true", "{field: attributes.city, op: eq, value: true}"),
            segment("gt", "{field: attributes.city, op: gt, value: 1}"),
        ]
        .concat(),
    );
    assert_selects(&contacts, &s, "number", &["int", "real"]).await;
    assert_selects(&contacts, &s, "text", &["text"]).await;
    assert_selects(&contacts, &s, "true", &["bool"]).await;
    assert_selects(&contacts, &s, "gt", &["int", "real"]).await;
}

fn tagged(pk: i64, id: &str, tags: &[&str]) -> ContactFacts {
    ContactFacts {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..contact(pk, id)
    }
}

#[tokio::test]
async fn tags_in_means_any_listed_tag_and_not_in_means_none() {
    let contacts = [
        tagged(1, "vip", &["vip"]),
        tagged(2, "vip-new", &["vip", "new"]),
        tagged(3, "shouting", &["VIP"]),
        tagged(4, "untagged", &[]),
    ];
    let s = segments(
        &[
            segment("in", "{field: tags, op: in, value: [vip, new]}"),
            segment("not-in", "{field: tags, op: not_in, value: [vip, new]}"),
            segment("lacks-vip", "{field: tags, op: not_contains, value: vip}"),
        ]
        .concat(),
    );
    assert_selects(&contacts, &s, "in", &["vip", "vip-new"]).await;
    assert_selects(&contacts, &s, "not-in", &["shouting", "untagged"]).await;
    assert_selects(&contacts, &s, "lacks-vip", &["shouting", "untagged"]).await;
    assert_selects(&contacts, &s, "with-tags", &["vip", "vip-new", "shouting"]).await;
}

#[tokio::test]
async fn built_in_segments_work_and_a_file_can_override_one() {
    let n = now().as_millisecond();
    let mut recent = contact(1, "recent");
    recent.created_at = n - 2 * DAY;
    recent.country = Some("PE".into());
    recent.media.insert(
        Medium::Sms,
        MediumFacts {
            last_inbound_at: Some(n - DAY),
            ..MediumFacts::default()
        },
    );
    let mut quiet = contact(2, "quiet");
    quiet.locale = Some("es".into());
    quiet.media.insert(
        Medium::Email,
        MediumFacts {
            last_inbound_at: Some(n - 31 * DAY),
            ..MediumFacts::default()
        },
    );
    let never = contact(3, "never");
    let contacts = [recent, quiet, never];
    let none = BTreeMap::new();
    assert_selects(
        &contacts,
        &none,
        "all-contacts",
        &["recent", "quiet", "never"],
    )
    .await;
    assert_selects(&contacts, &none, "created-last-7-days", &["recent"]).await;
    assert_selects(&contacts, &none, "inactive-30-days", &["quiet", "never"]).await;
    assert_selects(&contacts, &none, "country-known", &["recent"]).await;
    assert_selects(&contacts, &none, "language-known", &["quiet"]).await;

    let overridden = segments(&segment(
        "country-known",
        "{field: country, op: in, value: [BR]}",
    ));
    assert_selects(&contacts, &overridden, "country-known", &[]).await;
}

#[tokio::test]
async fn consent_counts_only_an_opt_in_later_than_any_opt_out() {
    let n = now().as_millisecond();
    let on = |pk, id: &str, opted_in_at, opted_out_at| {
        let mut c = contact(pk, id);
        c.media.insert(
            Medium::Whatsapp,
            MediumFacts {
                opted_in_at,
                opted_out_at,
                last_inbound_at: None,
            },
        );
        c
    };
    let contacts = [
        on(1, "in", Some(n), None),
        on(2, "out-after", Some(n), Some(n + 1)),
        on(3, "same-ms", Some(n), Some(n)),
        on(4, "back-in", Some(n + 1), Some(n)),
        on(5, "never", None, None),
        contact(6, "no-row"),
    ];
    let s = segments(
        &[
            segment("yes", "{field: opted_in.whatsapp, op: eq, value: true}"),
            segment("no", "{field: opted_in.whatsapp, op: ne, value: true}"),
        ]
        .concat(),
    );
    assert_selects(&contacts, &s, "yes", &["in", "back-in"]).await;
    assert_selects(
        &contacts,
        &s,
        "no",
        &["out-after", "same-ms", "never", "no-row"],
    )
    .await;
}

#[tokio::test]
async fn attribute_keys_and_values_are_bound_never_spliced() {
    let mut odd = contact(1, "odd");
    odd.attributes.insert(
        "it's \"odd\".key[0]".into(),
        json!("x'); DROP TABLE contacts; --"),
    );
    let contacts = [odd, contact(2, "plain")];
    let s = segments(&segment(
        "odd",
        r#"{field: "attributes.it's \"odd\".key[0]", op: eq, value: "x'); DROP TABLE contacts; --"}"#,
    ));
    let compiled = audience::compile("odd", &s, now()).unwrap();
    assert!(!compiled.where_sql.contains("odd"));
    assert!(!compiled.where_sql.contains("DROP"));
    assert!(
        compiled
            .params
            .contains(&SqlValue::Text("it's \"odd\".key[0]".into()))
    );
    assert_selects(&contacts, &s, "odd", &["odd"]).await;
}

#[test]
fn unknown_segments_and_cycles_are_errors_not_panics() {
    let mut s = BTreeMap::new();
    let refer = |name: &str| Condition {
        segment: Some(herald::spec::Located::new(
            name.to_string(),
            Default::default(),
        )),
        ..Condition::default()
    };
    s.insert("a".to_string(), refer("b"));
    s.insert("b".to_string(), refer("a"));
    assert_eq!(
        audience::compile("nope", &s, now()).unwrap_err(),
        AudienceError::UnknownSegment("nope".into())
    );
    assert_eq!(
        audience::compile("a", &s, now()).unwrap_err(),
        AudienceError::Cycle(vec!["a".into(), "b".into(), "a".into()])
    );
}

#[tokio::test]
async fn every_built_in_segment_compiles_and_runs_on_an_empty_store() {
    let (store, _dir) = database(&[]).await;
    for name in herald::spec::segment::BUILT_IN_SEGMENTS {
        let compiled = audience::compile(name, &BTreeMap::new(), now()).unwrap();
        assert_eq!(store.segment_count(&compiled).await.unwrap(), 0, "{name}");
    }
}
