//! Contacts, their tags and their per-medium consent and interaction times: every SQL
//! statement that touches the `contacts`, `contact_tags` and `contact_media` tables.
//!
//! Bulk writes ([`ContactsWriter`]) run inside one write transaction chosen by the caller
//! and use multi-row statements of a few hundred rows: every statement crosses a channel to
//! sqlx's worker thread, so one row per statement is several times slower. Reads for export
//! ([`ContactsSnapshot`]) page through the table by primary key inside one read
//! transaction, so memory stays constant and the pages form one consistent snapshot.
//!
//! This module stores what it is given: the rules of an import (what a cell means, when
//! consent may be recorded) live in [`crate::contacts`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, Sqlite, Transaction};

use super::{Store, StoreError};
use crate::spec::channel::Medium;

/// Consent and interaction times of a contact on one medium (a `contact_media` row).
/// Instants are unix milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediumState {
    pub opted_in_at: Option<i64>,
    pub opted_in_source: Option<String>,
    pub opted_out_at: Option<i64>,
    pub opted_out_source: Option<String>,
    pub last_inbound_at: Option<i64>,
    pub last_outbound_at: Option<i64>,
}

impl MediumState {
    /// Opted in: consent was given and not withdrawn at or after the time it was given (an
    /// opt-out at the same millisecond wins). The same rule as the segments'
    /// `opted_in.<medium>`.
    pub fn is_opted_in(&self) -> bool {
        crate::audience::is_opted_in(self.opted_in_at, self.opted_out_at)
    }

    /// Opted out: an opt-out is recorded and no later consent overrides it.
    pub fn is_opted_out(&self) -> bool {
        self.opted_out_at.is_some() && !self.is_opted_in()
    }
}

/// Everything stored about one contact except its row key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactData {
    /// The external id, the upsert key.
    pub id: String,
    pub name: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub email: Option<String>,
    /// A Telegram chat id.
    pub telegram: Option<String>,
    /// A BCP 47 tag such as `pt-BR`.
    pub locale: Option<String>,
    /// An IANA time zone name.
    pub timezone: Option<String>,
    /// ISO 3166-1 alpha-2, uppercase.
    pub country: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; moves only when something about the contact changed.
    pub updated_at: i64,
    pub attributes: serde_json::Map<String, Value>,
    pub tags: BTreeSet<String>,
    /// One entry per medium the contact has a `contact_media` row for.
    pub media: BTreeMap<Medium, MediumState>,
}

/// A stored contact.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactRecord {
    /// The store's row key (stable; export order).
    pub pk: i64,
    pub data: ContactData,
}

/// One contact to write in a bulk write: what it should become and which parts changed.
/// Only the parts that changed are written, so a write of an unchanged contact is a no-op.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactWrite {
    /// The row key of an existing contact; `None` creates one.
    pub pk: Option<i64>,
    pub data: ContactData,
    /// Write the `contacts` row (always done for a new contact).
    pub row_changed: bool,
    /// Replace the contact's tags with `data.tags`.
    pub tags_changed: bool,
    /// Write these media's states from `data.media` (an absent entry is skipped).
    pub media_changed: Vec<Medium>,
}

/// Rows per multi-row statement. Bounded by SQLite's 32,766 variables: 500 contacts × 12
/// columns and 500 media rows × 8 columns stay far below it. Measured: a few hundred rows
/// per statement is where the per-statement cost stops mattering.
const CONTACT_ROWS: usize = 500;
const TAG_ROWS: usize = 1000;
const MEDIA_ROWS: usize = 500;

