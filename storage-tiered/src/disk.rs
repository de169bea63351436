//! The disk seam: every byte Strata reads or writes on a disk goes through [`Disk`] and
//! [`DiskFile`].
//!
//! Two implementations:
//!
//! - [`RealDisk`]: `std::fs`, appends through `O_APPEND`, `fdatasync` for [`DiskFile::sync`] and an
//!   `fsync` of the directory for [`Disk::sync_dir`].
//! - [`MemDisk`]: everything in memory, with a crash model for tests and simulation.
//!
//! # The `MemDisk` fault model
//!
//! Modelled on the storage fault model of TigerBeetle and on what the durability literature says a
//! correct log must survive:
//!
//! - **File contents.** Each file (an *inode*) has its current bytes and its *durable* bytes.
//!   [`DiskFile::sync`] makes the current bytes durable. [`MemDisk::crash`] brings every file back to
//!   its durable bytes: appends and truncations that were not synced are lost.
//! - **Torn writes.** `crash(Some(seed))` additionally lets each file keep a seeded prefix of its
//!   unsynced tail, cut at a 512-byte sector boundary (or the whole tail), and the last kept
//!   sector may hold garbage (random bytes or zeros) instead of what was written. A file whose
//!   unsynced change includes a truncation below its durable length is restored to its durable
//!   bytes without tearing.
//! - **Directory entries.** Creating, renaming and removing a file changes the *current* namespace
//!   only; [`Disk::sync_dir`] of the parent directory makes those entries durable. On a crash the
//!   namespace goes back to its durable state: files created without a directory sync vanish (even
//!   if their data was synced), renames and removals without a directory sync are undone.
//! - **Directories themselves** (`create_dir_all`, `remove_dir_all`, and `rename` of a
//!   directory, which moves the files below it) are modelled as durable at once: Strata's directories hold no data of their own, and the simplification keeps callers
//!   from having to sync every ancestor.
//! - **Full disk.** [`MemDisk::set_space_bytes_max`] caps the total bytes of all files; an append
//!   past the cap writes what fits and then fails with `ENOSPC` (raw OS error 28, kind
//!   `StorageFull`), like a real partial `write(2)`.
//! - **Failing syncs.** [`MemDisk::set_fail_syncs`] makes syncs fail with `EIO` without making
//!   anything durable.
//! - **Stale handles.** File handles opened before a crash fail every call afterwards (the process
//!   that held them is gone).
//! - **Out of descriptors.** [`MemDisk::open_file_count`] counts the live handles (opened and not
//!   yet dropped); [`MemDisk::set_open_files_max`] makes opens past a cap fail with `EMFILE`
//!   (raw OS error 24), as `RLIMIT_NOFILE` does.
//!
//! `MemDisk` is deterministic: ordered maps only, and randomness only from the seed given to
//! `crash` (splitmix64).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The raw OS error number of "no space left on device" on Linux.
pub const ENOSPC: i32 = 28;

/// The raw OS error number of an I/O error (`EIO`) on Linux.
pub const EIO: i32 = 5;

/// The raw OS error number of "too many open files" (`EMFILE`) on Linux.
pub const EMFILE: i32 = 24;

/// Sector size of the torn-write model of [`MemDisk`].
pub const SECTOR_BYTES: u64 = 512;

/// A file system as Strata uses it. Paths are absolute or relative as the caller gives them.
pub trait Disk: Send + Sync + 'static {
    /// Creates `path` and all its missing ancestors.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file for reads and appends; creates it (as an unsynced directory entry) if `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    /// Names (not paths) of the entries of `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable. A directory that cannot be
    /// opened (EMFILE, ENOENT, ...) fails with a [`DirOpenError`] (see [`is_dir_open_error`]):
    /// no fsync was attempted, unlike any other error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The error of a [`Disk::sync_dir`] that could not open its directory (out of file
/// descriptors, say): no fsync was attempted, so the kernel dropped nothing and the caller may
/// fail the operation and retry later; a failed fsync, in contrast, must crash the process.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the directory to sync it: {0}")]
pub struct DirOpenError(#[source] pub io::Error);

/// Wraps `error`, from opening a directory to sync it, as a [`DirOpenError`] of the same kind.
pub fn dir_open_error(error: io::Error) -> io::Error {
    io::Error::new(error.kind(), DirOpenError(error))
}

/// Whether `error` is a [`Disk::sync_dir`] that could not open its directory (as opposed to a
/// failed fsync).
pub fn is_dir_open_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<DirOpenError>())
}

