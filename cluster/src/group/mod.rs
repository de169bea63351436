//! The group coordinator: classic consumer groups (JoinGroup/SyncGroup/Heartbeat/LeaveGroup)
//! and committed offsets stored in the internal topic `__consumer_offsets`.
//!
//! Design:
//! - **One coordinator.** This single node is the coordinator of every group (FindCoordinator
//!   always answers with this node). `__consumer_offsets` has one partition; when replication
//!   arrives, the coordinator of a group follows the leader of the partition its id hashes to.
//! - **State machine.** As Kafka's `GroupCoordinator`: Empty, PreparingRebalance,
//!   CompletingRebalance, Stable, Dead ([`state`]). A join waits until every known member has
//!   rejoined or the largest rebalance timeout of the members passed (laggards are then removed);
//!   the leader receives every member's metadata for the chosen protocol (the one all members
//!   support, by vote) and sends the assignments with SyncGroup. Protocol metadata and assignments
//!   are passed through untouched, so client-side assignors (range, roundrobin, sticky,
//!   cooperative-sticky) work. JoinGroup v4+ answers a new dynamic member MEMBER_ID_REQUIRED with
//!   its id first. Heartbeats during a rebalance answer REBALANCE_IN_PROGRESS.
//! - **Static membership.** A member with a `group.instance.id` that rejoins with an empty member
//!   id replaces its old member id; in a Stable group with unchanged protocols this happens
//!   without a rebalance (its assignment carries over). A request naming the old member id of an
//!   instance gets FENCED_INSTANCE_ID.
//! - **Timers.** One task ([`GroupCoordinator::run_timer`], on `tokio::time`, so simulated under
//!   madsim) ticks every [`TICK_MS`] ms: expires sessions (a member waiting in JoinGroup is not
//!   expired), pending member ids, and forces joins past their rebalance timeout. Every waiting
//!   request is also bounded on the handler side.
//! - **Offsets.** OffsetCommit is checked against the generation and member in Kafka's order
//!   (a stale generation is ILLEGAL_GENERATION in every state, REBALANCE_IN_PROGRESS only for the
//!   current generation in CompletingRebalance), or is a "simple" commit with generation -1 to a
//!   group without members; it is appended to `__consumer_offsets`
//!   ([`offsets`] for the record layout) through the broker's produce path and answered only once
//!   the flusher made the record durable (acks=all); the in-memory table is updated after that.
//!   OffsetDelete and DeleteGroups (empty groups only, else NON_EMPTY_GROUP) write tombstones.
//!   At broker start the table is rebuilt by reading the topic from its start. The topic is
//!   never compacted yet (the storage has no compaction) and has `retention.ms=-1`; it is listed
//!   in Metadata with `is_internal=true`.
//! - **Membership is in memory**, as in Kafka: after a coordinator restart members rejoin.
//! - No std lock is held across an `.await`: handlers lock, change the state, unlock, then await
//!   the `oneshot` answer or the durability of the offsets record, always with a timeout.
//! - **Initial rebalance delay.** The first rebalance of a group out of Empty waits
//!   `group.initial.rebalance.delay.ms` (default 3000, as Kafka), again by the delay each time a
//!   new member joined meanwhile, at most the rebalance timeout ([`state`]).
//!
//! Not built: KIP-848 (ConsumerGroupHeartbeat), offset expiry (`offsets.retention.minutes`),
//! `group.max.size`.

pub mod offsets;
pub mod state;

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use crate::broker::{Broker, Partition};
use crate::config::TopicConfig;
use crate::errors::{offsets_write_error, BrokerError};
use offsets::{CommittedOffset, OffsetKey, OFFSETS_TOPIC};
use state::{Group, Member};
pub use state::{GroupState, JoinMember, JoinResult, SyncResult};

/// Period of the coordinator's timer task.
pub const TICK_MS: u64 = 50;

/// Most time an OffsetCommit waits for its record to become durable.
pub const OFFSET_COMMIT_DURABLE_TIMEOUT_MS: u64 = 30_000;

/// Extra time a waiting JoinGroup/SyncGroup is given beyond the group's own timeouts.
pub const WAIT_MARGIN_MS: u64 = 5_000;

/// Longest group id, in bytes of UTF-8: the longest string the `__consumer_offsets` key layout
/// can hold (an `i16` length; Kafka's limit in practice, as its serializer refuses longer ones).
/// A longer id gets INVALID_GROUP_ID from every API that would create or write the group,
/// instead of a key cut short, which let groups sharing a prefix overwrite each other and lost
/// the offsets of an id cut inside a UTF-8 character.
pub const GROUP_ID_BYTES_MAX: usize = offsets::STRING_BYTES_MAX;

/// Whether a group id may name a group: non-empty, at most [`GROUP_ID_BYTES_MAX`] bytes.
pub fn check_group_id(group_id: &str) -> Result<(), ResponseError> {
    if group_id.is_empty() || group_id.len() > GROUP_ID_BYTES_MAX {
        return Err(ResponseError::InvalidGroupId);
    }
    Ok(())
}

/// Limits of the coordinator (Kafka's broker config names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// group.min.session.timeout.ms (default 6000).
    pub session_timeout_min_ms: i32,
    /// group.max.session.timeout.ms (default 1800000).
    pub session_timeout_max_ms: i32,
    /// offset.metadata.max.bytes (default 4096).
    pub offset_metadata_bytes_max: usize,
    /// group.initial.rebalance.delay.ms (default 3000): how long the first rebalance of a group
    /// out of Empty waits for more members, extended while members keep joining (see
    /// [`state`]); 0 completes it as soon as every member joined.
    pub initial_rebalance_delay_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_min_ms: 6_000,
            session_timeout_max_ms: 1_800_000,
            offset_metadata_bytes_max: 4096,
            initial_rebalance_delay_ms: 3_000,
        }
    }
}

