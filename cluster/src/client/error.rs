//! The client's one error type.

use kafka_protocol::ResponseError;

/// Everything that can go wrong in a client call.
///
/// Kafka error codes from responses are carried as [`ResponseError`], whose `Display` is the
/// error's name (e.g. `NotLeaderOrFollower`), as is [`ClientError::kafka_name`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing a socket failed.
    #[error("i/o error talking to {addr}: {source}")]
    Io {
        /// The broker address.
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The broker did not answer within the request timeout.
    #[error("request {api} to {addr} timed out after {timeout_ms} ms")]
    Timeout {
        /// The broker address.
        addr: String,
        /// The API name of the request.
        api: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The connection was closed (or left mid-request by a timed-out or cancelled call).
    #[error("connection to {addr} is closed")]
    Disconnected {
        /// The broker address.
        addr: String,
    },
    /// The broker sent bytes that do not decode, or a response that does not match the request.
    #[error("protocol error from {addr}: {reason}")]
    Protocol {
        /// The broker address (empty when not from a socket).
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The broker supports no version of an API in common with this client.
    #[error("broker {addr} does not support {api} (broker versions {broker_versions})")]
    UnsupportedApi {
        /// The broker address.
        addr: String,
        /// The API name.
        api: String,
        /// The broker's range, `none` if the API is missing.
        broker_versions: String,
    },
    /// The broker answered with a Kafka error code.
    #[error("{context}: {error} (Kafka error code {code}){}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default(), code = .error.code())]
    Kafka {
        /// What was being done (e.g. `produce to orders-3`).
        context: String,
        /// The Kafka error.
        error: ResponseError,
        /// The broker's error message, if it sent one.
        message: Option<String>,
    },
    /// A fetch asked for an offset outside the partition's log (Kafka error 1).
    #[error("offset {offset} is out of range for {topic}-{partition}")]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The requested offset.
        offset: i64,
    },
    /// The topic does not exist (or has no partitions).
    #[error("unknown topic {topic}")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The partition does not exist in the topic.
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The partition has no leader the client can reach right now.
    #[error("no leader for {topic}-{partition}")]
    LeaderNotAvailable {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The task sending the batch that held this record was cancelled before it learned the
    /// outcome: the record may or may not have been written.
    #[error("send cancelled: {0}")]
    Cancelled(String),
    /// A caller-supplied argument or configuration is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// None of the bootstrap servers could be reached.
    #[error("no bootstrap server reachable ({servers}): {last_error}")]
    NoBrokers {
        /// The bootstrap list.
        servers: String,
        /// The last connection error.
        last_error: String,
    },
}

impl ClientError {
    /// Builds a [`ClientError::Kafka`] from a non-zero error code.
    pub fn from_code(code: i16, context: impl Into<String>, message: Option<String>) -> Self {
        let error = ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code));
        ClientError::Kafka {
            context: context.into(),
            error,
            message,
        }
    }

    /// A copy of this error (an I/O error is copied as its kind and message), for answering
    /// every record of a failed batch.
    pub fn duplicate(&self) -> ClientError {
        match self {
            ClientError::Io { addr, source } => ClientError::Io {
                addr: addr.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            ClientError::Timeout {
                addr,
                api,
                timeout_ms,
            } => ClientError::Timeout {
                addr: addr.clone(),
                api: api.clone(),
                timeout_ms: *timeout_ms,
            },
            ClientError::Disconnected { addr } => ClientError::Disconnected { addr: addr.clone() },
            ClientError::Protocol { addr, reason } => ClientError::Protocol {
                addr: addr.clone(),
                reason: reason.clone(),
            },
            ClientError::UnsupportedApi {
                addr,
                api,
                broker_versions,
            } => ClientError::UnsupportedApi {
                addr: addr.clone(),
                api: api.clone(),
                broker_versions: broker_versions.clone(),
            },
            ClientError::Kafka {
                context,
                error,
                message,
            } => ClientError::Kafka {
                context: context.clone(),
                error: *error,
                message: message.clone(),
            },
            ClientError::OffsetOutOfRange {
                topic,
                partition,
                offset,
            } => ClientError::OffsetOutOfRange {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            },
            ClientError::UnknownTopic { topic } => ClientError::UnknownTopic {
                topic: topic.clone(),
            },
            ClientError::UnknownPartition { topic, partition } => ClientError::UnknownPartition {
                topic: topic.clone(),
                partition: *partition,
            },
            ClientError::LeaderNotAvailable { topic, partition } => {
                ClientError::LeaderNotAvailable {
                    topic: topic.clone(),
                    partition: *partition,
                }
            }
            ClientError::InvalidArgument(s) => ClientError::InvalidArgument(s.clone()),
            ClientError::Cancelled(s) => ClientError::Cancelled(s.clone()),
            ClientError::NoBrokers {
                servers,
                last_error,
            } => ClientError::NoBrokers {
                servers: servers.clone(),
                last_error: last_error.clone(),
            },
        }
    }

    /// The Kafka error, if this is one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Kafka { error, .. } => Some(*error),
            ClientError::OffsetOutOfRange { .. } => Some(ResponseError::OffsetOutOfRange),
            ClientError::UnknownTopic { .. } | ClientError::UnknownPartition { .. } => {
                Some(ResponseError::UnknownTopicOrPartition)
            }
            ClientError::LeaderNotAvailable { .. } => Some(ResponseError::LeaderNotAvailable),
            _ => None,
        }
    }

    /// Kafka's name for the error code (e.g. `NotLeaderOrFollower`), if this is a Kafka error.
    pub fn kafka_name(&self) -> Option<String> {
        self.kafka_error().map(kafka_error_name)
    }

    /// Whether the same request may succeed if sent again (network trouble, timeouts, leader
    /// changes, retriable Kafka errors).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io { .. }
            | ClientError::Timeout { .. }
            | ClientError::Disconnected { .. }
            | ClientError::LeaderNotAvailable { .. }
            | ClientError::NoBrokers { .. } => true,
            ClientError::Kafka { error, .. } => error.is_retriable(),
            _ => false,
        }
    }

    /// Whether the outcome of the request is unknown: it may or may not have been applied.
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            ClientError::Io { .. }
                | ClientError::Timeout { .. }
                | ClientError::Disconnected { .. }
                | ClientError::Cancelled(_)
        ) || matches!(
            self,
            ClientError::Kafka {
                error: ResponseError::RequestTimedOut,
                ..
            }
        )
    }

    /// Whether cached metadata (leaders, connections) should be refreshed after this error.
    pub(crate) fn invalidates_metadata(&self) -> bool {
        match self {
            ClientError::Io { .. }
            | ClientError::Timeout { .. }
            | ClientError::Disconnected { .. }
            | ClientError::LeaderNotAvailable { .. }
            | ClientError::UnknownTopic { .. }
            | ClientError::UnknownPartition { .. } => true,
            ClientError::Kafka { error, .. } => matches!(
                error,
                ResponseError::NotLeaderOrFollower
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch
                    | ResponseError::NotCoordinator
                    | ResponseError::BrokerNotAvailable
                    | ResponseError::ReplicaNotAvailable
                    | ResponseError::UnknownTopicId
                    | ResponseError::KafkaStorageError
            ),
            _ => false,
        }
    }
}

