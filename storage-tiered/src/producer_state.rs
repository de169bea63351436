//! Idempotent-producer sequence tracking, as Kafka's `ProducerStateManager`.
//!
//! Per producer id the log keeps the producer epoch and the metadata of its last
//! [`PRODUCER_BATCHES_CACHED`] batches. The rules for a batch of an idempotent producer
//! (producerId >= 0):
//!
//! - epoch older than the current one: [`LogError::InvalidProducerEpoch`];
//! - same epoch, and the same first and last sequence as a cached batch: a duplicate (a retry of
//!   a batch already in the log); nothing is written, the original offsets are returned;
//! - newer epoch: the first sequence must be 0 (unless the producer is unknown);
//! - same epoch: the first sequence must follow the last one (wrapping at `i32::MAX` to 0),
//!   else [`LogError::OutOfOrderSequence`];
//! - unknown producer id: any sequence is accepted.
//!
//! The state is rebuilt on open from the batch headers of the log, merged with the producer
//! snapshot written when offloaded segments are trimmed locally ([`ProducerStateManager::encode_snapshot`]):
//! a tiered partition's local segments no longer hold every producer's last batches.

use std::collections::{BTreeMap, VecDeque};

use crate::batch::increment_sequence;
use crate::error::LogError;

/// How many batches per producer are remembered for duplicate detection (Kafka's 5).
pub const PRODUCER_BATCHES_CACHED: usize = 5;

/// Most producers remembered per partition. Past it, the producers with the oldest last offsets
/// are forgotten (they become unknown producers, as after Kafka's producer id expiration).
pub const PRODUCERS_MAX: usize = 100_000;

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    /// First sequence number of the batch.
    pub first_seq: i32,
    /// Last sequence number of the batch.
    pub last_seq: i32,
    /// Offset of its first record.
    pub first_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
}

/// What the log knows about one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The producer's current epoch.
    pub epoch: i16,
    /// Its last batches, oldest first (at most [`PRODUCER_BATCHES_CACHED`]).
    pub batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    /// The last sequence number written, if any.
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    /// The offset of the producer's last record in the log, if any.
    pub fn last_offset(&self) -> Option<i64> {
        self.batches.back().map(|b| b.last_offset)
    }

    fn record(&mut self, epoch: i16, batch: BatchMetadata) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        self.batches.push_back(batch);
        while self.batches.len() > PRODUCER_BATCHES_CACHED {
            self.batches.pop_front();
        }
    }
}

/// Version of [`ProducerStateManager::encode_snapshot`]'s format.
const SNAPSHOT_VERSION: u32 = 1;

/// Reads big-endian fields off a snapshot; `None` past the end.
struct SnapshotReader<'a> {
    rest: &'a [u8],
}

impl SnapshotReader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_at_checked(N)?;
        self.rest = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

/// The result of checking a batch against the producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The batch continues the producer's sequence (or the producer is unknown): append it.
    Append,
    /// The batch is a retry of one already in the log, at these offsets.
    Duplicate(BatchMetadata),
}

