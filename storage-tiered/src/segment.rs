//! One segment of a partition log: the `<base_offset:020>.log` file of record batches back to
//! back, with its in-memory sparse indexes.
//!
//! A segment holds an open handle of its file only while it is active or holds unsynced bytes;
//! otherwise [`Segment::file`] opens it on demand through the log's [`SegmentHandles`] (see
//! [`handles`](crate::handles)).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{BatchHeader, BATCH_HEADER_BYTES, CRC_COVERED_FROM};
use crate::disk::{read_exact_at, Disk, DiskFile};
use crate::error::LogError;
use crate::handles::{HandleKey, OnDemandFile, SegmentHandles};
use crate::index::{OffsetIndex, TimeIndex};

/// Largest relative offset a segment holds (Kafka keeps them in the `i32` range).
pub const RELATIVE_OFFSET_MAX: i64 = i32::MAX as i64;
/// Largest size of a segment file: positions are `u32` in the offset index.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;

/// Extension of segment files.
pub const LOG_EXTENSION: &str = "log";
/// Extension of offset index files.
pub const INDEX_EXTENSION: &str = "index";
/// Extension of time index files.
pub const TIME_INDEX_EXTENSION: &str = "timeindex";

/// `<base_offset:020>.<extension>`.
pub fn segment_file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// The base offset of a file named `<base_offset:020>.<extension>`.
pub fn parse_segment_file_name(name: &str, extension: &str) -> Option<i64> {
    let stem = name.strip_suffix(extension)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// How a scan of a segment file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte of the file is a valid batch.
    Clean,
    /// The bytes at `position` are not a valid continuation of the log; `offset` is the offset a
    /// batch there would have had.
    Problem {
        position: u64,
        offset: i64,
        reason: String,
    },
}

/// One segment.
pub(crate) struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    /// The cache of handles of closed segment files, shared with other logs.
    handles: Arc<SegmentHandles>,
    /// This version of the file's key in `handles` (a rewrite builds a new `Segment`).
    handle_key: HandleKey,
    /// The handle the segment holds itself: `Some` while it is active or holds bytes not yet
    /// synced (they are synced through the descriptor they were written through); `None`
    /// once it is closed and durable, when its file is opened on demand.
    pinned_file: Option<Arc<dyn DiskFile>>,
    /// Bytes of valid batches in the file.
    pub size: u64,
    /// The offset after the last batch (`base_offset` when empty).
    pub next_offset: i64,
    /// Base offset of the last batch, if any.
    pub last_batch_offset: Option<i64>,
    /// Largest batch max timestamp, `i64::MIN` when empty.
    pub max_timestamp: i64,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index_entry: u64,
    /// Clock time of the first append (or of opening the log, for a recovered segment).
    pub created_ms: i64,
}

