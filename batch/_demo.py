"""``python -m batch demo``: one feed page, one query per object versus batch generators.

It builds a sqlite3 database in a temp dir (users, posts, comments, follows;
about 13,500 rows from a fixed seed), renders the feed page of one user
twice - with plain functions that ask the database once per object (the
"N+1" shape that lazy ORM attributes produce) and with batch generators over
:mod:`batch.sql` - checks that both pages are equal, and prints queries,
round trips and wall time side by side, then the trace's round table.
Nothing but the standard library is needed.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from typing import Any, TextIO

from ._api import execute
from ._trace import Trace
from .sql import Database, Row

__all__ = ["main", "build_database", "naive_feed", "gen_feed", "render", "concurrent_requests", "SIZES"]

SEED = 2024
SIZES = {"users": 500, "posts": 2000, "comments": 6000, "follows": 5000}
LATEST = 3              # posts shown per person followed
PROGRESS_AFTER = 1.0    # seconds of building before progress lines appear

Page = dict[str, Any]

_SYLLABLES = ["ka", "lo", "mi", "ra", "ne", "to", "shi", "va", "den", "bo", "lu", "ze", "an", "pe"]
_WORDS = ["batch", "round", "query", "cache", "index", "join", "graph", "loop", "trace", "yield",
          "table", "row", "latency", "socket", "thread", "page", "feed", "shard", "queue", "lock"]


def _name(rng: random.Random) -> str:
    first = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    last = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    return f"{first} {last}"


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def build_database(path: str, scale: float = 1.0, progress: TextIO | None = None) -> dict[str, int]:
    """Create and fill the demo database at ``path``; return the row count of each table.

    The same seed gives the same rows on every run.  When building takes
    longer than ``PROGRESS_AFTER`` seconds, a progress line per step goes to
    ``progress`` (stderr by default).
    """
    out = sys.stderr if progress is None else progress
    rng = random.Random(SEED)
    sizes = _sizes(scale)
    n_users, n_posts = sizes["users"], sizes["posts"]
    started = time.perf_counter()
    steps = ["users", "posts", "comments", "follows"]

    def done(step: str) -> None:
        elapsed = time.perf_counter() - started
        if elapsed > PROGRESS_AFTER:
            share = (steps.index(step) + 1) * 100 // len(steps)
            print(f"building the demo database: {share:3d}% ({step} done, {elapsed:.1f} s)",
                  file=out, flush=True)

    conn = sqlite3.connect(path)
    try:
        conn.executescript("""
            CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, joined INTEGER NOT NULL);
            CREATE TABLE posts (id INTEGER PRIMARY KEY, author_id INTEGER NOT NULL,
                                title TEXT NOT NULL, created_at INTEGER NOT NULL);
            CREATE TABLE comments (id INTEGER PRIMARY KEY, post_id INTEGER NOT NULL,
                                   author_id INTEGER NOT NULL, body TEXT NOT NULL,
                                   created_at INTEGER NOT NULL);
            CREATE TABLE follows (follower_id INTEGER NOT NULL, followee_id INTEGER NOT NULL,
                                  PRIMARY KEY (follower_id, followee_id));
            CREATE INDEX posts_author ON posts (author_id);
            CREATE INDEX comments_post ON comments (post_id);
        """)
        with conn:
            conn.executemany("INSERT INTO users VALUES (?, ?, ?)",
                             [(i, _name(rng), 1_600_000_000 + rng.randrange(10**7))
                              for i in range(1, n_users + 1)])
        done("users")
        with conn:
            conn.executemany("INSERT INTO posts VALUES (?, ?, ?, ?)",
                             [(i, rng.randint(1, n_users), _text(rng, rng.randint(2, 5)),
                               1_700_000_000 + rng.randrange(10**7)) for i in range(1, n_posts + 1)])
        done("posts")
        with conn:
            conn.executemany("INSERT INTO comments VALUES (?, ?, ?, ?, ?)",
                             [(i, rng.randint(1, n_posts), rng.randint(1, n_users),
                               _text(rng, rng.randint(3, 8)), 1_710_000_000 + rng.randrange(10**7))
                              for i in range(1, sizes["comments"] + 1)])
        done("comments")
        pairs: set[tuple[int, int]] = set()
        wanted = min(sizes["follows"], n_users * (n_users - 1))
        while len(pairs) < wanted:
            a, b = rng.randint(1, n_users), rng.randint(1, n_users)
            if a != b:
                pairs.add((a, b))
        with conn:
            conn.executemany("INSERT INTO follows VALUES (?, ?)", sorted(pairs))
        done("follows")
    finally:
        conn.close()
    return sizes


def busiest_reader(path: str) -> int:
    """The user who follows the most people (the default page: the most work)."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT follower_id FROM follows GROUP BY follower_id "
                           "ORDER BY count(*) DESC, follower_id LIMIT 1").fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 1


