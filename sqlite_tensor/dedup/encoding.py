"""What to store for a block that has a close shared block: the outcome per block.

For a target tile t and its nearest shared tile s, the difference d = t - s may be
  - thrown away: t is *substituted* by s (the paper's method; costs nothing),
  - kept as a compact *residual*: low-rank factors (rank r) or a few-bit quantized
    difference (2, 4 or 8 bits), stored in the store's residual pages and applied by the
    kernels (sqlite_tensor/residuals.py has the byte formats),
  - or the block is kept as it is.
The error an outcome leaves is |t - (s + residual)|_F; it must be at most
``tolerance * |t|_F``. Among outcomes within tolerance the one with the fewest bytes wins,
and a residual must cost at most ``max_residual_fraction`` of the block, else keeping the
block is better (a residual also costs compute).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import residuals

SUBSTITUTE = "substitute"
RESIDUAL = "residual"
KEEP = "keep"
QUANT_BITS = (2, 4, 8)


@dataclass
class Outcome:
    kind: str  # SUBSTITUTE, RESIDUAL or KEEP
    error: float  # |t - t_hat|_F / |t|_F of what would be stored
    residual_kind: int = 0  # residuals.LOWRANK or residuals.QUANTIZED
    param: int = 0  # rank or bits
    payload: bytes = b""


def quantization_error(d: np.ndarray, bits: int) -> np.ndarray:
    """|d - quantized(d)|_F for each tile of d (n, rows, cols), as residuals.encode_quantized
    rounds (per-row scale, symmetric levels)."""
    top = (1 << (bits - 1)) - 1
    scale = np.abs(d).max(axis=2, keepdims=True) / top
    safe = np.where(scale > 0, scale, 1)
    q = np.clip(np.rint(d / safe), -top, top) * scale
    return np.sqrt(np.square(d - q).sum(axis=(1, 2)))


def choose(
    t: np.ndarray,
    s: np.ndarray,
    *,
    tolerance: float,
    residuals_allowed: bool,
    max_residual_fraction: float = 0.5,
) -> list[Outcome]:
    """Outcomes for tiles t against their shared tiles s (both n x rows x cols, float32)."""
    n, rows, cols = t.shape
    d = (t - s).astype(np.float32)
    norm_t = np.sqrt(np.square(t, dtype=np.float64).sum(axis=(1, 2)))
    limit = tolerance * norm_t
    err_sub = np.sqrt(np.square(d, dtype=np.float64).sum(axis=(1, 2)))
    out = [Outcome(KEEP, 0.0) for _ in range(n)]
    budget = max_residual_fraction * rows * cols * 4
    options = []  # (bytes, kind, param, errors (n,))
    if residuals_allowed:
        sv = np.linalg.svd(d.astype(np.float64), compute_uv=False)  # (n, min(rows, cols))
        tail = np.sqrt(
            np.cumsum(np.square(sv)[:, ::-1], axis=1)[:, ::-1]
        )  # tail[:, r] = error at rank r
        for r in range(1, sv.shape[1]):
            nbytes = residuals.payload_bytes(residuals.LOWRANK, r, rows, cols)
            if nbytes > budget:
                break
            options.append((nbytes, residuals.LOWRANK, r, tail[:, r]))
        for bits in QUANT_BITS:
            nbytes = residuals.payload_bytes(residuals.QUANTIZED, bits, rows, cols)
            if nbytes <= budget:
                options.append((nbytes, residuals.QUANTIZED, bits, quantization_error(d, bits)))
        options.sort(key=lambda o: o[0])
    for i in range(n):
        if err_sub[i] <= limit[i]:
            out[i] = Outcome(SUBSTITUTE, _rel(err_sub[i], norm_t[i]))
            continue
        for _nbytes, kind, param, errors in options:
            if errors[i] <= limit[i]:
                encode = (
                    residuals.encode_lowrank
                    if kind == residuals.LOWRANK
                    else residuals.encode_quantized
                )
                out[i] = Outcome(
                    RESIDUAL, _rel(errors[i], norm_t[i]), kind, param, encode(d[i], param)
                )
                break
    return out


def _rel(error: float, norm: float) -> float:
    return float(error / norm) if norm > 0 else 0.0


# -- ladders: every way to store each block, for the budget search (budget.py) -------------


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
            tails = None  # low-rank errors of every rank from one SVD (the costly part)
            for kind, param, nbytes in residuals.ladder(rows, cols):
                if nbytes > budget:
                    continue
                if kind == residuals.LOWRANK:
                    if tails is None:
                        sv = np.linalg.svd(self.d, compute_uv=False).astype(np.float64)
                        tails = np.sqrt(np.cumsum(np.square(sv)[:, ::-1], axis=1)[:, ::-1])
                    errors = tails[:, param] if param < tails.shape[1] else np.zeros(n)
                else:
                    errors = residuals.errors(kind, param, self.d)
                rungs.append((RESIDUAL, kind, param, nbytes, errors))
        rungs.append((KEEP, 0, 0, rows * cols * 4, np.zeros(n)))
        self.rungs = [r[:4] for r in rungs]
        self.nbytes = np.array([r[3] for r in rungs], np.int64)
        self.error = np.stack([r[4] for r in rungs], axis=1) / safe[:, None]
        # a block equal to its reference loses nothing by substitution: error 0 exactly
        self.error[norm == 0, 0] = 0.0

    def cheapest_within(self, tau: float) -> np.ndarray:
        """Each block's cheapest rung with error <= tau (rungs are in order of bytes)."""
        return np.argmax(self.error <= tau, axis=1)

    def nbytes_of(self, rungs: np.ndarray) -> np.ndarray:
        return self.nbytes[rungs]

    def outcome(self, i: int, j: int, cache: dict) -> Outcome:
        kind, rkind, param, _ = self.rungs[j]
        error = float(self.error[i, j])
        if kind != RESIDUAL:
            return Outcome(kind, error)
        key = (id(self.items[i]), j)
        if key not in cache:
            cache[key] = residuals.encode(rkind, param, self.d[i])
        return Outcome(RESIDUAL, error, rkind, param, cache[key])
