"""When things stop: closing live generators, and finding generator cycles.

The tasks to close come from the core's registry of live tasks
(``Core.live``), so closing never depends on the state the executor was in
when it stopped.  Cycles are found by climbing from what can be waited on
(:func:`climb`) to the shared generators waiting behind it.
"""

from __future__ import annotations

from contextvars import Context
from typing import Any

from ._dispatch import Call
from ._errors import name_of
from ._sharing import SharedGenerator
from ._tasks import CTX, GEN, HOLD, SINK, STACK, VALUE, Join, Root, Task

__all__ = ["climb", "close_tasks", "closing_order", "find_cycle"]


def climb(start: Any, stop_at_shared: bool) -> list[Any]:
    """Everything that waits, directly or not, on ``start`` (a sink or target).

    Returns the tasks met (and, with ``stop_at_shared``, the shared
    generators at which the climb stopped instead of their waiters).
    """
    out: list[Any] = []
    stack = [start]
    seen: set[int] = set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        cls = x.__class__
        if cls is Task:
            out.append(x)
            stack.append(x[SINK])
        elif cls is Join:
            stack.append(x.sink)
        elif cls is tuple:  # a (join, offset, count) op target
            stack.append(x[0])
        elif cls is Call:
            stack.extend(reversed(x.dispatch.group.targets))
        elif isinstance(x, SharedGenerator):
            if stop_at_shared:
                out.append(x)
            else:
                stack.extend(reversed([w for w, _ in x._waiters]))
    return out


def closing_order(tasks: list[list[Any]], held: tuple[Any, int] | None) -> list[list[Any]]:
    """Live ``tasks`` (given in creation order) in the order to close them.

    Each task comes before the task that waits on it (innermost first), and
    siblings keep their creation order (program order).  Tasks that wait for
    nobody's task - roots, shared generators, layered batches - start the
    trees; shared generators and layered batches come first, newest first,
    because the tasks that wait on them are in the roots' trees.  ``held`` is
    the real waiter of the structure being started when things stopped (its
    join's sink is a placeholder then).  Iterative: no depth can recurse.
    """
    index = {id(t): k for k, t in enumerate(tasks)}
    children: list[list[int]] = [[] for _ in tasks]
    roots: list[int] = []
    inner: list[int] = []
    for k, task in enumerate(tasks):
        sink = task[SINK]
        while True:
            cls = sink.__class__
            if cls is Join:
                sink = sink.sink
            elif sink is HOLD and held is not None:
                sink = held[0]
            else:
                break
        p = index.get(id(sink), k) if cls is Task else k
        if p < k:
            children[p].append(k)
        elif isinstance(sink, Root) or sink is HOLD:
            roots.append(k)
        else:
            inner.append(k)
    order: list[list[Any]] = []
    for start in [*reversed(inner), *roots]:
        stack = [(start, 0)]
        while stack:
            node, i = stack[-1]
            if i < len(children[node]):
                stack[-1] = (node, i + 1)
                stack.append((children[node][i], 0))
            else:
                stack.pop()
                order.append(tasks[node])
    return order


def close_tasks(tasks: list[list[Any]], problems: list[str] | None = None) -> list[str]:
    """Close each task's generators, top of each chain first; what raised while closing.

    Appends to ``problems`` (a new list if None) and returns it.  A
    ``BaseException`` that arrives while closing (a ``KeyboardInterrupt`` in a
    ``finally`` block, or between two closes) is raised once every generator
    has been closed: an interrupt never leaves the rest open.
    """
    if problems is None:
        problems = []
    interrupted: BaseException | None = None
    for task in tasks:
        # (generator, its context) pairs, top first.  The chain alternates
        # generator and context, but an interrupt between the two steps of a
        # push or a pop (see step) can leave one out: each generator is paired
        # with the first context above it, which is its own or, for a
        # generator that has ended, its parent's.
        chain: list[tuple[Any, Any]] = []
        ctx = None
        for x in reversed([*(task[STACK] or ()), task[GEN], task[CTX]]):
            if x.__class__ is Context:
                ctx = x
            elif x is not None:
                chain.append((x, ctx))
        task[GEN] = task[CTX] = task[STACK] = task[VALUE] = None
        for gen, ctx in chain:
            try:
                if ctx is not None and gen.gi_frame is not None:
                    ctx.run(gen.close)
                else:
                    gen.close()
            except Exception as err:  # a finally block raised while closing
                problems.append(f"closing {name_of(gen)} raised {type(err).__name__}: {err}")
            except BaseException as err:  # an interrupt: close the rest first
                if interrupted is None:
                    interrupted = err
    if interrupted is not None:
        try:
            raise interrupted
        finally:
            del interrupted  # (the traceback would keep this frame, and the frame it)
    return problems


def find_cycle(nodes: list[SharedGenerator[Any]],
               waits: dict[int, list[tuple[SharedGenerator[Any], Any]]]) -> list[Any]:
    """A cycle in the waits-on graph of shared generators: [(a, b, entry), ...]."""
    state: dict[int, int] = {}  # 1 on the current path, 2 done
    for start in nodes:
        if id(start) in state:
            continue
        path: list[tuple[SharedGenerator[Any], SharedGenerator[Any], Any]] = []
        stack = [(start, iter(waits.get(id(start), ())))]
        state[id(start)] = 1
        while stack:
            node, edges = stack[-1]
            for b, entry in edges:
                mark = state.get(id(b), 0)
                if mark == 1:
                    path.append((node, b, entry))
                    first = next(k for k, (a, _, _) in enumerate(path) if a is b)
                    return path[first:]
                if mark == 0:
                    state[id(b)] = 1
                    path.append((node, b, entry))
                    stack.append((b, iter(waits.get(id(b), ()))))
                    break
            else:
                state[id(node)] = 2
                stack.pop()
                if path:
                    path.pop()
    return []
