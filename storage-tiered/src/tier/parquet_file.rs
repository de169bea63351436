//! One closed log segment as one Parquet file, and row groups read back into record batches.
//!
//! Every record of the segment is one row, sorted by offset. The columns, in this order:
//!
//! | column              | type                                                  | from        |
//! |---------------------|-------------------------------------------------------|-------------|
//! | `kafka_partition`   | Int32 not null                                        | options     |
//! | `kafka_offset`      | Int64 not null                                        | record      |
//! | `kafka_timestamp`   | Timestamp(ms, "UTC") not null (effective timestamp)   | record      |
//! | `key`               | Binary nullable                                       | record      |
//! | `value`             | Binary nullable                                       | record      |
//! | `headers`           | List<Struct<key: Utf8 not null, value: Binary nullable>> not null | record |
//! | `producer_id`       | Int64 not null (-1: none)                             | batch       |
//! | `producer_epoch`    | Int16 not null                                        | batch       |
//! | `base_sequence`     | Int32 not null (the batch's base sequence)            | batch       |
//! | `timestamp_type`    | Int8 not null (0 CreateTime, 1 LogAppendTime)         | batch       |
//! | `leader_epoch`      | Int32 not null                                        | batch       |
//! | `batch_base_offset` | Int64 not null                                        | batch       |
//! | `batch_last_offset` | Int64 not null                                        | batch       |
//! | `compression`       | Int8 not null (codec id 0-4)                          | batch       |
//!
//! The batch columns let a reader rebuild each original batch (offsets, producer fields, codec)
//! with [`records::encode_batch`]. Row groups end only at batch boundaries, so a row group holds
//! whole batches; their statistics (min/max of every column) give each row group's offset and
//! timestamp range from the footer alone ([`load_index`]). Pages of `key`, `value` and the header
//! leaves are ZSTD-compressed; the fixed-width columns are uncompressed (dictionary/RLE for the
//! per-batch columns, DELTA_BINARY_PACKED for `kafka_offset` and `kafka_timestamp`). The footer
//! carries the key-value metadata `strata.format.version` (`1`), `strata.topic` and
//! `strata.partition`.
//!
//! Batches without records (possible after compaction) are not stored: their offsets are covered
//! by [`SegmentFile::base_offset`]..=[`SegmentFile::last_offset`] but by no row group.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, OffsetBufferBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BinaryArray, Int16Array, Int32Array, Int64Array, Int8Array, ListArray,
    RecordBatch, StringArray, StructArray, TimestampMillisecondArray,
};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::{Buf, Bytes};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    KeyValue, ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData, SortingColumn,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;

use super::records::{self, BatchMeta, CheckedBatch, RecordError, RecordRow, RecordView};
use crate::batch::{self, Compression, TimestampType};

/// Key-value metadata key of the file format version.
pub const FORMAT_VERSION_KEY: &str = "strata.format.version";
/// The file format version this module writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// Key-value metadata key of the topic name.
pub const TOPIC_KEY: &str = "strata.topic";
/// Key-value metadata key of the partition number.
pub const PARTITION_KEY: &str = "strata.partition";
/// Default [`EncodeOptions::row_group_bytes_target`]: 4 MiB of source batch bytes.
pub const ROW_GROUP_BYTES_TARGET_DEFAULT: usize = 4 * 1024 * 1024;

/// Column names, in schema order.
pub const COLUMN_NAMES: [&str; 14] = [
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "key",
    "value",
    "headers",
    "producer_id",
    "producer_epoch",
    "base_sequence",
    "timestamp_type",
    "leader_epoch",
    "batch_base_offset",
    "batch_last_offset",
    "compression",
];

const KAFKA_OFFSET: &str = "kafka_offset";
const KAFKA_TIMESTAMP: &str = "kafka_timestamp";
const BATCH_BASE_OFFSET: &str = "batch_base_offset";
const BATCH_LAST_OFFSET: &str = "batch_last_offset";
/// Leaf column index of `kafka_offset` (the sort column).
const KAFKA_OFFSET_LEAF: i32 = 1;

/// Why a segment cannot be encoded or a file cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum TierCodecError {
    /// A batch of the segment (or rebuilt from the file) is invalid.
    #[error("batch at base offset {base_offset}: {source}")]
    Record {
        /// Base offset of the batch.
        base_offset: i64,
        /// The record codec's error.
        #[source]
        source: RecordError,
    },
    /// The segment bytes are not batches back to back in offset order.
    #[error("invalid segment: {0}")]
    InvalidSegment(String),
    /// The segment holds no record (empty, or only empty batches): no file is written.
    #[error("segment holds no record")]
    EmptySegment,
    /// The Parquet writer or reader failed.
    #[error("parquet: {0}")]
    Parquet(ParquetError),
    /// An Arrow array could not be built or read.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// The object store failed (possibly transient).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The file is not a segment file this module wrote.
    #[error("invalid segment file: {0}")]
    InvalidFile(String),
}

impl From<ParquetError> for TierCodecError {
    /// An object-store error surfacing through the Parquet reader stays an object-store error.
    fn from(error: ParquetError) -> TierCodecError {
        match error {
            ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
                Ok(store) => TierCodecError::Store(*store),
                Err(other) => TierCodecError::Parquet(ParquetError::External(other)),
            },
            other => TierCodecError::Parquet(other),
        }
    }
}

fn invalid_file(message: impl Into<String>) -> TierCodecError {
    TierCodecError::InvalidFile(message.into())
}

/// How to encode a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    /// A row group ends at the first batch boundary once its source batches reach this many
    /// bytes (default [`ROW_GROUP_BYTES_TARGET_DEFAULT`]).
    pub row_group_bytes_target: usize,
    /// Topic name, stored in the footer.
    pub topic: String,
    /// Partition, stored in the footer and the `kafka_partition` column.
    pub partition: i32,
}

impl EncodeOptions {
    /// Options with the default row group target.
    pub fn new(topic: impl Into<String>, partition: i32) -> EncodeOptions {
        EncodeOptions {
            row_group_bytes_target: ROW_GROUP_BYTES_TARGET_DEFAULT,
            topic: topic.into(),
            partition,
        }
    }
}

/// An encoded segment file and what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// The Parquet file.
    pub bytes: Bytes,
    /// The first batch's base offset (empty batches included).
    pub base_offset: i64,
    /// The last batch's last offset (empty batches included).
    pub last_offset: i64,
    /// Rows (records) in the file.
    pub record_count: u64,
    /// Batches stored in the file (batches without records are skipped and not counted).
    pub batch_count: u64,
    /// Smallest effective record timestamp.
    pub timestamp_min_ms: i64,
    /// Largest effective record timestamp.
    pub timestamp_max_ms: i64,
    /// Sum of the sizes of all source batches (empty ones included).
    pub batch_bytes: u64,
}

