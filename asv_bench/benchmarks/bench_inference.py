"""Inference benchmarks: compiled kernels over page-resident blocks, beside numpy doing the
same arithmetic on the same weights in the same run (with the same thread count).

Each ratio is numpy seconds / ours (1.0: as fast as numpy), taken as the median over
rounds of a few calls of each side in turn, so drift on a noisy machine moves both sides.
See docs/benchmarks.md for the figures.
"""

import os
import shutil
import statistics
import subprocess
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import sqlite_tensor
from sqlite_tensor import Store, _engine

from .common import median_time

N = 4096  # the dense layer of the targets: N x N float32 (64 MiB, 256 blocks)
# Dense's sizes: 4 and 16 MiB fit in this machine's 32 MiB last-level cache (AMD EPYC:
# lscpu), 64 and 256 MiB do not. Batch 256 is compute-bound and measured at N only.
DENSE_SIZES = [1024, 2048, 4096, 8192]
ROUNDS = 7
# After a call, OpenBLAS's idle worker threads spin for 2**28 TSC cycles (about 0.12 s at
# 2.3 GHz) before they sleep: numpy's, run just before ours, would take a core from our
# threads. With more than one thread each side therefore starts after this long a pause,
# so that neither runs beside the other's idle workers. (OPENBLAS_THREAD_TIMEOUT would
# shorten the spin, but asv imports every benchmark module, numpy with them, before this
# one could set it.) Our own workers sleep as soon as they are idle.
BLAS_SETTLE_S = 0.15


def numpy_blas_threads() -> list[int]:
    """The thread counts of the BLAS libraries numpy itself loaded (numpy.libs/), as
    threadpoolctl reads them: the reference's threads, whatever sqlite_tensor's own BLAS
    (which batches use) is set to."""
    return [
        i["num_threads"]
        for i in threadpool_info()
        if i["user_api"] == "blas" and "numpy" in os.path.basename(os.path.dirname(i["filepath"]))
    ]


def ratio_to_numpy(ours, numpy_ref, calls: int = 5, settle: float = 0.0) -> float:
    """Median over ROUNDS of (numpy's median seconds / ours) for `calls` calls each, each
    side's calls after a pause of `settle` seconds."""

    def side(fn):
        if settle:
            time.sleep(settle)
        return median_time(fn, calls)

    return statistics.median(side(numpy_ref) / side(ours) for _ in range(ROUNDS))


def dense_store(path: str, layers: int = 1, seed: int = 0, n: int = N) -> None:
    """A model of `layers` n x n float32 dense layers (PyTorch layout) with biases."""
    rng = np.random.default_rng(seed)
    tensors, spec = {}, []
    for i in range(layers):
        # float32 throughout: dividing by a numpy float64 scalar would promote to float64
        tensors[f"fc{i}.weight"] = rng.standard_normal((n, n), dtype=np.float32) / np.float32(
            np.sqrt(n)
        )
        tensors[f"fc{i}.bias"] = rng.standard_normal(n, dtype=np.float32)
        spec.append(
            {
                "op": "dense",
                "weight": f"fc{i}.weight",
                "bias": f"fc{i}.bias",
                "activation": "relu" if i + 1 < layers else "identity",
            }
        )
    with Store(path) as store:
        store.add_model("model", tensors, layers=spec)


class Dense:
    """One size x size dense layer with bias, all its pages cached in the buffer pool
    (sizes 1024 - 8192: 4 - 256 MiB of float32, in and out of the last-level cache).
    Ours: Store.predict. Reference: numpy's x @ W.T + b. Same thread count on both sides
    (threadpoolctl for numpy, sqlite_tensor's set_threads for ours).
    track_ratio targets: batch 256 >= 0.9; batch 1 >= 0.9 on one thread, >= 0.8 on two."""

    params = (DENSE_SIZES, [1, 256], [1, 2])
    param_names = ["size", "batch", "threads"]
    timeout = 600

    def setup_cache(self):
        paths = {}
        for n in DENSE_SIZES:
            paths[n] = os.path.abspath(f"dense{n}.sqlite")
            dense_store(paths[n], n=n)
        return paths

    def setup(self, paths, size, batch, threads):
        if batch > 1 and size != N:
            raise NotImplementedError("batch 256 is measured at 4096 only")
        self.store = Store(paths[size])
        self.W = self.store.get_tensor("model", "fc0.weight")
        assert self.W.dtype == np.float32
        self.b = self.store.get_tensor("model", "fc0.bias")
        rng = np.random.default_rng(1)
        self.x = rng.standard_normal((batch, size), dtype=np.float32)
        if batch == 1:
            self.x = self.x[0]
        self.limits = threadpool_limits(threads)
        _engine.set_threads(threads)
        # the fair reference: numpy's OpenBLAS on as many threads as ours, and it does use
        # two for these sgemv (a quiet 1024 x 1024 call: 0.057 ms on one, 0.030 on two)
        assert numpy_blas_threads() == [threads], numpy_blas_threads()
        np.testing.assert_allclose(
            self.store.predict("model", self.x), self._numpy(), rtol=1e-3, atol=1e-3
        )

    def teardown(self, paths, size, batch, threads):
        if not hasattr(self, "store"):  # setup skipped these parameters
            return
        self.limits.restore_original_limits()
        self.store.close()

    def _ours(self):
        return self.store.predict("model", self.x)

    def _numpy(self):
        return self.x @ self.W.T + self.b

    def time_predict(self, paths, size, batch, threads):
        self._ours()

    def time_numpy(self, paths, size, batch, threads):
        self._numpy()

    def track_ratio(self, paths, size, batch, threads):
        return ratio_to_numpy(self._ours, self._numpy, settle=BLAS_SETTLE_S if threads > 1 else 0.0)

    track_ratio.unit = "numpy s / ours"


