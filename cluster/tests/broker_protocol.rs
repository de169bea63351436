//! The broker over a raw TCP connection: every request is encoded with kafka-protocol.

mod broker_util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use broker_util::{batch, Conn, TestBroker};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource as IncResource, AlterableConfig as IncConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    alter_configs_request, AlterConfigsRequest, AlterConfigsResponse, ApiKey, ApiVersionsRequest,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, FetchResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use strata_cluster::{BrokerConfig, FlushPolicy};
use strata_storage::MemDisk;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn creatable(
    topic: &str,
    partitions: i32,
    replication: i16,
    configs: &[(&str, &str)],
) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(replication)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        )
}

async fn create_topics(
    conn: &mut Conn,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
) -> Vec<(String, i16)> {
    let request = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(5000)
        .with_validate_only(validate_only);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request).await;
    response
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.error_code))
        .collect()
}

async fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) {
    let result = create_topics(conn, vec![creatable(topic, partitions, -1, &[])], false).await;
    assert_eq!(result, vec![(topic.to_string(), 0)]);
}

fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// Produces one batch; returns (error code, base offset).
async fn produce(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> (i16, i64) {
    let response: ProduceResponse = conn
        .call(
            ApiKey::Produce,
            9,
            &produce_request(topic, partition, records, acks),
        )
        .await;
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(50 * 1024 * 1024)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1024 * 1024)])])
}

/// Fetches; returns (error code, high watermark, values).
async fn fetch(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> (i16, i64, Vec<(i64, Vec<u8>)>) {
    let response: FetchResponse = conn
        .call(
            ApiKey::Fetch,
            12,
            &fetch_request(topic, partition, offset, max_wait_ms, 1),
        )
        .await;
    assert_eq!(response.error_code, 0);
    assert_eq!(response.session_id, 0);
    let p = &response.responses[0].partitions[0];
    let mut values = Vec::new();
    if let Some(records) = &p.records {
        let mut buf = records.clone();
        for set in RecordBatchDecoder::decode_all(&mut buf).expect("decode fetched batches") {
            for record in set.records {
                values.push((
                    record.offset,
                    record.value.map(|v| v.to_vec()).unwrap_or_default(),
                ));
            }
        }
    }
    (p.error_code, p.high_watermark, values)
}

async fn list_offset(conn: &mut Conn, topic: &str, timestamp: i64) -> (i16, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 7, &request).await;
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

async fn metadata(
    conn: &mut Conn,
    version: i16,
    topics: Option<&[&str]>,
    auto_create: bool,
) -> MetadataResponse {
    let mut request = MetadataRequest::default().with_topics(topics.map(|ts| {
        ts.iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
            .collect()
    }));
    if version >= 4 {
        request = request.with_allow_auto_topic_creation(auto_create);
    }
    conn.call(ApiKey::Metadata, version, &request).await
}

async fn assert_broker_serves(broker: &TestBroker) {
    let mut conn = broker.connect().await;
    let response: ApiVersionsResponse = conn
        .call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
        .await;
    assert_eq!(response.error_code, 0);
}

#[tokio::test]
async fn api_versions_lists_ranges_without_tagged_extras() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    for version in 0..=3 {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let response: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, version, &request).await;
        assert_eq!(response.error_code, 0);
        assert!(response.supported_features.is_empty());
        assert!(response.finalized_features.is_empty());
        assert_eq!(response.finalized_features_epoch, -1);
        let produce = response
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Produce as i16)
            .expect("produce listed");
        assert_eq!((produce.min_version, produce.max_version), (3, 9));
        let fetch = response
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Fetch as i16)
            .unwrap();
        assert_eq!((fetch.min_version, fetch.max_version), (4, 12));
        // Every API of the table, once (so the count follows the table as APIs are added).
        assert_eq!(
            response.api_keys.len(),
            strata_cluster::handlers::SUPPORTED_APIS.len()
        );
        assert!(response
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::DescribeCluster as i16 && k.max_version == 2));
        for api in [ApiKey::DeleteRecords, ApiKey::CreatePartitions] {
            assert!(
                response.api_keys.iter().any(|k| k.api_key == api as i16),
                "{api:?} listed"
            );
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn api_versions_too_new_answers_unsupported_version_in_a_v0_body() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    // v4 exists in Kafka 4.1 but Strata serves 0-3.
    let correlation_id = conn
        .send(ApiKey::ApiVersions, 4, &ApiVersionsRequest::default())
        .await;
    let (got, response): (i32, ApiVersionsResponse) = conn.recv(ApiKey::ApiVersions, 0).await;
    assert_eq!(got, correlation_id);
    assert_eq!(
        response.error_code,
        ResponseError::UnsupportedVersion.code()
    );
    assert!(response
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 3));
    // The client retries on the same connection.
    let retry: ApiVersionsResponse = conn
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    assert_eq!(retry.error_code, 0);
    broker.stop().await;
}

