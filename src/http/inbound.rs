//! `POST /v1/inbound/{channel}`: replies and delivery receipts posted by a channel's
//! provider, dispatched on the channel's type. No bearer token: each provider's request
//! carries its own proof, checked before the body is parsed.
//!
//! - `webhook`: the gateway behind the channel. The request must be signed per Standard
//!   Webhooks with the channel's `webhook.secret` (the headers `webhook-id`,
//!   `webhook-timestamp` and `webhook-signature` over the raw body), checked before the
//!   body is read. The webhook-id is the request's idempotency key: a repeat changes
//!   nothing and gets the first answer again, with `duplicate: true`.
//! - `telegram`: Bot API updates, with the `X-Telegram-Bot-Api-Secret-Token` header equal
//!   to the channel's `telegram.webhook_secret` (compared in constant time). The update id
//!   is the idempotency key (`telegram-<update_id>`); updates other than text messages and
//!   button presses are acknowledged and ignored, since Telegram re-sends until it gets a
//!   2xx. See [`crate::channels::telegram`].
//! - `whatsapp_cloud`: Meta's webhook notifications, signed in `X-Hub-Signature-256`
//!   (HMAC-SHA256 of the raw body with `whatsapp_cloud.app_secret`). Each status
//!   (`delivered`, `read`, `failed`) is a receipt keyed `whatsapp-status-<wamid>-<status>`,
//!   each text or button message a reply keyed `whatsapp-message-<wamid>`, so Meta's
//!   re-deliveries change nothing. `GET /v1/inbound/{channel}` answers Meta's verification
//!   handshake with `hub.challenge` when `hub.verify_token` is the channel's
//!   `verify_token`. See [`crate::channels::whatsapp_cloud`].
//! - `sms_twilio` and `whatsapp_twilio`: Twilio's status callbacks and incoming messages,
//!   form-encoded and signed in `X-Twilio-Signature` (HMAC-SHA1 with the channel's
//!   `auth_token` over the URL Twilio called and the sorted parameters). That URL is the
//!   channel's `public_url`, else the daemon's `--public-url`, followed by the request's
//!   path and query: without either, the signature cannot be checked and callbacks are
//!   refused (503). A status (`delivered`, `read`, `undelivered`, `failed`) is a receipt
//!   keyed `twilio-status-<MessageSid>-<status>`; an incoming message a reply keyed
//!   `twilio-message-<MessageSid>`, answered with an empty TwiML `<Response/>`. See
//!   [`crate::channels::twilio`].
//!
//! What a reply or a receipt does is [`crate::webhooks::inbound`]'s; this adapter checks,
//! parses, records, starts the follow-up campaigns a reply's rules ask for, and answers.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};
use crate::channels::{telegram, twilio, whatsapp_cloud};
use crate::engine::Trigger;
use crate::secrets::SecretResolver;
use crate::signing::{self, SigningKey};
use crate::spec::Object;
use crate::spec::channel::{ChannelSpec, ChannelType};
use crate::store::inbound::Inbound;
use crate::webhooks::inbound::{
    self as logic, FollowUpAnswer, InboundBody, InboundChannel, InboundMessage, ReceiptAnswer,
    ReplyAnswer,
};

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(inbound, verify))
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

