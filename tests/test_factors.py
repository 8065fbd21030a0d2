"""Tensor-level low-rank factors (<store>_factors): a float32 tensor's value is its tiles
(plus their residuals) plus U @ V.T, and every reader uses it.

Factors are written with the dedup writer's seam (sqlite_tensor.dedup.writes.set_factors)
or, for damaged rows, with plain SQL. Checked against numpy: Store.predict for dense layers
(both layouts, batch 1 and more), embedding and embedding_bag (sum, mean), a BERT encoder
classifier; get_tensor, tensor_blob, the data column and export; factors with tile
residuals; every hostile row shape, from Python and from the stock sqlite3 shell; a second
connection and a savepoint seeing a change; drop_model and update_model; verify; the
report tables' physical bytes.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import closing

import apsw
import numpy as np
import pytest
from conftest import tamperable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_folders import bert_tensors
from reference_model import assert_matches
from test_residual_kernels import (
    SPECS,
    all_tiles,
    put_residuals,
    random_residuals,
    tensor_id,
    writing,
)

import sqlite_tensor
from sqlite_tensor import encoders, factors
from sqlite_tensor.dedup.writes import factor_bytes, set_factors
from sqlite_tensor.errors import CorruptStoreError
from sqlite_tensor.testing import bert_reference

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOADABLE = sqlite_tensor.loadable_path()


def give_factors(store, model, tensor, rank, rng, scale=0.2):
    """Random factors of this rank for a stored tensor, written with set_factors; returns
    U @ V.T in the tensor's shape (what the readers must add)."""
    tid = tensor_id(store, model, tensor)
    rows, cols, shape = store.conn.execute(
        f'SELECT rows, cols, shape FROM "{store.name}_tensors" WHERE id = ?', (tid,)
    ).fetchone()
    u = (rng.standard_normal((rows, rank)) * scale).astype(np.float32)
    v = (rng.standard_normal((cols, rank)) * scale).astype(np.float32)
    with store.writer() as w:
        set_factors(w, tid, u, v)
    return factors.as_stored(u, v).reshape(json.loads(shape))


def effective(arr, added):
    return (arr.astype(np.float64) + added).astype(np.float32)


# -- inference -------------------------------------------------------------------------------


@SETTINGS
@given(
    n_in=st.integers(1, 23),
    n_out=st.integers(1, 19),
    rank=st.integers(1, 6),
    transpose=st.booleans(),
    batch=st.sampled_from([1, 2, 64]),
    blocks=st.sampled_from([(3, 5), (4, 7), (8, 8)]),
    seed=st.integers(0, 2**31),
)
def test_dense_predict_adds_the_factors(n_in, n_out, rank, transpose, batch, blocks, seed):
    rng = np.random.default_rng(seed)
    shape = (n_in, n_out) if transpose else (n_out, n_in)
    rank = min(rank, *shape)
    arrays = {
        "w": rng.standard_normal(shape).astype(np.float32),
        "b": rng.standard_normal(n_out).astype(np.float32),
    }
    layers = [{"op": "dense", "weight": "w", "bias": "b", "transpose": transpose}]
    with closing(tamperable(sqlite_tensor.connect(":memory:"))) as conn:
        store = sqlite_tensor.Store(conn, block_rows=blocks[0], block_cols=blocks[1])
        store.add_model("m", arrays, layers=layers)
        eff = dict(arrays)
        eff["w"] = effective(arrays["w"], give_factors(store, "m", "w", rank, rng))
        eff["b"] = effective(arrays["b"], give_factors(store, "m", "b", 1, rng))
        x = rng.standard_normal((batch, n_in)).astype(np.float32)
        assert_matches(store.predict("m", x), layers, eff, x)
        assert_matches(store.predict("m", x[0]), layers, eff, x[0])
        got = conn.execute("SELECT tensor_predict('tensors', 'm', ?)", (x[0].tobytes(),)).get
        assert_matches(np.frombuffer(got, np.float32).copy(), layers, eff, x[0])