/// Whole contacts as one JSON array: each contact a JSON array of its columns, its tags and
/// its media, from the contacts chosen by the subquery `c`. One row per query instead of one
/// per contact: each row crosses a channel from sqlx's worker thread, and decoding one JSON
/// text is cheaper than decoding fourteen columns a contact. `json(...)` keeps the nested
/// values JSON rather than text.
const SELECT_CONTACTS_JSON: &str = "SELECT json_group_array(json_array(c.pk, c.id, c.name, \
    c.phone, c.email, c.telegram, c.locale, c.timezone, c.country, c.created_at, c.updated_at, \
    json(c.attributes), \
    json((SELECT json_group_array(t.tag) FROM contact_tags t WHERE t.contact_pk = c.pk)), \
    json((SELECT json_group_array(json_array(m.medium, m.opted_in_at, m.opted_in_source, \
        m.opted_out_at, m.opted_out_source, m.last_inbound_at, m.last_outbound_at)) \
     FROM contact_media m WHERE m.contact_pk = c.pk)))) \
    FROM";

type MediumJson = (
    String,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

type ContactJson = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Value,
    BTreeSet<String>,
    Vec<MediumJson>,
);

/// Runs a [`SELECT_CONTACTS_JSON`] query and decodes its contacts, in row-key order.
pub(super) async fn fetch_contacts<'c>(
    executor: impl sqlx::SqliteExecutor<'c>,
    source: &str,
    binds: Vec<Bound>,
) -> Result<Vec<ContactRecord>, sqlx::Error> {
    let sql = format!("{SELECT_CONTACTS_JSON} ({source}) c");
    let mut args = SqliteArguments::default();
    for b in binds {
        match b {
            Bound::Int(i) => add(&mut args, i)?,
            Bound::Text(t) => add(&mut args, t)?,
        }
    }
    let json: String = sqlx::query_scalar_with(AssertSqlSafe(sql), args)
        .fetch_one(executor)
        .await?;
    let rows: Vec<ContactJson> =
        serde_json::from_str(&json).map_err(|e| sqlx::Error::ColumnDecode {
            index: "contacts".to_string(),
            source: Box::new(e),
        })?;
    let mut out: Vec<ContactRecord> = rows.into_iter().map(decode_contact).collect();
    // json_group_array follows the subquery's order in practice; the contract is ours.
    out.sort_by_key(|r| r.pk);
    Ok(out)
}

pub(super) enum Bound {
    Int(i64),
    Text(String),
}

fn decode_contact(row: ContactJson) -> ContactRecord {
    let (pk, id, name, phone, email, telegram, locale, timezone, country) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8,
    );
    let attributes = match row.11 {
        Value::Object(map) => map,
        // The column's CHECK only asks for valid JSON; a non-object written by hand reads
        // as no attributes rather than failing every read of the contact.
        _ => serde_json::Map::new(),
    };
    let mut media = BTreeMap::new();
    for (medium, opted_in_at, opted_in_source, opted_out_at, opted_out_source, last_in, last_out) in
        row.13
    {
        // The table's CHECK constraint admits only the four media.
        let Some(medium) = Medium::parse(&medium) else {
            continue;
        };
        media.insert(
            medium,
            MediumState {
                opted_in_at,
                opted_in_source,
                opted_out_at,
                opted_out_source,
                last_inbound_at: last_in,
                last_outbound_at: last_out,
            },
        );
    }
    ContactRecord {
        pk,
        data: ContactData {
            id,
            name,
            phone,
            email,
            telegram,
            locale,
            timezone,
            country,
            created_at: row.9,
            updated_at: row.10,
            attributes,
            tags: row.12,
            media,
        },
    }
}

fn add<'q, T>(args: &mut SqliteArguments, value: T) -> Result<(), sqlx::Error>
where
    T: 'q + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    args.add(value).map_err(sqlx::Error::Encode)
}

/// `(?,?,…),(?,?,…)…`: `rows` groups of `columns` placeholders.
fn placeholders(rows: usize, columns: usize) -> String {
    let group = format!("({})", vec!["?"; columns].join(","));
    vec![group; rows].join(",")
}

impl Store {
    /// The contact with external id `id`, with its tags and media, or `None`.
    pub async fn contact(&self, id: &str) -> Result<Option<ContactRecord>, StoreError> {
        let found = fetch_contacts(
            self.reader(),
            "SELECT * FROM contacts WHERE id = ?",
            vec![Bound::Text(id.to_string())],
        )
        .await?;
        Ok(found.into_iter().next())
    }

