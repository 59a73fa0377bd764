"""MkDocs hooks: keep the reference complete as public names are added.

A reference page may end with the marker ``<!-- rest of: batch -->``.  At build time the
marker becomes one ``::: batch.Name`` entry for every name in ``batch.__all__`` that the page
does not already document with its own ``:::`` line, under an "Also exported" heading (or
nothing, when every name is placed).  A name added to ``batch.__all__`` therefore shows up in
the reference on the next build even before someone files it under the right heading.

mkdocs.yml loads this file with ``hooks: [docs/hooks.py]``.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

# Document this checkout's batch, however mkdocs was started.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MARKER = re.compile(r"<!--\s*rest of:\s*([\w.]+)\s*-->")
ENTRY = re.compile(r"^:::\s*([\w.]+)", re.M)


def rest_of(markdown: str) -> str:
    """Replace each marker with entries for the module's public names the page leaves out."""

    def expand(match: re.Match[str]) -> str:
        module_name = match.group(1)
        module = importlib.import_module(module_name)
        placed = set(ENTRY.findall(markdown))
        missing = [n for n in getattr(module, "__all__", []) if f"{module_name}.{n}" not in placed]
        if not missing:
            return ""
        return "## Also exported\n\n" + "\n\n".join(f"::: {module_name}.{n}" for n in missing) + "\n"

    return MARKER.sub(expand, markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs event: expand the markers of a page before it is rendered."""
    return rest_of(markdown)
