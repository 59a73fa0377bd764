"""W6: the fixed cost of one execution, as a server pays it per request.

Each request is a root that yields one operation and returns its result: the
smallest tree there is, so what is measured is the per-execution cost of each
contender (setting up, one round, tearing down), not the per-operation cost
that W1-W4 measure.  Contenders, in one run:

- raw: the generator driven by hand (``send``, ``run_batch([op])``, ``send``):
  the floor, and the base of the ``x raw`` column;
- ``batch.execute(root)`` per request (a root that yields operations and
  sub-generators takes the executor's short path, see ``batch/_short.py``),
  and the same request with its sub-generator yielded in a list, which the
  full executor runs: what a request pays once the short path does not apply;
- ``await batch.execute_async(root)`` per request, one after another, and
  all requests at once (``asyncio.gather`` of one ``execute_async`` each);
- aiodataloader (when installed): a fresh ``DataLoader`` per request,
  ``await loader.load(key)``, one after another and all at once.

Samples are interleaved (one of each contender per pass) and the best of
``repeat`` passes is reported, in microseconds per request.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Generator
from typing import Any

import batch

try:
    import aiodataloader

    AIODATALOADER = getattr(aiodataloader, "__version__", None) or "0.4"
except ImportError:  # pragma: no cover  (the bench extra installs it)
    aiodataloader = None
    AIODATALOADER = ""

__all__ = ["format_w6", "measure_w6"]


class Double(batch.BatchableOperation[int]):
    """The request's one operation."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    @classmethod
    def run_batch(cls, operations: list[Double]) -> list[int]:
        return [op.key * 2 for op in operations]


def gen_request(key: int) -> Generator[Any, Any, int]:
    """One request: one operation, then return."""
    value: int = yield Double(key)
    return value


def gen_request_nested(key: int) -> Generator[Any, Any, int]:
    """The same request, a sub-generator yielded in a list: run by the full executor."""
    value: int
    (value,) = yield [gen_request(key)]
    return value


def _raw(n: int) -> int:
    total = 0
    for key in range(n):
        gen = gen_request(key)
        op = gen.send(None)
        results = Double.run_batch([op])
        try:
            gen.send(results[0])
        except StopIteration as stop:
            total += stop.value
    return total


def _execute(n: int) -> int:
    execute = batch.execute
    return sum(execute(gen_request(key)) for key in range(n))


def _execute_core(n: int) -> int:
    execute = batch.execute
    return sum(execute(gen_request_nested(key)) for key in range(n))


def _async_sequential(n: int) -> int:
    async def main() -> int:
        total = 0
        for key in range(n):
            total += await batch.execute_async(gen_request(key))
        return total

    return asyncio.run(main())


def _async_at_once(n: int) -> int:
    async def main() -> int:
        return sum(await asyncio.gather(*[batch.execute_async(gen_request(k)) for k in range(n)]))

    return asyncio.run(main())


async def _load_batch(keys: list[int]) -> list[int]:
    return [k * 2 for k in keys]


def _dataloader_sequential(n: int) -> int:
    async def main() -> int:
        total = 0
        for key in range(n):
            loader = aiodataloader.DataLoader(_load_batch)
            total += await loader.load(key)
        return total

    return asyncio.run(main())


def _dataloader_at_once(n: int) -> int:
    async def one(key: int) -> int:
        loader = aiodataloader.DataLoader(_load_batch)
        value: int = await loader.load(key)
        return value

    async def main() -> int:
        return sum(await asyncio.gather(*[one(k) for k in range(n)]))

    return asyncio.run(main())


RAW = "raw generator driven by hand"
EXECUTE = "batch.execute(root)"
EXECUTE_CORE = "batch.execute(root), [sub-generator] (full executor)"
ASYNC_SEQ = "await batch.execute_async(root), one after another"
ASYNC_ALL = "execute_async, all requests at once (gather)"
ADL_SEQ = "aiodataloader, fresh loader per request, one after another"
ADL_ALL = "aiodataloader, fresh loader per request, all at once"


def _contenders() -> list[tuple[str, Callable[[int], int] | None]]:
    have = aiodataloader is not None
    return [
        (RAW, _raw),
        (EXECUTE, _execute),
        (EXECUTE_CORE, _execute_core),
        (ASYNC_SEQ, _async_sequential),
        (ASYNC_ALL, _async_at_once),
        (ADL_SEQ, _dataloader_sequential if have else None),
        (ADL_ALL, _dataloader_at_once if have else None),
    ]


def measure_w6(requests: int, repeat: int) -> dict[str, Any]:
    """Time every contender on ``requests`` requests; best of ``repeat`` interleaved passes."""
    expected = sum(k * 2 for k in range(requests))
    contenders = _contenders()
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, fn in contenders:
            if fn is None:
                continue
            gc.collect()
            t0 = time.perf_counter()
            got = fn(requests)
            seconds = time.perf_counter() - t0
            if got != expected:
                raise AssertionError(f"W6 {name}: computed {got}, expected {expected}")
            best[name] = min(best.get(name, float("inf")), seconds)
    rows = []
    raw_us = best[RAW] / requests * 1e6
    for name, fn in contenders:
        if fn is None:
            rows.append({"contender": name, "status": "not installed"})
            continue
        us = best[name] / requests * 1e6
        rows.append({"contender": name, "status": "ok", "us_per_request": us,
                     "x_raw": us / raw_us})
    ratios: dict[str, float] = {"execute_x_raw": best[EXECUTE] / best[RAW],
                                "execute_core_x_raw": best[EXECUTE_CORE] / best[RAW]}
    if ADL_SEQ in best:
        ratios["async_sequential_vs_aiodataloader"] = best[ASYNC_SEQ] / best[ADL_SEQ]
        ratios["async_at_once_vs_aiodataloader"] = best[ASYNC_ALL] / best[ADL_ALL]
    return {"requests": requests, "repeat": repeat, "rows": rows, "ratios": ratios,
            "aiodataloader": AIODATALOADER or "not installed"}


def format_w6(doc: dict[str, Any]) -> str:
    """The W6 table and the ratios the targets are stated in."""
    lines = [f"W6: {doc['requests']:,} requests, each a root that yields one operation "
             f"(per-execution cost; best of {doc['repeat']})",
             f"{'contender':60} {'us/request':>11} {'x raw':>8}", "-" * 81]
    for row in doc["rows"]:
        if row["status"] != "ok":
            lines.append(f"{row['contender']:60} {row['status']:>20}")
            continue
        lines.append(f"{row['contender']:60} {row['us_per_request']:11.2f} {row['x_raw']:8.2f}")
    r = doc["ratios"]
    lines.append(f"execute: {r['execute_x_raw']:.2f}x raw (target <= 8); through the full "
                 f"executor: {r['execute_core_x_raw']:.2f}x")
    if "async_sequential_vs_aiodataloader" in r:
        lines.append(f"execute_async one after another: {r['async_sequential_vs_aiodataloader']:.2f}x "
                     f"aiodataloader's time (target <= 0.5); all at once: "
                     f"{r['async_at_once_vs_aiodataloader']:.2f}x (target <= 0.5)")
    return "\n".join(lines)
