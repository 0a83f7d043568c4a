//! Per-delivery reports of a run: one row per delivery (and one per contact left out at the
//! snapshot, status `excluded`, with the reason), filtered by status, channel or medium.
//!
//! - `GET /v1/runs/{id}/deliveries`: JSON pages, keyset-paginated by delivery id behind an
//!   opaque cursor (never OFFSET: every page costs the same, see [`crate::store::reports`]).
//! - `GET /v1/runs/{id}/report.csv`: streamed; the store is read a page of
//!   [`EXPORT_PAGE`] rows at a time as the client reads, so memory stays flat whatever the
//!   run's size, and a slow client slows the reading instead of filling memory.
//! - `GET /v1/runs/{id}/report.xlsx`: an XLSX is a zip whose directory comes last, so the
//!   sheet cannot go out row by row. rust_xlsxwriter's constant-memory mode writes the rows
//!   to a temporary file (next to the store, not in a possibly memory-backed /tmp) on a
//!   blocking thread; the zip is then compressed straight into the response body. The
//!   answer's head goes out at once, so a large report is not cut by the request timeout;
//!   a failure after that aborts the body (the client sees a truncated download, and the
//!   server log says why).
//!
//! Reports are read-only (viewer). They hold contact addresses: see the docs for who
//! should get which token.

use std::collections::BTreeMap;
use std::io::Write;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Viewer;
use super::error::ErrorBody;
use super::{ApiError, AppState, attachment, number_param, rfc3339_ms};
use crate::spec::Object;
use crate::spec::channel::Medium;
use crate::store::Store;
use crate::store::deliveries::DeliveryStatus;
use crate::store::reports::{DeliveryFilter, DeliveryRow};

/// Deliveries per JSON page when the request names no `limit`.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most deliveries one JSON page holds.
pub const MAX_LIMIT: u32 = 1000;
/// Rows read from the store per query while exporting.
pub const EXPORT_PAGE: u32 = 1000;

/// The columns of the CSV and XLSX reports, in order.
pub const REPORT_COLUMNS: [&str; 14] = [
    "delivery_id",
    "contact_id",
    "channel",
    "medium",
    "address",
    "status",
    "attempts",
    "provider_message_id",
    "error",
    "created_at",
    "sent_at",
    "delivered_at",
    "read_at",
    "updated_at",
];

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_deliveries))
        .routes(routes!(report_csv))
        .routes(routes!(report_xlsx))
}

/// One delivery of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    /// The contact's external id (kept after the contact is deleted).
    pub contact_id: String,
    /// `null` for a contact left out at the snapshot (status `excluded`).
    pub channel: Option<String>,
    /// The channel's medium: sms, whatsapp, telegram or email.
    pub medium: Option<String>,
    /// The phone, e-mail or chat the message goes to, as it was at the snapshot.
    pub address: Option<String>,
    #[schema(example = "sent")]
    pub status: String,
    /// Why it was excluded, skipped, failed, expired or cancelled.
    pub reason: Option<String>,
    /// Send attempts so far.
    pub attempts: u32,
    pub provider_message_id: Option<String>,
    /// RFC 3339 UTC: when a pending or retrying delivery is due.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub sent_at: Option<String>,
    pub delivered_at: Option<String>,
    pub read_at: Option<String>,
}

/// A page of deliveries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveriesPage {
    /// By ascending id.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The filters of a report, as sent.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Only deliveries in this status: excluded, pending, sending, retry, sent, delivered,
    /// read, failed, skipped, expired, cancelled or unknown.
    pub status: Option<String>,
    /// Only deliveries on this channel (a Channel's metadata.name).
    pub channel: Option<String>,
    /// Only deliveries on channels of this medium: sms, whatsapp, telegram or email.
    pub medium: Option<String>,
}

/// The filters and page of `GET /v1/runs/{id}/deliveries`, as sent.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only deliveries in this status: excluded, pending, sending, retry, sent, delivered,
    /// read, failed, skipped, expired, cancelled or unknown.
    pub status: Option<String>,
    /// Only deliveries on this channel (a Channel's metadata.name).
    pub channel: Option<String>,
    /// Only deliveries on channels of this medium: sms, whatsapp, telegram or email.
    pub medium: Option<String>,
    /// Deliveries per page, 1 to 1000 (default 100).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A run's channels and their media, from the revision the run is pinned to.
struct RunChannels {
    run: i64,
    media: BTreeMap<String, Medium>,
}

