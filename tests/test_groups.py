"""Consumer groups with real clients: partitions shared by subscribe(), handed over when a member
leaves, committed offsets that survive a broker restart (kill -9) and resume exactly after the commit.

Timeouts are short (session.timeout.ms 6000, the broker's minimum; heartbeats every 500 ms) so the
tests stay fast.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import KafkaAdminClient

from conftest import EXTERNAL_BOOTSTRAP, STRATA_BIN
from helpers import admin, create_topic, produce, unique_name

GROUP_CONF = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "topic.metadata.refresh.interval.ms": 1000,
}


def consumer(bootstrap: str, group: str, **extra) -> Consumer:
    conf = {"bootstrap.servers": bootstrap, "group.id": group, **GROUP_CONF}
    conf.update(extra)
    return Consumer(conf)


def assigned(c: Consumer) -> set[int]:
    return {tp.partition for tp in c.assignment()}


def poll_records(c: Consumer, timeout_s: float = 0.1) -> list:
    """One poll; returns the data records (errors other than partition EOF fail the test)."""
    msg = c.poll(timeout_s)
    if msg is None:
        return []
    if msg.error():
        assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
        return []
    return [msg]


def test_two_members_share_partitions_and_one_takes_over_after_close(broker):
    """Goal: two confluent-kafka consumers subscribed to a 4-partition topic in one group split the
    partitions between them (disjoint, covering all 4); after one closes (LeaveGroup) the other
    gets all 4 partitions well within the session timeout."""
    topic = unique_name("grp")
    group = unique_name("g")
    create_topic(broker.bootstrap, topic, partitions=4)
    produce(broker.bootstrap, topic, [{"value": f"v{i}".encode(), "partition": i % 4} for i in range(40)])
    c1 = consumer(broker.bootstrap, group)
    c2 = consumer(broker.bootstrap, group)
    try:
        c1.subscribe([topic])
        c2.subscribe([topic])
        seen: dict[int, set[int]] = {p: set() for p in range(4)}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for c in (c1, c2):
                for msg in poll_records(c):
                    seen[msg.partition()].add(msg.offset())
            a1, a2 = assigned(c1), assigned(c2)
            if a1 and a2 and a1 | a2 == {0, 1, 2, 3} and not a1 & a2:
                break
        a1, a2 = assigned(c1), assigned(c2)
        assert a1 and a2, f"both members get partitions: {a1} {a2}"
        assert a1 | a2 == {0, 1, 2, 3} and not a1 & a2, f"disjoint cover: {a1} {a2}"

        adm = admin(broker.bootstrap)  # must outlive its futures
        described = adm.describe_consumer_groups([group])[group].result(timeout=10)
        assert len(described.members) == 2
        assigned_by_describe = sorted(
            tp.partition for m in described.members for tp in m.assignment.topic_partitions
        )
        assert assigned_by_describe == [0, 1, 2, 3]

        started = time.monotonic()
        c2.close()
        c2 = None
        while time.monotonic() - started < 15 and assigned(c1) != {0, 1, 2, 3}:
            poll_records(c1)
        assert assigned(c1) == {0, 1, 2, 3}, f"the survivor takes every partition: {assigned(c1)}"
        assert time.monotonic() - started < 6, "a clean leave rebalances before the session timeout"
    finally:
        c1.close()
        if c2 is not None:
            c2.close()


def test_committed_offsets_survive_kill9_and_a_new_member_resumes_exactly(own_broker):
    """Goal: offsets committed synchronously by a group consumer survive a kill -9 of the broker;
    a new consumer of the same group resumes exactly after them: every record is consumed once
    across the two consumers (none skipped, none redelivered)."""
    bootstrap = own_broker.bootstrap
    topic = unique_name("resume")
    group = unique_name("g")
    create_topic(bootstrap, topic, partitions=2)
    total = 40
    produce(bootstrap, topic, [{"value": f"v{i}".encode(), "partition": i % 2} for i in range(total)],
            {"acks": "all"})

    first = consumer(bootstrap, group)
    first.subscribe([topic])
    consumed_first: list[tuple[int, int]] = []
    deadline = time.monotonic() + 30
    while len(consumed_first) < 15 and time.monotonic() < deadline:
        consumed_first.extend((m.partition(), m.offset()) for m in poll_records(first, 0.2))
    assert len(consumed_first) >= 15, "the first consumer reads records"
    # Commit exactly what was processed: the next offset of each partition.
    next_offsets: dict[int, int] = {}
    for partition, offset in consumed_first:
        next_offsets[partition] = max(next_offsets.get(partition, 0), offset + 1)
    committed = first.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in next_offsets.items()], asynchronous=False
    )
    assert all(tp.error is None for tp in committed), committed
    first.close()

    own_broker.restart()  # kill -9, then start again on the same data dir

    second = consumer(bootstrap, group)
    try:
        after = second.committed([TopicPartition(topic, p) for p in range(2)], timeout=15)
        assert {tp.partition: tp.offset for tp in after} == {
            p: next_offsets.get(p, -1001) for p in range(2)
        }, "committed offsets survived the restart"
        second.subscribe([topic])
        consumed_second: list[tuple[int, int]] = []
        deadline = time.monotonic() + 30
        while len(consumed_first) + len(consumed_second) < total and time.monotonic() < deadline:
            consumed_second.extend((m.partition(), m.offset()) for m in poll_records(second, 0.2))
        # Anything more would be a redelivery.
        extra_deadline = time.monotonic() + 1
        while time.monotonic() < extra_deadline:
            consumed_second.extend((m.partition(), m.offset()) for m in poll_records(second, 0.1))
    finally:
        second.close()
    assert not set(consumed_first) & set(consumed_second), "no record redelivered after a clean commit"
    everything = sorted(consumed_first + consumed_second)
    expected = sorted((p, o) for p in range(2) for o in range(total // 2))
    assert everything == expected, "every record consumed exactly once"
    for p in range(2):
        offsets = [o for (q, o) in consumed_second if q == p]
        if offsets:
            assert min(offsets) == next_offsets.get(p, 0), f"partition {p} resumes at the commit"


def test_kafka_python_group_consumer_commits_and_admin_sees_the_group(broker):
    """Goal: a kafka-python group consumer (subscribe, poll, commit) works: it gets every
    partition, reads every record, its commit is visible through committed(), and the admin
    client lists and describes the group."""
    topic = unique_name("kp")
    group = unique_name("g")
    create_topic(broker.bootstrap, topic, partitions=3)
    produce(broker.bootstrap, topic, [{"value": f"v{i}".encode(), "partition": i % 3} for i in range(30)])
    kc = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    try:
        values = []
        deadline = time.monotonic() + 30
        while len(values) < 30 and time.monotonic() < deadline:
            for records in kc.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
        assert sorted(values) == sorted(f"v{i}".encode() for i in range(30))
        assert {tp.partition for tp in kc.assignment()} == {0, 1, 2}
        kc.commit()
        for p in range(3):
            assert kc.committed(KpTopicPartition(topic, p)) == 10

        adm = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            listed = {g["group_id"]: g for g in adm.list_groups()}
            assert listed[group]["group_state"] == "Stable"
            assert listed[group]["protocol_type"] == "consumer"
            described = adm.describe_groups([group])[group]
            assert described["group_state"] == "Stable"
            [member] = described["members"]
            assert member["member_metadata"]["topics"] == [topic]
            assert member["member_assignment"]["assigned_partitions"] == [
                {"topic": topic, "partitions": [0, 1, 2]}
            ]
            offsets = adm.list_group_offsets({group: None})[group]
            assert {tp.partition: meta.offset for tp, meta in offsets.items()} == {0: 10, 1: 10, 2: 10}
        finally:
            adm.close()
    finally:
        kc.close()


def _strata(bootstrap: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("STRATA_BOOTSTRAP", None)
    proc = subprocess.run([str(STRATA_BIN), *args, "--bootstrap-server", bootstrap],
                          capture_output=True, timeout=30, env=env)
    if check:
        assert proc.returncode == 0, (
            f"strata {' '.join(args)} exited {proc.returncode}\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
        )
    return proc


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = consumer(bootstrap, group)
    try:
        return {tp.partition: tp.offset
                for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)}
    finally:
        c.close()


@pytest.mark.skipif(bool(EXTERNAL_BOOTSTRAP), reason="the strata CLI is tested with a strata broker")
def test_cli_lists_describes_and_resets_a_group(broker):
    """Goal: `strata group list` shows a group, `describe` its members, committed offsets, log end
    and lag, and `reset-offsets` (earliest, offset, datetime, latest) moves a stopped group's
    offsets; resetting a group with live members is refused."""
    bootstrap = broker.bootstrap
    topic = unique_name("cli")
    group = unique_name("g")
    create_topic(bootstrap, topic, partitions=2)
    produce(bootstrap, topic, [{"value": f"v{i}".encode(), "partition": i % 2} for i in range(20)])
    c = consumer(bootstrap, group)
    c.subscribe([topic])
    got = 0
    deadline = time.monotonic() + 30
    while got < 6 and time.monotonic() < deadline:
        got += len(poll_records(c, 0.2))
    c.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 4)], asynchronous=False)

    listed = _strata(bootstrap, "group", "list").stdout.decode()
    assert re.search(rf"^{group}\s+Stable\s+consumer$", listed, re.M), listed
    described = _strata(bootstrap, "group", "describe", group).stdout.decode()
    assert "state Stable" in described and "1 member(s)" in described, described
    rows = {int(m[0]): (int(m[1]), int(m[2]), int(m[3]))
            for m in re.findall(rf"^{topic}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+$", described, re.M)}
    assert rows == {0: (3, 10, 7), 1: (4, 10, 6)}, described
    refused = _strata(bootstrap, "group", "reset-offsets", group, "--to-earliest", check=False)
    assert refused.returncode != 0 and b"active member" in refused.stderr
    c.close()

    _strata(bootstrap, "group", "reset-offsets", group, "--to-earliest")
    assert _committed(bootstrap, group, topic, 2) == {0: 0, 1: 0}
    _strata(bootstrap, "group", "reset-offsets", group, "--topic", topic, "--to-offset", "5")
    assert _committed(bootstrap, group, topic, 2) == {0: 5, 1: 5}
    dry = _strata(bootstrap, "group", "reset-offsets", group, "--to-latest", "--dry-run").stdout.decode()
    assert "dry run" in dry
    assert _committed(bootstrap, group, topic, 2) == {0: 5, 1: 5}
    _strata(bootstrap, "group", "reset-offsets", group, "--to-datetime", "2100-01-01T00:00:00Z")
    assert _committed(bootstrap, group, topic, 2) == {0: 10, 1: 10}
    _strata(bootstrap, "group", "reset-offsets", group, "--to-datetime", "1970-01-01T00:00:00Z")
    assert _committed(bootstrap, group, topic, 2) == {0: 0, 1: 0}
    listed = _strata(bootstrap, "group", "list").stdout.decode()
    assert re.search(rf"^{group}\s+Empty\s+consumer$", listed, re.M), listed


MEMBER_SCRIPT = """
import sys, time
from confluent_kafka import Consumer
conf = {"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest", "enable.auto.commit": False}
c = Consumer(conf)
c.subscribe([sys.argv[3]])
while True:
    c.poll(0.2)
    if c.assignment():
        print("assigned", flush=True)