/// Checks a batch of `producer_id` against `entry` (`None`: unknown producer).
pub fn check_sequence(
    entry: Option<&ProducerEntry>,
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
) -> Result<SequenceCheck, LogError> {
    let Some(entry) = entry else {
        return Ok(SequenceCheck::Append);
    };
    if epoch < entry.epoch {
        return Err(LogError::InvalidProducerEpoch {
            producer_id,
            producer_epoch: epoch,
            current_epoch: entry.epoch,
        });
    }
    if epoch > entry.epoch {
        if first_seq != 0 {
            return Err(LogError::OutOfOrderSequence {
                producer_id,
                producer_epoch: epoch,
                first_seq,
                expected_seq: 0,
            });
        }
        return Ok(SequenceCheck::Append);
    }
    // Planted bug (simulation only, see docs/simulation.md): the duplicate lookup never
    // matches, and a retry of a cached batch is appended a second time.
    #[cfg(strata_bug = "broken-dedupe")]
    if entry
        .batches
        .iter()
        .any(|b| b.first_seq == first_seq && b.last_seq == last_seq)
    {
        return Ok(SequenceCheck::Append);
    }
    if let Some(duplicate) = entry
        .batches
        .iter()
        .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
    {
        return Ok(SequenceCheck::Duplicate(*duplicate));
    }
    match entry.last_seq() {
        None => Ok(SequenceCheck::Append),
        Some(last) => {
            let expected = increment_sequence(last, 1);
            if first_seq == expected {
                Ok(SequenceCheck::Append)
            } else {
                Err(LogError::OutOfOrderSequence {
                    producer_id,
                    producer_epoch: epoch,
                    first_seq,
                    expected_seq: expected,
                })
            }
        }
    }
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateManager {
    /// No producers.
    pub fn new() -> ProducerStateManager {
        ProducerStateManager::default()
    }

    /// The entry of `producer_id`, if known.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Number of known producers.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks a batch; see the [module docs](self).
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<SequenceCheck, LogError> {
        check_sequence(
            self.get(producer_id),
            producer_id,
            epoch,
            first_seq,
            last_seq,
        )
    }

    /// Records a batch written to the log (on append, and on open while scanning the log).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMetadata) {
        self.producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::new(),
            })
            .record(epoch, batch);
        self.enforce_limit();
    }

    /// Forgets the producers with the oldest last offsets while there are more than
    /// [`PRODUCERS_MAX`] (down to 90% of it, so that eviction is rare).
    fn enforce_limit(&mut self) {
        if self.producers.len() <= PRODUCERS_MAX {
            return;
        }
        let keep = PRODUCERS_MAX - PRODUCERS_MAX / 10;
        let mut by_age: Vec<(i64, i64)> = self
            .producers
            .iter()
            .map(|(id, e)| (e.last_offset().unwrap_or(i64::MIN), *id))
            .collect();
        by_age.sort_unstable();
        let evict = by_age.len() - keep;
        for (_, id) in &by_age[..evict] {
            self.producers.remove(id);
        }
        tracing::debug!(evicted = evict, "forgot the oldest idempotent producers");
    }

    /// Starts checking the batches of one append: checks see the batches staged before them,
    /// and nothing changes until [`ProducerAppend::commit`].
    pub fn begin(&self) -> ProducerAppend<'_> {
        ProducerAppend {
            state: self,
            staged: BTreeMap::new(),
        }
    }

    /// Applies staged entries.
    pub fn apply(&mut self, staged: BTreeMap<i64, ProducerEntry>) {
        self.producers.extend(staged);
        self.enforce_limit();
    }

    /// The snapshot bytes of the whole state: a version, the entries, and a CRC-32C of all
    /// that precedes it (big-endian fields).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.producers.len() * 64);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, entry) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes [`ProducerStateManager::encode_snapshot`]'s bytes; `None` if they are damaged,
    /// truncated or of another version.
    pub fn decode_snapshot(bytes: &[u8]) -> Option<ProducerStateManager> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut reader = SnapshotReader { rest: body };
        if reader.u32()? != SNAPSHOT_VERSION {
            return None;
        }
        let count = reader.u32()? as usize;
        let mut producers = BTreeMap::new();
        for _ in 0..count {
            let id = reader.i64()?;
            let epoch = reader.i16()?;
            let n = reader.u8()? as usize;
            if n > PRODUCER_BATCHES_CACHED {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMetadata {
                    first_seq: reader.i32()?,
                    last_seq: reader.i32()?,
                    first_offset: reader.i64()?,
                    last_offset: reader.i64()?,
                });
            }
            producers.insert(id, ProducerEntry { epoch, batches });
        }
        reader
            .rest
            .is_empty()
            .then_some(ProducerStateManager { producers })
    }

    /// Merges a snapshot taken before local segments were trimmed into the state rebuilt from
    /// the remaining segments: producers the segments no longer mention come from the
    /// snapshot; for the others, the snapshot's older batches of the same epoch fill the cache
    /// in front of the scanned ones.
    pub fn merge_snapshot(&mut self, snapshot: ProducerStateManager) {
        for (id, old) in snapshot.producers {
            match self.producers.get_mut(&id) {
                None => {
                    self.producers.insert(id, old);
                }
                Some(current) if current.epoch == old.epoch => {
                    let first = current.batches.front().map_or(i64::MAX, |b| b.first_offset);
                    for b in old.batches.iter().rev().filter(|b| b.last_offset < first) {
                        current.batches.push_front(*b);
                    }
                    while current.batches.len() > PRODUCER_BATCHES_CACHED {
                        current.batches.pop_front();
                    }
                }
                Some(_) => {}
            }
        }
        self.enforce_limit();
    }

    /// Forgets producers whose last record is below `log_start_offset` (after retention), as
    /// Kafka does; they become unknown producers.
    pub fn remove_below(&mut self, log_start_offset: i64) {
        self.producers
            .retain(|_, e| e.last_offset().is_some_and(|o| o >= log_start_offset));
    }
}

