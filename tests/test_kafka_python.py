"""kafka-python (pure-Python protocol implementation, its own version negotiation) against Strata:
producer with each codec, assign-based consumer, admin topics and configs, end offsets and offsets by
time."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from helpers import create_topic, unique_name, watermarks

KAFKA_PYTHON_CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def make_consumer(bootstrap: str) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         consumer_timeout_ms=1000, fetch_max_wait_ms=100, request_timeout_ms=15000)


def read_partition(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0, partition: int = 0):
    """assign + seek_to_beginning, then poll until `count` records arrived."""
    consumer = make_consumer(bootstrap)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        assert len(out) >= count, f"consumed {len(out)} of {count} records"
        return out
    finally:
        consumer.close()


@pytest.mark.parametrize("codec", KAFKA_PYTHON_CODECS)
def test_kafka_python_produce_consume_each_codec(broker, topic, codec):
    """Goal: kafka-python's producer with compression_type=<codec> stores every record (keys, values,
    headers); its consumer (assign + seek_to_beginning, no group) reads them back in order."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec, acks="all",
                             linger_ms=20, request_timeout_ms=15000)
    n = 1000
    futures = []
    for i in range(n):
        futures.append(producer.send(topic, partition=0, key=f"k{i}".encode(),
                                     value=f"{codec}-value-{i}-".encode() * (1 + i % 3),
                                     headers=[("i", str(i).encode()), ("empty", b"")]))
    producer.flush(timeout=30)
    metadata = [f.get(timeout=30) for f in futures]
    producer.close(timeout=10)
    assert [m.offset for m in metadata] == list(range(n))
    assert {m.partition for m in metadata} == {0}

    got = read_partition(broker.bootstrap, topic, n)
    assert [r.offset for r in got] == list(range(n))
    for i, r in enumerate(got):
        assert r.key == f"k{i}".encode()
        assert r.value == f"{codec}-value-{i}-".encode() * (1 + i % 3)
        assert list(r.headers) == [("i", str(i).encode()), ("empty", b"")]


def test_kafka_python_null_value_and_timestamps(broker, topic):
    """Goal: a tombstone (value None) stays None and explicit record timestamps come back unchanged."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1)
    ts = int(time.time() * 1000) - 10_000
    producer.send(topic, partition=0, key=b"gone", value=None, timestamp_ms=ts).get(timeout=30)
    producer.send(topic, partition=0, key=None, value=b"v", timestamp_ms=ts + 1).get(timeout=30)
    producer.close(timeout=10)
    got = read_partition(broker.bootstrap, topic, 2)
    assert [(r.key, r.value, r.timestamp) for r in got] == [(b"gone", None, ts), (None, b"v", ts + 1)]


def test_kafka_python_end_offsets_and_offsets_for_times(broker, topic):
    """Goal: beginning_offsets / end_offsets match what was produced; offsets_for_times finds the
    first record at or after a timestamp and None past the end."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
    base_ms = int(time.time() * 1000) - 600_000
    for i in range(10):  # one send().get() per record: one batch per record
        producer.send(topic, partition=0, value=f"t{i}".encode(), timestamp_ms=base_ms + 1000 * i).get(timeout=30)
    producer.close(timeout=10)

    consumer = make_consumer(broker.bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        assert consumer.beginning_offsets([tp], timeout_ms=15000) == {tp: 0}
        assert consumer.end_offsets([tp], timeout_ms=15000) == {tp: 10}
        found = consumer.offsets_for_times({tp: base_ms + 3500}, timeout_ms=15000)[tp]
        assert (found.offset, found.timestamp) == (4, base_ms + 4000)
        found = consumer.offsets_for_times({tp: base_ms}, timeout_ms=15000)[tp]
        assert (found.offset, found.timestamp) == (0, base_ms)
        assert consumer.offsets_for_times({tp: base_ms + 60_000}, timeout_ms=15000)[tp] is None
    finally:
        consumer.close()


def test_kafka_python_admin_topics_and_configs(broker):
    """Goal: KafkaAdminClient creates a topic (with a config), lists it, describes its configs (the set
    value and the defaults), alters a config, and deletes the topic."""
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        name = unique_name("kp-admin")
        client.create_topics({name: {"num_partitions": 2, "replication_factor": 1,
                                     "configs": {"retention.ms": "86400000"}}})
        deadline = time.monotonic() + 10
        while name not in client.list_topics() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert name in client.list_topics()

        described = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)],
                                            config_filter="all")
        configs = described["topic"][name]
        assert configs["retention.ms"]["value"] == "86400000"
        assert configs["retention.bytes"]["value"] == "-1"

        client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, {"retention.bytes": "5000000"})])
        described = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)],
                                            config_filter="all")
        assert described["topic"][name]["retention.bytes"]["value"] == "5000000"
        assert described["topic"][name]["retention.ms"]["value"] == "86400000"

        topics = client.describe_topics([name])
        assert len(topics) == 1 and len(topics[0]["partitions"]) == 2

        client.delete_topics([name])
        deadline = time.monotonic() + 10
        while name in client.list_topics() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert name not in client.list_topics()
    finally:
        client.close()


def test_kafka_python_reads_what_confluent_wrote(broker):
    """Goal: records written by one client library (librdkafka, zstd) are read identically by another
    (kafka-python): the broker stores batches in the standard format."""
    from helpers import produce

    name = unique_name("cross")
    create_topic(broker.bootstrap, name)
    records = [{"key": f"c{i}".encode(), "value": f"v{i}".encode(), "partition": 0,
                "headers": [("h", b"\x00\xff")]} for i in range(200)]
    produce(broker.bootstrap, name, records, {"compression.type": "zstd"})
    got = read_partition(broker.bootstrap, name, 200)
    assert [(r.offset, r.key, r.value, list(r.headers)) for r in got] == \
        [(i, f"c{i}".encode(), f"v{i}".encode(), [("h", b"\x00\xff")]) for i in range(200)]


def test_kafka_python_idempotent_producer(broker, topic):
    """Goal: kafka-python's idempotent producer (InitProducerId, sequence numbers) writes every record
    exactly once: dense offsets, consumed count == produced count, values in order."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all",
                             linger_ms=5, request_timeout_ms=15000)
    n = 3000
    futures = [producer.send(topic, partition=0, value=f"kp-idem-{i}".encode()) for i in range(n)]
    producer.flush(timeout=30)
    offsets = [f.get(timeout=30).offset for f in futures]
    producer.close(timeout=10)
    assert offsets == list(range(n))
    assert watermarks(broker.bootstrap, topic) == (0, n), "extra records in the partition"
    got = read_partition(broker.bootstrap, topic, n)
    assert [(r.offset, r.value) for r in got] == [(i, f"kp-idem-{i}".encode()) for i in range(n)]
