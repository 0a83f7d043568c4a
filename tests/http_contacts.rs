//! The contacts API and segment previews through the real binary: create, read, replace,
//! patch and delete; tags; consent per medium with its source; CSV import (bad rows by
//! line, strict) and export; a segment's count against `herald audience`.

#[path = "support/server.rs"]
mod server;

use std::path::Path;

use assert_cmd::Command;
use serde_json::{Value, json};
use server::{Herald, OPERATOR, Scratch, VIEWER};

const EXAMPLE_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/campaigns.example/contacts.csv"
);

/// Two channels, two segments, a template and a disabled campaign: a revision in force
/// that sends nothing by itself.
const SITE: &str = r#"
apiVersion: herald/v1
kind: Channel
metadata: {name: sms-main}
spec:
  type: outbox
  medium: sms
  outbox: {path: outbox/sms.jsonl}
---
apiVersion: herald/v1
kind: Channel
metadata: {name: email-main}
spec:
  type: outbox
  medium: email
  outbox: {path: outbox/email.jsonl}
---
apiVersion: herald/v1
kind: Segment
metadata: {name: vip}
spec:
  match:
    all:
      - {field: tags, op: contains, value: vip}
---
apiVersion: herald/v1
kind: Segment
metadata: {name: peru}
spec:
  match:
    all:
      - {field: country, op: eq, value: PE}
---
apiVersion: herald/v1
kind: Template
metadata: {name: hello}
spec:
  sms: {text: "Hola {{ contact.name | default('cliente') }}"}
  email: {subject: "Hola", text: "Hola {{ contact.name | default('cliente') }}"}
---
apiVersion: herald/v1
kind: Campaign
metadata: {name: promo}
spec:
  enabled: false
  audience: {segment: vip}
  channels: {strategy: fallback, use: [sms-main, email-main]}
  template: hello
  schedule: {now: true}
---
apiVersion: herald/v1
kind: Webhook
metadata: {name: crm}
spec:
  url: http://127.0.0.1:9/hooks
  secret: "${file:hook-secret}"
  events: [contact.opted_out]
"#;

struct Site {
    _scratch: Scratch,
    herald: Herald,
    client: reqwest::Client,
}

impl Site {
    fn start() -> Site {
        let scratch = Scratch::new();
        scratch.write_site("site.yaml", SITE);
        scratch.write_site("hook-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let herald = scratch.start();
        Site {
            _scratch: scratch,
            herald,
            client: reqwest::Client::new(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.herald.url(path))
            .bearer_auth(OPERATOR)
    }

    /// Sends a JSON body (or none) as the operator; returns the status and the JSON answer
    /// (`null` for an empty one).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.unwrap()).await
    }

    async fn import(&self, query: &str, csv: &str) -> (u16, Value) {
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/contacts/import{query}"),
            )
            .header("content-type", "text/csv")
            .body(csv.to_string())
            .send()
            .await
            .unwrap();
        answer(response).await
    }

    async fn export(&self) -> String {
        let response = self
            .request(reqwest::Method::GET, "/v1/contacts/export")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/csv; charset=utf-8"
        );
        response.text().await.unwrap()
    }
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body)
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

fn ana() -> Value {
    json!({
        "name": "Ana Torres",
        "phone": "+51 (987) 654-321",
        "email": "ana@example.com",
        "locale": "es_pe",
        "timezone": "America/Lima",
        "country": "pe",
        "attributes": {"city": "Lima", "orders": 4},
        "tags": ["vip", "newsletter"],
        "consent": {"sms": {"opted_in": true, "source": "signup-form"}}
    })
}