/// The producer checks of one append in progress; see [`ProducerStateManager::begin`].
#[derive(Debug)]
pub struct ProducerAppend<'a> {
    state: &'a ProducerStateManager,
    staged: BTreeMap<i64, ProducerEntry>,
}

impl ProducerAppend<'_> {
    /// Checks a batch, staging it on [`SequenceCheck::Append`].
    pub fn check_and_stage(
        &mut self,
        producer_id: i64,
        epoch: i16,
        batch: BatchMetadata,
    ) -> Result<SequenceCheck, LogError> {
        let entry = self
            .staged
            .get(&producer_id)
            .or_else(|| self.state.get(producer_id));
        let check = check_sequence(entry, producer_id, epoch, batch.first_seq, batch.last_seq)?;
        if check == SequenceCheck::Append {
            let mut entry = entry.cloned().unwrap_or(ProducerEntry {
                epoch,
                batches: VecDeque::new(),
            });
            entry.record(epoch, batch);
            self.staged.insert(producer_id, entry);
        }
        Ok(check)
    }

    /// The staged entries, to [`ProducerStateManager::apply`] once the append is written.
    pub fn commit(self) -> BTreeMap<i64, ProducerEntry> {
        self.staged
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut state = ProducerStateManager::new();
        for seq in 0..7 {
            state.record(
                42,
                3,
                BatchMetadata {
                    first_seq: seq * 2,
                    last_seq: seq * 2 + 1,
                    first_offset: i64::from(seq) * 10,
                    last_offset: i64::from(seq) * 10 + 1,
                },
            );
        }
        state.record(
            7,
            0,
            BatchMetadata {
                first_seq: 0,
                last_seq: 0,
                first_offset: 100,
                last_offset: 100,
            },
        );
        let bytes = state.encode_snapshot();
        assert_eq!(
            ProducerStateManager::decode_snapshot(&bytes),
            Some(state.clone())
        );
        for cut in [0, 3, bytes.len() - 1] {
            assert_eq!(ProducerStateManager::decode_snapshot(&bytes[..cut]), None);
        }
        let mut flipped = bytes.clone();
        flipped[9] ^= 1;
        assert_eq!(ProducerStateManager::decode_snapshot(&flipped), None);

        // Merging: an unknown producer comes back whole; a known one of the same epoch gets
        // the older batches in front of its own, up to the cache size.
        let mut scanned = ProducerStateManager::new();
        scanned.record(
            42,
            3,
            BatchMetadata {
                first_seq: 14,
                last_seq: 15,
                first_offset: 70,
                last_offset: 71,
            },
        );
        scanned.merge_snapshot(state);
        assert_eq!(scanned.get(7).map(|e| e.batches.len()), Some(1));
        let merged: Vec<i32> = scanned
            .get(42)
            .unwrap()
            .batches
            .iter()
            .map(|b| b.first_seq)
            .collect();
        assert_eq!(merged, vec![6, 8, 10, 12, 14]);
    }

    use super::*;

    fn meta(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMetadata {
        BatchMetadata {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + i64::from(last_seq - first_seq),
        }
    }

    #[test]
    fn unknown_producer_accepts_any_sequence() {
        let state = ProducerStateManager::new();
        assert_eq!(state.check(1, 0, 17, 20).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn same_epoch_requires_the_next_sequence() {
        let mut state = ProducerStateManager::new();
        state.record(1, 0, meta(0, 4, 100));
        assert_eq!(state.check(1, 0, 5, 9).unwrap(), SequenceCheck::Append);
        assert!(matches!(
            state.check(1, 0, 6, 9),
            Err(LogError::OutOfOrderSequence {
                first_seq: 6,
                expected_seq: 5,
                ..
            })
        ));
        assert!(matches!(
            state.check(1, 0, 3, 4),
            Err(LogError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn duplicates_return_the_original_offsets() {
        let mut state = ProducerStateManager::new();
        for i in 0..6 {
            state.record(1, 0, meta(i * 10, i * 10 + 9, 1000 + i64::from(i) * 10));
        }
        // The last five batches are remembered.
        assert_eq!(
            state.check(1, 0, 50, 59).unwrap(),
            SequenceCheck::Duplicate(meta(50, 59, 1050))
        );
        assert_eq!(
            state.check(1, 0, 10, 19).unwrap(),
            SequenceCheck::Duplicate(meta(10, 19, 1010))
        );
        // The sixth-newest is forgotten: an out-of-order sequence.
        assert!(matches!(
            state.check(1, 0, 0, 9),
            Err(LogError::OutOfOrderSequence { .. })
        ));
        // Same first sequence but another last one is not a duplicate.
        assert!(state.check(1, 0, 50, 58).is_err());
    }

    #[test]
    fn epochs() {
        let mut state = ProducerStateManager::new();
        state.record(1, 3, meta(0, 4, 0));
        assert!(matches!(
            state.check(1, 2, 5, 5),
            Err(LogError::InvalidProducerEpoch {
                producer_epoch: 2,
                current_epoch: 3,
                ..
            })
        ));
        assert!(matches!(
            state.check(1, 4, 5, 5),
            Err(LogError::OutOfOrderSequence {
                expected_seq: 0,
                ..
            })
        ));
        assert_eq!(state.check(1, 4, 0, 0).unwrap(), SequenceCheck::Append);
        // A duplicate needs the same epoch.
        state.record(1, 4, meta(0, 0, 10));
        assert!(
            state.get(1).unwrap().batches.len() == 1,
            "epoch bump clears the cache"
        );
        assert!(matches!(
            state.check(1, 3, 0, 4),
            Err(LogError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut state = ProducerStateManager::new();
        state.record(1, 0, meta(i32::MAX - 1, i32::MAX, 0));
        assert_eq!(state.check(1, 0, 0, 3).unwrap(), SequenceCheck::Append);
        assert!(state.check(1, 0, i32::MAX, i32::MAX).is_err());
    }

    #[test]
    fn staged_checks_see_earlier_batches_of_the_same_append() {
        let mut state = ProducerStateManager::new();
        state.record(1, 0, meta(0, 4, 0));
        let mut append = state.begin();
        assert_eq!(
            append.check_and_stage(1, 0, meta(5, 9, 5)).unwrap(),
            SequenceCheck::Append
        );
        assert_eq!(
            append.check_and_stage(1, 0, meta(10, 14, 10)).unwrap(),
            SequenceCheck::Append
        );
        assert!(append.check_and_stage(1, 0, meta(5, 9, 15)).unwrap() != SequenceCheck::Append);
        let staged = append.commit();
        // Nothing changed before apply.
        assert_eq!(state.get(1).unwrap().last_seq(), Some(4));
        state.apply(staged);
        assert_eq!(state.get(1).unwrap().last_seq(), Some(14));
    }

    #[test]
    fn the_number_of_producers_is_bounded() {
        let mut state = ProducerStateManager::new();
        for id in 0..=PRODUCERS_MAX as i64 {
            state.record(id, 0, meta(0, 0, id));
        }
        assert_eq!(state.len(), PRODUCERS_MAX - PRODUCERS_MAX / 10);
        // The oldest went, the newest stayed.
        assert!(state.get(0).is_none());
        assert!(state.get(PRODUCERS_MAX as i64).is_some());
    }

    #[test]
    fn retention_forgets_old_producers() {
        let mut state = ProducerStateManager::new();
        state.record(1, 0, meta(0, 4, 0));
        state.record(2, 0, meta(0, 4, 5));
        state.remove_below(5);
        assert!(state.get(1).is_none());
        assert!(state.get(2).is_some());
    }
}
