"""W8: the Redis Streams tier (``batch.redis``) against dynamic_batcher, on one redis-server.

Everything runs in one go against one throwaway ``redis-server`` on a free
127.0.0.1 port (dynamic_batcher takes a host and port only), started and
stopped here; each side's worker is a real process.

- Throughput: one worker, a trivial function, 100 concurrent ``asend``
  callers in one asyncio process.  batch: ``python -m batch worker
  --max-batch-size 64 --max-delay 0.005``.  dynamic_batcher 1.0.6.1:
  ``BatchProcessor(batch_size=64, batch_time=0.05)``, clients
  ``DynamicBatcher(delay=0.001)`` (the settings measured in issue 12).
  The ratio of the two is the figure; target >= 15x.
- Latency alone: one caller, ``send`` one at a time; p50 round trip against
  the worker's ``--max-delay`` (target <= max_delay + 2 ms).
- Scaling: a function that takes 5 ms per batch (``--max-batch-size 4`` so
  that the function, not the caller process, is the bottleneck), one worker
  then two; target: two give >= 1.6x.

Worker memory over 1,000,000 requests is a slow test
(``tests/test_redis_soak.py``), not part of this run.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["available", "five_ms", "format_w8", "measure_w8", "trivial"]

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 100
MAX_DELAY = 0.005


def trivial(items: list[Any]) -> list[Any]:
    """The trivial batch function: every body back as it came."""
    return items


def five_ms(items: list[Any]) -> list[Any]:
    """A batch function that takes 5 ms per batch (a model on an accelerator, say)."""
    time.sleep(0.005)
    return items


def available() -> str | None:
    """``None`` when W8 can run, else the reason it cannot."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py not installed (pip install 'batch[redis]')"
    if shutil.which("redis-server") is None:
        return "no redis-server on PATH (apt-get install redis-server)"
    return None


def _dynamic_batcher_version() -> str | None:
    try:
        return importlib.metadata.version("dynamic-batcher")
    except importlib.metadata.PackageNotFoundError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server() -> Iterator[int]:
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="batch-w8-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()
        yield port
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


class _Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, **(env or {})),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


def _batch_worker(procs: _Procs, client: Any, port: int, queue: str, target: str,
                  max_batch_size: int) -> None:
    before = _consumers(client, queue)
    procs.start([sys.executable, "-m", "batch", "worker", f"benchmarks.w8_redis:{target}",
                 "--redis", f"redis://127.0.0.1:{port}/0", "--queue", queue, "--quiet",
                 "--max-batch-size", str(max_batch_size), "--max-delay", str(MAX_DELAY)])
    deadline = time.monotonic() + 30
    while _consumers(client, queue) <= before:
        if time.monotonic() > deadline:
            raise RuntimeError("the batch worker did not start")
        time.sleep(0.02)


def _consumers(client: Any, queue: str) -> int:
    import redis

    try:
        return len(client.xinfo_consumers(queue, "batch-workers"))
    except redis.ResponseError:
        return 0


