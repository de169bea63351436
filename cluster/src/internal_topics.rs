//! Internal topics are the broker's alone.
//!
//! `__consumer_offsets` holds every group's committed offsets; Kafka reserves more names for its
//! own state (transactions, share groups, the KRaft metadata log). A client that could write,
//! create or delete one of them could forge another group's offsets, erase them, or plant bytes
//! that the broker replays at every start. Kafka refuses all of it, and so does Strata, with
//! Kafka's error (INVALID_TOPIC_EXCEPTION) and a message naming the topic:
//!
//! | client request                         | answer                                           |
//! |----------------------------------------|--------------------------------------------------|
//! | Produce to an internal topic           | INVALID_TOPIC_EXCEPTION, nothing appended        |
//! | CreateTopics / auto-create of a reserved name | INVALID_TOPIC_EXCEPTION, nothing created  |
//! | DeleteTopics of an internal topic      | INVALID_TOPIC_EXCEPTION, nothing deleted         |
//! | DeleteRecords on an internal topic     | INVALID_TOPIC_EXCEPTION, nothing deleted         |
//! | CreatePartitions of `__consumer_offsets` | INVALID_REQUEST (its group mapping is fixed)   |
//!
//! Reads (Fetch, ListOffsets, Metadata, DescribeConfigs) stay open, as in Kafka, and so do
//! config changes (the broker forces compaction on `__consumer_offsets` whatever its config).
//!
//! Architecture invariant: the only writer of `__consumer_offsets` is the group coordinator
//! (`group/`), through `Broker` calls that no client request reaches.

use crate::errors::BrokerError;
use crate::group::offsets::OFFSETS_TOPIC;

/// Names Kafka reserves for the broker's own state (`Topic.isInternal` plus the KRaft metadata
/// log). Only `__consumer_offsets` exists in Strata; the others are refused so that a client
/// cannot take a name the broker will need.
pub const RESERVED_TOPIC_NAMES: [&str; 4] = [
    OFFSETS_TOPIC,
    "__transaction_state",
    "__share_group_state",
    "__cluster_metadata",
];

/// Whether `name` is reserved for the broker.
pub fn is_reserved(name: &str) -> bool {
    RESERVED_TOPIC_NAMES.contains(&name)
}

/// Refuses a client's Produce to `name` if it is internal.
pub fn check_client_produce(name: &str) -> Result<(), BrokerError> {
    refuse_if_reserved(name, "Cannot append to internal topic")
}

/// Refuses a client's CreateTopics (or auto-create) of a reserved name.
pub fn check_client_create(name: &str) -> Result<(), BrokerError> {
    refuse_if_reserved(name, "Cannot create internal topic")
}

/// Refuses a client's DeleteTopics of an internal topic.
pub fn check_client_delete(name: &str) -> Result<(), BrokerError> {
    refuse_if_reserved(name, "Cannot delete internal topic")
}

/// Refuses a client's DeleteRecords on an internal topic.
pub fn check_client_delete_records(name: &str) -> Result<(), BrokerError> {
    refuse_if_reserved(name, "Cannot delete records of internal topic")
}

fn refuse_if_reserved(name: &str, what: &str) -> Result<(), BrokerError> {
    if is_reserved(name) {
        return Err(BrokerError::InvalidTopic(format!(
            "{what} {name}: it is the broker's"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_are_refused_and_others_pass() {
        for name in RESERVED_TOPIC_NAMES {
            let error = check_client_produce(name).unwrap_err();
            assert_eq!(
                error.code(),
                kafka_protocol::ResponseError::InvalidTopicException.code()
            );
            assert!(error.to_string().contains(name));
            assert!(check_client_create(name).is_err());
            assert!(check_client_delete(name).is_err());
            assert!(check_client_delete_records(name).is_err());
        }
        for name in [
            "orders",
            "__consumer_offsets2",
            "_consumer_offsets",
            "__orders",
        ] {
            assert!(check_client_produce(name).is_ok(), "{name}");
            assert!(check_client_create(name).is_ok(), "{name}");
        }
    }
}
