//! Prometheus metrics (the names operators rely on, listed in the README). Gauges of live objects are
//! set from the objects themselves right before each scrape.

use std::sync::OnceLock;
use std::time::Duration;

use app::model::LeaveReason;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Gauge: live sessions on this node.
pub const SESSIONS_ACTIVE: &str = "cleanroom_sessions_active";
/// Gauge: open peer connections on this node.
pub const PEER_CONNECTIONS_ACTIVE: &str = "cleanroom_peer_connections_active";
/// Gauge: published tracks on this node.
pub const TRACKS_ACTIVE: &str = "cleanroom_tracks_active";
/// Gauge: packet forwarders on this node.
pub const FORWARDERS_ACTIVE: &str = "cleanroom_forwarders_active";
/// Sessions ended, by reason.
pub const SESSION_CLOSES: &str = "cleanroom_session_closes_total";
/// Histogram: seconds from a session's end to its resources released.
pub const CLEANUP_DURATION: &str = "cleanroom_cleanup_duration_seconds";
/// Cleanup steps retried.
pub const CLEANUP_RETRIES: &str = "cleanroom_cleanup_retries_total";
/// Session cleanups that failed after every retry (left to the reconciler).
pub const CLEANUP_FAILURES: &str = "cleanroom_cleanup_failures_total";
/// Orphaned resources the reconciler removed, by kind ([`ORPHAN_KINDS`]).
pub const ORPHANS_REAPED: &str = "cleanroom_orphans_reaped_total";
/// Requests refused by a rate limit, by class.
pub const RATE_LIMITED: &str = "cleanroom_rate_limited_total";
/// Remote ICE candidates, by verdict (`accepted`, `refused`).
pub const REMOTE_CANDIDATES: &str = "cleanroom_remote_candidates_total";
/// Reconciler passes completed, by node (a test's positive signal that
/// passes ran and repaired nothing).
pub const RECONCILE_PASSES: &str = "cleanroom_reconcile_passes_total";
/// ICE restarts browsers asked for (their network changed or failed).
pub const ICE_RESTARTS: &str = "cleanroom_ice_restarts_total";

/// Simulcast layer switches made by forwarders (a resume after a pause counts).
pub const LAYER_SWITCHES: &str = "cleanroom_layer_switches_total";
/// Video forwarders paused now (their subscriber is sent no layer).
pub const FORWARDERS_PAUSED: &str = "cleanroom_forwarders_paused";
/// Probes of a subscriber's downlink (padding sent to see whether a larger layer fits).
pub const PROBES: &str = "cleanroom_downlink_probes_total";
/// Video packets sent again because a subscriber reported them lost (NACK).
pub const PACKETS_RESENT: &str = "cleanroom_packets_resent_total";

/// Chat messages delivered.
pub const CHAT_MESSAGES: &str = "cleanroom_chat_messages_total";

/// HTTP requests answered, by method, route and status.
pub const HTTP_REQUESTS: &str = "cleanroom_http_requests_total";
/// Time to answer an HTTP request (to its response head), by method and route.
pub const HTTP_DURATION: &str = "cleanroom_http_request_duration_seconds";

/// Kinds of orphan the reconciler reaps.
pub const ORPHAN_KINDS: [&str; 3] = ["store-key", "db-row", "live-session"];

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(CLEANUP_DURATION.to_owned()),
                    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(HTTP_DURATION.to_owned()),
                        &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(SESSIONS_ACTIVE, "Live sessions on this node.");
    describe_counter!(RATE_LIMITED, "Requests refused by a rate limit, by class.");
    describe_counter!(RECONCILE_PASSES, "Reconciler passes completed, by node.");
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by method, route and status.");
    describe_histogram!(HTTP_DURATION, "Time to answer an HTTP request, by method and route.");
    process().describe();
    describe_counter!(LAYER_SWITCHES, "Simulcast layer switches made by forwarders.");
    describe_gauge!(FORWARDERS_PAUSED, "Video forwarders whose subscriber is sent no layer now.");
    describe_counter!(PROBES, "Probes of a subscriber's downlink before a larger layer is sent.");
    describe_counter!(CHAT_MESSAGES, "Chat messages delivered to their rooms.");
    describe_counter!(PACKETS_RESENT, "Video packets sent again because a subscriber reported them lost (NACK).");
    describe_counter!(ICE_RESTARTS, "ICE restarts browsers asked for (network changed or media path failed).");
    describe_counter!(REMOTE_CANDIDATES, "Remote ICE candidates from browsers, by verdict.");
    describe_gauge!(PEER_CONNECTIONS_ACTIVE, "Open peer connections on this node.");
    describe_gauge!(TRACKS_ACTIVE, "Published tracks on this node.");
    describe_gauge!(FORWARDERS_ACTIVE, "Packet forwarders on this node.");
    describe_counter!(SESSION_CLOSES, "Sessions ended, by reason.");
    describe_histogram!(CLEANUP_DURATION, "Time from a session's end to its resources released.");
    describe_counter!(CLEANUP_RETRIES, "Cleanup steps retried.");
    describe_counter!(CLEANUP_FAILURES, "Cleanup steps that failed after every retry.");
    describe_counter!(ORPHANS_REAPED, "Orphaned resources removed by the reconciler, by kind.");
    // Zero series so every name is present from the first scrape.
    for reason in LeaveReason::ALL {
        counter!(SESSION_CLOSES, "reason" => reason.as_str()).absolute(0);
    }
    for kind in ORPHAN_KINDS {
        counter!(ORPHANS_REAPED, "kind" => kind).absolute(0);
    }
    counter!(CLEANUP_RETRIES).absolute(0);
    counter!(CHAT_MESSAGES).absolute(0);
    counter!(PACKETS_RESENT).absolute(0);
    counter!(CLEANUP_FAILURES).absolute(0);
}

/// The process collector (CPU, memory, open files, threads).
fn process() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Reads the process figures (right before a scrape).
pub fn collect_process() {
    process().collect();
}

/// Counts one answered HTTP request. `route` is the matched route pattern
/// (`/r/{code}`), never the raw path, so the series stay few.
pub fn http_request(method: &str, route: &str, status: u16, took: Duration) {
    let (method, route) = (method.to_owned(), route.to_owned());
    counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route).record(took.as_secs_f64());
}

/// Counts one session end.
pub fn session_closed(reason: LeaveReason, cleanup: Duration) {
    counter!(SESSION_CLOSES, "reason" => reason.as_str()).increment(1);
    histogram!(CLEANUP_DURATION).record(cleanup.as_secs_f64());
}

/// Live-object counts, set right before a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveCounts {
    /// Live sessions ([`SESSIONS_ACTIVE`]).
    pub sessions: usize,
    /// Open peer connections ([`PEER_CONNECTIONS_ACTIVE`]).
    pub peer_connections: usize,
    /// Published tracks ([`TRACKS_ACTIVE`]).
    pub tracks: usize,
    /// Forwarders ([`FORWARDERS_ACTIVE`]).
    pub forwarders: usize,
}

/// Sets the live-object gauges.
pub fn set_live(c: LiveCounts) {
    gauge!(SESSIONS_ACTIVE).set(c.sessions as f64);
    gauge!(PEER_CONNECTIONS_ACTIVE).set(c.peer_connections as f64);
    gauge!(TRACKS_ACTIVE).set(c.tracks as f64);
    gauge!(FORWARDERS_ACTIVE).set(c.forwarders as f64);
}
