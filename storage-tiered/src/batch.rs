//! Kafka record batches (magic v2), parsed and validated without decompressing them.
//!
//! Layout of the 61-byte header (big-endian):
//!
//! | bytes | field                |
//! |-------|----------------------|
//! | 0..8  | baseOffset           |
//! | 8..12 | batchLength (bytes after this field) |
//! | 12..16| partitionLeaderEpoch |
//! | 16    | magic (2)            |
//! | 17..21| crc (CRC-32C of bytes 21..end) |
//! | 21..23| attributes           |
//! | 23..27| lastOffsetDelta      |
//! | 27..35| baseTimestamp        |
//! | 35..43| maxTimestamp         |
//! | 43..51| producerId           |
//! | 51..53| producerEpoch        |
//! | 53..57| baseSequence         |
//! | 57..61| recordsCount         |
//!
//! Then the records. The CRC does not cover baseOffset, batchLength and partitionLeaderEpoch, so
//! the broker rewrites those in place without recomputing it.

/// Size of the v2 batch header.
pub const BATCH_HEADER_BYTES: usize = 61;
/// baseOffset + batchLength: the bytes not counted by batchLength.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The smallest legal batchLength (a header without records).
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
/// The only supported magic.
pub const MAGIC_V2: i8 = 2;
/// producerId of a batch without an idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// baseSequence of a batch without an idempotent producer.
pub const NO_SEQUENCE: i32 = -1;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers the batch from the attributes on.
pub const CRC_COVERED_FROM: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why a buffer is not a valid v2 record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The buffer ends before the header or the batch does.
    #[error("truncated record batch: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the header or batch needs.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// Magic other than 2.
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    UnsupportedMagic(i8),
    /// batchLength below the header size.
    #[error("invalid batchLength {0} (minimum {BATCH_LENGTH_MIN})")]
    InvalidLength(i32),
    /// lastOffsetDelta below zero.
    #[error("invalid lastOffsetDelta {0}")]
    InvalidLastOffsetDelta(i32),
    /// recordsCount is not lastOffsetDelta + 1.
    #[error("recordsCount {records_count} does not match lastOffsetDelta {last_offset_delta} + 1")]
    RecordsCountMismatch {
        /// recordsCount of the header.
        records_count: i32,
        /// lastOffsetDelta of the header.
        last_offset_delta: i32,
    },
    /// The stored CRC does not match the bytes.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
}

impl BatchError {
    /// Whether the error means damaged bytes (Kafka's CORRUPT_MESSAGE) rather than a well-formed
    /// batch the broker refuses (INVALID_RECORD).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            BatchError::Truncated { .. }
                | BatchError::InvalidLength(_)
                | BatchError::CrcMismatch { .. }
        )
    }
}

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// zstd.
    Zstd,
    /// A codec id Kafka does not define (5-7).
    Unknown(u8),
}

/// Timestamp type of a batch (attributes bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Timestamps set by the producer.
    CreateTime,
    /// Timestamps set by the broker on append.
    LogAppendTime,
}

/// The parsed 61-byte header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes of the batch after the batchLength field.
    pub batch_length: i32,
    /// Leader epoch stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Format version (2).
    pub magic: i8,
    /// CRC-32C of the batch from the attributes on.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp of the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(bytes)
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which may hold only the header). Checks the
    /// magic, batchLength and lastOffsetDelta; not the CRC, not that the whole batch is present.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES as u64,
                available: buf.len() as u64,
            });
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_AT),
            batch_length: be_i32(buf, BATCH_LENGTH_AT),
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: be_i16(buf, CRC_COVERED_FROM),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            records_count: be_i32(buf, RECORDS_COUNT_AT),
        };
        if header.magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(header.magic));
        }
        if header.batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::InvalidLength(header.batch_length));
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::InvalidLastOffsetDelta(header.last_offset_delta));
        }
        Ok(header)
    }

    /// Encodes the header into the first 61 bytes of `out` (panics if `out` is shorter: a
    /// programming error).
    pub fn encode(&self, out: &mut [u8]) {
        assert!(out.len() >= BATCH_HEADER_BYTES, "header buffer too short");
        out[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&self.base_offset.to_be_bytes());
        out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&self.batch_length.to_be_bytes());
        out[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4]
            .copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out[MAGIC_AT] = self.magic as u8;
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&self.crc.to_be_bytes());
        out[CRC_COVERED_FROM..CRC_COVERED_FROM + 2].copy_from_slice(&self.attributes.to_be_bytes());
        out[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&self.last_offset_delta.to_be_bytes());
        out[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.base_timestamp.to_be_bytes());
        out[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&self.producer_id.to_be_bytes());
        out[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
            .copy_from_slice(&self.producer_epoch.to_be_bytes());
        out[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
            .copy_from_slice(&self.base_sequence.to_be_bytes());
        out[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4]
            .copy_from_slice(&self.records_count.to_be_bytes());
    }

    /// Total size of the batch in bytes (header included).
    pub fn size_bytes(&self) -> u64 {
        LOG_OVERHEAD_BYTES as u64 + self.batch_length.max(0) as u64
    }

    /// Offset of the last record (saturating).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The offset after the last record (saturating).
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// Number of offsets the batch spans (lastOffsetDelta + 1).
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// Sequence number of the last record, wrapping at `i32::MAX` to 0 as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }

    /// The compression codec.
    pub fn compression(&self) -> Compression {
        match (self.attributes & COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }

    /// The timestamp type.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch is part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Whether the batch comes from an idempotent producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Checks that recordsCount is lastOffsetDelta + 1, as it is in every freshly produced batch
    /// (compaction may later break this, so it is checked on append only).
    pub fn check_records_count(&self) -> Result<(), BatchError> {
        if i64::from(self.records_count) != self.offset_count() {
            return Err(BatchError::RecordsCountMismatch {
                records_count: self.records_count,
                last_offset_delta: self.last_offset_delta,
            });
        }
        Ok(())
    }
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: `sequence + increment`, wrapping past
/// `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// CRC-32C of a whole batch from the attributes on (what the header's crc field holds).
pub fn compute_crc(batch: &[u8]) -> Result<u32, BatchError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_BYTES as u64,
            available: batch.len() as u64,
        });
    }
    Ok(crc32c::crc32c(&batch[CRC_COVERED_FROM..]))
}