    /// How many contacts the store holds.
    pub async fn contact_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
            .fetch_one(self.reader())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Starts a bulk write of contacts: one `BEGIN IMMEDIATE` transaction holding the single
    /// writer until [`ContactsWriter::commit`]. Dropping the writer rolls everything back.
    pub async fn contacts_writer(&self) -> Result<ContactsWriter, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("PRAGMA defer_foreign_keys = ON")
            .execute(&mut *tx)
            .await?;
        let max_pk: Option<i64> = sqlx::query_scalar("SELECT max(pk) FROM contacts")
            .fetch_one(&mut *tx)
            .await?;
        // Into empty tables, building the secondary indexes once at the end (by sorting) is
        // cheaper than keeping them up to date row by row. Dropping and recreating them
        // inside this transaction is atomic: readers see the old tables until the commit,
        // and a rollback brings the indexes back. The unique index on `id` stays (the
        // upserts need it).
        let mut deferred_indexes = Vec::new();
        if max_pk.is_none() {
            let indexes: Vec<(String, String)> = sqlx::query_as(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
                 AND tbl_name IN ('contacts', 'contact_tags', 'contact_media') ORDER BY name",
            )
            .fetch_all(&mut *tx)
            .await?;
            for (name, sql) in indexes {
                // The name comes from the schema, not from input; quoted as an identifier.
                let drop = format!("DROP INDEX \"{}\"", name.replace('"', "\"\""));
                sqlx::query(AssertSqlSafe(drop)).execute(&mut *tx).await?;
                deferred_indexes.push(sql);
            }
        }
        Ok(ContactsWriter {
            tx,
            deferred_indexes,
            next_pk: max_pk.unwrap_or(0) + 1,
            was_empty: max_pk.is_none(),
            statements: HashMap::new(),
        })
    }

    /// A consistent read-only view of every contact, for export. It holds one read
    /// connection (and a WAL snapshot) until dropped; writers are not blocked.
    pub async fn contacts_snapshot(&self) -> Result<ContactsSnapshot, StoreError> {
        Ok(ContactsSnapshot {
            tx: self.reader().begin().await?,
            after_pk: i64::MIN,
        })
    }
}

/// A bulk write of contacts in one transaction (see [`Store::contacts_writer`]).
pub struct ContactsWriter {
    tx: Transaction<'static, Sqlite>,
    /// Indexes dropped for a bulk load into empty tables, recreated before the commit.
    deferred_indexes: Vec<String>,
    /// The row key the next new contact gets. The writer picks row keys itself (as SQLite
    /// would: one more than the largest) instead of reading them back with RETURNING,
    /// which costs a message from the worker thread per row. Safe because this
    /// transaction holds the only write lock from its first statement.
    next_pk: i64,
    /// No contact existed when the writer began: then [`ContactsWriter::existing`] has
    /// nothing to find, and a first import skips a query per batch.
    was_empty: bool,
    statements: HashMap<(Statement, usize), Arc<str>>,
}

/// The multi-row statements of [`ContactsWriter::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Statement {
    Contacts,
    Tags,
    Media,
}

