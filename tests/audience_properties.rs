//! The SQL a segment compiles to selects exactly the contacts the in-memory evaluator
//! selects, for random contacts in a real SQLite file and random valid segments.
//!
//! Value domains are small on purpose (a few names differing only in case, tags, cities,
//! numbers near each other, times on the `within`/`older_than` boundaries, text with `%`,
//! `_` and `*`, some NULLs, attributes of mixed types) so that conditions hit and miss.
//! Every generated segment set is first run through `herald::spec::validate`, so the
//! generator only produces trees that validation accepts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use herald::audience::{self, ContactFacts, Matcher, MediumFacts};
use herald::spec::channel::Medium;
use herald::spec::located::{Located, Pos};
use herald::spec::segment::{BUILT_IN_SEGMENTS, Condition, Op};
use herald::spec::{SourceFile, load_sources, validate};
use herald::store::Store;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const DAY: i64 = 86_400_000;

fn now() -> jiff::Timestamp {
    "2026-03-15T12:00:00Z".parse().unwrap()
}

fn now_ms() -> i64 {
    now().as_millisecond()
}

/// Times on and around the boundaries of `1d`, `7d`, `30d` and a few dates.
fn time_points() -> Vec<i64> {
    let n = now_ms();
    let mut out: Vec<i64> = [-400, -31, -30, -29, -8, -7, -6, -1, 0, 1]
        .iter()
        .map(|d| n + d * DAY)
        .collect();
    out.extend([
        n - 7 * DAY - 1,
        n - 7 * DAY + 1,
        n - 30 * DAY - 1,
        n - DAY / 2,
    ]);
    out
}

const TEXTS: &[&str] = &[
    "Ana",
    "ana",
    "ANA",
    "Ana María",
    "Bruno",
    "50%_off",
    "a*b",
    "a_b",
    "a%b",
    "Lima",
    "lima",
    "BR",
    "br",
    "pt-BR",
    "es",
    "",
    "42",
    "true",
];

const NEEDLES: &[&str] = &[
    "Ana", "ana", "a", "A", "%", "_", "*", "a%", "_b", "a*", "Lim", "ma", "BR", "-", "í", "42",
];

const TAGS: &[&str] = &["vip", "VIP", "new", "churned", "b%", "x_y"];

const ATTRIBUTE_KEYS: &[&str] = &["city", "age", "active", "since", "weird.key", "q\"k"];

// ---------------------------------------------------------------- contacts

fn text() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.8, prop::sample::select(TEXTS).prop_map(String::from))
}

fn time() -> impl Strategy<Value = i64> {
    prop::sample::select(time_points())
}

fn attribute_value() -> impl Strategy<Value = Value> {
    let points = time_points();
    prop_oneof![
        prop::sample::select(vec!["Lima", "Cusco", "lima", "São Paulo", "50%_off", "a*b"])
            .prop_map(Value::from),
        (17i64..23).prop_map(Value::from),
        prop::sample::select(vec![20.0, 20.5, 17.25]).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(vec![
            "20",
            "true",
            "2026-03-08",
            "2026-02-30",
            "2026-03-15T12:00:00Z",
            "2026-03-08T12:00:00Z",
            "2026-3-8",
            "2026-03-08 12:00:00",
        ])
        .prop_map(Value::from),
        prop::sample::select(points).prop_map(Value::from),
        Just(Value::Null),
        Just(json!(["Lima"])),
        Just(json!({"a": 1})),
    ]
}

fn medium_facts() -> impl Strategy<Value = MediumFacts> {
    let t = || prop::option::weighted(0.6, time());
    (t(), t(), t()).prop_map(|(opted_in_at, opted_out_at, last_inbound_at)| MediumFacts {
        opted_in_at,
        opted_out_at,
        last_inbound_at,
    })
}

fn contact() -> impl Strategy<Value = ContactFacts> {
    let texts = (
        prop::sample::select(vec!["c", "C", "id%", "x_"]),
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
    );
    let rest = (
        time(),
        prop::sample::subsequence(TAGS, 0..=3),
        prop::collection::btree_map(
            prop::sample::select(ATTRIBUTE_KEYS),
            attribute_value(),
            0..4,
        ),
        prop::collection::btree_map(
            prop::sample::select(Medium::ALL.to_vec()),
            medium_facts(),
            0..3,
        ),
    );
    (texts, rest).prop_map(
        |(
            (id, name, phone, email, telegram, locale, timezone, country),
            (created_at, tags, attributes, media),
        )| ContactFacts {
            pk: 0,
            id: id.to_string(),
            name,
            phone,
            email,
            telegram,
            locale,
            timezone,
            country,
            created_at,
            tags: tags.into_iter().map(String::from).collect(),
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            media,
        },
    )
}

