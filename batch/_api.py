"""Entry points: execute, execute_many, execute_iter, their async twins, BatchExecutor."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

from ._cache import OperationCache
from ._core import Core
from ._drivers import SyncDriver, check_workers, drive, drive_async
from ._operation import BatchableOperation
from ._sharing import SharedGenerator
from ._short import execute_async_short, execute_short, takes_short_path
from ._tasks import Root
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

    With no options, a root that yields operations (one at a time, or a list
    of one class) and sub-generators that do the same (a typical request)
    runs on a short path that sends each round's call as the executor would,
    with none of its bookkeeping; the first yield of anything else hands the
    generators to the full executor, so nothing a user can observe differs.

    >>> import batch
    >>> def gen_sum(a, b):
    ...     x, y = yield batch.gen_identity(a), batch.gen_identity(b)
    ...     return x + y
    >>> batch.execute(gen_sum(1, 2))
    3
    """
    if max_workers is not None:
        check_workers(max_workers)
    elif cache is None and trace is None and timeout is None and takes_short_path(x):
        return execute_short(x)  # a root run inline while it yields lone operations
    core = Core(cache=cache, trace=trace)
    root = core.add_root(x)
    drive(core, max_workers, timeout)
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
    check_workers(max_workers)
    core = Core(cache=cache, trace=trace)
    roots = [core.add_root(x, not return_exceptions) for x in xs]
    drive(core, max_workers, timeout)
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
    core = Core(cache=cache, trace=trace)
    driver = SyncDriver(core, max_workers, timeout)
    return _iterate(core, driver, iter(xs), window, return_exceptions)


def _iterate(run: Core, driver: SyncDriver, it: Iterator[Any], window: int,
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

    driver.restart_clock()  # timeout= counts from the first item asked for
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
                paused = driver.pause_clock()
                yield root.value
                driver.resume_clock(paused)  # the consumer's time is not the execution's
    except BaseException as exc:
        if not finished:
            run.abort(exc if not isinstance(exc, GeneratorExit) else None)
        raise
    finally:
        driver.close()


# -- asyncio -------------------------------------------------------------------


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
    if max_concurrency is not None:
        check_workers(max_concurrency, "max_concurrency")
    elif cache is None and trace is None and timeout is None and takes_short_path(x):
        return await execute_async_short(x)  # see execute()
    core = Core(cache=cache, trace=trace)
    root = core.add_root(x)
    await drive_async(core, max_concurrency, timeout)
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
    check_workers(max_concurrency, "max_concurrency")
    core = Core(cache=cache, trace=trace)
    roots = [core.add_root(x, not return_exceptions) for x in xs]
    await drive_async(core, max_concurrency, timeout)
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
