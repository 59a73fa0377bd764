"""The exceptions `batch` raises, and the helpers that word their messages."""

from __future__ import annotations

import copy
import inspect
import os
import types
from collections.abc import Awaitable
from typing import Any

__all__ = [
    "BatchError",
    "BatchResultError",
    "BatchSettingError",
    "CycleError",
    "GeneratorReusedError",
    "YieldTypeError",
    "async_in_sync_error",
    "batch_key_error",
    "batcher_closed_error",
    "batcher_no_loop_error",
    "batcher_other_loop_error",
    "batcher_own_thread_error",
    "batcher_type_error",
    "changed_list_error",
    "cost_error",
    "count_error",
    "cycle_error",
    "execution_cycle_error",
    "describe_generator",
    "fresh_failure",
    "without_executor_frames",
    "gen_batch_type_error",
    "name_of",
    "not_sequence_error",
    "reuse_error",
    "root_gen",
    "root_started_error",
    "root_twice_error",
    "root_type_error",
    "self_wait_error",
    "shared_elsewhere_error",
    "timeout_error",
    "yield_error",
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


# -- stored failures ----------------------------------------------------------

def fresh_failure(exc: BaseException) -> BaseException:
    """A copy of a stored failure, to raise in one waiter; chained to the original.

    A failure that is kept (a cached operation's, a memoized generator's) is
    never raised itself: raising the same object again and again would grow
    its ``__traceback__`` with every execution's frames (keeping them alive)
    and pile up notes on it.  Each waiter gets a copy made with
    :func:`copy.copy` (its arguments, attributes and notes) whose
    ``__cause__`` is the original.  An exception that cannot be copied is
    given as it is.
    """
    try:
        clone = copy.copy(exc)
    except Exception:
        return exc
    if type(clone) is not type(exc) or clone is exc:  # pragma: no cover  (exotic __reduce__)
        return exc
    clone.__traceback__ = None
    clone.__cause__ = exc
    return clone


_EXECUTOR_FILES = frozenset(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    for name in ("_core.py", "_stepping.py", "_tasks.py", "_dispatch.py", "_drivers.py",
                 "_short.py"))


_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def without_executor_frames(exc: BaseException) -> BaseException:
    """Drop the executor's own frames from ``exc``'s traceback (in place); return ``exc``.

    What is left is the user's frames, in order.  Besides being what a user
    wants to read, it matters for memory: a finished frame keeps its local
    variables, and the executor's locals reach the whole execution (its
    tasks, results and cache), so an exception that is raised out of
    ``execute`` or kept in a cache must not hold them.
    """
    tb = exc.__traceback__
    head = last = None
    while tb is not None:
        following = tb.tb_next
        frame = tb.tb_frame
        if frame.f_code.co_filename not in _EXECUTOR_FILES:
            if last is None:
                head = tb
            else:
                last.tb_next = tb
            last = tb
        elif not frame.f_code.co_flags & _SUSPENDABLE:
            # Dropping the entry is not enough from Python 3.12 on: a user
            # generator's frame that ended by raising keeps the frame that
            # resumed it (``f_back``), so clear that frame's locals, once it
            # has returned (a running one refuses, and is left alone).  Not
            # a coroutine's: clearing a suspended one would close it.
            try:
                frame.clear()
            except RuntimeError:
                pass
        tb = following
    if last is not None:
        last.tb_next = None
    exc.__traceback__ = head
    return exc


# -- message builders --------------------------------------------------------
# Every message the executor words lives here, so one wording serves every
# place that raises it and tests pin it in one file (tests/test_errors.py).


def root_gen(value: Any) -> Any:
    """The generator that runs a root that is not a generator (an operation or structure)."""
    return (yield value)


_ROOT_CODE = root_gen.__code__


def name_of(gen: Any) -> str:
    """Name a generator for a message; the wrapper of a non-generator root by its role."""
    if getattr(gen, "gi_code", None) is _ROOT_CODE:
        return "the value passed to execute()"
    return describe_generator(gen)


def reuse_error(gen: Any, item: Any, in_structure: bool = False) -> GeneratorReusedError:
    """``gen`` yielded ``item``, a generator object that another waiter has (had)."""
    if in_structure:
        state = "was already started or yielded elsewhere"
    else:
        state = "is finished" if item.gi_frame is None else "is already running or waited on"
    return GeneratorReusedError(
        f"{name_of(gen)} yielded {item.__qualname__}, a generator object that {state}; a "
        f"generator object can be yielded only once, by one waiter. To let several generators "
        f"wait on it, wrap it once: shared = batch.SharedGenerator({item.__qualname__}(...)), "
        f"and yield shared.gen() in each"
    )


def self_wait_error(gen: Any, chain: list[Any]) -> CycleError:
    """``gen`` yielded a generator of its own chain of waiters."""
    names = " -> ".join(name_of(g) for g in reversed(chain))
    return CycleError(
        f"{name_of(gen)} yielded a generator it is itself waiting on "
        f"({names}); generators cannot wait on their own result"
    )


def cycle_error(names: list[str]) -> CycleError:
    """Shared generators wait on each other in a cycle (``names`` in wait order)."""
    path = " -> ".join([*names, names[0]])
    return CycleError(f"generators wait on each other in a cycle: {path}; a generator cannot "
                      f"wait, directly or through others, on its own result")


def execution_cycle_error(count: int) -> CycleError:
    """Executions sharing a cache wait on each other's operations or shared generators in a ring."""
    return CycleError(
        f"{count} executions sharing a cache wait on each other in a cycle: each waits for a "
        f"cached operation or shared generator that another one is computing, and that one "
        f"waits in turn; a generator cannot wait, directly or through others, on its own result"
    )


def yield_error(gen: Any, value: Any, where: str = "") -> YieldTypeError:
    """``gen`` yielded ``value``, which is nothing the executor can run."""
    kind = type(value).__qualname__
    hint = ""
    if value is None:
        hint = " (a bare `yield` yields None; to finish, use `return value`)"
    elif isinstance(value, Awaitable):
        hint = " (a coroutine cannot be yielded; make run_batch async instead, with execute_async)"
    return YieldTypeError(
        f"{name_of(gen)} yielded {where}{kind}{hint}; a batch generator may yield a "
        f"BatchableOperation, a generator, a list/tuple/dict of those, settled(...), a "
        f"SharedGenerator, or GenResult(value)"
    )


def root_type_error(x: Any) -> TypeError:
    """``execute()`` was given something that is not a root."""
    return TypeError(
        f"execute() takes a batch generator, a BatchableOperation, or a "
        f"list/tuple/dict of those; got {type(x).__qualname__}"
        + (" (did you pass the generator function instead of calling it?)"
           if callable(x) else "")
    )


def root_twice_error(gen: Any) -> GeneratorReusedError:
    """The same generator object was given twice as a root."""
    return GeneratorReusedError(
        f"{describe_generator(gen)} was given twice as a root; a generator object "
        f"can be run only once. Pass a fresh generator for each root, or wrap it "
        f"once in batch.SharedGenerator and pass shared.gen() for each"
    )


def root_started_error(gen: Any) -> GeneratorReusedError:
    """A root generator that already ran."""
    return GeneratorReusedError(
        f"{describe_generator(gen)} was already started; pass execute() a "
        f"fresh generator (call the generator function again)"
    )


def cost_error(name: str, cost: Any) -> BatchError:
    """``batch_cost()`` returned something that is not a cost."""
    return BatchError(
        f"{name}.batch_cost() returned {cost!r}; it must return a number >= 0 (the "
        f"operation's share of {name}.max_batch_cost)"
    )


def changed_list_error(owner: str) -> BatchResultError:
    """``run_batch`` added, removed or replaced operations of the list it was given."""
    return BatchResultError(
        f"{owner} changed the list of operations it was given (added, removed or "
        f"replaced some); it may reorder that list in place, and then its results "
        f"follow the new order, but it must keep the same operations"
    )


def batch_key_error(name: str, key: Any) -> BatchError:
    """``batch_key()`` returned an unhashable value."""
    return BatchError(
        f"{name}.batch_key() returned {type(key).__qualname__}, which is not "
        f"hashable; return a hashable value such as a str or a tuple"
    )


def batcher_type_error(name: str, owner: Any) -> BatchError:
    """A seed ``batcher()`` returned something that is not a ``Batcher``."""
    return BatchError(
        f"{name}.batcher() returned {type(owner).__qualname__}; it must return "
        f"a batch.Batcher instance (or do not override batcher() and define "
        f"run_batch instead)"
    )


def gen_batch_type_error(owner: Any, result: Any) -> BatchResultError:
    """A seed ``gen_batch`` that is not a generator function."""
    return BatchResultError(
        f"{type(owner).__qualname__}.gen_batch returned "
        f"{type(result).__qualname__}; it must be a generator function that "
        f"yields operations and finishes with `return results` (one per operation)"
    )


def async_in_sync_error(name: str) -> BatchError:
    """An ``async def run_batch`` reached the synchronous executor."""
    return BatchError(
        f"{name}.run_batch returned an awaitable; an "
        f"async run_batch needs the async executor: await batch.execute_async(...)"
    )


def not_sequence_error(owner: str, result: Any) -> BatchResultError:
    """``run_batch`` returned something that is not a sequence."""
    return BatchResultError(
        f"{owner} returned {type(result).__qualname__}, not a "
        f"sequence; it must return a list with one result per operation, in "
        f"the same order"
    )


def count_error(owner: str, got: int, expected: int) -> BatchResultError:
    """``run_batch`` returned the wrong number of results."""
    return BatchResultError(
        f"{owner} returned {got} results for {expected} "
        f"operations; it must return one result per operation, in the same order"
    )


def shared_elsewhere_error(shared: Any) -> BatchError:
    """A shared generator runs in an execution that the waiting one is nested in."""
    return BatchError(
        f"{shared!r} is running in an execution that this one is nested in (a "
        f"batch.execute called from its generators or run_batch), and that execution "
        f"waits for this one, so this one cannot wait for it; yield it from the outer "
        f"execution's generators instead of a nested batch.execute"
    )


def timeout_error(timeout: float | None, rounds: int) -> TimeoutError:
    """``timeout=`` ran out."""
    return TimeoutError(f"batch execution timed out after {timeout} seconds "
                        f"({rounds} rounds completed)")
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
    to make the class a frozen dataclass or define ``__hash__``.  An ``exc``
    that is not a ``TypeError`` came from the user's own ``__hash__`` or
    ``__eq__``: the message names that method and what it raised.  The
    executor calls it where ``hash(op)`` (or a lookup by it) raised ``exc``
    (``setting`` is ``"dedupe"`` or ``"cache_results"``).
    """
    import dataclasses

    name = cls.__qualname__
    if not isinstance(exc, TypeError):
        # Not "unhashable": the user's own __hash__ (or __eq__) raised.
        method = "__eq__"
        try:
            hash(op)
        except Exception:
            method = "__hash__"
        error = BatchError(
            f"{name}.{method} raised {exc!r}; {name} has {setting} = True, so its operations "
            f"are compared with hash() and ==, which must not raise: fix {name}.{method}"
        )
        error.__cause__ = exc
        return error
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


# -- the batchers, misused ---------------------------------------------------------------


def batcher_closed_error(what: str, owner: str) -> BatchError:
    """``what`` (e.g. ``"DynamicBatcher.submit()"``) was called after the batcher closed."""
    if owner == "AsyncBatcher":
        verb, closer, block = "run", "aclose()", "async with"
    else:
        verb, closer, block = "submit", "close()", "with"
    return BatchError(
        f"{what}: the batcher is closed; {verb} before {closer} (or before leaving its `{block}` "
        f"block), or make a new {owner}")


def batcher_own_thread_error(what: str, root: str | None) -> BatchError:
    """A DynamicBatcher's ``run()`` (``root``: the root, shortened) or ``close()`` from its own thread."""
    if root is None:
        return BatchError(f"{what} was called from inside the batcher's own thread; close it from "
                          f"the thread that owns it")
    return BatchError(
        f"{what} was called from inside the batcher's own thread (by a generator or run_batch it "
        f"is running), so it would wait on itself forever; yield it instead: "
        f"`result = yield {root}`")


def batcher_no_loop_error(what: str) -> BatchError:
    """An AsyncBatcher method called with no running event loop."""
    return BatchError(
        f"AsyncBatcher.{what} was called with no event loop running in this thread; call it from "
        f"a coroutine (`await batcher.run(x)` inside `async def`), or use DynamicBatcher.run() "
        f"from plain threads")


def batcher_other_loop_error(what: str) -> BatchError:
    """An AsyncBatcher used from an event loop other than the one it is bound to."""
    return BatchError(
        f"AsyncBatcher.{what}: this batcher is bound to the event loop that first used it, and "
        f"this call runs in another one; make one AsyncBatcher per event loop (e.g. per request), "
        f"or use DynamicBatcher.arun(), which any loop may await")
