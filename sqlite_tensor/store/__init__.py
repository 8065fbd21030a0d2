"""The Python API of a tensor store: :class:`Store` (core.py), its parts by concern
(transactions, writes, layout, reports, verify), and the package's internal write seam
(writer.py: :meth:`Store.writer`)."""

from .common import OPTIONS
from .core import Store, TensorInfo
from .writer import StoreWriter

__all__ = ["Store", "TensorInfo", "StoreWriter", "OPTIONS"]
