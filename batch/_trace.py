"""Trace: what an execution did, round by round and batch by batch."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Trace", "RoundRecord", "BatchRecord"]


@dataclass(slots=True)
class BatchRecord:
    """One ``run_batch`` (or ``gen_batch``) call.

    ``operation`` is the operation class (for seed ``Batcher`` groups, the
    batcher object) and ``name`` its display name; ``key`` is the group's
    ``batch_key()`` (``None`` for the default group); ``size`` is the number
    of operations sent, ``requested`` the number yielded before dedupe;
    ``start`` is seconds since the trace began and ``seconds`` the call's
    duration (for a layered ``run_batch`` generator, only the call that
    created it); ``error`` is the exception that failed the whole call, if
    any, and ``failed`` the number of operations that got an exception
    instance as their result; ``thread`` the ``threading.get_ident()`` of the
    thread that made the call; ``layered`` whether ``run_batch`` was a batch
    generator.
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


@dataclass(slots=True)
class RoundRecord:
    """One round: the batches dispatched together after every generator waited.

    ``index`` counts from 0 (the summary prints it from 1); ``start`` and
    ``seconds`` bound the dispatch phase; ``cache_hits`` counts operations
    answered from the :class:`batch.OperationCache` while this round's
    generators were stepped (they cost no batch).
    """

    index: int
    start: float
    seconds: float = 0.0
    batches: list[BatchRecord] = field(default_factory=list)
    cache_hits: int = 0


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Trace:
    """Records rounds and batches of one or more executions.

    Pass it to any entry point (``batch.execute(x, trace=t)``); afterwards
    ``t.rounds[i].batches[j]`` describes each call, ``t.summary()`` renders a
    table and ``t.to_chrome_trace()`` a Perfetto / chrome://tracing timeline.
    The trace is filled in also when the execution fails: ``t.error`` is then
    the exception, which carries ``batch_rounds_completed``.

    >>> import batch
    >>> class Double(batch.BatchableOperation[int]):
    ...     def __init__(self, n: int) -> None:
    ...         self.n = n
    ...     @classmethod
    ...     def run_batch(cls, operations):
    ...         return [op.n * 2 for op in operations]
    >>> t = Trace()
    >>> batch.execute([Double(1), Double(2)], trace=t)
    [2, 4]
    >>> [(b.name, b.size) for r in t.rounds for b in r.batches]
    [('Double', 2)]
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
        # Several executions may share one trace (even from several threads).
        with self._lock:
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

    def summary(self, max_rows: int | None = 50) -> str:
        """A round-by-round table of batches, readable for hundreds of batches.

        One row per operation class and batch key in each round: the chunks
        of one group (``max_batch_size``) are folded into one row whose
        ``calls`` column counts them.  ``sent`` is the number of operations
        passed to ``run_batch``, ``asked`` the number yielded (more than
        ``sent`` when ``dedupe`` merged equal ones), ``hits`` the cache hits
        of the round, ``ms`` the summed time of the calls.  ``(gen)`` marks a
        layered ``run_batch``.  Past ``max_rows`` rows the table is cut, with
        a note of what was left out (``max_rows=None`` prints everything).
        """
        batches = self.batches
        sent = sum(b.size for b in batches)
        asked = sum(b.requested for b in batches)
        head = (f"{len(self.rounds)} round{'s' * (len(self.rounds) != 1)}, "
                f"{len(batches)} batch{'es' * (len(batches) != 1)}, {sent} operation{'s' * (sent != 1)} sent")
        if asked != sent:
            head += f" ({asked} asked)"
        head += f", {self.cache_hits} cache hit{'s' * (self.cache_hits != 1)}"
        head += f", {sum(b.seconds for b in batches) * 1e3:.3f} ms in batches"
        rows: list[tuple[str, str, str, str, str, str, str, str, str]] = []
        for r in self.rounds:
            folded: dict[tuple[str, str, bool], list[BatchRecord]] = {}
            for b in r.batches:
                key = "" if b.key is None else repr(b.key)
                folded.setdefault((b.name, key, b.layered), []).append(b)
            first = True
            hits = str(r.cache_hits) if r.cache_hits else ""
            if not folded:
                rows.append((str(r.index + 1), "(no batches)", "", "", "", "", hits, "", ""))
            for (name, key, layered), group in folded.items():
                errors = [b.error for b in group if b.error is not None]
                failed = sum(b.failed for b in group)
                notes = []
                if errors:
                    count = f"{len(errors)} of {len(group)} calls raised " if len(group) > 1 else ""
                    notes.append(count + _error_text(errors[0]))
                if failed:
                    notes.append(f"{failed} operation{'s' * (failed != 1)} failed")
                rows.append((
                    str(r.index + 1) if first else "",
                    name + (" (gen)" if layered else ""),
                    key,
                    str(len(group)),
                    str(sum(b.size for b in group)),
                    str(sum(b.requested for b in group)),
                    hits if first else "",
                    f"{sum(b.seconds for b in group) * 1e3:.3f}",
                    "; ".join(notes),
                ))
                first = False
        hidden = 0
        if max_rows is not None and len(rows) > max_rows:
            hidden = len(rows) - max_rows
            last_shown = next((row[0] for row in reversed(rows[:max_rows]) if row[0]), "1")
            rows = rows[:max_rows]
        name_w = min(40, max([len("operation")] + [len(row[1]) for row in rows]))
        key_w = min(20, max([len("key")] + [len(row[2]) for row in rows]))
        header = (f"{'round':>5}  {'operation':<{name_w}}  {'key':<{key_w}}  {'calls':>5}  "
                  f"{'sent':>6}  {'asked':>6}  {'hits':>5}  {'ms':>9}  error")
        lines = [head, header, "-" * len(header)]
        for rnd, name, key, calls, nsent, nasked, hits, ms, err in rows:
            lines.append(
                f"{rnd:>5}  {_cut(name, name_w):<{name_w}}  {_cut(key, key_w):<{key_w}}  "
                f"{calls:>5}  {nsent:>6}  {nasked:>6}  {hits:>5}  {ms:>9}  {_cut(err, 80)}".rstrip())
        if hidden:
            lines.append(f"… {hidden} more row{'s' * (hidden != 1)} after round {last_shown} "
                         f"(summary(max_rows=None) shows all)")
            # The cut table hides the big picture: add totals per operation.
            counts: dict[str, list[int]] = {}
            times: dict[str, float] = {}
            for b in batches:
                tally = counts.setdefault(b.name, [0, 0, 0])
                tally[0] += 1
                tally[1] += b.size
                tally[2] += b.requested
                times[b.name] = times.get(b.name, 0.0) + b.seconds
            lines.append("totals by operation:")
            for op_name, (calls_n, sent_n, asked_n) in counts.items():
                lines.append(f"{'':>5}  {_cut(op_name, name_w):<{name_w}}  {'':<{key_w}}  "
                             f"{calls_n:>5}  {sent_n:>6}  {asked_n:>6}  {'':>5}  "
                             f"{times[op_name] * 1e3:>9.3f}")
        if self.error is not None:
            completed = getattr(self.error, "batch_rounds_completed", None)
            after = "" if completed is None else f" after {completed} round{'s' * (completed != 1)}"
            lines.append(f"execution failed{after}: {_cut(_error_text(self.error), 200)}")
        return "\n".join(lines)

    def to_chrome_trace(self) -> str:
        """Trace Event Format JSON: one track per worker thread, a slice per batch, round markers.

        Save the string to a ``.json`` file and open it in
        https://ui.perfetto.dev or chrome://tracing.  Times are microseconds
        since the trace was created.  Events:

        - a ``"rounds"`` track (``tid`` 0) with one complete slice (``ph: "X"``,
          ``cat: "round"``) per round named ``round N``, args ``batches`` and
          ``cache_hits``, plus a global instant marker (``ph: "i"``,
          ``s: "g"``) at each round's start;
        - one track per thread that ran ``run_batch`` (``tid`` 1, 2, ... named
          ``worker N``); calls that overlap on one thread (``async def
          run_batch`` under ``execute_async``) get extra tracks of their own;
        - one complete slice per call (``cat: "batch"``) named after the
          operation class, args ``round``, ``key``, ``size``, ``requested``,
          ``thread`` (its ``threading.get_ident()``), ``layered``, and
          ``error`` / ``failed`` when set;
        - an instant marker ``execution failed`` when the execution failed.
        """
        pid = 1
        events: list[dict[str, Any]] = []
        # (thread ident, lane) -> tid; lanes keep overlapping slices apart.
        tids: dict[tuple[int, int], int] = {}
        lane_ends: dict[int, list[float]] = {}
        end = 0.0
        for r in self.rounds:
            ts = _us(r.start)
            dur = _us(max(r.seconds, 0.0))
            end = max(end, ts + dur)
            events.append({"name": f"round {r.index + 1}", "cat": "round", "ph": "X",
                           "ts": ts, "dur": dur, "pid": pid, "tid": 0,
                           "args": {"batches": len(r.batches), "cache_hits": r.cache_hits}})
            events.append({"name": f"round {r.index + 1}", "cat": "round", "ph": "i",
                           "s": "g", "ts": ts, "pid": pid, "tid": 0})
            for b in sorted(r.batches, key=lambda b: b.start):
                start = _us(b.start)
                stop = start + _us(b.seconds)
                end = max(end, stop)
                ends = lane_ends.setdefault(b.thread, [])
                lane = next((i for i, e in enumerate(ends) if e <= start), len(ends))
                if lane == len(ends):
                    ends.append(stop)
                else:
                    ends[lane] = stop
                tid = tids.setdefault((b.thread, lane), len(tids) + 1)
                args: dict[str, Any] = {"round": r.index + 1, "key": repr(b.key), "size": b.size,
                                        "requested": b.requested, "thread": b.thread,
                                        "layered": b.layered}
                if b.error is not None:
                    args["error"] = _error_text(b.error)
                if b.failed:
                    args["failed"] = b.failed
                events.append({"name": b.name, "cat": "batch", "ph": "X", "ts": start,
                               "dur": _us(b.seconds), "pid": pid, "tid": tid, "args": args})
        if self.error is not None:
            events.append({"name": "execution failed", "cat": "error", "ph": "i", "s": "g",
                           "ts": end, "pid": pid, "tid": 0,
                           "args": {"error": _error_text(self.error)}})
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "batch"}},
            {"name": "thread_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "rounds"}},
            {"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": 0,
             "args": {"sort_index": 0}},
        ]
        workers: dict[int, int] = {}
        for (ident, lane), tid in tids.items():
            n = workers.setdefault(ident, len(workers) + 1)
            label = f"worker {n}" + (f" (overlap {lane})" if lane else "")
            meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                         "args": {"name": label}})
            meta.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid,
                         "args": {"sort_index": tid}})
        return json.dumps({"traceEvents": meta + events, "displayTimeUnit": "ms",
                           "otherData": {"rounds": len(self.rounds),
                                         "batches": sum(len(r.batches) for r in self.rounds)}})

    def __repr__(self) -> str:
        return f"<Trace {len(self.rounds)} rounds, {len(self.batches)} batches>"
