"""Drivers: short loops that run the core's rounds (see the protocol in ``_core``).

- :class:`SyncDriver`: the calls of a round run one after the other in the
  caller's thread, or in a thread pool with ``max_workers``.
- :func:`drive_async`: the calls of a round run concurrently on the event
  loop (``async def run_batch`` awaited, ``blocking = True`` classes in a
  worker thread), at most ``max_concurrency`` at once.

Both complete a round's calls in group order, so the same program runs the
same way under either.

``timeout=`` has one meaning on every entry point: the execution's own
work - stepping generators, running ``run_batch`` calls, waiting on other
executions' operations - must end within that many seconds, counted from
the start (``execute_iter``: from the first item asked for, not counting
the time its consumer holds an item).  The deadline is checked before each
round, while waiting on calls or on other executions, and after each
round's calls, the last one included: a result that comes late is not
returned.  ``inf`` (or anything from ``threading.TIMEOUT_MAX`` up) means no
limit; ``nan``, negative numbers and non-numbers are refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Coroutine
from typing import Any

from ._core import Core, State
from ._dispatch import Call
from ._errors import timeout_error
from ._tasks import RootFailure

__all__ = ["SyncDriver", "check_workers", "deadline_of", "drive", "drive_async", "remaining"]

DISPATCH = State.DISPATCH
DONE = State.DONE


def check_workers(value: int | None, name: str = "max_workers") -> None:
    """``max_workers=`` / ``max_concurrency=``: a positive int or None."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}= must be a positive int or None, got {value!r}")


def deadline_of(timeout: float | None) -> float | None:
    """The monotonic deadline for ``timeout=`` seconds from now (None: no limit)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"timeout= must be a number of seconds >= 0, got {timeout!r}")
    if timeout >= threading.TIMEOUT_MAX:  # inf, or too far to wait on: no limit
        return None
    return time.monotonic() + timeout


def remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (never negative), for a blocking wait."""
    if deadline is None:
        return None
    return min(max(0.0, deadline - time.monotonic()), threading.TIMEOUT_MAX)


