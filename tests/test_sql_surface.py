"""The SQL surface through apsw: the store table and its index use, tensor_blob, the report
table-valued functions, the registered names, and argument errors."""

from __future__ import annotations

import re
from pathlib import Path

import apsw
import numpy as np
import pytest
from conftest import random_array

import sqlite_tensor
from sqlite_tensor import _engine
from sqlite_tensor.schema import PARTS
from sqlite_tensor.testing.families import text_classifier_family

DOCS = Path(__file__).resolve().parent.parent / "docs" / "sql.md"

FUNCTIONS = {"tensor_blob", "tensor_version"}
MODULES = {"tensor_store", "tensor_stats", "tensor_models", "tensor_pages"}


@pytest.fixture
def sql(store, rng):
    """A store with a few models; returns (store, {model: {tensor: array}})."""
    models = text_classifier_family(3, vocab=12, dim=7, hidden=4)
    models["odd"] = {
        "scalar": np.array(5, np.int32),
        "cube": random_array(rng, (2, 3, 4), np.uint16),
    }
    for name, tensors in models.items():
        store.add_model(name, tensors)
    return store, models


def plan(conn, query, params=()):
    return " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + query, params))


def test_where_model_uses_the_index(sql):
    store, models = sql
    conn = store.conn
    assert "INDEX 1" in plan(conn, "SELECT tensor FROM tensors WHERE model = ?", ("base",))
    assert "INDEX 2" in plan(conn, "SELECT model FROM tensors WHERE tensor = ?", ("fc1.bias",))
    assert "INDEX 3" in plan(
        conn, "SELECT data FROM tensors WHERE model = ? AND tensor = ?", ("base", "fc1.bias")
    )
    assert "INDEX 0" in plan(conn, "SELECT * FROM tensors")
    assert "INDEX 0" in plan(conn, "SELECT * FROM tensors WHERE model > 'a'")  # not an equality


def test_rows_of_the_store_table(sql):
    store, models = sql
    conn = store.conn
    rows = conn.execute(
        "SELECT model, tensor, shape, dtype, nbytes FROM tensors WHERE model = ?", ("odd",)
    ).fetchall()
    assert rows == [("odd", "scalar", "[]", "int32", 4), ("odd", "cube", "[2, 3, 4]", "uint16", 48)]
    every = conn.execute("SELECT model, tensor FROM tensors").fetchall()
    assert every == [(m, t) for m, ts in models.items() for t in ts]
    by_tensor = conn.execute("SELECT model FROM tensors WHERE tensor = 'fc1.weight'").fetchall()
    assert [m for (m,) in by_tensor] == ["base", "frozen-1", "tuned-2"]
    assert conn.execute("SELECT count(*) FROM tensors WHERE model IN ('base', 'odd')").get == 7
    for missing in ("nope", None, 3):
        assert conn.execute("SELECT count(*) FROM tensors WHERE model = ?", (missing,)).get == 0
    # data is hidden: SELECT * has the five visible columns
    cursor = conn.execute("SELECT * FROM tensors LIMIT 1")
    assert [d[0] for d in cursor.get_description()] == [
        "model",
        "tensor",
        "shape",
        "dtype",
        "nbytes",
    ]
    # rowid is the tensor's id
    ids = dict(conn.execute("SELECT tensor, rowid FROM tensors WHERE model = 'odd'"))
    assert ids == dict(
        conn.execute(
            "SELECT name, id FROM tensors_tensors WHERE model_id = (SELECT id FROM tensors_models"
            " WHERE name = 'odd')"
        )
    )


