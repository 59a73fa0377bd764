"""``@batch.operation``: a ``list -> list`` function as an operation class."""

from __future__ import annotations

import asyncio
import contextvars
import pickle
import threading
from collections.abc import Generator
from typing import Any

import pytest

import batch

CALLS: list[list[Any]] = []


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    CALLS.clear()


@batch.operation
def double(xs: list[int]) -> list[int]:
    """Twice each number."""
    CALLS.append(list(xs))
    return [x * 2 for x in xs]


@batch.operation(max_batch_size=2, dedupe=True)
def square(xs: list[int]) -> list[int]:
    CALLS.append(list(xs))
    return [x * x for x in xs]


@batch.operation(cache_results=True)
def lookup(keys: list[str]) -> list[str | Exception]:
    CALLS.append(list(keys))
    return [KeyError(k) if k.startswith("bad") else k.upper() for k in keys]


@batch.operation
async def adouble(xs: list[int]) -> list[int]:
    CALLS.append(list(xs))
    await asyncio.sleep(0)
    return [x * 2 for x in xs]


def gen_sum(a: int, b: int) -> Generator[Any, Any, int]:
    x, y = yield double(a), double(b)
    z = yield double(x + y)
    return int(z)


# -- the class it makes -------------------------------------------------------


def test_class_is_named_after_the_function_and_keeps_it() -> None:
    assert isinstance(double, type) and issubclass(double, batch.BatchableOperation)
    assert double.__name__ == "double"
    assert double.__qualname__ == "double"
    assert double.__module__ == __name__
    assert double.__doc__ == "Twice each number."
    assert double.function([1, 2]) == [2, 4]
    assert CALLS == [[1, 2]]
    op = double(7)
    assert isinstance(op, batch.BatchableOperation)
    assert op.item == 7
    assert repr(op) == "double(7)"


def test_name_option_renames_the_class() -> None:
    @batch.operation(name="Embed")
    def f(xs: list[str]) -> list[int]:
        return [len(x) for x in xs]

    assert f.__name__ == "Embed" and f.__qualname__ == "Embed"
    assert repr(f("ab")) == "Embed('ab')"
    assert batch.execute(f("abc")) == 3


def test_options_become_class_settings() -> None:
    assert square.max_batch_size == 2 and square.dedupe is True
    assert lookup.cache_results is True
    assert double.max_batch_size is None and double.dedupe is False and double.blocking is False


def test_instances_compare_and_hash_by_item() -> None:
    assert double(1) == double(1)
    assert hash(double(1)) == hash(double(1))
    assert double(1) != double(2)
    assert double(1) != square(1)  # another function, another class
    assert len({double(1), double(1), double(2)}) == 2


def test_an_operation_pickles_by_reference_to_its_class() -> None:
    op = pickle.loads(pickle.dumps(double(5)))
    assert type(op) is double and op.item == 5


# -- running it -----------------------------------------------------------------


def test_one_call_per_round_for_all_items() -> None:
    assert batch.execute(gen_sum(1, 2)) == 12
    assert CALLS == [[1, 2], [6]]


def test_a_single_operation_is_a_root() -> None:
    assert batch.execute(double(21)) == 42
    assert batch.execute_many([double(1), double(2)]) == [2, 4]
    assert CALLS == [[21], [1, 2]]


def test_dedupe_and_chunking_apply_to_items() -> None:
    assert batch.execute([square(3), square(3), square(4), square(5)]) == [9, 9, 16, 25]
    assert CALLS == [[3, 4], [5]]


def test_cache_results_runs_an_item_once_per_cache() -> None:
    cache = batch.OperationCache()
    assert batch.execute([lookup("a"), lookup("b")], cache=cache) == ["A", "B"]
    assert batch.execute([lookup("a"), lookup("c")], cache=cache) == ["A", "C"]
    assert CALLS == [["a", "b"], ["c"]]


def test_an_exception_in_the_list_fails_that_item_only() -> None:
    def gen() -> Generator[Any, Any, Any]:
        good = yield lookup("ok")
        try:
            yield lookup("bad1")
        except KeyError as exc:
            return good, repr(exc)
        return None

    assert batch.execute(gen()) == ("OK", "KeyError('bad1')")
    assert batch.execute_many([lookup("x"), lookup("bad2")], return_exceptions=True)[0] == "X"


def test_a_raising_function_fails_the_items_of_its_call() -> None:
    @batch.operation
    def boom(xs: list[int]) -> list[int]:
        raise ConnectionError(f"down for {xs}")

    results = batch.execute_many([boom(1), boom(2), double(3)], return_exceptions=True)
    assert [type(r) for r in results[:2]] == [ConnectionError, ConnectionError]
    assert str(results[0]) == "down for [1, 2]"
    assert results[2] == 6


def test_wrong_result_count_names_the_function() -> None:
    @batch.operation
    def short(xs: list[int]) -> list[int]:
        return xs[:1]

    with pytest.raises(batch.BatchResultError,
                       match=r"@batch\.operation function test_wrong_result_count_names_the_function"
                             r"\.<locals>\.short \(.*test_function_op\.py:\d+\) returned 1 results "
                             r"for 3 items; it must return a list with one result per item, in the same "
                             r"order"):
        batch.execute([short(1), short(2), short(3)])


