"""Every ```python block of the documentation runs on its own and passes.

The blocks of ``docs/**/*.md`` and ``README.md`` are collected one test each
(``docs/tutorial.md:42``).  Each runs as a script in a fresh interpreter, in a
temporary working directory, with this checkout first on ``sys.path`` and a
time limit, so a block can lean on nothing that an earlier block defined:
what a reader copies is what runs.  ``console`` blocks (shell commands) and
other languages are not run.

A block preceded by the line ``<!-- requires: redis -->`` runs only when
``BATCH_TEST_REDIS_URL`` is set (it gets it as ``REDIS_URL``); one preceded by
``<!-- requires: postgres -->`` only when ``BATCH_TEST_PG_DSN`` is set (it gets
it as ``PG_DSN``).  Otherwise the block skips and says why, and in CI
(``CI=true``, where ``.ci/run`` starts both servers) a missing server fails it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIME_LIMIT = 60.0  # seconds per block; blocks are written to take well under 2
REQUIRES = re.compile(r"<!--\s*requires:\s*([\w, -]+?)\s*-->")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
# Languages that hold Python a reader might run: they must be ```python so that they run here.
PYTHON_ALIASES = {"py", "py3", "python3", "pycon", "pyi"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    requires: frozenset[str]

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def parse_blocks(path: Path, text: str) -> list[Block]:
    """The fenced code blocks of one Markdown text, in page order.

    A fence may be indented (inside a list item): the block's lines lose that
    indentation.  ``<!-- requires: x -->`` on the last non-blank line before a
    fence marks what the block needs.
    """
    blocks: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        language = m.group("info").strip().split(" ")[0].strip("{}.").lower()
        previous = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        req = REQUIRES.fullmatch(previous)
        requires = frozenset(r.strip() for r in req.group(1).split(",")) if req else frozenset()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence[0] * len(fence)) and stripped.strip(fence[0]) == "":
                break
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        else:
            raise ValueError(f"{path}:{i + 1}: code block opened with {fence} is never closed")
        blocks.append(Block(path, i + 1, language, "\n".join(body) + "\n", requires))
        i = j + 1
    return blocks


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def all_blocks() -> list[Block]:
    return [b for page in pages() for b in parse_blocks(page, page.read_text(encoding="utf-8"))]


PYTHON_BLOCKS = [b for b in all_blocks() if b.language == "python"]


def run_block(block: Block, tmp_path: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``block`` as a script whose line numbers are the page's, in ``tmp_path``."""
    script = tmp_path / (re.sub(r"\W", "_", block.name) + ".py")
    script.write_text("\n" * block.line + block.code, encoding="utf-8")
    env = {**os.environ, **env_extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIME_LIMIT, check=False,
    )


# requirement -> (the variable that points at the server, the variable the block reads, what it is)
SERVERS = {
    "redis": ("BATCH_TEST_REDIS_URL", "REDIS_URL", "a Redis server"),
    "postgres": ("BATCH_TEST_PG_DSN", "PG_DSN", "a PostgreSQL server"),
}


Started = dict[str, Future[subprocess.CompletedProcess[str]]]


def _run_in_temp_dir(block: Block) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="batch-doc-") as cwd:
        return run_block(block, Path(cwd), {})


@pytest.fixture(scope="session")
def started_blocks(request: pytest.FixtureRequest) -> Iterator[Started]:
    """The selected blocks that need no server, started side by side (one per core).

    Each still runs alone in its own interpreter and directory; only the waiting overlaps.
    Blocks that need a server run one at a time in their test, so two of them never share it.
    """
    selected = [item.callspec.params["block"] for item in request.session.items
                if isinstance(item, pytest.Function) and item.originalname == "test_block_runs_on_its_own"]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="doc-block") as pool:
        futures = {b.name: pool.submit(_run_in_temp_dir, b) for b in selected if not b.requires}
        try:
            yield futures
        finally:
            for future in futures.values():
                future.cancel()


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.name)
def test_block_runs_on_its_own(block: Block, tmp_path: Path, started_blocks: Started) -> None:
    env_extra: dict[str, str] = {}
    unknown = block.requires - SERVERS.keys()
    assert not unknown, f"{block.name}: unknown requirement {sorted(unknown)} (known: {sorted(SERVERS)})"
    for need in sorted(block.requires):
        source, target, what = SERVERS[need]
        value = os.environ.get(source)
        if not value:
            reason = f"{block.name} needs {what}: set {source}"
            if os.environ.get("CI") == "true":
                pytest.fail(reason + " (CI must start one)")
            pytest.skip(reason)
        env_extra[target] = value
    try:
        started = started_blocks.get(block.name)
        done = started.result() if started is not None else run_block(block, tmp_path, env_extra)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.name}: still running after {TIME_LIMIT:.0f} s")
    assert done.returncode == 0, (
        f"{block.name} failed when run on its own (exit {done.returncode}):\n"
        f"{done.stderr[-4000:]}\n--- stdout ---\n{done.stdout[-2000:]}"
    )


def test_the_docs_have_runnable_blocks() -> None:
    """The collector finds the blocks: a page that should show code has some."""
    counted = {p.relative_to(ROOT).as_posix(): 0 for p in pages()}
    for b in PYTHON_BLOCKS:
        counted[b.path.relative_to(ROOT).as_posix()] += 1
    for page in ["README.md", "docs/tutorial.md", "docs/how-to/sql.md", "docs/how-to/testing.md",
                 "docs/how-to/concurrency.md", "docs/explanation/rounds.md"]:
        assert counted[page] > 0, f"{page} has no ```python block: the collector or the page is wrong"


