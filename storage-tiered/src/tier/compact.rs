//! Key-based compaction (`cleanup.policy=compact` and `compact,delete`): of the remote tier
//! ([`compact`], which Kafka's own tiered storage cannot do) and of local segments
//! ([`plan_local_compaction`], for topics that are not tiered, `__consumer_offsets` among them).
//!
//! # What a pass does
//!
//! 1. Builds the key map: for every key, the offset of its latest record, over every remote file
//!    and every closed local segment not yet offloaded (the active segment is left out, as
//!    Kafka's cleaner leaves it out: compaction is eventual).
//! 2. Rewrites each remote file that holds a record which is not its key's latest, or a
//!    tombstone (null value) that is its key's latest and older than `delete.retention.ms`
//!    (by its timestamp). Records without a key are kept.
//! 3. Rewritten batches keep their original base and last offsets (Kafka's cleaner does the
//!    same), so offsets are kept, with gaps; batches left without records are dropped, and a
//!    file left without records is removed from the manifest.
//!
//! The file replacement order (new file, manifest, old file deletion) is
//! [`super::remote::RemoteLog::replace_file`]'s.
//!
//! Memory: the key map holds every distinct key (and its offset) of the partition.

use std::collections::HashMap;

use bytes::Bytes;

use super::parquet_file::{encode_segment, EncodeOptions, TierCodecError};
use super::records::{decode_batch, encode_batch, RecordError};
use super::remote::{RemoteLog, TierError};
use crate::batch::batches;
use crate::disk::read_exact_at;
use crate::log::ClosedSegment;

/// Settings of one compaction pass.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// `delete.retention.ms`: how long a tombstone is kept after its timestamp.
    pub delete_retention_ms: i64,
    /// The broker clock now.
    pub now_ms: i64,
    /// How rewritten files are encoded.
    pub encode: EncodeOptions,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Remote files rewritten (or removed, when nothing in them was kept).
    pub files_rewritten: usize,
    /// Records removed from the remote tier.
    pub records_removed: u64,
    /// Distinct keys seen.
    pub keys: usize,
    /// When the oldest tombstone kept will have expired (a pass then has work to do).
    pub next_tombstone_expiry_ms: Option<i64>,
}

/// The latest offset of each key.
#[derive(Debug, Default)]
struct KeyMap {
    latest: HashMap<Bytes, i64>,
}

impl KeyMap {
    /// Adds every batch of a local segment's bytes.
    fn add_segment(&mut self, base_offset: i64, bytes: &[u8]) -> Result<(), TierError> {
        for item in batches(bytes) {
            let (_, batch) = item.map_err(|e| TierError::Invalid {
                context: format!("local segment {base_offset}"),
                reason: e.to_string(),
            })?;
            self.add_batch(batch).map_err(record_error(format!(
                "a batch of local segment {base_offset}"
            )))?;
        }
        Ok(())
    }

    fn add_batch(&mut self, batch: &[u8]) -> Result<(), RecordError> {
        let (_, rows) = decode_batch(batch)?;
        for row in rows {
            if let Some(key) = row.key {
                let entry = self.latest.entry(key).or_insert(row.offset);
                *entry = (*entry).max(row.offset);
            }
        }
        Ok(())
    }
}

fn record_error(context: String) -> impl FnOnce(RecordError) -> TierError {
    move |source| TierError::Codec {
        context,
        source: TierCodecError::Record {
            base_offset: -1,
            source,
        },
    }
}

/// A closed local segment's new bytes, for [`crate::PartitionLog::replace_closed_segment`].
#[derive(Debug, Clone)]
pub struct SegmentRewrite {
    /// The segment.
    pub base_offset: i64,
    /// Its size when it was read (the rewrite is skipped if it changed since).
    pub size_bytes_before: u64,
    /// The same batches (same offset ranges), with the removed records left out.
    pub batches: Vec<u8>,
    /// Records left out.
    pub records_removed: u64,
}

fn read_segment(segment: &ClosedSegment) -> Result<Vec<u8>, TierError> {
    let size = usize::try_from(segment.size_bytes).map_err(|e| TierError::Invalid {
        context: format!("local segment {}", segment.base_offset),
        reason: e.to_string(),
    })?;
    let mut bytes = vec![0u8; size];
    read_exact_at(&*segment.file, 0, &mut bytes).map_err(|e| TierError::Invalid {
        context: format!("reading local segment {}", segment.base_offset),
        reason: e.to_string(),
    })?;
    Ok(bytes)
}

/// One planned compaction pass over closed local segments; see [`plan_local_compaction`].
#[derive(Debug, Clone, Default)]
pub struct LocalCompactionPlan {
    /// The segments to rewrite.
    pub rewrites: Vec<SegmentRewrite>,
    /// When the oldest kept tombstone expires.
    pub next_tombstone_expiry_ms: Option<i64>,
    /// Bytes of the batches that still hold records after the pass, over all the segments: what
    /// Kafka's cleaner would leave (it drops emptied batches, which Strata keeps so that batch
    /// offsets stay dense). The cleaner's dirty ratio counts these as the clean bytes.
    pub live_bytes: u64,
}

