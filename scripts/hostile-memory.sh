#!/usr/bin/env bash
# Peak broker memory under each hostile-client attack (tests/test_hostile.py), for one binary or
# two side by side:
#
#   bash scripts/hostile-memory.sh [BEFORE_BIN] [AFTER_BIN]
#
# AFTER_BIN defaults to target/release/strata; with BEFORE_BIN, the suite runs against both and the
# table shows both figures. Each test records the broker's peak RSS (VmHWM) right after its attack
# and before its assertions, so an older binary that fails the assertions (or dies) is still
# measured: a dead broker shows as "died". Needs scripts/setup-test-env.sh to have run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run() { # run BIN REPORT_FILE
    rm -f "$2"
    STRATA_BIN=$1 STRATA_HOSTILE_REPORT=$2 .venv/bin/python -m pytest tests/test_hostile.py \
        -q --timeout=600 -p no:cacheprovider >"$2.log" 2>&1
    tail -n 1 "$2.log"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
after_bin=${2:-target/release/strata}
if [[ $# -ge 1 ]]; then
    echo "before: $1: $(run "$1" "$tmp/before.jsonl")"
fi
echo "after:  $after_bin: $(run "$after_bin" "$tmp/after.jsonl")"

.venv/bin/python - "$tmp/before.jsonl" "$tmp/after.jsonl" <<'EOF'
import json, os, sys

def load(path):
    if not os.path.exists(path):
        return {}
    rows = {}
    for line in open(path):
        row = json.loads(line)
        rows[row["attack"]] = row
    return rows

def cell(row):
    if row is None:
        return "-"
    if not row["alive"]:
        return "died"
    return f"{row['peak_rss_bytes'] / 2**20:.0f} MiB"

before, after = load(sys.argv[1]), load(sys.argv[2])
attacks = list(dict.fromkeys(list(before) + list(after)))
print(f"\n| attack | peak RSS before | peak RSS after |\n|---|---|---|")
for attack in attacks:
    print(f"| {attack} | {cell(before.get(attack))} | {cell(after.get(attack))} |")
EOF
