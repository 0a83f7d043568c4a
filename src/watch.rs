//! File events → "look again", debounced: the watcher never says what changed, only that
//! the campaign directory should be read again once it has been quiet for a moment.
//!
//! Any event under the directory counts (an editor's atomic save is a create, a ConfigMap
//! update only swaps a hidden `..data` link, a git checkout is thousands of events), and so
//! do notify's rescan signal, watcher errors and a periodic timer, in case an event was
//! lost. A burst becomes one "look again" after `quiet` without events. When the directory
//! is itself a symbolic link, its parent is watched too, so that `ln -sfn new DIR` is seen,
//! and the link is re-resolved on every event: the new target is then watched instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;

/// How the watcher paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Quiet needed after the last event before "look again" (0.5 s by default).
    pub quiet: Duration,
    /// "Look again" at least this often, events or not (30 s by default).
    pub rescan_every: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            quiet: Duration::from_millis(500),
            rescan_every: Duration::from_secs(30),
        }
    }
}

/// Watches `dir` until `stop` resolves, sending one `()` on `look_again` per quiet burst of
/// events (and per `rescan_every`). A full `look_again` channel already holds a pending
/// "look again", so nothing is lost by not sending another.
///
/// Fails if the directory cannot be watched at all; later watcher errors are logged and
/// answered with a "look again".
pub async fn watch(
    dir: &Path,
    pacing: Pacing,
    look_again: mpsc::Sender<()>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (raw_tx, mut raw) = mpsc::unbounded_channel::<()>();
    let dir =
        std::path::absolute(dir).with_context(|| format!("while resolving {}", dir.display()))?;
    let dir = dir.as_path();
    let mut watched = Watched::default();
    let roots = watched.roots.clone();
    // The debouncer's own timeout only merges events per path; the quiet window below is
    // what turns a whole burst into one.
    let tick = (pacing.quiet / 4).max(Duration::from_millis(10));
    let mut debouncer = new_debouncer(tick, Some(tick), move |result: DebounceEventResult| {
        let relevant = match result {
            Ok(events) => events.iter().any(|e| {
                if e.need_rescan() {
                    tracing::debug!("the file watcher asked for a rescan");
                    return true;
                }
                // Everything under the directory counts; in the parent (watched only for a
                // link swap) only the link itself does, not its busy neighbours.
                let roots = roots.lock().expect("the roots lock is never poisoned");
                e.paths
                    .iter()
                    .any(|p| roots.iter().any(|root| p.starts_with(root)))
            }),
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "file watcher error; reading the directory again");
                }
                true
            }
        };
        if relevant {
            let _ = raw_tx.send(());
        }
    })
    .context("while starting the file watcher")?;

    watched
        .update(&mut debouncer, dir)
        .with_context(|| format!("while watching {}", dir.display()))?;

    // Whatever changed between the daemon's first reconcile and these watches is seen now.
    let _ = look_again.try_send(());
    tokio::pin!(stop);
    let mut periodic = tokio::time::interval(pacing.rescan_every);
    periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    periodic.tick().await; // the first tick is immediate; the daemon reads on start anyway
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = periodic.tick() => {
                tracing::trace!("periodic rescan");
            }
            got = raw.recv() => {
                if got.is_none() {
                    anyhow::bail!("the file watcher stopped");
                }
                // Wait for the burst to end: quiet for `pacing.quiet`. A directory that is
                // never quiet (something writes into it all the time, such as an outbox
                // file) is read anyway after `10 × quiet`; the reconciler reads twice and
                // never applies what changed between the two reads.
                let deadline = tokio::time::Instant::now() + pacing.quiet * 10;
                loop {
                    tokio::select! {
                        () = &mut stop => return Ok(()),
                        () = tokio::time::sleep(pacing.quiet) => break,
                        () = tokio::time::sleep_until(deadline) => break,
                        more = raw.recv() => if more.is_none() {
                            anyhow::bail!("the file watcher stopped");
                        },
                    }
                }
            }
        }
        if let Err(e) = watched.update(&mut debouncer, dir) {
            tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "cannot re-watch the campaign directory");
        }
        let _ = look_again.try_send(());
    }
    debouncer.stop_nonblocking();
    Ok(())
}

/// What is being watched: the directory's resolved path, and its parent when the directory
/// is a symbolic link.
#[derive(Default)]
struct Watched {
    target: Option<PathBuf>,
    parent: Option<PathBuf>,
    /// Events under these paths count: the directory as given, and its resolved target.
    roots: std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>,
}

impl Watched {
    /// Re-resolves `dir` and moves the watches if its target changed.
    fn update<W: notify::Watcher, C: notify_debouncer_full::FileIdCache>(
        &mut self,
        debouncer: &mut notify_debouncer_full::Debouncer<W, C>,
        dir: &Path,
    ) -> anyhow::Result<()> {
        let is_link = std::fs::symlink_metadata(dir)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link && self.parent.is_none() {
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            debouncer
                .watch(&parent, RecursiveMode::NonRecursive)
                .with_context(|| format!("while watching {}", parent.display()))?;
            tracing::debug!(parent = %parent.display(), "the campaign directory is a link: watching its parent too");
            self.parent = Some(parent);
        }
        // A dangling link mid-swap: keep the old watch; the next event or rescan retries.
        let resolved = std::fs::canonicalize(dir)
            .with_context(|| format!("while resolving {}", dir.display()))?;
        if self.target.as_ref() != Some(&resolved) {
            if let Some(old) = self.target.take() {
                // The old target may be gone already; nothing to undo then.
                let _ = debouncer.unwatch(&old);
            }
            debouncer
                .watch(&resolved, RecursiveMode::Recursive)
                .with_context(|| format!("while watching {}", resolved.display()))?;
            tracing::debug!(target = %resolved.display(), "watching the campaign directory");
            *self.roots.lock().expect("the roots lock is never poisoned") =
                vec![dir.to_path_buf(), resolved.clone()];
            self.target = Some(resolved);
        }
        Ok(())
    }
}
