"""Real Redis servers and real worker processes for the ``batch.redis`` tests.

``.ci/run`` starts a throwaway redis-server when ``CI=true`` and exports
``BATCH_TEST_REDIS_URL``.  Elsewhere the tests start their own server on a
Unix socket in a temp dir when ``redis-server`` is on PATH, and skip (saying
why) when it is not.  In CI a missing server is a failure, never a skip.
Tests that stop and restart Redis always get a private server of their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

URL_VAR = "BATCH_TEST_REDIS_URL"
ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it in CI (CI must never go green by skipping)."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}: .ci/run must start a redis-server", pytrace=False)
    pytest.skip(reason)


def need_redis_py() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        unavailable("redis-py is not installed (pip install 'batch[redis]')")


class RedisServer:
    """A redis-server process of our own on a Unix socket, without persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable(f"no {URL_VAR} set and no redis-server on PATH")
        self.binary = str(binary)
        self.dir = tempfile.mkdtemp(prefix="batch-redis-")
        self.socket = os.path.join(self.dir, "redis.sock")
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def server_url() -> Iterator[str]:
    """The URL of a server for the session: CI's, else one we start."""
    url = os.environ.get(URL_VAR)
    if url:
        yield url
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


class Workers:
    """``python -m batch worker`` processes; every one is stopped when the test ends."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(self, target: str, queue: str, *args: str, env: dict[str, str] | None = None,
              url: str | None = None) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{len(self.procs)}.log"
        full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
                        **(env or {}))
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "batch", "worker", f"redis_targets:{target}",
                 "--redis", url or self.url, "--queue", queue, *args],
                cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` (a test helper, not library code) until truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def consumers(client: Any, queue: str) -> int:
    """How many workers have read from ``queue`` (consumers in its group)."""
    import redis

    try:
        return len(client.xinfo_consumers(queue, "batch-workers"))
    except redis.ResponseError:
        return 0


def pending(client: Any, queue: str) -> int:
    """Requests delivered to some worker and not acknowledged yet."""
    import redis

    try:
        return int(client.xpending(queue, "batch-workers")["pending"])
    except redis.ResponseError:
        return 0


def new_queue() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"
