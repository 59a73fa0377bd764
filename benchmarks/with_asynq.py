"""The workloads written with quora/asynq (``pip install asynq``), if installed.

asynq batches through futures: a ``BatchItemBase`` joins the *active*
``BatchBase`` of its data source, and the scheduler flushes a batch when no
task can run.  Each data source here keeps one active batch; ``_flush``
sends the keys of all its items to the shared store in one call.  W4 dedupes
where asynq leaves it, in the batch implementation: every request is an item
(as every ``batch`` operation is an object), and ``_flush`` sends each
distinct key once and gives its value to every item that asked.  Several
roots are one parent task that yields them all (asynq has no multi-root
entry point).  asynq runs with its default debug options, as installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .store import Sizes, Store

__all__ = ["AVAILABLE", "VERSION", "WORKLOADS"]

Runner = Callable[[Store, Sizes], Any]

try:
    import asynq
    from asynq import BatchBase, BatchItemBase
except ImportError:  # pragma: no cover  (the peers are optional)
    AVAILABLE = False
    VERSION = ""
    WORKLOADS: dict[str, Runner] = {}
else:
    from importlib.metadata import version as _version

    AVAILABLE = True
    VERSION = _version("asynq")

    class _Source:
        """One data source: a store method and its active batch."""

        def __init__(self, fetch: Callable[[list[Any]], list[Any]], dedupe: bool = False) -> None:
            self.fetch = fetch
            self.dedupe = dedupe
            self.batch = _Batch(self)

        def get(self, key: Any) -> _Item:
            return _Item(self.batch, key)

    class _Batch(BatchBase):  # type: ignore[type-arg]
        def __init__(self, source: _Source) -> None:
            BatchBase.__init__(self)
            self.source = source

        def _try_switch_active_batch(self) -> None:
            if self.source.batch is self:
                self.source.batch = _Batch(self.source)

        def _flush(self) -> None:
            items = self.items
            if self.source.dedupe:
                slot: dict[Any, int] = {}
                for item in items:
                    slot.setdefault(item.key, len(slot))
                values = self.source.fetch(list(slot))
                for item in items:
                    item.set_value(values[slot[item.key]])
                return
            values = self.source.fetch([item.key for item in items])
            for item, value in zip(items, values):
                item.set_value(value)

        def _cancel(self) -> None:
            pass

    class _Item(BatchItemBase):
        def __init__(self, batch: _Batch, key: Any) -> None:
            BatchItemBase.__init__(self, batch)
            self.key = key

    class _Sources:
        def __init__(self, store: Store) -> None:
            self.values = _Source(store.values)
            self.unique_values = _Source(store.values, dedupe=True)
            self.users = _Source(store.users)
            self.friend_ids = _Source(store.friend_ids)
            self.names = _Source(store.names)

    @asynq.asynq()
    def a_w1(src: _Sources, n: int) -> Any:
        values = yield [src.values.get(k) for k in range(n)]
        return values

    @asynq.asynq()
    def a_name(src: _Sources, friend_id: int) -> Any:
        name = yield src.names.get(friend_id)
        return name

    @asynq.asynq()
    def a_w2(src: _Sources, user_id: int) -> Any:
        user = yield src.users.get(user_id)
        ids = yield src.friend_ids.get(user_id)
        names = yield [a_name.asynq(src, f) for f in ids]
        return user, names

    @asynq.asynq()
    def a_w2_all(src: _Sources, roots: int) -> Any:
        out = yield [a_w2.asynq(src, i) for i in range(roots)]
        return out

    @asynq.asynq()
    def a_chain(src: _Sources, depth: int) -> Any:
        if depth == 0:
            value = yield src.values.get(0)
            return value
        value = yield a_chain.asynq(src, depth - 1)
        return value

    @asynq.asynq()
    def a_w4(src: _Sources, keys: int) -> Any:
        values = yield [src.unique_values.get(k) for k in range(keys)]
        return values

    @asynq.asynq()
    def a_w4_all(src: _Sources, roots: int, keys: int) -> Any:
        out = yield [a_w4.asynq(src, keys) for _ in range(roots)]
        return out

    def _w1(store: Store, sizes: Sizes) -> Any:
        return a_w1(_Sources(store), sizes.w1_ops)

    def _w2(store: Store, sizes: Sizes) -> Any:
        return a_w2_all(_Sources(store), sizes.w2_roots)

    def _w3(store: Store, sizes: Sizes) -> Any:
        return a_chain(_Sources(store), sizes.w3_depth)

    def _w4(store: Store, sizes: Sizes) -> Any:
        return a_w4_all(_Sources(store), sizes.w4_roots, sizes.w4_keys)

    WORKLOADS = {"W1": _w1, "W2": _w2, "W3": _w3, "W4": _w4}
