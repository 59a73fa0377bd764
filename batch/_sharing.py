"""Sharing and memoizing generators: SharedGenerator, cached_generator, GenUtils."""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Callable, Generator, Hashable
from typing import Any, Generic, TypeVar, overload

from ._errors import BatchError, describe_generator, fresh_failure, without_executor_frames
from ._mailbox import SHARED
from ._operation import BatchableOperation, Settled

__all__ = [
    "SharedGenerator",
    "GeneratorCache",
    "cached_generator",
    "gen_structured",
    "gen_identity",
    "GenUtils",
]

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

# SharedGenerator states
NEW, RUNNING, DONE = 0, 1, 2


class SharedGenerator(Generic[R]):
    """Let several batch generators wait on the result of one generator.

    A plain generator object may be yielded by one waiter only.  Wrap it once,
    then every waiter yields ``shared.gen()`` (or the ``SharedGenerator``
    itself): the wrapped generator runs once, in the execution that first
    waits on it, and every waiter gets its result (or its exception).  After
    it finished, the result is kept: later waiters, even in later executions,
    get it at once.

    While it runs, another execution that waits on it - from another thread,
    or another task of the same event loop - waits for that run to finish,
    as it would for a cached operation in flight (see
    :class:`batch.OperationCache`).  An execution nested in the one running
    it (a ``batch.execute`` called from one of its generators or
    ``run_batch`` calls) cannot wait, because the outer execution waits for
    it: it gets a :class:`batch.BatchError` that says so.  If the execution
    running it fails before it finishes, its waiters in other executions get
    a ``BatchError`` naming that failure.

    >>> import batch
    >>> def gen_answer():
    ...     return 42
    ...     yield
    >>> shared = SharedGenerator(gen_answer())
    >>> def gen_both():
    ...     a, b = yield shared.gen(), shared.gen()
    ...     return a + b
    >>> batch.execute(gen_both())
    84
    """

    __slots__ = ("_gen", "_state", "_value", "_failed", "_owner", "_waiters", "_abandoned",
                 "_foreign", "_lock", "__weakref__")

    def __init__(self, gen: Generator[Any, Any, R]) -> None:
        if not isinstance(gen, types.GeneratorType):
            raise TypeError(
                f"SharedGenerator takes a generator object, got {type(gen).__qualname__}; "
                f"call the generator function first: SharedGenerator(gen_user(1))"
            )
        self._gen: Generator[Any, Any, R] | None = gen
        self._state = NEW
        self._value: Any = None
        self._failed = False
        self._owner: Any = None  # the Core running it
        self._waiters: list[tuple[Any, int]] = []
        self._abandoned = False
        # Waiters of other executions while it runs: (core, (sink, index)); they
        # are answered through their core's mailbox.  Other threads touch the
        # state and this list: under ``_lock``.
        self._foreign: list[tuple[Any, tuple[Any, int]]] = []
        self._lock = threading.Lock()

    def gen(self) -> Generator[Any, Any, R]:
        """Return a fresh generator that waits for the shared result."""
        result: R = yield self
        return result

    @property
    def done(self) -> bool:
        """Whether the shared generator has finished (with a result or an error)."""
        return self._state == DONE

    def _join(self, core: Any, sink: Any, index: int) -> tuple[str, Any]:
        """``core``'s waiter ``(sink, index)`` wants the result; under the lock, what to do.

        Returns ``("start", gen)`` (``core`` runs it now), ``("wait", None)``
        (registered: as a local waiter, or as a foreign one answered by
        mail), ``("done", None)`` (read ``_value``/``_failed``), or
        ``("nested", owner)`` (its runner is an execution ``core`` may not
        wait on).
        """
        with self._lock:
            state = self._state
            if state == DONE:
                return "done", None
            if state == NEW:
                gen = self._gen
                assert gen is not None
                self._state = RUNNING
                self._owner = core
                core.thread = threading.get_ident()  # others wait on it: see Core.may_wait_on
                self._waiters.append((sink, index))
                return "start", gen
            owner = self._owner
            if owner is core:
                self._waiters.append((sink, index))
                return "wait", None
            if not core.may_wait_on(owner):
                return "nested", owner
            waiter = (sink, index)
            self._foreign.append((core, waiter))
            core.mailbox().expect(waiter, owner, SHARED)
            return "wait", None

    def _abandon(self, exc: BaseException) -> None:
        """The execution running it failed: a later wait starts it over if possible."""
        error = BatchError(
            f"{self!r} was closed unfinished because its execution ended with "
            f"{type(exc).__name__}: {exc}"
        )
        with self._lock:
            self._state = DONE
            self._failed = True
            self._value = error
            self._gen = None
            self._owner = None
            self._waiters = []
            self._abandoned = True
            foreign, self._foreign = self._foreign, []
        for core, waiter in foreign:
            core.mailbox().post(SHARED, waiter, fresh_failure(error), True)

    def resolve(self, value: Any, failed: bool) -> list[tuple[Any, int, Any, bool]]:
        """Executor callback: the wrapped generator finished; returns its waiters to fill.

        A failure is kept without the executor's frames, and each waiter gets
        a copy of it (see :func:`_errors.fresh_failure`), in this execution
        as in later ones.
        """
        if failed:
            value = without_executor_frames(value)
        with self._lock:
            owner = self._owner
            self._state = DONE
            self._value = value
            self._failed = failed
            self._gen = None
            self._owner = None
            waiters, self._waiters = self._waiters, []
            foreign, self._foreign = self._foreign, []
        if owner is not None:
            owner.shared_finished(self)
        for core, waiter in foreign:  # other executions: through their mailbox
            core.mailbox().post(SHARED, waiter, fresh_failure(value) if failed else value, failed)
        if failed:
            return [(sink, i, fresh_failure(value), True) for sink, i in waiters]
        return [(sink, i, value, False) for sink, i in waiters]

    def __repr__(self) -> str:
        inner = describe_generator(self._gen) if self._gen is not None else "finished"
        return f"<SharedGenerator {inner}>"


