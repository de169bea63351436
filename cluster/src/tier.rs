//! The broker side of tiered storage: the tier task (offload, local and whole-log retention of
//! `remote.storage.enable` topics), reads below the local start offset, and the status shown
//! by `GET /v1/tier/status` and `strata tier status`. Also local compaction
//! ([`compact_local_partition`], run by the broker's cleaner) and when it is due
//! ([`CompactionPolicy`]).
//!
//! # Order of operations (what makes it safe)
//!
//! 1. A closed segment is offloaded only once it is wholly durable locally (below the high
//!    watermark): the Parquet file is uploaded, then the manifest naming it is written.
//! 2. A local segment is deleted (local retention, `local.retention.ms` / `local.retention.bytes`)
//!    only once the manifest covering it is written: the remote tier then holds its records.
//! 3. Whole-log retention (`retention.ms` / `retention.bytes`) removes remote files (manifest
//!    first, objects after) and then the local segments wholly below the new log start.
//!
//! An object-store outage stops steps 1-3 for the partition (each tick retries; the error and the
//! pending segments show in the status and metrics); produce and reads of local data go on.
//!
//! # Architecture invariant
//!
//! Never hold a partition's log lock across an await: segment files are read (closed segments are
//! immutable) and encoded outside it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use strata_storage::disk::read_exact_at;
use strata_storage::tier::compact::{compact, plan_local_compaction, CompactionConfig};
use strata_storage::tier::parquet_file::{encode_segment, EncodeOptions};
use strata_storage::tier::remote::{ReadCache, RemoteLog, TierError};
use strata_storage::ClosedSegment;

use crate::broker::{Broker, Partition, Topic};
use crate::errors::BrokerError;

/// Target bytes of source batches per Parquet row group (a fetch reads whole row groups).
pub const ROW_GROUP_BYTES_TARGET: usize = 4 * 1024 * 1024;

/// Longest a Fetch or ListOffsets waits on the object store before answering
/// KAFKA_STORAGE_ERROR (retriable) for that partition: a slow store must not hold a whole
/// fetch response.
pub const REMOTE_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest one tier tick of one partition (uploads of a whole segment included) may take
/// before it is abandoned and retried on the next tick.
pub const TIER_TICK_TIMEOUT: Duration = Duration::from_secs(600);

/// The resolved tiering settings of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierConfig {
    /// `remote.storage.enable`.
    pub remote_storage_enable: bool,
    /// `local.retention.ms` (-2 resolved to `retention.ms`; -1 = no limit).
    pub local_retention_ms: i64,
    /// `local.retention.bytes` (-2 resolved to `retention.bytes`; -1 = no limit).
    pub local_retention_bytes: i64,
    /// `retention.ms` of the whole log (-1 = forever).
    pub retention_ms: i64,
    /// `retention.bytes` of the whole log (-1 = no limit).
    pub retention_bytes: i64,
    /// `cleanup.policy` includes `compact`.
    pub compact: bool,
    /// `cleanup.policy` includes `delete`: `retention.*` apply to the whole log.
    pub delete: bool,
    /// `delete.retention.ms`.
    pub delete_retention_ms: i64,
}

/// When a compacted log that is not tiered is compacted: the topic's cleaner settings, Kafka's
/// names. See docs/tiering.md ("Compaction") for what "dirty" means here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionPolicy {
    /// `min.cleanable.dirty.ratio`: compact when the dirty bytes are at least this share of the
    /// cleanable bytes.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: segments holding a record newer than this (and every segment
    /// after them) are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: compact whatever the ratio once the oldest dirty segment's first
    /// batch is older than this.
    pub max_compaction_lag_ms: i64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_cleanable_dirty_ratio: crate::config::MIN_CLEANABLE_DIRTY_RATIO_DEFAULT,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

/// The maxTimestamp of the first batch of `segment` (Kafka's `getFirstBatchTimestamp`), if it
/// can be read.
fn first_batch_timestamp(segment: &ClosedSegment) -> Option<i64> {
    let mut header = [0u8; strata_storage::batch::BATCH_HEADER_BYTES];
    strata_storage::disk::read_exact_at(&*segment.file, 0, &mut header).ok()?;
    strata_storage::BatchHeader::parse(&header)
        .ok()
        .map(|h| h.max_timestamp)
}

