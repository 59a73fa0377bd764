"""``DynamicBatcher`` and ``AsyncBatcher``: the trees of many callers share rounds.

Batch shapes are asserted exactly (``calls == [[1, 2, 3], [2, 4, 6]]``).
Tests that need several callers in one round make it deterministic with
manual mode (``max_delay=None``) and ``max_batch_size`` or ``flush()``, not
with sleeps; timing tests only bound what cannot happen too early.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import math
import sys
import threading
import time
from collections.abc import Generator
from typing import Any

import pytest

import batch

Gen = Generator[Any, Any, Any]
CALLS: list[list[Any]] = []
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


@pytest.fixture(autouse=True)
def fresh() -> Generator[None, None, None]:
    CALLS.clear()
    before = threading.active_count()
    yield
    # Every batcher a test made was closed: its threads are gone.
    deadline = time.monotonic() + 2
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before, threading.enumerate()


@batch.operation
def double(xs: list[int]) -> list[int]:
    CALLS.append(list(xs))
    return [x * 2 for x in xs]


@batch.operation(dedupe=True)
def shared_double(xs: list[int]) -> list[int]:
    CALLS.append(list(xs))
    return [x * 2 for x in xs]


@batch.operation
def fails_odd(xs: list[int]) -> list[int | Exception]:
    CALLS.append(list(xs))
    return [ValueError(f"odd {x}") if x % 2 else x for x in xs]


@batch.operation
async def adouble(xs: list[int]) -> list[int]:
    CALLS.append(list(xs))
    await asyncio.sleep(0.001)
    return [x * 2 for x in xs]


def gen_twice(x: int) -> Gen:
    a = yield double(x)
    b = yield double(a)
    return b


def gen_depth3(x: int, op: Any = adouble) -> Gen:
    a = yield op(x)
    b = yield op(a)
    c = yield op(b)
    return c


def wait_until(check: Any, timeout: float = 5) -> None:
    """Poll ``check()`` until it is true (the driver thread works on its own time)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.002)


def in_threads(n: int, fn: Any) -> list[Any]:
    """Run fn(i) in n threads at once; their results (or exceptions), in order."""
    out: list[Any] = [None] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        try:
            out[i] = fn(i)
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


# -- DynamicBatcher: sharing rounds ---------------------------------------------------------


def test_threads_share_one_call_per_level() -> None:
    # A group goes when it holds 8 operations: the 8 threads' trees share both rounds.
    trace = batch.Trace()
    with batch.DynamicBatcher(max_delay=None, max_batch_size=8, trace=trace) as batcher:
        results = in_threads(8, lambda i: batcher.run(gen_twice(i)))
    assert results == [4 * i for i in range(8)]
    assert [sorted(c) for c in CALLS] == [list(range(8)), [2 * i for i in range(8)]]
    assert trace.round_count == 2


def test_submit_returns_a_future_and_run_takes_an_operation() -> None:
    with batch.DynamicBatcher(max_delay=0) as batcher:
        fut = batcher.submit(gen_twice(5))
        assert batcher.run(double(21)) == 42
        assert batcher.run([double(1), {"k": double(2)}]) == [2, {"k": 4}]
        assert fut.result(timeout=5) == 20


def test_arun_from_an_event_loop() -> None:
    with batch.DynamicBatcher(max_delay=None, max_batch_size=3) as batcher:
        async def main() -> list[Any]:
            return list(await asyncio.gather(*(batcher.arun(double(i)) for i in range(3))))

        assert asyncio.run(main()) == [0, 2, 4]
    assert CALLS == [[0, 1, 2]]


def test_a_group_waits_max_delay_from_its_first_operation() -> None:
    with batch.DynamicBatcher(max_delay=0.5) as batcher:
        t0 = time.monotonic()
        first = batcher.submit(double(1))
        time.sleep(0.05)
        second = batcher.submit(double(2))  # joins the group that is waiting
        assert first.result(5) == 2 and second.result(5) == 4
        waited = time.monotonic() - t0
    assert 0.5 <= waited < 3
    assert CALLS == [[1, 2]]


