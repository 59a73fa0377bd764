"""``DynamicBatcher``: the trees of many threads' callers share rounds (a driver thread).

The batcher's own thread does every call into its :class:`~._core.Core`;
callers talk to it through an inbox (see ``_schedule`` for what both
batchers share).  A caller is a :class:`_Future` (``submit``) or a
:class:`_Waiter` (``run``), and is itself the inbox message for its root.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures._base as _futures_base
import contextvars
import inspect
import queue
import threading
import time
from _thread import allocate_lock as _allocate_lock
from collections import deque
from collections.abc import Generator
from typing import Any, TypeVar, overload

from ._cache import OperationCache
from ._core import Core, State
from ._dispatch import Call
from ._errors import batcher_closed_error, batcher_own_thread_error
from ._operation import BatchableOperation
from ._schedule import Schedule, Structure, awaited, check_limit, check_root, short_root
from ._trace import Trace

__all__ = ["DynamicBatcher"]

T = TypeVar("T")

# The longest stretch before a due group that the driver spins rather than sleeps.
_MAX_POLL = 0.0005



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
        self._batcher: DynamicBatcher | None = batcher  # None once resolved
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

        The future is its root's end point in the core.
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


class _Waiter:
    """A blocking ``run()`` caller: a lock the driver releases once the root is done.

    Lighter than a future (no condition, no callbacks), which is what a
    thread that waits at once needs.  Same driver-side interface as
    :class:`_Future`.
    """

    __slots__ = ("lock", "value", "failed", "_batcher", "_cancelled", "_x", "_ctx", "_at")

    def __init__(self, batcher: DynamicBatcher) -> None:
        self.lock = _allocate_lock()
        self.lock.acquire()
        self.value: Any = None
        self.failed = False
        self._batcher: DynamicBatcher | None = batcher
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
        check_limit("DynamicBatcher", "max_workers", max_workers, allow_none=False)
        self._schedule = Schedule("DynamicBatcher", max_delay, max_batch_size, min_batch_size)
        self._core = Core(cache=cache, trace=trace)
        self._own_cache = cache is None
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
    def submit(self, x: Structure) -> concurrent.futures.Future[Any]: ...

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
            check_root(what, x)
            caller._ctx = contextvars.copy_context()
        caller._x = x
        caller._at = time.monotonic()
        with self._cond:
            if self._closed:
                raise batcher_closed_error(what, "DynamicBatcher")
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
    def run(self, x: Structure) -> Any: ...

    def run(self, x: Any) -> Any:
        """Submit ``x`` and wait for its result (raises its exception).

        Not from inside the batcher's own thread (a generator or
        ``run_batch`` it runs): that would wait on itself; yield ``x``
        there instead.
        """
        if threading.get_ident() in self._idents:
            raise batcher_own_thread_error("DynamicBatcher.run()", short_root(x))
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
    async def arun(self, x: Structure) -> Any: ...

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
            raise batcher_own_thread_error("DynamicBatcher.close()", None)
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
                    # The caller's future (or waiter) is its root's end point.
                    if ctx is None:
                        if not add_operation(x, fut):
                            continue  # answered at once (a cache hit): settled already
                    else:
                        fut._ctx = None
                        ctx.run(core.add_root_to, x, fut)
                        if fut._batcher is None:
                            continue  # answered at once: resolve() ran already
                except Exception as err:
                    fut.resolve(err, True)  # the root could not run
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
                    cancelled.append(fut)
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
            fut.resolve(exc, True)


def _run_call(call: Call) -> tuple[Any, BaseException | None]:
    """``call.run()``, awaiting an async ``run_batch`` on a loop of this thread's own."""
    result, exc = call.run()
    if exc is None and inspect.isawaitable(result):
        loop = _thread_loop()
        try:
            result = loop.run_until_complete(awaited(result))
        except BaseException as err:
            return None, err
        call.t1 = time.perf_counter()
    return result, exc


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
