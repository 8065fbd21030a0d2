"""A numpy reference for running a stored model: the forward pass the engine must match.

Everything is computed in float64 from the weights *as the engine reads them*: each stored
array is first cast to float32 (float16, bfloat16 and float64 weights are widened or
narrowed to float32 by the kernels), and so are the features. Inputs follow
``Store.predict``:

    features models  (n_in,) -> (n_out,);  (batch, n_in) -> (batch, n_out)
    embedding        an id -> (dim,);  an array of ids -> (len, dim)
    embedding_bag    a 1-D id array (one bag) -> (dim,);  a 2-D array (equal bags) or a
                     list of bags -> (bags, dim)

``reference_predict`` also returns a magnitude: the largest value the same network
reaches with every weight, bias and input replaced by its absolute value (activations
taken as identity). Rounding errors of float32 sums scale with it, so tolerances for
outputs whose terms cancel are ``atol = 1e-6 * magnitude`` (see ``assert_matches``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:  # the exact error function, vectorised
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - scipy is optional
    _erf = np.vectorize(math.erf, otypes=[np.float64])

RTOL = 1e-5
ATOL = 1e-6


def as_compute(arr: np.ndarray) -> np.ndarray:
    """A stored weight as the kernels compute with it: float32 values, held in float64."""
    return np.asarray(arr).astype(np.float32).astype(np.float64)


def activation(name: str | None, y: np.ndarray) -> np.ndarray:
    """Apply an activation to y (float64, rows = inputs); NaN propagates as numpy does."""
    if name in (None, "identity", "linear"):
        return y
    if name == "relu":
        return np.maximum(y, 0.0)  # np.maximum propagates NaN
    if name == "sigmoid":
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-y))
    if name == "tanh":
        return np.tanh(y)
    if name == "gelu":  # the exact, erf-based one
        return 0.5 * y * (1.0 + _erf(y / math.sqrt(2.0)))
    if name == "softmax":  # over each row
        with np.errstate(invalid="ignore", over="ignore"):
            e = np.exp(y - np.max(y, axis=-1, keepdims=True))
            return e / np.sum(e, axis=-1, keepdims=True)
    raise ValueError(f"unknown activation {name!r}")


def _bags(x) -> tuple[list[np.ndarray], bool]:
    if isinstance(x, np.ndarray) and x.ndim == 1:
        return [x.astype(np.int64)], True
    if isinstance(x, np.ndarray) and x.ndim == 2:
        return [row.astype(np.int64) for row in x], False
    return [np.asarray(b, np.int64).reshape(-1) for b in x], False


def reference_predict(
    layers: Sequence[Mapping[str, Any]], arrays: Mapping[str, np.ndarray], x
) -> tuple[np.ndarray, float]:
    """(output in float64 with Store.predict's shape, magnitude) of the model on x."""
    first = layers[0]
    if first["op"] == "embedding":
        single = np.ndim(x) == 0
        ids = np.asarray(x, np.int64).reshape(-1)
        W = as_compute(arrays[first["weight"]])
        y, mag = W[ids], np.abs(W[ids])
        rest = layers[1:]
    elif first["op"] == "embedding_bag":
        bags, single = _bags(x)
        W = as_compute(arrays[first["weight"]])
        dim = W.shape[1]
        mean = first.get("mode", "mean") == "mean"
        y = np.zeros((len(bags), dim))
        mag = np.zeros((len(bags), dim))
        for i, bag in enumerate(bags):
            rows = W[bag]
            y[i] = rows.mean(axis=0) if mean else rows.sum(axis=0)
            mag[i] = np.abs(rows).mean(axis=0) if mean else np.abs(rows).sum(axis=0)
        rest = layers[1:]
    else:
        arr = np.asarray(x)
        single = arr.ndim == 1
        y = arr.reshape(1, -1) if single else arr
        y = y.astype(np.float32).astype(np.float64)
        mag = np.abs(np.nan_to_num(y))
        rest = layers
    peak = float(mag.max()) if mag.size else 0.0
    for layer in rest:
        if layer["op"] == "activation":
            y = activation(layer["activation"], y)
            continue
        if layer["op"] != "dense":
            raise ValueError(f"an {layer['op']} layer can only come first")
        W = as_compute(arrays[layer["weight"]])
        if not layer.get("transpose", False):
            W = W.T  # stored (out x in); now (in x out)
        y = y @ W
        mag = mag @ np.abs(W)
        if layer.get("bias") is not None:
            b = as_compute(arrays[layer["bias"]]).reshape(-1)
            y = y + b
            mag = mag + np.abs(b)
        y = activation(layer.get("activation"), y)
        peak = max(peak, float(mag.max()) if mag.size else 0.0)
    return (y[0] if single else y), peak


def assert_matches(
    got: np.ndarray, layers, arrays, x, *, rtol: float = RTOL, atol: float = ATOL
) -> None:
    """got (from the engine) equals the reference: shape, dtype float32, values to rtol
    relative, with atol scaled by the network's magnitude; NaN exactly where numpy's."""
    want, peak = reference_predict(layers, arrays, x)
    assert isinstance(got, np.ndarray), type(got)
    assert got.dtype == np.float32, got.dtype
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(
        np.isnan(got), np.isnan(want), err_msg="NaN where numpy has none, or the other way round"
    )
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * max(1.0, peak))
