//! [`PartitionLog`]: the local log of one partition.
//!
//! # Files in the partition directory
//!
//! - `<base_offset:020>.log`: segments, record batches back to back. The last one is *active*
//!   (appended to); the others are *closed*.
//! - `<base_offset:020>.index` / `.timeindex`: sparse offset and time indexes of closed segments
//!   (see [`index`](crate::index)). They are kept in memory and written when a segment is rolled;
//!   `open` rebuilds them from a scan of the batch headers (which it needs anyway to rebuild the
//!   producer state) and writes the missing ones.
//! - `recovery-point`: the offset below which everything was fsynced, written (via a temporary
//!   file, sync, rename and directory sync) on roll, on open and on close.
//! - `log-start-offset`: the first offset kept after retention or DeleteRecords
//!   ([`PartitionLog::delete_records_before`]; it may then lie inside a segment, whose lower
//!   offsets are no longer served), written the same way before segments are deleted.
//!
//! # Durability
//!
//! `append` writes to the active segment without syncing. [`PartitionLog::sync_target`] hands
//! out the files holding unsynced data (the active segment and rolled segments not yet synced)
//! with the end offset they cover; the caller syncs them outside its lock and calls
//! [`PartitionLog::mark_durable`]. A new segment file's directory entry is made durable by the
//! roll that creates it (a directory sync before anything is written to it).
//!
//! # Recovery
//!
//! `open` scans every segment's batch headers (offset continuity, framing); segments that may
//! hold offsets at or above the recovery point are also CRC-checked. At the first invalid bytes:
//!
//! - if they are at or above the recovery point and no valid batch follows them in the file,
//!   they are a torn tail: the file is truncated there (and later segments, which cannot hold
//!   acknowledged data, are deleted), with a warning;
//! - otherwise it is corruption of possibly acknowledged data: `open` fails with
//!   [`LogError::CorruptLog`] and drops nothing.
//!
//! Everything that survives recovery is fsynced, so after `open` the whole log is durable.
//!
//! # File handles
//!
//! The active segment, and a rolled segment until its bytes are synced, hold their file open;
//! a closed, durable segment does not: every access opens it on demand through the
//! [`SegmentHandles`] of [`LogConfig::segment_handles`], a bounded cache shared with the other
//! logs opened with clones of that config (see [`crate::handles`]). `open` releases each
//! recovered segment once it is scanned (and synced, if it may hold offsets at or above the
//! recovery point). A failed open (EMFILE, ENOENT) is an [`LogError::Io`] of the read.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{
    batches, rewritten_prefix, verify_crc, BatchHeader, Compression, BATCH_HEADER_BYTES,
    REWRITTEN_PREFIX_BYTES,
};
use crate::clock::Clock;
use crate::disk::{read_exact_at, Disk, DiskFile};
use crate::error::LogError;
use crate::handles::{SegmentHandles, SEGMENT_HANDLES_OPEN_MAX};
use crate::producer_state::{BatchMetadata, ProducerStateManager, SequenceCheck};
use crate::segment::{
    find_valid_batch, parse_segment_file_name, sibling_path, ScanEnd, Segment, INDEX_EXTENSION,
    LOG_EXTENSION, RELATIVE_OFFSET_MAX, SEGMENT_BYTES_MAX, TIME_INDEX_EXTENSION,
};

/// Name of the recovery checkpoint file.
pub const RECOVERY_POINT_FILE: &str = "recovery-point";
/// Name of the log start offset checkpoint file.
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset";
/// Name of the producer-state snapshot, written before offloaded segments are trimmed locally
/// (their batches are then the only local record of some idempotent producers).
pub const PRODUCER_SNAPSHOT_FILE: &str = "producer-snapshot";
/// Upper bound on a producer snapshot's size (about [`crate::producer_state::PRODUCERS_MAX`]
/// producers with full caches).
const PRODUCER_SNAPSHOT_BYTES_MAX: u64 = 256 * 1024 * 1024;
const CHECKPOINT_VERSION: &str = "1";
const CHECKPOINT_BYTES_MAX: u64 = 64;
const TMP_SUFFIX: &str = ".tmp";

/// Per-partition log settings (Kafka topic config names in the field docs), and the handle
/// cache the log shares with others.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this (default 1 GiB).
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is older than this (default 7 days).
    pub segment_ms: i64,
    /// `retention.ms`: delete closed segments whose largest timestamp is older; -1 = never
    /// (default 7 days).
    pub retention_ms: i64,
    /// `retention.bytes`: delete closed segments while the log is larger; -1 = no limit
    /// (default -1).
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes between offset index entries (default 4096).
    pub index_interval_bytes: u64,
    /// `segment.jitter.ms`: each segment rolls by time this much earlier than `segment_ms`, at
    /// most (default 0); see [`segment_roll_jitter_ms`].
    pub segment_jitter_ms: i64,
    /// The cache of open handles of closed segment files (see [`crate::handles`]): a resource,
    /// not a setting, so equality ignores it. Logs opened with clones of one `LogConfig` share
    /// it, as a broker's partitions do (each clones the broker's defaults), so its
    /// [`SegmentHandles::open_max`] bounds the whole broker. Default: a new cache of
    /// [`SEGMENT_HANDLES_OPEN_MAX`] handles. A log keeps the cache it was opened with
    /// ([`PartitionLog::set_config`] does not change it).
    pub segment_handles: Arc<SegmentHandles>,
}

impl PartialEq for LogConfig {
    fn eq(&self, other: &LogConfig) -> bool {
        // Every field by name, so that a new one cannot be forgotten here.
        let LogConfig {
            segment_bytes,
            segment_ms,
            retention_ms,
            retention_bytes,
            index_interval_bytes,
            segment_jitter_ms,
            segment_handles: _,
        } = self;
        (
            *segment_bytes,
            *segment_ms,
            *retention_ms,
            *retention_bytes,
            *index_interval_bytes,
            *segment_jitter_ms,
        ) == (
            other.segment_bytes,
            other.segment_ms,
            other.retention_ms,
            other.retention_bytes,
            other.index_interval_bytes,
            other.segment_jitter_ms,
        )
    }
}

impl Eq for LogConfig {}

