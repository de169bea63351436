//! Goal: the checker catches a planted bug (an `INVALID` verdict; seeds whose simulation panics
//! do not count) within the stated number of seeds ([`SEEDS_TO_CATCH_MAX`]), through the same
//! code path as `sim/run planted`.
//!
//! Compiled only in a build with a planted bug (a normal or madsim-only build has nothing to
//! catch, so there is no test):
//! `RUSTFLAGS='--cfg madsim --cfg strata_bug="broken-dedupe"' CARGO_TARGET_DIR=target-sim-bug/broken-dedupe cargo test -p strata-sim --test planted`.
#![cfg(all(
    madsim,
    any(
        strata_bug = "ack-before-fsync",
        strata_bug = "broken-dedupe",
        strata_bug = "read-past-durable",
        strata_bug = "recovery-truncates-too-far",
        strata_bug = "recovery-keeps-torn",
        strata_bug = "offsets-not-durable"
    )
))]

use strata_sim::planted::{hunt, planted_bug, scenario_for, PLANTED_BUGS, SEEDS_TO_CATCH_MAX};
use strata_sim::run::Scenario;

#[test]
fn the_planted_bug_is_caught_within_the_stated_number_of_seeds() {
    let bug = planted_bug().expect("this test is compiled only with a planted bug");
    assert!(PLANTED_BUGS.contains(&bug));
    let name = scenario_for(bug).expect("every planted bug has a scenario");
    let scenario = Scenario::named(name).expect("scenario");
    let Some(caught) = hunt(&scenario, 0..SEEDS_TO_CATCH_MAX) else {
        panic!("the checker did not catch {bug} in seeds 0..{SEEDS_TO_CATCH_MAX} of {name}");
    };
    let result = &caught.result;
    eprintln!(
        "caught {bug} at seed {} (after {} seeds, {} panicked) in {name}: {:?}",
        result.seed,
        caught.seeds_run,
        caught.panicked.len(),
        result.verdict
    );
}
