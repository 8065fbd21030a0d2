"""The engine owns the schema: an older store (as the first sessions wrote them: no uid, no
residual or files tables, no <store>_residuals_by_page index, version-1 pages without
checksums) is upgraded when opened writable, in one transaction, to exactly what a fresh
store is; read-only it stays as it was and reads right."""

from __future__ import annotations

import apsw
import numpy as np
import pytest
from conftest import SMALL, dump, same, tamperable

import sqlite_tensor
from sqlite_tensor import _engine, pages
from sqlite_tensor.schema import PARTS

LAYERS = [{"op": "dense", "weight": "w", "bias": "b", "activation": "relu"}]


def models(seed=5):
    rng = np.random.default_rng(seed)
    return {
        "base": {
            "w": rng.standard_normal((10, 20)).astype(np.float32),
            "b": rng.standard_normal(10).astype(np.float32),
            "e": rng.integers(-9, 9, (7, 3)).astype(np.int16),
        }
    }


def fresh_store(path):
    with sqlite_tensor.Store(str(path), **SMALL) as store:
        for name, arrays in models().items():
            store.add_model(name, arrays, layers=LAYERS)


def make_old_store(path):
    """A fresh store taken back by hand to how a session-1 store looked."""
    fresh_store(path)
    conn = apsw.Connection(str(path))  # plain SQL: no extension, defensive off
    with conn:
        conn.execute(
            "DROP TABLE tensors_residuals; DROP TABLE tensors_dedup; DROP TABLE tensors_files;"
            "DELETE FROM tensors_config WHERE key = 'uid';"
            "UPDATE tensors_config SET value = 1 WHERE key = 'format_version'"
        )
        for page_id, data in conn.execute("SELECT id, data FROM tensors_pages").fetchall():
            old = pages.build_v1_page([np.frombuffer(s, np.uint8) for s in pages.read_slots(data)])
            conn.execute(
                "UPDATE tensors_pages SET data = ?, nbytes = ? WHERE id = ?",
                (old, len(old), page_id),
            )
    conn.close()


def comparable(conn):
    """Schema (sql text of every object) and every shadow row, without what is random or
    a time: uid, models.created."""
    out = dump(conn)
    out["config"] = [r for r in out["config"] if r[0] != "uid"]
    out["models"] = [(r[0], r[1], r[2]) for r in out["models"]]
    return out


def test_upgrade_gives_a_fresh_store(tmp_path):
    make_old_store(tmp_path / "old.sqlite")
    fresh_store(tmp_path / "fresh.sqlite")
    with (
        sqlite_tensor.Store(str(tmp_path / "old.sqlite")) as old,
        sqlite_tensor.Store(str(tmp_path / "fresh.sqlite")) as fresh,
    ):
        assert comparable(old.conn) == comparable(fresh.conn)  # pages byte for byte too
        assert (
            old.conn.execute(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'tensors_residuals_by_page'"
            ).get
            == 1
        )
        config = dict(old.conn.execute("SELECT key, value FROM tensors_config"))
        assert "uid" in config and "generation" not in config and config["format_version"] == 2
        assert old.verify() == []
        for name, arrays in models().items():
            for tensor, array in arrays.items():
                assert same(old.get_tensor(name, tensor), array)
        x = np.ones(20, np.float32)
        np.testing.assert_array_equal(old.predict("base", x), fresh.predict("base", x))
        assert not _engine.store_needs_upgrade(old.conn.sqlite3pointer(), "tensors")


