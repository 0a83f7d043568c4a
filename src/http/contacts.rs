//! The contacts API and segment previews.
//!
//! Every route here takes the operator role, reads included: contacts are personal data
//! (names, phones, e-mails), and a segment preview lists who is in the segment.
//!
//! - `GET|PUT|PATCH|DELETE /v1/contacts/{id}`: one contact. PUT creates or replaces the
//!   whole contact, PATCH merges (JSON merge patch: `null` removes). Bodies are checked by
//!   [`crate::contacts::edit`] (the same value rules as a CSV row) and every bad field is
//!   named in one 422; each write is one transaction.
//! - `POST /v1/contacts/{id}/tags`, `DELETE /v1/contacts/{id}/tags/{tag}`.
//! - `POST /v1/contacts/{id}/opt-in|opt-out`: consent per medium, with its source.
//! - `POST /v1/contacts/import` (CSV, as `herald contacts import`, up to
//!   [`IMPORT_BODY_LIMIT`]) and `GET /v1/contacts/export` (CSV, streamed from one snapshot).
//! - `GET /v1/segments/{name}/preview`: a segment of the revision in force, counted and
//!   sampled.
//!
//! Because `import` and `export` are paths of their own, contacts whose id is `import` or
//! `export` cannot be reached through `/v1/contacts/{id}`.

use std::collections::BTreeMap;
use std::io::Cursor;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Operator;
use super::error::{ErrorBody, ErrorDetail};
use super::{ApiError, AppState, attachment, bool_param, number_param, rfc3339_ms};
use crate::audience::{self, AudienceError};
use crate::contacts::edit::{self, ContactEdit, EditMode, EditOutcome, FieldIssue, TagsEdit};
use crate::contacts::{CsvExport, ImportError, ImportOptions, ImportReport, RowIssue};
use crate::spec::segment::BUILT_IN_SEGMENTS;
use crate::spec::suggest::did_you_mean;
use crate::store::contacts::{ContactRecord, MediumState};

/// The largest CSV `POST /v1/contacts/import` accepts (about 500,000 contacts of the
/// example's width).
pub const IMPORT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Contacts sampled by a segment preview when the request names no `sample`.
pub const DEFAULT_SAMPLE: u32 = 10;
/// The most contacts a preview samples.
pub const MAX_SAMPLE: u32 = 100;

/// Contact exports streamed at once. Each holds a read connection (its snapshot) for as
/// long as its client takes to read; the store has four, which the engine and every other
/// request share.
const MAX_EXPORTS: usize = 2;
static EXPORTS: Semaphore = Semaphore::const_new(MAX_EXPORTS);

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    let import = OpenApiRouter::new()
        .routes(routes!(import_contacts))
        // Overrides the API's default limit for this route only (the inner layer wins).
        .layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT));
    OpenApiRouter::new()
        .routes(routes!(
            get_contact,
            put_contact,
            patch_contact,
            delete_contact
        ))
        .routes(routes!(add_tags))
        .routes(routes!(remove_tag))
        .routes(routes!(opt_in))
        .routes(routes!(opt_out))
        .routes(routes!(export_contacts))
        .routes(routes!(preview_segment))
        .merge(import)
}

/// A contact as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContactView {
    pub id: String,
    pub name: Option<String>,
    /// E.164; WhatsApp messages go to this number too.
    pub phone: Option<String>,
    pub email: Option<String>,
    /// A Telegram chat id or @username.
    pub telegram: Option<String>,
    /// BCP 47, e.g. pt-BR.
    pub locale: Option<String>,
    /// An IANA zone, e.g. America/Lima.
    pub timezone: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// Free-form values.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, Value>,
    /// Sorted.
    pub tags: Vec<String>,
    /// Consent and interaction per medium (sms, whatsapp, telegram, email); a medium with
    /// nothing recorded is absent.
    pub media: BTreeMap<String, MediumView>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC: the last change.
    pub updated_at: String,
}