def test_a_full_group_goes_at_once() -> None:
    with batch.DynamicBatcher(max_delay=30, max_batch_size=3) as batcher:
        t0 = time.monotonic()
        futures = [batcher.submit(double(i)) for i in range(3)]
        assert [f.result(5) for f in futures] == [0, 2, 4]
        assert time.monotonic() - t0 < 5
    assert CALLS == [[0, 1, 2]]


def test_manual_mode_sends_on_flush_only() -> None:
    with batch.DynamicBatcher(max_delay=None) as batcher:
        futures = [batcher.submit(double(i)) for i in range(3)]
        time.sleep(0.05)
        assert not any(f.done() for f in futures)
        batcher.flush()
        assert [f.result(5) for f in futures] == [0, 2, 4]
    assert CALLS == [[0, 1, 2]]


def test_min_batch_size_holds_a_small_group_until_flush() -> None:
    with batch.DynamicBatcher(max_delay=0, min_batch_size=3) as batcher:
        a, b = batcher.submit(double(1)), batcher.submit(double(2))
        time.sleep(0.05)
        assert not a.done() and not b.done()
        c = batcher.submit(double(3))  # the third: the group may go
        assert [a.result(5), b.result(5), c.result(5)] == [2, 4, 6]
        d = batcher.submit(double(4))
        time.sleep(0.05)
        assert not d.done()
        batcher.flush()  # sends it anyway
        assert d.result(5) == 8
    assert CALLS == [[1, 2, 3], [4]]


def test_one_worker_means_operations_wait_and_go_together() -> None:
    release = threading.Event()
    started = threading.Event()

    @batch.operation
    def slow(xs: list[int]) -> list[int]:
        CALLS.append(list(xs))
        started.set()
        release.wait(5)
        return xs

    with batch.DynamicBatcher(max_delay=0, max_workers=1) as batcher:
        first = batcher.submit(slow(0))
        assert started.wait(5)
        rest = [batcher.submit(slow(i)) for i in range(1, 6)]
        time.sleep(0.05)
        release.set()
        assert [first.result(5)] + [f.result(5) for f in rest] == list(range(6))
    assert CALLS == [[0], [1, 2, 3, 4, 5]]


def test_max_workers_lets_calls_of_different_groups_overlap() -> None:
    both = threading.Barrier(2, timeout=5)

    @batch.operation
    def left(xs: list[int]) -> list[int]:
        both.wait()  # returns only if right's call runs at the same time
        return xs

    @batch.operation
    def right(xs: list[int]) -> list[int]:
        both.wait()
        return [-x for x in xs]

    with batch.DynamicBatcher(max_delay=0, max_workers=2) as batcher:
        a = batcher.submit(left(1))
        b = batcher.submit(right(2))
        assert (a.result(5), b.result(5)) == (1, -2)


# -- DynamicBatcher: each caller gets its own ------------------------------------------------


def test_each_caller_gets_its_own_result_or_error() -> None:
    def gen(x: int) -> Gen:
        v = yield fails_odd(x)
        return v

    with batch.DynamicBatcher(max_delay=None, max_batch_size=4) as batcher:
        results = in_threads(4, lambda i: batcher.run(gen(i)))
    assert results[0] == 0 and results[2] == 2
    assert [type(r) for r in results[1::2]] == [ValueError, ValueError]
    assert str(results[1]) == "odd 1" and str(results[3]) == "odd 3"
    assert len(CALLS) == 1 and sorted(CALLS[0]) == [0, 1, 2, 3]  # one call, threads in any order


def test_a_raising_generator_fails_its_caller_only() -> None:
    def gen_bad() -> Gen:
        yield double(1)
        raise KeyError("mine")

    with batch.DynamicBatcher(max_delay=0) as batcher:
        bad = batcher.submit(gen_bad())
        good = batcher.submit(gen_twice(3))
        with pytest.raises(KeyError, match="mine"):
            bad.result(5)
        assert good.result(5) == 12


