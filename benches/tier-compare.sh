#!/usr/bin/env bash
# Tiered storage against the hot tier, in one run of `strata serve` (free ports, temp data dir,
# remote tier file://<temp>/remote, --tier-interval-ms 100):
#   1. `strata bench produce` of RECORDS records of RECORD_SIZE bytes (acks=1) into a plain topic
#      `hot` and into a topic `tiered`, both with segment.bytes=SEGMENT_BYTES and one partition;
#   2. offload: `strata topic alter tiered --config remote.storage.enable=true --config
#      local.retention.bytes=0`, then `GET /v1/tier/status` every 20 ms until the remote end
#      offset covers every closed segment, pending_segments is 0 and the hot tier is trimmed
#      to the active segment. Offload throughput = bytes of the closed segments (record batches)
#      / wall time from the alter to the remote end covering them; per core = the same bytes /
#      the broker's CPU time (utime + stime from /proc/PID/stat) over that interval. Enabling
#      tiering after the data is written times the offload alone (with tiering on from the
#      start it would run alongside the producer);
#   3. reads of the offloaded records with `strata bench consume` from offset 0: the tiered topic
#      twice (first pass: every row group decoded from Parquet, cold read cache; second pass:
#      warm cache) and the same records of `hot` (page cache) twice;
# and prints a table with the ratios cold/hot and warm/hot. The warm pass is only warm if the
# offloaded bytes fit in the broker's read cache (tier_cache_bytes, 256 MiB): the defaults
# offload 3 x 64 MiB. About 30 s on 2 cores; stops its broker and removes its temp dir on exit.
#
# Usage: benches/tier-compare.sh      (after: cargo build --release -p strata-tools)
# Environment:
#   STRATA_BIN     the strata binary (default: target/release/strata, or $CARGO_TARGET_DIR's)
#   COMPARE_DIR    where the temp dir goes (default: $TMPDIR or /tmp)
#   RECORDS        records produced into each topic (default 230000: 3 closed segments + part of
#                  a fourth with the defaults)
#   RECORD_SIZE    bytes of each record's value (default 1024)
#   SEGMENT_BYTES  segment.bytes of both topics (default 67108864)
#   BATCH_SIZE     records per produce request (default 500)
#   JSON_OUT       if set, a JSON summary of the run is written there
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
strata=${STRATA_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/strata}
records=${RECORDS:-230000}
record_size=${RECORD_SIZE:-1024}
segment_bytes=${SEGMENT_BYTES:-67108864}
batch_size=${BATCH_SIZE:-500}
step_timeout_s=60

if [[ ! -x $strata ]]; then
    echo "tier-compare.sh: $strata not found; build it with: cargo build --release -p strata-tools" >&2
    exit 2
fi
for tool in python3 timeout; do
    command -v "$tool" >/dev/null || { echo "tier-compare.sh: needs $tool" >&2; exit 2; }
done
serve_help=$("$strata" serve --help)
for flag in --tier-interval-ms --object-store --metrics-listen; do
    if ! grep -q -- "$flag" <<<"$serve_help"; then
        echo "tier-compare.sh: $strata serve has no $flag (rebuild: cargo build --release -p strata-tools)" >&2
        exit 2
    fi
done

work=$(mktemp -d "${COMPARE_DIR:-${TMPDIR:-/tmp}}/strata-tier-compare.XXXXXX")
serve_pid=""
cleanup() {
    if [[ -n $serve_pid ]]; then
        kill -TERM "$serve_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# json_field FILE PATH: a field of a JSON file, e.g. consume.mb_per_s
json_field() {
    python3 -c '
import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    value = value[key]
print(value)' "$1" "$2"
}
# cpu_s: the broker's CPU time so far (user + system), in seconds.
cpu_s() {
    python3 -c '
import os, sys
fields = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
# utime and stime are fields 14 and 15 of stat; fields[0] here is field 3 (state).
print((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))' "$serve_pid"
}

echo "strata tier-compare: $records records of $record_size B per topic, segment.bytes=$segment_bytes, temp dir $work ($(df -h --output=source,fstype "$work" | tail -1 | tr -s ' '))"
echo "note: single run on a shared machine; other work on it lowers every figure."

"$strata" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$work/data" \
    --object-store "file://$work/remote" --tier-interval-ms 100 >"$work/serve.log" 2>&1 &
serve_pid=$!
bootstrap=""
metrics=""
for _ in $(seq 200); do
    bootstrap=$(sed -n 's/.*strata listening on \([0-9.:]*\).*/\1/p' "$work/serve.log" 2>/dev/null | head -1) || true
    metrics=$(sed -n 's|.*metrics listening on http://\([0-9.:]*\)/.*|\1|p' "$work/serve.log" 2>/dev/null | head -1) || true
    [[ -n $bootstrap && -n $metrics ]] && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $bootstrap || -z $metrics ]]; then
    echo "tier-compare.sh: strata serve did not start with a metrics endpoint (log below):" >&2
    cat "$work/serve.log" >&2 || true
    exit 1
