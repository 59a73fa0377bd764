"""The exceptions `batch` raises, and the helpers that word their messages."""

from __future__ import annotations

import types
from typing import Any

__all__ = [
    "BatchError",
    "BatchResultError",
    "BatchSettingError",
    "CycleError",
    "GeneratorReusedError",
    "YieldTypeError",
    "describe_generator",
    "identity_equality_error",
    "run_batch_generator_expression_error",
    "run_batch_not_classmethod_error",
    "unhashable_operation_error",
    "yield_from_iterator_error",
    "yielded_value_error",
]


class BatchError(Exception):
    """Base class of every error raised by `batch` itself."""


class BatchResultError(BatchError, TypeError):
    """A ``run_batch`` call broke its contract.

    It returned something that is not a sequence, or a sequence whose length
    differs from the number of operations it was given.  Every operation of
    that call fails with this error.
    """


class YieldTypeError(BatchError, TypeError):
    """A batch generator yielded something the executor cannot run.

    It is thrown into the generator at the offending ``yield``, so the
    generator (or any generator waiting on it) may catch it.
    """


class CycleError(BatchError, RuntimeError):
    """Generators wait on each other's results in a cycle."""


class GeneratorReusedError(BatchError, RuntimeError):
    """A plain generator object was yielded a second time.

    A generator can be run by one waiter only; wrap it in
    :class:`batch.SharedGenerator` to let several generators wait on it.
    """


class BatchSettingError(BatchError, TypeError, ValueError):
    """An operation class has an invalid setting (``max_batch_size`` and such).

    It is both a ``TypeError`` and a ``ValueError`` so that either ``except``
    clause catches it, whichever way the setting was wrong.
    """


def describe_generator(gen: Any) -> str:
    """Name a generator the way a user recognises it: ``func (file:line)``."""
    if isinstance(gen, types.GeneratorType):
        name = gen.__qualname__
        frame = gen.gi_frame
        code = gen.gi_code
        line = frame.f_lineno if frame is not None else code.co_firstlineno
        return f"{name} ({code.co_filename}:{line})"
    return repr(gen)


# -- silent mistakes, worded -------------------------------------------------------
#
# Each helper below words one classic mistake: what the user wrote, why it cannot
# work, and what to write instead.  The class-definition checks are raised from
# ``_operation.py``; the others are for the executor's call sites (documented at
# each helper).


