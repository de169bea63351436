"""Restart durability: what a broker acknowledged with acks=all survives `kill -9` and a restart on the
same data dir, at the acknowledged offsets, and the log keeps going after recovery."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Producer

from helpers import consume, create_topic, produce, unique_name, watermarks


def test_acked_records_survive_kill9(own_broker):
    """Goal: 2000 records acknowledged with acks=all are all present after kill -9 + restart, in order,
    each at the offset its delivery report gave; new records continue at the next offset."""
    name = unique_name("dur")
    create_topic(own_broker.bootstrap, name, partitions=2)
    n = 2000
    records = [{"key": f"k{i}".encode(), "value": f"durable-{i}".encode(), "partition": i % 2}
               for i in range(n)]
    reports = produce(own_broker.bootstrap, name, records, {"acks": "all", "linger.ms": 2})
    assert all(r.error is None for r in reports), [r.error for r in reports if r.error][:5]

    own_broker.restart()  # kill -9, then start on the same data dir and port

    for p in range(2):
        acked = sorted((r.offset, records[r.index]["value"]) for r in reports if r.partition == p)
        assert [o for o, _ in acked] == list(range(len(acked))), "acked offsets are not dense"
        got = consume(own_broker.bootstrap, name, len(acked), partition=p)
        assert [(m.offset, m.value) for m in got] == acked
        assert watermarks(own_broker.bootstrap, name, p) == (0, len(acked))

    more = produce(own_broker.bootstrap, name, [{"value": b"after restart", "partition": 0}], {"acks": "all"})
    assert more[0].error is None
    assert more[0].offset == n // 2


def test_acked_records_survive_kill9_during_produce(own_broker):
    """Goal: while a producer is busy (acks=all), kill -9 the broker: every record acknowledged before
    the kill is present after restart at its acknowledged offset (unacknowledged ones may or may not
    be), offsets stay dense, and producing works again."""
    name = unique_name("dur-live")
    create_topic(own_broker.bootstrap, name)
    acked: dict[int, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors = []

    def on_delivery(err, msg):
        if err is None:
            with lock:
                acked[msg.offset()] = msg.value()
        else:
            errors.append(err)

    producer = Producer({"bootstrap.servers": own_broker.bootstrap, "acks": "all", "linger.ms": 1,
                         "message.timeout.ms": 3000, "retries": 0, "enable.idempotence": False})

    def run():
        i = 0
        while not stop.is_set():
            try:
                for _ in range(20):  # bursts: keep many records in flight
                    producer.produce(name, value=f"live-{i}".encode(), partition=0, on_delivery=on_delivery)
                    i += 1
            except BufferError:
                pass
            producer.poll(0.001)
        producer.flush(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with lock:
            if len(acked) >= 20000:
                break
        time.sleep(0.05)
    own_broker.kill9()
    with lock:
        acked_before_kill = dict(acked)
    stop.set()
    thread.join(timeout=20)
    assert len(acked_before_kill) >= 100, "the producer made too little progress before the kill"
    print(f"{len(acked_before_kill)} records acknowledged before kill -9, {len(errors)} failed after")

    own_broker.start()
    _, high = watermarks(own_broker.bootstrap, name)
    top = max(acked_before_kill)
    assert high > top, f"high watermark {high} after restart, but offset {top} was acknowledged"
    got = consume(own_broker.bootstrap, name, high)
    assert [m.offset for m in got[:high]] == list(range(high)), "offsets are not dense after recovery"
    by_offset = {m.offset: m.value for m in got}
    lost = [o for o, v in acked_before_kill.items() if by_offset.get(o) != v]
    assert not lost, f"{len(lost)} acknowledged records lost or changed, e.g. offsets {sorted(lost)[:10]}"

    after = produce(own_broker.bootstrap, name, [{"value": b"after", "partition": 0}], {"acks": "all"})
    assert after[0].error is None and after[0].offset == high


def test_topics_and_configs_survive_restart(own_broker):
    """Goal: topics (with partition counts) and topic config overrides are still there after kill -9
    and restart."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    from helpers import admin

    name = unique_name("dur-meta")
    create_topic(own_broker.bootstrap, name, partitions=3, config={"retention.ms": "123456"})
    own_broker.restart()
    client = admin(own_broker.bootstrap)
    meta = client.list_topics(timeout=10)
    assert name in meta.topics
    assert sorted(meta.topics[name].partitions) == [0, 1, 2]
    resource = ConfigResource(ResourceType.TOPIC, name)
    configs = client.describe_configs([resource])[resource].result(timeout=15)
    assert configs["retention.ms"].value == "123456"


def test_graceful_shutdown_keeps_everything(own_broker):
    """Goal: after SIGTERM (graceful stop) and restart, every record produced with acks=1 (not
    necessarily fsynced when acknowledged) is present: shutdown flushes."""
    name = unique_name("dur-term")
    create_topic(own_broker.bootstrap, name)
    records = [{"value": f"term-{i}".encode(), "partition": 0} for i in range(1000)]
    reports = produce(own_broker.bootstrap, name, records, {"acks": "1"})
    assert [r.offset for r in reports] == list(range(1000))
    code = own_broker.stop()
    assert code == 0, f"strata serve exited with {code} on SIGTERM"
    own_broker.start()
    got = consume(own_broker.bootstrap, name, 1000)
    assert [m.value for m in got] == [r["value"] for r in records]
