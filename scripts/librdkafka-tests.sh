#!/usr/bin/env bash
# librdkafka's own integration tests against Strata (see docs/librdkafka-tests.md).
#
# The `rdkafka-sys` crate on crates.io vendors librdkafka's source with its `tests/` directory.
# This script fetches that crate (through cargo), builds librdkafka and its `test-runner` once
# (cached under ~/.cache/strata-librdkafka), starts a release `strata serve` on a free port with
# Kafka's test scenario (auto-created topics with 4 partitions), runs every broker test that needs
# neither ACLs, SASL/SSL, transactions nor a multi-broker cluster (SKIPS below, each with its
# reason), then runs the tests of librdkafka's "noautocreate" scenario against a broker with
# auto-creation off, and prints one line per test and the counts.
#
# Usage: scripts/librdkafka-tests.sh [TEST_NUMBERS]   e.g. scripts/librdkafka-tests.sh 0030,0113
#        (named tests run even if SKIPS lists them; SUBTESTS=substring selects their subtests)
# Environment:
#   STRATA_BIN          the strata binary (default: `cargo build --release -p strata-tools`)
#   TEST_KAFKA_VERSION  the Kafka version the tests assume (default 4.1.0: Strata serves Kafka
#                       4.1's protocol; librdkafka's default 2.4.0 silently skips newer tests)
#   PARALLEL            tests run at once (default 2)
#   TIMEOUT_MULTIPLIER  librdkafka's test.timeout.multiplier (default 2: a shared 2-core machine)
#   EXTRA_SKIPS         more test numbers to skip, comma separated
#   KEEP_WORK=1         keep the work dir (broker data and log, test logs)
# Exit status: 0 when no selected test failed.
set -euo pipefail

RDKAFKA_SYS_VERSION=4.10.0+2.12.1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${LIBRDKAFKA_TESTS_CACHE:-$HOME/.cache/strata-librdkafka}
SRC=$CACHE/rdkafka-sys-$RDKAFKA_SYS_VERSION/librdkafka
TEST_KAFKA_VERSION=${TEST_KAFKA_VERSION:-4.1.0}
PARALLEL=${PARALLEL:-2}
TIMEOUT_MULTIPLIER=${TIMEOUT_MULTIPLIER:-2}
SELECTED=${1:-}

# Tests left out, with the reason. Everything else that is not a local (broker-less) test, a
# known librdkafka issue (-K) or a manual test runs.
SKIPS=(
  "0016:needs a trivup cluster (BROKER_ADDRESS_2, JMX via kafka-run-class.sh)"
  "0055:one subtest measures producer latency with transactions"
  "0061:one subtest measures consumer lag with transactions"
  "0081:its DescribeAcls/CreateAcls/DeleteAcls parts need ACLs (DescribeCluster and DescribeTopics subtests: see docs)"
  "0097:needs SSL (the test-runner is built without it)"
  "0098:transactions (and a Java helper)"
  "0101:needs a 3-broker cluster with racks"
  "0103:transactions"
  "0107:creates topics with replication factor 3 (needs 3 brokers)"
  "0109:its unauthorized-topic subtests need ACLs (kafka-acls.sh)"
  "0111:creates topics with replication factor 3 (needs 3 brokers)"
  "0115:ACLs (kafka-acls.sh)"
  "0119:ACLs (kafka-acls.sh)"
  "0126:needs SASL/OAUTHBEARER and an OIDC server"
  "0129:transactions"
  "0135:needs SASL"
  "0137:one subtest (control messages) needs transactions"
  "0142:needs SASL"
)

log() { printf '== %s\n' "$*" >&2; }

fetch_source() {
  [ -f "$SRC/configure" ] && return
  local crate
  crate=$(ls "$HOME"/.cargo/registry/cache/*/rdkafka-sys-$RDKAFKA_SYS_VERSION.crate 2>/dev/null | head -1 || true)
  if [ -z "$crate" ]; then
    log "fetching rdkafka-sys $RDKAFKA_SYS_VERSION through cargo"
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/src"
    printf '[package]\nname = "fetch-rdkafka-sys"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nrdkafka-sys = "=%s"\n' \
      "${RDKAFKA_SYS_VERSION%%+*}" >"$tmp/Cargo.toml"
    echo 'fn main() {}' >"$tmp/src/main.rs"
    (cd "$tmp" && cargo fetch --quiet)
    rm -rf "$tmp"
    crate=$(ls "$HOME"/.cargo/registry/cache/*/rdkafka-sys-$RDKAFKA_SYS_VERSION.crate | head -1)
  fi
  mkdir -p "$CACHE"
  tar xzf "$crate" -C "$CACHE"
}

