#!/usr/bin/env bash
# Produce throughput of one librdkafka producer (kcat -P) into Strata: 100-byte records, acks=1,
# linger 5 ms, batch 1 MB (the issue's target setting). kcat reads one record per line from a
# file, so this measures librdkafka + Strata, with kcat's line reading on the client side.
#
# Usage: bash benches/librdkafka-produce.sh [RECORDS] [LIB]
#   RECORDS  records to produce (default 3000000)
#   LIB      system (Debian's librdkafka, default) or bundled (the confluent-kafka wheel's 2.16,
#            via LD_LIBRARY_PATH; needs .venv from scripts/setup-test-env.sh)
# Needs: target/release/strata (cargo build --release -p strata-tools), kcat.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

records=${1:-3000000}
lib=${2:-system}
strata=target/release/strata
[[ -x $strata ]] || { echo "build first: cargo build --release -p strata-tools" >&2; exit 1; }
command -v kcat >/dev/null || { echo "kcat is not installed" >&2; exit 1; }

work=$(mktemp -d /tmp/strata-rdkafka-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    [[ -n ${pid:-} ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# One 100-byte record per line (99 bytes + the newline kcat strips: 99-byte values; the record
# on the wire is ~100 bytes with its framing).
python3 - "$work/records.txt" "$records" <<'EOF'
import sys
path, count = sys.argv[1], int(sys.argv[2])
line = b"x" * 99 + b"\n"
with open(path, "wb") as f:
    chunk = line * 100_000
    for _ in range(count // 100_000):
        f.write(chunk)
    f.write(line * (count % 100_000))
EOF

"$strata" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --metrics-listen none \
    --object-store none >"$work/strata.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
"$strata" topic create rdk --partitions 1 --bootstrap-server "127.0.0.1:$port" >/dev/null

env_lib=()
if [[ $lib == bundled ]]; then
    libdir=$(.venv/bin/python - <<'EOF'
import confluent_kafka, pathlib, os, tempfile
libs = pathlib.Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
so = sorted(libs.glob("librdkafka*.so*"))[0]
d = tempfile.mkdtemp()
os.symlink(so, os.path.join(d, "librdkafka.so.1"))
print(d)
EOF
)
    env_lib=(env "LD_LIBRARY_PATH=$libdir")
fi
version=$("${env_lib[@]}" kcat -V 2>&1 | grep -o 'librdkafka [0-9.]*' | head -1)

start=$(date +%s.%N)
"${env_lib[@]}" kcat -P -b "127.0.0.1:$port" -t rdk -p 0 -l \
    -X linger.ms=5 -X batch.size=1000000 -X acks=1 -X compression.codec=none \
    -X queue.buffering.max.messages=2000000 -X queue.buffering.max.kbytes=2097151 \
    "$work/records.txt"
end=$(date +%s.%N)

high=$("$strata" topic describe rdk --bootstrap-server "127.0.0.1:$port" | grep -o 'LogEndOffset: [0-9]*' | head -1 | cut -d' ' -f2)
python3 - "$start" "$end" "$records" "$version" "${high:-?}" <<'EOF'
import sys
start, end, n, version, high = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
secs = end - start
print(f"kcat -P ({version}), 100 B records, acks=1, linger.ms=5, batch.size=1000000:")
print(f"  {n} records in {secs:.2f} s = {n / secs:,.0f} records/s ({n * 100 / secs / 1e6:.1f} MB/s); partition end offset {high}")
EOF
