//! Produce: validation, append, and acks (-1 waits for the flusher's fsync, 1 answers after the
//! append, 0 answers nothing).
//!
//! Batches are appended as the producer sent them (no copy) unless the topic's config asks for
//! more, as Kafka's LogValidator does:
//! - compacted topics: every record needs a key (INVALID_RECORD);
//! - CreateTime topics: record timestamps within `message.timestamp.before.max.ms` /
//!   `after.max.ms` of the broker clock (INVALID_TIMESTAMP). The records are decoded only when
//!   the batch header cannot vouch for them: when `before.max.ms` is set (the first record's
//!   timestamp is not the smallest), or when the header's maxTimestamp is past the `after` bound;
//! - refused records are listed in the answer's `record_errors` (KIP-467, v8+): the whole batch
//!   is refused, as in Kafka, and the answer says which records were bad;
//! - `message.timestamp.type=LogAppendTime`: a copy of each batch gets the broker's append time as
//!   maxTimestamp and the LogAppendTime attribute (CRC recomputed); the answer carries the time
//!   in `log_append_time_ms`;
//! - `compression.type` other than `producer`: batches with another codec are decoded and
//!   re-encoded with the topic's codec (same offsets, producer id, epoch and sequence);
//! - tiered topics (`remote.storage.enable`): every batch is decoded once, without building
//!   rows, through the bounded decoder (as Kafka's LogValidator iterates every compressed
//!   batch), so that a batch the tier task could not turn into Parquet (a decompression bomb,
//!   records that do not parse) is refused with CORRUPT_MESSAGE instead of stopping the
//!   partition's offload for good.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Outcome, Response};
use crate::broker::{Broker, Partition};
use crate::config::TopicConfig;
use crate::errors::{
    BrokerError, INVALID_RECORD, INVALID_REQUIRED_ACKS, INVALID_TIMESTAMP, MESSAGE_TOO_LARGE,
    NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, TRANSACTIONS_UNSUPPORTED,
};
use crate::internal_topics;
use strata_storage::batch::{Compression, TimestampType};
use strata_storage::tier::records::{self, decode_batch_bytes, encode_batch};

/// Wait limit for acks=all when the request's timeout is not positive.
const ACK_TIMEOUT_DEFAULT_MS: u64 = 30_000;

/// Size of the batch header prefix that holds the batch length: baseOffset(8) + batchLength(4).
const BATCH_LENGTH_PREFIX_BYTES: usize = 12;

/// The size of the largest record batch in `records`, walking the batch framing (baseOffset,
/// batchLength). Stops at the first malformed frame: the log's validation reports it.
pub fn largest_batch_bytes(records: &[u8]) -> usize {
    let mut position = 0usize;
    let mut largest = 0usize;
    while records.len() - position >= BATCH_LENGTH_PREFIX_BYTES {
        let length_bytes = &records[position + 8..position + 12];
        let batch_length = i32::from_be_bytes([
            length_bytes[0],
            length_bytes[1],
            length_bytes[2],
            length_bytes[3],
        ]);
        if batch_length < 0 {
            break;
        }
        let total = BATCH_LENGTH_PREFIX_BYTES + batch_length as usize;
        largest = largest.max(total);
        position = position.saturating_add(total).min(records.len());
    }
    largest
}

struct Pending {
    topic_index: usize,
    partition_index: usize,
    partition: Arc<Partition>,
    end_offset: i64,
}

fn error_response(
    index: i32,
    error: ResponseError,
    message: String,
    version: i16,
) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1);
    if version >= 5 {
        response = response.with_log_start_offset(-1);
    }
    if version >= 8 {
        response = response.with_error_message(Some(StrBytes::from_string(message)));
    }
    response
}

