"""W9: HTTP batching, and the multipart encoder and decoder.

1. A local WSGI server (wsgiref, in a child process) where every HTTP request
   costs ``latency_ms`` before it is handled (a simulated round trip).  ``gets`` GETs one at a time with
   ``http.client`` (the plain loop) versus one round of ``api.get`` through
   ``batch.http.BatchEndpoint``: the ratio of the two times, and a check that
   both got the same statuses and bodies.  Target: at least 20x for 100 GETs.
2. ``batch.multipart`` throughput on ``total_mb`` MB in parts of 64 KiB: the
   encoder (bytes bodies, output consumed chunk by chunk) and the decoder
   (fed one encoded part per chunk, as a socket would deliver it), in MB/s,
   and each one's peak traced memory (``tracemalloc``, a separate run) to
   show it is flat, not proportional to the data.  Target: 200 MB/s each.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["measure", "format_w9"]

PART = 64 * 1024


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per connection; ``server_close`` joins them."""

    daemon_threads = False
    block_on_close = True


def _items_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    match = re.fullmatch(r"/items/(\d+)", environ.get("PATH_INFO", ""))
    if not match:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such item\n"]
    n = int(match.group(1))
    body = json.dumps({"id": n, "name": f"item {n}", "tags": ["a", "b"][: n % 3]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _slow(app: Callable[..., Iterable[bytes]], seconds: float) -> Callable[..., Iterable[bytes]]:
    def delayed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        time.sleep(seconds)       # the simulated round trip: once per HTTP request
        return app(environ, start_response)
    return delayed


def _serve(app: Callable[..., Iterable[bytes]]) -> tuple[_ThreadingServer, threading.Thread]:
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return server, thread  # type: ignore[return-value]  # make_server is typed as WSGIServer


def _plain_loop(port: int, gets: int) -> list[tuple[int, bytes]]:
    out = []
    for i in range(gets):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", f"/items/{i}")
            resp = conn.getresponse()
            out.append((resp.status, resp.read()))
        finally:
            conn.close()
    return out


@contextlib.contextmanager
def _server_process(latency_ms: float, max_parts: int) -> Iterator[int]:
    """Run the slow server in a child process (its own GIL, as a real server has); yield its port.

    The child serves until its stdin closes, so it never outlives this process.
    """
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = f"from benchmarks.w9_http import serve; serve({latency_ms!r}, {max_parts!r})"
    child = subprocess.Popen([sys.executable, "-c", code],
                             cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"W9: the server process did not start (it printed {line!r})")
        yield int(line)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def serve(latency_ms: float, max_parts: int) -> None:
    """The child process: serve the slow items app behind BatchEndpoint until stdin closes."""
    from batch.http import BatchEndpoint

    server, thread = _serve(_slow(BatchEndpoint(_items_app, max_parts=max_parts), latency_ms / 1000))
    print(server.server_address[1], flush=True)
    try:
        sys.stdin.read()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def measure_gets(gets: int, latency_ms: float, repeat: int) -> dict[str, Any]:
    """Time ``gets`` GETs one at a time vs one batched round; best of ``repeat``."""
    import batch
    from batch.http import Client

    with _server_process(latency_ms, max(gets, 1)) as port:
        api = Client(f"http://127.0.0.1:{port}", max_parts=100)
        plain_times, batch_times = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            plain = _plain_loop(port, gets)
            plain_times.append(time.perf_counter() - t0)
            trace = batch.Trace()
            t0 = time.perf_counter()
            responses = batch.execute([api.get(f"/items/{i}") for i in range(gets)], trace=trace)
            batch_times.append(time.perf_counter() - t0)
            batched = [(r.status, r.body) for r in responses]
            if batched != plain:
                raise AssertionError("W9: the batched GETs got different responses than the plain loop")
        posts = -(-gets // 100)
    return {"gets": gets, "latency_ms": latency_ms, "plain_best_s": min(plain_times),
            "batch_best_s": min(batch_times), "ratio": min(plain_times) / min(batch_times),
            "rounds": len(trace.rounds), "posts": posts, "same_responses": True}


def _parts(total: int, body: bytes) -> Iterator[tuple[dict[str, str], bytes]]:
    for n in range(total // len(body)):
        yield {"Content-Type": "application/octet-stream", "Content-ID": f"<{n}>"}, body


def _encode_all(total: int, body: bytes) -> int:
    from batch.multipart import encode

    return sum(len(chunk) for chunk in encode(_parts(total, body), "bench-boundary"))


def _encoded_stream(total: int, body: bytes) -> Iterator[bytes]:
    from batch.multipart import encode

    # One part's encoding per chunk, built lazily: what a socket read would hand over.
    pending: list[bytes] = []
    for chunk in encode(_parts(total, body), "bench-boundary"):
        pending.append(chunk)
        if chunk == b"\r\n":
            yield b"".join(pending)
            pending = []
    yield b"".join(pending)


def _decode_all(chunks: Iterable[bytes]) -> int:
    from batch.multipart import decode

    return sum(len(part.body) for part in decode(chunks, "bench-boundary"))  # type: ignore[arg-type]


def measure_codec(total_mb: int, repeat: int) -> dict[str, Any]:
    """Encoder and decoder MB/s on ``total_mb`` MB in 64 KiB parts, and their peak traced memory."""
    total = total_mb * 1024 * 1024
    body = bytes(range(256)) * (PART // 256)
    # The decoder's input is made once, outside the timing, one part per chunk.
    unit = b"".join(list(_encoded_stream(PART, body))[:1])
    closing = b"--bench-boundary--\r\n"
    count = total // PART

    def feed() -> Iterator[bytes]:
        for _ in range(count):
            yield unit
        yield closing

    enc_times, dec_times = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        encoded = _encode_all(total, body)
        enc_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decoded = _decode_all(feed())
        dec_times.append(time.perf_counter() - t0)
    if decoded != count * PART:
        raise AssertionError(f"W9: decoded {decoded} body bytes, expected {count * PART}")
    tracemalloc.start()
    try:
        _encode_all(total, body)
        enc_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        _decode_all(feed())
        dec_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    mb = total / 1e6
    return {"total_mb": total_mb, "part_bytes": PART, "encoded_bytes": encoded,
            "encode_mb_s": mb / min(enc_times), "decode_mb_s": mb / min(dec_times),
            "encode_peak_kib": enc_peak / 1024, "decode_peak_kib": dec_peak / 1024}


def measure(quick: bool, repeat: int) -> dict[str, Any]:
    """The W9 section: ``gets`` and ``codec`` results (small sizes with ``quick``)."""
    gets = measure_gets(20 if quick else 100, 5.0, repeat)
    codec = measure_codec(4 if quick else 100, repeat)
    return {"gets": gets, "codec": codec}


def format_w9(doc: dict[str, Any]) -> str:
    """The W9 table as text."""
    g, c = doc["gets"], doc["codec"]
    return "\n".join([
        f"W9: HTTP batching ({g['latency_ms']:g} ms per HTTP request on a local server) and multipart",
        f"  {g['gets']} GETs one at a time (http.client)   {g['plain_best_s'] * 1000:9.1f} ms",
        f"  one round of api.get ({g['posts']} batch POST)      {g['batch_best_s'] * 1000:9.1f} ms"
        f"   {g['ratio']:.1f}x faster, same responses",
        f"  encoder, {c['total_mb']} MB in 64 KiB parts             {c['encode_mb_s']:9.0f} MB/s"
        f"   peak {c['encode_peak_kib']:.0f} KiB traced",
        f"  decoder, {c['total_mb']} MB in 64 KiB parts             {c['decode_mb_s']:9.0f} MB/s"
        f"   peak {c['decode_peak_kib']:.0f} KiB traced",
    ])
