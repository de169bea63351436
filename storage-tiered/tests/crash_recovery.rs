//! Property test: random appends, rolls, flushes, partial syncs, crashes (with and without torn
//! writes) and reopens of a `PartitionLog` on `MemDisk`. After every recovery:
//!
//! - every offset that was durable before the crash is still readable, with identical bytes;
//! - whatever else survived is identical to what was appended (no invented or altered data);
//! - offsets are dense from `log_start_offset` to `log_end_offset`;
//! - the log accepts new appends at `log_end_offset`;
//! - between operations, the open files are at most the handle cache's capacity, the active
//!   segment and the closed segments with unsynced bytes.

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use strata_storage::batch::batches;
use strata_storage::batch::build::simple_batch;
use strata_storage::{Clock, LogConfig, ManualClock, MemDisk, PartitionLog, SegmentHandles};

const T0: i64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_bytes: usize,
    },
    Flush,
    /// Syncs a subset of the files of the sync target without marking anything durable.
    PartialSync {
        mask: u8,
    },
    Crash {
        tear: Option<u64>,
    },
    Reopen,
    AdvanceClock {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6, 0usize..400).prop_map(|(records, value_bytes)| Op::Append { records, value_bytes }),
        2 => Just(Op::Flush),
        1 => any::<u8>().prop_map(|mask| Op::PartialSync { mask }),
        2 => proptest::option::of(any::<u64>()).prop_map(|tear| Op::Crash { tear }),
        1 => Just(Op::Reopen),
        1 => (0u64..2000).prop_map(|ms| Op::AdvanceClock { ms }),
    ]
}

struct Batch {
    base: i64,
    last: i64,
    bytes: Vec<u8>,
}

fn open(disk: &MemDisk, clock: &ManualClock, config: &LogConfig) -> PartitionLog {
    PartitionLog::open(
        Arc::new(disk.clone()),
        Arc::new(clock.clone()),
        PathBuf::from("/data/t-0"),
        config.clone(),
    )
    .expect("recovery must succeed after a crash")
}

/// Checks the recovered log against the model; trims the model to what survived.
fn check_recovered(log: &PartitionLog, model: &mut Vec<Batch>, durable_end: i64) {
    let end = log.log_end_offset();
    assert!(
        end >= durable_end,
        "log end {end} lost durable offsets below {durable_end}"
    );
    assert_eq!(log.durable_end_offset(), end, "open makes the log durable");
    assert_eq!(log.log_start_offset(), 0);
    // Whatever survived is identical to the model, batch for batch.
    let mut survived = 0;
    for batch in model.iter() {
        if batch.base >= end {
            break;
        }
        assert!(
            batch.last < end,
            "log end {end} inside a batch [{}, {}]",
            batch.base,
            batch.last
        );
        for offset in [batch.base, batch.last] {
            let read = log.read(offset, 1, i64::MAX).expect("read");
            assert_eq!(
                &read[..],
                &batch.bytes[..],
                "batch at offset {offset} differs after recovery"
            );
        }
        survived += 1;
    }
    model.truncate(survived);
    assert_eq!(
        model.last().map_or(0, |b| b.last + 1),
        end,
        "the log holds offsets that were never appended"
    );
    // Dense offsets, reading everything in chunks.
    let mut offset = log.log_start_offset();
    while offset < end {
        let bytes = log.read(offset, 700, i64::MAX).expect("read");
        assert!(!bytes.is_empty());
        for item in batches(&bytes) {
            let (header, _) = item.expect("valid batch");
            assert_eq!(header.base_offset, offset, "offsets are dense");
            offset = header.last_offset() + 1;
        }
    }
    assert_eq!(offset, end);
}

/// Closed, durable segments hold no file open beyond the handle cache's capacity.
fn check_open_files(disk: &MemDisk, log: &PartitionLog, config: &LogConfig) {
    let pinned_max = log.sync_target().files.len() + 1;
    let open_max = config.segment_handles.open_max() + pinned_max;
    assert!(
        disk.open_file_count() <= open_max,
        "{} files open, at most {open_max} expected ({} segments)",
        disk.open_file_count(),
        log.segment_count()
    );
}

