//! Running compiled segments: counts, member keys and samples of an audience; and a
//! campaign's breakdown (recipients, messages per channel, exclusions by reason) with the
//! rules of [`crate::audience::campaign_query`], grouped in SQL.
//!
//! The SQL text of a segment comes from [`crate::audience::compile`], whose contract is that
//! no text of the user's files is in it; every value is a bound parameter.

use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, Row};

use super::{Store, StoreError};
use crate::audience::{
    Breakdown, CampaignQuery, CompiledSegment, ExclusionReason, FrequencyCapQuery, SqlValue,
};
use crate::spec::campaign::{Consent, Strategy};
use crate::spec::channel::Medium;

/// A contact shown in an audience preview.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SampledContact {
    #[serde(skip)]
    pub pk: i64,
    pub id: String,
    pub name: Option<String>,
}

pub(crate) fn arguments(params: &[SqlValue]) -> Result<SqliteArguments, sqlx::Error> {
    let mut args = SqliteArguments::default();
    for p in params {
        match p {
            SqlValue::Int(i) => args.add(*i),
            SqlValue::Real(f) => args.add(*f),
            SqlValue::Text(s) => args.add(s.clone()),
            SqlValue::Bool(b) => args.add(*b),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

impl Store {
    /// How many contacts the segment holds.
    pub async fn segment_count(&self, compiled: &CompiledSegment) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT count(*) FROM contacts c WHERE {}",
            compiled.where_sql
        );
        let n: i64 = sqlx::query_scalar_with(AssertSqlSafe(sql), arguments(&compiled.params)?)
            .fetch_one(self.reader())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The row keys of every contact in the segment, ascending.
    pub async fn segment_pks(&self, compiled: &CompiledSegment) -> Result<Vec<i64>, StoreError> {
        let sql = format!(
            "SELECT c.pk FROM contacts c WHERE {} ORDER BY c.pk",
            compiled.where_sql
        );
        Ok(
            sqlx::query_scalar_with(AssertSqlSafe(sql), arguments(&compiled.params)?)
                .fetch_all(self.reader())
                .await?,
        )
    }

    /// Up to `n` contacts of the segment, lowest row keys first (stable between calls, so a
    /// preview does not shuffle on every refresh).
    pub async fn segment_sample(
        &self,
        compiled: &CompiledSegment,
        n: u32,
    ) -> Result<Vec<SampledContact>, StoreError> {
        let sql = format!(
            "SELECT c.pk, c.id, c.name FROM contacts c WHERE {} ORDER BY c.pk LIMIT {n}",
            compiled.where_sql
        );
        let rows: Vec<(i64, String, Option<String>)> =
            sqlx::query_as_with(AssertSqlSafe(sql), arguments(&compiled.params)?)
                .fetch_all(self.reader())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(pk, id, name)| SampledContact { pk, id, name })
            .collect())
    }
}

/// A recipient shown in a campaign preview: who, and on which channels (never an address).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SampledRecipient {
    #[serde(skip)]
    pub pk: i64,
    pub id: String,
    pub name: Option<String>,
    /// The channels a message would go out on, in `use` order.
    pub channels: Vec<String>,
}

impl Store {
    /// Counts whom the campaign reaches, on which channels, and why the others are left out,
    /// by the rules of [`crate::audience::campaign_query`]. One query, grouped in SQL: no
    /// contact row leaves the database.
    pub async fn campaign_breakdown(&self, query: &CampaignQuery) -> Result<Breakdown, StoreError> {
        let (decided, params) = decided_sql(query, &[], false);
        let k = query.channels.len();
        let mut sql = format!("{decided} SELECT count(*)");
        for reason in ExclusionReason::ALL {
            sql.push_str(&format!(", coalesce(sum(r = {}), 0)", reason.code()));
        }
        for i in 0..k {
            sql.push_str(&format!(", coalesce(sum(s{i}), 0)"));
        }
        sql.push_str(" FROM decided");
        let row = sqlx::query_with(AssertSqlSafe(sql), arguments(&params)?)
            .persistent(false)
            .fetch_one(self.reader())
            .await?;
        let count = |i: usize| -> Result<u64, sqlx::Error> {
            Ok(u64::try_from(row.try_get::<i64, _>(i)?).unwrap_or(0))
        };
        let members = count(0)?;
        let mut breakdown = Breakdown::zero(query);
        for (j, reason) in ExclusionReason::ALL.iter().enumerate() {
            breakdown.excluded.insert(*reason, count(1 + j)?);
        }
        for (i, channel) in query.channels.iter().enumerate() {
            let n = count(1 + ExclusionReason::ALL.len() + i)?;
            breakdown.by_channel.insert(channel.name.clone(), n);
            breakdown.messages += n;
        }
        breakdown.recipients = members - breakdown.excluded_total();
        Ok(breakdown)
    }

