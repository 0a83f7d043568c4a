//! E-mail unsubscribe links: the target of the `List-Unsubscribe` header the `email_smtp`
//! channel puts on every message (RFC 2369, one-click per RFC 8058).
//!
//! `GET /v1/unsubscribe/{token}` only shows a page with a button: mail scanners and link
//! previews fetch links, so a GET must change nothing. `POST` with the form field
//! `List-Unsubscribe=One-Click` (what a mail client's one-click unsubscribe and the page's
//! button send) opts the contact out of e-mail, source `unsubscribe_link`, once: repeating
//! it changes nothing. RFC 8058 section 3.1 has the mail receiver send that field as
//! `multipart/form-data` (RFC 7578, SHOULD) or `application/x-www-form-urlencoded` (MAY),
//! so both are read, chosen by the request's `Content-Type`; any other type, or none, is
//! read as url-encoded, as it was before multipart was understood.
//! Unauthenticated: the token is the credential. It names the channel and the contact and
//! carries an HMAC under the channel's key
//! ([`email_smtp::unsubscribe_token`]); a token that does not verify with the key of an
//! `email_smtp` channel in force is answered 404 and changes nothing.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::channels::email_smtp::{self, UnsubscribeToken};
use crate::secrets::SecretResolver;
use crate::spec::channel::{ChannelType, Medium};
use crate::store::unsubscribe::Unsubscribed;

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(confirm_page, unsubscribe))
        // The routes are open to anyone holding a link: a one-click body is a few hundred
        // bytes in either encoding, so nothing bigger is read (the inner layer wins over
        // the API's default limit).
        .layer(DefaultBodyLimit::max(ONE_CLICK_BODY_LIMIT))
}

/// The largest POST body read: `List-Unsubscribe=One-Click` is 26 bytes url-encoded and a
/// few hundred as multipart/form-data (boundaries, part headers); this leaves room for a
/// sender that adds a field or two.
pub const ONE_CLICK_BODY_LIMIT: usize = 8 * 1024;

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
/// The body must be a form with the field `List-Unsubscribe=One-Click`, as
/// `multipart/form-data` or `application/x-www-form-urlencoded`. Idempotent: a contact
/// opted out already stays as it is. A token that does not verify is 404 and changes
/// nothing.
#[utoipa::path(post, path = "/v1/unsubscribe/{token}", tag = "unsubscribe",
    params(("token" = String, Path, description = "The token of the List-Unsubscribe link")),
    request_body(
        content(
            (String = "multipart/form-data"),
            (String = "application/x-www-form-urlencoded")
        ),
        description = "A form with the one field `List-Unsubscribe=One-Click` (RFC 8058)"),
    responses(
        (status = 200, description = "The contact is opted out of e-mail", body = String, content_type = "text/html"),
        (status = 404, description = "The token does not verify, or its contact no longer exists", body = ErrorBody),
        (status = 413, description = "The body is over 8 KiB", body = ErrorBody),
        (status = 422, description = "The body has no `List-Unsubscribe=One-Click` field", body = ErrorBody)
    ))]
async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let token = verified(&state, &token).await?;
    if !one_click_form(request, &state).await? {
        return Err(not_one_click(None));
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
    let spec = super::channel_spec(&stored).ok_or_else(not_found)?;
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

/// Whether the request's body is a form with `List-Unsubscribe=One-Click`, read as
/// multipart/form-data when its `Content-Type` says so, else as url-encoded.
async fn one_click_form(request: Request, state: &AppState) -> Result<bool, ApiError> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_multipart_form);
    if !multipart {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => too_large(e.body_text()),
                _ => ApiError::bad_request(format!("cannot read the body: {}", e.body_text())),
            })?;
        return Ok(is_one_click(&body));
    }
    // A multipart/form-data type without a usable boundary cannot hold the field.
    let mut form = Multipart::from_request(request, state)
        .await
        .map_err(|e| not_one_click(Some(e.body_text())))?;
    let failed =
        |e: axum::extract::multipart::MultipartError| unreadable(e.status(), e.body_text());
    while let Some(field) = form.next_field().await.map_err(failed)? {
        if field.name() == Some(ONE_CLICK_NAME) {
            let value = field.text().await.map_err(failed)?;
            if value.trim() == ONE_CLICK_VALUE {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

const ONE_CLICK_NAME: &str = "List-Unsubscribe";
const ONE_CLICK_VALUE: &str = "One-Click";

/// Whether a `Content-Type` is multipart/form-data (media types are case-insensitive).
fn is_multipart_form(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// The 422 of a body without the one-click field; `detail` says why a multipart body could
/// not be read as a form.
fn not_one_click(detail: Option<String>) -> ApiError {
    let message = "the body must be a form with List-Unsubscribe=One-Click";
    match detail {
        Some(detail) => ApiError::invalid(ONE_CLICK_NAME, format!("{message} ({detail})")),
        None => ApiError::invalid(ONE_CLICK_NAME, message),
    }
}

/// A multipart body that could not be read: 413 over [`ONE_CLICK_BODY_LIMIT`], 422 a
/// malformed form (it has no readable one-click field), else 400 (e.g. the client stopped
/// sending).
fn unreadable(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(text),
        StatusCode::BAD_REQUEST => not_one_click(Some(text)),
        _ => ApiError::bad_request(format!("cannot read the body: {text}")),
    }
}

fn too_large(text: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", text)
}

/// Whether a url-encoded body has `List-Unsubscribe=One-Click`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_type_picks_the_encoding() {
        // What a mail provider sends (RFC 7578): the boundary as a parameter, any case.
        assert!(is_multipart_form("multipart/form-data; boundary=x"));
        assert!(is_multipart_form("Multipart/Form-Data;boundary=\"x y\""));
        // Anything else is read as url-encoded, as before multipart was understood.
        assert!(!is_multipart_form("application/x-www-form-urlencoded"));
        assert!(!is_multipart_form("multipart/mixed; boundary=x"));
        assert!(!is_multipart_form("text/plain"));
    }

    #[test]
    fn a_url_encoded_body_needs_the_exact_pair() {
        assert!(is_one_click(b"List-Unsubscribe=One-Click"));
        assert!(is_one_click(b"a=b&List-Unsubscribe=One-Click\r\n"));
        assert!(!is_one_click(b"List-Unsubscribe=one-click"));
        assert!(!is_one_click(b"X-List-Unsubscribe=One-Click"));
        assert!(!is_one_click(b""));
    }
}