fn append_partition(
    broker: &Broker,
    partition: &Arc<Partition>,
    records: Option<Bytes>,
    acks: i16,
    record_errors: &mut Vec<BatchIndexAndErrorMessage>,
) -> Result<(strata_storage::AppendOutcome, i64, i64), (ResponseError, String)> {
    let topic = broker.topic(partition.topic()).ok_or_else(|| {
        let e = BrokerError::UnknownTopicOrPartition(partition.topic().to_string());
        (e.response_error(), e.to_string())
    })?;
    let config = topic.config();
    let Some(records) = records else {
        return Err((
            ResponseError::CorruptMessage,
            "null records in produce request".to_string(),
        ));
    };
    let max_bytes = config.max_message_bytes(broker.config().message_bytes_max);
    let check_size = |records: &[u8]| {
        let largest = largest_batch_bytes(records);
        if largest > max_bytes {
            return Err((
                MESSAGE_TOO_LARGE,
                format!("record batch of {largest} bytes exceeds max.message.bytes {max_bytes}"),
            ));
        }
        Ok(())
    };
    check_size(&records)?;
    let policy = RecordPolicy::new(&config, broker.clock().now_ms(), broker.is_tiered(&topic));
    let records = policy.apply(records, partition, record_errors)?;
    if policy.rewrites() {
        // Recompression may have grown a batch (Kafka checks the size again too).
        check_size(&records)?;
    }
    if acks == -1 && config.min_insync_replicas() > 1 {
        return Err((
            NOT_ENOUGH_REPLICAS,
            format!(
                "min.insync.replicas={} but this single node has 1 replica",
                config.min_insync_replicas()
            ),
        ));
    }
    // Written as received (the log writes the assigned offsets beside it): no copy, unless the
    // policy above rewrote the batches.
    let outcome = broker
        .append(partition, &records)
        .map_err(|e| (e.response_error(), e.to_string()))?;
    broker
        .metrics()
        .record_produced(partition.topic(), records.len(), &outcome);
    let log_start = partition
        .with_log(|log| Ok(log.log_start_offset()))
        .map_err(|e| (e.response_error(), e.to_string()))?;
    let log_append_time_ms = if policy.log_append_time {
        policy.now_ms
    } else {
        -1
    };
    Ok((outcome, log_start, log_append_time_ms))
}

/// What the topic's config asks of a partition's batches before they are appended (see the
/// module doc).
struct RecordPolicy {
    /// `cleanup.policy` has `compact`: every record needs a key.
    compacted: bool,
    /// `message.timestamp.type=LogAppendTime`.
    log_append_time: bool,
    /// `message.timestamp.before.max.ms`.
    before_max_ms: i64,
    /// `message.timestamp.after.max.ms`.
    after_max_ms: i64,
    /// `compression.type`, `None` for `producer`.
    compression: Option<Compression>,
    /// The broker clock at the append (the append time of LogAppendTime topics).
    now_ms: i64,
    /// The topic is tiered: every batch must decode (see the module doc).
    tiered: bool,
}

/// One refused record: its index in its batch and why.
struct RecordRefusal {
    index: usize,
    error: ResponseError,
    message: String,
}

impl RecordPolicy {
    fn new(config: &TopicConfig, now_ms: i64, tiered: bool) -> RecordPolicy {
        RecordPolicy {
            tiered,
            compacted: config.is_compacted(),
            log_append_time: config.log_append_time(),
            before_max_ms: config.timestamp_before_max_ms(),
            after_max_ms: config.timestamp_after_max_ms(),
            compression: config.compression_target(),
            now_ms,
        }
    }

    /// Whether batches may be rewritten (so their size may change).
    fn rewrites(&self) -> bool {
        self.log_append_time || self.compression.is_some()
    }

    /// Whether the records of a batch with `header` must be decoded and checked one by one.
    fn checks_records(&self, header: &strata_storage::BatchHeader) -> bool {
        if self.compacted {
            return true;
        }
        if self.log_append_time {
            // Only a producer claiming LogAppendTime is refused.
            return header.timestamp_type() == TimestampType::LogAppendTime;
        }
        self.before_max_ms != i64::MAX
            || header.max_timestamp > self.now_ms.saturating_add(self.after_max_ms)
    }

