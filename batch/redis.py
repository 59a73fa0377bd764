"""Past one machine: run a ``list -> list`` function on worker processes, over Redis Streams.

Workers (any number, anywhere)::

    $ python -m batch worker app.models:embed --redis redis://host:6379/0 --queue embed

Clients (any number of processes)::

    embed = batch.redis.remote(redis.Redis.from_url(url), "embed", timeout=30.0)
    v = yield embed("hello")                  # in a batch generator: a round is one pipelined send
    v = embed.send("hello")                   # blocking, outside generators
    v = await embed.asend("hello")            # asyncio, never blocks the loop on I/O

A worker batches requests as :class:`batch.DynamicBatcher` does (up to
``max_batch_size``, waiting at most ``max_delay`` after the first), calls the
function once per batch, replies to each caller and then acknowledges.
Requests survive worker crashes (claimed by another worker after
``claim_after``), a request that keeps killing workers ends in the
dead-letter stream ``<queue>:dead``, and SIGTERM drains.  Failures reach the
caller as :class:`RemoteError`.  Needs redis-py: ``pip install 'batch[redis]'``.
"""

from __future__ import annotations

try:
    import redis as _redis_py  # noqa: F401  (the optional dependency)
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "batch.redis needs redis-py, which is not installed: pip install 'batch[redis]'"
    ) from e

from ._redis_client import Remote as Remote
from ._redis_client import remote as remote
from ._redis_wire import JSON as JSON
from ._redis_wire import Codec as Codec
from ._redis_wire import JsonCodec as JsonCodec
from ._redis_wire import RemoteError as RemoteError
from ._redis_wire import dead_letter_key as dead_letter_key
from ._redis_worker import Worker as Worker

__all__ = ["JSON", "Codec", "JsonCodec", "Remote", "RemoteError", "Worker", "dead_letter_key", "remote"]
