#!/usr/bin/env bash
# Puts Strata's throughput next to the machine's raw bandwidth, measured side by side:
#   ROUNDS times (default 3), one right after the other:
#     1. sequential write with fdatasync: dd 1 MiB blocks, conv=fdatasync (one sync at the end);
#     2. `strata bench produce` of the same MB with RECORD_SIZE-byte records and acks=all into
#        `strata serve` (fsync policy ack: acks=all waits for the fdatasync of its group commit);
#   and prints each round's ratio and the median ratio. The virtual disk of a shared machine
#   changes speed from minute to minute, so each Strata figure is paired with the dd run just
#   before it, and the median of the pairs is the result.
#   Then once: dd oflag=dsync (one fdatasync per 1 MiB write, closer to a group commit per
#   produce request); sequential read from the page cache (dd of a file read twice, the second
#   timed) next to `strata bench consume` of the last round's topic (hot tier, page cache).
# Bounded (about 40 s per step at most; a few s of settling between steps); removes its temp dir and stops its broker on exit.
#
# Usage: benches/compare.sh            (after: cargo build --release -p strata-tools)
# Environment:
#   STRATA_BIN     the strata binary (default: target/release/strata, or $CARGO_TARGET_DIR's)
#   COMPARE_DIR    where the temp dir goes; must be on the disk to measure (default: $TMPDIR or /tmp)
#   COMPARE_MB     MB written by each dd run and by each round's producers (default 512: on this
#                  VM's disk dd conv=fdatasync of 512 MB reaches 1.6-1.8 GB/s, of 1 GB often only
#                  0.4-1 GB/s, so 512 MB gives dd its best figure and Strata the strictest anchor)
#   ROUNDS         dd + Strata pairs (default 3)
#   RECORD_SIZE    bytes of each record's value (default 1024)
#   PRODUCERS      concurrent producers (default 4), BATCH_SIZE records per request (default
#                  1000, ~1 MiB: Kafka's message.max.bytes), MAX_IN_FLIGHT requests each producer
#                  pipelines on its connection (default 8; Kafka's Java producer allows 5,
#                  librdkafka 1,000,000)
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
strata=${STRATA_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/strata}
size_mb=${COMPARE_MB:-512}
rounds=${ROUNDS:-3}
record_size=${RECORD_SIZE:-1024}
producers=${PRODUCERS:-4}
batch_size=${BATCH_SIZE:-1000}
max_in_flight=${MAX_IN_FLIGHT:-8}
step_timeout_s=40

if [[ ! -x $strata ]]; then
    echo "compare.sh: $strata not found; build it with: cargo build --release -p strata-tools" >&2
    exit 2
fi
for tool in dd python3 timeout; do
    command -v "$tool" >/dev/null || { echo "compare.sh: needs $tool" >&2; exit 2; }
done

# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
bench_work_dir strata-compare

# dd_rate ARGS...: runs dd, prints bytes/s computed from its closing line
# ("N bytes (...) copied, S s, ...").
dd_rate() {
    local out
    out=$(timeout "$step_timeout_s" dd "$@" 2>&1 >/dev/null) || { echo "dd failed: $out" >&2; return 1; }
    awk '/bytes/ && /copied/ {
            bytes = $1
            for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) secs = $(i - 1)
            gsub(",", "", secs)
            if (secs > 0) printf "%.0f\n", bytes / secs
         }' <<<"$out"
}

mbps() { python3 -c "import sys; print(f'{float(sys.argv[1]) / 1e6:.1f}')" "$1"; }
percent() { python3 -c "import sys; a, b = map(float, sys.argv[1:]); print(f'{100 * a / b:.1f}%' if b > 0 else 'n/a')" "$1" "$2"; }

echo "strata compare: $size_mb MB x $rounds rounds, $record_size-byte records, $producers producers x $max_in_flight in flight x $batch_size records/request, temp dir $work ($(df -h --output=source,fstype "$work" | tail -1 | tr -s ' '))"
echo "note: a shared machine; other work on it lowers every figure."

