//! Kafka's topic configs through the wire protocol: every Kafka 4.x topic config is accepted and
//! described, and the ones with a behaviour users rely on behave as in Kafka —
//! `message.timestamp.type=LogAppendTime`, broker-side recompression (`compression.type`), the
//! timestamp bounds (`message.timestamp.before.max.ms` / `after.max.ms`), per-record errors
//! (KIP-467) and the compaction settings (`min.cleanable.dirty.ratio`, `min.compaction.lag.ms`,
//! `max.compaction.lag.ms`).

mod broker_util;

use std::collections::BTreeMap;
use std::sync::Arc;

use broker_util::{Conn, TestBroker};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as WireCompression, Record, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType as WireTimestampType,
};
use kafka_protocol::ResponseError;
use strata_cluster::BrokerConfig;
use strata_storage::batch::batches;
use strata_storage::tier::records::{decode_batch, RecordRow};
use strata_storage::{BatchHeader, Compression, MemDisk, TimestampType};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Creates `topic` (1 partition) with `configs`; returns the error code and message.
async fn create(conn: &mut Conn, topic: &str, configs: &[(&str, &str)]) -> (i16, Option<String>) {
    let creatable = CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(1)
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
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![creatable])
        .with_timeout_ms(5000);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request).await;
    let result = &response.topics[0];
    (
        result.error_code,
        result.error_message.as_ref().map(|m| m.to_string()),
    )
}

async fn create_ok(conn: &mut Conn, topic: &str, configs: &[(&str, &str)]) {
    let (code, message) = create(conn, topic, configs).await;
    assert_eq!(code, 0, "create {topic} {configs:?}: {message:?}");
}

/// Describes every config of `topic`: name -> (value, source).
async fn describe(conn: &mut Conn, topic: &str) -> BTreeMap<String, (String, i8)> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None)]);
    let response: DescribeConfigsResponse = conn.call(ApiKey::DescribeConfigs, 4, &request).await;
    assert_eq!(response.results[0].error_code, 0);
    response.results[0]
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
        .collect()
}

/// One record to encode: key, value, timestamp.
type Spec<'a> = (Option<&'a str>, &'a str, i64);

/// One v2 batch of `records` with `compression`, optionally from an idempotent producer.
fn encode(
    records: &[Spec],
    compression: WireCompression,
    producer: Option<(i64, i16, i32)>,
) -> Bytes {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value, timestamp))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: WireTimestampType::Creation,
            offset: i as i64,
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: *timestamp,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// Produces `records` to partition 0 of `topic` (v9, acks=all); the partition's answer.
async fn produce(conn: &mut Conn, topic: &str, records: Bytes) -> PartitionProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let mut response: ProduceResponse = conn.call(ApiKey::Produce, 9, &request).await;
    response.responses.remove(0).partition_responses.remove(0)
}

/// Fetches everything from `offset` on: the raw batches (CRC-checked by kafka-protocol's
/// decoder) with their headers and rows as a consumer reads them.
async fn fetch(conn: &mut Conn, topic: &str, offset: i64) -> Vec<(BatchHeader, Vec<RecordRow>)> {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(50 * 1024 * 1024)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(10 * 1024 * 1024)])]);
    let response: FetchResponse = conn.call(ApiKey::Fetch, 12, &request).await;
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    let Some(records) = partition.records.clone() else {
        return Vec::new();
    };
    // kafka-protocol's decoder checks every batch's CRC.
    RecordBatchDecoder::decode_all(&mut records.clone()).expect("fetched batches decode");
    batches(&records)
        .map(|item| {
            let (header, bytes) = item.expect("a whole batch");
            let (_, rows) = decode_batch(bytes).expect("rows");
            (header, rows)
        })
        .collect()
}

fn values(fetched: &[(BatchHeader, Vec<RecordRow>)]) -> Vec<(Option<String>, String)> {
    fetched
        .iter()
        .flat_map(|(_, rows)| rows.iter())
        .map(|row| {
            (
                row.key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(row.value.as_deref().unwrap_or_default()).into_owned(),
            )
        })
        .collect()
}

