"""Every public name of DESIGN.md section 2 is importable from ``batch`` and documented."""

from __future__ import annotations

import inspect

import pytest

import batch
import batch.sql
import batch.testing

DESIGN_NAMES = """BatchableOperation BatchExecutor execute execute_many execute_async
execute_many_async execute_iter GenResult SharedGenerator cached_generator GeneratorCache
gen_structured settled Trace OperationCache BatchError BatchResultError CycleError
YieldTypeError Batcher GenUtils""".split()


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_design_names_are_exported(name: str) -> None:
    assert name in batch.__all__, f"batch.__all__ lacks {name}"
    assert hasattr(batch, name)


@pytest.mark.parametrize("module", [batch, batch.sql, batch.testing], ids=lambda m: m.__name__)
def test_every_public_name_has_a_docstring(module: object) -> None:
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    missing = []
    for name in names:
        obj = getattr(module, name)
        if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
            continue
        if getattr(obj, "__module__", "").split(".")[0] != "batch":
            continue  # re-exported from elsewhere
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_") or not callable(value):
                    continue
                if not inspect.getdoc(getattr(obj, attr)):
                    missing.append(f"{name}.{attr}")
    assert missing == [], f"{module.__name__}: no docstring on {missing}"


def test_the_package_is_typed() -> None:
    import importlib.resources

    assert importlib.resources.files("batch").joinpath("py.typed").is_file()
