//! Behaviour of `PartitionLog` on the in-memory disk: offsets, reads, rolls, indexes, timestamps,
//! retention, idempotent producers, recovery and disk-full errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_storage::batch::batches;
use strata_storage::batch::build::{simple_batch, stamp, BatchSpec};
use strata_storage::{
    BatchHeader, Clock, Disk, LogConfig, LogError, ManualClock, MemDisk, PartitionLog, RealDisk,
};

const DIR: &str = "/data/topic-0";
const T0: i64 = 1_700_000_000_000;

fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

fn open(disk: &MemDisk, clock: &ManualClock, config: LogConfig) -> Result<PartitionLog, LogError> {
    PartitionLog::open(
        Arc::new(disk.clone()),
        Arc::new(clock.clone()),
        dir(),
        config,
    )
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

/// Appends `batch`, returning the outcome and the batch as written (offsets rewritten).
fn append(log: &mut PartitionLog, mut batch: Vec<u8>) -> (strata_storage::AppendOutcome, Vec<u8>) {
    let outcome = log.append(&batch, 3).expect("append");
    stamp(&mut batch, outcome.base_offset, 3);
    (outcome, batch)
}

fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    batches(bytes).map(|r| r.expect("valid batch").0).collect()
}

/// Reads the batch holding `offset` alone.
fn read_one(log: &PartitionLog, offset: i64) -> Vec<u8> {
    let bytes = log.read(offset, 1, i64::MAX).expect("read");
    let hs = headers(&bytes);
    assert_eq!(hs.len(), 1, "max_bytes 1 returns exactly one batch");
    assert!(hs[0].base_offset <= offset && offset <= hs[0].last_offset());
    bytes.to_vec()
}

fn segment_files(disk: &MemDisk) -> Vec<String> {
    disk.list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect()
}

#[test]
fn appends_get_dense_offsets_and_read_back_at_every_offset() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, small_config()).unwrap();
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), 0);
    let mut written = Vec::new();
    for i in 0..40usize {
        let (outcome, bytes) = append(&mut log, simple_batch(1 + i % 4, 10 + i * 3, T0 + i as i64));
        let expected_base = written
            .last()
            .map(|(o, _): &(strata_storage::AppendOutcome, Vec<u8>)| o.last_offset + 1)
            .unwrap_or(0);
        assert_eq!(outcome.base_offset, expected_base);
        assert_eq!(outcome.last_offset, expected_base + (i % 4) as i64);
        assert!(!outcome.duplicate);
        let h = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(h.base_offset, outcome.base_offset);
        assert_eq!(h.partition_leader_epoch, 3);
        written.push((outcome, bytes));
    }
    assert!(log.segment_count() > 3, "small segments rolled");
    let check = |log: &PartitionLog| {
        for (outcome, bytes) in &written {
            for offset in outcome.base_offset..=outcome.last_offset {
                assert_eq!(&read_one(log, offset), bytes, "offset {offset}");
            }
        }
    };
    check(&log);
    log.close().unwrap();
    let log = open(&disk, &clock, small_config()).unwrap();
    assert_eq!(
        log.log_end_offset(),
        written.last().unwrap().0.last_offset + 1
    );
    check(&log);
}