/// Kafka's per-segment roll jitter (`segment.jitter.ms`): an amount in
/// `[0, min(segment_jitter_ms, segment_ms))` taken off `segment.ms` for the segment starting at
/// `base_offset`, so that partitions created together do not all roll at once. Kafka draws it at
/// random when the segment is created; here it is a hash of the base offset, so that a
/// simulation replays it.
pub fn segment_roll_jitter_ms(config: &LogConfig, base_offset: i64) -> i64 {
    let bound = config.segment_jitter_ms.min(config.segment_ms);
    if bound <= 0 {
        return 0;
    }
    // splitmix64's finalizer: consecutive base offsets land far apart.
    let mut x = base_offset as u64;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % bound as u64) as i64
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            segment_jitter_ms: 0,
            segment_handles: Arc::new(SegmentHandles::new(SEGMENT_HANDLES_OPEN_MAX)),
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The append was a retry of batches already in the log: nothing was written and the
    /// offsets are the original ones.
    pub duplicate: bool,
}

/// Files to sync for everything appended so far to be durable; see
/// [`PartitionLog::sync_target`].
#[derive(Clone)]
pub struct SyncTarget {
    /// The files (possibly none).
    pub files: Vec<Arc<dyn DiskFile>>,
    /// Every offset below it is durable once the files are synced.
    pub end_offset: i64,
}

impl std::fmt::Debug for SyncTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncTarget")
            .field("files", &self.files.len())
            .field("end_offset", &self.end_offset)
            .finish()
    }
}

/// A closed segment, as the remote tier sees it.
#[derive(Clone)]
pub struct ClosedSegment {
    /// Its first offset.
    pub base_offset: i64,
    /// The offset after its last batch.
    pub next_offset: i64,
    /// Bytes of batches in it.
    pub size_bytes: u64,
    /// Its largest timestamp (or creation time if none), as retention sees it.
    pub retention_timestamp_ms: i64,
    /// The file: closed segments are never written again, so it can be read without the
    /// log's lock. Listing opens nothing: a durable segment's file is opened (through the log's
    /// [`SegmentHandles`]) at its first use, and then stays open, readable even if retention
    /// removes the file, until the last clone is dropped. A first use after retention removed
    /// the file fails (not found); one after a compaction replaced it reads the new version,
    /// which holds the same offsets in at most the same bytes.
    pub file: Arc<dyn DiskFile>,
}

impl std::fmt::Debug for ClosedSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClosedSegment")
            .field("base_offset", &self.base_offset)
            .field("next_offset", &self.next_offset)
            .field("size_bytes", &self.size_bytes)
            .finish()
    }
}

/// The local log of one partition; see the [module docs](self).
pub struct PartitionLog {
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    dir: PathBuf,
    config: LogConfig,
    /// By base offset; never empty; the last one is active.
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    durable_end_offset: i64,
    producers: ProducerStateManager,
    /// Set when a failed write could not be undone: the log refuses further appends.
    failed: Option<String>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.log_end_offset)
            .field("durable_end_offset", &self.durable_end_offset)
            .finish()
    }
}

fn io_error(context: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> LogError {
    move |e| LogError::io(context(), e)
}

/// Maps a failed fsync to [`LogError::SyncFailed`] (whatever the errno, ENOSPC included).
fn sync_error(context: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> LogError {
    move |source| LogError::SyncFailed {
        context: context(),
        source,
    }
}

/// Planted bug `recovery-truncates-too-far`: the byte position of the last whole batch in the
/// first `valid_end` bytes of `file` (0 if there is none), where recovery then truncates.
#[cfg(strata_bug = "recovery-truncates-too-far")]
fn planted_last_batch_start(file: &dyn DiskFile, valid_end: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; valid_end as usize];
    read_exact_at(file, 0, &mut buf)?;
    let mut iter = batches(&buf);
    let mut last_start = 0u64;
    loop {
        let start = iter.position() as u64;
        match iter.next() {
            Some(Ok(_)) => last_start = start,
            _ => return Ok(last_start),
        }
    }
}

/// Reads a checkpoint file: `None` if it is missing or unreadable (with a warning).
fn read_checkpoint(disk: &dyn Disk, path: &Path) -> Result<Option<i64>, LogError> {
    if !disk.exists(path) {
        return Ok(None);
    }
    let file = disk
        .open(path, false)
        .map_err(io_error(|| format!("opening {}", path.display())))?;
    let len = file
        .len()
        .map_err(io_error(|| format!("reading {}", path.display())))?;
    let parsed = if len > CHECKPOINT_BYTES_MAX {
        None
    } else {
        let mut buf = vec![0u8; len as usize];
        read_exact_at(&*file, 0, &mut buf)
            .map_err(io_error(|| format!("reading {}", path.display())))?;
        std::str::from_utf8(&buf).ok().and_then(|text| {
            let mut lines = text.split('\n');
            let version = lines.next()?;
            let value = lines.next()?.parse::<i64>().ok()?;
            let rest: Vec<&str> = lines.collect();
            (version == CHECKPOINT_VERSION && rest == [""] && value >= 0).then_some(value)
        })
    };
    if parsed.is_none() {
        tracing::warn!(file = %path.display(), "ignoring an unreadable checkpoint file");
    }
    Ok(parsed)
}

/// Writes a checkpoint file atomically and durably: temporary file, sync, rename, dir sync.
fn write_checkpoint(disk: &dyn Disk, dir: &Path, name: &str, value: i64) -> Result<(), LogError> {
    write_file_atomic(
        disk,
        dir,
        name,
        format!("{CHECKPOINT_VERSION}\n{value}\n").as_bytes(),
    )
}

/// Writes `bytes` as file `name` of `dir`, atomically and durably: temporary file, sync,
/// rename, directory sync.
fn write_file_atomic(
    disk: &dyn Disk,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), LogError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let context = || format!("writing {}", path.display());
    let file = disk.open(&tmp, true).map_err(io_error(context))?;
    file.set_len(0).map_err(io_error(context))?;
    file.append(bytes).map_err(io_error(context))?;
    file.sync().map_err(sync_error(context))?;
    drop(file);
    disk.rename(&tmp, &path).map_err(io_error(context))?;
    disk.sync_dir(dir).map_err(sync_error(context))?;
    Ok(())
}

/// Reads the producer snapshot of `dir`, if there is a readable one (a damaged one is ignored
/// with a warning: its producers become unknown, as Kafka's do without a snapshot).
fn read_producer_snapshot(
    disk: &dyn Disk,
    dir: &Path,
) -> Result<Option<ProducerStateManager>, LogError> {
    let path = dir.join(PRODUCER_SNAPSHOT_FILE);
    if !disk.exists(&path) {
        return Ok(None);
    }
    let context = || format!("reading {}", path.display());
    let file = disk.open(&path, false).map_err(io_error(context))?;
    let len = file.len().map_err(io_error(context))?;
    if len > PRODUCER_SNAPSHOT_BYTES_MAX {
        tracing::warn!(file = %path.display(), len, "ignoring an oversized producer snapshot");
        return Ok(None);
    }
    let mut bytes = vec![0u8; len as usize];
    read_exact_at(&*file, 0, &mut bytes).map_err(io_error(context))?;
    let snapshot = ProducerStateManager::decode_snapshot(&bytes);
    if snapshot.is_none() {
        tracing::warn!(file = %path.display(), "ignoring a damaged producer snapshot");
    }
    Ok(snapshot)
}

