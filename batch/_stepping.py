"""Stepping: resume runnable tasks until every one waits on something.

This is phase 1 of a round (see ``_core``).  :func:`step` pops tasks off the
ready stack and resumes each until it yields something to wait on:

- a generator: pushed on top of the same task's chain (no recursion);
- an operation: queued in its group (``_grouping``), the task parked on it;
- a list/tuple/dict or ``settled(...)``: a join (:func:`start_join`);
- a shared generator: the task waits among its waiters;
- ``GenResult(v)`` (legacy): the generator is closed and ``v`` is its result.

A finished generator's result goes to its parent at once (same round), so
pure logic never costs a round.  The ready stack is LIFO with wake-ups pushed
in reverse, so tasks run in program order: earlier roots and siblings first,
depth first.

Everything here works on the core's state (``_core.Core``) and never blocks:
no threads, clocks or event loops.
"""

from __future__ import annotations

import contextvars
import types
from typing import Any

from ._cache import MISSING, InFlight
from ._errors import (
    BatchSettingError,
    fresh_failure,
    name_of,
    reuse_error,
    self_wait_error,
    shared_elsewhere_error,
    unhashable_operation_error,
    yield_error,
    yield_from_iterator_error,
    yielded_value_error,
)
from ._grouping import Group, group_key, op_info
from ._operation import BatchableOperation, GenResult, OpInfo, Settled
from ._sharing import SharedGenerator
from ._tasks import (
    CTX,
    GEN,
    HOLD,
    INDEX,
    RESUME,
    SEND,
    SINCE,
    SINK,
    STACK,
    START,
    TAKE,
    THROW,
    VALUE,
    Join,
    Task,
    fill,
    open_join,
)

__all__ = ["enqueue", "explain_attribute_error", "queue_operation", "start_join", "step"]

GeneratorType = types.GeneratorType
_send = GeneratorType.send
_throw = GeneratorType.throw
_FIELDS = (GEN, CTX, STACK, SINK, INDEX, VALUE, RESUME, SINCE)
_STATES = (SEND, THROW, TAKE)
_START_NAMES = (VALUE, RESUME, SEND, TAKE, START)  # what start_join reads as locals