    /// Kafka's `LogValidator.validateKey` and `validateTimestamp` for one record.
    fn check_record(
        &self,
        partition: &Partition,
        batch_type: TimestampType,
        row: &strata_storage::tier::records::RecordRow,
    ) -> Option<(ResponseError, String)> {
        if self.compacted && row.key.is_none() {
            return Some((
                INVALID_RECORD,
                format!(
                    "Compacted topic cannot accept message without key in topic partition {}-{}.",
                    partition.topic(),
                    partition.index()
                ),
            ));
        }
        if !self.log_append_time {
            let ts = row.timestamp_ms;
            let behind = self.now_ms.saturating_sub(ts);
            if ts != -1 && (behind > self.before_max_ms || -behind > self.after_max_ms) {
                return Some((
                    INVALID_TIMESTAMP,
                    format!(
                        "Timestamp {ts} of message with offset {} is out of range. The timestamp should be within [{}, {}]",
                        row.offset,
                        self.now_ms.saturating_sub(self.before_max_ms),
                        self.now_ms.saturating_add(self.after_max_ms)
                    ),
                ));
            }
        } else if batch_type == TimestampType::LogAppendTime {
            return Some((
                INVALID_TIMESTAMP,
                format!(
                    "Invalid timestamp type in message at offset {}. Producer should not set timestamp type to LogAppendTime.",
                    row.offset
                ),
            ));
        }
        None
    }

    /// Checks and, if the topic asks for it, rewrites the batches of `records`; returns the bytes
    /// to append (`records` itself when nothing changes). A batch with refused records fails the
    /// append, with the refused records in `record_errors`.
    fn apply(
        &self,
        records: Bytes,
        partition: &Partition,
        record_errors: &mut Vec<BatchIndexAndErrorMessage>,
    ) -> Result<Bytes, (ResponseError, String)> {
        let corrupt = |e: String| (ResponseError::CorruptMessage, e);
        // Filled only once a batch is rewritten: until then the input is appended as it is.
        let mut rewritten: Option<Vec<u8>> = None;
        let mut consumed = 0usize;
        for item in strata_storage::batch::batches(&records) {
            // A framing error: the rest goes to the log as it is, which refuses it with the
            // right error (CORRUPT_MESSAGE or INVALID_RECORD).
            let Ok((header, batch)) = item else {
                break;
            };
            let start = consumed;
            consumed += batch.len();
            let recompress = self.compression.is_some_and(|c| c != header.compression());
            let decoded = if recompress || self.checks_records(&header) {
                let (meta, rows) = decode_batch_bytes(&records.slice_ref(batch))
                    .map_err(|e| corrupt(format!("record batch at {}: {e}", header.base_offset)))?;
                let refused: Vec<RecordRefusal> = rows
                    .iter()
                    .enumerate()
                    .filter_map(|(index, row)| {
                        self.check_record(partition, meta.timestamp_type, row).map(
                            |(error, message)| RecordRefusal {
                                index,
                                error,
                                message,
                            },
                        )
                    })
                    .collect();
                if !refused.is_empty() {
                    return Err(refuse(refused, record_errors));
                }
                Some((meta, rows))
            } else {
                if self.tiered {
                    records::visit_batch_records(batch, |_| Ok(())).map_err(|e| {
                        corrupt(format!("record batch at {}: {e}", header.base_offset))
                    })?;
                }
                None
            };
            if !recompress && !self.log_append_time {
                // Kept as it is: copied only if an earlier batch was rewritten.
                if let Some(out) = rewritten.as_mut() {
                    out.extend_from_slice(batch);
                }
                continue;
            }
            let out = rewritten.get_or_insert_with(|| {
                let mut out = Vec::with_capacity(records.len());
                out.extend_from_slice(&records[..start]);
                out
            });
            match decoded {
                Some((mut meta, mut rows)) if recompress => {
                    if let Some(codec) = self.compression {
                        meta.compression = codec;
                    }
                    if self.log_append_time {
                        meta.timestamp_type = TimestampType::LogAppendTime;
                        for row in &mut rows {
                            row.timestamp_ms = self.now_ms;
                        }
                    }
                    let encoded = encode_batch(&meta, &rows).map_err(|e| {
                        corrupt(format!(
                            "record batch at {} cannot be recompressed: {e}",
                            header.base_offset
                        ))
                    })?;
                    out.extend_from_slice(&encoded);
                }
                _ => {
                    // LogAppendTime, same codec: Kafka rewrites the header in place. The CRC is
                    // checked first (decoding checked it already): recomputing it must not
                    // bless damaged bytes.
                    strata_storage::batch::verify_crc(batch)
                        .map_err(|e| corrupt(format!("bad record batch: {e}")))?;
                    let at = out.len();
                    out.extend_from_slice(batch);
                    strata_storage::batch::set_log_append_time(&mut out[at..], self.now_ms)
                        .map_err(|e| corrupt(format!("bad record batch: {e}")))?;
                }
            }
        }
        Ok(match rewritten {
            Some(mut out) => {
                // Whatever follows the last whole batch (the log refuses it).
                out.extend_from_slice(&records[consumed..]);
                Bytes::from(out)
            }
            None => records,
        })
    }
}

