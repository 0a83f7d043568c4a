//! Whom a campaign reaches: each member of its audience either receives one message per
//! chosen channel or is left out for exactly one [`ExclusionReason`].
//!
//! [`campaign_query`] builds, without touching the store, everything the decision needs
//! (the compiled audience and exclude segments, the channels of `use` in order with their
//! medium, the strategy, consent, `only_previously_interacted`, the frequency cap);
//! [`crate::store::Store::campaign_breakdown`] runs it as one grouped SQL query, and
//! [`CampaignQuery::decide`] is the same rules in plain Rust over a [`ContactFacts`] (the
//! oracle the SQL is tested against).
//!
//! # The rules
//!
//! - Only members of the audience segment count at all. A member of any `exclude` segment
//!   is left out as `excluded_segment`, before anything else is looked at.
//! - The address of a medium: sms and whatsapp → `phone`, email → `email`, telegram →
//!   `telegram`. A NULL or empty value is no address.
//! - Opted in on a medium: `opted_in_at` set and no `opted_out_at` at or after it. Opted
//!   out: `opted_out_at` set and at or after any `opted_in_at`. A contact with no row for
//!   the medium is neither.
//! - The checks of one channel, in this order; the first that fails is the reason:
//!   `no_address`; `opted_out`; `no_consent` (only with `consent: required`, the default:
//!   not opted in); `not_previously_interacted` (only with `only_previously_interacted`: no
//!   `last_inbound_at` on the channel's medium); `frequency_cap` (the contact already has at
//!   least `max` deliveries with `sent_at` at or after now − `per`, in any campaign).
//!   `consent: not_required` skips the consent check, never the opt-out check.
//! - `specific`: the one channel; its first failing check is the reason.
//! - `fallback`: the first channel in `use` that passes every check. If none does, the
//!   reason is the one the first channel *with an address* failed on, or `no_address`.
//! - `last_interacted`: the channel in `use` whose medium has the contact's latest
//!   `last_inbound_at` (ties: the earlier in `use`); a contact who never wrote on any of
//!   those media is `not_previously_interacted`; then the checks on that channel.
//! - `all`: every channel in `use` that passes every check, one message each. If none does,
//!   the reason is chosen as for `fallback`.
//!
//! Recipients are the contacts with at least one message; messages are the sum over
//! channels. Every audience member is a recipient or counted once among the exclusions.
//! The frequency cap looks at deliveries already sent, not at the messages this campaign
//! would add.

use std::collections::BTreeMap;
use std::fmt;

use super::{AudienceError, CompiledSegment, ContactFacts, Matcher, compile, segments_of};
use crate::spec::campaign::{Consent, Strategy};
use crate::spec::channel::Medium;
use crate::spec::load::{Loaded, Object};

/// Why an audience member receives nothing. Closed: the breakdown counts each of them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    ExcludedSegment,
    OptedOut,
    NoAddress,
    NoConsent,
    NotPreviouslyInteracted,
    FrequencyCap,
}

impl ExclusionReason {
    pub const ALL: [ExclusionReason; 6] = [
        ExclusionReason::ExcludedSegment,
        ExclusionReason::OptedOut,
        ExclusionReason::NoAddress,
        ExclusionReason::NoConsent,
        ExclusionReason::NotPreviouslyInteracted,
        ExclusionReason::FrequencyCap,
    ];

