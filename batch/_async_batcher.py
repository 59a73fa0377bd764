"""``AsyncBatcher``: the trees of many asyncio tasks share rounds, on one event loop.

Every call into its :class:`~._core.Core` happens in a callback of that
loop: a *tick* steps the core and starts the round's calls once the loop has
run the callbacks ready now (see ``_schedule`` for what both batchers share).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Generator
from typing import Any, TypeVar, overload

from ._cache import OperationCache
from ._core import Core, State
from ._dispatch import Call
from ._errors import batcher_closed_error, batcher_no_loop_error, batcher_other_loop_error
from ._operation import BatchableOperation
from ._schedule import Schedule, Structure, awaited, check_limit, check_root
from ._trace import Trace

__all__ = ["AsyncBatcher"]

_running_loop = asyncio._get_running_loop  # None outside a loop (get_running_loop raises)

T = TypeVar("T")


def _outcome_of(waiting: asyncio.Future[Any]) -> tuple[Any, BaseException | None]:
    if waiting.cancelled():
        return None, asyncio.CancelledError()
    exc = waiting.exception()
    if exc is not None:
        return None, exc
    return waiting.result(), None





class _Pending(asyncio.Future[Any]):
    """The future ``AsyncBatcher.run`` returns, and its root's end point in the core.

    The core resolves it (:meth:`resolve`); cancelling it withdraws the
    root.  Made with ``_Pending(loop=loop)`` and its slot set after: a
    Python ``__init__`` calling the C one costs three times as much
    (measured), and a batcher makes one per caller.
    """

    __slots__ = ("_batcher",)
    _batcher: AsyncBatcher | None  # None once resolved, withdrawn or failed

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the call: closes its generators, withdraws its unsent operations."""
        if not super().cancel(msg=msg):
            return False
        batcher = self._batcher
        if batcher is not None:
            self._batcher = None
            batcher._withdraw(self)
        return True

    def resolve(self, value: Any, failed: bool) -> tuple[()]:
        """The root's outcome (the core calls it, as it calls ``Root.resolve``)."""
        batcher = self._batcher
        if batcher is not None:
            self._batcher = None
            batcher._futures.pop(self, None)
        if not self.done():
            if failed:
                self.set_exception(value)
            else:
                self.set_result(value)
        return ()


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
        check_limit("AsyncBatcher", "max_concurrency", max_concurrency, allow_none=True)
        self._schedule = Schedule("AsyncBatcher", max_delay, max_batch_size, min_batch_size)
        self._core = Core(cache=cache, trace=trace)
        self._own_cache = cache is None
        self.max_concurrency = max_concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context = contextvars.Context()  # where ticks (and run_batch) run
        self._tick_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._flush = False
        self._closed = False
        self._running = 0  # calls in flight
        self._tasks: set[asyncio.Future[Any]] = set()
        self._drained: asyncio.Future[None] | None = None
        # The callers whose roots have not finished (a dict as an ordered set).
        self._futures: dict[_Pending, None] = {}

    def _bind(self, what: str) -> asyncio.AbstractEventLoop:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise batcher_no_loop_error(what) from None
        if self._loop is None:
            self._loop = loop
            self._core.loop = loop
        elif self._loop is not loop:
            raise batcher_other_loop_error(what)
        return loop

    @overload
    def run(self, x: Generator[Any, Any, T]) -> asyncio.Future[T]: ...
    @overload
    def run(self, x: BatchableOperation[T]) -> asyncio.Future[T]: ...
    @overload
    def run(self, x: Structure) -> asyncio.Future[Any]: ...

    def run(self, x: Any) -> asyncio.Future[Any]:
        """Run ``x`` in the batcher's next round: ``await batcher.run(x)`` is its result.

        ``x`` is a batch generator, an operation, or a list/tuple/dict of
        them, run in a copy of this task's context.  Returns an
        ``asyncio.Future`` (as DataLoader's ``load`` does, so
        ``asyncio.gather`` makes no task per call); cancelling it, or the task
        that awaits it, closes ``x``'s generators and withdraws its operations
        not sent yet.  Bad input raises here, at the call.
        """
        check_root("AsyncBatcher.run()", x)
        loop = _running_loop()
        if loop is None or loop is not self._loop:  # not bound yet, or a mistake: _bind says which
            loop = self._bind("run()")
        if self._closed:
            raise batcher_closed_error("AsyncBatcher.run()", "AsyncBatcher")
        core = self._core
        fut = _Pending(loop=loop)
        fut._batcher = self
        if isinstance(x, BatchableOperation):
            core.add_operation(x, fut)
        else:
            core.add_root_to(x, fut)
        if fut._batcher is None:  # answered at once (a cache hit): resolved already
            return fut
        self._futures[fut] = None
        if self._tick_handle is None:
            self._tick_handle = loop.call_soon(self._tick, context=self._context)
        return fut

    def _withdraw(self, fut: _Pending) -> None:
        """A caller cancelled its future: close its tree, withdraw its unsent operations."""
        if fut in self._futures:
            del self._futures[fut]
            self._core.withdraw([fut])
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
        if self._futures or self._running:
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
            task = asyncio.ensure_future(awaited(result))
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
        if drained is not None and not self._futures and not self._running and not drained.done():
            drained.set_result(None)

    def _fail_all(self, exc: BaseException) -> None:
        """The driver cannot go on: every caller gets ``exc``; no more runs."""
        self._closed = True
        self._core.abort(exc)
        futures = list(self._futures)
        self._futures.clear()
        for task in list(self._tasks):
            task.cancel()
        for fut in futures:
            fut._batcher = None
            if not fut.done():
                fut.set_exception(exc)
        self._check_drained()
