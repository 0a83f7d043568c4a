//! The commands and their options. Exit codes: 0 ok, 1 the files or data are invalid, 2 usage
//! or environment errors (and, for `plan --detailed-exitcode`, "there are changes").
//!
//! Each command group lives in its own file and returns an [`Outcome`]; this file parses,
//! starts the async runtime for the commands that use the store, and maps outcomes to exit
//! codes.

pub mod api_client;
mod audience;
mod contacts;
mod plan;
mod render;
mod runs;
pub mod serve;

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

/// Where the store is: `--db PATH`, else HERALD_DB, else ./herald.db.
#[derive(clap::Args, Debug, Clone)]
pub struct DbArg {
    /// The SQLite store (created if missing).
    #[arg(long = "db", env = "HERALD_DB", default_value = crate::store::DEFAULT_PATH)]
    pub path: PathBuf,
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
    /// Show what applying DIR would change, whom each touched campaign reaches, and when.
    Plan(plan::PlanArgs),
    /// Apply DIR to the store as one revision, all or nothing.
    Apply(plan::ApplyArgs),
    /// Count and sample a segment, or break down whom a campaign would reach.
    Audience(audience::AudienceArgs),
    /// Import contacts from CSV, or export them.
    #[command(subcommand)]
    Contacts(contacts::ContactsCommand),
    /// Print exactly what a contact, or a sample of recipients, would receive, per channel.
    Render(render::RenderArgs),
    /// Run the daemon: watch DIR, apply each valid revision, fire campaigns on schedule.
    Serve(serve::ServeArgs),
    /// List, show, follow, pause, resume or cancel the runs of a running daemon
    /// (`--url`; the token from HERALD_TOKEN).
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Start a campaign's run now on a running daemon.
    Trigger(runs::TriggerArgs),
    /// Send a campaign's message to one contact as a test (not counted in its figures).
    SendTest(runs::SendTestArgs),
}

/// What a command ended with.
pub enum Outcome {
    /// Exit 0.
    Ok,
    /// Exit 1: the files or the data are invalid.
    Invalid,
    /// Exit 2: `plan --detailed-exitcode` found changes.
    Changes,
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
        Command::Plan(args) => block_on(plan::plan(args, now)),
        Command::Apply(args) => block_on(plan::apply(args, now)),
        Command::Audience(args) => block_on(audience::run(args, now)),
        Command::Contacts(command) => block_on(contacts::run(command, now)),
        Command::Render(args) => block_on(render::run(args, now)),
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(serve::run(args, cli.now))),
        Command::Runs(command) => block_on(runs::run(command)),
        Command::Trigger(args) => block_on(runs::trigger(args)),
        Command::SendTest(args) => block_on(runs::send_test(args)),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Invalid) => ExitCode::from(1),
        Ok(Outcome::Changes) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs a store command on a runtime of its own: the store's work is I/O bound and the
/// command does one thing, so a current-thread runtime is enough.
fn block_on(
    command: impl std::future::Future<Output = anyhow::Result<Outcome>>,
) -> anyhow::Result<Outcome> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}

/// Prints an invalid directory's findings to stderr, as `validate` prints them.
pub(super) fn report_invalid(checked: &spec::Checked) -> anyhow::Result<()> {
    let mut rendered = output::render(
        DiagnosticFormat::Text,
        &checked.diagnostics,
        &checked.loaded,
        false,
    );
    rendered.push_str(&output::summary(
        checked.error_count(),
        checked.warning_count(),
        checked.loaded.objects.len(),
        checked.loaded.files.len(),
    ));
    rendered.push('\n');
    std::io::stderr().write_all(rendered.as_bytes())?;
    Ok(())
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
