//! Importing contacts from CSV: rows are parsed and checked on a thread of their own while
//! the writer merges each batch with the stored contacts and writes what changed, all in
//! one write transaction.
//!
//! [`merge`] holds the rules (what a cell does to a stored contact, when consent may be
//! recorded) as a pure function, so they are tested without a database.

use std::io::Read;

use tokio::sync::mpsc;

use super::row::{Columns, ContactRow, HeaderError, RowIssue, RowParser};
use crate::spec::channel::Medium;
use crate::store::contacts::{ContactData, ContactRecord, ContactWrite};
use crate::store::{Store, StoreError};

/// The consent source an import records, and the only opt-out source an import may undo.
pub const IMPORT_SOURCE: &str = "import";

/// Rows per batch: one lookup of the stored contacts and one multi-row upsert each.
const BATCH_ROWS: usize = 500;

/// Batches parsed ahead of the writer. A few keep both threads busy; more only cost memory.
const BATCHES_AHEAD: usize = 8;

/// How to import.
#[derive(Clone, Copy, Debug)]
pub struct ImportOptions {
    /// The import time: consent, opt-out and `updated_at` times, and `created_at` of new
    /// contacts whose row has none.
    pub now: jiff::Timestamp,
    /// Write nothing if any row is bad.
    pub strict: bool,
}

/// How far an import has come, after each batch is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportProgress {
    /// Bytes of the input read so far.
    pub bytes: u64,
    /// Rows read so far, good and bad.
    pub rows: u64,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Good rows that created a contact (0 when nothing was committed).
    pub created: u64,
    /// Good rows that changed a stored contact.
    pub updated: u64,
    /// Good rows that matched the stored contact already.
    pub unchanged: u64,
    /// Rows with at least one issue; none of them was written.
    pub bad_rows: u64,
    /// Every reason a row is bad, in line order (a row may have several).
    pub issues: Vec<RowIssue>,
    /// Things not done although the row is good, such as an opt-in refused because the
    /// contact opted out by other means than an import.
    pub warnings: Vec<RowIssue>,
    /// Whether the good rows were written. False under `strict` with a bad row.
    pub committed: bool,
}

impl ImportReport {
    /// Good rows written (created, updated or unchanged).
    pub fn imported(&self) -> u64 {
        self.created + self.updated + self.unchanged
    }
}

/// Why an import stopped; the store is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line 1: {0}")]
    Header(#[from] HeaderError),
    #[error("cannot read the CSV: {0}")]
    Read(#[source] csv::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a good row did to its contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOutcome {
    Created,
    Updated,
    Unchanged,
}

/// A row merged with the stored contact.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    pub outcome: RowOutcome,
    /// What to write; `None` when the contact is unchanged.
    pub write: Option<ContactWrite>,
    pub warnings: Vec<RowIssue>,
}

