"""W7: batching across callers - ``AsyncBatcher`` and ``DynamicBatcher`` against their peers.

Three scenes, each run in one process with every contender interleaved
sample by sample (so a burst of load on the shared machine hits all alike):

(a) **asyncio callers**: ``tasks`` concurrent tasks, each runs a depth-3 tree
    (three dependent operations of three classes, ``async def run_batch``
    awaiting ``call_ms`` per call).  Contenders: a hand-written loop with no
    library (the floor: a future per caller, one loop steps every tree and
    sends each level in one call), one ``execute_async`` per
    task (no sharing: ``3 * tasks`` calls), one ``execute_many_async`` over
    all roots (the ideal: 3 calls, but it needs every root up front),
    aiodataloader with one shared loader per level, and one
    ``AsyncBatcher(max_delay=0)`` that every task awaits.
(b) **threaded callers**: ``threads`` threads each make ``requests``
    sequential requests of ``x * 2``; PyBatcher (``batch_delay``) against
    ``DynamicBatcher(max_delay=...)`` running one ``@batch.operation``.
    Reported: requests per second, p50 and p99 latency, mean batch size.
(c) **burst**: one thread submits N requests as fast as it can, then waits
    for every future.  PyBatcher is tried at growing bursts until one fails
    (it raises ``Batch already started`` or leaves futures unresolved); the
    batcher runs the largest burst.  Reported: submits resolved per second.

``measure_w7(quick, repeat)`` returns the JSON document; ``format_w7(doc)``
its tables.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any

import batch

__all__ = ["W7Sizes", "QUICK_W7", "FULL_W7", "measure_w7", "format_w7", "PYBATCHER_VERSION"]

try:  # pragma: no cover - depends on the environment
    from importlib.metadata import version as _version

    import aiodataloader

    AIODATALOADER_VERSION: str | None = _version("aiodataloader")
except ImportError:  # pragma: no cover
    aiodataloader = None
    AIODATALOADER_VERSION = None

try:  # pragma: no cover - depends on the environment
    from importlib.metadata import version as _version

    import pybatcher

    PYBATCHER_VERSION: str | None = _version("pybatcher")
except ImportError:  # pragma: no cover
    pybatcher = None
    PYBATCHER_VERSION = None


@dataclass(frozen=True)
class W7Sizes:
    """The sizes of the three scenes."""

    tasks: int = 200           # (a) asyncio tasks
    call_ms: float = 1.0       # (a) await per run_batch call
    threads: int = 16          # (b) caller threads
    requests: int = 250        # (b) sequential requests per thread
    delay: float = 0.002       # (b) batch_delay / max_delay
    # (c) PyBatcher's tries, smallest first: it fails at random sizes (often below 1,000)
    bursts: tuple[int, ...] = (100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
    burst: int = 100_000       # (c) the batcher's burst


FULL_W7 = W7Sizes()
QUICK_W7 = W7Sizes(tasks=20, threads=4, requests=20, bursts=(500, 1_000), burst=2_000)

NOT_AVAILABLE = "not available"
HAND_LOOP = "hand-written loop, no library (floor)"


# -- (a) asyncio callers ------------------------------------------------------------


class Calls:
    """Counts run_batch calls (one counter per sample)."""

    count = 0


def _level(name: str, call_ms: float) -> type[batch.BatchableOperation[int]]:
    async def run_batch(cls: Any, operations: list[Any]) -> list[int]:
        Calls.count += 1
        await asyncio.sleep(call_ms / 1000)
        return [op.key + 1 for op in operations]

    def __init__(self: Any, key: int) -> None:
        self.key = key

    return type(name, (batch.BatchableOperation,),
                {"__init__": __init__, "run_batch": classmethod(run_batch), "__slots__": ("key",)})


def _tree(levels: tuple[type[Any], ...], i: int) -> Generator[Any, Any, int]:
    a = yield levels[0](i)
    b = yield levels[1](a)
    c = yield levels[2](b)
    return int(c)


async def _per_task(levels: tuple[type[Any], ...], n: int) -> list[int]:
    return list(await asyncio.gather(*(batch.execute_async(_tree(levels, i)) for i in range(n))))


async def _many(levels: tuple[type[Any], ...], n: int) -> list[int]:
    return await batch.execute_many_async([_tree(levels, i) for i in range(n)])


async def _aiodataloader(levels: tuple[type[Any], ...], n: int) -> list[int]:
    async def load(keys: list[int]) -> list[int]:
        Calls.count += 1
        await asyncio.sleep(_CALL_MS[0] / 1000)
        return [k + 1 for k in keys]

    loaders = [aiodataloader.DataLoader(load) for _ in range(3)]

    async def one(i: int) -> int:
        a = await loaders[0].load(i)
        b = await loaders[1].load(a)
        return int(await loaders[2].load(b))

    return list(await asyncio.gather(*(one(i) for i in range(n))))


_CALL_MS = [1.0]


async def _hand_loop(levels: tuple[type[Any], ...], n: int) -> list[int]:
    """The floor: no library, a bare loop over all trees and a future per caller.

    Each task awaits a future of its own (as a batcher's callers do); one
    driver steps every tree and sends each level's operations in one
    ``run_batch`` call.  Like the raw drivers of W1-W4 it knows the
    workload's shape (every tree yields one operation of one class per
    level) and has no contexts, checks, cancellation or error handling:
    what any batcher of these callers must at least spend, given the event
    loop.
    """
    loop = asyncio.get_running_loop()
    gens = [_tree(levels, i) for i in range(n)]
    futures = [loop.create_future() for _ in range(n)]

    async def drive() -> None:
        ops = [gen.send(None) for gen in gens]
        live, waiting = gens, futures
        while ops:
            results = await ops[0].__class__.run_batch(ops)
            ops, still, still_waiting = [], [], []
            for gen, fut, value in zip(live, waiting, results):
                try:
                    ops.append(gen.send(value))
                except StopIteration as stop:
                    fut.set_result(stop.value)
                    continue
                still.append(gen)
                still_waiting.append(fut)
            live, waiting = still, still_waiting

    driver = loop.create_task(drive())
    out = list(await asyncio.gather(*futures))
    await driver
    return out


async def _async_batcher(levels: tuple[type[Any], ...], n: int) -> list[int]:
    async with batch.AsyncBatcher(max_delay=0) as batcher:
        return list(await asyncio.gather(*(batcher.run(_tree(levels, i)) for i in range(n))))


SceneA = Callable[[tuple[type[Any], ...], int], Coroutine[Any, Any, list[int]]]


def _scene_a_contenders() -> list[tuple[str, SceneA | None]]:
    return [
        (HAND_LOOP, _hand_loop),
        ("execute_async per task", _per_task),
        ("execute_many_async (all roots at once)", _many),
        (f"aiodataloader {AIODATALOADER_VERSION}" if aiodataloader else "aiodataloader",
         _aiodataloader if aiodataloader else None),
        ("AsyncBatcher(max_delay=0)", _async_batcher if hasattr(batch, "AsyncBatcher") else None),
    ]


def measure_a(sizes: W7Sizes, repeat: int, call_ms: float | None = None) -> list[dict[str, Any]]:
    """Scene (a): best and median seconds and run_batch calls per contender.

    ``call_ms`` overrides the await per call (0: what the callers' machinery
    costs, with no fixed wait to dilute it).
    """
    call_ms = sizes.call_ms if call_ms is None else call_ms
    _CALL_MS[0] = call_ms
    levels = tuple(_level(f"Level{k}", call_ms) for k in (1, 2, 3))
    expected = [i + 3 for i in range(sizes.tasks)]
    contenders = _scene_a_contenders()
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    calls: dict[str, int] = {}
    for _ in range(repeat):
        for name, fn in contenders:
            if fn is None:
                continue
            Calls.count = 0

            async def sample(fn: SceneA = fn) -> tuple[float, list[int]]:
                t0 = time.perf_counter()
                out = await fn(levels, sizes.tasks)
                return time.perf_counter() - t0, out

            seconds, out = asyncio.run(sample())
            if out != expected:
                raise AssertionError(f"W7 (a): {name} computed something else")
            times[name].append(seconds)
            calls[name] = Calls.count
    rows = []
    for name, fn in contenders:
        if fn is None:
            rows.append({"contender": name, "status": NOT_AVAILABLE})
            continue
        rows.append({"contender": name, "status": "ok", "best": min(times[name]),
                     "median": statistics.median(times[name]), "calls": calls[name]})
    return rows


# -- (b) threaded callers ---------------------------------------------------------------


@batch.operation
def double(xs: list[int]) -> list[int]:
    """The function both batchers serve: ``x * 2`` for every item."""
    _BATCHES.append(len(xs))
    return [x * 2 for x in xs]


_BATCHES: list[int] = []


def _pybatcher_fn(xs: list[int]) -> list[int]:
    _BATCHES.append(len(xs))
    return [x * 2 for x in xs]


def _threaded(sizes: W7Sizes, call: Callable[[int], int]) -> tuple[float, list[float]]:
    """Every thread makes ``requests`` sequential calls; returns wall seconds and latencies."""
    latencies: list[list[float]] = [[] for _ in range(sizes.threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(sizes.threads + 1)

    def worker(t: int) -> None:
        mine = latencies[t]
        try:
            start.wait()
            for k in range(sizes.requests):
                x = t * sizes.requests + k
                t0 = time.perf_counter()
                if call(x) != 2 * x:
                    raise AssertionError(f"wrong result for {x}")
                mine.append(time.perf_counter() - t0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(sizes.threads)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, [x for lat in latencies for x in lat]


def _new_pybatcher(delay: float) -> Any:
    b = pybatcher.Batcher(_pybatcher_fn, batch_delay=delay, max_batch_size=256)
    atexit.unregister(b.close)  # closed by the sample itself
    return b


def _pybatcher_threads(sizes: W7Sizes) -> tuple[float, list[float]]:
    b = _new_pybatcher(sizes.delay)
    try:
        return _threaded(sizes, lambda x: int(b.submit_request(x).result(timeout=30)))
    finally:
        b.close(timeout=5)


def _dynamic_threads(sizes: W7Sizes) -> tuple[float, list[float]]:
    with batch.DynamicBatcher(max_delay=sizes.delay, max_batch_size=256) as b:
        return _threaded(sizes, lambda x: b.run(double(x)))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_b(sizes: W7Sizes, repeat: int) -> list[dict[str, Any]]:
    """Scene (b): throughput, p50/p99 latency and mean batch size per contender."""
    contenders: list[tuple[str, Callable[[W7Sizes], tuple[float, list[float]]] | None]] = [
        (f"PyBatcher {PYBATCHER_VERSION} (batch_delay={sizes.delay})" if pybatcher else "PyBatcher",
         _pybatcher_threads if pybatcher else None),
        (f"DynamicBatcher(max_delay={sizes.delay})",
         _dynamic_threads if hasattr(batch, "DynamicBatcher") else None),
    ]
    samples: dict[str, list[tuple[float, list[float], list[int]]]] = {n: [] for n, _ in contenders}
    for _ in range(repeat):
        for name, fn in contenders:
            if fn is None:
                continue
            _BATCHES.clear()
            wall, lat = fn(sizes)
            samples[name].append((wall, lat, list(_BATCHES)))
    total = sizes.threads * sizes.requests
    rows = []
    for name, fn in contenders:
        if fn is None:
            rows.append({"contender": name, "status": NOT_AVAILABLE})
            continue
        # The median sample by throughput stands for the contender.
        ranked = sorted(samples[name], key=lambda s: s[0])
        wall, lat, batches = ranked[len(ranked) // 2]
        rows.append({"contender": name, "status": "ok", "requests": total,
                     "best_rps": total / ranked[0][0], "rps": total / wall,
                     "p50_ms": _percentile(lat, 0.50) * 1000, "p99_ms": _percentile(lat, 0.99) * 1000,
                     "mean_batch": sum(batches) / max(1, len(batches)), "calls": len(batches)})
    return rows


# -- (c) burst ------------------------------------------------------------------------------


def _burst(submit: Callable[[int], concurrent.futures.Future[int]], n: int,
           wait: float) -> tuple[float | None, str]:
    """Submit n requests from this thread, wait for all; (seconds or None, status)."""
    futures: list[concurrent.futures.Future[int]] = []
    t0 = time.perf_counter()
    try:
        for x in range(n):
            futures.append(submit(x))
    except Exception as exc:
        status = f"failed after {len(futures):,} submits: {type(exc).__name__}: {exc}"
        concurrent.futures.wait(futures, timeout=wait)
        unresolved = sum(1 for f in futures if not f.done())
        return None, status + (f"; {unresolved:,} futures unresolved" if unresolved else "")
    _done, not_done = concurrent.futures.wait(futures, timeout=wait)
    seconds = time.perf_counter() - t0
    if not_done:
        return None, f"{len(not_done):,} of {n:,} futures unresolved after {wait:.0f} s"
    wrong = sum(1 for x, f in enumerate(futures) if f.exception() is not None or f.result() != 2 * x)
    if wrong:
        return None, f"{wrong:,} of {n:,} futures failed or wrong"
    return seconds, "ok"


def _pybatcher_burst(n: int) -> tuple[float | None, str]:
    b = _new_pybatcher(0.002)
    try:
        return _burst(b.submit_request, n, wait=10)
    finally:
        b.close(timeout=5)


def _dynamic_burst(n: int) -> tuple[float | None, str]:
    with batch.DynamicBatcher(max_delay=0.002, max_batch_size=256) as b:
        return _burst(lambda x: b.submit(double(x)), n, wait=60)


def measure_c(sizes: W7Sizes, repeat: int) -> list[dict[str, Any]]:
    """Scene (c): PyBatcher at growing bursts until one fails; the batcher at the largest."""
    rows: list[dict[str, Any]] = []
    if pybatcher is None:
        rows.append({"contender": "PyBatcher", "status": NOT_AVAILABLE})
    else:
        for n in sizes.bursts:
            best: float | None = None
            status = "ok"
            for _ in range(repeat):
                seconds, status = _pybatcher_burst(n)
                if seconds is None:
                    break
                best = seconds if best is None else min(best, seconds)
            row: dict[str, Any] = {"contender": f"PyBatcher {PYBATCHER_VERSION}", "burst": n,
                                   "status": status}
            if status == "ok" and best is not None:
                row["per_second"] = n / best
            rows.append(row)
            if status != "ok":
                break
    name = "DynamicBatcher(max_delay=0.002)"
    if not hasattr(batch, "DynamicBatcher"):
        rows.append({"contender": name, "status": NOT_AVAILABLE})
        return rows
    best_b: float | None = None
    status = "ok"
    for _ in range(repeat):
        seconds, status = _dynamic_burst(sizes.burst)
        if seconds is None:
            break
        best_b = seconds if best_b is None else min(best_b, seconds)
    row = {"contender": name, "burst": sizes.burst, "status": status}
    if status == "ok" and best_b is not None:
        row["per_second"] = sizes.burst / best_b
    rows.append(row)
    return rows


# -- the section -----------------------------------------------------------------------------


def measure_w7(quick: bool, repeat: int) -> dict[str, Any]:
    """Run the three scenes; the JSON document with the rows and the targets' ratios."""
    sizes = QUICK_W7 if quick else FULL_W7
    # PyBatcher logs a warning for every batch its close() finds not ready.
    # Its loop thread also drops a never-awaited coroutine per batch.
    pyb_log = logging.getLogger("pybatcher")
    level = pyb_log.level
    pyb_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="coroutine .* was never awaited",
                                    category=RuntimeWarning)
            a = measure_a(sizes, repeat)
            a0 = measure_a(sizes, repeat, call_ms=0)
            b = measure_b(sizes, repeat)
            c = measure_c(sizes, repeat)
    finally:
        pyb_log.setLevel(level)
    t = targets(a, b, c, sizes)
    ab0, adl0 = _ok(a0, "AsyncBatcher"), _ok(a0, "aiodataloader")
    if ab0 is not None and adl0 is not None:
        t["a0_vs_aiodataloader"] = ab0["median"] / adl0["median"]
    return {"sizes": sizes.__dict__ | {"bursts": list(sizes.bursts)}, "a": a, "a0": a0, "b": b,
            "c": c, "targets": t}