/// Consent and interaction on one medium. Times are RFC 3339, UTC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MediumView {
    /// Consent given and not withdrawn since.
    pub opted_in: bool,
    /// An opt-out recorded and no consent given since.
    pub opted_out: bool,
    pub opted_in_at: Option<String>,
    /// Where the consent was given (`import`, `signup-form`, …).
    pub opted_in_source: Option<String>,
    pub opted_out_at: Option<String>,
    /// How the opt-out came (`reply` for a STOP keyword, `import`, …).
    pub opted_out_source: Option<String>,
    pub last_inbound_at: Option<String>,
    pub last_outbound_at: Option<String>,
}

/// The fields of a contact as `PUT` and `PATCH` take them. With PUT an absent field is
/// cleared (consent aside); with PATCH it is kept and `null` clears it. An empty string
/// clears a text field.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ContactBody {
    /// If given, the id in the path.
    pub id: Option<String>,
    pub name: Option<String>,
    /// E.164, e.g. +51987654321 (spaces, dashes, dots and parentheses are dropped).
    pub phone: Option<String>,
    pub email: Option<String>,
    /// A numeric chat id or @username.
    pub telegram: Option<String>,
    /// A BCP 47 tag, e.g. es-PE.
    pub locale: Option<String>,
    /// A known IANA zone, e.g. America/Lima.
    pub timezone: Option<String>,
    /// Two letters, e.g. PE.
    pub country: Option<String>,
    /// RFC 3339; defaults to the creation time.
    pub created_at: Option<String>,
    /// Free-form values; keys cannot be contact fields. PATCH merges them.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Map<String, Value>>,
    /// The whole tag set.
    pub tags: Option<Vec<String>>,
    /// Consent statements by medium; a medium left out is left as it is (consent is never
    /// withdrawn by omission).
    pub consent: Option<BTreeMap<String, ConsentBody>>,
}

/// A consent statement on one medium.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsentBody {
    /// true: consent given; false: withdrawn (an opt-out).
    pub opted_in: bool,
    /// Where it was given or withdrawn, e.g. signup-form.
    pub source: String,
}

/// `POST /v1/contacts/{id}/opt-in` and `opt-out`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsentRequest {
    /// sms, whatsapp, telegram or email.
    #[schema(example = "sms")]
    pub medium: String,
    /// Where the consent was given or withdrawn, e.g. signup-form, support-call.
    #[schema(example = "signup-form")]
    pub source: String,
}

/// `POST /v1/contacts/{id}/tags`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TagsRequest {
    /// Tags to add (those already there stay once).
    pub tags: Vec<String>,
}

/// A row of an import that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportIssue {
    /// The physical line in the CSV (the header is line 1).
    pub line: u64,
    /// The column at fault; `null` when the row as a whole is (e.g. a wrong field count).
    pub field: Option<String>,
    pub message: String,
}

/// What an import did. With bad rows, the answer is a 422 that also carries `error`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportAnswer {
    /// Present when rows were bad: `invalid` and a summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// Good rows written (created + updated + unchanged); 0 when nothing was committed.
    pub imported: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Whether the good rows were written (false under `strict=true` with a bad row).
    pub committed: bool,
    /// Every reason a row is bad, by line; bad rows are never written.
    pub errors: Vec<ImportIssue>,
    /// Things not done although the row is good (an opt-in refused after a STOP reply).
    pub warnings: Vec<ImportIssue>,
}

/// The query of `POST /v1/contacts/import`.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// `true`: import nothing if any row is bad (as `--strict`).
    pub strict: Option<String>,
}

/// The query of a segment preview.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// Contacts to sample, 0 to 100 (default 10); 0 counts only.
    pub sample: Option<String>,
}

/// A contact in a preview: who, never an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SampledView {
    pub id: String,
    pub name: Option<String>,
}

/// A segment counted and sampled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SegmentPreview {
    pub segment: String,
    /// The revision whose segments were used.
    pub revision: i64,
    pub count: u64,
    /// Lowest row keys first, so the sample is stable between calls.
    pub sample: Vec<SampledView>,
}

