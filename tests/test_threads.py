"""``max_workers=N``: the run_batch calls of one round run in a thread pool.

Results, rounds and batch shapes must be the same as with the serial
executor; only the wall-clock time changes.  Overlap is shown with a
``threading.Barrier`` (it only opens when both calls run at once) and with
``(start, end)`` intervals, not with wall-clock bounds.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Generator
from typing import Any, ClassVar

import pytest

import batch

Interval = tuple[float, float]


def overlap(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


class Recorder:
    """Thread-safe log of run_batch calls: (class name, ids, thread, interval)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, list[Any]]] = []
        self.intervals: dict[str, list[Interval]] = {}
        self.threads: dict[str, set[int]] = {}

    def record(self, name: str, ids: list[Any], start: float, end: float) -> None:
        with self.lock:
            self.calls.append((name, ids))
            self.intervals.setdefault(name, []).append((start, end))
            self.threads.setdefault(name, set()).add(threading.get_ident())


REC = Recorder()


@pytest.fixture(autouse=True)
def fresh_recorder() -> None:
    global REC
    REC = Recorder()


class Sleepy(batch.BatchableOperation[Any]):
    """Sleeps ``delay`` seconds (or waits on ``barrier``) and echoes its ids."""

    delay: ClassVar[float] = 0.0
    barrier: ClassVar[threading.Barrier | None] = None

    def __init__(self, n: Any) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        start = time.perf_counter()
        if cls.barrier is not None:
            cls.barrier.wait()  # raises BrokenBarrierError unless the peer call runs too
        if cls.delay:
            time.sleep(cls.delay)
        ids = [op.n for op in operations]
        REC.record(cls.__name__, ids, start, time.perf_counter())
        return [(cls.__name__, n) for n in ids]


class SleepA(Sleepy):
    delay = 0.2


class SleepB(Sleepy):
    delay = 0.2


def gen_pair(n: int) -> Generator[Any, Any, Any]:
    a, b = yield SleepA(n), SleepB(n)
    return a, b


def test_two_sleeping_classes_overlap_with_two_workers() -> None:
    t0 = time.perf_counter()
    result = batch.execute(gen_pair(1), max_workers=2)
    elapsed = time.perf_counter() - t0
    assert result == (("SleepA", 1), ("SleepB", 1))
    assert REC.calls in ([("SleepA", [1]), ("SleepB", [1])], [("SleepB", [1]), ("SleepA", [1])])
    assert overlap(REC.intervals["SleepA"][0], REC.intervals["SleepB"][0])
    assert REC.threads["SleepA"] != REC.threads["SleepB"]
    assert threading.get_ident() not in REC.threads["SleepA"] | REC.threads["SleepB"]
    assert elapsed < 0.38  # serial would need 0.4 s


def test_serial_and_one_worker_do_not_overlap() -> None:
    for workers in (None, 1):
        REC.calls.clear()
        REC.intervals.clear()
        SleepA.delay = SleepB.delay = 0.02
        try:
            assert batch.execute(gen_pair(2), max_workers=workers) == (("SleepA", 2), ("SleepB", 2))
        finally:
            SleepA.delay = SleepB.delay = 0.2
        assert REC.calls == [("SleepA", [2]), ("SleepB", [2])], workers
        assert not overlap(REC.intervals["SleepA"][0], REC.intervals["SleepB"][0]), workers


class MeetA(Sleepy):
    pass


class MeetB(Sleepy):
    pass


def test_barrier_only_opens_when_both_calls_run_at_once() -> None:
    barrier = threading.Barrier(2, timeout=5)
    MeetA.barrier = MeetB.barrier = barrier
    try:
        def gen() -> Generator[Any, Any, Any]:
            return (yield [MeetA(1), MeetB(2), MeetA(3)])

        assert batch.execute(gen(), max_workers=2) == [("MeetA", 1), ("MeetB", 2), ("MeetA", 3)]
    finally:
        MeetA.barrier = MeetB.barrier = None
    assert sorted(REC.calls) == [("MeetA", [1, 3]), ("MeetB", [2])]
    assert not barrier.broken


