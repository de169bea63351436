//! OffsetCommit (v2-v8): generation and member checks (or a simple commit with generation -1
//! to a group without members), then a durable write to `__consumer_offsets`.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::group::offsets::CommittedOffset;
use crate::group::CommitEntry;

/// Handles an OffsetCommit request; answers once the offsets are durable.
pub async fn handle(
    broker: &Arc<Broker>,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let instance = if version >= 7 {
        request.group_instance_id.as_ref().map(|s| s.as_str())
    } else {
        None
    };
    let coordinator = broker.groups();
    let metadata_max = coordinator
        .config()
        .offset_metadata_bytes_max
        .min(crate::group::offsets::STRING_BYTES_MAX);
    let check = coordinator.check_commit(
        broker.clock().monotonic(),
        &group_id,
        request.generation_id_or_member_epoch,
        request.member_id.as_str(),
        instance,
    );
    // Per (topic index, partition index): an error decided before the write, or None.
    let mut errors: Vec<Vec<Option<ResponseError>>> = Vec::new();
    let mut entries = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let known = broker.topic(&name);
        let mut topic_errors = Vec::new();
        for p in &topic.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let error = if let Err(error) = check {
                Some(error)
            } else if known
                .as_ref()
                .is_none_or(|t| t.partition(p.partition_index).is_none())
            {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > metadata_max {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                entries.push(CommitEntry {
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata,
                        commit_timestamp_ms: 0,
                    },
                });
                None
            };
            topic_errors.push(error);
        }
        errors.push(topic_errors);
    }
    let write_error = coordinator
        .commit_offsets(broker, &group_id, entries)
        .await
        .err();
    let topics = request
        .topics
        .iter()
        .zip(errors)
        .map(|(topic, topic_errors)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(topic_errors)
                .map(|(p, error)| {
                    let code = error.or(write_error).map_or(0, |e| e.code());
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
