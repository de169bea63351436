#!/usr/bin/env bash
# Produce throughput of one librdkafka producer (kcat -P) into Strata: by default 100-byte
# records, acks=1, linger 5 ms, batch 1 MB (the issue's target setting). kcat reads one record per
# line from a file, so this measures librdkafka + Strata, with kcat's line reading on the client
# side. librdkafka pipelines its produce requests on the connection (max.in.flight), which
# Strata's broker exploits with acks=all: the next requests append while one waits for its fsync.
#
# Usage: bash benches/librdkafka-produce.sh [RECORDS] [LIB]
#   RECORDS  records to produce (default 3000000)
#   LIB      system (Debian's librdkafka, default) or bundled (the confluent-kafka wheel's 2.16,
#            via LD_LIBRARY_PATH; needs .venv from scripts/setup-test-env.sh)
# Environment: ACKS (1, the default, or all), RECORD_BYTES (record value size, default 100).
# Needs: target/release/strata (cargo build --release -p strata-tools), kcat.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

records=${1:-3000000}
lib=${2:-system}
acks=${ACKS:-1}
record_bytes=${RECORD_BYTES:-100}
[[ $acks == 1 || $acks == all ]] || { echo "ACKS must be 1 or all" >&2; exit 2; }
[[ $record_bytes =~ ^[0-9]+$ ]] && ((record_bytes >= 2)) || { echo "RECORD_BYTES must be a number >= 2" >&2; exit 2; }
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

# One record per line: RECORD_BYTES - 1 bytes + the newline kcat strips (99-byte values by
# default; the record on the wire is ~100 bytes with its framing).
python3 - "$work/records.txt" "$records" "$record_bytes" <<'EOF'
import sys
path, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line = b"x" * (size - 1) + b"\n"
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
    -X linger.ms=5 -X batch.size=1000000 -X acks="$acks" -X compression.codec=none \
    -X queue.buffering.max.messages=2000000 -X queue.buffering.max.kbytes=2097151 \
    "$work/records.txt"
end=$(date +%s.%N)

high=$("$strata" topic describe rdk --bootstrap-server "127.0.0.1:$port" | grep -o 'LogEndOffset: [0-9]*' | head -1 | cut -d' ' -f2)
python3 - "$start" "$end" "$records" "$version" "${high:-?}" "$acks" "$record_bytes" <<'EOF'
import sys
start, end, n, version, high = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
acks, size = sys.argv[6], int(sys.argv[7])
secs = end - start
print(f"kcat -P ({version}), {size} B records, acks={acks}, linger.ms=5, batch.size=1000000:")
print(f"  {n} records in {secs:.2f} s = {n / secs:,.0f} records/s ({n * size / secs / 1e6:.1f} MB/s); partition end offset {high}")
EOF