/// A reply or a delivery receipt from a channel's provider.
///
/// `webhook` channels: signed per Standard Webhooks with the channel's `webhook.secret`; a
/// channel without a secret refuses inbound requests (403). `telegram` channels: a Bot API
/// update, with `X-Telegram-Bot-Api-Secret-Token` equal to `telegram.webhook_secret`
/// (401 when missing or wrong, 403 when the channel sets none); text messages and button
/// presses are replies, other updates are acknowledged and ignored. `whatsapp_cloud`
/// channels: a notification signed in `X-Hub-Signature-256` with `whatsapp_cloud.app_secret`
/// (401 when missing or wrong, 403 when the channel sets none); its statuses are receipts
/// and its text and button messages replies. `sms_twilio` and `whatsapp_twilio` channels:
/// a form-encoded status callback or incoming message signed in `X-Twilio-Signature` over
/// the public URL (the channel's `public_url`, else `--public-url`) and the sorted
/// parameters (401 when missing or wrong, 503 when no public URL is configured); an
/// incoming message is answered with an empty TwiML `<Response/>` (`text/xml`). A reply
/// updates the sender's last inbound time, applies opt-out / opt-in keywords, and runs the
/// `on_reply` rules of the campaign of the latest delivery to the contact on this channel
/// within 7 days. A receipt moves its
/// delivery forward only (`sent → delivered → read`, or `→ failed`).
#[utoipa::path(post, path = "/v1/inbound/{channel}", tag = "inbound",
    params(("channel" = String, Path, description = "The channel's name (a webhook, telegram, whatsapp_cloud, sms_twilio or whatsapp_twilio channel)")),
    request_body(content = InboundBody, content_type = "application/json",
        description = "webhook: a reply (`from`, `text`, `received_at`) or a receipt (`message_id`, `status`, `error`); telegram: a Bot API Update; whatsapp_cloud: a webhook notification; sms_twilio and whatsapp_twilio: Twilio's form-encoded status callback (`MessageSid`, `MessageStatus`, `ErrorCode`) or incoming message (`MessageSid`, `From`, `Body`, `ButtonPayload`)"),
    responses(
        (status = 200, description = "Recorded (or a repeat of a recorded request: `duplicate: true`); a Twilio incoming message gets an empty TwiML `<Response/>`; a Telegram button press gets `{\"method\": \"answerCallbackQuery\", \"callback_query_id\": …}`, which Telegram runs",
            content((InboundAnswer = "application/json"), (String = "text/xml"))),
        (status = 400, description = "The body is not JSON (Twilio: not a UTF-8 form)", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong signature headers; nothing changed", body = super::error::ErrorBody),
        (status = 403, description = "The channel has no secret to check signatures with", body = super::error::ErrorBody),
        (status = 404, description = "No webhook, telegram, whatsapp_cloud or Twilio channel of that name in force, or (webhook channels) no delivery with the receipt's `message_id` (yet: retry later); Twilio and WhatsApp Cloud receipts that come early are kept instead (`pending: true`)", body = super::error::ErrorBody),
        (status = 422, description = "A field is invalid; the message names it", body = super::error::ErrorBody),
        (status = 503, description = "The channel's secret cannot be resolved, or (Twilio) no public URL is configured to check signatures with", body = super::error::ErrorBody)
    ))]
async fn inbound(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec = channel_spec(&state, &channel).await?;
    let json = match spec.channel_type.value {
        ChannelType::Webhook => webhook_inbound(&state, &channel, &spec, &headers, &body).await,
        ChannelType::Telegram => telegram_inbound(&state, &channel, &spec, &headers, &body).await,
        ChannelType::WhatsappCloud => {
            whatsapp_inbound(&state, &channel, &spec, &headers, &body).await
        }
        ChannelType::SmsTwilio | ChannelType::WhatsappTwilio => {
            return twilio_inbound(&state, &channel, &spec, &uri, &headers, &body).await;
        }
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "channel `{channel}` is of type {}: it takes no inbound callbacks here",
                other.as_str()
            ),
        )),
    };
    json.map(IntoResponse::into_response)
}

/// A webhook channel's gateway: Standard Webhooks signature, then the documented body.
async fn webhook_inbound(
    state: &AppState,
    channel: &str,
    spec: &ChannelSpec,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<serde_json::Value>, ApiError> {
    let (inbound_channel, key) = webhook_key(state, channel, spec)?;
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
        body,
        state.now().as_second(),
        signing::DEFAULT_TOLERANCE_SECONDS,
    )
    .map_err(|e| signature_error(format!("the request's signature does not verify: {e}")))?;
    if let Some(first) = state.store.inbound_answer(channel, webhook_id).await? {
        return Ok(Json(duplicate(first)));
    }
    let json = json_body(body)?;
    let message = logic::parse(&json).map_err(|e| ApiError::invalid(e.field, e.message))?;
    let now = state.now();
    match message {
        InboundMessage::Receipt(receipt) => {
            // The sender is the operator's own gateway: a 404 tells it to retry later.
            let answer =
                record_receipt(state, &inbound_channel, webhook_id, &receipt, false, now).await?;
            answer.map(Json).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "no delivery through channel `{channel}` has the message id `{}` (yet); \
                         nothing changed, retry later",
                        receipt.message_id
                    ),
                )
            })
        }
        InboundMessage::Reply(reply) => {
            record_reply(state, &inbound_channel, webhook_id, &reply).await
        }
    }
}

