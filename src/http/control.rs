//! Run control for operators: start a campaign now, pause, resume and cancel a run, and
//! send a test of a campaign to one contact. Each route calls the run engine (503 when the
//! daemon runs without one) and answers with the run as [`status`](super::status) shows it.
//!
//! A manual trigger is refused (409) while the campaign already has a run that may still
//! send: a second click must not message the whole audience twice. A test send is a run
//! of its own (`trigger: test`) to one contact, allowed while the campaign is disabled or
//! running, and never counted in the campaign's figures.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Operator;
use super::error::ErrorBody;
use super::status::{RunView, parse_run_id, run_view};
use super::{ApiError, AppState};
use crate::engine::Trigger;

/// A run just created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StartedRun {
    pub run_id: i64,
    /// Where to follow it: `/v1/runs/{run_id}`.
    pub url: String,
}

/// A test send's recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TestSendRequest {
    /// The contact's external id (as imported).
    pub contact_id: String,
}

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(trigger_campaign))
        .routes(routes!(test_send))
        .routes(routes!(pause_run))
        .routes(routes!(resume_run))
        .routes(routes!(cancel_run))
}

/// 201 with the new run and a `Location` header pointing at it.
fn created(run_id: i64) -> Response {
    let url = format!("/v1/runs/{run_id}");
    (
        StatusCode::CREATED,
        [(header::LOCATION, url.clone())],
        Json(StartedRun { run_id, url }),
    )
        .into_response()
}

/// Starts a run of the campaign now (manual trigger), pinned to the revision in force.
#[utoipa::path(post, path = "/v1/campaigns/{name}/trigger", tag = "control",
    security(("bearer" = ["operator"])),
    params(("name" = String, Path, description = "the campaign's metadata.name")),
    responses(
        (status = 201, description = "the run was created; follow it at `url`", body = StartedRun),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no campaign of that name is in force", body = ErrorBody),
        (status = 409, description = "the campaign is disabled, or already has a run that may still send", body = ErrorBody),
        (status = 503, description = "no revision is in force, or no run engine", body = ErrorBody)
    ))]
async fn trigger_campaign(
    caller: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    // Checked here, not in one transaction with the start: two triggers within the same
    // instant can both pass. This guards against the common double click, not a race.
    if let Some((run, status)) = state.store.active_run_of(&name).await? {
        return Err(ApiError::conflict(format!(
            "campaign `{name}` already has run {run} {status}; cancel it or wait for it to finish"
        )));
    }
    let run = engine.start_run(&name, Trigger::Manual).await?;
    tracing::info!(campaign = %name, run, by = %caller.0.name, "triggered by an operator");
    Ok(created(run))
}

/// Sends the campaign to one contact, as a test: a run of its own, marked `test`, never
/// counted in the campaign's figures. Consent and opt-outs still apply; a disabled
/// campaign can be tested.
#[utoipa::path(post, path = "/v1/campaigns/{name}/test", tag = "control",
    security(("bearer" = ["operator"])),
    params(("name" = String, Path, description = "the campaign's metadata.name")),
    request_body = TestSendRequest,
    responses(
        (status = 201, description = "the test run was created; follow it at `url`", body = StartedRun),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no such campaign in force, or no such contact (named)", body = ErrorBody),
        (status = 422, description = "the body is invalid (the field is named)", body = ErrorBody),
        (status = 503, description = "no revision is in force, or no run engine", body = ErrorBody)
    ))]
async fn test_send(
    caller: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<TestSendRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON (Content-Type: application/json)",
        ),
        JsonRejection::JsonDataError(e) => ApiError::invalid("body", e.body_text()),
        other => ApiError::from(other),
    })?;
    let contact_id = request.contact_id.trim();
    if contact_id.is_empty() {
        return Err(ApiError::invalid("contact_id", "must not be empty"));
    }
    let engine = state.engine()?;
    let run = engine
        .start_run(
            &name,
            Trigger::Test {
                contact_id: contact_id.to_string(),
            },
        )
        .await?;
    tracing::info!(campaign = %name, run, contact = %contact_id, by = %caller.0.name, "test send");
    Ok(created(run))
}

/// Pauses a run: no more deliveries are claimed; those being sent finish and are recorded.
/// Pausing a paused run is not an error.
#[utoipa::path(post, path = "/v1/runs/{id}/pause", tag = "control",
    security(("bearer" = ["operator"])),
    params(("id" = i64, Path, description = "the run's id")),
    responses(
        (status = 200, description = "the run, now paused", body = RunView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no run has this id", body = ErrorBody),
        (status = 409, description = "the run is over (finished, cancelled, failed or skipped)", body = ErrorBody),
        (status = 422, description = "the id is not an integer", body = ErrorBody),
        (status = 503, description = "no run engine", body = ErrorBody)
    ))]
async fn pause_run(
    caller: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let id = parse_run_id(&id)?;
    state.engine()?.pause(id).await?;
    tracing::info!(run = id, by = %caller.0.name, "paused by an operator");
    Ok(Json(run_view(&state, id).await?))
}

/// Resumes a paused run.
#[utoipa::path(post, path = "/v1/runs/{id}/resume", tag = "control",
    security(("bearer" = ["operator"])),
    params(("id" = i64, Path, description = "the run's id")),
    responses(
        (status = 200, description = "the run, running again", body = RunView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no run has this id", body = ErrorBody),
        (status = 409, description = "the run is not paused, or its campaign is disabled", body = ErrorBody),
        (status = 422, description = "the id is not an integer", body = ErrorBody),
        (status = 503, description = "no run engine", body = ErrorBody)
    ))]
async fn resume_run(
    caller: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let id = parse_run_id(&id)?;
    state.engine()?.resume(id).await?;
    tracing::info!(run = id, by = %caller.0.name, "resumed by an operator");
    Ok(Json(run_view(&state, id).await?))
}

/// Cancels a run: its pending and retrying deliveries become `cancelled`; those being sent
/// finish and are recorded as what they became.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "control",
    security(("bearer" = ["operator"])),
    params(("id" = i64, Path, description = "the run's id")),
    responses(
        (status = 200, description = "the run, now cancelled", body = RunView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no run has this id", body = ErrorBody),
        (status = 409, description = "the run is over (finished, cancelled, failed or skipped)", body = ErrorBody),
        (status = 422, description = "the id is not an integer", body = ErrorBody),
        (status = 503, description = "no run engine", body = ErrorBody)
    ))]
async fn cancel_run(
    caller: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let id = parse_run_id(&id)?;
    state.engine()?.cancel(id).await?;
    tracing::warn!(run = id, by = %caller.0.name, "cancelled by an operator");
    Ok(Json(run_view(&state, id).await?))
}
