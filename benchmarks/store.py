"""The workloads' sizes and the in-memory data store every contender calls.

Every contender (the ideal loop, raw generators, ``batch`` and the peers)
sends its batches to the same :class:`Store` methods, so the data-store work
is identical for all of them and cancels out when the ideal loop's time is
subtracted.  Each method counts the calls and the keys it received: that is
how the harness reports "batch calls" and "keys sent" for every contender.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FULL", "QUICK", "Sizes", "Store"]


@dataclass(frozen=True)
class Sizes:
    """How big each workload is."""

    w1_ops: int = 100_000
    w2_roots: int = 1_000
    w2_friends: int = 10
    w3_depth: int = 10_000
    w4_roots: int = 10_000
    w4_keys: int = 100
    w5_posts: int = 20
    w5_comments: int = 5
    w5_latency_ms: float = 1.0
    w6_requests: int = 10_000

    def ops(self, workload: str) -> int:
        """Number of operations (W3: nesting levels) that per-op figures divide by."""
        if workload == "W1":
            return self.w1_ops
        if workload == "W2":
            return self.w2_roots * (2 + self.w2_friends)
        if workload == "W3":
            return self.w3_depth
        if workload == "W4":
            return self.w4_roots * self.w4_keys
        raise ValueError(f"unknown workload {workload!r}")

    def as_dict(self) -> dict[str, Any]:
        """The sizes as plain JSON-able values."""
        return asdict(self)


FULL = Sizes()
# W3 stays deeper than the default recursion limit (1000) so that the
# RecursionError path of recursive peers is exercised by the smoke run too.
QUICK = Sizes(w1_ops=2_000, w2_roots=40, w3_depth=1_500, w4_roots=200, w4_keys=20,
              w5_posts=4, w5_comments=2, w5_latency_ms=0.2, w6_requests=500)


class Store:
    """Cheap in-memory tables; every method takes a list of keys, returns a list of values.

    ``calls`` counts method calls, ``keys`` the keys received, ``batches``
    the size of each call in order.
    """

    def __init__(self, sizes: Sizes) -> None:
        n_users = max(sizes.w2_roots, 1)
        friends = sizes.w2_friends
        self._users = {i: ("user", i) for i in range(n_users)}
        # Friend ids are distinct across users so that no contender's cache can
        # merge name loads: every contender sends the same 12 * roots keys.
        self._friend_ids = {i: [i * friends + j for j in range(friends)] for i in range(n_users)}
        self._names = {f: f"name{f}" for f in range(n_users * friends)}
        n_values = max(sizes.w1_ops, sizes.w4_keys, 1)
        self._values = {k: k * 3 + 1 for k in range(n_values)}
        self.calls = 0
        self.keys = 0
        self.batches: list[int] = []

    def reset(self) -> None:
        """Zero the counters before a sample."""
        self.calls = 0
        self.keys = 0
        self.batches = []

    def _count(self, keys: list[Any]) -> None:
        self.calls += 1
        self.keys += len(keys)
        self.batches.append(len(keys))

    def values(self, keys: list[int]) -> list[int]:
        """W1, W3, W4: one int per key."""
        self._count(keys)
        table = self._values
        return [table[k] for k in keys]

    def users(self, keys: list[int]) -> list[tuple[str, int]]:
        """W2 round 1: a user record per id."""
        self._count(keys)
        table = self._users
        return [table[k] for k in keys]

    def friend_ids(self, keys: list[int]) -> list[list[int]]:
        """W2 round 2: the friend ids of each user."""
        self._count(keys)
        table = self._friend_ids
        return [table[k] for k in keys]

    def names(self, keys: list[int]) -> list[str]:
        """W2 round 3: a name per friend id."""
        self._count(keys)
        table = self._names
        return [table[k] for k in keys]
