//! Goal: the production broker runs unchanged under the madsim simulator on an in-memory disk,
//! takes produces from Strata's client and serves them back by fetch — and every record it
//! acknowledged with acks=all survives a crash that drops all unsynced bytes and tears the tail.
//!
//! Run: `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-sim cargo test -p strata-sim`
//! (one seed: `MADSIM_TEST_SEED=7`; several: `MADSIM_TEST_NUM=20`).
#![cfg(madsim)]

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use madsim::runtime::Handle;
use strata_cluster::client::{
    Client, ClientConfig, ClientError, OffsetSpec, Producer, ProducerConfig, Record,
};
use strata_sim::{start_broker_node, BROKER_PORT};
use strata_storage::MemDisk;

const TOPIC: &str = "sim-events";
const PARTITIONS: i32 = 2;
const BATCHES_PER_PARTITION: usize = 20;
const RECORDS_PER_BATCH: usize = 10;

fn broker_ip() -> IpAddr {
    IpAddr::from([10, 0, 0, 1])
}

fn client_ip() -> IpAddr {
    IpAddr::from([10, 0, 0, 2])
}

/// Connects, retrying while the broker node is still starting (bounded).
async fn connect() -> Client {
    let bootstrap = format!("{}:{}", broker_ip(), BROKER_PORT);
    let config = ClientConfig {
        request_timeout_ms: 5_000,
        ..ClientConfig::default()
    };
    let mut last_error: Option<ClientError> = None;
    for _ in 0..50 {
        match Client::connect(&bootstrap, config.clone()).await {
            Ok(client) => return client,
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("could not connect to the simulated broker: {last_error:?}");
}

fn value_of(partition: i32, index: usize) -> Bytes {
    Bytes::from(format!("p{partition}-v{index}"))
}

/// Reads `topic`-`partition` from offset 0 up to its high watermark.
async fn read_all(client: &Client, partition: i32) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for _ in 0..1_000 {
        let result = client
            .fetch(TOPIC, partition, offset, 100, 64 * 1024)
            .await
            .expect("fetch");
        for record in result.records {
            assert_eq!(record.offset, offset, "offsets must be dense and in order");
            offset = record.offset + 1;
            out.push((record.offset, record.key, record.value));
        }
        if offset >= result.high_watermark {
            return out;
        }
    }
    panic!("partition {partition} did not reach its high watermark");
}

#[madsim::test]
async fn broker_serves_produce_and_fetch_and_keeps_acked_records_across_a_crash() {
    let handle = Handle::current();
    let disk = MemDisk::new();
    let broker = start_broker_node(&handle, "broker-0", 0, broker_ip(), disk.clone());
    let client_node = handle.create_node().name("client").ip(client_ip()).build();

    // Phase 1: produce with acks=all, idempotent; remember every acknowledged offset.
    let acked = client_node
        .spawn(async move {
            let client = connect().await;
            client
                .create_topics(
                    TOPIC,
                    PARTITIONS,
                    1,
                    &[("segment.bytes".into(), "4096".into())],
                )
                .await
                .expect("create topic");
            let producer =
                Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
            let mut acked = Vec::new();
            for partition in 0..PARTITIONS {
                for batch in 0..BATCHES_PER_PARTITION {
                    let records: Vec<Record> = (0..RECORDS_PER_BATCH)
                        .map(|i| {
                            let index = batch * RECORDS_PER_BATCH + i;
                            let mut record = Record::from_key_value(
                                format!("k{index}"),
                                value_of(partition, index),
                            );
                            record
                                .headers
                                .push(("h".to_string(), Some(Bytes::from_static(b"\x00\x01"))));
                            record
                        })
                        .collect();
                    let base = producer
                        .send_batch(TOPIC, partition, records)
                        .await
                        .expect("acks=all produce");
                    for i in 0..RECORDS_PER_BATCH {
                        acked.push((
                            partition,
                            base + i as i64,
                            value_of(partition, batch * RECORDS_PER_BATCH + i),
                        ));
                    }
                }
            }
            // Everything acknowledged is readable, in order, at its acknowledged offset.
            for partition in 0..PARTITIONS {
                let read = read_all(&client, partition).await;
                let expected: Vec<_> = acked.iter().filter(|(p, _, _)| *p == partition).collect();
                assert_eq!(read.len(), expected.len());
                for ((offset, _key, value), (_, acked_offset, acked_value)) in
                    read.iter().zip(expected)
                {
                    assert_eq!(offset, acked_offset);
                    assert_eq!(value.as_ref(), Some(acked_value));
                }
                assert_eq!(
                    client
                        .list_offsets(TOPIC, partition, OffsetSpec::Earliest)
                        .await
                        .expect("earliest"),
                    0
                );
                assert_eq!(
                    client
                        .list_offsets(TOPIC, partition, OffsetSpec::Latest)
                        .await
                        .expect("latest"),
                    (BATCHES_PER_PARTITION * RECORDS_PER_BATCH) as i64
                );
            }
            // Some unacknowledged acks=1 writes that the crash may drop.
            let fire_and_forget = Producer::new(
                client.clone(),
                ProducerConfig {
                    acks: 1,
                    idempotent: false,
                    ..ProducerConfig::default()
                },
            )
            .expect("producer");
            for i in 0..5 {
                let _ = fire_and_forget
                    .send(TOPIC, Some(0), Record::from_value(format!("maybe-{i}")))
                    .await;
            }
            acked
        })
        .await
        .expect("client task");
    assert_eq!(
        acked.len(),
        PARTITIONS as usize * BATCHES_PER_PARTITION * RECORDS_PER_BATCH
    );

    // Phase 2: power loss. Unsynced bytes are dropped, the unsynced tail torn; then restart.
    handle.kill(broker.id());
    disk.crash(Some(handle.seed()));
    handle.restart(broker.id());

    // Phase 3: every acknowledged record is still there, at its offset; the log takes new writes.
    client_node
        .spawn(async move {
            let client = connect().await;
            for partition in 0..PARTITIONS {
                let read = read_all(&client, partition).await;
                let expected: Vec<_> = acked.iter().filter(|(p, _, _)| *p == partition).collect();
                assert!(
                    read.len() >= expected.len(),
                    "partition {partition} lost acknowledged records"
                );
                for ((offset, _key, value), (_, acked_offset, acked_value)) in
                    read.iter().zip(expected)
                {
                    assert_eq!(offset, acked_offset);
                    assert_eq!(value.as_ref(), Some(acked_value));
                }
            }
            let producer =
                Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
            let end = client
                .list_offsets(TOPIC, 1, OffsetSpec::Latest)
                .await
                .expect("latest");
            let offset = producer
                .send_batch(TOPIC, 1, vec![Record::from_value("after-crash")])
                .await
                .expect("produce after restart");
            assert_eq!(offset, end, "new records continue densely after recovery");
        })
        .await
        .expect("client task after restart");
}
