//! Strata's async Kafka client, written on `tokio::net` so that it runs both on real sockets and
//! under the madsim simulator.
//!
//! - [`Connection`]: one TCP connection to one broker (version negotiation, framing, correlation
//!   ids, a timeout on every request).
//! - [`Client`]: metadata (topics, partitions, leaders, brokers), one cached connection per
//!   broker, admin operations, list offsets and fetch.
//! - [`Producer`]: record-batch encoding (magic 2, any codec), the default partitioner and the
//!   idempotent producer (producer id, per-partition sequence numbers, retries of the same batch).
//! - Group administration (`groups`): list and describe groups, read and reset their offsets.
//!
//! Every message is encoded and decoded by the `kafka-protocol` crate.

mod client_core;
mod connection;
mod error;
mod fetch;
mod groups;
mod partitioner;
mod producer;

pub use client_core::{
    BrokerMetadata, Client, ClientConfig, OffsetSpec, PartitionMetadata, PooledConnection,
    TopicConfigEntry, TopicDescription, TopicMetadata,
};
pub use connection::{Connection, Pipeline, RESPONSE_BYTES_MAX};
pub use error::ClientError;
pub use fetch::{ConsumedRecord, FetchResult};
pub use groups::{CommittedOffset, GroupDescription, GroupListing, GroupMemberDescription};
pub use kafka_protocol::records::Compression;
pub use kafka_protocol::ResponseError;
pub use partitioner::{kafka_partition_for_key, murmur2};
pub use producer::{encode_plain_batch, Producer, ProducerConfig, Record};
