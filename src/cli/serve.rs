//! `herald serve`: logging, the listener, the signals; the daemon itself is
//! [`crate::daemon::serve`].
//!
//! Logs go to stderr: human-readable text (coloured on a terminal) unless `--log-format json`
//! asks for one JSON object per line. `RUST_LOG` overrides `--log-level` with a full filter.
//! The first SIGTERM or Ctrl-C shuts down cleanly; a second one exits at once.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

use super::{DbArg, Outcome};
use crate::daemon::{self, ServeConfig};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The directory of campaign files, watched and applied on every change.
    pub dir: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
    /// Where the HTTP server listens.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A contacts CSV to import on start (bad rows are logged and left out).
    #[arg(long, value_name = "FILE.csv")]
    pub contacts: Option<PathBuf>,
    /// Apply a directory with no documents (retiring every campaign) instead of refusing it.
    #[arg(long)]
    pub allow_empty: bool,
    /// The URL providers and browsers reach this server at (e.g. https://herald.example.com),
    /// used to check providers' callback signatures and to build unsubscribe links.
    #[arg(long, env = "HERALD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// text: for people; json: one object per line, for log collectors.
    #[arg(long, value_enum, env = "HERALD_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// error, warn, info, debug or trace (for herald; other crates log warnings).
    /// RUST_LOG, when set, replaces this with a full filter.
    #[arg(long, env = "HERALD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `now`: the hidden global `--now` (HERALD_NOW): the daemon starts its clock at that
/// instant and lets it run, so a rehearsal can serve "as of" Black Friday morning.
pub async fn run(args: ServeArgs, now: Option<jiff::Timestamp>) -> anyhow::Result<Outcome> {
    init_logging(args.log_format, &args.log_level)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mut config = ServeConfig::new(args.dir, args.db.path, listener);
    config.contacts = args.contacts;
    config.allow_empty = args.allow_empty;
    config.public_url = args.public_url;
    config.tokens = crate::http::Tokens::from_env()?;
    if let Some(start) = now {
        tracing::warn!(%start, "the clock starts at --now and runs from there; not the real time");
        config.clock = std::sync::Arc::new(RunningFrom::new(start));
    }
    match daemon::serve(config, first_signal_then_force()).await {
        Ok(()) => Ok(Outcome::Ok),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "herald stopped on an error");
            Err(e)
        }
    }
}

/// Sets up the global subscriber. `RUST_LOG` wins over `level`.
pub fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.is_empty() => EnvFilter::try_new(&filter)
            .with_context(|| format!("RUST_LOG={filter} is not a valid filter"))?,
        _ => EnvFilter::try_new(format!("warn,herald={level}")).with_context(|| {
            format!("--log-level {level}: use error, warn, info, debug or trace")
        })?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .with_target(false)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Resolves on the first SIGTERM or Ctrl-C; from then on, another one exits at once.
async fn first_signal_then_force() {
    signal().await;
    tracing::info!("signal received: finishing in-flight work (send it again to exit now)");
    tokio::spawn(async {
        signal().await;
        tracing::warn!("second signal: exiting now, without finishing in-flight sends");
        std::process::exit(130);
    });
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A clock that reads `start` when created and runs at the real pace from there.
struct RunningFrom {
    offset: jiff::SignedDuration,
}

impl RunningFrom {
    fn new(start: jiff::Timestamp) -> RunningFrom {
        RunningFrom {
            offset: start.duration_since(jiff::Timestamp::now()),
        }
    }
}

impl crate::engine::Clock for RunningFrom {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
            .checked_add(self.offset)
            .unwrap_or_else(|_| jiff::Timestamp::now())
    }
}