def test_each_caller_has_its_own_contextvars() -> None:
    def gen_read() -> Gen:
        yield double(0)
        return VAR.get()

    with batch.DynamicBatcher(max_delay=None, max_batch_size=4) as batcher:
        def one(i: int) -> str:
            VAR.set(f"caller {i}")
            return batcher.run(gen_read())

        assert in_threads(4, one) == [f"caller {i}" for i in range(4)]


def test_cancel_closes_that_callers_tree_and_withdraws_its_operations() -> None:
    closed: list[str] = []
    started: list[str] = []

    def gen(name: str, x: int, op: Any = double) -> Gen:
        started.append(name)
        try:
            return (yield op(x))
        finally:
            closed.append(name)

    with batch.DynamicBatcher(max_delay=None) as batcher:
        keep = batcher.submit(gen("keep", 1))
        drop = batcher.submit(gen("drop", 2))
        wait_until(lambda: len(started) == 2)  # both wait in the queued group
        assert drop.cancel()
        wait_until(lambda: closed == ["drop"])
        batcher.flush()
        assert keep.result(5) == 2
    assert CALLS == [[1]]  # the cancelled caller's operation was not sent
    assert drop.cancelled()


def test_cancel_leaves_a_shared_operation_to_the_others() -> None:
    with batch.DynamicBatcher(max_delay=None) as batcher:
        keep = batcher.submit(shared_double(7))
        drop = batcher.submit(shared_double(7))
        time.sleep(0.05)
        drop.cancel()
        time.sleep(0.05)
        batcher.flush()
        assert keep.result(5) == 14
    assert CALLS == [[7]]


def test_cancel_after_the_call_went_out_drops_only_that_answer() -> None:
    release = threading.Event()
    started = threading.Event()

    @batch.operation
    def slow(xs: list[int]) -> list[int]:
        CALLS.append(list(xs))
        started.set()
        release.wait(5)
        return xs

    with batch.DynamicBatcher(max_delay=None, max_workers=2) as batcher:
        a, b = batcher.submit(slow(1)), batcher.submit(slow(2))
        time.sleep(0.05)
        batcher.flush()
        assert started.wait(5)
        assert b.cancel()  # the call is running: b's answer will be dropped
        release.set()
        assert a.result(5) == 1
    assert b.cancelled() and CALLS == [[1, 2]]


def test_close_drains_everything_submitted_before() -> None:
    batcher = batch.DynamicBatcher(max_delay=None)  # manual: only close() sends
    futures = [batcher.submit(gen_twice(i)) for i in range(5)]
    batcher.close()
    assert [f.result(0) for f in futures] == [4 * i for i in range(5)]
    with pytest.raises(batch.BatchError, match=r"DynamicBatcher.submit\(\): the batcher is closed; "
                                               r"submit before close\(\)"):
        batcher.submit(double(1))
    batcher.close()  # again: nothing to do


def test_run_from_inside_the_batchers_own_thread_is_refused() -> None:
    with batch.DynamicBatcher(max_delay=0) as batcher:
        def gen_nested() -> Gen:
            yield double(1)
            return batcher.run(double(2))

        with pytest.raises(batch.BatchError, match=r"DynamicBatcher.run\(\) was called from inside the "
                                                   r"batcher's own thread .* yield it instead: "
                                                   r"`result = yield double\(\.\.\.\)`"):
            batcher.run(gen_nested())


@batch.operation(cache_results=True)
def cached(xs: list[int]) -> list[int]:
    CALLS.append(list(xs))
    return [x + 100 for x in xs]


def test_cache_is_shared_by_every_caller() -> None:
    cache = batch.OperationCache()
    with batch.DynamicBatcher(max_delay=0, cache=cache) as batcher:
        assert batcher.run(cached(1)) == 101
        assert batcher.run([cached(1), cached(2)]) == [101, 102]
    assert CALLS == [[1], [2]]
    assert cache.get(cached(2)) == 102


def test_an_async_operation_runs_on_the_batchers_thread() -> None:
    with batch.DynamicBatcher(max_delay=None, max_batch_size=2) as batcher:
        assert in_threads(2, lambda i: batcher.run(adouble(i))) == [0, 2]


