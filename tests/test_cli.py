"""The `strata` CLI as a user runs it: topic create/list/describe/alter/delete, produce from stdin,
consume --from-beginning --count N; cross-checked with a real Kafka client."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import EXTERNAL_BOOTSTRAP, STRATA_BIN
from helpers import admin, consume, create_topic, produce, unique_name, watermarks

pytestmark = pytest.mark.skipif(bool(EXTERNAL_BOOTSTRAP), reason="the strata CLI is tested with a strata broker")


def strata(bootstrap: str, *args: str, stdin: bytes | None = None, check: bool = True,
           timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("STRATA_BOOTSTRAP", None)  # the flag below decides
    proc = subprocess.run([str(STRATA_BIN), *args, "--bootstrap-server", bootstrap], input=stdin,
                          capture_output=True, timeout=timeout_s, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"strata {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout.decode(errors='replace')[-2000:]}\n"
                             f"stderr: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def test_cli_topic_lifecycle(broker):
    """Goal: `strata topic create --partitions 3 --config ...` creates a topic that `topic list` shows,
    `topic describe` reports with 3 partitions and the config, a Kafka client sees it too, `topic alter`
    changes a config, and `topic delete` removes it."""
    name = unique_name("cli")
    out = strata(broker.bootstrap, "topic", "create", name, "--partitions", "3",
                 "--config", "retention.ms=3600000").stdout.decode()
    assert name in out

    assert name in strata(broker.bootstrap, "topic", "list").stdout.decode().split()
    meta = admin(broker.bootstrap).list_topics(timeout=10)
    assert sorted(meta.topics[name].partitions) == [0, 1, 2]

    described = strata(broker.bootstrap, "topic", "describe", name).stdout.decode()
    assert re.search(rf"Topic: {re.escape(name)}\s+PartitionCount: 3", described), described
    for p in range(3):
        assert re.search(rf"Partition: {p}\s+Leader: \d+", described), described
    assert re.search(r"retention\.ms=3600000", described), described

    strata(broker.bootstrap, "topic", "alter", name, "--config", "retention.ms=7200000")
    assert "retention.ms=7200000" in strata(broker.bootstrap, "topic", "describe", name).stdout.decode()

    strata(broker.bootstrap, "topic", "delete", name)
    assert name not in strata(broker.bootstrap, "topic", "list").stdout.decode().split()


def test_cli_create_existing_topic_fails(broker, topic):
    """Goal: creating a topic that exists fails with a non-zero exit and a message naming the problem."""
    proc = strata(broker.bootstrap, "topic", "create", topic, "--partitions", "1", check=False)
    assert proc.returncode != 0
    assert "exist" in proc.stderr.decode().lower(), proc.stderr


def test_cli_describe_missing_topic_fails(broker):
    """Goal: describing a topic that does not exist fails with a non-zero exit (no empty success)."""
    proc = strata(broker.bootstrap, "topic", "describe", unique_name("missing"), check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip(), "no error message"


def test_cli_produce_consume_round_trip(broker, topic):
    """Goal: lines piped into `strata produce` come back from `strata consume --from-beginning
    --count N` in order; a Kafka client reads the same values at offsets 0..N-1."""
    lines = [f"line {i} \u00e9" for i in range(100)]
    strata(broker.bootstrap, "produce", topic, stdin=("\n".join(lines) + "\n").encode())
    out = strata(broker.bootstrap, "consume", topic, "--from-beginning", "--count", "100").stdout.decode()
    assert out.splitlines() == lines

    got = consume(broker.bootstrap, topic, 100)
    assert [(m.offset, m.value) for m in got] == [(i, line.encode()) for i, line in enumerate(lines)]


def test_cli_keys_and_headers(broker, topic):
    """Goal: `strata produce --key-separator : --header a=b` stores keys and headers; `strata consume
    --print-key --print-headers --print-offset` shows them; a Kafka client sees the same."""
    lines = [f"key{i}:value:{i}" for i in range(20)]
    strata(broker.bootstrap, "produce", topic, "--key-separator", ":", "--header", "origin=cli",
           "--header", "n=1", stdin=("\n".join(lines) + "\n").encode())
    out = strata(broker.bootstrap, "consume", topic, "--from-beginning", "--count", "20", "--print-key",
                 "--print-headers", "--print-offset").stdout.decode().splitlines()
    assert out == [f"0/{i}\torigin=cli,n=1\tkey{i}\tvalue:{i}" for i in range(20)]

    got = consume(broker.bootstrap, topic, 20)
    assert [(m.key, m.value, m.headers) for m in got] == \
        [(f"key{i}".encode(), f"value:{i}".encode(), [("origin", b"cli"), ("n", b"1")]) for i in range(20)]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_cli_produce_compressed_read_by_kafka_client(broker, topic, codec):
    """Goal: `strata produce --compression <codec>` writes batches that librdkafka decompresses."""
    lines = [f"{codec}-{i}" for i in range(500)]
    strata(broker.bootstrap, "produce", topic, "--compression", codec, "--partition", "0",
           stdin=("\n".join(lines) + "\n").encode())
    got = consume(broker.bootstrap, topic, 500)
    assert [m.value for m in got] == [line.encode() for line in lines]


def test_cli_consume_reads_what_kafka_client_wrote(broker):
    """Goal: `strata consume` prints records written by librdkafka (all partitions, null keys as `-`)."""
    name = unique_name("cli-read")
    create_topic(broker.bootstrap, name, partitions=2)
    records = [{"value": f"v{i}".encode(), "partition": i % 2} for i in range(10)]
    produce(broker.bootstrap, name, records, {"compression.type": "lz4"})
    out = strata(broker.bootstrap, "consume", name, "--from-beginning", "--count", "10", "--print-key",
                 "--print-offset").stdout.decode().splitlines()
    assert sorted(out) == sorted(f"{i % 2}/{i // 2}\t-\tv{i}" for i in range(10))
    assert watermarks(broker.bootstrap, name, 0) == (0, 5)
