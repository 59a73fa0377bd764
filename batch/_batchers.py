"""Batching across callers: :class:`DynamicBatcher` (threads) and :class:`AsyncBatcher` (asyncio).

Both are drivers of the round protocol (``_core``) over one long-lived
:class:`~._core.Core`: every caller's root joins that core, so the trees of
many callers (threads, tasks, web requests) share rounds and each group goes
to its ``run_batch`` in one call.  What a batcher adds to a plain driver:

- **Roots arrive at any time.**  Each one is added between steps, in a copy
  of its caller's context (taken at submit), with an ``on_done`` callback
  that hands its result or exception to that caller alone.
- **It chooses which queued groups to take, and when** (:class:`_Schedule`):
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

import asyncio
import concurrent.futures
import concurrent.futures._base as _futures_base
import contextvars
import inspect
import math
import queue
import threading
import time
import types
from _thread import allocate_lock as _allocate_lock
from collections import deque
from collections.abc import Awaitable, Generator, Hashable
from typing import Any, TypeVar, overload

from ._cache import OperationCache
from ._core import Core, State
from ._dispatch import Call
from ._errors import BatchError
from ._operation import BatchableOperation, Settled
from ._sharing import SharedGenerator
from ._tasks import Root
from ._trace import Trace

__all__ = ["AsyncBatcher", "DynamicBatcher"]

# The longest stretch before a due group that the driver polls rather than sleeps.
_MAX_POLL = 0.0005

T = TypeVar("T")

_ROOT_TYPES = (BatchableOperation, list, tuple, dict, Settled, SharedGenerator)
# What a root may be besides a generator or one operation (typed Any: the
# results of a structure are typed per item only by batch.gather).
_Structure = list[Any] | tuple[Any, ...] | dict[Any, Any] | Settled | SharedGenerator[Any]


# -- options and roots ----------------------------------------------------------------


def _check_options(owner: str, max_delay: object, max_batch_size: object,
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


def _check_limit(owner: str, name: str, value: object, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = ", or None for no limit" if allow_none else ""
        raise ValueError(f"{owner}({name}={value!r}) is invalid: it must be a positive int{extra}")


def _check_root(owner: str, x: Any) -> None:
    """Refuse what cannot be a root, at the caller's call (the core checks the rest)."""
    if type(x) is types.GeneratorType:
        if x.gi_suspended or x.gi_frame is None or x.gi_running:
            raise BatchError(
                f"{owner} was given a generator that already ran ({x.__qualname__}); pass a "
                f"fresh generator (call the generator function again)")
        return
    if isinstance(x, _ROOT_TYPES):
        return
    raise TypeError(
        f"{owner} takes a batch generator, a BatchableOperation, or a list/tuple/dict of "
        f"those; got {type(x).__qualname__}"
        + (" (did you pass the generator function instead of calling it?)" if callable(x) else ""))


class _Schedule:
    """Which queued groups to take now: the dispatch rule, with no clock of its own.

    ``first_seen[key]`` is when a group was first seen queued; a group keeps
    its time until it is taken (operations that join it later do not reset
    it), so no operation waits much longer than ``max_delay``.
    """

    __slots__ = ("max_delay", "max_batch_size", "min_batch_size", "first_seen")

    def __init__(self, max_delay: float | None, max_batch_size: int | None, min_batch_size: int) -> None:
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


def _outcome_of(awaited: asyncio.Future[Any]) -> tuple[Any, BaseException | None]:
    if awaited.cancelled():
        return None, asyncio.CancelledError()
    exc = awaited.exception()
    if exc is not None:
        return None, exc
    return awaited.result(), None


# -- DynamicBatcher -----------------------------------------------------------------------


# A future's condition is made only when some thread waits on it or adds a
# callback: a burst of 100,000 submits then allocates one object per future,
# not ten (a threading.Condition is several), which is most of what the
# garbage collector would otherwise scan.  ``_guard`` orders that making
# against a result set without one.  A future that ended before anyone asked
# lends out ``_ENDED_CONDITION``, whose lock does nothing: its state never
# changes again, so there is nothing to exclude, wait for or notify, and a
# shared real lock could deadlock two ``concurrent.futures.wait`` calls that
# take their futures' locks in id order.


