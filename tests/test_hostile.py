"""Hostile clients (issue 11): each attack a buggy or malicious client can send with raw wire bytes,
against a broker of its own. Every test asserts

- the Kafka error the attack gets (or that its connection is closed),
- that the broker's peak resident memory stays under a stated bound,
- that the broker keeps serving a well-behaved client meanwhile, and
- that after a kill -9 and restart every acknowledged record and committed offset is intact
  (`Witness`: written before the attack, checked after the restart).

With STRATA_HOSTILE_REPORT=FILE each test appends one JSON line {attack, peak_rss_bytes, alive}
measured right after the attack and before any assertion, so the same suite measures an older
binary too (scripts/hostile-memory.sh prints the table before/after).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import hostile_wire as hw
import kafka_wire as wire
from helpers import admin, consume, create_topic, produce, unique_name

MIB = 1024 * 1024
GIB = 1024 * MIB

# Error codes (Kafka's protocol table).
NONE = 0
INVALID_TOPIC_EXCEPTION = 17
TOPIC_AUTHORIZATION_FAILED = 29
INVALID_GROUP_ID = 24
INVALID_CONFIG = 40

WITNESS_RECORDS = 50


def peak_rss_bytes(broker) -> int:
    """The broker process's peak resident memory so far (VmHWM)."""
    with open(f"/proc/{broker.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def open_fds(broker) -> int:
    return len(os.listdir(f"/proc/{broker.proc.pid}/fd"))


def report(attack: str, broker) -> int | None:
    """Records the attack's peak RSS (before any assertion) and returns it (None if the broker died)."""
    alive = broker.alive()
    rss = peak_rss_bytes(broker) if alive else None
    path = os.environ.get("STRATA_HOSTILE_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"attack": attack, "peak_rss_bytes": rss, "alive": alive}) + "\n")
    return rss


def assert_rss_below(rss: int | None, bound: int, broker) -> None:
    assert rss is not None, f"the broker died:\n{broker.log_tail()}"
    assert rss < bound, f"peak RSS {rss / MIB:.0f} MiB, bound {bound / MIB:.0f} MiB"


class Witness:
    """Acknowledged records and a committed offset written before an attack; `check` restarts the
    broker (kill -9) and reads them back."""

    def __init__(self, broker):
        self.broker = broker
        self.topic = unique_name("witness")
        self.group = unique_name("witness-group")
        create_topic(broker.bootstrap, self.topic)
        self.values = [f"witness-{i}".encode() for i in range(WITNESS_RECORDS)]
        reports = produce(broker.bootstrap, self.topic,
                          [{"value": v, "partition": 0} for v in self.values],
                          {"acks": "all", "enable.idempotence": True})
        assert all(r.error is None for r in reports)
        self.offsets = [r.offset for r in reports]
        consumer = self._consumer()
        consumer.commit(offsets=[TopicPartition(self.topic, 0, 17)], asynchronous=False)
        consumer.close()

    def _consumer(self) -> Consumer:
        return Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": self.group,
                         "enable.auto.commit": False})

    def committed(self) -> int:
        consumer = self._consumer()
        try:
            [tp] = consumer.committed([TopicPartition(self.topic, 0)], timeout=15)
            return tp.offset
        finally:
            consumer.close()

    def check(self) -> None:
        """kill -9, restart, and every witness record and the committed offset are intact."""
        assert self.broker.alive(), f"the broker died during the attack:\n{self.broker.log_tail()}"
        self.broker.restart()
        got = consume(self.broker.bootstrap, self.topic, WITNESS_RECORDS)
        assert [m.value for m in got] == self.values
        assert [m.offset for m in got] == self.offsets
        assert self.committed() == 17


def assert_serving(broker) -> None:
    """A well-behaved client is served: a new topic takes an acks=all record and gives it back."""
    assert broker.alive(), f"the broker died:\n{broker.log_tail()}"
    name = unique_name("alive")
    create_topic(broker.bootstrap, name)
    reports = produce(broker.bootstrap, name, [{"value": b"still here", "partition": 0}],
                      {"acks": "all"})
    assert reports[0].error is None
    assert [m.value for m in consume(broker.bootstrap, name, 1)] == [b"still here"]


