"""Helpers shared by the tests: topic admin, produce and consume with confluent-kafka, kcat."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def unique_name(prefix: str) -> str:
    """A topic name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None) -> None:
    """Creates a topic through CreateTopics and waits for the answer (raises on error)."""
    client = admin(bootstrap)  # must outlive the futures: destroying it fails them
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10,
        request_timeout=15,
    )
    futures[name].result(timeout=20)


@dataclass
class Delivered:
    """What a delivery report said about one produced record."""

    index: int
    partition: int
    offset: int
    error: KafkaError | None


def produce(bootstrap: str, topic: str, records: list[dict], config: dict | None = None,
            flush_timeout_s: float = 30.0) -> list[Delivered]:
    """Produces `records` (dicts of Producer.produce keyword arguments) in order, returns the delivery
    reports indexed like `records`. Fails if some report did not arrive within the flush timeout."""
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    conf.update(config or {})
    producer = Producer(conf)
    reports: list[Delivered | None] = [None] * len(records)

    def on_delivery(index):
        def callback(err, msg):
            reports[index] = Delivered(index, msg.partition(), msg.offset(), err)
        return callback

    for i, record in enumerate(records):
        while True:
            try:
                producer.produce(topic, on_delivery=on_delivery(i), **record)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(flush_timeout_s)
    assert remaining == 0, f"{remaining} records still undelivered after {flush_timeout_s}s"
    missing = [i for i, r in enumerate(reports) if r is None]
    assert not missing, f"no delivery report for records {missing[:10]}"
    return reports  # type: ignore[return-value]


@dataclass
class Consumed:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list | None
    timestamp: int


def consume(bootstrap: str, topic: str, count: int, partition: int = 0,
            start_offset: int | None = None, timeout_s: float = 30.0,
            config: dict | None = None) -> list[Consumed]:
    """Reads `count` records of one partition from `start_offset` (default: the beginning) with
    confluent-kafka's Consumer.assign (no group subscription, no commits). Fails on a consumer error
    or if fewer than `count` records arrive within `timeout_s`."""
    conf = {
        "bootstrap.servers": bootstrap,
        # confluent-kafka insists on a group.id; nothing is ever committed to it.
        "group.id": unique_name("it-reader"),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,
    }
    conf.update(config or {})
    consumer = Consumer(conf)
    try:
        offset = start_offset if start_offset is not None else -2  # OFFSET_BEGINNING
        consumer.assign([TopicPartition(topic, partition, offset)])
        out: list[Consumed] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=min(1000, count - len(out)), timeout=0.5):
                err = msg.error()
                if err is not None:
                    # Errors about our partition (or fatal ones) fail the read; client-level noise
                    # (e.g. group-coordinator lookups for the unused group.id) is only reported.
                    if err.fatal() or msg.topic() == topic:
                        raise KafkaException(err)
                    eprint(f"consumer warning (ignored): {err}")
                    continue
                out.append(Consumed(msg.offset(), msg.key(), msg.value(), msg.headers(), msg.timestamp()[1]))
        assert len(out) >= count, f"consumed {len(out)} of {count} records of {topic}[{partition}] in {timeout_s}s"
        return out
    finally:
        consumer.close()


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    """(low, high) watermark offsets of a partition, asked of the broker."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("it-wm")})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------
# kcat

KCAT_LIBRDKAFKA = ["system", "bundled"]


def bundled_librdkafka_dir() -> str:
    """A folder holding `librdkafka.so.1` -> the librdkafka that the confluent-kafka wheel bundles,
    for LD_LIBRARY_PATH (the wheel renames the library, so a symlink restores the soname)."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    candidates = sorted(libs.glob("librdkafka*.so*"))
    assert candidates, f"no librdkafka in {libs}"
    link_dir = Path(tempfile.gettempdir()) / f"strata-it-librdkafka-{os.getuid()}"
    link_dir.mkdir(exist_ok=True)
    link = link_dir / "librdkafka.so.1"
    if not link.exists() or link.resolve() != candidates[0]:
        tmp = link_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.symlink_to(candidates[0])
        tmp.replace(link)
    # The bundled library may need sibling libraries of the wheel too.
    return f"{link_dir}:{libs}"


def kcat_env(lib: str) -> dict:
    env = dict(os.environ)
    if lib == "bundled":
        env["LD_LIBRARY_PATH"] = bundled_librdkafka_dir()
    else:
        env.pop("LD_LIBRARY_PATH", None)
    return env


def kcat(lib: str, args: list[str], stdin: bytes | None = None, timeout_s: float = 30.0,
         check: bool = True) -> subprocess.CompletedProcess:
    """Runs kcat with the system librdkafka (Debian's) or the one bundled by confluent-kafka."""
    exe = shutil.which("kcat")
    assert exe, "kcat is not installed (scripts/setup-test-env.sh installs it)"
    proc = subprocess.run([exe, *args], input=stdin, capture_output=True, env=kcat_env(lib),
                          timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kcat {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout[-2000:]!r}\n"
            f"stderr: {proc.stderr.decode(errors='replace')[-3000:]}")
    return proc


def kcat_librdkafka_version(lib: str) -> str:
    out = kcat(lib, ["-V"]).stdout.decode()
    marker = "librdkafka "
    start = out.index(marker) + len(marker)
    return out[start:].split()[0]


def eprint(*args) -> None:
    print(*args, file=sys.stderr)
