//! The state store: the only module that speaks SQL. One SQLite file in WAL mode, reached
//! through sqlx, with the migrations of `migrations/` embedded in the binary.
//!
//! Writes go through a pool of exactly one connection whose transactions begin with
//! `BEGIN IMMEDIATE`: SQLite allows one writer at a time anyway, and a deferred transaction
//! that reads before it writes fails with "database is locked" instead of waiting. Reads use
//! a separate pool and see the last committed state (WAL readers never block the writer).
//!
//! Submodules, one per table group: [`contacts`] (people, tags, consent per medium),
//! [`segments`] (running compiled segments and audience breakdowns), [`revisions`] (the
//! directory's revisions and the specs they put in force).

pub mod contacts;
pub mod deliveries;
pub mod inbound;
pub mod metrics;
mod opt_out;
pub mod reports;
pub mod revisions;
pub mod runs;
pub mod schedule;
pub mod segments;
pub mod status;
pub mod unsubscribe;
pub mod webhooks;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{SqlSafeStr, Sqlite, Transaction};

/// The store's file when neither `--db` nor `HERALD_DB` names one.
pub const DEFAULT_PATH: &str = "herald.db";

/// Rows sqlx may buffer between its SQLite thread and the caller: one batch's worth.
const ROW_BUFFER: usize = 1024;

/// The migrations, in order. Append only: a released migration never changes (sqlx checks
/// each applied one's checksum and refuses a database whose history differs).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "contacts",
        include_str!("../../migrations/0001_contacts.sql"),
    ),
    (
        2,
        "revisions runs outbox",
        include_str!("../../migrations/0002_revisions_runs_outbox.sql"),
    ),
    (
        3,
        "audience indexes",
        include_str!("../../migrations/0003_audience_indexes.sql"),
    ),
    (
        4,
        "engine",
        include_str!("../../migrations/0004_engine.sql"),
    ),
    (
        6,
        "webhooks inbound",
        include_str!("../../migrations/0006_webhooks_inbound.sql"),
    ),
    (
        7,
        "metrics and status page indexes",
        include_str!("../../migrations/0007_metrics_page.sql"),
    ),
    (
        8,
        "delivery reports",
        include_str!("../../migrations/0008_delivery_reports.sql"),
    ),
    (
        9,
        "early receipts",
        include_str!("../../migrations/0009_early_receipts.sql"),
    ),
];

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the store {path}: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// An open store. Cheap to clone (the pools are shared).
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
    write: SqlitePool,
    read: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only a power loss
            // can lose the last transactions, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // 8 MiB per connection: five connections must fit in the daemon's 100 MB budget;
            // reads of a large table are served by the OS page cache anyway.
            .pragma("cache_size", "-8192")
            // sqlx hands rows from its SQLite thread to the caller through a bounded channel
            // (50 by default): a 1,000-row result then stops the thread some 20 times to
            // wait for the caller, each a cross-thread wake-up. With room for a whole batch
            // a 1,000-row `UPDATE … RETURNING` measured 4.3 µs a row instead of 7.5.
            .row_buffer_size(ROW_BUFFER);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        migrator()
            .run(&write)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(open_err)?;
        Ok(Store {
            path: path.to_path_buf(),
            write,
            read,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A write transaction. It holds the single writer until committed or dropped.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.write.begin_with("BEGIN IMMEDIATE").await
    }

    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// Waits for every connection to finish and closes the file cleanly.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The current time as the store keeps it: unix milliseconds.
pub fn millis(t: jiff::Timestamp) -> i64 {
    t.as_millisecond()
}
