//! `RemoteLog` over an in-memory object store: what a crash between an upload and the manifest
//! write leaves (an orphan, deleted on open, never read), reads below and inside files,
//! retention by time and by size (Kafka's rules), and a compacted replacement whose manifest
//! write was lost.

use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use strata_storage::batch::batches;
use strata_storage::batch::build::BatchSpec;
use strata_storage::tier::manifest::Manifest;
use strata_storage::tier::parquet_file::{encode_segment, EncodeOptions, SegmentFile};
use strata_storage::tier::remote::{ReadCache, RemoteLog, TierError};

const T0: i64 = 1_700_000_000_000;

/// A segment of `batches` batches of 10 records each, from `base`, timestamps from `ts`.
fn segment(base: i64, batch_count: i64, ts: i64) -> SegmentFile {
    let mut bytes = Vec::new();
    for b in 0..batch_count {
        let values = (0..10)
            .map(|i| format!("v{}", base + b * 10 + i).into_bytes())
            .collect();
        let mut spec = BatchSpec::new(ts + b, values);
        spec.base_offset = base + b * 10;
        bytes.extend(spec.encode());
    }
    encode_segment(&bytes, &EncodeOptions::new("t".to_string(), 0)).expect("encode")
}

async fn open(store: &Arc<dyn ObjectStore>) -> RemoteLog {
    RemoteLog::open(Arc::clone(store), Arc::new(ReadCache::new(1 << 20)), "t", 0)
        .await
        .expect("open")
}

async fn names(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    use futures_util::StreamExt;
    let mut names: Vec<String> = store
        .list(None)
        .map(|m| m.expect("list").location.to_string())
        .collect()
        .await;
    names.sort();
    names
}

fn first_offset(bytes: &Bytes) -> Option<i64> {
    batches(bytes)
        .next()
        .map(|b| b.expect("batch").0.base_offset)
}

#[tokio::test]
async fn an_upload_without_its_manifest_is_an_orphan_deleted_on_open() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let remote = open(&store).await;
    remote
        .offload(segment(0, 3, T0), T0)
        .await
        .expect("offload");
    // A crash after uploading the next file but before writing the manifest.
    let orphan = segment(30, 3, T0);
    let orphan_path = StorePath::from(format!(
        "t/partition=0/{}",
        Manifest::file_name(orphan.base_offset, orphan.last_offset)
    ));
    store
        .put(&orphan_path, PutPayload::from(orphan.bytes.clone()))
        .await
        .unwrap();
    // Readers through the manifest never see it.
    assert_eq!(remote.manifest().end_offset(), Some(30));
    assert!(remote.read(30, 1 << 20).await.expect("read").is_empty());
    drop(remote);

    let remote = open(&store).await;
    assert_eq!(
        names(&store).await,
        vec![
            "t/partition=0/00000000000000000000-00000000000000000029.parquet".to_string(),
            "t/partition=0/manifest.json".to_string(),
        ]
    );
    // The segment is offloaded again, under the same name.
    remote.offload(orphan, T0).await.expect("offload again");
    assert_eq!(remote.manifest().files.len(), 2);
    assert_eq!(first_offset(&remote.read(35, 1).await.unwrap()), Some(30));
}

#[tokio::test]
async fn reads_start_at_the_batch_holding_the_offset_and_refuse_offsets_below_the_start() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let remote = open(&store).await;
    remote.offload(segment(100, 5, T0), T0).await.unwrap();
    remote.offload(segment(150, 5, T0), T0).await.unwrap();
    assert_eq!(remote.manifest().start_offset(), Some(100));
    let bytes = remote.read(123, 1).await.unwrap();
    assert_eq!(first_offset(&bytes), Some(120));
    assert_eq!(
        batches(&bytes).count(),
        1,
        "max_bytes 1 still returns one batch"
    );
    // Whole file up to max_bytes, one file at a time.
    let all = remote.read(100, 1 << 20).await.unwrap();
    assert_eq!(batches(&all).count(), 5);
    assert!(matches!(
        remote.read(99, 1 << 20).await,
        Err(TierError::OffsetNotRemote { offset: 99 })
    ));
    assert!(remote.read(200, 1 << 20).await.unwrap().is_empty());
    // The first batch whose newest record is at least that recent (the broker then finds the
    // record inside it).
    assert_eq!(
        remote.offset_for_timestamp(T0 + 2).await.unwrap(),
        Some((100, T0 + 9))
    );
    assert_eq!(
        remote.offset_for_timestamp(T0 + 12).await.unwrap(),
        Some((130, T0 + 12))
    );
}

