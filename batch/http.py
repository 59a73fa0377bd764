"""HTTP batching: many small calls to one API become one ``multipart/mixed`` POST.

Client side, :class:`Client` makes operations: ``yield api.get("/people/1")``
is one HTTP call, and every call of one round to one client is sent as one
batch POST per ``max_parts`` chunk (Google's JSON API batch format, also
spoken by Flask-Batch's client).  Server side, :class:`BatchEndpoint` (WSGI)
and :class:`AsgiBatchEndpoint` (ASGI) wrap any app and serve such POSTs by
running each part through the app as if it had come alone.

The format: the batch request is ``Content-Type: multipart/mixed;
boundary=...``; each part is ``Content-Type: application/http`` with a
``Content-ID: <n>`` and carries one HTTP request (request line, headers,
blank line, body).  The reply is ``multipart/mixed`` too, one part per request
part, each carrying one HTTP response, with ``Content-ID: <response-n>``.

Security rule of the endpoints: the batch request's own headers (cookies,
``Authorization``, ``Host``...) apply to every part unless the part sets the
header itself (``Content-*`` headers excepted); a part can never reach
another host (an absolute URL or ``Host`` header naming another host is
refused), never run a nested batch, and never reach a path outside the mount
point (``SCRIPT_NAME`` / ``root_path``) the batch request came through.
Anything refused is answered with a 4xx before any part runs.

The runtime needs only the standard library (``http.client`` and threads).
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json as _json
import logging
import os
import posixpath
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, ClassVar
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from ._errors import BatchError
from ._operation import BatchableOperation
from .multipart import (
    READ_SIZE,
    Decoder,
    Headers,
    MultipartError,
    Part,
    _check_header,
    _closing,
    _encode_part,
    encode,
    encoded_length,
    new_boundary,
    parse_boundary,
    parse_header_block,
)

__all__ = [
    "AsgiBatchEndpoint",
    "BatchEndpoint",
    "Client",
    "HTTPStatusError",
    "Request",
    "RequestError",
    "Response",
]

log = logging.getLogger("batch.http")

# Headers that describe one hop or the framing of one message: never copied
# from the batch request to a part, and refused or dropped inside a part.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade", "expect"})
_REASONS = {code: phrase for code, phrase in ((s.value, s.phrase) for s in http.HTTPStatus)}


class HTTPStatusError(BatchError):
    """Raised by :meth:`Response.raise_for_status` for a 4xx or 5xx response.

    ``.response`` is the :class:`Response`.
    """

    def __init__(self, message: str, response: Response) -> None:
        super().__init__(message)
        self.response = response


class RequestError(BatchError):
    """An HTTP call could not be completed: the connection failed, timed out, or
    the batch response was malformed or had no reply for this call.

    The underlying error (an ``OSError``, ``TimeoutError``,
    :class:`batch.multipart.MultipartError`, ...) is the ``__cause__``.  Only
    the calls that travelled in the failed POST fail.
    """


class Response:
    """One HTTP response: ``status``, ``reason``, ``headers``, ``body``.

    ``headers`` is a case-insensitive :class:`batch.multipart.Headers`;
    ``body`` is bytes.  A 4xx or 5xx is a normal response: call
    :meth:`raise_for_status` to turn it into :class:`HTTPStatusError`.
    """

    __slots__ = ("body", "headers", "method", "reason", "status", "url")

    def __init__(self, status: int, headers: Headers | Mapping[str, str], body: bytes, *,
                 reason: str = "", method: str = "", url: str = "") -> None:
        self.status = status
        self.reason = reason or _REASONS.get(status, "")
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body
        self.method = method
        self.url = url

    @property
    def ok(self) -> bool:
        """Whether the status is below 400."""
        return self.status < 400

    @property
    def text(self) -> str:
        """The body decoded with the Content-Type's charset (UTF-8 when it names none)."""
        charset = "utf-8"
        for param in self.headers.get("Content-Type", "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset":
                charset = value.strip().strip('"') or charset
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``json.JSONDecodeError`` if it is not JSON)."""
        return _json.loads(self.body)

    def raise_for_status(self) -> None:
        """Raise :class:`HTTPStatusError` if the status is 4xx or 5xx; else do nothing."""
        if self.status >= 400:
            raise HTTPStatusError(
                f"{self.method} {self.url} answered {self.status} {self.reason}".strip(), self)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}: {self.method} {self.url}>"


def _is_file(body: object) -> bool:
    return callable(getattr(body, "read", None))


class Request(BatchableOperation[Response]):
    """One HTTP call of a :class:`Client`: an operation whose result is a :class:`Response`.

    Made by :meth:`Client.request` and its shorthands; all calls of one round
    to one client form one group (``batch_key()`` is the client).  Its class
    sets ``blocking = True``: :func:`batch.execute_async` runs the network
    work in a thread and never blocks the event loop.
    """

    __slots__ = ("body", "client", "headers", "method", "path")
    blocking: ClassVar[bool] = True

    def __init__(self, client: Client, method: str, path: str, headers: Headers,
                 body: bytes | IO[bytes] | None) -> None:
        self.client = client
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def batch_key(self) -> Client:
        """The client: one round's calls to one client are sent together."""
        return self.client

    @property
    def goes_alone(self) -> bool:
        """Whether this call is sent as a plain request of its own (file-like or large body)."""
        body = self.body
        return _is_file(body) or (isinstance(body, bytes) and len(body) > self.client.max_part_bytes)

    @classmethod
    def run_batch(cls, operations: list[Request]) -> list[Response | Exception]:
        """Send one round's calls to one client; return a response or an error for each."""
        return operations[0].client._run(operations)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.client.base_url}{self.path}>"


