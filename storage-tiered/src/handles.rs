//! [`SegmentHandles`]: a bounded cache of open file handles of closed segments, so that a log of
//! thousands of segments does not hold thousands of file descriptors.
//!
//! # The model
//!
//! A segment holds a handle of its own (it *pins* it) while it is
//!
//! - **active**: it is appended to and synced;
//! - **closed with bytes not yet synced**: the fsync that makes them durable
//!   ([`PartitionLog::sync_target`](crate::PartitionLog::sync_target)) runs on the descriptor
//!   that was open when they were written. Linux reports a failed writeback to the descriptors
//!   open at the time (and to the first fsync of a later one only while it still remembers the
//!   error, which it may forget along with an inode no descriptor holds), so a handle closed and
//!   reopened between the write and the fsync could let a lost write pass for a durable one.
//!
//! Once every byte of a closed segment is durable its handle moves into the log's
//! `SegmentHandles`, and from then on the file is opened on demand: every access goes through
//! `Segment::file`, which takes the cached handle or opens the file through the
//! [`Disk`] seam (`Disk::open(path, create = false)`) and caches it. A failed open (EMFILE,
//! ENOENT) is an I/O error of that read, like a failed read.
//!
//! # The cache
//!
//! - **Bounded, least recently used out.** At most [`SegmentHandles::open_max`] handles are
//!   cached; caching one more drops the least recently used. Dropping a handle from the cache
//!   drops the cache's `Arc` only: a reader that took a clone (fetches read without the log's
//!   lock) keeps the descriptor open until it is done. The descriptors of closed segments are
//!   therefore at most `open_max` plus those readers hold at the moment.
//! - **One key per version of a file.** Each `Segment` registers a key when it
//!   is created and forgets it when it is dropped (deleted by retention, or replaced by a
//!   compaction's rewrite, which renames a new file over the old path and builds a new segment
//!   with a new key). Forgetting drops the cached handle, and a handle cached under a forgotten
//!   key is dropped at once, so the cache never serves a handle of a replaced or deleted file
//!   (which would be the old inode) and never keeps a deleted file's space allocated.
//! - **Shared.** The cache is named by [`LogConfig::segment_handles`](crate::LogConfig): logs
//!   opened with clones of one config share it, as the partitions of a broker do (each clones the
//!   broker's default config), so `open_max` bounds the whole broker.
//! - **Deterministic.** No clock and no randomness: recency is a counter of uses, so a
//!   simulation performs the same opens in the same order on every run of a seed.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{Disk, DiskFile};

/// The default [`SegmentHandles::open_max`]: handles of closed segment files cached per broker.
///
/// 256, a quarter of the soft `RLIMIT_NOFILE` most Linux systems start processes with (1024):
/// `max.connections` takes half of the soft limit by default, and the active segment of every
/// partition, index and checkpoint writes and directory fsyncs need the rest. A miss costs one
/// `open(2)` and, at eviction, one `close(2)` (microseconds, next to a read of up to a megabyte
/// from the file), and fetches mostly read the tail of a log (active and recently closed
/// segments), so a few hundred handles cover the hot ones. Kafka keeps every segment open;
/// operators who raised the descriptor limit can raise this with it.
pub const SEGMENT_HANDLES_OPEN_MAX: usize = 256;

/// The key of one version of one segment file in a [`SegmentHandles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct HandleKey(u64);

/// A bounded, least-recently-used cache of open handles of closed segment files; see the
/// [module docs](self).
pub struct SegmentHandles {
    open_max: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_key: u64,
    /// Every registered key, with its cached handle if there is one.
    slots: HashMap<HandleKey, Option<Cached>>,
    /// Keys of cached handles by their last use, least recent first.
    by_use: BTreeMap<u64, HandleKey>,
    next_use: u64,
    /// Files opened because their handle was not cached.
    opens_count: u64,
}

struct Cached {
    file: Arc<dyn DiskFile>,
    /// The use counter at its last use (its key in `by_use`).
    used: u64,
}

impl std::fmt::Debug for SegmentHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentHandles")
            .field("open_max", &self.open_max)
            .field("cached", &self.cached_count())
            .finish()
    }
}

impl Default for SegmentHandles {
    fn default() -> Self {
        SegmentHandles::new(SEGMENT_HANDLES_OPEN_MAX)
    }
}

impl SegmentHandles {
    /// A cache holding at most `open_max` handles (0: none, every access opens the file).
    pub fn new(open_max: usize) -> SegmentHandles {
        SegmentHandles {
            open_max,
            state: Mutex::new(State::default()),
        }
    }

