"""``batch.redis`` and ``python -m batch worker`` against a real redis-server.

Workers are real processes (``python -m batch worker tests.redis_targets:NAME``)
or, where a test needs to look inside, a :class:`batch.redis.Worker` in a
thread.  Most targets answer ``[item, worker pid, batch size]``, so the tests
assert which worker served a request and in what batch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_support import (
    IN_CI,
    ROOT,
    RedisServer,
    Workers,
    consumers,
    need_redis_py,
    new_queue,
    pending,
    server_url,
    wait_for,
)

import batch

try:
    import redis

    import batch.redis as br
except ImportError:  # pragma: no cover
    if IN_CI:
        raise
    pytest.skip("redis-py is not installed (pip install 'batch[redis]')", allow_module_level=True)

import redis_targets


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    need_redis_py()
    yield from server_url()


@pytest.fixture
def r(redis_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def queue() -> str:
    return new_queue()


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(redis_url, tmp_path)
    yield w
    w.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    need_redis_py()
    server = RedisServer()
    server.start()
    yield server
    server.close()


class InProcess:
    """Workers run in threads of the test process; all stopped at the end."""

    def __init__(self) -> None:
        self.running: list[tuple[br.Worker, threading.Thread]] = []

    def start(self, client: Any, queue: str, fn: Any, **kw: Any) -> br.Worker:
        worker = br.Worker(client, queue, fn, **kw)
        thread = threading.Thread(target=worker.run)
        thread.start()
        self.running.append((worker, thread))
        return worker

    def close(self) -> None:
        for worker, thread in self.running:
            worker.stop()
            thread.join(10)
            assert not thread.is_alive(), f"{worker!r} did not stop"


@pytest.fixture
def in_process() -> Iterator[InProcess]:
    w = InProcess()
    yield w
    w.close()


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("batch.redis")]


# -- the client in generators and outside them --------------------------------------------


class CountingRedis(redis.Redis):
    """A real client that counts pipelines sent and single commands sent."""

    pipelines = 0
    commands = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        type(self).pipelines += 1
        return super().pipeline(*args, **kwargs)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        type(self).commands += 1
        return super().execute_command(*args, **kwargs)


def test_a_round_of_calls_is_one_pipelined_send_and_one_worker_batch(
        redis_url: str, r: Any, queue: str, in_process: InProcess) -> None:
    counted = CountingRedis.from_url(redis_url)
    echo = br.remote(counted, queue, timeout=10)
    in_process.start(r, queue, redis_targets.echo, max_delay=0.5)

    def page() -> Any:
        a, b = yield echo("a"), echo("b")
        c = yield echo("c")
        return a, b, c

    trace = batch.Trace()
    a, b, c = batch.execute(page(), trace=trace)
    pid = os.getpid()
    assert (a, b, c) == (["a", pid, 2], ["b", pid, 2], ["c", pid, 1])
    assert [[bt.size for bt in rnd.batches] for rnd in trace.rounds] == [[2], [1]]
    # one XADD pipeline per round and nothing else (replies come through the reader)
    assert (CountingRedis.pipelines, CountingRedis.commands) == (2, 0)
    counted.close()


def test_send_asend_and_per_item_errors(r: Any, queue: str, workers: Workers) -> None:
    workers.start("double", queue)
    double = br.remote(r, queue, timeout=10)
    assert double.send(21) == 42
    assert asyncio.run(double.asend("ab")) == "abab"
    results = batch.execute(batch.settled([double(1), double("bad"), double(3)]))
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], br.RemoteError)
    assert isinstance(results[1], batch.BatchError)
    assert str(results[1]) == f"ValueError: cannot double 'bad' (from a worker of queue {queue!r})"
    assert (results[1].remote_type, results[1].remote_message) == ("ValueError", "cannot double 'bad'")
    with pytest.raises(br.RemoteError, match=r"^ValueError: cannot double 'bad'"):
        double.send("bad")
    # the reply reader runs only while someone waits
    wait_for(lambda: not any(t.name.startswith("batch.redis reply") for t in reader_threads()),
             what="the reply reader thread to exit")


def test_many_concurrent_asend_calls_are_batched(r: Any, queue: str, in_process: InProcess) -> None:
    in_process.start(r, queue, redis_targets.echo, max_batch_size=64, max_delay=0.01)
    echo = br.remote(r, queue, timeout=10)

    async def main() -> list[Any]:
        return await asyncio.gather(*[echo.asend(i) for i in range(200)])

    replies = asyncio.run(main())
    assert [item for item, _, _ in replies] == list(range(200))
    assert max(size for _, _, size in replies) > 1


def test_asend_does_not_block_the_event_loop(r: Any, queue: str, in_process: InProcess) -> None:
    in_process.start(r, queue, redis_targets.slow, max_delay=0)
    os.environ["BATCH_TEST_SLOW"] = "0.3"
    echo = br.remote(r, queue, timeout=10)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def main() -> Any:
        task = asyncio.ensure_future(ticker())
        try:
            return await echo.asend("x")
        finally:
            task.cancel()

    try:
        assert asyncio.run(main())[0] == "x"
    finally:
        del os.environ["BATCH_TEST_SLOW"]
    assert ticks >= 15   # the loop kept running during the 0.3 s call


def test_a_body_that_cannot_be_encoded_fails_alone_before_sending(
        r: Any, queue: str, in_process: InProcess) -> None:
    in_process.start(r, queue, redis_targets.echo, max_delay=0.2)
    echo = br.remote(r, queue, timeout=10)
    bad, good = batch.execute(batch.settled([echo({1, 2}), echo("ok")]))
    assert isinstance(bad, TypeError)
    assert str(bad).startswith(f"{echo.__qualname__}({{1, 2}}): the body cannot be encoded by "
                               "batch.redis.JSON (TypeError: Object of type set is not JSON serializable)")
    assert good == ["ok", os.getpid(), 1]       # the worker saw one request only
    with pytest.raises(TypeError, match=r"pass remote\(\.\.\., codec=\.\.\.\)"):
        echo.send(float("nan"))
    assert r.xlen(queue) == 0


def test_the_cli_worker_takes_a_codec(r: Any, queue: str, workers: Workers) -> None:
    import pickle

    workers.start("double", queue, "--codec", "pickle")
    double = br.remote(r, queue, codec=pickle, timeout=10)
    assert double.send((1, 2)) == (1, 2, 1, 2)         # a tuple: pickle, not JSON


def test_a_custom_codec_on_both_sides(r: Any, queue: str, in_process: InProcess) -> None:
    import pickle

    class Pickle:
        dumps = staticmethod(pickle.dumps)
        loads = staticmethod(pickle.loads)

    in_process.start(r, queue, redis_targets.double, codec=Pickle())
    double = br.remote(r, queue, codec=Pickle(), timeout=10)
    assert double.send((1, 2)) == (1, 2, 1, 2)


def test_timeout_then_a_late_reply_is_dropped(r: Any, queue: str, workers: Workers) -> None:
    echo = br.remote(r, queue, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"no reply from queue '{queue}' within 0.3 s; is a worker "
                                           r"running \(python -m batch worker"):
        echo.send("early")
    assert 0.3 <= time.monotonic() - started < 1.5
    workers.start("echo", queue)   # serves the old request too; its reply finds nobody
    patient = br.remote(r, queue, timeout=10)
    assert patient.send("later")[0] == "later"
    wait_for(lambda: r.xlen(queue) == 0, what="the early request to be served")


def test_requests_queued_before_any_worker_are_served(r: Any, queue: str, workers: Workers) -> None:
    echo = br.remote(r, queue, timeout=20)
    results: list[Any] = []
    callers = [threading.Thread(target=lambda i=i: results.append(echo.send(i))) for i in range(20)]
    for t in callers:
        t.start()
    wait_for(lambda: r.exists(queue) and r.xlen(queue) == 20, what="20 queued requests")
    workers.start("echo", queue, "--max-batch-size", "64")
    for t in callers:
        t.join(20)
    assert sorted(item for item, _, _ in results) == list(range(20))


def test_unreachable_redis_fails_callers_at_once(tmp_path: Path) -> None:
    # Without a retry policy; with redis-py's default one the error comes
    # when it gives up (a few seconds), still long before the call's timeout.
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(unix_socket_path=str(tmp_path / "nobody.sock"), retry=Retry(NoBackoff(), 0))
    echo = br.remote(client, "q", timeout=30)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        echo.send("x")
    with pytest.raises(redis.ConnectionError):
        asyncio.run(echo.asend("x"))
    failed = batch.execute(batch.settled([echo("a"), echo("b")]))
    assert all(isinstance(e, redis.ConnectionError) for e in failed)
    assert time.monotonic() - started < 5


# -- the worker ---------------------------------------------------------------------------


def test_a_raising_function_fails_its_batch_and_the_worker_goes_on(
        r: Any, queue: str, workers: Workers) -> None:
    proc = workers.start("explode", queue, "--max-delay", "0.3")
    echo = br.remote(r, queue, timeout=10)
    first = batch.execute(batch.settled([echo("x"), echo("boom")]))
    assert all(isinstance(e, br.RemoteError) for e in first)
    assert str(first[0]) == f"RuntimeError: boom in a batch of 2 (from a worker of queue {queue!r})"
    assert echo.send("next") == ["next", proc.pid, 1]
    assert proc.poll() is None
    assert pending(r, queue) == 0


def test_several_worker_processes_share_one_queue(r: Any, queue: str, workers: Workers) -> None:
    procs = [workers.start("slow", queue, "--max-batch-size", "4", "--max-delay", "0.01",
                           env={"BATCH_TEST_SLOW": "0.05"}) for _ in range(3)]
    wait_for(lambda: consumers(r, queue) == 3, what="3 workers reading", timeout=20)
    echo = br.remote(r, queue, timeout=30)

    def caller(n: int) -> list[Any]:
        return [echo.send(n * 100 + i) for i in range(5)]

    results: list[Any] = []
    threads = [threading.Thread(target=lambda n=n: results.extend(caller(n))) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(item for item, _, _ in results) == sorted(n * 100 + i for n in range(12) for i in range(5))
    assert max(size for _, _, size in results) <= 4
    assert {pid for _, pid, _ in results} == {p.pid for p in procs}


def test_a_full_batch_goes_at_once(r: Any, queue: str, in_process: InProcess) -> None:
    echo = br.remote(r, queue, timeout=10)
    results: list[Any] = []
    callers = [threading.Thread(target=lambda i=i: results.append(echo.send(i))) for i in range(8)]
    for t in callers:
        t.start()
    wait_for(lambda: r.exists(queue) and r.xlen(queue) == 8, what="8 queued requests")
    started = time.monotonic()
    in_process.start(r, queue, redis_targets.echo, max_batch_size=4, max_delay=30)
    for t in callers:
        t.join(10)
    assert time.monotonic() - started < 5           # nowhere near max_delay
    assert sorted(size for _, _, size in results) == [4] * 8


def test_a_batch_waits_max_delay_for_more(r: Any, queue: str, in_process: InProcess) -> None:
    in_process.start(r, queue, redis_targets.echo, max_delay=0.25)
    echo = br.remote(r, queue, timeout=10)
    echo.send("warm-up")
    started = time.monotonic()
    assert echo.send("alone")[2] == 1
    assert 0.25 <= time.monotonic() - started < 1.0


def test_async_functions_and_operation_classes_are_served(
        r: Any, queue: str, in_process: InProcess) -> None:
    in_process.start(r, queue, redis_targets.aecho)
    in_process.start(r, queue + "-op", redis_targets.EchoOp)
    assert br.remote(r, queue, timeout=10).send(1)[0] == 1
    assert br.remote(r, queue + "-op", timeout=10).send(2)[0] == 2


def test_a_function_breaking_the_contract_fails_each_item(
        r: Any, queue: str, in_process: InProcess) -> None:
    in_process.start(r, queue, redis_targets.short, max_delay=0.2)
    echo = br.remote(r, queue, timeout=10)
    failed = batch.execute(batch.settled([echo(1), echo(2)]))
    assert [str(e) for e in failed] == [
        "TypeError: redis_targets.short returned 1 results for 2 items; it must return a list with "
        f"one result per item, in the same order (from a worker of queue {queue!r})"] * 2


def test_stop_finishes_the_batch_in_hand(r: Any, queue: str, in_process: InProcess) -> None:
    os.environ["BATCH_TEST_SLOW"] = "0.5"
    try:
        worker = in_process.start(r, queue, redis_targets.slow, max_delay=0)
        echo = br.remote(r, queue, timeout=10)
        result: list[Any] = []
        caller = threading.Thread(target=lambda: result.append(echo.send("x")))
        caller.start()
        wait_for(lambda: worker.batches == 0 and pending(r, queue) == 1, what="the batch to start")
        time.sleep(0.1)
        worker.stop()
        caller.join(10)
        assert result == [["x", os.getpid(), 1]]
        assert pending(r, queue) == 0
    finally:
        del os.environ["BATCH_TEST_SLOW"]


def test_sigterm_mid_batch_finishes_acks_and_exits_0(r: Any, queue: str, workers: Workers) -> None:
    proc = workers.start("slow", queue, "--max-delay", "0.05", env={"BATCH_TEST_SLOW": "1"})
    echo = br.remote(r, queue, timeout=15)
    results: list[Any] = []
    callers = [threading.Thread(target=lambda i=i: results.append(echo.send(i))) for i in range(3)]
    for t in callers:
        t.start()
    wait_for(lambda: pending(r, queue) == 3, what="3 requests in the worker's hands")
    time.sleep(0.3)                      # inside the 1 s call now
    proc.send_signal(signal.SIGTERM)
    for t in callers:
        t.join(15)
    assert proc.wait(10) == 0
    assert sorted(results) == [[i, proc.pid, 3] for i in range(3)]
    assert pending(r, queue) == 0
    late = br.remote(r, queue, timeout=0.3)
    with pytest.raises(TimeoutError):    # nobody reads any more
        late.send("after")


def test_startup_and_status_lines_and_quiet(r: Any, queue: str, workers: Workers) -> None:
    loud = workers.start("echo", queue, "--status-interval", "0.2", "--max-batch-size", "32")
    quiet = workers.start("echo", queue + "-q", "--status-interval", "0.2", "--quiet")
    echo = br.remote(r, queue, timeout=10)
    for i in range(3):
        echo.send(i)
    wait_for(lambda: "served in all" in workers.output(loud) and
             " 3 served in all" in workers.output(loud), what="a status line")
    time.sleep(0.5)
    for proc in (loud, quiet):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    out = workers.output(loud)
    assert f"batch worker redis_targets.echo: queue {queue!r} on " in out
    assert "max_batch_size=32 max_delay=0.005 claim_after=30 max_deliveries=3" in out
    line = next(ln for ln in out.splitlines() if " 3 served in all" in ln)
    assert "batches/s, mean batch 1.0, pending 0, fn p50 " in line and " ms p99 " in line
    assert workers.output(quiet) == ""


@pytest.mark.parametrize("target, message", [
    ("redis_targets:not_callable", "is not callable"),
    ("redis_targets:nosuch", "module 'redis_targets' has no attribute 'nosuch'"),
    ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
    ("redis_targets", "is not MODULE:FUNCTION"),
    ("redis_targets:echo --codec redis_targets:not_callable", "--codec redis_targets:not_callable has "
                                                              "no dumps() and loads()"),
])
def test_cli_bad_target_exits_2(target: str, message: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    done = subprocess.run([sys.executable, "-m", "batch", "worker", *target.split(), "--queue", "q",
                           "--redis", "unix:///nonexistent.sock"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr


def test_without_redis_py(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import batch\n"
        "try:\n    import batch.redis\nexcept ImportError as e:\n    print('ImportError:', e)\n"
        "from batch.__main__ import main\n"
        "print('exit', main(['worker', 'x:y', '--queue', 'q']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert "ImportError: batch.redis needs redis-py, which is not installed: pip install " \
           "'batch[redis]'" in done.stdout
    assert "exit 2" in done.stdout
    assert "python -m batch worker needs redis-py: pip install 'batch[redis]'" in done.stderr


@pytest.mark.parametrize("kwargs, message", [
    ({"max_batch_size": 0}, r"Worker\(\.\.\., max_batch_size=0\): max_batch_size must be a positive int"),
    ({"max_delay": -1}, r"max_delay=-1\): max_delay must be a number of seconds >= 0"),
    ({"claim_after": "30"}, r"claim_after='30'\): claim_after must be a positive number of seconds"),
    ({"max_deliveries": 1.5}, r"max_deliveries must be a positive int"),
])
def test_worker_settings_are_checked(r: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        br.Worker(r, "q", redis_targets.echo, **kwargs)


def test_remote_arguments_are_checked(r: Any) -> None:
    with pytest.raises(ValueError, match=r"timeout=0\): timeout must be a positive number of seconds"):
        br.remote(r, "q", timeout=0)
    with pytest.raises(ValueError, match=r"queue=''\): queue must be a non-empty str"):
        br.remote(r, "")
    with pytest.raises(TypeError, match=r"client must be a redis.Redis instance"):
        br.remote("redis://localhost", "q")
    with pytest.raises(TypeError, match=r"a codec needs dumps\(obj\)"):
        br.remote(r, "q", codec=object())
    with pytest.raises(TypeError, match=r"is not callable: a worker serves a list -> list function"):
        br.Worker(r, "q", 42)


# -- faults (real processes; the long ones are slow) --------------------------------------


@pytest.mark.slow
def test_kill_9_mid_batch_loses_nothing(r: Any, queue: str, workers: Workers) -> None:
    doomed = workers.start("slow", queue, "--claim-after", "1", env={"BATCH_TEST_SLOW": "30"})
    echo = br.remote(r, queue, timeout=30)
    results: list[Any] = []
    callers = [threading.Thread(target=lambda i=i: results.append(echo.send(i))) for i in range(5)]
    for t in callers:
        t.start()
    wait_for(lambda: pending(r, queue) == 5, what="5 requests in the doomed worker's hands")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    rescuer = workers.start("slow", queue, "--claim-after", "1", env={"BATCH_TEST_SLOW": "0"})
    for t in callers:
        t.join(30)
    assert sorted(item for item, _, _ in results) == list(range(5))
    assert {pid for _, pid, _ in results} == {rescuer.pid}
    assert pending(r, queue) == 0 and r.xlen(queue) == 0


@pytest.mark.slow
def test_a_poison_request_reaches_the_dead_letter_stream(r: Any, queue: str, workers: Workers) -> None:
    echo = br.remote(r, queue, timeout=60)
    outcome: list[Any] = []
    caller = threading.Thread(target=lambda: outcome.extend(
        batch.execute(batch.settled([echo("poison")]))))
    caller.start()
    started = 0
    while caller.is_alive() and started < 6:
        proc = workers.start("poison", queue, "--claim-after", "0.5", "--max-deliveries", "2")
        started += 1
        while proc.poll() is None and caller.is_alive():
            caller.join(0.05)
    caller.join(10)
    [error] = outcome
    assert isinstance(error, br.RemoteError)
    assert f"was delivered 2 times (max_deliveries=2) and each worker that took it died or hung; it " \
           f"was moved to the dead-letter stream '{queue}:dead' and will not run again" in str(error)
    assert started == 3                         # two deaths, then the third buried it
    [(_, fields)] = r.xrange(br.dead_letter_key(queue))
    assert fields[b"b"] == b'"poison"' and fields[b"deliveries"] == b"2"
    assert r.xlen(queue) == 0 and pending(r, queue) == 0
    assert echo.send("fine")[0] == "fine"       # the last worker serves on


@pytest.mark.slow
def test_redis_stopped_and_started_again(private_redis: RedisServer, tmp_path: Path) -> None:
    queue = new_queue()
    workers = Workers(private_redis.url, tmp_path)
    client = redis.Redis.from_url(private_redis.url)
    try:
        proc = workers.start("slow", queue, "--max-delay", "0", env={"BATCH_TEST_SLOW": "0.5"})
        echo = br.remote(client, queue, timeout=3)
        assert echo.send("before")[0] == "before"
        lost: list[Any] = []
        caller = threading.Thread(target=lambda: lost.extend(batch.execute(batch.settled([echo("x")]))))
        caller.start()
        wait_for(lambda: pending(client, queue) == 1, what="the request in the worker's hands")
        private_redis.stop()                   # mid-batch: the request and its reply are lost
        with pytest.raises(redis.ConnectionError):
            echo.send("while down")            # at once, not after the timeout
        caller.join(10)
        assert isinstance(lost[0], TimeoutError)   # by its timeout, not a hang
        private_redis.start()
        wait_for(lambda: consumers(client, queue) == 1, timeout=15, what="the worker to reconnect")
        assert echo.send("after")[0] == "after"
        assert proc.poll() is None
        assert "Redis unreachable" in workers.output(proc)
    finally:
        workers.close()
        client.close()


def test_every_public_name_of_batch_redis_is_documented() -> None:
    import inspect

    missing = []
    for name in br.__all__:
        obj = getattr(br, name)
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if not attr.startswith("_") and callable(value) and not inspect.getdoc(getattr(obj, attr)):
                    missing.append(f"{name}.{attr}")
    assert missing == []
    assert br.RemoteError.__module__ == "batch.redis"
    assert issubclass(br.RemoteError, batch.BatchError)


def test_a_foreign_entry_goes_to_the_dead_letter_stream(r: Any, queue: str, in_process: InProcess) -> None:
    in_process.start(r, queue, redis_targets.echo, max_delay=0)
    r.xadd(queue, {"b": '"x"', "r": "some:other:key", "i": "1"})   # not sent by remote()
    wait_for(lambda: r.exists(br.dead_letter_key(queue)), what="the dead-letter entry")
    [(_, fields)] = r.xrange(br.dead_letter_key(queue))
    assert fields[b"reason"] == b"malformed request (not sent by batch.redis.remote)"
    assert not r.exists("some:other:key")
    assert br.remote(r, queue, timeout=10).send("fine")[0] == "fine"


def test_remote_operations_in_execute_async(r: Any, queue: str, in_process: InProcess) -> None:
    in_process.start(r, queue, redis_targets.echo, max_delay=0.2)
    echo = br.remote(r, queue, timeout=10)

    def gen() -> Any:
        a, b = yield echo(1), echo(2)
        return a, b

    a, b = asyncio.run(batch.execute_async(gen()))   # run_batch is blocking: runs in a thread
    assert (a, b) == ([1, os.getpid(), 2], [2, os.getpid(), 2])
