"""The short path of ``execute``/``execute_async`` (``batch._short``) behaves as the core does.

A root that yields lone operations runs inline, and is handed to a core the
moment anything else happens.  Each scenario here runs twice - through the
short path (no options) and through the core (``timeout=inf``, which forces
it and limits nothing) - and the two runs must agree on everything a user
can see: the value or the exception (type, message, notes, rounds), the
``run_batch`` calls and their order, and the order of the generators'
``finally`` blocks.  Some scenarios also pin the expected outcome itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Callable, Generator
from typing import Any

import pytest

import batch
import batch._short as short
from batch.testing import override

Gen = Generator[Any, Any, Any]
Log = list[Any]


def make_ops(log: Log) -> dict[str, type[batch.BatchableOperation[Any]]]:
    """Operation classes that record their calls in ``log``."""

    class Get(batch.BatchableOperation[Any]):
        def __init__(self, key: Any) -> None:
            self.key = key

        @classmethod
        def run_batch(cls, ops: list[Get]) -> list[Any]:
            log.append(("Get", [op.key for op in ops]))
            return [ValueError(f"no row {op.key}") if str(op.key).startswith("bad") else op.key * 2
                     for op in ops]

    class Boom(batch.BatchableOperation[Any]):
        def __init__(self, key: Any) -> None:
            self.key = key

        @classmethod
        def run_batch(cls, ops: list[Boom]) -> list[Any]:
            log.append(("Boom", [op.key for op in ops]))
            if ops[0].key == "interrupt":
                raise KeyboardInterrupt
            raise RuntimeError("store down")

    class Odd(batch.BatchableOperation[Any]):
        """Returns what its key says: too many results, a tuple, a changed list, a generator."""

        def __init__(self, key: Any) -> None:
            self.key = key

        @classmethod
        def run_batch(cls, ops: list[Odd]) -> Any:
            log.append(("Odd", [op.key for op in ops]))
            how = ops[0].key
            if how == "count":
                return [1, 2]
            if how == "tuple":
                return ("t",)
            if how == "changed":
                ops[0] = Odd("other")
                return ["x"]
            if how == "layered":
                return layered(ops)
            return "not a list"

    def layered(ops: list[Any]) -> Gen:
        got = yield Get(21)
        return [f"layered {got}"] * len(ops)

    class Cached(batch.BatchableOperation[Any]):
        cache_results = True

        def __init__(self, key: Any) -> None:
            self.key = key

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Cached) and other.key == self.key

        def __hash__(self) -> int:
            return hash(self.key)

        @classmethod
        def run_batch(cls, ops: list[Cached]) -> list[Any]:
            log.append(("Cached", [op.key for op in ops]))
            return [op.key for op in ops]

    class Small(batch.BatchableOperation[Any]):
        max_batch_size = 2

        def __init__(self, key: Any) -> None:
            self.key = key

        @classmethod
        def run_batch(cls, ops: list[Small]) -> list[Any]:
            log.append(("Small", [op.key for op in ops]))
            return [op.key for op in ops]

    class Dedupe(batch.BatchableOperation[Any]):
        dedupe = True

        def __init__(self, key: Any) -> None:
            self.key = key

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Dedupe) and other.key == self.key

        def __hash__(self) -> int:
            return hash(self.key)

        @classmethod
        def run_batch(cls, ops: list[Dedupe]) -> list[Any]:
            log.append(("Dedupe", [op.key for op in ops]))
            return [op.key for op in ops]

    class Reversing(batch.BatchableOperation[Any]):
        """Reorders its list in place (allowed): its results follow the new order."""

        def __init__(self, key: Any) -> None:
            self.key = key

        @classmethod
        def run_batch(cls, ops: list[Reversing]) -> list[Any]:
            ops.reverse()
            log.append(("Reversing", [op.key for op in ops]))
            return [f"r{op.key}" for op in ops]

    return {"Get": Get, "Boom": Boom, "Odd": Odd, "Cached": Cached, "Small": Small,
            "Dedupe": Dedupe, "Reversing": Reversing}


def scenarios(ops: dict[str, Any], log: Log) -> dict[str, Callable[[], Gen]]:
    Get, Boom, Odd, Cached = ops["Get"], ops["Boom"], ops["Odd"], ops["Cached"]
    Small, Dedupe, Reversing = ops["Small"], ops["Dedupe"], ops["Reversing"]

    def watched(name: str, body: Gen) -> Gen:
        try:
            return (yield from body)
        finally:
            log.append(("finally", name))

    def chain() -> Gen:
        a = yield Get(1)
        b = yield Get(a)
        return (yield Get(b))

    def caught_item() -> Gen:
        try:
            yield Get("bad1")
        except ValueError as exc:
            return f"caught {exc}"
        return "not raised"

    def uncaught_item() -> Gen:
        a = yield Get(1)
        yield Get(f"bad{a}")
        return "not raised"

    def caught_call() -> Gen:
        try:
            yield Boom(1)
        except RuntimeError as exc:
            return f"caught {exc}"
        return "not raised"

    def uncaught_call() -> Gen:
        yield Get(1)
        return (yield Boom(2))

    def odd(how: str) -> Callable[[], Gen]:
        def gen() -> Gen:
            first = yield Get(1)
            return first, (yield Odd(how))
        return gen

    def child(k: int) -> Gen:
        return (yield Get(k))

    def handover_structure() -> Gen:
        a = yield Get(1)
        b = yield Get(a)
        both = yield [Get(b), child(10), Get(5)]
        return (yield Get(sum(both)))

    def handover_child_first() -> Gen:
        first = yield child(4)
        return first, (yield Get(first))

    def from_list() -> Gen:
        return (yield from [Get(1)])  # type: ignore[misc]

    def raises_at_once() -> Gen:
        raise LookupError("before any yield")
        yield  # pragma: no cover

    def raises_later() -> Gen:
        yield Get(1)
        yield Get(2)
        raise LookupError("after two rounds")

    def cached_twice() -> Gen:
        a = yield Cached(1)
        b = yield Get(a)
        return a, b, (yield Cached(1))

    def interrupt() -> Gen:
        yield Get(1)
        yield Boom("interrupt")

    def itself() -> Gen:
        yield gen_holder[0]

    gen_holder: list[Any] = []

    def self_wait() -> Gen:
        g = itself()
        gen_holder[:] = [g]
        return g

    def a_list() -> Gen:
        xs = yield [Get(1), Get(2), Get(3)]
        ys = yield (Get(xs[0]), Get(xs[2]))  # a tuple: a list of results, as for any tuple
        return xs, ys, (yield Get(sum(ys)))

    def list_failing(catch: bool) -> Callable[[], Gen]:
        def gen() -> Gen:
            try:
                return (yield [Get(1), Get("bad2"), Get("bad3")])
            except ValueError as exc:
                if catch:
                    return f"caught {exc}"
                raise
        return gen

    def list_mixed() -> Gen:
        return (yield [Get(1), Odd("tuple"), Get(2)])

    def list_chunked() -> Gen:
        return (yield [Small(1), Small(2), Small(3)])

    def list_deduped() -> Gen:
        return (yield [Dedupe(1), Dedupe(1), Dedupe(2)])

    def list_reordered() -> Gen:
        return (yield [Reversing(1), Reversing(2), Reversing(3)])

    def list_empty() -> Gen:
        empty = yield []
        return empty, (yield [Get(5)])

    def list_then_child() -> Gen:
        xs = yield [Get(1), Get(2)]
        return xs, (yield [child(3), Get(4)])

    def level(name: str, body: Gen) -> Gen:
        try:
            return (yield from body)
        finally:
            log.append(("finally", name))

    def chain_of(depth: int, bottom: Callable[[], Gen]) -> Gen:
        if depth == 0:
            return (yield level("bottom", bottom()))
        got = yield Get(depth)
        below = yield level(f"level {depth}", chain_of(depth - 1, bottom))
        return got, below

    def op_bottom() -> Gen:
        return (yield [Get(7), Get(8)])

    def failing_bottom() -> Gen:
        yield Get(1)
        raise LookupError("at the bottom")

    def caught_below() -> Gen:
        try:
            return (yield level("thrower", failing_bottom()))
        except LookupError as exc:
            return f"caught {exc}", (yield Get(3))

    def interrupted_bottom() -> Gen:
        yield Get(1)
        return (yield Boom("interrupt"))

    def cached_bottom() -> Gen:
        first = yield Cached(5)
        return first, (yield Get(first))

    def finished_child() -> Gen:
        done = child(1)
        first = yield done
        return first, (yield done)  # a finished generator, yielded again

    def genexpr_child() -> Gen:
        return (yield (Get(k) for k in range(2)))

    table: dict[str, Callable[[], Gen]] = {
        "a chain": lambda: chain_of(3, op_bottom),
        "a chain that fails at the bottom": lambda: chain_of(2, failing_bottom),
        "a failure caught a level up": caught_below,
        "a chain interrupted at the bottom": lambda: chain_of(2, interrupted_bottom),
        "a chain handed over at the bottom": lambda: chain_of(2, cached_bottom),
        "a finished child yielded again": finished_child,
        "a generator expression yielded": genexpr_child,
        "a list": a_list,
        "a list with failures, caught": list_failing(True),
        "a list with failures": list_failing(False),
        "a list of two classes": list_mixed,
        "a list longer than max_batch_size": list_chunked,
        "a list of a dedupe class": list_deduped,
        "a list reordered by run_batch": list_reordered,
        "an empty list": list_empty,
        "a list, then a child in a list": list_then_child,
        "chain": chain,
        "caught item": caught_item,
        "uncaught item": uncaught_item,
        "caught call": caught_call,
        "uncaught call": uncaught_call,
        "count": odd("count"),
        "tuple": odd("tuple"),
        "changed list": odd("changed"),
        "layered": odd("layered"),
        "not a list": odd("other"),
        "structure after two rounds": handover_structure,
        "child first": handover_child_first,
        "yield from a list": from_list,
        "raises at once": raises_at_once,
        "raises later": raises_later,
        "cached": cached_twice,
        "interrupt": interrupt,
    }
    out = {name: (lambda name=name, make=make: watched(name, make()))  # type: ignore[misc]
           for name, make in table.items()}
    out["waits on itself"] = self_wait  # the bare generator: it must be the root itself
    return out


NAMES = list(scenarios(make_ops([]), []))


def outcome(run: Callable[[], Any]) -> Any:
    try:
        return ("value", run())
    except BaseException as exc:  # KeyboardInterrupt included: it is part of the contract
        return ("raised", type(exc).__name__, str(exc), getattr(exc, "__notes__", None),
                getattr(exc, "batch_rounds_completed", None))


def run_both(name: str, execute: Callable[[Gen, bool], Any]) -> tuple[Any, Any]:
    results = []
    for forced_core in (False, True):
        log: Log = []
        make = scenarios(make_ops(log), log)[name]
        results.append((outcome(lambda: execute(make(), forced_core)), log))  # noqa: B023
    return results[0], results[1]


def sync_execute(gen: Gen, forced_core: bool) -> Any:
    return batch.execute(gen, timeout=math.inf) if forced_core else batch.execute(gen)


def async_execute(gen: Gen, forced_core: bool) -> Any:
    if forced_core:
        return asyncio.run(batch.execute_async(gen, timeout=math.inf))
    return asyncio.run(batch.execute_async(gen))


@pytest.mark.parametrize("name", NAMES)
def test_execute_agrees_with_the_core(name: str) -> None:
    short_run, core_run = run_both(name, sync_execute)
    assert short_run == core_run


@pytest.mark.parametrize("name", NAMES)
def test_execute_async_agrees_with_the_core(name: str) -> None:
    short_run, core_run = run_both(name, async_execute)
    assert short_run == core_run


def test_what_the_scenarios_give() -> None:
    """The agreement above is on the right answers (a few pinned)."""
    def run(name: str) -> Any:
        return run_both(name, sync_execute)[0]

    assert run("chain") == (("value", 8), [("Get", [1]), ("Get", [2]), ("Get", [4]),
                                           ("finally", "chain")])
    assert run("caught item")[0] == ("value", "caught no row bad1")
    assert run("uncaught item")[0] == ("raised", "ValueError", "no row bad2",
                                       ["batch: execution failed after 2 round(s)"], 2)
    assert run("raises at once")[0][:2] == ("raised", "LookupError")
    assert run("raises at once")[0][4] == 0
    assert run("structure after two rounds") == (
        ("value", 76), [("Get", [1]), ("Get", [2]), ("Get", [4, 5, 10]), ("Get", [38]),
                        ("finally", "structure after two rounds")])
    assert run("layered")[0] == ("value", (2, "layered 42"))
    # The cache of the execution spans the short path and the core.
    assert run("cached") == (("value", (1, 2, 1)),
                             [("Cached", [1]), ("Get", [1]), ("finally", "cached")])
    interrupted = run("interrupt")
    assert interrupted[0] == ("raised", "KeyboardInterrupt", "",
                              ["batch: execution failed after 2 round(s)"], 2)
    assert interrupted[1][-1] == ("finally", "interrupt")
    assert "used `yield from` on a list_iterator" in run("yield from a list")[0][2]
    assert "changed the list of operations" in run("changed list")[0][2]
    assert "returned 2 results for 1 operations" in run("count")[0][2]
    assert run("a list") == (("value", ([2, 4, 6], [4, 12], 32)),
                             [("Get", [1, 2, 3]), ("Get", [2, 6]), ("Get", [16]),
                              ("finally", "a list")])
    assert run("a list with failures, caught")[0] == ("value", "caught no row bad2")
    assert run("a list longer than max_batch_size")[1][:2] == [("Small", [1, 2]), ("Small", [3])]
    assert run("a list of a dedupe class") == (("value", [1, 1, 2]), [
        ("Dedupe", [1, 2]), ("finally", "a list of a dedupe class")])
    assert run("a list reordered by run_batch")[0] == ("value", ["r1", "r2", "r3"])
    assert run("an empty list")[0] == ("value", ([], [10]))
    assert run("a chain") == (("value", (6, (4, (2, [14, 16])))), [
        ("Get", [3]), ("Get", [2]), ("Get", [1]), ("Get", [7, 8]), ("finally", "bottom"),
        ("finally", "level 1"), ("finally", "level 2"), ("finally", "level 3"),
        ("finally", "a chain")])
    assert run("a failure caught a level up")[0] == ("value", ("caught at the bottom", 6))
    interrupted = run("a chain interrupted at the bottom")
    assert interrupted[0][:2] == ("raised", "KeyboardInterrupt")
    assert interrupted[1][-4:] == [("finally", "bottom"), ("finally", "level 1"),
                                   ("finally", "level 2"),
                                   ("finally", "a chain interrupted at the bottom")]
    assert run("a finished child yielded again")[0][:2] == ("raised", "GeneratorReusedError")
    assert run("a generator expression yielded")[0][:2] == ("raised", "YieldTypeError")


def test_a_plain_chain_makes_no_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the path is for: a request of lone operations never builds the core's machinery."""
    def no_core(**_: Any) -> Any:
        raise AssertionError("a core was made")

    monkeypatch.setattr(short, "Core", no_core)
    log: Log = []
    chain = scenarios(make_ops(log), log)["chain"]
    assert batch.execute(chain()) == 8
    assert asyncio.run(batch.execute_async(chain())) == 8