def step(core: Any) -> None:
    """Resume runnable tasks until every live task waits on something."""
    ready = core.ready
    woken = core.woken
    pop = ready.pop  # (a bound method: cheaper than ready.pop() here, measured)
    groups = core.groups
    live = core.live
    clock = core.clock
    # Whether live holds a task not started yet (see Core.unstarted): only
    # _yield_other can make one during a step, so it is read again after it.
    unstarted = core.unstarted
    # The loop reads these names many times per task: as locals they cost a
    # fraction of a global lookup (measured: ~5% of W2's instructions).
    GEN, CTX, STACK, _, _, VALUE, RESUME, SINCE = _FIELDS
    SEND, THROW, TAKE = _STATES
    send, throw, GenType, JoinType = _send, _throw, GeneratorType, Join
    while True:
        if woken:
            woken.reverse()
            ready.extend(woken)
            woken.clear()
            continue
        if not ready:
            core.clock = clock
            core.unstarted = False  # every task in live has run now
            if core.first_root is not None:
                core.roots_started()
            return
        task = pop()
        # SINK and INDEX do not change while the task runs; STACK is kept
        # in step with task[STACK] below.
        gen, ctx, stack, sink, index, value, resume, _ = task
        task[VALUE] = None  # the generator holds the value now; do not keep it alive
        if resume:
            task[RESUME] = SEND
            if resume == START:  # a structure's child queued to start (see start_join)
                if gen.gi_suspended or gen.gi_frame is None:
                    # Started or finished since it was yielded: it was yielded
                    # again, elsewhere.  Not this task's to run, nor to close.
                    task[GEN] = None
                    fill(sink, index, reuse_error(value, gen, True), True, woken)
                    continue
                value = None
                resume = SEND
        while True:
            try:
                # The unbound send/throw spare a bound-method object per step.
                if resume:
                    if resume == TAKE:  # its first yield, taken when start_join started it
                        y = value
                    else:
                        resume = SEND  # what a StopIteration below leaves it at
                        y = ctx.run(throw, gen, value)
                else:
                    y = ctx.run(send, gen, value)
            except StopIteration as stop:
                value = stop.value  # (resume is SEND: TAKE never raises)
            except Exception as exc:
                value = exc
                resume = THROW
                if exc.__class__ is AttributeError:
                    value = explain_attribute_error(gen, exc)
            else:
                cls = y.__class__
                if cls is GenType:
                    if y.__name__ == "<genexpr>":  # a generator expression: a mistake
                        value = yielded_value_error(name_of(gen), y)
                        resume = THROW
                        continue
                    # A single child runs on top of this task's chain.  A
                    # generator that started already (suspended), ended (no
                    # frame) or is a task's not started yet was yielded
                    # before: refuse it.
                    if y.gi_suspended or y.gi_frame is None or (unstarted and y in live):
                        value = _reused(task, y)
                        resume = THROW
                        continue
                    # An interrupt between two steps of a change to the chain
                    # leaves it half-changed; close_tasks copes with that.
                    if stack is None:
                        stack = task[STACK] = [gen, ctx]
                    else:
                        stack.append(gen)
                        stack.append(ctx)
                    gen = task[GEN] = y
                    ctx = task[CTX] = ctx.copy()
                    value = None
                    resume = SEND
                    continue
                # Only fast-path classes are grouped under the bare class,
                # so a hit here needs no further checks.
                group = groups.get(cls)
                if group is not None:
                    group.ops.append(y)
                    group.targets.append(task)
                    clock += 1
                    task[SINCE] = clock
                    break
                if cls is not GenResult:
                    core.clock = clock  # start_join may stamp tasks too
                    outcome = _yield_other(core, task, y, cls)
                    clock = core.clock
                    unstarted = core.unstarted
                    if outcome is None:
                        # Parked until what it waits on resolves.
                        clock += 1
                        task[SINCE] = clock
                        break
                    value, failed = outcome
                    resume = THROW if failed else SEND
                    continue
                # Legacy ``yield GenResult(v)``: finish, running ``finally``.
                value, failed = _close_early(gen, ctx, y.value)
                resume = THROW if failed else SEND
            # ``gen`` finished: resume its parent in the same chain, or hand
            # the result to the task's waiter.
            if stack:
                ctx = task[CTX] = stack.pop()
                gen = task[GEN] = stack.pop()
                continue
            # The finished task is referenced by nothing else now but, for a
            # structure's child, its brood (see _tasks): it goes when
            # ``task`` is rebound, or with its brood.
            if sink.__class__ is JoinType:
                if sink.remaining > 1 and not resume:
                    # The commonest case, one of many siblings finishing with a
                    # value while others still run: only the slot changes, nothing
                    # completes, so fill()'s first step is done here without a call.
                    sink.values[index] = value
                    sink.remaining -= 1
                else:
                    fill(sink, index, value, resume == THROW, woken)
            else:
                del live[gen]  # the bottom generator, its key in the registry
                fill(sink, index, value, resume == THROW, woken)
            break


def _close_early(gen: Any, ctx: contextvars.Context, value: Any) -> tuple[Any, bool]:
    try:
        ctx.run(gen.close)
    except Exception as exc:
        return exc, True
    return value, False


def _reused(task: list[Any], y: Any) -> BaseException:
    chain = [task[GEN], *(task[STACK] or ())[0::2]]
    if any(g is y for g in chain):
        return self_wait_error(task[GEN], chain)
    return reuse_error(task[GEN], y)


def _yield_other(core: Any, task: list[Any], y: Any, cls: type) -> tuple[Any, bool] | None:
    """Everything but a queued group's class: returns None to park, or a value to resume with."""
    if isinstance(y, BatchableOperation):
        return queue_operation(core, y, task)
    if isinstance(y, (list, tuple, dict)):
        return start_join(core, y, task, 0, task[CTX], False, False, task[GEN])
    if isinstance(y, Settled):
        inner = y.value
        if isinstance(inner, (list, tuple, dict)):
            return start_join(core, inner, task, 0, task[CTX], True, False, task[GEN])
        if not _yieldable(inner):
            # settled() never raises: the mistake comes back in place.
            return yield_error(task[GEN], inner, "settled() of "), False
        return start_join(core, [inner], task, 0, task[CTX], True, True, task[GEN])
    if isinstance(y, SharedGenerator):
        return wait_shared(core, y, task, 0, task[CTX])
    return (yielded_value_error(name_of(task[GEN]), y) or yield_error(task[GEN], y)), True


