"""confluent-kafka (librdkafka 2.16) against Strata: admin, produce with every acks setting and codec,
idempotence, keys / null values / headers, assign-based consumption, watermarks, offsets by time."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException,
                             TopicPartition)
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                   ResourceType)

from helpers import CODECS, admin, consume, create_topic, produce, unique_name, watermarks


def topic_names(bootstrap: str) -> set[str]:
    return set(admin(bootstrap).list_topics(timeout=10).topics)


def describe_topic_config(bootstrap: str, name: str) -> dict:
    resource = ConfigResource(ResourceType.TOPIC, name)
    client = admin(bootstrap)  # must outlive the future
    result = client.describe_configs([resource], request_timeout=10)
    return result[resource].result(timeout=15)


# ------------------------------------------------------------------------------------------- admin

def test_admin_create_list_delete_topics(broker):
    """Goal: topics created with CreateTopics show up in metadata with their partition count, a
    duplicate create fails with TOPIC_ALREADY_EXISTS, and deleted topics disappear."""
    client = admin(broker.bootstrap)
    a, b = unique_name("adm-a"), unique_name("adm-b")
    futures = client.create_topics([NewTopic(a, 1, 1), NewTopic(b, 4, 1)], operation_timeout=10)
    for f in futures.values():
        f.result(timeout=20)

    meta = client.list_topics(timeout=10)
    assert a in meta.topics and b in meta.topics
    assert sorted(meta.topics[a].partitions) == [0]
    assert sorted(meta.topics[b].partitions) == [0, 1, 2, 3]
    for p in meta.topics[b].partitions.values():
        assert p.error is None, p.error
        assert p.leader == meta.orig_broker_id or p.leader in meta.brokers

    again = client.create_topics([NewTopic(a, 1, 1)], operation_timeout=10)
    with pytest.raises(KafkaException) as exc:
        again[a].result(timeout=20)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    for f in client.delete_topics([a, b], operation_timeout=10).values():
        f.result(timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ({a, b} & topic_names(broker.bootstrap)):
        time.sleep(0.2)
    assert not ({a, b} & topic_names(broker.bootstrap))


def test_admin_create_topic_invalid_requests(broker):
    """Goal: CreateTopics rejects an invalid partition count and an invalid name with an error (and
    creates nothing)."""
    client = admin(broker.bootstrap)
    bad_count = unique_name("adm-zero")
    futures = client.create_topics([NewTopic(bad_count, 0, 1)], operation_timeout=10)
    with pytest.raises(KafkaException) as exc:
        futures[bad_count].result(timeout=20)
    assert exc.value.args[0].code() == KafkaError.INVALID_PARTITIONS

    bad_name = "bad/name*" + unique_name("x")
    futures = client.create_topics([NewTopic(bad_name, 1, 1)], operation_timeout=10)
    with pytest.raises(KafkaException) as exc:
        futures[bad_name].result(timeout=20)
    assert exc.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    names = topic_names(broker.bootstrap)
    assert bad_count not in names and bad_name not in names


def test_admin_describe_configs_defaults(broker, topic):
    """Goal: DescribeConfigs on a topic lists Kafka's topic config names with their defaults."""
    configs = describe_topic_config(broker.bootstrap, topic)
    for key in ("retention.ms", "retention.bytes", "segment.bytes", "segment.ms"):
        assert key in configs, sorted(configs)
    assert configs["retention.ms"].value == str(7 * 24 * 3600 * 1000)
    assert configs["retention.bytes"].value == "-1"
    assert configs["segment.bytes"].value == str(1024 ** 3)


def test_admin_create_topic_with_config(broker):
    """Goal: configs given at CreateTopics are stored and described back as set on the topic."""
    name = unique_name("adm-cfg")
    create_topic(broker.bootstrap, name, config={"retention.ms": "3600000", "segment.bytes": "1048576"})
    configs = describe_topic_config(broker.bootstrap, name)
    assert configs["retention.ms"].value == "3600000"
    assert configs["segment.bytes"].value == "1048576"
    assert not configs["retention.ms"].is_default