#[test]
fn read_limits() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
    let mut all = Vec::new();
    for _ in 0..5 {
        let (_, bytes) = append(&mut log, simple_batch(2, 50, T0)); // offsets 0-1, 2-3, ...
        all.extend_from_slice(&bytes);
    }
    let batch_bytes = all.len() / 5;
    // Everything.
    assert_eq!(&log.read(0, usize::MAX, i64::MAX).unwrap()[..], &all[..]);
    // max_bytes: whole batches only, at least one.
    assert_eq!(
        log.read(0, batch_bytes * 2 + 1, i64::MAX).unwrap().len(),
        batch_bytes * 2
    );
    assert_eq!(log.read(3, 0, i64::MAX).unwrap().len(), batch_bytes);
    // end_offset: never a batch ending at or past it.
    assert_eq!(headers(&log.read(0, usize::MAX, 4).unwrap()).len(), 2);
    assert_eq!(headers(&log.read(0, usize::MAX, 3).unwrap()).len(), 1);
    assert!(log.read(2, usize::MAX, 3).unwrap().is_empty());
    assert!(log.read(4, usize::MAX, 4).unwrap().is_empty());
    // The log end offset reads empty; past it is out of range.
    assert!(log.read(10, usize::MAX, i64::MAX).unwrap().is_empty());
    assert!(matches!(
        log.read(11, 100, i64::MAX),
        Err(LogError::OffsetOutOfRange {
            offset: 11,
            log_start_offset: 0,
            log_end_offset: 10
        })
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn rolls_by_size_and_writes_index_files() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, small_config()).unwrap();
    let one = simple_batch(1, 250, T0).len() as u64;
    assert!(3 * one <= 1000 && 4 * one > 1000);
    for _ in 0..7 {
        append(&mut log, simple_batch(1, 250, T0));
    }
    assert_eq!(log.segment_count(), 3);
    assert_eq!(log.size_bytes(), 7 * one);
    assert_eq!(
        segment_files(&disk),
        vec![
            "00000000000000000000.log",
            "00000000000000000003.log",
            "00000000000000000006.log"
        ]
    );
    let names = disk.list(Path::new(DIR)).unwrap();
    for closed in ["00000000000000000000", "00000000000000000003"] {
        assert!(names.contains(&format!("{closed}.index")));
        assert!(names.contains(&format!("{closed}.timeindex")));
    }
    assert!(!names.contains(&"00000000000000000006.index".to_string()));
    // A batch larger than segment.bytes still goes in (into a fresh segment).
    let (outcome, _) = append(&mut log, simple_batch(1, 2000, T0));
    assert_eq!(outcome.base_offset, 7);
    assert_eq!(log.segment_count(), 4);
    let (outcome, _) = append(&mut log, simple_batch(1, 10, T0));
    assert_eq!(outcome.base_offset, 8);
    assert_eq!(log.segment_count(), 5);
}

#[test]
fn rolls_by_time() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let config = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = open(&disk, &clock, config).unwrap();
    clock.advance_ms(5000);
    assert!(
        !log.roll_if_due().unwrap(),
        "an empty segment is not rolled"
    );
    append(&mut log, simple_batch(1, 10, T0));
    clock.advance_ms(999);
    assert!(!log.roll_if_due().unwrap());
    clock.advance_ms(1);
    assert!(log.roll_if_due().unwrap());
    assert_eq!(log.segment_count(), 2);
    assert!(!log.roll_if_due().unwrap());
    // An append into an overdue segment rolls first.
    append(&mut log, simple_batch(1, 10, T0));
    clock.advance_ms(1000);
    let (outcome, _) = append(&mut log, simple_batch(1, 10, T0));
    assert_eq!(outcome.base_offset, 2);
    assert_eq!(log.segment_count(), 3);
}

/// Goal: `segment.jitter.ms` makes each segment roll by time up to that much before
/// `segment.ms`, by a per-segment amount that is the same every time (simulation replays), and
/// never by more than `segment.ms`.
#[test]
fn segment_jitter_rolls_segments_earlier() {
    use strata_storage::log::segment_roll_jitter_ms;
    let config = LogConfig {
        segment_ms: 10_000,
        segment_jitter_ms: 4_000,
        ..LogConfig::default()
    };
    let jitters: Vec<i64> = (0..64)
        .map(|base| segment_roll_jitter_ms(&config, base))
        .collect();
    assert!(jitters.iter().all(|j| (0..4_000).contains(j)));
    let distinct: std::collections::BTreeSet<_> = jitters.iter().collect();
    assert!(
        distinct.len() > 32,
        "segments get different jitters: {distinct:?}"
    );
    assert_eq!(segment_roll_jitter_ms(&LogConfig::default(), 7), 0);
    let capped = LogConfig {
        segment_ms: 100,
        segment_jitter_ms: 1_000_000,
        ..LogConfig::default()
    };
    assert!((0..64).all(|base| segment_roll_jitter_ms(&capped, base) < 100));

    // The segment at base offset 1 (the second) rolls at segment.ms - its jitter.
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, config.clone()).unwrap();
    append(&mut log, simple_batch(1, 10, T0));
    clock.advance_ms(10_000);
    assert!(log.roll_if_due().unwrap());
    append(&mut log, simple_batch(1, 10, T0));
    assert!(
        segment_roll_jitter_ms(&config, 1) > 0,
        "the test needs a jitter"
    );
    let due_ms = (10_000 - segment_roll_jitter_ms(&config, 1)) as u64;
    clock.advance_ms(due_ms - 1);
    assert!(!log.roll_if_due().unwrap());
    clock.advance_ms(1);
    assert!(log.roll_if_due().unwrap());
    assert_eq!(log.segment_count(), 3);
}

