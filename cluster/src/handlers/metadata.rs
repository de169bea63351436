//! Metadata: one broker, the requested (or all) topics, auto-creation. v8+ answers the topic
//! and (v8-10) cluster authorized operations when asked: every operation of the resource type,
//! as Kafka without an authorizer ([`super::authorized_operations`]).

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::authorized_operations;
use crate::broker::{validate_topic_name, Broker, Topic};
use crate::config::TopicConfig;
use crate::errors::{BrokerError, UNKNOWN_TOPIC_ID};
use crate::internal_topics;

fn topic_entry(broker: &Broker, topic: &Topic, version: i16) -> MetadataResponseTopic {
    let node = BrokerId(broker.node_id());
    let partitions = topic
        .partitions()
        .iter()
        .map(|p| {
            if p.offline_reason().is_some() {
                // The only replica is offline: no leader (LEADER_NOT_AVAILABLE, like Kafka).
                let mut partition = MetadataResponsePartition::default()
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_partition_index(p.index())
                    .with_leader_id(BrokerId(-1))
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![]);
                if version >= 5 {
                    partition = partition.with_offline_replicas(vec![node]);
                }
                if version >= 7 {
                    partition = partition.with_leader_epoch(0);
                }
                return partition;
            }
            let mut partition = MetadataResponsePartition::default()
                .with_error_code(0)
                .with_partition_index(p.index())
                .with_leader_id(node)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node]);
            if version >= 7 {
                partition = partition.with_leader_epoch(0);
            }
            partition
        })
        .collect();
    let mut entry = MetadataResponseTopic::default()
        .with_error_code(0)
        .with_name(Some(TopicName(StrBytes::from_string(
            topic.name().to_string(),
        ))))
        .with_partitions(partitions);
    if version >= 1 {
        // Kafka lists its internal topics (here `__consumer_offsets`) with is_internal=true.
        entry = entry.with_is_internal(topic.name() == crate::group::offsets::OFFSETS_TOPIC);
    }
    if version >= 10 {
        entry = entry.with_topic_id(topic.id());
    }
    entry
}

fn error_entry(name: Option<&str>, id: Uuid, code: i16, version: i16) -> MetadataResponseTopic {
    let mut entry = MetadataResponseTopic::default()
        .with_error_code(code)
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))));
    if version >= 10 {
        entry = entry.with_topic_id(id);
    }
    entry
}

/// Answers a Metadata request.
pub fn handle(broker: &Arc<Broker>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let (host, port) = broker.advertised_endpoint();
    let node = BrokerId(broker.node_id());
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(StrBytes::from_string(host))
        .with_port(port)];
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested = match request.topics {
        None => None,
        Some(topics) if version == 0 && topics.is_empty() => None,
        Some(topics) => Some(topics),
    };
    // v0-3 have no allow_auto_topic_creation field: auto-creation is implied.
    let allow_auto_create = if version >= 4 {
        request.allow_auto_topic_creation
    } else {
        true
    };
    let topics = match requested {
        // Internal topics (`__consumer_offsets`) are answered only when asked for by name.
        None => broker
            .topics()
            .iter()
            .filter(|t| t.name() != crate::group::offsets::OFFSETS_TOPIC)
            .map(|t| topic_entry(broker, t, version))
            .collect(),
        Some(requested) => requested
            .iter()
            .map(|req_topic| {
                let name = req_topic.name.as_ref().map(|n| n.0.to_string());
                match name {
                    None => match broker.topic_by_id(req_topic.topic_id) {
                        Some(topic) => topic_entry(broker, &topic, version),
                        None => {
                            error_entry(None, req_topic.topic_id, UNKNOWN_TOPIC_ID.code(), version)
                        }
                    },
                    Some(name) => lookup_or_create(broker, &name, allow_auto_create, version),
                }
            })
            .collect(),
    };
    let mut topics: Vec<MetadataResponseTopic> = topics;
    if version >= 8 && request.include_topic_authorized_operations {
        for topic in topics.iter_mut().filter(|t| t.name.is_some()) {
            topic.topic_authorized_operations = authorized_operations::TOPIC;
        }
    }
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if version >= 1 {
        response = response.with_controller_id(node);
    }
    if version >= 2 {
        response =
            response.with_cluster_id(Some(StrBytes::from_string(broker.cluster_id().to_string())));
    }
    if version >= 3 {
        response = response.with_throttle_time_ms(0);
    }
    if (8..=10).contains(&version) {
        response = response.with_cluster_authorized_operations(authorized_operations::answer(
            request.include_cluster_authorized_operations,
            authorized_operations::CLUSTER,
        ));
    }
    response
}

fn lookup_or_create(
    broker: &Arc<Broker>,
    name: &str,
    allow_auto_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    if let Some(topic) = broker.topic(name) {
        return topic_entry(broker, &topic, version);
    }
    if let Err(error) =
        validate_topic_name(name).and_then(|()| internal_topics::check_client_create(name))
    {
        return error_entry(Some(name), Uuid::nil(), error.code(), version);
    }
    if !(allow_auto_create && broker.config().auto_create_topics) {
        return error_entry(
            Some(name),
            Uuid::nil(),
            BrokerError::UnknownTopicOrPartition(name.to_string()).code(),
            version,
        );
    }
    let partitions = broker.config().num_partitions_default;
    match broker.create_topic(name, partitions, TopicConfig::default(), false) {
        Ok(Some(topic)) => topic_entry(broker, &topic, version),
        // Lost a race with another creator: answer with the existing topic.
        Err(BrokerError::TopicAlreadyExists(_)) | Ok(None) => match broker.topic(name) {
            Some(topic) => topic_entry(broker, &topic, version),
            None => error_entry(
                Some(name),
                Uuid::nil(),
                BrokerError::UnknownTopicOrPartition(name.to_string()).code(),
                version,
            ),
        },
        Err(error) => {
            tracing::warn!(topic = name, %error, "auto-creating topic failed");
            error_entry(Some(name), Uuid::nil(), error.code(), version)
        }
    }
}
