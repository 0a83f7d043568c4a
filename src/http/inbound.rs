//! `POST /v1/inbound/{channel}`: replies and delivery receipts posted by the gateway behind
//! a `webhook` channel. No bearer token: the request must be signed per Standard Webhooks
//! with the channel's `webhook.secret` (the headers `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` over the raw body), checked before the body is read. The
//! webhook-id is the request's idempotency key: a repeat changes nothing and gets the
//! first answer again, with `duplicate: true`.
//!
//! What a reply or a receipt does is [`crate::webhooks::inbound`]'s; this adapter checks,
//! parses, records, starts the follow-up campaigns a reply's rules ask for, and answers.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};
use crate::engine::Trigger;
use crate::reconcile::{StoredObject, rebuild};
use crate::secrets::SecretResolver;
use crate::signing::{self, SigningKey};
use crate::spec::Object;
use crate::spec::channel::ChannelType;
use crate::store::inbound::Inbound;
use crate::webhooks::inbound::{
    self as logic, FollowUpAnswer, InboundBody, InboundChannel, InboundMessage, ReceiptAnswer,
    ReplyAnswer,
};

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(inbound))
}

/// The answer: a reply's or a receipt's.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documents the answer's shapes; the handler answers their JSON
enum InboundAnswer {
    Reply(ReplyAnswer),
    Receipt(ReceiptAnswer),
}

fn signature_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", message)
}

/// A reply or a delivery receipt from a webhook channel's gateway.
///
/// Signed per Standard Webhooks with the channel's `webhook.secret`; a channel without a
/// secret refuses inbound requests (403). A reply updates the sender's last inbound time,
/// applies opt-out / opt-in keywords, and runs the `on_reply` rules of the campaign of the
/// latest delivery to the contact on this channel within 7 days. A receipt moves its
/// delivery forward only (`sent → delivered → read`, or `→ failed`).
#[utoipa::path(post, path = "/v1/inbound/{channel}", tag = "inbound",
    params(("channel" = String, Path, description = "The webhook channel's name")),
    request_body(content = InboundBody, content_type = "application/json",
        description = "A reply (`from`, `text`, `received_at`) or a receipt (`message_id`, `status`, `error`)"),
    responses(
        (status = 200, description = "Recorded (or a repeat of a recorded request: `duplicate: true`)", body = InboundAnswer),
        (status = 400, description = "The body is not JSON", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong signature headers; nothing changed", body = super::error::ErrorBody),
        (status = 403, description = "The channel has no secret to check signatures with", body = super::error::ErrorBody),
        (status = 404, description = "No webhook channel of that name in force, or no delivery with the receipt's `message_id` (yet: retry later)", body = super::error::ErrorBody),
        (status = 422, description = "A field is invalid; the message names it", body = super::error::ErrorBody),
        (status = 503, description = "The channel's secret cannot be resolved", body = super::error::ErrorBody)
    ))]
async fn inbound(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (inbound_channel, key) = channel_and_key(&state, &channel).await?;
    let header = |name: &str| -> Result<&str, ApiError> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| signature_error(format!("the {name} header is missing")))
    };
    let webhook_id = header(signing::HEADER_ID)?;
    signing::verify(
        &key,
        webhook_id,
        header(signing::HEADER_TIMESTAMP)?,
        header(signing::HEADER_SIGNATURE)?,
        &body,
        state.now().as_second(),
        signing::DEFAULT_TOLERANCE_SECONDS,
    )
    .map_err(|e| signature_error(format!("the request's signature does not verify: {e}")))?;
    if let Some(first) = state.store.inbound_answer(&channel, webhook_id).await? {
        return Ok(Json(duplicate(first)));
    }
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let message = logic::parse(&json).map_err(|e| ApiError::invalid(e.field, e.message))?;
    let now = state.now();
    match message {
        InboundMessage::Receipt(receipt) => {
            match logic::record_receipt(&state.store, &inbound_channel, webhook_id, &receipt, now)
                .await?
            {
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "no delivery through channel `{channel}` has the message id `{}` (yet); \
                         nothing changed, retry later",
                        receipt.message_id
                    ),
                )),
                Some(Inbound::Duplicate(first)) => Ok(Json(duplicate(first))),
                Some(Inbound::Recorded { outcome, .. }) => Ok(Json(
                    serde_json::to_value(outcome).map_err(ApiError::internal)?,
                )),
            }
        }
        InboundMessage::Reply(reply) => {
            let recorded =
                logic::record_reply(&state.store, &inbound_channel, webhook_id, &reply, now)
                    .await?;
            let mut recorded = match recorded {
                Inbound::Duplicate(first) => return Ok(Json(duplicate(first))),
                Inbound::Recorded { outcome, .. } => outcome,
            };
            if !recorded.follow_ups.is_empty() {
                recorded.answer.follow_ups = start_follow_ups(&state, &recorded.follow_ups).await;
                let answer = serde_json::to_value(&recorded.answer).map_err(ApiError::internal)?;
                // The reply is recorded already: a failure here only loses the run ids
                // from the answer a repeat would get.
                if let Err(e) = state
                    .store
                    .set_inbound_answer(recorded.event, &answer)
                    .await
                {
                    tracing::error!(error = %e, "cannot store the answer of an inbound reply");
                }
            }
            Ok(Json(
                serde_json::to_value(&recorded.answer).map_err(ApiError::internal)?,
            ))
        }
    }
}

