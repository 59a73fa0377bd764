"""``execute_async`` / ``execute_many_async``: async run_batch, concurrency, cancellation.

Every test drives its own event loop with ``asyncio.run`` (no plugin), which
also proves that nothing captures a loop at import or construction time.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Generator
from typing import Any, ClassVar

import pytest

import batch

Interval = tuple[float, float]


def overlap(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


class Log:
    """What the run_batch calls of one test did."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.intervals: dict[str, list[Interval]] = {}
        self.threads: dict[str, int] = {}
        self.cancelled: list[str] = []
        self.running = 0
        self.max_running = 0


LOG = Log()
GENS: list[weakref.ref[Any]] = []


@pytest.fixture(autouse=True)
def fresh_log() -> None:
    global LOG
    LOG = Log()
    GENS.clear()


def track(gen: Any) -> Any:
    """Remember a generator (weakly) to check later that it was closed."""
    GENS.append(weakref.ref(gen))
    return gen


def suspended_generators() -> list[Any]:
    gc.collect()
    return [g for g in (r() for r in GENS) if g is not None and g.gi_frame is not None]


class ASleep(batch.BatchableOperation[Any]):
    """An ``async def run_batch`` that sleeps ``delay`` seconds and echoes ids."""

    delay: ClassVar[float] = 0.0

    def __init__(self, n: Any) -> None:
        self.n = n

    @classmethod
    async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
        name = cls.__name__
        ids = [op.n for op in operations]
        LOG.calls.append((name, ids))
        LOG.running += 1
        LOG.max_running = max(LOG.max_running, LOG.running)
        start = time.perf_counter()
        try:
            await asyncio.sleep(cls.delay)
        except asyncio.CancelledError:
            LOG.cancelled.append(name)
            raise
        finally:
            LOG.running -= 1
        LOG.intervals.setdefault(name, []).append((start, time.perf_counter()))
        return [(name, n) for n in ids]


class SleepA(ASleep):
    delay = 0.2


class SleepB(ASleep):
    delay = 0.2


class SleepC(ASleep):
    delay = 0.02


def gen_pair(n: int) -> Generator[Any, Any, Any]:
    a, b = yield SleepA(n), SleepB(n)
    return a, b


def test_two_async_classes_overlap() -> None:
    t0 = time.perf_counter()
    result = asyncio.run(batch.execute_async(gen_pair(1)))
    elapsed = time.perf_counter() - t0
    assert result == (("SleepA", 1), ("SleepB", 1))
    assert LOG.calls == [("SleepA", [1]), ("SleepB", [1])]
    assert overlap(LOG.intervals["SleepA"][0], LOG.intervals["SleepB"][0])
    assert LOG.max_running == 2
    assert elapsed < 0.38  # serial would need 0.4 s


class Meet(batch.BatchableOperation[str]):
    """Each call waits until every other call of its round has started."""

    events: ClassVar[dict[Any, asyncio.Event]] = {}

    def __init__(self, n: int) -> None:
        self.n = n

    def batch_key(self) -> Any:
        return self.n

    @classmethod
    async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
        n = operations[0].n
        cls.events[n].set()
        for other in cls.events.values():
            await asyncio.wait_for(other.wait(), 5)
        return [f"met {op.n}" for op in operations]


def test_calls_of_a_round_run_concurrently() -> None:
    async def main() -> Any:
        Meet.events = {n: asyncio.Event() for n in range(4)}
        return await batch.execute_async([Meet(n) for n in range(4)])

    assert asyncio.run(main()) == ["met 0", "met 1", "met 2", "met 3"]


def test_max_concurrency_bounds_the_calls_in_flight() -> None:
    class C1(SleepC):
        pass

    class C2(SleepC):
        pass

    class C3(SleepC):
        pass

    def gen() -> Generator[Any, Any, Any]:
        return (yield C1(1), C2(2), C3(3))

    assert asyncio.run(batch.execute_async(gen(), max_concurrency=2)) == [
        ("C1", 1), ("C2", 2), ("C3", 3)]
    assert LOG.max_running == 2
    LOG.max_running = 0
    LOG.intervals.clear()
    assert asyncio.run(batch.execute_async(gen(), max_concurrency=1)) == [
        ("C1", 1), ("C2", 2), ("C3", 3)]
    assert LOG.max_running == 1
    spans = [LOG.intervals[name][0] for name in ("C1", "C2", "C3")]
    assert not overlap(spans[0], spans[1]) and not overlap(spans[1], spans[2])
    assert spans[0][1] <= spans[1][0] <= spans[1][1] <= spans[2][0]  # in group order