/// Applies a good row to the stored contact with its id (`None`: a new contact) at the
/// import time `now` (unix ms). The rules:
///
/// - A column in the file overwrites its field; an empty cell clears it; a column absent
///   from the file leaves the field alone. `tags` replaces the tag set. An attribute cell
///   sets its key (an empty one removes it); other keys stay.
/// - `opted_in` records consent (at `now`, source `import`) on each listed medium not
///   already opted in. It never overrides an opt-out whose source is not `import` (a STOP
///   reply, the API): that medium stays opted out and the row gets a warning.
/// - `opted_out` records an opt-out (at `now`, source `import`) unless already opted out.
/// - `last_inbound_at` only moves forward.
/// - `updated_at` becomes `now` only when something changed, so a re-import is a no-op.
pub fn merge(existing: Option<&ContactRecord>, row: ContactRow, now: i64) -> Merged {
    let before = existing.map(|r| &r.data);
    let line = row.line;
    let mut data = match before {
        Some(before) => before.clone(),
        None => ContactData {
            id: row.id,
            created_at: now,
            updated_at: now,
            ..ContactData::default()
        },
    };
    row.name.apply_to(&mut data.name);
    row.phone.apply_to(&mut data.phone);
    row.email.apply_to(&mut data.email);
    row.telegram.apply_to(&mut data.telegram);
    row.locale.apply_to(&mut data.locale);
    row.timezone.apply_to(&mut data.timezone);
    row.country.apply_to(&mut data.country);
    if let Some(t) = row.created_at {
        data.created_at = t.as_millisecond();
    }
    for (key, value) in row.attributes {
        match value {
            Some(v) => {
                data.attributes.insert(key, v);
            }
            None => {
                data.attributes.remove(&key);
            }
        }
    }
    if let Some(tags) = row.tags {
        data.tags = tags;
    }

    let mut warnings = Vec::new();
    let mut media_changed = Vec::new();
    for medium in Medium::ALL {
        let old = data.media.get(&medium).cloned().unwrap_or_default();
        let mut new = old.clone();
        if row.opted_in.contains(&medium) && !new.is_opted_in() {
            let source = new.opted_out_source.as_deref();
            if new.is_opted_out() && source != Some(IMPORT_SOURCE) {
                let at = new
                    .opted_out_at
                    .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                    .map_or_else(String::new, |t| format!(" at {t}"));
                warnings.push(RowIssue {
                    line,
                    column: Some("opted_in".to_string()),
                    message: format!(
                        "{medium} stays opted out: the contact opted out by {}{at}, and an \
                         import never overrides that",
                        source.unwrap_or("unknown means"),
                    ),
                });
            } else {
                new.opted_in_at = Some(now);
                new.opted_in_source = Some(IMPORT_SOURCE.to_string());
            }
        }
        if row.opted_out.contains(&medium) && !new.is_opted_out() {
            new.opted_out_at = Some(now);
            new.opted_out_source = Some(IMPORT_SOURCE.to_string());
        }
        if let Some((m, at)) = row.last_inbound
            && m == medium
        {
            new.last_inbound_at = new.last_inbound_at.max(Some(at.as_millisecond()));
        }
        if new != old {
            data.media.insert(medium, new);
            media_changed.push(medium);
        }
    }

    let (outcome, write) = contact_write(existing, data, media_changed, now);
    Merged {
        outcome,
        write,
        warnings,
    }
}

/// What it takes to make `existing` (`None`: a new contact) into `data`, whose media in
/// `media_changed` changed: nothing when `data` is what is stored, else the write, with
/// `updated_at` moved to `now` for an existing contact.
pub(super) fn contact_write(
    existing: Option<&ContactRecord>,
    mut data: ContactData,
    media_changed: Vec<Medium>,
    now: i64,
) -> (RowOutcome, Option<ContactWrite>) {
    match existing {
        Some(record) => {
            if data == record.data {
                return (RowOutcome::Unchanged, None);
            }
            data.updated_at = now;
            let write = ContactWrite {
                pk: Some(record.pk),
                tags_changed: data.tags != record.data.tags,
                data,
                // updated_at moved, so the row is written whatever else changed.
                row_changed: true,
                media_changed,
            };
            (RowOutcome::Updated, Some(write))
        }
        None => {
            let write = ContactWrite {
                pk: None,
                tags_changed: !data.tags.is_empty(),
                data,
                row_changed: true,
                media_changed,
            };
            (RowOutcome::Created, Some(write))
        }
    }
}

/// Rows parsed by the reader thread.
#[derive(Default)]
struct Batch {
    rows: Vec<ContactRow>,
    issues: Vec<RowIssue>,
    bad_rows: u64,
    records: u64,
    /// Input bytes consumed once this batch was read.
    bytes: u64,
}

