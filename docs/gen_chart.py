"""Draw the performance page's chart from the JSON that ``python -m benchmarks --json`` writes.

For each workload W1-W4 the chart shows every contender's overhead per operation
beyond the ideal loop, as a multiple of raw generators' overhead (the ``x raw``
column of the benchmark tables): 1.0 is the floor any generator framework pays.
A contender that failed (aiodataloader's RecursionError on W3) is labelled, not
drawn.  Standard library only::

    python -m benchmarks --json docs/explanation/benchmarks.json
    python docs/gen_chart.py            # writes docs/explanation/benchmarks.svg

``python docs/gen_chart.py IN.json OUT.svg`` reads and writes other files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
DEFAULT_IN = HERE / "explanation" / "benchmarks.json"
DEFAULT_OUT = HERE / "explanation" / "benchmarks.svg"
WORKLOADS = {
    "W1": "W1: one root, 100,000 ops",
    "W2": "W2: 1,000 roots, 3 rounds",
    "W3": "W3: 10,000-deep chain",
    "W4": "W4: 1,000,000 ops, deduped",
}
# Contenders by the start of their name in the JSON, in drawing order.
CONTENDERS = [("raw generators", "#9aa3b2"), ("raw + contract (floor)", "#c4cad4"),
              ("batch", "#3b6fb6"),
              ("asynq", "#d9822b"), ("aiodataloader", "#8e5bb5")]


def _color(contender: str) -> str | None:
    for prefix, color in CONTENDERS:
        if contender == prefix or contender.startswith(prefix + " "):
            return color
    return None


def rows(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The drawn contenders of each workload, in drawing order."""
    out: dict[str, list[dict[str, Any]]] = {w: [] for w in WORKLOADS}
    for row in data["workloads"]:
        if row["workload"] in out and _color(row["contender"]):
            out[row["workload"]].append(row)
    order = [c for c, _ in CONTENDERS]
    for items in out.values():
        items.sort(key=lambda r: next(i for i, c in enumerate(order) if r["contender"].startswith(c)))
    return out


def draw(data: dict[str, Any]) -> str:
    """The chart as SVG text."""
    by_workload = rows(data)
    ratios = [r["ratio"] for items in by_workload.values() for r in items if r["ratio"] is not None]
    top = max(5.0, float(int(max(ratios) / 5) + 1) * 5)
    bar_h, gap, group_gap = 16, 4, 22
    left, label_w, plot_w, right = 16, 210, 470, 70
    x0 = left + label_w
    y = 72
    meta = data["meta"]
    width = x0 + plot_w + right
    s: list[str] = []
    body: list[str] = []
    for workload, title in WORKLOADS.items():
        body.append(f'<text x="{left}" y="{y + 12}" font-weight="bold">{escape(title)}</text>')
        y += 20
        for r in by_workload[workload]:
            color = _color(r["contender"]) or "#555555"
            body.append(f'<text x="{x0 - 8}" y="{y + 12}" text-anchor="end">{escape(r["contender"])}</text>')
            if r["ratio"] is None:
                status = "raw generators (reference)" if r["contender"] == "raw generators" else r["status"]
                body.append(f'<text x="{x0 + 6}" y="{y + 12}" fill="#a33">{escape(status)}</text>')
            else:
                w = plot_w * r["ratio"] / top
                body.append(f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
                bold = ' font-weight="bold"' if r["contender"] == "batch" else ""
                body.append(f'<text x="{x0 + w + 5:.1f}" y="{y + 12}"{bold}>{r["ratio"]:.2f}x</text>')
            y += bar_h + gap
        y += group_gap
    height = y + 40
    s.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="13">')
    s.append("<title>Overhead per operation beyond the ideal loop, as a multiple of raw generators'"
             "</title>")
    s.append(f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    s.append(f'<text x="{left}" y="24" font-size="15" font-weight="bold">Overhead per operation, '
             "as a multiple of raw generators' (lower is better)</text>")
    s.append(f'<text x="{left}" y="44" fill="#555555">{escape(_caption(meta))}</text>')
    # Grid lines every 5x, and the 1x line (raw generators).
    step = 5
    for k in range(0, int(top) + 1, step):
        gx = x0 + plot_w * k / top
        s.append(f'<line x1="{gx:.1f}" y1="60" x2="{gx:.1f}" y2="{y - 10}" stroke="#e3e6eb"/>')
        s.append(f'<text x="{gx:.1f}" y="{y + 6}" text-anchor="middle" fill="#555555">{k}x</text>')
    one = x0 + plot_w / top
    s.append(f'<line x1="{one:.1f}" y1="60" x2="{one:.1f}" y2="{y - 10}" stroke="#9aa3b2" '
             'stroke-dasharray="4 3"/>')
    s.extend(body)
    s.append("</svg>")
    return "\n".join(s) + "\n"


def _caption(meta: dict[str, Any]) -> str:
    peers = meta.get("peers", {})
    return (f"python -m benchmarks, best of {meta['repeat']}, Python {meta['python']}, "
            f"{meta['cpus']} cores, {meta['date'][:10]}; asynq {peers.get('asynq')}, "
            f"aiodataloader {peers.get('aiodataloader')}")


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT_IN
    target = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    data = json.loads(source.read_text(encoding="utf-8"))
    if data["meta"].get("quick"):
        print(f"{source} is a --quick run: its sizes are too small to chart", file=sys.stderr)
        return 2
    target.write_text(draw(data), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
