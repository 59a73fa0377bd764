"""What travels through Redis between ``batch.redis`` clients and workers (stdlib only).

Layout on the server, for a queue named ``Q``:

- ``Q``: the request stream.  One entry per call, with the fields ``b`` (the
  body, encoded by the codec), ``r`` (the caller's reply key) and ``i`` (the
  caller's request number, unique within that reply key).  Workers read it
  through the consumer group :data:`GROUP`, created at id ``0`` so that
  requests queued before any worker existed are served too.  An entry is
  acknowledged *and deleted* once its reply is written, so the stream holds
  only work that is waiting or in progress.
- ``Q:dead``: the dead-letter stream.  A request delivered more than
  ``max_deliveries`` times (each time its worker died or hung) lands here
  with the original fields plus ``reason``, ``deliveries`` and ``queue``.
- ``batch:reply:<random>``: one list per client process and Redis server.
  Workers ``RPUSH`` one element per (batch, reply key) holding every reply of
  that batch for that process, so one ``BLPOP`` by the client's reader
  delivers a whole batch's worth of replies.

A reply element is a concatenation of records, each
``b"<id> <kind> <length>\\n" + payload``: kind ``v`` (the result, encoded by
the codec), ``e`` (the item failed: a JSON ``{"type", "message"}``) or ``d``
(dead-lettered: the same JSON).  Lengths make the framing safe for any bytes
the codec produces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

from ._errors import BatchError

__all__ = [
    "BODY",
    "DEAD",
    "ERROR",
    "GROUP",
    "ID",
    "JSON",
    "REPLY_PREFIX",
    "REPLY_TO",
    "VALUE",
    "Codec",
    "JsonCodec",
    "RemoteError",
    "dead_letter_key",
    "error_payload",
    "pack_replies",
    "unpack_replies",
]

GROUP = "batch-workers"
REPLY_PREFIX = "batch:reply:"
BODY = b"b"
REPLY_TO = b"r"
ID = b"i"
VALUE = b"v"
ERROR = b"e"
DEAD = b"d"


def dead_letter_key(queue: str) -> str:
    """The dead-letter stream of ``queue``."""
    return f"{queue}:dead"


class Codec(Protocol):
    """How bodies and results are turned into bytes: ``json`` by default."""

    def dumps(self, obj: Any, /) -> bytes | str:
        """Encode one body or result."""
        ...

    def loads(self, data: bytes, /) -> Any:
        """Decode what :meth:`dumps` made (given as bytes)."""
        ...


class JsonCodec:
    """The default codec: compact JSON (dicts, lists, str, int, float, bool, None)."""

    def dumps(self, obj: Any, /) -> str:
        """``json.dumps`` without spaces; non-JSON values raise ``TypeError``/``ValueError``."""
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)

    def loads(self, data: bytes, /) -> Any:
        """``json.loads``."""
        return json.loads(data)

    def __repr__(self) -> str:
        return "batch.redis.JSON"


JSON = JsonCodec()
"""The default :class:`Codec` instance."""


class RemoteError(BatchError):
    """A request failed on the worker's side (or was dead-lettered).

    ``remote_type`` and ``remote_message`` are the remote exception's class
    name and message; the message of this error carries both.
    """

    def __init__(self, message: str, *, remote_type: str = "", remote_message: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_message = remote_message


RemoteError.__module__ = "batch.redis"  # where users import it from


def error_payload(kind: str, message: str) -> bytes:
    """The payload of an ``e`` or ``d`` record."""
    return json.dumps({"type": kind, "message": message}).encode()


def remote_error(payload: bytes, queue: str) -> RemoteError:
    """The :class:`RemoteError` a caller gets for an ``e`` or ``d`` record."""
    try:
        info = json.loads(payload)
        kind, message = str(info["type"]), str(info["message"])
    except (ValueError, KeyError, TypeError):
        kind, message = "?", payload.decode("utf-8", "replace")
    return RemoteError(f"{kind}: {message} (from a worker of queue {queue!r})",
                       remote_type=kind, remote_message=message)


def pack_replies(records: list[tuple[bytes, bytes, bytes]]) -> bytes:
    """One reply element from ``(request id, kind, payload)`` records."""
    parts: list[bytes] = []
    for rid, kind, payload in records:
        parts.append(b"%s %s %d\n" % (rid, kind, len(payload)))
        parts.append(payload)
    return b"".join(parts)


def unpack_replies(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """The ``(request id, kind, payload)`` records of one reply element.

    Raises ``ValueError`` on a malformed element (something else pushed to
    the reply list); records before the damage are still yielded.
    """
    pos, end = 0, len(data)
    while pos < end:
        nl = data.index(b"\n", pos)
        rid, kind, length = data[pos:nl].split(b" ")
        start = nl + 1
        stop = start + int(length)
        if stop > end:
            raise ValueError("truncated reply element")
        yield int(rid), kind, data[start:stop]
        pos = stop
