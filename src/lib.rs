//! herald sends bulk messaging campaigns kept as code.
//!
//! A tour of the modules, in the order data flows:
//!
//! - [`spec`]: the files. The five kinds (Channel, Segment, Template, Campaign, Webhook),
//!   loading a directory with every value's file:line:column, validation that reports every
//!   error at once, and the JSON Schema editors use.
//! - [`audience`]: segments compiled to parameterized SQL, checked against an in-memory
//!   evaluator; counts and samples over the contacts tables (migrations/).
//! - [`contacts`]: contacts as data: CSV import and export, rows checked at the edge.
//! - [`reconcile`]: the files against the store: `plan` (a pure diff) and `apply`.
//! - [`schedule`]: cron / at / now → the next fire times, in the schedule's time zone.
//! - [`store`]: the SQLite file, the only module that speaks SQL: contacts, revisions and
//!   specs, runs, deliveries, the webhook outbox.
//! - [`output`]: how findings are shown: text with snippets, JSON, GitHub annotations.
//! - [`cli`]: the commands and their options; `main.rs` only calls [`cli::run`].

pub mod audience;
pub mod cli;
pub mod contacts;
pub mod output;
pub mod reconcile;
pub mod schedule;
pub mod spec;
pub mod store;
