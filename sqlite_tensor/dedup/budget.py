"""The budget search: the fewest bytes for one model's blocks that keep its validated score
within ``max_drop`` (Store.dedup's default, ``strategy="budget"``).

Each target block has a *ladder* of ways to store it against its reference block, cheapest
first (encoding.ladders): substitute (no bytes), the residual encodings (1-bit sign, few-bit,
sparse, low-rank), keep it whole; each leaves a relative error |t - t_hat|_F / |t|_F.

The search walks one path of configurations from coarse to fine, fixed before any score is
known, with the bytes never rising along it:

1. **A threshold on the error.** At threshold tau every block takes the cheapest rung whose
   error is at most tau (keeping the block always qualifies). A larger tau never costs more
   bytes in any block. The thresholds are a geometric grid (capped at ``tolerance`` when one
   is given); a binary search over it finds a passing threshold whose next coarser one fails.
2. **Between the two.** The blocks whose rung differs at the two thresholds move, one by
   one, from the finer rung to the coarser, the ones that add least error per byte saved
   first; a binary search over how many move finds where the score crosses the budget.

A rejected step so falls back to the next finer rung of each block, never straight to
keeping it.

A second path (factor_path.py) stores whole tensors as their references plus int8-coded
low-rank factors, the ranks set by one threshold on each delta's energy left out; a binary
search finds its coarsest passing configuration too. The path whose choice stores fewer
bytes is applied.

Because neither path depends on ``max_drop`` and each binary search can only go coarser
when more passes, a larger ``max_drop`` never stores more bytes on either path, nor so in
the cheaper of the two. Each configuration tried is applied in a savepoint, scored by the
validator and rolled back; the chosen one is applied for good.
"""

from __future__ import annotations

import math

import numpy as np

from . import encoding
from .validators import score as run_validator
from .writes import KEPT, apply, log

# Thresholds on a block's relative error, coarse to fine: sqrt(2) steps from 2 down to
# 1/256 (a finer error costs the next rung anyway), then 0 (every block kept).
GRID = (math.inf, *(2.0 * 2 ** (-k / 2) for k in range(19)), 0.0)


class _Undo(Exception):
    """Raised inside a trial's savepoint to roll it back."""