/// A JoinGroup request, decoded from any version.
#[derive(Debug, Clone)]
pub struct JoinParams {
    /// Group id.
    pub group_id: String,
    /// Member id ("" for a new member).
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Protocol type.
    pub protocol_type: String,
    /// Protocols with metadata, in preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (the session timeout for v0).
    pub rebalance_timeout_ms: i32,
    /// Client id of the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// v4+: a new dynamic member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// What a JoinGroup or SyncGroup handler does next.
#[derive(Debug)]
pub enum Pending<T> {
    /// Answer now.
    Done(T),
    /// Await the answer, at most this long.
    Wait(oneshot::Receiver<T>, Duration),
}

/// One partition's offset in an OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitEntry {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset, leader epoch and metadata (the timestamp is set by the coordinator).
    pub offset: CommittedOffset,
}

/// A group in ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type ("" for groups that only hold offsets).
    pub protocol_type: String,
    /// State name.
    pub state: GroupState,
}

/// A member in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Metadata for the chosen protocol (only when Stable).
    pub metadata: Bytes,
    /// Assignment (only when Stable).
    pub assignment: Bytes,
}

/// A group in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State (Dead for an unknown group, as Kafka answers).
    pub state: GroupState,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol.
    pub protocol_name: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

/// The group coordinator of this node.
pub struct GroupCoordinator {
    groups: Mutex<BTreeMap<String, Group>>,
    config: Mutex<GroupConfig>,
    member_counter: AtomicU64,
}

impl Default for GroupCoordinator {
    fn default() -> Self {
        Self::new(GroupConfig::default())
    }
}