/// Records a reply, starts the follow-ups its rules ask for, and answers.
async fn record_reply(
    state: &AppState,
    inbound_channel: &InboundChannel,
    webhook_id: &str,
    reply: &logic::Reply,
) -> Result<Json<serde_json::Value>, ApiError> {
    let recorded = logic::record_reply(
        &state.store,
        inbound_channel,
        webhook_id,
        reply,
        state.now(),
    )
    .await?;
    let mut recorded = match recorded {
        Inbound::Duplicate(first) => return Ok(Json(duplicate(first))),
        Inbound::Recorded { outcome, .. } => outcome,
    };
    if !recorded.follow_ups.is_empty() {
        recorded.answer.follow_ups = start_follow_ups(state, &recorded.follow_ups).await;
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

/// The query of Meta's verification handshake.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Handshake {
    /// `subscribe`.
    #[serde(rename = "hub.mode")]
    #[param(rename = "hub.mode")]
    mode: Option<String>,
    /// Must equal the channel's `whatsapp_cloud.verify_token`.
    #[serde(rename = "hub.verify_token")]
    #[param(rename = "hub.verify_token")]
    verify_token: Option<String>,
    /// Echoed back when the token matches.
    #[serde(rename = "hub.challenge")]
    #[param(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// WhatsApp Cloud's webhook verification handshake.
///
/// Meta calls it once when the callback URL is configured: with `hub.mode=subscribe` and
/// `hub.verify_token` equal to the channel's `whatsapp_cloud.verify_token` the answer is
/// `hub.challenge` as plain text; anything else is refused.
#[utoipa::path(get, path = "/v1/inbound/{channel}", tag = "inbound",
    params(("channel" = String, Path, description = "The whatsapp_cloud channel's name"), Handshake),
    responses(
        (status = 200, description = "The challenge, echoed", body = String, content_type = "text/plain"),
        (status = 403, description = "Wrong mode or verify token, or the channel has no verify_token", body = super::error::ErrorBody),
        (status = 404, description = "No whatsapp_cloud channel of that name in force", body = super::error::ErrorBody),
        (status = 422, description = "hub.challenge is missing", body = super::error::ErrorBody),
        (status = 503, description = "The verify token cannot be resolved", body = super::error::ErrorBody)
    ))]
async fn verify(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Query(handshake): Query<Handshake>,
) -> Result<String, ApiError> {
    let spec = channel_spec(&state, &channel).await?;
    let settings = match (&spec.channel_type.value, &spec.whatsapp_cloud) {
        (ChannelType::WhatsappCloud, Some(settings)) => &settings.value,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "channel `{channel}` is not a whatsapp_cloud channel: it has no verification handshake"
                ),
            ));
        }
    };
    let forbidden = |message: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", message);
    let expected = settings.verify_token.as_ref().ok_or_else(|| {
        forbidden(format!(
            "channel `{channel}` has no `whatsapp_cloud.verify_token` to answer the handshake with"
        ))
    })?;
    let expected = resolve_secret(&state, &channel, "verify token", expected)?;
    if handshake.mode.as_deref() != Some("subscribe") {
        return Err(forbidden("hub.mode must be subscribe".into()));
    }
    let given = handshake.verify_token.unwrap_or_default();
    let matches: bool =
        subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.expose().as_bytes()).into();
    if !matches {
        return Err(forbidden(
            "hub.verify_token does not match the channel's verify_token".into(),
        ));
    }
    handshake
        .challenge
        .ok_or_else(|| ApiError::invalid("hub.challenge", "is required"))
}