impl Segment {
    /// A new, empty segment of the file at `path`, opened as `file` (which it pins).
    pub fn new(
        base_offset: i64,
        path: PathBuf,
        file: Arc<dyn DiskFile>,
        handles: &Arc<SegmentHandles>,
        now_ms: i64,
    ) -> Segment {
        Segment {
            base_offset,
            path,
            handles: Arc::clone(handles),
            handle_key: handles.register(),
            pinned_file: Some(file),
            size: 0,
            next_offset: base_offset,
            last_batch_offset: None,
            max_timestamp: i64::MIN,
            offset_index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            bytes_since_index_entry: 0,
            created_ms: now_ms,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The handle the segment holds itself, if any: always one for the active segment and for
    /// closed ones with unsynced bytes.
    pub fn pinned_file(&self) -> Option<&Arc<dyn DiskFile>> {
        self.pinned_file.as_ref()
    }

    /// The handle of the file: the pinned one, a cached one, or one opened now through `disk`
    /// (and cached). A failed open is an I/O error of the access.
    pub fn file(&self, disk: &dyn Disk) -> Result<Arc<dyn DiskFile>, LogError> {
        if let Some(file) = &self.pinned_file {
            return Ok(Arc::clone(file));
        }
        self.handles
            .get_or_open(self.handle_key, disk, &self.path)
            .map_err(|e| LogError::io(format!("opening {}", self.path.display()), e))
    }

    /// A handle to give out without opening anything now: the pinned one, or one that opens
    /// the file at its first use (see [`OnDemandFile`]).
    pub fn file_on_demand(&self, disk: &Arc<dyn Disk>) -> Arc<dyn DiskFile> {
        match &self.pinned_file {
            Some(file) => Arc::clone(file),
            None => Arc::new(OnDemandFile::new(
                Arc::clone(disk),
                Arc::clone(&self.handles),
                self.handle_key,
                self.path.clone(),
            )),
        }
    }

    /// Moves the segment's own handle into the cache: every byte of the closed segment is
    /// durable, and its file is opened on demand from now on.
    pub fn unpin(&mut self) {
        if let Some(file) = self.pinned_file.take() {
            self.handles.put(self.handle_key, file);
        }
    }

    /// Makes the segment hold a handle of its own again (it becomes the active segment): the
    /// cached one, or one opened now.
    pub fn pin(&mut self, disk: &dyn Disk) -> Result<(), LogError> {
        if self.pinned_file.is_none() {
            let file = match self.handles.take(self.handle_key) {
                Some(file) => file,
                None => disk
                    .open(&self.path, false)
                    .map_err(|e| LogError::io(format!("opening {}", self.path.display()), e))?,
            };
            self.pinned_file = Some(file);
        }
        Ok(())
    }

    /// The segment's largest timestamp for retention: its largest batch timestamp, or its
    /// creation time if no batch carries one.
    pub fn retention_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.created_ms
        }
    }

    fn relative(&self, offset: i64) -> u32 {
        let relative = offset - self.base_offset;
        assert!(
            (0..=RELATIVE_OFFSET_MAX).contains(&relative),
            "offset {offset} outside segment {}",
            self.base_offset
        );
        relative as u32
    }

