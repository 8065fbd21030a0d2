"""Every way to store a block that has a close shared block, and what each costs.

For a target tile t and its reference tile s (the nearest shared one), d = t - s may be
  - thrown away: t is *substituted* by s (the paper's method; costs nothing),
  - kept as a compact *residual*, applied by the kernels: a sign per element with a scale
    (1 bit), the largest entries (sparse), both, few-bit quantized, or low-rank factors
    (sqlite_tensor/residuals.py has the byte formats and residuals.ladder their order),
  - or the block is kept as it is.
A :class:`Ladder` holds these *rungs* for blocks of one tile extent, cheapest first, each
with the error it leaves relative to the block, |t - t_hat|_F / |t|_F; a residual must cost
at most ``max_residual_fraction`` of the block (it also costs compute). The budget search
(budget.py) walks the ladders; the greedy guard takes each block's cheapest rung within
``tolerance`` (:meth:`Ladder.within`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import residuals

SUBSTITUTE = "substitute"
RESIDUAL = "residual"
KEEP = "keep"


@dataclass
class Outcome:
    kind: str  # SUBSTITUTE, RESIDUAL or KEEP
    error: float  # |t - t_hat|_F / |t|_F of what would be stored
    residual_kind: int = 0  # one of residuals.KINDS
    param: int = 0  # the kind's parameter (rank, bits, scales, k)
    payload: bytes = b""


class Ladder:
    """The rungs of blocks of one tile extent against their references: column 0
    substitutes, the middle ones are residuals.ladder's encodings (cheapest first, those
    costing at most max_residual_fraction of the block), the last keeps the block.
    ``nbytes[j]``: what rung j stores; ``error[i, j]``: the relative error it leaves in
    block i."""

    def __init__(self, items, t, s, *, residuals_allowed, max_residual_fraction=0.5):
        n, rows, cols = t.shape
        self.items = items
        self.d = (t - s).astype(np.float32)
        norm = np.sqrt(np.square(t, dtype=np.float64).sum(axis=(1, 2)))
        safe = np.where(norm > 0, norm, 1.0)
        rungs = [(SUBSTITUTE, 0, 0, 0, np.sqrt(np.square(self.d, dtype=np.float64).sum((1, 2))))]
        if residuals_allowed:
            budget = max_residual_fraction * rows * cols * 4
            steps, errors = residuals.ladder_errors(self.d)  # one SVD for every rank
            for (kind, param, nbytes), e in zip(steps, errors):
                if nbytes <= budget:
                    rungs.append((RESIDUAL, kind, param, nbytes, e))
        rungs.append((KEEP, 0, 0, rows * cols * 4, np.zeros(n)))
        self.rungs = [r[:4] for r in rungs]
        self.nbytes = np.array([r[3] for r in rungs], np.int64)
        absolute = np.stack([r[4] for r in rungs], axis=1)
        self.error = absolute / safe[:, None]
        # a zero block: any error at all is infinitely large relative to it
        self.error[(norm == 0)[:, None] & (absolute > 0)] = np.inf
        self._payloads: dict[tuple[int, int], bytes] = {}

    def cheapest_within(self, tau: float) -> np.ndarray:
        """Each block's cheapest rung with error <= tau (rungs are in order of bytes)."""
        return np.argmax(self.error <= tau, axis=1)

    def within(self, tau: float) -> list[Outcome]:
        """Each block's outcome at its cheapest rung within tau."""
        return [self.outcome(i, int(j)) for i, j in enumerate(self.cheapest_within(tau))]

    def outcome(self, i: int, j: int) -> Outcome:
        """What storing block i at rung j writes (a residual's payload encoded once)."""
        kind, rkind, param, _ = self.rungs[j]
        error = float(self.error[i, j])
        if kind != RESIDUAL:
            return Outcome(kind, error)
        if (i, j) not in self._payloads:
            self._payloads[i, j] = residuals.encode(rkind, param, self.d[i])
        return Outcome(RESIDUAL, error, rkind, param, self._payloads[i, j])
