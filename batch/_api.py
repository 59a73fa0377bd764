"""Entry points: execute, execute_many, execute_iter, their async twins, BatchExecutor."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

from ._cache import OperationCache
from ._executor import Run
from ._nodes import Call, Root, RootFailure
from ._operation import BatchableOperation
from ._sharing import SharedGenerator
from ._trace import Trace
from ._typed import Batchable, Structure

__all__ = [
    "execute",
    "execute_many",
    "execute_iter",
    "execute_async",
    "execute_many_async",
    "BatchExecutor",
]

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")


def _check_workers(max_workers: int | None, name: str = "max_workers") -> None:
    if max_workers is None:
        return
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ValueError(f"{name}= must be a positive int or None, got {max_workers!r}")


class _SyncDriver:
    """Runs rounds until the roots are done: serially, or in a thread pool."""

    def __init__(self, run: Run, max_workers: int | None) -> None:
        _check_workers(max_workers)
        self.run = run
        self.max_workers = max_workers
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None

    def step(self) -> bool:
        """Run one step phase and, if anything is queued, one dispatch.

        Returns False when nothing is left to do.
        """
        if not self.settle():
            return False
        self.dispatch()
        return True

    def settle(self) -> bool:
        """Run the step phase; False when nothing is left to dispatch."""
        run = self.run
        run.take_inbox()
        run.drain()
        while run.idle:
            if run.waits_on_others:
                # Only answers from another execution sharing the cache are
                # missing: wait for them (bounded by timeout=).
                run.wait_for_others()
                run.take_inbox()
            elif run.has_live():
                run.break_cycle()
            else:
                return False
            run.drain()
        return True

    def dispatch(self) -> None:
        """Take the round queued by the step phase and send its batches."""
        run = self.run
        run.check_deadline()
        dispatches = run.take_round()
        calls = run.calls_of(dispatches)
        # One call runs inline, unless a timeout needs it watched from here.
        if self.max_workers is None or (len(calls) < 2 and run.deadline is None):
            for call in calls:
                result, exc = run.invoke(call)
                run.complete(call, result, exc)
        else:
            self._threaded(calls)
        run.end_round()

    def _threaded(self, calls: list[Call]) -> None:
        run = self.run
        if self.pool is None:
            self.pool = concurrent.futures.ThreadPoolExecutor(
                self.max_workers, thread_name_prefix="batch")
        futures = [self.pool.submit(contextvars.copy_context().run, run.invoke, call)
                   for call in calls]
        _done, not_done = concurrent.futures.wait(futures, timeout=run.remaining_time())
        if not_done:
            for f in not_done:
                f.cancel()
            raise TimeoutError(f"batch execution timed out after {run.timeout} seconds "
                               f"({run.rounds - 1} rounds completed)")
        for call, future in zip(calls, futures):
            result, exc = future.result()
            run.complete(call, result, exc)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


def _drive(run: Run, max_workers: int | None) -> None:
    driver = _SyncDriver(run, max_workers)
    failure: BaseException | None = None
    try:
        while driver.step():
            pass
    except RootFailure as rf:
        failure = rf.exc
    except BaseException as exc:
        run.abort(exc)
        raise
    finally:
        driver.close()
    if failure is not None:
        run.abort(failure)
        raise failure
    run.finish()


@overload
def execute(x: Generator[Any, Any, R], *, cache: OperationCache | None = ...,
            trace: Trace | None = ..., max_workers: int | None = ...,
            timeout: float | None = ...) -> R: ...
@overload
def execute(x: BatchableOperation[T], *, cache: OperationCache | None = ...,
            trace: Trace | None = ..., max_workers: int | None = ...,
            timeout: float | None = ...) -> T: ...
@overload
def execute(x: Sequence[Batchable[T]], *,
            cache: OperationCache | None = ..., trace: Trace | None = ...,
            max_workers: int | None = ..., timeout: float | None = ...) -> list[T]: ...
@overload
def execute(x: Mapping[K, Batchable[T]], *, cache: OperationCache | None = ...,
            trace: Trace | None = ..., max_workers: int | None = ...,
            timeout: float | None = ...) -> dict[K, T]: ...
@overload
def execute(x: SharedGenerator[R], *, cache: OperationCache | None = ...,
            trace: Trace | None = ..., max_workers: int | None = ...,
            timeout: float | None = ...) -> R: ...
@overload
def execute(x: Structure, *, cache: OperationCache | None = ..., trace: Trace | None = ...,
            max_workers: int | None = ..., timeout: float | None = ...) -> Any: ...


def execute(x: Any, *, cache: OperationCache | None = None, trace: Trace | None = None,
            max_workers: int | None = None, timeout: float | None = None) -> Any:
    """Run a batch generator (or an operation, or a list/tuple/dict of them).

    Returns what the generator returns (or the structure with results in
    place).  An exception that reaches the root is raised here, after every
    other generator was closed.

    Options: ``cache=`` an :class:`OperationCache` shared across executions;
    ``trace=`` a :class:`Trace` to fill in; ``max_workers=N`` runs the
    ``run_batch`` calls of one round in a thread pool; ``timeout=`` seconds
    for the whole execution (raises ``TimeoutError`` after closing every
    generator; checked between rounds, and while waiting on worker threads).

    >>> import batch
    >>> def gen_sum(a, b):
    ...     x, y = yield batch.gen_identity(a), batch.gen_identity(b)
    ...     return x + y
    >>> batch.execute(gen_sum(1, 2))
    3
    """
    run = Run(cache=cache, trace=trace, timeout=timeout)
    root = run.add_root(x)
    _drive(run, max_workers)
    return root.value


@overload
def execute_many(xs: Iterable[Batchable[T]], *, return_exceptions: Literal[False] = ...,
                 cache: OperationCache | None = ..., trace: Trace | None = ...,
                 max_workers: int | None = ..., timeout: float | None = ...) -> list[T]: ...
@overload
def execute_many(xs: Iterable[Batchable[T]], *, return_exceptions: bool,
                 cache: OperationCache | None = ..., trace: Trace | None = ...,
                 max_workers: int | None = ...,
                 timeout: float | None = ...) -> list[T | BaseException]: ...
@overload
def execute_many(xs: Iterable[Structure], *, return_exceptions: bool = ...,
                 cache: OperationCache | None = ..., trace: Trace | None = ...,
                 max_workers: int | None = ..., timeout: float | None = ...) -> list[Any]: ...


def execute_many(xs: Iterable[Any], *, return_exceptions: bool = False,
                 cache: OperationCache | None = None, trace: Trace | None = None,
                 max_workers: int | None = None, timeout: float | None = None) -> list[Any]:
    """Run several roots together (their operations share rounds); one result each.

    With ``return_exceptions=True`` a failed root's exception is returned in
    its place; otherwise the first root to fail stops the execution and its
    exception is raised (every other generator closed first).
    """
    run = Run(cache=cache, trace=trace, timeout=timeout)
    roots = [run.add_root(x, not return_exceptions) for x in xs]
    _drive(run, max_workers)
    return [r.value for r in roots]


@overload
def execute_iter(xs: Iterable[Batchable[T]], *, window: int = ...,
                 return_exceptions: Literal[False] = ..., cache: OperationCache | None = ...,
                 trace: Trace | None = ..., max_workers: int | None = ...,
                 timeout: float | None = ...) -> Iterator[T]: ...
@overload
def execute_iter(xs: Iterable[Batchable[T]], *, window: int = ..., return_exceptions: bool,
                 cache: OperationCache | None = ..., trace: Trace | None = ...,
                 max_workers: int | None = ...,
                 timeout: float | None = ...) -> Iterator[T | BaseException]: ...
@overload
def execute_iter(xs: Iterable[Structure], *, window: int = ..., return_exceptions: bool = ...,
                 cache: OperationCache | None = ..., trace: Trace | None = ...,
                 max_workers: int | None = ..., timeout: float | None = ...) -> Iterator[Any]: ...


def execute_iter(xs: Iterable[Any], *, window: int = 1024, return_exceptions: bool = False,
                 cache: OperationCache | None = None, trace: Trace | None = None,
                 max_workers: int | None = None, timeout: float | None = None) -> Iterator[Any]:
    """Stream the results of many roots, in input order, at most ``window`` in flight.

    ``xs`` may be a lazy iterable of millions of roots: memory stays
    proportional to ``window``.  Roots read while others are in flight join
    their rounds.  A failed root raises when its turn in the output comes
    (every generator still running is closed first), unless
    ``return_exceptions=True``.  Stopping the iteration early closes every
    generator still running.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"execute_iter(window=...) must be a positive int, got {window!r}")
    run = Run(cache=cache, trace=trace, timeout=timeout)
    driver = _SyncDriver(run, max_workers)
    return _iterate(run, driver, iter(xs), window, return_exceptions)


