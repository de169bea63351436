//! The broker's memory and connection limits, seen by a client: `fetch.max.bytes`, the
//! broker-wide fetch memory, the answer bytes one connection may owe, `connections.max.idle.ms`,
//! the deadline of a started frame, `max.connections` and `max.connections.per.ip`; and a
//! directory that cannot be opened for its fsync (EMFILE) failing a request instead of the
//! broker.

mod broker_util;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_util::{batch, Conn, TestBroker};
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use strata_cluster::config::TopicConfig;
use strata_cluster::{Broker, BrokerConfig};
use strata_storage::{Clock, Disk, DiskFile, MemDisk, SystemClock};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create_topic(conn: &mut Conn, topic: &str) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(1)
            .with_replication_factor(-1)])
        .with_timeout_ms(5000);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request).await;
    assert_eq!(response.topics[0].error_code, 0);
}

/// Produces `count` batches of one record of `value_bytes` bytes (acks=all).
async fn produce_batches(conn: &mut Conn, topic: &str, count: usize, value_bytes: usize) {
    for i in 0..count {
        let value = vec![i as u8; value_bytes];
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch(&[&value], None)))])]);
        let response: ProduceResponse = conn.call(ApiKey::Produce, 9, &request).await;
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    }
}

/// A fetch from offset 0 asking for everything a client can ask for.
fn greedy_fetch(topic: &str) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(i32::MAX)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(i32::MAX)])])
}

fn records_of(response: &FetchResponse) -> Bytes {
    response.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default()
}

async fn api_versions_works(conn: &mut Conn) -> bool {
    let response: ApiVersionsResponse = conn
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    response.error_code == 0
}

/// Polls `condition` every 20 ms for up to 5 s.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

fn metric_line(broker: &TestBroker, line: &str) -> bool {
    broker
        .broker
        .metrics()
        .render(&broker.broker)
        .lines()
        .any(|l| l == line)
}

/// A fetch with max_bytes = partition_max_bytes = i32::MAX gets at most the broker's
/// `fetch.max.bytes`: here 20,000 bytes, so 3 of the 10 ~5 KB batches (a 4th would pass it).
#[tokio::test]
async fn fetch_max_bytes_caps_what_a_client_asks() {
    let config = BrokerConfig {
        fetch_bytes_max: 20_000,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "capped").await;
    produce_batches(&mut conn, "capped", 10, 5000).await;
    let response: FetchResponse = conn.call(ApiKey::Fetch, 12, &greedy_fetch("capped")).await;
    let mut records = records_of(&response);
    assert!(records.len() <= 20_000, "{} bytes", records.len());
    let batches = RecordBatchDecoder::decode_all(&mut records).expect("whole batches");
    assert_eq!(batches.len(), 3);
    broker.stop().await;
}

/// The broker-wide fetch memory (`fetch.memory.max.bytes`) caps an answer too, and it is all
/// given back once the answer is written.
#[tokio::test]
async fn fetch_memory_caps_answers_and_is_given_back() {
    let config = BrokerConfig {
        fetch_memory_bytes_max: 12_000,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "budget").await;
    produce_batches(&mut conn, "budget", 10, 5000).await;
    for _ in 0..3 {
        let response: FetchResponse = conn.call(ApiKey::Fetch, 12, &greedy_fetch("budget")).await;
        let mut records = records_of(&response);
        assert!(records.len() <= 12_000, "{} bytes", records.len());
        let batches = RecordBatchDecoder::decode_all(&mut records).expect("whole batches");
        assert_eq!(batches.len(), 2);
        let memory = broker.broker.fetch_memory();
        assert!(
            eventually(|| memory.used_bytes() == 0).await,
            "fetch memory still held: {}",
            memory.used_bytes()
        );
    }
    broker.stop().await;
}

