"""Inference from SQL: tensor_predict, tensor_predict_batch, tensor_argmax / max / topk /
json and tensor_threads, through apsw and through the stock sqlite3 shell, checked against
Store.predict and the numpy reference (tests/reference_model.py)."""

from __future__ import annotations

import json
import subprocess
from contextlib import closing

import apsw
import ml_dtypes
import numpy as np
import pytest
from conftest import SMALL
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_model import assert_matches, reference_predict

import sqlite_tensor
from sqlite_tensor import _engine

LOADABLE = sqlite_tensor.loadable_path()


def f32(blob) -> np.ndarray:
    assert isinstance(blob, bytes), blob
    return np.frombuffer(blob, np.float32).copy()


def i64(ids) -> bytes:
    return np.asarray(ids, "<i8").tobytes()


def as_json(row) -> str:
    """A JSON array that reads back as exactly these float32 values."""
    return json.dumps([float(v) for v in np.asarray(row, np.float32)])


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- fixtures: models of every input kind, and a table of inputs ---------------------------

N_IN, VOCAB, ROWS = 13, 17, 50


def make_models(rng):
    """name -> (tensors, layers)."""
    emb = rng.standard_normal((VOCAB, 6)).astype(np.float32)
    head = (rng.standard_normal((5, 6)) / 2).astype(np.float16)
    return {
        "mlp": (
            {
                "w1": (rng.standard_normal((9, N_IN)) / 3).astype(np.float32),
                "b1": rng.standard_normal(9).astype(np.float32),
                "w2": (rng.standard_normal((9, 4)) / 3).astype(np.float16),
            },
            [
                {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"},
                {"op": "dense", "weight": "w2", "transpose": True, "activation": "softmax"},
            ],
        ),
        "emb": (
            {"e": emb, "h": head},
            [
                {"op": "embedding", "weight": "e"},
                {"op": "dense", "weight": "h", "activation": "tanh"},
            ],
        ),
        "bag": (
            {"e": emb, "h": head},
            [
                {"op": "embedding_bag", "weight": "e"},
                {"op": "dense", "weight": "h", "activation": "sigmoid"},
            ],
        ),
        "sum": ({"e": emb}, [{"op": "embedding_bag", "weight": "e", "mode": "sum"}]),
        "pre": (
            {"w": (rng.standard_normal((N_IN, N_IN)) / 3).astype(ml_dtypes.bfloat16)},
            [{"op": "dense", "weight": "w", "activation": "tanh"}],
        ),
    }


@pytest.fixture
def models(store, rng):
    """A file store with the models of make_models, a model without layers, and a table
    inputs(id, x BLOB, xj TEXT, id1 INTEGER, bag TEXT, bagb BLOB) of ROWS rows."""
    spec = make_models(rng)
    for name, (tensors, layers) in spec.items():
        store.add_model(name, tensors, layers=layers)
    store.add_model("plain", {"w": np.ones((2, 2), np.float32)})
    x = rng.standard_normal((ROWS, N_IN)).astype(np.float32)
    bags = [rng.integers(0, VOCAB, size=int(rng.integers(1, 7))) for _ in range(ROWS)]
    ids = rng.integers(0, VOCAB, size=ROWS)
    store.conn.execute(
        "CREATE TABLE inputs(id INTEGER PRIMARY KEY, x BLOB, xj TEXT,"
        " id1 INTEGER, bag TEXT, bagb BLOB)"
    )
    with store.conn:
        store.conn.executemany(
            "INSERT INTO inputs VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    i + 1,
                    x[i].tobytes(),
                    as_json(x[i]),
                    int(ids[i]),
                    json.dumps(bags[i].tolist()),
                    i64(bags[i]),
                )
                for i in range(ROWS)
            ],
        )
    return store, spec, x, ids, bags


# -- tensor_predict -----------------------------------------------------------------------


def test_features_as_float32_blob_and_as_json_text(models):
    store, spec, x, _, _ = models
    tensors, layers = spec["mlp"]
    for row in x[:10]:
        want = store.predict("mlp", row)
        blob = f32(
            store.conn.execute("SELECT tensor_predict('tensors', 'mlp', ?)", (row.tobytes(),)).get
        )
        text = f32(
            store.conn.execute("SELECT tensor_predict('tensors', 'mlp', ?)", (as_json(row),)).get
        )
        assert blob.shape == text.shape == (4,)
        close(blob, want)
        close(text, want)
        assert_matches(blob, layers, tensors, row)
    # JSON with blanks, newlines, exponents and integers
    row = np.array([0, 1, -2, 0.5, 1e-3, 2.5e2, -0.25, 3, 0, 0, 1, 1, -1], np.float32)
    text = " [ 0, 1 ,-2, 5e-1,\n1E-3, 2.5e+2,\t-0.25, 3.0, -0, 0.0, 1, 1, -1 ] "
    close(
        f32(store.conn.execute("SELECT tensor_predict('tensors', 'mlp', ?)", (text,)).get),
        store.predict("mlp", row),
    )