def _positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}({name}={value!r}): {name} must be a positive int")
    return value


def _check_path(path: object, owner: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//") \
            or not path.isascii() or any(c <= " " or c == "\x7f" for c in path):
        raise ValueError(
            f"{owner}: path {path!r} is not a path on the client's host; it must start with one '/' "
            "and have no spaces, control or non-ASCII characters (percent-encode them, e.g. "
            "'/people/j%C3%BCrgen?x=1'); a call can never name another host")
    return path


class Client:
    """A batching HTTP client for one API (stdlib ``http.client``, no dependencies).

    ``base_url`` is ``http://host[:port][/prefix]`` (or ``https://``); the
    prefix goes in front of ``batch_path`` and of every call's path.
    ``max_parts`` calls at most go in one batch POST; up to ``concurrency``
    POSTs of one round run at once (threads); a body longer than
    ``max_part_bytes`` or a file-like body goes alone, as a plain request
    (streamed).  ``timeout`` (seconds) bounds connecting and each read.
    ``headers`` go on every POST (and every call sent alone); the batch
    endpoint applies them to each part, so they are sent once per POST.
    ``max_batch_bytes`` bounds the bodies summed in one POST (default 8 MiB,
    under the endpoints' default ``max_body_bytes`` of 10 MiB): a round of
    many large bodies is split into more POSTs instead of being refused.

    >>> api = Client("http://api.local")
    >>> op = api.get("/people/alice")
    >>> op.method, op.path
    ('GET', '/people/alice')

    Every call opens its own connection (no keep-alive pool), so a client
    holds no socket between rounds and needs no closing.
    """

    def __init__(self, base_url: str, *, batch_path: str = "/batch", max_parts: int = 100,
                 concurrency: int = 3, max_part_bytes: int = 1 << 20, timeout: float = 10.0,
                 headers: Mapping[str, str] | None = None, max_batch_bytes: int = 8 << 20) -> None:
        split = urlsplit(base_url) if isinstance(base_url, str) else None
        if split is None or split.scheme not in ("http", "https") or not split.hostname \
                or split.query or split.fragment:
            raise ValueError(f"Client({base_url!r}): base_url must be 'http://host[:port][/prefix]' "
                             "or 'https://...', without query or fragment")
        self.base_url = base_url.rstrip("/")
        self._https = split.scheme == "https"
        self._host = split.hostname
        try:
            self._port = split.port
        except ValueError:
            raise ValueError(f"Client({base_url!r}): the port is not a number") from None
        self._prefix = split.path.rstrip("/")
        self.batch_path = _check_path(batch_path, "Client(batch_path=...)")
        self.max_parts = _positive_int("Client", "max_parts", max_parts)
        self.concurrency = _positive_int("Client", "concurrency", concurrency)
        if isinstance(max_part_bytes, bool) or not isinstance(max_part_bytes, int) or max_part_bytes < 0:
            raise ValueError(f"Client(max_part_bytes={max_part_bytes!r}): it must be an int >= 0")
        self.max_part_bytes = max_part_bytes
        self.max_batch_bytes = _positive_int("Client", "max_batch_bytes", max_batch_bytes)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"Client(timeout={timeout!r}): it must be a number of seconds > 0")
        self.timeout = float(timeout)
        self.headers = self._headers(headers, "Client(headers=...)")

    def __repr__(self) -> str:
        return f"<batch.http.Client {self.base_url} batch_path={self.batch_path!r}>"

    # -- making operations -----------------------------------------------------------

    @staticmethod
    def _headers(headers: Mapping[str, str] | None, where: str) -> Headers:
        out = Headers()
        if headers is None:
            return out
        if not isinstance(headers, Mapping):
            raise TypeError(f"{where}: headers must be a mapping of str to str, got {type(headers).__name__}")
        for name, value in headers.items():
            try:
                _check_header(name, value)
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(f"{where}: header {name!r} has characters HTTP cannot carry "
                                 f"({value!r}); encode them first (e.g. percent-encoding)") from None
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            out[name] = value
        return out

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | bytearray | memoryview | IO[bytes] | None = None,
                json: Any = None) -> Request:
        """An HTTP call as an operation: ``response = yield api.request("GET", "/x")``.

        ``body`` is bytes or a binary file-like object (sent alone, streamed);
        ``json`` is serialised to a UTF-8 body with ``Content-Type:
        application/json``.  Header names and values are checked here: CR or
        LF in them raises ``ValueError`` before anything is sent.
        """
        where = f"{self.base_url}: {method!s} {path!s}"
        if not isinstance(method, str) or not method.isascii() or not method.isalpha():
            raise ValueError(f"{where}: method {method!r} must be a word such as 'GET' or 'POST'")
        method = method.upper()
        _check_path(path, f"{self.base_url}: {method} {path!r}")
        hdrs = self._headers(headers, where)
        for name in list(hdrs):
            if name.lower() in _HOP_BY_HOP or name.lower() == "content-length":
                raise ValueError(f"{where}: header {name!r} is set by the client itself (framing); "
                                 "leave it out")
        data: bytes | IO[bytes] | None
        if json is not None:
            if body is not None:
                raise TypeError(f"{where}: pass body= or json=, not both")
            data = _json.dumps(json, separators=(",", ":")).encode("utf-8")
            if "Content-Type" not in hdrs:
                hdrs["Content-Type"] = "application/json"
        elif body is None:
            data = None
        elif isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
        elif _is_file(body):
            data = body
        else:
            raise TypeError(f"{where}: body must be bytes or a binary file-like object, got "
                            f"{type(body).__name__} (encode a str with .encode(), or pass json=)")
        return Request(self, method, path, hdrs, data)

    def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> Request:
        """``GET path`` as an operation."""
        return self.request("GET", path, headers=headers)

    def delete(self, path: str, *, headers: Mapping[str, str] | None = None) -> Request:
        """``DELETE path`` as an operation."""
        return self.request("DELETE", path, headers=headers)

    def post(self, path: str, *, headers: Mapping[str, str] | None = None,
             body: bytes | IO[bytes] | None = None, json: Any = None) -> Request:
        """``POST path`` with a ``body`` or ``json`` as an operation."""
        return self.request("POST", path, headers=headers, body=body, json=json)

    def put(self, path: str, *, headers: Mapping[str, str] | None = None,
            body: bytes | IO[bytes] | None = None, json: Any = None) -> Request:
        """``PUT path`` with a ``body`` or ``json`` as an operation."""
        return self.request("PUT", path, headers=headers, body=body, json=json)

    def patch(self, path: str, *, headers: Mapping[str, str] | None = None,
              body: bytes | IO[bytes] | None = None, json: Any = None) -> Request:
        """``PATCH path`` with a ``body`` or ``json`` as an operation."""
        return self.request("PATCH", path, headers=headers, body=body, json=json)

    # -- sending ---------------------------------------------------------------------

    def _run(self, ops: list[Request]) -> list[Response | Exception]:
        """One round's calls: chunk, send up to ``concurrency`` POSTs at once, match replies."""
        jobs: list[list[int]] = []
        batched = [i for i, op in enumerate(ops) if not op.goes_alone]
        # A new POST starts when one is full (max_parts) or would carry more
        # than max_batch_bytes of bodies; one part always fits.
        size = 0
        for i in batched:
            body = ops[i].body
            n = len(body) if isinstance(body, bytes) else 0
            if not jobs or len(jobs[-1]) == self.max_parts or (size + n > self.max_batch_bytes and jobs[-1]):
                jobs.append([])
                size = 0
            jobs[-1].append(i)
            size += n
        alone = [[i] for i, op in enumerate(ops) if op.goes_alone]
        results: list[Response | Exception | None] = [None] * len(ops)

        def run(job: list[int], alone: bool) -> None:
            chosen = [ops[i] for i in job]
            outs: list[Response | Exception]
            try:
                outs = [self._send_alone(chosen[0])] if alone else self._send_batch(chosen)
            except Exception as exc:
                outs = [self._failed(op, exc, alone) for op in chosen]
            for i, out in zip(job, outs):
                results[i] = out

        work = [(job, False) for job in jobs] + [(job, True) for job in alone]
        if len(work) == 1:
            run(*work[0])
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(work)),
                                    thread_name_prefix="batch.http") as pool:
                for future in [pool.submit(run, job, is_alone) for job, is_alone in work]:
                    future.result()
        return [r if r is not None else RequestError("internal error: no result") for r in results]

    def _failed(self, op: Request, exc: Exception, alone: bool) -> RequestError:
        how = "sent alone" if alone else f"in the batch POST to {self.base_url}{self.batch_path}"
        err = RequestError(f"{op.method} {self.base_url}{op.path} ({how}) failed: "
                           f"{type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return err

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.timeout, blocksize=READ_SIZE)

    def _message(self, op: Request) -> bytes:
        """The HTTP request carried by one part: request line, headers, blank line, body."""
        body = op.body if isinstance(op.body, bytes) else b""
        lines = [f"{op.method} {self._prefix}{op.path} HTTP/1.1\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in op.headers.items()]
        if body or op.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1") + body

    def _send_batch(self, ops: list[Request]) -> list[Response | Exception]:
        boundary = new_boundary()
        parts = [Part({"Content-Type": "application/http", "Content-ID": f"<{n}>"}, self._message(op))
                 for n, op in enumerate(ops, 1)]
        headers = dict(self.headers.items())
        headers["Content-Type"] = f'multipart/mixed; boundary="{boundary}"'
        headers["Content-Length"] = str(encoded_length(parts, boundary))
        url = self._prefix + self.batch_path
        conn = self._connect()
        resp: http.client.HTTPResponse | None = None
        try:
            conn.request("POST", url, body=_coalesced(encode(parts, boundary)), headers=headers)
            resp = conn.getresponse()
            ctype = resp.getheader("Content-Type") or ""
            if resp.status != 200 or not ctype.lower().startswith("multipart/mixed"):
                detail = resp.read(2000).decode("utf-8", "replace").strip()
                raise BatchError(f"the batch endpoint answered {resp.status} {resp.reason}"
                                 + (f": {detail}" if detail else ""))
            decoder = Decoder(parse_boundary(ctype))
            results: list[Response | Exception | None] = [None] * len(ops)
            try:
                while not decoder.done:
                    chunk = resp.read1(READ_SIZE)
                    if not chunk:
                        decoder.close()
                        break
                    for part in decoder.feed(chunk):
                        self._match(part, ops, results)
            except (OSError, MultipartError, http.client.HTTPException) as exc:
                if all(r is None for r in results):
                    raise
                # Replies that arrived whole stand; the rest fail with this error.
                return [r if r is not None else self._failed(op, exc, False)
                        for op, r in zip(ops, results)]
            return [r if r is not None else self._missing(op, n)
                    for n, (op, r) in enumerate(zip(ops, results), 1)]
        finally:
            # The response holds the socket open until it is closed itself,
            # also when the closing delimiter came before its end.
            if resp is not None:
                resp.close()
            conn.close()

    def _missing(self, op: Request, n: int) -> RequestError:
        return RequestError(f"{op.method} {self.base_url}{op.path}: the batch response had no part "
                            f"with Content-ID <response-{n}>")

    def _match(self, part: Part, ops: list[Request], results: list[Response | Exception | None]) -> None:
        cid = part.headers.get("Content-ID", "").strip()
        if cid.startswith("<") and cid.endswith(">"):
            cid = cid[1:-1]
        prefix, _, num = cid.partition("response-")
        if prefix or not num.isdigit() or not 1 <= int(num) <= len(ops):
            raise MultipartError(f"a reply part has Content-ID {part.headers.get('Content-ID')!r}, "
                                 f"which answers none of the {len(ops)} requests")
        index = int(num) - 1
        if results[index] is not None:
            raise MultipartError(f"two reply parts have Content-ID <response-{num}>")
        op = ops[index]
        try:
            status, reason, headers, body = _parse_response(_body(part))
        except MultipartError as exc:
            results[index] = self._failed(op, exc, False)
            return
        results[index] = Response(status, headers, body, reason=reason, method=op.method,
                                  url=self.base_url + op.path)

    def _send_alone(self, op: Request) -> Response:
        merged = Headers(self.headers.items())
        merged.update(op.headers)          # the call's own headers win, whatever their case
        headers = dict(merged.items())
        body = op.body
        if _is_file(body):
            length = _remaining_length(body)  # type: ignore[arg-type]
            if length is not None:
                headers["Content-Length"] = str(length)
        conn = self._connect()
        try:
            conn.request(op.method, self._prefix + op.path, body=body, headers=headers)
            with conn.getresponse() as resp:
                data = resp.read()
            return Response(resp.status, Headers(_joined(resp.getheaders())), data,
                            reason=resp.reason, method=op.method, url=self.base_url + op.path)
        finally:
            conn.close()


def _coalesced(chunks: Iterable[bytes], size: int = READ_SIZE) -> Iterator[bytes]:
    """Join small chunks into pieces of about ``size`` bytes: one send per piece, not per header line."""
    pending: list[bytes] = []
    held = 0
    for chunk in chunks:
        if held and held + len(chunk) > size:
            yield b"".join(pending)
            pending, held = [], 0
        pending.append(chunk)
        held += len(chunk)
    if pending:
        yield b"".join(pending)


def _body(part: Part) -> bytes:
    body = part.body
    assert isinstance(body, bytes), "decoded parts have bytes bodies"
    return body


def _joined(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    merged: dict[str, tuple[str, str]] = {}
    for name, value in pairs:
        key = name.lower()
        merged[key] = (merged[key][0], merged[key][1] + ", " + value) if key in merged else (name, value)
    return list(merged.values())


def _remaining_length(body: IO[bytes]) -> int | None:
    """Bytes left in a seekable file (sent as Content-Length), or None (sent chunked)."""
    try:
        if not body.seekable():
            return None
        here = body.tell()
        end = body.seek(0, os.SEEK_END)
        body.seek(here)
        return end - here
    except (AttributeError, OSError, ValueError):
        return None


def _parse_response(data: bytes) -> tuple[int, str, Headers, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\r\n")
        if not sep or body:
            raise MultipartError("a reply part does not hold an HTTP response (no blank line after "
                                 "its headers)")
    line, _, block = head.partition(b"\r\n")
    version, _, rest = line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/") or len(code) != 3 or not code.isdigit():
        raise MultipartError(f"a reply part starts with {bytes(line[:80])!r}, not an HTTP status line")
    headers = parse_header_block(block)
    length = headers.get("Content-Length", "")
    if length.isdigit() and int(length) < len(body) and not body[int(length):].strip(b"\r\n"):
        body = body[: int(length)]
    return int(code), reason.decode("latin-1"), headers, body


# -- the endpoints: one plan, two drivers ---------------------------------------------


class _Refusal(Exception):
    """A batch request refused before any part ran: the status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _PartRequest:
    """One request of a batch, checked and ready to run through the wrapped app."""

    __slots__ = ("body", "content_id", "headers", "method", "path", "query", "raw_path")

    def __init__(self, content_id: str | None, method: str, raw_path: bytes, path: str, query: bytes,
                 headers: Headers, body: bytes) -> None:
        self.content_id = content_id
        self.method = method
        self.raw_path = raw_path        # as sent, percent-encoded, without the query
        self.path = path                # percent-decoded, as WSGI/ASGI want it (latin-1 str)
        self.query = query
        self.headers = headers
        self.body = body


def _norm_host(host: str, scheme: str) -> str:
    host = host.strip().lower()
    default = ":443" if scheme == "https" else ":80"
    return host[: -len(default)] if host.endswith(default) else host


class _Plan:
    """The checks both endpoints make: read parts as they arrive, refuse or hand them out.

    Sans-IO: a driver feeds the body's chunks to :meth:`feed` and calls
    :meth:`finish`; either raises :class:`_Refusal`.  Nothing is run here.
    """

    def __init__(self, endpoint: _EndpointBase, content_type: str, host: str, scheme: str,
                 mount: str) -> None:
        self.endpoint = endpoint
        self.host = _norm_host(host, scheme)
        self.scheme = scheme
        self.mount = mount.rstrip("/")
        self.parts: list[Part] = []
        self.size = 0
        try:
            self.decoder = Decoder(parse_boundary(content_type))
        except MultipartError as exc:
            raise _Refusal(415, f"a batch request must be Content-Type: multipart/mixed with a "
                                f"boundary ({exc})") from None

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.endpoint.max_body_bytes:
            raise self._too_big()
        try:
            self.parts += self.decoder.feed(chunk)
        except MultipartError as exc:
            raise _Refusal(400, f"malformed multipart batch request: {exc}") from None
        if len(self.parts) > self.endpoint.max_parts:
            raise _Refusal(413, f"a batch request may hold at most {self.endpoint.max_parts} parts; "
                                "split it into several batches")

    def _too_big(self) -> _Refusal:
        return _Refusal(413, f"a batch request body may be at most {self.endpoint.max_body_bytes} "
                             "bytes; split it into several batches")

    def check_length(self, length: str | None) -> None:
        if length:
            if not length.isdigit():
                raise _Refusal(400, f"invalid Content-Length {length!r}")
            if int(length) > self.endpoint.max_body_bytes:
                raise self._too_big()

    def finish(self) -> list[_PartRequest]:
        try:
            self.decoder.close()
        except MultipartError as exc:
            raise _Refusal(400, f"malformed multipart batch request: {exc}") from None
        if not self.parts:
            raise _Refusal(400, "a batch request must hold at least one part")
        return [self._request(n, part) for n, part in enumerate(self.parts, 1)]

    def _request(self, n: int, part: Part) -> _PartRequest:
        where = f"part {n}"
        ctype = part.headers.get("Content-Type", "application/http").split(";")[0].strip().lower()
        if ctype != "application/http":
            raise _Refusal(400, f"{where}: each part must be Content-Type: application/http, "
                                f"got {ctype!r}")
        cid = part.headers.get("Content-ID")
        head, sep, body = _body(part).partition(b"\r\n\r\n")
        if not sep:
            raise _Refusal(400, f"{where}: the part holds no HTTP request (no blank line after its "
                                "headers)")
        line, _, block = head.partition(b"\r\n")
        pieces = line.split(b" ")
        if len(pieces) != 3 or not pieces[0].isalpha() or not pieces[2].startswith(b"HTTP/1."):
            raise _Refusal(400, f"{where}: {bytes(line[:80])!r} is not an HTTP/1.x request line")
        method = pieces[0].decode("ascii").upper()
        try:
            headers = parse_header_block(block)
        except MultipartError as exc:
            raise _Refusal(400, f"{where}: {exc}") from None
        target = pieces[1].decode("latin-1")
        if target[:8].lower().startswith(("http://", "https://")):   # absolute form
            url = urlsplit(target)
            if url.scheme not in ("http", "https") or _norm_host(url.netloc, url.scheme) != self.host:
                raise _Refusal(400, f"{where}: {target!r} names another host; a part may only "
                                    f"reach the host the batch request was sent to ({self.host})")
            target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        if not target.startswith("/") or target.startswith("//"):
            raise _Refusal(400, f"{where}: request target {target!r} must be a path starting with "
                                "one '/' (or an absolute URL on this host)")
        host = headers.get("Host")
        if host is not None and _norm_host(host, self.scheme) != self.host:
            raise _Refusal(400, f"{where}: Host: {host} names another host; a part may only reach "
                                f"the host the batch request was sent to ({self.host})")
        for name in headers:
            if name.lower() in ("transfer-encoding", "upgrade"):
                raise _Refusal(400, f"{where}: header {name!r} is not allowed inside a batch part")
        raw_path, _, query = target.partition("?")
        path = unquote_to_bytes(raw_path).decode("latin-1")
        normal = posixpath.normpath(unquote(raw_path))
        if self.mount and not (path == self.mount or path.startswith(self.mount + "/")):
            raise _Refusal(400, f"{where}: {raw_path!r} is outside {self.mount!r}, where the batch "
                                "request was sent; a part may only reach paths below it")
        if normal in (self.mount + self.endpoint.path, self.mount + self.endpoint.path + "/"):
            raise _Refusal(400, f"{where}: {raw_path!r} is the batch endpoint itself; batches "
                                "cannot be nested")
        length = headers.get("Content-Length")
        if length is not None:
            if not length.strip().isdigit() or int(length) > len(body) \
                    or body[int(length):].strip(b"\r\n"):
                raise _Refusal(400, f"{where}: Content-Length {length} does not match the part's "
                                    f"body of {len(body)} bytes")
            body = body[: int(length)]
        return _PartRequest(cid, method, raw_path.encode("latin-1"), path,
                            query.encode("latin-1"), headers, body)


def _reply_part(req: _PartRequest, status: str, headers: Iterable[tuple[str, str]],
                body: bytes) -> Part:
    """A reply part: one HTTP response, Content-ID ``<response-X>`` for a request ``<X>``."""
    lines = [f"HTTP/1.1 {status}\r\n"]
    has_length = False
    for name, value in headers:
        if name.lower() in _HOP_BY_HOP:
            continue
        has_length = has_length or name.lower() == "content-length"
        # An app's header with a line break would break the framing: flatten it.
        lines.append(f"{name}: {value.replace(chr(13), ' ').replace(chr(10), ' ')}\r\n")
    if not has_length:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    part_headers = {"Content-Type": "application/http"}
    if req.content_id is not None:
        cid = req.content_id.strip()
        inner = cid[1:-1] if cid.startswith("<") and cid.endswith(">") else cid
        part_headers["Content-ID"] = f"<response-{inner}>"
    return Part(part_headers, "".join(lines).encode("latin-1", "replace") + body)


class _EndpointBase:
    def __init__(self, app: Any, path: str = "/batch", max_parts: int = 100,
                 max_body_bytes: int = 10 << 20) -> None:
        name = type(self).__name__
        if not callable(app):
            raise TypeError(f"{name}(app=...): app must be a callable application, got {app!r}")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"{name}(path={path!r}): path must start with '/', e.g. '/batch'")
        self.app = app
        self.path = path.rstrip("/") or "/"
        self.max_parts = _positive_int(name, "max_parts", max_parts)
        self.max_body_bytes = _positive_int(name, "max_body_bytes", max_body_bytes)


_OUTER_ONLY = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH", "werkzeug.request", "werkzeug.proxy_fix.orig"})

WSGIStartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], WSGIStartResponse], Iterable[bytes]]


class BatchEndpoint(_EndpointBase):
    """WSGI middleware: serve batch POSTs at ``path`` by running each part through ``app``.

    ``app`` is any WSGI application (Flask, Django, ...).  Parts run in order,
    one after the other, each with its own environ built from the batch
    request's (its headers apply unless the part sets them, ``Content-*``
    excepted).  The reply streams in pieces of about 64 KiB as the parts
    run, so memory stays bounded by a piece and one part.  Refused with a
    4xx and nothing run: not multipart (415), malformed or truncated (400),
    more than ``max_parts`` parts or a body over ``max_body_bytes`` (413), a
    nested batch, a part for another host or outside ``SCRIPT_NAME`` (400), a
    method other than POST (405).  Every other path passes through untouched.
    """

    def __init__(self, app: WSGIApp, path: str = "/batch", max_parts: int = 100,
                 max_body_bytes: int = 10 << 20) -> None:
        super().__init__(app, path, max_parts, max_body_bytes)

    def __call__(self, environ: dict[str, Any], start_response: WSGIStartResponse) -> Iterable[bytes]:
        """Serve one WSGI request."""
        if (environ.get("PATH_INFO") or "/").rstrip("/") != self.path.rstrip("/"):
            app: WSGIApp = self.app
            return app(environ, start_response)
        try:
            if environ.get("REQUEST_METHOD") != "POST":
                raise _Refusal(405, f"the batch endpoint {self.path} takes POST only")
            scheme = environ.get("wsgi.url_scheme", "http")
            host = environ.get("HTTP_HOST") or (
                f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}")
            plan = _Plan(self, environ.get("CONTENT_TYPE", ""), host, scheme,
                         environ.get("SCRIPT_NAME", ""))
            length = environ.get("CONTENT_LENGTH") or None
            plan.check_length(length)
            if length is None and not environ.get("wsgi.input_terminated"):
                raise _Refusal(411, "a batch request needs a Content-Length")
            stream = environ["wsgi.input"]
            left = int(length) if length is not None else None
            while left is None or left > 0:
                chunk = stream.read(READ_SIZE if left is None else min(READ_SIZE, left))
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                plan.feed(chunk)
            requests = plan.finish()
        except _Refusal as refusal:
            return _wsgi_refuse(refusal, start_response)
        boundary = new_boundary()
        start_response("200 OK", [("Content-Type", f'multipart/mixed; boundary="{boundary}"')])
        # Replies go out in pieces of about 64 KiB, not one write per part:
        # small writes meet Nagle's algorithm and delayed ACKs on the
        # server's socket, which cost tens of milliseconds per batch.
        return _coalesced(self._replies(environ, requests, boundary))

    def _replies(self, environ: dict[str, Any], requests: list[_PartRequest],
                 boundary: str) -> Iterator[bytes]:
        bnd = boundary.encode("ascii")
        for req in requests:
            yield b"".join(_encode_part(self._run_part(environ, req), bnd))
        yield _closing(bnd)

    def _environ(self, outer: dict[str, Any], req: _PartRequest) -> dict[str, Any]:
        # The outer request's objects (a parsed werkzeug request, its body
        # stream) describe the batch, not the part: they are not copied.
        env = {k: v for k, v in outer.items()
               if not k.startswith("HTTP_") and k not in _OUTER_ONLY}
        for key, value in outer.items():
            if key.startswith("HTTP_") and not key.startswith("HTTP_CONTENT_") \
                    and key[5:].replace("_", "-").lower() not in _HOP_BY_HOP:
                env[key] = value
        for name, value in req.headers.items():
            key = name.upper().replace("-", "_")
            if name.lower() in _HOP_BY_HOP or key == "HOST":
                continue
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                env[key] = value
            else:
                env["HTTP_" + key] = value
        script = outer.get("SCRIPT_NAME", "").rstrip("/")
        env["REQUEST_METHOD"] = req.method
        env["PATH_INFO"] = req.path[len(script):]
        env["QUERY_STRING"] = req.query.decode("latin-1")
        env["REQUEST_URI"] = env["RAW_URI"] = req.raw_path.decode("latin-1") + (
            "?" + env["QUERY_STRING"] if req.query else "")
        env["CONTENT_LENGTH"] = str(len(req.body))
        env["wsgi.input"] = io.BytesIO(req.body)
        env["wsgi.input_terminated"] = True
        return env

    def _run_part(self, outer: dict[str, Any], req: _PartRequest) -> Part:
        got: list[Any] = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], object]:
            got[:] = [status, headers]
            return chunks.append

        try:
            app: WSGIApp = self.app
            result = app(self._environ(outer, req), start_response)
            try:
                for chunk in result:
                    chunks.append(bytes(chunk))
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if not got:
                raise RuntimeError("the app returned without calling start_response")
        except Exception:
            log.exception("batch part %s %s failed in the wrapped app", req.method, req.path)
            got[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
            chunks[:] = [b"internal server error\n"]
        return _reply_part(req, got[0], got[1], b"".join(chunks))


def _wsgi_refuse(refusal: _Refusal, start_response: WSGIStartResponse) -> list[bytes]:
    body = (refusal.message + "\n").encode("utf-8")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    if refusal.status == 405:
        headers.append(("Allow", "POST"))
    start_response(f"{refusal.status} {_REASONS.get(refusal.status, '')}", headers)
    return [body]


ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], ASGIReceive, ASGISend], Awaitable[None]]


class AsgiBatchEndpoint(_EndpointBase):
    """ASGI middleware: serve batch POSTs at ``path`` by running each part through ``app``.

    ``app`` is any ASGI application (Starlette, FastAPI, ...).  The parts run
    concurrently as asyncio tasks; replies are sent in request order, each as
    soon as it and those before it are done.  Refusals are those of
    :class:`BatchEndpoint` (``root_path`` plays the part of ``SCRIPT_NAME``).
    Every other path, and lifespan and websocket scopes, pass through
    untouched.
    """

    def __init__(self, app: ASGIApp, path: str = "/batch", max_parts: int = 100,
                 max_body_bytes: int = 10 << 20) -> None:
        super().__init__(app, path, max_parts, max_body_bytes)

    async def __call__(self, scope: MutableMapping[str, Any], receive: ASGIReceive,
                       send: ASGISend) -> None:
        """Serve one ASGI connection scope."""
        app: ASGIApp = self.app
        root = scope.get("root_path", "").rstrip("/")
        path = scope.get("path", "")
        if scope["type"] != "http" or (path.rstrip("/") != self.path.rstrip("/")
                                       and path.rstrip("/") != root + self.path.rstrip("/")):
            await app(scope, receive, send)
            return
        headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]])
        try:
            if scope["method"] != "POST":
                raise _Refusal(405, f"the batch endpoint {self.path} takes POST only")
            server = scope.get("server") or ("", None)
            host = headers.get("Host") or f"{server[0]}:{server[1]}"
            plan = _Plan(self, headers.get("Content-Type", ""), host, scope.get("scheme", "http"), root)
            plan.check_length(headers.get("Content-Length"))
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                plan.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            requests = plan.finish()
        except _Refusal as refusal:
            body = (refusal.message + "\n").encode("utf-8")
            out = [(b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(body)).encode())]
            if refusal.status == 405:
                out.append((b"allow", b"POST"))
            await send({"type": "http.response.start", "status": refusal.status, "headers": out})
            await send({"type": "http.response.body", "body": body})
            return
        tasks = [asyncio.ensure_future(self._run_part(scope, req)) for req in requests]
        try:
            boundary = new_boundary()
            bnd = boundary.encode("ascii")
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", f'multipart/mixed; boundary="{boundary}"'.encode("ascii"))]})
            for task in tasks:
                part = await task
                await send({"type": "http.response.body", "body": b"".join(_encode_part(part, bnd)),
                            "more_body": True})
            await send({"type": "http.response.body", "body": _closing(bnd)})
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _scope(self, outer: MutableMapping[str, Any], req: _PartRequest) -> dict[str, Any]:
        merged = Headers()
        for name, value in ((k.decode("latin-1"), v.decode("latin-1")) for k, v in outer["headers"]):
            low = name.lower()
            if not low.startswith("content-") and low not in _HOP_BY_HOP:
                merged[name] = value
        for name, value in req.headers.items():
            low = name.lower()
            if low in _HOP_BY_HOP or low == "host":
                continue
            merged[name] = value
        merged["content-length"] = str(len(req.body))
        scope = dict(outer)
        scope.update(method=req.method, path=req.path, raw_path=req.raw_path,
                     query_string=req.query,
                     headers=[(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()])
        return scope

    async def _run_part(self, outer: MutableMapping[str, Any], req: _PartRequest) -> Part:
        got: list[Any] = []
        chunks: list[bytes] = []
        sent_body = False
        finished = asyncio.Event()

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": req.body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                got[:] = [message["status"], message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    finished.set()

        try:
            app: ASGIApp = self.app
            await app(self._scope(outer, req), receive, send)
            if not got:
                raise RuntimeError("the app returned without starting a response")
        except Exception:
            log.exception("batch part %s %s failed in the wrapped app", req.method, req.path)
            got[:] = [500, [(b"content-type", b"text/plain")]]
            chunks[:] = [b"internal server error\n"]
        finally:
            finished.set()
        status = int(got[0])
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in got[1]]
        return _reply_part(req, f"{status} {_REASONS.get(status, '')}".strip(), headers, b"".join(chunks))

