//! The HTTP endpoint `herald serve` answers on `--listen` (DESIGN.md section 5).
//!
//! One module per area, each returning its routes as an [`OpenApiRouter`] so that the
//! OpenAPI document at `/openapi.json` is generated from the handlers themselves:
//!
//! - here: `/healthz`, `/readyz`, `/openapi.json`, and the layers every route shares (a
//!   body size limit, a timeout, JSON error answers, tracing with the token redacted);
//! - [`auth`]: bearer tokens and the [`Viewer`](auth::Viewer) / [`Operator`](auth::Operator)
//!   / [`Admin`](auth::Admin) extractors that guard routes;
//! - [`status`]: the revision in force, the last reload, campaigns and runs;
//! - [`control`]: trigger, pause, resume, cancel, test sends;
//! - [`reports`]: a run's deliveries, paginated, and CSV / XLSX exports;
//! - [`contacts`]: the contacts API and segment previews;
//! - [`inbound`]: replies and receipts from providers;
//! - [`metrics`]: Prometheus `/metrics`;
//! - [`page`]: the HTML status page at `/`;
//! - [`unsubscribe`]: e-mail unsubscribe links (RFC 8058 one-click).
//!
//! Unauthenticated: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and the provider
//! callbacks under `/v1/inbound` (which check their own signatures). Everything else takes
//! a token with a role.

pub mod auth;
pub mod contacts;
pub mod control;
pub mod error;
pub mod inbound;
pub mod metrics;
pub mod page;
pub mod reports;
pub mod status;
pub mod unsubscribe;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::sync::watch;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::{Clock, Engine};
use crate::reconcile::rebuild_specs;
use crate::spec::Object;
use crate::spec::channel::ChannelSpec;
use crate::store::Store;
use crate::store::revisions::StoredSpec;
pub use auth::{Caller, Role, Tokens};
pub use error::ApiError;

/// The largest request body accepted by default (a route may raise it, e.g. CSV imports).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The longest a request may take to produce its answer's head. A streamed export's body
/// may take longer: the timeout covers the handler, not the stream.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// The run engine, for control routes; `None` when the daemon runs with a substitute
    /// (tests), and control routes then answer 503.
    pub engine: Option<Engine>,
    pub tokens: Arc<Tokens>,
    pub clock: Arc<dyn Clock>,
    /// The campaign directory (base of `${file:}` secrets).
    pub dir: PathBuf,
    /// The URL providers reach herald at (`--public-url`), for callback signatures and
    /// unsubscribe links; `None` when not configured.
    pub public_url: Option<String>,
    /// The revision in force, as the reconciler last published it.
    pub revision: watch::Receiver<Option<i64>>,
}

impl AppState {
    /// The engine, or 503 when this daemon runs without one.
    pub fn engine(&self) -> Result<&Engine, ApiError> {
        self.engine
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("the run engine is not running"))
    }

    pub fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }
}

/// A download: `body` as the file `filename`, never cached.
fn attachment(
    content_type: &'static str,
    filename: &str,
    body: axum::body::Body,
) -> axum::response::Response {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response()
}

/// Unix milliseconds as RFC 3339 (UTC); the number itself when it is no instant.
fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// The spec of a stored Channel; `None` if it does not read as one.
fn channel_spec(stored: &StoredSpec) -> Option<ChannelSpec> {
    rebuild_specs(std::slice::from_ref(stored))
        .objects
        .into_iter()
        .find_map(|o| match o {
            Object::Channel(doc) => Some(doc.spec),
            _ => None,
        })
}

/// A whole-number query parameter: `default` when absent or empty, else a number in
/// `range`, or 422 naming `field`.
fn number_param(
    field: &str,
    text: Option<&str>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ApiError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(default);
    };
    text.parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!(
                    "`{text}` is not a number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// A `true` / `false` query parameter: `None` when absent or empty, or 422 naming `field`.
fn bool_param(field: &str, text: Option<&str>) -> Result<Option<bool>, ApiError> {
    match text {
        None | Some("") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(text) => Err(ApiError::invalid(
            field,
            format!("`{text}` is not true or false"),
        )),
    }
}

/// The OpenAPI document's fixed parts; paths and schemas come from the handlers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "herald",
        description = "Bulk messaging campaigns kept as code: status, control, contacts, reports and provider callbacks."
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerSecurity)
)]
struct ApiDoc;

/// Declares the `bearer` security scheme that guarded routes refer to.
struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route, with its OpenAPI description.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
        .merge(status::routes())
        .merge(control::routes())
        .merge(reports::routes())
        .merge(contacts::routes())
        .merge(inbound::routes())
        .merge(metrics::routes())
        .merge(page::routes())
        .merge(unsubscribe::routes())
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| api().split_for_parts().1)
}

/// The whole HTTP service over `state`.
pub fn router(state: AppState) -> axum::Router {
    use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
    use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
    use tower_http::trace::TraceLayer;
    let (routes, _) = api().split_for_parts();
    routes
        .fallback(|| async { ApiError::not_found("such route") })
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyTimeoutLayer::new(REQUEST_TIMEOUT))
        // Requests at debug level. A 5xx answer is not logged again here: a handler's
        // failure is logged with its cause by `ApiError::internal`, and a 503 from
        // /readyz while starting is no error.
        .layer(
            TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
        // Tokens never reach a log line, even at trace level.
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::header::COOKIE,
        ]))
        .with_state(state)
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "the process is up", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// A revision is in force, so campaigns can be sent.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "a revision is in force", body = String),
        (status = 503, description = "no revision is in force yet", body = error::ErrorBody)
    ))]
async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    let revision = *state.revision.borrow();
    match revision {
        Some(id) => (StatusCode::OK, format!("ready: revision {id} in force\n")).into_response(),
        None => ApiError::unavailable("not ready: no revision in force").into_response(),
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
async fn openapi_json() -> axum::Json<&'static utoipa::openapi::OpenApi> {
    axum::Json(openapi())
}
