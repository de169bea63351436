//! Every supported version of every group API encodes and decodes: a simple request at each
//! version gets a well-formed answer (the connection would close on an encoding failure).

mod broker_util;
mod group_util;

use broker_util::TestBroker;
use group_util::{create_topic, gid, s, topic_name};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::ResponseError;
use strata_cluster::handlers::supported_versions;

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (min, max) = supported_versions(key).expect("served");
    min..=max
}

#[tokio::test]
async fn every_version_of_every_group_api_round_trips() {
    let broker = TestBroker::start().await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "t", 1).await;

    for v in versions(ApiKey::FindCoordinator) {
        let mut request = FindCoordinatorRequest::default();
        if v >= 4 {
            request.coordinator_keys = vec![s("g")];
        } else {
            request.key = s("g");
        }
        let r: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, v, &request).await;
        let port = if v >= 4 {
            r.coordinators[0].port
        } else {
            r.port
        };
        assert_eq!(port, i32::from(broker.addr.port()), "v{v}");
    }

    for v in versions(ApiKey::JoinGroup) {
        let group = format!("join-v{v}");
        let join = |member: &str| {
            let mut request = JoinGroupRequest::default()
                .with_group_id(gid(&group))
                .with_session_timeout_ms(10_000)
                .with_member_id(s(member))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(bytes::Bytes::from_static(b"m"))]);
            if v >= 1 {
                request.rebalance_timeout_ms = 10_000;
            }
            request
        };
        let mut r: JoinGroupResponse = conn.call(ApiKey::JoinGroup, v, &join("")).await;
        if v >= 4 {
            assert_eq!(r.error_code, ResponseError::MemberIdRequired.code(), "v{v}");
            let member = r.member_id.to_string();
            r = conn.call(ApiKey::JoinGroup, v, &join(&member)).await;
        }
        assert_eq!(r.error_code, 0, "JoinGroup v{v}");
        assert_eq!(r.generation_id, 1, "v{v}");
        let member = r.member_id.to_string();
        let sync_version = v.min(5);
        let mut sync = SyncGroupRequest::default()
            .with_group_id(gid(&group))
            .with_generation_id(1)
            .with_member_id(s(&member))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(bytes::Bytes::from_static(b"a"))]);
        if sync_version >= 5 {
            sync.protocol_type = Some(s("consumer"));
            sync.protocol_name = Some(s("range"));
        }
        let r: SyncGroupResponse = conn.call(ApiKey::SyncGroup, sync_version, &sync).await;
        assert_eq!(r.error_code, 0, "SyncGroup v{sync_version}");
        assert_eq!(&r.assignment[..], b"a");
        let hb_version = v.min(4);
        let heartbeat = HeartbeatRequest::default()
            .with_group_id(gid(&group))
            .with_generation_id(1)
            .with_member_id(s(&member));
        let r: HeartbeatResponse = conn.call(ApiKey::Heartbeat, hb_version, &heartbeat).await;
        assert_eq!(r.error_code, 0, "Heartbeat v{hb_version}");
        let commit_version = v.clamp(2, 8);
        let mut commit = OffsetCommitRequest::default()
            .with_group_id(gid(&group))
            .with_generation_id_or_member_epoch(1)
            .with_member_id(s(&member))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic_name("t"))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(i64::from(v))])]);
        if commit_version <= 4 {
            commit.retention_time_ms = -1;
        }
        let r: OffsetCommitResponse = conn
            .call(ApiKey::OffsetCommit, commit_version, &commit)
            .await;
        assert_eq!(
            r.topics[0].partitions[0].error_code, 0,
            "OffsetCommit v{commit_version}"
        );
        let leave_version = v.min(5);
        let leave = if leave_version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(gid(&group))
                .with_members(vec![MemberIdentity::default().with_member_id(s(&member))])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(gid(&group))
                .with_member_id(s(&member))
        };
        let r: LeaveGroupResponse = conn.call(ApiKey::LeaveGroup, leave_version, &leave).await;
        assert_eq!(r.error_code, 0, "LeaveGroup v{leave_version}");
    }

    for v in versions(ApiKey::OffsetFetch) {
        let request = if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(gid("join-v3"))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(topic_name("t"))
                    .with_partition_indexes(vec![0])]))])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(gid("join-v3"))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(topic_name("t"))
                    .with_partition_indexes(vec![0])]))
        };
        let r: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, v, &request).await;
        let offset = if v >= 8 {
            r.groups[0].topics[0].partitions[0].committed_offset
        } else {
            r.topics[0].partitions[0].committed_offset
        };
        assert_eq!(offset, 3, "OffsetFetch v{v}");
    }

    for v in versions(ApiKey::ListGroups) {
        let r: ListGroupsResponse = conn
            .call(ApiKey::ListGroups, v, &ListGroupsRequest::default())
            .await;
        assert_eq!(r.groups.len(), 10, "ListGroups v{v}: {r:?}");
    }

    for v in versions(ApiKey::DescribeGroups) {
        let request = DescribeGroupsRequest::default().with_groups(vec![gid("join-v0"), gid("x")]);
        let r: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, v, &request).await;
        assert_eq!(r.groups[0].group_state.as_str(), "Empty", "v{v}");
        assert_eq!(r.groups[1].group_state.as_str(), "Dead", "v{v}");
    }

    let request = OffsetDeleteRequest::default()
        .with_group_id(gid("join-v0"))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(topic_name("t"))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let r: OffsetDeleteResponse = conn.call(ApiKey::OffsetDelete, 0, &request).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    for v in versions(ApiKey::DeleteGroups) {
        let group = format!("join-v{}", v + 1);
        let request = DeleteGroupsRequest::default().with_groups_names(vec![gid(&group)]);
        let r: DeleteGroupsResponse = conn.call(ApiKey::DeleteGroups, v, &request).await;
        assert_eq!(r.results[0].error_code, 0, "DeleteGroups v{v}");
    }
    broker.stop().await;
}
