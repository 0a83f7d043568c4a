//! The HTTP skeleton through the real binary: health, readiness, the error shape, and the
//! OpenAPI document.

#[path = "support/server.rs"]
mod server;

use server::Scratch;

#[tokio::test]
async fn the_server_answers_health_readiness_and_json_errors() {
    let scratch = Scratch::example();
    let herald = scratch.start();
    let client = reqwest::Client::new();
    let health = client.get(herald.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let missing = client
        .get(herald.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let doc = herald.get_json("/openapi.json", None).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/readyz"]["get"].is_object(), "{doc}");
    assert_eq!(herald.stop(), Some(0));
}

#[tokio::test]
async fn serve_with_now_runs_its_clock_from_that_instant() {
    let scratch = Scratch::example();
    let herald = scratch
        .options()
        .with_env(&[("HERALD_NOW", "2026-12-07T10:00:00Z")])
        .start();
    let campaign = herald
        .get_json("/v1/campaigns/weekly-newsletter", Some(server::VIEWER))
        .await;
    let next: jiff::Timestamp = campaign["next_fire"]
        .as_str()
        .unwrap_or_else(|| panic!("{campaign}"))
        .parse()
        .unwrap();
    // A weekly campaign's next fire, seen from 7 December 2026, is within the week after it.
    let start: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
    assert!(next > start, "{next}");
    assert!(
        next < start
            .checked_add(jiff::SignedDuration::from_hours(24 * 8))
            .unwrap(),
        "{next}"
    );
    assert!(herald.log_text().contains("the clock starts at --now"));
    herald.stop();
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_the_json_error_shape() {
    let scratch = Scratch::example();
    let herald = scratch.start();
    let big = format!("{{\"contact_id\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let response = reqwest::Client::new()
        .post(herald.url("/v1/campaigns/weekly-newsletter/test"))
        .bearer_auth(server::OPERATOR)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large", "{body}");
    herald.stop();
}
