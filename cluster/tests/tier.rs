//! Tiered storage through the broker, with an in-memory object store: closed segments of a
//! `remote.storage.enable` topic are offloaded as Parquet, the hot tier is trimmed
//! (`local.retention.bytes`), and a consumer reading from offset 0 still gets every record
//! exactly as produced, also after a restart; whole-log retention deletes remote files and
//! moves the log start; an object-store outage delays offload and loses nothing.

use std::sync::Arc;
use std::time::Duration;

mod server_util;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use server_util::Server;
use strata_cluster::client::{
    Client, Compression, ConsumedRecord, OffsetSpec, Producer, ProducerConfig, Record,
};
use strata_cluster::tier::{status, PartitionStatus};
use strata_cluster::BrokerConfig;
use strata_storage::tier::manifest::Manifest;
use strata_storage::MemDisk;

const TOPIC: &str = "archive";

/// The tier helpers of a [`Server`] for these tests.
trait TierServer {
    fn status(&self) -> PartitionStatus;
    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&PartitionStatus) -> bool,
    ) -> PartitionStatus;
}

async fn start(disk: Arc<MemDisk>, store: Arc<dyn ObjectStore>) -> Server {
    let config = BrokerConfig {
        tier_interval_ms: 20,
        ..BrokerConfig::default()
    };
    Server::start(config, disk, Some(store)).await
}

impl TierServer for Server {
    fn status(&self) -> PartitionStatus {
        status(&self.broker, Some(TOPIC))
            .into_iter()
            .next()
            .expect("the topic has a partition")
    }

    /// Waits until `done` holds for the partition's tier status (panics after 20 s with it).
    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&PartitionStatus) -> bool,
    ) -> PartitionStatus {
        for _ in 0..2000 {
            let status = self.status();
            if done(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}: {:?}", self.status());
    }
}

/// Records with null and non-null keys and values, empty, null and binary headers.
fn records(count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            key: (i % 5 != 0).then(|| Bytes::from(format!("key-{}", i % 17))),
            value: (i % 11 != 0).then(|| Bytes::from(vec![(i % 251) as u8; 40 + i % 90])),
            headers: match i % 4 {
                0 => Vec::new(),
                1 => vec![("trace".to_string(), Some(Bytes::from_static(&[0, 255, 7])))],
                // (Repeated header keys are covered by the codec's own tests: this client's
                // record type, kafka-protocol's, keeps one value per key.)
                2 => vec![
                    ("a".to_string(), Some(Bytes::from_static(b"a"))),
                    ("null".to_string(), None),
                    ("empty".to_string(), Some(Bytes::new())),
                ],
                _ => vec![("n".to_string(), Some(Bytes::from(i.to_string())))],
            },
            timestamp_ms: Some(1_700_000_000_000 + i as i64),
        })
        .collect()
}

async fn produce(client: &Client, records: &[Record], compression: Compression) -> Vec<i64> {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            compression,
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    let mut offsets = Vec::new();
    // Small groups: many batches, so segments roll often.
    for chunk in records.chunks(7) {
        let sends = chunk
            .iter()
            .map(|r| producer.send(TOPIC, Some(0), r.clone()));
        for result in futures_util::future::join_all(sends).await {
            offsets.push(result.expect("produce").1);
        }
    }
    offsets
}

async fn consume_all(client: &Client, from: i64, end: i64) -> Vec<ConsumedRecord> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < end {
        let fetched = client
            .fetch(TOPIC, 0, offset, 100, 64 * 1024)
            .await
            .expect("fetch");
        let Some(last) = fetched.records.last() else {
            panic!("empty fetch at {offset} (end {end})");
        };
        offset = last.offset + 1;
        out.extend(fetched.records);
    }
    out
}

fn assert_same(consumed: &[ConsumedRecord], produced: &[Record], offsets: &[i64]) {
    assert_eq!(consumed.len(), produced.len());
    for ((got, want), offset) in consumed.iter().zip(produced).zip(offsets) {
        assert_eq!(got.offset, *offset);
        assert_eq!(got.key, want.key, "key at {offset}");
        assert_eq!(got.value, want.value, "value at {offset}");
        assert_eq!(got.headers, want.headers, "headers at {offset}");
        assert_eq!(
            Some(got.timestamp_ms),
            want.timestamp_ms,
            "timestamp at {offset}"
        );
    }
}

