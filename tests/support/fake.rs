//! The plumbing of the fake HTTP servers (a provider's API, a webhook receiver) that tests
//! stand up on 127.0.0.1 for the real binary to call. Each fake's own rules and wire format
//! stay in its test file.
//!
//! Use from a test file with:
//! ```ignore
//! #[path = "support/fake.rs"]
//! mod fake;
//! ```
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Mutex;

use axum::http::HeaderMap;

/// Serves `app` on 127.0.0.1 at a free port, in the background; returns its address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A header's value as text; empty when it is missing or not text.
pub fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The requests a fake recorded in `got` that `keep` selects, in the order they came.
pub fn matching<G: Clone>(got: &Mutex<Vec<G>>, keep: impl Fn(&G) -> bool) -> Vec<G> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|g| keep(g))
        .cloned()
        .collect()
}
