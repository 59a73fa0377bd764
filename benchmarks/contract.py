"""Raw generators plus what ``batch``'s contract requires of every generator: a floor.

The hand-written drivers of :mod:`benchmarks.raw`, with two things added
that ``../shared/DESIGN.md`` asks of any executor, and nothing else:

- each generator runs in a ``contextvars.Context`` of its own, copied from
  its creator's when it starts (section 6), so every ``send`` goes through
  ``Context.run``;
- each yielded generator is checked to be fresh (not suspended, not
  finished) before it starts: a generator may be yielded only once
  (section 5).

No grouping, no joins, no task records: the drivers still know each
workload's shape.  ``batch``'s overhead beyond this row is the cost of
being general; the part of its ratio that this row accounts for is the cost
of the contract itself, which no conforming executor avoids.
"""

from __future__ import annotations

import contextvars
from collections.abc import Generator
from types import GeneratorType
from typing import Any

from .raw import GetValue, gen_chain, gen_w1, gen_w2, gen_w4
from .store import Sizes, Store

__all__ = ["w1", "w2", "w3", "w4"]

_send: Any = GeneratorType.send


def _fresh(gen: Any) -> None:
    """The check a framework makes before it starts a yielded generator."""
    if gen.gi_suspended or gen.gi_frame is None:
        raise AssertionError(f"{gen.__qualname__} was yielded twice")


def w1(store: Store, sizes: Sizes) -> list[int]:
    """One generator, in a context of its own."""
    gen = gen_w1(sizes.w1_ops)
    _fresh(gen)
    ctx = contextvars.copy_context()
    ops = ctx.run(_send, gen, None)
    values = store.values([op.key for op in ops])
    try:
        ctx.run(_send, gen, values)
    except StopIteration as stop:
        result: list[int] = stop.value
        return result
    raise AssertionError("gen_w1 did not finish")


def w2(store: Store, sizes: Sizes) -> list[tuple[Any, list[str]]]:
    """Three hand-batched rounds; every root and every name sub-generator has its own context."""
    roots = [gen_w2(i) for i in range(sizes.w2_roots)]
    contexts = []
    for g in roots:
        _fresh(g)
        contexts.append(contextvars.copy_context())
    ops = [ctx.run(_send, g, None) for g, ctx in zip(roots, contexts)]
    users = store.users([op.key for op in ops])
    ops = [ctx.run(_send, g, u) for g, ctx, u in zip(roots, contexts, users)]
    friend_ids = store.friend_ids([op.key for op in ops])
    children: list[list[Generator[Any, Any, str]]] = [
        ctx.run(_send, g, ids) for g, ctx, ids in zip(roots, contexts, friend_ids)]
    child_contexts: list[list[contextvars.Context]] = []
    name_ops = []
    for ctx, kids in zip(contexts, children):
        own_contexts = []
        for child in kids:
            _fresh(child)
            own = ctx.copy()
            own_contexts.append(own)
            name_ops.append(own.run(_send, child, None))
        child_contexts.append(own_contexts)
    names = store.names([op.key for op in name_ops])
    out: list[tuple[Any, list[str]]] = []
    pos = 0
    for g, ctx, kids, own_contexts in zip(roots, contexts, children, child_contexts):
        results = []
        for child, own in zip(kids, own_contexts):
            try:
                own.run(_send, child, names[pos])
            except StopIteration as stop:
                results.append(stop.value)
            pos += 1
        try:
            ctx.run(_send, g, results)
        except StopIteration as stop:
            out.append(stop.value)
    return out


def w3(store: Store, sizes: Sizes) -> int:
    """An explicit stack of suspended generators, each level in a copy of its parent's context."""
    stack: list[Any] = []  # flat: gen, ctx, gen, ctx, ... (no tuple per level)
    gen = gen_chain(sizes.w3_depth)
    _fresh(gen)
    ctx = contextvars.copy_context()
    value: Any = None
    while True:
        try:
            y = ctx.run(_send, gen, value)
        except StopIteration as stop:
            value = stop.value
            if not stack:
                result: int = value
                return result
            ctx = stack.pop()
            gen = stack.pop()
            continue
        if y.__class__ is GeneratorType:
            _fresh(y)
            stack.append(gen)
            stack.append(ctx)
            gen = y
            ctx = ctx.copy()
            value = None
        else:
            value = store.values([y.key])[0]


def w4(store: Store, sizes: Sizes) -> list[list[int]]:
    """Dedupe by equality, one call; every root in a context of its own."""
    roots = [gen_w4(sizes.w4_keys) for _ in range(sizes.w4_roots)]
    contexts = []
    slot: dict[GetValue, int] = {}
    uniq: list[int] = []
    positions: list[list[int]] = []
    for g in roots:
        _fresh(g)
        ctx = contextvars.copy_context()
        contexts.append(ctx)
        where = []
        for op in ctx.run(_send, g, None):
            i = slot.get(op)
            if i is None:
                i = slot[op] = len(uniq)
                uniq.append(op.key)
            where.append(i)
        positions.append(where)
    values = store.values(uniq)
    out: list[list[int]] = []
    for g, ctx, where in zip(roots, contexts, positions):
        try:
            ctx.run(_send, g, [values[i] for i in where])
        except StopIteration as stop:
            out.append(stop.value)
    return out