/// What the tier task last saw of a partition (shown by the status endpoint).
#[derive(Debug, Clone, Default)]
struct TierProgress {
    pending_segments: u64,
    pending_bytes: u64,
    /// Broker clock time since when the oldest pending segment has been waiting.
    oldest_pending_since_ms: Option<(i64, i64)>,
    last_error: Option<String>,
}

/// Per-partition tier state, held by [`Partition`].
#[derive(Default)]
pub struct PartitionTier {
    remote: Mutex<Option<Arc<RemoteLog>>>,
    progress: Mutex<TierProgress>,
    /// Remote start offset last seen (`i64::MIN` until the remote tier is opened), for
    /// metadata answers that cannot await.
    remote_start_offset: AtomicI64,
    /// Compacted topics: the end offset (remote end, closed local end) of the last compaction
    /// pass, and when its oldest kept tombstone expires.
    /// (and the `delete.retention.ms` it ran with).
    compacted: Mutex<Option<(i64, Option<i64>, i64)>>,
    /// Local compaction: the bytes of batches that still held records after the last pass
    /// ([`strata_storage::tier::compact::LocalCompactionPlan::live_bytes`]).
    compacted_live_bytes: AtomicU64,
}

impl std::fmt::Debug for PartitionTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionTier").finish_non_exhaustive()
    }
}

impl PartitionTier {
    /// A partition whose remote tier is not opened yet.
    pub fn new() -> PartitionTier {
        PartitionTier {
            remote: Mutex::new(None),
            progress: Mutex::new(TierProgress::default()),
            remote_start_offset: AtomicI64::new(i64::MIN),
            compacted: Mutex::new(None),
            compacted_live_bytes: AtomicU64::new(0),
        }
    }

    /// The remote tier, once opened by the tier task.
    pub fn remote(&self) -> Option<Arc<RemoteLog>> {
        self.remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, TierProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_error(&self, error: Option<String>) {
        self.progress().last_error = error;
    }

    /// Whether a compaction pass has work: never ran, segments were closed since
    /// (`closed_end` moved), a kept tombstone expired, or `delete.retention.ms` changed.
    fn compaction_due(&self, closed_end: i64, now_ms: i64, delete_retention_ms: i64) -> bool {
        match *self.compacted.lock().unwrap_or_else(|p| p.into_inner()) {
            None => true,
            Some((end, expiry_ms, retention_ms)) => {
                end != closed_end
                    || expiry_ms.is_some_and(|t| now_ms >= t)
                    || retention_ms != delete_retention_ms
            }
        }
    }

    /// Whether a local compaction pass over `cleanable` (the closed, durable segments before the
    /// first one too new for `min.compaction.lag.ms`) has work: a kept tombstone expired,
    /// `delete.retention.ms` changed, or there are dirty segments (at or after the end of the last
    /// pass) and either they are at least `min.cleanable.dirty.ratio` of the cleanable bytes or
    /// the first of them is older than `max.compaction.lag.ms`.
    fn local_compaction_due(
        &self,
        cleanable: &[ClosedSegment],
        now_ms: i64,
        delete_retention_ms: i64,
        policy: CompactionPolicy,
    ) -> bool {
        let last_end = match *self.compacted.lock().unwrap_or_else(|p| p.into_inner()) {
            None => i64::MIN,
            Some((end, expiry_ms, retention_ms)) => {
                if expiry_ms.is_some_and(|t| now_ms >= t) || retention_ms != delete_retention_ms {
                    return true;
                }
                end
            }
        };
        let dirty: Vec<&ClosedSegment> = cleanable
            .iter()
            .filter(|s| s.base_offset >= last_end && s.size_bytes > 0)
            .collect();
        let Some(first_dirty) = dirty.first() else {
            return false;
        };
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size_bytes).sum();
        // Clean bytes: what the last pass left in batches with records (emptied batches, which
        // Kafka's cleaner drops, do not count), at most what is still there (retention may
        // have deleted segments since).
        let clean_bytes: u64 = cleanable
            .iter()
            .filter(|s| s.base_offset < last_end)
            .map(|s| s.size_bytes)
            .sum::<u64>()
            .min(self.compacted_live_bytes.load(Ordering::SeqCst));
        let ratio = dirty_bytes as f64 / (clean_bytes + dirty_bytes).max(1) as f64;
        ratio >= policy.min_cleanable_dirty_ratio
            || (policy.max_compaction_lag_ms != i64::MAX
                && first_batch_timestamp(first_dirty)
                    .is_some_and(|ts| now_ms.saturating_sub(ts) > policy.max_compaction_lag_ms))
    }

