"""What page checksums and pool freshness cost.

Cached serving (every page in the pool): Store.predict with the engine's checks on (the
default: each call asks the connection's data version and change count, each page's mark is
compared) beside the same calls with the hidden switch ``_engine._set_page_checks(False)``
(no view, no checksum: the pool trusts every cached page), alternated in one run; target
track_cached_overhead <= 1.03. Cold reads (every page read from SQLite, OS cache warm):
Store.get_tensor with the pool cleared before each call, checks on / off: what verifying
every byte of each page as it enters costs. And the checksum's own speed.
"""

import os
import statistics

import numpy as np

from sqlite_tensor import Store, _engine

from .common import median_time

ROUNDS = 9
CALLS = 15


def _store(path: str, n: int) -> None:
    rng = np.random.default_rng(n)
    with Store(path) as store:
        store.add_model(
            "model",
            {
                "w": (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32),
                "b": rng.standard_normal(n, dtype=np.float32),
            },
            layers=[{"op": "dense", "weight": "w", "bias": "b", "activation": "relu"}],
        )


def alternated_ratio(on, off, calls: int = CALLS) -> float:
    """Median over ROUNDS of (median seconds with checks on / with checks off)."""

    def side(flag, fn):
        _engine._set_page_checks(flag)
        fn()  # the first call after a switch re-confirms pages and reloads the plan
        return median_time(fn, calls)

    try:
        return statistics.median(side(True, on) / side(False, off) for _ in range(ROUNDS))
    finally:
        _engine._set_page_checks(True)


class CachedServing:
    """A dense n x n float32 layer (bias, relu), batch 1, every page cached."""

    params = [256, 1024, 4096]
    param_names = ["n"]
    timeout = 300

    def setup_cache(self):
        paths = {}
        for n in self.params:
            paths[n] = os.path.abspath(f"checks-{n}.sqlite")
            _store(paths[n], n)
        return paths

    def setup(self, paths, n):
        self.store = Store(paths[n])
        self.x = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
        self.store.predict("model", self.x)

    def teardown(self, paths, n):
        _engine._set_page_checks(True)
        self.store.close()

    def _predict(self):
        self.store.predict("model", self.x)

    def time_predict_checked(self, paths, n):
        self._predict()

    def track_cached_overhead(self, paths, n):
        return alternated_ratio(self._predict, self._predict)

    track_cached_overhead.unit = "checked s / unchecked"


class ColdRead:
    """Store.get_tensor of an n x n float32 tensor with the pool cleared before each call:
    every page is read from SQLite and, checked, verified in full."""

    params = [1024, 4096]
    param_names = ["n"]
    timeout = 300

    def setup_cache(self):
        return CachedServing.setup_cache(self)

    def setup(self, paths, n):
        self.store = Store(paths[n])

    def teardown(self, paths, n):
        _engine._set_page_checks(True)
        self.store.close()

    def _read(self):
        _engine.cache_clear()
        self.store.get_tensor("model", "w")

    def time_cold_get_tensor(self, paths, n):
        self._read()

    def track_cold_overhead(self, paths, n):
        return alternated_ratio(self._read, self._read, calls=5)

    track_cold_overhead.unit = "checked s / unchecked"


class Checksum:
    """The page checksum over a buffer in memory (one core)."""

    params = [64 * 1024, 1024 * 1024, 16 * 1024 * 1024]
    param_names = ["bytes"]

    def setup(self, nbytes):
        self.data = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)

    def time_checksum(self, nbytes):
        _engine.page_checksum(self.data, 1)

    def track_gb_s(self, nbytes):
        reps = max(1, (64 << 20) // nbytes)
        seconds = median_time(lambda: [_engine.page_checksum(self.data, 1) for _ in range(reps)], 7)
        return reps * nbytes / seconds / 1e9

    track_gb_s.unit = "GB/s"
