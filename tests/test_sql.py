"""batch.sql: exact statements per round, routing, chunking, safety, failures, transactions, threads.

Every test that takes ``backend`` runs on sqlite3 and on PostgreSQL (see
tests/sql_backends.py: the postgres run needs BATCH_TEST_PG_DSN, which
.ci/run provides).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Generator
from typing import Any

import pytest
from sql_backends import Backend, backend_fixture, sqlite_only_fixture  # noqa: F401  (fixtures)

import batch
from batch.sql import Database, Insert, Query, Select, quote_identifier

HOSTILE = "x'); DROP TABLE users; --"


def marks(b: Backend, n: int) -> str:
    """The placeholders batch.sql must write for n values in the backend's paramstyle."""
    if b.paramstyle == "qmark":
        return ", ".join(["?"] * n)
    assert b.paramstyle == "pyformat"
    return ", ".join(f"%(p{i})s" for i in range(n))


def select_sql(b: Backend, table: str, column: str, n: int) -> str:
    return f'SELECT * FROM "{table}" WHERE "{column}" IN ({marks(b, n)})'


def user(uid: int) -> dict[str, Any]:
    names = {1: ("Ada", "red"), 2: ("Bob", "blue"), 3: ("Cy", "red"), 4: ("Di", None)}
    name, team = names[uid]
    return {"id": uid, "name": name, "team": team}


# -- get / filter: one statement per table and column per round ------------------------

def test_gets_and_filters_on_one_column_become_one_select(backend: Backend) -> None:
    db = Database(backend.connect(), log=True)
    trace = batch.Trace()
    got = batch.execute([
        db.get("users", id=1), db.filter("users", id=2), db.get("users", id=1),
        db.get("posts", id=12), db.filter("posts", author_id=1), db.get("users", id=9),
    ], trace=trace)
    assert got[0] == user(1) and got[2] == user(1)
    assert got[1] == [user(2)]
    assert got[3] == {"id": 12, "author_id": 2, "title": "third"}
    assert sorted(got[4], key=lambda r: r["id"]) == [{"id": 10, "author_id": 1, "title": "first"},
                                                      {"id": 11, "author_id": 1, "title": "second"}]
    assert got[5] is None
    # groups in the order of their first yield; distinct values in first-seen order
    assert db.log == [select_sql(backend, "users", "id", 3), select_sql(backend, "posts", "id", 1),
                      select_sql(backend, "posts", "author_id", 1)]
    assert db.queries == 3
    assert trace.round_count == 1
    assert [(b.name, repr(b.key), b.size) for b in trace.rounds[0].batches] == [
        ("Select", "users.id", 4), ("Select", "posts.id", 1), ("Select", "posts.author_id", 1)]
    assert "users.id" in trace.summary()


def test_a_page_costs_one_statement_per_table_and_column_per_round(backend: Backend) -> None:
    db = Database(backend.connect(), log=True)

    def gen_post(post_id: int) -> Generator[Any, Any, tuple[Any, ...]]:
        post = yield db.get("posts", id=post_id)
        author, comments = yield db.get("users", id=post["author_id"]), \
            db.filter("comments", post_id=post_id)
        return post["title"], author["name"], sorted(c["body"] for c in comments)

    trace = batch.Trace()
    page = batch.execute([gen_post(10), gen_post(11), gen_post(12)], trace=trace)
    assert page == [("first", "Ada", ["meh", "nice"]), ("second", "Ada", []), ("third", "Bob", ["ok"])]
    assert trace.round_count == 2
    assert db.log == [select_sql(backend, "posts", "id", 3),
                      select_sql(backend, "users", "id", 2),      # authors 1, 1, 2: deduped
                      select_sql(backend, "comments", "post_id", 3)]


def test_missing_rows_give_none_and_empty_lists(backend: Backend) -> None:
    db = Database(backend.connect())
    assert batch.execute([db.get("users", id=99), db.filter("posts", author_id=99)]) == [None, []]


def test_each_operation_gets_its_own_row_dicts(backend: Backend) -> None:
    db = Database(backend.connect(), log=True)
    a, b, c = batch.execute([db.get("users", id=1), db.get("users", id=1), db.filter("users", id=1)])
    a["name"] = "changed"
    assert b == user(1) and c == [user(1)]
    assert b is not c[0]
    assert len(db.log or []) == 1


