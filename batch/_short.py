"""The short path of ``execute`` and ``execute_async``: a root that yields operations and sub-generators.

A server's request is often a generator that yields one operation, gets
its result, perhaps yields another, and returns.  Each such yield is a
round of one call, and running it through a :class:`~._core.Core` (a task, a
group, a dispatch, a call) costs several times what the call itself does.
So ``execute(gen)`` and ``execute_async(gen)`` without options first run
``gen`` here, inline: while it yields a single operation of a fast-path
class (no ``batch_key``, batcher, cache or ``max_batch_cost``), or a list or
tuple of operations all of one such class that fit in one call (and are not
``dedupe``), they are sent exactly as the core would send them: one
``run_batch`` call that gets a list of its own, runs in a copy of the
caller's context, and whose result passes the same checks.  A fresh
sub-generator it yields runs on top of it, in a copy of its context, as a
core's task runs it (its value or exception goes back to its parent).

The moment anything else happens, the state is handed to a core
(``Core.adopt_root`` / ``Core.adopt_call``), which goes on as if it had run
the generator from the start, so every other rule is the core's own:

- a generator yields anything else (a structure of several classes or
  holding generators, a dict, an operation with a key, a batcher or a
  cache, a generator already started or finished, a generator
  expression): the core takes that yield up, with the generators below;
- ``run_batch`` raises, or returns anything but a list of one result per
  operation, or reorders or changes its list, or fails some operations of a
  structure (and for ``execute_async``: returns an awaitable, or the class is
  ``blocking``): the core completes that call with the outcome;
- the root raises: the core concludes with that failure (the same note,
  the same traceback);
- a ``BaseException`` (``KeyboardInterrupt``, a cancellation) arrives
  anywhere: the core closes the generators, innermost first, and notes the
  rounds, as ``abort`` does.

The path is not taken when something could tell the difference: options
given, a ``batch.testing`` hook or an implicit trace in force, an
enclosing execution's ``run_batch`` around this one (``ENCLOSING``), DEBUG
logging of batches, or a generator that is not a fresh one (the core
refuses it with its own message).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import types
from operator import is_not
from typing import Any, NoReturn

from . import _hooks
from ._core import Core
from ._dispatch import ENCLOSING, log
from ._drivers import drive, drive_async
from ._errors import BatchSettingError
from ._grouping import op_info
from ._operation import BatchableOperation, OpInfo
from ._stepping import explain_attribute_error
from ._tasks import Root

__all__ = ["execute_async_short", "execute_short", "takes_short_path"]

GeneratorType = types.GeneratorType
_send = GeneratorType.send
_throw = GeneratorType.throw
_copy_context = contextvars.copy_context
_DEBUG = logging.DEBUG


def takes_short_path(x: Any) -> bool:
    """Whether ``execute(x)`` (with no options) may run ``x`` here (see the module docstring)."""
    return (x.__class__ is GeneratorType and x.gi_frame is not None and not x.gi_suspended
            and not x.gi_running and _hooks._hook is None and _hooks._trace_factory is None
            and not ENCLOSING.get() and not log.isEnabledFor(_DEBUG))


def _sendable(cls: type, blocking_ok: bool) -> OpInfo | None:
    """How the executor treats ``cls``, if the short path may send its operations, else None.

    A fast-path class (see the module docstring); with ``blocking_ok``
    False (``execute_async``), not a ``blocking`` one.
    """
    if not issubclass(cls, BatchableOperation):
        return None
    try:
        info = op_info(cls)
    except BatchSettingError:
        return None  # the core fails the operation with it
    if not info.fast or info.max_cost is not None or (info.blocking and not blocking_ok):
        return None
    return info


def _sendable_structure(y: list[Any] | tuple[Any, ...], blocking_ok: bool) -> OpInfo | None:
    """:func:`_sendable` for a yielded list or tuple, sent whole in one call.

    Its operations must all be of one class, fit in one call (no longer
    than ``max_batch_size``) and not be ``dedupe`` (the core would merge
    equal ones); not empty (the core answers that with no round).
    """
    if not y or len(set(map(type, y))) != 1:
        return None
    info = _sendable(y[0].__class__, blocking_ok)
    if info is None or info.dedupe or (info.max_size is not None and len(y) > info.max_size):
        return None
    return info


def _structure_value(y: list[Any] | tuple[Any, ...], sent: list[Any], result: Any) -> Any:
    """The value a yielded list or tuple resumes its generator with, or None: the core's to judge.

    None unless ``result`` is a list of one result per operation, none of
    them an exception (which one the generator gets is the core's rule),
    and ``run_batch`` left its list as it was.
    """
    n = len(y)
    if (result.__class__ is not list or len(result) != n or len(sent) != n
            or any(map(is_not, sent, y))):
        return None
    for t in set(map(type, result)):
        if issubclass(t, Exception):
            return None
    # A list (for a tuple too, as the core gives), not run_batch's own.
    return result[:]


def execute_short(gen: Any) -> Any:
    """``execute(gen)``, for a generator :func:`takes_short_path` accepted."""
    ctx = _copy_context()
    resume: Any = _send  # or _throw: an Exception result fails its operation
    value: Any = None
    # The generators waiting on ``gen`` (a sub-generator runs on top of its
    # parent, as in a core's task): [root, its ctx, child, its ctx, ...].
    stack: list[Any] = []
    rounds = 0
    core: Core | None = None  # the core the chain was handed to
    try:
        while True:
            try:
                y = ctx.run(resume, gen, value)
            except StopIteration as stop:
                if not stack:
                    return stop.value
                value = stop.value  # to the parent
                resume = _send
                ctx = stack.pop()
                gen = stack.pop()
                continue
            except Exception as exc:
                failure = exc if exc.__class__ is not AttributeError else (
                    explain_attribute_error(gen, exc))
                if not stack:
                    break
                value = failure  # thrown into the parent
                resume = _throw
                ctx = stack.pop()
                gen = stack.pop()
                continue
            value = None  # the generator has it: do not keep it alive
            if y.__class__ is GeneratorType and (
                    not y.gi_suspended and y.gi_frame is not None and y.__name__ != "<genexpr>"):
                # A fresh sub-generator: it runs on top, in a copy of the context
                # (anything else about it is the core's to refuse).
                stack.append(gen)
                stack.append(ctx)
                gen = y
                ctx = ctx.copy()
                resume = _send
                continue
            one = y.__class__ is not list and y.__class__ is not tuple
            info = _sendable(y.__class__, True) if one else _sendable_structure(y, True)
            if info is None:
                core = Core(plain=True)
                root = core.adopt_root(gen, ctx, y, rounds, stack)
                del y
                drive(core, None, None)
                return root.value
            sent = [y] if one else list(y)
            rounds += 1
            try:
                result = _copy_context().run(info.cls.run_batch, sent)
            except BaseException as exc:
                core = Core(plain=True)
                return _complete_in_core(core, gen, ctx, y, rounds, sent, None, exc, stack)
            if one:
                if result.__class__ is list and len(result) == 1 and len(sent) == 1 and sent[0] is y:
                    value = result[0]
                    resume = _throw if isinstance(value, Exception) else _send
                    del result, y, sent
                    continue
            else:
                value = _structure_value(y, sent, result)
                if value is not None:
                    resume = _send
                    del result, y, sent
                    continue
            core = Core(plain=True)
            return _complete_in_core(core, gen, ctx, y, rounds, sent, result, None, stack)
    except BaseException as exc:
        _abort(core, gen, ctx, rounds, exc, stack)
        raise
    # The raised failure's traceback keeps this frame: its locals must not keep the
    # failure (``value`` does, if it was thrown in from a sub-generator).
    value = None
    held = [failure]
    del failure
    _conclude(rounds, held)


def _complete_in_core(core: Core, gen: Any, ctx: contextvars.Context, y: Any, rounds: int,
                      sent: list[Any], result: Any, exc: BaseException | None,
                      stack: list[Any]) -> Any:
    root = _take_outcome(core, gen, ctx, y, rounds, sent, result, exc, stack)
    del result, exc, sent, y
    drive(core, None, None)
    return root.value


def _take_outcome(core: Core, gen: Any, ctx: contextvars.Context, y: Any, rounds: int,
                  sent: list[Any], result: Any, exc: BaseException | None,
                  stack: list[Any]) -> Root:
    """``core`` takes the chain over, with the outcome of the call the short path made."""
    root, call = core.adopt_call(gen, ctx, y, rounds, sent, stack)
    core.complete(call, result, exc)
    return root


def _abort(core: Core | None, gen: Any, ctx: contextvars.Context, rounds: int,
           exc: BaseException, stack: list[Any]) -> None:
    """A BaseException reached the short path: close the generators, note the rounds (``Core.abort``).

    Wherever it arrived: before a hand-over, during one (``core`` not
    holding the chain yet), or in ``core``'s hands, before or after its
    driver's own ``abort`` (which makes this one a no-op).
    """
    if core is not None:
        if core.closed:
            return
        if core.live or core.broods:  # it holds the chain, or what is left of it
            core.abort(exc)
            return
        rounds = max(rounds, core.rounds)
    core = Core(plain=True)  # the chain is still the short path's (or has ended)
    if gen.gi_suspended or stack:
        core.adopt_root(gen, ctx, None, rounds, stack)
    else:
        core.rounds = rounds
    core.abort(exc)


def _conclude(rounds: int, held: list[BaseException]) -> NoReturn:
    """The root raised: raise ``held``'s failure as the core does (its note, its traceback)."""
    failure = held.pop()
    core = Core(plain=True)
    core.rounds = rounds
    try:
        core.conclude(failure)
    finally:
        del failure
    raise AssertionError("unreachable: conclude() raises a failure")  # pragma: no cover


async def execute_async_short(gen: Any) -> Any:
    """``execute_async(gen)``, for a generator :func:`takes_short_path` accepted.

    As :func:`execute_short`; an awaitable result, or a ``blocking`` class,
    goes to the core's asyncio driver.  Between two rounds the loop gets a
    turn, as the driver gives it.

    The loop is :func:`execute_short`'s, written out again on purpose: keep
    the two in step.  Shared through an object that keeps the chain between
    rounds (tried: ``advance()`` and ``deliver()`` methods), a request of two
    rounds cost 58.0k instructions instead of 48.6k (+19%; one sub-generator
    and one round: +21%), the cost this path exists to remove.
    """
    ctx = _copy_context()
    resume: Any = _send  # or _throw: an Exception result fails its operation
    value: Any = None
    # The generators waiting on ``gen`` (a sub-generator runs on top of its
    # parent, as in a core's task): [root, its ctx, child, its ctx, ...].
    stack: list[Any] = []
    rounds = 0
    core: Core | None = None  # the core the chain was handed to
    try:
        while True:
            try:
                y = ctx.run(resume, gen, value)
            except StopIteration as stop:
                if not stack:
                    return stop.value
                value = stop.value  # to the parent
                resume = _send
                ctx = stack.pop()
                gen = stack.pop()
                continue
            except Exception as exc:
                failure = exc if exc.__class__ is not AttributeError else (
                    explain_attribute_error(gen, exc))
                if not stack:
                    break
                value = failure  # thrown into the parent
                resume = _throw
                ctx = stack.pop()
                gen = stack.pop()
                continue
            value = None  # the generator has it: do not keep it alive
            if y.__class__ is GeneratorType and (
                    not y.gi_suspended and y.gi_frame is not None and y.__name__ != "<genexpr>"):
                # A fresh sub-generator: it runs on top, in a copy of the context
                # (anything else about it is the core's to refuse).
                stack.append(gen)
                stack.append(ctx)
                gen = y
                ctx = ctx.copy()
                resume = _send
                continue
            one = y.__class__ is not list and y.__class__ is not tuple
            info = _sendable(y.__class__, False) if one else _sendable_structure(y, False)
            if info is None:
                core = Core(plain=True)
                root = core.adopt_root(gen, ctx, y, rounds, stack)
                del y
                await drive_async(core, None, None)
                return root.value
            if rounds:
                await asyncio.sleep(0)  # as the driver: other tasks run between rounds
            sent = [y] if one else list(y)
            rounds += 1
            call_ctx = _copy_context()
            try:
                result = call_ctx.run(info.cls.run_batch, sent)
            except BaseException as exc:
                core = Core(plain=True)
                return await _complete_in_core_async(core, gen, ctx, y, rounds, sent, call_ctx, None,
                                                     exc, stack)
            if one:
                if result.__class__ is list and len(result) == 1 and len(sent) == 1 and sent[0] is y:
                    value = result[0]
                    resume = _throw if isinstance(value, Exception) else _send
                    del result, y, sent
                    continue
            else:
                value = _structure_value(y, sent, result)
                if value is not None:
                    resume = _send
                    del result, y, sent
                    continue
            core = Core(plain=True)
            return await _complete_in_core_async(core, gen, ctx, y, rounds, sent, call_ctx, result,
                                                 None, stack)
    except BaseException as exc:
        _abort(core, gen, ctx, rounds, exc, stack)
        raise
    # The raised failure's traceback keeps this frame: its locals must not keep the
    # failure (``value`` does, if it was thrown in from a sub-generator).
    value = None
    held = [failure]
    del failure
    _conclude(rounds, held)


async def _complete_in_core_async(core: Core, gen: Any, ctx: contextvars.Context, y: Any,
                                  rounds: int, sent: list[Any], call_ctx: contextvars.Context,
                                  result: Any, exc: BaseException | None,
                                  stack: list[Any]) -> Any:
    if exc is None and result.__class__ is not list and inspect.isawaitable(result):
        # An async run_batch: awaited by the driver (in the context it was
        # made in), as its first round's call.
        root, call = core.adopt_call(gen, ctx, y, rounds, sent, stack)
        del y, sent
        call.ctx = call_ctx
        await drive_async(core, None, None, first=(call, result))
        return root.value
    root = _take_outcome(core, gen, ctx, y, rounds, sent, result, exc, stack)
    del result, exc, sent, y
    await drive_async(core, None, None)
    return root.value
