"""A real GraphQL server: Strawberry resolvers that are batch generators.

The same three-level schema (users -> posts -> comments, 100 objects) is
written twice: once with Strawberry's own ``DataLoader`` (the reference a
GraphQL user knows) and once with resolvers that run batch generators
through one :class:`batch.AsyncBatcher` per request.  Both must answer the
same query with the same data, and the batcher version must cost one
``run_batch`` call per level, as the DataLoader version does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from typing import Any

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types import Info

import batch

# -- the data: 10 users, 30 posts, 60 comments ----------------------------------

USERS = {u: {"id": u, "name": f"user{u}"} for u in range(1, 11)}
POSTS = {p: {"id": p, "author_id": (p - 1) // 3 + 1, "title": f"post{p}"} for p in range(1, 31)}
COMMENTS = {c: {"id": c, "post_id": (c - 1) // 2 + 1, "text": f"comment{c}"} for c in range(1, 61)}
assert len(USERS) + len(POSTS) + len(COMMENTS) == 100

QUERY = """
query ($ids: [Int!]!) {
  users(ids: $ids) {
    id name
    posts { id title comments { id text } }
  }
}
"""
IDS = list(range(1, 11))


class Backend:
    """The data source: three bulk lookups, each call recorded as (name, keys)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []

    async def users(self, ids: Sequence[int]) -> list[dict[str, Any] | None]:
        self.calls.append(("users", list(ids)))
        await asyncio.sleep(0.001)
        return [USERS.get(i) for i in ids]

    async def posts_of(self, author_ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        self.calls.append(("posts_of", list(author_ids)))
        await asyncio.sleep(0.001)
        return [[p for p in POSTS.values() if p["author_id"] == a] for a in author_ids]

    async def comments_of(self, post_ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        self.calls.append(("comments_of", list(post_ids)))
        await asyncio.sleep(0.001)
        return [[c for c in COMMENTS.values() if c["post_id"] == p] for p in post_ids]


# -- reference: Strawberry's DataLoader ----------------------------------------------


@strawberry.type
class RefComment:
    id: int
    text: str


@strawberry.type
class RefPost:
    id: int
    title: str

    @strawberry.field
    async def comments(self, info: Info) -> list[RefComment]:
        rows = await info.context["comments_of"].load(self.id)
        return [RefComment(id=r["id"], text=r["text"]) for r in rows]


@strawberry.type
class RefUser:
    id: int
    name: str

    @strawberry.field
    async def posts(self, info: Info) -> list[RefPost]:
        rows = await info.context["posts_of"].load(self.id)
        return [RefPost(id=r["id"], title=r["title"]) for r in rows]


@strawberry.type
class RefQuery:
    @strawberry.field
    async def users(self, info: Info, ids: list[int]) -> list[RefUser]:
        rows = await info.context["users"].load_many(ids)
        return [RefUser(id=r["id"], name=r["name"]) for r in rows]


REF_SCHEMA = strawberry.Schema(query=RefQuery)


async def run_reference(backend: Backend) -> dict[str, Any]:
    context = {
        "users": DataLoader(load_fn=backend.users),
        "posts_of": DataLoader(load_fn=backend.posts_of),
        "comments_of": DataLoader(load_fn=backend.comments_of),
    }
    result = await REF_SCHEMA.execute(QUERY, variable_values={"ids": IDS}, context_value=context)
    assert result.errors is None, result.errors
    assert result.data is not None
    return result.data


def test_reference_dataloader_costs_one_call_per_level() -> None:
    backend = Backend()
    data = asyncio.run(run_reference(backend))
    assert [name for name, _ in backend.calls] == ["users", "posts_of", "comments_of"]
    assert backend.calls[1] == ("posts_of", IDS)
    assert backend.calls[2] == ("comments_of", list(range(1, 31)))
    assert len(data["users"]) == 10
    assert data["users"][0]["posts"][0] == {
        "id": 1, "title": "post1",
        "comments": [{"id": 1, "text": "comment1"}, {"id": 2, "text": "comment2"}],
    }


# -- the same schema, resolvers as batch generators through one AsyncBatcher ------------------


def backend_ops(backend: Backend) -> tuple[Any, Any, Any]:
    """The backend's three bulk lookups as operation classes (one set per request)."""
    users = batch.operation(backend.users, name="Users")
    posts_of = batch.operation(backend.posts_of, name="PostsOf")
    comments_of = batch.operation(backend.comments_of, name="CommentsOf")
    return users, posts_of, comments_of


def gen_users(ops: Any, ids: list[int]) -> Generator[Any, Any, list[dict[str, Any]]]:
    rows = yield [ops[0](i) for i in ids]
    return [r for r in rows if r is not None]


def gen_posts(ops: Any, user_id: int) -> Generator[Any, Any, list[dict[str, Any]]]:
    return (yield ops[1](user_id))


def gen_comments(ops: Any, post_id: int) -> Generator[Any, Any, list[dict[str, Any]]]:
    return (yield ops[2](post_id))


@strawberry.type
class Comment:
    id: int
    text: str


@strawberry.type
class Post:
    id: int
    title: str

    @strawberry.field
    async def comments(self, info: Info) -> list[Comment]:
        ctx = info.context
        rows = await ctx["batcher"].run(gen_comments(ctx["ops"], self.id))
        return [Comment(id=r["id"], text=r["text"]) for r in rows]


@strawberry.type
class User:
    id: int
    name: str

    @strawberry.field
    async def posts(self, info: Info) -> list[Post]:
        ctx = info.context
        rows = await ctx["batcher"].run(gen_posts(ctx["ops"], self.id))
        return [Post(id=r["id"], title=r["title"]) for r in rows]


@strawberry.type
class Query:
    @strawberry.field
    async def users(self, info: Info, ids: list[int]) -> list[User]:
        ctx = info.context
        rows = await ctx["batcher"].run(gen_users(ctx["ops"], ids))
        return [User(id=r["id"], name=r["name"]) for r in rows]


SCHEMA = strawberry.Schema(query=Query)


async def run_batched(backend: Backend, trace: batch.Trace | None = None) -> dict[str, Any]:
    # One batcher per request, as one DataLoader per request.
    async with batch.AsyncBatcher(trace=trace) as batcher:
        context = {"batcher": batcher, "ops": backend_ops(backend)}
        result = await SCHEMA.execute(QUERY, variable_values={"ids": IDS}, context_value=context)
    assert result.errors is None, result.errors
    assert result.data is not None
    return result.data


def test_batcher_resolvers_answer_like_dataloader_with_one_call_per_level() -> None:
    reference = Backend()
    expected = asyncio.run(run_reference(reference))
    backend = Backend()
    trace = batch.Trace()
    data = asyncio.run(run_batched(backend, trace))
    assert data == expected
    assert backend.calls == reference.calls  # the same three calls, with the same keys
    assert [name for name, _ in backend.calls] == ["users", "posts_of", "comments_of"]
    assert trace.round_count == 3


def test_concurrent_requests_each_get_their_own_batcher() -> None:
    async def main() -> list[dict[str, Any]]:
        backend = Backend()
        pages = await asyncio.gather(run_batched(backend), run_batched(backend))
        assert len(backend.calls) == 6  # three per request: requests do not share a batcher
        return list(pages)

    first, second = asyncio.run(main())
    assert first == second and len(first["users"]) == 10