fn medium_view(state: &MediumState) -> MediumView {
    MediumView {
        opted_in: state.is_opted_in(),
        opted_out: state.is_opted_out(),
        opted_in_at: state.opted_in_at.map(rfc3339_ms),
        opted_in_source: state.opted_in_source.clone(),
        opted_out_at: state.opted_out_at.map(rfc3339_ms),
        opted_out_source: state.opted_out_source.clone(),
        last_inbound_at: state.last_inbound_at.map(rfc3339_ms),
        last_outbound_at: state.last_outbound_at.map(rfc3339_ms),
    }
}

impl From<ContactRecord> for ContactView {
    fn from(record: ContactRecord) -> Self {
        let d = record.data;
        ContactView {
            media: d
                .media
                .iter()
                .map(|(m, s)| (m.as_str().to_string(), medium_view(s)))
                .collect(),
            id: d.id,
            name: d.name,
            phone: d.phone,
            email: d.email,
            telegram: d.telegram,
            locale: d.locale,
            timezone: d.timezone,
            country: d.country,
            attributes: d.attributes,
            tags: d.tags.into_iter().collect(),
            created_at: rfc3339_ms(d.created_at),
            updated_at: rfc3339_ms(d.updated_at),
        }
    }
}

/// One 422 naming every bad field.
fn invalid_fields(issues: Vec<FieldIssue>) -> ApiError {
    let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", text.join("; "))
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    edit::check_id(id).map_err(|issue| invalid_fields(vec![issue]))
}

fn no_contact(id: &str) -> ApiError {
    ApiError::not_found(format_args!("contact `{id}`"))
}

/// Fields of a small JSON body (`{medium, source}`, `{tags}`): an object, with no key
/// outside `known`.
fn object_with<'a>(
    body: &'a Value,
    known: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::invalid(
            "body",
            format!("must be a JSON object with {}", known.join(" and ")),
        ));
    };
    let unknown: Vec<FieldIssue> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| {
            FieldIssue::new(
                k.clone(),
                format!("unknown field; use {}", known.join(", ")),
            )
        })
        .collect();
    if unknown.is_empty() {
        Ok(map)
    } else {
        Err(invalid_fields(unknown))
    }
}

/// Applies `edit` to contact `id` (creating it if `create`): 404 if it does not exist and
/// may not be created.
async fn save(
    state: &AppState,
    id: &str,
    edit: ContactEdit,
    create: bool,
) -> Result<(EditOutcome, ContactView), ApiError> {
    match edit::save(&state.store, id, edit, state.now(), create).await? {
        Some((outcome, record)) => Ok((outcome, record.into())),
        None => Err(no_contact(id)),
    }
}

/// Applies `edit` to the existing contact `id` and answers with it; 404 if there is none.
async fn update(
    state: &AppState,
    id: &str,
    edit: ContactEdit,
) -> Result<Json<ContactView>, ApiError> {
    Ok(Json(save(state, id, edit, false).await?.1))
}

/// One contact.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts",
    security(("bearer" = ["operator"])),
    params(("id" = String, Path, description = "the contact's external id")),
    responses(
        (status = 200, description = "the contact", body = ContactView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no such contact", body = ErrorBody)
    ))]
async fn get_contact(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ContactView>, ApiError> {
    let record = state
        .store
        .contact(&id)
        .await?
        .ok_or_else(|| no_contact(&id))?;
    Ok(Json(record.into()))
}

/// Creates or replaces a whole contact.
#[utoipa::path(put, path = "/v1/contacts/{id}", tag = "contacts",
    security(("bearer" = ["operator"])),
    params(("id" = String, Path, description = "the contact's external id")),
    request_body(content = ContactBody, content_type = "application/json"),
    responses(
        (status = 200, description = "replaced (or already so)", body = ContactView),
        (status = 201, description = "created", body = ContactView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 422, description = "a field is invalid (each one named in the message)", body = ErrorBody)
    ))]
async fn put_contact(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    checked_id(&id)?;
    let edit = edit::parse_body(&body, EditMode::Replace, &id).map_err(invalid_fields)?;
    let (outcome, view) = save(&state, &id, edit, true).await?;
    let status = match outcome {
        EditOutcome::Created => StatusCode::CREATED,
        EditOutcome::Updated | EditOutcome::Unchanged => StatusCode::OK,
    };
    Ok((status, Json(view)).into_response())
}

