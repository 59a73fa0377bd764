"""Benchmarks of ``batch`` against raw generators, an ideal loop and its peers.

Run ``python -m benchmarks`` (``--quick`` for a smoke run, ``--only W2``,
``--json FILE``) or ``python -m benchmarks.profile W2`` for a cProfile of one
workload.  Every module also imports as plain functions: each contender is
``fn(store, sizes) -> result`` and :func:`benchmarks.harness.measure` times
a list of them.
"""

from .harness import BenchmarkError, Entry, Row, measure
from .store import FULL, QUICK, Sizes, Store
from .suite import run

__all__ = ["FULL", "QUICK", "BenchmarkError", "Entry", "Row", "Sizes", "Store", "measure", "run"]