    /// Up to `n` recipients of the campaign, lowest row keys first, with their channels.
    /// Stops reading at the n-th recipient when the audience is scanned in row-key order.
    pub async fn campaign_sample(
        &self,
        query: &CampaignQuery,
        n: u32,
    ) -> Result<Vec<SampledRecipient>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let (decided, params) = decided_sql(query, NAMES, false);
        let k = query.channels.len();
        let flags: String = (0..k).map(|i| format!(", s{i}")).collect();
        // No ORDER BY: `decided` comes out of `GROUP BY c.pk`, so in row-key order already,
        // and a sort would make SQLite decide every member before returning the first n.
        let sql =
            format!("{decided} SELECT pk, id, name{flags} FROM decided WHERE r = 0 LIMIT {n}");
        let rows = sqlx::query_with(AssertSqlSafe(sql), arguments(&params)?)
            .fetch_all(self.reader())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut channels = Vec::new();
            for (i, channel) in query.channels.iter().enumerate() {
                if row.try_get::<i64, _>(3 + i)? != 0 {
                    channels.push(channel.name.clone());
                }
            }
            out.push(SampledRecipient {
                pk: row.try_get(0)?,
                id: row.try_get(1)?,
                name: row.try_get(2)?,
                channels,
            });
        }
        Ok(out)
    }
}

/// Contact columns a caller of [`decided_sql`] wants carried through to `decided`, as
/// (alias, expression over `contacts c`); fixed text, never user input.
pub(crate) type CarriedColumns = &'static [(&'static str, &'static str)];

/// For previews: who.
const NAMES: CarriedColumns = &[("id", "c.id"), ("name", "c.name")];