#[tokio::test]
async fn create_topics_validates_like_kafka() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "orders", 3).await;
    let results = create_topics(
        &mut conn,
        vec![
            creatable("orders", 1, -1, &[]),
            creatable("bad/name", 1, -1, &[]),
            creatable("..", 1, -1, &[]),
            creatable(&"x".repeat(250), 1, -1, &[]),
            creatable("rf3", 1, 3, &[]),
            creatable("zero", 0, 1, &[]),
            creatable("badconf", 1, 1, &[("retention.ms", "soon")]),
            creatable("unknownconf", 1, 1, &[("no.such.config", "1")]),
            creatable(
                "withconf",
                2,
                1,
                &[("retention.ms", "60000"), ("segment.bytes", "1048576")],
            ),
        ],
        false,
    )
    .await;
    let codes: Vec<i16> = results.iter().map(|(_, c)| *c).collect();
    assert_eq!(
        codes,
        vec![
            ResponseError::TopicAlreadyExists.code(),
            ResponseError::InvalidTopicException.code(),
            ResponseError::InvalidTopicException.code(),
            ResponseError::InvalidTopicException.code(),
            ResponseError::InvalidReplicationFactor.code(),
            ResponseError::InvalidPartitions.code(),
            ResponseError::InvalidConfig.code(),
            ResponseError::InvalidConfig.code(),
            0,
        ]
    );
    // validate_only creates nothing.
    let results = create_topics(&mut conn, vec![creatable("dry", 4, 1, &[])], true).await;
    assert_eq!(results, vec![("dry".to_string(), 0)]);
    assert!(broker.broker.topic("dry").is_none());

    let response = metadata(&mut conn, 12, None, false).await;
    let names: Vec<String> = response
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().0.to_string())
        .collect();
    assert_eq!(names, vec!["orders".to_string(), "withconf".to_string()]);
    let orders = &response.topics[0];
    assert_eq!(orders.partitions.len(), 3);
    assert!(!orders.topic_id.is_nil());
    for p in &orders.partitions {
        assert_eq!(p.leader_id.0, 0);
        assert_eq!(
            p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(), vec![0]);
    }
    assert_eq!(response.brokers.len(), 1);
    assert_eq!(response.brokers[0].port, broker.addr.port() as i32);
    assert_eq!(response.brokers[0].host.as_str(), "127.0.0.1");
    assert_eq!(response.controller_id.0, 0);
    let cluster_id = response.cluster_id.clone().expect("cluster id");
    assert_eq!(cluster_id.len(), 22);
    assert_eq!(cluster_id.as_str(), broker.broker.cluster_id());
    broker.stop().await;
}

