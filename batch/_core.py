"""The round protocol: the core that every driver runs (sans-IO).

What one round is
=================

A round has two phases.  **Step**: resume every runnable generator until
each one is finished or waits on something (``_stepping``); a generator
that finishes hands its result to its waiter at once, so pure logic never
costs a round.  **Dispatch**: every operation queued during the step is in
a group (``_grouping``), each group is cut into ``run_batch`` calls
(``_dispatch``), the calls run, and their results wake the generators that
wait on them.  Then the next round steps what woke.

The core does both phases' bookkeeping and nothing else: it never blocks,
sleeps, starts a thread, reads a clock or touches an event loop.  Running
the calls is the *driver's* job, so one core serves every way of running
them: inline (``execute``), a thread pool (``max_workers``), an event loop
(``execute_async``), a batcher that feeds roots from many callers.

The protocol a driver follows
=============================

::

    core = Core(cache=cache, trace=trace)
    root = core.add_root(x)                 # as many as it likes
    while True:
        state = core.step()                 # phase 1: run generators
        if state is State.DONE:
            break                           # every root has its result
        if state is State.DISPATCH:
            calls = core.take()             # phase 2 starts: this round's calls
            for call in calls:
                outcome = call.run()        # anywhere: inline, a thread, a loop
                core.complete(call, *outcome)
        elif state is State.CALLS:
            ...                             # wait for calls taken earlier, complete() them
        elif state is State.WAIT:
            if not core.blocked():          # False: waiting can end; True: step again
                ...                         # wait for core.mailbox().notify
                core.unblocked()
    core.finish()                           # or core.abort(exc) on any failure

A driver may also start a root generator itself and hand it over midway
(``adopt_root``, ``adopt_call``): ``_short`` runs a root that yields lone
operations that way, and adopts it into a core at its first other yield.

1. ``step()`` runs user code (generators, ``batch_key``, ``__hash__``) in
   the driver's thread and returns a :class:`State`:

   - ``DISPATCH``: operations are queued (``core.groups``: key -> group,
     in the order their first operation was yielded, each with ``.size``);
   - ``CALLS``: nothing is queued, but calls taken earlier have not all been
     completed: complete them (or wait for them), then step again;
   - ``WAIT``: only answers from other executions sharing the cache are due
     (``_mailbox``): set ``core.mailbox().notify``, then call
     ``core.blocked()``: if it returns True, waiting would never end (the
     executions wait on each other in a ring) and the core failed its waits
     with ``CycleError`` instead: step again.  Otherwise wait until notify
     fires, call ``core.unblocked()``, and step again;
   - ``DONE``: nothing is live.

   An exception other than ``Exception`` (KeyboardInterrupt) propagates out
   of ``step()``: the driver must then ``abort(exc)``, which closes every
   live generator whatever state the core was in when it stopped.  When a root that
   raises at once fails, ``step()`` raises :class:`~._tasks.RootFailure`.
2. ``take(keys=None)`` closes the step phase: every queued group (or only
   the groups whose keys are given: a batcher may hold some back for more
   operations) becomes a dispatch, and the calls are returned in group
   order.  Each ``take`` counts as one round.  Between ``step`` and
   ``take`` a driver may add roots and step again: their operations join
   the groups not taken yet.
3. ``call.run()`` calls ``run_batch`` and returns ``(result, exception)``;
   it never raises and touches nothing of the core, so it may run in any
   thread, and several at once.  ``run_batch`` gets a list of its own and
   runs in a context (``call.ctx``) that names this execution, so an
   execution started inside it never waits on this one.  An async driver
   awaits an awaitable result in that context (``loop.create_task(...,
   context=call.ctx)``) before completing it.
4. ``complete(call, result, exc)`` takes an outcome back, in the driver's
   thread, in any order.  Results are given to waiters once every call of
   a group's dispatch has completed; they run at the next ``step()``, in
   the order in which they began to wait.  The sync and asyncio drivers
   complete a round's calls in group order, which keeps execution
   deterministic.  A layered ``run_batch`` (a batch generator) becomes a
   task that the next ``step()`` runs.
5. ``abort(exc)`` closes every live generator (innermost first, so
   ``finally`` blocks run before their callers'), releases in-flight cache
   entries, and notes the rounds completed on ``exc``.  ``finish()`` ends a
   successful execution.  The core is single-threaded: all of the above but
   ``call.run()`` and ``Mailbox.post`` happen in one thread at a time.

What the core guarantees: minimal rounds (a round per level of dependent
operations), one call per group and chunk, deterministic order, no
recursion through user generators, and a cost proportional to the work of a
round, not to the number of live generators.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import threading
import types
from collections.abc import Awaitable, Callable, Hashable, Iterable
from operator import is_not
from typing import Any

from . import _hooks
from ._cache import InFlight, OperationCache
from ._dispatch import ENCLOSING, Call, Dispatch, chunks, log_call, owner_name, validate
from ._errors import (
    BatchError,
    async_in_sync_error,
    cycle_error,
    execution_cycle_error,
    fresh_failure,
    gen_batch_type_error,
    name_of,
    root_gen,
    root_started_error,
    root_twice_error,
    root_type_error,
    run_batch_generator_expression_error,
    without_executor_frames,
)
from ._grouping import DedupeOps, Group
from ._mailbox import ANSWER, RETRY, SHARED, Mailbox
from ._operation import BatchableOperation, Settled
from ._sharing import RUNNING, SharedGenerator
from ._stepping import enqueue, queue_operation, start_join, step
from ._tasks import (
    GEN,
    HOLD,
    SEND,
    SINCE,
    SINK,
    STACK,
    TAKE,
    Join,
    Root,
    Task,
    by_since,
    deliver,
    fill,
    open_join,
)
from ._teardown import climb, close_tasks, closing_order, find_cycle
from ._trace import RoundRecord, Trace

__all__ = ["Core", "State"]

log = logging.getLogger("batch")
GeneratorType = types.GeneratorType

# Executions whose driver waits for mail now (see Core.blocked); the lock
# makes "is it waiting, and on whom" one consistent picture across threads.
_waits_lock = threading.Lock()
_waiting_cores: dict[Any, None] = {}


class State(enum.Enum):
    """What a driver must do after :meth:`Core.step` (see the module docstring)."""

    DONE = "done"
    DISPATCH = "dispatch"
    CALLS = "calls"
    WAIT = "wait"


DISPATCH = State.DISPATCH
DONE = State.DONE


class Core:
    """One execution's state: its roots, queued groups, calls in flight, cache and trace."""

    # Slots, and containers made only when used: an execution that runs one
    # small tree creates few objects for the garbage collector to track,
    # which is what a server running thousands of them at once pays for.
    __slots__ = ("_cache", "trace", "hook", "rounds", "cache_hits", "ready", "woken", "live", "broods",
                 "building", "clock", "sort_woken", "root_gens", "first_root", "unstarted", "groups",
                 "dispatching", "calls_out", "_round_calls", "shared", "_mailbox", "_limit", "thread",
                 "loop", "closed", "enclosing")

    def __init__(self, *, cache: OperationCache | None = None, trace: Trace | None = None,
                 plain: bool = False) -> None:
        if cache is not None and not isinstance(cache, OperationCache):
            raise TypeError(f"cache= takes a batch.OperationCache, got {type(cache).__qualname__}")
        if trace is not None and not isinstance(trace, Trace):
            raise TypeError(f"trace= takes a batch.Trace, got {type(trace).__qualname__}")
        self._cache = cache  # made on first use when not given
        if _hooks._trace_factory is not None and not plain:
            trace = _hooks.implicit_trace(trace)
        self.trace = trace
        # batch.testing's overrides and recorders in force now, for the whole
        # execution: a block entered later, from any thread, never reaches it.
        # ``plain``: an execution that began without any (see ``_short``).
        self.hook = None if plain else _hooks.current()
        self.rounds = 0  # takes so far
        self.cache_hits = 0  # since the last take
        # Step state (``_stepping``): tasks to run, tasks woken since the last step.
        self.ready: list[list[Any]] = []
        self.woken: list[list[Any]] = []
        # The registry of tasks: every task that exists is in one of these
        # from before its generator first runs (see _tasks).  abort() closes
        # what is left, innermost first (see ``_teardown.closing_order``):
        # it is what lets abort() find every live generator whatever raised
        # and wherever - user code, the executor's own, or a
        # KeyboardInterrupt arriving between two of its bytecodes: no other
        # structure needs to be consistent at that moment.
        # ``live``: the tasks that are not a structure's child (roots, shared
        # generators, layered batches), by their bottom generator (the one
        # they were made for: generators hash by identity, so no id() call),
        # in creation order, removed once it has finished.
        self.live: dict[Any, list[Any]] = {}
        # ``broods``: the children of each structure (by its Join) that has
        # generator children, in creation order, until the join completes:
        # one list append per child instead of a dict insert and delete (the
        # commonest task by far), finished children skipped by abort().
        self.broods: dict[Join, list[list[Any]]] | None = None  # made on first use
        # (sink, index) of the structure start_join is building, whose join
        # waits on a placeholder meanwhile; None when none is.
        self.building: tuple[Any, int] | None = None
        self.clock = 0  # counts parkings, for the resume order (see _tasks.SINCE)
        self.sort_woken = False  # wake-ups may be out of order: sort before stepping
        # Root generators not started yet, to refuse one given twice: the
        # first alone, a dict from the second on.
        self.first_root: Any = None
        self.root_gens: dict[Any, None] | None = None  # (generators hash by identity)
        # ``live`` may hold a task whose generator has not started (a root, a
        # shared generator's, a layered batch's): a yield of that generator
        # elsewhere must be refused, which only a lookup in ``live`` tells.
        # False once a step has run every task (see ``_stepping.step``).
        self.unstarted = False
        # Queued operations by group key, and the classes seen (``_grouping``).
        self.groups: dict[Hashable, Group] = {}
        # Dispatches taken and not yet answered, in take order.
        self.dispatching: dict[Dispatch, None] = {}
        self.calls_out = 0  # calls taken and not yet given back with complete()
        self._round_calls: dict[int, list[Any]] | None = None  # trace: id(record) -> [record, calls left]
        self.shared: dict[SharedGenerator[Any], None] = {}  # started by this execution
        self._mailbox: Mailbox | None = None
        self._limit: int | None = None  # ``take(max_size=)`` of the take being prepared
        # Who drives this core, so that another execution knows whether it may
        # wait on it (see ``may_wait_on``): the thread that sends its cached
        # operations, and the event loop an async driver sets.
        self.thread = 0
        self.loop: Any = None
        self.closed = False
        # The executions this one runs inside (a batch.execute called from one
        # of their run_batch calls): they wait on this one, so it must never
        # wait on them.
        self.enclosing: tuple[Core, ...] = ENCLOSING.get()

    @property
    def cache(self) -> OperationCache:
        """The execution's operation cache (a fresh one unless ``cache=`` was given)."""
        cache = self._cache
        if cache is None:
            cache = self._cache = OperationCache()
        return cache

    # -- roots -------------------------------------------------------------------

    def add_root(self, x: Any, raise_at_once: bool = True) -> Root:
        """Queue ``x`` (a generator, operation or structure) as a root.

        Its result lands in the returned :class:`Root`.  With
        ``raise_at_once``, a failure stops the execution (``step()`` raises
        ``RootFailure``).  A driver that hands each root's result to its own
        caller gives an end point of its own instead (:meth:`add_root_to`).
        Raises ``TypeError`` for anything that cannot be a root.
        """
        root = Root(raise_at_once)
        self.add_root_to(x, root)
        return root

    def add_root_to(self, x: Any, end: Any) -> None:
        """Queue ``x`` as a root whose result goes to ``end.resolve(value, failed)``.

        ``end`` is an end point, as a :class:`Root` is (a batcher's future,
        say); ``withdraw`` takes it as the root.  It may be resolved before
        this returns (a structure answered at once).  Raises as
        :meth:`add_root` does.
        """
        if type(x) is GeneratorType:
            if x.gi_suspended or x.gi_frame is None or x.gi_running:
                raise root_twice_error(x) if self._seen_root(x) else root_started_error(x)
            if self.first_root is None:
                self.first_root = x
            else:
                gens = self.root_gens
                if gens is None:
                    gens = self.root_gens = {self.first_root: None}
                if x in gens:
                    raise root_twice_error(x)
                gens[x] = None
            gen = x
        elif isinstance(x, (BatchableOperation, list, tuple, dict, Settled, SharedGenerator)):
            gen = root_gen(x)
        else:
            raise root_type_error(x)
        task = [gen, contextvars.copy_context(), None, end, 0, None, SEND, 0]
        self.live[gen] = task
        self.unstarted = True
        self.woken.append(task)

    def adopt_root(self, gen: Any, ctx: contextvars.Context, y: Any, rounds: int,
                   stack: list[Any] | None = None) -> Root:
        """Take over a root generator a driver started itself (see ``_short``).

        ``gen`` ran in ``ctx`` through ``rounds`` rounds, and has just
        yielded ``y``, not acted on yet: the next ``step()`` takes ``y`` up
        as if the generator had run here from the start.  ``stack`` holds
        the generators below ``gen`` that wait on it, as a task keeps them
        (``[root, its ctx, child, its ctx, ...]``; see ``_tasks``).  Its
        failure raises at once, as ``add_root(gen)``'s does.
        """
        root = Root(True)
        task = [gen, ctx, stack or None, root, 0, y, TAKE, 0]
        self.live[stack[0] if stack else gen] = task  # by its bottom generator
        self.woken.append(task)
        self.rounds = rounds
        return root

    def adopt_call(self, gen: Any, ctx: contextvars.Context, y: Any, rounds: int,
                   sent: list[Any], stack: list[Any] | None = None) -> tuple[Root, Call]:
        """Take over a root whose operations a driver sent itself (see ``_short``).

        As :meth:`adopt_root`, but ``gen`` waits on ``y``: an operation of a
        fast-path class, or a list or tuple of operations of one such class
        that fit in one call, which the driver passed to ``run_batch`` as
        ``sent`` in round ``rounds``.  Returns the root and that round's
        call, for the driver to ``complete()`` with the outcome it got.
        """
        root = Root(True)
        task = [gen, ctx, stack or None, root, 0, None, SEND, 1]
        self.live[stack[0] if stack else gen] = task
        self.clock = 1
        self.rounds = rounds - 1
        if y.__class__ is list or y.__class__ is tuple:
            start_join(self, y, task, 0, ctx, False, False, gen)
        else:
            queue_operation(self, y, task)
        (call,) = self.take()
        call.sent = sent
        return root, call

    def brood(self, join: Join) -> list[list[Any]]:
        """Register the list of ``join``'s child tasks (at its first child; see ``broods``)."""
        broods = self.broods
        if broods is None:
            broods = self.broods = {}
        brood: list[list[Any]] = []
        broods[join] = brood
        join.broods = broods  # the join leaves it when it completes (see _tasks.fill)
        return brood

    def _live_tasks(self) -> list[list[Any]]:
        """Every task that may hold a generator to close: the live ones, then structures' children."""
        tasks = list(self.live.values())
        if self.broods:
            for brood in self.broods.values():
                for task in brood:
                    gen = task[GEN]
                    # Not finished, or its top finished (a BaseException out of
                    # it) with generators below still open.
                    if gen is not None and (gen.gi_frame is not None or task[STACK]):
                        tasks.append(task)
        return tasks

    def add_operation(self, op: BatchableOperation[Any], sink: Any) -> bool:
        """Queue one operation as a root of its own, with no generator around it.

        For a driver whose callers submit single operations (a batcher): the
        operation goes straight into its group, and its result to
        ``sink.resolve(value, failed)`` (an end point, as a :class:`Root` is;
        ``withdraw`` takes it as the root).  Returns False when it was
        answered at once (a cache hit, or an operation that cannot be
        grouped): ``sink`` was resolved before this returned.
        """
        outcome = queue_operation(self, op, (sink, 0, 1))
        if outcome is None:
            return True
        fill(sink, 0, outcome[0], outcome[1], self.woken)
        return False

    def _seen_root(self, x: Any) -> bool:
        if self.root_gens is not None:
            return x in self.root_gens
        return self.first_root is x

    def roots_started(self) -> None:
        """Every root given so far has started: forget them (called by ``step``)."""
        self.first_root = None
        self.root_gens = None

    # -- phase 1 -----------------------------------------------------------------

    def step(self) -> State:
        """Run every runnable generator until each waits; say what the driver must do."""
        while True:
            mailbox = self._mailbox
            if mailbox is not None and mailbox.inbox:
                self._read_mail()
            if self.sort_woken:
                self.woken.sort(key=by_since)
                self.sort_woken = False
            step(self)
            if self.groups:
                return DISPATCH
            mailbox = self._mailbox  # the step may have made it
            if mailbox is not None and (mailbox.inbox or mailbox.due):
                if mailbox.inbox:
                    continue
                return State.WAIT
            if self.calls_out:
                return State.CALLS
            if self.dispatching:
                # Every call answered, yet batches are pending: layered
                # run_batch generators wait on each other (through shared
                # generators, or through cached operations).
                if not self.shared or not self._break_cycle():
                    self._break_batch_cycle()
                continue
            if not self.shared or not self._break_cycle():
                return DONE

    def _read_mail(self) -> None:
        """Deliver what other executions posted (see ``_mailbox``)."""
        assert self._mailbox is not None
        woken = self.woken
        for kind, target, value, info in self._mailbox.take():
            if kind == ANSWER:
                deliver([target], [value], woken)
            elif kind == SHARED:
                fill(target[0], target[1], value, info, woken)
            else:  # RETRY: its sender ended without an answer: send it ourselves
                outcome = enqueue(self, value, info, target)
                if outcome is not None:
                    deliver([target], [outcome[0]], woken)

    def blocked(self) -> bool:
        """The driver is about to wait for mail: True if that would wait forever.

        Executions sharing a cache wait on each other's in-flight operations
        and shared generators.  If every execution this one waits on - and
        every one they wait on, and so on - is itself waiting for mail with
        nothing arrived, none of them can ever answer (a layered run_batch in
        one waits on a batch of another, which waits on the first): then this
        one's waits are withdrawn and fail with a ``CycleError``, and the
        driver steps again instead of waiting.  Otherwise this execution is
        marked as waiting (until :meth:`unblocked`) and False is returned.
        """
        mailbox = self.mailbox()
        with _waits_lock:
            if mailbox.inbox:
                return False
            ring = self._waits_forever()
            if ring is None:
                _waiting_cores[self] = None
                return False
        exc = execution_cycle_error(len(ring))
        waiting = list(mailbox.waiting.values())
        mailbox.waiting.clear()
        for target, _, kind in waiting:
            if kind == SHARED:
                fill(target[0], target[1], exc, True, self.woken)
            else:
                deliver([target], [exc], self.woken)
        return True

    def unblocked(self) -> None:
        """The driver stopped waiting for mail (see :meth:`blocked`)."""
        with _waits_lock:
            _waiting_cores.pop(self, None)

    def _waits_forever(self) -> list[Core] | None:
        """The executions that, with this one, only wait on each other; None if any can go on.

        Under ``_waits_lock``.  Any execution reached that is running, has
        mail, or has ended may still answer, so nothing is decided then.
        """
        seen: dict[Core, None] = {self: None}
        stack: list[Core] = [self]
        while stack:
            core = stack.pop()
            box = core._mailbox
            if box is None:  # pragma: no cover  (a core waited on always has one)
                return None
            for _, owner, _ in list(box.waiting.values()):
                if owner in seen:
                    continue
                obox = owner._mailbox
                if owner.closed or owner not in _waiting_cores or obox is None or obox.inbox:
                    return None
                seen[owner] = None
                stack.append(owner)
        return list(seen) if len(seen) > 1 else None

    def mailbox(self) -> Mailbox:
        """The execution's mailbox (made on first use)."""
        if self._mailbox is None:
            self._mailbox = Mailbox()
        return self._mailbox

    def may_wait_on(self, other: Core) -> bool:
        """Whether this execution may wait for ``other``'s answer without deadlock.

        It may if ``other`` makes progress while this one waits: it is driven
        from another thread, or both are tasks of one event loop.  An
        execution nested in ``other`` - started by one of its generators, or
        by one of its ``run_batch`` calls in any thread - may not: ``other``
        waits for it.
        """
        if other.closed or other in self.enclosing:
            return False
        if self.loop is not None and other.loop is self.loop:
            return True
        return other.thread != threading.get_ident()

    def _break_batch_cycle(self) -> None:
        """Layered ``run_batch`` generators wait, through cached operations, on each other.

        Nothing can run and no call is out, so each pending batch waits on an
        operation that one of these batches is computing: those waits are
        the cycle.  They get a ``CycleError`` naming the batches, which then
        fail like any other batch whose generator raised.
        """
        pending = list(self.dispatching)
        exc = cycle_error([owner_name(d.group) for d in pending])
        woken = self.woken
        broken = False
        for d in pending:
            for marker in d.markers or ():
                followers, marker.followers = marker.followers, []
                if followers:
                    deliver(followers, [exc] * len(followers), woken)
                    broken = True
        if not broken:
            raise BatchError(  # pragma: no cover  (the executor lost track of a generator)
                "batch internal error: batches wait, but on nothing")

    def _break_cycle(self) -> bool:
        """Nothing can run, yet shared generators wait: on each other.  False if none wait."""
        running = [s for s in self.shared if s._state == RUNNING and s._owner is self]
        if not running:
            return False
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
        exc = cycle_error([_shared_name(a) for a, _, _ in cycle])
        # Break it at the wait that closed it: that waiter gets the error.
        _, b, entry = cycle[-1]
        b._waiters.remove(entry)
        fill(entry[0], entry[1], exc, True, self.woken)
        return True

    def shared_finished(self, shared: SharedGenerator[Any]) -> None:
        """A shared generator this execution ran has its result (called by it)."""
        self.shared.pop(shared, None)

    # -- phase 2 -----------------------------------------------------------------

    def take(self, keys: list[Hashable] | None = None, max_size: int | None = None) -> list[Call]:
        """End the step phase: turn queued groups into calls (all, or those of ``keys``).

        ``max_size`` chunks every group to at most that many operations per
        call, besides its class's own ``max_batch_size`` (a batcher's limit).
        """
        if max_size is not None:
            self._limit = max_size
        elif self._limit is not None:
            self._limit = None
        if keys is None:
            if len(self.groups) == 1 and self.trace is None:
                # One group, no trace: the round of a small tree, kept short.
                (group,) = self.groups.values()
                self.groups = {}
                self.rounds += 1
                calls = self._prepare(group, self.hook, self._within(group.info.cached))
                self.calls_out += len(calls)
                return calls
            groups = list(self.groups.values())
            self.groups = {}
        else:
            groups = [self.groups.pop(k) for k in keys]
        self.rounds += 1
        hook = self.hook
        # One group wakes its waiters in the order they began to wait already
        # (its targets were queued in that order); several groups, or cached
        # followers (see _prepare), need the sort before the next step.
        if len(groups) > 1:
            self.sort_woken = True
        trace = self.trace
        # What this round's calls tell an execution started inside them (not
        # kept on the core: a core in its own chain would be a reference cycle).
        # A batcher's rounds overlap, so its calls always tell.
        within = self._within(keys is not None or any(g.info.cached for g in groups))
        if trace is None:
            calls = []
            for group in groups:
                calls.extend(self._prepare(group, hook, within))
            self.calls_out += len(calls)
            return calls
        record = trace._begin_round()
        record.cache_hits = self.cache_hits
        trace.cache_hits += self.cache_hits
        self.cache_hits = 0
        calls = []
        for group in groups:
            calls.extend(self._prepare(group, hook, within))
        self.calls_out += len(calls)
        if self._round_calls is None:
            self._round_calls = {}
        self._round_calls[id(record)] = [record, len(calls)]
        for call in calls:
            call.round = record
        if not calls:
            self._round_done(record)
        return calls

    def _within(self, cached: bool) -> tuple[Core, ...]:
        """The executions a nested execution started inside this round's calls must not wait on.

        Only an execution with cached operations in flight or shared
        generators running can be waited on; when this one has neither (nor
        runs inside another's call), its calls need not say so, and skip
        setting the context variable.
        """
        if cached or self.shared or self.enclosing:
            return (*self.enclosing, self)
        return ()

    def _prepare(self, group: Group, hook: Any, within: tuple[Core, ...]) -> list[Call]:
        """A group's dispatch and its calls (operations whose cost raised fail at once)."""
        d = Dispatch(group)
        self.dispatching[d] = None
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
            self.sort_woken = True  # followers wake with the waiters
            self.thread = threading.get_ident()  # others wait on us: see may_wait_on
            data = self.cache._data
            cls = info.cls
            markers = []
            for op in uniq:
                marker = InFlight(self)
                data[(cls, op)] = marker
                markers.append(marker)
            d.markers = markers
        if not uniq:  # every operation failed before sending (unhashable)
            self._deliver(d)
            return []
        trace = self.trace
        n = len(uniq)
        size = info.max_size
        if self._limit is not None and (size is None or self._limit < size):
            size = self._limit
        if info.max_cost is None and (size is None or n <= size):
            d.pending = 1  # one call: no chunking to work out; its result is the results
            calls = [Call(d, 0, n, uniq, hook, trace, within)]
            d.calls = calls
            return calls
        d.results = [None] * n  # filled chunk by chunk
        bounds, failures = chunks(info, uniq, size)
        d.pending = len(bounds) + len(failures)
        if len(bounds) == 1 and not failures:
            calls = [Call(d, 0, n, uniq, hook, trace, within)]
        else:
            calls = [Call(d, a, b, uniq[a:b], hook, trace, within) for a, b in bounds]
        d.calls = calls
        for k, cost_error in failures:
            # batch_cost() raised: that operation fails alone, at its yield.
            self._accept(Call(d, k, k + 1, uniq[k:k + 1]), None, cost_error)
        return calls

    def complete(self, call: Call, result: Any, exc: BaseException | None) -> None:
        """Take back the outcome of ``call.run()`` (see the protocol, step 4)."""
        call.ctx = None  # it names this execution (see _dispatch.ENCLOSING): do not keep it
        self.calls_out -= 1
        if exc is not None and not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt and friends stop everything
        rec = call.record
        if rec is not None:
            rec.seconds = call.t1 - call.t0
            record = call.round
            if record is not None:
                record.batches.append(rec)
                entry = self._round_calls.get(id(record)) if self._round_calls else None
                if entry is not None:
                    entry[1] -= 1
                    if entry[1] == 0:
                        self._round_done(record)
        if exc is None and result.__class__ is not list:
            group = call.dispatch.group
            if result.__class__ is GeneratorType and result.gi_code.co_name == "<genexpr>":
                # A generator expression is not a layered batch: a mistake.
                result.close()
                result, exc = None, run_batch_generator_expression_error(owner_name(group))
            elif result.__class__ is GeneratorType:
                if rec is not None:
                    rec.layered = True
                self.sort_woken = True
                # A batch generator runs just before the first generator that
                # waits on its batch (so, in program order too).
                call.dispatch_done = self._accept
                since = _earliest_since(group.targets, self.clock + 1) - 0.5
                task = [result, contextvars.copy_context(), None, call, 0, None, SEND, since]
                self.live[result] = task
                self.unstarted = True
                self.woken.append(task)
                return
            elif group.info.uses_batcher:
                result, exc = None, gen_batch_type_error(group.owner, result)
            elif isinstance(result, Awaitable):
                if hasattr(result, "close"):
                    result.close()  # silence "coroutine was never awaited"
                result, exc = None, async_in_sync_error(group.info.name)
        elif exc is None and call.dispatch.group.info.uses_batcher:
            result, exc = None, gen_batch_type_error(call.dispatch.group.owner, result)
        self._accept(call, result, exc)

    def _round_done(self, record: RoundRecord) -> None:
        if self._round_calls is not None:
            self._round_calls.pop(id(record), None)
        if self.trace is not None:
            record.seconds = self.trace._now() - record.start

    def _accept(self, call: Call, result: Any, exc: BaseException | None) -> None:
        """Store a chunk's results (validated) or its failure; deliver when all are in."""
        d = call.dispatch
        n = call.stop - call.start
        if exc is None:
            sent = call.sent
            if (result.__class__ is list and len(result) == n and sent is not None
                    and len(sent) == n
                    and (sent[0] is call.ops[0] if n == 1 else not any(map(is_not, sent, call.ops)))):
                call.sent = None  # the common case: a list of the right length, operations untouched
            else:
                result, exc = validate(call, result)
        rec = call.record
        if exc is not None:
            if d.whole is None:
                d.whole = set()
            d.whole.add(id(exc))
            result = [exc] * n
            if rec is not None:
                rec.error = exc
        elif rec is not None:
            rec.failed = sum(1 for r in result if isinstance(r, Exception))
        assert result is not None
        if n == len(d.uniq):
            d.results = result  # the only chunk
        else:
            d.results[call.start:call.stop] = result
        if log.isEnabledFor(logging.DEBUG):
            log_call(call, exc)
        d.pending -= 1
        if d.pending == 0:
            self._deliver(d)

    def _deliver(self, d: Dispatch) -> None:
        """Every chunk of a dispatch answered: give each waiter its result."""
        del self.dispatching[d]
        d.calls = []  # break the Dispatch <-> Call cycle: results go with refcounting
        markers = d.markers
        if markers is not None:
            self._store_cached(d, d.results, markers)
        results = d.results if d.positions is None else d.per_operation()
        d.results = []
        if markers is not None and not d.whole:
            # Cached failures are kept, never raised: each waiter gets a copy.
            results = [fresh_failure(r) if isinstance(r, Exception) else r for r in results]
        deliver(d.group.targets, results, self.woken)

    def _store_cached(self, d: Dispatch, results: list[Any], markers: list[Any]) -> None:
        """Replace in-flight cache entries by results; tell the executions that wait."""
        data = self.cache._data
        cls = d.group.info.cls
        whole = d.whole
        woken = self.woken
        for op, value, marker in zip(d.uniq, results, markers):
            key = (cls, op)
            if whole and id(value) in whole:
                if data.get(key) is marker:
                    del data[key]  # a failed call is not cached
            elif data.get(key) is marker:
                data[key] = value
            cached = isinstance(value, Exception) and not (whole and id(value) in whole)
            # (followers are this execution's own waiters: a whole-call failure is theirs as is)
            if marker.followers:
                followers = marker.followers
                deliver(followers, [fresh_failure(value) if cached else value for _ in followers], woken)
            for other, target, _, _ in marker.close():
                # Another thread raises it: never the object this one raises.
                shared = isinstance(value, Exception)
                other.mailbox().post(ANSWER, target, fresh_failure(value) if shared else value)

    # -- a caller gives up (batchers) ---------------------------------------------

    def withdraw(self, roots: Iterable[Any]) -> list[str]:
        """Close the trees of ``roots`` only and withdraw their operations not sent yet.

        For a driver that serves many callers (a batcher) whose caller
        cancelled.  Every generator that works for one of ``roots`` alone
        is closed (innermost first, in its own context); its queued
        operations leave their groups (a group left empty is dropped), and
        answers still to come for it (calls in flight, cache followers,
        shared generators, other executions) are dropped when they arrive.
        Work shared with other roots (a deduplicated or cached operation, a
        shared generator, a layered batch) goes on for them.  The roots
        never resolve.  Returns what raised while closing (as text).
        """
        gone = {id(r) for r in roots}
        if not gone:
            return []
        memo: dict[int, bool] = {}

        def withdrawn(x: Any) -> bool:
            # Climb the waiters of ``x`` to its end point: one of ``roots``,
            # or something shared (another root, a shared generator, a call).
            path = []
            while True:
                k = id(x)
                known = memo.get(k)
                if known is not None:
                    break
                path.append(k)
                cls = x.__class__
                if cls is Task:
                    x = x[SINK]
                elif cls is Join:
                    x = x.sink
                elif cls is tuple:
                    x = x[0]
                else:
                    known = k in gone
                    break
            for k in path:
                memo[k] = known
            return known

        tasks = closing_order([t for t in self._live_tasks() if withdrawn(t)], None)
        for task in tasks:
            if task[SINK].__class__ is not Join:  # (a structure's child goes with its brood)
                del self.live[task[STACK][0] if task[STACK] else task[GEN]]
        if self.broods:
            for join in [j for j in self.broods if withdrawn(j)]:
                del self.broods[join]
                join.broods = None
        self.ready[:] = [t for t in self.ready if not withdrawn(t)]
        self.woken[:] = [t for t in self.woken if not withdrawn(t)]
        for key, group in list(self.groups.items()):
            _drop_targets(group, withdrawn)
            if not group.targets:
                del self.groups[key]
        for d in self.dispatching:
            # Sent already: the call goes on; the answer for a withdrawn
            # waiter falls into a join nobody waits on.
            d.group.targets = [_nowhere(t) if withdrawn(t) else t for t in d.group.targets]
            for marker in d.markers or ():
                marker.followers[:] = [t for t in marker.followers if not withdrawn(t)]
        for shared in self.shared:
            shared._waiters = [w for w in shared._waiters if not withdrawn(w[0])]
        if self._mailbox is not None:
            waiting = self._mailbox.waiting
            for key, (target, _, _) in list(waiting.items()):
                if withdrawn(target):
                    del waiting[key]  # an answer that still comes is ignored (Mailbox.take)
        return close_tasks(tasks)

    # -- the end -----------------------------------------------------------------

    def abort(self, exc: BaseException | None) -> None:
        """Close every live generator (innermost first) and forget queued work.

        A ``KeyboardInterrupt`` (any ``BaseException``) that arrives meanwhile
        does not cut it short: it is raised once every generator is closed
        (the first one, if several).
        """
        if self.closed:
            return
        interrupted: BaseException | None = None
        tasks: list[list[Any]] | None = None
        while tasks is None:
            try:
                tasks = closing_order(self._live_tasks(), self.building)
            except Exception:
                raise
            except BaseException as err:  # an interrupt: nothing is changed yet, again
                interrupted = interrupted or err
        self.closed = True
        problems: list[str] = []
        try:
            self.live.clear()
            if self.broods:
                self.broods.clear()
            self._release_markers()
            self.ready.clear()
            self.woken.clear()
            self.groups.clear()
            for d in self.dispatching:
                d.calls = []  # break the Dispatch <-> Call cycle (see _deliver)
            self.dispatching.clear()
        except BaseException as err:  # raised after the closing below
            interrupted = interrupted or err
        while True:
            try:
                close_tasks(tasks, problems)  # (a task closed once is skipped after)
                break
            except Exception:
                raise
            except BaseException as err:
                interrupted = interrupted or err
        try:
            for shared in self.shared:
                if shared._state == RUNNING and shared._owner is self:
                    shared._abandon(exc if exc is not None else BatchError("execution closed"))
            self.shared.clear()
            self._flush_cache_hits()
            if exc is not None:
                if self.trace is not None:
                    self.trace.error = exc
                    for record, _ in list((self._round_calls or {}).values()):
                        self._round_done(record)
                try:
                    exc.batch_rounds_completed = self.rounds  # type: ignore[attr-defined]
                    exc.add_note(f"batch: execution failed after {self.rounds} round(s)")
                    for p in problems:
                        exc.add_note(f"batch: {p}")
                except Exception:  # pragma: no cover  (exotic exception types)
                    pass
        finally:
            if interrupted is not None:
                try:
                    raise interrupted
                finally:
                    del interrupted

    def _release_markers(self) -> None:
        """Drop this execution's in-flight cache entries; their other waiters send them."""
        if self._cache is None:
            return
        data = self._cache._data
        for d in self.dispatching:
            if d.markers is None:
                continue
            cls = d.group.info.cls
            for op, marker in zip(d.uniq, d.markers):
                if data.get((cls, op)) is marker:
                    del data[(cls, op)]
                for other, target, waited, info in marker.close():
                    other.mailbox().post(RETRY, target, waited, info)

    def conclude(self, failure: BaseException | None) -> None:
        """A driver's last call: raise ``failure`` (a root's) after closing everything, or finish."""
        if failure is not None:  # raised here, not in an except block: no implicit context
            self.abort(failure)
            try:
                raise without_executor_frames(failure)
            finally:
                # The traceback keeps this frame: without the name, the frame
                # does not keep the exception too (a cycle only the GC frees).
                del failure
        self.finish()

    def finish(self) -> None:
        """A successful end: release the shared bookkeeping."""
        self.closed = True
        if self.shared:
            self.shared.clear()
        if self.cache_hits:
            self._flush_cache_hits()

    def _flush_cache_hits(self) -> None:
        """Count cache hits of the step phase that no round followed."""
        if self.trace is not None and self.cache_hits:
            self.trace.cache_hits += self.cache_hits  # no round of its own
            self.cache_hits = 0