def test_tensor_predict_over_a_table_equals_store_predict_row_by_row(models):
    store, spec, x, _, _ = models
    rows = store.conn.execute(
        "SELECT id, tensor_predict('tensors', 'mlp', x),"
        " tensor_predict('tensors', 'mlp', xj) FROM inputs ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(1, ROWS + 1))
    batched = store.predict("mlp", x)
    for (i, blob, text), row in zip(rows, x):
        close(f32(blob), store.predict("mlp", row))
        close(f32(text), store.predict("mlp", row))
        close(f32(blob), batched[i - 1])
    assert_matches(np.stack([f32(r[1]) for r in rows]), spec["mlp"][1], spec["mlp"][0], x)


def test_embedding_ids_as_integer_json_array_and_int64_blob(models):
    store, spec, _, _, _ = models
    conn = store.conn
    q = "SELECT tensor_predict('tensors', 'emb', ?)"
    for i in (0, 5, VOCAB - 1):
        close(f32(conn.execute(q, (i,)).get), store.predict("emb", i))
    ids = [3, 0, 16, 3]
    want = store.predict("emb", ids)  # one output row per id
    assert_matches(want, spec["emb"][1], spec["emb"][0], ids)
    close(f32(conn.execute(q, (json.dumps(ids),)).get), want.reshape(-1))
    close(f32(conn.execute(q, (i64(ids),)).get), want.reshape(-1))
    close(f32(conn.execute(q, ("[7]",)).get), store.predict("emb", 7))


def test_bags_as_json_array_int64_blob_and_integer(models):
    store, spec, _, _, bags = models
    conn = store.conn
    for model in ("bag", "sum"):
        q = f"SELECT tensor_predict('tensors', '{model}', ?)"
        for bag in bags[:8]:
            want = store.predict(model, bag)
            assert_matches(want, spec[model][1], spec[model][0], bag)
            close(f32(conn.execute(q, (json.dumps(bag.tolist()),)).get), want)
            close(f32(conn.execute(q, (i64(bag),)).get), want)
        close(f32(conn.execute(q, (4,)).get), store.predict(model, np.array([4])))
    rows = conn.execute(
        "SELECT tensor_predict('tensors', 'bag', bag),"
        " tensor_predict('tensors', 'bag', bagb) FROM inputs ORDER BY id"
    ).fetchall()
    want = store.predict("bag", bags)
    for (a, b), w in zip(rows, want):
        close(f32(a), w)
        close(f32(b), w)


def test_plan_follows_a_model_name_that_changes_from_row_to_row(models):
    store, _, x, _, _ = models
    store.add_model(
        "mlp2",
        {"w1": np.ones((9, N_IN), np.float32), "w2": np.eye(9, 4, dtype=np.float32)},
        layers=[
            {"op": "dense", "weight": "w1"},
            {"op": "dense", "weight": "w2", "transpose": True},
        ],
    )
    rows = store.conn.execute(
        "SELECT m, tensor_predict('tensors', m, ?) FROM (SELECT 'mlp' AS m UNION ALL"
        " SELECT 'mlp2' UNION ALL SELECT 'mlp')",
        (x[0].tobytes(),),
    ).fetchall()
    for m, out in rows:
        close(f32(out), store.predict(m, x[0]))


def test_plan_follows_a_store_name_that_changes_from_row_to_row(db, rng):
    """The plan is kept for the statement: it must be the plan of *this row's* store and
    model, even when only the store argument varies (model a constant)."""
    a = sqlite_tensor.Store(db, "alpha", **SMALL)
    b = sqlite_tensor.Store(db, "beta", **SMALL)
    layers = [{"op": "embedding", "weight": "e"}]
    ea = np.arange(60, dtype=np.float32).reshape(10, 6)
    a.add_model("m", {"e": ea}, layers=layers)
    b.add_model("m", {"e": -ea}, layers=layers)
    rows = db.execute(
        "SELECT s, tensor_predict(s, 'm', 2) FROM (SELECT 'alpha' AS s"
        " UNION ALL SELECT 'beta' UNION ALL SELECT 'alpha')"
    ).fetchall()
    assert [(s, f32(out).tolist()) for s, out in rows] == [
        ("alpha", ea[2].tolist()),
        ("beta", (-ea[2]).tolist()),
        ("alpha", ea[2].tolist()),
    ]


def test_models_compose_in_sql(models):
    """One model's output feeds another: nested tensor_predict calls (each with its own
    plan) and tensor_predict_batch over a query that is itself tensor_predict_batch."""
    store, _, x, _, _ = models
    want = store.predict("mlp", store.predict("pre", x))
    nested = store.conn.execute(
        "SELECT tensor_predict('tensors', 'mlp', tensor_predict('tensors', 'pre', x))"
        " FROM inputs ORDER BY id"
    ).fetchall()
    close(np.stack([f32(b) for (b,) in nested]), want)
    chained = store.conn.execute(
        "SELECT id, output FROM tensor_predict_batch('tensors', 'mlp', 'SELECT id, output FROM"
        " tensor_predict_batch(''tensors'', ''pre'', ''SELECT id, x FROM inputs ORDER BY id'', 5)',"
        " 3)"
    ).fetchall()
    assert [i for i, _ in chained] == list(range(1, ROWS + 1))
    close(np.stack([f32(b) for _, b in chained]), want)


@pytest.mark.parametrize("store_name", ["my store", 'we"ird', "Select", "t\u00e9nsors"])
def test_names_that_need_quoting(memdb, store_name):
    store = sqlite_tensor.Store(memdb, store_name, **SMALL)
    model = 'it\'s "m" \u00e9'
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    store.add_model(model, {"w w": w}, layers=[{"op": "dense", "weight": "w w"}])
    x = np.array([1, 2, -1], np.float32)
    want = w @ x
    np.testing.assert_array_equal(store.predict(model, x), want)
    np.testing.assert_array_equal(
        f32(memdb.execute("SELECT tensor_predict(?, ?, '[1, 2, -1]')", (store_name, model)).get),
        want,
    )
    np.testing.assert_array_equal(
        f32(
            memdb.execute(
                "SELECT output FROM tensor_predict_batch(?, ?, 'SELECT 1, ''[1, 2, -1]'' ')",
                (store_name, model),
            ).get
        ),
        want,
    )


# -- tensor_predict_batch -------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, None, 1000], ids=["1", "7", "default", "1000"])
@pytest.mark.parametrize("column", ["x", "xj"])
def test_predict_batch_returns_every_row_once_in_order(models, batch_size, column):
    store, spec, x, _, _ = models
    arg = "" if batch_size is None else f", {batch_size}"
    rows = store.conn.execute(
        f"SELECT id, output FROM tensor_predict_batch('tensors', 'mlp',"
        f" 'SELECT id, {column} FROM inputs ORDER BY id'{arg})"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(1, ROWS + 1))
    got = np.stack([f32(r[1]) for r in rows])
    close(got, store.predict("mlp", x))
    assert_matches(got, spec["mlp"][1], spec["mlp"][0], x)


@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_predict_batch_of_bags_and_ids(models, batch_size):
    store, _, _, ids, bags = models
    for model, column, want in (
        ("bag", "bag", store.predict("bag", bags)),
        ("sum", "bagb", store.predict("sum", bags)),
        ("emb", "id1", store.predict("emb", ids)),
    ):
        rows = store.conn.execute(
            "SELECT id, output FROM tensor_predict_batch('tensors', ?,"
            f" 'SELECT id, {column} FROM inputs ORDER BY id DESC', ?)",
            (model, batch_size),
        ).fetchall()
        assert [r[0] for r in rows] == list(range(ROWS, 0, -1))
        close(np.stack([f32(r[1]) for r in rows]), want[::-1])


def test_predict_batch_passes_ids_of_any_type_and_composes_with_sql(models):
    store, _, x, _, _ = models
    conn = store.conn
    conn.execute("CREATE TABLE odd(k, x)")
    conn.executemany(
        "INSERT INTO odd VALUES (?, ?)",
        [
            ("text", x[0].tobytes()),
            (None, x[1].tobytes()),
            (2.5, x[2].tobytes()),
            (b"\x01", x[3].tobytes()),
        ],
    )
    rows = conn.execute(
        "SELECT id, output FROM tensor_predict_batch('tensors', 'mlp',"
        " 'SELECT k, x FROM odd ORDER BY rowid', 3)"
    ).fetchall()
    assert [r[0] for r in rows] == ["text", None, 2.5, b"\x01"]
    close(np.stack([f32(r[1]) for r in rows]), store.predict("mlp", x[:4]))
    # filters, aggregates and joins around it
    n = conn.execute(
        "SELECT count(*) FROM tensor_predict_batch('tensors', 'mlp',"
        " 'SELECT id, x FROM inputs', 7) WHERE id % 2 = 0"
    ).get
    assert n == ROWS // 2
    labels = conn.execute(
        "SELECT i.id, tensor_argmax(b.output) FROM inputs i JOIN"
        " tensor_predict_batch('tensors', 'mlp', 'SELECT id, x FROM inputs') b"
        " ON b.id = i.id ORDER BY i.id"
    ).fetchall()
    assert [l for _, l in labels] == np.argmax(store.predict("mlp", x), axis=1).tolist()
    # the model from another table (the function re-runs for each model)
    per_model = conn.execute(
        "SELECT m.name, count(*) FROM (SELECT 'bag' AS name UNION ALL SELECT 'sum') m,"
        " tensor_predict_batch('tensors', m.name, 'SELECT id, bag FROM inputs', 9) b"
        " GROUP BY m.name ORDER BY m.name"
    ).fetchall()
    assert per_model == [("bag", ROWS), ("sum", ROWS)]
    # an empty query gives no rows
    assert (
        conn.execute(
            "SELECT * FROM tensor_predict_batch('tensors', 'mlp',"
            " 'SELECT id, x FROM inputs WHERE 0')"
        ).fetchall()
        == []
    )


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(0, 40),
    batch_size=st.one_of(st.none(), st.integers(1, 50)),
    limit=st.one_of(st.none(), st.integers(0, 45)),
    seed=st.integers(0, 2**32 - 1),
)
def test_predict_batch_any_table_size_batch_size_and_limit(rows, batch_size, limit, seed):
    rng = np.random.default_rng(seed)
    with closing(sqlite_tensor.connect(":memory:")) as conn:
        store = sqlite_tensor.Store(conn, block_rows=4, block_cols=7, page_blocks=3)
        w = (rng.standard_normal((6, 10)) / 3).astype(np.float32)
        store.add_model(
            "m", {"w": w}, layers=[{"op": "dense", "weight": "w", "activation": "sigmoid"}]
        )
        x = rng.standard_normal((rows, 10)).astype(np.float32)
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, x BLOB)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?)", [(10 * i, x[i].tobytes()) for i in range(rows)]
        )
        arg = "" if batch_size is None else f", {batch_size}"
        tail = "" if limit is None else f" LIMIT {limit}"
        got = conn.execute(
            "SELECT id, output FROM tensor_predict_batch('tensors', 'm',"
            f" 'SELECT id, x FROM t ORDER BY id'{arg}){tail}"
        ).fetchall()
        n = rows if limit is None else min(rows, limit)
        assert [i for i, _ in got] == [10 * i for i in range(n)]
        if n:
            close(np.stack([f32(b) for _, b in got]), store.predict("m", x[:n]))


