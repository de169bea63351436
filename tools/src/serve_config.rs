//! `strata serve` configuration: a TOML file whose fields mirror `BrokerConfig`, overridden by
//! command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use strata_cluster::config::{BrokerConfig, FlushPolicy};

/// The TOML config file. Every field is optional; missing ones keep `BrokerConfig`'s defaults.
///
/// ```toml
/// listen = "127.0.0.1:9092"
/// data_dir = "/var/lib/strata"
/// advertised_host = "broker1.example"
/// node_id = 0
/// flush = "ack"               # "ack" | "never" | "interval:MS"
/// num_partitions = 1
/// auto_create_topics = true
/// message_max_bytes = 1048588
/// request_max_bytes = 104857600
/// retention_check_interval_ms = 300000
/// log_cleaner_backoff_ms = 15000  # how often compacted topics are checked for compaction
/// metrics_listen = "127.0.0.1:9644"  # Prometheus GET /metrics; "none" disables
/// object_store = "s3://bucket/prefix"  # remote tier: file:///abs/path, s3://..., none
///                                       # (default: file://<data_dir>/remote)
/// tier_interval_ms = 5000     # how often offload and remote retention run
/// fetch_max_bytes = 57671680            # fetch.max.bytes: record bytes of one Fetch answer
/// queued_max_response_bytes = 67108864  # answer bytes one connection may owe unread
/// queued_max_request_bytes = 536870912  # request bytes being read at once, all connections
/// fetch_memory_max_bytes = 1073741824   # record bytes all Fetch answers may hold at once
/// connections_max_idle_ms = 600000      # connections.max.idle.ms
/// max_connections = 10000               # default: half the open-files limit
/// max_connections_per_ip = 10000        # default: max_connections
/// socket_request_read_timeout_ms = 30000  # a started request frame must arrive within this
/// group_initial_rebalance_delay_ms = 3000  # first rebalance of a new group waits for members
///
/// [log]                       # defaults of the topic configs, Kafka names
/// "segment.bytes" = 1073741824
/// "segment.ms" = 604800000
/// "retention.ms" = 604800000
/// "retention.bytes" = -1
/// "index.interval.bytes" = 4096
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub advertised_host: Option<String>,
    pub node_id: Option<i32>,
    pub flush: Option<String>,
    pub num_partitions: Option<i32>,
    pub auto_create_topics: Option<bool>,
    pub message_max_bytes: Option<usize>,
    pub request_max_bytes: Option<usize>,
    pub retention_check_interval_ms: Option<u64>,
    pub log_cleaner_backoff_ms: Option<u64>,
    pub metrics_listen: Option<String>,
    pub object_store: Option<String>,
    pub tier_interval_ms: Option<u64>,
    pub log: Option<BTreeMap<String, toml::Value>>,
    pub fetch_max_bytes: Option<usize>,
    pub queued_max_response_bytes: Option<usize>,
    pub queued_max_request_bytes: Option<usize>,
    pub fetch_memory_max_bytes: Option<usize>,
    pub connections_max_idle_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub socket_request_read_timeout_ms: Option<u64>,
    pub group_initial_rebalance_delay_ms: Option<u64>,
}

/// Command-line overrides (each `None` when the flag was not given).
#[derive(Debug, Default, Clone)]
pub struct FlagOverrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub advertised_host: Option<String>,
    pub node_id: Option<i32>,
    pub flush: Option<String>,
    pub metrics_listen: Option<String>,
    pub object_store: Option<String>,
    pub tier_interval_ms: Option<u64>,
    pub fetch_max_bytes: Option<usize>,
    pub connections_max_idle_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub socket_request_read_timeout_ms: Option<u64>,
    pub group_initial_rebalance_delay_ms: Option<u64>,
    pub segment_bytes_min: Option<u64>,
}

/// The longest `connections_max_idle_ms` / `socket_request_read_timeout_ms` accepted: Kafka's
/// int configs stop at `i32::MAX` milliseconds (about 24.8 days).
const TIMEOUT_MS_MAX: u64 = i32::MAX as u64;

