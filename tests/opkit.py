"""Pieces shared by the operation-feature suites (test_operations, test_cache)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

Gen = Generator[Any, Any, Any]


def _eq(self: Any, other: Any) -> bool:
    return type(other) is type(self) and other.key == self.key


def _hash(self: Any) -> int:
    return hash(self.key)


# ``recorder.op(name, **EQ)``: operations equal when their keys are equal.
EQ: dict[str, Any] = {"__eq__": _eq, "__hash__": _hash}
# ``recorder.op(name, **CACHED)``: equal by key, results cached.
CACHED: dict[str, Any] = {**EQ, "cache_results": True}


class Blob:
    """A result object with identity (to check that waiters share one)."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Blob({self.key!r})"


def fail_bad(key: Any) -> Any:
    """Answer ``key`` upper-cased; a key starting with "bad" fails with a ValueError."""
    if str(key).startswith("bad"):
        return ValueError(f"no row {key}")
    return str(key).upper()


def gen_get(op: Any) -> Gen:
    return (yield op)
