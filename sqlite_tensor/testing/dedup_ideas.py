"""What tensor-level low-rank factors would buy dedup, measured in numpy before building them.

    python -m sqlite_tensor.testing.dedup_ideas frozen retrained mlp-shift [--chain]

Per-tile low-rank residuals pay (br + bc) * r floats per 64 x 64 tile, where whole-tensor
low-rank deltas (reminis-style, :mod:`.baselines`) pay (m + n) * r once per tensor: 21x
less for the same rank on a 2048 x 1024 tensor. Each idea below stores a family's models
(the first whole, the others against their reference's reconstruction) and picks, per
model, the cheapest configuration whose validation drop is within ``max_drop``; it is
judged on the test sets, as :mod:`.dedup_families` judges the methods:

- ``tiles``: every tile at the cheapest rung of its :class:`~sqlite_tensor.dedup.encoding.
  Ladder` (substitute, the residual kinds, keep) within an error threshold: the budget
  search's first phase (it has no second phase here, which moved it 4.44x -> 4.56x on
  frozen in the store).
- ``factors+tiles``: each 2-D delta's rank-r truncated SVD, stored once per tensor (rank by
  an energy threshold, as the low-rank baseline picks it), then every tile's ladder over what
  is left (two residuals on a tile: a slice of the tensor's factors, then its own rung).
- ``factors|tiles``: each tile takes either the slice of its tensor's factors (U rows of the
  tile times V rows of the tile, no bytes of its own) or its own rung against the reference:
  one residual per tile, the shape the store's <store>_residuals rows have.
- ``factors+tiles, one path``: as ``factors+tiles``, but with one threshold tau for both:
  each tensor takes the smallest rank whose factors leave |delta - U V^T|_F <= tau |t|_F,
  then its tiles their rungs within tau. One binary search, as many validations as
  ``tiles`` (the others search every energy of ENERGIES: 8 times as many); then the budget
  search's second phase: tiles move one by one from the passing threshold's rungs to the
  failing one's (least error per byte saved first; the ranks stay the passing one's), a
  binary search over how many, to 1/64 of them. The thresholds: the budget search's GRID,
  or with ``--one-path-grid quarter`` quarter-octave steps.

Bytes are payload bytes (float32 factors; the residual kinds' exact payload lengths), no page
overhead, so ratios are a little above the store's. Thresholds: ``budget.GRID`` and
``ENERGIES`` (every pair tried; binary search over GRID for each energy).
"""

from __future__ import annotations

import math
import time

import numpy as np

from .. import factors, residuals
from ..dedup import encoding
from ..dedup.budget import GRID
from . import baselines, nets
from .dedup_compare import MAX_DROP

IDEAS = ("tiles", "factors+tiles", "factors|tiles", "factors+tiles, one path")
ENERGIES = (0.9, 0.8, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05)  # the delta's energy left out
BLOCK = 64
# the one path's thresholds: the budget search's (sqrt(2) steps), or quarter-octave steps
# (the factors' bytes, which dominate, jump with the rank)
ONE_PATH_GRIDS = {
    "half": GRID,
    "quarter": (math.inf, *(2.0 * 2 ** (-k / 4) for k in range(37)), 0.0),
}


class _Tiles:
    """One tensor's tiles: their ladders against s, and optionally a tile-level alternative
    ``alt`` (s + a slice of the tensor's factors) with its errors."""

    def __init__(self, t, s, alt=None):
        self.t, self.s, self.alt = t, s, alt
        m, n = t.shape
        self.groups = []
        by_extent: dict = {}
        for i in range(0, m, BLOCK):
            for j in range(0, n, BLOCK):
                by_extent.setdefault(t[i : i + BLOCK, j : j + BLOCK].shape, []).append((i, j))
        for (br, bc), pos in by_extent.items():
            T = np.stack([t[i : i + br, j : j + bc] for i, j in pos])
            S = np.stack([s[i : i + br, j : j + bc] for i, j in pos])
            lad = encoding.Ladder(pos, T, S, residuals_allowed=True)
            alt_err = None
            if alt is not None:
                A = np.stack([alt[i : i + br, j : j + bc] for i, j in pos])
                diff = np.sqrt(np.square(T - A, dtype=np.float64).sum(axis=(1, 2)))
                norm = np.sqrt(np.square(T, dtype=np.float64).sum(axis=(1, 2)))
                alt_err = diff / np.where(norm > 0, norm, 1.0)
            self.groups.append(((br, bc), pos, lad, alt_err))

    def at(self, tau):
        """(the tensor as stored at threshold tau, its tiles' bytes, whether a tile took the
        factors' slice)."""
        return self.with_rungs([lad.cheapest_within(tau) for _, _, lad, _ in self.groups], tau)

    def with_rungs(self, rungs, tau=-1.0):
        """As at(), each group's tiles at the rungs given (the slice where within tau)."""
        out, nbytes, used = self.s.copy(), 0, False
        for ((br, bc), pos, lad, alt_err), group_rungs in zip(self.groups, rungs):
            for k, ((i, j), r) in enumerate(zip(pos, group_rungs)):
                at = np.s_[i : i + br, j : j + bc]
                kind, rkind, param, cost = lad.rungs[r]
                if alt_err is not None and cost > 0 and alt_err[k] <= tau:
                    out[at], used = self.alt[at], True  # the slice: no bytes of its own
                    continue
                nbytes += int(cost)
                if kind == encoding.KEEP:
                    out[at] = self.t[at]
                elif kind == encoding.RESIDUAL:
                    payload = lad.outcome(k, int(r)).payload
                    out[at] = self.s[at] + residuals.decode(rkind, param, br, bc, payload)
        return out, nbytes, used