def test_a_non_sequence_result_names_the_function() -> None:
    @batch.operation
    def gives_dict(xs: list[int]) -> Any:
        return {x: x for x in xs}

    with pytest.raises(batch.BatchResultError,
                       match=r"gives_dict \(.*\) returned dict, not a sequence, for 2 items"):
        batch.execute([gives_dict(1), gives_dict(2)])


def test_max_workers_runs_functions_of_one_round_in_threads() -> None:
    threads: dict[str, int] = {}
    barrier = threading.Barrier(2, timeout=5)

    @batch.operation
    def left(xs: list[int]) -> list[int]:
        threads["left"] = threading.get_ident()
        barrier.wait()  # both calls of the round run at once, or this times out
        return xs

    @batch.operation
    def right(xs: list[int]) -> list[int]:
        threads["right"] = threading.get_ident()
        barrier.wait()
        return [-x for x in xs]

    assert batch.execute([left(1), right(2), left(3)], max_workers=2) == [1, -2, 3]
    assert threads["left"] != threads["right"]


def test_a_generator_function_is_a_layered_batch() -> None:
    @batch.operation
    def via_double(xs: list[int]) -> Generator[Any, Any, list[int]]:
        doubled = yield [double(x) for x in xs]
        return [d + 1 for d in doubled]

    assert batch.execute([via_double(1), via_double(2)]) == [3, 5]
    assert CALLS == [[1, 2]]


# -- async ----------------------------------------------------------------------


def test_async_function_runs_under_execute_async() -> None:
    async def main() -> Any:
        return await batch.execute_async([adouble(1), adouble(2), double(3)])

    assert asyncio.run(main()) == [2, 4, 6]
    assert sorted(CALLS) == [[1, 2], [3]]  # one call per function, in the same round


def test_async_function_wrong_count_names_the_function() -> None:
    @batch.operation
    async def ashort(xs: list[int]) -> list[int]:
        return []

    with pytest.raises(batch.BatchResultError, match=r"ashort \(.*\) returned 0 results for 2 items"):
        asyncio.run(batch.execute_async([ashort(1), ashort(2)]))


def test_async_function_under_sync_execute_says_to_use_execute_async() -> None:
    with pytest.raises(batch.BatchError, match=r"adouble\.run_batch returned an awaitable; an async "
                                               r"run_batch needs the async executor"):
        batch.execute(adouble(1))


def test_blocking_function_runs_in_a_worker_thread_under_execute_async() -> None:
    seen: list[int] = []

    @batch.operation(blocking=True)
    def slow(xs: list[int]) -> list[int]:
        seen.append(threading.get_ident())
        return xs

    async def main() -> Any:
        return await batch.execute_async([slow(1), slow(2)])

    assert asyncio.run(main()) == [1, 2]
    assert seen and seen[0] != threading.get_ident()


def test_async_callable_object_is_detected() -> None:
    class Model:
        async def __call__(self, xs: list[int]) -> list[int]:
            return [x + 100 for x in xs]

    model_op = batch.operation(Model(), name="model")
    assert model_op.is_async
    assert asyncio.run(batch.execute_async(model_op(1))) == 101


def test_contextvars_of_the_caller_reach_the_function() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    @batch.operation
    def read(xs: list[int]) -> list[str]:
        return [var.get() for _ in xs]

    var.set("request-1")
    assert batch.execute(read(1)) == "request-1"


# -- bad input ------------------------------------------------------------------


def test_non_callable_is_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"@batch\.operation takes a list -> list function \(def or "
                                        r"async def\), got int 3; write it as"):
        batch.operation(3)  # type: ignore


def test_an_operation_class_is_refused() -> None:
    with pytest.raises(TypeError, match=r"got the operation class double; it is already an operation"):
        batch.operation(double)  # type: ignore


@pytest.mark.parametrize("size", [0, -1, 2.5, True, "8"])
def test_bad_max_batch_size(size: Any) -> None:
    with pytest.raises(batch.BatchError, match=rf"@batch\.operation\(max_batch_size={size!r}\) is "
                                               r"invalid: it must be a positive int or None"):
        batch.operation(max_batch_size=size)


@pytest.mark.parametrize("key", ["dedupe", "cache_results", "blocking"])
def test_bad_flag(key: str) -> None:
    with pytest.raises(ValueError, match=rf"@batch\.operation\({key}=1\) is invalid: it must be True or "
                                         r"False"):
        batch.operation(**{key: 1})  # type: ignore


@pytest.mark.parametrize("name", ["", "two words", 5])
def test_bad_name(name: Any) -> None:
    with pytest.raises(ValueError, match=r"name must be a Python identifier"):
        batch.operation(name=name)


def test_blocking_async_function_is_refused() -> None:
    async def f(xs: list[int]) -> list[int]:
        return xs

    with pytest.raises(ValueError, match=r"blocking=True\) on async def .*f \(.*\): blocking=True runs a "
                                         r"synchronous function in a worker thread"):
        batch.operation(f, blocking=True)
