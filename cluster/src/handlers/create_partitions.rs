//! CreatePartitions (v0-3): grows a topic's partition count on this broker (never shrinks:
//! INVALID_PARTITIONS), `validate_only`, manual assignments naming this broker only. The new
//! partitions are persisted (the topic file's count) and serve at once; Metadata shows them.
//! `__consumer_offsets` cannot be grown by clients (INVALID_REQUEST: its partition count is
//! the broker's, and committed offsets are placed by it).

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::errors::BrokerError;
use crate::group::offsets::OFFSETS_TOPIC;

/// Grows one topic (on a blocking thread, under the admin lock).
fn grow(
    broker: &Broker,
    topic: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), BrokerError> {
    let name = topic.name.0.as_str();
    if name == OFFSETS_TOPIC {
        return Err(BrokerError::InvalidRequest(format!(
            "The number of partitions of the internal topic {name} cannot be changed"
        )));
    }
    let current = broker
        .topic(name)
        .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?
        .partitions()
        .len() as i32;
    if let Some(assignments) = &topic.assignments {
        let added = i64::from(topic.count) - i64::from(current);
        if assignments.len() as i64 != added {
            return Err(BrokerError::InvalidReplicaAssignment(format!(
                "Increasing the number of partitions by {added} but {} assignments provided.",
                assignments.len()
            )));
        }
        let node = broker.node_id();
        if let Some(bad) = assignments
            .iter()
            .find(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node)
        {
            return Err(BrokerError::InvalidReplicaAssignment(format!(
                "every new partition must be assigned to exactly broker {node}, got {:?}",
                bad.broker_ids.iter().map(|b| b.0).collect::<Vec<_>>()
            )));
        }
    }
    broker.add_partitions(name, topic.count, validate_only)?;
    Ok(())
}

/// Handles a CreatePartitions request, off the async workers and after the admin requests
/// before it ([`Broker::run_admin`]).
pub async fn handle(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    broker
        .run_admin(move |broker| {
            let mut name_counts: HashMap<&str, usize> = HashMap::new();
            for topic in &request.topics {
                *name_counts.entry(topic.name.0.as_str()).or_default() += 1;
            }
            let results = request
                .topics
                .iter()
                .map(|topic| {
                    let duplicate = name_counts.get(topic.name.0.as_str()).copied() > Some(1);
                    let outcome = if duplicate {
                        Err(BrokerError::InvalidRequest(format!(
                            "Duplicate topic {} in the request",
                            topic.name.0
                        )))
                    } else {
                        grow(broker, topic, request.validate_only)
                    };
                    let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
                    match outcome {
                        Ok(()) => result.with_error_code(0).with_error_message(None),
                        Err(error) => {
                            tracing::debug!(topic = %topic.name.0, %error, "create partitions failed");
                            result
                                .with_error_code(error.code())
                                .with_error_message(Some(StrBytes::from_string(error.to_string())))
                        }
                    }
                })
                .collect();
            CreatePartitionsResponse::default()
                .with_throttle_time_ms(0)
                .with_results(results)
        })
        .await
}
