//! Strata's broker (a single-node Kafka-compatible server) and Strata's own Kafka client.
//!
//! - [`server::serve`] accepts connections and dispatches requests to [`handlers`].
//! - [`broker::Broker`] owns topics, partitions, the flusher and the retention task.
//! - [`config`] holds the broker config and topic configs with Kafka's names.
//! - [`errors`] is the one place that maps internal errors to Kafka error codes.
//! - [`metrics`] holds the Prometheus metrics and serves them over HTTP.

pub mod broker;
pub mod client;
pub mod config;
pub mod errors;
pub mod group;
pub mod handlers;
pub mod metrics;
pub mod server;

pub use broker::Broker;
pub use config::{BrokerConfig, FlushPolicy};
pub use errors::BrokerError;
