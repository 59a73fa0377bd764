"""execute_iter (DESIGN.md sections 2 and 4, issue 3): streaming many roots in O(window).

Every test asserts the exact batches sent (``recorder.calls``), the order of
the results and how far ahead the input was read.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Generator, Iterator
from typing import Any

import pytest

import batch

Gen = Generator[Any, Any, Any]


def fail_bad(key: Any) -> Any:
    """Answer ``key`` upper-cased; a key starting with "bad" fails with a ValueError."""
    if str(key).startswith("bad"):
        return ValueError(f"no row {key}")
    return str(key).upper()


class Counting:
    """An iterator over ``items`` that counts how many were pulled."""

    def __init__(self, items: list[Any]) -> None:
        self._it = iter(items)
        self.pulled = 0

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        item = next(self._it)
        self.pulled += 1
        return item


# -- order and rounds ----------------------------------------------------------------


def test_results_come_in_input_order_when_later_roots_finish_first(recorder: Any) -> None:
    Get = recorder.op("Get")

    def gen_steps(name: str, steps: int) -> Gen:
        for step in range(steps):
            yield Get(f"{name}{step}")
        return name

    roots = [gen_steps("slow", 3), gen_steps("fast", 1), gen_steps("mid", 2)]
    assert list(batch.execute_iter(roots, window=3)) == ["slow", "fast", "mid"]
    assert recorder.calls == [("Get", ["slow0", "fast0", "mid0"]), ("Get", ["slow1", "mid1"]),
                              ("Get", ["slow2"])]


def test_roots_read_while_others_are_in_flight_join_their_rounds(recorder: Any) -> None:
    Get = recorder.op("Get")

    def gen_steps(name: str, steps: int) -> Gen:
        for step in range(steps):
            yield Get(f"{name}{step}")
        return name

    roots = [gen_steps("a", 1), gen_steps("b", 4), gen_steps("c", 1)]
    assert list(batch.execute_iter(roots, window=2)) == ["a", "b", "c"]
    # "c" is read once "a" is out, while "b" is still running: its operation
    # goes in the same call as one of "b"'s, not in a round of its own.
    (joined,) = [keys for _, keys in recorder.calls if "c0" in keys]
    assert len(joined) == 2 and joined[0].startswith("b")
    assert recorder.calls[0] == ("Get", ["a0", "b0"])
    assert len(recorder.calls) == 4


def test_a_root_read_when_another_finishes_joins_the_very_next_round(recorder: Any) -> None:
    Get = recorder.op("Get")

    def gen_steps(name: str, steps: int) -> Gen:
        for step in range(steps):
            yield Get(f"{name}{step}")
        return name

    roots = [gen_steps("a", 1), gen_steps("b", 3), gen_steps("c", 1), gen_steps("d", 1)]
    assert list(batch.execute_iter(roots, window=2)) == ["a", "b", "c", "d"]
    # "a" is done after round 1, so "c" can take its place in round 2, and
    # "d" takes "c"'s in round 3: three rounds, like execute_many on a window of 2.
    assert recorder.calls == [("Get", ["a0", "b0"]), ("Get", ["b1", "c0"]), ("Get", ["b2", "d0"])]


def test_window_one_runs_the_roots_one_after_another(recorder: Any) -> None:
    Get = recorder.op("Get")
    assert list(batch.execute_iter((Get(k) for k in range(3)), window=1)) == [0, 1, 2]
    assert recorder.calls == [("Get", [0]), ("Get", [1]), ("Get", [2])]


def test_a_full_window_batches_as_one_round(recorder: Any) -> None:
    Get = recorder.op("Get")
    assert list(batch.execute_iter((Get(k) for k in range(6)), window=3)) == [0, 1, 2, 3, 4, 5]
    assert recorder.calls == [("Get", [0, 1, 2]), ("Get", [3, 4, 5])]


def test_roots_may_be_operations_structures_and_generators(recorder: Any) -> None:
    Get = recorder.op("Get")

    def gen_one() -> Gen:
        return (yield Get("g"))

    roots = [Get(1), [Get(2), Get(3)], {"k": Get(4)}, gen_one(), batch.settled(Get(5))]
    assert list(batch.execute_iter(roots)) == [1, [2, 3], {"k": 4}, "g", 5]
    assert recorder.calls == [("Get", [1, 2, 3, 4, "g", 5])]


def test_empty_input_gives_no_results(recorder: Any) -> None:
    assert list(batch.execute_iter([])) == []
    assert recorder.calls == []


def test_nothing_runs_until_the_first_result_is_asked_for(recorder: Any) -> None:
    Get = recorder.op("Get")
    source = Counting([Get(1), Get(2)])
    it = batch.execute_iter(source, window=5)
    assert (source.pulled, recorder.calls) == (0, [])
    assert next(it) == 1
    assert (source.pulled, recorder.calls) == (2, [("Get", [1, 2])])
    assert list(it) == [2]


def test_cache_and_trace_options_apply_to_the_whole_stream(recorder: Any) -> None:
    def _eq(self: Any, other: Any) -> bool:
        return type(other) is type(self) and other.key == self.key

    Config = recorder.op("Config", lambda k: f"cfg {k}", cache_results=True, __eq__=_eq,
                         __hash__=lambda self: hash(self.key))
    Get = recorder.op("Get")

    def gen_item(n: int) -> Gen:
        cfg = yield Config("site")
        return cfg, (yield Get(n))

    cache = batch.OperationCache()
    trace = batch.Trace()
    out = list(batch.execute_iter((gen_item(n) for n in range(4)), window=2, cache=cache,
                                  trace=trace))
    assert out == [("cfg site", n) for n in range(4)]
    assert recorder.calls == [("Config", ["site"]), ("Get", [0, 1]), ("Get", [2, 3])]
    assert len(trace.rounds) == 3
    assert cache.get(Config("site")) == "cfg site"


# -- reading the input lazily -----------------------------------------------------


def test_at_most_window_roots_are_read_ahead_and_in_flight(recorder: Any) -> None:
    Get = recorder.op("Get")
    live = 0
    most_live = 0

    def gen_item(n: int) -> Gen:
        nonlocal live, most_live
        live += 1
        most_live = max(most_live, live)
        try:
            for step in range(n % 3 + 1):
                yield Get((n, step))
            return n
        finally:
            live -= 1

    source = Counting([gen_item(n) for n in range(20)])
    ahead: list[int] = []
    results = []
    for result in batch.execute_iter(source, window=4):
        results.append(result)
        ahead.append(source.pulled - len(results))

    assert results == list(range(20))
    assert most_live == 4  # at most `window` roots unfinished at once
    # Finished roots may wait behind a slower head, at most `window` of them:
    # the consumer holds one, so at most 2 * window - 1 were read past it.
    assert max(ahead) <= 7
    assert ahead[0] >= 3 and source.pulled == 20


def test_the_input_is_pulled_one_root_at_a_time_as_results_leave(recorder: Any) -> None:
    Get = recorder.op("Get")
    source = Counting([Get(k) for k in range(5)])
    it = batch.execute_iter(source, window=2)
    seen = []
    for result in it:
        seen.append((result, source.pulled))
    assert seen == [(0, 2), (1, 2), (2, 4), (3, 4), (4, 5)]


# -- failures and stopping early ----------------------------------------------------


def test_a_failed_root_raises_at_its_position_after_the_earlier_results(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)
    closed: list[str] = []

    def gen_item(key: str, steps: int) -> Gen:
        try:
            for step in range(steps):
                yield Get(f"{key}{step}")
            return key
        finally:
            closed.append(key)

    source = Counting([gen_item("a", 2), gen_item("b", 3), gen_item("bad", 1),
                       gen_item("d", 4), gen_item("e", 1)])
    got = []
    with pytest.raises(ValueError, match=r"^no row bad0") as info:
        for result in batch.execute_iter(source, window=3):
            got.append(result)

    assert got == ["a", "b"]
    assert "batch: execution failed after" in str(info.value.__notes__)
    # "d" was read when "a" finished, "e" when "bad" finished (a finished root
    # makes room in the window even before its turn comes); both were closed.
    assert sorted(closed) == ["a", "b", "bad", "d", "e"]
    assert source.pulled == 5


def test_return_exceptions_yields_a_failed_root_in_place_and_goes_on(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)

    def gen_fail() -> Gen:
        yield Get("x")
        raise KeyError("gone")

    roots = [Get("a"), Get("bad1"), gen_fail(), Get("b")]
    out = list(batch.execute_iter(roots, window=2, return_exceptions=True))
    assert out[0] == "A" and out[3] == "B"
    assert isinstance(out[1], ValueError) and str(out[1]) == "no row bad1"
    assert isinstance(out[2], KeyError) and out[2].args == ("gone",)
    assert recorder.calls == [("Get", ["a", "bad1"]), ("Get", ["x", "b"])]


def test_breaking_out_early_closes_every_generator_still_running(recorder: Any) -> None:
    Get = recorder.op("Get")
    closed: list[int] = []

    def gen_item(n: int) -> Gen:
        try:
            for step in range(n + 1):
                yield Get((n, step))
            return n
        finally:
            closed.append(n)

    source = Counting([gen_item(n) for n in range(10)])
    got = []
    for result in batch.execute_iter(source, window=3):
        got.append(result)
        if result == 1:
            break
    gc.collect()  # not needed on CPython (refcounting closes it at `break`)

    assert got == [0, 1]
    assert source.pulled == 4
    assert sorted(closed) == [0, 1, 2, 3]  # 2 and 3 were still running
    assert recorder.calls[0] == ("Get", [(0, 0), (1, 0), (2, 0)])
    sent = [key for _, keys in recorder.calls for key in keys]
    # Root 0 is handed out as soon as it finished, before the next round, so
    # the break comes after round 2 and root 2 never sent its third step.
    assert (2, 1) in sent and (3, 0) in sent and (2, 2) not in sent


def test_closing_the_iterator_closes_every_generator_still_running(recorder: Any) -> None:
    Get = recorder.op("Get")
    closed: list[str] = []

    def gen_forever(name: str) -> Gen:
        try:
            while True:
                yield Get(name)
        finally:
            closed.append(name)

    def gen_quick() -> Gen:
        return (yield Get("quick"))

    it = batch.execute_iter([gen_quick(), gen_forever("x"), gen_forever("y")], window=3)
    assert next(it) == "quick"
    it.close()
    assert sorted(closed) == ["x", "y"]
    with pytest.raises(StopIteration):
        next(it)


def test_an_error_from_the_input_iterator_closes_the_roots_in_flight(recorder: Any) -> None:
    Get = recorder.op("Get")
    closed: list[str] = []

    def gen_item(n: int, steps: int) -> Gen:
        try:
            for step in range(steps):
                yield Get((n, step))
            return n
        finally:
            closed.append(f"{n} after {step + 1} of {steps}")

    def source() -> Iterator[Any]:
        yield gen_item(0, 1)
        yield gen_item(1, 3)
        raise OSError("input file truncated")

    got = []
    with pytest.raises(OSError, match="input file truncated"):
        for result in batch.execute_iter(source(), window=2):
            got.append(result)
    assert got == [0]
    assert closed == ["0 after 1 of 1", "1 after 2 of 3"]


@pytest.mark.parametrize("window", [0, -1, 2.5, True, "8", None])
def test_a_bad_window_raises_at_once(recorder: Any, window: Any) -> None:
    source = Counting([recorder.op("Get")(1)])
    with pytest.raises(ValueError, match=r"execute_iter\(window=\.\.\.\) must be a positive int, "
                                         rf"got {window!r}"):
        batch.execute_iter(source, window=window)
    assert source.pulled == 0


# -- memory: O(window), however many roots -------------------------------------------------


class Double(batch.BatchableOperation[int]):
    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list[Double]) -> list[int]:
        return [op.n * 2 for op in operations]


def gen_item(n: int) -> Gen:
    doubled = yield Double(n)
    return doubled + 1


def stream_peaks(total: int, window: int, segment: int) -> tuple[list[int], int, int]:
    """Stream ``total`` roots; return the traced peak of each ``segment`` of results.

    Also returns the number of results and their sum, to check they all came.
    """
    roots = (gen_item(n) for n in range(total))
    peaks: list[int] = []
    count = 0
    checksum = 0
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for result in batch.execute_iter(roots, window=window):
            count += 1
            checksum += result
            if count % segment == 0:
                peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.reset_peak()
    finally:
        tracemalloc.stop()
    return peaks, count, checksum


def _check_flat(peaks: list[int], window: int) -> None:
    first = peaks[0]  # includes filling the window
    assert max(peaks[1:]) <= first * 1.25 + 64 * 1024, f"peaks grew: {peaks}"
    # Each root in flight holds a frame, a task and an operation: well under 4 KiB.
    assert max(peaks) < window * 4096, f"peak {max(peaks)} bytes for window {window}"


def test_memory_stays_flat_over_a_long_stream() -> None:
    total, window = 20_000, 256
    peaks, count, checksum = stream_peaks(total, window, segment=4_000)
    assert count == total and checksum == total * (total - 1) + total
    assert len(peaks) == 5
    _check_flat(peaks, window)


@pytest.mark.slow
def test_a_million_roots_stream_in_flat_memory() -> None:
    total, window = 1_000_000, 1024
    peaks, count, checksum = stream_peaks(total, window, segment=100_000)
    assert count == total and checksum == total * (total - 1) + total
    assert len(peaks) == 10
    _check_flat(peaks, window)
    print(f"execute_iter: {total} roots, window {window}: peak traced memory per 100k "
          f"results {[p // 1024 for p in peaks]} KiB")
