//! Raw group-protocol requests for the group tests (on top of `broker_util`).
#![allow(dead_code)]

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, GroupId, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker_util::Conn;

pub const JOIN_VERSION: i16 = 7;

pub fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

pub fn gid(value: &str) -> GroupId {
    GroupId(s(value))
}

pub fn topic_name(value: &str) -> TopicName {
    TopicName(s(value))
}

pub async fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request).await;
    assert_eq!(response.topics[0].error_code, 0);
}

/// Join parameters.
#[derive(Clone)]
pub struct Join {
    pub group: String,
    pub member_id: String,
    pub instance: Option<String>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(&'static str, Bytes)>,
}

impl Join {
    pub fn new(group: &str) -> Join {
        Join {
            group: group.to_string(),
            member_id: String::new(),
            instance: None,
            session_timeout_ms: 1_000,
            rebalance_timeout_ms: 3_000,
            protocols: vec![("range", Bytes::from_static(b"subscription"))],
        }
    }

    pub fn member(mut self, member_id: &str) -> Join {
        self.member_id = member_id.to_string();
        self
    }

    pub fn instance(mut self, instance: &str) -> Join {
        self.instance = Some(instance.to_string());
        self
    }
}

pub async fn join(conn: &mut Conn, join: &Join) -> JoinGroupResponse {
    let request = JoinGroupRequest::default()
        .with_group_id(gid(&join.group))
        .with_session_timeout_ms(join.session_timeout_ms)
        .with_rebalance_timeout_ms(join.rebalance_timeout_ms)
        .with_member_id(s(&join.member_id))
        .with_group_instance_id(join.instance.as_deref().map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(
            join.protocols
                .iter()
                .map(|(name, metadata)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(s(name))
                        .with_metadata(metadata.clone())
                })
                .collect(),
        );
    conn.call(ApiKey::JoinGroup, JOIN_VERSION, &request).await
}

/// Joins as a new dynamic member: MEMBER_ID_REQUIRED first, then the real join.
pub async fn join_new(conn: &mut Conn, params: &Join) -> JoinGroupResponse {
    let first = join(conn, params).await;
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    join(conn, &params.clone().member(first.member_id.as_str())).await
}

pub async fn sync(
    conn: &mut Conn,
    group: &str,
    generation: i32,
    member_id: &str,
    instance: Option<&str>,
    assignments: &[(&str, &[u8])],
) -> SyncGroupResponse {
    let request = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(member, assignment)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(member))
                        .with_assignment(Bytes::copy_from_slice(assignment))
                })
                .collect(),
        );
    conn.call(ApiKey::SyncGroup, 5, &request).await
}

pub async fn heartbeat(
    conn: &mut Conn,
    group: &str,
    generation: i32,
    member_id: &str,
    instance: Option<&str>,
) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s));
    let response: HeartbeatResponse = conn.call(ApiKey::Heartbeat, 4, &request).await;
    response.error_code
}

pub async fn leave(conn: &mut Conn, group: &str, member_id: &str) -> LeaveGroupResponse {
    let request = LeaveGroupRequest::default()
        .with_group_id(gid(group))
        .with_members(vec![MemberIdentity::default().with_member_id(s(member_id))]);
    conn.call(ApiKey::LeaveGroup, 5, &request).await
}

/// Commits `offsets` of `topic`; returns the per-partition error codes.
pub async fn commit(
    conn: &mut Conn,
    group: &str,
    generation: i32,
    member_id: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let request = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member_id))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(partition, offset)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*partition)
                            .with_committed_offset(*offset)
                            .with_committed_leader_epoch(-1)
                            .with_committed_metadata(Some(s("meta")))
                    })
                    .collect(),
            )]);
    let response: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, 8, &request).await;
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

/// Committed offsets of `partitions` of `topic` (OffsetFetch v7).
pub async fn fetch(conn: &mut Conn, group: &str, topic: &str, partitions: &[i32]) -> Vec<i64> {
    let request = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(partitions.to_vec())]));
    let response: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, 7, &request).await;
    assert_eq!(response.error_code, 0);
    let topic = &response.topics[0];
    topic
        .partitions
        .iter()
        .map(|p| {
            assert_eq!(p.error_code, 0);
            p.committed_offset
        })
        .collect()
}
