"""Benchmarks of the store's Python API: ingest, dedup, read.

Each figure that has a target is a ratio against plain SQLite doing the same job in the
same run (same connection settings: sqlite_tensor.connect on a temp file, 64 KiB pages,
WAL), so a slow or noisy machine moves both sides together. See docs/benchmarks.md.
"""

import os
import statistics

import numpy as np

import sqlite_tensor
from sqlite_tensor import Store

from .common import (
    MB,
    PLAIN_DDL,
    TempDir,
    family,
    fresh_tensor,
    ingest_once,
    ingest_ratio,
    page_bytes,
    page_chunks,
    plain_insert,
    plain_read,
    settle,
    timed,
)


class Ingest:
    """Store.add_model of fresh data (random float32, no block repeats) into an empty
    store, beside a plain INSERT of the same bytes as page-sized BLOBs into an ordinary
    table in one transaction. Both commit (WAL, synchronous=FULL) inside the timing.
    track_ingest_ratio = plain seconds / ours (ours / plain in MiB/s); target >= 0.7."""

    params = [16, 64]
    param_names = ["size_mb"]
    number = 1  # every call needs a fresh, empty database
    repeat = (3, 7, 15.0)
    warmup_time = 0.0
    timeout = 120

    def setup(self, size_mb):
        self.arr = fresh_tensor(size_mb)
        self.tmp = TempDir()
        self.store = Store(self.tmp.file("store.sqlite"))
        self.plain = sqlite_tensor.connect(self.tmp.file("plain.sqlite"))
        self.plain.execute(PLAIN_DDL)
        self.chunks = page_chunks(self.arr, page_bytes(self.store))
        settle()

    def teardown(self, size_mb):
        self.store.close()
        self.plain.close()
        self.tmp.close()

    def time_add_model(self, size_mb):
        self.store.add_model("fresh", {"weight": self.arr})

    def time_plain_insert(self, size_mb):
        plain_insert(self.plain, self.chunks)

    def track_ingest_ratio(self, size_mb):
        return ingest_ratio(self.arr, repeats=9)["ratio"]

    track_ingest_ratio.unit = "ours/plain"

    def track_ingest_mib_s(self, size_mb):
        return self.arr.nbytes / MB / statistics.median(ingest_once(self.arr)[0] for _ in range(5))

    track_ingest_mib_s.unit = "MiB/s"


class Dedup:
    """A family of five text classifiers sharing one embedding (sqlite_tensor.testing.families:
    base, frozen-1, tuned-2, frozen-3, tuned-4; tuned variants move the first 12.5 % of
    embedding rows). track_dedup_ratio: logical / physical bytes once all five are stored
    (Store.stats()). time_add_*: adding one more model to a store holding the base: an
    exact copy (every block shared), a frozen variant (only the head is new), a tuned one."""

    params = ["small", "large"]
    param_names = ["family"]
    number = 1
    repeat = (3, 10, 10.0)
    warmup_time = 0.0

    def setup(self, family_size):
        self.models = family(family_size)
        self.tmp = TempDir()
        self.store = Store(self.tmp.file())
        self.store.add_model("base", self.models["base"])
        settle()

    def teardown(self, family_size):
        self.store.close()
        self.tmp.close()

    def time_add_duplicate(self, family_size):
        self.store.add_model("copy", self.models["base"])

    def time_add_frozen(self, family_size):
        self.store.add_model("frozen-1", self.models["frozen-1"])

    def time_add_tuned(self, family_size):
        self.store.add_model("tuned-2", self.models["tuned-2"])

    def track_dedup_ratio(self, family_size):
        for name, tensors in self.models.items():
            if name != "base":
                self.store.add_model(name, tensors)
        stats = self.store.stats()
        return stats["logical_bytes"] / stats["physical_bytes"]

    track_dedup_ratio.unit = "logical/physical"

    # The bytes themselves, for the bytes-per-family figure (tools/figures.py): the five
    # models as separate files (logical) and in the store (physical, exact dedup).
    def _stats(self):
        for name, tensors in self.models.items():
            if name != "base":
                self.store.add_model(name, tensors)
        return self.store.stats()

    def track_logical_mib(self, family_size):
        return self._stats()["logical_bytes"] / 2**20

    track_logical_mib.unit = "MiB"

    def track_physical_mib(self, family_size):
        return self._stats()["physical_bytes"] / 2**20

    track_physical_mib.unit = "MiB"


class Read:
    """Store.get_tensor (the engine's tensor_blob assembling the tensor from its blocks,
    returned as a numpy array) beside a plain read of the same bytes from an ordinary
    table of 1 MiB BLOBs (blob_open + read_into a fresh numpy array). Hot OS cache.
    track_read_ratio = plain seconds / ours; informational."""

    params = [16, 64]
    param_names = ["size_mb"]
    repeat = (5, 20, 10.0)
    timeout = 120

    def setup_cache(self):
        path = os.path.abspath("read.sqlite")  # asv's cache directory, removed after the run
        ids = {}
        with Store(path) as store:
            for size in self.params:
                store.add_model(f"m{size}", {"weight": fresh_tensor(size)})
            store.conn.execute(PLAIN_DDL)
            for size in self.params:
                first = store.conn.execute("SELECT coalesce(max(id), 0) + 1 FROM plain").get
                plain_insert(store.conn, page_chunks(fresh_tensor(size), MB))
                last = store.conn.execute("SELECT max(id) FROM plain").get
                ids[size] = list(range(first, last + 1))
        return {"path": path, "ids": ids}

    def setup(self, cache, size_mb):
        self.store = Store(cache["path"])
        self.ids = cache["ids"][size_mb]
        self.shape = fresh_tensor(size_mb).shape
        self.model = f"m{size_mb}"
        self.store.get_tensor(self.model, "weight")  # warm the OS cache

    def teardown(self, cache, size_mb):
        self.store.close()

    def _plain(self):
        return plain_read(self.store.conn, self.ids, np.empty(self.shape, np.float32))

    def time_get_tensor(self, cache, size_mb):
        self.store.get_tensor(self.model, "weight")

    def time_plain_read(self, cache, size_mb):
        self._plain()

    def track_read_ratio(self, cache, size_mb):
        ours, plain = [], []
        for _ in range(7):
            ours.append(timed(lambda: self.store.get_tensor(self.model, "weight")))
            plain.append(timed(self._plain))
        return statistics.median(plain) / statistics.median(ours)

    track_read_ratio.unit = "ours/plain"

    def track_get_tensor_mib_s(self, cache, size_mb):
        return size_mb / statistics.median(
            timed(lambda: self.store.get_tensor(self.model, "weight")) for _ in range(7)
        )

    track_get_tensor_mib_s.unit = "MiB/s"