/// Changes some fields of a contact (JSON merge patch: `null` removes).
#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "contacts",
    security(("bearer" = ["operator"])),
    params(("id" = String, Path, description = "the contact's external id")),
    request_body(content = ContactBody, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "the contact as changed", body = ContactView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no such contact", body = ErrorBody),
        (status = 422, description = "a field is invalid (each one named in the message)", body = ErrorBody)
    ))]
async fn patch_contact(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<ContactView>, ApiError> {
    checked_id(&id)?;
    let edit = edit::parse_body(&body, EditMode::MergePatch, &id).map_err(invalid_fields)?;
    update(&state, &id, edit).await
}

/// Deletes a contact, its tags and its consent. Reports keep its past deliveries.
#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "contacts",
    security(("bearer" = ["operator"])),
    params(("id" = String, Path, description = "the contact's external id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no such contact", body = ErrorBody)
    ))]
async fn delete_contact(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_contact(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_contact(&id))
    }
}

/// Adds tags to a contact.
#[utoipa::path(post, path = "/v1/contacts/{id}/tags", tag = "contacts",
    security(("bearer" = ["operator"])),
    params(("id" = String, Path, description = "the contact's external id")),
    request_body(content = TagsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "the contact with its tags", body = ContactView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no such contact", body = ErrorBody),
        (status = 422, description = "a tag is invalid (named in the message)", body = ErrorBody)
    ))]
async fn add_tags(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<ContactView>, ApiError> {
    let fields = object_with(&body, &["tags"])?;
    let tags = match fields.get("tags") {
        Some(value) => edit::parse_tags("tags", value).map_err(invalid_fields)?,
        None => return Err(ApiError::invalid("tags", "missing: a list of tags to add")),
    };
    let edit = ContactEdit {
        tags: TagsEdit::Add(tags),
        ..ContactEdit::default()
    };
    update(&state, &id, edit).await
}

/// Removes a tag from a contact (a tag it does not have is no error).
#[utoipa::path(delete, path = "/v1/contacts/{id}/tags/{tag}", tag = "contacts",
    security(("bearer" = ["operator"])),
    params(
        ("id" = String, Path, description = "the contact's external id"),
        ("tag" = String, Path, description = "the tag to remove")
    ),
    responses(
        (status = 204, description = "the contact no longer has the tag"),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no such contact", body = ErrorBody),
        (status = 422, description = "not a valid tag", body = ErrorBody)
    ))]
async fn remove_tag(
    _: Operator,
    State(state): State<AppState>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    edit::check_tag(&tag).map_err(|e| ApiError::invalid("tag", e))?;
    let edit = ContactEdit {
        tags: TagsEdit::Remove([tag].into()),
        ..ContactEdit::default()
    };
    save(&state, &id, edit, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The string field `name` as `parse` reads it. Each problem (absent: `missing` says what
/// to give; not a string; refused by `parse`) goes to `issues`.
fn text_field<T>(
    fields: &serde_json::Map<String, Value>,
    name: &str,
    missing: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
    issues: &mut Vec<FieldIssue>,
) -> Option<T> {
    let problem = match fields.get(name) {
        Some(Value::String(text)) => match parse(text) {
            Ok(value) => return Some(value),
            Err(e) => e,
        },
        Some(_) => "must be a string".to_string(),
        None => missing.to_string(),
    };
    issues.push(FieldIssue::new(name, problem));
    None
}

/// `{medium, source}` as a consent edit.
fn consent_edit(body: &Value, opted_in: bool) -> Result<ContactEdit, ApiError> {
    let fields = object_with(body, &["medium", "source"])?;
    let mut issues = Vec::new();
    let medium = text_field(
        fields,
        "medium",
        "missing: sms, whatsapp, telegram or email",
        edit::parse_medium,
        &mut issues,
    );
    let source = text_field(
        fields,
        "source",
        "missing: say where it was given or withdrawn, e.g. signup-form",
        |s| edit::check_source(s).map(|()| s.to_string()),
        &mut issues,
    );
    match (medium, source) {
        (Some(medium), Some(source)) => Ok(ContactEdit {
            consent: [(medium, edit::ConsentChange { opted_in, source })].into(),
            ..ContactEdit::default()
        }),
        _ => Err(invalid_fields(issues)),
    }
}

/// Records consent on a medium, with where it was given. It overrides an earlier opt-out
/// (a STOP reply included): this is the contact's word, given now. Consent already given
/// keeps its first time and source.
#[utoipa::path(post, path = "/v1/contacts/{id}/opt-in", tag = "contacts",
    security(("bearer" = ["operator"])),
    params(("id" = String, Path, description = "the contact's external id")),
    request_body(content = ConsentRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "the contact with its consent", body = ContactView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no such contact", body = ErrorBody),
        (status = 422, description = "medium or source is invalid (named in the message)", body = ErrorBody)
    ))]
async fn opt_in(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<ContactView>, ApiError> {
    let edit = consent_edit(&body, true)?;
    update(&state, &id, edit).await
}

/// Records an opt-out on a medium, with how it came. An opt-out already recorded keeps its
/// first time and source.
#[utoipa::path(post, path = "/v1/contacts/{id}/opt-out", tag = "contacts",
    security(("bearer" = ["operator"])),
    params(("id" = String, Path, description = "the contact's external id")),
    request_body(content = ConsentRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "the contact with its consent", body = ContactView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no such contact", body = ErrorBody),
        (status = 422, description = "medium or source is invalid (named in the message)", body = ErrorBody)
    ))]