def test_no_thread_before_first_use_and_none_after_close() -> None:
    before = threading.active_count()
    batcher = batch.DynamicBatcher()
    assert threading.active_count() == before
    batcher.run(double(1))
    batcher.close()
    assert threading.active_count() == before


# -- AsyncBatcher ---------------------------------------------------------------------------


def test_async_tasks_share_one_call_per_level() -> None:
    async def main() -> list[Any]:
        async with batch.AsyncBatcher() as batcher:
            return list(await asyncio.gather(*(batcher.run(gen_depth3(i)) for i in range(200))))

    assert asyncio.run(main()) == [8 * i for i in range(200)]
    assert len(CALLS) == 3 and CALLS[0] == list(range(200))


def test_async_batcher_is_bound_to_its_first_loop() -> None:
    batcher = batch.AsyncBatcher()

    async def use() -> Any:
        return await batcher.run(double(1))

    assert asyncio.run(use()) == 2
    with pytest.raises(batch.BatchError, match=r"AsyncBatcher.run\(\): this batcher is bound to the event "
                                               r"loop that first used it, and this call runs in another "
                                               r"one; make one AsyncBatcher per event loop"):
        asyncio.run(use())


def test_async_max_delay_waits_for_more() -> None:
    async def main() -> tuple[list[int], float]:
        async with batch.AsyncBatcher(max_delay=0.5) as batcher:
            t0 = time.monotonic()
            first = asyncio.ensure_future(batcher.run(double(1)))
            await asyncio.sleep(0.03)
            second = await batcher.run(double(2))
            return [await first, second], time.monotonic() - t0

    values, waited = asyncio.run(main())
    assert values == [2, 4] and 0.5 <= waited < 3
    assert CALLS == [[1, 2]]


def test_async_manual_mode_and_flush() -> None:
    async def main() -> list[int]:
        batcher = batch.AsyncBatcher(max_delay=None)
        tasks = [asyncio.ensure_future(batcher.run(double(i))) for i in range(3)]
        await asyncio.sleep(0.02)
        assert not any(t.done() for t in tasks)
        batcher.flush()
        values = [await t for t in tasks]
        await batcher.aclose()
        return values

    assert asyncio.run(main()) == [0, 2, 4]
    assert CALLS == [[0, 1, 2]]


def test_async_cancel_closes_the_tasks_tree_only() -> None:
    closed: list[str] = []

    def gen(name: str, x: int) -> Gen:
        try:
            return (yield double(x))
        finally:
            closed.append(name)

    async def main() -> int:
        async with batch.AsyncBatcher(max_delay=None) as batcher:
            keep = asyncio.ensure_future(batcher.run(gen("keep", 1)))
            drop = asyncio.ensure_future(batcher.run(gen("drop", 2)))
            await asyncio.sleep(0.01)
            drop.cancel()
            await asyncio.sleep(0.01)
            assert closed == ["drop"]
            batcher.flush()
            return await keep

    assert asyncio.run(main()) == 2
    assert CALLS == [[1]]


def test_async_aclose_drains_then_refuses() -> None:
    async def main() -> None:
        batcher = batch.AsyncBatcher(max_delay=None)
        tasks = [asyncio.ensure_future(batcher.run(gen_depth3(i))) for i in range(3)]
        await asyncio.sleep(0)
        await batcher.aclose()  # sends everything, round after round
        assert [t.result() for t in tasks] == [0, 8, 16]
        with pytest.raises(batch.BatchError, match=r"AsyncBatcher.run\(\): the batcher is closed"):
            await batcher.run(double(1))

    asyncio.run(main())
    assert len(CALLS) == 3


