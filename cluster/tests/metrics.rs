//! The Prometheus endpoint: a broker in-process with metrics on 127.0.0.1:0, traffic over the
//! Kafka protocol, scrapes over a raw TCP connection.

mod broker_util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker_util::{batch, Conn, TestBroker};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strata_cluster::config::TopicConfig;
use strata_cluster::group::offsets::CommittedOffset;
use strata_cluster::group::CommitEntry;
use strata_cluster::BrokerConfig;
use strata_storage::MemDisk;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// A broker whose metrics endpoint listens on an ephemeral port; returns it and that port.
async fn start() -> (TestBroker, SocketAddr) {
    let config = BrokerConfig {
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(addr) = broker.broker.metrics().bound_addr() {
            return (broker, addr);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics endpoint bound within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `request` as is and returns the whole answer (the endpoint closes after one answer).
async fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to metrics");
    stream.write_all(request).await.expect("write request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answer within 10 s")
        .expect("read answer");
    String::from_utf8(answer).expect("utf-8 answer")
}

/// Scrapes `/metrics`; checks the status and content type; returns the body.
async fn scrape(addr: SocketAddr) -> String {
    let answer = http(addr, b"GET /metrics HTTP/1.1\r\nHost: strata\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "status: {head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "content type: {head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "content length: {head}"
    );
    body.to_string()
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.trim().parse().expect("numeric sample"))
    })
}

fn value(body: &str, series: &str) -> f64 {
    sample(body, series).unwrap_or_else(|| panic!("no sample {series} in:\n{body}"))
}

async fn produce(conn: &mut Conn, topic: &str, partition: i32, records: Bytes) -> i16 {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let response: ProduceResponse = conn.call(ApiKey::Produce, 9, &request).await;
    response.responses[0].partition_responses[0].error_code
}

/// Fetches from offset 0; returns the record bytes.
async fn fetch(conn: &mut Conn, topic: &str) -> Bytes {
    let request = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = conn.call(ApiKey::Fetch, 12, &request).await;
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition.records.clone().unwrap_or_default()
}