/// The Arrow schema of a segment file (see the module doc).
pub fn segment_schema() -> SchemaRef {
    let header_fields = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ]);
    let header_item = Field::new("element", DataType::Struct(header_fields), false);
    Arc::new(Schema::new(vec![
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new(KAFKA_OFFSET, DataType::Int64, false),
        Field::new(
            KAFKA_TIMESTAMP,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("headers", DataType::List(Arc::new(header_item)), false),
        Field::new("producer_id", DataType::Int64, false),
        Field::new("producer_epoch", DataType::Int16, false),
        Field::new("base_sequence", DataType::Int32, false),
        Field::new("timestamp_type", DataType::Int8, false),
        Field::new("leader_epoch", DataType::Int32, false),
        Field::new(BATCH_BASE_OFFSET, DataType::Int64, false),
        Field::new(BATCH_LAST_OFFSET, DataType::Int64, false),
        Field::new("compression", DataType::Int8, false),
    ]))
}

fn compression_id(codec: Compression) -> i8 {
    match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
        // Never stored: decode_batch refuses unknown codecs.
        Compression::Unknown(id) => id as i8,
    }
}

fn compression_from_id(id: i8) -> Compression {
    match id {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => Compression::Unknown(other as u8),
    }
}

fn timestamp_type_id(timestamp_type: TimestampType) -> i8 {
    match timestamp_type {
        TimestampType::CreateTime => 0,
        TimestampType::LogAppendTime => 1,
    }
}

/// The rows of one row group being built, column by column: keys, values and headers are
/// copied once, from the (decompressed) batch straight into the Arrow buffers.
struct RowGroupColumns {
    offsets: Vec<i64>,
    timestamps: Vec<i64>,
    keys: BinaryBuilder,
    values: BinaryBuilder,
    header_list_offsets: OffsetBufferBuilder<i32>,
    header_keys: StringBuilder,
    header_values: BinaryBuilder,
    producer_ids: Vec<i64>,
    producer_epochs: Vec<i16>,
    base_sequences: Vec<i32>,
    timestamp_types: Vec<i8>,
    leader_epochs: Vec<i32>,
    batch_base_offsets: Vec<i64>,
    batch_last_offsets: Vec<i64>,
    compressions: Vec<i8>,
}

impl RowGroupColumns {
    /// Empty columns sized for about `rows` rows and `bytes` of keys and values.
    fn with_capacity(rows: usize, bytes: usize) -> RowGroupColumns {
        RowGroupColumns {
            offsets: Vec::with_capacity(rows),
            timestamps: Vec::with_capacity(rows),
            keys: BinaryBuilder::with_capacity(rows, 0),
            values: BinaryBuilder::with_capacity(rows, bytes),
            header_list_offsets: OffsetBufferBuilder::new(rows),
            header_keys: StringBuilder::new(),
            header_values: BinaryBuilder::new(),
            producer_ids: Vec::with_capacity(rows),
            producer_epochs: Vec::with_capacity(rows),
            base_sequences: Vec::with_capacity(rows),
            timestamp_types: Vec::with_capacity(rows),
            leader_epochs: Vec::with_capacity(rows),
            batch_base_offsets: Vec::with_capacity(rows),
            batch_last_offsets: Vec::with_capacity(rows),
            compressions: Vec::with_capacity(rows),
        }
    }

    fn len(&self) -> usize {
        self.offsets.len()
    }

    fn push_record(&mut self, meta: &BatchMeta, record: &RecordView<'_>) {
        self.offsets.push(record.offset);
        self.timestamps.push(record.timestamp_ms);
        self.keys.append_option(record.key);
        self.values.append_option(record.value);
        self.header_list_offsets.push_length(record.headers.len());
        for (key, value) in record.headers {
            self.header_keys.append_value(key);
            self.header_values.append_option(*value);
        }
        self.producer_ids.push(meta.producer_id);
        self.producer_epochs.push(meta.producer_epoch);
        self.base_sequences.push(meta.base_sequence);
        self.timestamp_types
            .push(timestamp_type_id(meta.timestamp_type));
        self.leader_epochs.push(meta.partition_leader_epoch);
        self.batch_base_offsets.push(meta.base_offset);
        self.batch_last_offsets.push(meta.last_offset);
        self.compressions.push(compression_id(meta.compression));
    }

    /// Turns the buffered rows into a record batch; `self` is left empty with room for
    /// `rows` rows and `bytes` of values.
    fn take_record_batch(
        &mut self,
        schema: &SchemaRef,
        partition: i32,
        rows: usize,
        bytes: usize,
    ) -> Result<RecordBatch, TierCodecError> {
        let mut columns = std::mem::replace(self, RowGroupColumns::with_capacity(rows, bytes));
        let row_count = columns.len();
        let headers_field = schema.field(5);
        let DataType::List(item_field) = headers_field.data_type() else {
            return Err(invalid_file("headers column is not a list"));
        };
        let DataType::Struct(header_fields) = item_field.data_type() else {
            return Err(invalid_file("headers items are not structs"));
        };
        let header_keys: ArrayRef = Arc::new(columns.header_keys.finish());
        let header_values: ArrayRef = Arc::new(columns.header_values.finish());
        let header_structs = StructArray::try_new(
            header_fields.clone(),
            vec![header_keys, header_values],
            None,
        )?;
        let headers = ListArray::try_new(
            item_field.clone(),
            columns.header_list_offsets.finish(),
            Arc::new(header_structs),
            None,
        )?;
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![partition; row_count])),
            Arc::new(Int64Array::from(columns.offsets)),
            Arc::new(TimestampMillisecondArray::from(columns.timestamps).with_timezone("UTC")),
            Arc::new(columns.keys.finish()),
            Arc::new(columns.values.finish()),
            Arc::new(headers),
            Arc::new(Int64Array::from(columns.producer_ids)),
            Arc::new(Int16Array::from(columns.producer_epochs)),
            Arc::new(Int32Array::from(columns.base_sequences)),
            Arc::new(Int8Array::from(columns.timestamp_types)),
            Arc::new(Int32Array::from(columns.leader_epochs)),
            Arc::new(Int64Array::from(columns.batch_base_offsets)),
            Arc::new(Int64Array::from(columns.batch_last_offsets)),
            Arc::new(Int8Array::from(columns.compressions)),
        ];
        Ok(RecordBatch::try_new(schema.clone(), arrays)?)
    }
}

/// Leaf column paths of the header keys and values.
fn header_leaf_paths() -> [ColumnPath; 2] {
    ["key", "value"].map(|leaf| {
        ColumnPath::new(vec![
            "headers".to_owned(),
            "list".to_owned(),
            "element".to_owned(),
            leaf.to_owned(),
        ])
    })
}

/// Leaf columns whose pages are zstd-compressed: the record bytes. Every other column is
/// fixed-width and stored uncompressed (a reader then sets up a zstd context only for these).
fn zstd_leaf_paths() -> Vec<ColumnPath> {
    let mut paths = vec![ColumnPath::from("key"), ColumnPath::from("value")];
    paths.extend(header_leaf_paths());
    paths
}

