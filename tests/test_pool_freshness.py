"""The buffer pool never serves a page that differs from what is committed, whoever wrote
it: plain SQL from another connection of this process or from another process (the page
rows' bytes only, nothing else marks the change), a restore through the backup API. After
the change, the same process answers with the new weights from every read path:
Store.predict (whose plan cache is dropped too), get_tensor, tensor_blob and
tensor_predict."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import apsw
import numpy as np
import pytest
from conftest import tamperable

import sqlite_tensor
from sqlite_tensor import pages


def open_store(path):
    """The store with defensive mode off: these tests rewrite pages with plain SQL."""
    store = sqlite_tensor.Store(str(path))
    tamperable(store.conn)
    return store


OPTS = dict(block_rows=4, block_cols=4, page_blocks=2)
LAYERS = [{"op": "dense", "weight": "w", "bias": "b", "activation": "identity"}]


def make_store(path, seed):
    """A store of one dense model; the same layout (pages, slots) for every seed."""
    rng = np.random.default_rng(seed)
    arrays = {
        "w": rng.standard_normal((8, 12)).astype(np.float32),
        "b": rng.standard_normal(8).astype(np.float32),
    }
    with sqlite_tensor.Store(str(path), **OPTS) as store:
        store.add_model("m", arrays, layers=LAYERS)
    return arrays


def expected(arrays, x):
    return arrays["w"] @ x + arrays["b"]


def all_reads(store, x):
    """Every read path, as numpy: predict, get_tensor, tensor_blob, tensor_predict."""
    conn = store.conn
    blob = conn.execute("SELECT tensor_blob('tensors', 'm', 'w')").get
    sql = conn.execute("SELECT tensor_predict('tensors', 'm', ?)", (x.tobytes(),)).get
    return (
        store.predict("m", x),
        store.get_tensor("m", "w"),
        np.frombuffer(blob, np.float32).reshape(8, 12),
        np.frombuffer(sql, np.float32),
    )


def assert_serves(store, arrays, x):
    predicted, w, blob_w, sql = all_reads(store, x)
    np.testing.assert_allclose(predicted, expected(arrays, x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(w, arrays["w"])
    np.testing.assert_array_equal(blob_w, arrays["w"])
    np.testing.assert_allclose(sql, expected(arrays, x), rtol=1e-5, atol=1e-5)


@pytest.fixture
def two_stores(tmp_path):
    """(path of the served store, its arrays, path of a same-layout store of other weights,
    its arrays, x)."""
    old = make_store(tmp_path / "a.sqlite", 1)
    new = make_store(tmp_path / "b.sqlite", 2)
    x = np.random.default_rng(3).standard_normal(12).astype(np.float32)
    return tmp_path / "a.sqlite", old, tmp_path / "b.sqlite", new, x


def copy_pages_sql(other):
    """Plain SQL (no extension, nothing but the page rows) that replaces every page row's
    bytes with the other store's (the same ids, so their checksums hold)."""
    return (
        f"ATTACH '{other}' AS other;"
        "UPDATE main.tensors_pages SET data = (SELECT data FROM other.tensors_pages o"
        " WHERE o.id = main.tensors_pages.id);"
    )


def test_plain_sql_from_another_connection(two_stores):
    path, old, other, new, x = two_stores
    with open_store(path) as store:
        assert_serves(store, old, x)
        assert_serves(store, old, x)  # served from the pool and the plan cache
        hits = sqlite_tensor.cache.stats()["hits"]
        plain = apsw.Connection(str(path))  # no extension: nothing of ours runs there
        plain.execute(copy_pages_sql(other))
        plain.close()
        assert_serves(store, new, x)
        assert sqlite_tensor.cache.stats()["hits"] > hits


def test_unchanged_store_is_served_from_the_pool(two_stores):
    """No commit: pages come from memory, no page is read again."""
    path, old, _, _, x = two_stores
    with open_store(path) as store:
        store.predict("m", x)
        before = sqlite_tensor.cache.stats()
        for _ in range(5):
            store.predict("m", x)
        after = sqlite_tensor.cache.stats()
        assert after["misses"] == before["misses"]
        assert after["bytes_read"] == before["bytes_read"]


def test_blocks_table_changed_by_plain_sql(two_stores):
    """Swapping two same-sized blocks of a page in <store>_blocks changes the tensor: the
    plan (which holds each tile's page and slot) must be rebuilt, not only the pages."""
    path, old, _, _, x = two_stores
    with open_store(path) as store:
        assert_serves(store, old, x)
        plain = apsw.Connection(str(path))
        a, b = plain.execute(
            "SELECT id FROM tensors_blocks WHERE page_id = 1 ORDER BY slot"
        ).fetchall()
        plain.execute("UPDATE tensors_blocks SET slot = 1 - slot WHERE id IN (?, ?)", (a[0], b[0]))
        plain.close()
        swapped = {k: v.copy() for k, v in old.items()}
        t0, t1 = old["w"][0:4, 0:4].copy(), old["w"][0:4, 4:8].copy()  # page 1: tiles (0,0), (0,1)
        swapped["w"][0:4, 0:4], swapped["w"][0:4, 4:8] = t1, t0
        assert_serves(store, swapped, x)


