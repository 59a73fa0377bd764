"""The client side of ``batch.redis``: ``remote()`` operation classes and the reply reader.

Theory of operation.  A call becomes one ``XADD`` to the queue's stream with
the caller's reply key and a request number.  Every process has one reply
list per Redis server (:class:`_ReplyChannel`), read by one thread blocked in
``BLPOP``; it routes each record to the ``concurrent.futures.Future`` that
the caller registered under that number.  The thread runs only while some
caller waits, and one more ``BLPOP`` timeout (a second) after that; the
next call starts a new one.  A caller that times out withdraws its
future, so a late reply finds nobody and is dropped.

- ``run_batch`` (a round of a batch generator): encode every body first (a
  body the codec refuses fails that operation alone, nothing of it is sent),
  then one pipelined send of all ``XADD``s, then wait for every reply until
  the shared deadline.  A connection error while sending fails the round's
  operations with redis-py's ``ConnectionError`` at once.
- ``send`` is ``run_batch`` of one operation, raising its failure.
- ``asend`` never does network I/O on the event loop: the ``XADD``s of every
  ``asend`` started in the same loop iteration go as one pipeline in the
  loop's default executor (one pipeline in flight per loop; calls arriving
  meanwhile go in the next), and the reader thread settles the replies of
  one reply element in one ``loop.call_soon_threadsafe`` per loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
import uuid
import weakref
from concurrent.futures import Future
from typing import Any, ClassVar

import redis

from . import _redis_wire as wire
from ._operation import BatchableOperation

__all__ = ["Remote", "remote"]

# BLPOP waits this long (seconds) before the reader looks again whether
# anyone still waits (it exits when nobody does).
_READ_BLOCK = 1.0


def _server_id(client: Any) -> tuple[Any, ...]:
    kwargs = client.connection_pool.connection_kwargs
    return tuple(kwargs.get(k) for k in ("host", "port", "path", "db", "username"))


def dedicated_client(client: Any, *, read_timeout: float, max_connections: int = 1) -> Any:
    """A client on a pool of its own (one connection by default), answering bytes.

    Same server and settings as ``client``; the socket timeout is raised so
    that a blocking command of up to ``read_timeout`` seconds is not cut off.
    """
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["decode_responses"] = False
    current = kwargs.get("socket_timeout")
    if current is not None and current < read_timeout + 5.0:
        kwargs["socket_timeout"] = read_timeout + 5.0
    new_pool = redis.ConnectionPool(connection_class=pool.connection_class,
                                    max_connections=max_connections, **kwargs)
    return redis.Redis(connection_pool=new_pool)


class _ReplyChannel:
    """One process's reply list on one Redis server, and the thread that reads it.

    Invariants (under ``_lock``): ``_waiters`` maps request numbers to the
    futures of callers still waiting; ``_reading`` is True exactly while a
    reader thread is running or about to; a reader exits only after seeing
    ``_waiters`` empty under the lock, so a caller that registers later
    always finds ``_reading`` False and starts a new one.
    """

    def __init__(self, client: Any) -> None:
        self.key = f"{wire.REPLY_PREFIX}{uuid.uuid4().hex}"
        self._client = client
        self._reader_client: Any = None
        self._lock = threading.Lock()
        # request number -> (future, its event loop or None, queue name)
        self._waiters: dict[int, tuple[Any, asyncio.AbstractEventLoop | None, str]] = {}
        self._numbers = itertools.count(1)
        self._reading = False

    def register(self, queue: str, count: int) -> list[tuple[int, Future[Any]]]:
        """``count`` new request numbers with their futures, reader running."""
        made = [(next(self._numbers), Future[Any]()) for _ in range(count)]
        self._add([(rid, fut, None, queue) for rid, fut in made])
        return made

    def register_async(self, queue: str) -> tuple[int, asyncio.Future[Any]]:
        """A new request number with an asyncio future of the running loop."""
        loop = asyncio.get_running_loop()
        rid, fut = next(self._numbers), loop.create_future()
        self._add([(rid, fut, loop, queue)])
        return rid, fut

    def _add(self, entries: list[tuple[int, Any, asyncio.AbstractEventLoop | None, str]]) -> None:
        with self._lock:
            for rid, fut, loop, queue in entries:
                self._waiters[rid] = (fut, loop, queue)
            if not self._reading:
                self._reading = True
                threading.Thread(target=self._read, name=f"batch.redis reply reader {self.key}",
                                 daemon=True).start()

    def withdraw(self, numbers: list[int]) -> None:
        """Forget callers that gave up (their late replies will be dropped).

        No I/O here, so giving up never waits on Redis: a reader left with
        nobody to serve exits when its ``BLPOP`` times out.
        """
        with self._lock:
            for rid in numbers:
                self._waiters.pop(rid, None)

    def _read(self) -> None:
        if self._reader_client is None:
            self._reader_client = dedicated_client(self._client, read_timeout=_READ_BLOCK)
        reader = self._reader_client
        failures = 0
        idle = False
        while True:
            with self._lock:
                if self._waiters:
                    idle = False
                elif idle or failures:
                    self._reading = False
                    return
                else:
                    # Nobody waits: linger one more read, so that a caller
                    # who sends again soon does not pay for a new thread.
                    idle = True
            try:
                got = reader.blpop([self.key], timeout=_READ_BLOCK)
            except redis.RedisError:
                # Redis is down or restarting: the callers' own timeouts bound
                # their wait; keep trying, a little slower each time.
                failures += 1
                time.sleep(min(0.05 * 2 ** min(failures, 6), 2.0))
                continue
            failures = 0
            if got:
                self._route(got[1])

    def _route(self, data: bytes) -> None:
        try:
            records = list(wire.unpack_replies(data))
        except ValueError:
            records = []
        # asyncio callers are settled in their loop, one wake-up per loop
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, bool, Any]]] = {}
        with self._lock:
            found = [(self._waiters.pop(rid, None), kind, payload) for rid, kind, payload in records]
        for entry, kind, payload in found:
            if entry is None:
                continue  # the caller gave up: a late reply is dropped
            fut, loop, queue = entry
            ok = kind == wire.VALUE
            outcome = payload if ok else wire.remote_error(payload, queue)
            if loop is not None:
                by_loop.setdefault(loop, []).append((fut, ok, outcome))
            elif ok:
                fut.set_result(outcome)
            else:
                fut.set_exception(outcome)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:
                pass  # that loop is closed: nobody waits there any more


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, outcome in settled:
        if fut.done():
            continue  # cancelled: the caller timed out or was cancelled
        if ok:
            fut.set_result(outcome)
        else:
            fut.set_exception(outcome)


_channels: dict[tuple[Any, ...], _ReplyChannel] = {}
_channels_lock = threading.Lock()


def _channel(client: Any) -> _ReplyChannel:
    key = (os.getpid(), *_server_id(client))  # a forked child gets its own channel
    with _channels_lock:
        channel = _channels.get(key)
        if channel is None:
            channel = _channels[key] = _ReplyChannel(client)
        return channel


class _LoopSender:
    """Coalesces the ``XADD``s of ``asend`` calls made in one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Any, queue: str) -> None:
        self.loop = loop
        self.client = client
        self.queue = queue
        self.pending: list[tuple[dict[bytes, Any], asyncio.Future[None]]] = []
        self.busy = False  # a flush is scheduled or a pipeline is in flight

    def add(self, fields: dict[bytes, Any]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = self.loop.create_future()
        self.pending.append((fields, done))
        if not self.busy:
            self.busy = True
            self.loop.call_soon(self._flush)
        return done

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            self.busy = False
            return
        job = self.loop.run_in_executor(None, _xadd_all, self.client, self.queue,
                                        [fields for fields, _ in batch])
        job.add_done_callback(lambda j: self._settle(j, batch))

    def _settle(self, job: asyncio.Future[None],
                batch: list[tuple[dict[bytes, Any], asyncio.Future[None]]]) -> None:
        error = job.exception() if not job.cancelled() else asyncio.CancelledError()
        for _, done in batch:
            if done.done():
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
        self._flush()


def _xadd_all(client: Any, queue: str, entries: list[dict[bytes, Any]]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for fields in entries:
            pipe.xadd(queue, fields)
        pipe.execute()


class Remote(BatchableOperation[Any]):
    """Base class of the operation classes that :func:`remote` makes.

    ``Op(item)`` is one request; yield it from a batch generator (a round's
    requests go as one pipelined send), or call ``Op.send(item)`` /
    ``await Op.asend(item)``.  A result that failed on the worker is a
    :class:`batch.redis.RemoteError`; no reply within ``timeout`` seconds is
    a ``TimeoutError``.
    """

    __slots__ = ("item",)

    client: ClassVar[Any]
    queue: ClassVar[str]
    timeout: ClassVar[float]
    codec: ClassVar[wire.Codec]
    # run_batch waits for replies: the async driver runs it in a thread.
    blocking: ClassVar[bool] = True
    _senders: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSender]]

    def __init__(self, item: Any) -> None:
        self.item = item

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({self.item!r})"

    @classmethod
    def _encode(cls, item: Any) -> bytes | str:
        try:
            return cls.codec.dumps(item)
        except Exception as e:
            raise TypeError(
                f"{cls.__qualname__}({item!r:.80}): the body cannot be encoded by {cls.codec!r} "
                f"({type(e).__name__}: {e}); send JSON values (dict, list, str, int, float, bool, "
                f"None) or pass remote(..., codec=...) with a codec that accepts it"
            ) from e

    @classmethod
    def _decode(cls, payload: bytes) -> Any:
        return cls.codec.loads(payload)

    @classmethod
    def _timeout_error(cls) -> TimeoutError:
        return TimeoutError(
            f"{cls.__qualname__}: no reply from queue {cls.queue!r} within {cls.timeout} s; is a "
            f"worker running (python -m batch worker MODULE:FUNCTION --queue {cls.queue}) and "
            f"keeping up? Raise remote(..., timeout=...) for slower functions"
        )

    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[Any]:
        """Send every request of the group in one pipeline, then wait for each reply."""
        results: list[Any] = [None] * len(operations)
        bodies: list[tuple[int, bytes | str]] = []
        for i, op in enumerate(operations):
            try:
                bodies.append((i, cls._encode(op.item)))
            except TypeError as e:
                results[i] = e
        if not bodies:
            return results
        channel = _channel(cls.client)
        waits = channel.register(cls.queue, len(bodies))
        try:
            _xadd_all(cls.client, cls.queue, [
                {wire.BODY: body, wire.REPLY_TO: channel.key, wire.ID: rid}
                for (_, body), (rid, _) in zip(bodies, waits)])
        except BaseException:
            channel.withdraw([rid for rid, _ in waits])
            raise
        deadline = time.monotonic() + cls.timeout
        late: list[int] = []
        try:
            for (i, _), (rid, fut) in zip(bodies, waits):
                try:
                    results[i] = cls._decode(fut.result(max(0.0, deadline - time.monotonic())))
                except TimeoutError:
                    late.append(rid)
                    results[i] = cls._timeout_error()
                except Exception as e:
                    results[i] = e
        except BaseException:  # KeyboardInterrupt and such: nobody waits for the rest now
            channel.withdraw([rid for rid, _ in waits])
            raise
        if late:
            channel.withdraw(late)
        return results

    @classmethod
    def send(cls, item: Any) -> Any:
        """Send one request and wait for its result (blocking; for threads and scripts)."""
        result = cls.run_batch([cls(item)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    @classmethod
    async def asend(cls, item: Any) -> Any:
        """Send one request and await its result without blocking the event loop."""
        body = cls._encode(item)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cls.timeout
        channel = _channel(cls.client)
        rid, fut = channel.register_async(cls.queue)
        try:
            sender = cls._senders.get(loop)
            if sender is None:
                sender = cls._senders[loop] = _LoopSender(loop, cls.client, cls.queue)
            await sender.add({wire.BODY: body, wire.REPLY_TO: channel.key, wire.ID: rid})
            try:
                async with asyncio.timeout_at(deadline):
                    payload = await fut
            except TimeoutError:
                raise cls._timeout_error() from None
        except BaseException:
            channel.withdraw([rid])
            raise
        return cls._decode(payload)


def remote(client: Any, queue: str, *, timeout: float = 30.0,
           codec: wire.Codec = wire.JSON) -> type[Remote]:
    """An operation class whose calls run on ``python -m batch worker`` processes.

    ``client`` is a ``redis.Redis`` (any server the workers use), ``queue``
    the stream name the workers serve (``--queue``), ``timeout`` the seconds
    a call waits for its reply, ``codec`` how bodies and results are encoded
    (JSON by default; any object with ``dumps(obj) -> bytes | str`` and
    ``loads(bytes) -> obj``, the same on the workers).

    ``embed = remote(r, "embed")``; then ``v = yield embed("hello")`` in a
    batch generator, ``embed.send("hello")`` or ``await embed.asend("hello")``.
    """
    if not (hasattr(client, "pipeline") and hasattr(client, "connection_pool")) or \
            isinstance(client, type):
        raise TypeError(
            f"remote(client={client!r:.60}, ...): client must be a redis.Redis instance, e.g. "
            f"redis.Redis.from_url('redis://localhost:6379/0')")
    if asyncio.iscoroutinefunction(getattr(client, "xadd", None)):
        raise TypeError("remote(): pass a synchronous redis.Redis client, not redis.asyncio.Redis; "
                        "asend() already keeps network I/O off the event loop")
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"remote(..., queue={queue!r}): queue must be a non-empty str, the "
                         f"--queue name the workers serve")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"remote(..., timeout={timeout!r}): timeout must be a positive number of "
                         f"seconds, e.g. timeout=30.0")
    if not (callable(getattr(codec, "dumps", None)) and callable(getattr(codec, "loads", None))):
        raise TypeError(f"remote(..., codec={codec!r}): a codec needs dumps(obj) -> bytes | str and "
                        f"loads(bytes) -> obj (the json module works as is)")
    name = "".join(part.title() for part in _words(queue)) or "Remote"
    namespace: dict[str, Any] = {
        "__slots__": (), "__module__": "batch.redis", "__qualname__": name,
        "client": client, "queue": queue, "timeout": float(timeout), "codec": codec,
        "_senders": weakref.WeakKeyDictionary(),
    }
    return type(name, (Remote,), namespace)


def _words(queue: str) -> list[str]:
    word: list[str] = []
    words: list[str] = []
    for ch in queue:
        if ch.isalnum():
            word.append(ch)
        elif word:
            words.append("".join(word))
            word = []
    if word:
        words.append("".join(word))
    if words and words[0][0].isdigit():
        words.insert(0, "Q")
    return words

