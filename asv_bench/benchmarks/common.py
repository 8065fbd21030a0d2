"""Shared pieces of the benchmarks: seeded data, throw-away databases, and the plain-SQLite
references every ratio is measured against.

Every database is a fresh file opened with ``sqlite_tensor.connect`` (64 KiB pages, WAL),
so the store and its reference run with the same connection settings. Before a timed write
``settle()`` flushes the OS's dirty pages: otherwise a write pays for the writeback of the
one before it, and on this kind of machine that noise is larger than the effect measured.
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

import sqlite_tensor
from sqlite_tensor import Store
from sqlite_tensor.testing.families import text_classifier_family

MB = 2**20
COLS = 1024  # fresh tensors are (rows x 1024) float32: several block columns at any default


@functools.lru_cache(maxsize=4)
def fresh_tensor(size_mb: int, seed: int = 0, cols: int = COLS) -> np.ndarray:
    """A seeded float32 matrix of ``size_mb`` MiB: random bits, so no block repeats."""
    rows = size_mb * MB // (4 * cols)
    arr = np.random.default_rng([seed, size_mb]).standard_normal((rows, cols), dtype=np.float32)
    arr.flags.writeable = False
    return arr


@functools.lru_cache(maxsize=2)
def family(size: str) -> dict:
    """The text-classifier family of sqlite_tensor.testing.families at a named size.

    small: its defaults (vocab 4096 x dim 64, a 1 MiB embedding);
    large: vocab 32768 x dim 128 (a 16 MiB embedding spanning many blocks).
    Both have five models (base, frozen-1, tuned-2, frozen-3, tuned-4); tuned variants
    change the first 12.5 % of the embedding's rows.
    """
    if size == "small":
        return text_classifier_family(5)
    if size == "large":
        return text_classifier_family(5, vocab=32768, dim=128, hidden=64)
    raise ValueError(f"unknown family size {size!r}")


def settle() -> None:
    """Flush dirty OS pages so the next timed write does not pay for earlier ones."""
    os.sync()


class TempDir:
    """A temporary directory, removed by close()."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="st-bench-")

    def file(self, name: str = "bench.sqlite") -> str:
        return os.path.join(self.path, name)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def page_bytes(store: Store, itemsize: int = 4) -> int:
    """Nominal bytes of a full page of this store: page_blocks full blocks."""
    return store.page_blocks * store.block_rows * store.block_cols * itemsize


def page_chunks(arr: np.ndarray, chunk: int) -> list[bytes]:
    """The tensor's bytes cut into BLOBs of ``chunk`` bytes (the last one shorter)."""
    data = arr.tobytes()
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


PLAIN_DDL = "CREATE TABLE IF NOT EXISTS plain(id INTEGER PRIMARY KEY, data BLOB NOT NULL)"


def plain_insert(conn, chunks) -> None:
    """The reference write: the BLOBs into an ordinary table, one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    for chunk in chunks:
        conn.execute("INSERT INTO plain(data) VALUES (?)", (chunk,))
    conn.execute("COMMIT")


def plain_read(conn, ids, out: np.ndarray) -> np.ndarray:
    """The reference read: those rows' BLOBs, in order, into ``out`` (blob_open + read_into,
    the fastest way apsw has to read a BLOB)."""
    view = memoryview(out).cast("B")
    blob = None
    pos = 0
    try:
        for rowid in ids:
            if blob is None:
                blob = conn.blob_open("main", "plain", "data", rowid, False)
            else:
                blob.reopen(rowid)
            n = blob.length()
            blob.read_into(view, pos, n)
            pos += n
    finally:
        if blob is not None:
            blob.close()
    return out


def median_time(fn, calls: int) -> float:
    """Median seconds of `calls` calls of fn."""
    return statistics.median(timed(fn) for _ in range(calls))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ingest_once(arr: np.ndarray, **options) -> tuple[float, int]:
    """Seconds for Store.add_model of ``arr`` into a fresh store; and that store's page size."""
    tmp = TempDir()
    try:
        store = Store(tmp.file(), **options)
        try:
            settle()
            seconds = timed(lambda: store.add_model("fresh", {"weight": arr}))
            return seconds, page_bytes(store, arr.itemsize)
        finally:
            store.close()
    finally:
        tmp.close()


def plain_insert_once(chunks) -> float:
    """Seconds for plain_insert of ``chunks`` into a fresh database."""
    tmp = TempDir()
    try:
        conn = sqlite_tensor.connect(tmp.file())
        try:
            conn.execute(PLAIN_DDL)
            settle()
            return timed(lambda: plain_insert(conn, chunks))
        finally:
            conn.close()
    finally:
        tmp.close()


def ingest_ratio(arr: np.ndarray, repeats: int, **options) -> dict:
    """Ingest vs plain insert of the same bytes, alternating, each on a fresh file.

    Returns medians in seconds and MiB/s, and ratio = plain seconds / ingest seconds
    (ours / plain in throughput: 1.0 means as fast as a bare BLOB insert).
    """
    ours, plain = [], []
    chunks = None
    for _ in range(repeats):
        seconds, chunk = ingest_once(arr, **options)
        ours.append(seconds)
        if chunks is None:
            chunks = page_chunks(arr, chunk)
        plain.append(plain_insert_once(chunks))
    o, p = statistics.median(ours), statistics.median(plain)
    return {
        "ours_s": o,
        "plain_s": p,
        "ours_mib_s": arr.nbytes / MB / o,
        "plain_mib_s": arr.nbytes / MB / p,
        "ratio": p / o,
    }
