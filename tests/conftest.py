"""Shared fixtures: a recording fake operation factory and round counting.

``recorder.op("GetUser")`` makes a fresh :class:`batch.BatchableOperation`
subclass named ``GetUser`` whose ``run_batch`` appends
``("GetUser", [op.key, ...])`` to ``recorder.calls`` and answers each
operation with ``fn(key)`` (the key itself by default).  ``fn`` may return an
``Exception`` instance to fail only that operation, or raise to fail the whole
call.  Batching assertions then read like the user's own words::

    assert recorder.calls == [("GetUser", [1, 2])]

``recorder.execute(x)`` runs ``x`` with a trace, so ``recorder.rounds`` is the
number of rounds it took.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import pytest

import batch

Fn = Callable[[Any], Any]


def _identity(key: Any) -> Any:
    return key


class Recorder:
    """Makes recording operation classes; every class writes into ``self.calls``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.trace = batch.Trace()

    def op(
        self,
        name: str,
        fn: Fn | None = None,
        *,
        key: Callable[[Any], Hashable] | None = None,
        whole: Callable[[list[Any]], Any] | None = None,
        **attrs: Any,
    ) -> type[batch.BatchableOperation[Any]]:
        """A new operation class ``name``; ``key`` computes ``batch_key()`` from the op's key.

        ``whole(keys)``, if given, computes ``run_batch``'s entire return value
        instead of ``fn`` (to return too few results, or not a list at all).
        Extra keyword arguments become class attributes (``max_batch_size=2``).
        """
        answer = fn if fn is not None else _identity
        calls = self.calls

        def __init__(self: Any, key: Any) -> None:
            self.key = key

        def __repr__(self: Any) -> str:
            return f"{name}({self.key!r})"

        def run_batch(cls: Any, operations: list[Any]) -> list[Any]:
            keys = [op.key for op in operations]
            calls.append((cls.__name__, keys))
            if whole is not None:
                return whole(keys)
            return [answer(k) for k in keys]

        namespace: dict[str, Any] = {
            "__init__": __init__,
            "__repr__": __repr__,
            "run_batch": classmethod(run_batch),
            "__module__": __name__,
            "__qualname__": name,
        }
        if key is not None:
            key_fn = key

            def batch_key(self: Any) -> Hashable:
                return key_fn(self.key)

            namespace["batch_key"] = batch_key
        namespace.update(attrs)
        return type(name, (batch.BatchableOperation,), namespace)

    def execute(self, x: Any, **opts: Any) -> Any:
        """``batch.execute(x)``, recording its trace in ``self.trace`` (``self.rounds``)."""
        self.trace = batch.Trace()
        return batch.execute(x, trace=self.trace, **opts)

    def execute_many(self, xs: Any, **opts: Any) -> list[Any]:
        """``batch.execute_many(xs)``, recording its trace like :meth:`execute`."""
        self.trace = batch.Trace()
        return batch.execute_many(xs, trace=self.trace, **opts)

    @property
    def rounds(self) -> int:
        """Rounds of the last :meth:`execute` / :meth:`execute_many`."""
        return len(self.trace.rounds)

    def keys(self, name: str) -> list[list[Any]]:
        """The batches sent to class ``name``, in order."""
        return [keys for n, keys in self.calls if n == name]


@pytest.fixture
def recorder() -> Recorder:
    """A fresh :class:`Recorder`."""
    return Recorder()