fn writer_properties(options: &EncodeOptions) -> WriterProperties {
    // Fixed-width columns: uncompressed. The batch columns and `kafka_partition` keep the
    // default dictionary encoding (one value per batch: RLE runs of one dictionary index);
    // offsets and timestamps, monotonic or nearly, are delta-encoded.
    let mut builder = WriterProperties::builder()
        .set_compression(ParquetCompression::UNCOMPRESSED)
        .set_statistics_enabled(EnabledStatistics::Page);
    for path in zstd_leaf_paths() {
        builder =
            builder.set_column_compression(path, ParquetCompression::ZSTD(ZstdLevel::default()));
    }
    for name in [KAFKA_OFFSET, KAFKA_TIMESTAMP] {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(name), false)
            .set_column_encoding(ColumnPath::from(name), Encoding::DELTA_BINARY_PACKED);
    }
    // Record values are rarely repeated: a dictionary would be filled and abandoned on every
    // page.
    builder
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        // Row groups end only where encode_segment flushes (at batch boundaries).
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(None)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: KAFKA_OFFSET_LEAF,
            descending: false,
            nulls_first: false,
        }]))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(FORMAT_VERSION_KEY.to_owned(), FORMAT_VERSION.to_owned()),
            KeyValue::new(TOPIC_KEY.to_owned(), options.topic.clone()),
            KeyValue::new(PARTITION_KEY.to_owned(), options.partition.to_string()),
        ]))
        .build()
}

/// Encodes the batches of one closed segment (v2 batches back to back, in offset order) into
/// one Parquet file.
///
/// Every batch is CRC-checked and decoded; control and transactional batches, unknown codecs
/// and non-UTF-8 header keys fail the whole segment (better to keep it local than to lose
/// bytes). Batches without records are skipped. An input without any record is an error.
pub fn encode_segment(
    batches: &[u8],
    options: &EncodeOptions,
) -> Result<SegmentFile, TierCodecError> {
    let schema = segment_schema();
    let mut writer = ArrowWriter::try_new(
        Vec::with_capacity(batches.len() / 2),
        schema.clone(),
        Some(writer_properties(options)),
    )?;
    // Rows and value bytes of a full row group, for sizing the column buffers.
    let row_group_bytes = options.row_group_bytes_target.min(batches.len());
    let mut row_group_rows: usize = 1024;
    let mut buffered = RowGroupColumns::with_capacity(row_group_rows, row_group_bytes);
    let mut buffered_bytes: usize = 0;
    let mut first_base_offset: Option<i64> = None;
    let mut previous_last_offset: Option<i64> = None;
    let mut record_count: u64 = 0;
    let mut batch_count: u64 = 0;
    let mut batch_bytes: u64 = 0;
    let mut timestamp_min_ms = i64::MAX;
    let mut timestamp_max_ms = i64::MIN;

    for item in batch::batches(batches) {
        let (header, bytes) = item.map_err(|error| {
            TierCodecError::InvalidSegment(format!("bad batch framing: {error}"))
        })?;
        let record_error = |source| TierCodecError::Record {
            base_offset: header.base_offset,
            source,
        };
        let checked = CheckedBatch::new(bytes).map_err(record_error)?;
        let meta = *checked.meta();
        if let Some(previous) = previous_last_offset {
            if meta.base_offset <= previous {
                return Err(TierCodecError::InvalidSegment(format!(
                    "batch at base offset {} does not follow the previous batch ending at {previous}",
                    meta.base_offset
                )));
            }
        }
        first_base_offset.get_or_insert(meta.base_offset);
        previous_last_offset = Some(meta.last_offset);
        batch_bytes += bytes.len() as u64;
        // Rows go straight into the columns; a batch that fails halfway fails the segment.
        let rows = checked
            .visit_records(|record| {
                timestamp_min_ms = timestamp_min_ms.min(record.timestamp_ms);
                timestamp_max_ms = timestamp_max_ms.max(record.timestamp_ms);
                buffered.push_record(&meta, &record);
                Ok(())
            })
            .map_err(record_error)?;
        if rows == 0 {
            continue;
        }
        batch_count += 1;
        record_count += rows as u64;
        buffered_bytes += bytes.len();
        if buffered_bytes >= options.row_group_bytes_target {
            row_group_rows = row_group_rows.max(buffered.len());
            let record_batch = buffered.take_record_batch(
                &schema,
                options.partition,
                row_group_rows,
                row_group_bytes,
            )?;
            writer.write(&record_batch)?;
            writer.flush()?;
            buffered_bytes = 0;
        }
    }
    let (Some(base_offset), Some(last_offset)) = (first_base_offset, previous_last_offset) else {
        return Err(TierCodecError::EmptySegment);
    };
    if record_count == 0 {
        return Err(TierCodecError::EmptySegment);
    }
    if buffered.len() > 0 {
        let record_batch = buffered.take_record_batch(&schema, options.partition, 0, 0)?;
        writer.write(&record_batch)?;
        writer.flush()?;
    }
    // Writes the footer.
    let bytes = writer.into_inner()?;
    Ok(SegmentFile {
        bytes: Bytes::from(bytes),
        base_offset,
        last_offset,
        record_count,
        batch_count,
        timestamp_min_ms,
        timestamp_max_ms,
        batch_bytes,
    })
}

/// Parsed footer + the per-row-group offset ranges (from the column statistics).
#[derive(Debug, Clone)]
pub struct FileIndex {
    /// The footer, with the Arrow schema; pass it to a reader to skip re-reading the footer.
    pub metadata: ArrowReaderMetadata,
    /// One entry per row group, in file (= offset) order.
    pub row_groups: Vec<RowGroupRange>,
}

/// The whole batches held by one row group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGroupRange {
    /// Base offset of the row group's first batch.
    pub first_batch_base_offset: i64,
    /// Last offset of the row group's last batch.
    pub last_batch_last_offset: i64,
    /// Rows (records) in the row group.
    pub record_count: u64,
    /// Largest effective record timestamp in the row group.
    pub timestamp_max_ms: i64,
}

/// Checks that `schema` is the segment schema (names, types, nullability; metadata ignored).
fn check_schema(schema: &Schema) -> Result<(), TierCodecError> {
    let expected = segment_schema();
    if schema.fields().len() != expected.fields().len() {
        return Err(invalid_file(format!(
            "{} columns, expected {}",
            schema.fields().len(),
            expected.fields().len()
        )));
    }
    for (field, want) in schema.fields().iter().zip(expected.fields().iter()) {
        if field.name() != want.name()
            || field.is_nullable() != want.is_nullable()
            || !field.data_type().equals_datatype(want.data_type())
        {
            return Err(invalid_file(format!(
                "column {} {:?} (nullable {}), expected {} {:?} (nullable {})",
                field.name(),
                field.data_type(),
                field.is_nullable(),
                want.name(),
                want.data_type(),
                want.is_nullable()
            )));
        }
    }
    Ok(())
}

/// Min and max of an Int64 column chunk from its statistics.
fn int64_min_max(row_group: &RowGroupMetaData, name: &str) -> Result<(i64, i64), TierCodecError> {
    let column = row_group
        .columns()
        .iter()
        .find(|column| column.column_path().string() == name)
        .ok_or_else(|| invalid_file(format!("no column {name}")))?;
    match column.statistics() {
        Some(Statistics::Int64(stats)) => match (stats.min_opt(), stats.max_opt()) {
            (Some(min), Some(max)) => Ok((*min, *max)),
            _ => Err(invalid_file(format!(
                "column {name} has no min/max statistics"
            ))),
        },
        Some(_) => Err(invalid_file(format!(
            "column {name} statistics are not Int64"
        ))),
        None => Err(invalid_file(format!("column {name} has no statistics"))),
    }
}

