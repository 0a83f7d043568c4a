//! Every route in /openapi.json, walked with no token, a wrong token and each role's token
//! against the real server: the answer must be 401, 403 or let through exactly as the
//! route's declared role says, and the declared roles must be the ones the issue sets
//! (viewer reads, operator controls runs and touches contacts, health and provider
//! callbacks open).

#[path = "support/server.rs"]
mod server;

use server::{ADMIN, Herald, OPERATOR, Scratch, VIEWER};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Viewer,
    Operator,
    Admin,
}

fn role_named(name: &str) -> Role {
    match name {
        "viewer" => Role::Viewer,
        "operator" => Role::Operator,
        "admin" => Role::Admin,
        other => panic!("unknown role `{other}` declared in the OpenAPI document"),
    }
}

/// The role a route needs by the rules; `None`: open.
fn expected_role(method: &str, path: &str) -> Option<Role> {
    const OPEN: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];
    if OPEN.contains(&path)
        || path.starts_with("/v1/inbound")
        || path.starts_with("/v1/unsubscribe")
    {
        return None;
    }
    // Contacts are personal data: reading them is the operator's too.
    if path.starts_with("/v1/contacts") || path.ends_with("/preview") {
        return Some(Role::Operator);
    }
    if method == "get" {
        Some(Role::Viewer)
    } else {
        Some(Role::Operator)
    }
}

/// A concrete URL path for a templated one.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{name}", "welcome-new-contacts")
        .replace("{channel}", "sms-gateway")
        .replace("{tag}", "vip")
        .replace("{medium}", "sms")
        .replace("{campaign}", "welcome-new-contacts")
        .replace("{segment}", "all-contacts")
}

async fn call(
    client: &reqwest::Client,
    herald: &Herald,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> u16 {
    let url = herald.url(&concrete(path));
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = client.request(method.clone(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
        request = request
            .header("content-type", "application/json")
            .body("{}");
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_route_enforces_its_declared_role() {
    let scratch = Scratch::example();
    let herald = scratch.start();
    let client = reqwest::Client::new();
    let doc = herald.get_json("/openapi.json", None).await;
    let paths = doc["paths"].as_object().expect("the document lists paths");
    let mut walked = 0;
    let mut problems = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            walked += 1;
            let declared = operation["security"]
                .as_array()
                .and_then(|s| s.first())
                .and_then(|s| s["bearer"].as_array())
                .map(|scopes| {
                    role_named(scopes.first().and_then(|r| r.as_str()).unwrap_or("viewer"))
                });
            let expected = expected_role(method, path);
            if declared != expected {
                problems.push(format!(
                    "{method} {path}: declared {declared:?}, the issue's rules say {expected:?}"
                ));
            }
            let anonymous = call(&client, &herald, method, path, None).await;
            let wrong = call(&client, &herald, method, path, Some("not-a-token")).await;
            match declared {
                None => {
                    // Open routes ignore bearer tokens (provider callbacks check their own
                    // signatures, so they may well answer 401 — but the same 401 either way).
                    if wrong != anonymous {
                        problems.push(format!(
                            "{method} {path}: open, yet a wrong token changes the answer ({anonymous} → {wrong})"
                        ));
                    }
                    if !path.starts_with("/v1/inbound") && (anonymous == 401 || anonymous == 403) {
                        problems.push(format!("{method} {path}: open, yet answers {anonymous}"));
                    }
                }
                Some(needed) => {
                    if anonymous != 401 {
                        problems.push(format!("{method} {path}: no token → {anonymous}, want 401"));
                    }
                    if wrong != 401 {
                        problems.push(format!("{method} {path}: wrong token → {wrong}, want 401"));
                    }
                    for (role, token) in [
                        (Role::Viewer, VIEWER),
                        (Role::Operator, OPERATOR),
                        (Role::Admin, ADMIN),
                    ] {
                        let status = call(&client, &herald, method, path, Some(token)).await;
                        let allowed = role >= needed;
                        let refused = status == 401 || status == 403;
                        if allowed && refused {
                            problems
                                .push(format!("{method} {path}: {role:?} refused with {status}"));
                        }
                        if !allowed && status != 403 {
                            problems
                                .push(format!("{method} {path}: {role:?} → {status}, want 403"));
                        }
                    }
                }
            }
        }
    }
    assert!(walked >= 3, "the document lists {walked} operations");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    herald.stop();
}

#[tokio::test]
async fn a_token_is_accepted_as_a_basic_password_and_answers_name_the_scheme() {
    let scratch = Scratch::example();
    let herald = scratch.start();
    let client = reqwest::Client::new();
    let refused = client.get(herald.url("/v1/status")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(" | ");
    assert!(
        challenge.contains("Bearer") && challenge.contains("Basic"),
        "{challenge}"
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let basic = client
        .get(herald.url("/v1/status"))
        .basic_auth("anyone", Some(VIEWER))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    herald.stop();
}