class _CallFailed:
    """A cache entry: calling the wrapped function raised ``exc`` (no generator was made)."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class GeneratorCache:
    """Storage for :func:`cached_generator`; ``clear()`` forgets every result.

    One cache may serve several functions; entries are keyed by the function
    and its arguments.
    """

    def __init__(self) -> None:
        self._data: dict[Hashable, SharedGenerator[Any] | _CallFailed] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every memoized generator."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def _get(self, key: Hashable, make: Callable[[], Generator[Any, Any, Any]]) -> SharedGenerator[Any]:
        """The shared run for ``key``, made by ``make()`` the first time.

        When ``make()`` itself raises (the wrapped function failed before
        returning a generator), the exception is kept under ``key`` and raised
        again by later calls without calling the function: a failure is
        memoized like a result, as the seed library does.
        """
        with self._lock:
            entry = self._data.get(key)
            if isinstance(entry, _CallFailed):
                raise entry.exc
            if entry is None or entry._abandoned:
                try:
                    entry = SharedGenerator(make())
                except Exception as exc:
                    self._data[key] = _CallFailed(exc)
                    raise
                self._data[key] = entry
            return entry


_LIST, _DICT, _SET = object(), object(), object()


def freeze(value: Any) -> Hashable:
    """Make ``value`` hashable: lists, sets and dicts become tagged tuples."""
    cls = type(value)
    if cls is list:
        return (_LIST, *map(freeze, value))
    if cls is tuple:
        return tuple(map(freeze, value))
    if cls is dict:
        return (_DICT, frozenset((freeze(k), freeze(v)) for k, v in value.items()))
    if cls is set or cls is frozenset:
        return (_SET, frozenset(map(freeze, value)))
    hash(value)  # raises TypeError for other unhashable values
    return value  # type: ignore[no-any-return]


@overload
def cached_generator(func: F, /) -> F: ...
@overload
def cached_generator(cache: GeneratorCache | None = None, /) -> Callable[[F], F]: ...


def cached_generator(arg: Any = None, /) -> Any:
    """Memoize a generator function by its arguments.

    Every call with equal arguments returns a waiter on one shared run of the
    generator (see :class:`SharedGenerator`), so the work is done once, and
    its result (or exception) is reused by later calls.  Arguments may be
    lists, sets and dicts (compared by value).  Use it bare, or with a
    :class:`GeneratorCache` to be able to ``clear()`` it::

        cache = GeneratorCache()

        @cached_generator(cache)
        def gen_user_page(user_id): ...
    """
    if callable(arg) and not isinstance(arg, GeneratorCache):
        return _memoize(arg, GeneratorCache())
    if arg is not None and not isinstance(arg, GeneratorCache):
        raise TypeError(
            f"cached_generator takes a generator function or a GeneratorCache, "
            f"got {type(arg).__qualname__}"
        )
    cache = arg if arg is not None else GeneratorCache()

    def decorate(func: F) -> F:
        return _memoize(func, cache)

    return decorate


def _binder(func: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], Any] | None:
    """A function that normalises a call's arguments against ``func``'s signature.

    ``f(0)``, ``f(x=0)`` and ``f()`` with ``x=0`` as the default all give the
    same bound arguments, so they share one cache entry.  None when the
    signature cannot be read (some builtins): then arguments are used as given.
    """
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.args, bound.kwargs

    return bind


def _memoize(func: F, cache: GeneratorCache) -> F:
    name = getattr(func, "__qualname__", repr(func))
    bind = _binder(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        if bind is not None:
            try:
                args, kwargs = bind(args, kwargs)
            except TypeError:
                # Arguments that do not fit the signature: let the function
                # itself raise Python's usual message (nothing is cached).
                return func(*args, **kwargs)  # type: ignore[no-any-return]
        try:
            key = (func, freeze(args), freeze(kwargs))
        except TypeError as exc:
            raise TypeError(
                f"cached_generator {name}: its arguments must be hashable, or lists, sets "
                f"and dicts of hashable values ({exc})"
            ) from None
        shared = cache._get(key, lambda: func(*args, **kwargs))
        return shared.gen()

    wrapper.cache = cache  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


_LEAF_TYPES = (BatchableOperation, SharedGenerator, Settled, types.GeneratorType)


def gen_structured(value: Any) -> Generator[Any, Any, Any]:
    """A generator returning ``value`` with every operation/generator replaced by its result.

    Lists, tuples and dicts are walked (and keep their types); anything that
    is not an operation, generator, :class:`SharedGenerator` or ``settled``
    is kept as it is.

    >>> import batch
    >>> batch.execute(gen_structured({"a": (1, gen_identity(2))}))
    {'a': (1, 2)}
    """
    leaves: list[Any] = []
    shape = _collect(value, leaves)
    results = (yield leaves) if leaves else []
    return _rebuild(shape, iter(results))


_HOLE = object()


def _collect(value: Any, leaves: list[Any]) -> Any:
    cls = type(value)
    if cls is list or cls is tuple:
        return (cls, [_collect(v, leaves) for v in value])
    if cls is dict:
        return (dict, [(k, _collect(v, leaves)) for k, v in value.items()])
    if isinstance(value, _LEAF_TYPES):
        leaves.append(value)
        return _HOLE
    return (None, value)


def _rebuild(shape: Any, results: Any) -> Any:
    if shape is _HOLE:
        return next(results)
    cls, inner = shape
    if cls is None:
        return inner
    if cls is dict:
        return {k: _rebuild(v, results) for k, v in inner}
    items = [_rebuild(v, results) for v in inner]
    return items if cls is list else tuple(items)


def gen_identity(value: R) -> Generator[Any, Any, R]:
    """A batch generator that returns ``value`` without yielding anything."""
    return value
    yield  # pragma: no cover  (makes this a generator function)


class GenUtils:
    """Seed compatibility: the original library's generator helpers."""

    gen_structured = staticmethod(gen_structured)
    gen_identity = staticmethod(gen_identity)