/// A positive value of `name` no larger than `max`.
fn positive<T: PartialOrd + Default + std::fmt::Display + Copy>(
    name: &str,
    value: T,
    max: T,
) -> anyhow::Result<T> {
    if value <= T::default() || value > max {
        bail!("{name} must be in [1, {max}], not {value}");
    }
    Ok(value)
}

/// The remote tier's object-store URL: the flag, else the file, else `None` (the default,
/// `file://<data_dir>/remote`; see `object_store_url`).
pub fn object_store_url(file: &FileConfig, flags: &FlagOverrides) -> Option<String> {
    flags
        .object_store
        .clone()
        .or_else(|| file.object_store.clone())
}

/// Where `strata serve` serves Prometheus metrics unless told otherwise.
pub const METRICS_LISTEN_DEFAULT: &str = "127.0.0.1:9644";

/// Parses a metrics address: `HOST:PORT`, or `none` (no metrics endpoint).
pub fn parse_metrics_listen(s: &str) -> anyhow::Result<Option<SocketAddr>> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    parse_listen(s.trim())
        .map(Some)
        .with_context(|| format!("bad metrics address {s:?} (expected HOST:PORT or none)"))
}

/// Parses a TOML config file's text.
pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    toml::from_str(text).map_err(|e| anyhow!("{e}"))
}

/// Parses `ack`, `never` or `interval:MS`.
pub fn parse_flush(s: &str) -> anyhow::Result<FlushPolicy> {
    match s.trim() {
        "ack" => Ok(FlushPolicy::Ack),
        "never" => Ok(FlushPolicy::Never),
        other => match other.strip_prefix("interval:") {
            Some(ms) => {
                let ms: u64 = ms
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("bad flush interval {ms:?}: expected milliseconds"))?;
                if ms == 0 {
                    bail!("flush interval must be positive");
                }
                Ok(FlushPolicy::IntervalMs(ms))
            }
            None => bail!("bad flush policy {other:?}: expected ack, never or interval:MS"),
        },
    }
}

fn parse_listen(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| anyhow!("bad listen address {s:?} (expected HOST:PORT)"))
}

fn toml_scalar_i64(name: &str, value: &toml::Value) -> anyhow::Result<i64> {
    match value {
        toml::Value::Integer(i) => Ok(*i),
        toml::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| anyhow!("[log] {name} = {s:?} is not an integer")),
        other => bail!("[log] {name} = {other:?} is not an integer"),
    }
}

