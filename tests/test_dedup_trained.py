"""Approximate dedup end to end on a small trained family: budget kept, served right."""

from __future__ import annotations

import numpy as np
import pytest

import sqlite_tensor
from sqlite_tensor.dedup import accuracy
from sqlite_tensor.testing import trained
from sqlite_tensor.testing.dedup_compare import compare, table


@pytest.fixture(scope="module")
def family():
    return trained.fine_tuned_family(
        2, vocab=2048, dim=32, hidden=32, base_epochs=3, tune_docs=4000, eval_docs=1000
    )


@pytest.mark.parametrize("use_residuals", [False, True])
def test_trained_family_within_budget_and_served_as_stored(tmp_path, family, use_residuals):
    store = sqlite_tensor.Store(str(tmp_path / "f.sqlite"), block_rows=32, block_cols=32)
    for name, tensors in family.models.items():
        store.add_model(name, tensors, layers=family.layers)
    x = {m: v[0] for m, v in family.validation.items()}
    y = {m: v[1] for m, v in family.validation.items()}
    report = store.dedup(
        validator=accuracy(x, y), max_drop=0.01, residuals=use_residuals, tolerance=0.1
    )
    assert store.verify() == []
    assert report.physical_bytes_after < report.physical_bytes_before
    for m in family.models:
        # checked afterwards, by running the model from the store
        score = accuracy(x, y)(store, m)
        assert score >= report[m].score_before - 0.01
        assert score == pytest.approx(report[m].score_after)
        # what the kernels compute is the numpy forward pass of the stored weights, for
        # one bag and for many (where residual tiles are built whole)
        weights = store.get_model(m)
        bags = family.test[m][0]
        np.testing.assert_allclose(
            store.predict(m, bags), trained.forward(weights, bags), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            store.predict(m, bags[:1]), trained.forward(weights, bags[:1]), rtol=1e-4, atol=1e-5
        )
    if use_residuals:
        assert sum(r.residuals for r in report.models) > 0


def test_compare_reports_every_method(family):
    results = compare(
        family, store_options={"block_rows": 32, "block_cols": 32, "page_blocks": 4}, tolerance=0.1
    )
    assert results["exact"].ratio >= 1.0
    for method in ("substitute, lsh", "residual, lsh", "residual, minhash", "residual, exhaustive"):
        assert results[method].physical_bytes < results["exact"].physical_bytes
        assert results[method].worst_drop <= 0.05  # held-out test sets: within noise of the budget
    assert results["inference_ratio"] > 0
    text = table(results)
    assert "residual, lsh" in text and "inference" in text
