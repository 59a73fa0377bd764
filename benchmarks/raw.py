"""Raw generators driven by hand: the floor for any generator framework.

The generators have the same shapes as the ``batch`` versions and yield the
same kind of operation objects (plain classes with ``__slots__``), but each
workload has its own hand-written driver: a loop of ``send()`` calls that
knows the workload's shape and batches by hand.  No framework can do less
work per generator step, so the harness reports every contender's overhead
as a multiple of this one.
"""

from __future__ import annotations

from collections.abc import Generator
from types import GeneratorType
from typing import Any

from .store import Sizes, Store

__all__ = ["w1", "w2", "w3", "w4"]


class Get:
    """A read of one key."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key


class GetUser(Get):
    """W2 round 1."""

    __slots__ = ()


class GetFriendIds(Get):
    """W2 round 2."""

    __slots__ = ()


class GetName(Get):
    """W2 round 3."""

    __slots__ = ()


class GetValue(Get):
    """W4: equal keys are equal operations (dedupe by ``==``/``hash``, as a framework must)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other.__class__ is GetValue and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


# -- W1 ------------------------------------------------------------------------

def gen_w1(n: int) -> Generator[Any, Any, list[int]]:
    """One yield of n operations."""
    values: list[int] = yield [Get(k) for k in range(n)]
    return values


def w1(store: Store, sizes: Sizes) -> list[int]:
    """Drive gen_w1: one send for the list, one call, one send back."""
    gen = gen_w1(sizes.w1_ops)
    ops = gen.send(None)
    values = store.values([op.key for op in ops])
    try:
        gen.send(values)
    except StopIteration as stop:
        result: list[int] = stop.value
        return result
    raise AssertionError("gen_w1 did not finish")


# -- W2 ------------------------------------------------------------------------

def gen_name(friend_id: int) -> Generator[Any, Any, str]:
    """A sub-generator per friend."""
    name: str = yield GetName(friend_id)
    return name


def gen_w2(user_id: int) -> Generator[Any, Any, tuple[Any, list[str]]]:
    """User, then friend ids, then every friend's name through a sub-generator."""
    user = yield GetUser(user_id)
    ids = yield GetFriendIds(user_id)
    names: list[str] = yield [gen_name(f) for f in ids]
    return user, names


def w2(store: Store, sizes: Sizes) -> list[tuple[Any, list[str]]]:
    """Three hand-batched rounds over all roots."""
    roots = [gen_w2(i) for i in range(sizes.w2_roots)]
    ops = [g.send(None) for g in roots]
    users = store.users([op.key for op in ops])
    ops = [g.send(u) for g, u in zip(roots, users)]
    friend_ids = store.friend_ids([op.key for op in ops])
    # Round 3: each root yields a list of sub-generators; start them all,
    # batch their operations, then finish them and hand each root its list.
    children = [g.send(ids) for g, ids in zip(roots, friend_ids)]
    name_ops = [child.send(None) for kids in children for child in kids]
    names = store.names([op.key for op in name_ops])
    out: list[tuple[Any, list[str]]] = []
    pos = 0
    for g, kids in zip(roots, children):
        results = []
        for child in kids:
            try:
                child.send(names[pos])
            except StopIteration as stop:
                results.append(stop.value)
            pos += 1
        try:
            g.send(results)
        except StopIteration as stop:
            out.append(stop.value)
    return out


# -- W3 ------------------------------------------------------------------------

def gen_chain(depth: int) -> Generator[Any, Any, int]:
    """Each level yields the next; the bottom one yields an operation."""
    if depth == 0:
        value: int = yield Get(0)
        return value
    value = yield gen_chain(depth - 1)
    return value


def w3(store: Store, sizes: Sizes) -> int:
    """An explicit stack of suspended generators (no recursion)."""
    stack: list[Generator[Any, Any, int]] = []
    gen = gen_chain(sizes.w3_depth)
    value: Any = None
    while True:
        try:
            y = gen.send(value)
        except StopIteration as stop:
            value = stop.value
            if not stack:
                result: int = value
                return result
            gen = stack.pop()
            continue
        if y.__class__ is GeneratorType:
            stack.append(gen)
            gen = y
            value = None
        else:
            value = store.values([y.key])[0]


# -- W4 ------------------------------------------------------------------------

def gen_w4(keys: int) -> Generator[Any, Any, list[int]]:
    """Yields the same ``keys`` operations as every other root."""
    values: list[int] = yield [GetValue(k) for k in range(keys)]
    return values


def w4(store: Store, sizes: Sizes) -> list[list[int]]:
    """Dedupe every root's operations by equality, one call, hand each root its list."""
    roots = [gen_w4(sizes.w4_keys) for _ in range(sizes.w4_roots)]
    slot: dict[GetValue, int] = {}
    uniq: list[int] = []
    positions: list[list[int]] = []
    for g in roots:
        where = []
        for op in g.send(None):
            i = slot.get(op)
            if i is None:
                i = slot[op] = len(uniq)
                uniq.append(op.key)
            where.append(i)
        positions.append(where)
    values = store.values(uniq)
    out: list[list[int]] = []
    for g, where in zip(roots, positions):
        try:
            g.send([values[i] for i in where])
        except StopIteration as stop:
            out.append(stop.value)
    return out