/// Goal: every topic config Kafka 4.x defines is accepted at creation and described back as set
/// on the topic (tools like Kafka Connect, Streams and Terraform create topics with them); values
/// Kafka refuses, and configs Kafka 4.0 removed, are INVALID_CONFIG with Kafka's message.
#[tokio::test]
async fn every_kafka_topic_config_is_accepted_and_described() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    let configs: &[(&str, &str)] = &[
        ("cleanup.policy", "compact,delete"),
        ("compression.type", "lz4"),
        ("compression.gzip.level", "5"),
        ("compression.lz4.level", "12"),
        ("compression.zstd.level", "-5"),
        ("delete.retention.ms", "1000"),
        ("file.delete.delay.ms", "0"),
        ("flush.messages", "1"),
        ("flush.ms", "1000"),
        ("follower.replication.throttled.replicas", "0:0,1:0"),
        ("index.interval.bytes", "8192"),
        ("leader.replication.throttled.replicas", "*"),
        ("local.retention.bytes", "-2"),
        ("local.retention.ms", "-2"),
        ("max.compaction.lag.ms", "600000"),
        ("max.message.bytes", "2000000"),
        ("message.timestamp.after.max.ms", "60000"),
        ("message.timestamp.before.max.ms", "86400000"),
        ("message.timestamp.type", "LogAppendTime"),
        ("min.cleanable.dirty.ratio", "0.25"),
        ("min.compaction.lag.ms", "1000"),
        ("min.insync.replicas", "1"),
        ("preallocate", "true"),
        ("remote.log.copy.disable", "false"),
        ("remote.log.delete.on.disable", "false"),
        ("remote.storage.enable", "false"),
        ("retention.bytes", "1000000"),
        ("retention.ms", "3600000"),
        ("segment.bytes", "1048576"),
        ("segment.index.bytes", "4096"),
        ("segment.jitter.ms", "100"),
        ("segment.ms", "600000"),
        ("unclean.leader.election.enable", "true"),
    ];
    create_ok(&mut conn, "all-configs", configs).await;
    let described = describe(&mut conn, "all-configs").await;
    for (key, value) in configs {
        assert_eq!(
            described.get(*key),
            Some(&(value.to_string(), 1)),
            "{key} is described as set on the topic"
        );
    }
    assert_eq!(described.len(), configs.len(), "{described:?}");

    // Defaults are described too, with Kafka's default values.
    create_ok(&mut conn, "defaults", &[]).await;
    let described = describe(&mut conn, "defaults").await;
    for (key, value) in [
        ("compression.type", "producer"),
        ("message.timestamp.after.max.ms", "3600000"),
        ("message.timestamp.before.max.ms", "9223372036854775807"),
        ("min.cleanable.dirty.ratio", "0.5"),
        ("max.compaction.lag.ms", "9223372036854775807"),
        ("segment.jitter.ms", "0"),
        ("compression.zstd.level", "3"),
    ] {
        assert_eq!(described[key], (value.to_string(), 5), "default of {key}");
    }

    let refused: &[(&str, &str, &str)] = &[
        (
            "compression.type",
            "brotli",
            "String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer",
        ),
        (
            "compression.gzip.level",
            "0",
            "Value must be between 1 and 9, or -1",
        ),
        (
            "compression.lz4.level",
            "18",
            "Value must be no more than 17",
        ),
        (
            "min.cleanable.dirty.ratio",
            "1.5",
            "Value must be no more than 1",
        ),
        (
            "min.cleanable.dirty.ratio",
            "x",
            "Not a number of type DOUBLE",
        ),
        ("max.compaction.lag.ms", "0", "Value must be at least 1"),
        ("segment.jitter.ms", "-1", "Value must be at least 0"),
        ("flush.messages", "ten", "Not a number of type LONG"),
        (
            "preallocate",
            "yes",
            "Expected value to be either true or false",
        ),
        (
            "leader.replication.throttled.replicas",
            "0-1",
            "must be the literal '*'",
        ),
        (
            "message.timestamp.type",
            "Sometimes",
            "String must be one of: CreateTime, LogAppendTime",
        ),
        ("message.format.version", "3.0", "Unknown topic config name"),
        (
            "message.downconversion.enable",
            "true",
            "Unknown topic config name",
        ),
        (
            "message.timestamp.difference.max.ms",
            "1000",
            "Unknown topic config name",
        ),
    ];
    for (i, (key, value, expected)) in refused.iter().enumerate() {
        let (code, message) = create(&mut conn, &format!("refused-{i}"), &[(key, value)]).await;
        assert_eq!(code, ResponseError::InvalidConfig.code(), "{key}={value}");
        let message = message.unwrap_or_default();
        assert!(message.contains(expected), "{key}={value}: {message}");
    }
    // Kafka's cross-config check.
    let (code, message) = create(
        &mut conn,
        "lags",
        &[
            ("min.compaction.lag.ms", "5000"),
            ("max.compaction.lag.ms", "1000"),
        ],
    )
    .await;
    assert_eq!(code, ResponseError::InvalidConfig.code());
    assert!(message
        .unwrap_or_default()
        .contains("conflict topic config setting"));
    broker.stop().await;
}

