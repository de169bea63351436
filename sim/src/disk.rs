//! `FaultyDisk`: the simulated disk of one node, with a storage fault model in the style of
//! TigerBeetle's `storage.zig`.
//!
//! It wraps a [`MemDisk`] (which holds the bytes and the crash model) and adds seeded faults and
//! tracing. Every operation is folded into the run's [`Trace`] (kind, path, offset, length,
//! outcome), so two runs of one seed must perform the same disk operations in the same order.
//!
//! # Fault model
//!
//! - **Crash (power loss).** [`FaultyDisk::crash`] is called whenever the node dies (the harness
//!   does it when the node boots again, see [`crate::node`]). Bytes appended and truncations not
//!   made durable by [`DiskFile::sync`] are lost; directory entries (creations, renames,
//!   removals) not made durable by [`Disk::sync_dir`] are undone; handles opened before the crash
//!   fail afterwards. (From `MemDisk`.)
//! - **Torn writes.** With [`DiskFaults::torn_tail`], a crash keeps a seeded prefix of each
//!   file's unsynced tail cut at a 512-byte sector boundary, and the last kept sector may hold
//!   zeros or random bytes. Synced bytes are never torn. (From `MemDisk::crash(Some(seed))`.)
//! - **Read bit flips.** With probability [`DiskFaults::read_bit_flip_rate`] per read, one bit of
//!   the bytes returned is flipped (a transient media or bus error: the stored bytes stay
//!   intact). A correct broker must detect it (CRC-32C) and never serve it as data.
//! - **Lost writes.** With probability [`DiskFaults::lost_sync_rate`] per file sync, the sync
//!   reports success without making anything durable (a drive that acknowledges a flush it did
//!   not perform); the next crash then drops bytes the broker believed durable. No single node
//!   can survive this: the scenarios enable it only on a minority of the replicas of a
//!   partition, which with one broker means never (replication will need it).
//! - **fsync EIO.** With probability [`DiskFaults::sync_eio_rate`] per file or directory sync,
//!   the sync fails with `EIO` and makes nothing durable. The broker must then crash rather than
//!   retry (the kernel may have dropped the dirty pages). It does: outside the simulator with
//!   `std::process::abort()`, under `cfg(madsim)` with a panic carrying
//!   [`crate::node::CRASH_PANIC_MARK`], after which madsim restarts the node and the disk crashes
//!   at the next boot. The nemesis turns this on per broker for a window
//!   ([`crate::nemesis::FaultKind::SyncEio`]).
//!
//! Directories themselves (`create_dir_all`, `remove_dir_all`) are durable at once, as in
//! `MemDisk`. With the environment variable `SIM_DEBUG_FLIPS` set, every bit flip is printed to
//! stderr (file, read offset and length, byte and bit); printing does not change the run. All randomness comes from a splitmix64 stream seeded from the run's seed.

use std::io;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use strata_storage::disk::EIO;
use strata_storage::{Disk, DiskFile, MemDisk};

use crate::rng::SimRng;
use crate::trace::Trace;

/// Which faults a [`FaultyDisk`] injects (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskFaults {
    /// A crash may keep a torn prefix of the unsynced tail.
    pub torn_tail: bool,
    /// Probability per read that one bit of the returned bytes is flipped.
    pub read_bit_flip_rate: f64,
    /// Probability per file sync that the sync silently makes nothing durable.
    pub lost_sync_rate: f64,
    /// Lost syncs hit only files whose path ends with this (empty: every file).
    pub lost_sync_path_suffix: String,
    /// Probability per sync that it fails with `EIO`.
    pub sync_eio_rate: f64,
}

/// Counts of what a [`FaultyDisk`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Crashes (power losses) applied.
    pub crashes: u64,
    /// Reads whose result had a bit flipped.
    pub bit_flips: u64,
    /// Syncs that reported success without making anything durable.
    pub lost_syncs: u64,
    /// Syncs that failed with `EIO`.
    pub sync_errors: u64,
}

struct FaultState {
    faults: DiskFaults,
    rng: SimRng,
    stats: DiskStats,
}

/// A simulated disk: a [`MemDisk`] plus seeded faults and tracing. Clones share the same disk.
#[derive(Clone)]
pub struct FaultyDisk {
    disk: MemDisk,
    state: Arc<Mutex<FaultState>>,
    trace: Trace,
}

impl std::fmt::Debug for FaultyDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyDisk")
            .field("disk", &self.disk)
            .field("faults", &self.lock().faults)
            .finish()
    }
}

impl FaultyDisk {
    /// An empty disk injecting `faults`, drawing from `seed`, recording into `trace`.
    pub fn new(faults: DiskFaults, seed: u64, trace: Trace) -> FaultyDisk {
        FaultyDisk {
            disk: MemDisk::new(),
            state: Arc::new(Mutex::new(FaultState {
                faults,
                rng: SimRng::new(seed),
                stats: DiskStats::default(),
            })),
            trace,
        }
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The underlying in-memory disk (for inspection in tests).
    pub fn mem_disk(&self) -> &MemDisk {
        &self.disk
    }

    /// Changes the faults injected from now on.
    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock().faults = faults;
    }

