//! OffsetFetch (v1-v8; v8 batches groups). A partition without a committed offset answers -1.

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::group::offsets::CommittedOffset;

type Fetched = Vec<(String, i32, Option<CommittedOffset>)>;

/// Committed offsets of `group` for `topics` (`None`: every committed one), grouped by topic in
/// request order.
fn fetch(
    broker: &Broker,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Fetched)> {
    let wanted: Option<Vec<(String, i32)>> = topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect()
    });
    let fetched = broker.groups().fetch_offsets(group, wanted.as_deref());
    let mut out: Vec<(String, Fetched)> = Vec::new();
    for entry in fetched {
        match out.last_mut() {
            Some((topic, list)) if *topic == entry.0 => list.push(entry),
            _ => out.push((entry.0.clone(), vec![entry])),
        }
    }
    out
}

fn parts(c: &Option<CommittedOffset>) -> (i64, i32, String) {
    match c {
        Some(c) => (c.offset, c.leader_epoch, c.metadata.clone()),
        None => (-1, -1, String::new()),
    }
}

/// Answers an OffsetFetch request.
pub fn handle(
    broker: &Arc<Broker>,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let fetched = fetch(broker, g.group_id.0.as_str(), topics);
                let topics = fetched
                    .into_iter()
                    .map(|(topic, list)| {
                        let partitions = list
                            .iter()
                            .map(|(_, partition, c)| {
                                let (offset, epoch, metadata) = parts(c);
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(*partition)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(StrBytes::from_string(metadata)))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(g.group_id.0))
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let fetched = fetch(broker, request.group_id.0.as_str(), topics);
    let topics = fetched
        .into_iter()
        .map(|(topic, list)| {
            let partitions = list
                .iter()
                .map(|(_, partition, c)| {
                    let (offset, epoch, metadata) = parts(c);
                    let p = OffsetFetchResponsePartition::default()
                        .with_partition_index(*partition)
                        .with_committed_offset(offset)
                        .with_metadata(Some(StrBytes::from_string(metadata)));
                    if version >= 5 {
                        p.with_committed_leader_epoch(epoch)
                    } else {
                        p
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