impl RunChannels {
    /// 404 if there is no such run.
    async fn of(state: &AppState, run: i64) -> Result<RunChannels, ApiError> {
        let row = state
            .store
            .run_row(run)
            .await?
            .ok_or_else(|| ApiError::not_found(format_args!("run {run}")))?;
        let specs = state.store.specs_at_revision(row.revision).await?;
        let media = crate::reconcile::rebuild_specs(&specs)
            .objects
            .iter()
            .filter_map(|o| match o {
                Object::Channel(d) => Some((d.metadata.name.value.clone(), d.spec.medium()?)),
                _ => None,
            })
            .collect();
        Ok(RunChannels { run, media })
    }

    fn medium_of(&self, channel: Option<&str>) -> Option<Medium> {
        channel.and_then(|c| self.media.get(c).copied())
    }

    /// The store's filter, or 422 naming the parameter that is wrong.
    fn filter(&self, query: &ReportQuery) -> Result<DeliveryFilter, ApiError> {
        let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
                let all: Vec<&str> = DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::invalid(
                    "status",
                    format!("`{text}` is not a delivery status; use {}", all.join(", ")),
                )
            })?),
        };
        let medium = match query.medium.as_deref().filter(|m| !m.is_empty()) {
            None => None,
            Some(text) => Some(Medium::parse(text).ok_or_else(|| {
                ApiError::invalid(
                    "medium",
                    format!("`{text}` is not a medium; use sms, whatsapp, telegram or email"),
                )
            })?),
        };
        let channels = match (query.channel.as_deref().filter(|c| !c.is_empty()), medium) {
            (None, None) => None,
            (Some(name), _) => {
                let Some(found) = self.media.get(name) else {
                    let hint = if Medium::parse(name).is_some() {
                        format!(" (to filter by medium, use medium={name})")
                    } else {
                        String::new()
                    };
                    let known: Vec<&str> = self.media.keys().map(String::as_str).collect();
                    return Err(ApiError::invalid(
                        "channel",
                        format!(
                            "run {} has no channel `{name}`{hint}; its revision's channels: {}",
                            self.run,
                            known.join(", ")
                        ),
                    ));
                };
                if let Some(m) = medium
                    && m != *found
                {
                    return Err(ApiError::invalid(
                        "medium",
                        format!("channel `{name}` delivers {found}, not {m}"),
                    ));
                }
                Some(vec![name.to_string()])
            }
            (None, Some(m)) => Some(
                self.media
                    .iter()
                    .filter(|(_, medium)| **medium == m)
                    .map(|(name, _)| name.clone())
                    .collect(),
            ),
        };
        Ok(DeliveryFilter { status, channels })
    }

    /// The channels of `run` and the store's filter for `query`: 404 if there is no such
    /// run, 422 naming the parameter that is wrong.
    async fn with_filter(
        state: &AppState,
        run: i64,
        query: &ReportQuery,
    ) -> Result<(RunChannels, DeliveryFilter), ApiError> {
        let channels = RunChannels::of(state, run).await?;
        let filter = channels.filter(query)?;
        Ok((channels, filter))
    }

    fn view(&self, d: DeliveryRow) -> DeliveryView {
        DeliveryView {
            medium: self
                .medium_of(d.channel.as_deref())
                .map(|m| m.as_str().to_string()),
            id: d.id,
            contact_id: d.contact_id,
            channel: d.channel,
            address: d.address,
            status: d.status.as_str().to_string(),
            reason: d.reason,
            attempts: d.attempts,
            provider_message_id: d.provider_message_id,
            next_attempt_at: d.next_attempt_at.map(rfc3339_ms),
            created_at: rfc3339_ms(d.created_at),
            updated_at: rfc3339_ms(d.updated_at),
            sent_at: d.sent_at.map(rfc3339_ms),
            delivered_at: d.delivered_at.map(rfc3339_ms),
            read_at: d.read_at.map(rfc3339_ms),
        }
    }
}

/// The opaque cursor after delivery `id` of `run`. Opaque so that clients do not build
/// one; it names its run so that a cursor of another run is refused, not misread.
fn encode_cursor(run: i64, id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("d1:{run}:{id}"))
}