    /// Records a compaction pass up to `closed_end`.
    fn compaction_done(
        &self,
        closed_end: i64,
        next_tombstone_expiry_ms: Option<i64>,
        delete_retention_ms: i64,
    ) {
        *self.compacted.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((closed_end, next_tombstone_expiry_ms, delete_retention_ms));
    }

    /// The first offset of the whole log, given the local log's start: the remote tier's start
    /// when it holds files, the local start otherwise.
    pub fn log_start_offset(&self, local_start_offset: i64) -> i64 {
        match self.remote().and_then(|r| r.manifest().start_offset()) {
            Some(remote_start) => remote_start,
            None => local_start_offset,
        }
    }
}

/// Where a read at some offset must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    /// The local log holds it.
    Local,
    /// The remote tier holds it.
    Remote,
    /// Below the log start offset (or the remote tier, which may hold it, is not open yet:
    /// `remote_pending`).
    OutOfRange {
        /// The remote tier is configured but not opened yet (object store unreachable since
        /// start): the offset may exist; answer a retriable error, not out-of-range.
        remote_pending: bool,
    },
}

/// Decides where `offset` (below the local log start or not) is read from.
pub fn read_source(
    partition: &Partition,
    tiered: bool,
    offset: i64,
    local_start_offset: i64,
) -> ReadSource {
    if offset >= local_start_offset {
        return ReadSource::Local;
    }
    match partition.tier().remote() {
        Some(remote) => match remote.manifest().start_offset() {
            Some(start) if offset >= start => ReadSource::Remote,
            _ => ReadSource::OutOfRange {
                remote_pending: false,
            },
        },
        None => ReadSource::OutOfRange {
            remote_pending: tiered,
        },
    }
}

/// Reads batches from the remote tier at `offset` (up to `max_bytes`, at least one batch).
pub async fn read_remote(
    broker: &Broker,
    partition: &Partition,
    offset: i64,
    max_bytes: usize,
) -> Result<Bytes, BrokerError> {
    let Some(remote) = partition.tier().remote() else {
        return Err(BrokerError::Tier(format!(
            "{}-{}: the remote tier is not open yet",
            partition.topic(),
            partition.index()
        )));
    };
    let read = tokio::time::timeout(REMOTE_READ_TIMEOUT, remote.read(offset, max_bytes)).await;
    let Ok(read) = read else {
        tracing::warn!(
            topic = partition.topic(),
            partition = partition.index(),
            "remote read timed out"
        );
        return Err(BrokerError::Tier(format!(
            "reading offset {offset} from the object store timed out after {} s",
            REMOTE_READ_TIMEOUT.as_secs()
        )));
    };
    match read {
        Ok(bytes) => {
            broker.metrics().record_remote_read(bytes.len());
            Ok(bytes)
        }
        Err(TierError::OffsetNotRemote { offset }) => Err(BrokerError::OffsetOutOfRange(format!(
            "{}-{}: offset {offset}",
            partition.topic(),
            partition.index()
        ))),
        Err(error) => {
            tracing::warn!(topic = partition.topic(), partition = partition.index(), %error, "remote read failed");
            Err(BrokerError::Tier(error.to_string()))
        }
    }
}

/// First offset whose timestamp is at least `ts_ms` in the remote tier (ListOffsets by time).
pub async fn remote_offset_for_timestamp(
    partition: &Partition,
    ts_ms: i64,
) -> Result<Option<(i64, i64)>, BrokerError> {
    let Some(remote) = partition.tier().remote() else {
        return Ok(None);
    };
    match tokio::time::timeout(REMOTE_READ_TIMEOUT, remote.offset_for_timestamp(ts_ms)).await {
        Ok(result) => result.map_err(|e| BrokerError::Tier(e.to_string())),
        Err(_) => Err(BrokerError::Tier(
            "a timestamp lookup in the object store timed out".to_string(),
        )),
    }
}