impl GroupCoordinator {
    /// A coordinator with no groups.
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        GroupCoordinator {
            groups: Mutex::new(BTreeMap::new()),
            config: Mutex::new(config),
            member_counter: AtomicU64::new(0),
        }
    }

    /// The coordinator's limits.
    pub fn config(&self) -> GroupConfig {
        self.config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the coordinator's limits (tests lower the minimum session timeout).
    pub fn set_config(&self, config: GroupConfig) {
        *self
            .config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn new_member_id(&self, client_id: &str, now: Duration) -> String {
        let counter = self.member_counter.fetch_add(1, Ordering::SeqCst);
        let mut hasher = DefaultHasher::new();
        (client_id, now.as_nanos(), counter, std::process::id()).hash(&mut hasher);
        let prefix = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        format!("{prefix}-{:016x}-{counter}", hasher.finish())
    }

    // ---- startup ----

    /// Creates `__consumer_offsets` if missing and rebuilds the committed offsets from it, one
    /// batch at a time through the bounded decoder. A batch that does not decode is skipped and
    /// counted in the log line, never a reason to refuse to start.
    pub fn load(&self, broker: &Broker) -> Result<(), BrokerError> {
        let partition = offsets_partition(broker)?;
        let mut position = partition.with_log(|log| Ok(log.log_start_offset()))?;
        let end = partition.with_log(|log| Ok(log.log_end_offset()))?;
        let mut groups = self.lock();
        let mut records = 0usize;
        let mut batches_skipped = 0usize;
        while position < end {
            let bytes = partition.with_log(|log| log.read(position, 1 << 20, end))?;
            if bytes.is_empty() {
                break;
            }
            // The next position comes from the batch headers: compaction can leave batches
            // without records.
            let next = strata_storage::batch::batches(&bytes)
                .map_while(Result::ok)
                .last()
                .map(|(header, _)| header.last_offset() + 1);
            let count = offsets::replay_batches(&bytes, |offset, key, value| {
                apply_record(&mut groups, offset, key, value)
            });
            records += count.records;
            batches_skipped += count.batches_skipped;
            let Some(next) = next else {
                break;
            };
            assert!(next > position, "offsets replay must move forward");
            position = next;
        }
        tracing::info!(
            records,
            batches_skipped,
            groups = groups.len(),
            "group coordinator loaded committed offsets"
        );
        Ok(())
    }

    // ---- membership ----

    /// JoinGroup.
    pub fn join(&self, now: Duration, p: JoinParams) -> Pending<JoinResult> {
        let config = self.config();
        if let Err(error) = check_group_id(&p.group_id) {
            return Pending::Done(JoinResult::error(error, &p.member_id));
        }
        if p.session_timeout_ms < config.session_timeout_min_ms
            || p.session_timeout_ms > config.session_timeout_max_ms
        {
            return Pending::Done(JoinResult::error(
                ResponseError::InvalidSessionTimeout,
                &p.member_id,
            ));
        }
        let mut groups = self.lock();
        if !groups.contains_key(&p.group_id) {
            if !p.member_id.is_empty() {
                return Pending::Done(JoinResult::error(
                    ResponseError::UnknownMemberId,
                    &p.member_id,
                ));
            }
            groups.insert(p.group_id.clone(), Group::new(p.group_id.clone()));
        }
        let group = groups.get_mut(&p.group_id).expect("group inserted above");
        group.initial_rebalance_delay = Duration::from_millis(config.initial_rebalance_delay_ms);
        if group.state == GroupState::Dead {
            return Pending::Done(JoinResult::error(
                ResponseError::CoordinatorNotAvailable,
                &p.member_id,
            ));
        }
        let known = !p.member_id.is_empty() && group.members.contains_key(&p.member_id);
        let compatible = if known {
            group.supports_update(&p.member_id, &p.protocol_type, &p.protocols)
        } else {
            group.supports(&p.protocol_type, &p.protocols)
        };
        if !compatible {
            return Pending::Done(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &p.member_id,
            ));
        }
        let wait = |group: &Group, now: Duration| {
            let deadline = group.join_deadline().unwrap_or(now);
            deadline.saturating_sub(now) + Duration::from_millis(WAIT_MARGIN_MS)
        };
        if p.member_id.is_empty() {
            let new_id = self.new_member_id(&p.client_id, now);
            if let Some(instance) = p.group_instance_id.clone() {
                if let Some(old_id) = group.static_members.get(&instance).cloned() {
                    return replace_static_member(group, now, p, old_id, new_id, wait);
                }
            } else if p.require_known_member_id {
                let deadline = now + Duration::from_millis(p.session_timeout_ms.max(0) as u64);
                group.pending.insert(new_id.clone(), deadline);
                return Pending::Done(JoinResult::error(ResponseError::MemberIdRequired, &new_id));
            }
            let (tx, rx) = oneshot::channel();
            group.add_member(new_member(&p, new_id, now, Some(tx)));
            group.membership_changed(now);
            let timeout = wait(group, now);
            return Pending::Wait(rx, timeout);
        }
        if group.pending.remove(&p.member_id).is_some() {
            let (tx, rx) = oneshot::channel();
            group.add_member(new_member(&p, p.member_id.clone(), now, Some(tx)));
            group.membership_changed(now);
            let timeout = wait(group, now);
            return Pending::Wait(rx, timeout);
        }
        if let Some(instance) = &p.group_instance_id {
            if let Some(current) = group.static_members.get(instance) {
                if *current != p.member_id {
                    return Pending::Done(JoinResult::error(
                        ResponseError::FencedInstanceId,
                        &p.member_id,
                    ));
                }
            }
        }
        let Some(member) = group.members.get_mut(&p.member_id) else {
            return Pending::Done(JoinResult::error(
                ResponseError::UnknownMemberId,
                &p.member_id,
            ));
        };
        let unchanged = member.protocols == p.protocols;
        member.last_heartbeat = now;
        match group.state {
            GroupState::Empty | GroupState::Dead => Pending::Done(JoinResult::error(
                ResponseError::UnknownMemberId,
                &p.member_id,
            )),
            GroupState::CompletingRebalance if unchanged => {
                Pending::Done(group.current_join_result(&p.member_id))
            }
            GroupState::Stable
                if unchanged && group.leader.as_deref() != Some(p.member_id.as_str()) =>
            {
                Pending::Done(group.current_join_result(&p.member_id))
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                let member = group
                    .members
                    .get_mut(&p.member_id)
                    .expect("member checked above");
                update_member(member, &p, Some(tx));
                group.membership_changed(now);
                let timeout = wait(group, now);
                Pending::Wait(rx, timeout)
            }
        }
    }

    /// SyncGroup. `assignments` is only read from the leader.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &self,
        now: Duration,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: BTreeMap<String, Bytes>,
    ) -> Pending<SyncResult> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Pending::Done(SyncResult::error(ResponseError::UnknownMemberId));
        };
        if let Err(error) = check_member(group, member_id, group_instance_id) {
            return Pending::Done(SyncResult::error(error));
        }
        if generation_id != group.generation {
            return Pending::Done(SyncResult::error(ResponseError::IllegalGeneration));
        }
        if protocol_type.is_some_and(|t| group.protocol_type.as_deref() != Some(t))
            || protocol_name.is_some_and(|n| group.protocol_name.as_deref() != Some(n))
        {
            return Pending::Done(SyncResult::error(ResponseError::InconsistentGroupProtocol));
        }
        let session_ms = {
            let member = group.members.get_mut(member_id).expect("checked member");
            member.last_heartbeat = now;
            member.session_timeout_ms.max(member.rebalance_timeout_ms)
        };
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                Pending::Done(SyncResult::error(ResponseError::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                Pending::Done(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => {
                let member = &group.members[member_id];
                Pending::Done(SyncResult {
                    error: None,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                })
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(member) = group.members.get_mut(member_id) {
                    member.sync_waiter = Some(tx);
                }
                if group.leader.as_deref() == Some(member_id) {
                    group.complete_sync(assignments);
                }
                Pending::Wait(
                    rx,
                    Duration::from_millis(session_ms.max(0) as u64 + WAIT_MARGIN_MS),
                )
            }
        }
    }

    /// Heartbeat: `None` on success.
    pub fn heartbeat(
        &self,
        now: Duration,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Option<ResponseError> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if group.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        if let Err(error) = check_member(group, member_id, group_instance_id) {
            return Some(error);
        }
        if generation_id != group.generation {
            return Some(ResponseError::IllegalGeneration);
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_heartbeat = now;
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => Some(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => None,
        }
    }

    /// LeaveGroup of `members` (member id, instance id); per-member errors, or a group-level
    /// error.
    pub fn leave(
        &self,
        now: Duration,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if group.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let mut results = Vec::with_capacity(members.len());
        let mut changed = false;
        for (member_id, instance_id) in members {
            let target = match instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    None => Err(ResponseError::UnknownMemberId),
                    Some(id) if !member_id.is_empty() && id != member_id => {
                        Err(ResponseError::FencedInstanceId)
                    }
                    Some(id) => Ok(id.clone()),
                },
                None if group.pending.remove(member_id).is_some() => {
                    changed = true;
                    results.push(None);
                    continue;
                }
                None if group.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(ResponseError::UnknownMemberId),
            };
            match target {
                Ok(id) => {
                    tracing::info!(group = %group_id, member = %id, "member left");
                    group.remove_member(&id, ResponseError::UnknownMemberId);
                    changed = true;
                    results.push(None);
                }
                Err(error) => results.push(Some(error)),
            }
        }
        if changed {
            group.membership_changed(now);
        }
        Ok(results)
    }

    // ---- offsets ----

    /// Checks that a commit by `member_id` at `generation_id` is allowed; creates the group for
    /// a simple commit (generation < 0) to a group that does not exist. The order of the checks
    /// is Kafka's (`ClassicGroup.validateOffsetCommit`): a commit naming a member (or a
    /// generation >= 0) must come from a current member at the group's current generation, else
    /// UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID / ILLEGAL_GENERATION, in every state; a current
    /// member at the current generation commits in Stable and PreparingRebalance, and is told
    /// REBALANCE_IN_PROGRESS only in CompletingRebalance (it has joined but has no assignment
    /// yet). A commit without member and generation (-1) is accepted only by an Empty group.
    pub fn check_commit(
        &self,
        now: Duration,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        check_group_id(group_id)?;
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            if generation_id < 0 {
                groups.insert(group_id.to_string(), Group::new(group_id.to_string()));
                return Ok(());
            }
            return Err(ResponseError::IllegalGeneration);
        };
        if group.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
            if let Some(instance) = group_instance_id {
                match group.static_members.get(instance) {
                    None => return Err(ResponseError::UnknownMemberId),
                    Some(current) if current != member_id => {
                        return Err(ResponseError::FencedInstanceId)
                    }
                    Some(_) => {}
                }
            }
            if !group.members.contains_key(member_id) {
                return Err(ResponseError::UnknownMemberId);
            }
            if generation_id != group.generation {
                return Err(ResponseError::IllegalGeneration);
            }
        } else if group.state != GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_heartbeat = now;
        }
        Ok(())
    }

    /// Writes `entries` to `__consumer_offsets`, waits until durable, then makes them visible.
    pub async fn commit_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        entries: Vec<CommitEntry>,
    ) -> Result<(), ResponseError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now_ms = broker.clock().now_ms();
        let records: Vec<(Bytes, Option<Bytes>)> = entries
            .iter()
            .map(|e| {
                let key = OffsetKey {
                    group: group_id.to_string(),
                    topic: e.topic.clone(),
                    partition: e.partition,
                };
                let mut value = e.offset.clone();
                value.commit_timestamp_ms = now_ms;
                (
                    offsets::encode_key(&key),
                    Some(offsets::encode_value(&value)),
                )
            })
            .collect();
        let base_offset = append_durable(broker, &records).await?;
        let mut groups = self.lock();
        for (i, (key, value)) in records.into_iter().enumerate() {
            apply_record(&mut groups, base_offset + i as i64, Some(key), value);
        }
        Ok(())
    }

    /// Committed offsets of `group_id`: of `partitions` (`None`: every committed one).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        let groups = self.lock();
        let group = groups.get(group_id);
        match partitions {
            Some(wanted) => wanted
                .iter()
                .map(|(topic, partition)| {
                    let committed = group.and_then(|g| {
                        g.offsets
                            .get(&(topic.clone(), *partition))
                            .map(|(c, _)| c.clone())
                    });
                    (topic.clone(), *partition, committed)
                })
                .collect(),
            None => group
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), (c, _))| (t.clone(), *p, Some(c.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// OffsetDelete: tombstones for the partitions of topics the group is not subscribed to.
    /// Per-partition errors, or a group-level error.
    pub async fn delete_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let mut results = Vec::with_capacity(partitions.len());
        let mut tombstones = Vec::new();
        {
            let groups = self.lock();
            let Some(group) = groups.get(group_id) else {
                return Err(ResponseError::GroupIdNotFound);
            };
            let subscribed = subscribed_topics(group)?;
            for (topic, partition) in partitions {
                let exists = broker
                    .topic(topic)
                    .is_some_and(|t| t.partition(*partition).is_some());
                if !exists {
                    results.push(Some(ResponseError::UnknownTopicOrPartition));
                } else if subscribed.as_ref().is_some_and(|s| s.contains(topic)) {
                    results.push(Some(ResponseError::GroupSubscribedToTopic));
                } else {
                    if group.offsets.contains_key(&(topic.clone(), *partition)) {
                        tombstones.push(offsets::encode_key(&OffsetKey {
                            group: group_id.to_string(),
                            topic: topic.clone(),
                            partition: *partition,
                        }));
                    }
                    results.push(None);
                }
            }
        }
        if !tombstones.is_empty() {
            let records: Vec<(Bytes, Option<Bytes>)> =
                tombstones.into_iter().map(|k| (k, None)).collect();
            let base_offset = append_durable(broker, &records).await?;
            let mut groups = self.lock();
            for (i, (key, value)) in records.into_iter().enumerate() {
                apply_record(&mut groups, base_offset + i as i64, Some(key), value);
            }
        }
        Ok(results)
    }

    /// DeleteGroups of one group: only an empty group; its offsets get tombstones.
    pub async fn delete_group(&self, broker: &Broker, group_id: &str) -> Result<(), ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let keys = {
            let mut groups = self.lock();
            let Some(group) = groups.get_mut(group_id) else {
                return Err(ResponseError::GroupIdNotFound);
            };
            match group.state {
                GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
                GroupState::Empty if group.members.is_empty() && group.pending.is_empty() => {}
                _ => return Err(ResponseError::NonEmptyGroup),
            }
            // Dead while the tombstones are written: joins and commits are refused meanwhile.
            group.state = GroupState::Dead;
            group
                .offsets
                .keys()
                .map(|(topic, partition)| {
                    offsets::encode_key(&OffsetKey {
                        group: group_id.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                    })
                })
                .collect::<Vec<_>>()
        };
        if !keys.is_empty() {
            let records: Vec<(Bytes, Option<Bytes>)> =
                keys.into_iter().map(|k| (k, None)).collect();
            if let Err(error) = append_durable(broker, &records).await {
                if let Some(group) = self.lock().get_mut(group_id) {
                    group.state = GroupState::Empty;
                }
                return Err(error);
            }
        }
        self.lock().remove(group_id);
        tracing::info!(group = group_id, "group deleted");
        Ok(())
    }

    // ---- admin views ----

    /// ListGroups.
    pub fn list(&self) -> Vec<GroupListing> {
        self.lock()
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect()
    }

    /// DescribeGroups of one group.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let stable = group.state == GroupState::Stable;
        GroupDescription {
            group_id: group.id.clone(),
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                group.protocol_name.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members: group
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        group.member_metadata(m)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    // ---- timer ----

    /// One timer pass over every group at monotonic time `now`.
    pub fn tick(&self, now: Duration) {
        let mut groups = self.lock();
        for group in groups.values_mut() {
            group.tick(now);
        }
        groups.retain(|_, g| !g.is_disposable());
    }

    /// Ticks every [`TICK_MS`] until the broker shuts down; then answers every waiting request
    /// NOT_COORDINATOR.
    pub async fn run_timer(broker: Arc<Broker>) {
        let period = Duration::from_millis(TICK_MS);
        loop {
            tokio::select! {
                biased;
                _ = broker.shutdown_started() => break,
                _ = tokio::time::sleep(period) => {}
            }
            broker.groups().tick(broker.clock().monotonic());
        }
        let mut groups = broker.groups().lock();
        for group in groups.values_mut() {
            group.fail_waiters(ResponseError::NotCoordinator);
        }
    }
}