/// The delivery id a cursor points after, or 422 naming `cursor`.
fn decode_cursor(run: i64, cursor: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::invalid(
            "cursor",
            "not a cursor this API gave; pass the `next_cursor` of the previous page as it is",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.split(':');
    let (Some("d1"), Some(r), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (r, id) = (
        r.parse::<i64>().map_err(|_| bad())?,
        id.parse::<i64>().map_err(|_| bad())?,
    );
    if r != run {
        return Err(ApiError::invalid(
            "cursor",
            format!("this cursor belongs to run {r}, not run {run}"),
        ));
    }
    Ok(id)
}

/// A run's deliveries, filtered, a page at a time.
#[utoipa::path(get, path = "/v1/runs/{id}/deliveries", tag = "reports",
    security(("bearer" = ["viewer"])),
    params(("id" = i64, Path, description = "the run's id"), DeliveriesQuery),
    responses(
        (status = 200, description = "a page of deliveries, by ascending id", body = DeliveriesPage),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 422, description = "a query parameter is invalid (named in the message)", body = ErrorBody)
    ))]
async fn list_deliveries(
    _: Viewer,
    State(state): State<AppState>,
    Path(run): Path<i64>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<DeliveriesPage>, ApiError> {
    let filters = ReportQuery {
        status: query.status,
        channel: query.channel,
        medium: query.medium,
    };
    let (channels, filter) = RunChannels::with_filter(&state, run, &filters).await?;
    let limit = number_param(
        "limit",
        query.limit.as_deref(),
        DEFAULT_LIMIT,
        1..=MAX_LIMIT,
    )?;
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => 0,
        Some(cursor) => decode_cursor(run, cursor)?,
    };
    // One more than asked: whether it comes says if there is a next page.
    let mut rows = state
        .store
        .deliveries_page(run, &filter, after, limit + 1)
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = match rows.last() {
        Some(last) if more => Some(encode_cursor(run, last.id)),
        _ => None,
    };
    Ok(Json(DeliveriesPage {
        deliveries: rows.into_iter().map(|d| channels.view(d)).collect(),
        next_cursor,
    }))
}

/// The rows of a report, read from the store a page at a time.
struct Pages {
    store: Store,
    run: i64,
    filter: DeliveryFilter,
    after: i64,
    done: bool,
}

impl Pages {
    fn new(store: Store, run: i64, filter: DeliveryFilter) -> Pages {
        Pages {
            store,
            run,
            filter,
            after: 0,
            done: false,
        }
    }

    /// The next page; `None` after the last.
    async fn next(&mut self) -> Result<Option<Vec<DeliveryRow>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .deliveries_page(self.run, &self.filter, self.after, EXPORT_PAGE)
            .await?;
        self.done = page.len() < EXPORT_PAGE as usize;
        match page.last() {
            Some(last) => {
                self.after = last.id;
                Ok(Some(page))
            }
            None => Ok(None),
        }
    }
}

/// What a body stream yields when the report cannot be finished (the cause is logged).
fn aborted() -> std::io::Error {
    std::io::Error::other("the report could not be finished; see the server log")
}

/// A run's deliveries as CSV, streamed.
#[utoipa::path(get, path = "/v1/runs/{id}/report.csv", tag = "reports",
    security(("bearer" = ["viewer"])),
    params(("id" = i64, Path, description = "the run's id"), ReportQuery),
    responses(
        (status = 200, description = "one row per delivery (excluded contacts included, with the reason)", content_type = "text/csv", body = String),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 422, description = "a query parameter is invalid (named in the message)", body = ErrorBody)
    ))]
async fn report_csv(
    _: Viewer,
    State(state): State<AppState>,
    Path(run): Path<i64>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let (channels, filter) = RunChannels::with_filter(&state, run, &query).await?;
    let pages = Pages::new(state.store.clone(), run, filter);
    enum Step {
        Header(Pages, RunChannels),
        Rows(Pages, RunChannels),
    }
    let stream =
        futures_util::stream::unfold(Some(Step::Header(pages, channels)), |step| async move {
            match step? {
                Step::Header(pages, channels) => {
                    let chunk = csv_chunk(&channels, &[], true);
                    Some((chunk, Some(Step::Rows(pages, channels))))
                }
                Step::Rows(mut pages, channels) => match pages.next().await {
                    Ok(Some(rows)) => {
                        let chunk = csv_chunk(&channels, &rows, false);
                        Some((chunk, Some(Step::Rows(pages, channels))))
                    }
                    Ok(None) => None,
                    // Already logged by ApiError; the client sees the body cut short.
                    Err(_) => Some((Err(aborted()), None)),
                },
            }
        });
    Ok(attachment(
        "text/csv; charset=utf-8",
        &format!("run-{run}.csv"),
        Body::from_stream(stream),
    ))
}

