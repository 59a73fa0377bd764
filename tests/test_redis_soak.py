"""A worker's memory stays flat over 1,000,000 requests (slow: about a minute or two)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_support import IN_CI, Workers, need_redis_py, new_queue, server_url, wait_for

import batch

try:
    import redis

    import batch.redis as br
except ImportError:  # pragma: no cover
    if IN_CI:
        raise
    pytest.skip("redis-py is not installed (pip install 'batch[redis]')", allow_module_level=True)

TOTAL = 1_000_000
ROUND = 1_000         # requests per round: one pipelined send
THREADS = 4


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    need_redis_py()
    yield from server_url()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.mark.slow
def test_worker_memory_is_flat_over_a_million_requests(redis_url: str, tmp_path: Path) -> None:
    queue = new_queue()
    workers = Workers(redis_url, tmp_path)
    client = redis.Redis.from_url(redis_url)
    try:
        proc = workers.start("echo", queue, "--quiet", "--max-batch-size", "256")
        echo = br.remote(client, queue, timeout=60)
        samples: list[tuple[int, int]] = []
        done = 0
        lock = threading.Lock()
        errors: list[BaseException] = []

        def caller() -> None:
            nonlocal done
            try:
                while True:
                    with lock:
                        if done >= TOTAL:
                            return
                        start = done
                        done += ROUND
                        if start % 100_000 == 0:
                            samples.append((start, rss_kib(proc.pid)))
                    results: list[Any] = batch.execute([echo(start + i) for i in range(ROUND)])
                    assert [item for item, _, _ in results] == list(range(start, start + ROUND))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=caller) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors[0]
        samples.append((TOTAL, rss_kib(proc.pid)))
        wait_for(lambda: client.xlen(queue) == 0, what="an empty queue")
        # Past warm-up (the first 200,000), the worker may not grow by more than 4 MiB.
        settled = [kib for n, kib in samples if n >= 200_000]
        growth = max(settled) - settled[0]
        assert growth < 4096, f"worker RSS grew {growth} KiB after warm-up: {samples}"
        print(f"worker RSS (KiB) by requests served: {samples}")
    finally:
        workers.close()
        client.close()