/// The campaign's decision per audience member as a CTE `decided(pk, r, s0 .. s{k-1})`
/// (and the `carried` contact columns after `pk`), in row-key order:
/// `r` is 0 for a recipient, else [`ExclusionReason::code`]; `s{i}` is 1 when a message goes
/// out on channel `i` of `use`. Built in three layers: `base` reads each member's facts,
/// `codes` gives each channel the code of its first failing check, `decided` applies the
/// strategy.
///
/// Shaped for a full scan of 1M contacts (EXPLAIN QUERY PLAN and timings in
/// bench/audience.rs):
/// - contacts are read in row-key order and joined once to *all* their `contact_media`
///   rows (one range search per contact, not one per channel: 3 channels went from 1.8 s
///   to 0.5 s), and grouped back to one row per contact without a sort;
/// - each medium's row is reduced to one integer, `m{j}` = `last_inbound_at` × 8 + 4 if it
///   is set + 2 if opted out + 1 if `opted_in_at` is set, picked out with
///   `max(CASE medium ..)` (a contact has at most one row per medium): one aggregate per
///   medium instead of three cut the grouping by 40 %. Instants are unix ms, far inside
///   the ±2^60 this leaves;
/// - the frequency cap is an uncorrelated `IN (SELECT ..)` set, built once and probed per
///   contact, from a range of `deliveries_by_sent_at` (migration 0003): its cost follows
///   the sends within `per`, not the whole history. The `+` in `GROUP BY +d.contact_pk`
///   stops SQLite from preferring a full scan of `deliveries_by_contact` to save the sort;
/// - exclusion segments are evaluated in place (their tag tests are such sets);
/// - `LIMIT -1 OFFSET 0` keeps SQLite from flattening a layer into the next (it may not
///   flatten a subquery with an OFFSET), so each column is computed once per row rather
///   than at every reference.
///
/// Nothing from the files is spliced: segment SQL honours [`CompiledSegment`]'s contract,
/// media and counts are bound, and address columns come from the closed [`Medium`] enum.
/// Channel names never enter the SQL: channels are positions.
///
/// This is the one place the decision is made: [`Store::campaign_breakdown`] counts it and
/// the run snapshot (`store::runs`) writes it as delivery rows, so the plan's "N messages
/// to M recipients" and a run's rows cannot disagree.
///
/// With `capped_table`, the frequency cap's set is read from the temporary table
/// [`CAPPED_TABLE`] (filled by [`capped_sql`]) instead of from `deliveries`: an
/// `INSERT INTO deliveries` whose SELECT reads `deliveries` would make SQLite buffer the
/// whole result before inserting, which for a run snapshot is the whole audience.
pub(crate) fn decided_sql(
    query: &CampaignQuery,
    carried: CarriedColumns,
    capped_table: bool,
) -> (String, Vec<SqlValue>) {
    let k = query.channels.len();
    let mut params = Vec::new();
    let mut media: Vec<Medium> = Vec::new();
    for c in &query.channels {
        if !media.contains(&c.medium) {
            media.push(c.medium);
        }
    }
    let medium_of = |i: usize| {
        media
            .iter()
            .position(|m| *m == query.channels[i].medium)
            .expect("every channel's medium is listed")
    };

    let names_column: String = carried
        .iter()
        .map(|(alias, _)| format!(", {alias}"))
        .collect();

    // base: one row per audience member.
    let mut base = String::from("SELECT c.pk AS pk, ");
    for (alias, expr) in carried {
        base.push_str(&format!("{expr} AS {alias}, "));
    }
    if query.exclude.is_empty() {
        base.push_str("0 AS x");
    } else {
        let parts: Vec<String> = query
            .exclude
            .iter()
            .map(|e| format!("({})", e.where_sql))
            .collect();
        base.push_str(&format!("({}) AS x", parts.join(" OR ")));
        for e in &query.exclude {
            params.extend(e.params.iter().cloned());
        }
    }
    match query.frequency_cap {
        None => base.push_str(", 0 AS capped"),
        Some(_) if capped_table => base.push_str(&format!(
            ", c.pk IN (SELECT contact_pk FROM {CAPPED_TABLE}) AS capped"
        )),
        Some(cap) => {
            base.push_str(
                ", c.pk IN (SELECT d.contact_pk FROM deliveries d \
                 WHERE d.sent_at IS NOT NULL AND d.sent_at >= ? \
                 GROUP BY +d.contact_pk HAVING count(*) >= ?) AS capped",
            );
            params.push(SqlValue::Int(cap.since_ms));
            params.push(SqlValue::Int(i64::from(cap.max)));
        }
    }
    for (i, channel) in query.channels.iter().enumerate() {
        let column = address_column(channel.medium);
        base.push_str(&format!(
            ", ({column} IS NOT NULL AND {column} <> '') AS a{i}"
        ));
    }
    for (j, medium) in media.iter().enumerate() {
        base.push_str(
            ", max(CASE WHEN cm.medium = ? THEN coalesce(cm.last_inbound_at, 0) * 8 \
             + (cm.last_inbound_at IS NOT NULL) * 4 \
             + (cm.opted_out_at IS NOT NULL \
                AND (cm.opted_in_at IS NULL OR cm.opted_out_at >= cm.opted_in_at)) * 2 \
             + (cm.opted_in_at IS NOT NULL) END)",
        );
        base.push_str(&format!(" AS m{j}"));
        params.push(SqlValue::Text(medium.as_str().to_string()));
    }
    base.push_str(" FROM contacts c LEFT JOIN contact_media cm ON cm.contact_pk = c.pk");
    base.push_str(&format!(" WHERE {}", query.audience.where_sql));
    params.extend(query.audience.params.iter().cloned());
    base.push_str(" GROUP BY c.pk LIMIT -1 OFFSET 0");

    // codes: the first failing check per channel (0: passes). `m & b` is NULL without a
    // row for the medium, hence the coalesce.
    let mut codes = format!("SELECT pk{names_column}, x");
    for i in 0..k {
        let m = format!("m{}", medium_of(i));
        codes.push_str(&format!(
            ", CASE WHEN coalesce({m} & 4, 0) THEN {m} >> 3 END AS l{i}, \
             CASE WHEN NOT a{i} THEN 1 WHEN coalesce({m} & 2, 0) THEN 2"
        ));
        if query.consent == Consent::Required {
            codes.push_str(&format!(" WHEN NOT coalesce({m} & 1, 0) THEN 3"));
        }
        if query.only_previously_interacted {
            codes.push_str(&format!(" WHEN NOT coalesce({m} & 4, 0) THEN 4"));
        }
        codes.push_str(&format!(" WHEN capped THEN 5 ELSE 0 END AS f{i}"));
    }
    codes.push_str(" FROM base LIMIT -1 OFFSET 0");

    // decided: the strategy.
    let excluded = ExclusionReason::ExcludedSegment.code();
    let (reason, sends): (String, Vec<String>) = match query.strategy {
        Strategy::Specific => (
            format!("CASE WHEN x THEN {excluded} ELSE f0 END"),
            (0..k)
                .map(|i| {
                    if i == 0 {
                        "(NOT x AND f0 = 0)".to_string()
                    } else {
                        "0".to_string()
                    }
                })
                .collect(),
        ),
        Strategy::Fallback | Strategy::All => {
            let any_pass: Vec<String> = (0..k).map(|i| format!("f{i} = 0")).collect();
            let mut reason = format!(
                "CASE WHEN x THEN {excluded} WHEN {} THEN 0",
                any_pass.join(" OR ")
            );
            for i in 0..k {
                reason.push_str(&format!(" WHEN f{i} <> 1 THEN f{i}"));
            }
            reason.push_str(" ELSE 1 END");
            let sends = (0..k)
                .map(|i| {
                    let mut s = format!("(NOT x AND f{i} = 0");
                    if query.strategy == Strategy::Fallback {
                        for j in 0..i {
                            s.push_str(&format!(" AND f{j} <> 0"));
                        }
                    }
                    s.push(')');
                    s
                })
                .collect();
            (reason, sends)
        }
        Strategy::LastInteracted => {
            // Channel i is chosen when it has the latest inbound time, earlier ties winning.
            let chosen: Vec<String> = (0..k)
                .map(|i| {
                    let mut s = format!("(l{i} IS NOT NULL");
                    for j in 0..k {
                        if j < i {
                            s.push_str(&format!(" AND (l{j} IS NULL OR l{j} < l{i})"));
                        } else if j > i {
                            s.push_str(&format!(" AND (l{j} IS NULL OR l{j} <= l{i})"));
                        }
                    }
                    s.push(')');
                    s
                })
                .collect();
            let mut reason = format!("CASE WHEN x THEN {excluded}");
            for (i, c) in chosen.iter().enumerate() {
                reason.push_str(&format!(" WHEN {c} THEN f{i}"));
            }
            reason.push_str(&format!(
                " ELSE {} END",
                ExclusionReason::NotPreviouslyInteracted.code()
            ));
            let sends = chosen
                .iter()
                .enumerate()
                .map(|(i, c)| format!("(NOT x AND f{i} = 0 AND {c})"))
                .collect();
            (reason, sends)
        }
    };
    let mut decided = format!("SELECT pk{names_column}, {reason} AS r");
    for (i, s) in sends.iter().enumerate() {
        decided.push_str(&format!(", {s} AS s{i}"));
    }
    decided.push_str(" FROM codes LIMIT -1 OFFSET 0");

    (
        format!("WITH base AS ({base}), codes AS ({codes}), decided AS ({decided})"),
        params,
    )
}

