//! Segments through the remote tier's Parquet format and back: random record sets are encoded
//! with `encode_segment`, stored in an in-memory object store, indexed with `load_index`, read
//! row group by row group with `read_row_group`, and every rebuilt batch must decode to exactly
//! the original batch's rows and batch fields.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use arrow_schema::{DataType, Field, Fields, TimeUnit};
use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;
use strata_storage::batch::build::BatchSpec;
use strata_storage::batch::{self, Compression, TimestampType};
use strata_storage::tier::parquet_file::{
    encode_segment, load_index, read_row_group, EncodeOptions, SegmentFile, TierCodecError,
};
use strata_storage::tier::records::{decode_batch, encode_batch, BatchMeta, RecordRow};

/// Runs a future to completion on this thread. The in-memory store never waits on I/O, so a
/// thread-parking waker is all it takes (no runtime: works in normal and madsim builds).
fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// One batch to generate.
#[derive(Debug, Clone)]
struct BatchPlan {
    compression: Compression,
    timestamp_type: TimestampType,
    producer: Option<(i64, i16, i32)>,
    leader_epoch: i32,
    /// Offset slots of the batch; `present[i]` says whether slot i still holds a record (false:
    /// removed by compaction). At least one is present.
    present: Vec<bool>,
    records: Vec<RecordPlan>,
    base_timestamp: i64,
    /// Build this batch with the log's own test builder (uncompressed, values only).
    from_log_builder: bool,
}

#[derive(Debug, Clone)]
struct RecordPlan {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_delta: i64,
}

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd),
    ]
}

fn record_plan() -> impl Strategy<Value = RecordPlan> {
    let bytes = |max: usize| proptest::collection::vec(any::<u8>(), 0..max);
    let header_key = prop_oneof![
        Just("dup".to_owned()),
        Just("trace-id".to_owned()),
        Just(String::new()),
        Just("clé".to_owned()),
        "[a-z]{1,8}",
    ];
    let header = (header_key, proptest::option::of(bytes(12)));
    (
        proptest::option::weighted(0.7, bytes(24)),
        proptest::option::weighted(0.85, bytes(200)),
        proptest::collection::vec(header, 0..5),
        -1_000i64..1_000,
    )
        .prop_map(|(key, value, headers, timestamp_delta)| RecordPlan {
            key,
            value,
            headers,
            timestamp_delta,
        })
}

fn batch_plan() -> impl Strategy<Value = BatchPlan> {
    (
        codec(),
        prop_oneof![
            3 => Just(TimestampType::CreateTime),
            1 => Just(TimestampType::LogAppendTime),
        ],
        proptest::option::of((0i64..1 << 40, 0i16..100, 0i32..i32::MAX - 100)),
        -1i32..50,
        proptest::collection::vec(proptest::bool::weighted(0.8), 1..12),
        proptest::collection::vec(record_plan(), 12),
        0i64..2_000_000_000_000,
        proptest::bool::weighted(0.15),
    )
        .prop_map(
            |(
                compression,
                timestamp_type,
                producer,
                leader_epoch,
                mut present,
                records,
                base_timestamp,
                from_log_builder,
            )| {
                if !present.iter().any(|p| *p) {
                    present[0] = true;
                }
                BatchPlan {
                    compression,
                    timestamp_type,
                    producer,
                    leader_epoch,
                    present,
                    records,
                    base_timestamp,
                    from_log_builder,
                }
            },
        )
}

