//! Committed offsets: commit/fetch, generation checks, durability across restarts and power
//! loss (MemDisk's crash model), OffsetDelete and DeleteGroups tombstones.

mod broker_util;
mod group_util;

use std::sync::Arc;

use broker_util::TestBroker;
use group_util::{commit, create_topic, fetch, gid, join_new, leave, s, sync, topic_name, Join};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DeleteGroupsResponse, ListGroupsRequest, ListGroupsResponse,
    MetadataRequest, MetadataResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::ResponseError;
use strata_cluster::group::GroupConfig;
use strata_cluster::BrokerConfig;
use strata_storage::MemDisk;

async fn start_on(disk: &Arc<MemDisk>) -> TestBroker {
    let broker = TestBroker::start_with(BrokerConfig::default(), Arc::clone(disk)).await;
    broker.broker.groups().set_config(GroupConfig {
        session_timeout_min_ms: 100,
        ..broker.broker.groups().config()
    });
    broker
}

#[tokio::test]
async fn simple_commits_are_fetched_and_survive_a_restart() {
    let disk = Arc::new(MemDisk::new());
    let broker = start_on(&disk).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "t", 3).await;
    assert_eq!(
        fetch(&mut conn, "g", "t", &[0, 1, 2]).await,
        vec![-1, -1, -1]
    );
    assert_eq!(
        commit(&mut conn, "g", -1, "", "t", &[(0, 5), (1, 7)]).await,
        vec![0, 0]
    );
    assert_eq!(
        commit(&mut conn, "g", -1, "", "t", &[(1, 9)]).await,
        vec![0]
    );
    assert_eq!(fetch(&mut conn, "g", "t", &[0, 1, 2]).await, vec![5, 9, -1]);
    assert_eq!(
        commit(&mut conn, "g", -1, "", "missing", &[(0, 1)]).await,
        vec![ResponseError::UnknownTopicOrPartition.code()]
    );
    assert_eq!(
        commit(&mut conn, "g", -1, "", "t", &[(3, 1)]).await,
        vec![ResponseError::UnknownTopicOrPartition.code()]
    );
    // The offsets topic is internal: not in the all-topics listing, described when named.
    let all: MetadataResponse = conn
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    assert!(all
        .topics
        .iter()
        .all(|t| t.name.as_ref().map(|n| n.as_str()) != Some("__consumer_offsets")));
    let named: MetadataResponse = conn
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default()
                    .with_name(Some(topic_name("__consumer_offsets")))])),
        )
        .await;
    assert_eq!(named.topics[0].error_code, 0);
    assert!(named.topics[0].is_internal);
    drop(conn);
    broker.stop().await;

    let broker = start_on(&disk).await;
    let mut conn = broker.connect().await;
    assert_eq!(fetch(&mut conn, "g", "t", &[0, 1, 2]).await, vec![5, 9, -1]);
    let listed: ListGroupsResponse = conn
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await;
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(listed.groups[0].group_id.as_str(), "g");
    assert_eq!(listed.groups[0].group_state.as_str(), "Empty");
    // v8 batched fetch, all partitions of the group.
    let request = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(gid("g"))
            .with_topics(None),
        OffsetFetchRequestGroup::default()
            .with_group_id(gid("other"))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(topic_name("t"))
                .with_partition_indexes(vec![0])])),
    ]);
    let response: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, 8, &request).await;
    let g = &response.groups[0];
    let offsets: Vec<(i32, i64)> = g.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(offsets, vec![(0, 5), (1, 9)]);
    assert_eq!(
        response.groups[1].topics[0].partitions[0].committed_offset,
        -1
    );
    broker.stop().await;
}

#[tokio::test]
async fn acknowledged_commits_survive_a_power_loss() {
    let disk = Arc::new(MemDisk::new());
    let broker = start_on(&disk).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "t", 1).await;
    for offset in 1..=20 {
        assert_eq!(
            commit(&mut conn, "g", -1, "", "t", &[(0, offset)]).await,
            vec![0]
        );
    }
    // Power loss with the broker running: only fsynced bytes remain.
    disk.crash(None);
    drop(conn);
    let restarted = start_on(&disk).await;
    let mut conn = restarted.connect().await;
    assert_eq!(fetch(&mut conn, "g", "t", &[0]).await, vec![20]);
    restarted.stop().await;
    drop(broker);
}