fn new_member(
    p: &JoinParams,
    id: String,
    now: Duration,
    waiter: Option<oneshot::Sender<JoinResult>>,
) -> Member {
    Member {
        id,
        instance_id: p.group_instance_id.clone(),
        client_id: p.client_id.clone(),
        client_host: p.client_host.clone(),
        session_timeout_ms: p.session_timeout_ms,
        rebalance_timeout_ms: p.rebalance_timeout_ms,
        protocol_type: p.protocol_type.clone(),
        protocols: p.protocols.clone(),
        assignment: Bytes::new(),
        join_waiter: waiter,
        sync_waiter: None,
        last_heartbeat: now,
    }
}

fn update_member(member: &mut Member, p: &JoinParams, waiter: Option<oneshot::Sender<JoinResult>>) {
    member.protocols = p.protocols.clone();
    member.protocol_type = p.protocol_type.clone();
    member.session_timeout_ms = p.session_timeout_ms;
    member.rebalance_timeout_ms = p.rebalance_timeout_ms;
    member.client_id = p.client_id.clone();
    member.client_host = p.client_host.clone();
    if let Some(old) = member.join_waiter.take() {
        // A duplicate join from the same member: the older request is superseded.
        let _ = old.send(JoinResult::error(
            ResponseError::RebalanceInProgress,
            &member.id,
        ));
    }
    member.join_waiter = waiter;
}

