//! Strata's local storage: the segment log of one partition, and the disk and clock seams.
//!
//! - [`disk`]: the [`Disk`] / [`DiskFile`] traits, [`RealDisk`] and the crash-modelling
//!   [`MemDisk`].
//! - [`clock`]: the [`Clock`] trait, [`SystemClock`] and [`ManualClock`].
//! - [`batch`]: Kafka v2 record batch headers ([`BatchHeader`]), CRC-32C, offset rewriting.
//! - [`producer_state`]: idempotent-producer sequence checks.
//! - [`log`]: [`PartitionLog`], with its segments and indexes.
//! - [`handles`]: [`SegmentHandles`], the bounded cache of open handles of closed segment files.
//! - [`tier`]: the remote tier: Parquet files in an object store, manifests, remote reads.
//!
//! This crate knows nothing of the Kafka wire protocol beyond the record-batch format, and
//! touches `std::fs` and the system time only in [`RealDisk`] and [`SystemClock`].

pub mod batch;
pub mod clock;
pub mod disk;
pub mod error;
pub mod handles;
pub mod index;
pub mod log;
pub mod producer_state;
mod segment;
pub mod tier;

pub use batch::{BatchError, BatchHeader, Compression, TimestampType};
pub use clock::{Clock, ManualClock, SystemClock};
pub use disk::{Disk, DiskFile, MemDisk, RealDisk};
pub use error::LogError;
pub use handles::{SegmentHandles, SEGMENT_HANDLES_OPEN_MAX};
pub use log::{AppendOutcome, ClosedSegment, LogConfig, PartitionLog, SyncTarget};
pub use producer_state::ProducerStateManager;
pub use segment::{parse_segment_file_name, segment_file_name};
