//! Property test: reads, timestamp lookups and retention of a `PartitionLog` agree with a simple
//! model (a list of batches), across rolls, reopens (indexes rebuilt by scanning) and retention.

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use strata_storage::batch::batches;
use strata_storage::batch::build::simple_batch;
use strata_storage::{LogConfig, ManualClock, MemDisk, PartitionLog};

const T0: i64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_bytes: usize,
        ts_offset: i64,
    },
    Reopen,
    RetainBytes {
        keep: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..5, 0usize..300, -5000i64..5000).prop_map(|(records, value_bytes, ts_offset)| {
            Op::Append { records, value_bytes, ts_offset }
        }),
        1 => Just(Op::Reopen),
        1 => (0u64..5000).prop_map(|keep| Op::RetainBytes { keep }),
    ]
}

struct Batch {
    base: i64,
    last: i64,
    max_ts: i64,
    bytes: Vec<u8>,
}

fn check(log: &PartitionLog, model: &[Batch], probes: &[i64]) {
    let start = model.first().map_or(log.log_end_offset(), |b| b.base);
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(
        log.log_end_offset(),
        model.last().map_or(start, |b| b.last + 1)
    );
    assert_eq!(
        log.size_bytes(),
        model.iter().map(|b| b.bytes.len() as u64).sum::<u64>()
    );
    for batch in model {
        for offset in [batch.base, (batch.base + batch.last) / 2, batch.last] {
            let read = log.read(offset, 1, i64::MAX).unwrap();
            assert_eq!(&read[..], &batch.bytes[..], "offset {offset}");
        }
    }
    // A read of a few batches returns exactly the model's consecutive batches.
    if let Some(first) = model.first() {
        let read = log.read(first.base, 1000, i64::MAX).unwrap();
        let mut expected = Vec::new();
        for batch in model {
            if !expected.is_empty() && expected.len() + batch.bytes.len() > 1000 {
                break;
            }
            expected.extend_from_slice(&batch.bytes);
            // One segment per read: stop where the log would.
            if read.len() == expected.len() {
                break;
            }
        }
        assert_eq!(&read[..], &expected[..]);
        assert!(batches(&read).all(|b| b.is_ok()));
    }
    for &ts in probes {
        let expected = model
            .iter()
            .find(|b| b.max_ts >= ts)
            .map(|b| (b.base, b.max_ts));
        assert_eq!(log.offset_for_timestamp(ts).unwrap(), expected, "ts {ts}");
    }
}

fn run(config: LogConfig, ops: Vec<Op>) {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let open = |config: &LogConfig| {
        PartitionLog::open(
            Arc::new(disk.clone()),
            Arc::new(clock.clone()),
            PathBuf::from("/d/p-0"),
            config.clone(),
        )
        .unwrap()
    };
    let mut log = open(&config);
    let mut model: Vec<Batch> = Vec::new();
    let mut probes = vec![i64::MIN, T0 - 6000, T0, T0 + 6000];
    for op in ops {
        match op {
            Op::Append {
                records,
                value_bytes,
                ts_offset,
            } => {
                let ts = T0 + ts_offset;
                let mut bytes = simple_batch(records, value_bytes, ts);
                let outcome = log.append(&bytes, 0).unwrap();
                strata_storage::batch::build::stamp(&mut bytes, outcome.base_offset, 0);
                model.push(Batch {
                    base: outcome.base_offset,
                    last: outcome.last_offset,
                    max_ts: ts + records as i64 - 1,
                    bytes,
                });
                probes.extend([ts - 1, ts, ts + records as i64 - 1, ts + records as i64]);
            }
            Op::Reopen => {
                log.close().unwrap();
                log = open(&config);
            }
            Op::RetainBytes { keep } => {
                log.set_config(LogConfig {
                    retention_bytes: keep as i64,
                    ..config.clone()
                });
                let before = log.log_start_offset();
                let deleted = log.enforce_retention().unwrap();
                let after = log.log_start_offset();
                assert_eq!(deleted > 0, after > before);
                model.retain(|b| b.base >= after);
                log.set_config(config.clone());
            }
        }
        check(&log, &model, &probes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        segment_bytes in 300u64..3000,
        index_interval_bytes in 0u64..800,
        ops in proptest::collection::vec(op(), 1..50),
    ) {
        let config = LogConfig {
            segment_bytes,
            index_interval_bytes,
            retention_ms: -1,
            retention_bytes: -1,
            ..LogConfig::default()
        };
        run(config, ops);
    }
}
