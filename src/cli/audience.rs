//! `herald audience`.

use std::path::PathBuf;

use super::{DbArg, Outcome};

#[derive(clap::Args, Debug)]
pub struct AudienceArgs {
    /// A segment (from DIR, or built in).
    pub segment: Option<String>,
    /// The directory of campaign files.
    #[arg(long)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
}

pub async fn run(_args: AudienceArgs, _now: jiff::Timestamp) -> anyhow::Result<Outcome> {
    anyhow::bail!("audience is not built yet")
}
