//! The channel contract against real I/O: the webhook channel against a local HTTP server
//! that records every request and answers as told, and the outbox channel against a file
//! in a temporary directory, read back after flush.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald::channels::webhook::{HeaderText, WebhookChannel, WebhookConfig};
use herald::channels::{self, Channel, SendOutcome};
use herald::message::{ButtonMessage, Content, OutboundMessage, SmsMessage, TelegramMessage};
use herald::secrets::{SecretResolver, SecretString};
use herald::signing::{self, SigningKey};
use herald::spec::channel::{ChannelSpec, Medium};
use tokio::io::AsyncReadExt;

// ---------------------------------------------------------------------------------------
// The fake receiver

#[derive(Clone, Debug)]
struct Recorded {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Debug)]
enum Reply {
    Status(u16, Vec<(String, String)>, String),
    Hang(Duration),
}

#[derive(Clone)]
struct ReceiverState {
    requests: Arc<Mutex<Vec<Recorded>>>,
    reply: Arc<Mutex<Reply>>,
}

/// An HTTP server on 127.0.0.1:0 that records every request and answers with `reply`.
struct Receiver {
    addr: SocketAddr,
    state: ReceiverState,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    async fn start(reply: Reply) -> Receiver {
        let state = ReceiverState {
            requests: Arc::default(),
            reply: Arc::new(Mutex::new(reply)),
        };
        let app = axum::Router::new()
            .fallback(record_and_answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Receiver {
            addr,
            state,
            _shutdown: shutdown,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.into_iter().next().unwrap()
    }
}

async fn record_and_answer(
    State(state): State<ReceiverState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.requests.lock().unwrap().push(Recorded {
        method,
        path_and_query: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        headers,
        body,
    });
    let reply = state.reply.lock().unwrap().clone();
    match reply {
        Reply::Status(code, headers, body) => {
            let mut response = (StatusCode::from_u16(code).unwrap(), body).into_response();
            for (name, value) in headers {
                let name = axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Reply::Hang(how_long) => {
            tokio::time::sleep(how_long).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Answer every request with this status, these headers and this body.
fn answer(code: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    let headers = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    Reply::Status(code, headers, body.to_string())
}

/// A server that reads the request's head and closes the connection without answering.
async fn start_dropper() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------
// Helpers

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn sms(delivery_id: i64) -> OutboundMessage {
    OutboundMessage {
        delivery_id,
        idempotency_key: format!("r3-c{delivery_id}-sms-gateway"),
        run_id: 3,
        campaign: "black-friday".into(),
        channel: "sms-gateway".into(),
        contact_id: format!("contact-{delivery_id}"),
        to: "+51987654321".into(),
        content: Content::Sms(SmsMessage {
            text: "Hola Ana: 30% OFF. STOP para salir".into(),
            media_url: None,
        }),
        test: false,
    }
}

fn webhook(url: String, configure: impl FnOnce(&mut WebhookConfig)) -> WebhookChannel {
    let mut config = WebhookConfig::new(url);
    configure(&mut config);
    WebhookChannel::new("sms-gateway", Medium::Sms, config).unwrap()
}

fn header<'a>(request: &'a Recorded, name: &str) -> Option<&'a str> {
    request.headers.get(name).map(|v| v.to_str().unwrap())
}

fn channel_spec(yaml: &str) -> ChannelSpec {
    serde_saphyr::from_str(yaml).unwrap()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

// ---------------------------------------------------------------------------------------
// Webhook: the request

#[tokio::test]
async fn the_webhook_channel_posts_the_documented_body_and_headers() {
    let receiver = Receiver::start(answer(200, &[], "")).await;
    let channel = webhook(receiver.url("/send?tenant=acme"), |c| {
        c.headers
            .push(("X-Tenant".into(), HeaderText::Plain("acme".into())));
    });

    let outcome = channel.send(&sms(7)).await;

    assert_eq!(
        outcome,
        SendOutcome::Sent {
            provider_message_id: None
        }
    );
    let request = receiver.only_request();
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path_and_query, "/send?tenant=acme");
    assert_eq!(
        std::str::from_utf8(&request.body).unwrap(),
        concat!(
            r#"{"type":"message","delivery_id":7,"idempotency_key":"r3-c7-sms-gateway","#,
            r#""campaign":"black-friday","run_id":3,"channel":"sms-gateway","medium":"sms","#,
            r#""to":"+51987654321","contact_id":"contact-7","#,
            r#""content":{"medium":"sms","text":"Hola Ana: 30% OFF. STOP para salir"},"#,
            r#""test":false}"#
        )
    );
    assert_eq!(header(&request, "content-type"), Some("application/json"));
    assert_eq!(
        header(&request, "idempotency-key"),
        Some("r3-c7-sms-gateway")
    );
    assert_eq!(header(&request, "x-tenant"), Some("acme"));
    assert!(
        header(&request, "user-agent")
            .unwrap()
            .starts_with("herald/"),
        "{:?}",
        request.headers
    );
    for unsigned in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert_eq!(
            header(&request, unsigned),
            None,
            "{unsigned} without a secret"
        );
    }
}

#[tokio::test]
async fn rich_content_is_sent_as_the_rendered_content_tagged_by_medium() {
    let receiver = Receiver::start(answer(200, &[], "")).await;
    let channel = WebhookChannel::new(
        "tg",
        Medium::Telegram,
        WebhookConfig::new(receiver.url("/")),
    )
    .unwrap();
    let mut message = sms(1);
    message.test = true;
    message.content = Content::Telegram(TelegramMessage {
        text: Some("Hi".into()),
        media: None,
        buttons: vec![ButtonMessage {
            text: "See".into(),
            url: Some("https://example.com/x".into()),
            reply: None,
        }],
    });

    channel.send(&message).await;

    let body: serde_json::Value = serde_json::from_slice(&receiver.only_request().body).unwrap();
    assert_eq!(body["medium"], "telegram");
    assert_eq!(body["test"], true);
    assert_eq!(
        body["content"],
        serde_json::json!({"medium": "telegram", "text": "Hi",
            "buttons": [{"text": "See", "url": "https://example.com/x"}]})
    );
}

#[tokio::test]
async fn a_signed_request_carries_standard_webhooks_headers_that_verify() {
    let receiver = Receiver::start(answer(200, &[], "")).await;
    let channel = webhook(receiver.url("/"), |c| {
        c.secret = Some(SecretString::new(SECRET));
    });

    channel.send(&sms(8)).await;

    let request = receiver.only_request();
    let id = header(&request, "webhook-id").unwrap();
    let timestamp = header(&request, "webhook-timestamp").unwrap();
    let signature = header(&request, "webhook-signature").unwrap();
    assert_eq!(id, "r3-c8-sms-gateway", "webhook-id is the idempotency key");
    assert!(
        (timestamp.parse::<i64>().unwrap() - now()).abs() <= 5,
        "{timestamp}"
    );
    assert!(signature.starts_with("v1,"), "{signature}");
    let key = SigningKey::from_secret(SECRET).unwrap();
    signing::verify(&key, id, timestamp, signature, &request.body, now(), 300)
        .expect("the signature verifies over the raw body");
    let other = SigningKey::from_secret("whsec_MDEyMzQ1Njc4OWFiY2RlZg==").unwrap();
    assert!(
        signing::verify(&other, id, timestamp, signature, &request.body, now(), 300).is_err(),
        "another key must not verify"
    );
}

#[tokio::test]
async fn the_python_standardwebhooks_library_verifies_herald_signatures() {
    let available = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !available {
        eprintln!(
            "note: skipped: python3 with the `standardwebhooks` package is not installed \
             (pip install standardwebhooks)"
        );
        return;
    }
    let receiver = Receiver::start(answer(200, &[], "")).await;
    let channel = webhook(receiver.url("/"), |c| {
        c.secret = Some(SecretString::new(SECRET));
    });
    channel.send(&sms(9)).await;
    let request = receiver.only_request();
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().into()))
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
body = sys.stdin.buffer.read().decode()
payload = Webhook(sys.argv[1]).verify(body, json.loads(sys.argv[2]))
print(payload["idempotency_key"])
"#;
    let verify = |body: &[u8]| {
        use std::io::Write;
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                script,
                SECRET,
                &serde_json::to_string(&headers).unwrap(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(body).unwrap();
        child.wait_with_output().unwrap()
    };

    let good = verify(&request.body);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&good.stdout).trim(),
        "r3-c9-sms-gateway"
    );

    let mut tampered = request.body.to_vec();
    tampered.retain(|b| *b != b' ');
    let bad = verify(&tampered);
    assert!(!bad.status.success(), "a changed body must not verify");
}

// ---------------------------------------------------------------------------------------
// Webhook: classifying the answer

#[tokio::test]
async fn a_2xx_answer_is_sent_with_the_id_from_the_json_body() {
    let receiver = Receiver::start(answer(
        202,
        &[("content-type", "application/json")],
        r#"{"id":"gw-123","status":"queued"}"#,
    ))
    .await;
    let outcome = webhook(receiver.url("/"), |_| {}).send(&sms(1)).await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            provider_message_id: Some("gw-123".into())
        }
    );
}

