//! Planted bugs: known broker bugs compiled in with `--cfg strata_bug="NAME"`, which the
//! checker must catch (a checker that never fails is no checker).
//!
//! Each bug is a few lines of production code guarded by `#[cfg(strata_bug = "NAME")]`; the
//! normal build does not contain them. `sim/run planted NAME` (or `--all`) builds the simulator
//! with `RUSTFLAGS="--cfg madsim --cfg strata_bug=\"NAME\""` in its own target dir and runs
//! [`hunt`] on the bug's scenario ([`scenario_for`]) until the checker fails a seed.
//!
//! | bug | where | what |
//! |---|---|---|
//! | `ack-before-fsync` | `cluster/src/handlers/produce.rs` | acks=all answers without waiting for the flusher |
//! | `broken-dedupe` | `storage-tiered/src/producer_state.rs` | a retried batch of an idempotent producer is appended again |
//! | `read-past-durable` | `cluster/src/handlers/fetch.rs` | fetch serves (and reports as high watermark) the log end, not the durable end |
//! | `recovery-truncates-too-far` | `storage-tiered/src/log.rs` | recovery also drops the last valid batch before a torn tail |
//! | `recovery-keeps-torn` | `storage-tiered/src/log.rs` | recovery keeps the torn tail's bytes as if valid |
//! | `offsets-not-durable` | `cluster/src/group/mod.rs` | OffsetCommit answers before its `__consumer_offsets` record is durable |

use std::ops::Range;

use crate::run::{run_seed, Scenario, SeedResult, Verdict};

/// Every planted bug's name.
pub const PLANTED_BUGS: [&str; 6] = [
    "ack-before-fsync",
    "broken-dedupe",
    "read-past-durable",
    "recovery-truncates-too-far",
    "recovery-keeps-torn",
    "offsets-not-durable",
];

/// The most seeds [`hunt`] may need to catch any planted bug (the stated bound, checked by
/// `sim/run planted` and `sim/tests/planted.rs`; docs/simulation.md has the measured counts).
pub const SEEDS_TO_CATCH_MAX: u64 = 20;

/// The bug compiled into this build, if any.
pub fn planted_bug() -> Option<&'static str> {
    if cfg!(strata_bug = "ack-before-fsync") {
        Some("ack-before-fsync")
    } else if cfg!(strata_bug = "broken-dedupe") {
        Some("broken-dedupe")
    } else if cfg!(strata_bug = "read-past-durable") {
        Some("read-past-durable")
    } else if cfg!(strata_bug = "recovery-truncates-too-far") {
        Some("recovery-truncates-too-far")
    } else if cfg!(strata_bug = "recovery-keeps-torn") {
        Some("recovery-keeps-torn")
    } else if cfg!(strata_bug = "offsets-not-durable") {
        Some("offsets-not-durable")
    } else {
        None
    }
}

/// The scenario most likely to expose `bug` (a scenario a correct broker passes).
/// Lost acknowledgements, reads of undurable data and recovery bugs need an unsynced tail when
/// the broker dies: `group-commit` (a 20 ms flush interval, kills). Duplicates need retries:
/// `partition` (clogs and packet loss time requests out).
pub fn scenario_for(bug: &str) -> Option<&'static str> {
    match bug {
        "broken-dedupe" => Some("partition"),
        "ack-before-fsync"
        | "read-past-durable"
        | "recovery-truncates-too-far"
        | "recovery-keeps-torn"
        | "offsets-not-durable" => Some("group-commit"),
        _ => None,
    }
}

/// What [`hunt`] found.
#[derive(Debug, Clone)]
pub struct Caught {
    /// The first seed the checker failed (an [`Verdict::Invalid`] verdict).
    pub result: SeedResult,
    /// Seeds run up to and including it.
    pub seeds_run: u64,
    /// Seeds before it whose simulation panicked (e.g. a broker that refused to open a corrupt
    /// log): not counted as caught, since the checker did not see them.
    pub panicked: Vec<SeedResult>,
}

/// Runs the seeds of `seeds` in order on `scenario` until the checker fails one (an
/// [`Verdict::Invalid`] verdict; a panicking seed does not count). `None` if none did.
pub fn hunt(scenario: &Scenario, seeds: Range<u64>) -> Option<Caught> {
    let mut panicked = Vec::new();
    for (ran, seed) in seeds.enumerate() {
        let result = run_seed(seed, scenario);
        match result.verdict {
            Verdict::Ok => {}
            Verdict::Invalid(_) => {
                return Some(Caught {
                    result,
                    seeds_run: ran as u64 + 1,
                    panicked,
                })
            }
            Verdict::Panic(_) => panicked.push(result),
        }
    }
    None
}
