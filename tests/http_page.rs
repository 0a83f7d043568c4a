//! The status page at `/` through the real binary, loaded in headless Chromium: what a
//! person sees after campaigns have run (a send in progress with its progress bar, the
//! campaigns with their next fire, failed deliveries with masked addresses, the revision
//! in force) and after a bad edit (the rejected reload with its error at file:line).
//!
//! Chromium comes from the Debian package `chromium` (.ci/run installs it). Without it the
//! browser steps are skipped with a printed reason, unless `CI=true`, where it is required;
//! the same assertions then still run on the HTML the server answers.
//!
//! The browser authenticates as a person would: the page answers 401 with a Basic
//! challenge, and Chromium answers it with the credentials of the URL
//! (`http://viewer:TOKEN@host/`), the token as the password.
//!
//! `HERALD_UPDATE_SCREENSHOT=1 cargo test --test http_page` also writes the README's
//! screenshot, docs/status-page.png.

#[path = "support/server.rs"]
mod server;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server::{Herald, Scratch};

fn site(gateway: &str) -> String {
    format!(
        r#"apiVersion: herald/v1
kind: Channel
metadata: {{name: sms}}
spec:
  type: outbox
  medium: sms
  outbox: {{path: outbox/sms.jsonl}}
---
apiVersion: herald/v1
kind: Channel
metadata: {{name: gateway}}
spec:
  type: webhook
  medium: sms
  webhook: {{url: "{gateway}", timeout: 5s}}
---
apiVersion: herald/v1
kind: Template
metadata: {{name: hello}}
spec:
  sms: {{text: "Hello {{{{ contact.name | default('there') }}}}"}}
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: spring-sale}}
spec:
  audience: {{segment: all-contacts}}
  channels: {{strategy: specific, use: [sms]}}
  template: hello
  schedule: {{now: true}}
  # One message an hour: the first goes at once, the run stays in progress at 1 of 3.
  delivery: {{rate: {{per_hour: 1}}}}
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: blocked-numbers}}
spec:
  audience: {{segment: all-contacts}}
  channels: {{strategy: specific, use: [gateway]}}
  template: hello
  schedule: {{now: true}}
---
apiVersion: herald/v1
kind: Campaign
metadata: {{name: weekly-digest}}
spec:
  audience: {{segment: all-contacts}}
  channels: {{strategy: specific, use: [sms]}}
  template: hello
  schedule: {{cron: "0 9 * * MON", timezone: America/Lima}}
"#
    )
}

const CONTACTS: &str = "id,name,phone,opted_in\n\
c-1,Ana,+51987650001,sms\n\
c-2,Luis,+51987650002,sms\n\
c-3,Rosa,+51987650003,sms\n";

/// A message gateway that refuses every message with a 400 whose reason quotes the number
/// (as real providers do), so the deliveries fail permanently. Returns its URL.
fn refusing_gateway() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/send", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = refuse(&mut stream);
            });
        }
    });
    url
}