#[tokio::test]
async fn metadata_auto_creates_only_when_allowed() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    let response = metadata(&mut conn, 9, Some(&["auto"]), true).await;
    assert_eq!(response.topics[0].error_code, 0);
    assert_eq!(response.topics[0].partitions.len(), 1);
    let response = metadata(&mut conn, 9, Some(&["manual"]), false).await;
    assert_eq!(
        response.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let response = metadata(&mut conn, 9, Some(&["bad name"]), true).await;
    assert_eq!(
        response.topics[0].error_code,
        ResponseError::InvalidTopicException.code()
    );
    // v0: an empty topic list means all topics.
    let response = metadata(&mut conn, 0, Some(&[]), false).await;
    assert_eq!(response.topics.len(), 1);
    // v1+: an empty topic list means none.
    let response = metadata(&mut conn, 1, Some(&[]), false).await;
    assert_eq!(response.topics.len(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn produce_then_fetch_round_trips() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "events", 2).await;
    let (code, base) = produce(&mut conn, "events", 1, batch(&[b"a", b"b", b"c"], None), -1).await;
    assert_eq!((code, base), (0, 0));
    let (code, base) = produce(&mut conn, "events", 1, batch(&[b"d", b"e"], None), 1).await;
    assert_eq!((code, base), (0, 3));
    // acks=1 answers before the fsync; the next acks=-1 answer covers it too.
    let (code, base) = produce(&mut conn, "events", 1, batch(&[b"f"], None), -1).await;
    assert_eq!((code, base), (0, 5));

    let (code, high_watermark, values) = fetch(&mut conn, "events", 1, 0, 0).await;
    assert_eq!(code, 0);
    assert_eq!(high_watermark, 6);
    let expected: Vec<(i64, Vec<u8>)> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.as_bytes().to_vec()))
        .collect();
    assert_eq!(values, expected);

    // From the middle of the log: whole batches starting with the one holding the offset.
    let (_, _, values) = fetch(&mut conn, "events", 1, 4, 0).await;
    assert_eq!(
        values.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );

    // At the high watermark: empty after max_wait.
    let started = Instant::now();
    let (code, _, values) = fetch(&mut conn, "events", 1, 6, 200).await;
    assert_eq!(code, 0);
    assert!(values.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "long poll waited"
    );

    // Past the high watermark.
    let (code, _, _) = fetch(&mut conn, "events", 1, 7, 0).await;
    assert_eq!(code, ResponseError::OffsetOutOfRange.code());
    let (code, _, _) = fetch(&mut conn, "events", 0, -5, 0).await;
    assert_eq!(code, ResponseError::OffsetOutOfRange.code());

    // Unknown partition / topic.
    let (code, _) = produce(&mut conn, "events", 2, batch(&[b"x"], None), -1).await;
    assert_eq!(code, ResponseError::UnknownTopicOrPartition.code());
    let (code, _) = produce(&mut conn, "nope", 0, batch(&[b"x"], None), -1).await;
    assert_eq!(code, ResponseError::UnknownTopicOrPartition.code());
    assert!(
        broker.broker.topic("nope").is_none(),
        "produce does not auto-create"
    );
    let (code, _, _) = fetch(&mut conn, "nope", 0, 0, 0).await;
    assert_eq!(code, ResponseError::UnknownTopicOrPartition.code());
    broker.stop().await;
}

/// Produce requests pipelined on one connection (sent without waiting, as librdkafka and the
/// Java producer do) append in the order they were sent and are answered in that order; a
/// request sent after them (here Fetch and ListOffsets) sees all of them, as in Kafka.
#[tokio::test]
async fn pipelined_produce_requests_append_and_answer_in_order() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "pipe", 1).await;
    let mut sent = Vec::new();
    for i in 0..12u8 {
        // acks=all, with an acks=1 request every third one.
        let acks = if i % 3 == 2 { 1 } else { -1 };
        let values: [&[u8]; 2] = [&[b'a' + i], &[b'A' + i]];
        let request = produce_request("pipe", 0, batch(&values, None), acks);
        sent.push(conn.send(ApiKey::Produce, 9, &request).await);
    }
    let fetch_id = conn
        .send(ApiKey::Fetch, 12, &fetch_request("pipe", 0, 0, 0, 1))
        .await;
    let mut offsets = Vec::new();
    for correlation_id in &sent {
        let (answered, response): (i32, ProduceResponse) = conn.recv(ApiKey::Produce, 9).await;
        assert_eq!(answered, *correlation_id, "answers come in request order");
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0);
        offsets.push(partition.base_offset);
    }
    assert_eq!(
        offsets,
        (0..12).map(|i| 2 * i).collect::<Vec<i64>>(),
        "appended in the order sent"
    );
    let (answered, response): (i32, FetchResponse) = conn.recv(ApiKey::Fetch, 12).await;
    assert_eq!(answered, fetch_id);
    let partition = &response.responses[0].partitions[0];
    assert_eq!(
        partition.high_watermark, 24,
        "the fetch sees every produce before it"
    );
    let mut records = partition.records.clone().expect("records");
    let values: Vec<Vec<u8>> = RecordBatchDecoder::decode_all(&mut records)
        .expect("decode")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|record| record.value.expect("value").to_vec())
        .collect();
    let expected: Vec<Vec<u8>> = (0..12u8)
        .flat_map(|i| [vec![b'a' + i], vec![b'A' + i]])
        .collect();
    assert_eq!(values, expected);
    assert_eq!(list_offset(&mut conn, "pipe", -1).await, (0, 24));
    broker.stop().await;
}

