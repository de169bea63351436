//! Fetch: reading records from one partition.

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;

use super::client_core::Client;
use super::error::ClientError;

/// Size of a v2 batch header up to and including the records count.
const BATCH_HEADER_BYTES: usize = 61;
/// Offset of the magic byte in a batch.
const MAGIC_OFFSET: usize = 16;
/// The smallest encoded record (length, attributes, deltas, key/value lengths, header count).
const RECORD_BYTES_MIN: usize = 7;
/// Upper bound on the record count we accept in one compressed batch before decoding it.
const COMPRESSED_BATCH_RECORDS_MAX: usize = 10_000_000;

/// One record read by [`Client::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp (creation or log-append time), ms since the epoch.
    pub timestamp_ms: i64,
    /// Key, `None` for a null key.
    pub key: Option<Bytes>,
    /// Value, `None` for a null value (tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// What one fetch of one partition returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    /// The partition's high watermark: offsets below it are visible to consumers.
    pub high_watermark: i64,
    /// The partition's log start offset.
    pub log_start_offset: i64,
    /// The records at or after the requested offset, in offset order (control records are
    /// skipped).
    pub records: Vec<ConsumedRecord>,
    /// Where the next fetch starts: after the last whole batch returned (which may hold no
    /// record at all in a compacted topic), or the requested offset if none was returned.
    pub next_offset: i64,
}

impl Client {
    /// Fetches records of `topic`-`partition` starting at `offset`, waiting up to `max_wait_ms`
    /// on the broker for data, returning at most about `max_bytes` (at least one batch).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<FetchResult, ClientError> {
        if offset < 0 {
            return Err(ClientError::InvalidArgument(format!(
                "fetch offset {offset} is negative"
            )));
        }
        let max_wait_ms = max_wait_ms.max(0);
        let max_bytes = max_bytes.max(1);
        let timeout_ms = self
            .config()
            .request_timeout_ms
            .saturating_add(max_wait_ms as u64);
        self.on_partition_leader(topic, partition, |conn| async move {
            let version = conn.version_for::<FetchRequest>()?;
            let mut fetch_partition = FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes);
            if version < 5 {
                fetch_partition.log_start_offset = -1;
            }
            let mut request = FetchRequest::default()
                .with_max_wait_ms(max_wait_ms)
                .with_min_bytes(1)
                .with_max_bytes(max_bytes)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![fetch_partition])]);
            if version < 15 {
                request.replica_id = BrokerId(-1);
            }
            let response = conn
                .request_with_timeout(&request, version, timeout_ms)
                .await?;
            if response.error_code != 0 {
                return Err(ClientError::from_code(
                    response.error_code,
                    format!("fetch {topic}-{partition}"),
                    None,
                ));
            }
            let data = response
                .responses
                .into_iter()
                .filter(|t| t.topic.0.as_str() == topic)
                .flat_map(|t| t.partitions.into_iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| ClientError::Protocol {
                    addr: conn.addr().to_string(),
                    reason: format!("Fetch response does not mention {topic}-{partition}"),
                })?;
            match ResponseError::try_from_code(data.error_code) {
                None => {}
                Some(ResponseError::OffsetOutOfRange) => {
                    return Err(ClientError::OffsetOutOfRange {
                        topic: topic.to_string(),
                        partition,
                        offset,
                    })
                }
                Some(_) => {
                    return Err(ClientError::from_code(
                        data.error_code,
                        format!("fetch {topic}-{partition} at {offset}"),
                        None,
                    ))
                }
            }
            let next_offset = data
                .records
                .as_ref()
                .map_or(offset, |bytes| next_offset_after(bytes, offset));
            let records = match data.records {
                Some(bytes) => {
                    decode_records(bytes, offset).map_err(|reason| ClientError::Protocol {
                        addr: conn.addr().to_string(),
                        reason: format!("records of {topic}-{partition}: {reason}"),
                    })?
                }
                None => Vec::new(),
            };
            Ok(FetchResult {
                high_watermark: data.high_watermark,
                log_start_offset: data.log_start_offset,
                records,
                next_offset,
            })
        })
        .await
    }
}

/// The offset after the last whole batch in `bytes` (batch headers only), at least `offset`.
pub fn next_offset_after(bytes: &[u8], offset: i64) -> i64 {
    let mut next = offset;
    let mut position = 0usize;
    while bytes.len() - position >= BATCH_HEADER_BYTES {
        let rest = &bytes[position..];
        let base_offset = be_i64(&rest[0..8]);
        let Some(total) = usize::try_from(be_i32(&rest[8..12]))
            .ok()
            .and_then(|l| l.checked_add(12))
        else {
            break;
        };
        if total < BATCH_HEADER_BYTES || rest.len() < total {
            break;
        }
        let last_offset_delta = be_i32(&rest[23..27]);
        next = next.max(base_offset.saturating_add(i64::from(last_offset_delta)) + 1);
        position += total;
    }
    next
}