/// An open file: positional reads, appends at the end, truncation and sync.
pub trait DiskFile: Send + Sync {
    /// Appends all of `data` at the end of the file.
    fn append(&self, data: &[u8]) -> io::Result<()>;
    /// Appends `parts`, back to back, as one contiguous run of bytes (like one `append` of their
    /// concatenation, with the same failure semantics). The default concatenates; a real file
    /// hands the slices to one vectored write.
    fn append_vectored(&self, parts: &[&[u8]]) -> io::Result<()> {
        if let [only] = parts {
            return self.append(only);
        }
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let mut joined = Vec::with_capacity(total);
        for part in parts {
            joined.extend_from_slice(part);
        }
        self.append(&joined)
    }
    /// Reads exactly `len` bytes at `offset` into a new buffer (`UnexpectedEof` if the file is
    /// shorter). The default zero-fills the buffer and reads into it; a real file reads into
    /// uninitialized memory, which spares a memset of every fetch's buffer.
    fn read_exact_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        fill_at(|at, rest| self.read_at(at, rest), offset, &mut buf)?;
        Ok(buf)
    }
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or zero-extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every byte appended so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
}

/// Reads exactly `buf.len()` bytes at `offset`, failing with `UnexpectedEof` at the end of file.
pub fn read_exact_at(file: &dyn DiskFile, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    fill_at(|at, rest| file.read_at(at, rest), offset, buf)
}

