//! Topic admin: CreatePartitions, DeleteRecords, topic deletion that never lets a re-created
//! topic see old data (crashes included), failed creates that leave nothing behind, and admin
//! work that does not stop the broker from answering other clients.

mod broker_util;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_util::{batch, Conn, TestBroker};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, FetchRequest, FetchResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use strata_cluster::{Broker, BrokerConfig};
use strata_storage::{Clock, Disk, MemDisk, RealDisk, SystemClock};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create(conn: &mut Conn, topic: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            )])
        .with_timeout_ms(60_000);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request).await;
    response.topics[0].error_code
}

async fn delete(conn: &mut Conn, topic: &str) -> i16 {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![name(topic)])
        .with_timeout_ms(5000);
    let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 4, &request).await;
    response.responses[0].error_code
}

/// Produces one batch of `values`; returns (error code, base offset).
async fn produce(conn: &mut Conn, topic: &str, partition: i32, values: &[&[u8]]) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch(values, None)))])]);
    let response: ProduceResponse = conn.call(ApiKey::Produce, 9, &request).await;
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Fetches from `offset`: (error code, log start offset, values).
async fn fetch(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (i16, i64, Vec<Vec<u8>>) {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = conn.call(ApiKey::Fetch, 12, &request).await;
    let p = &response.responses[0].partitions[0];
    let mut records = p.records.clone().unwrap_or_default();
    let values = RecordBatchDecoder::decode_all(&mut records)
        .expect("decode")
        .into_iter()
        .flat_map(|set| set.records)
        .filter(|r| r.offset >= offset)
        .map(|r| r.value.map(|v| v.to_vec()).unwrap_or_default())
        .collect();
    (p.error_code, p.log_start_offset, values)
}

/// ListOffsets earliest (-2) of partition 0.
async fn earliest(conn: &mut Conn, topic: &str) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
    let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 7, &request).await;
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

async fn partition_count(conn: &mut Conn, topic: &str) -> usize {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic)))
        ]))
        .with_allow_auto_topic_creation(false);
    let response: MetadataResponse = conn.call(ApiKey::Metadata, 12, &request).await;
    assert_eq!(response.topics[0].error_code, 0);
    response.topics[0].partitions.len()
}

async fn create_partitions(
    conn: &mut Conn,
    topic: &str,
    count: i32,
    assignments: Option<Vec<i32>>,
    validate_only: bool,
) -> i16 {
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name(topic))
            .with_count(count)
            .with_assignments(assignments.map(|brokers| {
                brokers
                    .into_iter()
                    .map(|b| {
                        CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(b)])
                    })
                    .collect()
            }))])
        .with_timeout_ms(5000)
        .with_validate_only(validate_only);
    let response: CreatePartitionsResponse = conn.call(ApiKey::CreatePartitions, 3, &request).await;
    assert_eq!(response.results[0].name, name(topic));
    response.results[0].error_code
}

/// DeleteRecords of partition 0 before `offset`: (error code, low watermark).
async fn delete_records(conn: &mut Conn, topic: &str, offset: i64) -> (i16, i64) {
    let request = DeleteRecordsRequest::default()
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])])
        .with_timeout_ms(5000);
    let response: DeleteRecordsResponse = conn.call(ApiKey::DeleteRecords, 2, &request).await;
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

fn entries(disk: &MemDisk) -> Vec<String> {
    disk.list(Path::new("/data")).unwrap()
}

