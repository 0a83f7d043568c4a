//! A small client of herald's own HTTP API, for the commands that act on a running daemon
//! (`runs`, `trigger`, `send-test`).
//!
//! The server is `--url` (or `HERALD_URL`); the token is read from `HERALD_TOKEN` only,
//! never from a flag, because command lines show in `ps` and shell histories. The token
//! is sent as a bearer header marked sensitive and never printed. The API's error answers
//! (`{"error": {"code", "message"}}`) become [`ApiCallError::Api`] with the server's
//! message; a server that cannot be reached is named by its URL.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where the daemon is.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// The daemon's base URL. The token is read from HERALD_TOKEN.
    #[arg(
        long,
        env = "HERALD_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub url: String,
}

/// The environment variable holding the API token.
pub const TOKEN_ENV: &str = "HERALD_TOKEN";

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    /// Nothing answered at the URL (refused, no route, timed out).
    #[error("cannot reach herald at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error.
    #[error("{message}{}", hint(*status))]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from {url}: {reason}")]
    Unexpected { url: String, reason: String },
}

impl ApiCallError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiCallError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => " (set HERALD_TOKEN to a token the server accepts)",
        403 => " (HERALD_TOKEN's role is not allowed to do this)",
        _ => "",
    }
}

/// A client of one daemon.
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `args.url`, with the token from `HERALD_TOKEN` (none if unset: guarded
    /// routes then answer 401, which says so).
    pub fn new(args: &ApiArgs) -> anyhow::Result<ApiClient> {
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty());
        ApiClient::with_token(&args.url, token)
    }

    pub fn with_token(url: &str, token: Option<String>) -> anyhow::Result<ApiClient> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--url {url}: use http://HOST:PORT or https://HOST");
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("herald-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ApiClient {
            base,
            token: token.map(|t| t.trim().to_string()),
            http,
        })
    }

    /// The daemon's base URL, as given.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` (e.g. `/v1/runs?limit=5`), decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiCallError> {
        self.call(reqwest::Method::GET, path, None::<&()>).await
    }

    /// `POST path` with `body` as JSON (or an empty body), decoded as `T`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<T, ApiCallError> {
        self.call(reqwest::Method::POST, path, body).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<T, ApiCallError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let unreachable = |e: reqwest::Error| ApiCallError::Unreachable {
            url: self.base.clone(),
            reason: reason(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let body: Option<crate::http::error::ErrorBody> = serde_json::from_slice(&bytes).ok();
            return Err(match body {
                Some(body) => ApiCallError::Api {
                    status: status.as_u16(),
                    code: body.error.code,
                    message: body.error.message,
                },
                None => ApiCallError::Api {
                    status: status.as_u16(),
                    code: "error".into(),
                    message: format!(
                        "{url} answered {status}{}",
                        if status.as_u16() == 404 {
                            " (is this herald's address?)"
                        } else {
                            ""
                        }
                    ),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiCallError::Unexpected {
            url,
            reason: e.to_string(),
        })
    }
}

/// What went wrong with a request, in a few words (reqwest's own text repeats the URL).
fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the request timed out".to_string()
    } else if e.is_connect() {
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        let mut last = None;
        while let Some(s) = source {
            last = Some(s.to_string());
            source = s.source();
        }
        last.map_or_else(
            || "cannot connect".to_string(),
            |s| format!("cannot connect ({s})"),
        )
    } else {
        e.to_string()
    }
}
