"""Tiered storage end to end: closed segments of `remote.storage.enable=true` topics are offloaded
as Parquet files to an object store (a folder by default, an S3 server on request), trimmed from
the local disk, and still served to real Kafka clients from offset 0; DuckDB and pyarrow read the
files directly. Contract: docs/tiering.md.

Each test runs brokers of its own (`make_broker`) with a fast tiering cadence, and `s3s-fs` as the
S3 server where S3 is involved. `strata tier status --json` is the observation point.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from conftest import EXTERNAL_BOOTSTRAP, STRATA_BIN, free_port
from helpers import admin, consume, create_topic, produce, unique_name, watermarks

pytestmark = pytest.mark.skipif(bool(EXTERNAL_BOOTSTRAP), reason="tiering is tested on strata brokers")

TIER_INTERVAL_MS = 200
SEGMENT_BYTES = 16384
OFFLOAD_TIMEOUT_S = 90.0
BUCKET = "strata-test"
S3_PREFIX = "archive"

# Keys of one partition's entry in `GET /v1/tier/status` (docs/tiering.md).
STATUS_KEYS = {
    "topic", "partition", "remote_storage_enable", "log_start_offset", "local_start_offset",
    "log_end_offset", "high_watermark", "remote_start_offset", "remote_end_offset", "remote_files",
    "remote_bytes", "local_bytes", "pending_segments", "pending_bytes", "offload_lag_ms", "last_error",
}

# Columns of the offloaded Parquet files (docs/tiering.md).
PARQUET_COLUMNS = [
    "kafka_partition", "kafka_offset", "kafka_timestamp", "key", "value", "headers", "producer_id",
    "producer_epoch", "base_sequence", "timestamp_type", "leader_epoch", "batch_base_offset",
    "batch_last_offset", "compression",
]

FILE_NAME = re.compile(r"^(\d{20})-(\d{20})\.parquet$")


def tiered_topic_config(**overrides: str) -> dict[str, str]:
    """Small segments, tiering on, closed segments dropped locally once offloaded, no retention."""
    config = {
        "remote.storage.enable": "true",
        "segment.bytes": str(SEGMENT_BYTES),
        "local.retention.bytes": "1",
        "retention.ms": "-1",
    }
    config.update(overrides)
    return config


def broker_args(tmp_path: Path, *extra: str) -> list[str]:
    """`strata serve` flags of these tests: fast tiering and fast local retention checks."""
    config = tmp_path / f"strata-{unique_name('cfg')}.toml"
    config.write_text("retention_check_interval_ms = 200\n")
    return ["--segment-bytes-min", "1024", "--config", str(config), "--tier-interval-ms", str(TIER_INTERVAL_MS), *extra]


# ------------------------------------------------------------------------------- tier status

def tier_status_cli(admin_addr: str, *args: str, check: bool = True,
                    timeout_s: float = 15.0) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(STRATA_BIN), "tier", "status", "--admin", admin_addr, *args],
                          capture_output=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(f"strata tier status {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout.decode(errors='replace')[-2000:]}\n"
                             f"stderr: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def tier_status(broker, topic: str, partition: int = 0) -> dict:
    """The partition's entry of `strata tier status --json --topic TOPIC`, checked against the
    contract's keys and the no-gap invariant between the tiers."""
    out = tier_status_cli(broker.admin, "--topic", topic, "--json").stdout
    document = json.loads(out)
    entries = [p for p in document["partitions"] if p["topic"] == topic and p["partition"] == partition]
    assert len(entries) == 1, f"expected one entry for {topic}[{partition}]: {document}"
    entry = entries[0]
    missing = STATUS_KEYS - set(entry)
    assert not missing, f"tier status lacks {sorted(missing)}: {entry}"
    check_no_gap(entry)
    return entry


def check_no_gap(s: dict) -> None:
    """Every offset in [log_start, log_end) is held by one tier or the other."""
    assert s["log_start_offset"] <= s["local_start_offset"] <= s["log_end_offset"], s
    assert s["high_watermark"] <= s["log_end_offset"], s
    if s["remote_end_offset"] is None:
        assert s["remote_start_offset"] is None, s
        assert s["local_start_offset"] == s["log_start_offset"], f"offsets lost between the tiers: {s}"
    else:
        assert s["remote_start_offset"] == s["log_start_offset"], s
        assert s["remote_start_offset"] <= s["remote_end_offset"], s
        assert s["remote_end_offset"] >= s["local_start_offset"], f"offsets lost between the tiers: {s}"


