"""Store.get_tensor keeps its SQL statements per connection (issue #17): the store's config,
the tensor's block map and its residuals are prepared once, not on every call (they ran
four prepares a call), and still read what the call's transaction sees: another writer's
commit between calls is seen, an open transaction keeps its snapshot, and the connection
closes (process_pool.pxi, "the snapshot statement, kept per connection")."""

from __future__ import annotations

import numpy as np
import pytest

import sqlite_tensor
from sqlite_tensor import _engine


def kept(store):
    return _engine._kept_statements(store.conn.sqlite3pointer())


def runs(store):
    return _engine._kept_statement_runs(store.conn.sqlite3pointer())


def arrays(seed, shape=(70, 90)):
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal(shape).astype(np.float32),
        "v": rng.standard_normal(shape[0]).astype(np.float32),
    }


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "kept.sqlite"
    with sqlite_tensor.Store(p, block_rows=32, block_cols=32) as store:
        store.add_model("m", arrays(0))
    return p


def test_repeated_calls_prepare_nothing(path):
    want = arrays(0)
    with sqlite_tensor.Store(path) as store:
        np.testing.assert_array_equal(store.get_tensor("m", "w"), want["w"])
        n, in_use = kept(store)
        assert n >= 3 and in_use == 0  # config twice (block shape, uid), block map, ...
        ran, reprepared = runs(store)
        for _ in range(10):
            for name in ("w", "v"):
                np.testing.assert_array_equal(store.get_tensor("m", name), want[name])
        assert kept(store) == (n, 0)  # the same statements, free between calls
        ran2, reprepared2 = runs(store)
        assert ran2 >= ran + 20 * 3  # they ran on every call
        # and SQLite did not compile them again either (a join against a bare parameter
        # is re-prepared at every new binding: the map query's is written +?1)
        assert reprepared2 == reprepared


def test_another_writers_commit_between_calls_is_seen(path):
    reader, writer = sqlite_tensor.Store(path), sqlite_tensor.Store(path)
    try:
        for seed in range(1, 5):
            shape = (70, 90) if seed % 2 else (33, 65)  # another block grid, another map
            new = arrays(seed, shape)
            writer.update_model("m", new)
            for name in ("w", "v"):
                np.testing.assert_array_equal(reader.get_tensor("m", name), new[name])
        writer.drop_model("m")
        with pytest.raises(sqlite_tensor.NotFoundError):
            reader.get_tensor("m", "w")
        writer.add_model("m", arrays(9))
        np.testing.assert_array_equal(reader.get_tensor("m", "w"), arrays(9)["w"])
    finally:
        reader.close()
        writer.close()


def test_an_open_transaction_keeps_its_snapshot(path):
    reader, writer = sqlite_tensor.Store(path), sqlite_tensor.Store(path)
    try:
        before = reader.get_tensor("m", "w")
        reader.conn.execute("BEGIN")
        np.testing.assert_array_equal(reader.get_tensor("m", "w"), before)
        writer.update_model("m", arrays(5))
        np.testing.assert_array_equal(reader.get_tensor("m", "w"), before)  # still its snapshot
        reader.conn.execute("COMMIT")
        np.testing.assert_array_equal(reader.get_tensor("m", "w"), arrays(5)["w"])
    finally:
        reader.close()
        writer.close()


def test_residuals_are_read_by_a_kept_statement_and_the_connection_closes(path):
    """A tensor carrying residuals (written as test_residual_kernels writes them): the
    effective values on every call, and close() finalizes every kept statement (apsw raises
    BusyError otherwise)."""
    from test_residual_kernels import put_residuals, random_residuals

    from sqlite_tensor.residuals import LOWRANK, QUANTIZED

    store = sqlite_tensor.Store(path)
    db = store.conn.sqlite3pointer()
    entries, added = random_residuals(
        np.random.default_rng(3), store, (70, 90), [(0, 0), (1, 2)], [(LOWRANK, 2), (QUANTIZED, 8)]
    )
    put_residuals(store, "m", "w", entries)
    want = arrays(0)["w"] + added
    np.testing.assert_allclose(store.get_tensor("m", "w"), want, rtol=1e-6, atol=1e-6)
    n = kept(store)[0]
    ran, reprepared = runs(store)
    for _ in range(5):
        np.testing.assert_allclose(store.get_tensor("m", "w"), want, rtol=1e-6, atol=1e-6)
    assert kept(store) == (n, 0) and runs(store)[1] == reprepared
    store.close()
    assert _engine._kept_statements(db) == (0, 0)


def test_where_nothing_can_be_kept_each_call_prepares_its_own(path):
    with sqlite_tensor.Store(path) as store:
        store.conn.execute("CREATE TABLE _tensor_kept_statements(x)")
    with sqlite_tensor.Store(path) as store:
        for _ in range(3):
            np.testing.assert_array_equal(store.get_tensor("m", "w"), arrays(0)["w"])
        assert kept(store) == (0, 0)
