//! DeleteRecords (v0-2): moves each partition's log start offset up to the requested offset
//! (-1: the high watermark) and answers the new low watermark; offsets above the high
//! watermark are OFFSET_OUT_OF_RANGE. The new start is persisted (the log's `log-start-offset`
//! checkpoint) before segments wholly below it are deleted; fetches below it get
//! OFFSET_OUT_OF_RANGE and ListOffsets `earliest` reports it. Refused with POLICY_VIOLATION on
//! topics without `cleanup.policy=delete` (as Kafka) and on tiered topics (the remote tier is
//! not trimmed by it yet).

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::broker::{Broker, Topic};
use crate::errors::{BrokerError, DELETE_RECORDS_REFUSED};
use crate::internal_topics;

/// Kafka's low watermark in an answer with an error.
const LOW_WATERMARK_UNKNOWN: i64 = -1;

/// The new low watermark of one partition, or the error code.
fn delete_one(
    broker: &Broker,
    topic: Option<&Arc<Topic>>,
    index: i32,
    offset: i64,
) -> Result<i64, i16> {
    let topic =
        topic.ok_or_else(|| BrokerError::UnknownTopicOrPartition("unknown topic".into()).code())?;
    let partition = topic.partition(index).ok_or_else(|| {
        BrokerError::UnknownTopicOrPartition(format!("{}-{index}", topic.name())).code()
    })?;
    internal_topics::check_client_delete_records(topic.name()).map_err(|e| e.code())?;
    let tier_config = topic.tier_config(broker.config());
    if !tier_config.delete || broker.is_tiered(topic) || partition.tier().remote().is_some() {
        return Err(DELETE_RECORDS_REFUSED.code());
    }
    broker.delete_records(partition, offset).map_err(|error| {
        tracing::debug!(topic = %topic.name(), partition = index, %error, "delete records failed");
        error.code()
    })
}

/// Handles a DeleteRecords request.
pub async fn handle(
    broker: &Arc<Broker>,
    request: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let topic = broker.topic(t.name.0.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    match delete_one(broker, topic.as_ref(), p.partition_index, p.offset) {
                        Ok(low_watermark) => {
                            result.with_low_watermark(low_watermark).with_error_code(0)
                        }
                        Err(code) => result
                            .with_low_watermark(LOW_WATERMARK_UNKNOWN)
                            .with_error_code(code),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics)
}
