"""Store.predict's fixed work per call (issue #17), and that cutting it changed no answer
and no safety rule:

- the statement that holds a call's read snapshot is kept per connection between calls
  (process_pool.pxi, "the snapshot statement, kept per connection"): a connection still
  closes (apsw refuses while any statement is unfinalized), a commit between two calls is
  still seen, a failed start (BUSY) drops it, and where it cannot be kept nothing changes;
- one C-contiguous float32 vector goes to the kernels without conversions: every other
  input gives the same numbers as before, through the general path.
"""

from __future__ import annotations

import apsw
import numpy as np
import pytest

import sqlite_tensor
from sqlite_tensor import _engine

LAYERS = [{"op": "dense", "weight": "w", "bias": "b", "activation": "relu"}]


def model(seed, n_out=6, n_in=10):
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((n_out, n_in)).astype(np.float32),
        "b": rng.standard_normal(n_out).astype(np.float32),
    }


def expected(arrays, x):
    return np.maximum(arrays["w"] @ np.asarray(x, np.float64) + arrays["b"], 0)


def kept(store):
    return _engine._kept_statements(store.conn.sqlite3pointer())


def test_the_snapshot_statement_is_kept_and_the_connection_still_closes(tmp_path):
    path = tmp_path / "kept.sqlite"
    arrays = model(1)
    with sqlite_tensor.Store(path) as store:
        store.add_model("m", arrays, layers=LAYERS)
    store = sqlite_tensor.Store(path)
    db = store.conn.sqlite3pointer()
    x = np.linspace(-1, 1, 10, dtype=np.float32)
    for _ in range(20):
        np.testing.assert_allclose(store.predict("m", x), expected(arrays, x), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(store.get_tensor("m", "w"), arrays["w"])
    # the snapshot statement and the reads' (a store's config, a tensor's blocks): kept
    # once, shared by both read paths, and free between calls
    n, in_use = kept(store)
    assert n >= 2 and in_use == 0
    store.predict("m", x)
    store.get_tensor("m", "b")
    assert kept(store) == (n, 0)
    assert store.conn.execute("SELECT count(*) FROM _tensor_kept_statements").get == 0
    store.conn.close()  # raised BusyError if the statement were left unfinalized
    assert _engine._kept_statements(db) == (0, 0)
    with sqlite_tensor.Store(path) as again:  # a new connection (perhaps at db's address)
        np.testing.assert_allclose(again.predict("m", x), expected(arrays, x), rtol=1e-5, atol=1e-5)


def test_a_commit_between_calls_is_seen(tmp_path):
    """Another connection rewrites the model between calls; the next call answers with it
    (the kept statement starts a new snapshot each call)."""
    path = tmp_path / "fresh.sqlite"
    with sqlite_tensor.Store(path) as store:
        store.add_model("m", model(0), layers=LAYERS)
    reader, writer = sqlite_tensor.Store(path), sqlite_tensor.Store(path)
    x = np.linspace(-1, 1, 10, dtype=np.float32)
    try:
        for seed in range(1, 6):
            arrays = model(seed)
            writer.update_model("m", arrays, layers=LAYERS)
            got = reader.predict("m", x)
            np.testing.assert_allclose(got, expected(arrays, x), rtol=1e-5, atol=1e-5)
            if seed == 1:
                n = kept(reader)[0]
            assert kept(reader) == (n, 0) and n >= 1
    finally:
        reader.close()
        writer.close()


def test_a_failed_start_drops_the_kept_statement(tmp_path):
    """A writer holding the file (rollback journal: readers get BUSY): the call raises
    BusyError as before, the kept statement is dropped, and the next call keeps a new one."""
    path = str(tmp_path / "busy.sqlite")
    arrays = model(2)
    reader = sqlite_tensor.Store(sqlite_tensor.connect(path, wal=False))
    reader.add_model("m", arrays, layers=LAYERS)
    reader.conn.set_busy_timeout(0)
    x = np.linspace(-1, 1, 10, dtype=np.float32)
    reader.predict("m", x)
    n = kept(reader)[0]
    assert n >= 1 and kept(reader) == (n, 0)
    other = apsw.Connection(path)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(apsw.BusyError):
        reader.predict("m", x)
    assert kept(reader) == (n - 1, 0)  # the snapshot statement, whose start failed
    other.execute("COMMIT")
    other.close()
    np.testing.assert_allclose(reader.predict("m", x), expected(arrays, x), rtol=1e-5, atol=1e-5)
    assert kept(reader) == (n, 0)
    reader.conn.close()


def test_where_it_cannot_be_kept_each_call_prepares_its_own(tmp_path):
    """A table of the kept table's name hides it: nothing is kept, answers and close as
    before."""
    path = tmp_path / "hidden.sqlite"
    arrays = model(3)
    with sqlite_tensor.Store(path) as store:
        store.add_model("m", arrays, layers=LAYERS)
        store.conn.execute("CREATE TABLE _tensor_kept_statements(x)")
    store = sqlite_tensor.Store(path)
    x = np.linspace(-1, 1, 10, dtype=np.float32)
    for _ in range(3):
        np.testing.assert_allclose(store.predict("m", x), expected(arrays, x), rtol=1e-5, atol=1e-5)
    assert kept(store) == (0, 0)
    store.conn.close()


def test_one_vector_the_fast_way_and_every_other_input_agree(tmp_path):
    path = tmp_path / "inputs.sqlite"
    arrays = model(4, n_out=5, n_in=12)
    with sqlite_tensor.Store(path) as store:
        store.add_model("m", arrays, layers=LAYERS)
        x = np.random.default_rng(5).standard_normal(12).astype(np.float32)
        want = store.predict("m", x[None, :])[0]
        np.testing.assert_allclose(want, expected(arrays, x), rtol=1e-5, atol=1e-5)
        readonly = np.frombuffer(x.tobytes(), np.float32)
        strided = np.repeat(x, 2)[::2]
        inputs = [x, readonly, strided, x.astype(">f4"), x.astype(np.float64), x.tolist()]
        for v in inputs:
            got = store.predict("m", v)
            assert got.shape == (5,) and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        got = store.predict("m", x)
        got[:] = 0  # a new array of its own, not a view of anything the engine keeps
        np.testing.assert_allclose(store.predict("m", x), want, rtol=1e-6, atol=1e-6)
        with pytest.raises(ValueError, match=r"takes 12 features .* got shape \(11,\)"):
            store.predict("m", x[:11])