def test_data_column_equals_tensor_blob_and_numpy(sql):
    store, models = sql
    conn = store.conn
    for model, tensors in models.items():
        for name, arr in tensors.items():
            data = conn.execute(
                "SELECT data FROM tensors WHERE model = ? AND tensor = ?", (model, name)
            ).get
            blob = conn.execute("SELECT tensor_blob('tensors', ?, ?)", (model, name)).get
            assert data == blob == arr.tobytes()
    # data through a full scan and through the tensor index too
    scanned = {(m, t): d for m, t, d in conn.execute("SELECT model, tensor, data FROM tensors")}
    assert scanned == {(m, t): a.tobytes() for m, ts in models.items() for t, a in ts.items()}
    for m, d in conn.execute("SELECT model, data FROM tensors WHERE tensor = 'fc1.weight'"):
        assert d == models[m]["fc1.weight"].tobytes()
    # ... and the bytes are usable in SQL expressions
    assert conn.execute("SELECT sum(length(data)) FROM tensors").get == sum(
        a.nbytes for ts in models.values() for a in ts.values()
    )


def test_the_store_table_is_read_only(sql):
    conn = sql[0].conn
    for statement in (
        "INSERT INTO tensors(model, tensor) VALUES ('x', 'y')",
        "UPDATE tensors SET model = 'x'",
        "DELETE FROM tensors",
    ):
        with pytest.raises(apsw.SQLError, match="tensors may not be modified"):
            conn.execute(statement)
    assert sql[0].verify() == []


