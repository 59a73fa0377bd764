"""The whole suite: W1-W4 against the peers, option costs, and W5 on sqlite3."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import (
    contract,
    ideal,
    options,
    raw,
    sql_page,
    w6_requests,
    w7_batchers,
    w8_redis,
    w9_http,
    with_aiodataloader,
    with_asynq,
    with_batch,
)
from .harness import Entry, format_table, measure, rows_to_json
from .store import Sizes

__all__ = ["SECTIONS", "CONTENDERS", "RAW", "CONTRACT", "IDEAL", "BATCH", "entries", "title", "run"]

SECTIONS = ("W1", "W2", "W3", "W4", "OPT", "W5", "W6", "W7", "W8", "W9")
# Short names for --contenders (the ideal loop always runs: it is the reference).
CONTENDERS = ("raw", "contract", "batch", "asynq", "aiodataloader")
IDEAL = "ideal plain loop"
RAW = "raw generators"
CONTRACT = "raw + contract (floor)"
BATCH = "batch"
NOT_INSTALLED = "not installed"
SKIPPED_NOTE = ("btrekkie/batch (the original library) is Python 2 only: not run. "
                "Ratios are overhead beyond the ideal loop / raw generators' overhead.")


def title(workload: str, sizes: Sizes) -> str:
    """The heading of a workload's table, with its sizes."""
    ops = sizes.ops(workload)
    if workload == "W1":
        return f"W1: one root yields {ops:,} ops (1 round, 1 call)"
    if workload == "W2":
        return (f"W2: {sizes.w2_roots:,} roots: user, friend ids, {sizes.w2_friends} name "
                f"sub-generators each ({ops:,} ops, 3 rounds, 3 calls)")
    if workload == "W3":
        return f"W3: chain of {sizes.w3_depth:,} nested generators, one op at the bottom (per level)"
    if workload == "W4":
        return (f"W4: {sizes.w4_roots:,} roots each yield the same {sizes.w4_keys} keys "
                f"({ops:,} ops; dedupe: 1 call of {sizes.w4_keys} keys)")
    raise ValueError(f"unknown workload {workload!r}")


def _peer(name: str, available: bool, version: str, runners: dict[str, Any], workload: str) -> Entry:
    if not available:
        return Entry(name, None, NOT_INSTALLED)
    return Entry(f"{name} {version}", runners[workload])


def entries(workload: str, contenders: Sequence[str] = CONTENDERS) -> list[Entry]:
    """The contenders of one workload, the ideal loop (the reference) first.

    ``contenders`` selects among :data:`CONTENDERS` by short name.
    """
    fn = workload.lower()
    chosen = [
        ("raw", Entry(RAW, getattr(raw, fn))),
        ("contract", Entry(CONTRACT, getattr(contract, fn))),
        ("batch", Entry(BATCH, getattr(with_batch, fn))),
        ("asynq", _peer("asynq", with_asynq.AVAILABLE, with_asynq.VERSION,
                        with_asynq.WORKLOADS, workload)),
        ("aiodataloader", _peer("aiodataloader", with_aiodataloader.AVAILABLE,
                                with_aiodataloader.VERSION, with_aiodataloader.WORKLOADS, workload)),
    ]
    return [Entry(IDEAL, getattr(ideal, fn))] + [e for name, e in chosen if name in contenders]


def _meta(sizes: Sizes, repeat: int, quick: bool) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeat": repeat,
        "quick": quick,
        "sizes": sizes.as_dict(),
        "peers": {
            "asynq": with_asynq.VERSION or NOT_INSTALLED,
            "aiodataloader": with_aiodataloader.VERSION or NOT_INSTALLED,
            "btrekkie/batch": "skipped: Python 2 only",
        },
    }


def run(sizes: Sizes, repeat: int, only: Sequence[str] = SECTIONS, *, quick: bool = False,
        contenders: Sequence[str] = CONTENDERS,
        emit: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the selected sections, emitting each table as soon as it is measured.

    Returns the JSON document: ``meta``, ``workloads`` (W1-W4 rows),
    ``options`` (option-cost rows) and ``w5`` (rows, or a ``status``).
    """
    doc: dict[str, Any] = {"meta": _meta(sizes, repeat, quick), "workloads": [],
                           "options": [], "w5": [], "w6": {}, "w8": []}
    emit(f"batch benchmarks: Python {doc['meta']['python']}, {doc['meta']['cpus']} cpus, "
         f"best and median of {repeat}" + (" (--quick)" if quick else ""))
    emit(SKIPPED_NOTE)
    for workload in ("W1", "W2", "W3", "W4"):
        if workload not in only:
            continue
        rows = measure(workload, entries(workload, contenders), sizes, repeat, base=RAW,
                       unit="level" if workload == "W3" else "op")
        doc["workloads"] += rows_to_json(rows)
        emit("")
        emit(format_table(title(workload, sizes), rows, base_label="raw"))
    if "OPT" in only:
        rows = measure("W2", options.entries(Entry(IDEAL, ideal.w2)), sizes, repeat,
                       base=options.BASE)
        doc["options"] = rows_to_json(rows)
        emit("")
        emit(format_table(f"Option costs on W2 ({sizes.ops('W2'):,} ops); ratio to plain "
                          f"execute_many's overhead", rows, base_label="plain"))
    if "W5" in only:
        emit("")
        heading = (f"W5: page of {sizes.w5_posts} posts, their authors, {sizes.w5_comments} "
                   f"comments each and the commenters, on sqlite3")
        if not sql_page.available():
            doc["w5"] = {"status": "batch.sql not available"}
            emit(f"{heading}\nbatch.sql not available")
        else:
            w5_rows = sql_page.measure_w5(sizes, repeat)
            doc["w5"] = sql_page.w5_to_json(w5_rows)
            emit(sql_page.format_w5(w5_rows, heading))
    if "W6" in only:
        emit("")
        doc["w6"] = w6_requests.measure_w6(sizes.w6_requests, max(repeat, 3) if not quick else 1)
        emit(w6_requests.format_w6(doc["w6"]))
    if "W7" in only:
        doc["w7"] = w7_batchers.measure_w7(quick, repeat)
        emit("")
        emit(w7_batchers.format_w7(doc["w7"]))
    if "W8" in only:
        emit("")
        doc["w8"] = w8_redis.measure_w8(quick)
        emit(w8_redis.format_w8(doc["w8"]))
    if "W9" in only:
        doc["w9"] = w9_http.measure(quick, repeat)
        emit("")
        emit(w9_http.format_w9(doc["w9"]))
    return doc

