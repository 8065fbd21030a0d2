"""sqlite_tensor.testing.dedup_ideas: the numpy measurement of tensor-level factors."""

import numpy as np
import pytest

from sqlite_tensor.testing import dedup_ideas
from sqlite_tensor.testing.trained_families import FAMILIES


def test_tiles_ends_keep_everything_or_substitute_everything():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((96, 80)).astype(np.float32)  # edge tiles: 32 x 16 and so on
    t = s + 0.01 * rng.standard_normal(s.shape).astype(np.float32)
    tiles = dedup_ideas._Tiles(t, s)
    kept, nbytes, used = tiles.at(0.0)
    assert np.array_equal(kept, t) and nbytes == t.nbytes and not used
    substituted, nbytes, _ = tiles.at(np.inf)
    assert np.array_equal(substituted, s) and nbytes == 0


def test_slice_alternative_costs_no_tile_bytes():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((64, 128)).astype(np.float32)
    u, v = rng.standard_normal((64, 1)), rng.standard_normal((128, 1))
    t = (s + 0.1 * u @ v.T).astype(np.float32)  # a rank-1 delta: the slice is exact
    out, nbytes, used = dedup_ideas._Tiles(t, s, alt=t.copy()).at(1e-6)
    assert used and nbytes == 0 and np.array_equal(out, t)


@pytest.mark.parametrize("chain", [False, True])
def test_every_idea_keeps_each_model_within_budget_on_validation(chain):
    family = FAMILIES["retrained"]("small")
    results = dedup_ideas.run(family, max_drop=0.005, chain=chain)
    assert set(results) == set(dedup_ideas.IDEAS)
    for ratio, worst, _, models in results.values():
        assert ratio >= 1.0
        assert set(models) == set(family.models) - {next(iter(family.models))}
        assert all(vd <= 0.005 for _, vd, _, _ in models.values())
        assert worst == max(td for _, _, td, _ in models.values())