fi

connect=(--bootstrap-server "$bootstrap")
for topic in hot tiered; do
    timeout "$step_timeout_s" "$strata" topic create "$topic" --partitions 1 \
        --config "segment.bytes=$segment_bytes" "${connect[@]}" >/dev/null
    timeout "$step_timeout_s" "$strata" bench produce "${connect[@]}" --topic "$topic" \
        --partitions 1 --producers 1 --record-size "$record_size" --num-records "$records" \
        --duration-secs 50 --batch-size "$batch_size" --acks 1 --json --quiet >"$work/produce-$topic.json"
done

# Offload: enable tiering on `tiered` and time it until the closed segments are remote.
timeout 90 python3 - "$strata" "$bootstrap" "$metrics" "$serve_pid" "$work/data/tiered-0" \
    "$work/offload.json" <<'EOF'
import json, os, subprocess, sys, time, urllib.request

strata, bootstrap, metrics, pid, log_dir, out = sys.argv[1:7]
tick_s = 1 / os.sysconf("SC_CLK_TCK")

def cpu_s():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * tick_s

def status():
    with urllib.request.urlopen(f"http://{metrics}/v1/tier/status?topic=tiered", timeout=5) as r:
        partitions = json.load(r)["partitions"]
    assert len(partitions) == 1, partitions
    return partitions[0]

# Every record must be visible (acks=1 does not wait for the high watermark).
deadline = time.monotonic() + 20
while True:
    s = status()
    if s["high_watermark"] == s["log_end_offset"]:
        break
    if time.monotonic() > deadline:
        sys.exit(f"the high watermark of tiered-0 stays below the log end: {s}")
    time.sleep(0.05)

segments = sorted(
    (int(name[: -len(".log")]), os.path.getsize(os.path.join(log_dir, name)))
    for name in os.listdir(log_dir)
    if name.endswith(".log")
)
if len(segments) < 2:
    sys.exit(f"only {len(segments)} segment in {log_dir}: produce more than segment.bytes")
closed_end = segments[-1][0]  # the active segment's base offset
closed_bytes = sum(size for _, size in segments[:-1])

cpu_0 = cpu_s()
t_0 = time.monotonic()
subprocess.run(
    [strata, "topic", "alter", "tiered", "--config", "remote.storage.enable=true",
     "--config", "local.retention.bytes=0", "--bootstrap-server", bootstrap],
    check=True, stdout=subprocess.DEVNULL,
)
offloaded = None
deadline = t_0 + 80
while True:
    s = status()
    now = time.monotonic()
    if s["last_error"]:
        sys.exit(f"tiering failed: {s['last_error']}")
    if offloaded is None and (s["remote_end_offset"] or 0) >= closed_end:
        offloaded = (now - t_0, cpu_s() - cpu_0)
    if offloaded and s["pending_segments"] == 0 and s["local_start_offset"] >= closed_end:
        trimmed_s = now - t_0
        break
    if now > deadline:
        sys.exit(f"offload did not finish in 80 s: {s}")
    time.sleep(0.02)
wall_s, cpu_used_s = offloaded
json.dump({
    "closed_segments": len(segments) - 1,
    "closed_end_offset": closed_end,
    "closed_bytes": closed_bytes,
    "remote_bytes": s["remote_bytes"],
    "remote_files": s["remote_files"],
    "wall_s": wall_s,
    "cpu_s": cpu_used_s,
    "trimmed_s": trimmed_s,
    "mb_per_s": closed_bytes / 1e6 / wall_s,
    "mb_per_cpu_s": closed_bytes / 1e6 / cpu_used_s if cpu_used_s > 0 else None,
    "status": s,
}, open(out, "w"))
EOF

