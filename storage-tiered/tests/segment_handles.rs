//! File handles of closed segments: a log of thousands of segments holds at most the handle
//! cache's capacity of them open (plus the active segment and those with unsynced bytes), reopens
//! evicted ones on demand, never serves a handle of a replaced file, and turns a failed open into
//! an error of that read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_storage::batch::build::{simple_batch, stamp, BatchSpec};
use strata_storage::disk::{read_exact_at, EMFILE};
use strata_storage::{
    Disk, LogConfig, LogError, ManualClock, MemDisk, PartitionLog, SegmentHandles,
};

const DIR: &str = "/data/many-0";
const T0: i64 = 1_700_000_000_000;
const LEADER_EPOCH: i32 = 3;

/// A config that rolls before every append (each batch is a segment of its own), with a cache
/// of `open_max` handles.
fn one_batch_segments(open_max: usize) -> LogConfig {
    LogConfig {
        segment_bytes: 1,
        retention_ms: -1,
        segment_handles: Arc::new(SegmentHandles::new(open_max)),
        ..LogConfig::default()
    }
}

fn open(disk: &MemDisk, config: &LogConfig) -> Result<PartitionLog, LogError> {
    PartitionLog::open(
        Arc::new(disk.clone()),
        Arc::new(ManualClock::new(T0)),
        PathBuf::from(DIR),
        config.clone(),
    )
}

/// A one-record batch whose value names `i`.
fn record(i: usize) -> Vec<u8> {
    BatchSpec::new(T0 + i as i64, vec![format!("record {i}").into_bytes()]).encode()
}

/// Appends `batch`, returning its offset and the bytes the log stores (offset rewritten).
fn append(log: &mut PartitionLog, mut batch: Vec<u8>) -> (i64, Vec<u8>) {
    let outcome = log.append(&batch, LEADER_EPOCH).expect("append");
    stamp(&mut batch, outcome.base_offset, LEADER_EPOCH);
    (outcome.base_offset, batch)
}

/// The batch holding `offset`, alone.
fn read_one(log: &PartitionLog, offset: i64) -> Result<Vec<u8>, LogError> {
    log.read(offset, 1, i64::MAX).map(|bytes| bytes.to_vec())
}

/// Total bytes of the files in the partition directory.
fn directory_bytes(disk: &MemDisk) -> u64 {
    let names = disk.list(Path::new(DIR)).expect("list");
    let sizes = names.iter().map(|name| {
        let path = Path::new(DIR).join(name);
        disk.read_file(&path).expect("read").len() as u64
    });
    sizes.sum()
}

/// The goal: a partition of 5,000 segments does not hold 5,000 descriptors. With a descriptor
/// limit of the cache's capacity plus 3 (the active segment, the segment just rolled until its
/// flush, one index or checkpoint file being written), 5,000 appends that each roll a segment,
/// a reopen that recovers all of them, and a read of every record all succeed, and every record
/// reads back as written.
#[test]
fn thousands_of_segments_keep_the_cache_capacity_open() {
    const SEGMENTS: usize = 5_000;
    const OPEN_MAX: usize = 16;
    let disk = MemDisk::new();
    let config = one_batch_segments(OPEN_MAX);
    disk.set_open_files_max(Some(OPEN_MAX + 3));
    let mut log = open(&disk, &config).expect("open");
    let mut written = Vec::with_capacity(SEGMENTS);
    for i in 0..SEGMENTS {
        written.push(append(&mut log, record(i)));
        log.flush().expect("flush");
        // Between appends: the cache, and the active segment.
        assert!(disk.open_file_count() <= OPEN_MAX + 1, "after append {i}");
        if i % 7 == 0 {
            // Reads of older segments go through the cache too.
            let (offset, bytes) = &written[i / 2];
            assert_eq!(&read_one(&log, *offset).expect("read"), bytes);
        }
    }
    assert_eq!(log.segment_count(), SEGMENTS);
    log.close().expect("close");
    assert_eq!(disk.open_file_count(), 0, "a closed log holds nothing open");

    let log = open(&disk, &config).expect("recovery within the descriptor limit");
    assert!(disk.open_file_count() <= OPEN_MAX + 1);
    for (offset, bytes) in &written {
        assert_eq!(&read_one(&log, *offset).expect("read"), bytes);
        assert!(disk.open_file_count() <= OPEN_MAX + 1);
    }
    assert!(
        config.segment_handles.opens_count() >= SEGMENTS as u64,
        "evicted segments were reopened"
    );
}

/// A read of a closed segment whose handle the cache evicted opens the file again, and reads
/// the same bytes; a hit opens nothing.
#[test]
fn reads_after_eviction_reopen_the_file() {
    let disk = MemDisk::new();
    let config = one_batch_segments(1);
    let handles = Arc::clone(&config.segment_handles);
    let mut log = open(&disk, &config).expect("open");
    let written: Vec<(i64, Vec<u8>)> = (0..4).map(|i| append(&mut log, record(i))).collect();
    log.flush().expect("flush");
    // Closed and durable: 0, 1 and 2; the cache holds the last one closed, 2.
    assert_eq!(handles.cached_count(), 1);
    let opens = handles.opens_count();
    assert_eq!(read_one(&log, written[2].0).expect("read"), written[2].1);
    assert_eq!(handles.opens_count(), opens, "a cached handle is reused");
    assert_eq!(read_one(&log, written[0].0).expect("read"), written[0].1);
    assert_eq!(handles.opens_count(), opens + 1, "segment 0 was opened");
    assert_eq!(read_one(&log, written[1].0).expect("read"), written[1].1);
    assert_eq!(read_one(&log, written[0].0).expect("read"), written[0].1);
    assert_eq!(
        handles.opens_count(),
        opens + 3,
        "segment 0 was evicted and reopened"
    );
    // The cache's one handle and the active segment's.
    assert_eq!(disk.open_file_count(), 2);
}

