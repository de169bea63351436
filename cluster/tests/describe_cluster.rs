//! DescribeCluster and the authorized-operations fields of Metadata and DescribeGroups, as Kafka's
//! admin client and librdkafka's `DescribeCluster` / `DescribeTopics` /
//! `DescribeConsumerGroups` read them.

mod broker_util;

use broker_util::TestBroker;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, GroupId, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// The AclOperation codes of a bitfield.
fn operations(field: i32) -> Vec<i32> {
    (0..32).filter(|bit| field & (1 << bit) != 0).collect()
}

/// Kafka without an authorizer: every operation valid for the resource type.
const CLUSTER_OPERATIONS: [i32; 7] = [5, 7, 8, 9, 10, 11, 12]; // CREATE ALTER DESCRIBE CLUSTER_ACTION DESCRIBE_CONFIGS ALTER_CONFIGS IDEMPOTENT_WRITE
const TOPIC_OPERATIONS: [i32; 8] = [3, 4, 5, 6, 7, 8, 10, 11]; // READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS

/// Every DescribeCluster version names this node as the one broker and the controller, with the
/// cluster id that Metadata gives; authorized operations only when asked.
#[tokio::test]
async fn describe_cluster_names_this_broker_and_its_operations() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    let metadata: MetadataResponse = conn
        .call(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    for version in 0..=2 {
        for include in [false, true] {
            let request = DescribeClusterRequest::default()
                .with_include_cluster_authorized_operations(include);
            let response: DescribeClusterResponse =
                conn.call(ApiKey::DescribeCluster, version, &request).await;
            assert_eq!(response.error_code, 0, "v{version}");
            assert_eq!(response.cluster_id, metadata.cluster_id.clone().unwrap());
            assert_eq!(response.controller_id.0, broker.broker.node_id());
            assert_eq!(response.brokers.len(), 1);
            assert_eq!(response.brokers[0].broker_id.0, broker.broker.node_id());
            assert_eq!(response.brokers[0].port, i32::from(broker.addr.port()));
            assert_eq!(response.brokers[0].host, metadata.brokers[0].host);
            if include {
                assert_eq!(
                    operations(response.cluster_authorized_operations),
                    CLUSTER_OPERATIONS
                );
            } else {
                assert_eq!(response.cluster_authorized_operations, i32::MIN);
            }
            if version >= 1 {
                assert_eq!(response.endpoint_type, 1, "BROKER");
            }
        }
    }
    // Asking a broker for the controllers (KIP-919) is an error, as on Kafka's brokers.
    let request = DescribeClusterRequest::default().with_endpoint_type(2);
    let response: DescribeClusterResponse = conn.call(ApiKey::DescribeCluster, 1, &request).await;
    assert_eq!(
        response.error_code,
        ResponseError::MismatchedEndpointType.code()
    );
    let request = DescribeClusterRequest::default().with_endpoint_type(7);
    let response: DescribeClusterResponse = conn.call(ApiKey::DescribeCluster, 1, &request).await;
    assert_eq!(
        response.error_code,
        ResponseError::UnsupportedEndpointType.code()
    );
    broker.stop().await;
}

/// Metadata v8+ answers the topic's authorized operations (and v8-10 the cluster's) when asked,
/// and Kafka's "not requested" value otherwise.
#[tokio::test]
async fn metadata_answers_authorized_operations_when_asked() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    for version in 8..=12 {
        for include in [false, true] {
            let mut request = MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                    TopicName(StrBytes::from_static_str("authorized")),
                ))]))
                .with_allow_auto_topic_creation(true)
                .with_include_topic_authorized_operations(include);
            if version <= 10 {
                request = request.with_include_cluster_authorized_operations(include);
            }
            let response: MetadataResponse = conn.call(ApiKey::Metadata, version, &request).await;
            assert_eq!(response.topics.len(), 1);
            let topic = &response.topics[0];
            assert_eq!(topic.error_code, 0, "v{version}");
            if include {
                assert_eq!(
                    operations(topic.topic_authorized_operations),
                    TOPIC_OPERATIONS,
                    "v{version}"
                );
            } else {
                assert_eq!(topic.topic_authorized_operations, i32::MIN, "v{version}");
            }
            if version <= 10 {
                if include {
                    assert_eq!(
                        operations(response.cluster_authorized_operations),
                        CLUSTER_OPERATIONS,
                        "v{version}"
                    );
                } else {
                    assert_eq!(response.cluster_authorized_operations, i32::MIN);
                }
            }
        }
    }
    broker.stop().await;
}

/// DescribeGroups v3+ answers the group operations of Kafka 4 (READ, DELETE, DESCRIBE,
/// DESCRIBE_CONFIGS, ALTER_CONFIGS) when asked, and "not requested" otherwise.
#[tokio::test]
async fn describe_groups_answers_group_operations_when_asked() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    for version in 3..=5 {
        for include in [false, true] {
            let request = DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(StrBytes::from_static_str("described"))])
                .with_include_authorized_operations(include);
            let response: DescribeGroupsResponse =
                conn.call(ApiKey::DescribeGroups, version, &request).await;
            let field = response.groups[0].authorized_operations;
            if include {
                assert_eq!(operations(field), [3, 6, 8, 10, 11], "v{version}");
            } else {
                assert_eq!(field, i32::MIN, "v{version}");
            }
        }
    }
    broker.stop().await;
}