#[tokio::test]
async fn a_429_is_transient_and_keeps_the_retry_after_delay() {
    let receiver = Receiver::start(answer(429, &[("retry-after", "30")], "slow down")).await;
    let outcome = webhook(receiver.url("/"), |_| {}).send(&sms(1)).await;
    assert_eq!(
        outcome,
        SendOutcome::Transient {
            reason: "HTTP 429 Too Many Requests: slow down".into(),
            retry_after: Some(Duration::from_secs(30)),
        }
    );
}

#[tokio::test]
async fn a_503_with_an_http_date_retry_after_is_transient_with_the_remaining_delay() {
    // An HTTP-date one minute ahead: the delay is about 60 s (the date has whole seconds).
    let ahead = jiff::Timestamp::from_second(now() + 60).unwrap();
    let date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&ahead)
        .unwrap();
    let receiver = Receiver::start(answer(503, &[("retry-after", &date)], "")).await;
    let outcome = webhook(receiver.url("/"), |_| {}).send(&sms(1)).await;
    let SendOutcome::Transient {
        reason,
        retry_after,
    } = outcome
    else {
        panic!("expected transient, got {outcome:?}");
    };
    assert_eq!(reason, "HTTP 503 Service Unavailable");
    let delay = retry_after.expect("Retry-After is kept").as_secs();
    assert!((58..=60).contains(&delay), "{delay}");
}

