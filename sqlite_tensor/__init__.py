"""sqlite-tensor: serve deduplicated deep-learning models from a SQLite file.

    import sqlite_tensor
    store = sqlite_tensor.Store("models.sqlite")
    store.add_model("base", "base.safetensors")
    store.get_tensor("base", "fc1.weight")

The same database answers SQL in the sqlite3 shell after ``.load`` of
:func:`loadable_path` (``python -m sqlite_tensor path`` prints it).
"""

from . import cache
from ._engine import effective_threads, get_threads, set_threads
from .cache import configure as configure_cache
from .connection import connect, load, loadable_path
from .errors import CorruptStoreError, FormatError, NotFoundError, TensorStoreError
from .ingest import IngestReport
from .layers import LayerError
from .store import Store, TensorInfo

__version__ = "0.1.0"

__all__ = [
    "connect",
    "load",
    "loadable_path",
    "Store",
    "TensorInfo",
    "IngestReport",
    "LayerError",
    "set_threads",
    "get_threads",
    "effective_threads",
    "cache",
    "configure_cache",
    "TensorStoreError",
    "CorruptStoreError",
    "FormatError",
    "NotFoundError",
    "__version__",
]
