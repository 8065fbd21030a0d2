"""Store.predict against the numpy reference (tests/reference_model.py).

Every op and activation over random shapes, on stores whose block shapes (3 x 5, 4 x 7,
64 x 32 and the default 256 x 256) do and do not divide them; weights stored as float32,
float16, bfloat16 and float64; batches of 0, 1 (1-D in, 1-D out) and many rows; bad input;
the buffer pool under a budget smaller than the model; stale pages after a model changes;
kernel threads and concurrent connections.
"""

from __future__ import annotations

import os
import threading
from contextlib import closing

import ml_dtypes
import numpy as np
import pytest
from conftest import run_threads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_model import assert_matches, reference_predict

import sqlite_tensor
from sqlite_tensor import TensorStoreError, _engine
from sqlite_tensor.errors import NotFoundError

# (block_rows, block_cols, page_blocks); None: the store's defaults
BLOCKS = [(3, 5, 2), (4, 7, 3), (64, 32, 4), None]
BLOCK_IDS = ["3x5", "4x7", "64x32", "default"]
DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16, np.float64]
DTYPE_IDS = ["float32", "float16", "bfloat16", "float64"]
ACTS = ["identity", "relu", "sigmoid", "tanh", "gelu", "softmax"]
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def new_store(conn, blocks, name="tensors"):
    if blocks is None:
        return sqlite_tensor.Store(conn, name)
    r, c, p = blocks
    return sqlite_tensor.Store(conn, name, block_rows=r, block_cols=c, page_blocks=p)


def weight(rng, n_out, n_in, dtype, transpose=False):
    """A (n_out x n_in) weight (or (n_in x n_out) for transpose) scaled so that
    activations stay of order one, stored as dtype."""
    w = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    return (w.T if transpose else w).astype(dtype).copy()


def bias(rng, n, shape_kind, dtype):
    b = (rng.standard_normal(n) * 0.5).astype(dtype)
    return {"n": b, "1n": b.reshape(1, n), "n1": b.reshape(n, 1)}[shape_kind]


def features(rng, batch, n_in):
    """(n_in,) for batch None, else (batch, n_in), float32."""
    shape = (n_in,) if batch is None else (batch, n_in)
    return rng.standard_normal(shape).astype(np.float32)


# -- every op against the reference -------------------------------------------------------


@SETTINGS
@given(
    blocks=st.sampled_from(BLOCKS),
    n_in=st.integers(1, 70),
    n_out=st.integers(1, 70),
    batch=st.one_of(st.none(), st.integers(0, 9)),
    dtype=st.sampled_from(DTYPES),
    transpose=st.booleans(),
    bias_kind=st.sampled_from([None, "n", "1n", "n1"]),
    act=st.sampled_from(ACTS),
    seed=st.integers(0, 2**32 - 1),
)
def test_dense_layer_matches_reference(
    blocks, n_in, n_out, batch, dtype, transpose, bias_kind, act, seed
):
    rng = np.random.default_rng(seed)
    arrays = {"w": weight(rng, n_out, n_in, dtype, transpose)}
    layer = {"op": "dense", "weight": "w", "activation": act, "transpose": transpose}
    if bias_kind is not None:
        arrays["b"] = bias(rng, n_out, bias_kind, dtype)
        layer["bias"] = "b"
    x = features(rng, batch, n_in)
    with closing(sqlite_tensor.connect(":memory:")) as conn:
        store = new_store(conn, blocks)
        store.add_model("m", arrays, layers=[layer])
        assert_matches(store.predict("m", x), [layer], arrays, x)


@st.composite
def mlps(draw):
    """A multi-layer perceptron: widths, per-layer dtype/transpose/bias/activation, and
    stand-alone activation layers here and there."""
    widths = draw(st.lists(st.integers(1, 40), min_size=3, max_size=5))
    specs = []
    for i in range(len(widths) - 1):
        specs.append(
            dict(
                n_in=widths[i],
                n_out=widths[i + 1],
                dtype=draw(st.sampled_from(DTYPES)),
                transpose=draw(st.booleans()),
                bias=draw(st.sampled_from([None, "n", "1n", "n1"])),
                act=draw(st.sampled_from(ACTS)),
                extra=draw(st.one_of(st.none(), st.sampled_from(ACTS))),
            )
        )
    return specs


@SETTINGS
@given(
    blocks=st.sampled_from(BLOCKS),
    specs=mlps(),
    batch=st.one_of(st.none(), st.integers(0, 12)),
    seed=st.integers(0, 2**32 - 1),
)
def test_mlp_matches_reference(blocks, specs, batch, seed):
    rng = np.random.default_rng(seed)
    arrays, layers = {}, []
    for i, s in enumerate(specs):
        arrays[f"l{i}.w"] = weight(rng, s["n_out"], s["n_in"], s["dtype"], s["transpose"])
        layer = {
            "op": "dense",
            "weight": f"l{i}.w",
            "activation": s["act"],
            "transpose": s["transpose"],
        }
        if s["bias"] is not None:
            arrays[f"l{i}.b"] = bias(rng, s["n_out"], s["bias"], s["dtype"])
            layer["bias"] = f"l{i}.b"
        layers.append(layer)
        if s["extra"] is not None:
            layers.append({"op": "activation", "activation": s["extra"]})
    x = features(rng, batch, specs[0]["n_in"])
    with closing(sqlite_tensor.connect(":memory:")) as conn:
        store = new_store(conn, blocks)
        store.add_model("mlp", arrays, layers=layers)
        assert_matches(store.predict("mlp", x), layers, arrays, x)


