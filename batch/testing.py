"""Helpers for testing code that uses `batch`: fakes, overrides, round assertions, replay.

- :class:`FakeStore`: a dict-backed store whose ``Get``/``Put``/``Delete``
  operations are batched and recorded (``store.calls``, ``store.round_trips``).
- :func:`override`: route an operation class's ``run_batch`` to a fake.
- :func:`capture`, :func:`assert_rounds`, :func:`assert_batches`: see every
  execution inside a ``with`` block and assert its rounds and batch shapes.
- :func:`recording` / :func:`replaying`: capture every operation's result,
  then run the same code again with zero ``run_batch`` calls.

Everything here is process-wide (executions in other threads inside the
block are seen too), thread-safe, nests, and is undone when the ``with``
block exits, also on error.
"""

from __future__ import annotations

import copy
import inspect
import pickle
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from . import _hooks
from ._errors import BatchError
from ._operation import BatchableOperation, is_sequence_result
from ._trace import BatchRecord, RoundRecord, Trace

__all__ = [
    "Captured",
    "FakeStore",
    "NotRecordedError",
    "Recording",
    "assert_batches",
    "assert_rounds",
    "capture",
    "override",
    "recording",
    "replaying",
]


# -- override ------------------------------------------------------------------


def _check_op_class(op_class: Any, where: str) -> None:
    if not (isinstance(op_class, type) and issubclass(op_class, BatchableOperation)):
        shown = op_class.__qualname__ if isinstance(op_class, type) else type(op_class).__qualname__
        hint = " (pass the class, not an instance)" if isinstance(op_class, BatchableOperation) else ""
        raise TypeError(f"{where} takes an operation class (a batch.BatchableOperation "
                        f"subclass), got {shown}{hint}")


@contextmanager
def override(op_class: type[BatchableOperation[Any]],
             fn: Callable[[list[Any]], Any]) -> Iterator[None]:
    """Inside the block, batches of ``op_class`` go to ``fn(operations)`` instead of ``run_batch``.

    ``fn`` answers like ``run_batch`` would: a list with one result per
    operation (an ``Exception`` instance fails only that operation), a batch
    generator, or, under :func:`batch.execute_async`, an awaitable (``async
    def fn``).  Subclasses that inherit ``run_batch`` from ``op_class`` are
    routed too; a subclass that defines its own ``run_batch`` is not.  The
    class itself is never modified: overrides entered and left from several
    threads, in any order, always restore the right behaviour, also when the
    block raises.  It applies to executions started inside the block.

    >>> import batch
    >>> class GetUser(batch.BatchableOperation):
    ...     def __init__(self, uid):
    ...         self.uid = uid
    ...     @classmethod
    ...     def run_batch(cls, operations):
    ...         raise ConnectionError("no database in tests")
    >>> with override(GetUser, lambda ops: [f"user{op.uid}" for op in ops]):
    ...     batch.execute([GetUser(1), GetUser(2)])
    ['user1', 'user2']
    """
    _check_op_class(op_class, "override()")
    if not callable(fn):
        raise TypeError(f"override({op_class.__qualname__}, fn): fn must be callable as "
                        f"fn(operations), got {type(fn).__qualname__}")
    token = _hooks.add_override(op_class, fn)
    try:
        yield
    finally:
        _hooks.remove(token)


# -- traces of every execution inside a block ------------------------------------

_collect_lock = threading.Lock()
_collectors: list[Captured] = []


def _display(name: str) -> str:
    # Classes defined inside test functions are named "test_x.<locals>.GetUser".
    return name.rpartition("<locals>.")[2]


def _name_matches(expected: Any, record: BatchRecord) -> bool:
    if isinstance(expected, type):
        return record.operation is expected
    name = record.name
    return bool(expected == name or name.endswith("." + str(expected)))