/// CSV text of `rows` (after the header line if `header`).
fn csv_chunk(
    channels: &RunChannels,
    rows: &[DeliveryRow],
    header: bool,
) -> Result<Vec<u8>, std::io::Error> {
    let mut csv = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 160));
    if header {
        csv.write_record(REPORT_COLUMNS)?;
    }
    for d in rows {
        let medium = channels.medium_of(d.channel.as_deref());
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let time = |v: Option<i64>| v.map(rfc3339_ms).unwrap_or_default();
        csv.write_record([
            d.id.to_string(),
            d.contact_id.clone(),
            text(&d.channel),
            medium.map(|m| m.as_str().to_string()).unwrap_or_default(),
            text(&d.address),
            d.status.as_str().to_string(),
            d.attempts.to_string(),
            text(&d.provider_message_id),
            text(&d.reason),
            rfc3339_ms(d.created_at),
            time(d.sent_at),
            time(d.delivered_at),
            time(d.read_at),
            rfc3339_ms(d.updated_at),
        ])?;
    }
    csv.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// A run's deliveries as an XLSX workbook, streamed as it is compressed.
#[utoipa::path(get, path = "/v1/runs/{id}/report.xlsx", tag = "reports",
    security(("bearer" = ["viewer"])),
    params(("id" = i64, Path, description = "the run's id"), ReportQuery),
    responses(
        (status = 200, description = "one row per delivery (excluded contacts included, with the reason); times in UTC", content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", body = Vec<u8>),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 422, description = "a query parameter is invalid (named in the message)", body = ErrorBody)
    ))]
async fn report_xlsx(
    _: Viewer,
    State(state): State<AppState>,
    Path(run): Path<i64>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let (channels, filter) = RunChannels::with_filter(&state, run, &query).await?;
    let mut pages = Pages::new(state.store.clone(), run, filter);
    let tempdir = state
        .store
        .path()
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf());
    // Pages read ahead of the writer: a few keep both busy; more only cost memory.
    let (rows_tx, rows_rx) = mpsc::channel::<Result<Vec<DeliveryRow>, ()>>(2);
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        loop {
            let page = match pages.next().await {
                Ok(Some(rows)) => Ok(rows),
                Ok(None) => break,
                Err(_) => Err(()),
            };
            let failed = page.is_err();
            if rows_tx.send(page).await.is_err() || failed {
                break;
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let sheet = XlsxSheet {
            channels: &channels,
            tempdir: tempdir.as_deref(),
        };
        if let Err(e) = sheet.write(rows_rx, &body_tx) {
            if !body_tx.is_closed() {
                tracing::error!(run, error = %e, "the XLSX report failed");
            }
            let _ = body_tx.blocking_send(Err(aborted()));
        }
    });
    let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(attachment(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        &format!("run-{run}.xlsx"),
        Body::from_stream(stream),
    ))
}

/// The last row a worksheet can hold is 1,048,576 (the header takes one); further
/// deliveries continue on another sheet.
const ROWS_PER_SHEET: u32 = 1_048_575;
/// Excel's longest cell text.
const MAX_CELL_TEXT: usize = 32_767;

/// Writes the XLSX report on a blocking thread.
struct XlsxSheet<'a> {
    channels: &'a RunChannels,
    tempdir: Option<&'a std::path::Path>,
}

