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
//! - [`watch`]: file events under the campaign directory → "look again", debounced.
//! - [`reconcile`]: the files against the store: `plan` (a pure diff) and `apply`.
//! - [`render`]: a Template, a contact and a run → the message content, strict and bounded.
//! - [`schedule`]: cron / at / now → the next fire times, in the schedule's time zone.
//! - [`store`]: the SQLite file, the only module that speaks SQL: contacts, revisions and
//!   specs, runs, deliveries, the webhook outbox.
//! - [`message`]: a rendered message, the data that passes from rendering to the channels.
//! - [`secrets`]: `${env:NAME}` / `${file:PATH}` resolved into values that print as `***`.
//! - [`signing`]: Standard Webhooks signatures (`webhook-signature: v1,...`), sign and verify.
//! - [`channels`]: the channel contract (send, classify the outcome, flush) and its
//!   providers: `outbox` (JSON lines) and `webhook` (a signed POST).
//! - [`engine`]: runs: the audience snapshotted into deliveries, sent in batches within
//!   rate limits and send windows, retried, recorded, paused, cancelled, recovered.
//! - [`output`]: how findings are shown: text with snippets, JSON, GitHub annotations.
//! - [`daemon`]: `herald serve`: the watcher, reconciler, scheduler, engine and HTTP tasks,
//!   and their two-phase shutdown.
//! - [`cli`]: the commands and their options; `main.rs` only calls [`cli::run`].

pub mod audience;
pub mod channels;
pub mod cli;
pub mod contacts;
pub mod daemon;
pub mod engine;
pub mod http;
pub mod message;
pub mod metrics;
pub mod output;
pub mod reconcile;
pub mod render;
pub mod schedule;
pub mod secrets;
pub mod signing;
pub mod spec;
pub mod store;
pub mod watch;
pub mod webhooks;
