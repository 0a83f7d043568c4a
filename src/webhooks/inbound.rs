//! Inbound replies and delivery receipts of the webhook channel: the documented body, what a
//! reply means (opt-out and opt-in keywords, the attributed delivery, its campaign's
//! `on_reply` rules) and what a receipt does (forward-only status), recorded through
//! [`crate::store::inbound`] in one transaction each.
//!
//! The body (JSON), one of:
//!
//! ```text
//! {"type": "reply", "from": "+51987654321", "text": "SI", "received_at": "2026-11-27T14:03:00Z"}
//! {"type": "receipt", "message_id": "gw-123", "status": "read", "error": null, "timestamp": "..."}
//! ```
//!
//! `type` may be left out: a body with `message_id` is a receipt, one with `from` a reply.
//! `received_at` and `timestamp` are optional (default: now; a future time counts as now).
//!
//! A reply updates the last inbound time on the channel's medium of every contact with the
//! sender's address. If its text, trimmed and without surrounding punctuation, is one of
//! the channel's opt-out keywords (any case), those contacts are opted out of the medium;
//! an opt-in keyword opts them back in. Otherwise the reply is attributed to the latest
//! delivery sent to one of them through this channel within [`ATTRIBUTION_WINDOW`], and
//! every `on_reply` rule of that run's campaign whose `match` finds the text applies, in
//! order: tag, untag, opt out, and start a follow-up campaign for the contact (started by
//! the caller once the reply is recorded: [`RecordedReply::follow_ups`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::reconcile::{StoredObject, rebuild};
use crate::spec::Object;
use crate::spec::campaign::ReplyRule;
use crate::spec::channel::{ChannelSpec, Medium};
use crate::store::deliveries::DeliveryStatus;
use crate::store::inbound::{Inbound, OptOut, ReceiptRecorded, ReceiptWrite, ReplyWrite};
use crate::store::revisions::StoredSpec;
use crate::store::{Store, StoreError};

/// Opt-out keywords of a channel that sets no `opt_out_keywords` (the carriers' and
/// common Spanish and Portuguese ones).
pub const DEFAULT_OPT_OUT_KEYWORDS: [&str; 12] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "PARAR",
    "SAIR",
    "CANCELAR",
    "BAJA",
];

/// Opt-in keywords of a channel that sets no `opt_in_keywords`.
pub const DEFAULT_OPT_IN_KEYWORDS: [&str; 2] = ["START", "UNSTOP"];

/// Telegram's commands, added to the defaults of a telegram channel: users end a bot's
/// messages with `/stop` and start (or restart) them with `/start`.
pub const TELEGRAM_OPT_OUT_COMMANDS: [&str; 1] = ["/stop"];
pub const TELEGRAM_OPT_IN_COMMANDS: [&str; 1] = ["/start"];

/// A reply answers the latest delivery sent to the contact within this long.
pub const ATTRIBUTION_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a keyword reply asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Keyword {
    OptOut,
    OptIn,
}

/// A channel as inbound callbacks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundChannel {
    pub name: String,
    pub medium: Medium,
    /// Normalized (see [`normalize_keyword`]).
    pub opt_out_keywords: Vec<String>,
    pub opt_in_keywords: Vec<String>,
}