/// Goal: on a LogAppendTime topic the broker stamps each batch with its append time (the
/// attribute bit set, CRC valid), consumers see that time on every record whatever the producer
/// set, the produce answer carries it, and ListOffsets by timestamp finds records by it.
#[tokio::test]
async fn log_append_time_stamps_batches_with_the_append_time() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_ok(
        &mut conn,
        "lat",
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let old = 1_000_000_000_000; // 2001: far from now
    let before = now_ms();
    let uncompressed = encode(
        &[(None, "a", old), (None, "b", old + 5)],
        WireCompression::None,
        None,
    );
    let answer = produce(&mut conn, "lat", uncompressed).await;
    let after = now_ms();
    assert_eq!(answer.error_code, 0);
    let append_time = answer.log_append_time_ms;
    assert!(
        (before..=after).contains(&append_time),
        "{append_time} in [{before}, {after}]"
    );
    // A compressed batch is stamped without being recompressed.
    let compressed = encode(&[(None, "c", old)], WireCompression::Gzip, None);
    let answer = produce(&mut conn, "lat", compressed).await;
    assert_eq!(answer.error_code, 0);
    let second_time = answer.log_append_time_ms;

    let fetched = fetch(&mut conn, "lat", 0).await;
    assert_eq!(fetched.len(), 2);
    let (first, rows) = &fetched[0];
    assert_eq!(first.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(first.max_timestamp, append_time);
    assert!(
        rows.iter().all(|r| r.timestamp_ms == append_time),
        "{rows:?}"
    );
    let (second, rows) = &fetched[1];
    assert_eq!(second.compression(), Compression::Gzip);
    assert_eq!(second.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(rows[0].timestamp_ms, second_time);
    assert_eq!(values(&fetched).len(), 3);

    // The time index holds the append times: the producer's old timestamps find nothing
    // earlier than offset 0, the append time of the second batch finds it (or the first).
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("lat"))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(append_time + 1)])]);
    let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 7, &request).await;
    let found = &response.topics[0].partitions[0];
    assert_eq!(found.error_code, 0);
    if second_time > append_time {
        assert_eq!(found.offset, 2, "the first batch's append time is earlier");
    } else {
        assert_eq!(found.offset, -1, "no record after both append times");
    }

    // A producer claiming LogAppendTime itself is refused, as Kafka does.
    let mut claimed = encode(&[(None, "d", old)], WireCompression::None, None).to_vec();
    strata_storage::batch::set_log_append_time(&mut claimed, old).expect("header");
    let answer = produce(&mut conn, "lat", Bytes::from(claimed)).await;
    assert_eq!(answer.error_code, ResponseError::InvalidTimestamp.code());
    broker.stop().await;
}

