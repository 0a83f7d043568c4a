//! `herald plan` and `herald apply`.
//!
//! plan never writes: with no store file it compares with an empty store (so CI can plan
//! without a database) and says so; with one it opens it read-only. apply opens (creating
//! and migrating) the store and applies the directory as one revision, or records it as
//! rejected.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use super::{DbArg, Outcome};
use crate::reconcile::report::{self, PlanFormat};
use crate::reconcile::{self, ApplyOutcome};
use crate::store::Store;

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The directory of campaign files.
    pub dir: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
    /// text for terminals, markdown for a pull-request comment, json for scripts.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Exit 0 when nothing would change, 2 when something would, 1 when invalid.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The directory of campaign files.
    pub dir: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
}

fn color(format: PlanFormat) -> bool {
    format == PlanFormat::Text
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
}

pub async fn plan(args: PlanArgs, now: jiff::Timestamp) -> anyhow::Result<Outcome> {
    let store = if args.db.path.exists() {
        Some(Store::open_read_only(&args.db.path).await?)
    } else {
        None
    };
    let prepared = reconcile::prepare(&args.dir, store.as_ref(), &args.db.path, now).await?;
    if let Some(store) = &store {
        store.close().await;
    }
    let rendered = report::render(args.format, &prepared, color(args.format));
    std::io::stdout().write_all(rendered.as_bytes())?;
    Ok(if !prepared.is_valid() {
        Outcome::Invalid
    } else if args.detailed_exitcode && !prepared.unchanged() {
        Outcome::Changes
    } else {
        Outcome::Ok
    })
}

pub async fn apply(args: ApplyArgs, now: jiff::Timestamp) -> anyhow::Result<Outcome> {
    let store = Store::open(&args.db.path).await?;
    let mut prepared = reconcile::prepare(&args.dir, Some(&store), &args.db.path, now).await?;
    let outcome = reconcile::apply(&mut prepared, &store, &args.dir, now).await;
    store.close().await;
    let outcome = outcome?;
    let mut out = report::render(PlanFormat::Text, &prepared, color(PlanFormat::Text));
    let result = match outcome {
        ApplyOutcome::Unchanged => {
            out.push_str("Nothing to apply: the revision in force is unchanged.\n");
            Outcome::Ok
        }
        ApplyOutcome::Rejected { revision } => {
            out.push_str(&format!(
                "Rejected: recorded as revision {revision} with its errors; the revision in force stays.\n"
            ));
            Outcome::Invalid
        }
        ApplyOutcome::Applied(applied) => {
            out.push_str(&format!("Applied revision {}.", applied.revision));
            if applied.cancelled_runs > 0 {
                out.push_str(&format!(
                    " Cancelled {} run{} of removed campaigns and {} pending deliver{}.",
                    applied.cancelled_runs,
                    if applied.cancelled_runs == 1 { "" } else { "s" },
                    applied.cancelled_deliveries,
                    if applied.cancelled_deliveries == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                ));
            }
            out.push('\n');
            Outcome::Ok
        }
    };
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(result)
}
