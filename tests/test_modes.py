"""The same program gives the same results, rounds and batches in every mode.

Modes: the serial executor, the thread pool (``max_workers``), ``execute_iter``
and the asyncio executor (``async def run_batch``, blocking classes in
threads, ``max_concurrency``).  Only timing may differ.  Random programs come
from hypothesis; the operations cover keys, chunking, dedupe, caching,
per-operation and whole-call failures and layered ``run_batch`` generators.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batch

MODE = "sync"  # "async": run_batch of non-blocking classes returns a coroutine
LOCK = threading.Lock()
CALLS: list[tuple[str, Any, list[int]]] = []


async def _later(compute: Callable[[], list[Any]]) -> list[Any]:
    await asyncio.sleep(0)  # let the other calls of the round start
    return compute()


class Op(batch.BatchableOperation[Any]):
    """Echoes ``n * 10``; ``n == 13`` fails alone; subclasses add settings."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.n == self.n  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.n))

    def key(self) -> Any:
        return None

    @classmethod
    def compute(cls, operations: list[Any]) -> list[Any]:
        return [KeyError(f"{cls.__name__} {op.n}") if op.n == 13 else op.n * 10 for op in operations]

    @classmethod
    def run_batch(cls, operations: list[Any]) -> Any:
        with LOCK:
            CALLS.append((cls.__name__, operations[0].key(), [op.n for op in operations]))
        if MODE == "async" and not cls.blocking:
            return _later(lambda: cls.compute(operations))
        return cls.compute(operations)


class A(Op):
    pass


class B(Op):
    """Keyed by parity, chunked by 2; a call containing 7 fails as a whole."""

    max_batch_size = 2

    def batch_key(self) -> Any:
        return self.n % 2

    def key(self) -> Any:
        return self.n % 2

    @classmethod
    def compute(cls, operations: list[Any]) -> list[Any]:
        if any(op.n == 7 for op in operations):
            raise ConnectionError(f"B call {[op.n for op in operations]} failed")
        return super().compute(operations)


class C(Op):
    dedupe = True


class D(Op):
    blocking = True  # in a worker thread under execute_async


class E(Op):
    cache_results = True


class L(Op):
    """Layered: its run_batch yields A operations and adds 1 to each result."""

    @classmethod
    def run_batch(cls, operations: list[Any]) -> Any:
        with LOCK:
            CALLS.append(("L", None, [op.n for op in operations]))

        def gen_batch() -> Generator[Any, Any, list[Any]]:
            rows = yield batch.settled([A(op.n) for op in operations])
            return [r if isinstance(r, Exception) else r + 1 for r in rows]

        return gen_batch()


CLASSES: dict[str, type[Op]] = {c.__name__: c for c in (A, B, C, D, E, L)}

# -- programs -------------------------------------------------------------------

# node:  ("op", class name, n) | ("gen", catch, [step, ...])
# step:  ("one", node) | ("list", [node]) | ("dict", [node]) | ("settled", [node])