/// Goal: with `compression.type` set, batches are stored (and fetched) with the topic's codec,
/// whatever the producer used, with the same records, offsets and idempotent-producer fields (a
/// retried batch is still recognised as a duplicate); `producer` keeps the producer's codec.
#[tokio::test]
async fn compression_type_recompresses_batches() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_ok(&mut conn, "zstd-topic", &[("compression.type", "zstd")]).await;
    create_ok(
        &mut conn,
        "plain-topic",
        &[("compression.type", "uncompressed")],
    )
    .await;
    create_ok(&mut conn, "as-produced", &[]).await;
    let ts = now_ms();
    let specs: Vec<(Option<&str>, String, i64)> = (0..50)
        .map(|i| (Some("k"), format!("value-{i}-{}", "x".repeat(100)), ts + i))
        .collect();
    let specs: Vec<Spec> = specs.iter().map(|(k, v, t)| (*k, v.as_str(), *t)).collect();
    let expected: Vec<(Option<String>, String)> = specs
        .iter()
        .map(|(k, v, _)| (k.map(str::to_string), v.to_string()))
        .collect();

    let idempotent = encode(&specs, WireCompression::None, Some((7, 0, 0)));
    let answer = produce(&mut conn, "zstd-topic", idempotent.clone()).await;
    assert_eq!((answer.error_code, answer.base_offset), (0, 0));
    let retry = produce(&mut conn, "zstd-topic", idempotent).await;
    assert_eq!(
        (retry.error_code, retry.base_offset),
        (0, 0),
        "a retry is a duplicate"
    );
    let lz4 = encode(&specs, WireCompression::Lz4, None);
    let answer = produce(&mut conn, "zstd-topic", lz4).await;
    assert_eq!((answer.error_code, answer.base_offset), (0, 50));
    let fetched = fetch(&mut conn, "zstd-topic", 0).await;
    assert_eq!(fetched.len(), 2);
    for (header, _) in &fetched {
        assert_eq!(header.compression(), Compression::Zstd);
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
    }
    assert_eq!(
        (fetched[0].0.producer_id, fetched[0].0.base_sequence),
        (7, 0)
    );
    assert_eq!(fetched[0].0.last_offset_delta, 49);
    assert_eq!(fetched[1].0.base_offset, 50);
    let rows: Vec<i64> = fetched[0].1.iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(
        rows,
        (0..50).map(|i| ts + i).collect::<Vec<_>>(),
        "timestamps kept"
    );
    let mut twice = expected.clone();
    twice.extend(expected.clone());
    assert_eq!(values(&fetched), twice);

    let gzip = encode(&specs, WireCompression::Gzip, None);
    assert_eq!(
        produce(&mut conn, "plain-topic", gzip.clone())
            .await
            .error_code,
        0
    );
    let fetched = fetch(&mut conn, "plain-topic", 0).await;
    assert_eq!(fetched[0].0.compression(), Compression::None);
    assert_eq!(values(&fetched), expected);

    assert_eq!(produce(&mut conn, "as-produced", gzip).await.error_code, 0);
    let fetched = fetch(&mut conn, "as-produced", 0).await;
    assert_eq!(fetched[0].0.compression(), Compression::Gzip);
    broker.stop().await;
}

