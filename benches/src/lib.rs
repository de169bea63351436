//! Strata's performance instruments.
//!
//! - [`load`]: the load tool behind `strata bench produce|consume|e2e`: concurrent producers and
//!   consumers on Strata's own Kafka client, bounded by a record count or a duration, with an
//!   optional target rate.
//! - [`report`]: what a run measured (records/s, MB/s, HDR-histogram latency percentiles) and
//!   its text and JSON renderings.
//!
//! The criterion benchmarks of the hot paths live in `benches/benches/*.rs`; `benches/compare.sh`
//! puts the load tool's figures next to the machine's raw disk bandwidth. See `benches/README.md`.

pub mod load;
pub mod report;

pub use load::{run, LoadConfig, Mode};
pub use report::{LatencySummary, LoadReport, PhaseReport, ProducerSettings};