async fn opt_out(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<ContactView>, ApiError> {
    let edit = consent_edit(&body, false)?;
    update(&state, &id, edit).await
}

fn import_issue(issue: &RowIssue) -> ImportIssue {
    ImportIssue {
        line: issue.line,
        field: issue.column.clone(),
        message: issue.message.clone(),
    }
}

fn import_answer(report: &ImportReport) -> ImportAnswer {
    let error = (report.bad_rows > 0).then(|| {
        let shown: Vec<String> = report
            .issues
            .iter()
            .take(5)
            .map(ToString::to_string)
            .collect();
        let more = report.issues.len().saturating_sub(shown.len());
        let mut message = format!(
            "{} bad row{} ({}): line {}",
            report.bad_rows,
            if report.bad_rows == 1 { "" } else { "s" },
            if report.committed {
                "the good rows were imported"
            } else {
                "nothing was imported"
            },
            shown.join("; line ")
        );
        if more > 0 {
            message.push_str(&format!("; and {more} more in `errors`"));
        }
        ErrorDetail {
            code: "invalid".to_string(),
            message,
        }
    });
    ImportAnswer {
        error,
        imported: report.imported(),
        created: report.created,
        updated: report.updated,
        unchanged: report.unchanged,
        committed: report.committed,
        errors: report.issues.iter().map(import_issue).collect(),
        warnings: report.warnings.iter().map(import_issue).collect(),
    }
}

/// Whether the request says its body is CSV (or plain text).
fn is_csv(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(mime.as_str(), "text/csv" | "application/csv" | "text/plain")
}

/// Imports contacts from a CSV body, by the rules of `herald contacts import`.
#[utoipa::path(post, path = "/v1/contacts/import", tag = "contacts",
    security(("bearer" = ["operator"])),
    params(ImportQuery),
    request_body(content = String, content_type = "text/csv",
        description = "a header with `id`, then one contact per row (the columns of `herald contacts import`)"),
    responses(
        (status = 200, description = "every row imported", body = ImportAnswer),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 413, description = "the body is over 64 MiB", body = ErrorBody),
        (status = 415, description = "the body is not declared as text/csv", body = ErrorBody),
        (status = 422, description = "bad rows, each with its line (the good ones are imported unless strict=true); or a bad header", body = ImportAnswer)
    ))]
