//! Strata's client against an in-process broker (MemDisk, 127.0.0.1:0): admin, produce with
//! every codec, the default partitioner, fetch, list offsets, typed errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use strata_cluster::client::{
    kafka_partition_for_key, Client, ClientConfig, ClientError, Compression, OffsetSpec, Producer,
    ProducerConfig, Record, ResponseError,
};
use strata_cluster::{Broker, BrokerConfig};
use strata_storage::{Clock, Disk, MemDisk, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let config = BrokerConfig {
            data_dir: "/data".into(),
            listen: addr,
            ..BrokerConfig::default()
        };
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let broker = Broker::open(config, disk, clock)
            .await
            .expect("broker opens");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(strata_cluster::server::serve(
            broker,
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            addr: addr.to_string(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn client(&self) -> Client {
        Client::connect(
            &self.addr,
            ClientConfig {
                request_timeout_ms: 10_000,
                client_id: "client-test".to_string(),
            },
        )
        .await
        .expect("client connects")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

fn record(key: Option<&str>, value: Option<&str>) -> Record {
    Record {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: Vec::new(),
        timestamp_ms: None,
    }
}

#[tokio::test]
async fn admin_create_list_describe_alter_delete() {
    let server = Server::start().await;
    let client = server.client().await;

    client
        .create_topics(
            "orders",
            3,
            1,
            &[("retention.ms".to_string(), "123456".to_string())],
        )
        .await
        .expect("create");
    let err = client
        .create_topics("orders", 3, 1, &[])
        .await
        .expect_err("second create fails");
    assert_eq!(
        err.kafka_error(),
        Some(ResponseError::TopicAlreadyExists),
        "{err}"
    );

    client
        .create_topics("audit", -1, -1, &[])
        .await
        .expect("create with defaults");
    assert_eq!(
        client.list_topics().await.expect("list"),
        vec!["audit".to_string(), "orders".to_string()]
    );

    let description = client.describe_topic("orders").await.expect("describe");
    assert_eq!(
        description
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(description.partitions.iter().all(|p| p.leader_id == 0));
    let configs: BTreeMap<_, _> = description
        .configs
        .iter()
        .map(|c| (c.name.clone(), (c.value.clone(), c.is_default)))
        .collect();
    assert_eq!(
        configs.get("retention.ms"),
        Some(&(Some("123456".to_string()), false))
    );
    assert!(configs.contains_key("segment.bytes"), "{configs:?}");

    client
        .alter_topic_configs(
            "orders",
            &[
                ("retention.ms".to_string(), None),
                ("segment.bytes".to_string(), Some("1048576".to_string())),
            ],
        )
        .await
        .expect("alter");
    let description = client.describe_topic("orders").await.expect("describe");
    let configs: BTreeMap<_, _> = description
        .configs
        .iter()
        .map(|c| (c.name.clone(), (c.value.clone(), c.is_default)))
        .collect();
    assert_eq!(
        configs.get("segment.bytes"),
        Some(&(Some("1048576".to_string()), false))
    );
    assert_eq!(configs.get("retention.ms").map(|c| c.1), Some(true));

    client.delete_topics(&["orders"]).await.expect("delete");
    assert_eq!(
        client.list_topics().await.expect("list"),
        vec!["audit".to_string()]
    );
    let err = client.describe_topic("orders").await.expect_err("gone");
    assert!(matches!(err, ClientError::UnknownTopic { .. }), "{err}");
    let err = client.delete_topics(&["orders"]).await.expect_err("gone");
    assert_eq!(
        err.kafka_error(),
        Some(ResponseError::UnknownTopicOrPartition),
        "{err}"
    );

    server.stop().await;
}

#[tokio::test]
async fn produce_and_fetch_every_codec_with_keys_headers_and_nulls() {
    let server = Server::start().await;
    let client = server.client().await;
    client
        .create_topics("codecs", 1, 1, &[])
        .await
        .expect("create");

    let mut expected_offset = 0i64;
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                compression,
                ..ProducerConfig::default()
            },
        )
        .expect("producer");
        let records: Vec<Record> = (0..20)
            .map(|i| Record {
                key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (i != 7).then(|| Bytes::from(format!("{compression:?}-value-{i}"))),
                headers: vec![
                    (
                        "codec".to_string(),
                        Some(Bytes::from(format!("{compression:?}"))),
                    ),
                    ("null-header".to_string(), None),
                ],
                timestamp_ms: Some(1_700_000_000_000 + i),
            })
            .collect();
        let base = producer
            .send_batch("codecs", 0, records.clone())
            .await
            .expect("send batch");
        assert_eq!(base, expected_offset, "{compression:?}");
        let (partition, single) = producer
            .send("codecs", Some(0), record(Some("k"), Some("single")))
            .await
            .expect("send");
        assert_eq!((partition, single), (0, expected_offset + 20));

        let fetched = client
            .fetch("codecs", 0, expected_offset, 1_000, 1 << 20)
            .await
            .expect("fetch");
        assert_eq!(fetched.high_watermark, expected_offset + 21);
        assert_eq!(fetched.log_start_offset, 0);
        assert_eq!(fetched.records.len(), 21, "{compression:?}");
        for (i, (got, sent)) in fetched.records.iter().zip(&records).enumerate() {
            assert_eq!(got.offset, expected_offset + i as i64);
            assert_eq!(got.key, sent.key);
            assert_eq!(got.value, sent.value);
            assert_eq!(got.headers, sent.headers);
            assert_eq!(got.timestamp_ms, 1_700_000_000_000 + i as i64);
        }
        assert_eq!(fetched.records[20].value.as_deref(), Some(&b"single"[..]));

        // A fetch in the middle of a batch skips the records below the requested offset.
        let middle = client
            .fetch("codecs", 0, expected_offset + 5, 0, 1 << 20)
            .await
            .expect("fetch middle");
        assert_eq!(middle.records[0].offset, expected_offset + 5);
        expected_offset += 21;
    }
    server.stop().await;
}

#[tokio::test]
async fn acks_one_and_zero_and_non_idempotent() {
    let server = Server::start().await;
    let client = server.client().await;
    client
        .create_topics("acks", 1, 1, &[])
        .await
        .expect("create");
    let err = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: 1,
            idempotent: true,
            ..ProducerConfig::default()
        },
    )
    .expect_err("idempotence needs acks=all");
    assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");

    let leader_acks = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: 1,
            idempotent: false,
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    assert_eq!(
        leader_acks
            .send("acks", Some(0), record(None, Some("one")))
            .await
            .expect("send"),
        (0, 0)
    );
    let no_acks = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: 0,
            idempotent: false,
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    assert_eq!(
        no_acks
            .send("acks", Some(0), record(None, Some("zero")))
            .await
            .expect("send"),
        (0, -1)
    );
    // The acks=0 record lands; poll until it is visible (consumers see only fsynced offsets).
    let mut values = Vec::new();
    for _ in 0..200 {
        values = client
            .fetch("acks", 0, 0, 0, 1 << 20)
            .await
            .expect("fetch")
            .records
            .iter()
            .map(|r| r.value.clone())
            .collect();
        if values.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        values,
        vec![
            Some(Bytes::from_static(b"one")),
            Some(Bytes::from_static(b"zero"))
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn default_partitioner_murmur2_for_keys_round_robin_for_null() {
    let server = Server::start().await;
    let client = server.client().await;
    client
        .create_topics("spread", 4, 1, &[])
        .await
        .expect("create");
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    for i in 0..20 {
        let key = format!("user-{i}");
        let (partition, _) = producer
            .send("spread", None, record(Some(&key), Some("v")))
            .await
            .expect("send");
        assert_eq!(partition, kafka_partition_for_key(key.as_bytes(), 4));
    }
    let mut seen = Vec::new();
    for _ in 0..8 {
        let (partition, _) = producer
            .send("spread", None, record(None, Some("v")))
            .await
            .expect("send");
        seen.push(partition);
    }
    let mut first_four = seen[..4].to_vec();
    first_four.sort();
    assert_eq!(first_four, vec![0, 1, 2, 3], "{seen:?}");
    assert_eq!(seen[..4], seen[4..], "round robin repeats");
    server.stop().await;
}

#[tokio::test]
async fn list_offsets_by_spec_and_typed_fetch_errors() {
    let server = Server::start().await;
    let client = server.client().await;
    client
        .create_topics("offsets", 1, 1, &[])
        .await
        .expect("create");
    assert_eq!(
        client
            .list_offsets("offsets", 0, OffsetSpec::Earliest)
            .await
            .expect("earliest"),
        0
    );
    assert_eq!(
        client
            .list_offsets("offsets", 0, OffsetSpec::Latest)
            .await
            .expect("latest"),
        0
    );
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    for i in 0..10i64 {
        producer
            .send(
                "offsets",
                Some(0),
                Record {
                    timestamp_ms: Some(1_000_000 + i * 1_000),
                    ..record(None, Some("v"))
                },
            )
            .await
            .expect("send");
    }
    assert_eq!(
        client
            .list_offsets("offsets", 0, OffsetSpec::Latest)
            .await
            .expect("latest"),
        10
    );
    assert_eq!(
        client
            .list_offsets("offsets", 0, OffsetSpec::Timestamp(1_004_500))
            .await
            .expect("by time"),
        5
    );
    assert_eq!(
        client
            .list_offsets("offsets", 0, OffsetSpec::Timestamp(9_000_000))
            .await
            .expect("past the end"),
        -1
    );

    let err = client
        .fetch("offsets", 0, 11, 0, 1 << 20)
        .await
        .expect_err("past end");
    assert!(
        matches!(err, ClientError::OffsetOutOfRange { offset: 11, .. }),
        "{err}"
    );
    // The end offset itself is valid and empty.
    let at_end = client
        .fetch("offsets", 0, 10, 0, 1 << 20)
        .await
        .expect("at end");
    assert!(at_end.records.is_empty());
    let err = client
        .fetch("offsets", 5, 0, 0, 1 << 20)
        .await
        .expect_err("no partition 5");
    assert!(matches!(err, ClientError::UnknownPartition { .. }), "{err}");
    let err = client
        .fetch("missing", 0, 0, 0, 1 << 20)
        .await
        .expect_err("no topic");
    assert!(matches!(err, ClientError::UnknownTopic { .. }), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn fetch_waits_for_new_data_up_to_max_wait() {
    let server = Server::start().await;
    let client = server.client().await;
    client
        .create_topics("wait", 1, 1, &[])
        .await
        .expect("create");
    let reader = client.clone();
    let fetch = tokio::spawn(async move { reader.fetch("wait", 0, 0, 5_000, 1 << 20).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    producer
        .send("wait", Some(0), record(None, Some("late")))
        .await
        .expect("send");
    let fetched = fetch.await.expect("join").expect("fetch");
    assert_eq!(fetched.records.len(), 1);
    assert_eq!(fetched.records[0].value.as_deref(), Some(&b"late"[..]));
    server.stop().await;
}

#[tokio::test]
async fn concurrent_idempotent_sends_to_one_partition_keep_dense_offsets() {
    let server = Server::start().await;
    let client = server.client().await;
    client
        .create_topics("concurrent", 2, 1, &[])
        .await
        .expect("create");
    let producer =
        Arc::new(Producer::new(client.clone(), ProducerConfig::default()).expect("producer"));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let producer = Arc::clone(&producer);
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..25 {
                let (_, offset) = producer
                    .send(
                        "concurrent",
                        Some(t % 2),
                        record(None, Some(&format!("{t}-{i}"))),
                    )
                    .await
                    .expect("send");
                offsets.push(((t % 2), offset));
            }
            offsets
        }));
    }
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for task in tasks {
        for (p, o) in task.await.expect("join") {
            per_partition.entry(p).or_default().push(o);
        }
    }
    for (p, mut offsets) in per_partition {
        offsets.sort();
        assert_eq!(offsets, (0..100).collect::<Vec<i64>>(), "partition {p}");
    }
    assert!(producer.producer_id().is_some());
    server.stop().await;
}

#[tokio::test]
async fn connect_errors_are_clear() {
    // A port nothing listens on (bound, then dropped).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = Client::connect(&addr.to_string(), ClientConfig::default())
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, ClientError::NoBrokers { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let err = Client::connect(" , ", ClientConfig::default())
        .await
        .expect_err("empty list");
    assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");
}

#[tokio::test]
async fn client_reconnects_after_broker_restart_on_same_port() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let disk = Arc::new(MemDisk::new());
    let start = |listener: TcpListener, disk: Arc<MemDisk>| async move {
        let config = BrokerConfig {
            data_dir: "/data".into(),
            listen: addr,
            ..BrokerConfig::default()
        };
        let disk: Arc<dyn Disk> = disk;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let broker = Broker::open(config, disk, clock)
            .await
            .expect("broker opens");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(strata_cluster::server::serve(
            broker,
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        (stop, task)
    };
    let (stop, task) = start(listener, Arc::clone(&disk)).await;
    let client = Client::connect(
        &addr.to_string(),
        ClientConfig {
            request_timeout_ms: 5_000,
            client_id: "restart-test".to_string(),
        },
    )
    .await
    .expect("connect");
    client
        .create_topics("restart", 1, 1, &[])
        .await
        .expect("create");
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    assert_eq!(
        producer
            .send("restart", Some(0), record(None, Some("before")))
            .await
            .expect("send"),
        (0, 0)
    );

    let _ = stop.send(());
    task.await.expect("join").expect("clean stop");
    let listener = TcpListener::bind(addr).await.expect("rebind the same port");
    let (stop, task) = start(listener, Arc::clone(&disk)).await;

    // The client's pooled connections are dead; requests must reconnect transparently.
    assert_eq!(
        producer
            .send("restart", Some(0), record(None, Some("after")))
            .await
            .expect("send"),
        (0, 1)
    );
    let fetched = client
        .fetch("restart", 0, 0, 0, 1 << 20)
        .await
        .expect("fetch");
    let values: Vec<_> = fetched.records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(
        values,
        vec![
            Some(Bytes::from_static(b"before")),
            Some(Bytes::from_static(b"after"))
        ]
    );
    assert_eq!(
        client.list_topics().await.expect("list"),
        vec!["restart".to_string()]
    );
    let _ = stop.send(());
    task.await.expect("join").expect("clean stop");
}
