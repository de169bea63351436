"""Bad input on the wire: garbage, truncated and oversized frames, unknown APIs and versions, a batch
with a wrong CRC, a record above message.max.bytes. The broker answers with an error or closes that
one connection, and keeps serving everyone else."""

from __future__ import annotations

import random
import socket
import struct
import time

import pytest
from confluent_kafka import KafkaError

import kafka_wire as wire
from helpers import consume, create_topic, produce, unique_name, watermarks


def assert_still_serving(broker) -> None:
    """The broker process is alive, answers ApiVersions on a new connection, and a real client can
    produce and consume."""
    assert broker.alive(), f"broker died:\n{broker.log_tail()}"
    with wire.RawConnection(broker.bootstrap) as conn:
        conn.send(wire.api_versions_v0(4242))
        payload = conn.read_frame()
        assert payload is not None, "ApiVersions v0 on a fresh connection: connection closed"
        correlation_id, error_code, ranges = wire.parse_api_versions_v0_response(payload)
        assert (correlation_id, error_code) == (4242, 0)
        assert 0 in ranges and 1 in ranges and 3 in ranges  # Produce, Fetch, Metadata
    name = unique_name("alive")
    create_topic(broker.bootstrap, name)
    reports = produce(broker.bootstrap, name, [{"value": b"still here", "partition": 0}], {"acks": "all"})
    assert reports[0].error is None and reports[0].offset == 0
    assert [m.value for m in consume(broker.bootstrap, name, 1)] == [b"still here"]


def peak_rss_bytes(broker) -> int | None:
    """The broker process's peak resident memory (VmHWM), if it is a local process."""
    proc = getattr(broker, "proc", None)
    if proc is None:
        return None
    with open(f"/proc/{proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def closed_or_answered(conn: wire.RawConnection, correlation_id: int) -> str:
    """'closed' if the broker closed the connection, 'answered' if it sent a response frame with the
    request's correlation id. Fails if it did neither within the timeout."""
    try:
        payload = conn.read_frame()
    except socket.timeout:
        pytest.fail("the broker neither answered nor closed the connection within the timeout")
    if payload is None:
        return "closed"
    (got,) = struct.unpack_from(">i", payload, 0)
    assert got == correlation_id, f"response with correlation id {got}, expected {correlation_id}"
    return "answered"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_garbage_frame(own_broker, seed):
    """Goal: a well-framed request made of random bytes gets an error answer or a closed connection,
    and the broker keeps serving."""
    rng = random.Random(seed)
    garbage = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096)))
    with wire.RawConnection(own_broker.bootstrap) as conn:
        conn.send(wire.frame(garbage))
        try:
            payload = conn.read_frame()
        except socket.timeout:
            pytest.fail("the broker neither answered nor closed the connection")
        if payload is not None:
            assert len(payload) >= 4  # some well-formed error response
    assert_still_serving(own_broker)


@pytest.mark.parametrize("seed", [7, 8])
def test_random_byte_stream(own_broker, seed):
    """Goal: a raw stream of random bytes (random length prefixes) does not crash or wedge the broker."""
    rng = random.Random(seed)
    data = bytes(rng.getrandbits(8) for _ in range(64 * 1024))
    with wire.RawConnection(own_broker.bootstrap, timeout_s=5) as conn:
        try:
            conn.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the broker already closed on us: fine
    assert_still_serving(own_broker)


def test_truncated_frame_then_close(own_broker):
    """Goal: a client that announces 100 bytes, sends 10 and disconnects leaves the broker serving."""
    for _ in range(20):
        with wire.RawConnection(own_broker.bootstrap) as conn:
            conn.send(struct.pack(">i", 100) + wire.request_header_v1(18, 0, 1)[:6])
    with wire.RawConnection(own_broker.bootstrap) as conn:  # and a lone half length prefix
        conn.send(b"\x00\x00")
    assert_still_serving(own_broker)


@pytest.mark.parametrize("length", [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2 * 1024 ** 3 - 4, 0])
def test_huge_or_invalid_length_prefix(own_broker, length):
    """Goal: a length prefix of ~2 GiB (or negative, or zero) is refused: the connection is closed
    without the broker allocating that much memory, and the broker keeps serving."""
    rss_before = peak_rss_bytes(own_broker)
    with wire.RawConnection(own_broker.bootstrap) as conn:
        conn.send(struct.pack(">I", length) + wire.request_header_v1(18, 0, 1))
        try:
            assert conn.closed_by_peer(), "the broker sent bytes instead of closing the connection"
        except socket.timeout:
            pytest.fail("the broker kept a connection with a bogus length prefix open (waiting for 2 GiB?)")
    rss_after = peak_rss_bytes(own_broker)
    if rss_before is not None and rss_after is not None:
        assert rss_after - rss_before < 256 * 1024 ** 2, f"peak RSS grew by {rss_after - rss_before} bytes"
    assert_still_serving(own_broker)