#[test]
fn offset_for_timestamp_uses_batch_max_timestamps() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let config = LogConfig {
        segment_bytes: 2000,
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    let mut log = open(&disk, &clock, config).unwrap();
    // (base timestamp, records): max timestamp = base + records - 1.
    let specs = [(100, 1), (200, 5), (150, 1), (300, 2), (250, 1), (400, 1)];
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        for (ts, n) in specs {
            let (outcome, _) = append(&mut log, simple_batch(n, 100, ts));
            outcomes.push((outcome.base_offset, ts + n as i64 - 1));
        }
    }
    assert!(log.segment_count() > 2);
    let expected = |ts: i64| outcomes.iter().find(|(_, max)| *max >= ts).copied();
    for ts in [0, 100, 101, 150, 200, 204, 205, 250, 301, 302, 400, 401] {
        assert_eq!(
            log.offset_for_timestamp(ts).unwrap(),
            expected(ts),
            "ts {ts}"
        );
    }
    assert_eq!(log.offset_for_timestamp(205).unwrap(), Some((7, 301)));
    assert_eq!(log.offset_for_timestamp(401).unwrap(), None);
}

/// DeleteRecords: the log start moves to the asked offset (inside a segment too), offsets below
/// it are no longer readable, whole segments below it are deleted, the start never moves back
/// and offsets past the log end are refused; the new start survives a crash and a restart.
#[test]
fn delete_records_moves_the_log_start_durably() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let config = LogConfig {
        segment_bytes: 500,
        ..LogConfig::default()
    };
    let mut log = open(&disk, &clock, config.clone()).unwrap();
    // Segments of 2 batches of 2 records each: offsets 0-3, 4-7, 8-11, 12-15 (active).
    for i in 0..8 {
        append(&mut log, simple_batch(2, 50, T0 + i));
    }
    log.flush().unwrap();
    assert_eq!(log.segment_count(), 4);
    assert_eq!(log.delete_records_before(6).unwrap(), 6);
    assert_eq!(log.log_start_offset(), 6);
    assert_eq!(
        log.segment_count(),
        3,
        "the segment of offsets 0-3 is deleted"
    );
    assert!(matches!(
        log.read(5, 100, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // The batch holding offset 6 (offsets 6-7) is served whole, as Kafka does.
    assert_eq!(
        headers(&log.read(6, 1, i64::MAX).unwrap())[0].base_offset,
        6
    );
    // A lower offset leaves the start where it is; one past the end is refused.
    assert_eq!(log.delete_records_before(2).unwrap(), 6);
    assert!(matches!(
        log.delete_records_before(17),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(log);
    disk.crash(None);
    let mut log = open(&disk, &clock, config.clone()).unwrap();
    assert_eq!(log.log_start_offset(), 6, "the new start survives a crash");
    assert_eq!(log.log_end_offset(), 16);
    // Up to the log end: every closed segment goes; the active one stays, its offsets hidden.
    assert_eq!(log.delete_records_before(16).unwrap(), 16);
    assert_eq!(segment_files(&disk), vec!["00000000000000000012.log"]);
    assert_eq!(log.read(16, 100, i64::MAX).unwrap().len(), 0);
    log.close().unwrap();
    let log = open(&disk, &clock, config).unwrap();
    assert_eq!(log.log_start_offset(), 16);
    assert_eq!(log.log_end_offset(), 16);
}

#[test]
fn retention_by_time() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let config = LogConfig {
        segment_bytes: 500,
        retention_ms: 10_000,
        ..LogConfig::default()
    };
    let mut log = open(&disk, &clock, config.clone()).unwrap();
    // Segments of 2 batches each; timestamps T0, T0+1000, ...
    for i in 0..8 {
        append(&mut log, simple_batch(1, 150, T0 + i * 1000));
    }
    assert_eq!(log.segment_count(), 4);
    clock.set_ms(T0 + 11_000);
    // Largest timestamps: seg0 T0+1000 (age 10000, not > 10000), nothing goes.
    assert_eq!(log.enforce_retention().unwrap(), 0);
    clock.set_ms(T0 + 13_500);
    // seg0 (T0+1000) and seg1 (T0+3000) are older than 10 s.
    assert_eq!(log.enforce_retention().unwrap(), 2);
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(log.segment_count(), 2);
    assert!(matches!(
        log.read(3, 100, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        headers(&log.read(4, 1, i64::MAX).unwrap())[0].base_offset,
        4
    );
    // Far in the future: everything but the active segment.
    clock.set_ms(T0 + 1_000_000);
    assert_eq!(log.enforce_retention().unwrap(), 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), 6);
    drop(log);
    // The log start offset survives a restart, even a crash.
    disk.crash(None);
    let log = open(&disk, &clock, config).unwrap();
    assert_eq!(log.log_start_offset(), 6);
    assert_eq!(segment_files(&disk), vec!["00000000000000000006.log"]);
}

#[test]
fn retention_by_bytes() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let one = simple_batch(1, 150, T0).len() as i64;
    assert!(2 * one <= 500 && 3 * one > 500);
    let config = LogConfig {
        segment_bytes: 500,
        retention_ms: -1,
        retention_bytes: 3 * one,
        ..LogConfig::default()
    };
    let mut log = open(&disk, &clock, config.clone()).unwrap();
    for _ in 0..9 {
        append(&mut log, simple_batch(1, 150, T0));
    }
    // 5 segments (2+2+2+2+1 batches), 9 batches; keep at most 3 batches' worth.
    assert_eq!(log.segment_count(), 5);
    assert_eq!(log.enforce_retention().unwrap(), 3);
    assert_eq!(log.size_bytes() as i64, 3 * one);
    assert_eq!(log.log_start_offset(), 6);
    assert_eq!(log.enforce_retention().unwrap(), 0);
    // The log start offset survives a crash that happens before the removals are durable: the
    // checkpoint is written first.
    log.set_config(LogConfig {
        retention_bytes: 0,
        ..config.clone()
    });
    assert_eq!(log.enforce_retention().unwrap(), 1);
    assert_eq!(log.log_start_offset(), 8);
    log.flush().unwrap();
    drop(log);
    disk.crash(Some(1));
    let log = open(&disk, &clock, config).unwrap();
    assert_eq!(log.log_start_offset(), 8);
    assert_eq!(log.log_end_offset(), 9);
}

#[test]
fn idempotent_producer_duplicates_and_sequence_errors() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, small_config()).unwrap();
    let batch = |seq: i32, n: usize, epoch: i16| {
        BatchSpec::new(T0, vec![b"v".to_vec(); n])
            .producer(42, epoch, seq)
            .encode()
    };
    append(&mut log, simple_batch(2, 1, T0)); // offsets 0-1, no producer
    let (first, _) = append(&mut log, batch(0, 3, 0)); // 2-4
    assert_eq!((first.base_offset, first.last_offset), (2, 4));
    let (second, _) = append(&mut log, batch(3, 2, 0)); // 5-6
    assert_eq!(second.base_offset, 5);
    // A retry of the first batch: nothing written, original offsets.
    let dup = log.append(&batch(0, 3, 0), 3).unwrap();
    assert_eq!(
        (dup.base_offset, dup.last_offset, dup.duplicate),
        (2, 4, true)
    );
    assert_eq!(log.log_end_offset(), 7);
    // Gap.
    assert!(matches!(
        log.append(&batch(6, 1, 0), 3),
        Err(LogError::OutOfOrderSequence {
            producer_id: 42,
            first_seq: 6,
            expected_seq: 5,
            ..
        })
    ));
    // Fenced epoch.
    let (bumped, _) = append(&mut log, batch(0, 1, 1));
    assert_eq!(bumped.base_offset, 7);
    assert!(matches!(
        log.append(&batch(5, 1, 0), 3),
        Err(LogError::InvalidProducerEpoch {
            producer_epoch: 0,
            current_epoch: 1,
            ..
        })
    ));
    // New epoch must start at 0.
    assert!(matches!(
        log.append(&batch(1, 1, 2), 3),
        Err(LogError::OutOfOrderSequence {
            expected_seq: 0,
            ..
        })
    ));
    assert_eq!(log.log_end_offset(), 8);
    // Two batches in one append: the second sees the first.
    let mut two = batch(1, 2, 1);
    two.extend(batch(3, 1, 1));
    let outcome = log.append(&two, 3).unwrap();
    assert_eq!((outcome.base_offset, outcome.last_offset), (8, 10));
    // The state is rebuilt on open: a retry after a restart is still a duplicate.
    log.close().unwrap();
    let mut log = open(&disk, &clock, small_config()).unwrap();
    let dup = log.append(&batch(3, 1, 1), 3).unwrap();
    assert_eq!((dup.base_offset, dup.duplicate), (10, true));
    assert!(matches!(
        log.append(&batch(9, 1, 1), 3),
        Err(LogError::OutOfOrderSequence {
            expected_seq: 4,
            ..
        })
    ));
    // An unknown producer may start anywhere.
    let other = BatchSpec::new(T0, vec![b"x".to_vec()])
        .producer(7, 0, 1234)
        .encode();
    assert_eq!(log.append(&other, 3).unwrap().base_offset, 11);
}

#[test]
fn invalid_input_is_rejected_and_changes_nothing() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
    append(&mut log, simple_batch(1, 10, T0));
    let good = simple_batch(2, 10, T0);

    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    assert!(matches!(
        log.append(&bad_crc, 0),
        Err(LogError::CorruptInput(_))
    ));
    let mut magic = good.clone();
    magic[16] = 1;
    assert!(matches!(
        log.append(&magic, 0),
        Err(LogError::InvalidRecord(_))
    ));
    let mut count = good.clone();
    count[57..61].copy_from_slice(&7i32.to_be_bytes());
    let crc = strata_storage::batch::compute_crc(&count).unwrap();
    count[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        log.append(&count, 0),
        Err(LogError::InvalidRecord(_))
    ));
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0u8; 20]);
    assert!(matches!(
        log.append(&trailing, 0),
        Err(LogError::CorruptInput(_))
    ));
    let mut second_bad = good.clone();
    second_bad.extend_from_slice(&bad_crc);
    assert!(matches!(
        log.append(&second_bad, 0),
        Err(LogError::CorruptInput(_))
    ));
    assert!(matches!(log.append(&[], 0), Err(LogError::CorruptInput(_))));
    assert!(matches!(
        log.append(&good.clone()[..30], 0),
        Err(LogError::CorruptInput(_))
    ));
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(log.size_bytes(), simple_batch(1, 10, T0).len() as u64);
    assert_eq!(log.append(&good.clone(), 0).unwrap().base_offset, 1);
}