/// Builds the index of a file from its footer: checks the schema and format version, and
/// derives each row group's batch range and timestamps from the statistics.
pub fn index_from_metadata(metadata: ArrowReaderMetadata) -> Result<FileIndex, TierCodecError> {
    check_schema(metadata.schema())?;
    let file_metadata = metadata.metadata().file_metadata();
    let version = file_metadata
        .key_value_metadata()
        .and_then(|pairs| pairs.iter().find(|kv| kv.key == FORMAT_VERSION_KEY))
        .and_then(|kv| kv.value.as_deref());
    if version != Some(FORMAT_VERSION) {
        return Err(invalid_file(format!(
            "{FORMAT_VERSION_KEY} is {version:?}, expected {FORMAT_VERSION}"
        )));
    }
    let mut row_groups = Vec::with_capacity(metadata.metadata().num_row_groups());
    let mut previous: Option<RowGroupRange> = None;
    for (index, row_group) in metadata.metadata().row_groups().iter().enumerate() {
        let record_count = u64::try_from(row_group.num_rows())
            .ok()
            .filter(|rows| *rows > 0)
            .ok_or_else(|| {
                invalid_file(format!(
                    "row group {index} has {} rows",
                    row_group.num_rows()
                ))
            })?;
        let (offset_min, offset_max) = int64_min_max(row_group, KAFKA_OFFSET)?;
        let (base_min, _) = int64_min_max(row_group, BATCH_BASE_OFFSET)?;
        let (_, last_max) = int64_min_max(row_group, BATCH_LAST_OFFSET)?;
        let (_, timestamp_max_ms) = int64_min_max(row_group, KAFKA_TIMESTAMP)?;
        if !(base_min <= offset_min && offset_min <= offset_max && offset_max <= last_max) {
            return Err(invalid_file(format!(
                "row group {index}: offsets {offset_min}..={offset_max} outside its batches \
                 {base_min}..={last_max}"
            )));
        }
        let range = RowGroupRange {
            first_batch_base_offset: base_min,
            last_batch_last_offset: last_max,
            record_count,
            timestamp_max_ms,
        };
        if let Some(previous) = previous {
            if range.first_batch_base_offset <= previous.last_batch_last_offset {
                return Err(invalid_file(format!(
                    "row group {index} starts at {} before the previous one ends at {}",
                    range.first_batch_base_offset, previous.last_batch_last_offset
                )));
            }
        }
        previous = Some(range);
        row_groups.push(range);
    }
    if row_groups.is_empty() {
        return Err(invalid_file("no row groups"));
    }
    Ok(FileIndex {
        metadata,
        row_groups,
    })
}

/// Bytes fetched from the end of a file in the first footer read: usually the whole footer in
/// one request.
const FOOTER_PREFETCH_BYTES: usize = 64 * 1024;

/// Parquet's async reader over an object store: only the `ObjectStore` trait methods
/// (`get_range`, `get_ranges`), so it runs on any store and under madsim. (parquet's own
/// `ParquetObjectReader` is deprecated in favour of readers like this one.)
struct StoreReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// Needed to read the footer; `None` when the footer is supplied by a [`FileIndex`].
    file_size_bytes: Option<u64>,
}

fn store_error(error: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(error))
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let file_size_bytes = self.file_size_bytes.ok_or_else(|| {
                ParquetError::General("the file size is needed to read the footer".into())
            })?;
            let metadata = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .with_prefetch_hint(Some(FOOTER_PREFETCH_BYTES))
                .load_and_finish(self, file_size_bytes)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Reads a file's footer with ranged reads (the file size saves a HEAD or suffix request) and
/// builds its [`FileIndex`].
pub async fn load_index(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    file_size_bytes: u64,
) -> Result<FileIndex, TierCodecError> {
    let mut reader = StoreReader {
        store: Arc::clone(store),
        path: path.clone(),
        file_size_bytes: Some(file_size_bytes),
    };
    let metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new()).await?;
    index_from_metadata(metadata)
}

/// The fetched column chunks of one row group: the sparse view of the file that parquet's
/// sync reader reads them from.
struct RowGroupChunks {
    /// `(file offset, bytes)` of every column chunk.
    chunks: Vec<(u64, Bytes)>,
    /// End of the last chunk (the reader needs a length; it never reads beyond the chunks).
    end_bytes: u64,
}

impl RowGroupChunks {
    /// The chunk holding file offset `start`, and `start`'s position in it.
    fn chunk_at(&self, start: u64) -> parquet::errors::Result<(&Bytes, usize)> {
        self.chunks
            .iter()
            .find_map(|(chunk_start, bytes)| {
                let position = start.checked_sub(*chunk_start)?;
                (position < bytes.len() as u64).then_some((bytes, position as usize))
            })
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "file offset {start} is outside the fetched column chunks"
                ))
            })
    }
}

impl Length for RowGroupChunks {
    fn len(&self) -> u64 {
        self.end_bytes
    }
}

impl ChunkReader for RowGroupChunks {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let (bytes, position) = self.chunk_at(start)?;
        Ok(bytes.slice(position..).reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        let (bytes, position) = self.chunk_at(start)?;
        match position.checked_add(length) {
            Some(end) if end <= bytes.len() => Ok(bytes.slice(position..end)),
            _ => Err(ParquetError::General(format!(
                "{length} bytes at file offset {start} run past their column chunk"
            ))),
        }
    }
}

/// Rows per Arrow record batch when decoding a row group: a whole default-sized row group of
/// small records in one batch, without trusting the footer's row count for an allocation.
const DECODE_BATCH_ROWS_MAX: usize = 64 * 1024;

/// Reads one row group and rebuilds its batches: each `Bytes` is one valid v2 batch, in offset
/// order, covering exactly the row group's [`RowGroupRange`].
///
/// The column chunks are fetched with one ranged `get_ranges`; the decode (zstd, Parquet,
/// batches rebuilt), 5-10 ms of CPU per 4 MiB row group, runs on Tokio's blocking pool so
/// that it does not hold up an async worker (inline without a Tokio runtime, and under
/// madsim, which has no blocking pool).
pub async fn read_row_group(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    index: &FileIndex,
    row_group: usize,
) -> Result<Vec<Bytes>, TierCodecError> {
    let missing = || {
        invalid_file(format!(
            "row group {row_group} requested, the file has {}",
            index.row_groups.len()
        ))
    };
    let range = *index.row_groups.get(row_group).ok_or_else(missing)?;
    let row_group_metadata = index
        .metadata
        .metadata()
        .row_groups()
        .get(row_group)
        .ok_or_else(missing)?;
    let mut ranges = Vec::with_capacity(row_group_metadata.num_columns());
    for column in row_group_metadata.columns() {
        let (start, length) = column.byte_range();
        let end = start.checked_add(length).ok_or_else(|| {
            invalid_file(format!(
                "row group {row_group}: column chunk at {start} of {length} bytes overflows"
            ))
        })?;
        ranges.push(start..end);
    }
    let fetched = store.get_ranges(path, &ranges).await?;
    if fetched.len() != ranges.len()
        || fetched
            .iter()
            .zip(&ranges)
            .any(|(bytes, range)| bytes.len() as u64 != range.end - range.start)
    {
        return Err(invalid_file(format!(
            "row group {row_group}: the store returned other byte ranges than requested"
        )));
    }
    let chunks = RowGroupChunks {
        end_bytes: ranges.iter().map(|range| range.end).max().unwrap_or(0),
        chunks: ranges
            .iter()
            .map(|range| range.start)
            .zip(fetched)
            .collect(),
    };
    let metadata = index.metadata.clone();
    run_blocking(move || decode_row_group(chunks, metadata, row_group, range)).await
}