def explain_attribute_error(gen: Any, exc: AttributeError) -> BaseException:
    """``yield from [op, ...]`` sends into a list iterator: say what to write instead."""
    obj = getattr(exc, "obj", None)
    if exc.name in ("send", "throw") and obj is not None and not isinstance(obj, GeneratorType):
        return yield_from_iterator_error(name_of(gen), obj)
    return exc


def _yieldable(value: Any) -> bool:
    return isinstance(value, (BatchableOperation, GeneratorType, list, tuple, dict, Settled,
                              SharedGenerator))


def queue_operation(core: Any, op: Any, target: Any) -> tuple[Any, bool] | None:
    """Queue ``op`` for ``target`` in its group (made if new).

    Returns None when ``target`` now waits, or (value, failed) when the
    operation is answered at once (a cache hit) or cannot be grouped.
    """
    cls = op.__class__
    group = core.groups.get(cls)
    if group is None:
        try:
            info = op_info(cls)
        except BatchSettingError as exc:  # a setting made invalid after the class was defined
            return exc, True
        if not info.fast:
            return enqueue(core, op, info, target)
        # The first of its class this round: its group is keyed by the class.
        group = core.groups[cls] = Group(cls, info, cls)
    group.ops.append(op)
    group.targets.append(target)
    return None


def enqueue(core: Any, op: Any, info: OpInfo, target: Any) -> tuple[Any, bool] | None:
    """Queue an operation of a class with a key, a batcher or a cache.

    Returns None when ``target`` now waits, or (value, failed) when the
    operation is answered at once (a cache hit) or cannot be grouped.
    """
    cls = info.cls
    if info.cached:
        data = core.cache._data
        try:
            entry = data.get((cls, op), MISSING)
        except Exception as exc:  # TypeError: unhashable; anything else: a bad __hash__/__eq__
            return unhashable_operation_error(cls, op, exc, "cache_results"), True
        if entry is not MISSING:
            if entry.__class__ is InFlight:
                if entry.owner is core:
                    entry.followers.append(target)
                    return None
                if core.may_wait_on(entry.owner) and entry.wait(core, target, op, info):
                    core.mailbox().expect(target, entry.owner)
                    return None
                # Answered (or dropped) meanwhile: look again.
                entry = data.get((cls, op), MISSING)
            if entry is not MISSING and entry.__class__ is not InFlight:
                core.cache_hits += 1
                if isinstance(entry, Exception):
                    return fresh_failure(entry), True  # never the cached object itself
                return entry, False
    keyed = group_key(op, info)
    if isinstance(keyed, BaseException):
        return keyed, True
    key, owner = keyed
    groups = core.groups
    group = groups.get(key)
    if group is None:
        group = groups[key] = Group(key, info, owner)
    group.ops.append(op)
    group.targets.append(target)
    return None


def wait_shared(core: Any, shared: SharedGenerator[Any], sink: Any, index: int,
                ctx: contextvars.Context) -> tuple[Any, bool] | None:
    """Wait on a shared generator, starting it if nobody has."""
    what, detail = shared._join(core, sink, index)
    if what == "done":
        if shared._failed:
            return fresh_failure(shared._value), True
        return shared._value, False
    if what == "nested":
        return shared_elsewhere_error(shared), True
    if what == "start":
        task = [detail, ctx.copy(), None, shared, 0, None, SEND, 0]
        core.live[detail] = task
        core.unstarted = True
        core.woken.append(task)
        core.shared[shared] = None
    return None