#[test]
fn sync_target_and_durability() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, small_config()).unwrap();
    assert!(log.sync_target().files.is_empty());
    append(&mut log, simple_batch(1, 400, T0));
    append(&mut log, simple_batch(1, 400, T0));
    append(&mut log, simple_batch(1, 400, T0)); // rolls
    assert_eq!(log.segment_count(), 2);
    let target = log.sync_target();
    assert_eq!(target.end_offset, 3);
    assert_eq!(
        target.files.len(),
        2,
        "the rolled segment is still unsynced"
    );
    assert_eq!(log.durable_end_offset(), 0);
    // Appends between sync_target and mark_durable are not covered.
    append(&mut log, simple_batch(1, 10, T0));
    for file in &target.files {
        file.sync().unwrap();
    }
    log.mark_durable(target.end_offset);
    assert_eq!(log.durable_end_offset(), 3);
    assert_eq!(log.sync_target().files.len(), 1);
    log.flush().unwrap();
    assert_eq!(log.durable_end_offset(), 4);
    assert!(log.sync_target().files.is_empty());
    // Durable data survives a crash; undurable data does not.
    append(&mut log, simple_batch(1, 10, T0));
    drop(log);
    disk.crash(None);
    let log = open(&disk, &clock, small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.durable_end_offset(), 4);
}