fn run(config: LogConfig, ops: Vec<Op>) {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = Some(open(&disk, &clock, &config));
    let mut model: Vec<Batch> = Vec::new();
    // Every offset below it was flushed (and so must survive any crash).
    let mut durable_end = 0i64;
    let mut appended = 0u64;
    for op in ops {
        let current = log.as_mut().expect("log open");
        match op {
            Op::Append {
                records,
                value_bytes,
            } => {
                let mut bytes = simple_batch(records, value_bytes, clock.now_ms());
                let outcome = current.append(&bytes, 1).expect("append");
                let expected = model.last().map_or(0, |b| b.last + 1);
                assert_eq!(outcome.base_offset, expected, "appends continue at the end");
                assert_eq!(outcome.last_offset, expected + records as i64 - 1);
                // The log stores the batch with the offset and leader epoch it assigned.
                strata_storage::batch::build::stamp(&mut bytes, outcome.base_offset, 1);
                model.push(Batch {
                    base: outcome.base_offset,
                    last: outcome.last_offset,
                    bytes,
                });
                appended += 1;
            }
            Op::Flush => {
                current.flush().expect("flush");
                durable_end = current.log_end_offset();
                assert_eq!(current.durable_end_offset(), durable_end);
            }
            Op::PartialSync { mask } => {
                let target = current.sync_target();
                for (i, file) in target.files.iter().enumerate() {
                    if mask & (1 << (i % 8)) != 0 {
                        file.sync().expect("sync");
                    }
                }
            }
            Op::Crash { tear } => {
                drop(log.take());
                disk.crash(tear);
                let reopened = open(&disk, &clock, &config);
                check_recovered(&reopened, &mut model, durable_end);
                durable_end = reopened.log_end_offset();
                log = Some(reopened);
            }
            Op::Reopen => {
                log.take().expect("log open").close().expect("close");
                let reopened = open(&disk, &clock, &config);
                let end = reopened.log_end_offset();
                assert_eq!(end, model.last().map_or(0, |b| b.last + 1));
                check_recovered(&reopened, &mut model, end);
                durable_end = end;
                log = Some(reopened);
            }
            Op::AdvanceClock { ms } => {
                clock.advance_ms(ms);
                current.roll_if_due().expect("roll");
            }
        }
        check_open_files(&disk, log.as_ref().expect("log open"), &config);
    }
    // A final crash and recovery, then one more append.
    drop(log.take());
    disk.crash(Some(appended));
    let mut reopened = open(&disk, &clock, &config);
    check_recovered(&reopened, &mut model, durable_end);
    let end = reopened.log_end_offset();
    let outcome = reopened
        .append(&simple_batch(2, 10, T0), 1)
        .expect("append after recovery");
    assert_eq!(outcome.base_offset, end);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn durable_offsets_survive_crashes(
        segment_bytes in 200u64..4000,
        index_interval_bytes in 0u64..1000,
        segment_ms in 500i64..5000,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let config = LogConfig {
            segment_bytes,
            segment_ms,
            index_interval_bytes,
            retention_ms: -1,
            retention_bytes: -1,
            segment_jitter_ms: 0,
            // Tiny, so that reads and recoveries reopen evicted segment files.
            segment_handles: Arc::new(SegmentHandles::new(2)),
        };
        run(config, ops);
    }
}

/// A fixed scenario that tears a multi-sector unsynced tail at many seeds.
#[test]
fn torn_tails_at_many_seeds() {
    for seed in 0..200u64 {
        let ops = vec![
            Op::Append {
                records: 3,
                value_bytes: 300,
            },
            Op::Flush,
            Op::Append {
                records: 5,
                value_bytes: 333,
            },
            Op::Append {
                records: 1,
                value_bytes: 10,
            },
            Op::Append {
                records: 4,
                value_bytes: 390,
            },
            Op::PartialSync { mask: 0b10 },
            Op::Crash { tear: Some(seed) },
            Op::Append {
                records: 2,
                value_bytes: 100,
            },
        ];
        run(
            LogConfig {
                segment_bytes: 1500,
                index_interval_bytes: 100,
                ..LogConfig::default()
            },
            ops,
        );
    }
}