async fn import_contacts(
    _: Operator,
    State(state): State<AppState>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let strict = bool_param("strict", query.strict.as_deref())?.unwrap_or(false);
    if !is_csv(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the CSV with Content-Type: text/csv",
        ));
    }
    let options = ImportOptions {
        now: state.now(),
        strict,
    };
    let report = match crate::contacts::import(&state.store, Cursor::new(body), options, None).await
    {
        Ok(report) => report,
        Err(ImportError::Header(e)) => return Err(ApiError::invalid("line 1", e)),
        Err(ImportError::Read(e)) => return Err(ApiError::invalid("body", e)),
        Err(ImportError::Store(e)) => return Err(e.into()),
    };
    let answer = import_answer(&report);
    let status = if answer.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(answer)).into_response())
}

/// Every contact as CSV in the columns the import reads, streamed from one consistent
/// snapshot.
#[utoipa::path(get, path = "/v1/contacts/export", tag = "contacts",
    security(("bearer" = ["operator"])),
    responses(
        (status = 200, description = "every contact, in the import's columns", content_type = "text/csv", body = String),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 503, description = "two exports are already streaming; try again when one ends", body = ErrorBody)
    ))]
async fn export_contacts(_: Operator, State(state): State<AppState>) -> Result<Response, ApiError> {
    let permit = EXPORTS.try_acquire().map_err(|_| {
        ApiError::unavailable(format!(
            "{MAX_EXPORTS} contact exports are already streaming; try again when one ends"
        ))
    })?;
    let export = CsvExport::start(&state.store)
        .await
        .map_err(ApiError::internal)?;
    // The permit lives as long as the stream, so it is released when the body is done or
    // the client goes away.
    let stream = futures_util::stream::unfold(Some((export, permit)), |step| async move {
        let (mut export, permit) = step?;
        match export.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some((export, permit)))),
            Ok(None) => None,
            Err(e) => {
                let _ = ApiError::internal(e);
                Some((
                    Err(std::io::Error::other(
                        "the export could not be finished; see the server log",
                    )),
                    None,
                ))
            }
        }
    });
    Ok(attachment(
        "text/csv; charset=utf-8",
        "contacts.csv",
        Body::from_stream(stream),
    ))
}

/// A segment of the revision in force (or a built-in one), counted and sampled.
#[utoipa::path(get, path = "/v1/segments/{name}/preview", tag = "contacts",
    security(("bearer" = ["operator"])),
    params(("name" = String, Path, description = "the segment's metadata.name, or a built-in segment"), PreviewQuery),
    responses(
        (status = 200, description = "the segment's size and a sample of its contacts", body = SegmentPreview),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token's role is below operator", body = ErrorBody),
        (status = 404, description = "no such segment in the revision in force", body = ErrorBody),
        (status = 422, description = "`sample` is invalid", body = ErrorBody),
        (status = 503, description = "no revision is in force yet", body = ErrorBody)
    ))]
async fn preview_segment(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PreviewQuery>,
) -> Result<Json<SegmentPreview>, ApiError> {
    let sample = number_param(
        "sample",
        query.sample.as_deref(),
        DEFAULT_SAMPLE,
        0..=MAX_SAMPLE,
    )?;
    let revision = state
        .store
        .revision_in_force()
        .await?
        .ok_or_else(|| ApiError::unavailable("no revision is in force yet"))?;
    let segments = audience::segments_of(&crate::reconcile::rebuild_specs(&revision.specs));
    let compiled = match audience::compile(&name, &segments, state.now()) {
        Ok(c) => c,
        Err(AudienceError::UnknownSegment(missing)) if missing == name => {
            let names = segments.keys().map(String::as_str).chain(BUILT_IN_SEGMENTS);
            let hint = did_you_mean(&name, names)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(ApiError::not_found(format_args!(
                "segment `{name}` in revision {}{hint}",
                revision.id
            )));
        }
        // A revision in force passed validation, which rules these out.
        Err(e) => return Err(ApiError::internal(e)),
    };
    let count = state.store.segment_count(&compiled).await?;
    let sample = if sample == 0 {
        Vec::new()
    } else {
        state.store.segment_sample(&compiled, sample).await?
    };
    Ok(Json(SegmentPreview {
        segment: name,
        revision: revision.id,
        count,
        sample: sample
            .into_iter()
            .map(|c| SampledView {
                id: c.id,
                name: c.name,
            })
            .collect(),
    }))
}