#[tokio::test]
async fn member_commits_check_generation_and_member() {
    let disk = Arc::new(MemDisk::new());
    let broker = start_on(&disk).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "t", 2).await;
    let joined = join_new(&mut conn, &Join::new("g")).await;
    let id = joined.member_id.to_string();
    assert_eq!(
        sync(&mut conn, "g", 1, &id, None, &[(&id, b"x")])
            .await
            .error_code,
        0
    );
    assert_eq!(
        commit(&mut conn, "g", 1, &id, "t", &[(0, 3)]).await,
        vec![0]
    );
    assert_eq!(
        commit(&mut conn, "g", 0, &id, "t", &[(0, 4)]).await,
        vec![ResponseError::IllegalGeneration.code()]
    );
    assert_eq!(
        commit(&mut conn, "g", 1, "stranger", "t", &[(0, 4)]).await,
        vec![ResponseError::UnknownMemberId.code()]
    );
    // A simple commit to a group with members is refused.
    assert_eq!(
        commit(&mut conn, "g", -1, "", "t", &[(0, 4)]).await,
        vec![ResponseError::UnknownMemberId.code()]
    );
    assert_eq!(fetch(&mut conn, "g", "t", &[0]).await, vec![3]);

    // OffsetDelete: refused for a subscribed topic only when the subscription names it; the
    // test member's metadata is not a consumer subscription, so the whole request is refused.
    let request = OffsetDeleteRequest::default()
        .with_group_id(gid("g"))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(topic_name("t"))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let response: OffsetDeleteResponse = conn.call(ApiKey::OffsetDelete, 0, &request).await;
    assert_eq!(response.error_code, ResponseError::NonEmptyGroup.code());

    // DeleteGroups: only empty groups.
    let request = DeleteGroupsRequest::default().with_groups_names(vec![gid("g"), gid("nope")]);
    let response: DeleteGroupsResponse = conn.call(ApiKey::DeleteGroups, 2, &request).await;
    assert_eq!(
        response.results[0].error_code,
        ResponseError::NonEmptyGroup.code()
    );
    assert_eq!(
        response.results[1].error_code,
        ResponseError::GroupIdNotFound.code()
    );
    assert_eq!(leave(&mut conn, "g", &id).await.error_code, 0);

    // Empty now: OffsetDelete works, then DeleteGroups.
    let response: OffsetDeleteResponse = conn
        .call(ApiKey::OffsetDelete, 0, &request_offset_delete())
        .await;
    assert_eq!(response.error_code, 0);
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetch(&mut conn, "g", "t", &[0]).await, vec![-1]);
    assert_eq!(
        commit(&mut conn, "g", -1, "", "t", &[(1, 8)]).await,
        vec![0]
    );
    let request = DeleteGroupsRequest::default().with_groups_names(vec![gid("g")]);
    let response: DeleteGroupsResponse = conn.call(ApiKey::DeleteGroups, 2, &request).await;
    assert_eq!(response.results[0].error_code, 0);
    assert_eq!(fetch(&mut conn, "g", "t", &[0, 1]).await, vec![-1, -1]);
    drop(conn);
    broker.stop().await;

    // The tombstones are durable: nothing comes back after a restart.
    let broker = start_on(&disk).await;
    let mut conn = broker.connect().await;
    assert_eq!(fetch(&mut conn, "g", "t", &[0, 1]).await, vec![-1, -1]);
    let listed: ListGroupsResponse = conn
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await;
    assert!(listed.groups.is_empty(), "{listed:?}");
    let _ = s("");
    broker.stop().await;
}

fn request_offset_delete() -> OffsetDeleteRequest {
    OffsetDeleteRequest::default()
        .with_group_id(gid("g"))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(topic_name("t"))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])])
}

#[tokio::test]
async fn offset_delete_refuses_topics_a_live_consumer_group_subscribes_to() {
    use bytes::BufMut;
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Encodable;

    let disk = Arc::new(MemDisk::new());
    let broker = start_on(&disk).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "sub", 1).await;
    create_topic(&mut conn, "other", 1).await;
    let mut metadata = bytes::BytesMut::new();
    metadata.put_i16(1);
    ConsumerProtocolSubscription::default()
        .with_topics(vec![s("sub")])
        .encode(&mut metadata, 1)
        .expect("encode subscription");
    let mut params = Join::new("live");
    params.protocols = vec![("range", metadata.freeze())];
    let joined = join_new(&mut conn, &params).await;
    let id = joined.member_id.to_string();
    assert_eq!(
        sync(&mut conn, "live", 1, &id, None, &[]).await.error_code,
        0
    );
    assert_eq!(
        commit(&mut conn, "live", 1, &id, "sub", &[(0, 1)]).await,
        vec![0]
    );
    assert_eq!(
        commit(&mut conn, "live", 1, &id, "other", &[(0, 2)]).await,
        vec![0]
    );
    let request = OffsetDeleteRequest::default()
        .with_group_id(gid("live"))
        .with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(topic_name("sub"))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ]),
            OffsetDeleteRequestTopic::default()
                .with_name(topic_name("other"))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ]),
        ]);
    let response: OffsetDeleteResponse = conn.call(ApiKey::OffsetDelete, 0, &request).await;
    assert_eq!(response.error_code, 0);
    assert_eq!(
        response.topics[0].partitions[0].error_code,
        ResponseError::GroupSubscribedToTopic.code()
    );
    assert_eq!(response.topics[1].partitions[0].error_code, 0);
    assert_eq!(fetch(&mut conn, "live", "sub", &[0]).await, vec![1]);
    assert_eq!(fetch(&mut conn, "live", "other", &[0]).await, vec![-1]);
    broker.stop().await;
}