/// Numbers the contacts from 1 and makes ids unique (keeping the generated prefix, so that
/// `starts_with` on ids still hits).
fn number(mut contacts: Vec<ContactFacts>) -> Vec<ContactFacts> {
    for (i, c) in contacts.iter_mut().enumerate() {
        c.pk = i as i64 + 1;
        c.id = format!("{}{}", c.id, c.pk);
    }
    contacts
}

// ---------------------------------------------------------------- the database

/// The store, and a connection of the test's own that writes contacts row by row so that
/// the test controls every column.
async fn open_database(path: &Path) -> (Store, SqlitePool) {
    let store = Store::open(path).await.expect("open the store");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .expect("open SQLite");
    (store, pool)
}

async fn replace_contacts(pool: &SqlitePool, contacts: &[ContactFacts]) {
    let mut tx = pool.begin().await.unwrap();
    for table in ["contact_tags", "contact_media", "contacts"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    for c in contacts {
        common::insert_contact(&mut tx, c).await;
    }
    tx.commit().await.unwrap();
}

// ---------------------------------------------------------------- conditions

fn at<T>(value: T) -> Located<T> {
    Located::new(value, Pos::default())
}

fn test(field: String, op: Op, value: Option<Value>) -> Condition {
    Condition {
        field: Some(at(field)),
        op: Some(at(op)),
        value: value.map(at),
        ..Condition::default()
    }
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(TEXTS).prop_map(Value::from),
        1 => prop::sample::select(vec!["Lima", "Cusco", "20", "2026-03-08"]).prop_map(Value::from),
        1 => (17i64..23).prop_map(Value::from),
        1 => prop::sample::select(vec![20.0, 20.5]).prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
    ]
}

fn scalar_list() -> impl Strategy<Value = Value> {
    prop::collection::vec(scalar(), 1..4).prop_map(Value::from)
}

fn needle() -> impl Strategy<Value = Value> {
    prop::sample::select(NEEDLES).prop_map(Value::from)
}

fn duration() -> impl Strategy<Value = Value> {
    prop::sample::select(vec!["1d", "7d", "30d", "12h", "2w", "1d12h"]).prop_map(Value::from)
}

fn date() -> impl Strategy<Value = Value> {
    let mut dates: Vec<String> = time_points()
        .into_iter()
        .map(|ms| jiff::Timestamp::from_millisecond(ms).unwrap().to_string())
        .collect();
    dates.extend([
        "2026-03-08".into(),
        "2026-03-15".into(),
        "2025-01-01".into(),
    ]);
    prop::sample::select(dates).prop_map(Value::from)
}

fn time_op() -> impl Strategy<Value = (Op, Option<Value>)> {
    prop_oneof![
        prop::sample::select(vec![Op::Exists, Op::NotExists]).prop_map(|op| (op, None)),
        (
            prop::sample::select(vec![
                Op::Gt,
                Op::Gte,
                Op::Lt,
                Op::Lte,
                Op::Before,
                Op::After
            ]),
            date()
        )
            .prop_map(|(op, v)| (op, Some(v))),
        (
            prop::sample::select(vec![Op::Within, Op::OlderThan]),
            duration()
        )
            .prop_map(|(op, v)| (op, Some(v))),
    ]
}

fn text_op() -> impl Strategy<Value = (Op, Option<Value>)> {
    prop_oneof![
        prop::sample::select(vec![Op::Exists, Op::NotExists]).prop_map(|op| (op, None)),
        (prop::sample::select(vec![Op::Eq, Op::Ne]), scalar()).prop_map(|(op, v)| (op, Some(v))),
        (prop::sample::select(vec![Op::In, Op::NotIn]), scalar_list())
            .prop_map(|(op, v)| (op, Some(v))),
        (
            prop::sample::select(vec![
                Op::Contains,
                Op::NotContains,
                Op::StartsWith,
                Op::EndsWith
            ]),
            needle()
        )
            .prop_map(|(op, v)| (op, Some(v))),
    ]
}