/// Builds the broker config: defaults, then the file, then the flags.
pub fn build(file: FileConfig, flags: FlagOverrides) -> anyhow::Result<BrokerConfig> {
    let mut config = BrokerConfig::default();
    if let Some(listen) = flags.listen.as_deref().or(file.listen.as_deref()) {
        config.listen = parse_listen(listen)?;
    }
    if let Some(dir) = flags.data_dir.or(file.data_dir) {
        config.data_dir = dir;
    }
    if let Some(host) = flags.advertised_host.or(file.advertised_host) {
        if host.trim().is_empty() {
            bail!("advertised host must not be empty");
        }
        config.advertised_host = Some(host);
    }
    if let Some(node_id) = flags.node_id.or(file.node_id) {
        if node_id < 0 {
            bail!("node id must be >= 0, not {node_id}");
        }
        config.node_id = node_id;
    }
    if let Some(flush) = flags.flush.as_deref().or(file.flush.as_deref()) {
        config.flush = parse_flush(flush)?;
    }
    if let Some(ms) = flags.tier_interval_ms.or(file.tier_interval_ms) {
        if ms == 0 {
            bail!("tier_interval_ms must be positive");
        }
        config.tier_interval_ms = ms;
    }
    config.metrics_listen = parse_metrics_listen(
        flags
            .metrics_listen
            .as_deref()
            .or(file.metrics_listen.as_deref())
            .unwrap_or(METRICS_LISTEN_DEFAULT),
    )?;
    if let Some(n) = file.num_partitions {
        if n < 1 {
            bail!("num_partitions must be >= 1, not {n}");
        }
        config.num_partitions_default = n;
    }
    if let Some(b) = file.auto_create_topics {
        config.auto_create_topics = b;
    }
    if let Some(n) = file.message_max_bytes {
        if n == 0 {
            bail!("message_max_bytes must be positive");
        }
        config.message_bytes_max = n;
    }
    if let Some(n) = file.request_max_bytes {
        if n == 0 {
            bail!("request_max_bytes must be positive");
        }
        config.request_bytes_max = n;
    }
    if let Some(ms) = file.retention_check_interval_ms {
        if ms == 0 {
            bail!("retention_check_interval_ms must be positive");
        }
        config.retention_check_interval_ms = ms;
    }
    if let Some(ms) = flags
        .group_initial_rebalance_delay_ms
        .or(file.group_initial_rebalance_delay_ms)
    {
        config.group_initial_rebalance_delay_ms = ms;
    }
    if let Some(n) = flags.segment_bytes_min {
        let floor = strata_cluster::config::SEGMENT_BYTES_MIN_FLOOR;
        if n < floor {
            bail!("--segment-bytes-min must be at least {floor}, not {n}");
        }
        config.segment_bytes_min = n;
    }
    if let Some(n) = flags.fetch_max_bytes.or(file.fetch_max_bytes) {
        config.fetch_bytes_max = positive("fetch_max_bytes", n, i32::MAX as usize)?;
    }
    if let Some(n) = file.queued_max_request_bytes {
        config.queued_request_bytes_max = positive("queued_max_request_bytes", n, usize::MAX)?;
    }
    if let Some(n) = file.queued_max_response_bytes {
        config.connection_answers_bytes_max = positive("queued_max_response_bytes", n, usize::MAX)?;
    }
    if let Some(n) = file.fetch_memory_max_bytes {
        config.fetch_memory_bytes_max = positive("fetch_memory_max_bytes", n, usize::MAX)?;
    }
    if let Some(ms) = flags
        .connections_max_idle_ms
        .or(file.connections_max_idle_ms)
    {
        config.connection_idle_ms_max = positive("connections_max_idle_ms", ms, TIMEOUT_MS_MAX)?;
    }
    if let Some(ms) = flags
        .socket_request_read_timeout_ms
        .or(file.socket_request_read_timeout_ms)
    {
        config.frame_read_ms_max = positive("socket_request_read_timeout_ms", ms, TIMEOUT_MS_MAX)?;
    }
    let max_connections = flags.max_connections.or(file.max_connections);
    if let Some(n) = max_connections {
        config.connections_max = positive("max_connections", n, usize::MAX)?;
        // Without its own setting, the per-IP limit follows max_connections (as its default).
        config.connections_per_ip_max = config.connections_max;
    }
    if let Some(n) = flags.max_connections_per_ip.or(file.max_connections_per_ip) {
        config.connections_per_ip_max = positive("max_connections_per_ip", n, usize::MAX)?;
    }
    if let Some(ms) = file.log_cleaner_backoff_ms {
        if ms == 0 {
            bail!("log_cleaner_backoff_ms must be positive");
        }
        config.log_cleaner_backoff_ms = ms;
    }
    for (name, value) in file.log.unwrap_or_default() {
        let v = toml_scalar_i64(&name, &value)?;
        let log = &mut config.log_defaults;
        match name.as_str() {
            "segment.bytes" => {
                if v < 14 {
                    bail!("[log] segment.bytes must be >= 14, not {v}");
                }
                log.segment_bytes = v as u64;
            }
            "segment.ms" => {
                if v < 1 {
                    bail!("[log] segment.ms must be >= 1, not {v}");
                }
                log.segment_ms = v;
            }
            "retention.ms" => {
                if v < -1 {
                    bail!("[log] retention.ms must be >= -1, not {v}");
                }
                log.retention_ms = v;
            }
            "retention.bytes" => {
                if v < -1 {
                    bail!("[log] retention.bytes must be >= -1, not {v}");
                }
                log.retention_bytes = v;
            }
            "index.interval.bytes" => {
                if v < 0 {
                    bail!("[log] index.interval.bytes must be >= 0, not {v}");
                }
                log.index_interval_bytes = v as u64;
            }
            other => bail!(
                "[log] {other} is not supported (segment.bytes, segment.ms, retention.ms, \
                 retention.bytes, index.interval.bytes)"
            ),
        }
    }
    Ok(config)
}

