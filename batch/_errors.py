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
