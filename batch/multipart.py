"""Streaming ``multipart/mixed``: a lazy encoder and an incremental decoder.

The batch format of :mod:`batch.http` (Google's JSON API batch format) is a
``multipart/mixed`` body whose parts each carry one HTTP message.  The
standard library's :mod:`email` package parses a whole message in memory;
this module streams both ways instead:

- :func:`encode` turns parts into an iterator of byte chunks.  Nothing is
  read before the iterator asks for it: a file-like body is read in pieces of
  64 KiB as the chunks are consumed, so a large body never sits in memory.
- :class:`Decoder` (push style: :meth:`Decoder.feed` and
  :meth:`Decoder.close`) and :func:`decode` (pull style, over any iterable of
  chunks) turn bytes cut anywhere into :class:`Part` objects, each yielded as
  soon as its closing delimiter has arrived.  The decoder buffers at most one
  part's body plus a delimiter's length, and bounds a part's header block.

Wire format (RFC 2046 section 5.1.1, CRLF line ends only)::

    --BOUNDARY\\r\\n
    Header: value\\r\\n
    \\r\\n
    body bytes
    \\r\\n--BOUNDARY\\r\\n
    ...
    \\r\\n--BOUNDARY--\\r\\n

Anything before the first delimiter (the preamble) and after the closing one
(the epilogue) is ignored.  Input that is truncated or malformed raises
:class:`MultipartError`, and nothing else: the decoder never hangs and never
raises another exception type on any input.

>>> from batch import multipart
>>> chunks = list(multipart.encode([({"Content-ID": "<1>"}, b"hello")], "b0"))
>>> b"".join(chunks)
b'--b0\\r\\nContent-ID: <1>\\r\\n\\r\\nhello\\r\\n--b0--\\r\\n'
>>> [p.body for p in multipart.decode([b"--b0\\r\\n\\r\\nhel", b"lo\\r\\n--b0--"], "b0")]
[b'hello']
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import IO, Any, TypeAlias

__all__ = [
    "Decoder",
    "Headers",
    "MultipartError",
    "Part",
    "decode",
    "encode",
    "new_boundary",
    "parse_boundary",
]

#: How many bytes :func:`encode` reads from a file-like body at a time.
READ_SIZE = 64 * 1024
#: Default bound on one part's header block, in bytes (the decoder refuses more).
MAX_HEADER_BYTES = 64 * 1024

# RFC 2046 bchars: a boundary is 1-70 of these and does not end with a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# RFC 9110 token: what a header name may be.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_STR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class MultipartError(ValueError):
    """The multipart input is truncated or malformed.

    It is the only exception :class:`Decoder` and :func:`decode` raise on bad
    input; the message says what was wrong and where.
    """


Body: TypeAlias = bytes | bytearray | memoryview | IO[bytes]


class Headers(MutableMapping[str, str]):
    """A case-insensitive mapping of header names to values, in insertion order.

    Lookups ignore case (``h["content-type"]`` finds ``Content-Type``);
    iteration gives the names as they were first set.

    >>> h = Headers({"Content-Type": "text/plain"})
    >>> h["content-type"], list(h)
    ('text/plain', ['Content-Type'])
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        # lower-cased name -> (name as given, value)
        self._items: dict[str, tuple[str, str]] = {}
        if items is not None:
            pairs = items.items() if isinstance(items, Mapping) else items
            for name, value in pairs:
                self[name] = value

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str) -> None:
        key = name.lower()
        old = self._items.get(key)
        self._items[key] = (old[0] if old else name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return {k.lower(): v for k, v in other.items()} == {k: v for k, (_, v) in self._items.items()}
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class Part:
    """One part of a multipart body: ``headers`` and ``body``.

    ``headers`` is a :class:`Headers` (case-insensitive); ``body`` is bytes,
    or, when encoding, a binary file-like object that :func:`encode` reads in
    pieces.  Decoded parts always have ``bytes`` bodies.
    """

    __slots__ = ("body", "headers")

    def __init__(self, headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                 body: Body = b"") -> None:
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Part):
            return NotImplemented
        return self.headers == other.headers and self.body == other.body

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        body = self.body
        if isinstance(body, (bytes, bytearray, memoryview)):
            shown = repr(bytes(body[:40])) + ("..." if len(body) > 40 else "")
        else:
            shown = f"<{type(body).__name__}>"
        return f"Part({dict(self.headers.items())!r}, {shown})"


