//! Property tests (a proptest fuzz target) over the broker's record decoder
//! (`strata_storage::tier::records`) and the `__consumer_offsets` replay (`group::offsets`),
//! with a memory limit enforced on every execution.
//!
//! Inputs are valid batches of every codec, then mutated (bytes flipped, cut short, counts and
//! lengths rewritten), with the CRC fixed up half of the time so that the mutation reaches the
//! record parser instead of stopping at the CRC check; plus hand-made bombs (zstd frames of RLE
//! blocks claiming up to 8 GiB, records claiming 2^31-1 headers, batches of millions of minimal
//! records). Each execution must end without a panic, and the memory the decoder allocated on
//! this thread at its peak must stay under [`DECODE_PEAK_BYTES_MAX`]: a counting global allocator
//! measures it (per thread, so tests running side by side do not disturb each other).
//!
//! `PROPTEST_CASES=100000 cargo test -p strata-cluster --test decoder_fuzz --release` runs a
//! longer campaign; the suite runs proptest's default (256 cases per property).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use proptest::prelude::*;
use strata_cluster::group::offsets::{self, CommittedOffset, OffsetKey};
use strata_storage::batch::{self, Compression, TimestampType};
use strata_storage::tier::records::{
    self, BatchMeta, RecordError, RecordRow, DECODED_ROWS_BYTES_MAX, DECOMPRESSED_RECORDS_BYTES_MAX,
};

// ---- the memory limit ----

/// Most bytes one decode may hold allocated at once beyond what its thread held before: a
/// decompressed section (the growing buffer may reach twice the bound before the bound trips)
/// plus the rows of one batch plus 1 MiB of slack.
const DECODE_PEAK_BYTES_MAX: usize =
    2 * DECOMPRESSED_RECORDS_BYTES_MAX + DECODED_ROWS_BYTES_MAX + 1024 * 1024;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting this thread's live bytes and their peak.
struct CountingAllocator;

fn track(delta: isize) {
    // `try_with`: the thread-locals may be gone while a thread exits.
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the peak bytes it held allocated on this thread.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|peak| peak.set(before));
    let out = f();
    let peak = PEAK_BYTES.with(Cell::get) - before;
    (out, peak.max(0) as usize)
}

/// Runs `f` under the memory limit.
fn within_limit<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (out, peak) = measured(f);
    assert!(
        peak <= DECODE_PEAK_BYTES_MAX,
        "{what}: peak {peak} bytes, limit {DECODE_PEAK_BYTES_MAX}"
    );
    out
}

// ---- inputs ----

fn meta(codec: Compression, records: usize) -> BatchMeta {
    BatchMeta {
        base_offset: 0,
        last_offset: records.saturating_sub(1) as i64,
        partition_leader_epoch: 0,
        compression: codec,
        timestamp_type: TimestampType::CreateTime,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    }
}

fn row(offset: usize, key: Option<Vec<u8>>, value: Option<Vec<u8>>, headers: usize) -> RecordRow {
    RecordRow {
        offset: offset as i64,
        timestamp_ms: 1_700_000_000_000 + offset as i64,
        key: key.map(Bytes::from),
        value: value.map(Bytes::from),
        headers: (0..headers)
            .map(|i| (format!("h{i}"), Some(Bytes::from(vec![i as u8; i]))))
            .collect(),
    }
}

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd),
    ]
}

fn field() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..48))
}

/// A valid batch: 1 to 12 records of any codec.
fn valid_batch() -> impl Strategy<Value = Vec<u8>> {
    (
        codec(),
        proptest::collection::vec((field(), field(), 0usize..3), 1..12),
    )
        .prop_map(|(codec, fields)| {
            let rows: Vec<RecordRow> = fields
                .into_iter()
                .enumerate()
                .map(|(i, (key, value, headers))| row(i, key, value, headers))
                .collect();
            records::encode_batch(&meta(codec, rows.len()), &rows).expect("encodes")
        })
}

/// How a batch is damaged.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR the byte at (position modulo length) with a non-zero mask.
    Flip(usize, u8),
    /// Cut the batch to (length modulo its length) bytes.
    Cut(usize),
    /// Overwrite 4 bytes at (position modulo length) with a big-endian value (a count, a
    /// length, an offset delta).
    Word(usize, i32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), any::<i32>()).prop_map(|(at, word)| Mutation::Word(at, word)),
    ]
}

fn mutate(mut batch: Vec<u8>, mutations: &[Mutation], fix_crc: bool) -> Vec<u8> {
    for m in mutations {
        if batch.is_empty() {
            break;
        }
        let len = batch.len();
        match *m {
            Mutation::Flip(at, mask) => batch[at % len] ^= mask,
            Mutation::Cut(to) => batch.truncate(to % len),
            Mutation::Word(at, word) => {
                let at = at % len;
                let end = (at + 4).min(len);
                batch[at..end].copy_from_slice(&word.to_be_bytes()[..end - at]);
            }
        }
    }
    if fix_crc && batch.len() >= batch::BATCH_HEADER_BYTES {
        if let Ok(crc) = batch::compute_crc(&batch) {
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
        }
    }
    batch
}

