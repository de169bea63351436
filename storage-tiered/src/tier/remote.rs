//! [`RemoteLog`]: one partition's remote tier: offload of closed segments, reads below the local
//! start offset, retention of remote files.
//!
//! Concurrency: one writer at a time (the broker's tier task, serialized by an async mutex) and
//! any number of readers, who work on a snapshot of the manifest (an `Arc`) and never hold a lock
//! across an await. A reader racing with retention can find a file already deleted; it then sees
//! the new manifest and answers "offset out of range" as Kafka would.
//!
//! Reads go through a [`ReadCache`] shared by all partitions of a broker: footers (per file) and
//! row groups already rebuilt into record batches, bounded by bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::manifest::{Manifest, RemoteFile, MANIFEST_BYTES_MAX, MANIFEST_FILE_NAME};
use super::parquet_file::{self, FileIndex, SegmentFile, TierCodecError};

/// Errors of the remote tier.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The object store failed (outage, timeout, permission...).
    #[error("object store: {context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A file could not be encoded or decoded.
    #[error("parquet: {context}: {source}")]
    Codec {
        /// Which file.
        context: String,
        /// The codec's error.
        #[source]
        source: TierCodecError,
    },
    /// The manifest in the store is unreadable or breaks an invariant.
    #[error("manifest {path}: {reason}")]
    Manifest {
        /// Its path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Data read back from the store is not what was written.
    #[error("{context}: {reason}")]
    Invalid {
        /// Which file.
        context: String,
        /// What is wrong.
        reason: String,
    },
    /// The offset is not held remotely.
    #[error("offset {offset} is not in the remote tier")]
    OffsetNotRemote {
        /// The offset asked for.
        offset: i64,
    },
}