def new_boundary() -> str:
    """A fresh random boundary (``"batch_"`` and 32 hex digits).

    Random boundaries make a clash with body bytes practically impossible;
    :func:`encode` checks bytes bodies anyway.
    """
    return "batch_" + secrets.token_hex(16)


def _check_boundary(boundary: object) -> bytes:
    if not isinstance(boundary, str) or not _BOUNDARY.fullmatch(boundary):
        raise ValueError(
            f"invalid multipart boundary {boundary!r}: it must be a str of 1 to 70 letters, digits "
            "or '()+_,-./:=? (not ending with a space); use batch.multipart.new_boundary()")
    return boundary.encode("ascii")


def parse_boundary(content_type: str) -> str:
    """The boundary of a ``multipart/mixed`` Content-Type value.

    Raises :class:`MultipartError` when the value is not ``multipart/mixed``
    or has no valid boundary.

    >>> parse_boundary('multipart/mixed; boundary="===abc=="')
    '===abc=='
    """
    mime, _, params = content_type.partition(";")
    if mime.strip().lower() != "multipart/mixed":
        raise MultipartError(f"expected Content-Type multipart/mixed, got {content_type!r}")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if _BOUNDARY.fullmatch(value):
                return value
            raise MultipartError(f"invalid multipart boundary {value!r} in {content_type!r}")
    raise MultipartError(f"Content-Type {content_type!r} has no boundary parameter")


def _check_header(name: object, value: object) -> None:
    if not isinstance(name, str) or not _TOKEN_STR.fullmatch(name):
        raise ValueError(
            f"invalid header name {name!r}: a header name is a non-empty token "
            "(letters, digits and !#$%&'*+-.^_`|~; no spaces, colons, CR or LF)")
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise ValueError(
            f"invalid value for header {name!r}: {value!r}; a header value must be a str "
            "on one line (no CR, LF or NUL), or it could smuggle headers or parts")


def _header_block(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        _check_header(name, value)
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def _as_part(item: Part | tuple[Any, Any]) -> Part:
    if isinstance(item, Part):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        return Part(item[0], item[1])
    raise TypeError(f"encode() takes Part objects or (headers, body) pairs, got {item!r}")


def encode(parts: Iterable[Part | tuple[Mapping[str, str] | Iterable[tuple[str, str]], Body]],
           boundary: str) -> Iterator[bytes]:
    """Encode ``parts`` as a ``multipart/mixed`` body, lazily, as byte chunks.

    ``parts`` is any iterable of :class:`Part` or ``(headers, body)`` pairs; it
    is consumed one part at a time as the chunks are.  A file-like body is read
    in pieces of :data:`READ_SIZE` bytes.  A header name or value that could
    break the framing (CR, LF) raises ``ValueError``, and so does a body that
    contains the delimiter (use :func:`new_boundary`), before that part's
    first byte is yielded.
    """
    bnd = _check_boundary(boundary)
    for item in parts:
        yield from _encode_part(_as_part(item), bnd)
    yield _closing(bnd)


def _closing(bnd: bytes) -> bytes:
    return b"--" + bnd + b"--\r\n"


def _encode_part(part: Part, bnd: bytes) -> Iterator[bytes]:
    """One part's chunks: its delimiter line, header block, body and the CRLF after it."""
    delim = b"--" + bnd
    inner = b"\r\n" + delim
    head = delim + b"\r\n" + _header_block(part.headers)
    body = part.body
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body) if not isinstance(body, bytes) else body
        if data.startswith(delim) or inner in data:
            raise ValueError(f"a part's body contains the multipart delimiter {delim!r}; "
                             "encode with a fresh batch.multipart.new_boundary()")
        yield head
        yield data
    elif callable(getattr(body, "read", None)):
        yield head
        # Keep the last len(inner)-1 bytes of the previous piece so that a
        # delimiter split across two reads is still caught.
        tail = b"\r\n"
        while True:
            piece = body.read(READ_SIZE)
            if not piece:
                break
            if not isinstance(piece, (bytes, bytearray)):
                raise TypeError(f"a file-like part body must be opened in binary mode; "
                                f"its read() returned {type(piece).__name__}")
            if inner in tail + piece[: len(inner)] or inner in piece:
                raise ValueError(f"a part's body contains the multipart delimiter {delim!r}; "
                                 "encode with a fresh batch.multipart.new_boundary()")
            tail = bytes(piece[-(len(inner) - 1):])
            yield bytes(piece)
    else:
        raise TypeError(f"a part body must be bytes or a binary file-like object, "
                        f"got {type(body).__name__}")
    yield b"\r\n"