def start_join(core: Any, struct: Any, sink: Any, index: int, ctx: contextvars.Context,
               settled: bool, single: bool, gen: Any) -> tuple[Any, bool] | None:
    """Start waiting on every item of a yielded list/tuple/dict.

    Returns the structure's value if it is resolved at once (empty, or
    only cache hits), else None.  Nested structures are walked depth first
    with an explicit stack, so operations are queued in the order they
    appear and no nesting depth can exhaust the Python stack.
    """
    join, items, keys = open_join(struct, sink, index, settled, single, snapshot=False)
    if join is None:
        return items, False  # empty: ``items`` is the empty result
    groups = core.groups
    woken = core.woken
    live = core.live
    n = len(items)
    first = items[0].__class__
    group = groups.get(first)  # queued already this round: a fast-path class
    if group is not None:
        info = group.info
    else:
        info = _info_or_none(first) if isinstance(items[0], BatchableOperation) else None
    if info is not None and info.fast and n > 1 and len(set(map(type, items))) == 1:
        # A list of operations of one class: one run of targets, copied at C speed.
        if group is None:
            group = groups[first] = Group(first, info, first)
        group.ops.extend(items)
        group.targets.append((join, 0, n))
        return None
    if items is struct and items.__class__ is list:
        # A snapshot: the generators of the structure start while it is
        # being walked, and one of them may change the list it came in.
        items = list(items)
    # While the structure is being built, its completion is not passed to
    # ``sink``: the caller takes the value from the return value instead.
    join.sink = HOLD
    core.building = (sink, index)  # where abort() finds the real waiter meanwhile
    children: list[list[Any]] = []
    # Generators are started right here, each up to its first yield, as
    # long as every one before it stopped at an operation: their
    # operations are queued after the structure's own (``parked``), which
    # is the order in which running them from the ready stack would queue
    # them, without the trip through it.  The first one that yields
    # something else, and all after it, run from the ready stack instead.
    parked_ops: list[Any] = []
    parked_tasks: list[list[Any]] = []
    # The class of the parked operations while they are all of one (known
    # to be fast); None once they are not.
    parked_class: Any = None
    # Parked children are stamped (SINCE) as they are made, in parking
    # order: the clock values _queue_parked would give them in turn.
    clock = core.clock
    # Locals, not globals: read once per item (see step()).
    VALUE, RESUME, SEND, TAKE, START = _START_NAMES
    send, GenType = _send, GeneratorType
    eager = True
    # The current level's children (registered in core.broods with its
    # join at the first one), and the enclosing levels to go back to.
    brood: list[list[Any]] | None = None
    outer: list[tuple[Join, Any, Any, int, list[list[Any]] | None]] = []
    run_group: Group | None = None
    run_start = 0
    start = 0  # where the current level goes on from
    while True:
        # (A level resumed after a nested one goes on from ``start``.)
        for i, item in enumerate(items[start:] if start else items, start):
            c = item.__class__
            if c is GenType:
                if run_group is not None:
                    run_group.targets.append((join, run_start, i - run_start))
                    run_group = None
                if item.gi_suspended or item.gi_frame is None or (core.unstarted and item in live):
                    # Started, finished, or the generator of a task not started
                    # yet (a root's, a shared generator's; a child queued to
                    # start is checked when it starts, see step()).
                    fill(join, i, reuse_error(gen, item, True), True, woken)
                    continue
                if item.__name__ == "<genexpr>":  # a generator expression: a mistake
                    fill(join, i, yielded_value_error(name_of(gen), item), True, woken)
                    continue
                if brood is None:
                    brood = core.brood(join)
                if not eager:
                    child = [item, ctx.copy(), None, join, i, gen, START, 0]
                    brood.append(child)
                    children.append(child)
                    continue
                # Registered before it first runs, stamped in case it parks (a
                # stamp left unused by a child that does not is only a gap).
                clock += 1
                child = [item, own := ctx.copy(), None, join, i, None, SEND, clock]
                brood.append(child)
                try:
                    y = own.run(send, item, None)
                except StopIteration as stop:
                    fill(join, i, stop.value, False, woken)
                except Exception as exc:
                    fill(join, i, exc, True, woken)
                else:
                    yc = y.__class__
                    if yc is not parked_class:
                        if yc in groups or (isinstance(y, BatchableOperation) and _is_fast(yc)):
                            parked_class = None if parked_tasks else yc
                        else:  # anything but a plain operation: taken up by step()
                            child[VALUE] = y
                            child[RESUME] = TAKE
                            children.append(child)
                            eager = False
                            continue
                    # Parked: queued when the structure is done, so its own
                    # operations (and their groups) come first.  (list.append
                    # called as a method: 3.11 specializes it, not a bound one.)
                    parked_ops.append(y)
                    parked_tasks.append(child)
                continue
            group = groups.get(c)
            info = None
            setting_error: BatchSettingError | None = None
            if group is None and isinstance(item, BatchableOperation):
                try:
                    info = op_info(c)
                except BatchSettingError as exc:  # a setting made invalid after the class was defined
                    setting_error = exc
                if info is not None and info.fast:
                    group = groups[c] = Group(c, info, c)
            if group is not None:
                if group is not run_group:
                    if run_group is not None:
                        run_group.targets.append((join, run_start, i - run_start))
                    run_group = group
                    run_start = i
                group.ops.append(item)
                continue
            if run_group is not None:
                run_group.targets.append((join, run_start, i - run_start))
                run_group = None
            nested: Any = None
            nested_settled = join.settled
            nested_single = False
            outcome: tuple[Any, bool] | None = None
            if setting_error is not None:
                outcome = setting_error, True
            elif info is not None:
                outcome = enqueue(core, item, info, (join, i, 1))
            elif isinstance(item, (list, tuple, dict)):
                nested = item
            elif isinstance(item, Settled):
                nested = item.value
                nested_settled = True
                if not isinstance(nested, (list, tuple, dict)):
                    nested, nested_single = [nested], True
            elif isinstance(item, SharedGenerator):
                outcome = wait_shared(core, item, join, i, ctx)
            else:
                place = f"key {keys[i]!r}" if isinstance(keys, list) else f"index {i}"
                where = f"a {type(struct).__qualname__} containing, at {place}, "
                outcome = (yielded_value_error(name_of(gen), item)
                           or yield_error(gen, item, where)), True
            if nested is not None:
                inner, inner_items, inner_keys = open_join(nested, join, i, nested_settled,
                                                           nested_single)
                if inner is None:
                    outcome = inner_items, False
                else:
                    outer.append((join, items, keys, i + 1, brood))
                    join, items, keys, start, n = inner, inner_items, inner_keys, 0, len(inner_items)
                    brood = None
                    break  # go on with the nested structure
            if outcome is not None:
                fill(join, i, outcome[0], outcome[1], woken)
        else:
            # The end of this level's items.
            if run_group is not None:
                run_group.targets.append((join, run_start, n - run_start))
                run_group = None
            if outer:
                # Back to the enclosing structure (a nested one that is
                # complete already passed its value up through fill()).
                join, items, keys, start, brood = outer.pop()
                n = len(items)
                continue
            if parked_tasks:
                core.clock = clock
                _queue_parked(core, parked_ops, parked_tasks, parked_class)
            if children:
                woken.extend(children)
            join.sink, join.index = sink, index
            core.building = None
            return join.result() if join.remaining == 0 else None


