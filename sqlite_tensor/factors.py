"""Tensor factors: a whole tensor's low-rank correction, U @ V.T (float32 tensors only).

A float32 tensor's value is its tiles (each a block, plus the tile's residual if it has
one: sqlite_tensor/residuals.py) plus, when ``<store>_factors`` has a row for it, U @ V.T
over its whole 2-D view (rows x cols, as in ``<store>_tensors``)::

    tensor_id   the tensor (primary key)
    rank        r, 1 <= r <= min(rows, cols)
    u           U (rows x r), the payload below
    v           V (cols x r), the payload below

A payload of an n x r factor, little-endian::

    offset      size        field
    0           r * 4       scale[k]: one float32 per column, finite
    r * 4       n * r       code[i, k]: int8, row-major
    factor[i, k] = code[i, k] * scale[k]                      length = r * 4 + n * r

The encoder writes codes in [-127, 127] with scale[k] = max |column k| / 127 (0 for a zero
column); a decoder accepts -128. A fine-tune's delta is low-rank at the tensor's scale, not
the tile's: a rank-r factor pays (rows + cols) r bytes once, where a per-tile low-rank
residual pays (br + bc) r float32 on every tile. int8 codes cost a quarter of float32 ones
and leave about 1 % of the factor's own size as error, far below what truncating the rank
leaves. The engine checks every row against its tensor (rank, both lengths, finite scales;
SQLITE_CORRUPT otherwise) and its kernels apply the factors once per layer.
"""

from __future__ import annotations

import numpy as np

# The rank search's thresholds: the fraction of a delta's energy ||delta||_F^2 left out,
# coarse to fine. The low-rank-delta baseline (testing.baselines) uses the same ones.
ENERGY_LEFT_OUT = (
    0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01,
    5e-3, 2e-3, 1e-3, 1e-4, 1e-5, 0.0,
)  # fmt: skip


def payload_bytes(rows: int, cols: int, rank: int) -> int:
    """Bytes of a row's u and v together."""
    return (rows + cols + 8) * rank


def _encode_one(f: np.ndarray) -> bytes:
    f = np.asarray(f, np.float32)
    scale = (np.abs(f).max(axis=0) / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    codes = np.clip(np.rint(f / safe), -127, 127).astype(np.int8)
    return scale.astype("<f4").tobytes() + codes.tobytes()


def encode(u: np.ndarray, v: np.ndarray) -> tuple[int, bytes, bytes]:
    """(rank, u payload, v payload) of U (rows x r) and V (cols x r)."""
    if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[1] or u.shape[1] < 1:
        raise ValueError(
            f"factors must be U (rows x r) and V (cols x r); got {u.shape} and {v.shape}"
        )
    if not (np.isfinite(u).all() and np.isfinite(v).all()):
        raise ValueError("factors must be finite")
    return u.shape[1], _encode_one(u), _encode_one(v)


def _decode_one(payload: bytes, n: int, rank: int, what: str) -> np.ndarray:
    want = rank * 4 + n * rank
    if len(payload) != want:
        raise ValueError(f"{what} has {len(payload)} bytes; rank {rank} over {n} needs {want}")
    scale = np.frombuffer(payload, "<f4", rank)
    if not np.isfinite(scale).all():
        raise ValueError(f"{what} has a scale that is not finite")
    codes = np.frombuffer(payload, np.int8, n * rank, rank * 4).reshape(n, rank)
    return codes.astype(np.float32) * scale


def decode(rows: int, cols: int, rank: int, u: bytes, v: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(U, V) as float32 from a row's payloads (ValueError if a length does not fit)."""
    if not 1 <= rank <= min(rows, cols):
        raise ValueError(
            f"rank {rank} is outside 1..{min(rows, cols)} for a {rows} x {cols} tensor"
        )
    return _decode_one(u, rows, rank, "u"), _decode_one(v, cols, rank, "v")


def as_stored(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """U @ V.T as the store will apply it (after int8 coding)."""
    rank, pu, pv = encode(u, v)
    du, dv = decode(u.shape[0], v.shape[0], rank, pu, pv)
    return du @ dv.T


class Delta:
    """A tensor's delta from its reference and its truncated SVDs, by rank.

    The SVD comes from the eigendecomposition of the smaller Gram matrix (float64):
    D = U S V^T, so the rank-r truncation is U_r U_r^T D (or D V_r V_r^T)."""

    def __init__(self, delta):
        self.delta = delta
        m, n = delta.shape
        d = delta.astype(np.float64)
        self.rows = m <= n  # basis of the column space (m x m Gram) or the row space
        gram = d @ d.T if self.rows else d.T @ d
        values, vectors = np.linalg.eigh(gram)
        self.energy = np.maximum(values[::-1], 0.0)  # squared singular values, descending
        self.basis = vectors[:, ::-1]
        self.d = d

    def rank_for(self, left_out: float) -> int:
        """The smallest r leaving at most ``left_out`` of the energy out."""
        total = self.energy.sum()
        if total == 0.0:
            return 0
        kept = np.cumsum(self.energy)
        return int(np.searchsorted(kept, (1.0 - left_out) * total - 1e-12 * total) + 1)

    def left_after(self, r: int) -> float:
        """|delta - its rank-r truncation|_F."""
        return float(np.sqrt(max(self.energy[r:].sum(), 0.0)))

    def factors(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(U, V), float32, with U @ V.T the rank-r truncation; each column pair scaled to
        equal norms, so that neither factor's int8 scale is far larger than the other's."""
        b = self.basis[:, :r]
        u, v = (b, self.d.T @ b) if self.rows else (self.d @ b, b)
        nu, nv = np.linalg.norm(u, axis=0), np.linalg.norm(v, axis=0)
        g = np.sqrt(np.where(nu > 0, nv / np.where(nu > 0, nu, 1.0), 1.0))
        g = np.where(g > 0, g, 1.0)
        return (u * g).astype(np.float32), (v / g).astype(np.float32)

    def truncated(self, r: int) -> np.ndarray:
        b = self.basis[:, :r]
        out = b @ (b.T @ self.d) if self.rows else (self.d @ b) @ b.T
        return out.astype(np.float32)
