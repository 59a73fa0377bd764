"""A small pytest plugin: the ``batch_trace`` fixture.

A test that takes ``batch_trace`` gets a :class:`batch.testing.Captured`
that sees every batch execution the test runs; when the test fails, the
trace summary of those executions is added to the failure report as a
``batch trace`` section::

    def test_page(batch_trace):
        render_page(1)
        assert batch_trace.round_count == 2

Installing ``batch`` registers the plugin (a ``pytest11`` entry point), so
the fixture is there in every project that has ``batch`` installed.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from .testing import Captured, capture

__all__ = ["batch_trace"]

_CAPTURED = pytest.StashKey[Captured]()


@pytest.fixture
def batch_trace(request: pytest.FixtureRequest) -> Iterator[Captured]:
    """Every batch execution of the test; its summary is printed if the test fails."""
    with capture() as seen:
        request.node.stash[_CAPTURED] = seen
        yield seen


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the captured trace summary to a failed test's report."""
    report = yield
    seen = item.stash.get(_CAPTURED, None)
    if seen is not None and report.failed and report.when in ("call", "teardown"):
        report.sections.append(("batch trace", seen.summary()))
    return report