def wait_status(broker, topic: str, predicate, what: str, timeout_s: float = OFFLOAD_TIMEOUT_S) -> dict:
    """Polls the tier status until `predicate(status)`; fails with the last status otherwise."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = tier_status(broker, topic)
        if predicate(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"tier status of {topic} never showed {what} within {timeout_s}s; last: {last}")


def wait_settled(broker, topic: str, predicate, what: str, timeout_s: float = OFFLOAD_TIMEOUT_S) -> dict:
    """Like wait_status, but the status must still hold, unchanged, a few tier runs later: the
    pending counts are what the last tier run saw, so a status taken right after producing may
    predate segments that closed since."""
    deadline = time.monotonic() + timeout_s
    while True:
        first = wait_status(broker, topic, predicate, what, max(1.0, deadline - time.monotonic()))
        time.sleep(3 * TIER_INTERVAL_MS / 1000)
        second = tier_status(broker, topic)
        fields = ("log_start_offset", "local_start_offset", "log_end_offset", "remote_start_offset",
                  "remote_end_offset")
        if predicate(second) and all(first[f] == second[f] for f in fields):
            return second
        if time.monotonic() >= deadline:
            raise AssertionError(f"tier status of {topic} never settled on {what}: {first} then {second}")


def offloaded_and_trimmed(s: dict) -> bool:
    """All closed segments are remote and the hot tier was trimmed (local.retention.bytes=1 leaves
    only the active segment, which starts where the remote tier ends)."""
    return (s["pending_segments"] == 0 and s["remote_end_offset"] is not None
            and s["local_start_offset"] > 0 and s["remote_end_offset"] == s["local_start_offset"])


# ------------------------------------------------------------------------------- records

def make_records(count: int, start_ts_ms: int, tag: str = "r") -> list[dict]:
    """Produce() arguments covering null/empty/binary keys and values, no/binary/duplicate/null
    headers, and explicit CreateTime timestamps (start_ts_ms + i)."""
    records = []
    for i in range(count):
        if i % 17 == 0:
            key = None
        elif i % 31 == 0:
            key = b""
        elif i % 13 == 0:
            key = bytes([i % 256, 0, 255, (i * 7) % 256])
        else:
            key = f"{tag}-key-{i % 50}".encode()
        if i % 19 == 0:
            value = None
        elif i % 23 == 0:
            value = b""
        else:
            value = (f"{tag}-value-{i}-".encode() + bytes((i + j) % 256 for j in range(i % 97)))
        if i % 5 == 0:
            headers = []
        elif i % 5 == 1:
            headers = [("bin", bytes([0, 1, 2, 255, i % 256]))]
        elif i % 5 == 2:
            headers = [("dup", b"first"), ("dup", b"second"), ("other", b"")]
        elif i % 5 == 3:
            headers = [("null-value", None), ("k", f"v{i}".encode())]
        else:
            headers = [("utf8-\u00e9", "caf\u00e9".encode())]
        records.append({"key": key, "value": value, "headers": headers, "timestamp": start_ts_ms + i})
    return records


def norm_headers(headers) -> list[tuple[str, bytes | None]]:
    """Headers as a list of (str, bytes|None): confluent-kafka gives None for no headers."""
    return [(k, None if v is None else bytes(v)) for k, v in (headers or [])]


def produce_all(bootstrap: str, topic: str, records: list[dict], config: dict | None = None) -> dict[int, dict]:
    """Produces `records` in batches of at most 50 (so that 16 KiB segments roll often); returns
    them by the offset each got (dense, in order)."""
    conf = {"batch.num.messages": 50}
    conf.update(config or {})
    reports = produce(bootstrap, topic, records, config=conf)
    errors = [r for r in reports if r.error is not None]
    assert not errors, f"{len(errors)} produce errors, first: {errors[0]}"
    by_offset = {r.offset: records[r.index] for r in reports}
    offsets = sorted(by_offset)
    assert offsets == list(range(offsets[0], offsets[0] + len(records))), "offsets are not dense"
    assert [by_offset[o] for o in offsets] == records, "records got offsets out of order"
    return by_offset


def assert_consumed(consumed, expected: dict[int, dict], first_offset: int) -> None:
    """`consumed` (helpers.Consumed) holds exactly the expected records from `first_offset` on, in
    order, with keys, values, headers and timestamps intact."""
    want = [o for o in sorted(expected) if o >= first_offset]
    got_offsets = [m.offset for m in consumed]
    assert got_offsets == want, (
        f"offsets differ: got {len(got_offsets)} from {got_offsets[:3]} to {got_offsets[-3:]}, "
        f"want {len(want)} from {want[:3]} to {want[-3:]}")
    for m in consumed:
        record = expected[m.offset]
        assert m.key == record["key"], f"offset {m.offset}: key {m.key!r} != {record['key']!r}"
        assert m.value == record["value"], f"offset {m.offset}: value {m.value!r} != {record['value']!r}"
        assert norm_headers(m.headers) == norm_headers(record["headers"]), \
            f"offset {m.offset}: headers {m.headers!r} != {record['headers']!r}"
        assert m.timestamp == record["timestamp"], f"offset {m.offset}: timestamp {m.timestamp} != {record['timestamp']}"


# ------------------------------------------------------------------------------- Parquet files

def parquet_files(remote_root: Path, topic: str, partition: int = 0) -> list[Path]:
    folder = remote_root / topic / f"partition={partition}"
    return sorted(p for p in folder.glob("*.parquet"))


def check_remote_files(remote_root: Path, topic: str, status: dict, expected: dict[int, dict]) -> None:
    """The partition's folder under `remote_root` holds a manifest and Parquet files named by their
    offsets, with the contract's schema, covering exactly [remote_start, remote_end) with the
    produced records; DuckDB and pyarrow both read them."""
    start, end = status["remote_start_offset"], status["remote_end_offset"]
    assert start is not None and end is not None and end > start, status
    folder = remote_root / topic / "partition=0"
    assert (folder / "manifest.json").is_file(), f"no manifest in {folder}: {sorted(os.listdir(folder))}"
    json.loads((folder / "manifest.json").read_text())  # the manifest is JSON
    # Removals write the manifest first and delete the objects after: give the deletes a moment.
    deadline = time.monotonic() + 15
    files = parquet_files(remote_root, topic)
    while len(files) != status["remote_files"] and time.monotonic() < deadline:
        time.sleep(0.2)
        files = parquet_files(remote_root, topic)
    assert len(files) == status["remote_files"], ([f.name for f in files], status)
    assert sum(f.stat().st_size for f in files) == status["remote_bytes"], status

    # pyarrow: schema and per-file contents.
    next_offset = start
    for path in files:
        match = FILE_NAME.match(path.name)
        assert match, f"bad file name {path.name}"
        first, last = int(match.group(1)), int(match.group(2))
        assert first == next_offset, f"{path.name}: expected to start at {next_offset}"
        next_offset = last + 1
        schema = pq.read_schema(path)
        check_schema(schema, path)
        table = pq.read_table(path)
        rows = table.to_pylist()
        timestamps_ms = table.column("kafka_timestamp").cast(pa.int64()).to_pylist()
        assert [r["kafka_offset"] for r in rows] == list(range(first, last + 1)), path.name
        for r, ts_ms in zip(rows, timestamps_ms):
            record = expected[r["kafka_offset"]]
            assert r["kafka_partition"] == 0
            assert r["key"] == record["key"], (r["kafka_offset"], r["key"], record["key"])
            assert r["value"] == record["value"], r["kafka_offset"]
            got_headers = [(h["key"], h["value"]) for h in (r["headers"] or [])]
            assert got_headers == norm_headers(record["headers"]), (r["kafka_offset"], r["headers"])
            assert ts_ms == record["timestamp"], (r["kafka_offset"], r["kafka_timestamp"])
            assert r["batch_base_offset"] <= r["kafka_offset"] <= r["batch_last_offset"], r
    assert next_offset == end, f"files end at {next_offset}, status says {end}"

    # DuckDB over the whole topic, with the hive-style partition folders.
    glob = str(remote_root / topic / "*" / "*.parquet")
    con = duckdb.connect()
    count, lo, hi, partitions = con.execute(
        "SELECT count(*), min(kafka_offset), max(kafka_offset), list(DISTINCT partition) "
        "FROM read_parquet(?, hive_partitioning=true)", [glob]).fetchone()
    assert (count, lo, hi) == (end - start, start, end - 1), (count, lo, hi, status)
    assert [int(p) for p in partitions] == [0]
    rows = con.execute(
        "SELECT kafka_offset, key, value FROM read_parquet(?, hive_partitioning=true) ORDER BY kafka_offset",
        [glob]).fetchall()
    want = [(o, expected[o]["key"], expected[o]["value"]) for o in range(start, end)]
    got = [(o, None if k is None else bytes(k), None if v is None else bytes(v)) for o, k, v in rows]
    assert got == want


def check_schema(schema: pa.Schema, path: Path) -> None:
    names = schema.names
    missing = [c for c in PARQUET_COLUMNS if c not in names]
    assert not missing, f"{path.name} lacks columns {missing}: {schema}"
    types = {f.name: f.type for f in schema}
    assert types["kafka_partition"] == pa.int32(), types["kafka_partition"]
    assert types["kafka_offset"] == pa.int64(), types["kafka_offset"]
    assert types["kafka_timestamp"] == pa.timestamp("ms", tz="UTC"), types["kafka_timestamp"]
    assert types["key"] == pa.binary(), types["key"]
    assert types["value"] == pa.binary(), types["value"]
    headers = types["headers"]
    assert pa.types.is_list(headers), headers
    item = headers.value_type
    assert pa.types.is_struct(item), headers
    assert [item.field(i).name for i in range(item.num_fields)] == ["key", "value"], headers
    assert item.field("key").type == pa.string(), headers
    assert item.field("value").type == pa.binary(), headers


# ------------------------------------------------------------------------------- consumers

def consume_from_zero_after_reset(bootstrap: str, topic: str, count: int) -> list:
    """A fresh confluent-kafka consumer asked for offset 0 with auto.offset.reset=earliest."""
    return consume(bootstrap, topic, count, start_offset=0, timeout_s=60,
                   config={"auto.offset.reset": "earliest"})


def kafka_python_read_all(bootstrap: str, topic: str, count: int, timeout_s: float = 60.0) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=1000, fetch_max_wait_ms=100, request_timeout_ms=15000,
                             auto_offset_reset="earliest")
    try:
        tp = KpTopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def set_topic_config(bootstrap: str, topic: str, name: str, value: str) -> None:
    client = admin(bootstrap)  # must outlive the future
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
    client.incremental_alter_configs([resource])[resource].result(timeout=15)


def now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------------------- tests

def test_tier_status_unreachable_admin_is_a_clear_error():
    """Goal: `strata tier status` against an address where nothing listens fails with a message
    naming the admin endpoint, not a stack trace or a hang."""
    port = free_port()
    proc = tier_status_cli(f"127.0.0.1:{port}", "--json", check=False)
    assert proc.returncode != 0
    stderr = proc.stderr.decode(errors="replace")
    assert "admin endpoint" in stderr and f"127.0.0.1:{port}" in stderr, stderr


@pytest.mark.parametrize("url", ["gs://bucket/prefix", "s3://", "file://relative/dir"])
def test_serve_refuses_a_bad_object_store_url(tmp_path, url):
    """Goal: a mistyped --object-store stops `strata serve` at start with the accepted forms, rather
    than running without the remote tier the operator asked for."""
    proc = subprocess.run(
        [str(STRATA_BIN), "serve", "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", "none",
         "--data-dir", str(tmp_path / "data"), "--object-store", url],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    stderr = proc.stderr.decode(errors="replace")
    assert "object store URL" in stderr and url in stderr, stderr


def test_offload_to_local_folder_by_default(make_broker, tmp_path):
    """Goal: with no --object-store, closed segments go to <data_dir>/remote as Parquet, the hot
    tier is trimmed, a fresh consumer from offset 0 gets every record intact, and DuckDB/pyarrow
    read the files with the documented layout and schema."""
    broker = make_broker(extra_args=broker_args(tmp_path))
    topic = unique_name("tier-file")
    create_topic(broker.bootstrap, topic, config=tiered_topic_config())
    records = make_records(3000, now_ms())
    expected = produce_all(broker.bootstrap, topic, records, config={"compression.type": "lz4"})

    status = wait_settled(broker, topic, offloaded_and_trimmed, "all closed segments offloaded and trimmed")
    assert status["remote_storage_enable"] is True
    assert status["local_bytes"] <= SEGMENT_BYTES + 64 * 1024, f"hot tier not trimmed: {status}"
    assert status["log_start_offset"] == 0 and status["remote_start_offset"] == 0, status
    assert status["log_end_offset"] == status["high_watermark"] == 3000, status
    assert status["remote_files"] >= 2 and status["remote_bytes"] > 0, status

    consumed = consume(broker.bootstrap, topic, 3000, start_offset=0, timeout_s=60)
    assert_consumed(consumed, expected, 0)
    assert watermarks(broker.bootstrap, topic) == (0, 3000)

    status = tier_status(broker, topic)
    check_remote_files(broker.data_dir / "remote", topic, status, expected)

    # The table form names the topic and the remote range.
    table = tier_status_cli(broker.admin, "--topic", topic).stdout.decode()
    assert table.splitlines()[0].startswith("TOPIC"), table
    assert topic in table and f"0..{status['remote_end_offset']}" in table, table


def test_offload_to_s3_server(make_broker, s3_server, tmp_path):
    """Goal: with --object-store s3://bucket/prefix and AWS_* variables, the files land in the S3
    server's bucket under the prefix, with the same layout, and reads from 0 are served from them."""
    bucket_dir = s3_server.create_bucket(BUCKET)
    broker = make_broker(extra_args=broker_args(tmp_path, "--object-store", f"s3://{BUCKET}/{S3_PREFIX}"),
                         env=s3_server.env())
    topic = unique_name("tier-s3")
    create_topic(broker.bootstrap, topic, config=tiered_topic_config())
    records = make_records(2500, now_ms(), tag="s3")
    expected = produce_all(broker.bootstrap, topic, records, config={"compression.type": "zstd"})

    status = wait_settled(broker, topic, offloaded_and_trimmed, "all closed segments offloaded to S3")
    assert status["last_error"] is None, status
    consumed = consume(broker.bootstrap, topic, 2500, start_offset=0, timeout_s=60)
    assert_consumed(consumed, expected, 0)

    status = tier_status(broker, topic)
    check_remote_files(bucket_dir / S3_PREFIX, topic, status, expected)
    assert not (broker.data_dir / "remote" / topic).exists(), "S3 was configured, yet files went local"


