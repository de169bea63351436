//! Fetch (v4-12): reads up to the high watermark (the durable end offset), long-polls for
//! `min_bytes`, honours `max_bytes` and `partition_max_bytes` (KIP-74: the first batch of the
//! first non-empty partition is always returned). OFFSET_OUT_OF_RANGE only outside
//! [log start, log end]. Offsets below the local log start are served from the remote tier
//! (tiered topics). Fetch sessions are not kept: every response has
//! session id 0, so clients send full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::errors::BrokerError;
use crate::tier::{read_remote, read_source, ReadSource};

fn error_partition(index: i32, error: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()))
}

/// What the local log answered for one partition.
enum LocalRead {
    /// Records (possibly none) with the high watermark and the whole log's start offset.
    Records(i64, i64, Bytes),
    /// The offset is below the local start and held by the remote tier.
    Remote(i64, i64),
    /// A Kafka error for this partition.
    Error(ResponseError),
}

/// One pass over the requested partitions: the response and the record bytes it holds.
/// Offsets below the local log start are read from the remote tier (awaited outside the log
/// lock).
async fn read_once(
    broker: &Broker,
    request: &FetchRequest,
    version: i16,
) -> (FetchResponse, usize) {
    let mut remaining = request.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut first_non_empty = true;
    let mut topics = Vec::with_capacity(request.topics.len());
    for fetch_topic in &request.topics {
        let name = fetch_topic.topic.0.to_string();
        let topic = broker.topic(&name);
        let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
        for fetch_partition in &fetch_topic.partitions {
            let index = fetch_partition.partition;
            let Some(partition) = topic.as_ref().and_then(|t| t.partition(index)) else {
                partitions.push(error_partition(
                    index,
                    ResponseError::UnknownTopicOrPartition,
                ));
                continue;
            };
            let offset = fetch_partition.fetch_offset;
            let limit = (fetch_partition.partition_max_bytes.max(0) as usize).min(remaining);
            let must_return_first = first_non_empty;
            // Read before taking the log lock: the high watermark only grows, so an older value
            // is always safe to serve up to.
            #[cfg(not(strata_bug = "read-past-durable"))]
            let high_watermark = partition.high_watermark();
            let tiered = topic.as_ref().is_some_and(|t| broker.is_tiered(t));
            let result = partition.with_log(|log| {
                // Planted bug (simulation only, see docs/simulation.md): reads, and the high
                // watermark reported, go up to the log end, past what is durable.
                #[cfg(strata_bug = "read-past-durable")]
                let high_watermark = log.log_end_offset();
                let local_start = log.log_start_offset();
                let log_start = partition.tier().log_start_offset(local_start);
                // Like Kafka: out of range only outside [log start, log end]; between the high
                // watermark and the log end (appended, not yet durable) the answer is empty.
                if offset > log.log_end_offset() {
                    return Ok(LocalRead::Error(ResponseError::OffsetOutOfRange));
                }
                match read_source(partition, tiered, offset, local_start) {
                    ReadSource::Local => {}
                    ReadSource::Remote => return Ok(LocalRead::Remote(high_watermark, log_start)),
                    ReadSource::OutOfRange {
                        remote_pending: false,
                    } => return Ok(LocalRead::Error(ResponseError::OffsetOutOfRange)),
                    // The object store has been unreachable since start: the offset may exist.
                    ReadSource::OutOfRange {
                        remote_pending: true,
                    } => return Ok(LocalRead::Error(ResponseError::KafkaStorageError)),
                }
                let records = if offset >= high_watermark || (limit == 0 && !must_return_first) {
                    Bytes::new()
                } else {
                    log.read(offset, limit.max(1), high_watermark)?
                };
                Ok(LocalRead::Records(high_watermark, log_start, records))
            });
            let result = match result {
                Ok(LocalRead::Remote(high_watermark, log_start)) => {
                    if limit == 0 && !must_return_first {
                        Ok(LocalRead::Records(high_watermark, log_start, Bytes::new()))
                    } else {
                        match read_remote(broker, partition, offset, limit.max(1)).await {
                            // Nothing remote at or after the offset (compaction emptied the end
                            // of the remote tier): the next records are the local ones.
                            Ok(records) if records.is_empty() => partition.with_log(|log| {
                                let local_start = log.log_start_offset();
                                let records = if local_start < high_watermark {
                                    log.read(local_start, limit.max(1), high_watermark)?
                                } else {
                                    Bytes::new()
                                };
                                Ok(LocalRead::Records(high_watermark, log_start, records))
                            }),
                            Ok(records) => {
                                Ok(LocalRead::Records(high_watermark, log_start, records))
                            }
                            Err(error) => Ok(LocalRead::Error(error.response_error())),
                        }
                    }
                }
                other => other,
            };
            let data = match result {
                Ok(LocalRead::Records(high_watermark, log_start, mut records)) => {
                    if records.len() > limit && !must_return_first {
                        // Only the first non-empty partition may exceed the limits (KIP-74).
                        records = Bytes::new();
                    }
                    if !records.is_empty() {
                        first_non_empty = false;
                    }
                    remaining = remaining.saturating_sub(records.len());
                    total += records.len();
                    let mut data = PartitionData::default()
                        .with_partition_index(index)
                        .with_error_code(0)
                        .with_high_watermark(high_watermark)
                        .with_last_stable_offset(high_watermark)
                        .with_records(Some(records));
                    if version >= 5 {
                        data = data.with_log_start_offset(log_start);
                    }
                    data
                }
                Ok(LocalRead::Error(error)) => error_partition(index, error),
                Ok(LocalRead::Remote(..)) => unreachable!("remote reads are resolved above"),
                Err(error @ BrokerError::Log { .. }) => {
                    tracing::debug!(%error, "fetch read failed");
                    error_partition(index, error.response_error())
                }
                Err(error) => error_partition(index, error.response_error()),
            };
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(fetch_topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    let mut response = FetchResponse::default()
        .with_throttle_time_ms(0)
        .with_responses(topics);
    if version >= 7 {
        response = response.with_error_code(0).with_session_id(0);
    }
    (response, total)
}

fn has_partition_error(response: &FetchResponse) -> bool {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .any(|p| p.error_code != 0)
}

/// Handles a Fetch request, waiting up to `max_wait_ms` for `min_bytes` of durable data.
pub async fn handle(broker: &Arc<Broker>, request: FetchRequest, version: i16) -> FetchResponse {
    let started = std::time::Instant::now();
    let response = long_poll(broker, request, version).await;
    broker.metrics().record_fetch(&response, started.elapsed());
    response
}

async fn long_poll(broker: &Arc<Broker>, request: FetchRequest, version: i16) -> FetchResponse {
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let deadline = tokio::time::Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    loop {
        let advanced = broker.high_watermark_advanced();
        tokio::pin!(advanced);
        advanced.as_mut().enable();
        let (response, bytes) = read_once(broker, &request, version).await;
        let done = bytes >= min_bytes
            || has_partition_error(&response)
            || tokio::time::Instant::now() >= deadline
            || broker.is_shutting_down();
        if done {
            return response;
        }
        tokio::select! {
            biased;
            _ = broker.shutdown_started() => return response,
            _ = tokio::time::sleep_until(deadline) => {}
            _ = advanced => {}
        }
    }
}
