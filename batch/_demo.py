"""The demo: the seed's spouse example against an in-memory store, round by round.

(The SQL feed-page demo replaces this once ``batch.sql`` lands.)
"""

from __future__ import annotations

import argparse
from collections.abc import Generator
from typing import Any

from ._api import execute_many
from ._operation import BatchableOperation
from ._trace import Trace

USERS = {i: {"id": i, "name": f"user{i}", "spouse_id": i + 1 if i % 2 == 0 else i - 1}
         for i in range(1, 1001)}
CALLS: list[tuple[str, list[int]]] = []


class GetSpouseId(BatchableOperation[int]):
    """Look up a user's spouse id."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    @classmethod
    def run_batch(cls, operations: list[GetSpouseId]) -> list[int]:
        CALLS.append(("GetSpouseId", [op.user_id for op in operations]))
        return [USERS[op.user_id]["spouse_id"] for op in operations]  # type: ignore[misc]


class GetUser(BatchableOperation[dict[str, Any]]):
    """Load one user row."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    @classmethod
    def run_batch(cls, operations: list[GetUser]) -> list[dict[str, Any]]:
        CALLS.append(("GetUser", [op.user_id for op in operations]))
        return [USERS[op.user_id] for op in operations]


def gen_user(user_id: int) -> Generator[Any, Any, dict[str, Any]]:
    user: dict[str, Any] = yield GetUser(user_id)
    return user


def gen_spouses(user_id: int) -> Generator[Any, Any, tuple[Any, Any]]:
    spouse_id = yield GetSpouseId(user_id)
    user, spouse = yield gen_user(user_id), gen_user(spouse_id)
    return user, spouse


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch")
    parser.add_argument("command", choices=["demo"])
    parser.parse_args(argv)
    roots = [12, 40, 41, 100]
    trace = Trace()
    CALLS.clear()
    pairs = execute_many([gen_spouses(uid) for uid in roots], trace=trace)
    for user, spouse in pairs:
        print(f"{user['name']} is married to {spouse['name']}")
    print(f"\n{len(roots)} call trees, {len(CALLS)} round trips (one at a time: {3 * len(roots)})")
    print(trace.summary())
    return 0
