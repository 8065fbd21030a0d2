"""Deprecated alias of :mod:`sqlite_tensor.testing.families` (docs/python.md named it here)."""

import sys
import warnings

from .testing import families as _moved

warnings.warn(
    "sqlite_tensor.families moved to sqlite_tensor.testing.families",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
