"""Fixtures of the black-box suite: a real `strata serve` process on a free port.

- `broker`: one broker for the whole session (started once, checked alive around every test).
- `own_broker`: a broker of its own for one test, for tests that kill, restart or abuse it.
- `topic`: a fresh single-partition topic on `broker`.
- `make_broker`: starts brokers of this test with extra `strata serve` flags and environment
  (e.g. `--object-store s3://...`, AWS_* variables); each is stopped after the test.
- `s3_server`: an S3-compatible server (s3s-fs) on a folder, for the remote tier; it can be stopped
  and restarted on the same port (outages).

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

    def __init__(self, data_dir: Path, log_path: Path, port: int | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 metrics_port: int | None = None):
        """`extra_args` are appended to `strata serve`'s flags, `env` to its environment.
        `metrics_port`: serve metrics (and the admin endpoints) on 127.0.0.1:PORT; by default the
        broker's own default applies."""
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.extra_env = dict(env or {})
        self.metrics_port = metrics_port
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def admin(self) -> str:
        """HOST:PORT of the metrics/admin listener (needs `metrics_port`)."""
        assert self.metrics_port is not None, "this broker was started without a metrics port"
        return f"127.0.0.1:{self.metrics_port}"

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
        env.update(self.extra_env)
        args = [str(STRATA_BIN), "serve", "--listen", self.bootstrap, "--data-dir", str(self.data_dir)]
        if self.metrics_port is not None:
            args += ["--metrics-listen", self.admin]
        args += self.extra_args
        self.proc = subprocess.Popen(
            args,
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


def _new_process(tmp_root: Path, name: str, **kwargs) -> StrataProcess:
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_root))
    return StrataProcess(work / "data", work / "strata.log", **kwargs)


S3_ACCESS_KEY = "test"
S3_SECRET_KEY = "test"


def s3s_fs_binary() -> Path | None:
    """The s3s-fs server (scripts/setup-test-env.sh installs it into ~/.cargo/bin)."""
    found = shutil.which("s3s-fs")
    if found:
        return Path(found)
    candidate = Path.home() / ".cargo" / "bin" / "s3s-fs"
    return candidate if candidate.is_file() else None


class S3Server:
    """An s3s-fs process serving `root` (each bucket is a sub-folder) on a fixed port; it can be
    stopped and started again on the same port, with the same objects."""

    def __init__(self, root: Path, log_path: Path, port: int | None = None):
        self.root = root
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The AWS_* variables that point `strata serve --object-store s3://...` at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def create_bucket(self, name: str) -> Path:
        """A bucket is a folder of the server's root."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "s3s-fs already running"
        binary = s3s_fs_binary()
        if binary is None:
            pytest.fail("s3s-fs is not installed: run scripts/setup-test-env.sh")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(binary), "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY, str(self.root)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"s3s-fs exited with {self.proc.returncode} during startup:\n{self.log_tail()}")
            if port_open(self.port):
                return
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"s3s-fs did not listen on port {self.port} within {START_TIMEOUT_S}s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGKILL (an outage, not a shutdown); waits until the port is closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


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
def make_broker(_tmp_root, request):
    """`make_broker(extra_args=[...], env={...}, metrics_port=PORT)`: starts a broker of this
    test (fresh data dir; a free metrics port unless given) and returns its StrataProcess; all are
    stopped after the test."""
    if EXTERNAL_BOOTSTRAP:
        pytest.skip("needs a broker process of its own (STRATA_TEST_BOOTSTRAP is set)")
    started: list[StrataProcess] = []

    def make(extra_args: list[str] | None = None, env: dict[str, str] | None = None,
             metrics_port: int | None = None) -> StrataProcess:
        name = request.node.name[:40].replace("/", "_").replace("[", "_").replace("]", "_")
        broker = _new_process(_tmp_root, name, extra_args=extra_args, env=env,
                              metrics_port=metrics_port or free_port())
        started.append(broker)
        broker.start()
        return broker

    make.started = started  # type: ignore[attr-defined]  (read by pytest_runtest_makereport)
    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def s3_server(_tmp_root):
    """A running s3s-fs server on a folder of its own (see S3Server); killed after the test."""
    work = Path(tempfile.mkdtemp(prefix="s3s-fs-", dir=_tmp_root))
    server = S3Server(work / "root", work / "s3s-fs.log")
    server.start()
    yield server
    server.stop()


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
    for fixture_name in ("own_broker", "broker", "s3_server"):
        broker = item.funcargs.get(fixture_name) if hasattr(item, "funcargs") else None
        if broker is not None and hasattr(broker, "log_tail"):
            item.add_report_section("call", f"{fixture_name} log", broker.log_tail(60))
    maker = item.funcargs.get("make_broker") if hasattr(item, "funcargs") else None
    for i, broker in enumerate(getattr(maker, "started", [])):
        item.add_report_section("call", f"make_broker #{i} log", broker.log_tail(80))
