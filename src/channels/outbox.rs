//! The `outbox` channel: appends each message as one JSON line to a file, the offline
//! channel for demos and tests.
//!
//! A line is the [`OutboundMessage`] as JSON plus `sent_at` (RFC 3339, UTC):
//!
//! ```json
//! {"delivery_id":7,"idempotency_key":"…","run_id":3,"campaign":"black-friday","channel":"sms-outbox","contact_id":"c-42","to":"+51987654321","content":{"medium":"sms","text":"Hola …"},"test":false,"sent_at":"2026-11-27T14:00:00.123Z"}
//! ```
//!
//! One writer owns the file (a mutex around the pending bytes), so lines never interleave
//! or tear under concurrent sends. Writes are batched: a send appends its line to the
//! pending batch; the batch is written and `fsync`ed (`sync_data`) when it reaches
//! [`SYNC_EVERY_LINES`] lines, when a send finds its oldest line older than
//! [`SYNC_EVERY`], and whenever [`OutboxChannel::flush`] is called. A crash therefore loses
//! at most the lines accepted since the last sync, and since the engine records `sent`
//! only after a successful `flush`, those deliveries are still `sending` in the store and
//! crash recovery marks them `unknown` (the outbox does not honour idempotency keys).
//!
//! Every channel that writes to the same file (two Channel files naming one path, or a
//! run pinned to an older revision of the channel beside a run of the new one) shares one
//! writer, found by the file's canonical path: two writers with their own lengths would
//! cut each other's lines when one cuts back after a failed write.
//!
//! A failed write is cut back to the last whole line (`set_len`), and a file left ending
//! in a torn line by a crash gets a line break on open, so every line a reader sees after
//! that is whole JSON (the torn fragment is a line of its own, which a reader skips).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{ChannelError, SendOutcome};
use crate::message::OutboundMessage;
use crate::spec::channel::Medium;

/// The outbox writes what it is given and keeps no record of keys it has written, so a
/// re-send after a crash would write a second line: crash recovery marks such deliveries
/// `unknown` instead. Every line carries its `idempotency_key`, so a reader can dedupe.
pub const HONOURS_IDEMPOTENCY_KEY: bool = false;

/// One writer appends sequentially; more sends in flight would only queue on its lock.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1;

/// A pending batch is synced once it holds this many lines...
pub const SYNC_EVERY_LINES: usize = 256;
/// ...or once a send finds its oldest line this old. A quiet channel's last lines wait for
/// [`OutboxChannel::flush`].
pub const SYNC_EVERY: Duration = Duration::from_millis(200);

/// Appends messages to one file. Cheap to share by reference across concurrent sends.
pub struct OutboxChannel {
    name: String,
    medium: Medium,
    path: PathBuf,
    max_in_flight: usize,
    writer: Arc<Mutex<Writer>>,
    sequence: AtomicU64,
}

