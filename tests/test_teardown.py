"""Closing a task whose chain an interrupt caught half-changed (``batch._teardown.close_tasks``).

``step`` pushes a sub-generator onto its task's chain, and pops a finished
one, in two steps each; a ``KeyboardInterrupt`` can land between the two.
Whatever it leaves, every open generator of the chain is closed, top first,
each in its own context.
"""

from __future__ import annotations

import contextvars
from collections.abc import Generator
from typing import Any

from batch._tasks import CTX, GEN, STACK
from batch._teardown import close_tasks

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("WHO", default="nobody")


def _started(name: str, closed: list[tuple[str, str]]) -> Generator[Any, Any, Any]:
    def gen() -> Generator[Any, Any, Any]:
        WHO.set(name)
        try:
            yield name
        finally:
            closed.append((name, WHO.get()))

    ctx = contextvars.copy_context()
    g = gen()
    ctx.run(next, g)
    return g, ctx  # type: ignore[return-value]


def _task(top: Any, top_ctx: Any, stack: list[Any]) -> list[Any]:
    task: list[Any] = [None] * 8
    task[GEN], task[CTX], task[STACK] = top, top_ctx, stack
    return task


def _finished() -> Generator[Any, Any, Any]:
    def child() -> Generator[Any, Any, Any]:
        yield
    g = child()
    for _ in g:
        pass
    return g


def test_a_whole_chain_closes_top_first_each_in_its_context() -> None:
    closed: list[tuple[str, str]] = []
    root, rctx = _started("root", closed)
    parent, pctx = _started("parent", closed)
    child, cctx = _started("child", closed)
    assert close_tasks([_task(child, cctx, [root, rctx, parent, pctx])]) == []
    assert closed == [("child", "child"), ("parent", "parent"), ("root", "root")]


def test_a_pop_cut_after_its_first_step() -> None:
    # ctx = task[CTX] = stack.pop() ran; gen = task[GEN] = stack.pop() did not:
    # the ended child is still on top, with its parent's context.
    closed: list[tuple[str, str]] = []
    root, rctx = _started("root", closed)
    parent, pctx = _started("parent", closed)
    task = _task(_finished(), pctx, [root, rctx, parent])
    assert close_tasks([task]) == []
    assert closed == [("parent", "parent"), ("root", "root")]
    assert task[GEN] is None and task[STACK] is None


def test_a_push_cut_after_its_first_step() -> None:
    # stack.append(gen) ran; stack.append(ctx) and the new top did not.
    closed: list[tuple[str, str]] = []
    root, rctx = _started("root", closed)
    parent, pctx = _started("parent", closed)
    assert close_tasks([_task(parent, pctx, [root, rctx, parent])]) == []
    assert closed == [("parent", "parent"), ("root", "root")]


def test_an_interrupt_in_a_finally_block_does_not_stop_the_closing() -> None:
    closed: list[str] = []

    def stubborn() -> Generator[Any, Any, Any]:
        try:
            yield
        finally:
            closed.append("stubborn")
            raise KeyboardInterrupt

    def plain(name: str) -> Generator[Any, Any, Any]:
        try:
            yield
        finally:
            closed.append(name)

    gens = [stubborn(), plain("below"), plain("other task")]
    for g in gens:
        next(g)
    ctx = contextvars.copy_context()
    tasks = [_task(gens[0], ctx, [gens[1], ctx]), _task(gens[2], ctx, [])]
    try:
        close_tasks(tasks)
    except KeyboardInterrupt:
        pass
    else:  # pragma: no cover
        raise AssertionError("the interrupt was not raised after the closing")
    assert closed == ["stubborn", "below", "other task"]
