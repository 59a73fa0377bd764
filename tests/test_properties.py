"""Property tests: random call trees against a naive one-at-a-time interpreter.

Hypothesis draws trees of generators that yield operations, sub-generators and
lists/tuples/dicts mixing both, over several sequential steps; some operations
fail (an exception instance in place of their result), some generators raise,
some catch what their yields throw.  For every tree (DESIGN.md section 4):

- each root gets exactly what a naive interpreter gives it, which runs the
  *same* generators but sends every operation alone and evaluates structures
  item by item;
- the number of rounds is the longest chain of dependent operations, and each
  round calls ``run_batch`` once per distinct group pending in it, with the
  operations computed from the tree by a timing model;
- groups go out in the order of their first yielded operation, operations in
  yield order;
- a second run makes exactly the same calls.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batch

Gen = Generator[Any, Any, Any]


# -- the tree ---------------------------------------------------------------------


@dataclass
class OpSpec:
    """An operation: class "A" or "B" (B is split by ``shard``), maybe failing."""

    cls: str
    shard: int
    fails: bool
    id: int = 0


@dataclass
class GenSpec:
    """A generator: yields each step in turn, maybe raising before step ``raise_at``."""

    steps: list[Any]
    catch: bool  # each yield in try/except, the exception becomes the step's value
    raise_at: int | None  # raise before this step (== len(steps): after the last)
    legacy: bool  # finish with ``yield GenResult(v)`` instead of ``return v``
    id: int = 0


@dataclass
class ListSpec:
    items: list[Any]
    as_tuple: bool


@dataclass
class DictSpec:
    items: list[Any]


def _number(node: Any, counter: list[int]) -> Any:
    """Give every operation and generator of the tree a unique id, in tree order."""
    if isinstance(node, (OpSpec, GenSpec)):
        counter[0] += 1
        node.id = counter[0]
    children = getattr(node, "steps", None) or getattr(node, "items", None) or []
    for child in children:
        _number(child, counter)
    return node


ops = st.builds(OpSpec, cls=st.sampled_from("AB"), shard=st.integers(0, 1),
                fails=st.integers(0, 5).map(lambda n: n == 0))


def _gen_of(children: st.SearchStrategy[Any]) -> st.SearchStrategy[GenSpec]:
    return st.builds(GenSpec, steps=st.lists(children, max_size=3), catch=st.booleans(),
                     raise_at=st.none() | st.none() | st.integers(0, 3), legacy=st.booleans())


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        _gen_of(children),
        st.builds(ListSpec, items=st.lists(children, max_size=3), as_tuple=st.booleans()),
        st.builds(DictSpec, items=st.lists(children, max_size=3)),
    )


yieldables = st.recursive(ops, _extend, max_leaves=14)
trees = st.lists(_gen_of(yieldables), min_size=1, max_size=3).map(
    lambda roots: [_number(r, [i * 1000]) for i, r in enumerate(roots)])


# -- running a tree ------------------------------------------------------------------


class OpFailed(Exception):
    """What a failing operation's result is."""


class GenFailed(Exception):
    """What a raising generator raises."""


@dataclass
class Log:
    """What one run saw: calls (round, class, batch key, ids) and ops in yield order."""

    calls: list[tuple[int, str, int | None, list[int]]] = field(default_factory=list)
    yielded: list[int] = field(default_factory=list)
    trace: batch.Trace | None = None


LOG = Log()


def _answer(spec: OpSpec) -> Any:
    return OpFailed(spec.id) if spec.fails else f"{spec.cls}{spec.id}"


class OpA(batch.BatchableOperation[str]):
    def __init__(self, spec: OpSpec) -> None:
        self.spec = spec

    def key(self) -> int | None:
        return None

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        trace = LOG.trace
        rnd = len(trace.rounds) if trace is not None else 0
        LOG.calls.append((rnd, cls.__name__, operations[0].key(), [op.spec.id for op in operations]))
        return [_answer(op.spec) for op in operations]


class OpB(OpA):
    def key(self) -> int | None:
        return self.spec.shard

    def batch_key(self) -> int:
        return self.spec.shard


