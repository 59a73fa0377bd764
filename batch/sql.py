"""SQL data sources: batched ``get``/``filter``/``insert``/``query`` over any DB-API 2 connection.

Theory of operation.  :class:`Database` wraps a DB-API 2 connection (or a
factory of them) and hands out *operations*; a batch generator yields them
and the executor groups them per round:

- ``db.get(table, column=value)`` and ``db.filter(table, column=value)`` are
  both :class:`Select` operations whose batch key is ``(db, table, column)``,
  so every get *and* filter on one table and column in one round lands in one
  group and becomes one ``SELECT * FROM "table" WHERE "column" IN (...)``
  over the distinct values (several statements only when the values exceed
  the driver's parameter limit).  Rows come back as dicts and are routed to
  each operation by the value of that column.
- ``db.insert(table, row)`` is an :class:`Insert`; the inserts of one round on
  one table with one set of columns become one ``executemany``.
- ``db.query(sql, params)`` is a :class:`Query`: one statement per operation,
  never merged, run in the round it was yielded in.

Values only ever travel as bound parameters in the driver's ``paramstyle``;
table and column names are validated and double-quoted when the operation
is created, so a bad name is a ``ValueError`` before any SQL is sent.  A
statement that raises fails only the operations it was run for.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import weakref
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

from ._errors import BatchError
from ._operation import BatchableOperation

__all__ = ["Database", "Insert", "Query", "Row", "Select", "quote_identifier"]

Row = dict[str, Any]
"""One result row: column name -> value, in the order of the statement's columns."""

PARAMSTYLES = ("qmark", "numeric", "named", "format", "pyformat")

# Used when the driver does not say: SQLite builds before 3.32 stop at 999
# bound parameters, and no common server accepts fewer.
DEFAULT_MAX_PARAMS = 999
_SERVER_MAX_PARAMS = {"psycopg": 65535, "psycopg2": 65535}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAVEPOINT = "batch_sql"


def quote_identifier(name: object, what: str = "name", *, dotted: bool = False) -> str:
    """Validate a table or column name and return it double-quoted.

    A name is ASCII letters, digits and ``_``, not starting with a digit
    (``dotted=True`` also allows ``schema.table``).  Anything else raises
    ``ValueError`` naming the bad name: names are never escaped, only checked.

    >>> quote_identifier("users", "table")
    '"users"'
    >>> quote_identifier("public.users", "table", dotted=True)
    '"public"."users"'
    >>> quote_identifier("id; DROP TABLE users", "column")
    Traceback (most recent call last):
    ...
    ValueError: batch.sql: column name 'id; DROP TABLE users' is not a valid identifier: use ASCII letters, \
digits and _, not starting with a digit
    """
    text = _exact(name)
    parts = text.split(".", 1) if dotted and text is not None else [text]
    if not all(p is not None and _IDENTIFIER.fullmatch(p) for p in parts):
        extra = " (or schema.table)" if dotted else ""
        raise ValueError(
            f"batch.sql: {what} name {name!r} is not a valid identifier: use ASCII letters, "
            f"digits and _, not starting with a digit{extra}")
    return ".".join(f'"{p}"' for p in parts)


def _exact(name: object) -> str | None:
    """The plain ``str`` holding a name's characters, or None for a non-string.

    A ``str`` subclass may override ``split``, ``__format__`` or ``__str__`` so
    that what is checked differs from what would be written into the
    statement; only its characters, as a plain ``str``, are used.
    """
    return str.__str__(name) if isinstance(name, str) else None


def _placeholders(style: str, n: int) -> list[str]:
    if style == "qmark":
        return ["?"] * n
    if style == "format":
        return ["%s"] * n
    if style == "numeric":
        return [f":{i + 1}" for i in range(n)]
    if style == "named":
        return [f":p{i}" for i in range(n)]
    return [f"%(p{i})s" for i in range(n)]  # pyformat


def _bind(style: str, values: Sequence[Any]) -> Sequence[Any] | dict[str, Any]:
    if style in ("named", "pyformat"):
        return {f"p{i}": v for i, v in enumerate(values)}
    return tuple(values)


