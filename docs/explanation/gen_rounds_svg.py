"""Draw docs/explanation/rounds.svg: a call tree and the round each operation is sent in.

The picture is made by running the tree: the call tree below is built as real
batch generators, executed with a ``batch.Trace``, and every operation is drawn
in the column of the round that sent it, so the picture cannot drift from what
the executor does.  Standard library and ``batch`` only::

    python docs/explanation/gen_rounds_svg.py        # rewrites rounds.svg beside this file
    python docs/explanation/gen_rounds_svg.py OUT.svg
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import batch

COLORS = {"GetUser": "#3b6fb6", "GetPosts": "#d9822b", "GetComments": "#3a9a5b"}


@dataclass
class Node:
    """A generator (``steps`` of children yielded together) or an operation (``steps`` empty)."""

    label: str
    steps: list[list[Node]] = field(default_factory=list)
    op: tuple[str, int] | None = None  # (class name, key) for an operation
    round: int = 0  # for an operation: the round that sent it (filled in by run())

    @property
    def is_op(self) -> bool:
        return self.op is not None


def op(name: str, key: int) -> Node:
    return Node(f"{name}({key})", op=(name, key))


def gen(label: str, *steps: list[Node]) -> Node:
    return Node(label, list(steps))


# The feed page of user 1: the user and their posts; per post its author and comments;
# per comment its author.  The same shape as the tutorial's page.
def comment(cid: int, author: int) -> Node:
    return gen(f"gen_comment({cid})", [op("GetUser", author)])


TREE = gen(
    "gen_page(1)",
    [op("GetUser", 1), op("GetPosts", 1)],
    [
        gen("gen_post(10)", [op("GetUser", 1), op("GetComments", 10)],
            [comment(100, 2), comment(101, 3)]),
        gen("gen_post(11)", [op("GetUser", 1), op("GetComments", 11)],
            [comment(102, 3)]),
    ],
)


def run(tree: Node) -> batch.Trace:
    """Execute ``tree`` and set each operation node's ``round``."""
    classes: dict[str, type[batch.BatchableOperation[Any]]] = {}
    calls: list[list[Node]] = []

    def make_class(name: str) -> type[batch.BatchableOperation[Any]]:
        class Op(batch.BatchableOperation[Any]):
            def __init__(self, node: Node) -> None:
                self.node = node

            @classmethod
            def run_batch(cls, operations: list[Op]) -> list[Any]:
                calls.append([o.node for o in operations])
                return [None for _ in operations]

        Op.__name__ = Op.__qualname__ = name
        return Op

    def start(node: Node) -> Any:
        if node.op is not None:
            if node.op[0] not in classes:
                classes[node.op[0]] = make_class(node.op[0])
            return classes[node.op[0]](node)
        return steps(node)

    def steps(node: Node) -> Any:
        for step in node.steps:
            yield [start(child) for child in step]

    trace = batch.Trace()
    batch.execute(steps(tree), trace=trace)
    k = 0
    for r, rnd in enumerate(trace.rounds, start=1):
        for _ in rnd.batches:
            for node in calls[k]:
                node.round = r
            k += 1
    return trace


def rows(tree: Node) -> list[tuple[int, Node, bool]]:
    """(depth, node, is_last_child) in pre-order: the outline of the tree."""
    out: list[tuple[int, Node, bool]] = []
    stack: list[tuple[int, Node, bool]] = [(0, tree, True)]
    while stack:
        depth, node, last = stack.pop()
        out.append((depth, node, last))
        children = [c for step in node.steps for c in step]
        for i, child in reversed(list(enumerate(children))):
            stack.append((depth + 1, child, i == len(children) - 1))
    return out


def subtree_rounds(node: Node) -> list[int]:
    if node.is_op:
        return [node.round]
    return [r for step in node.steps for c in step for r in subtree_rounds(c)]


