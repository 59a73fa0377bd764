"""A griffe extension: render batch's reST-flavoured docstrings as Markdown.

The docstrings in ``batch/`` are written for ``help()`` and doctest: Sphinx roles
(``:class:`Trace```), ``>>>`` sessions and ``::`` literal blocks.  mkdocstrings
renders docstrings as Markdown, where those would show as raw text, so this
extension rewrites them when griffe loads the package (the source stays as it is):

- a role becomes inline code (``:class:`~batch.Trace``` -> `` `Trace` ``);
- a run of ``>>>`` / ``...`` lines and their output becomes a ``pycon`` fence;
- a paragraph ending in ``::`` loses one colon and its indented block becomes a fence.

mkdocs.yml loads it with ``extensions: [docs/griffe_roles.py:SphinxRoles]``.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|data|exc|mod|obj|const):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    if match.group(1):  # ~a.b.C shows as C, as in Sphinx
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def to_markdown(text: str) -> str:
    """Rewrite one docstring's roles, doctest sessions and literal blocks as Markdown."""
    lines = _ROLE.sub(_role, text).split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(">>>"):
            pad = " " * _indent(line)
            out.append(f"{pad}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append(f"{pad}```")
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            base = _indent(line)
            out.append(line[:-2].rstrip() + (":" if stripped != "::" else ""))
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block: list[str] = []
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
                block.append(lines[j])
                j += 1
            while block and not block[-1].strip():
                block.pop()
                j -= 1
            if block:
                pad = " " * base
                body = textwrap.dedent("\n".join(block)).split("\n")
                out.append("")
                out.append(f"{pad}```python")
                out.extend(pad + b if b else "" for b in body)
                out.append(f"{pad}```")
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of the loaded package with :func:`to_markdown`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Called by griffe for each module, class, function and attribute."""
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