#[tokio::test]
async fn fetch_long_poll_wakes_on_new_data() {
    let broker = TestBroker::start().await;
    let mut consumer = broker.connect().await;
    let mut producer = broker.connect().await;
    create_topic(&mut producer, "poll", 1).await;
    let started = Instant::now();
    let correlation_id = consumer
        .send(ApiKey::Fetch, 12, &fetch_request("poll", 0, 0, 10_000, 1))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, _) = produce(&mut producer, "poll", 0, batch(&[b"wake"], None), 1).await;
    assert_eq!(code, 0);
    let (got, response): (i32, FetchResponse) = consumer.recv(ApiKey::Fetch, 12).await;
    assert_eq!(got, correlation_id);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken before max_wait"
    );
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 1);
    assert!(!p.records.as_ref().unwrap().is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn fetch_respects_max_bytes_but_returns_the_first_batch() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "sizes", 1).await;
    for i in 0..5u8 {
        let value = vec![i; 1000];
        let (code, _) = produce(&mut conn, "sizes", 0, batch(&[&value], None), -1).await;
        assert_eq!(code, 0);
    }
    // max_bytes smaller than one batch: still one whole batch (KIP-74).
    let request = fetch_request("sizes", 0, 0, 0, 1).with_max_bytes(10);
    let response: FetchResponse = conn.call(ApiKey::Fetch, 12, &request).await;
    let mut records = response.responses[0].partitions[0].records.clone().unwrap();
    let sets = RecordBatchDecoder::decode_all(&mut records).unwrap();
    assert_eq!(sets.len(), 1);
    // partition_max_bytes of ~2.5 batches: two batches.
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name("sizes"))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(2600)])]);
    let response: FetchResponse = conn.call(ApiKey::Fetch, 12, &request).await;
    let mut records = response.responses[0].partitions[0].records.clone().unwrap();
    assert!(records.len() <= 2600);
    let sets = RecordBatchDecoder::decode_all(&mut records).unwrap();
    assert_eq!(sets.len(), 2);
    broker.stop().await;
}

#[tokio::test]
async fn list_offsets_earliest_latest_and_by_time() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "times", 1).await;
    assert_eq!(list_offset(&mut conn, "times", -1).await, (0, 0));
    assert_eq!(
        list_offset(&mut conn, "times", -3).await,
        (0, -1),
        "empty: no max"
    );
    produce(&mut conn, "times", 0, batch(&[b"1", b"2"], None), -1).await;
    produce(&mut conn, "times", 0, batch(&[b"3"], None), -1).await;
    assert_eq!(list_offset(&mut conn, "times", -2).await, (0, 0));
    assert_eq!(list_offset(&mut conn, "times", -1).await, (0, 3));
    // Timestamps are 1_700_000_000_000 + index within the batch.
    let (code, offset) = list_offset(&mut conn, "times", 1_700_000_000_000).await;
    assert_eq!((code, offset), (0, 0));
    // Inside a batch: the record, not the batch's first offset.
    let (code, offset) = list_offset(&mut conn, "times", 1_700_000_000_001).await;
    assert_eq!((code, offset), (0, 1));
    // MAX_TIMESTAMP (-3, KIP-734): the record with the largest timestamp (1_700_000_000_001,
    // the second record of the first batch), not the last record nor a batch's first offset.
    assert_eq!(list_offset(&mut conn, "times", -3).await, (0, 1));
    let (code, offset) = list_offset(&mut conn, "times", 4_000_000_000_000).await;
    assert_eq!((code, offset), (0, -1));
    let (code, _) = list_offset(&mut conn, "missing", -1).await;
    assert_eq!(code, ResponseError::UnknownTopicOrPartition.code());
    broker.stop().await;
}

