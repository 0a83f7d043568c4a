//! The real `herald serve` binary for HTTP tests: started on 127.0.0.1 with a free port,
//! one token per role, and stopped with SIGTERM when dropped. [`Scratch`] holds what it
//! runs on (the site, the store, the contacts file); [`Herald`]'s async helpers wait for it
//! and read its store the way the tests check it (read only).
//!
//! Use from a test file with:
//! ```ignore
//! #[path = "support/server.rs"]
//! mod server;
//! ```
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;
use sqlx::Row as _;

/// The token of each role in the tokens file every test server gets.
pub const ADMIN: &str = "admin-token-0123456789";
pub const OPERATOR: &str = "operator-token-0123456789";
pub const VIEWER: &str = "viewer-token-0123456789";

/// A running `herald serve`.
pub struct Herald {
    child: Option<Child>,
    /// e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub base: String,
    pub db: PathBuf,
    pub dir: PathBuf,
    /// Everything the server wrote to stderr so far is also copied here, line by line.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// How to start the server.
pub struct Options<'a> {
    pub dir: &'a Path,
    pub db: &'a Path,
    /// Extra arguments after `serve DIR --db DB --listen 127.0.0.1:0`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl<'a> Options<'a> {
    pub fn new(dir: &'a Path, db: &'a Path) -> Options<'a> {
        Options {
            dir,
            db,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `--contacts FILE`: the contacts herald loads as it starts.
    pub fn with_contacts(self, file: &Path) -> Options<'a> {
        self.with_args(&["--contacts", &file.display().to_string()])
    }

    /// More arguments to `serve`.
    pub fn with_args(mut self, args: &[&str]) -> Options<'a> {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// More environment variables (a channel's secrets, say).
    pub fn with_env(mut self, vars: &[(&str, &str)]) -> Options<'a> {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Starts the server ([`Herald::start_with`]).
    pub fn start(self) -> Herald {
        Herald::start_with(self)
    }
}

/// A test's scratch directory, removed when dropped: the campaign directory `site/`, the
/// store `herald.db` and the contacts file `contacts.csv`.
pub struct Scratch {
    root: tempfile::TempDir,
    /// `site/`, created by the first [`Scratch::write_site`].
    pub site: PathBuf,
    pub db: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let root = tempfile::tempdir().unwrap();
        Scratch {
            site: root.path().join("site"),
            db: root.path().join("herald.db"),
            root,
        }
    }

    /// A scratch directory whose site is campaigns.example ([`copy_example`]).
    pub fn example() -> Scratch {
        let scratch = Scratch::new();
        copy_example(&scratch.site);
        scratch
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// Writes `text` to `site/<file>`, creating the directories on the way.
    pub fn write_site(&self, file: &str, text: &str) {
        let path = self.site.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Writes `csv` as contacts.csv; returns its path (for [`Options::with_contacts`]).
    pub fn write_contacts(&self, csv: &str) -> PathBuf {
        let file = self.path().join("contacts.csv");
        std::fs::write(&file, csv).unwrap();
        file
    }

    /// Writes `csv` as contacts.csv and imports it into the store with the real binary
    /// (`herald contacts import`), before the server starts.
    pub fn import_contacts(&self, csv: &str) {
        let file = self.write_contacts(csv);
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["contacts", "import"])
            .arg(&file)
            .arg("--db")
            .arg(&self.db)
            .env_remove("HERALD_DB")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "herald contacts import failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// How to start `herald serve` on `site/` with the store `herald.db`.
    pub fn options(&self) -> Options<'_> {
        Options::new(&self.site, &self.db)
    }

    /// `herald serve` on `site/` with the store `herald.db` ([`Herald::start`]).
    pub fn start(&self) -> Herald {
        Herald::start(&self.site, &self.db)
    }
}

fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Herald {
    /// Starts `herald serve` on `dir` with store `db`; returns once it listens and a
    /// revision is in force (or panics after 60 s, with the server's log).
    pub fn start(dir: &Path, db: &Path) -> Herald {
        Herald::start_with(Options::new(dir, db))
    }

    pub fn start_with(options: Options<'_>) -> Herald {
        let tokens = options.db.with_extension("tokens");
        std::fs::write(
            &tokens,
            format!(
                "admin root {}\noperator ops {}\nviewer watcher {}\n",
                sha256_hex(ADMIN),
                sha256_hex(OPERATOR),
                sha256_hex(VIEWER)
            ),
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .arg("serve")
            .arg(options.dir)
            .arg("--db")
            .arg(options.db)
            .args(["--listen", "127.0.0.1:0", "--log-format", "text"])
            .args(&options.args)
            .env("HERALD_TOKENS_FILE", &tokens)
            .env_remove("HERALD_ADMIN_TOKEN")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start herald serve");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(at) = line.find(" on http://") {
                        let _ = tx.send(line[at + 4..].trim().to_string());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "herald serve did not announce its address:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let herald = Herald {
            child: Some(child),
            base,
            db: options.db.to_path_buf(),
            dir: options.dir.to_path_buf(),
            log,
        };
        herald.wait_ready(Duration::from_secs(60));
        herald
    }

    /// Waits until /readyz answers 200.
    pub fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(status) = get_status(&format!("{}/readyz", self.base))
                && status == 200
            {
                return;
            }
            if started.elapsed() > limit {
                panic!(
                    "herald serve was not ready within {limit:?}:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The server's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal` (e.g. "TERM") to the server.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status();
    }

    /// Whether the server has exited (its exit code then), without waiting.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten().map(|status| status.code())
    }

    /// Polls `check` every 50 ms until it holds; after `limit`, panics naming `what`, with
    /// the server's log.
    pub async fn wait_until<F, Fut>(&self, what: &str, limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !check().await {
            if started.elapsed() > limit {
                panic!("timed out waiting for {what}:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GETs `path` (with `token` as the bearer, if any) and answers the JSON body.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> serde_json::Value {
        let mut request = reqwest::Client::new().get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// Stops the server with SIGTERM and waits for it (at most 20 s); returns its exit code.
    pub fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A delivery's row in the store.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub status: String,
    pub reason: Option<String>,
    pub provider_message_id: Option<String>,
    pub attempts: i64,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
}

/// A contact's state on one medium (its contact_media row).
#[derive(Clone, Debug, Default)]
pub struct Medium {
    pub opted_in_at: Option<i64>,
    pub opted_out_at: Option<i64>,
    pub opted_out_source: Option<String>,
    pub last_inbound_at: Option<i64>,
}

/// The store as the server left it, read through a read-only connection of the test's own.
impl Herald {
    /// A read-only connection to the server's store.
    pub async fn db(&self) -> sqlx::SqliteConnection {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.db)
            .read_only(true);
        <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
            .await
            .unwrap()
    }

    /// The one number `sql` answers (a count, say).
    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut self.db().await)
            .await
            .unwrap()
    }

    /// `campaign`'s delivery to `contact`; `None` until its run has planned it.
    pub async fn delivery(&self, campaign: &str, contact: &str) -> Option<Delivery> {
        let row = sqlx::query(
            "SELECT d.status, d.reason, d.provider_message_id, d.attempts, d.delivered_at, \
             d.read_at FROM deliveries d JOIN runs r ON r.id = d.run_id \
             WHERE r.campaign = ? AND d.contact_id = ?",
        )
        .bind(campaign)
        .bind(contact)
        .fetch_optional(&mut self.db().await)
        .await
        .unwrap()?;
        Some(Delivery {
            status: row.get(0),
            reason: row.get(1),
            provider_message_id: row.get(2),
            attempts: row.get(3),
            delivered_at: row.get(4),
            read_at: row.get(5),
        })
    }

    /// [`Herald::delivery`], waiting for the row: a run snapshots its deliveries shortly
    /// after it starts (panics after 20 s).
    pub async fn planned_delivery(&self, campaign: &str, contact: &str) -> Delivery {
        let started = Instant::now();
        loop {
            if let Some(delivery) = self.delivery(campaign, contact).await {
                return delivery;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no delivery for {contact} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `contact`'s state on `medium`; `None` when it has no such row.
    pub async fn medium(&self, contact: &str, medium: &str) -> Option<Medium> {
        let row = sqlx::query(
            "SELECT m.opted_in_at, m.opted_out_at, m.opted_out_source, m.last_inbound_at \
             FROM contacts c JOIN contact_media m ON m.contact_pk = c.pk AND m.medium = ? \
             WHERE c.id = ?",
        )
        .bind(medium)
        .bind(contact)
        .fetch_optional(&mut self.db().await)
        .await
        .unwrap()?;
        Some(Medium {
            opted_in_at: row.get(0),
            opted_out_at: row.get(1),
            opted_out_source: row.get(2),
            last_inbound_at: row.get(3),
        })
    }

    /// `contact`'s tags, sorted.
    pub async fn tags(&self, contact: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT t.tag FROM contacts c JOIN contact_tags t ON t.contact_pk = c.pk \
             WHERE c.id = ? ORDER BY t.tag",
        )
        .bind(contact)
        .fetch_all(&mut self.db().await)
        .await
        .unwrap()
    }

    /// How many inbound requests the store has recorded.
    pub async fn inbound_events(&self) -> i64 {
        self.scalar("SELECT count(*) FROM inbound_events").await
    }
}

/// The status code of a plain GET (std only, so the harness needs no runtime).
fn get_status(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

/// Copies campaigns.example (the bundled example) into `to`, for tests that want a
/// realistic site. Its outbox paths are relative, so they land inside `to`.
pub fn copy_example(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("campaigns.example");
    for entry in walkdir::WalkDir::new(&from) {
        let entry = entry.unwrap();
        let relative = entry.path().strip_prefix(&from).unwrap();
        if relative.starts_with("outbox") {
            continue;
        }
        let target = to.join(relative);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
