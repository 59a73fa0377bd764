"""logging.getLogger("batch"): one DEBUG line per batch (class, key, size, seconds)."""

from __future__ import annotations

import logging
import re
from collections.abc import Generator
from typing import Any

import pytest

import batch

LINE = re.compile(r"batch (?P<name>\S+) key=(?P<key>.+) size=(?P<size>\d+) "
                  r"seconds=(?P<seconds>\d+\.\d{6})$")


class GetUser(batch.BatchableOperation[str]):
    max_batch_size = 2

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    @classmethod
    def run_batch(cls, operations: list[GetUser]) -> list[str]:
        return [f"user{op.user_id}" for op in operations]


class GetRow(batch.BatchableOperation[int]):
    def __init__(self, table: str, n: int) -> None:
        self.table = table
        self.n = n

    def batch_key(self) -> str:
        return self.table

    @classmethod
    def run_batch(cls, operations: list[GetRow]) -> list[int]:
        return [op.n for op in operations]


class Down(batch.BatchableOperation[int]):
    @classmethod
    def run_batch(cls, operations: list[Down]) -> list[int]:
        raise ConnectionError("down")


def batch_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    out = []
    for rec in caplog.records:
        assert rec.name == "batch" and rec.levelno == logging.DEBUG
        m = LINE.match(rec.getMessage())
        assert m, rec.getMessage()
        out.append(m.groupdict())
    return out


def test_one_debug_line_per_batch(caplog: pytest.LogCaptureFixture) -> None:
    def gen() -> Generator[Any, Any, list[Any]]:
        users = yield [GetUser(1), GetUser(2), GetUser(3), GetRow("posts", 7)]
        row = yield GetRow("users", 1)
        return [*users, row]

    caplog.set_level(logging.DEBUG, logger="batch")
    assert batch.execute(gen()) == ["user1", "user2", "user3", 7, 1]
    lines = batch_lines(caplog)
    assert [(x["name"], x["key"], x["size"]) for x in lines] == [
        ("GetUser.run_batch", "None", "2"),   # max_batch_size=2: two chunks, two calls
        ("GetUser.run_batch", "None", "1"),
        ("GetRow.run_batch", "'posts'", "1"),
        ("GetRow.run_batch", "'users'", "1"),
    ]
    assert all(float(x["seconds"]) < 1 for x in lines)


def test_silent_unless_debug_is_enabled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="batch")
    assert batch.execute([GetUser(1), GetRow("t", 2)]) == ["user1", 2]
    assert caplog.records == []


def test_a_failed_batch_is_one_line_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="batch")
    assert batch.execute(batch.settled([Down(), GetUser(1)]))[1] == "user1"
    assert len(caplog.records) == 2
