//! [`LogError`]: everything that can go wrong in a partition log.

use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;
use crate::disk::is_storage_full;

/// Errors of [`PartitionLog`](crate::PartitionLog).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A segment rewrite (compaction) that would change the log's batch offsets: a bug in the
    /// caller, refused before anything is written.
    #[error("invalid segment rewrite: {0}")]
    InvalidRewrite(String),
    /// A read, write or sync failed.
    #[error("I/O error {context}: {source}")]
    Io {
        /// What the log was doing, with the file involved.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An fsync (of a file or a directory) failed. The kernel may have dropped the dirty pages, so
    /// what the log believes written may be gone: the caller must crash, not retry.
    #[error("fsync failed {context}: {source}")]
    SyncFailed {
        /// What the log was syncing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The disk is full (`ENOSPC`).
    #[error("no space left on the storage device")]
    StorageFull,
    /// Damaged input: bad CRC, truncated batch, inconsistent lengths.
    #[error("corrupt record batch: {0}")]
    CorruptInput(String),
    /// A well-formed batch the log refuses (unsupported magic, bad record count, control batch).
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// An idempotent producer's batch does not continue its sequence.
    #[error(
        "out of order sequence number for producer {producer_id} epoch {producer_epoch}: \
         batch starts at sequence {first_seq}, expected {expected_seq}"
    )]
    OutOfOrderSequence {
        /// The producer id.
        producer_id: i64,
        /// The producer epoch of the batch.
        producer_epoch: i16,
        /// First sequence number of the batch.
        first_seq: i32,
        /// The sequence number the log expected.
        expected_seq: i32,
    },
    /// An idempotent producer's epoch is older than the one the log has seen.
    #[error(
        "invalid producer epoch {producer_epoch} for producer {producer_id}: \
         the current epoch is {current_epoch}"
    )]
    InvalidProducerEpoch {
        /// The producer id.
        producer_id: i64,
        /// The producer epoch of the batch.
        producer_epoch: i16,
        /// The epoch the log has seen last.
        current_epoch: i16,
    },
    /// Corruption in the log's own files that recovery must not repair by dropping data.
    #[error(
        "corrupt log file {} at byte position {position}: {reason}; refusing to open the log, \
         since repairing it would drop data that may have been acknowledged (restore the \
         partition from a replica or a backup)",
        file.display()
    )]
    CorruptLog {
        /// The damaged file.
        file: PathBuf,
        /// Byte position of the damage in the file.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A read outside `[log_start_offset, log_end_offset]`.
    #[error(
        "offset {offset} is out of range: the log holds offsets {log_start_offset} to \
         {log_end_offset} (exclusive)"
    )]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// The first offset of the log.
        log_start_offset: i64,
        /// The next offset the log will assign.
        log_end_offset: i64,
    },
}

impl LogError {
    /// Wraps an I/O error, turning `ENOSPC` into [`LogError::StorageFull`].
    pub fn io(context: impl Into<String>, source: io::Error) -> LogError {
        if is_storage_full(&source) {
            LogError::StorageFull
        } else {
            LogError::Io {
                context: context.into(),
                source,
            }
        }
    }

    /// Maps an invalid input batch to [`LogError::CorruptInput`] or [`LogError::InvalidRecord`].
    pub fn from_batch(error: BatchError) -> LogError {
        if error.is_corruption() {
            LogError::CorruptInput(error.to_string())
        } else {
            LogError::InvalidRecord(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{Disk, RealDisk, ENOSPC};
    use std::path::Path;

    #[test]
    fn enospc_becomes_storage_full() {
        let full = io::Error::from_raw_os_error(ENOSPC);
        assert!(matches!(
            LogError::io("appending", full),
            LogError::StorageFull
        ));
        let full = io::Error::new(io::ErrorKind::StorageFull, "full");
        assert!(matches!(
            LogError::io("appending", full),
            LogError::StorageFull
        ));
        let other = io::Error::from_raw_os_error(5);
        let error = LogError::io("syncing /x/00000000000000000000.log", other);
        assert!(matches!(error, LogError::Io { .. }));
        assert!(error
            .to_string()
            .contains("syncing /x/00000000000000000000.log"));
    }

    #[test]
    fn a_real_full_device_is_storage_full() {
        // /dev/full answers every write with ENOSPC.
        let path = Path::new("/dev/full");
        if !path.exists() {
            return;
        }
        let file = RealDisk::new().open(path, false).unwrap();
        let error = file.append(b"x").unwrap_err();
        assert!(matches!(
            LogError::io("appending", error),
            LogError::StorageFull
        ));
    }

    #[test]
    fn corrupt_log_names_the_file_and_position() {
        let error = LogError::CorruptLog {
            file: "/data/t-0/00000000000000000042.log".into(),
            position: 1234,
            reason: "batch CRC mismatch".into(),
        };
        let message = error.to_string();
        assert!(message.contains("/data/t-0/00000000000000000042.log"));
        assert!(message.contains("byte position 1234"));
        assert!(message.contains("batch CRC mismatch"));
        assert!(message.contains("refusing"));
    }
}
