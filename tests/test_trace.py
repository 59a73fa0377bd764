"""Trace: rounds and batches of every entry point, the summary table, the chrome trace."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import pytest

import batch

SPOUSE = {1: 2, 2: 1, 3: 4, 4: 3}


class GetSpouseId(batch.BatchableOperation[int]):
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    @classmethod
    def run_batch(cls, operations: list[GetSpouseId]) -> list[int]:
        return [SPOUSE[op.user_id] for op in operations]


class GetUser(batch.BatchableOperation[str]):
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    @classmethod
    def run_batch(cls, operations: list[GetUser]) -> list[Any]:
        return [f"user{op.user_id}" if op.user_id > 0 else ValueError(f"bad id {op.user_id}")
                for op in operations]


def gen_user(user_id: int) -> Generator[Any, Any, str]:
    user: str = yield GetUser(user_id)
    return user


def gen_spouses(user_id: int) -> Generator[Any, Any, tuple[str, str]]:
    spouse_id = yield GetSpouseId(user_id)
    user, spouse = yield gen_user(user_id), gen_user(spouse_id)
    return user, spouse


def shape(t: batch.Trace) -> list[list[tuple[str, int]]]:
    return [[(b.name, b.size) for b in r.batches] for r in t.rounds]


def test_spouse_example_two_rounds_sizes_one_then_two() -> None:
    t = batch.Trace()
    assert batch.execute(gen_spouses(1), trace=t) == ("user1", "user2")
    assert shape(t) == [[("GetSpouseId", 1)], [("GetUser", 2)]]
    assert [r.index for r in t.rounds] == [0, 1]
    b = t.rounds[1].batches[0]
    assert b.operation is GetUser
    assert b.key is None
    assert (b.requested, b.failed, b.error, b.layered) == (2, 0, None, False)
    assert b.thread == threading.get_ident()
    assert 0 <= b.seconds < 1
    assert t.rounds[0].start <= t.rounds[0].batches[0].start <= t.rounds[1].start
    assert t.rounds[1].seconds >= b.seconds
    assert t.round_count == 2 and len(t.batches) == 2 and t.error is None


@pytest.mark.parametrize("entry", ["execute_many", "executev", "execute_iter",
                                   "execute_many_async", "max_workers"])
def test_every_entry_point_fills_the_trace(entry: str) -> None:
    t = batch.Trace()
    roots = [gen_spouses(1), gen_spouses(3)]
    if entry == "execute_many":
        out = batch.execute_many(roots, trace=t)
    elif entry == "executev":
        out = batch.BatchExecutor.executev(roots, trace=t)
    elif entry == "execute_iter":
        out = list(batch.execute_iter(iter(roots), trace=t))
    elif entry == "execute_many_async":
        out = asyncio.run(batch.execute_many_async(roots, trace=t))
    else:
        out = batch.execute_many(roots, trace=t, max_workers=2)
    assert out == [("user1", "user2"), ("user3", "user4")]
    assert shape(t) == [[("GetSpouseId", 2)], [("GetUser", 4)]]


def test_execute_async_fills_the_trace() -> None:
    t = batch.Trace()
    assert asyncio.run(batch.execute_async(gen_spouses(2), trace=t)) == ("user2", "user1")
    assert shape(t) == [[("GetSpouseId", 1)], [("GetUser", 2)]]


def test_one_trace_shared_by_two_executions_continues_the_round_count() -> None:
    t = batch.Trace()
    batch.execute(gen_spouses(1), trace=t)
    batch.BatchExecutor.execute(gen_spouses(3), trace=t)
    assert [r.index for r in t.rounds] == [0, 1, 2, 3]
    assert shape(t) == [[("GetSpouseId", 1)], [("GetUser", 2)]] * 2


class Keyed(batch.BatchableOperation[int]):
    def __init__(self, shard: str, n: int) -> None:
        self.shard = shard
        self.n = n

    def batch_key(self) -> str:
        return self.shard

    @classmethod
    def run_batch(cls, operations: list[Keyed]) -> list[int]:
        return [op.n for op in operations]


def test_batch_key_and_per_operation_failures_are_recorded() -> None:
    t = batch.Trace()
    out = batch.execute(batch.settled([Keyed("a", 1), Keyed("b", 2), Keyed("a", 3),
                                       GetUser(-1), GetUser(5), GetUser(-2)]), trace=t)
    assert out[:3] == [1, 2, 3] and out[4] == "user5"
    assert [(b.name, b.key, b.size, b.failed) for b in t.batches] == [
        ("Keyed", "a", 2, 0), ("Keyed", "b", 1, 0), ("GetUser", None, 3, 2)]


class Broken(batch.BatchableOperation[int]):
    @classmethod
    def run_batch(cls, operations: list[Broken]) -> list[int]:
        raise ConnectionError("database is down")


def gen_fails_in_round_three() -> Generator[Any, Any, int]:
    yield GetSpouseId(1)
    yield GetUser(1)
    value: int = yield Broken()
    return value


def test_failed_execution_keeps_its_trace_and_tells_rounds_completed() -> None:
    t = batch.Trace()
    with pytest.raises(ConnectionError, match="database is down") as info:
        batch.execute(gen_fails_in_round_three(), trace=t)
    exc = info.value
    assert t.error is exc
    assert shape(t) == [[("GetSpouseId", 1)], [("GetUser", 1)], [("Broken", 1)]]
    assert t.rounds[2].batches[0].error is exc
    assert exc.batch_rounds_completed == 3  # type: ignore[attr-defined]
    assert "batch: execution failed after 3 round(s)" in exc.__notes__
    summary = t.summary()
    assert summary.splitlines()[-1] == ("execution failed after 3 rounds: "
                                        "ConnectionError: database is down")
    assert "ConnectionError: database is down" in summary.splitlines()[-2]


def test_failed_async_execution_keeps_its_trace() -> None:
    t = batch.Trace()
    with pytest.raises(ConnectionError):
        asyncio.run(batch.execute_async(gen_fails_in_round_three(), trace=t))
    assert t.error is not None and t.round_count == 3


def test_timeout_keeps_the_trace() -> None:
    def gen_slow() -> Generator[Any, Any, None]:
        yield GetUser(1)
        yield SlowOp()
        yield GetUser(2)  # the deadline is checked before this round

    t = batch.Trace()
    with pytest.raises(TimeoutError):
        batch.execute(gen_slow(), trace=t, timeout=0.05)
    assert isinstance(t.error, TimeoutError)
    assert shape(t) == [[("GetUser", 1)], [("SlowOp", 1)]]


class SlowOp(batch.BatchableOperation[None]):
    @classmethod
    def run_batch(cls, operations: list[SlowOp]) -> list[None]:
        import time

        time.sleep(0.1)
        return [None for _ in operations]


class Layered(batch.BatchableOperation[str]):
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    @classmethod
    def run_batch(cls, operations: list[Layered]) -> Generator[Any, Any, list[str]]:
        users: list[str] = yield [GetUser(op.user_id) for op in operations]
        return [u.upper() for u in users]


def test_layered_batch_is_marked() -> None:
    t = batch.Trace()
    assert batch.execute([Layered(1), Layered(2)], trace=t) == ["USER1", "USER2"]
    assert [(b.name, b.size, b.layered) for b in t.batches] == [
        ("Layered", 2, True), ("GetUser", 2, False)]
    assert "Layered (gen)" in t.summary()


@dataclass(frozen=True)
class Cached(batch.BatchableOperation[int]):
    n: int
    cache_results = True

    @classmethod
    def run_batch(cls, operations: list[Cached]) -> list[int]:
        return [op.n for op in operations]


def gen_cached() -> Generator[Any, Any, int]:
    a = yield Cached(1)
    b, c = yield Cached(1), Cached(2)  # Cached(1) is a hit
    d, e = yield Cached(1), Cached(2)  # two hits: no round at all
    return int(a + b + c + d + e)


def test_cache_hits_are_counted_per_round() -> None:
    t = batch.Trace()
    assert batch.execute(gen_cached(), trace=t) == 7
    assert shape(t) == [[("Cached", 1)], [("Cached", 1)]]
    assert [r.cache_hits for r in t.rounds] == [0, 1]


def test_cache_hits_after_the_last_round_are_counted() -> None:
    t = batch.Trace()
    assert batch.execute(gen_cached(), trace=t) == 7
    assert t.cache_hits == 3


@dataclass(frozen=True)
class Deduped(batch.BatchableOperation[int]):
    n: int
    dedupe = True

    @classmethod
    def run_batch(cls, operations: list[Deduped]) -> list[int]:
        return [op.n for op in operations]


def test_dedupe_shows_requested_versus_sent() -> None:
    t = batch.Trace()
    assert batch.execute([Deduped(1), Deduped(1), Deduped(2)], trace=t) == [1, 1, 2]
    b = t.batches[0]
    assert (b.size, b.requested) == (2, 3)


# -- summary ---------------------------------------------------------------------


def test_summary_table() -> None:
    t = batch.Trace()
    batch.execute(batch.settled([gen_spouses(1), Keyed("shard-a", 1), GetUser(-1)]), trace=t)
    lines = t.summary().splitlines()
    assert lines[0].startswith("2 rounds, 4 batches, 5 operations sent, 0 cache hits, ")
    assert lines[1].split() == ["round", "operation", "key", "calls", "sent", "asked", "hits",
                                "ms", "error"]
    assert set(lines[2]) == {"-"}
    rows = [line.split() for line in lines[3:]]
    # round, name, [key], calls, sent, asked, ms, [error]; groups in first-yield order
    assert rows[0][:6] == ["1", "Keyed", "'shard-a'", "1", "1", "1"]
    assert rows[1][:4] == ["GetUser", "1", "1", "1"]
    assert rows[1][-3:] == ["1", "operation", "failed"]
    assert rows[2][:4] == ["GetSpouseId", "1", "1", "1"] and len(rows[2]) == 5
    assert rows[3][:5] == ["2", "GetUser", "1", "2", "2"]
    assert len(lines) == 7


class Chunked(batch.BatchableOperation[int]):
    max_batch_size = 10

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Chunked]) -> list[int]:
        return [op.n for op in operations]


def test_summary_stays_readable_with_hundreds_of_batches() -> None:
    def gen(i: int) -> Generator[Any, Any, int]:
        total = 0
        for _ in range(60):  # 60 rounds
            a, b = yield [Chunked(i), Keyed(f"k{i % 3}", i)]
            total += a + b
        return total

    t = batch.Trace()
    batch.execute_many([gen(i) for i in range(50)], trace=t)
    # 60 rounds x (5 chunks of Chunked + 3 keyed groups) = 480 calls
    assert len(t.batches) == 480
    full = t.summary(max_rows=None).splitlines()
    assert len(full) == 3 + 60 * 4  # the 5 chunks of a round fold into one row
    chunk_row = full[3].split()
    assert chunk_row[:5] == ["1", "Chunked", "5", "50", "50"]
    short = t.summary().splitlines()
    assert len(short) == 3 + 50 + 1 + 3
    assert short[-4] == "… 190 more rows after round 13 (summary(max_rows=None) shows all)"
    assert short[-3] == "totals by operation:"
    assert short[-2].split()[:4] == ["Chunked", "300", "3000", "3000"]
    assert short[-1].split()[:4] == ["Keyed", "180", "3000", "3000"]
    assert max(len(line) for line in full) < 120


def test_summary_of_an_empty_trace() -> None:
    assert batch.Trace().summary().splitlines()[0] == (
        "0 rounds, 0 batches, 0 operations sent, 0 cache hits, 0.000 ms in batches")


# -- chrome trace ------------------------------------------------------------------


def test_chrome_trace_is_valid_trace_event_json() -> None:
    t = batch.Trace()
    batch.execute_many([gen_spouses(1), gen_spouses(3)], trace=t)
    doc = json.loads(t.to_chrome_trace())
    assert doc["displayTimeUnit"] == "ms"
    assert doc["otherData"] == {"rounds": 2, "batches": 2}
    events = doc["traceEvents"]
    for e in events:
        assert {"name", "ph", "pid", "tid"} <= set(e)
        if e["ph"] == "X":
            assert isinstance(e["ts"], float) and e["dur"] >= 0
    rounds = [e for e in events if e.get("cat") == "round" and e["ph"] == "X"]
    markers = [e for e in events if e.get("cat") == "round" and e["ph"] == "i"]
    slices = [e for e in events if e.get("cat") == "batch"]
    assert [e["name"] for e in rounds] == ["round 1", "round 2"]
    assert all(e["tid"] == 0 for e in rounds)
    assert [(e["name"], e["s"]) for e in markers] == [("round 1", "g"), ("round 2", "g")]
    assert [(e["name"], e["args"]["round"], e["args"]["size"]) for e in slices] == [
        ("GetSpouseId", 1, 2), ("GetUser", 2, 4)]
    assert slices[0]["args"] == {"round": 1, "key": "None", "size": 2, "requested": 2,
                                 "thread": threading.get_ident(), "layered": False}
    r1 = rounds[0]
    assert r1["ts"] <= slices[0]["ts"] and slices[0]["ts"] + slices[0]["dur"] <= rounds[1]["ts"]
    names = {(e["tid"], e["args"]["name"]) for e in events if e["name"] == "thread_name"}
    assert names == {(0, "rounds"), (1, "worker 1")}


def test_chrome_trace_one_track_per_worker_thread() -> None:
    barrier = threading.Barrier(2, timeout=5)

    class A(batch.BatchableOperation[int]):
        @classmethod
        def run_batch(cls, operations: list[Any]) -> list[int]:
            barrier.wait()  # both calls run at once, so in two threads
            return [1 for _ in operations]

    class B(A):
        pass

    t = batch.Trace()
    batch.execute([A(), B()], trace=t, max_workers=2)
    threads = {b.thread for b in t.batches}
    assert len(threads) == 2 and threading.get_ident() not in threads
    doc = json.loads(t.to_chrome_trace())
    slices = [e for e in doc["traceEvents"] if e.get("cat") == "batch"]
    assert len({e["tid"] for e in slices}) == 2
    names = sorted(e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name")
    assert names == ["rounds", "worker 1", "worker 2"]


def test_chrome_trace_overlapping_async_calls_get_their_own_tracks() -> None:
    class Slow(batch.BatchableOperation[int]):
        @classmethod
        async def run_batch(cls, operations: list[Any]) -> list[int]:
            await asyncio.sleep(0.02)
            return [1 for _ in operations]

    class Slower(Slow):
        pass

    t = batch.Trace()
    asyncio.run(batch.execute_async([Slow(), Slower()], trace=t))
    a, b = t.batches
    assert a.thread == b.thread
    assert b.start < a.start + a.seconds  # they overlap in time
    doc = json.loads(t.to_chrome_trace())
    slices = [e for e in doc["traceEvents"] if e.get("cat") == "batch"]
    assert len({e["tid"] for e in slices}) == 2
    names = sorted(e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name")
    assert names == ["rounds", "worker 1", "worker 1 (overlap 1)"]


def test_chrome_trace_of_a_failed_execution_has_an_error_marker() -> None:
    t = batch.Trace()
    with pytest.raises(ConnectionError):
        batch.execute(gen_fails_in_round_three(), trace=t)
    events = json.loads(t.to_chrome_trace())["traceEvents"]
    failed = [e for e in events if e["name"] == "execution failed"]
    assert len(failed) == 1
    assert failed[0]["args"] == {"error": "ConnectionError: database is down"}
    broken = next(e for e in events if e["name"] == "Broken")
    assert broken["args"]["error"] == "ConnectionError: database is down"
    assert failed[0]["ts"] >= broken["ts"] + broken["dur"]


def test_trace_argument_is_type_checked() -> None:
    with pytest.raises(TypeError, match=r"trace= takes a batch\.Trace, got list"):
        batch.execute(GetUser(1), trace=[])  # type: ignore[call-overload]