    /// The most handles the cache holds.
    pub fn open_max(&self) -> usize {
        self.open_max
    }

    /// Handles the cache holds now.
    pub fn cached_count(&self) -> usize {
        self.lock().by_use.len()
    }

    /// Files opened on demand so far (accesses that found no cached handle).
    pub fn opens_count(&self) -> u64 {
        self.lock().opens_count
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new key, for a new version of a segment file.
    pub(crate) fn register(&self) -> HandleKey {
        let mut state = self.lock();
        let key = HandleKey(state.next_key);
        state.next_key += 1;
        state.slots.insert(key, None);
        key
    }

    /// Forgets `key` (its file is deleted or replaced), dropping its cached handle.
    pub(crate) fn forget(&self, key: HandleKey) {
        let dropped = {
            let mut state = self.lock();
            let cached = state.slots.remove(&key).flatten();
            if let Some(cached) = &cached {
                state.by_use.remove(&cached.used);
            }
            cached
        };
        // Closed outside the lock (a real close(2), or `MemDisk`'s own lock).
        drop(dropped);
    }

    /// The cached handle of `key`, if any, now the most recently used.
    pub(crate) fn get(&self, key: HandleKey) -> Option<Arc<dyn DiskFile>> {
        let mut state = self.lock();
        let state = &mut *state;
        let used = state.next_use;
        let cached = state.slots.get_mut(&key)?.as_mut()?;
        state.by_use.remove(&cached.used);
        state.by_use.insert(used, key);
        cached.used = used;
        state.next_use += 1;
        Some(Arc::clone(&cached.file))
    }

    /// Takes the cached handle of `key` out of the cache (a segment pins it again).
    pub(crate) fn take(&self, key: HandleKey) -> Option<Arc<dyn DiskFile>> {
        let mut state = self.lock();
        let cached = state.slots.get_mut(&key)?.take()?;
        state.by_use.remove(&cached.used);
        Some(cached.file)
    }

    /// Caches `file` as the handle of `key`, the most recently used, dropping the least recently
    /// used handle if the cache is full. Returns the handle now cached for `key`: `file`, or one
    /// another thread cached first. A forgotten key caches nothing.
    pub(crate) fn put(&self, key: HandleKey, file: Arc<dyn DiskFile>) -> Arc<dyn DiskFile> {
        let mut evicted = Vec::new();
        let file = {
            let mut state = self.lock();
            let state = &mut *state;
            let used = state.next_use;
            match state.slots.get_mut(&key) {
                None => return file,
                Some(Some(cached)) => return Arc::clone(&cached.file),
                Some(slot) => {
                    *slot = Some(Cached {
                        file: Arc::clone(&file),
                        used,
                    })
                }
            }
            state.next_use += 1;
            state.by_use.insert(used, key);
            while state.by_use.len() > self.open_max {
                let (_, oldest) = state.by_use.pop_first().expect("the cache is not empty");
                let slot = state
                    .slots
                    .get_mut(&oldest)
                    .expect("a cached key is registered");
                evicted.extend(slot.take().map(|cached| cached.file));
            }
            debug_assert!(state.by_use.len() <= self.open_max);
            file
        };
        drop(evicted);
        file
    }

    /// The handle of `key`, the file at `path`: the cached one, or a new one opened through
    /// `disk` (and cached).
    pub(crate) fn get_or_open(
        &self,
        key: HandleKey,
        disk: &dyn Disk,
        path: &Path,
    ) -> io::Result<Arc<dyn DiskFile>> {
        if let Some(file) = self.get(key) {
            return Ok(file);
        }
        // Opened outside the lock: an open can be slow, and other logs read meanwhile.
        let file = disk.open(path, false)?;
        self.lock().opens_count += 1;
        Ok(self.put(key, file))
    }
}

/// The file of a closed segment as [`PartitionLog::closed_segments`](crate::PartitionLog)
/// hands it out: opened (through the [`SegmentHandles`]) at its first use, then held until the
/// last clone is dropped, so that listing thousands of segments opens nothing and one use reads
/// one version of the file. Closed segments are never written: appends and truncations fail.
pub(crate) struct OnDemandFile {
    disk: Arc<dyn Disk>,
    handles: Arc<SegmentHandles>,
    key: HandleKey,
    path: PathBuf,
    file: Mutex<Option<Arc<dyn DiskFile>>>,
}

impl OnDemandFile {
    pub(crate) fn new(
        disk: Arc<dyn Disk>,
        handles: Arc<SegmentHandles>,
        key: HandleKey,
        path: PathBuf,
    ) -> OnDemandFile {
        OnDemandFile {
            disk,
            handles,
            key,
            path,
            file: Mutex::new(None),
        }
    }