/// A WhatsApp Cloud notification: the X-Hub-Signature-256 over the raw body, then each
/// status and message in it.
async fn whatsapp_inbound(
    state: &AppState,
    channel: &str,
    spec: &ChannelSpec,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<serde_json::Value>, ApiError> {
    let inbound_channel = inbound_channel(channel, spec)?;
    let secret = required_secret(
        state,
        channel,
        "whatsapp_cloud.app_secret",
        spec.whatsapp_cloud
            .as_ref()
            .and_then(|s| s.value.app_secret.as_ref()),
        "notifications need it to check their signatures",
        "app secret",
    )?;
    let signature = headers
        .get(whatsapp_cloud::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| signature_error("the X-Hub-Signature-256 header is missing"))?;
    if !whatsapp_cloud::signature_matches(secret.expose(), signature, body) {
        return Err(signature_error(
            "the X-Hub-Signature-256 header does not verify with the channel's app_secret",
        ));
    }
    let json = json_body(body)?;
    let events = whatsapp_cloud::parse_notification_by_number(&json)
        .map_err(|(field, message)| ApiError::invalid(field, message))?;
    let now = state.now();
    let own_number = spec
        .whatsapp_cloud
        .as_ref()
        .map(|s| s.value.phone_number_id.value.as_str());
    let mut siblings: HashMap<String, Option<InboundChannel>> = HashMap::new();
    let mut answers = Vec::with_capacity(events.len());
    for (number, event) in events {
        // Another number of the same Meta app: recorded on its own channel.
        let inbound_channel = match number.filter(|n| Some(n.as_str()) != own_number) {
            None => &inbound_channel,
            Some(number) => {
                if !siblings.contains_key(&number) {
                    let sibling = whatsapp_sibling(state, &number, &secret).await?;
                    siblings.insert(number.clone(), sibling);
                }
                siblings[&number].as_ref().unwrap_or(&inbound_channel)
            }
        };
        match event {
            whatsapp_cloud::Event::Ignored => {
                answers.push(serde_json::json!({"kind": "ignored"}));
            }
            whatsapp_cloud::Event::Reply { key, reply } => {
                let Json(answer) = record_reply(state, inbound_channel, &key, &reply).await?;
                answers.push(answer);
            }
            whatsapp_cloud::Event::Receipt { key, receipt } => {
                // Meta may call back before the send is recorded; an unknown wamid waits
                // (instead of a 404 Meta would retry for days for a number also used
                // outside herald).
                let answer =
                    record_receipt(state, inbound_channel, &key, &receipt, true, now).await?;
                // Kept early receipts never come back as `None`.
                answers.push(answer.unwrap_or_else(|| serde_json::json!({"kind": "ignored"})));
            }
        }
    }
    Ok(Json(
        serde_json::json!({"kind": "notification", "events": answers}),
    ))
}

/// The whatsapp_cloud channel in force for business number `number` whose app secret is
/// `secret` (the one the notification was verified with: the same Meta app), if any.
async fn whatsapp_sibling(
    state: &AppState,
    number: &str,
    secret: &crate::secrets::SecretString,
) -> Result<Option<InboundChannel>, ApiError> {
    let stored = state.store.channels_in_force().await?;
    let resolver = SecretResolver::new(&state.dir);
    for object in crate::reconcile::rebuild_specs(&stored).objects {
        let Object::Channel(doc) = object else {
            continue;
        };
        let Some(settings) = doc.spec.whatsapp_cloud.as_ref() else {
            continue;
        };
        let same_app = settings
            .value
            .app_secret
            .as_ref()
            .and_then(|s| resolver.resolve(s).ok())
            .is_some_and(|s| s.expose() == secret.expose());
        if settings.value.phone_number_id.value == number && same_app {
            return Ok(InboundChannel::from_spec(
                &doc.metadata.name.value,
                &doc.spec,
            ));
        }
    }
    Ok(None)
}

/// A Twilio callback: the X-Twilio-Signature over the public URL and the sorted form
/// parameters, then the status callback (a receipt) or incoming message (a reply).
async fn twilio_inbound(
    state: &AppState,
    channel: &str,
    spec: &ChannelSpec,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let inbound_channel = inbound_channel(channel, spec)?;
    let (block, settings) = match spec.channel_type.value {
        ChannelType::WhatsappTwilio => ("whatsapp_twilio", spec.whatsapp_twilio.as_ref()),
        _ => ("sms_twilio", spec.sms_twilio.as_ref()),
    };
    let settings = settings
        .ok_or_else(|| ApiError::internal(format!("channel {channel} has no `{block}` block")))?;
    // Twilio signs the URL it called, which only the operator knows: behind a proxy it is
    // not the address herald listens on.
    let public_url = settings
        .public_url
        .as_ref()
        .map(|u| u.value.clone())
        .or_else(|| state.public_url.clone())
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "channel `{channel}` cannot check X-Twilio-Signature: Twilio signs the URL it calls, \
                 so herald needs its public URL; set `{block}.public_url` in the channel or start \
                 herald with --public-url"
            ))
        })?;
    let token = resolve_secret(state, channel, "auth token", &settings.auth_token)?;
    let signature = headers
        .get(twilio::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| signature_error("the X-Twilio-Signature header is missing"))?;
    let params = twilio::parse_form(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a form: {e}")))?;
    let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}{path_and_query}", public_url.trim_end_matches('/'));
    if !twilio::signature_matches(token.expose(), signature, &url, &params) {
        return Err(signature_error(format!(
            "the X-Twilio-Signature header does not verify with the channel's auth_token for {url}"
        )));
    }
    let event = twilio::parse_callback(&params)
        .map_err(|(field, message)| ApiError::invalid(field, message))?;
    match event {
        twilio::Event::Ignored { status } => Ok(Json(serde_json::json!({
            "duplicate": false,
            "kind": "ignored",
            "status": status,
        }))
        .into_response()),
        twilio::Event::Receipt { key, receipt } => {
            // Twilio never retries a status callback: one that beats the send's record waits.
            let answer =
                record_receipt(state, &inbound_channel, &key, &receipt, true, state.now()).await?;
            let answer = answer.ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "no delivery through channel `{channel}` has the message id `{}` (yet); nothing changed",
                        receipt.message_id
                    ),
                )
            })?;
            Ok(Json(answer).into_response())
        }
        twilio::Event::Reply { key, reply } => {
            // The answer is TwiML, not the reply's JSON: Twilio would send any text in it to
            // the sender. What the reply did is in the store and the `message.replied` event.
            let Json(_recorded) = record_reply(state, &inbound_channel, &key, &reply).await?;
            Ok((
                [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                twilio::EMPTY_TWIML,
            )
                .into_response())
        }
    }
}

