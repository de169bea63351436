//! The one place that maps internal errors to Kafka error codes.

use std::path::PathBuf;

use kafka_protocol::ResponseError;
use strata_storage::LogError;

/// Errors of the broker (topic management, metadata persistence, partition access).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An I/O error outside a partition log (metadata files, directories).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A partition log failed.
    #[error("partition {topic}-{partition}: {source}")]
    Log {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// The log error.
        source: LogError,
    },
    /// A metadata file in `<data_dir>/meta` could not be parsed.
    #[error("corrupt metadata file {path}: {reason}")]
    CorruptMeta {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The topic or partition does not exist.
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    /// The topic name is not legal.
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// CreateTopics of an existing topic.
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    /// Bad partition count.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// Replication factor other than -1/1 on a single node.
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// Replica assignment naming another broker or bad partition indexes.
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// Unknown config name or invalid value.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A well-formed request the broker refuses (e.g. altering static broker configs).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The partition's log could not be opened (corruption in the middle of the log).
    #[error("partition offline: {0}")]
    PartitionOffline(String),
    /// The broker is shutting down; partitions are closed.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The remote tier failed (object store unreachable, unreadable file).
    #[error("remote tier: {0}")]
    Tier(String),
    /// The offset is below the log start offset (the remote tier no longer holds it).
    #[error("offset out of range: {0}")]
    OffsetOutOfRange(String),
}

impl BrokerError {
    /// Builds an [`BrokerError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> BrokerError {
        BrokerError::Io {
            path: path.into(),
            source,
        }
    }

    /// The Kafka error for this error.
    pub fn response_error(&self) -> ResponseError {
        match self {
            // Metadata I/O failures are disk failures: KAFKA_STORAGE_ERROR (56), retriable.
            BrokerError::Io { .. } => ResponseError::KafkaStorageError,
            BrokerError::Log { source, .. } => log_error(source),
            // A metadata file we cannot read is a broken disk, not a client mistake.
            BrokerError::CorruptMeta { .. } => ResponseError::KafkaStorageError,
            // UNKNOWN_TOPIC_OR_PARTITION (3).
            BrokerError::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
            // INVALID_TOPIC_EXCEPTION (17): illegal characters, too long, "." or "..", and a
            // client producing to, creating or deleting an internal topic (Kafka's answer; see
            // internal_topics.rs).
            BrokerError::InvalidTopic(_) => ResponseError::InvalidTopicException,
            // TOPIC_ALREADY_EXISTS (36).
            BrokerError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            // INVALID_PARTITIONS (37).
            BrokerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            // INVALID_REPLICATION_FACTOR (38): one node holds exactly one replica.
            BrokerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            // INVALID_REPLICA_ASSIGNMENT (39).
            BrokerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            // INVALID_CONFIG (40).
            BrokerError::InvalidConfig(_) => ResponseError::InvalidConfig,
            // INVALID_REQUEST (42).
            BrokerError::InvalidRequest(_) => ResponseError::InvalidRequest,
            // A partition whose log is corrupt is an offline log dir in Kafka's terms:
            // KAFKA_STORAGE_ERROR (56).
            BrokerError::PartitionOffline(_) => ResponseError::KafkaStorageError,
            // While closing, partitions have no leader here: NOT_LEADER_OR_FOLLOWER (6) makes
            // clients refresh metadata and retry elsewhere/later.
            BrokerError::ShuttingDown => ResponseError::NotLeaderOrFollower,
            // An object-store outage or an unreadable remote file: KAFKA_STORAGE_ERROR (56),
            // retriable, so consumers retry instead of resetting their position.
            BrokerError::Tier(_) => ResponseError::KafkaStorageError,
            // OFFSET_OUT_OF_RANGE (1).
            BrokerError::OffsetOutOfRange(_) => ResponseError::OffsetOutOfRange,
        }
    }

    /// The Kafka error code for this error.
    pub fn code(&self) -> i16 {
        self.response_error().code()
    }
}

/// Maps a partition log error to its Kafka error.
pub fn log_error(error: &LogError) -> ResponseError {
    match error {
        // A failed read or write of a segment: KAFKA_STORAGE_ERROR (56), as Kafka does for an
        // offline log dir. (A failed fsync never gets here: the broker aborts instead.)
        LogError::Io { .. } => ResponseError::KafkaStorageError,
        // Disk full: Kafka marks the log dir offline and answers KAFKA_STORAGE_ERROR (56).
        // Only reached if a caller did not crash first (`Partition::with_log` aborts the process
        // on it): the log's state on disk is unknown.
        LogError::SyncFailed { .. } => ResponseError::KafkaStorageError,
        LogError::StorageFull => ResponseError::KafkaStorageError,
        // Bad CRC, truncated batch, inconsistent lengths: CORRUPT_MESSAGE (2).
        LogError::CorruptInput(_) => ResponseError::CorruptMessage,
        // A well-formed batch the log refuses (e.g. old magic, bad record count): INVALID_RECORD
        // (87) is Kafka's "failed validation on the broker".
        LogError::InvalidRecord(_) => ResponseError::InvalidRecord,
        // Idempotent producer gap: OUT_OF_ORDER_SEQUENCE_NUMBER (45).
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        // Idempotent producer fenced by a newer epoch: INVALID_PRODUCER_EPOCH (47).
        LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        // Corruption found in our own files: the log dir is unusable, KAFKA_STORAGE_ERROR (56).
        LogError::CorruptLog { .. } => ResponseError::KafkaStorageError,
        // OFFSET_OUT_OF_RANGE (1).
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // Only compaction rewrites segments and never answers a client; should one surface,
        // it is the broker's own failure: UNKNOWN_SERVER_ERROR (-1).
        LogError::InvalidRewrite(_) => ResponseError::UnknownServerError,
    }
}