impl std::fmt::Debug for OutboxChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxChannel")
            .field("name", &self.name)
            .field("medium", &self.medium)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl OutboxChannel {
    /// Opens (creating it and its parent directories) the file at `path` for appending.
    /// A relative `path` is taken as is (relative to the working directory); the engine joins
    /// a Channel file's relative path to the campaign directory before it gets here.
    pub fn open(
        name: &str,
        medium: Medium,
        path: &Path,
        max_in_flight: Option<usize>,
    ) -> Result<OutboxChannel, ChannelError> {
        let io_error = |source| ChannelError::Outbox {
            channel: name.to_string(),
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        let writer = shared_writer(path).map_err(io_error)?;
        Ok(OutboxChannel {
            name: name.to_string(),
            medium,
            path: path.to_path_buf(),
            max_in_flight: max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            writer,
            sequence: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn medium(&self) -> Medium {
        self.medium
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Appends the message's line to the pending batch (syncing the batch if it is full or
    /// old). `Sent` carries the idempotency key as the provider id (`outbox-<n>` if the key
    /// is empty). `Transient` only when earlier writes are failing and the batch cannot be
    /// written: the line is then not kept.
    pub async fn send(&self, message: &OutboundMessage) -> SendOutcome {
        let line = OutboxLine {
            message,
            sent_at: sent_at_now(),
        };
        let mut bytes = match serde_json::to_vec(&line) {
            Ok(bytes) => bytes,
            Err(e) => return SendOutcome::permanent(format!("cannot encode the message: {e}")),
        };
        bytes.push(b'\n');
        let writer = Arc::clone(&self.writer);
        let appended = tokio::task::spawn_blocking(move || lock(&writer).append(bytes)).await;
        match appended {
            Ok(Ok(())) => {
                let id = if message.idempotency_key.is_empty() {
                    format!(
                        "outbox-{}",
                        self.sequence.fetch_add(1, Ordering::Relaxed) + 1
                    )
                } else {
                    message.idempotency_key.clone()
                };
                SendOutcome::Sent {
                    provider_message_id: Some(id),
                }
            }
            Ok(Err(e)) => SendOutcome::transient(format!(
                "cannot write the outbox file {}: {e}",
                self.path.display()
            )),
            Err(e) => SendOutcome::transient(format!("the outbox writer stopped: {e}")),
        }
    }

    /// Writes the pending batch and syncs it to disk. `Ok` means every line accepted by
    /// `send` so far is durable. On `Err` the unwritten lines stay pending for the next
    /// call.
    pub async fn flush(&self) -> Result<(), ChannelError> {
        let writer = Arc::clone(&self.writer);
        let synced = tokio::task::spawn_blocking(move || lock(&writer).sync())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        synced.map_err(|source| ChannelError::Outbox {
            channel: self.name.clone(),
            path: self.path.clone(),
            source,
        })
    }
}

/// The one writer of the file at `path` in this process: the live one if a channel already
/// writes there, else a new one over the file opened for appending.
fn shared_writer(path: &Path) -> std::io::Result<Arc<Mutex<Writer>>> {
    static WRITERS: OnceLock<Mutex<HashMap<PathBuf, Weak<Mutex<Writer>>>>> = OnceLock::new();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    let key = std::fs::canonicalize(path)?;
    let mut writers = WRITERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    writers.retain(|_, w| w.strong_count() > 0);
    if let Some(live) = writers.get(&key).and_then(Weak::upgrade) {
        return Ok(live);
    }
    let mut whole_len = file.metadata()?.len();
    if ends_in_torn_line(&mut file, whole_len)? {
        file.write_all(b"\n")?;
        file.sync_data()?;
        whole_len += 1;
    }
    let writer = Arc::new(Mutex::new(Writer {
        file,
        whole_len,
        pending: Vec::new(),
        pending_lines: 0,
        oldest_pending: None,
        unsynced: false,
    }));
    writers.insert(key, Arc::downgrade(&writer));
    Ok(writer)
}

#[derive(Serialize)]
struct OutboxLine<'a> {
    #[serde(flatten)]
    message: &'a OutboundMessage,
    sent_at: String,
}

/// Now, as RFC 3339 UTC to the millisecond (`2026-11-27T14:00:00.123Z`).
fn sent_at_now() -> String {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Millisecond)
        .unwrap_or(now)
        .to_string()
}

struct Writer {
    file: File,
    /// Length of the file up to its last whole line written by us.
    whole_len: u64,
    pending: Vec<u8>,
    pending_lines: usize,
    oldest_pending: Option<Instant>,
    /// Bytes written but not yet synced.
    unsynced: bool,
}

fn lock(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    // A panic while holding the lock leaves `pending` consistent (it is only extended or
    // cleared whole), so the data is still safe to use.
    writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Writer {
    fn append(&mut self, line: Vec<u8>) -> std::io::Result<()> {
        // A batch that could not be written last time must go first: refuse new lines
        // until it does, so memory stays bounded while the disk is failing.
        if self.pending_lines >= SYNC_EVERY_LINES {
            self.sync()?;
        }
        self.pending.extend_from_slice(&line);
        self.pending_lines += 1;
        let oldest = *self.oldest_pending.get_or_insert_with(Instant::now);
        if self.pending_lines >= SYNC_EVERY_LINES || oldest.elapsed() >= SYNC_EVERY {
            // The line is accepted either way; a failure here surfaces from `flush`.
            let _ = self.sync();
        }
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            if let Err(e) = self.file.write_all(&self.pending) {
                // Part of the batch may be on disk: cut back to the last whole line.
                let _ = self.file.set_len(self.whole_len);
                return Err(e);
            }
            self.whole_len += self.pending.len() as u64;
            self.pending.clear();
            self.pending_lines = 0;
            self.oldest_pending = None;
            self.unsynced = true;
        }
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Best effort for a channel dropped without a final flush (the engine flushes on
        // shutdown; this covers a reload that replaces the channel).
        let _ = self.sync();
    }
}

fn ends_in_torn_line(file: &mut File, len: u64) -> std::io::Result<bool> {
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Content, SmsMessage};

    fn message(n: i64) -> OutboundMessage {
        OutboundMessage {
            delivery_id: n,
            idempotency_key: format!("key-{n}"),
            run_id: 1,
            campaign: "promo".into(),
            channel: "outbox".into(),
            contact_id: format!("c-{n}"),
            to: "+15005550006".into(),
            content: Content::Sms(SmsMessage {
                text: format!("hello {n}"),
                media_url: None,
            }),
            test: false,
        }
    }

    #[tokio::test]
    async fn a_file_ending_in_a_torn_line_gets_a_line_break_before_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"whole\":1}\n{\"torn").unwrap();
        let channel = OutboxChannel::open("o", Medium::Sms, &path, None).unwrap();
        channel.send(&message(1)).await;
        channel.flush().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1], "{\"torn");
        let last: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last["delivery_id"], 1);
    }

    #[tokio::test]
    async fn lines_wait_in_the_batch_until_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let channel = OutboxChannel::open("o", Medium::Sms, &path, None).unwrap();
        channel.send(&message(1)).await;
        assert_eq!(std::fs::read(&path).unwrap().len(), 0);
        channel.flush().await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[tokio::test]
    async fn a_full_batch_is_written_without_waiting_for_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let channel = OutboxChannel::open("o", Medium::Sms, &path, None).unwrap();
        for n in 0..SYNC_EVERY_LINES as i64 {
            channel.send(&message(n)).await;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), SYNC_EVERY_LINES);
    }

    #[tokio::test]
    async fn two_channels_on_one_file_share_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let first = OutboxChannel::open("a", Medium::Sms, &path, None).unwrap();
        // The same file by another spelling of its path.
        let again = dir.path().join(".").join("out.jsonl");
        let second = OutboxChannel::open("b", Medium::Sms, &again, None).unwrap();
        assert!(Arc::ptr_eq(&first.writer, &second.writer));
        first.send(&message(1)).await;
        second.send(&message(2)).await;
        second.flush().await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        drop((first, second));
        // Once no channel writes there, a new one opens the file afresh.
        let third = OutboxChannel::open("c", Medium::Sms, &path, None).unwrap();
        assert_eq!(
            lock(&third.writer).whole_len,
            std::fs::metadata(&path).unwrap().len()
        );
    }

    #[tokio::test]
    async fn an_empty_idempotency_key_gets_a_generated_provider_id() {
        let dir = tempfile::tempdir().unwrap();
        let channel =
            OutboxChannel::open("o", Medium::Sms, &dir.path().join("o.jsonl"), None).unwrap();
        let mut m = message(1);
        m.idempotency_key.clear();
        assert_eq!(
            channel.send(&m).await,
            SendOutcome::Sent {
                provider_message_id: Some("outbox-1".into())
            }
        );
        assert_eq!(
            channel.send(&message(2)).await,
            SendOutcome::Sent {
                provider_message_id: Some("key-2".into())
            }
        );
    }
}
