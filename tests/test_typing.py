"""The typed style (DESIGN section 13): real types under ``mypy --strict``, same batching.

``tests/typed_example.py`` is a user module with ``reveal_type`` lines; the
first test runs ``mypy --strict`` on it and compares every revealed type and
every expected error with the comments in the file.  The other tests check
that ``yield from op`` / ``gather`` / ``gather_list`` batch exactly like the
untyped yields (same rounds, same groups) and refuse bad input at the call.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

import batch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = Path(__file__).resolve().parent / "typed_example.py"

Gen = Generator[Any, Any, Any]


def _expectations() -> tuple[dict[int, str], dict[int, str]]:
    """``{line: type}`` from ``# T:`` comments and ``{line: code}`` from ``# E:`` comments."""
    types: dict[int, str] = {}
    errors: dict[int, str] = {}
    for number, line in enumerate(EXAMPLE.read_text().splitlines(), start=1):
        if (m := re.search(r"# T: (.+)$", line)) is not None:
            types[number] = m.group(1).strip()
        if (m := re.search(r"# E: ([\w-]+)$", line)) is not None:
            errors[number] = m.group(1)
    return types, errors


def _normalise(revealed: str) -> str:
    return revealed.replace("typed_example.", "").replace("typing.", "").replace("builtins.", "")


def _run_mypy(tmp_path: Path) -> tuple[dict[int, str], dict[int, str], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), str(EXAMPLE.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    revealed: dict[int, str] = {}
    errors: dict[int, str] = {}
    for line in proc.stdout.splitlines():
        if (m := re.match(r".*typed_example\.py:(\d+): note: Revealed type is \"(.+)\"$", line)):
            revealed[int(m.group(1))] = _normalise(m.group(2))
        elif (m := re.match(r".*typed_example\.py:(\d+): error: .*\[([\w-]+)\]$", line)):
            errors[int(m.group(1))] = m.group(2)
    return revealed, errors, proc.stdout + proc.stderr


def test_mypy_strict_reveals_the_documented_types(tmp_path: Path) -> None:
    want_types, want_errors = _expectations()
    assert len(want_types) >= 24 and len(want_errors) >= 5  # the example was not emptied
    revealed, errors, output = _run_mypy(tmp_path)
    wrong = {line: (want, revealed.get(line)) for line, want in want_types.items()
             if revealed.get(line) != want}
    assert not wrong, f"line: (expected type, mypy's type) {wrong}\n{output}"
    missed = {line: code for line, code in want_errors.items() if errors.get(line) != code}
    assert not missed, f"mypy did not report these mistakes (line: code) {missed}\n{output}"
    extra = {line: code for line, code in errors.items() if line not in want_errors}
    assert not extra, f"mypy reported errors the example does not expect {extra}\n{output}"


def test_the_typed_example_runs() -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLE)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr


# -- yield from batches like yield ----------------------------------------------


def _tree(recorder: Any, typed: bool) -> tuple[Any, list[tuple[str, list[Any]]], int]:
    """The same call tree, written with ``yield`` or with ``yield from``."""
    recorder.calls.clear()
    GetUser = recorder.op("GetUser")
    GetName = recorder.op("GetName", lambda k: f"name{k}")

    def gen_user(uid: int) -> Gen:
        if typed:
            user = yield from GetUser(uid)
            name = yield from GetName(user)
        else:
            user = yield GetUser(uid)
            name = yield GetName(user)
        return name

    def gen_page() -> Gen:
        if typed:
            a, b = yield from batch.gather(gen_user(1), GetUser(2))
            rest = yield from batch.gather_list([GetUser(i) for i in (3, 4)])
            more = yield from batch.gather_list(gen_user(i) for i in (5, 6))
        else:
            a, b = yield gen_user(1), GetUser(2)
            rest = yield [GetUser(i) for i in (3, 4)]
            more = yield [gen_user(i) for i in (5, 6)]
        return (a, b), rest, more

    value = recorder.execute([gen_page(), gen_user(7)])
    return value, list(recorder.calls), recorder.rounds


def test_yield_from_batches_exactly_like_yield(recorder: Any) -> None:
    plain = _tree(recorder, typed=False)
    typed = _tree(recorder, typed=True)
    assert typed[1] == plain[1] == [
        ("GetUser", [2, 1, 7]),
        ("GetName", [1, 7]),
        ("GetUser", [3, 4]),
        ("GetUser", [5, 6]),
        ("GetName", [5, 6]),
    ]
    assert typed[2] == plain[2] == 5
    assert typed[0] == plain[0] == [(("name1", 2), [3, 4], ["name5", "name6"]), "name7"]


def test_yield_from_op_raises_its_failure_at_the_yield(recorder: Any) -> None:
    Get = recorder.op("Get", lambda k: ValueError(f"no row {k}") if k < 0 else k)

    def gen() -> Gen:
        try:
            yield from Get(-1)
        except ValueError as exc:
            caught = str(exc)
        ok = yield from Get(1)
        return caught, ok

    assert recorder.execute(gen()) == ("no row -1", 1)
    assert recorder.calls == [("Get", [-1]), ("Get", [1])]


