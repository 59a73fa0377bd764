"""``python -m benchmarks.profile W2``: one workload under cProfile, top functions by tottime.

Options: ``--contender batch`` (default; also ``raw``, ``ideal``, ``asynq``,
``aiodataloader``, or a W2 option variant: ``trace``, ``cache``, ``workers``,
``async``), ``--quick`` for the small sizes, ``--limit 25``, ``--sort
tottime`` (any pstats sort key).  The workload runs once unprofiled first
(imports, caches), then once under the profiler; its result is checked
against the ideal loop's.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from typing import Any

from . import ideal, options, raw, with_aiodataloader, with_asynq, with_batch
from .harness import BenchmarkError, Runner
from .store import FULL, QUICK, Sizes, Store

__all__ = ["main", "profile"]

WORKLOADS = ("W1", "W2", "W3", "W4")
W2_OPTIONS: dict[str, Runner] = {
    "trace": options.trace_on,
    "cache": options.cache_passed,
    "workers": options.workers,
    "async": with_aiodataloader.LoopRunner(options.async_ops),
}
CONTENDERS = ("batch", "raw", "ideal", "asynq", "aiodataloader", *W2_OPTIONS)


def _runner(workload: str, contender: str) -> Runner:
    fn = workload.lower()
    if contender in W2_OPTIONS:
        if workload != "W2":
            raise ValueError(f"--contender {contender} is an option variant of W2 only")
        return W2_OPTIONS[contender]
    if contender == "asynq" or contender == "aiodataloader":
        module: Any = with_asynq if contender == "asynq" else with_aiodataloader
        if not module.AVAILABLE:
            raise ValueError(f"{contender} is not installed (pip install -e '.[bench]')")
        runner: Runner = module.WORKLOADS[workload]
        return runner
    module = {"batch": with_batch, "raw": raw, "ideal": ideal}[contender]
    runner = getattr(module, fn)
    return runner


def profile(workload: str, contender: str = "batch", sizes: Sizes = FULL, *,
            limit: int = 25, sort: str = "tottime") -> str:
    """Profile one run of ``contender`` on ``workload``; return the pstats report."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, got {workload!r}")
    run = _runner(workload, contender)
    store = Store(sizes)
    expected = getattr(ideal, workload.lower())(store, sizes)
    try:
        if run(store, sizes) != expected:
            raise BenchmarkError(f"{workload}: {contender} computed a different result")
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        result = run(store, sizes)
        profiler.disable()
        seconds = time.perf_counter() - t0
    finally:
        close = getattr(run, "close", None)
        if close is not None:
            close()
    if result != expected:
        raise BenchmarkError(f"{workload}: {contender} computed a different result")
    out = io.StringIO()
    out.write(f"{workload} with {contender}: {seconds * 1e3:.1f} ms under cProfile "
              f"({sizes.ops(workload):,} ops)\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(sort).print_stats(limit)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile",
                                     description="Run one workload under cProfile.")
    parser.add_argument("workload", type=str.upper, choices=WORKLOADS)
    parser.add_argument("--contender", default="batch", choices=CONTENDERS)
    parser.add_argument("--quick", action="store_true", help="the small --quick sizes")
    parser.add_argument("--limit", type=int, default=25, help="functions to list (default 25)")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (default tottime)")
    args = parser.parse_args(argv)
    try:
        report = profile(args.workload, args.contender, QUICK if args.quick else FULL,
                         limit=args.limit, sort=args.sort)
    except ValueError as exc:
        parser.error(str(exc))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
