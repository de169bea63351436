//! Classic consumer-group membership against an in-process broker: join/sync of two members,
//! heartbeats, rebalance on leave, session expiry, static membership, request validation.

mod broker_util;
mod group_util;

use std::time::Duration;

use broker_util::{Conn, TestBroker};
use group_util::{heartbeat, join, join_new, leave, sync, Join};
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::ResponseError;
use strata_cluster::group::GroupConfig;

async fn start() -> TestBroker {
    let broker = TestBroker::start().await;
    broker.broker.groups().set_config(GroupConfig {
        session_timeout_min_ms: 100,
        ..broker.broker.groups().config()
    });
    broker
}

/// Heartbeats until the answer is `code` (at most 5 s); panics otherwise.
async fn heartbeat_until(conn: &mut Conn, group: &str, generation: i32, member: &str, code: i16) {
    for _ in 0..100 {
        if heartbeat(conn, group, generation, member, None).await == code {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("heartbeat never answered {code}");
}

/// Two members in a Stable group at generation 2; returns (conn a, id a, conn b, id b).
async fn two_member_group(broker: &TestBroker, group: &str) -> (Conn, String, Conn, String) {
    let mut a = broker.connect().await;
    let joined_a = join_new(&mut a, &Join::new(group)).await;
    assert_eq!(joined_a.error_code, 0);
    assert_eq!(joined_a.generation_id, 1);
    let id_a = joined_a.member_id.to_string();
    assert_eq!(joined_a.leader.as_str(), id_a, "the first member leads");
    assert_eq!(joined_a.members.len(), 1);
    assert_eq!(joined_a.protocol_name.as_deref(), Some("range"));
    let synced = sync(&mut a, group, 1, &id_a, None, &[(&id_a, b"all")]).await;
    assert_eq!(synced.error_code, 0);
    assert_eq!(&synced.assignment[..], b"all");
    assert_eq!(heartbeat(&mut a, group, 1, &id_a, None).await, 0);

    // B joins: the group rebalances; A learns it from its heartbeat and rejoins.
    let b = broker.connect().await;
    let group_b = group.to_string();
    let b_join = tokio::spawn(async move {
        let mut b = b;
        let response = join_new(&mut b, &Join::new(&group_b)).await;
        (b, response)
    });
    heartbeat_until(
        &mut a,
        group,
        1,
        &id_a,
        ResponseError::RebalanceInProgress.code(),
    )
    .await;
    let rejoined_a = join(&mut a, &Join::new(group).member(&id_a)).await;
    let (mut b, joined_b) = b_join.await.expect("join task");
    assert_eq!(rejoined_a.error_code, 0);
    assert_eq!(joined_b.error_code, 0);
    assert_eq!(rejoined_a.generation_id, 2);
    assert_eq!(joined_b.generation_id, 2);
    assert_eq!(rejoined_a.leader.as_str(), id_a);
    assert_eq!(joined_b.leader.as_str(), id_a);
    let id_b = joined_b.member_id.to_string();
    let mut listed: Vec<String> = rejoined_a
        .members
        .iter()
        .map(|m| m.member_id.to_string())
        .collect();
    listed.sort();
    let mut expected = vec![id_a.clone(), id_b.clone()];
    expected.sort();
    assert_eq!(listed, expected, "the leader gets every member");
    assert!(
        rejoined_a
            .members
            .iter()
            .all(|m| &m.metadata[..] == b"subscription"),
        "metadata passed through"
    );
    assert!(joined_b.members.is_empty(), "followers get no member list");

    // B syncs first and waits for the leader's assignment.
    let group_b = group.to_string();
    let id_b2 = id_b.clone();
    let b_sync = tokio::spawn(async move {
        let response = sync(&mut b, &group_b, 2, &id_b2, None, &[]).await;
        (b, response)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let synced_a = sync(
        &mut a,
        group,
        2,
        &id_a,
        None,
        &[(&id_a, b"p0p1"), (&id_b, b"p2p3")],
    )
    .await;
    let (b, synced_b) = b_sync.await.expect("sync task");
    assert_eq!(synced_a.error_code, 0);
    assert_eq!(&synced_a.assignment[..], b"p0p1");
    assert_eq!(synced_b.error_code, 0);
    assert_eq!(&synced_b.assignment[..], b"p2p3");
    assert_eq!(synced_b.protocol_name.as_deref(), Some("range"));
    (a, id_a, b, id_b)
}

#[tokio::test]
async fn two_members_share_and_a_leave_rebalances() {
    let broker = start().await;
    let (mut a, id_a, mut b, id_b) = two_member_group(&broker, "g").await;
    assert_eq!(heartbeat(&mut a, "g", 2, &id_a, None).await, 0);
    assert_eq!(heartbeat(&mut b, "g", 2, &id_b, None).await, 0);
    assert_eq!(
        heartbeat(&mut b, "g", 1, &id_b, None).await,
        ResponseError::IllegalGeneration.code()
    );

    let request = DescribeGroupsRequest::default().with_groups(vec![group_util::gid("g")]);
    let described: DescribeGroupsResponse = a.call(ApiKey::DescribeGroups, 5, &request).await;
    let group = &described.groups[0];
    assert_eq!(group.group_state.as_str(), "Stable");
    assert_eq!(group.protocol_data.as_str(), "range");
    assert_eq!(group.members.len(), 2);
    assert!(group
        .members
        .iter()
        .all(|m| m.client_host.starts_with("/127.0.0.1")));
    let listed: ListGroupsResponse = a
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await;
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(listed.groups[0].group_state.as_str(), "Stable");
    assert_eq!(listed.groups[0].protocol_type.as_str(), "consumer");

    // B leaves: A must rejoin and gets generation 3 alone.
    let left = leave(&mut b, "g", &id_b).await;
    assert_eq!(left.error_code, 0);
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(
        heartbeat(&mut a, "g", 2, &id_a, None).await,
        ResponseError::RebalanceInProgress.code()
    );
    let rejoined = join(&mut a, &Join::new("g").member(&id_a)).await;
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, 3);
    assert_eq!(rejoined.members.len(), 1);
    assert_eq!(
        heartbeat(&mut b, "g", 3, &id_b, None).await,
        ResponseError::UnknownMemberId.code()
    );
    let left_again = leave(&mut b, "g", &id_b).await;
    assert_eq!(
        left_again.members[0].error_code,
        ResponseError::UnknownMemberId.code()
    );
    broker.stop().await;
}

#[tokio::test]
async fn an_expired_session_removes_the_member() {
    let broker = start().await;
    let (mut a, id_a, mut b, id_b) = two_member_group(&broker, "expiry").await;
    // A keeps heartbeating; B goes silent for longer than its 1 s session timeout.
    let started = std::time::Instant::now();
    heartbeat_until(
        &mut a,
        "expiry",
        2,
        &id_a,
        ResponseError::RebalanceInProgress.code(),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "not before the session timeout"
    );
    let rejoined = join(&mut a, &Join::new("expiry").member(&id_a)).await;
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, 3);
    assert_eq!(rejoined.members.len(), 1);
    assert_eq!(
        heartbeat(&mut b, "expiry", 2, &id_b, None).await,
        ResponseError::UnknownMemberId.code()
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let broker = start().await;
    let (mut a, id_a, mut b, id_b) = two_member_group(&broker, "slow").await;
    // B keeps heartbeating (its session stays alive) but never rejoins.
    let id_b2 = id_b.clone();
    let b_beats = tokio::spawn(async move {
        for _ in 0..30 {
            heartbeat(&mut b, "slow", 2, &id_b2, None).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // A rejoins with new metadata (a rebalance); it completes at the 3 s rebalance timeout.
    let mut params = Join::new("slow").member(&id_a);
    params.protocols = vec![("range", bytes::Bytes::from_static(b"v2"))];
    let started = std::time::Instant::now();
    let rejoined = join(&mut a, &params).await;
    let waited = started.elapsed();
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, 3);
    assert_eq!(rejoined.members.len(), 1, "{id_b} was dropped");
    assert_eq!(&rejoined.members[0].metadata[..], b"v2");
    assert!(
        waited >= Duration::from_millis(2_500) && waited < Duration::from_millis(4_500),
        "completed at the rebalance timeout, after {waited:?}"
    );
    b_beats.abort();
    broker.stop().await;
}

#[tokio::test]
async fn static_member_rejoins_without_a_rebalance_and_fences_the_old_id() {
    let broker = start().await;
    let mut a = broker.connect().await;
    // A static member needs no MEMBER_ID_REQUIRED round trip.
    let joined = join(&mut a, &Join::new("static").instance("host-1")).await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    let old_id = joined.member_id.to_string();
    let synced = sync(
        &mut a,
        "static",
        1,
        &old_id,
        Some("host-1"),
        &[(&old_id, b"mine")],
    )
    .await;
    assert_eq!(synced.error_code, 0);

    // The instance restarts (new connection, empty member id).
    let mut a2 = broker.connect().await;
    let rejoined = join(&mut a2, &Join::new("static").instance("host-1")).await;
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, 1, "no rebalance");
    let new_id = rejoined.member_id.to_string();
    assert_ne!(new_id, old_id);
    let synced = sync(&mut a2, "static", 1, &new_id, Some("host-1"), &[]).await;
    assert_eq!(synced.error_code, 0);
    assert_eq!(&synced.assignment[..], b"mine", "assignment carried over");
    assert_eq!(
        heartbeat(&mut a2, "static", 1, &new_id, Some("host-1")).await,
        0
    );
    assert_eq!(
        heartbeat(&mut a, "static", 1, &old_id, Some("host-1")).await,
        ResponseError::FencedInstanceId.code()
    );
    let fenced = join(
        &mut a,
        &Join::new("static").member(&old_id).instance("host-1"),
    )
    .await;
    assert_eq!(fenced.error_code, ResponseError::FencedInstanceId.code());
    broker.stop().await;
}

#[tokio::test]
async fn invalid_joins_are_refused() {
    let broker = start().await;
    let mut conn = broker.connect().await;
    let mut params = Join::new("v");
    params.session_timeout_ms = 10;
    assert_eq!(
        join(&mut conn, &params).await.error_code,
        ResponseError::InvalidSessionTimeout.code()
    );
    assert_eq!(
        join(&mut conn, &Join::new("v").member("nobody"))
            .await
            .error_code,
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        join(&mut conn, &Join::new("")).await.error_code,
        ResponseError::InvalidGroupId.code()
    );
    let joined = join_new(&mut conn, &Join::new("v")).await;
    assert_eq!(joined.error_code, 0);
    let mut other = Join::new("v");
    other.protocols = vec![("roundrobin", bytes::Bytes::new())];
    let mut conn2 = broker.connect().await;
    assert_eq!(
        join(&mut conn2, &other).await.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let id = joined.member_id.to_string();
    assert_eq!(
        sync(&mut conn, "v", 7, &id, None, &[]).await.error_code,
        ResponseError::IllegalGeneration.code()
    );
    // FindCoordinator: this node, for every key (v4 batched).
    let request = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![group_util::s("v"), group_util::s("w")]);
    let found: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, 4, &request).await;
    assert_eq!(found.coordinators.len(), 2);
    assert!(found
        .coordinators
        .iter()
        .all(|c| c.error_code == 0 && c.port == i32::from(broker.addr.port())));
    let request = FindCoordinatorRequest::default().with_key(group_util::s("v"));
    let found: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, 2, &request).await;
    assert_eq!(found.error_code, 0);
    assert_eq!(found.node_id.0, broker.broker.node_id());
    broker.stop().await;
}

/// Two consumers started together share the first generation: with
/// `group.initial.rebalance.delay.ms`, the first member's join waits for the delay (armed again
/// when the second member joins), and then both get generation 1 with both members assigned,
/// instead of the first one getting a generation alone and a rebalance at once.
#[tokio::test]
async fn first_rebalance_waits_the_initial_delay_for_more_members() {
    let broker = start().await;
    broker.broker.groups().set_config(GroupConfig {
        initial_rebalance_delay_ms: 400,
        ..broker.broker.groups().config()
    });
    let started = std::time::Instant::now();
    let first = broker.connect().await;
    let a_join = tokio::spawn(async move {
        let mut first = first;
        let response = join_new(&mut first, &Join::new("delayed")).await;
        (response, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = broker.connect().await;
    let joined_b = join_new(&mut second, &Join::new("delayed")).await;
    let (joined_a, waited_a) = a_join.await.expect("join task");
    assert_eq!(joined_a.error_code, 0);
    assert_eq!(joined_b.error_code, 0);
    assert_eq!(joined_a.generation_id, 1, "no generation for A alone");
    assert_eq!(joined_b.generation_id, 1);
    let leader = if joined_a.members.is_empty() {
        &joined_b
    } else {
        &joined_a
    };
    assert_eq!(leader.members.len(), 2, "the leader assigns to both");
    // The delay ended at 400 ms and was armed again for B: at least 800 ms.
    assert!(
        waited_a >= Duration::from_millis(800),
        "A waited {waited_a:?}"
    );
    broker.stop().await;
}