#[tokio::test]
async fn retention_by_time_and_size_removes_whole_files_oldest_first() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let remote = open(&store).await;
    remote.offload(segment(0, 2, T0), T0).await.unwrap();
    remote.offload(segment(20, 2, T0 + 1000), T0).await.unwrap();
    remote.offload(segment(40, 2, T0 + 2000), T0).await.unwrap();
    let file_bytes = remote.manifest().files[0].batch_bytes;

    // retention.ms: the first file's newest record (T0 + 10) is 1501 ms old, the second's
    // (T0 + 1010) 501 ms.
    let outcome = remote
        .apply_retention(1500, -1, 0, 0, T0 + 1511)
        .await
        .unwrap();
    assert_eq!(outcome.files_deleted, 1);
    assert_eq!(outcome.log_start_offset, Some(20));
    assert_eq!(remote.manifest().start_offset(), Some(20));
    assert!(matches!(
        remote.read(5, 1).await,
        Err(TierError::OffsetNotRemote { .. })
    ));

    // retention.bytes (Kafka's rule: delete while the log stays at least the limit without the
    // segment): two files left plus `local` bytes; a limit of one file + local drops one.
    let local = 10;
    let outcome = remote
        .apply_retention(-1, (file_bytes + local) as i64, local, 0, T0)
        .await
        .unwrap();
    assert_eq!(outcome.files_deleted, 1);
    assert_eq!(remote.manifest().start_offset(), Some(40));
    // Nothing more to drop: the log would go below the limit.
    let outcome = remote
        .apply_retention(-1, (file_bytes + local) as i64, local, 0, T0)
        .await
        .unwrap();
    assert_eq!(outcome.files_deleted, 0);
    assert_eq!(
        names(&store).await,
        vec![
            "t/partition=0/00000000000000000040-00000000000000000059.parquet".to_string(),
            "t/partition=0/manifest.json".to_string(),
        ]
    );
}

#[tokio::test]
async fn a_replaced_file_whose_manifest_write_was_lost_is_read_correctly_after_open() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let remote = open(&store).await;
    remote.offload(segment(0, 4, T0), T0).await.unwrap();
    let name = remote.manifest().files[0].name.clone();
    drop(remote);
    // Compaction uploaded a smaller version under the same name, then crashed: the manifest
    // still holds the old size.
    let mut bytes = Vec::new();
    for b in [0i64, 3] {
        let values = (0..10)
            .map(|i| format!("v{}", b * 10 + i).into_bytes())
            .collect();
        let mut spec = BatchSpec::new(T0 + b, values);
        spec.base_offset = b * 10;
        bytes.extend(spec.encode());
    }
    // (Batches 1 and 2 dropped entirely: same first and last offsets, so the same name.)
    let smaller = encode_segment(&bytes, &EncodeOptions::new("t".to_string(), 0)).unwrap();
    assert_eq!(
        Manifest::file_name(smaller.base_offset, smaller.last_offset),
        name
    );
    store
        .put(
            &StorePath::from(format!("t/partition=0/{name}")),
            PutPayload::from(smaller.bytes.clone()),
        )
        .await
        .unwrap();
    let remote = open(&store).await;
    assert_eq!(
        remote.manifest().files[0].size_bytes,
        smaller.bytes.len() as u64
    );
    let read = remote
        .read(0, 1 << 20)
        .await
        .expect("the new version reads");
    let bases: Vec<i64> = batches(&read).map(|b| b.unwrap().0.base_offset).collect();
    assert_eq!(bases, vec![0, 30]);
}