#[tokio::test]
async fn counters_follow_produce_and_fetch() {
    let (broker, metrics) = start().await;
    for topic in ["orders", "audit"] {
        broker
            .broker
            .create_topic(topic, 1, TopicConfig::default(), false)
            .expect("create topic");
    }
    let mut conn = broker.connect().await;

    let before = scrape(metrics).await;
    assert_eq!(value(&before, "strata_connections"), 1.0);
    assert_eq!(
        sample(&before, "strata_bytes_in_total{topic=\"orders\"}"),
        None
    );
    assert_eq!(
        value(
            &before,
            "strata_log_end_offset{topic=\"orders\",partition=\"0\"}"
        ),
        0.0
    );

    let first = batch(&[b"a", b"bb", b"ccc"], None);
    let second = batch(&[b"dddd", b"eeeee"], None);
    let audit = batch(&[b"x"], None);
    let orders_bytes = (first.len() + second.len()) as f64;
    assert_eq!(produce(&mut conn, "orders", 0, first).await, 0);
    assert_eq!(produce(&mut conn, "orders", 0, second).await, 0);
    assert_eq!(produce(&mut conn, "audit", 0, audit.clone()).await, 0);
    // An unknown partition is answered with an error and counts no bytes.
    assert_eq!(
        produce(&mut conn, "orders", 7, batch(&[b"z"], None)).await,
        3
    );
    let fetched = fetch(&mut conn, "orders").await;
    assert_eq!(
        fetched.len() as f64,
        orders_bytes,
        "the whole log is fetched"
    );

    // A group that committed offset 2 of orders-0 lags 3 records behind the high watermark.
    let groups = broker.broker.groups();
    groups
        .check_commit(Duration::ZERO, "billing", -1, "", None)
        .expect("simple commit allowed");
    groups
        .commit_offsets(
            &broker.broker,
            "billing",
            vec![CommitEntry {
                topic: "orders".to_string(),
                partition: 0,
                offset: CommittedOffset {
                    offset: 2,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp_ms: 0,
                },
            }],
        )
        .await
        .expect("commit");

    let body = scrape(metrics).await;
    assert_eq!(
        value(&body, "strata_bytes_in_total{topic=\"orders\"}"),
        orders_bytes
    );
    assert_eq!(
        value(&body, "strata_records_in_total{topic=\"orders\"}"),
        5.0
    );
    assert_eq!(
        value(&body, "strata_bytes_in_total{topic=\"audit\"}"),
        audit.len() as f64
    );
    assert_eq!(
        value(&body, "strata_records_in_total{topic=\"audit\"}"),
        1.0
    );
    assert_eq!(
        value(&body, "strata_bytes_out_total{topic=\"orders\"}"),
        orders_bytes
    );
    assert_eq!(
        value(&body, "strata_records_out_total{topic=\"orders\"}"),
        5.0
    );
    assert_eq!(
        value(&body, "strata_bytes_out_total{topic=\"audit\"}"),
        0.0,
        "nothing was fetched from audit"
    );
    assert_eq!(
        value(
            &body,
            "strata_request_duration_seconds_count{api=\"Produce\"}"
        ),
        4.0
    );
    assert_eq!(
        value(
            &body,
            "strata_request_duration_seconds_count{api=\"Fetch\"}"
        ),
        1.0
    );
    assert!(
        value(
            &body,
            "strata_request_duration_seconds_sum{api=\"Produce\"}"
        ) > 0.0
    );
    assert_eq!(
        value(
            &body,
            "strata_partition_errors_total{api=\"Produce\",error=\"UnknownTopicOrPartition\"}"
        ),
        1.0
    );
    assert_eq!(value(&body, "strata_fetch_wait_seconds_count"), 1.0);
    // acks=all waited for at least one group commit per produce call that succeeded.
    let fsyncs = value(&body, "strata_fsync_batches_total");
    assert!(fsyncs >= 3.0, "fsync batches {fsyncs}");
    assert_eq!(value(&body, "strata_fsync_duration_seconds_count"), fsyncs);
    let partition = "{topic=\"orders\",partition=\"0\"}";
    assert_eq!(
        value(&body, &format!("strata_log_end_offset{partition}")),
        5.0
    );
    assert_eq!(
        value(&body, &format!("strata_high_watermark{partition}")),
        5.0
    );
    assert_eq!(
        value(&body, &format!("strata_log_start_offset{partition}")),
        0.0
    );
    assert_eq!(value(&body, &format!("strata_segments{partition}")), 1.0);
    assert_eq!(
        value(
            &body,
            "strata_group_lag{group=\"billing\",topic=\"orders\",partition=\"0\"}"
        ),
        3.0
    );
    assert_eq!(value(&body, "strata_connections"), 1.0);

    drop(conn);
    // The connection task notices the close asynchronously.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while value(&scrape(metrics).await, "strata_connections") != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection gauge drops to 0"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn other_requests_are_refused_and_do_not_hurt() {
    let (broker, metrics) = start().await;
    let not_found = http(metrics, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    let not_found = http(metrics, b"GET /metrics/x HTTP/1.0\r\n\r\n").await;
    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    let not_allowed = http(metrics, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(not_allowed.starts_with("HTTP/1.1 405 "), "{not_allowed}");
    let garbage = http(metrics, b"\x00\x01\xff garbage\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    // A head longer than the bound, never terminated: refused without waiting for more.
    let endless = vec![b'a'; strata_cluster::metrics::HTTP_REQUEST_BYTES_MAX + 1];
    let long = http(metrics, &endless).await;
    assert!(long.starts_with("HTTP/1.1 400 "), "{long}");
    // A client that connects and leaves, and one that stalls mid-head.
    drop(TcpStream::connect(metrics).await.expect("connect"));
    let mut stalled = TcpStream::connect(metrics).await.expect("connect");
    stalled.write_all(b"GET /met").await.expect("write");
    // A frame that closes a Kafka connection is counted.
    let mut conn = broker.connect().await;
    conn.send_frame(&[0xff, 0xff, 0, 0, 0, 0, 0, 1]).await;
    assert!(conn.is_closed().await);

    let body = scrape(metrics).await;
    assert_eq!(value(&body, "strata_bad_frames_total"), 1.0);
    assert_eq!(value(&body, "strata_fsync_batches_total"), 0.0);
    drop(stalled);
    broker.stop().await;
}

#[tokio::test]
async fn no_endpoint_without_metrics_listen() {
    let broker = TestBroker::start().await;
    // The Kafka listener is up (a round trip), and no metrics address was bound.
    broker
        .broker
        .create_topic("plain", 1, TopicConfig::default(), false)
        .expect("create topic");
    let mut conn = broker.connect().await;
    assert_eq!(
        produce(&mut conn, "plain", 0, batch(&[b"v"], None)).await,
        0
    );
    assert_eq!(broker.broker.metrics().bound_addr(), None);
    broker.stop().await;
}
