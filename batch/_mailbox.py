"""Waiting on another execution's in-flight operation or shared generator: the only cross-thread part.

Executions that share an :class:`batch.OperationCache` (threads serving one
web request, tasks of one event loop) never send the same cached operation
twice: the second one to want it registers its waiter with the first one's
in-flight entry (``_cache.InFlight``) and gets the answer in its *mailbox*.
The answer is posted from whichever thread the sender's driver runs in; the
single-threaded core only reads the mailbox between steps, and its driver is
told through :attr:`Mailbox.notify` that something arrived.

A mailbox is made only for an execution that waits on another one, so an
execution that never does pays nothing for this.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Mailbox"]

# Message kinds.
ANSWER = "answer"  # the sender's result for our waiter
RETRY = "retry"  # the sender gave up (failed, cancelled): send the operation ourselves
# A shared generator another execution ran has finished: target is (sink,
# index), info is the ``failed`` flag.
SHARED = "shared"


class Mailbox:
    """Answers that other executions owe this one."""

    __slots__ = ("inbox", "due", "targets", "notify")

    def __init__(self) -> None:
        self.inbox: deque[tuple[str, Any, Any, Any]] = deque()  # appended from any thread
        self.due = 0  # answers still to come
        self.targets: list[Any] = []  # our waiters on them (so abort() can close them)
        # Set by the driver: wakes it from wherever it waits (an Event's set,
        # or a loop's call_soon_threadsafe); called from the posting thread.
        self.notify: Callable[[], None] | None = None

    def expect(self, target: Any) -> None:
        """One of our waiters now waits on another execution's answer."""
        self.due += 1
        self.targets.append(target)

    def post(self, kind: str, target: Any, value: Any, info: Any = None) -> None:
        """Another execution answers (``ANSWER``) or gives back (``RETRY``) a wait; any thread."""
        self.inbox.append((kind, target, value, info))
        notify = self.notify
        if notify is not None:
            notify()

    def take(self) -> list[tuple[str, Any, Any, Any]]:
        """The messages arrived so far (driver's thread)."""
        inbox = self.inbox
        got = []
        while inbox:
            got.append(inbox.popleft())
        self.due -= len(got)
        if self.due == 0:
            self.targets.clear()
        return got