/// Kafka's variant name for an error (`NotLeaderOrFollower`, `Unknown(1234)`).
pub fn kafka_error_name(error: ResponseError) -> String {
    format!("{error:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_codes_map_to_names_and_retriability() {
        let not_leader = ClientError::from_code(6, "produce to t-0", None);
        assert_eq!(
            not_leader.kafka_name().as_deref(),
            Some("NotLeaderOrFollower")
        );
        assert!(not_leader.is_retriable());
        assert!(not_leader.invalidates_metadata());
        assert!(!not_leader.is_ambiguous());
        assert_eq!(
            not_leader.to_string(),
            "produce to t-0: NotLeaderOrFollower (Kafka error code 6)"
        );

        let exists = ClientError::from_code(36, "create topic t", Some("already there".into()));
        assert_eq!(
            exists.kafka_error(),
            Some(ResponseError::TopicAlreadyExists)
        );
        assert!(!exists.is_retriable());
        assert!(exists.to_string().ends_with(": already there"), "{exists}");

        let unknown = ClientError::from_code(12345, "x", None);
        assert_eq!(unknown.kafka_error(), Some(ResponseError::Unknown(12345)));
        assert!(!unknown.is_retriable());

        let timeout = ClientError::Timeout {
            addr: "a:1".into(),
            api: "Produce".into(),
            timeout_ms: 5,
        };
        assert!(timeout.is_retriable() && timeout.is_ambiguous());
        assert_eq!(timeout.duplicate().to_string(), timeout.to_string());
        let io = ClientError::Io {
            addr: "a:1".into(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"),
        };
        assert_eq!(io.duplicate().to_string(), io.to_string());
    }
}
