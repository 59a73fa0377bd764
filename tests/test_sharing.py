"""SharedGenerator, cached_generator / GeneratorCache and the GenUtils helpers (DESIGN.md section 10)."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Generator
from typing import Any

import pytest

import batch
from batch import GeneratorCache, GenUtils, SharedGenerator, cached_generator

Gen = Generator[Any, Any, Any]


# -- SharedGenerator --------------------------------------------------------------


def test_one_run_many_waiters(recorder: Any) -> None:
    Op = recorder.op("Op", lambda k: k.upper())
    runs: list[str] = []

    def gen_profile() -> Gen:
        runs.append("profile")
        name = yield Op("ada")
        return {"name": name}

    shared = SharedGenerator(gen_profile())

    def gen_page(section: str) -> Gen:
        profile = yield shared.gen()
        return section, profile["name"]

    def gen_direct() -> Gen:
        return (yield shared)  # yielding the SharedGenerator itself works too

    result = recorder.execute([gen_page("header"), gen_page("body"), gen_direct(), shared.gen()])
    assert result == [("header", "ADA"), ("body", "ADA"), {"name": "ADA"}, {"name": "ADA"}]
    assert runs == ["profile"]
    assert recorder.calls == [("Op", ["ada"])]
    assert recorder.rounds == 1
    assert shared.done


def test_waiters_arriving_at_different_rounds(recorder: Any) -> None:
    Op = recorder.op("Op")
    shared = SharedGenerator(_gen_two_steps(Op, "s"))

    def gen_early() -> Gen:
        return (yield shared.gen())

    def gen_late() -> Gen:
        yield Op("late.1")
        yield Op("late.2")
        yield Op("late.3")  # the shared generator finished two rounds ago
        return (yield shared.gen())

    def gen_mid() -> Gen:
        yield Op("mid.1")
        return (yield shared.gen())  # joins while it is still running

    assert recorder.execute([gen_early(), gen_late(), gen_mid()]) == ["s.2", "s.2", "s.2"]
    assert recorder.calls == [("Op", ["s.1", "late.1", "mid.1"]), ("Op", ["s.2", "late.2"]),
                              ("Op", ["late.3"])]
    assert recorder.rounds == 3


def _gen_two_steps(op: Any, name: str) -> Gen:
    yield op(f"{name}.1")
    return (yield op(f"{name}.2"))


def test_the_result_is_kept_for_later_executions(recorder: Any) -> None:
    Op = recorder.op("Op")
    shared = SharedGenerator(_gen_two_steps(Op, "s"))
    assert not shared.done
    assert recorder.execute(shared.gen()) == "s.2"
    assert recorder.rounds == 2
    assert shared.done
    assert "finished" in repr(shared)

    def gen_again() -> Gen:
        a, b = yield shared.gen(), shared
        return a + b

    assert recorder.execute(gen_again()) == "s.2s.2"
    assert recorder.rounds == 0
    assert recorder.calls == [("Op", ["s.1"]), ("Op", ["s.2"])]


def test_a_failure_goes_to_every_waiter_and_is_kept(recorder: Any) -> None:
    Op = recorder.op("Op", lambda k: LookupError(f"no {k}"))
    runs: list[int] = []

    def gen_fails() -> Gen:
        runs.append(1)
        return (yield Op("x"))

    shared = SharedGenerator(gen_fails())

    def gen_waiter() -> Gen:
        try:
            return (yield shared.gen())
        except LookupError as exc:
            return f"caught {exc}"

    assert recorder.execute([gen_waiter(), gen_waiter()]) == ["caught no x", "caught no x"]
    with pytest.raises(LookupError, match=r"^no x"):
        recorder.execute(shared.gen())
    assert recorder.rounds == 0
    assert runs == [1]
    assert recorder.calls == [("Op", ["x"])]


def test_a_finished_shared_generator_is_released_while_the_execution_goes_on(recorder: Any) -> None:
    Op = recorder.op("Op")
    refs: list[weakref.ref[Any]] = []
    observed: list[list[str]] = []
    Check = recorder.op("Check", lambda k: observed.append(
        [name for name, ref in zip(("shared", "result"), refs) if ref() is not None]))

    class Result:
        pass

    def gen_shared_work() -> Gen:
        yield Op(1)
        return Result()

    def gen_page() -> Gen:
        shared = SharedGenerator(gen_shared_work())
        result = yield shared.gen(), shared.gen()
        refs.extend([weakref.ref(shared), weakref.ref(result[0])])
        del shared, result
        yield Check("still running")

    gc.collect()
    gc.disable()
    try:
        recorder.execute(gen_page())
    finally:
        gc.enable()
    assert observed == [[]], "still alive while the execution goes on"


def test_shared_generator_takes_a_generator_object() -> None:
    def gen_user() -> Gen:
        yield from ()

    with pytest.raises(TypeError, match=(
            r"^SharedGenerator takes a generator object, got function; call the generator function "
            r"first: SharedGenerator\(gen_user\(1\)\)$")):
        SharedGenerator(gen_user)  # type: ignore[arg-type]


def test_a_shared_generator_running_in_two_executions_at_once(recorder: Any) -> None:
    Op = recorder.op("Op")
    shared = SharedGenerator(_gen_two_steps(Op, "s"))
    seen: list[str] = []

    def gen_inner() -> Gen:
        return (yield shared.gen())

    def gen_outer() -> Gen:
        yield Op("outer")  # by now the shared generator runs in this execution
        try:
            batch.execute(gen_inner())  # a second, nested execution waits on it
        except batch.BatchError as exc:
            seen.append(str(exc))
        return "outer done"

    assert batch.execute([shared.gen(), gen_outer()]) == ["s.2", "outer done"]
    assert len(seen) == 1
    assert seen[0].startswith("<SharedGenerator _gen_two_steps (")
    assert seen[0].endswith(
        "> is running in an execution that this one is nested in (a batch.execute called from "
        "its generators or run_batch), and that execution waits for this one, so this one "
        "cannot wait for it; yield it from the outer execution's generators instead of a "
        "nested batch.execute")


def test_a_shared_generator_from_two_threads_at_once_waits_for_the_running_one(recorder: Any) -> None:
    inside = threading.Event()
    release = threading.Event()

    def block(key: Any) -> Any:
        inside.set()
        assert release.wait(5)
        return key

    Slow = recorder.op("Slow", block)
    shared = SharedGenerator(_gen_two_steps(Slow, "s"))
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(batch.execute(shared.gen())))
    worker.start()
    try:
        assert inside.wait(5)
        # Like a cached operation in flight: the second execution waits for the first's run.
        threading.Timer(0.1, release.set).start()
        assert batch.execute(shared.gen(), timeout=5) == "s.2"
    finally:
        release.set()
        worker.join(5)
    assert outcome == ["s.2"]
    assert recorder.calls == [("Slow", ["s.1"]), ("Slow", ["s.2"])]   # it ran once


def test_a_shared_generator_of_a_failed_execution(recorder: Any) -> None:
    Op = recorder.op("Op")
    shared = SharedGenerator(_gen_two_steps(Op, "s"))

    def gen_fails() -> Gen:
        yield Op("f")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match=r"^boom"):
        batch.execute_many([shared.gen(), gen_fails()])
    assert shared.done
    with pytest.raises(batch.BatchError, match=(
            r"^<SharedGenerator _gen_two_steps \(.*\)> was closed unfinished because its execution "
            r"ended with "
            r"RuntimeError: boom")):
        batch.execute(shared.gen())


# -- cached_generator ---------------------------------------------------------------


def test_cached_generator_runs_once_per_arguments(recorder: Any) -> None:
    GetUser = recorder.op("GetUser", lambda uid: f"user{uid}")
    runs: list[int] = []

    @cached_generator
    def gen_user(uid: int) -> Gen:
        runs.append(uid)
        return (yield GetUser(uid))

    def gen_page() -> Gen:
        return (yield gen_user(1), gen_user(2), gen_user(1))

    assert recorder.execute(gen_page()) == ["user1", "user2", "user1"]
    assert runs == [1, 2]
    assert recorder.calls == [("GetUser", [1, 2])]
    # A later execution reuses the results: no round, no call.
    assert recorder.execute([gen_user(2), gen_user(1)]) == ["user2", "user1"]
    assert recorder.rounds == 0
    assert recorder.execute(gen_user(3)) == "user3"
    assert runs == [1, 2, 3]
    assert gen_user.__name__ == "gen_user"


def test_cached_generator_with_a_cache_and_clear(recorder: Any) -> None:
    GetUser = recorder.op("GetUser")
    cache = GeneratorCache()

    @cached_generator(cache)
    def gen_user(uid: int) -> Gen:
        return (yield GetUser(uid))

    @cached_generator(cache)
    def gen_other(uid: int) -> Gen:
        return (yield GetUser(-uid))

    assert len(cache) == 0
    assert recorder.execute([gen_user(1), gen_other(1), gen_user(1)]) == [1, -1, 1]
    assert len(cache) == 2  # one cache serves both functions, keyed by function
    assert recorder.execute(gen_user(1)) == 1
    assert recorder.calls == [("GetUser", [1, -1])]
    cache.clear()
    assert len(cache) == 0
    assert recorder.execute(gen_user(1)) == 1
    assert recorder.calls == [("GetUser", [1, -1]), ("GetUser", [1])]


def test_cached_generator_called_with_no_cache() -> None:
    runs: list[int] = []

    @cached_generator()
    def gen_value(n: int) -> Gen:
        runs.append(n)
        return n
        yield  # pragma: no cover

    assert batch.execute([gen_value(1), gen_value(1)]) == [1, 1]
    assert runs == [1]


def test_cached_generator_with_list_set_and_dict_arguments(recorder: Any) -> None:
    Op = recorder.op("Op")
    runs: list[Any] = []

    @cached_generator
    def gen_lookup(ids: Any, options: Any = None) -> Gen:
        runs.append((ids, options))
        return (yield Op(repr(ids)))

    first = [gen_lookup([1, 2]), gen_lookup([1, 2]), gen_lookup([2, 1]),
             gen_lookup({3, 4}), gen_lookup({4, 3}),
             gen_lookup([1, 2], options={"a": [1], "b": {2}}),
             gen_lookup([1, 2], options={"b": {2}, "a": [1]}),
             gen_lookup(ids=[1, 2]), gen_lookup(ids=[1, 2])]
    assert recorder.execute(first) == ["[1, 2]", "[1, 2]", "[2, 1]", "{3, 4}", "{3, 4}",
                                       "[1, 2]", "[1, 2]", "[1, 2]", "[1, 2]"]
    # ids=[1, 2] is normalised against the signature: it shares gen_lookup([1, 2])'s entry
    assert runs == [([1, 2], None), ([2, 1], None), ({3, 4}, None),
                    ([1, 2], {"a": [1], "b": {2}})]


def test_cached_generator_with_unhashable_arguments() -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

    @cached_generator
    def gen_lookup(value: Any) -> Gen:
        return value
        yield  # pragma: no cover

    with pytest.raises(TypeError, match=(
            r"^cached_generator test_cached_generator_with_unhashable_arguments\.<locals>\."
            r"gen_lookup: its arguments must be hashable, or lists, sets and dicts of hashable "
            r"values \(unhashable type: 'Unhashable'\)$")):
        gen_lookup([Unhashable()])


def test_cached_generator_caches_exceptions(recorder: Any) -> None:
    Op = recorder.op("Op")
    runs: list[int] = []

    @cached_generator
    def gen_fails(n: int) -> Gen:
        runs.append(n)
        yield Op(n)
        raise ValueError(f"bad {n}")

    def gen_try(n: int) -> Gen:
        try:
            return (yield gen_fails(n))
        except ValueError as exc:
            return f"caught {exc}"

    assert recorder.execute([gen_try(1), gen_try(1)]) == ["caught bad 1", "caught bad 1"]
    with pytest.raises(ValueError, match=r"^bad 1"):
        recorder.execute(gen_fails(1))
    assert recorder.rounds == 0
    assert runs == [1]
    assert recorder.calls == [("Op", [1])]


def test_cached_generator_restarts_after_a_failed_execution(recorder: Any) -> None:
    Op = recorder.op("Op")
    runs: list[int] = []

    @cached_generator
    def gen_slow(n: int) -> Gen:
        runs.append(n)
        yield Op(f"{n}.1")
        return (yield Op(f"{n}.2"))

    def gen_fails() -> Gen:
        yield Op("f")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match=r"^boom"):
        batch.execute_many([gen_slow(1), gen_fails()])
    # The first run was cut short; the next call runs the generator again.
    assert batch.execute(gen_slow(1)) == "1.2"
    assert runs == [1, 1]


def test_cached_generator_rejects_other_arguments() -> None:
    with pytest.raises(TypeError, match=(
            r"^cached_generator takes a generator function or a GeneratorCache, got int$")):
        cached_generator(42)  # type: ignore[call-overload]


# -- gen_structured and gen_identity ---------------------------------------------------


def test_gen_structured_keeps_tuples_and_plain_values(recorder: Any) -> None:
    Op = recorder.op("Op", lambda k: k * 10)

    def gen_value(k: int) -> Gen:
        return (yield Op(k))

    def make_value() -> Any:
        return {"pair": (Op(1), gen_value(2)), "list": [Op(3), "plain", (4, Op(5))], "n": 6,
                "empty": ()}

    for structured in (batch.gen_structured, GenUtils.gen_structured):
        recorder.calls.clear()
        result = recorder.execute(structured(make_value()))
        assert result == {"pair": (10, 20), "list": [30, "plain", (4, 50)], "n": 6, "empty": ()}
        assert type(result["pair"]) is tuple
        assert type(result["list"][2]) is tuple
        assert recorder.calls == [("Op", [1, 3, 5, 2])]
        assert recorder.rounds == 1


def test_gen_structured_inside_a_generator(recorder: Any) -> None:
    Op = recorder.op("Op")

    def gen_page() -> Gen:
        a, (b, c) = yield batch.gen_structured((Op("a"), (Op("b"), "c")))
        return a + b + c

    assert recorder.execute(gen_page()) == "abc"
    assert recorder.rounds == 1


def test_gen_structured_without_anything_to_wait_on(recorder: Any) -> None:
    assert recorder.execute(batch.gen_structured(((1, 2), {"k": [3]}))) == ((1, 2), {"k": [3]})
    assert recorder.rounds == 0


def test_gen_structured_raises_the_first_failure(recorder: Any) -> None:
    Op = recorder.op("Op", lambda k: KeyError(k) if k.startswith("bad") else k)
    with pytest.raises(KeyError, match="bad1"):
        recorder.execute(batch.gen_structured({"x": (Op("ok"), Op("bad1")), "y": [Op("bad2")]}))
    assert recorder.calls == [("Op", ["ok", "bad1", "bad2"])]


def test_gen_identity(recorder: Any) -> None:
    marker = object()

    def gen_uses_identity() -> Gen:
        a = yield batch.gen_identity(marker)
        b, c = yield GenUtils.gen_identity(1), GenUtils.gen_identity([2])
        return a, b, c

    assert recorder.execute(gen_uses_identity()) == (marker, 1, [2])
    assert recorder.rounds == 0
    assert GenUtils.gen_identity is batch.gen_identity
    assert GenUtils.gen_structured is batch.gen_structured


def test_cached_raise(recorder: Any) -> None:
    # The seed's test: the wrapped function raises when CALLED (before any
    # generator exists); the exception is memoized and raised again without
    # calling the function.
    calls: list[int] = []

    @cached_generator
    def gen_checked(n: int) -> Gen:
        calls.append(n)
        if n < 0:
            raise ValueError(f"negative {n}")
        return batch.gen_identity(n)

    with pytest.raises(ValueError, match=r"^negative -1$"):
        gen_checked(-1)
    with pytest.raises(ValueError, match=r"^negative -1$"):
        gen_checked(-1)
    with pytest.raises(ValueError, match=r"^negative -1$"):
        gen_checked(n=-1)
    assert calls == [-1]
    assert recorder.execute(gen_checked(2)) == 2
    assert calls == [-1, 2]


def test_cached_raise_is_forgotten_by_clear() -> None:
    cache = GeneratorCache()
    calls: list[int] = []

    @cached_generator(cache)
    def gen_checked(n: int) -> Gen:
        calls.append(n)
        raise KeyError(n)

    for _ in range(2):
        with pytest.raises(KeyError):
            gen_checked(1)
    assert (calls, len(cache)) == ([1], 1)
    cache.clear()
    with pytest.raises(KeyError):
        gen_checked(1)
    assert calls == [1, 1]


def test_cached_generator_normalises_arguments_against_the_signature(recorder: Any) -> None:
    Op = recorder.op("Op")
    runs: list[tuple[int, int]] = []

    @cached_generator
    def gen_page(x: int, size: int = 10) -> Gen:
        runs.append((x, size))
        return (yield Op((x, size)))

    calls = [gen_page(0), gen_page(x=0), gen_page(0, 10), gen_page(0, size=10),
             gen_page(size=10, x=0), gen_page(0, 20)]
    assert recorder.execute(calls) == [(0, 10)] * 5 + [(0, 20)]
    assert runs == [(0, 10), (0, 20)]
    assert recorder.calls == [("Op", [(0, 10), (0, 20)])]


def test_cached_generator_with_arguments_that_do_not_fit_raises_pythons_error() -> None:
    calls: list[int] = []

    @cached_generator
    def gen_one(x: int) -> Gen:
        calls.append(x)
        return x
        yield  # pragma: no cover

    with pytest.raises(TypeError, match=r"gen_one\(\) got an unexpected keyword argument 'y'"):
        gen_one(y=1)
    assert calls == []
