"""Dispatch: turning a group into ``run_batch`` calls, and their outcomes into results.

A :class:`Dispatch` is one group being sent: its distinct operations
(``uniq``), the chunks they are split into (one :class:`Call` each, see
:func:`chunks`) and the results as they come back.  :meth:`Call.run` is the
only code here that a driver runs, from any thread: it calls ``run_batch``
and returns the outcome without touching any shared state.  Everything else
runs in the driver's thread, through the core (``_core.Core.complete``).

Order: chunks keep the group's order; a dispatch's results are delivered
once every chunk has answered, so the waiters of one group wake together.
"""

from __future__ import annotations

import contextvars
import logging
import numbers
import operator
import threading
import time
from collections.abc import Callable
from typing import Any

from ._errors import (
    changed_list_error,
    cost_error,
    count_error,
    not_sequence_error,
    unhashable_operation_error,
)
from ._grouping import DedupeOps, Group
from ._operation import Batcher, OpInfo, is_sequence_result
from ._trace import BatchRecord, Trace

__all__ = ["ENCLOSING", "Call", "Dispatch", "chunks", "display_key", "owner_name"]

log = logging.getLogger("batch")

# The executions whose run_batch call is running, innermost last: set in the
# context each call runs in, so an execution started inside it (a nested
# ``batch.execute`` in run_batch, in whatever thread or task) knows which
# executions wait on it, and never waits on them in turn.
ENCLOSING: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "batch_enclosing", default=())


class Dispatch:
    """A group being sent: its distinct operations, chunks and results."""

    __slots__ = ("group", "uniq", "positions", "results", "pending", "whole", "markers", "calls")

    def __init__(self, group: Group) -> None:
        self.group = group
        self.calls: list[Call] = []
        # The operations sent, each once; ``positions`` maps the operations
        # as yielded to their index here (None when there was nothing to merge).
        self.uniq: list[Any] = group.ops
        self.positions: list[int] | None = None
        self.results: list[Any] = []
        self.pending = 0  # chunks that have not answered yet
        self.whole: set[int] | None = None  # ids of exceptions that failed a whole call
        self.markers: list[Any] | None = None  # in-flight cache entries, one per uniq op

    def per_operation(self) -> list[Any]:
        """The results in the order the operations were yielded (repeats included)."""
        results = self.results
        positions = self.positions
        if positions is None:
            return results
        ops = self.group.ops
        if ops.__class__ is DedupeOps and ops.unhashable:
            info = self.group.info
            setting = "cache_results" if info.cached else "dedupe"
            errors = [unhashable_operation_error(info.cls, op, exc, setting)
                      for op, exc in ops.unhashable]
            return [results[p] if p >= 0 else errors[-1 - p] for p in positions]
        return list(map(results.__getitem__, positions))


class Call:
    """One ``run_batch`` call: the chunk ``[start:stop)`` of a dispatch."""

    __slots__ = ("dispatch", "start", "stop", "ops", "sent", "record", "t0", "t1", "hook", "trace",
                 "round", "dispatch_done", "within", "ctx")

    def __init__(self, dispatch: Dispatch, start: int, stop: int, ops: list[Any],
                 hook: Any = None, trace: Trace | None = None, within: tuple[Any, ...] = ()) -> None:
        self.dispatch = dispatch
        self.start = start
        self.stop = stop
        self.ops = ops
        self.sent: list[Any] | None = None  # the list run_batch got, until its result is validated
        self.record: BatchRecord | None = None
        self.t0 = 0.0
        self.t1 = 0.0
        self.hook = hook  # batch.testing's override/recording layer, or None
        self.trace = trace
        self.round: Any = None  # the trace's RoundRecord, when tracing
        # Set by the core when the result is a batch generator (a layered
        # batch): called with the generator's outcome.
        self.dispatch_done: Callable[[Call, Any, BaseException | None], None] | None = None
        self.within = within  # the sending execution and those it runs inside (see ENCLOSING)
        self.ctx: contextvars.Context | None = None  # the context run_batch ran in

    @property
    def info(self) -> OpInfo:
        """How the executor treats the operations' class."""
        return self.dispatch.group.info

    @property
    def blocking(self) -> bool:
        """Whether an async driver should run this call in a worker thread."""
        return self.dispatch.group.info.blocking

    def run(self) -> tuple[Any, BaseException | None]:
        """Call ``run_batch`` (or a seed ``gen_batch``) once; never raises.

        Safe from any thread.  Returns ``(result, None)`` or ``(None,
        exception)``; the result is whatever the user's function returned
        (a sequence, a batch generator, or an awaitable for an async driver
        to await).  ``run_batch`` runs in a copy of the caller's context, so
        a ContextVar it sets leaks neither into the caller nor into later
        batches.
        """
        group = self.dispatch.group
        owner: Any = group.owner
        trace = self.trace
        if trace is not None:
            self.record = BatchRecord(
                operation=owner, name=group.info.name if owner is group.info.cls
                else type(owner).__qualname__, key=display_key(group),
                size=len(self.ops), requested=self.requested(), start=trace._now(),
                thread=threading.get_ident())
        # run_batch gets a list of its own: one that sorts or changes it in
        # place cannot corrupt the executor's bookkeeping (see ``validate``).
        ops = self.sent = list(self.ops)
        ctx = self.ctx = contextvars.copy_context()
        if self.within:
            ctx.run(ENCLOSING.set, self.within)
        self.t0 = time.perf_counter()
        try:
            fn = owner.gen_batch if group.info.uses_batcher else owner.run_batch
            hook = self.hook
            if hook is None:
                result = ctx.run(fn, ops)
            else:
                result = ctx.run(hook, group.info.cls, ops, fn)
        except BaseException as exc:
            self.t1 = time.perf_counter()
            return None, exc
        self.t1 = time.perf_counter()
        return result, None

    def requested(self) -> int:
        """Operations yielded for this call, counting those deduplicated into it."""
        positions = self.dispatch.positions
        if positions is None:
            return len(self.ops)
        start, stop = self.start, self.stop
        return sum(1 for p in positions if start <= p < stop)

    def resolve(self, value: Any, failed: bool) -> tuple[()]:
        """A layered ``run_batch`` generator finished: its value is the batch's result."""
        assert self.dispatch_done is not None
        self.dispatch_done(self, value, value if failed else None)
        return ()