#[tokio::test]
async fn idempotent_producer_duplicates_and_gaps() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "idem", 1).await;
    let init: InitProducerIdResponse = conn
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        )
        .await;
    assert_eq!(init.error_code, 0);
    assert_eq!(init.producer_epoch, 0);
    let pid = init.producer_id.0;
    let second: InitProducerIdResponse = conn
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default().with_transactional_id(None),
        )
        .await;
    assert_ne!(second.producer_id.0, pid, "producer ids are unique");

    let first = batch(&[b"a", b"b"], Some((pid, 0, 0)));
    assert_eq!(
        produce(&mut conn, "idem", 0, first.clone(), -1).await,
        (0, 0)
    );
    assert_eq!(
        produce(&mut conn, "idem", 0, batch(&[b"c"], Some((pid, 0, 2))), -1).await,
        (0, 2)
    );
    // A retry of the first batch: success with the original offset, nothing appended.
    assert_eq!(produce(&mut conn, "idem", 0, first, -1).await, (0, 0));
    assert_eq!(list_offset(&mut conn, "idem", -1).await, (0, 3));
    // A gap in the sequence.
    let (code, _) = produce(&mut conn, "idem", 0, batch(&[b"d"], Some((pid, 0, 10))), -1).await;
    assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
    // A bumped epoch starts again at sequence 0; the old epoch is then fenced.
    assert_eq!(
        produce(&mut conn, "idem", 0, batch(&[b"e"], Some((pid, 1, 0))), -1).await,
        (0, 3)
    );
    let (code, _) = produce(&mut conn, "idem", 0, batch(&[b"f"], Some((pid, 0, 3))), -1).await;
    assert_eq!(code, ResponseError::InvalidProducerEpoch.code());

    // Transactional ids are refused with a clear, non-retriable error.
    let txn: InitProducerIdResponse = conn
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx")))),
        )
        .await;
    assert_eq!(txn.error_code, ResponseError::InvalidRequest.code());
    broker.stop().await;
}

#[tokio::test]
async fn corrupt_and_oversized_batches_are_rejected() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "bad", 1).await;
    let good = batch(&[b"hello", b"world"], None);
    let mut corrupt = BytesMut::from(&good[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let (code, _) = produce(&mut conn, "bad", 0, corrupt.freeze(), -1).await;
    assert_eq!(code, ResponseError::CorruptMessage.code());

    let big = vec![7u8; 12 * 1024 * 1024];
    let (code, _) = produce(&mut conn, "bad", 0, batch(&[&big], None), -1).await;
    assert_eq!(code, ResponseError::MessageTooLarge.code());

    let (code, _) = produce(&mut conn, "bad", 0, good.clone(), 2).await;
    assert_eq!(code, ResponseError::InvalidRequiredAcks.code());

    // Nothing of the above was appended.
    assert_eq!(list_offset(&mut conn, "bad", -1).await, (0, 0));
    assert_eq!(produce(&mut conn, "bad", 0, good, -1).await, (0, 0));
    broker.stop().await;
}

#[tokio::test]
async fn acks_zero_gets_no_response() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "fire", 1).await;
    conn.send(
        ApiKey::Produce,
        9,
        &produce_request("fire", 0, batch(&[b"x"], None), 0),
    )
    .await;
    // The next response on the connection belongs to the next request.
    let correlation_id = conn
        .send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    let (got, _): (i32, ApiVersionsResponse) = conn.recv(ApiKey::ApiVersions, 3).await;
    assert_eq!(got, correlation_id);
    // A failed acks=0 produce closes the connection, like Kafka.
    conn.send(
        ApiKey::Produce,
        9,
        &produce_request("missing", 0, batch(&[b"x"], None), 0),
    )
    .await;
    assert!(conn.is_closed().await);
    broker.stop().await;
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let broker = TestBroker::start().await;
    let mut bystander = broker.connect().await;

    // Random bytes as a frame.
    let mut conn = broker.connect().await;
    conn.send_frame(&[0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02])
        .await;
    assert!(conn.is_closed().await);
    assert_broker_serves(&broker).await;

    // A 2 GiB length prefix.
    let mut conn = broker.connect().await;
    conn.send_raw(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    assert!(conn.is_closed().await);
    // A negative length prefix.
    let mut conn = broker.connect().await;
    conn.send_raw(&[0xff, 0xff, 0xff, 0xf0]).await;
    assert!(conn.is_closed().await);
    // A frame too short for a header.
    let mut conn = broker.connect().await;
    conn.send_frame(&[0, 18]).await;
    assert!(conn.is_closed().await);

    // An unknown API key.
    let mut conn = broker.connect().await;
    let mut frame = vec![0x03, 0xe7, 0, 0, 0, 0, 0, 7, 0xff, 0xff];
    frame.extend_from_slice(&[0; 8]);
    conn.send_frame(&frame).await;
    assert!(conn.is_closed().await);
    // A Kafka API Strata does not serve (OffsetCommit).
    let mut conn = broker.connect().await;
    conn.send_frame(&[0, 8, 0, 2, 0, 0, 0, 9, 0xff, 0xff]).await;
    assert!(conn.is_closed().await);
    // An unsupported version of a served API (Metadata v13).
    let mut conn = broker.connect().await;
    conn.send(ApiKey::Metadata, 13, &MetadataRequest::default())
        .await;
    assert!(conn.is_closed().await);
    // A valid header with a truncated body.
    let mut conn = broker.connect().await;
    conn.send_frame(&[0, 3, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 5])
        .await;
    assert!(conn.is_closed().await);

    // The first connection still works, and so do new ones.
    let response: ApiVersionsResponse = bystander
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    assert_eq!(response.error_code, 0);
    assert_broker_serves(&broker).await;
    broker.stop().await;
}