def test_admin_incremental_alter_configs(broker, topic):
    """Goal: IncrementalAlterConfigs SET changes a topic config, DELETE restores its default."""
    client = admin(broker.bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)])
    client.incremental_alter_configs([resource])[resource].result(timeout=15)
    assert describe_topic_config(broker.bootstrap, topic)["retention.ms"].value == "60000"

    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    client.incremental_alter_configs([resource])[resource].result(timeout=15)
    assert describe_topic_config(broker.bootstrap, topic)["retention.ms"].value == str(7 * 24 * 3600 * 1000)


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated:DeprecationWarning")
def test_admin_alter_configs_legacy(broker, topic):
    """Goal: the legacy AlterConfigs (replace all overrides) sets a topic config visible to
    DescribeConfigs."""
    client = admin(broker.bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.bytes": "123456789"})
    client.alter_configs([resource])[resource].result(timeout=15)
    assert describe_topic_config(broker.bootstrap, topic)["retention.bytes"].value == "123456789"


def test_admin_alter_configs_rejects_bad_value(broker, topic):
    """Goal: a non-numeric value for a numeric config is rejected (INVALID_CONFIG), and the old value
    stays."""
    client = admin(broker.bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "not-a-number", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as exc:
        client.incremental_alter_configs([resource])[resource].result(timeout=15)
    assert exc.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert describe_topic_config(broker.bootstrap, topic)["retention.ms"].value == str(7 * 24 * 3600 * 1000)


# ---------------------------------------------------------------------------------------- produce

@pytest.mark.parametrize("acks", ["all", "1", "0"])
def test_produce_acks_and_read_back(broker, topic, acks):
    """Goal: with acks=all/1/0 every record is stored; acks=all/1 delivery reports give dense offsets
    0..n-1; a consumer reads exactly the produced values in order at those offsets."""
    n = 500
    records = [{"value": f"acks={acks} #{i}".encode(), "partition": 0} for i in range(n)]
    reports = produce(broker.bootstrap, topic, records, {"acks": acks})
    assert [r.error for r in reports] == [None] * n
    if acks != "0":
        assert [r.offset for r in reports] == list(range(n))
    got = consume(broker.bootstrap, topic, n)
    assert [m.offset for m in got] == list(range(n))
    assert [m.value for m in got] == [r["value"] for r in records]
    assert watermarks(broker.bootstrap, topic) == (0, n)


@pytest.mark.parametrize("codec", CODECS)
def test_produce_each_compression_codec(broker, topic, codec):
    """Goal: a producer with compression.type=<codec> (batches of many records) is accepted; the
    records come back decompressed, unchanged, in order, with dense offsets."""
    n = 2000
    records = [{"key": f"k{i % 17}".encode(), "value": (f"{codec}-{i}-" * (1 + i % 5)).encode(),
                "partition": 0} for i in range(n)]
    reports = produce(broker.bootstrap, topic, records,
                      {"compression.type": codec, "linger.ms": 50, "batch.num.messages": 500})
    assert all(r.error is None for r in reports)
    assert sorted(r.offset for r in reports) == list(range(n))
    got = consume(broker.bootstrap, topic, n)
    assert [m.offset for m in got] == list(range(n))
    assert [(m.key, m.value) for m in got] == [(r["key"], r["value"]) for r in records]


def test_keys_null_values_and_headers(broker, topic):
    """Goal: keys (incl. none and empty), null values (tombstones), empty values and headers (binary,
    empty, null, repeated names) survive the round trip exactly."""
    binary = bytes(range(256))
    records = [
        {"key": b"k1", "value": b"v1", "headers": [("h", b"1")]},
        {"key": b"tomb", "value": None},
        {"key": None, "value": b"no key"},
        {"key": b"", "value": b""},
        {"key": binary, "value": binary, "headers": [("bin", binary), ("empty", b""), ("null", None)]},
        {"key": b"dup", "value": b"x", "headers": [("a", b"1"), ("a", b"2"), ("\u00fcnicode", "\u00e9".encode())]},
    ]
    for r in records:
        r["partition"] = 0
    reports = produce(broker.bootstrap, topic, records)
    assert [r.error for r in reports] == [None] * len(records)
    got = consume(broker.bootstrap, topic, len(records))
    assert [m.offset for m in got] == list(range(len(records)))
    for rec, msg in zip(records, got):
        assert msg.key == rec["key"], msg
        assert msg.value == rec["value"], msg
        assert (msg.headers or []) == rec.get("headers", []), msg


def test_idempotent_producer_no_duplicates(broker, topic):
    """Goal: enable.idempotence=true with several requests in flight writes every record exactly once:
    consumed count == produced count, offsets dense, values in produce order."""
    n = 20000
    records = [{"value": f"idem-{i}".encode(), "partition": 0} for i in range(n)]
    reports = produce(broker.bootstrap, topic, records, {
        "enable.idempotence": True, "acks": "all", "linger.ms": 2, "batch.num.messages": 200,
        "max.in.flight.requests.per.connection": 5})
    assert all(r.error is None for r in reports), [r.error for r in reports if r.error][:5]
    assert [r.offset for r in reports] == list(range(n))
    got = consume(broker.bootstrap, topic, n)
    assert [m.value for m in got] == [r["value"] for r in records]
    assert [m.offset for m in got] == list(range(n))
    assert watermarks(broker.bootstrap, topic) == (0, n)


def test_multi_partition_produce(broker):
    """Goal: records sent to explicit partitions land in those partitions, each with its own dense
    offsets."""
    name = unique_name("multi")
    create_topic(broker.bootstrap, name, partitions=3)
    records = [{"value": f"p{i % 3}-{i // 3}".encode(), "partition": i % 3} for i in range(300)]
    reports = produce(broker.bootstrap, name, records, {"acks": "all"})
    assert all(r.error is None for r in reports)
    for p in range(3):
        got = consume(broker.bootstrap, name, 100, partition=p)
        assert [m.value for m in got] == [f"p{p}-{j}".encode() for j in range(100)]
        assert [m.offset for m in got] == list(range(100))
        assert watermarks(broker.bootstrap, name, p) == (0, 100)


def test_produce_to_unknown_partition_fails(broker, topic):
    """Goal: producing to a partition the topic does not have is refused (the record is not lost
    silently and not written elsewhere)."""
    reports = produce(broker.bootstrap, topic, [{"value": b"x", "partition": 5}],
                      {"message.timeout.ms": 5000})
    assert reports[0].error is not None
    assert reports[0].error.code() in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
                                       KafkaError._MSG_TIMED_OUT)
    assert watermarks(broker.bootstrap, topic) == (0, 0)


# ---------------------------------------------------------------------------------------- consume

def test_consume_from_middle_offset(broker, topic):
    """Goal: a consumer assigned at offset k gets records k.. (not from the batch start)."""
    records = [{"value": f"r{i}".encode(), "partition": 0} for i in range(100)]
    produce(broker.bootstrap, topic, records, {"linger.ms": 50})
    got = consume(broker.bootstrap, topic, 63, start_offset=37)
    assert [m.offset for m in got] == list(range(37, 100))
    assert [m.value for m in got] == [f"r{i}".encode() for i in range(37, 100)]


def test_consume_offset_end_waits_for_new_records(broker, topic):
    """Goal: a consumer assigned at OFFSET_END never sees records that existed before it started, and
    does see records produced after it."""
    produce(broker.bootstrap, topic, [{"value": b"old", "partition": 0}])
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_name("g"),
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
        # Give the consumer time to resolve its start (ListOffsets latest) before producing; if it
        # resolves later anyway, a later "new" record still arrives.
        assert consumer.poll(1.0) is None
        msg = None
        deadline = time.monotonic() + 15
        i = 0
        while msg is None and time.monotonic() < deadline:
            produce(broker.bootstrap, topic, [{"value": f"new-{i}".encode(), "partition": 0}])
            i += 1
            msg = consumer.poll(2.0)
        assert msg is not None, "no record arrived after producing at the end"
        assert msg.error() is None, msg.error()
        assert msg.value().startswith(b"new-"), msg.value()
        assert msg.offset() >= 1
    finally:
        consumer.close()


def test_watermarks_of_empty_and_filled_partition(broker, topic):
    """Goal: get_watermark_offsets is (0, 0) on a new partition and (0, n) after n records."""
    assert watermarks(broker.bootstrap, topic) == (0, 0)
    produce(broker.bootstrap, topic, [{"value": b"x", "partition": 0} for _ in range(42)])
    assert watermarks(broker.bootstrap, topic) == (0, 42)


def _offsets_for_times(bootstrap: str, topic: str, timestamps: list[int]) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("oft")})
    try:
        out = []
        for ts in timestamps:
            [tp] = consumer.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert tp.error is None, tp.error
            out.append(tp.offset)
        return out
    finally:
        consumer.close()