#[tokio::test]
async fn a_contact_is_created_read_replaced_patched_and_deleted() {
    let site = Site::start();
    let (status, created) = site.call("PUT", "/v1/contacts/c-ana", Some(ana())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "c-ana");
    // Values are stored in their checked form.
    assert_eq!(created["phone"], "+51987654321");
    assert_eq!(created["locale"], "es-PE");
    assert_eq!(created["country"], "PE");
    assert_eq!(created["tags"], json!(["newsletter", "vip"]));
    assert_eq!(created["media"]["sms"]["opted_in"], true);
    assert_eq!(created["media"]["sms"]["opted_in_source"], "signup-form");

    let (status, read) = site.call("GET", "/v1/contacts/c-ana", None).await;
    assert_eq!(status, 200);
    assert_eq!(read, created);

    // The same contact again changes nothing, not even updated_at.
    let (status, again) = site.call("PUT", "/v1/contacts/c-ana", Some(ana())).await;
    assert_eq!(status, 200);
    assert_eq!(again, created);

    // A replacement without email clears it; consent is not withdrawn by omission.
    let mut replaced = ana();
    replaced.as_object_mut().unwrap().remove("email");
    replaced.as_object_mut().unwrap().remove("consent");
    let (status, body) = site.call("PUT", "/v1/contacts/c-ana", Some(replaced)).await;
    assert_eq!(status, 200);
    assert_eq!(body["email"], Value::Null);
    assert_eq!(body["media"]["sms"]["opted_in"], true);
    assert_eq!(body["created_at"], created["created_at"]);

    // A merge patch: null removes, other fields stay.
    let patch = json!({"name": null, "attributes": {"city": null, "orders": 5}});
    let (status, patched) = site.call("PATCH", "/v1/contacts/c-ana", Some(patch)).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], Value::Null);
    assert_eq!(patched["phone"], "+51987654321");
    assert_eq!(patched["attributes"], json!({"orders": 5}));
    assert_eq!(patched["tags"], json!(["newsletter", "vip"]));

    let (status, _) = site
        .call("PATCH", "/v1/contacts/nobody", Some(json!({})))
        .await;
    assert_eq!(status, 404);

    let (status, body) = site.call("DELETE", "/v1/contacts/c-ana", None).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, body) = site.call("GET", "/v1/contacts/c-ana", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = site.call("DELETE", "/v1/contacts/c-ana", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn invalid_fields_are_named_in_a_422_and_nothing_is_written() {
    let site = Site::start();
    let mut bad = ana();
    bad["phone"] = json!("12");
    let (status, body) = site.call("PUT", "/v1/contacts/c-bad", Some(bad)).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "invalid");
    assert!(message(&body).starts_with("phone: \"12\""), "{body}");

    let body = json!({
        "email": "not-an-address",
        "timezone": "Mars/Olympus",
        "whatsapp": "+51987654321",
        "tags": ["ok", "a;b"],
        "attributes": {"phone": "+1"},
        "consent": {"fax": {"opted_in": true, "source": "x"}},
        "colour": "red"
    });
    let (status, answer) = site.call("PUT", "/v1/contacts/c-bad", Some(body)).await;
    assert_eq!(status, 422);
    let text = message(&answer);
    for field in [
        "email: ",
        "timezone: ",
        "whatsapp: ",
        "tags[1]: ",
        "attributes.phone: ",
        "consent.fax: ",
        "colour: ",
    ] {
        assert!(text.contains(field), "{field} not in {text}");
    }

    let (status, answer) = site
        .call("PUT", "/v1/contacts/c-bad", Some(json!({"id": "c-other"})))
        .await;
    assert_eq!(status, 422);
    assert!(message(&answer).starts_with("id: "), "{answer}");

    let (status, answer) = site
        .call("PUT", "/v1/contacts/c-bad", Some(json!([1])))
        .await;
    assert_eq!(status, 422);
    assert!(message(&answer).starts_with("body: "), "{answer}");

    // None of these wrote anything.
    let (status, _) = site.call("GET", "/v1/contacts/c-bad", None).await;
    assert_eq!(status, 404);

    // A valid contact, then a bad patch: the contact stays as it was.
    site.call("PUT", "/v1/contacts/c-ok", Some(ana())).await;
    let (status, answer) = site
        .call(
            "PATCH",
            "/v1/contacts/c-ok",
            Some(json!({"name": "Changed", "locale": "português"})),
        )
        .await;
    assert_eq!(status, 422);
    assert!(message(&answer).starts_with("locale: "), "{answer}");
    let (_, read) = site.call("GET", "/v1/contacts/c-ok", None).await;
    assert_eq!(read["name"], "Ana Torres");
}

#[tokio::test]
async fn tags_are_added_and_removed() {
    let site = Site::start();
    site.call("PUT", "/v1/contacts/c1", Some(json!({"tags": ["a"]})))
        .await;
    let (status, body) = site
        .call(
            "POST",
            "/v1/contacts/c1/tags",
            Some(json!({"tags": ["b", "a", "vip club"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tags"], json!(["a", "b", "vip club"]));

    let (status, _) = site
        .call("DELETE", "/v1/contacts/c1/tags/vip%20club", None)
        .await;
    assert_eq!(status, 204);
    // A tag the contact does not have: still 204 (the contact does not have it).
    let (status, _) = site.call("DELETE", "/v1/contacts/c1/tags/zzz", None).await;
    assert_eq!(status, 204);
    let (_, read) = site.call("GET", "/v1/contacts/c1", None).await;
    assert_eq!(read["tags"], json!(["a", "b"]));

    let (status, body) = site
        .call("POST", "/v1/contacts/c1/tags", Some(json!({"tags": [""]})))
        .await;
    assert_eq!(status, 422);
    assert!(message(&body).starts_with("tags[0]: "), "{body}");
    let (status, _) = site
        .call(
            "POST",
            "/v1/contacts/ghost/tags",
            Some(json!({"tags": ["x"]})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn consent_is_recorded_per_medium_with_its_source() {
    let site = Site::start();
    site.call("PUT", "/v1/contacts/c1", Some(ana())).await;
    let (status, body) = site
        .call(
            "POST",
            "/v1/contacts/c1/opt-out",
            Some(json!({"medium": "sms", "source": "stop-keyword"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, read) = site.call("GET", "/v1/contacts/c1", None).await;
    let sms = &read["media"]["sms"];
    assert_eq!(sms["opted_in"], false);
    assert_eq!(sms["opted_out"], true);
    assert_eq!(sms["opted_out_source"], "stop-keyword");
    assert_eq!(read["media"].get("email"), None);
    // Reported to the Webhook subscribed to contact.opted_out, once.
    site.call(
        "POST",
        "/v1/contacts/c1/opt-out",
        Some(json!({"medium": "sms", "source": "again"})),
    )
    .await;
    let events = opted_out_events(&site.herald).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["contact_id"], "c1", "{events:?}");
    assert_eq!(events[0]["data"]["medium"], "sms");
    assert_eq!(events[0]["data"]["source"], "stop-keyword");

    let (status, _) = site
        .call(
            "POST",
            "/v1/contacts/c1/opt-in",
            Some(json!({"medium": "email", "source": "newsletter-form"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = site
        .call(
            "POST",
            "/v1/contacts/c1/opt-in",
            Some(json!({"medium": "sms", "source": "support-call"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, read) = site.call("GET", "/v1/contacts/c1", None).await;
    let sms = &read["media"]["sms"];
    assert_eq!(sms["opted_in"], true, "{read}");
    assert_eq!(sms["opted_out"], false);
    assert_eq!(sms["opted_in_source"], "support-call");
    // The opt-out stays on record, with how it came.
    assert_eq!(sms["opted_out_source"], "stop-keyword");
    assert_eq!(read["media"]["email"]["opted_in_source"], "newsletter-form");
    assert_eq!(read["media"]["email"]["opted_in"], true);

    let (status, body) = site
        .call(
            "POST",
            "/v1/contacts/c1/opt-in",
            Some(json!({"medium": "fax", "source": "x"})),
        )
        .await;
    assert_eq!(status, 422);
    assert!(message(&body).starts_with("medium: "), "{body}");
    let (status, body) = site
        .call(
            "POST",
            "/v1/contacts/c1/opt-out",
            Some(json!({"medium": "sms"})),
        )
        .await;
    assert_eq!(status, 422);
    assert!(message(&body).starts_with("source: "), "{body}");
    let (status, _) = site
        .call(
            "POST",
            "/v1/contacts/ghost/opt-in",
            Some(json!({"medium": "sms", "source": "x"})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_csv_import_reports_bad_rows_by_line_and_strict_imports_nothing() {
    let site = Site::start();
    let csv = "id,name,phone,tags\n\
               c1,Ana,+51987654321,vip\n\
               c2,Bad,12,\n\
               c3,Carla,+51912345678,\n";
    let (status, body) = site.import("", csv).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid");
    assert_eq!(body["committed"], true);
    assert_eq!(body["imported"], 2);
    assert_eq!(body["created"], 2);
    assert_eq!(
        body["errors"],
        json!([{"line": 3, "field": "phone", "message": body["errors"][0]["message"]}])
    );
    assert!(message(&body).contains("line 3"), "{body}");
    let (status, read) = site.call("GET", "/v1/contacts/c3", None).await;
    assert_eq!(status, 200);
    assert_eq!(read["phone"], "+51912345678");
    let (status, _) = site.call("GET", "/v1/contacts/c2", None).await;
    assert_eq!(status, 404);

    // strict: one bad row and nothing is written.
    let csv = "id,name,email\nc4,Dora,dora@example.com\nc5,Eve,nope\n";
    let (status, body) = site.import("?strict=true", csv).await;
    assert_eq!(status, 422);
    assert_eq!(body["committed"], false);
    assert_eq!(body["imported"], 0);
    assert_eq!(body["errors"][0]["line"], 3);
    assert_eq!(body["errors"][0]["field"], "email");
    let (status, _) = site.call("GET", "/v1/contacts/c4", None).await;
    assert_eq!(status, 404);

    // All good: 200, and an update is counted as one.
    let (status, body) = site.import("", "id,name\nc1,Ana María\nc9,New\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["updated"].as_u64(), body["created"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(body.get("error"), None);

    let (status, body) = site.import("", "name,phone\nAna,+51987654321\n").await;
    assert_eq!(status, 422);
    assert!(message(&body).starts_with("line 1: "), "{body}");

    let response = site
        .request(reqwest::Method::POST, "/v1/contacts/import")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn an_import_may_be_larger_than_the_apis_default_body_limit() {
    let site = Site::start();
    let mut csv = String::from("id,name,phone,city\n");
    let mut n = 0;
    while csv.len() < 1_500_000 {
        n += 1;
        csv.push_str(&format!(
            "bulk-{n:06},Contact number {n},+5198{n:07},A rather long city name for padding\n"
        ));
    }
    let (status, body) = site.import("", &csv).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], n);
}

#[tokio::test]
async fn the_export_reimports_to_the_same_contacts() {
    let site = Site::start();
    let example = std::fs::read_to_string(EXAMPLE_CSV).unwrap();
    let (status, body) = site.import("", &example).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], 41);
    let exported = site.export().await;
    assert_eq!(exported.lines().count(), 42);
    assert!(exported.starts_with("id,name,phone,email,telegram,locale,timezone,country,created_at,tags,opted_in,opted_out,last_inbound_at,last_inbound_medium,"));

    // The same CSV as the CLI's export of the same store…
    let cli = Command::cargo_bin("herald")
        .unwrap()
        .args(["contacts", "export", "--db"])
        .arg(&site.herald.db)
        .output()
        .unwrap();
    assert!(cli.status.success());
    assert_eq!(String::from_utf8(cli.stdout).unwrap(), exported);

    // …and imported into a fresh store, it exports the same again.
    let fresh = tempfile::tempdir().unwrap();
    let file = fresh.path().join("export.csv");
    std::fs::write(&file, &exported).unwrap();
    let db = fresh.path().join("fresh.db");
    let import = Command::cargo_bin("herald")
        .unwrap()
        .arg("contacts")
        .arg("import")
        .arg(&file)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert!(import.status.success(), "{import:?}");
    let again = Command::cargo_bin("herald")
        .unwrap()
        .args(["contacts", "export", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), exported);
}

/// `herald audience SEGMENT --format json` against the server's store.
fn audience(dir: &Path, db: &Path, segment: &str) -> Value {
    let out = Command::cargo_bin("herald")
        .unwrap()
        .args([
            "audience", segment, "--format", "json", "--sample", "100", "--dir",
        ])
        .arg(dir)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_segment_preview_counts_what_herald_audience_counts() {
    let site = Site::start();
    let example = std::fs::read_to_string(EXAMPLE_CSV).unwrap();
    assert_eq!(site.import("", &example).await.0, 200);
    for segment in ["vip", "peru", "all-contacts"] {
        let (status, preview) = site
            .call(
                "GET",
                &format!("/v1/segments/{segment}/preview?sample=100"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{preview}");
        let cli = audience(&site.herald.dir, &site.herald.db, segment);
        assert_eq!(preview["count"], cli["count"], "{segment}");
        assert!(preview["count"].as_u64().unwrap() > 0, "{segment}");
        let ids = |v: &Value| -> Vec<Value> {
            v["sample"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].clone())
                .collect()
        };
        assert_eq!(ids(&preview), ids(&cli), "{segment}");
    }
    let (_, preview) = site.call("GET", "/v1/segments/vip/preview", None).await;
    assert!(preview["sample"].as_array().unwrap().len() <= 10);
    let (_, preview) = site
        .call("GET", "/v1/segments/vip/preview?sample=0", None)
        .await;
    assert_eq!(preview["sample"], json!([]));

    let (status, body) = site.call("GET", "/v1/segments/vipp/preview", None).await;
    assert_eq!(status, 404);
    assert!(message(&body).contains("did you mean `vip`"), "{body}");
    let (status, body) = site
        .call("GET", "/v1/segments/vip/preview?sample=500", None)
        .await;
    assert_eq!(status, 422);
    assert!(message(&body).starts_with("sample: "), "{body}");
}

#[tokio::test]
async fn contacts_are_the_operators_even_to_read() {
    let site = Site::start();
    site.call("PUT", "/v1/contacts/c1", Some(ana())).await;
    for path in [
        "/v1/contacts/c1",
        "/v1/contacts/export",
        "/v1/segments/vip/preview",
    ] {
        let viewer = site
            .client
            .get(site.herald.url(path))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        assert_eq!(viewer.status(), 403, "{path}");
        let anonymous = site.client.get(site.herald.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
    }
    // Secrets and personal data stay out of the log.
    let log = site.herald.log_text();
    assert!(!log.contains(OPERATOR), "{log}");
    assert!(!log.contains("+51987654321"), "{log}");
}

/// The payloads of the `contact.opted_out` events in the webhook outbox.
async fn opted_out_events(herald: &Herald) -> Vec<Value> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT payload FROM webhook_outbox WHERE event_type = 'contact.opted_out' ORDER BY id",
    )
    .fetch_all(&mut herald.db().await)
    .await
    .unwrap();
    rows.iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect()
}
