"""Layer lists: validation against the model's tensors (sqlite_tensor/layers.py through
Store.set_layers and add_model(layers=)), canonical storage, removal, transactions."""

from __future__ import annotations

import json

import apsw
import ml_dtypes
import numpy as np
import pytest
from conftest import dump

import sqlite_tensor
from sqlite_tensor.errors import NotFoundError
from sqlite_tensor.layers import LayerError


def tensors():
    return {
        "w1": np.ones((5, 4), np.float32),  # dense 4 -> 5
        "b1": np.ones(5, np.float32),
        "w2": np.ones((3, 5), np.float16),  # dense 5 -> 3
        "b2": np.ones((1, 3), np.float16),
        "b2col": np.ones((3, 1), np.float32),
        "wk": np.ones((5, 2), ml_dtypes.bfloat16),  # keras layout: 5 -> 2 with transpose
        "w64": np.ones((2, 3), np.float64),
        "emb": np.ones((10, 4), np.float32),  # vocabulary 10, dim 4
        "i8": np.ones((3, 5), np.int8),
        "i8b": np.ones(3, np.int8),
        "f8": np.ones((3, 5), ml_dtypes.float8_e4m3fn),
        "vec": np.ones(4, np.float32),
        "cube": np.ones((2, 3, 4), np.float32),
        "scalar": np.array(1.5, np.float32),
        "bsq": np.ones((5, 5), np.float32),
    }


@pytest.fixture
def lstore(memstore):
    memstore.add_model("m", tensors())
    return memstore


