"""Residual payloads: the compact correction added to a shared block (float32 tiles only).

A model's tile may point at a block shared with another model plus a *residual* stored
separately; the tile the model computes with is ``shared_block (as float32) + residual``.
``<store>_residuals`` has one row per such tile::

    tensor_id, block_row, block_col   the tile (primary key)
    kind, param                       the payload's format (below)
    page_id, slot, nbytes             where its bytes are: a slot of a <store>_pages page

Residual pages are ordinary version-1 pages (see sqlite_tensor.pages) that hold residual
payloads only. For a tile of ``br x bc`` (its trimmed extent: edge tiles are smaller), all
numbers little-endian:

kind 1, LOWRANK, param = rank r, 1 <= r <= min(br, bc)::

    offset          size          field
    0               br * r * 4    U: br x r float32, row-major (singular values folded in)
    br * r * 4      bc * r * 4    V: bc x r float32, row-major
    residual = U @ V.T                       nbytes = (br + bc) * r * 4

kind 2, QUANTIZED, param = bits b in {2, 4, 8}; with q = 2**(b-1) and
``row_bytes = ceil(bc * b / 8)``::

    offset                  size              field
    0                       br * 4            scale[i]: one float32 per tile row
    br * 4 + i * row_bytes  row_bytes         codes of row i, packed little end first:
                                              element j sits at bit (j*b) % 8 of byte
                                              (j*b) // 8 of its row (unused high bits: 0)
    residual[i, j] = (code[i, j] - q) * scale[i]   nbytes = br * 4 + br * row_bytes

The encoder here uses scale[i] = max|row i| / (q - 1) and codes round(x / scale) + q,
clipped to [1, 2*q - 1] (so code 0 is never written; a decoder accepts it); a zero row has
scale 0. The compiled engine (cython/store/page_reader.pxi, cython/inference/kernels.pxi)
reads the same layout: low-rank residuals are multiplied as two thin products, never
expanded, quantized ones are dequantized into a scratch tile.
"""

from __future__ import annotations

import numpy as np

from . import _engine

# The engine owns the kinds and bit widths (cython/c/st_names.h) and checks stored rows
# against them; these are its lists.
LOWRANK = _engine.RESIDUAL_LOWRANK
QUANTIZED = _engine.RESIDUAL_QUANTIZED
KINDS = dict(_engine.RESIDUAL_KINDS)
BITS = _engine.RESIDUAL_BITS


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _check(kind, param, rows, cols) -> tuple[int, int, int, int]:
    """Validated (kind, param, rows, cols) as ints."""
    rows = _positive_int("rows", rows)
    cols = _positive_int("cols", cols)
    if isinstance(kind, bool) or not isinstance(kind, (int, np.integer)) or int(kind) not in KINDS:
        raise ValueError(f"unknown residual kind {kind!r}; kinds are 1 (LOWRANK) and 2 (QUANTIZED)")
    kind = int(kind)
    if kind == LOWRANK:
        param = _positive_int("rank", param)
        if param > min(rows, cols):
            raise ValueError(
                f"rank {param} is more than min(rows, cols) = {min(rows, cols)} for a "
                f"{rows} x {cols} tile"
            )
    else:
        if (
            isinstance(param, bool)
            or not isinstance(param, (int, np.integer))
            or int(param) not in BITS
        ):
            raise ValueError(f"bits must be 2, 4 or 8, got {param!r}")
        param = int(param)
    return kind, param, rows, cols


def _row_bytes(cols: int, bits: int) -> int:
    return (cols * bits + 7) // 8


def payload_bytes(kind, param, rows, cols) -> int:
    """Length in bytes of a residual payload of this kind for a rows x cols tile."""
    kind, param, rows, cols = _check(kind, param, rows, cols)
    if kind == LOWRANK:
        return (rows + cols) * param * 4
    return rows * 4 + rows * _row_bytes(cols, param)


