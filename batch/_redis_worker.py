"""The worker side of ``batch.redis``: read requests in batches, call the function once, reply.

Theory of operation.  Two threads share one buffer of delivered requests:

- The *reader* thread blocks in ``XREADGROUP ... COUNT n BLOCK`` on its own
  connection, asking for at most as many entries as the buffer has room for
  (``max_batch_size`` in all), and appends what arrives with its arrival
  time.  So a worker never holds more than one batch that it has not started,
  and other workers get the rest.  Redis times out blocked reads only on its
  ~100 ms clock tick, which is why the batch deadline is kept here, in
  Python, and not by a short ``BLOCK``.
- The *main* thread (:meth:`Worker.run`) takes a batch from the buffer when it
  is full or when its oldest request has waited ``max_delay``, calls the
  function once, then writes every reply and acknowledges (and deletes) the
  entries in one pipeline.  Between batches it reclaims requests that another
  consumer has held for ``claim_after`` seconds (``XAUTOCLAIM``), moving those
  delivered more than ``max_deliveries`` times to the dead-letter stream,
  and logs the status line every ``status_interval`` seconds.

Stopping (``stop()``, SIGTERM, SIGINT): the reader reads no more (its blocked
read is cut short with ``CLIENT UNBLOCK``); the main thread serves what is
already delivered to it, acknowledges, and ``run()`` returns.  A worker killed
without that leaves its requests pending for another worker to claim: every
request is processed at least once.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import random
import signal
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis

from . import _redis_wire as wire
from ._operation import is_sequence_result
from ._redis_client import dedicated_client

__all__ = ["Worker", "resolve_target"]

log = logging.getLogger("batch.redis")

_BLOCK_MS = 2_000  # the reader's blocking read; stop() cuts it short
_REPLY_TTL = 600   # seconds a reply list outlives its last reply (its process may be gone)
_REPLY_PREFIX = wire.REPLY_PREFIX.encode()

# (entry id, fields, monotonic arrival time)
Entry = tuple[bytes, dict[bytes, bytes], float]


def resolve_target(fn: Any) -> tuple[Callable[[list[Any]], Any], str]:
    """The ``list -> list`` callable behind ``fn`` and a name for it.

    ``fn`` is a plain function (``def`` or ``async def``) or an operation
    class made by ``@batch.operation``, whose ``function`` attribute is called.
    """
    if isinstance(fn, type):
        inner = getattr(fn, "function", None)
        if callable(inner):
            return inner, f"{fn.__module__}.{fn.__qualname__}"
        raise TypeError(
            f"{fn.__qualname__} is a class without a batch function: a worker serves a "
            f"list -> list function, or a class made by @batch.operation (its .function)")
    if not callable(fn):
        raise TypeError(f"{fn!r:.80} is not callable: a worker serves a list -> list function "
                        f"(def or async def) or a class made by @batch.operation")
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return fn, f"{getattr(fn, '__module__', '?')}.{name}"


class _Backoff:
    """Waits after failures: 50 ms doubling to 2 s, jittered; cut short by ``stop``."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.failures = 0

    def wait(self) -> None:
        self.failures += 1
        delay = min(0.05 * 2 ** (self.failures - 1), 2.0) * random.uniform(0.75, 1.25)
        self.stop.wait(delay)