def test_get_on_a_column_that_is_not_unique_fails_only_that_get(backend: Backend) -> None:
    db = Database(backend.connect())
    reds, bob, red = batch.execute(batch.settled([
        db.filter("users", team="red"), db.get("users", id=2), db.get("users", team="red")]))
    assert sorted(r["id"] for r in reds) == [1, 3]
    assert bob == user(2)
    assert isinstance(red, LookupError)
    assert str(red) == ("db.get('users', team='red') matched 2 rows; get is for a unique column, "
                        "use db.filter('users', team=...) for a list")


def test_values_over_the_parameter_limit_are_chunked_in_one_round(backend: Backend) -> None:
    db = Database(backend.connect(), max_params=2, log=True)
    trace = batch.Trace()
    got = batch.execute([db.get("users", id=i) for i in (1, 2, 3, 1, 4, 5)], trace=trace)
    assert got == [user(1), user(2), user(3), user(1), user(4), None]
    assert db.log == [select_sql(backend, "users", "id", 2), select_sql(backend, "users", "id", 2),
                      select_sql(backend, "users", "id", 1)]
    assert trace.round_count == 1 and len(trace.batches) == 1


def test_default_parameter_limit_comes_from_the_driver(backend: Backend) -> None:
    conn = backend.connect()
    if backend.name == "sqlite":
        expected = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    else:
        expected = 65535
    assert Database(conn).max_params == expected
    assert Database(conn, max_params=50).max_params == 50


def test_a_large_in_list_under_the_default_limit_is_one_statement(backend: Backend) -> None:
    db = Database(backend.connect(), log=True)
    got = batch.execute([db.get("users", id=i) for i in range(1, 1201)])
    assert got[:4] == [user(1), user(2), user(3), user(4)] and got[4:] == [None] * 1196
    assert db.log == [select_sql(backend, "users", "id", 1200)]


def test_gets_of_two_databases_are_never_merged(backend: Backend) -> None:
    db1, db2 = Database(backend.connect(), log=True), Database(backend.connect(), log=True)
    assert batch.execute([db1.get("users", id=1), db2.get("users", id=2)]) == [user(1), user(2)]
    assert db1.log == [select_sql(backend, "users", "id", 1)]
    assert db2.log == [select_sql(backend, "users", "id", 1)]


# -- values are bound, names are checked ---------------------------------------------------

def test_hostile_strings_are_stored_and_returned_verbatim(backend: Backend) -> None:
    db = Database(backend.connect(), log=True)
    batch.execute(db.insert("users", {"id": 7, "name": HOSTILE, "team": "%(p0)s ? %s '; --"}))
    by_name, by_id, raw = batch.execute([
        db.get("users", name=HOSTILE), db.get("users", id=7),
        db.query(f"SELECT name FROM users WHERE name = {backend.mark}", (HOSTILE,))])
    assert by_name == by_id == {"id": 7, "name": HOSTILE, "team": "%(p0)s ? %s '; --"}
    assert raw == [{"name": HOSTILE}]
    assert backend.committed("SELECT count(*) FROM users") == [(5,)]
    assert not any("DROP" in sql or "'" in sql for sql in db.log or [])


@pytest.mark.parametrize("table, column, what, bad", [
    ("users; DROP TABLE users", "id", "table", "'users; DROP TABLE users'"),
    ("users", "id OR 1=1", "column", "'id OR 1=1'"),
    ('users"', "id", "table", "'users\"'"),
    ("1users", "id", "table", "'1users'"),
    ("", "id", "table", "''"),
    ("naïve", "id", "table", "'naïve'"),
    ("a.b.c", "id", "table", "'a.b.c'"),
    ("users", "main.id", "column", "'main.id'"),
    ("users\n", "id", "table", "'users\\\\n'"),
])
def test_bad_identifiers_raise_before_any_sql(sqlite_only: Backend, table: str, column: str,
                                              what: str, bad: str) -> None:
    db = Database(sqlite_only.connect(), log=True)
    for make in (db.get, db.filter):
        with pytest.raises(ValueError, match=f"^batch.sql: {what} name {bad} is not a valid identifier: "
                                             "use ASCII letters, digits and _, not starting with a digit"):
            make(table, **{column: 1})
    with pytest.raises(ValueError, match=f"{what} name {bad} is not a valid identifier"):
        db.insert(table, {column: 1})
    assert db.queries == 0 and db.log == []
    assert sqlite_only.committed("SELECT count(*) FROM users") == [(4,)]


