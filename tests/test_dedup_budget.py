"""The budget search (Store.dedup's default strategy): monotone in max_drop, refines a
rejected step to the next finer encoding, respects a tolerance cap, stays within budget."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dedup_approx import LAYERS, closeness, family, make_store

import sqlite_tensor
from sqlite_tensor.dedup import encoding


def agreement(models, seed=0, n=400):
    """A validator like accuracy: the share of random inputs on which a model as stored
    gives the label the original gives (a noisy, non-monotone score, as real ones are)."""
    x = np.random.default_rng(seed).standard_normal((n, 96)).astype(np.float32)

    def forward(t):
        h = np.maximum(x @ t["fc1.weight"].T + t["fc1.bias"], 0)
        return (h @ t["fc2.weight"].T + t["fc2.bias"]).argmax(1)

    labels = {m: forward(t) for m, t in models.items()}

    def validate(store, model):
        return float(np.mean(store.predict(model, x).argmax(1) == labels[model]))

    return validate


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**16),
    variants=st.integers(1, 3),
    small=st.sampled_from([0.01, 0.05, 0.2]),
    changed=st.sampled_from([0.0, 0.25, 0.6]),
    budgets=st.lists(st.sampled_from([0.0, 0.005, 0.02, 0.05, 0.1, 0.3]), min_size=2, max_size=3),
)
def test_a_larger_budget_never_stores_more_bytes(
    tmp_path_factory, seed, variants, small, changed, budgets
):
    models = family(variants + 1, seed=seed, small=small, changed=changed)
    assert_bytes_never_rise(
        tmp_path_factory.mktemp("mono"), models, agreement(models, seed), budgets
    )


def assert_bytes_never_rise(tmp, models, validate, budgets):
    """Store.dedup of the same store at each budget: every model within it, the store
    sound, and a larger max_drop never storing more bytes."""
    make_store(tmp, models, "template.sqlite").close()
    stored = []
    for k, budget in enumerate(sorted(set(budgets))):
        shutil.copy(tmp / "template.sqlite", tmp / f"{k}.sqlite")
        store = sqlite_tensor.Store(str(tmp / f"{k}.sqlite"))
        report = store.dedup(validator=validate, max_drop=budget)
        for r in report.models:  # within budget, as scored now
            assert validate(store, r.model) >= r.score_before - budget - 1e-12
        assert store.verify() == []
        stored.append((budget, store.stats()["physical_bytes"]))
        store.close()
    for (b1, n1), (b2, n2) in zip(stored, stored[1:]):
        assert n2 <= n1, f"max_drop {b2} stores {n2} bytes, {b1} stores {n1}"


def test_a_rejected_step_falls_back_to_the_next_finer_encoding(tmp_path):
    # Every block moved by a few percent: substituting any loses more than the budget,
    # a residual loses little. No weight tile (16 x 16, 10 x 16) may be kept whole: each
    # gets a residual. (fc1.bias's 16 x 1 tiles may be: their few residual layouts that
    # cost under half the tile can be too coarse.)
    models = family(2, seed=3, small=0.05, changed=0.0)
    store = make_store(tmp_path, models)
    report = store.dedup(validator=closeness(models), max_drop=0.02)
    r = report["v1"]
    assert r.examined == 24 + 4 + 4  # v1's distinct changed blocks
    assert r.substituted == 0 and r.residuals >= 24 + 4
    with_residual = {
        name: n
        for name, n in store.conn.execute(
            "SELECT t.name, count(*) FROM tensors_residuals r JOIN tensors_tensors t"
            " ON t.id = r.tensor_id JOIN tensors_models m ON m.id = t.model_id"
            " WHERE m.name = 'v1' GROUP BY t.name"
        )
    }
    assert with_residual["fc1.weight"] == 24 and with_residual["fc2.weight"] == 4
    assert r.score_after >= r.score_before - 0.02
    assert report.physical_bytes_after < report.physical_bytes_before
    # the greedy guard's fixed tolerance leaves budget unspent: dearer residuals
    greedy = make_store(tmp_path, models, "greedy.sqlite").dedup(
        validator=closeness(models), max_drop=0.02, strategy="greedy"
    )
    assert greedy["v1"].residual_bytes > r.residual_bytes


def test_the_budget_binds_between_two_thresholds(tmp_path):
    models = family(3, seed=5, small=0.02, changed=0.5)
    store = make_store(tmp_path, models)
    validate = agreement(models, 5)
    report = store.dedup(validator=validate, max_drop=0.01, search="exhaustive")
    for r in report.models[1:]:
        # the tiles' two binary searches and the factor path's one (at most 22
        # configurations), not one check per block
        assert r.validations <= 12 + 5, r
        assert validate(store, r.model) >= r.score_before - 0.01
    assert sum(r.replaced for r in report.models) > 0
    assert store.verify() == []


def test_tolerance_caps_every_blocks_error(tmp_path):
    models = family(3, seed=2, small=0.01, changed=0.3)
    store = make_store(tmp_path, models)
    report = store.dedup(validator=closeness(models), max_drop=1.0, tolerance=0.05)
    assert sum(r.replaced for r in report.models) > 0
    for m in ("v1", "v2"):
        for name, w in models[m].items():
            got = store.get_tensor(m, name).reshape(w.shape)
            w2 = w.reshape(-1, w.shape[-1]) if w.ndim > 1 else w.reshape(1, -1)
            g2 = got.reshape(w2.shape)
            for bi in range(0, w2.shape[0], 16):
                for bj in range(0, w2.shape[1], 16):
                    t, e = w2[bi : bi + 16, bj : bj + 16], g2[bi : bi + 16, bj : bj + 16]
                    assert np.linalg.norm(e - t) <= 0.05 * np.linalg.norm(t) * (1 + 1e-4) + 1e-6


def test_ladder_rungs_are_cheapest_first_and_keep_is_exact():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((6, 16, 16)).astype(np.float32)
    t = s + 0.05 * rng.standard_normal(s.shape).astype(np.float32)
    t[0] = s[0]  # equal: substitution is exact
    items = list(range(6))
    lad = encoding.Ladder(items, t, s, residuals_allowed=True)
    assert (np.diff(lad.nbytes) >= 0).all()
    assert lad.rungs[0][0] == encoding.SUBSTITUTE and lad.rungs[-1][0] == encoding.KEEP
    assert (lad.error[:, -1] == 0).all() and lad.error[0, 0] == 0
    assert (lad.cheapest_within(np.inf) == 0).all()
    assert (lad.cheapest_within(0.0)[1:] == len(lad.rungs) - 1).all()
    # a threshold between: each block's first rung within it, never a dearer one
    picks = lad.cheapest_within(0.02)
    for i, j in enumerate(picks):
        assert lad.error[i, j] <= 0.02
        assert (lad.error[i, :j] > 0.02).all()
    only = encoding.Ladder(items, t, s, residuals_allowed=False)
    assert [r[0] for r in only.rungs] == [encoding.SUBSTITUTE, encoding.KEEP]


@pytest.mark.parametrize("strategy", ["budget", "greedy"])
def test_both_strategies_serve_what_they_validated(tmp_path, strategy):
    models = family(3, seed=9)
    store = make_store(tmp_path, models)
    x = np.random.default_rng(1).standard_normal((7, 96)).astype(np.float32)
    report = store.dedup(validator=agreement(models, 9), max_drop=0.02, strategy=strategy)
    for m in models:
        tensors = {n: store.get_tensor(m, n) for n in models[m]}
        h = np.maximum(x @ tensors["fc1.weight"].T + tensors["fc1.bias"], 0)
        want = h @ tensors["fc2.weight"].T + tensors["fc2.bias"]
        np.testing.assert_allclose(store.predict(m, x), want, rtol=1e-4, atol=1e-4)
    assert report.physical_bytes_after == store.stats()["physical_bytes"]
    assert [layer["weight"] for layer in store.layers("v1")] == [
        layer["weight"] for layer in LAYERS
    ]