@SETTINGS
@given(
    blocks=st.sampled_from(BLOCKS),
    vocab=st.integers(1, 60),
    dim=st.integers(1, 40),
    dtype=st.sampled_from(DTYPES),
    form=st.sampled_from(["scalar", "array", "list", "empty"]),
    head=st.one_of(st.none(), st.tuples(st.integers(1, 20), st.sampled_from(ACTS))),
    act=st.one_of(st.none(), st.sampled_from(ACTS)),
    seed=st.integers(0, 2**32 - 1),
)
def test_embedding_matches_reference(blocks, vocab, dim, dtype, form, head, act, seed):
    rng = np.random.default_rng(seed)
    arrays = {"emb": rng.standard_normal((vocab, dim)).astype(dtype)}
    layers = [{"op": "embedding", "weight": "emb"}]
    if act is not None:  # an activation layer straight after the embedding
        layers.append({"op": "activation", "activation": act})
    if head is not None:
        arrays["fc"] = weight(rng, head[0], dim, np.float32)
        layers.append({"op": "dense", "weight": "fc", "activation": head[1]})
    n = int(rng.integers(1, 12))
    x = {
        "scalar": int(rng.integers(0, vocab)),
        "array": rng.integers(0, vocab, size=n),
        "list": [int(i) for i in rng.integers(0, vocab, size=n)],
        "empty": np.zeros(0, np.int64),
    }[form]
    with closing(sqlite_tensor.connect(":memory:")) as conn:
        store = new_store(conn, blocks)
        store.add_model("emb", arrays, layers=layers)
        got = store.predict("emb", x)
        assert_matches(got, layers, arrays, x)
        out_dim = head[0] if head else dim
        assert got.shape == ((out_dim,) if form == "scalar" else (len(np.ravel(x)), out_dim))


@SETTINGS
@given(
    blocks=st.sampled_from(BLOCKS),
    vocab=st.integers(1, 60),
    dim=st.integers(1, 40),
    dtype=st.sampled_from(DTYPES),
    mode=st.sampled_from(["sum", "mean"]),
    form=st.sampled_from(["one", "equal", "ragged", "none"]),
    head=st.one_of(st.none(), st.tuples(st.integers(1, 20), st.sampled_from(ACTS))),
    act=st.one_of(st.none(), st.sampled_from(ACTS)),
    seed=st.integers(0, 2**32 - 1),
)
def test_embedding_bag_matches_reference(blocks, vocab, dim, dtype, mode, form, head, act, seed):
    rng = np.random.default_rng(seed)
    arrays = {"emb": rng.standard_normal((vocab, dim)).astype(dtype)}
    layers = [{"op": "embedding_bag", "weight": "emb", "mode": mode}]
    if act is not None:
        layers.append({"op": "activation", "activation": act})
    if head is not None:
        arrays["fc"] = weight(rng, head[0], dim, np.float32)
        layers.append({"op": "dense", "weight": "fc", "activation": head[1]})
    nbags, size = int(rng.integers(1, 6)), int(rng.integers(1, 9))
    x = {
        "one": rng.integers(0, vocab, size=size),
        "equal": rng.integers(0, vocab, size=(nbags, size)),
        "ragged": [rng.integers(0, vocab, size=int(rng.integers(1, 9))) for _ in range(nbags)],
        "none": [],
    }[form]
    with closing(sqlite_tensor.connect(":memory:")) as conn:
        store = new_store(conn, blocks)
        store.add_model("bag", arrays, layers=layers)
        got = store.predict("bag", x)
        assert_matches(got, layers, arrays, x)
        out_dim = head[0] if head else dim
        expected_rows = {"one": None, "equal": nbags, "ragged": nbags, "none": 0}[form]
        assert got.shape == ((out_dim,) if expected_rows is None else (expected_rows, out_dim))


# -- explicit cases: dtypes, layouts, bias shapes, batch sizes ----------------------------


