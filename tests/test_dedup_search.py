"""Candidate search for approximate dedup: p-stable LSH, MinHash, exhaustive, the cache."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlite_tensor.dedup import lsh, minhash
from sqlite_tensor.dedup.exhaustive import nearest_pairs
from sqlite_tensor.dedup.lsh import LSHOptions
from sqlite_tensor.dedup.minhash import MinHashOptions
from sqlite_tensor.dedup.search import CandidateSearch, _nearest_of_pairs


def brute_pairs(kt, kr):
    return sorted(
        {(i, j) for i in range(len(kt)) for j in range(len(kr)) if (kt[i] == kr[j]).any()}
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 12), st.integers(0, 12), st.integers(1, 4), st.integers(0, 2**32))
def test_colliding_pairs_are_exactly_the_pairs_sharing_a_band(nt, nr, bands, seed):
    rng = np.random.default_rng(seed)
    kt = rng.integers(0, 4, (nt, bands)).astype(np.uint64)
    kr = rng.integers(0, 4, (nr, bands)).astype(np.uint64)
    ti, ri = lsh.colliding_pairs(kt, kr) if nt and nr else (np.empty(0, int), np.empty(0, int))
    assert sorted(zip(ti.tolist(), ri.tolist())) == brute_pairs(kt, kr)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7), st.integers(1, 9), st.integers(0, 40), st.integers(0, 2**32))
def test_nearest_of_pairs_keeps_the_closest_candidate(nt, nr, npairs, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((nt, 5)).astype(np.float32)
    r = rng.standard_normal((nr, 5)).astype(np.float32)
    code = np.unique(rng.integers(0, nt, npairs) * nr + rng.integers(0, nr, npairs))
    ti, ri = code // nr, code % nr
    a, b = _nearest_of_pairs(x, r, ti, ri)
    want = {}
    for i, j in zip(ti.tolist(), ri.tolist()):
        d = float(np.square(x[i] - r[j]).sum())
        if i not in want or d < want[i][0]:
            want[i] = (d, j)
    assert dict(zip(a.tolist(), b.tolist())) == {i: j for i, (_, j) in want.items()}


def test_lsh_keys_ignore_scale_and_near_copies_collide():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 1024)).astype(np.float32)
    opts = LSHOptions()
    np.testing.assert_array_equal(lsh.band_keys(x, opts), lsh.band_keys(3 * x, opts))
    near = x + 0.01 * rng.standard_normal(x.shape).astype(np.float32)
    ti, ri = lsh.colliding_pairs(lsh.band_keys(near, opts), lsh.band_keys(x, opts))
    found = set(zip(ti.tolist(), ri.tolist()))
    assert sum((i, i) in found for i in range(200)) >= 198  # near copies: found
    assert len(found - {(i, i) for i in range(200)}) <= 20  # unrelated blocks: rarely
    zero = np.zeros((1, 1024), np.float32)
    assert lsh.band_keys(zero, opts).shape == (1, opts.bands)  # no division by zero


def test_minhash_keys_match_for_equal_blocks_at_any_scale():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 256)).astype(np.float32)
    opts = MinHashOptions()
    np.testing.assert_array_equal(minhash.band_keys(x, opts), minhash.band_keys(x * 4, opts))
    other = minhash.band_keys(rng.standard_normal((20, 256)).astype(np.float32), opts)
    assert not (other == minhash.band_keys(x, opts)).all(axis=1).any()


def test_exhaustive_finds_the_true_nearest():
    rng = np.random.default_rng(2)
    t = rng.standard_normal((50, 64)).astype(np.float32)
    r = rng.standard_normal((70, 64)).astype(np.float32)
    ti, ri = nearest_pairs(t, r)
    want = np.square(t[:, None, :] - r[None, :, :]).sum(axis=2).argmin(axis=1)
    np.testing.assert_array_equal(ri, want)
    assert ti.tolist() == list(range(50))


@pytest.mark.parametrize(
    "method, options", [("lsh", LSHOptions()), ("minhash", MinHashOptions()), ("exhaustive", None)]
)
def test_candidate_search_reads_and_hashes_each_reference_once(method, options):
    rng = np.random.default_rng(3)
    refs = rng.standard_normal((30, 512)).astype(np.float32)
    loads = []

    def load(ids):
        loads.append(list(ids))
        return refs[ids]

    search = CandidateSearch(method, options)
    targets = refs[:10] + 0.001 * rng.standard_normal((10, 512)).astype(np.float32)
    assert search.nearest(list(range(100, 110)), targets, list(range(30)), load) == list(range(10))
    first = sum(map(len, loads))
    search.nearest(list(range(110, 120)), targets, list(range(30)), load)
    if method != "exhaustive":  # keys cached: only the candidates are read again
        assert sum(map(len, loads)) - first <= 10
    assert search.seconds > 0
    far = rng.standard_normal((5, 512)).astype(np.float32)
    got = search.nearest(list(range(200, 205)), far, list(range(30)), load)
    if method == "exhaustive":
        assert None not in got
    else:
        assert got.count(None) >= 4  # nothing near: no candidate


def test_sampled_hashing_keeps_near_copies_and_checks_its_option():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((100, 4096)).astype(np.float32)
    near = x + 0.02 * rng.standard_normal(x.shape).astype(np.float32)
    sampled, full = LSHOptions(sample=512), LSHOptions(sample=None)
    for opts in (sampled, full):
        ti, ri = lsh.colliding_pairs(lsh.band_keys(near, opts), lsh.band_keys(x, opts))
        assert sum((i, i) in set(zip(ti.tolist(), ri.tolist())) for i in range(100)) >= 98
    # the sample is a fixed choice: the same keys every time, different from hashing all
    np.testing.assert_array_equal(lsh.band_keys(x, sampled), lsh.band_keys(x.copy(), sampled))
    assert not np.array_equal(lsh.band_keys(x, sampled), lsh.band_keys(x, full))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="sample must be"):
            LSHOptions(sample=bad)
