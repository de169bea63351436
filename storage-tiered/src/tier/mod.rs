//! Tiered storage: closed segments offloaded to an object store as Parquet files.
//!
//! - [`records`]: the records inside a v2 batch (decompressed), and batches rebuilt from them.
//! - [`parquet_file`]: one segment as one Parquet file, and row groups back into batches.
//! - [`manifest`]: the per-partition manifest naming the live files.
//! - [`compact`]: key-based compaction of the remote tier.
//! - [`remote`]: [`remote::RemoteLog`], one partition's remote tier (offload, reads, retention).

pub mod compact;
pub mod manifest;
pub mod parquet_file;
pub mod records;
pub mod remote;
