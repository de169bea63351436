//! Prometheus metrics: the broker's counters and histograms, and a tiny HTTP/1.1 endpoint that
//! serves them in the Prometheus text format (version 0.0.4) on `GET /metrics`.
//!
//! Metrics are kept with the `prometheus-client` crate (the official Prometheus Rust client):
//! counters, gauges and histogram buckets are atomics, so the hot paths (produce, fetch, every
//! request) pay a few atomic adds. Per-topic counter handles are cached in a map looked up by
//! `&str`, so a produce or fetch allocates no label set once its topic has been seen.
//!
//! Gauges that describe state (log end offsets, high watermarks, segment counts, group lag) are
//! computed at scrape time from the broker, not maintained on the data path.
//!
//! The endpoint runs on `tokio::net` (so it runs under the simulator too): one request per
//! connection, the request head bounded to [`HTTP_REQUEST_BYTES_MAX`] and read within
//! [`HTTP_READ_TIMEOUT`]; `GET /metrics` and `GET /v1/tier/status` (JSON, see
//! [`crate::tier::status`]) answer 200, any other path 404, any other method 405,
//! and a request that does not parse 400. Time is read from `std::time::Instant`, which the
//! simulator intercepts.
//!
//! Metric names (units last, Prometheus conventions):
//! - `strata_bytes_in_total{topic}`, `strata_records_in_total{topic}` — record batch bytes and
//!   records appended by Produce (retried duplicates are not counted).
//! - `strata_bytes_out_total{topic}`, `strata_records_out_total{topic}` — record bytes and
//!   records (from the batch headers' record counts) returned by Fetch.
//! - `strata_request_duration_seconds{api}` — histogram of the time from a decoded request to its
//!   response being ready, per Kafka API (including the long-poll wait of Fetch and the fsync
//!   wait of acks=all Produce).
//! - `strata_partition_errors_total{api,error}` — Produce and Fetch partitions answered with a
//!   Kafka error code.
//! - `strata_bad_frames_total` — frames that closed their connection (bad length or undecodable).
//! - `strata_fetch_wait_seconds` — histogram of the time a Fetch spent before answering (the
//!   long-poll wait for `min_bytes`).
//! - `strata_fsync_duration_seconds`, `strata_fsync_batches_total` — the flusher's group commits.
//! - `strata_connections` — open Kafka client connections.
//! - `strata_connections_rejected_total{reason}` — accepted connections closed at once:
//!   `max_connections`, `max_connections_per_ip`.
//! - `strata_connections_closed_total{reason}` — connections the broker closed for a limit:
//!   `idle` (`connections.max.idle.ms`), `frame_timeout` (`socket.request.read.timeout.ms`),
//!   `write_timeout` (an answer not taken by the client within `connections.max.idle.ms`).
//! - `strata_accept_errors_total` — failed accepts (e.g. EMFILE), each followed by a back-off.
//! - `strata_connection_answers_owed_bytes` — record bytes of answers handled and not yet
//!   written, over all connections (each bounded by `queued.max.response.bytes`).
//! - `strata_fetch_memory_used_bytes` — record bytes held by Fetch answers (the
//!   `fetch.memory.max.bytes` budget), at scrape.
//! - `strata_segments{topic,partition}`, `strata_log_start_offset{topic,partition}`,
//!   `strata_log_end_offset{topic,partition}`, `strata_high_watermark{topic,partition}` — at scrape.
//! - `strata_group_lag{group,topic,partition}` — high watermark minus the committed offset (never
//!   below zero), at scrape.
//! - Tiered storage: `strata_tier_offloaded_files_total`, `strata_tier_offloaded_batch_bytes_total`,
//!   `strata_tier_uploaded_bytes_total` (Parquet bytes), `strata_tier_offload_errors_total`,
//!   `strata_tier_local_segments_deleted_total`, `strata_tier_remote_read_bytes_total`,
//!   `strata_tier_compacted_files_total`, `strata_tier_compacted_records_removed_total`; at scrape,
//!   per tiered partition: `strata_tier_pending_segments`, `strata_tier_pending_bytes`,
//!   `strata_tier_offload_lag_ms` (the offload lag), `strata_tier_remote_bytes`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, FetchResponse};
use kafka_protocol::ResponseError;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use strata_storage::{AppendOutcome, BatchHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::broker::Broker;
use crate::handlers::{Outcome, Response, SUPPORTED_APIS};

/// Most bytes of an HTTP request head the endpoint reads; a longer head is answered 400.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// How long the endpoint waits for a request head (and for its answer to be written).
pub const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The content type of the scrape answer (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    api: &'static str,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLagLabels {
    group: String,
    topic: String,
    partition: i32,
}

/// The cached counter handles of one topic (clones share the atomics in the families).
struct TopicCounters {
    bytes_in: Counter,
    records_in: Counter,
    bytes_out: Counter,
    records_out: Counter,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    // 100 µs to ~13 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

/// The broker's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    bytes_in: Family<TopicLabels, Counter>,
    records_in: Family<TopicLabels, Counter>,
    bytes_out: Family<TopicLabels, Counter>,
    records_out: Family<TopicLabels, Counter>,
    topics: RwLock<HashMap<String, Arc<TopicCounters>>>,
    /// Per-API histogram handles, by API key, for the APIs Strata serves.
    request_durations: HashMap<i16, Histogram>,
    partition_errors: Family<ErrorLabels, Counter>,
    bad_frames: Counter,
    fetch_wait: Histogram,
    fsync_duration: Histogram,
    fsync_batches: Counter,
    connections: Gauge,
    segments: Family<PartitionLabels, Gauge>,
    log_start_offset: Family<PartitionLabels, Gauge>,
    log_end_offset: Family<PartitionLabels, Gauge>,
    high_watermark: Family<PartitionLabels, Gauge>,
    group_lag: Family<GroupLagLabels, Gauge>,
    tier_offloaded_files: Counter,
    tier_offloaded_batch_bytes: Counter,
    tier_uploaded_bytes: Counter,
    tier_offload_errors: Counter,
    tier_local_segments_deleted: Counter,
    tier_remote_read_bytes: Counter,
    tier_compacted_files: Counter,
    tier_compacted_records_removed: Counter,
    tier_pending_segments: Family<PartitionLabels, Gauge>,
    tier_pending_bytes: Family<PartitionLabels, Gauge>,
    tier_offload_lag_ms: Family<PartitionLabels, Gauge>,
    tier_remote_bytes: Family<PartitionLabels, Gauge>,
    connection_limits: ConnectionLimitMetrics,
    /// Serializes scrapes (they reset and refill the scrape-time gauges).
    scrape: Mutex<()>,
    bound_addr: Mutex<Option<SocketAddr>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The metrics of the connection and fetch-memory limits (see the module docs).
struct ConnectionLimitMetrics {
    rejected: Family<ReasonLabels, Counter>,
    closed: Family<ReasonLabels, Counter>,
    accept_errors: Counter,
    answers_owed_bytes: Gauge,
    fetch_memory_used_bytes: Gauge,
}

impl ConnectionLimitMetrics {
    fn register(registry: &mut Registry) -> ConnectionLimitMetrics {
        let metrics = ConnectionLimitMetrics {
            rejected: Family::default(),
            closed: Family::default(),
            accept_errors: Counter::default(),
            answers_owed_bytes: Gauge::default(),
            fetch_memory_used_bytes: Gauge::default(),
        };
        registry.register(
            "connections_rejected",
            "Accepted connections closed at once by max.connections or max.connections.per.ip",
            metrics.rejected.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed by the broker for a limit (idle, frame_timeout, write_timeout)",
            metrics.closed.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts of Kafka connections (each followed by a back-off)",
            metrics.accept_errors.clone(),
        );
        registry.register(
            "connection_answers_owed_bytes",
            "Record bytes of answers handled and not yet written, over all connections",
            metrics.answers_owed_bytes.clone(),
        );
        registry.register(
            "fetch_memory_used_bytes",
            "Record bytes held by Fetch answers (the fetch.memory.max.bytes budget)",
            metrics.fetch_memory_used_bytes.clone(),
        );
        metrics
    }
}

/// Counts record bytes of answers owed by a connection while it lives; see
/// [`Metrics::answer_owed`].
pub struct OwedGuard {
    gauge: Gauge,
    bytes: i64,
}

impl Drop for OwedGuard {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
    }
}

/// Decrements the connection gauge when dropped; see [`Metrics::connection_opened`].
pub struct ConnectionGuard {
    connections: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.connections.dec();
    }
}

