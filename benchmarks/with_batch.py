"""The workloads written with ``batch``, as a user would write them.

Operations are plain :class:`batch.BatchableOperation` subclasses with
``__slots__`` (W4's adds ``__eq__``/``__hash__`` and ``dedupe = True``);
their ``run_batch`` calls the shared :class:`~benchmarks.store.Store`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, ClassVar

import batch

from .store import Sizes, Store

__all__ = ["w1", "w2", "w3", "w4", "gen_w2", "STORES"]


class _Holder:
    """The store of the sample being run (``run_batch`` is a classmethod)."""

    store: Store | None = None


STORES = _Holder()


def _store() -> Store:
    store = STORES.store
    assert store is not None, "benchmarks: no store set for this sample"
    return store


class Get(batch.BatchableOperation[int]):
    """A read of one value (W1, W3)."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    @classmethod
    def run_batch(cls, operations: list[Get]) -> list[int]:
        return _store().values([op.key for op in operations])


class GetUser(batch.BatchableOperation[Any]):
    """W2 round 1."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    @classmethod
    def run_batch(cls, operations: list[GetUser]) -> list[Any]:
        return _store().users([op.key for op in operations])


class GetFriendIds(batch.BatchableOperation[list[int]]):
    """W2 round 2."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    @classmethod
    def run_batch(cls, operations: list[GetFriendIds]) -> list[list[int]]:
        return _store().friend_ids([op.key for op in operations])


class GetName(batch.BatchableOperation[str]):
    """W2 round 3."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    @classmethod
    def run_batch(cls, operations: list[GetName]) -> list[str]:
        return _store().names([op.key for op in operations])


class GetValue(batch.BatchableOperation[int]):
    """W4: equal operations are sent once per round."""

    __slots__ = ("key",)
    dedupe: ClassVar[bool] = True

    def __init__(self, key: int) -> None:
        self.key = key

    def __eq__(self, other: object) -> bool:
        return other.__class__ is GetValue and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    @classmethod
    def run_batch(cls, operations: list[GetValue]) -> list[int]:
        return _store().values([op.key for op in operations])


# -- generators ----------------------------------------------------------------

def gen_w1(n: int) -> Generator[Any, Any, list[int]]:
    """One yield of n operations."""
    values: list[int] = yield [Get(k) for k in range(n)]
    return values


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


def gen_chain(depth: int) -> Generator[Any, Any, int]:
    """Each level yields the next; the bottom one yields an operation."""
    if depth == 0:
        value: int = yield Get(0)
        return value
    value = yield gen_chain(depth - 1)
    return value


def gen_w4(keys: int) -> Generator[Any, Any, list[int]]:
    """Yields the same ``keys`` operations as every other root."""
    values: list[int] = yield [GetValue(k) for k in range(keys)]
    return values


# -- runners ---------------------------------------------------------------------

def _with_store(fn: Callable[[Sizes], Any]) -> Callable[[Store, Sizes], Any]:
    def run(store: Store, sizes: Sizes) -> Any:
        STORES.store = store
        try:
            return fn(sizes)
        finally:
            STORES.store = None
    run.__doc__ = fn.__doc__
    return run


@_with_store
def w1(sizes: Sizes) -> Any:
    """``execute`` one root."""
    return batch.execute(gen_w1(sizes.w1_ops))


@_with_store
def w2(sizes: Sizes) -> Any:
    """``execute_many`` over every root."""
    return batch.execute_many([gen_w2(i) for i in range(sizes.w2_roots)])


@_with_store
def w3(sizes: Sizes) -> Any:
    """``execute`` the top of the chain."""
    return batch.execute(gen_chain(sizes.w3_depth))


@_with_store
def w4(sizes: Sizes) -> Any:
    """``execute_many`` over every root; dedupe makes one call of the distinct keys."""
    return batch.execute_many([gen_w4(sizes.w4_keys) for _ in range(sizes.w4_roots)])
