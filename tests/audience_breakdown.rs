//! A campaign's breakdown, counted by the store in SQL, against hand-worked cases per
//! strategy and reason and against the same rules in plain Rust
//! ([`CampaignQuery::decide`]) over random contacts.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use herald::audience::{
    AudienceError, Breakdown, CampaignQuery, ContactFacts, Decision, ExclusionReason, MediumFacts,
    campaign_query,
};
use herald::spec::channel::Medium;
use herald::spec::{Loaded, SourceFile, load_sources, validate};
use herald::store::Store;
use proptest::prelude::*;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const DAY: i64 = 86_400_000;

fn now() -> jiff::Timestamp {
    "2026-03-15T12:00:00Z".parse().unwrap()
}

fn now_ms() -> i64 {
    now().as_millisecond()
}

// ---------------------------------------------------------------- the revision

/// The channels every test campaign may use: two SMS channels (one medium shared), and one
/// each for WhatsApp, Telegram and e-mail.
const CHANNELS: [(&str, &str); 5] = [
    ("sms-a", "sms"),
    ("sms-b", "sms"),
    ("wa", "whatsapp"),
    ("tg", "telegram"),
    ("mail", "email"),
];

/// The campaign's knobs; everything else is fixed.
#[derive(Clone, Debug)]
struct Knobs {
    strategy: &'static str,
    channels: Vec<&'static str>,
    segment: &'static str,
    exclude: Vec<&'static str>,
    consent_required: bool,
    only_previously_interacted: bool,
    /// (max, per)
    frequency_cap: Option<(u32, &'static str)>,
}

impl Knobs {
    fn new(strategy: &'static str, channels: &[&'static str]) -> Knobs {
        Knobs {
            strategy,
            channels: channels.to_vec(),
            segment: "all-contacts",
            exclude: Vec::new(),
            consent_required: true,
            only_previously_interacted: false,
            frequency_cap: None,
        }
    }
}

fn revision_text(knobs: &Knobs) -> String {
    let mut text = String::new();
    for (name, medium) in CHANNELS {
        text.push_str(&format!(
            "---\napiVersion: herald/v1\nkind: Channel\nmetadata: {{name: {name}}}\nspec:\n  \
             type: outbox\n  medium: {medium}\n  outbox: {{path: out/{name}.jsonl}}\n"
        ));
    }
    text.push_str(
        "---\napiVersion: herald/v1\nkind: Template\nmetadata: {name: hello}\nspec:\n  \
         sms: {text: Hello}\n  whatsapp: {text: Hello}\n  telegram: {text: Hello}\n  \
         email: {subject: Hello, text: Hello}\n",
    );
    for (name, tag) in [("vip", "vip"), ("blocked", "blocked"), ("staff", "staff")] {
        text.push_str(&format!(
            "---\napiVersion: herald/v1\nkind: Segment\nmetadata: {{name: {name}}}\nspec:\n  \
             match: {{field: tags, op: contains, value: {tag}}}\n"
        ));
    }
    let mut campaign = format!(
        "---\napiVersion: herald/v1\nkind: Campaign\nmetadata: {{name: promo}}\nspec:\n  \
         audience:\n    segment: {}\n    exclude: [{}]\n    only_previously_interacted: {}\n  \
         channels: {{strategy: {}, use: [{}]}}\n  template: hello\n  schedule: {{now: true}}\n  \
         consent: {}\n",
        knobs.segment,
        knobs.exclude.join(", "),
        knobs.only_previously_interacted,
        knobs.strategy,
        knobs.channels.join(", "),
        if knobs.consent_required {
            "required"
        } else {
            "not_required"
        },
    );
    if let Some((max, per)) = knobs.frequency_cap {
        campaign.push_str(&format!(
            "  delivery:\n    frequency_cap: {{max: {max}, per: {per}}}\n"
        ));
    }
    text.push_str(&campaign);
    text
}

/// The revision, loaded and validated (panics on any error: the knobs must be valid).
fn revision(knobs: &Knobs) -> Loaded {
    let text = revision_text(knobs);
    let loaded = load_sources(vec![SourceFile {
        path: Arc::from("revision.yaml"),
        text: text.clone(),
    }]);
    let checked = validate(loaded, now());
    assert!(
        checked.is_valid(),
        "{:#?}\n{text}",
        checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .collect::<Vec<_>>()
    );
    checked.loaded
}