fn store_error(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> TierError {
    let context = context.into();
    move |source| TierError::Store { context, source }
}

/// The directory of a partition in the store: `<topic>/partition=<p>`.
pub fn partition_dir(topic: &str, partition: i32) -> StorePath {
    StorePath::from(topic).join(format!("partition={partition}").as_str())
}

/// Row groups rebuilt into batches and file footers, shared by the partitions of a broker,
/// bounded by bytes (oldest entries evicted first).
pub struct ReadCache {
    bytes_max: u64,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    row_groups: HashMap<(String, usize), Arc<Vec<Bytes>>>,
    order: VecDeque<(String, usize)>,
    bytes: u64,
    indexes: HashMap<String, Arc<FileIndex>>,
    index_order: VecDeque<String>,
}

/// Most file footers kept by a [`ReadCache`].
const CACHED_INDEXES_MAX: usize = 4096;

impl ReadCache {
    /// A cache holding at most `bytes_max` bytes of rebuilt batches.
    pub fn new(bytes_max: u64) -> ReadCache {
        ReadCache {
            bytes_max,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn row_group(&self, file: &str, row_group: usize) -> Option<Arc<Vec<Bytes>>> {
        self.lock()
            .row_groups
            .get(&(file.to_string(), row_group))
            .cloned()
    }

    fn insert_row_group(&self, file: &str, row_group: usize, batches: Arc<Vec<Bytes>>) {
        let size: u64 = batches.iter().map(|b| b.len() as u64).sum();
        if size > self.bytes_max {
            return;
        }
        let mut inner = self.lock();
        let key = (file.to_string(), row_group);
        if inner.row_groups.insert(key.clone(), batches).is_some() {
            return;
        }
        inner.order.push_back(key);
        inner.bytes += size;
        while inner.bytes > self.bytes_max {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.row_groups.remove(&old) {
                inner.bytes -= evicted.iter().map(|b| b.len() as u64).sum::<u64>();
            }
        }
    }

    fn index(&self, file: &str) -> Option<Arc<FileIndex>> {
        self.lock().indexes.get(file).cloned()
    }

    fn insert_index(&self, file: &str, index: Arc<FileIndex>) {
        let mut inner = self.lock();
        if inner.indexes.insert(file.to_string(), index).is_none() {
            inner.index_order.push_back(file.to_string());
        }
        while inner.index_order.len() > CACHED_INDEXES_MAX {
            if let Some(old) = inner.index_order.pop_front() {
                inner.indexes.remove(&old);
            }
        }
    }

    /// Drops everything cached for `file` (deleted or replaced).
    fn forget_file(&self, file: &str) {
        let mut inner = self.lock();
        inner.indexes.remove(file);
        let doomed: Vec<(String, usize)> = inner
            .row_groups
            .keys()
            .filter(|(f, _)| f == file)
            .cloned()
            .collect();
        for key in doomed {
            if let Some(evicted) = inner.row_groups.remove(&key) {
                inner.bytes -= evicted.iter().map(|b| b.len() as u64).sum::<u64>();
            }
        }
        inner.order.retain(|(f, _)| f != file);
        inner.index_order.retain(|f| f != file);
    }

    /// Bytes of rebuilt batches held.
    pub fn size_bytes(&self) -> u64 {
        self.lock().bytes
    }
}

/// What [`RemoteLog::apply_retention`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Files removed from the manifest (and deleted).
    pub files_deleted: usize,
    /// The whole log's new start offset, if it moved.
    pub log_start_offset: Option<i64>,
}

/// One partition's remote tier; see the [module docs](self).
pub struct RemoteLog {
    store: Arc<dyn ObjectStore>,
    cache: Arc<ReadCache>,
    topic: String,
    partition: i32,
    dir: StorePath,
    manifest: Mutex<Arc<Manifest>>,
    /// Serializes writers (offload, retention, deletion).
    writer: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RemoteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLog")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish()
    }
}

impl RemoteLog {
    /// Loads the partition's manifest (an empty one if there is none yet) and deletes orphan
    /// files (uploaded but never named by the manifest, or removed from it by a writer that
    /// crashed before deleting them).
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        cache: Arc<ReadCache>,
        topic: &str,
        partition: i32,
    ) -> Result<RemoteLog, TierError> {
        RemoteLog::open_with_topic_id(store, cache, topic, None, partition).await
    }

    /// [`RemoteLog::open`] for the topic with id `topic_id`: a manifest written for another id
    /// (a deleted topic of the same name whose files were not all removed) is stale; its files
    /// and itself are deleted and the remote tier starts empty. New manifests record the id.
    pub async fn open_with_topic_id(
        store: Arc<dyn ObjectStore>,
        cache: Arc<ReadCache>,
        topic: &str,
        topic_id: Option<&str>,
        partition: i32,
    ) -> Result<RemoteLog, TierError> {
        let dir = partition_dir(topic, partition);
        let manifest_path = dir.clone().join(MANIFEST_FILE_NAME);
        let manifest = match store.get(&manifest_path).await {
            Ok(result) => {
                if result.meta.size > MANIFEST_BYTES_MAX {
                    return Err(TierError::Manifest {
                        path: manifest_path.to_string(),
                        reason: format!("{} bytes is too large", result.meta.size),
                    });
                }
                let bytes = result
                    .bytes()
                    .await
                    .map_err(store_error(format!("reading {manifest_path}")))?;
                Manifest::decode(&bytes, topic, partition).map_err(|reason| {
                    TierError::Manifest {
                        path: manifest_path.to_string(),
                        reason,
                    }
                })?
            }
            Err(object_store::Error::NotFound { .. }) => Manifest::empty(topic, partition),
            Err(e) => return Err(store_error(format!("reading {manifest_path}"))(e)),
        };
        let stale = match (&manifest.topic_id, topic_id) {
            (Some(found), Some(wanted)) => found != wanted,
            _ => false,
        };
        let mut manifest = if stale {
            tracing::warn!(
                manifest = %manifest_path,
                found = ?manifest.topic_id,
                wanted = ?topic_id,
                "the remote tier holds a deleted topic's files: removing them"
            );
            Manifest::empty(topic, partition)
        } else {
            manifest
        };
        if manifest.topic_id.is_none() {
            manifest.topic_id = topic_id.map(str::to_string);
        }
        let remote = RemoteLog {
            store,
            cache,
            topic: topic.to_string(),
            partition,
            dir,
            manifest: Mutex::new(Arc::new(manifest)),
            writer: tokio::sync::Mutex::new(()),
        };
        // With a stale manifest replaced by an empty one, every file is an orphan.
        remote.delete_orphans().await?;
        if stale {
            let fresh = (*remote.manifest()).clone();
            remote.write_manifest(fresh).await?;
        }
        Ok(remote)
    }

    /// The current manifest.
    pub fn manifest(&self) -> Arc<Manifest> {
        Arc::clone(&self.manifest.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    fn file_path(&self, name: &str) -> StorePath {
        self.dir.clone().join(name)
    }

    /// The cache key of a file version: compaction can replace a file under the same name, so
    /// the key also holds its size and upload time.
    fn cache_key(&self, file: &RemoteFile) -> String {
        format!(
            "{}@{}:{}",
            self.file_path(&file.name),
            file.size_bytes,
            file.uploaded_ms
        )
    }

    async fn write_manifest(&self, manifest: Manifest) -> Result<(), TierError> {
        if let Err(reason) = manifest.validate() {
            // Never write a manifest that breaks an invariant: that is a bug here.
            panic!(
                "refusing to write an invalid manifest for {}-{}: {reason}",
                self.topic, self.partition
            );
        }
        let path = self.dir.clone().join(MANIFEST_FILE_NAME);
        self.store
            .put(&path, PutPayload::from(manifest.encode()))
            .await
            .map_err(store_error(format!("writing {path}")))?;
        *self.manifest.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(manifest);
        Ok(())
    }

    async fn delete_orphans(&self) -> Result<usize, TierError> {
        let _writer = self.writer.lock().await;
        let manifest = self.manifest();
        let mut listing = self.store.list(Some(&self.dir));
        let mut orphans = Vec::new();
        let mut sizes = HashMap::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(store_error(format!("listing {}", self.dir)))?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if Manifest::parse_file_name(name).is_none() {
                continue;
            }
            if manifest.files.iter().any(|f| f.name == name) {
                sizes.insert(name.to_string(), meta.size);
            } else {
                orphans.push(meta.location.clone());
            }
        }
        drop(listing);
        // A crash between a compacted file's upload (same name, new content) and the manifest
        // write leaves the manifest with the old size: the stored object is the truth, and
        // both versions hold exactly the records compaction may keep.
        let mut fixed = (*manifest).clone();
        let mut changed = false;
        for file in &mut fixed.files {
            match sizes.get(&file.name) {
                Some(&size) if size != file.size_bytes => {
                    file.size_bytes = size;
                    changed = true;
                }
                Some(_) => {}
                None => {
                    return Err(TierError::Manifest {
                        path: self.dir.clone().join(MANIFEST_FILE_NAME).to_string(),
                        reason: format!("names {}, which is not in the store", file.name),
                    })
                }
            }
        }
        if changed {
            fixed.generation += 1;
            self.write_manifest(fixed).await?;
        }
        for path in &orphans {
            tracing::info!(file = %path, "deleting an orphan file of the remote tier");
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(format!("deleting {path}"))(e)),
            }
        }
        Ok(orphans.len())
    }

    /// Uploads `file` in one PUT under its name (`<first>-<last>.parquet`); the manifest entry
    /// that will name it.
    async fn upload(&self, file: SegmentFile, uploaded_ms: i64) -> Result<RemoteFile, TierError> {
        let name = Manifest::file_name(file.base_offset, file.last_offset);
        let path = self.file_path(&name);
        let size_bytes = file.bytes.len() as u64;
        self.store
            .put(&path, PutPayload::from(file.bytes))
            .await
            .map_err(store_error(format!("uploading {path}")))?;
        Ok(RemoteFile {
            name,
            base_offset: file.base_offset,
            last_offset: file.last_offset,
            record_count: file.record_count,
            batch_bytes: file.batch_bytes,
            size_bytes,
            timestamp_min_ms: file.timestamp_min_ms,
            timestamp_max_ms: file.timestamp_max_ms,
            uploaded_ms,
        })
    }

    /// Uploads an encoded segment and names it in the manifest. The file must start at or after
    /// the remote end offset. Idempotent: a retry after a failure re-uploads the same name.
    pub async fn offload(&self, file: SegmentFile, now_ms: i64) -> Result<RemoteFile, TierError> {
        let _writer = self.writer.lock().await;
        let mut manifest = (*self.manifest()).clone();
        if let Some(end) = manifest.end_offset() {
            assert!(
                file.base_offset >= end,
                "offload of {}-{} offsets {}..={} overlaps the remote tier ending at {end}",
                self.topic,
                self.partition,
                file.base_offset,
                file.last_offset
            );
        }
        let remote_file = self.upload(file, now_ms).await?;
        if manifest.files.is_empty() {
            // The whole log starts where the remote tier starts, unless retention already
            // moved it (a local log whose start moved before anything was offloaded).
            manifest.log_start_offset = manifest.log_start_offset.max(remote_file.base_offset);
        }
        manifest.files.push(remote_file.clone());
        manifest.generation += 1;
        self.write_manifest(manifest).await?;
        Ok(remote_file)
    }

    /// Removes files, oldest first, whose largest timestamp is older than `retention_ms`
    /// (-1: never) or while the whole log (remote batch bytes plus `local_bytes_above_remote`,
    /// the local bytes not yet offloaded) is larger than `retention_bytes` (-1: no limit); also
    /// every file wholly below `log_start_offset_min` (retention already moved the local start
    /// there). The manifest is written first, then the objects deleted.
    pub async fn apply_retention(
        &self,
        retention_ms: i64,
        retention_bytes: i64,
        local_bytes_above_remote: u64,
        log_start_offset_min: i64,
        now_ms: i64,
    ) -> Result<RetentionOutcome, TierError> {
        let _writer = self.writer.lock().await;
        let manifest = self.manifest();
        let mut count = 0usize;
        while count < manifest.files.len()
            && manifest.files[count].last_offset < log_start_offset_min
        {
            count += 1;
        }
        if retention_ms >= 0 {
            while count < manifest.files.len()
                && now_ms.saturating_sub(manifest.files[count].timestamp_max_ms) > retention_ms
            {
                count += 1;
            }
        }
        if retention_bytes >= 0 {
            let mut total: u64 = manifest.files[count..]
                .iter()
                .map(|f| f.batch_bytes)
                .sum::<u64>()
                + local_bytes_above_remote;
            // Kafka's rule: drop the oldest while the log stays at least `retention.bytes`
            // without it.
            while count < manifest.files.len()
                && total >= manifest.files[count].batch_bytes + retention_bytes as u64
            {
                total -= manifest.files[count].batch_bytes;
                count += 1;
            }
        }
        let new_start = manifest
            .files
            .get(count)
            .map(|f| f.base_offset.max(manifest.log_start_offset))
            .unwrap_or(manifest.end_offset().unwrap_or(0))
            .max(log_start_offset_min.min(manifest.end_offset().unwrap_or(i64::MAX)));
        if count == 0 && new_start <= manifest.log_start_offset {
            return Ok(RetentionOutcome::default());
        }
        let mut next = (*manifest).clone();
        let doomed: Vec<RemoteFile> = next.files.drain(..count).collect();
        next.log_start_offset = next.log_start_offset.max(new_start);
        if let Some(first) = next.files.first() {
            // The log start may sit inside the first remaining file (never past its end).
            next.log_start_offset = next.log_start_offset.min(first.last_offset);
        }
        next.generation += 1;
        let log_start_offset = next.log_start_offset;
        self.write_manifest(next).await?;
        for file in &doomed {
            let path = self.file_path(&file.name);
            self.cache.forget_file(&self.cache_key(file));
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    // The manifest no longer names it: an orphan deleted on the next open.
                    tracing::warn!(file = %path, "cannot delete a file removed by retention: {e}");
                }
            }
        }
        Ok(RetentionOutcome {
            files_deleted: doomed.len(),
            log_start_offset: Some(log_start_offset),
        })
    }

    /// Every batch of `file`, rebuilt from all its row groups (for compaction; not cached).
    pub async fn read_file(&self, file: &RemoteFile) -> Result<Vec<Bytes>, TierError> {
        let path = self.file_path(&file.name);
        let index = self.file_index(file).await?;
        let mut out = Vec::new();
        for row_group in 0..index.row_groups.len() {
            let batches = parquet_file::read_row_group(&self.store, &path, &index, row_group)
                .await
                .map_err(|source| {
                    codec_or_store(format!("reading row group {row_group} of {path}"), source)
                })?;
            out.extend(batches);
        }
        Ok(out)
    }

    /// Replaces the live file `old_name` by `new` (compaction): `new` must cover a sub-range of
    /// the old file's offsets. `None` removes the file. The new file is uploaded, then the
    /// manifest written, then the old object deleted if its name differs.
    pub async fn replace_file(
        &self,
        old_name: &str,
        new: Option<SegmentFile>,
        now_ms: i64,
    ) -> Result<(), TierError> {
        let _writer = self.writer.lock().await;
        let mut manifest = (*self.manifest()).clone();
        let Some(position) = manifest.files.iter().position(|f| f.name == old_name) else {
            // Removed meanwhile (retention): nothing to replace.
            return Ok(());
        };
        let old = manifest.files[position].clone();
        match new {
            Some(file) => {
                assert!(
                    old.base_offset <= file.base_offset && file.last_offset <= old.last_offset,
                    "a compacted file {}..={} must lie inside {}",
                    file.base_offset,
                    file.last_offset,
                    old.name
                );
                // A later upload time than the old version's: the read cache tells them apart.
                manifest.files[position] =
                    self.upload(file, now_ms.max(old.uploaded_ms + 1)).await?;
            }
            None => {
                manifest.files.remove(position);
            }
        }
        if let Some(first) = manifest.files.first() {
            manifest.log_start_offset = manifest.log_start_offset.min(first.last_offset);
        }
        manifest.generation += 1;
        let new_name = manifest.files.get(position).map(|f| f.name.clone());
        self.write_manifest(manifest).await?;
        self.cache.forget_file(&self.cache_key(&old));
        if new_name.as_deref() != Some(old_name) {
            let path = self.file_path(old_name);
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(file = %path, "cannot delete a replaced file: {e}");
                }
            }
        }
        Ok(())
    }

    /// Deletes every file and the manifest (topic deletion).
    pub async fn delete_all(&self) -> Result<(), TierError> {
        let _writer = self.writer.lock().await;
        let mut listing = self.store.list(Some(&self.dir));
        let mut paths = Vec::new();
        while let Some(meta) = listing.next().await {
            paths.push(
                meta.map_err(store_error(format!("listing {}", self.dir)))?
                    .location,
            );
        }
        drop(listing);
        // Data files first, the manifest last: a crash in between leaves a manifest naming
        // missing files only for a topic that no longer exists.
        paths.sort_by_key(|p| p.filename() == Some(MANIFEST_FILE_NAME));
        for file in &self.manifest().files {
            self.cache.forget_file(&self.cache_key(file));
        }
        for path in paths {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(format!("deleting {path}"))(e)),
            }
        }
        Ok(())
    }

    async fn file_index(&self, file: &RemoteFile) -> Result<Arc<FileIndex>, TierError> {
        let path = self.file_path(&file.name);
        let key = self.cache_key(file);
        if let Some(index) = self.cache.index(&key) {
            return Ok(index);
        }
        let index = parquet_file::load_index(&self.store, &path, file.size_bytes)
            .await
            .map_err(|source| codec_or_store(format!("reading the footer of {path}"), source))?;
        let index = Arc::new(index);
        self.cache.insert_index(&key, Arc::clone(&index));
        Ok(index)
    }

    async fn row_group(
        &self,
        file: &RemoteFile,
        index: &FileIndex,
        row_group: usize,
    ) -> Result<Arc<Vec<Bytes>>, TierError> {
        let path = self.file_path(&file.name);
        let key = self.cache_key(file);
        if let Some(batches) = self.cache.row_group(&key, row_group) {
            return Ok(batches);
        }
        let batches = parquet_file::read_row_group(&self.store, &path, index, row_group)
            .await
            .map_err(|source| {
                codec_or_store(format!("reading row group {row_group} of {path}"), source)
            })?;
        let batches = Arc::new(batches);
        self.cache
            .insert_row_group(&key, row_group, Arc::clone(&batches));
        Ok(batches)
    }

    /// Record batches from the remote tier starting with the one holding `offset` (or the first
    /// one after it, where compaction left a gap), up to `max_bytes` (at least one batch), from
    /// one file. Empty when `offset` is at or past the remote end.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, TierError> {
        let manifest = self.manifest();
        if manifest.start_offset().is_none_or(|start| offset < start) {
            return Err(TierError::OffsetNotRemote { offset });
        }
        let Some(file_index) = manifest.file_index_for(offset) else {
            return Ok(Bytes::new());
        };
        let file = &manifest.files[file_index];
        let index = self.file_index(file).await?;
        let first_group = index
            .row_groups
            .partition_point(|g| g.last_batch_last_offset < offset);
        let mut out: Vec<u8> = Vec::new();
        for row_group in first_group..index.row_groups.len() {
            let batches = self.row_group(file, &index, row_group).await?;
            for batch in batches.iter() {
                let header =
                    crate::batch::BatchHeader::parse(batch).map_err(|e| TierError::Invalid {
                        context: format!("a batch rebuilt from {}", file.name),
                        reason: e.to_string(),
                    })?;
                if header.last_offset() < offset {
                    continue;
                }
                if !out.is_empty() && out.len() + batch.len() > max_bytes {
                    return Ok(Bytes::from(out));
                }
                out.extend_from_slice(batch);
            }
            if out.len() >= max_bytes {
                break;
            }
        }
        Ok(Bytes::from(out))
    }

    /// First offset whose batch holds a timestamp >= `ts_ms`, with that batch's max timestamp
    /// (ListOffsets by time), among the remote files; `None` if every remote record is older.
    pub async fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(i64, i64)>, TierError> {
        let manifest = self.manifest();
        for file in &manifest.files {
            if file.timestamp_max_ms < ts_ms {
                continue;
            }
            let index = self.file_index(file).await?;
            for (row_group, range) in index.row_groups.iter().enumerate() {
                if range.timestamp_max_ms < ts_ms {
                    continue;
                }
                let batches = self.row_group(file, &index, row_group).await?;
                for batch in batches.iter() {
                    let Ok(header) = crate::batch::BatchHeader::parse(batch) else {
                        continue;
                    };
                    if header.max_timestamp >= ts_ms
                        && header.last_offset() >= manifest.log_start_offset
                    {
                        return Ok(Some((
                            header.base_offset.max(manifest.log_start_offset),
                            header.max_timestamp,
                        )));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// An object-store failure inside the codec is reported as a store error (retryable outage),
/// anything else as a codec error.
fn codec_or_store(context: String, source: TierCodecError) -> TierError {
    match source {
        TierCodecError::Store(source) => TierError::Store { context, source },
        other => TierError::Codec {
            context,
            source: other,
        },
    }
}