/// A Telegram bot's update: the secret token header, then the Update.
///
/// A `callback_query` (a button press) is answered with the method call
/// `{"method": "answerCallbackQuery", "callback_query_id": ...}` instead of the reply's
/// outcome: until the query is answered the user's client shows a progress indicator on
/// the button, and Telegram runs one method call found in a webhook's answer, which saves
/// a request of herald's own. Other updates get the outcome as before.
async fn telegram_inbound(
    state: &AppState,
    channel: &str,
    spec: &ChannelSpec,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<serde_json::Value>, ApiError> {
    let inbound_channel = inbound_channel(channel, spec)?;
    let secret = required_secret(
        state,
        channel,
        "telegram.webhook_secret",
        spec.telegram
            .as_ref()
            .and_then(|s| s.value.webhook_secret.as_ref()),
        "inbound updates need one to be checked",
        "webhook secret",
    )?;
    let given = headers
        .get(telegram::SECRET_TOKEN_HEADER)
        .ok_or_else(|| signature_error("the X-Telegram-Bot-Api-Secret-Token header is missing"))?;
    let matches: bool =
        subtle::ConstantTimeEq::ct_eq(given.as_bytes(), secret.expose().as_bytes()).into();
    if !matches {
        return Err(signature_error(
            "the X-Telegram-Bot-Api-Secret-Token header does not match the channel's webhook_secret",
        ));
    }
    let json = json_body(body)?;
    let answer = match telegram::parse_update(&json)
        .map_err(|(field, message)| ApiError::invalid(field, message))?
    {
        telegram::Update::Ignored { update_id } => Json(serde_json::json!({
            "duplicate": false,
            "kind": "ignored",
            "update_id": update_id,
        })),
        telegram::Update::Reply { update_id, reply } => {
            let webhook_id = format!("telegram-{update_id}");
            record_reply(state, &inbound_channel, &webhook_id, &reply).await?
        }
    };
    // Every press is answered, also one herald ignores (no `data`) or a repeat: Telegram
    // re-sends an update whose answer it did not get, and the spinner is still turning.
    // Answering a query twice only makes Telegram refuse the second call, which nobody
    // sees (the result of a method call in a webhook's answer is not reported).
    match json["callback_query"]["id"]
        .as_str()
        .filter(|id| !id.is_empty())
    {
        Some(id) => Ok(Json(serde_json::json!({
            "method": "answerCallbackQuery",
            "callback_query_id": id,
        }))),
        None => Ok(answer),
    }
}

/// Records a receipt (`keep_early`: one that comes before the send's record waits for it)
/// and answers with what it did, or with the first answer again for a repeat. `None` when no
/// delivery has its message id.
async fn record_receipt(
    state: &AppState,
    inbound_channel: &InboundChannel,
    key: &str,
    receipt: &logic::Receipt,
    keep_early: bool,
    now: jiff::Timestamp,
) -> Result<Option<serde_json::Value>, ApiError> {
    let recorded =
        logic::record_receipt(&state.store, inbound_channel, key, receipt, keep_early, now).await?;
    Ok(match recorded {
        None => None,
        Some(Inbound::Duplicate(first)) => Some(duplicate(first)),
        Some(Inbound::Recorded { outcome, .. }) => {
            Some(serde_json::to_value(outcome).map_err(ApiError::internal)?)
        }
    })
}

/// A stored first answer, marked as a repeat.
fn duplicate(mut first: serde_json::Value) -> serde_json::Value {
    if let Some(map) = first.as_object_mut() {
        map.insert("duplicate".into(), serde_json::Value::Bool(true));
    }
    first
}

/// The spec of the channel `name` in force.
async fn channel_spec(state: &AppState, name: &str) -> Result<ChannelSpec, ApiError> {
    let stored = state.store.channel_in_force(name).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no channel named `{name}` is in force"),
        )
    })?;
    super::channel_spec(&stored)
        .ok_or_else(|| ApiError::internal(format!("the stored channel {name} cannot be read")))
}