def draw(tree: Node, trace: batch.Trace) -> str:
    outline = rows(tree)
    n_rounds = len(trace.rounds)
    row_h, top, indent, left = 26, 70, 22, 16
    col0, col_w = 330, 150
    width = col0 + n_rounds * col_w + 20
    legend_y = top + len(outline) * row_h + 18
    height = legend_y + 26 + 22 * max(len(r.batches) for r in trace.rounds) + 30
    s: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="13">',
        "<title>A call tree and the rounds its operations are sent in</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="28" font-size="15" font-weight="bold">call tree</text>',
    ]
    # Round columns: a band per round, its heading, and the calls it made at the bottom.
    for r in range(1, n_rounds + 1):
        x = col0 + (r - 1) * col_w
        fill = "#f3f5f9" if r % 2 else "#e8ecf3"
        s.append(f'<rect x="{x}" y="40" width="{col_w}" height="{legend_y - 40 + 4}" fill="{fill}"/>')
        s.append(f'<text x="{x + col_w / 2}" y="28" text-anchor="middle" font-size="15" '
                 f'font-weight="bold">round {r}</text>')
        for j, b in enumerate(trace.rounds[r - 1].batches):
            y = legend_y + 24 + j * 22
            color = COLORS.get(b.name, "#555555")
            s.append(f'<rect x="{x + 8}" y="{y - 11}" width="12" height="12" rx="2" fill="{color}"/>')
            s.append(f'<text x="{x + 26}" y="{y}">{escape(b.name)} \u00d7{b.size}: 1 call</text>')
    s.append(f'<text x="{left}" y="{legend_y + 24}" font-weight="bold">what each round sends</text>')
    s.append(f'<text x="{left}" y="{legend_y + 46}" fill="#555555">one run_batch call per class '
             "per round</text>")
    # The tree: an outline with connectors, and a mark in the column of each operation's round.
    parents: dict[int, int] = {}
    last_at_depth: dict[int, int] = {}
    for i, (depth, _node, _last) in enumerate(outline):
        last_at_depth[depth] = i
        if depth:
            parents[i] = last_at_depth[depth - 1]
    for i, (depth, node, _last) in enumerate(outline):
        y = top + i * row_h
        x = left + depth * indent
        if depth:
            p = parents[i]
            px = left + (depth - 1) * indent + 6
            py = top + p * row_h + 6
            s.append(f'<path d="M{px} {py} V{y - 4} H{x - 4}" fill="none" stroke="#9aa3b2"/>')
        if node.is_op:
            assert node.op is not None
            color = COLORS.get(node.op[0], "#555555")
            s.append(f'<text x="{x}" y="{y}" font-family="Menlo, Consolas, monospace" '
                     f'fill="{color}">{escape(node.label)}</text>')
            cx = col0 + (node.round - 1) * col_w + col_w / 2
            s.append(f'<line x1="{x + 8 * len(node.label) + 6}" y1="{y - 4}" x2="{cx - 9}" y2="{y - 4}" '
                     'stroke="#c8ced8" stroke-dasharray="2 3"/>')
            s.append(f'<circle cx="{cx}" cy="{y - 4}" r="7" fill="{color}"/>')
        else:
            rs = subtree_rounds(node)
            x1 = col0 + (min(rs) - 1) * col_w + 12
            x2 = col0 + (max(rs) - 1) * col_w + col_w - 12
            s.append(f'<rect x="{x1}" y="{y - 10}" width="{x2 - x1}" height="12" rx="6" '
                     'fill="#ffffff" stroke="#9aa3b2"/>')
            s.append(f'<text x="{x}" y="{y}" font-weight="bold">{escape(node.label)}</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def main(argv: list[str]) -> int:
    trace = run(TREE)
    out = Path(argv[0]) if argv else Path(__file__).with_name("rounds.svg")
    out.write_text(draw(TREE, trace), encoding="utf-8")
    print(f"wrote {out} ({len(trace.rounds)} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
