//! ListOffsets (v1-7): -2 earliest, -1 latest (the high watermark), -3 max timestamp (not
//! tracked: answers offset -1), otherwise the first record with a timestamp >= the one asked
//! (the log locates the batch by its max timestamp; the record is found by decoding that batch).

use std::sync::Arc;

use bytes::Bytes;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;

use crate::broker::Broker;

/// ListOffsets timestamp asking for the latest offset.
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp asking for the earliest offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets timestamp asking for the offset of the max timestamp (v7+).
pub const MAX_TIMESTAMP: i64 = -3;

/// The first record at or after `offset` in `batches` whose timestamp is >= `timestamp`, as
/// `(timestamp, offset)`: the log finds the batch, Kafka answers with the record inside it.
/// `None` if the batches do not decode (the batch-level answer is used then).
fn exact_record(mut batches: Bytes, offset: i64, timestamp: i64) -> Option<(i64, i64)> {
    let sets = RecordBatchDecoder::decode_all(&mut batches).ok()?;
    sets.into_iter()
        .flat_map(|set| set.records)
        .find(|record| record.offset >= offset && record.timestamp >= timestamp)
        .map(|record| (record.timestamp, record.offset))
}

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
                    let high_watermark = partition.high_watermark();
                    let result = partition.with_log(|log| {
                        Ok(match timestamp {
                            LATEST_TIMESTAMP => (-1, high_watermark),
                            EARLIEST_TIMESTAMP => (-1, log.log_start_offset()),
                            MAX_TIMESTAMP => (-1, -1),
                            ts => match log.offset_for_timestamp(ts)? {
                                Some((offset, found_ts)) if offset < high_watermark => {
                                    let batch = log.read(offset, 1, high_watermark)?;
                                    exact_record(batch, offset, ts).unwrap_or((found_ts, offset))
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
