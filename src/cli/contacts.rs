//! `herald contacts import` and `herald contacts export`.

use std::path::PathBuf;

use super::{DbArg, Outcome};

#[derive(clap::Subcommand, Debug)]
pub enum ContactsCommand {
    /// Upsert contacts from a CSV file, keyed by `id`.
    Import {
        file: PathBuf,
        #[command(flatten)]
        db: DbArg,
    },
    /// Write every contact as CSV.
    Export {
        file: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
}

pub async fn run(_command: ContactsCommand, _now: jiff::Timestamp) -> anyhow::Result<Outcome> {
    anyhow::bail!("contacts is not built yet")
}
