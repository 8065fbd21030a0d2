"""The non-store baselines (issue 14): the numpy forward is what Store.predict computes, each
baseline keeps its budget on the validation set where it claims to, and its bytes are what
its encoding costs, recomputed here from scratch."""

from __future__ import annotations

import re

import numpy as np
import pytest
from family_support import blas_one_thread, small  # noqa: F401 (an autouse fixture)

import sqlite_tensor
from sqlite_tensor.testing import baselines
from sqlite_tensor.testing.baselines import accuracy, forward

NAMES = ["text", "mlp-shift", "frozen", "retrained"]
_cache = {}


def _results(name, max_drop=0.01):
    key = (name, max_drop)
    if key not in _cache:
        _cache[key] = baselines.run(small(name), max_drop)
    return _cache[key]


@pytest.mark.parametrize("name", ["lr-epochs", "text"])
def test_numpy_forward_is_store_predict(tmp_path, name):
    family = small(name)
    model = list(family.models)[-1]
    store = sqlite_tensor.Store(str(tmp_path / "f.sqlite"), block_rows=32, block_cols=32)
    store.add_model(model, family.models[model], layers=family.layers)
    x = family.test[model][0]
    x = x[:300]
    np.testing.assert_allclose(
        store.predict(model, x),
        forward(family.models[model], family.layers, x),
        rtol=1e-4,
        atol=1e-5,
    )
    store.close()


def test_numpy_forward_other_layers(tmp_path):
    """embedding_bag sum, Keras-layout dense, a separate activation, sigmoid and gelu."""
    rng = np.random.default_rng(0)
    t = {
        "e": rng.normal(size=(50, 6)).astype(np.float32),
        "w1": rng.normal(size=(6, 5)).astype(np.float32),  # in x out
        "b1": rng.normal(size=5).astype(np.float32),
        "w2": rng.normal(size=(4, 5)).astype(np.float32),
    }
    layers = [
        {"op": "embedding_bag", "weight": "e", "mode": "sum"},
        {"op": "dense", "weight": "w1", "bias": "b1", "activation": "gelu", "transpose": True},
        {"op": "dense", "weight": "w2", "activation": "sigmoid"},
        {"op": "activation", "activation": "softmax"},
    ]
    bags = [rng.integers(0, 50, rng.integers(1, 9)) for _ in range(40)]
    store = sqlite_tensor.Store(str(tmp_path / "o.sqlite"), block_rows=4, block_cols=4)
    store.add_model("m", t, layers=layers)
    np.testing.assert_allclose(
        store.predict("m", bags), forward(t, layers, bags), rtol=1e-4, atol=1e-6
    )
    store.close()


def _svd_truncated(delta, r):
    u, s, vt = np.linalg.svd(delta.astype(np.float64), full_matrices=False)
    return (u[:, :r] * s[:r]) @ vt[:r]


@pytest.mark.parametrize("name", NAMES)
def test_lowrank_delta_budget_and_bytes(name):
    family = small(name)
    res = _results(name)["lowrank-delta"]
    first = next(iter(family.models))
    expected = sum(a.nbytes for a in family.models[first].values())
    recon = {first: family.models[first]}
    for m in list(family.models)[1:]:
        ref, model, setting = recon[family.reference[m]], family.models[m], res.setting[m]
        t = {}
        for k, a in model.items():
            if np.array_equal(a, ref[k]):
                t[k] = ref[k]
            elif a.ndim == 1:
                t[k], expected = a, expected + a.nbytes
            else:
                r = setting["ranks"][k]
                if r == "whole":
                    t[k], expected = a, expected + a.nbytes
                else:
                    assert (a.shape[0] + a.shape[1]) * r < a.size
                    t[k] = ref[k] + _svd_truncated(a - ref[k], r).astype(np.float32)
                    expected += (a.shape[0] + a.shape[1]) * r * 4
        recon[m] = t
        x, y = family.validation[m]
        drop = accuracy(model, family.layers, x, y) - accuracy(t, family.layers, x, y)
        # another SVD routine: a prediction or two may flip on rounding
        assert drop == pytest.approx(res.validation_drop[m], abs=2.5 / len(y))
        assert res.validation_drop[m] <= 0.01
        tx, ty = family.test[m]
        test_drop = accuracy(model, family.layers, tx, ty) - accuracy(t, family.layers, tx, ty)
        assert test_drop == pytest.approx(res.drop[m], abs=2.5 / len(ty))
    assert res.bytes == expected
    assert res.over_budget == []
    assert res.logical_bytes == sum(a.nbytes for t in family.models.values() for a in t.values())
    assert res.ratio > 1.5  # the deltas are low-rank enough to pay