/// Error for a produce `acks` value other than -1, 0 and 1: INVALID_REQUIRED_ACKS (21).
pub const INVALID_REQUIRED_ACKS: ResponseError = ResponseError::InvalidRequiredAcks;

/// Error for a record batch larger than `max.message.bytes`: MESSAGE_TOO_LARGE (10) (Kafka's
/// RecordTooLargeException).
pub const MESSAGE_TOO_LARGE: ResponseError = ResponseError::MessageTooLarge;

/// Error for a record without a key produced to a compacted topic: INVALID_RECORD (87) (Kafka's
/// InvalidRecordException, "Compacted topic cannot accept message without key").
pub const INVALID_RECORD: ResponseError = ResponseError::InvalidRecord;

/// Error for a CreateTime record whose timestamp is outside the topic's
/// `message.timestamp.before.max.ms` / `after.max.ms` window, or a producer batch marked
/// LogAppendTime on a LogAppendTime topic: INVALID_TIMESTAMP (32) (Kafka's
/// InvalidTimestampException from its LogValidator).
pub const INVALID_TIMESTAMP: ResponseError = ResponseError::InvalidTimestamp;

/// Error for acks=all on a topic whose `min.insync.replicas` exceeds the single replica:
/// NOT_ENOUGH_REPLICAS (19).
pub const NOT_ENOUGH_REPLICAS: ResponseError = ResponseError::NotEnoughReplicas;

/// Error when acks=all could not be made durable within the request's timeout: REQUEST_TIMED_OUT
/// (7).
pub const REQUEST_TIMED_OUT: ResponseError = ResponseError::RequestTimedOut;

/// Error for InitProducerId with a transactional id. Strata has no transaction coordinator;
/// INVALID_REQUEST (42) is fatal for the client (unlike COORDINATOR_NOT_AVAILABLE, which clients
/// retry forever) and does not blame authorization (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
pub const TRANSACTIONS_UNSUPPORTED: ResponseError = ResponseError::InvalidRequest;

/// Error for an API version outside the advertised range (ApiVersions only; other APIs close the
/// connection): UNSUPPORTED_VERSION (35).
pub const UNSUPPORTED_VERSION: ResponseError = ResponseError::UnsupportedVersion;

/// Error for a topic id that names no topic: UNKNOWN_TOPIC_ID (100).
pub const UNKNOWN_TOPIC_ID: ResponseError = ResponseError::UnknownTopicId;

/// The error an OffsetCommit, OffsetDelete or DeleteGroups answers when writing to
/// `__consumer_offsets` failed, as Kafka maps its coordinator write errors: a closing partition
/// is NOT_COORDINATOR (16: find the coordinator again), storage trouble is
/// COORDINATOR_NOT_AVAILABLE (15, retriable), a record the log refuses is UNKNOWN_SERVER_ERROR.
pub fn offsets_write_error(error: &BrokerError) -> ResponseError {
    match error {
        BrokerError::ShuttingDown => ResponseError::NotCoordinator,
        BrokerError::Io { .. }
        | BrokerError::PartitionOffline(_)
        | BrokerError::CorruptMeta { .. }
        | BrokerError::UnknownTopicOrPartition(_) => ResponseError::CoordinatorNotAvailable,
        BrokerError::Log { source, .. } => match log_error(source) {
            ResponseError::KafkaStorageError => ResponseError::CoordinatorNotAvailable,
            _ => ResponseError::UnknownServerError,
        },
        _ => ResponseError::UnknownServerError,
    }
}

/// Error for DeleteRecords on a partition whose records Strata will not delete on request:
/// a topic whose `cleanup.policy` lacks `delete` (Kafka refuses with PolicyViolationException:
/// "Records of partition ... can not be deleted while the partition is compacted"), or a tiered
/// topic (the remote tier is not trimmed by DeleteRecords yet: refused rather than deleting
/// only the local part): POLICY_VIOLATION (44).
pub const DELETE_RECORDS_REFUSED: ResponseError = ResponseError::PolicyViolation;
