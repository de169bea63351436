//! Shared pieces of DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsSynonym,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::config::{self, check_client_segment_bytes, BrokerConfig, ConfigType, TopicConfig};
use crate::errors::BrokerError;

/// ConfigResource type TOPIC.
pub const RESOURCE_TOPIC: i8 = 2;
/// ConfigResource type BROKER.
pub const RESOURCE_BROKER: i8 = 4;

/// Config source DYNAMIC_TOPIC_CONFIG.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
/// Config source STATIC_BROKER_CONFIG.
pub const SOURCE_STATIC_BROKER: i8 = 4;
/// Config source DEFAULT_CONFIG.
pub const SOURCE_DEFAULT: i8 = 5;

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// The DescribeConfigs entries of a topic's configs.
pub fn describe_topic(
    broker_config: &BrokerConfig,
    topic_config: &TopicConfig,
    keys: Option<&[StrBytes]>,
    include_synonyms: bool,
    include_documentation: bool,
    version: i16,
) -> Vec<DescribeConfigsResourceResult> {
    topic_config
        .describe(broker_config)
        .into_iter()
        .filter(|(name, _, _)| keys.is_none_or(|keys| keys.iter().any(|k| k.as_str() == *name)))
        .filter_map(|(name, value, is_default)| {
            let spec = config::topic_config_spec(name)?;
            let source = if is_default {
                SOURCE_DEFAULT
            } else {
                SOURCE_DYNAMIC_TOPIC
            };
            let mut entry = DescribeConfigsResourceResult::default()
                .with_name(s(name))
                .with_value(Some(s(value.clone())))
                .with_read_only(false)
                .with_config_source(source)
                .with_is_sensitive(false);
            if include_synonyms {
                let mut synonyms = Vec::new();
                if !is_default {
                    synonyms.push(
                        DescribeConfigsSynonym::default()
                            .with_name(s(name))
                            .with_value(Some(s(value)))
                            .with_source(SOURCE_DYNAMIC_TOPIC),
                    );
                }
                if let Some(broker_name) = spec.broker_synonym {
                    synonyms.push(
                        DescribeConfigsSynonym::default()
                            .with_name(s(broker_name))
                            .with_value(Some(s(config::default_topic_config(name, broker_config))))
                            .with_source(SOURCE_DEFAULT),
                    );
                }
                entry = entry.with_synonyms(synonyms);
            }
            if version >= 3 {
                entry = entry
                    .with_config_type(spec.config_type as i8)
                    .with_documentation(include_documentation.then(|| s(spec.doc)));
            }
            Some(entry)
        })
        .collect()
}

/// The DescribeConfigs entries of the broker's (read-only) configs.
pub fn describe_broker(
    broker_config: &BrokerConfig,
    keys: Option<&[StrBytes]>,
    version: i16,
) -> Vec<DescribeConfigsResourceResult> {
    config::describe_broker(broker_config)
        .into_iter()
        .filter(|(name, _, _)| keys.is_none_or(|keys| keys.iter().any(|k| k.as_str() == *name)))
        .map(|(name, value, config_type): (&str, String, ConfigType)| {
            let mut entry = DescribeConfigsResourceResult::default()
                .with_name(s(name))
                .with_value(Some(s(value)))
                .with_read_only(true)
                .with_config_source(SOURCE_STATIC_BROKER)
                .with_is_sensitive(false);
            if version >= 3 {
                entry = entry
                    .with_config_type(config_type as i8)
                    .with_documentation(None);
            }
            entry
        })
        .collect()
}

/// Checks that a BROKER resource names this broker ("" is the cluster-wide default).
pub fn check_broker_resource(broker: &Broker, name: &str) -> Result<(), BrokerError> {
    if name.is_empty() || name == broker.node_id().to_string() {
        Ok(())
    } else {
        Err(BrokerError::InvalidRequest(format!(
            "unknown broker id {name}; this node is {}",
            broker.node_id()
        )))
    }
}

/// Validates `overrides` and makes them the topic's whole config (live and persisted).
pub fn replace_topic_config(
    broker: &Broker,
    topic: &str,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), BrokerError> {
    let Some(current) = broker.topic(topic) else {
        return Err(BrokerError::UnknownTopicOrPartition(topic.to_string()));
    };
    // A segment.bytes kept as it was (set before the floor existed) is not refused again.
    if overrides.get("segment.bytes") != current.config().overrides().get("segment.bytes") {
        check_client_segment_bytes(&overrides, broker.config().segment_bytes_min)
            .map_err(BrokerError::InvalidConfig)?;
    }
    let config = TopicConfig::from_overrides(overrides).map_err(BrokerError::InvalidConfig)?;
    broker.set_topic_config(topic, config, validate_only)
}

/// The error for altering broker configs: they are static in Strata.
pub fn broker_configs_read_only() -> BrokerError {
    BrokerError::InvalidRequest(
        "broker configs are static in Strata and cannot be altered".to_string(),
    )
}

/// The error for a resource type other than TOPIC and BROKER.
pub fn unsupported_resource(resource_type: i8) -> BrokerError {
    BrokerError::InvalidRequest(format!("unsupported config resource type {resource_type}"))
}
