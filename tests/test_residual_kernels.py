"""Residual blocks in the compiled engine: a float32 tile's effective value is its block
plus a residual of any kind (sqlite_tensor.residuals), and every read uses it.

Residuals are written straight into a real store with SQL (the dedup writer is not needed):
one page of payloads built with sqlite_tensor.pages.build_page, rows in <store>_residuals
(the buffer pool notices the plain-SQL change by itself). Checked against numpy:
get_tensor / tensor_blob / the data column, Store.predict for dense (both layouts, batch 1
and more, one and two kernel threads), embedding and embedding_bag models, edge tiles,
every kind and param (bit widths, sign scales), the report tables, damaged rows and pages, and a store
created before the residuals table existed.
"""

from __future__ import annotations

from contextlib import closing, contextmanager

import apsw
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_model import assert_matches

import sqlite_tensor
from sqlite_tensor import _engine, pages, residuals
from sqlite_tensor.residuals import (
    LOWRANK,
    QUANTIZED,
    SIGN,
    SIGN_ROW,
    SIGN_SPARSE,
    SIGN_TILE,
    SPARSE,
)
from sqlite_tensor.schema import Tables

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPECS = [
    (LOWRANK, 1),
    (LOWRANK, 2),
    (QUANTIZED, 2),
    (QUANTIZED, 4),
    (QUANTIZED, 8),
    (SIGN, SIGN_TILE),
    (SIGN, SIGN_ROW),
    (SPARSE, 3),
    (SIGN_SPARSE, 2),
]
SPEC_IDS = ["lowrank1", "lowrank2", "q2", "q4", "q8", "sign-tile", "sign-row", "sparse3", "signsp2"]
# kinds the engine adds element by element in float32 exactly as decode() computes them
EXACT_KINDS = (QUANTIZED, SIGN, SPARSE)


# -- writing residuals with SQL -------------------------------------------------------------


@contextmanager
def writing(conn):
    """A write transaction with defensive mode lifted (as Store._writing does)."""
    defensive = conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, -1)
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, defensive)


def tensor_id(store, model, tensor):
    return store.conn.execute(
        f'SELECT t.id FROM "{store.name}_tensors" t JOIN "{store.name}_models" m'
        " ON m.id = t.model_id WHERE m.name = ? AND t.name = ?",
        (model, tensor),
    ).get


def tile_extent(store, shape, bi, bj):
    rows, cols = shape
    return (
        min(store.block_rows, rows - bi * store.block_rows),
        min(store.block_cols, cols - bj * store.block_cols),
    )


def put_residuals(store, model, tensor, entries, *, rows=None):
    """Write {(bi, bj): (kind, param, payload)} for a tensor: one new page holding the
    payloads in that order, one residuals row each. rows, when given, overrides the
    residuals rows written: (bi, bj, kind, param, page_id or None, slot, nbytes)."""
    conn, s = store.conn, store.name
    tid = tensor_id(store, model, tensor)
    payloads = [np.frombuffer(p, np.uint8) for (_, _, p) in entries.values()]
    with writing(conn):
        page_id = None
        if payloads:
            page_id = pages.insert_page(conn, Tables(s), pages.build_page(payloads), len(payloads))
        if rows is None:
            rows = [
                (bi, bj, kind, param, None, slot, len(payload))
                for slot, ((bi, bj), (kind, param, payload)) in enumerate(entries.items())
            ]
        conn.executemany(
            f'INSERT INTO "{s}_residuals" VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
            [
                (tid, bi, bj, kind, param, page_id if page is None else page, slot, n)
                for bi, bj, kind, param, page, slot, n in rows
            ],
        )
    return page_id


def random_residuals(rng, store, shape, tiles, specs, scale=0.1):
    """{(bi, bj): (kind, param, payload)} for the given tiles, kinds cycling through specs,
    and the effective addition as a full (rows x cols) float32 array."""
    entries = {}
    added = np.zeros(shape, np.float32)
    for n, (bi, bj) in enumerate(tiles):
        br, bc = tile_extent(store, shape, bi, bj)
        kind, param = specs[n % len(specs)]
        if kind == LOWRANK:
            param = min(param, br, bc)
        if kind in (SPARSE, SIGN_SPARSE):
            param = min(param, residuals.sparse_cap(br, bc))
        delta = rng.standard_normal((br, bc)) * scale
        payload = residuals.encode(kind, param, delta)
        entries[(bi, bj)] = (kind, param, payload)
        r0, c0 = bi * store.block_rows, bj * store.block_cols
        added[r0 : r0 + br, c0 : c0 + bc] = residuals.decode(kind, param, br, bc, payload)
    return entries, added