def _driver_module(conn: Any) -> Any:
    return sys.modules.get(type(conn).__module__.split(".")[0])


def _driver_autocommits(conn: Any) -> bool:
    """True when the driver commits each statement by itself (no implicit transaction)."""
    if getattr(conn, "autocommit", None) is True:  # psycopg, sqlite3 >= 3.12 in PEP 249 mode
        return True
    # sqlite3 in its legacy mode: isolation_level None means autocommit.
    return type(conn).__module__ == "sqlite3" and getattr(conn, "isolation_level", "") is None


class _Key:
    """A batch key: equal for operations of one database and one target; short repr for traces."""

    __slots__ = ("db", "parts", "label", "_hash")

    def __init__(self, db: Database, parts: tuple[Hashable, ...], label: str) -> None:
        self.db = db
        self.parts = parts
        self.label = label
        self._hash = hash((id(db), parts))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, _Key) and self.db is other.db and self.parts == other.parts)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return self.label


class _Conn:
    """A connection opened by a factory; closed when the thread that owns it ends."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # e.g. sqlite3 refuses another thread's connection; gc closes it
                pass

    def __del__(self) -> None:
        self.close()


class Database:
    """A SQL data source: hands out batchable ``get``/``filter``/``insert``/``query`` operations.

    ``Database(connection)`` uses one DB-API 2 connection, from one thread at
    a time (a lock guards it; with ``max_workers`` the calls of a round then
    take turns).  ``Database(connect=factory)`` calls ``factory()`` once per
    thread that runs statements, so the calls of one round run side by side
    with ``max_workers``; the connections close when their thread ends or on
    :meth:`close`.

    Options:

    - ``paramstyle``: the driver's placeholder style (``qmark``, ``numeric``,
      ``named``, ``format``, ``pyformat``); read from the driver module by default.
    - ``max_params``: bound parameters per statement; a larger ``IN`` list is
      split into several statements.  Default: what the driver reports
      (sqlite3's ``SQLITE_LIMIT_VARIABLE_NUMBER``; 65535 for psycopg), else 999.
    - ``autocommit`` (default True): the Database owns transactions and each
      statement is one: committed when it succeeds, rolled back when it fails.
      ``autocommit=False``: the caller owns the transaction (one connection
      only); each statement runs inside a ``SAVEPOINT``, so a failed one is
      undone without spoiling the caller's transaction, and nothing is
      committed until the caller commits.
    - ``latency``: seconds to sleep before each statement, to see what a
      networked database would cost (the demo's ``--simulated-latency-ms``).
    - ``log=True``: keep every statement's SQL in :attr:`log`.

    :attr:`queries` counts the statements run for operations (transaction
    control such as ``COMMIT`` or ``SAVEPOINT`` is not counted).

    >>> import sqlite3, batch
    >>> conn = sqlite3.connect(":memory:")
    >>> _ = conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    >>> db = Database(conn, log=True)
    >>> batch.execute([db.insert("users", {"id": 1, "name": "Ada"}),
    ...                db.insert("users", {"id": 2, "name": "Bob"})])
    [None, None]
    >>> batch.execute([db.get("users", id=2), db.filter("users", id=1), db.get("users", id=3)])
    [{'id': 2, 'name': 'Bob'}, [{'id': 1, 'name': 'Ada'}], None]
    >>> db.log
    ['INSERT INTO "users" ("id", "name") VALUES (?, ?)', 'SELECT * FROM "users" WHERE "id" IN (?, ?, ?)']
    """

    def __init__(self, connection: Any = None, *, connect: Any = None, paramstyle: str | None = None,
                 max_params: int | None = None, autocommit: bool = True, latency: float = 0.0,
                 log: bool = False, name: str | None = None) -> None:
        if (connection is None) == (connect is None):
            raise ValueError("batch.sql: pass a DB-API connection or connect=<a function that opens one>, "
                             "e.g. Database(sqlite3.connect('app.db')) or "
                             "Database(connect=lambda: psycopg.connect(dsn))")
        if connect is not None and not callable(connect):
            raise TypeError(f"batch.sql: connect= must be a function that returns a new connection, "
                            f"got {connect!r}")
        if connect is not None and not autocommit:
            raise ValueError("batch.sql: autocommit=False needs one connection whose transaction you "
                             "commit: Database(conn, autocommit=False), not connect=")
        if paramstyle is not None and paramstyle not in PARAMSTYLES:
            raise ValueError(f"batch.sql: paramstyle={paramstyle!r} is not a DB-API paramstyle; "
                             f"use one of {', '.join(PARAMSTYLES)}")
        if max_params is not None and (isinstance(max_params, bool) or not isinstance(max_params, int)
                                       or max_params < 1):
            raise ValueError(f"batch.sql: max_params={max_params!r} must be a positive int")
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
            raise ValueError(f"batch.sql: latency={latency!r} must be a number of seconds >= 0")
        self._conn = connection
        self._connect = connect
        self._lock = threading.Lock()          # guards the single connection
        self._stats = threading.Lock()         # guards queries/log across worker threads
        self._local = threading.local()        # the factory's connection of this thread
        self._opened: weakref.WeakSet[_Conn] = weakref.WeakSet()
        self._keys: dict[tuple[str, str, Hashable], _Key] = {}
        self._paramstyle = paramstyle
        self._max_params = max_params
        self.autocommit = autocommit
        self.latency = float(latency)
        self.name = name
        # What recordings know this database by: the name you gave, never the
        # connection (see Select._record_key).
        self._source = name
        self.queries = 0
        """Statements run for operations so far (set it to 0 to start counting again)."""
        self.log: list[str] | None = [] if log else None
        """The SQL of every statement run, in order, when ``log=True``; else None."""
        if connection is not None:
            self._learn(connection)

    # -- operations ---------------------------------------------------------

    def get(self, table: str, /, **where: Any) -> BatchableOperation[Row | None]:
        """The one row whose ``column`` equals ``value``, as a dict, or None.

        ``db.get("users", id=1)``.  It is meant for a unique column: when
        several rows match, the operation fails with ``LookupError`` (use
        :meth:`filter`).
        """
        return cast("BatchableOperation[Row | None]", Select(self, "get", table, where))

    def filter(self, table: str, /, **where: Any) -> BatchableOperation[list[Row]]:
        """Every row whose ``column`` equals ``value``, as a list of dicts (maybe empty).

        ``db.filter("comments", post_id=7)``.  Rows come in the order the
        database returned them for the merged statement, which SQL leaves
        unspecified: sort them in your generator when order matters.
        """
        return cast("BatchableOperation[list[Row]]", Select(self, "filter", table, where))

    def insert(self, table: str, row: Mapping[str, Any]) -> BatchableOperation[None]:
        """Insert one row (a mapping of column -> value); the result is None.

        The inserts of one round into one table with the same columns become
        one ``executemany``, all-or-nothing: if it fails, none of its rows is
        kept and each of its operations fails with the driver's error.
        """
        return cast("BatchableOperation[None]", Insert(self, table, row))

    def query(self, sql: str,
              params: Sequence[Any] | Mapping[str, Any] = ()) -> BatchableOperation[list[Row]]:
        """Run one raw statement in the driver's paramstyle; the result is its rows as dicts.

        Never merged with other operations: each query is its own statement
        (all the queries of a round go out in one ``run_batch`` call, one
        after the other).  A statement without a result set gives ``[]``.
        """
        return cast("BatchableOperation[list[Row]]", Query(self, sql, params))

    def _key(self, kind: str, table: str, columns: tuple[str, ...]) -> _Key:
        """The batch key of a select or insert; names are validated the first time they are seen.

        An insert's key holds its set of columns, so rows given in another
        column order still share an ``executemany``.
        """
        parts = (kind, table, columns[0] if kind == "select" else frozenset(columns))
        try:
            return self._keys[parts]
        except (KeyError, TypeError):   # TypeError: an unhashable "name", refused just below
            pass
        quote_identifier(table, "table", dotted=True)
        for column in columns:
            quote_identifier(column, "column")
        label = (f"{table}.{columns[0]}" if kind == "select"
                 else f"{table}({', '.join(sorted(columns))})")
        key = self._keys[parts] = _Key(self, parts, label)
        return key

    # -- connections --------------------------------------------------------

    @property
    def paramstyle(self) -> str:
        """The placeholder style used in generated SQL (learnt from the first connection)."""
        if self._paramstyle is None:
            with self._connection():
                pass
        assert self._paramstyle is not None
        return self._paramstyle

    @property
    def max_params(self) -> int:
        """Bound parameters per statement; larger ``IN`` lists are split."""
        if self._max_params is None:
            with self._connection():
                pass
        assert self._max_params is not None
        return self._max_params

    def _learn(self, conn: Any) -> None:
        """Read paramstyle and parameter limit from the first connection seen."""
        module = _driver_module(conn)
        if self._paramstyle is None:
            style = getattr(module, "paramstyle", None)
            if style not in PARAMSTYLES:
                raise ValueError(
                    f"batch.sql: cannot tell the paramstyle of {type(conn).__module__}."
                    f"{type(conn).__qualname__} connections; pass it, "
                    f"e.g. Database(conn, paramstyle='qmark')")
            self._paramstyle = style
        if self._max_params is None:
            limit = None
            getlimit = getattr(conn, "getlimit", None)
            variable_number = getattr(module, "SQLITE_LIMIT_VARIABLE_NUMBER", None)
            if getlimit is not None and variable_number is not None:
                try:
                    limit = int(getlimit(variable_number))
                except Exception:
                    limit = None
            if limit is None:
                limit = _SERVER_MAX_PARAMS.get(type(conn).__module__.split(".")[0], DEFAULT_MAX_PARAMS)
            self._max_params = limit
        if self.name is None:
            self.name = type(conn).__module__.split(".")[0]

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        if self._connect is None:
            with self._lock:
                yield self._conn
            return
        owned: _Conn | None = getattr(self._local, "conn", None)
        if owned is None or owned.conn is None:
            owned = _Conn(self._connect())
            self._local.conn = owned
            with self._stats:
                self._opened.add(owned)
        if self._paramstyle is None or self._max_params is None or self.name is None:
            with self._stats:
                self._learn(owned.conn)
        yield owned.conn

    def close(self) -> None:
        """Close the connections the factory opened (a connection you passed in is yours to close).

        A connection that its driver refuses to close from this thread (sqlite3
        made in another thread) is closed when that thread ends.
        """
        with self._stats:
            opened = list(self._opened)
            self._opened.clear()
        for owned in opened:
            owned.close()
        self._local = threading.local()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        how = "connect=" if self._connect is not None else "connection"
        return f"<batch.sql.Database {self.name or '?'} ({how}, {self._paramstyle or '?'})>"

    # -- running statements -------------------------------------------------

    def _execute(self, sql: str, params: Any, *, many: bool = False) -> tuple[list[str], list[Any]]:
        """Run one statement under the transaction policy; return column names and rows.

        An exception leaves the connection usable: the statement's work is
        rolled back (or rolled back to the savepoint) before it propagates.
        """
        with self._connection() as conn:
            try:
                cur = conn.cursor()
            except Exception as exc:
                if _wrong_thread(conn, exc):
                    raise BatchError(_WRONG_THREAD) from exc
                raise
            with self._stats:
                self.queries += 1
                if self.log is not None:
                    self.log.append(sql)
            if self.latency:
                time.sleep(self.latency)
            try:
                if self.autocommit:
                    return self._own_transaction(conn, cur, sql, params, many)
                return self._in_savepoint(conn, cur, sql, params, many)
            finally:
                try:
                    cur.close()
                except Exception:
                    pass

    @staticmethod
    def _statement(cur: Any, sql: str, params: Any, many: bool) -> tuple[list[str], list[Any]]:
        if many:
            cur.executemany(sql, params)
        else:
            cur.execute(sql, params)
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()

    def _own_transaction(self, conn: Any, cur: Any, sql: str, params: Any,
                         many: bool) -> tuple[list[str], list[Any]]:
        # A driver in autocommit mode would commit executemany row by row, so
        # a failure half-way would keep the first rows: bracket it explicitly.
        explicit = many and _driver_autocommits(conn)
        try:
            if explicit:
                cur.execute("BEGIN")
            result = self._statement(cur, sql, params, many)
            if explicit:
                cur.execute("COMMIT")
            else:
                conn.commit()   # also ends the read transaction a driver may have opened
            return result
        except Exception as exc:
            exc.add_note(f"batch.sql: the statement was: {sql}")
            try:
                if explicit:
                    cur.execute("ROLLBACK")
                else:
                    conn.rollback()
            except Exception as again:
                exc.add_note(f"batch.sql: rolling back failed too: {again!r}")
            raise

    def _in_savepoint(self, conn: Any, cur: Any, sql: str, params: Any,
                      many: bool) -> tuple[list[str], list[Any]]:
        # The caller owns the transaction.  sqlite3 may not have opened one
        # yet, and there a RELEASE of the outermost savepoint would COMMIT:
        # open it first so that only the caller's commit() commits.
        if getattr(conn, "in_transaction", None) is False:
            cur.execute("BEGIN")
        cur.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            result = self._statement(cur, sql, params, many)
        except Exception as exc:
            exc.add_note(f"batch.sql: the statement was: {sql}")
            try:
                cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            except Exception as again:
                exc.add_note(f"batch.sql: rolling back to the savepoint failed too: {again!r}")
            raise
        cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return result

    # -- the three batch shapes ---------------------------------------------

    def _select(self, table: str, column: str, operations: list[Select]) -> list[Any]:
        style, limit = self.paramstyle, self.max_params
        values = list(dict.fromkeys(op.value for op in operations))   # distinct, first-seen order
        found: dict[Any, list[Row] | Exception] = {}
        head = (f"SELECT * FROM {quote_identifier(table, 'table', dotted=True)} "
                f"WHERE {quote_identifier(column)} IN (")
        for start in range(0, len(values), limit):
            chunk = values[start:start + limit]
            sql = head + ", ".join(_placeholders(style, len(chunk))) + ")"
            try:
                names, rows = self._execute(sql, _bind(style, chunk))
                at = _column_index(names, column, sql)
            except Exception as exc:
                for v in chunk:
                    found[v] = exc
                continue
            groups: dict[Any, list[Row]] = {v: [] for v in chunk}
            for raw in rows:
                bucket = groups.get(raw[at])
                if bucket is not None:   # a value the driver returns in another type is not routed
                    bucket.append(dict(zip(names, raw)))
            found.update(groups)
        results: list[Any] = []
        handed: set[Any] = set()
        for op in operations:
            rows_or_exc = found[op.value]
            if isinstance(rows_or_exc, Exception):
                results.append(rows_or_exc)
                continue
            # Each operation gets dicts of its own, so mutating one never shows in another.
            rows_for_op = rows_or_exc if op.value not in handed else [dict(r) for r in rows_or_exc]
            handed.add(op.value)
            if op.kind == "filter":
                results.append(list(rows_for_op))
            elif not rows_for_op:
                results.append(None)
            elif len(rows_for_op) == 1:
                results.append(rows_for_op[0])
            else:
                results.append(LookupError(
                    f"{op!r} matched {len(rows_for_op)} rows; get is for a unique column, "
                    f"use db.filter({table!r}, {column}=...) for a list"))
        return results

    def _insert(self, table: str, operations: list[Insert]) -> list[Any]:
        columns = list(operations[0].row)
        marks = ", ".join(_placeholders(self.paramstyle, len(columns)))
        sql = (f"INSERT INTO {quote_identifier(table, 'table', dotted=True)} "
               f"({', '.join(quote_identifier(c) for c in columns)}) VALUES ({marks})")
        style = self.paramstyle
        params = [_bind(style, [op.row[c] for c in columns]) for op in operations]
        try:
            self._execute(sql, params, many=True)
        except Exception as exc:
            return [exc] * len(operations)
        return [None] * len(operations)

    def _query(self, operations: list[Query]) -> list[Any]:
        results: list[Any] = []
        for op in operations:
            try:
                names, rows = self._execute(op.sql, op.params)
            except Exception as exc:
                results.append(exc)
                continue
            results.append([dict(zip(names, raw)) for raw in rows])
        return results


_WRONG_THREAD = (
    "batch.sql: this sqlite3 connection was opened in another thread, and sqlite3 refuses to "
    "use it from this one (with execute(..., max_workers=N) run_batch runs in worker threads). "
    "Open it with sqlite3.connect(path, check_same_thread=False) (the Database lets one thread "
    "use it at a time), or pass Database(connect=lambda: sqlite3.connect(path)) for a "
    "connection per worker thread"
)


def _wrong_thread(conn: Any, exc: Exception) -> bool:
    """Whether ``exc`` is sqlite3 refusing a connection made in another thread."""
    return (type(conn).__module__ == "sqlite3" and type(exc).__name__ == "ProgrammingError"
            and "thread" in str(exc))


def _detached(cls: type[Any], state: dict[str, Any]) -> Any:
    """Rebuild a pickled ``batch.sql`` operation without its Database (see ``__reduce__``).

    Such an operation is a recording's key: it compares by what it asks and
    can be replayed, but not run.
    """
    op = object.__new__(cls)
    op.db = None
    op._key = None
    for name, value in state.items():
        setattr(op, name, value)
    return op


def _no_database(op: Any) -> BatchError:
    return BatchError(f"batch.sql: {op!r} was loaded from a saved recording and has no "
                      f"Database; it can be replayed (batch.testing.replaying), not run")


def _frozen_items(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(mapping.items(), key=lambda kv: kv[0]))


def _column_index(names: list[str], column: str, sql: str) -> int:
    if column in names:
        return names.index(column)
    folded = [n.lower() for n in names]    # SQLite keeps the declared case: "ID" for id
    if column.lower() in folded:
        return folded.index(column.lower())
    raise LookupError(f"batch.sql: the result of {sql} has no column {column!r} (columns: {names})")


def _one_column(method: str, table: str, where: dict[str, Any]) -> tuple[str, Any]:
    if len(where) != 1:
        got = ", ".join(f"{k}={v!r}" for k, v in where.items()) or "no column"
        raise ValueError(f"batch.sql: db.{method}({table!r}, {got}): name exactly one column and its "
                         f"value, e.g. db.{method}({table!r}, id=1)")
    ((column, value),) = where.items()
    # The plain text of the name: it is what the statement holds and what result columns match.
    return _exact(column) or column, value


class Select(BatchableOperation[Any]):
    """``db.get`` / ``db.filter``: rows of ``table`` whose ``column`` equals ``value``.

    Gets and filters share this class and are grouped by ``(db, table,
    column)``, so one round's lookups on one column become one statement.
    Two selects are equal when database, kind, table, column and value are.
    """

    __slots__ = ("db", "kind", "table", "column", "value", "_key", "_source")

    def __init__(self, db: Database, kind: str, table: str, where: dict[str, Any]) -> None:
        column, value = _one_column(kind, table, where)
        key = db._key("select", table, (column,))
        if value is None:
            raise ValueError(f"batch.sql: db.{kind}({table!r}, {column}=None) would never match: "
                             f"SQL's IN (...) does not match NULL; use db.query(... IS NULL)")
        try:
            hash(value)
        except TypeError:
            raise TypeError(f"batch.sql: db.{kind}({table!r}, {column}={value!r}): the value must be "
                            f"hashable (rows are routed back by it), got {type(value).__name__}") from None
        self.db = db
        self.kind = kind
        self.table = table
        self.column = column
        self.value = value
        self._key = key
        self._source = db._source

    def batch_key(self) -> Hashable:
        """``(db, table, column)``: gets and filters on one column share a statement."""
        return self._key

    @classmethod
    def run_batch(cls, operations: list[Select]) -> list[Any]:
        """One ``SELECT ... IN (...)`` (per parameter-limit chunk); rows routed to each operation."""
        first = operations[0]
        if first.db is None:
            raise _no_database(first)
        return first.db._select(first.table, first.column, operations)

    def _record_key(self) -> Hashable:
        """What a recording matches on: what is asked, and the Database's ``name=``, not its connection."""
        return (self._source, self.kind, self.table, self.column, self.value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_detached, (type(self), {"kind": self.kind, "table": self.table,
                                         "column": self.column, "value": self.value,
                                         "_source": self._source}))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Select) and self.db is other.db and self.kind == other.kind
                and self.table == other.table and self.column == other.column and self.value == other.value)

    def __hash__(self) -> int:
        return hash((id(self.db), self.kind, self.table, self.column, self.value))

    def __repr__(self) -> str:
        return f"db.{self.kind}({self.table!r}, {self.column}={self.value!r})"


