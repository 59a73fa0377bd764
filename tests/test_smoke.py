"""A first smoke test; the full suites live beside it."""

import batch


class Echo(batch.BatchableOperation[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def run_batch(cls, operations: list["Echo"]) -> list[int]:
        return [op.n for op in operations]


def test_execute_operation() -> None:
    assert batch.execute(Echo(3)) == 3