impl ContactsWriter {
    /// The contacts among `ids` that existed when this writer began, as they are now (with
    /// this transaction's updates), keyed by id. Contacts this writer created are not
    /// looked for: a caller creates each id once (see [`ContactsWriter::write`]).
    pub async fn existing(
        &mut self,
        ids: &[&str],
    ) -> Result<HashMap<String, ContactRecord>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        if ids.is_empty() || self.was_empty {
            return Ok(out);
        }
        // One JSON array parameter instead of one `?` per id: the statement text is the
        // same for every batch, so it is prepared once.
        let ids = serde_json::to_string(ids).expect("a list of strings serializes");
        let found = fetch_contacts(
            &mut *self.tx,
            "SELECT * FROM contacts WHERE id IN (SELECT value FROM json_each(?))",
            vec![Bound::Text(ids)],
        )
        .await?;
        for record in found {
            out.insert(record.data.id.clone(), record);
        }
        Ok(out)
    }

    /// Writes the changed parts of `writes`. A contact is created (`pk: None`) only if it
    /// did not exist (as found by [`ContactsWriter::existing`]), and at most once per
    /// writer; otherwise its tags and media would point at a row key that is not its own,
    /// which the foreign keys refuse.
    pub async fn write(&mut self, writes: Vec<ContactWrite>) -> Result<(), StoreError> {
        let mut rows: Vec<(i64, ContactData)> = Vec::with_capacity(writes.len());
        let mut retagged: Vec<i64> = Vec::new();
        let mut tags: Vec<(i64, String)> = Vec::new();
        let mut media: Vec<(i64, Medium, MediumState)> = Vec::new();
        // Values are moved into the statements' arguments, not copied: at a million rows
        // the copies and frees showed in the profile.
        for w in writes {
            let (pk, new) = match w.pk {
                Some(pk) => (pk, false),
                None => {
                    self.next_pk += 1;
                    (self.next_pk - 1, true)
                }
            };
            let mut data = w.data;
            if w.tags_changed {
                if !new {
                    retagged.push(pk);
                }
                tags.extend(std::mem::take(&mut data.tags).into_iter().map(|t| (pk, t)));
            }
            for medium in w.media_changed {
                if let Some(state) = data.media.remove(&medium) {
                    media.push((pk, medium, state));
                }
            }
            if w.row_changed || new {
                rows.push((pk, data));
            }
        }

        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(CONTACT_ROWS).collect();
            let sql = self.statement(Statement::Contacts, chunk.len());
            let mut args = SqliteArguments::default();
            for (pk, d) in chunk {
                // serde_json's map is ordered by key, so equal attributes give equal text.
                let attributes = serde_json::to_string(&d.attributes).expect("a JSON map");
                add(&mut args, pk)?;
                add(&mut args, d.id)?;
                add(&mut args, d.name)?;
                add(&mut args, d.phone)?;
                add(&mut args, d.email)?;
                add(&mut args, d.telegram)?;
                add(&mut args, d.locale)?;
                add(&mut args, d.timezone)?;
                add(&mut args, d.country)?;
                add(&mut args, d.created_at)?;
                add(&mut args, d.updated_at)?;
                add(&mut args, attributes)?;
            }
            sqlx::query_with(AssertSqlSafe(sql), args)
                .execute(&mut *self.tx)
                .await?;
        }

        if !retagged.is_empty() {
            sqlx::query(
                "DELETE FROM contact_tags WHERE contact_pk IN (SELECT value FROM json_each(?))",
            )
            .bind(serde_json::to_string(&retagged).expect("integers serialize"))
            .execute(&mut *self.tx)
            .await?;
        }
        let mut tags = tags.into_iter().peekable();
        while tags.peek().is_some() {
            let chunk: Vec<_> = tags.by_ref().take(TAG_ROWS).collect();
            let sql = self.statement(Statement::Tags, chunk.len());
            let mut args = SqliteArguments::default();
            for (pk, tag) in chunk {
                add(&mut args, pk)?;
                add(&mut args, tag)?;
            }
            sqlx::query_with(AssertSqlSafe(sql), args)
                .execute(&mut *self.tx)
                .await?;
        }

        let mut media = media.into_iter().peekable();
        while media.peek().is_some() {
            let chunk: Vec<_> = media.by_ref().take(MEDIA_ROWS).collect();
            let sql = self.statement(Statement::Media, chunk.len());
            let mut args = SqliteArguments::default();
            for (pk, medium, state) in chunk {
                add(&mut args, pk)?;
                add(&mut args, medium.as_str())?;
                add(&mut args, state.opted_in_at)?;
                add(&mut args, state.opted_in_source)?;
                add(&mut args, state.opted_out_at)?;
                add(&mut args, state.opted_out_source)?;
                add(&mut args, state.last_inbound_at)?;
                add(&mut args, state.last_outbound_at)?;
            }
            sqlx::query_with(AssertSqlSafe(sql), args)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// The text of a multi-row statement for `rows` rows, built once per size: a full chunk
    /// is about 10 kB of SQL, and most chunks are full.
    fn statement(&mut self, kind: Statement, rows: usize) -> Arc<str> {
        self.statements
            .entry((kind, rows))
            .or_insert_with(|| {
                let sql = match kind {
                    Statement::Contacts => format!(
                        "INSERT OR FAIL INTO contacts (pk, id, name, phone, email, telegram, locale, \
                         timezone, country, created_at, updated_at, attributes) VALUES {} \
                         ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                         phone = excluded.phone, email = excluded.email, \
                         telegram = excluded.telegram, locale = excluded.locale, \
                         timezone = excluded.timezone, country = excluded.country, \
                         created_at = excluded.created_at, updated_at = excluded.updated_at, \
                         attributes = excluded.attributes",
                        placeholders(rows, 12)
                    ),
                    Statement::Tags => format!(
                        "INSERT OR FAIL INTO contact_tags (contact_pk, tag) VALUES {}",
                        placeholders(rows, 2)
                    ),
                    Statement::Media => format!(
                        "INSERT OR FAIL INTO contact_media (contact_pk, medium, opted_in_at, \
                         opted_in_source, opted_out_at, opted_out_source, last_inbound_at, \
                         last_outbound_at) VALUES {} \
                         ON CONFLICT (contact_pk, medium) DO UPDATE SET \
                         opted_in_at = excluded.opted_in_at, \
                         opted_in_source = excluded.opted_in_source, \
                         opted_out_at = excluded.opted_out_at, \
                         opted_out_source = excluded.opted_out_source, \
                         last_inbound_at = excluded.last_inbound_at, \
                         last_outbound_at = excluded.last_outbound_at",
                        placeholders(rows, 8)
                    ),
                };
                Arc::from(sql)
            })
            .clone()
    }

    /// Makes every write of this transaction durable at once.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        for sql in std::mem::take(&mut self.deferred_indexes) {
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(self.tx.commit().await?)
    }

    /// Reports in this transaction that `contact_id` opted out of `medium` (the
    /// `contact.opted_out` webhook event, for the subscriptions in force).
    pub async fn report_opt_out(
        &mut self,
        contact_id: &str,
        medium: Medium,
        source: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        super::webhooks::enqueue_contact_opted_out(
            &mut self.tx,
            contact_id,
            medium,
            source,
            None,
            now,
        )
        .await?;
        Ok(())
    }

    /// Undoes every write of this transaction (dropping the writer does the same).
    pub async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.tx.rollback().await?)
    }
}

