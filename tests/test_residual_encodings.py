"""The sign, sparse and sign+sparse residuals (issue 14), and the interface a decision uses:
errors() and ladder() for every kind.

Codec: layouts by hand, round trips (hypothesis) against errors(), the optimal scale, bad
arguments. Engine: a sparse part's indices are untrusted (they say where to write), so a
damaged one is SQLITE_CORRUPT / CorruptStoreError naming store, tensor and tile on every
read path, never a wild write; a random fuzz of payload bytes gives an error or the numbers
decode() gives, nothing else (its long run is one command:
    ST_RESIDUAL_FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_residual_encodings.py -k fuzz
). Dedup's writer stores the new kinds as it stores the others.
"""

from __future__ import annotations

import os
import struct

import apsw
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_model import assert_matches
from test_residual_kernels import put_residuals, random_residuals, writing

import sqlite_tensor
from sqlite_tensor import _engine, residuals
from sqlite_tensor.dedup import encoding, writes
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


def f16(x) -> bytes:
    return np.asarray(x, "<f2").tobytes()


def f32(x) -> bytes:
    return np.asarray(x, "<f4").tobytes()


# -- layouts ----------------------------------------------------------------------------------


def test_sign_layout_by_hand():
    """Scales (float32), then one bit per element, element j at bit j % 8 of byte j // 8,
    1 is +."""
    # 2 x 10, one scale per row: row 0 signs + - + + - - - - + -, row 1 all -
    bits0 = bytes([0b00001101, 0b01])
    row = f32([0.5, 2.0]) + bits0 + bytes([0, 0])
    np.testing.assert_array_equal(
        residuals.decode(SIGN, SIGN_ROW, 2, 10, row),
        [[0.5, -0.5, 0.5, 0.5, -0.5, -0.5, -0.5, -0.5, 0.5, -0.5], [-2.0] * 10],
    )
    tile = f32([0.25]) + bits0 + bytes([0xFF, 0x03])
    np.testing.assert_array_equal(
        residuals.decode(SIGN, SIGN_TILE, 2, 10, tile),
        [[0.25, -0.25, 0.25, 0.25, -0.25, -0.25, -0.25, -0.25, 0.25, -0.25], [0.25] * 10],
    )
    # and the encoder writes that layout, with mean |d| as the scale
    d = np.array([[1.0, -3.0, 0.0], [-2.0, -2.0, 4.0]])
    enc = residuals.encode_sign(d, SIGN_ROW)
    assert enc == f32([4 / 3, 8 / 3]) + bytes([0b101, 0b100])
    assert residuals.encode_sign(d, SIGN_TILE) == f32([2.0]) + bytes([0b101, 0b100])


def test_sparse_layout_by_hand():
    """Rising uint16 indices i * cols + j, then float16 values."""
    payload = struct.pack("<3H", 1, 10, 11) + f16([0.5, -2.0, 3.0])
    want = np.zeros((2, 8))
    want[0, 1], want[1, 2], want[1, 3] = 0.5, -2.0, 3.0
    np.testing.assert_array_equal(residuals.decode(SPARSE, 3, 2, 8, payload), want)
    d = np.zeros((2, 8))
    d[0, 1], d[1, 0], d[1, 5] = 9.0, -7.0, 8.0
    assert residuals.encode_sparse(d, 2) == struct.pack("<2H", 1, 13) + f16([9.0, 8.0])
    # ties: the first in tile order
    assert residuals.encode_sparse(np.ones((2, 2)), 1)[:2] == struct.pack("<H", 0)


def test_sign_sparse_layout_by_hand():
    """A per-row sign payload, zero bytes to a multiple of 4, then a sparse payload."""
    # 1 x 5: sign part 4 + 1 bytes, padded to 8; then 1 index and 1 value
    d = np.array([[1.0, -1.0, 10.0, 3.0, -1.0]])
    enc = residuals.encode_sign_sparse(d, 1)
    # the scale is the mean over the 4 others (1.5); the kept entry stores 10 - 1.5
    assert enc == f32([1.5]) + bytes([0b01101]) + bytes(3) + struct.pack("<H", 2) + f16([8.5])
    assert residuals.payload_bytes(SIGN_SPARSE, 1, 1, 5) == len(enc) == 12
    np.testing.assert_array_equal(
        residuals.decode(SIGN_SPARSE, 1, 1, 5, enc), [[1.5, -1.5, 10.0, 1.5, -1.5]]
    )


