"""When things stop: finding every suspended generator, and generator cycles.

There is no registry of live tasks (it would cost two dict operations per
generator on the hot path).  When an execution is aborted, or nothing can
run while generators still wait, the tasks are found by climbing from what
can be waited on - runnable tasks, queued operations, batches in flight,
shared generators' waiters - which the core lists (``Core._leaves``).
"""

from __future__ import annotations

from typing import Any

from ._dispatch import Call
from ._errors import name_of
from ._sharing import SharedGenerator
from ._tasks import CTX, GEN, SINK, STACK, VALUE, Join, Task

__all__ = ["climb", "close_tasks", "find_cycle", "suspended_tasks"]


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


def suspended_tasks(leaves: list[Any]) -> list[list[Any]]:
    """Every unfinished task that waits behind ``leaves``, children before their waiters."""
    order: list[list[Any]] = []
    index: dict[int, int] = {}
    parents: list[list[int]] = []
    for leaf in leaves:
        child = -1
        for task in climb(leaf, stop_at_shared=False):
            k = index.get(id(task))
            known = k is not None
            if k is None:
                k = index[id(task)] = len(order)
                order.append(task)
                parents.append([])
            if child >= 0 and k not in parents[child]:
                parents[child].append(k)
            child = k
            if known:
                break
    # Kahn's algorithm: a task is closed once every task it waits on is.
    waiting_children = [0] * len(order)
    for ps in parents:
        for p in ps:
            waiting_children[p] += 1
    ready = [k for k in range(len(order)) if waiting_children[k] == 0]
    ready.reverse()
    closed = [False] * len(order)
    result: list[list[Any]] = []
    while ready:
        k = ready.pop()
        closed[k] = True
        result.append(order[k])
        for p in parents[k]:
            waiting_children[p] -= 1
            if waiting_children[p] == 0:
                ready.append(p)
    # Generators in a cycle wait on each other: close them in found order.
    result.extend(order[k] for k in range(len(order)) if not closed[k])
    return [t for t in result if t[GEN] is not None]


def close_tasks(tasks: list[list[Any]]) -> list[str]:
    """Close each task's generators, top of each chain first; what raised while closing."""
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