build_runner() {
  [ -x "$SRC/tests/test-runner" ] && return
  log "building librdkafka and its test-runner in $SRC (a few minutes)"
  local zstd=--disable-zstd
  if pkg-config --exists libzstd 2>/dev/null; then zstd=; fi
  (cd "$SRC" && ./configure --no-download --disable-ssl --disable-gssapi --disable-curl $zstd >/dev/null)
  make -C "$SRC" -j2 libs >/dev/null
  make -C "$SRC/tests" -j2 test-runner >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

BROKER_PID=
start_broker() { # $1: name, $2: auto_create_topics
  local dir=$WORK/$1
  mkdir -p "$dir"
  PORT=$(free_port)
  cat >"$dir/strata.toml" <<EOF
listen = "127.0.0.1:$PORT"
data_dir = "$dir/data"
num_partitions = 4
auto_create_topics = $2
metrics_listen = "none"
EOF
  "$STRATA_BIN" serve --config "$dir/strata.toml" >"$dir/strata.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
    kill -0 "$BROKER_PID" 2>/dev/null || { cat "$dir/strata.log" >&2; exit 1; }
    sleep 0.1
  done
  log "strata serve did not listen on $PORT"; exit 1
}

stop_broker() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  BROKER_PID=
}

# kafka-topics.sh stand-in (the tests call "$KAFKA_PATH/bin/kafka-topics.sh --bootstrap-server
# HOST:PORT --create|--delete|--alter --topic T [--partitions N] [--config K=V]...") on the
# strata CLI.
write_kafka_tools() {
  mkdir -p "$WORK/kafka/bin"
  cat >"$WORK/kafka/bin/kafka-topics.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
STRATA_BIN="$STRATA_BIN"
EOF
  cat >>"$WORK/kafka/bin/kafka-topics.sh" <<'EOF'
action= topic= partitions= bootstrap= configs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap-server) bootstrap=$2; shift 2 ;;
    --create|--delete|--alter) action=${1#--}; shift ;;
    --topic) topic=$2; shift 2 ;;
    --partitions) partitions=$2; shift 2 ;;
    --replication-factor) shift 2 ;;
    --config) configs+=(--config "$2"); shift 2 ;;
    *) echo "kafka-topics.sh stand-in: unsupported argument $1" >&2; exit 2 ;;
  esac
done
case "$action" in
  create) exec "$STRATA_BIN" topic create "$topic" ${partitions:+--partitions "$partitions"} \
            "${configs[@]}" --bootstrap-server "$bootstrap" ;;
  delete) exec "$STRATA_BIN" topic delete "$topic" --bootstrap-server "$bootstrap" ;;
  alter) if [ -n "$partitions" ]; then
           exec "$STRATA_BIN" topic alter "$topic" --partitions "$partitions" \
             --bootstrap-server "$bootstrap"
         fi
         exec "$STRATA_BIN" topic alter "$topic" "${configs[@]}" --bootstrap-server "$bootstrap" ;;
  *) echo "kafka-topics.sh stand-in: no action" >&2; exit 2 ;;
esac
EOF
  chmod +x "$WORK/kafka/bin/kafka-topics.sh"
}

