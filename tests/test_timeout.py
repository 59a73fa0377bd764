"""``timeout=`` (seconds, whole execution) on every entry point.

On expiry every generator is closed (``finally`` blocks run; the
``TimeoutError`` is not thrown into them) and ``TimeoutError`` is raised.
Every executor checks the deadline before each round and after each
round's calls (the last one too); the thread-pool and async executors also
while they wait on ``run_batch`` calls.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Generator, Iterator
from typing import Any, ClassVar

import pytest

import batch

GENS: list[weakref.ref[Any]] = []
EVENTS: list[str] = []
RELEASE = threading.Event()  # lets hanging run_batch threads finish after a test


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    GENS.clear()
    EVENTS.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


def suspended_generators() -> list[Any]:
    gc.collect()
    return [g for g in (r() for r in GENS) if g is not None and g.gi_frame is not None]


def tracked(gen: Any) -> Any:
    GENS.append(weakref.ref(gen))
    return gen


class Wait(batch.BatchableOperation[Any]):
    """Sleeps ``delay`` seconds per call (released early by RELEASE)."""

    delay: ClassVar[float] = 0.0
    calls: ClassVar[list[list[Any]]] = []

    def __init__(self, n: Any) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        cls.calls.append([op.n for op in operations])
        RELEASE.wait(cls.delay)
        return [op.n for op in operations]


class Hang(Wait):
    delay = 5.0


class Hang2(Wait):
    delay = 5.0


class Tick(Wait):
    delay = 0.05


class Quick(Wait):
    pass


class AHang(batch.BatchableOperation[Any]):
    cancelled: ClassVar[int] = 0

    def __init__(self, n: Any) -> None:
        self.n = n

    @classmethod
    async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            AHang.cancelled += 1
            raise
        return [op.n for op in operations]  # pragma: no cover


class AHang2(AHang):
    pass


class BHang(Wait):
    blocking = True
    delay = 5.0


def gen_steps(name: str, op: Any, steps: int) -> Generator[Any, Any, Any]:
    """Waits on ``steps`` operations one after the other; logs how it ended.

    ``op`` is an operation class, or a tuple of one class per step.
    """
    ops = op if isinstance(op, tuple) else (op,) * steps
    try:
        for i in range(steps):
            yield ops[i](f"{name}:{i}")
    except TimeoutError:  # pragma: no cover  (the timeout is never thrown in)
        EVENTS.append(f"{name} caught TimeoutError")
        raise
    except GeneratorExit:
        EVENTS.append(f"{name} closed")
        raise
    EVENTS.append(f"{name} finished")
    return name


def tree(*leaves: tuple[str, Any, int]) -> Any:
    def gen_root() -> Generator[Any, Any, Any]:
        try:
            return (yield [tracked(gen_steps(*leaf)) for leaf in leaves])
        finally:
            EVENTS.append("root finally")

    return tracked(gen_root())


MESSAGE = r"^batch execution timed out after {} seconds \({} rounds completed\)"


# -- serial ------------------------------------------------------------------------


def test_serial_timeout_is_checked_between_rounds() -> None:
    Tick.calls = []
    trace = batch.Trace()
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match=MESSAGE.format(r"0\.12", r"\d")) as info:
        batch.execute(tree(("a", Tick, 20), ("b", Tick, 1)), timeout=0.12, trace=trace)
    elapsed = time.perf_counter() - t0
    assert 0.12 <= elapsed < 0.5
    done = info.value.batch_rounds_completed  # type: ignore[attr-defined]
    assert 2 <= done <= 4  # each round takes >= 0.05 s
    assert f"({done} rounds completed)" in str(info.value)
    assert trace.error is info.value
    assert len(Tick.calls) == done
    assert EVENTS == ["b finished", "a closed", "root finally"]
    assert suspended_generators() == []


def test_serial_run_batch_that_hangs_is_not_interrupted() -> None:
    class Slow(Wait):
        delay = 0.15

    # One round: the call is not interrupted, but its late result is not returned (issue 15).
    with pytest.raises(TimeoutError, match=MESSAGE.format(r"0\.05", 1)):
        batch.execute(Slow(1), timeout=0.05)
    # Two rounds: the deadline is seen after the first one, before the second is sent.
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match=MESSAGE.format(r"0\.05", 1)):
        batch.execute(tree(("a", Slow, 2)), timeout=0.05)
    assert time.perf_counter() - t0 < 0.3
    assert EVENTS == ["a closed", "root finally"]


def test_zero_timeout() -> None:
    def gen_logic() -> Generator[Any, Any, Any]:
        return (yield batch.gen_identity(3))

    assert batch.execute(gen_logic(), timeout=0) == 3  # no round needed: no deadline check
    with pytest.raises(TimeoutError, match=MESSAGE.format(0, 0)):
        batch.execute(tree(("a", Wait, 1)), timeout=0)
    assert EVENTS == ["a closed", "root finally"]


def test_a_timeout_that_does_not_expire_changes_nothing() -> None:
    for timeout in (5, 5.0):
        assert batch.execute(tree(("a", Wait, 2), ("b", Wait, 1)), timeout=timeout) == ["a", "b"]
        assert asyncio.run(batch.execute_async(tree(("c", Wait, 1)), timeout=timeout)) == ["c"]
    assert batch.execute_many([Wait(1), Wait(2)], timeout=1, max_workers=2) == [1, 2]


def test_timeout_is_validated() -> None:
    for bad in (-1, -0.5, True, "1", [1]):
        with pytest.raises(ValueError, match=r"^timeout= must be a number of seconds >= 0, got "):
            batch.execute(Wait(1), timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^timeout= must be a number of seconds >= 0, got -1$"):
        asyncio.run(batch.execute_async(Wait(1), timeout=-1))


def test_return_exceptions_does_not_swallow_the_timeout() -> None:
    with pytest.raises(TimeoutError, match=MESSAGE.format(0, 0)):
        batch.execute_many([tree(("a", Wait, 1))], return_exceptions=True, timeout=0)
    assert EVENTS == ["a closed", "root finally"]


def test_execute_iter_timeout_closes_the_roots_in_flight() -> None:
    def roots() -> Iterator[Any]:
        for n in range(100):
            yield tracked(gen_steps(f"r{n}", Tick, 1 + n % 3))

    got = []
    with pytest.raises(TimeoutError, match=MESSAGE.format(r"0\.12", r"\d")):
        for value in batch.execute_iter(roots(), window=4, timeout=0.12):
            got.append(value)
    assert 1 <= len(got) < 100
    assert got == [f"r{n}" for n in range(len(got))]
    assert any(e.endswith(" closed") for e in EVENTS)
    assert suspended_generators() == []


# -- thread pool -------------------------------------------------------------------


def test_thread_pool_timeout_while_run_batch_still_sleeps() -> None:
    Hang.calls = []
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match=MESSAGE.format(r"0\.1", 0)):
        batch.execute(tree(("a", Hang, 1), ("b", Hang2, 1)), max_workers=2, timeout=0.1)
    assert time.perf_counter() - t0 < 1  # not the 5 s the calls sleep
    assert sorted(EVENTS) == ["a closed", "b closed", "root finally"]
    assert EVENTS[-1] == "root finally"
    assert suspended_generators() == []


def test_thread_pool_timeout_in_a_later_round() -> None:
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match=MESSAGE.format(r"0\.2", 1)):
        batch.execute(tree(("a", (Wait, Hang), 2), ("b", (Quick, Hang2), 2)),
                      max_workers=2, timeout=0.2)
    assert time.perf_counter() - t0 < 1
    assert EVENTS == ["a closed", "b closed", "root finally"]
    assert suspended_generators() == []


def test_thread_pool_timeout_with_a_single_call_in_the_round() -> None:
    class Stuck(Wait):
        delay = 0.6

    t0 = time.perf_counter()
    try:
        with pytest.raises(TimeoutError, match=MESSAGE.format(r"0\.1", 0)):
            batch.execute(tree(("a", Stuck, 1)), max_workers=2, timeout=0.1)
    finally:
        elapsed = time.perf_counter() - t0
    assert elapsed < 0.4


# -- asyncio ------------------------------------------------------------------------


def test_async_timeout_cancels_the_calls_in_flight() -> None:
    AHang.cancelled = 0

    def gen_leaf(name: str, op: Any) -> Generator[Any, Any, Any]:
        try:
            return (yield op)
        finally:
            EVENTS.append(f"{name} closed")

    def gen_root() -> Generator[Any, Any, Any]:
        try:
            return (yield tracked(gen_leaf("a", AHang(1))), tracked(gen_leaf("b", AHang2(2))),
                    tracked(gen_leaf("c", BHang(3))))
        finally:
            EVENTS.append("root finally")

    async def main() -> None:
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError, match=MESSAGE.format(r"0\.1", 0)):
            await batch.execute_async(tracked(gen_root()), timeout=0.1)
        assert time.perf_counter() - t0 < 1
        assert asyncio.all_tasks() == {asyncio.current_task()}
        RELEASE.set()  # asyncio.run waits for the executor's threads when it ends

    asyncio.run(main())
    assert AHang.cancelled == 2  # BHang's thread cannot be cancelled; it was released
    assert sorted(EVENTS) == ["a closed", "b closed", "c closed", "root finally"]
    assert suspended_generators() == []


@pytest.mark.parametrize("op", [AHang, BHang], ids=["async run_batch", "blocking run_batch"])
def test_async_timeout_with_a_single_call(op: type[Any]) -> None:
    async def main() -> None:
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError, match=MESSAGE.format(r"0\.1", 0)):
            await batch.execute_many_async([tree(("a", op, 1))], timeout=0.1)
        assert time.perf_counter() - t0 < 1
        assert asyncio.all_tasks() == {asyncio.current_task()}
        RELEASE.set()  # asyncio.run waits for the executor's threads when it ends

    asyncio.run(main())
    assert EVENTS == ["a closed", "root finally"]
    assert suspended_generators() == []


def test_async_timeout_between_rounds_of_sync_calls() -> None:
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match=MESSAGE.format(r"0\.12", r"\d")):
        asyncio.run(batch.execute_async(tree(("a", Tick, 8)), timeout=0.12))
    assert time.perf_counter() - t0 < 0.3
    assert EVENTS == ["a closed", "root finally"]
    assert suspended_generators() == []


def test_an_outer_timeout_is_not_mistaken_for_ours() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError) as info:
            async with asyncio.timeout(0.1):
                await batch.execute_async(tree(("a", AHang, 1)), timeout=10)
        assert "batch execution timed out" not in str(info.value)

    asyncio.run(main())
    assert EVENTS == ["a closed", "root finally"]
