"""Operation features (DESIGN.md section 3, issue 3): dedupe, chunking, failures, settled.

Every test asserts the exact batches sent (``recorder.calls``), the number of
rounds and what each generator got back.  Caching is in ``test_cache.py``,
``execute_iter`` in ``test_stream.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from opkit import CACHED, EQ, Blob, Gen, _eq, _hash, fail_bad, gen_get  # noqa: F401

import batch
from batch._errors import BatchSettingError

# -- dedupe ------------------------------------------------------------------


def test_dedupe_sends_equal_operations_once_and_shares_the_result_object(recorder: Any) -> None:
    Get = recorder.op("Get", Blob, dedupe=True, **EQ)

    def gen_page() -> Gen:
        return (yield [Get("a"), Get("b"), Get("a"), gen_get(Get("a"))])

    a1, b, a2, a3 = recorder.execute(gen_page())
    assert recorder.calls == [("Get", ["a", "b"])]
    assert recorder.rounds == 1
    assert (a1.key, b.key) == ("a", "b")
    assert a1 is a2 is a3


def test_dedupe_spans_generators_and_roots_of_one_round(recorder: Any) -> None:
    Get = recorder.op("Get", dedupe=True, **EQ)

    def gen_two(x: int, y: int) -> Gen:
        return (yield Get(x), gen_get(Get(y)))

    assert recorder.execute_many([gen_two(1, 2), gen_get(Get(2)), gen_two(3, 1)]) == [
        [1, 2], 2, [3, 1]]
    assert recorder.calls == [("Get", [1, 2, 3])]


def test_dedupe_gives_every_waiter_the_same_exception_instance(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad, dedupe=True, **EQ)
    caught: list[BaseException] = []

    def gen_catch() -> Gen:
        try:
            yield Get("bad1")
        except ValueError as exc:
            caught.append(exc)
        return "handled"

    assert recorder.execute_many([gen_catch(), gen_catch(), gen_get(Get("ok"))]) == [
        "handled", "handled", "OK"]
    assert recorder.calls == [("Get", ["bad1", "ok"])]
    assert len(caught) == 2
    assert caught[0] is caught[1]
    assert str(caught[0]) == "no row bad1"


def test_dedupe_is_off_by_default_so_equal_writes_are_both_sent(recorder: Any) -> None:
    Put = recorder.op("Put", **EQ)
    assert Put(1) == Put(1)

    def gen_writes() -> Gen:
        return (yield [Put(1), Put(1), gen_get(Put(1))])

    assert recorder.execute(gen_writes()) == [1, 1, 1]
    assert recorder.calls == [("Put", [1, 1, 1])]


def test_dedupe_works_within_one_round_only(recorder: Any) -> None:
    # Without cache_results an equal operation in a later round is sent again.
    Get = recorder.op("Get", dedupe=True, **EQ)

    def gen_twice() -> Gen:
        first = yield [Get(1), Get(1)]
        second = yield Get(1)
        return first, second

    assert recorder.execute(gen_twice()) == ([1, 1], 1)
    assert recorder.calls == [("Get", [1]), ("Get", [1])]
    assert recorder.rounds == 2


def test_dedupe_happens_inside_each_batch_key_group(recorder: Any) -> None:
    Row = recorder.op("Row", key=lambda k: k[0], dedupe=True, **EQ)

    def gen_rows() -> Gen:
        return (yield [Row(("users", 1)), Row(("posts", 1)), Row(("users", 1)), Row(("posts", 2)),
                       Row(("posts", 1))])

    assert recorder.execute(gen_rows()) == [("users", 1), ("posts", 1), ("users", 1), ("posts", 2),
                                            ("posts", 1)]
    assert recorder.calls == [("Row", [("users", 1)]), ("Row", [("posts", 1), ("posts", 2)])]


def test_dedupe_of_unhashable_operations_fails_them_with_a_clear_error(recorder: Any) -> None:
    Get = recorder.op("Get", dedupe=True)  # __eq__ without __hash__ is unhashable
    Get.__eq__ = _eq  # type: ignore[method-assign,assignment]
    Get.__hash__ = None  # type: ignore[assignment]

    def gen_catch() -> Gen:
        try:
            yield [Get(1), Get(2)]
        except batch.BatchError as exc:
            return str(exc)
        return "not raised"

    message = recorder.execute(gen_catch())
    assert message.startswith("Get has dedupe = True, but its operations cannot be hashed")
    assert "make Get a frozen dataclass, or define __eq__ and __hash__ on it" in message
    assert recorder.calls == []


def test_dedupe_of_one_operation_does_not_need_a_hash(recorder: Any) -> None:
    # A group of one has nothing to merge: it is sent as is.
    Get = recorder.op("Get", dedupe=True)
    Get.__hash__ = None  # type: ignore[assignment]
    assert recorder.execute(gen_get(Get(1))) == 1
    assert recorder.calls == [("Get", [1])]


def test_trace_counts_operations_requested_before_dedupe(recorder: Any) -> None:
    Get = recorder.op("Get", dedupe=True, **EQ)
    recorder.execute([Get("a"), Get("b"), Get("a"), Get("a")])
    (record,) = recorder.trace.rounds[0].batches
    assert (record.size, record.requested) == (2, 4)


# -- chunking: max_batch_size --------------------------------------------------


def test_dedupe_comes_before_chunking(recorder: Any) -> None:
    # The example: a,b,a,a,a,b,c with max_batch_size 3 is one call.
    Get = recorder.op("Get", str.upper, dedupe=True, max_batch_size=3, **EQ)
    keys = ["a", "b", "a", "a", "a", "b", "c"]

    assert recorder.execute([Get(k) for k in keys]) == ["A", "B", "A", "A", "A", "B", "C"]
    assert recorder.calls == [("Get", ["a", "b", "c"])]
    assert recorder.rounds == 1


def test_dedupe_then_chunks_of_the_unique_operations(recorder: Any) -> None:
    Get = recorder.op("Get", str.upper, dedupe=True, max_batch_size=2, **EQ)
    keys = ["a", "b", "a", "c", "d", "b", "e"]

    assert recorder.execute([Get(k) for k in keys]) == [k.upper() for k in keys]
    assert recorder.calls == [("Get", ["a", "b"]), ("Get", ["c", "d"]), ("Get", ["e"])]
    assert recorder.rounds == 1
    assert [b.size for b in recorder.trace.rounds[0].batches] == [2, 2, 1]


def test_max_batch_size_splits_a_group_in_yield_order_within_one_round(recorder: Any) -> None:
    Get = recorder.op("Get", lambda k: k * 10, max_batch_size=2)

    def gen_pair(a: int, b: int) -> Gen:
        return (yield Get(a), gen_get(Get(b)))

    assert recorder.execute_many([gen_pair(1, 2), gen_get(Get(3)), gen_pair(4, 5)]) == [
        [10, 20], 30, [40, 50]]
    assert recorder.calls == [("Get", [1, 2]), ("Get", [3, 4]), ("Get", [5])]
    assert recorder.rounds == 1


def test_a_group_that_fits_max_batch_size_is_one_call(recorder: Any) -> None:
    Get = recorder.op("Get", max_batch_size=3)
    assert recorder.execute([Get(1), Get(2), Get(3)]) == [1, 2, 3]
    assert recorder.calls == [("Get", [1, 2, 3])]


def test_chunks_cost_no_extra_rounds_in_a_dependency_chain(recorder: Any) -> None:
    Next = recorder.op("Next", lambda n: n + 100, max_batch_size=2)

    def gen_chain(n: int) -> Gen:
        n = yield Next(n)
        return (yield Next(n))

    assert recorder.execute([gen_chain(n) for n in range(5)]) == [200, 201, 202, 203, 204]
    assert recorder.calls == [
        ("Next", [0, 1]), ("Next", [2, 3]), ("Next", [4]),
        ("Next", [100, 101]), ("Next", [102, 103]), ("Next", [104]),
    ]
    assert recorder.rounds == 2
    assert [len(r.batches) for r in recorder.trace.rounds] == [3, 3]


def test_each_batch_key_group_is_chunked_on_its_own(recorder: Any) -> None:
    Row = recorder.op("Row", key=lambda k: k[0], max_batch_size=2)
    keys = [("u", 1), ("p", 1), ("u", 2), ("u", 3), ("p", 2)]

    assert recorder.execute([Row(k) for k in keys]) == keys
    assert recorder.calls == [("Row", [("u", 1), ("u", 2)]), ("Row", [("u", 3)]),
                              ("Row", [("p", 1), ("p", 2)])]


def test_a_whole_call_failure_fails_only_its_chunk(recorder: Any) -> None:
    def answer(key: int) -> int:
        if key == 3:
            raise ConnectionError("shard down")
        return key

    Get = recorder.op("Get", answer, max_batch_size=2)
    out = recorder.execute(batch.settled([Get(k) for k in range(1, 6)]))

    assert recorder.calls == [("Get", [1, 2]), ("Get", [3, 4]), ("Get", [5])]
    assert out[:2] == [1, 2] and out[4] == 5
    assert isinstance(out[2], ConnectionError) and out[2] is out[3]


# -- chunking: max_batch_cost ----------------------------------------------------


def _costed(recorder: Any, **attrs: Any) -> Any:
    """``Job((name, cost))``: an operation whose batch_cost() is the key's cost."""

    def batch_cost(self: Any) -> float:
        return float(self.key[1])

    return recorder.op("Job", lambda k: k[0], batch_cost=batch_cost, **attrs)


