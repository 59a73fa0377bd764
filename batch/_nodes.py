"""What the round loop works on: tasks, joins, groups, dispatches, calls.

The executor (``_executor.py``) moves values between these; this module
holds their layout and the small helpers that word errors and chunk groups.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Hashable
from operator import itemgetter
from typing import Any

from ._errors import BatchError, GeneratorReusedError, YieldTypeError, describe_generator
from ._operation import BatchableOperation, Batcher, OpInfo, Settled
from ._sharing import SharedGenerator
from ._trace import BatchRecord

__all__ = [
    "CTX", "FAILED", "GEN", "GEN_SEND", "INDEX", "PENDING", "SCALAR", "SINCE", "SINK", "STACK",
    "VALUE", "Call", "DedupeOps", "Dispatch", "GeneratorType", "Group", "Join", "Root",
    "RootFailure", "Task", "by_since", "chunks", "display_key", "gen_of", "name_of",
    "open_join", "owner_name", "requested_count", "reuse_error", "root_gen", "set_slot",
    "settled_target", "unhashable_error", "yield_error", "yieldable",
]

GeneratorType = types.GeneratorType
SCALAR: Any = object()  # join.keys for ``settled(single_item)``


# A task is a chain of generators run one at a time.  It is a plain list,
# not a class instance, because one is made for every generator that runs
# beside its siblings, and a list display costs a fraction of an __init__:
#
#     [gen, ctx, stack, sink, index, value, failed, since]
#
# gen    the active (top) generator; None once the task finished
# ctx    gen's contextvars.Context
# stack  the suspended parents of gen in this chain, flat: [gen0, ctx0, gen1,
#        ctx1, ...] (no tuple per level: fewer objects for the GC to track), or None
# sink   who gets the task's result: a Join, Root, SharedGenerator or Call
# index  the slot of the sink that the result fills
# value  what to send (or, if failed, throw) into gen when it next runs
# failed whether value is an exception to throw; PENDING when value is what
#        gen already yielded (its first yield, taken when ``_join`` started it)
# since  when the task began to wait (a counter): after a round, woken tasks
#        resume in that order, i.e. in the order they ran in the round before
#
# The ready stack holds tasks themselves; a wake-up writes value/failed into
# the task rather than allocating a (task, value, failed) tuple.  Hot loops
# index tasks with literal ints; the names below are for the rest.
Task = list
GEN, CTX, STACK, SINK, INDEX, VALUE, FAILED, SINCE = 0, 1, 2, 3, 4, 5, 6, 7
by_since = itemgetter(7)
PENDING: Any = object()  # ``failed`` of a task whose ``value`` is a yield still to take up
GEN_SEND = types.GeneratorType.send
gen_of = itemgetter(0)


class Join:
    """A yielded structure being filled in; ``remaining`` slots to go."""

    __slots__ = ("values", "remaining", "sink", "index", "keys", "first_error", "settled")

    values: list[Any]
    remaining: int
    sink: Any
    index: int
    keys: Any
    first_error: int
    settled: bool

    def result(self) -> tuple[Any, bool]:
        """The structure's value, or its first failure in structure order."""
        if self.first_error >= 0 and not self.settled:
            return self.values[self.first_error], True
        keys = self.keys
        if keys is None:
            return self.values, False
        if keys is SCALAR:
            return self.values[0], False
        return dict(zip(keys, self.values)), False


class Root:
    """Where a root's result lands."""

    __slots__ = ("value", "failed", "done", "raise_at_once")

    def __init__(self, raise_at_once: bool) -> None:
        self.value: Any = None
        self.failed = False
        self.done = False
        self.raise_at_once = raise_at_once

    def resolve(self, run: Any, index: int, value: Any, failed: bool) -> None:
        self.value = value
        self.failed = failed
        self.done = True
        if failed and self.raise_at_once:
            raise RootFailure(value)


