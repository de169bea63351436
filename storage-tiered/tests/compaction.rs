//! Local compaction: `plan_local_compaction` keeps the latest record per key (and tombstones
//! until `delete.retention.ms`), and `PartitionLog::replace_closed_segment` swaps a segment's
//! bytes crash-safely, refusing rewrites that change batch offsets.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use strata_storage::batch::batches;
use strata_storage::tier::compact::plan_local_compaction;
use strata_storage::tier::records::{decode_batch, encode_batch, BatchMeta, RecordRow};
use strata_storage::{
    Compression, LogConfig, LogError, ManualClock, MemDisk, PartitionLog, TimestampType,
};

const T0: i64 = 1_700_000_000_000;

fn open(disk: &MemDisk, clock: &ManualClock) -> PartitionLog {
    PartitionLog::open(
        Arc::new(disk.clone()),
        Arc::new(clock.clone()),
        PathBuf::from("/data/compacted-0"),
        LogConfig {
            segment_bytes: 600,
            ..LogConfig::default()
        },
    )
    .expect("open")
}

/// A batch of `(key, value)` records (offsets are assigned by the log).
fn batch(records: &[(&str, Option<&str>)], timestamp_ms: i64) -> Vec<u8> {
    let meta = BatchMeta {
        base_offset: 0,
        last_offset: records.len() as i64 - 1,
        partition_leader_epoch: -1,
        compression: Compression::None,
        timestamp_type: TimestampType::CreateTime,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    let rows: Vec<RecordRow> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| RecordRow {
            offset: i as i64,
            timestamp_ms,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
        })
        .collect();
    encode_batch(&meta, &rows).expect("encode")
}

/// Every record of the log, as (offset, key, value).
fn contents(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX).expect("read");
        for item in batches(&bytes) {
            let (header, batch) = item.expect("valid batch");
            let (_, rows) = decode_batch(batch).expect("decode");
            for row in rows {
                out.push((
                    row.offset,
                    String::from_utf8(row.key.unwrap().to_vec()).unwrap(),
                    row.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                ));
            }
            offset = header.last_offset() + 1;
        }
    }
    out
}

fn compact(log: &mut PartitionLog, delete_retention_ms: i64, now_ms: i64) -> usize {
    let closed = log.closed_segments();
    let plan = plan_local_compaction(&closed, delete_retention_ms, now_ms).expect("plan");
    let mut count = 0;
    for rewrite in plan.rewrites {
        if log
            .replace_closed_segment(
                rewrite.base_offset,
                rewrite.size_bytes_before,
                &rewrite.batches,
            )
            .expect("replace")
        {
            count += 1;
        }
    }
    count
}

#[test]
fn compaction_keeps_the_latest_record_per_key_and_survives_a_crash() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock);
    for round in 0..20 {
        let value = format!("v{round}");
        let b = batch(
            &[
                ("a", Some(&value)),
                ("b", Some(&value)),
                ("c", (round != 19).then_some(value.as_str())),
            ],
            T0,
        );
        log.append(&b, 3).expect("append");
    }
    for i in 0..10 {
        let key = format!("filler-{i}");
        let b = batch(&[(&key, Some("x"))], T0);
        log.append(&b, 3).expect("append");
    }
    log.flush().expect("flush");
    assert!(log.closed_segments().len() >= 3);
    let end = log.log_end_offset();

    // The tombstone of c (offset 59) is younger than delete.retention.ms: kept.
    assert!(compact(&mut log, 1000, T0 + 10) > 0);
    let kept: Vec<_> = contents(&log)
        .into_iter()
        .filter(|(_, k, _)| !k.starts_with("filler"))
        .collect();
    assert_eq!(
        kept,
        vec![
            (57, "a".to_string(), Some("v19".to_string())),
            (58, "b".to_string(), Some("v19".to_string())),
            (59, "c".to_string(), None),
        ]
    );
    assert_eq!(log.log_end_offset(), end);

    // A power loss right after: the rewritten segments were fsynced and renamed durably.
    drop(log);
    disk.crash(Some(7));
    let mut log = open(&disk, &clock);
    assert_eq!(contents(&log).len(), kept.len() + 10);

    // Past delete.retention.ms the tombstone goes too.
    compact(&mut log, 1000, T0 + 2000);
    let kept: Vec<_> = contents(&log)
        .into_iter()
        .filter(|(_, k, _)| !k.starts_with("filler"))
        .map(|(o, k, _)| (o, k))
        .collect();
    assert_eq!(kept, vec![(57, "a".to_string()), (58, "b".to_string())]);
    // Reads from the start go on across batches left empty.
    assert_eq!(log.log_start_offset(), 0);
    assert!(!log.read(0, 1, i64::MAX).expect("read").is_empty());
}

#[test]
fn a_rewrite_that_changes_batch_offsets_is_refused() {
    let disk = MemDisk::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&disk, &clock);
    for _ in 0..20 {
        let b = batch(&[("a", Some("0123456789")), ("b", Some("0123456789"))], T0);
        log.append(&b, 3).expect("append");
    }
    log.flush().expect("flush");
    let segment = log.closed_segments()[0].clone();
    let mut bytes = vec![0u8; segment.size_bytes as usize];
    strata_storage::disk::read_exact_at(&*segment.file, 0, &mut bytes).unwrap();
    // Drop the first batch entirely: the segment would no longer start at its base offset.
    let first_len = batches(&bytes).next().unwrap().unwrap().1.len();
    let result =
        log.replace_closed_segment(segment.base_offset, segment.size_bytes, &bytes[first_len..]);
    assert!(
        matches!(result, Err(LogError::InvalidRewrite(_))),
        "{result:?}"
    );
    // A stale size (the segment changed since it was read) is skipped, not applied.
    assert!(!log
        .replace_closed_segment(segment.base_offset, segment.size_bytes + 1, &bytes)
        .expect("skipped"));
    // The active segment is never rewritten.
    let active_base = log.log_end_offset();
    assert!(!log
        .replace_closed_segment(active_base, 0, &[])
        .expect("skipped"));
}
