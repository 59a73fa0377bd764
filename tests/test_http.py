"""batch.http against real servers on 127.0.0.1: Flask under werkzeug, Starlette under uvicorn.

What each test asserts is what the servers received (HTTP requests on the
wire, parts run by the wrapped app) and what the caller got back.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from httpkit import Recorder, uvicorn_server, wsgi_server

import batch
from batch import multipart
from batch.http import AsgiBatchEndpoint, BatchEndpoint, Client, HTTPStatusError, RequestError, Response

flask = pytest.importorskip("flask")
starlette = pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


class Gauge:
    """How many calls are inside a block at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


class FlaskSite:
    """A Flask 3 app behind BatchEndpoint, served by werkzeug; records both sides."""

    def __init__(self) -> None:
        app = flask.Flask("site")
        self.objects: dict[str, bytes] = {}
        self.gauge = Gauge()
        self.posts = Gauge()

        @app.get("/people/<name>")
        def person(name: str) -> Any:
            h = flask.request.headers
            return {"name": name, "auth": h.get("Authorization"), "trace": h.get("X-Trace"),
                    "content_type": flask.request.content_type}

        @app.patch("/people/<name>")
        def patch_person(name: str) -> Any:
            return {"name": name, "got": flask.request.get_json(),
                    "content_type": flask.request.content_type}

        @app.route("/objects/<key>", methods=["GET", "PUT", "DELETE"])
        def obj(key: str) -> Any:
            if flask.request.method == "PUT":
                self.objects[key] = flask.request.get_data()
                return "", 204
            if key not in self.objects:
                flask.abort(404)
            if flask.request.method == "DELETE":
                del self.objects[key]
                return "", 204
            return flask.Response(self.objects[key], mimetype="application/octet-stream")

        @app.get("/sleep/<float:seconds>")
        def sleep(seconds: float) -> Any:
            with self.gauge:
                time.sleep(seconds)
            return {"slept": seconds}

        self.release = threading.Event()

        @app.get("/block")
        def block() -> Any:
            self.release.wait(10)   # until the test lets go: a reply that never comes in time
            return {"released": True}

        @app.get("/crash")
        def crash() -> Any:
            raise RuntimeError("boom")

        self.inner = Recorder(app.wsgi_app)
        self.endpoint = BatchEndpoint(self.inner, path="/batch", max_parts=10, max_body_bytes=1 << 16)

        def counted(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            with self.posts:
                return list(self.endpoint(environ, start_response))

        self.outer = Recorder(counted)

    def reset(self) -> None:
        self.inner.requests.clear()
        self.outer.requests.clear()
        self.objects.clear()
        self.gauge.most = self.posts.most = 0
        self.release.clear()


@pytest.fixture(scope="module")
def site_server() -> Iterator[tuple[FlaskSite, str]]:
    site = FlaskSite()
    with wsgi_server(site.outer) as url:
        yield site, url


@pytest.fixture
def site(site_server: tuple[FlaskSite, str]) -> FlaskSite:
    site_server[0].reset()
    return site_server[0]


@pytest.fixture
def url(site_server: tuple[FlaskSite, str]) -> str:
    return site_server[1]


def parts_of(request: dict[str, Any]) -> list[multipart.Part]:
    boundary = multipart.parse_boundary(request["headers"]["Content-Type"])
    return list(multipart.decode([request["body"]], boundary))


def raw_post(url: str, body: bytes, headers: dict[str, str], path: str = "/batch",
             method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# -- the client against Flask -------------------------------------------------------

def test_one_round_is_one_post_and_each_part_runs_once(site: FlaskSite, url: str) -> None:
    api = Client(url, headers={"Authorization": "Bearer t0k"})

    def gen() -> Any:
        alice, bob = yield api.get("/people/alice"), api.patch("/people/bob", json={"age": 3})
        return alice, bob

    trace = batch.Trace()
    alice, bob = batch.execute(gen(), trace=trace)
    assert site.outer.lines == ["POST /batch"]
    assert site.inner.lines == ["GET /people/alice", "PATCH /people/bob"]
    assert len(trace.rounds) == 1 and [b.size for b in trace.rounds[0].batches] == [2]
    assert (alice.status, alice.reason) == (200, "OK")
    assert alice.headers["content-type"] == "application/json"
    assert alice.json() == {"name": "alice", "auth": "Bearer t0k", "trace": None, "content_type": None}
    assert bob.json() == {"name": "bob", "got": {"age": 3}, "content_type": "application/json"}
    bob.raise_for_status()
    # The outer request carried the client's headers once; the parts carry none of them.
    post = site.outer.requests[0]
    assert post["headers"]["Authorization"] == "Bearer t0k"
    parts = parts_of(post)
    assert [dict(p.headers.items()) for p in parts] == [
        {"Content-Type": "application/http", "Content-ID": "<1>"},
        {"Content-Type": "application/http", "Content-ID": "<2>"}]
    assert parts[0].body == b"GET /people/alice HTTP/1.1\r\n\r\n"
    assert parts[1].body == (b'PATCH /people/bob HTTP/1.1\r\nContent-Type: application/json\r\n'
                             b'Content-Length: 9\r\n\r\n{"age":3}')


def test_max_parts_chunks_a_round_into_several_posts(site: FlaskSite, url: str) -> None:
    api = Client(url, max_parts=3)
    trace = batch.Trace()
    responses = batch.execute([api.get(f"/people/p{i}") for i in range(7)], trace=trace)
    assert [r.json()["name"] for r in responses] == [f"p{i}" for i in range(7)]
    assert sorted(len(parts_of(r)) for r in site.outer.requests) == [1, 3, 3]
    assert site.outer.lines == ["POST /batch"] * 3
    assert sorted(site.inner.lines) == sorted(f"GET /people/p{i}" for i in range(7))
    assert len(trace.rounds) == 1


def test_max_batch_bytes_splits_a_round_of_large_bodies(site: FlaskSite, url: str) -> None:
    api = Client(url, max_part_bytes=1000, max_batch_bytes=2500)
    puts = [api.put(f"/objects/o{i}", body=bytes([65 + i]) * 1000) for i in range(5)]
    assert [r.status for r in batch.execute(puts)] == [204] * 5
    assert sorted(len(parts_of(r)) for r in site.outer.requests) == [1, 2, 2]
    assert site.objects == {f"o{i}": bytes([65 + i]) * 1000 for i in range(5)}


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_bounds_the_posts_in_flight(site: FlaskSite, url: str, concurrency: int) -> None:
    api = Client(url, max_parts=1, concurrency=concurrency)
    responses = batch.execute([api.get("/sleep/0.3") for _ in range(3)])
    assert [r.json() for r in responses] == [{"slept": 0.3}] * 3
    assert site.outer.lines == ["POST /batch"] * 3
    assert site.posts.most == concurrency
    # The round's thread pool is gone by the time execute returns.
    assert [t for t in threading.enumerate() if t.name.startswith("batch.http")] == []


def test_large_and_file_like_bodies_go_alone_and_stream(site: FlaskSite, url: str) -> None:
    api = Client(url, max_part_bytes=16)

    class Unsized(io.RawIOBase):
        """A non-seekable stream: http.client must send it chunked."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            out, self.data = self.data[:size], self.data[size:]
            return out

    puts = [api.put("/objects/small", body=b"0123456789abcdef"),       # 16 bytes: a part
            api.put("/objects/big", body=b"x" * 17),                    # 17 bytes: alone
            api.put("/objects/file", body=io.BytesIO(b"from a file")),  # seekable: alone, sized
            api.put("/objects/pipe", body=Unsized(b"y" * 100_000))]     # unsized: alone, chunked
    assert [r.status for r in batch.execute(puts)] == [204] * 4
    assert sorted(site.outer.lines) == ["POST /batch", "PUT /objects/big", "PUT /objects/file",
                                        "PUT /objects/pipe"]
    sent = {r["path"]: r for r in site.outer.requests}
    assert sent["/objects/file"]["headers"]["Content-Length"] == "11"
    assert sent["/objects/pipe"]["headers"]["Transfer-Encoding"] == "chunked"
    assert [len(parts_of(sent["/batch"]))] == [1]
    assert site.objects == {"small": b"0123456789abcdef", "big": b"x" * 17, "file": b"from a file",
                            "pipe": b"y" * 100_000}


def test_a_calls_headers_override_the_clients_whatever_their_case(site: FlaskSite, url: str) -> None:
    api = Client(url, max_part_bytes=4, headers={"authorization": "client", "X-Trace": "client"})
    put = api.put("/objects/k", body=b"alone!", headers={"Authorization": "call"})
    assert batch.execute(put).status == 204
    (sent,) = site.outer.requests
    assert (sent["path"], sent["headers"]["Authorization"], sent["headers"]["X-Trace"]) == (
        "/objects/k", "call", "client")


def test_a_part_error_status_is_a_normal_response(site: FlaskSite, url: str) -> None:
    api = Client(url)
    missing, crash, ok = batch.execute([api.get("/objects/nope"), api.get("/crash"), api.get("/people/a")])
    assert (missing.status, crash.status, ok.status) == (404, 500, 200)
    assert not missing.ok and ok.ok
    with pytest.raises(HTTPStatusError, match=r"^GET http://127\.0\.0\.1:\d+/objects/nope answered 404 "
                                              r"NOT FOUND$") as info:
        missing.raise_for_status()
    assert info.value.response is missing
    assert "<title>404 Not Found</title>" in missing.text


def test_execute_async_and_a_thread_pool_give_the_same_responses(site: FlaskSite, url: str) -> None:
    api = Client(url)

    def gen() -> Any:
        a = yield api.get("/people/a")
        b, c = yield api.get("/people/" + a.json()["name"] + "b"), api.get("/people/c")
        return [a.json()["name"], b.json()["name"], c.json()["name"]]

    assert batch.execute(gen()) == ["a", "ab", "c"]
    assert batch.execute(gen(), max_workers=2) == ["a", "ab", "c"]
    assert asyncio.run(batch.execute_async(gen())) == ["a", "ab", "c"]
    assert site.outer.lines == ["POST /batch"] * 6


def test_a_timed_out_post_fails_only_its_own_operations(site: FlaskSite, url: str) -> None:
    api = Client(url, max_parts=1, timeout=1.0)

    def gen() -> Any:
        return (yield batch.settled([api.get("/people/quick"), api.get("/block")]))

    try:
        quick, slow = batch.execute(gen())
    finally:
        site.release.set()     # let the server's handler thread finish
    assert isinstance(quick, Response) and quick.json()["name"] == "quick"
    assert isinstance(slow, RequestError)
    assert re.fullmatch(r"GET http://127\.0\.0\.1:\d+/block \(in the batch POST to "
                        r"http://127\.0\.0\.1:\d+/batch\) failed: TimeoutError: timed out", str(slow))
    assert isinstance(slow.__cause__, TimeoutError)


def test_an_unreachable_server_fails_with_the_os_error_as_cause() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]        # bound, not listening: connections are refused
        api = Client(f"http://127.0.0.1:{port}", timeout=2)
        with pytest.raises(RequestError, match=r"GET http://127\.0\.0\.1:\d+/x \(in the batch POST to "
                                               r".*/batch\) failed: ConnectionRefusedError") as info:
            batch.execute(api.get("/x"))
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_a_server_without_batch_endpoint_fails_the_post_with_its_status(site: FlaskSite, url: str) -> None:
    api = Client(url, batch_path="/not-batch")
    with pytest.raises(RequestError, match=r"failed: BatchError: the batch endpoint answered 404 NOT FOUND"):
        batch.execute(api.get("/people/a"))


@pytest.mark.slow
def test_soak_many_rounds_and_chunks_against_both_servers(site: FlaskSite, url: str,
                                                          asgi: tuple[StarletteSite, str]) -> None:
    threads_before = threading.active_count()
    for base in (url, asgi[1]):
        api = Client(base, max_parts=5, concurrency=3)

        def gen(i: int, api: Client = api) -> Any:
            first = yield [api.get(f"/people/r{i}-{j}") for j in range(40)]
            second = yield [api.get(f"/people/{r.json()['name']}x") for r in first]
            return [r.json()["name"] for r in second]

        for i in range(30):
            assert batch.execute(gen(i)) == [f"r{i}-{j}x" for j in range(40)]
    assert len(site.outer.requests) == 30 * 2 * 8          # 40 calls in chunks of 5: 8 POSTs a round
    assert threading.active_count() == threads_before


# -- the client against hand-written batch servers: matching and malformed replies ---

def reply_server(make_parts: Callable[[list[multipart.Part]], bytes], content_type: str | None = None
                 ) -> Callable[[dict[str, Any], Any], list[bytes]]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        parts = list(multipart.decode([body], multipart.parse_boundary(environ["CONTENT_TYPE"])))
        start_response("200 OK", [("Content-Type", content_type or 'multipart/mixed; boundary="R"')])
        return [make_parts(parts)]
    return app


def http_reply(cid: str, text: str) -> tuple[dict[str, str], bytes]:
    return ({"Content-Type": "application/http", "Content-ID": cid},
            f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{text}".encode())


def test_replies_are_matched_by_content_id_not_position() -> None:
    def reversed_replies(parts: list[multipart.Part]) -> bytes:
        replies = [http_reply(f"<response-{p.headers['Content-ID'][1:-1]}>", p.body.split(b" ")[1].decode())
                   for p in parts]
        return b"".join(multipart.encode(reversed(replies), "R"))

    with wsgi_server(reply_server(reversed_replies)) as url:
        api = Client(url)
        responses = batch.execute([api.get("/a"), api.get("/b"), api.get("/c")])
    assert [r.text for r in responses] == ["/a", "/b", "/c"]


def test_a_missing_reply_part_fails_that_operation() -> None:
    def first_only(parts: list[multipart.Part]) -> bytes:
        return b"".join(multipart.encode([http_reply("<response-1>", "one")], "R"))

    with wsgi_server(reply_server(first_only)) as url:
        api = Client(url)
        one, two = batch.execute_many([api.get("/a"), api.get("/b")], return_exceptions=True)
    assert isinstance(one, Response) and one.text == "one"
    assert isinstance(two, RequestError)
    assert re.fullmatch(r"GET http://127\.0\.0\.1:\d+/b: the batch response had no part with "
                        r"Content-ID <response-2>", str(two))


@pytest.mark.parametrize("reply, cause_message", [
    (b"--R\r\nContent-ID: <response-9>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nx\r\n--R--", "answers none of the 2"),
    (b"garbage", "truncated multipart input: it ended before the first delimiter"),
])
def test_a_malformed_batch_response_fails_that_post_with_the_decoder_error(reply: bytes,
                                                                          cause_message: str) -> None:
    with wsgi_server(reply_server(lambda parts: reply)) as url:
        api = Client(url)
        results = batch.execute_many([api.get("/a"), api.get("/b")], return_exceptions=True)
    for result in results:
        assert isinstance(result, RequestError)
        assert isinstance(result.__cause__, multipart.MultipartError)
        assert cause_message in str(result.__cause__)


def test_a_truncated_batch_response_keeps_the_replies_that_arrived_whole() -> None:
    reply = b"--R\r\nContent-ID: <response-1>\r\n\r\nHTTP/1.1 200 OK\r\n\r\none\r\n--R\r\nContent-ID: <resp"
    with wsgi_server(reply_server(lambda parts: reply)) as url:
        api = Client(url)
        one, two = batch.execute_many([api.get("/a"), api.get("/b")], return_exceptions=True)
    assert isinstance(one, Response) and (one.status, one.body) == (200, b"one")
    assert isinstance(two, RequestError) and isinstance(two.__cause__, multipart.MultipartError)
    assert "truncated multipart input: it ended inside a part's headers" in str(two)


# -- hostile input on the client side: refused at the call, nothing sent ------------

@pytest.mark.parametrize("call, error, message", [
    (lambda api: api.get("/x", headers={"X-A": "1\r\nX-Injected: 2"}), ValueError,
     r"invalid value for header 'X-A'.*no CR, LF or NUL"),
    (lambda api: api.get("/x", headers={"X-A\r\nX-B": "1"}), ValueError,
     r"invalid header name 'X-A\\r\\nX-B'"),
    (lambda api: api.get("/x", headers={"X\n": "1"}), ValueError, "invalid header name"),
    (lambda api: api.get("http://evil.example/x"), ValueError, "a call can never name another host"),
    (lambda api: api.get("//evil.example/x"), ValueError, "must start with one '/'"),
    (lambda api: api.get("/x HTTP/1.1\r\nHost: evil"), ValueError, "no spaces, control or non-ASCII"),
    (lambda api: api.get("/jürgen"), ValueError, "percent-encode them"),
    (lambda api: api.get("/x", headers={"X-Name": "Jürgen ☃"}), ValueError,
     "header 'X-Name' has characters HTTP cannot carry"),
    (lambda api: api.request("GE T", "/x"), ValueError, "method 'GE T' must be a word"),
    (lambda api: api.post("/x", body=b"1", json=1), TypeError, "pass body= or json=, not both"),
    (lambda api: api.post("/x", body="text"), TypeError, r"body must be bytes .* got str \(encode a str"),
    (lambda api: api.get("/x", headers={"Content-Length": "5"}), ValueError, "set by the client itself"),
    (lambda api: api.post("/x", json={1j}), TypeError, "not JSON serializable"),
])
def test_bad_calls_are_refused_before_anything_is_sent(call: Callable[[Client], Any], error: type,
                                                       message: str) -> None:
    api = Client("http://127.0.0.1:9")   # nothing listens there: a call that got through would fail later
    with pytest.raises(error, match=message):
        call(api)


@pytest.mark.parametrize("kwargs, message", [
    ({"base_url": "ftp://x"}, r"base_url must be 'http://host\[:port\]\[/prefix\]'"),
    ({"base_url": "http://h", "max_parts": 0}, r"Client\(max_parts=0\): max_parts must be a positive int"),
    ({"base_url": "http://h", "concurrency": 1.5}, "concurrency must be a positive int"),
    ({"base_url": "http://h", "max_batch_bytes": 0}, "max_batch_bytes must be a positive int"),
    ({"base_url": "http://h", "timeout": 0}, r"Client\(timeout=0\): it must be a number of seconds > 0"),
    ({"base_url": "http://h", "batch_path": "batch"}, "path 'batch' is not a path"),
    ({"base_url": "http://h", "headers": {"A": "b\nc"}}, r"Client\(headers=...\): invalid value for header"),
])
def test_bad_client_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Client(**kwargs)


# -- the WSGI endpoint: shapes, inherited headers, refusals ---------------------------

def batch_body(*requests: bytes, boundary: str = "B", content_ids: bool = True) -> bytes:
    parts = [({"Content-Type": "application/http", **({"Content-ID": f"<{n}>"} if content_ids else {})}, r)
             for n, r in enumerate(requests, 1)]
    return b"".join(multipart.encode(parts, boundary))


MULTIPART = {"Content-Type": 'multipart/mixed; boundary="B"'}


def test_batch_headers_apply_to_parts_unless_the_part_sets_them(site: FlaskSite, url: str) -> None:
    body = batch_body(b"GET /people/a HTTP/1.1\r\n\r\n",
                      b"GET /people/b HTTP/1.1\r\nX-Trace: part\r\nAuthorization: mine\r\n\r\n")
    status, headers, reply = raw_post(url, body, {**MULTIPART, "Authorization": "outer", "X-Trace": "outer"})
    assert status == 200
    parts = list(multipart.decode([reply], multipart.parse_boundary(headers["Content-Type"])))
    assert [p.headers["Content-ID"] for p in parts] == ["<response-1>", "<response-2>"]
    import json
    a, b = (json.loads(p.body.split(b"\r\n\r\n", 1)[1]) for p in parts)
    # Content-* headers of the batch request (multipart/mixed) never reach a part.
    assert a == {"name": "a", "auth": "outer", "trace": "outer", "content_type": None}
    assert b == {"name": "b", "auth": "mine", "trace": "part", "content_type": None}


def test_other_paths_pass_through_untouched(site: FlaskSite, url: str) -> None:
    status, _, body = raw_post(url, b"", {}, path="/people/zed", method="GET")
    assert status == 200 and b'"name":"zed"' in body
    assert site.inner.lines == ["GET /people/zed"]


def test_a_part_whose_app_raises_answers_500_and_the_rest_runs(site: FlaskSite, url: str) -> None:
    api = Client(url)
    crash, ok = batch.execute([api.get("/crash"), api.get("/people/after")])
    assert crash.status == 500 and ok.json()["name"] == "after"


OK_PART = b"GET /people/a HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize("headers, body, status, message", [
    ({"Content-Type": "application/json"}, b"{}", 415,
     "a batch request must be Content-Type: multipart/mixed with a boundary"),
    (MULTIPART, b"--B\r\nBroken header\r\n\r\nx\r\n--B--", 400, "malformed multipart batch request"),
    (MULTIPART, batch_body(OK_PART)[:-20], 400, "truncated multipart input"),
    (MULTIPART, batch_body(*[OK_PART] * 11), 413, "a batch request may hold at most 10 parts"),
    (MULTIPART, batch_body(OK_PART, b"POST /batch HTTP/1.1\r\n\r\n"), 400,
     "part 2: '/batch' is the batch endpoint itself; batches cannot be nested"),
    (MULTIPART, batch_body(OK_PART, b"POST /people/../batch/ HTTP/1.1\r\n\r\n"), 400, "cannot be nested"),
    (MULTIPART, batch_body(OK_PART, b"GET http://evil.example/people/a HTTP/1.1\r\n\r\n"), 400,
     "part 2: 'http://evil.example/people/a' names another host"),
    (MULTIPART, batch_body(OK_PART, b"GET /people/a HTTP/1.1\r\nHost: evil.example\r\n\r\n"), 400,
     "part 2: Host: evil.example names another host"),
    (MULTIPART, batch_body(OK_PART, b"GET //evil.example/a HTTP/1.1\r\n\r\n"), 400,
     "must be a path starting with one '/'"),
    (MULTIPART, batch_body(OK_PART, b"GARBAGE\r\n\r\n"), 400, "is not an HTTP/1.x request line"),
    (MULTIPART, batch_body(OK_PART, b"GET /people/a HTTP/1.1"), 400, "holds no HTTP request"),
    (MULTIPART, batch_body(OK_PART, b"PUT /objects/a HTTP/1.1\r\nContent-Length: 9\r\n\r\nshort"), 400,
     "Content-Length 9 does not match the part's body of 5 bytes"),
    (MULTIPART, batch_body(OK_PART, b"GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 400,
     "header 'Transfer-Encoding' is not allowed inside a batch part"),
    (MULTIPART, b"--B\r\nContent-Type: text/plain\r\n\r\nGET / HTTP/1.1\r\n\r\n\r\n--B--", 400,
     "each part must be Content-Type: application/http"),
    (MULTIPART, b"--B--\r\n", 400, "must hold at least one part"),
    (MULTIPART, batch_body(OK_PART, b"PUT /objects/a HTTP/1.1\r\n\r\n" + b"x" * 70_000), 413,
     "a batch request body may be at most 65536 bytes"),
])
def test_the_endpoint_refuses_and_runs_nothing(site: FlaskSite, url: str, headers: dict[str, str],
                                               body: bytes, status: int, message: str) -> None:
    got, resp_headers, reply = raw_post(url, body, headers)
    assert got == status, reply
    assert message in reply.decode()
    assert resp_headers["Content-Type"] == "text/plain; charset=utf-8"
    assert site.inner.lines == []     # not even the valid first part ran


def test_the_endpoint_refuses_other_methods(site: FlaskSite, url: str) -> None:
    status, headers, body = raw_post(url, b"", {}, method="GET")
    assert (status, headers["Allow"]) == (405, "POST")
    assert body == b"the batch endpoint /batch takes POST only\n"


def test_an_absolute_url_on_the_same_host_is_served(site: FlaskSite, url: str) -> None:
    body = batch_body(f"GET {url}/people/abs HTTP/1.1\r\n\r\n".encode(),
                      f"GET {url.upper()}/people/ABS2?next=http://x HTTP/1.1\r\n\r\n".encode(),
                      b"GET /people/a://b HTTP/1.1\r\n\r\n")
    status, _, reply = raw_post(url, body, MULTIPART)
    assert status == 200 and b'"name":"abs"' in reply and b'"name":"ABS2"' in reply
    assert site.inner.lines == ["GET /people/abs", "GET /people/ABS2", "GET /people/a://b"]


FLASK_BATCH_BOUNDARY = "===============7330845974216740156=="


def flask_batch_request(url: str) -> tuple[dict[str, str], bytes]:
    """A batch exactly as Flask-Batch 0.0.2's ``Batching`` session sends it.

    Its client builds the body with ``email.mime`` (a quoted boundary of
    '=' signs, ``MIME-Version`` in each part, no ``Content-ID``) and writes
    each request with the absolute URL that ``requests`` prepared and the
    headers ``requests`` adds (no ``Host``: urllib3 adds that to the outer
    request only).
    """
    b = FLASK_BATCH_BOUNDARY
    headers = {"Content-Type": f'multipart/mixed; boundary="{b}"', "MIME-Version": "1.0",
               "User-Agent": "python-requests/2.32.3", "Accept-Encoding": "gzip, deflate",
               "Accept": "*/*", "Connection": "keep-alive"}
    common = ("User-Agent: python-requests/2.32.3\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\n"
              "Connection: keep-alive\r\n")
    body = (f"--{b}\r\nContent-Type: application/http\r\nMIME-Version: 1.0\r\n\r\n"
            f"PATCH {url}/people/alice HTTP/1.1\r\n{common}Content-Type: application/json\r\n"
            f"Content-Length: 31\r\n\r\n"
            '{"metadata": {"type": "tabby"}}'
            f"\r\n--{b}\r\nContent-Type: application/http\r\nMIME-Version: 1.0\r\n\r\n"
            f"GET {url}/people/bob HTTP/1.1\r\n{common}\r\n"
            f"\r\n--{b}--\r\n")
    return headers, body.encode()


def test_a_flask_batch_client_request_is_served(site: FlaskSite, url: str) -> None:
    headers, body = flask_batch_request(url)
    status, reply_headers, reply = raw_post(url, body, headers)
    assert status == 200
    assert site.inner.lines == ["PATCH /people/alice", "GET /people/bob"]
    # Read the reply the way Flask-Batch's client does: the boundary between the
    # quotes, the payloads between boundaries, the part headers stripped, then
    # "HTTP/1.1 CODE REASON", header lines, a blank line, the body and a CRLF.
    ctype = reply_headers["Content-Type"]
    boundary = ctype.split("=", 1)[1][1:-1].encode()
    assert ctype == f'multipart/mixed; boundary="{boundary.decode()}"'
    payloads = [p.split(b"\r\n\r\n", 1)[1] for p in reply.split(boundary)[1:-1]]
    assert len(payloads) == 2
    import json
    seen = []
    for payload in payloads:
        head, content = payload.split(b"\r\n\r\n", 1)
        content = content.rsplit(b"\r\n", 1)[0]
        status_line, _ = head.split(b"\r\n", 1)
        _, code, reason = status_line.split(b" ", 2)
        seen.append((int(code), reason, json.loads(content)))
    assert seen == [
        (200, b"OK", {"name": "alice", "got": {"metadata": {"type": "tabby"}},
                      "content_type": "application/json"}),
        (200, b"OK", {"name": "bob", "auth": None, "trace": None, "content_type": None})]
    # No Content-ID in the request parts: none in the reply parts either.
    assert b"Content-ID" not in reply


def test_script_name_bounds_the_paths_a_part_may_reach() -> None:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["SCRIPT_NAME"] + environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    endpoint = BatchEndpoint(app)

    def call(body: bytes) -> tuple[str, bytes]:
        out: list[str] = []
        environ = {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "/api", "PATH_INFO": "/batch",
                   "CONTENT_TYPE": MULTIPART["Content-Type"], "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "HTTP_HOST": "h", "wsgi.url_scheme": "http"}
        reply = b"".join(endpoint(environ, lambda status, headers: out.append(status)))
        return out[0], reply

    status, reply = call(batch_body(b"GET /api/x HTTP/1.1\r\n\r\n"))
    assert status == "200 OK" and seen == ["/api/x"] and b"\r\n\r\n/x\r\n" in reply
    status, reply = call(batch_body(b"GET /admin/x HTTP/1.1\r\n\r\n"))
    assert status.startswith("400") and b"'/admin/x' is outside '/api'" in reply
    status, reply = call(batch_body(b"GET /api/batch HTTP/1.1\r\n\r\n"))
    assert status.startswith("400") and b"cannot be nested" in reply
    assert seen == ["/api/x"]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"app": None}, TypeError, r"BatchEndpoint\(app=...\): app must be a callable application"),
    ({"path": "batch"}, ValueError, r"BatchEndpoint\(path='batch'\): path must start with '/'"),
    ({"max_parts": 0}, ValueError, r"BatchEndpoint\(max_parts=0\): max_parts must be a positive int"),
    ({"max_body_bytes": -1}, ValueError, "max_body_bytes must be a positive int"),
])
def test_bad_endpoint_settings(kwargs: dict[str, Any], error: type, message: str) -> None:
    args: dict[str, Any] = {"app": lambda e, s: [], **kwargs}
    with pytest.raises(error, match=message):
        BatchEndpoint(**args)


# -- the ASGI endpoint: Starlette under uvicorn ------------------------------------------

class StarletteSite:
    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, PlainTextResponse
        from starlette.routing import Route

        self.ran: list[str] = []
        self.gauge = Gauge()

        async def person(request: Request) -> JSONResponse:
            self.ran.append(f"{request.method} {request.url.path}")
            return JSONResponse({"name": request.path_params["name"],
                                 "auth": request.headers.get("authorization"),
                                 "trace": request.headers.get("x-trace"),
                                 "body": (await request.body()).decode()})

        async def sleep(request: Request) -> PlainTextResponse:
            self.ran.append(f"{request.method} {request.url.path}")
            with self.gauge:
                await asyncio.sleep(0.2)
            return PlainTextResponse("slept", status_code=201)

        app = Starlette(routes=[Route("/people/{name}", person, methods=["GET", "PUT"]),
                                Route("/sleep", sleep)])
        self.app = AsgiBatchEndpoint(app, path="/batch", max_parts=5, max_body_bytes=4096)


@pytest.fixture(scope="module")
def asgi_server() -> Iterator[tuple[StarletteSite, str]]:
    site = StarletteSite()
    with uvicorn_server(site.app) as url:
        yield site, url


@pytest.fixture
def asgi(asgi_server: tuple[StarletteSite, str]) -> tuple[StarletteSite, str]:
    asgi_server[0].ran.clear()
    asgi_server[0].gauge.most = 0
    return asgi_server


def test_asgi_round_runs_parts_concurrently(asgi: tuple[StarletteSite, str]) -> None:
    site, url = asgi
    api = Client(url, headers={"Authorization": "Bearer a"})

    def gen() -> Any:
        people = yield [api.get("/people/ann"), api.put("/people/bo", body=b"hello")]
        slept = yield [api.get("/sleep") for _ in range(4)]
        return people, slept

    (ann, bo), slept = asyncio.run(batch.execute_async(gen()))
    assert ann.json() == {"name": "ann", "auth": "Bearer a", "trace": None, "body": ""}
    assert bo.json() == {"name": "bo", "auth": "Bearer a", "trace": None, "body": "hello"}
    assert [(r.status, r.text) for r in slept] == [(201, "slept")] * 4
    assert site.gauge.most == 4        # the four parts of one POST ran at once
    assert sorted(site.ran) == ["GET /people/ann", "GET /sleep", "GET /sleep", "GET /sleep",
                                "GET /sleep", "PUT /people/bo"]


def test_asgi_headers_apply_unless_the_part_sets_them(asgi: tuple[StarletteSite, str]) -> None:
    _site, url = asgi
    body = batch_body(b"GET /people/a HTTP/1.1\r\n\r\n", b"GET /people/b HTTP/1.1\r\nX-Trace: mine\r\n\r\n")
    status, headers, reply = raw_post(url, body, {**MULTIPART, "X-Trace": "outer", "Authorization": "o"})
    assert status == 200
    parts = list(multipart.decode([reply], multipart.parse_boundary(headers["content-type"])))
    import json
    got = [json.loads(p.body.split(b"\r\n\r\n", 1)[1]) for p in parts]
    assert [(g["trace"], g["auth"]) for g in got] == [("outer", "o"), ("mine", "o")]
    assert [p.headers["Content-ID"] for p in parts] == ["<response-1>", "<response-2>"]


@pytest.mark.parametrize("headers, body, status, message", [
    ({"Content-Type": "text/plain"}, b"x", 415, "must be Content-Type: multipart/mixed"),
    (MULTIPART, batch_body(*[OK_PART] * 6), 413, "at most 5 parts"),
    (MULTIPART, batch_body(OK_PART, b"PUT /people/a HTTP/1.1\r\n\r\n" + b"x" * 5000), 413,
     "at most 4096 bytes"),
    (MULTIPART, batch_body(OK_PART, b"POST /batch HTTP/1.1\r\n\r\n"), 400, "cannot be nested"),
    (MULTIPART, batch_body(OK_PART, b"GET https://evil.example/ HTTP/1.1\r\n\r\n"), 400,
     "names another host"),
    (MULTIPART, batch_body(OK_PART, b"GET / HTTP/1.1\r\nHost: evil.example:80\r\n\r\n"), 400,
     "Host: evil.example:80 names another host"),
    (MULTIPART, batch_body(OK_PART)[:-5], 400, "truncated multipart input"),
])
def test_asgi_endpoint_refuses_and_runs_nothing(asgi: tuple[StarletteSite, str], headers: dict[str, str],
                                                body: bytes, status: int, message: str) -> None:
    site, url = asgi
    got, _, reply = raw_post(url, body, headers)
    assert got == status and message in reply.decode()
    assert site.ran == []


def test_asgi_other_paths_and_methods(asgi: tuple[StarletteSite, str]) -> None:
    _site, url = asgi
    status, _, body = raw_post(url, b"", {}, path="/people/x", method="GET")
    assert status == 200 and b'"name":"x"' in body
    status, headers, body = raw_post(url, b"", {}, method="GET")
    assert (status, headers["allow"], body) == (405, "POST", b"the batch endpoint /batch takes POST only\n")


# -- the documentation page ---------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "http.md"


def doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("index", range(len(doc_blocks())) if DOC.exists() else [])
def test_docs_page_blocks_run(index: int) -> None:
    code = doc_blocks()[index]
    exec(compile(code, f"{DOC}:block{index + 1}", "exec"), {"__name__": "__docs__"})


# -- the W9 benchmark section (quick sizes) -------------------------------------------------

def test_w9_quick_run_batches_in_one_post_with_the_same_responses(tmp_path: Path) -> None:
    import json
    import sys

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.__main__ import main

    out = tmp_path / "w9.json"
    assert main(["--quick", "--only", "W9", "--json", str(out)]) == 0
    w9 = json.loads(out.read_text())["w9"]
    gets, codec = w9["gets"], w9["codec"]
    assert (gets["gets"], gets["rounds"], gets["posts"], gets["same_responses"]) == (20, 1, 1, True)
    assert gets["ratio"] == pytest.approx(gets["plain_best_s"] / gets["batch_best_s"])
    assert gets["ratio"] > 1          # 20 round trips of 5 ms against one: about 10x on a quiet machine
    assert codec["encoded_bytes"] > 4 * 1024 * 1024
    # Flat memory: 4 MB went through each; neither held more than a few parts.
    assert codec["encode_peak_kib"] < 1024 and codec["decode_peak_kib"] < 1024


@pytest.mark.parametrize("module", [batch.http, multipart], ids=lambda m: m.__name__)
def test_every_public_name_is_documented(module: Any) -> None:
    import inspect

    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            missing += [f"{name}.{attr}" for attr, value in vars(obj).items()
                        if not attr.startswith("_") and callable(value) and not inspect.getdoc(value)]
    assert missing == []


# -- fuzzing the endpoints' parsing (in process: what matters is the parser) -----------------

def _fuzz_body() -> Any:
    """Batches of valid and hostile requests, encoded, then maybe cut or overwritten."""
    from hypothesis import strategies as st

    messages = st.sampled_from([
        b"GET /a HTTP/1.1\r\n\r\n", b"PUT /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        b"POST /batch HTTP/1.1\r\n\r\n", b"GET http://evil/ HTTP/1.1\r\n\r\n",
        b"GET http://h/x HTTP/1.1\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: evil\r\n\r\n", b"GET //x HTTP/1.1\r\n\r\n", b"garbage",
        b"GET /a HTTP/1.1\r\nContent-Length: 9\r\n\r\nx", b"GET /a HTTP/1.1\r\nbad header\r\n\r\n"])
    part_headers = st.sampled_from([{"Content-Type": "application/http"}, {}, {"Content-ID": "<x>"},
                                    {"Content-Type": "text/plain"}])
    batches = st.lists(st.tuples(part_headers, messages), max_size=5).map(
        lambda parts: b"".join(multipart.encode(parts, "B")))
    edits = st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=3)), max_size=2)

    def edit(body: bytes, changes: list[tuple[int, bytes]]) -> bytes:
        data = bytearray(body)
        for at, new in changes:
            at %= len(data) + 1
            data[at:at + len(new)] = new
        return bytes(data)

    return st.builds(edit, batches, edits)


def test_wsgi_endpoint_fuzzed_answers_200_or_4xx_and_runs_nothing_on_4xx() -> None:
    from hypothesis import given, settings

    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ran.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"ok"]

    endpoint = BatchEndpoint(app, max_parts=3, max_body_bytes=300)
    outcomes: list[str] = []

    @settings(max_examples=300, deadline=1000)
    @given(body=_fuzz_body())
    def check(body: bytes) -> None:
        ran.clear()
        statuses: list[tuple[str, dict[str, str]]] = []
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/batch",
                   "CONTENT_TYPE": "multipart/mixed; boundary=B", "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "HTTP_HOST": "h", "wsgi.url_scheme": "http"}
        reply = b"".join(endpoint(environ, lambda status, headers: statuses.append((status, dict(headers)))))
        status, headers = statuses[0]
        outcomes.append(status[:3])
        if status == "200 OK":
            replies = list(multipart.decode([reply], multipart.parse_boundary(headers["Content-Type"])))
            assert 1 <= len(ran) == len(replies) <= 3
        else:
            assert status[:1] == "4" and ran == [], (status, ran)

    check()
    assert {"200", "400"} <= set(outcomes)   # the fuzzer reaches both sides


def test_asgi_endpoint_fuzzed_answers_200_or_4xx_and_runs_nothing_on_4xx() -> None:
    from hypothesis import given, settings

    ran: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ran.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    endpoint = AsgiBatchEndpoint(app, max_parts=3, max_body_bytes=300)

    @settings(max_examples=100, deadline=2000)
    @given(body=_fuzz_body())
    def check(body: bytes) -> None:
        ran.clear()
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/batch", "root_path": "", "scheme": "http",
                 "query_string": b"", "server": ("h", 80),
                 "headers": [(b"host", b"h"), (b"content-type", b"multipart/mixed; boundary=B")]}
        asyncio.run(endpoint(scope, receive, send))
        status = sent[0]["status"]
        outcomes.append(status)
        if status == 200:
            boundary = multipart.parse_boundary(dict(sent[0]["headers"])[b"content-type"].decode())
            replies = list(multipart.decode([m.get("body", b"") for m in sent[1:]], boundary))
            assert 1 <= len(ran) == len(replies) <= 3
        else:
            assert 400 <= status < 500 and ran == [], (status, ran)

    outcomes: list[int] = []
    check()
    assert {200, 400} <= set(outcomes)