def test_predict_batch_error_in_a_later_batch(models):
    store, _, x, _, _ = models
    conn = store.conn
    conn.execute("UPDATE inputs SET xj = '[1, 2]' WHERE id = 6")
    cursor = conn.execute(
        "SELECT id FROM tensor_predict_batch('tensors', 'mlp',"
        " 'SELECT id, xj FROM inputs ORDER BY id', 2)"
    )
    seen = []
    with pytest.raises(
        apsw.SQLError,
        match=r"tensor_predict_batch: row 6 of the query: the "
        r"model takes 13 features, got a JSON array of 2",
    ):
        for (i,) in cursor:
            seen.append(i)
    assert seen == [1, 2, 3, 4]


# -- reading outputs -------------------------------------------------------------------------


def test_argmax_max_topk_json_agree_with_numpy(models):
    store, _, x, _, _ = models
    conn = store.conn
    for row in x[:12]:
        out = store.predict("mlp", row)
        blob = out.tobytes()
        assert conn.execute("SELECT tensor_argmax(?)", (blob,)).get == int(np.argmax(out))
        assert conn.execute("SELECT tensor_max(?)", (blob,)).get == float(out.max())
        # 9 significant digits: every float32 reads back exactly
        text = conn.execute("SELECT tensor_json(?)", (blob,)).get
        np.testing.assert_array_equal(np.array(json.loads(text), np.float32), out)
        order = sorted(range(out.size), key=lambda i: (-out[i], i))
        for k in (1, 2, out.size, out.size + 3):
            top = json.loads(conn.execute("SELECT tensor_topk(?, ?)", (blob, k)).get)
            assert [i for i, _ in top] == order[:k]
            np.testing.assert_array_equal(np.array([v for _, v in top], np.float32), out[order[:k]])


