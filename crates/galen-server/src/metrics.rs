//! Process metrics, rendered in the Prometheus text exposition format at `/metrics`.
//!
//! Hand-written atomics rather than the `metrics` crate family: the set is small and fixed, and
//! the exporter crate would pull a second HTTP stack into the build.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use galen_model::RejectionReason;
use galen_store::StoreStats;

use crate::pipeline::IngestSummary;

/// Counters of the runtime.
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: Mutex<BTreeMap<String, u64>>,
    duplicates: AtomicU64,
    unassigned: AtomicU64,
    rejected: Mutex<BTreeMap<RejectionReason, u64>>,
    ingest_requests: AtomicU64,
    live_subscribers: AtomicU64,
    live_lagged: AtomicU64,
    /// Protocol adapter events by (protocol, event), e.g. (`mllp`, `AA`), (`mqtt`, `auth_failed`).
    protocol_events: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Open device connections by protocol.
    connections: Mutex<BTreeMap<&'static str, i64>>,
    /// HTTP requests refused by the hardening middleware, by reason.
    http_refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub(crate) fn ingested(&self, source: &str, summary: &IngestSummary) {
        *self
            .accepted
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry(source.to_owned())
            .or_default() += summary.accepted as u64;
        self.duplicates
            .fetch_add(summary.duplicates as u64, Ordering::Relaxed);
        self.unassigned
            .fetch_add(summary.unassigned as u64, Ordering::Relaxed);
        self.ingest_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, reason: RejectionReason) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    pub(crate) fn protocol_event(&self, protocol: &'static str, event: &'static str) {
        self.protocol_events(protocol, event, 1);
    }

    pub(crate) fn protocol_events(&self, protocol: &'static str, event: &'static str, count: u64) {
        if count == 0 {
            return;
        }
        *self
            .protocol_events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry((protocol, event))
            .or_default() += count;
    }

    /// Counts an HTTP request refused before the router (`rate_limited`, `cross_site`).
    pub(crate) fn http_refused(&self, reason: &'static str) {
        *self
            .http_refused
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    pub(crate) fn connections(&self, protocol: &'static str, delta: i64) {
        *self
            .connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry(protocol)
            .or_default() += delta;
    }

    /// Open connections of `protocol`.
    pub fn open_connections(&self, protocol: &str) -> i64 {
        self.connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(protocol)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn subscriber(&self, delta: i64) {
        if delta >= 0 {
            self.live_subscribers
                .fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.live_subscribers
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    pub(crate) fn lagged(&self, missed: u64) {
        self.live_lagged.fetch_add(missed, Ordering::Relaxed);
    }

    /// Renders every metric, including the store's, in Prometheus text format.
    pub fn render(&self, store: &StoreStats) -> String {
        let mut out = String::with_capacity(4096);
        let accepted = self
            .accepted
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let mut lines = String::from(
            "# HELP galen_measurements_accepted_total Measurements durably stored, by source adapter.\n\
             # TYPE galen_measurements_accepted_total counter\n",
        );
        if accepted.is_empty() {
            lines.push_str("galen_measurements_accepted_total{source=\"http\"} 0\n");
        }
        for (source, count) in accepted {
            let _ = writeln!(
                lines,
                "galen_measurements_accepted_total{{source=\"{source}\"}} {count}"
            );
        }
        let rejected = self
            .rejected
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let mut rejected_lines = String::new();
        for reason in RejectionReason::ALL {
            let count = rejected.get(&reason).copied().unwrap_or(0);
            let _ = writeln!(
                rejected_lines,
                "galen_measurements_rejected_total{{reason=\"{}\"}} {count}",
                reason.code()
            );
        }
        let buckets: String = StoreStats::COMMIT_BUCKETS
            .iter()
            .zip(store.commit_seconds_buckets)
            .map(|(bound, count)| {
                format!("galen_store_commit_seconds_bucket{{le=\"{bound}\"}} {count}\n")
            })
            .collect();
        let _ = write!(
            out,
            "{lines}\
# HELP galen_measurements_duplicate_total Measurements recognised as retries of stored ones.
# TYPE galen_measurements_duplicate_total counter
galen_measurements_duplicate_total {duplicates}
# HELP galen_measurements_unassigned_total Measurements stored from devices with no patient assignment at their time.
# TYPE galen_measurements_unassigned_total counter
galen_measurements_unassigned_total {unassigned}
# HELP galen_measurements_rejected_total Items refused and dead-lettered, by reason.
# TYPE galen_measurements_rejected_total counter
{rejected_lines}\
# HELP galen_ingest_requests_total Ingest calls handled.
# TYPE galen_ingest_requests_total counter
galen_ingest_requests_total {requests}
# HELP galen_dead_letters_total Dead letters stored since start.
# TYPE galen_dead_letters_total counter
galen_dead_letters_total {dead_letters}
# HELP galen_store_commits_total Durable group commits.
# TYPE galen_store_commits_total counter
galen_store_commits_total {commits}
# HELP galen_store_commit_seconds Group commit duration, fsync included.
# TYPE galen_store_commit_seconds histogram
{buckets}galen_store_commit_seconds_bucket{{le=\"+Inf\"}} {commits}
galen_store_commit_seconds_sum {commit_sum}
galen_store_commit_seconds_count {commits}
# HELP galen_store_commit_batch_size Measurements per group commit.
# TYPE galen_store_commit_batch_size summary
galen_store_commit_batch_size_sum {batch_sum}
galen_store_commit_batch_size_count {commits}
# HELP galen_store_commit_batch_size_max Largest group commit since start.
# TYPE galen_store_commit_batch_size_max gauge
galen_store_commit_batch_size_max {batch_max}
# HELP galen_store_queue_depth Ingest calls waiting for the store writer.
# TYPE galen_store_queue_depth gauge
galen_store_queue_depth {queue}
# HELP galen_store_checkpoints_total Checkpoints of open chunks.
# TYPE galen_store_checkpoints_total counter
galen_store_checkpoints_total {checkpoints}
# HELP galen_live_subscribers Open live (SSE) streams.
# TYPE galen_live_subscribers gauge
galen_live_subscribers {subscribers}
# HELP galen_live_lagged_total Live events skipped because a subscriber fell behind.
# TYPE galen_live_lagged_total counter
galen_live_lagged_total {lagged}
",
            duplicates = self.duplicates.load(Ordering::Relaxed),
            unassigned = self.unassigned.load(Ordering::Relaxed),
            requests = self.ingest_requests.load(Ordering::Relaxed),
            dead_letters = store.dead_letters,
            commits = store.commits,
            commit_sum = store.commit_seconds_sum,
            batch_sum = store.batch_size_sum,
            batch_max = store.batch_size_max,
            queue = store.queue_depth,
            checkpoints = store.checkpoints,
            subscribers = self.live_subscribers.load(Ordering::Relaxed),
            lagged = self.live_lagged.load(Ordering::Relaxed),
        );
        out.push_str(
            "# HELP galen_protocol_events_total Device protocol events: acknowledgements by code, refusals, failures.\n\
             # TYPE galen_protocol_events_total counter\n",
        );
        for ((protocol, event), count) in self
            .protocol_events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "galen_protocol_events_total{{protocol=\"{protocol}\",event=\"{event}\"}} {count}"
            );
        }
        out.push_str(
            "# HELP galen_http_refused_total HTTP requests refused before reaching a handler: \
             over the client's rate limit, or cross-site.\n\
             # TYPE galen_http_refused_total counter\n",
        );
        let refused = self
            .http_refused
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        for reason in ["cross_site", "rate_limited"] {
            let count = refused.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "galen_http_refused_total{{reason=\"{reason}\"}} {count}"
            );
        }
        out.push_str(
            "# HELP galen_device_connections Open device connections by protocol.\n\
             # TYPE galen_device_connections gauge\n",
        );
        for (protocol, count) in self
            .connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "galen_device_connections{{protocol=\"{protocol}\"}} {count}"
            );
        }
        out
    }
}