def raw_produce(broker, topic: str, batch: bytes, correlation_id: int = 1) -> int:
    """Sends one Produce v3 (acks=all) of `batch` and returns the partition's error code."""
    with wire.RawConnection(broker.bootstrap, timeout_s=30) as conn:
        conn.send(wire.produce_v3(correlation_id, topic, 0, batch))
        payload = conn.read_frame()
    assert payload is not None, "the broker closed the connection instead of answering"
    _, [result] = wire.parse_produce_v3_response(payload)
    return result.error_code


# ---- 1. Unbounded decompression and allocation on read paths ----

@pytest.mark.parametrize("bomb", ["zstd-1GiB", "zstd-8GiB", "headers-2^31-1"])
def test_list_offsets_by_time_on_a_bomb(own_broker, bomb):
    """Goal: ListOffsets by timestamp that lands on a batch that decompresses to gigabytes (or whose
    record claims 2^31-1 headers) answers, and the broker stays under 768 MiB (it decoded the batch
    with kafka-protocol's unbounded decoder before: 2 GiB, 4 GiB, an abort)."""
    witness = Witness(own_broker)
    topic = unique_name("bomb")
    create_topic(own_broker.bootstrap, topic)
    now_ms = int(time.time() * 1000)
    batch = {
        "zstd-1GiB": lambda: hw.zstd_bomb_batch(1 * GIB, now_ms),
        "zstd-8GiB": lambda: hw.zstd_bomb_batch(8 * GIB, now_ms),
        "headers-2^31-1": lambda: hw.header_count_bomb_batch(2**31 - 1, now_ms),
    }[bomb]()
    produce_error = raw_produce(own_broker, topic, batch)
    answers = []
    if produce_error == NONE:
        for correlation_id in range(3):  # repeated: a leak would add up
            with wire.RawConnection(own_broker.bootstrap, timeout_s=60) as conn:
                conn.send(hw.list_offsets_v1(correlation_id, topic, 0, now_ms - 1000))
                answers.append(conn.read_frame())
    rss = report(f"list-offsets-{bomb}", own_broker)
    assert_rss_below(rss, 768 * MIB, own_broker)
    for payload in answers:
        assert payload is not None, "ListOffsets closed the connection instead of answering"
        _, error_code, _, offset = hw.parse_list_offsets_v1(payload)
        # Either an error for the batch or the batch-level answer (offset 0): never a crash.
        assert error_code != NONE or offset == 0
    assert_serving(own_broker)
    witness.check()


# ---- 2. Internal topics are the broker's ----

def forged_offset_batch(group: str, topic: str, offset: int) -> bytes:
    """An __consumer_offsets record (Kafka's key v1 / value v3) setting `group`'s offset."""
    key = struct.pack(">h", 1) + wire.kstring(group) + wire.kstring(topic) + struct.pack(">i", 0)
    value = struct.pack(">hqi", 3, offset, -1) + wire.kstring("") + struct.pack(">q", 0)
    body = bytes([0]) + wire.zigzag_varint(0) + wire.zigzag_varint(0)
    body += wire.zigzag_varint(len(key)) + key + wire.zigzag_varint(len(value)) + value
    body += wire.zigzag_varint(0)
    return hw.batch_v2(wire.zigzag_varint(len(body)) + body, records_count=1)


def test_produce_to_consumer_offsets_is_refused(own_broker):
    """Goal: a client cannot write __consumer_offsets: a forged commit for another group and a batch
    the replay cannot decode are both refused with INVALID_TOPIC_EXCEPTION (Kafka's answer), the
    group's offset is unchanged, and the broker restarts."""
    witness = Witness(own_broker)
    forged = raw_produce(own_broker, "__consumer_offsets",
                         forged_offset_batch(witness.group, witness.topic, 999_999))
    garbage = raw_produce(own_broker, "__consumer_offsets",
                          hw.batch_v2(b"\xff" * 64, records_count=3), correlation_id=2)
    report("produce-consumer-offsets", own_broker)
    assert forged == INVALID_TOPIC_EXCEPTION
    assert garbage == INVALID_TOPIC_EXCEPTION
    assert witness.committed() == 17
    witness.check()


