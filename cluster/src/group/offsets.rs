//! The durable form of committed offsets: records of the internal topic `__consumer_offsets`.
//!
//! Keys and values use Kafka's own layouts, so the topic reads like Kafka's:
//! - key (offset commit key, version 1): `version: i16 = 1`, `group: string`, `topic: string`,
//!   `partition: i32` (strings are an `i16` length then UTF-8 bytes);
//! - value (offset commit value, version 3): `version: i16 = 3`, `offset: i64`,
//!   `leader_epoch: i32`, `metadata: string`, `commit_timestamp: i64`;
//! - a null value (tombstone) deletes the key (OffsetDelete, DeleteGroups).
//!
//! Keys of other versions (Kafka's group metadata records, version 2) are ignored on replay.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_storage::batch;
use strata_storage::tier::records;

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Offset-commit key version written (Kafka's `OffsetCommitKey` v1).
const KEY_VERSION: i16 = 1;
/// Offset-commit value version written (Kafka's `OffsetCommitValue` v3).
const VALUE_VERSION: i16 = 3;

/// The key of one committed offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OffsetKey {
    /// Group id.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will consume.
    pub offset: i64,
    /// Leader epoch the client saw (-1 if none).
    pub leader_epoch: i32,
    /// Client metadata (at most `offset.metadata.max.bytes`).
    pub metadata: String,
    /// When the commit was made, ms since the Unix epoch.
    pub commit_timestamp_ms: i64,
}

/// Longest string of a key or value: the `i16` length prefix of Kafka's layout.
pub const STRING_BYTES_MAX: usize = i16::MAX as usize;

fn put_string(buf: &mut BytesMut, s: &str) {
    // Callers refuse longer strings with Kafka's error (group ids: INVALID_GROUP_ID, metadata:
    // OFFSET_METADATA_TOO_LARGE, topics: at most 249 bytes): a string cut short here would
    // silently merge keys.
    let len = i16::try_from(s.len()).expect("offsets strings are at most STRING_BYTES_MAX bytes");
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
}

fn get_string(buf: &mut Bytes) -> Result<String, String> {
    if buf.remaining() < 2 {
        return Err("truncated string length".to_string());
    }
    let len = buf.get_i16();
    if len < 0 {
        return Err(format!("negative string length {len}"));
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err("truncated string".to_string());
    }
    let bytes = buf.split_to(len);
    String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".to_string())
}

/// Encodes an offset-commit key.
pub fn encode_key(key: &OffsetKey) -> Bytes {
    let mut buf = BytesMut::with_capacity(12 + key.group.len() + key.topic.len());
    buf.put_i16(KEY_VERSION);
    put_string(&mut buf, &key.group);
    put_string(&mut buf, &key.topic);
    buf.put_i32(key.partition);
    buf.freeze()
}

/// Decodes a key: `Ok(None)` for a key that is not an offset-commit key.
pub fn decode_key(mut buf: Bytes) -> Result<Option<OffsetKey>, String> {
    if buf.remaining() < 2 {
        return Err("truncated key version".to_string());
    }
    let version = buf.get_i16();
    if !(0..=1).contains(&version) {
        return Ok(None);
    }
    let group = get_string(&mut buf)?;
    let topic = get_string(&mut buf)?;
    if buf.remaining() < 4 {
        return Err("truncated partition".to_string());
    }
    let partition = buf.get_i32();
    Ok(Some(OffsetKey {
        group,
        topic,
        partition,
    }))
}

/// Encodes an offset-commit value (version 3).
pub fn encode_value(value: &CommittedOffset) -> Bytes {
    let mut buf = BytesMut::with_capacity(26 + value.metadata.len());
    buf.put_i16(VALUE_VERSION);
    buf.put_i64(value.offset);
    buf.put_i32(value.leader_epoch);
    put_string(&mut buf, &value.metadata);
    buf.put_i64(value.commit_timestamp_ms);
    buf.freeze()
}

