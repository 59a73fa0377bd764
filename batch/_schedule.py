"""What both batchers share: the option and root checks, and the dispatch schedule.

The batchers (:class:`~._dynamic_batcher.DynamicBatcher` for threads,
:class:`~._async_batcher.AsyncBatcher` for asyncio) batch across callers.

Both are drivers of the round protocol (``_core``) over one long-lived
:class:`~._core.Core`: every caller's root joins that core, so the trees of
many callers (threads, tasks, web requests) share rounds and each group goes
to its ``run_batch`` in one call.  What a batcher adds to a plain driver:

- **Roots arrive at any time.**  Each one is added between steps, in a copy
  of its caller's context (taken at submit), with an end point that hands
  its result or exception to that caller alone (the caller's future itself,
  ``Core.add_root_to``; a single operation joins its group directly,
  ``Core.add_operation``).
- **It chooses which queued groups to take, and when** (:class:`Schedule`):
  a group goes when it has waited ``max_delay`` since it was first seen,
  at once when it holds ``max_batch_size`` operations, or on ``flush()``;
  ``max_delay=0`` means as soon as no generator can run; ``max_delay=None``
  is manual mode.  Groups held back keep filling: operations that arrive
  meanwhile join them.
- **Rounds overlap.**  A group may be taken while calls of earlier rounds
  still run, up to ``max_workers`` / ``max_concurrency`` calls at once;
  when none is free, due groups wait and go together later (back-pressure).
- **A caller may give up.**  Cancelling its future or task withdraws its
  root (``Core.withdraw``): its generators are closed and its operations
  not sent yet leave their groups; work shared with other callers goes on.
- **Closing drains.**  ``close()`` / ``aclose()`` refuse new roots, send
  every group at once until all roots submitted before have finished, then
  end the core.  Nothing submitted is dropped.

The core is single-threaded: a ``DynamicBatcher`` owns one driver thread
that does every core call; callers talk to it through an inbox.  An
``AsyncBatcher`` does every core call in callbacks of its event loop.
"""

from __future__ import annotations

import math
import types
from collections.abc import Awaitable, Hashable
from typing import Any

from ._errors import BatchError
from ._operation import BatchableOperation, Settled
from ._sharing import SharedGenerator

__all__ = ["ROOT_TYPES", "Schedule", "Structure", "awaited", "check_limit", "check_options",
           "check_root", "short_root"]

ROOT_TYPES = (BatchableOperation, list, tuple, dict, Settled, SharedGenerator)
# What a root may be besides a generator or one operation (typed Any: the
# results of a structure are typed per item only by batch.gather).
Structure = list[Any] | tuple[Any, ...] | dict[Any, Any] | Settled | SharedGenerator[Any]


def check_options(owner: str, max_delay: object, max_batch_size: object,
                   min_batch_size: object) -> None:
    if max_delay is not None and (isinstance(max_delay, bool) or not isinstance(max_delay, (int, float))
                                  or not math.isfinite(max_delay) or max_delay < 0):
        raise ValueError(
            f"{owner}(max_delay={max_delay!r}) is invalid: it must be a finite number of seconds "
            f">= 0 (e.g. max_delay=0.002), or None for manual mode (only max_batch_size and "
            f"flush() dispatch)")
    if max_batch_size is not None and (isinstance(max_batch_size, bool)
                                       or not isinstance(max_batch_size, int) or max_batch_size < 1):
        raise ValueError(
            f"{owner}(max_batch_size={max_batch_size!r}) is invalid: it must be a positive int "
            f"(e.g. max_batch_size=256), or None for no limit")
    if isinstance(min_batch_size, bool) or not isinstance(min_batch_size, int) or min_batch_size < 1:
        raise ValueError(
            f"{owner}(min_batch_size={min_batch_size!r}) is invalid: it must be a positive int "
            f"(1, the default, holds nothing back)")
    if max_batch_size is not None and min_batch_size > max_batch_size:
        raise ValueError(
            f"{owner}(min_batch_size={min_batch_size}, max_batch_size={max_batch_size}) is "
            f"invalid: min_batch_size must not be larger than max_batch_size")


def check_limit(owner: str, name: str, value: object, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = ", or None for no limit" if allow_none else ""
        raise ValueError(f"{owner}({name}={value!r}) is invalid: it must be a positive int{extra}")


def check_root(owner: str, x: Any) -> None:
    """Refuse what cannot be a root, at the caller's call (the core checks the rest)."""
    if type(x) is types.GeneratorType:
        if x.gi_suspended or x.gi_frame is None or x.gi_running:
            raise BatchError(
                f"{owner} was given a generator that already ran ({x.__qualname__}); pass a "
                f"fresh generator (call the generator function again)")
        return
    if isinstance(x, ROOT_TYPES):
        return
    raise TypeError(
        f"{owner} takes a batch generator, a BatchableOperation, or a list/tuple/dict of "
        f"those; got {type(x).__qualname__}"
        + (" (did you pass the generator function instead of calling it?)" if callable(x) else ""))


class Schedule:
    """Which queued groups to take now: the dispatch rule, with no clock of its own.

    ``first_seen[key]`` is when a group was first seen queued; a group keeps
    its time until it is taken (operations that join it later do not reset
    it), so no operation waits much longer than ``max_delay``.
    """

    __slots__ = ("max_delay", "max_batch_size", "min_batch_size", "first_seen")

    def __init__(self, owner: str, max_delay: float | None, max_batch_size: int | None,
                 min_batch_size: int) -> None:
        check_options(owner, max_delay, max_batch_size, min_batch_size)  # raises for the caller
        self.max_delay = max_delay
        self.max_batch_size = max_batch_size
        self.min_batch_size = min_batch_size
        self.first_seen: dict[Hashable, float] = {}

    def choose(self, groups: dict[Hashable, Any], now: float, flush: bool,
               born: float | None = None) -> tuple[list[Hashable], float | None]:
        """The keys of the groups due now (in group order), and when to look again.

        ``born``: when the earliest root stepped since the last call was
        submitted; a group first seen now started waiting no later than its
        caller did (a driver that sleeps through arrivals sees them late).
        """
        due: list[Hashable] = []
        wake: float | None = None
        first_seen = self.first_seen
        delay = self.max_delay
        largest = self.max_batch_size
        start = now if born is None or born > now else born
        for key, group in groups.items():
            since = first_seen.get(key)
            if since is None:
                since = first_seen[key] = start
            size = group.size
            if flush or (largest is not None and size >= largest):
                due.append(key)
            elif delay is None:
                continue  # manual mode: only a full group or flush() sends it
            elif delay == 0:
                if size >= self.min_batch_size:
                    due.append(key)
            elif now - since >= delay:
                due.append(key)
            else:
                at = since + delay
                if wake is None or at < wake:
                    wake = at
        for key in due:
            del first_seen[key]
        return due, wake

    def forget_missing(self, groups: dict[Hashable, Any]) -> None:
        """Drop the times of groups that left the queue without being taken (withdrawn)."""
        for key in [k for k in self.first_seen if k not in groups]:
            del self.first_seen[key]


def short_root(x: Any) -> str:
    if type(x) is types.GeneratorType:
        return f"{x.__qualname__}(...)"
    if isinstance(x, BatchableOperation):
        return type(x).__qualname__ + "(...)"
    return "..."



async def awaited(awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable`` (an async ``run_batch``'s result) in a coroutine of ours."""
    return await awaitable