/// After a compaction replaced a closed segment's file (renamed over the old one), reads return
/// the new bytes, although the cache held a handle of the old file; the old file's space is
/// released (no handle keeps the unlinked inode). A listed segment first read after the replace
/// reads the new version; one read before keeps reading the old version it opened.
#[test]
fn reads_after_a_replace_return_the_new_contents() {
    let disk = MemDisk::new();
    let config = one_batch_segments(8);
    let mut log = open(&disk, &config).expect("open");
    let (offset, old_bytes) = append(&mut log, simple_batch(1, 500, T0));
    append(&mut log, record(1));
    log.flush().expect("flush");
    assert_eq!(read_one(&log, offset).expect("read"), old_bytes);
    let listed = log.closed_segments();
    let (read_before, unread) = (listed[0].clone(), log.closed_segments()[0].clone());
    let mut held = vec![0u8; old_bytes.len()];
    read_exact_at(&*read_before.file, 0, &mut held).expect("read");

    let mut new_bytes = simple_batch(1, 20, T0);
    stamp(&mut new_bytes, offset, LEADER_EPOCH);
    let replaced = log
        .replace_closed_segment(offset, old_bytes.len() as u64, &new_bytes)
        .expect("replace");
    assert!(replaced);
    assert_eq!(read_one(&log, offset).expect("read"), new_bytes);
    let mut first_read = vec![0u8; new_bytes.len()];
    read_exact_at(&*unread.file, 0, &mut first_read).expect("read");
    assert_eq!(first_read, new_bytes);
    read_exact_at(&*read_before.file, 0, &mut held).expect("read the old version");
    assert_eq!(held, old_bytes);

    drop((listed, read_before, unread));
    assert_eq!(
        disk.used_bytes(),
        directory_bytes(&disk),
        "no handle keeps the replaced file's bytes"
    );
    assert_eq!(read_one(&log, offset).expect("read"), new_bytes);
}

/// An open that fails is an error of that read, not a panic and not a sync failure: out of
/// descriptors (EMFILE) the read fails and succeeds once descriptors are free again; a segment
/// file removed behind the log's back fails its reads (not found) while the rest of the log is
/// served.
#[test]
fn failed_opens_are_read_errors() {
    let disk = MemDisk::new();
    let config = one_batch_segments(1);
    let mut log = open(&disk, &config).expect("open");
    let written: Vec<(i64, Vec<u8>)> = (0..4).map(|i| append(&mut log, record(i))).collect();
    log.flush().expect("flush");

    disk.set_open_files_max(Some(disk.open_file_count()));
    match read_one(&log, written[0].0) {
        Err(LogError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(EMFILE)),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(matches!(
        log.offset_for_timestamp(T0),
        Err(LogError::Io { .. })
    ));
    assert_eq!(
        read_one(&log, written[2].0).expect("cached"),
        written[2].1,
        "a cached handle needs no descriptor"
    );
    disk.set_open_files_max(None);
    assert_eq!(read_one(&log, written[0].0).expect("read"), written[0].1);

    // Evict segment 1's handle, then remove its file.
    read_one(&log, written[2].0).expect("read");
    let path = Path::new(DIR).join(strata_storage::segment_file_name(written[1].0, "log"));
    disk.remove_file(&path).expect("remove");
    match read_one(&log, written[1].0) {
        Err(LogError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    for index in [0, 2, 3] {
        let (offset, bytes) = &written[index];
        assert_eq!(&read_one(&log, *offset).expect("read"), bytes);
    }
    let listed = log.closed_segments();
    let mut header = [0u8; 8];
    assert!(read_exact_at(&*listed[1].file, 0, &mut header).is_err());
    log.append(&record(4), LEADER_EPOCH).expect("appends go on");
    log.flush().expect("flush");
}

/// Listing closed segments (as the remote tier does every pass) opens nothing; a listed
/// segment's file opens at its first read, and stays readable after retention deletes it.
#[test]
fn listed_segments_open_at_first_use() {
    let disk = MemDisk::new();
    let config = one_batch_segments(2);
    let mut log = open(&disk, &config).expect("open");
    let written: Vec<(i64, Vec<u8>)> = (0..50).map(|i| append(&mut log, record(i))).collect();
    log.flush().expect("flush");
    let open_before = disk.open_file_count();
    let listed = log.closed_segments();
    assert_eq!(listed.len(), 49);
    assert_eq!(disk.open_file_count(), open_before, "listing opens nothing");

    let first = listed[0].clone();
    drop(listed);
    let mut bytes = vec![0u8; first.size_bytes as usize];
    read_exact_at(&*first.file, 0, &mut bytes).expect("read");
    assert_eq!(bytes, written[0].1);
    assert!(log.delete_segments_below(written[10].0).expect("delete") > 0);
    read_exact_at(&*first.file, 0, &mut bytes).expect("still readable");
    assert_eq!(bytes, written[0].1);
    assert!(
        first.file.append(b"x").is_err(),
        "a closed segment is never written"
    );
    drop(first);
    assert_eq!(disk.used_bytes(), directory_bytes(&disk));
}
