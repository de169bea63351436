//! What a broker keeps across restarts and crashes (MemDisk's crash model).

mod broker_util;

use std::path::Path;
use std::sync::Arc;

use broker_util::{batch, Conn, TestBroker};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use strata_cluster::BrokerConfig;
use strata_storage::{Disk, MemDisk};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create(conn: &mut Conn, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
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
        .with_timeout_ms(5000);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request).await;
    assert_eq!(response.topics[0].error_code, 0);
}

async fn produce(conn: &mut Conn, topic: &str, values: &[&[u8]]) -> i64 {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(values, None)))])]);
    let response: ProduceResponse = conn.call(ApiKey::Produce, 9, &request).await;
    let p = &response.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    p.base_offset
}

async fn fetch_values(conn: &mut Conn, topic: &str) -> Vec<Vec<u8>> {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = conn.call(ApiKey::Fetch, 12, &request).await;
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let mut records = p.records.clone().unwrap_or_default();
    RecordBatchDecoder::decode_all(&mut records)
        .expect("decode")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| r.value.map(|v| v.to_vec()).unwrap_or_default())
        .collect()
}

async fn producer_id(conn: &mut Conn) -> i64 {
    let response: InitProducerIdResponse = conn
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default().with_transactional_id(None),
        )
        .await;
    assert_eq!(response.error_code, 0);
    response.producer_id.0
}

async fn retention_ms(conn: &mut Conn, topic: &str) -> String {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")]))]);
    let response: DescribeConfigsResponse = conn.call(ApiKey::DescribeConfigs, 4, &request).await;
    response.results[0].configs[0]
        .value
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn topics_data_ids_and_configs_survive_a_restart() {
    let disk = Arc::new(MemDisk::new());
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    create(&mut conn, "keep", 2, &[("retention.ms", "86400000")]).await;
    assert_eq!(produce(&mut conn, "keep", &[b"one", b"two"]).await, 0);
    assert_eq!(produce(&mut conn, "keep", &[b"three"]).await, 2);
    let first_pid = producer_id(&mut conn).await;
    let cluster_id = broker.broker.cluster_id().to_string();
    let topic_id = broker.broker.topic("keep").unwrap().id();
    broker.stop().await;

    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    assert_eq!(broker.broker.cluster_id(), cluster_id);
    let topic = broker.broker.topic("keep").expect("topic reloaded");
    assert_eq!(topic.id(), topic_id);
    assert_eq!(topic.partitions().len(), 2);
    assert_eq!(retention_ms(&mut conn, "keep").await, "86400000");
    assert_eq!(
        fetch_values(&mut conn, "keep").await,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
    assert_eq!(produce(&mut conn, "keep", &[b"four"]).await, 3);
    let second_pid = producer_id(&mut conn).await;
    assert!(
        second_pid > first_pid,
        "producer ids never repeat across restarts"
    );

    // Deleting removes the partition dirs and the metadata, durably.
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("keep")])
        .with_timeout_ms(5000);
    let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 4, &request).await;
    assert_eq!(response.responses[0].error_code, 0);
    broker.stop().await;
    disk.crash(None);
    let entries = disk.list(Path::new("/data")).unwrap();
    assert!(
        !entries.iter().any(|e| e == "keep-0" || e == "keep-1"),
        "partition dirs renamed away: {entries:?}"
    );
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    assert!(broker.broker.topic("keep").is_none());
    // The renamed dirs are removed in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while disk
        .list(Path::new("/data"))
        .unwrap()
        .iter()
        .any(|e| e.starts_with("keep-"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "partition dirs removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn acknowledged_writes_survive_a_power_loss() {
    let disk = Arc::new(MemDisk::new());
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    create(&mut conn, "durable", 1, &[]).await;
    for i in 0..20u8 {
        produce(&mut conn, "durable", &[&[i; 100]]).await;
    }
    let first_pid = producer_id(&mut conn).await;
    let cluster_id = broker.broker.cluster_id().to_string();
    // Power loss while the broker runs: no shutdown, no final flush.
    disk.crash(None);
    drop(conn);
    let restarted = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = restarted.connect().await;
    assert_eq!(restarted.broker.cluster_id(), cluster_id);
    let values = fetch_values(&mut conn, "durable").await;
    assert_eq!(values.len(), 20, "every acks=all write survived");
    for (i, value) in values.iter().enumerate() {
        assert_eq!(value, &vec![i as u8; 100]);
    }
    assert!(producer_id(&mut conn).await > first_pid);
    restarted.stop().await;
    drop(broker);
}

#[tokio::test]
async fn a_corrupt_partition_goes_offline_and_the_rest_serves() {
    let disk = Arc::new(MemDisk::new());
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    create(&mut conn, "damaged", 1, &[]).await;
    create(&mut conn, "healthy", 1, &[]).await;
    for _ in 0..3 {
        produce(&mut conn, "damaged", &[b"0123456789abcdef"]).await;
    }
    produce(&mut conn, "healthy", &[b"fine"]).await;
    broker.stop().await;

    // Flip bytes inside the first batch's records (covered by its CRC), with valid batches after.
    let segment = Path::new("/data/damaged-0").join(strata_storage::segment_file_name(0, "log"));
    disk.corrupt(&segment, 70, &[0xde, 0xad]).expect("corrupt");

    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    let damaged = broker.broker.topic("damaged").expect("topic still known");
    assert!(damaged.partitions()[0].offline_reason().is_some());
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("damaged"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(&[b"x"], None)))])]);
    let response: ProduceResponse = conn.call(ApiKey::Produce, 9, &request).await;
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        kafka_protocol::ResponseError::KafkaStorageError.code()
    );
    let metadata: kafka_protocol::messages::MetadataResponse = conn
        .call(
            ApiKey::Metadata,
            12,
            &kafka_protocol::messages::MetadataRequest::default().with_topics(None),
        )
        .await;
    let damaged_meta = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "damaged"))
        .unwrap();
    assert_eq!(
        damaged_meta.partitions[0].error_code,
        kafka_protocol::ResponseError::LeaderNotAvailable.code()
    );
    assert_eq!(
        fetch_values(&mut conn, "healthy").await,
        vec![b"fine".to_vec()]
    );
    broker.stop().await;
}

