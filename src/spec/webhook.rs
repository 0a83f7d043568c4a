//! `kind: Webhook`: a subscriber to herald's events, signed per Standard Webhooks.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::located::Located;
use super::values::Secret;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: Located<String>,
    /// The signing secret (`whsec_...`), from `${env:NAME}` or `${file:PATH}`.
    pub secret: Secret,
    pub events: Vec<Located<EventType>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

/// Several delivery events in one request.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// At most this many events per request.
    pub max_events: Located<u32>,
    /// Send a partial batch after this long, e.g. `5s`.
    pub max_wait: Located<String>,
}

/// The events a webhook may subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    #[serde(rename = "delivery.sent")]
    DeliverySent,
    #[serde(rename = "delivery.delivered")]
    DeliveryDelivered,
    #[serde(rename = "delivery.read")]
    DeliveryRead,
    #[serde(rename = "delivery.failed")]
    DeliveryFailed,
    #[serde(rename = "message.replied")]
    MessageReplied,
    #[serde(rename = "contact.opted_out")]
    ContactOptedOut,
    #[serde(rename = "run.started")]
    RunStarted,
    #[serde(rename = "run.finished")]
    RunFinished,
    #[serde(rename = "config.applied")]
    ConfigApplied,
    #[serde(rename = "config.rejected")]
    ConfigRejected,
}