class RootFailure(BaseException):
    """Internal: unwinds the executor when an exception reaches a root."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc


class Group:
    """The operations of one round that go to the same ``run_batch``."""

    __slots__ = ("key", "info", "owner", "ops", "targets")

    def __init__(self, key: Hashable, info: OpInfo, owner: Any) -> None:
        self.key = key
        self.info = info
        self.owner = owner  # the operation class, or a seed Batcher
        self.ops: list[Any] = DedupeOps() if info.dedupe else []
        # One entry per run of operations: a Task (one op, scalar yield), or
        # (join, offset, count) for ``count`` consecutive ops of one join.
        self.targets: list[Any] = []


class DedupeOps(list):  # type: ignore[type-arg]
    """The operations of a deduplicating group: each distinct one kept once.

    Deduplicating as operations are queued (not when the round is sent)
    means the repeats are freed at once: a round of a million equal reads
    holds one operation, not a million for the garbage collector to scan.
    ``positions[i]`` is the index in this list of the i-th operation yielded;
    an unhashable operation gets ``-1 - k``, ``k`` indexing ``unhashable``.
    """

    __slots__ = ("seen", "positions", "unhashable")

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[Any, int] = {}
        self.positions: list[int] = []
        self.unhashable: list[tuple[Any, BaseException]] = []

    def append(self, op: Any) -> None:
        index = self.seen
        try:
            i = index.get(op)
            if i is None:
                i = index[op] = len(index)
                list.append(self, op)
        except TypeError as exc:
            self.unhashable.append((op, exc))
            i = -len(self.unhashable)
        self.positions.append(i)

    def extend(self, ops: Any) -> None:
        index = self.seen
        get = index.get
        add = self.positions.append
        keep = super().append
        for op in ops:
            try:
                i = get(op)
                if i is None:
                    i = index[op] = len(index)
                    keep(op)
            except TypeError as exc:
                self.unhashable.append((op, exc))
                i = -len(self.unhashable)
            add(i)


class Dispatch:
    """A group being sent: its unique operations, chunks and results."""

    __slots__ = ("group", "uniq", "positions", "results", "pending", "whole", "markers", "calls")

    def __init__(self, group: Group) -> None:
        self.group = group
        self.calls: list[Call] = []
        self.uniq: list[Any] = group.ops
        self.positions: list[int] | None = None
        self.results: list[Any] = []
        self.pending = 0
        self.whole: set[int] = set()  # ids of exceptions that failed a whole call
        self.markers: list[Any] | None = None


class Call:
    """One ``run_batch`` call: a chunk ``[start:stop)`` of a dispatch."""

    __slots__ = ("dispatch", "start", "stop", "ops", "record", "t0", "t1")

    def __init__(self, dispatch: Dispatch, start: int, stop: int, ops: list[Any]) -> None:
        self.dispatch = dispatch
        self.start = start
        self.stop = stop
        self.ops = ops
        self.record: BatchRecord | None = None
        self.t0 = 0.0
        self.t1 = 0.0

    def resolve(self, run: Any, index: int, value: Any, failed: bool) -> None:
        """A layered ``run_batch`` generator finished."""
        run._accept(self, value, value if failed else None)


def root_gen(value: Any) -> Any:
    return (yield value)


ROOT_CODE = root_gen.__code__


def name_of(gen: Any) -> str:
    if getattr(gen, "gi_code", None) is ROOT_CODE:
        return "the value passed to execute()"
    return describe_generator(gen)


def reuse_error(gen: Any, item: Any, in_structure: bool = False) -> GeneratorReusedError:
    """``gen`` yielded ``item``, a generator object that another waiter has (had)."""
    if in_structure:
        state = "was already started or yielded elsewhere"
    else:
        state = "is finished" if item.gi_frame is None else "is already running or waited on"
    return GeneratorReusedError(
        f"{name_of(gen)} yielded {item.__qualname__}, a generator object that {state}; a "
        f"generator object can be yielded only once, by one waiter. To let several generators "
        f"wait on it, wrap it once: shared = batch.SharedGenerator({item.__qualname__}(...)), "
        f"and yield shared.gen() in each"
    )


def yieldable(value: Any) -> bool:
    return isinstance(value, (BatchableOperation, GeneratorType, list, tuple, dict, Settled,
                              SharedGenerator))


def yield_error(gen: Any, value: Any, where: str = "") -> YieldTypeError:
    kind = type(value).__qualname__
    hint = ""
    if value is None:
        hint = " (a bare `yield` yields None; to finish, use `return value`)"
    elif isinstance(value, Awaitable):
        hint = " (a coroutine cannot be yielded; make run_batch async instead, with execute_async)"
    return YieldTypeError(
        f"{name_of(gen)} yielded {where}{kind}{hint}; a batch generator may yield a "
        f"BatchableOperation, a generator, a list/tuple/dict of those, settled(...), a "
        f"SharedGenerator, or GenResult(value)"
    )


def open_join(struct: Any, sink: Any, index: int, settled: Any) -> tuple[Any, Any, Any]:
    """A new Join for ``struct``, with its items and keys; (None, empty result, None) if empty."""
    if isinstance(struct, dict):
        keys: Any = list(struct)
        items = list(struct.values())
        if not items:
            return None, {}, None
    else:
        keys = SCALAR if settled is SCALAR else None
        items = struct
        if not items:
            return None, [], None
    join = Join()
    join.values = [None] * len(items)
    join.remaining = len(items)
    join.sink = sink
    join.index = index
    join.keys = keys
    join.first_error = -1
    join.settled = settled is not False
    return join, items, keys


def set_slot(join: Join, i: int, value: Any, failed: bool) -> None:
    """Fill one slot of a join; the caller checks ``remaining`` for completion."""
    join.values[i] = value
    if failed and (join.first_error < 0 or i < join.first_error):
        join.first_error = i
    join.remaining -= 1


def settled_target(item: Settled) -> tuple[Any, Any]:
    """What ``settled(x)`` waits on, and in which mode: a structure, or one item."""
    inner = item.value
    if isinstance(inner, (list, tuple, dict)):
        return inner, True
    return [inner], SCALAR


def requested_count(call: Call) -> int:
    """Operations yielded for this call, counting those deduplicated into it."""
    positions = call.dispatch.positions
    if positions is None:
        return len(call.ops)
    start, stop = call.start, call.stop
    return sum(1 for p in positions if start <= p < stop)


def chunks(info: OpInfo, ops: list[Any]) -> tuple[list[tuple[int, int]],
                                                    list[tuple[int, BaseException]]]:
    """Chunk bounds for one group's unique operations, in order.

    Also returns the operations whose ``batch_cost()`` raised (index, error):
    they are left out of every chunk and fail alone.
    """
    n = len(ops)
    size = info.max_size
    max_cost = info.max_cost
    if max_cost is None:
        if size is None or n <= size:
            return [(0, n)], []
        return [(a, min(a + size, n)) for a in range(0, n, size)], []
    bounds: list[tuple[int, int]] = []
    failures: list[tuple[int, BaseException]] = []
    start = 0
    total = 0.0
    for i, op in enumerate(ops):
        try:
            cost = op.batch_cost()
        except Exception as exc:
            if i > start:
                bounds.append((start, i))
            failures.append((i, exc))
            start = i + 1
            total = 0.0
            continue
        count = i - start
        if count and (total + cost > max_cost or (size is not None and count >= size)):
            bounds.append((start, i))
            start = i
            total = 0.0
        total += cost
    if start < n:
        bounds.append((start, n))
    return bounds, failures


def unhashable_error(info: OpInfo, exc: BaseException) -> BatchError:
    why = "cache_results = True" if info.cached else "dedupe = True"
    return BatchError(
        f"{info.name} has {why}, but its operations cannot be hashed ({exc}); make "
        f"{info.name} a frozen dataclass, or define __eq__ and __hash__ on it"
    )


def owner_name(group: Group) -> str:
    owner = group.owner
    if isinstance(owner, Batcher):
        return f"{type(owner).__qualname__}.gen_batch"
    return f"{group.info.name}.run_batch"


def display_key(group: Group) -> Any:
    key = group.key
    if type(key) is tuple and len(key) == 2:
        return key[1]
    return None