impl Metrics {
    /// Fresh metrics, all zero, registered under the `strata_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strata");
        let bytes_in = Family::<TopicLabels, Counter>::default();
        let records_in = Family::<TopicLabels, Counter>::default();
        let bytes_out = Family::<TopicLabels, Counter>::default();
        let records_out = Family::<TopicLabels, Counter>::default();
        registry.register(
            "bytes_in",
            "Record batch bytes appended by Produce",
            bytes_in.clone(),
        );
        registry.register(
            "records_in",
            "Records appended by Produce",
            records_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Record bytes returned by Fetch",
            bytes_out.clone(),
        );
        registry.register(
            "records_out",
            "Records returned by Fetch (from the batch headers' record counts)",
            records_out.clone(),
        );

        let durations: HistogramFamily<ApiLabels> =
            Family::new_with_constructor(request_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a decoded Kafka request to its response, per API",
            durations.clone(),
        );
        let request_durations = SUPPORTED_APIS
            .iter()
            .map(|(api, _, _)| {
                let histogram = durations
                    .get_or_create(&ApiLabels {
                        api: api_name(*api),
                    })
                    .clone();
                (*api as i16, histogram)
            })
            .collect();

        let partition_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "partition_errors",
            "Produce and Fetch partitions answered with an error code",
            partition_errors.clone(),
        );
        let bad_frames = Counter::default();
        registry.register(
            "bad_frames",
            "Kafka frames that closed their connection (bad length or undecodable)",
            bad_frames.clone(),
        );
        // 1 ms to ~65 s (max.wait.ms is usually at most 500 ms, but clients may ask more).
        let fetch_wait = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "fetch_wait_seconds",
            "Time a Fetch spent before answering (the long-poll wait for min_bytes)",
            fetch_wait.clone(),
        );
        // 50 µs to ~6.5 s.
        let fsync_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        registry.register(
            "fsync_duration_seconds",
            "Duration of one group commit's fsyncs by the flusher",
            fsync_duration.clone(),
        );
        let fsync_batches = Counter::default();
        registry.register(
            "fsync_batches",
            "Group commits (fsync batches) made by the flusher",
            fsync_batches.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open Kafka client connections",
            connections.clone(),
        );

        let segments = Family::<PartitionLabels, Gauge>::default();
        let log_start_offset = Family::<PartitionLabels, Gauge>::default();
        let log_end_offset = Family::<PartitionLabels, Gauge>::default();
        let high_watermark = Family::<PartitionLabels, Gauge>::default();
        let group_lag = Family::<GroupLagLabels, Gauge>::default();
        registry.register("segments", "Log segments of a partition", segments.clone());
        registry.register(
            "log_start_offset",
            "First offset in a partition's log",
            log_start_offset.clone(),
        );
        registry.register(
            "log_end_offset",
            "Next offset to be assigned in a partition's log",
            log_end_offset.clone(),
        );
        registry.register(
            "high_watermark",
            "Offset up to which consumers may read (the durable end offset)",
            high_watermark.clone(),
        );
        registry.register(
            "group_lag",
            "High watermark minus the group's committed offset",
            group_lag.clone(),
        );

        let tier_offloaded_files = Counter::default();
        let tier_offloaded_batch_bytes = Counter::default();
        let tier_uploaded_bytes = Counter::default();
        let tier_offload_errors = Counter::default();
        let tier_local_segments_deleted = Counter::default();
        let tier_remote_read_bytes = Counter::default();
        registry.register(
            "tier_offloaded_files",
            "Segments offloaded to the object store as Parquet files",
            tier_offloaded_files.clone(),
        );
        registry.register(
            "tier_offloaded_batch_bytes",
            "Record batch bytes of the segments offloaded",
            tier_offloaded_batch_bytes.clone(),
        );
        registry.register(
            "tier_uploaded_bytes",
            "Parquet bytes uploaded to the object store",
            tier_uploaded_bytes.clone(),
        );
        registry.register(
            "tier_offload_errors",
            "Tier task ticks that failed for a partition (object store errors); retried",
            tier_offload_errors.clone(),
        );
        registry.register(
            "tier_local_segments_deleted",
            "Local segments deleted after being offloaded (local retention) or expired",
            tier_local_segments_deleted.clone(),
        );
        registry.register(
            "tier_remote_read_bytes",
            "Record batch bytes served to Fetch from the remote tier",
            tier_remote_read_bytes.clone(),
        );
        let tier_compacted_files = Counter::default();
        let tier_compacted_records_removed = Counter::default();
        registry.register(
            "tier_compacted_files",
            "Remote files rewritten (or removed) by compaction",
            tier_compacted_files.clone(),
        );
        registry.register(
            "tier_compacted_records_removed",
            "Records removed from the remote tier by compaction",
            tier_compacted_records_removed.clone(),
        );
        let tier_pending_segments = Family::<PartitionLabels, Gauge>::default();
        let tier_pending_bytes = Family::<PartitionLabels, Gauge>::default();
        let tier_offload_lag_ms = Family::<PartitionLabels, Gauge>::default();
        let tier_remote_bytes = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "tier_pending_segments",
            "Closed segments of a tiered partition not yet offloaded",
            tier_pending_segments.clone(),
        );
        registry.register(
            "tier_pending_bytes",
            "Bytes of the closed segments not yet offloaded",
            tier_pending_bytes.clone(),
        );
        registry.register(
            "tier_offload_lag_ms",
            "How long the oldest segment not yet offloaded has been waiting",
            tier_offload_lag_ms.clone(),
        );
        registry.register(
            "tier_remote_bytes",
            "Bytes of a partition's live Parquet files",
            tier_remote_bytes.clone(),
        );
        let connection_limits = ConnectionLimitMetrics::register(&mut registry);

        Metrics {
            registry,
            tier_offloaded_files,
            tier_offloaded_batch_bytes,
            tier_uploaded_bytes,
            tier_offload_errors,
            tier_local_segments_deleted,
            tier_remote_read_bytes,
            tier_compacted_files,
            tier_compacted_records_removed,
            tier_pending_segments,
            tier_pending_bytes,
            tier_offload_lag_ms,
            tier_remote_bytes,
            bytes_in,
            records_in,
            bytes_out,
            records_out,
            topics: RwLock::new(HashMap::new()),
            request_durations,
            partition_errors,
            bad_frames,
            fetch_wait,
            fsync_duration,
            fsync_batches,
            connections,
            segments,
            log_start_offset,
            log_end_offset,
            high_watermark,
            group_lag,
            connection_limits,
            scrape: Mutex::new(()),
            bound_addr: Mutex::new(None),
        }
    }

    /// The cached counters of `topic`, created on first use.
    fn topic(&self, topic: &str) -> Arc<TopicCounters> {
        if let Some(counters) = self
            .topics
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(topic)
        {
            return Arc::clone(counters);
        }
        let mut topics = self
            .topics
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let counters = topics.entry(topic.to_string()).or_insert_with(|| {
            let labels = TopicLabels {
                topic: topic.to_string(),
            };
            Arc::new(TopicCounters {
                bytes_in: self.bytes_in.get_or_create(&labels).clone(),
                records_in: self.records_in.get_or_create(&labels).clone(),
                bytes_out: self.bytes_out.get_or_create(&labels).clone(),
                records_out: self.records_out.get_or_create(&labels).clone(),
            })
        });
        Arc::clone(counters)
    }

    /// Counts a Produce append of `bytes` bytes to `topic` (retried duplicates count nothing).
    pub fn record_produced(&self, topic: &str, bytes: usize, outcome: &AppendOutcome) {
        if outcome.duplicate {
            return;
        }
        debug_assert!(outcome.last_offset >= outcome.base_offset);
        let records = (outcome.last_offset - outcome.base_offset + 1).max(0) as u64;
        let counters = self.topic(topic);
        counters.bytes_in.inc_by(bytes as u64);
        counters.records_in.inc_by(records);
    }

    /// Counts the record bytes and records of a Fetch response, and its wait.
    pub fn record_fetch(&self, response: &FetchResponse, elapsed: Duration) {
        self.fetch_wait.observe(elapsed.as_secs_f64());
        for topic in &response.responses {
            let mut counters = None;
            for partition in &topic.partitions {
                let Some(records) = partition.records.as_ref().filter(|r| !r.is_empty()) else {
                    continue;
                };
                let counters = counters.get_or_insert_with(|| self.topic(topic.topic.as_str()));
                counters.bytes_out.inc_by(records.len() as u64);
                counters.records_out.inc_by(count_records(records));
            }
        }
    }

    /// Records the duration of one request of `api_key` and the partition errors in its answer.
    pub fn record_request(&self, api_key: ApiKey, elapsed: Duration, outcome: &Outcome) {
        if let Some(histogram) = self.request_durations.get(&(api_key as i16)) {
            histogram.observe(elapsed.as_secs_f64());
        }
        match outcome {
            Outcome::Respond(Response::Produce(r)) => {
                for code in r
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
                {
                    self.record_partition_error(api_key, code);
                }
            }
            Outcome::Respond(Response::Fetch(r)) => {
                for code in r
                    .responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                {
                    self.record_partition_error(api_key, code);
                }
            }
            _ => {}
        }
    }

    /// Counts a partition answered with `code` (0, no error, counts nothing).
    fn record_partition_error(&self, api_key: ApiKey, code: i16) {
        if code == 0 {
            return;
        }
        let error = match ResponseError::try_from_code(code) {
            Some(error) => format!("{error:?}"),
            None => format!("code_{code}"),
        };
        self.partition_errors
            .get_or_create(&ErrorLabels {
                api: api_name(api_key),
                error,
            })
            .inc();
    }

    /// Counts a frame that closed its connection.
    pub fn record_bad_frame(&self) {
        self.bad_frames.inc();
    }

    /// Records one group commit of the flusher that took `elapsed`.
    pub fn record_fsync(&self, elapsed: Duration) {
        self.fsync_duration.observe(elapsed.as_secs_f64());
        self.fsync_batches.inc();
    }

    /// Records one offloaded segment: its batch bytes and the Parquet bytes uploaded.
    pub fn record_offload(&self, batch_bytes: u64, uploaded_bytes: u64) {
        self.tier_offloaded_files.inc();
        self.tier_offloaded_batch_bytes.inc_by(batch_bytes);
        self.tier_uploaded_bytes.inc_by(uploaded_bytes);
    }

    /// Records a failed tier tick of one partition.
    pub fn record_offload_error(&self) {
        self.tier_offload_errors.inc();
    }

    /// Records local segments deleted by the tier task.
    pub fn record_local_segments_deleted(&self, count: usize) {
        self.tier_local_segments_deleted.inc_by(count as u64);
    }

    /// Records a compaction pass that rewrote `files` and removed `records`.
    pub fn record_compaction(&self, files: usize, records: u64) {
        self.tier_compacted_files.inc_by(files as u64);
        self.tier_compacted_records_removed.inc_by(records);
    }

    /// Records bytes served from the remote tier.
    pub fn record_remote_read(&self, bytes: usize) {
        self.tier_remote_read_bytes.inc_by(bytes as u64);
    }

    /// Counts an open connection until the returned guard is dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard {
            connections: self.connections.clone(),
        }
    }

    /// Counts a connection closed at once by `max.connections` (`per_ip` false) or
    /// `max.connections.per.ip`.
    pub fn record_connection_rejected(&self, per_ip: bool) {
        let reason = if per_ip {
            "max_connections_per_ip"
        } else {
            "max_connections"
        };
        self.connection_limits
            .rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a connection closed for a limit: `idle`, `frame_timeout` or `write_timeout`.
    pub fn record_connection_closed(&self, reason: &'static str) {
        self.connection_limits
            .closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a failed accept.
    pub fn record_accept_error(&self) {
        self.connection_limits.accept_errors.inc();
    }

    /// Counts `bytes` of an answer owed by a connection until the guard is dropped.
    pub fn answer_owed(&self, bytes: usize) -> OwedGuard {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let gauge = self.connection_limits.answers_owed_bytes.clone();
        gauge.inc_by(bytes);
        OwedGuard { gauge, bytes }
    }

    /// Record bytes of answers owed over all connections right now.
    pub fn answers_owed_bytes(&self) -> i64 {
        self.connection_limits.answers_owed_bytes.get()
    }

    /// The address the metrics endpoint listens on, once bound.
    pub fn bound_addr(&self) -> Option<SocketAddr> {
        *self
            .bound_addr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Refreshes the scrape-time gauges from `broker` and encodes every metric in the Prometheus
    /// text format.
    pub fn render(&self, broker: &Broker) -> String {
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.refresh_gauges(broker);
        let mut out = String::with_capacity(16 * 1024);
        if let Err(error) = prometheus_text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; a label encoder could, in principle.
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }

    fn refresh_gauges(&self, broker: &Broker) {
        self.connection_limits
            .fetch_memory_used_bytes
            .set(i64::try_from(broker.fetch_memory().used_bytes()).unwrap_or(i64::MAX));
        self.segments.clear();
        self.log_start_offset.clear();
        self.log_end_offset.clear();
        self.high_watermark.clear();
        self.group_lag.clear();
        self.tier_pending_segments.clear();
        self.tier_pending_bytes.clear();
        self.tier_offload_lag_ms.clear();
        self.tier_remote_bytes.clear();
        for status in crate::tier::status(broker, None) {
            if !status.remote_storage_enable {
                continue;
            }
            let labels = PartitionLabels {
                topic: status.topic.clone(),
                partition: status.partition,
            };
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.tier_pending_segments
                .get_or_create(&labels)
                .set(clamp(status.pending_segments));
            self.tier_pending_bytes
                .get_or_create(&labels)
                .set(clamp(status.pending_bytes));
            self.tier_offload_lag_ms
                .get_or_create(&labels)
                .set(status.offload_lag_ms);
            self.tier_remote_bytes
                .get_or_create(&labels)
                .set(clamp(status.remote_bytes));
        }
        for topic in broker.topics() {
            for partition in topic.partitions() {
                let Ok((segments, start, end)) = partition.with_log(|log| {
                    Ok((
                        log.segment_count(),
                        log.log_start_offset(),
                        log.log_end_offset(),
                    ))
                }) else {
                    // Offline or closed partitions have no log to describe.
                    continue;
                };
                let labels = PartitionLabels {
                    topic: topic.name().to_string(),
                    partition: partition.index(),
                };
                self.segments
                    .get_or_create(&labels)
                    .set(i64::try_from(segments).unwrap_or(i64::MAX));
                self.log_start_offset.get_or_create(&labels).set(start);
                self.log_end_offset.get_or_create(&labels).set(end);
                self.high_watermark
                    .get_or_create(&labels)
                    .set(partition.high_watermark());
            }
        }
        let groups = broker.groups();
        for listing in groups.list() {
            for (topic, partition, committed) in groups.fetch_offsets(&listing.group_id, None) {
                let Some(committed) = committed else {
                    continue;
                };
                let Some(high_watermark) = broker
                    .topic(&topic)
                    .and_then(|t| t.partition(partition).map(|p| p.high_watermark()))
                else {
                    continue;
                };
                self.group_lag
                    .get_or_create(&GroupLagLabels {
                        group: listing.group_id.clone(),
                        topic,
                        partition,
                    })
                    .set((high_watermark - committed.offset).max(0));
            }
        }
    }
}

/// The records in `bytes` (concatenated record batches), summed from the batch headers. Stops at
/// the first batch whose header does not parse (a fetch may end in a partial batch).
pub fn count_records(bytes: &[u8]) -> u64 {
    let mut position = 0usize;
    let mut records = 0u64;
    while let Some(rest) = bytes.get(position..) {
        let Ok(header) = BatchHeader::parse(rest) else {
            break;
        };
        if header.batch_length < 0 {
            break;
        }
        let Some(next) = usize::try_from(header.size_bytes())
            .ok()
            .and_then(|size| position.checked_add(size))
            .filter(|next| *next <= bytes.len() && *next > position)
        else {
            break;
        };
        records += u64::try_from(header.records_count).unwrap_or(0);
        position = next;
    }
    records
}

/// The label value of an API: Kafka's name for it.
fn api_name(api_key: ApiKey) -> &'static str {
    match api_key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        _ => "Other",
    }
}

