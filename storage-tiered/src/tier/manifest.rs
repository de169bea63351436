//! The per-partition manifest: which Parquet files of the remote tier are live.
//!
//! # Layout in the object store
//!
//! ```text
//! <topic>/partition=<p>/manifest.json
//! <topic>/partition=<p>/<first_offset:020>-<last_offset:020>.parquet
//! ```
//!
//! (The store handed to the broker is already scoped to the configured prefix.) The
//! `partition=<p>` directory makes the files hive-partitioned for DuckDB and Spark.
//!
//! # Crash safety
//!
//! A file is uploaded in one PUT (atomic in S3 and in the local backend: it appears whole or not
//! at all) *before* the manifest that names it is written, also in one PUT. So:
//!
//! - a crash after the file upload and before the manifest write leaves an *orphan*: a file the
//!   manifest does not name. Readers through the broker never see it; the next offload of the
//!   same segment overwrites it (same name), and [`super::remote::RemoteLog::open`] deletes
//!   orphans;
//! - removals (retention, compaction replacing files) write the manifest first and delete the
//!   objects after, so a crash in between also leaves only orphans.
//!
//! The manifest never names a file that is not complete, and [`Manifest::validate`] refuses a
//! manifest whose files overlap: two live files never cover the same offsets.

use serde::{Deserialize, Serialize};

/// Version of the manifest format written by this code.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// Name of the manifest object in a partition's directory.
pub const MANIFEST_FILE_NAME: &str = "manifest.json";
/// Upper bound on a manifest's size, checked when reading one (about 10 million files).
pub const MANIFEST_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// Extension of the data files.
pub const PARQUET_EXTENSION: &str = "parquet";

/// One live Parquet file of the remote tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteFile {
    /// The file name in the partition directory (`<first:020>-<last:020>.parquet`).
    pub name: String,
    /// First offset covered (the first batch's base offset).
    pub base_offset: i64,
    /// Last offset covered (the last batch's last offset).
    pub last_offset: i64,
    /// Records in the file.
    pub record_count: u64,
    /// Bytes of the record batches the file was made from (what `retention.bytes` counts).
    pub batch_bytes: u64,
    /// Size of the Parquet file.
    pub size_bytes: u64,
    /// Smallest record timestamp.
    pub timestamp_min_ms: i64,
    /// Largest record timestamp (what `retention.ms` looks at).
    pub timestamp_max_ms: i64,
    /// When the file was uploaded (broker clock).
    pub uploaded_ms: i64,
}

/// The manifest of one partition's remote tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The topic's id (Kafka's topic UUID) when known: a manifest left by a deleted topic of
    /// the same name is recognised by its different id.
    #[serde(default)]
    pub topic_id: Option<String>,
    /// Incremented on every write.
    pub generation: u64,
    /// The first offset of the whole log (remote and local): retention moved it here. Files
    /// wholly below it are gone from the manifest.
    pub log_start_offset: i64,
    /// Live files, by offset, not overlapping.
    pub files: Vec<RemoteFile>,
}