/// Goal: with `FlushPolicy::Never` (benchmarks) nothing is fsynced, so a power loss may lose
/// records — but the broker must still come back up (its recovery point must not claim data
/// that was never synced), keep serving, and keep offsets dense.
#[tokio::test]
async fn flush_never_loses_unsynced_data_on_power_loss_but_restarts_cleanly() {
    let disk = Arc::new(MemDisk::new());
    let config = BrokerConfig {
        flush: strata_cluster::FlushPolicy::Never,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config.clone(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    // Tiny segments so that rolls (which write the recovery point) happen.
    create(&mut conn, "volatile", 1, &[("segment.bytes", "1024")]).await;
    for i in 0..40u8 {
        produce(&mut conn, "volatile", &[&[i; 100]]).await;
    }
    disk.crash(Some(7));
    drop(conn);
    let restarted = TestBroker::start_with(config, Arc::clone(&disk)).await;
    assert!(
        restarted.broker.topic("volatile").is_some(),
        "the topic's metadata was fsynced at creation"
    );
    let mut conn = restarted.connect().await;
    let kept = fetch_values(&mut conn, "volatile").await;
    for (i, value) in kept.iter().enumerate() {
        assert_eq!(
            value,
            &vec![i as u8; 100],
            "what survives is a prefix, in order"
        );
    }
    assert_eq!(
        produce(&mut conn, "volatile", &[b"after"]).await,
        kept.len() as i64,
        "new records continue densely after what survived"
    );
    restarted.stop().await;
    drop(broker);
}