def test_gather_raises_the_first_failure_after_every_item_finished(recorder: Any) -> None:
    Get = recorder.op("Get", lambda k: ValueError(f"no row {k}") if k < 0 else k)
    finished: list[int] = []

    def gen_slow(k: int) -> Gen:
        a = yield from Get(k)
        b = yield from Get(a + 100)
        finished.append(b)
        return b

    def gen() -> Gen:
        with pytest.raises(ValueError, match="no row -2"):
            yield from batch.gather(gen_slow(1), Get(-2), Get(-3))
        return "caught"

    assert recorder.execute(gen()) == "caught"
    assert finished == [101]
    assert recorder.calls == [("Get", [-2, -3, 1]), ("Get", [101])]


def test_gather_of_nothing_costs_no_round(recorder: Any) -> None:
    def gen() -> Gen:
        none = yield from batch.gather()
        empty = yield from batch.gather_list([])
        return none, empty

    assert recorder.execute(gen()) == ((), [])
    assert recorder.rounds == 0


def test_gather_of_seven_gives_a_tuple_of_seven(recorder: Any) -> None:
    Get = recorder.op("Get")

    def gen() -> Gen:
        return (yield from batch.gather(*[Get(i) for i in range(7)]))

    assert recorder.execute(gen()) == tuple(range(7))
    assert recorder.calls == [("Get", list(range(7)))]


def test_gen_is_a_generator_alias() -> None:
    assert batch.Gen[int] == Generator[Any, Any, int]


def test_yield_from_op_in_execute_async(recorder: Any) -> None:
    Get = recorder.op("Get")

    def gen() -> Gen:
        a, b = yield from batch.gather(Get(1), Get(2))
        c = yield from Get(a + b)
        return c

    assert asyncio.run(batch.execute_async(gen())) == 3
    assert recorder.calls == [("Get", [1, 2]), ("Get", [3])]


# -- bad input, refused at the call ------------------------------------------------


def test_gather_refuses_a_generator_expression(recorder: Any) -> None:
    Get = recorder.op("Get")
    with pytest.raises(TypeError, match=r"batch.gather\(\) got a generator expression; pass the "
                                        r"operations themselves: .*gather_list\(\[GetUser"):
        batch.gather(Get(i) for i in range(3))


def test_gather_refuses_a_generator_function_not_called() -> None:
    def gen_user(uid: int) -> Gen:
        return (yield [])

    with pytest.raises(TypeError, match=r"batch.gather\(\) got the function .*gen_user itself; "
                                        r"call it: .*gen_user\(\.\.\.\)"):
        batch.gather(gen_user)  # type: ignore[call-overload]


def test_gather_refuses_and_closes_a_coroutine() -> None:
    async def fetch() -> int:
        return 1

    coro = fetch()
    with pytest.raises(TypeError, match=r"batch.gather\(\) got a coroutine; make run_batch async "
                                        r"and use batch.execute_async instead"):
        batch.gather(coro)  # type: ignore[call-overload]
    assert coro.cr_frame is None  # closed: no "never awaited" warning later


def test_gather_refuses_an_async_generator_and_a_plain_value() -> None:
    async def agen() -> Any:
        yield 1

    with pytest.raises(TypeError, match=r"got an async generator; batch generators are plain"):
        batch.gather(agen())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"batch.gather_list\(\) got a int; it takes "
                                        r"BatchableOperations and batch generators"):
        batch.gather_list([1])  # type: ignore[list-item]


def test_gather_list_refuses_one_operation_and_a_batch_generator(recorder: Any) -> None:
    Get = recorder.op("Get")

    def gen_users() -> Gen:
        return (yield [Get(1)])

    with pytest.raises(TypeError, match=r"batch.gather_list\(\) takes an iterable of operations or "
                                        r"generators, got Get; for a fixed set of items use "
                                        r"batch.gather\(a, b, \.\.\.\)"):
        batch.gather_list(Get(1))  # type: ignore[arg-type]
    gen = gen_users()
    with pytest.raises(TypeError, match=r"got the batch generator .*gen_users; .* write "
                                        r"`yield from .*gen_users\(\.\.\.\)`"):
        batch.gather_list(gen)
    gen.close()
    assert recorder.calls == []


def test_the_typing_how_to_blocks_run_and_type_check(tmp_path: Path) -> None:
    page = ROOT / "docs" / "how-to" / "typing.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) >= 4
    files = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"typing_block_{i}.py"
        path.write_text(block)
        files.append(str(path))
        run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                             timeout=60, env={"PYTHONPATH": str(ROOT)})
        assert run.returncode == 0, f"block {i} of {page.name} failed:\n{run.stderr}"
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), *files],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_an_editable_install_is_visible_to_mypy_outside_the_repository(tmp_path: Path) -> None:
    # The README's `pip install -e '.[test]'`, in a fresh venv; mypy run from
    # elsewhere must find `batch` and its types (a path entry, not an import hook).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(ROOT), "mypy"],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "user_module.py").write_text(
        "import batch\n\n"
        "class Double(batch.BatchableOperation[int]):\n"
        "    def __init__(self, n: int) -> None:\n"
        "        self.n = n\n\n"
        "    @classmethod\n"
        "    def run_batch(cls, operations: list['Double']) -> list[int]:\n"
        "        return [op.n * 2 for op in operations]\n\n"
        "def gen_twice(n: int) -> batch.Gen[int]:\n"
        "    a = yield from Double(n)\n"
        "    return a * 2\n\n"
        "reveal_type(batch.execute(gen_twice(1)))\n"
    )
    checked = subprocess.run([str(python), "-m", "mypy", "--strict", "user_module.py"],
                             cwd=outside, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r'Revealed type is "(builtins\.)?int"', checked.stdout), checked.stdout