/// Goal: a group id longer than the offsets key can hold (32,767 bytes) is refused with
/// INVALID_GROUP_ID, never cut short: before, a 40,000-byte id was stored under its first
/// 32,767 bytes, so two ids sharing that prefix overwrote each other's offsets, and one cut
/// inside a UTF-8 character was lost at the next start. The longest legal id commits, reads
/// back and survives a restart.
#[tokio::test]
async fn over_long_group_ids_are_refused_not_truncated() {
    let disk = Arc::new(MemDisk::new());
    let broker = start_on(&disk).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "t", 1).await;
    let longest = "g".repeat(strata_cluster::group::GROUP_ID_BYTES_MAX);
    assert_eq!(
        commit(&mut conn, &longest, -1, "", "t", &[(0, 7)]).await,
        vec![0]
    );
    let over_long = format!("{longest}-a");
    assert_eq!(
        commit(&mut conn, &over_long, -1, "", "t", &[(0, 999)]).await,
        vec![ResponseError::InvalidGroupId.code()]
    );
    // 2-byte characters straddling the limit: refused too.
    let multibyte = "é".repeat(strata_cluster::group::GROUP_ID_BYTES_MAX / 2 + 1);
    assert_eq!(
        commit(&mut conn, &multibyte, -1, "", "t", &[(0, 5)]).await,
        vec![ResponseError::InvalidGroupId.code()]
    );
    assert_eq!(
        fetch(&mut conn, &longest, "t", &[0]).await,
        vec![7],
        "prefix untouched"
    );
    drop(conn);
    broker.stop().await;

    let broker = start_on(&disk).await;
    let mut conn = broker.connect().await;
    assert_eq!(fetch(&mut conn, &longest, "t", &[0]).await, vec![7]);
    drop(conn);
    broker.stop().await;
}

/// A batch with a correct frame and CRC whose records section is garbage: what a client could
/// produce to `__consumer_offsets` before internal topics were refused.
fn undecodable_batch() -> Vec<u8> {
    use strata_storage::batch::{self, build::BatchSpec, BATCH_HEADER_BYTES};
    let mut bytes = BatchSpec::new(1_700_000_000_000, vec![vec![0u8; 64]; 3]).encode();
    for byte in &mut bytes[BATCH_HEADER_BYTES..] {
        *byte = 0xFF;
    }
    let crc = batch::compute_crc(&bytes).expect("a whole batch");
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// Goal: a `__consumer_offsets` batch that does not decode never stops the broker from
/// starting (before, one such batch made every restart fail with "corrupt metadata file"):
/// the replay skips it and keeps every commit before and after it.
#[tokio::test]
async fn an_undecodable_offsets_batch_is_skipped_at_start() {
    let disk = Arc::new(MemDisk::new());
    let broker = start_on(&disk).await;
    let mut conn = broker.connect().await;
    create_topic(&mut conn, "t", 2).await;
    assert_eq!(
        commit(&mut conn, "g", -1, "", "t", &[(0, 5)]).await,
        vec![0]
    );
    let offsets = broker
        .broker
        .topic("__consumer_offsets")
        .expect("offsets topic");
    let partition = offsets.partition(0).expect("partition 0");
    broker
        .broker
        .append(partition, &undecodable_batch())
        .expect("the log takes a well-framed batch");
    assert_eq!(
        commit(&mut conn, "g", -1, "", "t", &[(1, 9)]).await,
        vec![0]
    );
    drop(conn);
    broker.stop().await;

    let broker = start_on(&disk).await;
    let mut conn = broker.connect().await;
    assert_eq!(fetch(&mut conn, "g", "t", &[0, 1]).await, vec![5, 9]);
    drop(conn);
    broker.stop().await;
}