def _fn_name(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", None) or type(obj).__qualname__)


def identity_equality_error(cls: type, setting: str) -> BatchSettingError:
    """``dedupe``/``cache_results`` on a class whose operations compare by identity.

    Two operations built from the same arguments are never ``==`` then, so the
    setting silently does nothing (and ``OperationCache.prime`` never hits).
    """
    name = cls.__qualname__
    return BatchSettingError(
        f"{name} has {setting} = True, but {name} compares its operations by identity "
        f"(it defines no __eq__ and __hash__), so no two {name} operations are ever equal "
        f"and {setting} would do nothing. Make {name} a @dataclass(frozen=True), or define "
        f"__eq__ and __hash__ over the fields that say what the operation asks for"
    )


def run_batch_not_classmethod_error(cls: type) -> BatchSettingError:
    """``run_batch`` defined as a plain method: the executor calls ``cls.run_batch(ops)``."""
    name = cls.__qualname__
    return BatchSettingError(
        f"{name}.run_batch must be a classmethod (the executor calls "
        f"{name}.run_batch(operations) on the class, once per group); write:\n"
        f"    @classmethod\n    def run_batch(cls, operations): ..."
    )


def unhashable_operation_error(cls: type, op: object, exc: BaseException, setting: str) -> BatchError:
    """An operation of a ``dedupe``/``cache_results`` class could not be hashed.

    For a dataclass, the message names the field whose value is unhashable
    (a frozen dataclass with a list field is the usual case); otherwise it says
    to make the class a frozen dataclass or define ``__hash__``.  The executor
    calls it where ``hash(op)`` raised ``exc`` (``setting`` is
    ``"dedupe"`` or ``"cache_results"``).
    """
    import dataclasses

    name = cls.__qualname__
    head = f"{name} has {setting} = True, but its operations cannot be hashed"
    if dataclasses.is_dataclass(op):
        for field in dataclasses.fields(op):
            value = getattr(op, field.name, None)
            try:
                hash(value)
            except TypeError:
                kind = type(value).__qualname__
                fix = {"list": "a tuple", "set": "a frozenset", "dict": "a tuple of items"}.get(
                    kind, "a hashable value")
                return BatchError(
                    f"{head}: in {op!r} the field {field.name!r} holds a {kind} ({exc}); "
                    f"store {fix} there instead (e.g. {field.name}=tuple(...)), so equal "
                    f"operations can be merged"
                )
        params = getattr(cls, "__dataclass_params__", None)
        if params is not None and not params.frozen and not params.unsafe_hash:
            return BatchError(
                f"{head} ({exc}): a dataclass that is not frozen has no __hash__; write "
                f"@dataclass(frozen=True) on {name}"
            )
    return BatchError(
        f"{head} ({exc}); make {name} a frozen dataclass, or define __eq__ and __hash__ on it"
    )


def yielded_value_error(gen_name: str, value: Any) -> YieldTypeError | None:
    """A specific message for a classic wrong ``yield``, or None if ``value`` is none of them.

    The executor calls it where a generator yielded ``value`` (``gen_name`` as
    ``describe_generator`` words it), before running a generator object as a
    batch generator (a generator expression is a generator object too) and
    before its generic "yielded X" error.  A yielded coroutine is closed here,
    so Python's "was never awaited" warning is not attributed to the library.
    """
    import inspect

    if inspect.isgenerator(value) and value.gi_code.co_name == "<genexpr>":
        value.close()
        return YieldTypeError(
            f"{gen_name} yielded a generator expression; it is neither an operation nor a "
            f"structure, so it would run item by item and give None. Yield a list: "
            f"`results = yield [GetUser(i) for i in ids]` (note the square brackets)"
        )
    if inspect.iscoroutine(value):
        value.close()
        return YieldTypeError(
            f"{gen_name} yielded coroutine (a coroutine cannot be yielded; make run_batch "
            f"async instead, with execute_async): {_fn_name(value)}() was closed without "
            f"running. A batch generator cannot await: put the awaiting in an "
            f"`async def run_batch` of an operation and run the tree with batch.execute_async"
        )
    if inspect.isasyncgen(value):
        return YieldTypeError(
            f"{gen_name} yielded an async generator ({_fn_name(value)}); batch generators "
            f"are plain generators: write `def {value.__name__}(...)` (not async def) and "
            f"yield its operations, or make the async part an `async def run_batch`"
        )
    if inspect.isgeneratorfunction(value):
        fn = _fn_name(value)
        return YieldTypeError(
            f"{gen_name} yielded the generator function {fn} itself, not a generator; "
            f"call it: `yield {fn}(...)`"
        )
    if inspect.isfunction(value) or inspect.ismethod(value):
        fn = _fn_name(value)
        return YieldTypeError(
            f"{gen_name} yielded the function {fn} itself; a batch generator yields "
            f"operations and generators: call it, `yield {fn}(...)`"
        )
    return None


def yield_from_iterator_error(gen_name: str, iterator: Any) -> YieldTypeError:
    """``yield from [op1, op2]``: the executor sees ``op1``, then cannot send into a list iterator.

    The executor calls it when the generator it resumes delegates (its
    ``gi_yieldfrom``) to something that is not a generator, typically a
    ``list_iterator``, instead of letting ``.send`` raise ``AttributeError``.
    """
    kind = type(iterator).__qualname__
    return YieldTypeError(
        f"{gen_name} used `yield from` on a {kind} (e.g. `yield from [op1, op2]`); "
        f"`yield from` takes one operation or generator. For several at once write "
        f"`a, b = yield [op1, op2]`, or in the typed style "
        f"`a, b = yield from batch.gather(op1, op2)` / "
        f"`xs = yield from batch.gather_list([...])`"
    )


def run_batch_generator_expression_error(owner: str) -> BatchResultError:
    """``run_batch`` returned a generator expression (it is not a layered batch generator).

    The executor calls it where a ``run_batch`` result is a generator object
    whose ``gi_code.co_name`` is ``"<genexpr>"``, before taking it for a
    layered batch generator (``owner`` is e.g. ``"GetUser.run_batch"``).
    """
    return BatchResultError(
        f"{owner} returned a generator expression; it must return a list with one result "
        f"per operation, in order: `return [rows.get(op.key) for op in operations]` "
        f"(square brackets)"
    )
