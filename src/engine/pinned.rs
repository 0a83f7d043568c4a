//! A run's pinned configuration: its campaign, template and channels as they were in the
//! revision it started with (read from the stored spec versions, never from the files),
//! built once per run and reused for every message.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use tokio::sync::Semaphore;

use super::hold::Hold;
use super::rate::Gcra;
use super::window::Window;
use crate::channels::{self, Channel};
use crate::render::Renderer;
use crate::secrets::SecretResolver;
use crate::spec::Object;
use crate::spec::campaign::{CampaignSpec, Consent};
use crate::spec::channel::{ChannelSpec, Medium};
use crate::spec::values::{RateLimit, parse_duration, parse_time_zone};
use crate::store::revisions::StoredSpec;
use crate::store::runs::RunRow;

/// Retry defaults (DESIGN.md 4.3): 5 attempts, 30 s doubling to 1 h.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(3_600);

/// A channel ready to send, shared by every run pinned to the same version of it.
#[derive(Debug)]
pub struct ChannelHandle {
    pub channel: Channel,
    pub limiter: Option<Arc<Gcra>>,
    pub in_flight: Arc<Semaphore>,
    pub window: Option<Window>,
    /// Set when the provider asks to wait; shared by every version of the channel.
    pub hold: Arc<Hold>,
    pub metrics: crate::metrics::ChannelSeries,
}

/// Shared limits, keyed so that every run sending through a channel (or of a campaign)
/// waits on the same limiter.
#[derive(Debug, Default)]
pub struct Shared {
    /// (channel name, spec hash) → the built channel.
    pub channels: BTreeMap<(String, String), Arc<ChannelHandle>>,
    /// channel name → its one limiter, and the revision whose rate it has. A run pinned to
    /// a newer revision of the channel sets the rate; older runs keep sharing the limiter,
    /// so runs of old and new revisions together never exceed the newest rate.
    pub channel_limits: BTreeMap<String, (i64, Arc<Gcra>)>,
    /// channel name → (the limit it was sized for, requests in flight).
    pub in_flight: BTreeMap<String, (usize, Arc<Semaphore>)>,
    /// channel name → its hold (the provider asked to wait).
    pub holds: BTreeMap<String, Arc<Hold>>,
    /// (campaign, interval) → limiter.
    pub campaign_limits: BTreeMap<(String, Duration), Arc<Gcra>>,
    /// The daemon's `--public-url`: channels that call back or link to herald (Twilio's
    /// StatusCallback, e-mail unsubscribe links) use it unless they set their own.
    pub public_url: Option<String>,
}

/// One of the run's channels: ready, or why it cannot be used.
#[derive(Debug, Clone)]
pub struct ChannelUse {
    pub name: String,
    pub medium: Medium,
    pub handle: Result<Arc<ChannelHandle>, String>,
}

/// Everything a run needs to send, built once.
#[derive(Debug)]
pub struct PinnedRun {
    pub run: RunRow,
    pub test: bool,
    pub renderer: Result<Arc<Renderer>, String>,
    pub channels: Vec<ChannelUse>,
    pub campaign_limit: Option<Arc<Gcra>>,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub window: Option<Window>,
    pub schedule_zone: TimeZone,
    /// (max, per)
    pub frequency_cap: Option<(u32, Duration)>,
    pub consent: Consent,
}

impl PinnedRun {
    pub fn channel(&self, name: &str) -> Option<&ChannelUse> {
        self.channels.iter().find(|c| c.name == name)
    }
}

/// The stored versions as a loaded revision.
pub fn campaign_of<'a>(loaded: &'a crate::spec::Loaded, name: &str) -> Option<&'a CampaignSpec> {
    loaded.objects.iter().find_map(|o| match o {
        Object::Campaign(d) if d.metadata.name.value == name => Some(&d.spec),
        _ => None,
    })
}

/// The schedule's zone (UTC when it names none or an unknown one).
pub fn schedule_zone(campaign: &CampaignSpec) -> TimeZone {
    campaign
        .schedule
        .value
        .timezone
        .as_ref()
        .and_then(|z| parse_time_zone(&z.value).ok())
        .unwrap_or(TimeZone::UTC)
}

fn rate_of(rate: Option<&crate::spec::Located<crate::spec::values::Rate>>) -> Option<RateLimit> {
    rate.and_then(|r| r.value.parse().ok())
}