fn leaf() -> impl Strategy<Value = Condition> {
    let text_field = prop::sample::select(vec![
        "id", "name", "phone", "email", "telegram", "locale", "timezone", "country",
    ]);
    let time_field = prop::sample::select(vec![
        "created_at",
        "last_inbound_at",
        "last_inbound_at.sms",
        "last_inbound_at.whatsapp",
        "last_inbound_at.email",
    ]);
    let tag = prop::sample::select(TAGS).prop_map(Value::from);
    let tag_op = prop_oneof![
        prop::sample::select(vec![Op::Exists, Op::NotExists]).prop_map(|op| (op, None)),
        (
            prop::sample::select(vec![Op::Contains, Op::NotContains]),
            tag.clone()
        )
            .prop_map(|(op, v)| (op, Some(v))),
        (
            prop::sample::select(vec![Op::In, Op::NotIn]),
            prop::collection::vec(tag, 1..3)
        )
            .prop_map(|(op, v)| (op, Some(Value::from(v)))),
    ];
    let number = prop_oneof![(17i64..23).prop_map(Value::from), Just(Value::from(20.5))];
    let attribute_op = prop_oneof![
        3 => text_op(),
        2 => time_op(),
        2 => (prop::sample::select(vec![Op::Gt, Op::Gte, Op::Lt, Op::Lte]), number)
            .prop_map(|(op, v)| (op, Some(v))),
    ];
    prop_oneof![
        (text_field, text_op()).prop_map(|(f, (op, v))| test(f.into(), op, v)),
        (time_field, time_op()).prop_map(|(f, (op, v))| test(f.into(), op, v)),
        tag_op.prop_map(|(op, v)| test("tags".into(), op, v)),
        (
            prop::sample::select(Medium::ALL.to_vec()),
            prop::sample::select(vec![Op::Eq, Op::Ne]),
            any::<bool>()
        )
            .prop_map(|(m, op, b)| test(format!("opted_in.{m}"), op, Some(b.into()))),
        (prop::sample::select(ATTRIBUTE_KEYS), attribute_op).prop_map(|(k, (op, v))| test(
            format!("attributes.{k}"),
            op,
            v
        )),
    ]
}

/// A condition tree of depth at most 3 whose leaves may also refer to `names`.
fn tree(names: Vec<&'static str>) -> BoxedStrategy<Condition> {
    let base = if names.is_empty() {
        leaf().boxed()
    } else {
        prop_oneof![
            5 => leaf(),
            1 => prop::sample::select(names).prop_map(|n| Condition {
                segment: Some(at(n.to_string())),
                ..Condition::default()
            }),
        ]
        .boxed()
    };
    base.prop_recursive(3, 24, 4, |inner| {
        let list = prop::collection::vec(inner.clone().prop_map(at), 1..4).prop_map(at);
        prop_oneof![
            list.clone().prop_map(|l| Condition {
                all: Some(l),
                ..Condition::default()
            }),
            list.prop_map(|l| Condition {
                any: Some(l),
                ..Condition::default()
            }),
            inner.prop_map(|c| Condition {
                not: Some(at(Box::new(c))),
                ..Condition::default()
            }),
        ]
    })
    .boxed()
}

/// A revision's segments: `helper-a` (no references), `helper-b` (may refer to helper-a and
/// the built-ins), sometimes an override of a built-in, and `root`, which may refer to all.
#[derive(Clone, Debug)]
struct SegmentSet {
    segments: Vec<(String, Condition)>,
}

fn segment_set() -> impl Strategy<Value = SegmentSet> {
    let mut with_a: Vec<&'static str> = BUILT_IN_SEGMENTS.to_vec();
    with_a.push("helper-a");
    let mut with_b = with_a.clone();
    with_b.push("helper-b");
    (
        tree(Vec::new()),
        tree(with_a),
        prop::option::weighted(
            0.3,
            (
                prop::sample::select(BUILT_IN_SEGMENTS.to_vec()),
                tree(Vec::new()),
            ),
        ),
        tree(with_b),
    )
        .prop_map(|(a, b, overridden, root)| {
            let mut segments = vec![("helper-a".to_string(), a), ("helper-b".to_string(), b)];
            if let Some((name, c)) = overridden {
                segments.push((name.to_string(), c));
            }
            segments.push(("root".to_string(), root));
            SegmentSet { segments }
        })
}

