//! One classic consumer group: members, generation, protocol and committed offsets, with the
//! state transitions of Kafka's `GroupCoordinator` (Empty, PreparingRebalance,
//! CompletingRebalance, Stable, Dead).
//!
//! Everything here is synchronous and runs under the coordinator's lock; waiting JoinGroup and
//! SyncGroup requests are `oneshot` senders stored in their member and answered by the transition
//! that completes them.
//!
//! The first rebalance of a group leaving Empty is delayed as Kafka's InitialDelayedJoin does
//! (`group.initial.rebalance.delay.ms`, [`Group::initial_rebalance_delay`]): the join completes
//! only when the delay passed, and each time a new member joined during a delay the delay is
//! armed again, until the group's rebalance timeout is used up. So consumers started together get
//! their first generation together instead of the first one alone and a second rebalance at once.
//! A delay of zero completes the join as soon as every member joined, as any other rebalance.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::offsets::CommittedOffset;

/// The states of a classic group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (the group may still hold committed offsets).
    Empty,
    /// Waiting for every known member to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment (SyncGroup).
    CompletingRebalance,
    /// Assignment distributed.
    Stable,
    /// Being deleted.
    Dead,
}

impl GroupState {
    /// Kafka's name of the state (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// One member in a JoinGroup answer to the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// The member's metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// The answer to a JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// Error (`None` on success).
    pub error: Option<ResponseError>,
    /// Generation id (-1 on error).
    pub generation_id: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen protocol.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// The joining member's id (assigned by the coordinator for new members).
    pub member_id: String,
    /// Every member with its metadata: only in the leader's answer.
    pub members: Vec<JoinMember>,
}

impl JoinResult {
    /// An error answer.
    pub fn error(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// The answer to a SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    /// Error (`None` on success).
    pub error: Option<ResponseError>,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen protocol.
    pub protocol_name: Option<String>,
    /// The member's assignment.
    pub assignment: Bytes,
}

impl SyncResult {
    /// An error answer.
    pub fn error(error: ResponseError) -> SyncResult {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A group member.
#[derive(Debug)]
pub struct Member {
    /// Member id.
    pub id: String,
    /// Static instance id (`group.instance.id`).
    pub instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Protocol type (e.g. `consumer`).
    pub protocol_type: String,
    /// Supported protocols in preference order, with their metadata (passed through untouched).
    pub protocols: Vec<(String, Bytes)>,
    /// Assignment of the current generation.
    pub assignment: Bytes,
    /// A JoinGroup waiting for the rebalance to complete.
    pub join_waiter: Option<oneshot::Sender<JoinResult>>,
    /// A SyncGroup waiting for the leader's assignment.
    pub sync_waiter: Option<oneshot::Sender<SyncResult>>,
    /// Monotonic time of the last heartbeat (or join, sync, commit).
    pub last_heartbeat: Duration,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn session_expired(&self, now: Duration) -> bool {
        let timeout = Duration::from_millis(self.session_timeout_ms.max(0) as u64);
        self.join_waiter.is_none() && now >= self.last_heartbeat + timeout
    }
}

/// The running initial delay of a group's first rebalance (Kafka's InitialDelayedJoin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialDelay {
    /// The configured delay, by which each extension moves the deadline.
    pub delay: Duration,
    /// What is left of the rebalance timeout for further extensions.
    pub remaining: Duration,
    /// A new member joined since the delay was last armed.
    pub new_member_added: bool,
}

/// A group.
#[derive(Debug)]
pub struct Group {
    /// Group id.
    pub id: String,
    /// State.
    pub state: GroupState,
    /// Generation id (incremented by each completed join).
    pub generation: i32,
    /// Protocol type of the members (set by the first member).
    pub protocol_type: Option<String>,
    /// Protocol chosen for the current generation.
    pub protocol_name: Option<String>,
    /// Leader's member id.
    pub leader: Option<String>,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// Static members: instance id to member id.
    pub static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire.
    pub pending: BTreeMap<String, Duration>,
    /// When the current rebalance completes even if some members did not rejoin.
    pub rebalance_deadline: Option<Duration>,
    /// Committed offsets by (topic, partition), with the `__consumer_offsets` offset of the record.
    pub offsets: BTreeMap<(String, i32), (CommittedOffset, i64)>,
    /// `group.initial.rebalance.delay.ms` for the next rebalance out of Empty (set by the
    /// coordinator from its config; zero: no delay).
    pub initial_rebalance_delay: Duration,
    /// The initial delay of the running rebalance, if it is the first one out of Empty; while it
    /// runs, `rebalance_deadline` is the end of the current delay.
    pub initial_delay: Option<InitialDelay>,
}

impl Group {
    /// A new empty group.
    pub fn new(id: String) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: None,
            offsets: BTreeMap::new(),
            initial_rebalance_delay: Duration::ZERO,
            initial_delay: None,
        }
    }

