"""Per-generator ``contextvars.Context``, as asyncio gives each task its own.

Each generator runs in a copy of its creator's context, taken when it first
starts: a ``ContextVar`` set inside one generator is never seen by a
generator interleaved with it, nor by its parent, nor by the caller of
``execute``; values the caller set are visible everywhere.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batch

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


class Echo(batch.BatchableOperation[Any]):
    """Returns its payload; records the VAR value each run_batch call sees."""

    seen: list[str] = []  # noqa: RUF012

    def __init__(self, n: Any) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        cls.seen.append(VAR.get())
        return [op.n for op in operations]


class AEcho(batch.BatchableOperation[Any]):
    seen: list[str] = []  # noqa: RUF012

    def __init__(self, n: Any) -> None:
        self.n = n

    @classmethod
    async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
        cls.seen.append(VAR.get())
        await asyncio.sleep(0)
        return [op.n for op in operations]


class BEcho(Echo):
    blocking = True
    seen: list[str] = []  # noqa: RUF012


class Layered(batch.BatchableOperation[Any]):
    seen: list[str] = []  # noqa: RUF012

    def __init__(self, n: Any) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Any]) -> Generator[Any, Any, list[Any]]:
        cls.seen.append(VAR.get())
        out = yield [Echo(op.n) for op in operations]
        cls.seen.append(VAR.get())
        return out


@pytest.fixture(autouse=True)
def clear_seen() -> None:
    for cls in (Echo, AEcho, BEcho, Layered):
        cls.seen = []


def test_a_value_set_in_one_generator_is_invisible_to_interleaved_ones() -> None:
    log: list[tuple[str, str]] = []

    def gen_a() -> Generator[Any, Any, Any]:
        VAR.set("a")
        yield Echo(1)
        log.append(("a after round 1", VAR.get()))
        yield Echo(2)
        log.append(("a after round 2", VAR.get()))

    def gen_b() -> Generator[Any, Any, Any]:
        log.append(("b at start", VAR.get()))  # runs after gen_a set "a" and yielded
        yield Echo(1)
        log.append(("b after round 1", VAR.get()))
        VAR.set("b")
        yield Echo(2)
        log.append(("b after round 2", VAR.get()))

    def gen_root() -> Generator[Any, Any, Any]:
        yield gen_a(), gen_b()
        log.append(("root", VAR.get()))

    batch.execute(gen_root())
    assert log == [
        ("b at start", "unset"),
        ("a after round 1", "a"),
        ("b after round 1", "unset"),
        ("a after round 2", "a"),
        ("b after round 2", "b"),
        ("root", "unset"),
    ]
    assert Echo.seen == ["unset", "unset"]  # run_batch runs in the caller's context


def test_child_inherits_at_first_step_and_parent_never_sees_the_childs_values() -> None:
    log: list[tuple[str, str]] = []

    def gen_child(name: str) -> Generator[Any, Any, Any]:
        log.append((f"{name} starts", VAR.get()))
        VAR.set(name)
        yield Echo(name)
        log.append((f"{name} resumes", VAR.get()))
        return name

    def gen_parent() -> Generator[Any, Any, Any]:
        VAR.set("parent")
        single = gen_child("single")  # created now, started at the yield
        VAR.set("parent 2")
        yield single
        log.append(("parent after single", VAR.get()))
        yield [gen_child("x"), gen_child("y")]
        log.append(("parent after join", VAR.get()))
        yield {"k": gen_child("d")}
        log.append(("parent after dict", VAR.get()))

    VAR.set("caller")
    try:
        batch.execute(gen_parent())
        assert VAR.get() == "caller"
    finally:
        VAR.set("unset")
    assert log == [
        ("single starts", "parent 2"),
        ("single resumes", "single"),
        ("parent after single", "parent 2"),
        ("x starts", "parent 2"),
        ("y starts", "parent 2"),
        ("x resumes", "x"),
        ("y resumes", "y"),
        ("parent after join", "parent 2"),
        ("d starts", "parent 2"),
        ("d resumes", "d"),
        ("parent after dict", "parent 2"),
    ]


def test_a_failing_child_does_not_change_its_parents_context() -> None:
    def gen_child() -> Generator[Any, Any, Any]:
        VAR.set("child")
        yield Echo(1)
        raise ValueError(VAR.get())

    def gen_parent() -> Generator[Any, Any, Any]:
        VAR.set("parent")
        try:
            yield gen_child()
        except ValueError as exc:
            return str(exc), VAR.get()

    assert batch.execute(gen_parent()) == ("child", "parent")


def test_roots_are_isolated_from_each_other_and_from_the_caller() -> None:
    def gen_root(name: str) -> Generator[Any, Any, Any]:
        before = VAR.get()
        VAR.set(name)
        yield Echo(name)
        return before, VAR.get()

    VAR.set("caller")
    try:
        assert batch.execute_many([gen_root("r1"), gen_root("r2")]) == [("caller", "r1"), ("caller", "r2")]
        assert list(batch.execute_iter([gen_root("i1"), gen_root("i2")], window=1)) == [
            ("caller", "i1"), ("caller", "i2")]
        assert VAR.get() == "caller"
    finally:
        VAR.set("unset")


def test_a_root_copies_the_callers_context_when_it_is_added() -> None:
    def gen_root() -> Generator[Any, Any, Any]:
        yield Echo(0)
        return VAR.get()

    def roots() -> Any:
        for n in range(3):
            VAR.set(f"before root {n}")
            yield gen_root()

    token = VAR.set("caller")
    try:
        assert list(batch.execute_iter(roots(), window=1)) == [
            "before root 0", "before root 1", "before root 2"]
    finally:
        VAR.reset(token)


@pytest.mark.parametrize("mode", ["serial", "threads", "async"])
def test_callers_values_are_visible_everywhere(mode: str) -> None:
    def gen_leaf(n: int) -> Generator[Any, Any, Any]:
        seen = [VAR.get()]
        ops: list[Any] = [Echo(n), Layered(n)]
        ops += [AEcho(n), BEcho(n)] if mode == "async" else []
        yield ops
        seen.append(VAR.get())
        return seen

    def gen_root() -> Generator[Any, Any, Any]:
        return (yield [gen_leaf(1), gen_leaf(2)])

    async def run_async() -> Any:
        VAR.set("caller")  # inside the task: the caller's context is the task's
        return await batch.execute_async(gen_root())

    if mode == "async":
        result = asyncio.run(run_async())
    else:
        token = VAR.set("caller")
        try:
            result = batch.execute(gen_root(), max_workers=2 if mode == "threads" else None)
        finally:
            VAR.reset(token)
    assert result == [["caller", "caller"], ["caller", "caller"]]
    assert Echo.seen == ["caller", "caller"]  # round 1 Echo[1, 2], round 2 Layered's Echo[1, 2]
    assert Layered.seen == ["caller", "caller"]
    if mode == "async":
        assert AEcho.seen == ["caller"]
        assert BEcho.seen == ["caller"]


def test_thread_pool_workers_see_the_callers_values() -> None:
    class InThread(batch.BatchableOperation[Any]):
        @classmethod
        def run_batch(cls, operations: list[Any]) -> list[Any]:
            return [(VAR.get(), threading.current_thread().name.startswith("batch"))]

    token = VAR.set("caller")
    try:
        assert batch.execute([InThread(), Echo(1)], max_workers=2) == [("caller", True), 1]
    finally:
        VAR.reset(token)


def test_finally_blocks_run_in_their_own_context_when_closed() -> None:
    seen: list[str] = []

    def gen_leaf(name: str) -> Generator[Any, Any, Any]:
        VAR.set(name)
        try:
            yield Echo(name)
            yield Echo(name)
        finally:
            seen.append(VAR.get())

    def gen_fail() -> Generator[Any, Any, Any]:
        VAR.set("failing")
        yield Echo(0)
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match=r"^stop"):
        batch.execute_many([gen_fail(), gen_leaf("l1"), gen_leaf("l2")])
    assert sorted(seen) == ["l1", "l2"]


def test_legacy_gen_result_finishes_in_the_generators_context() -> None:
    seen: list[str] = []

    def gen_legacy() -> Generator[Any, Any, Any]:
        VAR.set("legacy")
        try:
            yield batch.GenResult((yield Echo(5)))
        finally:
            seen.append(VAR.get())

    assert batch.execute(gen_legacy()) == 5
    assert seen == ["legacy"]


def test_shared_generator_runs_in_the_context_of_its_first_waiter() -> None:
    def gen_shared() -> Generator[Any, Any, Any]:
        yield Echo(0)
        return VAR.get()

    shared = batch.SharedGenerator(gen_shared())

    def gen_waiter(name: str) -> Generator[Any, Any, Any]:
        VAR.set(name)
        value = yield shared.gen()
        return value, VAR.get()

    assert batch.execute([gen_waiter("w1"), gen_waiter("w2")]) == [("w1", "w1"), ("w1", "w2")]


def test_nested_execute_sees_the_generators_context() -> None:
    def gen_inner() -> Generator[Any, Any, Any]:
        yield Echo(1)
        inherited = VAR.get()
        VAR.set("inner")
        return inherited

    def gen_outer() -> Generator[Any, Any, Any]:
        VAR.set("outer")
        inner = batch.execute(gen_inner())
        yield Echo(2)
        return inner, VAR.get()

    assert batch.execute(gen_outer()) == ("outer", "outer")


def test_values_survive_rounds_in_every_mode() -> None:
    def gen(name: str) -> Generator[Any, Any, Any]:
        VAR.set(name)
        seen = []
        for i in range(3):
            yield Echo(i), BEcho(i)
            seen.append(VAR.get())
        return seen

    expected = [["g1"] * 3, ["g2"] * 3]
    assert batch.execute_many([gen("g1"), gen("g2")]) == expected
    assert batch.execute_many([gen("g1"), gen("g2")], max_workers=2) == expected
    assert asyncio.run(batch.execute_many_async([gen("g1"), gen("g2")])) == expected


def test_a_value_set_by_run_batch_does_not_leak_into_the_caller() -> None:
    class Setter(batch.BatchableOperation[Any]):
        @classmethod
        def run_batch(cls, operations: list[Any]) -> list[Any]:
            VAR.set("set by run_batch")
            return [None for _ in operations]

    def gen() -> Generator[Any, Any, Any]:
        yield Setter()
        return (yield Layered(1))

    token = VAR.set("caller")
    try:
        batch.execute([Setter(), Echo(1)], max_workers=2)
        assert VAR.get() == "caller"  # the thread pool copies the context: no leak
        batch.execute(gen())
        assert (VAR.get(), Layered.seen) == ("caller", ["caller", "caller"])
    finally:
        VAR.reset(token)


def test_a_value_set_by_an_async_run_batch_does_not_leak_into_the_awaiting_task() -> None:
    class ASetter(batch.BatchableOperation[Any]):
        @classmethod
        async def run_batch(cls, operations: list[Any]) -> list[Any]:  # type: ignore[override]
            VAR.set("set by run_batch")
            return [None for _ in operations]

    async def main() -> list[str]:
        VAR.set("caller")
        seen = []
        await batch.execute_async([ASetter(), AEcho(1)])  # two calls: each in its own task
        seen.append(VAR.get())
        await batch.execute_async(ASetter())  # one call: awaited in the caller's task
        seen.append(VAR.get())
        return seen

    assert asyncio.run(main()) == ["caller", "caller"]


# -- property: every generator sees its own value, inherited at start ----------


Tree = Any  # ("op", n) | ("gen", [Tree | list[Tree]])


def trees() -> st.SearchStrategy[Tree]:
    leaf = st.integers(0, 5).map(lambda n: ("op", n))
    return st.recursive(
        leaf,
        lambda kids: st.tuples(st.just("gen"), st.lists(
            st.one_of(kids, st.lists(kids, min_size=1, max_size=3)), max_size=3)),
        max_leaves=12,
    )


def expect(tree: Tree, parent: str) -> Any:
    return tree[1] if tree[0] == "op" else parent


def build(tree: Tree, name: str, problems: list[str]) -> Any:
    kind, body = tree
    if kind == "op":
        return Echo(body)

    def gen_node() -> Generator[Any, Any, Any]:
        parent = VAR.get()
        VAR.set(name)
        for i, step in enumerate(body):
            if isinstance(step, list):
                item: Any = [build(s, f"{name}.{i}.{j}", problems) for j, s in enumerate(step)]
            else:
                item = build(step, f"{name}.{i}", problems)
            got = yield item
            # A child generator returns the value it inherited: this one's name.
            want = [expect(s, name) for s in step] if isinstance(step, list) else expect(step, name)
            if got != want:
                problems.append(f"{name} got {got!r} at step {i}, expected {want!r}")
            if VAR.get() != name:
                problems.append(f"{name} saw {VAR.get()!r} after step {i}")
        return parent

    return gen_node()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(trees(), min_size=1, max_size=4))
def test_property_each_generator_keeps_its_own_value(roots: list[Tree]) -> None:
    problems: list[str] = []

    def parents_seen() -> list[Any]:
        return [t[1] if t[0] == "op" else "caller" for t in roots]

    token = VAR.set("caller")
    try:
        for mode in ("serial", "threads"):
            xs = [build(t, f"r{k}", problems) for k, t in enumerate(roots)]
            got = batch.execute_many(xs, max_workers=2 if mode == "threads" else None)
            assert got == parents_seen(), mode
            assert VAR.get() == "caller"

        async def main() -> Any:
            return await batch.execute_many_async([build(t, f"r{k}", problems)
                                                   for k, t in enumerate(roots)])

        assert asyncio.run(main()) == parents_seen()
    finally:
        VAR.reset(token)
    assert problems == []
