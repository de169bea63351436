//! The producer: record-batch encoding, partitioning, idempotence and retries.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as WireRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;

use super::client_core::Client;
use super::error::ClientError;
use super::partitioner::kafka_partition_for_key;

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Key; `None` for a null key (spread round robin over partitions).
    pub key: Option<Bytes>,
    /// Value; `None` for a null value (tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order. A repeated header name keeps only its last value (a limit of the
    /// `kafka-protocol` record type).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Creation timestamp in ms since the epoch; `None` = now.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// A record with only a value.
    pub fn from_value(value: impl Into<Bytes>) -> Record {
        Record {
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A record with a key and a value.
    pub fn from_key_value(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Record {
        Record {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Record::default()
        }
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// -1 (all: wait for the fsync), 1 (leader append), 0 (no response).
    pub acks: i16,
    /// Idempotent producer: a producer id and per-partition sequence numbers let the broker drop
    /// resent duplicates. Requires `acks == -1`.
    pub idempotent: bool,
    /// Codec of the record batches.
    pub compression: Compression,
    /// How many times a batch is sent again after a retriable error or a timeout.
    pub retries: u32,
    /// Pause between attempts.
    pub retry_backoff_ms: u64,
    /// Produce timeout given to the broker, and (added to the client's request timeout) how
    /// long the client waits for the response.
    pub request_timeout_ms: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            idempotent: true,
            compression: Compression::None,
            retries: 5,
            retry_backoff_ms: 100,
            request_timeout_ms: 30_000,
        }
    }
}

/// The idempotent producer's identity. `generation` changes whenever a new id is taken, which
/// restarts every partition's sequence at 0.
#[derive(Debug, Clone, Copy)]
struct ProducerIdentity {
    producer_id: i64,
    epoch: i16,
    generation: u64,
}

/// Per-partition sequence state; its async mutex also keeps one batch in flight per partition,
/// so sequences reach the broker in order.
#[derive(Debug, Default)]
struct PartitionSequence {
    generation: u64,
    sequence_next: i32,
    /// Set while a batch is being sent. Still set when the lock is next taken means the sending
    /// future was cancelled with the batch's fate unknown: the sequence can no longer be trusted.
    in_flight: bool,
}

/// A record waiting in a partition's queue for the next batch, with where to send its offset.
struct Pending {
    record: Record,
    reply: tokio::sync::oneshot::Sender<Result<i64, ClientError>>,
}

/// One partition: records waiting to be sent, and the sequence state whose async lock keeps one
/// batch in flight per partition.
#[derive(Default)]
struct PartitionSlot {
    queue: std::sync::Mutex<VecDeque<Pending>>,
    sequence: tokio::sync::Mutex<PartitionSequence>,
}

/// Records in one batch built from queued `send`s at most.
const QUEUED_BATCH_RECORDS_MAX: usize = 10_000;
/// Approximate bytes in one batch built from queued `send`s at most (below Kafka's default
/// message.max.bytes of 1 MiB).
const QUEUED_BATCH_BYTES_MAX: usize = 512 * 1024;

/// A producer on top of a [`Client`]. Share it between tasks through an `Arc`.
///
/// One batch is in flight per partition. [`Producer::send`] queues its record; whoever gets the
/// partition next sends everything queued so far as one batch, so concurrent sends to a
/// partition are batched together without a linger timer. Different partitions run
/// concurrently.
pub struct Producer {
    client: Client,
    config: ProducerConfig,
    identity: std::sync::Mutex<Option<ProducerIdentity>>,
    /// Held while taking a new producer id, so concurrent sends take only one.
    identity_init: tokio::sync::Mutex<()>,
    generation_last: std::sync::Mutex<u64>,
    partitions: std::sync::Mutex<HashMap<(String, i32), Arc<PartitionSlot>>>,
    round_robin: std::sync::Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.config)
            .finish()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Producer {
    /// A producer sending through `client`. Fails if the configuration is inconsistent
    /// (acks not in {-1, 0, 1}, idempotence without acks=all, zero timeout).
    pub fn new(client: Client, config: ProducerConfig) -> Result<Producer, ClientError> {
        if !(-1..=1).contains(&config.acks) {
            return Err(ClientError::InvalidArgument(format!(
                "acks must be -1, 0 or 1, not {}",
                config.acks
            )));
        }
        if config.idempotent && config.acks != -1 {
            return Err(ClientError::InvalidArgument(
                "an idempotent producer needs acks=all (-1)".to_string(),
            ));
        }
        if config.request_timeout_ms == 0 {
            return Err(ClientError::InvalidArgument(
                "request_timeout_ms must be positive".to_string(),
            ));
        }
        Ok(Producer {
            client,
            config,
            identity: std::sync::Mutex::new(None),
            identity_init: tokio::sync::Mutex::new(()),
            generation_last: std::sync::Mutex::new(0),
            partitions: std::sync::Mutex::new(HashMap::new()),
            round_robin: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The client this producer sends through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The producer id and epoch in use, if an idempotent producer has taken one yet.
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        lock(&self.identity).map(|i| (i.producer_id, i.epoch))
    }

    /// Sends one record to `partition`, or to the partition the default partitioner picks
    /// (murmur2 of the key; round robin for a null key). Returns (partition, offset); the offset
    /// is -1 with acks=0.
    ///
    /// Records sent concurrently to one partition go out together in one batch, in the order
    /// their `send` calls queued them.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: Record,
    ) -> Result<(i32, i64), ClientError> {
        let partition = match partition {
            Some(p) => p,
            None => self.choose_partition(topic, record.key.as_deref()).await?,
        };
        if partition < 0 {
            return Err(ClientError::InvalidArgument(format!(
                "partition {partition} is negative"
            )));
        }
        let slot = self.slot(topic, partition);
        let (reply, mut result) = tokio::sync::oneshot::channel();
        lock(&slot.queue).push_back(Pending { record, reply });
        let mut sequence = slot.sequence.lock().await;
        loop {
            match result.try_recv() {
                Ok(outcome) => return outcome.map(|offset| (partition, offset)),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    // The task that took our record was cancelled before it answered.
                    return Err(ClientError::Cancelled(format!(
                        "the batch for {topic}-{partition} holding this record was abandoned"
                    )));
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            // Our record is still queued (whoever took it would have answered before releasing
            // the lock): send the queue's head as one batch.
            let (records, replies) = take_queued_batch(&slot.queue);
            assert!(
                !records.is_empty(),
                "a queued record is unanswered but the queue is empty"
            );
            let outcome = self
                .send_locked(topic, partition, &mut sequence, &records)
                .await;
            for (i, reply) in replies.into_iter().enumerate() {
                let answer = match &outcome {
                    Ok(base) if *base >= 0 => Ok(base + i as i64),
                    Ok(base) => Ok(*base),
                    Err(e) => Err(e.duplicate()),
                };
                // A receiver that is gone was cancelled; nothing to tell it.
                let _ = reply.send(answer);
            }
        }
    }

    fn slot(&self, topic: &str, partition: i32) -> Arc<PartitionSlot> {
        let mut partitions = lock(&self.partitions);
        partitions
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    /// The partition the default partitioner picks for `key` in `topic`.
    pub async fn choose_partition(
        &self,
        topic: &str,
        key: Option<&[u8]>,
    ) -> Result<i32, ClientError> {
        let partitions = self.client.partition_count(topic, true).await?;
        if partitions <= 0 {
            return Err(ClientError::UnknownTopic {
                topic: topic.to_string(),
            });
        }
        Ok(match key {
            Some(key) => kafka_partition_for_key(key, partitions),
            None => {
                let mut counters = lock(&self.round_robin);
                let counter = counters.entry(topic.to_string()).or_insert(0);
                let p = (*counter % partitions as u32) as i32;
                *counter = counter.wrapping_add(1);
                p
            }
        })
    }

    /// Sends `records` as one batch to `topic`-`partition`; returns the offset of the first
    /// record (the others follow densely), or -1 with acks=0.
    ///
    /// Retriable errors and timeouts resend the same bytes (same producer id, epoch and
    /// sequence), so an idempotent producer never writes a batch twice. If the outcome stays
    /// unknown after the retries, the idempotent producer takes a new producer id for later
    /// batches (as Kafka's producer bumps its epoch).
    pub async fn send_batch(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<i64, ClientError> {
        if records.is_empty() {
            return Err(ClientError::InvalidArgument(
                "cannot send an empty batch".to_string(),
            ));
        }
        if partition < 0 {
            return Err(ClientError::InvalidArgument(format!(
                "partition {partition} is negative"
            )));
        }
        let slot = self.slot(topic, partition);
        let mut sequence = slot.sequence.lock().await;
        self.send_locked(topic, partition, &mut sequence, &records)
            .await
    }

    /// Sends `records` as one batch, holding the partition's sequence lock, with retries.
    async fn send_locked(
        &self,
        topic: &str,
        partition: i32,
        sequence_state: &mut PartitionSequence,
        records: &[Record],
    ) -> Result<i64, ClientError> {
        let count = i32::try_from(records.len())
            .map_err(|_| ClientError::InvalidArgument("batch has too many records".into()))?;
        assert!(count > 0, "batches are never empty");
        let identity = if self.config.idempotent {
            let mut identity = self.identity().await?;
            if sequence_state.in_flight && sequence_state.generation == identity.generation {
                // A previous send of this partition was cancelled mid-flight: its batch may or
                // may not be in the log, so its sequence cannot be reused or skipped safely.
                self.reset_identity(identity.generation);
                identity = self.identity().await?;
            }
            Some(identity)
        } else {
            None
        };
        let (producer_id, epoch, base_sequence) = match identity {
            Some(identity) => {
                if sequence_state.generation != identity.generation {
                    sequence_state.generation = identity.generation;
                    sequence_state.sequence_next = 0;
                }
                (
                    identity.producer_id,
                    identity.epoch,
                    sequence_state.sequence_next,
                )
            }
            None => (-1, -1, -1),
        };
        let bytes = encode_batch(
            records,
            producer_id,
            epoch,
            base_sequence,
            self.config.compression,
        )?;
        sequence_state.in_flight = true;
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .produce_once(
                    topic,
                    partition,
                    self.config.acks,
                    self.config.request_timeout_ms,
                    bytes.clone(),
                )
                .await;
            let error = match result {
                Ok(ack) => {
                    sequence_state.in_flight = false;
                    if identity.is_some() {
                        sequence_state.sequence_next = increment_sequence(base_sequence, count);
                    }
                    return Ok(ack.base_offset);
                }
                Err(e) => e,
            };
            if identity.is_some()
                && error.kafka_error() == Some(ResponseError::DuplicateSequenceNumber)
            {
                // The broker already has this batch (written by an earlier attempt) but no
                // longer knows its offset: Kafka's producer treats it as a success.
                sequence_state.in_flight = false;
                sequence_state.sequence_next = increment_sequence(base_sequence, count);
                return Ok(-1);
            }
            if error.is_retriable() && attempt < self.config.retries {
                attempt += 1;
                tracing::debug!(topic, partition, attempt, error = %error, "retrying produce");
                tokio::time::sleep(Duration::from_millis(self.config.retry_backoff_ms)).await;
                continue;
            }
            sequence_state.in_flight = false;
            if let Some(identity) = identity {
                let sequence_broken = matches!(
                    error.kafka_error(),
                    Some(
                        ResponseError::OutOfOrderSequenceNumber
                            | ResponseError::UnknownProducerId
                            | ResponseError::InvalidProducerEpoch
                            | ResponseError::ProducerFenced
                    )
                );
                if sequence_broken || error.is_ambiguous() || error.is_retriable() {
                    // The broker's view of our sequence is unknown: start over with a new id.
                    self.reset_identity(identity.generation);
                }
            }
            return Err(error);
        }
    }

    async fn identity(&self) -> Result<ProducerIdentity, ClientError> {
        if let Some(identity) = *lock(&self.identity) {
            return Ok(identity);
        }
        let _init = self.identity_init.lock().await;
        if let Some(identity) = *lock(&self.identity) {
            return Ok(identity);
        }
        let (producer_id, epoch) = self.client.init_producer_id().await?;
        let generation = {
            let mut last = lock(&self.generation_last);
            *last += 1;
            *last
        };
        let identity = ProducerIdentity {
            producer_id,
            epoch,
            generation,
        };
        tracing::debug!(producer_id, epoch, "got producer id");
        *lock(&self.identity) = Some(identity);
        Ok(identity)
    }

    fn reset_identity(&self, generation: u64) {
        let mut identity = lock(&self.identity);
        if identity.map(|i| i.generation) == Some(generation) {
            *identity = None;
        }
    }
}

/// Takes records from the head of `queue` for one batch: at least one, at most
/// [`QUEUED_BATCH_RECORDS_MAX`] and about [`QUEUED_BATCH_BYTES_MAX`] bytes.
#[allow(clippy::type_complexity)]
fn take_queued_batch(
    queue: &std::sync::Mutex<VecDeque<Pending>>,
) -> (
    Vec<Record>,
    Vec<tokio::sync::oneshot::Sender<Result<i64, ClientError>>>,
) {
    let mut queue = lock(queue);
    let mut records = Vec::new();
    let mut replies = Vec::new();
    let mut bytes = 0usize;
    while let Some(front) = queue.front() {
        let size = record_size_estimate(&front.record);
        if !records.is_empty()
            && (records.len() >= QUEUED_BATCH_RECORDS_MAX || bytes + size > QUEUED_BATCH_BYTES_MAX)
        {
            break;
        }
        let Some(pending) = queue.pop_front() else {
            break;
        };
        bytes += size;
        records.push(pending.record);
        replies.push(pending.reply);
    }
    (records, replies)
}

/// Rough encoded size of a record (uncompressed).
fn record_size_estimate(record: &Record) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 10)
        .sum();
    record.key.as_ref().map_or(0, |k| k.len())
        + record.value.as_ref().map_or(0, |v| v.len())
        + headers
        + 24
}

/// Kafka's sequence increment: wraps from i32::MAX to 0.
fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    debug_assert!(sequence >= 0 && increment >= 0);
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Encodes `records` as one v2 record batch without a producer identity (not idempotent), for
/// callers that send Produce requests themselves (the load tool's pipelined producers).
pub fn encode_plain_batch(
    records: &[Record],
    compression: Compression,
) -> Result<Bytes, ClientError> {
    encode_batch(records, -1, -1, -1, compression)
}

/// Encodes `records` as one v2 record batch (base offset 0) with the given producer identity
/// and base sequence (-1 for none).
pub(crate) fn encode_batch(
    records: &[Record],
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    compression: Compression,
) -> Result<Bytes, ClientError> {
    let now = now_ms();
    let wire: Vec<WireRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut headers = IndexMap::new();
            for (k, v) in &r.headers {
                headers.insert(StrBytes::from_string(k.clone()), v.clone());
            }
            WireRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder puts records in one batch only if offset - sequence is constant;
                // only the first record's sequence is written (as the batch's base sequence).
                sequence: base_sequence.wrapping_add(i as i32),
                timestamp: r.timestamp_ms.unwrap_or(now),
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &wire,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| ClientError::InvalidArgument(format!("encoding record batch: {e}")))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn batch_is_one_v2_batch_with_producer_fields() {
        let records: Vec<Record> = (0..5)
            .map(|i| Record {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("v{i}"))),
                headers: vec![("h".to_string(), Some(Bytes::from_static(b"x")))],
                timestamp_ms: Some(1_000 + i),
            })
            .collect();
        for compression in [Compression::None, Compression::Zstd, Compression::Lz4] {
            for (pid, epoch, seq) in [(7, 2, 40), (-1, -1, -1)] {
                let bytes = encode_batch(&records, pid, epoch, seq, compression).expect("encode");
                let infos =
                    RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).expect("batch info");
                assert_eq!(infos.len(), 1, "one batch");
                assert_eq!(infos[0].record_count, 5);
                assert_eq!(infos[0].producer_id, pid);
                assert_eq!(infos[0].producer_epoch, epoch);
                assert_eq!(infos[0].base_sequence, seq);
                assert_eq!(infos[0].compression, compression);
                let set = RecordBatchDecoder::decode(&mut bytes.clone()).expect("decode");
                assert_eq!(set.records[3].value.as_deref(), Some(&b"v3"[..]));
                assert_eq!(set.records[3].timestamp, 1_003);
            }
        }
    }

    #[test]
    fn sequence_wraps_like_kafka() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    }
}