#[tokio::test]
async fn full_disk_answers_kafka_storage_error() {
    let disk = Arc::new(MemDisk::new());
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "full", 1).await;
    disk.set_space_bytes_max(Some(disk.used_bytes()));
    let (code, _) = produce(&mut conn, "full", 0, batch(&[&[1u8; 4096]], None), -1).await;
    assert_eq!(code, ResponseError::KafkaStorageError.code());
    // The broker still answers other requests.
    assert_broker_serves(&broker).await;
    // Once space is back, the partition takes writes again, from the same offset.
    disk.set_space_bytes_max(None);
    let (code, base) = produce(&mut conn, "full", 0, batch(&[b"after"], None), -1).await;
    assert_eq!((code, base), (0, 0));
    let (_, high_watermark, values) = fetch(&mut conn, "full", 0, 0, 0).await;
    assert_eq!(high_watermark, 1);
    assert_eq!(values, vec![(0, b"after".to_vec())]);
    broker.stop().await;
}

fn describe_request(
    resource_type: i8,
    resource: &str,
    keys: Option<&[&str]>,
) -> DescribeConfigsRequest {
    DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(resource.to_string()))
            .with_configuration_keys(keys.map(|ks| {
                ks.iter()
                    .map(|k| StrBytes::from_string(k.to_string()))
                    .collect()
            }))])
        .with_include_synonyms(true)
}

async fn describe_topic(conn: &mut Conn, topic: &str) -> (i16, BTreeMap<String, (String, i8)>) {
    let response: DescribeConfigsResponse = conn
        .call(
            ApiKey::DescribeConfigs,
            4,
            &describe_request(2, topic, None),
        )
        .await;
    let result = &response.results[0];
    let configs = result
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                (
                    c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    c.config_source,
                ),
            )
        })
        .collect();
    (result.error_code, configs)
}

