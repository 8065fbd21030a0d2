"""Baseline candidate search: every target against every reference (no hashing).

The exact nearest reference of each target by Euclidean distance, computed the fastest
way we know (one matrix product per chunk of targets, |t|^2 + |r|^2 - 2 t.r), so that
LSH is compared with a strong baseline, not a slow loop.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1024


def nearest_pairs(targets: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each target i, (i, its nearest reference)."""
    if not len(targets) or not len(refs):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ref_sq = np.einsum("ij,ij->i", refs, refs)
    best = np.empty(len(targets), np.int64)
    for start in range(0, len(targets), _CHUNK):
        chunk = targets[start : start + _CHUNK]
        d = ref_sq[None, :] - 2 * (chunk @ refs.T)  # + |t|^2, the same for the whole row
        best[start : start + len(chunk)] = d.argmin(axis=1)
    return np.arange(len(targets)), best
