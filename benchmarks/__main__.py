"""The command line.

``python -m benchmarks [--quick] [--repeat N] [--only W1,W3,OPT,W5]
[--contenders raw,batch] [--json FILE]``
"""

from __future__ import annotations

import argparse
import json
import sys

from .store import FULL, QUICK
from .suite import CONTENDERS, SECTIONS, run


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the suite, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark batch against raw generators, an ideal loop and its peers.")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and one sample each: a smoke run for CI")
    parser.add_argument("--repeat", type=int, default=None,
                        help="samples per contender (default 5, or 1 with --quick)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {','.join(SECTIONS)}")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated contenders for W1-W4, of {','.join(CONTENDERS)} "
                             "(the ideal loop always runs)")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    args = parser.parse_args(argv)
    only = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown or not only:
        parser.error(f"--only takes sections of {','.join(SECTIONS)}, got {args.only!r}")
    contenders = [c.strip().lower() for c in args.contenders.split(",") if c.strip()]
    if not contenders or any(c not in CONTENDERS for c in contenders):
        parser.error(f"--contenders takes names of {','.join(CONTENDERS)}, got {args.contenders!r}")
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 5)
    if repeat < 1:
        parser.error(f"--repeat must be at least 1, got {repeat}")
    sizes = QUICK if args.quick else FULL
    doc = run(sizes, repeat, only, quick=args.quick, contenders=contenders,
              emit=lambda line: print(line, flush=True))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