#[test]
fn recovery_truncates_a_torn_tail() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.extend(append(&mut log, simple_batch(3, 100, T0)).1);
    }
    log.flush().unwrap();
    // Half of a fourth batch reaches the disk.
    let (_, fourth) = append(&mut log, simple_batch(3, 1000, T0));
    drop(log);
    let path = dir().join("00000000000000000000.log");
    let file = disk.open(&path, false).unwrap();
    file.sync().unwrap();
    file.set_len((kept.len() + fourth.len() / 2) as u64)
        .unwrap();
    file.sync().unwrap();
    drop(file);
    disk.crash(None);
    let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(
        disk.read_file(&path).unwrap(),
        kept,
        "the torn batch is cut away"
    );
    assert_eq!(&log.read(0, usize::MAX, i64::MAX).unwrap()[..], &kept[..]);
    assert_eq!(
        log.append(&simple_batch(1, 5, T0), 0).unwrap().base_offset,
        9
    );
}

#[test]
fn recovery_keeps_an_empty_segment_left_by_a_crash_after_roll() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, small_config()).unwrap();
    append(&mut log, simple_batch(1, 600, T0));
    log.flush().unwrap();
    append(&mut log, simple_batch(1, 600, T0)); // rolls to segment 1, unsynced
    assert_eq!(segment_files(&disk).len(), 2);
    drop(log);
    disk.crash(None);
    assert_eq!(
        segment_files(&disk).len(),
        2,
        "the roll synced the directory"
    );
    let mut log = open(&disk, &clock, small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(append(&mut log, simple_batch(1, 5, T0)).0.base_offset, 1);
}

