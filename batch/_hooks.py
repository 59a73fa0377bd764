"""The single indirection between the executor and ``run_batch``.

``batch.testing`` installs overrides, recorders and replayers here; the
executor reads :func:`current` once per execution and, when it is ``None``
(the normal case), calls ``run_batch`` directly at no extra cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["current", "set_hook"]

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