closed_end=$(json_field "$work/offload.json" closed_end_offset)

# consume NAME TOPIC: reads the first $closed_end records of TOPIC from offset 0; records the
# broker's CPU seconds of the pass in $work/NAME.cpu.
consume() {
    local before after
    before=$(cpu_s)
    timeout "$step_timeout_s" "$strata" bench consume "${connect[@]}" --topic "$2" \
        --num-records "$closed_end" --json --quiet >"$work/$1.json"
    after=$(cpu_s)
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$before" "$after" >"$work/$1.cpu"
    local got
    got=$(json_field "$work/$1.json" consume.records)
    if [[ $got != "$closed_end" ]]; then
        echo "tier-compare.sh: $1 read $got records, expected $closed_end" >&2
        exit 1
    fi
}
consume hot-1 hot
consume cold tiered
consume warm tiered
consume hot-2 hot

python3 - "$work" "$records" "$record_size" "${JSON_OUT:-}" <<'EOF'
import json, sys

work, records, record_size, json_out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
load = lambda name: json.load(open(f"{work}/{name}.json"))
offload = load("offload")
runs = {name: load(name)["consume"] for name in ["hot-1", "cold", "warm", "hot-2"]}
cpu = {name: float(open(f"{work}/{name}.cpu").read()) for name in runs}
produce = {t: load(f"produce-{t}")["produce"] for t in ["hot", "tiered"]}
hot = max(runs["hot-1"]["mb_per_s"], runs["hot-2"]["mb_per_s"])

print(f"produce (acks=1, {records} x {record_size} B): hot {produce['hot']['mb_per_s']:.1f} MB/s, "
      f"tiered {produce['tiered']['mb_per_s']:.1f} MB/s")
print(f"offload: {offload['closed_segments']} closed segments, {offload['closed_bytes'] / 1e6:.1f} MB of batches "
      f"-> {offload['remote_bytes'] / 1e6:.1f} MB of Parquet ({100 * offload['remote_bytes'] / offload['closed_bytes']:.1f}%) "
      f"in {offload['wall_s']:.2f} s wall, {offload['cpu_s']:.2f} s broker CPU (hot tier trimmed after {offload['trimmed_s']:.2f} s)")
print()
print(f"{'measure':<44} {'MB/s':>9} {'records/s':>11} {'broker CPU s':>13} {'vs hot':>8}")
print(f"{'offload (batches -> Parquet, wall)':<44} {offload['mb_per_s']:>9.1f}")
per_core = offload["mb_per_cpu_s"]
print(f"{'offload per core (per broker CPU second)':<44} {per_core if per_core is None else f'{per_core:9.1f}':>9}")
labels = {
    "hot-1": "hot consume, pass 1 (page cache)",
    "cold": "tiered consume, pass 1 (Parquet, cold cache)",
    "warm": "tiered consume, pass 2 (warm read cache)",
    "hot-2": "hot consume, pass 2 (page cache)",
}
for name, label in labels.items():
    r = runs[name]
    ratio = f"{r['mb_per_s'] / hot:.2f}" if name in ("cold", "warm") else ""
    print(f"{label:<44} {r['mb_per_s']:>9.1f} {r['records_per_s']:>11.0f} {cpu[name]:>13.2f} {ratio:>8}")
print()
print(f"cold/hot = {runs['cold']['mb_per_s'] / hot:.2f}, warm/hot = {runs['warm']['mb_per_s'] / hot:.2f} "
      f"(hot = the better hot pass, {hot:.1f} MB/s; MB = 10^6 bytes of record values for reads, "
      f"of record batches for offload); target warm/hot >= 0.5: "
      f"{'met' if runs['warm']['mb_per_s'] >= hot / 2 else 'MISSED'}")
if json_out:
    json.dump({"offload": offload, "consume": runs, "broker_cpu_s": cpu, "produce": produce},
              open(json_out, "w"), indent=1)
EOF
