"""Validators: how the accuracy guard scores a model as it is stored right now.

A validator is any callable ``validator(store, model) -> float`` (higher is better). The
built-in ones run the model from the store with the compiled engine, so they score exactly
what serving would compute: :func:`accuracy` (``Store.predict``: classifiers, text ones
included), :func:`embedding_agreement` and :func:`retrieval_accuracy` (``Store.embed``:
sentence embedders).
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


def embedding_agreement(texts, reference=None):
    """A validator scoring how closely a sentence embedder, as stored, agrees with its
    original: the mean cosine (-1..1) between its embeddings of ``texts`` and the
    reference embeddings of the same texts.

    ``reference`` maps model names to ``(len(texts), dim)`` arrays (the original's
    embeddings, computed before dedup); or None: the embeddings the store gives at this
    validator's first call for each model, which :meth:`Store.dedup` makes before it changes
    anything. ``texts`` is a list of str, or a dict of lists by model name.
    """
    snapshots: dict[str, np.ndarray] = {}
    if reference is not None and not isinstance(reference, Mapping):
        raise TypeError(
            f"reference must be a dict of arrays by model name, or None; got "
            f"{type(reference).__name__}"
        )

    def validate(store, model: str) -> float:
        mine = _for_model(texts, model, "embedding_agreement()", "texts")
        e = _unit(_embed(store, model, mine))
        if reference is None:
            ref = snapshots.setdefault(model, e)
        else:
            ref = _for_model(reference, model, "embedding_agreement()", "reference embeddings")
            ref = _unit(np.asarray(ref, dtype=np.float64))
        if ref.shape != e.shape:
            raise ValidatorError(
                f"model {model!r}: embeddings of shape {e.shape} against reference "
                f"embeddings of shape {ref.shape}"
            )
        return float(np.mean(np.sum(e * ref, axis=1)))

    return validate


def retrieval_accuracy(queries, query_labels=None, documents=None, document_labels=None):
    """A validator scoring a sentence embedder by retrieval: the share (0..1) of queries
    whose nearest document (by cosine, over the model's embeddings as stored) has the
    query's label.

    Pass the four lists, or one dict by model name of ``(queries, query_labels,
    documents, document_labels)`` tuples to validate each model on its own task. Labels
    are compared with ``==`` (ints, strings, tuples).
    """
    if isinstance(queries, Mapping):
        if query_labels is not None or documents is not None or document_labels is not None:
            raise TypeError(
                "give a dict of (queries, labels, documents, labels) by model, or four lists"
            )
        sets = {k: _retrieval_set(*v, where=repr(k)) for k, v in queries.items()}
    else:
        sets = _retrieval_set(queries, query_labels, documents, document_labels, where="the")

    def validate(store, model: str) -> float:
        q, ql, d, dl = (
            _for_model(sets, model, "retrieval_accuracy()", "retrieval set")
            if isinstance(sets, dict)
            else sets
        )
        eq = _unit(_embed(store, model, q))
        ed = _unit(_embed(store, model, d))
        if eq.shape[1] != ed.shape[1]:
            raise ValidatorError(f"model {model!r}: query and document embeddings differ in size")
        best = np.argmax(eq @ ed.T, axis=1)
        return float(np.mean([ql[i] == dl[j] for i, j in enumerate(best)]))

    return validate


def _retrieval_set(queries, query_labels, documents, document_labels, *, where):
    parts = [
        list(x) if x is not None else None
        for x in (queries, query_labels, documents, document_labels)
    ]
    if any(p is None for p in parts):
        raise TypeError(
            "retrieval_accuracy() needs queries, query_labels, documents and document_labels"
        )
    q, ql, d, dl = parts
    if not q or not d:
        raise ValueError(f"{where} retrieval set needs at least one query and one document")
    if len(q) != len(ql) or len(d) != len(dl):
        raise ValueError(
            f"{where} retrieval set: {len(q)} queries with {len(ql)} labels, "
            f"{len(d)} documents with {len(dl)} labels; each needs one label"
        )
    return q, ql, d, dl


def _for_model(by_model, model: str, who: str, what: str):
    if not isinstance(by_model, Mapping):
        return by_model
    if model not in by_model:
        raise ValidatorError(
            f"{who}: no {what} for model {model!r}; given for "
            f"{', '.join(map(repr, sorted(by_model)))}"
        )
    return by_model[model]


def _embed(store, model: str, texts) -> np.ndarray:
    if not hasattr(store, "embed"):
        raise ValidatorError(
            f"this store cannot embed text (no Store.embed), so model {model!r} cannot be scored"
        )
    out = np.asarray(store.embed(model, list(texts)), dtype=np.float64)
    if out.ndim != 2 or len(out) != len(texts):
        raise ValidatorError(
            f"model {model!r}: embedding {len(texts)} texts gave shape {out.shape}"
        )
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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