@pytest.mark.parametrize("batch", [1, 64])
def test_factors_with_tile_residuals_and_threads(memdb, rng, batch):
    """Both terms at once, on a network whose layers are large enough to use threads."""
    store = sqlite_tensor.Store(memdb, block_rows=16, block_cols=32, page_blocks=4)
    arrays = {
        "w1": (rng.standard_normal((96, 130)) / 10).astype(np.float32),
        "b1": rng.standard_normal(96).astype(np.float32),
        "w2": (rng.standard_normal((96, 40)) / 10).astype(np.float32),
    }
    layers = [
        {"op": "dense", "weight": "w1", "bias": "b1", "activation": "tanh"},
        {"op": "dense", "weight": "w2", "transpose": True},
    ]
    store.add_model("m", arrays, layers=layers)
    eff = {}
    for name, rank in (("w1", 5), ("w2", 3)):
        entries, added = random_residuals(
            rng, store, arrays[name].shape, all_tiles(store, arrays[name].shape)[::2], SPECS
        )
        put_residuals(store, "m", name, entries)
        eff[name] = effective(arrays[name] + added, give_factors(store, "m", name, rank, rng))
    eff["b1"] = arrays["b1"]
    x = rng.standard_normal((batch, 130)).astype(np.float32)
    for threads in (1, 2):
        memdb.execute("SELECT tensor_threads(?)", (threads,)).get
        assert_matches(store.predict("m", x), layers, eff, x, rtol=1e-4)
    memdb.execute("SELECT tensor_threads(0)").get
    np.testing.assert_allclose(store.get_tensor("m", "w1"), eff["w1"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_residuals", [False, True], ids=["factors", "factors+residuals"])
def test_embedding_and_bags_add_the_factors(memdb, rng, with_residuals):
    store = sqlite_tensor.Store(memdb, block_rows=4, block_cols=5, page_blocks=2)
    e = rng.standard_normal((13, 11)).astype(np.float32)  # edge tiles both ways
    models = {
        "emb": [{"op": "embedding", "weight": "e"}],
        "sum": [{"op": "embedding_bag", "weight": "e", "mode": "sum"}],
        "mean": [
            {"op": "embedding_bag", "weight": "e", "mode": "mean"},
            {"op": "activation", "activation": "tanh"},
        ],
    }
    for model, layers in models.items():
        store.add_model(model, {"e": e}, layers=layers)
    for model, layers in models.items():
        added = np.zeros(e.shape, np.float32)
        if with_residuals:
            entries, added = random_residuals(rng, store, e.shape, all_tiles(store, e.shape), SPECS)
            put_residuals(store, model, "e", entries)
        eff = {"e": effective(e + added, give_factors(store, model, "e", 3, rng))}
        if model == "emb":
            # a few ids (row by row) and many (whole residual tiles built once)
            for ids in (np.array([0, 12, 5, 5]), rng.integers(0, 13, 200)):
                assert_matches(store.predict(model, ids), layers, eff, ids)
            assert_matches(store.predict(model, 7), layers, eff, 7)
        else:
            bags = [[1, 2, 12], [0], [5, 5, 5, 5], list(rng.integers(0, 13, 40))]
            assert_matches(store.predict(model, bags), layers, eff, bags)
            assert_matches(store.predict(model, np.array([3, 4])), layers, eff, np.array([3, 4]))


def test_encoder_classifier_adds_the_factors(tmp_path, rng):
    """A tiny BERT classifier: factors on every word/position/type embedding, every linear
    layer of every block, the norms and biases (gathered), and the classifier head."""
    cfg = dict(vocab=60, hidden=16, layers=2, intermediate=24, positions=12)
    tensors = {"bert." + k: v * 10 if v.dtype == np.float32 else v for k, v in
               bert_tensors(**cfg, seed=5).items()}  # fmt: skip
    tensors["bert.pooler.dense.weight"] = rng.standard_normal((16, 16)).astype(np.float32) / 4
    tensors["bert.pooler.dense.bias"] = rng.standard_normal(16).astype(np.float32)
    tensors["classifier.weight"] = rng.standard_normal((3, 16)).astype(np.float32)
    tensors["classifier.bias"] = rng.standard_normal(3).astype(np.float32)
    config = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 24,
        "max_position_embeddings": 12,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "type_vocab_size": 2,
        "vocab_size": 60,
    }
    layers = encoders.layers_from_folder({"config.json": json.dumps(config).encode()}, tensors)
    with sqlite_tensor.Store(tmp_path / "enc.sqlite", block_rows=8, block_cols=8) as store:
        store.add_model("clf", tensors, layers=layers)
        eff = dict(tensors)
        for name, arr in tensors.items():
            if arr.dtype == np.float32 and (arr.ndim == 2 or "LayerNorm" in name or "bias" in name):
                rank = 1 if arr.ndim == 1 else min(2, *arr.shape)
                eff[name] = effective(arr, give_factors(store, "clf", name, rank, rng, 0.05))
        ids = [[2, 50, 7, 33, 3], [2, 3], [2, 11, 12, 13, 14, 15, 16, 17, 3]]
        want = bert_reference.classifier_logits(
            eff, bert_reference.BertConfig.from_json(config), ids
        )
        # the factors matter: without them the answer is elsewhere
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(store.predict("clf", ids), want, rtol=1e-4, atol=1e-4)


# -- tensor reads ----------------------------------------------------------------------------


def test_reads_and_export_add_the_factors(store, rng, tmp_path):
    w = rng.standard_normal((7, 12)).astype(np.float32)
    w3 = rng.standard_normal((2, 3, 8)).astype(np.float32)  # a 3-D tensor: its 2-D view 6 x 8
    h = rng.standard_normal((4, 4)).astype(np.float16)
    store.add_model("m", {"w": w, "w3": w3, "h": h})
    entries, added = random_residuals(rng, store, w.shape, all_tiles(store, w.shape)[1:], SPECS)
    put_residuals(store, "m", "w", entries)
    want = {
        "w": effective(w + added, give_factors(store, "m", "w", 4, rng)),
        "w3": effective(w3, give_factors(store, "m", "w3", 2, rng)),
        "h": h,
    }
    for name, arr in want.items():
        np.testing.assert_allclose(store.get_tensor("m", name), arr, rtol=1e-6, atol=1e-6)
        blob = store.conn.execute("SELECT tensor_blob('tensors', 'm', ?)", (name,)).get
        got = np.frombuffer(blob, arr.dtype).reshape(arr.shape)
        np.testing.assert_allclose(got, arr, rtol=1e-6, atol=1e-6)
        data = store.conn.execute(
            "SELECT data FROM tensors WHERE model = 'm' AND tensor = ?", (name,)
        ).get
        assert data == blob
    store.export_model("m", tmp_path / "out")
    from safetensors.numpy import load_file

    files = list((tmp_path / "out").glob("*.safetensors"))
    assert files, list((tmp_path / "out").iterdir())
    exported = {}
    for f in files:
        exported.update(load_file(str(f)))
    for name, arr in want.items():
        np.testing.assert_allclose(exported[name], arr, rtol=1e-6, atol=1e-6)


def test_set_factors_checks_its_arguments_and_deletes(memstore, rng):
    w = rng.standard_normal((5, 7)).astype(np.float32)
    memstore.add_model("m", {"w": w, "h": w.astype(np.float16)})
    tid, hid = tensor_id(memstore, "m", "w"), tensor_id(memstore, "m", "h")
    u, v = np.ones((5, 2), np.float32), np.ones((7, 2), np.float32)
    with memstore.writer() as wr:
        for args, msg in [
            ((tid, u, v[:6]), r"u must be \(5, 2\) and v \(7, 2\)"),
            ((tid, v, u), r"u must be \(5, 2\)"),
            ((tid, np.ones((5, 6), np.float32), np.ones((7, 6), np.float32)), "ranks 1 to 5"),
            ((tid, u, np.ones((7, 3), np.float32)), "of one rank"),
            ((tid, u.astype(np.float64), v), "u must be float32"),
            ((tid, u, None), "both u and v"),
            ((hid, np.ones((5, 1), np.float32), np.ones((7, 1), np.float32)), "float32 tensors"),
            ((999, u, v), "no tensor with id 999"),
        ]:
            with pytest.raises(ValueError, match=msg):
                set_factors(wr, *args)
        set_factors(wr, tid, u, v)
    assert np.allclose(memstore.get_tensor("m", "w"), w + 2)
    with memstore.writer() as wr:
        set_factors(wr, tid, u[:, :0], v[:, :0])  # rank 0 deletes
    assert np.array_equal(memstore.get_tensor("m", "w"), w)
    with memstore.writer() as wr:
        set_factors(wr, tid, u, v)
        set_factors(wr, tid, None, None)
    assert np.array_equal(memstore.get_tensor("m", "w"), w)
    assert memstore.conn.execute("SELECT count(*) FROM tensors_factors").get == 0


# -- hostile rows ----------------------------------------------------------------------------

W_SHAPE = (4, 6)


def _payload(n, rank, scale=0.5):
    """A factor payload of n x rank: rank float32 scales, then int8 codes."""
    scales = np.full(rank, scale, np.float32).tobytes()
    return scales + (np.arange(n * rank) % 100).astype(np.int8).tobytes()


# (rank, u, v, message): the row written for tensor "w" (4 x 6) of model "m"
HOSTILE = {
    "rank-0": (0, b"", b"", "rank 0; a 4 x 6 tensor takes ranks 1 to 4"),
    "rank-negative": (
        -2,
        _payload(4, 1),
        _payload(6, 1),
        "rank -2; a 4 x 6 tensor takes ranks 1 to 4",
    ),
    "rank-over-min": (
        5,
        _payload(4, 5),
        _payload(6, 5),
        "rank 5; a 4 x 6 tensor takes ranks 1 to 4",
    ),
    "rank-huge": (2**40, _payload(4, 1), _payload(6, 1), "rank 1099511627776; a 4 x 6"),
    "rank-text": ("2", _payload(4, 2), _payload(6, 2), "rank that is text; it must be an integer"),
    "rank-real": (2.5, _payload(4, 2), _payload(6, 2), "rank that is a real"),
    "rank-null": (None, _payload(4, 2), _payload(6, 2), "rank that is NULL"),
    "u-short": (
        2,
        _payload(4, 2)[:-1],
        _payload(6, 2),
        "u of 15 bytes; rank 2 makes 16 for 4 rows",
    ),
    "u-long": (
        2,
        _payload(4, 2) + b"\0",
        _payload(6, 2),
        "u of 17 bytes; rank 2 makes 16 for 4 rows",
    ),
    "v-short": (
        2,
        _payload(4, 2),
        _payload(6, 2)[:-1],
        "v of 19 bytes; rank 2 makes 20 for 6 columns",
    ),
    "v-long": (
        2,
        _payload(4, 2),
        _payload(6, 2) + b"\0",
        "v of 21 bytes; rank 2 makes 20 for 6 columns",
    ),
    "u-float32": (
        2,
        np.ones(8, np.float32).tobytes(),
        _payload(6, 2),
        "u of 32 bytes; rank 2 makes 16",
    ),
    "u-scale-nan": (1, _payload(4, 1, np.nan), _payload(6, 1), "u with a scale that is not finite"),
    "v-scale-inf": (1, _payload(4, 1), _payload(6, 1, np.inf), "v with a scale that is not finite"),
    "u-text": (1, "abcdabcd", _payload(6, 1), "u that is text; u and v must be BLOBs"),
    "v-null": (1, _payload(4, 1), None, "v that is NULL; u and v must be BLOBs"),
    "v-integer": (1, _payload(4, 1), 7, "v that is an integer"),
}


def hostile_store(path, rng, rank, u, v, tensor="w"):
    """A store with dense model m (w 4 x 6, float32; h 4 x 6, float16) whose factors table
    is recreated without constraints (a file may declare it so) holding one row for tensor.
    Returns the clean weights."""
    w = rng.standard_normal(W_SHAPE).astype(np.float32)
    arrays = {"w": w, "h": w.astype(np.float16)}
    with sqlite_tensor.Store(path, block_rows=3, block_cols=5) as store:
        store.add_model("m", arrays, layers=[{"op": "dense", "weight": "w"}])
        store.add_model("half", {"h": arrays["h"]}, layers=[{"op": "dense", "weight": "h"}])
        tid = tensor_id(store, "m" if tensor == "w" else "half", tensor) if tensor else 999
        conn = tamperable(store.conn)
        with writing(conn):
            conn.execute("DROP TABLE tensors_factors")
            conn.execute("CREATE TABLE tensors_factors(tensor_id INTEGER PRIMARY KEY, rank, u, v)")
            conn.execute("INSERT INTO tensors_factors VALUES (?, ?, ?, ?)", (tid, rank, u, v))
    return arrays


def assert_python_refuses(path, model, tensor, msg):
    with sqlite_tensor.Store(path) as store:
        x = np.ones(6, np.float32)
        with pytest.raises(CorruptStoreError, match=msg) as got:
            store.get_tensor(model, tensor)
        assert "tensor store 'tensors' is corrupt" in str(got.value)
        assert f"tensor '{tensor}'" in str(got.value)
        with pytest.raises(CorruptStoreError, match=msg):
            store.predict(model, x)
        with pytest.raises(apsw.CorruptError, match=msg):
            store.conn.execute("SELECT tensor_blob('tensors', ?, ?)", (model, tensor)).get
        with pytest.raises(apsw.CorruptError, match=msg):
            store.conn.execute("SELECT tensor_predict('tensors', ?, ?)", (model, x.tobytes())).get
        problems = store.verify()
        assert any(p.startswith("factors of tensor") for p in problems), problems


def assert_shell_refuses(sqlite3_shell, clean_env, path, model, tensor, msg):
    x = np.ones(6, np.float32).tobytes().hex()
    for sql in (
        f"SELECT length(tensor_blob('tensors', '{model}', '{tensor}'));",
        f"SELECT length(tensor_predict('tensors', '{model}', x'{x}'));",
    ):
        result = subprocess.run(
            [sqlite3_shell, "-batch", str(path), f".load {LOADABLE}", sql],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env,
        )
        # SQLITE_CORRUPT as the shell's exit status (a signal would be negative)
        assert result.returncode == apsw.SQLITE_CORRUPT, (result.returncode, result.stderr)
        assert "is corrupt" in result.stderr and msg in result.stderr, result.stderr


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_factor_rows_are_corrupt_never_a_crash(
    tmp_path, rng, case, sqlite3_shell, clean_env
):
    rank, u, v, msg = HOSTILE[case]
    path = tmp_path / "h.sqlite"
    hostile_store(path, rng, rank, u, v)
    assert_python_refuses(path, "m", "w", msg)
    assert_shell_refuses(sqlite3_shell, clean_env, path, "m", "w", msg)
    with sqlite_tensor.Store(path) as store:  # the other model still reads
        store.predict("half", np.ones(6, np.float32))


def test_factors_on_a_float16_tensor_are_corrupt(tmp_path, rng, sqlite3_shell, clean_env):
    path = tmp_path / "h.sqlite"
    hostile_store(path, rng, 1, _payload(4, 1), _payload(6, 1), tensor="h")
    msg = "are on a float16 tensor; factors apply to float32 tensors only"
    assert_python_refuses(path, "half", "h", msg)
    assert_shell_refuses(sqlite3_shell, clean_env, path, "half", "h", msg)


def test_an_orphan_factors_row_is_reported_and_harms_nothing(tmp_path, rng):
    path = tmp_path / "h.sqlite"
    arrays = hostile_store(path, rng, 1, _payload(4, 1), _payload(6, 1), tensor=None)
    with sqlite_tensor.Store(path) as store:
        np.testing.assert_array_equal(store.get_tensor("m", "w"), arrays["w"])
        x = np.ones(6, np.float32)
        np.testing.assert_allclose(store.predict("m", x), arrays["w"] @ x, rtol=1e-5)
        assert "factors of tensor 999: no such tensor" in store.verify()
        store.stats()  # the reports still answer
        store.model_stats()


def test_old_store_without_the_table_reads_no_factors(db_path, rng):
    w = rng.standard_normal((5, 7)).astype(np.float32)
    layers = [{"op": "dense", "weight": "w"}]
    with sqlite_tensor.Store(db_path, block_rows=3, block_cols=5) as store:
        store.add_model("m", {"w": w}, layers=layers)
        conn = tamperable(store.conn)
        with writing(conn):
            conn.execute("DROP TABLE tensors_factors")
    with closing(apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)) as conn:
        sqlite_tensor.load(conn)
        store = sqlite_tensor.Store(conn)
        x = rng.standard_normal(7).astype(np.float32)
        assert_matches(store.predict("m", x), layers, {"w": w}, x)
        np.testing.assert_array_equal(store.get_tensor("m", "w"), w)
        assert store.verify() == [
            "schema: older than this sqlite-tensor's (missing tables, index,"
            " uid or version-2 pages); open the store writable to upgrade it"
        ]
        assert store.stats()["physical_bytes"] > 0
    with sqlite_tensor.Store(db_path) as store:  # a writable open adds the table back
        assert store.conn.execute("SELECT count(*) FROM tensors_factors").get == 0
        assert store.verify() == []