/// Builds the batch a plan describes at `base_offset`.
fn build_batch(plan: &BatchPlan, base_offset: i64) -> Vec<u8> {
    if plan.from_log_builder {
        let values = plan
            .records
            .iter()
            .take(plan.present.len())
            .map(|r| r.value.clone().unwrap_or_default())
            .collect();
        let mut spec = BatchSpec {
            base_offset,
            ..BatchSpec::new(plan.base_timestamp, values)
        };
        if let Some((id, epoch, sequence)) = plan.producer {
            spec = spec.producer(id, epoch, sequence);
        }
        let mut bytes = spec.encode();
        batch::set_partition_leader_epoch(&mut bytes, plan.leader_epoch).unwrap();
        return bytes;
    }
    let (producer_id, producer_epoch, base_sequence) = plan.producer.unwrap_or((-1, -1, -1));
    let meta = BatchMeta {
        base_offset,
        last_offset: base_offset + plan.present.len() as i64 - 1,
        partition_leader_epoch: plan.leader_epoch,
        compression: plan.compression,
        timestamp_type: plan.timestamp_type,
        producer_id,
        producer_epoch,
        base_sequence,
    };
    let log_append_time = plan.base_timestamp + 5_000;
    let rows: Vec<RecordRow> = plan
        .present
        .iter()
        .enumerate()
        .filter(|(_, present)| **present)
        .map(|(slot, _)| {
            let record = &plan.records[slot];
            RecordRow {
                offset: base_offset + slot as i64,
                timestamp_ms: match plan.timestamp_type {
                    TimestampType::CreateTime => plan.base_timestamp + record.timestamp_delta,
                    TimestampType::LogAppendTime => log_append_time,
                },
                key: record.key.clone().map(Bytes::from),
                value: record.value.clone().map(Bytes::from),
                headers: record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().map(Bytes::from)))
                    .collect(),
            }
        })
        .collect();
    encode_batch(&meta, &rows).unwrap()
}

/// Stores a file in a fresh in-memory store.
fn store_file(file: &SegmentFile) -> (Arc<dyn ObjectStore>, Path) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let path = Path::from("orders/partition=0/segment.parquet");
    block_on(store.put(&path, PutPayload::from(file.bytes.clone()))).unwrap();
    (store, path)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn segments_roundtrip_through_parquet_and_the_object_store(
        plans in proptest::collection::vec(batch_plan(), 1..8),
        first_offset in 0i64..1 << 50,
        row_group_bytes_target in 1usize..3_000,
    ) {
        let mut input = Vec::new();
        let mut originals = Vec::new();
        let mut next_offset = first_offset;
        for plan in &plans {
            let bytes = build_batch(plan, next_offset);
            let decoded = decode_batch(&bytes).unwrap();
            next_offset = decoded.0.last_offset + 1;
            originals.push(decoded);
            input.extend(bytes);
        }
        let options = EncodeOptions {
            row_group_bytes_target,
            topic: "orders".to_owned(),
            partition: 0,
        };
        let file = encode_segment(&input, &options).unwrap();
        let all_rows: Vec<&RecordRow> = originals.iter().flat_map(|(_, rows)| rows).collect();
        prop_assert_eq!(file.base_offset, first_offset);
        prop_assert_eq!(file.last_offset, next_offset - 1);
        prop_assert_eq!(file.record_count, all_rows.len() as u64);
        prop_assert_eq!(file.batch_count, originals.len() as u64);
        prop_assert_eq!(file.batch_bytes, input.len() as u64);
        prop_assert_eq!(
            file.timestamp_min_ms,
            all_rows.iter().map(|r| r.timestamp_ms).min().unwrap()
        );
        prop_assert_eq!(
            file.timestamp_max_ms,
            all_rows.iter().map(|r| r.timestamp_ms).max().unwrap()
        );

        let (store, path) = store_file(&file);
        let index = block_on(load_index(&store, &path, file.bytes.len() as u64)).unwrap();
        prop_assert!(!index.row_groups.is_empty());
        prop_assert_eq!(index.row_groups[0].first_batch_base_offset, file.base_offset);
        prop_assert_eq!(
            index.row_groups.last().unwrap().last_batch_last_offset,
            file.last_offset
        );
        let mut rebuilt = Vec::new();
        for (i, range) in index.row_groups.iter().enumerate() {
            if i > 0 {
                // Sorted and contiguous (dense input, no empty batches).
                prop_assert_eq!(
                    range.first_batch_base_offset,
                    index.row_groups[i - 1].last_batch_last_offset + 1
                );
            }
            let batches = block_on(read_row_group(&store, &path, &index, i)).unwrap();
            prop_assert!(!batches.is_empty());
            let decoded: Vec<_> = batches.iter().map(|b| decode_batch(b).unwrap()).collect();
            prop_assert_eq!(decoded[0].0.base_offset, range.first_batch_base_offset);
            prop_assert_eq!(
                decoded.last().unwrap().0.last_offset,
                range.last_batch_last_offset
            );
            let rows: Vec<&RecordRow> = decoded.iter().flat_map(|(_, rows)| rows).collect();
            prop_assert_eq!(range.record_count, rows.len() as u64);
            prop_assert_eq!(
                range.timestamp_max_ms,
                rows.iter().map(|r| r.timestamp_ms).max().unwrap()
            );
            for bytes in &batches {
                // Valid framing and CRC, as a consumer would check.
                let header = batch::BatchHeader::parse(bytes).unwrap();
                prop_assert_eq!(header.size_bytes(), bytes.len() as u64);
                batch::verify_crc(bytes).unwrap();
            }
            rebuilt.extend(decoded);
        }
        // Every batch, with every field, exactly once and in order.
        prop_assert_eq!(rebuilt, originals);
    }
}