@pytest.mark.parametrize("blocks", BLOCKS, ids=BLOCK_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_weights_of_every_compute_dtype_are_widened_to_float32(memdb, rng, blocks, dtype):
    store = new_store(memdb, blocks)
    arrays = {
        "w1": weight(rng, 33, 70, dtype),
        "b1": bias(rng, 33, "n", dtype),
        "w2": weight(rng, 10, 33, dtype),
        "b2": bias(rng, 10, "n", dtype),
    }
    layers = [
        {"op": "dense", "weight": "w1", "bias": "b1", "activation": "gelu"},
        {"op": "dense", "weight": "w2", "bias": "b2", "activation": "softmax"},
    ]
    store.add_model("m", arrays, layers=layers)
    x = features(rng, 17, 70)
    got = store.predict("m", x)
    assert_matches(got, layers, arrays, x)
    # the reference really is "cast to float32 first": a float64 computation of the
    # unrounded weights would differ for float64 weights beyond float32's precision
    if dtype is np.float64:
        exact = reference_predict(layers, {k: v.astype(np.float32) for k, v in arrays.items()}, x)[
            0
        ]
        np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("blocks", BLOCKS, ids=BLOCK_IDS)
def test_keras_layout_transpose_equals_pytorch_layout(memdb, rng, blocks):
    store = new_store(memdb, blocks)
    w = weight(rng, 19, 45, np.float32)  # (out x in)
    b = bias(rng, 19, "n", np.float32)
    store.add_model(
        "torch",
        {"w": w, "b": b},
        layers=[{"op": "dense", "weight": "w", "bias": "b", "activation": "tanh"}],
    )
    keras = [{"op": "dense", "weight": "k", "bias": "b", "activation": "tanh", "transpose": True}]
    store.add_model("keras", {"k": w.T.copy(), "b": b}, layers=keras)
    for x in (features(rng, None, 45), features(rng, 8, 45)):
        a, k = store.predict("torch", x), store.predict("keras", x)
        assert_matches(k, keras, {"k": w.T, "b": b}, x)
        np.testing.assert_allclose(a, k, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias_kind", ["n", "1n", "n1"])
@pytest.mark.parametrize("blocks", BLOCKS, ids=BLOCK_IDS)
def test_bias_shapes(memdb, rng, blocks, bias_kind):
    store = new_store(memdb, blocks)
    arrays = {"w": weight(rng, 23, 9, np.float32), "b": bias(rng, 23, bias_kind, np.float32)}
    layers = [{"op": "dense", "weight": "w", "bias": "b"}]
    store.add_model("m", arrays, layers=layers)
    x = features(rng, 5, 9)
    got = store.predict("m", x)
    assert_matches(got, layers, arrays, x)
    # the bias really is added: zero input gives exactly the bias
    np.testing.assert_array_equal(
        store.predict("m", np.zeros(9, np.float32)), arrays["b"].reshape(-1)
    )


@pytest.fixture
def mlp(memdb, rng):
    """(store, layers, arrays): a 3-layer MLP 50 -> 37 -> 21 -> 6 on 4 x 7 blocks."""
    store = new_store(memdb, (4, 7, 3))
    arrays = {
        "w1": weight(rng, 37, 50, np.float32),
        "b1": bias(rng, 37, "n", np.float32),
        "w2": weight(rng, 21, 37, np.float16),
        "b2": bias(rng, 21, "1n", np.float16),
        "w3": weight(rng, 50, 21, ml_dtypes.bfloat16, transpose=True)[:, :6].copy(),
    }
    layers = [
        {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"},
        {"op": "dense", "weight": "w2", "bias": "b2", "activation": "gelu"},
        {"op": "dense", "weight": "w3", "transpose": True},
        {"op": "activation", "activation": "softmax"},
    ]
    store.add_model("mlp", arrays, layers=layers)
    return store, layers, arrays


def test_batch_of_one_is_1d_and_agrees_with_the_batched_rows(mlp, rng):
    store, layers, arrays = mlp
    x = features(rng, 40, 50)
    batched = store.predict("mlp", x)
    assert batched.shape == (40, 6) and batched.dtype == np.float32
    assert_matches(batched, layers, arrays, x)
    for i in (0, 17, 39):
        one = store.predict("mlp", x[i])
        assert one.shape == (6,)
        assert_matches(one, layers, arrays, x[i])
        np.testing.assert_allclose(one, batched[i], rtol=1e-5, atol=1e-6)
    # a (1, n_in) batch stays 2-D
    assert store.predict("mlp", x[:1]).shape == (1, 6)


def test_batch_of_zero_rows(mlp, memdb, rng):
    store, _, _ = mlp
    out = store.predict("mlp", np.zeros((0, 50), np.float32))
    assert out.shape == (0, 6) and out.dtype == np.float32
    store.add_model(
        "emb",
        {"e": rng.standard_normal((8, 5)).astype(np.float32)},
        layers=[{"op": "embedding", "weight": "e"}],
    )
    store.add_model(
        "bag",
        {"e": rng.standard_normal((8, 5)).astype(np.float32)},
        layers=[{"op": "embedding_bag", "weight": "e"}],
    )
    assert store.predict("emb", np.zeros(0, np.int64)).shape == (0, 5)
    assert store.predict("bag", []).shape == (0, 5)
    assert store.predict("bag", np.zeros((0, 3), np.int64)).shape == (0, 5)


def test_empty_list_of_ids_is_a_batch_of_zero(embedders):
    # as [] is zero bags for an embedding_bag model, [] is zero ids for an embedding model
    # (np.asarray([]) is float64, but it holds no non-integer)
    store, e = embedders
    out = store.predict("emb", [])
    assert out.shape == (0, 11) and out.dtype == np.float32


def test_many_rows(mlp, rng):
    store, layers, arrays = mlp
    x = features(rng, 3000, 50)
    assert_matches(store.predict("mlp", x), layers, arrays, x)


def test_inputs_of_other_numeric_dtypes_are_cast_to_float32(mlp, rng):
    store, layers, arrays = mlp
    x64 = rng.standard_normal((4, 50))
    assert_matches(store.predict("mlp", x64), layers, arrays, x64)
    np.testing.assert_array_equal(
        store.predict("mlp", x64), store.predict("mlp", x64.astype(np.float32))
    )
    for strided in (np.asfortranarray(x64), x64[::2], x64[:, ::-1], x64.astype(">f8")):
        assert_matches(store.predict("mlp", strided), layers, arrays, strided)
    xi = rng.integers(-3, 4, size=(3, 50))
    assert_matches(store.predict("mlp", xi), layers, arrays, xi)
    assert_matches(store.predict("mlp", xi[0].tolist()), layers, arrays, xi[0])


@pytest.mark.parametrize("act", ACTS)
def test_nan_inputs_propagate_as_numpy(memdb, rng, act):
    store = new_store(memdb, (3, 5, 2))
    arrays = {"w": weight(rng, 8, 11, np.float32), "b": bias(rng, 8, "n", np.float32)}
    layers = [{"op": "dense", "weight": "w", "bias": "b", "activation": act}]
    store.add_model("m", arrays, layers=layers)
    x = features(rng, 4, 11)
    x[1, 3] = np.nan
    x[3, :] = np.nan
    got = store.predict("m", x)
    assert_matches(got, layers, arrays, x)
    assert np.isnan(got[1]).all() and np.isnan(got[3]).all()
    assert not np.isnan(got[[0, 2]]).any()
    one = store.predict("m", x[1])
    assert np.isnan(one).all()


def test_nan_after_a_relu_layer_propagates(memdb, rng):
    # NaN must survive relu (np.maximum(nan, 0) is nan) into the next layer
    store = new_store(memdb, (4, 7, 3))
    arrays = {"w1": weight(rng, 9, 6, np.float32), "w2": weight(rng, 3, 9, np.float32)}
    layers = [
        {"op": "dense", "weight": "w1", "activation": "relu"},
        {"op": "dense", "weight": "w2", "activation": "sigmoid"},
    ]
    store.add_model("m", arrays, layers=layers)
    x = features(rng, 3, 6)
    x[2, 0] = np.nan
    assert_matches(store.predict("m", x), layers, arrays, x)


# -- embedding inputs ---------------------------------------------------------------------


@pytest.fixture
def embedders(memdb, rng):
    store = new_store(memdb, (3, 5, 2))
    e = rng.standard_normal((13, 11)).astype(np.float32)
    store.add_model("emb", {"e": e}, layers=[{"op": "embedding", "weight": "e"}])
    store.add_model("mean", {"e": e}, layers=[{"op": "embedding_bag", "weight": "e"}])
    store.add_model("sum", {"e": e}, layers=[{"op": "embedding_bag", "weight": "e", "mode": "sum"}])
    return store, e


def test_embedding_takes_an_id_or_an_array_of_ids(embedders):
    store, e = embedders
    np.testing.assert_array_equal(store.predict("emb", 12), e[12])
    np.testing.assert_array_equal(store.predict("emb", np.int32(0)), e[0])
    np.testing.assert_array_equal(store.predict("emb", [3, 3, 7]), e[[3, 3, 7]])
    np.testing.assert_array_equal(store.predict("emb", np.array([5], np.uint8)), e[[5]])


def test_embedding_bag_forms(embedders):
    store, e = embedders
    np.testing.assert_allclose(
        store.predict("mean", np.array([1, 2, 2])), e[[1, 2, 2]].mean(0), rtol=1e-6
    )
    np.testing.assert_allclose(
        store.predict("sum", np.array([1, 2, 2])), e[[1, 2, 2]].sum(0), rtol=1e-6
    )
    equal = np.array([[0, 1], [4, 12]])
    np.testing.assert_allclose(store.predict("sum", equal), e[equal].sum(1), rtol=1e-6)
    ragged = [np.array([7]), [0, 1, 2, 3, 4], (12, 12)]
    got = store.predict("mean", ragged)
    assert got.shape == (3, 11)
    for row, bag in zip(got, ragged):
        np.testing.assert_allclose(row, e[list(bag)].mean(0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_over_many_block_rows(memdb, rng, dtype, mode):
    # the kernel takes ids by block row (each tile pinned once per call): bags whose ids
    # span many block rows, repeat, and come in any order still sum to numpy's rows
    store = new_store(memdb, (4, 3, 2))  # 500 ids: 125 block rows, 3 block columns
    e = rng.standard_normal((500, 7)).astype(dtype)
    store.add_model("bag", {"e": e}, layers=[{"op": "embedding_bag", "weight": "e", "mode": mode}])
    store.add_model("emb", {"e": e}, layers=[{"op": "embedding", "weight": "e"}])
    ragged = [rng.integers(0, 500, int(n)) for n in rng.integers(1, 40, 60)]
    ragged[3] = np.array([499, 0, 499, 250, 0])
    reduce = np.mean if mode == "mean" else np.sum
    want = np.stack([reduce(e[b].astype(np.float32), axis=0) for b in ragged])
    np.testing.assert_allclose(store.predict("bag", ragged), want, rtol=1e-5, atol=1e-5)
    # equal bags as one 2-D array (converted in one go) and as a list give the same answer
    equal = rng.integers(0, 500, (30, 9)).astype(np.int32)
    got = store.predict("bag", equal)
    np.testing.assert_array_equal(got, store.predict("bag", list(equal)))
    np.testing.assert_allclose(
        got, reduce(e[equal].astype(np.float32), axis=1), rtol=1e-5, atol=1e-5
    )
    ids = rng.integers(0, 500, 333)
    np.testing.assert_array_equal(store.predict("emb", ids), e[ids].astype(np.float32))
    # the first bad id in input order is the one named, wherever its block row
    with pytest.raises(ValueError, match=r"id 500 \(input 2\) is out of range"):
        store.predict("bag", [[499], [0, 1], [3, 500], [-1]])
    with pytest.raises(ValueError, match=r"bag 1 is empty"):
        store.predict("bag", [np.array([1, 2]), np.array([], np.int64), np.array([3])])
    with pytest.raises(TypeError, match="integers"):
        store.predict("bag", np.array([[1, 2], [3, 2**64 - 1]], np.uint64))


# -- bad input: clear errors, never a crash -----------------------------------------------


def test_wrong_feature_shapes_name_the_expected_shape(mlp):
    store, _, _ = mlp
    for bad in (
        np.zeros(49, np.float32),
        np.zeros(51),
        np.zeros((2, 49)),
        np.zeros((2, 5, 50)),
        np.zeros(0),
        [1.0, 2.0],
        3.0,
    ):
        with pytest.raises(ValueError, match=r"takes 50 features.*\(50,\) or \(batch, 50\)"):
            store.predict("mlp", bad)


@pytest.mark.parametrize(
    "bad",
    [
        np.array(["a"] * 50),
        np.array([object()] * 50, dtype=object),
        "x" * 50,
        ["a"] * 50,
        None,
        {"x": 1},
    ],
)
def test_non_numeric_features_are_refused(mlp, bad):
    store, _, _ = mlp
    with pytest.raises((TypeError, ValueError), match="float features|50 features"):
        store.predict("mlp", bad)


@pytest.mark.parametrize(
    "model, bad, message",
    [
        (
            "emb",
            13,
            r"id 13 \(input 0\) is out of range: the embedding has 13 rows \(ids 0 to 12\)",
        ),
        ("emb", -1, r"id -1 \(input 0\) is out of range"),
        ("emb", [0, 1, 99], r"id 99 \(input 2\) is out of range"),
        ("emb", np.array([2**62]), r"is out of range"),
        ("mean", np.array([1, 13]), r"id 13 \(input 0\) is out of range"),
        ("sum", [[1], [2, -5]], r"id -5 \(input 1\) is out of range"),
    ],
)
def test_out_of_range_ids(embedders, model, bad, message):
    store, _ = embedders
    with pytest.raises(ValueError, match=message):
        store.predict(model, bad)


@pytest.mark.parametrize(
    "model, bad",
    [
        ("emb", 1.5),
        ("emb", [1.0, 2.0]),
        ("emb", "a"),
        ("emb", np.array(["1"])),
        ("emb", np.array([2**64 - 1], np.uint64)),
        ("mean", [[1.5]]),
        ("mean", [["a"]]),
        ("mean", 5),
        ("mean", "abc"),
    ],
)
def test_ids_that_are_not_integers(embedders, model, bad):
    store, _ = embedders
    with pytest.raises(TypeError, match="integers|bags of ids|not texts"):
        store.predict(model, bad)


@pytest.mark.parametrize(
    "bad",
    [
        [[]],
        [np.array([1]), np.array([], np.int64)],
        np.zeros((3, 0), np.int64),
        np.array([], np.int64),
    ],
)
def test_empty_bags_are_refused(embedders, bad):
    store, _ = embedders
    with pytest.raises(ValueError, match="bag .*empty"):
        store.predict("mean", bad)


def test_unknown_model_and_model_without_layers(memstore, rng):
    memstore.add_model("plain", {"w": rng.standard_normal((3, 4)).astype(np.float32)})
    with pytest.raises(NotFoundError, match="no model 'nobody'"):
        memstore.predict("nobody", np.zeros(4))
    with pytest.raises(TensorStoreError, match=r"model 'plain' has no layers.*set_layers"):
        memstore.predict("plain", np.zeros(4))
    memstore.set_layers("plain", [{"op": "dense", "weight": "w"}])
    assert memstore.predict("plain", np.zeros(4)).shape == (3,)
    memstore.set_layers("plain", None)
    with pytest.raises(TensorStoreError, match="has no layers"):
        memstore.predict("plain", np.zeros(4))


# -- the buffer pool -----------------------------------------------------------------------


@pytest.fixture
def pool():
    """Leaves the process-wide buffer pool as it found it: default budget, empty."""
    _engine.cache_clear()
    yield _engine
    _engine.cache_configure(512 * 2**20)
    _engine.cache_clear()


@pytest.fixture
def big(store, rng):
    """A model of many pages (3 x 5 blocks, two a page) in a file store."""
    arrays = {
        "w1": weight(rng, 40, 60, np.float32),
        "b1": bias(rng, 40, "n", np.float32),
        "w2": weight(rng, 12, 40, np.float16),
    }
    layers = [
        {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"},
        {"op": "dense", "weight": "w2", "activation": "softmax"},
    ]
    store.add_model("big", arrays, layers=layers)
    page_bytes = [p["bytes"] for p in store.page_stats()]
    assert len(page_bytes) > 100
    return store, layers, arrays, page_bytes


@pytest.mark.parametrize("pages", [0, 3], ids=["budget-1-byte", "budget-3-pages"])
def test_model_larger_than_the_cache_budget(pool, big, rng, pages):
    store, layers, arrays, page_bytes = big
    budget = 1 if pages == 0 else pages * max(page_bytes)
    pool.cache_configure(budget)
    assert pool.cache_stats()["budget_bytes"] == budget
    with pytest.raises(ValueError, match="budget_bytes must be at least 1, got -1"):
        pool.cache_configure(-1)
    assert pool.cache_stats()["budget_bytes"] == budget
    x = features(rng, 9, 60)
    for _ in range(2):
        assert_matches(store.predict("big", x), layers, arrays, x)
        assert_matches(store.predict("big", x[4]), layers, arrays, x[4])
        stats = pool.cache_stats()
        assert stats["resident_bytes"] <= budget, stats
        assert stats["pages"] * min(page_bytes) <= budget, stats  # pages differ in size
    stats = pool.cache_stats()
    assert stats["misses"] >= len(page_bytes), stats
    # pages came and went: evicted, or (admit-lfu, the default) read and not admitted
    assert stats["evictions"] + stats["bypassed"] > 0, stats
    assert stats["bytes_read"] >= sum(page_bytes), stats
    # through SQL too
    got = store.conn.execute("SELECT tensor_predict('tensors', 'big', ?)", (x[2].tobytes(),)).get
    assert_matches(np.frombuffer(got, np.float32).copy(), layers, arrays, x[2])
    assert pool.cache_stats()["resident_bytes"] <= budget


def test_a_large_budget_keeps_the_model_resident(pool, big, rng):
    store, layers, arrays, page_bytes = big
    x = features(rng, 3, 60)
    store.predict("big", x)
    first = pool.cache_stats()
    assert first["misses"] == len(page_bytes)
    assert first["resident_bytes"] == sum(page_bytes)
    assert_matches(store.predict("big", x), layers, arrays, x)
    second = pool.cache_stats()
    assert second["misses"] == first["misses"]  # served from memory
    assert second["hits"] > first["hits"]
    assert second["evictions"] == 0


# -- stale pages are never served ---------------------------------------------------------


def test_replaced_model_is_never_served_from_stale_pages(pool, db_path, store, rng):
    layers = [{"op": "dense", "weight": "w", "bias": "b", "activation": "tanh"}]
    old = {"w": weight(rng, 14, 22, np.float32), "b": bias(rng, 14, "n", np.float32)}
    new = {"w": weight(rng, 14, 22, np.float32), "b": bias(rng, 14, "n", np.float32)}
    x = features(rng, 4, 22)
    sql = "SELECT tensor_predict('tensors', 'm', ?)"
    other = sqlite_tensor.connect(db_path)
    try:
        other_store = sqlite_tensor.Store(other)
        store.add_model("m", old, layers=layers)
        assert_matches(store.predict("m", x), layers, old, x)
        assert_matches(other_store.predict("m", x), layers, old, x)
        assert_matches(
            np.frombuffer(other.execute(sql, (x[0].tobytes(),)).get, np.float32).copy(),
            layers,
            old,
            x[0],
        )
        store.drop_model("m")
        store.add_model("m", new, layers=layers)  # same name, same page ids reused
        for s, conn in ((store, store.conn), (other_store, other)):
            assert_matches(s.predict("m", x), layers, new, x)
            got = np.frombuffer(conn.execute(sql, (x[0].tobytes(),)).get, np.float32).copy()
            assert_matches(got, layers, new, x[0])
    finally:
        other.close()


def test_set_layers_and_new_models_take_effect_at_once(pool, store, rng):
    arrays = {"a": weight(rng, 6, 10, np.float32), "b": weight(rng, 6, 10, np.float32)}
    la = [{"op": "dense", "weight": "a"}]
    lb = [{"op": "dense", "weight": "b", "activation": "relu"}]
    store.add_model("m", arrays, layers=la)
    x = features(rng, 3, 10)
    assert_matches(store.predict("m", x), la, arrays, x)
    store.set_layers("m", lb)
    assert_matches(store.predict("m", x), lb, arrays, x)
    # another model sharing blocks, and one that does not
    store.add_model("n", {"b": arrays["b"]}, layers=lb)
    store.add_model("o", {"b": -arrays["b"]}, layers=lb)
    assert_matches(store.predict("n", x), lb, arrays, x)
    assert_matches(store.predict("o", x), lb, {"b": -arrays["b"]}, x)
    store.drop_model("m")  # pages rewritten, ids reused
    store.add_model("m", {"a": -arrays["a"], "b": arrays["a"]}, layers=lb)
    assert_matches(store.predict("m", x), lb, {"b": arrays["a"]}, x)
    assert_matches(store.predict("n", x), lb, arrays, x)
    assert_matches(store.predict("o", x), lb, {"b": -arrays["b"]}, x)


def test_two_stores_in_one_file_never_share_pages(pool, db, rng):
    a = sqlite_tensor.Store(db, "alpha", block_rows=3, block_cols=5, page_blocks=2)
    b = sqlite_tensor.Store(db, "beta", block_rows=3, block_cols=5, page_blocks=2)
    layers = [{"op": "dense", "weight": "w"}]
    wa, wb = weight(rng, 7, 8, np.float32), weight(rng, 7, 8, np.float32)
    a.add_model("m", {"w": wa}, layers=layers)
    b.add_model("m", {"w": wb}, layers=layers)  # same page ids in the other store
    x = features(rng, 2, 8)
    for _ in range(2):
        assert_matches(a.predict("m", x), layers, {"w": wa}, x)
        assert_matches(b.predict("m", x), layers, {"w": wb}, x)


class CommitsWhenRead:
    """Features that, when Store.predict converts them (after it has read the model's plan,
    before it reads the pages), let another connection commit a change first: a writer
    committing at that moment, made deterministic."""

    def __init__(self, x, commit):
        self.x, self.commit = x, commit

    def __array__(self, dtype=None, copy=None):
        self.commit()
        return self.x if dtype is None else self.x.astype(dtype)


@pytest.fixture
def swapped(pool, db_path, store, rng):
    """Model 'm' (weights old) in a file store, and swap(): another connection replaces it,
    in one transaction, by new weights, after a model 'other' took over its pages."""
    layers = [{"op": "dense", "weight": "w"}]
    w = {k: weight(rng, 7, 9, np.float32) for k in ("old", "new", "other")}
    store.add_model("m", {"w": w["old"]}, layers=layers)
    writer = sqlite_tensor.Store(db_path)

    def swap():
        writer.conn.execute("BEGIN IMMEDIATE")
        writer.drop_model("m")
        writer.add_model("other", {"w": w["other"]}, layers=layers)
        writer.add_model("m", {"w": w["new"]}, layers=layers)
        writer.conn.execute("COMMIT")

    yield store, layers, w, swap
    writer.close()


def one_of(got, layers, candidates, x):
    """got is the model's answer for one of the candidate weights."""
    errors = []
    for name, w in candidates.items():
        try:
            assert_matches(got, layers, {"w": w}, x)
            return name
        except AssertionError as e:
            errors.append(f"{name}: {e}")
    raise AssertionError(
        "the answer is none of " + ", ".join(candidates) + "\n" + "\n".join(errors)
    )


def test_predict_reads_plan_and_pages_from_one_snapshot(swapped, rng):
    """A writer committing while Store.predict runs: the answer is the old model's or the
    new one's, never computed from the old plan over the new pages."""
    store, layers, w, swap = swapped
    x = features(rng, None, 9)
    got = store.predict("m", CommitsWhenRead(x, swap))
    one_of(got, layers, {"old": w["old"], "new": w["new"]}, x)
    assert_matches(store.predict("m", x), layers, {"w": w["new"]}, x)


def test_a_reader_in_an_old_snapshot_gets_its_own_pages(swapped, db_path, rng):
    """Pages cached by one connection are never served to a reader whose snapshot holds
    different bytes under the same store key."""
    store, layers, w, swap = swapped
    x = features(rng, None, 9)
    old_reader = sqlite_tensor.connect(db_path)
    try:
        old_reader.execute("BEGIN")
        assert old_reader.execute("SELECT count(*) FROM tensors_models").get == 1  # snapshot
        store.predict("m", CommitsWhenRead(x, swap))  # whatever it answers, it caches pages
        got = old_reader.execute("SELECT tensor_predict('tensors', 'm', ?)", (x.tobytes(),)).get
        assert_matches(np.frombuffer(got, np.float32).copy(), layers, {"w": w["old"]}, x)
        old_reader.execute("COMMIT")
    finally:
        old_reader.close()


@pytest.fixture
def legacy_stores(pool, db):
    """Two format-1 stores as the release before the buffer pool wrote them: their config
    has format_version and the block shape but no 'uid' (the engine opens such stores
    without complaint)."""
    import apsw

    stores = [
        sqlite_tensor.Store(db, name, block_rows=3, block_cols=5, page_blocks=2)
        for name in ("alpha", "beta")
    ]
    db.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    for s in stores:
        db.execute(f"DELETE FROM {s.name}_config WHERE key = 'uid'")
    db.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    return stores


def test_store_without_uid_never_serves_stale_pages(legacy_stores, rng):
    a, _ = legacy_stores
    layers = [{"op": "dense", "weight": "w"}]
    w1, w2 = weight(rng, 7, 8, np.float32), weight(rng, 7, 8, np.float32)
    x = features(rng, 2, 8)
    a.add_model("m", {"w": w1}, layers=layers)
    assert_matches(a.predict("m", x), layers, {"w": w1}, x)
    a.drop_model("m")
    a.add_model("m", {"w": w2}, layers=layers)
    assert_matches(a.predict("m", x), layers, {"w": w2}, x)  # not the dropped weights


def test_stores_without_uid_never_share_pages(legacy_stores, rng):
    a, b = legacy_stores
    layers = [{"op": "dense", "weight": "w"}]
    w1, w2 = weight(rng, 7, 8, np.float32), weight(rng, 7, 8, np.float32)
    x = features(rng, 2, 8)
    a.add_model("m", {"w": w1}, layers=layers)
    assert_matches(a.predict("m", x), layers, {"w": w1}, x)
    b.add_model("m", {"w": w2}, layers=layers)  # the same page ids as alpha's
    assert_matches(b.predict("m", x), layers, {"w": w2}, x)  # not alpha's cached pages


# -- threads ---------------------------------------------------------------------------------


@pytest.fixture
def threads():
    before = _engine.get_threads()
    yield _engine
    _engine.set_threads(before)


def test_one_and_two_kernel_threads_agree(threads, memdb, rng):
    store = new_store(memdb, (64, 32, 4))
    arrays = {
        "w1": weight(rng, 300, 200, np.float32),
        "b1": bias(rng, 300, "n", np.float32),
        "w2": weight(rng, 10, 300, np.float16),
    }
    layers = [
        {"op": "dense", "weight": "w1", "bias": "b1", "activation": "gelu"},
        {"op": "dense", "weight": "w2", "activation": "softmax"},
    ]
    store.add_model("m", arrays, layers=layers)
    x = features(rng, 300, 200)
    outs = {}
    for n in (1, 2):
        threads.set_threads(n)
        assert threads.get_threads() == n
        outs[n] = (store.predict("m", x), store.predict("m", x[0]))
        assert_matches(outs[n][0], layers, arrays, x)
        assert_matches(outs[n][1], layers, arrays, x[0])
    np.testing.assert_allclose(outs[1][0], outs[2][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[1][1], outs[2][1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="from 1 to 256"):
        threads.set_threads(-1)
    threads.set_threads(0)  # back to the default: one thread per online CPU
    assert threads.get_threads() == 0
    assert threads.effective_threads() in (len(os.sched_getaffinity(0)), os.cpu_count())


@pytest.fixture(scope="module")
def large_layers():
    """Layers of over 2**20 multiply-adds for one input (the kernels split those over
    threads), on odd block shapes, in both layouts; built once for the module."""
    rng = np.random.default_rng(77)
    conn = sqlite_tensor.connect(":memory:")
    stores = {}
    arrays = {
        "w": weight(rng, 1100, 1030, np.float16),
        "b": bias(rng, 1100, "n", np.float32),
        "k": weight(rng, 1050, 1100, np.float32, transpose=True),
    }  # (1100 in x 1050 out)
    layers = [
        {"op": "dense", "weight": "w", "bias": "b", "activation": "relu"},
        {"op": "dense", "weight": "k", "transpose": True, "activation": "softmax"},
    ]
    for blocks, name in (((64, 32, 4), "a"), ((37, 29, 3), "b")):
        stores[blocks] = new_store(conn, blocks, name)
        stores[blocks].add_model("big", arrays, layers=layers)
    yield stores, layers, arrays
    conn.close()


@pytest.mark.parametrize("n", [1, 2, 3, 7])
@pytest.mark.parametrize("blocks", [(64, 32, 4), (37, 29, 3)], ids=["64x32", "37x29"])
def test_threaded_large_layers_match_reference(threads, large_layers, blocks, n):
    stores, layers, arrays = large_layers
    store = stores[blocks]
    threads.set_threads(n)
    rng = np.random.default_rng(n)
    for x in (features(rng, None, 1030), features(rng, 3, 1030)):
        assert_matches(store.predict("big", x), layers, arrays, x)


def test_layer_larger_than_one_chunk_of_pinned_tiles(threads, pool):
    """A dense layer of more than 64 MiB is pinned and multiplied chunk by chunk."""
    rng = np.random.default_rng(5)
    with closing(sqlite_tensor.connect(":memory:")) as conn:
        store = new_store(conn, None)
        arrays = {"w": (rng.standard_normal((4200, 4100), dtype=np.float32) / 64)}
        layers = [{"op": "dense", "weight": "w"}]
        store.add_model("huge", arrays, layers=layers)
        x = features(rng, 3, 4100)
        threads.set_threads(2)
        assert_matches(store.predict("huge", x), layers, arrays, x)
        pool.cache_configure(1)
        assert_matches(store.predict("huge", x[1]), layers, arrays, x[1])
        assert pool.cache_stats()["resident_bytes"] <= 1


def test_threads_with_their_own_connections_predict_concurrently(pool, threads, db_path, rng):
    """Four Python threads, each with its own connection to one file, run four different
    models at once (batches large enough for the kernels' own threads too), under a pool
    budget small enough that pages come and go meanwhile."""
    specs = {}
    with sqlite_tensor.Store(db_path, block_rows=16, block_cols=24, page_blocks=3) as store:
        for i in range(4):
            n_in, hidden, n_out = 200 + 7 * i, 300, 5 + 3 * i
            arrays = {
                "w": weight(
                    rng, hidden, n_in, [np.float32, np.float16, ml_dtypes.bfloat16, np.float64][i]
                ),
                "b": bias(rng, hidden, "n", np.float32),
                "v": weight(rng, n_out, hidden, np.float32),
            }
            layers = [
                {"op": "dense", "weight": "w", "bias": "b", "activation": "relu"},
                {"op": "dense", "weight": "v", "activation": ACTS[i + 2]},
            ]
            store.add_model(f"m{i}", arrays, layers=layers)
            specs[f"m{i}"] = (layers, arrays, features(rng, 25, n_in))
    threads.set_threads(2)
    _engine.cache_configure(200_000)  # pages come and go while the threads run
    barrier = threading.Barrier(4)

    def work(name):
        layers, arrays, x = specs[name]
        with sqlite_tensor.Store(db_path) as s:
            barrier.wait()
            for k in range(15):
                xi = x if k % 2 else x[k]
                assert_matches(s.predict(name, xi), layers, arrays, xi)
                got = s.conn.execute(
                    "SELECT tensor_predict('tensors', ?, ?)", (name, x[k].tobytes())
                ).get
                assert_matches(np.frombuffer(got, np.float32).copy(), layers, arrays, x[k])

    run_threads(work, specs, timeout=60)


def test_cached_plans_follow_every_change_to_the_store(tmp_path):
    """Store.predict keeps plans between calls; any write through the API must show."""
    path = str(tmp_path / "p.sqlite")
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((5, 4)).astype(np.float32)
    w2 = rng.standard_normal((5, 4)).astype(np.float32)
    x = rng.standard_normal(4).astype(np.float32)
    layers = [{"op": "dense", "weight": "w"}]
    store = sqlite_tensor.Store(path, block_rows=2, block_cols=2)
    store.add_model("m", {"w": w1}, layers=layers)
    np.testing.assert_allclose(store.predict("m", x), w1 @ x, rtol=1e-5)
    store.set_layers("m", layers + [{"op": "activation", "activation": "relu"}])
    np.testing.assert_allclose(store.predict("m", x), np.maximum(w1 @ x, 0), rtol=1e-5)
    store.drop_model("m")
    store.add_model("m", {"w": w2}, layers=layers)
    np.testing.assert_allclose(store.predict("m", x), w2 @ x, rtol=1e-5)
    # a second connection writing is seen too, and the cached plan holds no lock on the file
    other = sqlite_tensor.Store(path)
    other.update_model("m", {"w": w1})
    np.testing.assert_allclose(store.predict("m", x), w1 @ x, rtol=1e-5)
    other.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert other.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
    other.close()
    store.close()
    # a new connection to another file at, possibly, the same address: its own plan
    fresh = sqlite_tensor.Store(str(tmp_path / "q.sqlite"), block_rows=2, block_cols=2)
    fresh.add_model("m", {"w": w2}, layers=layers)
    np.testing.assert_allclose(fresh.predict("m", x), w2 @ x, rtol=1e-5)
    fresh.close()
