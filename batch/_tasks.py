"""Tasks, joins and the one routine that passes a result to whoever waits for it.

A *task* is a chain of generators of which only the top one runs: when it
yields a single generator, the child goes on top of the same chain; when the
child returns, it is popped and its parent resumed with the result.  A yielded
list/tuple/dict becomes a *join*: a structure being filled in, one slot per
item.  Whatever produces a result (a task finishing, a batch answering, a
cache hit) hands it to :func:`fill`, which writes it into its *waiter* and
passes completed joins up: there is no other place that does this.

A waiter (the ``sink`` of a task, or the target of an operation) is one of:

- a task (a scalar ``yield``): the result becomes the task's next resume value;
- a :class:`Join` slot ``(join, index)``: a complete join passes its value on
  to its own waiter, and so on up;
- an *end point*, an object with ``resolve(value, failed)``: a :class:`Root`
  (the execution's result), a :class:`batch.SharedGenerator` (it returns its
  waiters as ``(sink, index, value, failed)`` to be filled in turn), or a
  dispatch ``Call`` (a layered ``run_batch`` generator finished).
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter
from typing import Any, Final

__all__ = [
    "CTX", "GEN", "INDEX", "RESUME", "SEND", "SINCE", "SINK", "STACK", "START", "TAKE", "THROW",
    "VALUE",
    "HOLD", "SINGLE", "Join", "Root", "RootFailure", "Task", "by_since", "deliver", "fill",
    "open_join",
]

# -- the task layout -----------------------------------------------------------
#
# A task is a plain list, not a class instance: one is made for every
# generator that runs beside its siblings, and a list display costs a
# fraction of an ``__init__`` (measured 3-4x on CPython 3.11-3.13).
#
#     [gen, ctx, stack, sink, index, value, resume, since]
#
# GEN     the running (top) generator of the chain.
# CTX     its contextvars.Context (each generator has its own, copied from its
#         creator's when it first starts).
# STACK   the suspended generators under GEN, flat: [gen0, ctx0, gen1, ctx1,
#         ...] (no tuple per level: fewer objects for the GC to track); None
#         while the chain has one generator.
# SINK    the waiter of the task's result: a Join, or an end point.
# INDEX   the slot of SINK that the result fills (0 for end points).
# VALUE   what GEN gets when it next runs; cleared as soon as GEN has it, so a
#         finished result is not kept alive by the task.
# RESUME  how GEN gets VALUE: SEND it, THROW it (an exception), or TAKE it (it
#         is what GEN already yielded: a generator started in place by its
#         parent's structure, see ``_stepping.start_join``).
# SINCE   when the task began to wait (a counter of parkings): after a round,
#         woken tasks resume in that order, i.e. the order they ran in before.
#
# Invariants: a task is in at most one place at a time - the ready stack, a
# group's targets (waiting on an operation), a shared generator's waiters, or
# held as the sink of a child task or the followers of an in-flight cache
# entry.  Besides, from its creation on it is registered with its core, which
# is how abort() finds it whatever state the core is in: a child of a
# structure (its SINK is a Join) in the list of its join's children
# (``Core.broods``, appended before it first runs, dropped with the list
# once the join completes, so a finished child is simply skipped); any
# other task in ``Core.live``, keyed by GEN's bottom generator, until that
# generator returns.  A task is dropped once its bottom generator returns:
# nothing refers to it then but its brood, and its frames are gone already.
Task: Final = list
GEN: Final = 0
CTX: Final = 1
STACK: Final = 2
SINK: Final = 3
INDEX: Final = 4
VALUE: Final = 5
RESUME: Final = 6
SINCE: Final = 7

# RESUME states.  SEND and THROW are False and True, so a result's
# ``failed`` flag can be stored as is, and testing the state (``if resume:``)
# needs no call on the hot path, as a bool's truth is read directly.  START
# is a structure's child queued to start in step() (not started in place by
# ``start_join``): VALUE is the generator that yielded the structure, for
# the error if the child's generator was started elsewhere meanwhile.
SEND: Final = False
THROW: Final = True
TAKE: Final = 2
START: Final = 3

by_since = itemgetter(SINCE)


# -- joins -----------------------------------------------------------------------

SINGLE: Any = object()  # Join.keys of ``settled(x)`` for one item x: the value is x's


class Join:
    """A yielded structure being filled in.

    ``values`` has one slot per item; ``remaining`` counts the slots not
    filled yet; ``sink``/``index`` is the join's own waiter.  ``keys`` is
    None for a list or tuple (the value is the list), the dict's keys, or
    :data:`SINGLE`.  ``first_error`` is the smallest failed slot (-1: none);
    with ``settled`` a failure is a value like any other.  ``broods`` is the
    core's dict of joins with generator children (``Core.broods``) while
    this join's children are registered there, else None: the join leaves
    it when it completes (every child has finished then).
    """

    __slots__ = ("values", "remaining", "sink", "index", "keys", "first_error", "settled", "broods")

    values: list[Any]
    remaining: int
    sink: Any
    index: int
    keys: Any
    first_error: int
    settled: bool
    broods: dict[Join, list[Any]] | None

    def result(self) -> tuple[Any, bool]:
        """The structure's value, or its first failure in structure order."""
        if self.first_error >= 0 and not self.settled:
            return self.values[self.first_error], True
        keys = self.keys
        if keys is None:
            return self.values, False
        if keys is SINGLE:
            return self.values[0], False
        return dict(zip(keys, self.values)), False


