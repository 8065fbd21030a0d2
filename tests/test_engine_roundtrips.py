"""Round trips the engine no longer makes (issue #12), and the residual-table memo's
freshness: a store whose residual tables another connection creates after a first read
still reads the right numbers on this connection."""

from __future__ import annotations

import apsw
import numpy as np

import sqlite_tensor

LAYERS = [
    {"op": "dense", "weight": "fc1.weight", "bias": "fc1.bias", "activation": "relu"},
    {"op": "dense", "weight": "fc2.weight", "bias": "fc2.bias"},
]


def statements(conn, run):
    """The SQL of every statement SQLite starts while run() runs (the engine's own too)."""
    seen = []

    def tracer(event):
        seen.append(event.get("sql") or "")

    conn.trace_v2(apsw.SQLITE_TRACE_STMT, tracer)
    try:
        out = run()
    finally:
        conn.trace_v2(0, None)
    return seen, out


def family(seed=0):
    rng = np.random.default_rng(seed)
    base = {
        "fc1.weight": rng.standard_normal((64, 96)).astype(np.float32) / 10,
        "fc1.bias": rng.standard_normal(64).astype(np.float32) / 10,
        "fc2.weight": rng.standard_normal((10, 64)).astype(np.float32) / 8,
        "fc2.bias": np.zeros(10, np.float32),
    }
    # a small nudge everywhere and a rank-1 change of fc1: dedup keeps low-rank residuals
    variant = {
        k: (v + 0.002 * rng.standard_normal(v.shape).astype(np.float32) * np.abs(v).mean()).astype(
            np.float32
        )
        for k, v in base.items()
    }
    variant["fc1.weight"] += 0.01 * np.outer(
        rng.standard_normal(64), rng.standard_normal(96)
    ).astype(np.float32)
    return {"base": base, "v1": variant}


def make_store(path, models):
    with sqlite_tensor.Store(str(path), block_rows=16, block_cols=16, page_blocks=4) as store:
        for m, tensors in models.items():
            store.add_model(m, tensors, layers=LAYERS)
    plain = apsw.Connection(str(path))  # plain SQL: take the residual tables away
    with plain:
        plain.execute("DROP TABLE tensors_residuals; DROP TABLE tensors_dedup")
    plain.close()


def read_all(conn, models, x):
    blobs = {
        (m, t): conn.execute("SELECT tensor_blob('tensors', ?, ?)", (m, t)).get
        for m, tensors in models.items()
        for t in tensors
    }
    outs = {
        m: np.frombuffer(
            conn.execute("SELECT tensor_predict('tensors', ?, ?)", (m, x.tobytes())).get, np.float32
        ).copy()
        for m in models
    }
    data = {(m, t): d for m, t, d in conn.execute("SELECT model, tensor, data FROM tensors")}
    return blobs, outs, data


def test_residual_tables_created_later_by_another_connection_are_seen(tmp_path):
    path = tmp_path / "s.sqlite"
    models = family()
    make_store(path, models)
    x = np.linspace(-1, 1, 96, dtype=np.float32)
    reader = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    sqlite_tensor.load(reader)
    try:
        blobs, outs, data = read_all(reader, models, x)  # no residual tables: memo says so
        assert blobs[("v1", "fc1.weight")] == models["v1"]["fc1.weight"].tobytes()
        # another connection: the writable Store adds the residual tables, dedup fills them
        with sqlite_tensor.Store(str(path)) as writer:
            writer.dedup(
                validator=lambda store, model: 0.0, max_drop=1.0, residuals=True, tolerance=0.03
            )
            n_res = writer.conn.execute("SELECT count(*) FROM tensors_residuals").get
            assert n_res > 0, "the test needs a dedup that keeps residuals"
            want_blobs = {
                (m, t): writer.get_tensor(m, t).tobytes()
                for m, tensors in models.items()
                for t in tensors
            }
            want_outs = {m: writer.predict(m, x) for m in models}
        blobs, outs, data = read_all(reader, models, x)
        # with the memo stuck on "no residuals", residual tiles would read as the bare
        # shared block: different numbers
        assert blobs == want_blobs
        assert data == want_blobs
        for m in models:
            np.testing.assert_array_equal(outs[m], want_outs[m])
        changed = [k for k in want_blobs if want_blobs[k] != models[k[0]][k[1]].tobytes()]
        assert changed, "dedup changed nothing: the test would not tell"
    finally:
        reader.close()


def test_sqlite_master_asked_once_per_view(tmp_path):
    path = tmp_path / "s.sqlite"
    models = family(1)
    with sqlite_tensor.Store(str(path), block_rows=16, block_cols=16, page_blocks=4) as store:
        for m, tensors in models.items():
            store.add_model(m, tensors, layers=LAYERS)
    conn = apsw.Connection(str(path))
    sqlite_tensor.load(conn)
    x = np.ones(96, np.float32)
    read_all(conn, models, x)  # the first view asks
    seen, _ = statements(conn, lambda: [read_all(conn, models, x) for _ in range(3)])
    asked = [s for s in seen if "sqlite_master" in s and "_residuals" in s]
    assert asked == [], asked
    # a commit by another connection is a new view: asked again, once
    other = apsw.Connection(str(path))
    other.execute("CREATE TABLE unrelated(x)")
    other.close()
    seen, _ = statements(conn, lambda: [read_all(conn, models, x) for _ in range(3)])
    asked = [s for s in seen if "sqlite_master" in s and "_residuals" in s]
    assert len(asked) == 1, asked
    conn.close()


def test_data_column_reads_no_shape_per_row(tmp_path):
    path = tmp_path / "s.sqlite"
    models = family(2)
    with sqlite_tensor.Store(str(path), block_rows=16, block_cols=16, page_blocks=4) as store:
        for m, tensors in models.items():
            store.add_model(m, tensors, layers=LAYERS)
    conn = apsw.Connection(str(path))
    sqlite_tensor.load(conn)
    seen, rows = statements(
        conn, lambda: conn.execute("SELECT model, tensor, data FROM tensors").fetchall()
    )
    assert len(rows) == sum(len(t) for t in models.values())
    for m, t, d in rows:
        assert d == models[m][t].tobytes()
    per_row = [s for s in seen if "rows, cols" in s or "SELECT rows" in s]
    assert per_row == [], per_row
    conn.close()
