//! Contacts as data: CSV rows parsed into checked records at the edge, import and export.
//!
//! - [`row`]: the columns, the typed values (`PhoneNumber` in E.164, `TimeZoneName`, media
//!   lists, typed attributes) and the reasons a row is bad, with its line.
//! - [`import()`]: a CSV from any reader into the store in one transaction; [`merge`] holds
//!   the rules of what a row does to a stored contact (consent above all).
//! - [`export()`]: every contact as CSV in the same columns, streamed ([`CsvExport`] gives
//!   it as chunks, for the HTTP API's streamed answer).
//! - [`edit`]: one contact at a time, from the API's JSON (checked by the same value types
//!   as a row), applied in one transaction.
//!
//! The CLI (`herald contacts import|export`) and the HTTP API share all of it.

pub mod edit;
mod export;
mod import;
pub mod row;

pub use export::{CsvExport, ExportError, export};
pub use import::{
    IMPORT_SOURCE, ImportError, ImportOptions, ImportProgress, ImportReport, Merged, RowOutcome,
    import, merge,
};
pub use row::{ContactRow, HeaderError, PhoneNumber, RowIssue, Update};
