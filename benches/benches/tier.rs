//! Criterion benchmarks of the tiered-storage codec: a closed segment encoded as a Parquet file
//! (zstd pages), one row group read back into record batches (Parquet decode, then the batches
//! rebuilt from the rows), and the per-batch record codec (`records::decode_batch` /
//! `encode_batch`).
//!
//! `cargo bench -p strata-benches --bench tier`. Record values are fresh random uppercase letters
//! for every record (Kafka's producer-perf-test draws them from the same alphabet): zstd shrinks
//! them to about 60%, so neither the codec's best case (repeated values, which Parquet's
//! dictionary encoding collapses) nor its worst (random bytes) is measured.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use strata_storage::batch::build::BatchSpec;
use strata_storage::tier::parquet_file::{
    self, EncodeOptions, FileIndex, ROW_GROUP_BYTES_TARGET_DEFAULT,
};
use strata_storage::tier::records;

/// Bytes of source batches in the encoded segment (a real segment is 64 MiB to 1 GiB; 8 MiB
/// keeps one encode near 100 ms and holds two default-sized row groups).
const SEGMENT_BYTES_TARGET: usize = 8 * 1024 * 1024;
/// Size of each batch of the segment (what a producer sends with a few hundred KiB per
/// request is cut into; the load tool's 500 x 1 KiB batches are about 0.5 MiB).
const SEGMENT_BATCH_BYTES_TARGET: usize = 64 * 1024;
/// Size of the batch of the record-codec benchmarks.
const CODEC_BATCH_BYTES_TARGET: usize = 1024 * 1024;
/// Record value sizes measured.
const RECORD_SIZES: [usize; 2] = [1024, 100];

/// Random uppercase letters (xorshift64), as in the load tool's payload pool; every record
/// gets fresh letters (the load tool's values are 251 slices of one pool, which Parquet's
/// dictionary encoding collapses to almost nothing: not what real payloads do).
struct Letters {
    state: u64,
}

impl Letters {
    fn new(seed: u64) -> Letters {
        Letters { state: seed | 1 }
    }

    fn take(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                b'A' + (self.state % 26) as u8
            })
            .collect()
    }
}

/// A batch of `count` records of `value_bytes` fresh random letters each, at `base_offset`.
fn batch_at(base_offset: i64, count: usize, value_bytes: usize, letters: &mut Letters) -> Vec<u8> {
    let values = (0..count).map(|_| letters.take(value_bytes)).collect();
    let mut spec = BatchSpec::new(1_700_000_000_000 + base_offset, values);
    spec.base_offset = base_offset;
    spec.encode()
}

/// Records of `value_bytes` that make a batch of about `target` bytes.
fn records_per_batch(value_bytes: usize, target: usize) -> usize {
    // A record costs its value plus about 8 bytes of varints and attributes here.
    (target / (value_bytes + 8)).max(1)
}

/// A closed segment: batches of about [`SEGMENT_BATCH_BYTES_TARGET`] back to back, offsets from
/// 0, about [`SEGMENT_BYTES_TARGET`] bytes in all.
fn segment(value_bytes: usize) -> Vec<u8> {
    let mut letters = Letters::new(0x2545_F491_4F6C_DD1D);
    let per_batch = records_per_batch(value_bytes, SEGMENT_BATCH_BYTES_TARGET);
    let mut out = Vec::with_capacity(SEGMENT_BYTES_TARGET + SEGMENT_BATCH_BYTES_TARGET);
    let mut offset = 0i64;
    while out.len() < SEGMENT_BYTES_TARGET {
        out.extend_from_slice(&batch_at(offset, per_batch, value_bytes, &mut letters));
        offset += per_batch as i64;
    }
    out
}