impl InboundChannel {
    /// The channel's medium and keywords; a channel's own lists replace the defaults.
    /// On telegram the defaults also hold `/stop` and `/start`
    /// ([`TELEGRAM_OPT_OUT_COMMANDS`]). `None` for a channel without a medium (it did not
    /// validate).
    pub fn from_spec(name: &str, spec: &ChannelSpec) -> Option<InboundChannel> {
        let medium = spec.medium()?;
        let commands = |telegram: &'static [&'static str]| -> &'static [&'static str] {
            if medium == Medium::Telegram {
                telegram
            } else {
                &[]
            }
        };
        let list = |own: &Option<Vec<String>>, default: &[&str], extra: &[&str]| -> Vec<String> {
            match own {
                Some(words) => words.iter().map(|w| normalize_keyword(w)).collect(),
                None => default
                    .iter()
                    .chain(extra)
                    .map(|w| normalize_keyword(w))
                    .collect(),
            }
        };
        Some(InboundChannel {
            name: name.to_string(),
            medium,
            opt_out_keywords: list(
                &spec.opt_out_keywords,
                &DEFAULT_OPT_OUT_KEYWORDS,
                commands(&TELEGRAM_OPT_OUT_COMMANDS),
            ),
            opt_in_keywords: list(
                &spec.opt_in_keywords,
                &DEFAULT_OPT_IN_KEYWORDS,
                commands(&TELEGRAM_OPT_IN_COMMANDS),
            ),
        })
    }

    /// The keyword `text` is, if it is one alone (any case, surrounding spaces and
    /// punctuation ignored). Opt-out wins if a word is in both lists.
    pub fn keyword(&self, text: &str) -> Option<Keyword> {
        let word = normalize_keyword(text);
        if word.is_empty() {
            None
        } else if self.opt_out_keywords.contains(&word) {
            Some(Keyword::OptOut)
        } else if self.opt_in_keywords.contains(&word) {
            Some(Keyword::OptIn)
        } else {
            None
        }
    }
}

/// A message reduced to what keyword matching compares: trimmed of whitespace and of
/// punctuation around it (`Stop.`, `¡BAJA!`), lower case. A slash stays (`/stop`).
pub fn normalize_keyword(text: &str) -> String {
    text.trim_matches(|c: char| {
        c.is_whitespace() || (c.is_ascii_punctuation() && c != '/') || "¡¿".contains(c)
    })
    .to_lowercase()
}

/// The sender's address as contacts store it: phone numbers without spaces, dashes, dots
/// or parentheses, and without a `whatsapp:`, `sms:` or `tel:` prefix; other addresses
/// trimmed.
pub fn normalize_address(medium: Medium, address: &str) -> String {
    let address = address.trim();
    match medium {
        Medium::Sms | Medium::Whatsapp => {
            let lower = address.to_ascii_lowercase();
            let rest = ["whatsapp:", "sms:", "tel:"]
                .iter()
                .find_map(|p| lower.strip_prefix(p).map(|_| &address[p.len()..]))
                .unwrap_or(address);
            rest.chars()
                .filter(|c| !(c.is_whitespace() || "-().".contains(*c)))
                .collect()
        }
        Medium::Email | Medium::Telegram => address.to_string(),
    }
}

/// The body of `POST /v1/inbound/{channel}`: a reply or a receipt.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub struct InboundBody {
    /// `reply` or `receipt`; optional (a body with `message_id` is a receipt, one with
    /// `from` a reply).
    #[serde(rename = "type")]
    #[schema(example = "reply")]
    pub kind: Option<String>,
    /// Reply: the sender's address on the channel's medium (a phone number in E.164 for
    /// SMS and WhatsApp, an e-mail address, a Telegram chat id).
    #[schema(example = "+51987654321")]
    pub from: Option<String>,
    /// Reply: the message text.
    #[schema(example = "SI")]
    pub text: Option<String>,
    /// Reply: when the provider received it (RFC 3339); default now.
    pub received_at: Option<String>,
    /// Receipt: the provider message id herald got when sending (the gateway's `id`).
    #[schema(example = "gw-123")]
    pub message_id: Option<String>,
    /// Receipt: `delivered`, `read` or `failed`.
    #[schema(example = "delivered")]
    pub status: Option<String>,
    /// Receipt: why it failed.
    pub error: Option<String>,
    /// Receipt: when the status was reached (RFC 3339); default now.
    pub timestamp: Option<String>,
}

/// A reply, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub from: String,
    pub text: String,
    pub received_at: Option<jiff::Timestamp>,
}

