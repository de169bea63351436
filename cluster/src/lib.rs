//! Strata's broker (a single-node Kafka-compatible server) and Strata's own Kafka client.
//!
//! - [`server::serve`] accepts connections and dispatches requests to [`handlers`].
//! - [`broker::Broker`] owns topics, partitions, the flusher and the retention task.
//! - [`config`] holds the broker config and topic configs with Kafka's names.
//! - [`errors`] is the one place that maps internal errors to Kafka error codes.
//! - [`metrics`] holds the Prometheus metrics and serves them (and `/v1/tier/status`) over HTTP.
//! - [`tier`] offloads tiered topics to the object store and reads below the local start.

pub mod broker;
pub mod client;
pub mod config;
pub mod errors;
pub mod group;
pub mod handlers;
pub mod internal_topics;
pub mod metrics;
pub mod server;
pub mod tier;

pub use broker::Broker;
pub use config::{BrokerConfig, FlushPolicy};
pub use errors::BrokerError;
