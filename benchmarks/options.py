"""What the executor's options cost: W2 run with each option, against plain ``execute_many``.

- ``trace=None`` passed explicitly next to no ``trace=`` at all: tracing
  costs nothing when it is off.
- ``trace=Trace()``: recording every round and batch.
- ``cache=OperationCache()``: the operation classes do not set
  ``cache_results``, so this is only the cost of having a cache passed in.
- ``max_workers=4``: W2 has one group per round, so the thread pool is not
  used; this is the cost of the option's bookkeeping.
- ``execute_many_async``: the same generators with ``async def run_batch``
  classes (and, for comparison, with the sync classes) in an event loop
  that is kept across samples.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import batch

from .harness import Entry
from .store import Sizes, Store
from .with_aiodataloader import LoopRunner
from .with_batch import STORES, gen_w2

__all__ = ["BASE", "entries"]

BASE = "batch execute_many"


def _store() -> Store:
    store = STORES.store
    assert store is not None, "benchmarks: no store set for this sample"
    return store


class AGetUser(batch.BatchableOperation[Any]):
    """W2 round 1, async ``run_batch``."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    @classmethod
    async def run_batch(cls, operations: list[AGetUser]) -> list[Any]:
        return _store().users([op.key for op in operations])


class AGetFriendIds(batch.BatchableOperation[list[int]]):
    """W2 round 2, async ``run_batch``."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    @classmethod
    async def run_batch(cls, operations: list[AGetFriendIds]) -> list[list[int]]:
        return _store().friend_ids([op.key for op in operations])


class AGetName(batch.BatchableOperation[str]):
    """W2 round 3, async ``run_batch``."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    @classmethod
    async def run_batch(cls, operations: list[AGetName]) -> list[str]:
        return _store().names([op.key for op in operations])


def gen_name_async(friend_id: int) -> Generator[Any, Any, str]:
    """W2's name sub-generator with the async operation class."""
    name: str = yield AGetName(friend_id)
    return name


def gen_w2_async(user_id: int) -> Generator[Any, Any, tuple[Any, list[str]]]:
    """W2's root with the async operation classes."""
    user = yield AGetUser(user_id)
    ids = yield AGetFriendIds(user_id)
    names: list[str] = yield [gen_name_async(f) for f in ids]
    return user, names


def _roots(sizes: Sizes) -> list[Generator[Any, Any, Any]]:
    return [gen_w2(i) for i in range(sizes.w2_roots)]


def plain(store: Store, sizes: Sizes) -> Any:
    """``execute_many(roots)``."""
    STORES.store = store
    return batch.execute_many(_roots(sizes))


def trace_none(store: Store, sizes: Sizes) -> Any:
    """``execute_many(roots, trace=None)``."""
    STORES.store = store
    return batch.execute_many(_roots(sizes), trace=None)


def trace_on(store: Store, sizes: Sizes) -> Any:
    """``execute_many(roots, trace=Trace())``."""
    STORES.store = store
    return batch.execute_many(_roots(sizes), trace=batch.Trace())


def cache_passed(store: Store, sizes: Sizes) -> Any:
    """``execute_many(roots, cache=OperationCache())`` (no class caches results)."""
    STORES.store = store
    return batch.execute_many(_roots(sizes), cache=batch.OperationCache())


def workers(store: Store, sizes: Sizes) -> Any:
    """``execute_many(roots, max_workers=4)``."""
    STORES.store = store
    return batch.execute_many(_roots(sizes), max_workers=4)


async def async_ops(store: Store, sizes: Sizes) -> Any:
    """``await execute_many_async(roots)`` with ``async def run_batch``."""
    STORES.store = store
    return await batch.execute_many_async([gen_w2_async(i) for i in range(sizes.w2_roots)])


async def async_sync_ops(store: Store, sizes: Sizes) -> Any:
    """``await execute_many_async(roots)`` with the plain sync ``run_batch``."""
    STORES.store = store
    return await batch.execute_many_async(_roots(sizes))


def entries(ideal: Entry) -> list[Entry]:
    """The option-cost contenders, the ideal W2 loop first."""
    return [
        ideal,
        Entry(BASE, plain),
        Entry("trace=None (passed)", trace_none),
        Entry("trace=Trace()", trace_on),
        Entry("cache=OperationCache()", cache_passed),
        Entry("max_workers=4", workers),
        Entry("execute_many_async, async ops", LoopRunner(async_ops)),
        Entry("execute_many_async, sync ops", LoopRunner(async_sync_ops)),
    ]