def test_delete_and_create_of_internal_topics_are_refused(own_broker):
    """Goal: DeleteTopics and CreateTopics of __consumer_offsets fail (committed offsets survive);
    a name Kafka reserves for its own state (`__transaction_state`) cannot be created by a client."""
    witness = Witness(own_broker)
    client = admin(own_broker.bootstrap)
    deleted = client.delete_topics(["__consumer_offsets"], operation_timeout=10)
    with pytest.raises(Exception) as refused_delete:
        deleted["__consumer_offsets"].result(timeout=20)
    created = client.create_topics([NewTopic("__consumer_offsets", 3, 1),
                                    NewTopic("__transaction_state", 1, 1)], operation_timeout=10)
    for name, future in created.items():
        with pytest.raises(Exception):
            future.result(timeout=20)
    report("delete-create-internal", own_broker)
    assert refused_delete.value.args[0].code() == INVALID_TOPIC_EXCEPTION, refused_delete.value
    listed = client.list_topics(timeout=10).topics
    assert "__transaction_state" not in listed
    assert witness.committed() == 17
    witness.check()


# ---- 3. Fetch memory ----

def fill_topic(broker, topic: str, megabytes: int) -> None:
    value = os.urandom(16 * 1024)
    records = [{"value": value, "partition": 0} for _ in range(megabytes * 64)]
    reports = produce(broker.bootstrap, topic, records,
                      {"acks": "1", "linger.ms": 20, "batch.size": 1_000_000,
                       "compression.type": "none"}, flush_timeout_s=120)
    assert all(r.error is None for r in reports)


def read_frame_length(sock: socket.socket) -> int | None:
    """Reads one response frame, discarding its body; returns its length (None on close)."""
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (length,) = struct.unpack(">i", head)
    left = length
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        left -= len(chunk)
    return length


def test_fetch_response_is_capped_by_fetch_max_bytes(make_broker):
    """Goal: 10 connections each asking Fetch for 2^31-1 bytes get at most fetch.max.bytes (55 MiB,
    Kafka's default) each, and the broker stays under 10 x 55 MiB + 384 MiB (it answered each
    with the whole 150 MB log before: 4.8 GiB for 10)."""
    broker = make_broker()
    witness = Witness(broker)
    topic = unique_name("big")
    create_topic(broker.bootstrap, topic)
    fill_topic(broker, topic, 150)
    lengths: list[int | None] = []
    socks = [socket.create_connection(("127.0.0.1", broker.port), timeout=60) for _ in range(10)]
    for i, sock in enumerate(socks):
        sock.sendall(hw.fetch_v4(i, topic, 0, 0, 2**31 - 1, 2**31 - 1))
    for sock in socks:
        lengths.append(read_frame_length(sock))
        sock.close()
    rss = report("fetch-2^31-1-x10", broker)
    assert_rss_below(rss, 10 * 55 * MIB + 384 * MIB, broker)
    assert all(length is not None for length in lengths)
    assert max(lengths) <= 55 * MIB + 64 * 1024, f"a Fetch answer of {max(lengths)} bytes"
    assert min(lengths) > 1 * MIB, "the capped answers still carry records"
    witness.check()


def test_unread_pipelined_fetches_are_bounded(make_broker):
    """Goal: one connection that pipelines 300 large Fetch requests and never reads its answers pins
    a bounded amount of broker memory (under 1 GiB; it held 5.3 GiB before), and other clients are
    served meanwhile."""
    broker = make_broker()
    witness = Witness(broker)
    topic = unique_name("big")
    create_topic(broker.bootstrap, topic)
    fill_topic(broker, topic, 100)
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent = 0
    try:
        for i in range(300):
            sock.sendall(hw.fetch_v4(i, topic, 0, 0, 2**31 - 1, 2**31 - 1))
            sent += 1
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass  # the broker stopped reading from us: that is the back-pressure we want
    time.sleep(3)
    assert_serving(broker)
    rss = report("fetch-pipelined-unread", broker)
    sock.close()
    assert_rss_below(rss, 1 * GIB, broker)
    assert sent >= 1
    witness.check()


