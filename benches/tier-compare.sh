#!/usr/bin/env bash
# Tiered storage against the hot tier, in one run of `strata serve` (free ports, temp data dir,
# remote tier file://<temp>/remote, --tier-interval-ms 100), for each of two payloads:
#   - `loadtool`: `strata bench produce` (acks=1) values: slices of one pool of random letters at
#     251 start positions, so a Parquet value column holds 251 distinct values and its
#     dictionary encoding shrinks it to almost nothing (an optimistic case for the codec);
#   - `random`: every value fresh random uppercase letters (seeded), sent with `strata produce
#     --acks 1` from stdin: zstd brings them to about 60%, as for real text payloads;
# it does:
#   1. RECORDS records of RECORD_SIZE bytes into a plain topic `hot-P` and into a topic
#      `tiered-P`, both with segment.bytes=SEGMENT_BYTES and one partition;
#   2. offload: `strata topic alter tiered-P --config remote.storage.enable=true --config
#      local.retention.bytes=0`, then `GET /v1/tier/status?topic=tiered-P` every 20 ms until the
#      remote end offset covers every closed segment, pending_segments is 0 and the hot tier is
#      trimmed to the active segment. Offload throughput = bytes of the closed segments (record
#      batches) / wall time from the alter to the remote end covering them; per core = the same
#      bytes / the broker's CPU time (utime + stime from /proc/PID/stat) over that interval.
#      Enabling tiering after the data is written times the offload alone (with tiering on from
#      the start it would run alongside the producer); the 100 ms tier interval adds up to
#      100 ms of wall time;
#   3. reads of the offloaded records with `strata bench consume` from offset 0: `tiered-P` once
#      with a cold read cache (every row group decoded from Parquet), then five times with a
#      warm cache, each followed by a read of the same records of `hot-P` (page cache);
# and prints a table per payload with the ratios cold/hot and warm/hot (warm and hot: medians of
# 5, as each read of 200 MB takes a fraction of a second and single passes are noisy) and the
# broker's CPU time per pass (MB/CPU-s: MB read per broker CPU second, steadier than MB/s on a
# busy machine). The warm passes are only warm if the offloaded bytes fit in the broker's read
# cache (tier_cache_bytes, 256 MiB): the defaults offload 3 x 64 MiB. About 30 s on 2 cores;
# stops its broker and removes its temp dir on exit.
#
# Usage: benches/tier-compare.sh      (after: cargo build --release -p strata-tools)
# Environment:
#   STRATA_BIN     the strata binary (default: target/release/strata, or $CARGO_TARGET_DIR's)
#   COMPARE_DIR    where the temp dir goes (default: $TMPDIR or /tmp)
#   PAYLOADS       payloads to run, in order (default "loadtool random")
#   RECORDS        records produced into each topic (default 230000: 3 closed segments + part of
#                  a fourth with the defaults)
#   RECORD_SIZE    bytes of each record's value (default 1024)
#   SEGMENT_BYTES  segment.bytes of the topics (default 67108864)
#   BATCH_SIZE     records per produce request of `strata bench produce` (default 500)
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

# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
bench_work_dir strata-tier-compare

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

# fill PAYLOAD TOPIC: creates TOPIC and writes $records records of $record_size bytes to it.
fill() {
    timeout "$step_timeout_s" "$strata" topic create "$2" --partitions 1 \
        --config "segment.bytes=$segment_bytes" "${connect[@]}" >/dev/null
    case $1 in
    loadtool)
        timeout "$step_timeout_s" "$strata" bench produce "${connect[@]}" --topic "$2" \
            --partitions 1 --producers 1 --record-size "$record_size" --num-records "$records" \
            --duration-secs 50 --batch-size "$batch_size" --acks 1 --json --quiet >"$work/produce-$2.json"
        ;;
    random)
        # One line per record: random uppercase letters (seeded: both topics get the same values).
        python3 -c '