/// A receipt, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub message_id: String,
    /// `delivered`, `read` or `failed`.
    pub status: DeliveryStatus,
    pub error: Option<String>,
    pub at: Option<jiff::Timestamp>,
    /// The provider failed the message because the recipient stopped messages from this
    /// sender (Twilio 21610, WhatsApp 131050): the contact is opted out of the medium.
    pub opted_out: bool,
}

/// An inbound body, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundMessage {
    Reply(Reply),
    Receipt(Receipt),
}

/// Why a body was refused: the field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        message: message.into(),
    }
}

/// A JSON value as text: strings as they are, numbers written out (some providers send
/// numeric ids), anything else refused.
fn text_of(value: &serde_json::Value, field: &'static str) -> Result<Option<String>, InvalidField> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Number(n) if field != "text" => Ok(Some(n.to_string())),
        _ => Err(invalid(field, "must be a string")),
    }
}

fn time_of(
    text: Option<String>,
    field: &'static str,
) -> Result<Option<jiff::Timestamp>, InvalidField> {
    match text {
        None => Ok(None),
        Some(t) => t.trim().parse::<jiff::Timestamp>().map(Some).map_err(|_| {
            invalid(
                field,
                format!("`{t}` is not an RFC 3339 time (e.g. 2026-11-27T14:03:00Z)"),
            )
        }),
    }
}

/// Checks a parsed body. Errors name the field.
pub fn parse(body: &serde_json::Value) -> Result<InboundMessage, InvalidField> {
    let serde_json::Value::Object(map) = body else {
        return Err(invalid("body", "must be a JSON object"));
    };
    let get = |field: &'static str| -> Result<Option<String>, InvalidField> {
        map.get(field).map_or(Ok(None), |v| text_of(v, field))
    };
    let kind = get("type")?;
    let is_receipt = match kind.as_deref() {
        Some("receipt") => true,
        Some("reply") => false,
        Some(other) => {
            return Err(invalid(
                "type",
                format!("`{other}` is not `reply` or `receipt`"),
            ));
        }
        None if map.contains_key("message_id") => true,
        None if map.contains_key("from") => false,
        None => {
            return Err(invalid(
                "body",
                "a reply needs `from` and `text`; a receipt needs `message_id` and `status`",
            ));
        }
    };
    if is_receipt {
        let message_id = get("message_id")?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid("message_id", "is required (the provider message id)"))?;
        let status = match get("status")?.as_deref() {
            Some("delivered") => DeliveryStatus::Delivered,
            Some("read") => DeliveryStatus::Read,
            Some("failed") => DeliveryStatus::Failed,
            Some(other) => {
                return Err(invalid(
                    "status",
                    format!("`{other}` is not delivered, read or failed"),
                ));
            }
            None => return Err(invalid("status", "is required: delivered, read or failed")),
        };
        Ok(InboundMessage::Receipt(Receipt {
            message_id: message_id.trim().to_string(),
            status,
            error: get("error")?.filter(|e| !e.is_empty()),
            at: time_of(get("timestamp")?, "timestamp")?,
            opted_out: false,
        }))
    } else {
        let from = get("from")?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid("from", "is required (the sender's address)"))?;
        let text = get("text")?.ok_or_else(|| invalid("text", "is required"))?;
        Ok(InboundMessage::Reply(Reply {
            from,
            text,
            received_at: time_of(get("received_at")?, "received_at")?,
        }))
    }
}

/// The answer to a reply (also what a repeat of the request gets, with `duplicate: true`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplyAnswer {
    /// True when this webhook-id was handled before: nothing changed this time.
    pub duplicate: bool,
    /// `reply`.
    #[schema(example = "reply")]
    pub kind: String,
    /// The contacts with the sender's address (their last inbound time moved).
    pub contacts: Vec<String>,
    /// The contact the reply is attributed to (or the first with the address).
    pub contact_id: Option<String>,
    /// The delivery the reply answers, its run and campaign.
    pub delivery_id: Option<i64>,
    pub run_id: Option<i64>,
    pub campaign: Option<String>,
    /// The keyword the reply is, if it is one.
    pub keyword: Option<Keyword>,
    /// Contacts opted out (keyword or rule) and opted back in, by this reply.
    pub opted_out: Vec<String>,
    pub opted_in: Vec<String>,
    /// The indexes of the campaign's `on_reply` rules that matched.
    pub rules: Vec<usize>,
    pub tagged: Vec<String>,
    pub untagged: Vec<String>,
    /// Follow-up campaigns started for the contact.
    pub follow_ups: Vec<FollowUpAnswer>,
}

