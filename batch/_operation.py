"""Operations: the leaves of a call tree, and what a generator may yield besides."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Generator, Hashable, Sequence
from typing import Any, ClassVar, Generic, Self, TypeAlias, TypeVar

from ._errors import BatchSettingError, identity_equality_error, run_batch_not_classmethod_error

__all__ = ["BatchableOperation", "Batcher", "GenResult", "Settled", "settled", "OpInfo"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


#: What ``run_batch`` of a ``BatchableOperation[T]`` may return: one ``T`` (or an
#: exception instance) per operation, directly, from a layered batch generator, or
#: from a coroutine.
BatchResults: TypeAlias = (
    Sequence[T | BaseException]
    | Generator[Any, Any, Sequence[T | BaseException]]
    | Awaitable[Sequence[T | BaseException]]
)


def _check_size(owner: str, name: str, value: object, *, integral: bool) -> None:
    if value is None:
        return
    kinds = (int,) if integral else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        want = "a positive int" if integral else "a positive number"
        raise BatchSettingError(
            f"{owner}.{name} = {value!r} is invalid: it must be {want} or None "
            f"(e.g. {name} = 100)"
        )
    if not value > 0:
        raise BatchSettingError(
            f"{owner}.{name} = {value!r} is invalid: it must be greater than 0 "
            f"(or None for no limit)"
        )


class BatchableOperation(Generic[T_co]):
    """Base class of operations: one unit of work that is sent to a data source.

    Subclass it, store what the operation needs on the instance, and implement
    the classmethod :meth:`run_batch`, which receives every operation of one
    group pending at the end of a round and returns one result per operation,
    in the same order.  An ``Exception`` instance in place of a result fails
    only that operation.

    Class settings (all optional):

    - ``max_batch_size``: split a larger group into several calls.
    - ``max_batch_cost``: split by the summed :meth:`batch_cost`; an operation
      whose cost alone exceeds the limit is sent in a call of its own.
    - ``dedupe``: equal operations (``==``/``hash``) of one round are sent once.
    - ``cache_results``: equal operations are run at most once per
      :class:`batch.OperationCache` (one per execution unless ``cache=``).
    - ``blocking``: in :func:`batch.execute_async`, run a synchronous
      ``run_batch`` in a worker thread instead of the event loop.

    >>> class Double(BatchableOperation[int]):
    ...     def __init__(self, n: int) -> None:
    ...         self.n = n
    ...     @classmethod
    ...     def run_batch(cls, operations):
    ...         return [op.n * 2 for op in operations]
    >>> import batch
    >>> batch.execute([Double(1), Double(2)])
    [2, 4]
    """

    __slots__ = ()

    max_batch_size: ClassVar[int | None] = None
    max_batch_cost: ClassVar[float | None] = None
    dedupe: ClassVar[bool] = False
    cache_results: ClassVar[bool] = False
    blocking: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_size(cls.__qualname__, "max_batch_size", cls.max_batch_size, integral=True)
        _check_size(cls.__qualname__, "max_batch_cost", cls.max_batch_cost, integral=False)
        run_batch = cls.__dict__.get("run_batch")
        if run_batch is not None and inspect.isfunction(run_batch):
            # A plain function here would be called as cls.run_batch(operations)
            # with operations bound to ``cls``: refuse it now, not at the first batch.
            raise run_batch_not_classmethod_error(cls)
        # dedupe / cache_results on a class comparing by identity are checked at
        # first use (OpInfo), not here: @dataclass adds __eq__ and __hash__ only
        # after the class statement, so they are not there yet.

    def __iter__(self) -> Generator[Self, Any, T_co]:
        """Make ``result = yield from op`` work: the typed form of ``result = yield op``.

        The generator yields the operation itself once and returns what the
        executor sends back, so ``yield from op`` batches exactly like
        ``yield op`` (same round, same group), and a type checker knows that
        ``result`` is the operation's result type ``T``.
        """
        # The executor sends the result of this operation, whose type is T_co
        # by the class's contract (run_batch returns one T per operation).
        result: T_co = yield self
        return result

    def batch_key(self) -> Hashable:
        """Return a key that splits this class's operations into finer groups.

        Operations are grouped by ``(type(op), op.batch_key())``.  The default,
        ``None``, puts all operations of the class in one group.
        """
        return None

    def batch_cost(self) -> float:
        """Return this operation's share of ``max_batch_cost`` (default 1)."""
        return 1

    def batcher(self) -> Batcher | None:
        """Seed compatibility: return the :class:`Batcher` that runs this operation.

        Override it only for code written for the original ``batch`` library;
        operations whose class overrides it are grouped by the returned
        batcher (by ``==`` and ``hash``) and run through its ``gen_batch``.
        """
        return None

    @classmethod
    def run_batch(cls, operations: list[Any]) -> BatchResults[T_co]:
        """Run a group of operations; return one result per operation, in order.

        It may return a sequence, be a batch generator (yield further
        operations, then ``return`` the list), or be ``async def`` (only with
        :func:`batch.execute_async`).  An ``Exception`` instance in place of a
        result fails only that operation.

        ``operations`` is typed ``list[Any]`` so that an override may name its
        own class (``operations: list[GetUser]``) under both mypy and pyright.
        Typed, the results must be of the class's result type: in a
        ``BatchableOperation[int]``, ``-> list[int]`` (or
        ``Generator[Any, Any, list[int]]``, or ``async def ... -> list[int]``)
        type-checks and ``-> list[str]`` is reported by mypy.
        """
        raise NotImplementedError(
            f"{cls.__qualname__} must define run_batch: "
            "@classmethod\n    def run_batch(cls, operations): return [... one result per operation]"
        )