fn query(knobs: &Knobs) -> CampaignQuery {
    campaign_query(&revision(knobs), "promo", now()).unwrap()
}

// ---------------------------------------------------------------- the store

/// A contact and the times of its sent deliveries.
#[derive(Clone, Debug)]
struct Person {
    facts: ContactFacts,
    sent_at: Vec<i64>,
}

fn person(pk: i64, id: &str) -> Person {
    Person {
        facts: ContactFacts {
            pk,
            id: id.into(),
            name: Some(format!("Name {pk}")),
            created_at: now_ms() - 100 * DAY,
            ..ContactFacts::default()
        },
        sent_at: Vec::new(),
    }
}

impl Person {
    fn phone(mut self) -> Self {
        self.facts.phone = Some(format!("+5100000{:04}", self.facts.pk));
        self
    }
    fn email(mut self) -> Self {
        self.facts.email = Some(format!("p{}@example.com", self.facts.pk));
        self
    }
    fn telegram(mut self) -> Self {
        self.facts.telegram = Some(format!("{}", 1000 + self.facts.pk));
        self
    }
    fn tag(mut self, tag: &str) -> Self {
        self.facts.tags.insert(tag.into());
        self
    }
    fn medium(mut self, medium: Medium, facts: MediumFacts) -> Self {
        self.facts.media.insert(medium, facts);
        self
    }
    /// Opted in on `medium` a day ago.
    fn opted_in(self, medium: Medium) -> Self {
        let mut facts = self.facts.media.get(&medium).copied().unwrap_or_default();
        facts.opted_in_at = Some(now_ms() - DAY);
        self.medium(medium, facts)
    }
    fn wrote(self, medium: Medium, days_ago: i64) -> Self {
        let mut facts = self.facts.media.get(&medium).copied().unwrap_or_default();
        facts.last_inbound_at = Some(now_ms() - days_ago * DAY);
        self.medium(medium, facts)
    }
    fn sent(mut self, days_ago: i64) -> Self {
        self.sent_at.push(now_ms() - days_ago * DAY);
        self
    }
}

async fn open_database(path: &Path) -> (Store, SqlitePool) {
    let store = Store::open(path).await.unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        // Deliveries here belong to no real run: the test writes only what the breakdown reads.
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .foreign_keys(false),
        )
        .await
        .unwrap();
    (store, pool)
}