def test_max_batch_cost_splits_greedily_by_summed_cost(recorder: Any) -> None:
    Job = _costed(recorder, max_batch_cost=3)
    jobs = [("a", 1), ("b", 2), ("c", 1), ("d", 3), ("e", 1)]

    assert recorder.execute([Job(j) for j in jobs]) == ["a", "b", "c", "d", "e"]
    assert [[k[0] for k in keys] for _, keys in recorder.calls] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert recorder.rounds == 1


def test_an_operation_costlier_than_the_limit_goes_alone(recorder: Any) -> None:
    Job = _costed(recorder, max_batch_cost=3)
    jobs = [("a", 1), ("huge", 10), ("c", 1), ("d", 1), ("e", 2)]

    assert recorder.execute([Job(j) for j in jobs]) == ["a", "huge", "c", "d", "e"]
    assert [[k[0] for k in keys] for _, keys in recorder.calls] == [
        ["a"], ["huge"], ["c", "d"], ["e"]]
    assert recorder.rounds == 1


def test_max_batch_cost_takes_fractional_costs(recorder: Any) -> None:
    Job = _costed(recorder, max_batch_cost=1.0)
    jobs = [(str(i), 0.5) for i in range(5)]

    recorder.execute([Job(j) for j in jobs])
    assert [[k[0] for k in keys] for _, keys in recorder.calls] == [["0", "1"], ["2", "3"], ["4"]]