#[tokio::test]
async fn configs_describe_and_alter() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "conf", 2).await;

    let (code, configs) = describe_topic(&mut conn, "conf").await;
    assert_eq!(code, 0);
    for key in [
        "cleanup.policy",
        "segment.bytes",
        "segment.ms",
        "retention.ms",
        "retention.bytes",
        "max.message.bytes",
        "index.interval.bytes",
        "min.insync.replicas",
        "message.timestamp.type",
        "local.retention.ms",
        "local.retention.bytes",
        "remote.storage.enable",
    ] {
        let (_, source) = configs
            .get(key)
            .unwrap_or_else(|| panic!("{key} described"));
        assert_eq!(*source, 5, "{key} is a default");
    }
    assert_eq!(configs["max.message.bytes"].0, "1048588");

    // Incremental: set two, then delete one.
    let set = |key: &str, value: Option<&str>, op: i8| {
        IncConfig::default()
            .with_name(StrBytes::from_string(key.to_string()))
            .with_config_operation(op)
            .with_value(value.map(|v| StrBytes::from_string(v.to_string())))
    };
    let request =
        IncrementalAlterConfigsRequest::default().with_resources(vec![IncResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("conf"))
            .with_configs(vec![
                set("retention.ms", Some("1000"), 0),
                set("max.message.bytes", Some("100"), 0),
                set("remote.storage.enable", Some("true"), 0),
            ])]);
    let response: IncrementalAlterConfigsResponse = conn
        .call(ApiKey::IncrementalAlterConfigs, 1, &request)
        .await;
    assert_eq!(response.responses[0].error_code, 0);
    let (_, configs) = describe_topic(&mut conn, "conf").await;
    assert_eq!(configs["retention.ms"], ("1000".to_string(), 1));
    assert_eq!(configs["remote.storage.enable"], ("true".to_string(), 1));
    // The new max.message.bytes applies live.
    let (code, _) = produce(&mut conn, "conf", 0, batch(&[&[0u8; 200]], None), -1).await;
    assert_eq!(code, ResponseError::MessageTooLarge.code());

    let request =
        IncrementalAlterConfigsRequest::default().with_resources(vec![IncResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("conf"))
            .with_configs(vec![set("max.message.bytes", None, 1)])]);
    let response: IncrementalAlterConfigsResponse = conn
        .call(ApiKey::IncrementalAlterConfigs, 1, &request)
        .await;
    assert_eq!(response.responses[0].error_code, 0);
    let (code, _) = produce(&mut conn, "conf", 0, batch(&[&[0u8; 200]], None), -1).await;
    assert_eq!(code, 0);

    // Invalid values and unknown topics.
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        IncResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("conf"))
            .with_configs(vec![set("retention.ms", Some("-7"), 0)]),
        IncResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("missing"))
            .with_configs(vec![set("retention.ms", Some("10"), 0)]),
        IncResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str("0"))
            .with_configs(vec![set("num.partitions", Some("3"), 0)]),
        IncResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("conf"))
            .with_configs(vec![set("message.timestamp.type", Some("Sometimes"), 0)]),
    ]);
    let response: IncrementalAlterConfigsResponse = conn
        .call(ApiKey::IncrementalAlterConfigs, 1, &request)
        .await;
    let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        vec![
            ResponseError::InvalidConfig.code(),
            ResponseError::UnknownTopicOrPartition.code(),
            ResponseError::InvalidRequest.code(),
            ResponseError::InvalidConfig.code(),
        ]
    );
    assert!(response.responses[0].error_message.is_some());
    let (_, configs) = describe_topic(&mut conn, "conf").await;
    assert_eq!(
        configs["retention.ms"].0, "1000",
        "failed alter changed nothing"
    );

    // Legacy AlterConfigs replaces the whole override set.
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("conf"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("segment.ms"))
                .with_value(Some(StrBytes::from_static_str("3600000")))]),
    ]);
    let response: AlterConfigsResponse = conn.call(ApiKey::AlterConfigs, 2, &request).await;
    assert_eq!(response.responses[0].error_code, 0);
    let (_, configs) = describe_topic(&mut conn, "conf").await;
    assert_eq!(configs["segment.ms"], ("3600000".to_string(), 1));
    assert_eq!(
        configs["retention.ms"].1, 5,
        "replaced overrides are back to default"
    );

    // Selected keys; unknown topic; broker resource.
    let response: DescribeConfigsResponse = conn
        .call(
            ApiKey::DescribeConfigs,
            1,
            &describe_request(2, "conf", Some(&["segment.ms", "nope"])),
        )
        .await;
    assert_eq!(response.results[0].configs.len(), 1);
    let (code, _) = describe_topic(&mut conn, "missing").await;
    assert_eq!(code, ResponseError::UnknownTopicOrPartition.code());
    let response: DescribeConfigsResponse = conn
        .call(ApiKey::DescribeConfigs, 4, &describe_request(4, "0", None))
        .await;
    assert_eq!(response.results[0].error_code, 0);
    assert!(response.results[0].configs.iter().all(|c| c.read_only));
    assert!(response.results[0]
        .configs
        .iter()
        .any(|c| c.name.as_str() == "num.partitions"));
    broker.stop().await;
}

#[tokio::test]
async fn delete_topics_by_name_and_id() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "gone", 2).await;
    create_topic(&mut conn, "gone-too", 1).await;
    produce(&mut conn, "gone", 1, batch(&[b"x"], None), -1).await;
    let id = broker.broker.topic("gone-too").unwrap().id();

    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("gone"), name("never")])
        .with_timeout_ms(5000);
    let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 4, &request).await;
    let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        vec![0, ResponseError::UnknownTopicOrPartition.code()]
    );

    let request = DeleteTopicsRequest::default()
        .with_topics(vec![DeleteTopicState::default()
            .with_name(None)
            .with_topic_id(id)])
        .with_timeout_ms(5000);
    let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 6, &request).await;
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(
        response.responses[0].name.as_ref().unwrap().0.as_str(),
        "gone-too"
    );

    let response = metadata(&mut conn, 12, None, false).await;
    assert!(response.topics.is_empty());
    let (code, _) = produce(&mut conn, "gone", 1, batch(&[b"x"], None), -1).await;
    assert_eq!(code, ResponseError::UnknownTopicOrPartition.code());
    // The name can be reused, and starts empty.
    create_topic(&mut conn, "gone", 2).await;
    assert_eq!(
        produce(&mut conn, "gone", 1, batch(&[b"y"], None), -1).await,
        (0, 0)
    );
    broker.stop().await;
}