    /// The snake_case name, as in JSON and in `deliveries.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExclusionReason::ExcludedSegment => "excluded_segment",
            ExclusionReason::OptedOut => "opted_out",
            ExclusionReason::NoAddress => "no_address",
            ExclusionReason::NoConsent => "no_consent",
            ExclusionReason::NotPreviouslyInteracted => "not_previously_interacted",
            ExclusionReason::FrequencyCap => "frequency_cap",
        }
    }

    /// How the sentence says it: "2 without consent".
    pub fn phrase(self) -> &'static str {
        match self {
            ExclusionReason::ExcludedSegment => "in an excluded segment",
            ExclusionReason::OptedOut => "opted out",
            ExclusionReason::NoAddress => "without an address",
            ExclusionReason::NoConsent => "without consent",
            ExclusionReason::NotPreviouslyInteracted => "never wrote to us",
            ExclusionReason::FrequencyCap => "over the frequency cap",
        }
    }

    /// The code the store's query computes for this reason (0 is "passes").
    pub(crate) fn code(self) -> i64 {
        match self {
            ExclusionReason::NoAddress => 1,
            ExclusionReason::OptedOut => 2,
            ExclusionReason::NoConsent => 3,
            ExclusionReason::NotPreviouslyInteracted => 4,
            ExclusionReason::FrequencyCap => 5,
            ExclusionReason::ExcludedSegment => 6,
        }
    }
}

impl fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A campaign's audience, counted. `by_channel` has every channel of `use` (zeros
/// included) and `excluded` every [`ExclusionReason`] (zeros included), so that JSON
/// consumers always find the keys.
///
/// Invariants: `messages` is the sum of `by_channel`; `recipients <= messages`; the
/// audience size is `recipients` plus the sum of `excluded`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Breakdown {
    pub recipients: u64,
    pub messages: u64,
    pub by_channel: BTreeMap<String, u64>,
    pub excluded: BTreeMap<ExclusionReason, u64>,
}

impl Breakdown {
    /// An empty breakdown with a zero for every channel of `query` and every reason.
    pub fn zero(query: &CampaignQuery) -> Breakdown {
        Breakdown {
            recipients: 0,
            messages: 0,
            by_channel: query.channels.iter().map(|c| (c.name.clone(), 0)).collect(),
            excluded: ExclusionReason::ALL.iter().map(|r| (*r, 0)).collect(),
        }
    }

    /// Audience members left out, whatever the reason.
    pub fn excluded_total(&self) -> u64 {
        self.excluded.values().sum()
    }

    /// The breakdown as one sentence: "Sending 20 messages to 10 recipients; 3 excluded:
    /// 2 without consent, 1 opted out". Reasons go by count, largest first (ties in the
    /// order of [`ExclusionReason::ALL`]); zero counts are left out.
    pub fn sentence(&self) -> String {
        let mut out = format!(
            "Sending {} to {}",
            plural(self.messages, "message", "messages"),
            plural(self.recipients, "recipient", "recipients"),
        );
        let total = self.excluded_total();
        if total == 0 {
            out.push_str("; none excluded");
            return out;
        }
        let mut reasons: Vec<(ExclusionReason, u64)> = self
            .excluded
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (*r, *n))
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let parts: Vec<String> = reasons
            .iter()
            .map(|(r, n)| format!("{n} {}", r.phrase()))
            .collect();
        out.push_str(&format!("; {total} excluded: {}", parts.join(", ")));
        out
    }

    /// Adds one audience member's decision.
    pub fn add(&mut self, decision: &Decision, query: &CampaignQuery) {
        match decision {
            Decision::Send(channels) => {
                self.recipients += 1;
                for &i in channels {
                    *self
                        .by_channel
                        .entry(query.channels[i].name.clone())
                        .or_insert(0) += 1;
                    self.messages += 1;
                }
            }
            Decision::Excluded(reason) => *self.excluded.entry(*reason).or_insert(0) += 1,
        }
    }
}

impl fmt::Display for Breakdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sentence())
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// One channel of the campaign's `use`, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryChannel {
    pub name: String,
    pub medium: Medium,
}

/// The frequency cap fixed against `now`: a contact with at least `max` deliveries sent
/// at or after `since_ms` is capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrequencyCapQuery {
    pub max: u32,
    pub since_ms: i64,
}

