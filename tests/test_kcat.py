"""kcat against Strata, with Debian's librdkafka (2.0.x) and with the newer librdkafka that the
confluent-kafka wheel bundles (2.16.x): the two parse ApiVersions and Metadata replies differently,
so both must work."""

from __future__ import annotations

import json

import pytest

from helpers import CODECS, KCAT_LIBRDKAFKA, create_topic, kcat, kcat_librdkafka_version, unique_name


@pytest.mark.parametrize("lib", KCAT_LIBRDKAFKA)
def test_kcat_runs_with_each_librdkafka(lib):
    """Goal: the test setup really exercises two librdkafka versions (2.0.x and 2.16.x)."""
    version = kcat_librdkafka_version(lib)
    if lib == "system":
        assert version.startswith("2.0."), version
    else:
        assert version.startswith("2.16."), version


@pytest.mark.parametrize("lib", KCAT_LIBRDKAFKA)
def test_kcat_metadata_lists_broker_and_topic(broker, lib):
    """Goal: `kcat -L` shows the broker (with the address we connect to) and a created topic with all
    its partitions led by that broker, without errors."""
    name = unique_name("kcat-meta")
    create_topic(broker.bootstrap, name, partitions=3)
    meta = json.loads(kcat(lib, ["-b", broker.bootstrap, "-L", "-J", "-t", name]).stdout)

    assert len(meta["brokers"]) == 1, meta["brokers"]
    only = meta["brokers"][0]
    host, port = broker.bootstrap.rsplit(":", 1)
    assert only["name"].endswith(f":{port}"), only
    topics = {t["topic"]: t for t in meta["topics"]}
    assert name in topics, meta["topics"]
    t = topics[name]
    assert "error" not in t, t
    partitions = sorted(t["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in partitions] == [0, 1, 2]
    for p in partitions:
        assert "error" not in p, p
        assert p["leader"] == only["id"], p
        assert p["replicas"] == [{"id": only["id"]}], p
        assert p["isrs"] == [{"id": only["id"]}], p

    # Without -t, the listing also includes the topic.
    everything = json.loads(kcat(lib, ["-b", broker.bootstrap, "-L", "-J"]).stdout)
    assert name in {t["topic"] for t in everything["topics"]}


@pytest.mark.parametrize("lib", KCAT_LIBRDKAFKA)
def test_kcat_produce_consume_keys_and_headers(broker, lib):
    """Goal: records produced by `kcat -P -K: -H` come back from `kcat -C -o beginning -e` with the same
    keys, values and headers, in order, at offsets 0..n-1."""
    name = unique_name("kcat-kv")
    create_topic(broker.bootstrap, name)
    lines = [f"key-{i}:value {i} \u00e9\u00e8".encode() for i in range(50)]
    kcat(lib, ["-b", broker.bootstrap, "-P", "-t", name, "-p", "0", "-K:", "-H", "source=kcat",
               "-H", "lib=" + lib], stdin=b"\n".join(lines) + b"\n")

    out = kcat(lib, ["-b", broker.bootstrap, "-C", "-t", name, "-p", "0", "-o", "beginning", "-e",
                     "-f", "%o|%k|%s|%h\\n"]).stdout.decode().splitlines()
    assert len(out) == len(lines), out
    for i, row in enumerate(out):
        offset, key, value, headers = row.split("|")
        assert int(offset) == i
        assert key == f"key-{i}"
        assert value == f"value {i} \u00e9\u00e8"
        assert headers == f"source=kcat,lib={lib}"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("lib", KCAT_LIBRDKAFKA)
def test_kcat_compression_round_trip(broker, lib, codec):
    """Goal: kcat producing with each compression codec (-z) gets every record stored; a consumer reads
    them back unchanged and in order."""
    name = unique_name(f"kcat-{codec}")
    create_topic(broker.bootstrap, name)
    values = [f"{codec} record {i} ".encode() + b"x" * (i % 97) for i in range(300)]
    args = ["-b", broker.bootstrap, "-P", "-t", name, "-p", "0", "-X", "linger.ms=20"]
    if codec != "none":
        args += ["-z", codec]
    kcat(lib, args, stdin=b"\n".join(values) + b"\n")

    out = kcat(lib, ["-b", broker.bootstrap, "-C", "-t", name, "-p", "0", "-o", "beginning", "-e",
                     "-f", "%o %s\\n"]).stdout.splitlines()
    assert len(out) == len(values)
    for i, row in enumerate(out):
        offset, value = row.split(b" ", 1)
        assert int(offset) == i
        assert value == values[i]


@pytest.mark.parametrize("lib", KCAT_LIBRDKAFKA)
def test_kcat_consume_from_offset_and_count(broker, lib):
    """Goal: `kcat -C -o N -c M` starts at offset N and stops after M records."""
    name = unique_name("kcat-offset")
    create_topic(broker.bootstrap, name)
    kcat(lib, ["-b", broker.bootstrap, "-P", "-t", name, "-p", "0"],
         stdin=b"".join(f"m{i}\n".encode() for i in range(20)))
    out = kcat(lib, ["-b", broker.bootstrap, "-C", "-t", name, "-p", "0", "-o", "7", "-c", "5", "-e",
                     "-f", "%o=%s\\n"]).stdout.decode().splitlines()
    assert out == [f"{i}=m{i}" for i in range(7, 12)]
