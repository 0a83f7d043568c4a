//! `GET /metrics`: the Prometheus text format, unauthenticated (like `/healthz`: a
//! scraper holds no token, and nothing here is personal or secret).
//!
//! Two sources, one page: what this process counted as it happened ([`crate::metrics`]:
//! messages, rate-limit waits, provider latency, webhook attempts, reloads), and gauges
//! read from the store at scrape time ([`Store::metric_gauges`](crate::store::Store)):
//! deliveries pending by channel, runs by status, the webhook outbox. Reading the latter at
//! scrape time keeps them right across restarts and never lets them drift from the store.
//! If the store cannot be read, the process's series are still answered, with
//! `herald_store_read_success 0`, so the failure shows instead of a gap.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::store::metrics::StoreGauges;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_metrics))
}

/// Metrics in the Prometheus text format: messages by channel and status, deliveries
/// pending, rate-limit waits, provider latency, the webhook outbox, reloads, runs by status.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "metrics in the Prometheus text format (version 0.0.4)",
        content_type = "text/plain; version=0.0.4", body = String)))]
async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = crate::metrics::render();
    let revision = *state.revision.borrow();
    let store_read = match state.store.metric_gauges().await {
        Ok(gauges) => {
            write_store_gauges(&mut text, &gauges);
            1
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the store's gauges for /metrics");
            0
        }
    };
    write_gauge(
        &mut text,
        "herald_store_read_success",
        "1 if this scrape could read the store's gauges (deliveries, runs, outbox), 0 if not.",
        [(vec![], store_read)],
    );
    write_gauge(
        &mut text,
        "herald_revision_in_force",
        "The id of the revision in force (0 before the first is applied).",
        [(vec![], revision.unwrap_or(0).max(0) as u64)],
    );
    write_gauge(
        &mut text,
        "herald_build_info",
        "Always 1; the label says which herald is running.",
        [(vec![("version", env!("CARGO_PKG_VERSION"))], 1)],
    );
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// Appends the store's gauges: every family with its HELP and TYPE lines.
fn write_store_gauges(out: &mut String, gauges: &StoreGauges) {
    write_gauge(
        out,
        "herald_deliveries_pending",
        "Deliveries still to send (pending, retry or sending) by channel.",
        gauges
            .deliveries_pending
            .iter()
            .map(|(channel, n)| (vec![("channel", channel.as_str())], *n)),
    );
    write_gauge(
        out,
        "herald_runs",
        "Runs by status (scheduled, running, paused, finished, cancelled, failed, skipped).",
        gauges
            .runs
            .iter()
            .map(|(status, n)| (vec![("status", *status)], *n)),
    );
    write_gauge(
        out,
        "herald_webhook_outbox_pending",
        "Webhook events queued and not yet acknowledged by their receiver (the outbox's depth).",
        [(vec![], gauges.webhook_outbox_pending)],
    );
    write_gauge(
        out,
        "herald_webhook_outbox_expired",
        "Webhook events given up on: never acknowledged before they expired.",
        [(vec![], gauges.webhook_outbox_expired)],
    );
}

/// Appends one gauge family in the text format. Label values are escaped as the format
/// requires (backslash, double quote, line feed).
fn write_gauge<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{label}=\"{}\"", escape_label_value(text));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

fn escape_label_value(text: &str) -> String {
    text.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_family_has_help_type_and_escaped_labels() {
        let mut out = String::from("previous_metric 1");
        write_gauge(
            &mut out,
            "herald_x",
            "An example.",
            [
                (vec![("channel", "a\"b\\c\nd")], 3),
                (vec![("channel", "sms"), ("status", "sent")], 0),
            ],
        );
        assert_eq!(
            out,
            "previous_metric 1\n# HELP herald_x An example.\n# TYPE herald_x gauge\n\
             herald_x{channel=\"a\\\"b\\\\c\\nd\"} 3\n\
             herald_x{channel=\"sms\",status=\"sent\"} 0\n"
        );
    }

    #[test]
    fn the_store_gauges_are_rendered_with_every_channel_and_status() {
        let gauges = StoreGauges {
            deliveries_pending: [("sms".to_string(), 4), ("email".to_string(), 0)].into(),
            runs: [("finished", 2), ("running", 1)].into(),
            webhook_outbox_pending: 5,
            webhook_outbox_expired: 1,
        };
        let mut out = String::new();
        write_store_gauges(&mut out, &gauges);
        for line in [
            "herald_deliveries_pending{channel=\"email\"} 0",
            "herald_deliveries_pending{channel=\"sms\"} 4",
            "herald_runs{status=\"finished\"} 2",
            "herald_runs{status=\"running\"} 1",
            "herald_webhook_outbox_pending 5",
            "herald_webhook_outbox_expired 1",
            "# TYPE herald_runs gauge",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}:\n{out}");
        }
    }
}