def all_tiles(store, shape):
    gr = -(-shape[0] // store.block_rows)
    gc = -(-shape[1] // store.block_cols)
    return [(i, j) for i in range(gr) for j in range(gc)]


@pytest.fixture
def threads():
    before = _engine.get_threads()
    yield _engine
    _engine.set_threads(before)


# -- the codec ------------------------------------------------------------------------------


@SETTINGS
@given(
    rows=st.integers(1, 12), cols=st.integers(1, 12), data=st.data(), seed=st.integers(0, 2**32 - 1)
)
def test_lowrank_round_trip(rows, cols, data, seed):
    rng = np.random.default_rng(seed)
    full = min(rows, cols)
    rank = data.draw(st.integers(1, full))
    # a matrix of exactly this rank comes back (to float32 rounding)
    delta = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols))
    payload = residuals.encode_lowrank(delta, rank)
    assert (
        len(payload)
        == residuals.payload_bytes(LOWRANK, rank, rows, cols)
        == (rows + cols) * rank * 4
    )
    got = residuals.decode(LOWRANK, rank, rows, cols, payload)
    assert got.dtype == np.float32 and got.shape == (rows, cols)
    np.testing.assert_allclose(got, delta, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(delta).max()))
    # U first (rows x rank), then V (cols x rank): U @ V.T is the residual
    U = np.frombuffer(payload[: rows * rank * 4], "<f4").reshape(rows, rank)
    V = np.frombuffer(payload[rows * rank * 4 :], "<f4").reshape(cols, rank)
    np.testing.assert_allclose(
        U.astype(np.float64) @ V.T.astype(np.float64), got, rtol=1e-5, atol=1e-6
    )


def test_lowrank_truncates_to_the_best_approximation(rng):
    delta = rng.standard_normal((9, 7))
    s = np.linalg.svd(delta, compute_uv=False)
    for rank in range(1, 8):
        got = residuals.decode(LOWRANK, rank, 9, 7, residuals.encode_lowrank(delta, rank))
        err = np.linalg.norm(got - delta)  # Eckart-Young: the tail of the singular values
        assert err == pytest.approx(np.sqrt((s[rank:] ** 2).sum()), rel=1e-4, abs=1e-4)


