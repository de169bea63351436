//! Goal: committed consumer-group offsets never go backwards under crashes (torn tails, fsync
//! EIO) and partitions, and the simulation would see it if they did.
//!
//! Every scenario runs the committer processes of `strata_sim::group_workload`; these tests check
//! that their `commit` and `fetch-offsets` operations really reach the checker (acknowledged
//! commits, fetches that read offsets back after faults) and that the seeds pass. In a build with
//! the planted bug `offsets-not-durable` (OffsetCommit answered before its record is durable),
//! the `group-commit` scenario must fail with `group-offset-regression` (see
//! `sim/tests/planted.rs` and docs/simulation.md).
//!
//! Run: `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-sim cargo test -p strata-sim --test groups`
#![cfg(madsim)]

use jepsen_like::history::{OpKind, OpValue};
use strata_sim::run::SimOutcome;
use strata_sim::{run_seed, Scenario};

/// Seeds per scenario here (the big sweep in `sweep.rs` runs many more, groups included).
const SEEDS: u64 = 4;

/// Acknowledged commits and successful fetches that returned at least one offset.
fn group_ops(outcome: &SimOutcome) -> (usize, usize) {
    let ops = outcome.history.ops();
    let commits = ops
        .iter()
        .filter(|op| op.kind == OpKind::Ok && matches!(op.value, OpValue::Commit(_)))
        .count();
    let fetches = ops
        .iter()
        .filter(|op| {
            op.kind == OpKind::Ok
                && matches!(&op.value, OpValue::FetchOffsets(g) if !g.offsets.is_empty())
        })
        .count();
    (commits, fetches)
}

fn run_scenario(name: &str) {
    let scenario = Scenario::named(name).expect("scenario exists");
    assert!(scenario.workload.committers > 0, "{name} runs committers");
    for seed in 0..SEEDS {
        let result = run_seed(seed, &scenario);
        assert!(
            result.verdict.is_ok(),
            "seed {seed} of {name}: {:?}",
            result.verdict
        );
        let outcome = result.outcome.expect("a passing seed has an outcome");
        let (commits, fetches) = group_ops(&outcome);
        assert!(
            commits >= 20 && fetches >= 10,
            "seed {seed} of {name}: only {commits} acknowledged commits, {fetches} fetches with offsets"
        );
        assert_eq!(outcome.report.stats.commits_ok, commits as u64);
        assert!(
            outcome.faults > 0,
            "seed {seed} of {name}: the nemesis injected nothing"
        );
    }
}

#[test]
fn group_offsets_survive_crashes_and_restarts() {
    run_scenario("crash-restart");
}

#[test]
fn group_offsets_survive_group_commit_kills() {
    run_scenario("group-commit");
}

#[test]
fn group_offsets_survive_partitions() {
    run_scenario("partition");
}

#[test]
fn group_offsets_survive_mixed_faults() {
    run_scenario("mixed");
}