/// Reads and parses the config file at `path`.
pub fn read_file(path: &std::path::Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("bad config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file = parse_file(
            r#"
            listen = "0.0.0.0:19092"
            data_dir = "/tmp/from-file"
            node_id = 3
            flush = "interval:250"
            num_partitions = 4
            auto_create_topics = false
            message_max_bytes = 2000000
            [log]
            "segment.bytes" = 1048576
            "retention.ms" = "-1"
            "#,
        )
        .expect("parse");
        let flags = FlagOverrides {
            data_dir: Some(PathBuf::from("/tmp/from-flag")),
            flush: Some("never".to_string()),
            ..FlagOverrides::default()
        };
        let config = build(file, flags).expect("build");
        assert_eq!(config.listen, "0.0.0.0:19092".parse().expect("addr"));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/from-flag"));
        assert_eq!(config.node_id, 3);
        assert_eq!(config.flush, FlushPolicy::Never);
        assert_eq!(config.num_partitions_default, 4);
        assert!(!config.auto_create_topics);
        assert_eq!(config.message_bytes_max, 2_000_000);
        assert_eq!(config.log_defaults.segment_bytes, 1_048_576);
        assert_eq!(config.log_defaults.retention_ms, -1);
    }

    #[test]
    fn defaults_without_file_or_flags() {
        let config = build(FileConfig::default(), FlagOverrides::default()).expect("build");
        assert_eq!(config.listen, "127.0.0.1:9092".parse().expect("addr"));
        assert_eq!(config.data_dir, PathBuf::from("./strata-data"));
        assert_eq!(config.flush, FlushPolicy::Ack);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9644".parse().expect("addr"))
        );
    }

    #[test]
    fn metrics_listen_from_file_flag_or_none() {
        let file = parse_file("metrics_listen = \"0.0.0.0:19644\"\n").expect("parse");
        let config = build(file, FlagOverrides::default()).expect("build");
        assert_eq!(
            config.metrics_listen,
            Some("0.0.0.0:19644".parse().expect("addr"))
        );
        let file = parse_file("metrics_listen = \"0.0.0.0:19644\"\n").expect("parse");
        let flags = FlagOverrides {
            metrics_listen: Some("none".to_string()),
            ..FlagOverrides::default()
        };
        assert_eq!(build(file, flags).expect("build").metrics_listen, None);
        let file = parse_file("metrics_listen = \"NONE\"\n").expect("parse");
        assert_eq!(
            build(file, FlagOverrides::default())
                .expect("build")
                .metrics_listen,
            None
        );
        let flags = FlagOverrides {
            metrics_listen: Some("nowhere".to_string()),
            ..FlagOverrides::default()
        };
        assert!(build(FileConfig::default(), flags).is_err());
    }

    #[test]
    fn object_store_and_tier_interval_from_file_or_flag() {
        let text = "object_store = \"s3://b/p\"\ntier_interval_ms = 700\n";
        let file = parse_file(text).expect("parse");
        let flags = FlagOverrides::default();
        assert_eq!(object_store_url(&file, &flags).as_deref(), Some("s3://b/p"));
        assert_eq!(build(file, flags).expect("build").tier_interval_ms, 700);
        let file = parse_file(text).expect("parse");
        let flags = FlagOverrides {
            object_store: Some("none".to_string()),
            tier_interval_ms: Some(200),
            ..FlagOverrides::default()
        };
        assert_eq!(object_store_url(&file, &flags).as_deref(), Some("none"));
        assert_eq!(build(file, flags).expect("build").tier_interval_ms, 200);
        let defaults = FileConfig::default();
        assert_eq!(object_store_url(&defaults, &FlagOverrides::default()), None);
        let flags = FlagOverrides {
            tier_interval_ms: Some(0),
            ..FlagOverrides::default()
        };
        assert!(build(FileConfig::default(), flags).is_err());
    }

    /// The fetch-memory and connection limits come from the file, flags override them, and
    /// nonsense values are refused.
    #[test]
    fn fetch_and_connection_limits_from_file_or_flag() {
        let text = "fetch_max_bytes = 1000000\nqueued_max_response_bytes = 2000000\n\
                    fetch_memory_max_bytes = 30000000\nconnections_max_idle_ms = 5000\n\
                    max_connections = 100\nsocket_request_read_timeout_ms = 700\n";
        let config =
            build(parse_file(text).expect("parse"), FlagOverrides::default()).expect("build");
        assert_eq!(config.fetch_bytes_max, 1_000_000);
        assert_eq!(config.connection_answers_bytes_max, 2_000_000);
        assert_eq!(config.fetch_memory_bytes_max, 30_000_000);
        assert_eq!(config.connection_idle_ms_max, 5000);
        assert_eq!(config.connections_max, 100);
        assert_eq!(
            config.connections_per_ip_max, 100,
            "follows max_connections"
        );
        assert_eq!(config.frame_read_ms_max, 700);
        let flags = FlagOverrides {
            fetch_max_bytes: Some(4096),
            connections_max_idle_ms: Some(60_000),
            max_connections: Some(50),
            max_connections_per_ip: Some(5),
            socket_request_read_timeout_ms: Some(900),
            ..FlagOverrides::default()
        };
        let config = build(parse_file(text).expect("parse"), flags).expect("build");
        assert_eq!(config.fetch_bytes_max, 4096);
        assert_eq!(config.connection_idle_ms_max, 60_000);
        assert_eq!(config.connections_max, 50);
        assert_eq!(config.connections_per_ip_max, 5);
        assert_eq!(config.frame_read_ms_max, 900, "the flag wins over the file");
        let defaults = build(FileConfig::default(), FlagOverrides::default()).expect("build");
        assert_eq!(
            defaults.fetch_bytes_max, 57_671_680,
            "Kafka's fetch.max.bytes"
        );
        assert_eq!(defaults.connection_idle_ms_max, 600_000);
        assert!(defaults.connections_max >= 16);
        for bad in [
            "fetch_max_bytes = 0\n",
            "fetch_max_bytes = 4294967296\n",
            "max_connections = 0\n",
            "connections_max_idle_ms = 0\n",
            "connections_max_idle_ms = 9999999999\n",
            "socket_request_read_timeout_ms = 0\n",
        ] {
            let file = parse_file(bad).expect("parse");
            assert!(build(file, FlagOverrides::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_inputs_are_rejected() {
        assert!(parse_file("listen = 5\n").is_err());
        assert!(parse_file("no_such_field = 1\n").is_err());
        assert!(parse_flush("sometimes").is_err());
        assert!(parse_flush("interval:0").is_err());
        assert_eq!(
            parse_flush("interval:10").expect("flush"),
            FlushPolicy::IntervalMs(10)
        );
        let file = parse_file("[log]\n\"cleanup.policy\" = \"compact\"\n").expect("parse");
        assert!(build(file, FlagOverrides::default()).is_err());
        let flags = FlagOverrides {
            listen: Some("localhost".to_string()),
            ..FlagOverrides::default()
        };
        assert!(build(FileConfig::default(), flags).is_err());
    }

    /// The initial rebalance delay is Kafka's 3 s unless the file or (over it) the flag sets it.
    #[test]
    fn group_initial_rebalance_delay_from_file_or_flag() {
        let none = build(FileConfig::default(), FlagOverrides::default()).expect("build");
        assert_eq!(none.group_initial_rebalance_delay_ms, 3_000);
        let file = || parse_file("group_initial_rebalance_delay_ms = 250").expect("parse");
        let from_file = build(file(), FlagOverrides::default()).expect("build");
        assert_eq!(from_file.group_initial_rebalance_delay_ms, 250);
        let flags = FlagOverrides {
            group_initial_rebalance_delay_ms: Some(0),
            ..FlagOverrides::default()
        };
        let from_flag = build(file(), flags).expect("build");
        assert_eq!(from_flag.group_initial_rebalance_delay_ms, 0);
    }
}
