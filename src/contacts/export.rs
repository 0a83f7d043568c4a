//! Exporting contacts as CSV in the import's own columns, so that an export imported into a
//! fresh store gives the same contacts back.
//!
//! The export carries each contact's current state, not its history: consent and opt-out
//! times and sources become the media lists `opted_in` and `opted_out` (an import records
//! them anew), only the most recent inbound message survives (with its medium), and
//! outbound times are not exported.

use std::io::Write;

use serde_json::Value;

use super::row::COLUMNS;
use crate::spec::channel::Medium;
use crate::store::contacts::{ContactRecord, ContactsSnapshot};
use crate::store::{Store, StoreError};

/// Contacts read per query: enough to amortize each query, small enough for constant memory.
const PAGE: u32 = 1000;

/// Why an export stopped. What was written so far is a prefix of the file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the CSV: {0}")]
    Write(#[from] csv::Error),
    #[error("cannot write the CSV: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes every contact to `out` as CSV: the import's columns, then one column per attribute
/// key in use (sorted), rows in row-key order. Reads one consistent snapshot, a page at a
/// time. Returns the number of contacts written.
///
/// `out` is written synchronously: the export is the only thing its caller does.
pub async fn export<W: Write>(store: &Store, mut out: W) -> Result<u64, ExportError> {
    let mut export = CsvExport::start(store).await?;
    while let Some(chunk) = export.next_chunk().await? {
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(export.written())
}

/// The export as a sequence of chunks of CSV text, for a caller that writes them
/// asynchronously (the HTTP API streams them as the response body): the header, then one
/// chunk per page of contacts. Holds one read snapshot (a read connection) until dropped.
pub struct CsvExport {
    snapshot: ContactsSnapshot,
    keys: Vec<String>,
    header_done: bool,
    finished: bool,
    written: u64,
}

impl CsvExport {
    /// Opens the snapshot and reads the attribute keys (the header's last columns).
    pub async fn start(store: &Store) -> Result<CsvExport, ExportError> {
        let mut snapshot = store.contacts_snapshot().await?;
        let keys = snapshot.attribute_keys().await?;
        Ok(CsvExport {
            snapshot,
            keys,
            header_done: false,
            finished: false,
            written: 0,
        })
    }

    /// The next piece of the file: the header first, then a page of contacts; `None` at
    /// the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ExportError> {
        if self.finished {
            return Ok(None);
        }
        let mut csv = csv::Writer::from_writer(Vec::new());
        if !self.header_done {
            self.header_done = true;
            csv.write_record(
                COLUMNS
                    .iter()
                    .copied()
                    .chain(self.keys.iter().map(String::as_str)),
            )?;
            return Ok(Some(into_bytes(csv)?));
        }
        let page = self.snapshot.next_page(PAGE).await?;
        if page.is_empty() {
            self.finished = true;
            return Ok(None);
        }
        let mut cells: Vec<String> = Vec::with_capacity(COLUMNS.len() + self.keys.len());
        for record in &page {
            cells.clear();
            cells_of(record, &self.keys, &mut cells);
            csv.write_record(&cells)?;
            self.written += 1;
        }
        Ok(Some(into_bytes(csv)?))
    }

    /// Contacts written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

fn into_bytes(csv: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, ExportError> {
    csv.into_inner()
        .map_err(|e| ExportError::Io(std::io::Error::other(e.to_string())))
}

fn instant(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

fn media(
    record: &ContactRecord,
    keep: impl Fn(&crate::store::contacts::MediumState) -> bool,
) -> String {
    let names: Vec<&str> = record
        .data
        .media
        .iter()
        .filter(|(_, state)| keep(state))
        .map(|(m, _)| m.as_str())
        .collect();
    names.join(";")
}

/// One contact as cells, in the order of the header.
fn cells_of(record: &ContactRecord, keys: &[String], cells: &mut Vec<String>) {
    let d = &record.data;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let last_inbound: Option<(Medium, i64)> = d
        .media
        .iter()
        .filter_map(|(m, s)| Some((*m, s.last_inbound_at?)))
        // The latest time; on a tie, the first medium in the usual order.
        .fold(None, |best, (m, at)| match best {
            Some((_, b)) if b >= at => best,
            _ => Some((m, at)),
        });
    cells.extend([
        d.id.clone(),
        text(&d.name),
        text(&d.phone),
        text(&d.email),
        text(&d.telegram),
        text(&d.locale),
        text(&d.timezone),
        text(&d.country),
        instant(d.created_at),
        d.tags
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(";"),
        media(record, |s| s.is_opted_in()),
        media(record, |s| s.is_opted_out()),
        last_inbound.map_or_else(String::new, |(_, at)| instant(at)),
        last_inbound.map_or_else(String::new, |(m, _)| m.as_str().to_string()),
    ]);
    for key in keys {
        cells.push(match d.attributes.get(key) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            // Numbers and booleans in the form the import reads back to the same value;
            // arrays and objects (only the API can set them) as JSON text.
            Some(other) => other.to_string(),
        });
    }
}