def _cheapest_threshold(drop_of, fixed, fixed_bytes, tiles, factor_bytes, stacked, max_drop):
    """(tensors, bytes, validation drop, threshold) of the coarsest threshold of GRID that
    passes, by binary search (as the budget search's first phase). The factors are paid
    when stacked under the tiles, else only when some tile takes their slice."""

    def config(tau):
        t, nbytes = dict(fixed), fixed_bytes
        for k, tl in tiles.items():
            t[k], b, used = tl.at(tau)
            nbytes += b + (factor_bytes.get(k, 0) if stacked or used else 0)
        return t, nbytes

    tried = {}

    def drop(i):
        if i not in tried:
            t, nbytes = config(GRID[i])
            tried[i] = (t, nbytes, drop_of(t))
        return tried[i][2]

    _lo, hi = _coarsest_passing(drop, len(GRID), max_drop)
    return (*tried[hi], GRID[hi])


def _coarsest_passing(drop, n: int, max_drop: float) -> tuple[int, int]:
    """(lo, hi): hi the first of n settings, coarsest first, whose drop(i) passes, by
    binary search (the last, keeping every tile, passes unasked); lo the one before it
    (-1 if none). drop(hi) has been called."""
    lo, hi = -1, n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if drop(mid) <= max_drop:
            hi = mid
        else:
            lo = mid
    drop(hi)
    return lo, hi


def _store_model(family, m, ref, idea, max_drop, grid=GRID):
    """(tensors as stored, bytes, validation drop, setting) of the cheapest configuration of
    ``idea`` for model m against ref within max_drop on validation."""
    model = family.models[m]
    x, y = family.validation[m]
    own = baselines.accuracy(model, family.layers, x, y)
    fixed, fixed_bytes, two = {}, 0, {}
    for k, a in model.items():
        if a.ndim == 2 and not np.array_equal(a, ref[k]):
            two[k] = a
        else:
            same = np.array_equal(a, ref[k])
            fixed[k] = ref[k] if same else a
            fixed_bytes += 0 if same else int(a.nbytes)
    calls = [0]

    def drop_of(t):
        calls[0] += 1
        return own - baselines.accuracy(t, family.layers, x, y)

    if idea == "factors+tiles, one path":
        return _one_path(drop_of, fixed, fixed_bytes, two, ref, max_drop, calls, grid)
    best = None
    for energy in (None,) if idea == "tiles" else ENERGIES:
        tiles, factor_bytes = {}, {}
        for k, a in two.items():
            s = ref[k]
            if energy is None:
                tiles[k] = _Tiles(a, s)
                continue
            d = factors.Delta(a - s)
            r = d.rank_for(energy)
            low = (s + d.truncated(r)).astype(np.float32)
            factor_bytes[k] = sum(a.shape) * r * 4
            tiles[k] = _Tiles(a, low) if idea == "factors+tiles" else _Tiles(a, s, alt=low)

        t, nbytes, vd, tau = _cheapest_threshold(
            drop_of,
            fixed, fixed_bytes, tiles, factor_bytes, idea == "factors+tiles", max_drop,
        )  # fmt: skip
        if best is None or nbytes < best[1]:
            best = (t, nbytes, vd, {"energy_left_out": energy, "threshold": tau})
    best[3]["validations"] = calls[0]
    return best