def test_reading_outputs_ties_and_special_values(memdb):
    blob = np.array([1, 2, 2, 0.5], np.float32).tobytes()
    assert memdb.execute("SELECT tensor_argmax(?)", (blob,)).get == 1  # first on ties
    assert json.loads(memdb.execute("SELECT tensor_topk(?, 3)", (blob,)).get) == [
        [1, 2.0],
        [2, 2.0],
        [0, 1.0],
    ]
    blob = np.array([-1e-45, -3.4028235e38, 1e-45], np.float32).tobytes()  # subnormal, max
    np.testing.assert_array_equal(
        np.array(json.loads(memdb.execute("SELECT tensor_json(?)", (blob,)).get), np.float32),
        np.frombuffer(blob, np.float32),
    )
    assert memdb.execute("SELECT tensor_argmax(?)", (blob,)).get == 2
    # a BLOB at an odd address inside a larger value is read correctly too
    row = np.array([0.25, -7, 3.5], np.float32)
    assert memdb.execute("SELECT tensor_argmax(substr(?, 2))", (b"\0" + row.tobytes(),)).get == 2
    assert memdb.execute("SELECT tensor_max(substr(?, 2))", (b"\0" + row.tobytes(),)).get == 3.5


# -- threads ---------------------------------------------------------------------------------


@pytest.fixture
def restore_threads():
    before = _engine.get_threads()
    yield
    _engine.set_threads(before)


def test_tensor_threads(restore_threads, models):
    store, _, x, _, _ = models
    conn = store.conn
    assert conn.execute("SELECT tensor_threads()").get == _engine.get_threads()
    outs = []
    for n in (1, 2, 1):
        assert conn.execute("SELECT tensor_threads(?)", (n,)).get == n
        assert conn.execute("SELECT tensor_threads()").get == n == _engine.get_threads()
        rows = conn.execute(
            "SELECT output FROM tensor_predict_batch('tensors', 'mlp', 'SELECT id, x FROM inputs')"
        ).fetchall()
        outs.append(np.stack([f32(r[0]) for r in rows]))
    close(outs[0], outs[1])
    close(outs[0], outs[2])


