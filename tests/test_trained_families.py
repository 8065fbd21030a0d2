"""The trained families of other recipes (issue 14): registry, determinism, layer lists that
the store accepts, variants that learnt their task, frozen layers frozen, and the numpy
training code's gradients."""

from __future__ import annotations

import numpy as np
import pytest
from family_support import blas_one_thread, small  # noqa: F401 (an autouse fixture)

from sqlite_tensor.layers import check_layers
from sqlite_tensor.testing import nets
from sqlite_tensor.testing.baselines import accuracy
from sqlite_tensor.testing.trained_families import FAMILIES, FIT_FAMILIES, HELD_OUT

DENSE = ["mlp-shift", "frozen", "lr-epochs", "retrained"]


def test_registry_and_split():
    assert {"text", *DENSE, "text-shuffled"} <= set(FAMILIES)
    assert len(FIT_FAMILIES) == 2 and "text" in FIT_FAMILIES
    assert set(FIT_FAMILIES) | set(HELD_OUT) == set(FAMILIES)
    assert not set(FIT_FAMILIES) & set(HELD_OUT)
    # the held-out side holds every new recipe but at most one
    assert len(HELD_OUT) >= 4


@pytest.mark.parametrize("name", DENSE)
def test_deterministic(name):
    one, two = small(name), FAMILIES[name]("small", 0)
    assert list(one.models) == list(two.models)
    for m in one.models:
        for k, v in one.models[m].items():
            assert v.tobytes() == two.models[m][k].tobytes(), (m, k)
        for split in ("validation", "test"):
            for a, b in zip(getattr(one, split)[m], getattr(two, split)[m]):
                assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert one.accuracy == two.accuracy
    other = FAMILIES[name]("small", 1)
    last = list(one.models)[-1]
    assert not np.array_equal(one.models[last]["fc1.weight"], other.models[last]["fc1.weight"])


@pytest.mark.parametrize("name", DENSE + ["text-shuffled"])
def test_well_formed_and_variants_learnt_their_task(name):
    family = small(name)
    names = list(family.models)
    assert len(names) == 5
    first = names[0]
    shapes = {k: (v.shape, "float32") for k, v in family.models[first].items()}
    assert check_layers(family.layers, shapes)  # the store accepts the layer list
    chain = name == "retrained"
    for i, (m, tensors) in enumerate(family.models.items()):
        assert {k: (v.shape, str(v.dtype)) for k, v in tensors.items()} == shapes
        assert all(np.isfinite(v).all() for v in tensors.values())
        assert family.reference[m] == (None if i == 0 else names[i - 1] if chain else first)
        x, y = family.test[m]
        vx, _ = family.validation[m]
        assert len(x) == len(y) == len(vx) >= 1000
        # the recorded accuracy is the layer list's, run in numpy
        assert family.accuracy[m] == pytest.approx(
            accuracy(tensors, family.layers, *family.validation[m])
        )
        own = accuracy(tensors, family.layers, x, y)
        assert own >= 0.6, (m, own)
        if i:
            ref = family.models[family.reference[m]]
            by_ref = accuracy(ref, family.layers, x, y)
            # fine-tuning (or retraining) on its task paid: its reference is clearly worse there
            assert own >= by_ref + 0.02, (m, own, by_ref)
            assert family.base_accuracy[m] == pytest.approx(
                accuracy(ref, family.layers, *family.validation[m])
            )


def test_frozen_layers_stay_the_base_bit_for_bit():
    family = small("frozen")
    base = family.models["base"]
    for m, frozen_layers in [("task-1", 1), ("task-2", 1), ("task-3", 2), ("task-4", 2)]:
        for i, (w, b) in enumerate(nets.names(4), start=1):
            same = np.array_equal(family.models[m][w], base[w]) and np.array_equal(
                family.models[m][b], base[b]
            )
            assert same == (i <= frozen_layers), (m, w)


def test_bad_arguments():
    for name in FAMILIES:
        with pytest.raises(ValueError, match="size must be one of"):
            FAMILIES[name]("big")
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            FAMILIES[name]("small", -1)


@pytest.mark.parametrize("activation", nets.ACTIVATIONS)
def test_gradients_match_finite_differences(activation):
    rng = np.random.default_rng(3)
    t = {k: v.astype(np.float64) for k, v in nets.init(rng, [5, 4, 3, 3]).items()}
    for k in t:
        t[k] += rng.normal(0, 0.1, t[k].shape)
    x, y = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)

    def loss(tt):
        z = nets.logits(tt, x, activation).astype(np.float64)
        z -= z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(7), y]))

    g = nets.grads(t, x, y, activation)
    for k, v in t.items():
        for idx in np.ndindex(v.shape):
            old = v[idx]
            v[idx] = old + 1e-6
            up = loss(t)
            v[idx] = old - 1e-6
            down = loss(t)
            v[idx] = old
            assert g[k][idx] == pytest.approx((up - down) / 2e-6, abs=1e-6), (k, idx)
    # a trainable subset: the others get no gradient and do not move
    top = ["fc3.weight", "fc3.bias", "fc2.bias"]
    assert set(nets.grads(t, x, y, activation, top)) == set(top)
    t32 = nets.init(rng, [5, 4, 3, 3])
    before = {k: v.copy() for k, v in t32.items()}
    nets.train(t32, x.astype(np.float32), y, rng, epochs=2, batch=4, lr=0.1, trainable=top)
    for k in t32:
        assert np.array_equal(t32[k], before[k]) == (k not in top), k
