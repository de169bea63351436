#!/usr/bin/env bash
# Installs what the integration tests need, on a fresh Debian machine as root (idempotent, quiet):
#   - Debian packages: kcat and librdkafka-dev (librdkafka 2.0.x), python3-venv if venv is missing;
#   - a Python virtualenv at .venv with the pinned packages of tests/requirements.txt;
#   - Node.js and npm (Debian's, if missing) and kafkajs, pinned by tests/kafkajs/package-lock.json
#     (npm ci into tests/kafkajs/node_modules);
#   - s3s-fs, the S3-compatible server of the tiering tests, into ~/.cargo/bin (cargo install, about
#     5 minutes, once: skipped when present).
# Usage: bash scripts/setup-test-env.sh   (from anywhere; works on the repository it lives in)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DEBIAN_FRONTEND=noninteractive

apt_packages=()
command -v kcat >/dev/null 2>&1 || apt_packages+=(kcat)
dpkg -s librdkafka-dev >/dev/null 2>&1 || apt_packages+=(librdkafka-dev)
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_packages+=(python3-venv)
fi
command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_packages+=(npm)
if ((${#apt_packages[@]})); then
    echo "setup: apt-get install ${apt_packages[*]}"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi

# Reinstall only when the requirements changed (the stamp holds their checksum).
stamp=.venv/.strata-requirements.sha256
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "setup: pip install -r tests/requirements.txt"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
    echo "$want" >"$stamp"
fi

# kafkajs for tests/test_kafkajs.py: npm ci only when the lock file changed (the stamp holds its
# checksum) or node_modules is gone.
kafkajs_stamp=tests/kafkajs/node_modules/.strata-lock.sha256
kafkajs_want=$(sha256sum tests/kafkajs/package-lock.json | cut -d' ' -f1)
if [[ ! -f $kafkajs_stamp || $(cat "$kafkajs_stamp") != "$kafkajs_want" ]]; then
    echo "setup: npm ci in tests/kafkajs"
    (cd tests/kafkajs && timeout 300 env npm_config_update_notifier=false npm_config_fund=false \
        npm ci --no-audit --no-fund --loglevel=error </dev/null >/dev/null)
    echo "$kafkajs_want" >"$kafkajs_stamp"
fi

# s3s-fs for tests/test_tiering.py (0.15+ need a newer rustc than the project's).
s3s_fs=$HOME/.cargo/bin/s3s-fs
if [[ ! -x $s3s_fs ]] && ! command -v s3s-fs >/dev/null 2>&1; then
    echo "setup: cargo install s3s-fs@0.14.1 (about 5 minutes)"
    cargo install s3s-fs@0.14.1 --features binary --locked --quiet --root "$HOME/.cargo" </dev/null
fi

echo "setup: kcat with $(kcat -V 2>&1 | grep -o 'librdkafka [0-9.]*' | head -1); $(.venv/bin/python -c 'import confluent_kafka, kafka; print("confluent-kafka %s (librdkafka %s), kafka-python %s" % (confluent_kafka.version(), confluent_kafka.libversion()[0], kafka.__version__))'); $(.venv/bin/python -c 'import duckdb, pyarrow; print("duckdb %s, pyarrow %s" % (duckdb.__version__, pyarrow.__version__))'); s3s-fs at $( (command -v s3s-fs || echo "$s3s_fs") | head -1); node $(node --version), kafkajs $(node -p 'require("./tests/kafkajs/node_modules/kafkajs/package.json").version')"