/// A client that pipelines 40 fetches of 1 MiB each and reads none of the answers makes the
/// broker owe at most its `queued.max.response.bytes` (256 KiB here) plus one answer, not the
/// 16 queued answers (16 MiB) it could owe otherwise; once the client reads, every answer
/// arrives and nothing stays owed.
#[tokio::test]
async fn a_connection_that_does_not_read_owes_at_most_its_budget() {
    const ANSWER_BYTES: usize = 1 << 20;
    const BUDGET_BYTES: usize = 256 << 10;
    let config = BrokerConfig {
        fetch_bytes_max: ANSWER_BYTES,
        connection_answers_bytes_max: BUDGET_BYTES,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "unread").await;
    produce_batches(&mut conn, "unread", 20, 64 << 10).await;
    let requests = 40;
    let mut sender = broker.connect().await;
    for _ in 0..requests {
        sender
            .send(ApiKey::Fetch, 12, &greedy_fetch("unread"))
            .await;
    }
    let metrics = broker.broker.metrics();
    assert!(
        eventually(|| metrics.answers_owed_bytes() > 0).await,
        "answers are owed"
    );
    let mut owed_max = 0;
    for _ in 0..25 {
        owed_max = owed_max.max(metrics.answers_owed_bytes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        owed_max as usize <= BUDGET_BYTES + ANSWER_BYTES,
        "owed {owed_max} bytes"
    );
    assert!(
        broker.broker.fetch_memory().used_bytes() <= BUDGET_BYTES + ANSWER_BYTES,
        "fetch memory {}",
        broker.broker.fetch_memory().used_bytes()
    );
    // Another client is served meanwhile.
    assert!(api_versions_works(&mut conn).await);
    for _ in 0..requests {
        let (_, response): (i32, FetchResponse) = sender.recv(ApiKey::Fetch, 12).await;
        let bytes = records_of(&response).len();
        // As many whole 64 KiB batches as fit in fetch.max.bytes.
        assert!(
            bytes <= ANSWER_BYTES && bytes > ANSWER_BYTES - (65 << 10),
            "{bytes} bytes"
        );
    }
    assert!(eventually(|| metrics.answers_owed_bytes() == 0).await);
    assert!(eventually(|| broker.broker.fetch_memory().used_bytes() == 0).await);
    broker.stop().await;
}

/// A connection that sends nothing for `connections.max.idle.ms` (300 ms here) is closed; one
/// that keeps sending requests stays open past it.
#[tokio::test]
async fn idle_connections_are_closed() {
    let config = BrokerConfig {
        connection_idle_ms_max: 300,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut idle = broker.connect().await;
    let mut busy = broker.connect().await;
    assert!(api_versions_works(&mut idle).await);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        assert!(
            api_versions_works(&mut busy).await,
            "a busy connection stays open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(idle.is_closed().await, "the idle connection was closed");
    assert!(api_versions_works(&mut busy).await);
    assert!(metric_line(
        &broker,
        "strata_connections_closed_total{reason=\"idle\"} 1"
    ));
    broker.stop().await;
}

/// A frame whose first bytes arrived but whose rest does not arrive within
/// `socket.request.read.timeout.ms` (300 ms here) closes its connection, though the connection
/// is far from idle-timed-out.
#[tokio::test]
async fn a_stalled_frame_is_closed_after_the_deadline() {
    let config = BrokerConfig {
        frame_read_ms_max: 300,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut conn = broker.connect().await;
    assert!(api_versions_works(&mut conn).await);
    // 1,000,000 bytes announced, 10 sent.
    let mut partial = 1_000_000i32.to_be_bytes().to_vec();
    partial.extend_from_slice(&[0u8; 10]);
    let started = Instant::now();
    conn.send_raw(&partial).await;
    assert!(
        conn.is_closed().await,
        "the stalled frame's connection was closed"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    assert!(metric_line(
        &broker,
        "strata_connections_closed_total{reason=\"frame_timeout\"} 1"
    ));
    // A frame sent in pieces, each well within the deadline, is served.
    let mut slow = broker.connect().await;
    let mut whole = Vec::new();
    {
        use bytes::BufMut;
        use kafka_protocol::messages::RequestHeader;
        use kafka_protocol::protocol::Encodable;
        let mut body = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(0)
            .with_correlation_id(9)
            .encode(&mut body, 1)
            .expect("header");
        whole.put_i32(body.len() as i32);
        whole.extend_from_slice(&body);
    }
    let (first, rest) = whole.split_at(3);
    slow.send_raw(first).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    slow.send_raw(rest).await;
    let (correlation_id, response): (i32, ApiVersionsResponse) =
        slow.recv(ApiKey::ApiVersions, 0).await;
    assert_eq!((correlation_id, response.error_code), (9, 0));
    broker.stop().await;
}

/// Past `max.connections` (3 here) a new connection is closed at once, while the connections
/// already open keep working; once one closes, a new one is admitted.
#[tokio::test]
async fn max_connections_closes_new_connections_only() {
    let config = BrokerConfig {
        connections_max: 3,
        connections_per_ip_max: 100,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut first = broker.connect().await;
    assert!(api_versions_works(&mut first).await);
    let mut second = broker.connect().await;
    let mut third = broker.connect().await;
    assert!(api_versions_works(&mut second).await);
    assert!(api_versions_works(&mut third).await);
    let mut refused = broker.connect().await;
    assert!(refused.is_closed().await, "the 4th connection was closed");
    assert!(
        api_versions_works(&mut first).await,
        "existing clients are served"
    );
    assert!(metric_line(
        &broker,
        "strata_connections_rejected_total{reason=\"max_connections\"} 1"
    ));
    drop(second);
    // The closed connection's place is given back once the broker has seen the close.
    let mut admitted = false;
    for _ in 0..50 {
        let mut next = broker.connect().await;
        next.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
            .await;
        let mut length = [0u8; 4];
        let read = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::io::AsyncReadExt::read_exact(&mut next.stream, &mut length),
        )
        .await;
        if matches!(read, Ok(Ok(_))) {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a connection is admitted after one closed");
    assert!(api_versions_works(&mut third).await);
    broker.stop().await;
}

/// Past `max.connections.per.ip` (2 here) a new connection from the same address is closed,
/// while the others from it keep working.
#[tokio::test]
async fn max_connections_per_ip_closes_new_connections_only() {
    let config = BrokerConfig {
        connections_max: 100,
        connections_per_ip_max: 2,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut first = broker.connect().await;
    let mut second = broker.connect().await;
    assert!(api_versions_works(&mut first).await);
    assert!(api_versions_works(&mut second).await);
    let mut refused = broker.connect().await;
    assert!(
        refused.is_closed().await,
        "the 3rd connection from 127.0.0.1 was closed"
    );
    assert!(api_versions_works(&mut first).await);
    assert!(api_versions_works(&mut second).await);
    assert!(metric_line(
        &broker,
        "strata_connections_rejected_total{reason=\"max_connections_per_ip\"} 1"
    ));
    broker.stop().await;
}

/// A `MemDisk` whose directory syncs fail as `RealDisk`'s do when no file descriptor is left to
/// open the directory (EMFILE), while `fail` is set.
struct NoDescriptorsDisk {
    inner: MemDisk,
    fail: AtomicBool,
}

impl Disk for NoDescriptorsDisk {
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn DiskFile>> {
        self.inner.open(path, create)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            const EMFILE: i32 = 24;
            return Err(strata_storage::disk::dir_open_error(
                std::io::Error::from_raw_os_error(EMFILE),
            ));
        }
        self.inner.sync_dir(dir)
    }
}

/// Out of file descriptors, a directory fsync cannot even open its directory: that fails the
/// topic creation (an error the client can retry), it does not abort the broker as a failed
/// fsync would; once descriptors are back, the same creation succeeds.
#[tokio::test]
async fn a_directory_that_cannot_be_opened_fails_the_request_not_the_broker() {
    let disk = Arc::new(NoDescriptorsDisk {
        inner: MemDisk::new(),
        fail: AtomicBool::new(false),
    });
    let config = BrokerConfig {
        data_dir: "/data".into(),
        ..BrokerConfig::default()
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let disk_dyn: Arc<dyn Disk> = disk.clone();
    let broker = Broker::open(config, disk_dyn, clock)
        .await
        .expect("broker opens");
    disk.fail.store(true, Ordering::SeqCst);
    let refused = broker.create_topic("later", 1, TopicConfig::default(), false);
    assert!(refused.is_err(), "the creation fails");
    assert!(broker.topic("later").is_none());
    disk.fail.store(false, Ordering::SeqCst);
    let created = broker.create_topic("later", 1, TopicConfig::default(), false);
    assert!(created.is_ok(), "{:?}", created.err());
    assert!(broker.topic("later").is_some());
    broker.shutdown().await.expect("shutdown");
}
