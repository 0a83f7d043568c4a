//! The API's one error shape, `{"error": {"code": "...", "message": "..."}}`, with the
//! HTTP status that goes with it. Handlers return `Result<_, ApiError>`; the conversions
//! from the engine's and the store's errors live here so every route maps them the same way.
//!
//! A message never carries a secret or an internal detail: store and I/O failures are logged
//! with their cause and answered with a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::EngineError;
use crate::store::StoreError;

/// An error answer: the status, a stable machine-readable code, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: `code` is stable (branch on it), `message` is for people.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request cannot be read (bad JSON, a bad query parameter).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no token, or one that matches no configured token.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 403: the token is valid but its role may not do this.
    pub fn forbidden(needed: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {needed} role"),
        )
    }

    /// 404: `what` (e.g. "run 12", "contact `c1`") does not exist.
    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    /// 409: the thing exists but is in a state that forbids the action.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 422: well-formed but invalid input; the message names the field (or line, or row).
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("{field}: {message}"),
        )
    }

    /// 503: a part the request needs is not running (no engine, no revision yet).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500: logs `cause` and answers with a message that reveals nothing of it.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "an API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed on the server; see its log",
        )
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // Bearer for API clients; Basic (any user name, the token as password) lets a
            // browser open the status page. Two header lines: Chromium ignores a Basic
            // challenge that follows another scheme on one line.
            let headers = response.headers_mut();
            for challenge in ["Bearer realm=\"herald\"", "Basic realm=\"herald\""] {
                headers.append(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static(challenge),
                );
            }
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NoRevision => ApiError::unavailable(e.to_string()),
            EngineError::UnknownCampaign(_)
            | EngineError::UnknownContact(_)
            | EngineError::UnknownRun(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            EngineError::CampaignDisabled(_) | EngineError::InvalidState { .. } => {
                ApiError::conflict(e.to_string())
            }
            EngineError::Campaign { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
            EngineError::Store(e) => ApiError::internal(e),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    /// A JSON body the framework refused: its status (400 unreadable, 413 too large, 415
    /// not JSON, 422 wrong shape) and its text, which names the field.
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        let status = e.status();
        ApiError::new(status, code_of(status), e.body_text())
    }
}

/// The code of an error answer the framework made (its statuses are 4xx, or 500).
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        StatusCode::BAD_REQUEST => "bad_request",
        _ if status.is_server_error() => "internal",
        _ => "error",
    }
}

/// Turns the framework's own error answers (404 of an unknown route, 405, 413 of a body
/// over the limit, 408 of a timeout, a rejected JSON body) into the API's error shape, so
/// clients parse one format. Answers that are already JSON, and successes, pass untouched.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The framework's texts are short and say what was wrong (e.g. a JSON field); keep them.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty());
    let message = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    });
    let mut out = ApiError::new(status, code_of(status), message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