def _iterate(run: Run, driver: _SyncDriver, it: Iterator[Any], window: int,
             return_exceptions: bool) -> Iterator[Any]:
    # ``inflight`` holds the roots not yet handed out, in input order.  At
    # most ``window`` of them are unfinished; finished ones wait behind a slow
    # head, but never more than ``window`` of them, so memory stays O(window).
    inflight: deque[Root] = deque()
    exhausted = False
    finished = False

    def refill() -> int:
        nonlocal exhausted
        unfinished = sum(1 for r in inflight if not r.done)
        pulled = 0
        while not exhausted and unfinished < window and len(inflight) < 2 * window:
            try:
                x = next(it)
            except StopIteration:
                exhausted = True
                break
            inflight.append(run.add_root(x, False))
            unfinished += 1
            pulled += 1
        return pulled

    try:
        while True:
            refill()
            if not inflight:
                finished = True
                run.finish()
                return
            # Step before dispatching: roots the last round finished are seen
            # done, and the roots read in their place join the very next round.
            busy = driver.settle()
            if not inflight[0].done:
                if refill():
                    continue  # step the new roots before the round is taken
                if not busy:  # pragma: no cover  (a root always finishes or fails)
                    raise RuntimeError("batch internal error: a root waits on nothing")
                driver.dispatch()
                continue
            while inflight and inflight[0].done:
                root = inflight.popleft()
                if root.failed and not return_exceptions:
                    exc = root.value
                    run.abort(exc)
                    finished = True
                    raise exc
                yield root.value
    except BaseException as exc:
        if not finished:
            run.abort(exc if not isinstance(exc, GeneratorExit) else None)
        raise
    finally:
        driver.close()