/// A stored first answer, marked as a repeat.
fn duplicate(mut first: serde_json::Value) -> serde_json::Value {
    if let Some(map) = first.as_object_mut() {
        map.insert("duplicate".into(), serde_json::Value::Bool(true));
    }
    first
}

/// The webhook channel `name` in force and the key its requests are signed with.
async fn channel_and_key(
    state: &AppState,
    name: &str,
) -> Result<(InboundChannel, SigningKey), ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no webhook channel named `{name}` is in force"),
        )
    };
    let stored = state
        .store
        .channel_in_force(name)
        .await?
        .ok_or_else(not_found)?;
    let loaded = rebuild(&[StoredObject::from(&stored)]);
    let spec = loaded
        .objects
        .into_iter()
        .find_map(|o| match o {
            Object::Channel(doc) => Some(doc.spec),
            _ => None,
        })
        .ok_or_else(|| ApiError::internal(format!("the stored channel {name} cannot be read")))?;
    if spec.channel_type.value != ChannelType::Webhook {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "channel `{name}` is of type {}: inbound callbacks here are for webhook channels",
                spec.channel_type.value.as_str()
            ),
        ));
    }
    let inbound_channel = InboundChannel::from_spec(name, &spec).ok_or_else(not_found)?;
    let secret = spec
        .webhook
        .as_ref()
        .and_then(|w| w.value.secret.as_ref())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "channel `{name}` has no `webhook.secret`: inbound callbacks need one to check their signatures"
                ),
            )
        })?;
    let secret = SecretResolver::new(&state.dir)
        .resolve(secret)
        .map_err(|e| {
            ApiError::unavailable(format!(
                "the secret of channel `{name}` cannot be resolved: {e}"
            ))
        })?;
    let key = SigningKey::from_secret(secret.expose()).map_err(|e| {
        ApiError::unavailable(format!(
            "the secret of channel `{name}` cannot be used: {e}"
        ))
    })?;
    Ok((inbound_channel, key))
}

/// Starts each follow-up campaign for its contact (trigger `reply`); a failure is logged
/// and reported in the answer, and does not undo the reply.
async fn start_follow_ups(state: &AppState, follow_ups: &[logic::FollowUp]) -> Vec<FollowUpAnswer> {
    let mut out = Vec::with_capacity(follow_ups.len());
    for f in follow_ups {
        let started = match state.engine() {
            Ok(engine) => engine
                .start_run(
                    &f.campaign,
                    Trigger::Reply {
                        contact_id: f.contact_id.clone(),
                    },
                )
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.message),
        };
        match &started {
            Ok(run) => {
                tracing::info!(campaign = %f.campaign, contact = %f.contact_id, run, "started a follow-up for a reply")
            }
            Err(e) => {
                tracing::warn!(campaign = %f.campaign, contact = %f.contact_id, error = %e, "cannot start the follow-up of a reply")
            }
        }
        out.push(FollowUpAnswer {
            campaign: f.campaign.clone(),
            run_id: started.as_ref().ok().copied(),
            error: started.err(),
        });
    }
    out
}
