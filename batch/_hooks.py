"""The single indirection between the executor and ``run_batch``.

``batch.testing`` installs overrides, recorders and replayers here; the
executor reads :func:`current` once per execution and, when it is ``None``
(the normal case), calls ``run_batch`` directly at no extra cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["current", "implicit_trace", "set_hook", "set_trace_factory"]

# hook(operation_class, operations, default_call) -> whatever run_batch would return
Hook = Callable[[type, list[Any], Callable[[list[Any]], Any]], Any]

_hook: Hook | None = None


def current() -> Hook | None:
    """The installed hook, or ``None``."""
    return _hook


def set_hook(hook: Hook | None) -> None:
    """Install (or remove, with ``None``) the process-wide hook."""
    global _hook
    _hook = hook


# An "implicit trace" factory: when set, every execution that was not given
# ``trace=`` calls it and records into the Trace it returns (used by
# batch.testing.assert_rounds and friends to see executions inside a block).
TraceFactory = Callable[[], Any]

_trace_factory: TraceFactory | None = None


def implicit_trace() -> Any:
    """A Trace for an execution that was given none, or ``None``."""
    factory = _trace_factory
    return None if factory is None else factory()


def set_trace_factory(factory: TraceFactory | None) -> None:
    """Install (or remove, with ``None``) the process-wide implicit-trace factory."""
    global _trace_factory
    _trace_factory = factory
