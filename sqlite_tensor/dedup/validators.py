"""Validators: how the accuracy guard scores a model as it is stored right now.

A validator is any callable ``validator(store, model) -> float`` (higher is better). The
built-in one, :func:`accuracy`, runs the model from the store with the compiled engine
(``Store.predict``), so it scores exactly what serving would compute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..errors import TensorStoreError


class ValidatorError(TensorStoreError):
    """A validator that raised, or returned something that is not a finite number."""


def accuracy(x_val, y_val):
    """A validator scoring the share of validation inputs a model labels right (0..1).

    ``x_val`` is what :meth:`Store.predict` takes (a 2-D feature array, ids, or a list of
    id bags) and ``y_val`` the integer labels; or pass dicts of both keyed by model name
    to validate each model on its own task. The prediction is the argmax of the outputs;
    a model with one output predicts 1 when it exceeds 0.5 after a sigmoid, 0 otherwise.
    """
    per_model = isinstance(x_val, Mapping)
    if per_model != isinstance(y_val, Mapping):
        raise TypeError("x_val and y_val must both be dicts by model name, or neither")
    if per_model and set(x_val) != set(y_val):
        raise ValueError(
            f"x_val and y_val name different models: {sorted(x_val)} vs {sorted(y_val)}"
        )
    labels = {k: _labels(v) for k, v in y_val.items()} if per_model else _labels(y_val)

    def validate(store, model: str) -> float:
        if per_model:
            if model not in x_val:
                raise ValidatorError(
                    f"accuracy(): no validation set for model {model!r}; "
                    f"sets are given for {', '.join(map(repr, sorted(x_val)))}"
                )
            x, y = x_val[model], labels[model]
        else:
            x, y = x_val, labels
        layers = store.layers(model)
        if layers is None:
            raise ValidatorError(
                f"model {model!r} has no layers, so accuracy() cannot run it; "
                f"give it some with Store.set_layers({model!r}, [...])"
            )
        out = np.asarray(store.predict(model, x))
        if out.ndim == 1:
            out = out[None, :]
        if len(out) != len(y):
            raise ValidatorError(f"model {model!r}: {len(out)} predictions for {len(y)} labels")
        if out.shape[1] == 1:
            sigmoid = layers[-1].get("activation") == "sigmoid"
            predicted = (out[:, 0] > (0.5 if sigmoid else 0.0)).astype(np.int64)
        else:
            predicted = out.argmax(axis=1)
        return float(np.mean(predicted == y))

    return validate


def _labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not len(y) or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(
            f"labels must be a non-empty 1-D array of integers, got {y.dtype} {y.shape}"
        )
    return y.astype(np.int64)


def score(validator, store, model: str) -> float:
    """Run the validator; a finite float or a ValidatorError saying what went wrong."""
    try:
        value = validator(store, model)
    except ValidatorError:
        raise
    except Exception as e:
        raise ValidatorError(
            f"the validator raised {type(e).__name__} for model {model!r}: {e}"
        ) from e
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise ValidatorError(
            f"the validator returned {type(value).__name__} ({value!r}) for model "
            f"{model!r}; it must return a number (higher is better)"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValidatorError(
            f"the validator returned {value} for model {model!r}; it must be finite"
        )
    return value