@SETTINGS
@given(
    rows=st.integers(1, 10),
    cols=st.integers(1, 19),
    bits=st.sampled_from([2, 4, 8]),
    seed=st.integers(0, 2**32 - 1),
    zero_row=st.booleans(),
)
def test_quantized_round_trip(rows, cols, bits, seed, zero_row):
    rng = np.random.default_rng(seed)
    delta = rng.standard_normal((rows, cols)) * rng.uniform(0.01, 10)
    if zero_row:
        delta[rng.integers(rows)] = 0
    payload = residuals.encode_quantized(delta, bits)
    assert (
        len(payload)
        == residuals.payload_bytes(QUANTIZED, bits, rows, cols)
        == rows * 4 + rows * ((cols * bits + 7) // 8)
    )
    got = residuals.decode(QUANTIZED, bits, rows, cols, payload)
    assert got.dtype == np.float32 and got.shape == (rows, cols)
    top = 2 ** (bits - 1) - 1
    scale = np.frombuffer(payload[: rows * 4], "<f4")
    np.testing.assert_allclose(
        scale, (np.abs(delta).max(axis=1) / top).astype(np.float32), rtol=1e-6
    )
    # within half a step of each row's scale (plus float32 rounding)
    assert (np.abs(got - delta) <= scale[:, None] * 0.5 * (1 + 1e-5) + 1e-6 * np.abs(delta)).all()
    # the largest element of a row is exact up to float32 rounding
    for i in range(rows):
        assert (
            not np.any(got[i])
            if scale[i] == 0
            else np.abs(got[i]).max() == pytest.approx(np.abs(delta[i]).max(), rel=1e-6)
        )


def test_quantized_layout_by_hand():
    """Codes packed little end first: element j at bit (j*b) % 8 of byte (j*b) // 8."""
    scale = np.array([0.5, 2.0], "<f4").tobytes()
    # 4 bits, 3 columns: row 0 codes 9, 7, 15 -> bytes 0x79, 0x0f; row 1 codes 8, 0, 1
    four = scale + bytes([0x79, 0x0F, 0x08, 0x01])
    np.testing.assert_array_equal(
        residuals.decode(QUANTIZED, 4, 2, 3, four), [[0.5, -0.5, 3.5], [0.0, -16.0, -14.0]]
    )
    # 2 bits, 5 columns: codes 0,1,2,3,2 -> 0b11100100, 0b10
    two = scale + bytes([0b11100100, 0b10, 0b11100100, 0b10])
    np.testing.assert_array_equal(
        residuals.decode(QUANTIZED, 2, 2, 5, two), [[-1, -0.5, 0, 0.5, 0], [-4, -2, 0, 2, 0]]
    )
    eight = scale + bytes([128, 0, 255, 129, 127, 130])
    np.testing.assert_array_equal(
        residuals.decode(QUANTIZED, 8, 2, 3, eight), [[0, -64, 63.5], [2, -2, 4]]
    )
    # and the encoder writes exactly that layout
    enc = residuals.encode_quantized(np.array([[1.0, -1.0, 7.0 / 7]]), 4)
    assert enc[4:] == bytes([0x1F, 0x0F])  # codes 15, 1 then 15 (scale 1/7)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: residuals.payload_bytes(6, 1, 2, 2), "unknown residual kind"),
        (lambda: residuals.payload_bytes(True, 1, 2, 2), "unknown residual kind"),
        (lambda: residuals.payload_bytes(LOWRANK, 0, 2, 2), "rank must be at least 1"),
        (
            lambda: residuals.payload_bytes(LOWRANK, 3, 2, 5),
            r"rank 3 is more than min\(rows, cols\) = 2",
        ),
        (lambda: residuals.payload_bytes(QUANTIZED, 3, 2, 2), "bits must be 2, 4 or 8"),
        (lambda: residuals.payload_bytes(QUANTIZED, 4, 0, 2), "rows must be at least 1"),
        (lambda: residuals.payload_bytes(QUANTIZED, 4, 2, 2.0), "cols must be an integer"),
        (lambda: residuals.encode_lowrank(np.ones(4), 1), "2-D tile"),
        (lambda: residuals.encode_lowrank(np.ones((2, 2)), 3), "rank 3 is more than"),
        (lambda: residuals.encode_quantized(np.full((2, 2), np.nan), 4), "finite"),
        (lambda: residuals.encode_quantized(np.ones((2, 2)), 16), "bits must be 2, 4 or 8"),
        (lambda: residuals.decode(QUANTIZED, 4, 2, 2, b"\0" * 9), "has 10 bytes, got 9"),
        (lambda: residuals.decode(LOWRANK, 1, 2, 2, "text"), "a payload is bytes"),
    ],
)
def test_codec_rejects_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- reading tensors ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_get_tensor_is_block_plus_residual(memdb, rng, spec):
    """On 3 x 5 blocks a 7 x 11 tensor has edge tiles of 1 row and 1 column."""
    store = sqlite_tensor.Store(memdb, block_rows=3, block_cols=5, page_blocks=2)
    w = rng.standard_normal((7, 11)).astype(np.float32)
    store.add_model("m", {"w": w, "other": w.copy()})
    entries, added = random_residuals(rng, store, w.shape, [(0, 0), (1, 2), (2, 0), (2, 2)], [spec])
    put_residuals(store, "m", "w", entries)
    want = w + added
    got = store.get_tensor("m", "w")
    if spec[0] in EXACT_KINDS:  # float32 tile + one float32 term each: bit for bit
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for sql in (
        "SELECT tensor_blob('tensors', 'm', 'w')",
        "SELECT data FROM tensors WHERE model = 'm' AND tensor = 'w'",
    ):
        blob = np.frombuffer(memdb.execute(sql).get, np.float32).reshape(w.shape)
        np.testing.assert_array_equal(blob, got)
    # the other tensor (the same blocks, shared) has no residual
    np.testing.assert_array_equal(store.get_tensor("m", "other"), w)


