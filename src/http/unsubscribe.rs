//! E-mail unsubscribe links: the target of the `List-Unsubscribe` header the `email_smtp`
//! channel puts on every message (RFC 2369, one-click per RFC 8058).
//!
//! `GET /v1/unsubscribe/{token}` only shows a page with a button: mail scanners and link
//! previews fetch links, so a GET must change nothing. `POST` with the body
//! `List-Unsubscribe=One-Click` (what a mail client's one-click unsubscribe and the page's
//! button send) opts the contact out of e-mail, source `unsubscribe_link`, once: repeating
//! it changes nothing. Unauthenticated: the token is the credential. It names the channel
//! and the contact and carries an HMAC under the channel's key
//! ([`email_smtp::unsubscribe_token`]); a token that does not verify with the key of an
//! `email_smtp` channel in force is answered 404 and changes nothing.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::channels::email_smtp::{self, UnsubscribeToken};
use crate::reconcile::{StoredObject, rebuild};
use crate::secrets::SecretResolver;
use crate::spec::Object;
use crate::spec::channel::{ChannelType, Medium};
use crate::store::unsubscribe::Unsubscribed;

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(confirm_page, unsubscribe))
}

/// The page behind an unsubscribe link: a button that posts the one-click body.
///
/// Changes nothing (mail scanners fetch links). A token that does not verify is 404.
#[utoipa::path(get, path = "/v1/unsubscribe/{token}", tag = "unsubscribe",
    params(("token" = String, Path, description = "The token of the List-Unsubscribe link")),
    responses(
        (status = 200, description = "A page with an Unsubscribe button", body = String, content_type = "text/html"),
        (status = 404, description = "The token does not verify", body = ErrorBody)
    ))]
async fn confirm_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    verified(&state, &token).await?;
    let body = format!(
        "<form method=\"post\" action=\"{path}{token}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <p>Stop receiving these e-mails?</p>\
         <button type=\"submit\">Unsubscribe</button></form>",
        path = email_smtp::UNSUBSCRIBE_PATH,
    );
    Ok(html_page("Unsubscribe", &body))
}

/// One-click unsubscribe (RFC 8058): opts the link's contact out of e-mail.
///
/// The body must be `List-Unsubscribe=One-Click` (form-encoded). Idempotent: a contact
/// opted out already stays as it is. A token that does not verify is 404 and changes
/// nothing.
#[utoipa::path(post, path = "/v1/unsubscribe/{token}", tag = "unsubscribe",
    params(("token" = String, Path, description = "The token of the List-Unsubscribe link")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "`List-Unsubscribe=One-Click`"),
    responses(
        (status = 200, description = "The contact is opted out of e-mail", body = String, content_type = "text/html"),
        (status = 404, description = "The token does not verify, or its contact no longer exists", body = ErrorBody),
        (status = 422, description = "The body is not `List-Unsubscribe=One-Click`", body = ErrorBody)
    ))]
async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = verified(&state, &token).await?;
    if !is_one_click(&body) {
        return Err(ApiError::invalid(
            "List-Unsubscribe",
            "the body must be List-Unsubscribe=One-Click",
        ));
    }
    let now = state.now().as_millisecond();
    let done = state
        .store
        .opt_out_by_unsubscribe_link(&token.contact_id, Medium::Email, &token.channel, now)
        .await?;
    match done {
        Unsubscribed::OptedOut => {
            tracing::info!(channel = %token.channel, "a contact unsubscribed through a link");
        }
        Unsubscribed::AlreadyOptedOut => {}
        Unsubscribed::NoSuchContact => {
            return Err(ApiError::not_found(
                "contact for this link (it was deleted)",
            ));
        }
    }
    Ok(html_page(
        "Unsubscribed",
        "<p>You are unsubscribed: you will receive no more of these e-mails.</p>",
    ))
}

/// The token, checked against the key of the `email_smtp` channel it names. Every way of
/// failing is the same 404, so an answer tells nothing about which part was wrong.
async fn verified(state: &AppState, token: &str) -> Result<UnsubscribeToken, ApiError> {
    let not_found = || ApiError::not_found("unsubscribe link with this token");
    let parsed = UnsubscribeToken::parse(token).ok_or_else(not_found)?;
    let stored = state
        .store
        .channel_in_force(&parsed.channel)
        .await?
        .ok_or_else(not_found)?;
    let spec = rebuild(&[StoredObject::from(&stored)])
        .objects
        .into_iter()
        .find_map(|o| match o {
            Object::Channel(doc) => Some(doc.spec),
            _ => None,
        })
        .ok_or_else(not_found)?;
    let settings = match (spec.channel_type.value, &spec.email_smtp) {
        (ChannelType::EmailSmtp, Some(settings)) => &settings.value,
        _ => return Err(not_found()),
    };
    let key =
        email_smtp::unsubscribe_key(&parsed.channel, settings, &SecretResolver::new(&state.dir))
            .map_err(|e| {
                ApiError::unavailable(format!(
                    "the unsubscribe key of channel `{}` cannot be resolved: {e}",
                    parsed.channel
                ))
            })?
            .ok_or_else(not_found)?;
    if !parsed.verifies(key.expose().as_bytes()) {
        return Err(not_found());
    }
    Ok(parsed)
}

/// Whether a form-encoded body has `List-Unsubscribe=One-Click`.
fn is_one_click(body: &[u8]) -> bool {
    String::from_utf8_lossy(body)
        .trim()
        .split('&')
        .any(|pair| pair == "List-Unsubscribe=One-Click")
}

fn html_page(title: &str, body: &str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
             <body>{body}</body></html>"
        ),
    )
        .into_response()
}
