"""The budget search's factor path: fine-tunes that move a whole tensor along few directions
are stored as their base's blocks plus int8 low-rank factors, within budget, monotone in
max_drop, and what the store computes is the base plus the factors as stored."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dedup_approx import family, make_store, reference_forward
from test_dedup_budget import agreement, assert_bytes_never_rise

from sqlite_tensor import factors
from sqlite_tensor.dedup.factor_path import KEPT_WHOLE, FactorPath


def low_rank_family(n=3, seed=0, scale=0.05):
    """Variants whose fc1.weight moved by a rank-1 change (plus a tiny nudge everywhere)."""
    return family(n, seed=seed, small=0.001, changed=0.0, rank1=scale)


def stored_factors(store, model):
    return {
        name: factors.decode(rows, cols, rank, u, v)
        for name, rows, cols, rank, u, v in store.conn.execute(
            "SELECT t.name, t.rows, t.cols, f.rank, f.u, f.v FROM tensors_factors f"
            " JOIN tensors_tensors t ON t.id = f.tensor_id JOIN tensors_models m"
            " ON m.id = t.model_id WHERE m.name = ?",
            (model,),
        )
    }


def test_low_rank_fine_tunes_take_the_factor_path(tmp_path):
    models = low_rank_family(3, seed=1)
    validate = agreement(models, 1)
    store = make_store(tmp_path, models)
    report = store.dedup(validator=validate, max_drop=0.01)
    # the same run with the factor path ruled out (a tolerance keeps to the tiles' path)
    tiles_only = make_store(tmp_path, models, "tiles.sqlite")
    tiles_report = tiles_only.dedup(validator=validate, max_drop=0.01, tolerance=4.0)
    for m in ("v1", "v2"):
        r = report[m]
        assert r.factors >= 1 and tiles_report[m].factors == 0
        assert validate(store, m) >= r.score_before - 0.01
        assert r.factor_bytes > 0 and r.bytes_saved > 0
        got = stored_factors(store, m)
        assert "fc1.weight" in got
        u, v = got["fc1.weight"]
        # the tensor as stored is its base's blocks plus U V^T, in every reader
        want = models["base"]["fc1.weight"] + u @ v.T
        np.testing.assert_allclose(store.get_tensor(m, "fc1.weight"), want, rtol=1e-5, atol=1e-6)
        effective = {k: store.get_tensor(m, k).reshape(a.shape) for k, a in models[m].items()}
        x = np.random.default_rng(9).standard_normal((5, 96)).astype(np.float32)
        np.testing.assert_allclose(
            store.predict(m, x), reference_forward(effective, x), rtol=1e-4, atol=1e-5
        )
    assert report.physical_bytes_after < tiles_report.physical_bytes_after
    assert store.verify() == []
    # a second run examines nothing new and changes nothing
    before = store.stats()["physical_bytes"]
    again = store.dedup(validator=validate, max_drop=0.01)
    assert sum(r.factors for r in again.models) == 0
    assert store.stats()["physical_bytes"] == before and store.verify() == []
    store.close()
    tiles_only.close()


def test_a_tolerance_keeps_to_the_tiles_path(tmp_path):
    models = low_rank_family(2, seed=4)
    store = make_store(tmp_path, models)
    report = store.dedup(validator=agreement(models, 4), max_drop=0.05, tolerance=0.5)
    assert report["v1"].factors == 0
    assert store.conn.execute("SELECT count(*) FROM tensors_factors").get == 0


def test_the_path_never_gets_dearer_and_ends_keeping_everything(tmp_path):
    models = low_rank_family(2, seed=2)
    store = make_store(tmp_path, models)
    seen = {}
    original = FactorPath.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen["path"] = self

    FactorPath.__init__ = spy
    try:
        store.dedup(validator=agreement(models, 2), max_drop=0.01)
    finally:
        FactorPath.__init__ = original
    path = seen["path"]
    assert path
    configs = path.configs()
    sizes = [path.nbytes(c) for c in configs]
    assert sizes == sorted(sizes)
    assert all(r == KEPT_WHOLE for r in configs[-1].values())
    assert sizes[-1] == sum(x.kept_bytes for x in path.tensors) + path.other_bytes


def test_a_block_used_twice_keeps_its_tensor_off_the_path(tmp_path):
    models = low_rank_family(2, seed=3)
    w = models["v1"]["fc1.weight"]
    w[16:32, 0:16] = w[0:16, 0:16]  # one block at two places of the same tensor
    store = make_store(tmp_path, models)
    report = store.dedup(validator=agreement(models, 3), max_drop=0.05)
    assert "fc1.weight" not in stored_factors(store, "v1")
    assert report["v1"].score_after >= report["v1"].score_before - 0.05
    assert store.verify() == []


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**16),
    variants=st.integers(1, 2),
    scale=st.sampled_from([0.01, 0.05, 0.2]),
    budgets=st.lists(st.sampled_from([0.0, 0.005, 0.02, 0.05, 0.2]), min_size=2, max_size=3),
)
def test_a_larger_budget_never_stores_more_bytes_across_both_paths(
    tmp_path_factory, seed, variants, scale, budgets
):
    models = low_rank_family(variants + 1, seed=seed, scale=scale)
    assert_bytes_never_rise(
        tmp_path_factory.mktemp("mono"), models, agreement(models, seed), budgets
    )


@pytest.mark.parametrize("shape", [(64, 96), (96, 64), (1, 40)])
def test_factors_encode_and_decode(shape):
    rng = np.random.default_rng(0)
    delta = rng.standard_normal((shape[0], 3)) @ rng.standard_normal((3, shape[1]))
    d = factors.Delta(delta.astype(np.float32))
    r = min(3, *shape)
    u, v = d.factors(r)
    rank, pu, pv = factors.encode(u, v)
    assert len(pu) + len(pv) == factors.payload_bytes(*shape, rank)
    du, dv = factors.decode(*shape, rank, pu, pv)
    # int8 codes: about 1 % of the factor's size is left as error
    err = np.linalg.norm(du @ dv.T - delta) / np.linalg.norm(delta)
    assert err < 0.02
    with pytest.raises(ValueError, match="bytes"):
        factors.decode(*shape, rank, pu[:-1], pv)
    with pytest.raises(ValueError, match="rank"):
        factors.decode(*shape, min(shape) + 1, pu, pv)
