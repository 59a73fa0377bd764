"""Timing, result checks, and the table and JSON output.

How a workload is measured (:func:`measure`):

- Every contender runs ``repeat`` samples; samples are interleaved (one of
  each contender, then the next round), so a burst of load on a shared
  machine hits all contenders alike instead of one of them.
- Before each sample: ``gc.collect()`` and the store's counters reset; gc
  stays enabled while the sample runs, as in real use.  A sample is timed
  with ``time.perf_counter`` around the whole call, roots' creation included.
- The first contender is the reference (the ideal plain loop): every other
  contender's result must equal its result, or :class:`BenchmarkError` is
  raised (a benchmark that computes something else is a defect).
- Reported per contender: best and median seconds, batch calls and keys sent
  (counted by the store), and the overhead per operation beyond the ideal
  loop, ``(time - ideal time) / operations``, for best and median.  The ratio
  column divides a contender's best overhead by the base contender's (raw
  generators for W1-W4).
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .store import Sizes, Store

__all__ = ["BenchmarkError", "Entry", "Row", "Runner", "measure", "time_call", "format_table", "rows_to_json"]

Runner = Callable[[Store, Sizes], Any]

OK = "ok"


class BenchmarkError(AssertionError):
    """A contender computed something other than the reference result."""


@dataclass
class Entry:
    """A contender in one workload: a runner, or why there is none."""

    name: str
    run: Runner | None
    status: str = OK  # "not installed", "batch.sql not available", ...


@dataclass
class Row:
    """What was measured for one contender on one workload."""

    workload: str
    contender: str
    status: str
    ops: int
    unit: str
    samples: list[float] = field(default_factory=list)
    best_s: float | None = None
    median_s: float | None = None
    overhead_best_us: float | None = None
    overhead_median_us: float | None = None
    ratio: float | None = None
    calls: int | None = None
    keys: int | None = None
    batches: list[int] | None = None


def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``gc.collect()``, then time one call of ``fn``; returns (seconds, result)."""
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    t1 = time.perf_counter()
    return t1 - t0, result


def measure(workload: str, entries: Sequence[Entry], sizes: Sizes, repeat: int, *,
            base: str, ops: int | None = None, unit: str = "op") -> list[Row]:
    """Time every entry ``repeat`` times on ``workload``; the first entry is the reference.

    ``base`` names the entry whose overhead the ratio column divides by.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    n_ops = sizes.ops(workload) if ops is None else ops
    store = Store(sizes)
    rows = [Row(workload, e.name, e.status, n_ops, unit) for e in entries]
    live = [(e, r) for e, r in zip(entries, rows) if e.run is not None and e.status == OK]
    if not live or live[0][0] is not entries[0]:
        raise ValueError(f"{workload}: the reference contender {entries[0].name!r} must be runnable")
    expected: Any = None
    have_expected = False
    try:
        for _ in range(repeat):
            for entry, row in live:
                if row.status != OK:
                    continue
                run = entry.run
                assert run is not None
                store.reset()
                try:
                    seconds, result = time_call(functools.partial(run, store, sizes))
                except RecursionError:
                    row.status = "RecursionError"
                    continue
                if not have_expected:
                    expected, have_expected = result, True
                elif result != expected:
                    raise BenchmarkError(
                        f"{workload}: {entry.name} returned a different result than "
                        f"{entries[0].name}; the benchmark would compare unequal work")
                del result
                if row.calls is None:
                    row.calls, row.keys, row.batches = store.calls, store.keys, store.batches
                elif (row.calls, row.keys) != (store.calls, store.keys):
                    raise BenchmarkError(
                        f"{workload}: {entry.name} made {store.calls} calls / {store.keys} keys, "
                        f"but {row.calls} calls / {row.keys} keys in an earlier sample")
                row.samples.append(seconds)
    finally:
        for entry in entries:
            close = getattr(entry.run, "close", None)
            if close is not None:
                close()
    summarize(rows, base)
    return rows


def summarize(rows: list[Row], base: str) -> None:
    """Fill in best/median, overhead per op (beyond rows[0]) and the ratio to ``base``."""
    for row in rows:
        if row.samples:
            row.best_s = min(row.samples)
            row.median_s = statistics.median(row.samples)
    ref = rows[0]
    if ref.best_s is None or ref.median_s is None:
        return
    for row in rows:
        if row.best_s is None or row.median_s is None or row is ref:
            continue
        row.overhead_best_us = (row.best_s - ref.best_s) / row.ops * 1e6
        row.overhead_median_us = (row.median_s - ref.median_s) / row.ops * 1e6
    base_row = next((r for r in rows if r.contender == base), None)
    if base_row is None or base_row.overhead_best_us is None:
        return
    for row in rows:
        if row.overhead_best_us is not None and base_row.overhead_best_us > 0:
            row.ratio = row.overhead_best_us / base_row.overhead_best_us


# -- output ----------------------------------------------------------------------

def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(title: str, rows: Sequence[Row], *, base_label: str) -> str:
    """A fixed-width table of rows (one per contender)."""
    unit = rows[0].unit if rows else "op"
    head = (f"{'contender':<30} {'best ms':>10} {'median ms':>10} {'best us/' + unit:>14} "
            f"{'median us/' + unit:>16} {'calls':>7} {'keys':>10} {'x ' + base_label:>8}")
    lines = [title, head, "-" * len(head)]
    for r in rows:
        if r.status != OK or r.best_s is None:
            lines.append(f"{r.contender:<30} {r.status}")
            continue
        best_ms = r.best_s * 1e3
        median_ms = (r.median_s or 0.0) * 1e3
        lines.append(
            f"{r.contender:<30} {best_ms:>10.2f} {median_ms:>10.2f} "
            f"{_num(r.overhead_best_us, '.3f'):>14} {_num(r.overhead_median_us, '.3f'):>16} "
            f"{_num(r.calls, ','):>7} {_num(r.keys, ','):>10} {_num(r.ratio, '.2f'):>8}")
    return "\n".join(lines)


def rows_to_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The rows as JSON-able dicts (per-call batch sizes left out when long)."""
    out = []
    for r in rows:
        d = asdict(r)
        if r.batches is not None and len(r.batches) > 20:
            d["batches"] = [*r.batches[:20], "..."]
        out.append(d)
    return out
