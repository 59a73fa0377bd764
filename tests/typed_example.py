"""A typed user module, checked by ``mypy --strict`` in tests/test_typing.py.

Each ``reveal_type(...)`` line carries the type mypy must reveal, after
``# T:``; each line that mypy must refuse carries ``# E: error-code``.  No
other error may be reported.  The module also runs (``main()``), so the
section-13 example of DESIGN.md is checked for types and for results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, reveal_type

import batch


@dataclass(frozen=True)
class User:
    uid: int


@dataclass(frozen=True)
class Page:
    a: User
    b: User
    users: list[User]


class GetUser(batch.BatchableOperation[User]):
    def __init__(self, uid: int) -> None:
        self.uid = uid

    @classmethod
    def run_batch(cls, operations: list[GetUser]) -> list[User]:
        return [User(op.uid) for op in operations]


class GetName(batch.BatchableOperation[str]):
    def __init__(self, uid: int) -> None:
        self.uid = uid

    @classmethod
    def run_batch(cls, operations: list[GetName]) -> list[str | BaseException]:
        return [f"user{op.uid}" if op.uid >= 0 else KeyError(op.uid) for op in operations]


class AsyncCount(batch.BatchableOperation[int]):
    @classmethod
    async def run_batch(cls, operations: list[AsyncCount]) -> list[int]:
        return [len(operations)] * len(operations)


class Layered(batch.BatchableOperation[int]):
    @classmethod
    def run_batch(cls, operations: list[Layered]) -> Generator[Any, Any, list[int]]:
        names = yield [GetName(i) for i in range(len(operations))]
        return [len(n) for n in names]


def gen_user(uid: int) -> batch.Gen[User]:
    user = yield from GetUser(uid)
    if TYPE_CHECKING:
        reveal_type(user)  # T: User
    return user


def gen_page(ids: list[int]) -> batch.Gen[Page]:
    a, b = yield from batch.gather(gen_user(1), GetUser(2))
    users = yield from batch.gather_list([GetUser(i) for i in ids])
    if TYPE_CHECKING:
        reveal_type(a)  # T: User
        reveal_type(b)  # T: User
        reveal_type(users)  # T: list[User]
    return Page(a, b, users)


def gen_mixed() -> batch.Gen[tuple[User, str, int]]:
    both = yield from batch.gather(gen_user(1), GetName(2), Layered())
    if TYPE_CHECKING:
        reveal_type(both)  # T: tuple[User, str, int]
    return both


def gen_many() -> batch.Gen[int]:
    seven = yield from batch.gather(GetName(1), GetName(2), GetName(3), GetName(4),
                                    GetName(5), GetName(6), GetName(7))
    six = yield from batch.gather(GetName(1), GetName(2), GetName(3), GetName(4),
                                  GetName(5), GetUser(6))
    if TYPE_CHECKING:
        reveal_type(seven)  # T: tuple[Any, ...]
        reveal_type(six)  # T: tuple[str, str, str, str, str, User]
    return len(seven) + len(six)


def gen_plain(uid: int) -> Generator[Any, Any, User]:
    """The usual annotation, written out: typed exactly like batch.Gen[User]."""
    user = yield from GetUser(uid)
    return user


def gen_explicit(gens: list[Generator[Any, Any, User]]) -> batch.Gen[int]:
    one = yield from batch.gather(gen_plain(1))
    two = yield from batch.gather(gen_plain(1), GetName(2))
    many = yield from batch.gather_list(gens)
    if TYPE_CHECKING:
        reveal_type(one)  # T: tuple[User]
        reveal_type(two)  # T: tuple[User, str]
        reveal_type(many)  # T: list[User]
        reveal_type(batch.execute(gen_plain(1)))  # T: User
        reveal_type(batch.execute_many(gens))  # T: list[User]
        reveal_type(batch.execute_many(gens, return_exceptions=True))  # T: list[User | BaseException]
        reveal_type(batch.execute_iter(gens))  # T: Iterator[User]
        reveal_type(batch.BatchExecutor.execute(gen_plain(1)))  # T: User
        reveal_type(batch.BatchExecutor.executev(gens))  # T: list[User]
        reveal_type(batch.execute([[GetUser(1)], {"k": GetName(1)}]))  # T: Any
        reveal_type(batch.execute_many([[GetUser(1)], (GetName(2),)]))  # T: list[Any]
        reveal_type(batch.execute(batch.SharedGenerator(gen_plain(1))))  # T: User
    return len(one) + len(two) + len(many)


async def aexplicit(gen: Generator[Any, Any, User]) -> User:
    user = await batch.execute_async(gen)
    if TYPE_CHECKING:
        reveal_type(user)  # T: User
        reveal_type(await batch.execute_many_async([gen]))  # T: list[User]
    return user


def gen_wrong() -> batch.Gen[str]:
    user = yield from GetUser(1)
    if TYPE_CHECKING:
        yield from batch.gather(1)  # E: call-overload
        yield from batch.gather_list([gen_user(1), "not an operation"])  # E: arg-type
    return user  # E: return-value


def gen_shared(shared: batch.SharedGenerator[User]) -> batch.Gen[list[User]]:
    both = yield from batch.gather(shared, shared.gen())
    users = yield from batch.gather_list([shared.gen(), gen_user(3)])
    if TYPE_CHECKING:
        reveal_type(both)  # T: tuple[User, User]
    return [*both, *users]


def main() -> None:
    page: Page = batch.execute(gen_page([3, 4]))
    assert page == Page(User(1), User(2), [User(3), User(4)])
    if TYPE_CHECKING:
        reveal_type(batch.execute(gen_page([3])))  # T: Page
        reveal_type(batch.execute(GetName(1)))  # T: str
        reveal_type(batch.execute([GetUser(1), GetUser(2)]))  # T: list[User]
        reveal_type(batch.execute({"a": GetName(1)}))  # T: dict[str, str]
        reveal_type(batch.execute_many([gen_user(1), gen_user(2)]))  # T: list[User]
        reveal_type(batch.execute_many([GetName(1)], return_exceptions=True))  # T: list[str | BaseException]
        reveal_type(batch.execute_iter(gen_user(i) for i in range(3)))  # T: Iterator[User]
        names = [GetName(-1)]
        reveal_type(batch.execute_iter(names, return_exceptions=True))  # T: Iterator[str | BaseException]
        reveal_type(batch.BatchExecutor.execute(gen_user(1)))  # T: User
        reveal_type(batch.BatchExecutor.executev([GetName(1)]))  # T: list[str]
        reveal_type(batch.BatchExecutor.executeva(GetName(1), GetName(2)))  # T: list[str]
        reveal_type(batch.execute(Layered()))  # T: int
    name: int = batch.execute(GetName(1))  # E: assignment
    assert batch.execute_many([GetName(1), GetName(-2)], return_exceptions=True)[0] == "user1"
    assert batch.execute(gen_mixed()) == (User(1), "user2", 5)
    assert batch.execute(gen_many()) == 13
    assert batch.execute(gen_explicit([gen_plain(5), gen_plain(6)])) == 5
    assert asyncio.run(aexplicit(gen_plain(7))) == User(7)
    shared = batch.SharedGenerator(gen_user(8))
    assert batch.execute(gen_shared(shared)) == [User(8), User(8), User(8), User(3)]
    del name


async def amain() -> None:
    user = await batch.execute_async(gen_user(5))
    count = await batch.execute_async(AsyncCount())
    names = await batch.execute_many_async([GetName(1), GetName(2)])
    settled = await batch.execute_many_async([GetName(-1)], return_exceptions=True)
    if TYPE_CHECKING:
        reveal_type(user)  # T: User
        reveal_type(count)  # T: int
        reveal_type(names)  # T: list[str]
        reveal_type(settled)  # T: list[str | BaseException]
    assert (user, count, names) == (User(5), 1, ["user1", "user2"])
    assert isinstance(settled[0], KeyError)


class WrongResults(batch.BatchableOperation[int]):
    @classmethod
    def run_batch(cls, operations: list[WrongResults]) -> list[str]:  # E: override
        return ["not an int" for _ in operations]


if __name__ == "__main__":
    main()
    asyncio.run(amain())
