"""Hand-built Kafka wire bytes for the bad-input tests: frames, request headers, ApiVersions v0,
ProduceRequest v3 with a record batch v2 (CRC-32C computed here, so it can be corrupted on purpose)."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of Kafka record batches v2."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value


def zigzag_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def kstring(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def request_header_v1(api_key: int, api_version: int, correlation_id: int, client_id: str = "strata-it") -> bytes:
    return struct.pack(">hhi", api_key, api_version, correlation_id) + kstring(client_id)


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def api_versions_v0(correlation_id: int) -> bytes:
    return frame(request_header_v1(18, 0, correlation_id))


def record_v2(offset_delta: int, timestamp_delta: int, key: bytes | None, value: bytes | None) -> bytes:
    body = bytes([0])  # attributes
    body += zigzag_varint(timestamp_delta) + zigzag_varint(offset_delta)
    body += zigzag_varint(-1) if key is None else zigzag_varint(len(key)) + key
    body += zigzag_varint(-1) if value is None else zigzag_varint(len(value)) + value
    body += zigzag_varint(0)  # no headers
    return zigzag_varint(len(body)) + body


def record_batch_v2(values: list[bytes], base_timestamp_ms: int, corrupt_crc: bool = False) -> bytes:
    """An uncompressed, non-idempotent record batch v2 holding `values` (keys null)."""
    records = b"".join(record_v2(i, 0, None, v) for i, v in enumerate(values))
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, base_timestamp_ms, base_timestamp_ms,
                            -1, -1, -1, len(values)) + records
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0x1
    # batchLength counts from partitionLeaderEpoch to the end.
    batch_length = 4 + 1 + 4 + len(after_crc)
    return struct.pack(">qiibI", 0, batch_length, -1, 2, crc) + after_crc


def produce_v3(correlation_id: int, topic: str, partition: int, records: bytes, acks: int = -1,
               timeout_ms: int = 10000) -> bytes:
    body = kstring(None)  # transactional_id
    body += struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition)
    body += struct.pack(">i", len(records)) + records
    return frame(request_header_v1(0, 3, correlation_id) + body)


@dataclass
class ProducePartitionResult:
    topic: str
    partition: int
    error_code: int
    base_offset: int


def parse_produce_v3_response(payload: bytes) -> tuple[int, list[ProducePartitionResult]]:
    """(correlation id, per-partition results) of a ProduceResponse v3 (header v0)."""
    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize(fmt)
        values = struct.unpack_from(fmt, payload, pos)
        pos += size
        return values

    (correlation_id,) = take(">i")
    results = []
    (topics,) = take(">i")
    for _ in range(topics):
        (name_len,) = take(">h")
        name = payload[pos:pos + name_len].decode()
        pos += name_len
        (parts,) = take(">i")
        for _ in range(parts):
            index, error_code, base_offset, _log_append_time = take(">ihqq")
            results.append(ProducePartitionResult(name, index, error_code, base_offset))
    return correlation_id, results


def parse_api_versions_v0_response(payload: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """(correlation id, error code, {api_key: (min, max)}) of an ApiVersionsResponse v0."""
    correlation_id, error_code, count = struct.unpack_from(">ihi", payload, 0)
    ranges = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", payload, 10 + 6 * i)
        ranges[key] = (lo, hi)
    return correlation_id, error_code, ranges


class RawConnection:
    """A plain TCP connection to the broker that sends bytes and reads length-prefixed frames."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.timeout_s = timeout_s

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int, deadline: float) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def read_frame(self) -> bytes | None:
        """The next response payload, or None if the broker closed the connection. Raises
        socket.timeout if the broker neither answers nor closes within the timeout."""
        deadline = time.monotonic() + self.timeout_s
        try:
            head = self._recv_exact(4, deadline)
            if head is None:
                return None
            (length,) = struct.unpack(">i", head)
            assert 0 <= length < 64 * 1024 * 1024, f"implausible response length {length}"
            return self._recv_exact(length, deadline)
        except (ConnectionResetError, BrokenPipeError):
            return None

    def closed_by_peer(self) -> bool:
        """True if the broker closed the connection (EOF or reset) before the timeout; False if it
        sent bytes instead. Raises socket.timeout if neither happened."""
        deadline = time.monotonic() + self.timeout_s
        try:
            while True:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                return False
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