class BudgetSearch:
    """One model's search (see the module docstring). ``ladders``: the encoding.Ladders of
    its targets with a reference, one per tile extent; ``factor_path``: a FactorPath over
    the same targets, or None."""

    def __init__(self, w, report, ladders, factor_path, validator, max_drop, tolerance, progress):
        self.w, self.report, self.validator = w, report, validator
        self.factor_path = factor_path
        self.max_drop = max_drop
        self.progress = progress
        self.ladders = ladders
        self.tolerance = tolerance
        self.expected = 0  # validations the search will take, at most (for progress)
        self.scores: dict[bytes, float] = {}  # configurations validated so far: their scores

    # -- configurations: one rung index per block, the blocks of the ladders in order ------

    def at(self, tau: float) -> list[np.ndarray]:
        return [lad.cheapest_within(tau) for lad in self.ladders]

    def outcomes(self, config) -> list:
        """The targets that change under config, each with its outcome set."""
        out = []
        for lad, rungs in zip(self.ladders, config):
            for i, j in enumerate(rungs):
                it = lad.items[i]
                it.outcome = lad.outcome(i, int(j))
                if it.outcome.kind != encoding.KEEP:
                    out.append(it)
        return out

    def passes(self, config) -> bool:
        """Whether the model scores within budget stored as config (tried, rolled back)."""
        value = self._try(config, keep=False)
        self.scores[self.key(config)] = value
        # the drop as the caller computes it (before - after), not after >= before - max
        return self.report.score_before - value <= self.max_drop

    def _try(self, config, keep: bool, score: float | None = None) -> float:
        """Store config (a tiles' rung list or a factor path's ranks), score it (unless its
        score is given: validated already), and roll it back unless keep."""
        w, report = self.w, self.report
        value = score
        try:
            with w.savepoint():
                if isinstance(config, dict):
                    self.factor_path.write(config)
                else:
                    apply(w, self.outcomes(config))
                if value is None:
                    with w.callers_code():  # the validator is not the store's code
                        value = run_validator(self.validator, w.store, report.model)
                    report.validations += 1
                    self.progress(
                        report, report.validations, max(report.validations, self.expected)
                    )
                if not keep:
                    raise _Undo
        except _Undo:
            pass
        return value

    def key(self, config) -> bytes:
        if isinstance(config, dict):
            return self.factor_path.key(config)
        return b"".join(x.tobytes() for x in config)

    # -- the search -------------------------------------------------------------------------

    def _coarsest_passing(self, configs) -> tuple[int, int]:
        """(lo, hi): hi the coarsest of configs (coarse to fine; the last passes unasked)
        that passes by binary search, lo the one before it that failed (-1 if none)."""
        lo, hi = -1, len(configs) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.passes(configs[mid]):
                hi = mid
            else:
                lo = mid
        return lo, hi

    def _tiles_path(self) -> list[np.ndarray]:
        grid = [t for t in GRID if self.tolerance is None or t <= self.tolerance]
        if self.tolerance is not None and self.tolerance not in grid:
            grid.insert(0, self.tolerance)
        if grid[-1] != 0.0:
            grid.append(0.0)
        # distinct configurations along the grid, coarse to fine (the last keeps all)
        configs, last = [], None
        for tau in grid:
            c = self.at(tau)
            key = self.key(c)
            if key != last:
                configs.append(c)
                last = key
        self.expected += math.ceil(math.log2(len(configs) + 1)) + math.ceil(
            math.log2(max(1, sum(len(lad.items) for lad in self.ladders)))
        )
        lo, hi = self._coarsest_passing(configs)
        return configs[hi] if lo < 0 else self._between(configs[hi], configs[lo])

    def _tiles_bytes(self, config) -> int:
        return int(sum(lad.nbytes[rungs].sum() for lad, rungs in zip(self.ladders, config)))

    def run(self) -> None:
        """Both paths; the one storing fewer bytes within budget is applied for good."""
        self.expected = self.report.validations + 1
        chosen = self._tiles_path()
        if self.factor_path:
            configs = self.factor_path.configs()
            self.expected += math.ceil(math.log2(len(configs) + 1))
            _, hi = self._coarsest_passing(configs)
            if self.factor_path.nbytes(configs[hi]) < self._tiles_bytes(chosen):
                chosen = configs[hi]
        items = [it for lad in self.ladders for it in lad.items]
        if isinstance(chosen, dict):  # targets off the factor path stay as they are
            for it in items:
                it.outcome = encoding.Outcome(encoding.KEEP, 0.0)
        # applied for good (setting each target's outcome); the search's score of it
        # stands (a second validation would score the same weights again)
        value = self._try(chosen, keep=True, score=self.scores.get(self.key(chosen)))
        report = self.report
        self.progress(report, report.validations, report.validations)
        report.score_after = value
        if isinstance(chosen, dict):
            report.factors = self.factor_path.factored(chosen)
            report.undone = 0  # the tiles' path's count: not what was applied
        kinds = [it.outcome.kind for it in items]
        report.substituted = kinds.count(encoding.SUBSTITUTE)
        report.residuals = kinds.count(encoding.RESIDUAL)
        log(self.w, [it for it in items if it.outcome.kind == encoding.KEEP], KEPT)

    def _between(self, fine, coarse) -> list[np.ndarray]:
        """The coarsest passing configuration on the path from fine (passes) to coarse
        (fails) that moves blocks one at a time, least error per byte saved first."""
        moves = []  # (key, ladder, block)
        for g, (lad, f, c) in enumerate(zip(self.ladders, fine, coarse)):
            for i in np.flatnonzero(f != c):
                saved = lad.nbytes[f[i]] - lad.nbytes[c[i]]
                added = lad.error[i, c[i]] ** 2 - lad.error[i, f[i]] ** 2
                moves.append((added / max(saved, 1), g, int(i)))
        moves.sort()

        def config(j):
            out = [x.copy() for x in fine]
            for _, g, i in moves[:j]:
                out[g][i] = coarse[g][i]
            return out

        lo, hi = 0, len(moves)  # config(lo) passes, config(hi) fails
        # to within 1/64 of the moves: the last few validations would buy little
        while hi - lo > max(1, len(moves) // 64):
            mid = (lo + hi) // 2
            if self.passes(config(mid)):
                lo = mid
            else:
                hi = mid
        self.report.undone = len(moves) - lo  # blocks tried coarser and left finer
        return config(lo)