/// A static member rejoining with an empty member id: `new_id` replaces `old_id`.
fn replace_static_member(
    group: &mut Group,
    now: Duration,
    p: JoinParams,
    old_id: String,
    new_id: String,
    wait: impl Fn(&Group, Duration) -> Duration,
) -> Pending<JoinResult> {
    let was_leader = group.leader.as_deref() == Some(old_id.as_str());
    let Some(mut old) = group.remove_member(&old_id, ResponseError::FencedInstanceId) else {
        return Pending::Done(JoinResult::error(ResponseError::UnknownMemberId, ""));
    };
    let unchanged = old.protocols == p.protocols;
    let assignment = std::mem::take(&mut old.assignment);
    let mut member = new_member(&p, new_id.clone(), now, None);
    member.assignment = assignment;
    group.add_member(member);
    if was_leader {
        group.leader = Some(new_id.clone());
    }
    tracing::info!(group = %group.id, old = %old_id, new = %new_id, "static member replaced");
    if group.state == GroupState::Stable && unchanged {
        return Pending::Done(group.current_join_result(&new_id));
    }
    let (tx, rx) = oneshot::channel();
    if let Some(member) = group.members.get_mut(&new_id) {
        member.join_waiter = Some(tx);
    }
    group.membership_changed(now);
    let timeout = wait(group, now);
    Pending::Wait(rx, timeout)
}

/// The member (and instance) checks shared by SyncGroup and Heartbeat.
fn check_member(
    group: &Group,
    member_id: &str,
    group_instance_id: Option<&str>,
) -> Result<(), ResponseError> {
    if let Some(instance) = group_instance_id {
        if let Some(current) = group.static_members.get(instance) {
            if current != member_id {
                return Err(ResponseError::FencedInstanceId);
            }
        }
    }
    if !group.members.contains_key(member_id) {
        return Err(ResponseError::UnknownMemberId);
    }
    Ok(())
}

/// The topics a non-empty consumer group subscribes to (`None` for an empty group); an error
/// for a non-empty group of another protocol type.
fn subscribed_topics(group: &Group) -> Result<Option<Vec<String>>, ResponseError> {
    if group.members.is_empty() {
        return Ok(None);
    }
    if group.protocol_type.as_deref() != Some("consumer") {
        return Err(ResponseError::NonEmptyGroup);
    }
    let mut topics = Vec::new();
    for member in group.members.values() {
        for (_, metadata) in &member.protocols {
            match subscription_topics(metadata) {
                Some(list) => topics.extend(list),
                // Not a subscription we can read: assume it may name every topic.
                None => return Err(ResponseError::NonEmptyGroup),
            }
        }
    }
    Ok(Some(topics))
}

