//! Fetch (v4-12): reads up to the high watermark (the durable end offset), long-polls for
//! `min_bytes`, honours `max_bytes` and `partition_max_bytes` (KIP-74: the first batch of the
//! first non-empty partition is always returned). OFFSET_OUT_OF_RANGE only outside
//! [log start, log end]. Offsets below the local log start are served from the remote tier
//! (tiered topics). Fetch sessions are not kept: every response has
//! session id 0, so clients send full fetch requests.
//!
//! Memory: `max_bytes` is capped by the broker's `fetch.max.bytes`
//! ([`BrokerConfig::fetch_bytes_max`](crate::config::BrokerConfig::fetch_bytes_max)), and the
//! record bytes of every Fetch answer, from the read until the answer is written and dropped,
//! hold their share of one broker-wide budget, [`FetchMemory`] (`fetch.memory.max.bytes`).
//! Before a partition is read its limit is reserved: the first read of an answer waits for room
//! (until the request's `max_wait_ms`), later ones only take room that is free (else the answer
//! ends there, as at `max_bytes`), so a fetch never holds bytes while it waits for more and
//! fetches cannot deadlock each other. The reservation shrinks to the bytes read; a first batch
//! larger than the limit (KIP-74) takes the extra only if it is free.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::broker::Broker;
use crate::errors::BrokerError;
use crate::tier::{read_remote, read_source, ReadSource};

/// The broker-wide budget of record bytes held by Fetch answers (read and not yet written):
/// `fetch.memory.max.bytes`. A semaphore whose permits are bytes; the permits travel inside
/// the answer's records (see [`FetchMemory::hold`]) and return when the last copy of them is
/// dropped, after the connection wrote the answer.
pub struct FetchMemory {
    semaphore: Arc<Semaphore>,
    bytes_max: usize,
}

impl FetchMemory {
    /// A budget of `bytes_max` bytes (at least 1, at most the semaphore's maximum).
    pub fn new(bytes_max: usize) -> FetchMemory {
        let bytes_max = bytes_max.clamp(1, Semaphore::MAX_PERMITS);
        FetchMemory {
            semaphore: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
        }
    }

    /// The budget.
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Bytes held by answers right now.
    pub fn used_bytes(&self) -> usize {
        self.bytes_max
            .saturating_sub(self.semaphore.available_permits())
    }

    /// A request for `bytes`, clamped so that one reservation can always be granted.
    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.clamp(1, self.bytes_max)).unwrap_or(u32::MAX)
    }

    /// Waits until `bytes` are free (or `deadline` passes: `None`).
    async fn reserve(
        &self,
        bytes: usize,
        deadline: tokio::time::Instant,
    ) -> Option<OwnedSemaphorePermit> {
        let acquire = Arc::clone(&self.semaphore).acquire_many_owned(self.permits(bytes));
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        }
    }

    /// Takes `bytes` if they are free now.
    fn try_reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.semaphore)
            .try_acquire_many_owned(self.permits(bytes))
            .ok()
    }

    /// `records` holding their share of the budget until dropped: the reservation shrinks to
    /// their length, or grows by what is free if they are longer (a KIP-74 first batch).
    fn hold(&self, records: Bytes, mut permit: OwnedSemaphorePermit) -> Bytes {
        if records.is_empty() {
            return records;
        }
        let held = permit.num_permits();
        if held > records.len() {
            drop(permit.split(held - records.len()));
        } else if records.len() > held {
            if let Some(extra) = self.try_reserve(records.len() - held) {
                permit.merge(extra);
            }
        }
        Bytes::from_owner(HeldRecords {
            records,
            _permit: permit,
        })
    }
}

/// Records and the fetch-memory permits they hold.
struct HeldRecords {
    records: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for HeldRecords {
    fn as_ref(&self) -> &[u8] {
        &self.records
    }
}

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
    deadline: tokio::time::Instant,
) -> (FetchResponse, usize) {
    // fetch.max.bytes caps what the client asks for (Kafka does the same).
    let mut remaining = (request.max_bytes.max(0) as usize).min(broker.config().fetch_bytes_max);
    let memory = broker.fetch_memory();
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
            let mut limit = (fetch_partition.partition_max_bytes.max(0) as usize).min(remaining);
            let must_return_first = first_non_empty;
            // Room in the fetch memory for what this partition may add: waited for only while
            // this answer holds nothing; without room the answer ends here (nothing more read).
            // Nothing is read without a reservation (an offset at the high watermark reads
            // nothing now; the next pass of the long poll reserves if it has moved).
            #[cfg(not(strata_bug = "read-past-durable"))]
            let readable = offset < partition.high_watermark();
            #[cfg(strata_bug = "read-past-durable")]
            let readable = true;
            let wants = (limit > 0 || must_return_first) && readable;
            let mut reservation = match (wants, total == 0) {
                (false, _) => None,
                (true, true) => memory.reserve(limit, deadline).await,
                (true, false) => memory.try_reserve(limit),
            };
            if wants && reservation.is_none() {
                remaining = 0;
            }
            match &reservation {
                // The budget may be smaller than the limit: read no more than was reserved.
                Some(permit) => limit = limit.min(permit.num_permits()),
                None => limit = 0,
            }
            let must_return_first = must_return_first && reservation.is_some();
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
                    if let Some(permit) = reservation.take() {
                        records = memory.hold(records, permit);
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
        let (response, bytes) = read_once(broker, &request, version, deadline).await;
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