/// Decodes the record batches in `bytes` (magic 2, any codec), skipping control batches and
/// records below `offset_min`. A partial batch at the end (a broker may cut the last one at
/// `max_bytes`) is ignored. Batches are checked (length, magic, CRC-32C, plausible record count)
/// before decoding so that bad bytes give an error, never a panic or a huge allocation.
pub fn decode_records(bytes: Bytes, offset_min: i64) -> Result<Vec<ConsumedRecord>, String> {
    let mut out = Vec::new();
    let mut position = 0usize;
    while bytes.len() - position >= BATCH_HEADER_BYTES {
        let rest = &bytes[position..];
        let base_offset = be_i64(&rest[0..8]);
        let batch_length = be_i32(&rest[8..12]);
        let batch_length = usize::try_from(batch_length)
            .ok()
            .filter(|&l| l >= BATCH_HEADER_BYTES - 12)
            .ok_or_else(|| format!("batch at offset {base_offset}: bad length {batch_length}"))?;
        let total = batch_length + 12;
        if rest.len() < total {
            break; // partial trailing batch
        }
        let magic = rest[MAGIC_OFFSET];
        if magic != 2 {
            return Err(format!(
                "batch at offset {base_offset}: unsupported magic {magic}"
            ));
        }
        let crc_stored = u32::from_be_bytes([rest[17], rest[18], rest[19], rest[20]]);
        let crc_actual = crc32c::crc32c(&rest[21..total]);
        if crc_stored != crc_actual {
            return Err(format!(
                "batch at offset {base_offset}: CRC mismatch (stored {crc_stored:#010x}, computed {crc_actual:#010x})"
            ));
        }
        let attributes = u16::from_be_bytes([rest[21], rest[22]]);
        let compressed = attributes & 0x7 != 0;
        let last_offset_delta = be_i32(&rest[23..27]);
        let record_count = be_i32(&rest[57..61]);
        let record_count = usize::try_from(record_count)
            .map_err(|_| format!("batch at offset {base_offset}: negative record count"))?;
        let records_bytes = total - BATCH_HEADER_BYTES;
        let plausible = if compressed {
            record_count <= COMPRESSED_BATCH_RECORDS_MAX
        } else {
            record_count <= records_bytes / RECORD_BYTES_MIN
        };
        if !plausible {
            return Err(format!(
                "batch at offset {base_offset}: {record_count} records cannot fit in {records_bytes} bytes"
            ));
        }
        let is_control = attributes & 0x20 != 0;
        let batch_last_offset = base_offset.saturating_add(i64::from(last_offset_delta));
        if !is_control && batch_last_offset >= offset_min {
            let mut batch = bytes.slice(position..position + total);
            let set = RecordBatchDecoder::decode(&mut batch)
                .map_err(|e| format!("batch at offset {base_offset}: {e}"))?;
            for record in set.records {
                if record.control || record.offset < offset_min {
                    continue;
                }
                out.push(ConsumedRecord {
                    offset: record.offset,
                    timestamp_ms: record.timestamp,
                    key: record.key,
                    value: record.value,
                    headers: record
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.as_str().to_string(), v))
                        .collect(),
                });
            }
        }
        position += total;
    }
    Ok(out)
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(base: i64, values: &[&str], compression: Compression) -> BytesMut {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: -1 + i as i32,
                timestamp: 1_000 + i as i64,
                key: None,
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf
    }

    #[test]
    fn decodes_all_codecs_and_skips_below_offset() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut bytes = batch(10, &["a", "b", "c"], compression);
            bytes.extend_from_slice(&batch(13, &["d"], compression));
            let records = decode_records(bytes.freeze(), 11).expect("decode");
            let values: Vec<_> = records
                .iter()
                .map(|r| (r.offset, r.value.clone().expect("value")))
                .collect();
            assert_eq!(
                values,
                vec![
                    (11, Bytes::from_static(b"b")),
                    (12, Bytes::from_static(b"c")),
                    (13, Bytes::from_static(b"d"))
                ],
                "{compression:?}"
            );
        }
    }

    #[test]
    fn partial_trailing_batch_is_ignored() {
        let mut bytes = batch(0, &["a"], Compression::None);
        let second = batch(1, &["b"], Compression::None);
        bytes.extend_from_slice(&second[..second.len() - 3]);
        let records = decode_records(bytes.freeze(), 0).expect("decode");
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let good = batch(0, &["hello", "world"], Compression::Zstd).freeze();
        // Flip every byte in turn: each result must be Ok or Err, never a panic.
        for i in 0..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0x5a;
            let _ = decode_records(Bytes::from(bad), 0);
        }
        let mut bad = good.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let err = decode_records(Bytes::from(bad), 0).expect_err("crc must catch it");
        assert!(err.contains("CRC"), "{err}");
    }
}
