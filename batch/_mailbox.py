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

    __slots__ = ("inbox", "waiting", "notify")

    def __init__(self) -> None:
        self.inbox: deque[tuple[str, Any, Any, Any]] = deque()  # appended from any thread
        # Our waiters on other executions' answers, by id: (waiter, the
        # execution that owes the answer, kind).  A waiter taken out of it
        # (withdrawn: see Core.blocked) ignores an answer that comes later.
        self.waiting: dict[int, tuple[Any, Any, str]] = {}
        # Set by the driver: wakes it from wherever it waits (an Event's set,
        # or a loop's call_soon_threadsafe); called from the posting thread.
        self.notify: Callable[[], None] | None = None

    @property
    def due(self) -> int:
        """Answers still to come."""
        return len(self.waiting)

    def expect(self, target: Any, owner: Any, kind: str = ANSWER) -> None:
        """One of our waiters now waits on ``owner``'s answer (an operation's, or a shared generator's)."""
        self.waiting[id(target)] = (target, owner, kind)

    def post(self, kind: str, target: Any, value: Any, info: Any = None) -> None:
        """Another execution answers (``ANSWER``) or gives back (``RETRY``) a wait; any thread."""
        self.inbox.append((kind, target, value, info))
        notify = self.notify
        if notify is not None:
            notify()

    def take(self) -> list[tuple[str, Any, Any, Any]]:
        """The messages arrived so far for waiters still waiting (driver's thread)."""
        inbox = self.inbox
        waiting = self.waiting
        got = []
        while inbox:
            message = inbox.popleft()
            if waiting.pop(id(message[1]), None) is not None:
                got.append(message)
        return got