def test_an_async_run_batch_is_awaited_in_its_own_context() -> None:
    seen = contextvars.ContextVar("seen", default="unset")

    class AsyncGet(batch.BatchableOperation[int]):
        def __init__(self, key: int) -> None:
            self.key = key

        @classmethod
        async def run_batch(cls, ops: list[AsyncGet]) -> list[int]:
            seen.set("set by run_batch")
            await asyncio.sleep(0)
            return [op.key + 1 for op in ops]

    def gen() -> Gen:
        a = yield AsyncGet(1)
        b = yield AsyncGet(a)
        return a, b, seen.get()

    async def main() -> Any:
        return await batch.execute_async(gen()), seen.get()

    assert asyncio.run(main()) == ((2, 3, "unset"), "unset")


def test_a_blocking_class_runs_in_a_worker_thread_under_execute_async() -> None:
    import threading

    class Blocking(batch.BatchableOperation[int]):
        blocking = True

        def __init__(self, key: int) -> None:
            self.key = key

        @classmethod
        def run_batch(cls, ops: list[Blocking]) -> list[Any]:
            return [threading.get_ident() for _ in ops]

    def gen() -> Gen:
        return (yield Blocking(1))

    async def main() -> Any:
        return await batch.execute_async(gen())

    assert asyncio.run(main()) != threading.get_ident()


