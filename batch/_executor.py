"""The round executor: the loop that runs a tree of batch generators.

Theory of operation
===================

Every generator being run belongs to a *task*.  A task is a chain of
generators of which only the top one is active: when it yields a single
generator, the child goes on top of the same task (no new object, no
recursion); when the child returns, it is popped and its parent resumed with
the result.  A yielded list/tuple/dict becomes a *join*: each generator in it
becomes a task of its own whose result fills one slot, and each operation is
queued with the join slot as its target.  A join that is complete fills the
slot of its own waiter: a task, or the enclosing join.

One round is two phases:

1. **Step** (``drain``): pop runnable tasks off the ready stack and resume
   each until it waits on something.  A task that finishes fills its waiter's
   slot at once, so a parent whose children are pure logic is resumed in the
   same round.  The stack is LIFO with wake-ups pushed in reverse, so tasks
   run in program order: earlier roots and siblings first, depth first.  (A
   yielded structure starts its generators in place, each up to its first
   operation, while every one before it stopped at an operation: the same
   order, without a trip through the stack for the common fan-out.)
2. **Dispatch**: when nothing is runnable, every operation queued during the
   step is grouped by ``(type(op), op.batch_key())`` (groups in order of their
   first operation, operations in yield order), each group is deduplicated
   and chunked if its class asks for it, ``run_batch`` is called once per
   chunk, and the results are written into the targets, waking their tasks.

A ``run_batch`` that is a generator becomes a task whose result is the
batch's result list, so layered batching needs nothing special.  The
executor never recurses through user generators, and it touches only the
tasks that are runnable or that a batch woke: the cost of a round is
proportional to the work done in it, not to the number of live generators.

Errors travel the same paths as values with a ``failed`` flag: a failed
child is thrown into its parent at the ``yield``; a join waits for all of its
slots and then throws the failure that comes first in its structure.

The structures (task layout, joins, groups, dispatches) are in ``_nodes.py``;
finding suspended generators and cycles when things stop, in ``_teardown.py``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Hashable
from typing import Any

from . import _hooks
from ._cache import MISSING, InFlight, OperationCache
from ._errors import (
    BatchError,
    BatchResultError,
    CycleError,
    GeneratorReusedError,
    describe_generator,
)
from ._nodes import (
    CTX,
    GEN,
    GEN_SEND,
    INDEX,
    PENDING,
    SCALAR,
    SINCE,
    SINK,
    STACK,
    VALUE,
    Call,
    DedupeOps,
    Dispatch,
    GeneratorType,
    Group,
    Join,
    Root,
    Task,
    by_since,
    chunks,
    display_key,
    gen_of,
    name_of,
    open_join,
    owner_name,
    requested_count,
    reuse_error,
    root_gen,
    set_slot,
    settled_target,
    unhashable_error,
    yield_error,
    yieldable,
)
from ._operation import BatchableOperation, Batcher, GenResult, OpInfo, Settled, is_sequence_result
from ._sharing import DONE, NEW, RUNNING, SharedGenerator
from ._teardown import climb, find_cycle, shared_name, suspended_tasks
from ._trace import BatchRecord, RoundRecord, Trace

__all__ = ["Run"]

log = logging.getLogger("batch")

class Run:
    """One execution: the roots it was given, its cache, trace and state."""

    def __init__(
        self,
        *,
        cache: OperationCache | None = None,
        trace: Trace | None = None,
        timeout: float | None = None,
    ) -> None:
        if cache is not None and not isinstance(cache, OperationCache):
            raise TypeError(f"cache= takes a batch.OperationCache, got {type(cache).__qualname__}")
        if trace is not None and not isinstance(trace, Trace):
            raise TypeError(f"trace= takes a batch.Trace, got {type(trace).__qualname__}")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
                raise ValueError(f"timeout= must be a number of seconds >= 0, got {timeout!r}")
        self.cache = cache if cache is not None else OperationCache()
        if _hooks._trace_factory is not None:
            trace = _hooks.implicit_trace(trace)
        self.trace = trace
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout
        self.hook = _hooks.current()
        self.rounds = 0
        self.cache_hits = 0
        self._ready: list[list[Any]] = []
        self._woken: list[list[Any]] = []
        self._groups: dict[Hashable, Group] = {}
        self._infos: dict[type, OpInfo] = {}
        self._running: list[Any] | None = None  # the task being stepped, if it raised
        self._clock = 0  # counts parkings, for the resume order (see ``since``)
        self._sort_woken = False
        # Root generators not started yet, to refuse the same one twice.
        self._root_gens: dict[int, Any] = {}
        # Waiting on operations that another execution sharing the cache has
        # in flight: their answers arrive in the inbox, from any thread.
        self.thread = threading.get_ident()
        self.loop: Any = None  # the event loop, for the async executor
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._foreign = 0  # answers still to come into the inbox
        self._foreign_targets: list[Any] = []
        self._signal = threading.Event()
        self._async_signal: Any = None
        self._dispatching: dict[Dispatch, None] = {}  # taken, not yet delivered
        self._shared: dict[SharedGenerator[Any], None] = {}  # running in this execution
        self._round: RoundRecord | None = None
        self.closed = False

    # -- roots ---------------------------------------------------------------

    def add_root(self, x: Any, raise_at_once: bool = True) -> Root:
        """Queue ``x`` (generator, operation or structure) as a root."""
        root = Root(raise_at_once)
        if type(x) is GeneratorType:
            if id(x) in self._root_gens:
                raise GeneratorReusedError(
                    f"{describe_generator(x)} was given twice as a root; a generator object "
                    f"can be run only once. Pass a fresh generator for each root, or wrap it "
                    f"once in batch.SharedGenerator and pass shared.gen() for each"
                )
            if x.gi_suspended or x.gi_frame is None or x.gi_running:
                raise GeneratorReusedError(
                    f"{describe_generator(x)} was already started; pass execute() a "
                    f"fresh generator (call the generator function again)"
                )
            self._root_gens[id(x)] = x
            gen = x
        elif isinstance(x, (BatchableOperation, list, tuple, dict, Settled, SharedGenerator)):
            gen = root_gen(x)
        else:
            raise TypeError(
                f"execute() takes a batch generator, a BatchableOperation, or a "
                f"list/tuple/dict of those; got {type(x).__qualname__}"
                + (" (did you pass the generator function instead of calling it?)"
                   if callable(x) else "")
            )
        self._woken.append([gen, contextvars.copy_context(), None, root, 0, None, False, 0])
        return root

    # -- phase 1: step -------------------------------------------------------

    def drain(self) -> None:
        """Resume runnable tasks until every live task waits on something."""
        ready = self._ready
        woken = self._woken
        pop = ready.pop
        groups = self._groups
        infos = self._infos
        GenType = GeneratorType
        JoinType = Join
        gen_send = GeneratorType.send
        gen_throw = GeneratorType.throw
        clock = self._clock
        # Layout of a task: [gen, ctx, stack, sink, index] (see ``Task``).
        while True:
            if woken:
                woken.reverse()
                ready.extend(woken)
                woken.clear()
                continue
            if not ready:
                self._clock = clock
                if self._root_gens:
                    self._root_gens.clear()  # they have all started now
                return
            task = pop()
            gen, ctx, _, _, _, value, failed, _ = task
            task[5] = None  # the generator holds the value now; do not keep it alive
            if failed:
                task[6] = False
            while True:
                try:
                    # The unbound send/throw spare a bound-method object per step.
                    if failed:
                        if failed is PENDING:  # its first yield, taken when _join started it
                            y = value
                        else:
                            y = ctx.run(gen_throw, gen, value)
                    else:
                        y = ctx.run(gen_send, gen, value)
                except StopIteration as stop:
                    value = stop.value
                    failed = False
                except Exception as exc:
                    value = exc
                    failed = True
                except BaseException:
                    self._running = task  # so that abort() closes its parents too
                    raise
                else:
                    cls = y.__class__
                    if cls is GenType:
                        # A single child runs on top of this task's chain.  A
                        # generator that started already (suspended) or ended
                        # (no frame) was yielded before: refuse it.
                        if y.gi_suspended or y.gi_frame is None:
                            value = self._reused(task, y)
                            failed = True
                            continue
                        stack = task[2]
                        if stack is None:
                            task[2] = [gen, ctx]
                        else:
                            stack.append(gen)
                            stack.append(ctx)
                        gen = task[0] = y
                        ctx = task[1] = ctx.copy()
                        value = None
                        failed = False
                        continue
                    # Only classes on the fast path are grouped under the
                    # bare class, so a hit here needs no further checks.
                    group = groups.get(cls)
                    if group is not None:
                        group.ops.append(y)
                        group.targets.append(task)
                        clock += 1
                        task[7] = clock
                        break
                    info = infos.get(cls)
                    if info is not None and info.fast:
                        group = groups[cls] = Group(cls, info, cls)
                        group.ops.append(y)
                        group.targets.append(task)
                        clock += 1
                        task[7] = clock
                        break
                    if cls is not GenResult:
                        self._clock = clock  # _join may stamp tasks too
                        outcome = self._yield_other(task, y, cls, info)
                        clock = self._clock
                        if outcome is None:
                            # Parked until what it waits on resolves.
                            clock += 1
                            task[7] = clock
                            break
                        value, failed = outcome
                        continue
                    # Legacy ``yield GenResult(v)``: finish, running ``finally``.
                    value, failed = self._close_early(gen, ctx, y.value)
                # ``gen`` finished with (value, failed): resume its parent.
                stack = task[2]
                if stack:
                    ctx = task[1] = stack.pop()
                    gen = task[0] = stack.pop()
                    continue
                # The finished task is referenced by nothing else now: no need
                # to clear it, it goes when ``task`` is rebound.
                sink = task[3]
                if sink.__class__ is JoinType:
                    # ``_fill``'s join step, inlined: a child of a fan-out
                    # finishing is the hottest path after the yield itself.
                    index = task[4]
                    sink.values[index] = value
                    if failed and (sink.first_error < 0 or index < sink.first_error):
                        sink.first_error = index
                    sink.remaining -= 1
                    if sink.remaining:
                        break
                    value, failed = sink.result()
                    self._fill(sink.sink, sink.index, value, failed)
                else:
                    self._fill(sink, task[4], value, failed)
                break

    @staticmethod
    def _close_early(gen: Any, ctx: contextvars.Context, value: Any) -> tuple[Any, bool]:
        try:
            ctx.run(gen.close)
        except Exception as exc:
            return exc, True
        return value, False

    def _fill(self, sink: Any, index: int, value: Any, failed: bool) -> None:
        """Deliver a result to a waiter: a task, a join slot, or another sink."""
        while True:
            cls = sink.__class__
            if cls is Task:
                sink[5] = value
                sink[6] = failed
                self._woken.append(sink)
                return
            if cls is Join:
                set_slot(sink, index, value, failed)
                if sink.remaining:
                    return
                value, failed = sink.result()
                index = sink.index
                sink = sink.sink
                continue
            sink.resolve(self, index, value, failed)
            return

    def _info(self, cls: type) -> OpInfo:
        info = self._infos.get(cls)
        if info is None:
            info = self._infos[cls] = OpInfo(cls)
        return info

    def _reused(self, task: list[Any], y: Any) -> BaseException:
        chain = [task[GEN], *(task[STACK] or ())[0::2]]
        if any(g is y for g in chain):
            names = " -> ".join(name_of(g) for g in reversed(chain))
            return CycleError(
                f"{name_of(task[GEN])} yielded a generator it is itself waiting on "
                f"({names}); generators cannot wait on their own result"
            )
        return reuse_error(task[GEN], y)

    def _yield_other(self, task: list[Any], y: Any, cls: type,
                     info: OpInfo | None) -> tuple[Any, bool] | None:
        """Everything but the fast paths: returns None to park, or a value to resume with."""
        if info is None and isinstance(y, BatchableOperation):
            info = self._info(cls)
            if info.fast:
                group = self._groups.get(cls)
                if group is None:
                    group = self._groups[cls] = Group(cls, info, cls)
                group.ops.append(y)
                group.targets.append(task)
                return None
        if info is not None:
            return self._enqueue(y, info, task)
        if isinstance(y, (list, tuple, dict)):
            return self._join(y, task, 0, task[CTX], False, task[GEN])
        if isinstance(y, Settled):
            target, mode = settled_target(y)
            if mode is SCALAR and not yieldable(target[0]):
                # settled() never raises: the mistake comes back in place.
                return yield_error(task[GEN], target[0], "settled() of "), False
            return self._join(target, task, 0, task[CTX], mode, task[GEN])
        if isinstance(y, SharedGenerator):
            return self._wait_shared(y, task, 0, task[CTX])
        return yield_error(task[GEN], y), True

    def _may_wait_on(self, other: Run) -> bool:
        """Whether this execution may wait for ``other``'s answer without deadlock.

        It may if ``other`` makes progress while this one waits: it runs in
        another thread, or both are tasks of one event loop.  A nested
        ``execute`` inside one of ``other``'s generators may not.
        """
        if other.closed:
            return False
        if self.loop is not None and other.loop is self.loop:
            return True
        return other.thread != self.thread

    def _post(self, message: tuple[Any, ...]) -> None:
        """Another execution answers (or gives back) a wait: any thread."""
        self._inbox.append(message)
        self._signal.set()
        loop, signal = self.loop, self._async_signal
        if loop is not None and signal is not None:
            try:
                loop.call_soon_threadsafe(signal.set)
            except RuntimeError:  # pragma: no cover  (the loop closed meanwhile)
                pass

    @property
    def waits_on_others(self) -> bool:
        """Answers from other executions are still to come."""
        return self._foreign > 0

    def take_inbox(self) -> bool:
        """Deliver what other executions posted; True if anything came."""
        inbox = self._inbox
        got = False
        while inbox:
            kind, target, value, info = inbox.popleft()
            got = True
            self._foreign -= 1
            if kind == "value":
                self._deliver_targets([target], [value])
            else:  # "retry": its sender ended without an answer: send it ourselves
                outcome = self._enqueue(value, info, target)
                if outcome is not None:
                    self._deliver_targets([target], [outcome[0]])
        if self._foreign == 0:
            self._foreign_targets.clear()
        return got

    def wait_for_others(self) -> None:
        """Block until another execution posts into the inbox (sync executor)."""
        while not self._inbox:
            self._signal.clear()
            if self._inbox:
                break
            if not self._signal.wait(self.remaining_time()):
                self.check_deadline()

    def _enqueue(self, op: Any, info: OpInfo, target: Any) -> tuple[Any, bool] | None:
        """Queue an operation of a class with a key, a batcher or a cache."""
        cls = info.cls
        if info.cached:
            data = self.cache._data
            try:
                entry = data.get((cls, op), MISSING)
            except TypeError as exc:
                return unhashable_error(info, exc), True
            if entry is not MISSING:
                if entry.__class__ is InFlight:
                    if entry.owner is self:
                        entry.followers.append(target)
                        return None
                    if self._may_wait_on(entry.owner) and entry.wait(self, target, op, info):
                        self._foreign += 1
                        self._foreign_targets.append(target)
                        return None
                    # Answered (or dropped) meanwhile: look again.
                    entry = data.get((cls, op), MISSING)
                if entry is not MISSING and entry.__class__ is not InFlight:
                    self.cache_hits += 1
                    return entry, isinstance(entry, Exception)
        if info.uses_batcher:
            try:
                owner = op.batcher()
            except Exception as exc:
                return exc, True
            if not isinstance(owner, Batcher):
                return BatchError(
                    f"{info.name}.batcher() returned {type(owner).__qualname__}; it must return "
                    f"a batch.Batcher instance (or do not override batcher() and define "
                    f"run_batch instead)"
                ), True
            key: Hashable = (Batcher, owner)
        elif info.keyed:
            try:
                k = op.batch_key()
            except Exception as exc:
                return exc, True
            key = (cls, k)
            try:
                hash(key)
            except TypeError:
                return BatchError(
                    f"{info.name}.batch_key() returned {type(k).__qualname__}, which is not "
                    f"hashable; return a hashable value such as a str or a tuple"
                ), True
            owner = cls
        else:
            # Not the bare class: that key is reserved for the fast path.
            key = (cls, None)
            owner = cls
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(key, info, owner)
        group.ops.append(op)
        group.targets.append(target)
        return None

    def _join(self, struct: Any, sink: Any, index: int, ctx: contextvars.Context,
              settled: Any, gen: Any) -> tuple[Any, bool] | None:
        """Start waiting on every item of a yielded list/tuple/dict.

        Returns the structure's value if it is resolved at once (empty, or
        only cache hits), else None.  Nested structures are walked depth first
        with an explicit stack, so operations are queued in the order they
        appear and no nesting depth can exhaust the Python stack.
        """
        join, items, keys = open_join(struct, sink, index, settled)
        if join is None:
            return items, False  # empty: ``items`` is the empty result
        groups = self._groups
        infos = self._infos
        n = len(items)
        first = items[0].__class__
        info = infos.get(first)
        if info is not None and info.fast and n > 1 and len(set(map(type, items))) == 1:
            # Homogeneous list of one class: one run, copied at C speed.
            group = groups.get(first)
            if group is None:
                group = groups[first] = Group(first, info, first)
            group.ops.extend(items)
            group.targets.append((join, 0, n))
            return None
        children: list[list[Any]] = []
        # Generators are started right here, each up to its first yield, as
        # long as every one before it stopped at an operation: their
        # operations are queued after the structure's own (``parked``), which
        # is the order in which running them from the ready stack would queue
        # them, without the trip through it.  The first one that yields
        # something else, and all after it, run from the ready stack instead.
        parked: list[tuple[Group, Any, list[Any]]] = []
        eager = True
        outer: list[tuple[Join, Any, Any, int]] = []  # enclosing levels to go back to
        run_group: Group | None = None
        run_start = 0
        i = 0
        while True:
            if i == n:
                if run_group is not None:
                    run_group.targets.append((join, run_start, n - run_start))
                    run_group = None
                done = join.remaining == 0
                if not outer:
                    if parked:
                        self._queue_parked(parked)
                    if children:
                        if len(children) > 1 and len(set(map(id, map(gen_of, children)))) < len(
                                children):
                            children = self._drop_repeats(children, gen, join)
                        self._woken.extend(children)
                        done = join.remaining == 0
                    return join.result() if done else None
                value, failed = join.result() if done else (None, False)
                parent, items, keys, i = outer.pop()
                n = len(items)
                if done:
                    set_slot(parent, i - 1, value, failed)
                join = parent
                continue
            item = items[i]
            c = item.__class__
            if c is GeneratorType:
                if run_group is not None:
                    run_group.targets.append((join, run_start, i - run_start))
                    run_group = None
                if item.gi_suspended or item.gi_frame is None:
                    set_slot(join, i, reuse_error(gen, item, True), True)
                elif not eager:
                    children.append([item, ctx.copy(), None, join, i, None, False, 0])
                else:
                    child = [item, ctx.copy(), None, join, i, None, False, 0]
                    try:
                        y = child[1].run(GEN_SEND, item, None)
                    except StopIteration as stop:
                        set_slot(join, i, stop.value, False)
                    except Exception as exc:
                        set_slot(join, i, exc, True)
                    except BaseException:
                        # KeyboardInterrupt and such: leave every started
                        # generator where abort() will find and close it.
                        self._running = child
                        self._queue_parked(parked)
                        self._woken.extend(children)
                        raise
                    else:
                        yc = y.__class__
                        g = groups.get(yc)
                        if g is None:
                            yinfo = infos.get(yc)
                            if yinfo is not None and yinfo.fast:
                                g = groups[yc] = Group(yc, yinfo, yc)
                        if g is not None:
                            parked.append((g, y, child))
                        else:  # anything but a plain operation: taken up by drain()
                            child[5] = y
                            child[6] = PENDING
                            children.append(child)
                            eager = False
                i += 1
                continue
            group = groups.get(c)
            if group is None:
                info = infos.get(c)
                if info is None and isinstance(item, BatchableOperation):
                    info = self._info(c)
                if info is not None and info.fast:
                    group = groups[c] = Group(c, info, c)
            if group is not None:
                if group is not run_group:
                    if run_group is not None:
                        run_group.targets.append((join, run_start, i - run_start))
                    run_group = group
                    run_start = i
                group.ops.append(item)
                i += 1
                continue
            if run_group is not None:
                run_group.targets.append((join, run_start, i - run_start))
                run_group = None
            nested: Any = None
            nested_settled: Any = join.settled
            outcome: tuple[Any, bool] | None = None
            if info is not None:
                outcome = self._enqueue(item, info, (join, i, 1))
            elif isinstance(item, (list, tuple, dict)):
                nested = item
            elif isinstance(item, Settled):
                nested, nested_settled = settled_target(item)
            elif isinstance(item, SharedGenerator):
                outcome = self._wait_shared(item, join, i, ctx)
            else:
                place = f"key {keys[i]!r}" if keys not in (None, SCALAR) else f"index {i}"
                where = f"a {type(struct).__qualname__} containing, at {place}, "
                outcome = yield_error(gen, item, where), True
            if nested is not None:
                inner, inner_items, inner_keys = open_join(nested, join, i, nested_settled)
                if inner is None:
                    outcome = inner_items, False
                else:
                    outer.append((join, items, keys, i + 1))
                    join, items, keys, i, n = inner, inner_items, inner_keys, 0, len(inner_items)
                    continue
            if outcome is not None:
                set_slot(join, i, outcome[0], outcome[1])
            i += 1

    def _queue_parked(self, parked: list[tuple[Group, Any, list[Any]]]) -> None:
        """Queue the operations that eagerly started generators stopped at."""
        clock = self._clock
        for group, op, child in parked:
            group.ops.append(op)
            group.targets.append(child)
            clock += 1
            child[7] = clock
        self._clock = clock

    def _drop_repeats(self, children: list[list[Any]], gen: Any, top: Join) -> list[list[Any]]:
        """The same fresh generator twice in one structure: only the first runs it."""
        seen: set[int] = set()
        kept = []
        for child in children:
            if id(child[GEN]) in seen:
                # Fail the repeat's slot; a nested structure that this
                # completes fills its enclosing slot in turn, up to ``top``
                # (whose result the caller takes).
                sink, index = child[SINK], child[INDEX]
                value: Any = reuse_error(gen, child[GEN], True)
                failed = True
                while True:
                    set_slot(sink, index, value, failed)
                    if sink.remaining or sink is top:
                        break
                    value, failed = sink.result()
                    index, sink = sink.index, sink.sink
            else:
                seen.add(id(child[GEN]))
                kept.append(child)
        return kept

    def _wait_shared(self, shared: SharedGenerator[Any], sink: Any, index: int,
                     ctx: contextvars.Context) -> tuple[Any, bool] | None:
        state = shared._state
        if state == DONE:
            return shared._value, shared._failed
        if state == RUNNING and shared._owner is not self:
            return BatchError(
                f"{shared!r} is already running in another execution; a SharedGenerator "
                f"(or a cached_generator result) can be run by one execution at a time"
            ), True
        shared._waiters.append((sink, index))
        if state == NEW:
            gen = shared._start(self)
            self._woken.append([gen, ctx.copy(), None, shared, 0, None, False, 0])
            self._shared[shared] = None
        return None

    # -- phase 2: dispatch -----------------------------------------------------

    def take_round(self) -> list[Dispatch]:
        """Close the step phase: turn every pending group into a dispatch."""
        groups = self._groups
        self._groups = {}
        self.rounds += 1
        self.hook = _hooks.current()  # an override entered mid-execution applies from here
        # One group wakes its waiters in the order they began to wait already
        # (its targets were queued in that order); several groups, cached
        # followers or a batch generator need the sort in ``end_round``.
        self._sort_woken = len(groups) > 1 or any(g.info.cached for g in groups.values())
        trace = self.trace
        if trace is not None:
            rec = self._round = trace._begin_round()
            rec.cache_hits = self.cache_hits
            trace.cache_hits += self.cache_hits
            self.cache_hits = 0
        return [self._prepare(g) for g in groups.values()]

    def end_round(self) -> None:
        """After delivery: resume the woken tasks in the order they began to wait."""
        if self._sort_woken:
            self._woken.sort(key=by_since)
        rec = self._round
        if rec is not None and self.trace is not None:
            rec.seconds = self.trace._now() - rec.start
            self._round = None

    def _prepare(self, group: Group) -> Dispatch:
        d = Dispatch(group)
        self._dispatching[d] = None
        info = group.info
        ops = group.ops
        if ops.__class__ is DedupeOps:
            if len(ops.positions) == 1 and ops.unhashable:
                # A group of one has nothing to merge: sent as is, hash or not.
                d.uniq = [ops.unhashable[0][0]]
            else:
                d.uniq = list(ops)
                if len(ops.positions) > len(ops):
                    d.positions = ops.positions
        uniq = d.uniq
        if info.cached:
            data = self.cache._data
            cls = info.cls
            markers = []
            for op in uniq:
                marker = InFlight(self)
                data[(cls, op)] = marker
                markers.append(marker)
            d.markers = markers
        d.results = [None] * len(uniq)
        if not uniq:  # every operation failed before sending (unhashable)
            self._deliver(d)
            return d
        bounds, failures = chunks(info, uniq)
        d.pending = len(bounds) + len(failures)
        if len(bounds) == 1 and not failures:
            calls = [Call(d, 0, len(uniq), uniq)]
        else:
            calls = [Call(d, a, b, uniq[a:b]) for a, b in bounds]
        d.calls = calls
        for k, cost_error in failures:
            # batch_cost() raised: that operation fails alone, at its yield.
            self._accept(Call(d, k, k + 1, uniq[k:k + 1]), None, cost_error)
        return d

    def calls_of(self, dispatches: list[Dispatch]) -> list[Call]:
        return [c for d in dispatches for c in d.calls]

    def invoke(self, call: Call) -> tuple[Any, BaseException | None]:
        """Call ``run_batch`` for one chunk; never raises (the outcome is returned)."""
        group = call.dispatch.group
        owner: Any = group.owner
        trace = self.trace
        if trace is not None:
            call.record = BatchRecord(
                operation=owner, name=group.info.name if owner is group.info.cls
                else type(owner).__qualname__, key=display_key(group),
                size=len(call.ops), requested=requested_count(call), start=trace._now(),
                thread=threading.get_ident())
        call.t0 = time.perf_counter()
        try:
            fn = getattr(owner, "gen_batch" if isinstance(owner, Batcher) else "run_batch")
            # In a copy of the caller's context, like a task: a ContextVar that
            # run_batch sets does not leak into the caller or later batches.
            hook = self.hook
            if hook is None:
                result = contextvars.copy_context().run(fn, call.ops)
            else:
                result = contextvars.copy_context().run(hook, group.info.cls, call.ops, fn)
        except BaseException as exc:
            call.t1 = time.perf_counter()
            return None, exc
        call.t1 = time.perf_counter()
        return result, None

    def complete(self, call: Call, result: Any, exc: BaseException | None) -> None:
        """Take the outcome of :meth:`invoke` (in dispatch order)."""
        if exc is not None and not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt and friends stop everything
        rec = call.record
        if rec is not None:
            rec.seconds = call.t1 - call.t0
            if self._round is not None:
                self._round.batches.append(rec)
        if exc is None:
            owner = call.dispatch.group.owner
            if result.__class__ is GeneratorType:
                if rec is not None:
                    rec.layered = True
                self._sort_woken = True
                # A batch generator runs just before the first generator that
                # waits on its batch (so, in program order too).
                self._woken.append([result, contextvars.copy_context(), None, call, 0, None, False,
                                    self._earliest_waiter(call.dispatch.group) - 0.5])
                return
            if isinstance(owner, Batcher):
                exc = BatchResultError(
                    f"{type(owner).__qualname__}.gen_batch returned "
                    f"{type(result).__qualname__}; it must be a generator function that "
                    f"yields operations and finishes with `return results` (one per operation)"
                )
                result = None
            elif isinstance(result, Awaitable):
                if hasattr(result, "close"):
                    result.close()  # silence "coroutine was never awaited"
                exc = BatchError(
                    f"{call.dispatch.group.info.name}.run_batch returned an awaitable; an "
                    f"async run_batch needs the async executor: await batch.execute_async(...)"
                )
                result = None
        self._accept(call, result, exc)

    def _accept(self, call: Call, result: Any, exc: BaseException | None) -> None:
        """Store a chunk's results (validated) or its failure."""
        d = call.dispatch
        n = call.stop - call.start
        if exc is None:
            if result.__class__ is not list:
                if not is_sequence_result(result):
                    exc = BatchResultError(
                        f"{owner_name(d.group)} returned {type(result).__qualname__}, not a "
                        f"sequence; it must return a list with one result per operation, in "
                        f"the same order"
                    )
                else:
                    result = list(result)
            if exc is None and len(result) != n:
                exc = BatchResultError(
                    f"{owner_name(d.group)} returned {len(result)} results for {n} "
                    f"operations; it must return one result per operation, in the same order"
                )
        rec = call.record
        if exc is not None:
            d.whole.add(id(exc))
            d.results[call.start:call.stop] = [exc] * n
            if rec is not None:
                rec.error = exc
        else:
            if call.start == 0 and n == len(d.results):
                d.results = result
            else:
                d.results[call.start:call.stop] = result
            if rec is not None:
                rec.failed = sum(1 for r in result if isinstance(r, Exception))
        if log.isEnabledFor(logging.DEBUG):
            if exc is None:
                log.debug("batch %s key=%r size=%d seconds=%.6f", owner_name(d.group),
                          display_key(d.group), n, call.t1 - call.t0)
            else:
                log.debug("batch %s key=%r size=%d seconds=%.6f error=%s: %s",
                          owner_name(d.group), display_key(d.group), n, call.t1 - call.t0,
                          type(exc).__name__, exc)
        d.pending -= 1
        if d.pending == 0:
            self._deliver(d)

    def _earliest_waiter(self, group: Group) -> float:
        """The smallest ``since`` of the tasks waiting on a group's operations."""
        best = float(self._clock + 1)
        for target in group.targets:
            while target.__class__ is not Task:
                target = target[0] if target.__class__ is tuple else target.sink
                if target.__class__ is not Join and target.__class__ is not Task:
                    break  # a root structure or a batch generator: no ``since``
            if target.__class__ is Task and target[SINCE] < best:
                best = target[SINCE]
        return best

    def _fail_all(self, d: Dispatch, exc: BaseException) -> None:
        self._dispatching.pop(d, None)
        ops = d.group.ops
        count = len(ops.positions) if ops.__class__ is DedupeOps else len(ops)
        self._deliver_targets(d.group.targets, [exc] * count)

    def _deliver(self, d: Dispatch) -> None:
        del self._dispatching[d]
        d.calls = []  # break the Dispatch <-> Call cycle: results go with refcounting
        results = d.results
        d.results = []
        markers = d.markers
        if markers is not None:
            self._store_cached(d, results, markers)
        positions = d.positions
        if positions is not None:
            ops = d.group.ops
            if ops.__class__ is DedupeOps and ops.unhashable:
                info = d.group.info
                errors = [unhashable_error(info, exc) for _, exc in ops.unhashable]
                results = [results[p] if p >= 0 else errors[-1 - p] for p in positions]
            else:
                results = list(map(results.__getitem__, positions))
        self._deliver_targets(d.group.targets, results)

    def _store_cached(self, d: Dispatch, results: list[Any], markers: list[Any]) -> None:
        data = self.cache._data
        cls = d.group.info.cls
        whole = d.whole
        for op, value, marker in zip(d.uniq, results, markers):
            key = (cls, op)
            if whole and id(value) in whole:
                if data.get(key) is marker:
                    del data[key]  # a failed call is not cached
            elif data.get(key) is marker:
                data[key] = value
            if marker.followers:
                followers = marker.followers
                self._deliver_targets(followers, [value] * len(followers))
            for run, target, _, _ in marker.close():
                run._post(("value", target, value, None))

    def _deliver_targets(self, targets: list[Any], results: list[Any]) -> None:
        """Write results into their waiters, in order; ``results`` is per operation."""
        woken = self._woken
        fill = self._fill
        has_exc = False
        for t in set(map(type, results)):
            if issubclass(t, Exception):
                has_exc = True
                break
        if not has_exc and len(targets) == len(results):
            kinds = set(map(type, targets))
            if len(kinds) == 1 and Task in kinds:
                # Only scalar waiters and no failures: the common case.
                for target, value in zip(targets, results):
                    target[5] = value
                woken.extend(targets)
                return
        pos = 0
        for target in targets:
            if target.__class__ is Task:
                value = results[pos]
                pos += 1
                target[5] = value
                target[6] = has_exc and isinstance(value, Exception)
                woken.append(target)
                continue
            join, offset, count = target
            if count == 1:
                value = results[pos]
                pos += 1
                fill(join, offset, value, has_exc and isinstance(value, Exception))
                continue
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
            join.remaining -= count
            if not join.remaining:
                value, failed = join.result()
                fill(join.sink, join.index, value, failed)

    # -- when nothing can run --------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing is runnable and nothing is queued for dispatch."""
        return not self._groups and not self._ready and not self._woken and not self._inbox

    def has_live(self) -> bool:
        """Whether anything still waits, once nothing is runnable or queued.

        Only a batch generator still in flight or a shared generator still
        running can be waited on then; with nothing runnable, they wait on
        each other.
        """
        if self._dispatching:
            return True
        return any(s._state == RUNNING and s._owner is self for s in self._shared)

    def break_cycle(self) -> None:
        """Nothing can run, yet generators wait: they wait on each other."""
        running = [s for s in self._shared if s._state == RUNNING and s._owner is self]
        # waits[a] = [(b, entry)]: shared a's generator waits on shared b via
        # ``entry``, one of b's waiters.
        waits: dict[int, list[tuple[SharedGenerator[Any], Any]]] = {}
        for b in running:
            for entry in b._waiters:
                for a in climb(entry[0], stop_at_shared=True):
                    if isinstance(a, SharedGenerator):
                        waits.setdefault(id(a), []).append((b, entry))
        cycle = find_cycle(running, waits)
        if not cycle:
            raise BatchError(  # pragma: no cover  (the executor lost track of a generator)
                "batch internal error: generators wait, but on nothing")
        names = " -> ".join(shared_name(a) for a, _, _ in cycle)
        exc = CycleError(f"generators wait on each other in a cycle: {names} -> "
                         f"{shared_name(cycle[0][0])}; a generator cannot wait, directly or "
                         f"through others, on its own result")
        # Break it at the wait that closed it: that waiter gets the error.
        _, b, entry = cycle[-1]
        b._waiters.remove(entry)
        self._fill(entry[0], entry[1], exc, True)

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimeoutError(f"batch execution timed out after {self.timeout} seconds "
                               f"({self.rounds} rounds completed)")

    def remaining_time(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    # -- failure ---------------------------------------------------------------

    def abort(self, exc: BaseException | None) -> None:
        """Close every live generator (innermost first) and forget queued work."""
        if self.closed:
            return
        self.closed = True
        tasks = suspended_tasks(self)
        self._release_markers()
        self._ready.clear()
        self._woken.clear()
        self._groups.clear()
        self._dispatching.clear()
        problems: list[str] = []
        for task in tasks:
            flat = [*(task[STACK] or ()), task[GEN], task[CTX]]
            chain = list(zip(flat[-2::-2], flat[::-2]))
            task[GEN] = task[CTX] = task[STACK] = task[VALUE] = None
            for gen, ctx in chain:
                if gen is None:
                    continue
                try:
                    if ctx is not None and gen.gi_frame is not None:
                        ctx.run(gen.close)
                    else:
                        gen.close()
                except Exception as err:  # a finally block raised while closing
                    problems.append(f"closing {name_of(gen)} raised {type(err).__name__}: {err}")
        for shared in self._shared:
            if shared._state == RUNNING and shared._owner is self:
                shared._abandon(exc if exc is not None else BatchError("execution closed"))
        self._shared.clear()
        self._flush_cache_hits()
        if exc is not None:
            if self.trace is not None:
                self.trace.error = exc
                self.end_round()
            try:
                exc.batch_rounds_completed = self.rounds  # type: ignore[attr-defined]
                exc.add_note(f"batch: execution failed after {self.rounds} round(s)")
                for p in problems:
                    exc.add_note(f"batch: {p}")
            except Exception:  # pragma: no cover  (exotic exception types)
                pass

    def _release_markers(self) -> None:
        """Drop this execution's in-flight cache entries; their foreign waiters retry."""
        data = self.cache._data
        for d in self._dispatching:
            if d.markers is None:
                continue
            cls = d.group.info.cls
            for op, marker in zip(d.uniq, d.markers):
                if data.get((cls, op)) is marker:
                    del data[(cls, op)]
                for run, target, waited, info in marker.close():
                    run._post(("retry", target, waited, info))

    def finish(self) -> None:
        """A successful end: release the shared bookkeeping."""
        self.closed = True
        self._shared.clear()
        self._flush_cache_hits()

    def _flush_cache_hits(self) -> None:
        """Count cache hits of the step phase that no round followed."""
        if self.trace is not None and self.cache_hits:
            self.trace.cache_hits += self.cache_hits  # no round of its own
            self.cache_hits = 0