def _ok(rows: list[dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    for r in rows:
        if r["contender"].startswith(prefix) and r["status"] == "ok":
            return r
    return None


def targets(a: list[dict[str, Any]], b: list[dict[str, Any]], c: list[dict[str, Any]],
            sizes: W7Sizes) -> dict[str, Any]:
    """The issue's targets as measured ratios (None where a contender did not run)."""
    out: dict[str, Any] = {}
    ab = _ok(a, "AsyncBatcher")
    many = _ok(a, "execute_many_async")
    adl = _ok(a, "aiodataloader")
    if ab is not None:
        out["a_calls"] = ab["calls"]
        if many is not None:
            out["a_vs_execute_many_async"] = ab["median"] / many["median"]
        if adl is not None:
            out["a_vs_aiodataloader"] = ab["median"] / adl["median"]
    floor = _ok(a, "hand-written loop")
    if floor is not None:
        if adl is not None:
            out["a_floor_vs_aiodataloader"] = floor["median"] / adl["median"]
        if ab is not None:
            out["a_vs_floor"] = ab["median"] / floor["median"]
    dyn = _ok(b, "DynamicBatcher")
    pyb = _ok(b, "PyBatcher")
    if dyn is not None:
        out["b_p99_ms"] = dyn["p99_ms"]
        out["b_p99_budget_ms"] = sizes.delay * 1000 + 1.5
        # One batch of every thread's request per delay: no batcher can serve more.
        limit = sizes.threads / sizes.delay
        out["b_share_of_limit"] = dyn["rps"] / limit
        if pyb is not None:
            out["b_throughput_vs_pybatcher"] = dyn["rps"] / pyb["rps"]
            out["b_limit_vs_pybatcher"] = limit / pyb["rps"]
    survived = [r for r in c if r["contender"].startswith("PyBatcher") and r["status"] == "ok"]
    mine = _ok(c, "DynamicBatcher")
    if mine is not None:
        out["c_all_resolved"] = True
        if survived:
            out["c_vs_pybatcher_largest_burst"] = mine["per_second"] / survived[-1]["per_second"]
    return out


def _table_a(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"  {'contender':<40} {'best ms':>9} {'median ms':>10} {'calls':>6}"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"  {r['contender']:<40} {r['status']}")
            continue
        lines.append(f"  {r['contender']:<40} {r['best'] * 1000:9.2f} {r['median'] * 1000:10.2f} "
                     f"{r['calls']:6d}")
    return lines


# The targets' lines, in order: (key, what it measures, how its value reads); the
# format gets the value as ``v`` and every target by name.
_TARGET_LINES = [
    ("a_vs_execute_many_async", "(a) AsyncBatcher / execute_many_async time", "{v:.2f}x (target <= 1.5x)"),
    ("a_vs_aiodataloader", "(a) AsyncBatcher / aiodataloader time", "{v:.2f}x (target <= 0.7x)"),
    ("a_floor_vs_aiodataloader", "(a) the hand-written loop (no library) / aiodataloader time",
     "{v:.2f}x (the floor for the 0.7x target)"),
    ("a_vs_floor", "(a) AsyncBatcher / the hand-written loop",
     "{v:.2f}x (what the batcher adds to the floor)"),
    ("a0_vs_aiodataloader", "(a) the same, run_batch awaiting nothing",
     "{v:.2f}x (no target; the machinery alone)"),
    ("b_throughput_vs_pybatcher", "(b) DynamicBatcher / PyBatcher throughput", "{v:.2f}x (target >= 1.4x)"),
    ("b_limit_vs_pybatcher", "(b) the limit (threads / delay requests/s) / PyBatcher throughput",
     "{v:.2f}x (the ceiling for the 1.4x target)"),
    ("b_share_of_limit", "(b) DynamicBatcher / the limit", "{v:.2f}x (what the batcher reaches of it)"),
    ("b_p99_ms", "(b) DynamicBatcher p99", "{v:.2f} ms (target <= {b_p99_budget_ms:.1f} ms)"),
    ("c_vs_pybatcher_largest_burst",
     "(c) DynamicBatcher / PyBatcher burst rate at its largest surviving burst", "{v:.2f}x (target >= 3x)"),
]


def format_w7(doc: dict[str, Any]) -> str:
    """The three tables and the targets, as text."""
    s = doc["sizes"]
    lines = [f"W7 (a): {s['tasks']} asyncio tasks, each a depth-3 tree, async run_batch "
             f"awaiting {s['call_ms']:g} ms per call", *_table_a(doc["a"])]
    if doc.get("a0"):
        lines += ["", "W7 (a) again with run_batch awaiting nothing: the callers' machinery alone",
                  *_table_a(doc["a0"])]
    lines += ["", f"W7 (b): {s['threads']} threads x {s['requests']} sequential requests of x * 2",
              f"  {'contender':<40} {'req/s':>8} {'best':>8} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'batch':>6}"]
    for r in doc["b"]:
        if r["status"] != "ok":
            lines.append(f"  {r['contender']:<40} {r['status']}")
            continue
        lines.append(f"  {r['contender']:<40} {r['rps']:8.0f} {r['best_rps']:8.0f} {r['p50_ms']:7.2f} "
                     f"{r['p99_ms']:7.2f} {r['mean_batch']:6.1f}")
    lines += ["", "W7 (c): a burst of submits from one thread, until every future is resolved",
              f"  {'contender':<40} {'burst':>8} {'submits/s':>10}  status"]
    for r in doc["c"]:
        rate = f"{r['per_second']:10.0f}" if "per_second" in r else f"{'-':>10}"
        lines.append(f"  {r['contender']:<40} {r.get('burst', 0):8,} {rate}  {r['status']}")
    t = doc["targets"]
    lines += ["", "W7 targets (measured in this run; the machine may be busy):"]
    if "a_calls" in t:
        lines.append(f"  (a) AsyncBatcher calls: {t['a_calls']} (target 3)")
    for key, label, reads in _TARGET_LINES:
        if key in t:
            lines.append(f"  {label}: " + reads.format(v=t[key], **t))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    quick = "--quick" in sys.argv
    print(format_w7(measure_w7(quick, 1 if quick else 3)))