def open_join(struct: Any, sink: Any, index: int, settled: bool,
              single: bool = False, snapshot: bool = True) -> tuple[Join | None, Any, Any]:
    """A new join for ``struct``: (join, items, keys), or (None, the empty value, None).

    ``items`` is a list or tuple of its own, unless ``snapshot`` is False:
    then a ``list`` (exactly) is ``struct`` itself, for a caller that copies
    it only if it starts generators while walking it.
    """
    if isinstance(struct, dict):
        keys: Any = list(struct)
        items: Any = list(struct.values())
        if not items:
            return None, {}, None
    else:
        keys = SINGLE if single else None
        # A snapshot: the generators of the structure start while it is being
        # walked, and one of them may change the list it came in (issue 15).
        cls = struct.__class__
        items = struct if cls is tuple or (cls is list and not snapshot) else list(struct)
        if not items:
            return None, [], None
    join = Join()
    join.values = [None] * len(items)
    join.remaining = len(items)
    join.sink = sink
    join.index = index
    join.keys = keys
    join.first_error = -1
    join.settled = settled
    join.broods = None
    return join, items, keys


# -- end points ------------------------------------------------------------------


class RootFailure(BaseException):
    """Internal: unwinds a driver when an exception reaches a root that raises at once."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc


class Root:
    """Where a root's result lands; ``done`` once it has one."""

    __slots__ = ("value", "failed", "done", "raise_at_once")

    def __init__(self, raise_at_once: bool) -> None:
        self.value: Any = None
        self.failed = False
        self.done = False
        self.raise_at_once = raise_at_once

    def resolve(self, value: Any, failed: bool) -> Iterable[tuple[Any, int, Any, bool]]:
        self.failed = failed
        self.done = True
        if failed and self.raise_at_once:
            # Not kept here: the caller's frame holds this root, and the
            # exception's traceback holds that frame.
            raise RootFailure(value)
        self.value = value
        return ()


class _Hold:
    """The waiter of a structure still being built: its completion is read, not passed on."""

    __slots__ = ()

    def resolve(self, value: Any, failed: bool) -> tuple[()]:
        return ()


HOLD: Final = _Hold()


# -- passing results up ------------------------------------------------------------


def fill(sink: Any, index: int, value: Any, failed: bool, woken: list[Any]) -> None:
    """Give a result to its waiter, and pass completed joins' values up.

    A task waiter is appended to ``woken`` (to run in the next step); an end
    point may name further waiters (a shared generator's), which are filled
    in turn from a work list, so no depth of nesting recurses.
    """
    more: list[tuple[Any, int, Any, bool]] | None = None
    while True:
        cls = sink.__class__
        if cls is Task:
            sink[VALUE] = value
            sink[RESUME] = failed
            woken.append(sink)
        elif cls is Join:
            sink.values[index] = value
            if failed and (sink.first_error < 0 or index < sink.first_error):
                sink.first_error = index
            sink.remaining -= 1
            if not sink.remaining:
                if sink.broods is not None:  # its children have all finished
                    sink.broods.pop(sink, None)
                    sink.broods = None
                value, failed = sink.result()
                index = sink.index
                sink = sink.sink
                continue
        else:
            waiters = sink.resolve(value, failed)
            if waiters:
                more = more or []
                more.extend(waiters)
        if not more:
            return
        sink, index, value, failed = more.pop()


def deliver(targets: list[Any], results: list[Any], woken: list[Any]) -> None:
    """Give each operation's result to its target, in order.

    ``results`` has one entry per operation; ``targets`` one entry per run
    of operations: a task (one operation, scalar yield) or ``(join, offset,
    count)`` for ``count`` consecutive operations of one join.  An
    ``Exception`` instance in ``results`` fails its operation.
    """
    if len(results) == 1 and len(targets) == 1:
        target = targets[0]
        value = results[0]
        if target.__class__ is Task:
            fill(target, 0, value, isinstance(value, Exception), woken)
        else:
            fill(target[0], target[1], value, isinstance(value, Exception), woken)
        return
    has_exc = False
    for t in set(map(type, results)):
        if issubclass(t, Exception):
            has_exc = True
            break
    if not has_exc and len(targets) == len(results):
        kinds = set(map(type, targets))
        if len(kinds) == 1 and Task in kinds:
            # Only scalar waiters and no failures: the common case, at C speed.
            for target, value in zip(targets, results):
                target[VALUE] = value
            woken.extend(targets)
            return
    pos = 0
    for target in targets:
        if target.__class__ is Task:
            value = results[pos]
            pos += 1
            fill(target, 0, value, has_exc and isinstance(value, Exception), woken)
            continue
        join, offset, count = target
        if count == 1:
            value = results[pos]
            pos += 1
            fill(join, offset, value, has_exc and isinstance(value, Exception), woken)
            continue
        # A run of slots of one join: copied in one slice; only its last
        # slot can complete the join, so the chain is climbed once.
        end = pos + count
        values = join.values
        values[offset:offset + count] = results[pos:end]
        if has_exc:
            for k in range(offset, offset + count):
                if isinstance(values[k], Exception) and (
                        join.first_error < 0 or k < join.first_error):
                    join.first_error = k
                    break
        pos = end
        join.remaining -= count - 1
        # The last slot goes through fill() so that completion is passed up
        # in the one place that does it.
        last = offset + count - 1
        fill(join, last, values[last], has_exc and isinstance(values[last], Exception), woken)