    /// The latest time the running join can complete: the rebalance deadline, plus what the
    /// initial delay may still be extended by (a waiting JoinGroup is bounded by this).
    pub fn join_deadline(&self) -> Option<Duration> {
        let deadline = self.rebalance_deadline?;
        Some(deadline + self.initial_delay.map_or(Duration::ZERO, |d| d.remaining))
    }

    /// True if the group could be forgotten: no members, no pending members, no offsets.
    pub fn is_disposable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.offsets.is_empty()
    }

    /// Protocols every member supports, in the first member's preference order.
    fn candidate_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let mut candidates: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for member in members {
            candidates.retain(|c| member.protocols.iter().any(|(n, _)| n == c));
        }
        candidates
    }

    /// Whether a member with `protocol_type` and `protocols` may join.
    pub fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(name, _)| candidates.contains(name))
    }

    /// Like `supports`, ignoring `member_id`'s current protocols (it is replacing them).
    pub fn supports_update(
        &self,
        member_id: &str,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return self.members.len() == 1 && self.members.contains_key(member_id);
        }
        self.members
            .iter()
            .filter(|(id, _)| id.as_str() != member_id)
            .all(|(_, m)| {
                protocols
                    .iter()
                    .any(|(name, _)| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// Kafka's protocol vote: every member votes for its most preferred candidate.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(name))
            {
                if let Some(vote) = votes.iter_mut().find(|(c, _)| c == name) {
                    vote.1 += 1;
                }
            }
        }
        // The first candidate wins ties (max_by_key keeps the last maximum: iterate reversed).
        votes
            .into_iter()
            .rev()
            .max_by_key(|(_, count)| *count)
            .map(|(name, _)| name)
    }

    /// The answer to a member that joins the current generation without a rebalance.
    pub fn current_join_result(&self, member_id: &str) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResult {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.join_members()
            } else {
                Vec::new()
            },
        }
    }

    fn join_members(&self) -> Vec<JoinMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| JoinMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect()
    }

    /// Adds a member; the first one also sets the group's protocol type and leader.
    pub fn add_member(&mut self, member: Member) {
        assert!(
            !self.members.contains_key(&member.id),
            "member {} added twice",
            member.id
        );
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member.id.clone());
        }
        if self.state == GroupState::PreparingRebalance {
            if let Some(delay) = self.initial_delay.as_mut() {
                // The initial rebalance may be delayed again for members still coming.
                delay.new_member_added = true;
            }
        }
        if let Some(instance) = &member.instance_id {
            self.static_members
                .insert(instance.clone(), member.id.clone());
        }
        self.members.insert(member.id.clone(), member);
    }

    /// Removes a member, answering its waiting requests with `error`.
    pub fn remove_member(&mut self, member_id: &str, error: ResponseError) -> Option<Member> {
        let mut member = self.members.remove(member_id)?;
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinResult::error(error, member_id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncResult::error(error));
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        Some(member)
    }

    /// Starts a rebalance (from Empty, Stable or CompletingRebalance); no-op if one is running.
    /// Out of Empty, with members and a non-zero `initial_rebalance_delay`, the join waits for
    /// the delay (see the module doc).
    pub fn prepare_rebalance(&mut self, now: Duration) {
        let initial = self.state == GroupState::Empty
            && !self.members.is_empty()
            && !self.initial_rebalance_delay.is_zero();
        match self.state {
            GroupState::PreparingRebalance | GroupState::Dead => return,
            GroupState::CompletingRebalance => {
                for member in self.members.values_mut() {
                    member.assignment = Bytes::new();
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(SyncResult::error(ResponseError::RebalanceInProgress));
                    }
                }
            }
            GroupState::Empty | GroupState::Stable => {}
        }
        let timeout_ms = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms.max(0) as u64)
            .max()
            .unwrap_or(0);
        self.state = GroupState::PreparingRebalance;
        if initial {
            let timeout = Duration::from_millis(timeout_ms);
            let delay = self.initial_rebalance_delay;
            self.initial_delay = Some(InitialDelay {
                delay,
                remaining: timeout.saturating_sub(delay),
                new_member_added: false,
            });
            self.rebalance_deadline = Some(now + delay);
        } else {
            self.initial_delay = None;
            self.rebalance_deadline = Some(now + Duration::from_millis(timeout_ms));
        }
    }

    /// After a membership change: starts a rebalance if stable, then completes the join if
    /// every member has rejoined.
    pub fn membership_changed(&mut self, now: Duration) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now, false);
    }

    /// Completes the running join when every member rejoined (or, with `force`, when the
    /// rebalance timeout passed: members that did not rejoin are removed). An initial delay is
    /// only ended by `force` (from [`Group::tick`]).
    pub fn try_complete_join(&mut self, now: Duration, force: bool) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_delay.is_some() && !force {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some());
        if !all_joined && !force {
            return;
        }
        let laggards: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in laggards {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time; removed");
            self.remove_member(&id, ResponseError::UnknownMemberId);
        }
        self.pending.clear();
        self.rebalance_deadline = None;
        self.initial_delay = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            tracing::info!(group = %self.id, generation = self.generation, "group is empty");
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = ?self.protocol_name,
            "join complete"
        );
        let results: Vec<(String, JoinResult)> = self
            .members
            .keys()
            .map(|id| (id.clone(), self.current_join_result(id)))
            .collect();
        for (id, result) in results {
            if let Some(member) = self.members.get_mut(&id) {
                member.last_heartbeat = now;
                if let Some(waiter) = member.join_waiter.take() {
                    let _ = waiter.send(result);
                }
            }
        }
    }

    /// The leader's SyncGroup: stores the assignments, answers waiting members, becomes Stable.
    pub fn complete_sync(&mut self, assignments: BTreeMap<String, Bytes>) {
        assert_eq!(self.state, GroupState::CompletingRebalance);
        let protocol_type = self.protocol_type.clone();
        let protocol_name = self.protocol_name.clone();
        for member in self.members.values_mut() {
            member.assignment = assignments.get(&member.id).cloned().unwrap_or_default();
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncResult {
                    error: None,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: member.assignment.clone(),
                });
            }
        }
        self.state = GroupState::Stable;
        tracing::info!(group = %self.id, generation = self.generation, "group stable");
    }

    /// Timer work: forced join completion, pending-member and session expiry.
    pub fn tick(&mut self, now: Duration) {
        if self.state == GroupState::PreparingRebalance
            && self.rebalance_deadline.is_some_and(|d| now >= d)
        {
            match self.initial_delay.as_mut() {
                // Members joined during the delay and rebalance time is left: wait again, for
                // the delay or what is left (Kafka's InitialDelayedJoin).
                Some(delay) if delay.new_member_added && !delay.remaining.is_zero() => {
                    let next = delay.delay.min(delay.remaining);
                    delay.remaining = delay.remaining.saturating_sub(delay.delay);
                    delay.new_member_added = false;
                    self.rebalance_deadline = Some(now + next);
                }
                _ => self.try_complete_join(now, true),
            }
        }
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        if self.pending.len() != before {
            self.try_complete_join(now, false);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_expired(now))
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %self.id, member = %id, "session expired; member removed");
                self.remove_member(id, ResponseError::UnknownMemberId);
            }
            self.membership_changed(now);
        }
    }

    /// Answers every waiting request with `error` (coordinator shutdown).
    pub fn fail_waiters(&mut self, error: ResponseError) {
        for member in self.members.values_mut() {
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinResult::error(error, &member.id));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncResult::error(error));
            }
        }
    }

    /// The member's metadata for the current protocol (DescribeGroups, OffsetDelete).
    pub fn member_metadata(&self, member: &Member) -> Bytes {
        member.metadata_for(self.protocol_name.as_deref().unwrap_or_default())
    }
}
