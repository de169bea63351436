//! ListOffsets (v1-7): -2 earliest, -1 latest (the high watermark), -3 max timestamp (the first
//! record with the local log's largest timestamp), otherwise the first record with a timestamp
//! >= the one asked (the log locates the batch by its max timestamp; the record is found by
//! decoding that batch with the bounded decoder).
//! Tiered topics: earliest is the whole log's start, and timestamps are looked up in the remote
//! tier first (it holds the older records).

use std::sync::Arc;

use bytes::Bytes;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use strata_storage::batch;
use strata_storage::tier::records::{self, RecordError, RecordView};

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
/// Batches are decoded one at a time by the bounded decoder (a batch that would decompress past
/// `DECOMPRESSED_RECORDS_BYTES_MAX` fails, and is not held past its own turn); control batches
/// are stepped over. `None` if no decodable batch holds such a record (the caller answers with
/// the batch-level position then).
fn exact_record(batches: &Bytes, offset: i64, timestamp: i64) -> Option<(i64, i64)> {
    find_record(batches, |row| {
        row.offset >= offset && row.timestamp_ms >= timestamp
    })
}

/// The first record of `batches` (see [`exact_record`]) that `wanted` accepts, as
/// `(timestamp, offset)`. Records are visited, not collected: a batch of millions of records
/// costs no more than its decompressed bytes.
fn find_record(
    batches: &Bytes,
    mut wanted: impl FnMut(&RecordView<'_>) -> bool,
) -> Option<(i64, i64)> {
    for item in batch::batches(batches) {
        let (header, whole) = item.ok()?;
        if header.is_control() {
            continue;
        }
        let mut found = None;
        // A visitor error ends the visit early once the record is found.
        let _ = records::visit_batch_records(whole, |record| {
            if wanted(&record) {
                found = Some((record.timestamp_ms, record.offset));
                return Err(RecordError::Corrupt(String::new()));
            }
            Ok(())
        });
        if found.is_some() {
            return found;
        }
    }
    None
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
        MAX_TIMESTAMP => return max_timestamp_record(partition, high_watermark),
        _ => {}
    }
    // Older records first: the remote tier holds the offsets below the local start.
    if tiered {
        if let Some((offset, found_ts)) = remote_offset_for_timestamp(partition, timestamp).await? {
            if offset < local_start && offset < high_watermark {
                let batch = read_remote(broker, partition, offset, 1).await?;
                return Ok(exact_record(&batch, offset, timestamp).unwrap_or((found_ts, offset)));
            }
        }
    }
    partition.with_log(|log| {
        Ok(match log.offset_for_timestamp(timestamp)? {
            Some((offset, found_ts)) if offset < high_watermark => {
                let batch = log.read(offset, 1, high_watermark)?;
                exact_record(&batch, offset, timestamp).unwrap_or((found_ts, offset))
            }
            _ => (-1, -1),
        })
    })
}

/// `(timestamp, offset)` of the first record holding the local log's largest timestamp (Kafka's
/// KIP-734 answer to MAX_TIMESTAMP), `(-1, -1)` when the log is empty or carries no timestamps.
/// The log finds the first batch whose max timestamp is the largest; the bounded decoder finds
/// the record inside it. Offloaded segments are not searched: their timestamps are below the
/// local log's unless producers set timestamps out of order.
fn max_timestamp_record(
    partition: &Partition,
    high_watermark: i64,
) -> Result<(i64, i64), BrokerError> {
    partition.with_log(|log| {
        let Some(max_ts) = log.max_timestamp() else {
            return Ok((-1, -1));
        };
        Ok(match log.offset_for_timestamp(max_ts)? {
            Some((offset, found_ts)) if offset < high_watermark => {
                let batch = log.read(offset, 1, high_watermark)?;
                find_record(&batch, |row| row.timestamp_ms == max_ts).unwrap_or((found_ts, offset))
            }
            _ => (-1, -1),
        })
    })
}