/// Kafka's `LogValidator.processRecordErrors`: the batch's error (INVALID_TIMESTAMP if any
/// record has a bad timestamp, else INVALID_RECORD) and message, and every refused record in
/// `record_errors`.
fn refuse(
    refused: Vec<RecordRefusal>,
    record_errors: &mut Vec<BatchIndexAndErrorMessage>,
) -> (ResponseError, String) {
    let (error, message) = if refused.iter().any(|r| r.error == INVALID_TIMESTAMP) {
        (
            INVALID_TIMESTAMP,
            "One or more records have been rejected due to invalid timestamp".to_string(),
        )
    } else {
        let first: Vec<String> = refused
            .iter()
            .take(3)
            .map(|r| {
                format!(
                    "RecordError(batchIndex={}, message='{}')",
                    r.index, r.message
                )
            })
            .collect();
        (
            INVALID_RECORD,
            format!(
                "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
                refused.len(),
                first.join(", ")
            ),
        )
    };
    record_errors.extend(refused.into_iter().map(|r| {
        BatchIndexAndErrorMessage::default()
            .with_batch_index(r.index as i32)
            .with_batch_index_error_message(Some(StrBytes::from_string(r.message)))
    }));
    (error, message)
}

/// Handles a Produce request.
pub async fn handle(broker: &Arc<Broker>, request: ProduceRequest, version: i16) -> Outcome {
    append(broker, request, version).finish().await
}

/// A Produce request whose batches are appended (or refused): what is left is to wait, for
/// acks=all, until they are durable, and answer.
pub struct Appended {
    acks: i16,
    version: i16,
    timeout_ms: i32,
    any_error: bool,
    responses: Vec<TopicProduceResponse>,
    pending: Vec<Pending>,
}

/// The first half of a Produce request: validates and appends every partition's batches, in
/// request order, without waiting. The connection loop runs it before it reads the next
/// request, so pipelined produce requests append in the order they were sent; their
/// [`Appended::finish`] (the wait for the fsync) can then overlap.
pub fn append(broker: &Arc<Broker>, request: ProduceRequest, version: i16) -> Appended {
    let acks = request.acks;
    let acks_valid = matches!(acks, -1..=1);
    let transactional = request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.0.is_empty());
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut pending = Vec::new();
    let mut any_error = false;
    for (topic_index, topic_data) in request.topic_data.into_iter().enumerate() {
        let name = topic_data.name.0.to_string();
        let topic = broker.topic(&name);
        let mut partition_responses = Vec::with_capacity(topic_data.partition_data.len());
        for (partition_index, data) in topic_data.partition_data.into_iter().enumerate() {
            let index = data.index;
            let partition = topic.as_ref().and_then(|t| t.partition(index)).cloned();
            let mut record_errors = Vec::new();
            let result = if !acks_valid {
                Err((INVALID_REQUIRED_ACKS, format!("invalid acks {acks}")))
            } else if transactional {
                Err((
                    TRANSACTIONS_UNSUPPORTED,
                    "transactions are not supported".to_string(),
                ))
            } else {
                match &partition {
                    None => {
                        let e = BrokerError::UnknownTopicOrPartition(format!("{name}-{index}"));
                        Err((e.response_error(), e.to_string()))
                    }
                    Some(p) => match internal_topics::check_client_produce(&name) {
                        Err(e) => Err((e.response_error(), e.to_string())),
                        Ok(()) => {
                            append_partition(broker, p, data.records, acks, &mut record_errors)
                        }
                    },
                }
            };
            let response = match result {
                Ok((outcome, log_start, log_append_time_ms)) => {
                    if acks == -1 {
                        if let Some(partition) = partition {
                            pending.push(Pending {
                                topic_index,
                                partition_index,
                                partition,
                                end_offset: outcome.last_offset + 1,
                            });
                        }
                    }
                    let mut r = PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(0)
                        .with_base_offset(outcome.base_offset)
                        .with_log_append_time_ms(log_append_time_ms);
                    if version >= 5 {
                        r = r.with_log_start_offset(log_start);
                    }
                    r
                }
                Err((error, message)) => {
                    any_error = true;
                    tracing::debug!(topic = %name, partition = index, ?error, %message, "produce failed");
                    let response = error_response(index, error, message, version);
                    if version >= 8 {
                        response.with_record_errors(record_errors)
                    } else {
                        response
                    }
                }
            };
            partition_responses.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                // An owned copy: the request's name points into the request frame, which the
                // connection reuses for the next request once nothing refers to it.
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partition_responses(partition_responses),
        );
    }

    Appended {
        acks,
        version,
        timeout_ms: request.timeout_ms,
        any_error,
        responses,
        pending,
    }
}

