"""``python -m batch demo``: see what batching does to the number of round trips."""

from __future__ import annotations

import sys

from ._demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