/// Builds a run's pinned configuration from the spec versions of its revision.
pub fn pin(
    run: RunRow,
    specs: &[StoredSpec],
    campaign_dir: &Path,
    shared: &mut Shared,
) -> Result<PinnedRun, String> {
    let loaded = crate::reconcile::rebuild_specs(specs);
    let campaign = campaign_of(&loaded, &run.campaign).ok_or_else(|| {
        format!(
            "campaign {} is not in revision {}",
            run.campaign, run.revision
        )
    })?;
    let zone = schedule_zone(campaign);
    let template_name = &campaign.template.value;
    let renderer = loaded
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Template(d) if d.metadata.name.value == *template_name => Some(&d.spec),
            _ => None,
        })
        .ok_or_else(|| format!("template {template_name} is not in the run's revision"))
        .and_then(|template| {
            let vars: BTreeMap<String, serde_json::Value> = campaign
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect();
            Renderer::new(template_name, template, &vars)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
    let secrets = SecretResolver::new(campaign_dir);
    let mut channels = Vec::new();
    for name in campaign.channels.channels.value.iter().map(|n| &n.value) {
        let found = loaded.objects.iter().find_map(|o| match o {
            Object::Channel(d) if d.metadata.name.value == *name => Some(&d.spec),
            _ => None,
        });
        let Some(spec) = found else {
            return Err(format!("channel {name} is not in the run's revision"));
        };
        let medium = spec
            .medium()
            .ok_or_else(|| format!("channel {name} names no medium"))?;
        let hash = specs
            .iter()
            .find(|s| s.kind == crate::spec::Kind::Channel && s.name == *name)
            .map(|s| s.hash.clone())
            .unwrap_or_default();
        let handle = channel_handle(
            name,
            &hash,
            run.revision,
            spec,
            campaign_dir,
            &secrets,
            shared,
        );
        channels.push(ChannelUse {
            name: name.clone(),
            medium,
            handle,
        });
    }
    let delivery = campaign.delivery.clone().unwrap_or_default();
    let campaign_limit = rate_of(delivery.rate.as_ref()).map(|limit| {
        let g = Gcra::new(limit);
        shared
            .campaign_limits
            .entry((run.campaign.clone(), g.interval()))
            .or_insert_with(|| Arc::new(g))
            .clone()
    });
    let retry = delivery.retry.as_ref();
    let duration_of = |d: Option<&crate::spec::Located<String>>, default| {
        d.and_then(|d| parse_duration(&d.value).ok())
            .unwrap_or(default)
    };
    let window = match &delivery.send_window {
        Some(w) => Some(Window::from_spec(w)?),
        None => None,
    };
    let frequency_cap = match &delivery.frequency_cap {
        Some(cap) => Some((cap.max.value, parse_duration(&cap.per.value)?)),
        None => None,
    };
    Ok(PinnedRun {
        test: run.trigger == "test",
        run,
        renderer,
        channels,
        campaign_limit,
        max_attempts: retry.map_or(DEFAULT_MAX_ATTEMPTS, |r| r.max_attempts.value.max(1)),
        initial_backoff: duration_of(
            retry.and_then(|r| r.initial_backoff.as_ref()),
            DEFAULT_INITIAL_BACKOFF,
        ),
        max_backoff: duration_of(
            retry.and_then(|r| r.max_backoff.as_ref()),
            DEFAULT_MAX_BACKOFF,
        ),
        window,
        schedule_zone: zone,
        frequency_cap,
        consent: campaign.consent,
    })
}

#[allow(clippy::too_many_arguments)]
fn channel_handle(
    name: &str,
    hash: &str,
    revision: i64,
    spec: &ChannelSpec,
    campaign_dir: &Path,
    secrets: &SecretResolver,
    shared: &mut Shared,
) -> Result<Arc<ChannelHandle>, String> {
    let key = (name.to_string(), hash.to_string());
    if let Some(handle) = shared.channels.get(&key) {
        return Ok(handle.clone());
    }
    let spec = spec.resolved(campaign_dir, shared.public_url.as_deref());
    let channel = channels::build(name, &spec, secrets).map_err(|e| e.to_string())?;
    let limiter = rate_of(spec.rate.as_ref()).map(|limit| {
        let (set_by, g) = shared
            .channel_limits
            .entry(name.to_string())
            .or_insert_with(|| (revision, Arc::new(Gcra::new(limit))));
        if revision > *set_by {
            g.set_limit(limit);
            *set_by = revision;
        }
        g.clone()
    });
    // One semaphore per channel, so old and new runs together keep to the limit; sized by
    // the newest build (a changed `max_in_flight` takes effect as permits come back).
    let wanted = channel.max_in_flight().max(1);
    let (size, in_flight) = shared
        .in_flight
        .entry(name.to_string())
        .or_insert_with(|| (wanted, Arc::new(Semaphore::new(wanted))));
    if wanted > *size {
        in_flight.add_permits(wanted - *size);
        *size = wanted;
    } else if wanted < *size {
        // Only idle permits can be taken back; what is in use now stays until a later build.
        *size -= in_flight.forget_permits(*size - wanted);
    }
    let in_flight = in_flight.clone();
    let window = match &spec.send_window {
        Some(w) => Some(Window::from_spec(w)?),
        None => None,
    };
    let hold = shared.holds.entry(name.to_string()).or_default().clone();
    let handle = Arc::new(ChannelHandle {
        channel,
        limiter,
        in_flight,
        window,
        hold,
        metrics: crate::metrics::channel_series(name),
    });
    // Older versions of this channel that no pinned run holds any more are let go: each
    // may keep connections open (an SMTP pool, an HTTP client's idle sockets).
    shared
        .channels
        .retain(|(other, _), h| other != name || Arc::strong_count(h) > 1);
    shared.channels.insert(key, handle.clone());
    Ok(handle)
}