/// Everything a campaign's breakdown needs, built from a validated revision.
#[derive(Clone, Debug)]
pub struct CampaignQuery {
    pub campaign: String,
    pub audience: CompiledSegment,
    pub exclude: Vec<CompiledSegment>,
    pub strategy: Strategy,
    /// The channels of `use`, in order, never empty.
    pub channels: Vec<QueryChannel>,
    pub consent: Consent,
    pub only_previously_interacted: bool,
    pub frequency_cap: Option<FrequencyCapQuery>,
    audience_matcher: Matcher,
    exclude_matchers: Vec<Matcher>,
}

/// What happens to one audience member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// One message on each of these channels (indices into [`CampaignQuery::channels`],
    /// ascending, never empty).
    Send(Vec<usize>),
    Excluded(ExclusionReason),
}

/// The contact's address on `medium`, if it has a usable one.
pub fn address_of(contact: &ContactFacts, medium: Medium) -> Option<&str> {
    let address = match medium {
        Medium::Sms | Medium::Whatsapp => contact.phone.as_deref(),
        Medium::Email => contact.email.as_deref(),
        Medium::Telegram => contact.telegram.as_deref(),
    };
    address.filter(|a| !a.is_empty())
}

/// Builds the breakdown query of `campaign` from a loaded revision, as of `now` (which fixes
/// relative times in segments and the frequency cap's window). Pure.
///
/// Fails with [`AudienceError::UnknownCampaign`] when no campaign has that name; the other
/// errors (an unknown segment or channel, a channel without a medium, a malformed duration)
/// are ones validation rules out.
pub fn campaign_query(
    loaded: &Loaded,
    campaign: &str,
    now: jiff::Timestamp,
) -> Result<CampaignQuery, AudienceError> {
    let spec = loaded
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Campaign(d) if d.metadata.name.value == campaign => Some(&d.spec),
            _ => None,
        })
        .ok_or_else(|| AudienceError::UnknownCampaign(campaign.to_string()))?;
    let invalid = |message: String| AudienceError::InvalidCampaign {
        campaign: campaign.to_string(),
        message,
    };
    let segments = segments_of(loaded);
    let audience_name = &spec.audience.segment.value;
    let audience = compile(audience_name, &segments, now)?;
    let audience_matcher = Matcher::new(audience_name, &segments, now)?;
    let mut exclude = Vec::new();
    let mut exclude_matchers = Vec::new();
    for name in &spec.audience.exclude {
        exclude.push(compile(&name.value, &segments, now)?);
        exclude_matchers.push(Matcher::new(&name.value, &segments, now)?);
    }
    let mut channels = Vec::new();
    for name in spec.channels.channels.value.iter() {
        let channel = loaded
            .objects
            .iter()
            .find_map(|o| match o {
                Object::Channel(d) if d.metadata.name.value == name.value => Some(&d.spec),
                _ => None,
            })
            .ok_or_else(|| invalid(format!("no channel is named `{}`", name.value)))?;
        let medium = channel
            .medium()
            .ok_or_else(|| invalid(format!("channel `{}` names no medium", name.value)))?;
        channels.push(QueryChannel {
            name: name.value.clone(),
            medium,
        });
    }
    if channels.is_empty() {
        return Err(invalid("`use` lists no channel".into()));
    }
    let frequency_cap = match spec
        .delivery
        .as_ref()
        .and_then(|d| d.frequency_cap.as_ref())
    {
        None => None,
        Some(cap) => {
            let per = crate::spec::values::parse_duration(&cap.per.value)
                .map_err(|e| invalid(format!("frequency_cap.per: {e}")))?;
            let per_ms = i64::try_from(per.as_millis()).unwrap_or(i64::MAX);
            Some(FrequencyCapQuery {
                max: cap.max.value,
                since_ms: now.as_millisecond().saturating_sub(per_ms),
            })
        }
    };
    Ok(CampaignQuery {
        campaign: campaign.to_string(),
        audience,
        exclude,
        strategy: spec.channels.strategy.value,
        channels,
        consent: spec.consent,
        only_previously_interacted: spec.audience.only_previously_interacted,
        frequency_cap,
        audience_matcher,
        exclude_matchers,
    })
}