class Insert(BatchableOperation[None]):
    """``db.insert``: one row; grouped by ``(db, table, columns)`` into one ``executemany``."""

    __slots__ = ("db", "table", "row", "_key", "_source")

    def __init__(self, db: Database, table: str, row: Mapping[str, Any]) -> None:
        if not isinstance(row, Mapping) or not row:
            quote_identifier(table, "table", dotted=True)
            raise ValueError(f"batch.sql: db.insert({table!r}, row): row must be a non-empty mapping "
                             f"of column -> value, got {row!r}")
        self.db = db
        self.table = table
        self.row = dict(row)
        self._key = db._key("insert", table, tuple(self.row))
        self._source = db._source

    def batch_key(self) -> Hashable:
        """``(db, table, set of columns)``."""
        return self._key

    @classmethod
    def run_batch(cls, operations: list[Insert]) -> list[Any]:
        """One ``executemany`` for the whole group, in one transaction or savepoint."""
        if operations[0].db is None:
            raise _no_database(operations[0])
        return operations[0].db._insert(operations[0].table, operations)

    def _record_key(self) -> Hashable:
        """What a recording matches on: table and row, and the Database's ``name=``."""
        return (self._source, "insert", self.table, _frozen_items(self.row))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_detached, (type(self), {"table": self.table, "row": self.row,
                                         "_source": self._source}))

    def __repr__(self) -> str:
        return f"db.insert({self.table!r}, {self.row!r})"


