"""W5: a feed page on sqlite3, one query per object versus batch generators.

The page shows ``posts`` posts, each with its author, its comments and each
comment's author.  The naive version asks the database once per object (the
"N+1" pattern); the batch version is the same page written as generators
over :mod:`batch.sql` (``db.get`` / ``db.filter``), which turns each round's
lookups into one ``SELECT ... IN (...)`` per table and column.

Queries are counted, and latency is simulated, by a sqlite3 trace callback
on each connection: every statement the connection runs (SELECTs, and any
BEGIN/COMMIT a driver wrapper adds) is counted and, with latency on, sleeps
that long before it runs, as a round trip to a database server would.  Both
versions read the same database file and must build equal pages.  The page
has the shape of the demo's post view (``python -m batch demo``) but is
written here against the public ``batch.sql`` API only.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any

import batch

from .harness import BenchmarkError, time_call
from .store import Sizes

__all__ = ["SqlRow", "available", "measure_w5", "format_w5", "naive_page", "gen_page"]

Page = list[tuple[Any, Any, list[Any], list[Any]]]


def available() -> bool:
    """Whether ``batch.sql`` imports (it is written by another piece of work)."""
    try:
        importlib.import_module("batch.sql")
    except ImportError:
        return False
    return True


@dataclass
class SqlRow:
    """One code path in one latency scenario."""

    scenario: str
    code: str
    latency_ms: float
    queries: int = 0
    rounds: int | None = None
    samples: list[float] = field(default_factory=list)
    best_s: float | None = None
    median_s: float | None = None
    speedup: float | None = None


class QueryCounter:
    """A sqlite3 trace callback: counts statements and sleeps ``latency`` seconds for each."""

    def __init__(self) -> None:
        self.queries = 0
        self.latency = 0.0

    def __call__(self, statement: str) -> None:
        self.queries += 1
        if self.latency:
            time.sleep(self.latency)


def build_database(path: str, sizes: Sizes) -> list[int]:
    """Create users, posts and comments; return the ids of the page's posts."""
    n_posts = sizes.w5_posts
    n_users = max(10, n_posts)
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript("""
            CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
            CREATE TABLE posts (id INTEGER PRIMARY KEY, author_id INTEGER NOT NULL,
                                title TEXT NOT NULL);
            CREATE TABLE comments (id INTEGER PRIMARY KEY, post_id INTEGER NOT NULL,
                                   author_id INTEGER NOT NULL, body TEXT NOT NULL);
            CREATE INDEX comments_post ON comments (post_id);
        """)
        conn.executemany("INSERT INTO users VALUES (?, ?)",
                         [(i, f"user {i}") for i in range(1, n_users + 1)])
        conn.executemany("INSERT INTO posts VALUES (?, ?, ?)",
                         [(p, p % n_users + 1, f"post {p}") for p in range(1, n_posts + 1)])
        comments = []
        for p in range(1, n_posts + 1):
            for c in range(sizes.w5_comments):
                cid = p * 1000 + c
                comments.append((cid, p, (p + c * 7) % n_users + 1, f"comment {cid}"))
        conn.executemany("INSERT INTO comments VALUES (?, ?, ?, ?)", comments)
    conn.close()
    return list(range(1, n_posts + 1))


# -- the two versions of the page ------------------------------------------------

def _one(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    cur = conn.execute(sql, params)
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row))


