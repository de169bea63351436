//! Broker configuration and per-topic configuration with Kafka's names.
//!
//! Topic configs are stored as overrides (`key=value`, Kafka names) on top of the broker's defaults;
//! [`TopicConfig::log_config`] turns them into the storage layer's [`LogConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use strata_storage::LogConfig;

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

/// Every topic config Strata accepts. Anything else is INVALID_CONFIG.
pub const TOPIC_CONFIGS: &[TopicConfigSpec] = &[
    TopicConfigSpec {
        name: "cleanup.policy",
        broker_synonym: Some("log.cleanup.policy"),
        config_type: ConfigType::List,
        doc: "delete, compact or compact,delete: compaction keeps the latest record per key (closed local segments, and the remote tier when tiered).",
    },
    TopicConfigSpec {
        name: "segment.bytes",
        broker_synonym: Some("log.segment.bytes"),
        config_type: ConfigType::Int,
        doc: "Segment file size at which the log rolls a new segment.",
    },
    TopicConfigSpec {
        name: "segment.ms",
        broker_synonym: Some("log.roll.ms"),
        config_type: ConfigType::Long,
        doc: "Age of the active segment at which the log rolls a new segment.",
    },
    TopicConfigSpec {
        name: "retention.ms",
        broker_synonym: Some("log.retention.ms"),
        config_type: ConfigType::Long,
        doc: "Age after which whole segments are deleted; -1 keeps them forever.",
    },
    TopicConfigSpec {
        name: "retention.bytes",
        broker_synonym: Some("log.retention.bytes"),
        config_type: ConfigType::Long,
        doc: "Partition size above which the oldest segments are deleted; -1 for no limit.",
    },
    TopicConfigSpec {
        name: "max.message.bytes",
        broker_synonym: Some("message.max.bytes"),
        config_type: ConfigType::Int,
        doc: "Largest record batch accepted, in bytes.",
    },
    TopicConfigSpec {
        name: "index.interval.bytes",
        broker_synonym: Some("log.index.interval.bytes"),
        config_type: ConfigType::Int,
        doc: "Bytes of log between two offset index entries.",
    },
    TopicConfigSpec {
        name: "min.insync.replicas",
        broker_synonym: Some("min.insync.replicas"),
        config_type: ConfigType::Int,
        doc: "Replicas that must acknowledge an acks=all write; one node has one replica.",
    },
    TopicConfigSpec {
        name: "message.timestamp.type",
        broker_synonym: Some("log.message.timestamp.type"),
        config_type: ConfigType::String,
        doc: "Only CreateTime is supported.",
    },
    TopicConfigSpec {
        name: "local.retention.ms",
        broker_synonym: Some("log.local.retention.ms"),
        config_type: ConfigType::Long,
        doc: "Local retention by age when tiering is enabled; -2 means retention.ms.",
    },
    TopicConfigSpec {
        name: "local.retention.bytes",
        broker_synonym: Some("log.local.retention.bytes"),
        config_type: ConfigType::Long,
        doc: "Local retention by size when tiering is enabled; -2 means retention.bytes.",
    },
    TopicConfigSpec {
        name: "delete.retention.ms",
        broker_synonym: Some("log.cleaner.delete.retention.ms"),
        config_type: ConfigType::Long,
        doc: "How long a tombstone of a compacted topic is kept after its timestamp.",
    },
    TopicConfigSpec {
        name: "remote.storage.enable",
        broker_synonym: None,
        config_type: ConfigType::Boolean,
        doc: "Offload closed segments to the object store as Parquet; reads below the local start are served from there.",
    },
];

/// Looks up a topic config by its Kafka name.
pub fn topic_config_spec(name: &str) -> Option<&'static TopicConfigSpec> {
    TOPIC_CONFIGS.iter().find(|spec| spec.name == name)
}

fn parse_i64(name: &str, value: &str, min: i64, max: i64) -> Result<i64, String> {
    let parsed: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("Invalid value {value} for configuration {name}: not a number"))?;
    if parsed < min || parsed > max {
        return Err(format!(
            "Invalid value {value} for configuration {name}: must be in [{min}, {max}]"
        ));
    }
    Ok(parsed)
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
        // Kafka's minimum is 14 bytes (the smallest legacy record); kept so tests can roll often.
        "segment.bytes" => parse_i64(name, value, 14, i32::MAX as i64).map(|_| ()),
        "segment.ms" => parse_i64(name, value, 1, i64::MAX).map(|_| ()),
        "retention.ms" | "retention.bytes" => parse_i64(name, value, -1, i64::MAX).map(|_| ()),
        "local.retention.ms" | "local.retention.bytes" => {
            parse_i64(name, value, -2, i64::MAX).map(|_| ())
        }
        "max.message.bytes" | "index.interval.bytes" => {
            parse_i64(name, value, 0, i32::MAX as i64).map(|_| ())
        }
        "min.insync.replicas" => parse_i64(name, value, 1, i32::MAX as i64).map(|_| ()),
        "message.timestamp.type" => match value {
            "CreateTime" => Ok(()),
            "LogAppendTime" => Err(
                "Invalid value LogAppendTime for configuration message.timestamp.type: only CreateTime is supported"
                    .to_string(),
            ),
            _ => Err(format!(
                "Invalid value {value} for configuration message.timestamp.type: String must be one of: CreateTime, LogAppendTime"
            )),
        },
        "remote.storage.enable" => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => Err(format!(
                "Invalid value {value} for configuration remote.storage.enable: Expected value to be either true or false"
            )),
        },
        _ => Err(format!("Unknown topic config name: {name}")),
    }
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
            config.segment_bytes = v.max(14) as u64;
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
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_err());
        assert!(validate_topic_config("remote.storage.enable", "TRUE").is_ok());
        assert!(validate_topic_config("no.such.config", "1").is_err());
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
}