class Get(batch.BatchableOperation[int]):
    max_batch_size = 2

    def __init__(self, n: int) -> None:
        self.n = n

    def batch_key(self) -> Any:
        return self.n % 2

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        REC.record("Get", [op.n for op in operations], 0, 0)
        return [ValueError(f"odd {op.n}") if op.n == 7 else op.n * 10 for op in operations]


def test_results_rounds_and_shapes_match_serial() -> None:
    def gen_leaf(n: int) -> Generator[Any, Any, Any]:
        try:
            v = yield Get(n)
        except ValueError as exc:
            return str(exc)
        w = yield Get(v + 1)
        return v, w

    def gen_root() -> Generator[Any, Any, Any]:
        return (yield [gen_leaf(n) for n in range(9)])

    shapes = {}
    results = {}
    calls = {}
    for workers in (None, 2, 4):
        REC.calls.clear()
        trace = batch.Trace()
        results[workers] = batch.execute(gen_root(), max_workers=workers, trace=trace)
        shapes[workers] = [[(b.name, b.key, b.size) for b in r.batches] for r in trace.rounds]
        calls[workers] = sorted(REC.calls)
    assert results[2] == results[4] == results[None]
    assert results[None][7] == "odd 7"
    assert results[None][0] == (0, 10)
    assert shapes[2] == shapes[4] == shapes[None]
    assert shapes[None] == [
        [("Get", 0, 2), ("Get", 0, 2), ("Get", 0, 1), ("Get", 1, 2), ("Get", 1, 2)],
        [("Get", 1, 2), ("Get", 1, 2), ("Get", 1, 2), ("Get", 1, 2)],
    ]
    assert calls[2] == calls[4] == calls[None]


def test_trace_records_the_worker_threads() -> None:
    trace = batch.Trace()
    SleepA.delay = SleepB.delay = 0.01
    try:
        batch.execute(gen_pair(3), max_workers=2, trace=trace)
    finally:
        SleepA.delay = SleepB.delay = 0.2
    [rnd] = trace.rounds
    assert [b.name for b in rnd.batches] == ["SleepA", "SleepB"]  # group order, not finish order
    assert {b.thread for b in rnd.batches} == REC.threads["SleepA"] | REC.threads["SleepB"]
    assert threading.get_ident() not in {b.thread for b in rnd.batches}


class Finisher(batch.BatchableOperation[str]):
    """Each call waits until the call dispatched after it has finished."""

    done: ClassVar[dict[int, threading.Event]] = {}

    def __init__(self, n: int) -> None:
        self.n = n

    def batch_key(self) -> Any:
        return self.n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        n = operations[0].n
        later = cls.done.get(n + 1)
        if later is not None:
            assert later.wait(5), f"call {n + 1} did not finish while call {n} waited"
        REC.record("Finisher", [op.n for op in operations], 0, 0)
        cls.done[n].set()
        return [f"done {op.n}" for op in operations]


def test_results_are_delivered_in_group_order_not_finish_order() -> None:
    Finisher.done = {n: threading.Event() for n in (1, 2, 3)}
    order: list[int] = []

    def gen_one(n: int) -> Generator[Any, Any, Any]:
        v = yield Finisher(n)
        order.append(n)  # the step phase resumes waiters in program order
        return v

    def gen_root() -> Generator[Any, Any, Any]:
        return (yield [gen_one(1), gen_one(2), gen_one(3)])

    trace = batch.Trace()
    assert batch.execute(gen_root(), max_workers=3, trace=trace) == ["done 1", "done 2", "done 3"]
    assert REC.calls == [("Finisher", [3]), ("Finisher", [2]), ("Finisher", [1])]
    assert order == [1, 2, 3]
    assert [b.key for b in trace.rounds[0].batches] == [1, 2, 3]


