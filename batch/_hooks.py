"""The single indirection between the executor and ``run_batch``.

``batch.testing`` installs overrides, recorders and replayers here; the
executor reads :func:`current` once, when an execution starts, and keeps
that hook for the whole execution: a block entered later (in another thread,
or by one of its own generators) never changes an execution already
running.  When it is ``None`` (the normal case) the executor calls
``run_batch`` directly at no extra cost.

Two kinds of things can be installed, both process-wide and thread-safe:

- an *override* (:func:`add_override`) replaces what ``run_batch`` of one
  operation class is, as if the class attribute had been patched, but without
  touching the class: entering and leaving overrides from several threads in
  any order always restores the right function;
- a *layer* (:func:`add_layer`) wraps every call: ``layer(operation_class,
  operations, call)`` where ``call(operations)`` is the next layer in, or the
  (possibly overridden) ``run_batch``.  The layer added last sees the call
  first.

The installed state is an immutable snapshot replaced under a lock, and the
hook :func:`current` returns is bound to the snapshot in force when it was
read: an execution sees exactly the installations that were in force when it
started, whatever other threads install or remove meanwhile.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "Hook",
    "add_layer",
    "add_override",
    "current",
    "implicit_trace",
    "remove",
    "set_trace_factory",
]

# hook(operation_class, operations, default_call) -> whatever run_batch would return
Hook = Callable[[type, list[Any], Callable[[list[Any]], Any]], Any]

_lock = threading.Lock()
_tokens = itertools.count(1)

# (layers, overrides): layers are (token, hook) oldest first; overrides map a
# class to its (token, fn) entries, the last one in force.
_State = tuple[tuple[tuple[int, Hook], ...], dict[type, tuple[tuple[int, Any], ...]]]
_state: _State = ((), {})
_hook: Hook | None = None


def current() -> Hook | None:
    """The hook the executor should call instead of ``run_batch``, or ``None``."""
    return _hook


def _find_override(overrides: dict[type, tuple[tuple[int, Any], ...]], cls: type) -> Any:
    # Resolve like attribute lookup: a subclass that defines its own run_batch
    # shadows an override installed on a base class.
    for klass in cls.__mro__:
        entries = overrides.get(klass)
        if entries:
            return entries[-1][1]
        if "run_batch" in klass.__dict__:
            return None
    return None


def _dispatcher(state: _State) -> Hook:
    """The hook that routes calls through ``state``'s overrides and layers (never a later state)."""
    layers, overrides = state

    def dispatch(cls: type, operations: list[Any], default: Callable[[list[Any]], Any]) -> Any:
        call = default
        if overrides:
            fn = _find_override(overrides, cls)
            if fn is not None:
                call = fn
        for _, layer in layers:
            call = _bind(layer, cls, call)
        return call(operations)

    return dispatch


def _bind(layer: Hook, cls: type, inner: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    def call(operations: list[Any]) -> Any:
        return layer(cls, operations, inner)

    return call


def _publish(state: _State) -> None:
    global _state, _hook
    _state = state
    _hook = _dispatcher(state) if (state[0] or state[1]) else None


def add_layer(hook: Hook) -> int:
    """Wrap every ``run_batch`` call in ``hook``; returns a token for :func:`remove`."""
    with _lock:
        token = next(_tokens)
        layers, overrides = _state
        _publish(((*layers, (token, hook)), overrides))
        return token


def add_override(cls: type, fn: Callable[[list[Any]], Any]) -> int:
    """Route ``cls``'s batches to ``fn(operations)``; returns a token for :func:`remove`."""
    with _lock:
        token = next(_tokens)
        layers, overrides = _state
        new = dict(overrides)
        new[cls] = (*new.get(cls, ()), (token, fn))
        _publish((layers, new))
        return token


def remove(token: int) -> None:
    """Remove the layer or override that ``token`` names (no error if gone)."""
    with _lock:
        layers, overrides = _state
        new_layers = tuple(entry for entry in layers if entry[0] != token)
        new_overrides: dict[type, tuple[tuple[int, Any], ...]] = {}
        for cls, entries in overrides.items():
            kept = tuple(entry for entry in entries if entry[0] != token)
            if kept:
                new_overrides[cls] = kept
        _publish((new_layers, new_overrides))


# An "implicit trace" factory: every execution calls it through
# implicit_trace(given) when one is installed (batch.testing.capture uses it to
# see every execution inside a block).  ``given`` is the trace passed with
# ``trace=`` (or None); the factory returns the trace to record into: ``given``
# itself (after noting it), a new Trace, or None for no tracing.
TraceFactory = Callable[[Any], Any]

_trace_factory: TraceFactory | None = None


def implicit_trace(given: Any = None) -> Any:
    """The trace an execution records into, given the one passed as ``trace=``."""
    factory = _trace_factory
    return given if factory is None else factory(given)


def set_trace_factory(factory: TraceFactory | None) -> None:
    """Install (or remove, with ``None``) the process-wide implicit-trace factory."""
    global _trace_factory
    _trace_factory = factory