# -- bad input: SQL errors that say what was expected ----------------------------------------

P = "SELECT tensor_predict('tensors', "
B = "SELECT * FROM tensor_predict_batch("
BAD_SQL = [
    # features
    (P + "'mlp', '[1,2')", "tensor_predict: expected ',' or ']' in the JSON array"),
    (
        P + "'mlp', 'abc')",
        "tensor_predict: expected a JSON array of numbers, got text starting 'abc'",
    ),
    (P + "'mlp', '[1,,2]')", "tensor_predict: expected a number in the JSON array at ',2]'"),
    (P + "'mlp', '[1] x')", "tensor_predict: unexpected text after the JSON array: 'x'"),
    (P + "'mlp', '')", "tensor_predict: expected a JSON array of numbers"),
    (P + "'mlp', '[1, 2]')", "tensor_predict: the model takes 13 features, got a JSON array of 2"),
    (P + "'mlp', '[]')", "tensor_predict: the model takes 13 features, got a JSON array of 0"),
    (P + "'mlp', '[[1],[2]]')", "tensor_predict: expected a number in the JSON array"),
    (
        P + "'mlp', x'0000')",
        "tensor_predict: the model takes 13 float32 features (a 52-byte BLOB), got a 2-byte BLOB",
    ),
    (P + "'mlp', zeroblob(56))", "a 52-byte BLOB), got a 56-byte BLOB"),
    (P + "'mlp', x'')", "a 52-byte BLOB), got a 0-byte BLOB"),
    (
        P + "'mlp', NULL)",
        "tensor_predict: features must be a float32 BLOB or a JSON array of 13 numbers, got NULL",
    ),
    (
        P + "'mlp', 1.5)",
        "features must be a float32 BLOB or a JSON array of 13 numbers, got a real",
    ),
    (
        P + "'mlp', 3)",
        "features must be a float32 BLOB or a JSON array of 13 numbers, got an integer",
    ),
    # ids
    (
        P + "'emb', 17)",
        "tensor_predict: id 17 (input 0) is out of range: the embedding has 17 rows (ids 0 to 16)",
    ),
    (P + "'emb', -1)", "tensor_predict: id -1 (input 0) is out of range"),
    (P + "'emb', '[1, 99]')", "tensor_predict: id 99 (input 1) is out of range"),
    (P + "'emb', '[1.5]')", "tensor_predict: ids must be integers, got 1.5"),
    (
        P + "'emb', 1.5)",
        "tensor_predict: ids must be an integer, a JSON array or an int64 BLOB, got a real",
    ),
    (P + "'emb', NULL)", "ids must be an integer, a JSON array or an int64 BLOB, got NULL"),
    (
        P + "'emb', x'0100')",
        "tensor_predict: an ids BLOB holds little-endian int64 values; 2 bytes"
        " is not a multiple of 8",
    ),
    (P + "'emb', '[]')", "tensor_predict: each input of this embedding model is one id, got 0"),
    (P + "'emb', 'abc')", "tensor_predict: expected a JSON array of numbers"),
    # bags
    (P + "'bag', '[]')", "tensor_predict: a bag of ids must not be empty"),
    (P + "'bag', x'')", "tensor_predict: a bag of ids must not be empty"),
    (P + "'bag', '[1, 17]')", "tensor_predict: id 17 (input 0) is out of range"),
    (P + "'sum', x'ffffffffffffffff')", "tensor_predict: id -1 (input 0) is out of range"),
    # store and model
    (P + "'nobody', '[1]')", "tensor_predict: no model 'nobody' in store 'tensors'"),
    (
        "SELECT tensor_predict('nostore', 'mlp', '[1]')",
        "tensor_predict: no tensor store named 'nostore'",
    ),
    (
        P + "'plain', '[1, 2]')",
        "tensor_predict: model 'plain' has no layers; give it some with "
        "Store.set_layers('plain', [...])",
    ),
    (
        "SELECT tensor_predict(NULL, 'mlp', '[1]')",
        "tensor_predict: argument 1 (store) must be text, got NULL",
    ),
    (P + "NULL, '[1]')", "tensor_predict: argument 2 (model) must be text, got NULL"),
    (
        "SELECT tensor_predict(1, 'mlp', '[1]')",
        "tensor_predict: argument 1 (store) must be text, got an integer",
    ),
    (P + "x'6d6c70', '[1]')", "tensor_predict: argument 2 (model) must be text, got a blob"),
    (
        P + "'mlp' || char(0) || 'x', '[1]')",
        "tensor_predict: argument 2 (model) contains a NUL character",
    ),
    # tensor_predict_batch
    (
        "SELECT * FROM tensor_predict_batch",
        "tensor_predict_batch: needs a store, a model and a query",
    ),
    (B + "'tensors', 'mlp')", "tensor_predict_batch: needs a store, a model and a query"),
    (
        B + "'tensors', 'mlp', 'SELECT x FROM inputs')",
        "tensor_predict_batch: the query must return two columns (id, input), it returns 1",
    ),
    (
        B + "'tensors', 'mlp', 'SELECT * FROM nope')",
        "tensor_predict_batch: the query failed: no such table: nope",
    ),
    (B + "'tensors', 'mlp', 'SELEC id, x FROM inputs')", "tensor_predict_batch: the query failed:"),
    (
        B + "'tensors', 'mlp', 'SELECT id, json(''['') FROM inputs')",
        "tensor_predict_batch: the query failed: malformed JSON",
    ),
    (
        B + "'tensors', 'mlp', 'SELECT id, x FROM inputs', 0)",
        "tensor_predict_batch: batch_size must be an integer from 1 to 65536",
    ),
    (B + "'tensors', 'mlp', 'SELECT id, x FROM inputs', 'x')", "batch_size must be an integer"),
    (B + "'tensors', 'mlp', 'SELECT id, x FROM inputs', -3)", "batch_size must be an integer"),
    (B + "'tensors', 'mlp', 'SELECT id, x FROM inputs', 65537)", "batch_size must be an integer"),
    (B + "'tensors', 'mlp', 'SELECT id, x FROM inputs', NULL)", "batch_size must be an integer"),
    (B + "'tensors', 'mlp', 'SELECT id, x FROM inputs', 2.5)", "batch_size must be an integer"),
    (
        B + "NULL, 'mlp', 'SELECT id, x FROM inputs')",
        "tensor_predict_batch: argument 1 must be text, got NULL",
    ),
    (
        B + "'tensors', NULL, 'SELECT id, x FROM inputs')",
        "tensor_predict_batch: argument 2 must be text, got NULL",
    ),
    (B + "'tensors', 'mlp', NULL)", "tensor_predict_batch: argument 3 must be text, got NULL"),
    (
        B + "'tensors', 7, 'SELECT id, x FROM inputs')",
        "tensor_predict_batch: argument 2 must be text, got an integer",
    ),
    (
        B + "'tensors', 'nobody', 'SELECT id, x FROM inputs')",
        "tensor_predict_batch: no model 'nobody' in store 'tensors'",
    ),
    (
        B + "'nostore', 'mlp', 'SELECT id, x FROM inputs')",
        "tensor_predict_batch: no tensor store named 'nostore'",
    ),
    (
        B + "'tensors', 'plain', 'SELECT id, x FROM inputs')",
        "tensor_predict_batch: model 'plain' has no layers",
    ),
    (
        B + "'tensors', 'mlp', 'SELECT id, bag FROM inputs')",
        "tensor_predict_batch: row 1 of the query: the model takes 13 features, got a JSON array of",
    ),
    (
        B + "'tensors', 'mlp', 'SELECT id, NULL FROM inputs')",
        "tensor_predict_batch: row 1 of the query: features must be a float32 BLOB or a JSON array of"
        " 13 numbers, got NULL",
    ),
    (
        B + "'tensors', 'emb', 'SELECT id, bag FROM inputs')",
        "tensor_predict_batch: row 1 of the query: each input of this embedding model is one id",
    ),
    (
        B + "'tensors', 'bag', 'SELECT id, ''[]'' FROM inputs')",
        "tensor_predict_batch: row 1 of the query: a bag of ids must not be empty",
    ),
    # reading outputs
    ("SELECT tensor_topk(x'0000803f', 0)", "tensor_topk: k must be a positive integer"),
    ("SELECT tensor_topk(x'0000803f', -1)", "tensor_topk: k must be a positive integer"),
    ("SELECT tensor_topk(x'0000803f', '1')", "tensor_topk: k must be a positive integer"),
    ("SELECT tensor_topk(x'0000803f', NULL)", "tensor_topk: k must be a positive integer"),
    (
        "SELECT tensor_topk('abc', 1)",
        "tensor_topk: expects a non-empty float32 BLOB (as "
        "tensor_predict returns), got text of 3 bytes",
    ),
    ("SELECT tensor_argmax(NULL)", "tensor_argmax: expects a non-empty float32 BLOB"),
    ("SELECT tensor_argmax(12)", "tensor_argmax: expects a non-empty float32 BLOB"),
    ("SELECT tensor_max(x'')", "tensor_max: expects a non-empty float32 BLOB"),
    (
        "SELECT tensor_json(x'000000')",
        "tensor_json: expects a non-empty float32 BLOB (as "
        "tensor_predict returns), got a blob of 3 bytes",
    ),
    # threads
    (
        "SELECT tensor_threads(-1)",
        "tensor_threads: the thread count must be an integer from 1 to 256",
    ),
    (
        "SELECT tensor_threads(257)",
        "tensor_threads: the thread count must be an integer from 1 to 256",
    ),
    ("SELECT tensor_threads('x')", "tensor_threads: the thread count must be an integer"),
    ("SELECT tensor_threads(NULL)", "tensor_threads: the thread count must be an integer"),
    ("SELECT tensor_threads(1.5)", "tensor_threads: the thread count must be an integer"),
]


