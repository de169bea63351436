"""Wire bytes for the hostile-client suite (test_hostile.py): record batches with any attributes
and records section (compression bombs, lying counts), and the few requests the suite sends raw
because real clients refuse to send such values: ListOffsets v1, Fetch v4, OffsetCommit v8
(flexible: compact strings longer than 32,767 bytes).

Builds on kafka_wire.py (frames, CRC-32C, varints, the v1 request header)."""

from __future__ import annotations

import struct

import kafka_wire as wire

ZSTD_CODEC = 4
ZSTD_BLOCK_BYTES_MAX = 128 * 1024


def batch_v2(records_section: bytes, *, records_count: int, last_offset_delta: int = 0,
             attributes: int = 0, base_timestamp_ms: int = 0, max_timestamp_ms: int = 0) -> bytes:
    """A record batch v2 around any records section, with a correct CRC-32C (so the broker's
    framing and CRC checks accept it and only a decoder meets what is inside)."""
    after_crc = struct.pack(">hiqqqhii", attributes, last_offset_delta, base_timestamp_ms,
                            max_timestamp_ms, -1, -1, -1, records_count) + records_section
    batch_length = 4 + 1 + 4 + len(after_crc)
    return struct.pack(">qiibI", 0, batch_length, -1, 2, wire.crc32c(after_crc)) + after_crc


def zstd_zeros_frame(decompressed_bytes: int) -> bytes:
    """A zstd frame that decompresses to `decompressed_bytes` zero bytes, made of RLE blocks (4 bytes
    per 128 KiB): a 1 MiB frame stands for 32 GiB. No frame content size, no checksum, so a decoder
    only learns the size by decompressing."""
    assert decompressed_bytes > 0
    out = bytearray(struct.pack("<I", 0xFD2FB528))
    out.append(0x00)  # frame header descriptor: no content size, not single-segment, no checksum
    out.append(7 << 3)  # window descriptor: 2^(10 + 7) = 128 KiB window
    left = decompressed_bytes
    while left > 0:
        size = min(left, ZSTD_BLOCK_BYTES_MAX)
        left -= size
        last = 1 if left == 0 else 0
        header = last | (1 << 1) | (size << 3)  # block type 1 = RLE
        out += struct.pack("<I", header)[:3]
        out.append(0x00)  # the repeated byte
    return bytes(out)


def zstd_bomb_batch(decompressed_bytes: int, timestamp_ms: int) -> bytes:
    """A zstd batch claiming one record whose records section decompresses to zeros."""
    return batch_v2(zstd_zeros_frame(decompressed_bytes), records_count=1, attributes=ZSTD_CODEC,
                    base_timestamp_ms=timestamp_ms, max_timestamp_ms=timestamp_ms)


def header_count_bomb_batch(header_count: int, timestamp_ms: int) -> bytes:
    """An uncompressed batch of one record that claims `header_count` headers and holds none
    (a decoder that reserves room for the claimed count asks for gigabytes)."""
    body = bytes([0]) + wire.zigzag_varint(0) + wire.zigzag_varint(0)  # attributes, ts, offset
    body += wire.zigzag_varint(-1) + wire.zigzag_varint(1) + b"v"  # null key, value "v"
    body += wire.zigzag_varint(header_count)
    record = wire.zigzag_varint(len(body)) + body
    return batch_v2(record, records_count=1, base_timestamp_ms=timestamp_ms,
                    max_timestamp_ms=timestamp_ms)


def list_offsets_v1(correlation_id: int, topic: str, partition: int, timestamp_ms: int) -> bytes:
    body = struct.pack(">i", -1)  # replica id
    body += struct.pack(">i", 1) + wire.kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">iq", partition, timestamp_ms)
    return wire.frame(wire.request_header_v1(2, 1, correlation_id) + body)


def parse_list_offsets_v1(payload: bytes) -> tuple[int, int, int, int]:
    """(correlation id, error code, timestamp, offset) of a one-partition ListOffsets v1 answer."""
    (correlation_id, _topics, name_len) = struct.unpack_from(">iih", payload, 0)
    pos = 10 + name_len
    (_partitions, _index, error_code, timestamp, offset) = struct.unpack_from(">iihqq", payload, pos)
    return correlation_id, error_code, timestamp, offset


def fetch_v4(correlation_id: int, topic: str, partition: int, offset: int, max_bytes: int,
             partition_max_bytes: int, max_wait_ms: int = 0) -> bytes:
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, max_bytes, 0)
    body += struct.pack(">i", 1) + wire.kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, partition_max_bytes)
    return wire.frame(wire.request_header_v1(1, 4, correlation_id) + body)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def compact_string(raw: bytes | None) -> bytes:
    return uvarint(0) if raw is None else uvarint(len(raw) + 1) + raw


def offset_commit_v8(correlation_id: int, group: bytes, topic: str, partition: int, offset: int,
                     metadata: bytes | None = None) -> bytes:
    """OffsetCommit v8 (flexible) of one offset, generation -1 (a commit outside a live group)."""
    header = struct.pack(">hhi", 8, 8, correlation_id) + wire.kstring("strata-it") + uvarint(0)
    body = compact_string(group) + struct.pack(">i", -1) + compact_string(b"") + compact_string(None)
    body += uvarint(2) + compact_string(topic.encode())
    body += uvarint(2) + struct.pack(">iqi", partition, offset, -1) + compact_string(metadata)
    body += uvarint(0) + uvarint(0) + uvarint(0)  # partition, topic and body tagged fields
    return wire.frame(header + body)


def read_uvarint(payload: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = payload[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def parse_offset_commit_v8(payload: bytes) -> tuple[int, int]:
    """(correlation id, error code of the one partition) of an OffsetCommit v8 answer."""
    (correlation_id,) = struct.unpack_from(">i", payload, 0)
    _tags, pos = read_uvarint(payload, 4)
    pos += 4  # throttle time
    _topics, pos = read_uvarint(payload, pos)
    name_len, pos = read_uvarint(payload, pos)
    pos += name_len - 1
    _partitions, pos = read_uvarint(payload, pos)
    (_index, error_code) = struct.unpack_from(">ih", payload, pos)
    return correlation_id, error_code
