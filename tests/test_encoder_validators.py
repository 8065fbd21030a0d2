"""The validators for sentence embedders (embedding_agreement, retrieval_accuracy) and
accuracy() over texts: on a stand-in store whose embeddings are known, so every expected
score is computed by hand; with the engine, on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from sqlite_tensor.dedup import ValidatorError, embedding_agreement, retrieval_accuracy
from sqlite_tensor.dedup.validators import score


class FakeStore:
    """Embeds a text as the row ``table[text]`` of its model, scaled (cosine ignores it)."""

    def __init__(self, tables):
        self.tables = tables
        self.calls = 0

    def embed(self, model, texts):
        self.calls += 1
        return np.array([self.tables[model][t] * 3.0 for t in texts], dtype=np.float32)


TEXTS = ["a", "b", "c", "d"]


def _table(rng, dim=8):
    return {t: rng.standard_normal(dim) for t in TEXTS}


def _unit(v):
    return v / np.linalg.norm(v)


def test_agreement_against_given_reference():
    rng = np.random.default_rng(0)
    table = _table(rng)
    store = FakeStore({"m": table})
    same = np.array([table[t] for t in TEXTS])
    assert embedding_agreement(TEXTS, {"m": same})(store, "m") == pytest.approx(1.0)
    other = np.array([rng.standard_normal(8) for _ in TEXTS])
    want = np.mean([_unit(table[t]) @ _unit(o) for t, o in zip(TEXTS, other)])
    assert embedding_agreement(TEXTS, {"m": other})(store, "m") == pytest.approx(want)
    assert embedding_agreement(TEXTS, {"m": -same})(store, "m") == pytest.approx(-1.0)


def test_agreement_with_the_first_call_as_reference():
    """reference=None: the first score is 1, later ones compare with that snapshot."""
    rng = np.random.default_rng(1)
    table = _table(rng)
    store = FakeStore({"m": dict(table), "n": _table(rng)})
    v = embedding_agreement(TEXTS)
    assert v(store, "m") == pytest.approx(1.0)
    assert v(store, "n") == pytest.approx(1.0)  # its own snapshot, not m's
    store.tables["m"]["a"] = -table["a"]  # "dedup" flips one text's embedding
    assert v(store, "m") == pytest.approx(0.5)  # (1 + 1 + 1 - 1) / 4


def test_agreement_errors():
    store = FakeStore({"m": _table(np.random.default_rng(2))})
    with pytest.raises(ValidatorError, match="no reference embeddings for model 'm'"):
        embedding_agreement(TEXTS, {"x": np.zeros((4, 8))})(store, "m")
    with pytest.raises(ValidatorError, match=r"shape \(4, 8\) against .* shape \(4, 5\)"):
        embedding_agreement(TEXTS, {"m": np.ones((4, 5))})(store, "m")
    with pytest.raises(TypeError, match="reference must be a dict"):
        embedding_agreement(TEXTS, np.ones((4, 8)))
    with pytest.raises(ValidatorError, match="no Store.embed"):
        embedding_agreement(TEXTS)(object(), "m")
    # score() wraps a validator that raises anything else
    with pytest.raises(ValidatorError, match="raised KeyError"):
        score(embedding_agreement(["zzz"]), store, "m")


def test_retrieval_accuracy_counts_hits():
    """Queries and documents on known directions: query i's nearest document is chosen by
    construction, so the expected share is known."""
    e = np.eye(4)
    table = {"q0": e[0], "q1": e[1], "q2": e[2], "d0": e[0], "d1": e[1] + 0.1 * e[2], "d2": e[3]}
    store = FakeStore({"m": table})
    v = retrieval_accuracy(["q0", "q1", "q2"], [0, 1, 2], ["d0", "d1", "d2"], [0, 1, 2])
    # q0 -> d0 (hit), q1 -> d1 (hit), q2 -> d1 (nearest; its label 1 != 2: a miss)
    assert v(store, "m") == pytest.approx(2 / 3)
    both = retrieval_accuracy(
        {
            "m": (["q0"], ["x"], ["d0", "d2"], ["x", "y"]),
            "n": (["q0"], ["x"], ["d0", "d2"], ["y", "x"]),
        }
    )
    store.tables["n"] = table
    assert both(store, "m") == 1.0
    assert both(store, "n") == 0.0
    with pytest.raises(ValidatorError, match="no retrieval set for model 'o'"):
        both(store, "o")


def test_retrieval_accuracy_bad_sets():
    with pytest.raises(ValueError, match="3 queries with 2 labels"):
        retrieval_accuracy(["a", "b", "c"], [0, 1], ["d"], [0])
    with pytest.raises(ValueError, match="at least one query"):
        retrieval_accuracy([], [], ["d"], [0])
    with pytest.raises(TypeError, match="needs queries"):
        retrieval_accuracy(["a"], [0])


def test_retrieval_accuracy_wrong_embedding_count():
    class Short(FakeStore):
        def embed(self, model, texts):
            return super().embed(model, texts)[:1]

    store = Short({"m": _table(np.random.default_rng(3))})
    with pytest.raises(ValidatorError, match="embedding 2 texts gave shape"):
        retrieval_accuracy(["a", "b"], [0, 1], ["c"], [0])(store, "m")
