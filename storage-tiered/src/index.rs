//! Sparse in-memory indexes of a segment, written as `.index` / `.timeindex` files when the
//! segment is rolled.
//!
//! - Offset index: entries `(relative offset u32, file position u32)`, big-endian, 8 bytes each,
//!   one for the first batch after every `index.interval.bytes` of appended data. The relative
//!   offset is that of the batch's first record.
//! - Time index: entries `(max timestamp so far i64, relative offset u32)`, 12 bytes each,
//!   appended at the same points when the largest timestamp so far grew, plus a last entry for
//!   the segment's largest timestamp when it is rolled. An entry `(t, o)` says that every batch
//!   up to and including the one at `o` has a max timestamp `<= t`; timestamps strictly
//!   increase from entry to entry (see [`TimeIndex::lookup`]).

/// Size of an offset index entry.
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
/// Size of a time index entry.
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

/// Sparse map from relative offsets to file positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// An empty index.
    pub fn new() -> OffsetIndex {
        OffsetIndex::default()
    }

    /// Appends an entry; relative offsets and positions must increase.
    pub fn append(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.entries.last() {
            assert!(
                relative_offset > last_offset && position > last_position,
                "offset index entries must increase"
            );
        }
        self.entries.push((relative_offset, position));
    }

    /// The position of the last indexed batch whose first offset is at most `relative_offset`
    /// (0 when there is none): scanning from there finds the batch holding the offset.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        let i = self.entries.partition_point(|e| e.0 <= relative_offset);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_INDEX_ENTRY_BYTES);
        for (offset, position) in &self.entries {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
        }
        out
    }

    /// Parses the file form; `None` if it is not a valid index.
    pub fn decode(bytes: &[u8]) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_INDEX_ENTRY_BYTES) {
            return None;
        }
        let mut index = OffsetIndex::new();
        for chunk in bytes.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            let offset = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if let Some(&(o, p)) = index.entries.last() {
                if offset <= o || position <= p {
                    return None;
                }
            }
            index.entries.push((offset, position));
        }
        Some(index)
    }
}

/// Sparse map from timestamps to relative offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// An empty index.
    pub fn new() -> TimeIndex {
        TimeIndex::default()
    }

    /// Appends `(max_timestamp_so_far, relative_offset)` if the timestamp grew since the last
    /// entry; returns whether it did.
    pub fn maybe_append(&mut self, max_timestamp_so_far: i64, relative_offset: u32) -> bool {
        if let Some(&(ts, offset)) = self.entries.last() {
            if max_timestamp_so_far <= ts || relative_offset <= offset {
                return false;
            }
        }
        self.entries.push((max_timestamp_so_far, relative_offset));
        true
    }

    /// A relative offset to start scanning from for the first batch whose max timestamp is
    /// `>= ts`: the offset of the last entry whose timestamp is below `ts` (every batch before
    /// that one has a smaller timestamp, as has that batch), or 0.
    pub fn lookup(&self, ts: i64) -> u32 {
        let i = self.entries.partition_point(|e| e.0 < ts);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    /// The largest timestamp indexed.
    pub fn last_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|e| e.0)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_INDEX_ENTRY_BYTES);
        for (ts, offset) in &self.entries {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out
    }

    /// Parses the file form; `None` if it is not a valid index.
    pub fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_INDEX_ENTRY_BYTES) {
            return None;
        }
        let mut index = TimeIndex::new();
        for chunk in bytes.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let ts = i64::from_be_bytes(ts);
            let offset = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if !index.maybe_append(ts, offset) {
                return None;
            }
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_roundtrip() {
        let mut index = OffsetIndex::new();
        assert_eq!(index.lookup(5), 0);
        index.append(10, 4000);
        index.append(25, 8200);
        assert_eq!(index.lookup(9), 0);
        assert_eq!(index.lookup(10), 4000);
        assert_eq!(index.lookup(24), 4000);
        assert_eq!(index.lookup(u32::MAX), 8200);
        assert_eq!(OffsetIndex::decode(&index.encode()), Some(index));
        assert_eq!(OffsetIndex::decode(&[0; 7]), None);
        let mut bad = OffsetIndex::new().encode();
        bad.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0, 10]);
        assert_eq!(OffsetIndex::decode(&bad), None);
    }

    #[test]
    fn time_index_lookup_and_roundtrip() {
        let mut index = TimeIndex::new();
        assert!(index.maybe_append(100, 3));
        assert!(!index.maybe_append(100, 7), "timestamp did not grow");
        assert!(index.maybe_append(200, 9));
        assert_eq!(index.lookup(50), 0);
        assert_eq!(index.lookup(100), 0);
        assert_eq!(index.lookup(101), 3);
        assert_eq!(index.lookup(1000), 9);
        assert_eq!(index.last_timestamp(), Some(200));
        assert_eq!(TimeIndex::decode(&index.encode()), Some(index));
    }
}
