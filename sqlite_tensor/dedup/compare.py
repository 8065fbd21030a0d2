"""Deprecated alias of :mod:`sqlite_tensor.testing.dedup_compare` (docs/benchmarks.md named
it here)."""

import sys
import warnings

from ..testing import dedup_compare as _moved

warnings.warn(
    "sqlite_tensor.dedup.compare moved to sqlite_tensor.testing.dedup_compare",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
