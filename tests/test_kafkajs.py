"""kafkajs (Node.js, pinned in tests/kafkajs/package.json) against the broker: admin, producer
(keys, null values, binary headers, acks, gzip, idempotence, sendBatch), consumer groups
(subscribe/run, two members sharing a topic, resuming after committed offsets) and the admin offset
queries.

Each test runs one scenario of tests/kafkajs/scenarios.js in a node process; the scenario prints
what kafkajs observed as one JSON line, and the test asserts on it. Records are produced or read
back with confluent-kafka where that gives an independent check of what kafkajs did.
`scripts/setup-test-env.sh` installs kafkajs (`npm ci` in tests/kafkajs). To see kafkajs' requests,
run with KAFKAJS_LOG_LEVEL=DEBUG and `-s`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest

from helpers import consume, create_topic, produce, unique_name

KAFKAJS_DIR = Path(__file__).resolve().parent / "kafkajs"
SCENARIO_TIMEOUT_S = 50.0


def run_scenario(broker, name: str, args: dict) -> dict:
    """Runs `node scenarios.js NAME BOOTSTRAP -` (ARGS as JSON on stdin) and returns its JSON result; fails the test with
    kafkajs' stderr if the scenario threw or timed out."""
    node = shutil.which("node")
    assert node, "node is not installed (kafkajs tests need Node.js >= 18)"
    assert (KAFKAJS_DIR / "node_modules" / "kafkajs" / "package.json").is_file(), (
        "kafkajs is not installed: run `bash scripts/setup-test-env.sh` (npm ci in tests/kafkajs)")
    env = dict(os.environ)
    env["KAFKAJS_SCENARIO_DEADLINE_MS"] = str(int((SCENARIO_TIMEOUT_S - 5) * 1000))
    env.setdefault("KAFKAJS_NO_PARTITIONER_WARNING", "1")
    try:
        proc = subprocess.run(
            [node, "scenarios.js", name, broker.bootstrap, "-"], input=json.dumps(args).encode(),
            cwd=KAFKAJS_DIR, capture_output=True, timeout=SCENARIO_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as e:
        stderr = (e.stderr or b"").decode(errors="replace")
        raise AssertionError(f"kafkajs scenario {name} hung for {SCENARIO_TIMEOUT_S}s\n{stderr[-4000:]}")
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, (
        f"kafkajs scenario {name} exited {proc.returncode}\nstderr:\n{stderr[-6000:]}")
    lines = proc.stdout.decode().strip().splitlines()
    assert lines, f"kafkajs scenario {name} printed no result\nstderr:\n{stderr[-4000:]}"
    return json.loads(lines[-1])


def unhex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def by_partition(records: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        out[r["partition"]].append(r)
    return dict(out)


# ---------------------------------------------------------------------------------------------
# admin


def test_kafkajs_admin_topic_lifecycle(broker):
    """Goal: kafkajs' admin client manages topics: createTopics with configs answers true (and false
    for a topic that exists), listTopics lists it, fetchTopicMetadata shows its 3 partitions led by
    a broker, describeConfigs returns the configs given at creation, and after deleteTopics the
    topic is no longer listed."""
    topic = unique_name("kjs-adm")
    out = run_scenario(broker, "admin", {"topic": topic})

    assert out["created"] is True
    assert out["createdAgain"] is False, "creating an existing topic must not report a new topic"
    assert out["listed"] is True, f"{topic} missing from listTopics"
    [meta] = out["metadata"]
    assert meta["name"] == topic
    assert [p["partition"] for p in meta["partitions"]] == [0, 1, 2]
    for p in meta["partitions"]:
        assert p["error"] == 0, p
        assert p["leader"] >= 0 and p["replicas"] == [p["leader"]], p
    [config] = out["configs"]
    assert config["errorCode"] == 0 and config["name"] == topic
    assert config["entries"] == {"retention.ms": "3600000", "max.message.bytes": "2000000"}
    assert out["listedAfterDelete"] is False, f"{topic} still listed after deleteTopics"


# ---------------------------------------------------------------------------------------------
# producer


def record(partition: int, key: bytes | None, value: bytes | None, headers: dict | None = None) -> dict:
    """A record for scenarios.js (hex fields) that remembers its bytes for the assertions."""
    r = {"partition": partition, "key_hex": None if key is None else key.hex(),
         "value_hex": None if value is None else value.hex()}
    if headers:
        r["headers_hex"] = {k: v.hex() for k, v in headers.items()}
    return r


def assert_log_matches(broker, topic: str, partitions: int, sends: list[list[dict]], metas: list[list[dict]]):
    """Reads every partition back with confluent-kafka: each holds exactly the records sent to it,
    in send order, with keys, null values and headers intact; and each send's reported baseOffset is
    where its first record of that partition landed."""
    expected: dict[int, list[dict]] = defaultdict(list)
    for records, meta in zip(sends, metas, strict=True):
        base = {m["partition"]: int(m["baseOffset"]) for m in meta}
        for m in meta:
            assert m["errorCode"] == 0, m
        assert set(base) == {r["partition"] for r in records}, (base, records)
        for p in base:
            assert base[p] == len(expected[p]), (
                f"partition {p}: send reported baseOffset {base[p]}, but {len(expected[p])} records "
                "were already there")
        for r in records:
            expected[r["partition"]].append(r)
    for p in range(partitions):
        want = expected.get(p, [])
        got = consume(broker.bootstrap, topic, len(want), partition=p) if want else []
        assert [c.offset for c in got] == list(range(len(want))), f"partition {p} offsets"
        for r, c in zip(want, got, strict=True):
            assert c.key == unhex(r["key_hex"]), (p, c.offset)
            assert c.value == unhex(r["value_hex"]), (p, c.offset)
            want_headers = [(k, bytes.fromhex(v)) for k, v in r.get("headers_hex", {}).items()]
            assert (c.headers or []) == want_headers, (p, c.offset)


def test_kafkajs_producer_keys_null_values_headers_acks(broker):
    """Goal: records sent by kafkajs with acks=-1 and acks=1 (keys, a null value, a null key, text
    and binary headers) come back byte for byte, in order, at the offsets kafkajs was told."""
    topic = unique_name("kjs-prod")
    binary = bytes(range(256))
    send_all = [
        record(0, b"k0", b"v0", {"trace": b"abc", "bin": binary}),
        record(0, b"k1", None, {"tombstone": b"yes"}),  # a null value (tombstone)
        record(1, None, b"no key"),
        record(1, b"k3", b"\x00\xff" * 100, {"empty": b""}),
    ]
    send_leader = [record(p, f"a1-{p}-{i}".encode(), f"v-{p}-{i}".encode()) for p in (0, 1) for i in range(3)]
    out = run_scenario(broker, "produce", {
        "topic": topic, "partitions": 2,
        "sends": [
            {"acks": -1, "compression": "none", "records": send_all},
            {"acks": 1, "compression": "none", "records": send_leader},
        ],
    })
    assert_log_matches(broker, topic, 2, [send_all, send_leader], out["sends"])


def test_kafkajs_producer_gzip(broker):
    """Goal: GZIP-compressed sends from kafkajs (the only codec it ships) are stored and read back
    intact by another client, including headers and null values."""
    topic = unique_name("kjs-gzip")
    big = [record(0, f"key-{i}".encode(), (f"payload {i} " * 50).encode(), {"n": str(i).encode()})
           for i in range(200)]
    small = [record(1, b"x", None), record(1, None, b"\x01\x02\x03", {"bin": b"\x00\x80\xff"})]
    out = run_scenario(broker, "produce", {
        "topic": topic, "partitions": 2,
        "sends": [
            {"acks": -1, "compression": "gzip", "records": big},
            {"acks": 1, "compression": "gzip", "records": small},
        ],
    })
    assert_log_matches(broker, topic, 2, [big, small], out["sends"])


def test_kafkajs_idempotent_producer(broker):
    """Goal: kafkajs' idempotent producer (`idempotent: true`: InitProducerId, then sequence
    numbers) gets its sends accepted, each record stored once at consecutive offsets, with plain
    and gzip batches."""
    topic = unique_name("kjs-idem")
    sends = [
        [record(p, f"i{n}-{p}-{i}".encode(), f"v{n}-{p}-{i}".encode()) for p in (0, 1, 2) for i in range(4)]
        for n in range(3)
    ]
    out = run_scenario(broker, "produce", {
        "topic": topic, "partitions": 3,
        "idempotentSends": [
            {"compression": "none", "records": sends[0]},
            {"compression": "gzip", "records": sends[1]},
            {"compression": "none", "records": sends[2]},
        ],
    })
    assert len(out["idempotentSends"]) == 3
    assert_log_matches(broker, topic, 3, sends, out["idempotentSends"])


def test_kafkajs_send_batch_several_partitions(broker):
    """Goal: one producer.sendBatch spanning 4 partitions (after a plain send) reports one
    RecordMetadata per partition, and every partition holds exactly its records in order."""
    topic = unique_name("kjs-batch")
    first = [record(0, b"first", b"0")]
    batch = [record(p, f"b-{p}-{i}".encode(), f"batch {p} {i}".encode()) for i in range(5) for p in range(4)]
    out = run_scenario(broker, "produce", {
        "topic": topic, "partitions": 4,
        "sends": [{"acks": -1, "compression": "none", "records": first}],
        "batch": {"compression": "none", "records": batch},
    })
    assert sorted(m["partition"] for m in out["batch"]) == [0, 1, 2, 3]
    assert_log_matches(broker, topic, 4, [first, batch], [out["sends"][0], out["batch"]])


# ---------------------------------------------------------------------------------------------
# consumer groups


def test_kafkajs_consumer_reads_back_what_was_produced(broker):
    """Goal: a kafkajs group consumer (subscribe fromBeginning + run/eachMessage) receives every
    record confluent-kafka produced to a 3-partition topic exactly once, per partition in offset
    order, with keys, null values and binary headers intact."""
    topic = unique_name("kjs-cons")
    create_topic(broker.bootstrap, topic, partitions=3)
    records = []
    for p in range(3):
        for i in range(20):
            value = None if i == 7 else f"value {p} {i}".encode()
            records.append({"partition": p, "key": f"key-{p}-{i}".encode(), "value": value,
                            "headers": [("i", str(i).encode()), ("bin", bytes([p, i, 0, 255]))]})
    delivered = produce(broker.bootstrap, topic, records)
    assert all(d.error is None for d in delivered)

    out = run_scenario(broker, "consumeAll", {"topic": topic, "groupId": unique_name("kjs-g"),
                                              "count": len(records)})
    assert out["joins"] >= 1
    assert sorted(out["assignment"][topic]) == [0, 1, 2]
    got = by_partition(out["records"])
    assert len(out["records"]) == len(records), "records missing or delivered twice"
    for p in range(3):
        want = [r for r in records if r["partition"] == p]
        seen = got.get(p, [])
        assert [int(r["offset"]) for r in seen] == list(range(len(want))), f"partition {p} order"
        for w, s in zip(want, seen, strict=True):
            assert unhex(s["key"]) == w["key"]
            assert unhex(s["value"]) == w["value"]
            assert {k: unhex(v) for k, v in s["headers"].items()} == dict(w["headers"])


def test_kafkajs_two_consumers_share_a_topic(broker):
    """Goal: two kafkajs consumers in one group split a 4-partition topic (each gets some
    partitions, none shared), and together receive every record produced afterwards exactly once,
    each partition in order, from the member that owns it. When one disconnects, the other takes
    over all 4 partitions well within the session timeout and continues right after what was
    consumed (nothing redelivered, nothing lost)."""
    topic = unique_name("kjs-pair")
    per_partition = 25
    out = run_scenario(broker, "twoConsumers", {
        "topic": topic, "groupId": unique_name("kjs-g"), "partitions": 4, "perPartition": per_partition})

    a, b = out["assignments"]["a"], out["assignments"]["b"]
    assert a and b, out["assignments"]
    assert not set(a) & set(b) and sorted(a + b) == [0, 1, 2, 3], out["assignments"]
    assert out["finalAssignments"] == out["assignments"], "the group rebalanced while consuming"
    everything = out["records"]["a"] + out["records"]["b"]
    keys = [r["key"] for r in everything]
    assert len(keys) == len(set(keys)) == 4 * per_partition, "records missing or delivered twice"
    for name, owned in (("a", a), ("b", b)):
        got = by_partition(out["records"][name])
        assert set(got) == set(owned), f"member {name} got records of partitions it does not own"
        for p, seen in got.items():
            assert [int(r["offset"]) for r in seen] == list(range(per_partition)), (name, p)
            assert [unhex(r["value"]) for r in seen] == [f"v0-{p}-{i}".encode() for i in range(per_partition)]

    after = out["afterHandover"]
    assert after["assignment"] == [0, 1, 2, 3]
    assert out["handoverMs"] < 6000, f"handover took {out['handoverMs']} ms (LeaveGroup ignored?)"
    assert after["aRecords"] == [], "the member that left still received records"
    got = by_partition(after["records"])
    assert sorted(got) == [0, 1, 2, 3]
    for p, seen in got.items():
        assert [unhex(r["value"]) for r in seen] == [f"v1-{p}-{i}".encode() for i in range(per_partition)], (
            f"partition {p} after the handover: redelivered or lost records")
        assert [int(r["offset"]) for r in seen] == list(range(per_partition, 2 * per_partition)), p


def test_kafkajs_committed_offsets_resume(broker):
    """Goal: a kafkajs consumer that commits each record it processes (commitOffsets, autoCommit
    off) and then disconnects leaves committed offsets that admin.fetchOffsets reports; a new member
    of the same group resumes exactly after them: no record skipped, none processed twice. Once
    both left, admin.listGroups and admin.describeGroups show an empty consumer group."""
    topic = unique_name("kjs-resume")
    create_topic(broker.bootstrap, topic, partitions=2)
    records = [{"partition": p, "key": f"{p}-{i}".encode(), "value": f"v{p}-{i}".encode()}
               for p in range(2) for i in range(10)]
    assert all(d.error is None for d in produce(broker.bootstrap, topic, records))
    stop_after = 5  # fewer than one partition holds: the first member stops inside a partition

    group = unique_name("kjs-g")
    out = run_scenario(broker, "commitResume", {
        "topic": topic, "groupId": group, "stopAfter": stop_after, "total": len(records)})

    phase1, phase2 = out["phase1"], out["phase2"]
    assert len(phase1) == stop_after
    ids1 = [(r["partition"], int(r["offset"])) for r in phase1]
    ids2 = [(r["partition"], int(r["offset"])) for r in phase2]
    assert not set(ids1) & set(ids2), f"redelivered after the commit: {sorted(set(ids1) & set(ids2))}"
    assert sorted(ids1 + ids2) == [(p, i) for p in range(2) for i in range(10)], "records skipped"
    # What the first member committed: one past the last record it processed, per partition.
    expect_between = {p: max(o for q, o in ids1 if q == p) + 1 for p in {q for q, _ in ids1}}
    [between] = out["committedBetween"]
    got_between = {x["partition"]: int(x["offset"]) for x in between["partitions"]}
    for p in range(2):
        assert got_between[p] == expect_between.get(p, -1), got_between
    # The second member starts each partition right at the committed offset, in order.
    for p, seen in by_partition(phase2).items():
        start = got_between[p] if got_between[p] >= 0 else 0
        assert [int(r["offset"]) for r in seen] == list(range(start, 10)), p
    [after] = out["committedAfter"]
    assert {x["partition"]: int(x["offset"]) for x in after["partitions"]} == {0: 10, 1: 10}
    # Both members left: the group is listed and described as an empty consumer group.
    assert [(g["groupId"], g["protocolType"]) for g in out["listedGroups"]] == [(group, "consumer")]
    assert out["describedGroups"] == [{"groupId": group, "errorCode": 0, "state": "Empty",
                                       "protocolType": "consumer", "members": 0}]


# ---------------------------------------------------------------------------------------------
# admin offsets


def test_kafkajs_admin_offsets(broker):
    """Goal: kafkajs' admin offset queries answer what a user expects: fetchTopicOffsets gives low
    and high watermarks (0/0 when empty, then 0/records), fetchTopicOffsetsByTimestamp the first
    offset at or after a timestamp (the high watermark past the last one), and fetchOffsets -1 for a
    group with no commits, then the offset a member committed."""
    topic = unique_name("kjs-offs")
    t0 = int(time.time() * 1000) - 60_000
    records = [{"partition": 0, "value": f"p0-{i}", "timestamp": t0 + i * 1000} for i in range(5)]
    records += [{"partition": 1, "value": f"p1-{i}", "timestamp": t0 + 500 + i * 1000} for i in range(3)]
    timestamps = [t0 - 1000, t0 + 1500, t0 + 2500, t0 + 10_000]
    out = run_scenario(broker, "offsets", {
        "topic": topic, "partitions": 2, "records": records, "timestamps": timestamps,
        "groupId": unique_name("kjs-g"), "commit": [{"partition": 0, "offset": 3}]})

    def table(rows, *fields):
        return {r["partition"]: tuple(int(r[f]) for f in fields) for r in rows}

    assert table(out["beforeProduce"], "low", "high", "offset") == {0: (0, 0, 0), 1: (0, 0, 0)}
    assert table(out["topicOffsets"], "low", "high", "offset") == {0: (0, 5, 5), 1: (0, 3, 3)}
    by_ts = {int(ts): table(rows, "offset") for ts, rows in out["byTimestamp"].items()}
    assert by_ts[t0 - 1000] == {0: (0,), 1: (0,)}
    assert by_ts[t0 + 1500] == {0: (2,), 1: (1,)}  # p0 at t0+2000, p1 at t0+1500
    assert by_ts[t0 + 2500] == {0: (3,), 1: (2,)}
    assert by_ts[t0 + 10_000] == {0: (5,), 1: (3,)}  # later than every record: the high watermark
    [before] = out["committedBefore"]
    assert table(before["partitions"], "offset") == {0: (-1,), 1: (-1,)}
    [after] = out["committedAfter"]
    assert table(after["partitions"], "offset") == {0: (3,), 1: (-1,)}