class Captured:
    """The executions seen by :func:`capture` (and the assertion helpers).

    ``traces`` holds one :class:`batch.Trace` per execution, in the order
    the executions started; ``rounds`` and ``batches`` flatten them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[Trace, int]] = []  # (trace, first round of this execution)

    def _add(self, trace: Trace, first_round: int) -> None:
        with self._lock:
            self._entries.append((trace, first_round))

    @property
    def traces(self) -> list[Trace]:
        """One trace per execution seen, in start order."""
        out = []
        with self._lock:
            entries = list(self._entries)
        for trace, first in entries:
            if first == 0:
                out.append(trace)
                continue
            # An execution given trace=t that already held earlier rounds:
            # show only this execution's part.
            part = Trace()
            part._origin = trace._origin
            part.rounds = trace.rounds[first:]
            part.cache_hits = sum(r.cache_hits for r in part.rounds)
            part.error = trace.error
            out.append(part)
        return out

    @property
    def rounds(self) -> list[RoundRecord]:
        """Every round of every execution seen."""
        return [r for t in self.traces for r in t.rounds]

    @property
    def round_count(self) -> int:
        """The number of rounds, summed over the executions seen."""
        return len(self.rounds)

    @property
    def batches(self) -> list[BatchRecord]:
        """Every batch (``run_batch`` call) of every execution seen."""
        return [b for r in self.rounds for b in r.batches]

    @property
    def shapes(self) -> list[list[tuple[str, int]]]:
        """Per round, ``(operation class name, operations sent)`` for each batch.

        Class names drop the ``func.<locals>.`` prefix of classes defined in
        a function, so ``[[("GetSpouseId", 1)], [("GetUser", 2)]]`` reads as
        the test wrote it.
        """
        return [[(_display(b.name), b.size) for b in r.batches] for r in self.rounds]

    def summary(self) -> str:
        """The trace summary of each execution seen, one after the other."""
        traces = self.traces
        if not traces:
            return "(no batch execution ran)"
        if len(traces) == 1:
            return _local_names(traces[0].summary())
        return "\n".join(f"execution {i + 1} of {len(traces)}: " + _local_names(t.summary())
                         for i, t in enumerate(traces))

    def __repr__(self) -> str:
        return (f"<Captured {len(self._entries)} executions, {self.round_count} rounds, "
                f"{len(self.batches)} batches>")


def _local_names(text: str) -> str:
    return text.replace("<locals>.", "")


def _implicit_trace(given: Trace | None) -> Trace | None:
    with _collect_lock:
        active = list(_collectors)
    if not active:
        return given
    trace = given if given is not None else Trace()
    first = len(trace.rounds)
    for seen in active:
        seen._add(trace, first)
    return trace


@contextmanager
def capture() -> Iterator[Captured]:
    """Collect a trace of every execution that starts inside the block.

    >>> import batch
    >>> class Echo(batch.BatchableOperation):
    ...     def __init__(self, n):
    ...         self.n = n
    ...     @classmethod
    ...     def run_batch(cls, operations):
    ...         return [op.n for op in operations]
    >>> with capture() as seen:
    ...     batch.execute([Echo(1), Echo(2)])
    [1, 2]
    >>> seen.round_count, seen.shapes
    (1, [[('Echo', 2)]])
    """
    seen = Captured()
    with _collect_lock:
        _collectors.append(seen)
        _hooks.set_trace_factory(_implicit_trace)
    try:
        yield seen
    finally:
        with _collect_lock:
            for i, c in enumerate(_collectors):
                if c is seen:
                    del _collectors[i]
                    break
            if not _collectors:
                _hooks.set_trace_factory(None)


@contextmanager
def assert_rounds(expected: int) -> Iterator[Captured]:
    """Assert that the executions inside the block take ``expected`` rounds in total.

    Fails with an ``AssertionError`` that prints each execution's trace
    summary.  When the block raises, its exception propagates and nothing is
    asserted.

    >>> import batch
    >>> class Echo(batch.BatchableOperation):
    ...     def __init__(self, n):
    ...         self.n = n
    ...     @classmethod
    ...     def run_batch(cls, operations):
    ...         return [op.n for op in operations]
    >>> def gen_chain():
    ...     a = yield Echo(1)
    ...     b = yield Echo(a + 1)
    ...     return b
    >>> with assert_rounds(2):
    ...     batch.execute(gen_chain())
    2
    """
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise TypeError(f"assert_rounds() takes a number of rounds >= 0, got {expected!r}")
    with capture() as seen:
        yield seen
    got = seen.round_count
    if got != expected:
        n = len(seen.traces)
        if n == 0:
            raise AssertionError(f"expected {expected} round{'s' * (expected != 1)}, got 0: "
                                 f"no batch execution ran inside the block")
        raise AssertionError(
            f"expected {expected} round{'s' * (expected != 1)}, got {got} "
            f"(in {n} execution{'s' * (n != 1)}):\n{seen.summary()}")


_NO_KEY: Any = object()


def _key_matches(expected: Any, record: BatchRecord) -> bool:
    if expected is _NO_KEY:
        return True
    key = record.key
    return bool(key == expected or (isinstance(expected, str) and repr(key) == expected))


def _shape_text(items: Sequence[tuple[Any, Any, int]]) -> str:
    parts = []
    for op, key, size in items:
        name = op.__qualname__ if isinstance(op, type) else str(op)
        shown = "" if key is _NO_KEY else f"[{key if isinstance(key, str) else repr(key)}]"
        parts.append(f"{_display(name)}{shown} x{size}")
    return "[" + ", ".join(parts) + "]"


def _check_pair(item: Any) -> tuple[Any, Any, int]:
    if (isinstance(item, tuple) and len(item) in (2, 3) and isinstance(item[0], (str, type))
            and isinstance(item[-1], int) and not isinstance(item[-1], bool)):
        return item[0], (item[1] if len(item) == 3 else _NO_KEY), item[-1]
    raise TypeError(f"assert_batches() expects (operation class or name, size) pairs, "
                    f"got {item!r} (or (operation, batch key, size) triples, to match the "
                    f"batch key too)")


@contextmanager
def assert_batches(expected: Sequence[Any]) -> Iterator[Captured]:
    """Assert the exact batches of the executions inside the block.

    ``expected`` is either a list of rounds, each a list of ``(operation,
    size)`` pairs: ``[[("GetSpouseId", 1)], [("GetUser", 2)]]``, or a flat list
    of pairs in dispatch order, rounds not separated: ``[("GetSpouseId", 1),
    ("GetUser", 2)]``.  ``operation`` is the class itself, or its name
    (``"GetUser"`` also matches ``"Outer.GetUser"``); ``size`` is the number
    of operations sent in that ``run_batch`` call (after dedupe and
    chunking).  A triple ``(operation, key, size)`` also matches the batch
    key: the ``batch_key()`` itself, or its repr as text, so ``batch.sql``
    batches are told apart by table and column:
    ``[("Select", "users.id", 2), ("Select", "posts.author_id", 1)]``.
    A mismatch fails with an ``AssertionError`` that shows the rounds side
    by side and the trace summary.
    """
    per_round = bool(expected) and all(isinstance(x, list) for x in expected)
    if per_round:
        want: list[list[tuple[Any, Any, int]]] = [[_check_pair(p) for p in r] for r in expected]
    else:
        if any(isinstance(x, list) for x in expected):
            raise TypeError("assert_batches() takes a list of rounds (lists of pairs) or a "
                            "flat list of (operation, size) pairs, not a mix of both")
        want = [[_check_pair(p) for p in expected]]
    with capture() as seen:
        yield seen
    rounds = [r.batches for r in seen.rounds]
    got = rounds if per_round else [[b for bs in rounds for b in bs]]

    def same(w: list[tuple[Any, Any, int]], g: list[BatchRecord]) -> bool:
        return len(w) == len(g) and all(
            _name_matches(op, b) and _key_matches(key, b) and size == b.size
            for (op, key, size), b in zip(w, g))

    if len(want) == len(got) and all(same(w, g) for w, g in zip(want, got)):
        return
    lines = ["batches differ from the expected ones:"]
    for i in range(max(len(want), len(got))):
        w = want[i] if i < len(want) else None
        g = got[i] if i < len(got) else None
        keyed = w is not None and any(k is not _NO_KEY for _, k, _ in w)
        g_text = "(none)" if g is None else _shape_text(
            [(_display(b.name), repr(b.key) if keyed else _NO_KEY, b.size) for b in g])
        w_text = "(none)" if w is None else _shape_text(w)
        mark = "  " if (w is not None and g is not None and same(w, g)) else "! "
        label = f"round {i + 1}" if per_round else "all rounds"
        lines.append(f"{mark}{label}: expected {w_text}, got {g_text}")
    lines.append(seen.summary())
    raise AssertionError("\n".join(lines))


# -- record and replay -----------------------------------------------------------


class NotRecordedError(BatchError, LookupError):
    """Raised at the ``yield`` of an operation that :func:`replaying` has no result for.

    Only that operation fails; ``operation`` is the operation in question.
    """

    def __init__(self, message: str, operation: Any = None) -> None:
        super().__init__(message)
        self.operation = operation


def _clone_exception(exc: BaseException) -> BaseException:
    """A fresh copy, so replaying one recorded failure twice never shares notes."""
    try:
        clone = copy.copy(exc)
    except Exception:
        return exc
    if not isinstance(clone, type(exc)):  # pragma: no cover  (exotic __reduce__)
        return exc
    notes = getattr(exc, "__notes__", None)
    if notes is not None:
        try:
            clone.__notes__ = list(notes)
        except Exception:  # pragma: no cover  (exceptions with __slots__)
            pass
    return clone


def _outcome(value: Any) -> Any:
    return _clone_exception(value) if isinstance(value, BaseException) else value


_FORMAT = "batch.testing.Recording"


def _record_key(op: Any) -> Any:
    """What identifies ``op`` in a recording: the operation itself, unless it says otherwise.

    An operation that holds a live resource (``batch.sql`` operations hold their
    ``Database``) defines ``_record_key()`` returning what it asks for, so a
    recording matches, saves and loads without the resource.
    """
    key = getattr(op, "_record_key", None)
    return op if key is None else key()


class Recording:
    """The results of operations captured by :func:`recording`, for :func:`replaying`.

    Operations are matched by class and ``==``/``hash`` (frozen dataclasses
    work; unhashable operations are matched by ``==`` alone, more slowly);
    ``batch.sql`` operations by what they ask (kind, table, column, value or
    row, SQL and parameters) and the ``Database``'s ``name=`` if given, not by
    the connection, so a recording replays against another ``Database``.
    When the same operation ran several times, its results are kept in
    order and replayed in order; past the last one, the last is repeated.
    A failure (an exception instance in ``run_batch``'s result, or an
    exception ``run_batch`` raised) is recorded for each operation it
    failed, and replayed as a failure of that operation alone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (class, record key) -> (the first operation seen, its outcomes)
        self._hashed: dict[tuple[type, Any], tuple[Any, list[Any]]] = {}
        self._unhashed: list[tuple[type, Any, Any, list[Any]]] = []

    def _outcomes(self, op: Any, create: bool) -> list[Any] | None:
        cls = type(op)
        key = _record_key(op)
        try:
            hashed = self._hashed
            entry = hashed.get((cls, key))
            if entry is None:
                if not create:
                    return None
                entry = hashed[(cls, key)] = (op, [])
            return entry[1]
        except TypeError:  # unhashable: fall back to == on a list
            for c, recorded, _, outcomes in self._unhashed:
                if c is cls and recorded == key:
                    return outcomes
            if not create:
                return None
            fresh: list[Any] = []
            self._unhashed.append((cls, key, op, fresh))
            return fresh

    def add(self, operation: BatchableOperation[Any], result: Any) -> None:
        """Record ``result`` (a value, or an exception to fail with) for ``operation``."""
        with self._lock:
            outcomes = self._outcomes(operation, True)
            assert outcomes is not None
            outcomes.append(_outcome(result))

    def results(self, operation: BatchableOperation[Any]) -> list[Any]:
        """Everything recorded for ``operation``, in order (empty if nothing)."""
        with self._lock:
            return list(self._outcomes(operation, False) or ())

    def operations(self) -> list[Any]:
        """The distinct operations recorded, in the order first seen."""
        with self._lock:
            return ([op for op, _ in self._hashed.values()]
                    + [op for _, _, op, _ in self._unhashed])

    def __contains__(self, operation: object) -> bool:
        with self._lock:
            return self._outcomes(operation, False) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._hashed) + len(self._unhashed)

    def __repr__(self) -> str:
        return f"<Recording of {len(self)} operations>"

    def _entries(self) -> list[tuple[type, Any, list[Any]]]:
        with self._lock:
            return ([(cls, op, list(v)) for (cls, _), (op, v) in self._hashed.items()]
                    + [(cls, op, list(v)) for cls, _, op, v in self._unhashed])

    def save(self, path: str | Path) -> None:
        """Write the recording to ``path`` with :mod:`pickle`.

        Operations, their classes and their results must be picklable:
        classes defined at module level, no open files, sockets, locks or
        generators in results.  Exceptions are saved without their traceback.
        A ``TypeError`` names the first operation that cannot be saved.
        """
        entries = self._entries()
        payload = {"format": _FORMAT, "version": 1, "entries": entries}
        try:
            data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"cannot save the recording: {_unpicklable(entries, exc)}") from exc
        Path(path).write_bytes(data)

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        """Read a recording written by :meth:`save`.

        It is unpickled: load only files you trust (your own test fixtures),
        as unpickling can run arbitrary code.  The operation classes must be
        importable under the same module and name as when it was saved.
        """
        payload = pickle.loads(Path(path).read_bytes())
        if not (isinstance(payload, dict) and payload.get("format") == _FORMAT):
            raise ValueError(f"{path} is not a batch.testing.Recording file "
                             f"(written by Recording.save)")
        rec = cls()
        for _, op, outcomes in payload["entries"]:
            for value in outcomes:
                rec.add(op, value)
        return rec