#[test]
fn recovery_drops_segments_after_a_gap_above_the_recovery_point() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, small_config()).unwrap();
    let (_, first) = append(&mut log, simple_batch(1, 300, T0));
    log.flush().unwrap();
    append(&mut log, simple_batch(1, 300, T0)); // segment 0, unsynced
    append(&mut log, simple_batch(1, 600, T0)); // rolls: segment 2
    let target = log.sync_target();
    assert_eq!(target.files.len(), 2);
    // Crash after only the newer segment was synced.
    target.files[1].sync().unwrap();
    drop(target);
    drop(log);
    disk.crash(None);
    let mut log = open(&disk, &clock, small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(segment_files(&disk), vec!["00000000000000000000.log"]);
    assert_eq!(&log.read(0, usize::MAX, i64::MAX).unwrap()[..], &first[..]);
    assert_eq!(append(&mut log, simple_batch(1, 5, T0)).0.base_offset, 1);
}

fn batch_positions(disk: &MemDisk, path: &Path) -> Vec<(u64, BatchHeader)> {
    let data = disk.read_file(path).unwrap();
    let mut out = Vec::new();
    let mut position = 0u64;
    for item in batches(&data) {
        let (header, bytes) = item.unwrap();
        out.push((position, header));
        position += bytes.len() as u64;
    }
    out
}

#[test]
fn recovery_refuses_mid_log_corruption() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
    for _ in 0..3 {
        append(&mut log, simple_batch(2, 100, T0));
    }
    log.close().unwrap();
    let path = dir().join("00000000000000000000.log");
    let positions = batch_positions(&disk, &path);
    // Flip a byte in the records of the middle batch.
    let (middle, _) = positions[1];
    let at = middle + 70;
    let byte = disk.read_file(&path).unwrap()[at as usize];
    disk.corrupt(&path, at, &[byte ^ 0x10]).unwrap();
    let before = disk.read_file(&path).unwrap();
    let error = open(&disk, &clock, LogConfig::default()).unwrap_err();
    match &error {
        LogError::CorruptLog { file, position, .. } => {
            assert_eq!(file, &path);
            assert_eq!(*position, middle);
        }
        other => panic!("expected CorruptLog, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("byte position {middle}")),
        "{message}"
    );
    assert!(message.contains("refusing"), "{message}");
    assert_eq!(
        disk.read_file(&path).unwrap(),
        before,
        "nothing was dropped"
    );
}

#[test]
fn recovery_refuses_a_bad_last_batch_below_the_recovery_point() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
    for _ in 0..3 {
        append(&mut log, simple_batch(2, 100, T0));
    }
    log.close().unwrap(); // recovery point 6
    let path = dir().join("00000000000000000000.log");
    let (last, _) = batch_positions(&disk, &path)[2];
    let len = disk.read_file(&path).unwrap().len() as u64;
    disk.corrupt(&path, len - 1, &[0xff]).unwrap();
    match open(&disk, &clock, LogConfig::default()) {
        Err(LogError::CorruptLog { position, .. }) => assert_eq!(position, last),
        other => panic!("expected CorruptLog, got {other:?}"),
    }
}

#[test]
fn recovery_refuses_when_durable_data_is_missing() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
    for _ in 0..3 {
        append(&mut log, simple_batch(2, 100, T0));
    }
    log.close().unwrap();
    let path = dir().join("00000000000000000000.log");
    let (last, _) = batch_positions(&disk, &path)[2];
    let file = disk.open(&path, false).unwrap();
    file.set_len(last).unwrap();
    file.sync().unwrap();
    drop(file);
    assert!(matches!(
        open(&disk, &clock, LogConfig::default()),
        Err(LogError::CorruptLog { .. })
    ));
}

#[test]
fn disk_full_is_storage_full_and_leaves_the_log_usable() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
    append(&mut log, simple_batch(1, 100, T0));
    disk.set_space_bytes_max(Some(disk.used_bytes() + 500));
    let result = log.append(&simple_batch(4, 200, T0), 0);
    assert!(
        matches!(result, Err(LogError::StorageFull)),
        "got {result:?}"
    );
    assert_eq!(log.log_end_offset(), 1);
    // A small batch still fits, right after the first one (the partial write was undone).
    let (outcome, small) = append(&mut log, simple_batch(1, 10, T0));
    assert_eq!(outcome.base_offset, 1);
    disk.set_space_bytes_max(None);
    let (outcome, big) = append(&mut log, simple_batch(4, 200, T0));
    assert_eq!(outcome.base_offset, 2);
    assert_eq!(read_one(&log, 1), small);
    assert_eq!(read_one(&log, 5), big);
    log.close().unwrap();
    let log = open(&disk, &clock, LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 6);
}