/// Checks the CRC of one whole batch (`batch` must be exactly the batch).
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    let computed = compute_crc(batch)?;
    let stored = be_i32(batch, CRC_AT) as u32;
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(())
}

fn check_header_room(batch: &[u8]) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_BYTES as u64,
            available: batch.len() as u64,
        });
    }
    Ok(())
}

/// Rewrites baseOffset in place (the CRC does not cover it).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    check_header_room(batch)?;
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Rewrites partitionLeaderEpoch in place (the CRC does not cover it).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    check_header_room(batch)?;
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Marks a whole batch as LogAppendTime with `time_ms` as its maxTimestamp, and recomputes the
/// CRC (both fields are covered by it), as Kafka's `setMaxTimestamp(LOG_APPEND_TIME, now)` does
/// for a topic with `message.timestamp.type=LogAppendTime`. The records are unchanged: readers
/// take every record's timestamp from maxTimestamp in a LogAppendTime batch. `batch` must be
/// exactly one batch.
pub fn set_log_append_time(batch: &mut [u8], time_ms: i64) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let attributes = header.attributes | TIMESTAMP_TYPE_BIT;
    batch[CRC_COVERED_FROM..CRC_COVERED_FROM + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&time_ms.to_be_bytes());
    let crc = compute_crc(batch)?;
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Bytes at the start of a batch that the log rewrites on append: baseOffset, batchLength and
/// partitionLeaderEpoch (none of them covered by the CRC).
pub const REWRITTEN_PREFIX_BYTES: usize = MAGIC_AT;