def test_a_schema_qualified_table_is_quoted_part_by_part(sqlite_only: Backend) -> None:
    db = Database(sqlite_only.connect(), log=True)
    assert batch.execute(db.get("main.users", id=1)) == user(1)
    assert db.log == ['SELECT * FROM "main"."users" WHERE "id" IN (?)']
    assert quote_identifier("order", "column") == '"order"'


class Sneaky(str):
    """A name whose value is a valid identifier but whose formatting is not (issue 15 item 11)."""

    def __format__(self, spec: str) -> str:
        return 'id" IN (SELECT 1) OR "id'

    def __str__(self) -> str:
        return 'id" IN (SELECT 1) OR "id'

    def split(self, sep: str | None = None, maxsplit: int = -1) -> list[str]:   # type: ignore[override]
        return ["users"]


def test_a_str_subclass_name_goes_into_the_statement_as_its_exact_text(sqlite_only: Backend) -> None:
    db = Database(sqlite_only.connect(), log=True)
    assert batch.execute(db.filter("users", **{Sneaky("id"): 2})) == [user(2)]
    assert batch.execute(db.get(Sneaky("users"), id=1)) == user(1)
    batch.execute(db.insert("users", {"id": 7, "name": "Eve", Sneaky("team"): "green"}))
    assert db.log == [select_sql(sqlite_only, "users", "id", 1), select_sql(sqlite_only, "users", "id", 1),
                      'INSERT INTO "users" ("id", "name", "team") VALUES (?, ?, ?)']
    assert quote_identifier(Sneaky("id"), "column") == '"id"'
    assert type(quote_identifier(Sneaky("id"), "column")) is str


def test_a_str_subclass_is_checked_by_its_value_not_by_its_methods(sqlite_only: Backend) -> None:
    db = Database(sqlite_only.connect(), log=True)
    with pytest.raises(ValueError, match=r"^batch.sql: table name 'users; DROP TABLE users' is not a valid "
                                         r"identifier"):
        db.get(Sneaky("users; DROP TABLE users"), id=1)     # its split() says "users"
    assert db.queries == 0 and db.log == []


def test_argument_mistakes_are_clear(sqlite_only: Backend) -> None:
    db = Database(sqlite_only.connect(), log=True)
    with pytest.raises(ValueError, match=r"^batch.sql: db.get\('users', no column\): name exactly one "
                                         r"column and its value, e.g. db.get\('users', id=1\)$"):
        db.get("users")
    with pytest.raises(ValueError, match=r"db.filter\('users', id=1, name='Ada'\): name exactly one column"):
        db.filter("users", id=1, name="Ada")
    with pytest.raises(ValueError, match=r"db.get\('users', team=None\) would never match: SQL's IN "
                                         r"\(...\) does not match NULL; use db.query\(... IS NULL\)"):
        db.get("users", team=None)
    with pytest.raises(TypeError, match=r"the value must be hashable \(rows are routed back by it\), "
                                        r"got list"):
        db.filter("users", id=[1, 2])
    with pytest.raises(ValueError, match=r"row must be a non-empty mapping of column -> value, got \{\}"):
        db.insert("users", {})
    with pytest.raises(TypeError, match=r"params must be a sequence or mapping of values, not a string "
                                        r"\(did you mean \('Ada',\)\?\)"):
        db.query("SELECT * FROM users WHERE name = ?", "Ada")
    with pytest.raises(ValueError, match="sql must be a non-empty string"):
        db.query("  ")
    assert db.queries == 0


def test_database_options_are_checked(sqlite_only: Backend) -> None:
    conn = sqlite_only.connect()
    with pytest.raises(ValueError, match=r"pass a DB-API connection or connect=<a function that opens one>"):
        Database()
    with pytest.raises(ValueError, match=r"pass a DB-API connection or connect="):
        Database(conn, connect=sqlite_only.connect)
    with pytest.raises(TypeError, match=r"connect= must be a function that returns a new connection"):
        Database(connect="app.db")
    with pytest.raises(ValueError, match=r"autocommit=False needs one connection whose transaction you "
                                         r"commit: Database\(conn, autocommit=False\), not connect="):
        Database(connect=sqlite_only.connect, autocommit=False)
    with pytest.raises(ValueError, match=r"paramstyle='dollar' is not a DB-API paramstyle; use one of "
                                         r"qmark, numeric, named, format, pyformat"):
        Database(conn, paramstyle="dollar")
    with pytest.raises(ValueError, match=r"max_params=0 must be a positive int"):
        Database(conn, max_params=0)
    with pytest.raises(ValueError, match=r"latency=-1 must be a number of seconds >= 0"):
        Database(conn, latency=-1)