def test_max_batch_size_and_max_batch_cost_both_bound_a_chunk(recorder: Any) -> None:
    Job = _costed(recorder, max_batch_cost=10, max_batch_size=2)
    jobs = [("a", 1), ("b", 1), ("c", 1), ("d", 6), ("e", 6), ("f", 1)]

    recorder.execute([Job(j) for j in jobs])
    assert [[k[0] for k in keys] for _, keys in recorder.calls] == [
        ["a", "b"], ["c", "d"], ["e", "f"]]


def test_the_default_batch_cost_is_one_per_operation(recorder: Any) -> None:
    Get = recorder.op("Get", max_batch_cost=2)
    recorder.execute([Get(k) for k in range(5)])
    assert recorder.calls == [("Get", [0, 1]), ("Get", [2, 3]), ("Get", [4])]


def test_chunking_by_cost_counts_each_deduped_operation_once(recorder: Any) -> None:
    def batch_cost(self: Any) -> float:
        return 2.0

    Get = recorder.op("Get", dedupe=True, max_batch_cost=4, batch_cost=batch_cost, **EQ)
    recorder.execute([Get(k) for k in ["a", "a", "b", "a", "c"]])
    assert recorder.calls == [("Get", ["a", "b"]), ("Get", ["c"])]


def test_batch_cost_raising_fails_the_operation_at_its_yield(recorder: Any) -> None:
    # Like an exception from batch_key() (DESIGN.md section 5).
    def batch_cost(self: Any) -> float:
        raise ValueError(f"cannot size {self.key}")

    Job = recorder.op("Job", max_batch_cost=3, batch_cost=batch_cost)

    def gen_catch() -> Gen:
        try:
            yield Job(1)
        except ValueError as exc:
            return str(exc)
        return "not raised"

    assert recorder.execute(gen_catch()) == "cannot size 1"


