//! `herald serve` end to end: the daemon driven in-process (temp directory, temp SQLite,
//! port 0, a oneshot for shutdown), and the real binary stopped with SIGTERM.
//!
//! In-process tests substitute a recorder for the run engine, so that what the scheduler
//! fires and skips is observed exactly; the binary test runs the real engine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::daemon::{self, BoxFuture, Runs, ServeConfig};
use herald::engine::Clock;
use herald::watch::Pacing;
use jiff::Timestamp;
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHANNEL_AND_TEMPLATE: &str = r#"apiVersion: herald/v1
kind: Channel
metadata: {name: sms}
spec:
  type: outbox
  medium: sms
  outbox: {path: outbox/sms.jsonl}
---
apiVersion: herald/v1
kind: Template
metadata: {name: hello}
spec:
  sms: {text: "Hello {{ contact.name | default('there') }}"}
"#;

fn campaign(name: &str, schedule: &str) -> String {
    format!(
        r#"apiVersion: herald/v1
kind: Campaign
metadata: {{name: {name}}}
spec:
  audience: {{segment: all-contacts}}
  channels: {{strategy: specific, use: [sms]}}
  template: hello
  schedule: {schedule}
"#
    )
}

fn segment(name: &str, country: &str) -> String {
    format!(
        "apiVersion: herald/v1\nkind: Segment\nmetadata: {{name: {name}}}\nspec:\n  match: {{all: [{{field: country, op: eq, value: {country}}}]}}\n"
    )
}

/// What the scheduler asked of the engine.
#[derive(Default)]
struct Recorder {
    fired: Mutex<Vec<(String, Timestamp, Instant)>>,
    skipped: Mutex<Vec<(String, Timestamp, String)>>,
    revisions_applied: Mutex<u32>,
    /// How many of the next `revision_applied` calls fail.
    fail_revision_applied: Mutex<u32>,
}

impl Recorder {
    fn fired(&self) -> Vec<(String, Timestamp)> {
        let fired = self.fired.lock().unwrap();
        fired.iter().map(|(c, t, _)| (c.clone(), *t)).collect()
    }
}

impl Runs for Recorder {
    fn start_scheduled(
        &self,
        campaign: &str,
        occurrence: Timestamp,
    ) -> BoxFuture<'_, anyhow::Result<i64>> {
        let mut fired = self.fired.lock().unwrap();
        fired.push((campaign.to_string(), occurrence, Instant::now()));
        let id = fired.len() as i64;
        Box::pin(async move { Ok(id) })
    }

    fn skip(
        &self,
        campaign: &str,
        occurrence: Timestamp,
        reason: &str,
    ) -> BoxFuture<'_, anyhow::Result<i64>> {
        let mut skipped = self.skipped.lock().unwrap();
        skipped.push((campaign.to_string(), occurrence, reason.to_string()));
        let id = 1000 + skipped.len() as i64;
        Box::pin(async move { Ok(id) })
    }

    fn revision_applied(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        let mut failing = self.fail_revision_applied.lock().unwrap();
        if *failing > 0 {
            *failing -= 1;
            return Box::pin(async { Err(anyhow::anyhow!("the store is busy")) });
        }
        *self.revisions_applied.lock().unwrap() += 1;
        Box::pin(async { Ok(()) })
    }

    fn recover(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn run(&self, stop: BoxFuture<'static, ()>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            stop.await;
            Ok(())
        })
    }
}

/// A clock that says what the test sets.
struct ManualClock(Mutex<Timestamp>);

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

/// A scratch folder with `site/` (the campaign directory) and `store.db`.
struct Scratch {
    root: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let scratch = Scratch {
            root: tempfile::tempdir().unwrap(),
        };
        scratch.write("site/base.yaml", CHANNEL_AND_TEMPLATE);
        scratch
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn db(&self) -> PathBuf {
        self.path("store.db")
    }
}

/// A daemon running in-process until [`TestDaemon::stop`].
struct TestDaemon {
    address: std::net::SocketAddr,
    runs: Arc<Recorder>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

struct Options {
    dir: PathBuf,
    allow_empty: bool,
    clock: Option<Arc<dyn Clock>>,
}

impl TestDaemon {
    async fn start(scratch: &Scratch) -> TestDaemon {
        TestDaemon::start_with(
            scratch,
            Options {
                dir: scratch.path("site"),
                allow_empty: false,
                clock: None,
            },
        )
        .await
    }