/// The tier task: every `tier_interval_ms`, each tiered partition is offloaded and trimmed.
pub async fn run(broker: Arc<Broker>, store: Arc<dyn ObjectStore>, cache: Arc<ReadCache>) {
    let interval = Duration::from_millis(broker.config().tier_interval_ms.max(1));
    loop {
        for topic in broker.topics() {
            let config = topic.tier_config(broker.config());
            if !config.remote_storage_enable || topic.is_internal() {
                continue;
            }
            for partition in topic.partitions() {
                if broker.is_shutting_down() {
                    return;
                }
                let tick = tick_partition(&broker, &topic, partition, &store, &cache, config);
                // Shutdown does not wait for an upload: dropping one mid-way leaves at most an
                // orphan file (see the module docs).
                let timed = tokio::select! {
                    biased;
                    _ = broker.shutdown_started() => return,
                    timed = tokio::time::timeout(TIER_TICK_TIMEOUT, tick) => timed,
                };
                let result = match timed {
                    Ok(result) => result,
                    Err(_) => Err(BrokerError::Tier(format!(
                        "tiering did not finish within {} s",
                        TIER_TICK_TIMEOUT.as_secs()
                    ))),
                };
                match result {
                    Ok(()) => partition.tier().set_error(None),
                    Err(BrokerError::ShuttingDown)
                    | Err(BrokerError::UnknownTopicOrPartition(_)) => {}
                    Err(error) => {
                        broker.metrics().record_offload_error();
                        tracing::warn!(topic = topic.name(), partition = partition.index(), %error, "tiering failed; retrying");
                        partition.tier().set_error(Some(error.to_string()));
                    }
                }
            }
        }
        tokio::select! {
            biased;
            _ = broker.shutdown_started() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn open_remote(
    topic_id: uuid::Uuid,
    partition: &Partition,
    store: &Arc<dyn ObjectStore>,
    cache: &Arc<ReadCache>,
) -> Result<Arc<RemoteLog>, BrokerError> {
    if let Some(remote) = partition.tier().remote() {
        return Ok(remote);
    }
    let remote = RemoteLog::open_with_topic_id(
        Arc::clone(store),
        Arc::clone(cache),
        partition.topic(),
        Some(&topic_id.to_string()),
        partition.index(),
    )
    .await
    .map_err(|e| BrokerError::Tier(e.to_string()))?;
    let remote = Arc::new(remote);
    *partition
        .tier()
        .remote
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&remote));
    Ok(remote)
}

/// Reads a closed segment's bytes and encodes them as a Parquet file (CPU-bound: off the async
/// workers when there is a thread pool).
async fn encode(
    segment: ClosedSegment,
    options: EncodeOptions,
) -> Result<strata_storage::tier::parquet_file::SegmentFile, BrokerError> {
    let work = move || -> Result<_, String> {
        let size = usize::try_from(segment.size_bytes).map_err(|e| e.to_string())?;
        let mut bytes = vec![0u8; size];
        read_exact_at(&*segment.file, 0, &mut bytes)
            .map_err(|e| format!("reading segment {}: {e}", segment.base_offset))?;
        encode_segment(&bytes, &options)
            .map_err(|e| format!("encoding segment {}: {e}", segment.base_offset))
    };
    #[cfg(not(madsim))]
    let result = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BrokerError::Tier(format!("encoding task failed: {e}")))?;
    #[cfg(madsim)]
    let result = work();
    result.map_err(BrokerError::Tier)
}