CLASSES = {"A": OpA, "B": OpB}


def _build(node: Any) -> Any:
    """The yieldable value for ``node``; logs its direct operations in structure order."""
    if isinstance(node, OpSpec):
        LOG.yielded.append(node.id)
        return CLASSES[node.cls](node)
    if isinstance(node, GenSpec):
        return gen_node(node)
    if isinstance(node, ListSpec):
        items = [_build(child) for child in node.items]
        return tuple(items) if node.as_tuple else items
    return {f"k{i}": _build(child) for i, child in enumerate(node.items)}


def _describe(exc: BaseException) -> tuple[str, tuple[Any, ...]]:
    return type(exc).__name__, exc.args


def gen_node(spec: GenSpec) -> Gen:
    """The generator a tree node stands for (run by the executor and by the naive one)."""
    values = []
    for i, step in enumerate(spec.steps):
        if spec.raise_at == i:
            raise GenFailed(spec.id)
        x = _build(step)
        if spec.catch:
            try:
                value = yield x
            except Exception as exc:
                value = ("caught", _describe(exc))
        else:
            value = yield x
        values.append(value)
    if spec.raise_at == len(spec.steps):
        raise GenFailed(spec.id)
    result = (spec.id, values)
    if spec.legacy:
        yield batch.GenResult(result)
    return result


def naive(x: Any) -> Any:
    """Evaluate a yieldable one thing at a time: the reference semantics."""
    if isinstance(x, batch.BatchableOperation):
        (result,) = type(x).run_batch([x])
        if isinstance(result, Exception):
            raise result
        return result
    if isinstance(x, (list, tuple, dict)):
        items = list(x.values()) if isinstance(x, dict) else list(x)
        values: list[Any] = []
        failure: Exception | None = None
        for item in items:  # every item runs, then the first failure is raised
            try:
                values.append(naive(item))
            except Exception as exc:
                values.append(None)
                failure = failure or exc
        if failure is not None:
            raise failure
        return dict(zip(x, values)) if isinstance(x, dict) else values
    gen = x
    send: Any = None
    error: Exception | None = None
    while True:
        try:
            y = gen.send(send) if error is None else gen.throw(error)
        except StopIteration as stop:
            return stop.value
        if isinstance(y, batch.GenResult):
            gen.close()
            return y.value
        send, error = None, None
        try:
            send = naive(y)
        except Exception as exc:
            error = exc


def outcome(run: Any) -> tuple[str, Any]:
    try:
        return "ok", run()
    except Exception as exc:
        return "err", _describe(exc)


# -- the timing model ---------------------------------------------------------------


def model(node: Any, t0: int, dispatched: dict[int, list[OpSpec]]) -> tuple[int, tuple[str, Any]]:
    """(rounds completed when ``node`` resolves, its outcome), started after ``t0`` rounds.

    An operation yielded after ``t0`` rounds goes out in round ``t0 + 1``;
    a structure resolves when its slowest item does; a generator's steps
    follow each other.  Records each operation under its round.
    """
    if isinstance(node, OpSpec):
        dispatched.setdefault(t0 + 1, []).append(node)
        answer = _answer(node)
        if isinstance(answer, Exception):
            return t0 + 1, ("err", _describe(answer))
        return t0 + 1, ("ok", answer)
    if isinstance(node, (ListSpec, DictSpec)):
        t = t0
        values = []
        failure = None
        for child in node.items:
            tc, out = model(child, t0, dispatched)
            t = max(t, tc)
            values.append(out[1])
            if out[0] == "err" and failure is None:
                failure = out
        if failure is not None:
            return t, failure
        if isinstance(node, DictSpec):
            return t, ("ok", {f"k{i}": v for i, v in enumerate(values)})
        return t, ("ok", values)
    t = t0
    results = []
    for i, step in enumerate(node.steps):
        if node.raise_at == i:
            return t, ("err", ("GenFailed", (node.id,)))
        t, out = model(step, t, dispatched)
        if out[0] == "err":
            if not node.catch:
                return t, out
            results.append(("caught", out[1]))
        else:
            results.append(out[1])
    if node.raise_at == len(node.steps):
        return t, ("err", ("GenFailed", (node.id,)))
    return t, ("ok", (node.id, results))


