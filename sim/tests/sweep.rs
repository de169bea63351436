//! Goal: every scenario passes the checker on a handful of seeds, each seed replays to the same
//! trace hash, madsim's own determinism check passes, and a disk that loses acknowledged syncs
//! is caught — through the same code path as `sim/run sweep` ([`run_seed`]).
//!
//! Each run gets its own OS thread and madsim runtime (one runtime per thread).
//! Run: `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-sim cargo test -p strata-sim --test sweep`.
#![cfg(madsim)]

use strata_sim::run::{run_seed, simulate, Scenario, DETECTION_SCENARIOS, SCENARIOS};

/// Seeds per scenario (each run twice).
const SEEDS_PER_SCENARIO: u64 = 3;

#[test]
fn every_scenario_passes_and_replays_to_the_same_trace_hash() {
    for (i, name) in SCENARIOS.iter().enumerate() {
        let scenario = Scenario::named(name).expect("scenario");
        for seed in (1_000 * (i as u64 + 1))..(1_000 * (i as u64 + 1) + SEEDS_PER_SCENARIO) {
            let first = run_seed(seed, &scenario);
            assert!(
                first.verdict.is_ok(),
                "{name} seed {seed}: {:?}",
                first.verdict
            );
            let outcome = first.outcome.as_ref().expect("outcome of a passing seed");
            assert!(
                outcome.operations > 100,
                "{name} seed {seed}: only {} operations",
                outcome.operations
            );
            assert!(outcome.faults > 0, "{name} seed {seed}: no fault injected");
            assert!(
                outcome.report.stats.values_acked > 0,
                "{name} seed {seed}: nothing acknowledged"
            );
            let second = run_seed(seed, &scenario);
            let again = second.outcome.as_ref().expect("outcome of the rerun");
            assert_eq!(
                outcome.trace_hash, again.trace_hash,
                "{name} seed {seed} is not deterministic"
            );
            assert_eq!(outcome.history.len(), again.history.len());
        }
    }
}

#[test]
fn different_seeds_give_different_traces() {
    let scenario = Scenario::named("mixed").expect("scenario");
    let a = run_seed(7, &scenario).outcome.expect("outcome").trace_hash;
    let b = run_seed(8, &scenario).outcome.expect("outcome").trace_hash;
    assert_ne!(a, b);
}

#[test]
fn madsim_determinism_check_passes_on_the_mixed_scenario() {
    // Runs the seed twice and compares every draw from madsim's RNG; panics on divergence.
    let outcome =
        madsim::runtime::Runtime::check_determinism(42, madsim::Config::default(), || {
            simulate(Scenario::named("mixed").expect("scenario"))
        });
    assert!(outcome.report.valid, "{}", outcome.report);
}

#[test]
fn lost_syncs_are_caught_by_the_checker() {
    for name in DETECTION_SCENARIOS {
        let scenario = Scenario::named(name).expect("scenario");
        // Every one of the first 3 seeds must be caught (the sweep shows all are).
        for seed in 0..3 {
            let result = run_seed(seed, &scenario);
            let outcome = result.outcome.as_ref().expect("no panic");
            assert!(!result.verdict.is_ok(), "{name} seed {seed} was not caught");
            let kinds = outcome.report.kinds();
            assert!(
                kinds.contains(&"lost-write") || kinds.contains(&"unseen"),
                "{name} seed {seed}: expected lost or unseen writes, got {kinds:?}"
            );
        }
    }
}