impl Appended {
    /// Whether the answer needs to wait for durability (acks=all with an appended batch).
    pub fn waits(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The second half: waits (acks=all) until every appended batch is durable, or the request's
    /// timeout, and builds the answer.
    pub async fn finish(self) -> Outcome {
        let Appended {
            acks,
            version,
            timeout_ms,
            any_error,
            mut responses,
            #[allow(unused_mut)]
            mut pending,
        } = self;
        if acks == 0 {
            // Kafka answers nothing to acks=0 and signals failure by closing the connection.
            return if any_error {
                Outcome::Close
            } else {
                Outcome::NoResponse
            };
        }

        // Planted bug (simulation only, see docs/simulation.md): acks=all answers at once,
        // before the flusher has made the batch durable.
        #[cfg(strata_bug = "ack-before-fsync")]
        pending.clear();
        finish_pending(&mut responses, pending, timeout_ms, version).await;
        let mut response = ProduceResponse::default().with_responses(responses);
        if version >= 1 {
            response = response.with_throttle_time_ms(0);
        }
        Outcome::Respond(Response::Produce(response))
    }
}

async fn finish_pending(
    responses: &mut [TopicProduceResponse],
    pending: Vec<Pending>,
    request_timeout_ms: i32,
    version: i16,
) {
    if !pending.is_empty() {
        let timeout_ms = if request_timeout_ms > 0 {
            request_timeout_ms as u64
        } else {
            ACK_TIMEOUT_DEFAULT_MS
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        for p in pending {
            // (madsim's time module has `timeout` but no `timeout_at`.)
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let waited = tokio::time::timeout(left, p.partition.wait_durable(p.end_offset)).await;
            let failure = match waited {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some((e.response_error(), e.to_string())),
                Err(_) => Some((
                    REQUEST_TIMED_OUT,
                    format!("not durable within {timeout_ms} ms"),
                )),
            };
            if let Some((error, message)) = failure {
                let slot = &mut responses[p.topic_index].partition_responses[p.partition_index];
                *slot = error_response(slot.index, error, message, version);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_batch_walks_the_framing() {
        let mut records = vec![0u8; 12 + 50];
        records[8..12].copy_from_slice(&50i32.to_be_bytes());
        let mut second = vec![0u8; 12 + 100];
        second[8..12].copy_from_slice(&100i32.to_be_bytes());
        records.extend_from_slice(&second);
        assert_eq!(largest_batch_bytes(&records), 112);
        assert_eq!(largest_batch_bytes(&records[..5]), 0);
        let mut negative = vec![0u8; 12];
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(largest_batch_bytes(&negative), 0);
        // A length pointing past the end still counts (the log rejects the truncated batch).
        let mut huge = vec![0u8; 12];
        huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(largest_batch_bytes(&huge), 12 + i32::MAX as usize);
    }
}