def _group_of(spec: OpSpec) -> tuple[str, int | None]:
    return ("OpA", None) if spec.cls == "A" else ("OpB", spec.shard)


def run_batched(roots: list[GenSpec]) -> tuple[list[tuple[str, Any]], Log]:
    global LOG
    LOG = Log(trace=batch.Trace())
    results = batch.execute_many([gen_node(r) for r in roots], return_exceptions=True,
                                 trace=LOG.trace)
    outcomes = [("err", _describe(r)) if isinstance(r, Exception) else ("ok", r) for r in results]
    return outcomes, LOG


# -- the properties ------------------------------------------------------------------


@settings(max_examples=250, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_random_trees_batch_like_the_naive_interpreter(roots: list[GenSpec]) -> None:
    global LOG
    batched, log = run_batched(roots)

    # Same results and exceptions as running one thing at a time.
    LOG = Log()
    expected = [outcome(lambda r=r: naive(gen_node(r))) for r in roots]
    assert all(len(ids) == 1 for _, _, _, ids in LOG.calls)
    assert batched == expected

    # The model agrees with the naive interpreter, so its schedule can be trusted.
    dispatched: dict[int, list[OpSpec]] = {}
    finish = [model(r, 0, dispatched) for r in roots]
    assert [out for _, out in finish] == expected

    # Minimal rounds: the longest chain of dependent operations.
    assert log.trace is not None
    assert len(log.trace.rounds) == max(t for t, _ in finish)

    # Each round: one call per distinct group, groups in first-yield order,
    # operations in yield order.
    position = {op_id: k for k, op_id in enumerate(log.yielded)}
    for rnd in range(1, len(log.trace.rounds) + 1):
        pending = sorted(dispatched.get(rnd, []), key=lambda spec: position[spec.id])
        groups: dict[tuple[str, int | None], list[int]] = {}
        for spec in pending:
            groups.setdefault(_group_of(spec), []).append(spec.id)
        want = [(rnd, name, key, ids) for (name, key), ids in groups.items()]
        got = [call for call in log.calls if call[0] == rnd]
        assert got == want, f"round {rnd}"
    assert len(log.calls) == sum(len(r.batches) for r in log.trace.rounds)

    # Deterministic: a second run makes the same calls in the same order.
    again, log2 = run_batched(roots)
    assert again == batched
    assert log2.calls == log.calls


@settings(max_examples=60, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_gen_of(yieldables), min_size=1, max_size=1).map(
    lambda roots: [_number(r, [0]) for r in roots]))
def test_a_single_root_raises_what_the_naive_interpreter_raises(roots: list[GenSpec]) -> None:
    global LOG
    LOG = Log()
    expected = outcome(lambda: naive(gen_node(roots[0])))
    LOG = Log()
    assert outcome(lambda: batch.execute(gen_node(roots[0]))) == expected


@settings(max_examples=150, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_gen_of(yieldables), min_size=1, max_size=1).map(
    lambda roots: [_number(r, [0]) for r in roots]))
def test_the_short_path_does_what_the_core_does(roots: list[GenSpec]) -> None:
    """``execute(gen)`` may run a root on its short path (``batch/_short.py``): same everything.

    ``timeout=inf`` limits nothing but makes ``execute`` use the core from the
    start; both runs must give the same outcome, make the same calls with the
    same batches in the same order, and build the operations in the same order.
    """
    global LOG
    runs = []
    for options in ({}, {"timeout": math.inf}):
        LOG = Log()
        got = outcome(lambda: batch.execute(gen_node(roots[0]), **options))  # noqa: B023
        runs.append((got, LOG.calls, LOG.yielded))
    assert runs[0] == runs[1]
    LOG = Log()
    got_async = outcome(lambda: asyncio.run(batch.execute_async(gen_node(roots[0]))))
    assert (got_async, LOG.calls, LOG.yielded) == runs[1]
