"""Grouping: which operations of a round go to the same ``run_batch`` call.

The rule (DESIGN section 3): operations pending at the end of a round are
grouped by ``(type(op), op.batch_key())``; a seed operation whose class
overrides ``batcher()`` is grouped by the returned :class:`batch.Batcher`
instead.  Groups keep the order in which their first operation was yielded
(a dict keeps insertion order), and a group keeps its operations in yield
order.  To change a grouping rule, change :func:`group_key`.

Classes with no key, no batcher and no cache take a fast path: they are
grouped under the bare class object, which no other key can equal, so the
stepping loop can append to their group without calling anything.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ._errors import batch_key_error, batcher_type_error
from ._operation import Batcher, OpInfo, settings_of

__all__ = ["DedupeOps", "Group", "group_key", "op_info"]


class Group:
    """The operations of one round that go to the same ``run_batch``."""

    __slots__ = ("key", "info", "owner", "ops", "targets")

    def __init__(self, key: Hashable, info: OpInfo, owner: Any) -> None:
        self.key = key
        self.info = info
        self.owner = owner  # the operation class, or a seed Batcher
        self.ops: list[Any] = DedupeOps() if info.dedupe else []
        # One entry per run of operations, in yield order: a task (one
        # operation, scalar yield), or (join, offset, count) for ``count``
        # consecutive operations filling slots of one join.
        self.targets: list[Any] = []

    @property
    def size(self) -> int:
        """Operations queued (after dedupe: distinct ones)."""
        return len(self.ops)


class DedupeOps(list):  # type: ignore[type-arg]
    """The operations of a deduplicating group: each distinct one kept once.

    Deduplicating as operations are queued (not when the round is sent)
    means the repeats are freed at once: a round of a million equal reads
    holds one operation, not a million for the garbage collector to scan.
    ``positions[i]`` is the index in this list of the i-th operation yielded;
    an unhashable operation gets ``-1 - k``, ``k`` indexing ``unhashable``.
    """

    __slots__ = ("seen", "positions", "unhashable")

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[Any, int] = {}
        self.positions: list[int] = []
        self.unhashable: list[tuple[Any, BaseException]] = []

    def append(self, op: Any) -> None:
        self.extend((op,))

    def extend(self, ops: Any) -> None:
        index = self.seen
        get = index.get
        add = self.positions.append
        keep = super().append
        for op in ops:
            try:
                i = get(op)
                if i is None:
                    i = index[op] = len(index)
                    keep(op)
            except Exception as exc:  # TypeError: unhashable; anything else: a bad __hash__/__eq__
                self.unhashable.append((op, exc))
                i = -len(self.unhashable)
            add(i)


# Each class's OpInfo is kept in the class's own __dict__ (not inherited:
# a subclass has its own settings), so it lives and dies with the class.
_INFO_ATTR = "_batch_op_info"


def op_info(cls: type) -> OpInfo:
    """How the executor treats ``cls``; raises BatchSettingError for a bad setting.

    Computed once, and again only if a setting was changed after first use.
    """
    info = cls.__dict__.get(_INFO_ATTR)
    if info is not None and info.settings == settings_of(cls):
        return info  # type: ignore[no-any-return]
    info = OpInfo(cls)
    type.__setattr__(cls, _INFO_ATTR, info)
    return info


def group_key(op: Any, info: OpInfo) -> tuple[Hashable, Any] | BaseException:
    """The group of a non-fast-path operation: (key, owner), or why it has none.

    The owner is what ``run_batch``/``gen_batch`` is called on: the class,
    or a seed Batcher.  A failure fails that operation alone.
    """
    if info.uses_batcher:
        try:
            owner = op.batcher()
        except Exception as exc:
            return exc
        if not isinstance(owner, Batcher):
            return batcher_type_error(info.name, owner)
        return (Batcher, owner), owner
    if info.keyed:
        try:
            k = op.batch_key()
        except Exception as exc:
            return exc
        key = (info.cls, k)
        try:
            hash(key)
        except TypeError:
            return batch_key_error(info.name, k)
        return key, info.cls
    # Not the bare class: that key is reserved for the fast path.
    return (info.cls, None), info.cls
