"""Compacted topics (cleanup.policy=compact) with real clients.

Strata compacts closed local segments of topics that are not tiered, and the remote tier of topics
that are (remote.storage.enable=true). Compaction keeps each key's latest record at its original
offset, drops tombstones older than delete.retention.ms, and leaves batches whose records all went
as empty batches (as Kafka's cleaner does), which consumers must step over. Keyless records are
refused with INVALID_RECORD, as Kafka does.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import KafkaError, Producer
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from conftest import EXTERNAL_BOOTSTRAP
from helpers import consume, create_topic, produce, unique_name, watermarks

pytestmark = pytest.mark.skipif(EXTERNAL_BOOTSTRAP is not None,
                                reason="needs brokers of its own (fast retention checks)")

KEYS = 12
VERSIONS = 40
TOMBSTONE_KEY = "key-5"
FILLERS = 150
COMPACTION_TIMEOUT_S = 60.0


def broker_args(tmp_path: Path, *extra: str) -> list[str]:
    config = tmp_path / f"strata-{unique_name('cfg')}.toml"
    config.write_text("retention_check_interval_ms = 100\nlog_cleaner_backoff_ms = 100\n")
    return ["--segment-bytes-min", "1024", "--config", str(config), "--tier-interval-ms", "100", *extra]


def write_versions(bootstrap: str, topic: str) -> tuple[dict[str, tuple[int, bytes | None]], int]:
    """KEYS keys written VERSIONS times (the last version of TOMBSTONE_KEY is a tombstone), then
    FILLERS records of distinct keys so that all of it lands in closed segments. Returns each
    key's latest (offset, value) and the end offset."""
    records = []
    for version in range(VERSIONS):
        for k in range(KEYS):
            key = f"key-{k}"
            tombstone = key == TOMBSTONE_KEY and version == VERSIONS - 1
            records.append({"key": key.encode(), "value": None if tombstone else f"v{version}".encode()})
    for i in range(FILLERS):
        records.append({"key": f"filler-{i}".encode(), "value": b"f" * 80})
    delivered = produce(bootstrap, topic, records, config={"linger.ms": 0, "batch.num.messages": 7})
    latest: dict[str, tuple[int, bytes | None]] = {}
    for record, report in zip(records, delivered):
        assert report.error is None, report
        key = record["key"].decode()
        if key.startswith("key-"):
            latest[key] = (report.offset, record["value"])
    end = max(r.offset for r in delivered) + 1
    return latest, end


def keyed(consumed) -> list[tuple[str, int, bytes | None]]:
    return [(c.key.decode(), c.offset, c.value) for c in consumed if c.key and c.key.startswith(b"key-")]


def wait_compacted(bootstrap: str, topic: str, end: int, live_keys: int) -> list:
    """Reads the whole partition with confluent-kafka until each key appears once."""
    deadline = time.monotonic() + COMPACTION_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        count = read_until(bootstrap, topic, end)
        records = keyed(count)
        if len(records) == live_keys:
            return count
        last = len(records)
        time.sleep(0.5)
    raise AssertionError(f"{topic} was not compacted within {COMPACTION_TIMEOUT_S}s ({last} keyed records)")


def read_until(bootstrap: str, topic: str, end: int) -> list:
    """Every record of partition 0 below `end`, with confluent-kafka (steps over empty batches)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("cmp"),
                         "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise AssertionError(f"consumer error: {msg.error()}")
            out.append(msg)
            if msg.offset() >= end - 1:
                break
        else:
            raise AssertionError(f"did not reach the end of {topic} ({len(out)} records read)")
    finally:
        consumer.close()

    class Rec:
        def __init__(self, m):
            self.key, self.value, self.offset = m.key(), m.value(), m.offset()

    return [Rec(m) for m in out]


def expected_live(latest: dict[str, tuple[int, bytes | None]], tombstone_kept: bool):
    return sorted(
        (key, offset, value) for key, (offset, value) in latest.items()
        if value is not None or tombstone_kept
    )


def test_compacted_topic_keeps_latest_per_key_for_real_clients(make_broker, tmp_path):
    broker = make_broker(extra_args=broker_args(tmp_path))
    topic = unique_name("compacted")
    create_topic(broker.bootstrap, topic, config={
        "cleanup.policy": "compact", "segment.bytes": "4096", "delete.retention.ms": "0"})
    latest, end = write_versions(broker.bootstrap, topic)
    consumed = wait_compacted(broker.bootstrap, topic, end, KEYS - 1)
    assert sorted(keyed(consumed)) == expected_live(latest, tombstone_kept=False)
    offsets = [c.offset for c in consumed]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert sum(1 for c in consumed if c.key.startswith(b"filler-")) == FILLERS
    # The log start does not move: compaction leaves gaps, not a new start.
    assert watermarks(broker.bootstrap, topic) == (0, end)

    # kafka-python reads the compacted log from the beginning too (stepping over empty batches).
    kp = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                       consumer_timeout_ms=15000)
    tp = KpTopicPartition(topic, 0)
    kp.assign([tp])
    kp.seek(tp, 0)
    seen = []
    try:
        for msg in kp:
            seen.append(msg)
            if msg.offset >= end - 1:
                break
    finally:
        kp.close()
    assert [(m.offset, m.key, m.value) for m in seen] == [(c.offset, c.key, c.value) for c in consumed]


def test_keyless_record_on_compacted_topic_is_refused(broker):
    topic = unique_name("compacted-keyless")
    create_topic(broker.bootstrap, topic, config={"cleanup.policy": "compact"})
    errors = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "retries": 0})
    producer.produce(topic, value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(15)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]
    # Keyed records are accepted.
    delivered = produce(broker.bootstrap, topic, [{"key": b"k", "value": b"v"}])
    assert delivered[0].error is None
    assert consume(broker.bootstrap, topic, 1)[0].value == b"v"


def test_tiered_compacted_topic_is_compacted_in_the_parquet_files(make_broker, tmp_path):
    remote = tmp_path / "remote"
    broker = make_broker(extra_args=broker_args(tmp_path, "--object-store", f"file://{remote}"))
    topic = unique_name("compacted-tiered")
    create_topic(broker.bootstrap, topic, config={
        "cleanup.policy": "compact", "remote.storage.enable": "true", "segment.bytes": "4096",
        "local.retention.bytes": "1", "delete.retention.ms": "86400000"})
    latest, end = write_versions(broker.bootstrap, topic)
    # The tombstone is younger than delete.retention.ms: every key keeps one record.
    consumed = wait_compacted(broker.bootstrap, topic, end, KEYS)
    assert sorted(keyed(consumed)) == expected_live(latest, tombstone_kept=True)

    # The Parquet files, read by DuckDB: one row per key below the remote end, at the offsets
    # the broker serves.
    pattern = str(remote / topic / "*" / "*.parquet")
    deadline = time.monotonic() + COMPACTION_TIMEOUT_S
    rows = None
    while time.monotonic() < deadline:
        rows = duckdb.sql(
            f"SELECT decode(key) AS k, count(*) AS n, max(kafka_offset) AS o "
            f"FROM read_parquet('{pattern}', hive_partitioning=true) "
            f"WHERE starts_with(decode(key), 'key-') GROUP BY k ORDER BY k").fetchall()
        if rows and all(n == 1 for _, n, _ in rows):
            break
        time.sleep(0.5)
    assert rows and all(n == 1 for _, n, _ in rows), rows
    broker_offsets = {c.key.decode(): c.offset for c in consumed if c.key.startswith(b"key-")}
    assert {k: o for k, _, o in rows} == {k: broker_offsets[k] for k, _, _ in rows}