impl XlsxSheet<'_> {
    fn write(
        &self,
        mut rows: mpsc::Receiver<Result<Vec<DeliveryRow>, ()>>,
        body: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<(), String> {
        use rust_xlsxwriter::{Format, Workbook};
        let mut workbook = Workbook::new();
        if let Some(dir) = self.tempdir {
            // Falls back to the system's temporary directory if this one is not writable.
            let _ = workbook.set_tempdir(dir);
        }
        // Level 3: about 6 % larger than the default 6, and 30 % faster to compress.
        workbook.set_zip_compression_level(3);
        let bold = Format::new().set_bold();
        let time = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
        let mut sheets = 1usize;
        let mut row: u32 = 0;
        add_sheet(&mut workbook, sheets, &bold)?;
        while let Some(page) = rows.blocking_recv() {
            let page = page.map_err(|()| "reading the deliveries failed".to_string())?;
            if body.is_closed() {
                return Err("the client went away".to_string());
            }
            for d in page {
                if row == ROWS_PER_SHEET {
                    sheets += 1;
                    add_sheet(&mut workbook, sheets, &bold)?;
                    row = 0;
                }
                row += 1;
                let sheet = workbook.worksheet_from_index(sheets - 1).map_err(xlsx)?;
                let medium = self.channels.medium_of(d.channel.as_deref());
                let texts: [(u16, Option<&str>); 7] = [
                    (1, Some(&d.contact_id)),
                    (2, d.channel.as_deref()),
                    (3, medium.map(Medium::as_str)),
                    (4, d.address.as_deref()),
                    (5, Some(d.status.as_str())),
                    (7, d.provider_message_id.as_deref()),
                    (8, d.reason.as_deref()),
                ];
                sheet.write_number(row, 0, d.id as f64).map_err(xlsx)?;
                sheet.write_number(row, 6, d.attempts).map_err(xlsx)?;
                for (col, value) in texts {
                    if let Some(v) = value {
                        sheet.write_string(row, col, cell_text(v)).map_err(xlsx)?;
                    }
                }
                let times = [
                    (9, Some(d.created_at)),
                    (10, d.sent_at),
                    (11, d.delivered_at),
                    (12, d.read_at),
                    (13, Some(d.updated_at)),
                ];
                for (col, value) in times {
                    if let Some(ms) = value {
                        sheet
                            .write_number_with_format(row, col, excel_time(ms), &time)
                            .map_err(xlsx)?;
                    }
                }
            }
        }
        let mut out = BodyWriter {
            body,
            buffer: Vec::with_capacity(BODY_CHUNK),
        };
        workbook.save_to_writer(&mut out).map_err(xlsx)?;
        out.flush().map_err(|e| e.to_string())
    }
}

fn xlsx(e: rust_xlsxwriter::XlsxError) -> String {
    e.to_string()
}

/// Adds worksheet number `n` (from 1) in constant-memory mode, with the header row.
fn add_sheet(
    workbook: &mut rust_xlsxwriter::Workbook,
    n: usize,
    bold: &rust_xlsxwriter::Format,
) -> Result<(), String> {
    let sheet = workbook
        .add_worksheet_with_constant_memory()
        .map_err(xlsx)?;
    let name = match n {
        1 => "Deliveries".to_string(),
        n => format!("Deliveries {n}"),
    };
    sheet.set_name(name).map_err(xlsx)?;
    for (col, title) in REPORT_COLUMNS.iter().enumerate() {
        let col = col as u16;
        sheet
            .write_string_with_format(0, col, *title, bold)
            .map_err(xlsx)?;
        let width = match *title {
            "delivery_id" | "attempts" | "medium" | "status" => 12,
            "error" => 40,
            _ => 22,
        };
        sheet.set_column_width(col, width).map_err(xlsx)?;
    }
    sheet.set_freeze_panes(1, 0).map_err(xlsx)?;
    Ok(())
}

/// Text for a cell, cut to what Excel holds.
fn cell_text(text: &str) -> &str {
    if text.len() <= MAX_CELL_TEXT {
        return text;
    }
    let mut end = MAX_CELL_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Unix milliseconds as an Excel serial date (days since 1899-12-30, UTC).
fn excel_time(ms: i64) -> f64 {
    ms as f64 / 86_400_000.0 + 25_569.0
}

/// Bytes per chunk handed to the response body.
const BODY_CHUNK: usize = 64 * 1024;

/// Hands what the zip writer writes to the response body, in chunks, from the blocking
/// thread; fails once the client is gone.
struct BodyWriter<'a> {
    body: &'a mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl Write for BodyWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= BODY_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(BODY_CHUNK),
        ));
        self.body.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_names_its_run() {
        let cursor = encode_cursor(7, 12345);
        assert_eq!(decode_cursor(7, &cursor).unwrap(), 12345);
        let e = decode_cursor(8, &cursor).unwrap_err();
        assert!(e.message.starts_with("cursor: "), "{e}");
        let e = decode_cursor(7, "12345").unwrap_err();
        assert!(e.message.starts_with("cursor: "), "{e}");
    }

    #[test]
    fn excel_times_count_days_from_1899_12_30() {
        assert_eq!(excel_time(0), 25_569.0);
        assert_eq!(excel_time(86_400_000 / 2), 25_569.5);
    }

    #[test]
    fn long_cell_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(20_000);
        let cut = cell_text(&text);
        assert!(cut.len() <= MAX_CELL_TEXT && cut.chars().all(|c| c == 'é'));
    }
}