/// Plans one compaction pass over closed local segments (read without the log's lock: closed
/// segments are immutable): the key map is built over all of them, and each segment holding a
/// record to remove gets a [`SegmentRewrite`] that keeps every batch (a batch may end up with
/// no record, so batch offsets stay dense).
pub fn plan_local_compaction(
    segments: &[ClosedSegment],
    delete_retention_ms: i64,
    now_ms: i64,
) -> Result<LocalCompactionPlan, TierError> {
    let mut map = KeyMap::default();
    let mut contents = Vec::with_capacity(segments.len());
    for segment in segments {
        let bytes = read_segment(segment)?;
        map.add_segment(segment.base_offset, &bytes)?;
        contents.push(bytes);
    }
    let mut plan = LocalCompactionPlan::default();
    for (segment, bytes) in segments.iter().zip(contents) {
        let mut out = Vec::with_capacity(bytes.len());
        let mut removed = 0u64;
        for item in batches(&bytes) {
            let (_, batch) = item.map_err(|e| TierError::Invalid {
                context: format!("local segment {}", segment.base_offset),
                reason: e.to_string(),
            })?;
            let (meta, rows) = decode_batch(batch).map_err(record_error(format!(
                "a batch of local segment {}",
                segment.base_offset
            )))?;
            let before = rows.len();
            let kept = keep_rows(
                &map,
                rows,
                delete_retention_ms,
                now_ms,
                &mut plan.next_tombstone_expiry_ms,
            );
            if kept.len() == before {
                if before > 0 {
                    plan.live_bytes += batch.len() as u64;
                }
                out.extend_from_slice(batch);
                continue;
            }
            removed += (before - kept.len()) as u64;
            let encoded = encode_batch(&meta, &kept).map_err(record_error(format!(
                "re-encoding a batch of local segment {}",
                segment.base_offset
            )))?;
            if !kept.is_empty() {
                plan.live_bytes += encoded.len() as u64;
            }
            out.extend_from_slice(&encoded);
        }
        if removed > 0 {
            plan.rewrites.push(SegmentRewrite {
                base_offset: segment.base_offset,
                size_bytes_before: segment.size_bytes,
                batches: out,
                records_removed: removed,
            });
        }
    }
    Ok(plan)
}

/// The rows compaction keeps: each key's latest record, unless it is a tombstone older than
/// `delete_retention_ms`; records without a key. Tracks when the oldest kept tombstone expires.
fn keep_rows(
    map: &KeyMap,
    rows: Vec<super::records::RecordRow>,
    delete_retention_ms: i64,
    now_ms: i64,
    next_expiry: &mut Option<i64>,
) -> Vec<super::records::RecordRow> {
    rows.into_iter()
        .filter(|row| {
            let Some(key) = &row.key else {
                return true;
            };
            if map.latest.get(key).copied().unwrap_or(row.offset) != row.offset {
                return false;
            }
            if row.value.is_some() || delete_retention_ms < 0 {
                return true;
            }
            let expiry = row
                .timestamp_ms
                .saturating_add(delete_retention_ms)
                .saturating_add(1);
            if now_ms >= expiry {
                return false;
            }
            *next_expiry = Some(next_expiry.map_or(expiry, |e| e.min(expiry)));
            true
        })
        .collect()
}

/// Runs one compaction pass over `remote`, with `local` the closed local segments holding offsets
/// at or after the remote end (their keys supersede remote records).
pub async fn compact(
    remote: &RemoteLog,
    local: &[ClosedSegment],
    config: &CompactionConfig,
) -> Result<CompactionOutcome, TierError> {
    let manifest = remote.manifest();
    let remote_end = manifest.end_offset().unwrap_or(i64::MIN);
    let mut map = KeyMap::default();
    let mut files = Vec::with_capacity(manifest.files.len());
    for file in &manifest.files {
        let file_batches = remote.read_file(file).await?;
        for batch in &file_batches {
            map.add_batch(batch)
                .map_err(record_error(format!("a batch of {}", file.name)))?;
        }
        files.push((file.clone(), file_batches));
    }
    for segment in local.iter().filter(|s| s.next_offset > remote_end) {
        map.add_segment(segment.base_offset, &read_segment(segment)?)?;
    }

    let mut outcome = CompactionOutcome {
        keys: map.latest.len(),
        ..CompactionOutcome::default()
    };
    for (file, file_batches) in files {
        let mut rewritten: Vec<u8> = Vec::new();
        let mut removed = 0u64;
        for batch in &file_batches {
            let (meta, rows) =
                decode_batch(batch).map_err(record_error(format!("a batch of {}", file.name)))?;
            let before = rows.len();
            let mut next_expiry = outcome.next_tombstone_expiry_ms;
            let kept = keep_rows(
                &map,
                rows,
                config.delete_retention_ms,
                config.now_ms,
                &mut next_expiry,
            );
            outcome.next_tombstone_expiry_ms = next_expiry;
            removed += (before - kept.len()) as u64;
            if !kept.is_empty() {
                let encoded = encode_batch(&meta, &kept).map_err(record_error(format!(
                    "re-encoding a batch of {}",
                    file.name
                )))?;
                rewritten.extend_from_slice(&encoded);
            }
        }
        if removed == 0 {
            continue;
        }
        let replacement = if rewritten.is_empty() {
            None
        } else {
            Some(
                encode_segment(&rewritten, &config.encode).map_err(|source| TierError::Codec {
                    context: format!("re-encoding {}", file.name),
                    source,
                })?,
            )
        };
        remote
            .replace_file(&file.name, replacement, config.now_ms)
            .await?;
        outcome.files_rewritten += 1;
        outcome.records_removed += removed;
    }
    Ok(outcome)
}
