"""batch.testing: FakeStore, override, capture/assert_rounds/assert_batches, record/replay."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import batch
from batch import _hooks
from batch.testing import (
    FakeStore,
    NotRecordedError,
    Recording,
    assert_batches,
    assert_rounds,
    capture,
    override,
    recording,
    replaying,
)

CALLS: list[tuple[str, list[Any]]] = []


@pytest.fixture(autouse=True)
def _clean() -> Generator[None, None, None]:
    CALLS.clear()
    yield
    # Every helper must have undone itself.
    assert _hooks.current() is None
    assert _hooks._trace_factory is None


@dataclass(frozen=True)
class GetSpouseId(batch.BatchableOperation[int]):
    user_id: int

    @classmethod
    def run_batch(cls, operations: list[GetSpouseId]) -> list[Any]:
        CALLS.append(("GetSpouseId", [op.user_id for op in operations]))
        return [op.user_id + 1 if op.user_id % 2 else op.user_id - 1 if op.user_id > 0
                else KeyError(op.user_id) for op in operations]


@dataclass(frozen=True)
class GetUser(batch.BatchableOperation[dict[str, Any]]):
    user_id: int

    @classmethod
    def run_batch(cls, operations: list[GetUser]) -> list[dict[str, Any]]:
        CALLS.append(("GetUser", [op.user_id for op in operations]))
        return [{"id": op.user_id, "name": f"user{op.user_id}"} for op in operations]


def gen_user(user_id: int) -> Generator[Any, Any, dict[str, Any]]:
    user: dict[str, Any] = yield GetUser(user_id)
    return user


def gen_spouses(user_id: int) -> Generator[Any, Any, tuple[str, str]]:
    spouse_id = yield GetSpouseId(user_id)
    user, spouse = yield gen_user(user_id), gen_user(spouse_id)
    return user["name"], spouse["name"]


# -- FakeStore ---------------------------------------------------------------------


def test_fake_store_batches_and_records() -> None:
    store = FakeStore({"a": 1, "b": 2})

    def gen() -> Generator[Any, Any, Any]:
        a, b, c = yield store.Get("a"), store.Get("b"), store.Get("c", default=0)
        yield store.Put("c", a + b + c)  # c is the default, 0
        return (yield store.Get("c"))

    assert batch.execute(gen()) == 3
    assert store.calls == [("Get", ["a", "b", "c"]), ("Write", [("put", "c", 3)]),
                           ("Get", ["c"])]
    assert store.round_trips == 3
    assert store.data == {"a": 1, "b": 2, "c": 3}


def test_put_and_delete_of_one_round_are_one_call_applied_in_yield_order() -> None:
    store = FakeStore({"k": 0})

    def writer(key: str, value: int) -> Generator[Any, Any, None]:
        yield store.Put(key, value)

    def gen() -> Generator[Any, Any, Any]:
        return (yield [store.Delete("k"), store.Put("k", 1), writer("k", 2), store.Delete("x"),
                       store.Delete("k"), writer("j", 3)])

    # The join's own operations are queued first, then its sub-generators run.
    assert batch.execute(gen()) == [True, None, None, False, True, None]
    assert store.calls == [("Write", [("delete", "k"), ("put", "k", 1), ("delete", "x"),
                                      ("delete", "k"), ("put", "k", 2), ("put", "j", 3)])]
    assert store.data == {"k": 2, "j": 3}


def test_two_stores_never_share_a_batch() -> None:
    users = FakeStore({1: "ada"}, name="users")
    posts = FakeStore({1: "hello"}, name="posts")
    t = batch.Trace()
    assert batch.execute([users.Get(1), posts.Get(1), users.Get(2)], trace=t) == [
        "ada", "hello", None]
    assert users.calls == [("Get", [1, 2])] and posts.calls == [("Get", [1])]
    assert [(b.name, b.size) for b in t.batches] == [("users.Get", 2), ("posts.Get", 1)]
    assert repr(users) == "<users 1 keys, 1 round trips>"


def test_fake_store_settings_are_per_store() -> None:
    chunked = FakeStore({i: i for i in range(5)}, max_batch_size=2)
    plain = FakeStore({i: i for i in range(5)})
    plain.Get.dedupe = True
    assert batch.execute([chunked.Get(i) for i in range(5)]) == [0, 1, 2, 3, 4]
    assert chunked.calls == [("Get", [0, 1]), ("Get", [2, 3]), ("Get", [4])]
    assert batch.execute([plain.Get(1), plain.Get(1), plain.Get(2)]) == [1, 1, 2]
    assert plain.calls == [("Get", [1, 2])]
    assert chunked.Get.dedupe is False


def test_fake_store_under_threads_and_async() -> None:
    store = FakeStore({"a": 1})
    assert batch.execute([store.Get("a"), store.Put("b", 2)], max_workers=2) == [1, None]
    assert asyncio.run(batch.execute_async([store.Get("b"), store.Delete("a")])) == [2, True]
    assert store.data == {"b": 2}
    assert sorted(name for name, _ in store.calls) == ["Get", "Get", "Write", "Write"]


def test_fake_store_operations_compare_by_value() -> None:
    store = FakeStore()
    assert store.Get("a") == store.Get("a") and hash(store.Get("a")) == hash(store.Get("a"))
    assert store.Get("a") != FakeStore().Get("a")
    assert store.Put("a", 1) == store.Put("a", 1) != store.Put("a", 2)
    assert store.Put("a", 1) != store.Delete("a")
    assert [repr(store.Get("a")), repr(store.Put("a", 1)), repr(store.Delete("a"))] == [
        "Get('a')", "Put('a', 1)", "Delete('a')"]
    with pytest.raises(ValueError, match="a FakeStore write is 'put' or 'delete', got 'upsert'"):
        store.Write("upsert", "a")


# -- override ---------------------------------------------------------------------


def fake_users(operations: list[GetUser]) -> list[dict[str, Any]]:
    CALLS.append(("fake", [op.user_id for op in operations]))
    return [{"id": op.user_id, "name": f"fake{op.user_id}"} for op in operations]


def test_override_routes_run_batch() -> None:
    with override(GetUser, fake_users):
        assert batch.execute(gen_spouses(1)) == ("fake1", "fake2")
    assert CALLS == [("GetSpouseId", [1]), ("fake", [1, 2])]
    assert batch.execute(gen_user(5)) == {"id": 5, "name": "user5"}


def test_override_is_restored_after_an_exception() -> None:
    with pytest.raises(RuntimeError, match="boom"), override(GetUser, fake_users):
        assert batch.execute(gen_user(1))["name"] == "fake1"
        raise RuntimeError("boom")
    assert batch.execute(gen_user(1))["name"] == "user1"
    assert CALLS == [("fake", [1]), ("GetUser", [1])]


def test_overrides_nest_and_leave_in_any_order() -> None:
    def fake_a(ops: list[Any]) -> list[str]:
        return ["a" for _ in ops]

    def fake_b(ops: list[Any]) -> list[str]:
        return ["b" for _ in ops]

    outer = override(GetUser, fake_a)
    inner = override(GetUser, fake_b)
    outer.__enter__()
    inner.__enter__()
    assert batch.execute(GetUser(1)) == "b"
    outer.__exit__(None, None, None)  # leave the outer one first
    assert batch.execute(GetUser(1)) == "b"
    inner.__exit__(None, None, None)
    assert batch.execute(GetUser(1)) == {"id": 1, "name": "user1"}


def test_override_is_thread_safe() -> None:
    # Many threads enter and leave overrides of two classes, interleaved; each
    # thread's executions see its class overridden, and everything is undone.
    barrier = threading.Barrier(8, timeout=10)
    seen: list[Any] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        cls: Any = GetUser if i % 2 else GetSpouseId
        try:
            barrier.wait()
            for _ in range(50):
                with override(cls, lambda ops: ["x" for _ in ops]):
                    seen.append(batch.execute(cls(1)))
        except BaseException as exc:  # pragma: no cover  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert seen == ["x"] * 400
    assert batch.execute(GetUser(1)) == {"id": 1, "name": "user1"}


class Base(batch.BatchableOperation[str]):
    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[str]:
        return [f"real {cls.__name__}" for _ in operations]


class Inherits(Base):
    pass


class OwnRunBatch(Base):
    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[str]:
        return ["own" for _ in operations]


def test_override_of_a_base_class_reaches_subclasses_that_inherit_run_batch() -> None:
    with override(Base, lambda ops: [f"fake {type(op).__name__}" for op in ops]):
        assert batch.execute([Base(), Inherits(), OwnRunBatch()]) == [
            "fake Base", "fake Inherits", "own"]
    with override(Inherits, lambda ops: ["sub" for _ in ops]):
        assert batch.execute([Base(), Inherits()]) == ["real Base", "sub"]


def test_override_with_async_and_generator_functions() -> None:
    async def fake_async(ops: list[GetUser]) -> list[str]:
        await asyncio.sleep(0)
        return [f"async{op.user_id}" for op in ops]

    def fake_layered(ops: list[GetUser]) -> Generator[Any, Any, list[str]]:
        ids = yield [GetSpouseId(op.user_id) for op in ops]
        return [f"spouse{i}" for i in ids]

    with override(GetUser, fake_async):
        assert asyncio.run(batch.execute_async([GetUser(1), GetUser(2)])) == ["async1", "async2"]
        with pytest.raises(batch.BatchError, match="returned an awaitable"):
            batch.execute(GetUser(1))
    with override(GetUser, fake_layered):
        assert batch.execute([GetUser(1), GetUser(2)]) == ["spouse2", "spouse1"]
    assert CALLS == [("GetSpouseId", [1, 2])]


def test_override_argument_errors() -> None:
    with pytest.raises(TypeError, match=r"override\(\) takes an operation class \(a "
                                        r"batch\.BatchableOperation subclass\), got GetUser "
                                        r"\(pass the class, not an instance\)"):
        with override(GetUser(1), fake_users):  # type: ignore[arg-type]
            pass  # pragma: no cover
    with pytest.raises(TypeError, match=r"got int$"):
        with override(int, fake_users):  # type: ignore[arg-type]
            pass  # pragma: no cover
    with pytest.raises(TypeError, match=r"override\(GetUser, fn\): fn must be callable as "
                                        r"fn\(operations\), got list"):
        with override(GetUser, []):  # type: ignore[arg-type]
            pass  # pragma: no cover


# -- capture / assert_rounds / assert_batches --------------------------------------------


def test_assert_rounds_passes_on_the_right_count() -> None:
    with assert_rounds(2) as seen:
        assert batch.execute(gen_spouses(1)) == ("user1", "user2")
    assert seen.shapes == [[("GetSpouseId", 1)], [("GetUser", 2)]]


def test_assert_rounds_failure_prints_the_summary() -> None:
    with pytest.raises(AssertionError) as info, assert_rounds(1):
        batch.execute(gen_spouses(1))
    lines = str(info.value).splitlines()
    assert lines[0] == "expected 1 round, got 2 (in 1 execution):"
    assert lines[1].startswith("2 rounds, 2 batches, 3 operations sent")
    assert lines[4].split()[:2] == ["1", "GetSpouseId"]
    assert lines[5].split()[:2] == ["2", "GetUser"]


def test_assert_rounds_sums_executions_and_nests() -> None:
    with assert_rounds(3) as outer:
        with assert_rounds(2):
            batch.execute(gen_spouses(1))
        batch.execute(GetUser(3))
    assert len(outer.traces) == 2
    with pytest.raises(AssertionError, match=r"^expected 2 rounds, got 3 \(in 2 executions\):"
                                             r"\nexecution 1 of 2: 2 rounds"):
        with assert_rounds(2):
            batch.execute(gen_spouses(1))
            batch.execute(GetUser(3))


def test_assert_rounds_with_no_execution() -> None:
    with pytest.raises(AssertionError, match=r"^expected 1 round, got 0: no batch execution "
                                             r"ran inside the block$"):
        with assert_rounds(1):
            pass
    with assert_rounds(0):
        assert batch.execute(batch.gen_identity(5)) == 5  # pure logic: no round


def test_assert_rounds_lets_the_block_exception_through() -> None:
    with pytest.raises(KeyError), assert_rounds(5):
        batch.execute(gen_spouses(0))  # GetSpouseId(0) fails


def test_assert_rounds_sees_async_threaded_and_streamed_executions() -> None:
    with assert_rounds(6) as seen:
        asyncio.run(batch.execute_async(gen_spouses(1)))
        batch.execute(gen_spouses(3), max_workers=2)
        assert list(batch.execute_iter([gen_spouses(5)])) == [("user5", "user6")]
    assert len(seen.traces) == 3


def test_assert_rounds_sees_executions_in_other_threads() -> None:
    with assert_rounds(2):
        th = threading.Thread(target=batch.execute, args=(gen_spouses(1),))
        th.start()
        th.join()


def test_assert_rounds_sees_executions_given_their_own_trace() -> None:
    mine = batch.Trace()
    batch.execute(GetUser(9), trace=mine)  # an earlier round in the same trace
    with assert_rounds(2) as seen:
        batch.execute(gen_spouses(1), trace=mine)
    assert seen.shapes == [[("GetSpouseId", 1)], [("GetUser", 2)]]
    assert mine.round_count == 3


def test_assert_rounds_argument() -> None:
    with pytest.raises(TypeError, match=r"assert_rounds\(\) takes a number of rounds >= 0, "
                                        r"got -1"):
        with assert_rounds(-1):
            pass  # pragma: no cover


def test_assert_batches_per_round_and_flat() -> None:
    with assert_batches([[("GetSpouseId", 1)], [(GetUser, 2)]]):
        batch.execute(gen_spouses(1))
    with assert_batches([(GetSpouseId, 2), ("GetUser", 4)]):
        batch.execute_many([gen_spouses(1), gen_spouses(3)])
    with assert_batches([]):
        batch.execute(batch.gen_identity(1))


def test_assert_batches_matches_names_of_classes_defined_in_functions() -> None:
    class Local(batch.BatchableOperation[int]):
        @classmethod
        def run_batch(cls, operations: list[Any]) -> list[int]:
            return [0 for _ in operations]

    assert "<locals>" in Local.__qualname__
    with assert_batches([("Local", 3)]) as seen:
        batch.execute([Local(), Local(), Local()])
    assert seen.shapes == [[("Local", 3)]]
    assert "<locals>" not in seen.summary()


def test_assert_batches_failure_shows_the_rounds_side_by_side() -> None:
    with pytest.raises(AssertionError) as info:
        with assert_batches([[("GetSpouseId", 1)], [("GetUser", 1), ("GetUser", 1)]]):
            batch.execute(gen_spouses(1))
    lines = str(info.value).splitlines()
    assert lines[:3] == [
        "batches differ from the expected ones:",
        "  round 1: expected [GetSpouseId x1], got [GetSpouseId x1]",
        "! round 2: expected [GetUser x1, GetUser x1], got [GetUser x2]",
    ]
    assert lines[3].startswith("2 rounds, 2 batches")
    with pytest.raises(AssertionError, match=r"! round 3: expected \(none\), got "
                                             r"\[GetUser x1\]"):
        with assert_batches([[("GetSpouseId", 1)], [("GetUser", 2)]]):
            batch.execute(gen_spouses(1))
            batch.execute(GetUser(1))
    with pytest.raises(AssertionError, match=r"! all rounds: expected \[GetUser x2\], got "
                                             r"\[GetSpouseId x1, GetUser x2\]"):
        with assert_batches([("GetUser", 2)]):
            batch.execute(gen_spouses(1))


def test_assert_batches_argument_errors() -> None:
    with pytest.raises(TypeError, match=r"expects \(operation class or name, size\) pairs, "
                                        r"got \('GetUser', '2'\)"):
        with assert_batches([("GetUser", "2")]):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="not a mix of both"):
        with assert_batches([("GetUser", 2), [("GetUser", 2)]]):
            pass  # pragma: no cover


def test_capture_collects_without_asserting() -> None:
    with capture() as seen:
        batch.execute(gen_spouses(1))
        batch.execute(gen_spouses(3))
    assert seen.round_count == 4
    assert [b.size for b in seen.batches] == [1, 2, 1, 2]
    assert repr(seen) == "<Captured 2 executions, 4 rounds, 4 batches>"
    with capture() as nothing:
        pass
    assert nothing.summary() == "(no batch execution ran)"


# -- record and replay ---------------------------------------------------------------------


def test_record_then_replay_returns_an_equal_result_with_zero_calls() -> None:
    with recording() as rec:
        first = batch.execute_many([gen_spouses(1), gen_spouses(3)])
    calls = list(CALLS)
    assert calls == [("GetSpouseId", [1, 3]), ("GetUser", [1, 2, 3, 4])]
    assert len(rec) == 6 and GetUser(4) in rec and GetUser(5) not in rec
    CALLS.clear()
    with replaying(rec), assert_batches([[("GetSpouseId", 2)], [("GetUser", 4)]]):
        again = batch.execute_many([gen_spouses(1), gen_spouses(3)])
    assert again == first == [("user1", "user2"), ("user3", "user4")]
    assert CALLS == []


def test_replay_of_failures_fails_the_same_operations() -> None:
    class Flaky(batch.BatchableOperation[int]):
        @classmethod
        def run_batch(cls, operations: list[Any]) -> list[int]:
            raise ConnectionError("flaky")

    def gen() -> Generator[Any, Any, Any]:
        return (yield batch.settled([GetSpouseId(0), GetSpouseId(1)]))

    with recording() as rec:
        first = batch.execute(gen())
        flaky = Flaky()
        with pytest.raises(ConnectionError):
            batch.execute(flaky)
    with replaying(rec):
        again = batch.execute(gen())
        with pytest.raises(ConnectionError, match="flaky") as info:
            batch.execute(flaky)
    assert isinstance(first[0], KeyError) and first[1] == 2
    assert isinstance(again[0], KeyError) and again[0] is not first[0] and again[1] == 2
    # The replayed exception is a fresh copy: no notes of the recorded run pile up.
    assert info.value.__notes__ == ["batch: execution failed after 1 round(s)"]


def test_not_recorded_fails_only_that_operation_and_names_it() -> None:
    with recording() as rec:
        batch.execute(gen_user(1))
    with replaying(rec):
        out = batch.execute(batch.settled([GetUser(1), GetUser(7), GetSpouseId(1)]))
    assert out[0] == {"id": 1, "name": "user1"}
    assert isinstance(out[1], NotRecordedError) and isinstance(out[1], LookupError)
    assert out[1].operation == GetUser(7)
    assert str(out[1]) == (
        "GetUser operation GetUser(user_id=7) was not recorded (the recording has 1 other "
        "GetUser operation(s): GetUser(user_id=1)); record again with batch.testing.recording()")
    assert str(out[2]).startswith("GetSpouseId operation GetSpouseId(user_id=1) was not "
                                  "recorded (the recording has no GetSpouseId operation at all)")
    with replaying(rec), pytest.raises(NotRecordedError, match=r"GetUser\(user_id=8\)"):
        batch.execute(gen_user(8))


class ByIdentity(batch.BatchableOperation[int]):
    @classmethod
    def run_batch(cls, operations: list[Any]) -> list[int]:
        return [1 for _ in operations]


def test_not_recorded_explains_operations_without_eq() -> None:
    with recording() as rec:
        batch.execute(ByIdentity())
    with replaying(rec), pytest.raises(NotRecordedError, match=(
            r"ByIdentity compares by identity \(it defines no __eq__\), so no recorded "
            r"operation can ever match: make it a frozen dataclass")):
        batch.execute(ByIdentity())


def test_repeated_operations_replay_in_recorded_order() -> None:
    store = FakeStore({"n": 0})

    def gen() -> Generator[Any, Any, list[int]]:
        seen = []
        for i in range(3):
            seen.append((yield store.Get("n")))
            yield store.Put("n", i + 1)
        return seen

    with recording() as rec:
        assert batch.execute(gen()) == [0, 1, 2]
    assert rec.results(store.Get("n")) == [0, 1, 2]
    store.calls.clear()
    for _ in range(2):  # every replay starts from the first result
        with replaying(rec):
            assert batch.execute(gen()) == [0, 1, 2]
    assert store.calls == [] and store.data == {"n": 3}
    with replaying(rec):  # asked more often than recorded: the last result repeats
        assert batch.execute([store.Get("n")] * 5) == [0, 1, 2, 2, 2]


@dataclass
class Unhashable(batch.BatchableOperation[int]):
    n: int  # a plain (not frozen) dataclass: __eq__ but no __hash__

    @classmethod
    def run_batch(cls, operations: list[Unhashable]) -> list[int]:
        CALLS.append(("Unhashable", [op.n for op in operations]))
        return [op.n * 10 for op in operations]


def test_unhashable_operations_are_matched_by_eq() -> None:
    with recording() as rec:
        assert batch.execute([Unhashable(1), Unhashable(2)]) == [10, 20]
    CALLS.clear()
    with replaying(rec):
        out = batch.execute(batch.settled([Unhashable(2), Unhashable(1), Unhashable(3)]))
    assert out[:2] == [20, 10] and isinstance(out[2], NotRecordedError)
    assert CALLS == [] and Unhashable(1) in rec and len(rec) == 2


class Layered(batch.BatchableOperation[str]):
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layered) and other.user_id == self.user_id

    def __hash__(self) -> int:
        return hash(self.user_id)

    @classmethod
    def run_batch(cls, operations: list[Layered]) -> Generator[Any, Any, list[str]]:
        users = yield [GetUser(op.user_id) for op in operations]
        return [u["name"].upper() for u in users]


def test_layered_and_async_run_batch_are_recorded() -> None:
    class AsyncOp(batch.BatchableOperation[int]):
        def __init__(self, n: int) -> None:
            self.n = n

        def __eq__(self, other: object) -> bool:
            return isinstance(other, AsyncOp) and other.n == self.n

        def __hash__(self) -> int:
            return self.n

        @classmethod
        async def run_batch(cls, operations: list[Any]) -> list[int]:
            CALLS.append(("AsyncOp", [op.n for op in operations]))
            await asyncio.sleep(0)
            return [op.n + 100 for op in operations]

    with recording() as rec:
        assert batch.execute([Layered(1), Layered(2)]) == ["USER1", "USER2"]
        assert asyncio.run(batch.execute_async([AsyncOp(1), AsyncOp(2)])) == [101, 102]
    assert rec.results(Layered(2)) == ["USER2"] and rec.results(AsyncOp(1)) == [101]
    assert rec.results(GetUser(1)) == [{"id": 1, "name": "user1"}]  # the layer's own batch
    CALLS.clear()
    with replaying(rec), assert_rounds(2):
        assert batch.execute([Layered(2), Layered(1)]) == ["USER2", "USER1"]
        assert asyncio.run(batch.execute_async([AsyncOp(2)])) == [102]
    assert CALLS == []


def test_recording_captures_what_an_override_returns() -> None:
    with override(GetUser, fake_users), recording() as rec:
        batch.execute(gen_user(1))
    assert rec.results(GetUser(1)) == [{"id": 1, "name": "fake1"}]
    with recording() as rec2, override(GetUser, fake_users):
        batch.execute(gen_user(2))
    assert rec2.results(GetUser(2)) == [{"id": 2, "name": "fake2"}]


def test_recording_a_replay_and_extending_a_recording() -> None:
    with recording() as rec:
        batch.execute(gen_user(1))
    with replaying(rec), recording() as copy:
        batch.execute(gen_user(1))
    assert copy.results(GetUser(1)) == [{"id": 1, "name": "user1"}]
    with recording(into=copy) as same:
        batch.execute(gen_user(2))
    assert same is copy and len(copy) == 2
    assert CALLS == [("GetUser", [1]), ("GetUser", [2])]


def test_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "spouses.rec"
    with recording() as rec:
        first = batch.execute(batch.settled([gen_spouses(1), gen_spouses(0)]))
    rec.save(path)
    loaded = Recording.load(path)
    assert len(loaded) == len(rec) == 4
    CALLS.clear()
    with replaying(loaded):
        again = batch.execute(batch.settled([gen_spouses(1), gen_spouses(0)]))
    assert again[0] == first[0] == ("user1", "user2")
    assert isinstance(again[1], KeyError) and again[1].args == (0,)
    assert CALLS == []


def test_save_names_what_cannot_be_pickled(tmp_path: Path) -> None:
    store = FakeStore({"a": 1})
    with recording() as rec:
        batch.execute(store.Get("a"))
    with pytest.raises(TypeError, match=r"cannot save the recording: the class of Get\('a'\) "
                                        r"\(FakeStore\.Get\) cannot be pickled"):
        rec.save(tmp_path / "x.rec")

    rec2 = Recording()
    rec2.add(GetUser(1), threading.Lock())
    with pytest.raises(TypeError, match=r"the result of GetUser\(user_id=1\) \(lock\) cannot be "
                                        r"pickled"):
        rec2.save(tmp_path / "y.rec")
    assert not (tmp_path / "y.rec").exists()


def test_load_rejects_other_files(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "other.pickle"
    path.write_bytes(pickle.dumps({"hello": 1}))
    with pytest.raises(ValueError, match=r"is not a batch\.testing\.Recording file"):
        Recording.load(path)


def test_replaying_argument_errors() -> None:
    with pytest.raises(TypeError, match=r"replaying\(\) takes a batch\.testing\.Recording"):
        with replaying({}):  # type: ignore[arg-type]
            pass  # pragma: no cover
    with pytest.raises(TypeError, match=r"recording\(into=\.\.\.\) takes a "):
        with recording(into=[]):  # type: ignore[arg-type]
            pass  # pragma: no cover


def test_helpers_are_undone_on_error() -> None:
    with pytest.raises(ZeroDivisionError):
        with recording(), replaying(Recording()), override(GetUser, fake_users), capture():
            assert _hooks.current() is not None and _hooks._trace_factory is not None
            1 / 0  # noqa: B018
    # the autouse fixture checks the hook and the trace factory are gone


# -- the pytest plugin ------------------------------------------------------------------


def test_pytest_plugin_prints_the_trace_summary_on_failure(tmp_path: Path) -> None:
    test_file = tmp_path / "test_sample.py"
    test_file.write_text(textwrap.dedent("""
        import batch
        from batch.testing import FakeStore

        def test_ok(batch_trace):
            store = FakeStore({1: "a"})
            assert batch.execute(store.Get(1)) == "a"
            assert batch_trace.round_count == 1

        def test_fails(batch_trace):
            store = FakeStore({1: "a"})
            batch.execute([store.Get(1), store.Get(2)])
            assert batch_trace.round_count == 5
    """))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "batch.pytest_plugin", "-p", "no:cacheprovider",
         "-o", "addopts=", str(test_file)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    out = proc.stdout
    assert proc.returncode == 1, out
    assert "1 failed, 1 passed" in out
    section = out[out.index("batch trace"):]
    assert "1 round, 1 batch, 2 operations sent" in section
    assert "FakeStore.Get" in section
    assert out.count("batch trace") == 1  # only for the failed test


def test_fake_store_settings_do_not_leak_to_later_stores() -> None:
    first = FakeStore({i: i for i in range(4)})
    first.Get.max_batch_size = 1
    first.Get.dedupe = True
    later = FakeStore({i: i for i in range(4)})
    assert (later.Get.max_batch_size, later.Get.dedupe) == (None, False)
    assert batch.execute([later.Get(i) for i in (0, 1, 1, 2)]) == [0, 1, 1, 2]
    assert later.calls == [("Get", [0, 1, 1, 2])]
    assert batch.execute([first.Get(i) for i in (0, 1, 1)]) == [0, 1, 1]
    assert first.calls == [("Get", [0]), ("Get", [1])]