# -- asyncio -------------------------------------------------------------------


async def _drive_async(run: Run, max_concurrency: int | None) -> None:
    _check_workers(max_concurrency, "max_concurrency")
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    pending: list[asyncio.Future[Any]] = []

    async def one(call: Call) -> tuple[Any, BaseException | None]:
        if semaphore is not None:
            await semaphore.acquire()
        try:
            if call.dispatch.group.info.blocking:
                ctx = contextvars.copy_context()
                return await loop.run_in_executor(None, ctx.run, run.invoke, call)
            result, exc = run.invoke(call)
            if exc is None and inspect.isawaitable(result):
                try:
                    result = await result
                except asyncio.CancelledError:
                    raise
                except BaseException as err:
                    exc = err
                call.t1 = time.perf_counter()
            return result, exc
        finally:
            if semaphore is not None:
                semaphore.release()

    run.loop = loop
    run._async_signal = signal = asyncio.Event()

    async def body() -> None:
        while True:
            run.take_inbox()
            run.drain()
            while run.idle:
                if run.waits_on_others:
                    # Another execution sharing the cache has our operations
                    # in flight: wait for its answers.
                    while not run.take_inbox():
                        signal.clear()
                        if not run._inbox:
                            await signal.wait()
                elif run.has_live():
                    run.break_cycle()
                else:
                    return
                run.drain()
            run.check_deadline()
            dispatches = run.take_round()
            calls = run.calls_of(dispatches)
            # Each call is a task of its own, so it runs in its own copy of
            # the context (as run_batch does in the sync executor), and the
            # loop gets a turn every round even when all calls are sync.
            pending[:] = [asyncio.ensure_future(one(c)) for c in calls]
            outcomes = list(await asyncio.gather(*pending))
            pending.clear()
            for call, (result, exc) in zip(calls, outcomes):
                if exc is None and isinstance(result, Awaitable) and not inspect.isgenerator(result):
                    result = await result  # pragma: no cover  (awaitable returning awaitable)
                run.complete(call, result, exc)
            run.end_round()

    failure: BaseException | None = None
    try:
        if run.timeout is not None:
            async with asyncio.timeout(run.remaining_time()):
                await body()
        else:
            await body()
    except RootFailure as rf:
        failure = rf.exc
    except BaseException as exc:
        for f in pending:
            f.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if isinstance(exc, TimeoutError) and not exc.args:
            exc = TimeoutError(f"batch execution timed out after {run.timeout} seconds "
                               f"({run.rounds - 1} rounds completed)")
            run.abort(exc)
            raise exc from None
        run.abort(exc)
        raise
    if failure is not None:
        run.abort(failure)
        raise failure
    run.finish()