/// The contacts column holding a medium's address; from the closed enum, never user text.
fn address_column(medium: Medium) -> &'static str {
    match medium {
        Medium::Sms | Medium::Whatsapp => "c.phone",
        Medium::Email => "c.email",
        Medium::Telegram => "c.telegram",
    }
}

/// The temporary table holding the contacts over a campaign's frequency cap during a run
/// snapshot (on the writer's connection, inside the snapshot's transaction).
pub(crate) const CAPPED_TABLE: &str = "temp.snapshot_capped";

/// Statements that fill [`CAPPED_TABLE`] with the contacts that have at least `cap.max`
/// deliveries sent since `cap.since_ms` (the same set the breakdown's subquery computes),
/// and their parameters. Its size follows the contacts recently sent to, not the audience.
pub(crate) fn capped_sql(cap: FrequencyCapQuery) -> [(String, Vec<SqlValue>); 3] {
    [
        (
            "CREATE TEMP TABLE IF NOT EXISTS snapshot_capped (contact_pk INTEGER PRIMARY KEY)"
                .to_string(),
            Vec::new(),
        ),
        (format!("DELETE FROM {CAPPED_TABLE}"), Vec::new()),
        (
            format!(
                "INSERT INTO {CAPPED_TABLE} (contact_pk) SELECT d.contact_pk FROM deliveries d \
                 WHERE d.sent_at IS NOT NULL AND d.sent_at >= ? \
                 GROUP BY +d.contact_pk HAVING count(*) >= ?"
            ),
            vec![
                SqlValue::Int(cap.since_ms),
                SqlValue::Int(i64::from(cap.max)),
            ],
        ),
    ]
}

