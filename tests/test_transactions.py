"""Writes are all-or-nothing: a failure anywhere in add_model / drop_model leaves the database
byte for byte as it was, on its own or inside the caller's transaction; defensive mode is
lifted only for the API's own writes."""
from __future__ import annotations

import apsw
import numpy as np
import pytest

import sqlite_tensor
from sqlite_tensor import ingest, pages
from conftest import random_array, same, snapshot


class Boom(RuntimeError):
    pass


def fail_on_call(n, real):
    """A stand-in for `real` that raises Boom on its n-th call."""
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise Boom(f"injected failure on call {n}")
        return real(*args, **kwargs)
    wrapper.calls = calls
    return wrapper


@pytest.fixture
def loaded(store, rng):
    """A store holding two models that share blocks."""
    base = {"w": random_array(rng, (9, 11), np.float32), "b": random_array(rng, (11,), np.float32)}
    store.add_model("base", base)
    store.add_model("copy", {"w": base["w"], "b": random_array(rng, (11,), np.float32)})
    return store


def new_model(rng):
    return {"w": random_array(rng, (8, 13), np.float32), "x": random_array(rng, (4, 4), np.int8),
            "y": random_array(rng, (6, 10), np.float16)}


NEW_MODEL_PAGES = 8  # new_model's 9 + 2 + 4 distinct 3 x 5 tiles, 2 to a page


def _sql_fails(store, table: str, after_rows: int, op: str = "INSERT"):
    """A temp trigger (outside the main database) that aborts writes to a shadow table
    once it holds after_rows rows: a failure in the middle of the SQL itself."""
    store.conn.execute(
        f"CREATE TEMP TRIGGER inject_failure BEFORE {op} ON main.tensors_{table}"
        f" WHEN (SELECT count(*) FROM main.tensors_{table}) >= {after_rows}"
        " BEGIN SELECT RAISE(ABORT, 'injected failure'); END")


def _patch(monkeypatch, target, name, n):
    monkeypatch.setattr(target, name, fail_on_call(n, getattr(target, name)))


# Ways for add_model to fail midway: id -> (set-up returning the tensors, exception)
FAILURES = {
    "bad-dtype": (lambda mp, store, rng: {"ok": np.ones((4, 4), np.float32),
                                          "bad": np.ones(3, np.complex64)}, ValueError),
    "zero-size": (lambda mp, store, rng: {"ok": np.ones((4, 4), np.float32),
                                          "empty": np.ones((0, 3))}, ValueError),
    "second-page": (lambda mp, store, rng: (_patch(mp, pages.PageBuilder, "finish", 2),
                                            new_model(rng))[1], Boom),
    "last-page": (lambda mp, store, rng: (_patch(mp, pages.PageBuilder, "finish", NEW_MODEL_PAGES),
                                          new_model(rng))[1], Boom),
    "hash": (lambda mp, store, rng: (_patch(mp, store, "_hash_block", 9),
                                     new_model(rng))[1], Boom),
    "lookup": (lambda mp, store, rng: (_patch(mp, ingest._StoredBlocks, "find", 12),
                                       new_model(rng))[1], Boom),
    "map": (lambda mp, store, rng: (_sql_fails(store, "map", 40), new_model(rng))[1],
            apsw.ConstraintError),
    "refcounts": (lambda mp, store, rng: (_sql_fails(store, "blocks", 0, "UPDATE"),
                                          new_model(rng))[1], apsw.ConstraintError),
    "blocks": (lambda mp, store, rng: (_sql_fails(store, "blocks", 30), new_model(rng))[1],
               apsw.ConstraintError),
}


@pytest.mark.parametrize("which", list(FAILURES))
def test_failed_add_model_changes_nothing(loaded, rng, monkeypatch, which):
    store = loaded
    make, exc = FAILURES[which]
    before = snapshot(store.conn)
    with pytest.raises(exc):
        store.add_model("new", make(monkeypatch, store, rng))
    monkeypatch.undo()
    store.conn.execute("DROP TRIGGER IF EXISTS temp.inject_failure")
    assert snapshot(store.conn) == before
    assert not store.conn.in_transaction
    assert store.verify() == []
    # the store still works, and the same model goes in cleanly now
    store.add_model("new", new_model(np.random.default_rng(5)))
    assert store.verify() == []


def test_duplicate_model_name_changes_nothing(loaded, rng):
    before = snapshot(loaded.conn)
    with pytest.raises(ValueError, match="model 'base' already exists in store 'tensors'"):
        loaded.add_model("base", new_model(rng))
    assert snapshot(loaded.conn) == before


def test_injected_failures_really_happen_midway(loaded, rng, monkeypatch):
    """The page-writing failure strikes after some pages were written (not before any)."""
    written = []

    def trace(cursor, sql, bindings):
        if sql.startswith("INSERT INTO") and "_pages" in sql:
            written.append(sql)
        return True
    loaded.conn.exec_trace = trace
    monkeypatch.setattr(pages.PageBuilder, "finish", fail_on_call(3, pages.PageBuilder.finish))
    with pytest.raises(Boom):
        loaded.add_model("new", new_model(rng))
    assert len(written) == 2
    monkeypatch.undo()
    written.clear()
    loaded.add_model("new", new_model(rng))
    assert len(written) == NEW_MODEL_PAGES
    loaded.conn.exec_trace = None