async fn tick_partition(
    broker: &Broker,
    topic: &Topic,
    partition: &Partition,
    store: &Arc<dyn ObjectStore>,
    cache: &Arc<ReadCache>,
    config: TierConfig,
) -> Result<(), BrokerError> {
    if partition.offline_reason().is_some() {
        return Ok(());
    }
    let remote = open_remote(topic.id(), partition, store, cache).await?;
    let tier_error = |e: TierError| BrokerError::Tier(e.to_string());

    // 1. Offload closed, durable segments in offset order.
    loop {
        let closed = partition.with_log(|log| Ok(log.closed_segments()))?;
        let high_watermark = partition.high_watermark();
        let manifest = remote.manifest();
        let remote_end = manifest.end_offset();
        let pending: Vec<&ClosedSegment> = closed
            .iter()
            .filter(|s| remote_end.is_none_or(|end| s.base_offset >= end) && s.size_bytes > 0)
            .collect();
        {
            let now_ms = broker.clock().now_ms();
            let mut progress = partition.tier().progress();
            progress.pending_segments = pending.len() as u64;
            progress.pending_bytes = pending.iter().map(|s| s.size_bytes).sum();
            progress.oldest_pending_since_ms =
                match (pending.first(), progress.oldest_pending_since_ms) {
                    (None, _) => None,
                    (Some(s), Some((base, since))) if base == s.base_offset => Some((base, since)),
                    (Some(s), _) => Some((s.base_offset, now_ms)),
                };
        }
        let Some(segment) = pending.first().filter(|s| s.next_offset <= high_watermark) else {
            break;
        };
        let options = EncodeOptions {
            row_group_bytes_target: ROW_GROUP_BYTES_TARGET,
            topic: topic.name().to_string(),
            partition: partition.index(),
        };
        let file = encode((*segment).clone(), options).await?;
        let batch_bytes = file.batch_bytes;
        let uploaded = remote
            .offload(file, broker.clock().now_ms())
            .await
            .map_err(tier_error)?;
        broker
            .metrics()
            .record_offload(batch_bytes, uploaded.size_bytes);
        tracing::debug!(topic = topic.name(), partition = partition.index(), file = %uploaded.name, "offloaded a segment");
        partition.tier().remote_start_offset.store(
            remote.manifest().start_offset().unwrap_or(i64::MIN),
            Ordering::SeqCst,
        );
    }

    // 2. Compaction of the remote tier (compacted topics), when new data was offloaded or
    //    closed since the last pass, or tombstones may have expired.
    if config.compact {
        compact_partition(broker, topic, partition, &remote, config).await?;
    }

    // 3. Local retention: only segments the manifest covers.
    let now_ms = broker.clock().now_ms();
    if let Some(remote_end) = remote.manifest().end_offset() {
        let (closed, local_bytes) =
            partition.with_log(|log| Ok((log.closed_segments(), log.size_bytes())))?;
        let mut size = local_bytes;
        let mut delete_below = None;
        for segment in closed.iter().take_while(|s| s.next_offset <= remote_end) {
            let too_old = config.local_retention_ms >= 0
                && now_ms.saturating_sub(segment.retention_timestamp_ms)
                    > config.local_retention_ms;
            let too_big = config.local_retention_bytes >= 0
                && size >= segment.size_bytes + config.local_retention_bytes as u64;
            if !(too_old || too_big) {
                break;
            }
            size -= segment.size_bytes;
            delete_below = Some(segment.next_offset);
        }
        if let Some(offset) = delete_below {
            // Local retention only: the producer state stays (see `trim_local_below`).
            let deleted = partition.with_log(|log| log.trim_local_below(offset))?;
            broker.metrics().record_local_segments_deleted(deleted);
        }
    }

    // 4. Whole-log retention (`cleanup.policy` with delete): remote files first, then local
    //    segments below the new start.
    if !config.delete {
        return Ok(());
    }
    let (local_bytes_above_remote, local_start) = partition.with_log(|log| {
        let end = remote.manifest().end_offset().unwrap_or(i64::MIN);
        let below: u64 = log
            .closed_segments()
            .iter()
            .filter(|s| s.next_offset <= end)
            .map(|s| s.size_bytes)
            .sum();
        Ok((log.size_bytes() - below, log.log_start_offset()))
    })?;
    let outcome = remote
        .apply_retention(
            config.retention_ms,
            config.retention_bytes,
            local_bytes_above_remote,
            0,
            now_ms,
        )
        .await
        .map_err(tier_error)?;
    if let Some(new_start) = outcome.log_start_offset {
        if new_start > local_start {
            partition.with_log(|log| log.delete_segments_below(new_start))?;
        }
        tracing::debug!(
            topic = topic.name(),
            partition = partition.index(),
            files = outcome.files_deleted,
            log_start_offset = new_start,
            "remote retention"
        );
    }
    partition.tier().remote_start_offset.store(
        remote.manifest().start_offset().unwrap_or(i64::MIN),
        Ordering::SeqCst,
    );
    Ok(())
}