class _NoLock:
    """The lock of an ended future's condition: there is nothing left to guard."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        pass

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc_info: object) -> None:
        pass


_guard = _allocate_lock()
_ENDED_CONDITION = threading.Condition(_NoLock())  # type: ignore[arg-type]
_ENDED = frozenset({_futures_base.CANCELLED, _futures_base.CANCELLED_AND_NOTIFIED,
                    _futures_base.FINISHED})


class _Nothing(list):  # type: ignore[type-arg]
    """The waiter and callback list of an ended future: what is added is dropped."""

    __slots__ = ()

    def append(self, item: Any) -> None:
        pass

    def remove(self, item: Any) -> None:
        pass


_NOTHING = _Nothing()


class _Future(concurrent.futures.Future[Any]):
    """A caller's future: cancelling it withdraws its root from the batcher.

    A ``concurrent.futures.Future`` in every respect (``result``, ``wait``,
    ``as_completed``, callbacks, ``asyncio.wrap_future``); only its condition
    and lists are made on first use.  It is also the driver's message for
    its root (``_x``, ``_ctx``, ``_at``), so a submit allocates nothing else.
    """

    def __init__(self, batcher: DynamicBatcher) -> None:
        # concurrent.futures.Future.__init__'s fields, less the eager ones.
        self._state = _futures_base.PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._cond: threading.Condition | None = None
        self._batcher: DynamicBatcher | None = batcher
        # Set by the driver thread when the root is added: what withdraw() takes
        # (a Root, or this future for a single operation).
        self._root: Any = None
        self._cancelled = False  # read without the future's lock by the driver
        self._x: Any = None
        self._ctx: contextvars.Context | None = None
        self._at = 0.0

    # Until a condition is made: what ``wait()`` and ``add_done_callback``
    # register on an ended future is never used (it is done already).
    _waiters: list[Any] = _NOTHING
    _done_callbacks: list[Any] = _NOTHING

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is not None:
            return cond
        if self._state in _ENDED:  # final: no condition is made from now on
            cond = self._cond  # read after the state: one made before it ended shows here
            return _ENDED_CONDITION if cond is None else cond
        fresh = threading.Condition()  # made outside the guard: the driver takes it per result
        with _guard:
            cond = self._cond
            if cond is None:
                if self._state in _ENDED:
                    return _ENDED_CONDITION
                self._waiters = []
                self._done_callbacks = []
                cond = self._cond = fresh
        return cond

    def set_result(self, result: Any) -> None:
        """Set the result (the driver); wakes waiters and runs callbacks, if any."""
        if not self._end_quietly("_result", result):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        """Set the exception (the driver); wakes waiters and runs callbacks, if any."""
        if not self._end_quietly("_exception", exception):
            super().set_exception(exception)

    def _end_quietly(self, field: str, value: Any) -> bool:
        """Finish with ``field = value`` if nobody waits or listens (no condition yet)."""
        with _guard:
            if self._cond is not None:
                return False  # someone may be told: concurrent.futures does it
            if self._state in _ENDED:
                raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
            setattr(self, field, value)
            self._state = _futures_base.FINISHED
            return True

    def cancel(self) -> bool:
        """Cancel the call: closes its generators, withdraws its unsent operations."""
        if not super().cancel():
            return False
        self._cancelled = True
        batcher = self._batcher
        if batcher is not None:
            batcher._post(("cancel", self))
        return True

    def resolve(self, value: Any, failed: bool) -> tuple[()]:
        """The root finished (driver thread): give the caller its result.

        The future is the end point of a single-operation root itself.
        """
        batcher = self._batcher
        if batcher is not None:
            self._batcher = None
            batcher._live.pop(self, None)
        try:
            if failed:
                self.set_exception(value)
            else:
                self.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile: nobody wants it
        return ()

    def _settle(self, root: Root) -> None:
        """A generator or structure root finished (its ``on_done``)."""
        self.resolve(root.value, root.failed)

    def _settle_error(self, exc: BaseException) -> None:
        """The root could not run, or the batcher failed: the caller gets ``exc``."""
        self._batcher = None
        try:
            self.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass


class _Waiter:
    """A blocking ``run()`` caller: a lock the driver releases once the root is done.

    Lighter than a future (no condition, no callbacks), which is what a
    thread that waits at once needs.  Same driver-side interface as
    :class:`_Future`.
    """

    __slots__ = ("lock", "value", "failed", "_batcher", "_root", "_cancelled", "_x", "_ctx", "_at")

    def __init__(self, batcher: DynamicBatcher) -> None:
        self.lock = _allocate_lock()
        self.lock.acquire()
        self.value: Any = None
        self.failed = False
        self._batcher: DynamicBatcher | None = batcher
        self._root: Any = None
        self._cancelled = False
        self._x: Any = None
        self._ctx: contextvars.Context | None = None
        self._at = 0.0

    def cancel(self) -> None:
        """The caller gave up waiting (KeyboardInterrupt): withdraw its root."""
        self._cancelled = True
        batcher = self._batcher
        if batcher is not None:
            batcher._post(("cancel", self))

    def resolve(self, value: Any, failed: bool) -> tuple[()]:
        batcher = self._batcher
        if batcher is not None:
            self._batcher = None
            batcher._live.pop(self, None)
        self.value = value
        self.failed = failed
        self.lock.release()
        return ()

    def _settle(self, root: Root) -> None:
        self.resolve(root.value, root.failed)

    def _settle_error(self, exc: BaseException) -> None:
        self._batcher = None
        self.value = exc
        self.failed = True
        self.lock.release()


class DynamicBatcher:
    """Batch the trees of many threads' callers together (a driver thread over one core).

    Submit roots (generators, operations, structures) from any thread; the
    batcher's thread runs them all in shared rounds and sends each group in
    one ``run_batch`` call.  A group goes when it has waited ``max_delay``
    seconds, at once when it reaches ``max_batch_size`` operations, or on
    :meth:`flush`; ``max_delay=0`` sends as soon as no generator can run,
    ``max_delay=None`` is manual mode.  ``min_batch_size`` holds a smaller
    group back when ``max_delay`` is 0 or None (``flush()`` sends it anyway).
    At most ``max_workers`` ``run_batch`` calls run at once; operations that
    arrive meanwhile wait and go together in the next call.  ``cache=`` is
    one :class:`batch.OperationCache` for every caller (without it,
    ``cache_results`` operations share results only while the batcher is
    busy: its cache is emptied whenever nothing is in flight); ``trace=``
    records every round.  ``run_batch`` runs in the batcher's thread (or its
    workers), in a context of its own.

    >>> import batch
    >>> @batch.operation
    ... def double(xs: list[int]) -> list[int]:
    ...     return [x * 2 for x in xs]
    >>> with batch.DynamicBatcher(max_delay=0.001) as batcher:
    ...     futures = [batcher.submit(double(i)) for i in range(3)]
    ...     batcher.run(double(10))
    20
    >>> [f.result() for f in futures]
    [0, 2, 4]
    """

    def __init__(self, *, max_delay: float | None = 0.002, max_batch_size: int | None = None,
                 min_batch_size: int = 1, max_workers: int = 1, cache: OperationCache | None = None,
                 trace: Trace | None = None) -> None:
        _check_options("DynamicBatcher", max_delay, max_batch_size, min_batch_size)
        _check_limit("DynamicBatcher", "max_workers", max_workers, allow_none=False)
        self._core = Core(cache=cache, trace=trace)
        self._own_cache = cache is None
        self._schedule = _Schedule(max_delay, max_batch_size, min_batch_size)
        self.max_workers = max_workers
        self._cond = threading.Condition(threading.Lock())
        # Guarded by _cond: messages for the driver, flags, the driver thread.
        self._inbox: deque[Any] = deque()
        self._flush = False
        self._closed = False  # no more submits
        self._thread: threading.Thread | None = None
        # How many queued roots wake the driver: 1 when it sleeps with nothing
        # held back; while it sleeps until a held-back group is due, only as
        # many as could fill a group (a root can make nothing due sooner), and
        # none while it is busy (it looks at the inbox before it sleeps again).
        self._notify_at = 1
        self._fill_at = max_batch_size if max_batch_size is not None else 1 << 62
        self._idents: set[int] = set()  # the driver's and workers' threads
        self._mail = False  # another execution answered (see Core's mailbox)
        # Driver thread only.
        self._live: dict[_Future | _Waiter, None] = {}
        self._calls: queue.SimpleQueue[Call | None] | None = None
        self._running = 0  # calls taken and not completed
        self._workers: list[threading.Thread] = []

    # -- the callers' side (any thread) ---------------------------------------------

    @overload
    def submit(self, x: Generator[Any, Any, T]) -> concurrent.futures.Future[T]: ...
    @overload
    def submit(self, x: BatchableOperation[T]) -> concurrent.futures.Future[T]: ...
    @overload
    def submit(self, x: _Structure) -> concurrent.futures.Future[Any]: ...

    def submit(self, x: Any) -> concurrent.futures.Future[Any]:
        """Run ``x`` in the batcher's next round; a future of its result (any thread).

        ``x`` is a batch generator, an operation, or a list/tuple/dict of
        them, run in a copy of this thread's context.  Cancelling the future
        closes ``x``'s generators and withdraws its operations not sent yet.
        Raises ``BatchError`` once the batcher is closed.
        """
        fut = _Future(self)
        self._send(x, fut, "DynamicBatcher.submit()")
        return fut

    def _send(self, x: Any, caller: _Future | _Waiter, what: str) -> None:
        """Queue ``x`` for the driver, in a copy of this thread's context."""
        # The caller object is the message: nothing else is allocated per root.
        if isinstance(x, BatchableOperation):
            caller._ctx = None  # no generator of the caller's runs: no context to copy
        else:
            _check_root(what, x)
            caller._ctx = contextvars.copy_context()
        caller._x = x
        caller._at = time.monotonic()
        with self._cond:
            if self._closed:
                raise BatchError(
                    f"{what}: the batcher is closed; submit before close() (or before leaving "
                    f"its `with` block), or make a new DynamicBatcher")
            inbox = self._inbox
            inbox.append(caller)
            if self._thread is None:
                self._start()
            elif len(inbox) == self._notify_at:
                self._cond.notify()

    @overload
    def run(self, x: Generator[Any, Any, T]) -> T: ...
    @overload
    def run(self, x: BatchableOperation[T]) -> T: ...
    @overload
    def run(self, x: _Structure) -> Any: ...

    def run(self, x: Any) -> Any:
        """Submit ``x`` and wait for its result (raises its exception).

        Not from inside the batcher's own thread (a generator or
        ``run_batch`` it runs): that would wait on itself; yield ``x``
        there instead.
        """
        if threading.get_ident() in self._idents:
            raise BatchError(
                f"DynamicBatcher.run() was called from inside the batcher's own thread (by a "
                f"generator or run_batch it is running), so it would wait on itself forever; "
                f"yield it instead: `result = yield {_short(x)}`")
        waiter = _Waiter(self)
        self._send(x, waiter, "DynamicBatcher.run()")
        try:
            waiter.lock.acquire()
        except BaseException:  # KeyboardInterrupt while waiting: give the call up
            waiter.cancel()
            raise
        if waiter.failed:
            raise waiter.value
        return waiter.value

    @overload
    async def arun(self, x: Generator[Any, Any, T]) -> T: ...
    @overload
    async def arun(self, x: BatchableOperation[T]) -> T: ...
    @overload
    async def arun(self, x: _Structure) -> Any: ...

    async def arun(self, x: Any) -> Any:
        """Submit ``x`` and await its result, from any event loop.

        Cancelling the awaiting task cancels ``x`` (see :meth:`submit`).
        """
        return await asyncio.wrap_future(self.submit(x))

    def flush(self) -> None:
        """Send every queued group now, whatever its size or age (any thread)."""
        with self._cond:
            if self._thread is not None:
                self._flush = True
                self._cond.notify()

    def close(self) -> None:
        """Stop intake; return once everything submitted before has finished.

        Queued groups are sent at once.  Calling it again does nothing.
        From inside the batcher's own thread it raises ``BatchError``.
        """
        if threading.get_ident() in self._idents:
            raise BatchError("DynamicBatcher.close() was called from inside the batcher's own "
                             "thread; close it from the thread that owns it")
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is not None:
            thread.join()

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _post(self, message: tuple[Any, ...]) -> None:
        with self._cond:
            self._inbox.append(message)
            self._cond.notify()

    def _start(self) -> None:
        # Under _cond.
        thread = threading.Thread(target=self._drive, name="batch-DynamicBatcher", daemon=True)
        self._thread = thread
        thread.start()

    # -- the driver (its own thread) -----------------------------------------------------

    def _drive(self) -> None:
        core = self._core
        core.thread = ident = threading.get_ident()
        self._idents.add(ident)
        try:
            self._loop()
        except BaseException as exc:  # a KeyboardInterrupt in a generator, or a bug here
            self._fail_all(exc)
        finally:
            self._stop_workers()
            _close_thread_loop()

    def _loop(self) -> None:
        core = self._core
        schedule = self._schedule
        cond = self._cond
        wake: float | None = None  # when a held-back group becomes due
        # How late a timed wait returns (an average): the OS wakes a sleeping
        # thread 0.05-0.3 ms after its deadline.  The driver sleeps until that
        # much before a group is due and spins the rest of the way, so the
        # group goes at max_delay, not max_delay + that.
        late = 0.0001
        while True:
            # While a held-back group waits, new roots need to wake the driver
            # only once there are as many as could fill the fullest group.
            room = max(1, self._fill_at - max((g.size for g in core.groups.values()), default=0))
            with cond:
                while not self._inbox and not self._flush and not self._mail:
                    if self._closed and not self._live and not self._running:
                        break
                    if wake is None:
                        self._notify_at = 1
                        cond.wait()
                        continue
                    now = time.monotonic()
                    left = wake - now
                    if left <= 0:
                        break
                    self._notify_at = room
                    if left > late:
                        if not cond.wait(left - late):  # timed out: learn how late
                            overshoot = time.monotonic() - (now + left - late)
                            late = min(_MAX_POLL, 0.8 * late + 0.2 * overshoot + 0.00001)
                        continue
                    # The last stretch (at most _MAX_POLL): spin.  Not sleep(0):
                    # that hands the GIL to any busy thread, which may keep it
                    # for the whole switch interval (5 ms).
                    while time.monotonic() < wake:
                        pass
                self._notify_at = 0
                self._mail = False
                messages = self._inbox
                self._inbox = deque()
                flush = self._flush or self._closed
                self._flush = False
                closed = self._closed
            cancelled, born = self._take_messages(messages)
            if cancelled:
                core.withdraw(cancelled)
                schedule.forget_missing(core.groups)
            wake = None
            while True:
                state = core.step()
                if state is State.DISPATCH:
                    if self._running >= self.max_workers:
                        break  # back-pressure: due groups wait for a free worker
                    keys, wake = schedule.choose(core.groups, time.monotonic(), flush, born)
                    born = None
                    if not keys:
                        break
                    self._run_calls(core.take(keys, schedule.max_batch_size))
                    continue
                if state is State.WAIT:
                    core.mailbox().notify = self._notify
                elif state is State.DONE and not self._running:
                    if self._own_cache and core._cache is not None:
                        core.cache.clear()  # nothing in flight: start afresh
                    if closed and not self._live:
                        with cond:
                            if not self._inbox:
                                core.finish()
                                return
                break

    def _take_messages(self, messages: deque[Any]) -> tuple[list[Any], float | None]:
        """Add the new roots and complete the finished calls.

        A message is a caller (a new root), ``("done", call, result, exc)``
        or ``("cancel", caller)``.  Returns the roots cancelled, and when the
        earliest new root was submitted.
        """
        core = self._core
        cancelled: list[Any] = []
        born: float | None = None
        live = self._live
        add_operation = core.add_operation
        for message in messages:
            if message.__class__ is not tuple:
                fut = message
                x = fut._x
                fut._x = None
                if fut._cancelled:
                    continue
                submitted = fut._at
                if born is None or submitted < born:
                    born = submitted
                try:
                    ctx = fut._ctx
                    if ctx is None:
                        if not add_operation(x, fut):
                            continue  # answered at once (a cache hit): settled already
                        fut._root = fut
                    else:
                        fut._ctx = None
                        root = ctx.run(core.add_root, x, False, fut._settle)
                        if root.done:
                            continue
                        fut._root = root
                except Exception as err:
                    fut._settle_error(err)
                    continue
                live[fut] = None
            elif message[0] == "done":
                _, call, result, exc = message
                self._running -= 1
                core.complete(call, result, exc)
            else:  # "cancel"
                fut = message[1]
                if fut in live:  # added and not settled (settling takes it out)
                    del live[fut]
                    cancelled.append(fut._root)
        return cancelled, born

    def _notify(self) -> None:
        """Another execution posted an answer into the core's mailbox (any thread)."""
        with self._cond:
            self._mail = True
            self._cond.notify()

    def _run_calls(self, calls: list[Call]) -> None:
        """Run one take's calls: inline with one worker, else on the worker threads."""
        core = self._core
        if self.max_workers == 1:
            for call in calls:
                result, exc = _run_call(call)
                core.complete(call, result, exc)
            return
        if self._calls is None:
            self._calls = queue.SimpleQueue()
            for k in range(self.max_workers):
                worker = threading.Thread(target=self._work, name=f"batch-DynamicBatcher-{k}",
                                          daemon=True)
                self._workers.append(worker)
                worker.start()
        for call in calls:
            self._running += 1
            self._calls.put(call)

    def _work(self) -> None:
        self._idents.add(threading.get_ident())
        calls = self._calls
        assert calls is not None
        while True:
            call = calls.get()
            if call is None:
                _close_thread_loop()
                return
            result, exc = _run_call(call)
            self._post(("done", call, result, exc))

    def _stop_workers(self) -> None:
        if self._calls is not None:
            for _ in self._workers:
                self._calls.put(None)
            for worker in self._workers:
                worker.join()
            self._workers = []

    def _fail_all(self, exc: BaseException) -> None:
        """The driver cannot go on: every caller gets ``exc``; no more submits."""
        with self._cond:
            self._closed = True
            messages = list(self._inbox)
            self._inbox.clear()
        self._core.abort(exc)
        futures = list(self._live)
        self._live.clear()
        futures.extend(m for m in messages if m.__class__ is not tuple)  # not added yet
        for fut in futures:
            fut._settle_error(exc)


