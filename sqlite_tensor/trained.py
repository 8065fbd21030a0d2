"""Deprecated alias of :mod:`sqlite_tensor.testing.trained` (docs/python.md and docs/dedup.md named it here)."""

import sys
import warnings

from .testing import trained as _moved

warnings.warn(
    "sqlite_tensor.trained moved to sqlite_tensor.testing.trained", DeprecationWarning, stacklevel=2
)
sys.modules[__name__] = _moved
