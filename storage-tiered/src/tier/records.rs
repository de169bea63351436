//! The records inside a v2 record batch: decoded (decompressed) into [`RecordRow`]s, and batches
//! rebuilt from rows with [`encode_batch`].
//!
//! The record layout is parsed by hand rather than with kafka-protocol's `Record`, which keeps
//! headers in a map and so merges duplicate header keys (Kafka allows duplicates). The
//! compression codecs are kafka-protocol's.
//!
//! Layout of one record inside the (decompressed) records section of a batch (varints are
//! zig-zag LEB128; `varint` is 32-bit, `varlong` 64-bit):
//!
//! ```text
//! length: varint            bytes of the record after this field
//! attributes: int8          unused (0)
//! timestampDelta: varlong   relative to the batch's baseTimestamp
//! offsetDelta: varint       relative to the batch's baseOffset
//! keyLength: varint         -1 for a null key
//! key: bytes
//! valueLength: varint       -1 for a null value
//! value: bytes
//! headerCount: varint
//! headers: [headerKeyLength: varint, headerKey: UTF-8, headerValueLength: varint (-1 null), value]
//! ```
//!
//! Every length read from the input is checked against the bytes that remain before anything is
//! allocated for it, so a corrupt length field fails cleanly instead of allocating gigabytes.
//! (Decompression itself is done by the codec libraries and is not bounded here.)

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{
    self, BatchError, BatchHeader, Compression, TimestampType, BATCH_HEADER_BYTES,
    CRC_COVERED_FROM, LOG_OVERHEAD_BYTES, MAGIC_V2,
};

/// One record of a batch, with its absolute offset and effective timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    /// Absolute offset (the batch's base offset + the record's offset delta).
    pub offset: i64,
    /// Effective timestamp: the record's own for CreateTime batches, the batch's max timestamp
    /// for LogAppendTime batches (what a Kafka consumer sees).
    pub timestamp_ms: i64,
    /// Key, `None` when null.
    pub key: Option<Bytes>,
    /// Value, `None` when null (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in record order; keys may repeat.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Batch-level fields needed to rebuild a batch exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Offset of the batch's first offset slot (kept after compaction removes records).
    pub base_offset: i64,
    /// Offset of the batch's last offset slot (kept after compaction removes records).
    pub last_offset: i64,
    /// Leader epoch stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Compression codec of the records section.
    pub compression: Compression,
    /// Timestamp type.
    pub timestamp_type: TimestampType,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the batch's first record, or -1.
    pub base_sequence: i32,
}

/// Why a batch cannot be decoded into rows, or rows cannot be encoded into a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The batch framing or CRC is wrong.
    #[error("invalid record batch: {0}")]
    Batch(#[from] BatchError),
    /// A record field runs past the end of the records section.
    #[error("truncated record: {what} needs {needed} bytes, {available} remain")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the records section.
        available: u64,
    },
    /// A varint is longer than its type allows or overflows it.
    #[error("bad varint in {what}")]
    BadVarint {
        /// The field being read.
        what: &'static str,
    },
    /// The records section is inconsistent (negative lengths, record length mismatch, count
    /// mismatch, offsets out of order or outside the batch, trailing bytes, ...).
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// The batch uses a codec id Kafka does not define.
    #[error("unsupported compression codec id {0}")]
    UnsupportedCompression(u8),
    /// The codec failed to decompress the records section.
    #[error("cannot decompress {codec:?} records: {message}")]
    Decompression {
        /// The batch's codec.
        codec: Compression,
        /// The codec's error.
        message: String,
    },
    /// The codec failed to compress the records section.
    #[error("cannot compress records with {codec:?}: {message}")]
    Compression {
        /// The requested codec.
        codec: Compression,
        /// The codec's error.
        message: String,
    },
    /// A header key is not UTF-8. Such a batch is refused rather than stored lossily.
    #[error("header key of the record at offset {offset} is not UTF-8")]
    HeaderKeyNotUtf8 {
        /// Offset of the record.
        offset: i64,
    },
    /// Control batches (transaction markers) are not decoded into rows.
    #[error("control batch at base offset {base_offset} is not supported")]
    ControlBatch {
        /// Base offset of the batch.
        base_offset: i64,
    },
    /// Transactional batches are not decoded into rows.
    #[error("transactional batch at base offset {base_offset} is not supported")]
    TransactionalBatch {
        /// Base offset of the batch.
        base_offset: i64,
    },
    /// The rows or meta given to [`encode_batch`] cannot form a batch.
    #[error("cannot encode batch: {0}")]
    InvalidRows(String),
}

