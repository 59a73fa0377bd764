"""``@batch.operation``: a ``list -> list`` function becomes an operation class.

Many data sources are already a function that takes a list of items and
returns one result per item (a model's ``encode``, a bulk HTTP API, a
``SELECT ... IN``).  The decorator turns such a function into a
:class:`~batch.BatchableOperation` subclass whose instances carry one item
each; the class's ``run_batch`` calls the function once with the items of a
group, so every driver (``execute``, ``execute_async``, the batchers, the
Redis worker) runs it without knowing it was a function.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar, overload

from ._errors import BatchResultError, BatchSettingError
from ._operation import BatchableOperation, _check_size, is_sequence_result

__all__ = ["FunctionOperation", "operation"]

I = TypeVar("I")  # noqa: E741  (the item type, as in list[I])
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class FunctionOperation(BatchableOperation[R_co], Generic[I, R_co]):
    """Base of the classes that :func:`operation` makes: one item of one call.

    An instance holds the item it was made with (``op.item``); two instances
    of one class are equal when their items are, and hash like their item,
    so ``dedupe`` and ``cache_results`` work.  The class attribute
    ``function`` is the wrapped ``list -> list`` callable.
    """

    __slots__ = ("item",)

    function: ClassVar[Callable[[list[Any]], Any]]
    is_async: ClassVar[bool] = False

    def __init__(self, item: I) -> None:
        self.item = item

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(self.item == other.item)

    def __hash__(self) -> int:
        return hash(self.item)

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({self.item!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.item,))

    @classmethod
    def run_batch(cls, operations: list[Any]) -> Any:
        """Call ``function`` once with the items of ``operations``."""
        items = [op.item for op in operations]
        if cls.is_async:
            # The function is called when the coroutine starts: a coroutine
            # that is closed unstarted leaves no "never awaited" one behind.
            return _call_async(cls, items)
        return _checked(cls, cls.function(items), len(items))


def _wrong_count(cls: type, result: Any, n: int) -> BatchResultError:
    if is_sequence_result(result):
        got = f"{len(result)} results"
    else:
        got = f"{type(result).__qualname__}, not a sequence,"
    return BatchResultError(
        f"@batch.operation function {_where(getattr(cls, 'function', cls))} returned {got} for {n} items; "
        f"it must return a list with one result per item, in the same order"
    )


def _checked(cls: type, result: Any, n: int) -> Any:
    if inspect.isgenerator(result):
        return result  # a batch generator: the executor checks what it returns
    if not is_sequence_result(result) or len(result) != n:
        raise _wrong_count(cls, result, n)
    return result


async def _call_async(cls: type[FunctionOperation[Any, Any]], items: list[Any]) -> Any:
    value = await cls.function(items)
    if not is_sequence_result(value) or len(value) != len(items):
        raise _wrong_count(cls, value, len(items))
    return value


def _where(fn: Any) -> str:
    """``name (file:line)`` for a function, ``repr`` for any other callable."""
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if code is None:
        return name
    return f"{name} ({code.co_filename}:{code.co_firstlineno})"


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    # A callable object whose __call__ is async def (inspect does not look there).
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004


class _Decorator(Protocol):
    @overload
    def __call__(self, fn: Callable[[list[I]], Awaitable[Sequence[R]]], /
                 ) -> type[FunctionOperation[I, R]]: ...
    @overload
    def __call__(self, fn: Callable[[list[I]], Sequence[R]], /) -> type[FunctionOperation[I, R]]: ...
    @overload
    def __call__(self, fn: Callable[[list[I]], Generator[Any, Any, Sequence[R]]], /
                 ) -> type[FunctionOperation[I, R]]: ...


@overload
def operation(fn: Callable[[list[I]], Awaitable[Sequence[R]]], /, *, name: str | None = ...,
              max_batch_size: int | None = ..., dedupe: bool = ..., cache_results: bool = ...,
              blocking: bool = ...) -> type[FunctionOperation[I, R]]: ...
@overload
def operation(fn: Callable[[list[I]], Sequence[R]], /, *, name: str | None = ...,
              max_batch_size: int | None = ..., dedupe: bool = ..., cache_results: bool = ...,
              blocking: bool = ...) -> type[FunctionOperation[I, R]]: ...
@overload
def operation(fn: Callable[[list[I]], Generator[Any, Any, Sequence[R]]], /, *, name: str | None = ...,
              max_batch_size: int | None = ..., dedupe: bool = ..., cache_results: bool = ...,
              blocking: bool = ...) -> type[FunctionOperation[I, R]]: ...
@overload
def operation(fn: None = ..., /, *, name: str | None = ..., max_batch_size: int | None = ...,
              dedupe: bool = ..., cache_results: bool = ..., blocking: bool = ...) -> _Decorator: ...


def operation(fn: Any = None, /, *, name: str | None = None, max_batch_size: int | None = None,
              dedupe: bool = False, cache_results: bool = False, blocking: bool = False) -> Any:
    """Turn a ``list -> list`` function into an operation class.

    ``fn(items)`` gets the items of one batch and returns one result per
    item, in the same order; an ``Exception`` instance in place of a result
    fails that item alone.  ``fn`` may be ``async def`` (then run it with
    :func:`batch.execute_async` or a batcher).  Calling the returned class
    with one item makes one operation, which any batch generator may yield.

    Options are the class settings of :class:`batch.BatchableOperation`:
    ``max_batch_size``, ``dedupe``, ``cache_results`` (operations are equal
    when their items are), ``blocking`` (a synchronous ``fn`` runs in a
    worker thread under the async executor); ``name`` replaces the class
    name (default: the function's).  Use it bare or with options:

    >>> import batch
    >>> @batch.operation
    ... def double(xs: list[int]) -> list[int]:
    ...     return [x * 2 for x in xs]
    >>> batch.execute([double(1), double(2)])
    [2, 4]
    >>> @batch.operation(max_batch_size=2, dedupe=True)
    ... def square(xs: list[int]) -> list[int]:
    ...     return [x * x for x in xs]
    >>> batch.execute({"a": square(3), "b": square(3)})
    {'a': 9, 'b': 9}
    """
    options = _checked_options(name, max_batch_size, dedupe, cache_results, blocking)
    if fn is None:
        def decorate(f: Any) -> Any:
            return _make(f, *options)
        return decorate
    return _make(fn, *options)


def _checked_options(name: object, max_batch_size: object, dedupe: object, cache_results: object,
                     blocking: object) -> tuple[Any, ...]:
    if name is not None and (not isinstance(name, str) or not name.isidentifier()):
        raise BatchSettingError(
            f"@batch.operation(name={name!r}) is invalid: name must be a Python identifier "
            f"(a str such as name='embed'), or None for the function's own name"
        )
    try:
        _check_size("@batch.operation(...)", "max_batch_size", max_batch_size, integral=True)
    except BatchSettingError:
        raise BatchSettingError(
            f"@batch.operation(max_batch_size={max_batch_size!r}) is invalid: it must be a "
            f"positive int or None (e.g. max_batch_size=256)"
        ) from None
    for key, value in (("dedupe", dedupe), ("cache_results", cache_results), ("blocking", blocking)):
        if not isinstance(value, bool):
            raise BatchSettingError(
                f"@batch.operation({key}={value!r}) is invalid: it must be True or False"
            )
    return name, max_batch_size, dedupe, cache_results, blocking


def _make(fn: Any, name: str | None, max_batch_size: int | None, dedupe: bool,
          cache_results: bool, blocking: bool) -> type[FunctionOperation[Any, Any]]:
    if isinstance(fn, type) and issubclass(fn, BatchableOperation):
        raise TypeError(
            f"@batch.operation takes a list -> list function, got the operation class "
            f"{fn.__qualname__}; it is already an operation, use it as it is"
        )
    if not callable(fn):
        raise TypeError(
            f"@batch.operation takes a list -> list function (def or async def), got "
            f"{type(fn).__qualname__} {fn!r}; write it as\n"
            f"    @batch.operation\n    def fetch(items): return [... one result per item]"
        )
    is_async = _is_async(fn)
    if blocking and is_async:
        raise BatchSettingError(
            f"@batch.operation(blocking=True) on async def {_where(fn)}: blocking=True runs a "
            f"synchronous function in a worker thread; drop it for an async def function"
        )
    cls_name = name or getattr(fn, "__name__", None) or type(fn).__name__
    namespace: dict[str, Any] = {
        "__slots__": (),
        "__module__": getattr(fn, "__module__", None) or __name__,
        "__qualname__": name or getattr(fn, "__qualname__", None) or cls_name,
        "__doc__": getattr(fn, "__doc__", None),
        "function": staticmethod(fn),
        "is_async": is_async,
        "max_batch_size": max_batch_size,
        "dedupe": dedupe,
        "cache_results": cache_results,
        "blocking": blocking,
    }
    return type(cls_name, (FunctionOperation,), namespace)