import random, sys
records, size = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(20261126)
table = bytes(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 26] for i in range(256))
out = sys.stdout.buffer
for first in range(0, records, 1000):
    n = min(1000, records - first)
    block = rng.randbytes(n * size).translate(table)
    out.write(b"".join(block[i * size:(i + 1) * size] + b"\n" for i in range(n)))
' "$records" "$record_size" | timeout "$step_timeout_s" "$strata" produce "$2" --acks 1 "${connect[@]}"
        ;;
    *)
        echo "tier-compare.sh: unknown payload $1 (loadtool or random)" >&2
        exit 2
        ;;
    esac
}

# offload TOPIC: enables tiering on TOPIC and times it until its closed segments are remote
# (writes $work/offload-TOPIC.json).
offload() {
    timeout 90 python3 - "$strata" "$bootstrap" "$metrics" "$serve_pid" "$1" "$work/data/$1-0" \
        "$work/offload-$1.json" <<'EOF'
import json, os, subprocess, sys, time, urllib.request

strata, bootstrap, metrics, pid, topic, log_dir, out = sys.argv[1:8]
tick_s = 1 / os.sysconf("SC_CLK_TCK")

def cpu_s():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) * tick_s

def status():
    url = f"http://{metrics}/v1/tier/status?topic={topic}"
    with urllib.request.urlopen(url, timeout=5) as r:
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
        sys.exit(f"the high watermark of {topic}-0 stays below the log end: {s}")
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
    [strata, "topic", "alter", topic, "--config", "remote.storage.enable=true",
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
}

# remote_read_bytes: the broker's strata_tier_remote_read_bytes_total (bytes served from Parquet).
remote_read_bytes() {
    python3 -c '
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5) as r:
    for line in r.read().decode().splitlines():
        if line.startswith("strata_tier_remote_read_bytes_total "):
            print(int(float(line.split()[1])))
            break
    else:
        sys.exit("no strata_tier_remote_read_bytes_total in /metrics")' "$metrics"
}

# consume NAME TOPIC RECORDS: reads the first RECORDS records of TOPIC from offset 0 into
# $work/NAME.json; the broker's CPU seconds of the pass go to $work/NAME.cpu, the bytes it
# served from the remote tier to $work/NAME.remote.
consume() {
    local before after remote_before got
    before=$(cpu_s)
    remote_before=$(remote_read_bytes)
    timeout "$step_timeout_s" "$strata" bench consume "${connect[@]}" --topic "$2" \
        --num-records "$3" --json --quiet >"$work/$1.json"
    after=$(cpu_s)
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$before" "$after" >"$work/$1.cpu"
    echo $(($(remote_read_bytes) - remote_before)) >"$work/$1.remote"
    got=$(json_field "$work/$1.json" consume.records)
    # A consumer counts whole batches: it may read a few records past RECORDS.
    if ((got < $3)); then
        echo "tier-compare.sh: $1 read $got records of $2, expected at least $3" >&2
        exit 1
    fi
}

for payload in ${PAYLOADS:-loadtool random}; do
    fill "$payload" "hot-$payload"
    fill "$payload" "tiered-$payload"
    offload "tiered-$payload"
    closed_end=$(json_field "$work/offload-tiered-$payload.json" closed_end_offset)
    consume "$payload-cold" "tiered-$payload" "$closed_end"
    for pass in 1 2 3 4 5; do
        consume "$payload-warm-$pass" "tiered-$payload" "$closed_end"
        consume "$payload-hot-$pass" "hot-$payload" "$closed_end"
    done
done

python3 - "$work" "$records" "$record_size" "${JSON_OUT:-}" ${PAYLOADS:-loadtool random} <<'EOF'
import json, sys