@pytest.mark.parametrize("sql, message", BAD_SQL, ids=range(len(BAD_SQL)))
def test_bad_sql_input_is_a_clear_error(restore_threads, models, sql, message):
    store = models[0]
    with pytest.raises(apsw.SQLError) as info:
        store.conn.execute(sql).fetchall()
    text = str(info.value).removeprefix("SQLError: ")
    surface, sep, detail = message.partition(": ")
    if sep and surface.startswith("tensor_") and " " not in surface:
        # "function: detail"; a parse error may say what the model expects in between
        assert text.startswith(f"{surface}: ") and detail in text
    else:
        assert message in text
    # the connection is fine afterwards
    assert (
        store.conn.execute("SELECT tensor_argmax(tensor_predict('tensors', 'emb', 1))").get
        is not None
    )


@pytest.mark.parametrize("text", ["[1,2", "abc", "[1,,2]", "[1] x", "", "[[1],[2]]"])
def test_malformed_json_features_name_the_expected_input(models, text):
    """Bad input is an error naming the expected shape: for a malformed JSON array too, the
    message says how many features the model takes (the parse error alone does not)."""
    store = models[0]
    with pytest.raises(apsw.SQLError) as info:
        store.conn.execute("SELECT tensor_predict('tensors', 'mlp', ?)", (text,)).get
    assert "13 numbers" in str(info.value) or "13 features" in str(info.value), str(info.value)