# -- paramstyles ------------------------------------------------------------------------------

def test_paramstyle_is_read_from_the_driver(backend: Backend) -> None:
    db = Database(backend.connect())
    assert db.paramstyle == backend.paramstyle
    assert Database(connect=backend.connect).paramstyle == backend.paramstyle


def test_an_explicit_paramstyle_is_used(backend: Backend) -> None:
    # sqlite3 also understands :name; psycopg also understands %s
    style, two, three = {"sqlite": ("named", ":p0, :p1", ":p0, :p1, :p2"),
                         "postgres": ("format", "%s, %s", "%s, %s, %s")}[backend.name]
    db = Database(backend.connect(), paramstyle=style, log=True)
    assert batch.execute([db.get("users", id=2), db.get("users", id=3)]) == [user(2), user(3)]
    batch.execute(db.insert("posts", {"id": 20, "author_id": 2, "title": "x"}))
    assert db.log == [f'SELECT * FROM "users" WHERE "id" IN ({two})',
                      f'INSERT INTO "posts" ("id", "author_id", "title") VALUES ({three})']
    assert backend.committed("SELECT title FROM posts WHERE id = 20") == [("x",)]


class RecordingCursor:
    """A DB-API cursor that records what it is given; a SELECT echoes its values as rows."""

    def __init__(self, sent: list[tuple[str, Any]]) -> None:
        self.sent = sent
        self.description: list[tuple[str]] | None = None
        self.rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = ()) -> None:
        self.sent.append((sql, params))
        values = list(params.values()) if isinstance(params, dict) else list(params)
        self.description = [("id",)] if sql.startswith("SELECT") else None
        self.rows = [(v,) for v in values] if self.description else []

    def executemany(self, sql: str, seq: Any) -> None:
        self.sent.append((sql, list(seq)))
        self.description = None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def close(self) -> None:
        pass


class RecordingConnection:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.commits = 0

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self.sent)

    def commit(self) -> None:
        self.commits += 1

    def rollback(self) -> None:
        pass


@pytest.mark.parametrize("style, marks, params", [
    ("qmark", "?, ?", (7, 8)),
    ("numeric", ":1, :2", (7, 8)),
    ("named", ":p0, :p1", {"p0": 7, "p1": 8}),
    ("format", "%s, %s", (7, 8)),
    ("pyformat", "%(p0)s, %(p1)s", {"p0": 7, "p1": 8}),
])
def test_every_dbapi_paramstyle_is_written_and_bound(style: str, marks: str, params: Any) -> None:
    conn = RecordingConnection()
    db = Database(conn, paramstyle=style)
    assert batch.execute([db.get("t", id=7), db.filter("t", id=8), db.get("t", id=7)]) == [
        {"id": 7}, [{"id": 8}], {"id": 7}]
    batch.execute([db.insert("t", {"a": 1, "b": "x"}), db.insert("t", {"a": 2, "b": "y"})])
    rows = [(1, "x"), (2, "y")]
    bound = [dict(zip(("p0", "p1"), r)) for r in rows] if isinstance(params, dict) else rows
    assert conn.sent == [(f'SELECT * FROM "t" WHERE "id" IN ({marks})', params),
                         (f'INSERT INTO "t" ("a", "b") VALUES ({marks})', bound)]
    assert conn.commits == 2      # one transaction per statement


def test_a_driver_without_a_paramstyle_must_be_told() -> None:
    class Conn:   # a connection class from a module that has no paramstyle
        pass

    with pytest.raises(ValueError, match=r"cannot tell the paramstyle of .*Conn connections; pass it, "
                                         r"e.g. Database\(conn, paramstyle='qmark'\)"):
        Database(Conn())
    assert Database(Conn(), paramstyle="qmark").paramstyle == "qmark"
    lazy = Database(connect=Conn)        # a factory is asked when the first statement runs
    for _ in range(2):
        with pytest.raises(ValueError, match=r"cannot tell the paramstyle of .*Conn connections"):
            batch.execute(lazy.get("users", id=1))
    assert lazy.queries == 0


# -- failures ---------------------------------------------------------------------------------