async fn compact_partition(
    broker: &Broker,
    topic: &Topic,
    partition: &Partition,
    remote: &RemoteLog,
    config: TierConfig,
) -> Result<(), BrokerError> {
    let Some(remote_end) = remote.manifest().end_offset() else {
        return Ok(());
    };
    let closed = partition.with_log(|log| Ok(log.closed_segments()))?;
    let closed_end = closed
        .last()
        .map_or(remote_end, |s| s.next_offset.max(remote_end));
    let now_ms = broker.clock().now_ms();
    if !partition
        .tier()
        .compaction_due(closed_end, now_ms, config.delete_retention_ms)
    {
        return Ok(());
    }
    let compaction = CompactionConfig {
        delete_retention_ms: config.delete_retention_ms,
        now_ms,
        encode: EncodeOptions {
            row_group_bytes_target: ROW_GROUP_BYTES_TARGET,
            topic: topic.name().to_string(),
            partition: partition.index(),
        },
    };
    let outcome = compact(remote, &closed, &compaction)
        .await
        .map_err(|e| BrokerError::Tier(e.to_string()))?;
    partition.tier().compaction_done(
        closed_end,
        outcome.next_tombstone_expiry_ms,
        config.delete_retention_ms,
    );
    if outcome.files_rewritten > 0 {
        broker
            .metrics()
            .record_compaction(outcome.files_rewritten, outcome.records_removed);
        tracing::debug!(
            topic = topic.name(),
            partition = partition.index(),
            ?outcome,
            "compacted the remote tier"
        );
    }
    Ok(())
}

/// Compacts the closed, durable local segments of a compacted topic that is not tiered
/// (`__consumer_offsets` among them) when [`PartitionTier::local_compaction_due`] says so (the
/// broker's cleaner asks every `log.cleaner.backoff.ms`). Only the segments before the first one
/// holding a record newer than `min.compaction.lag.ms` take part (Kafka's first uncleanable
/// offset). Segments are read and the rewrite planned without the log's lock; each rewrite then
/// takes it briefly. Failures are logged (compaction retries next check).
pub fn compact_local_partition(
    broker: &Broker,
    topic: &Topic,
    partition: &Partition,
    config: TierConfig,
    policy: CompactionPolicy,
) {
    if partition.offline_reason().is_some() {
        return;
    }
    let now_ms = broker.clock().now_ms();
    let Ok(closed) = partition.with_log(|log| {
        let durable_end = log.durable_end_offset();
        Ok(log
            .closed_segments()
            .into_iter()
            .filter(|s| s.next_offset <= durable_end)
            .take_while(|s| {
                now_ms.saturating_sub(s.retention_timestamp_ms) >= policy.min_compaction_lag_ms
            })
            .collect::<Vec<_>>())
    }) else {
        return;
    };
    let Some(closed_end) = closed.last().map(|s| s.next_offset) else {
        return;
    };
    if !partition
        .tier()
        .local_compaction_due(&closed, now_ms, config.delete_retention_ms, policy)
    {
        return;
    }
    let plan = match plan_local_compaction(&closed, config.delete_retention_ms, now_ms) {
        Ok(plan) => plan,
        Err(error) => {
            tracing::warn!(topic = topic.name(), partition = partition.index(), %error, "local compaction failed");
            return;
        }
    };
    let mut records_removed = 0u64;
    let mut rewritten = 0usize;
    let next_expiry = plan.next_tombstone_expiry_ms;
    for rewrite in plan.rewrites {
        match partition.with_log(|log| {
            log.replace_closed_segment(
                rewrite.base_offset,
                rewrite.size_bytes_before,
                &rewrite.batches,
            )
        }) {
            Ok(true) => {
                rewritten += 1;
                records_removed += rewrite.records_removed;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(topic = topic.name(), partition = partition.index(), %error, "local compaction failed");
                return;
            }
        }
    }
    partition
        .tier()
        .compaction_done(closed_end, next_expiry, config.delete_retention_ms);
    partition
        .tier()
        .compacted_live_bytes
        .store(plan.live_bytes, Ordering::SeqCst);
    if rewritten > 0 {
        broker
            .metrics()
            .record_compaction(rewritten, records_removed);
        tracing::debug!(
            topic = topic.name(),
            partition = partition.index(),
            rewritten,
            records_removed,
            "compacted local segments"
        );
    }
}

/// Deletes a deleted topic's remote files (best effort: failures are logged; the files are then
/// orphans of a topic that no longer exists).
pub async fn delete_remote(
    store: Arc<dyn ObjectStore>,
    cache: Arc<ReadCache>,
    topic: String,
    topic_id: uuid::Uuid,
    partitions: i32,
) {
    let topic_id = topic_id.to_string();
    for index in 0..partitions {
        let result = async {
            let remote =
                RemoteLog::open(Arc::clone(&store), Arc::clone(&cache), &topic, index).await?;
            // A topic of the same name created since owns what is there now.
            if remote
                .manifest()
                .topic_id
                .as_ref()
                .is_some_and(|id| *id != topic_id)
            {
                return Ok(());
            }
            remote.delete_all().await
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(topic = %topic, partition = index, %error, "cannot delete the remote files of a deleted topic");
        }
    }
}