#[test]
fn plain_parquet_readers_see_the_documented_schema() {
    let mut input = Vec::new();
    for (i, codec) in [Compression::None, Compression::Zstd]
        .into_iter()
        .enumerate()
    {
        let base = i as i64 * 10;
        let meta = BatchMeta {
            base_offset: base,
            last_offset: base + 9,
            partition_leader_epoch: 2,
            compression: codec,
            timestamp_type: TimestampType::CreateTime,
            producer_id: 77,
            producer_epoch: 3,
            base_sequence: base as i32,
        };
        let rows: Vec<RecordRow> = (base..base + 10)
            .map(|offset| RecordRow {
                offset,
                timestamp_ms: 1_000 + offset,
                key: None,
                value: Some(Bytes::from(format!("v{offset}"))),
                headers: vec![("h".to_owned(), Some(Bytes::from("x")))],
            })
            .collect();
        input.extend(encode_batch(&meta, &rows).unwrap());
    }
    let file = encode_segment(
        &input,
        &EncodeOptions {
            row_group_bytes_target: 1 << 20,
            topic: "t".to_owned(),
            partition: 4,
        },
    )
    .unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file.bytes.clone()).unwrap();
    let header_struct = DataType::Struct(Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ]));
    let expected: Vec<(&str, DataType, bool)> = vec![
        ("kafka_partition", DataType::Int32, false),
        ("kafka_offset", DataType::Int64, false),
        (
            "kafka_timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        ("key", DataType::Binary, true),
        ("value", DataType::Binary, true),
        (
            "headers",
            DataType::List(Arc::new(Field::new("element", header_struct, false))),
            false,
        ),
        ("producer_id", DataType::Int64, false),
        ("producer_epoch", DataType::Int16, false),
        ("base_sequence", DataType::Int32, false),
        ("timestamp_type", DataType::Int8, false),
        ("leader_epoch", DataType::Int32, false),
        ("batch_base_offset", DataType::Int64, false),
        ("batch_last_offset", DataType::Int64, false),
        ("compression", DataType::Int8, false),
    ];
    let actual: Vec<(&str, DataType, bool)> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
        .collect();
    assert_eq!(actual, expected);
    let rows: usize = builder
        .build()
        .unwrap()
        .map(|rb| rb.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 20);
}

#[test]
fn store_failures_and_damaged_files_are_errors() {
    let bytes = BatchSpec::new(5, vec![b"a".to_vec(), b"b".to_vec()]).encode();
    let file = encode_segment(&bytes, &EncodeOptions::new("t", 0)).unwrap();
    let (store, path) = store_file(&file);
    let size = file.bytes.len() as u64;

    // Missing object: an object-store error, not a codec error.
    let missing = block_on(load_index(&store, &Path::from("nope.parquet"), size));
    assert!(matches!(
        missing,
        Err(TierCodecError::Store(object_store::Error::NotFound { .. }))
    ));
    // A wrong size (the footer is looked for in the wrong place).
    assert!(block_on(load_index(&store, &path, size - 1)).is_err());
    assert!(block_on(load_index(&store, &path, 4)).is_err());
    // A truncated upload.
    let short: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let half = file.bytes.slice(..file.bytes.len() / 2);
    block_on(short.put(&path, PutPayload::from(half.clone()))).unwrap();
    assert!(block_on(load_index(&short, &path, half.len() as u64)).is_err());
    // The index of a good file, then a row group that does not exist.
    let index = block_on(load_index(&store, &path, size)).unwrap();
    assert_eq!(index.row_groups.len(), 1);
    assert!(matches!(
        block_on(read_row_group(&store, &path, &index, 1)),
        Err(TierCodecError::InvalidFile(_))
    ));
    // The object deleted after its index was loaded.
    block_on(store.delete(&path)).unwrap();
    assert!(matches!(
        block_on(read_row_group(&store, &path, &index, 0)),
        Err(TierCodecError::Store(object_store::Error::NotFound { .. }))
    ));
}