def test_max_concurrency_is_validated() -> None:
    for bad in (0, -2, 1.0, True):
        with pytest.raises(ValueError, match=r"^max_concurrency= must be a positive int or None, got "):
            asyncio.run(batch.execute_async(SleepC(1), max_concurrency=bad))  # type: ignore[arg-type]


class SyncInLoop(batch.BatchableOperation[Any]):
    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        asyncio.get_running_loop()  # raises RuntimeError outside the loop's thread
        LOG.threads[cls.__name__] = threading.get_ident()
        LOG.calls.append((cls.__name__, [op.n for op in operations]))
        return [op.n + 1 for op in operations]


class Blocking(batch.BatchableOperation[Any]):
    blocking = True
    delay: ClassVar[float] = 0.2

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        LOG.threads[cls.__name__] = threading.get_ident()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:  # pragma: no cover  (the assertion below reports it)
            LOG.threads[cls.__name__] = -1
        LOG.calls.append((cls.__name__, [op.n for op in operations]))
        time.sleep(cls.delay)
        return [op.n * 2 for op in operations]


def test_sync_run_batch_runs_in_the_loop_unless_blocking() -> None:
    ticks: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    async def main() -> Any:
        stop = asyncio.Event()
        tick_task = asyncio.create_task(ticker(stop))
        await asyncio.sleep(0)
        try:
            return await batch.execute_async([SyncInLoop(1), Blocking(2)])
        finally:
            stop.set()
            await tick_task

    before = len(ticks)
    assert asyncio.run(main()) == [2, 4]
    assert sorted(LOG.calls) == [("Blocking", [2]), ("SyncInLoop", [1])]
    assert LOG.threads["SyncInLoop"] == threading.get_ident()
    assert LOG.threads["Blocking"] not in (threading.get_ident(), -1)
    # The loop kept running while the blocking run_batch slept for 0.2 s.
    assert len(ticks) - before >= 5


def test_blocking_calls_of_one_round_overlap() -> None:
    class B1(Blocking):
        delay = 0.2

    class B2(Blocking):
        delay = 0.2

    t0 = time.perf_counter()
    assert asyncio.run(batch.execute_async([B1(1), B2(2)])) == [2, 4]
    assert time.perf_counter() - t0 < 0.38
    assert LOG.threads["B1"] != LOG.threads["B2"]


class Query(batch.BatchableOperation[int]):
    async_calls: ClassVar[int] = 0

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
        await asyncio.sleep(0)
        LOG.calls.append(("Query", [op.n for op in operations]))
        return [op.n * 100 for op in operations]