    /// The faults injected now.
    pub fn faults(&self) -> DiskFaults {
        self.lock().faults.clone()
    }

    /// What was injected so far.
    pub fn stats(&self) -> DiskStats {
        self.lock().stats
    }

    /// A power loss: drops everything not durable, tearing unsynced tails if
    /// [`DiskFaults::torn_tail`] (see the [module docs](self)).
    pub fn crash(&self) {
        let tear = {
            let mut state = self.lock();
            state.stats.crashes += 1;
            let seed = state.rng.next_u64();
            state.faults.torn_tail.then_some(seed)
        };
        self.disk.crash(tear);
        self.trace.disk("crash", "", 0, tear.unwrap_or(0), true);
    }

    /// Decides whether the next sync fails with EIO or is lost.
    fn sync_fate(&self, file_path: Option<&str>) -> SyncFate {
        let mut state = self.lock();
        let eio = state.faults.sync_eio_rate;
        let lost = match file_path {
            Some(path) if path.ends_with(state.faults.lost_sync_path_suffix.as_str()) => {
                state.faults.lost_sync_rate
            }
            _ => 0.0,
        };
        if state.rng.chance(eio) {
            state.stats.sync_errors += 1;
            SyncFate::Eio
        } else if state.rng.chance(lost) {
            state.stats.lost_syncs += 1;
            SyncFate::Lost
        } else {
            SyncFate::Normal
        }
    }
}

enum SyncFate {
    Normal,
    Lost,
    Eio,
}

/// Text in the message of every `EIO` a [`FaultyDisk`] injects.
pub const INJECTED_EIO_MARK: &str = "injected fsync EIO";

fn eio(path: &str) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(EIO).kind(),
        format!("{path}: {INJECTED_EIO_MARK}"),
    )
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

fn traced<T>(
    trace: &Trace,
    kind: &str,
    path: &str,
    offset: u64,
    len: u64,
    result: io::Result<T>,
) -> io::Result<T> {
    trace.disk(kind, path, offset, len, result.is_ok());
    result
}

