//! `herald audience`: count and sample a segment, or break down whom a campaign would reach
//! (recipients, messages per channel, and why the others are left out).
//!
//! The directory is loaded and validated first: an invalid one prints its diagnostics to
//! stderr and exits 1, as does an unknown segment or campaign (with a "did you mean").
//! Samples show contact ids and names only, never addresses: this output ends up in CI logs.
//! A store that does not exist yet is created empty (as every store command does), so the
//! counts are then zero.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use super::{DbArg, Outcome, report_invalid};
use crate::audience::{self, AudienceError, Breakdown};
use crate::spec;
use crate::spec::load::Object;
use crate::spec::segment::BUILT_IN_SEGMENTS;
use crate::spec::suggest::did_you_mean;
use crate::store::Store;
use crate::store::segments::{SampledContact, SampledRecipient};

#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("target").required(true).args(["segment", "campaign"])
))]
pub struct AudienceArgs {
    /// A segment (from DIR, or built in).
    pub segment: Option<String>,
    /// Break down whom this campaign would reach instead.
    #[arg(long, value_name = "NAME", conflicts_with = "segment")]
    pub campaign: Option<String>,
    /// The directory of campaign files.
    #[arg(long)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
    #[arg(long, value_enum, default_value_t = AudienceFormat::Text)]
    pub format: AudienceFormat,
    /// How many contacts to show (ids and names only); 0 shows none.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub sample: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AudienceFormat {
    Text,
    Json,
}

#[derive(Serialize)]
struct SegmentReport<'a> {
    segment: &'a str,
    count: u64,
    sample: Vec<SampledContact>,
}

#[derive(Serialize)]
struct CampaignReport<'a> {
    campaign: &'a str,
    #[serde(flatten)]
    breakdown: &'a Breakdown,
    sample: Vec<SampledRecipient>,
}

pub async fn run(args: AudienceArgs, now: jiff::Timestamp) -> anyhow::Result<Outcome> {
    let loaded = spec::load_dir(&args.dir)?;
    let checked = spec::validate(loaded, now);
    if !checked.is_valid() {
        report_invalid(&checked)?;
        return Ok(Outcome::Invalid);
    }
    let mut stdout = std::io::stdout().lock();
    if let Some(campaign) = &args.campaign {
        let query = match audience::campaign_query(&checked.loaded, campaign, now) {
            Ok(q) => q,
            Err(AudienceError::UnknownCampaign(name)) => {
                let names = checked.loaded.objects.iter().filter_map(|o| match o {
                    Object::Campaign(d) => Some(d.metadata.name.value.as_str()),
                    _ => None,
                });
                unknown("campaign", &name, did_you_mean(&name, names));
                return Ok(Outcome::Invalid);
            }
            Err(e) => return Err(e.into()),
        };
        let store = open(&args.db).await?;
        let breakdown = store
            .campaign_breakdown(&query)
            .await
            .context("while counting the campaign's audience")?;
        let sample = store
            .campaign_sample(&query, args.sample)
            .await
            .context("while sampling the campaign's recipients")?;
        store.close().await;
        match args.format {
            AudienceFormat::Json => {
                let report = CampaignReport {
                    campaign,
                    breakdown: &breakdown,
                    sample,
                };
                writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
            }
            AudienceFormat::Text => {
                writeln!(stdout, "{}", breakdown.sentence())?;
                for channel in &query.channels {
                    let n = breakdown.by_channel.get(&channel.name).unwrap_or(&0);
                    writeln!(stdout, "  {}: {n}", channel.name)?;
                }
                if !sample.is_empty() {
                    writeln!(stdout, "Sample:")?;
                    for r in &sample {
                        writeln!(
                            stdout,
                            "  {}{} → {}",
                            r.id,
                            name_suffix(&r.name),
                            r.channels.join(", ")
                        )?;
                    }
                }
            }
        }
        return Ok(Outcome::Ok);
    }

    let segment = args
        .segment
        .as_deref()
        .expect("clap requires a segment or --campaign");
    let segments = audience::segments_of(&checked.loaded);
    let compiled = match audience::compile(segment, &segments, now) {
        Ok(c) => c,
        Err(AudienceError::UnknownSegment(name)) if name == segment => {
            let names = segments
                .keys()
                .map(String::as_str)
                .chain(BUILT_IN_SEGMENTS)
                .collect::<Vec<_>>();
            unknown("segment", &name, did_you_mean(&name, names));
            return Ok(Outcome::Invalid);
        }
        Err(e) => return Err(e.into()),
    };
    let store = open(&args.db).await?;
    let count = store
        .segment_count(&compiled)
        .await
        .context("while counting the segment")?;
    let sample = store
        .segment_sample(&compiled, args.sample)
        .await
        .context("while sampling the segment")?;
    store.close().await;
    match args.format {
        AudienceFormat::Json => {
            let report = SegmentReport {
                segment,
                count,
                sample,
            };
            writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
        }
        AudienceFormat::Text => {
            let noun = if count == 1 { "contact" } else { "contacts" };
            writeln!(stdout, "{segment}: {count} {noun}")?;
            for c in &sample {
                writeln!(stdout, "  {}{}", c.id, name_suffix(&c.name))?;
            }
        }
    }
    Ok(Outcome::Ok)
}

async fn open(db: &DbArg) -> anyhow::Result<Store> {
    Store::open(&db.path)
        .await
        .with_context(|| format!("while opening the store {}", db.path.display()))
}

fn name_suffix(name: &Option<String>) -> String {
    name.as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default()
}

fn unknown(kind: &str, name: &str, suggestion: Option<String>) {
    match suggestion {
        Some(s) => eprintln!("error: no {kind} is named `{name}`; did you mean `{s}`?"),
        None => eprintln!("error: no {kind} is named `{name}`"),
    }
}