def test_a_failing_statement_fails_only_its_operations(backend: Backend) -> None:
    db = Database(backend.connect(), log=True)
    bad_get, ok, bad_filter, posts = batch.execute(batch.settled([
        db.get("nosuch", id=1), db.get("users", id=1), db.filter("nosuch", id=2),
        db.filter("posts", author_id=2)]))
    assert isinstance(bad_get, backend.error) and bad_get is bad_filter    # one statement, one error
    assert backend.missing_table in str(bad_get)
    assert f"batch.sql: the statement was: {select_sql(backend, 'nosuch', 'id', 2)}" in bad_get.__notes__
    assert ok == user(1)
    assert posts == [{"id": 12, "author_id": 2, "title": "third"}]
    # the connection is still usable (PostgreSQL aborts a transaction after an error)
    assert batch.execute(db.get("users", id=2)) == user(2)


def test_a_failure_reaches_the_waiting_generator(backend: Backend) -> None:
    db = Database(backend.connect())

    def gen() -> Generator[Any, Any, str]:
        try:
            yield db.get("nosuch", id=1)
        except backend.error as exc:
            return f"caught {type(exc).__name__}"
        return "not raised"

    assert batch.execute(gen()).startswith("caught ")


# -- inserts and transactions -------------------------------------------------------------

def test_inserts_of_one_table_and_columns_become_one_executemany(backend: Backend) -> None:
    db = Database(backend.connect(), log=True)
    trace = batch.Trace()
    got = batch.execute([
        db.insert("users", {"id": 5, "name": "Eve", "team": "red"}),
        db.insert("posts", {"id": 30, "author_id": 5, "title": "hello"}),
        db.insert("users", {"team": "blue", "name": "Fay", "id": 6}),   # same columns, other order
        db.insert("users", {"id": 7, "name": "Gus"}),                   # other columns
        db.insert("users", {"id": 8, "name": "Hal", "team": None}),
    ], trace=trace)
    assert got == [None] * 5
    assert db.log == [
        f'INSERT INTO "users" ("id", "name", "team") VALUES ({marks(backend, 3)})',
        f'INSERT INTO "posts" ("id", "author_id", "title") VALUES ({marks(backend, 3)})',
        f'INSERT INTO "users" ("id", "name") VALUES ({marks(backend, 2)})',
    ]
    assert db.queries == 3
    assert [(b.name, repr(b.key), b.size) for b in trace.batches] == [
        ("Insert", "users(id, name, team)", 3), ("Insert", "posts(author_id, id, title)", 1),
        ("Insert", "users(id, name)", 1)]
    # committed: another connection sees them
    assert backend.committed("SELECT id, name, team FROM users WHERE id >= 5 ORDER BY id") == [
        (5, "Eve", "red"), (6, "Fay", "blue"), (7, "Gus", None), (8, "Hal", None)]


@pytest.mark.parametrize("driver_autocommit", [False, True])
def test_a_failed_insert_batch_is_not_half_applied(backend: Backend, driver_autocommit: bool) -> None:
    if backend.name == "sqlite":
        conn = backend.connect(isolation_level=None) if driver_autocommit else backend.connect()
    else:
        conn = backend.connect(autocommit=driver_autocommit)
    db = Database(conn, log=True)
    results = batch.execute(batch.settled([
        db.insert("users", {"id": 10, "name": "new 10"}),
        db.insert("users", {"id": 11, "name": "new 11"}),
        db.insert("users", {"id": 1, "name": "duplicate"}),         # the batch's 3rd row fails
        db.insert("posts", {"id": 40, "author_id": 1, "title": "kept"}),
    ]))
    assert all(isinstance(r, backend.integrity_error) for r in results[:3])
    assert results[0] is results[1] is results[2]
    assert results[3] is None
    assert backend.committed("SELECT id FROM users WHERE id >= 10") == []
    assert backend.committed("SELECT id, title FROM posts WHERE id = 40") == [(40, "kept")]
    # the connection goes on working
    batch.execute(db.insert("users", {"id": 12, "name": "after"}))
    assert backend.committed("SELECT name FROM users WHERE id = 12") == [("after",)]