impl Disk for FaultyDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        traced(
            &self.trace,
            "mkdir",
            &show(path),
            0,
            0,
            self.disk.create_dir_all(path),
        )
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let file = traced(
            &self.trace,
            "open",
            &show(path),
            u64::from(create),
            0,
            self.disk.open(path, create),
        )?;
        Ok(Arc::new(FaultyFile {
            file,
            path: show(path),
            disk: self.clone(),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let result = self.disk.list(dir);
        let count = result.as_ref().map_or(0, |names| names.len() as u64);
        traced(&self.trace, "list", &show(dir), 0, count, result)
    }

    fn exists(&self, path: &Path) -> bool {
        let exists = self.disk.exists(path);
        self.trace.disk("exists", &show(path), 0, 0, exists);
        exists
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let key = format!("{} -> {}", from.display(), to.display());
        traced(
            &self.trace,
            "rename",
            &key,
            0,
            0,
            self.disk.rename(from, to),
        )
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        traced(
            &self.trace,
            "remove",
            &show(path),
            0,
            0,
            self.disk.remove_file(path),
        )
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        traced(
            &self.trace,
            "rmdir",
            &show(path),
            0,
            0,
            self.disk.remove_dir_all(path),
        )
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let path = show(dir);
        let result = match self.sync_fate(None) {
            SyncFate::Eio => Err(eio(&path)),
            SyncFate::Normal | SyncFate::Lost => self.disk.sync_dir(dir),
        };
        traced(&self.trace, "sync_dir", &path, 0, 0, result)
    }
}

/// An open file of a [`FaultyDisk`].
struct FaultyFile {
    file: Arc<dyn DiskFile>,
    path: String,
    disk: FaultyDisk,
}

impl DiskFile for FaultyFile {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        let offset = self.file.len().unwrap_or(u64::MAX);
        let result = self.file.append(data);
        traced(
            &self.disk.trace,
            "append",
            &self.path,
            offset,
            data.len() as u64,
            result,
        )
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.file.read_at(offset, buf);
        if let Ok(n) = &result {
            let n = *n;
            if n > 0 {
                let mut state = self.disk.lock();
                let rate = state.faults.read_bit_flip_rate;
                if state.rng.chance(rate) {
                    let bit = state.rng.range(0..n as u64 * 8);
                    state.stats.bit_flips += 1;
                    buf[(bit / 8) as usize] ^= 1 << (bit % 8);
                    if std::env::var_os("SIM_DEBUG_FLIPS").is_some() {
                        eprintln!(
                            "FLIP {} read at {offset} len {n} byte {} bit {}",
                            self.path,
                            bit / 8,
                            bit % 8
                        );
                    }
                }
            }
        }
        let n = result.as_ref().map_or(0, |n| *n as u64);
        traced(&self.disk.trace, "read", &self.path, offset, n, result)
    }

    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        traced(
            &self.disk.trace,
            "set_len",
            &self.path,
            len,
            0,
            self.file.set_len(len),
        )
    }

    fn sync(&self) -> io::Result<()> {
        let result = match self.disk.sync_fate(Some(&self.path)) {
            SyncFate::Eio => Err(eio(&self.path)),
            SyncFate::Lost => Ok(()),
            SyncFate::Normal => self.file.sync(),
        };
        traced(&self.disk.trace, "sync", &self.path, 0, 0, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_path(dir: &str, name: &str) -> PathBuf {
        Path::new(dir).join(name)
    }

    fn disk(faults: DiskFaults) -> FaultyDisk {
        let disk = FaultyDisk::new(faults, 42, Trace::new());
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        disk
    }

    #[test]
    fn unsynced_bytes_are_lost_synced_bytes_survive() {
        let disk = disk(DiskFaults::default());
        let path = file_path("/d", "f");
        let file = disk.open(&path, true).expect("open");
        disk.sync_dir(Path::new("/d")).expect("sync dir");
        file.append(b"durable").expect("append");
        file.sync().expect("sync");
        file.append(b" volatile").expect("append");
        disk.crash();
        assert!(
            file.len().is_err(),
            "handles opened before a crash are stale"
        );
        let file = disk.open(&path, false).expect("reopen");
        let mut buf = vec![0; 64];
        let n = file.read_at(0, &mut buf).expect("read");
        assert_eq!(&buf[..n], b"durable");
        assert_eq!(disk.stats().crashes, 1);
    }

    #[test]
    fn trace_records_every_operation_in_order() {
        let a = disk(DiskFaults::default());
        let b = disk(DiskFaults::default());
        for d in [&a, &b] {
            let f = d.open(&file_path("/d", "f"), true).expect("open");
            f.append(b"x").expect("append");
            f.sync().expect("sync");
        }
        assert_eq!(a.trace.hash(), b.trace.hash());
        assert_eq!(a.trace.disk_ops(), 4);
        let c = disk(DiskFaults::default());
        let f = c.open(&file_path("/d", "f"), true).expect("open");
        f.append(b"y").expect("append");
        f.sync().expect("sync");
        // Contents are not hashed, only kinds, paths, offsets and lengths.
        assert_eq!(a.trace.hash(), c.trace.hash());
        let g = c.open(&file_path("/d", "g"), true).expect("open");
        g.append(b"yy").expect("append");
        assert_ne!(a.trace.hash(), c.trace.hash());
    }

    #[test]
    fn eio_and_lost_syncs_make_nothing_durable() {
        let disk = disk(DiskFaults {
            sync_eio_rate: 1.0,
            ..DiskFaults::default()
        });
        let file = disk.open(&file_path("/d", "f"), true).expect("open");
        file.append(b"data").expect("append");
        let error = file.sync().expect_err("EIO");
        assert_eq!(error.kind(), io::Error::from_raw_os_error(EIO).kind());
        assert!(disk.sync_dir(Path::new("/d")).is_err());
        assert_eq!(disk.stats().sync_errors, 2);

        let lost = self::disk(DiskFaults {
            lost_sync_rate: 1.0,
            ..DiskFaults::default()
        });
        let path = file_path("/d", "f");
        let file = lost.open(&path, true).expect("open");
        lost.sync_dir(Path::new("/d"))
            .expect("dir syncs are not lost");
        file.append(b"data").expect("append");
        file.sync().expect("a lost sync reports success");
        lost.crash();
        let file = lost.open(&path, false).expect("reopen");
        assert_eq!(
            file.len().expect("len"),
            0,
            "the lost sync made nothing durable"
        );
        assert_eq!(lost.stats().lost_syncs, 1);
    }

    #[test]
    fn bit_flips_change_reads_not_the_stored_bytes() {
        let disk = disk(DiskFaults {
            read_bit_flip_rate: 1.0,
            ..DiskFaults::default()
        });
        let path = file_path("/d", "f");
        let file = disk.open(&path, true).expect("open");
        file.append(&[0u8; 16]).expect("append");
        let mut buf = [0u8; 16];
        assert_eq!(file.read_at(0, &mut buf).expect("read"), 16);
        assert_eq!(buf.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
        assert_eq!(
            disk.mem_disk().read_file(&path).expect("bytes"),
            vec![0u8; 16]
        );
        assert_eq!(disk.stats().bit_flips, 1);
    }

    #[test]
    fn torn_crash_keeps_the_synced_prefix() {
        for seed in 0..20 {
            let disk = FaultyDisk::new(
                DiskFaults {
                    torn_tail: true,
                    ..DiskFaults::default()
                },
                seed,
                Trace::new(),
            );
            disk.create_dir_all(Path::new("/d")).expect("mkdir");
            let path = file_path("/d", "f");
            let file = disk.open(&path, true).expect("open");
            disk.sync_dir(Path::new("/d")).expect("sync dir");
            file.append(&[7u8; 1000]).expect("append");
            file.sync().expect("sync");
            file.append(&[9u8; 3000]).expect("append");
            disk.crash();
            let bytes = disk.mem_disk().read_file(&path).expect("bytes");
            assert!(bytes.len() >= 1000 && bytes.len() <= 4000);
            assert_eq!(&bytes[..1000], &[7u8; 1000][..]);
        }
    }
}