class Query(batch.BatchableOperation[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        REC.record("Query", [op.n for op in operations], 0, 0)
        return [op.n * 100 for op in operations]


class Layered(batch.BatchableOperation[int]):
    """run_batch is a batch generator: its Query joins the Queries of the next round."""

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> Generator[Any, Any, list[int]]:
        REC.record("Layered", [op.n for op in operations], 0, 0)
        rows = yield [Query(op.n) for op in operations]
        return [r + 1 for r in rows]


def test_layered_run_batch_generators_work_in_the_pool() -> None:
    def gen_root() -> Generator[Any, Any, Any]:
        a, b, c = yield Layered(1), Layered(2), Sleepy(9)
        d = yield Query(5)
        return a, b, c, d

    for workers in (None, 2):
        REC.calls.clear()
        trace = batch.Trace()
        assert batch.execute(gen_root(), max_workers=workers, trace=trace) == (
            101, 201, ("Sleepy", 9), 500)
        assert sorted(REC.calls[:2]) == [("Layered", [1, 2]), ("Sleepy", [9])]
        assert REC.calls[2:] == [("Query", [1, 2]), ("Query", [5])]
        assert [[(b.name, b.size, b.layered) for b in r.batches] for r in trace.rounds] == [
            [("Layered", 2, True), ("Sleepy", 1, False)],
            [("Query", 2, False)],
            [("Query", 1, False)],
        ]


class Failing(batch.BatchableOperation[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        REC.record("Failing", [op.n for op in operations], 0, 0)
        raise ConnectionError(f"store down for {[op.n for op in operations]}")


def test_failure_in_a_worker_thread_reaches_the_waiting_generator() -> None:
    def gen_root() -> Generator[Any, Any, Any]:
        try:
            yield Failing(1), Sleepy(2)
        except ConnectionError as exc:
            caught = str(exc)
        # Its sibling still finished; the generator goes on after catching.
        again = yield Sleepy(3)
        return caught, again

    assert batch.execute(gen_root(), max_workers=2) == ("store down for [1]", ("Sleepy", 3))
    assert sorted(REC.calls[:2]) == [("Failing", [1]), ("Sleepy", [2])]
    assert REC.calls[2:] == [("Sleepy", [3])]


def test_uncaught_worker_failure_closes_every_generator() -> None:
    events: list[str] = []

    def gen_waiting(n: int) -> Generator[Any, Any, Any]:
        try:
            yield Sleepy(n)
            yield Sleepy(n + 100)  # never dispatched: the first root fails first
            events.append(f"finished {n}")
        finally:
            events.append(f"closed {n}")

    def gen_failing() -> Generator[Any, Any, Any]:
        try:
            return (yield Failing(1))
        finally:
            events.append("failing")

    message = r"^store down for \[1\]\nbatch: execution failed after 1 round"
    with pytest.raises(ConnectionError, match=message) as info:
        batch.execute_many([gen_failing(), gen_waiting(2), gen_waiting(3)], max_workers=2)
    assert info.value.batch_rounds_completed == 1  # type: ignore[attr-defined]
    assert sorted(events) == ["closed 2", "closed 3", "failing"]
    assert sorted(REC.calls) == [("Failing", [1]), ("Sleepy", [2, 3])]


def test_base_exception_in_a_worker_stops_the_execution() -> None:
    class Interrupt(batch.BatchableOperation[int]):
        @classmethod
        def run_batch(cls, operations: list[Any]) -> list[Any]:
            raise SystemExit(3)

    closed: list[str] = []

    def gen_root() -> Generator[Any, Any, Any]:
        try:
            yield Interrupt(), Sleepy(1)
        except SystemExit:
            closed.append("caught")  # must not happen: it is not thrown in
            raise
        finally:
            closed.append("root")

    with pytest.raises(SystemExit):
        batch.execute(gen_root(), max_workers=2)
    assert closed == ["root"]


def test_max_workers_is_validated() -> None:
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"max_workers= must be a positive int or None, got "):
            batch.execute(Sleepy(1), max_workers=bad)  # type: ignore[arg-type]


def _batch_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if re.fullmatch(r"batch_\d+", t.name)}


def _assert_no_new_pool_threads(before: set[threading.Thread]) -> None:
    """Pool threads started since ``before`` are gone (they exit once idle)."""
    deadline = time.monotonic() + 2
    while _batch_threads() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _batch_threads() - before == set()


def test_the_pool_is_shut_down_after_each_execution() -> None:
    before = _batch_threads()
    SleepA.delay = SleepB.delay = 0.0
    try:
        for _ in range(5):
            batch.execute(gen_pair(1), max_workers=2)
        assert threading.get_ident() not in REC.threads["SleepA"]  # the pool did run
        with pytest.raises(ConnectionError):
            batch.execute([Failing(1), Sleepy(2)], max_workers=2)
    finally:
        SleepA.delay = SleepB.delay = 0.2
    _assert_no_new_pool_threads(before)


def test_execute_many_and_executor_static_methods_take_max_workers() -> None:
    barrier = threading.Barrier(2, timeout=5)
    MeetA.barrier = MeetB.barrier = barrier
    try:
        assert batch.execute_many([MeetA(1), MeetB(2)], max_workers=2) == [("MeetA", 1), ("MeetB", 2)]
        assert batch.BatchExecutor.executev([MeetA(3), MeetB(4)], max_workers=2) == [
            ("MeetA", 3), ("MeetB", 4)]
    finally:
        MeetA.barrier = MeetB.barrier = None
    assert not barrier.broken


def test_execute_iter_with_two_workers_overlaps_and_keeps_input_order() -> None:
    barrier = threading.Barrier(2, timeout=5)
    MeetA.barrier = MeetB.barrier = barrier
    try:
        def gen_item(n: int) -> Generator[Any, Any, Any]:
            return (yield MeetA(n) if n % 2 else MeetB(n))

        out = list(batch.execute_iter((gen_item(n) for n in range(6)), window=2, max_workers=2))
    finally:
        MeetA.barrier = MeetB.barrier = None
    assert out == [("MeetB", 0), ("MeetA", 1), ("MeetB", 2), ("MeetA", 3), ("MeetB", 4), ("MeetA", 5)]
    # window=2: each round holds one even and one odd root, and the two calls met.
    assert sorted(REC.calls) == [("MeetA", [1]), ("MeetA", [3]), ("MeetA", [5]),
                                 ("MeetB", [0]), ("MeetB", [2]), ("MeetB", [4])]
    assert not barrier.broken


def test_execute_iter_stopped_early_closes_generators_and_pool() -> None:
    events: list[str] = []

    def gen_item(n: int) -> Generator[Any, Any, Any]:
        try:
            a, _ = yield Sleepy(n), Query(n)  # two calls: the pool runs them
            for _ in range(n):
                yield Query(n)
            events.append(f"finished {n}")
            return a
        finally:
            events.append(f"closed {n}")

    before = _batch_threads()
    it = batch.execute_iter((gen_item(n) for n in range(10)), window=3, max_workers=2)
    assert next(it) == ("Sleepy", 0)
    it.close()  # type: ignore[attr-defined]
    assert events == ["finished 0", "closed 0", "closed 1", "closed 2"]
    assert sorted(REC.calls[:2]) == [("Query", [0, 1, 2]), ("Sleepy", [0, 1, 2])]
    # Root 0 is handed out as soon as round 1 finished it: no round 2 was sent.
    assert REC.calls[2:] == []
    assert threading.get_ident() not in REC.threads["Sleepy"]
    _assert_no_new_pool_threads(before)