def chunks(info: OpInfo, ops: list[Any], max_size: int | None = None
           ) -> tuple[list[tuple[int, int]], list[tuple[int, BaseException]]]:
    """Chunk bounds for one group's distinct operations, in order.

    ``max_size`` replaces the class's ``max_batch_size`` when given.  Also
    returns the operations whose ``batch_cost()`` raised (index, error):
    they are left out of every chunk and fail alone.
    """
    n = len(ops)
    size = info.max_size if max_size is None else max_size
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
            if cost.__class__ is not float and cost.__class__ is not int:
                cost = _as_cost(info, cost)
            elif not cost >= 0:  # negative, or NaN (which compares false to everything)
                raise cost_error(info.name, cost)
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


def _as_cost(info: OpInfo, cost: Any) -> float:
    """A ``batch_cost()`` value that is not a plain int or float: a real number >= 0, or an error."""
    if isinstance(cost, bool) or not isinstance(cost, numbers.Real):
        raise cost_error(info.name, cost)
    value = float(cost)
    if not value >= 0:
        raise cost_error(info.name, cost)
    return value


def validate(call: Call, result: Any) -> tuple[list[Any] | None, BaseException | None]:
    """A chunk's result as a list, in the order of ``call.ops``, or the contract it broke.

    ``run_batch`` got a list of its own (``call.sent``): if it reordered that
    list in place, its results follow the new order and are put back in the
    executor's; if it added, removed or replaced operations, the call fails.
    """
    n = call.stop - call.start
    sent, call.sent = call.sent, None
    order: list[int] | None = None
    if sent is not None:
        ops = call.ops
        if len(sent) != n:
            return None, changed_list_error(owner_name(call.dispatch.group))
        if any(map(operator.is_not, sent, ops)):
            order = _reordering(ops, sent)
            if order is None:
                return None, changed_list_error(owner_name(call.dispatch.group))
    if result.__class__ is not list:
        if not is_sequence_result(result):
            return None, not_sequence_error(owner_name(call.dispatch.group), result)
        result = list(result)
    if len(result) != n:
        return None, count_error(owner_name(call.dispatch.group), len(result), n)
    if order is not None:
        placed: list[Any] = [None] * n
        for value, k in zip(result, order):
            placed[k] = value
        result = placed
    return result, None


def _reordering(ops: list[Any], sent: list[Any]) -> list[int] | None:
    """Where each item of ``sent`` was in ``ops`` (by identity), or None if not a permutation."""
    where: dict[int, list[int]] = {}
    for k in range(len(ops) - 1, -1, -1):
        where.setdefault(id(ops[k]), []).append(k)
    order = []
    for op in sent:
        slots = where.get(id(op))
        if not slots:
            return None
        order.append(slots.pop())
    return order


def log_call(call: Call, exc: BaseException | None) -> None:
    """One DEBUG line per batch (with the error, when the call failed)."""
    group = call.dispatch.group
    n = call.stop - call.start
    if exc is None:
        log.debug("batch %s key=%r size=%d seconds=%.6f", owner_name(group),
                  display_key(group), n, call.t1 - call.t0)
    else:
        log.debug("batch %s key=%r size=%d seconds=%.6f error=%s: %s",
                  owner_name(group), display_key(group), n, call.t1 - call.t0,
                  type(exc).__name__, exc)


def owner_name(group: Group) -> str:
    """``Cls.run_batch`` or ``SeedBatcher.gen_batch``: what a message names."""
    owner = group.owner
    if isinstance(owner, Batcher):
        return f"{type(owner).__qualname__}.gen_batch"
    return f"{group.info.name}.run_batch"


def display_key(group: Group) -> Any:
    """The group's ``batch_key()`` as a trace shows it (None for the default group)."""
    key = group.key
    if type(key) is tuple and len(key) == 2:
        return key[1]
    return None