"""


def test_three_members_share_and_a_killed_members_partitions_move_within_the_session_timeout(broker):
    """Goal: three members (one in a separate process) split a 6-partition topic; when the
    process is killed -9 (no LeaveGroup), its partitions go to the survivors after its session
    times out (6 s), well before 15 s."""
    topic = unique_name("kill")
    group = unique_name("g")
    create_topic(broker.bootstrap, topic, partitions=6)
    member = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, broker.bootstrap, group, topic],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    c1 = consumer(broker.bootstrap, group)
    c2 = consumer(broker.bootstrap, group)
    try:
        c1.subscribe([topic])
        c2.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for c in (c1, c2):
                poll_records(c, 0.05)
            a1, a2 = assigned(c1), assigned(c2)
            if len(a1) == 2 and len(a2) == 2 and not a1 & a2:
                break
        a1, a2 = assigned(c1), assigned(c2)
        assert len(a1) == 2 and len(a2) == 2 and not a1 & a2, f"three-way split: {a1} {a2}"
        assert member.stdout.readline().strip() == b"assigned"

        member.kill()
        member.wait(timeout=10)
        killed = time.monotonic()
        while time.monotonic() - killed < 20:
            for c in (c1, c2):
                poll_records(c, 0.05)
            if assigned(c1) | assigned(c2) == set(range(6)) and not assigned(c1) & assigned(c2):
                break
        moved_after = time.monotonic() - killed
        assert assigned(c1) | assigned(c2) == set(range(6)), f"{assigned(c1)} {assigned(c2)}"
        assert not assigned(c1) & assigned(c2)
        assert moved_after < 15, f"partitions moved after {moved_after:.1f}s"
    finally:
        if member.poll() is None:
            member.kill()
        c1.close()
        c2.close()


def test_rebalance_storm_loses_nothing_and_redelivers_only_uncommitted(broker):
    """Goal: while a producer writes, members join and leave the group repeatedly (1 to 3 at a
    time). Each member commits synchronously after every record. Afterwards: every produced
    record was consumed; within a member's tenure on a partition offsets only increase; a record
    consumed twice was never below a successful commit (duplicates only where the commit was
    genuinely not made, e.g. refused during a rebalance), and those are counted."""
    import random
    import threading

    topic = unique_name("storm")
    group = unique_name("g")
    partitions = 4
    total = 400
    create_topic(broker.bootstrap, topic, partitions=partitions)
    rng = random.Random(5)

    def producer():
        for start in range(0, total, 20):
            produce(broker.bootstrap, topic,
                    [{"value": f"v{i}".encode(), "partition": i % partitions} for i in range(start, start + 20)],
                    {"acks": "all"})
            time.sleep(0.1)

    produced = threading.Thread(target=producer)
    produced.start()

    consumed: dict[tuple[int, int], int] = {}  # (partition, offset) -> times consumed
    committed_max = {p: 0 for p in range(partitions)}
    duplicates = []
    failed_commits = 0
    order_violations = []
    members: list[tuple[Consumer, dict[int, int]]] = []

    def add_member():
        last: dict[int, int] = {}

        def on_assign(c, tps):
            for tp in tps:
                last.pop(tp.partition, None)

        c = consumer(broker.bootstrap, group)
        c.subscribe([topic], on_assign=on_assign)
        members.append((c, last))

    add_member()
    next_change = time.monotonic() + 1.5
    deadline = time.monotonic() + 90
    changes = 0
    try:
        while time.monotonic() < deadline:
            if time.monotonic() >= next_change and changes < 10:
                changes += 1
                if len(members) < 3 and (len(members) == 1 or rng.random() < 0.5):
                    add_member()
                else:
                    c, _ = members.pop(rng.randrange(len(members)))
                    c.close()
                next_change = time.monotonic() + rng.uniform(1.0, 2.0)
            for c, last in members:
                for msg in poll_records(c, 0.02):
                    key = (msg.partition(), msg.offset())
                    if key in consumed:
                        duplicates.append(key)
                        if msg.offset() < committed_max[msg.partition()]:
                            order_violations.append(("below a successful commit", key))
                    consumed[key] = consumed.get(key, 0) + 1
                    if msg.partition() in last and msg.offset() <= last[msg.partition()]:
                        order_violations.append(("out of order", key))
                    last[msg.partition()] = msg.offset()
                    try:
                        c.commit(message=msg, asynchronous=False)
                        committed_max[msg.partition()] = max(committed_max[msg.partition()], msg.offset() + 1)
                    except Exception:  # refused during a rebalance: genuinely not committed
                        failed_commits += 1
            if not produced.is_alive() and len(consumed) == total and changes >= 10:
                break
    finally:
        produced.join(timeout=60)
        for c, _ in members:
            c.close()
    assert changes >= 10, "the membership changed repeatedly"
    expected = {(p, o) for p in range(partitions) for o in range(total // partitions)}
    assert set(consumed) == expected, f"missing {sorted(expected - set(consumed))[:10]}"
    assert not order_violations, order_violations[:10]
    assert len(duplicates) <= failed_commits * 50, (len(duplicates), failed_commits)
    print(f"storm: {changes} membership changes, {len(duplicates)} duplicates, "
          f"{failed_commits} refused commits")