# -- invalid settings ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("max_batch_size", 0, r"Get\.max_batch_size = 0 is invalid: it must be greater than 0"),
        ("max_batch_size", -5, r"Get\.max_batch_size = -5 is invalid: it must be greater than 0"),
        ("max_batch_size", 2.5, r"Get\.max_batch_size = 2\.5 is invalid: it must be a positive int"),
        ("max_batch_size", "3", r"Get\.max_batch_size = '3' is invalid: it must be a positive int"),
        ("max_batch_size", True, r"Get\.max_batch_size = True is invalid: it must be a positive int"),
        ("max_batch_cost", 0, r"Get\.max_batch_cost = 0 is invalid: it must be greater than 0"),
        ("max_batch_cost", -0.5, r"Get\.max_batch_cost = -0\.5 is invalid: it must be greater than 0"),
        ("max_batch_cost", float("nan"), r"Get\.max_batch_cost = nan is invalid"),
        ("max_batch_cost", "10", r"Get\.max_batch_cost = '10' is invalid: it must be a positive number"),
        ("max_batch_cost", False, r"Get\.max_batch_cost = False is invalid: it must be a positive number"),
    ],
)
def test_invalid_chunk_settings_raise_at_class_creation(name: str, value: Any, message: str) -> None:
    with pytest.raises(BatchSettingError, match=message) as info:
        type("Get", (batch.BatchableOperation,), {name: value, "__qualname__": "Get"})
    assert isinstance(info.value, batch.BatchError)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_valid_chunk_settings_are_accepted() -> None:
    class Fine(batch.BatchableOperation[int]):
        max_batch_size = 1
        max_batch_cost = 0.25

    class Unlimited(Fine):
        max_batch_size = None
        max_batch_cost = None

    assert (Fine.max_batch_size, Unlimited.max_batch_cost) == (1, None)


def test_an_invalid_setting_assigned_later_raises_at_first_use(recorder: Any) -> None:
    Get = recorder.op("Get")
    Get.max_batch_size = 0
    closed: list[str] = []

    def gen_root() -> Gen:
        try:
            return (yield Get(1))
        finally:
            closed.append("root")

    with pytest.raises(BatchSettingError, match=r"Get\.max_batch_size = 0 is invalid"):
        batch.execute(gen_root())
    assert recorder.calls == []
    assert closed == ["root"]


# -- per-operation failures --------------------------------------------------------


def test_an_exception_instance_in_the_results_fails_only_that_operation(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)

    def gen_one(key: str) -> Gen:
        try:
            return (yield Get(key))
        except ValueError as exc:
            return f"caught: {exc}"

    assert recorder.execute_many([gen_one("x"), gen_one("bad2"), gen_one("y")]) == [
        "X", "caught: no row bad2", "Y"]
    assert recorder.calls == [("Get", ["x", "bad2", "y"])]


def test_a_failed_operation_in_a_yielded_list_raises_at_that_yield(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)

    def gen_page() -> Gen:
        try:
            yield [Get("a"), Get("bad1"), Get("bad2")]
        except ValueError as exc:
            return str(exc)
        return "not raised"

    assert recorder.execute(gen_page()) == "no row bad1"
    assert recorder.calls == [("Get", ["a", "bad1", "bad2"])]


def test_a_failure_at_the_root_is_raised_by_execute(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)
    with pytest.raises(ValueError, match=r"^no row bad7"):
        batch.execute(gen_get(Get("bad7")))


def test_only_exception_instances_fail_an_operation(recorder: Any) -> None:
    # An exception class, or a BaseException that is not an Exception, is a value.
    answers = {"cls": KeyError, "base": GeneratorExit("kept")}
    Get = recorder.op("Get", answers.__getitem__)

    out = recorder.execute([Get("cls"), Get("base")])
    assert out[0] is KeyError and out[1] is answers["base"]


# -- settled -----------------------------------------------------------------------


def test_settled_on_a_single_operation_gives_the_value_or_the_exception(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)

    def gen_both() -> Gen:
        ok = yield batch.settled(Get("a"))
        bad = yield batch.settled(Get("bad3"))
        return ok, bad

    ok, bad = recorder.execute(gen_both())
    assert ok == "A"
    assert isinstance(bad, ValueError) and str(bad) == "no row bad3"
    assert recorder.calls == [("Get", ["a"]), ("Get", ["bad3"])]


def test_settled_on_a_failing_generator_returns_its_exception(recorder: Any) -> None:
    Get = recorder.op("Get")

    def gen_fail() -> Gen:
        yield Get(1)
        raise LookupError("gone")

    def gen_root() -> Gen:
        return (yield batch.settled(gen_fail()))

    out = recorder.execute(gen_root())
    assert isinstance(out, LookupError) and out.args == ("gone",)
    assert out.__traceback__ is not None


def test_settled_on_nested_structures_settles_every_item_in_place(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)

    def gen_fail(message: str) -> Gen:
        yield Get("z")
        raise KeyError(message)

    def gen_root() -> Gen:
        return (yield batch.settled({
            "users": [Get("a"), Get("bad1")],
            "pair": (gen_fail("late"), Get("b")),
            "deep": [{"x": Get("bad2")}, []],
            "empty": {},
        }))

    out = recorder.execute(gen_root())
    assert list(out) == ["users", "pair", "deep", "empty"]
    assert out["users"][0] == "A" and isinstance(out["users"][1], ValueError)
    assert isinstance(out["pair"][0], KeyError) and out["pair"][1] == "B"
    assert isinstance(out["deep"][0]["x"], ValueError) and out["deep"][1] == []
    assert out["empty"] == {}
    assert [str(e) for e in (out["users"][1], out["deep"][0]["x"])] == ["no row bad1", "no row bad2"]
    assert recorder.calls == [("Get", ["a", "bad1", "b", "bad2", "z"])]
    assert recorder.rounds == 1


