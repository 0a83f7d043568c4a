//! Stopping `herald serve` by signal, through the real binary: the first SIGTERM waits for
//! the send in flight; a second one exits at once with 130.

#[path = "support/server.rs"]
mod server;

use std::time::{Duration, Instant};

use server::Scratch;

/// A site whose one campaign sends, now, to a webhook that never answers.
fn site(sink: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: herald/v1\nkind: Channel\nmetadata: {{name: slow}}\nspec:\n  type: webhook\n  \
             medium: sms\n  webhook: {{url: \"http://{sink}/send\"}}\n---\n\
             apiVersion: herald/v1\nkind: Template\nmetadata: {{name: hello}}\nspec:\n  \
             sms: {{text: \"Hola\"}}\n---\n\
             apiVersion: herald/v1\nkind: Campaign\nmetadata: {{name: now}}\nspec:\n  \
             audience: {{segment: all-contacts}}\n  channels: {{strategy: specific, use: [slow]}}\n  \
             template: hello\n  schedule: {{now: true}}\n"
    )
}

#[test]
fn a_second_signal_exits_at_once_while_the_first_waits_for_the_send_in_flight() {
    // Accepts connections and never answers: the send stays in flight (10 s timeout).
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = sink.local_addr().unwrap();
    let (connected_tx, connected) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in sink.incoming().flatten() {
            held.push(stream);
            let _ = connected_tx.send(());
        }
    });
    let scratch = Scratch::new();
    scratch.write_site("site.yaml", &site(address));
    let contacts = scratch.write_contacts("id,name,phone,opted_in\nc-1,Ana,+51987650001,sms\n");
    let mut herald = scratch.options().with_contacts(&contacts).start();
    connected
        .recv_timeout(Duration::from_secs(20))
        .expect("the send reaches the webhook");

    herald.signal("TERM");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        herald.exited(),
        None,
        "the first signal waits for the send in flight:\n{}",
        herald.log_text()
    );
    let second = Instant::now();
    herald.signal("TERM");
    let code = loop {
        if let Some(code) = herald.exited() {
            break code;
        }
        assert!(
            second.elapsed() < Duration::from_secs(3),
            "the second signal did not end it:\n{}",
            herald.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(130), "{}", herald.log_text());
    assert!(herald.log_text().contains("second signal"));
}