/// Goal: CreateTime records outside `message.timestamp.before.max.ms` / `after.max.ms` of the
/// broker clock are refused with INVALID_TIMESTAMP (the whole batch, the bad records listed),
/// including by the one-hour `after.max.ms` default of Kafka 4.0; records inside are accepted.
#[tokio::test]
async fn timestamp_bounds_refuse_records_too_old_or_too_new() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_ok(
        &mut conn,
        "bounded",
        &[
            ("message.timestamp.before.max.ms", "3600000"),
            ("message.timestamp.after.max.ms", "60000"),
        ],
    )
    .await;
    create_ok(&mut conn, "default-bounds", &[]).await;
    let now = now_ms();
    let day = 86_400_000;
    // The first record is fine; record 1 is a day old, record 3 ten minutes ahead.
    let batch = encode(
        &[
            (None, "ok", now),
            (None, "old", now - day),
            (None, "ok", now - 1000),
            (None, "new", now + 600_000),
        ],
        WireCompression::Lz4,
        None,
    );
    let answer = produce(&mut conn, "bounded", batch).await;
    assert_eq!(answer.error_code, ResponseError::InvalidTimestamp.code());
    let indexes: Vec<i32> = answer.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, vec![1, 3]);
    let message = answer.record_errors[0]
        .batch_index_error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    assert!(message.contains("is out of range"), "{message}");
    assert!(answer.error_message.is_some());
    assert!(
        fetch(&mut conn, "bounded", 0).await.is_empty(),
        "nothing appended"
    );

    let good = encode(
        &[(None, "ok", now - 60_000), (None, "ok", now + 30_000)],
        WireCompression::None,
        None,
    );
    assert_eq!(produce(&mut conn, "bounded", good).await.error_code, 0);

    // Defaults: old records are fine, records two hours ahead are not.
    let old = encode(
        &[(None, "old", now - 365 * day)],
        WireCompression::None,
        None,
    );
    assert_eq!(
        produce(&mut conn, "default-bounds", old).await.error_code,
        0
    );
    let future = encode(
        &[(None, "future", now + 2 * 3_600_000)],
        WireCompression::None,
        None,
    );
    let answer = produce(&mut conn, "default-bounds", future).await;
    assert_eq!(answer.error_code, ResponseError::InvalidTimestamp.code());
    assert_eq!(answer.record_errors.len(), 1);
    broker.stop().await;
}

/// Goal (KIP-467): 10 keyless records in a batch of 100 to a compacted topic refuse the batch
/// with INVALID_RECORD (as Kafka does), and the answer lists exactly those 10 record indexes, so
/// a client can tell which records were bad; a batch with keys only is then accepted.
#[tokio::test]
async fn keyless_records_on_a_compacted_topic_are_listed_in_record_errors() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_ok(&mut conn, "compacted", &[("cleanup.policy", "compact")]).await;
    let now = now_ms();
    let keyless: Vec<usize> = (0..100).filter(|i| i % 10 == 3).collect();
    let specs: Vec<Spec> = (0..100)
        .map(|i| {
            let key = (!keyless.contains(&i)).then_some("key");
            (key, "value", now)
        })
        .collect();
    let answer = produce(
        &mut conn,
        "compacted",
        encode(&specs, WireCompression::Snappy, None),
    )
    .await;
    assert_eq!(answer.error_code, ResponseError::InvalidRecord.code());
    let indexes: Vec<usize> = answer
        .record_errors
        .iter()
        .map(|e| e.batch_index as usize)
        .collect();
    assert_eq!(indexes, keyless);
    let message = answer
        .error_message
        .map(|m| m.to_string())
        .unwrap_or_default();
    assert!(message.contains("10 record errors"), "{message}");
    assert!(answer.record_errors.iter().all(|e| e
        .batch_index_error_message
        .as_ref()
        .is_some_and(|m| m.contains("Compacted topic cannot accept message without key"))));
    assert!(fetch(&mut conn, "compacted", 0).await.is_empty());

    let keyed: Vec<Spec> = (0..100).map(|_| (Some("key"), "value", now)).collect();
    let answer = produce(
        &mut conn,
        "compacted",
        encode(&keyed, WireCompression::None, None),
    )
    .await;
    assert_eq!((answer.error_code, answer.base_offset), (0, 0));
    broker.stop().await;
}

/// Produces `versions` versions of keys `k0..k4` in batches of 5, timestamped `ts`.
async fn produce_versions(conn: &mut Conn, topic: &str, versions: std::ops::Range<usize>, ts: i64) {
    for version in versions {
        let values: Vec<String> = (0..5)
            .map(|_| format!("v{version}-{}", "p".repeat(200)))
            .collect();
        let keys: Vec<String> = (0..5).map(|k| format!("k{k}")).collect();
        let specs: Vec<Spec> = (0..5)
            .map(|k| (Some(keys[k].as_str()), values[k].as_str(), ts))
            .collect();
        let answer = produce(conn, topic, encode(&specs, WireCompression::None, None)).await;
        assert_eq!(answer.error_code, 0);
    }
}

