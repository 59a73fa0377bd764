"""Trace: what an execution did, round by round and batch by batch."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Trace", "RoundRecord", "BatchRecord"]


@dataclass
class BatchRecord:
    """One ``run_batch`` (or ``gen_batch``) call.

    ``operation`` is the operation class (for seed ``Batcher`` groups, the
    batcher object); ``size`` is the number of operations sent, ``requested``
    the number yielded before dedupe; ``start`` is seconds since the trace
    began; ``error`` the exception the call raised, if any (per-operation
    failures are counted in ``failed``).
    """

    operation: Any
    name: str
    key: Hashable
    size: int
    requested: int
    start: float
    seconds: float = 0.0
    error: BaseException | None = None
    failed: int = 0
    thread: int = 0
    layered: bool = False


@dataclass
class RoundRecord:
    """One round: the batches dispatched together after every generator waited."""

    index: int
    start: float
    seconds: float = 0.0
    batches: list[BatchRecord] = field(default_factory=list)
    cache_hits: int = 0


class Trace:
    """Records rounds and batches of one or more executions.

    Pass it to any entry point (``batch.execute(x, trace=t)``); afterwards
    ``t.rounds[i].batches[j]`` describes each call, ``t.summary()`` renders a
    table and ``t.to_chrome_trace()`` a Perfetto / chrome://tracing timeline.
    The trace is filled in also when the execution fails.

    >>> t = Trace()
    >>> t.rounds
    []
    """

    def __init__(self) -> None:
        self.rounds: list[RoundRecord] = []
        self.cache_hits = 0
        self.error: BaseException | None = None
        self._origin = time.perf_counter()
        self._lock = threading.Lock()

    # -- recording (called by the executor) --------------------------------

    def _now(self) -> float:
        return time.perf_counter() - self._origin

    def _begin_round(self) -> RoundRecord:
        record = RoundRecord(index=len(self.rounds), start=self._now())
        self.rounds.append(record)
        return record

    # -- reading ------------------------------------------------------------

    @property
    def batches(self) -> list[BatchRecord]:
        """Every batch of every round, in dispatch order."""
        return [b for r in self.rounds for b in r.batches]

    @property
    def round_count(self) -> int:
        """Number of rounds recorded."""
        return len(self.rounds)

    def summary(self) -> str:
        """A round-by-round table of batches: class, key, size, time, error."""
        lines = [f"{len(self.rounds)} rounds, {len(self.batches)} batches, "
                 f"{sum(b.size for b in self.batches)} operations sent"]
        header = f"{'round':>5}  {'operation':<28} {'key':<14} {'sent':>6} {'asked':>6} {'ms':>9}  error"
        lines.append(header)
        lines.append("-" * len(header))
        for r in self.rounds:
            if not r.batches:
                lines.append(f"{r.index + 1:>5}  (no batches; {r.cache_hits} cache hits)")
            for j, b in enumerate(r.batches):
                label = str(r.index + 1) if j == 0 else ""
                key = "" if b.key is None else repr(b.key)
                if len(key) > 14:
                    key = key[:13] + "…"
                err = "" if b.error is None else f"{type(b.error).__name__}: {b.error}"
                if b.failed and b.error is None:
                    err = f"{b.failed} failed"
                name = b.name + (" (gen)" if b.layered else "")
                lines.append(f"{label:>5}  {name:<28} {key:<14} {b.size:>6} "
                             f"{b.requested:>6} {b.seconds * 1e3:>9.3f}  {err}")
        if self.cache_hits:
            lines.append(f"cache hits: {self.cache_hits}")
        return "\n".join(lines)

    def to_chrome_trace(self) -> str:
        """Trace Event Format JSON: one track per thread, a slice per batch, round markers.

        Open the string (saved to a ``.json`` file) in https://ui.perfetto.dev
        or chrome://tracing.
        """
        events: list[dict[str, Any]] = []
        pid = 1
        threads: dict[int, int] = {}
        for r in self.rounds:
            events.append({"name": f"round {r.index + 1}", "cat": "round", "ph": "X",
                           "ts": r.start * 1e6, "dur": max(r.seconds, 0.0) * 1e6,
                           "pid": pid, "tid": 0,
                           "args": {"batches": len(r.batches), "cache_hits": r.cache_hits}})
            for b in r.batches:
                tid = threads.setdefault(b.thread, len(threads) + 1)
                args: dict[str, Any] = {"size": b.size, "requested": b.requested,
                                        "key": repr(b.key), "round": r.index + 1}
                if b.error is not None:
                    args["error"] = f"{type(b.error).__name__}: {b.error}"
                if b.failed:
                    args["failed"] = b.failed
                events.append({"name": b.name, "cat": "batch", "ph": "X",
                               "ts": b.start * 1e6, "dur": b.seconds * 1e6,
                               "pid": pid, "tid": tid, "args": args})
        meta = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                 "args": {"name": "batch"}},
                {"name": "thread_name", "ph": "M", "pid": pid, "tid": 0,
                 "args": {"name": "rounds"}}]
        for ident, tid in threads.items():
            meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                         "args": {"name": f"worker {tid} (thread {ident})"}})
        return json.dumps({"traceEvents": meta + events, "displayTimeUnit": "ms"})

    def __repr__(self) -> str:
        return f"<Trace {len(self.rounds)} rounds, {len(self.batches)} batches>"