# ---- 4. Connections ----

def test_stalled_frames_are_bounded_and_closed(make_broker):
    """Goal: 1,000 connections each sending 999,999 bytes of a 1,000,000-byte frame and then
    stalling do not pin a gigabyte (before: 1 MiB each, forever): with max.connections=400 the rest
    are closed at once, the broker keeps its memory under 768 MiB (400 x 1 MiB frames at most),
    closes the stalled ones when the frame deadline (3 s) passes, and serves others meanwhile."""
    broker = make_broker(extra_args=["--socket-request-read-timeout-ms", "3000",
                                     "--max-connections", "400"])
    witness = Witness(broker)
    chunk = struct.pack(">i", 1_000_000) + b"\x00" * 999_999
    socks = []
    for _ in range(1000):
        try:
            sock = socket.create_connection(("127.0.0.1", broker.port), timeout=2)
            sock.settimeout(0.5)
            try:
                sock.sendall(chunk)
            except (socket.timeout, BrokenPipeError, ConnectionResetError):
                pass
            socks.append(sock)
        except OSError:
            break  # refused: max.connections at work
    rss = report("stalled-frames-x1000", broker)
    assert_serving(broker)
    time.sleep(5)
    closed = 0
    for sock in socks:
        try:
            sock.settimeout(0.2)
            if sock.recv(1) == b"":
                closed += 1
        except (ConnectionResetError, BrokenPipeError):
            closed += 1
        except socket.timeout:
            pass
        sock.close()
    assert_rss_below(rss, 768 * MIB, broker)
    assert closed == len(socks), f"{len(socks) - closed} stalled connections still open"
    witness.check()


def test_idle_connections_are_closed(make_broker):
    """Goal: a connection that sends nothing is closed after connections.max.idle.ms."""
    broker = make_broker(extra_args=["--connections-max-idle-ms", "1000"])
    with wire.RawConnection(broker.bootstrap, timeout_s=10) as idle:
        started = time.monotonic()
        assert idle.closed_by_peer()
        waited = time.monotonic() - started
    report("idle-connection", broker)
    assert 0.5 < waited < 8, f"closed after {waited:.1f} s"
    assert_serving(broker)


def test_connection_limits_per_ip(make_broker):
    """Goal: with max.connections.per.ip=50, a client on 127.0.0.2 that opens 200 connections keeps
    at most 50, and a client on 127.0.0.1 is still served."""
    broker = make_broker(extra_args=["--max-connections-per-ip", "50"])
    socks = []
    for _ in range(200):
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", broker.port))
            socks.append(sock)
        except OSError:
            sock.close()
    time.sleep(1)
    open_count = 0
    for sock in socks:
        try:
            sock.settimeout(0.2)
            if sock.recv(1) != b"":
                open_count += 1
        except socket.timeout:
            open_count += 1
        except (ConnectionResetError, BrokenPipeError):
            pass
    report("connections-per-ip", broker)
    assert_serving(broker)
    for sock in socks:
        sock.close()
    assert open_count <= 50, f"{open_count} connections from one ip kept open"


def test_running_out_of_descriptors_is_back_pressure(make_broker):
    """Goal: when the broker's file descriptors run out (here: RLIMIT_NOFILE lowered to 256 and 400
    connections opened), it refuses connections and operations instead of aborting (it treated
    EMFILE on a directory open as an fsync failure and aborted); once the connections go away it
    serves again and restarts with everything acknowledged."""
    broker = make_broker()
    witness = Witness(broker)
    subprocess.run(["prlimit", f"--pid={broker.proc.pid}", "--nofile=256:256"], check=True)
    socks = []
    for _ in range(400):
        try:
            socks.append(socket.create_connection(("127.0.0.1", broker.port), timeout=1))
        except OSError:
            pass
    # Work that opens files while descriptors are short: a new topic (directories, segment files,
    # directory fsyncs) and acks=all produce to it; it may fail, the broker must not die.
    try:
        client = AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 5000})
        client.create_topics([NewTopic(unique_name("starved"), 8, 1)], operation_timeout=5)
    except Exception:  # noqa: BLE001 - any client-side failure is fine here
        pass
    time.sleep(2)
    alive_while_starved = broker.alive()
    report("emfile", broker)
    for sock in socks:
        sock.close()
    assert alive_while_starved, f"the broker died when descriptors ran out:\n{broker.log_tail()}"
    time.sleep(1)
    assert_serving(broker)
    witness.check()


