"""Shared by the tests of the trained families and the baselines: each family trained once
at its small size, and BLAS on one thread (small matrices: extra threads only spin)."""

from __future__ import annotations

import pytest

from sqlite_tensor.testing import nets
from sqlite_tensor.testing.trained_families import FAMILIES

_cache = {}


@pytest.fixture(autouse=True)
def blas_one_thread():
    with nets.one_thread():
        yield


def small(name):
    if name not in _cache:
        _cache[name] = FAMILIES[name]("small", 0)
    return _cache[name]