# -- the stock sqlite3 shell ----------------------------------------------------------------


def shell(sqlite3_shell, env, db, *commands):
    result = subprocess.run(
        [sqlite3_shell, "-batch", str(db), f".load {LOADABLE}", *commands],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return result.returncode, result.stdout, result.stderr


def test_shell_predicts_like_python(sqlite3_shell, clean_env, models, db_path):
    store, spec, x, ids, bags = models
    want_mlp = store.predict("mlp", x)
    want_bag = store.predict("bag", bags)
    want_emb = store.predict("emb", ids)
    rc, out, err = shell(
        sqlite3_shell,
        clean_env,
        db_path,
        "SELECT id, tensor_json(tensor_predict('tensors', 'mlp', x)) FROM inputs ORDER BY id;",
        "SELECT id, tensor_json(tensor_predict('tensors', 'mlp', xj)) FROM inputs ORDER BY id;",
        "SELECT id, tensor_json(output) FROM tensor_predict_batch('tensors', 'mlp',"
        " 'SELECT id, x FROM inputs ORDER BY id', 7);",
        "SELECT id, tensor_argmax(output), tensor_topk(output, 2) FROM tensor_predict_batch("
        "'tensors', 'bag', 'SELECT id, bagb FROM inputs ORDER BY id');",
        "SELECT id, hex(tensor_predict('tensors', 'emb', id1)) FROM inputs ORDER BY id;",
        "SELECT tensor_threads(1);",
    )
    assert rc == 0, err
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 5 * ROWS + 1
    for part in range(3):
        chunk = lines[part * ROWS : (part + 1) * ROWS]
        assert [int(l.split("|")[0]) for l in chunk] == list(range(1, ROWS + 1))
        close(np.array([json.loads(l.split("|")[1]) for l in chunk], np.float32), want_mlp)
    chunk = lines[3 * ROWS : 4 * ROWS]
    assert [int(l.split("|")[1]) for l in chunk] == np.argmax(want_bag, axis=1).tolist()
    for l, w in zip(chunk, want_bag):
        top = json.loads(l.split("|", 2)[2])
        assert [i for i, _ in top] == sorted(range(w.size), key=lambda i: (-w[i], i))[:2]
        close(np.array([s for _, s in top], np.float32), w[[i for i, _ in top]])
    chunk = lines[4 * ROWS : 5 * ROWS]
    close(
        np.stack([np.frombuffer(bytes.fromhex(l.split("|")[1]), np.float32) for l in chunk]),
        want_emb,
    )
    assert lines[-1] == "1"


def test_shell_error_is_reported_not_crashed(sqlite3_shell, clean_env, models, db_path):
    rc, out, err = shell(
        sqlite3_shell, clean_env, db_path, "SELECT tensor_predict('tensors', 'mlp', '[1, 2]');"
    )
    assert rc != 0
    assert "tensor_predict: the model takes 13 features, got a JSON array of 2" in err
    rc, out, err = shell(
        sqlite3_shell,
        clean_env,
        db_path,
        "SELECT * FROM tensor_predict_batch('tensors', 'emb', 'SELECT id, 99 FROM inputs');",
    )
    assert rc != 0
    assert "id 99 (input 0) is out of range" in err


def test_safetensors_model_answers_the_same_in_shell_apsw_and_numpy(
    sqlite3_shell, clean_env, tmp_path, rng
):
    """The issue's "done means": a model imported from a real .safetensors file answers the
    same in the sqlite3 shell, through apsw, and in numpy."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {
        "embed.weight": rng.standard_normal((200, 24)).astype(np.float32),
        "fc1.weight": (rng.standard_normal((31, 24)) / 5).astype(np.float16),
        "fc1.bias": (rng.standard_normal(31) / 5).astype(np.float16),
        "fc2.weight": (rng.standard_normal((7, 31)) / 5).astype(np.float32),
        "fc2.bias": (rng.standard_normal(7) / 5).astype(np.float32),
    }
    path = tmp_path / "clf.safetensors"
    safetensors_numpy.save_file(tensors, str(path))
    loaded = safetensors_numpy.load_file(str(path))
    layers = [
        {"op": "embedding_bag", "weight": "embed.weight", "mode": "mean"},
        {"op": "dense", "weight": "fc1.weight", "bias": "fc1.bias", "activation": "gelu"},
        {"op": "dense", "weight": "fc2.weight", "bias": "fc2.bias", "activation": "softmax"},
    ]
    bags = [rng.integers(0, 200, size=int(rng.integers(1, 12))) for _ in range(20)]
    db = tmp_path / "clf.sqlite"
    with sqlite_tensor.Store(db, block_rows=16, block_cols=16, page_blocks=3) as store:
        store.add_model("clf", path, layers=layers)
        py = store.predict("clf", bags)
        conn = store.conn
        conn.execute("CREATE TABLE reviews(id INTEGER PRIMARY KEY, words TEXT)")
        conn.executemany(
            "INSERT INTO reviews VALUES (?, ?)",
            [(i + 1, json.dumps(b.tolist())) for i, b in enumerate(bags)],
        )
        via_apsw = np.stack(
            [
                f32(b)
                for (b,) in conn.execute(
                    "SELECT tensor_predict('tensors', 'clf', words) FROM reviews ORDER BY id"
                )
            ]
        )
        via_batch = np.stack(
            [
                f32(b)
                for (b,) in conn.execute(
                    "SELECT output FROM tensor_predict_batch('tensors', 'clf',"
                    " 'SELECT id, words FROM reviews ORDER BY id', 6)"
                )
            ]
        )
    want, _ = reference_predict(layers, loaded, bags)
    assert_matches(py, layers, loaded, bags)
    for got in (via_apsw, via_batch):
        assert_matches(got, layers, loaded, bags)
        close(got, py)
    rc, out, err = shell(
        sqlite3_shell,
        clean_env,
        db,
        "SELECT tensor_json(tensor_predict('tensors', 'clf', words)) FROM reviews ORDER BY id;",
        "SELECT id, tensor_argmax(output), tensor_json(output) FROM tensor_predict_batch("
        "'tensors', 'clf', 'SELECT id, words FROM reviews ORDER BY id', 6);",
    )
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 * len(bags)
    via_shell = np.array([json.loads(l) for l in lines[: len(bags)]], np.float32)
    assert_matches(via_shell, layers, loaded, bags)
    close(via_shell, py)
    batch_rows = [l.split("|", 2) for l in lines[len(bags) :]]
    assert [int(r[0]) for r in batch_rows] == list(range(1, len(bags) + 1))
    assert [int(r[1]) for r in batch_rows] == np.argmax(want, axis=1).tolist()
    close(np.array([json.loads(r[2]) for r in batch_rows], np.float32), py)


# -- plans kept between statements -----------------------------------------------------------


def test_plans_kept_between_statements_follow_every_change(tmp_path):
    # A batch-1 tensor_predict per statement takes its plan from the previous statement's
    # while the store is unchanged; any change (this connection, another one, a rollback,
    # another file attached under the same name) is seen by the next statement.
    rng = np.random.default_rng(21)
    path, other = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    w1, w2, w3 = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3))
    layers = [{"op": "dense", "weight": "w"}]
    for p, w in ((path, w1), (other, w3)):
        with sqlite_tensor.Store(p) as s:
            s.add_model("m", {"w": w}, layers=layers)
    x = rng.standard_normal(4).astype(np.float32)
    conn = sqlite_tensor.connect(path)
    writer = sqlite_tensor.Store(sqlite_tensor.connect(path))

    def run(store="tensors"):
        return f32(
            conn.execute("SELECT tensor_predict(?, 'm', ?)", (store, x.tobytes())).fetchone()[0]
        )

    close(run(), w1 @ x)
    close(run(), w1 @ x)  # kept, still right
    writer.drop_model("m")  # another connection commits
    writer.add_model("m", {"w": w2}, layers=layers)
    close(run(), w2 @ x)
    own = sqlite_tensor.Store(conn)
    conn.execute("BEGIN")
    own.set_layers("m", [{"op": "dense", "weight": "w", "activation": "relu"}])
    close(run(), np.maximum(w2 @ x, 0))  # this connection's uncommitted write
    conn.execute("ROLLBACK")
    close(run(), w2 @ x)  # and its rollback
    conn.execute("ATTACH ? AS aux", (other,))
    close(run("aux.tensors"), w3 @ x)
    conn.execute("DETACH aux")
    conn.execute("ATTACH ? AS aux", (path,))  # another file under the same name
    close(run("aux.tensors"), w2 @ x)
    conn.execute("DETACH aux")
    writer.close()
    conn.close()