/// Fills `buf` from `offset` with positional reads (`read_at(offset, buf)` returns how many
/// bytes it read, 0 at the end of the file), retrying interrupted ones.
fn fill_at(
    mut read_at: impl FnMut(u64, &mut [u8]) -> io::Result<usize>,
    mut offset: u64,
    mut buf: &mut [u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        match read_at(offset, buf) {
            Ok(0) => return Err(end_of_file(offset)),
            Ok(n) => {
                offset += n as u64;
                buf = &mut buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn end_of_file(offset: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("end of file at byte {offset}"),
    )
}

/// Whether `error` means the device is full (`ENOSPC`).
pub fn is_storage_full(error: &io::Error) -> bool {
    error.raw_os_error() == Some(ENOSPC) || error.kind() == io::ErrorKind::StorageFull
}

// ---------------------------------------------------------------------------------------------
// RealDisk
// ---------------------------------------------------------------------------------------------

/// The real file system through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

impl RealDisk {
    /// A handle on the real file system.
    pub fn new() -> RealDisk {
        RealDisk
    }
}

/// Slices handed to one `writev` (Linux's IOV_MAX is 1024).
const IOVECS_PER_WRITE_MAX: usize = 1024;

struct RealFile {
    file: File,
    /// Serializes appends so that one `append` call lands as one contiguous run of bytes.
    append_lock: Mutex<()>,
}

impl DiskFile for RealFile {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        let _guard = self
            .append_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The file is opened with O_APPEND: every write lands at the current end.
        (&self.file).write_all(data)
    }

    fn append_vectored(&self, parts: &[&[u8]]) -> io::Result<()> {
        let _guard = self
            .append_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut slices: Vec<io::IoSlice<'_>> = parts
            .iter()
            .filter(|part| !part.is_empty())
            .map(|part| io::IoSlice::new(part))
            .collect();
        let mut remaining = &mut slices[..];
        // O_APPEND as in `append`; a short write continues where it stopped.
        while !remaining.is_empty() {
            let count = remaining.len().min(IOVECS_PER_WRITE_MAX);
            match (&self.file).write_vectored(&remaining[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => io::IoSlice::advance_slices(&mut remaining, written),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn read_exact_vec(&self, mut offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        while buf.len() < len {
            let missing = len - buf.len();
            let at = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::other(format!("offset {offset} out of range")))?;
            let spare = buf.spare_capacity_mut();
            debug_assert!(spare.len() >= missing);
            // SAFETY: `spare` is writable memory of at least `missing` bytes owned by `buf`;
            // pread writes at most `missing` bytes there and reports how many.
            let read = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    spare.as_mut_ptr().cast::<libc::c_void>(),
                    missing,
                    at,
                )
            };
            if read < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if read == 0 {
                return Err(end_of_file(offset));
            }
            let read = read as usize;
            assert!(read <= missing, "pread reported more bytes than asked for");
            // SAFETY: pread initialized the `read` bytes after the current length.
            unsafe { buf.set_len(buf.len() + read) };
            offset += read as u64;
        }
        Ok(buf)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let _guard = self
            .append_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .open(path)?;
        Ok(Arc::new(RealFile {
            file,
            append_lock: Mutex::new(()),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir).map_err(dir_open_error)?.sync_all()
    }
}

// ---------------------------------------------------------------------------------------------
// MemDisk
// ---------------------------------------------------------------------------------------------

/// An in-memory [`Disk`] with the crash model described in the [module docs](self).
///
/// Clones share the same state.
#[derive(Clone)]
pub struct MemDisk {
    inner: Arc<Mutex<MemInner>>,
}

impl Default for MemDisk {
    fn default() -> Self {
        MemDisk::new()
    }
}

impl std::fmt::Debug for MemDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemDisk")
            .field("files", &inner.files.len())
            .field("dirs", &inner.dirs.len())
            .field("generation", &inner.generation)
            .finish()
    }
}

type InodeId = u64;

#[derive(Default)]
struct MemInner {
    /// Directories (durable at once, see the module docs).
    dirs: BTreeSet<PathBuf>,
    /// Current namespace: file path -> inode.
    files: BTreeMap<PathBuf, InodeId>,
    /// Durable namespace: file path -> inode.
    durable_files: BTreeMap<PathBuf, InodeId>,
    /// Paths whose entry may differ between `files` and `durable_files` (changed since their
    /// directory's last sync): what a directory sync looks at.
    unsynced_paths: BTreeSet<PathBuf>,
    inodes: BTreeMap<InodeId, Inode>,
    next_inode: InodeId,
    /// Bumped by every crash; handles of an older generation are stale.
    generation: u64,
    space_bytes_max: Option<u64>,
    /// While set, file and directory syncs fail with `EIO`.
    fail_syncs: bool,
    /// Sum of the current lengths of all inodes.
    used_bytes: u64,
    /// Live handles of the current generation (opened, not yet dropped).
    open_files: usize,
    /// While set, opens with this many live handles fail with `EMFILE`.
    open_files_max: Option<usize>,
}

#[derive(Default)]
struct Inode {
    /// Current bytes.
    data: Vec<u8>,
    /// Length of the prefix of `data` equal to the durable bytes.
    stable_len: usize,
    /// Durable bytes past `stable_len` (removed from `data` by an unsynced truncation).
    durable_suffix: Vec<u8>,
    /// Open handles of the current generation.
    handles: usize,
}

impl Inode {
    fn durable_len(&self) -> usize {
        self.stable_len + self.durable_suffix.len()
    }
}

/// splitmix64: a tiny deterministic generator for the torn-write model.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`.
    pub fn below_inclusive(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            self.next_u64()
        } else {
            self.next_u64() % (max + 1)
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

impl MemInner {
    fn parent_exists(&self, path: &Path) -> bool {
        match path.parent() {
            None => true,
            Some(p) if p.as_os_str().is_empty() => true,
            Some(p) => self.dirs.contains(p),
        }
    }

    /// Drops inode `id`, which just lost its handle or its name `path` in a namespace, if no
    /// namespace and no handle refers to it: the check of one inode, without the full walk of
    /// [`MemInner::collect_garbage`] (a log of thousands of segments drops handles and renames
    /// files at every roll).
    fn collect_inode(&mut self, id: InodeId, path: &Path) {
        let Some(inode) = self.inodes.get(&id) else {
            return;
        };
        let named_at_path =
            |namespace: &BTreeMap<PathBuf, InodeId>| namespace.get(path) == Some(&id);
        let named = |namespace: &BTreeMap<PathBuf, InodeId>| namespace.values().any(|v| *v == id);
        if inode.handles > 0
            || named_at_path(&self.files)
            || named_at_path(&self.durable_files)
            || named(&self.files)
            || named(&self.durable_files)
        {
            return;
        }
        if let Some(inode) = self.inodes.remove(&id) {
            self.used_bytes -= inode.data.len() as u64;
        }
    }

    /// Drops inodes that no namespace and no handle refers to.
    fn collect_garbage(&mut self) {
        let referenced: BTreeSet<InodeId> = self
            .files
            .values()
            .chain(self.durable_files.values())
            .copied()
            .collect();
        let dead: Vec<InodeId> = self
            .inodes
            .iter()
            .filter(|(id, inode)| inode.handles == 0 && !referenced.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            if let Some(inode) = self.inodes.remove(&id) {
                self.used_bytes -= inode.data.len() as u64;
            }
        }
    }
}

impl MemDisk {
    /// An empty in-memory disk (only the root directory `/` exists).
    pub fn new() -> MemDisk {
        let mut inner = MemInner::default();
        inner.dirs.insert(PathBuf::from("/"));
        MemDisk {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Caps the total bytes of all files; `None` removes the cap. Appends past it fail with
    /// `ENOSPC` after writing what fits.
    pub fn set_space_bytes_max(&self, space_bytes_max: Option<u64>) {
        self.lock().space_bytes_max = space_bytes_max;
    }

    /// While `fail` is set, [`DiskFile::sync`] and [`Disk::sync_dir`] fail with `EIO` (raw OS
    /// error 5) and make nothing durable: a dying disk, after which a correct program crashes
    /// rather than retrying.
    pub fn set_fail_syncs(&self, fail: bool) {
        self.lock().fail_syncs = fail;
    }

    /// Caps the live file handles; `None` removes the cap. An open while `open_files_max`
    /// handles are live fails with `EMFILE`, as a process out of descriptors does.
    pub fn set_open_files_max(&self, open_files_max: Option<usize>) {
        self.lock().open_files_max = open_files_max;
    }

    /// File handles opened (since the last crash) and not yet dropped: the descriptors a real
    /// disk would hold.
    pub fn open_file_count(&self) -> usize {
        self.lock().open_files
    }

    /// Total current bytes of all files.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes
    }

    /// Simulates a power loss: everything that was not made durable is lost (see the module
    /// docs). With `tear = Some(seed)`, unsynced tails may survive in part, torn at sector
    /// granularity, with garbage in the last kept sector. Handles opened before the crash become
    /// stale.
    pub fn crash(&self, tear: Option<u64>) {
        let mut inner = self.lock();
        let mut rng = tear.map(SplitMix64::new);
        inner.generation += 1;
        inner.files = inner.durable_files.clone();
        inner.unsynced_paths.clear();
        for inode in inner.inodes.values_mut() {
            inode.handles = 0;
        }
        inner.open_files = 0;
        inner.collect_garbage();
        let mut used_bytes = 0;
        for inode in inner.inodes.values_mut() {
            let durable_len = inode.durable_len();
            if inode.durable_suffix.is_empty() {
                // data = durable bytes ++ unsynced tail.
                debug_assert_eq!(inode.stable_len, durable_len);
                let keep = match rng.as_mut() {
                    Some(rng) if inode.data.len() > durable_len => {
                        let tail = (inode.data.len() - durable_len) as u64;
                        let candidate = durable_len as u64 + rng.below_inclusive(tail);
                        let kept = if candidate == inode.data.len() as u64 {
                            candidate
                        } else {
                            (candidate / SECTOR_BYTES * SECTOR_BYTES).max(durable_len as u64)
                        };
                        let kept = kept as usize;
                        // Garbage in the unsynced part of the last kept sector.
                        let sector_start =
                            (kept.saturating_sub(1) as u64 / SECTOR_BYTES * SECTOR_BYTES) as usize;
                        let garbage_from = sector_start.max(durable_len);
                        if kept > garbage_from {
                            match rng.next_u64() % 3 {
                                0 => {}
                                1 => inode.data[garbage_from..kept].fill(0),
                                _ => {
                                    for byte in &mut inode.data[garbage_from..kept] {
                                        *byte = rng.next_u64() as u8;
                                    }
                                }
                            }
                        }
                        kept
                    }
                    _ => durable_len,
                };
                inode.data.truncate(keep);
            } else {
                let stable_len = inode.stable_len;
                let suffix = std::mem::take(&mut inode.durable_suffix);
                inode.data.truncate(stable_len);
                inode.data.extend_from_slice(&suffix);
            }
            // Whatever survived is now what the disk holds.
            inode.stable_len = inode.data.len();
            used_bytes += inode.data.len() as u64;
        }
        inner.used_bytes = used_bytes;
    }

    /// The current bytes of the file at `path` (for tests).
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let inner = self.lock();
        let id = inner.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(inner.inodes[id].data.clone())
    }

    /// Overwrites bytes of the file at `path` in place, as a bit flip or media corruption would
    /// (for tests). Bytes inside the synced prefix of the file change durably; bytes past it
    /// change only the unsynced current bytes. Fails if the range is past the end of the file.
    pub fn corrupt(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        let id = *inner.files.get(path).ok_or_else(|| not_found(path))?;
        let inode = inner.inodes.get_mut(&id).ok_or_else(|| not_found(path))?;
        let start = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let end = start
            .checked_add(bytes.len())
            .filter(|end| *end <= inode.data.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range past end"))?;
        inode.data[start..end].copy_from_slice(bytes);
        Ok(())
    }
}

struct MemFile {
    disk: MemDisk,
    inode: InodeId,
    generation: u64,
    path: PathBuf,
}

impl MemFile {
    fn with_inode<R>(
        &self,
        f: impl FnOnce(&mut MemInner, InodeId) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut inner = self.disk.lock();
        if inner.generation != self.generation || !inner.inodes.contains_key(&self.inode) {
            return Err(io::Error::other(format!(
                "{}: stale file handle (opened before a crash)",
                self.path.display()
            )));
        }
        f(&mut inner, self.inode)
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        let mut inner = self.disk.lock();
        if inner.generation == self.generation {
            if let Some(inode) = inner.inodes.get_mut(&self.inode) {
                inode.handles -= 1;
            }
            inner.open_files -= 1;
            inner.collect_inode(self.inode, &self.path);
        }
    }
}

impl DiskFile for MemFile {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        self.with_inode(|inner, id| {
            let room = match inner.space_bytes_max {
                Some(max) => max.saturating_sub(inner.used_bytes),
                None => u64::MAX,
            };
            let fits = (data.len() as u64).min(room) as usize;
            let inode = inner.inodes.get_mut(&id).expect("checked by with_inode");
            inode.data.extend_from_slice(&data[..fits]);
            inner.used_bytes += fits as u64;
            if fits < data.len() {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            Ok(())
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.with_inode(|inner, id| {
            let data = &inner.inodes[&id].data;
            let Ok(start) = usize::try_from(offset) else {
                return Ok(0);
            };
            if start >= data.len() {
                return Ok(0);
            }
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with_inode(|inner, id| Ok(inner.inodes[&id].data.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_inode(|inner, id| {
            let len = usize::try_from(len)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
            let old_len = inner.inodes[&id].data.len();
            if len > old_len {
                let grow = (len - old_len) as u64;
                if let Some(max) = inner.space_bytes_max {
                    if inner.used_bytes + grow > max {
                        return Err(io::Error::from_raw_os_error(ENOSPC));
                    }
                }
                inner.used_bytes += grow;
            } else {
                inner.used_bytes -= (old_len - len) as u64;
            }
            let inode = inner.inodes.get_mut(&id).expect("checked by with_inode");
            if len < inode.stable_len {
                // The durable bytes in [len, stable_len) are no longer in `data`: keep them for a
                // crash that undoes this truncation.
                let mut suffix = inode.data[len..inode.stable_len].to_vec();
                suffix.append(&mut inode.durable_suffix);
                inode.durable_suffix = suffix;
                inode.stable_len = len;
            }
            inode.data.resize(len, 0);
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.with_inode(|inner, id| {
            if inner.fail_syncs {
                return Err(io::Error::from_raw_os_error(EIO));
            }
            let inode = inner.inodes.get_mut(&id).expect("checked by with_inode");
            inode.stable_len = inode.data.len();
            inode.durable_suffix.clear();
            Ok(())
        })
    }
}

impl Disk for MemDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        for ancestor in path.ancestors() {
            if ancestor.as_os_str().is_empty() {
                continue;
            }
            if inner.files.contains_key(ancestor) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a file", ancestor.display()),
                ));
            }
        }
        for ancestor in path.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                inner.dirs.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut inner = self.lock();
        if inner.dirs.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        if inner
            .open_files_max
            .is_some_and(|max| inner.open_files >= max)
        {
            return Err(io::Error::from_raw_os_error(EMFILE));
        }
        let id = match inner.files.get(path) {
            Some(id) => *id,
            None => {
                if !create || !inner.parent_exists(path) {
                    return Err(not_found(path));
                }
                let id = inner.next_inode;
                inner.next_inode += 1;
                inner.inodes.insert(id, Inode::default());
                inner.files.insert(path.to_path_buf(), id);
                inner.unsynced_paths.insert(path.to_path_buf());
                id
            }
        };
        inner
            .inodes
            .get_mut(&id)
            .expect("a namespace entry always has an inode")
            .handles += 1;
        inner.open_files += 1;
        let generation = inner.generation;
        drop(inner);
        Ok(Arc::new(MemFile {
            disk: self.clone(),
            inode: id,
            generation,
            path: path.to_path_buf(),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let inner = self.lock();
        if !inner.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let mut names: Vec<String> = inner
            .files
            .keys()
            .map(|p| p.as_path())
            .chain(inner.dirs.iter().map(|p| p.as_path()))
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        let inner = self.lock();
        inner.files.contains_key(path) || inner.dirs.contains(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.dirs.contains(from) && !inner.dirs.contains(to) && !inner.files.contains_key(to) {
            // A directory (a topic deletion renames partition dirs): like directories
            // themselves, durable at once, with the files below it.
            if !inner.parent_exists(to) || to.starts_with(from) {
                return Err(not_found(to));
            }
            let moved = |p: &PathBuf| -> PathBuf {
                match p.strip_prefix(from) {
                    Ok(rest) if !rest.as_os_str().is_empty() => to.join(rest),
                    _ => to.to_path_buf(),
                }
            };
            let inner = &mut *inner;
            let dirs: Vec<PathBuf> = inner
                .dirs
                .iter()
                .filter(|d| d.starts_with(from))
                .cloned()
                .collect();
            for dir in dirs {
                inner.dirs.remove(&dir);
                inner.dirs.insert(moved(&dir));
            }
            for namespace in [&mut inner.files, &mut inner.durable_files] {
                let entries: Vec<(PathBuf, InodeId)> = namespace
                    .iter()
                    .filter(|(p, _)| p.starts_with(from))
                    .map(|(p, id)| (p.clone(), *id))
                    .collect();
                for (path, id) in entries {
                    namespace.remove(&path);
                    namespace.insert(moved(&path), id);
                }
            }
            let unsynced: Vec<PathBuf> = inner
                .unsynced_paths
                .iter()
                .filter(|p| p.starts_with(from))
                .cloned()
                .collect();
            for path in unsynced {
                inner.unsynced_paths.remove(&path);
                inner.unsynced_paths.insert(moved(&path));
            }
            return Ok(());
        }
        if inner.dirs.contains(from) || inner.dirs.contains(to) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "MemDisk renames files only",
            ));
        }
        if !inner.parent_exists(to) {
            return Err(not_found(to));
        }
        let id = inner.files.remove(from).ok_or_else(|| not_found(from))?;
        inner.unsynced_paths.insert(from.to_path_buf());
        inner.unsynced_paths.insert(to.to_path_buf());
        if let Some(replaced) = inner.files.insert(to.to_path_buf(), id) {
            inner.collect_inode(replaced, to);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        let id = inner.files.remove(path).ok_or_else(|| not_found(path))?;
        inner.unsynced_paths.insert(path.to_path_buf());
        inner.collect_inode(id, path);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.dirs.contains(path) {
            return Err(not_found(path));
        }
        inner.dirs.retain(|d| !d.starts_with(path));
        inner.files.retain(|f, _| !f.starts_with(path));
        inner.durable_files.retain(|f, _| !f.starts_with(path));
        inner.unsynced_paths.retain(|f| !f.starts_with(path));
        inner.collect_garbage();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.dirs.contains(dir) {
            return Err(dir_open_error(not_found(dir)));
        }
        if inner.fail_syncs {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        // The durable entries of `dir` become its current ones; only those changed since its
        // last sync can differ.
        let in_dir = |p: &PathBuf| p.parent().unwrap_or(Path::new("")) == dir;
        let changed: Vec<PathBuf> = inner
            .unsynced_paths
            .iter()
            .filter(|p| in_dir(p))
            .cloned()
            .collect();
        for path in changed {
            inner.unsynced_paths.remove(&path);
            let replaced = match inner.files.get(&path).copied() {
                Some(id) => inner.durable_files.insert(path.clone(), id),
                None => inner.durable_files.remove(&path),
            };
            if let Some(replaced) = replaced {
                inner.collect_inode(replaced, &path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(disk: &MemDisk, path: &str) -> Option<Vec<u8>> {
        disk.read_file(Path::new(path)).ok()
    }

    #[test]
    fn unsynced_data_and_entries_are_lost() {
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.open(Path::new("/d/a"), true).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        f.append(b" world").unwrap();
        // Entry not dir-synced: the file vanishes despite its synced data.
        disk.crash(None);
        assert_eq!(contents(&disk, "/d/a"), None);
        assert!(f.append(b"x").is_err(), "stale handle must fail");

        let f = disk.open(Path::new("/d/a"), true).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.append(b" world").unwrap();
        disk.crash(None);
        assert_eq!(contents(&disk, "/d/a").unwrap(), b"hello");
    }

    #[test]
    fn renames_and_removals_need_dir_sync() {
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.open(Path::new("/d/a"), true).unwrap();
        f.append(b"1").unwrap();
        f.sync().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        disk.rename(Path::new("/d/a"), Path::new("/d/b")).unwrap();
        assert_eq!(disk.list(Path::new("/d")).unwrap(), vec!["b".to_string()]);
        disk.crash(None);
        assert_eq!(disk.list(Path::new("/d")).unwrap(), vec!["a".to_string()]);
        disk.rename(Path::new("/d/a"), Path::new("/d/b")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        disk.remove_file(Path::new("/d/b")).unwrap();
        disk.crash(None);
        assert_eq!(contents(&disk, "/d/b").unwrap(), b"1");
        disk.remove_file(Path::new("/d/b")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        disk.crash(None);
        assert!(disk.list(Path::new("/d")).unwrap().is_empty());
    }

    #[test]
    fn unsynced_truncation_is_undone() {
        let disk = MemDisk::new();
        let f = disk.open(Path::new("/a"), true).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        f.append(b"0123456789").unwrap();
        f.sync().unwrap();
        f.set_len(4).unwrap();
        f.append(b"xy").unwrap();
        assert_eq!(contents(&disk, "/a").unwrap(), b"0123xy");
        disk.crash(Some(7));
        assert_eq!(contents(&disk, "/a").unwrap(), b"0123456789");
    }

    #[test]
    fn torn_tail_keeps_a_sector_prefix() {
        let mut saw_partial = false;
        for seed in 0..64 {
            let disk = MemDisk::new();
            let f = disk.open(Path::new("/a"), true).unwrap();
            disk.sync_dir(Path::new("/")).unwrap();
            f.append(&[1u8; 100]).unwrap();
            f.sync().unwrap();
            f.append(&[2u8; 3000]).unwrap();
            disk.crash(Some(seed));
            let data = contents(&disk, "/a").unwrap();
            assert!(data.len() >= 100 && data.len() <= 3100);
            assert_eq!(&data[..100], &[1u8; 100], "durable bytes never change");
            assert!(data.len() == 100 || data.len() == 3100 || data.len().is_multiple_of(512));
            if data.len() > 100 && data.len() < 3100 {
                saw_partial = true;
            }
        }
        assert!(saw_partial);
    }

    #[test]
    fn enospc_after_partial_write() {
        let disk = MemDisk::new();
        disk.set_space_bytes_max(Some(10));
        let f = disk.open(Path::new("/a"), true).unwrap();
        f.append(b"12345678").unwrap();
        let err = f.append(b"abcd").unwrap_err();
        assert!(is_storage_full(&err));
        assert_eq!(f.len().unwrap(), 10);
        f.set_len(8).unwrap();
        disk.set_space_bytes_max(None);
        f.append(b"abcd").unwrap();
        assert_eq!(contents(&disk, "/a").unwrap(), b"12345678abcd");
    }

    #[test]
    fn failing_syncs_make_nothing_durable() {
        let disk = MemDisk::new();
        let f = disk.open(Path::new("/a"), true).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        f.append(b"abc").unwrap();
        disk.set_fail_syncs(true);
        assert_eq!(f.sync().unwrap_err().raw_os_error(), Some(EIO));
        assert!(disk.sync_dir(Path::new("/")).is_err());
        disk.crash(None);
        assert_eq!(contents(&disk, "/a").unwrap(), b"");
        disk.set_fail_syncs(false);
    }

    /// A directory sync that cannot open its directory is told apart from a failed fsync, so
    /// the broker can fail the operation instead of crashing (EMFILE is not an fsync failure).
    #[test]
    fn sync_dir_open_failures_are_not_fsync_failures() {
        let missing =
            std::env::temp_dir().join(format!("strata-no-such-dir-{}", std::process::id()));
        let error = RealDisk::new().sync_dir(&missing).unwrap_err();
        assert!(is_dir_open_error(&error), "{error}");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        let disk = MemDisk::new();
        assert!(is_dir_open_error(
            &disk.sync_dir(Path::new("/nowhere")).unwrap_err()
        ));
        disk.set_fail_syncs(true);
        let error = disk.sync_dir(Path::new("/")).unwrap_err();
        assert!(
            !is_dir_open_error(&error),
            "EIO from fsync is a sync failure"
        );
        let emfile = dir_open_error(io::Error::from_raw_os_error(24));
        assert!(is_dir_open_error(&emfile));
        assert!(emfile.to_string().contains("cannot open"));
    }

    /// Live handles are counted (dropping one, or a crash, closes it), and opens past the cap
    /// fail with EMFILE, as a process out of descriptors; removed files with open handles count
    /// until the handle is dropped.
    #[test]
    fn open_files_are_counted_and_capped() {
        let disk = MemDisk::new();
        let a = disk.open(Path::new("/a"), true).unwrap();
        let b = disk.open(Path::new("/a"), false).unwrap();
        assert_eq!(disk.open_file_count(), 2);
        disk.set_open_files_max(Some(2));
        let error = disk.open(Path::new("/b"), true).err().expect("EMFILE");
        assert_eq!(error.raw_os_error(), Some(EMFILE));
        assert!(
            !disk.exists(Path::new("/b")),
            "a refused open creates nothing"
        );
        drop(b);
        assert_eq!(disk.open_file_count(), 1);
        let c = disk.open(Path::new("/b"), true).unwrap();
        disk.remove_file(Path::new("/b")).unwrap();
        c.append(b"unlinked").unwrap();
        assert_eq!(disk.open_file_count(), 2);
        assert_eq!(
            disk.used_bytes(),
            8,
            "an unlinked file with a handle keeps its bytes"
        );
        drop(c);
        assert_eq!(disk.used_bytes(), 0);
        disk.crash(None);
        assert_eq!(disk.open_file_count(), 0, "a crash closes every handle");
        drop(a);
        assert_eq!(disk.open_file_count(), 0);
    }

    #[test]
    fn real_disk_roundtrip() {
        let dir = std::env::temp_dir().join(format!("strata-disk-test-{}", std::process::id()));
        let disk = RealDisk::new();
        disk.create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let f = disk.open(&path, true).unwrap();
        f.append(b"abc").unwrap();
        f.append(b"def").unwrap();
        f.sync().unwrap();
        disk.sync_dir(&dir).unwrap();
        let mut buf = [0u8; 4];
        read_exact_at(&*f, 2, &mut buf).unwrap();
        assert_eq!(&buf, b"cdef");
        assert_eq!(f.len().unwrap(), 6);
        f.set_len(2).unwrap();
        f.append(b"Z").unwrap();
        let mut buf = [0u8; 3];
        read_exact_at(&*f, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"abZ");
        assert_eq!(disk.list(&dir).unwrap(), vec!["f".to_string()]);
        disk.rename(&path, &dir.join("g")).unwrap();
        assert!(disk.exists(&dir.join("g")));
        disk.remove_file(&dir.join("g")).unwrap();
        disk.remove_dir_all(&dir).unwrap();
        assert!(!disk.exists(&dir));
    }

    /// A vectored append lands exactly as the concatenation of its parts, also with more parts
    /// than one writev takes (IOV_MAX) and with empty parts, on the real file system and on the
    /// in-memory one.
    #[test]
    fn vectored_appends_equal_the_concatenation() {
        let parts_owned: Vec<Vec<u8>> = (0..2500u32)
            .map(|i| vec![(i % 251) as u8; (i as usize * 7) % 300])
            .collect();
        let parts: Vec<&[u8]> = parts_owned.iter().map(|part| &part[..]).collect();
        let expected: Vec<u8> = [b"head".as_slice()]
            .into_iter()
            .chain(parts.iter().copied())
            .flatten()
            .copied()
            .collect();

        let dir = std::env::temp_dir().join(format!("strata-disk-vectored-{}", std::process::id()));
        let real = RealDisk::new();
        real.create_dir_all(&dir).unwrap();
        let file = real.open(&dir.join("f"), true).unwrap();
        file.append(b"head").unwrap();
        file.append_vectored(&parts).unwrap();
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), expected);
        real.remove_dir_all(&dir).unwrap();

        let mem = MemDisk::new();
        mem.create_dir_all(Path::new("/d")).unwrap();
        let file = mem.open(Path::new("/d/f"), true).unwrap();
        file.append(b"head").unwrap();
        file.append_vectored(&parts).unwrap();
        assert_eq!(contents(&mem, "/d/f").unwrap(), expected);
    }

    /// `read_exact_vec` returns exactly the bytes asked for, on the real file system (which reads
    /// into uninitialized memory) and on the in-memory one, and fails past the end of the file.
    #[test]
    fn read_exact_vec_reads_ranges_and_refuses_past_the_end() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let dir = std::env::temp_dir().join(format!("strata-disk-read-{}", std::process::id()));
        let real = RealDisk::new();
        real.create_dir_all(&dir).unwrap();
        let real_file = real.open(&dir.join("f"), true).unwrap();
        real_file.append(&data).unwrap();
        let mem = MemDisk::new();
        mem.create_dir_all(Path::new("/d")).unwrap();
        let mem_file = mem.open(Path::new("/d/f"), true).unwrap();
        mem_file.append(&data).unwrap();
        for file in [&real_file, &mem_file] {
            assert_eq!(file.read_exact_vec(0, data.len()).unwrap(), data);
            assert_eq!(
                file.read_exact_vec(12_345, 100_000).unwrap(),
                &data[12_345..112_345]
            );
            assert!(file.read_exact_vec(7, 0).unwrap().is_empty());
            let error = file.read_exact_vec(150_000, 60_000).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        }
        real.remove_dir_all(&dir).unwrap();
    }
}