def _unpicklable(entries: list[tuple[type, Any, list[Any]]], exc: Exception) -> str:
    for cls, op, outcomes in entries:
        for what, obj in (("class", cls), ("operation", op)):
            try:
                pickle.dumps(obj)
            except Exception as err:
                hint = ""
                if "<locals>" in cls.__qualname__:
                    hint = " (define the class at module level)"
                return f"the {what} of {op!r} ({cls.__qualname__}) cannot be pickled: {err}{hint}"
        for value in outcomes:
            try:
                pickle.dumps(value)
            except Exception as err:
                return (f"the result of {op!r} ({type(value).__qualname__}) cannot be "
                        f"pickled: {err}")
    return str(exc)  # pragma: no cover  (the whole failed but no part did)


def _record_results(rec: Recording, operations: list[Any], results: Any) -> None:
    if not is_sequence_result(results) or len(results) != len(operations):
        return  # the executor reports the broken contract; nothing sane to record
    for op, value in zip(operations, results):
        rec.add(op, value)


def _record_failure(rec: Recording, operations: list[Any], exc: BaseException) -> None:
    for op in operations:
        rec.add(op, exc)


def _recorded_generator(rec: Recording, operations: list[Any],
                        gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    # A layered run_batch: delegate every yield, record what it returns.
    try:
        results = yield from gen
    except Exception as exc:
        _record_failure(rec, operations, exc)
        raise
    _record_results(rec, operations, results)
    return results


async def _recorded_awaitable(rec: Recording, operations: list[Any], awaitable: Any) -> Any:
    try:
        results = await awaitable
    except Exception as exc:
        _record_failure(rec, operations, exc)
        raise
    _record_results(rec, operations, results)
    return results


@contextmanager
def recording(into: Recording | None = None) -> Iterator[Recording]:
    """Record every operation's result (or failure) of the executions inside the block.

    ``run_batch`` runs as usual (or an :func:`override`'s ``fn``; its results
    are what is recorded).  Yields the :class:`Recording` (``into``, if
    given, is extended).  Layered and ``async def`` ``run_batch`` are
    recorded when they finish.

    >>> import batch
    >>> from dataclasses import dataclass
    >>> calls = []
    >>> @dataclass(frozen=True)
    ... class Square(batch.BatchableOperation):
    ...     n: int
    ...     @classmethod
    ...     def run_batch(cls, operations):
    ...         calls.append(len(operations))
    ...         return [op.n * op.n for op in operations]
    >>> with recording() as rec:
    ...     batch.execute([Square(2), Square(3)])
    [4, 9]
    >>> with replaying(rec):
    ...     batch.execute([Square(3), Square(2)])
    [9, 4]
    >>> calls
    [2]
    """
    rec = Recording() if into is None else into
    if not isinstance(rec, Recording):
        raise TypeError(f"recording(into=...) takes a batch.testing.Recording, "
                        f"got {type(rec).__qualname__}")

    def layer(cls: type, operations: list[Any], call: Callable[[list[Any]], Any]) -> Any:
        try:
            result = call(operations)
        except Exception as exc:
            _record_failure(rec, operations, exc)
            raise
        if inspect.isgenerator(result):
            return _recorded_generator(rec, operations, result)
        if inspect.isawaitable(result):
            return _recorded_awaitable(rec, operations, result)
        _record_results(rec, operations, result)
        return result

    token = _hooks.add_layer(layer)
    try:
        yield rec
    finally:
        _hooks.remove(token)


def _not_recorded(rec: Recording, op: Any) -> NotRecordedError:
    cls = type(op)
    name = cls.__qualname__
    same = [o for o in rec.operations() if type(o) is cls]
    shown_op = repr(op)
    if any(repr(o) == shown_op for o in same):
        # Never show two operations that print alike as if they obviously differed.
        return NotRecordedError(
            f"{name} operation {shown_op} was not recorded, but a recorded {name} operation "
            f"prints exactly the same and is not equal to it: {name}.__eq__ (or __hash__) "
            f"compares something its repr does not show, such as a connection or client "
            f"object; compare only what the operation asks for (a frozen dataclass of those "
            f"fields), or give the class a _record_key() method returning it", op)
    if same:
        shown = ", ".join(repr(o) for o in same[:3]) + (", …" if len(same) > 3 else "")
        known = f"the recording has {len(same)} other {name} operation(s): {shown}"
    else:
        known = f"the recording has no {name} operation at all"
    hint = "record again with batch.testing.recording()"
    if getattr(cls, "__eq__", None) is getattr(object, "__eq__", None) and not hasattr(
            cls, "_record_key"):
        hint = (f"{name} compares by identity (it defines no __eq__), so no recorded "
                f"operation can ever match: make it a frozen dataclass, or define __eq__ "
                f"and __hash__")
    return NotRecordedError(f"{name} operation {shown_op} was not recorded ({known}); {hint}", op)


@contextmanager
def replaying(rec: Recording) -> Iterator[Recording]:
    """Answer every operation from ``rec`` inside the block: zero ``run_batch`` calls.

    An operation missing from the recording fails alone, with a
    :class:`NotRecordedError` naming its class and repr.  Rounds and batch
    shapes stay as they were (the executor still groups operations; only the
    calls are answered from the recording).  Each replay starts from each
    operation's first recorded result.
    """
    if not isinstance(rec, Recording):
        raise TypeError(f"replaying() takes a batch.testing.Recording (from recording() or "
                        f"Recording.load(path)), got {type(rec).__qualname__}")
    lock = threading.Lock()
    served: dict[int, int] = {}  # id(outcome list) -> how many were served

    def layer(cls: type, operations: list[Any], call: Callable[[list[Any]], Any]) -> Any:
        out: list[Any] = []
        with rec._lock:
            found = [rec._outcomes(op, False) for op in operations]
        for op, outcomes in zip(operations, found):
            if not outcomes:
                out.append(_not_recorded(rec, op))
                continue
            with lock:
                i = served.get(id(outcomes), 0)
                served[id(outcomes)] = i + 1
            out.append(_outcome(outcomes[min(i, len(outcomes) - 1)]))
        return out

    token = _hooks.add_layer(layer)
    try:
        yield rec
    finally:
        _hooks.remove(token)


# -- FakeStore -------------------------------------------------------------------


class _StoreGet(BatchableOperation[Any]):
    """Read ``key`` from a :class:`FakeStore` (``default`` when it is missing)."""

    __slots__ = ("key", "default")
    _store: ClassVar[FakeStore]

    def __init__(self, key: Any, default: Any = None) -> None:
        self.key = key
        self.default = default

    @classmethod
    def run_batch(cls, operations: list[_StoreGet]) -> list[Any]:
        """Read every key in one call."""
        return cls._store._get(cls, operations)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, _StoreGet) and type(other) is type(self)
                and self.key == other.key and self.default == other.default)

    def __hash__(self) -> int:
        return hash(("get", self.key))

    def __repr__(self) -> str:
        extra = "" if self.default is None else f", default={self.default!r}"
        return f"Get({self.key!r}{extra})"