/// Imports the CSV read from `input` (header first, `id` required) into `store`, in one
/// write transaction: on any error the store is left as it was. Bad rows are reported in
/// the result, with their line and why, and do not stop the good ones (unless
/// `options.strict`). `progress` is called after each batch is written.
///
/// Fails on an unusable header, an unreadable input, or a store error.
pub async fn import<R>(
    store: &Store,
    input: R,
    options: ImportOptions,
    progress: Option<&(dyn Fn(ImportProgress) + Send + Sync)>,
) -> Result<ImportReport, ImportError>
where
    R: Read + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(BATCHES_AHEAD);
    // Parsing is CPU work that would otherwise sit between the writer's statements.
    let reader = tokio::task::spawn_blocking(move || read_rows(input, &tx));

    let now = options.now.as_millisecond();
    let mut report = ImportReport::default();
    let mut writer = None;
    let mut rows_read = 0;
    while let Some(batch) = rx.recv().await {
        let batch = batch?;
        report.bad_rows += batch.bad_rows;
        report.issues.extend(batch.issues);
        rows_read += batch.records;
        // Under --strict, one bad row means nothing is written: stop writing, keep reading
        // to report every bad row.
        let write = !(options.strict && report.bad_rows > 0);
        if write && !batch.rows.is_empty() {
            if writer.is_none() {
                writer = Some(store.contacts_writer().await?);
            }
            let w = writer.as_mut().expect("just set");
            let ids: Vec<&str> = batch.rows.iter().map(|r| r.id.as_str()).collect();
            let existing = w.existing(&ids).await?;
            let mut writes = Vec::with_capacity(batch.rows.len());
            for row in batch.rows {
                let merged = merge(existing.get(&row.id), row, now);
                match merged.outcome {
                    RowOutcome::Created => report.created += 1,
                    RowOutcome::Updated => report.updated += 1,
                    RowOutcome::Unchanged => report.unchanged += 1,
                }
                report.warnings.extend(merged.warnings);
                writes.extend(merged.write);
            }
            w.write(writes).await?;
        }
        if let Some(progress) = progress {
            progress(ImportProgress {
                bytes: batch.bytes,
                rows: rows_read,
            });
        }
    }
    // The channel closes when the reader is done; a panic there is a bug, not bad data.
    reader.await.expect("the CSV reader thread panicked");

    match writer {
        Some(w) if options.strict && report.bad_rows > 0 => {
            w.rollback().await?;
        }
        Some(w) => {
            w.commit().await?;
            report.committed = true;
        }
        None => report.committed = !(options.strict && report.bad_rows > 0),
    }
    if !report.committed {
        report.created = 0;
        report.updated = 0;
        report.unchanged = 0;
        report.warnings.clear();
    }
    Ok(report)
}