def test_sparse_indices_widen_past_65536_elements():
    rows, cols = 300, 300  # 90000 elements: uint32 indices
    assert residuals.payload_bytes(SPARSE, 5, rows, cols) == 5 * 6
    assert residuals.payload_bytes(SPARSE, 5, 256, 256) == 5 * 4
    d = np.zeros((rows, cols))
    d[299, 299] = 1.5
    d[0, 70000 % cols] = -2.0
    enc = residuals.encode_sparse(d, 2)
    assert enc[:8] == struct.pack("<2I", 70000 % cols, 89999)
    np.testing.assert_array_equal(residuals.decode(SPARSE, 2, rows, cols, enc), d)


# -- round trips against errors() --------------------------------------------------------------


@SETTINGS
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
    zero_row=st.booleans(),
    data=st.data(),
)
def test_every_encoding_round_trips_to_what_errors_says(rows, cols, seed, zero_row, data):
    rng = np.random.default_rng(seed)
    # rows of very different scales, as fine-tune deltas have (embeddings)
    d = rng.standard_normal((3, rows, cols)) * rng.uniform(1e-3, 1, (3, rows, 1))
    if zero_row:
        d[:, rng.integers(rows)] = 0
    steps, table = residuals.ladder_errors(d)
    specs = [(k, p) for k, p, _ in steps]
    # every kind and param, whether or not the ladder offers it for this extent
    specs += [(SIGN, SIGN_TILE), (SIGN, SIGN_ROW), (QUANTIZED, 2), (LOWRANK, 1)]
    cap = residuals.sparse_cap(rows, cols)
    specs += [
        (SPARSE, data.draw(st.integers(1, cap))),
        (SIGN_SPARSE, data.draw(st.integers(1, cap))),
    ]
    for kind, param in specs:
        want = residuals.errors(kind, param, d)
        for i in range(3):
            payload = residuals.encode(kind, param, d[i])
            assert len(payload) == residuals.payload_bytes(kind, param, rows, cols)
            got = residuals.decode(kind, param, rows, cols, payload)
            assert got.dtype == np.float32 and got.shape == (rows, cols)
            err = np.linalg.norm(d[i] - got.astype(np.float64))
            # float32 storage (and float16 values) round what errors() computes exactly
            assert err == pytest.approx(want[i], rel=2e-3, abs=1e-6 * max(1, np.abs(d[i]).max()))
    for (kind, param, _), row in zip(steps, table):
        np.testing.assert_allclose(row, residuals.errors(kind, param, d), rtol=1e-12)


def test_sign_scale_minimises_the_error(rng):
    d = rng.standard_normal((5, 8, 9)) * rng.uniform(0.01, 1, (5, 8, 1))
    for scales in (SIGN_TILE, SIGN_ROW):
        best = residuals.errors(SIGN, scales, d)
        for i in range(5):
            payload = bytearray(residuals.encode(SIGN, scales, d[i]))
            n = 1 if scales == SIGN_TILE else 8
            s = np.frombuffer(bytes(payload[: n * 4]), "<f4")
            for factor in (0.9, 1.1):
                payload[: n * 4] = (s * factor).astype("<f4").tobytes()
                worse = residuals.decode(SIGN, scales, 8, 9, bytes(payload))
                assert np.linalg.norm(d[i] - worse) > best[i]
    # a row scale is never worse than one for the tile
    assert (
        residuals.errors(SIGN, SIGN_ROW, d) <= residuals.errors(SIGN, SIGN_TILE, d) + 1e-12
    ).all()