def encoded_length(parts: Iterable[Part], boundary: str) -> int:
    """The number of bytes :func:`encode` yields for ``parts`` with bytes bodies."""
    n = len(boundary) + 6
    for part in parts:
        if not isinstance(part.body, (bytes, bytearray, memoryview)):
            raise TypeError("encoded_length() needs bytes bodies")
        n += len(boundary) + 6 + len(_header_block(part.headers)) + len(part.body)
    return n


# Decoder states (one at a time, in this order; a part loops HEADERS -> BODY).
_PREAMBLE = "preamble"      # before the first delimiter: skipped
_DELIM_END = "delimiter"    # just after "--BOUNDARY": "--" closes, padding + CRLF opens a part
_HEADERS = "headers"        # inside a part's header block, up to the blank line
_BODY = "body"              # inside a part's body, up to CRLF "--BOUNDARY"
_EPILOGUE = "epilogue"      # after the closing delimiter: ignored
_FAILED = "failed"          # a MultipartError was raised: every later call raises again


class Decoder:
    """Push-style incremental decoder: :meth:`feed` bytes, get finished parts.

    >>> d = Decoder("b0")
    >>> d.feed(b"--b0\\r\\nA: 1\\r\\n\\r\\nx\\r\\n--b")
    []
    >>> d.feed(b"0--\\r\\n")
    [Part({'A': '1'}, b'x')]
    >>> d.close()

    Memory is bounded by the current part's body plus a delimiter's length;
    a header block over ``max_header_bytes`` raises :class:`MultipartError`.
    :meth:`close` raises :class:`MultipartError` unless the closing delimiter
    was seen.
    """

    def __init__(self, boundary: str, *, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        bnd = _check_boundary(boundary)
        self._delim = b"--" + bnd               # opens the first part
        self._inner = b"\r\n--" + bnd           # ends a body, opens the next
        self._max_header_bytes = max_header_bytes
        self._buf = bytearray()
        self._state = _PREAMBLE
        self._headers = Headers()
        self._body: list[bytes] = []            # pieces of the current body already moved out
        self._parts = 0
        self._at_start = True                   # nothing consumed yet: a delimiter may open the input

    @property
    def done(self) -> bool:
        """Whether the closing delimiter has been seen."""
        return self._state == _EPILOGUE

    def _fail(self, message: str) -> MultipartError:
        self._state = _FAILED
        self._buf = bytearray()
        self._body = []
        return MultipartError(f"{message} (in part {self._parts + 1})")

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Part]:
        """Take the next bytes; return the parts completed by them (maybe none)."""
        if self._state == _FAILED:
            raise MultipartError("the decoder already failed; start a new one")
        if self._state == _EPILOGUE:
            return []
        self._buf += chunk
        out: list[Part] = []
        # Each pass consumes bytes from the front of the buffer or leaves the
        # loop waiting for more input, so the loop always ends.
        while self._step(out):
            pass
        return out

    def _step(self, out: list[Part]) -> bool:
        buf = self._buf
        state = self._state
        if state == _BODY:
            end = buf.find(self._inner)
            if end < 0:
                # Keep just enough to recognise a delimiter cut in two.
                keep = len(self._inner) - 1
                if len(buf) > keep:
                    self._body.append(bytes(buf[: len(buf) - keep]))
                    del buf[: len(buf) - keep]
                return False
            self._body.append(bytes(buf[:end]))
            del buf[: end + len(self._inner)]
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            out.append(Part(self._headers, body))
            self._parts += 1
            self._headers = Headers()
            self._body = []
            self._state = _DELIM_END
            return True
        if state == _PREAMBLE:
            if self._at_start:
                if buf.startswith(self._delim):
                    del buf[: len(self._delim)]
                    self._state = _DELIM_END
                    return True
                if len(buf) < len(self._delim) and self._delim.startswith(buf):
                    return False    # maybe the start of the first delimiter: wait
                self._at_start = False
            at = buf.find(self._inner)
            if at < 0:
                keep = len(self._inner) - 1
                if len(buf) > keep:
                    del buf[: len(buf) - keep]
                return False
            del buf[: at + len(self._inner)]
            self._state = _DELIM_END
            return True
        if state == _DELIM_END:
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = _EPILOGUE
                buf.clear()
                return False
            # Transport padding (spaces, tabs) may follow a delimiter before its CRLF.
            i = 0
            while i < len(buf) and buf[i] in b" \t":
                i += 1
            if i > 1024:
                raise self._fail("too much padding after a multipart delimiter")
            if len(buf) < i + 2:
                return False
            if buf[i:i + 2] != b"\r\n":
                raise self._fail("a multipart delimiter must be followed by CRLF or '--' "
                                 "(the boundary appears inside a part, or the input is not "
                                 "this boundary's multipart)")
            del buf[: i + 2]
            self._state = _HEADERS
            return True
        if state == _HEADERS:
            if buf.startswith(b"\r\n"):   # a part with no headers
                del buf[:2]
                self._state = _BODY
                return True
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._max_header_bytes:
                    raise self._fail(f"a part's headers are longer than {self._max_header_bytes} bytes")
                return False
            if end > self._max_header_bytes:
                raise self._fail(f"a part's headers are longer than {self._max_header_bytes} bytes")
            self._headers = self._parse_headers(bytes(buf[:end]))
            del buf[: end + 4]
            self._state = _BODY
            return True
        return False

    def _parse_headers(self, block: bytes) -> Headers:
        try:
            return parse_header_block(block)
        except MultipartError as exc:
            raise self._fail(str(exc)) from None

    def close(self) -> None:
        """Declare the input finished; raise :class:`MultipartError` if it was truncated."""
        if self._state == _EPILOGUE:
            return
        if self._state == _FAILED:
            raise MultipartError("the decoder already failed; start a new one")
        where = {_PREAMBLE: "before the first delimiter", _DELIM_END: "after a delimiter",
                 _HEADERS: "inside a part's headers", _BODY: "inside a part's body"}[self._state]
        raise self._fail(f"truncated multipart input: it ended {where}, without the closing "
                         "delimiter")