/// A read-only snapshot of the contacts, read page by page in row-key order.
pub struct ContactsSnapshot {
    tx: Transaction<'static, Sqlite>,
    after_pk: i64,
}

impl ContactsSnapshot {
    /// Every attribute key used by any contact, sorted.
    pub async fn attribute_keys(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT j.key FROM contacts c, json_each(c.attributes) j \
             WHERE json_type(c.attributes) = 'object' ORDER BY j.key",
        )
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// The next `limit` contacts after the previous page, in row-key order; empty at the end.
    pub async fn next_page(&mut self, limit: u32) -> Result<Vec<ContactRecord>, StoreError> {
        let page = fetch_contacts(
            &mut *self.tx,
            "SELECT * FROM contacts WHERE pk > ? ORDER BY pk LIMIT ?",
            vec![Bound::Int(self.after_pk), Bound::Int(i64::from(limit))],
        )
        .await?;
        if let Some(last) = page.last() {
            self.after_pk = last.pk;
        }
        Ok(page)
    }
}

impl Store {
    /// Deletes contact `id` with its tags and media (the foreign keys cascade), in one write
    /// transaction. Its deliveries stay: reports keep who was sent what. Returns whether a
    /// contact was deleted.
    pub async fn delete_contact(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM contacts WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }
}
