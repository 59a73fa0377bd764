"""Batch functions that the Redis tests serve with ``python -m batch worker tests.redis_targets:NAME``.

Most answer ``[item, worker pid, batch size]`` so that a test sees which
worker served a request and in how big a batch.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import batch


def echo(items: list[Any]) -> list[Any]:
    """``[item, pid, len(items)]`` per item."""
    return [[item, os.getpid(), len(items)] for item in items]


def double(items: list[Any]) -> list[Any]:
    """``item * 2``; the item ``"bad"`` fails alone with a ValueError."""
    return [ValueError(f"cannot double {item!r}") if item == "bad" else item * 2 for item in items]


def explode(items: list[Any]) -> list[Any]:
    """Raises for a batch holding ``"boom"``; otherwise :func:`echo`."""
    if "boom" in items:
        raise RuntimeError(f"boom in a batch of {len(items)}")
    return echo(items)


def slow(items: list[Any]) -> list[Any]:
    """:func:`echo` after sleeping ``$BATCH_TEST_SLOW`` seconds (default 1) per batch."""
    time.sleep(float(os.environ.get("BATCH_TEST_SLOW", "1")))
    return echo(items)


def poison(items: list[Any]) -> list[Any]:
    """Kills its own process (as a segfaulting model would) on a batch holding ``"poison"``."""
    if "poison" in items:
        os._exit(3)
    return echo(items)


async def aecho(items: list[Any]) -> list[Any]:
    """:func:`echo` as ``async def``."""
    await asyncio.sleep(0)
    return echo(items)


def short(items: list[Any]) -> list[Any]:
    """Breaks the contract: one result too few."""
    return items[:-1]


class EchoOp(batch.BatchableOperation[Any]):
    """Shaped like an ``@batch.operation`` class: the batch function is ``function``."""

    function = staticmethod(echo)


not_callable = 42