def test_offsets_for_times_one_record_per_batch(broker, topic):
    """Goal: ListOffsets by timestamp returns the first offset whose timestamp >= the target, and
    OFFSET_END (-1) past the last record; each record is its own batch here."""
    base_ms = int(time.time() * 1000) - 3_600_000
    producer_records = [{"value": f"t{i}".encode(), "partition": 0, "timestamp": base_ms + i * 1000}
                        for i in range(10)]
    for rec in producer_records:  # one produce + flush per record: one batch per record
        produce(broker.bootstrap, topic, [rec], {"linger.ms": 0})
    got = consume(broker.bootstrap, topic, 10)
    assert [m.timestamp for m in got] == [r["timestamp"] for r in producer_records]

    targets = [base_ms - 5000, base_ms, base_ms + 1, base_ms + 4500, base_ms + 9000, base_ms + 9001]
    assert _offsets_for_times(broker.bootstrap, topic, targets) == [0, 0, 1, 5, 9, -1]


def test_offsets_for_times_within_one_batch(broker, topic):
    """Goal: as in Kafka, ListOffsets by timestamp finds the exact record inside a batch (not just the
    batch's first offset) when one batch holds records with increasing timestamps."""
    base_ms = int(time.time() * 1000) - 3_600_000
    records = [{"value": f"t{i}".encode(), "partition": 0, "timestamp": base_ms + i * 1000}
               for i in range(10)]
    reports = produce(broker.bootstrap, topic, records, {"linger.ms": 200})
    assert [r.offset for r in reports] == list(range(10))
    targets = [base_ms, base_ms + 3000, base_ms + 6500, base_ms + 20000]
    assert _offsets_for_times(broker.bootstrap, topic, targets) == [0, 3, 7, -1]


