"""Result caching (DESIGN.md section 3, issue 3): cache_results and OperationCache.

Every test asserts the exact batches sent (``recorder.calls``), the number of
rounds and what each generator got back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from opkit import CACHED, EQ, Blob, Gen, _eq, _hash, fail_bad, gen_get  # noqa: F401

import batch
from batch import OperationCache

# -- within one execution ------------------------------------------------------


def test_an_answered_operation_is_not_sent_again_in_a_later_round(recorder: Any) -> None:
    Get = recorder.op("Get", Blob, **CACHED)
    Other = recorder.op("Other")

    def gen_twice() -> Gen:
        first = yield Get(1)
        second, other = yield Get(1), Other(2)
        return first, second, other

    first, second, other = recorder.execute(gen_twice())
    assert first is second and first.key == 1 and other == 2
    assert recorder.calls == [("Get", [1]), ("Other", [2])]
    assert recorder.rounds == 2


def test_cached_classes_are_also_deduped_within_a_round(recorder: Any) -> None:
    Get = recorder.op("Get", Blob, **CACHED)  # no dedupe = True needed

    a1, b, a2 = recorder.execute_many([gen_get(Get("a")), Get("b"), [Get("a")]])
    assert recorder.calls == [("Get", ["a", "b"])]
    assert a1 is a2[0] and b.key == "b"


def test_a_cache_hit_lets_its_generator_move_on_in_the_same_round(recorder: Any) -> None:
    Get = recorder.op("Get", lambda k: k * 10, **CACHED)
    Other = recorder.op("Other")
    cache = OperationCache()
    cache.prime(Get(1), 10)

    def gen_hit() -> Gen:
        x = yield Get(1)  # a hit: resumed at once
        return (yield Other(x))

    assert recorder.execute_many([gen_hit(), gen_get(Other(99))], cache=cache) == [10, 99]
    assert recorder.calls == [("Other", [10, 99])]
    assert recorder.rounds == 1
    assert recorder.trace.cache_hits == 1
    assert recorder.trace.rounds[0].cache_hits == 1


def test_the_minimal_rounds_guarantee_holds_with_cache_hits(recorder: Any) -> None:
    Next = recorder.op("Next", lambda n: n + 1, **CACHED)

    def gen_chain(n: int) -> Gen:
        for _ in range(4):
            n = yield Next(n)
        return n

    # Two chains over the same links: the second one only ever hits the cache
    # or waits on the first one's operations, so it costs no round of its own.
    assert recorder.execute_many([gen_chain(0), gen_chain(1)]) == [4, 5]
    assert recorder.calls == [("Next", [0, 1]), ("Next", [2]), ("Next", [3]), ("Next", [4])]
    assert recorder.rounds == 4

    recorder.calls.clear()
    cache = OperationCache()
    cache.prime(Next(1), 2)
    cache.prime(Next(2), 3)
    assert recorder.execute(gen_chain(0), cache=cache) == 4
    assert recorder.calls == [("Next", [0]), ("Next", [3])]
    assert recorder.rounds == 2


def test_trace_counts_cache_hits_after_the_last_round(recorder: Any) -> None:
    Get = recorder.op("Get", **CACHED)

    def gen_again() -> Gen:
        yield Get(1)  # round 1
        yield Get(1)  # a hit after the last round
        yield Get(1)  # another

    recorder.execute(gen_again())
    assert recorder.rounds == 1
    assert recorder.trace.cache_hits == 2


# -- OperationCache across executions ---------------------------------------------------


def test_cache_argument_shares_results_across_executions(recorder: Any) -> None:
    Get = recorder.op("Get", Blob, **CACHED)
    cache = OperationCache()

    first = recorder.execute(gen_get(Get(1)), cache=cache)
    second = recorder.execute(gen_get(Get(1)), cache=cache)

    assert first is second
    assert recorder.calls == [("Get", [1])]
    assert recorder.rounds == 0  # all hits: not even one round
    assert Get(1) in cache and len(cache) == 1 and cache.get(Get(1)) is first


def test_without_cache_argument_every_execution_starts_empty(recorder: Any) -> None:
    Get = recorder.op("Get", **CACHED)
    recorder.execute(gen_get(Get(1)))
    recorder.execute(gen_get(Get(1)))
    assert recorder.calls == [("Get", [1]), ("Get", [1])]


def test_a_primed_value_skips_the_batch(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad, **CACHED)
    cache = OperationCache()
    cache.prime(Get("a"), "primed a")

    assert recorder.execute([Get("a"), Get("b")], cache=cache) == ["primed a", "B"]
    assert recorder.calls == [("Get", ["b"])]

    recorder.calls.clear()
    assert recorder.execute(gen_get(Get("a")), cache=cache) == "primed a"
    assert recorder.calls == []
    assert recorder.rounds == 0


def test_priming_an_exception_primes_a_failure(recorder: Any) -> None:
    Get = recorder.op("Get", **CACHED)
    cache = OperationCache()
    error = PermissionError("user 7 is hidden")
    cache.prime(Get(7), error)

    with pytest.raises(PermissionError) as info:
        batch.execute(gen_get(Get(7)), cache=cache)
    # A fresh copy chained to the primed one: raising never changes the cached object.
    assert info.value is not error and info.value.__cause__ is error
    assert type(info.value) is PermissionError and str(info.value) == "user 7 is hidden"
    assert recorder.calls == []
    assert cache.get(Get(7)) is error and Get(7) in cache


def test_prime_never_overwrites_forget_then_prime_does(recorder: Any) -> None:
    Get = recorder.op("Get", **CACHED)
    cache = OperationCache()

    cache.prime(Get(1), "first")
    cache.prime(Get(1), "second")
    assert cache.get(Get(1)) == "first"

    recorder.execute(gen_get(Get(2)), cache=cache)  # a result from run_batch
    cache.prime(Get(2), "primed")
    assert cache.get(Get(2)) == 2

    cache.forget(Get(1))
    cache.prime(Get(1), "replaced")
    assert recorder.execute([Get(1), Get(2)], cache=cache) == ["replaced", 2]
    assert recorder.calls == [("Get", [2])]


def test_forget_makes_the_next_execution_send_it_again(recorder: Any) -> None:
    Get = recorder.op("Get", **CACHED)
    cache = OperationCache()
    recorder.execute([Get(1), Get(2)], cache=cache)

    cache.forget(Get(1))
    cache.forget(Get(99))  # not there: nothing happens
    assert Get(1) not in cache and Get(2) in cache and len(cache) == 1
    recorder.execute([Get(1), Get(2)], cache=cache)
    assert recorder.calls == [("Get", [1, 2]), ("Get", [1])]


def test_clear_drops_every_entry(recorder: Any) -> None:
    Get = recorder.op("Get", **CACHED)
    Other = recorder.op("Other", **CACHED)
    cache = OperationCache()
    recorder.execute([Get(1), Other(1)], cache=cache)
    assert len(cache) == 2

    cache.clear()
    assert len(cache) == 0 and cache.get(Get(1), "missing") == "missing"
    recorder.execute([Get(1), Other(1)], cache=cache)
    assert recorder.calls == [("Get", [1]), ("Other", [1]), ("Get", [1]), ("Other", [1])]


def test_entries_are_keyed_by_class_as_well_as_operation(recorder: Any) -> None:
    # These two classes' operations compare equal to each other (same key,
    # same hash): the cache must still keep them apart.
    def same_key(self: Any, other: Any) -> bool:
        return getattr(other, "key", None) == self.key

    attrs = {"__eq__": same_key, "__hash__": _hash, "cache_results": True}
    User = recorder.op("User", lambda k: f"user {k}", **attrs)
    Post = recorder.op("Post", lambda k: f"post {k}", **attrs)
    assert User(1) == Post(1) and hash(User(1)) == hash(Post(1))
    cache = OperationCache()
    cache.prime(User(1), "primed user")

    assert recorder.execute([User(1), Post(1)], cache=cache) == ["primed user", "post 1"]
    assert recorder.calls == [("Post", [1])]
    assert cache.get(User(1)) == "primed user" and cache.get(Post(1)) == "post 1"
    cache.forget(Post(1))
    assert User(1) in cache and Post(1) not in cache


def test_a_per_operation_failure_is_cached(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad, **CACHED)
    cache = OperationCache()

    out = recorder.execute(batch.settled([Get("bad1"), Get("a")]), cache=cache)
    with pytest.raises(ValueError) as info:
        recorder.execute(gen_get(Get("bad1")), cache=cache)

    cached = cache.get(Get("bad1"))
    assert isinstance(cached, ValueError) and str(cached) == "no row bad1"
    # Every waiter gets its own copy, chained to the cached failure (issue 15 item 2).
    assert out[0] is not cached and out[0].__cause__ is cached
    assert info.value is not cached and info.value.__cause__ is cached
    assert recorder.calls == [("Get", ["bad1", "a"])]


def test_a_whole_failed_run_batch_is_not_cached(recorder: Any) -> None:
    outages = [ConnectionError("down")]

    def answer(key: int) -> int:
        if outages:
            raise outages.pop()
        return key

    Get = recorder.op("Get", answer, **CACHED)
    cache = OperationCache()

    with pytest.raises(ConnectionError, match="down"):
        batch.execute(gen_get(Get(1)), cache=cache)
    assert Get(1) not in cache and len(cache) == 0
    assert batch.execute(gen_get(Get(1)), cache=cache) == 1
    assert recorder.calls == [("Get", [1]), ("Get", [1])]
    assert Get(1) in cache


def test_a_whole_failure_is_retried_in_a_later_round_of_the_same_execution(recorder: Any) -> None:
    outages = [ConnectionError("down")]

    def answer(key: int) -> int:
        if outages:
            raise outages.pop()
        return key

    Get = recorder.op("Get", answer, **CACHED)

    def gen_retry() -> Gen:
        try:
            return (yield Get(1))
        except ConnectionError:
            return ("retried", (yield Get(1)))

    assert recorder.execute(gen_retry()) == ("retried", 1)
    assert recorder.calls == [("Get", [1]), ("Get", [1])]
    assert recorder.rounds == 2


def test_a_result_count_error_is_not_cached(recorder: Any) -> None:
    short = [True]

    def run_batch(cls: Any, operations: list[Any]) -> list[Any]:
        recorder.calls.append(("Get", [op.key for op in operations]))
        if short:
            short.pop()
            return []
        return [op.key for op in operations]

    Get = recorder.op("Get", run_batch=classmethod(run_batch), **CACHED)
    cache = OperationCache()

    with pytest.raises(batch.BatchResultError, match="returned 0 results for 1 operations"):
        batch.execute(gen_get(Get(1)), cache=cache)
    assert batch.execute(gen_get(Get(1)), cache=cache) == 1
    assert recorder.calls == [("Get", [1]), ("Get", [1])]


def test_a_failed_chunk_is_not_cached_but_the_other_chunks_are(recorder: Any) -> None:
    outages = [ConnectionError("down")]

    def answer(key: int) -> int:
        if key == 3 and outages:
            raise outages.pop()
        return key

    Get = recorder.op("Get", answer, max_batch_size=2, **CACHED)
    cache = OperationCache()

    out = recorder.execute(batch.settled([Get(k) for k in range(1, 6)]), cache=cache)
    assert out[:2] == [1, 2] and out[4] == 5
    assert isinstance(out[2], ConnectionError) and out[3] is out[2]
    assert [Get(k) in cache for k in range(1, 6)] == [True, True, False, False, True]

    recorder.execute([Get(k) for k in range(1, 6)], cache=cache)
    assert recorder.calls == [("Get", [1, 2]), ("Get", [3, 4]), ("Get", [5]), ("Get", [3, 4])]


# -- operations in flight ------------------------------------------------------------


def _layered(recorder: Any, name: str, fail: bool = False) -> Any:
    """A cached class whose run_batch is a batch generator taking two more rounds."""
    Step = recorder.op("Step")

    def run_batch(cls: Any, operations: list[Any]) -> Gen:
        recorder.calls.append((name, [op.key for op in operations]))
        yield Step("layer1")
        yield Step("layer2")
        if fail:
            raise ConnectionError("backend down")
        return [Blob(op.key) for op in operations]

    return recorder.op(name, run_batch=classmethod(run_batch), **CACHED)


def test_an_operation_in_flight_is_not_sent_again_by_a_later_round(recorder: Any) -> None:
    Slow = _layered(recorder, "Slow")
    Tick = recorder.op("Tick")
    order: list[str] = []

    def gen_early() -> Gen:
        return (yield Slow(1))

    def gen_late() -> Gen:
        yield Tick(1)  # round 1; Slow(1) is still in flight in round 2
        order.append("late yields Slow(1)")
        return (yield Slow(1))

    early, late = recorder.execute_many([gen_early(), gen_late()])
    assert early is late and early.key == 1
    # The layered run_batch records its call when it first runs, after Tick's.
    assert recorder.calls == [("Tick", [1]), ("Slow", [1]), ("Step", ["layer1"]),
                              ("Step", ["layer2"])]
    assert order == ["late yields Slow(1)"]
    assert recorder.rounds == 3


def test_waiters_on_an_operation_in_flight_share_its_whole_failure(recorder: Any) -> None:
    Slow = _layered(recorder, "Slow", fail=True)
    Tick = recorder.op("Tick")
    cache = OperationCache()

    def gen_late() -> Gen:
        yield Tick(1)
        return (yield Slow(1))

    early, late = recorder.execute_many([Slow(1), gen_late()], cache=cache,
                                        return_exceptions=True)
    assert isinstance(early, ConnectionError) and late is early
    assert [n for n, _ in recorder.calls].count("Slow") == 1
    assert Slow(1) not in cache and len(cache) == 0


def test_priming_while_in_flight_keeps_the_primed_value(recorder: Any) -> None:
    Slow = _layered(recorder, "Slow")
    Tick = recorder.op("Tick")
    cache = OperationCache()

    def gen_prime() -> Gen:
        yield Tick(1)  # Slow(1) is in flight now
        cache.prime(Slow(1), "primed")
        return "primed it"

    got, _ = batch.execute_many([Slow(1), gen_prime()], cache=cache)
    assert got.key == 1  # the execution that sent it gets run_batch's answer
    assert cache.get(Slow(1)) == "primed"


def test_an_operation_in_flight_in_another_execution_is_sent_by_each(recorder: Any) -> None:
    # A shared cache does not make one execution wait on another's batches.
    Slow = _layered(recorder, "Slow")
    Tick = recorder.op("Tick")
    cache = OperationCache()

    def gen_nested() -> Gen:
        yield Tick(1)  # the outer Slow(1) is in flight now
        return batch.execute(Slow(1), cache=cache)

    outer, inner = batch.execute_many([Slow(1), gen_nested()], cache=cache)
    assert (outer.key, inner.key) == (1, 1)
    assert [keys for name, keys in recorder.calls if name == "Slow"] == [[1], [1]]
    assert cache.get(Slow(1)) is inner
    assert batch.execute(Slow(1), cache=cache) is inner


def test_cache_len_and_get_ignore_operations_in_flight(recorder: Any) -> None:
    Slow = _layered(recorder, "Slow")
    Tick = recorder.op("Tick")
    cache = OperationCache()
    seen: list[Any] = []

    def gen_look() -> Gen:
        yield Tick(1)
        seen.extend([len(cache), Slow(1) in cache, cache.get(Slow(1), "none")])

    batch.execute_many([Slow(1), gen_look()], cache=cache)
    assert seen == [0, False, "none"]
    assert len(cache) == 1


# -- misuse -----------------------------------------------------------------------------


def test_cache_methods_reject_operations_that_are_not_cached(recorder: Any) -> None:
    Plain = recorder.op("Plain")
    cache = OperationCache()
    with pytest.raises(ValueError, match=r"Plain has cache_results = False, so the executor never "
                                         r"consults the cache for it; set cache_results = True"):
        cache.prime(Plain(1), 1)
    with pytest.raises(TypeError, match=r"OperationCache keys are BatchableOperation instances, "
                                        r"not int"):
        cache.forget(42)  # type: ignore[arg-type]
    assert 42 not in cache


def test_cache_argument_must_be_an_operation_cache() -> None:
    with pytest.raises(TypeError, match=r"cache= takes a batch.OperationCache, got dict"):
        batch.execute([], cache={})  # type: ignore[arg-type]


def test_unhashable_cached_operations_fail_at_their_yield(recorder: Any) -> None:
    Get = recorder.op("Get", cache_results=True)
    Get.__hash__ = None  # type: ignore[assignment]

    def gen_catch() -> Gen:
        try:
            yield Get(1)
        except batch.BatchError as exc:
            return str(exc)
        return "not raised"

    message = recorder.execute(gen_catch())
    assert message.startswith("Get has cache_results = True, but its operations cannot be hashed")
    assert recorder.calls == []


def test_operation_cache_repr_counts_entries(recorder: Any) -> None:
    Get = recorder.op("Get", **CACHED)
    cache = OperationCache()
    cache.prime(Get(1), 1)
    assert repr(cache) == "<OperationCache with 1 entries>"


# -- executions sharing one cache wait on each other's in-flight operations ------


class _Slow:
    """Shared state of the operations below: calls made, and a gate."""

    calls: ClassVar[list[int]] = []
    started = threading.Event()


@dataclass(frozen=True)
class SlowCached(batch.BatchableOperation[int]):
    n: int
    cache_results = True

    @classmethod
    def run_batch(cls, operations: list[SlowCached]) -> list[int]:
        _Slow.calls.extend(op.n for op in operations)
        _Slow.started.set()
        time.sleep(0.2)
        return [op.n * 10 for op in operations]


def test_two_threads_sharing_a_cache_send_an_operation_once() -> None:
    _Slow.calls = []
    _Slow.started = threading.Event()
    cache = batch.OperationCache()
    results: dict[str, Any] = {}

    def first() -> None:
        results["first"] = batch.execute(SlowCached(1), cache=cache)

    thread = threading.Thread(target=first)
    thread.start()
    assert _Slow.started.wait(5)
    # SlowCached(1) is in flight in the other thread: wait for its answer.
    results["second"] = batch.execute([SlowCached(1), SlowCached(2)], cache=cache)
    thread.join(5)
    assert results == {"first": 10, "second": [10, 20]}
    assert _Slow.calls == [1, 2]  # 1 once (by the first thread), then 2


def test_waiting_on_another_execution_respects_timeout() -> None:
    _Slow.calls = []
    _Slow.started = threading.Event()
    cache = batch.OperationCache()
    thread = threading.Thread(target=lambda: batch.execute(SlowCached(3), cache=cache))
    thread.start()
    assert _Slow.started.wait(5)
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match=r"batch execution timed out after 0\.05 seconds"):
        batch.execute(SlowCached(3), cache=cache, timeout=0.05)
    assert time.perf_counter() - t0 < 0.19  # did not wait for the other thread's call
    thread.join(5)
    assert _Slow.calls == [3]


@dataclass(frozen=True)
class AsyncSlow(batch.BatchableOperation[int]):
    n: int
    cache_results = True

    @classmethod
    async def run_batch(cls, operations: list[AsyncSlow]) -> list[int]:  # type: ignore[override]
        _Slow.calls.extend(op.n for op in operations)
        _Slow.started.set()
        await asyncio.sleep(0.1)
        return [op.n * 10 for op in operations]


def test_a_waiter_sends_the_operation_itself_when_the_sender_is_cancelled() -> None:
    _Slow.calls = []
    _Slow.started = threading.Event()

    async def main() -> Any:
        cache = batch.OperationCache()
        sender = asyncio.ensure_future(batch.execute_async(AsyncSlow(4), cache=cache))
        while not _Slow.started.is_set():
            await asyncio.sleep(0.001)
        waiter = asyncio.ensure_future(batch.execute_async(AsyncSlow(4), cache=cache))
        await asyncio.sleep(0.01)  # the waiter is now waiting on the sender's call
        sender.cancel()
        value = await waiter
        assert sender.cancelled()
        return value, cache.get(AsyncSlow(4))

    assert asyncio.run(main()) == (40, 40)
    assert _Slow.calls == [4, 4]  # the cancelled call, then the waiter's own


@dataclass(frozen=True)
class Jittery(batch.BatchableOperation[int]):
    n: int
    cache_results = True

    @classmethod
    def run_batch(cls, operations: list[Jittery]) -> list[int]:
        time.sleep(0.0005 * (operations[0].n % 3))
        return [op.n * 10 for op in operations]


def test_many_threads_sharing_a_cache_all_get_their_answers() -> None:
    # Executions overlap in every way: waiting on each other's in-flight
    # operations, answered as they register, or hitting the cache.  Each
    # must get the right answer, and none may hang (timeout= fails it).
    cache = batch.OperationCache()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for i in range(40):
                keys = [(seed * 7 + i * 3 + k) % 12 for k in range(3)]
                got = batch.execute([Jittery(k) for k in keys], cache=cache, timeout=10)
                assert got == [k * 10 for k in keys]
                if i % 10 == 9:
                    cache.clear()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