/// Binds `addr` and serves the metrics endpoint until the broker shuts down (spawned). Returns
/// the bound address, also recorded in [`Metrics::bound_addr`].
pub async fn spawn_endpoint(broker: Arc<Broker>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    *broker
        .metrics()
        .bound_addr
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(bound);
    tokio::spawn(serve_endpoint(broker, listener));
    Ok(bound)
}

/// Serves `GET /metrics` on `listener` until the broker shuts down.
pub async fn serve_endpoint(broker: Arc<Broker>, listener: TcpListener) {
    loop {
        tokio::select! {
            biased;
            _ = broker.shutdown_started() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(handle_http(Arc::clone(&broker), stream, peer));
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// What the endpoint answers to a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
    /// `GET /v1/tier/status[?topic=T]`.
    TierStatus(Option<String>),
}

/// Routes a request head (everything up to the blank line).
fn route(head: &[u8]) -> Route {
    let Ok(head) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let Some(line) = head.split("\r\n").next() else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Route::BadRequest;
    }
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path == "/metrics" {
        Route::Metrics
    } else if path == "/v1/tier/status" {
        let topic = target
            .split_once('?')
            .and_then(|(_, query)| query.split('&').find_map(|kv| kv.strip_prefix("topic=")))
            .map(str::to_string);
        Route::TierStatus(topic)
    } else {
        Route::NotFound
    }
}

/// Reads a request head: up to and including `\r\n\r\n`. `None` if the peer closed, sent more
/// than [`HTTP_REQUEST_BYTES_MAX`] without finishing it, or failed.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return Some(head);
        }
        if head.len() > HTTP_REQUEST_BYTES_MAX {
            return None;
        }
    }
}