/// Replaces every contact and delivery with `people`, written directly as rows.
async fn replace_people(pool: &SqlitePool, people: &[Person]) {
    let mut tx = pool.begin().await.unwrap();
    for table in ["deliveries", "contact_media", "contact_tags", "contacts"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let mut delivery = 0;
    for p in people {
        let c = &p.facts;
        common::insert_contact(&mut tx, c).await;
        for sent_at in &p.sent_at {
            delivery += 1;
            sqlx::query(
                "INSERT INTO deliveries (run_id, contact_pk, contact_id, channel, status, \
                 idempotency_key, created_at, updated_at, sent_at) \
                 VALUES (1, ?, ?, ?, 'sent', ?, ?, ?, ?)",
            )
            .bind(c.pk)
            .bind(&c.id)
            .bind(format!("ch-{delivery}"))
            .bind(format!("key-{delivery}"))
            .bind(sent_at)
            .bind(sent_at)
            .bind(sent_at)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
}

struct Db {
    store: Store,
    pool: SqlitePool,
    _dir: tempfile::TempDir,
}

async fn database(people: &[Person]) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let (store, pool) = open_database(&dir.path().join("herald.db")).await;
    replace_people(&pool, people).await;
    Db {
        store,
        pool,
        _dir: dir,
    }
}

fn sent_map(people: &[Person]) -> BTreeMap<i64, Vec<i64>> {
    people
        .iter()
        .map(|p| (p.facts.pk, p.sent_at.clone()))
        .collect()
}

/// The breakdown from SQL, after checking that the in-memory rules give the same one.
async fn breakdown(db: &Db, people: &[Person], knobs: &Knobs) -> Breakdown {
    let q = query(knobs);
    let from_sql = db.store.campaign_breakdown(&q).await.unwrap();
    let in_memory = q.breakdown_of(people.iter().map(|p| &p.facts), &sent_map(people));
    assert_eq!(from_sql, in_memory, "SQL and the in-memory rules disagree");
    from_sql
}

/// A breakdown written by hand: channel counts, then non-zero exclusions.
fn expected(
    knobs: &Knobs,
    by_channel: &[(&str, u64)],
    excluded: &[(ExclusionReason, u64)],
    recipients: u64,
) -> Breakdown {
    let mut b = Breakdown::zero(&query(knobs));
    for (c, n) in by_channel {
        b.by_channel.insert(c.to_string(), *n);
        b.messages += n;
    }
    for (r, n) in excluded {
        b.excluded.insert(*r, *n);
    }
    b.recipients = recipients;
    b
}

// ---------------------------------------------------------------- hand-worked cases

use ExclusionReason::*;

#[tokio::test]
async fn specific_reports_the_first_failing_check_in_order() {
    let mut knobs = Knobs::new("specific", &["sms-a"]);
    knobs.only_previously_interacted = true;
    knobs.frequency_cap = Some((2, "7d"));
    let people = [
        // no phone, though opted out too: no_address comes first
        person(1, "no-phone").medium(
            Medium::Sms,
            MediumFacts {
                opted_out_at: Some(now_ms()),
                ..MediumFacts::default()
            },
        ),
        // opted in, then out later: opted out (and not consenting)
        person(2, "out-after-in").phone().medium(
            Medium::Sms,
            MediumFacts {
                opted_in_at: Some(now_ms() - 2 * DAY),
                opted_out_at: Some(now_ms() - DAY),
                last_inbound_at: Some(now_ms() - DAY),
            },
        ),
        // out and in at the same millisecond: the opt-out wins
        person(3, "same-ms").phone().medium(
            Medium::Sms,
            MediumFacts {
                opted_in_at: Some(now_ms() - DAY),
                opted_out_at: Some(now_ms() - DAY),
                last_inbound_at: None,
            },
        ),
        // opted back in after an opt-out, never wrote: not_previously_interacted
        person(4, "back-in").phone().medium(
            Medium::Sms,
            MediumFacts {
                opted_in_at: Some(now_ms() - DAY),
                opted_out_at: Some(now_ms() - 2 * DAY),
                last_inbound_at: None,
            },
        ),
        // wrote but never opted in: no_consent
        person(5, "no-consent").phone().wrote(Medium::Sms, 3),
        // two sends within 7d: capped
        person(6, "capped")
            .phone()
            .opted_in(Medium::Sms)
            .wrote(Medium::Sms, 1)
            .sent(1)
            .sent(6),
        // two sends, one older than 7d: not capped
        person(7, "ok")
            .phone()
            .opted_in(Medium::Sms)
            .wrote(Medium::Sms, 1)
            .sent(1)
            .sent(8),
        // an empty phone is no address
        {
            let mut p = person(8, "empty-phone")
                .opted_in(Medium::Sms)
                .wrote(Medium::Sms, 1);
            p.facts.phone = Some(String::new());
            p
        },
    ];
    let db = database(&people).await;
    assert_eq!(
        breakdown(&db, &people, &knobs).await,
        expected(
            &knobs,
            &[("sms-a", 1)],
            &[
                (NoAddress, 2),
                (OptedOut, 2),
                (NotPreviouslyInteracted, 1),
                (NoConsent, 1),
                (FrequencyCap, 1),
            ],
            1,
        )
    );
    let sample = db.store.campaign_sample(&query(&knobs), 10).await.unwrap();
    assert_eq!(
        sample.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["ok"]
    );
    assert_eq!(sample[0].channels, ["sms-a"]);
}

#[tokio::test]
async fn consent_not_required_still_leaves_out_opted_out_contacts() {
    let mut knobs = Knobs::new("specific", &["mail"]);
    knobs.consent_required = false;
    let people = [
        person(1, "never-asked").email(),
        person(2, "opted-out").email().medium(
            Medium::Email,
            MediumFacts {
                opted_out_at: Some(now_ms() - DAY),
                ..MediumFacts::default()
            },
        ),
        person(3, "in").email().opted_in(Medium::Email),
        person(4, "no-email").phone(),
    ];
    let db = database(&people).await;
    assert_eq!(
        breakdown(&db, &people, &knobs).await,
        expected(&knobs, &[("mail", 2)], &[(OptedOut, 1), (NoAddress, 1)], 2)
    );
}

#[tokio::test]
async fn only_audience_members_count_and_excluded_segments_come_first() {
    let mut knobs = Knobs::new("specific", &["tg"]);
    knobs.segment = "vip";
    knobs.exclude = vec!["blocked", "staff"];
    let people = [
        person(1, "vip")
            .tag("vip")
            .telegram()
            .opted_in(Medium::Telegram),
        // blocked and without an address: excluded_segment, not no_address
        person(2, "blocked").tag("vip").tag("blocked"),
        person(3, "staff")
            .tag("vip")
            .tag("staff")
            .telegram()
            .opted_in(Medium::Telegram),
        // not in the audience at all: not counted anywhere
        person(4, "outsider").telegram().opted_in(Medium::Telegram),
    ];
    let db = database(&people).await;
    assert_eq!(
        breakdown(&db, &people, &knobs).await,
        expected(&knobs, &[("tg", 1)], &[(ExcludedSegment, 2)], 1)
    );
}

#[tokio::test]
async fn fallback_takes_the_first_passing_channel_and_else_the_first_reason_with_an_address() {
    let knobs = Knobs::new("fallback", &["wa", "tg", "mail"]);
    let people = [
        // passes on wa and mail: wa only
        person(1, "wa-and-mail")
            .phone()
            .email()
            .opted_in(Medium::Whatsapp)
            .opted_in(Medium::Email),
        // no phone, telegram without consent, mail passes: mail
        person(2, "mail-only")
            .telegram()
            .email()
            .opted_in(Medium::Email),
        // phone opted out, telegram without consent: the first channel with an address
        // (wa) says opted_out
        person(3, "wa-out").phone().telegram().medium(
            Medium::Whatsapp,
            MediumFacts {
                opted_out_at: Some(now_ms()),
                ..MediumFacts::default()
            },
        ),
        // no phone; telegram without consent; e-mail opted out: no_consent (from tg)
        person(4, "tg-first").telegram().email().medium(
            Medium::Email,
            MediumFacts {
                opted_out_at: Some(now_ms()),
                ..MediumFacts::default()
            },
        ),
        // no address anywhere
        person(5, "nothing").opted_in(Medium::Whatsapp),
    ];
    let db = database(&people).await;
    assert_eq!(
        breakdown(&db, &people, &knobs).await,
        expected(
            &knobs,
            &[("wa", 1), ("tg", 0), ("mail", 1)],
            &[(OptedOut, 1), (NoConsent, 1), (NoAddress, 1)],
            2,
        )
    );
}

#[tokio::test]
async fn all_sends_one_message_per_passing_channel() {
    let knobs = Knobs::new("all", &["sms-a", "tg", "mail"]);
    let people = [
        // three channels pass: three messages
        person(1, "everything")
            .phone()
            .telegram()
            .email()
            .opted_in(Medium::Sms)
            .opted_in(Medium::Telegram)
            .opted_in(Medium::Email),
        // sms and mail pass, telegram has no address: two messages
        person(2, "two")
            .phone()
            .email()
            .opted_in(Medium::Sms)
            .opted_in(Medium::Email),
        // nothing passes: the first channel with an address (tg) gives the reason
        person(3, "none").telegram().email().medium(
            Medium::Telegram,
            MediumFacts {
                opted_out_at: Some(now_ms()),
                ..MediumFacts::default()
            },
        ),
    ];
    let db = database(&people).await;
    let b = breakdown(&db, &people, &knobs).await;
    assert_eq!(
        b,
        expected(
            &knobs,
            &[("sms-a", 2), ("tg", 1), ("mail", 2)],
            &[(OptedOut, 1)],
            2,
        )
    );
    assert_eq!(
        b.sentence(),
        "Sending 5 messages to 2 recipients; 1 excluded: 1 opted out"
    );
    let sample = db.store.campaign_sample(&query(&knobs), 1).await.unwrap();
    assert_eq!(sample.len(), 1);
    assert_eq!(sample[0].id, "everything");
    assert_eq!(sample[0].channels, ["sms-a", "tg", "mail"]);
}

#[tokio::test]
async fn last_interacted_picks_the_latest_inbound_medium_and_earlier_channels_win_ties() {
    let knobs = Knobs::new("last_interacted", &["sms-a", "wa", "mail"]);
    let people = [
        // wrote on WhatsApp yesterday, e-mail last week: wa
        person(1, "wa-latest")
            .phone()
            .email()
            .opted_in(Medium::Whatsapp)
            .opted_in(Medium::Email)
            .wrote(Medium::Whatsapp, 1)
            .wrote(Medium::Email, 7),
        // wrote on SMS and e-mail at the same time: sms-a (earlier in `use`)
        person(2, "tie")
            .phone()
            .email()
            .opted_in(Medium::Sms)
            .opted_in(Medium::Email)
            .wrote(Medium::Sms, 2)
            .wrote(Medium::Email, 2),
        // latest on e-mail, but no e-mail address: no_address (no falling back)
        person(3, "mail-latest-no-address")
            .phone()
            .opted_in(Medium::Sms)
            .wrote(Medium::Sms, 5)
            .wrote(Medium::Email, 1),
        // wrote only on Telegram, which the campaign does not use
        person(4, "telegram-only")
            .phone()
            .telegram()
            .opted_in(Medium::Sms)
            .wrote(Medium::Telegram, 1),
    ];
    let db = database(&people).await;
    assert_eq!(
        breakdown(&db, &people, &knobs).await,
        expected(
            &knobs,
            &[("sms-a", 1), ("wa", 1), ("mail", 0)],
            &[(NoAddress, 1), (NotPreviouslyInteracted, 1)],
            2,
        )
    );
}

#[tokio::test]
async fn the_sentence_orders_reasons_by_count_and_says_none_when_nobody_is_left_out() {
    let mut b = Breakdown {
        recipients: 10,
        messages: 20,
        ..Breakdown::default()
    };
    assert_eq!(
        b.sentence(),
        "Sending 20 messages to 10 recipients; none excluded"
    );
    b.excluded.insert(OptedOut, 1);
    b.excluded.insert(NoConsent, 2);
    b.excluded.insert(NoAddress, 0);
    assert_eq!(
        b.sentence(),
        "Sending 20 messages to 10 recipients; 3 excluded: 2 without consent, 1 opted out"
    );
    let one = Breakdown {
        recipients: 1,
        messages: 1,
        ..Breakdown::default()
    };
    assert_eq!(
        one.to_string(),
        "Sending 1 message to 1 recipient; none excluded"
    );
}

#[tokio::test]
async fn the_json_form_names_every_channel_and_every_reason() {
    let knobs = Knobs::new("fallback", &["tg", "mail"]);
    let people = [person(1, "a").email().opted_in(Medium::Email)];
    let db = database(&people).await;
    let b = breakdown(&db, &people, &knobs).await;
    assert_eq!(
        serde_json::to_value(&b).unwrap(),
        serde_json::json!({
            "recipients": 1,
            "messages": 1,
            "by_channel": {"mail": 1, "tg": 0},
            "excluded": {
                "excluded_segment": 0, "opted_out": 0, "no_address": 0,
                "no_consent": 0, "not_previously_interacted": 0, "frequency_cap": 0
            }
        })
    );
}

#[test]
fn an_unknown_campaign_is_an_error_naming_it() {
    let loaded = revision(&Knobs::new("specific", &["sms-a"]));
    let err = campaign_query(&loaded, "promp", now()).unwrap_err();
    assert_eq!(err, AudienceError::UnknownCampaign("promp".into()));
}

#[test]
fn the_query_lists_the_channels_of_use_in_order_with_their_media() {
    let q = query(&Knobs::new("all", &["mail", "sms-b", "wa"]));
    let channels: Vec<(&str, Medium)> = q
        .channels
        .iter()
        .map(|c| (c.name.as_str(), c.medium))
        .collect();
    assert_eq!(
        channels,
        [
            ("mail", Medium::Email),
            ("sms-b", Medium::Sms),
            ("wa", Medium::Whatsapp)
        ]
    );
    assert!(q.frequency_cap.is_none());
}

#[test]
fn the_frequency_cap_window_ends_now_and_reaches_back_per() {
    let mut knobs = Knobs::new("specific", &["sms-a"]);
    knobs.frequency_cap = Some((3, "2d"));
    let cap = query(&knobs).frequency_cap.unwrap();
    assert_eq!(cap.max, 3);
    assert_eq!(cap.since_ms, now_ms() - 2 * DAY);
}

// ---------------------------------------------------------------- SQL against the rules

fn time() -> impl Strategy<Value = i64> {
    prop::sample::select(vec![
        now_ms() - 10 * DAY,
        now_ms() - 3 * DAY,
        now_ms() - 2 * DAY,
        now_ms() - DAY,
        now_ms(),
        now_ms() + DAY,
    ])
}

fn address() -> impl Strategy<Value = Option<String>> {
    prop::sample::select(vec![None, Some(String::new()), Some("x".to_string())])
}

fn medium_facts() -> impl Strategy<Value = MediumFacts> {
    let t = || prop::option::weighted(0.5, time());
    (t(), t(), t()).prop_map(|(opted_in_at, opted_out_at, last_inbound_at)| MediumFacts {
        opted_in_at,
        opted_out_at,
        last_inbound_at,
    })
}

fn people() -> impl Strategy<Value = Vec<Person>> {
    let one = (
        (address(), address(), address()),
        prop::sample::subsequence(vec!["vip", "blocked", "staff"], 0..=3),
        prop::collection::btree_map(
            prop::sample::select(Medium::ALL.to_vec()),
            medium_facts(),
            0..=4,
        ),
        prop::collection::vec(time(), 0..4),
    );
    prop::collection::vec(one, 0..40).prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, ((phone, email, telegram), tags, media, sent_at))| {
                let pk = i as i64 + 1;
                let mut p = person(pk, &format!("c{pk}"));
                p.facts.phone = phone;
                p.facts.email = email;
                p.facts.telegram = telegram;
                p.facts.tags = tags.into_iter().map(String::from).collect();
                p.facts.media = media;
                p.sent_at = sent_at;
                p
            })
            .collect()
    })
}

