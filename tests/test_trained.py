"""The trained family: deterministic, well-formed, accurate where it should be, and served by
a store exactly as the numpy reference computes it."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sqlite_tensor
from sqlite_tensor.testing import trained
from sqlite_tensor.testing.trained import LAYERS, accuracy, delta_stats, fine_tuned_family, forward

# The small configuration: a couple of seconds at most on one core.
SMALL = dict(vocab=2048, dim=32, hidden=32, base_epochs=3, tune_docs=4000, eval_docs=1000)
NAMES = ["base", "task-1", "task-2"]
SHAPES = {
    "embedding.weight": (2048, 32),
    "fc1.weight": (32, 32),
    "fc1.bias": (32,),
    "fc2.weight": (4, 32),
    "fc2.bias": (4,),
}
# Tiny and quick, for properties that do not need accuracy.
TINY = dict(vocab=256, dim=8, hidden=8, base_docs=1000, tune_docs=200, eval_docs=50)


@pytest.fixture(scope="module")
def family():
    return fine_tuned_family(2, **SMALL)


def test_shapes_and_dtypes(family):
    assert list(family.models) == NAMES
    assert family.layers == LAYERS and family.layers is not LAYERS
    for name, tensors in family.models.items():
        assert {k: v.shape for k, v in tensors.items()} == SHAPES
        assert all(v.dtype == np.float32 for v in tensors.values())
        assert all(np.isfinite(v).all() for v in tensors.values())
        for held_out in (family.validation, family.test):
            bags, labels = held_out[name]
            assert len(bags) == len(labels) == SMALL["eval_docs"]
            assert labels.dtype == np.int64 and set(np.unique(labels)) == {0, 1, 2, 3}
            for bag in bags:
                assert bag.dtype == np.int64 and bag.ndim == 1 and 10 <= len(bag) <= 60
                assert 0 <= bag.min() and bag.max() < 2048
        # validation and test are different documents
        assert not all(
            np.array_equal(a, b)
            for a, b in zip(family.validation[name][0][:20], family.test[name][0][:20])
        )
    assert set(family.accuracy) == set(family.base_accuracy) == set(NAMES)


def test_deterministic(family):
    again = fine_tuned_family(2, **SMALL)
    for name in NAMES:
        for k, v in family.models[name].items():
            assert v.tobytes() == again.models[name][k].tobytes(), (name, k)
        for a, b in zip(family.validation[name][0], again.validation[name][0]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(family.test[name][1], again.test[name][1])
    assert family.accuracy == again.accuracy
    # the seed matters
    one, two = fine_tuned_family(1, seed=1, **TINY), fine_tuned_family(1, seed=2, **TINY)
    assert not np.array_equal(
        one.models["task-1"]["fc1.weight"], two.models["task-1"]["fc1.weight"]
    )


def test_accuracies(family):
    acc, by_base = family.accuracy, family.base_accuracy
    assert 0.8 <= acc["base"] <= 0.97
    assert by_base["base"] == acc["base"]
    for name in NAMES[1:]:
        assert acc[name] >= 0.75, name  # fine-tuning learnt task i
        assert acc[name] >= acc["base"] - 0.08, name  # nearly as well as the base did
        assert by_base[name] <= acc[name] - 0.08, name  # the base is clearly worse there
    for name in NAMES:
        bags, labels = family.validation[name]
        assert accuracy(family.models[name], bags, labels) == acc[name]
        # the test set agrees with the validation set
        assert abs(accuracy(family.models[name], *family.test[name]) - acc[name]) < 0.06


def test_fine_tuning_moves_frequent_rows_most(family):
    base = family.models["base"]
    for name in NAMES[1:]:
        t = family.models[name]
        for k in base:  # full fine-tuning: every tensor moved
            assert not np.array_equal(t[k], base[k]), (name, k)
        moved = np.abs(t["embedding.weight"] - base["embedding.weight"]).max(axis=1)
        # row 0 is the most frequent word
        assert np.median(moved[:100]) > 4 * np.median(moved[-1000:])
        stats = delta_stats(base, t)
        assert stats["rows_changed"] == pytest.approx(np.mean(moved > 1e-3))
        assert 0 < stats["relative"]["embedding.weight"] < 0.5
        assert delta_stats(base, base) == {
            "rows_changed": 0.0,
            "rows_identical": 1.0,
            "relative": dict.fromkeys(base, 0.0),
        }


def test_vocabulary_order():
    ordered = fine_tuned_family(0, **TINY)
    counts = np.bincount(np.concatenate(ordered.validation["base"][0]), minlength=256)
    assert counts.argmax() == 0 and counts[:16].sum() > 10 * counts[-16:].sum()
    shuffled = fine_tuned_family(0, frequency_ordered=False, **TINY)
    counts = np.bincount(np.concatenate(shuffled.validation["base"][0]), minlength=256)
    assert counts.argmax() != 0


def test_forward_is_the_mean_then_the_dense_layers(family):
    t = family.models["task-1"]
    bags = family.validation["task-1"][0][:5] + [np.array([7]), np.array([3, 3, 9])]
    x = np.stack([t["embedding.weight"][b].astype(np.float64).mean(0) for b in bags])
    h = np.maximum(x @ t["fc1.weight"].T + t["fc1.bias"], 0)
    want = h @ t["fc2.weight"].T + t["fc2.bias"]
    got = forward(t, bags)
    assert got.dtype == np.float32 and got.shape == (7, 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert forward(t, [[1, 2, 3]]).shape == (1, 4)
    assert forward(t, []).shape == (0, 4)


def test_store_predicts_the_same_logits(family, tmp_path):
    store = sqlite_tensor.Store(str(tmp_path / "f.sqlite"))
    for name, tensors in family.models.items():
        store.add_model(name, tensors, layers=family.layers)
    for name in NAMES:
        bags = family.validation[name][0][:300]
        got = store.predict(name, bags)
        want = forward(family.models[name], bags)
        assert got.shape == want.shape == (300, 4)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        for k, v in family.models[name].items():
            assert store.get_tensor(name, k).tobytes() == v.tobytes()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_variants=-1),
        dict(n_variants=1.5),
        dict(n_variants=True),
        dict(vocab=1),
        dict(dim=0),
        dict(hidden=-3),
        dict(classes=1),
        dict(latent=0),
        dict(seed=-1),
        dict(min_len=0),
        dict(min_len=20, max_len=10),
        dict(label_noise=1.5),
        dict(label_noise=-0.1),
        dict(task_angle=math.nan),
        dict(base_lr=0.0),
        dict(tune_lr=-1.0),
        dict(base_docs=0),
        dict(tune_docs=0),
        dict(eval_docs=0),
        dict(base_epochs=0),
        dict(tune_batch=0),
        dict(zipf=-1.0),
        dict(salient=0.0),
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        fine_tuned_family(**{"n_variants": 1, **TINY, **kwargs})


def test_bad_inputs(family):
    t = family.models["base"]
    with pytest.raises(ValueError, match="empty"):
        forward(t, [np.array([1, 2]), np.array([], np.int64)])
    with pytest.raises(ValueError, match="within"):
        forward(t, [np.array([2048])])
    with pytest.raises(ValueError, match="within"):
        forward(t, [np.array([-1])])
    with pytest.raises(ValueError, match="integers"):
        forward(t, [np.array([1.0])])
    with pytest.raises(ValueError, match="list"):
        forward(t, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="labels"):
        accuracy(t, [np.array([1])], np.array([0, 1]))
    with pytest.raises(ValueError):
        accuracy(t, [], [])


def test_report_runs():
    text = trained.report(n_variants=1, **TINY)
    assert "task-1" in text and "trained in" in text
