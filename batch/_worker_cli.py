"""``python -m batch worker MODULE:FUNCTION``: serve a batch function from a Redis stream.

Exit status: 0 after SIGTERM/SIGINT (the batch in hand finished and
acknowledged), 2 for a usage error (bad arguments, redis-py missing, a
target that cannot be imported or is not callable).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m batch worker",
        description="Serve a list -> list function (or an @batch.operation class) to "
                    "batch.redis.remote() callers, in batches, from a Redis stream.")
    p.add_argument("target", metavar="MODULE:FUNCTION",
                   help="the function to serve, e.g. app.models:embed (imported from the current "
                        "directory and sys.path)")
    p.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
                   metavar="URL", help="the Redis server (default: $REDIS_URL or "
                                       "redis://localhost:6379/0); unix:///path/to.sock works too")
    p.add_argument("--queue", required=True, metavar="NAME",
                   help="the stream to serve: the queue name the clients pass to remote()")
    p.add_argument("--max-batch-size", type=int, default=64, metavar="N",
                   help="most requests per call of the function (default 64)")
    p.add_argument("--max-delay", type=float, default=0.005, metavar="S",
                   help="seconds a batch waits for more requests after its first (default 0.005)")
    p.add_argument("--claim-after", type=float, default=30.0, metavar="S",
                   help="seconds after which requests held by a dead worker are claimed (default 30)")
    p.add_argument("--max-deliveries", type=int, default=3, metavar="N",
                   help="deliveries after which a request goes to the dead-letter stream "
                        "NAME:dead instead of running again (default 3)")
    p.add_argument("--codec", metavar="MODULE[:NAME]", default=None,
                   help="how bodies and results are encoded: an object or module with dumps() and "
                        "loads(), the same as the clients' remote(..., codec=) (default: JSON)")
    p.add_argument("--status-interval", type=float, default=10.0, metavar="S",
                   help="seconds between status lines (default 10)")
    p.add_argument("--quiet", action="store_true",
                   help="log warnings and errors only: no start-up or status lines")
    return p


def _load(target: str, *, module_ok: bool = False) -> Any:
    """The object ``MODULE:NAME`` names (``MODULE`` alone too, when ``module_ok``)."""
    module_name, sep, attr = target.partition(":")
    if module_ok and not sep:
        sep, attr = ":", ""
    elif not sep or not module_name or not attr:
        raise LookupError(f"{target!r} is not MODULE:FUNCTION (e.g. app.models:embed)")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does for the current directory
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise LookupError(f"cannot import module {module_name!r} of {target!r}: {e}") from e
    for part in attr.split(".") if attr else []:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LookupError(f"module {module_name!r} has no attribute {attr!r} "
                              f"(from {target!r})") from None
    return obj


def main(argv: list[str]) -> int:
    """Run the worker command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        import redis

        from .redis import JSON, Worker
    except ImportError:
        print("python -m batch worker needs redis-py: pip install 'batch[redis]'", file=sys.stderr)
        return 2
    try:
        fn = _load(args.target)
        codec = _load(args.codec, module_ok=True) if args.codec else JSON
    except LookupError as e:
        print(f"python -m batch worker: {e}", file=sys.stderr)
        return 2
    if not (callable(getattr(codec, "dumps", None)) and callable(getattr(codec, "loads", None))):
        print(f"python -m batch worker: --codec {args.codec} has no dumps() and loads(); give an "
              f"object like the json module (the same the clients pass to remote(..., codec=))",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("batch.redis").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        client = redis.Redis.from_url(args.redis)
        worker = Worker(client, args.queue, fn, max_batch_size=args.max_batch_size,
                        max_delay=args.max_delay, claim_after=args.claim_after,
                        max_deliveries=args.max_deliveries, codec=codec,
                        status_interval=args.status_interval)
    except (TypeError, ValueError) as e:
        print(f"python -m batch worker: {e}", file=sys.stderr)
        return 2
    try:
        worker.run()
    finally:
        client.close()
    return 0