async fn handle_http(broker: Arc<Broker>, mut stream: TcpStream, peer: SocketAddr) {
    let head = match tokio::time::timeout(HTTP_READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => Some(head),
        Ok(None) => None,
        Err(_) => {
            tracing::debug!(%peer, "metrics endpoint: request head timed out");
            return;
        }
    };
    let route = head.as_deref().map(route).unwrap_or(Route::BadRequest);
    let (status, content_type, body) = match route {
        Route::Metrics => ("200 OK", CONTENT_TYPE, broker.metrics().render(&broker)),
        Route::TierStatus(topic) => (
            "200 OK",
            "application/json",
            crate::tier::status_json(&broker, topic.as_deref()),
        ),
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; metrics are at /metrics, tier status at /v1/tier/status\n".to_string(),
        ),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET is served\n".to_string(),
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let written = tokio::time::timeout(HTTP_READ_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::debug!(%peer, "metrics endpoint: writing the answer failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_requests() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /metrics"), Route::BadRequest);
        assert_eq!(route(b"GET metrics HTTP/1.1"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe garbage"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }

    #[test]
    fn counts_records_from_batch_headers() {
        use strata_storage::batch::build::simple_batch;
        let mut bytes = simple_batch(3, 10, 0);
        bytes.extend_from_slice(&simple_batch(2, 10, 0));
        assert_eq!(count_records(&bytes), 5);
        // A partial trailing batch is not counted, whether its header is whole or not.
        let whole = bytes.len();
        bytes.extend_from_slice(&simple_batch(4, 10, 0)[..30]);
        assert_eq!(count_records(&bytes), 5);
        bytes.truncate(whole);
        bytes.extend_from_slice(&simple_batch(4, 10, 0)[..70]);
        assert_eq!(count_records(&bytes), 5);
        assert_eq!(count_records(&bytes[..whole - 1]), 3);
        assert_eq!(count_records(&[]), 0);
    }

    #[test]
    fn produce_counters_skip_duplicates_and_cache_handles() {
        let metrics = Metrics::new();
        let outcome = AppendOutcome {
            base_offset: 10,
            last_offset: 14,
            duplicate: false,
        };
        metrics.record_produced("t", 100, &outcome);
        let duplicate = AppendOutcome {
            duplicate: true,
            ..outcome
        };
        metrics.record_produced("t", 100, &duplicate);
        let counters = metrics.topic("t");
        assert_eq!(counters.bytes_in.get(), 100);
        assert_eq!(counters.records_in.get(), 5);
        assert!(Arc::ptr_eq(&counters, &metrics.topic("t")));
    }
}