/// The topic names of a consumer-protocol subscription (`version: i16`, then `topics: [string]`,
/// the same in every version). Read by hand rather than with kafka-protocol's decoder, which
/// preallocates arrays from the untrusted length (a member's metadata is arbitrary client bytes).
fn subscription_topics(metadata: &Bytes) -> Option<Vec<String>> {
    let mut buf = metadata.clone();
    if buf.remaining() < 6 {
        return None;
    }
    let _version = buf.get_i16();
    let count = buf.get_i32();
    if count < 0 || count as usize > buf.remaining() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if buf.remaining() < 2 {
            return None;
        }
        let len = buf.get_i16();
        if len < 0 || len as usize > buf.remaining() {
            return None;
        }
        let name = buf.split_to(len as usize);
        topics.push(String::from_utf8(name.to_vec()).ok()?);
    }
    Some(topics)
}

/// Applies one `__consumer_offsets` record at log offset `offset` to the table.
fn apply_record(
    groups: &mut BTreeMap<String, Group>,
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
) {
    let Some(key) = key else {
        tracing::warn!(offset, "offsets record without a key skipped");
        return;
    };
    let key = match offsets::decode_key(key) {
        Ok(Some(key)) => key,
        Ok(None) => return,
        Err(reason) => {
            tracing::warn!(offset, %reason, "undecodable offsets key skipped");
            return;
        }
    };
    let slot = (key.topic.clone(), key.partition);
    match value {
        None => {
            if let Some(group) = groups.get_mut(&key.group) {
                if group.offsets.get(&slot).is_some_and(|(_, at)| *at < offset) {
                    group.offsets.remove(&slot);
                }
                if group.is_disposable() {
                    groups.remove(&key.group);
                }
            }
        }
        Some(value) => {
            let value = match offsets::decode_value(value) {
                Ok(value) => value,
                Err(reason) => {
                    tracing::warn!(offset, %reason, "undecodable offsets value skipped");
                    return;
                }
            };
            let group = groups
                .entry(key.group.clone())
                .or_insert_with(|| Group::new(key.group.clone()));
            // Concurrent commits may finish out of log order: the later record wins.
            if group.offsets.get(&slot).is_none_or(|(_, at)| *at < offset) {
                group.offsets.insert(slot, (value, offset));
            }
        }
    }
}

/// The one partition of `__consumer_offsets`, created if missing: compacted (Kafka's
/// `cleanup.policy=compact`, which the broker applies to this topic whatever its stored config),
/// never deleted by time, with `offsets.topic.segment.bytes` segments.
fn offsets_partition(broker: &Broker) -> Result<Arc<Partition>, BrokerError> {
    let topic = match broker.topic(OFFSETS_TOPIC) {
        Some(topic) => topic,
        None => {
            let mut overrides = BTreeMap::new();
            overrides.insert("retention.ms".to_string(), "-1".to_string());
            overrides.insert("cleanup.policy".to_string(), "compact".to_string());
            overrides.insert(
                "segment.bytes".to_string(),
                broker.config().offsets_segment_bytes.to_string(),
            );
            let config =
                TopicConfig::from_overrides(overrides).map_err(BrokerError::InvalidConfig)?;
            match broker.create_topic(OFFSETS_TOPIC, 1, config, false) {
                Ok(Some(topic)) => topic,
                Ok(None) | Err(BrokerError::TopicAlreadyExists(_)) => {
                    broker.topic(OFFSETS_TOPIC).ok_or_else(|| {
                        BrokerError::UnknownTopicOrPartition(OFFSETS_TOPIC.to_string())
                    })?
                }
                Err(error) => return Err(error),
            }
        }
    };
    topic
        .partition(0)
        .cloned()
        .ok_or_else(|| BrokerError::UnknownTopicOrPartition(format!("{OFFSETS_TOPIC}-0")))
}