def programs() -> st.SearchStrategy[list[Any]]:
    leaf = st.tuples(st.just("op"), st.sampled_from(sorted(CLASSES)), st.integers(0, 15))

    def extend(kids: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        step = st.one_of(
            st.tuples(st.just("one"), kids),
            st.tuples(st.sampled_from(["list", "dict", "settled"]), st.lists(kids, max_size=3)),
        )
        return st.tuples(st.just("gen"), st.booleans(), st.lists(step, max_size=4))

    return st.lists(st.recursive(leaf, extend, max_leaves=16), min_size=1, max_size=4)


def normal(value: Any) -> Any:
    """Results with exceptions made comparable."""
    if isinstance(value, BaseException):
        return ("raised", type(value).__name__, str(value))
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    return value


def build(node: Any) -> Any:
    if node[0] == "op":
        return CLASSES[node[1]](node[2])
    _, catch, steps = node

    def gen_node() -> Generator[Any, Any, Any]:
        out = []
        for kind, body in steps:
            if kind == "one":
                item: Any = build(body)
            elif kind == "list":
                item = [build(b) for b in body]
            elif kind == "dict":
                item = {f"k{i}": build(b) for i, b in enumerate(body)}
            else:
                item = batch.settled([build(b) for b in body])
            if catch:
                try:
                    out.append((yield item))
                except Exception as exc:
                    out.append(exc)
            else:
                out.append((yield item))
        return out

    return gen_node()


def run_mode(mode: str, program: list[Any]) -> dict[str, Any]:
    """Run ``program`` in ``mode``; results, trace shape and calls per round."""
    global MODE
    CALLS.clear()
    trace = batch.Trace()
    roots = [build(node) for node in program]
    MODE = "async" if mode.startswith("async") else "sync"
    try:
        if mode == "serial":
            results = batch.execute_many(roots, return_exceptions=True, trace=trace)
        elif mode == "threads":
            results = batch.execute_many(roots, return_exceptions=True, trace=trace, max_workers=3)
        elif mode == "iter":
            results = list(batch.execute_iter(roots, window=len(roots), return_exceptions=True,
                                              trace=trace, max_workers=2))
        else:
            limit = 1 if mode == "async-1" else None
            results = asyncio.run(batch.execute_many_async(
                roots, return_exceptions=True, trace=trace, max_concurrency=limit))
    finally:
        MODE = "sync"
    shape = [[(b.name, b.key, b.size, b.requested, b.failed, type(b.error).__name__ if b.error else None)
              for b in r.batches] for r in trace.rounds]
    # Calls of one round may run in any order in the pool or the loop, but
    # never mix with another round's: split the log by the trace's counts.
    per_round = []
    pos = 0
    for r in trace.rounds:
        per_round.append(sorted(CALLS[pos:pos + len(r.batches)]))
        pos += len(r.batches)
    assert pos == len(CALLS)
    return {"results": normal(results), "shape": shape, "calls": per_round}


MODES = ["threads", "iter", "async", "async-1"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_property_every_mode_matches_the_serial_executor(program: list[Any]) -> None:
    serial = run_mode("serial", program)
    for mode in MODES:
        other = run_mode(mode, program)
        assert other["results"] == serial["results"], f"{mode}: results differ from serial"
        assert other["shape"] == serial["shape"], f"{mode}: rounds/batches differ from serial"
        assert other["calls"] == serial["calls"], f"{mode}: run_batch calls differ from serial"


EXAMPLE = [
    ("gen", True, [
        ("list", [("op", "A", 1), ("op", "B", 2), ("op", "B", 4), ("op", "B", 6), ("op", "C", 3),
                  ("op", "C", 3)]),
        ("one", ("op", "B", 7)),
        ("dict", [("op", "L", 5), ("op", "E", 13), ("op", "D", 8)]),
        ("one", ("op", "E", 13)),
    ]),
    ("gen", False, [("settled", [("op", "A", 9), ("op", "L", 13)])]),
]


@pytest.mark.parametrize("mode", ["serial", *MODES])
def test_a_known_program_in_every_mode(mode: str) -> None:
    got = run_mode(mode, EXAMPLE)
    assert got["results"] == [
        [[10, 20, 40, 60, 30, 30],
         ("raised", "ConnectionError", "B call [7] failed"),  # the whole call failed
         ("raised", "KeyError", "'E 13'"),  # the dict's first failure, after L and D finished
         ("raised", "KeyError", "'E 13'")],  # a cached failure: no second call
        [[90, ("raised", "KeyError", "'A 13'")]],
    ]
    assert got["calls"] == [
        [("A", None, [1, 9]), ("B", 0, [2, 4]), ("B", 0, [6]), ("C", None, [3]), ("L", None, [13])],
        [("A", None, [13]), ("B", 1, [7])],
        [("D", None, [8]), ("E", None, [13]), ("L", None, [5])],
        [("A", None, [5])],
    ]
    # In dispatch order: groups in the order of their first operation.
    assert [[(name, key, size) for name, key, size, _, _, _ in r] for r in got["shape"]] == [
        [("A", None, 2), ("B", 0, 2), ("B", 0, 1), ("C", None, 1), ("L", None, 1)],
        [("B", 1, 1), ("A", None, 1)],
        [("L", None, 1), ("E", None, 1), ("D", None, 1)],
        [("A", None, 1)],
    ]
    assert [[error for *_, error in r] for r in got["shape"]][1] == ["ConnectionError", None]


def test_trace_counts_operations_requested_before_dedupe() -> None:
    got = run_mode("serial", [("gen", False, [("list", [("op", "C", 3), ("op", "C", 3), ("op", "C", 4)])])])
    assert got["calls"] == [[("C", None, [3, 4])]]
    assert [(size, requested) for _, _, size, requested, _, _ in got["shape"][0]] == [(2, 3)]


def test_blocking_flag_only_matters_under_asyncio() -> None:
    threads: dict[str, set[int]] = {}

    class Where(batch.BatchableOperation[Any]):
        blocking: ClassVar[bool] = True

        @classmethod
        def run_batch(cls, operations: list[Any]) -> list[Any]:
            threads.setdefault(MODE, set()).add(threading.get_ident())
            return [None for _ in operations]

    batch.execute(Where())
    assert threads["sync"] == {threading.get_ident()}

    async def main() -> None:
        global MODE
        MODE = "async"
        try:
            await batch.execute_async(Where())
        finally:
            MODE = "sync"

    asyncio.run(main())
    assert threading.get_ident() not in threads["async"]