    fn file(&self) -> io::Result<Arc<dyn DiskFile>> {
        let mut slot = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(file) = &*slot {
            return Ok(Arc::clone(file));
        }
        let file = self
            .handles
            .get_or_open(self.key, &*self.disk, &self.path)?;
        *slot = Some(Arc::clone(&file));
        Ok(file)
    }

    fn read_only(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a closed segment: it is never written",
                self.path.display()
            ),
        )
    }
}

impl DiskFile for OnDemandFile {
    fn append(&self, _data: &[u8]) -> io::Result<()> {
        Err(self.read_only())
    }

    fn read_exact_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.file()?.read_exact_vec(offset, len)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file()?.read_at(offset, buf)
    }

    fn len(&self) -> io::Result<u64> {
        self.file()?.len()
    }

    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(self.read_only())
    }

    fn sync(&self) -> io::Result<()> {
        self.file()?.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    fn disk_with_files(count: usize) -> MemDisk {
        let disk = MemDisk::new();
        for i in 0..count {
            disk.open(Path::new(&format!("/f{i}")), true)
                .unwrap()
                .append(format!("file {i}").as_bytes())
                .unwrap();
        }
        disk
    }

    /// The cache keeps the most recently used handles, at most `open_max`, and a handle a
    /// reader holds stays usable after its eviction.
    #[test]
    fn least_recently_used_handles_go_first() {
        let disk = disk_with_files(4);
        let handles = SegmentHandles::new(2);
        let keys: Vec<HandleKey> = (0..4).map(|_| handles.register()).collect();
        let path = |i: usize| PathBuf::from(format!("/f{i}"));
        let held = handles.get_or_open(keys[0], &disk, &path(0)).unwrap();
        handles.get_or_open(keys[1], &disk, &path(1)).unwrap();
        handles.get_or_open(keys[0], &disk, &path(0)).unwrap();
        handles.get_or_open(keys[2], &disk, &path(2)).unwrap();
        assert_eq!(handles.cached_count(), 2);
        assert!(handles.get(keys[0]).is_some(), "used last but one: kept");
        assert!(
            handles.get(keys[1]).is_none(),
            "least recently used: evicted"
        );
        assert_eq!(handles.opens_count(), 3);
        handles.get_or_open(keys[3], &disk, &path(3)).unwrap();
        handles.get_or_open(keys[3], &disk, &path(3)).unwrap();
        assert_eq!(handles.opens_count(), 4);
        assert!(handles.get(keys[2]).is_none());
        assert_eq!(held.read_exact_vec(0, 6).unwrap(), b"file 0");
        // The cache holds 2, the test holds `held` (cached too): 2 files open.
        assert_eq!(disk.open_file_count(), 2);
    }

    /// A forgotten key's handle is dropped (its file closed), and a handle put under a forgotten
    /// key is not cached: a replaced file's old handle is never served.
    #[test]
    fn forgotten_keys_cache_nothing() {
        let disk = disk_with_files(1);
        let handles = SegmentHandles::new(8);
        let key = handles.register();
        handles.get_or_open(key, &disk, Path::new("/f0")).unwrap();
        assert_eq!(disk.open_file_count(), 1);
        handles.forget(key);
        assert_eq!(disk.open_file_count(), 0);
        assert_eq!(handles.cached_count(), 0);
        let late = handles.get_or_open(key, &disk, Path::new("/f0")).unwrap();
        assert_eq!(handles.cached_count(), 0);
        drop(late);
        assert_eq!(disk.open_file_count(), 0);
    }

    /// With `open_max` 0 nothing is cached: every access opens the file, and it closes when the
    /// reader is done.
    #[test]
    fn an_empty_cache_opens_every_time() {
        let disk = disk_with_files(1);
        let handles = SegmentHandles::new(0);
        let key = handles.register();
        for _ in 0..3 {
            let file = handles.get_or_open(key, &disk, Path::new("/f0")).unwrap();
            assert_eq!(file.read_exact_vec(0, 6).unwrap(), b"file 0");
        }
        assert_eq!(handles.opens_count(), 3);
        assert_eq!(disk.open_file_count(), 0);
    }
}
