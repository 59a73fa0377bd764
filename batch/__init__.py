"""batch: write data access as plain generators, get the fewest round trips.

Generators yield operations (or sub-generators, or lists/tuples/dicts of
them); the executor runs the whole call tree round by round and sends each
group of alike operations to its data source in one ``run_batch`` call.
"""

from ._api import BatchExecutor as BatchExecutor
from ._api import execute as execute
from ._api import execute_async as execute_async
from ._api import execute_iter as execute_iter
from ._api import execute_many as execute_many
from ._api import execute_many_async as execute_many_async
from ._async_batcher import AsyncBatcher as AsyncBatcher
from ._cache import OperationCache as OperationCache
from ._dynamic_batcher import DynamicBatcher as DynamicBatcher
from ._errors import BatchError as BatchError
from ._errors import BatchResultError as BatchResultError
from ._errors import CycleError as CycleError
from ._errors import GeneratorReusedError as GeneratorReusedError
from ._errors import YieldTypeError as YieldTypeError
from ._function_op import operation as operation
from ._operation import BatchableOperation as BatchableOperation
from ._operation import Batcher as Batcher
from ._operation import GenResult as GenResult
from ._operation import settled as settled
from ._sharing import GeneratorCache as GeneratorCache
from ._sharing import GenUtils as GenUtils
from ._sharing import SharedGenerator as SharedGenerator
from ._sharing import cached_generator as cached_generator
from ._sharing import gen_identity as gen_identity
from ._sharing import gen_structured as gen_structured
from ._trace import Trace as Trace
from ._typed import Gen as Gen
from ._typed import gather as gather
from ._typed import gather_list as gather_list

__version__ = "0.1.0"

# Submodules with optional or heavier imports load on first attribute access,
# so ``import batch`` stays cheap and ``batch.http.Client`` works without an
# explicit ``import batch.http``.
_SUBMODULES = frozenset({"http", "multipart", "redis", "sql", "testing"})


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'batch' has no attribute {name!r}")

__all__ = [
    "AsyncBatcher",
    "DynamicBatcher",
    "BatchError",
    "BatchExecutor",
    "BatchResultError",
    "BatchableOperation",
    "Batcher",
    "CycleError",
    "Gen",
    "GenResult",
    "GenUtils",
    "GeneratorCache",
    "GeneratorReusedError",
    "OperationCache",
    "SharedGenerator",
    "Trace",
    "YieldTypeError",
    "cached_generator",
    "execute",
    "execute_async",
    "execute_iter",
    "execute_many",
    "execute_many_async",
    "gather",
    "gather_list",
    "gen_identity",
    "gen_structured",
    "operation",
    "settled",
]