    /// Registers a batch written at `position` (its base offset already assigned).
    pub fn on_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u64) {
        assert_eq!(position, self.size, "batches are appended at the end");
        assert_eq!(header.base_offset, self.next_offset, "offsets are dense");
        assert!(position + header.size_bytes() <= SEGMENT_BYTES_MAX);
        let relative = self.relative(header.base_offset);
        // Check the last offset fits too.
        self.relative(header.last_offset());
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        if self.bytes_since_index_entry > index_interval_bytes {
            self.offset_index.append(relative, position as u32);
            self.time_index.maybe_append(self.max_timestamp, relative);
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.size_bytes();
        self.size = position + header.size_bytes();
        self.next_offset = header.next_offset();
        self.last_batch_offset = Some(header.base_offset);
    }

    /// Adds the final time index entry of a closed segment (its largest timestamp).
    pub fn finish_time_index(&mut self) {
        if let Some(last) = self.last_batch_offset {
            let relative = self.relative(last);
            self.time_index.maybe_append(self.max_timestamp, relative);
        }
    }

    /// Reads the header of the batch at `position` of `file` (the segment's file).
    pub fn read_header(&self, file: &dyn DiskFile, position: u64) -> Result<BatchHeader, LogError> {
        if position + BATCH_HEADER_BYTES as u64 > self.size {
            return Err(self.corrupt(position, "batch header past the end of the segment"));
        }
        let mut buf = [0u8; BATCH_HEADER_BYTES];
        read_exact_at(file, position, &mut buf)
            .map_err(|e| LogError::io(format!("reading {}", self.path.display()), e))?;
        let header =
            BatchHeader::parse(&buf).map_err(|e| self.corrupt(position, &e.to_string()))?;
        if position + header.size_bytes() > self.size {
            return Err(self.corrupt(position, "batch past the end of the segment"));
        }
        Ok(header)
    }

    fn corrupt(&self, position: u64, reason: &str) -> LogError {
        LogError::CorruptLog {
            file: self.path.clone(),
            position,
            reason: reason.to_string(),
        }
    }

    /// Position of the batch holding `offset` (which must be in `[base_offset, next_offset)`)
    /// in `file` (the segment's file).
    pub fn find_position(&self, file: &dyn DiskFile, offset: i64) -> Result<u64, LogError> {
        assert!(offset >= self.base_offset && offset < self.next_offset);
        let mut position = u64::from(self.offset_index.lookup(self.relative(offset)));
        while position < self.size {
            let header = self.read_header(file, position)?;
            if header.last_offset() >= offset {
                return Ok(position);
            }
            position += header.size_bytes();
        }
        Err(self.corrupt(
            position,
            &format!("offset {offset} not found in the segment"),
        ))
    }

    /// The first batch whose max timestamp is `>= ts`, read from `file` (the segment's file):
    /// `(base offset, max timestamp)`.
    pub fn find_timestamp(
        &self,
        file: &dyn DiskFile,
        ts: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let relative = self.time_index.lookup(ts);
        let mut position = u64::from(self.offset_index.lookup(relative));
        while position < self.size {
            let header = self.read_header(file, position)?;
            if header.max_timestamp >= ts {
                return Ok(Some((header.base_offset, header.max_timestamp)));
            }
            position += header.size_bytes();
        }
        Ok(None)
    }

    /// Scans the file from the start, registering every valid batch (and calling `on_batch`),
    /// until the end or the first invalid bytes. With `verify_crc`, batch CRCs are checked too
    /// (reading every byte); without, only headers are read. The segment must hold its handle
    /// (a new one does).
    pub fn scan(
        &mut self,
        verify_crc: bool,
        index_interval_bytes: u64,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<ScanEnd, LogError> {
        let path = self.path.clone();
        let context = || format!("scanning {}", path.display());
        let file = Arc::clone(
            self.pinned_file
                .as_ref()
                .expect("a segment is scanned through its own handle"),
        );
        let file_len = file.len().map_err(|e| LogError::io(context(), e))?;
        let mut position = 0u64;
        let mut reader = WindowReader::new(&*file, file_len);
        while position < file_len {
            let offset = self.next_offset;
            let problem = |reason: String| ScanEnd::Problem {
                position,
                offset,
                reason,
            };
            if file_len - position < BATCH_HEADER_BYTES as u64 {
                return Ok(problem(format!(
                    "truncated batch header ({} bytes left)",
                    file_len - position
                )));
            }
            let header_bytes = reader
                .get(position, BATCH_HEADER_BYTES)
                .map_err(|e| LogError::io(context(), e))?;
            let header = match BatchHeader::parse(header_bytes) {
                Ok(header) => header,
                Err(e) => return Ok(problem(e.to_string())),
            };
            if header.base_offset != offset {
                return Ok(problem(format!(
                    "batch base offset {} where offset {offset} was expected",
                    header.base_offset
                )));
            }
            let size = header.size_bytes();
            if size > file_len - position {
                return Ok(problem(format!(
                    "truncated batch: {size} bytes, {} left in the file",
                    file_len - position
                )));
            }
            if position + size > SEGMENT_BYTES_MAX
                || header.last_offset() - self.base_offset > RELATIVE_OFFSET_MAX
            {
                return Ok(problem(
                    "batch past the segment's size or offset limits".into(),
                ));
            }
            if verify_crc {
                let crc = if size <= WINDOW_BYTES as u64 {
                    let batch = reader
                        .get(position, size as usize)
                        .map_err(|e| LogError::io(context(), e))?;
                    crc32c::crc32c(&batch[CRC_COVERED_FROM..])
                } else {
                    crc_of_range(&*file, position + CRC_COVERED_FROM as u64, position + size)
                        .map_err(|e| LogError::io(context(), e))?
                };
                if crc != header.crc {
                    return Ok(problem(format!(
                        "batch CRC mismatch: stored {:#010x}, computed {crc:#010x}",
                        header.crc
                    )));
                }
            }
            self.on_batch(&header, position, index_interval_bytes);
            on_batch(&header);
            position += size;
        }
        Ok(ScanEnd::Clean)
    }
}

impl Drop for Segment {
    /// The file is deleted or replaced (or the log closed): its cached handle goes too.
    fn drop(&mut self) {
        self.handles.forget(self.handle_key);
    }
}

/// Size of the read-ahead window of scans.
const WINDOW_BYTES: usize = 64 * 1024;

/// Reads a file through a window of [`WINDOW_BYTES`], so that scanning small batches does not
/// cost a read per batch.
struct WindowReader<'a> {
    file: &'a dyn DiskFile,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> WindowReader<'a> {
    fn new(file: &'a dyn DiskFile, file_len: u64) -> WindowReader<'a> {
        WindowReader {
            file,
            file_len,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// The bytes `[position, position + len)`, which must lie within the file.
    fn get(&mut self, position: u64, len: usize) -> std::io::Result<&[u8]> {
        let end = position + len as u64;
        assert!(end <= self.file_len, "read past the scanned length");
        if position < self.start || end > self.start + self.buf.len() as u64 {
            let n = (WINDOW_BYTES.max(len) as u64).min(self.file_len - position) as usize;
            self.buf.resize(n, 0);
            read_exact_at(self.file, position, &mut self.buf)?;
            self.start = position;
        }
        let from = (position - self.start) as usize;
        Ok(&self.buf[from..from + len])
    }
}

/// CRC-32C of the file bytes in `[from, to)`, read in chunks.
fn crc_of_range(file: &dyn DiskFile, from: u64, to: u64) -> std::io::Result<u32> {
    const CHUNK_BYTES: u64 = 64 * 1024;
    let mut crc = 0u32;
    let mut buf = vec![0u8; CHUNK_BYTES.min(to.saturating_sub(from)) as usize];
    let mut position = from;
    while position < to {
        let n = CHUNK_BYTES.min(to - position) as usize;
        read_exact_at(file, position, &mut buf[..n])?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        position += n as u64;
    }
    Ok(crc)
}

/// Looks for a complete batch with a valid CRC starting at or after `from` in the first
/// `file_len` bytes of `file`: its position, if any. Used by recovery to tell a torn tail
/// (nothing valid after the damage) from mid-log corruption.
pub(crate) fn find_valid_batch(
    file: &dyn DiskFile,
    from: u64,
    file_len: u64,
) -> std::io::Result<Option<u64>> {
    const WINDOW_BYTES: u64 = 1024 * 1024;
    let mut window_start = from;
    while window_start < file_len {
        let window_end = (window_start + WINDOW_BYTES + BATCH_HEADER_BYTES as u64).min(file_len);
        let mut buf = vec![0u8; (window_end - window_start) as usize];
        read_exact_at(file, window_start, &mut buf)?;
        let candidates = (WINDOW_BYTES as usize).min(buf.len());
        for i in 0..candidates {
            if i + BATCH_HEADER_BYTES > buf.len() {
                break;
            }
            if buf[i + 16] != 2 {
                continue;
            }
            let Ok(header) = BatchHeader::parse(&buf[i..]) else {
                continue;
            };
            let position = window_start + i as u64;
            if header.size_bytes() > file_len - position {
                continue;
            }
            let crc = crc_of_range(
                file,
                position + CRC_COVERED_FROM as u64,
                position + header.size_bytes(),
            )?;
            if crc == header.crc {
                return Ok(Some(position));
            }
        }
        window_start += WINDOW_BYTES;
    }
    Ok(None)
}

/// Path of a segment's sibling file.
pub(crate) fn sibling_path(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(segment_file_name(base_offset, extension))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(segment_file_name(42, "log"), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log", "log"),
            Some(42)
        );
        assert_eq!(
            parse_segment_file_name("00000000000000000042.index", "log"),
            None
        );
        assert_eq!(
            parse_segment_file_name("0000000000000000042.log", "log"),
            None
        );
        assert_eq!(
            parse_segment_file_name("-0000000000000000042.log", "log"),
            None
        );
        assert_eq!(
            parse_segment_file_name("99999999999999999999.log", "log"),
            None
        );
    }
}