def parse_header_block(block: bytes) -> Headers:
    """Parse ``Name: value`` lines separated by CRLF (no blank line) into :class:`Headers`.

    Raises :class:`MultipartError` on a line that is not a header.
    """
    headers = Headers()
    last: str | None = None
    if not block:
        return headers
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):   # obsolete line folding continues the last header
            if last is None:
                raise MultipartError("a header block starts with a continuation line")
            headers[last] = headers[last] + " " + line.strip(b" \t").decode("latin-1")
            continue
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise MultipartError(f"malformed header line {bytes(line[:80])!r}")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise MultipartError(f"a header value contains CR, LF or NUL: {bytes(line[:80])!r}")
        last = name.decode("ascii")
        value_str = value.strip(b" \t").decode("latin-1")
        headers[last] = headers[last] + ", " + value_str if last in headers else value_str
    return headers


def decode(chunks: Iterable[bytes | bytearray | memoryview], boundary: str, *,
           max_header_bytes: int = MAX_HEADER_BYTES) -> Iterator[Part]:
    """Decode a ``multipart/mixed`` body given as byte chunks of any sizes.

    Each :class:`Part` is yielded as soon as its body is complete.  Truncated
    or malformed input raises :class:`MultipartError` (after the parts before
    the fault were yielded).
    """
    decoder = Decoder(boundary, max_header_bytes=max_header_bytes)
    for chunk in chunks:
        yield from decoder.feed(chunk)
        if decoder.done:
            return
    decoder.close()