# -- changes seen, rows kept in step ---------------------------------------------------------


def test_another_connections_factors_commit_is_seen(db_path, rng):
    w = rng.standard_normal((6, 9)).astype(np.float32)
    layers = [{"op": "dense", "weight": "w"}]
    x = rng.standard_normal(9).astype(np.float32)
    with sqlite_tensor.Store(db_path, block_rows=3, block_cols=5) as reader:
        reader.add_model("m", {"w": w}, layers=layers)
        sql = "SELECT tensor_predict('tensors', 'm', ?)"
        # cached: a plan, kept statements, the pool's pages
        for _ in range(2):
            assert_matches(reader.predict("m", x), layers, {"w": w}, x)
            np.testing.assert_array_equal(reader.get_tensor("m", "w"), w)
            reader.conn.execute(sql, (x.tobytes(),)).get
        with sqlite_tensor.Store(db_path) as writer:
            added = give_factors(writer, "m", "w", 2, rng)
            eff = {"w": effective(w, added)}
            assert_matches(reader.predict("m", x), layers, eff, x)
            np.testing.assert_allclose(reader.get_tensor("m", "w"), eff["w"], rtol=1e-6)
            got = np.frombuffer(reader.conn.execute(sql, (x.tobytes(),)).get, np.float32)
            assert_matches(got.copy(), layers, eff, x)
            added = give_factors(writer, "m", "w", 3, rng)  # replaced
            eff = {"w": effective(w, added)}
            assert_matches(reader.predict("m", x), layers, eff, x)
            with writer.writer() as wr:
                set_factors(wr, tensor_id(writer, "m", "w"), None, None)
            assert_matches(reader.predict("m", x), layers, {"w": w}, x)


