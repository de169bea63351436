//! A failed fsync crashes the broker process (no retry, no acknowledgement): the flusher's fsync of
//! produced data, and the log's own syncs (here: the directory sync of a segment roll). Runs each
//! scenario in a child process (this test binary, re-executed) and checks it died of SIGABRT.

mod broker_util;

use std::process::Command;
use std::sync::Arc;

use broker_util::{batch, TestBroker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strata_cluster::BrokerConfig;
use strata_storage::MemDisk;

const CHILD_ENV: &str = "STRATA_FSYNC_ABORT_CHILD";

/// Child side. `roll`: flush policy `never` (the flusher syncs nothing) and tiny segments, so the
/// only fsync that fails is the directory sync of the roll that the second produce triggers.
async fn child_scenario(roll: bool) {
    let disk = Arc::new(MemDisk::new());
    let config = if roll {
        BrokerConfig {
            flush: strata_cluster::FlushPolicy::Never,
            ..BrokerConfig::default()
        }
    } else {
        BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config, Arc::clone(&disk)).await;
    let mut conn = broker.connect().await;
    let name = TopicName(StrBytes::from_static_str("sync"));
    let mut topic = CreatableTopic::default()
        .with_name(name.clone())
        .with_num_partitions(1)
        .with_replication_factor(1);
    if roll {
        topic = topic.with_configs(vec![
            kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("segment.bytes"))
                .with_value(Some(StrBytes::from_static_str("100"))),
        ]);
    }
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(5000);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request).await;
    assert_eq!(response.topics[0].error_code, 0);
    let produce = |acks: i16| {
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name.clone())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch(&[&[7u8; 120]], None)))])])
    };
    if roll {
        let response: ProduceResponse = conn.call(ApiKey::Produce, 9, &produce(1)).await;
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    }
    disk.set_fail_syncs(true);
    let acks = if roll { 1 } else { -1 };
    let response: ProduceResponse = conn.call(ApiKey::Produce, 9, &produce(acks)).await;
    // Reaching this line means the broker answered instead of crashing.
    println!(
        "ANSWERED error_code={}",
        response.responses[0].partition_responses[0].error_code
    );
}

#[tokio::test]
async fn fsync_failure_aborts_the_process() {
    expect_abort("fsync_failure_aborts_the_process", false).await;
}

#[tokio::test]
async fn failed_directory_sync_of_a_roll_aborts_the_process() {
    expect_abort("failed_directory_sync_of_a_roll_aborts_the_process", true).await;
}

async fn expect_abort(test_name: &str, roll: bool) {
    if std::env::var_os(CHILD_ENV).is_some() {
        child_scenario(roll).await;
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("ANSWERED"),
        "the broker answered: {stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            output.status.signal(),
            Some(libc_sigabrt()),
            "child status {:?}, stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    #[cfg(not(unix))]
    assert!(!output.status.success());
}

#[cfg(unix)]
fn libc_sigabrt() -> i32 {
    6 // SIGABRT on Linux and the BSDs
}
