"""Database backends for the SQL suite: sqlite3 always, PostgreSQL when a server is given.

``.ci/run`` starts a throwaway PostgreSQL server when ``CI=true`` and exports
``BATCH_TEST_PG_DSN`` (a psycopg connection string).  Without it the
postgres tests skip with the reason shown in pytest's summary (``-rs``) -
except in CI, where a missing server or driver is a failure, so that CI can
never go green by skipping them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PG_DSN_VAR = "BATCH_TEST_PG_DSN"

SCHEMA = [
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, team TEXT)",
    "CREATE TABLE posts (id INTEGER PRIMARY KEY, author_id INTEGER NOT NULL, title TEXT NOT NULL)",
    "CREATE TABLE comments (id INTEGER PRIMARY KEY, post_id INTEGER NOT NULL, body TEXT NOT NULL)",
]
USERS = [(1, "Ada", "red"), (2, "Bob", "blue"), (3, "Cy", "red"), (4, "Di", None)]
POSTS = [(10, 1, "first"), (11, 1, "second"), (12, 2, "third")]
COMMENTS = [(100, 10, "nice"), (101, 10, "meh"), (102, 12, "ok")]


@dataclass
class Backend:
    """One database to run the suite on: how to connect, its placeholders and its errors."""

    name: str
    paramstyle: str
    mark: str                       # the placeholder for one value in raw SQL
    raw_connect: Callable[[], Any]
    error: type[Exception]          # the driver's base Error class
    integrity_error: type[Exception]
    missing_table: str              # a regex of the driver's "no such table" message
    opened: list[Any] = field(default_factory=list)

    def connect(self, **kwargs: Any) -> Any:
        """A new connection (closed at the end of the test)."""
        conn = self.raw_connect(**kwargs)
        self.opened.append(conn)
        return conn

    def reset(self) -> None:
        """Drop and recreate the tables with their seed rows, committed."""
        conn = self.raw_connect()
        try:
            cur = conn.cursor()
            for table in ("users", "posts", "comments", "nosuch"):
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            for ddl in SCHEMA:
                cur.execute(ddl)
            m = self.mark
            cur.executemany(f"INSERT INTO users VALUES ({m}, {m}, {m})", USERS)
            cur.executemany(f"INSERT INTO posts VALUES ({m}, {m}, {m})", POSTS)
            cur.executemany(f"INSERT INTO comments VALUES ({m}, {m}, {m})", COMMENTS)
            conn.commit()
        finally:
            conn.close()

    def committed(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows as another connection sees them: only what was committed."""
        conn = self.raw_connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            conn.close()

    def close_all(self) -> None:
        for conn in self.opened:
            try:
                conn.close()
            except Exception:
                pass
        self.opened.clear()


def sqlite_backend(path: Path) -> Backend:
    def connect(**kwargs: Any) -> sqlite3.Connection:
        return sqlite3.connect(str(path), **kwargs)

    return Backend("sqlite", "qmark", "?", connect, sqlite3.Error, sqlite3.IntegrityError,
                   "no such table: nosuch")


def postgres_backend() -> Backend:
    in_ci = os.environ.get("CI") == "true"
    dsn = os.environ.get(PG_DSN_VAR)
    if not dsn:
        reason = (f"PostgreSQL tests need {PG_DSN_VAR} (a psycopg DSN); "
                  f".ci/run starts a throwaway server and sets it when CI=true")
        if in_ci:
            pytest.fail(f"CI=true but {PG_DSN_VAR} is not set: {reason}")
        pytest.skip(reason)
    try:
        import psycopg
    except ImportError as exc:
        if in_ci:
            pytest.fail(f"CI=true but psycopg does not import ({exc}): install the test extra")
        pytest.skip(f"PostgreSQL tests need psycopg: pip install -e '.[test]' ({exc})")

    def connect(**kwargs: Any) -> Any:
        return psycopg.connect(dsn, **kwargs)

    return Backend("postgres", "pyformat", "%s", connect, psycopg.Error, psycopg.IntegrityError,
                   'relation "nosuch" does not exist')


@pytest.fixture(params=["sqlite", "postgres"], name="backend")
def backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each test runs once per backend on freshly seeded tables."""
    b = sqlite_backend(tmp_path / "suite.db") if request.param == "sqlite" else postgres_backend()
    b.reset()
    try:
        yield b
    finally:
        b.close_all()


@pytest.fixture(name="sqlite_only")
def sqlite_only_fixture(tmp_path: Path) -> Iterator[Backend]:
    """For what only sqlite3 can show (its own limits and modes)."""
    b = sqlite_backend(tmp_path / "suite.db")
    b.reset()
    try:
        yield b
    finally:
        b.close_all()
