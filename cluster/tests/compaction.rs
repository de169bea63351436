//! Compaction of local segments (topics that are not tiered): a `cleanup.policy=compact` topic
//! keeps the latest record per key with its offset, drops expired tombstones, and survives a
//! restart; `__consumer_offsets` is compacted the same way, and committed offsets are rebuilt
//! intact from the compacted topic.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
mod server_util;

use server_util::Server;
use strata_cluster::client::{Client, ConsumedRecord, Producer, ProducerConfig, Record};
use strata_cluster::BrokerConfig;
use strata_storage::MemDisk;

async fn start(disk: Arc<MemDisk>) -> Server {
    let config = BrokerConfig {
        retention_check_interval_ms: 20,
        log_cleaner_backoff_ms: 20,
        offsets_segment_bytes: 2048,
        ..BrokerConfig::default()
    };
    Server::start(config, disk, None).await
}

async fn consume_all(client: &Client, topic: &str, end: i64) -> Vec<ConsumedRecord> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < end {
        let fetched = client
            .fetch(topic, 0, offset, 100, 64 * 1024)
            .await
            .expect("fetch");
        // Batches left without records by compaction still move the position.
        assert!(fetched.next_offset > offset, "no progress at {offset}");
        offset = fetched.next_offset;
        out.extend(fetched.records);
    }
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_value_per_key_across_a_restart() {
    let disk = Arc::new(MemDisk::new());
    let server = start(Arc::clone(&disk)).await;
    let client = server.client().await;
    client
        .create_topics(
            "latest",
            1,
            1,
            &[
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("segment.bytes".to_string(), "2048".to_string()),
                ("delete.retention.ms".to_string(), "0".to_string()),
            ],
        )
        .await
        .expect("create");
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    // 10 keys x 30 versions; key-7 ends with a tombstone; then filler so all of it is closed.
    let mut last_offset = -1;
    for version in 0..30 {
        for key in 0..10 {
            let tombstone = key == 7 && version == 29;
            let record = Record {
                key: Some(Bytes::from(format!("key-{key}"))),
                value: (!tombstone).then(|| Bytes::from(format!("v{version}"))),
                headers: Vec::new(),
                timestamp_ms: Some(now_ms()),
            };
            last_offset = producer
                .send("latest", Some(0), record)
                .await
                .expect("send")
                .1;
        }
    }
    for filler in 0..60 {
        let record = Record::from_key_value(format!("filler-{filler}"), vec![b'x'; 60]);
        last_offset = producer
            .send("latest", Some(0), record)
            .await
            .expect("send")
            .1;
    }
    let end = last_offset + 1;

    let keyed = |records: &[ConsumedRecord]| {
        records
            .iter()
            .filter(|r| r.key.as_ref().is_some_and(|k| k.starts_with(b"key-")))
            .map(|r| (r.key.clone().unwrap(), r.offset, r.value.clone()))
            .collect::<Vec<_>>()
    };
    let mut compacted = None;
    let mut last_keyed = Vec::new();
    for _ in 0..500 {
        let records = consume_all(&client, "latest", end).await;
        last_keyed = keyed(&records);
        if last_keyed.len() == 9 {
            compacted = Some(records);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let records = compacted.unwrap_or_else(|| panic!("not compacted: {last_keyed:?}"));
    let expected: Vec<_> = (0..10)
        .filter(|k| *k != 7)
        .map(|k| {
            (
                Bytes::from(format!("key-{k}")),
                290 + k as i64,
                Some(Bytes::from("v29")),
            )
        })
        .collect();
    assert_eq!(keyed(&records), expected);
    assert!(records.windows(2).all(|w| w[0].offset < w[1].offset));

    // After a restart (recovery scans the rewritten segments), the same records.
    server.stop().await;
    let server = start(Arc::clone(&disk)).await;
    let client = server.client().await;
    let after = consume_all(&client, "latest", end).await;
    assert_eq!(keyed(&after), expected);
    assert_eq!(after.len(), records.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_offsets_are_compacted_and_rebuilt_intact() {
    let disk = Arc::new(MemDisk::new());
    let server = start(Arc::clone(&disk)).await;
    let client = server.client().await;
    client
        .create_topics("orders", 3, 1, &[])
        .await
        .expect("create");
    // 200 commits of 3 partitions for one group: 600 offset records, 3 keys.
    for round in 0..200 {
        let offsets: Vec<(String, i32, i64)> = (0..3)
            .map(|p| ("orders".to_string(), p, round * 10 + p as i64))
            .collect();
        client
            .commit_group_offsets("billing", &offsets)
            .await
            .expect("commit");
    }
    let end = client
        .list_offsets(
            "__consumer_offsets",
            0,
            strata_cluster::client::OffsetSpec::Latest,
        )
        .await
        .expect("offsets end");
    assert_eq!(end, 600);
    let mut remaining = usize::MAX;
    for _ in 0..500 {
        remaining = consume_all(&client, "__consumer_offsets", end).await.len();
        // Only the latest commit of each partition remains in the closed segments; the active
        // segment holds the newest commits, uncompacted.
        if remaining < 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(remaining < 100, "{remaining} offset records left");

    server.stop().await;
    let server = start(Arc::clone(&disk)).await;
    let client = server.client().await;
    let committed = client.committed_offsets("billing").await.expect("fetch");
    let got: Vec<(i32, i64)> = committed.iter().map(|c| (c.partition, c.offset)).collect();
    assert_eq!(got, vec![(0, 1990), (1, 1991), (2, 1992)]);
    server.stop().await;
}