def test_caller_owned_transaction_with_autocommit_false(backend: Backend) -> None:
    conn = backend.connect()
    db = Database(conn, autocommit=False, log=True)
    results = batch.execute(batch.settled([
        db.insert("users", {"id": 20, "name": "kept until rollback"}),
        db.insert("posts", {"id": 41, "author_id": 1, "title": "p"}),
        db.insert("posts", {"id": 10, "author_id": 1, "title": "duplicate"}),  # fails its batch
    ]))
    assert results[0] is None and isinstance(results[1], backend.integrity_error)
    assert results[1] is results[2]
    # nothing is committed yet: another connection sees none of it
    assert backend.committed("SELECT id FROM users WHERE id = 20") == []
    # a failed read is rolled back to its savepoint too (PostgreSQL would abort the transaction)
    missing, = batch.execute(batch.settled([db.get("nosuch", id=1)]))
    assert isinstance(missing, backend.error)
    # the failed batch was rolled back to its savepoint, the transaction goes on
    assert batch.execute([db.get("users", id=20), db.get("posts", id=41)]) == [
        {"id": 20, "name": "kept until rollback", "team": None}, None]
    conn.commit()
    assert backend.committed("SELECT id FROM users WHERE id = 20") == [(20,)]
    batch.execute(db.insert("users", {"id": 21, "name": "rolled back"}))
    conn.rollback()
    assert backend.committed("SELECT id FROM users WHERE id = 21") == []
    assert db.log is not None and not any("SAVEPOINT" in s for s in db.log)   # control is not logged


def test_a_read_in_a_caller_owned_transaction_sees_its_writes(backend: Backend) -> None:
    conn = backend.connect()
    db = Database(conn, autocommit=False)

    def gen_signup() -> Generator[Any, Any, Any]:
        yield db.insert("users", {"id": 30, "name": "Ida"})
        return (yield db.get("users", id=30))      # the next round sees the row

    assert batch.execute(gen_signup()) == {"id": 30, "name": "Ida", "team": None}
    conn.rollback()
    assert batch.execute(db.get("users", id=30)) is None


# -- raw queries ------------------------------------------------------------------------

def test_queries_run_one_statement_each_in_their_round(backend: Backend) -> None:
    db = Database(backend.connect(), log=True)
    m = backend.mark
    q1 = f"SELECT id, name FROM users WHERE team = {m} ORDER BY id"
    q2 = f"SELECT count(*) AS n FROM posts WHERE author_id = {m}"
    q3 = "SELECT * FROM nosuch"
    trace = batch.Trace()
    reds, count, missing, empty = batch.execute(batch.settled([
        db.query(q1, ("red",)), db.query(q2, [1]), db.query(q3),
        db.query(f"UPDATE users SET team = {m} WHERE id = {m}", ("green", 4))]), trace=trace)
    assert reds == [{"id": 1, "name": "Ada"}, {"id": 3, "name": "Cy"}]
    assert count == [{"n": 2}]
    assert isinstance(missing, backend.error)
    assert empty == []
    assert db.log == [q1, q2, q3, f"UPDATE users SET team = {m} WHERE id = {m}"]
    assert [(b.name, b.size, b.failed) for b in trace.batches] == [("Query", 4, 1)]
    assert backend.committed("SELECT team FROM users WHERE id = 4") == [("green",)]


# -- threads ----------------------------------------------------------------------------------

def test_a_factory_gives_each_worker_thread_its_own_connection(backend: Backend) -> None:
    made: list[tuple[Any, int]] = []
    lock = threading.Lock()

    def connect() -> Any:
        conn = backend.connect()
        with lock:
            made.append((conn, threading.get_ident()))
        return conn

    # the latency keeps both calls of the round busy at once, so the pool uses two threads
    db = Database(connect=connect, latency=0.05)
    with db:
        got = batch.execute([db.get("users", id=1), db.filter("posts", author_id=2)], max_workers=2)
        assert got == [user(1), [{"id": 12, "author_id": 2, "title": "third"}]]
        assert len(made) == 2
        assert len({ident for _conn, ident in made}) == 2
        assert threading.get_ident() not in {ident for _conn, ident in made}
    # a round with one call runs in the calling thread: one more connection, kept for the next
    with Database(connect=connect) as db2:
        assert batch.execute(db2.get("users", id=2)) == user(2)
        assert batch.execute(db2.get("users", id=3)) == user(3)
    assert len(made) == 3 and made[2][1] == threading.get_ident()


def test_one_connection_is_shared_by_worker_threads_one_at_a_time(backend: Backend) -> None:
    kwargs = {"check_same_thread": False} if backend.name == "sqlite" else {}
    db = Database(backend.connect(**kwargs), latency=0.02, log=True)
    started = time.perf_counter()
    got = batch.execute([db.get("users", id=1), db.get("posts", id=10), db.get("comments", id=100)],
                        max_workers=3)
    elapsed = time.perf_counter() - started
    assert got == [user(1), {"id": 10, "author_id": 1, "title": "first"},
                   {"id": 100, "post_id": 10, "body": "nice"}]
    assert db.queries == 3
    assert elapsed >= 0.06        # the lock makes the three statements take turns


