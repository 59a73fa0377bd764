"""The workloads written with aiodataloader (``pip install aiodataloader``), if installed.

One ``DataLoader`` per data source, made fresh for every sample inside the
running loop (its cache is per instance, as in a per-request setup), with
``load``/``load_many`` and ``asyncio.gather``; default options, so equal keys
are merged by the loader's cache (W4's dedupe).  W3 is a chain of awaits,
which Python runs recursively: deeper than the recursion limit it raises
``RecursionError``, and the harness reports that instead of a time.
Each sample runs in one event loop kept for the whole contender, so loop
creation is not timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from .store import Sizes, Store

__all__ = ["AVAILABLE", "VERSION", "WORKLOADS", "LoopRunner"]

Runner = Callable[[Store, Sizes], Any]


class LoopRunner:
    """Runs a coroutine function to completion in an event loop kept across samples."""

    def __init__(self, fn: Callable[[Store, Sizes], Coroutine[Any, Any, Any]]) -> None:
        self.fn = fn
        self.loop: asyncio.AbstractEventLoop | None = None
        self.__doc__ = fn.__doc__

    def __call__(self, store: Store, sizes: Sizes) -> Any:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(self.fn(store, sizes))

    def close(self) -> None:
        """Close the loop (a new one is made on the next call)."""
        if self.loop is not None:
            self.loop.close()
            self.loop = None


try:
    from aiodataloader import DataLoader
except ImportError:  # pragma: no cover  (the peers are optional)
    AVAILABLE = False
    VERSION = ""
    WORKLOADS: dict[str, Runner] = {}
else:
    from importlib.metadata import version as _version

    AVAILABLE = True
    VERSION = _version("aiodataloader")

    def _loader(fetch: Callable[[list[Any]], list[Any]]) -> DataLoader[Any, Any]:
        async def batch_load(keys: list[Any]) -> list[Any]:
            return fetch(keys)
        return DataLoader(batch_load)

    class _Loaders:
        def __init__(self, store: Store) -> None:
            self.values = _loader(store.values)
            self.users = _loader(store.users)
            self.friend_ids = _loader(store.friend_ids)
            self.names = _loader(store.names)

    async def d_w1(store: Store, sizes: Sizes) -> Any:
        loaders = _Loaders(store)
        return await loaders.values.load_many(range(sizes.w1_ops))

    async def d_name(loaders: _Loaders, friend_id: int) -> Any:
        return await loaders.names.load(friend_id)

    async def d_w2_root(loaders: _Loaders, user_id: int) -> Any:
        user = await loaders.users.load(user_id)
        ids = await loaders.friend_ids.load(user_id)
        names = await asyncio.gather(*[d_name(loaders, f) for f in ids])
        return user, names

    async def d_w2(store: Store, sizes: Sizes) -> Any:
        loaders = _Loaders(store)
        return await asyncio.gather(*[d_w2_root(loaders, i) for i in range(sizes.w2_roots)])

    async def d_chain(loaders: _Loaders, depth: int) -> Any:
        if depth == 0:
            return await loaders.values.load(0)
        return await d_chain(loaders, depth - 1)

    async def d_w3(store: Store, sizes: Sizes) -> Any:
        return await d_chain(_Loaders(store), sizes.w3_depth)

    async def d_w4_root(loaders: _Loaders, keys: int) -> Any:
        return await loaders.values.load_many(range(keys))

    async def d_w4(store: Store, sizes: Sizes) -> Any:
        loaders = _Loaders(store)
        return await asyncio.gather(*[d_w4_root(loaders, sizes.w4_keys)
                                      for _ in range(sizes.w4_roots)])

    WORKLOADS = {"W1": LoopRunner(d_w1), "W2": LoopRunner(d_w2),
                 "W3": LoopRunner(d_w3), "W4": LoopRunner(d_w4)}
