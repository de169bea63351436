//! Broker configuration and per-topic configuration with Kafka's names.
//!
//! Topic configs are stored as overrides (`key=value`, Kafka names) on top of the broker's defaults;
//! [`TopicConfig::log_config`] turns them into the storage layer's [`LogConfig`]. Every topic
//! config of Kafka 4.x is accepted ([`TOPIC_CONFIGS`]) and validated like Kafka
//! ([`validate_topic_config`]); docs/topic-configs.md says which ones have no effect, and why.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use strata_storage::batch::Compression;
use strata_storage::LogConfig;

/// Default of `message.timestamp.before.max.ms`: no limit (Kafka's default).
pub const TIMESTAMP_BEFORE_MAX_MS_DEFAULT: i64 = i64::MAX;
/// Default of `message.timestamp.after.max.ms`: one hour (Kafka 4.0's default, KIP-1030).
pub const TIMESTAMP_AFTER_MAX_MS_DEFAULT: i64 = 3_600_000;
/// Default of `min.cleanable.dirty.ratio` (Kafka's).
pub const MIN_CLEANABLE_DIRTY_RATIO_DEFAULT: f64 = 0.5;

/// When the broker fsyncs partition data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Default. A background flusher fsyncs each partition as soon as it has unsynced data (group
    /// commit); acks=all answers only after its batches are fsynced. Consumers see only fsynced
    /// offsets (high watermark = durable end offset).
    Ack,
    /// fsync at most every `ms` milliseconds; acks=all still waits for the fsync.
    IntervalMs(u64),
    /// Never fsync (benchmarks only): acks=all promises only the OS page cache.
    Never,
}