/// Bits of the batch attributes this module writes.
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
/// The smallest possible encoded record (every field one byte).
const RECORD_BYTES_MIN: usize = 7;

/// A cursor over a byte slice whose reads are all bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, position: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.position
    }

    fn take(&mut self, what: &'static str, count: usize) -> Result<&'a [u8], RecordError> {
        if count > self.remaining() {
            return Err(RecordError::Truncated {
                what,
                needed: count as u64,
                available: self.remaining() as u64,
            });
        }
        let bytes = &self.buf[self.position..self.position + count];
        self.position += count;
        Ok(bytes)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, RecordError> {
        Ok(self.take(what, 1)?[0])
    }

    /// An unsigned LEB128 value of at most `bits` bits.
    fn unsigned_leb128(&mut self, what: &'static str, bits: u32) -> Result<u64, RecordError> {
        let mut value: u64 = 0;
        let mut shift: u32 = 0;
        loop {
            let byte = self.u8(what)?;
            let payload = u64::from(byte & 0x7f);
            // Bits of this byte that land at or above `bits` must be zero.
            if shift + 7 > bits && payload >> (bits - shift) != 0 {
                return Err(RecordError::BadVarint { what });
            }
            value |= payload << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift >= bits {
                return Err(RecordError::BadVarint { what });
            }
        }
    }

    /// A zig-zag 32-bit varint (at most 5 bytes).
    fn varint(&mut self, what: &'static str) -> Result<i32, RecordError> {
        let raw = self.unsigned_leb128(what, 32)? as u32;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    /// A zig-zag 64-bit varlong (at most 10 bytes).
    fn varlong(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let raw = self.unsigned_leb128(what, 64)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// A varint length followed by that many bytes; -1 means null.
    fn nullable_bytes(
        &mut self,
        what: &'static str,
        length_what: &'static str,
    ) -> Result<Option<&'a [u8]>, RecordError> {
        let length = self.varint(length_what)?;
        match length {
            -1 => Ok(None),
            length if length < 0 => Err(RecordError::Corrupt(format!(
                "negative {length_what} {length}"
            ))),
            length => Ok(Some(self.take(what, length as usize)?)),
        }
    }
}

/// Appends a zig-zag 32-bit varint.
fn put_varint(out: &mut BytesMut, value: i32) {
    put_unsigned_leb128(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

/// Appends a zig-zag 64-bit varlong.
fn put_varlong(out: &mut BytesMut, value: i64) {
    put_unsigned_leb128(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_unsigned_leb128(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// The varint length of an optional byte field (-1 for null), checked to fit an i32.
fn nullable_length(field: &Option<Bytes>, what: &str) -> Result<i32, RecordError> {
    match field {
        None => Ok(-1),
        Some(bytes) => i32::try_from(bytes.len())
            .map_err(|_| RecordError::InvalidRows(format!("{what} of {} bytes", bytes.len()))),
    }
}

fn put_nullable(out: &mut BytesMut, field: &Option<Bytes>, length: i32) {
    put_varint(out, length);
    if let Some(bytes) = field {
        out.put_slice(bytes);
    }
}

/// Runs one of kafka-protocol's decompressors over `compressed`.
fn run_decompressor<D: Decompressor<Bytes, Buf = Bytes>>(
    compressed: Bytes,
) -> Result<Bytes, String> {
    let mut input = compressed;
    D::decompress(&mut input, |buf| Ok(std::mem::take(buf))).map_err(|error| format!("{error:#}"))
}

/// Runs one of kafka-protocol's compressors, appending the compressed `records` to `out`.
fn run_compressor<C: Compressor<Vec<u8>, BufMut = BytesMut>>(
    records: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    C::compress(out, |buf| {
        buf.put_slice(records);
        Ok(())
    })
    .map_err(|error| format!("{error:#}"))
}

/// Decompresses the records section of a batch.
fn decompress(codec: Compression, compressed: &[u8]) -> Result<Bytes, RecordError> {
    let input = Bytes::copy_from_slice(compressed);
    let result = match codec {
        Compression::None => return Ok(input),
        Compression::Gzip => run_decompressor::<Gzip>(input),
        Compression::Snappy => run_decompressor::<Snappy>(input),
        Compression::Lz4 => run_decompressor::<Lz4>(input),
        Compression::Zstd => run_decompressor::<Zstd>(input),
        Compression::Unknown(id) => return Err(RecordError::UnsupportedCompression(id)),
    };
    result.map_err(|message| RecordError::Decompression { codec, message })
}

/// Compresses a records section, appending it to `out`.
fn compress(codec: Compression, records: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
    let result = match codec {
        Compression::None => {
            out.extend_from_slice(records);
            return Ok(());
        }
        Compression::Gzip => run_compressor::<Gzip>(records, out),
        Compression::Snappy => run_compressor::<Snappy>(records, out),
        Compression::Lz4 => run_compressor::<Lz4>(records, out),
        Compression::Zstd => run_compressor::<Zstd>(records, out),
        Compression::Unknown(id) => return Err(RecordError::UnsupportedCompression(id)),
    };
    result.map_err(|message| RecordError::Compression { codec, message })
}

fn compression_id(codec: Compression) -> Result<i16, RecordError> {
    match codec {
        Compression::None => Ok(0),
        Compression::Gzip => Ok(1),
        Compression::Snappy => Ok(2),
        Compression::Lz4 => Ok(3),
        Compression::Zstd => Ok(4),
        Compression::Unknown(id) => Err(RecordError::UnsupportedCompression(id)),
    }
}

/// Decodes one whole v2 batch (`batch` must be exactly the batch): checks the framing and the
/// CRC, decompresses, and parses every record.
///
/// Control and transactional batches are refused, as are header keys that are not UTF-8.
/// Records must have strictly increasing offset deltas within `0..=lastOffsetDelta`, and the
/// records section must hold exactly `recordsCount` records.
pub fn decode_batch(batch: &[u8]) -> Result<(BatchMeta, Vec<RecordRow>), RecordError> {
    let header = BatchHeader::parse(batch)?;
    let size = header.size_bytes();
    if size != batch.len() as u64 {
        if size > batch.len() as u64 {
            return Err(BatchError::Truncated {
                needed: size,
                available: batch.len() as u64,
            }
            .into());
        }
        return Err(RecordError::Corrupt(format!(
            "{} bytes after a batch of {size} bytes",
            batch.len() as u64 - size
        )));
    }
    batch::verify_crc(batch)?;
    if header.is_control() {
        return Err(RecordError::ControlBatch {
            base_offset: header.base_offset,
        });
    }
    if header.is_transactional() {
        return Err(RecordError::TransactionalBatch {
            base_offset: header.base_offset,
        });
    }
    let compression = header.compression();
    let meta = BatchMeta {
        base_offset: header.base_offset,
        last_offset: header
            .base_offset
            .checked_add(i64::from(header.last_offset_delta))
            .ok_or_else(|| {
                RecordError::Corrupt(format!(
                    "base offset {} + lastOffsetDelta {} overflows",
                    header.base_offset, header.last_offset_delta
                ))
            })?,
        partition_leader_epoch: header.partition_leader_epoch,
        compression,
        timestamp_type: header.timestamp_type(),
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
    };
    if header.records_count < 0 {
        return Err(RecordError::Corrupt(format!(
            "negative recordsCount {}",
            header.records_count
        )));
    }
    let records = decompress(compression, &batch[BATCH_HEADER_BYTES..])?;
    let rows = decode_records(&header, &records)?;
    Ok((meta, rows))
}

/// Parses the decompressed records section of a batch.
fn decode_records(header: &BatchHeader, records: &[u8]) -> Result<Vec<RecordRow>, RecordError> {
    let count = header.records_count as usize;
    let mut reader = Reader::new(records);
    // recordsCount is untrusted: never reserve more than the bytes could hold.
    let mut rows = Vec::with_capacity(count.min(records.len() / RECORD_BYTES_MIN));
    let mut previous_delta: Option<i32> = None;
    for index in 0..count {
        let length = reader.varint("record length")?;
        if length < 0 {
            return Err(RecordError::Corrupt(format!(
                "record {index} has negative length {length}"
            )));
        }
        let body = reader.take("record", length as usize)?;
        let mut record = Reader::new(body);
        let _attributes = record.u8("record attributes")?;
        let timestamp_delta = record.varlong("timestamp delta")?;
        let offset_delta = record.varint("offset delta")?;
        if offset_delta < 0 || offset_delta > header.last_offset_delta {
            return Err(RecordError::Corrupt(format!(
                "record {index} has offset delta {offset_delta} outside 0..={}",
                header.last_offset_delta
            )));
        }
        if previous_delta.is_some_and(|previous| offset_delta <= previous) {
            return Err(RecordError::Corrupt(format!(
                "record {index} has offset delta {offset_delta}, not above the previous record's"
            )));
        }
        previous_delta = Some(offset_delta);
        // Cannot overflow: last_offset was checked by the caller.
        let offset = header.base_offset + i64::from(offset_delta);
        let timestamp_ms = match header.timestamp_type() {
            TimestampType::LogAppendTime => header.max_timestamp,
            TimestampType::CreateTime => header
                .base_timestamp
                .checked_add(timestamp_delta)
                .ok_or_else(|| {
                    RecordError::Corrupt(format!(
                        "record {index}: timestamp {} + delta {timestamp_delta} overflows",
                        header.base_timestamp
                    ))
                })?,
        };
        let key = record
            .nullable_bytes("key", "key length")?
            .map(Bytes::copy_from_slice);
        let value = record
            .nullable_bytes("value", "value length")?
            .map(Bytes::copy_from_slice);
        let header_count = record.varint("header count")?;
        if header_count < 0 {
            return Err(RecordError::Corrupt(format!(
                "record {index} has negative header count {header_count}"
            )));
        }
        // Each header takes at least 2 bytes.
        let mut headers = Vec::with_capacity((header_count as usize).min(record.remaining() / 2));
        for _ in 0..header_count {
            let key_length = record.varint("header key length")?;
            if key_length < 0 {
                return Err(RecordError::Corrupt(format!(
                    "record {index} has a header key of negative length {key_length}"
                )));
            }
            let key_bytes = record.take("header key", key_length as usize)?;
            let key = std::str::from_utf8(key_bytes)
                .map_err(|_| RecordError::HeaderKeyNotUtf8 { offset })?
                .to_owned();
            let value = record
                .nullable_bytes("header value", "header value length")?
                .map(Bytes::copy_from_slice);
            headers.push((key, value));
        }
        if record.remaining() != 0 {
            return Err(RecordError::Corrupt(format!(
                "record {index} declares {length} bytes but its fields end {} bytes earlier",
                record.remaining()
            )));
        }
        rows.push(RecordRow {
            offset,
            timestamp_ms,
            key,
            value,
            headers,
        });
    }
    if reader.remaining() != 0 {
        return Err(RecordError::Corrupt(format!(
            "{} bytes after the {count} records the batch declares",
            reader.remaining()
        )));
    }
    Ok(rows)
}

/// Encodes `rows` into one v2 batch described by `meta`, compressed with `meta.compression`,
/// with a correct CRC.
///
/// `rows` must have strictly increasing offsets within `meta.base_offset..=meta.last_offset`;
/// gaps are allowed (a compacted batch keeps its original base and last offsets:
/// lastOffsetDelta is `last_offset - base_offset` and recordsCount is `rows.len()`).
/// baseTimestamp is the first row's timestamp and maxTimestamp the largest (-1 for an empty
/// batch). A LogAppendTime batch stores every record with timestamp delta 0 and the largest
/// row timestamp as both base and max timestamp, so every record decodes with that timestamp.
pub fn encode_batch(meta: &BatchMeta, rows: &[RecordRow]) -> Result<Vec<u8>, RecordError> {
    let compression = compression_id(meta.compression)?;
    let last_offset_delta = meta
        .last_offset
        .checked_sub(meta.base_offset)
        .and_then(|delta| i32::try_from(delta).ok())
        .filter(|delta| *delta >= 0)
        .ok_or_else(|| {
            RecordError::InvalidRows(format!(
                "offsets {}..={} do not form a batch",
                meta.base_offset, meta.last_offset
            ))
        })?;
    let records_count = i32::try_from(rows.len())
        .map_err(|_| RecordError::InvalidRows(format!("{} records", rows.len())))?;
    let max_timestamp = rows.iter().map(|row| row.timestamp_ms).max().unwrap_or(-1);
    let base_timestamp = match meta.timestamp_type {
        TimestampType::LogAppendTime => max_timestamp,
        TimestampType::CreateTime => rows.first().map_or(-1, |row| row.timestamp_ms),
    };

    let mut records = BytesMut::new();
    let mut body = BytesMut::new();
    let mut previous_offset: Option<i64> = None;
    for row in rows {
        if row.offset < meta.base_offset || row.offset > meta.last_offset {
            return Err(RecordError::InvalidRows(format!(
                "offset {} outside the batch {}..={}",
                row.offset, meta.base_offset, meta.last_offset
            )));
        }
        if previous_offset.is_some_and(|previous| row.offset <= previous) {
            return Err(RecordError::InvalidRows(format!(
                "offset {} does not follow {}",
                row.offset,
                previous_offset.unwrap_or_default()
            )));
        }
        previous_offset = Some(row.offset);
        // Fits: checked against last_offset_delta above.
        let offset_delta = (row.offset - meta.base_offset) as i32;
        let timestamp_delta = match meta.timestamp_type {
            TimestampType::LogAppendTime => 0,
            TimestampType::CreateTime => {
                row.timestamp_ms
                    .checked_sub(base_timestamp)
                    .ok_or_else(|| {
                        RecordError::InvalidRows(format!(
                            "timestamp {} too far from the base timestamp {base_timestamp}",
                            row.timestamp_ms
                        ))
                    })?
            }
        };
        body.clear();
        body.put_u8(0); // record attributes (unused)
        put_varlong(&mut body, timestamp_delta);
        put_varint(&mut body, offset_delta);
        let key_length = nullable_length(&row.key, "key")?;
        put_nullable(&mut body, &row.key, key_length);
        let value_length = nullable_length(&row.value, "value")?;
        put_nullable(&mut body, &row.value, value_length);
        let header_count = i32::try_from(row.headers.len())
            .map_err(|_| RecordError::InvalidRows(format!("{} headers", row.headers.len())))?;
        put_varint(&mut body, header_count);
        for (key, value) in &row.headers {
            let key_length = i32::try_from(key.len()).map_err(|_| {
                RecordError::InvalidRows(format!("header key of {} bytes", key.len()))
            })?;
            put_varint(&mut body, key_length);
            body.put_slice(key.as_bytes());
            let value_length = nullable_length(value, "header value")?;
            put_nullable(&mut body, value, value_length);
        }
        let body_length = i32::try_from(body.len())
            .map_err(|_| RecordError::InvalidRows(format!("record of {} bytes", body.len())))?;
        put_varint(&mut records, body_length);
        records.put_slice(&body);
    }

    let mut out = vec![0u8; BATCH_HEADER_BYTES];
    compress(meta.compression, &records, &mut out)?;
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD_BYTES)
        .map_err(|_| RecordError::InvalidRows(format!("batch of {} bytes", out.len())))?;
    let mut attributes = compression;
    if meta.timestamp_type == TimestampType::LogAppendTime {
        attributes |= TIMESTAMP_TYPE_BIT;
    }
    let header = BatchHeader {
        base_offset: meta.base_offset,
        batch_length,
        partition_leader_epoch: meta.partition_leader_epoch,
        magic: MAGIC_V2,
        crc: 0,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id: meta.producer_id,
        producer_epoch: meta.producer_epoch,
        base_sequence: meta.base_sequence,
        records_count,
    };
    header.encode(&mut out);
    let crc = crc32c::crc32c(&out[CRC_COVERED_FROM..]);
    BatchHeader { crc, ..header }.encode(&mut out);
    Ok(out)
}
