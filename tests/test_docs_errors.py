"""docs/explanation/errors.md: every ```python block runs on its own, as a script."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "explanation" / "errors.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(encoding="utf-8"), re.M | re.S)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_each_python_block_runs(number: int) -> None:
    code = compile(BLOCKS[number], f"{PAGE.name} block {number + 1}", "exec")
    exec(code, {"__name__": f"errors_md_block_{number + 1}"})
