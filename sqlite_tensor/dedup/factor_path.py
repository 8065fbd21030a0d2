"""The budget search's second path: whole tensors as their references plus low-rank factors.

A fine-tune moves a tensor along few directions at the tensor's scale, which per-tile
encodings see only in pieces. On this path a tensor whose every tile is a target (each
block used once, with a reference) is stored as its reference tiles plus U @ V.T, the
rank-r truncated SVD of delta = tensor - references (int8-coded: sqlite_tensor.factors),
or kept whole when the factors would cost as much.

The ranks follow one threshold, the fraction of each delta's energy left out
(factors.ENERGY_LEFT_OUT, the low-rank-delta baseline's), coarse to fine, then every tensor
kept. A finer threshold never lowers a rank, and a tensor is kept only once its factors
would cost at least as much, so the bytes never fall along the path: the budget search's
binary search over it is monotone in max_drop, as on the tiles' path. It is not taken when
``tolerance`` is given: that caps each block's own error, which a tensor's factors spread.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .. import blocks, factors
from . import encoding
from .writes import Target, apply, set_factors

KEPT_WHOLE = -1  # a tensor's rank in a configuration: kept as it is (no factors)


@dataclass
class _Tensor:
    tensor_id: int
    items: list[Target]
    delta: factors.Delta
    norm: float  # |tensor|_F
    kept_bytes: int  # its blocks' bytes, what keeping it costs


class FactorPath:
    """The eligible tensors among ``items`` (matched targets, their tiles and references in
    ``read``) and the configurations of the path: {tensor_id: rank or KEPT_WHOLE}."""

    def __init__(self, w, items: list[Target], read: dict):
        self.w = w
        self.tensors: list[_Tensor] = []
        by_tensor: dict[int, list[Target]] = defaultdict(list)
        shared = set()
        for it in items:
            for tid, _, _ in it.entries:
                by_tensor[tid].append(it)
                if len(it.entries) > 1:  # one block at two places: each place would differ
                    shared.add(tid)
        shapes = self._shapes(list(by_tensor))
        for tid, its in by_tensor.items():
            rows, cols = shapes[tid]
            grid = -(-rows // w.block_rows) * -(-cols // w.block_cols)
            if tid in shared or len(its) != grid:  # a tile not on the path would move too
                continue
            t = np.empty((rows, cols), np.float32)
            s = np.empty((rows, cols), np.float32)
            for it in its:
                _, bi, bj = it.entries[0]
                br, bc = blocks.tile_shape(rows, cols, bi, bj, w.block_rows, w.block_cols)
                at = np.s_[bi * w.block_rows : bi * w.block_rows + br,
                           bj * w.block_cols : bj * w.block_cols + bc]  # fmt: skip
                t[at], s[at] = read[it.block_id], read[it.ref]
            norm = float(np.sqrt(np.square(t, dtype=np.float64).sum()))
            kept = sum(it.nbytes for it in its)
            self.tensors.append(_Tensor(tid, its, factors.Delta(t - s), norm, kept))
        on_path = {id(it) for x in self.tensors for it in x.items}
        # targets on no eligible tensor: kept on this path
        self.other_bytes = sum(it.nbytes for it in items if id(it) not in on_path)
        self._factors: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _shapes(self, tensor_ids: list[int]) -> dict[int, tuple[int, int]]:
        t = self.w.tables
        out = {}
        for start in range(0, len(tensor_ids), 500):
            chunk = tensor_ids[start : start + 500]
            out.update(
                (tid, (rows, cols))
                for tid, rows, cols in self.w.conn.execute(
                    f"SELECT id, rows, cols FROM {t.tensors}"
                    f" WHERE id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
            )
        return out

    def __bool__(self) -> bool:
        return bool(self.tensors)

    # -- the path -------------------------------------------------------------------------------

    def _rank(self, x: _Tensor, left_out: float | None) -> int:
        if left_out is None:
            return KEPT_WHOLE
        d = x.delta
        r = d.rank_for(left_out)
        rows, cols = d.delta.shape
        if r >= min(rows, cols) or factors.payload_bytes(rows, cols, r) >= x.kept_bytes:
            return KEPT_WHOLE
        return r

    def configs(self) -> list[dict[int, int]]:
        """The distinct configurations, coarse to fine; the last keeps every tensor."""
        out = []
        for left_out in (*factors.ENERGY_LEFT_OUT, None):
            c = {x.tensor_id: self._rank(x, left_out) for x in self.tensors}
            if not out or c != out[-1]:
                out.append(c)
        return out

    def nbytes(self, config: dict[int, int]) -> int:
        total = self.other_bytes
        for x in self.tensors:
            r = config[x.tensor_id]
            total += (
                x.kept_bytes if r == KEPT_WHOLE else factors.payload_bytes(*x.delta.delta.shape, r)
            )
        return total

    @staticmethod
    def key(config: dict[int, int]) -> bytes:
        return b"F" + np.array(sorted(config.items()), np.int64).tobytes()

    def write(self, config: dict[int, int]) -> None:
        """Store config (inside the caller's savepoint), setting its targets' outcomes."""
        for x in self.tensors:
            r = config[x.tensor_id]
            if r == KEPT_WHOLE:
                for it in x.items:
                    it.outcome = encoding.Outcome(encoding.KEEP, 0.0)
                continue
            error = x.delta.left_after(r) / x.norm if x.norm > 0 else math.inf
            for it in x.items:
                it.outcome = encoding.Outcome(encoding.SUBSTITUTE, error)
            apply(self.w, x.items)
            if r > 0:
                if (x.tensor_id, r) not in self._factors:
                    self._factors[x.tensor_id, r] = x.delta.factors(r)
                set_factors(self.w, x.tensor_id, *self._factors[x.tensor_id, r])

    def factored(self, config: dict[int, int]) -> int:
        """Tensors that config gives factors."""
        return sum(1 for r in config.values() if r > 0)
