//! The commands and their options. Exit codes: 0 ok, 1 the files are invalid, 2 usage or
//! environment errors.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::{self, DiagnosticFormat};
use crate::spec;

#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version,
    about = "Bulk messaging campaigns kept as code"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Pretend the time is this instant (RFC 3339); for tests and rehearsals.
    #[arg(long, global = true, env = "HERALD_NOW", hide = true)]
    pub now: Option<jiff::Timestamp>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check every file in DIR and report every error at once.
    Validate {
        /// The directory of campaign files.
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = DiagnosticFormat::Text)]
        format: DiagnosticFormat,
    },
    /// Print the JSON Schema of herald's files (committed as schemas/herald.schema.json).
    Schema,
}

/// What a command ended with.
pub enum Outcome {
    Ok,
    Invalid,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let now = cli.now.unwrap_or_else(jiff::Timestamp::now);
    let result = match cli.command {
        Command::Validate { dir, format } => validate(&dir, format, now),
        Command::Schema => {
            print!("{}", spec::schema::json_schema());
            Ok(Outcome::Ok)
        }
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Invalid) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn validate(
    dir: &std::path::Path,
    format: DiagnosticFormat,
    now: jiff::Timestamp,
) -> anyhow::Result<Outcome> {
    let loaded = spec::load_dir(dir)?;
    let checked = spec::validate(loaded, now);
    let color = format == DiagnosticFormat::Text
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    let mut rendered = output::render(format, &checked.diagnostics, &checked.loaded, color);
    if format == DiagnosticFormat::Text {
        rendered.push_str(&output::summary(
            checked.error_count(),
            checked.warning_count(),
            checked.loaded.objects.len(),
            checked.loaded.files.len(),
        ));
        rendered.push('\n');
    }
    std::io::stdout().write_all(rendered.as_bytes())?;
    Ok(if checked.is_valid() {
        Outcome::Ok
    } else {
        Outcome::Invalid
    })
}