/// Configuration of one broker (Kafka's names in comments).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// node.id, default 0.
    pub node_id: i32,
    /// listeners, default 127.0.0.1:9092.
    pub listen: SocketAddr,
    /// advertised.listeners host put in Metadata; default: the listen ip.
    pub advertised_host: Option<String>,
    /// log.dirs, default ./strata-data.
    pub data_dir: PathBuf,
    /// When partition data is fsynced; default [`FlushPolicy::Ack`].
    pub flush: FlushPolicy,
    /// num.partitions, default 1 (auto-created topics and CreateTopics with -1).
    pub num_partitions_default: i32,
    /// auto.create.topics.enable, default true.
    pub auto_create_topics: bool,
    /// socket.request.max.bytes, default 100 MiB.
    pub request_bytes_max: usize,
    /// message.max.bytes, default 1 MiB + 12 (Kafka's 1048588).
    pub message_bytes_max: usize,
    /// Defaults of the log.* configs for every partition.
    pub log_defaults: LogConfig,
    /// log.retention.check.interval.ms, default 300000.
    pub retention_check_interval_ms: u64,
    /// Where [`crate::server::serve`] serves Prometheus metrics (`GET /metrics`); `None` (the
    /// library default) serves none. `strata serve` defaults to 127.0.0.1:9644.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the tier task offloads closed segments and applies retention to tiered
    /// topics, default 5000.
    pub tier_interval_ms: u64,
    /// Bytes of remote row groups (rebuilt into batches) cached for reads, default 256 MiB.
    pub tier_cache_bytes: u64,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets` when it is created
    /// (compaction works on closed segments), default 100 MiB as in Kafka.
    pub offsets_segment_bytes: u64,
    /// `fetch.max.bytes` (Kafka's broker config, default 57671680 = 55 MiB): the most record
    /// bytes one Fetch answer carries, whatever the request's `max_bytes` says (KIP-74: the first
    /// batch of the first non-empty partition may still exceed it, as in Kafka).
    pub fetch_bytes_max: usize,
    /// `queued.max.response.bytes` (Strata's; Kafka mutes a connection until its one answer is
    /// sent, so it owes at most one): record bytes of answers a connection may owe (handled, not
    /// yet written) before it stops reading requests. A client that pipelines fetches and never
    /// reads pins at most this plus one answer. Default 64 MiB.
    pub connection_answers_bytes_max: usize,
    /// `fetch.memory.max.bytes` (Strata's, no Kafka equivalent): record bytes that all Fetch
    /// answers together may hold (read and not yet written). A fetch waits (at most its
    /// `max_wait_ms`) for room before it reads. Default 1 GiB.
    pub fetch_memory_bytes_max: usize,
    /// `connections.max.idle.ms` (Kafka, default 600000): a connection that reads no request
    /// and completes no answer for this long is closed.
    pub connection_idle_ms_max: u64,
    /// `max.connections` (Kafka: Int.MAX): connections accepted past this many are closed at
    /// once. Default: half of the soft `RLIMIT_NOFILE` (see
    /// [`crate::server::connections_max_default`]), so the broker's own files always find a
    /// descriptor.
    pub connections_max: usize,
    /// `max.connections.per.ip` (Kafka: Int.MAX): connections from one IP address past this many
    /// are closed at once. Default: [`BrokerConfig::connections_max`].
    pub connections_per_ip_max: usize,
    /// `socket.request.read.timeout.ms` (Strata's; Kafka has no equivalent): once the first
    /// byte of a request frame has arrived, the whole frame must arrive within this long, or the
    /// connection is closed. Default 30000 (a Java client's `request.timeout.ms`).
    pub frame_read_ms_max: u64,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of a group out of Empty
    /// waits for more members (extended by this again while members keep joining, at most the
    /// rebalance timeout), default 3000 as in Kafka; 0 completes it as soon as every member
    /// joined (tests).
    pub group_initial_rebalance_delay_ms: u64,
    /// `log.cleaner.backoff.ms`: how often the cleaner checks the compacted topics that are not
    /// tiered for a compaction pass (each partition is compacted only when due: see
    /// `min.cleanable.dirty.ratio`), default 15000 as in Kafka.
    pub log_cleaner_backoff_ms: u64,
    /// The smallest `segment.bytes` a client may set on a topic (CreateTopics, AlterConfigs),
    /// default [`SEGMENT_BYTES_MIN_DEFAULT`] (Kafka 4's minimum). A topic that rolls a segment
    /// every few bytes costs a file (and a descriptor while open) per produce. Tests lower it
    /// to roll often (`--segment-bytes-min`); never below [`SEGMENT_BYTES_MIN_FLOOR`].
    pub segment_bytes_min: u64,
    /// `queued.max.request.bytes`: bytes of request frames being read at once, across all
    /// connections (see `server::FrameBudget`), default 512 MiB. Kafka's default is unbounded;
    /// without a bound, 2,000 connections each stalled inside a 1 MB frame held 2 GiB.
    pub queued_request_bytes_max: usize,
}

/// Kafka 4's minimum `segment.bytes` (KIP-1030): 1 MiB.
pub const SEGMENT_BYTES_MIN_DEFAULT: u64 = 1024 * 1024;
/// The smallest `segment.bytes` any topic may have (the smallest legacy record, Kafka's old
/// minimum): what [`BrokerConfig::segment_bytes_min`] may be lowered to, and what stored topic
/// configs of older versions are clamped to.
pub const SEGMENT_BYTES_MIN_FLOOR: u64 = 14;

/// Refuses a client's `segment.bytes` below `floor` (see [`BrokerConfig::segment_bytes_min`]);
/// the error is the message for INVALID_CONFIG.
pub fn check_client_segment_bytes(
    overrides: &BTreeMap<String, String>,
    floor: u64,
) -> Result<(), String> {
    let Some(value) = overrides.get("segment.bytes") else {
        return Ok(());
    };
    match value.trim().parse::<u64>() {
        Ok(bytes) if bytes < floor => Err(format!(
            "Invalid value {value} for configuration segment.bytes: Value must be at least {floor}"
        )),
        // Other values are checked by validate_topic_config.
        _ => Ok(()),
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_host: None,
            data_dir: PathBuf::from("./strata-data"),
            flush: FlushPolicy::Ack,
            num_partitions_default: 1,
            auto_create_topics: true,
            request_bytes_max: 100 * 1024 * 1024,
            message_bytes_max: 1024 * 1024 + 12,
            log_defaults: LogConfig::default(),
            retention_check_interval_ms: 300_000,
            metrics_listen: None,
            tier_interval_ms: 5000,
            tier_cache_bytes: 256 * 1024 * 1024,
            offsets_segment_bytes: 100 * 1024 * 1024,
            fetch_bytes_max: 57_671_680,
            connection_answers_bytes_max: 64 * 1024 * 1024,
            fetch_memory_bytes_max: 1024 * 1024 * 1024,
            connection_idle_ms_max: 600_000,
            connections_max: crate::server::connections_max_default(),
            connections_per_ip_max: crate::server::connections_max_default(),
            frame_read_ms_max: 30_000,
            group_initial_rebalance_delay_ms: 3_000,
            log_cleaner_backoff_ms: 15_000,
            segment_bytes_min: SEGMENT_BYTES_MIN_DEFAULT,
            queued_request_bytes_max: 512 * 1024 * 1024,
        }
    }
}

/// Kafka's `ConfigType` values used in DescribeConfigs v3+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// BOOLEAN (1)
    Boolean = 1,
    /// STRING (2)
    String = 2,
    /// INT (3)
    Int = 3,
    /// LONG (5)
    Long = 5,
    /// DOUBLE (6)
    Double = 6,
    /// LIST (7)
    List = 7,
}

/// One topic config Strata knows.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigSpec {
    /// Kafka topic config name.
    pub name: &'static str,
    /// The broker-level synonym (shown in DescribeConfigs synonyms), if any.
    pub broker_synonym: Option<&'static str>,
    /// Value type.
    pub config_type: ConfigType,
    /// One-line documentation.
    pub doc: &'static str,
}

/// Every topic config of Kafka 4.x (its `LogConfig`), which Strata accepts. Anything else is
/// INVALID_CONFIG, as in Kafka (`message.format.version`, `message.downconversion.enable` and
/// `message.timestamp.difference.max.ms` were removed in Kafka 4.0). The docs say which are
/// accepted without effect, and why; docs/topic-configs.md has the table.
pub const TOPIC_CONFIGS: &[TopicConfigSpec] = &[
    TopicConfigSpec {
        name: "cleanup.policy",
        broker_synonym: Some("log.cleanup.policy"),
        config_type: ConfigType::List,
        doc: "delete, compact or compact,delete: compaction keeps the latest record per key (closed local segments, and the remote tier when tiered).",
    },
    TopicConfigSpec {
        name: "compression.type",
        broker_synonym: Some("compression.type"),
        config_type: ConfigType::String,
        doc: "producer keeps the producer's codec; uncompressed, gzip, snappy, lz4 or zstd: the broker recompresses batches with another codec before appending them.",
    },
    TopicConfigSpec {
        name: "compression.gzip.level",
        broker_synonym: Some("compression.gzip.level"),
        config_type: ConfigType::Int,
        doc: "Accepted without effect: broker-side recompression uses the codec library's default level.",
    },
    TopicConfigSpec {
        name: "compression.lz4.level",
        broker_synonym: Some("compression.lz4.level"),
        config_type: ConfigType::Int,
        doc: "Accepted without effect: broker-side recompression uses the codec library's default level.",
    },
    TopicConfigSpec {
        name: "compression.zstd.level",
        broker_synonym: Some("compression.zstd.level"),
        config_type: ConfigType::Int,
        doc: "Accepted without effect: broker-side recompression uses the codec library's default level.",
    },
    TopicConfigSpec {
        name: "delete.retention.ms",
        broker_synonym: Some("log.cleaner.delete.retention.ms"),
        config_type: ConfigType::Long,
        doc: "How long a tombstone of a compacted topic is kept after its timestamp.",
    },
    TopicConfigSpec {
        name: "file.delete.delay.ms",
        broker_synonym: Some("log.segment.delete.delay.ms"),
        config_type: ConfigType::Long,
        doc: "Accepted without effect: Strata deletes a segment file at once (a read holds its open file).",
    },
    TopicConfigSpec {
        name: "flush.messages",
        broker_synonym: Some("log.flush.interval.messages"),
        config_type: ConfigType::Long,
        doc: "Accepted without effect: fsyncs follow the broker's log.flush.policy (by default every acknowledged batch is fsynced).",
    },
    TopicConfigSpec {
        name: "flush.ms",
        broker_synonym: Some("log.flush.interval.ms"),
        config_type: ConfigType::Long,
        doc: "Accepted without effect: fsyncs follow the broker's log.flush.policy (by default every acknowledged batch is fsynced).",
    },
    TopicConfigSpec {
        name: "follower.replication.throttled.replicas",
        broker_synonym: None,
        config_type: ConfigType::List,
        doc: "Accepted without effect: a single node has no followers to throttle.",
    },
    TopicConfigSpec {
        name: "index.interval.bytes",
        broker_synonym: Some("log.index.interval.bytes"),
        config_type: ConfigType::Int,
        doc: "Bytes of log between two offset index entries.",
    },
    TopicConfigSpec {
        name: "leader.replication.throttled.replicas",
        broker_synonym: None,
        config_type: ConfigType::List,
        doc: "Accepted without effect: a single node replicates to no follower.",
    },
    TopicConfigSpec {
        name: "local.retention.bytes",
        broker_synonym: Some("log.local.retention.bytes"),
        config_type: ConfigType::Long,
        doc: "Local retention by size when tiering is enabled; -2 means retention.bytes.",
    },
    TopicConfigSpec {
        name: "local.retention.ms",
        broker_synonym: Some("log.local.retention.ms"),
        config_type: ConfigType::Long,
        doc: "Local retention by age when tiering is enabled; -2 means retention.ms.",
    },
    TopicConfigSpec {
        name: "max.compaction.lag.ms",
        broker_synonym: Some("log.cleaner.max.compaction.lag.ms"),
        config_type: ConfigType::Long,
        doc: "A compacted log whose oldest uncompacted record is older than this is compacted whatever its dirty ratio; the active segment rolls at this age.",
    },
    TopicConfigSpec {
        name: "max.message.bytes",
        broker_synonym: Some("message.max.bytes"),
        config_type: ConfigType::Int,
        doc: "Largest record batch accepted, in bytes.",
    },
    TopicConfigSpec {
        name: "message.timestamp.after.max.ms",
        broker_synonym: Some("log.message.timestamp.after.max.ms"),
        config_type: ConfigType::Long,
        doc: "CreateTime topics: a batch with a record timestamp more than this ahead of the broker clock is refused (INVALID_TIMESTAMP).",
    },
    TopicConfigSpec {
        name: "message.timestamp.before.max.ms",
        broker_synonym: Some("log.message.timestamp.before.max.ms"),
        config_type: ConfigType::Long,
        doc: "CreateTime topics: a batch with a record timestamp more than this behind the broker clock is refused (INVALID_TIMESTAMP).",
    },
    TopicConfigSpec {
        name: "message.timestamp.type",
        broker_synonym: Some("log.message.timestamp.type"),
        config_type: ConfigType::String,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps every batch with the broker's append time.",
    },
    TopicConfigSpec {
        name: "min.cleanable.dirty.ratio",
        broker_synonym: Some("log.cleaner.min.cleanable.ratio"),
        config_type: ConfigType::Double,
        doc: "A compacted log is compacted when the bytes written since its last compaction are at least this share of its compactable bytes.",
    },
    TopicConfigSpec {
        name: "min.compaction.lag.ms",
        broker_synonym: Some("log.cleaner.min.compaction.lag.ms"),
        config_type: ConfigType::Long,
        doc: "Segments holding records newer than this are not compacted.",
    },
    TopicConfigSpec {
        name: "min.insync.replicas",
        broker_synonym: Some("min.insync.replicas"),
        config_type: ConfigType::Int,
        doc: "Replicas that must acknowledge an acks=all write; one node has one replica.",
    },
    TopicConfigSpec {
        name: "preallocate",
        broker_synonym: Some("log.preallocate"),
        config_type: ConfigType::Boolean,
        doc: "Accepted without effect: segment files grow as they are written.",
    },
    TopicConfigSpec {
        name: "remote.log.copy.disable",
        broker_synonym: None,
        config_type: ConfigType::Boolean,
        doc: "Accepted without effect: a tiered topic keeps offloading closed segments.",
    },
    TopicConfigSpec {
        name: "remote.log.delete.on.disable",
        broker_synonym: None,
        config_type: ConfigType::Boolean,
        doc: "Accepted without effect: remote files of a topic whose tiering is turned off stay readable until the topic is deleted.",
    },
    TopicConfigSpec {
        name: "remote.storage.enable",
        broker_synonym: None,
        config_type: ConfigType::Boolean,
        doc: "Offload closed segments to the object store as Parquet; reads below the local start are served from there.",
    },
    TopicConfigSpec {
        name: "retention.bytes",
        broker_synonym: Some("log.retention.bytes"),
        config_type: ConfigType::Long,
        doc: "Partition size above which the oldest segments are deleted; -1 for no limit.",
    },
    TopicConfigSpec {
        name: "retention.ms",
        broker_synonym: Some("log.retention.ms"),
        config_type: ConfigType::Long,
        doc: "Age after which whole segments are deleted; -1 keeps them forever.",
    },
    TopicConfigSpec {
        name: "segment.bytes",
        broker_synonym: Some("log.segment.bytes"),
        config_type: ConfigType::Int,
        doc: "Segment file size at which the log rolls a new segment.",
    },
    TopicConfigSpec {
        name: "segment.index.bytes",
        broker_synonym: Some("log.index.size.max.bytes"),
        config_type: ConfigType::Int,
        doc: "Accepted without effect: Strata's index files grow with their segment instead of being preallocated.",
    },
    TopicConfigSpec {
        name: "segment.jitter.ms",
        broker_synonym: Some("log.roll.jitter.ms"),
        config_type: ConfigType::Long,
        doc: "Up to this much is taken off segment.ms for each segment (a per-segment amount derived from its base offset), so partitions do not all roll at once.",
    },
    TopicConfigSpec {
        name: "segment.ms",
        broker_synonym: Some("log.roll.ms"),
        config_type: ConfigType::Long,
        doc: "Age of the active segment at which the log rolls a new segment.",
    },
    TopicConfigSpec {
        name: "unclean.leader.election.enable",
        broker_synonym: Some("unclean.leader.election.enable"),
        config_type: ConfigType::Boolean,
        doc: "Accepted without effect: a single node is always the leader of its partitions.",
    },
];

/// Looks up a topic config by its Kafka name.
pub fn topic_config_spec(name: &str) -> Option<&'static TopicConfigSpec> {
    TOPIC_CONFIGS.iter().find(|spec| spec.name == name)
}

fn parse_i64(name: &str, value: &str, min: i64, max: i64) -> Result<i64, String> {
    let invalid =
        |reason: String| format!("Invalid value {value} for configuration {name}: {reason}");
    // Configs whose maximum fits an i32 are Kafka INTs: a value outside i32 is not a number.
    let int = max <= i64::from(i32::MAX);
    let parsed: i64 = value
        .trim()
        .parse()
        .ok()
        .filter(|v| !int || i32::try_from(*v).is_ok())
        .ok_or_else(|| {
            invalid(format!(
                "Not a number of type {}",
                if int { "INT" } else { "LONG" }
            ))
        })?;
    // Kafka's ConfigDef.Range messages.
    if parsed < min {
        return Err(invalid(if max == i64::MAX || max == i64::from(i32::MAX) {
            format!("Value must be at least {min}")
        } else {
            format!("Value must be no less than {min}")
        }));
    }
    if parsed > max {
        return Err(invalid(format!("Value must be no more than {max}")));
    }
    Ok(parsed)
}

fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "Invalid value {value} for configuration {name}: Expected value to be either true or false"
        )),
    }
}

fn one_of(name: &str, value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value.trim()) {
        Ok(())
    } else {
        Err(format!(
            "Invalid value {value} for configuration {name}: String must be one of: {}",
            allowed.join(", ")
        ))
    }
}

/// `compression.type` values (Kafka's `BrokerCompressionType`).
pub const COMPRESSION_TYPES: &[&str] =
    &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

/// Kafka's `ThrottledReplicaListValidator`: `*`, or `partition:broker` pairs separated by commas
/// (or nothing).
fn throttled_replicas(name: &str, value: &str) -> Result<(), String> {
    let trimmed = value.trim();
    let pair = |entry: &str| {
        let mut parts = entry.trim().splitn(2, ':');
        let numeric = |part: Option<&str>| {
            part.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        numeric(parts.next()) && numeric(parts.next())
    };
    if trimmed.is_empty() || trimmed == "*" || trimmed.split(',').all(pair) {
        Ok(())
    } else {
        Err(format!(
            "Invalid value {value} for configuration {name}: must be the literal '*' or a list of replicas in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],..."
        ))
    }
}

/// Validates one topic config value; the error is the message for INVALID_CONFIG.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    match name {
        "cleanup.policy" => {
            let policies: Vec<&str> = value.split(',').map(str::trim).collect();
            if !policies.is_empty() && policies.iter().all(|p| *p == "delete" || *p == "compact") {
                Ok(())
            } else {
                Err(format!(
                    "Invalid value {value} for configuration cleanup.policy: expected delete, compact or compact,delete"
                ))
            }
        }
        "delete.retention.ms" => parse_i64(name, value, 0, i64::MAX).map(|_| ()),
        // The floor of every topic; a client is held to the broker's segment_bytes_min (1 MiB
        // by default) by check_client_segment_bytes.
        "segment.bytes" => {
            parse_i64(name, value, SEGMENT_BYTES_MIN_FLOOR as i64, i32::MAX as i64).map(|_| ())
        }
        "segment.ms" => parse_i64(name, value, 1, i64::MAX).map(|_| ()),
        "retention.ms" | "retention.bytes" => parse_i64(name, value, -1, i64::MAX).map(|_| ()),
        "local.retention.ms" | "local.retention.bytes" => {
            parse_i64(name, value, -2, i64::MAX).map(|_| ())
        }
        "max.message.bytes" | "index.interval.bytes" => {
            parse_i64(name, value, 0, i32::MAX as i64).map(|_| ())
        }
        "min.insync.replicas" => parse_i64(name, value, 1, i32::MAX as i64).map(|_| ()),
        "message.timestamp.type" => one_of(name, value, &["CreateTime", "LogAppendTime"]),
        "remote.storage.enable" => parse_bool(name, value).map(|_| ()),
        "compression.type" => one_of(name, value, COMPRESSION_TYPES),
        // Kafka's levels: gzip 1..=9 or -1 (the default), lz4 1..=17, zstd -131072..=22.
        "compression.gzip.level" => match parse_i64(name, value, -1, 9)? {
            0 => Err(format!(
                "Invalid value {value} for configuration {name}: Value must be between 1 and 9, or -1"
            )),
            _ => Ok(()),
        },
        "compression.lz4.level" => parse_i64(name, value, 1, 17).map(|_| ()),
        "compression.zstd.level" => parse_i64(name, value, -131_072, 22).map(|_| ()),
        "segment.jitter.ms"
        | "flush.ms"
        | "file.delete.delay.ms"
        | "min.compaction.lag.ms"
        | "message.timestamp.before.max.ms"
        | "message.timestamp.after.max.ms" => parse_i64(name, value, 0, i64::MAX).map(|_| ()),
        "flush.messages" | "max.compaction.lag.ms" => {
            parse_i64(name, value, 1, i64::MAX).map(|_| ())
        }
        "segment.index.bytes" => parse_i64(name, value, 4, i32::MAX as i64).map(|_| ()),
        "min.cleanable.dirty.ratio" => {
            let invalid = |reason: &str| {
                format!("Invalid value {value} for configuration {name}: {reason}")
            };
            let ratio: f64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("Not a number of type DOUBLE"))?;
            if ratio.is_nan() || ratio < 0.0 {
                Err(invalid("Value must be no less than 0"))
            } else if ratio > 1.0 {
                Err(invalid("Value must be no more than 1"))
            } else {
                Ok(())
            }
        }
        "unclean.leader.election.enable"
        | "preallocate"
        | "remote.log.copy.disable"
        | "remote.log.delete.on.disable" => parse_bool(name, value).map(|_| ()),
        "leader.replication.throttled.replicas" | "follower.replication.throttled.replicas" => {
            throttled_replicas(name, value)
        }
        _ => Err(format!("Unknown topic config name: {name}")),
    }
}

/// Checks the configs of a topic together, as Kafka's `LogConfig.validateValues`.
fn validate_topic_config_set(overrides: &BTreeMap<String, String>) -> Result<(), String> {
    let long = |name: &str, default: i64| {
        overrides
            .get(name)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    };
    let min_lag = long("min.compaction.lag.ms", 0);
    let max_lag = long("max.compaction.lag.ms", i64::MAX);
    if min_lag > max_lag {
        return Err(format!(
            "conflict topic config setting min.compaction.lag.ms ({min_lag}) > max.compaction.lag.ms ({max_lag})"
        ));
    }
    Ok(())
}

/// A topic's config: the overrides set on it (Kafka names), on top of broker defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    /// Builds a topic config from overrides, validating every entry.
    pub fn from_overrides(overrides: BTreeMap<String, String>) -> Result<TopicConfig, String> {
        for (name, value) in &overrides {
            validate_topic_config(name, value)?;
        }
        validate_topic_config_set(&overrides)?;
        Ok(TopicConfig { overrides })
    }

    /// Whether `cleanup.policy` includes `compact`.
    pub fn is_compacted(&self) -> bool {
        self.get("cleanup.policy")
            .is_some_and(|v| v.split(',').any(|p| p.trim() == "compact"))
    }

    /// Whether `cleanup.policy` includes `delete` (the default).
    pub fn deletes(&self) -> bool {
        self.get("cleanup.policy")
            .is_none_or(|v| v.split(',').any(|p| p.trim() == "delete"))
    }

    /// `delete.retention.ms` (default one day).
    pub fn delete_retention_ms(&self) -> i64 {
        self.get_i64("delete.retention.ms").unwrap_or(86_400_000)
    }

    /// `compression.type`: the codec batches are stored with, or `None` for `producer` (the
    /// default: batches are stored as the producer compressed them).
    pub fn compression_target(&self) -> Option<Compression> {
        match self.get("compression.type").map(str::trim) {
            None | Some("producer") => None,
            Some("uncompressed") => Some(Compression::None),
            Some("gzip") => Some(Compression::Gzip),
            Some("snappy") => Some(Compression::Snappy),
            Some("lz4") => Some(Compression::Lz4),
            Some("zstd") => Some(Compression::Zstd),
            Some(_) => None,
        }
    }

    /// Whether `message.timestamp.type` is `LogAppendTime` (the default is `CreateTime`).
    pub fn log_append_time(&self) -> bool {
        self.get("message.timestamp.type")
            .is_some_and(|v| v.trim() == "LogAppendTime")
    }

    /// `message.timestamp.before.max.ms` (default: no limit).
    pub fn timestamp_before_max_ms(&self) -> i64 {
        self.get_i64("message.timestamp.before.max.ms")
            .unwrap_or(TIMESTAMP_BEFORE_MAX_MS_DEFAULT)
    }

    /// `message.timestamp.after.max.ms` (default one hour, as in Kafka 4.0).
    pub fn timestamp_after_max_ms(&self) -> i64 {
        self.get_i64("message.timestamp.after.max.ms")
            .unwrap_or(TIMESTAMP_AFTER_MAX_MS_DEFAULT)
    }

    /// `min.compaction.lag.ms` (default 0).
    pub fn min_compaction_lag_ms(&self) -> i64 {
        self.get_i64("min.compaction.lag.ms").unwrap_or(0)
    }

    /// `max.compaction.lag.ms` (default: no limit).
    pub fn max_compaction_lag_ms(&self) -> i64 {
        self.get_i64("max.compaction.lag.ms").unwrap_or(i64::MAX)
    }

    /// `min.cleanable.dirty.ratio` (default 0.5).
    pub fn min_cleanable_dirty_ratio(&self) -> f64 {
        self.get("min.cleanable.dirty.ratio")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(MIN_CLEANABLE_DIRTY_RATIO_DEFAULT)
    }

    /// The cleaner settings of this topic (compacted topics that are not tiered).
    pub fn compaction_policy(&self) -> crate::tier::CompactionPolicy {
        crate::tier::CompactionPolicy {
            min_cleanable_dirty_ratio: self.min_cleanable_dirty_ratio(),
            min_compaction_lag_ms: self.min_compaction_lag_ms(),
            max_compaction_lag_ms: self.max_compaction_lag_ms(),
        }
    }

    /// The overrides (Kafka name -> value).
    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.overrides
    }

    /// The override of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.overrides.get(name).map(String::as_str)
    }

    fn get_i64(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// The storage config of this topic's partitions.
    pub fn log_config(&self, defaults: &LogConfig) -> LogConfig {
        let mut config = defaults.clone();
        if let Some(v) = self.get_i64("segment.bytes") {
            config.segment_bytes = v.max(SEGMENT_BYTES_MIN_FLOOR as i64) as u64;
        }
        if let Some(v) = self.get_i64("segment.ms") {
            config.segment_ms = v;
        }
        if let Some(v) = self.get_i64("retention.ms") {
            config.retention_ms = v;
        }
        if let Some(v) = self.get_i64("retention.bytes") {
            config.retention_bytes = v;
        }
        if let Some(v) = self.get_i64("index.interval.bytes") {
            config.index_interval_bytes = v.max(0) as u64;
        }
        if let Some(v) = self.get_i64("segment.jitter.ms") {
            config.segment_jitter_ms = v.max(0);
        }
        // Kafka's `LogConfig.maxSegmentMs`: a compacted log rolls its active segment by
        // max.compaction.lag.ms at the latest, so that compaction reaches its records.
        if self.is_compacted() {
            config.segment_ms = config.segment_ms.min(self.max_compaction_lag_ms());
        }
        config
    }

    /// The tiering settings of this topic: `remote.storage.enable`, and the local and whole-log
    /// retentions (`local.retention.*` of -2 mean the `retention.*` value).
    pub fn tier_config(&self, defaults: &LogConfig) -> crate::tier::TierConfig {
        let log = self.log_config(defaults);
        let local = |name: &str, whole: i64| match self.get_i64(name) {
            Some(-2) | None => whole,
            Some(v) => v,
        };
        crate::tier::TierConfig {
            remote_storage_enable: self
                .get("remote.storage.enable")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            local_retention_ms: local("local.retention.ms", log.retention_ms),
            local_retention_bytes: local("local.retention.bytes", log.retention_bytes),
            retention_ms: log.retention_ms,
            retention_bytes: log.retention_bytes,
            compact: self.is_compacted(),
            delete: self.deletes(),
            delete_retention_ms: self.delete_retention_ms(),
        }
    }

    /// max.message.bytes of this topic (the broker's message.max.bytes unless overridden).
    pub fn max_message_bytes(&self, broker_default: usize) -> usize {
        self.get_i64("max.message.bytes")
            .map(|v| v.max(0) as usize)
            .unwrap_or(broker_default)
    }

    /// min.insync.replicas of this topic (default 1).
    pub fn min_insync_replicas(&self) -> i64 {
        self.get_i64("min.insync.replicas").unwrap_or(1)
    }

    /// The effective value of every known topic config: `(name, value, is_default)`.
    pub fn describe(&self, broker: &BrokerConfig) -> Vec<(&'static str, String, bool)> {
        TOPIC_CONFIGS
            .iter()
            .map(|spec| match self.get(spec.name) {
                Some(v) => (spec.name, v.to_string(), false),
                None => (spec.name, default_topic_config(spec.name, broker), true),
            })
            .collect()
    }
}

/// The default value (from the broker config) of a known topic config.
pub fn default_topic_config(name: &str, broker: &BrokerConfig) -> String {
    let log = &broker.log_defaults;
    match name {
        "cleanup.policy" => "delete".to_string(),
        "segment.bytes" => log.segment_bytes.to_string(),
        "segment.ms" => log.segment_ms.to_string(),
        "retention.ms" => log.retention_ms.to_string(),
        "retention.bytes" => log.retention_bytes.to_string(),
        "max.message.bytes" => broker.message_bytes_max.to_string(),
        "index.interval.bytes" => log.index_interval_bytes.to_string(),
        "min.insync.replicas" => "1".to_string(),
        "message.timestamp.type" => "CreateTime".to_string(),
        "local.retention.ms" | "local.retention.bytes" => "-2".to_string(),
        "remote.storage.enable" => "false".to_string(),
        "delete.retention.ms" => "86400000".to_string(),
        "compression.type" => "producer".to_string(),
        "compression.gzip.level" => "-1".to_string(),
        "compression.lz4.level" => "9".to_string(),
        "compression.zstd.level" => "3".to_string(),
        "file.delete.delay.ms" => "60000".to_string(),
        "flush.messages" | "flush.ms" | "max.compaction.lag.ms" => i64::MAX.to_string(),
        "follower.replication.throttled.replicas" | "leader.replication.throttled.replicas" => {
            String::new()
        }
        "message.timestamp.after.max.ms" => TIMESTAMP_AFTER_MAX_MS_DEFAULT.to_string(),
        "message.timestamp.before.max.ms" => TIMESTAMP_BEFORE_MAX_MS_DEFAULT.to_string(),
        "min.cleanable.dirty.ratio" => MIN_CLEANABLE_DIRTY_RATIO_DEFAULT.to_string(),
        "min.compaction.lag.ms" => "0".to_string(),
        "preallocate"
        | "remote.log.copy.disable"
        | "remote.log.delete.on.disable"
        | "unclean.leader.election.enable" => "false".to_string(),
        "segment.index.bytes" => "10485760".to_string(),
        "segment.jitter.ms" => log.segment_jitter_ms.to_string(),
        _ => String::new(),
    }
}

/// Read-only broker configs shown by DescribeConfigs for a BROKER resource.
pub fn describe_broker(config: &BrokerConfig) -> Vec<(&'static str, String, ConfigType)> {
    let log = &config.log_defaults;
    vec![
        ("node.id", config.node_id.to_string(), ConfigType::Int),
        ("broker.id", config.node_id.to_string(), ConfigType::Int),
        (
            "log.dirs",
            config.data_dir.display().to_string(),
            ConfigType::String,
        ),
        (
            "num.partitions",
            config.num_partitions_default.to_string(),
            ConfigType::Int,
        ),
        (
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            ConfigType::Boolean,
        ),
        (
            "socket.request.max.bytes",
            config.request_bytes_max.to_string(),
            ConfigType::Int,
        ),
        (
            "message.max.bytes",
            config.message_bytes_max.to_string(),
            ConfigType::Int,
        ),
        (
            "log.segment.bytes",
            log.segment_bytes.to_string(),
            ConfigType::Int,
        ),
        ("log.roll.ms", log.segment_ms.to_string(), ConfigType::Long),
        (
            "log.retention.ms",
            log.retention_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.retention.bytes",
            log.retention_bytes.to_string(),
            ConfigType::Long,
        ),
        (
            "log.index.interval.bytes",
            log.index_interval_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "log.retention.check.interval.ms",
            config.retention_check_interval_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.cleaner.backoff.ms",
            config.log_cleaner_backoff_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.flush.policy",
            match config.flush {
                FlushPolicy::Ack => "ack".to_string(),
                FlushPolicy::IntervalMs(ms) => format!("interval:{ms}"),
                FlushPolicy::Never => "never".to_string(),
            },
            ConfigType::String,
        ),
        (
            "fetch.max.bytes",
            config.fetch_bytes_max.to_string(),
            ConfigType::Int,
        ),
        (
            "connections.max.idle.ms",
            config.connection_idle_ms_max.to_string(),
            ConfigType::Long,
        ),
        (
            "max.connections",
            config.connections_max.to_string(),
            ConfigType::Int,
        ),
        (
            "max.connections.per.ip",
            config.connections_per_ip_max.to_string(),
            ConfigType::Int,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_like_kafka() {
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("retention.ms", "-2").is_err());
        assert!(validate_topic_config("retention.ms", "abc").is_err());
        assert!(validate_topic_config("segment.bytes", "13").is_err());
        assert!(validate_topic_config("segment.bytes", "1048576").is_ok());
        assert!(validate_topic_config("cleanup.policy", "compact").is_ok());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "shred").is_err());
        assert!(validate_topic_config("delete.retention.ms", "-1").is_err());
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_topic_config("message.timestamp.type", "logappendtime").is_err());
        assert!(validate_topic_config("remote.storage.enable", "TRUE").is_ok());
        assert!(validate_topic_config("no.such.config", "1").is_err());
    }

    /// Goal: the validation of the configs Kafka 4.x added matches Kafka's ranges and messages,
    /// and the defaults and accessors give Kafka's defaults.
    #[test]
    fn validates_kafka_4_configs() {
        let ok = [
            ("compression.type", "zstd"),
            ("compression.type", "uncompressed"),
            ("compression.gzip.level", "-1"),
            ("compression.gzip.level", "9"),
            ("compression.lz4.level", "1"),
            ("compression.zstd.level", "-131072"),
            ("min.cleanable.dirty.ratio", "0"),
            ("min.cleanable.dirty.ratio", "1"),
            ("max.compaction.lag.ms", "1"),
            ("segment.index.bytes", "4"),
            ("leader.replication.throttled.replicas", ""),
            ("follower.replication.throttled.replicas", " 1:0 , 2:0"),
            ("unclean.leader.election.enable", "TRUE"),
            ("message.timestamp.after.max.ms", "0"),
        ];
        for (name, value) in ok {
            assert!(validate_topic_config(name, value).is_ok(), "{name}={value}");
        }
        let refused = [
            ("compression.type", "none", "String must be one of"),
            (
                "compression.gzip.level",
                "10",
                "Value must be no more than 9",
            ),
            ("compression.gzip.level", "0", "between 1 and 9, or -1"),
            (
                "compression.zstd.level",
                "23",
                "Value must be no more than 22",
            ),
            ("min.cleanable.dirty.ratio", "-0.1", "no less than 0"),
            ("min.cleanable.dirty.ratio", "NaN", "no less than 0"),
            ("segment.index.bytes", "3", "Value must be at least 4"),
            (
                "segment.index.bytes",
                "4294967296",
                "Not a number of type INT",
            ),
            ("flush.ms", "-1", "Value must be at least 0"),
            (
                "leader.replication.throttled.replicas",
                "1:x",
                "literal '*'",
            ),
            (
                "message.timestamp.difference.max.ms",
                "1",
                "Unknown topic config name",
            ),
        ];
        for (name, value, expected) in refused {
            let message = validate_topic_config(name, value).expect_err(name);
            assert!(message.contains(expected), "{name}={value}: {message}");
            assert!(message.contains(name), "{message}");
        }
        let config = |pairs: &[(&str, &str)]| {
            TopicConfig::from_overrides(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert!(config(&[
            ("min.compaction.lag.ms", "10"),
            ("max.compaction.lag.ms", "5")
        ])
        .is_err());
        assert!(config(&[
            ("min.compaction.lag.ms", "5"),
            ("max.compaction.lag.ms", "5")
        ])
        .is_ok());
        let defaults = config(&[]).unwrap();
        assert_eq!(defaults.compression_target(), None);
        assert!(!defaults.log_append_time());
        assert_eq!(defaults.timestamp_after_max_ms(), 3_600_000);
        assert_eq!(defaults.timestamp_before_max_ms(), i64::MAX);
        assert_eq!(
            defaults.compaction_policy(),
            crate::tier::CompactionPolicy::default()
        );
        let set = config(&[
            ("compression.type", "lz4"),
            ("message.timestamp.type", "LogAppendTime"),
            ("min.cleanable.dirty.ratio", "0.1"),
            ("cleanup.policy", "compact"),
            ("segment.ms", "100000"),
            ("max.compaction.lag.ms", "60000"),
            ("segment.jitter.ms", "500"),
        ])
        .unwrap();
        assert_eq!(set.compression_target(), Some(Compression::Lz4));
        assert!(set.log_append_time());
        assert_eq!(set.compaction_policy().min_cleanable_dirty_ratio, 0.1);
        let log = set.log_config(&LogConfig::default());
        assert_eq!(
            log.segment_ms, 60_000,
            "max.compaction.lag.ms caps segment.ms"
        );
        assert_eq!(log.segment_jitter_ms, 500);
        // Every known config has a default to describe (empty only for the replica lists).
        let broker = BrokerConfig::default();
        for spec in TOPIC_CONFIGS {
            let default = default_topic_config(spec.name, &broker);
            assert!(
                !default.is_empty() || spec.name.ends_with("throttled.replicas"),
                "{} has a default",
                spec.name
            );
            assert!(
                validate_topic_config(spec.name, &default).is_ok(),
                "{}",
                spec.name
            );
        }
    }

    /// Goal: docs/topic-configs.md stays true: it has a row for every config Strata accepts.
    #[test]
    fn every_topic_config_is_documented() {
        let doc = include_str!("../../docs/topic-configs.md");
        for spec in TOPIC_CONFIGS {
            assert!(
                doc.contains(&format!("| `{}` |", spec.name)),
                "docs/topic-configs.md has no row for {}",
                spec.name
            );
        }
    }

    #[test]
    fn cleanup_policies() {
        let config = |pairs: &[(&str, &str)]| {
            TopicConfig::from_overrides(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let compacted = config(&[
            ("cleanup.policy", "compact"),
            ("remote.storage.enable", "true"),
        ])
        .unwrap();
        assert!(compacted.is_compacted() && !compacted.deletes());
        let both = config(&[
            ("cleanup.policy", "compact,delete"),
            ("remote.storage.enable", "true"),
            ("delete.retention.ms", "5"),
        ])
        .unwrap();
        assert!(both.is_compacted() && both.deletes());
        assert_eq!(both.delete_retention_ms(), 5);
        assert!(config(&[]).unwrap().deletes());
    }

    #[test]
    fn overrides_reach_the_log_config() {
        let mut overrides = BTreeMap::new();
        overrides.insert("segment.bytes".to_string(), "1000".to_string());
        overrides.insert("retention.ms".to_string(), "60000".to_string());
        overrides.insert("max.message.bytes".to_string(), "500".to_string());
        let config = TopicConfig::from_overrides(overrides).unwrap();
        let defaults = LogConfig::default();
        let log = config.log_config(&defaults);
        assert_eq!(log.segment_bytes, 1000);
        assert_eq!(log.retention_ms, 60000);
        assert_eq!(log.retention_bytes, defaults.retention_bytes);
        assert_eq!(config.max_message_bytes(1048588), 500);
        assert_eq!(TopicConfig::default().max_message_bytes(1048588), 1048588);
        let described = config.describe(&BrokerConfig::default());
        assert_eq!(described.len(), TOPIC_CONFIGS.len());
        assert!(described
            .iter()
            .any(|(n, v, d)| *n == "segment.bytes" && v == "1000" && !d));
    }

    /// Goal: a client cannot give a topic segments below the broker's floor (1 MiB by default,
    /// Kafka 4's minimum), with Kafka's message; the floor can be lowered for tests, never
    /// below 14 bytes; a stored config below the floor still loads (clamped to 14 at worst).
    #[test]
    fn segment_bytes_floor_holds_for_clients() {
        let with = |value: &str| BTreeMap::from([("segment.bytes".to_string(), value.to_string())]);
        let floor = BrokerConfig::default().segment_bytes_min;
        assert_eq!(floor, 1024 * 1024);
        let refused = check_client_segment_bytes(&with("14"), floor).unwrap_err();
        assert!(refused.contains("at least 1048576"), "{refused}");
        assert!(check_client_segment_bytes(&with("1048575"), floor).is_err());
        assert!(check_client_segment_bytes(&with("1048576"), floor).is_ok());
        assert!(check_client_segment_bytes(&BTreeMap::new(), floor).is_ok());
        assert!(check_client_segment_bytes(&with("14"), SEGMENT_BYTES_MIN_FLOOR).is_ok());
        let stored = TopicConfig::from_overrides(with("14")).expect("an old stored config loads");
        assert_eq!(stored.log_config(&LogConfig::default()).segment_bytes, 14);
    }
}