async def _drive(send: Callable[[Any], Awaitable[Any]], total: int,
                 concurrency: int) -> tuple[float, list[float], int]:
    """``total`` calls from ``concurrency`` callers: (requests/s, latencies, wrong answers)."""
    numbers = iter(range(total))
    latencies: list[float] = []
    wrong = 0

    async def caller() -> None:
        nonlocal wrong
        for n in numbers:
            started = time.perf_counter()
            answer = await send({"n": n})
            latencies.append(time.perf_counter() - started)
            if answer != {"n": n}:
                wrong += 1

    started = time.perf_counter()
    await asyncio.gather(*[caller() for _ in range(concurrency)])
    return total / (time.perf_counter() - started), latencies, wrong


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def _one_worker(port: int, total: int, alone: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Throughput with 100 callers, then one caller alone, on one batch worker."""
    import redis

    import batch.redis as br

    client = redis.Redis(host="127.0.0.1", port=port)
    procs = _Procs()
    queue = f"w8-{uuid.uuid4().hex[:8]}"
    try:
        _batch_worker(procs, client, port, queue, "trivial", 64)
        echo = br.remote(client, queue, timeout=60)
        asyncio.run(_drive(echo.asend, min(total, 500), CONCURRENCY))  # warm-up
        rate, lat, wrong = asyncio.run(_drive(echo.asend, total, CONCURRENCY))
        single = []
        for n in range(alone):
            started = time.perf_counter()
            echo.send(n)
            single.append(time.perf_counter() - started)
    finally:
        procs.stop_all()
        client.close()
    return ({"requests": total, "per_s": rate, "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
             "wrong": wrong},
            {"requests": alone, "p50_ms": statistics.median(single) * 1000,
             "p99_ms": _pct(single, 0.99), "max_delay_ms": MAX_DELAY * 1000})


def _dynamic_batcher_throughput(port: int, total: int) -> dict[str, Any]:
    env = {"REDIS__HOST": "127.0.0.1", "REDIS__PORT": str(port), "REDIS__DB": "1"}
    os.environ.update(env)   # dynamic_batcher reads its settings at import
    procs = _Procs()
    try:
        procs.start([sys.executable, "-c",
                     "import asyncio, logging; logging.disable(logging.CRITICAL)\n"
                     "from dynamic_batcher import BatchProcessor\n"
                     "from benchmarks.w8_redis import trivial\n"
                     "asyncio.run(BatchProcessor(batch_size=64, batch_time=0.05).start_daemon(trivial))"],
                    env=env)
        import importlib
        import logging

        import dynamic_batcher.batcher
        import dynamic_batcher.redis_engine

        # It reads REDIS__* into module constants at import: reload for this run's server.
        importlib.reload(dynamic_batcher.redis_engine)
        importlib.reload(dynamic_batcher.batcher)
        logging.getLogger("dynamic_batcher").disabled = True
        batcher = dynamic_batcher.batcher.DynamicBatcher(delay=0.001, timeout=60)
        time.sleep(1.0)  # its processor has no readiness signal; requests wait in the stream anyway
        rate, lat, wrong = asyncio.run(_drive(batcher.asend, total, CONCURRENCY))
    finally:
        procs.stop_all()
        for key in env:
            os.environ.pop(key, None)
    return {"requests": total, "per_s": rate, "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
            "wrong": wrong}


def _scaling(port: int, total: int) -> dict[str, Any]:
    import redis

    import batch.redis as br

    client = redis.Redis(host="127.0.0.1", port=port)
    rates = {}
    for workers in (1, 2):
        procs = _Procs()
        queue = f"w8-{uuid.uuid4().hex[:8]}"
        try:
            for _ in range(workers):
                _batch_worker(procs, client, port, queue, "five_ms", 4)
            echo = br.remote(client, queue, timeout=60)
            asyncio.run(_drive(echo.asend, 50, CONCURRENCY))  # warm-up
            rates[workers], _, wrong = asyncio.run(_drive(echo.asend, total, CONCURRENCY))
            if wrong:
                raise RuntimeError(f"{wrong} wrong answers with {workers} workers")
        finally:
            procs.stop_all()
    client.close()
    return {"requests": total, "one_per_s": rates[1], "two_per_s": rates[2], "ratio": rates[2] / rates[1]}


def measure_w8(quick: bool) -> dict[str, Any]:
    """Run W8; returns its JSON document (``status`` says why when it could not run)."""
    reason = available()
    if reason:
        return {"status": reason}
    doc: dict[str, Any] = {"status": "ok", "concurrency": CONCURRENCY, "quick": quick}
    with _server() as port:
        doc["batch"], doc["alone"] = _one_worker(port, 1_000 if quick else 30_000, 30 if quick else 300)
        if quick:  # a smoke run: one worker process only
            return doc
        version = _dynamic_batcher_version()
        if version is None:
            doc["dynamic_batcher"] = {"status": "not installed"}
        else:
            doc["dynamic_batcher"] = dict(_dynamic_batcher_throughput(port, 500), version=version)
            doc["ratio"] = doc["batch"]["per_s"] / doc["dynamic_batcher"]["per_s"]
        doc["scaling"] = _scaling(port, 4_000)
    return doc


def format_w8(doc: dict[str, Any]) -> str:
    """The W8 table as text."""
    head = "W8: Redis Streams tier, one redis-server on 127.0.0.1 (machine shared: noisy)"
    if doc.get("status") != "ok":
        return f"{head}\nskipped: {doc.get('status')}"
    b, a = doc["batch"], doc["alone"]
    lines = [head, f"  {doc['concurrency']} concurrent asend callers, trivial function, one worker:",
             f"    batch.redis          {b['per_s']:>9,.0f} req/s   p50 {b['p50_ms']:6.1f} ms   "
             f"p99 {b['p99_ms']:6.1f} ms   ({b['requests']:,} requests)"]
    d = doc.get("dynamic_batcher")
    if doc["quick"]:
        lines.append("    dynamic_batcher and the two-worker scaling run only without --quick")
    elif "ratio" in doc:
        lines.append(f"    dynamic_batcher {d['version']:<8} {d['per_s']:>5,.0f} req/s   "
                     f"p50 {d['p50_ms']:6.1f} ms   p99 {d['p99_ms']:6.1f} ms   ({d['requests']:,} requests)")
        lines.append(f"    ratio {doc['ratio']:.1f}x (target >= 15x)")
    else:
        lines.append("    dynamic_batcher: not installed (pip install 'batch[bench]')")
    lines.append(f"  one caller alone: p50 {a['p50_ms']:.2f} ms, p99 {a['p99_ms']:.2f} ms round trip "
                 f"(max_delay {a['max_delay_ms']:.0f} ms; target p50 <= {a['max_delay_ms'] + 2:.0f} ms)")
    if "scaling" in doc:
        s = doc["scaling"]
        lines.append(f"  5 ms per batch (max batch 4): one worker {s['one_per_s']:,.0f} req/s, two "
                     f"{s['two_per_s']:,.0f} req/s: {s['ratio']:.2f}x (target >= 1.6x)")
    return "\n".join(lines)