class SyncDriver:
    """Runs a core's rounds in the calling thread (calls inline or in a thread pool)."""

    def __init__(self, core: Core, max_workers: int | None = None,
                 timeout: float | None = None) -> None:
        check_workers(max_workers)
        self.core = core
        self.max_workers = max_workers
        self.timeout = timeout
        self.deadline = deadline_of(timeout)
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._mail: threading.Event | None = None

    def settle(self) -> bool:
        """Step until a round is ready to dispatch (True) or nothing is live (False)."""
        return self.settle_from(self.core.step())

    def settle_from(self, state: State) -> bool:
        """:meth:`settle`, given the state the last step returned."""
        while True:
            if state is State.DISPATCH:
                return True
            if state is State.DONE:
                return False
            if state is State.WAIT:
                self._wait_for_mail()
            else:  # pragma: no cover  (this driver completes every call it takes)
                raise RuntimeError("batch internal error: calls left in flight")
            state = self.core.step()

    def dispatch(self) -> None:
        """Take the round that is queued and run its calls."""
        core = self.core
        self.check_deadline()
        calls = core.take()
        # One call runs inline, unless a timeout needs it watched from here.
        if self.max_workers is None or (len(calls) < 2 and self.deadline is None):
            for call in calls:
                result, exc = call.run()
                core.complete(call, result, exc)
            self.check_deadline()  # the calls may have used up the time, last round too
            return
        if self.pool is None:
            self.pool = concurrent.futures.ThreadPoolExecutor(
                self.max_workers, thread_name_prefix="batch")
        futures = [self.pool.submit(contextvars.copy_context().run, call.run) for call in calls]
        _done, not_done = concurrent.futures.wait(futures, timeout=self.remaining())
        if not_done:
            for f in not_done:
                f.cancel()
            raise timeout_error(self.timeout, core.rounds - 1)
        for call, future in zip(calls, futures):
            result, exc = future.result()
            core.complete(call, result, exc)
        self.check_deadline()

    def run(self) -> None:
        """Run rounds until every root has its result."""
        while self.settle():
            self.dispatch()

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise timeout_error(self.timeout, self.core.rounds)

    def remaining(self) -> float | None:
        return remaining(self.deadline)

    def restart_clock(self) -> None:
        """Start counting ``timeout=`` from now (``execute_iter``: at the first item asked for)."""
        self.deadline = deadline_of(self.timeout)

    def pause_clock(self) -> float:
        """Stop counting (``execute_iter`` hands an item out); pass the result to :meth:`resume_clock`."""
        return time.monotonic()

    def resume_clock(self, paused: float) -> None:
        """The consumer asked for the next item: its time is not the execution's."""
        if self.deadline is not None:
            self.deadline += time.monotonic() - paused

    def _wait_for_mail(self) -> None:
        """Block until another execution posts an answer (bounded by the deadline)."""
        mailbox = self.core.mailbox()
        if self._mail is None:
            self._mail = threading.Event()
            mailbox.notify = self._mail.set
        event = self._mail
        core = self.core
        while not mailbox.inbox:
            event.clear()
            if mailbox.inbox:
                break
            if core.blocked():
                return  # it would wait forever: its waits failed instead; step again
            try:
                if not event.wait(self.remaining()):
                    self.check_deadline()
            finally:
                core.unblocked()

    def close(self) -> None:
        """Let go of the thread pool, if one was started."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


def drive(core: Core, max_workers: int | None, timeout: float | None) -> None:
    """Run ``core`` to the end in this thread (``execute`` and ``execute_many``)."""
    driver = None if max_workers is None and timeout is None else (
        SyncDriver(core, max_workers, timeout))
    failure: BaseException | None = None
    try:
        if driver is not None:
            driver.run()
        else:
            # The common case, written out: a server pays this loop per request.
            while True:
                state = core.step()
                if state is DISPATCH:
                    for call in core.take():
                        # No local keeps the result: it goes when its waiter lets go of it.
                        core.complete(call, *call.run())
                elif state is DONE or not SyncDriver(core).settle_from(state):
                    break
    except RootFailure as rf:
        failure = rf.exc
    except BaseException as exc:
        core.abort(exc)
        raise
    finally:
        if driver is not None:
            driver.close()
    try:
        core.conclude(failure)
    except BaseException as exc:  # an interrupt before conclude() closed everything
        core.abort(exc)  # (a no-op once it has)
        raise
    finally:
        # The traceback of a raised failure keeps this frame: without the
        # name, the frame does not keep the exception (a cycle only the GC frees).
        del failure


# -- asyncio -------------------------------------------------------------------------


async def drive_async(core: Core, max_concurrency: int | None, timeout: float | None,
                      first: tuple[Call, Awaitable[Any]] | None = None) -> None:
    """Run ``core`` to the end on the running event loop (``execute_async``).

    ``first``: a call taken already whose ``run()`` returned an awaitable
    (the short path hands it over, see ``_short``): awaited, then completed,
    before the first step.
    """
    check_workers(max_concurrency, "max_concurrency")
    deadline = deadline_of(timeout)
    core.loop = asyncio.get_running_loop()
    runner = _AsyncCalls(core.loop, max_concurrency)
    failure: BaseException | None = None
    try:
        if deadline is not None:
            async with asyncio.timeout(deadline - time.monotonic()):
                await _rounds(core, runner, deadline, timeout, first)
        else:
            await _rounds(core, runner, None, timeout, first)
    except RootFailure as rf:
        failure = rf.exc
    except BaseException as exc:
        await runner.cancel()
        if isinstance(exc, TimeoutError) and not exc.args:  # asyncio.timeout's own
            exc = timeout_error(timeout, max(0, core.rounds - 1))
            core.abort(exc)
            raise exc from None
        core.abort(exc)
        raise
    try:
        core.conclude(failure)
    except BaseException as exc:  # see drive()
        core.abort(exc)
        raise
    finally:
        del failure  # see drive()


async def _rounds(core: Core, runner: _AsyncCalls, deadline: float | None,
                  timeout: float | None, first: tuple[Call, Awaitable[Any]] | None) -> None:
    mail: asyncio.Event | None = None
    if first is not None:
        call, awaitable = first
        del first
        result, exc = await runner.gather_one(call, awaitable)
        del awaitable
        core.complete(call, result, exc)
        del result, exc, call
    while True:
        state = core.step()
        if state is DISPATCH:
            if core.rounds:
                # Give the loop a turn between two rounds, so a long execution
                # whose calls are all synchronous does not starve other tasks.
                await asyncio.sleep(0)
            calls = core.take()
            if len(calls) == 1 and runner.max_concurrency is None and not calls[0].blocking:
                # A round of one call (a small request's tree): no list of
                # outcomes, no extra coroutine; the same as runner.run() does.
                call = calls[0]
                result, exc = call.run()
                if exc is None and result.__class__ is not list and inspect.isawaitable(result):
                    result, exc = await runner.gather_one(call, result)
                core.complete(call, result, exc)
                # No local of this loop keeps a result or an error alive past
                # its waiter (it goes when the waiter lets go of it).
                del result, exc, call
            else:
                _complete_all(core, calls, await runner.run(calls))
            if deadline is not None and time.monotonic() >= deadline:
                # A synchronous run_batch blocks the loop, so asyncio.timeout
                # cannot fire during it: the last round is checked here.
                raise timeout_error(timeout, core.rounds)
        elif state is State.WAIT:
            # Another execution sharing the cache has our operations in
            # flight: its answer is posted from its own thread or task.
            mailbox = core.mailbox()
            if mail is None:
                mail = asyncio.Event()
                mailbox.notify = functools.partial(_call_soon, asyncio.get_running_loop(), mail.set)
            while not mailbox.inbox:
                mail.clear()
                if mailbox.inbox:
                    break
                if core.blocked():
                    break  # it would wait forever: its waits failed instead; step again
                try:
                    await mail.wait()
                finally:
                    core.unblocked()
        elif state is DONE:
            return
        else:  # pragma: no cover  (every call is completed before the next step)
            raise RuntimeError("batch internal error: calls left in flight")


def _complete_all(core: Core, calls: list[Call], outcomes: list[Any]) -> None:
    # A function of its own, so no local of the driver's loop keeps a result
    # alive after its waiter let go of it.
    for call, (result, exc) in zip(calls, outcomes):
        core.complete(call, result, exc)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:  # pragma: no cover  (the loop closed meanwhile)
        pass


class _AsyncCalls:
    """Runs one round's calls on the loop and returns their outcomes, in call order."""

    __slots__ = ("loop", "max_concurrency", "semaphore", "tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop, max_concurrency: int | None) -> None:
        self.loop = loop
        self.max_concurrency = max_concurrency
        self.semaphore: asyncio.Semaphore | None = None
        self.tasks: list[asyncio.Future[Any]] = []

    async def run(self, calls: list[Call]) -> list[tuple[Any, BaseException | None]]:
        """Run the calls; synchronous ones inline, in order, the rest as tasks."""
        if self.max_concurrency and self.semaphore is None:
            self.semaphore = asyncio.Semaphore(self.max_concurrency)
        outcomes: list[Any] = [None] * len(calls)
        waits: list[tuple[int, Coroutine[Any, Any, Any], contextvars.Context | None]] = []
        for i, call in enumerate(calls):
            if call.blocking or self.semaphore is not None:
                waits.append((i, self._one(call), None))
                continue
            result, exc = call.run()
            if exc is None and result.__class__ is not list and inspect.isawaitable(result):
                # An async run_batch: a task of its own, in its own copy of the
                # context (as a sync run_batch runs in one), so calls overlap.
                waits.append((i, self._await(call, result), call.ctx))
            else:
                outcomes[i] = (result, exc)
        if waits:
            # An awaited run_batch runs in the context its call made (it says
            # which executions wait on it: see _dispatch.ENCLOSING).
            self.tasks = [self.loop.create_task(w, context=ctx) for _, w, ctx in waits]
            done = await asyncio.gather(*self.tasks)
            self.tasks = []
            for (i, _, _), outcome in zip(waits, done):
                outcomes[i] = outcome
        return outcomes

    async def gather_one(self, call: Call, awaitable: Awaitable[Any]) -> tuple[Any, BaseException | None]:
        """Await an ``async def run_batch`` as a task of its own (see :meth:`run`)."""
        self.tasks = [self.loop.create_task(self._await(call, awaitable), context=call.ctx)]
        outcome: tuple[Any, BaseException | None] = await self.tasks[0]
        self.tasks = []  # (left in place on cancellation: cancel() stops it)
        return outcome

    async def _await(self, call: Call, awaitable: Awaitable[Any]) -> tuple[Any, BaseException | None]:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            call.t1 = time.perf_counter()
            return None, err
        call.t1 = time.perf_counter()
        return result, None

    async def _one(self, call: Call) -> tuple[Any, BaseException | None]:
        semaphore = self.semaphore
        if semaphore is not None:
            await semaphore.acquire()
        try:
            if call.blocking:
                ctx = contextvars.copy_context()
                outcome: tuple[Any, BaseException | None] = await self.loop.run_in_executor(
                    None, ctx.run, call.run)
                return outcome
            result, exc = call.run()
            if exc is None and inspect.isawaitable(result):
                awaited: tuple[Any, BaseException | None] = await self.loop.create_task(
                    self._await(call, result), context=call.ctx)
                return awaited
            return result, exc
        finally:
            if semaphore is not None:
                semaphore.release()

    async def cancel(self) -> None:
        """Cancel the calls in flight and wait until they have stopped."""
        tasks, self.tasks = self.tasks, []
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