def test_a_savepoint_sees_its_own_factors_and_its_rollback(memstore, rng):
    """What the dedup search relies on: inside the write transaction, a savepoint's
    set_factors is seen by the next predict on the same connection, and gone after the
    savepoint rolls back."""
    w = rng.standard_normal((6, 9)).astype(np.float32)
    layers = [{"op": "dense", "weight": "w"}]
    x = rng.standard_normal(9).astype(np.float32)
    memstore.add_model("m", {"w": w}, layers=layers)
    tid = tensor_id(memstore, "m", "w")
    u = rng.standard_normal((6, 2)).astype(np.float32)
    v = rng.standard_normal((9, 2)).astype(np.float32)
    eff = {"w": effective(w, factors.as_stored(u, v))}
    with memstore.writer() as wr:
        assert_matches(memstore.predict("m", x), layers, {"w": w}, x)
        with pytest.raises(KeyError), wr.savepoint():
            set_factors(wr, tid, u, v)
            assert_matches(memstore.predict("m", x), layers, eff, x)
            raise KeyError("roll back")
        assert_matches(memstore.predict("m", x), layers, {"w": w}, x)
        with wr.savepoint():
            set_factors(wr, tid, u, v)
        assert_matches(memstore.predict("m", x), layers, eff, x)
    assert_matches(memstore.predict("m", x), layers, eff, x)