def test_async_max_concurrency_is_back_pressure() -> None:
    running = 0
    most = 0

    @batch.operation
    async def tracked(xs: list[int]) -> list[int]:
        nonlocal running, most
        CALLS.append(list(xs))
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        return xs

    async def main() -> list[int]:
        async with batch.AsyncBatcher(max_concurrency=1) as batcher:
            first = asyncio.ensure_future(batcher.run(tracked(0)))
            await asyncio.sleep(0.005)  # its call is running now
            rest = [asyncio.ensure_future(batcher.run(tracked(i))) for i in range(1, 4)]
            return [await first] + [await t for t in rest]

    assert asyncio.run(main()) == [0, 1, 2, 3]
    assert CALLS == [[0], [1, 2, 3]] and most == 1


def test_async_callers_errors_and_contextvars_are_their_own() -> None:
    def gen(i: int) -> Gen:
        VAR.set(f"task {i}")
        v = yield fails_odd(i)
        return v, VAR.get()

    async def one(batcher: batch.AsyncBatcher, i: int) -> Any:
        try:
            return await batcher.run(gen(i))
        except ValueError as exc:
            return str(exc)

    async def main() -> list[Any]:
        async with batch.AsyncBatcher() as batcher:
            return list(await asyncio.gather(*(one(batcher, i) for i in range(4))))

    assert asyncio.run(main()) == [(0, "task 0"), "odd 1", (2, "task 2"), "odd 3"]
    assert CALLS == [[0, 1, 2, 3]]


def test_async_blocking_operation_runs_in_a_thread() -> None:
    threads: list[int] = []

    @batch.operation(blocking=True)
    def blocking(xs: list[int]) -> list[int]:
        threads.append(threading.get_ident())
        return xs

    async def main() -> Any:
        async with batch.AsyncBatcher() as batcher:
            return await asyncio.gather(batcher.run(blocking(1)), batcher.run(blocking(2)))

    assert asyncio.run(main()) == [1, 2]
    assert threads and threads[0] != threading.get_ident()


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [batch.DynamicBatcher, batch.AsyncBatcher])
@pytest.mark.parametrize("value", [-1, math.nan, math.inf, "0.1", True])
def test_bad_max_delay(cls: Any, value: Any) -> None:
    name = cls.__name__
    with pytest.raises(ValueError, match=rf"{name}\(max_delay={value!r}\) is invalid: it must be a finite "
                                         r"number of seconds >= 0 \(e.g. max_delay=0.002\), or None "
                                         r"for manual mode"):
        cls(max_delay=value)


@pytest.mark.parametrize("cls", [batch.DynamicBatcher, batch.AsyncBatcher])
@pytest.mark.parametrize("value", [0, -3, 2.0, math.nan])
def test_bad_batch_sizes(cls: Any, value: Any) -> None:
    name = cls.__name__
    with pytest.raises(ValueError, match=rf"{name}\(max_batch_size={value!r}\) is invalid: it must be a "
                                         r"positive int"):
        cls(max_batch_size=value)
    with pytest.raises(ValueError, match=rf"{name}\(min_batch_size={value!r}\) is invalid: it must be a "
                                         r"positive int"):
        cls(min_batch_size=value)


@pytest.mark.parametrize("cls", [batch.DynamicBatcher, batch.AsyncBatcher])
def test_min_larger_than_max(cls: Any) -> None:
    with pytest.raises(ValueError, match=rf"{cls.__name__}\(min_batch_size=8, max_batch_size=4\) is "
                                         r"invalid: min_batch_size must not be larger than max_batch_size"):
        cls(min_batch_size=8, max_batch_size=4)


def test_bad_workers_and_concurrency() -> None:
    with pytest.raises(ValueError, match=r"DynamicBatcher\(max_workers=0\) is invalid: it must be a "
                                         r"positive int$"):
        batch.DynamicBatcher(max_workers=0)
    with pytest.raises(ValueError, match=r"DynamicBatcher\(max_workers=None\) is invalid"):
        batch.DynamicBatcher(max_workers=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"AsyncBatcher\(max_concurrency=-1\) is invalid: it must be a "
                                         r"positive int, or None for no limit"):
        batch.AsyncBatcher(max_concurrency=-1)