def test_s3_outage_keeps_the_hot_tier_and_catches_up(make_broker, s3_server, tmp_path):
    """Goal: while the S3 server is down, produce and reads of recent records go on, segments wait
    locally (pending uploads and an error in tier status, no offsets lost); after it is back the
    offload catches up and a consumer from 0 gets every record."""
    s3_server.create_bucket(BUCKET)
    broker = make_broker(extra_args=broker_args(tmp_path, "--object-store", f"s3://{BUCKET}/{S3_PREFIX}"),
                         env=s3_server.env())
    topic = unique_name("tier-outage")
    create_topic(broker.bootstrap, topic, config=tiered_topic_config())
    idempotent = {"enable.idempotence": True, "acks": "all"}
    first = make_records(1000, now_ms(), tag="before")
    expected = produce_all(broker.bootstrap, topic, first, config=idempotent)
    wait_settled(broker, topic, offloaded_and_trimmed, "the first batch offloaded")

    s3_server.stop()
    second = make_records(2000, now_ms(), tag="during")
    during = produce_all(broker.bootstrap, topic, second, config=idempotent)
    assert min(during) == 1000
    expected.update(during)
    # The newest records are readable while S3 is down.
    recent = consume(broker.bootstrap, topic, 2000, start_offset=1000, timeout_s=60)
    assert_consumed(recent, expected, 1000)
    outage = wait_status(broker, topic,
                         lambda s: s["pending_segments"] > 0 and s["last_error"] is not None,
                         "pending uploads and an error while S3 is down")
    assert outage["pending_bytes"] > 0, outage
    assert outage["remote_end_offset"] is not None and outage["remote_end_offset"] <= 1000, outage
    # Nothing that is not remote was trimmed locally.
    assert outage["local_start_offset"] <= outage["remote_end_offset"], outage

    s3_server.start()
    status = wait_settled(broker, topic, offloaded_and_trimmed, "the offload catching up after the outage")
    assert status["remote_end_offset"] > 1000, status
    assert status["last_error"] is None, f"the error outlived the outage: {status}"
    consumed = consume(broker.bootstrap, topic, 3000, start_offset=0, timeout_s=60)
    assert_consumed(consumed, expected, 0)
    check_remote_files(s3_server.root / BUCKET / S3_PREFIX, topic, status, expected)