def test_sparse_keeps_the_largest_and_sign_sparse_gets_them_right(rng):
    d = rng.standard_normal((4, 16, 16)) * 0.01
    spikes = rng.choice(256, size=(4, 5), replace=False)
    for i in range(4):
        d[i].reshape(-1)[spikes[i]] = rng.choice([-1, 1], 5) * rng.uniform(2, 3, 5)
    # five spikes: a 5-entry sparse residual leaves only the small entries
    assert (residuals.errors(SPARSE, 5, d) < 0.01 * 16 * 1.2).all()
    for i in range(4):
        got = residuals.decode(SIGN_SPARSE, 5, 16, 16, residuals.encode(SIGN_SPARSE, 5, d[i]))
        flat = got.reshape(-1)
        np.testing.assert_allclose(flat[spikes[i]], d[i].reshape(-1)[spikes[i]], rtol=1e-3)
    # on such tiles sign+sparse beats sign alone, sign alone is far off
    assert (residuals.errors(SIGN_SPARSE, 5, d) < residuals.errors(SIGN, SIGN_ROW, d) / 10).all()


def test_ladder_is_cheapest_first_and_complete():
    for rows, cols in [(64, 64), (3, 5), (37, 29), (1, 40), (300, 300)]:
        steps = residuals.ladder(rows, cols)
        nbytes = [n for _, _, n in steps]
        assert nbytes == sorted(nbytes)
        assert all(n < rows * cols * 4 for n in nbytes)
        for kind, param, n in steps:
            assert n == residuals.payload_bytes(kind, param, rows, cols)
        kinds = {(k, p) for k, p, _ in steps}
        assert {(SIGN, SIGN_TILE), (SIGN, SIGN_ROW), (QUANTIZED, 2)} <= kinds or rows * cols < 16
    steps = residuals.ladder(64, 64)
    assert {k for k, _, _ in steps} == set(residuals.KINDS)
    assert [p for k, p, _ in steps if k == QUANTIZED] == list(residuals.BITS)
    assert [p for k, p, _ in steps if k == LOWRANK] == [1, 2, 4, 8, 16]  # rank 32 is 16 KiB
    assert residuals.ladder(1, 1) == []  # nothing is smaller than one float


