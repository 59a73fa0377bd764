"""``python -m batch demo``: the numbers it prints, the page check, --trace, progress, errors."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from batch import _demo
from batch._demo import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["demo", *args])
    out, err = capsys.readouterr()
    return status, out, err


def figures(out: str) -> dict[str, tuple[float, float]]:
    """The side-by-side table as {row: (one query per object, batch generators)}."""
    table = {}
    for name in ("queries", "rounds", "wall time"):
        m = re.search(rf"^{name} +([\d,.]+)(?: ms)? +([\d,.]+)(?: ms)?$", out, re.M)
        assert m, f"no {name!r} row in:\n{out}"
        table[name] = (float(m.group(1).replace(",", "")), float(m.group(2).replace(",", "")))
    return table


def page_size(out: str) -> tuple[int, int, int]:
    m = re.search(r"^feed of user \d+: (\d+) people followed, (\d+) posts, (\d+) comments;", out, re.M)
    assert m, out
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_default_run_prints_both_modes_and_checks_the_pages(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys)
    assert status == 0, err
    assert out.startswith("sqlite3 database: 500 users, 2,000 posts, 6,000 comments, 5,000 follows; "
                          "no simulated latency")
    people, posts, comments = page_size(out)
    assert people > 5 and posts > people and comments > posts
    nums = figures(out)
    naive_q, batch_q = nums["queries"]
    # naive: reader + follows, then per person: user + posts, per post: author + comments,
    # per comment: its author
    assert naive_q == 2 + 2 * people + 2 * posts + comments
    assert nums["rounds"][0] == naive_q
    # batch: users+follows, users+posts, users+comments, users: 7 statements in 4 rounds
    assert (batch_q, nums["rounds"][1]) == (7, 4)
    assert batch_q < naive_q
    assert "wall time: best of 3 runs" in out
    assert re.search(r"^pages equal: yes \(\d+ lines; \d+x fewer queries", out, re.M)
    assert 'SELECT * FROM "users" WHERE "id" IN (? x ' in out
    assert re.search(r"^4 rounds, 7 batches, \d+ operations sent", out, re.M)   # the trace's table
    assert err == ""


def test_simulated_latency_makes_round_trips_the_cost(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--simulated-latency-ms", "2")
    assert status == 0
    assert "simulated latency 2 ms per query" in out and "wall time: one run" in out
    nums = figures(out)
    naive_ms, batch_ms = nums["wall time"]
    naive_q, batch_q = nums["queries"]
    assert naive_ms >= 2 * naive_q         # every query paid its 2 ms
    assert batch_ms >= 2 * batch_q
    assert batch_ms < naive_ms / 5


def test_trace_file_is_a_perfetto_timeline(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "feed.json"
    status, out, _ = run(capsys, "--trace", str(path))
    assert status == 0
    assert f"timeline written to {path}: open it in https://ui.perfetto.dev" in out
    doc = json.loads(path.read_text())
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    slices = [e for e in events if e.get("ph") == "X" and e.get("name") == "Select"]
    assert len(slices) == 7
    assert sorted({e["args"]["round"] for e in slices}) == [1, 2, 3, 4]


def test_a_page_that_differs_is_an_error(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = _demo.gen_feed

    def gen_wrong(db: Any, user_id: int) -> Generator[Any, Any, Any]:
        page = yield real(db, user_id)
        page["following"] = page["following"][1:]
        return page

    monkeypatch.setattr(_demo, "gen_feed", gen_wrong)
    status, out, err = run(capsys, "--repeat", "1")
    assert status == 1
    assert "the two pages differ: this is a bug in batch; please report it" in err
    assert "pages equal" not in out


def test_progress_lines_when_building_is_slow(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_demo, "PROGRESS_AFTER", -1.0)   # every step counts as slow
    status, _, err = run(capsys, "--scale", "0.1", "--repeat", "1")
    assert status == 0
    steps = re.findall(r"^building the demo database: +(\d+)% \((\w+) done, [\d.]+ s\)$", err, re.M)
    assert steps == [("25", "users"), ("50", "posts"), ("75", "comments"), ("100", "follows")]


def test_a_fast_build_prints_no_progress(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "--scale", "0.1", "--repeat", "1")
    assert status == 0 and "building" not in err


def test_unknown_user_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--user", "100000", "--scale", "0.1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --user: there is no user 100000 (ids are 1 to 50 at --scale 0.1)" in err
    with pytest.raises(SystemExit):
        main(["demo", "--simulated-latency-ms", "-1"])
    assert "must be a number >= 0 and <= 100, got -1" in capsys.readouterr().err


LATENCY = "argument --simulated-latency-ms: must be a number >= 0 and <= 100, got"
USER = f"argument --user: must be a whole number >= 1 and <= {2**63 - 1}, got"


@pytest.mark.parametrize(("args", "message"), [
    (["--simulated-latency-ms", "nan"], f"{LATENCY} nan"),
    (["--simulated-latency-ms", "inf"], f"{LATENCY} inf"),
    (["--simulated-latency-ms", "1e10"], f"{LATENCY} 1e10"),
    (["--simulated-latency-ms", "fast"], "argument --simulated-latency-ms: must be a number, got 'fast'"),
    (["--scale", "nan"], "argument --scale: must be a number > 0 and <= 20, got nan"),
    (["--scale", "inf"], "argument --scale: must be a number > 0 and <= 20, got inf"),
    (["--scale", "100000"], "argument --scale: must be a number > 0 and <= 20, got 100000"),
    (["--scale", "0"], "argument --scale: must be a number > 0 and <= 20, got 0"),
    (["--user", "9" * 40], f"{USER} {'9' * 40}"),
    (["--user", "0"], f"{USER} 0"),
    (["--user", "501"], "argument --user: there is no user 501 (ids are 1 to 500 at --scale 1)"),
    (["--user", "1.5"], "argument --user: must be a whole number, got '1.5'"),
    (["--repeat", "0"], "argument --repeat: must be a whole number >= 1 and <= 20, got 0"),
    (["--repeat", "21"], "argument --repeat: must be a whole number >= 1 and <= 20, got 21"),
    (["--trace", "/nonexistent-batch-folder/t.json"],
     "argument --trace: the folder /nonexistent-batch-folder does not exist"),
])
def test_every_option_is_checked_before_anything_runs(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        args: list[str], message: str) -> None:
    built: list[str] = []
    monkeypatch.setattr(_demo, "build_database", lambda path, *a, **k: built.append(path) or {})
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *args])
    assert exit_info.value.code == 2          # 1 means "the pages differ"
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m batch")
    assert message in err
    assert "Traceback" not in err
    assert built == []                        # refused up front, nothing was built or run


def test_trace_naming_a_folder_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--trace", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"argument --trace: {tmp_path} is a folder; name a file to write" in capsys.readouterr().err


def test_bad_option_exits_2_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "batch", "demo", "--scale", "inf"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == ("python -m batch: error: argument --scale: must be a number > 0 "
                                            "and <= 20, got inf")


def test_the_database_is_the_same_on_every_build(tmp_path: Path) -> None:
    dumps = []
    for name in ("a.db", "b.db"):
        sizes = _demo.build_database(str(tmp_path / name))
        assert sizes == {"users": 500, "posts": 2000, "comments": 6000, "follows": 5000}
        conn = sqlite3.connect(str(tmp_path / name))
        try:
            counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                      for t in ("users", "posts", "comments", "follows")]
            assert counts == [500, 2000, 6000, 5000]
            dumps.append("\n".join(conn.iterdump()))
        finally:
            conn.close()
    assert dumps[0] == dumps[1]


def test_python_dash_m_batch_demo_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "batch", "demo", "--scale", "0.2", "--repeat", "1"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pages equal: yes" in proc.stdout


def requests_figures(out: str) -> dict[str, tuple[float, float]]:
    """The --requests table as {row: (one execution each, one AsyncBatcher)}."""
    table = {}
    for name in ("statements", "rounds", "wall time"):
        m = re.search(rf"^{name} +([\d,.]+)(?: ms)? +([\d,.]+)(?: ms)?$", out, re.M)
        assert m, f"no {name!r} row in:\n{out}"
        table[name] = (float(m.group(1).replace(",", "")), float(m.group(2).replace(",", "")))
    return table


def test_requests_mode_batches_concurrent_requests(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--requests", "20", "--scale", "0.2")
    assert status == 0, err
    assert out.startswith("20 concurrent requests on asyncio, each the feed page of one user; "
                          "no simulated latency")
    nums = requests_figures(out)
    # Alone, each request costs its own 4 rounds and 7 statements; through one
    # AsyncBatcher all 20 share the same 4 rounds and 7 statements.
    assert nums["rounds"] == (80, 4)
    assert nums["statements"] == (140, 7)
    assert re.search(r"^pages equal: yes \(20 pages, \d+ lines; 20x fewer statements", out, re.M)
    assert 'SELECT * FROM "follows" WHERE "follower_id" IN (? x 20)' in out


def test_requests_mode_honours_simulated_latency(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--requests", "10", "--scale", "0.2", "--simulated-latency-ms", "2")
    assert status == 0
    assert "simulated latency 2 ms per query" in out
    nums = requests_figures(out)
    each_ms, shared_ms = nums["wall time"]
    # A synchronous driver holds the loop for every statement's latency.
    assert each_ms >= 2 * nums["statements"][0]
    assert shared_ms >= 2 * nums["statements"][1]
    assert shared_ms < each_ms


def test_requests_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("-5", "0", "1001"):
        with pytest.raises(SystemExit) as exit_info:
            main(["demo", "--requests", bad])
        assert exit_info.value.code == 2
        assert (f"argument --requests: must be a whole number >= 1 and <= 1000, got {bad}"
                in capsys.readouterr().err)