def _run_call(call: Call) -> tuple[Any, BaseException | None]:
    """``call.run()``, awaiting an async ``run_batch`` on a loop of this thread's own."""
    result, exc = call.run()
    if exc is None and inspect.isawaitable(result):
        loop = _thread_loop()
        try:
            result = loop.run_until_complete(_await(result))
        except BaseException as err:
            return None, err
        call.t1 = time.perf_counter()
    return result, exc


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


_local = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None:
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def _close_thread_loop() -> None:
    """Close this thread's loop for async ``run_batch`` calls, if it made one."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is not None:
        _local.loop = None
        loop.close()


def _short(x: Any) -> str:
    if type(x) is types.GeneratorType:
        return f"{x.__qualname__}(...)"
    if isinstance(x, BatchableOperation):
        return type(x).__qualname__ + "(...)"
    return "..."


# -- AsyncBatcher ---------------------------------------------------------------------------


def _set_outcome(fut: asyncio.Future[Any], root: Root) -> None:
    if root.failed:
        fut.set_exception(root.value)
    else:
        fut.set_result(root.value)


class _Pending(asyncio.Future[Any]):
    """The future ``AsyncBatcher.run`` returns: cancelling it withdraws its root."""

    def __init__(self, batcher: AsyncBatcher, root: Root, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._batcher: AsyncBatcher | None = batcher
        self._root = root

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the call: closes its generators, withdraws its unsent operations."""
        if not super().cancel(msg=msg):
            return False
        batcher = self._batcher
        if batcher is not None:
            self._batcher = None
            batcher._withdraw(self._root)
        return True


