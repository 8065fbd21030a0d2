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
scale 0.

kind 3, SIGN (BitDelta-style, one bit per element), param = scales: 1 (SIGN_TILE, one
scale for the tile) or 2 (SIGN_ROW, one per tile row); n = 1 or br scales, and
``row_bytes = ceil(bc / 8)``::

    offset                  size              field
    0                       n * 4             scale: float32
    n * 4 + i * row_bytes   row_bytes         signs of row i: element j at bit j % 8 of
                                              byte j // 8; 1 is +, 0 is - (unused bits: 0)
    residual[i, j] = (+1 or -1) * scale[i or 0]    nbytes = n * 4 + br * row_bytes

The encoder writes the sign of each element (0 counts as +) and the scale that minimises
the Frobenius error for that pattern: the mean |d| over the group (tile or row).

kind 4, SPARSE (the k largest |d|, kept), param = k, 1 <= k <= max(1, br * bc // 4)
(``_engine.residual_sparse_cap``); indices are uint16 when br * bc <= 65536, else uint32
(w bytes each)::

    offset          size          field
    0               k * w         index of each entry in the tile, i * bc + j, strictly
                                  rising, each < br * bc (the engine checks this on every
                                  read: a bad one is corruption)
    k * w           k * 2         value of each entry: float16
    residual[index / bc, index % bc] = value, 0 elsewhere      nbytes = k * (w + 2)

kind 5, SIGN_SPARSE (sign with per-row scales, plus sparse corrections), param = k as for
SPARSE: a SIGN payload with param SIGN_ROW, zero bytes up to a multiple of 4, then a SPARSE
payload of k entries; the residual is the sum of the two. The encoder takes the k largest
|d| as the sparse entries (as SPARSE's encoder does: |d| compared as float32, ties to the
first in tile order), the row scales over the others
(mean |d|), and stores at each sparse entry d - its sign part, so those come back to float16
precision. nbytes = align4(br * 4 + br * ceil(bc / 8)) + k * (w + 2).

Sparse values must fit float16 (|value| <= 65504); the encoders refuse others.

The compiled engine (cython/store/page_reader.pxi, cython/inference/kernels.pxi)
reads the same layouts: low-rank residuals are multiplied as two thin products, never
expanded; the others are expanded into a scratch tile (T + residual).

Choosing: ``ladder(rows, cols)`` lists the (kind, param, nbytes) a tile can take, cheapest
first, and ``errors(kind, param, d)`` gives |d - decode(encode(d))|_F for a stack of tiles
without encoding them (``ladder_errors`` does the whole ladder with shared work), so that a
decision needs no knowledge of the kinds; ``encode(kind, param, d)`` writes the payload.

Measured on the trained family's fine-tune deltas (``python tools/residual_tradeoffs.py``,
docs/dedup.md): a sign residual with row scales costs 1.49x the bytes of one with a tile
scale; where the delta's scale varies by row (embeddings) it cuts the error by a quarter,
elsewhere by 3 %, so both are offered. SPARSE alone is dominated by SIGN on dense
fine-tune deltas; sign+sparse beats 2-bit quantization at the same bytes.
"""

from __future__ import annotations

import numpy as np

from . import _engine

# The engine owns the kinds, bit widths, sign scales and the sparse cap
# (cython/c/st_names.h, cython/store/page_reader.pxi) and checks stored rows against them;
# these are its lists.
LOWRANK = _engine.RESIDUAL_LOWRANK
QUANTIZED = _engine.RESIDUAL_QUANTIZED
SIGN = _engine.RESIDUAL_SIGN
SPARSE = _engine.RESIDUAL_SPARSE
SIGN_SPARSE = _engine.RESIDUAL_SIGN_SPARSE
KINDS = dict(_engine.RESIDUAL_KINDS)
BITS = _engine.RESIDUAL_BITS
SIGN_SCALES = dict(_engine.RESIDUAL_SIGN_SCALES)
SIGN_TILE = _engine.RESIDUAL_SIGN_TILE
SIGN_ROW = _engine.RESIDUAL_SIGN_ROW
sparse_cap = _engine.residual_sparse_cap

_F16_MAX = float(np.finfo(np.float16).max)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _kind_list() -> str:
    names = [f"{code} ({name})" for code, name in KINDS.items()]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _check(kind, param, rows, cols) -> tuple[int, int, int, int]:
    """Validated (kind, param, rows, cols) as ints."""
    rows = _positive_int("rows", rows)
    cols = _positive_int("cols", cols)
    if isinstance(kind, bool) or not isinstance(kind, (int, np.integer)) or int(kind) not in KINDS:
        raise ValueError(f"unknown residual kind {kind!r}; kinds are {_kind_list()}")
    kind = int(kind)
    if kind == LOWRANK:
        param = _positive_int("rank", param)
        if param > min(rows, cols):
            raise ValueError(
                f"rank {param} is more than min(rows, cols) = {min(rows, cols)} for a "
                f"{rows} x {cols} tile"
            )
    elif kind in (SPARSE, SIGN_SPARSE):
        param = _positive_int("k", param)
        if param > sparse_cap(rows, cols):
            raise ValueError(
                f"k {param} is more than {sparse_cap(rows, cols)}, the most entries a sparse "
                f"residual of a {rows} x {cols} tile keeps"
            )
    else:
        if kind == QUANTIZED:
            allowed, what, names = BITS, "bits", [str(b) for b in BITS]
        else:
            allowed, what = tuple(SIGN_SCALES), "sign scales"
            names = [f"{code} ({name})" for code, name in SIGN_SCALES.items()]
        if (
            isinstance(param, bool)
            or not isinstance(param, (int, np.integer))
            or int(param) not in allowed
        ):
            choices = ", ".join(names[:-1]) + " or " + names[-1]
            raise ValueError(f"{what} must be {choices}, got {param!r}")
        param = int(param)
    return kind, param, rows, cols


def _row_bytes(cols: int, bits: int) -> int:
    return (cols * bits + 7) // 8


def _index_dtype(rows: int, cols: int) -> str:
    return "<u2" if rows * cols <= 65536 else "<u4"


def _sign_bytes(nscales: int, rows: int, cols: int) -> int:
    return nscales * 4 + rows * _row_bytes(cols, 1)


def _sparse_at(rows: int, cols: int) -> int:
    """Where a SIGN_SPARSE payload's sparse part starts (4-byte aligned)."""
    return (_sign_bytes(rows, rows, cols) + 3) & ~3