def test_python_code_is_fenced_as_python() -> None:
    """Python under another fence name would silently escape this runner."""
    wrong = [b.name for b in all_blocks() if b.language in PYTHON_ALIASES]
    doctest_style = [b.name for b in PYTHON_BLOCKS if re.search(r"^>>> ", b.code, re.M)]
    assert wrong == [], f"use ```python (a runnable script) instead of these fences: {wrong}"
    assert doctest_style == [], f"write these as scripts with asserts, not >>> sessions: {doctest_style}"


def test_parser_reads_fences_markers_and_indentation(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    text = (
        "# Title\n"
        "```console\n$ python -m batch demo\n```\n"
        "<!-- requires: redis -->\n\n"
        "```python\nimport os\nprint(os.environ['REDIS_URL'])\n```\n"
        "- a list item:\n\n"
        "  ```python\n  x = 1\n  if x:\n      print(x)\n  ```\n"
        "````python\n```\nnot a fence end\n````\n"
    )
    blocks = parse_blocks(page, text)
    assert [(b.line, b.language, b.requires) for b in blocks] == [
        (2, "console", frozenset()),
        (7, "python", frozenset({"redis"})),
        (13, "python", frozenset()),
        (18, "python", frozenset()),
    ]
    assert blocks[2].code == "x = 1\nif x:\n    print(x)\n"
    assert blocks[3].code == "```\nnot a fence end\n"
    with pytest.raises(ValueError, match=r"page.md:1: code block opened with ``` is never closed"):
        parse_blocks(page, "```python\nx = 1\n")


def test_a_failing_block_fails_with_the_page_line(tmp_path: Path) -> None:
    (block,) = parse_blocks(ROOT / "docs" / "x.md", "text\n\n```python\nx = 1\nassert x == 2\n```\n")
    done = run_block(block, tmp_path, {})
    assert done.returncode == 1
    assert 'line 5' in done.stderr and "AssertionError" in done.stderr


@pytest.mark.parametrize(("script", "args", "picture"), [
    ("docs/gen_chart.py", ["docs/explanation/benchmarks.json"], "docs/explanation/benchmarks.svg"),
    ("docs/explanation/gen_rounds_svg.py", [], "docs/explanation/rounds.svg"),
], ids=["benchmarks.svg", "rounds.svg"])
def test_committed_pictures_are_what_their_scripts_draw(
    script: str, args: list[str], picture: str, tmp_path: Path
) -> None:
    """The SVGs are generated, not drawn by hand: redrawing them gives the committed files.

    rounds.svg is drawn from a real execution, so a change in how the executor forms rounds
    shows up here as a stale picture.
    """
    out = tmp_path / "out.svg"
    done = subprocess.run([sys.executable, str(ROOT / script), *[str(ROOT / a) for a in args], str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIME_LIMIT, check=False)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == (ROOT / picture).read_text(encoding="utf-8"), (
        f"{picture} is stale: run python {script} {' '.join(args)} and commit the result"
    )


def test_docstrings_are_rewritten_as_markdown_for_the_reference() -> None:
    pytest.importorskip("griffe", reason="the docs extra is not installed: pip install -e '.[docs]'")
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from griffe_roles import to_markdown
    finally:
        sys.path.remove(str(ROOT / "docs"))
    text = (
        "Use :class:`~batch.Trace` or :func:`batch.execute`.\n\n"
        "Example::\n\n    x = 1\n    y = 2\n\nAfter.\n\n"
        "    >>> 1 + 1\n    2\n"
    )
    assert to_markdown(text) == (
        "Use `Trace` or `batch.execute`.\n\n"
        "Example:\n\n```python\nx = 1\ny = 2\n```\n\nAfter.\n\n"
        "    ```pycon\n    >>> 1 + 1\n    2\n    ```\n"
    )


def test_every_public_name_of_batch_is_in_the_reference() -> None:
    """core.md places names under headings; the build hook adds any name it leaves out."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from hooks import rest_of
    finally:
        sys.path.remove(str(ROOT / "docs"))
    import batch

    page = (ROOT / "docs" / "reference" / "core.md").read_text(encoding="utf-8")
    built = rest_of(page)
    documented = set(re.findall(r"^:::\s*batch\.(\w+)$", built, re.M))
    assert documented == set(batch.__all__)
    shortened = rest_of(page.replace("::: batch.settled\n", ""))
    assert shortened.endswith("## Also exported\n\n::: batch.settled\n\n")


@pytest.mark.parametrize(("module_name", "page"), [
    ("batch.sql", "sql.md"), ("batch.testing", "testing.md"), ("batch.http", "http.md"),
    ("batch.multipart", "http.md"), ("batch.redis", "redis.md"),
])
def test_every_public_name_of_a_submodule_is_in_its_reference_page(module_name: str, page: str) -> None:
    import importlib

    module = importlib.import_module(module_name)
    text = (ROOT / "docs" / "reference" / page).read_text(encoding="utf-8")
    entry = re.search(rf"^::: {re.escape(module_name)}\n((?:    .*\n)+)", text, re.M)
    assert entry, f"docs/reference/{page} has no '::: {module_name}' entry"
    members = re.findall(r"^        - (\w+)$", entry.group(1), re.M)
    missing = sorted(set(module.__all__) - set(members))
    assert missing == [], f"add {missing} to the members of '::: {module_name}' in docs/reference/{page}"