class Layered(batch.BatchableOperation[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> Generator[Any, Any, list[int]]:
        LOG.calls.append(("Layered", [op.n for op in operations]))
        rows = yield [Query(op.n) for op in operations]
        return [r + 1 for r in rows]


def test_layered_run_batch_with_async_leaves() -> None:
    def gen_root() -> Generator[Any, Any, Any]:
        a, b, c = yield Layered(1), Layered(2), SyncInLoop(9)
        d = yield Query(5)
        return a, b, c, d

    trace = batch.Trace()
    assert asyncio.run(batch.execute_async(gen_root(), trace=trace)) == (101, 201, 10, 500)
    # A generator run_batch's body runs in the step phase after its dispatch.
    assert LOG.calls == [("SyncInLoop", [9]), ("Layered", [1, 2]), ("Query", [1, 2]), ("Query", [5])]
    assert [[(b.name, b.size) for b in r.batches] for r in trace.rounds] == [
        [("Layered", 2), ("SyncInLoop", 1)], [("Query", 2)], [("Query", 1)]]


class Flaky(batch.BatchableOperation[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
        await asyncio.sleep(0)
        if any(op.n < 0 for op in operations):
            raise ConnectionError("negative ids are not served")
        return [KeyError(op.n) if op.n == 13 else op.n for op in operations]


def test_async_errors_per_operation_and_per_call() -> None:
    def gen_get(n: int) -> Generator[Any, Any, Any]:
        try:
            return (yield Flaky(n))
        except KeyError as exc:
            return f"missing {exc}"

    def gen_root() -> Generator[Any, Any, Any]:
        ok = yield [gen_get(1), gen_get(13), gen_get(2)]
        try:
            yield [Flaky(3), Flaky(-1)]
        except ConnectionError as exc:
            return ok, str(exc)
        return ok, None

    assert asyncio.run(batch.execute_async(gen_root())) == (
        [1, "missing 13", 2], "negative ids are not served")


def test_async_wrong_result_count_is_a_batch_result_error() -> None:
    class Short(batch.BatchableOperation[int]):
        @classmethod
        async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
            return []

    with pytest.raises(batch.BatchResultError, match=r"Short\.run_batch returned 0 results for 2 operations"):
        asyncio.run(batch.execute_async([Short(), Short()]))


def test_async_run_batch_needs_the_async_executor() -> None:
    with pytest.raises(batch.BatchError, match=r"SleepC\.run_batch returned an awaitable; an async "
                       r"run_batch needs the async executor: await batch\.execute_async"):
        batch.execute(SleepC(1))
    with pytest.raises(batch.BatchError, match=r"returned an awaitable"):
        batch.execute([SleepC(1), SleepA(2)], max_workers=2)


def test_yielding_a_coroutine_points_to_async_run_batch() -> None:
    async def fetch() -> int:
        return 1  # pragma: no cover

    def gen() -> Generator[Any, Any, Any]:
        coro = fetch()
        try:
            return (yield coro)
        finally:
            coro.close()

    with pytest.raises(batch.YieldTypeError, match=r"yielded coroutine \(a coroutine cannot be yielded; "
                       r"make run_batch async instead, with execute_async\)"):
        asyncio.run(batch.execute_async(gen()))


def test_execute_many_async_return_exceptions() -> None:
    def gen_fail() -> Generator[Any, Any, Any]:
        yield SleepC(1)
        raise LookupError("nope")

    async def main() -> Any:
        return await batch.execute_many_async([gen_pair(1), gen_fail(), SleepC(2)],
                                              return_exceptions=True)

    SleepA.delay = SleepB.delay = 0.0
    try:
        a, b, c = asyncio.run(main())
    finally:
        SleepA.delay = SleepB.delay = 0.2
    assert a == (("SleepA", 1), ("SleepB", 1))
    assert isinstance(b, LookupError) and str(b) == "nope"
    assert c == ("SleepC", 2)
    assert LOG.calls == [("SleepA", [1]), ("SleepB", [1]), ("SleepC", [1, 2])]


def test_batch_executor_execute_async() -> None:
    assert asyncio.run(batch.BatchExecutor.execute_async(SleepC(7))) == ("SleepC", 7)  # type: ignore[arg-type]


# -- cancellation ---------------------------------------------------------------


def _closing_tree(events: list[str], *ops: Any) -> Any:
    def gen_leaf(op: Any) -> Generator[Any, Any, Any]:
        try:
            first = yield op
            yield SleepC("never")  # pragma: no cover  (cancelled before)
            return first  # pragma: no cover
        finally:
            events.append(f"closed {op.n}")

    def gen_root() -> Generator[Any, Any, Any]:
        try:
            return (yield [track(gen_leaf(op)) for op in ops])
        finally:
            events.append("closed root")

    return track(gen_root())


@pytest.mark.parametrize("ops", [
    pytest.param(lambda: [SleepA(1)], id="one call"),
    pytest.param(lambda: [SleepA(1), SleepB(2)], id="two calls"),
])
def test_cancelling_the_awaiting_task_closes_everything(ops: Any) -> None:
    events: list[str] = []
    SleepA.delay = SleepB.delay = 5.0

    async def main() -> None:
        task = asyncio.create_task(batch.execute_async(_closing_tree(events, *ops())))
        while LOG.running < len(ops()):
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.perf_counter() - t0 < 1
        assert asyncio.all_tasks() == {asyncio.current_task()}

    try:
        asyncio.run(main())
    finally:
        SleepA.delay = SleepB.delay = 0.2
    n = len(ops())
    assert sorted(LOG.cancelled) == ["SleepA", "SleepB"][:n]
    assert LOG.running == 0
    assert sorted(events) == [*(f"closed {i}" for i in range(1, n + 1)), "closed root"]
    assert events[-1] == "closed root"  # children first
    assert suspended_generators() == []


def test_cancelling_during_a_blocking_call_closes_promptly() -> None:
    events: list[str] = []

    class Slow(Blocking):
        delay = 0.5

    async def main() -> None:
        task = asyncio.create_task(batch.execute_async(_closing_tree(events, Slow(1))))
        while "Slow" not in LOG.threads:
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.perf_counter() - t0 < 0.3  # does not wait for the thread
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())
    assert events == ["closed 1", "closed root"]
    assert suspended_generators() == []


def test_a_failing_root_cancels_nothing_and_closes_the_rest() -> None:
    events: list[str] = []

    def gen_fail() -> Generator[Any, Any, Any]:
        yield SleepC(0)
        raise ValueError("root 0 failed")

    async def main() -> None:
        with pytest.raises(ValueError, match=r"^root 0 failed"):
            await batch.execute_many_async([track(gen_fail()), _closing_tree(events, SleepC(1))])
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())
    # The second root's leaf got its first result, then was closed at its second yield.
    assert events == ["closed 1", "closed root"]
    assert LOG.calls == [("SleepC", [0, 1])]
    assert suspended_generators() == []


# -- event loops ------------------------------------------------------------------


def test_runs_under_successive_and_custom_event_loops() -> None:
    def gen() -> Generator[Any, Any, Any]:
        a = yield SleepC(1), Blocking(2)
        b = yield SleepC(3)
        return a, b

    Blocking.delay = 0.0
    try:
        expected = ([("SleepC", 1), 4], ("SleepC", 3))
        assert asyncio.run(batch.execute_async(gen(), max_concurrency=1)) == expected
        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(batch.execute_async(gen(), max_concurrency=1)) == expected
        finally:
            loop.close()
        assert asyncio.run(batch.execute_async(gen(), max_concurrency=1)) == expected
        # A coroutine made before any loop exists runs in the loop that awaits it.
        coro = batch.execute_async(gen(), max_concurrency=2)
        assert asyncio.run(coro) == expected  # type: ignore[arg-type]
    finally:
        Blocking.delay = 0.2


def test_runs_in_two_loops_in_two_threads_at_once() -> None:
    barrier = threading.Barrier(2, timeout=5)
    results: dict[int, Any] = {}

    class Both(batch.BatchableOperation[int]):
        def __init__(self, n: int) -> None:
            self.n = n

        @classmethod
        async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
            await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
            return [op.n for op in operations]

    def worker(n: int) -> None:
        results[n] = asyncio.run(batch.execute_async([Both(n), Both(n + 10)], max_concurrency=1))

    threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {1: [1, 11], 2: [2, 12]}
    assert not barrier.broken


def test_two_executions_awaited_concurrently_in_one_loop_are_independent() -> None:

    class Cross(batch.BatchableOperation[str]):
        events: ClassVar[dict[int, asyncio.Event]] = {}

        def __init__(self, n: int) -> None:
            self.n = n

        @classmethod
        async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
            ids = [op.n for op in operations]
            LOG.calls.append(("Cross", ids))
            cls.events[ids[0]].set()
            other = 2 if ids[0] == 1 else 1
            await asyncio.wait_for(cls.events[other].wait(), 5)  # only if both run at once
            return [f"cross {n}" for n in ids]

    def gen(n: int) -> Generator[Any, Any, Any]:
        a = yield Cross(n)
        b = yield SleepC(n)
        return a, b

    async def main() -> Any:
        Cross.events = {1: asyncio.Event(), 2: asyncio.Event()}
        t1, t2 = batch.Trace(), batch.Trace()
        out = await asyncio.gather(batch.execute_async(gen(1), trace=t1),
                                   batch.execute_async(gen(2), trace=t2))
        return out, t1, t2

    (r1, r2), t1, t2 = asyncio.run(main())
    assert r1 == ("cross 1", ("SleepC", 1))
    assert r2 == ("cross 2", ("SleepC", 2))
    # Two executions: their operations never share a batch.
    assert sorted(LOG.calls) == [("Cross", [1]), ("Cross", [2]), ("SleepC", [1]), ("SleepC", [2])]
    for t in (t1, t2):
        shapes = [[(b.name.rsplit(".", 1)[-1], b.size) for b in r.batches] for r in t.rounds]
        assert shapes == [[("Cross", 1)], [("SleepC", 1)]]


def test_other_tasks_run_between_rounds() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def gen_chain(n: int) -> Generator[Any, Any, Any]:
        for i in range(n):
            yield SyncInLoop(i)
        return n

    async def main() -> Any:
        task = asyncio.create_task(ticker())
        try:
            return await batch.execute_async(gen_chain(20))
        finally:
            task.cancel()

    assert asyncio.run(main()) == 20
    assert len(LOG.calls) == 20
    assert ticks >= 10  # the ticker ran between (most) rounds


class Cached(batch.BatchableOperation[int]):
    cache_results = True

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cached) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)

    @classmethod
    async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
        LOG.calls.append(("Cached", [op.n for op in operations]))
        await asyncio.sleep(0.02)
        return [op.n for op in operations]


def test_concurrent_executions_sharing_a_cache_run_an_operation_once() -> None:
    async def main() -> Any:
        cache = batch.OperationCache()
        both = await asyncio.gather(batch.execute_async(Cached(1), cache=cache),
                                    batch.execute_async(Cached(1), cache=cache))
        again = await batch.execute_async(Cached(1), cache=cache)
        return both, again

    assert asyncio.run(main()) == ([1, 1], 1)
    assert LOG.calls == [("Cached", [1])]