class _StoreWrite(BatchableOperation[Any]):
    """A ``Put`` (``kind == "put"``) or ``Delete`` (``kind == "delete"``) on a FakeStore."""

    __slots__ = ("kind", "key", "value")
    _store: ClassVar[FakeStore]

    def __init__(self, kind: str, key: Any, value: Any = None) -> None:
        if kind not in ("put", "delete"):
            raise ValueError(f"a FakeStore write is 'put' or 'delete', got {kind!r}; "
                             f"use store.Put(key, value) or store.Delete(key)")
        self.kind = kind
        self.key = key
        self.value = value

    @classmethod
    def run_batch(cls, operations: list[_StoreWrite]) -> list[Any]:
        """Apply every write of the round in one call, in yield order."""
        return cls._store._write(cls, operations)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, _StoreWrite) and type(other) is type(self)
                and (self.kind, self.key, self.value) == (other.kind, other.key, other.value))

    def __hash__(self) -> int:
        return hash((self.kind, self.key, self.value))

    def __repr__(self) -> str:
        if self.kind == "put":
            return f"Put({self.key!r}, {self.value!r})"
        return f"Delete({self.key!r})"


class FakeStore:
    """A dict-backed data store for tests whose operations are batched and recorded.

    ``store.Get(key)`` reads (``None``, or ``default=``, when missing);
    ``store.Put(key, value)`` writes and gives ``None``; ``store.Delete(key)``
    removes and gives whether the key was there.  ``Get`` and ``Write`` are
    operation classes of this store alone, so two stores never share a
    batch; ``Put`` and ``Delete`` both make ``store.Write`` operations, so the
    writes of one round go in one call and are applied in yield order.
    Every call is appended to ``store.calls``: ``("Get", [key, ...])`` or
    ``("Write", [("put", key, value), ("delete", key), ...])``;
    ``store.round_trips`` is the number of calls; ``store.data`` is the dict.

    Set class settings per store: ``store.Get.dedupe = True``,
    ``store.Get.max_batch_size = 2`` (or ``max_batch_size=`` here, for both).
    Calls are serialised by a lock, so the store is safe under
    ``max_workers``; within one round the ``Get`` and ``Write`` batches run
    in the order of their first operation.

    >>> import batch
    >>> store = FakeStore({"a": 1, "b": 2})
    >>> batch.execute([store.Get("a"), store.Get("b"), store.Put("c", 3), store.Delete("a")])
    [1, 2, None, True]
    >>> store.calls
    [('Get', ['a', 'b']), ('Write', [('put', 'c', 3), ('delete', 'a')])]
    >>> store.round_trips, store.data
    (2, {'b': 2, 'c': 3})
    """

    Get: type[_StoreGet]
    Write: type[_StoreWrite]

    def __init__(self, initial: Mapping[Any, Any] | None = None, *, name: str = "FakeStore",
                 max_batch_size: int | None = None) -> None:
        self.data: dict[Any, Any] = dict(initial or {})
        self.calls: list[tuple[str, list[Any]]] = []
        self.name = name
        self._lock = threading.Lock()
        attrs = {"__slots__": (), "__module__": __name__, "_store": self,
                 "max_batch_size": max_batch_size}
        self.Get = type("Get", (_StoreGet,), {**attrs, "__qualname__": f"{name}.Get"})
        self.Write = type("Write", (_StoreWrite,), {**attrs, "__qualname__": f"{name}.Write"})

    def Put(self, key: Any, value: Any) -> _StoreWrite:
        """An operation that sets ``key`` to ``value``; its result is ``None``."""
        return self.Write("put", key, value)

    def Delete(self, key: Any) -> _StoreWrite:
        """An operation that removes ``key``; its result is whether the key was there."""
        return self.Write("delete", key)

    @property
    def round_trips(self) -> int:
        """How many batches (``run_batch`` calls) reached the store."""
        return len(self.calls)

    def _get(self, cls: type, operations: list[_StoreGet]) -> list[Any]:
        with self._lock:
            self.calls.append(("Get", [op.key for op in operations]))
            data = self.data
            return [data.get(op.key, op.default) for op in operations]

    def _write(self, cls: type, operations: list[_StoreWrite]) -> list[Any]:
        with self._lock:
            self.calls.append(("Write", [(op.kind, op.key, op.value) if op.kind == "put"
                                         else (op.kind, op.key) for op in operations]))
            data = self.data
            out: list[Any] = []
            for op in operations:
                if op.kind == "put":
                    data[op.key] = op.value
                    out.append(None)
                else:
                    out.append(data.pop(op.key, _ABSENT) is not _ABSENT)
            return out

    def __repr__(self) -> str:
        return f"<{self.name} {len(self.data)} keys, {self.round_trips} round trips>"


_ABSENT: Any = object()
