//! Deterministic simulation of Strata under madsim.
//!
//! Build and run with `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-sim cargo test -p strata-sim`:
//! madsim then replaces time, tasks and `tokio::net` with a simulator driven by one seed, and the
//! broker — the same code as in production — runs on simulated nodes with an in-memory [`MemDisk`]
//! per node.
//!
//! Today this crate starts single brokers on simulated nodes; the full harness (fault injection,
//! nemesis schedules, workloads and the checker) is its own issue.
//!
//! [`MemDisk`]: strata_storage::MemDisk

#[cfg(madsim)]
mod node;

#[cfg(madsim)]
pub use node::{broker_config, start_broker_node, BROKER_PORT};
