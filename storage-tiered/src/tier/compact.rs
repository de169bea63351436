//! Key-based compaction of the remote tier (`cleanup.policy=compact` and `compact,delete`),
//! which Kafka's own tiered storage cannot do.
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
        let size = usize::try_from(segment.size_bytes).map_err(|e| TierError::Invalid {
            context: format!("local segment {}", segment.base_offset),
            reason: e.to_string(),
        })?;
        let mut bytes = vec![0u8; size];
        read_exact_at(&*segment.file, 0, &mut bytes).map_err(|e| TierError::Invalid {
            context: format!("reading local segment {}", segment.base_offset),
            reason: e.to_string(),
        })?;
        for item in batches(&bytes) {
            let (_, batch) = item.map_err(|e| TierError::Invalid {
                context: format!("local segment {}", segment.base_offset),
                reason: e.to_string(),
            })?;
            map.add_batch(batch).map_err(record_error(format!(
                "a batch of local segment {}",
                segment.base_offset
            )))?;
        }
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
            let kept: Vec<_> = rows
                .into_iter()
                .filter(|row| {
                    let Some(key) = &row.key else {
                        return true;
                    };
                    let latest = map.latest.get(key).copied().unwrap_or(row.offset);
                    if latest != row.offset {
                        return false;
                    }
                    let expired_tombstone = row.value.is_none()
                        && config.delete_retention_ms >= 0
                        && config.now_ms.saturating_sub(row.timestamp_ms)
                            > config.delete_retention_ms;
                    if row.value.is_none() && !expired_tombstone && config.delete_retention_ms >= 0
                    {
                        let expiry =
                            row.timestamp_ms.saturating_add(config.delete_retention_ms) + 1;
                        next_expiry = Some(next_expiry.map_or(expiry, |e: i64| e.min(expiry)));
                    }
                    !expired_tombstone
                })
                .collect();
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