fn label(value_bytes: usize) -> String {
    if value_bytes.is_multiple_of(1024) {
        format!("{}KiB_records", value_bytes / 1024)
    } else {
        format!("{value_bytes}B_records")
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

/// `encode_segment` of an 8 MiB segment: decode of every batch, Arrow columns, zstd Parquet
/// pages with page statistics, footer. Throughput in bytes of source batches.
fn parquet_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("parquet_encode_8MiB_segment");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    for value_bytes in RECORD_SIZES {
        let segment = segment(value_bytes);
        let options = EncodeOptions::new("bench", 0);
        let file = parquet_file::encode_segment(&segment, &options).expect("encode the segment");
        assert_eq!(file.batch_bytes, segment.len() as u64);
        eprintln!(
            "parquet_encode {}: {} B of batches -> {} B of Parquet ({:.1}%), {} records",
            label(value_bytes),
            segment.len(),
            file.bytes.len(),
            100.0 * file.bytes.len() as f64 / segment.len() as f64,
            file.record_count
        );
        group.throughput(Throughput::Bytes(segment.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(label(value_bytes)),
            &segment,
            |b, segment| {
                b.iter(|| {
                    parquet_file::encode_segment(black_box(segment), &options).expect("encode")
                })
            },
        );
    }
    group.finish();
}

/// The first row group of an encoded segment (about [`ROW_GROUP_BYTES_TARGET_DEFAULT`] of
/// batches) read back:
/// - `read_row_group`: what the broker does on a read-cache miss, over `InMemory` (ranged get of
///   the column chunks, zstd + Parquet decode into Arrow, batches rebuilt, coverage check);
/// - `parquet_decode`: the Parquet + zstd part alone (sync reader over the file bytes);
/// - `rebuild_batches`: the rest, `batches_from_record_batches` of the decoded Arrow batches.
///
/// Throughput in bytes of the rebuilt batches.
fn row_group_decode(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("row_group_decode");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    for value_bytes in RECORD_SIZES {
        let segment = segment(value_bytes);
        let file = parquet_file::encode_segment(&segment, &EncodeOptions::new("bench", 0))
            .expect("encode the segment");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("bench/partition=0/segment.parquet");
        rt.block_on(store.put(&path, PutPayload::from(file.bytes.clone())))
            .expect("put into InMemory");
        let index: FileIndex = rt
            .block_on(parquet_file::load_index(
                &store,
                &path,
                file.bytes.len() as u64,
            ))
            .expect("load the footer");
        assert!(
            index.row_groups.len() >= 2,
            "an 8 MiB segment makes at least two row groups of {ROW_GROUP_BYTES_TARGET_DEFAULT} B"
        );
        let batches = rt
            .block_on(parquet_file::read_row_group(&store, &path, &index, 0))
            .expect("read row group 0");
        let rebuilt_bytes: usize = batches.iter().map(Bytes::len).sum();
        // The rebuilt batches are the source batches, byte for byte.
        assert_eq!(
            batches.concat(),
            segment[..rebuilt_bytes],
            "row group 0 rebuilds the first source batches"
        );
        group.throughput(Throughput::Bytes(rebuilt_bytes as u64));

        let name = label(value_bytes);
        group.bench_function(BenchmarkId::new("read_row_group", &name), |b| {
            b.iter(|| {
                rt.block_on(parquet_file::read_row_group(&store, &path, &index, 0))
                    .expect("read row group 0")
            })
        });

        let decode = |bytes: &Bytes| {
            ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .expect("open the Parquet file")
                .with_row_groups(vec![0])
                .build()
                .expect("build the reader")
                .collect::<Result<Vec<_>, _>>()
                .expect("decode row group 0")
        };
        group.bench_function(BenchmarkId::new("parquet_decode", &name), |b| {
            b.iter(|| decode(black_box(&file.bytes)))
        });

        let record_batches = decode(&file.bytes);
        group.bench_function(BenchmarkId::new("rebuild_batches", &name), |b| {
            b.iter(|| {
                parquet_file::batches_from_record_batches(black_box(&record_batches))
                    .expect("rebuild")
            })
        });
    }
    group.finish();
}

/// `records::decode_batch` (framing, CRC, every record parsed) and `records::encode_batch`
/// (records written, CRC) of an uncompressed batch of about 1 MiB.
fn record_codec(c: &mut Criterion) {
    let mut letters = Letters::new(0x9E37_79B9_7F4A_7C15);
    let mut group = c.benchmark_group("record_codec_1MiB");
    for value_bytes in RECORD_SIZES {
        let count = records_per_batch(value_bytes, CODEC_BATCH_BYTES_TARGET);
        let batch = batch_at(1_000, count, value_bytes, &mut letters);
        let (meta, rows) = records::decode_batch(&batch).expect("decode");
        assert_eq!(rows.len(), count);
        assert_eq!(
            records::encode_batch(&meta, &rows).expect("encode"),
            batch,
            "encode_batch rebuilds the batch byte for byte"
        );
        group.throughput(Throughput::Bytes(batch.len() as u64));
        let name = label(value_bytes);
        group.bench_function(BenchmarkId::new("decode_batch", &name), |b| {
            b.iter(|| records::decode_batch(black_box(&batch)).expect("decode"))
        });
        group.bench_function(BenchmarkId::new("encode_batch", &name), |b| {
            b.iter(|| records::encode_batch(black_box(&meta), black_box(&rows)).expect("encode"))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = parquet_encode, row_group_decode, record_codec
}
criterion_main!(benches);