def test_settled_waits_for_every_item_even_after_a_failure(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)

    def gen_chain() -> Gen:
        for step in range(3):
            yield Get(f"step{step}")
        return "chain done"

    def gen_root() -> Gen:
        return (yield batch.settled([Get("bad0"), gen_chain()]))

    failure, done = recorder.execute(gen_root())
    assert isinstance(failure, ValueError) and done == "chain done"
    assert recorder.rounds == 3


def test_settled_never_throws(recorder: Any) -> None:
    def answer(key: str) -> Any:
        raise ConnectionError("down")

    Down = recorder.op("Down", answer)
    Short = recorder.op("Short")
    Short.run_batch = classmethod(lambda cls, ops: [])  # type: ignore[assignment]

    def gen_reused(g: Gen) -> Gen:
        return (yield g)

    def gen_root() -> Gen:
        shared = gen_get(Down(0))
        out = yield batch.settled([Down(1), Short(2), 42, shared, gen_reused(shared), None])
        after = yield batch.settled([])
        return out, after

    out, after = recorder.execute(gen_root())
    assert after == []
    kinds = [type(x) for x in out]
    assert kinds == [ConnectionError, batch.BatchResultError, batch.YieldTypeError,
                     ConnectionError, batch.GeneratorReusedError, batch.YieldTypeError]


def test_settled_inside_a_plain_list_settles_only_its_own_item(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)

    def gen_root() -> Gen:
        first = yield [batch.settled(Get("bad1")), Get("a")]
        try:
            yield [Get("bad2"), batch.settled(Get("b"))]
        except ValueError as exc:
            return first, str(exc)
        return first, "not raised"

    (settled_bad, a), message = recorder.execute(gen_root())
    assert isinstance(settled_bad, ValueError) and a == "A"
    assert message == "no row bad2"


def test_settled_is_a_root_too(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)
    out = batch.execute(batch.settled([Get("a"), Get("bad")]))
    assert out[0] == "A" and isinstance(out[1], ValueError)


def test_settled_of_a_bad_value_names_settled_not_a_list(recorder: Any) -> None:
    def gen_root() -> Gen:
        return (yield batch.settled(42))

    out = batch.execute(gen_root())
    assert isinstance(out, batch.YieldTypeError)
    assert "yielded settled() of int;" in str(out)
    assert "yielded a list" not in str(out)


# -- execute_many(return_exceptions=True) ----------------------------------------------


def test_return_exceptions_gives_failed_roots_their_exception_in_place(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)
    finished: list[str] = []

    def gen_long(name: str) -> Gen:
        for step in range(3):
            yield Get(f"{name}{step}")
        finished.append(name)
        return name

    def gen_fail() -> Gen:
        yield Get("bad1")

    out = recorder.execute_many([gen_long("p"), gen_fail(), Get("bad2"), gen_long("q")],
                                return_exceptions=True)
    assert out[0] == "p" and out[3] == "q"
    assert [type(x) for x in out[1:3]] == [ValueError, ValueError]
    assert [str(x) for x in out[1:3]] == ["no row bad1", "no row bad2"]
    assert finished == ["p", "q"]
    assert recorder.calls == [("Get", ["p0", "bad1", "bad2", "q0"]), ("Get", ["p1", "q1"]),
                              ("Get", ["p2", "q2"])]


def test_without_return_exceptions_the_first_failed_root_is_raised(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)
    closed: list[str] = []

    def gen_long() -> Gen:
        try:
            for step in range(3):
                yield Get(f"long{step}")
        finally:
            closed.append("long")

    with pytest.raises(ValueError, match=r"^no row bad1"):
        batch.execute_many([gen_long(), gen_get(Get("bad1")), gen_get(Get("bad2"))])
    assert closed == ["long"]
    assert recorder.calls == [("Get", ["long0", "bad1", "bad2"])]


def test_executev_takes_return_exceptions_too(recorder: Any) -> None:
    Get = recorder.op("Get", fail_bad)
    out = batch.BatchExecutor.executev([Get("bad"), Get("ok")], return_exceptions=True)
    assert isinstance(out[0], ValueError) and out[1] == "OK"