class Worker:
    """Serve a ``list -> list`` function to :func:`batch.redis.remote` callers.

    ``Worker(client, queue, fn).run()`` blocks, serving batches from the
    stream ``queue`` until :meth:`stop` is called (from another thread) or
    the process gets SIGTERM or SIGINT; then it finishes and acknowledges the
    requests it holds and returns.  ``python -m batch worker`` runs one.

    - ``max_batch_size``: most requests per call of ``fn``; a full batch goes at once.
    - ``max_delay``: seconds a batch waits for more requests after its first.
    - ``claim_after``: seconds after which a request held by another (dead)
      consumer is claimed and run here.  Keep it above the longest batch.
    - ``max_deliveries``: a request delivered that many times is not run
      again but moved to the stream ``<queue>:dead``; its caller gets a
      :class:`batch.redis.RemoteError` saying so.
    - ``codec``: must match the clients' (JSON by default).
    - ``status_interval``: seconds between status lines (logger
      ``batch.redis``, INFO).
    """

    def __init__(self, client: Any, queue: str, fn: Any, *, max_batch_size: int = 64,
                 max_delay: float = 0.005, claim_after: float = 30.0, max_deliveries: int = 3,
                 codec: wire.Codec = wire.JSON, status_interval: float = 10.0) -> None:
        self.function, self.function_name = resolve_target(fn)
        if not hasattr(client, "connection_pool"):
            raise TypeError(f"Worker(client={client!r:.60}, ...): client must be a redis.Redis, e.g. "
                            f"redis.Redis.from_url('redis://localhost:6379/0')")
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"Worker(..., queue={queue!r}): queue must be a non-empty str")
        _positive("max_batch_size", max_batch_size, integral=True)
        _positive("max_delay", max_delay, zero_ok=True)
        _positive("claim_after", claim_after)
        _positive("max_deliveries", max_deliveries, integral=True)
        _positive("status_interval", status_interval)
        self.queue = queue
        self.max_batch_size = max_batch_size
        self.max_delay = float(max_delay)
        self.claim_after = float(claim_after)
        self.max_deliveries = max_deliveries
        self.codec = codec
        self.status_interval = float(status_interval)
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.dead_letter_stream = wire.dead_letter_key(queue)
        self.served = 0
        """Requests answered so far (results and per-item errors)."""
        self.batches = 0
        """Calls of the function so far."""
        self._user_client = client
        self._client = dedicated_client(client, read_timeout=_BLOCK_MS / 1000, max_connections=4)
        self._cond = threading.Condition()
        self._buffer: collections.deque[Entry] = collections.deque()
        self._stopping = threading.Event()
        self._reader_alive = False
        self._reader_id: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._window_batches = 0
        self._window_items = 0
        self._window_times: list[float] = []

    def __repr__(self) -> str:
        return f"Worker({self.function_name}, queue={self.queue!r}, consumer={self.consumer!r})"

    # -- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Read no more requests; ``run()`` returns once those it holds are answered.

        Safe to call from any thread, any number of times.
        """
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        reader_id = self._reader_id
        if reader_id is not None:
            try:
                self._client.client_unblock(reader_id)
            except redis.RedisError:
                pass  # the blocked read ends by its own timeout instead

    def _on_signal(self, signum: int, frame: Any) -> None:
        # A signal handler runs between two bytecodes of the main thread, which
        # may hold the condition's lock: do the stopping from a thread.
        self._stopping.set()
        threading.Thread(target=self.stop, name="batch.redis stop", daemon=True).start()

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, self._on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return restore

    # -- the main loop -------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped (see :meth:`stop`); call it once."""
        if self._started:
            raise RuntimeError(f"{self!r}.run() was already called; make a new Worker to run again")
        self._started = True
        restore = self._install_signals()
        log.info("batch worker %s: queue %r on %s, consumer %s; max_batch_size=%d max_delay=%g "
                 "claim_after=%g max_deliveries=%d", self.function_name, self.queue,
                 _describe(self._user_client), self.consumer, self.max_batch_size, self.max_delay,
                 self.claim_after, self.max_deliveries)
        claim_every = min(max(self.claim_after / 4, 0.05), 5.0)
        reader = threading.Thread(target=self._read, name=f"batch.redis reader {self.queue}", daemon=True)
        self._reader_alive = True
        reader.start()
        now = time.monotonic()
        next_claim, next_status = now + min(claim_every, 0.5), now + self.status_interval
        window_start = now
        try:
            while True:
                # One pass: wait for a batch (or for housekeeping to be due),
                # serve it, then reclaim and report when their time has come.
                taken = self._take(min(next_claim, next_status))
                if taken is None:
                    break
                if taken:
                    self._serve(taken)
                now = time.monotonic()
                if now >= next_claim and not self._stopping.is_set():
                    self._claim()
                    next_claim = time.monotonic() + claim_every
                if now >= next_status:
                    self._report(now - window_start)
                    window_start, next_status = now, now + self.status_interval
        finally:
            self.stop()
            reader.join()
            self._leave_group()
            if self._loop is not None:
                self._loop.close()
            self._client.close()
            restore()
            log.info("batch worker %s stopped: %d requests in %d batches", self.consumer,
                     self.served, self.batches)

    def _take(self, until: float) -> list[Entry] | None:
        """The next batch; ``[]`` when ``until`` came first; ``None`` once stopped and drained."""
        with self._cond:
            while True:
                now = time.monotonic()
                wait: float | None
                if self._buffer:
                    due = self._buffer[0][2] + self.max_delay
                    if len(self._buffer) >= self.max_batch_size or now >= due or \
                            self._stopping.is_set():
                        n = min(len(self._buffer), self.max_batch_size)
                        taken = [self._buffer.popleft() for _ in range(n)]
                        self._cond.notify_all()  # the reader may read again
                        return taken
                    wait = due - now
                elif self._stopping.is_set():
                    if not self._reader_alive:
                        return None
                    wait = None  # the reader notifies when it ends
                elif now >= until:
                    return []
                else:
                    wait = until - now
                self._cond.wait(wait)

    # -- reading -------------------------------------------------------------------------

    def _read(self) -> None:
        reader = dedicated_client(self._user_client, read_timeout=_BLOCK_MS / 1000)
        backoff = _Backoff(self._stopping)
        group_ready = False
        try:
            while not self._stopping.is_set():
                with self._cond:
                    while len(self._buffer) >= self.max_batch_size and not self._stopping.is_set():
                        self._cond.wait()
                    want = self.max_batch_size - len(self._buffer)
                if self._stopping.is_set():
                    break
                try:
                    if not group_ready:
                        self._create_group(reader)
                        group_ready = True
                    if self._reader_id is None:
                        self._reader_id = int(reader.client_id())
                    got = reader.xreadgroup(wire.GROUP, self.consumer, {self.queue: ">"},
                                            count=want, block=_BLOCK_MS)
                except redis.ResponseError as e:
                    if "NOGROUP" in str(e):  # the server lost its data (restarted): make it again
                        group_ready = False
                        continue
                    log.error("batch worker %s: reading %r failed: %s", self.consumer, self.queue, e)
                    backoff.wait()
                    continue
                except redis.RedisError as e:
                    self._reader_id = None
                    if backoff.failures == 0:
                        log.warning("batch worker %s: Redis unreachable (%s: %s); retrying with backoff",
                                    self.consumer, type(e).__name__, e)
                    backoff.wait()
                    continue
                if backoff.failures:
                    log.warning("batch worker %s: Redis reachable again", self.consumer)
                    backoff.failures = 0
                entries = _stream_entries(got)
                if entries:
                    now = time.monotonic()
                    with self._cond:
                        self._buffer.extend((eid, fields, now) for eid, fields in entries)
                        self._cond.notify_all()
        finally:
            self._reader_id = None
            with self._cond:
                self._reader_alive = False
                self._cond.notify_all()
            reader.close()

    def _create_group(self, client: Any) -> None:
        try:
            # id 0: requests queued before any worker existed are served too.
            client.xgroup_create(self.queue, wire.GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        # Redis adds a consumer on its first delivery; naming it now lets
        # operators (XINFO CONSUMERS) see an idle worker too.
        client.xgroup_createconsumer(self.queue, wire.GROUP, self.consumer)

    # -- serving -------------------------------------------------------------------------

    def _serve(self, entries: Sequence[tuple[bytes, dict[bytes, bytes], float]]) -> None:
        """Call the function once for ``entries``, then reply to each caller and acknowledge."""
        replies: dict[bytes, list[tuple[bytes, bytes, bytes]]] = {}
        calls: list[tuple[bytes, bytes, Any]] = []   # (reply key, request id, item)
        malformed: list[tuple[bytes, dict[bytes, bytes]]] = []
        for eid, fields, _ in entries:
            reply_to, rid, body = fields.get(wire.REPLY_TO), fields.get(wire.ID), fields.get(wire.BODY)
            if reply_to is None or rid is None or body is None or not rid.isdigit() or \
                    not reply_to.startswith(_REPLY_PREFIX):
                # Not written by remote(): no caller to answer, and writing to
                # whatever key it names is not this worker's business.
                malformed.append((eid, fields))
                continue
            try:
                calls.append((reply_to, rid, self.codec.loads(body)))
            except Exception as e:
                replies.setdefault(reply_to, []).append((rid, wire.ERROR, wire.error_payload(
                    type(e).__name__, f"the worker could not decode the request body: {e}")))
        if calls:
            outcomes = self._call([item for _, _, item in calls])
            for (reply_to, rid, _), outcome in zip(calls, outcomes):
                replies.setdefault(reply_to, []).append(self._record(rid, outcome))
        ids = [eid for eid, _, _ in entries]
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for reply_to, records in replies.items():
                    pipe.rpush(reply_to, wire.pack_replies(records))
                    pipe.expire(reply_to, _REPLY_TTL)
                for eid, fields in malformed:
                    pipe.xadd(self.dead_letter_stream, {**fields, b"reason": b"malformed request "
                              b"(not sent by batch.redis.remote)", b"queue": self.queue, b"id": eid})
                pipe.xack(self.queue, wire.GROUP, *ids)
                pipe.xdel(self.queue, *ids)
                pipe.execute()
        except redis.RedisError as e:
            log.warning("batch worker %s: could not write %d replies (%s: %s); the requests stay "
                        "pending and will be claimed again after %g s", self.consumer, len(entries),
                        type(e).__name__, e, self.claim_after)
            return
        if malformed:
            log.warning("batch worker %s: moved %d malformed entries of %r to %r", self.consumer,
                        len(malformed), self.queue, self.dead_letter_stream)
        self.served += len(calls)

    def _record(self, rid: bytes, outcome: Any) -> tuple[bytes, bytes, bytes]:
        if isinstance(outcome, BaseException):
            return rid, wire.ERROR, wire.error_payload(type(outcome).__name__, str(outcome))
        try:
            data = self.codec.dumps(outcome)
        except Exception as e:
            return rid, wire.ERROR, wire.error_payload(
                type(e).__name__, f"{self.function_name} returned {outcome!r:.80}, which "
                f"{self.codec!r} cannot encode: {e}")
        return rid, wire.VALUE, data.encode() if isinstance(data, str) else data

    def _call(self, items: list[Any]) -> list[Any]:
        """One call of the function: its results, or its exception once per item."""
        started = time.perf_counter()
        try:
            result = self.function(items)
            if inspect.isawaitable(result):
                if self._loop is None:
                    self._loop = asyncio.new_event_loop()
                result = self._loop.run_until_complete(_awaited(result))
        except Exception as e:
            log.error("batch worker %s: %s raised on a batch of %d: %s: %s", self.consumer,
                      self.function_name, len(items), type(e).__name__, e, exc_info=True)
            return [e] * len(items)
        finally:
            elapsed = time.perf_counter() - started
            self.batches += 1
            self._window_batches += 1
            self._window_items += len(items)
            self._window_times.append(elapsed)
        if not is_sequence_result(result) or len(result) != len(items):
            got = f"{len(result)} results" if is_sequence_result(result) else \
                f"a {type(result).__name__}"
            error = TypeError(f"{self.function_name} returned {got} for {len(items)} items; it must "
                              f"return a list with one result per item, in the same order")
            log.error("batch worker %s: %s", self.consumer, error)
            return [error] * len(items)
        return list(result)

    # -- reclaiming ----------------------------------------------------------------------

    def _claim(self) -> None:
        """Take over requests idle for ``claim_after`` s; dead-letter the over-delivered."""
        start = "0-0"
        for _ in range(16):  # a bounded number of pages per pass
            try:
                got = self._client.xautoclaim(self.queue, wire.GROUP, self.consumer,
                                              min_idle_time=int(self.claim_after * 1000),
                                              start_id=start, count=self.max_batch_size)
                claimed = [(eid, fields) for eid, fields in got[1] if fields]
                if not claimed:
                    return
                with self._client.pipeline(transaction=False) as pipe:
                    for eid, _ in claimed:
                        pipe.xpending_range(self.queue, wire.GROUP, min=eid, max=eid, count=1)
                    pending = pipe.execute()
            except redis.RedisError as e:
                log.debug("batch worker %s: claim pass failed: %s", self.consumer, e)
                return
            now = time.monotonic()
            live: list[Entry] = []
            dead: list[tuple[bytes, dict[bytes, bytes], int]] = []
            for (eid, fields), info in zip(claimed, pending):
                deliveries = int(info[0]["times_delivered"]) if info else 1
                # This claim is itself a delivery: the ones before it all failed.
                if deliveries > self.max_deliveries:
                    dead.append((eid, fields, deliveries - 1))
                else:
                    live.append((eid, fields, now))
            if live:
                log.warning("batch worker %s: claimed %d requests idle over %g s (their worker "
                            "died or hung)", self.consumer, len(live), self.claim_after)
            if dead:
                self._bury(dead)
            for i in range(0, len(live), self.max_batch_size):
                self._serve(live[i:i + self.max_batch_size])
            start = got[0]
            if start in (b"0-0", "0-0") or self._stopping.is_set():
                return

    def _bury(self, dead: list[tuple[bytes, dict[bytes, bytes], int]]) -> None:
        replies: dict[bytes, list[tuple[bytes, bytes, bytes]]] = {}
        for eid, fields, deliveries in dead:
            reply_to, rid = fields.get(wire.REPLY_TO), fields.get(wire.ID)
            if reply_to is not None and rid is not None and rid.isdigit() and \
                    reply_to.startswith(_REPLY_PREFIX):
                replies.setdefault(reply_to, []).append((rid, wire.DEAD, wire.error_payload(
                    "DeadLetter",
                    f"request {eid.decode()} was delivered {deliveries} times "
                    f"(max_deliveries={self.max_deliveries}) and each worker that took it died or "
                    f"hung; it was moved to the dead-letter stream {self.dead_letter_stream!r} and "
                    f"will not run again")))
        ids = [eid for eid, _, _ in dead]
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for eid, fields, deliveries in dead:
                    pipe.xadd(self.dead_letter_stream, {
                        **fields, b"id": eid, b"queue": self.queue, b"deliveries": deliveries,
                        b"reason": f"delivered {deliveries} times without an answer"})
                for reply_to, records in replies.items():
                    pipe.rpush(reply_to, wire.pack_replies(records))
                    pipe.expire(reply_to, _REPLY_TTL)
                pipe.xack(self.queue, wire.GROUP, *ids)
                pipe.xdel(self.queue, *ids)
                pipe.execute()
        except redis.RedisError as e:
            log.warning("batch worker %s: could not dead-letter %d requests: %s", self.consumer,
                        len(dead), e)
            return
        log.warning("batch worker %s: moved %d requests delivered over %d times to %r",
                    self.consumer, len(dead), self.max_deliveries, self.dead_letter_stream)

    # -- reporting and leaving -----------------------------------------------------------

    def _report(self, seconds: float) -> None:
        times = sorted(self._window_times)
        batches, items = self._window_batches, self._window_items
        self._window_batches = self._window_items = 0
        self._window_times = []
        try:
            pending: object = self._client.xlen(self.queue)
        except redis.RedisError:
            pending = "?"
        if times:
            p50 = statistics.median(times) * 1000
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
            fn = f"fn p50 {p50:.2f} ms p99 {p99:.2f} ms"
        else:
            fn = "fn idle"
        mean = items / batches if batches else 0.0
        log.info("batch worker %s: %.1f batches/s, mean batch %.1f, pending %s, %s (last %.1f s; "
                 "%d served in all)", self.consumer, batches / seconds if seconds > 0 else 0.0, mean,
                 pending, fn, seconds, self.served)

    def _leave_group(self) -> None:
        # Drop this consumer's name from the group, unless it still holds
        # requests (deleting it would lose them).
        try:
            if not self._client.xpending_range(self.queue, wire.GROUP, min="-", max="+", count=1,
                                               consumername=self.consumer):
                self._client.xgroup_delconsumer(self.queue, wire.GROUP, self.consumer)
        except redis.RedisError:
            pass


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _stream_entries(got: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an XREADGROUP reply for one stream (RESP2 list or RESP3 dict)."""
    if not got:
        return []
    if isinstance(got, dict):
        [entries] = got.values()
        if entries and isinstance(entries[0], list) and entries[0] and \
                isinstance(entries[0][0], (list, tuple)):
            entries = entries[0]
        return [(eid, fields) for eid, fields in entries]
    return [(eid, fields) for eid, fields in got[0][1]]


def _describe(client: Any) -> str:
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix:{kw['path']} db {kw.get('db', 0)}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)} db {kw.get('db', 0)}"


def _positive(name: str, value: object, *, integral: bool = False, zero_ok: bool = False) -> None:
    kinds = (int,) if integral else (int, float)
    ok = not isinstance(value, bool) and isinstance(value, kinds)
    if ok:
        assert isinstance(value, (int, float))
        ok = value >= 0 if zero_ok else value > 0
    if not ok:
        want = "a positive int" if integral else \
            ("a number of seconds >= 0" if zero_ok else "a positive number of seconds")
        raise ValueError(f"Worker(..., {name}={value!r}): {name} must be {want}")