/// Removes a file, treating "not found" as done.
fn remove_if_exists(disk: &dyn Disk, path: &Path) -> Result<(), LogError> {
    match disk.remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(format!("removing {}", path.display()), e)),
    }
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`, running crash recovery (see the
    /// [module docs](self)).
    pub fn open(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<PartitionLog, LogError> {
        if !disk.exists(&dir) {
            disk.create_dir_all(&dir)
                .map_err(io_error(|| format!("creating {}", dir.display())))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                disk.sync_dir(parent)
                    .map_err(sync_error(|| format!("syncing {}", parent.display())))?;
            }
        }
        let names = disk
            .list(&dir)
            .map_err(io_error(|| format!("listing {}", dir.display())))?;
        let mut bases = Vec::new();
        let mut index_bases = Vec::new();
        for name in &names {
            if name.ends_with(TMP_SUFFIX) {
                // A checkpoint whose write did not finish.
                remove_if_exists(&*disk, &dir.join(name))?;
            } else if let Some(base) = parse_segment_file_name(name, LOG_EXTENSION) {
                bases.push(base);
            } else if let Some(base) = parse_segment_file_name(name, INDEX_EXTENSION)
                .or_else(|| parse_segment_file_name(name, TIME_INDEX_EXTENSION))
            {
                index_bases.push((base, name));
            }
        }
        let segment_bases: std::collections::BTreeSet<i64> = bases.iter().copied().collect();
        for (base, name) in index_bases {
            if !segment_bases.contains(&base) {
                // Left by a segment deletion that did not finish.
                remove_if_exists(&*disk, &dir.join(name))?;
            }
        }
        bases.sort_unstable();
        let recovery_point_checkpoint = read_checkpoint(&*disk, &dir.join(RECOVERY_POINT_FILE))?;
        let log_start_checkpoint = read_checkpoint(&*disk, &dir.join(LOG_START_OFFSET_FILE))?;
        // Nothing is known to be durable without a recovery point.
        let recovery_point = recovery_point_checkpoint.unwrap_or(0);

        let mut log = PartitionLog {
            disk,
            clock,
            dir,
            config,
            segments: BTreeMap::new(),
            log_start_offset: 0,
            log_end_offset: 0,
            durable_end_offset: 0,
            producers: ProducerStateManager::new(),
            failed: None,
        };

        // Segments wholly below the log start offset: retention deleted them but the crash came
        // before their removal was durable.
        if let Some(log_start) = log_start_checkpoint {
            let mut removed = false;
            while bases.len() > 1 && bases[1] <= log_start {
                let base = bases.remove(0);
                log.remove_segment_files(base)?;
                removed = true;
            }
            if removed {
                log.sync_dir()?;
            }
        }

        if bases.is_empty() {
            let base = log_start_checkpoint.unwrap_or(0);
            if recovery_point > base {
                return Err(LogError::CorruptLog {
                    file: log.dir.clone(),
                    position: 0,
                    reason: format!(
                        "no segment files, but the recovery point is offset {recovery_point}"
                    ),
                });
            }
            log.create_segment(base)?;
        } else {
            log.recover(&bases, recovery_point)?;
        }

        let first_base = *log.segments.keys().next().expect("at least one segment");
        log.log_end_offset = log.active().next_offset;
        log.log_start_offset = log_start_checkpoint
            .unwrap_or(first_base)
            .max(first_base)
            .min(log.log_end_offset);
        if log.log_end_offset < recovery_point {
            let active = log.active();
            return Err(LogError::CorruptLog {
                file: active.path.clone(),
                position: active.size,
                reason: format!(
                    "the log ends at offset {}, below the recovery point {recovery_point}: \
                     durable data is missing",
                    log.log_end_offset
                ),
            });
        }
        log.producers.remove_below(log.log_start_offset);
        // Producers whose last batches were in segments trimmed locally (tiered partitions).
        if let Some(snapshot) = read_producer_snapshot(&*log.disk, &log.dir)? {
            log.producers.merge_snapshot(snapshot);
        }

        // Make everything that survived durable, and say so in the recovery point. (`recover`
        // synced the closed segments already, before releasing their handles.)
        for segment in log.segments.values() {
            if let Some(file) = segment.pinned_file() {
                if segment.next_offset > recovery_point && !segment.is_empty() {
                    file.sync()
                        .map_err(sync_error(|| format!("syncing {}", segment.path.display())))?;
                }
            }
        }
        log.durable_end_offset = log.log_end_offset;
        log.release_synced_handles();
        tracing::debug!(
            dir = %log.dir.display(),
            segments = log.segments.len(),
            log_start_offset = log.log_start_offset,
            log_end_offset = log.log_end_offset,
            recovery_point,
            producers = log.producers.len(),
            "opened partition log"
        );
        let fresh = bases.is_empty() && log_start_checkpoint.is_none();
        if fresh && log.log_end_offset == 0 {
            // A brand-new log: `create_segment` made its one entry durable, and a missing
            // recovery point means 0. (Creating a topic of thousands of partitions then costs
            // one directory sync per partition, not three.)
        } else if recovery_point_checkpoint == Some(log.log_end_offset) {
            // Nothing to record (a clean shutdown). Still make every directory entry durable: a
            // crash may have come between creating a segment and syncing the directory.
            log.sync_dir()?;
        } else {
            write_checkpoint(
                &*log.disk,
                &log.dir,
                RECOVERY_POINT_FILE,
                log.durable_end_offset,
            )?;
        }
        Ok(log)
    }

    /// Scans the segments with bases `bases` (sorted, non-empty), truncating a torn tail.
    ///
    /// A segment that more segments follow is released once scanned (synced first if it may
    /// hold offsets at or above the recovery point): recovering thousands of segments holds a
    /// handle to a few at a time. The active one holds its handle at the end.
    fn recover(&mut self, bases: &[i64], recovery_point: i64) -> Result<(), LogError> {
        let now_ms = self.clock.now_ms();
        let handles = Arc::clone(&self.config.segment_handles);
        let interval = self.config.index_interval_bytes;
        let mut delete_from: Option<usize> = None;
        let mut expected = bases[0];
        for (i, &base) in bases.iter().enumerate() {
            let path = sibling_path(&self.dir, base, LOG_EXTENSION);
            if base != expected {
                if expected < recovery_point {
                    return Err(LogError::CorruptLog {
                        file: path,
                        position: 0,
                        reason: format!(
                            "segment starts at offset {base}, but the previous segment ends at \
                             offset {expected} (below the recovery point {recovery_point})"
                        ),
                    });
                }
                delete_from = Some(i);
                break;
            }
            let file = self
                .disk
                .open(&path, false)
                .map_err(io_error(|| format!("opening {}", path.display())))?;
            let mut segment = Segment::new(base, path, file, &handles, now_ms);
            let verify_crc = bases.get(i + 1).is_none_or(|next| *next > recovery_point);
            let producers = &mut self.producers;
            let end = segment.scan(verify_crc, interval, &mut |header: &BatchHeader| {
                if header.has_producer_id() {
                    producers.record(
                        header.producer_id,
                        header.producer_epoch,
                        BatchMetadata {
                            first_seq: header.base_sequence,
                            last_seq: header.last_sequence(),
                            first_offset: header.base_offset,
                            last_offset: header.last_offset(),
                        },
                    );
                }
            })?;
            expected = segment.next_offset;
            let torn = match end {
                ScanEnd::Clean => false,
                // (The label is for a planted bug's early exit.)
                #[allow(unused_labels)]
                ScanEnd::Problem {
                    position,
                    offset,
                    reason,
                } => 'problem: {
                    if offset < recovery_point {
                        return Err(LogError::CorruptLog {
                            file: segment.path.clone(),
                            position,
                            reason: format!(
                                "{reason} (offset {offset} is below the recovery point \
                                 {recovery_point})"
                            ),
                        });
                    }
                    let context = || format!("recovering {}", segment.path.display());
                    let file = Arc::clone(segment.pinned_file().expect("a new segment pins"));
                    let file_len = file.len().map_err(io_error(context))?;
                    if let Some(valid) =
                        find_valid_batch(&*file, position, file_len).map_err(io_error(context))?
                    {
                        return Err(LogError::CorruptLog {
                            file: segment.path.clone(),
                            position,
                            reason: format!(
                                "{reason}, followed by a valid batch at byte position {valid}"
                            ),
                        });
                    }
                    // Planted bug (simulation only, see docs/simulation.md): the torn bytes
                    // are kept as if they were valid batches, and appends go after them.
                    #[cfg(strata_bug = "recovery-keeps-torn")]
                    if segment.size < file_len {
                        segment.size = file_len;
                        break 'problem false;
                    }
                    // Planted bug (simulation only): the last valid batch before the torn
                    // tail is dropped as well.
                    #[cfg(strata_bug = "recovery-truncates-too-far")]
                    let position =
                        planted_last_batch_start(&*file, position).map_err(io_error(context))?;
                    tracing::warn!(
                        file = %segment.path.display(),
                        position,
                        offset,
                        discarded_bytes = file_len - position,
                        reason = %reason,
                        "truncating the torn tail of the log (unsynced data lost in a crash)"
                    );
                    file.set_len(position).map_err(io_error(context))?;
                    file.sync().map_err(sync_error(context))?;
                    #[cfg(strata_bug = "recovery-truncates-too-far")]
                    {
                        let path = segment.path.clone();
                        segment = Segment::new(base, path, file, &handles, now_ms);
                        segment.scan(verify_crc, interval, &mut |_: &BatchHeader| {})?;
                        expected = segment.next_offset;
                    }
                    true
                }
            };
            if !torn && i + 1 < bases.len() {
                self.release_recovered(&mut segment, recovery_point)?;
            }
            self.segments.insert(base, segment);
            if torn {
                if i + 1 < bases.len() {
                    delete_from = Some(i + 1);
                }
                break;
            }
        }
        if let Some(from) = delete_from {
            for &base in &bases[from..] {
                tracing::warn!(
                    dir = %self.dir.display(),
                    base_offset = base,
                    log_end_offset = expected,
                    "deleting a segment past the end of the recovered log"
                );
                self.remove_segment_files(base)?;
            }
            self.sync_dir()?;
        }
        // The last segment is the active one (also if it was released as a closed one, before
        // its successors turned out to be past the end of the log).
        let disk = Arc::clone(&self.disk);
        self.active_mut().pin(&*disk)?;
        // Index files: closed segments get theirs if missing; the active one has none.
        let active_base = *self
            .segments
            .keys()
            .next_back()
            .expect("at least one segment");
        for (&base, segment) in &mut self.segments {
            if base == active_base {
                remove_if_exists(&*self.disk, &sibling_path(&self.dir, base, INDEX_EXTENSION))?;
                remove_if_exists(
                    &*self.disk,
                    &sibling_path(&self.dir, base, TIME_INDEX_EXTENSION),
                )?;
            } else {
                segment.finish_time_index();
                if !index_files_match(&*self.disk, &self.dir, segment)? {
                    write_index_files(&*self.disk, &self.dir, segment)?;
                }
            }
        }
        Ok(())
    }

    /// Releases the handle of a recovered segment that more segments follow, syncing it first
    /// if it may hold offsets at or above the recovery point (as `open` syncs everything that
    /// survives recovery).
    fn release_recovered(
        &self,
        segment: &mut Segment,
        recovery_point: i64,
    ) -> Result<(), LogError> {
        if segment.next_offset > recovery_point && !segment.is_empty() {
            if let Some(file) = segment.pinned_file() {
                file.sync()
                    .map_err(sync_error(|| format!("syncing {}", segment.path.display())))?;
            }
        }
        segment.unpin();
        Ok(())
    }

    /// Moves the handles of closed segments whose bytes are all durable into the handle cache
    /// (see [`crate::handles`]), oldest first so that the newest are the most recently used;
    /// their files are opened on demand from now on. The closed segments still holding a
    /// handle are the last ones before the active one (durability is a prefix of the log), so
    /// the walk from the back stops at the first without one.
    fn release_synced_handles(&mut self) {
        let durable_end = self.durable_end_offset;
        let active_base = self.active().base_offset;
        let first_pinned_closed = self
            .segments
            .range(..active_base)
            .rev()
            .take_while(|(_, segment)| segment.pinned_file().is_some())
            .last()
            .map(|(base, _)| *base);
        let Some(first) = first_pinned_closed else {
            return;
        };
        for segment in self.segments.range_mut(first..active_base).map(|(_, s)| s) {
            if segment.next_offset <= durable_end {
                segment.unpin();
            }
        }
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    fn sync_dir(&self) -> Result<(), LogError> {
        self.disk
            .sync_dir(&self.dir)
            .map_err(sync_error(|| format!("syncing {}", self.dir.display())))
    }

    /// Removes the files of segment `base`, which must no longer be in `segments` (dropping a
    /// `Segment` drops its cached handle, so none of a removed file stays open in the cache).
    fn remove_segment_files(&self, base: i64) -> Result<(), LogError> {
        debug_assert!(
            !self.segments.contains_key(&base),
            "a segment's files are removed after the segment"
        );
        // Indexes first: a crash in between leaves a segment without indexes (rebuilt on open),
        // never indexes without a segment.
        for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION, LOG_EXTENSION] {
            remove_if_exists(&*self.disk, &sibling_path(&self.dir, base, extension))?;
        }
        Ok(())
    }

    /// Creates an empty segment at `base` and makes its directory entry durable.
    fn create_segment(&mut self, base: i64) -> Result<(), LogError> {
        let path = sibling_path(&self.dir, base, LOG_EXTENSION);
        let context = || format!("creating segment {}", path.display());
        let file = self.disk.open(&path, true).map_err(io_error(context))?;
        if file.len().map_err(io_error(context))? != 0 {
            // Only a leftover from a crash right after an earlier roll can be here, and recovery
            // would have found it: anything else is a stray file we must not append after.
            return Err(LogError::CorruptLog {
                file: path,
                position: 0,
                reason: "a new segment's file already holds data".into(),
            });
        }
        self.sync_dir()?;
        let handles = &self.config.segment_handles;
        let segment = Segment::new(base, path, file, handles, self.clock.now_ms());
        self.segments.insert(base, segment);
        Ok(())
    }

    /// Closes the active segment and starts a new one at the log end offset. The closed segment
    /// keeps its handle until its bytes are synced (see [`crate::handles`]).
    fn roll(&mut self) -> Result<(), LogError> {
        let base = self.log_end_offset;
        assert!(
            !self.active().is_empty(),
            "an empty segment is never rolled"
        );
        {
            let disk = Arc::clone(&self.disk);
            let dir = self.dir.clone();
            let active = self.active_mut();
            active.finish_time_index();
            write_index_files(&*disk, &dir, active)?;
        }
        self.create_segment(base)?;
        self.release_synced_handles();
        if let Err(e) = write_checkpoint(
            &*self.disk,
            &self.dir,
            RECOVERY_POINT_FILE,
            self.durable_end_offset,
        ) {
            // A stale recovery point only makes the next recovery scan more.
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the recovery point");
        }
        tracing::debug!(dir = %self.dir.display(), base_offset = base, "rolled a new segment");
        Ok(())
    }

    fn roll_due_by_time(&self, now_ms: i64) -> bool {
        let active = self.active();
        let segment_ms =
            self.config.segment_ms - segment_roll_jitter_ms(&self.config, active.base_offset);
        !active.is_empty() && now_ms.saturating_sub(active.created_ms) >= segment_ms
    }

    /// Validates (magic 2, sizes, CRC-32C), checks producer sequences, assigns offsets and appends
    /// `records`: one or more v2 batches back to back, as found in a ProduceRequest. The stored
    /// batches carry the assigned baseOffset and partitionLeaderEpoch; `records` itself is not
    /// changed (or copied: one vectored write). Not durable until `flush`/`sync_target`.
    pub fn append(&mut self, records: &[u8], leader_epoch: i32) -> Result<AppendOutcome, LogError> {
        if let Some(reason) = &self.failed {
            return Err(LogError::Io {
                context: format!("appending to {}", self.dir.display()),
                source: io::Error::other(reason.clone()),
            });
        }
        if records.is_empty() {
            return Err(LogError::CorruptInput(
                "no record batch in the append".into(),
            ));
        }
        if records.len() as u64 > SEGMENT_BYTES_MAX {
            return Err(LogError::InvalidRecord(format!(
                "an append of {} bytes exceeds the segment size limit of {SEGMENT_BYTES_MAX} bytes",
                records.len()
            )));
        }

        // Pass 1: validate every batch and check producer sequences; nothing changes yet.
        let base_offset = self.log_end_offset;
        let mut next_offset = base_offset;
        let mut parsed: Vec<(usize, BatchHeader)> = Vec::new();
        let mut producer_append = self.producers.begin();
        let mut position = 0usize;
        for item in batches(records) {
            let (header, bytes) = item.map_err(LogError::from_batch)?;
            verify_crc(bytes).map_err(LogError::from_batch)?;
            header.check_records_count().map_err(LogError::from_batch)?;
            if header.is_control() {
                return Err(LogError::InvalidRecord(
                    "control batches are written by the broker only".into(),
                ));
            }
            if header.is_transactional() {
                return Err(LogError::InvalidRecord(
                    "transactional batches are not supported".into(),
                ));
            }
            if let Compression::Unknown(codec) = header.compression() {
                return Err(LogError::InvalidRecord(format!(
                    "unknown compression codec {codec}"
                )));
            }
            let first = next_offset;
            let last = first
                .checked_add(i64::from(header.last_offset_delta))
                .filter(|last| *last < i64::MAX)
                .ok_or_else(|| LogError::InvalidRecord("offsets exhausted".into()))?;
            if last - base_offset > RELATIVE_OFFSET_MAX {
                return Err(LogError::InvalidRecord(format!(
                    "an append may span at most {RELATIVE_OFFSET_MAX} offsets"
                )));
            }
            if header.has_producer_id() {
                if header.base_sequence < 0 || header.producer_epoch < 0 {
                    return Err(LogError::InvalidRecord(format!(
                        "batch of producer {} without a sequence number or epoch",
                        header.producer_id
                    )));
                }
                let check = producer_append.check_and_stage(
                    header.producer_id,
                    header.producer_epoch,
                    BatchMetadata {
                        first_seq: header.base_sequence,
                        last_seq: header.last_sequence(),
                        first_offset: first,
                        last_offset: last,
                    },
                )?;
                if let SequenceCheck::Duplicate(original) = check {
                    return Ok(AppendOutcome {
                        base_offset: original.first_offset,
                        last_offset: original.last_offset,
                        duplicate: true,
                    });
                }
            }
            parsed.push((position, header));
            position += bytes.len();
            next_offset = last + 1;
        }
        assert_eq!(
            position,
            records.len(),
            "batches() covers the buffer or fails"
        );
        let staged = producer_append.commit();

        // Pass 2: roll if due, assign offsets, write.
        let now_ms = self.clock.now_ms();
        {
            let active = self.active();
            let segment_bytes_max = self.config.segment_bytes.min(SEGMENT_BYTES_MAX);
            let roll = !active.is_empty()
                && (active.size + records.len() as u64 > segment_bytes_max
                    || (next_offset - 1) - active.base_offset > RELATIVE_OFFSET_MAX
                    || self.roll_due_by_time(now_ms));
            if roll {
                self.roll()?;
            }
        }
        // Offsets and the leader epoch go into a rewritten copy of each batch's first bytes
        // (outside the CRC); the rest is written from the caller's buffer as it is.
        let mut offset = base_offset;
        let mut prefixes = Vec::with_capacity(parsed.len());
        for (start, header) in &mut parsed {
            prefixes.push(
                rewritten_prefix(&records[*start..], offset, leader_epoch)
                    .map_err(LogError::from_batch)?,
            );
            header.base_offset = offset;
            header.partition_leader_epoch = leader_epoch;
            offset += header.offset_count();
        }
        debug_assert_eq!(offset, next_offset);
        let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * parsed.len());
        for (index, (start, _)) in parsed.iter().enumerate() {
            let end = parsed
                .get(index + 1)
                .map_or(records.len(), |(next_start, _)| *next_start);
            parts.push(&prefixes[index]);
            parts.push(&records[*start + REWRITTEN_PREFIX_BYTES..end]);
        }
        let interval = self.config.index_interval_bytes;
        let active = self.active_mut();
        let old_size = active.size;
        let file = Arc::clone(
            active
                .pinned_file()
                .expect("the active segment pins its file"),
        );
        if let Err(e) = file.append_vectored(&parts) {
            let error = LogError::io(format!("appending to {}", active.path.display()), e);
            // Undo a partial write, or nothing may be appended after it.
            if let Err(undo) = file.set_len(old_size) {
                let reason = format!(
                    "a failed append to {} could not be undone: {undo}",
                    active.path.display()
                );
                tracing::error!("{reason}");
                self.failed = Some(reason);
            }
            return Err(error);
        }
        if active.is_empty() {
            active.created_ms = now_ms;
        }
        for (start, header) in &parsed {
            active.on_batch(header, old_size + *start as u64, interval);
        }
        self.producers.apply(staged);
        self.log_end_offset = next_offset;
        Ok(AppendOutcome {
            base_offset,
            last_offset: next_offset - 1,
            duplicate: false,
        })
    }

    /// Files that must be synced for everything appended so far to be durable, and the end offset
    /// they cover; sync them outside any lock, then call `mark_durable(end_offset)`.
    pub fn sync_target(&self) -> SyncTarget {
        let files = self
            .segments
            .values()
            .filter(|s| s.next_offset > self.durable_end_offset)
            .map(|s| {
                let file = s.pinned_file();
                Arc::clone(file.expect("a segment with unsynced bytes pins its file"))
            })
            .collect();
        SyncTarget {
            files,
            end_offset: self.log_end_offset,
        }
    }

    /// Records that every offset below `end_offset` is durable (the files of a
    /// [`SyncTarget`] with that end offset were synced).
    pub fn mark_durable(&mut self, end_offset: i64) {
        debug_assert!(end_offset <= self.log_end_offset);
        self.durable_end_offset = self
            .durable_end_offset
            .max(end_offset.min(self.log_end_offset));
        self.release_synced_handles();
    }

    /// `sync_target`, sync, `mark_durable`.
    pub fn flush(&mut self) -> Result<(), LogError> {
        let target = self.sync_target();
        for file in &target.files {
            file.sync().map_err(sync_error(|| {
                format!("syncing a segment of {}", self.dir.display())
            }))?;
        }
        self.mark_durable(target.end_offset);
        Ok(())
    }

    /// Whole batches starting with the one containing `offset`, up to `max_bytes` (at least one
    /// batch if any, even if larger), never including a batch that ends at or past `end_offset`.
    /// Reads from one segment at a time.
    pub fn read(&self, offset: i64, max_bytes: usize, end_offset: i64) -> Result<Bytes, LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        if offset >= end_offset || offset == self.log_end_offset {
            return Ok(Bytes::new());
        }
        // Offsets are dense and segments contiguous: the segment holding `offset` is the last
        // one starting at or before it.
        let segment = match self.segments.range(..=offset).next_back() {
            Some((_, segment)) if segment.next_offset > offset => segment,
            _ => {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start_offset: self.log_start_offset,
                    log_end_offset: self.log_end_offset,
                })
            }
        };
        let file = segment.file(&*self.disk)?;
        let start = segment.find_position(&*file, offset)?;
        let context = || format!("reading {}", segment.path.display());
        let want = (max_bytes.max(BATCH_HEADER_BYTES) as u64).min(segment.size - start);
        let mut buf = file
            .read_exact_vec(start, want as usize)
            .map_err(io_error(context))?;
        let mut end = 0usize;
        // The offsets of served batches are checked against the index (the first batch holds
        // `offset`) and against each other (dense): baseOffset is outside the CRC, so a flipped bit
        // there would otherwise make a consumer skip or repeat records silently.
        let mut base_offset_expected: Option<i64> = None;
        while end + BATCH_HEADER_BYTES <= buf.len() {
            let header = BatchHeader::parse(&buf[end..]).map_err(|e| LogError::CorruptLog {
                file: segment.path.clone(),
                position: start + end as u64,
                reason: e.to_string(),
            })?;
            let offsets_ok = match base_offset_expected {
                None => header.base_offset <= offset && offset <= header.last_offset(),
                Some(expected) => header.base_offset == expected,
            };
            if !offsets_ok {
                return Err(LogError::CorruptLog {
                    file: segment.path.clone(),
                    position: start + end as u64,
                    reason: format!(
                        "batch offsets {}..={} do not continue the log (reading offset {offset})",
                        header.base_offset,
                        header.last_offset()
                    ),
                });
            }
            base_offset_expected = Some(header.last_offset() + 1);
            if header.last_offset() >= end_offset {
                break;
            }
            let size = header.size_bytes() as usize;
            if end + size > buf.len() {
                if end == 0 {
                    // The first batch is larger than max_bytes: return it whole.
                    if start + size as u64 > segment.size {
                        return Err(LogError::CorruptLog {
                            file: segment.path.clone(),
                            position: start,
                            reason: "batch past the end of the segment".into(),
                        });
                    }
                    let have = buf.len();
                    buf.resize(size, 0);
                    read_exact_at(&*file, start + have as u64, &mut buf[have..])
                        .map_err(io_error(context))?;
                    end = size;
                }
                break;
            }
            end += size;
        }
        buf.truncate(end);
        Ok(Bytes::from(buf))
    }

    /// The first offset of the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The next offset to assign.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// Every offset below it is fsynced.
    pub fn durable_end_offset(&self) -> i64 {
        self.durable_end_offset
    }

    /// The largest batch max timestamp of the local log (ListOffsets MAX_TIMESTAMP), `None`
    /// when no batch carries a timestamp (every batch timestamp is -1, or the log is empty).
    pub fn max_timestamp(&self) -> Option<i64> {
        self.segments
            .values()
            .filter(|segment| !segment.is_empty())
            .map(|segment| segment.max_timestamp)
            .max()
            .filter(|max| *max >= 0)
    }

    /// First offset whose batch max timestamp >= ts, with that timestamp (ListOffsets by time):
    /// the base offset of the first batch whose largest timestamp is at least `ts_ms`.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in self.segments.values() {
            if segment.is_empty() || segment.max_timestamp < ts_ms {
                continue;
            }
            let file = segment.file(&*self.disk)?;
            if let Some(found) = segment.find_timestamp(&*file, ts_ms)? {
                if found.0 >= self.log_start_offset {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Rolls the active segment if it is older than `segment.ms`; returns whether it did.
    pub fn roll_if_due(&mut self) -> Result<bool, LogError> {
        if self.roll_due_by_time(self.clock.now_ms()) {
            self.roll()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Deletes closed segments (never the active one), oldest first, while their largest
    /// timestamp is older than `retention.ms` or the log is larger than `retention.bytes`.
    /// Returns how many were deleted.
    pub fn enforce_retention(&mut self) -> Result<usize, LogError> {
        let now_ms = self.clock.now_ms();
        let closed: Vec<(u64, i64)> = self
            .segments
            .values()
            .take(self.segments.len() - 1)
            .map(|s| (s.size, s.retention_timestamp()))
            .collect();
        let mut count = 0;
        if self.config.retention_ms >= 0 {
            while count < closed.len()
                && now_ms.saturating_sub(closed[count].1) > self.config.retention_ms
            {
                count += 1;
            }
        }
        if self.config.retention_bytes >= 0 {
            let remaining: u64 =
                self.size_bytes() - closed[..count].iter().map(|c| c.0).sum::<u64>();
            let mut excess = i128::from(remaining) - i128::from(self.config.retention_bytes);
            while count < closed.len() && excess - i128::from(closed[count].0) >= 0 {
                excess -= i128::from(closed[count].0);
                count += 1;
            }
        }
        self.delete_oldest_segments(count, true)?;
        Ok(count)
    }

    /// Closed segments, oldest first (for the remote tier).
    pub fn closed_segments(&self) -> Vec<ClosedSegment> {
        self.segments
            .values()
            .take(self.segments.len() - 1)
            .map(|s| ClosedSegment {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size_bytes: s.size,
                retention_timestamp_ms: s.retention_timestamp(),
                file: s.file_on_demand(&self.disk),
            })
            .collect()
    }

    /// Replaces the bytes of the closed, durable segment starting at `base_offset` with `batches`
    /// (compaction): the new batches must have exactly the old batches' offset ranges, in order
    /// (records may be removed from a batch, even all of them; the batch stays, so offsets stay
    /// dense at the batch level). The new file is written beside the old one, fsynced, and
    /// renamed over it, then the directory is fsynced: a crash leaves the old or the new
    /// content, never a mix. Returns `Ok(false)` if the segment is no longer there or changed
    /// (retention, a concurrent rewrite).
    pub fn replace_closed_segment(
        &mut self,
        base_offset: i64,
        expected_size_bytes: u64,
        batches_new: &[u8],
    ) -> Result<bool, LogError> {
        let active_base = *self.segments.keys().next_back().expect("never empty");
        let Some(segment) = self.segments.get(&base_offset) else {
            return Ok(false);
        };
        if base_offset == active_base
            || segment.size != expected_size_bytes
            || segment.next_offset > self.durable_end_offset
        {
            return Ok(false);
        }
        // The old and the new batch ranges must be the same.
        let mut old = vec![0u8; segment.size as usize];
        read_exact_at(&*segment.file(&*self.disk)?, 0, &mut old)
            .map_err(io_error(|| format!("reading {}", segment.path.display())))?;
        let ranges = |bytes: &[u8]| -> Result<Vec<(i64, i64)>, String> {
            batches(bytes)
                .map(|item| {
                    item.map(|(h, _)| (h.base_offset, h.last_offset()))
                        .map_err(|e| e.to_string())
                })
                .collect()
        };
        let old_ranges = ranges(&old).map_err(|reason| LogError::CorruptLog {
            file: segment.path.clone(),
            position: 0,
            reason,
        })?;
        match ranges(batches_new) {
            Ok(new_ranges) if new_ranges == old_ranges => {}
            Ok(_) => {
                return Err(LogError::InvalidRewrite(format!(
                    "the rewrite of segment {base_offset} changes its batch offsets"
                )))
            }
            Err(reason) => {
                return Err(LogError::InvalidRewrite(format!(
                    "the rewrite of segment {base_offset} is not valid batches: {reason}"
                )))
            }
        }
        let path = segment.path.clone();
        let created_ms = segment.created_ms;
        let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", path.display()));
        let context = || format!("rewriting {}", path.display());
        let file = self.disk.open(&tmp, true).map_err(io_error(context))?;
        file.set_len(0).map_err(io_error(context))?;
        file.append(batches_new).map_err(io_error(context))?;
        file.sync().map_err(sync_error(context))?;
        drop(file);
        self.disk.rename(&tmp, &path).map_err(io_error(context))?;
        self.sync_dir()?;
        let file = self.disk.open(&path, false).map_err(io_error(context))?;
        let handles = &self.config.segment_handles;
        // A new segment, with a new key in the handle cache: no handle of the old file (the
        // old inode, which the rename unlinked) is ever served for it.
        let mut rebuilt = Segment::new(base_offset, path.clone(), file, handles, created_ms);
        match rebuilt.scan(true, self.config.index_interval_bytes, &mut |_| {})? {
            ScanEnd::Clean => {}
            ScanEnd::Problem {
                position, reason, ..
            } => {
                return Err(LogError::CorruptLog {
                    file: path,
                    position,
                    reason: format!("after a rewrite: {reason}"),
                })
            }
        }
        rebuilt.finish_time_index();
        write_index_files(&*self.disk, &self.dir, &rebuilt)?;
        // Closed and durable (the rename and the directory are synced): opened on demand.
        rebuilt.unpin();
        // Dropping the old segment drops its cached handle.
        let old = self.segments.insert(base_offset, rebuilt);
        debug_assert!(old.is_some());
        Ok(true)
    }

    /// Deletes the closed segments that hold only offsets below `offset` (never the active
    /// one), moving the log start offset, and forgets the producers whose last batch is below
    /// it (whole-log retention: those offsets are gone from every tier). Returns how many
    /// segments were deleted.
    pub fn delete_segments_below(&mut self, offset: i64) -> Result<usize, LogError> {
        let count = self.closed_count_below(offset);
        self.delete_oldest_segments(count, true)?;
        Ok(count)
    }

    /// Deletes the closed segments that hold only offsets below `offset` because the remote
    /// tier holds them (local retention of a tiered partition). The producer state is kept:
    /// a snapshot of it is written first (after a flush, so it names only durable batches),
    /// and `open` merges it back, so that a retry of a batch in a trimmed segment is still
    /// recognised as a duplicate. Returns how many segments were deleted.
    pub fn trim_local_below(&mut self, offset: i64) -> Result<usize, LogError> {
        let count = self.closed_count_below(offset);
        if count == 0 {
            return Ok(0);
        }
        self.write_producer_snapshot()?;
        self.delete_oldest_segments(count, false)?;
        Ok(count)
    }

    /// Flushes (so that the state names only durable batches), then writes the producer
    /// snapshot.
    fn write_producer_snapshot(&mut self) -> Result<(), LogError> {
        self.flush()?;
        write_file_atomic(
            &*self.disk,
            &self.dir,
            PRODUCER_SNAPSHOT_FILE,
            &self.producers.encode_snapshot(),
        )
    }

    /// Moves the log start offset up to `offset` (Kafka's DeleteRecords), which must be in
    /// `[log start, log end]`; a lower one is a no-op (the start never moves back). The
    /// `log-start-offset` checkpoint is written first (so the new start survives a crash and a
    /// restart), then the closed segments holding only offsets below it are deleted; a segment
    /// holding both sides stays, its lower offsets no longer readable. Producers whose last
    /// batch is below the new start are forgotten, as for retention. Returns the new start.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset > self.log_end_offset || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        let count = self.closed_count_below(offset);
        if count > 0 {
            self.delete_oldest_segments_to(count, true, offset)?;
        } else {
            write_checkpoint(&*self.disk, &self.dir, LOG_START_OFFSET_FILE, offset)?;
            self.log_start_offset = offset;
            self.producers.remove_below(offset);
        }
        Ok(offset)
    }

    fn closed_count_below(&self, offset: i64) -> usize {
        self.segments
            .values()
            .take(self.segments.len() - 1)
            .take_while(|s| s.next_offset <= offset)
            .count()
    }

    /// Deletes the `count` oldest segments (closed ones only); with `forget_producers`, the
    /// producers whose last batch is below the new start are forgotten (and a producer
    /// snapshot, if there is one, rewritten without them).
    fn delete_oldest_segments(
        &mut self,
        count: usize,
        forget_producers: bool,
    ) -> Result<(), LogError> {
        assert!(
            count < self.segments.len(),
            "the active segment is never deleted"
        );
        if count == 0 {
            return Ok(());
        }
        let new_start = *self
            .segments
            .keys()
            .nth(count)
            .expect("the active segment is never deleted");
        self.delete_oldest_segments_to(count, forget_producers, new_start)
    }

    /// [`Self::delete_oldest_segments`] with the new log start offset `new_start` (at least
    /// the first kept segment's base: it may lie inside that segment).
    fn delete_oldest_segments_to(
        &mut self,
        count: usize,
        forget_producers: bool,
        new_start: i64,
    ) -> Result<(), LogError> {
        // (DeleteRecords may have put the start inside the first kept segment already.)
        let new_start = new_start.max(self.log_start_offset);
        let doomed: Vec<i64> = self.segments.keys().take(count).copied().collect();
        // The checkpoint first: a crash before the removals are durable then deletes them on
        // open instead of resurrecting them.
        write_checkpoint(&*self.disk, &self.dir, LOG_START_OFFSET_FILE, new_start)?;
        self.log_start_offset = new_start;
        for base in doomed {
            self.segments.remove(&base);
            self.remove_segment_files(base)?;
        }
        self.sync_dir()?;
        let first_kept_base = *self.segments.keys().next().expect("never empty");
        self.durable_end_offset = self.durable_end_offset.max(first_kept_base);
        if forget_producers {
            self.producers.remove_below(new_start);
            if self.disk.exists(&self.dir.join(PRODUCER_SNAPSHOT_FILE)) {
                self.write_producer_snapshot()?;
            }
        }
        tracing::debug!(
            dir = %self.dir.display(),
            deleted = count,
            log_start_offset = new_start,
            "deleted segments"
        );
        Ok(())
    }

    /// Replaces the configuration (applies to later appends, rolls and retention checks). The
    /// log keeps the handle cache it was opened with, whatever `config.segment_handles` names.
    pub fn set_config(&mut self, config: LogConfig) {
        let segment_handles = Arc::clone(&self.config.segment_handles);
        self.config = LogConfig {
            segment_handles,
            ..config
        };
    }

    /// The current configuration.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The idempotent-producer state.
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producers
    }

    /// Flushes and writes the recovery checkpoint.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()?;
        write_checkpoint(
            &*self.disk,
            &self.dir,
            RECOVERY_POINT_FILE,
            self.durable_end_offset,
        )
    }
}

/// Whether a closed segment's index files exist with the contents rebuilt by the scan.
fn index_files_match(disk: &dyn Disk, dir: &Path, segment: &Segment) -> Result<bool, LogError> {
    for (extension, bytes) in [
        (INDEX_EXTENSION, segment.offset_index.encode()),
        (TIME_INDEX_EXTENSION, segment.time_index.encode()),
    ] {
        let path = sibling_path(dir, segment.base_offset, extension);
        if !disk.exists(&path) {
            return Ok(false);
        }
        let context = || format!("reading {}", path.display());
        let file = disk.open(&path, false).map_err(io_error(context))?;
        if file.len().map_err(io_error(context))? != bytes.len() as u64 {
            return Ok(false);
        }
        let mut on_disk = vec![0u8; bytes.len()];
        read_exact_at(&*file, 0, &mut on_disk).map_err(io_error(context))?;
        if on_disk != bytes {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes a closed segment's `.index` and `.timeindex` (derived data: not synced).
fn write_index_files(disk: &dyn Disk, dir: &Path, segment: &Segment) -> Result<(), LogError> {
    for (extension, bytes) in [
        (INDEX_EXTENSION, segment.offset_index.encode()),
        (TIME_INDEX_EXTENSION, segment.time_index.encode()),
    ] {
        let path = sibling_path(dir, segment.base_offset, extension);
        let context = || format!("writing {}", path.display());
        let file = disk.open(&path, true).map_err(io_error(context))?;
        file.set_len(0).map_err(io_error(context))?;
        file.append(&bytes).map_err(io_error(context))?;
    }
    Ok(())
}