class LargerThanCache:
    """A 256 MiB model (four 4096 x 4096 dense layers) run with buffer-pool budgets smaller
    than it: pages are read from SQLite (OS cache warm) as the kernels go, and evicted.
    track_gib_s: weight GiB processed per second, batch 64, default threads.
    track_vs_cached: that speed over the same model with a budget that holds it all."""

    params = [16, 64, 128]
    param_names = ["budget_mib"]
    timeout = 600

    def setup_cache(self):
        path = os.path.abspath("large.sqlite")
        dense_store(path, layers=4)
        return path

    def setup(self, path, budget_mib):
        self.store = Store(path)
        self.x = np.random.default_rng(2).standard_normal((64, N), dtype=np.float32)
        _engine.cache_clear()
        _engine.cache_configure(budget_mib * 2**20)
        self.store.predict("model", self.x)

    def teardown(self, path, budget_mib):
        _engine.cache_configure(512 * 2**20)
        _engine.cache_clear()
        self.store.close()

    def time_predict(self, path, budget_mib):
        self.store.predict("model", self.x)

    def track_gib_s(self, path, budget_mib):
        seconds = median_time(lambda: self.store.predict("model", self.x), 5)
        return 4 * N * N * 4 / 2**30 / seconds

    track_gib_s.unit = "GiB/s"

    def track_vs_cached(self, path, budget_mib):
        limited = median_time(lambda: self.store.predict("model", self.x), 5)
        _engine.cache_configure(1024 * 2**20)
        self.store.predict("model", self.x)
        cached = median_time(lambda: self.store.predict("model", self.x), 5)
        _engine.cache_configure(budget_mib * 2**20)
        return cached / limited

    track_vs_cached.unit = "cached s / limited"


class ShellRows:
    """SELECT over 1,000 rows of a table in the stock sqlite3 shell (a subprocess: start-up,
    .load and the query all count), with an MLP 1024 -> 512 (relu) -> 64 (softmax):
    per-row tensor_predict, and tensor_predict_batch (matrix-matrix on batches of 256)."""

    ROWS = 1000
    timeout = 300

    def setup_cache(self):
        path = os.path.abspath("shell.sqlite")
        rng = np.random.default_rng(3)
        with Store(path) as store:
            store.add_model(
                "mlp",
                {
                    "fc1.weight": (rng.standard_normal((512, 1024)) / 32).astype(np.float32),
                    "fc1.bias": np.zeros(512, np.float32),
                    "fc2.weight": (rng.standard_normal((64, 512)) / 23).astype(np.float32),
                },
                layers=[
                    {
                        "op": "dense",
                        "weight": "fc1.weight",
                        "bias": "fc1.bias",
                        "activation": "relu",
                    },
                    {"op": "dense", "weight": "fc2.weight", "activation": "softmax"},
                ],
            )
            store.conn.execute("CREATE TABLE inputs(id INTEGER PRIMARY KEY, features BLOB)")
            store.conn.executemany(
                "INSERT INTO inputs(features) VALUES (?)",
                [
                    (rng.standard_normal(1024, dtype=np.float32).tobytes(),)
                    for _ in range(self.ROWS)
                ],
            )
        return path

    def setup(self, path):
        self.shell = shutil.which("sqlite3")
        if self.shell is None:
            raise NotImplementedError("no sqlite3 shell")
        self.load = f".load {sqlite_tensor.loadable_path()}\n"

    def _run(self, path, query):
        out = subprocess.run(
            [self.shell, path],
            input=self.load + query,
            text=True,
            capture_output=True,
            env={"PATH": os.environ.get("PATH", "")},
            check=True,
        )
        assert out.stdout.strip() == str(self.ROWS), out.stdout + out.stderr

    def _per_row(self, path):
        self._run(
            path,
            "SELECT count(tensor_argmax(tensor_predict('tensors', 'mlp', features))) FROM inputs;",
        )

    def _batch(self, path):
        self._run(
            path,
            "SELECT count(tensor_argmax(output)) FROM tensor_predict_batch("
            "'tensors', 'mlp', 'SELECT id, features FROM inputs');",
        )

    def time_per_row(self, path):
        self._per_row(path)

    def time_batch(self, path):
        self._batch(path)

    def track_rows_per_s_per_row(self, path):
        return self.ROWS / median_time(lambda: self._per_row(path), 5)

    track_rows_per_s_per_row.unit = "rows/s"

    def track_rows_per_s_batch(self, path):
        return self.ROWS / median_time(lambda: self._batch(path), 5)

    track_rows_per_s_batch.unit = "rows/s"