def test_failed_drop_model_changes_nothing(loaded, monkeypatch):
    before = snapshot(loaded.conn)
    # dropping "base" rewrites its pages that "copy" still uses part of
    monkeypatch.setattr(pages.PageBuilder, "finish", fail_on_call(1, pages.PageBuilder.finish))
    with pytest.raises(Boom):
        loaded.drop_model("base")
    monkeypatch.undo()
    assert snapshot(loaded.conn) == before
    assert loaded.models() == ["base", "copy"]
    loaded.drop_model("base")
    assert loaded.verify() == []


def test_failure_inside_an_outer_transaction_rolls_back_only_itself(loaded, rng, monkeypatch):
    conn = loaded.conn
    conn.execute("BEGIN")
    first = new_model(rng)
    loaded.add_model("inside", first)
    conn.execute("CREATE TABLE user_notes(x)")
    conn.execute("INSERT INTO user_notes VALUES ('kept')")
    mid = snapshot(conn)
    monkeypatch.setattr(pages.PageBuilder, "finish", fail_on_call(3, pages.PageBuilder.finish))
    with pytest.raises(Boom):
        loaded.add_model("fails", new_model(rng))
    monkeypatch.undo()
    assert conn.in_transaction  # the caller's transaction is still open
    assert snapshot(conn) == mid
    with pytest.raises(ValueError, match="already exists"):
        loaded.add_model("inside", first)
    assert snapshot(conn) == mid
    conn.execute("COMMIT")
    assert loaded.models() == ["base", "copy", "inside"]
    assert conn.execute("SELECT x FROM user_notes").get == "kept"
    for name, arr in first.items():
        assert same(loaded.get_tensor("inside", name), arr)
    assert loaded.verify() == []


def test_outer_rollback_undoes_api_writes(loaded, rng):
    conn = loaded.conn
    before = snapshot(conn)
    conn.execute("BEGIN")
    loaded.add_model("temp", new_model(rng))
    loaded.drop_model("base")
    assert loaded.models() == ["copy", "temp"]
    conn.execute("ROLLBACK")
    assert snapshot(conn) == before
    assert loaded.verify() == []


def test_inside_apsw_savepoint_context(loaded, rng, monkeypatch):
    conn = loaded.conn
    before = snapshot(conn)
    with pytest.raises(Boom):
        with conn:  # apsw: a savepoint / transaction
            loaded.add_model("a", new_model(rng))
            monkeypatch.setattr(pages.PageBuilder, "finish", fail_on_call(1, pages.PageBuilder.finish))
            loaded.add_model("b", new_model(rng))
    monkeypatch.undo()
    assert snapshot(conn) == before  # the context rolled back "a" too
    with conn:
        loaded.add_model("a", new_model(rng))
    assert "a" in loaded
    with conn:
        conn.execute("SAVEPOINT user_sp")
        loaded.add_model("c", new_model(rng))
        conn.execute("ROLLBACK TO user_sp")
        conn.execute("RELEASE user_sp")
    assert "c" not in loaded and loaded.verify() == []


def test_a_second_writer_waits_instead_of_interleaving(db_path, rng):
    one = sqlite_tensor.Store(db_path)
    two = sqlite_tensor.Store(sqlite_tensor.connect(db_path, busy_timeout_ms=50))
    try:
        one.conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(apsw.BusyError):
            two.add_model("m", new_model(rng))
        one.conn.execute("COMMIT")
        two.add_model("m", new_model(rng))
        assert one.models() == ["m"]
    finally:
        one.close()
        two.conn.close()


# -- defensive mode ------------------------------------------------------------------------------

def defensive(conn) -> int:
    return conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, -1)


@pytest.mark.parametrize("sql", [
    "INSERT INTO tensors_pages(nblocks, nbytes, data) VALUES (1, 3, x'000000')",
    "UPDATE tensors_blocks SET refcount = 99",
    "DELETE FROM tensors_map",
    "INSERT INTO tensors_models(name) VALUES ('sneaky')",
    "UPDATE tensors_config SET value = 7 WHERE key = 'block_rows'",
])
def test_defensive_mode_protects_shadow_tables_but_not_the_api(loaded, rng, sql):
    conn = loaded.conn
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    before = snapshot(conn)
    with pytest.raises(apsw.SQLError, match="may not be modified"):
        conn.execute(sql)
    assert snapshot(conn) == before
    model = new_model(rng)
    loaded.add_model("new", model)
    assert defensive(conn) == 1
    with pytest.raises(apsw.SQLError, match="may not be modified"):
        conn.execute(sql)  # still protected after the API's write
    loaded.drop_model("base")
    assert defensive(conn) == 1
    with pytest.raises(ValueError):
        loaded.add_model("new", model)  # a failed write restores it too
    assert defensive(conn) == 1
    with pytest.raises(apsw.SQLError, match="may not be modified"):
        conn.execute(sql)
    # reads are unaffected
    assert same(loaded.get_tensor("new", "w"), model["w"])
    assert loaded.verify() == [] and loaded.stats()["models"] == 2


def test_defensive_mode_inside_an_outer_transaction(loaded, rng):
    conn = loaded.conn
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    conn.execute("BEGIN")
    loaded.add_model("new", new_model(rng))
    assert defensive(conn) == 1
    with pytest.raises(apsw.SQLError, match="may not be modified"):
        conn.execute("DELETE FROM tensors_pages")
    conn.execute("COMMIT")
    assert loaded.models() == ["base", "copy", "new"] and loaded.verify() == []


def test_defensive_off_stays_off(loaded, rng):
    conn = loaded.conn
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    loaded.add_model("new", new_model(rng))
    assert defensive(conn) == 0
    conn.execute("UPDATE tensors_models SET layers = 'x' WHERE name = 'new'")  # allowed