impl CampaignQuery {
    /// The rules of this module in plain Rust, for one contact: `None` when the contact is
    /// not in the audience. `sent_at` are the times of the contact's sent deliveries (any
    /// campaign), for the frequency cap.
    pub fn decide(&self, contact: &ContactFacts, sent_at: &[i64]) -> Option<Decision> {
        if !self.audience_matcher.matches(contact) {
            return None;
        }
        if self.exclude_matchers.iter().any(|m| m.matches(contact)) {
            return Some(Decision::Excluded(ExclusionReason::ExcludedSegment));
        }
        let capped = self.frequency_cap.is_some_and(|cap| {
            let recent = sent_at.iter().filter(|t| **t >= cap.since_ms).count();
            recent >= cap.max as usize
        });
        let checks: Vec<Option<ExclusionReason>> = self
            .channels
            .iter()
            .map(|c| self.check(contact, c.medium, capped))
            .collect();
        let passing: Vec<usize> = (0..checks.len()).filter(|i| checks[*i].is_none()).collect();
        let first_failure = || {
            checks
                .iter()
                .flatten()
                .copied()
                .find(|r| *r != ExclusionReason::NoAddress)
                .unwrap_or(ExclusionReason::NoAddress)
        };
        Some(match self.strategy {
            Strategy::Specific => match checks[0] {
                None => Decision::Send(vec![0]),
                Some(reason) => Decision::Excluded(reason),
            },
            Strategy::Fallback => match passing.first() {
                Some(&i) => Decision::Send(vec![i]),
                None => Decision::Excluded(first_failure()),
            },
            Strategy::All => {
                if passing.is_empty() {
                    Decision::Excluded(first_failure())
                } else {
                    Decision::Send(passing)
                }
            }
            Strategy::LastInteracted => {
                let mut chosen: Option<(usize, i64)> = None;
                for (i, c) in self.channels.iter().enumerate() {
                    let last = contact.media.get(&c.medium).and_then(|m| m.last_inbound_at);
                    if let Some(t) = last
                        && chosen.is_none_or(|(_, best)| t > best)
                    {
                        chosen = Some((i, t));
                    }
                }
                match chosen {
                    None => Decision::Excluded(ExclusionReason::NotPreviouslyInteracted),
                    Some((i, _)) => match checks[i] {
                        None => Decision::Send(vec![i]),
                        Some(reason) => Decision::Excluded(reason),
                    },
                }
            }
        })
    }

    /// The first check that fails on a channel of `medium`, or `None` when it passes.
    fn check(
        &self,
        contact: &ContactFacts,
        medium: Medium,
        capped: bool,
    ) -> Option<ExclusionReason> {
        if address_of(contact, medium).is_none() {
            return Some(ExclusionReason::NoAddress);
        }
        let facts = contact.media.get(&medium).copied().unwrap_or_default();
        let opted_out = match (facts.opted_in_at, facts.opted_out_at) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(in_at), Some(out_at)) => out_at >= in_at,
        };
        if opted_out {
            return Some(ExclusionReason::OptedOut);
        }
        if self.consent == Consent::Required && !facts.is_opted_in() {
            return Some(ExclusionReason::NoConsent);
        }
        if self.only_previously_interacted && facts.last_inbound_at.is_none() {
            return Some(ExclusionReason::NotPreviouslyInteracted);
        }
        if capped {
            return Some(ExclusionReason::FrequencyCap);
        }
        None
    }

    /// The breakdown of `contacts` by [`decide`](Self::decide); `sent_at` gives each
    /// contact's sent delivery times by row key.
    pub fn breakdown_of<'a>(
        &self,
        contacts: impl IntoIterator<Item = &'a ContactFacts>,
        sent_at: &BTreeMap<i64, Vec<i64>>,
    ) -> Breakdown {
        let mut out = Breakdown::zero(self);
        for contact in contacts {
            let sent = sent_at.get(&contact.pk).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(decision) = self.decide(contact, sent) {
                out.add(&decision, self);
            }
        }
        out
    }
}
