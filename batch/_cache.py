"""The operation result cache (``cache_results = True``)."""

from __future__ import annotations

import threading
from typing import Any

from ._operation import BatchableOperation

__all__ = ["OperationCache", "InFlight", "MISSING"]

MISSING: Any = object()


class InFlight:
    """Cache placeholder for an operation that was sent and has no result yet.

    Equal operations yielded meanwhile wait on it instead of being sent
    again: those of the same execution in ``followers``, those of other
    executions sharing the cache (other threads, or other tasks of the same
    event loop) in ``foreign``.  ``owner`` is the execution that sent it.
    """

    __slots__ = ("owner", "followers", "foreign", "lock")

    def __init__(self, owner: Any) -> None:
        self.owner: Any = owner
        self.followers: list[Any] = []
        # Waiters of other executions sharing the cache: (run, target, op, info);
        # None once the owner answered.  Other threads touch it: under ``lock``.
        self.foreign: list[Any] | None = []
        self.lock = threading.Lock()

    def wait(self, run: Any, target: Any, op: Any, info: Any) -> bool:
        """Register another execution's waiter; False if the answer is already out."""
        with self.lock:
            if self.foreign is None:
                return False
            self.foreign.append((run, target, op, info))
            return True

    def close(self) -> list[Any]:
        """The owner answers (or gives up): the waiters to tell, once."""
        with self.lock:
            foreign, self.foreign = self.foreign, None
        return foreign or []


class OperationCache:
    """Results of operations whose class sets ``cache_results = True``.

    Without ``cache=``, every execution gets a fresh one; pass one cache to
    several executions (say one per web request) to share results across
    them.  Entries are keyed by the operation's class and the operation
    itself (``==``/``hash``), so equal-looking operations of two classes never
    collide.  A per-operation failure (an exception instance returned by
    ``run_batch``) is cached like a value; a ``run_batch`` call that raised is
    not.

    >>> cache = OperationCache()
    >>> len(cache)
    0
    """

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[tuple[type, Any], Any] = {}

    @staticmethod
    def _key(op: BatchableOperation[Any]) -> tuple[type, Any]:
        cls = type(op)
        if not isinstance(op, BatchableOperation):
            raise TypeError(
                f"OperationCache keys are BatchableOperation instances, not {cls.__qualname__}"
            )
        if not cls.cache_results:
            raise ValueError(
                f"{cls.__qualname__} has cache_results = False, so the executor never "
                f"consults the cache for it; set cache_results = True on the class"
            )
        return (cls, op)

    def prime(self, op: BatchableOperation[Any], value: Any) -> None:
        """Store ``value`` as ``op``'s result unless it already has one.

        An ``Exception`` instance primes a failure.  Priming never overwrites:
        call :meth:`forget` first to replace an entry.
        """
        key = self._key(op)
        current = self._data.get(key, MISSING)
        if current is MISSING or isinstance(current, InFlight):
            # An in-flight placeholder is replaced: the primed value wins, and
            # the execution that sent the operation still gets its own answer.
            self._data[key] = value

    def forget(self, op: BatchableOperation[Any]) -> None:
        """Drop ``op``'s entry, if any; the next equal operation is sent again."""
        self._data.pop(self._key(op), None)

    def clear(self) -> None:
        """Drop every entry."""
        self._data.clear()

    def get(self, op: BatchableOperation[Any], default: Any = None) -> Any:
        """Return the cached result of ``op`` (an exception for a failure), or ``default``."""
        value = self._data.get(self._key(op), MISSING)
        if value is MISSING or isinstance(value, InFlight):
            return default
        return value

    def __contains__(self, op: object) -> bool:
        if not isinstance(op, BatchableOperation):
            return False
        value = self._data.get((type(op), op), MISSING)
        return value is not MISSING and not isinstance(value, InFlight)

    def __len__(self) -> int:
        return sum(1 for v in self._data.values() if not isinstance(v, InFlight))

    def __repr__(self) -> str:
        return f"<OperationCache with {len(self)} entries>"