class Query(BatchableOperation[Any]):
    """``db.query``: one raw statement; a round's queries run one after the other."""

    __slots__ = ("db", "sql", "params", "_key", "_source")

    def __init__(self, db: Database, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError(f"batch.sql: db.query(sql, params): sql must be a non-empty string, got {sql!r}")
        if isinstance(params, (str, bytes)):
            raise TypeError(f"batch.sql: db.query({sql!r}, {params!r}): params must be a sequence or "
                            f"mapping of values, not a string (did you mean ({params!r},)?)")
        self.db = db
        self.sql = sql
        self.params = params
        self._key = _Key(db, ("query",), "query")
        self._source = db._source

    def batch_key(self) -> Hashable:
        """The database: a round's queries of one database go out in one call."""
        return self._key

    @classmethod
    def run_batch(cls, operations: list[Query]) -> list[Any]:
        """Each query is its own statement; a failing one fails only itself."""
        if operations[0].db is None:
            raise _no_database(operations[0])
        return operations[0].db._query(operations)

    def _record_key(self) -> Hashable:
        """What a recording matches on: SQL and parameters, and the Database's ``name=``."""
        params = self.params
        frozen = _frozen_items(params) if isinstance(params, Mapping) else tuple(params)
        return (self._source, "query", self.sql, frozen)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_detached, (type(self), {"sql": self.sql, "params": self.params,
                                         "_source": self._source}))

    def __repr__(self) -> str:
        return f"db.query({self.sql!r}, {self.params!r})"

