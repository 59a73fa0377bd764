"""Seed compatibility (DESIGN.md section 10): code written for the original library.

The original library grouped operations by a ``Batcher`` object that each
operation returned from ``batcher()``, and ran each group through the
batcher's ``gen_batch`` generator, which finished with
``yield GenResult(results)``.  These tests are written the way such code was.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import batch
from batch import BatchableOperation, Batcher, BatchExecutor, GenResult, GenUtils

Gen = Generator[Any, Any, Any]

CALLS: list[tuple[str, list[Any]]] = []


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    CALLS.clear()


class ShardBatcher(Batcher):
    """Groups by shard: two instances for the same shard are equal."""

    def __init__(self, shard: str) -> None:
        self.shard = shard

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShardBatcher) and other.shard == self.shard

    def __hash__(self) -> int:
        return hash(("ShardBatcher", self.shard))

    def gen_batch(self, operations: list[Any]) -> Gen:
        CALLS.append((f"gen_batch[{self.shard}]", [op.key for op in operations]))
        yield GenResult([f"{self.shard}:{op.key}" for op in operations])


class ShardedGet(BatchableOperation[str]):
    """A seed-style operation: it names its batcher, it has no run_batch."""

    def __init__(self, shard: str, key: Any) -> None:
        self.shard = shard
        self.key = key

    def batcher(self) -> Batcher:
        return ShardBatcher(self.shard)  # a new, equal batcher each time


class Plain(BatchableOperation[Any]):
    """A new-style operation in the same program."""

    def __init__(self, key: Any) -> None:
        self.key = key

    @classmethod
    def run_batch(cls, operations: list[Plain]) -> list[Any]:
        CALLS.append(("Plain", [op.key for op in operations]))
        return [op.key for op in operations]


def gen_get(shard: str, key: Any) -> Gen:
    value = yield ShardedGet(shard, key)
    yield GenResult(value)


def test_operations_are_grouped_by_equal_batchers() -> None:
    def gen_page() -> Gen:
        values = yield [gen_get("eu", 1), gen_get("us", 2), ShardedGet("eu", 3), Plain("p"),
                        gen_get("us", 4)]
        yield GenResult(values)

    trace = batch.Trace()
    assert BatchExecutor.execute(gen_page(), trace=trace) == ["eu:1", "us:2", "eu:3", "p", "us:4"]
    # Operations directly in the list are yielded first, then the generators run.
    assert sorted(CALLS) == [("Plain", ["p"]), ("gen_batch[eu]", [3, 1]), ("gen_batch[us]", [2, 4])]
    # Groups go out in the order of their first operation.
    assert len(trace.rounds) == 1
    assert [(b.name, b.size) for b in trace.rounds[0].batches] == [
        ("ShardBatcher", 2), ("Plain", 1), ("ShardBatcher", 2)]


def test_a_batcher_gen_batch_may_yield_operations() -> None:
    class LayeredBatcher(Batcher):
        def __eq__(self, other: object) -> bool:
            return isinstance(other, LayeredBatcher)

        def __hash__(self) -> int:
            return 1

        def gen_batch(self, operations: list[Any]) -> Gen:
            keys = [op.key for op in operations]
            CALLS.append(("gen_batch[layered]", keys))
            rows = yield [Plain(f"row {k}") for k in keys]
            more = yield GenUtils.gen_structured({"n": Plain(len(keys))})
            yield GenResult([f"{row} of {more['n']}" for row in rows])

    class Layered(BatchableOperation[str]):
        def __init__(self, key: Any) -> None:
            self.key = key

        def batcher(self) -> Batcher:
            return LayeredBatcher()

    def gen_other() -> Gen:
        first = yield Plain("other")
        second = yield Plain(f"{first} again")
        yield GenResult(second)

    trace = batch.Trace()
    assert BatchExecutor.executeva(Layered("a"), gen_other(), Layered("b"), trace=trace) == [
        "row a of 2", "other again", "row b of 2"]
    # (A gen_batch body starts once its round's calls are all made.)
    assert CALLS == [
        ("Plain", ["other"]),
        ("gen_batch[layered]", ["a", "b"]),
        ("Plain", ["row a", "row b", "other again"]),
        ("Plain", [2]),
    ]
    assert len(trace.rounds) == 3


def test_gen_batch_may_return_instead_of_yielding_genresult() -> None:
    class ReturnBatcher(Batcher):
        def gen_batch(self, operations: list[Any]) -> Gen:
            CALLS.append(("gen_batch[return]", [op.key for op in operations]))
            return [op.key * 2 for op in operations]
            yield  # pragma: no cover

    batcher = ReturnBatcher()

    class Doubled(BatchableOperation[int]):
        def __init__(self, key: int) -> None:
            self.key = key

        def batcher(self) -> Batcher:
            return batcher  # the same object every time: one group

    assert BatchExecutor.executev([Doubled(1), Doubled(2)]) == [2, 4]
    assert CALLS == [("gen_batch[return]", [1, 2])]


def test_gen_batch_can_fail_single_operations() -> None:
    class PartialBatcher(Batcher):
        def __eq__(self, other: object) -> bool:
            return isinstance(other, PartialBatcher)

        def __hash__(self) -> int:
            return 2

        def gen_batch(self, operations: list[Any]) -> Gen:
            yield GenResult([KeyError(op.key) if op.key < 0 else op.key for op in operations])

    class Partial(BatchableOperation[int]):
        def __init__(self, key: int) -> None:
            self.key = key

        def batcher(self) -> Batcher:
            return PartialBatcher()

    def gen_try(key: int) -> Gen:
        try:
            value = yield Partial(key)
        except KeyError as exc:
            value = f"missing {exc}"
        yield GenResult(value)

    assert BatchExecutor.executeva(gen_try(1), gen_try(-1), gen_try(2)) == [1, "missing -1", 2]


def test_batcher_raising_fails_only_that_operation() -> None:
    class Exploding(BatchableOperation[Any]):
        def __init__(self, key: Any) -> None:
            self.key = key

        def batcher(self) -> Batcher:
            if self.key == "bad":
                raise LookupError("no batcher for 'bad'")
            return ShardBatcher("eu")

    def gen_try(key: str) -> Gen:
        try:
            return (yield Exploding(key))
        except LookupError as exc:
            return f"caught: {exc}"

    assert batch.execute([gen_try("a"), gen_try("bad"), gen_try("c")]) == [
        "eu:a", "caught: no batcher for 'bad'", "eu:c"]
    assert CALLS == [("gen_batch[eu]", ["a", "c"])]


def test_batcher_returning_a_non_batcher_fails_that_operation() -> None:
    class Confused(BatchableOperation[Any]):
        def __init__(self, key: Any) -> None:
            self.key = key

        def batcher(self) -> Any:
            return "eu" if self.key == "bad" else ShardBatcher("eu")

    def gen_try(key: str) -> Gen:
        try:
            return (yield Confused(key))
        except batch.BatchError as exc:
            return str(exc)

    assert batch.execute([gen_try("bad"), gen_try("ok")]) == [
        "test_batcher_returning_a_non_batcher_fails_that_operation.<locals>.Confused.batcher() "
        "returned str; it must return a batch.Batcher instance (or do not override batcher() and "
        "define run_batch instead)",
        "eu:ok"]
    assert CALLS == [("gen_batch[eu]", ["ok"])]


def test_gen_batch_that_is_not_a_generator() -> None:
    class ListBatcher(Batcher):
        def gen_batch(self, operations: list[Any]) -> Any:
            return [1] * len(operations)

    class Op(BatchableOperation[int]):
        _batcher = ListBatcher()

        def batcher(self) -> Batcher:
            return self._batcher

    with pytest.raises(batch.BatchResultError, match=(
            r"ListBatcher\.gen_batch returned list; it must be a generator function that yields "
            r"operations and finishes with `return results` \(one per operation\)")):
        batch.execute([Op(), Op()])


def test_gen_batch_with_the_wrong_number_of_results() -> None:
    class ShortBatcher(Batcher):
        def gen_batch(self, operations: list[Any]) -> Gen:
            yield GenResult(operations[:1])

    class Op(BatchableOperation[Any]):
        _batcher = ShortBatcher()

        def batcher(self) -> Batcher:
            return self._batcher

    with pytest.raises(batch.BatchResultError, match=(
            r"ShortBatcher\.gen_batch returned 1 results for 3 operations; it must return one "
            r"result per operation, in the same order")):
        batch.execute([Op(), Op(), Op()])


def test_batcher_without_gen_batch() -> None:
    class Lazy(Batcher):
        pass

    class Op(BatchableOperation[Any]):
        def batcher(self) -> Batcher:
            return Lazy()

    with pytest.raises(NotImplementedError, match=(
            r"Lazy must define gen_batch\(self, operations\), a generator that finishes with one "
            r"result per operation")):
        batch.execute(Op())


# -- a seed-era program, ported to Python 3 syntax only --------------------------------

USERS = {1: {"name": "Ada", "friends": [2, 3]}, 2: {"name": "Bob", "friends": [1]},
         3: {"name": "Cy", "friends": []}}


class UserBatcher(Batcher):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserBatcher)

    def __hash__(self) -> int:
        return hash(UserBatcher)

    def gen_batch(self, operations: list[Any]) -> Gen:
        ids = [op.user_id for op in operations]
        CALLS.append(("users", ids))
        yield GenResult([USERS.get(i) for i in ids])


class GetUserOp(BatchableOperation[Any]):
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    def batcher(self) -> Batcher:
        return UserBatcher()


user_cache = batch.GeneratorCache()


@batch.cached_generator(user_cache)
def gen_user(user_id: int) -> Gen:
    user = yield GetUserOp(user_id)
    yield GenResult(user)


def gen_friend_names(user_id: int) -> Gen:
    user = yield gen_user(user_id)
    friends = yield [gen_user(f) for f in user["friends"]]
    names = yield GenUtils.gen_structured({"me": user["name"],
                                           "friends": tuple(f["name"] for f in friends)})
    yield GenResult(names)


def gen_nested_count(user_id: int) -> Gen:
    names = yield gen_friend_names(user_id)
    # Seed code sometimes ran a separate execution from inside a generator.
    total = BatchExecutor.execute(GenUtils.gen_identity(len(names["friends"])))
    yield GenResult(total)


def test_a_seed_era_program_runs_unchanged() -> None:
    user_cache.clear()
    assert BatchExecutor.execute(gen_friend_names(1)) == {"me": "Ada", "friends": ("Bob", "Cy")}
    assert CALLS == [("users", [1]), ("users", [2, 3])]
    assert BatchExecutor.executev([gen_friend_names(2), gen_nested_count(1)]) == [
        {"me": "Bob", "friends": ("Ada",)}, 2]
    assert CALLS == [("users", [1]), ("users", [2, 3])]  # all cached by gen_user
    user_cache.clear()
    assert BatchExecutor.executeva(gen_friend_names(3)) == [{"me": "Cy", "friends": ()}]
    assert CALLS[2:] == [("users", [3])]