def test_get_tensor_with_a_residual_on_every_tile_of_a_3d_tensor(memdb, rng):
    store = sqlite_tensor.Store(memdb, block_rows=4, block_cols=7, page_blocks=3)
    w = rng.standard_normal((2, 5, 9)).astype(np.float32)  # a 10 x 9 view
    store.add_model("m", {"w": w})
    entries, added = random_residuals(rng, store, (10, 9), all_tiles(store, (10, 9)), SPECS)
    put_residuals(store, "m", "w", entries)
    np.testing.assert_allclose(
        store.get_tensor("m", "w"), w + added.reshape(w.shape), rtol=1e-6, atol=1e-6
    )


# -- inference -------------------------------------------------------------------------------


def dense_model(rng, store, n_in, hidden, n_out, specs, tiles_every=1):
    """dense (out x in) + bias, relu, dense (in x out) + bias: both layouts; residuals on
    every tiles_every-th tile of each weight and on the first bias. Returns (layers,
    effective arrays)."""
    arrays = {
        "w1": (rng.standard_normal((hidden, n_in)) / np.sqrt(n_in)).astype(np.float32),
        "b1": (rng.standard_normal(hidden) * 0.5).astype(np.float32),
        "w2": (rng.standard_normal((hidden, n_out)) / np.sqrt(hidden)).astype(np.float32),
        "b2": (rng.standard_normal((1, n_out)) * 0.5).astype(np.float32),
    }
    layers = [
        {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"},
        {"op": "dense", "weight": "w2", "bias": "b2", "transpose": True},
    ]
    store.add_model("m", arrays, layers=layers)
    effective = {}
    for name, arr in arrays.items():
        shape = arr.shape if arr.ndim == 2 else (arr.shape[0], 1)
        tiles = (
            all_tiles(store, shape)[::tiles_every] if name.startswith("w") or name == "b1" else []
        )
        entries, added = random_residuals(rng, store, shape, tiles, specs)
        if entries:
            put_residuals(store, "m", name, entries)
        effective[name] = arr + added.reshape(arr.shape)
    return layers, effective, arrays


@pytest.mark.parametrize("spec", SPECS + [None], ids=SPEC_IDS + ["mixed"])
@pytest.mark.parametrize("blocks", [(3, 5, 2), (4, 7, 3)], ids=["3x5", "4x7"])
def test_dense_predict_uses_residuals(memdb, rng, spec, blocks):
    r, c, p = blocks
    store = sqlite_tensor.Store(memdb, block_rows=r, block_cols=c, page_blocks=p)
    layers, effective, _ = dense_model(rng, store, 11, 13, 8, SPECS if spec is None else [spec])
    for x in (
        rng.standard_normal(11).astype(np.float32),
        rng.standard_normal((1, 11)).astype(np.float32),
        rng.standard_normal((9, 11)).astype(np.float32),
    ):
        assert_matches(store.predict("m", x), layers, effective, x)
        if x.ndim == 1:  # the SQL path: tensor_predict, one input
            got = memdb.execute("SELECT tensor_predict('tensors', 'm', ?)", (x.tobytes(),)).get
            assert_matches(np.frombuffer(got, np.float32).copy(), layers, effective, x)


@pytest.fixture(scope="module")
def large_model():
    """A model large enough for the kernels' threads (over 2**20 multiply-adds for one
    input) on odd blocks, residuals of every kind on about a third of the tiles."""
    rng = np.random.default_rng(42)
    conn = sqlite_tensor.connect(":memory:")
    store = sqlite_tensor.Store(conn, block_rows=37, block_cols=29, page_blocks=3)
    layers, effective, _ = dense_model(
        rng,
        store,
        1030,
        1100,
        70,
        SPECS + [(LOWRANK, 16), (SPARSE, 200), (SIGN_SPARSE, 100)],
        tiles_every=3,
    )
    yield store, layers, effective
    conn.close()


@pytest.mark.parametrize("n", [1, 2])
def test_threaded_dense_layers_with_residuals(threads, large_model, n):
    store, layers, effective = large_model
    threads.set_threads(n)
    rng = np.random.default_rng(n)
    # 300 rows: the low-rank products go LOWRANK_ROWS (256) rows at a time
    for x in (
        rng.standard_normal(1030).astype(np.float32),
        rng.standard_normal((3, 1030)).astype(np.float32),
        rng.standard_normal((300, 1030)).astype(np.float32),
    ):
        assert_matches(store.predict("m", x), layers, effective, x)


def test_threads_from_sql_agree(threads, large_model):
    store, layers, effective = large_model
    x = np.random.default_rng(3).standard_normal(1030).astype(np.float32)
    outs = []
    for n in (1, 2):
        assert store.conn.execute("SELECT tensor_threads(?)", (n,)).get == n
        got = store.conn.execute("SELECT tensor_predict('tensors', 'm', ?)", (x.tobytes(),)).get
        outs.append(np.frombuffer(got, np.float32).copy())
        assert_matches(outs[-1], layers, effective, x)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_predict_batch_table_uses_residuals(memdb, rng):
    store = sqlite_tensor.Store(memdb, block_rows=3, block_cols=5, page_blocks=2)
    layers, effective, _ = dense_model(rng, store, 11, 13, 8, SPECS)
    x = rng.standard_normal((20, 11)).astype(np.float32)
    memdb.execute("CREATE TEMP TABLE inputs(id INTEGER PRIMARY KEY, f BLOB)")
    memdb.executemany(
        "INSERT INTO inputs VALUES (?, ?)", [(i, r.tobytes()) for i, r in enumerate(x)]
    )
    rows = memdb.execute(
        "SELECT id, output FROM tensor_predict_batch('tensors', 'm',"
        " 'SELECT id, f FROM inputs ORDER BY id', 7)"
    ).fetchall()
    got = np.stack([np.frombuffer(o, np.float32) for _, o in rows])
    assert_matches(got, layers, effective, x)


@pytest.mark.parametrize("spec", SPECS + [None], ids=SPEC_IDS + ["mixed"])
def test_embedding_and_bags_use_residuals(memdb, rng, spec):
    store = sqlite_tensor.Store(memdb, block_rows=4, block_cols=5, page_blocks=2)
    e = rng.standard_normal((13, 11)).astype(np.float32)  # edge tiles both ways
    store.add_model("emb", {"e": e}, layers=[{"op": "embedding", "weight": "e"}])
    store.add_model(
        "bag",
        {"e": e},
        layers=[
            {"op": "embedding_bag", "weight": "e", "mode": "sum"},
            {"op": "activation", "activation": "tanh"},
        ],
    )
    eff = {}
    for model in ("emb", "bag"):
        entries, added = random_residuals(
            rng, store, e.shape, all_tiles(store, e.shape)[1:], SPECS if spec is None else [spec]
        )
        put_residuals(store, model, "e", entries)
        eff[model] = {"e": e + added}
    ids = np.arange(13)
    layers_emb = store.layers("emb")
    assert_matches(store.predict("emb", ids), layers_emb, eff["emb"], ids)
    assert_matches(store.predict("emb", 12), layers_emb, eff["emb"], 12)
    bags = [np.array([0, 5, 12]), np.array([3]), np.array([7, 7, 8, 1])]
    assert_matches(store.predict("bag", bags), store.layers("bag"), eff["bag"], bags)
    got = memdb.execute("SELECT tensor_predict('tensors', 'emb', 6)").get
    assert_matches(np.frombuffer(got, np.float32).copy(), layers_emb, eff["emb"], 6)


def test_residual_pages_are_not_served_stale(memdb, rng):
    store = sqlite_tensor.Store(memdb, block_rows=3, block_cols=5, page_blocks=2)
    layers, effective, arrays = dense_model(rng, store, 11, 13, 8, [(QUANTIZED, 8)])
    x = rng.standard_normal(11).astype(np.float32)
    assert_matches(store.predict("m", x), layers, effective, x)  # pages now cached
    # rewrite the residual page of w1 in place with new payloads of the same shape
    tid = tensor_id(store, "m", "w1")
    page = memdb.execute(
        "SELECT DISTINCT page_id FROM tensors_residuals WHERE tensor_id = ?", (tid,)
    ).get
    entries, added = random_residuals(
        rng, store, (13, 11), all_tiles(store, (13, 11)), [(QUANTIZED, 8)], scale=1.0
    )
    data = pages.build_page([np.frombuffer(p, np.uint8) for (_, _, p) in entries.values()])
    with writing(memdb):  # plain SQL: the pool notices the change by itself
        pages.update_page(memdb, Tables(store.name), page, data, len(entries))
    effective["w1"] = arrays["w1"] + added
    w1 = memdb.execute("SELECT tensor_blob('tensors', 'm', 'w1')").get
    np.testing.assert_array_equal(np.frombuffer(w1, np.float32).reshape(13, 11), effective["w1"])
    assert_matches(store.predict("m", x), layers, effective, x)


# -- reports ---------------------------------------------------------------------------------


def test_reports_count_residuals(memdb, rng):
    store = sqlite_tensor.Store(memdb, block_rows=3, block_cols=5, page_blocks=2)
    w = rng.standard_normal((7, 11)).astype(np.float32)
    store.add_model("a", {"w": w})
    store.add_model("b", {"w": w})  # shares every block with a
    before = {r["model"]: r for r in store.model_stats()}
    stats0 = store.stats()
    entries, _ = random_residuals(
        rng,
        store,
        w.shape,
        [(0, 0), (2, 2), (1, 1)],
        [(LOWRANK, 2), (QUANTIZED, 4), (QUANTIZED, 2)],
    )
    page = put_residuals(store, "b", "w", entries)
    nbytes = sum(len(p) for (_, _, p) in entries.values())
    page_len = memdb.execute("SELECT length(data) FROM tensors_pages WHERE id = ?", (page,)).get
    stats = store.stats()
    assert stats["physical_bytes"] == stats0["physical_bytes"] + nbytes
    assert stats["pages"] == stats0["pages"] + 1
    assert stats["page_bytes"] == stats0["page_bytes"] + page_len
    assert stats["distinct_blocks"] == stats0["distinct_blocks"]
    assert stats["dedup_ratio"] == pytest.approx(stats["logical_bytes"] / stats["physical_bytes"])
    after = {r["model"]: r for r in store.model_stats()}
    assert after["a"] == before["a"]
    assert after["b"]["physical_bytes"] == before["b"]["physical_bytes"] + nbytes
    assert after["b"]["private_bytes"] == before["b"]["private_bytes"] + nbytes == nbytes
    assert after["b"]["pages"] == before["b"]["pages"] + 1
    assert after["b"]["blocks"] == before["b"]["blocks"]
    rows = {r["page_id"]: r for r in store.page_stats()}
    assert rows[page] == {
        "page_id": page,
        "bytes": page_len,
        "blocks": 3,
        "models": 1,
        "tensors": 1,
    }
    assert all(r["models"] == 2 for p, r in rows.items() if p != page)


# -- damage -----------------------------------------------------------------------------------


@pytest.fixture
def damaged(memdb, rng):
    """A dense model (out x in) on 3 x 5 blocks; damage() writes one residuals row."""
    store = sqlite_tensor.Store(memdb, block_rows=3, block_cols=5, page_blocks=2)
    w = rng.standard_normal((7, 11)).astype(np.float32)
    store.add_model(
        "m", {"w": w, "h": w.astype(np.float16)}, layers=[{"op": "dense", "weight": "w"}]
    )
    store.add_model("h", {"h": w.astype(np.float16)}, layers=[{"op": "dense", "weight": "h"}])
    good = residuals.encode_quantized(rng.standard_normal((3, 5)), 4)

    def damage(row, payload=good, tensor=("m", "w")):
        put_residuals(store, *tensor, {(0, 0): (QUANTIZED, 4, payload)}, rows=[row])

    return store, damage


TILE = r"tensor store 'tensors' is corrupt: the residual of tile "
BAD_ROWS = [
    (
        (0, 0, 7, 4, None, 0, 13),
        r"\(0, 0\) of tensor 'w' \(id \d+\) has kind 7; kinds are 1 "
        r"\(low-rank\), 2 \(quantized\), 3 \(sign\), 4 \(sparse\) and 5 \(sign\+sparse\)",
    ),
    (
        (0, 0, QUANTIZED, 4, None, 0, 99),
        r"\(0, 0\) of tensor 'w' \(id \d+\) records 99 bytes; its "
        r"kind and parameter make 21 for a 3 x 5 tile",
    ),
    (
        (0, 0, QUANTIZED, 3, None, 0, 21),
        r"\(0, 0\) of tensor 'w' \(id \d+\) has 3 bits; quantized "
        r"residuals take 2, 4 or 8",
    ),
    (
        (0, 0, LOWRANK, 4, None, 0, 128),
        r"\(0, 0\) of tensor 'w' \(id \d+\) has rank 4; a 3 x 5 "
        r"tile takes ranks 1 to 3",
    ),
    (
        (2, 2, LOWRANK, 2, None, 0, 16),
        r"\(2, 2\) of tensor 'w' \(id \d+\) has rank 2; a 1 x 1 "
        r"tile takes ranks 1 to 1",
    ),
    (
        (5, 0, QUANTIZED, 4, None, 0, 21),
        r"\(5, 0\) of tensor 'w' \(id \d+\) names a tile outside "
        r"the tensor's grid",
    ),
    (
        (0, -1, QUANTIZED, 4, None, 0, 21),
        r"\(0, -1\) of tensor 'w' \(id \d+\) names a tile "
        r"outside the tensor's grid",
    ),
]


@pytest.mark.parametrize("row, message", BAD_ROWS)
def test_damaged_residual_rows_are_clear_errors(damaged, row, message):
    store, damage = damaged
    damage(row)
    for run in (
        lambda: store.predict("m", np.ones(11, np.float32)),
        lambda: store.predict("m", np.ones((5, 11), np.float32)),
        lambda: store.get_tensor("m", "w"),
        lambda: store.conn.execute("SELECT data FROM tensors WHERE tensor = 'w'").get,
    ):
        with pytest.raises(apsw.CorruptError, match=TILE + message):
            run()
    # tensor_predict reports a damaged plan as corruption too, as every other path does
    with pytest.raises(apsw.CorruptError, match="tensor_predict: " + TILE + message):
        store.conn.execute("SELECT tensor_predict('tensors', 'm', zeroblob(44))").get
    # the model's other tensor and other models still read
    assert store.get_tensor("h", "h").shape == (7, 11)


def test_missing_residual_page_names_store_tensor_and_tile(damaged):
    store, damage = damaged
    damage((1, 2, QUANTIZED, 4, 9999, 0, 3 * 4 + 3 * 1))  # tile (1, 2): 3 x 1
    with pytest.raises(
        apsw.CorruptError,
        match=r"tensor store 'tensors' is corrupt: the residual "
        r"of tile \(1, 2\) of tensor 'w' \(id \d+\) names slot 0 of page 9999, a "
        r"page that is missing",
    ):
        store.predict("m", np.ones(11, np.float32))
    with pytest.raises(apsw.CorruptError, match="page 9999 of tensors_pages is corrupt"):
        store.get_tensor("m", "w")


def test_residual_on_a_float16_tensor_is_an_error(damaged):
    store, damage = damaged
    damage((0, 0, QUANTIZED, 4, None, 0, 21), tensor=("h", "h"))
    with pytest.raises(
        apsw.CorruptError,
        match=r"tensor 'h' \(id \d+\) is not float32 but has a "
        r"residual at tile \(0, 0\); residuals apply to float32 tensors only",
    ):
        store.predict("h", np.ones(11, np.float32))
    with pytest.raises(
        apsw.CorruptError, match=r"tensor 'h' \(id \d+\) is float16 but has a residual"
    ):
        store.get_tensor("h", "h")


@pytest.mark.parametrize("how", ["slot", "short", "header", "text"])
def test_damaged_residual_page_never_crashes(damaged, how):
    store, damage = damaged
    conn = store.conn
    if how == "slot":  # a slot the page does not have
        damage((0, 0, QUANTIZED, 4, None, 3, 21))
    else:
        damage((0, 0, QUANTIZED, 4, None, 0, 21))
        store.predict("m", np.ones(11, np.float32))  # the sound page now in the pool
        page = conn.execute("SELECT max(page_id) FROM tensors_residuals").get
        data = bytearray(conn.execute("SELECT data FROM tensors_pages WHERE id = ?", (page,)).get)
        data = {"short": data[:70], "header": b"XXXX" + data[4:], "text": "not a page"}[how]
        with writing(conn):  # plain SQL: the pool notices it by itself
            conn.execute("UPDATE tensors_pages SET data = ? WHERE id = ?", (data, page))
    for read in (
        lambda: store.predict("m", np.ones(11, np.float32)),
        lambda: store.predict("m", np.ones((4, 11), np.float32)),
        lambda: store.get_tensor("m", "w"),
    ):
        with pytest.raises(
            (apsw.CorruptError, sqlite_tensor.TensorStoreError, apsw.SQLError, ValueError)
        ) as info:
            read()
        assert "page" in str(info.value)


# -- stores from before residuals -----------------------------------------------------------------


def test_store_without_residual_tables_still_works(db_path, rng):
    """A store created before residuals has neither table: the engine reads it as a store
    without residuals (predict, tensor_blob, reports), never an error."""
    w = rng.standard_normal((7, 11)).astype(np.float32)
    layers = [{"op": "dense", "weight": "w", "activation": "tanh"}]
    with sqlite_tensor.Store(db_path, block_rows=3, block_cols=5, page_blocks=2) as store:
        store.add_model("m", {"w": w}, layers=layers)
        stats = store.stats()
        model_stats = store.model_stats()
        page_stats = store.page_stats()
        with writing(store.conn):
            store.conn.execute("DROP TABLE tensors_residuals")
            store.conn.execute("DROP TABLE tensors_dedup")
    # a read-only connection: nothing can add the tables back
    with closing(apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)) as conn:
        sqlite_tensor.load(conn)
        assert (
            conn.execute(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%residuals'"
                " OR name LIKE '%dedup'"
            ).get
            == 0
        )
        store = sqlite_tensor.Store(conn)
        x = rng.standard_normal((3, 11)).astype(np.float32)
        assert_matches(store.predict("m", x), layers, {"w": w}, x)
        assert_matches(store.predict("m", x[0]), layers, {"w": w}, x[0])
        got = conn.execute("SELECT tensor_predict('tensors', 'm', ?)", (x[0].tobytes(),)).get
        assert_matches(np.frombuffer(got, np.float32).copy(), layers, {"w": w}, x[0])
        np.testing.assert_array_equal(store.get_tensor("m", "w"), w)
        assert store.stats() == stats
        assert store.model_stats() == model_stats
        assert store.page_stats() == page_stats


def test_new_stores_have_both_tables_declared_shadow(memdb):
    memdb.execute("CREATE VIRTUAL TABLE s USING tensor_store")
    names = {n for (n,) in memdb.execute("SELECT name FROM sqlite_schema")}
    assert {"s_residuals", "s_dedup", "s_residuals_by_page"} <= names
    cols = [r[1] for r in memdb.execute("PRAGMA table_info(s_residuals)")]
    assert cols == [
        "tensor_id",
        "block_row",
        "block_col",
        "kind",
        "param",
        "page_id",
        "slot",
        "nbytes",
    ]
    cols = [r[1] for r in memdb.execute("PRAGMA table_info(s_dedup)")]
    assert cols == ["tensor_id", "block_row", "block_col", "source_hash", "outcome"]
    memdb.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    with pytest.raises(apsw.SQLError, match="s_residuals may not be modified"):
        memdb.execute("DELETE FROM s_residuals")
    with pytest.raises(apsw.SQLError, match="s_dedup may not be modified"):
        memdb.execute("DELETE FROM s_dedup")
    memdb.execute("DROP TABLE s")
    assert memdb.execute("SELECT count(*) FROM sqlite_schema").get == 0