def test_offsets_beginning_and_end_via_list_offsets(broker, topic):
    """Goal: a consumer assigned at OFFSET_BEGINNING on a partition with data starts at offset 0 and
    offsets_for_times(-1 / -2) style lookups agree with the watermarks."""
    produce(broker.bootstrap, topic, [{"value": b"v", "partition": 0} for _ in range(7)])
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_name("le")})
    try:
        [latest] = consumer.offsets_for_times([TopicPartition(topic, 0, OFFSET_END)], timeout=10)
        [earliest] = consumer.offsets_for_times([TopicPartition(topic, 0, OFFSET_BEGINNING)], timeout=10)
    finally:
        consumer.close()
    assert (earliest.offset, latest.offset) == (0, 7)


def test_fetch_out_of_range_offset_is_reported(broker, topic):
    """Goal: a consumer positioned past the end of the log (auto.offset.reset=error) gets an
    offset-out-of-range error rather than silence or data from elsewhere."""
    produce(broker.bootstrap, topic, [{"value": b"x", "partition": 0} for _ in range(10)])
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_name("oor"),
                         "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        consumer.assign([TopicPartition(topic, 0, 1000)])
        deadline = time.monotonic() + 15
        err = None
        while err is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is not None, f"got a record at offset {msg.offset()}"
                err = msg.error()
        assert err is not None, "no error for an offset past the end of the log"
        assert err.code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET), err
        assert "out of range" in err.str().lower(), err
    finally:
        consumer.close()


def test_produce_auto_creates_topic(broker):
    """Goal: with auto.create.topics.enable (the default, as in Kafka) producing to an unknown topic
    creates it with one partition and stores the record at offset 0."""
    name = unique_name("auto")
    reports = produce(broker.bootstrap, name, [{"value": b"first"}], {"acks": "all"})
    assert reports[0].error is None, reports[0].error
    assert (reports[0].partition, reports[0].offset) == (0, 0)
    meta = admin(broker.bootstrap).list_topics(timeout=10)
    assert sorted(meta.topics[name].partitions) == [0]
    assert [m.value for m in consume(broker.bootstrap, name, 1)] == [b"first"]
