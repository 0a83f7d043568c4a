//! `kind: Campaign`: who, what, when and how fast.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::located::Located;
use super::values::{Rate, SendWindow};

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// A disabled campaign never fires, and its running sends pause.
    #[serde(default = "default_true")]
    pub enabled: bool,
    pub audience: Audience,
    pub channels: Channels,
    /// The Template to send.
    pub template: Located<String>,
    /// Values for the template's variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, Located<serde_json::Value>>,
    pub schedule: Located<Schedule>,
    /// Deliver at the schedule's wall-clock time in each contact's own time zone.
    #[serde(default)]
    pub local_time: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    #[serde(default)]
    pub consent: Consent,
    /// Contact ids that receive a test send first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_recipients: Vec<Located<String>>,
    /// What to do when a recipient replies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_reply: Vec<ReplyRule>,
}

/// `delivery.max_duration` when a campaign sets none.
pub const DEFAULT_MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(86_400);

impl CampaignSpec {
    /// How long a run may send: `delivery.max_duration`, default 1 d, never more than 7 d
    /// (validation rejects more; the cap also holds for unvalidated input).
    pub fn max_duration(&self) -> std::time::Duration {
        self.delivery
            .as_ref()
            .and_then(|d| d.max_duration.as_ref())
            .and_then(|d| super::values::parse_duration(&d.value).ok())
            .unwrap_or(DEFAULT_MAX_DURATION)
            .min(super::validate::MAX_SEND_DURATION)
    }
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// A Segment, or a built-in one such as `all-contacts`.
    pub segment: Located<String>,
    /// Segments whose members are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Located<String>>,
    /// Only contacts who have written to us before on the chosen channel's medium.
    #[serde(default)]
    pub only_previously_interacted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    pub strategy: Located<Strategy>,
    #[serde(rename = "use")]
    pub channels: Located<Vec<Located<String>>>,
}

/// How each contact's channel is chosen among `use`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// One channel; contacts without an address there are left out.
    Specific,
    /// The first channel on which the contact has an address and consent.
    Fallback,
    /// The channel of the contact's most recent inbound message.
    LastInteracted,
    /// Every channel on which the contact has an address, consent (as the campaign
    /// requires) and no opt-out: one message per channel.
    All,
}

/// When the campaign fires: exactly one of `at`, `cron` or `now`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// A local date and time in `timezone`, e.g. `2026-11-27T09:00:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Located<String>>,
    /// Five or six fields, or `@daily`-style aliases, evaluated in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<Located<String>>,
    /// Fire as soon as the revision is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<Located<bool>>,
    /// IANA time zone of `at` and `cron` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Located<String>>,
    /// How late a fire missed while herald was down may still happen (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Located<String>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// The campaign's own cap; each channel's limit applies too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Located<Rate>>,
    /// Never more than 7d; what cannot go out in time expires. Default 1d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_window: Option<SendWindow>,
    /// Across campaigns, per contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_cap: Option<FrequencyCap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    /// At most this many messages ...
    pub max: Located<u32>,
    /// ... per this period, e.g. `7d`.
    pub per: Located<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts per delivery, the first included (default 5).
    pub max_attempts: Located<u32>,
    /// The first backoff (default 30s); it doubles, with jitter, up to max_backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_backoff: Option<Located<String>>,
    /// Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<Located<String>>,
}

/// Who may receive the campaign. Opted-out contacts never do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// Only contacts opted in on the channel's medium (the default).
    #[default]
    Required,
    /// Also contacts who never opted in (transactional messages); still never opted-out ones.
    NotRequired,
}

/// A reply rule: when an inbound reply to this campaign matches, act on the contact.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyRule {
    /// A regular expression tested against the reply text.
    #[serde(rename = "match")]
    pub pattern: Located<String>,
    /// Add this tag to the contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Remove this tag from the contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untag: Option<String>,
    /// Opt the contact out of this medium.
    #[serde(default)]
    pub opt_out: bool,
    /// Start this follow-up campaign for the contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Located<String>>,
}
