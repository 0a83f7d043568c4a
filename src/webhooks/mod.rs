//! Webhooks both ways.
//!
//! - [`sender`]: outbound events to Webhook subscribers (DESIGN.md section 5). The events
//!   are queued by the store in the same transaction as the change they report
//!   ([`crate::store::webhooks`]); the sender POSTs them signed per Standard Webhooks,
//!   retries on the specification's schedule until a 2xx, honours Retry-After, never
//!   follows a redirect, disables a subscription that answers 410 Gone, and batches
//!   delivery events where the Webhook asks for it.
//! - [`inbound`]: replies and delivery receipts that the webhook channel's gateway posts
//!   to `/v1/inbound/{channel}`: what they mean (opt-out keywords, `on_reply` rules,
//!   forward-only receipts) and their recording. The HTTP adapter, with the signature
//!   check, is [`crate::http::inbound`].

pub mod inbound;
pub mod sender;

pub use sender::Sender;