impl Manifest {
    /// An empty manifest (no file offloaded yet).
    pub fn empty(topic: &str, partition: i32) -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            topic: topic.to_string(),
            partition,
            topic_id: None,
            generation: 0,
            log_start_offset: 0,
            files: Vec::new(),
        }
    }

    /// The name of the file covering `base_offset..=last_offset`.
    pub fn file_name(base_offset: i64, last_offset: i64) -> String {
        format!("{base_offset:020}-{last_offset:020}.{PARQUET_EXTENSION}")
    }

    /// Parses `<first:020>-<last:020>.parquet` into its offsets.
    pub fn parse_file_name(name: &str) -> Option<(i64, i64)> {
        let stem = name.strip_suffix(&format!(".{PARQUET_EXTENSION}"))?;
        let (first, last) = stem.split_once('-')?;
        if first.len() != 20 || last.len() != 20 {
            return None;
        }
        let first = first.parse::<i64>().ok()?;
        let last = last.parse::<i64>().ok()?;
        (0 <= first && first <= last).then_some((first, last))
    }

    /// Decodes and validates a manifest read from the store.
    pub fn decode(bytes: &[u8], topic: &str, partition: i32) -> Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("manifest is not valid JSON: {e}"))?;
        if manifest.format_version != MANIFEST_FORMAT_VERSION {
            return Err(format!(
                "manifest format version {} is not supported (this broker writes {})",
                manifest.format_version, MANIFEST_FORMAT_VERSION
            ));
        }
        if manifest.topic != topic || manifest.partition != partition {
            return Err(format!(
                "manifest belongs to {}-{}, not {topic}-{partition}",
                manifest.topic, manifest.partition
            ));
        }
        manifest.validate()?;
        Ok(manifest)
    }

    /// Encodes the manifest (pretty JSON: operators read it).
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(self.validate().is_ok(), "{:?}", self.validate());
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    /// Checks the invariants: files sorted by offset, not overlapping, named after their
    /// offsets, and the log start offset not past the last file.
    pub fn validate(&self) -> Result<(), String> {
        if self.log_start_offset < 0 {
            return Err(format!(
                "negative log start offset {}",
                self.log_start_offset
            ));
        }
        let mut previous_last: Option<i64> = None;
        for file in &self.files {
            if file.base_offset > file.last_offset || file.base_offset < 0 {
                return Err(format!("file {} has an empty or negative range", file.name));
            }
            if Manifest::parse_file_name(&file.name) != Some((file.base_offset, file.last_offset)) {
                return Err(format!(
                    "file {} is not named after its offsets {}..={}",
                    file.name, file.base_offset, file.last_offset
                ));
            }
            if let Some(last) = previous_last {
                if file.base_offset <= last {
                    return Err(format!(
                        "file {} overlaps the previous file (which ends at {last})",
                        file.name
                    ));
                }
            }
            previous_last = Some(file.last_offset);
        }
        if let Some(last) = self.files.last() {
            if self.log_start_offset > last.last_offset {
                return Err(format!(
                    "log start offset {} is past the last file {}",
                    self.log_start_offset, last.name
                ));
            }
        }
        Ok(())
    }

    /// The log start offset when the remote tier holds files (`None` if none). Compaction can
    /// leave a gap between it and the first file: reads there go on at the next record, as
    /// Kafka reads of a compacted log do.
    pub fn start_offset(&self) -> Option<i64> {
        self.files.first().map(|_| self.log_start_offset)
    }

    /// The offset after the last one held remotely (`None` if no file).
    pub fn end_offset(&self) -> Option<i64> {
        self.files.last().map(|f| f.last_offset + 1)
    }

    /// Sum of the files' Parquet sizes.
    pub fn size_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size_bytes).sum()
    }

    /// Sum of the files' source batch bytes.
    pub fn batch_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.batch_bytes).sum()
    }

    /// Index of the first file holding an offset at or after `offset` (its last offset is at
    /// least `offset`), if any.
    pub fn file_index_for(&self, offset: i64) -> Option<usize> {
        let index = self.files.partition_point(|f| f.last_offset < offset);
        (index < self.files.len()).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(base: i64, last: i64) -> RemoteFile {
        RemoteFile {
            name: Manifest::file_name(base, last),
            base_offset: base,
            last_offset: last,
            record_count: (last - base + 1) as u64,
            batch_bytes: 100,
            size_bytes: 50,
            timestamp_min_ms: 0,
            timestamp_max_ms: 10,
            uploaded_ms: 0,
        }
    }

    #[test]
    fn file_names_round_trip_and_sort_by_offset() {
        let name = Manifest::file_name(5, 1234);
        assert_eq!(name, "00000000000000000005-00000000000000001234.parquet");
        assert_eq!(Manifest::parse_file_name(&name), Some((5, 1234)));
        assert!(Manifest::file_name(9, 10) < Manifest::file_name(10, 11));
        for bad in [
            "5-1234.parquet",
            "00000000000000000005-00000000000000001234.json",
            "00000000000000000009-00000000000000000005.parquet",
            "manifest.json",
        ] {
            assert_eq!(Manifest::parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut manifest = Manifest::empty("t", 3);
        manifest.files = vec![file(0, 9), file(10, 19)];
        manifest.generation = 2;
        let decoded = Manifest::decode(&manifest.encode(), "t", 3).unwrap();
        assert_eq!(decoded, manifest);
        assert_eq!(decoded.start_offset(), Some(0));
        assert_eq!(decoded.end_offset(), Some(20));
        assert_eq!(decoded.file_index_for(9), Some(0));
        assert_eq!(decoded.file_index_for(10), Some(1));
        assert_eq!(decoded.file_index_for(20), None);
    }

    #[test]
    fn overlapping_or_misnamed_files_are_refused() {
        let mut manifest = Manifest::empty("t", 0);
        manifest.files = vec![file(0, 9), file(9, 19)];
        assert!(manifest.validate().unwrap_err().contains("overlaps"));
        manifest.files = vec![file(0, 9)];
        manifest.files[0].name = Manifest::file_name(0, 8);
        assert!(manifest.validate().unwrap_err().contains("not named"));
        manifest.files = vec![file(0, 9)];
        manifest.log_start_offset = 10;
        assert!(manifest.validate().is_err());
    }

    #[test]
    fn decode_refuses_other_partitions_versions_and_garbage() {
        let manifest = Manifest::empty("t", 0);
        assert!(Manifest::decode(&manifest.encode(), "t", 1).is_err());
        assert!(Manifest::decode(&manifest.encode(), "u", 0).is_err());
        let mut future = manifest.clone();
        future.format_version = 99;
        let bytes = serde_json::to_vec(&future).unwrap();
        assert!(Manifest::decode(&bytes, "t", 0)
            .unwrap_err()
            .contains("not supported"));
        assert!(Manifest::decode(b"{not json", "t", 0).is_err());
    }

    #[test]
    fn gaps_between_files_are_allowed_and_offsets_found_after_them() {
        // Compaction can remove whole batches: files need not be contiguous.
        let mut manifest = Manifest::empty("t", 0);
        manifest.files = vec![file(0, 9), file(20, 29)];
        manifest.validate().unwrap();
        assert_eq!(manifest.file_index_for(12), Some(1));
    }
}