async fn create_topic(client: &Client, extra: &[(&str, &str)]) {
    let mut configs = vec![
        ("remote.storage.enable".to_string(), "true".to_string()),
        ("segment.bytes".to_string(), "4096".to_string()),
        ("local.retention.bytes".to_string(), "0".to_string()),
        ("retention.ms".to_string(), "-1".to_string()),
    ];
    configs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    client
        .create_topics(TOPIC, 1, 1, &configs)
        .await
        .expect("create topic");
}

async fn parquet_files(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    use futures_util::StreamExt;
    let mut names: Vec<String> = store
        .list(None)
        .map(|m| m.expect("list").location.to_string())
        .filter(|p| std::future::ready(p.ends_with(".parquet")))
        .collect()
        .await;
    names.sort();
    names
}

async fn read_manifest(store: &Arc<dyn ObjectStore>) -> Manifest {
    use object_store::ObjectStoreExt;
    let path = object_store::path::Path::from("archive/partition=0/manifest.json");
    let bytes = store
        .get(&path)
        .await
        .expect("manifest")
        .bytes()
        .await
        .expect("manifest bytes");
    Manifest::decode(&bytes, TOPIC, 0).expect("valid manifest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_read_the_whole_history_after_the_hot_tier_is_trimmed() {
    let disk = Arc::new(MemDisk::new());
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let server = start(Arc::clone(&disk), Arc::clone(&store)).await;
    let client = server.client().await;
    create_topic(&client, &[]).await;
    let produced = records(600);
    let offsets = produce(&client, &produced, Compression::Zstd).await;
    assert_eq!(offsets, (0..600).collect::<Vec<i64>>());

    let status = server
        .wait_for("offload and local trimming", |s| {
            s.pending_segments == 0
                && s.local_start_offset > 0
                && s.remote_end_offset == Some(s.local_start_offset)
        })
        .await;
    assert_eq!(status.remote_start_offset, Some(0));
    assert!(status.remote_files >= 2, "{status:?}");
    assert_eq!(status.log_start_offset, 0);
    let files = parquet_files(&store).await;
    assert_eq!(files.len(), status.remote_files, "{files:?}");
    assert!(
        files[0].starts_with("archive/partition=0/00000000000000000000-"),
        "{files:?}"
    );

    // Earliest is the whole log's start; every record comes back as produced.
    assert_eq!(
        client
            .list_offsets(TOPIC, 0, OffsetSpec::Earliest)
            .await
            .unwrap(),
        0
    );
    let consumed = consume_all(&client, 0, 600).await;
    assert_same(&consumed, &produced, &offsets);
    // A fetch in the middle of a remote file starts at the asked offset.
    let middle = client.fetch(TOPIC, 0, 37, 100, 1).await.expect("fetch");
    assert_eq!(middle.records.first().map(|r| r.offset), Some(37));
    // ListOffsets by time finds a remote record.
    assert_eq!(
        client
            .list_offsets(TOPIC, 0, OffsetSpec::Timestamp(1_700_000_000_000 + 5))
            .await
            .unwrap(),
        5
    );

    // After a restart, the remote tier is found again (the manifest) and serves the same.
    server.stop().await;
    let server = start(Arc::clone(&disk), Arc::clone(&store)).await;
    server
        .wait_for("the remote tier to reopen", |s| s.remote_files > 0)
        .await;
    let client = server.client().await;
    let consumed = consume_all(&client, 0, 600).await;
    assert_same(&consumed, &produced, &offsets);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_log_retention_deletes_remote_files_and_moves_the_log_start() {
    let disk = Arc::new(MemDisk::new());
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let server = start(Arc::clone(&disk), Arc::clone(&store)).await;
    let client = server.client().await;
    create_topic(&client, &[]).await;
    let produced = records(300);
    produce(&client, &produced, Compression::None).await;
    let before = server
        .wait_for("offload", |s| {
            s.pending_segments == 0 && s.remote_files >= 2
        })
        .await;

    // The records' timestamps are from 2023: a one-day retention expires every closed segment.
    client
        .alter_topic_configs(
            TOPIC,
            &[("retention.ms".to_string(), Some("86400000".to_string()))],
        )
        .await
        .expect("alter");
    let after = server
        .wait_for("remote retention", |s| s.remote_files == 0)
        .await;
    assert!(
        after.log_start_offset > before.log_start_offset,
        "{after:?}"
    );
    assert_eq!(after.log_start_offset, after.local_start_offset);
    assert!(parquet_files(&store).await.is_empty());
    let earliest = client
        .list_offsets(TOPIC, 0, OffsetSpec::Earliest)
        .await
        .unwrap();
    assert_eq!(earliest, after.log_start_offset);
    // Below the new start: out of range, as Kafka answers.
    let error = client
        .fetch(TOPIC, 0, 0, 100, 1024)
        .await
        .expect_err("out of range");
    assert_eq!(
        error.kafka_error(),
        Some(strata_cluster::client::ResponseError::OffsetOutOfRange),
        "{error}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_latest_value_per_key_and_drops_expired_tombstones() {
    let disk = Arc::new(MemDisk::new());
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let server = start(Arc::clone(&disk), Arc::clone(&store)).await;
    let client = server.client().await;
    create_topic(
        &client,
        &[
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", "86400000"),
        ],
    )
    .await;
    // Kafka's rule for compacted topics: a record without a key is refused.
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let error = producer
        .send(
            TOPIC,
            Some(0),
            Record::from_value(Bytes::from_static(b"keyless")),
        )
        .await
        .expect_err("a keyless record is refused");
    assert_eq!(
        error.kafka_error(),
        Some(strata_cluster::client::ResponseError::InvalidRecord),
        "{error}"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // 20 keys written 10 times each, then a tombstone for key-3, then 300 records of distinct
    // filler keys so that all of the above sits in closed, offloaded segments.
    let mut produced = Vec::new();
    for round in 0..10 {
        for key in 0..20 {
            produced.push(Record {
                key: Some(Bytes::from(format!("key-{key}"))),
                value: Some(Bytes::from(format!("value-{key}-{round}"))),
                headers: vec![("round".to_string(), Some(Bytes::from(round.to_string())))],
                timestamp_ms: Some(now_ms),
            });
        }
    }
    produced.push(Record {
        key: Some(Bytes::from("key-3")),
        value: None,
        headers: Vec::new(),
        timestamp_ms: Some(now_ms),
    });
    for filler in 0..300 {
        produced.push(Record {
            key: Some(Bytes::from(format!("filler-{filler}"))),
            value: Some(Bytes::from(vec![b'f'; 50])),
            headers: Vec::new(),
            timestamp_ms: Some(now_ms),
        });
    }
    let offsets = produce(&client, &produced, Compression::Lz4).await;
    let end = *offsets.last().unwrap() + 1;
    // What compaction must leave of the keyed records: the latest per key, at its offset.
    let latest = |consumed: &[ConsumedRecord]| -> std::collections::BTreeMap<Bytes, Vec<(i64, Option<Bytes>)>> {
        let mut by_key = std::collections::BTreeMap::new();
        for r in consumed {
            let key = r.key.clone().expect("every record has a key");
            if key.starts_with(b"key-") {
                by_key.entry(key).or_insert_with(Vec::new).push((r.offset, r.value.clone()));
            }
        }
        by_key
    };

    let mut compacted = None;
    for _ in 0..1000 {
        let status = server.status();
        if status.pending_segments == 0 && status.local_start_offset > 200 {
            let consumed = consume_all(&client, 0, end).await;
            if latest(&consumed).values().all(|v| v.len() == 1) {
                compacted = Some(consumed);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let consumed = compacted.unwrap_or_else(|| panic!("not compacted: {:?}", server.status()));
    let by_key = latest(&consumed);
    assert_eq!(by_key.len(), 20);
    for key in 0..20 {
        let (offset, value) = &by_key[&Bytes::from(format!("key-{key}"))][0];
        if key == 3 {
            // The tombstone is younger than delete.retention.ms: kept, at its offset.
            assert_eq!((*offset, value.clone()), (200, None));
        } else {
            assert_eq!(*offset, 180 + key as i64, "key-{key}");
            assert_eq!(value.clone(), Some(Bytes::from(format!("value-{key}-9"))));
        }
    }
    // Offsets are kept, with gaps; the fillers are all there.
    assert!(consumed.windows(2).all(|w| w[0].offset < w[1].offset));
    assert_eq!(
        consumed
            .iter()
            .filter(|r| r.key.as_ref().unwrap().starts_with(b"filler-"))
            .count(),
        300
    );
    // Consumers starting inside a compacted gap go on at the next record.
    let from_gap = client.fetch(TOPIC, 0, 5, 100, 1024).await.expect("fetch");
    assert_eq!(from_gap.records.first().map(|r| r.offset), Some(180));
    assert_eq!(
        client
            .list_offsets(TOPIC, 0, OffsetSpec::Earliest)
            .await
            .unwrap(),
        0
    );

    // The Parquet files hold exactly what compaction kept (the manifest's record counts).
    let manifest = read_manifest(&store).await;
    let remote_end = manifest.end_offset().expect("files");
    assert!(remote_end > 200);
    assert_eq!(
        manifest.files.iter().map(|f| f.record_count).sum::<u64>() as usize,
        consumed.iter().filter(|r| r.offset < remote_end).count()
    );

    // With delete.retention.ms=0 the tombstone goes too (and key-3's earlier values stay gone).
    client
        .alter_topic_configs(
            TOPIC,
            &[
                ("cleanup.policy".to_string(), Some("compact".to_string())),
                (
                    "remote.storage.enable".to_string(),
                    Some("true".to_string()),
                ),
                ("delete.retention.ms".to_string(), Some("0".to_string())),
            ],
        )
        .await
        .expect("alter");
    let mut gone = false;
    for _ in 0..500 {
        let consumed = consume_all(&client, 180, end).await;
        let by_key = latest(&consumed);
        if !by_key.contains_key(&Bytes::from("key-3")) {
            assert_eq!(by_key.len(), 19);
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gone,
        "the expired tombstone was not removed: {:?}",
        server.status()
    );
    server.stop().await;
}

mod random_records {
    //! Property: whatever the records (null keys and values, empty, null and binary headers,
    //! every codec), a consumer reading from offset 0 after the hot tier was trimmed gets them
    //! back exactly, through the broker, from the Parquet files.

    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::collection::vec(
                (
                    "[a-z]{0,6}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
                ),
                0..3,
            ),
            0i64..1_000_000,
        )
            .prop_map(|(key, value, headers, ts)| {
                // Strata's client (kafka-protocol's record type) keeps one value per header
                // key; repeated keys are covered by the codec's own proptest.
                let mut seen = std::collections::HashSet::new();
                Record {
                    key: key.map(Bytes::from),
                    value: value.map(Bytes::from),
                    headers: headers
                        .into_iter()
                        .filter(|(k, _)| seen.insert(k.clone()))
                        .map(|(k, v)| (k, v.map(Bytes::from)))
                        .collect(),
                    timestamp_ms: Some(1_600_000_000_000 + ts),
                }
            })
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

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        #[test]
        fn records_read_back_from_parquet_equal_what_was_produced(
            records in proptest::collection::vec(record(), 80..250),
            compression in codec(),
        ) {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
                let server = start(Arc::new(MemDisk::new()), Arc::clone(&store)).await;
                let client = server.client().await;
                create_topic(&client, &[]).await;
                let offsets = produce(&client, &records, compression).await;
                let end = *offsets.last().expect("records") + 1;
                server
                    .wait_for("offload and local trimming", |s| {
                        s.pending_segments == 0 && s.local_start_offset > 0
                    })
                    .await;
                let consumed = consume_all(&client, 0, end).await;
                assert_same(&consumed, &records, &offsets);
                server.stop().await;
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_never_serves_a_deleted_topics_files() {
    use object_store::{ObjectStoreExt, PutPayload};
    let disk = Arc::new(MemDisk::new());
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let server = start(Arc::clone(&disk), Arc::clone(&store)).await;
    let client = server.client().await;
    create_topic(&client, &[]).await;
    produce(&client, &records(300), Compression::None).await;
    server
        .wait_for("offload", |s| {
            s.pending_segments == 0 && s.remote_files >= 2
        })
        .await;
    // Keep a copy of the remote files, as a deletion that failed half-way would leave them.
    let mut leftovers = Vec::new();
    for name in parquet_files(&store).await {
        let path = object_store::path::Path::from(name);
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        leftovers.push((path, bytes));
    }
    let manifest_path = object_store::path::Path::from("archive/partition=0/manifest.json");
    let manifest = store
        .get(&manifest_path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    leftovers.push((manifest_path, manifest));

    client.delete_topics(&[TOPIC]).await.expect("delete");
    for _ in 0..200 {
        if parquet_files(&store).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        parquet_files(&store).await.is_empty(),
        "deleting the topic deletes its files"
    );
    for (path, bytes) in leftovers {
        store.put(&path, PutPayload::from(bytes)).await.unwrap();
    }

    create_topic(&client, &[]).await;
    let fresh = vec![Record::from_key_value("new", "record")];
    produce(&client, &fresh, Compression::None).await;
    // The tier task opens the new topic's remote tier and wipes the stale files.
    for _ in 0..500 {
        if parquet_files(&store).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(parquet_files(&store).await.is_empty());
    let status = server.status();
    assert_eq!(
        (status.log_start_offset, status.remote_files),
        (0, 0),
        "{status:?}"
    );
    let consumed = consume_all(&client, 0, 1).await;
    assert_eq!(consumed.len(), 1);
    assert_eq!(consumed[0].value, Some(Bytes::from("record")));
    server.stop().await;
}

/// Produces `records` as one raw batch through the Produce handler; returns the error code.
async fn produce_raw(server: &Server, records: Vec<u8>) -> i16 {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use strata_cluster::handlers::{produce, Outcome, Response};
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))])]);
    match produce::handle(&server.broker, request, 9).await {
        Outcome::Respond(Response::Produce(response)) => {
            response.responses[0].partition_responses[0].error_code
        }
        _ => panic!("an acks=-1 produce is answered"),
    }
}

/// Goal: a batch the tier task could not turn into Parquet (a correct frame and CRC around
/// records that do not parse) is refused at produce with CORRUPT_MESSAGE on a tiered topic;
/// before, it was appended and stopped the partition's offload for good ("tiering failed;
/// retrying" at every tick, the hot tier never trimmed). Good records around it offload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_cannot_be_tiered_is_refused_at_produce() {
    use strata_storage::batch::{self, build::BatchSpec, BATCH_HEADER_BYTES};
    let disk = Arc::new(MemDisk::new());
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let server = start(Arc::clone(&disk), Arc::clone(&store)).await;
    let client = server.client().await;
    create_topic(&client, &[]).await;
    let mut garbage = BatchSpec::new(1_700_000_000_000, vec![vec![0u8; 64]; 3]).encode();
    for byte in &mut garbage[BATCH_HEADER_BYTES..] {
        *byte = 0xFF;
    }
    let crc = batch::compute_crc(&garbage).expect("a whole batch");
    garbage[17..21].copy_from_slice(&crc.to_be_bytes());
    let corrupt = kafka_protocol::ResponseError::CorruptMessage.code();
    assert_eq!(produce_raw(&server, garbage).await, corrupt);
    let good = BatchSpec::new(1_700_000_000_000, vec![vec![1u8; 64]; 3]).encode();
    assert_eq!(produce_raw(&server, good).await, 0);
    let produced = records(300);
    produce(&client, &produced, Compression::Zstd).await;
    let status = server
        .wait_for("offload past the refused batch", |s| {
            s.pending_segments == 0 && s.remote_files >= 1 && s.last_error.is_none()
        })
        .await;
    assert!(status.remote_end_offset.unwrap_or(0) > 0, "{status:?}");
    server.stop().await;
}