/// The document served at `GET /v1/tier/status` (and read by `strata tier status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierStatusDocument {
    /// One entry per partition.
    pub partitions: Vec<PartitionStatus>,
}

/// One partition in `GET /v1/tier/status`. Offsets are Kafka offsets; ranges are `[start, end)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// `remote.storage.enable` of the topic (and the broker has an object store).
    pub remote_storage_enable: bool,
    /// First offset of the whole log.
    pub log_start_offset: i64,
    /// First offset held locally.
    pub local_start_offset: i64,
    /// Next offset to be written.
    pub log_end_offset: i64,
    /// High watermark.
    pub high_watermark: i64,
    /// First offset held remotely (`null` if none).
    pub remote_start_offset: Option<i64>,
    /// The offset after the last one held remotely (`null` if none).
    pub remote_end_offset: Option<i64>,
    /// Live remote files.
    pub remote_files: usize,
    /// Bytes of the live remote files.
    pub remote_bytes: u64,
    /// Bytes of the local segments.
    pub local_bytes: u64,
    /// Closed segments not yet offloaded.
    pub pending_segments: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// How long the oldest pending segment has been waiting.
    pub offload_lag_ms: i64,
    /// The last tiering error, cleared by the next successful tick.
    pub last_error: Option<String>,
}

/// The tier status of every partition (`topic` filters).
pub fn status(broker: &Broker, topic_filter: Option<&str>) -> Vec<PartitionStatus> {
    let now_ms = broker.clock().now_ms();
    let mut out = Vec::new();
    for topic in broker.topics() {
        if topic_filter.is_some_and(|t| t != topic.name()) || topic.is_internal() {
            continue;
        }
        let enabled = topic.tier_config(broker.config()).remote_storage_enable
            && broker.remote_store().is_some();
        for partition in topic.partitions() {
            let Ok((local_start, end, local_bytes)) = partition.with_log(|log| {
                Ok((
                    log.log_start_offset(),
                    log.log_end_offset(),
                    log.size_bytes(),
                ))
            }) else {
                continue;
            };
            let tier = partition.tier();
            let manifest = tier.remote().map(|r| r.manifest());
            let mut progress = tier.progress().clone();
            if enabled {
                // Pending now, not as the tier task last saw it: closed segments above the
                // remote end.
                let remote_end = manifest.as_ref().and_then(|m| m.end_offset());
                if let Ok(closed) = partition.with_log(|log| Ok(log.closed_segments())) {
                    let pending: Vec<&ClosedSegment> = closed
                        .iter()
                        .filter(|s| {
                            s.size_bytes > 0 && remote_end.is_none_or(|end| s.base_offset >= end)
                        })
                        .collect();
                    progress.pending_segments = pending.len() as u64;
                    progress.pending_bytes = pending.iter().map(|s| s.size_bytes).sum();
                    if pending.is_empty() {
                        progress.oldest_pending_since_ms = None;
                    }
                }
            }
            out.push(PartitionStatus {
                topic: topic.name().to_string(),
                partition: partition.index(),
                remote_storage_enable: enabled,
                log_start_offset: tier.log_start_offset(local_start),
                local_start_offset: local_start,
                log_end_offset: end,
                high_watermark: partition.high_watermark(),
                remote_start_offset: manifest.as_ref().and_then(|m| m.start_offset()),
                remote_end_offset: manifest.as_ref().and_then(|m| m.end_offset()),
                remote_files: manifest.as_ref().map_or(0, |m| m.files.len()),
                remote_bytes: manifest.as_ref().map_or(0, |m| m.size_bytes()),
                local_bytes,
                pending_segments: progress.pending_segments,
                pending_bytes: progress.pending_bytes,
                offload_lag_ms: progress
                    .oldest_pending_since_ms
                    .map_or(0, |(_, since)| now_ms.saturating_sub(since).max(0)),
                last_error: progress.last_error,
            });
        }
    }
    out
}

/// `GET /v1/tier/status` body.
pub fn status_json(broker: &Broker, topic_filter: Option<&str>) -> String {
    serde_json::to_string(&TierStatusDocument {
        partitions: status(broker, topic_filter),
    })
    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