/// Records in the partition: fetches batch after batch (a fetch may stop at a segment's end).
async fn record_count(conn: &mut Conn, topic: &str) -> usize {
    let mut offset = 0;
    let mut count = 0;
    loop {
        let fetched = fetch(conn, topic, offset).await;
        let Some((last, _)) = fetched.last() else {
            return count;
        };
        offset = last.next_offset();
        count += values(&fetched).len();
    }
}

/// Goal: the cleaner follows Kafka's settings. A first pass compacts a dirty log; afterwards a
/// log is compacted again only when the bytes written since are at least
/// `min.cleanable.dirty.ratio` of it, or its oldest uncompacted batch is older than
/// `max.compaction.lag.ms`; segments with records newer than `min.compaction.lag.ms` are never
/// compacted.
#[tokio::test]
async fn compaction_follows_ratio_and_lags() {
    // The cleaner task is slowed down: the test runs its passes itself, deterministically.
    let config = BrokerConfig {
        log_cleaner_backoff_ms: 3_600_000,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::new(MemDisk::new())).await;
    let mut conn = broker.connect().await;
    let base = [("cleanup.policy", "compact"), ("segment.bytes", "4096")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        all
    };
    create_ok(
        &mut conn,
        "eager",
        &with(&[("min.cleanable.dirty.ratio", "0.01")]),
    )
    .await;
    create_ok(
        &mut conn,
        "lazy",
        &with(&[("min.cleanable.dirty.ratio", "0.99")]),
    )
    .await;
    create_ok(
        &mut conn,
        "lazy-lagged",
        &with(&[
            ("min.cleanable.dirty.ratio", "0.99"),
            ("max.compaction.lag.ms", "1000"),
        ]),
    )
    .await;
    create_ok(
        &mut conn,
        "young",
        &with(&[("min.compaction.lag.ms", "3600000")]),
    )
    .await;
    let old = now_ms() - 10_000;
    let topics = ["eager", "lazy", "lazy-lagged", "young"];
    for topic in topics {
        produce_versions(
            &mut conn,
            topic,
            0..40,
            if topic == "young" { now_ms() } else { old },
        )
        .await;
    }
    let before: Vec<usize> = {
        let mut counts = Vec::new();
        for topic in topics {
            counts.push(record_count(&mut conn, topic).await);
        }
        counts
    };
    assert!(before.iter().all(|c| *c == 200));
    broker.broker.clean_compacted();
    let mut first = Vec::new();
    for topic in topics {
        first.push(record_count(&mut conn, topic).await);
    }
    // Every log was all dirty: compacted, but for the one whose records are too young.
    assert!(
        first[0] < 200 && first[1] < 200 && first[2] < 200,
        "{first:?}"
    );
    assert_eq!(first[3], 200, "min.compaction.lag.ms keeps young segments");

    // A little more data: only a few new segments close.
    for topic in ["eager", "lazy", "lazy-lagged"] {
        produce_versions(&mut conn, topic, 40..55, old).await;
    }
    let mut grown = Vec::new();
    for topic in ["eager", "lazy", "lazy-lagged"] {
        grown.push(record_count(&mut conn, topic).await);
    }
    broker.broker.clean_compacted();
    let mut second = Vec::new();
    for topic in ["eager", "lazy", "lazy-lagged"] {
        second.push(record_count(&mut conn, topic).await);
    }
    assert!(
        second[0] < grown[0],
        "ratio 0.01 compacts again: {grown:?} -> {second:?}"
    );
    assert_eq!(second[1], grown[1], "ratio 0.99 waits for more dirty data");
    assert!(
        second[2] < grown[2],
        "max.compaction.lag.ms forces the pass"
    );
    broker.stop().await;
}