/// A follow-up campaign a rule started: its run, or why it did not start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FollowUpAnswer {
    pub campaign: String,
    pub run_id: Option<i64>,
    pub error: Option<String>,
}

/// The answer to a receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptAnswer {
    pub duplicate: bool,
    /// `receipt`.
    #[schema(example = "receipt")]
    pub kind: String,
    /// The delivery it moved; none while it waits (`pending`).
    pub delivery_id: Option<i64>,
    /// The delivery's status before and after the receipt (while `pending`, `status` is
    /// the receipt's own).
    #[schema(example = "delivered")]
    pub previous_status: Option<String>,
    #[schema(example = "read")]
    pub status: String,
    /// False for a late receipt that would have moved the delivery back.
    pub changed: bool,
    /// True when no delivery had its message id yet: it waits and is applied when the
    /// send is recorded (Twilio and WhatsApp Cloud, which may call back that early).
    #[serde(default)]
    pub pending: bool,
}

/// A follow-up to start once the reply is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowUp {
    pub campaign: String,
    pub contact_id: String,
}

/// A reply as recorded: the answer, and the follow-ups to start.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedReply {
    /// The `inbound_events` row, to store the final answer in.
    pub event: i64,
    pub answer: ReplyAnswer,
    pub follow_ups: Vec<FollowUp>,
}

/// The `on_reply` rules of a stored campaign version.
fn reply_rules(spec: &StoredSpec) -> Vec<ReplyRule> {
    let loaded = rebuild(&[StoredObject::from(spec)]);
    loaded
        .objects
        .into_iter()
        .find_map(|o| match o {
            Object::Campaign(doc) => Some(doc.spec.on_reply),
            _ => None,
        })
        .unwrap_or_default()
}

