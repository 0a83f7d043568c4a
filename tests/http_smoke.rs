//! The HTTP skeleton through the real binary: health, readiness, the error shape, and the
//! OpenAPI document.

#[path = "support/server.rs"]
mod server;

use server::Herald;

#[tokio::test]
async fn the_server_answers_health_readiness_and_json_errors() {
    let scratch = tempfile::tempdir().unwrap();
    let site = scratch.path().join("site");
    server::copy_example(&site);
    let herald = Herald::start(&site, &scratch.path().join("herald.db"));
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
    let doc: serde_json::Value = client
        .get(herald.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/readyz"]["get"].is_object(), "{doc}");
    assert_eq!(herald.stop(), Some(0));
}
