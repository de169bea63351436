//! CreateTopics (v2-7): Kafka's name rules, replication factor -1 or 1, partitions -1 for the
//! default, validated configs, `validate_only`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::configs::{SOURCE_DEFAULT, SOURCE_DYNAMIC_TOPIC};
use crate::broker::{validate_topic_name, Broker};
use crate::config::{check_client_segment_bytes, TopicConfig};
use crate::errors::BrokerError;
use crate::internal_topics;

struct Created {
    id: Uuid,
    partitions: i32,
    config: TopicConfig,
}

fn resolve(broker: &Broker, topic: &CreatableTopic) -> Result<(i32, TopicConfig), BrokerError> {
    let name = topic.name.0.as_str();
    validate_topic_name(name)?;
    internal_topics::check_client_create(name)?;
    let node = broker.node_id();
    let partitions = if topic.assignments.is_empty() {
        if topic.replication_factor != -1 && topic.replication_factor != 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "Replication factor {} is invalid: this cluster has 1 broker (use -1 or 1)",
                topic.replication_factor
            )));
        }
        match topic.num_partitions {
            -1 => broker.config().num_partitions_default,
            n if n >= 1 => n,
            n => {
                return Err(BrokerError::InvalidPartitions(format!(
                    "Number of partitions was set to an invalid non-positive value {n}"
                )))
            }
        }
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(BrokerError::InvalidRequest(
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."
                    .to_string(),
            ));
        }
        let count = topic.assignments.len() as i32;
        let mut seen: Vec<bool> = vec![false; topic.assignments.len()];
        for assignment in &topic.assignments {
            let index = assignment.partition_index;
            let slot = usize::try_from(index)
                .ok()
                .and_then(|i| seen.get_mut(i))
                .ok_or_else(|| {
                    BrokerError::InvalidReplicaAssignment(format!(
                        "partition index {index} out of range [0, {count})"
                    ))
                })?;
            if *slot {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "partition {index} assigned twice"
                )));
            }
            *slot = true;
            if assignment.broker_ids.len() != 1 || assignment.broker_ids[0].0 != node {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "partition {index} must be assigned to exactly broker {node}"
                )));
            }
        }
        count
    };
    let mut overrides = BTreeMap::new();
    for config in &topic.configs {
        let value = config.value.as_ref().ok_or_else(|| {
            BrokerError::InvalidConfig(format!(
                "Null value not supported for topic config {}",
                config.name
            ))
        })?;
        overrides.insert(config.name.to_string(), value.to_string());
    }
    check_client_segment_bytes(&overrides, broker.config().segment_bytes_min)
        .map_err(BrokerError::InvalidConfig)?;
    let config = TopicConfig::from_overrides(overrides).map_err(BrokerError::InvalidConfig)?;
    Ok((partitions, config))
}

fn create_one(
    broker: &Broker,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<Created, BrokerError> {
    let (partitions, config) = resolve(broker, topic)?;
    let created = broker.create_topic(
        topic.name.0.as_str(),
        partitions,
        config.clone(),
        validate_only,
    )?;
    Ok(Created {
        id: created.map(|t| t.id()).unwrap_or(Uuid::nil()),
        partitions,
        config,
    })
}

/// Handles a CreateTopics request, off the async workers and after the admin requests before it
/// ([`Broker::run_admin`]).
pub async fn handle(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    broker
        .run_admin(move |broker| handle_blocking(broker, request, version))
        .await
}

fn handle_blocking(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut name_counts: HashMap<&str, usize> = HashMap::new();
    for topic in &request.topics {
        *name_counts.entry(topic.name.0.as_str()).or_default() += 1;
    }
    let results = request
        .topics
        .iter()
        .map(|topic| {
            let duplicate = name_counts.get(topic.name.0.as_str()).copied().unwrap_or(0) > 1;
            let outcome = if duplicate {
                Err(BrokerError::InvalidRequest(format!(
                    "Create topics request from client contains multiple entries for topic {}",
                    topic.name.0
                )))
            } else {
                create_one(broker, topic, request.validate_only)
            };
            let base = CreatableTopicResult::default().with_name(topic.name.clone());
            match outcome {
                Ok(created) => {
                    let mut result = base.with_error_code(0).with_error_message(None);
                    if version >= 5 {
                        let configs = created
                            .config
                            .describe(broker.config())
                            .into_iter()
                            .map(|(name, value, is_default)| {
                                CreatableTopicConfigs::default()
                                    .with_name(StrBytes::from_static_str(name))
                                    .with_value(Some(StrBytes::from_string(value)))
                                    .with_read_only(false)
                                    .with_config_source(if is_default {
                                        SOURCE_DEFAULT
                                    } else {
                                        SOURCE_DYNAMIC_TOPIC
                                    })
                                    .with_is_sensitive(false)
                            })
                            .collect();
                        result = result
                            .with_num_partitions(created.partitions)
                            .with_replication_factor(1)
                            .with_configs(Some(configs));
                    }
                    if version >= 7 {
                        result = result.with_topic_id(created.id);
                    }
                    result
                }
                Err(error) => {
                    tracing::debug!(topic = %topic.name.0, %error, "create topic failed");
                    let mut result = base
                        .with_error_code(error.code())
                        .with_error_message(Some(StrBytes::from_string(error.to_string())));
                    if version >= 5 {
                        result = result.with_configs(None);
                    }
                    result
                }
            }
        })
        .collect();
    CreateTopicsResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(results)
}
