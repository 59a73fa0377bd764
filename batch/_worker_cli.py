"""``python -m batch worker MODULE:FUNCTION``: serve a batch function from a Redis stream."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Run the worker command line; returns the exit status."""
    print("python -m batch worker: the Redis tier is not built yet", file=sys.stderr)
    return 2