#[test]
fn works_on_the_real_disk() {
    let base = std::env::temp_dir().join(format!("strata-log-test-{}", std::process::id()));
    let dir = base.join("topic-0");
    let disk: Arc<dyn Disk> = Arc::new(RealDisk::new());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let mut log =
        PartitionLog::open(disk.clone(), clock.clone(), dir.clone(), small_config()).unwrap();
    let mut written = Vec::new();
    for i in 0..10 {
        let mut batch = simple_batch(2, 150, T0 + i);
        let outcome = log.append(&batch, 1).unwrap();
        stamp(&mut batch, outcome.base_offset, 1);
        written.extend(batch);
    }
    log.close().unwrap();
    let log = PartitionLog::open(disk.clone(), clock, dir.clone(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 20);
    let mut read = Vec::new();
    let mut offset = 0;
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1000, i64::MAX).unwrap();
        offset = headers(&bytes).last().unwrap().last_offset() + 1;
        read.extend_from_slice(&bytes);
    }
    assert_eq!(read, written);
    drop(log);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn large_batches_recover_and_corruption_in_them_is_found() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
    let mut written = Vec::new();
    for i in 0..3 {
        written.push(append(&mut log, simple_batch(2, 100_000 + i, T0)).1);
    }
    log.close().unwrap();
    let log = open(&disk, &clock, LogConfig::default()).unwrap();
    for (i, bytes) in written.iter().enumerate() {
        assert_eq!(&read_one(&log, 2 * i as i64), bytes);
    }
    drop(log);
    let path = dir().join("00000000000000000000.log");
    let middle = written[0].len() as u64 + 150_000;
    let byte = disk.read_file(&path).unwrap()[middle as usize];
    disk.corrupt(&path, middle, &[!byte]).unwrap();
    match open(&disk, &clock, LogConfig::default()) {
        Err(LogError::CorruptLog { position, .. }) => assert_eq!(position, written[0].len() as u64),
        other => panic!("expected CorruptLog, got {other:?}"),
    }
}

#[test]
fn large_torn_batch_is_truncated() {
    let mut truncated = 0;
    for seed in 0..8 {
        let disk = MemDisk::new();
        let clock = ManualClock::new(T0);
        let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
        let (_, first) = append(&mut log, simple_batch(2, 100_000, T0));
        log.flush().unwrap();
        append(&mut log, simple_batch(2, 100_000, T0));
        drop(log);
        let path = dir().join("00000000000000000000.log");
        disk.crash(Some(seed));
        let torn_len = disk.read_file(&path).unwrap().len();
        assert!(torn_len >= first.len());
        let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
        let end = log.log_end_offset();
        assert!(end == 2 || end == 4);
        if end == 2 {
            assert_eq!(disk.read_file(&path).unwrap(), first);
            if torn_len > first.len() {
                truncated += 1;
            }
        }
        assert_eq!(append(&mut log, simple_batch(1, 1, T0)).0.base_offset, end);
    }
    assert!(truncated > 0, "some seed tore the second batch");
}

#[test]
fn open_cleans_up_leftovers() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let log = open(&disk, &clock, LogConfig::default()).unwrap();
    drop(log);
    for name in [
        "00000000000000000100.index",
        "00000000000000000100.timeindex",
        "recovery-point.tmp",
    ] {
        disk.open(&dir().join(name), true)
            .unwrap()
            .append(b"junk")
            .unwrap();
    }
    disk.open(&dir().join("00000000000000000000.index"), true)
        .unwrap()
        .append(b"stale")
        .unwrap();
    let _log = open(&disk, &clock, LogConfig::default()).unwrap();
    let names = disk.list(Path::new(DIR)).unwrap();
    assert_eq!(names, vec!["00000000000000000000.log", "recovery-point"]);
}