def test_store_with_a_generation_row_still_works(tmp_path):
    """Stores made before the generation was dropped carry ('generation', random) in
    <store>_config. Nothing reads it any more: such a store needs no upgrade, opens, reads,
    takes writes that rewrite and delete pages (the pool noticing each), verifies clean, and
    keeps the row as it was."""
    path = tmp_path / "gen.sqlite"
    fresh_store(path)
    conn = apsw.Connection(str(path))  # plain SQL, as an older engine wrote it
    with conn:
        conn.execute("INSERT INTO tensors_config VALUES ('generation', 4242424242)")
    conn.close()
    x = np.ones(20, np.float32)
    w, b = models()["base"]["w"], models()["base"]["b"]
    with sqlite_tensor.Store(str(path)) as store:
        assert not _engine.store_needs_upgrade(store.conn.sqlite3pointer(), "tensors")
        np.testing.assert_allclose(
            store.predict("base", x), np.maximum(w @ x + b, 0), rtol=1e-5, atol=1e-5
        )  # its pages now in the pool
        store.update_model("base", {"w": 2 * w, "b": b, "e": models()["base"]["e"]})
        store.add_model("other", {"w": -w, "b": b}, layers=LAYERS)
        store.vacuum()  # the old version's blocks freed, their pages compacted or deleted
        store.pack()  # every page rewritten
        np.testing.assert_allclose(
            store.predict("base", x), np.maximum(2 * w @ x + b, 0), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            store.predict("other", x), np.maximum(-w @ x + b, 0), rtol=1e-5, atol=1e-5
        )
        assert same(store.get_tensor("base", "w"), 2 * w)
        assert store.verify() == []
        generation = "SELECT value FROM tensors_config WHERE key = 'generation'"
        assert store.conn.execute(generation).get == 4242424242


def test_old_store_read_only_stays_as_it_was_and_reads_right(tmp_path):
    path = tmp_path / "old.sqlite"
    make_old_store(path)
    image = path.read_bytes()
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    sqlite_tensor.load(conn)
    try:
        store = sqlite_tensor.Store(conn, create=False)
        for name, arrays in models().items():
            for tensor, array in arrays.items():
                assert same(store.get_tensor(name, tensor), array)
        blob = conn.execute("SELECT tensor_blob('tensors', 'base', 'w')").get
        assert blob == models()["base"]["w"].tobytes()
        x = np.ones(20, np.float32)
        want = np.maximum(models()["base"]["w"] @ x + models()["base"]["b"], 0)
        np.testing.assert_allclose(store.predict("base", x), want, rtol=1e-5, atol=1e-5)
        problems = store.verify()
        assert any("a version-1 page (no checksum); open the store writable" in p for p in problems)
        assert any(p.startswith("schema: older") for p in problems)
        assert any(p.startswith("config: no uid") for p in problems)
    finally:
        conn.close()
    assert path.read_bytes() == image


def test_upgrade_is_all_or_nothing(tmp_path):
    """A failure half-way (here the connection's own TEMP trigger refusing the second page's
    rewrite) leaves the old store exactly as it was."""
    path = tmp_path / "old.sqlite"
    make_old_store(path)
    conn = apsw.Connection(str(path))
    before = dump(conn), conn.execute("SELECT count(*) FROM sqlite_schema").get
    conn.close()
    conn = tamperable(sqlite_tensor.connect(path))  # defensive mode refuses such triggers
    conn.execute(
        "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON main.tensors_pages WHEN new.id = 2"
        " BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
    )
    with pytest.raises(Exception, match="refused by a test trigger"):
        sqlite_tensor.Store(conn)
    conn.close()
    conn = apsw.Connection(str(path))
    assert (dump(conn), conn.execute("SELECT count(*) FROM sqlite_schema").get) == before
    conn.close()


def test_python_parts_are_the_engines(memdb):
    """schema.PARTS comes from the engine, and names exactly a fresh store's tables."""
    assert PARTS == _engine.shadow_parts()
    sqlite_tensor.Store(memdb)
    tables = {
        n
        for (n,) in memdb.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table'"
            " AND name LIKE 'tensors\\_%' ESCAPE '\\'"
        )
    }
    assert tables == {f"tensors_{p}" for p in PARTS}


def test_create_refuses_planted_shadow_tables(memdb):
    """CREATE VIRTUAL TABLE never adopts tables that are already there (the DDL says IF NOT
    EXISTS for the upgrade's sake)."""
    memdb.execute("CREATE TABLE tensors_pages(id INTEGER PRIMARY KEY, data BLOB)")
    with pytest.raises(ValueError, match='table "tensors_pages" already exists'):
        sqlite_tensor.Store(memdb)
