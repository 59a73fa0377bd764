"""Soak tests of the batchers (``-m slow``): big bursts, many threads, cancellations.

Each asserts what a user would: every result right, every future resolved or
cancelled, every generator closed, no thread left behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import random
import threading
from collections.abc import Generator
from typing import Any

import pytest

import batch

pytestmark = pytest.mark.slow

BATCH_SIZES: list[int] = []


@batch.operation
def triple(xs: list[int]) -> list[int]:
    BATCH_SIZES.append(len(xs))
    return [x * 3 for x in xs]


@batch.operation(dedupe=True)
def shared_triple(xs: list[int]) -> list[int]:
    return [x * 3 for x in xs]


def test_a_burst_of_100k_submits_resolves_every_future() -> None:
    BATCH_SIZES.clear()
    threads_before = threading.active_count()
    with batch.DynamicBatcher(max_delay=0.002, max_batch_size=256) as batcher:
        futures = [batcher.submit(triple(i)) for i in range(100_000)]
        _done, not_done = cf.wait(futures, timeout=60)
        assert not not_done
        assert [f.result() for f in futures] == [3 * i for i in range(100_000)]
    assert sum(BATCH_SIZES) == 100_000
    assert max(BATCH_SIZES) <= 256
    assert len(BATCH_SIZES) < 100_000 // 100  # batched, not one by one
    assert batcher._live == {}
    assert threading.active_count() <= threads_before


def test_many_threads_with_cancellations_leave_nothing_behind() -> None:
    closed = []
    lock = threading.Lock()

    def gen_two(x: int) -> Generator[Any, Any, int]:
        try:
            a = yield triple(x)
            b = yield [shared_triple(x % 7), triple(a)]
            return int(b[0] + b[1])
        finally:
            with lock:
                closed.append(x)

    def expected(x: int) -> int:
        return 3 * (x % 7) + 9 * x

    threads_before = threading.active_count()
    outcomes: list[tuple[int, str]] = []
    started = 0
    with batch.DynamicBatcher(max_delay=0.001, max_batch_size=64, max_workers=2) as batcher:
        def caller(seed: int) -> None:
            nonlocal started
            rng = random.Random(seed)
            for k in range(1_500):
                x = seed * 10_000 + k
                kind = rng.random()
                with lock:
                    started += 1
                if kind < 0.5:
                    assert batcher.run(gen_two(x)) == expected(x)
                    outcomes.append((x, "ran"))
                elif kind < 0.8:
                    fut = batcher.submit(gen_two(x))
                    assert fut.result(timeout=30) == expected(x)
                    outcomes.append((x, "ran"))
                else:
                    fut = batcher.submit(gen_two(x))
                    if fut.cancel():
                        outcomes.append((x, "cancelled"))
                    else:
                        assert fut.result(timeout=30) == expected(x)
                        outcomes.append((x, "ran"))

        workers = [threading.Thread(target=caller, args=(s,)) for s in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        assert not any(w.is_alive() for w in workers)
    assert len(outcomes) == started == 8 * 1_500
    # Every generator that started was closed (finished or withdrawn), once.
    assert len(closed) == len(set(closed))
    ran = {x for x, how in outcomes if how == "ran"}
    assert ran <= set(closed)
    assert batcher._live == {}
    assert threading.active_count() <= threads_before


@batch.operation
async def atriple(xs: list[int]) -> list[int]:
    await asyncio.sleep(0.001)
    return [x * 3 for x in xs]


def test_async_batcher_with_thousands_of_tasks_and_cancellations() -> None:
    closed: list[int] = []

    def gen_two(x: int) -> Generator[Any, Any, int]:
        try:
            a = yield atriple(x)
            return int((yield atriple(a)))
        finally:
            closed.append(x)

    async def main() -> tuple[int, int]:
        rng = random.Random(7)
        async with batch.AsyncBatcher(max_batch_size=500) as batcher:
            tasks = [asyncio.ensure_future(batcher.run(gen_two(i))) for i in range(5_000)]
            doomed = rng.sample(range(5_000), 500)
            await asyncio.sleep(0.0005)  # the first level is in flight now
            for i in doomed:
                tasks[i].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        right = sum(r == 9 * i for i, r in enumerate(results))
        return cancelled, right

    cancelled, right = asyncio.run(main())
    assert (cancelled, right) == (500, 4_500)
    assert sorted(closed) == list(range(5_000))  # every tree closed, cancelled or not