def _earliest_since(targets: list[Any], default: float) -> float:
    """The smallest SINCE of the tasks waiting (directly or through joins) on ``targets``."""
    best = float(default)
    for target in targets:
        while target.__class__ is not Task:
            target = target[0] if target.__class__ is tuple else target.sink
            if target.__class__ is not Join and target.__class__ is not Task:
                break  # a root structure or a batch generator: no SINCE
        if target.__class__ is Task and target[SINCE] < best:
            best = target[SINCE]
    return best


def _shared_name(shared: SharedGenerator[Any]) -> str:
    return name_of(shared._gen) if shared._gen is not None else repr(shared)



def _drop_targets(group: Group, withdrawn: Callable[[Any], bool]) -> None:
    """Take a queued group's withdrawn targets and their operations out of it."""
    ops = group.ops
    if ops.__class__ is DedupeOps:
        yielded = [ops[p] if p >= 0 else ops.unhashable[-1 - p][0] for p in ops.positions]
    else:
        yielded = ops
    targets: list[Any] = []
    kept: list[Any] = []
    pos = 0
    for t in group.targets:
        n = 1 if t.__class__ is Task else t[2]
        if not withdrawn(t):
            targets.append(t)
            kept.extend(yielded[pos:pos + n])
        pos += n
    if len(targets) == len(group.targets):
        return
    group.targets = targets
    fresh: list[Any] = DedupeOps() if ops.__class__ is DedupeOps else []
    fresh.extend(kept)
    group.ops = fresh


def _nowhere(target: Any) -> tuple[Join, int, int]:
    """A target for the answers of ``target``'s operations that nobody waits for."""
    count = 1 if target.__class__ is Task else target[2]
    join, _, _ = open_join([None] * (count + 1), HOLD, 0, False)  # one slot never fills
    assert join is not None
    return join, 0, count