"$strata" serve --listen 127.0.0.1:0 --data-dir "$work/data" --metrics-listen none \
    --object-store none >"$work/serve.log" 2>&1 &
serve_pid=$!
bootstrap=""
for _ in $(seq 200); do
    bootstrap=$(sed -n 's/.*strata listening on \([0-9.:]*\).*/\1/p' "$work/serve.log" 2>/dev/null | head -1) || true
    [[ -n $bootstrap ]] && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $bootstrap ]]; then
    echo "compare.sh: strata serve did not start (log below; was $work removed meanwhile?):" >&2
    cat "$work/serve.log" >&2 || true
    exit 1
fi

file=$work/dd.bin
records=$((size_mb * 1000000 / record_size))
ratios=()
# settle: lets the previous step's writeback and discards (of a removed file, on a file system
# mounted with `discard`) finish, so that they do not slow down the next measurement.
settle() { sync; sleep 2; }
for round in $(seq "$rounds"); do
    settle
    write_fdatasync=$(dd_rate if=/dev/zero of="$file" bs=1M count="$size_mb" conv=fdatasync)
    rm -f "$file"
    settle
    timeout "$step_timeout_s" "$strata" bench produce --bootstrap-server "$bootstrap" \
        --topic "compare-$round" --partitions "$producers" --producers "$producers" \
        --max-in-flight "$max_in_flight" --record-size "$record_size" --num-records "$records" \
        --duration-secs 30 --batch-size "$batch_size" --acks all \
        --json --quiet >"$work/produce.json"
    produce_bps=$(python3 -c "import sys; print(float(sys.argv[1]) * 1e6)" "$(json_field "$work/produce.json" produce.mb_per_s)")
    ratio=$(python3 -c "import sys; a, b = map(float, sys.argv[1:]); print(f'{100 * a / b:.1f}' if b > 0 else 'nan')" "$produce_bps" "$write_fdatasync")
    ratios+=("$ratio")
    printf 'round %s: dd bs=1M conv=fdatasync %8s MB/s | strata produce acks=all %8s MB/s = %5s%% (%s records/s, p99 %s ms)\n' \
        "$round" "$(mbps "$write_fdatasync")" "$(mbps "$produce_bps")" "$ratio" \
        "$(json_field "$work/produce.json" produce.records_per_s | cut -d. -f1)" \
        "$(json_field "$work/produce.json" produce.latency_ms.p99)"
done
median=$(python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.1f}')" "${ratios[@]}")
echo "strata produce, acks=all, $record_size B records: median $median% of the paired dd conv=fdatasync (rounds: ${ratios[*]})"

settle
write_dsync=$(dd_rate if=/dev/zero of="$file" bs=1M count="$size_mb" oflag=dsync)
dd_rate if="$file" of=/dev/null bs=1M >/dev/null # warm the page cache
read_cache=$(dd_rate if="$file" of=/dev/null bs=1M)
rm -f "$file"
printf '%-66s %10s MB/s (last round: %s of it)\n' "disk: sequential write, dd bs=1M oflag=dsync (sync per 1 MiB)" \
    "$(mbps "$write_dsync")" "$(percent "$produce_bps" "$write_dsync")"

timeout "$step_timeout_s" "$strata" bench consume --bootstrap-server "$bootstrap" --topic "compare-$rounds" \
    --consumers "$producers" --duration-secs 30 --json --quiet >"$work/consume.json"
consume_bps=$(python3 -c "import sys; print(float(sys.argv[1]) * 1e6)" "$(json_field "$work/consume.json" consume.mb_per_s)")
printf '%-66s %10s MB/s\n' "page cache: sequential read, dd bs=1M" "$(mbps "$read_cache")"
printf '%-66s %10s MB/s  %s of dd (%s records/s)\n' \
    "strata: bench consume, $record_size B records" "$(mbps "$consume_bps")" \
    "$(percent "$consume_bps" "$read_cache")" \
    "$(json_field "$work/consume.json" consume.records_per_s | cut -d. -f1)"