fn refuse(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let message: serde_json::Value =
        serde_json::from_slice(&buffer[head_end..]).unwrap_or_default();
    let to = message["to"].as_str().unwrap_or("?");
    let body = format!(r#"{{"error":"number {to} is blocked"}}"#);
    write!(
        stream,
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The page as the server answers it to a viewer's bearer token.
async fn page_html(client: &reqwest::Client, herald: &Herald) -> String {
    let response = client
        .get(herald.url("/"))
        .bearer_auth(server::VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    // The template escapes `/` too; a browser's DOM shows it plain, so compare plain.
    response.text().await.unwrap().replace("&#x2f;", "/")
}

async fn page_until(
    client: &reqwest::Client,
    herald: &Herald,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    loop {
        let html = page_html(client, herald).await;
        if done(&html) {
            return html;
        }
        if started.elapsed() > Duration::from_secs(40) {
            panic!(
                "{what}; last page:\n{html}\nserver log:\n{}",
                herald.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The headless browser, if there is one: `None` (with a printed reason) when Chromium is
/// not installed, unless `CI=true`.
fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            && out.status.success()
        {
            return Some(PathBuf::from(
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            ));
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("Chromium is required when CI=true (Debian package chromium)");
    }
    eprintln!(
        "SKIPPED the browser steps: no chromium on PATH; install the Debian package `chromium`"
    );
    None
}

/// Runs headless Chromium on `url` with `extra` arguments; returns its stdout.
fn run_chromium(browser: &Path, profile: &Path, url: &str, extra: &[&str]) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The page's URL with a viewer's credentials in it, as a person's browser would send them.
fn viewer_url(herald: &Herald) -> String {
    herald
        .base
        .replacen("http://", &format!("http://viewer:{}@", server::VIEWER), 1)
        + "/"
}

/// The DOM after load, as a viewer sees it.
fn browser_dom(browser: &Path, profile: &Path, herald: &Herald) -> String {
    let dom = run_chromium(browser, profile, &viewer_url(herald), &["--dump-dom"]);
    assert!(
        dom.contains("<progress"),
        "Chromium did not get the page (401?); DOM:\n{dom}"
    );
    dom
}

/// What the page shows once the campaigns have run; `dom` is the browser's or the server's.
fn assert_shows_the_sends(dom: &str, spring_sale_run: &str) {
    assert!(dom.contains("revision 1 in force"), "{dom}");
    for campaign in ["spring-sale", "blocked-numbers", "weekly-digest"] {
        assert!(
            dom.contains(&format!("id=\"campaign-{campaign}\"")),
            "{campaign}:\n{dom}"
        );
    }
    // The send in progress: 1 of 3 at one message an hour.
    assert!(
        dom.contains(&format!(
            r#"<progress id="run-{spring_sale_run}-progress" value="1" max="3">"#
        )),
        "run {spring_sale_run} at 1 of 3:\n{dom}"
    );
    // The cron campaign's next fire, on a Monday at 09:00 in Lima (14:00 UTC).
    let digest = &dom[dom.find("id=\"campaign-weekly-digest\"").unwrap()..];
    let digest = &digest[..digest.find("</tr>").unwrap()];
    assert!(digest.contains("14:00:00 UTC"), "{digest}");
    assert!(
        digest.contains("cron 0 9 * * MON (America/Lima)"),
        "{digest}"
    );
    // The refused messages, with the gateway's reason and the numbers masked.
    assert_eq!(dom.matches("class=\"failure\"").count(), 3, "{dom}");
    assert!(dom.contains("is blocked"), "{dom}");
    assert!(dom.contains("+51••••••001"), "{dom}");
    for number in ["987650001", "987650002", "987650003"] {
        assert!(!dom.contains(number), "{number} unmasked:\n{dom}");
    }
    for token in [server::VIEWER, server::ADMIN, server::OPERATOR] {
        assert!(!dom.contains(token), "a token on the page:\n{dom}");
    }
}

/// The run id of `campaign` in the page's sends table.
fn run_of(html: &str, campaign: &str) -> Option<String> {
    let at = html.find(&format!("data-campaign=\"{campaign}\""))?;
    let row = &html[html[..at].rfind("<tr id=\"run-")? + 12..];
    Some(row[..row.find('"')?].to_string())
}

#[tokio::test]
async fn the_status_page_shows_sends_campaigns_failures_and_a_rejected_reload_in_a_browser() {
    let scratch = Scratch::new();
    scratch.write_site("site.yaml", &site(&refusing_gateway()));
    scratch.import_contacts(CONTACTS);
    let herald = scratch.start();
    let client = reqwest::Client::new();

    // Without a token: 401, with a Basic challenge on a line of its own (browsers read only
    // a line's first challenge, so `Bearer, Basic ...` on one line would never prompt).
    let anonymous = client.get(herald.url("/")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let challenges: Vec<&str> = anonymous
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic realm=")),
        "{challenges:?}"
    );

    let html = page_until(&client, &herald, "the sends did not show", |h| {
        h.contains(r#"value="1" max="3""#) && h.matches("class=\"failure\"").count() == 3
    })
    .await;
    let run = run_of(&html, "spring-sale").expect("spring-sale has a run");
    assert_shows_the_sends(&html, &run);
    assert!(
        html.contains(r#"<meta http-equiv="refresh" content="10">"#),
        "{html}"
    );

    let browser = chromium();
    if let Some(browser) = &browser {
        let profile = scratch.path().join("chromium-profile");
        let dom = browser_dom(browser, &profile, &herald);
        assert_shows_the_sends(&dom, &run);
    }

    // A bad edit: revision 2 is rejected with its error at file:line, revision 1 stays.
    scratch.write_site(
        "broken.yaml",
        "apiVersion: herald/v1\nkind: Campaign\nmetadata: {name: broken}\nspec:\n  audience: {segment: all-contacts}\n  channels: {strategy: specific, use: [sms]}\n  template: no-such-template\n  schedule: {now: true}\n",
    );
    let html = page_until(&client, &herald, "the rejected reload did not show", |h| {
        h.contains("id=\"rejected-reload\"")
    })
    .await;
    let check = |dom: &str| {
        let rejected = &dom[dom.find("id=\"rejected-reload\"").unwrap()..];
        let rejected = &rejected[..rejected.find("</div>").unwrap()];
        assert!(rejected.contains("rejected"), "{rejected}");
        assert!(rejected.contains("revision 1 stays in force"), "{rejected}");
        assert!(rejected.contains("broken.yaml:7:"), "{rejected}");
        assert!(rejected.contains("no-such-template"), "{rejected}");
        assert!(dom.contains("revision 1 in force"), "{dom}");
        assert!(dom.contains("id=\"last-reload\""), "{dom}");
    };
    check(&html);
    if let Some(browser) = &browser {
        let profile = scratch.path().join("chromium-profile");
        let dom = browser_dom(browser, &profile, &herald);
        check(&dom);
        // The screenshot: always taken (so the step is exercised), kept in docs/ on request.
        let shot = scratch.path().join("status-page.png");
        run_chromium(
            browser,
            &profile,
            &viewer_url(&herald),
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1200,900",
            ],
        );
        let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{} bytes",
            png.len()
        );
        if std::env::var("HERALD_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
            std::fs::write(&docs, &png).unwrap();
            eprintln!("wrote {}", docs.display());
        }
    }
}
