//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! The `metrics` facade has one recorder per process, so every server in a
//! process (tests start many) shares these series. An application that
//! embeds the server and installed its own recorder keeps it: the server's
//! series then go there and `/metrics` is empty.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open WebSocket connections (gauge).
pub(crate) const CONNECTIONS: &str = "chat_connections";
/// Connections closed on arrival because the connection cap was reached
/// (counter).
pub(crate) const CONNECTIONS_REFUSED: &str = "chat_connections_refused_total";
/// Messages stored (counter); retries of a stored `client_id` do not count.
pub(crate) const MESSAGES_STORED: &str = "chat_messages_stored_total";
/// Events queued to sockets by the fan-out (counter).
pub(crate) const DELIVERIES: &str = "chat_deliveries_total";
/// Sockets closed with 4408 because they could not keep up (counter).
pub(crate) const SLOW_SOCKETS: &str = "chat_slow_sockets_closed_total";
/// Times the hub stopped waiting for a missing message and delivered what
/// came after it (counter): each socket of the room then reads the gap from
/// storage.
pub(crate) const REORDER_GAPS: &str = "chat_reorder_gaps_total";
/// Storage reads by sockets filling a gap in a room's messages (counter).
pub(crate) const GAP_READS: &str = "chat_socket_gap_reads_total";
/// Events this instance could not hand to the broker because its outbox
/// was full (counter): other instances' sockets read them from storage.
pub(crate) const BROKER_DROPPED: &str = "chat_broker_dropped_total";
/// Publishes to the broker that failed (counter; each may carry a batch).
pub(crate) const BROKER_ERRORS: &str = "chat_broker_errors_total";
/// Messages and edits a before-send hook rejected (counter).
pub(crate) const HOOK_REJECTIONS: &str = "chat_hook_rejections_total";
/// Calls to the HTTP before-send hook that failed (counter): timeouts,
/// errors, bad answers, whatever the failure policy made of them.
pub(crate) const HOOK_FAILURES: &str = "chat_hook_failures_total";
/// Events the after-event hook missed for falling behind (counter).
pub(crate) const HOOK_EVENTS_DROPPED: &str = "chat_hook_events_dropped_total";
/// Events outbox sinks (label `sink`: `webhook`, `push`) have yet to
/// take, over the rooms the last poll looked at (gauge).
pub(crate) const OUTBOX_QUEUED: &str = "chat_outbox_events_queued";
/// Events outbox sinks took (counter, label `sink`).
pub(crate) const OUTBOX_DELIVERED: &str = "chat_outbox_events_delivered_total";
/// Outbox deliveries scheduled again after a failure (counter, `sink`).
pub(crate) const OUTBOX_RETRIED: &str = "chat_outbox_retries_total";
/// Outbox deliveries that failed: no answer in time, not 2xx (counter,
/// `sink`).
pub(crate) const OUTBOX_FAILED: &str = "chat_outbox_failures_total";
/// Push notifications a gateway accepted (counter).
pub(crate) const PUSH_SENT: &str = "chat_push_notifications_total";
/// Appends committed together by group commit (histogram; Postgres).
pub(crate) const APPEND_BATCH_SIZE: &str = "chat_append_batch_size";
/// Time from asking group commit for an append to its answer: queueing,
/// the batch's transaction and the commit (histogram, seconds).
pub(crate) const APPEND_DURATION: &str = "chat_append_duration_seconds";
/// HTTP request latency by method, route and status (histogram).
pub(crate) const HTTP_DURATION: &str = "http_request_duration_seconds";

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Appends: most commit well under a millisecond, so the buckets start at
/// 0.1 ms.
const APPEND_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

const HTTP_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process-wide recorder on first use.
fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), HTTP_BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full(APPEND_BATCH_SIZE.to_owned()),
                    BATCH_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(Matcher::Full(APPEND_DURATION.to_owned()), APPEND_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    metrics::describe_gauge!(CONNECTIONS, "Open WebSocket connections");
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed on arrival at the connection cap"
    );
    metrics::describe_counter!(MESSAGES_STORED, "Messages stored");
    metrics::describe_counter!(DELIVERIES, "Events queued to sockets by the fan-out");
    metrics::describe_counter!(SLOW_SOCKETS, "Sockets closed with 4408 for falling behind");
    metrics::describe_counter!(
        REORDER_GAPS,
        "Times the fan-out gave up waiting for a missing message"
    );
    metrics::describe_counter!(GAP_READS, "Storage reads by sockets filling a gap");
    metrics::describe_counter!(
        BROKER_DROPPED,
        "Events not published because the broker outbox was full"
    );
    metrics::describe_counter!(BROKER_ERRORS, "Broker publishes that failed");
    metrics::describe_gauge!(OUTBOX_QUEUED, "Events outbox sinks have yet to take");
    metrics::describe_counter!(OUTBOX_DELIVERED, "Events outbox sinks took");
    metrics::describe_counter!(OUTBOX_RETRIED, "Outbox deliveries scheduled again");
    metrics::describe_counter!(OUTBOX_FAILED, "Outbox deliveries that failed");
    metrics::describe_counter!(PUSH_SENT, "Push notifications a gateway accepted");
    metrics::describe_counter!(HOOK_REJECTIONS, "Messages and edits a hook rejected");
    metrics::describe_counter!(HOOK_FAILURES, "Failed calls to the HTTP before-send hook");
    metrics::describe_counter!(
        HOOK_EVENTS_DROPPED,
        "Events the after-event hook missed for falling behind"
    );
    metrics::describe_histogram!(
        APPEND_BATCH_SIZE,
        "Appends committed together in one transaction"
    );
    metrics::describe_histogram!(
        APPEND_DURATION,
        metrics::Unit::Seconds,
        "Time from an append's request to its commit"
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by method, route and status"
    );
}

/// Makes sure the recorder exists before the first series is touched.
pub(crate) fn init() {
    let _ = handle();
}

/// Prometheus metrics
///
/// Text exposition format: connections, messages stored, deliveries, slow
/// sockets closed, HTTP latency by route.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub(crate) async fn render() -> Response {
    let body = handle().map(PrometheusHandle::render).unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Middleware timing every HTTP request, labelled by the matched route (not
/// the raw path, which would make a series per room id).
pub(crate) async fn track_http(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route, "status" => status)
        .record(start.elapsed().as_secs_f64());
    response
}
