//! Goal: every scenario passes the checker on many seeds (240 in all by default, `tiered`
//! included: see also `tiering.rs`), seeds replay to
//! the same trace hash, madsim's own determinism check passes, and a disk that loses acknowledged syncs
//! is caught — through the same code path as `sim/run sweep` ([`run_seed`]).
//!
//! Each run gets its own OS thread and madsim runtime (one runtime per thread).
//! Run: `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-sim cargo test -p strata-sim --test sweep`.
#![cfg(madsim)]

use strata_sim::run::{run_seed, simulate, Scenario, DETECTION_SCENARIOS, SCENARIOS};

/// Seeds per scenario in the big sweep; `SIM_SEEDS_PER_SCENARIO` overrides (CI: 40, i.e. 240
/// seeds in all over the 6 scenarios).
fn seeds_per_scenario() -> u64 {
    std::env::var("SIM_SEEDS_PER_SCENARIO")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

#[test]
fn every_scenario_passes_on_many_seeds() {
    let per_scenario = seeds_per_scenario();
    let started = std::time::Instant::now();
    let mut simulated_s = 0.0;
    let mut failures = Vec::new();
    for (i, name) in SCENARIOS.iter().enumerate() {
        let scenario = Scenario::named(name).expect("scenario");
        let first = 10_000 * (i as u64 + 1);
        for seed in first..first + per_scenario {
            let result = run_seed(seed, &scenario);
            match &result.outcome {
                Some(outcome) if result.verdict.is_ok() => {
                    simulated_s += outcome.simulated_s;
                    assert!(
                        outcome.operations > 100,
                        "{name} seed {seed}: only {} operations",
                        outcome.operations
                    );
                    assert!(
                        outcome.report.stats.values_acked > 0,
                        "{name} seed {seed}: nothing acknowledged"
                    );
                }
                _ => failures.push(format!(
                    "sim/run replay --seed {seed} --scenario {name}: {:?}",
                    result.verdict
                )),
            }
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    eprintln!(
        "sim: {} seeds, {} failed, {simulated_s:.0} simulated s, {wall_s:.1} wall s, {:.0}x",
        per_scenario * SCENARIOS.len() as u64,
        failures.len(),
        simulated_s / wall_s.max(1e-9)
    );
    assert!(
        failures.is_empty(),
        "failing seeds:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_scenario_replays_to_the_same_trace_hash() {
    for (i, name) in SCENARIOS.iter().enumerate() {
        let scenario = Scenario::named(name).expect("scenario");
        for seed in (1_000 * (i as u64 + 1))..(1_000 * (i as u64 + 1) + 2) {
            let first = run_seed(seed, &scenario);
            assert!(
                first.verdict.is_ok(),
                "{name} seed {seed}: {:?}",
                first.verdict
            );
            let outcome = first.outcome.as_ref().expect("outcome of a passing seed");
            assert!(outcome.faults > 0, "{name} seed {seed}: no fault injected");
            let second = run_seed(seed, &scenario);
            let again = second.outcome.as_ref().expect("outcome of the rerun");
            assert_eq!(
                outcome.trace_hash, again.trace_hash,
                "{name} seed {seed} is not deterministic"
            );
            assert_eq!(outcome.history, again.history);
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