/// Decides and records a reply. `Inbound::Duplicate` carries the first answer.
pub async fn record_reply(
    store: &Store,
    channel: &InboundChannel,
    webhook_id: &str,
    reply: &Reply,
    now: jiff::Timestamp,
) -> Result<Inbound<RecordedReply>, StoreError> {
    let address = normalize_address(channel.medium, &reply.from);
    let contacts = store
        .contacts_with_address(channel.medium, &address)
        .await?;
    let pks: Vec<i64> = contacts.iter().map(|c| c.pk).collect();
    let received_at = reply.received_at.unwrap_or(now).min(now);
    let keyword = channel.keyword(&reply.text);
    let since = now
        .checked_sub(jiff::SignedDuration::try_from(ATTRIBUTION_WINDOW).unwrap_or_default())
        .unwrap_or(now);
    let attribution = store
        .attribute_reply(&pks, &channel.name, since.as_millisecond())
        .await?;
    let state = |pk: i64| {
        contacts
            .iter()
            .find(|c| c.pk == pk)
            .and_then(|c| c.data.media.get(&channel.medium).cloned())
            .unwrap_or_default()
    };
    let mut opt_out: Vec<OptOut> = Vec::new();
    let mut opt_in: Vec<i64> = Vec::new();
    match keyword {
        Some(Keyword::OptOut) => {
            for c in contacts.iter().filter(|c| !state(c.pk).is_opted_out()) {
                opt_out.push(OptOut {
                    contact_pk: c.pk,
                    contact_id: c.data.id.clone(),
                    source: "keyword",
                });
            }
        }
        Some(Keyword::OptIn) => {
            opt_in.extend(
                contacts
                    .iter()
                    .filter(|c| !state(c.pk).is_opted_in())
                    .map(|c| c.pk),
            );
        }
        None => {}
    }
    let mut rules = Vec::new();
    let mut tag: Vec<(i64, String)> = Vec::new();
    let mut untag: Vec<(i64, String)> = Vec::new();
    let mut follow_ups: Vec<FollowUp> = Vec::new();
    // A keyword is an instruction about the medium, not an answer to the campaign.
    if let (None, Some(a)) = (keyword, &attribution) {
        for (i, rule) in reply_rules(&a.campaign_spec).iter().enumerate() {
            let pattern = match regex::Regex::new(&rule.pattern.value) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(campaign = %a.campaign, rule = i, error = %e, "an on_reply rule's match is not a regular expression; skipped");
                    continue;
                }
            };
            if !pattern.is_match(&reply.text) {
                continue;
            }
            rules.push(i);
            if let Some(t) = &rule.tag {
                tag.push((a.contact_pk, t.clone()));
            }
            if let Some(t) = &rule.untag {
                untag.push((a.contact_pk, t.clone()));
            }
            if rule.opt_out
                && !state(a.contact_pk).is_opted_out()
                && !opt_out.iter().any(|o| o.contact_pk == a.contact_pk)
            {
                opt_out.push(OptOut {
                    contact_pk: a.contact_pk,
                    contact_id: a.contact_id.clone(),
                    source: "reply_rule",
                });
            }
            if let Some(start) = &rule.start {
                follow_ups.push(FollowUp {
                    campaign: start.value.clone(),
                    contact_id: a.contact_id.clone(),
                });
            }
        }
    }
    let id_of = |pk: i64| -> String {
        contacts
            .iter()
            .find(|c| c.pk == pk)
            .map(|c| c.data.id.clone())
            .unwrap_or_default()
    };
    let contact_id = attribution
        .as_ref()
        .map(|a| a.contact_id.clone())
        .or_else(|| contacts.first().map(|c| c.data.id.clone()));
    let answer = ReplyAnswer {
        duplicate: false,
        kind: "reply".into(),
        contacts: contacts.iter().map(|c| c.data.id.clone()).collect(),
        contact_id: contact_id.clone(),
        delivery_id: attribution.as_ref().map(|a| a.delivery_id),
        run_id: attribution.as_ref().map(|a| a.run_id),
        campaign: attribution.as_ref().map(|a| a.campaign.clone()),
        keyword,
        opted_out: opt_out.iter().map(|o| o.contact_id.clone()).collect(),
        opted_in: opt_in.iter().map(|pk| id_of(*pk)).collect(),
        rules,
        tagged: tag.iter().map(|(_, t)| t.clone()).collect(),
        untagged: untag.iter().map(|(_, t)| t.clone()).collect(),
        follow_ups: follow_ups
            .iter()
            .map(|f| FollowUpAnswer {
                campaign: f.campaign.clone(),
                run_id: None,
                error: None,
            })
            .collect(),
    };
    let replied = serde_json::json!({
        "channel": channel.name,
        "medium": channel.medium.as_str(),
        "from": reply.from,
        "text": reply.text,
        "received_at": crate::store::webhooks::rfc3339(received_at.as_millisecond()),
        "contact_id": contact_id,
        "contact_ids": answer.contacts,
        "delivery_id": answer.delivery_id,
        "run_id": answer.run_id,
        "campaign": answer.campaign,
        "keyword": keyword,
        "webhook_id": webhook_id,
    });
    let answer_json = serde_json::to_value(&answer).expect("the answer serializes");
    let write = ReplyWrite {
        channel: &channel.name,
        medium: channel.medium,
        webhook_id,
        received_at: received_at.as_millisecond(),
        contacts: &pks,
        contact_pk: attribution
            .as_ref()
            .map(|a| a.contact_pk)
            .or_else(|| pks.first().copied()),
        delivery_id: answer.delivery_id,
        opt_out: &opt_out,
        opt_in: &opt_in,
        tag: &tag,
        untag: &untag,
        replied: &replied,
        answer: &answer_json,
    };
    Ok(match store.record_reply(&write, now).await? {
        Inbound::Recorded { event, .. } => Inbound::Recorded {
            event,
            outcome: RecordedReply {
                event,
                answer,
                follow_ups,
            },
        },
        Inbound::Duplicate(first) => Inbound::Duplicate(first),
    })
}

