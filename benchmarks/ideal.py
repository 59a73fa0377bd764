"""The "ideal" plain loops: the minimal batch calls made by hand, no generators.

Each function makes exactly the calls a perfect batcher would make and
builds the same result the generator versions return.  Its time is the
data-store work plus the least possible bookkeeping; the harness subtracts
it from every contender, so what remains is the cost of the framework.
"""

from __future__ import annotations

from typing import Any

from .store import Sizes, Store

__all__ = ["w1", "w2", "w3", "w4"]


def w1(store: Store, sizes: Sizes) -> list[int]:
    """One call with every key."""
    return store.values(list(range(sizes.w1_ops)))


def w2(store: Store, sizes: Sizes) -> list[tuple[Any, list[str]]]:
    """Three calls: users, friend ids, all friends' names; then (user, names) per root."""
    ids = list(range(sizes.w2_roots))
    users = store.users(ids)
    friend_ids = store.friend_ids(ids)
    names = store.names([f for fids in friend_ids for f in fids])
    out: list[tuple[Any, list[str]]] = []
    pos = 0
    for user, fids in zip(users, friend_ids):
        end = pos + len(fids)
        out.append((user, names[pos:end]))
        pos = end
    return out


def w3(store: Store, sizes: Sizes) -> int:
    """The one operation at the bottom of the chain."""
    return store.values([0])[0]


def w4(store: Store, sizes: Sizes) -> list[list[int]]:
    """One call of the distinct keys; every root gets its own list of the values."""
    values = store.values(list(range(sizes.w4_keys)))
    return [list(values) for _ in range(sizes.w4_roots)]
