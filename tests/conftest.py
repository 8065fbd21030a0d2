"""Shared fixtures and helpers for the store tests.

Stores use small block shapes (3 x 5, two blocks a page) so that even tiny tensors have
edge tiles, several blocks and several pages.
"""

from __future__ import annotations

import os
import shutil
import threading

import apsw
import ml_dtypes
import numpy as np
import pytest

import sqlite_tensor
from sqlite_tensor.schema import PARTS, Tables

SMALL = dict(block_rows=3, block_cols=5, page_blocks=2)

# Every dtype a store keeps, as numpy dtypes.
ALL_DTYPES = [
    np.float32,
    np.float16,
    ml_dtypes.bfloat16,
    np.float64,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e5m2,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
]


def random_array(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """An array of random *bit patterns* (NaNs with payloads, infinities, subnormals,
    negative zeros...) of the dtype; bool gets 0/1."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    n = int(np.prod(shape, dtype=np.int64))
    raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
    return raw.view(dt).reshape(shape)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality: dtype, shape and bytes (NaN payloads included)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def dump(conn, store: str = "tensors") -> dict:
    """Every row of every shadow table of a store, plus the schema: for before/after checks."""
    t = Tables(store)
    out = {"schema": sorted(conn.execute("SELECT type, name, sql FROM sqlite_schema"))}
    for part in PARTS:
        table = getattr(t, part)
        if conn.execute(
            "SELECT count(*) FROM sqlite_schema WHERE name = ?", (f"{store}_{part}",)
        ).get:
            out[part] = sorted(conn.execute(f"SELECT * FROM {table}"), key=repr)
    return out


def run_threads(work, args, timeout: float) -> None:
    """Run work(arg) for every arg, each on its own thread, all at once; fail if one of
    them raises (naming its arg) or is still running after timeout seconds."""
    errors = []

    def guarded(arg):
        try:
            work(arg)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((arg, e))

    threads = [threading.Thread(target=guarded, args=(arg,)) for arg in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread is still running"
    assert not errors, errors


def snapshot(conn, store: str = "tensors") -> tuple[dict, bytes]:
    """Rows of the shadow tables and the database image, byte for byte."""
    return dump(conn, store), conn.serialize("main")


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "store.sqlite"


def tamperable(conn):
    """conn with defensive mode off (connect() turns it on): tests damage shadow tables with
    plain SQL. test_connection_security checks the default itself."""
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    return conn


@pytest.fixture
def db(db_path):
    """A file database (WAL, 64 KiB pages) with the extension loaded, defensive mode off."""
    conn = tamperable(sqlite_tensor.connect(db_path))
    yield conn
    conn.close()


@pytest.fixture
def memdb():
    conn = tamperable(sqlite_tensor.connect(":memory:"))
    yield conn
    conn.close()


@pytest.fixture
def store(db):
    """A store with small blocks in a file database."""
    return sqlite_tensor.Store(db, **SMALL)


@pytest.fixture
def memstore(memdb):
    """A store with small blocks in an in-memory database."""
    return sqlite_tensor.Store(memdb, **SMALL)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def sqlite3_shell():
    path = shutil.which("sqlite3")
    if path is None:
        pytest.skip("no sqlite3 shell on PATH")
    return path


@pytest.fixture
def clean_env():
    """The environment a user's fresh shell might have: PATH only."""
    return {"PATH": os.environ["PATH"]}