def test_factory_connections_are_closed_by_close(sqlite_only: Backend) -> None:
    made: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        made.append(sqlite_only.connect())
        return made[-1]

    db = Database(connect=connect)
    assert batch.execute(db.get("users", id=1)) == user(1)
    db.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        made[0].execute("SELECT 1")
    assert batch.execute(db.get("users", id=2)) == user(2)     # a new connection after close
    assert len(made) == 2
    db.close()


# -- latency, async, repr --------------------------------------------------------------------

def test_latency_is_paid_per_statement(sqlite_only: Backend) -> None:
    db = Database(sqlite_only.connect(), latency=0.03)
    started = time.perf_counter()
    batch.execute([db.get("users", id=1), db.get("users", id=2), db.get("posts", id=10)])
    assert time.perf_counter() - started >= 0.06     # two statements, not three lookups
    assert db.queries == 2


def test_operations_work_with_execute_async(backend: Backend) -> None:
    db = Database(backend.connect(), log=True)

    async def main() -> Any:
        return await batch.execute_async([db.get("users", id=1), db.filter("users", team="blue")])

    assert asyncio.run(main()) == [user(1), [user(2)]]
    assert len(db.log or []) == 2


def test_operations_compare_and_print_like_the_calls_that_made_them(sqlite_only: Backend) -> None:
    db = Database(sqlite_only.connect())
    assert db.get("users", id=1) == db.get("users", id=1)
    assert hash(db.get("users", id=1)) == hash(db.get("users", id=1))
    assert db.get("users", id=1) != db.filter("users", id=1)
    assert db.get("users", id=1) != Database(sqlite_only.connect()).get("users", id=1)
    assert repr(db.filter("posts", author_id=3)) == "db.filter('posts', author_id=3)"
    assert repr(db.insert("users", {"id": 1})) == "db.insert('users', {'id': 1})"
    assert repr(db.query("SELECT 1")) == "db.query('SELECT 1', ())"
    assert isinstance(db.get("users", id=1), Select)
    assert isinstance(db.insert("users", {"id": 1}), Insert)
    assert isinstance(db.query("SELECT 1"), Query)
    assert repr(db) == "<batch.sql.Database sqlite3 (connection, qmark)>"


def test_select_results_can_be_cached_across_rounds(sqlite_only: Backend) -> None:
    db = Database(sqlite_only.connect(), log=True)

    class CachedSelect(Select):
        cache_results = True

    def gen() -> Generator[Any, Any, Any]:
        first = yield CachedSelect(db, "get", "users", {"id": 1})
        again = yield CachedSelect(db, "get", "users", {"id": 1})
        return first, again

    assert batch.execute(gen()) == (user(1), user(1))
    assert db.queries == 1


# -- record and replay, assertions, threads (issue 14) ---------------------------------------

from batch.testing import (  # noqa: E402
    NotRecordedError,
    Recording,
    assert_batches,
    recording,
    replaying,
)


def gen_post_page(db: Database, post_id: int) -> Generator[Any, Any, Any]:
    post = yield db.get("posts", id=post_id)
    author, comments = yield db.get("users", id=post["author_id"]), db.filter("comments", post_id=post_id)
    return post["title"], author["name"], [c["body"] for c in comments]


def test_sql_operations_record_save_load_and_replay_on_another_database(
        sqlite_only: Backend, tmp_path: Any) -> None:
    db = Database(sqlite_only.connect(), log=True)
    with recording() as rec:
        page = batch.execute(gen_post_page(db, 10))
        batch.execute([db.insert("users", {"id": 7, "name": "Eve", "team": None}),
                       db.query("SELECT count(*) AS n FROM users WHERE team = ?", ["red"])])
    assert page == ("first", "Ada", ["nice", "meh"])
    path = tmp_path / "page.rec"
    rec.save(path)                      # the operations hold a connection: saved without it
    loaded = Recording.load(path)
    assert len(loaded) == len(rec) == 5

    other = Database(sqlite_only.connect(), log=True)   # another Database, another connection
    with replaying(loaded), assert_batches([[("Select", 1)], [("Select", 1), ("Select", 1)]]):
        assert batch.execute(gen_post_page(other, 10)) == page
    with replaying(loaded):
        assert batch.execute([other.insert("users", {"team": None, "name": "Eve", "id": 7}),
                              other.query("SELECT count(*) AS n FROM users WHERE team = ?",
                                          ("red",))]) == [None, [{"n": 2}]]
    assert other.log == []              # nothing reached the database