/// Writes the segments as one YAML file, loads and validates it the way `herald validate`
/// does, and returns the segments by name. Panics if validation finds an error: the
/// generator must produce valid segments only.
fn validated(set: &SegmentSet) -> BTreeMap<String, Condition> {
    let text = set
        .segments
        .iter()
        .map(|(name, condition)| {
            let doc = json!({
                "apiVersion": "herald/v1",
                "kind": "Segment",
                "metadata": {"name": name},
                "spec": {"match": condition},
            });
            format!("---\n{doc}\n")
        })
        .collect::<String>();
    let loaded = load_sources(vec![SourceFile {
        path: Arc::from("segments.yaml"),
        text: text.clone(),
    }]);
    let checked = validate(loaded, now());
    let errors: Vec<String> = checked
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{d:?}"))
        .collect();
    assert!(
        errors.is_empty(),
        "generated segments are invalid: {errors:#?}\n{text}"
    );
    audience::segments_of(&checked.loaded)
}

// ---------------------------------------------------------------- the property

struct Fixture {
    runtime: tokio::runtime::Runtime,
    store: Store,
    pool: SqlitePool,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (store, pool) = runtime.block_on(open_database(&dir.path().join("herald.db")));
        Fixture {
            runtime,
            store,
            pool,
            _dir: dir,
        }
    }

    /// Checks that SQL and evaluator select the same contacts for the segment `root` and
    /// every other segment of the set.
    fn agree(
        &self,
        contacts: &[ContactFacts],
        segments: &BTreeMap<String, Condition>,
    ) -> Result<(), TestCaseError> {
        let mut names: Vec<&str> = segments.keys().map(String::as_str).collect();
        names.extend(BUILT_IN_SEGMENTS);
        for name in names {
            let compiled = audience::compile(name, segments, now()).unwrap();
            let matcher = Matcher::new(name, segments, now()).unwrap();
            let from_sql: BTreeSet<i64> = self
                .runtime
                .block_on(self.store.segment_pks(&compiled))
                .map_err(|e| TestCaseError::fail(format!("{e}\n{}", compiled.where_sql)))?
                .into_iter()
                .collect();
            let expected: BTreeSet<i64> = contacts
                .iter()
                .filter(|c| matcher.matches(c))
                .map(|c| c.pk)
                .collect();
            prop_assert_eq!(
                &from_sql,
                &expected,
                "segment {} disagrees; only SQL: {:?}; only evaluator: {:?}\nSQL: {}\nparams: {:?}",
                name,
                from_sql.difference(&expected).collect::<Vec<_>>(),
                expected.difference(&from_sql).collect::<Vec<_>>(),
                compiled.where_sql,
                compiled.params
            );
            let count = self
                .runtime
                .block_on(self.store.segment_count(&compiled))
                .unwrap();
            prop_assert_eq!(count, expected.len() as u64);
        }
        Ok(())
    }
}

struct FixedContacts {
    fixture: Fixture,
    contacts: Vec<ContactFacts>,
}

fn fixed_contacts() -> &'static std::sync::Mutex<FixedContacts> {
    static FIXED: OnceLock<std::sync::Mutex<FixedContacts>> = OnceLock::new();
    FIXED.get_or_init(|| {
        let mut runner = TestRunner::deterministic();
        let contacts = number(
            prop::collection::vec(contact(), 400)
                .new_tree(&mut runner)
                .unwrap()
                .current(),
        );
        let fixture = Fixture::new();
        fixture
            .runtime
            .block_on(replace_contacts(&fixture.pool, &contacts));
        std::sync::Mutex::new(FixedContacts { fixture, contacts })
    })
}

fn fresh_fixture() -> &'static std::sync::Mutex<Fixture> {
    static FRESH: OnceLock<std::sync::Mutex<Fixture>> = OnceLock::new();
    FRESH.get_or_init(|| std::sync::Mutex::new(Fixture::new()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Many segment sets over one fixed set of 400 contacts (fast: no inserts per case).
    #[test]
    fn sql_and_evaluator_agree_on_a_fixed_contact_set(set in segment_set()) {
        let segments = validated(&set);
        let fixed = fixed_contacts().lock().unwrap_or_else(|e| e.into_inner());
        fixed.fixture.agree(&fixed.contacts, &segments)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Fresh contacts each case, written to the SQLite file, with a fresh segment set.
    #[test]
    fn sql_and_evaluator_agree_on_fresh_contacts(
        contacts in prop::collection::vec(contact(), 150..250).prop_map(number),
        set in segment_set(),
    ) {
        let segments = validated(&set);
        let fixture = fresh_fixture().lock().unwrap_or_else(|e| e.into_inner());
        fixture.runtime.block_on(replace_contacts(&fixture.pool, &contacts));
        fixture.agree(&contacts, &segments)?;
    }
}