/// Waits (up to 5 s) until no entry of the data dir starts with `prefix`.
async fn wait_gone(disk: &MemDisk, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while entries(disk).iter().any(|e| e.starts_with(prefix)) {
        assert!(
            Instant::now() < deadline,
            "still there: {:?}",
            entries(disk)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// CreatePartitions grows a topic (validate_only changes nothing), refuses to shrink it or to
/// keep its count, refuses assignments to another broker and the internal offsets topic; the
/// new partitions take writes at once, show in Metadata and survive a restart.
#[tokio::test]
async fn create_partitions_grows_a_topic_durably() {
    let disk = Arc::new(MemDisk::new());
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    assert_eq!(create(&mut conn, "grow", 1, &[]).await, 0);
    assert_eq!(produce(&mut conn, "grow", 0, &[b"zero"]).await, (0, 0));

    assert_eq!(create_partitions(&mut conn, "grow", 3, None, true).await, 0);
    assert_eq!(partition_count(&mut conn, "grow").await, 1, "validate_only");
    let invalid_partitions = ResponseError::InvalidPartitions.code();
    assert_eq!(
        create_partitions(&mut conn, "grow", 1, None, false).await,
        invalid_partitions
    );
    assert_eq!(
        create_partitions(&mut conn, "grow", 3, Some(vec![1, 1]), false).await,
        ResponseError::InvalidReplicaAssignment.code(),
        "only this broker holds replicas"
    );
    let node = broker.broker.node_id();
    assert_eq!(
        create_partitions(&mut conn, "grow", 3, Some(vec![node, node]), false).await,
        0
    );
    assert_eq!(partition_count(&mut conn, "grow").await, 3);
    assert_eq!(
        create_partitions(&mut conn, "grow", 2, None, false).await,
        invalid_partitions
    );
    assert_eq!(
        create_partitions(&mut conn, "grow", 3, None, false).await,
        invalid_partitions
    );
    assert_eq!(
        create_partitions(&mut conn, "missing", 3, None, false).await,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        create_partitions(&mut conn, "__consumer_offsets", 60, None, false).await,
        ResponseError::InvalidRequest.code()
    );
    assert_eq!(produce(&mut conn, "grow", 2, &[b"two"]).await, (0, 0));
    broker.stop().await;

    disk.crash(None);
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    assert_eq!(partition_count(&mut conn, "grow").await, 3);
    assert_eq!(
        fetch(&mut conn, "grow", 2, 0).await.2,
        vec![b"two".to_vec()]
    );
    assert_eq!(
        fetch(&mut conn, "grow", 0, 0).await.2,
        vec![b"zero".to_vec()]
    );
    broker.stop().await;
}

/// DeleteRecords moves the log start: fetches below it are OFFSET_OUT_OF_RANGE, ListOffsets
/// earliest and Fetch's log start report it, offsets above the high watermark are refused, -1
/// means the high watermark, the start survives a crash, and compacted topics refuse it.
#[tokio::test]
async fn delete_records_moves_the_log_start_durably() {
    let disk = Arc::new(MemDisk::new());
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    assert_eq!(
        create(&mut conn, "trim", 1, &[("segment.bytes", "200")]).await,
        0
    );
    for i in 0..10u8 {
        assert_eq!(
            produce(&mut conn, "trim", 0, &[&[i; 80]]).await,
            (0, i64::from(i))
        );
    }
    let segments_before = disk.list(Path::new("/data/trim-0")).unwrap().len();

    assert_eq!(delete_records(&mut conn, "trim", 4).await, (0, 4));
    assert_eq!(earliest(&mut conn, "trim").await, 4);
    let (code, _, _) = fetch(&mut conn, "trim", 0, 2).await;
    assert_eq!(code, ResponseError::OffsetOutOfRange.code());
    let (code, log_start, values) = fetch(&mut conn, "trim", 0, 4).await;
    assert_eq!((code, log_start), (0, 4));
    assert_eq!(values[0], vec![4u8; 80]);
    assert!(
        disk.list(Path::new("/data/trim-0")).unwrap().len() < segments_before,
        "segments below the new start are deleted"
    );
    assert_eq!(
        delete_records(&mut conn, "trim", 11).await,
        (ResponseError::OffsetOutOfRange.code(), -1)
    );
    assert_eq!(
        delete_records(&mut conn, "trim", 2).await,
        (0, 4),
        "never moves back"
    );
    assert_eq!(delete_records(&mut conn, "trim", -1).await, (0, 10));
    assert_eq!(produce(&mut conn, "trim", 0, &[b"after"]).await, (0, 10));

    assert_eq!(
        create(&mut conn, "kept", 1, &[("cleanup.policy", "compact")]).await,
        0
    );
    assert_eq!(
        delete_records(&mut conn, "kept", 0).await,
        (ResponseError::PolicyViolation.code(), -1)
    );
    assert_eq!(
        delete_records(&mut conn, "missing", 0).await,
        (ResponseError::UnknownTopicOrPartition.code(), -1)
    );
    drop(conn);
    disk.crash(None);
    let restarted = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = restarted.connect().await;
    assert_eq!(earliest(&mut conn, "trim").await, 10);
    assert_eq!(
        fetch(&mut conn, "trim", 0, 10).await.2,
        vec![b"after".to_vec()]
    );
    restarted.stop().await;
    drop(broker);
}

/// A deleted topic re-created under the same name starts empty, at once (before the old
/// dirs are removed in the background) and after restarts; the renamed dirs are removed.
#[tokio::test]
async fn a_recreated_topic_never_sees_old_data() {
    let disk = Arc::new(MemDisk::new());
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    assert_eq!(create(&mut conn, "again", 2, &[]).await, 0);
    assert_eq!(produce(&mut conn, "again", 0, &[b"old"]).await, (0, 0));
    assert_eq!(delete(&mut conn, "again").await, 0);
    assert_eq!(create(&mut conn, "again", 2, &[]).await, 0);
    assert_eq!(
        fetch(&mut conn, "again", 0, 0).await.2,
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(produce(&mut conn, "again", 0, &[b"new"]).await, (0, 0));
    wait_gone(&disk, "again-0.").await;
    broker.stop().await;
    disk.crash(None);
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    assert_eq!(
        fetch(&mut conn, "again", 0, 0).await.2,
        vec![b"new".to_vec()]
    );
    assert_eq!(delete(&mut conn, "again").await, 0);
    broker.stop().await;
    disk.crash(None);
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    assert!(broker.broker.topic("again").is_none());
    wait_gone(&disk, "again-").await;
    broker.stop().await;
}

/// A crash after a deletion's commit point (the partition dirs renamed to `-delete`, modelled
/// here by doing that step by hand) but before the topic file is removed: the start finishes
/// the deletion, removes the old data in the background, and a re-created topic is empty.
#[tokio::test]
async fn a_deletion_interrupted_by_a_crash_is_finished_at_start() {
    let disk = Arc::new(MemDisk::new());
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    assert_eq!(create(&mut conn, "half", 2, &[]).await, 0);
    assert_eq!(produce(&mut conn, "half", 0, &[b"old"]).await, (0, 0));
    let id = broker.broker.topic("half").unwrap().id();
    broker.stop().await;
    // Only partition 0 was renamed when the crash came.
    disk.rename(
        Path::new("/data/half-0"),
        &PathBuf::from(format!("/data/half-0.{}-delete", id.simple())),
    )
    .unwrap();
    disk.crash(None);

    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    assert!(
        broker.broker.topic("half").is_none(),
        "the deletion is finished"
    );
    wait_gone(&disk, "half-").await;
    let mut conn = broker.connect().await;
    assert_eq!(create(&mut conn, "half", 2, &[]).await, 0);
    assert_eq!(
        fetch(&mut conn, "half", 0, 0).await.2,
        Vec::<Vec<u8>>::new()
    );
    broker.stop().await;
}

/// A create that fails (the disk is full when the topic file is written) leaves no partition
/// dir behind, and the name can be created once there is space.
#[tokio::test]
async fn a_failed_create_removes_its_partitions() {
    let disk = Arc::new(MemDisk::new());
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    disk.set_space_bytes_max(Some(disk.used_bytes()));
    assert_eq!(
        create(&mut conn, "full", 50, &[]).await,
        ResponseError::KafkaStorageError.code()
    );
    assert!(broker.broker.topic("full").is_none());
    assert!(
        !entries(&disk).iter().any(|e| e.starts_with("full-")),
        "{:?}",
        entries(&disk)
    );
    disk.set_space_bytes_max(None);
    assert_eq!(create(&mut conn, "full", 50, &[]).await, 0);
    broker.stop().await;
}

/// CreateTopics of `partitions` partitions, waiting up to 120 s for the answer.
async fn create_slow(conn: &mut Conn, topic: &str, partitions: i32) -> i16 {
    use bytes::Buf;
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Decodable;
    use tokio::io::AsyncReadExt;
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(120_000);
    conn.send(ApiKey::CreateTopics, 7, &request).await;
    let mut frame = tokio::time::timeout(Duration::from_secs(120), async {
        let length = conn.stream.read_i32().await.expect("read length");
        let mut buf = vec![0u8; length as usize];
        conn.stream.read_exact(&mut buf).await.expect("read body");
        bytes::Bytes::from(buf)
    })
    .await
    .expect("CreateTopics answered within 120 s");
    ResponseHeader::decode(&mut frame, ApiKey::CreateTopics.response_header_version(7))
        .expect("header");
    let response = CreateTopicsResponse::decode(&mut frame, 7).expect("body");
    assert_eq!(frame.remaining(), 0);
    response.topics[0].error_code
}

/// Metadata latencies (max) seen by a second client while `work` runs on the first.
async fn max_metadata_latency_during(
    addr: std::net::SocketAddr,
    work: impl std::future::Future<Output = ()>,
) -> Duration {
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let probe = tokio::spawn(async move {
        let mut conn = Conn::connect(addr).await;
        let mut worst = Duration::ZERO;
        loop {
            let started = Instant::now();
            let _: MetadataResponse = conn
                .call(
                    ApiKey::Metadata,
                    12,
                    &MetadataRequest::default().with_topics(None),
                )
                .await;
            worst = worst.max(started.elapsed());
            tokio::select! {
                biased;
                _ = &mut done_rx => return worst,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });
    work.await;
    let _ = done_tx.send(());
    probe.await.expect("probe")
}

/// A large CreateTopics on a real disk, with a second one queued behind it from another
/// client, must not stop a third client's Metadata requests from being answered within 1 s.
/// Prints the times. 500 partitions each by default (the test stays short: closing thousands
/// of partitions at shutdown takes long too); `STRATA_ADMIN_TEST_PARTITIONS=3000` is the
/// measurement of issue 11, point 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_create_does_not_block_other_clients() {
    let partitions: i32 = std::env::var("STRATA_ADMIN_TEST_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let dir = std::env::temp_dir().join(format!(
        "strata-admin-{}-{}",
        std::process::id(),
        SystemClock::new().now_ms()
    ));
    let config = BrokerConfig {
        data_dir: dir.clone(),
        ..BrokerConfig::default()
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let broker = Broker::open(config, Arc::new(RealDisk::new()), clock)
        .await
        .expect("broker opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(strata_cluster::server::serve(
        Arc::clone(&broker),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut first = Conn::connect(addr).await;
    let mut second = Conn::connect(addr).await;
    let started = Instant::now();
    let mut times = Vec::new();
    let worst = max_metadata_latency_during(addr, async {
        let (a, b) = tokio::join!(
            async {
                let code = create_slow(&mut first, "big-a", partitions).await;
                (code, started.elapsed())
            },
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let code = create_slow(&mut second, "big-b", partitions).await;
                (code, started.elapsed())
            }
        );
        times.push(a);
        times.push(b);
    })
    .await;
    println!(
        "{partitions}-partition CreateTopics: first done after {:?}, second (queued) after \
         {:?}; slowest concurrent Metadata {:?}",
        times[0].1, times[1].1, worst
    );
    assert_eq!((times[0].0, times[1].0), (0, 0));
    assert!(worst < Duration::from_secs(1), "Metadata took {worst:?}");
    assert_eq!(
        partition_count(&mut first, "big-b").await,
        partitions as usize
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    broker.shutdown().await.unwrap();
    let _ = RealDisk::new().remove_dir_all(&dir);
}

/// The high watermark of `__consumer_offsets`-0.
fn offsets_end(broker: &TestBroker) -> i64 {
    let topic = broker
        .broker
        .topic("__consumer_offsets")
        .expect("the offsets topic exists");
    topic.partition(0).expect("partition 0").high_watermark()
}

/// Goal: internal topics are the broker's alone. A client's Produce to `__consumer_offsets`
/// (which could forge another group's offsets, or plant bytes the broker replays at every
/// start), its DeleteTopics and DeleteRecords, and CreateTopics (or Metadata auto-create) of a
/// name Kafka reserves all get INVALID_TOPIC_EXCEPTION, as from Kafka, and change nothing.
#[tokio::test]
async fn internal_topics_refuse_client_writes_creates_and_deletes() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    let invalid_topic = ResponseError::InvalidTopicException.code();
    let end = offsets_end(&broker);
    assert_eq!(
        produce(&mut conn, "__consumer_offsets", 0, &[b"forged"])
            .await
            .0,
        invalid_topic
    );
    assert_eq!(offsets_end(&broker), end, "nothing appended");
    assert_eq!(delete(&mut conn, "__consumer_offsets").await, invalid_topic);
    assert_eq!(
        delete_records(&mut conn, "__consumer_offsets", 1).await.0,
        invalid_topic
    );
    assert!(
        broker.broker.topic("__consumer_offsets").is_some(),
        "still there"
    );
    for reserved in [
        "__transaction_state",
        "__share_group_state",
        "__cluster_metadata",
    ] {
        assert_eq!(
            create(&mut conn, reserved, 1, &[]).await,
            invalid_topic,
            "{reserved}"
        );
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(reserved)))
            ]))
            .with_allow_auto_topic_creation(true);
        let response: MetadataResponse = conn.call(ApiKey::Metadata, 12, &request).await;
        assert_eq!(
            response.topics[0].error_code, invalid_topic,
            "{reserved} auto-created"
        );
        assert!(
            broker.broker.topic(reserved).is_none(),
            "{reserved} created"
        );
    }
    // Names that merely look internal are ordinary topics.
    assert_eq!(create(&mut conn, "__orders", 1, &[]).await, 0);
    assert_eq!(produce(&mut conn, "__orders", 0, &[b"ok"]).await, (0, 0));
    drop(conn);
    broker.stop().await;
}

