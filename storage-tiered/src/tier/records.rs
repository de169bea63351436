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
//! This is the broker's one decoder of records: produce checks, ListOffsets by time, the
//! `__consumer_offsets` replay, compaction and tiering all go through it. Every length read from
//! the input is checked against the bytes that remain before anything is allocated for it, so a
//! corrupt length field fails cleanly instead of allocating gigabytes. Decompression stops at
//! [`DECOMPRESSED_RECORDS_BYTES_MAX`] (a bomb fails instead of filling memory), and the rows
//! decoded from one batch take at most [`DECODED_ROWS_BYTES_MAX`] (millions of 7-byte records
//! would otherwise cost ~100 bytes of row each). [`visit_batch_records`] decodes without rows.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

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
    /// The rows decoded from one batch would take more than [`DECODED_ROWS_BYTES_MAX`].
    #[error("the rows of the batch at offset {base_offset} take more than {DECODED_ROWS_BYTES_MAX} bytes")]
    RowsTooLarge {
        /// The batch's base offset.
        base_offset: i64,
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
fn put_varint(out: &mut impl BufMut, value: i32) {
    put_unsigned_leb128(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

/// Appends a zig-zag 64-bit varlong.
fn put_varlong(out: &mut impl BufMut, value: i64) {
    put_unsigned_leb128(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_unsigned_leb128(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Bytes of an unsigned LEB128 value.
fn unsigned_leb128_len(value: u64) -> usize {
    // 1 byte per started group of 7 bits, at least 1.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a zig-zag 32-bit varint.
fn varint_len(value: i32) -> usize {
    unsigned_leb128_len(((value << 1) ^ (value >> 31)) as u32 as u64)
}

/// Bytes of a zig-zag 64-bit varlong.
fn varlong_len(value: i64) -> usize {
    unsigned_leb128_len(((value << 1) ^ (value >> 63)) as u64)
}

/// The varint length of an optional byte field (-1 for null), checked to fit an i32.
fn nullable_length(field: &Option<Bytes>, what: &str) -> Result<i32, RecordError> {
    match field {
        None => Ok(-1),
        Some(bytes) => i32::try_from(bytes.len())
            .map_err(|_| RecordError::InvalidRows(format!("{what} of {} bytes", bytes.len()))),
    }
}

/// Bytes a nullable field takes in a record: its varint length and its bytes.
fn nullable_field_len(field: &Option<Bytes>, length: i32) -> usize {
    varint_len(length) + field.as_ref().map_or(0, Bytes::len)
}

fn put_nullable(out: &mut impl BufMut, field: &Option<Bytes>, length: i32) {
    put_varint(out, length);
    if let Some(bytes) = field {
        out.put_slice(bytes);
    }
}

/// Most bytes a batch's records section may decompress to. A batch is at most
/// `message.max.bytes` compressed (1 MiB by default); without a bound, a few KB of zstd or gzip
/// could ask for gigabytes (a decompression bomb) when the broker decompresses a batch: to check
/// the keys of a compacted topic, to offload a segment, to compact.
pub const DECOMPRESSED_RECORDS_BYTES_MAX: usize = 128 * 1024 * 1024;

/// Most memory the [`RecordRow`]s decoded from one batch may take: the rows themselves, their
/// header lists and header key strings (keys, values and header values are slices of the
/// records section, not copies). Millions of minimal records in one batch (a 1 MiB zstd batch
/// can hold 128 MiB of 7-byte records) would otherwise cost gigabytes of rows.
pub const DECODED_ROWS_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Memory one decoded row takes beyond the records section (see [`DECODED_ROWS_BYTES_MAX`]).
fn row_bytes(view: &RecordView<'_>) -> usize {
    let header_keys: usize = view.headers.iter().map(|(key, _)| key.len()).sum();
    std::mem::size_of::<RecordRow>()
        + view.headers.len() * std::mem::size_of::<(String, Option<Bytes>)>()
        + header_keys
}

/// Reads `reader` to its end, failing past [`DECOMPRESSED_RECORDS_BYTES_MAX`].
fn read_bounded(mut reader: impl std::io::Read) -> Result<Bytes, String> {
    use std::io::Read;
    let mut out = Vec::new();
    (&mut reader)
        .take(DECOMPRESSED_RECORDS_BYTES_MAX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() > DECOMPRESSED_RECORDS_BYTES_MAX {
        return Err(too_large());
    }
    Ok(Bytes::from(out))
}

fn too_large() -> String {
    format!("the records decompress to more than {DECOMPRESSED_RECORDS_BYTES_MAX} bytes")
}

/// Kafka's snappy: xerial framing (a 16-byte magic header, then blocks of a 4-byte length and a
/// raw snappy block), or raw snappy when the header is absent, as Kafka's Java client reads it.
/// Each block's decompressed length is checked before anything is allocated.
fn snappy_bounded(compressed: &[u8]) -> Result<Bytes, String> {
    const MAGIC_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let mut decoder = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let mut decode_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let len = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
        if out.len() + len > DECOMPRESSED_RECORDS_BYTES_MAX {
            return Err(too_large());
        }
        let start = out.len();
        out.resize(start + len, 0);
        decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    let Some(mut rest) = compressed.strip_prefix(MAGIC_HEADER.as_slice()) else {
        decode_block(compressed, &mut out)?;
        return Ok(Bytes::from(out));
    };
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("not enough bytes for a snappy block length")?;
        let length = u32::from_be_bytes(*length) as usize;
        let (block, tail) = tail
            .split_at_checked(length)
            .ok_or("a snappy block is cut short")?;
        decode_block(block, &mut out)?;
        rest = tail;
    }
    Ok(Bytes::from(out))
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

/// Decompresses the records section of a batch (`Compression::None` returns `compressed`).
fn decompress(codec: Compression, compressed: Bytes) -> Result<Bytes, RecordError> {
    // Bounded readers over the codecs' own crates (the ones kafka-protocol uses): its
    // decompressors read to the end whatever the size.
    let result = match codec {
        Compression::None => return Ok(compressed),
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(&compressed[..])),
        Compression::Snappy => snappy_bounded(&compressed),
        Compression::Lz4 => lz4::Decoder::new(&compressed[..])
            .map_err(|e| e.to_string())
            .and_then(read_bounded),
        Compression::Zstd => zstd::stream::read::Decoder::new(&compressed[..])
            .map_err(|e| e.to_string())
            .and_then(read_bounded),
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

/// One record borrowed from a (decompressed) records section: what [`visit_batch_records`]
/// hands out, without copying or allocating per record.
pub struct RecordView<'a> {
    /// Absolute offset.
    pub offset: i64,
    /// Effective timestamp (see [`RecordRow::timestamp_ms`]).
    pub timestamp_ms: i64,
    /// Key, `None` when null.
    pub key: Option<&'a [u8]>,
    /// Value, `None` when null.
    pub value: Option<&'a [u8]>,
    /// Headers in record order.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

/// A batch whose framing, CRC and kind have been checked (see [`decode_batch`]); its records
/// are not parsed yet.
pub(crate) struct CheckedBatch<'a> {
    header: BatchHeader,
    meta: BatchMeta,
    batch: &'a [u8],
}

impl<'a> CheckedBatch<'a> {
    /// Checks the framing, the CRC and the batch kind of one whole v2 batch.
    pub(crate) fn new(batch: &'a [u8]) -> Result<CheckedBatch<'a>, RecordError> {
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
        Ok(CheckedBatch {
            header,
            meta,
            batch,
        })
    }

    /// The batch-level fields.
    pub(crate) fn meta(&self) -> &BatchMeta {
        &self.meta
    }

    /// Decompresses (uncompressed records are read in place) and parses every record, handing
    /// each to `visit` in order; returns the number of records.
    pub(crate) fn visit_records(
        &self,
        visit: impl FnMut(RecordView<'_>) -> Result<(), RecordError>,
    ) -> Result<usize, RecordError> {
        let section = &self.batch[BATCH_HEADER_BYTES..];
        match self.meta.compression {
            Compression::None => parse_records(&self.header, section, visit),
            codec => {
                let records = decompress(codec, Bytes::copy_from_slice(section))?;
                parse_records(&self.header, &records, visit)
            }
        }
    }
}

/// Decodes one whole v2 batch like [`decode_batch`], handing each record to `visit` in order
/// without building rows: the memory it takes is the decompressed records section (at most
/// [`DECOMPRESSED_RECORDS_BYTES_MAX`]), whatever the number of records. Stops at the first
/// error `visit` returns.
pub fn visit_batch_records(
    batch: &[u8],
    visit: impl FnMut(RecordView<'_>) -> Result<(), RecordError>,
) -> Result<BatchMeta, RecordError> {
    let checked = CheckedBatch::new(batch)?;
    checked.visit_records(visit)?;
    Ok(checked.meta)
}

/// Decodes one whole v2 batch (`batch` must be exactly the batch): checks the framing and the
/// CRC, decompresses, and parses every record.
///
/// Control and transactional batches are refused, as are header keys that are not UTF-8.
/// Records must have strictly increasing offset deltas within `0..=lastOffsetDelta`, and the
/// records section must hold exactly `recordsCount` records.
///
/// The rows' keys and values share one copy of the (decompressed) records section; with the
/// batch already in a `Bytes`, [`decode_batch_bytes`] avoids even that copy.
pub fn decode_batch(batch: &[u8]) -> Result<(BatchMeta, Vec<RecordRow>), RecordError> {
    let checked = CheckedBatch::new(batch)?;
    let records = decompress(
        checked.meta.compression,
        Bytes::copy_from_slice(&batch[BATCH_HEADER_BYTES..]),
    )?;
    let rows = rows_of(&checked.header, &records)?;
    Ok((checked.meta, rows))
}

/// [`decode_batch`] of a batch already held in a `Bytes`: the rows' keys, values and header
/// values are slices of `batch` (uncompressed) or of its decompressed records section, never
/// copies.
pub fn decode_batch_bytes(batch: &Bytes) -> Result<(BatchMeta, Vec<RecordRow>), RecordError> {
    let checked = CheckedBatch::new(batch)?;
    let records = decompress(checked.meta.compression, batch.slice(BATCH_HEADER_BYTES..))?;
    let rows = rows_of(&checked.header, &records)?;
    Ok((checked.meta, rows))
}

/// Parses a records section into owned rows whose byte fields are slices of `records`.
fn rows_of(header: &BatchHeader, records: &Bytes) -> Result<Vec<RecordRow>, RecordError> {
    let count = header.records_count as usize;
    // recordsCount is untrusted: never reserve more than the bytes or the budget could hold.
    let rows_max = DECODED_ROWS_BYTES_MAX / std::mem::size_of::<RecordRow>();
    let mut rows = Vec::with_capacity(count.min(records.len() / RECORD_BYTES_MIN).min(rows_max));
    let mut used_bytes: usize = 0;
    let slice = |field: Option<&[u8]>| field.map(|bytes| records.slice_ref(bytes));
    parse_records(header, records, |view| {
        used_bytes += row_bytes(&view);
        if used_bytes > DECODED_ROWS_BYTES_MAX {
            return Err(RecordError::RowsTooLarge {
                base_offset: header.base_offset,
            });
        }
        rows.push(RecordRow {
            offset: view.offset,
            timestamp_ms: view.timestamp_ms,
            key: slice(view.key),
            value: slice(view.value),
            headers: view
                .headers
                .iter()
                .map(|(key, value)| ((*key).to_owned(), slice(*value)))
                .collect(),
        });
        Ok(())
    })?;
    Ok(rows)
}

/// Parses the decompressed records section of a batch, handing each record to `visit`;
/// returns the number of records.
fn parse_records(
    header: &BatchHeader,
    records: &[u8],
    mut visit: impl FnMut(RecordView<'_>) -> Result<(), RecordError>,
) -> Result<usize, RecordError> {
    let count = header.records_count as usize;
    let mut reader = Reader::new(records);
    let mut previous_delta: Option<i32> = None;
    // Reused for every record's headers.
    let mut headers: Vec<(&str, Option<&[u8]>)> = Vec::new();
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
        let key = record.nullable_bytes("key", "key length")?;
        let value = record.nullable_bytes("value", "value length")?;
        let header_count = record.varint("header count")?;
        if header_count < 0 {
            return Err(RecordError::Corrupt(format!(
                "record {index} has negative header count {header_count}"
            )));
        }
        headers.clear();
        // Each header takes at least 2 bytes.
        headers.reserve((header_count as usize).min(record.remaining() / 2));
        for _ in 0..header_count {
            let key_length = record.varint("header key length")?;
            if key_length < 0 {
                return Err(RecordError::Corrupt(format!(
                    "record {index} has a header key of negative length {key_length}"
                )));
            }
            let key_bytes = record.take("header key", key_length as usize)?;
            let key = std::str::from_utf8(key_bytes)
                .map_err(|_| RecordError::HeaderKeyNotUtf8 { offset })?;
            let value = record.nullable_bytes("header value", "header value length")?;
            headers.push((key, value));
        }
        if record.remaining() != 0 {
            return Err(RecordError::Corrupt(format!(
                "record {index} declares {length} bytes but its fields end {} bytes earlier",
                record.remaining()
            )));
        }
        visit(RecordView {
            offset,
            timestamp_ms,
            key,
            value,
            headers: &headers,
        })?;
    }
    if reader.remaining() != 0 {
        return Err(RecordError::Corrupt(format!(
            "{} bytes after the {count} records the batch declares",
            reader.remaining()
        )));
    }
    Ok(count)
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

    // Pass 1: check every row and size the records section exactly.
    let mut records_bytes: usize = 0;
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
        let fields = record_fields(meta, row, base_timestamp)?;
        records_bytes += varint_len(fields.body_length) + fields.body_length as usize;
    }

    // Pass 2: write the records, in place after the header when uncompressed.
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + records_bytes);
    out.resize(BATCH_HEADER_BYTES, 0);
    if meta.compression == Compression::None {
        write_records(meta, rows, base_timestamp, &mut out)?;
    } else {
        let mut records = Vec::with_capacity(records_bytes);
        write_records(meta, rows, base_timestamp, &mut records)?;
        compress(meta.compression, &records, &mut out)?;
    }
    debug_assert!(
        meta.compression != Compression::None || out.len() == BATCH_HEADER_BYTES + records_bytes,
        "the records section is as long as sized"
    );
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

/// The varint fields of one record and the length of its body.
struct RecordFields {
    timestamp_delta: i64,
    offset_delta: i32,
    key_length: i32,
    value_length: i32,
    header_count: i32,
    body_length: i32,
}

/// Computes a record's varint fields and body length, refusing fields that do not fit.
/// `row.offset` must already be within the batch.
fn record_fields(
    meta: &BatchMeta,
    row: &RecordRow,
    base_timestamp: i64,
) -> Result<RecordFields, RecordError> {
    // Fits: the caller checked the offset against the batch, whose span fits an i32.
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
    let key_length = nullable_length(&row.key, "key")?;
    let value_length = nullable_length(&row.value, "value")?;
    let header_count = i32::try_from(row.headers.len())
        .map_err(|_| RecordError::InvalidRows(format!("{} headers", row.headers.len())))?;
    // u64 sums cannot overflow for any sizes that fit in memory.
    let mut body: u64 = 1 // record attributes
        + varlong_len(timestamp_delta) as u64
        + varint_len(offset_delta) as u64
        + nullable_field_len(&row.key, key_length) as u64
        + nullable_field_len(&row.value, value_length) as u64
        + varint_len(header_count) as u64;
    for (key, value) in &row.headers {
        let key_length = i32::try_from(key.len())
            .map_err(|_| RecordError::InvalidRows(format!("header key of {} bytes", key.len())))?;
        let value_length = nullable_length(value, "header value")?;
        body +=
            (varint_len(key_length) + key.len() + nullable_field_len(value, value_length)) as u64;
    }
    let body_length = i32::try_from(body)
        .map_err(|_| RecordError::InvalidRows(format!("record of {body} bytes")))?;
    Ok(RecordFields {
        timestamp_delta,
        offset_delta,
        key_length,
        value_length,
        header_count,
        body_length,
    })
}

/// Appends the records of `rows` (already checked by [`encode_batch`]'s first pass) to `out`.
fn write_records(
    meta: &BatchMeta,
    rows: &[RecordRow],
    base_timestamp: i64,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    for row in rows {
        let fields = record_fields(meta, row, base_timestamp)?;
        put_varint(out, fields.body_length);
        out.put_u8(0); // record attributes (unused)
        put_varlong(out, fields.timestamp_delta);
        put_varint(out, fields.offset_delta);
        put_nullable(out, &row.key, fields.key_length);
        put_nullable(out, &row.value, fields.value_length);
        put_varint(out, fields.header_count);
        for (key, value) in &row.headers {
            // Both fit: checked by record_fields.
            put_varint(out, key.len() as i32);
            out.put_slice(key.as_bytes());
            put_varint(out, nullable_length(value, "header value")?);
            if let Some(bytes) = value {
                out.put_slice(bytes);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build::BatchSpec;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    };
    use proptest::prelude::*;

    const ALL_CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// A batch of `codec` whose records section is `section` (not a valid records section:
    /// decompression must fail first), with a correct length and CRC.
    fn batch_with_section(codec: Compression, section: &[u8]) -> Vec<u8> {
        let template = encode_batch(&meta(0, 0, codec), &[row(0, 1)]).unwrap();
        let mut out = template[..BATCH_HEADER_BYTES].to_vec();
        out.extend_from_slice(section);
        let length = (out.len() - LOG_OVERHEAD_BYTES) as i32;
        out[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Compresses `bytes` zeros in 1 MiB writes.
    fn zeros(mut writer: impl std::io::Write, bytes: usize) {
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..bytes / chunk.len() {
            writer.write_all(&chunk).unwrap();
        }
    }

    #[test]
    fn decompression_bombs_are_refused_without_allocating_them() {
        let size = DECOMPRESSED_RECORDS_BYTES_MAX + (2 << 20);
        let mut bombs: Vec<(Compression, Vec<u8>)> = Vec::new();

        let mut zstd = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        zeros(&mut zstd, size);
        bombs.push((Compression::Zstd, zstd.finish().unwrap()));

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        zeros(&mut gzip, size);
        bombs.push((Compression::Gzip, gzip.finish().unwrap()));

        let mut lz4 = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        zeros(&mut lz4, size);
        let (lz4, result) = lz4.finish();
        result.unwrap();
        bombs.push((Compression::Lz4, lz4));

        // Raw snappy whose length header claims 1 GiB, and xerial framing whose blocks add up
        // past the bound.
        bombs.push((Compression::Snappy, vec![0x80, 0x80, 0x80, 0x80, 0x04, 0]));
        let block = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 1 << 20])
            .unwrap();
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for _ in 0..size >> 20 {
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        bombs.push((Compression::Snappy, framed));

        for (codec, section) in bombs {
            assert!(
                section.len() < 8 << 20,
                "{codec:?}: {} bytes",
                section.len()
            );
            let error = decode_batch(&batch_with_section(codec, &section)).unwrap_err();
            assert!(
                matches!(&error, RecordError::Decompression { message, .. } if message.contains("more than")),
                "{codec:?}: {error}"
            );
        }
    }

    fn meta(base_offset: i64, last_offset: i64, compression: Compression) -> BatchMeta {
        BatchMeta {
            base_offset,
            last_offset,
            partition_leader_epoch: 3,
            compression,
            timestamp_type: TimestampType::CreateTime,
            producer_id: 42,
            producer_epoch: 2,
            base_sequence: 100,
        }
    }

    fn row(offset: i64, timestamp_ms: i64) -> RecordRow {
        RecordRow {
            offset,
            timestamp_ms,
            key: Some(Bytes::from(format!("key-{offset}"))),
            value: Some(Bytes::from(vec![offset as u8; 20])),
            headers: vec![],
        }
    }

    /// A batch around a hand-made (uncompressed) records section, with a correct CRC.
    fn raw_batch(records: &[u8], records_count: i32, last_offset_delta: i32) -> Vec<u8> {
        let mut out = vec![0u8; BATCH_HEADER_BYTES];
        out.extend_from_slice(records);
        let header = BatchHeader {
            base_offset: 1000,
            batch_length: (out.len() - LOG_OVERHEAD_BYTES) as i32,
            partition_leader_epoch: 0,
            magic: MAGIC_V2,
            crc: 0,
            attributes: 0,
            last_offset_delta,
            base_timestamp: 5_000,
            max_timestamp: 5_000,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count,
        };
        header.encode(&mut out);
        let crc = crc32c::crc32c(&out[CRC_COVERED_FROM..]);
        BatchHeader { crc, ..header }.encode(&mut out);
        out
    }

    /// One record body (without its length prefix) from raw parts.
    fn record_body(offset_delta: i32, key: &[u8], headers: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_u8(0);
        put_varlong(&mut body, 0);
        put_varint(&mut body, offset_delta);
        put_varint(&mut body, key.len() as i32);
        body.put_slice(key);
        put_varint(&mut body, -1);
        put_varint(&mut body, headers.len() as i32);
        for (key, value) in headers {
            put_varint(&mut body, key.len() as i32);
            body.put_slice(key);
            match value {
                None => put_varint(&mut body, -1),
                Some(value) => {
                    put_varint(&mut body, value.len() as i32);
                    body.put_slice(value);
                }
            }
        }
        body.to_vec()
    }

    fn with_length(body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_varint(&mut out, body.len() as i32);
        out.put_slice(body);
        out.to_vec()
    }

    #[test]
    fn varints_match_kafkas_encoding() {
        // Known encodings (zig-zag then LEB128), as in Kafka's ByteUtilsTest.
        let cases: [(i32, &[u8]); 8] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (value, encoded) in cases {
            let mut out = BytesMut::new();
            put_varint(&mut out, value);
            assert_eq!(&out[..], encoded, "encoding {value}");
            let mut reader = Reader::new(encoded);
            assert_eq!(reader.varint("test").unwrap(), value);
            assert_eq!(reader.remaining(), 0);
        }
        for value in [0, -1, 1, i64::MAX, i64::MIN, 1 << 40, -(1 << 40)] {
            let mut out = BytesMut::new();
            put_varlong(&mut out, value);
            assert!(out.len() <= 10);
            let mut reader = Reader::new(&out);
            assert_eq!(reader.varlong("test").unwrap(), value);
            assert_eq!(reader.remaining(), 0);
        }
        let mut out = BytesMut::new();
        put_varlong(&mut out, i64::MIN);
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn bad_varints_are_rejected() {
        // Six bytes for a 32-bit varint.
        let too_long = [0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(
            Reader::new(&too_long).varint("v"),
            Err(RecordError::BadVarint { what: "v" })
        );
        // Five bytes whose last carries bits beyond 32.
        let overflow = [0xff, 0xff, 0xff, 0xff, 0x1f];
        assert_eq!(
            Reader::new(&overflow).varint("v"),
            Err(RecordError::BadVarint { what: "v" })
        );
        // Eleven bytes for a varlong, and a tenth byte with more than one bit.
        let mut long = vec![0x80u8; 10];
        long.push(0x00);
        assert!(matches!(
            Reader::new(&long).varlong("v"),
            Err(RecordError::BadVarint { .. })
        ));
        let mut tenth = vec![0xffu8; 9];
        tenth.push(0x02);
        assert!(matches!(
            Reader::new(&tenth).varlong("v"),
            Err(RecordError::BadVarint { .. })
        ));
        // Ends mid-varint.
        assert!(matches!(
            Reader::new(&[0x80, 0x80]).varint("v"),
            Err(RecordError::Truncated { .. })
        ));
        assert!(matches!(
            Reader::new(&[]).varlong("v"),
            Err(RecordError::Truncated { .. })
        ));
    }

    #[test]
    fn decodes_batches_from_the_test_builder() {
        // BatchSpec is an independent encoder: null keys, values, no headers.
        let bytes = BatchSpec {
            base_offset: 500,
            ..BatchSpec::new(1_000, vec![b"a".to_vec(), vec![], b"ccc".to_vec()])
        }
        .producer(9, 1, 77)
        .encode();
        let (meta, rows) = decode_batch(&bytes).unwrap();
        assert_eq!(
            meta,
            BatchMeta {
                base_offset: 500,
                last_offset: 502,
                partition_leader_epoch: -1,
                compression: Compression::None,
                timestamp_type: TimestampType::CreateTime,
                producer_id: 9,
                producer_epoch: 1,
                base_sequence: 77,
            }
        );
        let expected: Vec<RecordRow> = [&b"a"[..], b"", b"ccc"]
            .iter()
            .enumerate()
            .map(|(i, value)| RecordRow {
                offset: 500 + i as i64,
                timestamp_ms: 1_000 + i as i64,
                key: None,
                value: Some(Bytes::copy_from_slice(value)),
                headers: vec![],
            })
            .collect();
        assert_eq!(rows, expected);
        // Re-encoding gives the very same bytes.
        assert_eq!(encode_batch(&meta, &rows).unwrap(), bytes);
    }

    fn protocol_record(offset: i64, timestamp: i64, with_headers: bool) -> Record {
        let mut headers = IndexMap::new();
        if with_headers {
            headers.insert(StrBytes::from_static_str("trace"), Some(Bytes::from("t1")));
            headers.insert(StrBytes::from_static_str("empty"), Some(Bytes::new()));
            headers.insert(StrBytes::from_static_str("null"), None);
        }
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 7,
            producer_id: 11,
            producer_epoch: 4,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset,
            sequence: 20 + (offset - 300) as i32,
            timestamp,
            key: (offset % 2 == 0).then(|| Bytes::from(format!("k{offset}"))),
            value: (offset % 3 != 0).then(|| Bytes::from(vec![b'v'; offset as usize % 50])),
            headers,
        }
    }

    fn protocol_codec(codec: Compression) -> kafka_protocol::records::Compression {
        use kafka_protocol::records::Compression as C;
        match codec {
            Compression::None => C::None,
            Compression::Gzip => C::Gzip,
            Compression::Snappy => C::Snappy,
            Compression::Lz4 => C::Lz4,
            Compression::Zstd => C::Zstd,
            Compression::Unknown(_) => unreachable!("test codecs are known"),
        }
    }

    #[test]
    fn agrees_with_kafka_protocol_in_both_directions() {
        for codec in ALL_CODECS {
            let records: Vec<Record> = (300..340)
                .map(|offset| protocol_record(offset, 9_000 - offset, offset % 4 == 0))
                .collect();
            let mut encoded = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut encoded,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression: protocol_codec(codec),
                },
            )
            .unwrap();
            // Theirs decoded by us.
            let (meta, rows) = decode_batch(&encoded).unwrap();
            assert_eq!(meta.compression, codec);
            assert_eq!((meta.base_offset, meta.last_offset), (300, 339));
            assert_eq!(
                (meta.producer_id, meta.producer_epoch, meta.base_sequence),
                (11, 4, 20)
            );
            assert_eq!(meta.partition_leader_epoch, 7);
            assert_eq!(rows.len(), records.len());
            for (row, record) in rows.iter().zip(&records) {
                assert_eq!(row.offset, record.offset);
                assert_eq!(row.timestamp_ms, record.timestamp);
                assert_eq!(row.key, record.key);
                assert_eq!(row.value, record.value);
                let headers: Vec<(String, Option<Bytes>)> = record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                assert_eq!(row.headers, headers);
            }
            // Ours decoded by them.
            let ours = encode_batch(&meta, &rows).unwrap();
            let decoded = RecordBatchDecoder::decode(&mut Bytes::from(ours)).unwrap();
            assert_eq!(decoded.records.len(), records.len());
            for (theirs, original) in decoded.records.iter().zip(&records) {
                assert_eq!(theirs.offset, original.offset);
                assert_eq!(theirs.timestamp, original.timestamp);
                assert_eq!(theirs.sequence, original.sequence);
                assert_eq!(theirs.key, original.key);
                assert_eq!(theirs.value, original.value);
                assert_eq!(theirs.headers, original.headers);
                assert_eq!(theirs.producer_id, 11);
                assert_eq!(theirs.partition_leader_epoch, 7);
            }
        }
    }

    #[test]
    fn every_codec_roundtrips_with_keys_nulls_and_duplicate_headers() {
        let rows: Vec<RecordRow> = (0..30)
            .map(|i| RecordRow {
                offset: 1_000 + i,
                timestamp_ms: 50_000 + (i * 37) % 11 - 5,
                key: (i % 3 != 0).then(|| Bytes::from(vec![i as u8; i as usize])),
                value: (i % 5 != 0).then(|| Bytes::from(vec![0xab; 100 + i as usize])),
                headers: vec![
                    ("dup".to_owned(), Some(Bytes::from("first"))),
                    ("dup".to_owned(), Some(Bytes::from("second"))),
                    ("empty".to_owned(), Some(Bytes::new())),
                    ("null".to_owned(), None),
                    (
                        "binary".to_owned(),
                        Some(Bytes::from(vec![0, 255, 128, 10])),
                    ),
                    ("dup".to_owned(), None),
                ][..(i as usize % 7)]
                    .to_vec(),
            })
            .collect();
        for codec in ALL_CODECS {
            let meta = meta(1_000, 1_029, codec);
            let bytes = encode_batch(&meta, &rows).unwrap();
            let header = BatchHeader::parse(&bytes).unwrap();
            assert_eq!(header.compression(), codec);
            assert_eq!(header.size_bytes(), bytes.len() as u64);
            assert_eq!(header.records_count, 30);
            assert_eq!(header.base_timestamp, rows[0].timestamp_ms);
            assert_eq!(
                header.max_timestamp,
                rows.iter().map(|r| r.timestamp_ms).max().unwrap()
            );
            batch::verify_crc(&bytes).unwrap();
            let (decoded_meta, decoded_rows) = decode_batch(&bytes).unwrap();
            assert_eq!(decoded_meta, meta);
            assert_eq!(decoded_rows, rows);
        }
        // Duplicate keys survive in order; empty and null header values stay distinct.
        let (_, decoded) =
            decode_batch(&encode_batch(&meta(1_000, 1_029, Compression::None), &rows).unwrap())
                .unwrap();
        assert_eq!(decoded[6].headers.len(), 6);
        assert_eq!(decoded[6].headers[0].1.as_deref(), Some(&b"first"[..]));
        assert_eq!(decoded[6].headers[1].1.as_deref(), Some(&b"second"[..]));
        assert_eq!(decoded[6].headers[2].1.as_deref(), Some(&b""[..]));
        assert_eq!(decoded[6].headers[3].1, None);
        assert_eq!(decoded[6].headers[5], ("dup".to_owned(), None));
        assert_eq!(decoded[0].key, None);
        assert_eq!(decoded[0].value, None);
        assert_eq!(decoded[1].key.as_deref(), Some(&[1u8][..]));
    }

    #[test]
    fn decode_batch_bytes_slices_the_batch_instead_of_copying() {
        let rows: Vec<RecordRow> = (0..4)
            .map(|i| RecordRow {
                headers: vec![("h".to_owned(), Some(Bytes::from(vec![i as u8; 3])))],
                ..row(10 + i, 5_000 + i)
            })
            .collect();
        for codec in ALL_CODECS {
            let bytes = Bytes::from(encode_batch(&meta(10, 13, codec), &rows).unwrap());
            let decoded = decode_batch_bytes(&bytes).unwrap();
            assert_eq!(decoded, decode_batch(&bytes).unwrap());
            assert_eq!(decoded.1, rows);
            if codec == Compression::None {
                let inside = |field: &Option<Bytes>| {
                    let field = field.as_ref().unwrap();
                    bytes.as_ptr_range().contains(&field.as_ptr())
                };
                for row in &decoded.1 {
                    assert!(inside(&row.key) && inside(&row.value) && inside(&row.headers[0].1));
                }
            }
        }
    }

    #[test]
    fn log_append_time_uses_the_batch_max_timestamp() {
        // A LogAppendTime batch as Kafka writes it: the records keep their create-time deltas,
        // the broker sets maxTimestamp and the attribute bit.
        let mut records = Vec::new();
        for (i, delta) in [0i64, 5, 2].iter().enumerate() {
            let mut body = BytesMut::new();
            body.put_u8(0);
            put_varlong(&mut body, *delta);
            put_varint(&mut body, i as i32);
            put_varint(&mut body, -1);
            put_varint(&mut body, 1);
            body.put_u8(b'x');
            put_varint(&mut body, 0);
            records.extend(with_length(&body));
        }
        let mut bytes = raw_batch(&records, 3, 2);
        let mut header = BatchHeader::parse(&bytes).unwrap();
        header.attributes = TIMESTAMP_TYPE_BIT;
        header.max_timestamp = 777_777;
        header.encode(&mut bytes);
        let crc = batch::compute_crc(&bytes).unwrap();
        BatchHeader { crc, ..header }.encode(&mut bytes);
        let (meta, rows) = decode_batch(&bytes).unwrap();
        assert_eq!(meta.timestamp_type, TimestampType::LogAppendTime);
        assert!(rows.iter().all(|r| r.timestamp_ms == 777_777));
        // Rebuilt: same effective timestamps, bit kept.
        let rebuilt = encode_batch(&meta, &rows).unwrap();
        let header = BatchHeader::parse(&rebuilt).unwrap();
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp, 777_777);
        assert_eq!(decode_batch(&rebuilt).unwrap(), (meta, rows));
    }

    #[test]
    fn compacted_batches_keep_their_offset_span() {
        let rows = vec![row(200, 10), row(203, 11), row(207, 12)];
        for codec in [Compression::None, Compression::Zstd] {
            let meta = meta(200, 209, codec);
            let bytes = encode_batch(&meta, &rows).unwrap();
            let header = BatchHeader::parse(&bytes).unwrap();
            assert_eq!(header.last_offset_delta, 9);
            assert_eq!(header.records_count, 3);
            assert_eq!(header.last_offset(), 209);
            assert_eq!(decode_batch(&bytes).unwrap(), (meta, rows.clone()));
        }
        // A batch emptied by compaction.
        let empty = meta(300, 304, Compression::None);
        let bytes = encode_batch(&empty, &[]).unwrap();
        let header = BatchHeader::parse(&bytes).unwrap();
        assert_eq!((header.records_count, header.last_offset_delta), (0, 4));
        assert_eq!(decode_batch(&bytes).unwrap(), (empty, vec![]));
    }

    #[test]
    fn encode_refuses_rows_that_do_not_fit_the_batch() {
        let m = meta(10, 12, Compression::None);
        let unsorted = [row(11, 0), row(10, 0)];
        let duplicate = [row(10, 0), row(10, 0)];
        let outside = [row(13, 0)];
        let before = [row(9, 0)];
        for rows in [&unsorted[..], &duplicate[..], &outside[..], &before[..]] {
            assert!(matches!(
                encode_batch(&m, rows),
                Err(RecordError::InvalidRows(_))
            ));
        }
        assert!(matches!(
            encode_batch(&meta(10, 9, Compression::None), &[]),
            Err(RecordError::InvalidRows(_))
        ));
        assert!(matches!(
            encode_batch(&meta(0, i64::from(i32::MAX) + 1, Compression::None), &[]),
            Err(RecordError::InvalidRows(_))
        ));
        assert_eq!(
            encode_batch(&meta(10, 12, Compression::Unknown(6)), &[row(10, 0)]),
            Err(RecordError::UnsupportedCompression(6))
        );
        let extreme = [row(10, i64::MIN), row(11, i64::MAX)];
        assert!(matches!(
            encode_batch(&m, &extreme),
            Err(RecordError::InvalidRows(_))
        ));
    }

    #[test]
    fn oversized_length_fields_fail_cleanly() {
        let good = with_length(&record_body(0, b"key", &[(b"h", Some(b"v"))]));
        assert!(decode_batch(&raw_batch(&good, 1, 0)).is_ok());

        // A record length claiming 2 GB.
        let mut huge_record = BytesMut::new();
        put_varint(&mut huge_record, i32::MAX);
        huge_record.put_slice(&record_body(0, b"key", &[]));
        assert!(matches!(
            decode_batch(&raw_batch(&huge_record, 1, 0)),
            Err(RecordError::Truncated { what: "record", .. })
        ));

        // A key length claiming 2 GB inside a well-framed record.
        let mut body = BytesMut::new();
        body.put_u8(0);
        put_varlong(&mut body, 0);
        put_varint(&mut body, 0);
        put_varint(&mut body, i32::MAX);
        body.put_slice(b"abc");
        assert!(matches!(
            decode_batch(&raw_batch(&with_length(&body), 1, 0)),
            Err(RecordError::Truncated { what: "key", .. })
        ));

        // A negative key length other than -1.
        let mut body = BytesMut::new();
        body.put_u8(0);
        put_varlong(&mut body, 0);
        put_varint(&mut body, 0);
        put_varint(&mut body, -7);
        assert!(matches!(
            decode_batch(&raw_batch(&with_length(&body), 1, 0)),
            Err(RecordError::Corrupt(_))
        ));

        // A header count of i32::MAX with no headers behind it.
        let mut body = BytesMut::new();
        body.put_u8(0);
        put_varlong(&mut body, 0);
        put_varint(&mut body, 0);
        put_varint(&mut body, -1);
        put_varint(&mut body, -1);
        put_varint(&mut body, i32::MAX);
        assert!(matches!(
            decode_batch(&raw_batch(&with_length(&body), 1, 0)),
            Err(RecordError::Truncated { .. })
        ));

        // recordsCount claiming far more records than present.
        assert!(matches!(
            decode_batch(&raw_batch(&good, i32::MAX, 0)),
            Err(RecordError::Truncated { .. })
        ));
        assert!(matches!(
            decode_batch(&raw_batch(&good, -3, 0)),
            Err(RecordError::Corrupt(_))
        ));
        // Fewer records declared than present: trailing bytes.
        let mut two = good.clone();
        two.extend(with_length(&record_body(1, b"k2", &[])));
        assert!(matches!(
            decode_batch(&raw_batch(&two, 1, 1)),
            Err(RecordError::Corrupt(_))
        ));
        // A record whose fields end before its declared length.
        let mut padded_body = record_body(0, b"key", &[]);
        padded_body.push(0);
        assert!(matches!(
            decode_batch(&raw_batch(&with_length(&padded_body), 1, 0)),
            Err(RecordError::Corrupt(_))
        ));
    }

    #[test]
    fn bad_offsets_and_headers_are_refused() {
        // Offset delta beyond lastOffsetDelta, and not increasing.
        let beyond = with_length(&record_body(3, b"k", &[]));
        assert!(matches!(
            decode_batch(&raw_batch(&beyond, 1, 2)),
            Err(RecordError::Corrupt(_))
        ));
        let mut backwards = with_length(&record_body(1, b"k", &[]));
        backwards.extend(with_length(&record_body(1, b"k", &[])));
        assert!(matches!(
            decode_batch(&raw_batch(&backwards, 2, 1)),
            Err(RecordError::Corrupt(_))
        ));
        // A header key that is not UTF-8.
        let latin1 = with_length(&record_body(0, b"k", &[(b"caf\xe9", None)]));
        assert_eq!(
            decode_batch(&raw_batch(&latin1, 1, 0)),
            Err(RecordError::HeaderKeyNotUtf8 { offset: 1000 })
        );
        // Duplicate header keys from raw bytes.
        let dup = with_length(&record_body(
            0,
            b"k",
            &[(b"a", Some(b"1")), (b"a", Some(b"")), (b"a", None)],
        ));
        let (_, rows) = decode_batch(&raw_batch(&dup, 1, 0)).unwrap();
        assert_eq!(
            rows[0].headers,
            vec![
                ("a".to_owned(), Some(Bytes::from("1"))),
                ("a".to_owned(), Some(Bytes::new())),
                ("a".to_owned(), None),
            ]
        );
    }

    fn with_attributes(mut bytes: Vec<u8>, attributes: i16) -> Vec<u8> {
        let header = BatchHeader::parse(&bytes).unwrap();
        let header = BatchHeader {
            attributes,
            ..header
        };
        header.encode(&mut bytes);
        let crc = batch::compute_crc(&bytes).unwrap();
        BatchHeader { crc, ..header }.encode(&mut bytes);
        bytes
    }

    #[test]
    fn framing_crc_codec_and_batch_kind_errors() {
        let good = encode_batch(&meta(0, 2, Compression::Gzip), &[row(0, 1), row(2, 3)]).unwrap();
        // Truncated anywhere.
        for cut in [0, 10, 60, 61, good.len() - 1] {
            assert!(matches!(
                decode_batch(&good[..cut]),
                Err(RecordError::Batch(BatchError::Truncated { .. }))
            ));
        }
        // Trailing bytes after the batch.
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(decode_batch(&long), Err(RecordError::Corrupt(_))));
        // A flipped bit.
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            decode_batch(&flipped),
            Err(RecordError::Batch(BatchError::CrcMismatch { .. }))
        ));
        // Control and transactional batches.
        assert_eq!(
            decode_batch(&with_attributes(good.clone(), 1 | 0x20)),
            Err(RecordError::ControlBatch { base_offset: 0 })
        );
        assert_eq!(
            decode_batch(&with_attributes(good.clone(), 1 | 0x10)),
            Err(RecordError::TransactionalBatch { base_offset: 0 })
        );
        // Unknown codec ids.
        assert_eq!(
            decode_batch(&with_attributes(good.clone(), 5)),
            Err(RecordError::UnsupportedCompression(5))
        );
        // Bytes that are not what the codec claims.
        let plain = encode_batch(&meta(0, 2, Compression::None), &[row(0, 1)]).unwrap();
        for codec in [1i16, 2, 3, 4] {
            assert!(
                matches!(
                    decode_batch(&with_attributes(plain.clone(), codec)),
                    Err(RecordError::Decompression { .. })
                ),
                "codec {codec}"
            );
        }
    }

    proptest! {
        /// Arbitrary bytes in the records section (with a valid CRC) never panic.
        #[test]
        fn garbage_records_never_panic(
            records in proptest::collection::vec(any::<u8>(), 0..200),
            count in -2i32..10,
            delta in 0i32..10,
            codec in 0i16..6,
        ) {
            let bytes = with_attributes(raw_batch(&records, count, delta), codec);
            let _ = decode_batch(&bytes);
        }

        /// Single-byte corruptions of a valid records section (CRC fixed up) never panic,
        /// and whatever decodes re-encodes to something that decodes the same.
        #[test]
        fn corrupted_records_never_panic(position in 0usize..1000, byte in any::<u8>()) {
            let rows: Vec<RecordRow> = (0..5)
                .map(|i| RecordRow {
                    headers: vec![("h".to_owned(), Some(Bytes::from("v")))],
                    ..row(i, i)
                })
                .collect();
            let good = encode_batch(&meta(0, 4, Compression::None), &rows).unwrap();
            let position = BATCH_HEADER_BYTES + position % (good.len() - BATCH_HEADER_BYTES);
            let mut bad = good.clone();
            bad[position] = byte;
            let crc = batch::compute_crc(&bad).unwrap();
            let header = BatchHeader::parse(&bad).unwrap();
            BatchHeader { crc, ..header }.encode(&mut bad);
            if let Ok((meta, rows)) = decode_batch(&bad) {
                let again = encode_batch(&meta, &rows).unwrap();
                prop_assert_eq!(decode_batch(&again).unwrap(), (meta, rows));
            }
        }
    }
}
