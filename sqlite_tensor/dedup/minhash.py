"""Baseline candidate search: MinHash LSH over binned values (MISTIQUE's approximate match).

A block becomes the set of (position, value bin) pairs of its elements; two blocks'
Jaccard similarity is then about the share of positions whose values fall in the same
bin. MinHash estimates it: ``bands`` x ``rows_per_band`` hash functions, each keeping the
minimum hash over the set, and a band key agreeing means a candidate. Bins are
``bin_width`` times the block's own root-mean-square value, so one setting serves tensors
of every scale (and a block's keys depend on it alone). Used by the benchmarks beside
p-stable LSH.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MUL = np.uint64(0xBF58476D1CE4E5B9)
_MIX = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class MinHashOptions:
    bands: int = 8
    rows_per_band: int = 4
    bin_width: float = 0.5
    seed: int = 0


def _mix(x: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (splitmix64): a good hash of x, vectorised, wrapping."""
    x = (x ^ (x >> np.uint64(30))) * _MUL
    x = (x ^ (x >> np.uint64(27))) * _MIX
    return x ^ (x >> np.uint64(31))


def band_keys(x: np.ndarray, options: MinHashOptions) -> np.ndarray:
    """(n, bands) band keys of the rows of x."""
    n, dim = x.shape
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=1, keepdims=True))
    width = options.bin_width * np.where(rms > 0, rms, 1.0)
    bins = np.floor(x / width).astype(np.int64)
    elements = (np.arange(dim, dtype=np.int64) << np.int64(32)) ^ (bins & np.int64(0xFFFFFFFF))
    elements = elements.view(np.uint64)
    seeds = np.random.default_rng(options.seed).integers(
        0, 2**63, options.bands * options.rows_per_band, dtype=np.uint64
    )
    mins = np.empty((n, len(seeds)), np.uint64)
    for i, s in enumerate(seeds):
        mins[:, i] = _mix(elements ^ s).min(axis=1)
    mins = mins.reshape(n, options.bands, options.rows_per_band)
    keys = np.zeros((n, options.bands), np.uint64)
    for j in range(options.rows_per_band):
        keys = _mix(keys ^ mins[:, :, j])
    return keys