/// Appends `records` to `__consumer_offsets` and waits until they are durable; returns the
/// log offset of the first record.
async fn append_durable(
    broker: &Broker,
    records: &[(Bytes, Option<Bytes>)],
) -> Result<i64, ResponseError> {
    let partition = offsets_partition(broker).map_err(|e| offsets_write_error(&e))?;
    let batch = offsets::encode_batch(records, broker.clock().now_ms())
        .map_err(|_| ResponseError::UnknownServerError)?;
    let outcome = broker
        .append(&partition, &batch)
        .map_err(|e| offsets_write_error(&e))?;
    assert_eq!(
        outcome.last_offset - outcome.base_offset + 1,
        records.len() as i64,
        "one offset per offsets record"
    );
    // Planted bug (simulation only, see docs/simulation.md): OffsetCommit answers (and the
    // offsets become visible) before the flusher has made the record durable.
    // (`if true` keeps the code below reachable for the compiler.)
    #[cfg(strata_bug = "offsets-not-durable")]
    if true {
        return Ok(outcome.base_offset);
    }
    match tokio::time::timeout(
        Duration::from_millis(OFFSET_COMMIT_DURABLE_TIMEOUT_MS),
        partition.wait_durable(outcome.last_offset + 1),
    )
    .await
    {
        Ok(Ok(())) => Ok(outcome.base_offset),
        Ok(Err(error)) => Err(offsets_write_error(&error)),
        Err(_) => Err(ResponseError::CoordinatorNotAvailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(group: &str, member: &str, instance: Option<&str>) -> JoinParams {
        JoinParams {
            group_id: group.to_string(),
            member_id: member.to_string(),
            group_instance_id: instance.map(str::to_string),
            protocol_type: "consumer".to_string(),
            protocols: vec![("range".to_string(), Bytes::from_static(b"m"))],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            client_id: "c".to_string(),
            client_host: "/127.0.0.1".to_string(),
            require_known_member_id: true,
        }
    }

    fn done<T: std::fmt::Debug>(p: Pending<T>) -> T {
        match p {
            Pending::Done(t) => t,
            Pending::Wait(mut rx, _) => rx.try_recv().expect("answered already"),
        }
    }

    /// A coordinator whose first rebalances are not delayed.
    fn undelayed() -> GroupCoordinator {
        GroupCoordinator::new(GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        })
    }

    /// A coordinator with `group.initial.rebalance.delay.ms` = `delay_ms`.
    fn delayed(delay_ms: u64) -> GroupCoordinator {
        GroupCoordinator::new(GroupConfig {
            initial_rebalance_delay_ms: delay_ms,
            ..GroupConfig::default()
        })
    }

    /// A new dynamic member's join (MEMBER_ID_REQUIRED, then the join): its member id and the
    /// pending answer.
    fn join_new_member(
        c: &GroupCoordinator,
        now: Duration,
        rebalance_timeout_ms: i32,
    ) -> (String, oneshot::Receiver<JoinResult>) {
        let first = done(c.join(now, params("g", "", None)));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let mut p = params("g", &first.member_id, None);
        p.rebalance_timeout_ms = rebalance_timeout_ms;
        match c.join(now, p) {
            Pending::Wait(rx, _) => (first.member_id, rx),
            Pending::Done(answer) => panic!("answered at once: {answer:?}"),
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Consumers started together get their first generation together: the first rebalance of
    /// a new group waits `group.initial.rebalance.delay.ms`, and again while members keep
    /// joining, instead of giving the first member a generation alone.
    #[test]
    fn initial_rebalance_waits_for_members_joining_within_the_delay() {
        let c = delayed(3_000);
        let (a, mut rx_a) = join_new_member(&c, secs(0.0), 60_000);
        c.tick(secs(1.0));
        assert!(rx_a.try_recv().is_err(), "no generation before the delay");
        let (b, mut rx_b) = join_new_member(&c, secs(2.0), 60_000);
        // The delay ends at 3 s, but B joined meanwhile: it is armed again (until 6 s).
        c.tick(secs(3.0));
        c.tick(secs(5.9));
        assert!(rx_a.try_recv().is_err(), "delay extended for a new member");
        assert_eq!(c.describe("g").state, GroupState::PreparingRebalance);
        c.tick(secs(6.0));
        let answer_a = rx_a.try_recv().expect("join completed after the delays");
        let answer_b = rx_b.try_recv().expect("join completed for both");
        assert_eq!(answer_a.error, None);
        assert_eq!(answer_a.generation_id, 1, "one generation for both");
        assert_eq!(answer_b.generation_id, 1);
        assert_eq!(answer_a.leader, a, "the first member leads");
        let mut members: Vec<String> = answer_a
            .members
            .iter()
            .map(|m| m.member_id.clone())
            .collect();
        members.sort();
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort();
        assert_eq!(members, expected, "the leader assigns to both members");
    }

    /// The extensions stop once the rebalance timeout is used up, even if members keep joining.
    #[test]
    fn initial_delay_is_bounded_by_the_rebalance_timeout() {
        let c = delayed(3_000);
        let (_, mut rx_a) = join_new_member(&c, secs(0.0), 5_000);
        let (_, _rx_b) = join_new_member(&c, secs(1.0), 5_000);
        c.tick(secs(3.0));
        // Extended by what is left of the 5 s rebalance timeout (2 s), not by 3 s.
        let (_, _rx_c) = join_new_member(&c, secs(4.0), 5_000);
        c.tick(secs(4.9));
        assert!(rx_a.try_recv().is_err());
        c.tick(secs(5.0));
        let answer = rx_a.try_recv().expect("completed at the rebalance timeout");
        assert_eq!(answer.generation_id, 1);
        assert_eq!(
            answer.members.len(),
            3,
            "a member joined in the last delay is included"
        );
    }

    /// A lone consumer gets its generation after one delay; later rebalances of the (non-empty)
    /// group complete as soon as every member rejoined, without a delay.
    #[test]
    fn only_the_rebalance_out_of_empty_is_delayed() {
        let c = delayed(3_000);
        let (a, mut rx_a) = join_new_member(&c, secs(0.0), 60_000);
        c.tick(secs(2.9));
        assert!(rx_a.try_recv().is_err());
        c.tick(secs(3.0));
        assert_eq!(rx_a.try_recv().expect("one delay").generation_id, 1);
        let mut assignments = BTreeMap::new();
        assignments.insert(a.clone(), Bytes::from_static(b"a"));
        done(c.sync(secs(3.0), "g", 1, &a, None, None, None, assignments));
        // A second member: a rebalance from Stable, complete once A rejoined.
        let (_, mut rx_b) = join_new_member(&c, secs(4.0), 60_000);
        let rejoined = done(c.join(secs(4.1), params("g", &a, None)));
        assert_eq!(rejoined.generation_id, 2);
        assert_eq!(rx_b.try_recv().expect("no delay").generation_id, 2);
    }

    /// OffsetCommit answers as Kafka's classic groups do: a stale generation is
    /// ILLEGAL_GENERATION in every state (librdkafka then rejoins instead of retrying), the
    /// current generation commits in Stable and PreparingRebalance and is told
    /// REBALANCE_IN_PROGRESS only in CompletingRebalance; generation -1 commits only to a group
    /// without members.
    #[test]
    fn offset_commit_generation_checks_follow_kafka() {
        let c = undelayed();
        let t = Duration::from_secs(1);
        assert_eq!(
            c.check_commit(t, "g", -1, "", None),
            Ok(()),
            "simple commit, new group"
        );
        let a = done(c.join(t, params("g", "", None))).member_id;
        let joined_a = done(c.join(t, params("g", &a, None)));
        assert_eq!(joined_a.generation_id, 1);
        // CompletingRebalance at generation 1.
        assert_eq!(
            c.check_commit(t, "g", 1, &a, None),
            Err(ResponseError::RebalanceInProgress)
        );
        assert_eq!(
            c.check_commit(t, "g", 0, &a, None),
            Err(ResponseError::IllegalGeneration),
            "stale generation during a rebalance"
        );
        let mut assignments = BTreeMap::new();
        assignments.insert(a.clone(), Bytes::from_static(b"a"));
        done(c.sync(t, "g", 1, &a, None, None, None, assignments));
        assert_eq!(c.check_commit(t, "g", 1, &a, None), Ok(()), "Stable");
        assert_eq!(
            c.check_commit(t, "g", 2, &a, None),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            c.check_commit(t, "g", -1, "", None),
            Err(ResponseError::UnknownMemberId),
            "simple commit to a group with members"
        );
        assert_eq!(
            c.check_commit(t, "g", 1, "nobody", None),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            c.check_commit(t, "g", 1, &a, Some("unknown-instance")),
            Err(ResponseError::UnknownMemberId),
            "an instance id the group does not know"
        );
        // B joins: PreparingRebalance, A still at generation 1.
        let b = done(c.join(t, params("g", "", None))).member_id;
        let _pending_b = c.join(t, params("g", &b, None));
        assert_eq!(c.describe("g").state, GroupState::PreparingRebalance);
        assert_eq!(
            c.check_commit(t, "g", 1, &a, None),
            Ok(()),
            "the current generation commits while others join"
        );
        assert_eq!(
            c.check_commit(t, "g", 0, &a, None),
            Err(ResponseError::IllegalGeneration)
        );
        // A rejoins: CompletingRebalance at generation 2; A's old generation is stale.
        let rejoined = done(c.join(t, params("g", &a, None)));
        assert_eq!(rejoined.generation_id, 2);
        assert_eq!(
            c.check_commit(t, "g", 1, &a, None),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            c.check_commit(t, "g", 2, &b, None),
            Err(ResponseError::RebalanceInProgress)
        );
    }

    #[test]
    fn single_member_joins_syncs_and_heartbeats() {
        let c = undelayed();
        let t = Duration::from_secs(1);
        let first = done(c.join(t, params("g", "", None)));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let joined = done(c.join(t, params("g", &first.member_id, None)));
        assert_eq!(joined.error, None);
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.leader, first.member_id);
        assert_eq!(joined.members.len(), 1);
        let mut assignments = BTreeMap::new();
        assignments.insert(first.member_id.clone(), Bytes::from_static(b"a"));
        let synced = done(c.sync(t, "g", 1, &first.member_id, None, None, None, assignments));
        assert_eq!(synced.assignment, Bytes::from_static(b"a"));
        assert_eq!(c.heartbeat(t, "g", 1, &first.member_id, None), None);
        assert_eq!(
            c.heartbeat(t, "g", 0, &first.member_id, None),
            Some(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            c.heartbeat(t, "g", 1, "nobody", None),
            Some(ResponseError::UnknownMemberId)
        );
        // The session expires without heartbeats: the member is removed, and the group, empty
        // and without offsets, is forgotten (described as Dead, like Kafka).
        c.tick(t + Duration::from_secs(11));
        assert_eq!(
            c.heartbeat(t, "g", 1, &first.member_id, None),
            Some(ResponseError::UnknownMemberId)
        );
        assert_eq!(c.describe("g").state, GroupState::Dead);
    }

    #[test]
    fn subscription_topics_reads_consumer_protocol_metadata() {
        use bytes::BufMut;
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        for version in 0..=3i16 {
            let subscription = ConsumerProtocolSubscription::default().with_topics(vec![
                StrBytes::from_static_str("orders"),
                StrBytes::from_static_str("audit"),
            ]);
            let mut buf = bytes::BytesMut::new();
            buf.put_i16(version);
            subscription.encode(&mut buf, version).unwrap();
            let bytes = buf.freeze();
            assert_eq!(
                subscription_topics(&bytes),
                Some(vec!["orders".to_string(), "audit".to_string()]),
                "v{version}"
            );
            for len in 0..8 {
                assert_eq!(subscription_topics(&bytes.slice(..len)), None, "len {len}");
            }
        }
        // A huge announced count is refused without allocating.
        let hostile = Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 1, b'x']);
        assert_eq!(subscription_topics(&hostile), None);
    }

    #[test]
    fn static_member_rejoin_keeps_assignment_without_rebalance() {
        let c = undelayed();
        let t = Duration::from_secs(1);
        let joined = done(c.join(t, params("g", "", Some("i1"))));
        assert_eq!(joined.error, None);
        let mut assignments = BTreeMap::new();
        assignments.insert(joined.member_id.clone(), Bytes::from_static(b"a"));
        done(c.sync(
            t,
            "g",
            1,
            &joined.member_id,
            Some("i1"),
            None,
            None,
            assignments,
        ));
        let again = done(c.join(t, params("g", "", Some("i1"))));
        assert_eq!(again.error, None);
        assert_eq!(again.generation_id, 1, "no rebalance");
        assert_ne!(again.member_id, joined.member_id);
        let synced = done(c.sync(
            t,
            "g",
            1,
            &again.member_id,
            Some("i1"),
            None,
            None,
            BTreeMap::new(),
        ));
        assert_eq!(synced.assignment, Bytes::from_static(b"a"));
        assert_eq!(
            c.heartbeat(t, "g", 1, &joined.member_id, Some("i1")),
            Some(ResponseError::FencedInstanceId)
        );
    }
}