/// A v2 batch header (correct length and CRC) in front of `section`.
fn batch_around(
    section: &[u8],
    codec_id: i16,
    records_count: i32,
    last_offset_delta: i32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch::BATCH_HEADER_BYTES + section.len());
    out.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
    let length = (batch::BATCH_HEADER_BYTES - batch::LOG_OVERHEAD_BYTES + section.len()) as i32;
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
    out.push(2); // magic
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    out.extend_from_slice(&codec_id.to_be_bytes());
    out.extend_from_slice(&last_offset_delta.to_be_bytes());
    out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&records_count.to_be_bytes());
    out.extend_from_slice(section);
    let crc = batch::compute_crc(&out).expect("a whole batch");
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A zstd frame of RLE blocks (4 bytes per 128 KiB) decompressing to `bytes` zeros, with no
/// content size: a decoder learns the size only by decompressing.
fn zstd_zeros_frame(bytes: u64) -> Vec<u8> {
    const BLOCK_BYTES_MAX: u64 = 128 * 1024;
    let mut out = 0xFD2F_B528u32.to_le_bytes().to_vec();
    out.push(0x00); // frame header descriptor: no content size, no checksum
    out.push(7 << 3); // window descriptor: 128 KiB
    let mut left = bytes;
    while left > 0 {
        let size = left.min(BLOCK_BYTES_MAX);
        left -= size;
        let header = u32::from(left == 0) | (1 << 1) | ((size as u32) << 3); // type 1: RLE
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

fn zigzag(value: i64, out: &mut Vec<u8>) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One uncompressed record (null key, value "v") that claims `headers` headers and holds none.
fn header_count_bomb(headers: i64) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    zigzag(0, &mut body); // timestamp delta
    zigzag(0, &mut body); // offset delta
    zigzag(-1, &mut body); // null key
    zigzag(1, &mut body);
    body.push(b'v');
    zigzag(headers, &mut body);
    let mut record = Vec::new();
    zigzag(body.len() as i64, &mut record);
    record.extend_from_slice(&body);
    batch_around(&record, 0, 1, 0)
}

/// The bombs every run decodes: (name, batch).
fn bombs() -> Vec<(&'static str, Vec<u8>)> {
    let gib = 1u64 << 30;
    vec![
        (
            "zstd 1 GiB of zeros",
            batch_around(&zstd_zeros_frame(gib), 4, 1, 0),
        ),
        (
            "zstd 8 GiB of zeros",
            batch_around(&zstd_zeros_frame(8 * gib), 4, 1, 0),
        ),
        ("2^31-1 headers", header_count_bomb(i64::from(i32::MAX))),
        (
            "recordsCount 2^31-1",
            batch_around(&[0; 64], 0, i32::MAX, i32::MAX),
        ),
    ]
}

/// An offsets batch of `commits` (group, offset) on topic "t" partition 0.
fn offsets_batch(commits: &[(String, i64)]) -> Vec<u8> {
    let entries: Vec<(Bytes, Option<Bytes>)> = commits
        .iter()
        .map(|(group, offset)| {
            let key = offsets::encode_key(&OffsetKey {
                group: group.clone(),
                topic: "t".to_string(),
                partition: 0,
            });
            let value = offsets::encode_value(&CommittedOffset {
                offset: *offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            });
            (key, Some(value))
        })
        .collect();
    offsets::encode_batch(&entries, 0)
        .expect("encodes")
        .to_vec()
}

/// Every way the broker decodes `batch`: rows, a visit, ListOffsets-style search, the replay.
fn decode_every_way(batch: &[u8]) {
    let bytes = Bytes::copy_from_slice(batch);
    let rows = records::decode_batch_bytes(&bytes);
    let visited = records::visit_batch_records(batch, |_| Ok(()));
    if let Ok((_, rows)) = &rows {
        assert!(visited.is_ok(), "rows decode but a visit fails");
        assert!(rows.len() <= batch.len(), "more rows than bytes");
    }
    offsets::replay_batches(&bytes, |_, key, value| {
        if let Some(key) = key {
            let _ = offsets::decode_key(key);
        }
        if let Some(value) = value {
            let _ = offsets::decode_value(value);
        }
    });
}

// ---- properties ----

proptest! {
    /// Goal: no mutation of a valid batch (of any codec) panics the decoder or makes it hold
    /// more than the memory limit; an unmutated batch decodes to what was encoded.
    #[test]
    fn mutated_batches_decode_or_fail_within_the_memory_limit(
        batch in valid_batch(),
        mutations in proptest::collection::vec(mutation(), 0..4),
        fix_crc in any::<bool>(),
    ) {
        if mutations.is_empty() {
            let (_, rows) = records::decode_batch_bytes(&Bytes::from(batch.clone()))
                .expect("an unmutated batch decodes");
            prop_assert!(!rows.is_empty());
        }
        let damaged = mutate(batch, &mutations, fix_crc);
        within_limit("mutated batch", || decode_every_way(&damaged));
    }

    /// Goal: the replay of `__consumer_offsets` applies every record of its good batches,
    /// skips (never fails on, never panics on) the damaged ones between them, and stays within
    /// the memory limit.
    #[test]
    fn replay_applies_good_batches_and_skips_damaged_ones(
        groups in proptest::collection::vec(("[a-z]{1,12}", 0i64..1_000_000), 1..6),
        damaged in proptest::collection::vec((valid_batch(), proptest::collection::vec(mutation(), 1..4)), 0..4),
    ) {
        let good = offsets_batch(&groups);
        let mut log = good.clone();
        for (batch, mutations) in &damaged {
            // Damaged batches keep a valid frame (the log hands out framed batches).
            let mut bad = mutate(batch.clone(), mutations, false);
            let framed = batch::BatchHeader::parse(&bad).map(|header| header.size_bytes());
            if framed != Ok(batch.len() as u64) || bad.len() != batch.len() {
                bad = batch.clone();
                bad[batch.len() - 1] ^= 0xFF; // a CRC mismatch in a well-framed batch
            }
            log.extend_from_slice(&bad);
        }
        log.extend_from_slice(&good);
        let mut seen = Vec::new();
        let count = within_limit("replay", || {
            offsets::replay_batches(&Bytes::from(log), |_, key, value| {
                let key = key.and_then(|k| offsets::decode_key(k).ok().flatten());
                let value = value.and_then(|v| offsets::decode_value(v).ok());
                if let (Some(key), Some(value)) = (key, value) {
                    seen.push((key.group, value.offset));
                }
            })
        });
        // Both good batches replayed in full, whatever lies between them.
        let mut expected = groups.clone();
        expected.extend(groups.iter().cloned());
        let seen_good: Vec<_> = seen.iter().filter(|entry| groups.contains(entry)).cloned().collect();
        prop_assert!(seen_good.len() >= expected.len(), "{seen:?} misses some of {expected:?}");
        prop_assert!(count.records >= expected.len());
    }

    /// Goal: arbitrary bytes as an offsets key or value never panic the replay's decoders.
    #[test]
    fn offsets_keys_and_values_of_any_bytes_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        let _ = offsets::decode_key(Bytes::from(bytes.clone()));
        let _ = offsets::decode_value(Bytes::from(bytes));
    }
}