def test_plain_sql_from_another_process(two_stores):
    path, old, other, new, x = two_stores
    with open_store(path) as store:
        assert_serves(store, old, x)
        code = textwrap.dedent(f"""
            import apsw
            conn = apsw.Connection({str(path)!r})
            conn.execute({copy_pages_sql(other)!r})
            conn.close()
        """)
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        assert_serves(store, new, x)


@pytest.mark.parametrize("into", ["another-connection", "the-same-connection"])
def test_restore_through_the_backup_api(two_stores, into):
    path, old, other, new, x = two_stores
    with open_store(path) as store:
        assert_serves(store, old, x)
        source = apsw.Connection(str(other))
        target = store.conn if into == "the-same-connection" else apsw.Connection(str(path))
        with target.backup("main", source, "main") as backup:
            backup.step()
        if target is not store.conn:
            target.close()
        source.close()
        # the restored file is the other store (its uid too): the same process now answers
        # with its weights
        assert_serves(store, new, x)


def test_own_uncommitted_write_is_seen(two_stores):
    """Inside the caller's transaction, a plain UPDATE of a page on this very connection
    (no commit yet, so no data version change) is seen too: the change count moved."""
    path, old, other, new, x = two_stores
    with open_store(path) as store:
        assert_serves(store, old, x)
        store.conn.execute(f"ATTACH '{other}' AS other")
        store.conn.execute("BEGIN")
        store.conn.execute(
            "UPDATE main.tensors_pages SET data = (SELECT data FROM"
            " other.tensors_pages o WHERE o.id = main.tensors_pages.id)"
        )
        assert_serves(store, new, x)
        store.conn.execute("ROLLBACK")
        assert_serves(store, old, x)


def test_two_connections_share_the_pool_and_stay_right(two_stores):
    """Two connections alternate on one store: each re-confirms pages (a header read),
    neither reloads an unchanged page, and both see a change."""
    path, old, other, new, x = two_stores
    with open_store(path) as s1, open_store(path) as s2:
        for s in (s1, s2, s1, s2):
            np.testing.assert_allclose(s.predict("m", x), expected(old, x), rtol=1e-5, atol=1e-5)
        before = sqlite_tensor.cache.stats()["bytes_read"]
        for s in (s1, s2, s1, s2):
            s.predict("m", x)
        assert sqlite_tensor.cache.stats()["bytes_read"] == before  # confirmed, not reloaded
        s2.conn.execute(copy_pages_sql(other))
        assert_serves(s1, new, x)
        assert_serves(s2, new, x)


def test_a_page_copied_into_another_row_is_corrupt(two_stores):
    """The checksum is seeded with the page id: a sound page in the wrong row is caught."""
    path, old, _, _, x = two_stores
    with open_store(path) as store:
        store.conn.execute(
            "UPDATE tensors_pages SET data = (SELECT data FROM tensors_pages"
            " WHERE id = 2) WHERE id = 1"
        )
        with pytest.raises(
            sqlite_tensor.CorruptStoreError, match="page 1 of tensors_pages is corrupt: checksum"
        ):
            store.get_tensor("m", "w")
        with pytest.raises(sqlite_tensor.CorruptStoreError, match="page 1 of tensors_pages"):
            store.predict("m", x)
        assert any("page 1: checksum" in p for p in store.verify())
        data = store.conn.execute("SELECT data FROM tensors_pages WHERE id = 1").get
        assert pages.read_slots(data)  # the bytes alone are a sound page: only the id tells


def test_bulk_reads_use_the_pool_but_do_not_fill_it(two_stores):
    """get_tensor / tensor_blob read a page the pool holds from the pool (one page-access
    layer), but a page it lacks is read, checked and dropped: an export does not evict
    what inference serves."""
    path, old, _, _, x = two_stores
    sqlite_tensor.cache.clear()
    with open_store(path) as store:
        store.get_tensor("m", "w")
        assert sqlite_tensor.cache.stats()["pages"] == 0
        store.predict("m", x)
        cached = sqlite_tensor.cache.stats()
        assert cached["pages"] > 0
        np.testing.assert_array_equal(store.get_tensor("m", "w"), old["w"])
        after = sqlite_tensor.cache.stats()
        assert after["hits"] > cached["hits"] and after["bytes_read"] == cached["bytes_read"]