def payload_bytes(kind, param, rows, cols) -> int:
    """Length in bytes of a residual payload of this kind for a rows x cols tile."""
    kind, param, rows, cols = _check(kind, param, rows, cols)
    if kind == LOWRANK:
        return (rows + cols) * param * 4
    if kind == QUANTIZED:
        return rows * 4 + rows * _row_bytes(cols, param)
    if kind == SIGN:
        return _sign_bytes(1 if param == SIGN_TILE else rows, rows, cols)
    sparse = param * (np.dtype(_index_dtype(rows, cols)).itemsize + 2)
    return sparse + (_sparse_at(rows, cols) if kind == SIGN_SPARSE else 0)


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


def _pack(codes: np.ndarray, bits: int) -> bytes:
    """Rows of codes (< 2**bits) packed little end first, each row padded to whole bytes."""
    rows, cols = codes.shape
    per = 8 // bits  # codes per byte
    row_bytes = _row_bytes(cols, bits)
    padded = np.zeros((rows, row_bytes * per), np.uint8)
    padded[:, :cols] = codes
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    packed = np.bitwise_or.reduce(padded.reshape(rows, row_bytes, per) << shifts, axis=2)
    return packed.astype(np.uint8).tobytes()


def _unpack(raw: np.ndarray, rows: int, cols: int, bits: int) -> np.ndarray:
    packed = raw.reshape(rows, _row_bytes(cols, bits))
    j = np.arange(cols)
    return (packed[:, (j * bits) // 8] >> ((j * bits) % 8).astype(np.uint8)) & ((1 << bits) - 1)


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
    return scale.astype("<f4").tobytes() + _pack(codes, bits)


def _sign_scales(a: np.ndarray, keep: np.ndarray | None, per_row: bool) -> np.ndarray:
    """The Frobenius-optimal scales of a sign pattern for |d| = a (n, rows, cols): the mean
    of a over each group's elements where keep (all of them when keep is None)."""
    axes = 2 if per_row else (1, 2)
    if keep is None:
        return a.mean(axis=axes, keepdims=True)
    count = keep.sum(axis=axes, keepdims=True)
    total = np.where(keep, a, 0.0).sum(axis=axes, keepdims=True)
    return total / np.maximum(count, 1)


def _rank_keys(d: np.ndarray) -> np.ndarray:
    """A key per element of each tile of d (n, rows, cols), unique within its tile, larger
    for a larger |d| (compared as float32), then for an earlier element: so "the k
    largest" is one set, whatever selection algorithm finds it (encoding and errors()
    agree on ties)."""
    n = d.shape[0]
    mag = np.abs(d).reshape(n, -1).astype(np.float32).view(np.uint32).astype(np.uint64)
    late = np.arange(mag.shape[1], dtype=np.uint64)
    return (mag << np.uint64(32)) | (np.uint64(0xFFFFFFFF) - late)


def _top_k(keys: np.ndarray, k: int) -> np.ndarray:
    """Flat indices (n, k), rising, of the k largest keys of each row of keys."""
    m = keys.shape[1]
    return np.sort(np.argpartition(keys, m - k, axis=1)[:, m - k :], axis=1)


def _f16(values: np.ndarray) -> np.ndarray:
    if values.size and np.abs(values).max() > _F16_MAX:
        raise ValueError(
            f"a sparse residual's values are float16: {np.abs(values).max():g} is more than "
            f"{_F16_MAX:g}"
        )
    return values.astype("<f2")


def encode_sign(delta, scales) -> bytes:
    """The sign of each element (0 counts as +) with one scale per tile (SIGN_TILE) or per
    row (SIGN_ROW), the mean |d| of its group (see the module docstring)."""
    d = _delta(delta)
    _, scales, rows, cols = _check(SIGN, scales, *d.shape)
    scale = _sign_scales(np.abs(d)[None], None, scales == SIGN_ROW)[0].reshape(-1)
    return scale.astype("<f4").tobytes() + _pack((d >= 0).astype(np.uint8), 1)


def encode_sparse(delta, k) -> bytes:
    """The k largest |d| (ties: first in tile order): rising indices, then float16 values."""
    d = _delta(delta)
    _, k, rows, cols = _check(SPARSE, k, *d.shape)
    at = _top_k(_rank_keys(d[None]), k)[0]
    return at.astype(_index_dtype(rows, cols)).tobytes() + _f16(d.reshape(-1)[at]).tobytes()


def encode_sign_sparse(delta, k) -> bytes:
    """A per-row sign part over all but the k largest |d|, then at those k the difference
    between d and the sign part, as a SPARSE payload (see the module docstring)."""
    d = _delta(delta)
    _, k, rows, cols = _check(SIGN_SPARSE, k, *d.shape)
    at = _top_k(_rank_keys(d[None]), k)[0]
    keep = np.ones(rows * cols, bool)
    keep[at] = False
    scale = _sign_scales(np.abs(d)[None], keep.reshape(1, rows, cols), True)[0].reshape(-1)
    scale = scale.astype(np.float32)
    signs = (d >= 0).astype(np.uint8)
    # what the engine adds first, in float32 as it does, so the corrections complete it
    part = np.where(signs > 0, scale[:, None], -scale[:, None]).astype(np.float32)
    values = d.reshape(-1)[at] - part.reshape(-1)[at].astype(np.float64)
    head = scale.astype("<f4").tobytes() + _pack(signs, 1)
    head += bytes(_sparse_at(rows, cols) - len(head))
    return head + at.astype(_index_dtype(rows, cols)).tobytes() + _f16(values).tobytes()


_ENCODERS = {
    LOWRANK: encode_lowrank,
    QUANTIZED: encode_quantized,
    SIGN: encode_sign,
    SPARSE: encode_sparse,
    SIGN_SPARSE: encode_sign_sparse,
}


def encode(kind, param, delta) -> bytes:
    """The payload of this kind and param for a tile's delta (rows x cols)."""
    if isinstance(kind, bool) or not isinstance(kind, (int, np.integer)) or int(kind) not in KINDS:
        raise ValueError(f"unknown residual kind {kind!r}; kinds are {_kind_list()}")
    return _ENCODERS[int(kind)](delta, param)


def _sparse_decode(raw: np.ndarray, k: int, rows: int, cols: int) -> np.ndarray:
    """A sparse part as a flat (rows * cols) float32 array; bad indices are a ValueError."""
    dt = np.dtype(_index_dtype(rows, cols))
    at = raw[: k * dt.itemsize].view(dt).astype(np.int64)
    values = raw[k * dt.itemsize :].view("<f2").astype(np.float32)
    if (at >= rows * cols).any() or (np.diff(at) <= 0).any():
        raise ValueError(
            f"a sparse residual's indices must rise strictly and stay below {rows * cols} "
            f"(a {rows} x {cols} tile), got {at.tolist()[:8]}"
        )
    out = np.zeros(rows * cols, np.float32)
    out[at] = values
    return out


def decode(kind, param, rows, cols, payload) -> np.ndarray:
    """The residual (rows x cols float32) a payload stands for, computed as the engine does
    (float32). A payload the engine would refuse (wrong length, bad sparse indices) is a
    ValueError."""
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
    if kind == QUANTIZED:
        bits = param
        scale = raw[: rows * 4].view("<f4").astype(np.float32)
        codes = _unpack(raw[rows * 4 :], rows, cols, bits)
        q = 1 << (bits - 1)
        return (codes.astype(np.float32) - np.float32(q)) * scale[:, None]
    if kind == SPARSE:
        return _sparse_decode(raw, param, rows, cols).reshape(rows, cols)
    nscales = 1 if kind == SIGN and param == SIGN_TILE else rows
    scale = raw[: nscales * 4].view("<f4").astype(np.float32).reshape(-1, 1)
    bits = _unpack(raw[nscales * 4 : _sign_bytes(nscales, rows, cols)], rows, cols, 1)
    out = np.where(bits > 0, scale, -scale).astype(np.float32)
    if kind == SIGN_SPARSE:
        out += _sparse_decode(raw[_sparse_at(rows, cols) :], param, rows, cols).reshape(rows, cols)
    return out


# -- choosing an encoding ----------------------------------------------------------------------


def ladder(rows, cols) -> list[tuple[int, int, int]]:
    """The (kind, param, nbytes) encodings a rows x cols tile can take, cheapest first
    (ties: coarser kinds first), each smaller than the float32 tile itself: SIGN with a tile
    then row scale, SPARSE and SIGN_SPARSE at a few k, QUANTIZED 2, 4, 8 bits, LOWRANK at
    ranks 1, 2, 4, ... The coarse-to-fine order a budget-driven search walks."""
    rows = _positive_int("rows", rows)
    cols = _positive_int("cols", cols)
    n = rows * cols
    cap = sparse_cap(rows, cols)
    specs = [(SIGN, SIGN_TILE), (SIGN, SIGN_ROW)]
    specs += [(SPARSE, k) for k in sorted({min(cap, max(1, n // f)) for f in (256, 64, 16)})]
    specs += [(SIGN_SPARSE, k) for k in sorted({min(cap, max(1, n // f)) for f in (64, 32, 16)})]
    specs += [(QUANTIZED, b) for b in BITS]
    rank = 1
    while rank <= min(rows, cols):
        specs.append((LOWRANK, rank))
        rank *= 2
    out = [(kind, param, payload_bytes(kind, param, rows, cols)) for kind, param in specs]
    out = [o for o in out if o[2] < n * 4]
    out.sort(key=lambda o: (o[2], specs.index(o[:2])))  # stable: ties keep the order above
    return out


def _stack(d) -> np.ndarray:
    arr = np.asarray(d)
    if arr.ndim != 3 or 0 in arr.shape[1:]:
        raise ValueError(f"errors() takes a stack of tiles (n, rows, cols), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"a residual is a float tile, got {arr.dtype}")
    return arr.astype(np.float64)


def _fro(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.square(x).sum(axis=(1, 2)))


def _f16_round_error(v: np.ndarray) -> np.ndarray:
    """v - float16(v) elementwise; inf where v does not fit float16 (the encoder refuses)."""
    with np.errstate(over="ignore"):
        r = v - v.astype(np.float16).astype(np.float64)
    return np.where(np.abs(v) > _F16_MAX, np.inf, r)


class _Shared:
    """Work errors() shares between encodings of one stack: |d|, singular values, the
    elements' rank keys (computed on first use)."""

    def __init__(self, d: np.ndarray):
        self.d = d
        self.a = np.abs(d)
        self._sv = self._keys = None

    def sv(self) -> np.ndarray:
        if self._sv is None:
            self._sv = np.linalg.svd(self.d, compute_uv=False)
        return self._sv

    def top(self, k: int) -> np.ndarray:
        if self._keys is None:
            self._keys = _rank_keys(self.d)
        return _top_k(self._keys, k)


def _errors(kind: int, param: int, sh: _Shared) -> np.ndarray:
    d, a = sh.d, sh.a
    n, rows, cols = d.shape
    if kind == LOWRANK:
        tail = np.square(sh.sv())[:, param:]
        return np.sqrt(tail.sum(axis=1))
    if kind == QUANTIZED:
        top = (1 << (param - 1)) - 1
        scale = a.max(axis=2, keepdims=True) / top
        safe = np.where(scale > 0, scale, 1)
        return _fro(d - np.clip(np.rint(d / safe), -top, top) * scale)
    sign = np.where(d >= 0, 1.0, -1.0)
    if kind == SIGN:
        return _fro(d - sign * _sign_scales(a, None, param == SIGN_ROW))
    at = sh.top(param)
    flat = d.reshape(n, -1)
    chosen = np.take_along_axis(flat, at, axis=1)
    if kind == SPARSE:
        rest = np.square(flat).sum(axis=1) - np.square(chosen).sum(axis=1)
        return np.sqrt(np.maximum(rest, 0) + np.square(_f16_round_error(chosen)).sum(axis=1))
    keep = np.ones((n, rows * cols), bool)
    np.put_along_axis(keep, at, False, axis=1)
    keep = keep.reshape(n, rows, cols)
    scale = _sign_scales(a, keep, True).astype(np.float32).astype(np.float64)
    part = sign * scale
    err = np.where(keep, d - part, 0.0)
    corr = chosen - np.take_along_axis(part.reshape(n, -1), at, axis=1)
    return np.sqrt(np.square(err).sum(axis=(1, 2)) + np.square(_f16_round_error(corr)).sum(axis=1))


def errors(kind, param, d) -> np.ndarray:
    """|d_i - decode(encode(d_i))|_F for each tile d_i of a stack d (n, rows, cols), computed
    without encoding (up to float32 rounding of the stored numbers; inf for a tile the
    encoder would refuse: a sparse value beyond float16)."""
    d = _stack(d)
    kind, param, _, _ = _check(kind, param, d.shape[1], d.shape[2])
    if d.shape[0] == 0:
        return np.zeros(0)
    return _errors(kind, param, _Shared(d))


def ladder_errors(d) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """ladder(rows, cols) for the tiles of d (n, rows, cols) and errors() of each of its
    encodings, (len(ladder), n), the work they share done once (one SVD, the rank keys)."""
    d = _stack(d)
    steps = ladder(d.shape[1], d.shape[2])
    out = np.zeros((len(steps), d.shape[0]))
    if d.shape[0]:
        sh = _Shared(d)
        for i, (kind, param, _) in enumerate(steps):
            out[i] = _errors(kind, param, sh)
    return steps, out