DENSE1 = {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"}

BAD = [
    # the list itself
    ({"op": "dense"}, r"layers must be a list of dicts, got dict"),
    ("dense", r"layers must be a list of dicts, got str"),
    (b"[]", r"layers must be a list of dicts, got bytes"),
    (5, r"layers must be a list of dicts, got int"),
    ([], r"layers must not be empty"),
    (["dense"], r"layer 0: must be a dict, got str"),
    ([DENSE1, None], r"layer 1: must be a dict, got NoneType"),
    # ops and keys
    (
        [{"op": "conv", "weight": "w1"}],
        r"layer 0: unknown op 'conv'; ops are dense, embedding, "
        r"embedding_bag, activation",
    ),
    ([{"weight": "w1"}], r"layer 0: unknown op None"),
    ([DENSE1, {"op": "Dense", "weight": "w2"}], r"layer 1: unknown op 'Dense'"),
    (
        [{"op": "dense", "weight": "w1", "bais": "b1"}],
        r"layer 0 \(dense\): unknown keys \['bais'\]; dense takes \['activation', 'bias', "
        r"'transpose', 'weight'\]",
    ),
    (
        [{"op": "embedding", "weight": "emb", "mode": "sum"}],
        r"layer 0 \(embedding\): unknown keys \['mode'\]; embedding takes \['weight'\]",
    ),
    (
        [{"op": "embedding_bag", "weight": "emb", "transpose": True}],
        r"layer 0 \(embedding_bag\): unknown keys \['transpose'\]",
    ),
    (
        [DENSE1, {"op": "activation", "activation": "relu", "weight": "w2"}],
        r"layer 1 \(activation\): unknown keys \['weight'\]; activation takes \['activation'\]",
    ),
    # activations
    (
        [{"op": "dense", "weight": "w1", "activation": "swish"}],
        r"layer 0 \(dense\): unknown activation 'swish'; activations are identity, relu, sigmoid, "
        r"tanh, gelu, softmax",
    ),
    (
        [DENSE1, {"op": "activation", "activation": "Softmax"}],
        r"layer 1 \(activation\): unknown activation 'Softmax'",
    ),
    (
        [{"op": "activation", "activation": "relu"}, DENSE1],
        r"layer 0 \(activation\): a model cannot start with an activation",
    ),
    # weights
    ([{"op": "dense"}], r"layer 0 \(dense\): weight must be a tensor name, got None"),
    ([{"op": "dense", "weight": 3}], r"layer 0 \(dense\): weight must be a tensor name, got 3"),
    (
        [{"op": "dense", "weight": "nope"}],
        r"layer 0 \(dense\): weight 'nope' is not a tensor of this model; it has 'w1', 'b1'",
    ),
    ([{"op": "embedding"}], r"layer 0 \(embedding\): weight must be a tensor name, got None"),
    (
        [{"op": "dense", "weight": "vec"}],
        r"layer 0 \(dense\): weight 'vec' must be 2-D, has shape \(4,\)",
    ),
    (
        [{"op": "dense", "weight": "cube"}],
        r"layer 0 \(dense\): weight 'cube' must be 2-D, has shape \(2, 3, 4\)",
    ),
    (
        [{"op": "embedding", "weight": "scalar"}],
        r"layer 0 \(embedding\): weight 'scalar' must be 2-D, has shape \(\)",
    ),
    (
        [{"op": "dense", "weight": "i8"}],
        r"layer 0 \(dense\): weight 'i8' is int8; inference computes with float32, float16, "
        r"bfloat16, float64 weights",
    ),
    ([{"op": "embedding_bag", "weight": "f8"}], r"weight 'f8' is float8_e4m3fn; inference"),
    ([{"op": "dense", "weight": "w2", "bias": "i8b"}], r"bias 'i8b' is int8; inference"),
    (
        [{"op": "dense", "weight": "w1", "transpose": 1}],
        r"layer 0 \(dense\): transpose must be true or false, got 1",
    ),
    ([{"op": "dense", "weight": "w1", "transpose": "true"}], r"transpose must be true or false"),
    # widths
    (
        [DENSE1, {"op": "dense", "weight": "w1"}],
        r"layer 1 \(dense\): weight 'w1' \(out x in\) has shape \(5, 4\), so it takes 4 features, "
        r"but the previous layer gives 5",
    ),
    (
        [
            DENSE1,
            {"op": "dense", "weight": "w2"},
            {"op": "activation", "activation": "tanh"},
            {"op": "dense", "weight": "wk", "transpose": True},
        ],
        r"layer 3 \(dense\): weight 'wk' \(in x out\) has shape \(5, 2\), so it takes 5 features, "
        r"but the previous layer gives 3",
    ),
    (
        [{"op": "embedding_bag", "weight": "emb"}, {"op": "dense", "weight": "w2"}],
        r"layer 1 \(dense\): weight 'w2' \(out x in\) has shape \(3, 5\), so it takes 5 features, "
        r"but the previous layer gives 4",
    ),
    # biases
    (
        [{"op": "dense", "weight": "w1", "bias": "b2"}],
        r"layer 0 \(dense\): bias 'b2' has shape \(1, 3\); expected \(5,\) for 5 outputs",
    ),
    ([{"op": "dense", "weight": "w1", "bias": "bsq"}], r"bias 'bsq' has shape \(5, 5\); expected"),
    (
        [{"op": "dense", "weight": "w1", "bias": "nope"}],
        r"layer 0 \(dense\): bias 'nope' is not a tensor of this model",
    ),
    ([{"op": "dense", "weight": "w1", "bias": 7}], r"bias must be a tensor name, got 7"),
    # embeddings only first
    (
        [DENSE1, {"op": "embedding", "weight": "emb"}],
        r"layer 1 \(embedding\): an embedding can only be the first layer",
    ),
    (
        [{"op": "embedding", "weight": "emb"}, {"op": "embedding_bag", "weight": "emb"}],
        r"layer 1 \(embedding_bag\): an embedding can only be the first layer",
    ),
    (
        [{"op": "embedding_bag", "weight": "emb", "mode": "max"}],
        r"layer 0 \(embedding_bag\): mode must be one of \('sum', 'mean'\), got 'max'",
    ),
]


@pytest.mark.parametrize("layers, message", BAD, ids=range(len(BAD)))
def test_bad_layers_are_refused_naming_the_layer(lstore, layers, message):
    before = dump(lstore.conn)
    with pytest.raises(LayerError, match=message):
        lstore.set_layers("m", layers)
    assert dump(lstore.conn) == before
    assert lstore.layers("m") is None
    # and the same at add_model: nothing is written
    with pytest.raises(LayerError, match=message):
        lstore.add_model("n", tensors(), layers=layers)
    assert dump(lstore.conn) == before
    assert "n" not in lstore


def test_layer_error_is_a_value_error():
    assert issubclass(LayerError, ValueError)


GOOD = [
    (
        [{"op": "dense", "weight": "w1"}],
        [
            {
                "op": "dense",
                "weight": "w1",
                "bias": None,
                "activation": "identity",
                "transpose": False,
            }
        ],
    ),
    (
        [
            {"op": "dense", "weight": "w1", "bias": "b1", "activation": "linear"},
            {"op": "dense", "weight": "w2", "bias": "b2", "activation": None},
            {"op": "activation", "activation": "softmax"},
        ],
        [
            {
                "op": "dense",
                "weight": "w1",
                "bias": "b1",
                "activation": "identity",
                "transpose": False,
            },
            {
                "op": "dense",
                "weight": "w2",
                "bias": "b2",
                "activation": "identity",
                "transpose": False,
            },
            {"op": "activation", "activation": "softmax"},
        ],
    ),
    (
        [{"op": "dense", "weight": "w2", "bias": "b2col"}],  # a (n, 1) bias; 5 -> 3
        [
            {
                "op": "dense",
                "weight": "w2",
                "bias": "b2col",
                "activation": "identity",
                "transpose": False,
            }
        ],
    ),
    (
        [
            {"op": "dense", "weight": "wk", "transpose": True, "activation": "gelu"},
            {"op": "dense", "weight": "w64", "transpose": True, "bias": None},
        ],
        [
            {"op": "dense", "weight": "wk", "bias": None, "activation": "gelu", "transpose": True},
            {
                "op": "dense",
                "weight": "w64",
                "bias": None,
                "activation": "identity",
                "transpose": True,
            },
        ],
    ),
    (
        [{"op": "embedding", "weight": "emb"}, {"op": "activation", "activation": "tanh"}],
        [{"op": "embedding", "weight": "emb"}, {"op": "activation", "activation": "tanh"}],
    ),
    (
        [{"op": "embedding_bag", "weight": "emb"}, DENSE1],
        [
            {"op": "embedding_bag", "weight": "emb", "mode": "mean"},
            {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu", "transpose": False},
        ],
    ),
    (
        (dict(op="embedding_bag", weight="emb", mode="sum"),),  # a tuple of dicts is a list too
        [{"op": "embedding_bag", "weight": "emb", "mode": "sum"}],
    ),
]


@pytest.mark.parametrize("layers, canonical", GOOD, ids=range(len(GOOD)))
def test_layers_are_stored_canonically(lstore, layers, canonical):
    assert lstore.set_layers("m", layers) == canonical
    assert lstore.layers("m") == canonical
    text = lstore.conn.execute("SELECT layers FROM tensors_models WHERE name = 'm'").get
    assert json.loads(text) == canonical
    # every key present, in the canonical order
    assert [list(layer) for layer in json.loads(text)] == [list(layer) for layer in canonical]
    lstore.add_model("n", tensors(), layers=layers)
    assert lstore.layers("n") == canonical
    # a stored list is accepted again as it is
    assert lstore.set_layers("m", lstore.layers("m")) == canonical


def test_set_layers_none_removes_them(lstore):
    lstore.set_layers("m", [DENSE1])
    assert lstore.layers("m") is not None
    assert lstore.set_layers("m", None) is None
    assert lstore.layers("m") is None
    assert lstore.conn.execute("SELECT layers FROM tensors_models WHERE name = 'm'").get is None
    with pytest.raises(sqlite_tensor.TensorStoreError, match="has no layers"):
        lstore.predict("m", np.zeros(4))
    with pytest.raises(apsw.SQLError, match="has no layers"):
        lstore.conn.execute("SELECT tensor_predict('tensors', 'm', '[1, 2, 3, 4]')").get
    assert lstore.set_layers("m", None) is None  # removing twice is fine


def test_set_layers_on_an_unknown_model(lstore):
    with pytest.raises(NotFoundError, match="no model 'nobody' in store 'tensors'; it has 'm'"):
        lstore.set_layers("nobody", [DENSE1])
    with pytest.raises(NotFoundError, match="no model 'nobody'"):
        lstore.set_layers("nobody", None)
    with pytest.raises(NotFoundError, match="no model 'nobody'"):
        lstore.layers("nobody")
    with pytest.raises(TypeError, match="model name must be a string"):
        lstore.set_layers(3, [DENSE1])


def test_failing_set_layers_leaves_the_old_layers(lstore):
    good = lstore.set_layers("m", [DENSE1, {"op": "dense", "weight": "w2"}])
    before = dump(lstore.conn)
    with pytest.raises(LayerError, match="layer 1"):
        lstore.set_layers("m", [DENSE1, {"op": "dense", "weight": "w1"}])
    assert lstore.layers("m") == good
    assert dump(lstore.conn) == before
    assert lstore.predict("m", np.ones(4)).shape == (3,)


def test_set_layers_inside_a_callers_transaction(lstore):
    lstore.set_layers("m", [DENSE1])
    conn = lstore.conn
    conn.execute("BEGIN")
    lstore.set_layers("m", [{"op": "embedding", "weight": "emb"}])
    assert lstore.layers("m")[0]["op"] == "embedding"
    with pytest.raises(LayerError):
        lstore.set_layers("m", [{"op": "dense", "weight": "i8"}])
    assert lstore.layers("m")[0]["op"] == "embedding"  # the savepoint only
    conn.execute("ROLLBACK")
    assert lstore.layers("m")[0]["op"] == "dense"


def test_validation_sees_only_this_models_tensors(lstore):
    lstore.add_model("other", {"x": np.ones((2, 2), np.float32)})
    with pytest.raises(LayerError, match="weight 'w1' is not a tensor of this model; it has 'x'"):
        lstore.set_layers("other", [DENSE1])


@pytest.mark.parametrize(
    "text",
    [
        '[{"op":"conv"}]',
        '{"a":1}',
        "not json",
        "[1]",
        '[{"op":"dense","weight":"nope"}]',
        '[{"op":"dense","weight":"i8"}]',
        '[{"op":"dense","weight":"w1"},{"op":"dense","weight":"w1"}]',
        '[{"op":"activation","activation":"relu"}]',
        '[{"op":"dense","weight":"w1","activation":"x"}]',
        '[{"op":"dense","weight":"w1","bias":"b2"}]',
        '[{"op":"dense","weight":"w1"},{"op":"embedding","weight":"emb"}]',
    ],
)
def test_layers_damaged_by_hand_are_errors_not_crashes(lstore, text):
    """The engine checks the stored list again (it may have been edited since)."""
    conn = lstore.conn
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    conn.execute("UPDATE tensors_models SET layers = ? WHERE name = 'm'", (text,))
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    # a list the engine cannot use is an SQL error; one that is not even JSON is a damaged
    # store, as SQLite's own corruption errors are
    damaged = (apsw.SQLError, apsw.CorruptError)
    with pytest.raises(damaged, match="tensor_predict: "):
        conn.execute("SELECT tensor_predict('tensors', 'm', '[1, 2, 3, 4]')").get
    with pytest.raises(damaged, match="tensor_predict_batch: "):
        conn.execute(
            "SELECT * FROM tensor_predict_batch('tensors', 'm', 'SELECT 1, ''[1, 2, 3, 4]''')"
        ).fetchall()
