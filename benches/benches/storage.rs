//! Criterion benchmarks of the storage hot paths: batch validation, offset assignment + segment
//! append (MemDisk; RealDisk with and without fdatasync), index lookup and fetch assembly.
//!
//! `cargo bench -p strata-benches --bench storage`. RealDisk benchmarks write under
//! `$STRATA_BENCH_DIR` (default: the system temp dir), which must be on the disk to measure.

mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata_storage::batch::{self, build, BatchHeader};
use strata_storage::{Clock, Disk, LogConfig, MemDisk, PartitionLog, RealDisk, SystemClock};

/// Size of the batches of the validation and append benchmarks.
const BATCH_BYTES_TARGET: usize = 16 * 1024;
/// Appends to one log before a fresh log replaces it (bounds memory and disk use: 64 MiB).
const APPENDS_PER_LOG: u64 = 4096;
/// Bytes asked for by the fetch-assembly benchmark.
const FETCH_BYTES: usize = 1024 * 1024;

/// A non-idempotent batch of 100-byte records as close to `target` bytes as whole records allow.
fn batch_of_about(target: usize) -> Vec<u8> {
    let one = build::simple_batch(1, 100, 0).len();
    let two = build::simple_batch(2, 100, 0).len();
    let per_record = two - one;
    let count = (target - (one - per_record)) / per_record;
    build::simple_batch(count.max(1), 100, 1_700_000_000_000)
}

fn bench_dir() -> PathBuf {
    std::env::var_os("STRATA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// A fresh log (and the temp dir holding it, for RealDisk).
fn fresh_log(real: bool) -> (PartitionLog, Option<tempfile::TempDir>) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    if real {
        let dir = tempfile::Builder::new()
            .prefix("strata-bench-")
            .tempdir_in(bench_dir())
            .expect("create a temp dir for the RealDisk benchmark");
        let disk: Arc<dyn Disk> = Arc::new(RealDisk::new());
        let log = PartitionLog::open(disk, clock, dir.path().join("t-0"), LogConfig::default())
            .expect("open a RealDisk log");
        (log, Some(dir))
    } else {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let log = PartitionLog::open(
            disk,
            clock,
            PathBuf::from("/bench/t-0"),
            LogConfig::default(),
        )
        .expect("open a MemDisk log");
        (log, None)
    }
}

fn batch_validation(c: &mut Criterion) {
    let batch = batch_of_about(BATCH_BYTES_TARGET);
    let mut group = c.benchmark_group("batch_validation");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("crc32c_16KiB", |b| {
        b.iter(|| batch::verify_crc(black_box(&batch)).expect("valid CRC"))
    });
    group.bench_function("header_parse_and_crc_16KiB", |b| {
        b.iter(|| {
            let header = BatchHeader::parse(black_box(&batch)).expect("valid header");
            header.check_records_count().expect("plausible count");
            batch::verify_crc(&batch).expect("valid CRC");
            header.last_offset()
        })
    });
    group.finish();
}

/// `PartitionLog::append` of 16 KiB batches (validation, offset assignment, segment and index
/// writes), optionally followed by `flush` (fdatasync).
fn append(c: &mut Criterion) {
    let batch = batch_of_about(BATCH_BYTES_TARGET);
    let mut group = c.benchmark_group("append_16KiB");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    for (name, real, flush) in [
        ("memdisk", false, false),
        ("realdisk", true, false),
        ("realdisk_fdatasync", true, true),
    ] {
        if flush {
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(5));
        }
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                // The batch is appended again and again: append rewrites baseOffset and the
                // leader epoch in place, which the CRC does not cover.
                let records = batch.clone();
                let (mut log, mut dir) = fresh_log(real);
                let mut appended = 0u64;
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if appended == APPENDS_PER_LOG {
                        drop(log);
                        drop(dir);
                        (log, dir) = fresh_log(real);
                        appended = 0;
                    }
                    let started = Instant::now();
                    let outcome = log.append(&records, 0).expect("append");
                    if flush {
                        log.flush().expect("flush");
                    }
                    total += started.elapsed();
                    black_box(outcome);
                    appended += 1;
                }
                total
            })
        });
    }
    group.finish();
}

/// A log filled with `batches` batches of `records_per_batch` 100-byte records.
fn filled_log(
    real: bool,
    batches: usize,
    records_per_batch: usize,
) -> (PartitionLog, Option<tempfile::TempDir>) {
    let (mut log, dir) = fresh_log(real);
    let template = build::simple_batch(records_per_batch, 100, 1_700_000_000_000);
    for _ in 0..batches {
        let records = template.clone();
        log.append(&records, 0).expect("fill the log");
    }
    log.flush().expect("flush the filled log");
    (log, dir)
}

/// A deterministic pseudo-random offset below `end` (xorshift64).
fn next_offset(state: &mut u64, end: i64) -> i64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % end as u64) as i64
}

/// `PartitionLog::read` of one small batch at random offsets: segment lookup, sparse index
/// lookup and the scan from the indexed position (index.interval.bytes = 4096).
fn index_lookup(c: &mut Criterion) {
    let (log, _dir) = filled_log(false, 100_000, 1);
    let end = log.log_end_offset();
    let mut group = c.benchmark_group("index_lookup");
    group.bench_function("read_one_batch_at_random_offset_memdisk", |b| {
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        b.iter(|| {
            let offset = next_offset(&mut state, end);
            log.read(offset, 1, end).expect("read")
        })
    });
    group.finish();
}

/// `PartitionLog::read` of 1 MiB (about 64 batches of 16 KiB) at random offsets.
fn fetch_assembly(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_assembly_1MiB");
    group.throughput(Throughput::Bytes(FETCH_BYTES as u64));
    for (name, real) in [("memdisk", false), ("realdisk_page_cache", true)] {
        let (log, _dir) = filled_log(real, 4096, 160);
        let end = log.log_end_offset();
        group.bench_with_input(BenchmarkId::from_parameter(name), &log, |b, log| {
            let mut state = 0x9E37_79B9_7F4A_7C15_u64;
            b.iter(|| {
                let offset = next_offset(&mut state, end);
                log.read(offset, FETCH_BYTES, end).expect("read")
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = batch_validation, append, index_lookup, fetch_assembly
}
criterion_main!(benches);