#[test]
fn damaged_index_files_are_rewritten_on_open() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, small_config()).unwrap();
    for i in 0..12 {
        append(&mut log, simple_batch(1, 100, T0 + i));
    }
    assert!(log.segment_count() > 1);
    log.close().unwrap();
    let index = dir().join("00000000000000000000.index");
    let timeindex = dir().join("00000000000000000000.timeindex");
    let good_index = disk.read_file(&index).unwrap();
    let good_timeindex = disk.read_file(&timeindex).unwrap();
    assert!(!good_index.is_empty() && !good_timeindex.is_empty());
    disk.open(&index, false).unwrap().set_len(3).unwrap();
    disk.remove_file(&timeindex).unwrap();
    let log = open(&disk, &clock, small_config()).unwrap();
    assert_eq!(disk.read_file(&index).unwrap(), good_index);
    assert_eq!(disk.read_file(&timeindex).unwrap(), good_timeindex);
    assert_eq!(read_one(&log, 5).len(), simple_batch(1, 100, T0).len());
}

#[test]
fn partition_log_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PartitionLog>();
    assert_send_sync::<MemDisk>();
    assert_send_sync::<strata_storage::SyncTarget>();
}

/// Goal: a batch whose baseOffset went bad on disk after it was written (baseOffset is outside the
/// CRC) is never served as if it were fine: a consumer would silently skip or repeat records.
#[test]
fn read_refuses_a_batch_whose_offsets_do_not_continue_the_log() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, LogConfig::default()).unwrap();
    for _ in 0..3 {
        append(&mut log, simple_batch(2, 100, T0));
    }
    log.flush().unwrap();
    assert_eq!(
        log.read(0, 1 << 20, i64::MAX)
            .map(|b| headers(&b).len())
            .unwrap(),
        3
    );
    let path = dir().join("00000000000000000000.log");
    let (second, _) = batch_positions(&disk, &path)[1];
    // baseOffset of the second batch: 2 -> 0x0100_0000_0000_0002.
    disk.corrupt(&path, second, &[0x01]).unwrap();
    let error = log.read(0, 1 << 20, i64::MAX).unwrap_err();
    assert!(
        matches!(&error, LogError::CorruptLog { position, .. } if *position == second),
        "{error}"
    );
    let error = log.read(2, 1 << 20, i64::MAX).unwrap_err();
    assert!(matches!(error, LogError::CorruptLog { .. }), "{error}");
    // The batch before it is still served alone.
    assert_eq!(headers(&log.read(0, 1, i64::MAX).unwrap()).len(), 1);
}

/// Found by the simulator (`tiered`): trimming offloaded segments locally must not forget the
/// idempotent producers whose last batches were in them, or a retry is written twice. The
/// state survives the trim, and a power loss after it (the producer snapshot).
#[test]
fn trimming_offloaded_segments_keeps_idempotent_producers() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock, small_config()).unwrap();
    let batch = |producer: i64, seq: i32| {
        BatchSpec::new(T0, vec![vec![b'v'; 300]; 2])
            .producer(producer, 0, seq)
            .encode()
    };
    let (first, _) = append(&mut log, batch(7, 0)); // 0-1
    append(&mut log, batch(7, 2)); // 2-3
    let (last_of_8, _) = append(&mut log, batch(8, 0)); // 4-5
    for seq in 0..4 {
        append(&mut log, batch(9, seq * 2));
    }
    let closed_end = log.closed_segments().last().unwrap().next_offset;
    assert!(
        closed_end > last_of_8.last_offset,
        "producers 7 and 8 sit in closed segments"
    );
    assert!(log.trim_local_below(closed_end).unwrap() > 0);
    assert_eq!(log.log_start_offset(), closed_end);

    let dup = log.append(&batch(8, 0), 3).unwrap();
    assert_eq!((dup.base_offset, dup.duplicate), (4, true));
    let dup = log.append(&batch(7, 0), 3).unwrap();
    assert_eq!((dup.base_offset, dup.duplicate), (first.base_offset, true));
    assert!(matches!(
        log.append(&batch(7, 9), 3),
        Err(LogError::OutOfOrderSequence {
            expected_seq: 4,
            ..
        })
    ));

    // A power loss: the snapshot was written (and everything synced) before the trim.
    drop(log);
    disk.crash(Some(3));
    let mut log = open(&disk, &clock, small_config()).unwrap();
    assert_eq!(log.log_start_offset(), closed_end);
    let dup = log.append(&batch(8, 0), 3).unwrap();
    assert_eq!((dup.base_offset, dup.duplicate), (4, true));
    let end = log.log_end_offset();
    let next = log.append(&batch(7, 4), 3).unwrap();
    assert_eq!((next.base_offset, next.duplicate), (end, false));
}