class Batcher:
    """Seed compatibility: the original library's grouping object.

    An operation whose ``batcher()`` returns a ``Batcher`` is grouped with all
    operations of the round whose batchers are equal (``==`` and ``hash``), and
    the group is run by :meth:`gen_batch`, a batch generator.
    """

    def gen_batch(self, operations: list[Any]) -> Any:
        """A batch generator that finishes with one result per operation.

        It may yield further operations; it ends with ``return results`` or
        the legacy ``yield GenResult(results)``.
        """
        raise NotImplementedError(
            f"{type(self).__qualname__} must define gen_batch(self, operations), "
            "a generator that finishes with one result per operation"
        )


class GenResult(Generic[T]):
    """Legacy way to finish a batch generator: ``yield GenResult(v)`` is ``return v``."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"GenResult({self.value!r})"


class Settled:
    """What :func:`settled` returns; yield it from a batch generator."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"settled({self.value!r})"


def settled(value: Any) -> Settled:
    """Wait for everything in ``value`` and give failures back as exceptions.

    ``results = yield settled([a, b])`` waits for all of ``a`` and ``b``, like
    ``asyncio.gather(..., return_exceptions=True)``: a failed item is its
    exception instance, in place, instead of being raised.  Nested lists,
    tuples and dicts are settled item by item.
    """
    return Settled(value)


def _check_equality(cls: type, setting: str) -> None:
    """Refuse ``dedupe``/``cache_results`` on a class whose operations compare by identity.

    Any class of the MRO other than the library's own bases and ``object`` may
    provide ``__eq__``/``__hash__`` (the class itself, a dataclass, a mixin).
    """
    for klass in cls.__mro__:
        if klass in (BatchableOperation, Generic, object):
            continue
        if "__eq__" in klass.__dict__ or "__hash__" in klass.__dict__:
            return
    raise identity_equality_error(cls, setting)


class OpInfo:
    """How the executor treats one operation class.

    Computed at the class's first use and kept while its settings stay the
    same (see ``_grouping.op_info``: ``settings`` is what it was computed
    from).  Building it also checks what cannot be checked at class
    creation: settings assigned later, and ``dedupe``/``cache_results`` on a
    class comparing by identity (a dataclass decorator adds ``__eq__`` only
    after ``__init_subclass__`` ran).
    """

    __slots__ = ("cls", "fast", "keyed", "uses_batcher", "dedupe", "cached",
                 "max_size", "max_cost", "blocking", "name", "settings")

    def __init__(self, cls: type[BatchableOperation[Any]]) -> None:
        name = cls.__qualname__
        _check_size(name, "max_batch_size", cls.max_batch_size, integral=True)
        _check_size(name, "max_batch_cost", cls.max_batch_cost, integral=False)
        if cls.dedupe or cls.cache_results:
            _check_equality(cls, "cache_results" if cls.cache_results else "dedupe")
        self.cls = cls
        self.name = name
        self.keyed = cls.batch_key is not BatchableOperation.batch_key
        self.uses_batcher = cls.batcher is not BatchableOperation.batcher
        self.cached = bool(cls.cache_results)
        self.dedupe = bool(cls.dedupe) or self.cached
        self.max_size: int | None = cls.max_batch_size
        self.max_cost: float | None = cls.max_batch_cost
        self.blocking = bool(getattr(cls, "blocking", False))
        # The fast path groups by class alone and needs no per-operation call.
        self.fast = not (self.keyed or self.uses_batcher or self.cached)
        self.settings = settings_of(cls)


def settings_of(cls: type[BatchableOperation[Any]]) -> tuple[Any, ...]:
    """The class settings an :class:`OpInfo` depends on."""
    return (cls.max_batch_size, cls.max_batch_cost, cls.dedupe, cls.cache_results,
            cls.blocking, cls.batch_key, cls.batcher)


def is_sequence_result(value: object) -> bool:
    """Whether ``value`` can be a ``run_batch`` result (a sequence, not text)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))
