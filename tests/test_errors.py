"""Abuse tests: every error the executor raises, its message pinned (DESIGN.md section 5).

Each test breaks one rule the way a user would and checks the exact wording:
the user's object is named, the contract is stated, the fix is shown.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import inspect
import re
import traceback
import warnings
from collections.abc import Callable, Generator
from typing import Any

import pytest

import batch
from batch._errors import (
    BatchSettingError,
    run_batch_generator_expression_error,
    unhashable_operation_error,
    yield_from_iterator_error,
    yielded_value_error,
)

Gen = Generator[Any, Any, Any]
HERE = re.escape(__file__)


def line_of(func: Callable[..., Any], marker: str) -> int:
    """The line number of the first source line of ``func`` containing ``marker``."""
    lines, first = inspect.getsourcelines(func)
    for offset, text in enumerate(lines):
        if marker in text:
            return first + offset
    raise AssertionError(f"{marker!r} not in {func.__qualname__}")


def frames_of(exc: BaseException) -> list[str]:
    """Names of this file's functions in ``exc``'s traceback, outermost first."""
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)
            if frame.filename == __file__]


# -- run_batch broke its contract: BatchResultError -----------------------------


NOTE = r"\nbatch: execution failed after 1 round\(s\)$"


@pytest.mark.parametrize("returned, kind", [(5, "int"), (None, "NoneType"), ("ab", "str"),
                                            ({1: 1, 2: 2}, "dict"), (iter([1, 2]), "list_iterator")])
def test_run_batch_returning_a_non_sequence(recorder: Any, returned: Any, kind: str) -> None:
    GetUser = recorder.op("GetUser", whole=lambda keys: returned)

    with pytest.raises(batch.BatchResultError, match=(
            rf"^GetUser\.run_batch returned {kind}, not a sequence; it must return a list with "
            rf"one result per operation, in the same order{NOTE}")) as info:
        batch.execute([GetUser(1), GetUser(2)])
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, batch.BatchError)


@pytest.mark.parametrize("count", [0, 2, 4])
def test_run_batch_returning_the_wrong_number_of_results(recorder: Any, count: int) -> None:
    # Any sequence will do, if its length is right: here a tuple.
    GetUser = recorder.op("GetUser", whole=lambda keys: tuple(range(count)))

    with pytest.raises(batch.BatchResultError, match=(
            rf"^GetUser\.run_batch returned {count} results for 3 operations; it must return "
            rf"one result per operation, in the same order{NOTE}")):
        batch.execute([GetUser(1), GetUser(2), GetUser(3)])


def test_a_bad_result_fails_every_operation_of_that_call_and_only_those(recorder: Any) -> None:
    Good = recorder.op("Good")
    Short = recorder.op("Short", whole=lambda keys: [1])

    def gen_try(op: Any) -> Gen:
        try:
            return (yield op)
        except batch.BatchResultError as exc:
            return f"failed: {exc}"

    message = "failed: Short.run_batch returned 1 results for 2 operations; it must return " \
              "one result per operation, in the same order"
    assert batch.execute([gen_try(Short(1)), gen_try(Good(7)), gen_try(Short(2))]) == [
        message, 7, message]
    assert recorder.calls == [("Short", [1, 2]), ("Good", [7])]


class Layered(batch.BatchableOperation[Any]):
    """A layered run_batch that forgets to return its results."""

    def __init__(self, k: int) -> None:
        self.k = k

    @classmethod
    def run_batch(cls, operations: list[Layered]) -> Gen:
        yield batch.gen_identity(len(operations))
        return []


def test_layered_run_batch_returning_the_wrong_count() -> None:
    with pytest.raises(batch.BatchResultError, match=(
            r"^Layered\.run_batch returned 0 results for 2 operations; it must return one result "
            r"per operation, in the same order\nbatch: execution failed after 1 round\(s\)$")):
        batch.execute([Layered(1), Layered(2)])


class NoRun(batch.BatchableOperation[Any]):
    """An operation class that forgot run_batch."""


def test_missing_run_batch_names_the_class() -> None:
    with pytest.raises(NotImplementedError, match=(
            r"^NoRun must define run_batch: @classmethod\n    def run_batch\(cls, operations\): "
            r"return \[\.\.\. one result per operation\]\n")):
        batch.execute(NoRun())


class AsyncOp(batch.BatchableOperation[int]):
    """An async run_batch, only runnable by execute_async."""

    @classmethod
    async def run_batch(cls, operations: list[AsyncOp]) -> list[int]:  # type: ignore[override]
        return [1] * len(operations)


def test_async_run_batch_with_the_sync_executor() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited" either
        with pytest.raises(batch.BatchError, match=(
                r"^AsyncOp\.run_batch returned an awaitable; an async run_batch needs the async "
                r"executor: await batch\.execute_async\(\.\.\.\)\n")):
            batch.execute(AsyncOp())
        gc.collect()


# -- what a generator may yield: YieldTypeError -----------------------------------


def test_yielding_a_non_operation_names_generator_file_line_and_type() -> None:
    def gen_bad() -> Gen:
        yield 42  # the offending yield

    line = line_of(gen_bad, "the offending yield")
    with pytest.raises(batch.YieldTypeError, match=(
            rf"^test_yielding_a_non_operation_names_generator_file_line_and_type\.<locals>\."
            rf"gen_bad \({HERE}:{line}\) yielded int; a batch generator may yield a "
            rf"BatchableOperation, a generator, a list/tuple/dict of those, settled\(\.\.\.\), a "
            rf"SharedGenerator, or GenResult\(value\)\n")) as info:
        batch.execute(gen_bad())
    assert isinstance(info.value, TypeError)


def test_bare_yield_gets_a_hint() -> None:
    def gen_bare() -> Gen:
        yield

    with pytest.raises(batch.YieldTypeError, match=(
            r"gen_bare \(.*\) yielded NoneType \(a bare `yield` yields None; to finish, use "
            r"`return value`\); a batch generator may yield")):
        batch.execute(gen_bare())


def test_yielding_a_coroutine_gets_a_hint() -> None:
    async def fetch() -> int:
        return 1

    def gen_coro() -> Gen:
        coro = fetch()
        try:
            yield coro
        finally:
            coro.close()

    with pytest.raises(batch.YieldTypeError, match=(
            r"gen_coro \(.*\) yielded coroutine \(a coroutine cannot be yielded; make run_batch "
            r"async instead, with execute_async\)")):
        batch.execute(gen_coro())


def test_yield_type_error_is_thrown_at_the_yield_and_can_be_caught(recorder: Any) -> None:
    Op = recorder.op("Op")

    def gen_recovers() -> Gen:
        try:
            yield "not an operation"
        except batch.YieldTypeError as exc:
            assert "yielded str" in str(exc)
            # The generator is still alive at the yield and goes on.
            return (yield Op("after"))
        return "not thrown"

    assert recorder.execute(gen_recovers()) == "after"
    assert recorder.calls == [("Op", ["after"])]


def test_yield_type_error_reaches_a_waiter_above(recorder: Any) -> None:
    def gen_child() -> Gen:
        yield 3.5  # child's bad yield

    line = line_of(gen_child, "child's bad yield")

    def gen_parent() -> Gen:
        try:
            yield gen_child()
        except TypeError as exc:
            return str(exc)
        return "not thrown"

    message = batch.execute(gen_parent())
    assert message.startswith(
        f"test_yield_type_error_reaches_a_waiter_above.<locals>.gen_child ({__file__}:{line}) "
        f"yielded float;")


@pytest.mark.parametrize("struct, where", [
    (lambda op: [op, "text"], r"a list containing, at index 1, str"),
    (lambda op: (op, op, None), r"a tuple containing, at index 2, NoneType \(a bare `yield`.*\)"),
    (lambda op: {"good": op, "bad": b"x"}, r"a dict containing, at key 'bad', bytes"),
    (lambda op: [op, [op, object()]], r"a list containing, at index 1, object"),
])
def test_yield_type_error_inside_a_structure(recorder: Any, struct: Any, where: str) -> None:
    Op = recorder.op("Op")

    def gen_mixed() -> Gen:
        return (yield struct(Op(1)))

    with pytest.raises(batch.YieldTypeError, match=rf"^.*gen_mixed \(.*\) yielded {where}; a batch"):
        recorder.execute(gen_mixed())
    # The valid items of the structure still ran before the error was thrown.
    assert [name for name, _ in recorder.calls] == ["Op"]


def test_yield_type_error_for_a_bad_value_passed_to_execute() -> None:
    with pytest.raises(batch.YieldTypeError, match=(
            r"^the value passed to execute\(\) yielded a list containing, at index 0, int; ")):
        batch.execute([1, 2])


def test_genresult_inside_a_structure_is_not_a_yieldable() -> None:
    def gen_legacy() -> Gen:
        yield [batch.GenResult(1)]

    with pytest.raises(batch.YieldTypeError, match=(
            r"gen_legacy \(.*\) yielded a list containing, at index 0, GenResult; a batch")):
        batch.execute(gen_legacy())


# -- cycles: CycleError -----------------------------------------------------------


def test_shared_generators_waiting_on_each_other(recorder: Any) -> None:
    Op = recorder.op("Op")
    shared: dict[str, batch.SharedGenerator[Any]] = {}

    def gen_a() -> Gen:
        yield Op("a")
        return (yield shared["b"].gen())

    def gen_b() -> Gen:
        return (yield shared["a"].gen())

    shared["a"] = batch.SharedGenerator(gen_a())
    shared["b"] = batch.SharedGenerator(gen_b())

    def gen_root() -> Gen:
        return (yield shared["a"].gen())

    with pytest.raises(batch.CycleError, match=(
            r"^generators wait on each other in a cycle: "
            r"(test_shared_generators_waiting_on_each_other\.<locals>\.gen_[ab] \([^)]*\) -> ){2}"
            r"test_shared_generators_waiting_on_each_other\.<locals>\.gen_[ab] \([^)]*\); "
            r"a generator cannot wait, directly or through others, on its own result\n")) as info:
        recorder.execute(gen_root())
    message = str(info.value)
    assert "gen_a" in message and "gen_b" in message
    assert isinstance(info.value, RuntimeError)
    assert recorder.calls == [("Op", ["a"])]


def test_a_cycle_error_is_thrown_at_a_yield_and_can_be_caught() -> None:
    shared: dict[str, batch.SharedGenerator[Any]] = {}

    def gen_waits_on(name: str, other: str) -> Gen:
        try:
            return f"{name} got ({(yield shared[other].gen())})"
        except batch.CycleError:
            return f"{name} broke the cycle"

    shared["a"] = batch.SharedGenerator(gen_waits_on("a", "b"))
    shared["b"] = batch.SharedGenerator(gen_waits_on("b", "a"))
    a, b = batch.execute([shared["a"].gen(), shared["b"].gen()])
    # One wait of the cycle gets the error; the other generator then gets its result.
    assert (a, b) in [("a broke the cycle", "b got (a broke the cycle)"),
                      ("a got (b broke the cycle)", "b broke the cycle")]


def test_a_shared_generator_waiting_on_itself(recorder: Any) -> None:
    holder: dict[str, batch.SharedGenerator[Any]] = {}

    def gen_self() -> Gen:
        return (yield holder["me"])

    holder["me"] = batch.SharedGenerator(gen_self())
    with pytest.raises(batch.CycleError, match=(
            r"^generators wait on each other in a cycle: .*gen_self \([^)]*\) -> .*gen_self ")):
        batch.execute(holder["me"].gen())


def test_a_cached_generator_calling_itself_with_the_same_arguments() -> None:
    @batch.cached_generator
    def gen_factorial(n: int) -> Gen:
        # The bug: it should have called gen_factorial(n - 1).
        return n * (yield gen_factorial(n)) if n > 1 else 1  # waits on itself

    line = line_of(gen_factorial, "waits on itself")
    name = r"test_a_cached_generator_calling_itself_with_the_same_arguments\.<locals>\.gen_factorial"
    with pytest.raises(batch.CycleError, match=(
            rf"^generators wait on each other in a cycle: {name} \({HERE}:{line}\) -> "
            rf"{name} \({HERE}:{line}\); a generator cannot wait")):
        batch.execute(gen_factorial(3))


def test_a_generator_yielding_itself() -> None:
    holder: dict[str, Gen] = {}

    def gen_self() -> Gen:
        return (yield holder["me"])  # yields its own generator object

    line = line_of(gen_self, "yields its own generator object")
    holder["me"] = gen_self()
    with pytest.raises(batch.CycleError, match=(
            rf"^test_a_generator_yielding_itself\.<locals>\.gen_self \({HERE}:{line}\) yielded "
            rf"a generator it is itself waiting on \(.*\); generators cannot wait on their own "
            rf"result\n")):
        batch.execute(holder["me"])


def test_a_child_yielding_its_parent() -> None:
    holder: dict[str, Gen] = {}

    def gen_child() -> Gen:
        return (yield holder["parent"])

    def gen_parent() -> Gen:
        try:
            return (yield gen_child())
        except batch.CycleError as exc:
            return str(exc)

    holder["parent"] = gen_parent()
    message = batch.execute(holder["parent"])
    assert re.match(r"^.*gen_child \(.*\) yielded a generator it is itself waiting on "
                    r"\(.*gen_parent \(.*\) -> .*gen_child \(.*\)\); generators cannot wait on "
                    r"their own result$", message), message


# -- a generator object yielded twice: GeneratorReusedError ----------------------------


def test_yielding_a_finished_generator_again(recorder: Any) -> None:
    Op = recorder.op("Op")

    def gen_child() -> Gen:
        return (yield Op(1))

    def gen_parent() -> Gen:
        child = gen_child()
        first = yield child
        second = yield child  # second yield of the same object
        return first, second

    line = line_of(gen_parent, "second yield of the same object")
    with pytest.raises(batch.GeneratorReusedError, match=(
            rf"^test_yielding_a_finished_generator_again\.<locals>\.gen_parent \({HERE}:{line}\) "
            rf"yielded test_yielding_a_finished_generator_again\.<locals>\.gen_child, a generator "
            rf"object that is finished; a generator object can be yielded only once, by one "
            rf"waiter\. To let several generators wait on it, wrap it once: shared = "
            rf"batch\.SharedGenerator\(.*gen_child\(\.\.\.\)\), and yield shared\.gen\(\) in "
            rf"each\n")):
        recorder.execute(gen_parent())


def test_yielding_a_generator_another_task_waits_on(recorder: Any) -> None:
    Op = recorder.op("Op")

    def gen_child() -> Gen:
        return (yield Op(1))

    child = gen_child()

    def gen_first() -> Gen:
        return (yield child)

    def gen_second() -> Gen:
        try:
            return (yield child)
        except batch.GeneratorReusedError as exc:
            return str(exc)

    first, second = batch.execute([gen_first(), gen_second()])
    assert first == 1
    assert re.match(r"^.*gen_second \(.*\) yielded .*gen_child, a generator object that is "
                    r"already running or waited on; .* batch\.SharedGenerator", second), second
    assert issubclass(batch.GeneratorReusedError, RuntimeError)


def test_a_started_generator_in_a_structure(recorder: Any) -> None:
    Op = recorder.op("Op")

    def gen_child() -> Gen:
        return (yield Op(1))

    def gen_parent() -> Gen:
        child = gen_child()
        yield child
        return (yield [Op(2), child])

    with pytest.raises(batch.GeneratorReusedError, match=(
            r"gen_parent \(.*\) yielded .*gen_child, a generator object that was already started "
            r"or yielded elsewhere; .* wrap it once: shared = batch\.SharedGenerator")):
        recorder.execute(gen_parent())


@pytest.mark.parametrize("shape", [
    pytest.param(lambda g: [g, g], id="[g, g]"),
    pytest.param(lambda g: [[g], g], id="[[g], g]"),
    pytest.param(lambda g: [g, [g]], id="[g, [g]]"),
    pytest.param(lambda g: {"a": g, "b": (g,)}, id="{a: g, b: (g,)}"),
])
def test_the_same_fresh_generator_twice_in_one_structure(recorder: Any, shape: Any) -> None:
    Op = recorder.op("Op")
    seen: list[Any] = []

    def gen_child() -> Gen:
        first = yield Op(1)
        seen.append(first)
        return first

    def gen_parent() -> Gen:
        child = gen_child()
        return (yield shape(child))

    with pytest.raises(batch.GeneratorReusedError, match=(
            r"gen_parent \(.*\) yielded .*gen_child, a generator object that was already started "
            r"or yielded elsewhere; a generator object can be yielded only once, by one waiter\. "
            r"To let several generators wait on it, wrap it once: shared = batch\.SharedGenerator")):
        recorder.execute(gen_parent())
    assert seen == [1]  # it ran once, and was never resumed with someone else's value
    assert recorder.calls == [("Op", [1])]


def test_the_same_fresh_generator_as_two_roots(recorder: Any) -> None:
    Op = recorder.op("Op")

    def gen_child() -> Gen:
        first = yield Op(1)
        assert first == 1, f"resumed with {first!r}"
        return first

    child = gen_child()
    with pytest.raises(batch.GeneratorReusedError, match=(
            r"^test_the_same_fresh_generator_as_two_roots\.<locals>\.gen_child \(.*\) was given "
            r"twice as a root; a generator object can be run only once\. Pass a fresh generator "
            r"for each root, or wrap it once in batch\.SharedGenerator")):
        batch.execute_many([child, child])
    assert recorder.calls == []


# -- bad arguments to execute() ------------------------------------------------


def test_execute_of_something_that_is_not_runnable() -> None:
    with pytest.raises(TypeError, match=(
            r"^execute\(\) takes a batch generator, a BatchableOperation, or a list/tuple/dict of "
            r"those; got int$")):
        batch.execute(42)
    with pytest.raises(TypeError, match=r"; got str$"):
        batch.execute_many(["text"])


def test_execute_of_a_generator_function_suggests_calling_it() -> None:
    def gen_user() -> Gen:
        yield from ()

    with pytest.raises(TypeError, match=(
            r"; got function \(did you pass the generator function instead of calling it\?\)$")):
        batch.execute(gen_user)


def test_execute_of_a_started_generator(recorder: Any) -> None:
    Op = recorder.op("Op")

    def gen_user() -> Gen:
        return (yield Op(1))

    started = gen_user()
    next(started)
    with pytest.raises(batch.GeneratorReusedError, match=(
            r"^test_execute_of_a_started_generator\.<locals>\.gen_user \(.*\) was already started; "
            r"pass execute\(\) a fresh generator \(call the generator function again\)$")):
        batch.execute(started)
    finished = gen_user()
    finished.close()
    with pytest.raises(batch.GeneratorReusedError, match=r"was already started; pass execute"):
        batch.execute(finished)


def test_execute_of_a_dict_subclass(recorder: Any) -> None:
    Op = recorder.op("Op")
    assert batch.execute(collections.OrderedDict(b=Op(2), a=Op(1))) == {"b": 2, "a": 1}


def test_an_exception_raised_by_execute_keeps_the_generator_frame(recorder: Any) -> None:
    Op = recorder.op("Op")

    def gen_fails() -> Gen:
        yield Op(1)
        raise ValueError("raised in the generator")  # the original raise

    with pytest.raises(ValueError, match=r"^raised in the generator\n") as info:
        batch.execute(gen_fails())
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert (last.name, last.lineno) == ("gen_fails", line_of(gen_fails, "the original raise"))


# -- invalid max_batch_size / max_batch_cost --------------------------------------


@pytest.mark.parametrize("setting, value", [
    ("max_batch_size", 0), ("max_batch_size", -1),
    ("max_batch_cost", 0), ("max_batch_cost", -1), ("max_batch_cost", -0.5), ("max_batch_cost", 0.0),
])
def test_non_positive_limits_fail_at_class_creation(recorder: Any, setting: str, value: Any) -> None:
    with pytest.raises(ValueError, match=(
            rf"^GetUser\.{setting} = {re.escape(repr(value))} is invalid: it must be greater than 0 "
            rf"\(or None for no limit\)$")) as info:
        recorder.op("GetUser", **{setting: value})
    assert isinstance(info.value, BatchSettingError)
    assert isinstance(info.value, batch.BatchError)


@pytest.mark.parametrize("setting, value, want", [
    ("max_batch_size", 2.5, "a positive int"),
    ("max_batch_size", "10", "a positive int"),
    ("max_batch_size", True, "a positive int"),
    ("max_batch_cost", "10", "a positive number"),
    ("max_batch_cost", [1], "a positive number"),
])
def test_limits_of_the_wrong_type_fail_at_class_creation(
        recorder: Any, setting: str, value: Any, want: str) -> None:
    with pytest.raises(TypeError, match=(
            rf"^GetUser\.{setting} = {re.escape(repr(value))} is invalid: it must be {want} or "
            rf"None \(e\.g\. {setting} = 100\)$")):
        recorder.op("GetUser", **{setting: value})


def test_valid_limits_are_accepted(recorder: Any) -> None:
    Op = recorder.op("Op", max_batch_size=2, max_batch_cost=2.5)
    assert batch.execute([Op(1), Op(2), Op(3)]) == [1, 2, 3]
    assert recorder.calls == [("Op", [1, 2]), ("Op", [3])]


@pytest.mark.parametrize("setting, value, match", [
    ("max_batch_size", 0, r"^GetUser\.max_batch_size = 0 is invalid: it must be greater than 0"),
    ("max_batch_size", 1.5, r"^GetUser\.max_batch_size = 1\.5 is invalid: it must be a positive int"),
    ("max_batch_cost", -3, r"^GetUser\.max_batch_cost = -3 is invalid: it must be greater than 0"),
    ("max_batch_cost", "x", r"^GetUser\.max_batch_cost = 'x' is invalid: it must be a positive number"),
])
def test_limits_changed_later_fail_at_first_use(
        recorder: Any, setting: str, value: Any, match: str) -> None:
    GetUser = recorder.op("GetUser")
    setattr(GetUser, setting, value)
    closed: list[str] = []

    def gen_user() -> Gen:
        try:
            return (yield GetUser(1))
        finally:
            closed.append("closed")

    with pytest.raises(BatchSettingError, match=match):
        batch.execute(gen_user())
    assert closed == ["closed"]
    with pytest.raises(BatchSettingError, match=match):
        batch.execute([GetUser(1), GetUser(2)])
    assert recorder.calls == []


# -- exceptions travel to the yield -----------------------------------------------


def test_run_batch_exception_keeps_its_traceback(recorder: Any) -> None:
    class Flaky(batch.BatchableOperation[Any]):
        @classmethod
        def run_batch(cls, operations: list[Flaky]) -> Any:
            raise ConnectionError("database is down")  # raised in run_batch

    caught: list[BaseException] = []

    def gen_user() -> Gen:
        try:
            yield Flaky()
        except ConnectionError as exc:
            caught.append(exc)
            return "recovered"

    assert batch.execute(gen_user()) == "recovered"
    (exc,) = caught
    assert "run_batch" in frames_of(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1]
    assert (last.name, last.lineno) == ("run_batch", line_of(Flaky.run_batch, "raised in run_batch"))


def test_a_child_generator_exception_keeps_its_traceback(recorder: Any) -> None:
    Op = recorder.op("Op")

    def gen_deep() -> Gen:
        yield Op(1)
        raise KeyError("deep")

    def gen_middle() -> Gen:
        return (yield gen_deep())

    def gen_top() -> Gen:
        try:
            yield [Op(0), gen_middle()]
        except KeyError as exc:
            return frames_of(exc)
        return None

    assert batch.execute(gen_top()) == ["gen_top", "gen_middle", "gen_deep"]


def test_run_batch_exception_fails_every_operation_of_the_call(recorder: Any) -> None:
    Other = recorder.op("Other")

    class Flaky(batch.BatchableOperation[Any]):
        def __init__(self, k: int) -> None:
            self.k = k

        @classmethod
        def run_batch(cls, operations: list[Flaky]) -> Any:
            raise TimeoutError(f"gave up on {[op.k for op in operations]}")

    def gen_try(op: Any) -> Gen:
        try:
            return (yield op)
        except TimeoutError as exc:
            return str(exc)

    assert batch.execute([gen_try(Flaky(1)), gen_try(Other(2)), gen_try(Flaky(3))]) == [
        "gave up on [1, 3]", 2, "gave up on [1, 3]"]
    assert recorder.calls == [("Other", [2])]


def test_an_exception_instance_result_fails_only_its_operation(recorder: Any) -> None:
    Get = recorder.op("Get", lambda k: LookupError(f"no {k}") if k == "bad" else k)

    def gen_try(k: str) -> Gen:
        try:
            return (yield Get(k))
        except LookupError as exc:
            return f"caught {exc}"

    assert batch.execute([gen_try("a"), gen_try("bad"), gen_try("c")]) == ["a", "caught no bad", "c"]
    assert recorder.calls == [("Get", ["a", "bad", "c"])]


def test_siblings_finish_before_the_first_failure_in_structure_order(recorder: Any) -> None:
    Op = recorder.op("Op")
    finished: list[str] = []

    def gen_fails_late() -> Gen:
        yield Op("late.1")
        yield Op("late.2")
        raise ValueError("late failure, first in the structure")

    def gen_fails_early() -> Gen:
        raise ValueError("early failure, second in the structure")
        yield  # pragma: no cover

    def gen_slow_ok() -> Gen:
        for step in range(3):
            yield Op(f"slow.{step}")
        finished.append("slow")
        return "ok"

    def gen_parent() -> Gen:
        try:
            yield [gen_fails_late(), gen_fails_early(), gen_slow_ok()]
        except ValueError as exc:
            return str(exc), list(finished)
        return None

    assert recorder.execute(gen_parent()) == ("late failure, first in the structure", ["slow"])
    assert recorder.calls == [("Op", ["late.1", "slow.0"]), ("Op", ["late.2", "slow.1"]),
                              ("Op", ["slow.2"])]
    assert recorder.rounds == 3


def test_first_failure_in_a_dict_follows_key_order(recorder: Any) -> None:
    Get = recorder.op("Get", lambda k: KeyError(k))

    def gen_parent() -> Gen:
        try:
            yield {"z": Get("z"), "a": Get("a")}
        except KeyError as exc:
            return exc.args[0]
        return None

    assert batch.execute(gen_parent()) == "z"


def test_root_failure_closes_every_live_generator_first(recorder: Any) -> None:
    Op = recorder.op("Op")
    events: list[str] = []

    def gen_tracked(name: str, body: Any) -> Gen:
        try:
            return (yield body)
        except GeneratorExit:
            events.append(f"closed {name}")
            raise

    def gen_ops(name: str, count: int) -> Gen:
        try:
            for k in range(count):
                yield Op(f"{name}.{k}")
        finally:
            events.append(f"finally {name}")

    def gen_failing() -> Gen:
        yield Op("fail.0")
        raise RuntimeError("root 1 failed")

    shared = batch.SharedGenerator(gen_ops("shared", 3))
    roots = [
        gen_ops("root 0", 3),
        gen_tracked("root 1", gen_failing()),
        gen_tracked("root 2", [gen_ops("child", 3),
                               gen_tracked("middle", gen_ops("grandchild", 3))]),
        gen_tracked("root 3", shared.gen()),
        gen_ops("root 4", 1),  # finished in round 1, before the failure
    ]

    with pytest.raises(RuntimeError, match=r"^root 1 failed\n") as info:
        recorder.execute_many(roots)
    assert sorted(events) == sorted([
        "finally root 0", "closed root 2", "finally child", "closed middle",
        "finally grandchild", "closed root 3", "finally shared", "finally root 4"])
    # A generator is closed before the generators that wait on it.
    assert events.index("finally grandchild") < events.index("closed middle") < events.index(
        "closed root 2")
    assert events.index("finally child") < events.index("closed root 2")
    assert info.value.batch_rounds_completed == 1  # type: ignore[attr-defined]
    assert recorder.calls == [("Op", ["root 0.0", "fail.0", "child.0", "grandchild.0",
                                      "shared.0", "root 4.0"])]
    assert shared.done


def test_root_failure_closes_a_layered_run_batch_in_flight(recorder: Any) -> None:
    Op = recorder.op("Op")
    events: list[str] = []

    class Layered(batch.BatchableOperation[int]):
        @classmethod
        def run_batch(cls, operations: list[Layered]) -> Gen:
            try:
                yield Op("layer.1")
                yield Op("layer.2")
                return [1] * len(operations)
            finally:
                events.append("run_batch closed")

    def gen_waiter() -> Gen:
        try:
            return (yield Layered())
        finally:
            events.append("waiter closed")

    def gen_fails() -> Gen:
        yield Op("f.1")
        yield Op("f.2")
        raise ValueError("failed in round 2")

    with pytest.raises(ValueError, match=r"^failed in round 2\n"):
        recorder.execute_many([gen_waiter(), gen_fails()])
    assert events == ["run_batch closed", "waiter closed"]
    assert recorder.calls == [("Op", ["f.1"]), ("Op", ["layer.1", "f.2"])]


def test_execute_many_raises_the_first_root_to_fail(recorder: Any) -> None:
    Op = recorder.op("Op")
    closed: list[str] = []

    def gen_fails_after(rounds: int, name: str) -> Gen:
        try:
            for k in range(rounds):
                yield Op(f"{name}.{k}")
            raise LookupError(f"{name} failed after {rounds} rounds")
        finally:
            closed.append(name)

    with pytest.raises(LookupError, match=r"^second failed after 1 rounds\n"):
        batch.execute_many([gen_fails_after(2, "first"), gen_fails_after(1, "second")])
    assert sorted(closed) == ["first", "second"]
    assert recorder.calls == [("Op", ["first.0", "second.0"])]


def test_keyboard_interrupt_from_run_batch_stops_at_once_and_closes(recorder: Any) -> None:
    Later = recorder.op("Later")
    closed: list[str] = []

    class Interrupted(batch.BatchableOperation[Any]):
        @classmethod
        def run_batch(cls, operations: list[Interrupted]) -> Any:
            raise KeyboardInterrupt

    def gen_tracked(name: str, op: Any) -> Gen:
        try:
            return (yield op)
        except BaseException as exc:
            closed.append(f"{name} saw {type(exc).__name__}")
            raise
        finally:
            closed.append(name)

    with pytest.raises(KeyboardInterrupt):
        batch.execute_many([gen_tracked("a", Interrupted()), gen_tracked("b", Later(1))])
    # The interrupt is not delivered to generators as a result: they are closed.
    assert sorted(closed) == ["a", "a saw GeneratorExit", "b", "b saw GeneratorExit"]
    assert recorder.calls == []  # Later's group came after it in the round: never called


def test_keyboard_interrupt_from_a_generator_stops_at_once_and_closes(recorder: Any) -> None:
    Op = recorder.op("Op")
    events: list[str] = []

    def gen_interrupts() -> Gen:
        try:
            yield Op(1)
            raise KeyboardInterrupt
        finally:
            events.append("finally interrupts")

    def gen_sibling(name: str, rounds: int) -> Gen:
        try:
            for k in range(rounds):
                yield Op(f"{name}{k}")
            events.append(f"{name} done")
        finally:
            events.append(f"finally {name}")

    def gen_parent() -> Gen:
        try:
            yield [gen_interrupts(), gen_sibling("late", 3)]
        except KeyboardInterrupt:
            events.append("parent caught")  # it is closed, not thrown the interrupt
            raise
        finally:
            events.append("finally parent")

    with pytest.raises(KeyboardInterrupt):
        batch.execute_many([gen_parent(), gen_sibling("root", 1)])
    assert "parent caught" not in events
    # "root" got its result in the same round but was never resumed: it stopped at once.
    assert sorted(events) == ["finally interrupts", "finally late", "finally parent", "finally root"]
    assert recorder.calls == [("Op", [1, "late0", "root0"])]


# -- batch_key() ---------------------------------------------------------------


def test_batch_key_raising_fails_only_that_operation(recorder: Any) -> None:
    def shard(k: str) -> str:
        if k == "bad":
            raise ZeroDivisionError("no shard for bad")
        return "shard"

    Row = recorder.op("Row", key=shard)

    def gen_row(k: str) -> Gen:
        try:
            return (yield Row(k))
        except ZeroDivisionError as exc:
            return f"caught: {exc}"

    assert recorder.execute([gen_row("a"), gen_row("bad"), gen_row("c")]) == [
        "a", "caught: no shard for bad", "c"]
    assert recorder.calls == [("Row", ["a", "c"])]
    assert recorder.execute(batch.settled([Row("x"), Row("bad")]))[0] == "x"


def test_batch_key_raising_in_a_structure_is_thrown_after_the_siblings(recorder: Any) -> None:
    Row = recorder.op("Row", key=lambda k: 1 // k)

    with pytest.raises(ZeroDivisionError) as info:
        recorder.execute([Row(1), Row(0), Row(2)])
    assert "<lambda>" in frames_of(info.value)  # the traceback reaches into batch_key
    assert recorder.calls == [("Row", [1]), ("Row", [2])]


def test_unhashable_batch_key(recorder: Any) -> None:
    Row = recorder.op("Row", key=lambda k: [k])

    with pytest.raises(batch.BatchError, match=(
            r"^Row\.batch_key\(\) returned list, which is not hashable; return a hashable value "
            r"such as a str or a tuple\nbatch: execution failed after 0 round\(s\)$")):
        batch.execute(Row(1))


def test_keyboard_interrupt_while_a_structure_starts_its_generators_closes_the_started(
        recorder: Any) -> None:
    Op = recorder.op("Op")
    closed: list[Any] = []

    def gen_child(k: int) -> Gen:
        try:
            if k == 3:
                raise KeyboardInterrupt
            yield Op(k)
        finally:
            closed.append(k)

    def gen_parent() -> Gen:
        try:
            yield [gen_child(1), gen_child(2), gen_child(3), gen_child(4)]
        finally:
            closed.append("parent")

    with pytest.raises(KeyboardInterrupt):
        recorder.execute(gen_parent())
    # 1 and 2 were started (and stopped at their operations) before 3 raised;
    # 4 never started, so it has no `finally` to run.
    assert closed == [3, 1, 2, "parent"]  # children in the order found, then the parent
    assert recorder.calls == []


# -- silent mistakes (issue 14): refused at class definition or first use ----------------



class _Plain(batch.BatchableOperation[int]):
    def __init__(self, k: int) -> None:
        self.k = k

    def __repr__(self) -> str:
        return f"_Plain({self.k})"

    @classmethod
    def run_batch(cls, operations: list[_Plain]) -> list[int]:
        return [op.k for op in operations]


@pytest.mark.parametrize("setting", ["dedupe", "cache_results"])
def test_dedupe_or_cache_on_a_class_comparing_by_identity_is_refused(setting: str) -> None:
    class GetUser(batch.BatchableOperation[int]):
        def __init__(self, uid: int) -> None:
            self.uid = uid

        @classmethod
        def run_batch(cls, operations: list[GetUser]) -> list[int]:
            calls.append([op.uid for op in operations])
            return [op.uid for op in operations]

    setattr(GetUser, setting, True)
    calls: list[list[int]] = []
    message = (rf"GetUser has {setting} = True, but .*GetUser compares its operations by "
               rf"identity \(it defines no __eq__ and __hash__\), so no two .*GetUser operations "
               rf"are ever equal and {setting} would do nothing\. Make .*GetUser a "
               rf"@dataclass\(frozen=True\), or define __eq__ and __hash__")
    with pytest.raises(BatchSettingError, match=message):
        batch.execute([GetUser(1), GetUser(1)])
    assert calls == []


def test_a_frozen_dataclass_with_dedupe_is_accepted_and_merges_equal_operations() -> None:
    # @dataclass adds __eq__/__hash__ after __init_subclass__ ran: the check
    # must not look at the class before the decorator finished.
    calls: list[list[int]] = []

    @dataclasses.dataclass(frozen=True)
    class GetUser(batch.BatchableOperation[int]):
        uid: int
        dedupe = True

        @classmethod
        def run_batch(cls, operations: list[GetUser]) -> list[int]:
            calls.append([op.uid for op in operations])
            return [op.uid * 10 for op in operations]

    assert batch.execute([GetUser(1), GetUser(1), GetUser(2)]) == [10, 10, 20]
    assert calls == [[1, 2]]


def test_equality_from_a_mixin_counts() -> None:
    class ByKey:
        k: int

        def __eq__(self, other: object) -> bool:
            return type(other) is type(self) and other.k == self.k  # type: ignore[attr-defined]

        def __hash__(self) -> int:
            return hash(self.k)

    class Cached(_Plain, ByKey):
        cache_results = True

    cache = batch.OperationCache()
    cache.prime(Cached(1), 99)
    assert batch.execute([Cached(1), Cached(2)], cache=cache) == [99, 2]


def test_run_batch_without_classmethod_is_refused_at_class_definition() -> None:
    with pytest.raises(BatchSettingError, match=(
            r"GetUser\.run_batch must be a classmethod \(the executor calls "
            r".*GetUser\.run_batch\(operations\) on the class, once per group\); write:\n"
            r"    @classmethod\n    def run_batch\(cls, operations\): \.\.\.$")):
        class GetUser(batch.BatchableOperation[int]):
            def run_batch(self, operations: list[Any]) -> list[int]:  # type: ignore[override]
                return []


def test_async_run_batch_without_classmethod_is_refused_too() -> None:
    with pytest.raises(BatchSettingError, match=r"Fetch\.run_batch must be a classmethod"):
        class Fetch(batch.BatchableOperation[int]):
            async def run_batch(self, operations: list[Any]) -> list[int]:  # type: ignore[override]
                return []


def test_a_staticmethod_run_batch_is_accepted() -> None:
    class Echo(batch.BatchableOperation[int]):
        def __init__(self, k: int) -> None:
            self.k = k

        @staticmethod
        def run_batch(operations: list[Any]) -> list[int]:  # type: ignore[override]
            return [op.k for op in operations]

    assert batch.execute([Echo(1), Echo(2)]) == [1, 2]


# -- messages the executor will raise (worded in batch._errors) ---------------------------

@dataclasses.dataclass(frozen=True)
class GetUsers(batch.BatchableOperation[list[int]]):
    ids: list[int]
    dedupe = True

    @classmethod
    def run_batch(cls, operations: list[GetUsers]) -> list[list[int]]:
        return [list(op.ids) for op in operations]


UNHASHABLE_FIELD = (r"GetUsers has dedupe = True, but its operations cannot be hashed: in "
                    r"GetUsers\(ids=\[1, 2\]\) the field 'ids' holds a list \(unhashable type: "
                    r"'list'\); store a tuple there instead \(e\.g\. ids=tuple\(\.\.\.\)\), so "
                    r"equal operations can be merged")


def test_unhashable_field_message_names_the_field() -> None:
    op = GetUsers([1, 2])
    try:
        hash(op)
    except TypeError as exc:
        error = unhashable_operation_error(GetUsers, op, exc, "dedupe")
    assert isinstance(error, batch.BatchError)
    assert re.match(UNHASHABLE_FIELD, str(error)), str(error)
    assert "make it a frozen dataclass" not in str(error)


def test_unhashable_message_for_a_dataclass_that_is_not_frozen() -> None:
    @dataclasses.dataclass
    class Loose(batch.BatchableOperation[int]):
        k: int
        cache_results = True

    op = Loose(1)
    try:
        hash(op)
    except TypeError as exc:
        error = unhashable_operation_error(Loose, op, exc, "cache_results")
    assert str(error).endswith("(unhashable type: 'Loose'): a dataclass that is not frozen has "
                               "no __hash__; write @dataclass(frozen=True) on " + Loose.__qualname__)


def test_a_frozen_dataclass_with_a_list_field_names_the_field_when_run() -> None:
    with pytest.raises(batch.BatchError, match=UNHASHABLE_FIELD):
        batch.execute([GetUsers([1, 2]), GetUsers([1, 2])])


def gen_genexpr() -> Gen:
    return (yield (_Plain(i) for i in range(3)))


GENEXPR = (r"gen_genexpr \(.*\) yielded a generator expression; it is neither an operation nor a "
           r"structure, so it would run item by item and give None\. Yield a list: "
           r"`results = yield \[GetUser\(i\) for i in ids\]` \(note the square brackets\)")


def test_yielded_generator_expression_message() -> None:
    value = (_Plain(i) for i in range(3))
    error = yielded_value_error("gen_genexpr (x.py:1)", value)
    assert isinstance(error, batch.YieldTypeError)
    assert re.match(GENEXPR, str(error)), str(error)
    assert value.gi_frame is None  # closed


def test_yielding_a_generator_expression_is_an_error() -> None:
    with pytest.raises(batch.YieldTypeError, match=GENEXPR):
        batch.execute(gen_genexpr())


async def fetch_user() -> int:
    return 1


COROUTINE = (r"yielded coroutine \(a coroutine cannot be yielded; make run_batch async instead, "
             r"with execute_async\): fetch_user\(\) was closed without running\. A batch "
             r"generator cannot await: put the awaiting in an `async def run_batch` of an "
             r"operation and run the tree with batch\.execute_async")


def test_yielded_coroutine_message_and_the_coroutine_is_closed() -> None:
    coro = fetch_user()
    error = yielded_value_error("gen (x.py:1)", coro)
    assert error is not None and re.search(COROUTINE, str(error)), error
    assert coro.cr_frame is None  # closed: no "never awaited" warning blamed on batch


def test_yielding_a_coroutine_is_an_error_and_closes_it() -> None:
    coro = fetch_user()

    def gen() -> Gen:
        return (yield coro)

    try:
        with pytest.raises(batch.YieldTypeError, match=COROUTINE):
            batch.execute(gen())
        assert coro.cr_frame is None
    finally:
        coro.close()


async def agen_users(n: int) -> Any:
    yield n


AGEN = (r"yielded an async generator \(agen_users\); batch generators are plain generators: "
        r"write `def agen_users\(\.\.\.\)` \(not async def\) and yield its operations, or make "
        r"the async part an `async def run_batch`")


def test_yielded_async_generator_message() -> None:
    agen = agen_users(1)
    error = yielded_value_error("gen (x.py:1)", agen)
    assert error is not None and re.search(AGEN, str(error)), error


def test_yielding_an_async_generator_is_an_error() -> None:
    def gen() -> Gen:
        return (yield agen_users(1))

    with pytest.raises(batch.YieldTypeError, match=AGEN):
        batch.execute(gen())


def gen_user(uid: int) -> Gen:
    return (yield _Plain(uid))


FUNCTION = (r"yielded the generator function gen_user itself, not a generator; call it: "
            r"`yield gen_user\(\.\.\.\)`")


def test_yielded_generator_function_message() -> None:
    error = yielded_value_error("gen (x.py:1)", gen_user)
    assert error is not None and re.search(FUNCTION, str(error)), error
    assert yielded_value_error("gen (x.py:1)", _Plain(1)) is None
    assert yielded_value_error("gen (x.py:1)", gen_user(1)) is None


def test_yielding_a_generator_function_is_an_error() -> None:
    def gen() -> Gen:
        return (yield gen_user)

    with pytest.raises(batch.YieldTypeError, match=FUNCTION):
        batch.execute(gen())


YIELD_FROM_LIST = (r"used `yield from` on a list_iterator \(e\.g\. `yield from \[op1, op2\]`\); "
                   r"`yield from` takes one operation or generator\. For several at once write "
                   r"`a, b = yield \[op1, op2\]`, or in the typed style "
                   r"`a, b = yield from batch\.gather\(op1, op2\)`")


def test_yield_from_a_list_message() -> None:
    error = yield_from_iterator_error("gen (x.py:1)", iter([1, 2]))
    assert re.search(YIELD_FROM_LIST, str(error)), error


def test_yield_from_a_list_is_an_error() -> None:
    def gen() -> Gen:
        return (yield from [_Plain(1), _Plain(2)])

    with pytest.raises(batch.YieldTypeError, match=YIELD_FROM_LIST):
        batch.execute(gen())


class Lazy(batch.BatchableOperation[int]):
    def __init__(self, k: int) -> None:
        self.k = k

    @classmethod
    def run_batch(cls, operations: list[Lazy]) -> Any:
        return (op.k for op in operations)


GENEXPR_RESULT = (r"^Lazy\.run_batch returned a generator expression; it must return a list with "
                  r"one result per operation, in order: "
                  r"`return \[rows\.get\(op\.key\) for op in operations\]` \(square brackets\)")


def test_run_batch_generator_expression_message() -> None:
    error = run_batch_generator_expression_error("Lazy.run_batch")
    assert isinstance(error, batch.BatchResultError)
    assert re.match(GENEXPR_RESULT, str(error)), error


def test_run_batch_returning_a_generator_expression_is_an_error() -> None:
    with pytest.raises(batch.BatchResultError, match=GENEXPR_RESULT):
        batch.execute(Lazy(1))


@pytest.mark.parametrize("shape", [
    pytest.param(lambda g: g, id="alone"),
    pytest.param(lambda g: [g], id="in a list"),
])
def test_a_root_not_started_yet_yielded_by_another_root(recorder: Any, shape: Any) -> None:
    Op = recorder.op("Op")

    def gen_b() -> Gen:
        return "b", (yield Op(1))

    b = gen_b()

    def gen_a() -> Gen:
        return (yield shape(b))  # b is a root too, given after this one: not started yet

    first, second = batch.execute_many([gen_a(), b], return_exceptions=True)
    assert isinstance(first, batch.GeneratorReusedError)
    assert re.match(r"^.*gen_a \(.*\) yielded .*gen_b, a generator object that", str(first))
    assert second == ("b", 1)  # its own root got its own result, once
    assert recorder.calls == [("Op", [1])]