run_tests() { # $1: scenario
  cat >"$WORK/test.conf" <<EOF
bootstrap.servers=127.0.0.1:$PORT
test.timeout.multiplier=$TIMEOUT_MULTIPLIER
EOF
  local skip
  # A test named on the command line runs even if it is in SKIPS (e.g. 0081 with SUBTESTS).
  skip=$(printf '%s\n' "${SKIPS[@]}" | cut -d: -f1 | grep -v -F -x -f <(tr , '\n' <<<"$SELECTED") |
    paste -sd, - || true)
  [ -n "${EXTRA_SKIPS:-}" ] && skip="$skip,$EXTRA_SKIPS"
  (
    cd "$SRC/tests"
    env RDKAFKA_TEST_CONF="$WORK/test.conf" TEST_KAFKA_VERSION="$TEST_KAFKA_VERSION" \
      TESTS_SKIP="$skip" ${SELECTED:+"TESTS=$SELECTED"} \
      BROKERS="127.0.0.1:$PORT" KAFKA_PATH="$WORK/kafka" \
      LD_LIBRARY_PATH="$SRC/src:$SRC/src-cpp" \
      ./test-runner -L -K -p"$PARALLEL" -s "$1"
  ) >"$WORK/test-runner-$1.log" 2>&1 || true
}

fetch_source
build_runner
if [ -z "${STRATA_BIN:-}" ]; then
  log "building strata (release)"
  (cd "$ROOT" && cargo build --release --quiet -p strata-tools)
  STRATA_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/strata
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/librdkafka-tests.XXXXXX")
trap 'stop_broker; [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"' EXIT
write_kafka_tools
log "work dir $WORK; librdkafka $(basename "$(dirname "$SRC")"); TEST_KAFKA_VERSION=$TEST_KAFKA_VERSION"

start_broker default true
log "scenario default: strata on 127.0.0.1:$PORT"
run_tests default
stop_broker
start_broker noautocreate false
log "scenario noautocreate: strata on 127.0.0.1:$PORT (auto_create_topics = false)"
run_tests noautocreate
stop_broker

printf '%s\n' "${SKIPS[@]}" >"$WORK/skips.txt"
python3 - "$WORK" "$SELECTED" <<'EOF'
import pathlib, re, sys
work = pathlib.Path(sys.argv[1])
selected = sys.argv[2]
skips = dict(line.split(":", 1) for line in (work / "skips.txt").read_text().splitlines())
ansi = re.compile(r"\x1b\[[0-9;]*m")
# Read the per-test lines of the log (the summary table is not printed when the runner aborts
# on clients left running by a failed test): "[name / 1.2s] WARN: SKIPPING TEST: reason",
# "### Test "name (subtest)" failed at ...: ###" + the reason on the next line, and the end
# marker "================= Test name PASSED|FAILED|SKIPPED =================".
end = re.compile(r"^\[(\d{4}\S*)\s*/.*\] =+ Test (\S+) (PASSED|FAILED|SKIPPED) =+")
skip = re.compile(r"^\[(\d{4}\S*)\s*/.*\] WARN: SKIPPING TEST: (.*?)(\[|$)")
fail = re.compile(r'^### Test "(\d{4}[^ "]*)(?: \((.*)\))?" failed at (\S+)')
counts = {"PASSED": 0, "FAILED": 0, "SKIPPED": 0}
for scenario in ("default", "noautocreate"):
    log = work / f"test-runner-{scenario}.log"
    lines = [ansi.sub("", line) for line in log.read_text(errors="replace").splitlines()]
    state, reason = {}, {}
    for i, line in enumerate(lines):
        if m := end.match(line):
            state[m.group(2)] = m.group(3)
        elif m := skip.match(line):
            reason.setdefault(m.group(1), m.group(2).strip())
        elif m := fail.match(line):
            detail = lines[i + 1].strip() if i + 1 < len(lines) else ""
            state[m.group(1)] = "FAILED"
            reason.setdefault(m.group(1), f"{m.group(2) or ''} at {m.group(3)} {detail}".strip())
    if not state:
        print(f"no test ran in scenario {scenario}: see {log}")
        if not selected:  # with a selection, a scenario may have none of its tests
            counts["FAILED"] += 1
    for name in sorted(state):
        why = reason.get(name, "")
        if "negative test flags" in why:
            continue  # a local (broker-less) test
        if state[name] == "SKIPPED" and "TESTS_SKIP" in why:
            why = skips.get(name[:4], why)
        counts[state[name]] += 1
        print(f"{state[name]:8} {name + ' [' + scenario + ']':58} {why[:170]}")
print(f"{counts['PASSED']} passed, {counts['FAILED']} failed, {counts['SKIPPED']} skipped")
sys.exit(1 if counts["FAILED"] else 0)
EOF