def test_drop_model_leaves_no_factors(memstore, rng):
    w = rng.standard_normal((5, 7)).astype(np.float32)
    memstore.add_model("a", {"w": w})
    memstore.add_model("b", {"w": w})
    give_factors(memstore, "a", "w", 2, rng)
    added = give_factors(memstore, "b", "w", 2, rng)
    memstore.drop_model("a")
    assert memstore.conn.execute("SELECT count(*) FROM tensors_factors").get == 1
    np.testing.assert_allclose(memstore.get_tensor("b", "w"), effective(w, added), rtol=1e-6)
    memstore.drop_model("b")
    assert memstore.conn.execute("SELECT count(*) FROM tensors_factors").get == 0
    assert memstore.verify() == []


def test_update_model_carries_factors_only_with_every_tile(memstore, rng):
    w = rng.standard_normal((6, 10)).astype(np.float32)
    k = rng.standard_normal((6, 10)).astype(np.float32)
    memstore.add_model("m", {"w": w, "k": k})
    added_w = give_factors(memstore, "m", "w", 2, rng)
    give_factors(memstore, "m", "k", 2, rng)
    k2 = k.copy()
    k2[0, 0] += 1  # one tile of k changes: k is stored exactly, its factors go
    memstore.update_model("m", {"w": w, "k": k2})
    np.testing.assert_allclose(memstore.get_tensor("m", "w"), effective(w, added_w), rtol=1e-6)
    np.testing.assert_array_equal(memstore.get_tensor("m", "k"), k2)
    assert memstore.conn.execute("SELECT count(*) FROM tensors_factors").get == 1
    assert memstore.verify() == []