/// Goal: a client cannot give a topic segments smaller than the broker's `segment_bytes_min`
/// (1 MiB by default, Kafka 4's minimum; 4096 here): CreateTopics and AlterConfigs get
/// INVALID_CONFIG and nothing is created or changed; values at the floor are accepted.
#[tokio::test]
async fn segment_bytes_below_the_broker_floor_is_refused() {
    let config = BrokerConfig {
        segment_bytes_min: 4096,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut conn = broker.connect().await;
    let invalid_config = ResponseError::InvalidConfig.code();
    assert_eq!(
        create(&mut conn, "tiny", 1, &[("segment.bytes", "14")]).await,
        invalid_config
    );
    assert!(broker.broker.topic("tiny").is_none());
    assert_eq!(
        create(&mut conn, "floor", 1, &[("segment.bytes", "4096")]).await,
        0
    );
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("floor"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("segment.bytes"))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_static_str("100")))]),
    ]);
    let response: IncrementalAlterConfigsResponse = conn
        .call(ApiKey::IncrementalAlterConfigs, 1, &request)
        .await;
    assert_eq!(response.responses[0].error_code, invalid_config);
    let topic = broker.broker.topic("floor").expect("floor exists");
    assert_eq!(
        topic.config().get("segment.bytes"),
        Some("4096"),
        "unchanged"
    );
    drop(conn);
    broker.stop().await;
}