/// Contact columns the run snapshot carries: the external id and every address column.
const SNAPSHOT: CarriedColumns = &[
    ("id", "c.id"),
    ("phone", "c.phone"),
    ("email", "c.email"),
    ("telegram", "c.telegram"),
];

/// The run snapshot as one `INSERT … SELECT` over [`decided_sql`]: for each audience member,
/// one `pending` row per channel the decision sends on (with the address copied, due at
/// `now_ms`), or one `excluded` row (channel NULL) with the reason's name. Idempotency keys
/// are `{key_prefix}{contact pk}-{channel position}` (position 0 for an exclusion).
///
/// `decided` is scanned once, as the outer loop of a `CROSS JOIN` with the k + 1 row
/// positions (SQLite never reorders a CROSS JOIN), so nothing proportional to the audience
/// is materialized. Channel names are bound, not spliced.
pub(crate) fn snapshot_sql(
    query: &CampaignQuery,
    run_id: i64,
    key_prefix: &str,
    now_ms: i64,
) -> (String, Vec<SqlValue>) {
    let (decided, mut params) = decided_sql(query, SNAPSHOT, true);
    let k = query.channels.len();
    let positions: Vec<String> = (0..=k).map(|i| format!("({i})")).collect();
    let mut channel = String::from("CASE p.column1 WHEN 0 THEN NULL");
    let mut address = String::from("CASE p.column1 WHEN 0 THEN NULL");
    let mut wanted = String::from("CASE p.column1 WHEN 0 THEN d.r <> 0");
    let mut channel_params = Vec::new();
    for (i, c) in query.channels.iter().enumerate() {
        channel.push_str(&format!(" WHEN {} THEN ?", i + 1));
        channel_params.push(SqlValue::Text(c.name.clone()));
        let column = match c.medium {
            Medium::Sms | Medium::Whatsapp => "d.phone",
            Medium::Email => "d.email",
            Medium::Telegram => "d.telegram",
        };
        address.push_str(&format!(" WHEN {} THEN {column}", i + 1));
        wanted.push_str(&format!(" WHEN {} THEN d.s{i}", i + 1));
    }
    channel.push_str(" END");
    address.push_str(" END");
    wanted.push_str(" ELSE 0 END");
    let mut reason = String::from("CASE d.r");
    for r in ExclusionReason::ALL {
        // Names from the closed enum, not user text.
        reason.push_str(&format!(" WHEN {} THEN '{}'", r.code(), r.as_str()));
    }
    reason.push_str(" END");
    let sql = format!(
        "{decided} INSERT INTO deliveries (run_id, contact_pk, contact_id, channel, address, \
         status, reason, next_attempt_at, idempotency_key, created_at, updated_at) \
         SELECT ?, d.pk, d.id, {channel}, {address}, \
         CASE WHEN p.column1 = 0 THEN 'excluded' ELSE 'pending' END, \
         CASE WHEN p.column1 = 0 THEN {reason} END, \
         CASE WHEN p.column1 = 0 THEN NULL ELSE ? END, \
         ? || d.pk || '-' || p.column1, ?, ? \
         FROM decided d CROSS JOIN (VALUES {}) p WHERE {wanted}",
        positions.join(", ")
    );
    params.push(SqlValue::Int(run_id));
    params.extend(channel_params);
    params.push(SqlValue::Int(now_ms));
    params.push(SqlValue::Text(key_prefix.to_string()));
    params.push(SqlValue::Int(now_ms));
    params.push(SqlValue::Int(now_ms));
    (sql, params)
}