@pytest.mark.parametrize("name", NAMES)
def test_bitdelta_bytes_and_honest_budget(name):
    family = small(name)
    res = _results(name)["bitdelta"]
    first = next(iter(family.models))
    expected = sum(a.nbytes for a in family.models[first].values())
    recon = {first: family.models[first]}
    for m in list(family.models)[1:]:
        ref, t = recon[family.reference[m]], {}
        for k, a in family.models[m].items():
            d = a.astype(np.float64) - ref[k]
            if not d.any():
                t[k] = ref[k]
            elif a.ndim == 1:
                t[k], expected = a, expected + a.nbytes
            else:
                scale = np.abs(d).mean()
                t[k] = (ref[k] + np.where(d > 0, scale, -scale)).astype(np.float32)
                expected += (a.size + 7) // 8 + 4
        recon[m] = t
        x, y = family.validation[m]
        drop = accuracy(family.models[m], family.layers, x, y) - accuracy(t, family.layers, x, y)
        assert drop == pytest.approx(res.validation_drop[m], abs=2.5 / len(y))
        assert (m in res.over_budget) == (res.validation_drop[m] > 0.01)
    assert res.bytes == expected
    assert res.ratio > 4.0  # 32x on every changed weight, minus the base and the biases


def test_separate_and_bad_arguments():
    family = small("retrained")
    res = baselines.separate(family)
    assert (
        res.bytes
        == res.logical_bytes
        == sum(a.nbytes for t in family.models.values() for a in t.values())
    )
    assert res.ratio == 1.0 and res.worst_drop == 0.0
    with pytest.raises(ValueError, match="max_drop must be a fraction"):
        baselines.run(family, 2.0)
    with pytest.raises(ValueError, match="unknown baselines"):
        baselines.run(family, 0.01, methods=["zip"])


def test_lowrank_more_budget_never_more_bytes():
    """A star family: each variant's choice is the cheapest within budget, so a larger
    budget can only store fewer bytes; no budget stores every delta whole."""
    family = small("mlp-shift")
    sizes = [baselines.lowrank_delta(family, d).bytes for d in (0.0, 0.01, 0.05)]
    assert sizes[0] >= sizes[1] >= sizes[2]
    assert sizes[2] < sizes[0]
    none = baselines.lowrank_delta(family, 0.0)
    assert all(v <= 0.0 for v in none.validation_drop.values())


def test_command_prints_the_table(capsys):
    baselines.main(["--size", "small", "retrained"])
    out = capsys.readouterr().out
    assert "lowrank x" in out and "bitdelta x" in out
    row = next(line for line in out.splitlines() if line.startswith("retrained      held out"))
    assert row.count("p") >= 4  # validation and test drops of both methods
    with pytest.raises(SystemExit):
        baselines.main(["nosuchfamily"])
    assert "unknown families ['nosuchfamily']" in capsys.readouterr().err


def test_the_families_table_puts_the_store_beside_the_baselines(capsys):
    from sqlite_tensor.testing import dedup_families

    dedup_families.main(["--size", "small", "--sweep", "--paths", "text"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("text           fit"))
    assert len(re.findall(r"\d\.\d\dx", row)) == len(dedup_families.METHODS)
    sweep = [line for line in out.splitlines() if line.startswith("text           ours")]
    assert len(sweep) == len(dedup_families.SWEEP_DROPS)
    # --paths: one line per model of the family, naming its factors or none
    paths = out.split("each model's factors")[1].splitlines()[1:]
    listed = [line.split()[1] for line in paths if line.startswith("text ")]
    assert listed == ["base", "task-1", "task-2", "task-3", "task-4"], out