/// Runs CPU-heavy `work` on Tokio's blocking pool when there is a Tokio runtime (not under
/// madsim); inline otherwise. A panic in `work` is resumed in the caller.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TierCodecError> + Send + 'static,
) -> Result<T, TierCodecError> {
    #[cfg(not(madsim))]
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        return match runtime.spawn_blocking(work).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(TierCodecError::Parquet(ParquetError::General(format!(
                "row group decode task: {error}"
            )))),
        };
    }
    work()
}

/// Decodes the fetched column chunks of one row group and rebuilds its batches (the sync,
/// CPU-heavy half of [`read_row_group`]).
fn decode_row_group(
    chunks: RowGroupChunks,
    metadata: ArrowReaderMetadata,
    row_group: usize,
    range: RowGroupRange,
) -> Result<Vec<Bytes>, TierCodecError> {
    let batch_rows = usize::try_from(range.record_count)
        .unwrap_or(DECODE_BATCH_ROWS_MAX)
        .clamp(1, DECODE_BATCH_ROWS_MAX);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(chunks, metadata)
        .with_row_groups(vec![row_group])
        .with_batch_size(batch_rows)
        .build()?;
    let record_batches = reader.collect::<Result<Vec<RecordBatch>, ArrowError>>()?;
    let batches = batches_from_record_batches(&record_batches)?;
    check_covers(&batches, &range, row_group)?;
    Ok(batches)
}

/// Checks that rebuilt batches match the row group's range from the footer.
fn check_covers(
    batches: &[Bytes],
    range: &RowGroupRange,
    row_group: usize,
) -> Result<(), TierCodecError> {
    let first = batches
        .first()
        .map(|b| batch::BatchHeader::parse(b).map(|h| h.base_offset));
    let last = batches
        .last()
        .map(|b| batch::BatchHeader::parse(b).map(|h| h.last_offset()));
    match (first, last) {
        (Some(Ok(first)), Some(Ok(last)))
            if first == range.first_batch_base_offset && last == range.last_batch_last_offset =>
        {
            Ok(())
        }
        _ => Err(invalid_file(format!(
            "row group {row_group}: rebuilt batches do not cover {}..={}",
            range.first_batch_base_offset, range.last_batch_last_offset
        ))),
    }
}

/// Typed views of the columns of one record batch.
struct ColumnViews<'a> {
    offsets: &'a Int64Array,
    timestamps: &'a TimestampMillisecondArray,
    keys: &'a BinaryArray,
    values: &'a BinaryArray,
    headers: &'a ListArray,
    header_keys: &'a StringArray,
    header_values: &'a BinaryArray,
    producer_ids: &'a Int64Array,
    producer_epochs: &'a Int16Array,
    base_sequences: &'a Int32Array,
    timestamp_types: &'a Int8Array,
    leader_epochs: &'a Int32Array,
    batch_base_offsets: &'a Int64Array,
    batch_last_offsets: &'a Int64Array,
    compressions: &'a Int8Array,
    /// The value buffers of `keys`, `values` and `header_values`, shared once per array so
    /// that each row's fields are `Bytes` slices of them rather than copies.
    key_data: Bytes,
    value_data: Bytes,
    header_value_data: Bytes,
}