@pytest.mark.parametrize("forced_core", [False, True])
def test_cancelling_between_rounds_closes_the_generator(forced_core: bool) -> None:
    log: Log = []
    Get = make_ops(log)["Get"]

    def gen() -> Gen:
        try:
            while True:
                yield Get(1)
        finally:
            log.append("closed")

    g = gen()  # held here: only the executor can close it in time

    async def main() -> BaseException:
        options = {"timeout": math.inf} if forced_core else {}
        task = asyncio.ensure_future(batch.execute_async(g, **options))
        for _ in range(3):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as exc:
            return exc
        raise AssertionError("not cancelled")

    exc = asyncio.run(main())
    assert log[-1] == "closed" and log.count("closed") == 1
    rounds = len(log) - 1
    assert 1 <= rounds <= 4  # a round per turn of the loop
    assert exc.__notes__ == [f"batch: execution failed after {rounds} round(s)"]


def test_a_testing_override_in_force_is_used() -> None:
    log: Log = []
    Get = make_ops(log)["Get"]

    def gen() -> Gen:
        return (yield Get(1))

    with override(Get, lambda ops: ["faked" for _ in ops]):
        assert batch.execute(gen()) == "faked"
    assert log == []


def test_contextvars_set_by_the_generator_stay_in_it() -> None:
    var = contextvars.ContextVar("var", default="caller")
    log: Log = []
    Get = make_ops(log)["Get"]

    def gen() -> Gen:
        var.set("generator")
        got = yield Get(1)
        return got, var.get()

    assert batch.execute(gen()) == (2, "generator")
    assert var.get() == "caller"


def test_an_execution_inside_run_batch_knows_it_is_nested() -> None:
    log: Log = []
    Get = make_ops(log)["Get"]

    class Outer(batch.BatchableOperation[int]):
        cache_results = True

        def __init__(self, key: int) -> None:
            self.key = key

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Outer) and other.key == self.key

        def __hash__(self) -> int:
            return hash(self.key)

        @classmethod
        def run_batch(cls, ops: list[Outer]) -> list[int]:
            def inner() -> Gen:
                return (yield Get(ops[0].key))
            return [batch.execute(inner()) for _ in ops]

    def gen() -> Gen:
        return (yield Outer(5))

    assert batch.execute(gen()) == 10
    assert log == [("Get", [5])]
