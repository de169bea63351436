# Shared by benches/compare.sh and benches/tier-compare.sh (sourced, not run):
#   bench_work_dir NAME  makes the temp dir $work (under $COMPARE_DIR, $TMPDIR or /tmp) and
#                        installs the exit trap that stops the broker $serve_pid (SIGTERM, then
#                        SIGKILL after 5 s) and removes $work;
#   json_field FILE PATH a field of a JSON file, e.g. produce.mb_per_s.

serve_pid=""

bench_cleanup() {
    if [[ -n $serve_pid ]]; then
        kill -TERM "$serve_pid" 2>/dev/null || true
        # Give it the time to flush and close; then make sure.
        for _ in $(seq 50); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}

bench_work_dir() {
    work=$(mktemp -d "${COMPARE_DIR:-${TMPDIR:-/tmp}}/$1.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

json_field() {
    python3 -c '
import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    value = value[key]
print(value)' "$1" "$2"
}