@overload
async def execute_async(x: Generator[Any, Any, R], *, cache: OperationCache | None = ...,
                        trace: Trace | None = ..., max_concurrency: int | None = ...,
                        timeout: float | None = ...) -> R: ...
@overload
async def execute_async(x: BatchableOperation[T], *, cache: OperationCache | None = ...,
                        trace: Trace | None = ..., max_concurrency: int | None = ...,
                        timeout: float | None = ...) -> T: ...
@overload
async def execute_async(x: Sequence[Batchable[T]], *,
                        cache: OperationCache | None = ..., trace: Trace | None = ...,
                        max_concurrency: int | None = ...,
                        timeout: float | None = ...) -> list[T]: ...
@overload
async def execute_async(x: Mapping[K, Batchable[T]], *, cache: OperationCache | None = ...,
                        trace: Trace | None = ..., max_concurrency: int | None = ...,
                        timeout: float | None = ...) -> dict[K, T]: ...
@overload
async def execute_async(x: SharedGenerator[R], *, cache: OperationCache | None = ...,
                        trace: Trace | None = ..., max_concurrency: int | None = ...,
                        timeout: float | None = ...) -> R: ...
@overload
async def execute_async(x: Structure, *, cache: OperationCache | None = ...,
                        trace: Trace | None = ..., max_concurrency: int | None = ...,
                        timeout: float | None = ...) -> Any: ...


async def execute_async(x: Any, *, cache: OperationCache | None = None,
                        trace: Trace | None = None, max_concurrency: int | None = None,
                        timeout: float | None = None) -> Any:
    """Like :func:`execute`, inside an event loop; ``run_batch`` may be ``async def``.

    The ``run_batch`` calls of a round run concurrently (at most
    ``max_concurrency`` at once); a synchronous ``run_batch`` runs in the loop,
    or in a worker thread when its class sets ``blocking = True``.
    Cancelling the awaiting task closes every generator and cancels the
    ``run_batch`` coroutines in flight.
    """
    run = Run(cache=cache, trace=trace, timeout=timeout)
    root = run.add_root(x)
    await _drive_async(run, max_concurrency)
    return root.value


@overload
async def execute_many_async(xs: Iterable[Batchable[T]], *,
                             return_exceptions: Literal[False] = ...,
                             cache: OperationCache | None = ..., trace: Trace | None = ...,
                             max_concurrency: int | None = ...,
                             timeout: float | None = ...) -> list[T]: ...
@overload
async def execute_many_async(xs: Iterable[Batchable[T]], *, return_exceptions: bool,
                             cache: OperationCache | None = ..., trace: Trace | None = ...,
                             max_concurrency: int | None = ...,
                             timeout: float | None = ...) -> list[T | BaseException]: ...
@overload
async def execute_many_async(xs: Iterable[Structure], *, return_exceptions: bool = ...,
                             cache: OperationCache | None = ..., trace: Trace | None = ...,
                             max_concurrency: int | None = ...,
                             timeout: float | None = ...) -> list[Any]: ...


async def execute_many_async(xs: Iterable[Any], *, return_exceptions: bool = False,
                             cache: OperationCache | None = None, trace: Trace | None = None,
                             max_concurrency: int | None = None,
                             timeout: float | None = None) -> list[Any]:
    """Like :func:`execute_many`, inside an event loop (see :func:`execute_async`)."""
    run = Run(cache=cache, trace=trace, timeout=timeout)
    roots = [run.add_root(x, not return_exceptions) for x in xs]
    await _drive_async(run, max_concurrency)
    return [r.value for r in roots]