def test_a_loaded_sql_operation_cannot_run_without_a_database(sqlite_only: Backend,
                                                              tmp_path: Any) -> None:
    db = Database(sqlite_only.connect())
    with recording() as rec:
        batch.execute(db.get("users", id=1))
    rec.save(tmp_path / "one.rec")
    (op,) = Recording.load(tmp_path / "one.rec").operations()
    assert repr(op) == "db.get('users', id=1)" and op == op
    with pytest.raises(batch.BatchError, match=r"^batch\.sql: db\.get\('users', id=1\) was loaded "
                                               r"from a saved recording and has no Database; it "
                                               r"can be replayed \(batch\.testing\.replaying\), "
                                               r"not run"):
        batch.execute(op)


def test_named_databases_are_told_apart_in_recordings(sqlite_only: Backend) -> None:
    primary = Database(sqlite_only.connect(), name="primary")
    with recording() as rec:
        batch.execute(primary.get("users", id=1))
    replica = Database(sqlite_only.connect(), name="replica")
    with replaying(rec):
        assert batch.execute(Database(sqlite_only.connect(), name="primary").get("users", id=1)) == user(1)
        with pytest.raises(NotRecordedError):
            batch.execute(replica.get("users", id=1))


def test_a_missing_operation_is_never_shown_equal_to_a_recorded_one(sqlite_only: Backend) -> None:
    @dataclasses.dataclass(frozen=True)
    class Lookup(batch.BatchableOperation[int]):
        key: int
        client: object      # compared by __eq__, not shown by __repr__

        def __repr__(self) -> str:
            return f"Lookup({self.key})"

        @classmethod
        def run_batch(cls, operations: list[Any]) -> list[int]:
            return [op.key for op in operations]

    with recording() as rec:
        batch.execute(Lookup(1, object()))
    with replaying(rec), pytest.raises(NotRecordedError, match=(
            r"Lookup operation Lookup\(1\) was not recorded, but a recorded .*Lookup operation "
            r"prints exactly the same and is not equal to it: .*Lookup\.__eq__ \(or __hash__\) "
            r"compares something its repr does not show")):
        batch.execute(Lookup(1, object()))


def test_assert_batches_matches_sql_batches_by_table_and_column(sqlite_only: Backend) -> None:
    db = Database(sqlite_only.connect())
    with assert_batches([[("Select", "posts.id", 1)],
                         [("Select", "users.id", 1), ("Select", "comments.post_id", 1)]]):
        batch.execute(gen_post_page(db, 10))
    with pytest.raises(AssertionError, match=(
            r"! round 2: expected \[Select\[users\.id\] x1, Select\[posts\.author_id\] x1\], "
            r"got \[Select\[users\.id\] x1, Select\[comments\.post_id\] x1\]")):
        with assert_batches([[("Select", "posts.id", 1)],
                             [("Select", "users.id", 1), ("Select", "posts.author_id", 1)]]):
            batch.execute(gen_post_page(db, 10))


def test_a_default_sqlite_connection_in_worker_threads_says_how_to_fix_it(
        sqlite_only: Backend) -> None:
    db = Database(sqlite_only.connect())   # check_same_thread=True, sqlite3's default
    with pytest.raises(batch.BatchError, match=(
            r"^batch\.sql: this sqlite3 connection was opened in another thread, and sqlite3 "
            r"refuses to use it from this one \(with execute\(\.\.\., max_workers=N\) run_batch "
            r"runs in worker threads\)\. Open it with sqlite3\.connect\(path, "
            r"check_same_thread=False\) .* or pass Database\(connect=lambda: "
            r"sqlite3\.connect\(path\)\) for a connection per worker thread")) as info:
        batch.execute([db.get("users", id=1), db.get("posts", id=10)], max_workers=4)
    assert isinstance(info.value.__cause__, sqlite3.ProgrammingError)
    assert db.queries == 0
    # the same connection still works from its own thread
    assert batch.execute([db.get("users", id=1), db.get("posts", id=10)])[0] == user(1)
