"""Candidate search for one dedup run: each target block's nearest reference block.

"lsh" (lsh.py, the default) and "minhash" (minhash.py) find candidate pairs by band keys,
then measure the true distance of each pair and keep the nearest; "exhaustive"
(exhaustive.py) measures every pair. A block's keys depend on the block alone, so they are
computed once per run and reused as the block turns from target into reference for the
models that follow; only candidates are read for the check. ``seconds`` counts the
search's own work, not the reads of blocks from the store, which every method needs.
"""

from __future__ import annotations

import time

import numpy as np

from . import lsh, minhash
from .exhaustive import nearest_pairs

_PAIR_CHUNK = 512  # pairs whose rows are gathered at once: a few MiB, cache-friendly


class CandidateSearch:
    def __init__(self, method: str, options):
        self.method = method
        self.options = options
        self.rows: dict[int, int] = {}  # block id -> its row of self.keys
        self.keys = np.empty((0, 0), np.uint64)  # band keys of every block hashed so far
        self.seconds = 0.0

    def _band_keys(self, x: np.ndarray) -> np.ndarray:
        module = lsh if self.method == "lsh" else minhash
        return module.band_keys(x, self.options)

    def nearest(
        self, target_ids: list[int], targets: np.ndarray, ref_ids: list[int], load
    ) -> list[int | None]:
        """The nearest reference (an id of ref_ids) of each target, None where no candidate.
        ``load(ids)`` returns those blocks' rows, flattened, as one float32 matrix."""
        started = time.perf_counter()
        reading = 0.0

        def timed_load(ids):
            nonlocal reading
            t = time.perf_counter()
            out = load(ids)
            reading += time.perf_counter() - t
            return out

        if self.method == "exhaustive":
            ti, ri = nearest_pairs(targets, timed_load(ref_ids))
        else:
            kt = self._band_keys(targets)
            self._remember(target_ids, kt)
            missing = [b for b in ref_ids if b not in self.rows]
            if missing:
                self._remember(missing, self._band_keys(timed_load(missing)))
            kr = self.keys[[self.rows[b] for b in ref_ids]]
            ti, ri = lsh.colliding_pairs(kt, kr)
            if len(ti):
                used, local = np.unique(ri, return_inverse=True)
                ti, ri = _nearest_of_pairs(
                    targets, timed_load([ref_ids[j] for j in used]), ti, local
                )
                ri = used[ri]
        out: list[int | None] = [None] * len(target_ids)
        for i, j in zip(ti, ri):
            out[i] = ref_ids[j]
        self.seconds += time.perf_counter() - started - reading
        return out

    def _remember(self, ids: list[int], keys: np.ndarray) -> None:
        new = [b for b in ids if b not in self.rows]
        if len(new) < len(ids):
            keys = keys[[i for i, b in enumerate(ids) if b not in self.rows]]
        start = len(self.keys)
        self.rows.update((b, start + i) for i, b in enumerate(new))
        self.keys = keys if not start else np.concatenate([self.keys, keys])


def _nearest_of_pairs(x, r, ti, ri):
    """Among candidate pairs keep, for each target, the reference at the least distance.
    A target with one candidate needs no distance: most have one when the keys are good."""
    order = np.argsort(ti, kind="stable")
    ti, ri = ti[order], ri[order]
    first = np.ones(len(ti), bool)
    first[1:] = ti[1:] != ti[:-1]
    counts = np.diff(np.flatnonzero(np.append(first, True)))
    several = np.repeat(counts > 1, counts)
    if several.any():
        a, b = ti[several], ri[several]
        d = np.empty(len(a), np.float64)
        for s in range(0, len(a), _PAIR_CHUNK):
            diff = x[a[s : s + _PAIR_CHUNK]] - r[b[s : s + _PAIR_CHUNK]]
            d[s : s + _PAIR_CHUNK] = np.einsum("ij,ij->i", diff, diff)
        best = np.lexsort((d, a))
        a, b = a[best], b[best]
        keep = np.ones(len(a), bool)
        keep[1:] = a[1:] != a[:-1]
        ti = np.concatenate([ti[first & ~several], a[keep]])
        ri = np.concatenate([ri[first & ~several], b[keep]])
        return ti, ri
    return ti[first], ri[first]
