//! `herald contacts import` and `herald contacts export`: files and terminal around
//! [`crate::contacts::import()`] and [`crate::contacts::export()`].

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{DbArg, Outcome};
use crate::contacts::{self, ImportError, ImportOptions, ImportProgress, ImportReport};
use crate::store::Store;

#[derive(clap::Subcommand, Debug)]
pub enum ContactsCommand {
    /// Upsert contacts from a CSV file, keyed by `id`, in one transaction.
    ///
    /// Bad rows are listed on stderr as FILE:LINE: column NAME: why, and the good rows are
    /// imported (exit 1 if any row was bad).
    Import {
        file: PathBuf,
        /// Import nothing if any row is bad.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Write every contact as CSV, in the columns `import` reads (to stdout without FILE).
    Export {
        file: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
}

pub async fn run(command: ContactsCommand, now: jiff::Timestamp) -> anyhow::Result<Outcome> {
    match command {
        ContactsCommand::Import { file, strict, db } => import(&file, strict, &db, now).await,
        ContactsCommand::Export { file, db } => export(file.as_deref(), &db).await,
    }
}

async fn import(
    file: &Path,
    strict: bool,
    db: &DbArg,
    now: jiff::Timestamp,
) -> anyhow::Result<Outcome> {
    let input =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let len = input.metadata().map(|m| m.len()).unwrap_or(0);
    let store = Store::open(&db.path).await?;

    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
            )
            .expect("a valid template"),
        );
        Some(bar)
    } else {
        None
    };
    let on_progress = |p: ImportProgress| {
        if let Some(bar) = &bar {
            bar.set_position(p.bytes);
            bar.set_message(format!("{} rows", p.rows));
        }
    };
    let options = ImportOptions { now, strict };
    let result = contacts::import(&store, input, options, Some(&on_progress)).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    store.close().await;

    let name = file.display();
    let report = match result {
        Ok(report) => report,
        Err(ImportError::Header(e)) => {
            eprintln!("{name}:1: {e}");
            return Ok(Outcome::Invalid);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("while importing {name}"));
        }
    };
    print_issues(&name.to_string(), &report)?;
    Ok(if report.bad_rows > 0 {
        Outcome::Invalid
    } else {
        Outcome::Ok
    })
}

fn print_issues(name: &str, report: &ImportReport) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    for issue in &report.issues {
        writeln!(err, "{name}:{issue}")?;
    }
    for w in &report.warnings {
        match &w.column {
            Some(c) => writeln!(err, "{name}:{}: warning: column {c}: {}", w.line, w.message)?,
            None => writeln!(err, "{name}:{}: warning: {}", w.line, w.message)?,
        }
    }
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let bad = plural(report.bad_rows, "bad row", "bad rows");
    if report.committed {
        let mut summary = format!(
            "imported {} from {name}: {} created, {} updated, {} unchanged; {bad}",
            plural(report.imported(), "row", "rows"),
            report.created,
            report.updated,
            report.unchanged,
        );
        if !report.warnings.is_empty() {
            let n = report.warnings.len() as u64;
            summary.push_str(&format!("; {}", plural(n, "warning", "warnings")));
        }
        println!("{summary}");
    } else {
        println!("imported nothing from {name}: {bad} (--strict)");
    }
    Ok(())
}

async fn export(file: Option<&Path>, db: &DbArg) -> anyhow::Result<Outcome> {
    // Opening would create an empty store; a mistyped --db deserves an error instead.
    if !db.path.exists() {
        anyhow::bail!("no store at {}", db.path.display());
    }
    let store = Store::open(&db.path).await?;
    match file {
        Some(path) => {
            let out = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let n = contacts::export(&store, std::io::BufWriter::new(out))
                .await
                .with_context(|| format!("while exporting to {}", path.display()))?;
            println!("exported {n} contacts to {}", path.display());
        }
        None => {
            contacts::export(&store, std::io::stdout().lock())
                .await
                .context("while exporting to stdout")?;
        }
    }
    store.close().await;
    Ok(Outcome::Ok)
}