work, records, record_size, json_out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
payloads = sys.argv[5:]
PASSES = (1, 2, 3, 4, 5)
load = lambda name: json.load(open(f"{work}/{name}.json"))
summary = {}
for payload in payloads:
    offload = load(f"offload-tiered-{payload}")
    names = ["cold"] + [f"{kind}-{i}" for i in PASSES for kind in ("warm", "hot")]
    runs = {n: load(f"{payload}-{n}")["consume"] for n in names}
    cpu = {n: float(open(f"{work}/{payload}-{n}.cpu").read()) for n in names}
    remote = {n: int(open(f"{work}/{payload}-{n}.remote").read()) for n in names}
    for n in names:
        # A tiered pass must be served from Parquet (batch bytes >= value bytes), a hot one not.
        from_parquet = remote[n] >= runs[n]["bytes"]
        if from_parquet != (not n.startswith("hot")):
            sys.exit(f"{payload}-{n}: {remote[n]} bytes from the remote tier for "
                     f"{runs[n]['bytes']} bytes of values read: not the expected tier")
    median = lambda kind: sorted(runs[f"{kind}-{i}"]["mb_per_s"] for i in PASSES)[2]
    hot, warm, cold = median("hot"), median("warm"), runs["cold"]["mb_per_s"]
    print()
    print(f"== payload {payload}: {records} x {record_size} B records per topic")
    print(f"offload: {offload['closed_segments']} closed segments, {offload['closed_bytes'] / 1e6:.1f} MB of batches "
          f"-> {offload['remote_bytes'] / 1e6:.1f} MB of Parquet ({100 * offload['remote_bytes'] / offload['closed_bytes']:.1f}%) "
          f"in {offload['wall_s']:.2f} s wall, {offload['cpu_s']:.2f} s broker CPU "
          f"(hot tier trimmed after {offload['trimmed_s']:.2f} s)")
    print(f"{'measure':<46} {'MB/s':>9} {'records/s':>11} {'broker CPU s':>13} {'MB/CPU-s':>9} {'vs hot':>7}")
    print(f"{'offload (batches -> Parquet, wall)':<46} {offload['mb_per_s']:>9.1f}")
    per_core = offload["mb_per_cpu_s"]
    per_core = "n/a" if per_core is None else f"{per_core:.1f}"
    print(f"{'offload per core (per broker CPU second)':<46} {per_core:>9}")
    for n in names:
        r = runs[n]
        kind, _, i = n.partition("-")
        label = {
            "cold": "tiered consume, first pass (Parquet, cold)",
            "warm": f"tiered consume, warm read cache, pass {i}",
            "hot": f"hot consume (page cache), pass {i}",
        }[kind]
        ratio = f"{r['mb_per_s'] / hot:.2f}" if kind != "hot" else ""
        per_cpu = f"{r['bytes'] / 1e6 / cpu[n]:.0f}" if cpu[n] > 0 else "n/a"
        print(f"{label:<46} {r['mb_per_s']:>9.1f} {r['records_per_s']:>11.0f} {cpu[n]:>13.2f} {per_cpu:>9} {ratio:>7}")
    cold_ratio, warm_ratio = cold / hot, warm / hot
    cpu_median = lambda kind: sorted(cpu[f"{kind}-{i}"] for i in PASSES)[2]
    print(f"broker CPU per pass: cold {cpu['cold']:.2f} s, warm {cpu_median('warm'):.2f} s, "
          f"hot {cpu_median('hot'):.2f} s (medians; clock ticks of 10 ms)")
    print(f"cold {cold:.1f} MB/s, warm {warm:.1f} (median of 5), hot {hot:.1f} (median of 5): "
          f"cold/hot = {cold_ratio:.2f}, warm/hot = {warm_ratio:.2f}; target warm/hot >= 0.5: "
          f"{'met' if warm_ratio >= 0.5 else 'MISSED'}")
    summary[payload] = {"offload": offload, "consume": runs, "broker_cpu_s": cpu,
                        "cold_over_hot": cold_ratio, "warm_over_hot": warm_ratio}
print()
print("MB = 10^6 bytes: of record values for reads (as strata bench counts), of record batches for offload;")
print("MB/CPU-s: MB read per second of broker CPU (the consumer's CPU is not counted).")
print("Checked with strata_tier_remote_read_bytes_total: every tiered pass was served from Parquet, no hot pass.")
if json_out:
    json.dump(summary, open(json_out, "w"), indent=1)
EOF
