//! Consumer-group administration: find the coordinator, list and describe groups, read and
//! commit (reset) a group's offsets. Used by `strata group ...`.
//!
//! Offsets are committed as "simple" commits (generation -1, no member id), which a coordinator
//! accepts only while the group has no members: reset the offsets of a stopped group.

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::client_core::{Client, PooledConnection};
use super::error::ClientError;

/// A group in [`Client::list_groups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type (`consumer`, or empty for a group that only holds offsets).
    pub protocol_type: String,
    /// State (`Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`, `Dead`).
    pub state: String,
}

/// A member in [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Assigned partitions by topic (decoded for `consumer` groups; empty otherwise or while
    /// the group rebalances).
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A group described by [`Client::describe_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State name (`Dead` for a group that does not exist).
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// The chosen protocol (the assignor, for consumer groups).
    pub protocol: String,
    /// Members.
    pub members: Vec<GroupMemberDescription>,
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset the group consumes.
    pub offset: i64,
    /// Client metadata.
    pub metadata: String,
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

/// Decodes a consumer-protocol assignment (`version: i16` then the body).
fn decode_assignment(bytes: &bytes::Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    if bytes.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]).clamp(0, 3);
    let mut body = bytes.slice(2..);
    let assignment = ConsumerProtocolAssignment::decode(&mut body, version).ok()?;
    Some(
        assignment
            .assigned_partitions
            .into_iter()
            .map(|tp| (tp.topic.0.to_string(), tp.partitions))
            .collect(),
    )
}

impl Client {
    /// A connection to the coordinator of `group` (FindCoordinator on any broker).
    pub async fn coordinator_connection(
        &self,
        group: &str,
    ) -> Result<PooledConnection, ClientError> {
        let (brokers, _) = self.metadata(Some(&[]), false).await?;
        let mut last_error = None;
        for broker in &brokers {
            let conn = match self.connection_to(&broker.addr()).await {
                Ok(conn) => conn,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let version = conn.version_for::<FindCoordinatorRequest>()?.min(3);
            let request = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_string(group.to_string()))
                .with_key_type(0);
            let response = conn.request_versioned(&request, version).await?;
            if response.error_code != 0 {
                return Err(ClientError::from_code(
                    response.error_code,
                    format!("find the coordinator of group {group}"),
                    response.error_message.map(|m| m.to_string()),
                ));
            }
            let host = response.host.to_string();
            let addr = if host.contains(':') {
                format!("[{host}]:{}", response.port)
            } else {
                format!("{host}:{}", response.port)
            };
            return self.connection_to(&addr).await;
        }
        Err(last_error.unwrap_or_else(|| ClientError::NoBrokers {
            servers: String::new(),
            last_error: "the cluster lists no brokers".to_string(),
        }))
    }

    /// Every group of every broker, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let (brokers, _) = self.metadata(Some(&[]), false).await?;
        let mut groups = Vec::new();
        for broker in &brokers {
            let conn = self.connection_to(&broker.addr()).await?;
            let version = conn.version_for::<ListGroupsRequest>()?.min(4);
            let response = conn
                .request_versioned(&ListGroupsRequest::default(), version)
                .await?;
            if response.error_code != 0 {
                return Err(ClientError::from_code(
                    response.error_code,
                    "list groups",
                    None,
                ));
            }
            groups.extend(response.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            }));
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(groups)
    }

    /// State, protocol and members (with decoded assignments) of `group`.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let conn = self.coordinator_connection(group).await?;
        let version = conn.version_for::<DescribeGroupsRequest>()?.min(5);
        let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let response = conn.request_versioned(&request, version).await?;
        let described = response
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| ClientError::Protocol {
                addr: conn.addr().to_string(),
                reason: format!("DescribeGroups response does not mention {group}"),
            })?;
        if described.error_code != 0 {
            return Err(ClientError::from_code(
                described.error_code,
                format!("describe group {group}"),
                described.error_message.map(|m| m.to_string()),
            ));
        }
        let consumer = described.protocol_type.as_str() == "consumer";
        let members = described
            .members
            .into_iter()
            .map(|m| GroupMemberDescription {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment: if consumer {
                    decode_assignment(&m.member_assignment).unwrap_or_default()
                } else {
                    Vec::new()
                },
            })
            .collect();
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: described.group_state.to_string(),
            protocol_type: described.protocol_type.to_string(),
            protocol: described.protocol_data.to_string(),
            members,
        })
    }

    /// Every committed offset of `group`, sorted by topic and partition.
    pub async fn committed_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let conn = self.coordinator_connection(group).await?;
        // v2-v7 answer one group; `topics: null` asks for every committed offset.
        let version = conn.version_for::<OffsetFetchRequest>()?.min(7);
        if version < 2 {
            return Err(ClientError::UnsupportedApi {
                addr: conn.addr().to_string(),
                api: "OffsetFetch (all topics needs v2+)".to_string(),
                broker_versions: format!("max {version}"),
            });
        }
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(None);
        let response = conn.request_versioned(&request, version).await?;
        if response.error_code != 0 {
            return Err(ClientError::from_code(
                response.error_code,
                format!("fetch the offsets of group {group}"),
                None,
            ));
        }
        let mut offsets = Vec::new();
        for topic in response.topics {
            for p in topic.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::from_code(
                        p.error_code,
                        format!("fetch the offset of {}-{}", topic.name.0, p.partition_index),
                        None,
                    ));
                }
                if p.committed_offset < 0 {
                    continue;
                }
                offsets.push(CommittedOffset {
                    topic: topic.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata: p.metadata.map(|m| m.to_string()).unwrap_or_default(),
                });
            }
        }
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(offsets)
    }

    /// Commits `offsets` (topic, partition, offset) for `group` as a simple commit (the group
    /// must have no members). Fails on the first partition the coordinator refused.
    pub async fn commit_group_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), ClientError> {
        let conn = self.coordinator_connection(group).await?;
        let version = conn.version_for::<OffsetCommitRequest>()?.min(8);
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (topic, partition, offset) in offsets {
            let entry = OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str("")));
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(entry),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![entry]),
                ),
            }
        }
        let mut request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_topics(topics);
        if (2..=4).contains(&version) {
            request.retention_time_ms = -1;
        }
        let response = conn.request_versioned(&request, version).await?;
        for topic in response.topics {
            for p in topic.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::from_code(
                        p.error_code,
                        format!(
                            "commit the offset of {}-{} for group {group}",
                            topic.name.0, p.partition_index
                        ),
                        None,
                    ));
                }
            }
        }
        Ok(())
    }
}