def _one_path(drop_of, fixed, fixed_bytes, two, ref, max_drop, calls, grid):
    """_store_model for "factors+tiles, one path"."""
    deltas = {k: factors.Delta(a - ref[k]) for k, a in two.items()}
    norms = {k: float(np.linalg.norm(a.astype(np.float64))) for k, a in two.items()}
    built: dict = {}  # (tensor, rank) -> _Tiles over what its factors leave

    def rank(k, tau):
        d = deltas[k]
        left = np.sqrt(np.maximum(np.cumsum(d.energy[::-1])[::-1], 0.0))  # left[r]: rank r
        ok = np.flatnonzero(left <= tau * norms[k])
        return int(ok[0]) if len(ok) else len(d.energy)

    def tiles_at(tau):
        out, factor_bytes = {}, {}
        for k, a in two.items():
            r = rank(k, tau)
            if (k, r) not in built:
                low = ref[k] + deltas[k].truncated(r) if r else ref[k]
                built[k, r] = _Tiles(a, low.astype(np.float32))
            out[k], factor_bytes[k] = built[k, r], sum(a.shape) * r * 4
        return out, factor_bytes

    tried = {}

    def drop(i):
        if i not in tried:
            tiles, factor_bytes = tiles_at(grid[i])
            t, nbytes = dict(fixed), fixed_bytes
            for k, tl in tiles.items():
                t[k], b, _ = tl.at(grid[i])
                nbytes += b + factor_bytes[k]
            tried[i] = (t, nbytes, drop_of(t))
        return tried[i][2]

    lo, hi = _coarsest_passing(drop, len(grid), max_drop)
    t, nbytes, vd = tried[hi]
    ranks = {k: rank(k, grid[hi]) for k in two}
    setting = {"threshold": grid[hi], "ranks": ranks}
    if lo >= 0:  # the second phase: tiles move from hi's rungs to lo's, ranks stay hi's
        tiles, factor_bytes = tiles_at(grid[hi])
        fine = {
            k: [lad.cheapest_within(grid[hi]) for _, _, lad, _ in tl.groups]
            for k, tl in tiles.items()
        }
        coarse = {
            k: [lad.cheapest_within(grid[lo]) for _, _, lad, _ in tl.groups]
            for k, tl in tiles.items()
        }
        moves = []
        for k, tl in tiles.items():
            for g, (_, _, lad, _) in enumerate(tl.groups):
                f, c = fine[k][g], coarse[k][g]
                for i in np.flatnonzero(f != c):
                    saved = lad.nbytes[f[i]] - lad.nbytes[c[i]]
                    added = lad.error[i, c[i]] ** 2 - lad.error[i, f[i]] ** 2
                    moves.append((added / max(saved, 1), k, g, int(i)))
        moves.sort()

        def moved(j):
            rungs = {k: [x.copy() for x in v] for k, v in fine.items()}
            for _, k, g, i in moves[:j]:
                rungs[k][g][i] = coarse[k][g][i]
            out, nbytes = dict(fixed), fixed_bytes
            for k, tl in tiles.items():
                out[k], b, _ = tl.with_rungs(rungs[k])
                nbytes += b + factor_bytes[k]
            return out, nbytes

        a, b = 0, len(moves)  # moved(a) passes (hi's configuration), moved(b) fails (lo's)
        best = (t, nbytes, vd)
        while b - a > max(1, len(moves) // 64):
            mid = (a + b) // 2
            out, n = moved(mid)
            d = drop_of(out)
            if d <= max_drop:
                a, best = mid, (out, n, d)
            else:
                b = mid
        t, nbytes, vd = best
        setting["moved"] = f"{a} of {len(moves)}"
    setting["validations"] = calls[0]
    return t, nbytes, vd, setting


def run(family, ideas=IDEAS, max_drop=MAX_DROP, chain=False, one_path_grid="half") -> dict:
    """{idea: (x fewer bytes, worst test drop as a fraction, seconds, {model: (bytes,
    validation drop, test drop, setting)})}.
    chain: refer each model to ``family.reference`` (a retrained chain's previous
    version), else to the first model."""
    first = next(iter(family.models))
    logical = baselines.logical_bytes(family)
    out = {}
    with nets.one_thread():
        for idea in ideas:
            started = time.perf_counter()
            recon = {first: family.models[first]}
            stored = sum(int(a.nbytes) for a in family.models[first].values())
            models = {}
            for m in family.models:
                if m == first:
                    continue
                ref = recon[family.reference[m] if chain else first]
                t, nbytes, vd, setting = _store_model(
                    family, m, ref, idea, max_drop, ONE_PATH_GRIDS[one_path_grid]
                )
                recon[m] = t
                stored += nbytes
                x, y = family.test[m]
                td = baselines.accuracy(family.models[m], family.layers, x, y)
                td -= baselines.accuracy(t, family.layers, x, y)
                models[m] = (nbytes, vd, td, setting)
            worst = max(v[2] for v in models.values())
            out[idea] = (logical / stored, worst, time.perf_counter() - started, models)
    return out


def main(argv=None) -> None:
    import argparse

    from .trained_families import FAMILIES, FIT_FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="family", help=", ".join(FAMILIES))
    parser.add_argument("--ideas", nargs="+", choices=IDEAS, default=list(IDEAS))
    parser.add_argument("--one-path-grid", choices=tuple(ONE_PATH_GRIDS), default="half")
    parser.add_argument("--chain", action="store_true", help="refer to family.reference")
    parser.add_argument("--max-drop", type=float, default=MAX_DROP)
    parser.add_argument("--size", default="default", choices=("default", "small"))
    args = parser.parse_args(argv)
    for name in args.names or FAMILIES:
        family = FAMILIES[name](args.size)
        split = "fit" if name in FIT_FAMILIES else "held out"
        results = run(family, tuple(args.ideas), args.max_drop, args.chain, args.one_path_grid)
        for idea, (ratio, worst, seconds, models) in results.items():
            print(
                f"{name} ({split}) {idea}: {ratio:.2f}x, worst test {100 * worst:.2f}p, {seconds:.0f} s"
            )
            for m, (nbytes, vd, td, setting) in models.items():
                print(f"    {m}: {nbytes} B, val {100 * vd:.2f}p, test {100 * td:.2f}p, {setting}")


if __name__ == "__main__":
    main()
