//! Deterministic simulation of Strata under madsim.
//!
//! Build and run with `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-sim cargo test -p strata-sim`
//! (or `sim/run sweep`): madsim then replaces time, tasks and `tokio::net` with a simulator driven
//! by one seed, and the broker — the same code as in production — runs on simulated nodes.
//!
//! - [`disk`]: `FaultyDisk`, a node's disk with the storage fault model (crash, torn writes, bit
//!   flips, lost writes, fsync EIO).
//! - [`clock`]: `SimClock`, a node's clock with skew, drift, jumps and strobing.
//! - [`node`]: brokers on simulated nodes; a node's disk crashes whenever the node restarts.
//! - [`nemesis`]: the fault schedule drawn from the seed.
//! - [`workload`]: producers and consumers recording a Jepsen-style history.
//! - [`group_workload`]: consumer-group committers (`commit` / `fetch-offsets` operations).
//! - [`object_store`]: the shared object store (survives node crashes) with seeded latency,
//!   errors and failed multipart uploads, for tiered storage.
//! - [`trace`]: the trace hash that proves a seed replays identically.
//! - [`run`]: scenarios and the per-seed runner used by `sim/run` and the tests.
//! - [`planted`]: known bugs planted with `--cfg strata_bug="NAME"` that the checker must catch.
//!
//! See `docs/simulation.md`. Without `--cfg madsim` this crate is empty.

#[cfg(madsim)]
pub mod clock;
#[cfg(madsim)]
pub mod disk;
#[cfg(madsim)]
pub mod group_workload;
#[cfg(madsim)]
pub mod nemesis;
#[cfg(madsim)]
pub mod node;
#[cfg(madsim)]
pub mod object_store;
#[cfg(madsim)]
pub mod planted;
#[cfg(madsim)]
pub mod rng;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod trace;
#[cfg(madsim)]
pub mod workload;

#[cfg(madsim)]
pub use clock::SimClock;
#[cfg(madsim)]
pub use disk::{DiskFaults, FaultyDisk};
#[cfg(madsim)]
pub use node::{broker_config, start_broker_node, SimCluster, BROKER_PORT};
#[cfg(madsim)]
pub use run::{run_seed, Scenario, SeedResult, Verdict, SCENARIOS};