# ---- 5. Descriptors per segment ----

def test_tiny_segment_bytes_is_refused(own_broker):
    """Goal: segment.bytes below Kafka 4's minimum (1 MiB) is INVALID_CONFIG: a topic rolling on
    every produce is not the client's to ask for."""
    client = admin(own_broker.bootstrap)
    futures = client.create_topics([NewTopic(unique_name("tiny"), 1, 1,
                                             config={"segment.bytes": "14"})], operation_timeout=10)
    [future] = futures.values()
    with pytest.raises(Exception) as refused:
        future.result(timeout=20)
    report("segment-bytes-14", own_broker)
    assert "INVALID_CONFIG" in str(refused.value) or "segment.bytes" in str(refused.value)


# ---- 6. Identifiers are never cut ----

@pytest.mark.parametrize("unit", ["x", "é"])
def test_over_long_group_id_is_refused(own_broker, unit):
    """Goal: OffsetCommit with a 40,000-byte group id (ASCII, or 2-byte UTF-8 characters) is refused
    with INVALID_GROUP_ID instead of being cut to 32,767 bytes, so it cannot overwrite the offset
    of the group its prefix names."""
    witness = Witness(own_broker)
    group = (unit * (40_000 // len(unit.encode()))).encode()
    with wire.RawConnection(own_broker.bootstrap) as conn:
        conn.send(hw.offset_commit_v8(5, group, witness.topic, 0, 12345))
        payload = conn.read_frame()
    report(f"group-id-40000-{'ascii' if unit == 'x' else 'utf8'}", own_broker)
    assert payload is not None, "the broker closed the connection instead of answering"
    correlation_id, error_code = hw.parse_offset_commit_v8(payload)
    assert correlation_id == 5
    assert error_code == INVALID_GROUP_ID
    witness.check()


# ---- 7. Admin work does not block the broker ----

def test_large_create_topics_does_not_freeze_other_clients(make_broker):
    """Goal: while two CreateTopics of 3,000 partitions each run (admin requests queue behind each
    other), another client's acks=all produce to an existing topic is answered within 2 s each
    (a second create froze every client for 31 s before)."""
    broker = make_broker()
    witness = Witness(broker)
    small = unique_name("small")
    create_topic(broker.bootstrap, small)
    outcomes: list = []

    def create_big():
        client = AdminClient({"bootstrap.servers": broker.bootstrap})
        try:
            futures = client.create_topics([NewTopic(unique_name("huge"), 3000, 1)],
                                           operation_timeout=300, request_timeout=300)
            [future] = futures.values()
            future.result(timeout=300)
            outcomes.append(True)
        except Exception as error:  # noqa: BLE001
            outcomes.append(error)

    threads = [threading.Thread(target=create_big) for _ in range(2)]
    for thread in threads:
        thread.start()
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    latencies = []
    while any(thread.is_alive() for thread in threads) and len(latencies) < 500:
        started = time.monotonic()
        delivered: list = []
        producer.produce(small, b"x", partition=0, on_delivery=lambda e, m: delivered.append(e))
        producer.flush(30)
        assert delivered == [None], delivered
        latencies.append(time.monotonic() - started)
    for thread in threads:
        thread.join(timeout=300)
    report("create-3000-partitions-x2", broker)
    assert outcomes == [True, True], outcomes
    assert latencies, "the creates finished before any produce was answered"
    assert max(latencies) < 2.0, f"slowest produce during the creates: {max(latencies):.1f} s"
    witness.check()