fn column<'a, T: 'static>(rb: &'a RecordBatch, name: &str) -> Result<&'a T, TierCodecError> {
    rb.column_by_name(name)
        .and_then(|array| array.as_any().downcast_ref::<T>())
        .ok_or_else(|| invalid_file(format!("column {name} is missing or has the wrong type")))
}

fn non_null(array: &dyn Array, name: &str) -> Result<(), TierCodecError> {
    if array.null_count() != 0 {
        return Err(invalid_file(format!("column {name} has nulls")));
    }
    Ok(())
}

impl<'a> ColumnViews<'a> {
    fn new(rb: &'a RecordBatch) -> Result<ColumnViews<'a>, TierCodecError> {
        check_schema(rb.schema_ref())?;
        let headers: &ListArray = column(rb, "headers")?;
        let header_structs = headers
            .values()
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| invalid_file("headers items are not structs"))?;
        let header_keys = header_structs
            .column_by_name("key")
            .and_then(|a| a.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| invalid_file("header keys are not strings"))?;
        let header_values = header_structs
            .column_by_name("value")
            .and_then(|a| a.as_any().downcast_ref::<BinaryArray>())
            .ok_or_else(|| invalid_file("header values are not binary"))?;
        let keys: &BinaryArray = column(rb, "key")?;
        let values: &BinaryArray = column(rb, "value")?;
        let views = ColumnViews {
            offsets: column(rb, KAFKA_OFFSET)?,
            timestamps: column(rb, KAFKA_TIMESTAMP)?,
            keys,
            values,
            headers,
            header_keys,
            header_values,
            producer_ids: column(rb, "producer_id")?,
            producer_epochs: column(rb, "producer_epoch")?,
            base_sequences: column(rb, "base_sequence")?,
            timestamp_types: column(rb, "timestamp_type")?,
            leader_epochs: column(rb, "leader_epoch")?,
            batch_base_offsets: column(rb, BATCH_BASE_OFFSET)?,
            batch_last_offsets: column(rb, BATCH_LAST_OFFSET)?,
            compressions: column(rb, "compression")?,
            key_data: Bytes::from_owner(keys.values().clone()),
            value_data: Bytes::from_owner(values.values().clone()),
            header_value_data: Bytes::from_owner(header_values.values().clone()),
        };
        non_null(views.offsets, KAFKA_OFFSET)?;
        non_null(views.timestamps, KAFKA_TIMESTAMP)?;
        non_null(views.headers, "headers")?;
        non_null(views.header_keys, "headers.key")?;
        non_null(header_structs, "headers items")?;
        non_null(views.producer_ids, "producer_id")?;
        non_null(views.producer_epochs, "producer_epoch")?;
        non_null(views.base_sequences, "base_sequence")?;
        non_null(views.timestamp_types, "timestamp_type")?;
        non_null(views.leader_epochs, "leader_epoch")?;
        non_null(views.batch_base_offsets, BATCH_BASE_OFFSET)?;
        non_null(views.batch_last_offsets, BATCH_LAST_OFFSET)?;
        non_null(views.compressions, "compression")?;
        Ok(views)
    }

    fn meta(&self, row: usize) -> Result<BatchMeta, TierCodecError> {
        let timestamp_type = match self.timestamp_types.value(row) {
            0 => TimestampType::CreateTime,
            1 => TimestampType::LogAppendTime,
            other => return Err(invalid_file(format!("timestamp_type {other}"))),
        };
        Ok(BatchMeta {
            base_offset: self.batch_base_offsets.value(row),
            last_offset: self.batch_last_offsets.value(row),
            partition_leader_epoch: self.leader_epochs.value(row),
            compression: compression_from_id(self.compressions.value(row)),
            timestamp_type,
            producer_id: self.producer_ids.value(row),
            producer_epoch: self.producer_epochs.value(row),
            base_sequence: self.base_sequences.value(row),
        })
    }

    fn row(&self, row: usize) -> RecordRow {
        // `array.value(i)` lies inside `data` (the same Arrow buffer), so `slice_ref` is a
        // zero-copy slice.
        let nullable = |array: &BinaryArray, data: &Bytes, i: usize| {
            (!array.is_null(i)).then(|| data.slice_ref(array.value(i)))
        };
        let offsets = self.headers.value_offsets();
        // value_offsets has len + 1 entries and is monotonic (checked by ListArray).
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let headers = (start..end)
            .map(|i| {
                (
                    self.header_keys.value(i).to_owned(),
                    nullable(self.header_values, &self.header_value_data, i),
                )
            })
            .collect();
        RecordRow {
            offset: self.offsets.value(row),
            timestamp_ms: self.timestamps.value(row),
            key: nullable(self.keys, &self.key_data, row),
            value: nullable(self.values, &self.value_data, row),
            headers,
        }
    }
}

/// Rebuilds the batches of a record batch read from a segment file (rows grouped by
/// `batch_base_offset` and re-encoded with [`records::encode_batch`]); the sync core of
/// [`read_row_group`].
pub fn batches_from_record_batch(rb: &RecordBatch) -> Result<Vec<Bytes>, TierCodecError> {
    batches_from_record_batches(std::slice::from_ref(rb))
}

/// Like [`batches_from_record_batch`], over consecutive record batches of one row group (a
/// batch's rows may continue from one record batch into the next).
pub fn batches_from_record_batches(rbs: &[RecordBatch]) -> Result<Vec<Bytes>, TierCodecError> {
    let mut out = Vec::new();
    let mut current: Option<(BatchMeta, Vec<RecordRow>)> = None;
    let mut previous_offset: Option<i64> = None;
    let finish = |(meta, rows): (BatchMeta, Vec<RecordRow>)| {
        records::encode_batch(&meta, &rows)
            .map(Bytes::from)
            .map_err(|source| TierCodecError::Record {
                base_offset: meta.base_offset,
                source,
            })
    };
    for rb in rbs {
        let views = ColumnViews::new(rb)?;
        for row in 0..rb.num_rows() {
            let meta = views.meta(row)?;
            let record = views.row(row);
            if previous_offset.is_some_and(|previous| record.offset <= previous) {
                return Err(invalid_file(format!(
                    "offset {} is not above the previous row's",
                    record.offset
                )));
            }
            previous_offset = Some(record.offset);
            match &mut current {
                Some((current_meta, rows)) if current_meta.base_offset == meta.base_offset => {
                    if *current_meta != meta {
                        return Err(invalid_file(format!(
                            "rows of the batch at {} disagree on its batch fields",
                            meta.base_offset
                        )));
                    }
                    rows.push(record);
                }
                _ => {
                    if let Some((done_meta, rows)) = current.take() {
                        if meta.base_offset <= done_meta.last_offset {
                            return Err(invalid_file(format!(
                                "batch at {} overlaps the previous batch ending at {}",
                                meta.base_offset, done_meta.last_offset
                            )));
                        }
                        out.push(finish((done_meta, rows))?);
                    }
                    current = Some((meta, vec![record]));
                }
            }
        }
    }
    if let Some(last) = current.take() {
        out.push(finish(last)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build::BatchSpec;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// Pushes owned rows through the borrowed-record path `encode_segment` uses.
    fn push_batch(columns: &mut RowGroupColumns, meta: &BatchMeta, rows: Vec<RecordRow>) {
        for row in &rows {
            let headers: Vec<(&str, Option<&[u8]>)> = row
                .headers
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_deref()))
                .collect();
            columns.push_record(
                meta,
                &RecordView {
                    offset: row.offset,
                    timestamp_ms: row.timestamp_ms,
                    key: row.key.as_deref(),
                    value: row.value.as_deref(),
                    headers: &headers,
                },
            );
        }
    }

    fn meta(base_offset: i64, last_offset: i64, compression: Compression) -> BatchMeta {
        BatchMeta {
            base_offset,
            last_offset,
            partition_leader_epoch: 5,
            compression,
            timestamp_type: TimestampType::CreateTime,
            producer_id: 8,
            producer_epoch: 1,
            base_sequence: base_offset as i32,
        }
    }

    fn rows(offsets: std::ops::Range<i64>) -> Vec<RecordRow> {
        offsets
            .map(|offset| RecordRow {
                offset,
                timestamp_ms: 1_700_000_000_000 + offset * 10,
                key: (offset % 2 == 0).then(|| Bytes::from(format!("key-{offset}"))),
                value: (offset % 7 != 0).then(|| Bytes::from(vec![offset as u8; 300])),
                headers: vec![
                    ("a".to_owned(), Some(Bytes::from("1"))),
                    ("a".to_owned(), None),
                ][..(offset % 3) as usize]
                    .to_vec(),
            })
            .collect()
    }

    const ALL_CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Ten batches of ten records at offsets 0..100, all codecs.
    fn segment() -> (Vec<u8>, Vec<(BatchMeta, Vec<RecordRow>)>) {
        segment_with(&ALL_CODECS, rows)
    }

    /// Records that all encode to the same size.
    fn uniform_rows(offsets: std::ops::Range<i64>) -> Vec<RecordRow> {
        offsets
            .map(|offset| RecordRow {
                offset,
                timestamp_ms: 1_700_000_000_000 + offset * 10,
                key: Some(Bytes::from(format!("key-{offset:04}"))),
                value: Some(Bytes::from(vec![offset as u8; 300])),
                headers: vec![("h".to_owned(), None)],
            })
            .collect()
    }

    /// Ten batches of ten records at offsets 0..100, codecs in turn from `codecs`.
    fn segment_with(
        codecs: &[Compression],
        rows: fn(std::ops::Range<i64>) -> Vec<RecordRow>,
    ) -> (Vec<u8>, Vec<(BatchMeta, Vec<RecordRow>)>) {
        let mut bytes = Vec::new();
        let mut decoded = Vec::new();
        for b in 0..10i64 {
            let meta = meta(b * 10, b * 10 + 9, codecs[b as usize % codecs.len()]);
            let rows = rows(b * 10..b * 10 + 10);
            let batch = records::encode_batch(&meta, &rows).unwrap();
            decoded.push(records::decode_batch(&batch).unwrap());
            bytes.extend(batch);
        }
        (bytes, decoded)
    }

    fn options(row_group_bytes_target: usize) -> EncodeOptions {
        EncodeOptions {
            row_group_bytes_target,
            ..EncodeOptions::new("orders", 3)
        }
    }

    fn sync_index(file: &Bytes) -> FileIndex {
        let metadata = ArrowReaderMetadata::load(file, ArrowReaderOptions::new()).unwrap();
        index_from_metadata(metadata).unwrap()
    }

    fn read_group_sync(file: &Bytes, row_group: usize) -> Vec<Bytes> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file.clone())
            .unwrap()
            .with_row_groups(vec![row_group])
            .with_batch_size(7) // split batches across record batches on purpose
            .build()
            .unwrap();
        let rbs: Vec<RecordBatch> = reader.map(|rb| rb.unwrap()).collect();
        batches_from_record_batches(&rbs).unwrap()
    }

    fn read_all_sync(file: &Bytes, index: &FileIndex) -> Vec<(BatchMeta, Vec<RecordRow>)> {
        let mut rebuilt = Vec::new();
        for row_group in 0..index.row_groups.len() {
            rebuilt.extend(read_group_sync(file, row_group));
        }
        rebuilt
            .iter()
            .map(|b| records::decode_batch(b).unwrap())
            .collect()
    }

    fn ranges(index: &FileIndex) -> Vec<(i64, i64, u64)> {
        index
            .row_groups
            .iter()
            .map(|r| {
                (
                    r.first_batch_base_offset,
                    r.last_batch_last_offset,
                    r.record_count,
                )
            })
            .collect()
    }

    #[test]
    fn row_groups_end_at_batch_boundaries_once_the_target_is_reached() {
        // Equal-sized batches: three per row group with a target just under three batches.
        let (input, decoded) = segment_with(&[Compression::None], uniform_rows);
        let batch_size = input.len() / 10;
        let file = encode_segment(&input, &options(batch_size * 3 - 1)).unwrap();
        assert_eq!(file.base_offset, 0);
        assert_eq!(file.last_offset, 99);
        assert_eq!(file.record_count, 100);
        assert_eq!(file.batch_count, 10);
        assert_eq!(file.batch_bytes, input.len() as u64);
        assert_eq!(file.timestamp_min_ms, 1_700_000_000_000);
        assert_eq!(file.timestamp_max_ms, 1_700_000_000_990);
        let index = sync_index(&file.bytes);
        assert_eq!(
            ranges(&index),
            vec![(0, 29, 30), (30, 59, 30), (60, 89, 30), (90, 99, 10)]
        );
        assert_eq!(index.row_groups[0].timestamp_max_ms, 1_700_000_000_290);
        assert_eq!(read_all_sync(&file.bytes, &index), decoded);
        // Exactly three batches' worth also cuts after the third.
        let file = encode_segment(&input, &options(batch_size * 3)).unwrap();
        assert_eq!(sync_index(&file.bytes).row_groups.len(), 4);
        // One byte more needs a fourth batch.
        let file = encode_segment(&input, &options(batch_size * 3 + 1)).unwrap();
        assert_eq!(
            ranges(&sync_index(&file.bytes)),
            vec![(0, 39, 40), (40, 79, 40), (80, 99, 20)]
        );
    }

    #[test]
    fn every_codec_roundtrips_through_the_file() {
        let (input, decoded) = segment();
        let sizes: Vec<usize> = batch::batches(&input).map(|b| b.unwrap().1.len()).collect();
        let target = sizes.iter().sum::<usize>() / 4;
        let file = encode_segment(&input, &options(target)).unwrap();
        let index = sync_index(&file.bytes);
        // The cut points the target implies, batch by batch.
        let mut expected = Vec::new();
        let (mut start, mut buffered) = (0i64, 0usize);
        for (i, size) in sizes.iter().enumerate() {
            buffered += size;
            let last = i as i64 * 10 + 9;
            if buffered >= target || i == sizes.len() - 1 {
                expected.push((start, last, (last - start + 1) as u64));
                start = last + 1;
                buffered = 0;
            }
        }
        assert!(expected.len() > 1);
        assert_eq!(ranges(&index), expected);
        assert_eq!(read_all_sync(&file.bytes, &index), decoded);
    }

    #[test]
    fn one_row_group_when_the_target_is_large() {
        let (input, _) = segment();
        let file = encode_segment(&input, &options(ROW_GROUP_BYTES_TARGET_DEFAULT)).unwrap();
        let index = sync_index(&file.bytes);
        assert_eq!(index.row_groups.len(), 1);
        assert_eq!(index.row_groups[0].record_count, 100);
        // A target of one byte: one row group per batch.
        let file = encode_segment(&input, &options(1)).unwrap();
        assert_eq!(sync_index(&file.bytes).row_groups.len(), 10);
    }

    #[test]
    fn row_group_chunks_serve_only_what_was_fetched() {
        let chunks = RowGroupChunks {
            chunks: vec![
                (4, Bytes::from_static(b"abcd")),
                (10, Bytes::from_static(b"xy")),
            ],
            end_bytes: 12,
        };
        assert_eq!(chunks.len(), 12);
        assert_eq!(chunks.get_bytes(5, 3).unwrap(), Bytes::from_static(b"bcd"));
        assert_eq!(chunks.get_bytes(10, 2).unwrap(), Bytes::from_static(b"xy"));
        assert_eq!(chunks.get_bytes(0, 0).unwrap(), Bytes::new());
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut chunks.get_read(6).unwrap(), &mut rest).unwrap();
        assert_eq!(rest, b"cd");
        // Outside every chunk, across a chunk's end, past the last one: errors, no panic.
        assert!(chunks.get_bytes(0, 2).is_err());
        assert!(chunks.get_bytes(6, 3).is_err());
        assert!(chunks.get_bytes(7, 4).is_err());
        assert!(chunks.get_bytes(11, usize::MAX).is_err());
        assert!(chunks.get_read(8).is_err());
        assert!(chunks.get_read(12).is_err());
    }

    #[test]
    fn footer_schema_and_metadata() {
        let (input, _) = segment();
        let file = encode_segment(&input, &options(1 << 20)).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file.bytes.clone()).unwrap();
        let names: Vec<&str> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, COLUMN_NAMES);
        check_schema(builder.schema()).unwrap();
        let file_metadata = builder.metadata().file_metadata();
        let kv: Vec<(String, Option<String>)> = file_metadata
            .key_value_metadata()
            .unwrap()
            .iter()
            .filter(|kv| kv.key.starts_with("strata."))
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        assert_eq!(
            kv,
            vec![
                (FORMAT_VERSION_KEY.to_owned(), Some("1".to_owned())),
                (TOPIC_KEY.to_owned(), Some("orders".to_owned())),
                (PARTITION_KEY.to_owned(), Some("3".to_owned())),
            ]
        );
        // zstd only for the record bytes; offsets and timestamps delta-encoded; no
        // dictionary for values; the per-batch columns dictionary-encoded.
        let zstd: Vec<String> = zstd_leaf_paths().iter().map(ColumnPath::string).collect();
        assert_eq!(
            zstd,
            [
                "key",
                "value",
                "headers.list.element.key",
                "headers.list.element.value"
            ]
        );
        let chunks = builder.metadata().row_group(0).columns();
        assert_eq!(chunks.len(), 15);
        for chunk in chunks {
            let path = chunk.column_path().string();
            let encodings: Vec<Encoding> = chunk.encodings().collect();
            let zstd_expected = zstd.contains(&path);
            assert_eq!(
                matches!(chunk.compression(), ParquetCompression::ZSTD(_)),
                zstd_expected,
                "{path}"
            );
            if !zstd_expected {
                assert_eq!(
                    chunk.compression(),
                    ParquetCompression::UNCOMPRESSED,
                    "{path}"
                );
            }
            match path.as_str() {
                KAFKA_OFFSET | KAFKA_TIMESTAMP => {
                    assert!(encodings.contains(&Encoding::DELTA_BINARY_PACKED), "{path}");
                    assert!(chunk.dictionary_page_offset().is_none(), "{path}");
                }
                "value" => assert!(chunk.dictionary_page_offset().is_none(), "{path}"),
                "producer_id" | BATCH_BASE_OFFSET | "compression" => {
                    assert!(encodings.contains(&Encoding::RLE_DICTIONARY), "{path}")
                }
                _ => {}
            }
        }
        // The partition column holds the partition.
        let rb = builder.build().unwrap().next().unwrap().unwrap();
        let partitions: &Int32Array = column(&rb, "kafka_partition").unwrap();
        assert!(partitions.iter().all(|p| p == Some(3)));
    }

    #[test]
    fn empty_inputs_are_refused_and_empty_batches_skipped() {
        assert!(matches!(
            encode_segment(&[], &options(1)),
            Err(TierCodecError::EmptySegment)
        ));
        let empty = records::encode_batch(&meta(0, 4, Compression::None), &[]).unwrap();
        assert!(matches!(
            encode_segment(&empty, &options(1)),
            Err(TierCodecError::EmptySegment)
        ));
        let full = records::encode_batch(&meta(5, 9, Compression::Lz4), &rows(5..10)).unwrap();
        let empty_tail = records::encode_batch(&meta(10, 19, Compression::None), &[]).unwrap();
        let mut input = empty.clone();
        input.extend(&full);
        input.extend(&empty_tail);
        let file = encode_segment(&input, &options(1)).unwrap();
        assert_eq!((file.base_offset, file.last_offset), (0, 19));
        assert_eq!((file.batch_count, file.record_count), (1, 5));
        assert_eq!(file.batch_bytes, input.len() as u64);
        let index = sync_index(&file.bytes);
        assert_eq!(index.row_groups.len(), 1);
        assert_eq!(
            (
                index.row_groups[0].first_batch_base_offset,
                index.row_groups[0].last_batch_last_offset
            ),
            (5, 9)
        );
        assert_eq!(read_group_sync(&file.bytes, 0), vec![Bytes::from(full)]);
    }

    #[test]
    fn bad_segments_are_refused() {
        let first = records::encode_batch(&meta(10, 19, Compression::None), &rows(10..20)).unwrap();
        let overlapping =
            records::encode_batch(&meta(19, 25, Compression::None), &rows(19..26)).unwrap();
        let mut input = first.clone();
        input.extend(&overlapping);
        assert!(matches!(
            encode_segment(&input, &options(1)),
            Err(TierCodecError::InvalidSegment(_))
        ));
        // A torn tail.
        let torn = &first[..first.len() - 3];
        assert!(matches!(
            encode_segment(torn, &options(1)),
            Err(TierCodecError::InvalidSegment(_))
        ));
        // A corrupt batch.
        let mut corrupt = first.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x10;
        assert!(matches!(
            encode_segment(&corrupt, &options(1)),
            Err(TierCodecError::Record {
                base_offset: 10,
                source: RecordError::Batch(crate::batch::BatchError::CrcMismatch { .. })
            })
        ));
        // A batch from the log's own builder is accepted as is.
        let spec = BatchSpec {
            base_offset: 20,
            ..BatchSpec::new(0, vec![b"x".to_vec(); 3])
        }
        .encode();
        let mut input = first;
        input.extend(&spec);
        let file = encode_segment(&input, &options(1)).unwrap();
        assert_eq!(read_group_sync(&file.bytes, 1), vec![Bytes::from(spec)]);
    }

    #[test]
    fn foreign_or_inconsistent_files_are_refused() {
        // A Parquet file with another schema.
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let rb = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])
            .unwrap();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
        writer.write(&rb).unwrap();
        let foreign = Bytes::from(writer.into_inner().unwrap());
        let metadata = ArrowReaderMetadata::load(&foreign, ArrowReaderOptions::new()).unwrap();
        assert!(matches!(
            index_from_metadata(metadata),
            Err(TierCodecError::InvalidFile(_))
        ));
        assert!(matches!(
            batches_from_record_batch(&rb),
            Err(TierCodecError::InvalidFile(_))
        ));

        // Right schema, but rows of one batch disagree on the batch fields.
        let mut columns = RowGroupColumns::with_capacity(0, 0);
        push_batch(&mut columns, &meta(0, 1, Compression::None), rows(0..1));
        push_batch(
            &mut columns,
            &BatchMeta {
                producer_epoch: 9,
                ..meta(0, 1, Compression::None)
            },
            rows(1..2),
        );
        let rb = columns
            .take_record_batch(&segment_schema(), 0, 0, 0)
            .unwrap();
        assert!(matches!(
            batches_from_record_batch(&rb),
            Err(TierCodecError::InvalidFile(_))
        ));
        // Offsets going backwards.
        let mut columns = RowGroupColumns::with_capacity(0, 0);
        push_batch(&mut columns, &meta(0, 9, Compression::None), rows(5..6));
        push_batch(&mut columns, &meta(0, 9, Compression::None), rows(3..4));
        let rb = columns
            .take_record_batch(&segment_schema(), 0, 0, 0)
            .unwrap();
        assert!(matches!(
            batches_from_record_batch(&rb),
            Err(TierCodecError::InvalidFile(_))
        ));
        // A codec id that does not exist.
        let mut columns = RowGroupColumns::with_capacity(0, 0);
        push_batch(
            &mut columns,
            &meta(0, 0, Compression::Unknown(7)),
            rows(0..1),
        );
        let rb = columns
            .take_record_batch(&segment_schema(), 0, 0, 0)
            .unwrap();
        assert!(matches!(
            batches_from_record_batch(&rb),
            Err(TierCodecError::Record {
                source: RecordError::UnsupportedCompression(7),
                ..
            })
        ));
        // The segment schema without the format version.
        let mut columns = RowGroupColumns::with_capacity(0, 0);
        push_batch(&mut columns, &meta(0, 0, Compression::None), rows(0..1));
        let rb = columns
            .take_record_batch(&segment_schema(), 0, 0, 0)
            .unwrap();
        let mut writer = ArrowWriter::try_new(Vec::new(), segment_schema(), None).unwrap();
        writer.write(&rb).unwrap();
        let unversioned = Bytes::from(writer.into_inner().unwrap());
        let metadata = ArrowReaderMetadata::load(&unversioned, ArrowReaderOptions::new()).unwrap();
        assert!(matches!(
            index_from_metadata(metadata),
            Err(TierCodecError::InvalidFile(message)) if message.contains(FORMAT_VERSION_KEY)
        ));
    }

    #[test]
    fn object_store_errors_stay_store_errors() {
        let error = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        let converted = TierCodecError::from(store_error(error));
        assert!(matches!(
            converted,
            TierCodecError::Store(object_store::Error::NotFound { .. })
        ));
        let other = TierCodecError::from(ParquetError::General("boom".into()));
        assert!(matches!(other, TierCodecError::Parquet(_)));
    }
}
