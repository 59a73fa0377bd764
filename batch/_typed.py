"""The typed style: ``Gen[T]``, and ``yield from`` helpers that keep result types.

``x = yield op`` is ``Any`` to a type checker: Python types a ``yield``
expression by the generator's *send* type, which is one type for every yield
of the function.  ``yield from`` is typed by the delegate's *return* type
instead, so the typed style delegates to a tiny generator that yields the
very object the untyped style would yield, once, and returns what the
executor sends back.  The executor sees exactly the same yields, so the
rounds and the groups are the same in both styles:

- ``yield from op`` yields ``op`` (:meth:`BatchableOperation.__iter__`);
- ``yield from gather(a, b)`` yields the tuple ``(a, b)`` and returns a tuple;
- ``yield from gather_list(xs)`` yields a list and returns the list.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator, Iterable
from typing import Any, TypeAlias, TypeVar, overload

from ._operation import BatchableOperation, Settled
from ._sharing import SharedGenerator

__all__ = ["Gen", "Batchable", "Structure", "gather", "gather_list"]

T = TypeVar("T")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")
T5 = TypeVar("T5")
T6 = TypeVar("T6")

#: A batch generator that returns ``T``: ``def gen_user(uid: int) -> batch.Gen[User]``.
#: It yields and is sent anything (operations, structures and their results).
Gen: TypeAlias = Generator[Any, Any, T]

#: What ``gather`` and ``gather_list`` take: an operation, a batch generator or a
#: :class:`SharedGenerator` giving ``T``.
Batchable: TypeAlias = BatchableOperation[T] | Generator[Any, Any, T] | SharedGenerator[T]


#: The other things an entry point takes: nested lists/tuples/dicts and ``settled(...)``.
#: The entry points' overloads give these ``Any``.  It deliberately excludes
#: generators and operations, so that an argument typed ``Generator[Any, Any, R]``
#: matches one overload only and mypy does not give up on it as "ambiguous
#: because of Any".
Structure: TypeAlias = list[Any] | tuple[Any, ...] | dict[Any, Any] | Settled


def _check_item(item: object, where: str) -> None:
    """Refuse, at the call, what the executor could never run inside a gather."""
    if isinstance(item, (BatchableOperation, list, tuple, dict, Settled, SharedGenerator)):
        return
    if inspect.isgenerator(item):
        if item.gi_code.co_name == "<genexpr>":
            raise TypeError(
                f"{where} got a generator expression; pass the operations themselves: "
                f"batch.gather(a, b) or batch.gather_list([GetUser(i) for i in ids]) (a list)"
            )
        return
    if inspect.iscoroutine(item):
        item.close()  # never awaited on purpose: close it so Python does not warn later
        hint = "a coroutine; make run_batch async and use batch.execute_async instead"
    elif inspect.isasyncgen(item):
        hint = "an async generator; batch generators are plain (sync) generators"
    elif inspect.isgeneratorfunction(item) or callable(item):
        name = getattr(item, "__qualname__", type(item).__qualname__)
        hint = f"the function {name} itself; call it: {name}(...)"
    else:
        hint = f"a {type(item).__qualname__}"
    raise TypeError(
        f"{where} got {hint}; it takes BatchableOperations and batch generators"
    )


def _gather(items: tuple[Any, ...]) -> Generator[Any, Any, tuple[Any, ...]]:
    results = yield items  # the executor answers a tuple with a list
    return tuple(results)


@overload
def gather() -> Gen[tuple[()]]: ...
@overload
def gather(x1: Batchable[T1], /) -> Gen[tuple[T1]]: ...
@overload
def gather(x1: Batchable[T1], x2: Batchable[T2], /) -> Gen[tuple[T1, T2]]: ...
@overload
def gather(x1: Batchable[T1], x2: Batchable[T2], x3: Batchable[T3], /) -> Gen[tuple[T1, T2, T3]]: ...
@overload
def gather(x1: Batchable[T1], x2: Batchable[T2], x3: Batchable[T3], x4: Batchable[T4], /
           ) -> Gen[tuple[T1, T2, T3, T4]]: ...
@overload
def gather(x1: Batchable[T1], x2: Batchable[T2], x3: Batchable[T3], x4: Batchable[T4],
           x5: Batchable[T5], /) -> Gen[tuple[T1, T2, T3, T4, T5]]: ...
@overload
def gather(x1: Batchable[T1], x2: Batchable[T2], x3: Batchable[T3], x4: Batchable[T4],
           x5: Batchable[T5], x6: Batchable[T6], /) -> Gen[tuple[T1, T2, T3, T4, T5, T6]]: ...
@overload
def gather(x1: Batchable[Any], x2: Batchable[Any], x3: Batchable[Any], x4: Batchable[Any],
           x5: Batchable[Any], x6: Batchable[Any], x7: Batchable[Any], /,
           *xs: Batchable[Any]) -> Gen[tuple[Any, ...]]: ...


def gather(*xs: Any) -> Gen[tuple[Any, ...]]:
    """Wait for several operations / generators at once; ``yield from`` it for a typed tuple.

    ``a, b = yield from batch.gather(gen_user(1), GetUser(2))`` runs both in
    parallel exactly like ``a, b = yield gen_user(1), GetUser(2)`` (same
    round, same groups), but a type checker knows ``a`` and ``b`` (precise
    tuple types for up to 6 arguments, ``tuple[Any, ...]`` beyond).  The
    first failure, in argument order, is raised at the ``yield from`` after
    every item finished, as with a yielded tuple.

    >>> import batch
    >>> class Double(batch.BatchableOperation[int]):
    ...     def __init__(self, n: int) -> None:
    ...         self.n = n
    ...     @classmethod
    ...     def run_batch(cls, operations):
    ...         return [op.n * 2 for op in operations]
    >>> def gen_pair() -> batch.Gen[int]:
    ...     a, b = yield from batch.gather(Double(1), Double(2))
    ...     return a + b
    >>> batch.execute(gen_pair())
    6
    """
    for x in xs:
        _check_item(x, "batch.gather()")
    return _gather(xs)


def _gather_list(items: list[Any]) -> Generator[Any, Any, list[Any]]:
    results: list[Any] = yield items
    return results


def gather_list(xs: Iterable[Batchable[T]]) -> Gen[list[T]]:
    """Wait for any number of operations / generators of one kind; ``yield from`` it for ``list[T]``.

    ``users = yield from batch.gather_list([GetUser(i) for i in ids])`` is the
    typed form of ``users = yield [GetUser(i) for i in ids]``: same round,
    same groups.  ``xs`` is read at once (any iterable, e.g. a generator
    expression, is turned into a list here).

    >>> import batch
    >>> class Double(batch.BatchableOperation[int]):
    ...     def __init__(self, n: int) -> None:
    ...         self.n = n
    ...     @classmethod
    ...     def run_batch(cls, operations):
    ...         return [op.n * 2 for op in operations]
    >>> def gen_all() -> batch.Gen[list[int]]:
    ...     return (yield from batch.gather_list(Double(i) for i in range(3)))
    >>> batch.execute(gen_all())
    [0, 2, 4]
    """
    if isinstance(xs, (BatchableOperation, dict)) or not isinstance(xs, Iterable):
        raise TypeError(
            f"batch.gather_list() takes an iterable of operations or generators, got "
            f"{type(xs).__qualname__}; for a fixed set of items use batch.gather(a, b, ...)"
        )
    if inspect.isgenerator(xs) and xs.gi_code.co_name != "<genexpr>":
        raise TypeError(
            f"batch.gather_list() got the batch generator {xs.__qualname__}; it takes an "
            f"iterable of operations or generators. To wait for one generator write "
            f"`yield from {xs.__qualname__}(...)`"
        )
    items = list(xs)
    for x in items:
        _check_item(x, "batch.gather_list()")
    return _gather_list(items)