def _info_or_none(cls: type) -> OpInfo | None:
    """``op_info(cls)``, or None for a setting made invalid (the operation fails at its yield)."""
    try:
        return op_info(cls)
    except BatchSettingError:
        return None


def _is_fast(cls: type) -> bool:
    info = _info_or_none(cls)
    return info is not None and info.fast


def _queue_parked(core: Any, ops: list[Any], tasks: list[list[Any]], cls: Any) -> None:
    """Queue the operations that in-place started generators stopped at.

    ``ops[k]`` is what ``tasks[k]`` (stamped already) waits on; ``cls`` is
    their class when they are all of one (the common case: siblings yield
    alike), else None.
    """
    groups = core.groups
    if cls is not None:
        group = groups.get(cls)
        if group is None:
            group = groups[cls] = Group(cls, op_info(cls), cls)
        group.ops.extend(ops)
        group.targets.extend(tasks)
        return
    last: Any = None
    for op, task in zip(ops, tasks):
        cls = op.__class__
        if cls is not last:  # look the group up once a run
            last = cls
            group = groups.get(cls)
            if group is None:
                group = groups[cls] = Group(cls, op_info(cls), cls)
            add_op = group.ops.append
            add_target = group.targets.append
        add_op(op)
        add_target(task)


__all__ += ["wait_shared"]
_ = Task  # the task layout is documented in _tasks
