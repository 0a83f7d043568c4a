//! `herald plan` and `herald apply`.

use std::path::PathBuf;

use super::{DbArg, Outcome};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The directory of campaign files.
    pub dir: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The directory of campaign files.
    pub dir: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
}

pub async fn plan(_args: PlanArgs, _now: jiff::Timestamp) -> anyhow::Result<Outcome> {
    anyhow::bail!("plan is not built yet")
}

pub async fn apply(_args: ApplyArgs, _now: jiff::Timestamp) -> anyhow::Result<Outcome> {
    anyhow::bail!("apply is not built yet")
}