/// Records a receipt. `keep_early`: a receipt for a message id no delivery has yet waits
/// for it (the answer says `pending`); otherwise `Ok(None)`, nothing written.
pub async fn record_receipt(
    store: &Store,
    channel: &InboundChannel,
    webhook_id: &str,
    receipt: &Receipt,
    keep_early: bool,
    now: jiff::Timestamp,
) -> Result<Option<Inbound<ReceiptAnswer>>, StoreError> {
    let at = receipt.at.unwrap_or(now).min(now);
    let write = ReceiptWrite {
        channel: &channel.name,
        webhook_id,
        provider_message_id: &receipt.message_id,
        status: receipt.status,
        error: receipt.error.as_deref(),
        at: at.as_millisecond(),
        opt_out: receipt.opted_out.then_some(channel.medium),
        keep_early,
    };
    let answer_of = |r: &ReceiptRecorded| match r {
        ReceiptRecorded::Applied(o) => ReceiptAnswer {
            duplicate: false,
            kind: "receipt".into(),
            delivery_id: Some(o.delivery_id),
            previous_status: Some(o.previous.as_str().to_string()),
            status: o.status.as_str().to_string(),
            changed: o.changed,
            pending: false,
        },
        ReceiptRecorded::Early => ReceiptAnswer {
            duplicate: false,
            kind: "receipt".into(),
            delivery_id: None,
            previous_status: None,
            status: receipt.status.as_str().to_string(),
            changed: false,
            pending: true,
        },
    };
    let recorded = store
        .record_receipt(
            &write,
            |o| serde_json::to_value(answer_of(o)).expect("the answer serializes"),
            now,
        )
        .await?;
    Ok(recorded.map(|r| match r {
        Inbound::Recorded { event, outcome } => Inbound::Recorded {
            event,
            outcome: answer_of(&outcome),
        },
        Inbound::Duplicate(first) => Inbound::Duplicate(first),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(out: Option<&[&str]>, inn: Option<&[&str]>) -> InboundChannel {
        let mut spec: ChannelSpec = serde_json::from_value(serde_json::json!({
            "type": "webhook", "medium": "sms", "webhook": {"url": "http://127.0.0.1:9/"}
        }))
        .unwrap();
        let words = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
        spec.opt_out_keywords = words(out);
        spec.opt_in_keywords = words(inn);
        InboundChannel::from_spec("sms-gateway", &spec).unwrap()
    }

    #[test]
    fn every_default_opt_out_keyword_opts_out_in_any_case_alone_in_the_message() {
        let c = channel(None, None);
        for word in DEFAULT_OPT_OUT_KEYWORDS {
            assert_eq!(c.keyword(word), Some(Keyword::OptOut), "{word}");
            assert_eq!(c.keyword(&word.to_lowercase()), Some(Keyword::OptOut));
        }
        assert_eq!(c.keyword("  stop \n"), Some(Keyword::OptOut));
        assert_eq!(c.keyword("Stop."), Some(Keyword::OptOut));
        assert_eq!(c.keyword("¡Baja!"), Some(Keyword::OptOut));
        assert_eq!(c.keyword("please stop"), None, "not alone in the message");
        assert_eq!(c.keyword("stopped"), None);
        assert_eq!(c.keyword(""), None);
    }

    #[test]
    fn a_telegram_channel_also_knows_the_stop_and_start_commands() {
        let spec: ChannelSpec = serde_json::from_value(serde_json::json!({
            "type": "telegram", "telegram": {"bot_token": "${env:TG_TOKEN}"}
        }))
        .unwrap();
        let c = InboundChannel::from_spec("tg", &spec).unwrap();
        assert_eq!(c.keyword("/stop"), Some(Keyword::OptOut));
        assert_eq!(c.keyword("/START"), Some(Keyword::OptIn));
        assert_eq!(c.keyword("STOP"), Some(Keyword::OptOut));
        assert_eq!(
            channel(None, None).keyword("/stop"),
            None,
            "only on telegram"
        );
    }

    #[test]
    fn start_and_unstop_opt_back_in() {
        let c = channel(None, None);
        assert_eq!(c.keyword("START"), Some(Keyword::OptIn));
        assert_eq!(c.keyword("unstop"), Some(Keyword::OptIn));
        assert_eq!(c.keyword("started"), None);
    }

    #[test]
    fn a_channel_list_replaces_the_defaults() {
        let c = channel(Some(&["SALIR", "/stop"]), Some(&["ALTA"]));
        assert_eq!(c.keyword("salir"), Some(Keyword::OptOut));
        assert_eq!(c.keyword("/STOP"), Some(Keyword::OptOut));
        assert_eq!(c.keyword("STOP"), None);
        assert_eq!(c.keyword("alta"), Some(Keyword::OptIn));
        assert_eq!(c.keyword("START"), None);
    }

    #[test]
    fn phone_addresses_lose_their_prefix_and_separators() {
        assert_eq!(
            normalize_address(Medium::Whatsapp, "whatsapp:+51 987-654-321"),
            "+51987654321"
        );
        assert_eq!(
            normalize_address(Medium::Sms, " +1 (555) 010.2030 "),
            "+15550102030"
        );
        assert_eq!(
            normalize_address(Medium::Email, " Ana@Example.com "),
            "Ana@Example.com"
        );
    }

    #[test]
    fn a_reply_body_is_checked_field_by_field() {
        let parse_json = |v: serde_json::Value| parse(&v);
        assert_eq!(
            parse_json(serde_json::json!({"from": "+1", "text": "hi"})).unwrap(),
            InboundMessage::Reply(Reply {
                from: "+1".into(),
                text: "hi".into(),
                received_at: None
            })
        );
        let e = parse_json(serde_json::json!({"type": "reply", "text": "hi"})).unwrap_err();
        assert_eq!(e.field, "from");
        let e = parse_json(serde_json::json!({"from": "+1"})).unwrap_err();
        assert_eq!(e.field, "text");
        let e =
            parse_json(serde_json::json!({"from": "+1", "text": "x", "received_at": "yesterday"}))
                .unwrap_err();
        assert_eq!(e.field, "received_at");
        let e = parse_json(serde_json::json!({"from": "+1", "text": 5})).unwrap_err();
        assert_eq!(e.field, "text");
        let e = parse_json(serde_json::json!(["x"])).unwrap_err();
        assert_eq!(e.field, "body");
        let e = parse_json(serde_json::json!({"hello": 1})).unwrap_err();
        assert_eq!(e.field, "body");
        let e = parse_json(serde_json::json!({"type": "other"})).unwrap_err();
        assert_eq!(e.field, "type");
    }

    #[test]
    fn a_receipt_body_is_checked_field_by_field() {
        let parsed = parse(&serde_json::json!({"message_id": 42, "status": "read"})).unwrap();
        assert_eq!(
            parsed,
            InboundMessage::Receipt(Receipt {
                message_id: "42".into(),
                status: DeliveryStatus::Read,
                error: None,
                at: None,
                opted_out: false,
            })
        );
        let e = parse(&serde_json::json!({"message_id": "m", "status": "sent"})).unwrap_err();
        assert_eq!(e.field, "status");
        assert!(e.message.contains("delivered, read or failed"), "{e}");
        let e = parse(&serde_json::json!({"type": "receipt", "status": "read"})).unwrap_err();
        assert_eq!(e.field, "message_id");
        let e = parse(&serde_json::json!({"message_id": "m"})).unwrap_err();
        assert_eq!(e.field, "status");
    }
}