#[tokio::test]
async fn a_500_without_retry_after_is_transient_without_a_delay() {
    let receiver = Receiver::start(answer(500, &[], "oops")).await;
    let outcome = webhook(receiver.url("/"), |_| {}).send(&sms(1)).await;
    assert_eq!(
        outcome,
        SendOutcome::Transient {
            reason: "HTTP 500 Internal Server Error: oops".into(),
            retry_after: None,
        }
    );
}

#[tokio::test]
async fn a_400_is_permanent_with_the_status_and_the_body_but_no_credentials() {
    let receiver = Receiver::start(answer(400, &[], r#"{"error":"invalid number"}"#)).await;
    let channel = webhook(receiver.url("/"), |c| {
        c.secret = Some(SecretString::new(SECRET));
        c.headers.push((
            "Authorization".into(),
            HeaderText::Secret(SecretString::new("Bearer tok-998877")),
        ));
    });
    let outcome = channel.send(&sms(1)).await;
    assert_eq!(
        outcome,
        SendOutcome::Permanent {
            reason: r#"HTTP 400 Bad Request: {"error":"invalid number"}"#.into(),
            opted_out: false,
        }
    );
    let request = receiver.only_request();
    assert_eq!(header(&request, "authorization"), Some("Bearer tok-998877"));
    let debug = format!("{channel:?}");
    assert!(
        !debug.contains("tok-998877") && !debug.contains("C2FVsBQ"),
        "{debug}"
    );
}

#[tokio::test]
async fn a_4xx_that_says_opted_out_is_permanent_and_opts_the_contact_out() {
    let receiver = Receiver::start(answer(
        403,
        &[],
        r#"{"error":"recipient unsubscribed","opted_out":true}"#,
    ))
    .await;
    let outcome = webhook(receiver.url("/"), |_| {}).send(&sms(1)).await;
    let SendOutcome::Permanent { reason, opted_out } = outcome else {
        panic!("expected permanent, got {outcome:?}");
    };
    assert!(opted_out);
    assert!(reason.starts_with("HTTP 403 Forbidden"), "{reason}");
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_is_permanent() {
    let receiver = Receiver::start(answer(
        301,
        &[("location", "http://127.0.0.1:9/elsewhere")],
        "",
    ))
    .await;
    let outcome = webhook(receiver.url("/"), |_| {}).send(&sms(1)).await;
    assert!(
        matches!(&outcome, SendOutcome::Permanent { reason, .. } if reason.contains("301")),
        "{outcome:?}"
    );
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_transient() {
    let receiver = Receiver::start(Reply::Hang(Duration::from_secs(10))).await;
    let channel = webhook(receiver.url("/"), |c| {
        c.timeout = Duration::from_millis(300)
    });
    let started = Instant::now();
    let outcome = channel.send(&sms(1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout applies"
    );
    assert!(
        matches!(&outcome, SendOutcome::Transient { reason, retry_after: None }
            if reason.contains("timed out")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_dropped_connection_is_transient() {
    let addr = start_dropper().await;
    let outcome = webhook(format!("http://{addr}/"), |_| {})
        .send(&sms(1))
        .await;
    assert!(
        matches!(
            &outcome,
            SendOutcome::Transient {
                retry_after: None,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient_and_its_reason_leaves_out_the_url() {
    // Bind then drop a listener to get a port nothing listens on.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let outcome = webhook(format!("http://{addr}/bot-token-123/send"), |_| {})
        .send(&sms(1))
        .await;
    let SendOutcome::Transient { reason, .. } = outcome else {
        panic!("expected transient, got {outcome:?}");
    };
    assert!(reason.starts_with("cannot connect"), "{reason}");
    assert!(!reason.contains("bot-token-123"), "{reason}");
}

// ---------------------------------------------------------------------------------------
// The contract and `build`

#[tokio::test]
async fn build_makes_a_webhook_channel_resolving_its_secret_and_secret_headers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hook.secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(dir.path().join("token"), "Bearer from-file\n").unwrap();
    let receiver = Receiver::start(answer(200, &[], "")).await;
    let spec = channel_spec(&format!(
        "type: webhook\nmedium: sms\nwebhook:\n  url: {}\n  secret: \"${{file:hook.secret}}\"\n  \
         headers: {{Authorization: \"${{file:token}}\", X-Plain: plain}}\n  timeout: 3s\nmax_in_flight: 4\n",
        receiver.url("/hook")
    ));

    let channel = channels::build("gw", &spec, &SecretResolver::new(dir.path())).unwrap();

    assert!(channel.honours_idempotency_key());
    assert_eq!(channel.max_in_flight(), 4);
    assert_eq!(channel.medium(), Medium::Sms);
    assert_eq!(channel.name(), "gw");
    assert_eq!(
        channel.send(&sms(5)).await,
        SendOutcome::Sent {
            provider_message_id: None
        }
    );
    channel.flush().await.unwrap();
    let request = receiver.only_request();
    assert_eq!(header(&request, "authorization"), Some("Bearer from-file"));
    assert_eq!(header(&request, "x-plain"), Some("plain"));
    let key = SigningKey::from_secret(SECRET).unwrap();
    signing::verify(
        &key,
        header(&request, "webhook-id").unwrap(),
        header(&request, "webhook-timestamp").unwrap(),
        header(&request, "webhook-signature").unwrap(),
        &request.body,
        now(),
        300,
    )
    .expect("signed with the secret read from the file");
}

#[test]
fn build_names_the_missing_secret_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let spec = channel_spec(
        "type: webhook\nmedium: sms\nwebhook: {url: \"http://127.0.0.1:9/\", secret: \"${file:absent.key}\"}\n",
    );
    let err = channels::build("gw", &spec, &SecretResolver::new(dir.path())).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("channel gw: `secret`: the file "),
        "{text}"
    );
    assert!(text.contains("absent.key"), "{text}");
}

#[test]
fn the_default_limits_on_requests_in_flight_differ_by_type() {
    let dir = tempfile::tempdir().unwrap();
    let resolver = SecretResolver::new(dir.path());
    let hook = channels::build(
        "gw",
        &channel_spec("type: webhook\nmedium: sms\nwebhook: {url: \"http://127.0.0.1:9/\"}\n"),
        &resolver,
    )
    .unwrap();
    let outbox_path = dir.path().join("out.jsonl");
    let outbox = channels::build(
        "ob",
        &channel_spec(&format!(
            "type: outbox\nmedium: sms\noutbox: {{path: \"{}\"}}\n",
            outbox_path.display()
        )),
        &resolver,
    )
    .unwrap();
    assert_eq!(hook.max_in_flight(), 16);
    assert_eq!(outbox.max_in_flight(), 1);
    assert!(!outbox.honours_idempotency_key());
}

#[tokio::test]
async fn content_for_another_medium_is_refused_without_a_request() {
    let receiver = Receiver::start(answer(200, &[], "")).await;
    let channel = Channel::Webhook(webhook(receiver.url("/"), |_| {}));
    let mut message = sms(1);
    message.content = Content::Telegram(TelegramMessage::default());
    let outcome = channel.send(&message).await;
    assert!(
        matches!(outcome, SendOutcome::Permanent { .. }),
        "{outcome:?}"
    );
    assert!(receiver.requests().is_empty());
}

// ---------------------------------------------------------------------------------------
// Outbox

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_writes_concurrent_sends_as_whole_lines_made_durable_by_flush() {
    const N: i64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/outbox.jsonl");
    let spec = channel_spec(&format!(
        "type: outbox\nmedium: sms\noutbox: {{path: \"{}\"}}\n",
        path.display()
    ));
    let channel = Arc::new(channels::build("demo", &spec, &SecretResolver::new(".")).unwrap());

    let mut tasks = Vec::new();
    for n in 0..N {
        let channel = Arc::clone(&channel);
        tasks.push(tokio::spawn(async move {
            let mut message = sms(n);
            // Long enough lines that a torn or interleaved write would show.
            message.content = Content::Sms(SmsMessage {
                text: format!("{n}:{}", "x".repeat(2_000)),
                media_url: None,
            });
            channel.send(&message).await
        }));
    }
    for task in tasks {
        let outcome = task.await.unwrap();
        assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    }
    channel.flush().await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is whole JSON"))
        .collect();
    assert_eq!(lines.len(), N as usize);
    let ids: BTreeSet<i64> = lines
        .iter()
        .map(|l| l["delivery_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..N).collect::<BTreeSet<_>>());
    for line in &lines {
        let n = line["delivery_id"].as_i64().unwrap();
        let text = line["content"]["text"].as_str().unwrap();
        assert_eq!(text, format!("{n}:{}", "x".repeat(2_000)));
    }
}

#[tokio::test]
async fn an_outbox_line_is_the_message_plus_sent_at() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let spec = channel_spec(&format!(
        "type: outbox\nmedium: sms\noutbox: {{path: \"{}\"}}\n",
        path.display()
    ));
    let channel = channels::build("demo", &spec, &SecretResolver::new(".")).unwrap();
    let before = jiff::Timestamp::now();

    let outcome = channel.send(&sms(4)).await;
    channel.flush().await.unwrap();

    assert_eq!(
        outcome,
        SendOutcome::Sent {
            provider_message_id: Some("r3-c4-sms-gateway".into())
        }
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    let sent_at: jiff::Timestamp = line["sent_at"].as_str().unwrap().parse().unwrap();
    assert!(
        sent_at
            >= before.round(jiff::Unit::Millisecond).unwrap()
                - jiff::SignedDuration::from_millis(1)
    );
    line.as_object_mut().unwrap().remove("sent_at");
    assert_eq!(
        line,
        serde_json::json!({
            "delivery_id": 4, "idempotency_key": "r3-c4-sms-gateway", "run_id": 3,
            "campaign": "black-friday", "channel": "sms-gateway", "contact_id": "contact-4",
            "to": "+51987654321",
            "content": {"medium": "sms", "text": "Hola Ana: 30% OFF. STOP para salir"},
            "test": false
        })
    );
}

#[tokio::test]
async fn a_reopened_outbox_appends_after_the_lines_already_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let spec = channel_spec(&format!(
        "type: outbox\nmedium: sms\noutbox: {{path: \"{}\"}}\n",
        path.display()
    ));
    for n in 0..2 {
        let channel = channels::build("demo", &spec, &SecretResolver::new(".")).unwrap();
        channel.send(&sms(n)).await;
        channel.flush().await.unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let ids: Vec<i64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["delivery_id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, vec![0, 1]);
}
