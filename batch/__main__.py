"""``python -m batch demo`` (see what batching saves) and ``python -m batch worker``."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Dispatch to the subcommand named first on the command line."""
    if argv and argv[0] == "worker":
        from ._worker_cli import main as worker_main

        return worker_main(argv[1:])
    from ._demo import main as demo_main

    return demo_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