fn knobs() -> impl Strategy<Value = Knobs> {
    let names: Vec<&'static str> = CHANNELS.iter().map(|(n, _)| *n).collect();
    (
        prop::sample::select(vec!["specific", "fallback", "last_interacted", "all"]),
        Just(names.clone()).prop_shuffle(),
        1..=5usize,
        prop::sample::select(vec!["all-contacts", "vip"]),
        prop::sample::subsequence(vec!["blocked", "staff"], 0..=2),
        any::<bool>(),
        any::<bool>(),
        prop::option::of((1u32..=3, prop::sample::select(vec!["2d", "7d"]))),
    )
        .prop_map(
            |(strategy, shuffled, n, segment, exclude, consent, only_prev, cap)| {
                let count = if strategy == "specific" { 1 } else { n };
                Knobs {
                    strategy,
                    channels: shuffled[..count].to_vec(),
                    segment,
                    exclude,
                    consent_required: consent,
                    only_previously_interacted: only_prev,
                    frequency_cap: cap,
                }
            },
        )
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    db: Db,
}

fn fixture() -> &'static std::sync::Mutex<Fixture> {
    static FIXTURE: OnceLock<std::sync::Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = runtime.block_on(database(&[]));
        std::sync::Mutex::new(Fixture { runtime, db })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random contacts and campaigns: the store's grouped SQL gives the breakdown that
    /// deciding each contact in plain Rust gives, and the sample holds recipients only.
    #[test]
    fn the_sql_breakdown_equals_the_rules_applied_contact_by_contact(
        people in people(),
        campaigns in prop::collection::vec(knobs(), 3),
    ) {
        let fixture = fixture().lock().unwrap_or_else(|e| e.into_inner());
        let db = &fixture.db;
        fixture.runtime.block_on(replace_people(&db.pool, &people));
        let sent = sent_map(&people);
        for knobs in &campaigns {
            let q = query(knobs);
            let from_sql = fixture.runtime.block_on(db.store.campaign_breakdown(&q)).unwrap();
            let in_memory = q.breakdown_of(people.iter().map(|p| &p.facts), &sent);
            prop_assert_eq!(&from_sql, &in_memory, "{:?}", knobs);
            prop_assert_eq!(from_sql.messages, from_sql.by_channel.values().sum::<u64>());

            let sample = fixture.runtime.block_on(db.store.campaign_sample(&q, 100)).unwrap();
            let expected: Vec<(String, Vec<String>)> = people
                .iter()
                .filter_map(|p| match q.decide(&p.facts, &p.sent_at) {
                    Some(Decision::Send(channels)) => Some((
                        p.facts.id.clone(),
                        channels.iter().map(|i| q.channels[*i].name.clone()).collect(),
                    )),
                    _ => None,
                })
                .collect();
            let got: Vec<(String, Vec<String>)> =
                sample.into_iter().map(|r| (r.id, r.channels)).collect();
            prop_assert_eq!(got, expected, "{:?}", knobs);
        }
    }
}