def test_bad_cache_and_trace() -> None:
    with pytest.raises(TypeError, match=r"cache= takes a batch.OperationCache, got dict"):
        batch.DynamicBatcher(cache={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"trace= takes a batch.Trace, got list"):
        batch.AsyncBatcher(trace=[])  # type: ignore[arg-type]


def test_bad_roots_fail_at_the_call() -> None:
    with batch.DynamicBatcher() as batcher:
        with pytest.raises(TypeError, match=r"DynamicBatcher.submit\(\) takes a batch generator, a "
                                            r"BatchableOperation, or a list/tuple/dict of those; got "
                                            r"function \(did you pass the generator function"):
            batcher.submit(gen_twice)
        started = gen_twice(1)
        next(started)
        with pytest.raises(batch.BatchError, match=r"was given a generator that already ran"):
            batcher.run(started)
        started.close()

    async def main() -> None:
        with pytest.raises(TypeError, match=r"AsyncBatcher.run\(\) takes a batch generator.*got int"):
            await batch.AsyncBatcher().run(5)

    asyncio.run(main())


def test_the_same_generator_twice_fails_the_second_caller() -> None:
    g = gen_twice(1)
    with batch.DynamicBatcher(max_delay=None) as batcher:
        first = batcher.submit(g)
        second = batcher.submit(g)
        batcher.flush()
        assert first.result(5) == 4
        # Which message depends on whether the driver started the first one already.
        with pytest.raises(batch.GeneratorReusedError, match=r"given twice as a root|was already started"):
            second.result(5)


def test_nothing_is_left_open() -> None:
    def gen(x: int) -> Gen:
        return (yield double(x))

    with batch.DynamicBatcher(max_delay=0) as batcher:
        gens = [gen(i) for i in range(5)]
        assert [batcher.run(g) for g in gens] == [0, 2, 4, 6, 8]
    gc.collect()
    assert all(g.gi_frame is None for g in gens)


def test_cancel_withdraws_structures_and_keeps_what_others_share() -> None:
    closed: list[str] = []

    def child(x: int) -> Gen:
        try:
            return (yield double(x))
        finally:
            closed.append(f"child {x}")

    started: list[int] = []

    def gen_fanout(base: int) -> Gen:
        started.append(base)
        try:
            return (yield [double(base), shared_double(99), child(base + 1), {"k": double(base + 2)}])
        finally:
            closed.append(f"root {base}")

    with batch.DynamicBatcher(max_delay=None) as batcher:
        keep = batcher.submit(gen_fanout(10))
        drop = batcher.submit(gen_fanout(20))
        wait_until(lambda: len(started) == 2)
        drop.cancel()
        wait_until(lambda: len(closed) == 2)
        assert sorted(closed) == ["child 21", "root 20"]
        batcher.flush()
        assert keep.result(5) == [20, 198, 22, {"k": 24}]
    assert sorted(map(sorted, CALLS)) == [[10, 11, 12], [99]]  # nothing of caller 20 was sent


def test_results_are_typed_by_the_root() -> None:
    mypy_api = pytest.importorskip("mypy.api")
    source = '''
import asyncio
from collections.abc import Generator
from typing import Any
import batch

@batch.operation
def lengths(xs: list[str]) -> list[int]:
    return [len(x) for x in xs]

def gen_total(words: list[str]) -> Generator[Any, Any, float]:
    counts = yield [lengths(w) for w in words]
    return float(sum(counts)) / 2

async def main(a: batch.AsyncBatcher, d: batch.DynamicBatcher) -> None:
    reveal_type(lengths("x"))
    reveal_type(d.run(lengths("x")))
    reveal_type(d.submit(gen_total([])))
    reveal_type(await d.arun(gen_total([])))
    reveal_type(await a.run(lengths("x")))
    lengths(3)
'''
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "typed_use.py"
        path.write_text(source)
        limit = sys.getrecursionlimit()  # mypy raises it for the whole process
        try:
            out, _err, _status = mypy_api.run(["--strict", "--no-incremental", "--python-version", "3.11",
                                               "--cache-dir", str(pathlib.Path(tmp) / "cache"), str(path)])
        finally:
            sys.setrecursionlimit(limit)
    revealed = [line.split("Revealed type is ")[1] for line in out.splitlines() if "Revealed type" in line]
    assert revealed == [
        '"batch._function_op.FunctionOperation[str, int]"',
        '"int"',
        '"concurrent.futures._base.Future[float]"',
        '"float"',
        '"int"',
    ], out
    assert 'Argument 1 to "FunctionOperation" has incompatible type "int"; expected "str"' in out


def test_waits_for_an_answer_another_execution_has_in_flight() -> None:
    release = threading.Event()
    started = threading.Event()

    @batch.operation(cache_results=True)
    def cached(xs: list[int]) -> list[int]:
        CALLS.append(list(xs))
        started.set()
        release.wait(5)
        return [x + 1 for x in xs]

    cache = batch.OperationCache()
    other: list[Any] = []
    t = threading.Thread(target=lambda: other.append(batch.execute(cached(1), cache=cache)))
    t.start()
    assert started.wait(5)  # the other execution's call is running
    with batch.DynamicBatcher(max_delay=0, cache=cache) as batcher:
        fut = batcher.submit(cached(1))  # waits on that call instead of sending its own
        time.sleep(0.05)
        assert not fut.done()
        release.set()
        assert fut.result(5) == 2
    t.join(5)
    assert other == [2] and CALLS == [[1]]


def test_a_group_that_grew_past_max_batch_size_goes_chunked() -> None:
    release = threading.Event()
    started = threading.Event()

    @batch.operation
    def slow(xs: list[int]) -> list[int]:
        CALLS.append(list(xs))
        started.set()
        release.wait(5)
        return xs

    with batch.DynamicBatcher(max_delay=None, max_batch_size=2) as batcher:
        first = [batcher.submit(slow(0)), batcher.submit(slow(1))]  # full: goes at once
        assert started.wait(5)
        rest = [batcher.submit(slow(i)) for i in range(2, 7)]  # wait for the one worker
        time.sleep(0.05)
        release.set()
        assert [f.result(5) for f in first + rest] == list(range(7))
    assert CALLS == [[0, 1], [2, 3], [4, 5], [6]]


# -- the callers' futures and the dispatch clock ----------------------------------------------


def test_submit_futures_work_with_every_concurrent_futures_tool() -> None:
    import concurrent.futures as cf

    seen: list[Any] = []
    with batch.DynamicBatcher(max_delay=0.05) as batcher:
        early = batcher.submit(double(1))
        early.add_done_callback(lambda f: seen.append(("early", f.result())))
        assert not early.done() and not early.running() and not early.cancelled()
        with pytest.raises(cf.TimeoutError):
            early.result(timeout=0.001)
        failing = batcher.submit(fails_odd(3))
        rest = [batcher.submit(double(i)) for i in range(2, 5)]
        done, not_done = cf.wait([early, failing, *rest], timeout=5)
        assert not not_done and len(done) == 5
        assert sorted(f.result() for f in cf.as_completed(rest, timeout=5)) == [4, 6, 8]
        assert early.result() == 2 and "finished returned int" in repr(early)
        assert isinstance(failing.exception(), ValueError)
        with pytest.raises(ValueError, match="odd 3"):
            failing.result()
        # Callbacks added after the end run at once; wait() on ended futures returns at once.
        early.add_done_callback(lambda f: seen.append(("late", f.result())))
        assert cf.wait(rest, timeout=0).not_done == set()
        assert not early.cancel()

        async def bridge() -> int:
            return int(await asyncio.wrap_future(batcher.submit(double(21))))

        assert asyncio.run(bridge()) == 42
    assert seen == [("early", 2), ("late", 2)]


def test_a_single_operation_answered_from_the_cache_resolves_at_once() -> None:
    cache = batch.OperationCache()
    with batch.DynamicBatcher(max_delay=0, cache=cache) as batcher:
        assert batcher.run(cached(1)) == 101
        assert batcher.submit(cached(1)).result(timeout=5) == 101  # a hit: no call
        assert batcher.run(cached(1)) == 101

    async def main() -> list[int]:
        async with batch.AsyncBatcher(cache=cache) as abatcher:
            hit = abatcher.run(cached(1))
            assert hit.done()  # answered from the cache before run() returned
            return [await hit, await abatcher.run(cached(2))]

    assert asyncio.run(main()) == [101, 102]
    assert CALLS == [[1], [2]]


def test_a_lone_operation_is_never_sent_before_max_delay() -> None:
    # The driver sleeps until just before a group is due and polls the rest
    # of the way; it must still never send before max_delay has passed.
    sent: list[float] = []

    @batch.operation
    def stamp(xs: list[int]) -> list[int]:
        sent.append(time.monotonic())
        return xs

    delay = 0.003
    early: list[float] = []
    with batch.DynamicBatcher(max_delay=delay) as batcher:
        for i in range(30):
            t0 = time.monotonic()
            assert batcher.run(stamp(i)) == i
            if sent[-1] - t0 < delay:
                early.append(sent[-1] - t0)
    assert early == []
    assert len(sent) == 30


def test_async_run_returns_a_future_and_refuses_at_the_call() -> None:
    async def main() -> list[int]:
        batcher = batch.AsyncBatcher()
        fut = batcher.run(double(1))
        assert asyncio.isfuture(fut)
        values = list(await asyncio.gather(fut, batcher.run(gen_twice(2))))
        await batcher.aclose()
        with pytest.raises(batch.BatchError, match=r"AsyncBatcher.run\(\): the batcher is closed"):
            batcher.run(double(3))  # no await needed: the mistake raises here
        return values

    assert asyncio.run(main()) == [2, 8]
    assert CALLS == [[1, 2], [4]]
    with pytest.raises(batch.BatchError, match=r"AsyncBatcher.run\(\) was called with no event loop "
                                               r"running in this thread; call it from a coroutine"):
        batch.AsyncBatcher().run(double(1))


def test_threads_waiting_on_overlapping_futures_do_not_block_each_other() -> None:
    import concurrent.futures as cf

    with batch.DynamicBatcher(max_delay=None) as batcher:
        ended = [batcher.submit(double(i)) for i in range(3)]
        batcher.flush()
        assert [f.result(timeout=5) for f in ended] == [0, 2, 4]
        pending = [batcher.submit(double(i)) for i in range(10, 13)]
        # Each waiter holds a mix of ended and pending futures, in different orders.
        sets = [ended + pending, pending[::-1] + ended[::-1]]
        outcomes: list[Any] = [None, None]

        def waiter(k: int) -> None:
            outcomes[k] = cf.wait(sets[k], timeout=10)

        threads = [threading.Thread(target=waiter, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        batcher.flush()
        for t in threads:
            t.join(timeout=10)
        assert all(not t.is_alive() for t in threads)
    assert [len(o.done) for o in outcomes] == [6, 6]


@pytest.mark.skipif(sys.platform == "win32", reason="needs pthread_kill")
def test_ctrl_c_while_run_waits_withdraws_that_callers_tree() -> None:
    import signal

    closed: list[int] = []

    def gen_wait(x: int) -> Gen:
        try:
            return (yield double(x))
        finally:
            closed.append(x)

    main = threading.get_ident()
    with batch.DynamicBatcher(max_delay=None) as batcher:  # manual: nothing goes by itself
        timer = threading.Timer(0.1, signal.pthread_kill, args=(main, signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            batcher.run(gen_wait(1))
        timer.join()
        wait_until(lambda: closed == [1])  # the caller's tree was closed, its operation withdrawn
        other = batcher.submit(double(2))
        batcher.flush()
        assert other.result(timeout=5) == 4
    assert CALLS == [[2]]


def test_the_future_fields_emulated_are_those_of_this_python() -> None:
    # DynamicBatcher's futures set concurrent.futures.Future's fields themselves (their
    # condition is made on first use); a Python that adds a field must fail here, loudly.
    import concurrent.futures as cf

    assert set(vars(cf.Future())) == {"_condition", "_state", "_result", "_exception", "_waiters",
                                      "_done_callbacks"}