def test_unknown_api_key(own_broker):
    """Goal: a request with an API key Kafka does not define is answered with an error or closes the
    connection; the broker keeps serving."""
    with wire.RawConnection(own_broker.bootstrap) as conn:
        conn.send(wire.frame(wire.request_header_v1(9999, 0, 77) + b"\x00" * 16))
        closed_or_answered(conn, 77)
    assert_still_serving(own_broker)


@pytest.mark.parametrize("version", [99, 32767, -1])
def test_unsupported_produce_version(own_broker, version):
    """Goal: a Produce request with a version the broker does not support is answered with an error or
    closes the connection (never a crash); the broker keeps serving."""
    name = unique_name("badver")
    create_topic(own_broker.bootstrap, name)
    batch = wire.record_batch_v2([b"v"], int(time.time() * 1000))
    request = bytearray(wire.produce_v3(31, name, 0, batch))
    struct.pack_into(">h", request, 6, version)  # after length(4) + api_key(2)
    with wire.RawConnection(own_broker.bootstrap) as conn:
        conn.send(bytes(request))
        closed_or_answered(conn, 31)
    assert watermarks(own_broker.bootstrap, name) == (0, 0), "a record of the bad request was stored"
    assert_still_serving(own_broker)


def test_api_versions_lists_produce_v3(broker):
    """Goal: the broker advertises Produce v3 (the version the hand-built requests below use) and
    answers ApiVersions v0 with error 0."""
    with wire.RawConnection(broker.bootstrap) as conn:
        conn.send(wire.api_versions_v0(5))
        correlation_id, error_code, ranges = wire.parse_api_versions_v0_response(conn.read_frame())
    assert (correlation_id, error_code) == (5, 0)
    lo, hi = ranges[0]
    assert lo <= 3 <= hi, f"Produce versions {lo}..{hi}"


def test_hand_built_produce_and_corrupt_crc(broker, topic):
    """Goal: a hand-built ProduceRequest v3 with a valid batch is stored (error 0, offset 0); the same
    request with a wrong CRC gets CORRUPT_MESSAGE (2) and stores nothing; the connection stays usable."""
    now_ms = int(time.time() * 1000)
    good = wire.record_batch_v2([b"good-1", b"good-2"], now_ms)
    bad = wire.record_batch_v2([b"bad-1", b"bad-2"], now_ms, corrupt_crc=True)
    with wire.RawConnection(broker.bootstrap) as conn:
        conn.send(wire.produce_v3(1, topic, 0, good))
        correlation_id, results = wire.parse_produce_v3_response(conn.read_frame())
        assert correlation_id == 1
        assert [(r.topic, r.partition, r.error_code, r.base_offset) for r in results] == [(topic, 0, 0, 0)]

        conn.send(wire.produce_v3(2, topic, 0, bad))
        payload = conn.read_frame()
        assert payload is not None, "the broker closed the connection instead of answering CORRUPT_MESSAGE"
        correlation_id, results = wire.parse_produce_v3_response(payload)
        assert correlation_id == 2
        assert [(r.topic, r.partition, r.error_code) for r in results] == [(topic, 0, 2)]

        conn.send(wire.produce_v3(3, topic, 0, good))  # same connection still works
        correlation_id, results = wire.parse_produce_v3_response(conn.read_frame())
        assert (correlation_id, results[0].error_code, results[0].base_offset) == (3, 0, 2)

    got = consume(broker.bootstrap, topic, 4)
    assert [(m.offset, m.value) for m in got] == [(0, b"good-1"), (1, b"good-2"), (2, b"good-1"), (3, b"good-2")]
    assert watermarks(broker.bootstrap, topic) == (0, 4)


def test_record_larger_than_message_max_bytes(broker, topic):
    """Goal: a 12 MB record (the client's own limit raised so it is sent) is refused with
    MESSAGE_TOO_LARGE (10), nothing is stored, and a normal record afterwards is stored at offset 0."""
    big = b"\xab" * (12 * 1024 * 1024)
    reports = produce(broker.bootstrap, topic, [{"value": big, "partition": 0}],
                      {"message.max.bytes": 20_000_000, "message.timeout.ms": 30000, "acks": "all"},
                      flush_timeout_s=60)
    err = reports[0].error
    assert err is not None, "a 12 MB record was accepted"
    assert err.code() == KafkaError.MSG_SIZE_TOO_LARGE == 10, err
    assert watermarks(broker.bootstrap, topic) == (0, 0)
    small = produce(broker.bootstrap, topic, [{"value": b"small", "partition": 0}], {"acks": "all"})
    assert small[0].error is None and small[0].offset == 0