# -- the page, one query per object -------------------------------------------------------

class Naive:
    """A sqlite3 connection for the one-query-per-object code: counts queries, adds latency."""

    def __init__(self, conn: sqlite3.Connection, latency: float) -> None:
        self.conn = conn
        self.latency = latency
        self.queries = 0

    def all(self, sql: str, *params: Any) -> list[Row]:
        """Every row of one query, as dicts."""
        self.queries += 1
        if self.latency:
            time.sleep(self.latency)
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def one(self, sql: str, *params: Any) -> Row | None:
        """The first row of one query, or None."""
        rows = self.all(sql, *params)
        return rows[0] if rows else None


def naive_feed(db: Naive, user_id: int) -> Page:
    """The feed page the way lazy attribute access builds it: one query per object."""
    reader = db.one("SELECT * FROM users WHERE id = ?", user_id)
    follows = db.all("SELECT * FROM follows WHERE follower_id = ? ORDER BY followee_id", user_id)
    return {"reader": reader, "following": [naive_person(db, f["followee_id"]) for f in follows]}


def naive_person(db: Naive, person_id: int) -> Page:
    person = db.one("SELECT * FROM users WHERE id = ?", person_id)
    posts = db.all("SELECT * FROM posts WHERE author_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                   person_id, LATEST)
    return {"person": person, "posts": [naive_post(db, post) for post in posts]}


def naive_post(db: Naive, post: Row) -> Page:
    author = db.one("SELECT * FROM users WHERE id = ?", post["author_id"])
    comments = db.all("SELECT * FROM comments WHERE post_id = ? ORDER BY created_at, id", post["id"])
    return {"post": post, "author": author,
            "comments": [{"comment": c, "author": db.one("SELECT * FROM users WHERE id = ?", c["author_id"])}
                         for c in comments]}


# -- the same page, as batch generators ----------------------------------------------------

def gen_feed(db: Database, user_id: int) -> Generator[Any, Any, Page]:
    """The feed page as a batch generator: the same shape, four rounds whatever its size."""
    reader, follows = yield db.get("users", id=user_id), db.filter("follows", follower_id=user_id)
    follows.sort(key=lambda f: f["followee_id"])
    following = yield [gen_person(db, f["followee_id"]) for f in follows]
    return {"reader": reader, "following": following}


def gen_person(db: Database, person_id: int) -> Generator[Any, Any, Page]:
    person, posts = yield db.get("users", id=person_id), db.filter("posts", author_id=person_id)
    # No per-person LIMIT in one merged IN (...) query: take the latest here.
    posts.sort(key=lambda p: (p["created_at"], p["id"]), reverse=True)
    return {"person": person, "posts": (yield [gen_post(db, post) for post in posts[:LATEST]])}


def gen_post(db: Database, post: Row) -> Generator[Any, Any, Page]:
    author, comments = yield db.get("users", id=post["author_id"]), db.filter("comments", post_id=post["id"])
    comments.sort(key=lambda c: (c["created_at"], c["id"]))
    authors = yield [db.get("users", id=c["author_id"]) for c in comments]
    return {"post": post, "author": author,
            "comments": [{"comment": c, "author": a} for c, a in zip(comments, authors)]}


def render(page: Page) -> list[str]:
    """The page as text lines."""
    lines = [f"feed of {page['reader']['name']} (user {page['reader']['id']})"]
    for person in page["following"]:
        lines.append(f"  {person['person']['name']}")
        for p in person["posts"]:
            lines.append(f"    \"{p['post']['title']}\" by {p['author']['name']}, "
                         f"{len(p['comments'])} comment{'s' * (len(p['comments']) != 1)}")
            for c in p["comments"]:
                lines.append(f"      {c['author']['name']}: {c['comment']['body']}")
    return lines


# -- running and reporting -------------------------------------------------------------------

def _best(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def _short(sql: str) -> str:
    """A statement with its run of placeholders folded: IN (? x 18)."""
    return re.sub(r"\((\?)(?:, \?)+\)", lambda m: f"({m.group(1)} x {m.group(0).count('?')})", sql)


# Bounds of the command line's numbers: past them the demo would run for hours or fill the memory.
MAX_LATENCY_MS = 100
MAX_SCALE = 20
MAX_REPEAT = 20
MAX_REQUESTS = 1000


def _number(kind: Callable[[str], Any], low: int, high: int, *, above: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` in ``[low, high]`` (``(low, high]`` when ``above``)."""
    name = "a whole number" if kind is int else "a number"
    lower = f"> {low}" if above else f">= {low}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {name}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"must be {name} {lower} and <= {high}, got {text}")
        return value
    return parse


def _sizes(scale: float) -> dict[str, int]:
    return {table: max(1, round(n * scale)) for table, n in SIZES.items()}


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before anything runs, what only the rows or the file system can tell is wrong."""
    users = _sizes(args.scale)["users"]
    if args.user is not None and not 1 <= args.user <= users:
        parser.error(f"argument --user: there is no user {args.user} (ids are 1 to {users:,} "
                     f"at --scale {args.scale:g})")
    if args.trace is not None:
        folder = os.path.dirname(os.path.abspath(args.trace))
        if os.path.isdir(args.trace):
            parser.error(f"argument --trace: {args.trace} is a folder; name a file to write")
        if not os.path.isdir(folder):
            parser.error(f"argument --trace: the folder {folder} does not exist; create it first "
                         f"or name a file in an existing folder")
        if not os.access(folder, os.W_OK):
            parser.error(f"argument --trace: cannot write to the folder {folder}")


def main(argv: list[str] | None = None) -> int:
    """``python -m batch demo [options]``; returns the exit status (1 when the pages differ).

    Every option is checked before the database is built: a bad one prints
    the usage and a message to stderr and exits with status 2 (``SystemExit``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m batch",
        description="Render one feed page from sqlite3 with one query per object and with batch "
                    "generators, check they are equal, and compare queries, round trips and time.")
    parser.add_argument("command", choices=["demo"])
    parser.add_argument("--simulated-latency-ms", type=_number(float, 0, MAX_LATENCY_MS), default=0.0,
                        metavar="N",
                        help=f"sleep N ms before every query, as a networked database would cost "
                             f"(0 to {MAX_LATENCY_MS:g})")
    parser.add_argument("--trace", metavar="FILE",
                        help="write the batch run's timeline (open it in https://ui.perfetto.dev)")
    parser.add_argument("--user", type=_number(int, 1, 2**63 - 1), metavar="ID",
                        help="whose feed to render (default: the user who follows the most people)")
    parser.add_argument("--scale", type=_number(float, 0, MAX_SCALE, above=True), default=1.0, metavar="X",
                        help=f"multiply the number of rows (default 1: about 13,500 rows; "
                             f"at most {MAX_SCALE:g})")
    parser.add_argument("--repeat", type=_number(int, 1, MAX_REPEAT), metavar="N",
                        help=f"time each mode N times and keep the best (default 3, 1 with latency; "
                             f"1 to {MAX_REPEAT})")
    parser.add_argument("--requests", type=_number(int, 1, MAX_REQUESTS), metavar="N",
                        help=f"render N users' pages as N concurrent asyncio requests: one execution "
                             f"per request versus one shared batch.AsyncBatcher (1 to {MAX_REQUESTS})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    _check(parser, args)
    latency = args.simulated_latency_ms / 1e3
    repeat = args.repeat if args.repeat is not None else (1 if latency else 3)

    with tempfile.TemporaryDirectory(prefix="batch-demo-") as tmp:
        path = os.path.join(tmp, "demo.db")
        sizes = build_database(path, args.scale)
        if args.requests:
            return concurrent_requests(path, args.requests, latency)
        user_id = busiest_reader(path) if args.user is None else args.user
        naive_conn, batch_conn = sqlite3.connect(path), sqlite3.connect(path)
        try:
            return _compare(sizes, user_id, Naive(naive_conn, latency),
                            Database(batch_conn, latency=latency, log=True), repeat, args)
        finally:
            naive_conn.close()
            batch_conn.close()


def _compare(sizes: dict[str, int], user_id: int, naive: Naive, db: Database, repeat: int,
             args: argparse.Namespace) -> int:
    if naive.one("SELECT id FROM users WHERE id = ?", user_id) is None:
        print(f"python -m batch demo: there is no user {user_id} (ids are 1 to {sizes['users']})",
              file=sys.stderr)
        return 2
    traces: list[Trace] = []

    def run_naive() -> Page:
        naive.queries = 0
        return naive_feed(naive, user_id)

    def run_batch() -> Page:
        db.queries = 0
        if db.log is not None:
            db.log.clear()
        traces.append(Trace())
        page: Page = execute(gen_feed(db, user_id), trace=traces[-1])
        return page

    naive_s, naive_page = _best(repeat, run_naive)
    batch_s, batch_page = _best(repeat, run_batch)
    trace = traces[-1]
    lines = render(batch_page)
    people = len(batch_page["following"])
    posts = sum(len(p["posts"]) for p in batch_page["following"])
    comments = sum(len(post["comments"]) for p in batch_page["following"] for post in p["posts"])

    counts = ", ".join(f"{n:,} {table}" for table, n in sizes.items())
    latency = (f"simulated latency {args.simulated_latency_ms:g} ms per query"
               if args.simulated_latency_ms else "no simulated latency (try --simulated-latency-ms 1)")
    runs = f"best of {repeat} runs" if repeat > 1 else "one run"
    print(f"sqlite3 database: {counts}; {latency}")
    print(f"feed of user {user_id}: {people} people followed, {posts} posts, {comments} comments; "
          f"wall time: {runs}")
    print()
    print(f"{'':<22}{'one query per object':>22}{'batch generators':>20}")
    print(f"{'queries':<22}{naive.queries:>22,}{db.queries:>20,}")
    print(f"{'rounds':<22}{naive.queries:>22,}{trace.round_count:>20,}")
    print(f"{'wall time':<22}{naive_s * 1e3:>19.1f} ms{batch_s * 1e3:>17.1f} ms")
    print()
    if naive_page != batch_page or render(naive_page) != lines:
        print("the two pages differ: this is a bug in batch; please report it", file=sys.stderr)
        return 1
    print(f"pages equal: yes ({len(lines)} lines; {naive.queries / max(1, db.queries):.0f}x fewer "
          f"queries, {naive_s / batch_s:.1f}x the speed)")
    print()
    shown = 6
    print(f"the page (first {min(shown, len(lines))} of {len(lines)} lines):")
    for line in lines[:shown]:
        print(f"  {line}")
    print()
    print("statements of the batch run:")
    for sql in db.log or []:
        print(f"  {_short(sql)}")
    print()
    print(trace.summary())
    if args.trace:
        with open(args.trace, "w", encoding="utf-8") as f:
            f.write(trace.to_chrome_trace())
        print(f"\ntimeline written to {args.trace}: open it in https://ui.perfetto.dev")
    return 0


# -- many concurrent requests (--requests N) -----------------------------------------------

def readers(path: str, n: int) -> list[int]:
    """``n`` user ids, the busiest readers first (repeated when there are fewer users)."""
    conn = sqlite3.connect(path)
    try:
        ids = [row[0] for row in conn.execute(
            "SELECT u.id FROM users u LEFT JOIN follows f ON f.follower_id = u.id "
            "GROUP BY u.id ORDER BY count(f.follower_id) DESC, u.id")]
    finally:
        conn.close()
    return [ids[i % len(ids)] for i in range(n)]


def concurrent_requests(path: str, n: int, latency: float) -> int:
    """Serve ``n`` feed pages as concurrent asyncio requests, two ways, and compare.

    Each request is a task that renders one user's feed.  First every request
    awaits its own :func:`batch.execute_async`: requests batch only with
    themselves.  Then every request awaits ``batcher.run`` of one shared
    :class:`batch.AsyncBatcher`: the requests' trees share rounds.  The
    database is a synchronous sqlite3 connection, so a statement holds the
    event loop for its (simulated) latency, as a blocking driver would.
    """
    import asyncio

    from ._api import execute_async
    from ._async_batcher import AsyncBatcher

    users = readers(path, n)
    conn = sqlite3.connect(path)
    try:
        db = Database(conn, latency=latency, log=True)

        async def per_request() -> tuple[list[Page], int]:
            traces = [Trace() for _ in users]
            pages = await asyncio.gather(*(execute_async(gen_feed(db, u), trace=t)
                                           for u, t in zip(users, traces)))
            return list(pages), sum(t.round_count for t in traces)

        async def shared() -> tuple[list[Page], int]:
            trace = Trace()
            async with AsyncBatcher(max_delay=0, trace=trace) as batcher:
                pages = await asyncio.gather(*(batcher.run(gen_feed(db, u)) for u in users))
            return list(pages), trace.round_count

        results = []
        for scene in (per_request, shared):
            db.queries = 0
            if db.log is not None:
                db.log.clear()
            started = time.perf_counter()
            pages, rounds = asyncio.run(scene())
            results.append((pages, db.queries, rounds, time.perf_counter() - started,
                            list(db.log or [])))
    finally:
        conn.close()

    (own_pages, own_q, own_r, own_s, _), (pages, q, r, s, log) = results
    lines = sum(len(render(p)) for p in pages)
    lat = (f"simulated latency {latency * 1e3:g} ms per query" if latency
           else "no simulated latency (try --simulated-latency-ms 1)")
    print(f"{n} concurrent requests on asyncio, each the feed page of one user; {lat}")
    print()
    print(f"{'':<22}{'one execution each':>22}{'one AsyncBatcher':>20}")
    print(f"{'statements':<22}{own_q:>22,}{q:>20,}")
    print(f"{'rounds':<22}{own_r:>22,}{r:>20,}")
    print(f"{'wall time':<22}{own_s * 1e3:>19.1f} ms{s * 1e3:>17.1f} ms")
    print()
    if own_pages != pages:
        print("the pages differ: this is a bug in batch; please report it", file=sys.stderr)
        return 1
    print(f"pages equal: yes ({n} pages, {lines} lines; {own_q / max(1, q):.0f}x fewer statements, "
          f"{own_s / s:.1f}x the speed)")
    print()
    print("statements of the AsyncBatcher run:")
    for sql in log:
        print(f"  {_short(sql)}")
    return 0