class BatchExecutor:
    """Seed-compatible entry points, as static methods."""

    @overload
    @staticmethod
    def execute(x: Generator[Any, Any, R], **opts: Any) -> R: ...
    @overload
    @staticmethod
    def execute(x: BatchableOperation[T], **opts: Any) -> T: ...
    @overload
    @staticmethod
    def execute(x: Sequence[Batchable[T]], **opts: Any) -> list[T]: ...
    @overload
    @staticmethod
    def execute(x: SharedGenerator[R], **opts: Any) -> R: ...
    @overload
    @staticmethod
    def execute(x: Structure, **opts: Any) -> Any: ...

    @staticmethod
    def execute(x: Any, **opts: Any) -> Any:
        """Same as :func:`batch.execute`."""
        return execute(x, **opts)

    @overload
    @staticmethod
    def executev(xs: Iterable[Batchable[T]], *, return_exceptions: Literal[False] = ...,
                 **opts: Any) -> list[T]: ...
    @overload
    @staticmethod
    def executev(xs: Iterable[Batchable[T]], *, return_exceptions: bool,
                 **opts: Any) -> list[T | BaseException]: ...
    @overload
    @staticmethod
    def executev(xs: Iterable[Structure], **opts: Any) -> list[Any]: ...

    @staticmethod
    def executev(xs: Iterable[Any], **opts: Any) -> list[Any]:
        """Run several roots together; same as :func:`batch.execute_many`."""
        return execute_many(xs, **opts)

    @overload
    @staticmethod
    def executeva(*xs: Batchable[T], return_exceptions: Literal[False] = ...,
                  **opts: Any) -> list[T]: ...
    @overload
    @staticmethod
    def executeva(*xs: Batchable[T], return_exceptions: bool,
                  **opts: Any) -> list[T | BaseException]: ...
    @overload
    @staticmethod
    def executeva(*xs: Structure, **opts: Any) -> list[Any]: ...

    @staticmethod
    def executeva(*xs: Any, **opts: Any) -> list[Any]:
        """``executev`` with the roots as positional arguments."""
        return execute_many(xs, **opts)

    @overload
    @staticmethod
    def execute_many(xs: Iterable[Batchable[T]], *, return_exceptions: Literal[False] = ...,
                     **opts: Any) -> list[T]: ...
    @overload
    @staticmethod
    def execute_many(xs: Iterable[Batchable[T]], *, return_exceptions: bool,
                     **opts: Any) -> list[T | BaseException]: ...
    @overload
    @staticmethod
    def execute_many(xs: Iterable[Structure], **opts: Any) -> list[Any]: ...

    @staticmethod
    def execute_many(xs: Iterable[Any], **opts: Any) -> list[Any]:
        """Same as :func:`batch.execute_many`."""
        return execute_many(xs, **opts)

    @overload
    @staticmethod
    def execute_iter(xs: Iterable[Batchable[T]], *, return_exceptions: Literal[False] = ...,
                     **opts: Any) -> Iterator[T]: ...
    @overload
    @staticmethod
    def execute_iter(xs: Iterable[Batchable[T]], *, return_exceptions: bool,
                     **opts: Any) -> Iterator[T | BaseException]: ...
    @overload
    @staticmethod
    def execute_iter(xs: Iterable[Structure], **opts: Any) -> Iterator[Any]: ...

    @staticmethod
    def execute_iter(xs: Iterable[Any], **opts: Any) -> Iterator[Any]:
        """Same as :func:`batch.execute_iter`."""
        return execute_iter(xs, **opts)

    @overload
    @staticmethod
    def execute_async(x: Generator[Any, Any, R], **opts: Any) -> Awaitable[R]: ...
    @overload
    @staticmethod
    def execute_async(x: BatchableOperation[T], **opts: Any) -> Awaitable[T]: ...
    @overload
    @staticmethod
    def execute_async(x: SharedGenerator[R], **opts: Any) -> Awaitable[R]: ...
    @overload
    @staticmethod
    def execute_async(x: Structure, **opts: Any) -> Awaitable[Any]: ...

    @staticmethod
    def execute_async(x: Any, **opts: Any) -> Awaitable[Any]:
        """Same as :func:`batch.execute_async`."""
        return execute_async(x, **opts)