/// Goal: decompression and allocation bombs (zstd frames claiming 1 and 8 GiB, a record
/// claiming 2^31-1 headers, a batch claiming 2^31-1 records) fail cleanly on every decode path
/// within the memory limit, and the replay skips them.
#[test]
fn bombs_fail_within_the_memory_limit() {
    for (name, bomb) in bombs() {
        let bytes = Bytes::from(bomb.clone());
        let rows = within_limit(name, || records::decode_batch_bytes(&bytes).map(|_| ()));
        assert!(rows.is_err(), "{name} decoded");
        let count = within_limit(name, || offsets::replay_batches(&bytes, |_, _, _| {}));
        assert_eq!(count.batches_skipped, 1, "{name}");
        within_limit(name, || decode_every_way(&bomb));
    }
}

/// Goal: a batch of 3 million minimal records (30 MB decompressed, well under the
/// decompression bound) is refused as rows (they would take ~300 MB: more than
/// `DECODED_ROWS_BYTES_MAX`) but visited record by record within the memory limit.
#[test]
fn millions_of_tiny_records_are_visited_not_collected() {
    const RECORDS: usize = 3_000_000;
    let rows: Vec<RecordRow> = (0..RECORDS).map(|i| row(i, None, None, 0)).collect();
    let batch = records::encode_batch(&meta(Compression::Zstd, RECORDS), &rows).expect("encodes");
    drop(rows);
    let bytes = Bytes::from(batch.clone());
    let refused = within_limit("rows", || records::decode_batch_bytes(&bytes).map(|_| ()));
    assert!(
        matches!(refused, Err(RecordError::RowsTooLarge { .. })),
        "{refused:?}"
    );
    let mut visited = 0usize;
    within_limit("visit", || {
        records::visit_batch_records(&batch, |_| {
            visited += 1;
            Ok(())
        })
    })
    .expect("visits");
    assert_eq!(visited, RECORDS);
}

/// Goal: the counting allocator this file relies on sees allocations (a limit that cannot
/// trip would prove nothing).
#[test]
fn the_memory_limit_can_trip() {
    let (_, peak) = measured(|| vec![1u8; 8 << 20]);
    assert!(peak >= 8 << 20, "peak {peak}");
}

/// Goal: the limit catches the bug it exists for. kafka-protocol's own decoder, which the
/// broker used on ListOffsets and the offsets replay before, decompresses the whole 1 GiB zstd
/// bomb: its peak breaks the limit that the broker's decoder keeps on the same input.
#[test]
fn the_unbounded_decoder_breaks_the_memory_limit() {
    let bomb = batch_around(&zstd_zeros_frame(1 << 30), 4, 1, 0);
    let (_, peak) = measured(|| {
        let mut buf = Bytes::from(bomb.clone());
        let _ = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf);
    });
    assert!(
        peak > DECODE_PEAK_BYTES_MAX,
        "peak {peak}: the planted bug went unnoticed"
    );
    within_limit("the broker's decoder", || decode_every_way(&bomb));
}