/// The reader thread: header, then rows in batches, until the input ends, the writer hangs
/// up, or reading fails.
fn read_rows<R: Read>(input: R, tx: &mpsc::Sender<Result<Batch, ImportError>>) {
    let mut csv = csv::ReaderBuilder::new()
        // A row with the wrong number of fields is a bad row, not the end of the import.
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = match csv.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            let _ = tx.blocking_send(Err(ImportError::Read(e)));
            return;
        }
    };
    let columns = match header
        .iter()
        .map(std::str::from_utf8)
        .collect::<Result<Vec<&str>, _>>()
    {
        Ok(names) if names.len() == 1 && names[0].is_empty() => Err(HeaderError::Empty),
        Ok(names) => Columns::from_header(names),
        Err(_) => Err(HeaderError::NotUtf8),
    };
    let columns = match columns {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.blocking_send(Err(e.into()));
            return;
        }
    };
    let mut parser = RowParser::new(columns);
    let mut record = csv::ByteRecord::new();
    let mut batch = Batch::default();
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, csv::Position::line);
                let cells: Vec<&[u8]> = record.iter().collect();
                match parser.parse(line, &cells) {
                    Ok(row) => batch.rows.push(row),
                    Err(issues) => {
                        batch.bad_rows += 1;
                        batch.issues.extend(issues);
                    }
                }
                batch.records += 1;
                if batch.records as usize >= BATCH_ROWS {
                    batch.bytes = csv.position().byte();
                    if tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
                        return; // the writer stopped; it reports why
                    }
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(ImportError::Read(e)));
                return;
            }
        }
    }
    batch.bytes = csv.position().byte();
    let _ = tx.blocking_send(Ok(batch));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contacts::row::Update;
    use crate::store::contacts::MediumState;

    const NOW: i64 = 1_800_000_000_000;

    fn row() -> ContactRow {
        ContactRow {
            line: 2,
            id: "c1".to_string(),
            ..ContactRow::default()
        }
    }

    fn stored(data: ContactData) -> ContactRecord {
        ContactRecord { pk: 7, data }
    }

    fn base() -> ContactData {
        ContactData {
            id: "c1".to_string(),
            name: Some("Ana".to_string()),
            created_at: 1,
            updated_at: 2,
            ..ContactData::default()
        }
    }

    #[test]
    fn a_new_contact_without_created_at_is_created_now() {
        let merged = merge(None, row(), NOW);
        assert_eq!(merged.outcome, RowOutcome::Created);
        let w = merged.write.unwrap();
        assert_eq!((w.data.created_at, w.data.updated_at), (NOW, NOW));
    }

    #[test]
    fn a_row_that_changes_nothing_leaves_updated_at_alone() {
        let mut r = row();
        r.name = Update::Set("Ana".to_string());
        let merged = merge(Some(&stored(base())), r, NOW);
        assert_eq!(merged.outcome, RowOutcome::Unchanged);
        assert_eq!(merged.write, None);
    }

    #[test]
    fn an_empty_cell_clears_and_an_absent_column_keeps() {
        let mut data = base();
        data.email = Some("a@b.co".to_string());
        let mut r = row();
        r.name = Update::Clear;
        let w = merge(Some(&stored(data)), r, NOW).write.unwrap();
        assert_eq!(w.data.name, None);
        assert_eq!(w.data.email.as_deref(), Some("a@b.co"));
        assert_eq!(w.data.updated_at, NOW);
    }

    #[test]
    fn an_import_never_opts_in_again_after_a_stop_reply() {
        let mut data = base();
        data.media.insert(
            Medium::Sms,
            MediumState {
                opted_in_at: Some(10),
                opted_in_source: Some("import".into()),
                opted_out_at: Some(20),
                opted_out_source: Some("reply".into()),
                ..MediumState::default()
            },
        );
        let mut r = row();
        r.opted_in.insert(Medium::Sms);
        let merged = merge(Some(&stored(data)), r, NOW);
        assert_eq!(merged.outcome, RowOutcome::Unchanged);
        assert_eq!(merged.warnings.len(), 1);
        assert_eq!(merged.warnings[0].column.as_deref(), Some("opted_in"));
    }

    #[test]
    fn an_import_may_undo_an_opt_out_that_an_import_recorded() {
        let mut data = base();
        data.media.insert(
            Medium::Sms,
            MediumState {
                opted_out_at: Some(20),
                opted_out_source: Some("import".into()),
                ..MediumState::default()
            },
        );
        let mut r = row();
        r.opted_in.insert(Medium::Sms);
        let w = merge(Some(&stored(data)), r, NOW).write.unwrap();
        assert!(w.data.media[&Medium::Sms].is_opted_in());
        assert_eq!(w.media_changed, [Medium::Sms]);
    }

    #[test]
    fn consent_already_given_keeps_its_time() {
        let mut data = base();
        data.media.insert(
            Medium::Email,
            MediumState {
                opted_in_at: Some(5),
                opted_in_source: Some("api".into()),
                ..MediumState::default()
            },
        );
        let mut r = row();
        r.opted_in.insert(Medium::Email);
        assert_eq!(
            merge(Some(&stored(data)), r, NOW).outcome,
            RowOutcome::Unchanged
        );
    }

    #[test]
    fn last_inbound_at_never_moves_back() {
        let mut data = base();
        data.media.insert(
            Medium::Whatsapp,
            MediumState {
                last_inbound_at: Some(100),
                ..MediumState::default()
            },
        );
        let mut r = row();
        r.last_inbound = Some((
            Medium::Whatsapp,
            jiff::Timestamp::from_millisecond(50).unwrap(),
        ));
        assert_eq!(
            merge(Some(&stored(data)), r, NOW).outcome,
            RowOutcome::Unchanged
        );
    }

    #[test]
    fn attribute_cells_set_or_remove_only_their_keys() {
        let mut data = base();
        data.attributes.insert("city".into(), "Lima".into());
        data.attributes.insert("orders".into(), 3.into());
        let mut r = row();
        r.attributes = vec![("orders".into(), None), ("vip".into(), Some(true.into()))];
        let w = merge(Some(&stored(data)), r, NOW).write.unwrap();
        assert_eq!(
            serde_json::Value::Object(w.data.attributes),
            serde_json::json!({"city": "Lima", "vip": true})
        );
    }
}