/// Decodes an offset-commit value of version 0 to 3 (Kafka's layouts).
pub fn decode_value(mut buf: Bytes) -> Result<CommittedOffset, String> {
    let need = |buf: &Bytes, n: usize| {
        if buf.remaining() < n {
            Err("truncated value".to_string())
        } else {
            Ok(())
        }
    };
    need(&buf, 2)?;
    let version = buf.get_i16();
    need(&buf, 8)?;
    let offset = buf.get_i64();
    let leader_epoch = if version >= 3 {
        need(&buf, 4)?;
        buf.get_i32()
    } else {
        -1
    };
    let metadata = get_string(&mut buf)?;
    need(&buf, 8)?;
    let commit_timestamp_ms = buf.get_i64();
    if !(0..=3).contains(&version) {
        return Err(format!("unknown offset value version {version}"));
    }
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// Encodes `(key, value)` pairs (a `None` value is a tombstone) as one v2 record batch.
pub fn encode_batch(
    entries: &[(Bytes, Option<Bytes>)],
    timestamp_ms: i64,
) -> Result<BytesMut, String> {
    assert!(
        !entries.is_empty(),
        "an offsets batch holds at least one record"
    );
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: timestamp_ms,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encoding an offsets batch: {e:#}"))?;
    Ok(buf)
}

/// What a replay of `__consumer_offsets` batches did: records handed out, batches skipped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayCount {
    /// Records handed to the visitor.
    pub records: usize,
    /// Batches that did not decode (framing, CRC, a bomb past
    /// [`records::DECOMPRESSED_RECORDS_BYTES_MAX`], a transactional batch), skipped whole.
    pub batches_skipped: usize,
}

/// Hands every record of the batches laid back to back in `bytes` to `visit` as `(offset, key,
/// value)` (`None` value: a tombstone), one batch decoded at a time through the bounded decoder
/// ([`records::visit_batch_records`]): a batch never takes more than
/// [`records::DECOMPRESSED_RECORDS_BYTES_MAX`] decompressed, and only one is held at once.
///
/// Control batches carry no offsets and are stepped over. A batch that does not decode is
/// skipped with a warning, never an error: the broker must start whatever bytes the topic
/// holds (only the broker writes to it, but a log written by an older version, or by a client
/// before internal topics were refused, may hold anything).
pub fn replay_batches(
    bytes: &Bytes,
    mut visit: impl FnMut(i64, Option<Bytes>, Option<Bytes>),
) -> ReplayCount {
    let mut count = ReplayCount::default();
    for item in batch::batches(bytes) {
        let Ok((header, whole)) = item else {
            // The log hands out whole, framed batches; a bad frame ends this read.
            count.batches_skipped += 1;
            tracing::warn!("an offsets batch with bad framing ends the replay of this read");
            break;
        };
        if header.is_control() {
            continue;
        }
        // Records are handed out as they decode (nothing per record is kept here): the records
        // of a batch that fails halfway before its failure are valid records and stay applied.
        let outcome = records::visit_batch_records(whole, |record| {
            // Keys and values may live in the decompressed section: copied, one record at a time.
            let copy = |field: Option<&[u8]>| field.map(Bytes::copy_from_slice);
            count.records += 1;
            visit(record.offset, copy(record.key), copy(record.value));
            Ok(())
        });
        match outcome {
            Ok(_) => {}
            Err(error) => {
                count.batches_skipped += 1;
                tracing::warn!(
                    base_offset = header.base_offset,
                    %error,
                    "undecodable offsets batch skipped"
                );
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_round_trip() {
        let key = OffsetKey {
            group: "g".to_string(),
            topic: "orders".to_string(),
            partition: 7,
        };
        assert_eq!(decode_key(encode_key(&key)).unwrap(), Some(key));
        let value = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".to_string(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(decode_value(encode_value(&value)).unwrap(), value);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let key = encode_key(&OffsetKey {
            group: "group".to_string(),
            topic: "t".to_string(),
            partition: 1,
        });
        for len in 0..key.len() {
            assert!(decode_key(key.slice(..len)).is_err(), "len {len}");
        }
        let value = encode_value(&CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        });
        for len in 0..value.len() {
            assert!(decode_value(value.slice(..len)).is_err(), "len {len}");
        }
    }

    #[test]
    fn group_metadata_keys_are_skipped() {
        let mut buf = BytesMut::new();
        buf.put_i16(2);
        put_string(&mut buf, "g");
        assert_eq!(decode_key(buf.freeze()).unwrap(), None);
    }

    #[test]
    fn batch_round_trip_keeps_tombstones() {
        let k = encode_key(&OffsetKey {
            group: "g".to_string(),
            topic: "t".to_string(),
            partition: 0,
        });
        let batch =
            encode_batch(&[(k.clone(), Some(Bytes::from_static(b"v"))), (k, None)], 5).unwrap();
        let mut decoded = Vec::new();
        let count = replay_batches(&batch.freeze(), |offset, key, value| {
            decoded.push((offset, key, value))
        });
        assert_eq!(count.batches_skipped, 0);
        assert_eq!(decoded.len(), 2);
        assert!(decoded[0].2.is_some());
        assert!(decoded[1].2.is_none());
    }
}