#[tokio::test]
async fn every_flush_policy_acknowledges_and_publishes() {
    for flush in [
        FlushPolicy::Ack,
        FlushPolicy::IntervalMs(20),
        FlushPolicy::Never,
    ] {
        let config = BrokerConfig {
            flush,
            ..BrokerConfig::default()
        };
        let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
        let mut conn = broker.connect().await;
        create_topic(&mut conn, "flush", 1).await;
        for i in 0..5i64 {
            assert_eq!(
                produce(&mut conn, "flush", 0, batch(&[b"v"], None), -1).await,
                (0, i),
                "{flush:?}"
            );
        }
        let (_, high_watermark, values) = fetch(&mut conn, "flush", 0, 0, 0).await;
        assert_eq!((high_watermark, values.len()), (5, 5), "{flush:?}");
        broker.stop().await;
    }
}

#[tokio::test]
async fn retention_task_applies_altered_configs() {
    let config = BrokerConfig {
        retention_check_interval_ms: 50,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut conn = broker.connect().await;
    let results = create_topics(
        &mut conn,
        vec![creatable("shrink", 1, 1, &[("segment.bytes", "1024")])],
        false,
    )
    .await;
    assert_eq!(results[0].1, 0);
    for _ in 0..20 {
        let (code, _) = produce(&mut conn, "shrink", 0, batch(&[&[9u8; 300]], None), -1).await;
        assert_eq!(code, 0);
    }
    assert_eq!(list_offset(&mut conn, "shrink", -2).await, (0, 0));
    // Keep at most ~one segment: older segments go at the next retention check.
    let request =
        IncrementalAlterConfigsRequest::default().with_resources(vec![IncResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("shrink"))
            .with_configs(vec![IncConfig::default()
                .with_name(StrBytes::from_static_str("retention.bytes"))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_static_str("1")))])]);
    let response: IncrementalAlterConfigsResponse = conn
        .call(ApiKey::IncrementalAlterConfigs, 1, &request)
        .await;
    assert_eq!(response.responses[0].error_code, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut earliest = 0;
    while Instant::now() < deadline {
        earliest = list_offset(&mut conn, "shrink", -2).await.1;
        if earliest > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(earliest > 0, "retention deleted old segments");
    assert_eq!(list_offset(&mut conn, "shrink", -1).await, (0, 20));
    let (code, _, _) = fetch(&mut conn, "shrink", 0, 0, 0).await;
    assert_eq!(code, ResponseError::OffsetOutOfRange.code());
    let (code, _, values) = fetch(&mut conn, "shrink", 0, earliest, 0).await;
    assert_eq!(code, 0);
    assert_eq!(values.first().map(|v| v.0), Some(earliest));
    broker.stop().await;
}

#[tokio::test]
async fn consumers_see_only_durable_offsets() {
    // The flusher waits an hour: appended records stay above the high watermark.
    let config = BrokerConfig {
        flush: FlushPolicy::IntervalMs(3_600_000),
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "lag", 1).await;
    assert_eq!(
        produce(&mut conn, "lag", 0, batch(&[b"x"], None), 1).await,
        (0, 0)
    );
    let (code, high_watermark, values) = fetch(&mut conn, "lag", 0, 0, 0).await;
    assert_eq!((code, high_watermark), (0, 0));
    assert!(values.is_empty(), "not durable, not visible");
    assert_eq!(list_offset(&mut conn, "lag", -1).await, (0, 0));
    // Between the high watermark and the log end: empty, not out of range (like Kafka).
    let (code, _, values) = fetch(&mut conn, "lag", 0, 1, 0).await;
    assert_eq!(code, 0);
    assert!(values.is_empty());
    let (code, _, _) = fetch(&mut conn, "lag", 0, 2, 0).await;
    assert_eq!(code, ResponseError::OffsetOutOfRange.code());
    broker.stop().await;
}