def test_physical_bytes_count_the_factors(memstore, rng):
    w = rng.standard_normal((6, 10)).astype(np.float32)
    memstore.add_model("a", {"w": w})
    memstore.add_model("b", {"w": w})
    stats, models = memstore.stats(), {r["model"]: r for r in memstore.model_stats()}
    pages = memstore.page_stats()
    give_factors(memstore, "b", "w", 3, rng)
    nbytes = factors.payload_bytes(6, 10, 3)
    after = memstore.stats()
    assert after["physical_bytes"] == stats["physical_bytes"] + nbytes
    assert after["dedup_ratio"] == pytest.approx(after["logical_bytes"] / after["physical_bytes"])
    now = {r["model"]: r for r in memstore.model_stats()}
    assert now["a"] == models["a"]
    assert now["b"]["physical_bytes"] == models["b"]["physical_bytes"] + nbytes
    assert now["b"]["private_bytes"] == models["b"]["private_bytes"] + nbytes
    assert now["b"]["pages"] == models["b"]["pages"]  # factors live in no page
    assert memstore.page_stats() == pages
    with memstore.writer() as wr:
        assert factor_bytes(wr, wr.model_id("b")) == nbytes
        assert factor_bytes(wr, wr.model_id("a")) == 0


def test_rename_and_drop_of_the_store_take_the_factors(memdb, rng):
    store = sqlite_tensor.Store(memdb, block_rows=3, block_cols=5)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    store.add_model("m", {"w": w})
    added = give_factors(store, "m", "w", 2, rng)
    memdb.execute("ALTER TABLE tensors RENAME TO renamed")
    assert memdb.execute("SELECT count(*) FROM renamed_factors").get == 1
    renamed = sqlite_tensor.Store(memdb, "renamed")
    np.testing.assert_allclose(renamed.get_tensor("m", "w"), effective(w, added), rtol=1e-6)
    assert renamed.verify() == []
    memdb.execute("DROP TABLE renamed")
    assert memdb.execute("SELECT count(*) FROM sqlite_schema WHERE name LIKE '%factors'").get == 0