/// The first [`REWRITTEN_PREFIX_BYTES`] of `batch` with its base offset and partition leader
/// epoch replaced: written in front of the unchanged rest of the batch, it makes the batch the
/// log stores, without copying (or mutating) the producer's buffer.
pub fn rewritten_prefix(
    batch: &[u8],
    base_offset: i64,
    epoch: i32,
) -> Result<[u8; REWRITTEN_PREFIX_BYTES], BatchError> {
    check_header_room(batch)?;
    let mut prefix = [0u8; REWRITTEN_PREFIX_BYTES];
    prefix.copy_from_slice(&batch[..REWRITTEN_PREFIX_BYTES]);
    prefix[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    prefix[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
    Ok(prefix)
}

/// Iterates over the batches laid back to back in a buffer, yielding each header with the bytes
/// of its whole batch. Checks framing (see [`BatchHeader::parse`]) but not CRCs. After the first
/// error it yields nothing more.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

/// The batches of `buf`; see [`Batches`].
pub fn batches(buf: &[u8]) -> Batches<'_> {
    Batches {
        buf,
        position: 0,
        failed: false,
    }
}

impl<'a> Batches<'a> {
    /// Byte position of the next batch in the buffer.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.position..];
        let result = BatchHeader::parse(rest).and_then(|header| {
            let size = header.size_bytes();
            if (rest.len() as u64) < size {
                return Err(BatchError::Truncated {
                    needed: size,
                    available: rest.len() as u64,
                });
            }
            Ok((header, &rest[..size as usize]))
        });
        match &result {
            Ok((_, bytes)) => self.position += bytes.len(),
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

/// Builds v2 record batches with uncompressed records, for tests and simulations.
pub mod build {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, value: i64) {
        // Zig-zag, then unsigned LEB128.
        let mut v = ((value << 1) ^ (value >> 63)) as u64;
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Rewrites the batches in `records` (back to back, as appended) the way the log stores
    /// them: consecutive base offsets from `base_offset` and `leader_epoch`. Tests use it to
    /// build the bytes they expect to read back after `PartitionLog::append`.
    pub fn stamp(records: &mut [u8], base_offset: i64, leader_epoch: i32) {
        let mut position = 0;
        let mut offset = base_offset;
        while position < records.len() {
            let (header, length) = {
                let (header, bytes) = batches(&records[position..])
                    .next()
                    .expect("a batch")
                    .expect("a valid batch");
                (header, bytes.len())
            };
            set_base_offset(&mut records[position..], offset).expect("batch header");
            set_partition_leader_epoch(&mut records[position..], leader_epoch)
                .expect("batch header");
            offset += header.offset_count();
            position += length;
        }
    }

    /// A batch to encode with [`BatchSpec::encode`].
    #[derive(Debug, Clone)]
    pub struct BatchSpec {
        /// baseOffset (the broker rewrites it).
        pub base_offset: i64,
        /// Timestamp of the first record; record `i` gets `base_timestamp + i`.
        pub base_timestamp: i64,
        /// Producer id (-1 for none).
        pub producer_id: i64,
        /// Producer epoch (-1 for none).
        pub producer_epoch: i16,
        /// First sequence number (-1 for none).
        pub base_sequence: i32,
        /// Values of the records (no keys, no headers).
        pub values: Vec<Vec<u8>>,
    }

    impl BatchSpec {
        /// A non-idempotent batch with `values`, timestamps from `base_timestamp`.
        pub fn new(base_timestamp: i64, values: Vec<Vec<u8>>) -> BatchSpec {
            BatchSpec {
                base_offset: 0,
                base_timestamp,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: -1,
                base_sequence: NO_SEQUENCE,
                values,
            }
        }

        /// Sets the idempotent producer fields.
        pub fn producer(
            mut self,
            producer_id: i64,
            producer_epoch: i16,
            base_sequence: i32,
        ) -> Self {
            self.producer_id = producer_id;
            self.producer_epoch = producer_epoch;
            self.base_sequence = base_sequence;
            self
        }

        /// Encodes the batch with a correct CRC. Panics on an empty batch (a test bug).
        pub fn encode(&self) -> Vec<u8> {
            assert!(!self.values.is_empty(), "a batch needs at least one record");
            let mut records = Vec::new();
            for (i, value) in self.values.iter().enumerate() {
                let mut body = Vec::new();
                body.push(0u8); // record attributes
                put_varint(&mut body, i as i64); // timestamp delta
                put_varint(&mut body, i as i64); // offset delta
                put_varint(&mut body, -1); // key length: null
                put_varint(&mut body, value.len() as i64);
                body.extend_from_slice(value);
                put_varint(&mut body, 0); // headers count
                put_varint(&mut records, body.len() as i64);
                records.extend_from_slice(&body);
            }
            let count = self.values.len() as i32;
            let mut out = vec![0u8; BATCH_HEADER_BYTES];
            let header = BatchHeader {
                base_offset: self.base_offset,
                batch_length: (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32,
                partition_leader_epoch: -1,
                magic: MAGIC_V2,
                crc: 0,
                attributes: 0,
                last_offset_delta: count - 1,
                base_timestamp: self.base_timestamp,
                max_timestamp: self.base_timestamp + i64::from(count) - 1,
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                base_sequence: self.base_sequence,
                records_count: count,
            };
            header.encode(&mut out);
            out.extend_from_slice(&records);
            let crc = crc32c::crc32c(&out[CRC_COVERED_FROM..]);
            out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            out
        }
    }

    /// A non-idempotent batch of `count` records of `value_bytes` bytes each, timestamps from
    /// `base_timestamp`.
    pub fn simple_batch(count: usize, value_bytes: usize, base_timestamp: i64) -> Vec<u8> {
        let values = (0..count)
            .map(|i| vec![(i % 251) as u8; value_bytes])
            .collect();
        BatchSpec::new(base_timestamp, values).encode()
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn parses_a_built_batch() {
        let bytes = BatchSpec::new(1_000, vec![b"a".to_vec(), b"bc".to_vec(), b"".to_vec()])
            .producer(7, 2, 40)
            .encode();
        let header = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.size_bytes(), bytes.len() as u64);
        assert_eq!(header.magic, 2);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.records_count, 3);
        assert_eq!(header.base_timestamp, 1_000);
        assert_eq!(header.max_timestamp, 1_002);
        assert_eq!(header.producer_id, 7);
        assert_eq!(header.producer_epoch, 2);
        assert_eq!(header.base_sequence, 40);
        assert_eq!(header.last_sequence(), 42);
        assert_eq!(header.compression(), Compression::None);
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        assert!(!header.is_transactional());
        assert!(!header.is_control());
        header.check_records_count().unwrap();
        verify_crc(&bytes).unwrap();
        let mut encoded = vec![0u8; BATCH_HEADER_BYTES];
        header.encode(&mut encoded);
        assert_eq!(&encoded[..], &bytes[..BATCH_HEADER_BYTES]);
    }

    #[test]
    fn rewriting_offset_and_epoch_keeps_the_crc() {
        let mut bytes = simple_batch(4, 10, 5);
        set_base_offset(&mut bytes, 1234).unwrap();
        set_partition_leader_epoch(&mut bytes, 9).unwrap();
        verify_crc(&bytes).unwrap();
        let header = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.base_offset, 1234);
        assert_eq!(header.last_offset(), 1237);
        assert_eq!(header.partition_leader_epoch, 9);
    }

    #[test]
    fn detects_corruption() {
        let mut bytes = simple_batch(2, 10, 5);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert!(matches!(
            verify_crc(&bytes),
            Err(BatchError::CrcMismatch { .. })
        ));
        // Attributes are covered too.
        let mut bytes = simple_batch(2, 10, 5);
        bytes[22] ^= 1;
        assert!(verify_crc(&bytes).is_err());
    }

    #[test]
    fn rejects_bad_headers() {
        let good = simple_batch(3, 4, 0);
        let mut bad_magic = good.clone();
        bad_magic[MAGIC_AT] = 1;
        assert_eq!(
            BatchHeader::parse(&bad_magic),
            Err(BatchError::UnsupportedMagic(1))
        );
        let mut short_len = good.clone();
        short_len[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&48i32.to_be_bytes());
        assert_eq!(
            BatchHeader::parse(&short_len),
            Err(BatchError::InvalidLength(48))
        );
        let mut negative_delta = good.clone();
        negative_delta[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            BatchHeader::parse(&negative_delta),
            Err(BatchError::InvalidLastOffsetDelta(-1))
        );
        let mut count = good.clone();
        count[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        let header = BatchHeader::parse(&count).unwrap();
        assert!(matches!(
            header.check_records_count(),
            Err(BatchError::RecordsCountMismatch { .. })
        ));
        assert!(matches!(
            BatchHeader::parse(&good[..60]),
            Err(BatchError::Truncated {
                needed: 61,
                available: 60
            })
        ));
        assert!(set_base_offset(&mut [0u8; 10], 1).is_err());
    }

    #[test]
    fn iterates_back_to_back_batches() {
        let mut buf = simple_batch(1, 3, 0);
        buf.extend(simple_batch(5, 100, 0));
        buf.extend(simple_batch(2, 0, 0));
        let sizes: Vec<i32> = batches(&buf).map(|r| r.unwrap().0.records_count).collect();
        assert_eq!(sizes, vec![1, 5, 2]);
        // A truncated last batch is an error after the good ones.
        let cut = &buf[..buf.len() - 1];
        let results: Vec<_> = batches(cut).collect();
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(matches!(results[2], Err(BatchError::Truncated { .. })));
        assert_eq!(batches(&[]).count(), 0);
    }

    /// Goal: a batch stamped LogAppendTime reads back with the bit set, the new max timestamp,
    /// the same records and a valid CRC.
    #[test]
    fn log_append_time_rewrites_header_and_crc() {
        let original = simple_batch(3, 8, 1_000);
        let mut bytes = original.clone();
        set_log_append_time(&mut bytes, 55_555).unwrap();
        verify_crc(&bytes).unwrap();
        let header = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp, 55_555);
        assert_eq!(
            header.base_timestamp, 1_000,
            "baseTimestamp is kept, as in Kafka"
        );
        assert_eq!(header.compression(), Compression::None);
        assert_eq!(
            &bytes[BATCH_HEADER_BYTES..],
            &original[BATCH_HEADER_BYTES..]
        );
        assert!(set_log_append_time(&mut bytes[..40], 1).is_err());
    }

    #[test]
    fn attribute_helpers() {
        let mut bytes = simple_batch(1, 1, 0);
        let attributes: i16 = 3 | TIMESTAMP_TYPE_BIT | TRANSACTIONAL_BIT | CONTROL_BIT;
        bytes[CRC_COVERED_FROM..CRC_COVERED_FROM + 2].copy_from_slice(&attributes.to_be_bytes());
        let header = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.compression(), Compression::Lz4);
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert!(header.is_transactional());
        assert!(header.is_control());
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(i32::MAX, 0), i32::MAX);
    }
}
