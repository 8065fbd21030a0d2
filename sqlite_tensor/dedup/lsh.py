"""Candidate search: which stored blocks may be close to a block (Euclidean distance).

p-stable LSH (Datar et al.): each hash is h(x) = floor((a . x + b) / r) with a ~ N(0, I)
and b ~ U[0, r). ``hashes_per_band`` hashes make one band key; two blocks are candidates
when their keys agree in any of ``bands`` bands. Hashing is one matrix product per group
of blocks. Blocks are hashed as unit vectors: the test a candidate must pass bounds the
difference relative to the block's norm, so directions must be close whatever the scale
of the tensor, and one bucket width serves every tensor.

Candidates are (target index, reference index) pairs; search.py measures the true
distance of each pair and keeps the nearest.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

_KEY_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: mixes a band's hashes into one key
_RUN = 16  # float32 values in a 64-byte cache line


@dataclass(frozen=True)
class LSHOptions:
    """p-stable LSH parameters. Defaults measured on trained families
    (asv_bench/benchmarks/bench_dedup.py; docs/dedup.md)."""

    bands: int = 4
    hashes_per_band: int = 8
    bucket_width: float = 0.6  # r, for blocks scaled to unit norm
    sample: int | None = 1024  # values of a block hashed (a fixed random choice); None: all
    seed: int = 0

    def __post_init__(self):
        for name in ("bands", "hashes_per_band"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.bucket_width, (int, float)) and self.bucket_width > 0):
            raise ValueError(f"bucket_width must be a positive number, got {self.bucket_width!r}")
        if self.sample is not None and (
            isinstance(self.sample, bool)
            or not isinstance(self.sample, (int, np.integer))
            or self.sample < 1
        ):
            raise ValueError(f"sample must be a positive integer or None, got {self.sample!r}")


@functools.lru_cache(maxsize=16)
def _projections(dim: int, options: LSHOptions):
    """The run's hash functions: the values sampled (None: all), a (values x bands*hashes)
    ~ N(0, 1) and offsets b ~ U[0, r)."""
    k = options.bands * options.hashes_per_band
    rng = np.random.default_rng(options.seed)
    sample = None  # runs of _RUN values (a cache line), so a sample reads a fraction of memory
    if options.sample is not None and options.sample < dim and dim % _RUN == 0:
        runs = max(1, options.sample // _RUN)
        sample = np.sort(rng.choice(dim // _RUN, runs, replace=False))
    a = rng.standard_normal((dim if sample is None else len(sample) * _RUN, k), dtype=np.float32)
    b = rng.uniform(0, options.bucket_width, k).astype(np.float32)
    return sample, a, b


def band_keys(x: np.ndarray, options: LSHOptions) -> np.ndarray:
    """(n, bands) uint64 band keys of the rows of x (n x dim, float32), hashed as unit vectors.

    With ``options.sample``, a fixed random choice of that many values of each row is
    hashed: blocks close in all values are close in those, so no near pair is lost, and
    hashing costs a fraction; the candidates' true distances are checked afterwards."""
    n, dim = x.shape
    sample, a, b = _projections(dim, options)
    if sample is not None:
        x = x.reshape(n, dim // _RUN, _RUN)[:, sample].reshape(n, -1)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    projected = (x @ a) / np.where(norms > 0, norms, 1).astype(np.float32)[:, None]  # = unit(x) @ a
    h = np.floor((projected + b) / np.float32(options.bucket_width)).astype(np.int64)
    h = h.reshape(n, options.bands, options.hashes_per_band).view(np.uint64)
    keys = np.zeros((n, options.bands), np.uint64)
    for j in range(options.hashes_per_band):  # a polynomial in the hashes, wrapping mod 2**64
        keys = keys * _KEY_MIX + h[:, :, j]
    return keys


def colliding_pairs(kt: np.ndarray, kr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (target, reference) pairs whose keys agree in some band (column)."""
    ti, ri = [], []
    for band in range(kt.shape[1]):
        order = np.argsort(kr[:, band], kind="stable")
        sorted_keys = kr[order, band]
        lo = np.searchsorted(sorted_keys, kt[:, band], "left")
        hi = np.searchsorted(sorted_keys, kt[:, band], "right")
        counts = hi - lo
        if not counts.any():
            continue
        t = np.repeat(np.arange(len(kt)), counts)
        # positions lo[t] .. hi[t]-1 for every target t, flattened
        starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        ti.append(t)
        ri.append(order[starts + np.arange(counts.sum())])
    if not ti:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    t = np.concatenate(ti)
    r = np.concatenate(ri)
    code = np.unique(t.astype(np.int64) * len(kr) + r)
    return code // len(kr), code % len(kr)