def documented_names() -> tuple[set, set]:
    """(scalar functions, modules) from the table in docs/sql.md's "Functions and modules"."""
    section = DOCS.read_text().split("## Functions and modules", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)[^`]*` \| ([^|]+) \|", section, re.M)
    assert rows, "docs/sql.md has no table of functions and modules"
    functions = {name for name, kind in rows if kind.strip() == "scalar function"}
    return functions, {name for name, _ in rows} - functions


def test_registered_names_are_the_documented_ones(memdb):
    functions = {
        n
        for (n,) in memdb.execute("SELECT name FROM pragma_function_list WHERE name LIKE 'tensor%'")
    }
    modules = {
        n for (n,) in memdb.execute("SELECT name FROM pragma_module_list WHERE name LIKE 'tensor%'")
    }
    assert functions >= FUNCTIONS and modules >= MODULES
    if not DOCS.exists():
        pytest.skip("docs/sql.md is missing")
    assert (functions, modules) == documented_names()
    # arities
    arity = dict(
        memdb.execute("SELECT name, narg FROM pragma_function_list WHERE name LIKE 'tensor%'")
    )
    assert arity["tensor_blob"] == 3 and arity["tensor_version"] == 0


def test_tensor_version(memdb):
    assert (
        memdb.execute("SELECT tensor_version()").get
        == sqlite_tensor.__version__
        == _engine.version()
    )


@pytest.mark.parametrize("report", ["tensor_stats", "tensor_models", "tensor_pages"])
def test_reports_need_a_store_name(sql, report):
    conn = sql[0].conn
    message = f"{report}: needs a store name, as in SELECT * FROM {report}('tensors')"
    for query in (
        f"SELECT * FROM {report}",
        f"SELECT * FROM {report}(NULL)",
        f"SELECT * FROM {report}(42)",
        f"SELECT * FROM {report}(x'00')",
        f"SELECT * FROM {report} WHERE store > 'a'",
    ):
        with pytest.raises(apsw.SQLError) as info:
            conn.execute(query).fetchall()
        assert message in str(info.value), query
    with pytest.raises(apsw.SQLError, match=f"{report}: no tensor store named 'nope'"):
        conn.execute(f"SELECT * FROM {report}('nope')").fetchall()
    # the hidden-column form is the same as the argument form
    assert (
        conn.execute(f"SELECT * FROM {report} WHERE store = 'tensors'").fetchall()
        == conn.execute(f"SELECT * FROM {report}('tensors')").fetchall()
    )
    assert conn.execute(f"SELECT DISTINCT store FROM {report}('tensors')").fetchall() == [
        ("tensors",)
    ]
    # the store name may come from another table (a correlated argument), also alongside
    # a range constraint on it
    direct = conn.execute(f"SELECT * FROM {report}('tensors')").fetchall()
    assert (
        conn.execute(f"SELECT r.* FROM (SELECT 'tensors' AS n) x, {report}(x.n) r").fetchall()
        == direct
    )
    assert (
        conn.execute(
            f"SELECT r.* FROM {report} r JOIN (SELECT 'tensors' AS n) x"
            " ON r.store = x.n AND r.store > 'a'"
        ).fetchall()
        == direct
    )


def test_reports_agree_with_the_python_api(sql):
    store, models = sql
    conn = store.conn
    stats = conn.execute("SELECT * FROM tensor_stats(?)", ("tensors",)).fetchall()
    assert len(stats) == 1
    assert dict(zip(store.stats(), stats[0])) == store.stats()
    assert store.stats()["models"] == len(models)
    names = [m for (m,) in conn.execute("SELECT model FROM tensor_models('tensors')")]
    assert names == list(models)
    pages = conn.execute("SELECT page_id, bytes, blocks FROM tensor_pages('tensors')").fetchall()
    assert pages == [(p["page_id"], p["bytes"], p["blocks"]) for p in store.page_stats()]
    assert (
        pages
        == conn.execute("SELECT id, nbytes, nblocks FROM tensors_pages ORDER BY id").fetchall()
    )
    # reports join with the store table like any table
    joined = conn.execute(
        "SELECT t.model, count(*), m.tensors FROM tensors t JOIN tensor_models('tensors') m"
        " ON m.model = t.model GROUP BY t.model ORDER BY t.model"
    ).fetchall()
    assert all(n == k for _, n, k in joined) and len(joined) == len(models)


def test_reports_on_an_empty_store(memdb):
    memdb.execute("CREATE VIRTUAL TABLE empty USING tensor_store(block_rows=8)")
    row = memdb.execute("SELECT * FROM tensor_stats('empty')").fetchall()
    assert row == [(0, 0, 0, 0, 0, 0, 0, None, 8, 256, 4)]
    assert memdb.execute("SELECT * FROM tensor_models('empty')").fetchall() == []
    assert memdb.execute("SELECT * FROM tensor_pages('empty')").fetchall() == []
    assert memdb.execute("SELECT count(*) FROM empty").get == 0
    store = sqlite_tensor.Store(memdb, "empty")
    assert store.model_stats() == [] and store.page_stats() == [] and store.models() == []
    assert store.stats()["dedup_ratio"] is None and store.verify() == []


@pytest.mark.parametrize(
    "args, message",
    [
        ("NULL, 'base', 'fc1.bias'", "tensor_blob: argument 1 (store) must be text, got NULL"),
        ("'tensors', NULL, 'fc1.bias'", "tensor_blob: argument 2 (model) must be text, got NULL"),
        ("'tensors', 'base', NULL", "tensor_blob: argument 3 (tensor) must be text, got NULL"),
        (
            "'tensors', 7, 'fc1.bias'",
            "tensor_blob: argument 2 (model) must be text, got an integer",
        ),
        ("'tensors', 'base', 1.5", "tensor_blob: argument 3 (tensor) must be text, got a real"),
        ("x'00', 'base', 'fc1.bias'", "tensor_blob: argument 1 (store) must be text, got a blob"),
        ("'tensors', 'nope', 'fc1.bias'", "tensor_blob: no model 'nope' in store 'tensors'"),
        (
            "'tensors', 'base', 'nope'",
            "tensor_blob: no tensor 'nope' in model 'base' of store 'tensors'",
        ),
        ("'nope', 'base', 'fc1.bias'", "tensor_blob: no tensor store named 'nope'"),
        (
            "'tensors_models', 'base', 'fc1.bias'",
            "tensor_blob: no tensor store named 'tensors_models'",
        ),
        (
            "'tensors', 'base', 'fc1.bias' || char(0) || 'x'",  # not read as 'fc1.bias'
            "tensor_blob: argument 3 (tensor) contains a NUL character",
        ),
        (
            "'tensors' || char(0), 'base', 'fc1.bias'",
            "tensor_blob: argument 1 (store) contains a NUL character",
        ),
    ],
)
def test_tensor_blob_argument_errors(sql, args, message):
    conn = sql[0].conn
    with pytest.raises(apsw.SQLError) as info:
        conn.execute(f"SELECT tensor_blob({args})").fetchall()
    assert message in str(info.value)


def test_wrong_number_of_arguments(memdb):
    for call in ("tensor_blob('a', 'b')", "tensor_blob('a', 'b', 'c', 'd')", "tensor_version(1)"):
        with pytest.raises(apsw.SQLError, match="wrong number of arguments"):
            memdb.execute(f"SELECT {call}").fetchall()


def test_tensor_blob_from_a_whole_query(sql):
    store, models = sql
    rows = store.conn.execute(
        "SELECT model, tensor, tensor_blob('tensors', model, tensor) FROM tensors"
        " WHERE tensor LIKE 'fc%'"
    ).fetchall()
    assert len(rows) == 12
    for model, tensor, blob in rows:
        assert blob == models[model][tensor].tobytes()


def test_two_stores_in_one_database(memdb, rng):
    a = sqlite_tensor.Store(memdb, "a", block_rows=2, block_cols=2)
    b = sqlite_tensor.Store(memdb, "b", block_rows=5, block_cols=1)
    wa = random_array(rng, (4, 4), np.float32)
    wb = random_array(rng, (4, 4), np.float32)
    a.add_model("m", {"w": wa})
    b.add_model("m", {"w": wb})
    assert memdb.execute("SELECT tensor_blob('a', 'm', 'w')").get == wa.tobytes()
    assert memdb.execute("SELECT tensor_blob('b', 'm', 'w')").get == wb.tobytes()
    assert memdb.execute("SELECT data FROM b WHERE model = 'm'").get == wb.tobytes()
    assert memdb.execute("SELECT distinct_blocks FROM tensor_stats('a')").get == 4
    assert memdb.execute("SELECT distinct_blocks FROM tensor_stats('b')").get == 4
    a.drop_model("m")
    assert memdb.execute("SELECT models FROM tensor_stats('a')").get == 0
    assert b.get_tensor("m", "w").tobytes() == wb.tobytes() and b.verify() == []


def test_drop_table_removes_the_shadow_tables(store, rng):
    conn = store.conn
    store.add_model("m", {"w": random_array(rng, (6, 6), np.float32)})
    conn.execute("CREATE TABLE unrelated(x)")
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert names == {"tensors", "unrelated"} | {f"tensors_{p}" for p in PARTS}
    conn.execute("DROP TABLE tensors")
    assert [n for (n,) in conn.execute("SELECT name FROM sqlite_schema")] == ["unrelated"]
    with pytest.raises(apsw.SQLError, match="no tensor store named 'tensors'"):
        conn.execute("SELECT * FROM tensor_stats('tensors')").fetchall()
    # and the name can be used for a new store
    fresh = sqlite_tensor.Store(conn, block_rows=2)
    assert fresh.models() == [] and fresh.block_rows == 2


def test_shadow_tables_are_declared_shadow(memdb):
    memdb.execute("CREATE VIRTUAL TABLE s USING tensor_store")
    memdb.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    for part in ("config", "models", "tensors", "blocks", "pages", "map"):
        with pytest.raises(apsw.SQLError, match=f"s_{part} may not be modified"):
            memdb.execute(f"DELETE FROM s_{part}")
        with pytest.raises(apsw.SQLError, match=f"s_{part} may not be dropped"):
            memdb.execute(f"DROP TABLE s_{part}")
    memdb.execute("DROP TABLE s")  # the store itself may go, and its shadow tables with it
    assert memdb.execute("SELECT count(*) FROM sqlite_schema").get == 0