    async fn start_with(scratch: &Scratch, options: Options) -> TestDaemon {
        TestDaemon::start_recording(scratch, options, Arc::new(Recorder::default())).await
    }

    async fn start_recording(
        scratch: &Scratch,
        options: Options,
        runs: Arc<Recorder>,
    ) -> TestDaemon {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut config = ServeConfig::new(options.dir, scratch.db(), listener);
        config.allow_empty = options.allow_empty;
        config.pacing = Pacing {
            quiet: Duration::from_millis(150),
            rescan_every: Duration::from_secs(60),
        };
        if let Some(clock) = options.clock {
            config.clock = clock;
        }
        config.runs = Some(runs.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(daemon::serve(config, async move {
            let _ = rx.await;
        }));
        TestDaemon {
            address,
            runs,
            shutdown: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the daemon stops within 5 s")
            .expect("the daemon task does not panic");
        result.expect("the daemon stops without an error");
    }

    /// (status code, body) of a GET.
    async fn get(&self, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let code = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }
}

/// The revisions table: (id, status, errors).
async fn revisions(db: &Path) -> Vec<(i64, String, String)> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    // Before the daemon has created the store, there is nothing to read yet.
    let Ok(mut connection) =
        <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await
    else {
        return Vec::new();
    };
    let rows = sqlx::query("SELECT id, status, errors FROM revisions ORDER BY id")
        .fetch_all(&mut connection)
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| (r.get("id"), r.get("status"), r.get("errors")))
        .collect()
}

async fn applied(db: &Path) -> Vec<i64> {
    revisions(db)
        .await
        .into_iter()
        .filter(|r| r.1 == "applied")
        .map(|r| r.0)
        .collect()
}

/// The names of the objects of a kind in force.
async fn in_force(db: &Path, kind: &str) -> Vec<String> {
    let Ok(store) = herald::store::Store::open_read_only(db).await else {
        return Vec::new();
    };
    // Not migrated yet right after the daemon created the file: nothing in force.
    let names = store
        .revision_in_force()
        .await
        .ok()
        .flatten()
        .map(|r| {
            r.specs
                .into_iter()
                .filter(|s| s.kind.as_str() == kind)
                .map(|s| s.name)
                .collect()
        })
        .unwrap_or_default();
    store.close().await;
    names
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_directory_is_applied_on_start_and_readyz_says_so() {
    let scratch = Scratch::new();
    scratch.write(
        "site/daily.yaml",
        &campaign("daily", "{cron: \"0 9 * * *\"}"),
    );
    let daemon = TestDaemon::start(&scratch).await;
    eventually(WAIT, "revision 1 is applied", || async {
        applied(&scratch.db()).await == [1]
    })
    .await;
    eventually(WAIT, "readyz answers 200", || async {
        daemon.get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(daemon.get("/healthz").await, (200, "ok\n".to_string()));
    assert!(daemon.get("/readyz").await.1.contains("revision 1"));
    assert!(
        *daemon.runs.revisions_applied.lock().unwrap() >= 1,
        "the engine is told about the applied revision"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_edit_is_rejected_and_recorded_while_the_old_revision_stays_then_a_fix_applies() {
    let scratch = Scratch::new();
    scratch.write(
        "site/daily.yaml",
        &campaign("daily", "{cron: \"0 9 * * *\"}"),
    );
    let daemon = TestDaemon::start(&scratch).await;
    eventually(WAIT, "revision 1 is applied", || async {
        applied(&scratch.db()).await == [1]
    })
    .await;

    scratch.write(
        "site/daily.yaml",
        &campaign("daily", "{cron: \"0 9 * * *\"}").replace("template: hello", "template: helo"),
    );
    eventually(WAIT, "the bad edit is recorded as rejected", || async {
        revisions(&scratch.db())
            .await
            .iter()
            .any(|r| r.1 == "rejected")
    })
    .await;
    let rows = revisions(&scratch.db()).await;
    let rejected = rows.iter().find(|r| r.1 == "rejected").unwrap();
    assert!(
        rejected.2.contains("site/daily.yaml") && rejected.2.contains("helo"),
        "the errors name the file and the bad reference: {}",
        rejected.2
    );
    assert_eq!(
        applied(&scratch.db()).await,
        [1],
        "revision 1 stays in force"
    );
    assert_eq!(daemon.get("/readyz").await.0, 200);

    scratch.write(
        "site/daily.yaml",
        &campaign("daily", "{cron: \"0 10 * * *\"}"),
    );
    eventually(WAIT, "the fix is applied", || async {
        applied(&scratch.db()).await.len() == 2
    })
    .await;
    let rows = revisions(&scratch.db()).await;
    assert_eq!(
        rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["applied", "rejected", "applied"],
        "one rejection recorded, however often the bad directory was read"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_files_changed_at_once_become_exactly_one_new_revision() {
    let scratch = Scratch::new();
    for i in 0..200 {
        scratch.write(
            &format!("site/segments/s{i:03}.yaml"),
            &segment(&format!("s{i:03}"), "PE"),
        );
    }
    let daemon = TestDaemon::start(&scratch).await;
    eventually(WAIT, "revision 1 is applied", || async {
        applied(&scratch.db()).await == [1]
    })
    .await;

    // As a checkout does: every file rewritten, one after the other, as fast as it goes.
    for i in 0..200 {
        scratch.write(
            &format!("site/segments/s{i:03}.yaml"),
            &segment(&format!("s{i:03}"), "BR"),
        );
    }
    eventually(WAIT, "the checkout is applied", || async {
        applied(&scratch.db()).await.len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let rows = revisions(&scratch.db()).await;
    assert_eq!(
        rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["applied", "applied"],
        "one reconcile for the whole checkout, no half-applied mix"
    );
    let store = herald::store::Store::open_read_only(&scratch.db())
        .await
        .unwrap();
    let specs = store.revision_in_force().await.unwrap().unwrap().specs;
    store.close().await;
    let brazil = specs
        .iter()
        .filter(|s| s.kind.as_str() == "Segment" && s.body.to_string().contains("BR"))
        .count();
    assert_eq!(brazil, 200, "every file of the checkout is in the revision");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_a_few_bytes_at_a_time_ends_applied_whole() {
    let scratch = Scratch::new();
    let daemon = TestDaemon::start(&scratch).await;
    eventually(WAIT, "revision 1 is applied", || async {
        applied(&scratch.db()).await == [1]
    })
    .await;

    let text = campaign(
        "slow-writer",
        "{cron: \"0 9 * * MON\", timezone: Europe/Madrid}",
    );
    let path = scratch.path("site/slow.yaml");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in text.as_bytes().chunks(16) {
            file.write_all(chunk).unwrap();
            file.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eventually(WAIT, "the whole file is applied", || async {
        in_force(&scratch.db(), "Campaign").await == ["slow-writer"]
    })
    .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_directory_is_refused_without_allow_empty_and_the_campaigns_stay() {
    let scratch = Scratch::new();
    scratch.write(
        "site/daily.yaml",
        &campaign("daily", "{cron: \"0 9 * * *\"}"),
    );
    let daemon = TestDaemon::start(&scratch).await;
    eventually(WAIT, "revision 1 is applied", || async {
        applied(&scratch.db()).await == [1]
    })
    .await;

    std::fs::remove_file(scratch.path("site/daily.yaml")).unwrap();
    std::fs::remove_file(scratch.path("site/base.yaml")).unwrap();
    eventually(
        WAIT,
        "the empty directory is recorded as rejected",
        || async {
            revisions(&scratch.db())
                .await
                .iter()
                .any(|r| r.1 == "rejected" && r.2.contains("empty-revision"))
        },
    )
    .await;
    assert_eq!(applied(&scratch.db()).await, [1]);
    assert_eq!(in_force(&scratch.db(), "Campaign").await, ["daily"]);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allow_empty_an_emptied_directory_retires_everything() {
    let scratch = Scratch::new();
    scratch.write(
        "site/daily.yaml",
        &campaign("daily", "{cron: \"0 9 * * *\"}"),
    );
    let options = Options {
        dir: scratch.path("site"),
        allow_empty: true,
        clock: None,
    };
    let daemon = TestDaemon::start_with(&scratch, options).await;
    eventually(WAIT, "revision 1 is applied", || async {
        applied(&scratch.db()).await == [1]
    })
    .await;
    std::fs::remove_file(scratch.path("site/daily.yaml")).unwrap();
    std::fs::remove_file(scratch.path("site/base.yaml")).unwrap();
    eventually(WAIT, "the empty revision is applied", || async {
        applied(&scratch.db()).await == [1, 2]
    })
    .await;
    assert!(in_force(&scratch.db(), "Campaign").await.is_empty());
    daemon.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swap_of_the_whole_directory_applies_the_new_target() {
    let scratch = Scratch::new();
    scratch.write("v1/base.yaml", CHANNEL_AND_TEMPLATE);
    scratch.write("v1/c.yaml", &campaign("first", "{cron: \"0 9 * * *\"}"));
    scratch.write("v2/base.yaml", CHANNEL_AND_TEMPLATE);
    scratch.write("v2/c.yaml", &campaign("second", "{cron: \"0 9 * * *\"}"));
    std::os::unix::fs::symlink(scratch.path("v1"), scratch.path("live")).unwrap();
    let options = Options {
        dir: scratch.path("live"),
        allow_empty: false,
        clock: None,
    };
    let daemon = TestDaemon::start_with(&scratch, options).await;
    eventually(WAIT, "v1 is applied", || async {
        in_force(&scratch.db(), "Campaign").await == ["first"]
    })
    .await;

    // `ln -sfn v2 live`, atomically: a new link renamed over the old one.
    std::os::unix::fs::symlink(scratch.path("v2"), scratch.path("live.tmp")).unwrap();
    std::fs::rename(scratch.path("live.tmp"), scratch.path("live")).unwrap();
    eventually(WAIT, "v2 is applied", || async {
        in_force(&scratch.db(), "Campaign").await == ["second"]
    })
    .await;

    // And the new target is watched: an edit inside it applies too.
    scratch.write("v2/d.yaml", &campaign("third", "{cron: \"0 9 * * *\"}"));
    eventually(WAIT, "an edit inside the new target is applied", || async {
        in_force(&scratch.db(), "Campaign").await == ["second", "third"]
    })
    .await;
    daemon.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_swap_of_the_hidden_data_link_applies_the_new_files() {
    // Kubernetes mounts a ConfigMap as DIR/file.yaml -> ..data/file.yaml, ..data -> ..<stamp>,
    // and updates it by renaming a new ..data link over the old one.
    let scratch = Scratch::new();
    scratch.write(
        "cm/..v1/all.yaml",
        &format!(
            "{CHANNEL_AND_TEMPLATE}---\n{}",
            campaign("first", "{cron: \"0 9 * * *\"}")
        ),
    );
    scratch.write(
        "cm/..v2/all.yaml",
        &format!(
            "{CHANNEL_AND_TEMPLATE}---\n{}",
            campaign("second", "{cron: \"0 9 * * *\"}")
        ),
    );
    std::os::unix::fs::symlink("..v1", scratch.path("cm/..data")).unwrap();
    std::os::unix::fs::symlink("..data/all.yaml", scratch.path("cm/all.yaml")).unwrap();
    let options = Options {
        dir: scratch.path("cm"),
        allow_empty: false,
        clock: None,
    };
    let daemon = TestDaemon::start_with(&scratch, options).await;
    eventually(WAIT, "v1 is applied", || async {
        in_force(&scratch.db(), "Campaign").await == ["first"]
    })
    .await;
    std::os::unix::fs::symlink("..v2", scratch.path("cm/..data_tmp")).unwrap();
    std::fs::rename(scratch.path("cm/..data_tmp"), scratch.path("cm/..data")).unwrap();
    eventually(WAIT, "v2 is applied", || async {
        in_force(&scratch.db(), "Campaign").await == ["second"]
    })
    .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_now_campaign_fires_once_and_never_again_after_a_restart() {
    let scratch = Scratch::new();
    scratch.write("site/hello.yaml", &campaign("hello-now", "{now: true}"));
    let daemon = TestDaemon::start(&scratch).await;
    eventually(WAIT, "the now campaign fires", || async {
        !daemon.runs.fired().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fired = daemon.runs.fired();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].0, "hello-now");
    daemon.stop().await;

    let again = TestDaemon::start(&scratch).await;
    eventually(WAIT, "readyz answers 200", || async {
        again.get("/readyz").await.0 == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        again.runs.fired().is_empty(),
        "fired again after a restart: {:?}",
        again.runs.fired()
    );
    again.stop().await;
}

/// The run of a `now` campaign exists but its schedule state was never written (a crash or a
/// failed write between the two), and an unrelated revision is applied: the occurrence is
/// still the one the campaign's schedule came into force at, so no second run is started
/// (the engine returns the existing run for the same occurrence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_now_campaign_keeps_its_occurrence_when_an_unrelated_revision_is_applied() {
    let scratch = Scratch::new();
    scratch.write("site/hello.yaml", &campaign("hello-now", "{now: true}"));
    let daemon = TestDaemon::start(&scratch).await;
    eventually(WAIT, "the now campaign fires", || async {
        !daemon.runs.fired().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = daemon.runs.fired();
    assert_eq!(first.len(), 1, "{first:?}");

    // Lose the schedule state, as if the daemon had died before writing it.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(scratch.db());
    let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("DELETE FROM schedule_state")
        .execute(&mut connection)
        .await
        .unwrap();
    drop(connection);

    scratch.write("site/uk.yaml", &segment("uk", "GB"));
    eventually(WAIT, "the unrelated revision is applied", || async {
        applied(&scratch.db()).await.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fired = daemon.runs.fired();
    assert!(
        fired.iter().all(|f| *f == first[0]),
        "a second occurrence of the now campaign: {fired:?}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_occurrence_fires_within_a_second_of_its_due_time() {
    let scratch = Scratch::new();
    // Six fields: every second second.
    scratch.write(
        "site/tick.yaml",
        &campaign("tick", "{cron: \"*/2 * * * * *\"}"),
    );
    let daemon = TestDaemon::start(&scratch).await;
    eventually(WAIT, "two occurrences fire", || async {
        daemon.runs.fired().len() >= 2
    })
    .await;
    let fired: Vec<(String, Timestamp, Instant)> = daemon.runs.fired.lock().unwrap().clone();
    daemon.stop().await;
    let anchor_instant = Instant::now();
    let anchor_time = Timestamp::now();
    for (_, occurrence, at) in &fired {
        let fired_at = anchor_time - anchor_instant.duration_since(*at);
        let late = fired_at.duration_since(*occurrence);
        assert!(
            late.as_secs_f64() >= -0.05 && late.as_secs_f64() < 1.0,
            "occurrence {occurrence} fired {late:?} after its due time"
        );
        assert_eq!(occurrence.as_second() % 2, 0, "on the pattern's instants");
    }
    assert!(
        fired.windows(2).all(|w| w[1].1 > w[0].1),
        "each occurrence once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_missed_while_down_are_skipped_outside_grace_and_fired_inside_it() {
    let scratch = Scratch::new();
    scratch.write(
        "site/hourly.yaml",
        &campaign("hourly", "{cron: \"0 * * * *\"}"),
    );
    let clock = Arc::new(ManualClock(Mutex::new(
        "2026-11-24T08:30:00Z".parse().unwrap(),
    )));
    let options = |clock: &Arc<ManualClock>| Options {
        dir: scratch.path("site"),
        allow_empty: false,
        clock: Some(clock.clone() as Arc<dyn Clock>),
    };
    let daemon = TestDaemon::start_with(&scratch, options(&clock)).await;
    eventually(WAIT, "readyz answers 200", || async {
        daemon.get("/readyz").await.0 == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(daemon.runs.fired().is_empty(), "nothing due at 08:30");
    daemon.stop().await;

    // Down from 08:30 to 11:30: 09:00 and 10:00 are more than an hour late, 11:00 is not.
    *clock.0.lock().unwrap() = "2026-11-24T11:30:00Z".parse().unwrap();
    let daemon = TestDaemon::start_with(&scratch, options(&clock)).await;
    eventually(
        WAIT,
        "the occurrence inside the grace window fires",
        || async { !daemon.runs.fired().is_empty() },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        daemon.runs.fired(),
        [(
            "hourly".to_string(),
            "2026-11-24T11:00:00Z".parse().unwrap()
        )]
    );
    let skipped = daemon.runs.skipped.lock().unwrap().clone();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(
        skipped[0].1,
        "2026-11-24T10:00:00Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(
        skipped[0].2,
        "missed by 1h 30m, outside the grace window 1h (with 1 earlier occurrence also missed)"
    );
    daemon.stop().await;
}

/// The real binary, the real engine: SIGTERM stops it cleanly.
#[cfg(unix)]
#[test]
fn the_binary_applies_the_directory_and_exits_0_on_sigterm() {
    let scratch = Scratch::new();
    scratch.write(
        "site/daily.yaml",
        &campaign("daily", "{cron: \"0 9 * * *\"}"),
    );
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("herald"))
        .current_dir(scratch.root.path())
        .args(["serve", "site", "--db", "store.db", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut up = false;
    while started.elapsed() < Duration::from_secs(8) {
        if runtime.block_on(applied(&scratch.db())) == [1] {
            up = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A bad edit, logged with its file and line.
    scratch.write(
        "site/daily.yaml",
        &campaign("daily", "{cron: \"0 9 * * *\"}").replace("template: hello", "template: helo"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(up, "revision 1 was not applied; stderr:\n{stderr}");
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("herald serving site (revision 1, 1 campaign")),
        "{messages:#?}"
    );
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["at"]
                .as_str()
                .is_some_and(|a| a.starts_with("site/daily.yaml:"))),
        "the bad edit's error is logged with its file and line: {messages:#?}"
    );
    assert!(messages.contains(&"stopped cleanly"), "{messages:#?}");
    let rows = runtime.block_on(revisions(&scratch.db()));
    assert_eq!(
        rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["applied", "rejected"]
    );
}

/// The README's demo in miniature, with the real engine: a `now: true` campaign reaches the
/// outbox file within seconds of start, and SIGTERM leaves no delivery mid-send.
#[cfg(unix)]
#[test]
fn the_binary_sends_a_now_campaign_to_the_outbox_and_stops_with_nothing_mid_send() {
    let scratch = Scratch::new();
    scratch.write("site/welcome.yaml", &campaign("welcome", "{now: true}"));
    scratch.write(
        "contacts.csv",
        "id,name,phone,opted_in\nc-1,Ana,+51987654321,sms\nc-2,Luis,+51987654322,sms\nc-3,Sin Permiso,+51987654323,\nc-4,Bad,not-a-phone,sms\n",
    );
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("herald"))
        .current_dir(scratch.root.path())
        .args([
            "serve",
            "site",
            "--db",
            "store.db",
            "--contacts",
            "contacts.csv",
        ])
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let outbox = scratch.path("site/outbox/sms.jsonl");
    let started = Instant::now();
    let mut lines = 0;
    while started.elapsed() < Duration::from_secs(8) && lines < 2 {
        lines = std::fs::read_to_string(&outbox)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        lines, 2,
        "the two opted-in contacts got the SMS; stderr:\n{stderr}"
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("bad contact row left out: contacts.csv:5"),
        "the bad row is logged, not fatal:\n{stderr}"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses: Vec<(String, i64)> = runtime.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(scratch.db())
            .read_only(true);
        let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
            .await
            .unwrap();
        sqlx::query("SELECT status, count(*) AS n FROM deliveries GROUP BY status ORDER BY status")
            .fetch_all(&mut connection)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("status"), r.get("n")))
            .collect()
    });
    assert!(
        statuses.iter().all(|(s, _)| s != "sending"),
        "nothing left mid-send: {statuses:?}"
    );
    assert!(statuses.contains(&("sent".to_string(), 2)), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_reconcile_still_tells_the_engine_about_the_revision_in_force() {
    let scratch = Scratch::new();
    let text = campaign("daily", "{cron: \"0 9 * * *\"}");
    scratch.write("site/daily.yaml", &text);
    let daemon = TestDaemon::start(&scratch).await;
    eventually(WAIT, "revision 1 is applied", || async {
        applied(&scratch.db()).await == [1]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = *daemon.runs.revisions_applied.lock().unwrap();
    // The same text again: nothing to apply, but the revision in force may have been
    // applied by `herald apply` meanwhile, so the engine hears of it again.
    scratch.write("site/daily.yaml", &text);
    eventually(WAIT, "the engine is told again", || async {
        *daemon.runs.revisions_applied.lock().unwrap() > before
    })
    .await;
    assert_eq!(applied(&scratch.db()).await, [1]);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_revision_applied_is_retried_after_the_revision_is_applied() {
    let scratch = Scratch::new();
    scratch.write(
        "site/daily.yaml",
        &campaign("daily", "{cron: \"0 9 * * *\"}"),
    );
    let runs = Arc::new(Recorder::default());
    // The call at startup and the one after applying revision 1 both fail.
    *runs.fail_revision_applied.lock().unwrap() = 2;
    let daemon = TestDaemon::start_recording(
        &scratch,
        Options {
            dir: scratch.path("site"),
            allow_empty: false,
            clock: None,
        },
        runs,
    )
    .await;
    eventually(
        WAIT,
        "the engine is told of the revision in force",
        || async { *daemon.runs.revisions_applied.lock().unwrap() >= 1 },
    )
    .await;
    assert_eq!(applied(&scratch.db()).await, [1]);
    daemon.stop().await;
}
