"""Topic configs with real clients: broker-side recompression (compression.type) read back by
confluent-kafka and kafka-python, LogAppendTime as consumers see it, and Kafka 4.x topic configs
that tools set at creation (accepted, described)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from conftest import EXTERNAL_BOOTSTRAP
from helpers import admin, consume, create_topic, produce, unique_name

ZSTD = 4


def first_batch_codec(broker, topic: str) -> int:
    """The codec id (attributes bits 0-2) of the first batch in the partition's first segment."""
    segment = broker.data_dir / f"{topic}-0" / f"{0:020}.log"
    header = segment.read_bytes()[:61]
    assert len(header) == 61, f"{segment} holds no batch"
    return int.from_bytes(header[21:23], "big") & 0x07


@pytest.mark.skipif(EXTERNAL_BOOTSTRAP is not None, reason="reads the broker's data dir")
def test_compression_type_recompresses_and_clients_read_it(broker):
    """Goal: a topic with compression.type=zstd stores what an uncompressed producer sent as zstd
    batches, and both confluent-kafka and kafka-python read every record back unchanged."""
    topic = unique_name("zstd")
    create_topic(broker.bootstrap, topic, config={"compression.type": "zstd"})
    records = [{"key": f"k{i}".encode(), "value": f"value-{i}-".encode() * 20} for i in range(300)]
    delivered = produce(broker.bootstrap, topic, records, config={"compression.type": "none"})
    assert all(d.error is None for d in delivered)
    assert first_batch_codec(broker, topic) == ZSTD

    consumed = consume(broker.bootstrap, topic, len(records))
    assert [(c.key, c.value) for c in consumed] == [(r["key"], r["value"]) for r in records]

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=10_000)
    try:
        tp = KpTopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got = []
        deadline = time.monotonic() + 30
        while len(got) < len(records) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got.extend((m.key, m.value) for m in batch)
        assert got == [(r["key"], r["value"]) for r in records]
    finally:
        consumer.close()


def test_log_append_time_is_what_consumers_see(broker):
    """Goal: on a LogAppendTime topic, a consumer sees the broker's append time (and the
    LogAppendTime type) instead of the producer's timestamp."""
    topic = unique_name("lat")
    create_topic(broker.bootstrap, topic, config={"message.timestamp.type": "LogAppendTime"})
    old = 1_000_000_000_000
    before = int(time.time() * 1000)
    delivered = produce(broker.bootstrap, topic,
                        [{"key": b"k", "value": f"v{i}".encode(), "timestamp": old} for i in range(5)])
    after = int(time.time() * 1000)
    assert all(d.error is None for d in delivered)
    consumed = consume(broker.bootstrap, topic, 5, config={})
    for c in consumed:
        assert before - 1000 <= c.timestamp <= after + 1000, (c.timestamp, before, after)


def test_tools_configs_are_accepted_and_described(broker):
    """Goal: the configs Kafka Connect / Streams / Terraform set at creation are accepted and
    described back with the values set."""
    topic = unique_name("tools")
    config = {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "1000",
        "max.compaction.lag.ms": "86400000",
        "min.cleanable.dirty.ratio": "0.1",
        "segment.jitter.ms": "1000",
        "unclean.leader.election.enable": "false",
        "message.timestamp.before.max.ms": "86400000",
        "message.timestamp.after.max.ms": "3600000",
        "flush.messages": "10000",
        "flush.ms": "1000",
        "preallocate": "false",
        "file.delete.delay.ms": "60000",
        "segment.index.bytes": "10485760",
        "leader.replication.throttled.replicas": "*",
    }
    create_topic(broker.bootstrap, topic, config=config)
    client = admin(broker.bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    described = client.describe_configs([resource])[resource].result(timeout=20)
    for key, value in config.items():
        assert described[key].value == value, key