def _delta(delta) -> np.ndarray:
    arr = np.asarray(delta)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"a residual is a non-empty 2-D tile, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"a residual is a float tile, got {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("a residual must be finite (it has NaN or infinite values)")
    return arr


def encode_lowrank(delta, rank) -> bytes:
    """U (rows x rank) then V (cols x rank), float32, so that delta ~= U @ V.T: the
    truncated SVD, with the singular values folded into U."""
    d = _delta(delta)
    _, rank, rows, cols = _check(LOWRANK, rank, *d.shape)
    u, s, vt = np.linalg.svd(d, full_matrices=False)
    U = (u[:, :rank] * s[:rank]).astype("<f4")
    V = np.ascontiguousarray(vt[:rank].T).astype("<f4")
    return U.tobytes() + V.tobytes()


def encode_quantized(delta, bits) -> bytes:
    """Per-row scales (float32) then the rows' codes, ``bits`` bits each (see the module
    docstring): scale = max|row| / (2**(bits-1) - 1), codes rounded to nearest."""
    d = _delta(delta)
    _, bits, rows, cols = _check(QUANTIZED, bits, *d.shape)
    q = 1 << (bits - 1)
    top = q - 1
    scale = (np.abs(d).max(axis=1) / top).astype(np.float32)
    safe = np.where(scale > 0, scale.astype(np.float64), 1.0)[:, None]
    levels = np.clip(np.rint(d / safe), -top, top)
    levels[scale == 0] = 0
    codes = (levels + q).astype(np.uint8)
    per = 8 // bits  # codes per byte
    row_bytes = _row_bytes(cols, bits)
    padded = np.zeros((rows, row_bytes * per), np.uint8)
    padded[:, :cols] = codes
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    packed = np.bitwise_or.reduce(padded.reshape(rows, row_bytes, per) << shifts, axis=2)
    return scale.astype("<f4").tobytes() + packed.astype(np.uint8).tobytes()


def decode(kind, param, rows, cols, payload) -> np.ndarray:
    """The residual (rows x cols float32) a payload stands for."""
    kind, param, rows, cols = _check(kind, param, rows, cols)
    try:
        buf = memoryview(payload).cast("B")
    except TypeError:
        raise ValueError(f"a payload is bytes, got {type(payload).__name__}") from None
    want = payload_bytes(kind, param, rows, cols)
    if len(buf) != want:
        raise ValueError(
            f"a {KINDS[kind]} residual of a {rows} x {cols} tile with param {param} "
            f"has {want} bytes, got {len(buf)}"
        )
    raw = np.frombuffer(buf, np.uint8)
    if kind == LOWRANK:
        U = raw[: rows * param * 4].view("<f4").reshape(rows, param).astype(np.float64)
        V = raw[rows * param * 4 :].view("<f4").reshape(cols, param).astype(np.float64)
        return (U @ V.T).astype(np.float32)
    bits = param
    scale = raw[: rows * 4].view("<f4").astype(np.float32)
    row_bytes = _row_bytes(cols, bits)
    packed = raw[rows * 4 :].reshape(rows, row_bytes)
    j = np.arange(cols)
    codes = (packed[:, (j * bits) // 8] >> ((j * bits) % 8).astype(np.uint8)) & ((1 << bits) - 1)
    q = 1 << (bits - 1)
    return (codes.astype(np.float32) - np.float32(q)) * scale[:, None]


# -- for the decision step: what each encoding costs and leaves, without encoding ------------
# (placeholder for existing kinds; the new kinds' branch replaces it)


def ladder(rows: int, cols: int) -> list[tuple[int, int, int]]:
    """(kind, param, nbytes) of every encoding a rows x cols tile can take, cheapest first."""
    out = [(QUANTIZED, b, payload_bytes(QUANTIZED, b, rows, cols)) for b in BITS]
    out += [(LOWRANK, r, payload_bytes(LOWRANK, r, rows, cols)) for r in range(1, min(rows, cols))]
    return sorted(out, key=lambda e: e[2])


def errors(kind, param, d: np.ndarray) -> np.ndarray:
    """|d - decode(encode(d))|_F of each tile of d (n, rows, cols)."""
    d = np.asarray(d, np.float64)
    if kind == LOWRANK:
        sv = np.linalg.svd(d, compute_uv=False)
        return np.sqrt(np.square(sv[:, param:]).sum(axis=1))
    top = (1 << (param - 1)) - 1
    scale = np.abs(d).max(axis=2, keepdims=True).astype(np.float32).astype(np.float64) / top
    safe = np.where(scale > 0, scale, 1)
    q = np.clip(np.rint(d / safe), -top, top) * scale
    return np.sqrt(np.square(d - q).sum(axis=(1, 2)))


def encode(kind, param, delta) -> bytes:
    """The payload of a residual of this kind and param for delta."""
    return (encode_lowrank if kind == LOWRANK else encode_quantized)(delta, param)