class AsyncBatcher:
    """Batch the trees of many asyncio tasks together, on one event loop.

    ``await batcher.run(x)`` from any task of the loop that first used the
    batcher (another loop gets ``BatchError``).  With ``max_delay=0`` (the
    default) a round is sent once the loop has run every callback ready
    now, as DataLoader does: all resolvers of one GraphQL level, or all
    requests that arrived together, share it.  A positive ``max_delay``
    waits that long for more; ``None`` is manual mode (``max_batch_size`` and
    :meth:`flush` only).  At most ``max_concurrency`` calls run at once
    (None: no limit).  A synchronous ``run_batch`` runs in the loop, or in a
    worker thread when its class sets ``blocking = True``.  Cancelling a task
    that awaits ``run`` closes its tree and withdraws its unsent operations.

    >>> import asyncio, batch
    >>> @batch.operation
    ... async def double(xs: list[int]) -> list[int]:
    ...     return [x * 2 for x in xs]
    >>> async def main() -> list[int]:
    ...     async with batch.AsyncBatcher() as batcher:
    ...         return list(await asyncio.gather(*(batcher.run(double(i)) for i in range(3))))
    >>> asyncio.run(main())
    [0, 2, 4]
    """

    def __init__(self, *, max_delay: float | None = 0, max_batch_size: int | None = None,
                 min_batch_size: int = 1, max_concurrency: int | None = None,
                 cache: OperationCache | None = None, trace: Trace | None = None) -> None:
        _check_options("AsyncBatcher", max_delay, max_batch_size, min_batch_size)
        _check_limit("AsyncBatcher", "max_concurrency", max_concurrency, allow_none=True)
        self._core = Core(cache=cache, trace=trace)
        self._own_cache = cache is None
        self._schedule = _Schedule(max_delay, max_batch_size, min_batch_size)
        self.max_concurrency = max_concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context = contextvars.Context()  # where ticks (and run_batch) run
        self._tick_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._flush = False
        self._closed = False
        self._live = 0  # roots not finished
        self._running = 0  # calls in flight
        self._tasks: set[asyncio.Future[Any]] = set()
        self._drained: asyncio.Future[None] | None = None
        self._futures: dict[Root, asyncio.Future[Any]] = {}

    def _bind(self, what: str) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._core.loop = loop
        elif self._loop is not loop:
            raise BatchError(
                f"AsyncBatcher.{what}: this batcher is bound to the event loop that first used it, "
                f"and this call runs in another one; make one AsyncBatcher per event loop (e.g. "
                f"per request), or use DynamicBatcher.arun(), which any loop may await")
        return loop

    @overload
    def run(self, x: Generator[Any, Any, T]) -> asyncio.Future[T]: ...
    @overload
    def run(self, x: BatchableOperation[T]) -> asyncio.Future[T]: ...
    @overload
    def run(self, x: _Structure) -> asyncio.Future[Any]: ...

    def run(self, x: Any) -> asyncio.Future[Any]:
        """Run ``x`` in the batcher's next round: ``await batcher.run(x)`` is its result.

        ``x`` is a batch generator, an operation, or a list/tuple/dict of
        them, run in a copy of this task's context.  Returns an
        ``asyncio.Future`` (as DataLoader's ``load`` does, so
        ``asyncio.gather`` makes no task per call); cancelling it, or the task
        that awaits it, closes ``x``'s generators and withdraws its operations
        not sent yet.  Bad input raises here, at the call.
        """
        _check_root("AsyncBatcher.run()", x)
        loop = self._bind("run()")
        if self._closed:
            raise BatchError(
                "AsyncBatcher.run(): the batcher is closed; run before aclose() (or before "
                "leaving its `async with` block), or make a new AsyncBatcher")
        core = self._core
        if isinstance(x, BatchableOperation):
            root = Root(False, self._settle)
            core.add_operation(x, root)
        else:
            root = core.add_root(x, False, self._settle)
        fut = _Pending(self, root, loop)
        if root.done:  # answered at once (a cache hit)
            _set_outcome(fut, root)
            return fut
        self._futures[root] = fut
        self._live += 1
        if self._tick_handle is None:
            self._tick_handle = loop.call_soon(self._tick, context=self._context)
        return fut

    def _withdraw(self, root: Root) -> None:
        """A caller cancelled its future: close its tree, withdraw its unsent operations."""
        if not root.done and self._futures.pop(root, None) is not None:
            self._live -= 1
            self._core.withdraw([root])
            self._schedule.forget_missing(self._core.groups)
            self._check_drained()

    def flush(self) -> None:
        """Send every queued group at the next loop tick, whatever its size or age."""
        loop = self._bind("flush()")
        self._flush = True
        self._kick(loop)

    async def aclose(self) -> None:
        """Stop intake; return once everything run before has finished (sends all at once)."""
        loop = self._bind("aclose()")
        self._closed = True
        if self._live or self._running:
            if self._drained is None:
                self._drained = loop.create_future()
            self._kick(loop)
            await asyncio.shield(self._drained)
        if not self._core.closed:
            self._core.finish()

    async def __aenter__(self) -> AsyncBatcher:
        self._bind("__aenter__()")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the driver (callbacks of the loop) ------------------------------------------------

    def _settle(self, root: Root) -> None:
        fut = self._futures.pop(root, None)
        if fut is None:
            return
        self._live -= 1
        if not fut.done():
            _set_outcome(fut, root)

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._tick_handle is None:
            self._tick_handle = loop.call_soon(self._tick, context=self._context)

    def _tick(self) -> None:
        self._tick_handle = None
        try:
            self._rounds()
        except BaseException as exc:  # a KeyboardInterrupt in a generator, or a bug here
            self._fail_all(exc)
            if not isinstance(exc, Exception):
                raise

    def _rounds(self) -> None:
        core = self._core
        loop = self._loop
        assert loop is not None
        schedule = self._schedule
        limit = self.max_concurrency
        flush = self._flush or self._closed
        self._flush = False
        while True:
            state = core.step()
            if state is State.DISPATCH:
                if limit is not None and self._running >= limit:
                    return  # back-pressure: a finishing call kicks the next tick
                keys, wake = schedule.choose(core.groups, loop.time(), flush)
                if wake is not None:
                    self._wake_at(loop, wake)
                if not keys:
                    return
                for call in core.take(keys, schedule.max_batch_size):
                    self._start(loop, call)
                continue
            if state is State.WAIT:
                mailbox = core.mailbox()
                if mailbox.notify is None:
                    mailbox.notify = self._notify_threadsafe
            elif state is State.DONE and not self._running:
                if self._own_cache and core._cache is not None:
                    core.cache.clear()  # nothing in flight: start afresh
                self._check_drained()
            return

    def _wake_at(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        timer = self._timer
        if timer is not None and not timer.cancelled() and self._timer_at <= at:
            return
        if timer is not None:
            timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._on_timer, context=self._context)

    def _on_timer(self) -> None:
        self._timer = None
        assert self._loop is not None
        self._kick(self._loop)

    def _notify_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._kick, loop, context=self._context)
            except RuntimeError:  # pragma: no cover  (the loop closed meanwhile)
                pass

    def _start(self, loop: asyncio.AbstractEventLoop, call: Call) -> None:
        """Run a call: a synchronous one now, an async or blocking one as a task."""
        if call.blocking:
            ctx = contextvars.copy_context()
            waiting: asyncio.Future[Any] = loop.run_in_executor(None, ctx.run, call.run)
            self._track(loop, call, waiting, unpack=True)
            return
        result, exc = call.run()
        if exc is None and inspect.isawaitable(result):
            task = asyncio.ensure_future(_await(result))
            self._track(loop, call, task, unpack=False)
            return
        self._core.complete(call, result, exc)

    def _track(self, loop: asyncio.AbstractEventLoop, call: Call, waiting: asyncio.Future[Any],
               unpack: bool) -> None:
        self._running += 1
        self._tasks.add(waiting)

        def done(f: asyncio.Future[Any]) -> None:
            self._tasks.discard(f)
            self._running -= 1
            if self._core.closed:
                return
            if unpack and not f.cancelled() and f.exception() is None:
                result, exc = f.result()
            else:
                result, exc = _outcome_of(f)
                call.t1 = time.perf_counter()
            try:
                self._core.complete(call, result, exc)
            except BaseException as err:
                self._fail_all(err)
                return
            self._kick(loop)

        waiting.add_done_callback(done, context=self._context)

    def _check_drained(self) -> None:
        drained = self._drained
        if drained is not None and not self._live and not self._running and not drained.done():
            drained.set_result(None)

    def _fail_all(self, exc: BaseException) -> None:
        """The driver cannot go on: every caller gets ``exc``; no more runs."""
        self._closed = True
        self._core.abort(exc)
        futures = list(self._futures.values())
        self._futures.clear()
        self._live = 0
        for task in list(self._tasks):
            task.cancel()
        for fut in futures:
            if not fut.done():
                fut.set_exception(exc)
        self._check_drained()