def test_errors_is_inf_where_float16_cannot_hold_a_value():
    d = np.zeros((2, 2, 2))
    d[0, 0, 0] = 1e6
    d[1, 1, 1] = 3.0
    e = residuals.errors(SPARSE, 1, d)
    assert np.isinf(e[0]) and e[1] == 0
    with pytest.raises(ValueError, match="float16: 1e\\+06 is more than 65504"):
        residuals.encode_sparse(d[0], 1)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: residuals.payload_bytes(SIGN, 3, 2, 2),
            r"sign scales must be 1 \(tile\) or 2 \(row\), got 3",
        ),
        (lambda: residuals.payload_bytes(SIGN, True, 2, 2), "sign scales must be"),
        (lambda: residuals.payload_bytes(SPARSE, 0, 2, 2), "k must be at least 1"),
        (lambda: residuals.payload_bytes(SPARSE, 5, 4, 4), "k 5 is more than 4, the most entries"),
        (lambda: residuals.payload_bytes(SIGN_SPARSE, 2, 1, 1), "k 2 is more than 1"),
        (lambda: residuals.payload_bytes(6, 1, 2, 2), r"kinds are 1 \(low-rank\), .* and 5"),
        (lambda: residuals.encode(7, 1, np.ones((2, 2))), "unknown residual kind 7"),
        (lambda: residuals.encode_sign(np.full((2, 2), np.inf), 1), "finite"),
        (
            lambda: residuals.decode(SPARSE, 2, 2, 4, struct.pack("<2H", 1, 1) + f16([1, 2])),
            "indices must rise strictly and stay below 8",
        ),
        (
            lambda: residuals.decode(SPARSE, 1, 2, 2, struct.pack("<H", 4) + f16([1])),
            "stay below 4",
        ),
        (lambda: residuals.decode(SIGN, 2, 2, 2, b"\0" * 9), "has 10 bytes, got 9"),
        (lambda: residuals.errors(SIGN, 1, np.ones((2, 2))), r"stack of tiles \(n, rows, cols\)"),
        (lambda: residuals.errors(SPARSE, 9, np.ones((1, 2, 2))), "k 9 is more than 1"),
        (lambda: residuals.ladder(0, 3), "rows must be at least 1"),
        (lambda: _engine.residual_sparse_cap(0, 3), "at least one row"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- the engine refuses a damaged sparse part -------------------------------------------------------


@pytest.fixture
def store(memdb):
    """A dense model (out x in, 7 x 11 on 3 x 5 tiles), an embedding on the same tensor."""
    store = sqlite_tensor.Store(memdb, block_rows=3, block_cols=5, page_blocks=2)
    w = np.random.default_rng(1).standard_normal((7, 11)).astype(np.float32)
    store.add_model("m", {"w": w}, layers=[{"op": "dense", "weight": "w"}])
    store.add_model("e", {"w": w}, layers=[{"op": "embedding", "weight": "w"}])
    return store, w


def reads(store):
    """Every path that applies a residual: dense batch 1 and batch 3, the SQL function,
    embedding rows one at a time and a tile's worth at once, the tensor read, the data
    column."""
    conn = store.conn
    return [
        lambda: store.predict("m", np.ones(11, np.float32)),
        lambda: store.predict("m", np.ones((3, 11), np.float32)),
        lambda: (
            conn.execute(
                "SELECT tensor_predict('tensors', 'm', ?)", (np.ones(11, np.float32).tobytes(),)
            ).get
        ),
        lambda: store.predict("e", 1),
        lambda: store.predict("e", np.arange(7)),
        lambda: store.get_tensor("m", "w"),
        lambda: conn.execute("SELECT data FROM tensors WHERE model = 'm' AND tensor = 'w'").get,
    ]


BAD_SPARSE = [
    (
        "out of the tile",
        [2, 15],
        "has index 15 at entry 1; a 3 x 5 tile's indices rise from 0 to 14",
    ),
    ("repeated", [4, 4], "has index 4 at entry 1; a 3 x 5 tile's indices rise"),
    ("falling", [9, 3], "has index 3 at entry 1"),
    ("far out", [65535, 1], "has index 65535 at entry 0"),
]


@pytest.mark.parametrize("kind", [SPARSE, SIGN_SPARSE], ids=["sparse", "sign+sparse"])
@pytest.mark.parametrize("what, indices, message", BAD_SPARSE, ids=[b[0] for b in BAD_SPARSE])
def test_damaged_sparse_indices_are_corruption_on_every_read(store, kind, what, indices, message):
    store, w = store
    head = b""
    if kind == SIGN_SPARSE:
        head = residuals.encode(kind, 2, np.ones((3, 5)))[:16]  # the sign part, padded
    payload = head + struct.pack("<2H", *indices) + f16([1.0, 2.0])
    assert len(payload) == residuals.payload_bytes(kind, 2, 3, 5)
    for model in ("m", "e"):
        put_residuals(store, model, "w", {(0, 0): (kind, 2, payload)})
    for read in reads(store):
        with pytest.raises(apsw.CorruptError) as info:
            read()
        text = str(info.value)
        assert (
            "tensor store 'tensors' is corrupt: the residual of tile (0, 0) of tensor 'w'" in text
        )
        assert message in text
    # verify() names it too
    assert any("residual" in p and "(0, 0)" in p for p in store.verify())


def test_python_reads_raise_corrupt_store_error(store):
    store, w = store
    payload = struct.pack("<2H", 2, 99) + f16([1.0, 2.0])
    put_residuals(store, "m", "w", {(0, 0): (SPARSE, 2, payload)})
    for read in (
        lambda: store.get_tensor("m", "w"),
        lambda: store.predict("m", np.ones(11, np.float32)),
    ):
        with pytest.raises(sqlite_tensor.CorruptStoreError, match=r"tile \(0, 0\) of tensor 'w'"):
            read()


@pytest.mark.parametrize(
    "row, message",
    [
        (
            (0, 0, SIGN, 3, None, 0, 19),
            r"has scales 3; sign residuals take 1 \(one per tile\) or 2 \(one per row\)",
        ),
        ((0, 0, SIGN, 0, None, 0, 19), "has scales 0"),
        ((0, 0, SPARSE, 4, None, 0, 16), "keeps 4 entries; a 3 x 5 tile keeps 1 to 3"),
        ((2, 2, SIGN_SPARSE, 2, None, 0, 16), "keeps 2 entries; a 1 x 1 tile keeps 1 to 1"),
        ((0, 0, SPARSE, 0, None, 0, 0), "keeps 0 entries"),
        (
            (0, 0, SIGN, SIGN_ROW, None, 0, 19),
            "records 19 bytes; its kind and parameter make 15 for a 3 x 5 tile",
        ),
        ((0, 0, SIGN_SPARSE, 1, None, 0, 19), "records 19 bytes; its kind and parameter make 20"),
    ],
)
def test_damaged_rows_of_the_new_kinds(store, row, message):
    store, w = store
    put_residuals(store, "m", "w", {(0, 0): (SPARSE, 1, b"\0" * 4)}, rows=[row])
    for read in reads(store)[:3] + reads(store)[5:]:
        with pytest.raises(
            apsw.CorruptError,
            match=r"the residual of tile \(\d, \d\) of tensor 'w' \(id \d+\) " + message,
        ):
            read()


seen: set[bool] = set()  # the fuzz met both outcomes (checked by the test after it)


@settings(
    max_examples=int(os.environ.get("ST_RESIDUAL_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from([SPARSE, SIGN_SPARSE, SIGN]),
    noise=st.binary(min_size=40, max_size=40),
)
def test_fuzz_random_payload_bytes_give_an_error_or_the_decoded_numbers(store, kind, noise):
    """Any bytes in a payload of the right length: every read either refuses them as
    corruption or computes exactly what decode() makes of them."""
    store, w = store
    param = {SPARSE: 3, SIGN_SPARSE: 3, SIGN: SIGN_ROW}[kind]
    n = residuals.payload_bytes(kind, param, 3, 5)
    raw = bytearray(noise[:n])
    # keep the floats finite-ish: NaN or inf scales are numbers, not the point here
    if kind != SPARSE:
        raw[:12] = f32(np.frombuffer(noise[:12], "<u4") % 1000 / 100.0)
    if kind != SIGN:
        # indices of 0..15 (15 is past the tile): about one draw in ten is a valid set
        at = n - 12
        raw[at : at + 6] = struct.pack("<3H", *(np.frombuffer(noise[at : at + 6], "<u2") % 16))
        raw[n - 6 :] = f16(np.frombuffer(noise[n - 6 : n], "<u2") % 1000 / 100.0)
    payload = bytes(raw)
    with writing(store.conn):  # hypothesis reuses the store
        store.conn.execute("DELETE FROM tensors_residuals")
    put_residuals(store, "m", "w", {(0, 0): (kind, param, payload)})
    try:
        added = residuals.decode(kind, param, 3, 5, payload)
    except ValueError:
        added = None
    want = w.copy()
    if added is not None:
        want[:3, :5] += added
    seen.add(added is None)
    x = np.ones((2, 11), np.float32)
    for read, expect in (
        (lambda: store.get_tensor("m", "w"), lambda: want),
        (lambda: store.predict("m", x), lambda: x @ want.T),
    ):
        if added is None:
            with pytest.raises(apsw.CorruptError, match=r"residual of tile \(0, 0\) of tensor 'w'"):
                read()
        else:
            np.testing.assert_allclose(read(), expect(), rtol=1e-5, atol=1e-5)


def test_the_fuzz_met_both_outcomes():
    if not seen:  # the fuzz did not run in this process (deselected)
        pytest.skip("run with test_fuzz_random_payload_bytes_give_an_error_or_the_decoded_numbers")
    assert seen == {True, False}


# -- dedup's writer stores them ------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [(SIGN, SIGN_TILE), (SIGN, SIGN_ROW), (SPARSE, 3), (SIGN_SPARSE, 2)],
    ids=["sign-tile", "sign-row", "sparse", "sign+sparse"],
)
def test_dedup_writes_store_the_new_kinds(memdb, rng, spec):
    """writes.apply with an Outcome of the new kind, as a dedup run makes them: the model
    then reads as shared block + decoded residual in every path, verify() is clean, and
    repacking and freeing keep it so."""
    store = sqlite_tensor.Store(memdb, block_rows=3, block_cols=5, page_blocks=2)
    a = rng.standard_normal((7, 11)).astype(np.float32)
    b = (a + rng.standard_normal(a.shape) * 0.01).astype(np.float32)
    layers = [{"op": "dense", "weight": "w", "activation": "tanh"}]
    store.add_model("a", {"w": a}, layers=layers)
    store.add_model("b", {"w": b}, layers=layers)
    t = Tables(store.name)
    rows = memdb.execute(
        f"SELECT tt.model_id, mp.tensor_id, mp.block_row, mp.block_col, mp.block_id, bl.hash"
        f" FROM {t.map} mp JOIN {t.tensors} tt ON tt.id = mp.tensor_id"
        f" JOIN {t.blocks} bl ON bl.id = mp.block_id ORDER BY tt.model_id"
    ).fetchall()
    ref = {(bi, bj): bid for mid, _, bi, bj, bid, _ in rows if mid == rows[0][0]}
    want = a.copy()
    batch = []
    kind, param = spec
    for mid, tid, bi, bj, bid, digest in rows:
        if mid == rows[0][0]:
            continue
        r0, c0 = bi * 3, bj * 5
        tb, ta = b[r0 : r0 + 3, c0 : c0 + 5], a[r0 : r0 + 3, c0 : c0 + 5]
        d = tb.astype(np.float64) - ta
        p = min(param, residuals.sparse_cap(*d.shape)) if kind in (SPARSE, SIGN_SPARSE) else param
        payload = residuals.encode(kind, p, d)
        outcome = encoding.Outcome(encoding.RESIDUAL, 0.0, kind, p, payload)
        batch.append(writes.Target(bid, [(tid, bi, bj)], digest, tb.nbytes, ref[(bi, bj)], outcome))
        want[r0 : r0 + 3, c0 : c0 + 5] = ta + residuals.decode(kind, p, *d.shape, payload)
    with store.writer() as w:
        writes.apply(w, batch)
        writes.repack_residuals(w, w.require_model("b"))
        writes.free_dead_blocks(w)
    assert store.verify() == []
    np.testing.assert_allclose(store.get_tensor("b", "w"), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(store.get_tensor("a", "w"), a)
    x = rng.standard_normal((4, 11)).astype(np.float32)
    assert_matches(store.predict("b", x), layers, {"w": want}, x)
    assert_matches(store.predict("b", x[0]), layers, {"w": want}, x[0])
    # the residuals replaced b's blocks: fewer bytes than two copies
    assert store.stats()["physical_bytes"] < 2 * a.nbytes


def test_embedding_rows_with_uint32_indices(memdb, rng):
    """A tile of over 65536 elements: its sparse indices are uint32, the row path bisects
    them."""
    store = sqlite_tensor.Store(memdb, block_rows=300, block_cols=300, page_blocks=1)
    e = rng.standard_normal((300, 300)).astype(np.float32)
    store.add_model("e", {"e": e}, layers=[{"op": "embedding", "weight": "e"}])
    entries, added = random_residuals(rng, store, e.shape, [(0, 0)], [(SIGN_SPARSE, 500)])
    put_residuals(store, "e", "e", entries)
    eff = e + added
    for ids in (7, np.array([0, 299, 150]), np.arange(300)):
        assert_matches(store.predict("e", ids), store.layers("e"), {"e": eff}, ids)
    np.testing.assert_allclose(store.get_tensor("e", "e"), eff, rtol=1e-6, atol=1e-6)
    # a damaged uint32 index is refused
    kind, param, payload = entries[(0, 0)]
    at = residuals.payload_bytes(kind, param, 300, 300) - param * 6
    bad = payload[:at] + struct.pack("<I", 90000) + payload[at + 4 :]
    with writing(memdb):
        memdb.execute("DELETE FROM tensors_residuals")
    put_residuals(store, "e", "e", {(0, 0): (kind, param, bad)})
    for read in (lambda: store.predict("e", 3), lambda: store.get_tensor("e", "e")):
        with pytest.raises(apsw.CorruptError, match="has index 90000 at entry 0; a 300 x 300 tile"):
            read()
