//! ListOffsets (v1-7): -2 earliest, -1 latest (the high watermark), -3 max timestamp (not
//! tracked: answers offset -1), otherwise the first record with a timestamp >= the one asked
//! (the log locates the batch by its max timestamp; the record is found by decoding that batch).
//! Tiered topics: earliest is the whole log's start, and timestamps are looked up in the remote
//! tier first (it holds the older records).

use std::sync::Arc;

use bytes::Bytes;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Partition};
use crate::errors::BrokerError;
use crate::tier::{read_remote, remote_offset_for_timestamp};

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
pub async fn handle(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for req_topic in &request.topics {
        let topic = broker.topic(&req_topic.name.0);
        let mut partitions = Vec::with_capacity(req_topic.partitions.len());
        for req_partition in &req_topic.partitions {
            let index = req_partition.partition_index;
            let base = ListOffsetsPartitionResponse::default().with_partition_index(index);
            let Some((topic, partition)) = topic
                .as_ref()
                .and_then(|t| t.partition(index).map(|p| (t, p)))
            else {
                partitions
                    .push(base.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let tiered = broker.is_tiered(topic);
            let result = lookup(broker, partition, tiered, req_partition.timestamp).await;
            partitions.push(match result {
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
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(req_topic.name.clone())
                .with_partitions(partitions),
        );
    }
    let mut response = ListOffsetsResponse::default().with_topics(topics);
    if version >= 2 {
        response = response.with_throttle_time_ms(0);
    }
    response
}

/// `(timestamp, offset)` answering `timestamp` for one partition, the remote tier included.
async fn lookup(
    broker: &Broker,
    partition: &Partition,
    tiered: bool,
    timestamp: i64,
) -> Result<(i64, i64), BrokerError> {
    let high_watermark = partition.high_watermark();
    let local_start = partition.with_log(|log| Ok(log.log_start_offset()))?;
    match timestamp {
        LATEST_TIMESTAMP => return Ok((-1, high_watermark)),
        EARLIEST_TIMESTAMP => {
            if tiered && partition.tier().remote().is_none() && local_start > 0 {
                // The remote tier (which may hold older offsets) is not open yet.
                return Err(BrokerError::Tier("the remote tier is not open yet".into()));
            }
            return Ok((-1, partition.tier().log_start_offset(local_start)));
        }
        MAX_TIMESTAMP => return Ok((-1, -1)),
        _ => {}
    }
    // Older records first: the remote tier holds the offsets below the local start.
    if tiered {
        if let Some((offset, found_ts)) = remote_offset_for_timestamp(partition, timestamp).await? {
            if offset < local_start && offset < high_watermark {
                let batch = read_remote(broker, partition, offset, 1).await?;
                return Ok(exact_record(batch, offset, timestamp).unwrap_or((found_ts, offset)));
            }
        }
    }
    partition.with_log(|log| {
        Ok(match log.offset_for_timestamp(timestamp)? {
            Some((offset, found_ts)) if offset < high_watermark => {
                let batch = log.read(offset, 1, high_watermark)?;
                exact_record(batch, offset, timestamp).unwrap_or((found_ts, offset))
            }
            _ => (-1, -1),
        })
    })
}