/// A webhook channel as inbound callbacks see it, and the key its requests are signed with.
fn webhook_key(
    state: &AppState,
    name: &str,
    spec: &ChannelSpec,
) -> Result<(InboundChannel, SigningKey), ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no webhook channel named `{name}` is in force"),
        )
    };
    let inbound_channel = InboundChannel::from_spec(name, spec).ok_or_else(not_found)?;
    let secret = required_secret(
        state,
        name,
        "webhook.secret",
        spec.webhook.as_ref().and_then(|s| s.value.secret.as_ref()),
        "inbound callbacks need one to check their signatures",
        "secret",
    )?;
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

/// The resolved value of a channel's inbound credential `setting` (e.g.
/// `telegram.webhook_secret`): 403 when the channel has none (`need` says why it is
/// needed), 503 when it is set but cannot be resolved (`what` names it in the message).
fn required_secret(
    state: &AppState,
    channel: &str,
    setting: &str,
    secret: Option<&crate::spec::values::Secret>,
    need: &str,
    what: &str,
) -> Result<crate::secrets::SecretString, ApiError> {
    let secret = secret.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("channel `{channel}` has no `{setting}`: {need}"),
        )
    })?;
    resolve_secret(state, channel, what, secret)
}

/// The resolved value of a channel's credential, or 503 naming it (`what`).
fn resolve_secret(
    state: &AppState,
    channel: &str,
    what: &str,
    secret: &crate::spec::values::Secret,
) -> Result<crate::secrets::SecretString, ApiError> {
    SecretResolver::new(&state.dir)
        .resolve(secret)
        .map_err(|e| {
            ApiError::unavailable(format!(
                "the {what} of channel `{channel}` cannot be resolved: {e}"
            ))
        })
}

/// The channel as inbound callbacks see it (every channel that reaches here has a medium).
fn inbound_channel(channel: &str, spec: &ChannelSpec) -> Result<InboundChannel, ApiError> {
    InboundChannel::from_spec(channel, spec)
        .ok_or_else(|| ApiError::internal(format!("channel {channel} has no medium")))
}

/// The body as JSON, or 400.
fn json_body(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}
