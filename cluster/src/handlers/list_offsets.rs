//! ListOffsets (v1-7): -2 earliest, -1 latest (the high watermark), -3 max timestamp (not
//! tracked: answers offset -1), otherwise the first offset with a timestamp >= the one asked.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;

/// ListOffsets timestamp asking for the latest offset.
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp asking for the earliest offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets timestamp asking for the offset of the max timestamp (v7+).
pub const MAX_TIMESTAMP: i64 = -3;

/// Handles a ListOffsets request.
pub fn handle(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let topics = request
        .topics
        .iter()
        .map(|req_topic| {
            let topic = broker.topic(&req_topic.name.0);
            let partitions = req_topic
                .partitions
                .iter()
                .map(|req_partition| {
                    let index = req_partition.partition_index;
                    let base = ListOffsetsPartitionResponse::default().with_partition_index(index);
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(index)) else {
                        return base.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let timestamp = req_partition.timestamp;
                    let result = partition.with_log(|log| {
                        let high_watermark = log.durable_end_offset();
                        Ok(match timestamp {
                            LATEST_TIMESTAMP => (-1, high_watermark),
                            EARLIEST_TIMESTAMP => (-1, log.log_start_offset()),
                            MAX_TIMESTAMP => (-1, -1),
                            ts => match log.offset_for_timestamp(ts)? {
                                Some((offset, found_ts)) if offset < high_watermark => {
                                    (found_ts, offset)
                                }
                                _ => (-1, -1),
                            },
                        })
                    });
                    match result {
                        Ok((found_ts, offset)) => {
                            let mut response = base
                                .with_error_code(0)
                                .with_timestamp(found_ts)
                                .with_offset(offset);
                            if version >= 4 {
                                response = response.with_leader_epoch(0);
                            }
                            response
                        }
                        Err(error) => base.with_error_code(error.code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(req_topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let mut response = ListOffsetsResponse::default().with_topics(topics);
    if version >= 2 {
        response = response.with_throttle_time_ms(0);
    }
    response
}