def _all(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def naive_page(conn: sqlite3.Connection, post_ids: list[int]) -> Page:
    """One query per object, the way an ORM's lazy attributes do it."""
    page: Page = []
    for post_id in post_ids:
        post = _one(conn, "SELECT * FROM posts WHERE id = ?", (post_id,))
        assert post is not None
        author = _one(conn, "SELECT * FROM users WHERE id = ?", (post["author_id"],))
        comments = _all(conn, "SELECT * FROM comments WHERE post_id = ?", (post_id,))
        comments.sort(key=lambda c: c["id"])
        commenters = [_one(conn, "SELECT * FROM users WHERE id = ?", (c["author_id"],))
                      for c in comments]
        page.append((post, author, comments, commenters))
    return page


def gen_post(db: Any, post_id: int) -> Generator[Any, Any, tuple[Any, Any, list[Any], list[Any]]]:
    """One post with its author, comments and commenters: three rounds."""
    post = yield db.get("posts", id=post_id)
    author, comments = yield db.get("users", id=post["author_id"]), \
        db.filter("comments", post_id=post_id)
    comments = sorted(comments, key=lambda c: c["id"])
    commenters = yield [db.get("users", id=c["author_id"]) for c in comments]
    return post, author, comments, commenters


def gen_page(db: Any, post_ids: list[int]) -> Generator[Any, Any, Page]:
    """Every post of the page side by side, so their lookups share rounds."""
    posts: Page = yield [gen_post(db, p) for p in post_ids]
    return posts


# -- measuring -------------------------------------------------------------------

def measure_w5(sizes: Sizes, repeat: int) -> list[SqlRow]:
    """Time both versions without and with simulated latency; check equal pages."""
    # Imported by name so that type checking passes before batch.sql exists.
    Database = importlib.import_module("batch.sql").Database

    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        path = os.path.join(tmp, "w5.db")
        post_ids = build_database(path, sizes)
        naive_conn = sqlite3.connect(path)
        batch_conn = sqlite3.connect(path)
        naive_count, batch_count = QueryCounter(), QueryCounter()
        naive_conn.set_trace_callback(naive_count)
        batch_conn.set_trace_callback(batch_count)
        db = Database(batch_conn)
        try:
            expected = naive_page(naive_conn, post_ids)
            trace = batch.Trace()
            if batch.execute(gen_page(db, post_ids), trace=trace) != expected:
                raise BenchmarkError("W5: the batch page differs from the naive page")
            rounds = trace.round_count
            rows: list[SqlRow] = []
            for latency_ms in (0.0, sizes.w5_latency_ms):
                scenario = f"latency {latency_ms:g} ms/query"
                naive_row = SqlRow(scenario, "one query per object", latency_ms)
                batch_row = SqlRow(scenario, "batch generators", latency_ms, rounds=rounds)
                naive_count.latency = batch_count.latency = latency_ms / 1e3
                runs: list[tuple[SqlRow, QueryCounter, Callable[[], Any]]] = [
                    (naive_row, naive_count, lambda: naive_page(naive_conn, post_ids)),
                    (batch_row, batch_count, lambda: batch.execute(gen_page(db, post_ids))),
                ]
                for _ in range(repeat):
                    for row, counter, fn in runs:
                        counter.queries = 0
                        seconds, page = time_call(fn)
                        if page != expected:
                            raise BenchmarkError(f"W5: {row.code} built a different page")
                        row.queries = counter.queries
                        row.samples.append(seconds)
                for row in (naive_row, batch_row):
                    row.best_s = min(row.samples)
                    row.median_s = statistics.median(row.samples)
                if naive_row.best_s and batch_row.best_s:
                    batch_row.speedup = naive_row.best_s / batch_row.best_s
                rows += [naive_row, batch_row]
            return rows
        finally:
            naive_conn.close()
            batch_conn.close()


def format_w5(rows: list[SqlRow], title: str) -> str:
    """A fixed-width table of the W5 rows."""
    head = (f"{'scenario':<24} {'code':<22} {'queries':>8} {'rounds':>7} "
            f"{'best ms':>10} {'median ms':>10} {'speedup':>8}")
    lines = [title, head, "-" * len(head)]
    for r in rows:
        rounds = "-" if r.rounds is None else str(r.rounds)
        speedup = "-" if r.speedup is None else f"{r.speedup:.1f}x"
        lines.append(f"{r.scenario:<24} {r.code:<22} {r.queries:>8} {rounds:>7} "
                     f"{(r.best_s or 0) * 1e3:>10.2f} {(r.median_s or 0) * 1e3:>10.2f} {speedup:>8}")
    return "\n".join(lines)


def w5_to_json(rows: list[SqlRow]) -> list[dict[str, Any]]:
    """The W5 rows as JSON-able dicts."""
    return [asdict(r) for r in rows]
