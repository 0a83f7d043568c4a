//! The real `herald serve` binary for HTTP tests: started on 127.0.0.1 with a free port,
//! one token per role, and stopped with SIGTERM when dropped.
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
