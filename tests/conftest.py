"""Fixtures of the black-box suite: a real `strata serve` process on a free port.

- `broker`: one broker for the whole session (started once, checked alive around every test).
- `own_broker`: a broker of its own for one test, for tests that kill, restart or abuse it.
- `topic`: a fresh single-partition topic on `broker`.

Set STRATA_BIN to test another binary (default: target/release/strata). Set STRATA_TEST_BOOTSTRAP=HOST:PORT
to run the suite against an already running Kafka-compatible broker (e.g. Apache Kafka): the tests
that must kill or restart the broker, or that need the `strata` CLI, are then skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import create_topic, unique_name

ROOT_DIR = Path(__file__).resolve().parent.parent
STRATA_BIN = Path(os.environ.get("STRATA_BIN", ROOT_DIR / "target" / "release" / "strata"))
EXTERNAL_BOOTSTRAP = os.environ.get("STRATA_TEST_BOOTSTRAP")
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class StrataProcess:
    """A `strata serve` process with its data dir and log; can be killed -9 and restarted."""

    def __init__(self, data_dir: Path, log_path: Path, port: int | None = None):
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Starts the broker on `self.port` and `self.data_dir`, waits until it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        if not STRATA_BIN.is_file():
            pytest.fail(f"{STRATA_BIN} does not exist: run `cargo build --release` first")
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts} =====\n".encode())
        log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(
            [str(STRATA_BIN), "serve", "--listen", self.bootstrap, "--data-dir", str(self.data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"strata serve exited with {self.proc.returncode} during startup:\n{self.log_tail()}"
                )
            if port_open(self.port):
                return
            time.sleep(0.05)
        self.kill9()
        pytest.fail(f"strata serve did not listen on {self.bootstrap} within {START_TIMEOUT_S}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: the process gets no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        """kill -9 (if running), then start again on the same port and data dir."""
        self.kill9()
        self.start()

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s. Returns the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class ExternalBroker:
    """An already running broker given by STRATA_TEST_BOOTSTRAP (cannot be killed or restarted)."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap

    def alive(self) -> bool:
        return True

    def log_tail(self, lines: int = 40) -> str:
        return "(external broker: no log)"


def _new_process(tmp_root: Path, name: str) -> StrataProcess:
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_root))
    return StrataProcess(work / "data", work / "strata.log")


@pytest.fixture(scope="session")
def _tmp_root():
    root = Path(tempfile.mkdtemp(prefix="strata-it-"))
    yield root
    if os.environ.get("STRATA_KEEP_TMP") != "1":
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def _session_broker(_tmp_root):
    if EXTERNAL_BOOTSTRAP:
        yield ExternalBroker(EXTERNAL_BOOTSTRAP)
        return
    broker = _new_process(_tmp_root, "session")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker(_session_broker):
    """The shared broker; the test fails if the broker is found dead after it."""
    if not _session_broker.alive():
        pytest.fail(f"the shared broker died before this test:\n{_session_broker.log_tail()}")
    yield _session_broker
    if not _session_broker.alive():
        pytest.fail(f"the shared broker died during this test:\n{_session_broker.log_tail()}")


@pytest.fixture
def own_broker(_tmp_root, request):
    """A broker process for this test only (fresh data dir); it may be killed and restarted."""
    if EXTERNAL_BOOTSTRAP:
        pytest.skip("needs a broker process of its own (STRATA_TEST_BOOTSTRAP is set)")
    broker = _new_process(_tmp_root, request.node.name[:40].replace("/", "_"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def topic(broker):
    """A new topic with one partition on the shared broker."""
    name = unique_name("t")
    create_topic(broker.bootstrap, name, partitions=1)
    return name


def pytest_runtest_makereport(item, call):
    """On a failure, attach the tail of the broker log to the report."""
    if call.when != "call" or call.excinfo is None:
        return
    for fixture_name in ("own_broker", "broker"):
        broker = item.funcargs.get(fixture_name) if hasattr(item, "funcargs") else None
        if broker is not None and hasattr(broker, "log_tail"):
            item.add_report_section("call", f"{fixture_name} log", broker.log_tail(60))