def test_retention_deletes_remote_files_and_moves_log_start(make_broker, tmp_path):
    """Goal: retention.ms applies across the tiers: once lowered, remote files whose records are
    all older are deleted, ListOffsets earliest moves forward, and a consumer asking for offset 0
    with auto.offset.reset=earliest starts at the new log start."""
    broker = make_broker(extra_args=broker_args(tmp_path))
    topic = unique_name("tier-retention")
    create_topic(broker.bootstrap, topic, config=tiered_topic_config())
    hour_ago = now_ms() - 3600 * 1000
    old = make_records(1500, hour_ago, tag="old")
    expected = produce_all(broker.bootstrap, topic, old)
    new = make_records(1500, now_ms(), tag="new")
    expected.update(produce_all(broker.bootstrap, topic, new))
    first_new = 1500
    before = wait_settled(broker, topic, offloaded_and_trimmed, "everything closed offloaded")
    assert before["remote_start_offset"] == 0, before
    files_before = parquet_files(broker.data_dir / "remote", topic)
    ranges = [tuple(int(x) for x in FILE_NAME.match(p.name).groups()) for p in files_before]
    # Time retention deletes a segment when its newest record expired: every file of old records
    # only; the file (segment) holding the last old record stays if it also holds new ones.
    holding_last_old = [(a, b) for a, b in ranges if a <= first_new - 1 <= b]
    assert holding_last_old, f"offset {first_new - 1} was not offloaded: {ranges} {before}"
    first, last = holding_last_old[0]
    expected_log_start = first if last >= first_new else first_new

    # Ten minutes: the hour-old records expire, the new ones stay.
    set_topic_config(broker.bootstrap, topic, "retention.ms", str(10 * 60 * 1000))
    after = wait_status(broker, topic, lambda s: s["log_start_offset"] >= expected_log_start and s["pending_segments"] == 0,
                        "the log start moving forward")
    log_start = after["log_start_offset"]
    assert log_start == expected_log_start, (expected_log_start, ranges, after)
    assert after["remote_start_offset"] == log_start, after
    low, high = watermarks(broker.bootstrap, topic)
    assert (low, high) == (log_start, 3000)

    files_after = parquet_files(broker.data_dir / "remote", topic)
    assert len(files_after) < len(files_before), (files_before, files_after)
    for path in files_after:
        first, _ = (int(x) for x in FILE_NAME.match(path.name).groups())
        assert first >= log_start, f"{path.name} is below the log start {log_start}"
    check_remote_files(broker.data_dir / "remote", topic, after, expected)

    consumed = consume_from_zero_after_reset(broker.bootstrap, topic, 3000 - log_start)
    assert consumed[0].offset == log_start
    assert_consumed(consumed, expected, log_start)


def test_kafka_python_reads_offloaded_records(make_broker, tmp_path):
    """Goal: a second client library (kafka-python) reads from offset 0 through the remote tier
    after the hot tier was trimmed, records intact."""
    broker = make_broker(extra_args=broker_args(tmp_path))
    topic = unique_name("tier-kpy")
    create_topic(broker.bootstrap, topic, config=tiered_topic_config())
    records = make_records(2000, now_ms(), tag="kpy")
    expected = produce_all(broker.bootstrap, topic, records)
    wait_settled(broker, topic, offloaded_and_trimmed, "all closed segments offloaded and trimmed")

    got = kafka_python_read_all(broker.bootstrap, topic, 2000)
    assert [m.offset for m in got] == list(range(2000)), f"got {len(got)} records"
    for m in got:
        record = expected[m.offset]
        assert m.key == record["key"], m.offset
        assert m.value == record["value"], m.offset
        assert norm_headers(m.headers) == norm_headers(record["headers"]), m.offset
        assert m.timestamp == record["timestamp"], m.offset
