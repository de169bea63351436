#!/usr/bin/env bash
# Installs what the tests need and runs them all: the Rust workspace tests, the madsim simulation
# tests, and the black-box Python suite (tests/) against target/release/strata with real Kafka
# clients. Made for a fresh Debian machine as root (CI=true, no stdin) as well as a developer's.
# Exits non-zero if any step fails; the last line sums up the steps.
#
# Environment:
#   CARGO_TARGET_DIR  where cargo builds (default: ./target; under CI: ~/.cache/strata-ci/target so
#                     that CI runs on the same machine reuse earlier builds)
#   PYTEST_ARGS       extra arguments for pytest (e.g. "-k kcat")
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
start_s=$SECONDS

if [[ -z ${CARGO_TARGET_DIR:-} ]]; then
    if [[ ${CI:-} == true ]]; then
        export CARGO_TARGET_DIR=$HOME/.cache/strata-ci/target
    else
        export CARGO_TARGET_DIR=$root/target
    fi
fi
sim_target_dir=${CARGO_TARGET_DIR%/target}/target-sim
[[ $sim_target_dir == "$CARGO_TARGET_DIR" ]] && sim_target_dir=$CARGO_TARGET_DIR-sim
export STRATA_BIN=$CARGO_TARGET_DIR/release/strata

declare -a results=()
passed=0
failed=0

# step NAME TIMEOUT_S COMMAND...: runs a step with a time limit, records its outcome.
step() {
    local name=$1 limit_s=$2
    shift 2
    local t0=$SECONDS rc=0
    echo
    echo "=== $name: $*"
    timeout --kill-after=30 "$limit_s" "$@" || rc=$?
    local took_s=$((SECONDS - t0))
    if ((rc == 0)); then
        passed=$((passed + 1))
        results+=("PASS  $name (${took_s}s)")
    else
        failed=$((failed + 1))
        [[ $rc == 124 ]] && rc="timeout after ${limit_s}s"
        results+=("FAIL  $name (${took_s}s, exit $rc)")
    fi
    return 0
}

skip() {
    results+=("SKIP  $1 ($2)")
}

step "setup (apt, .venv, pip)" 900 bash scripts/setup-test-env.sh
step "cargo build --release" 1500 cargo build --release --workspace
build_ok=0
[[ -x $STRATA_BIN ]] || build_ok=1

if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run --workspace" 1200 cargo nextest run --workspace --no-fail-fast --no-tests=pass \
        --tool-config-file "strata-test-all:$root/scripts/nextest-timeouts.toml"
else
    step "cargo test --workspace" 1200 cargo test --workspace --no-fail-fast
fi

if [[ -d sim/tests ]] && [[ -n $(find sim/tests -type f -name '*.rs' -print -quit) ]]; then
    step "simulation tests (--cfg madsim)" 1200 env RUSTFLAGS="--cfg madsim" \
        CARGO_TARGET_DIR="$sim_target_dir" cargo test -p strata-sim
    # Planted bugs (docs/simulation.md): the checker must catch each. Each variant is a separate
    # --cfg build; CI proves two of them, `sim/run planted --all` runs every one.
    for bug in ack-before-fsync broken-dedupe; do
        step "planted bug $bug is caught (--cfg strata_bug)" 900 env \
            RUSTFLAGS="--cfg madsim --cfg strata_bug=\"$bug\"" \
            CARGO_TARGET_DIR="$sim_target_dir-bug/$bug" cargo test -p strata-sim --test planted
    done
else
    skip "simulation tests" "sim/tests has no test files"
fi

if [[ -x .venv/bin/python && $build_ok == 0 ]]; then
    # shellcheck disable=SC2086
    step "pytest tests/" 900 .venv/bin/python -m pytest tests/ -v --timeout=180 ${PYTEST_ARGS:-}
else
    failed=$((failed + 1))
    results+=("FAIL  pytest tests/ (not run: no .venv or no $STRATA_BIN)")
fi

echo
echo "=== summary ($((SECONDS - start_s))s)"
printf '  %s\n' "${results[@]}"
echo "steps: $passed passed, $failed failed"
((failed == 0))
