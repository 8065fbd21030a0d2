"""The writes of a dedup run: re-pointing tiles, residual pages, freeing, the log.

Every function takes the run's StoreWriter (Store.writer: the one transaction), and most
run inside a guarded step's savepoint, so a rolled-back step takes its writes with it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .. import factors, pages
from . import encoding

# outcomes logged in <store>_dedup
KEPT, SUBSTITUTED, RESIDUAL, UNDONE = 0, 1, 2, 3


@dataclass
class Target:
    """One target block and what to do with it."""

    block_id: int
    entries: list[tuple[int, int, int]]  # (tensor_id, block_row, block_col) using the block
    digest: bytes
    nbytes: int
    ref: int = 0
    outcome: encoding.Outcome | None = None


def apply(w, batch: list[Target]) -> None:
    """Point each item's entries at its reference (plus residuals); log them."""
    conn, t = w.conn, w.tables
    moves, refs, residual_rows, payloads = [], defaultdict(int), [], []
    for it in batch:
        for tid, bi, bj in it.entries:
            moves.append((it.ref, tid, bi, bj))
            if it.outcome.kind == encoding.RESIDUAL:
                residual_rows.append(
                    (
                        tid,
                        bi,
                        bj,
                        it.outcome.residual_kind,
                        it.outcome.param,
                        len(payloads),
                        len(it.outcome.payload),
                    )
                )
                payloads.append(it.outcome.payload)
        refs[it.ref] += len(it.entries)
        refs[it.block_id] -= len(it.entries)
    conn.executemany(
        f"UPDATE {t.map} SET block_id = ? WHERE tensor_id = ? AND block_row = ? AND block_col = ?",
        moves,
    )
    conn.executemany(
        f"UPDATE {t.blocks} SET refcount = refcount + ? WHERE id = ?",
        [(n, bid) for bid, n in refs.items()],
    )
    if payloads:
        slots = _write_residual_pages(w, payloads)
        conn.executemany(
            f"INSERT INTO {t.residuals}(tensor_id, block_row, block_col, kind, param, page_id,"
            " slot, nbytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (tid, bi, bj, kind, param, *slots[k], n)
                for tid, bi, bj, kind, param, k, n in residual_rows
            ],
        )
    log(w, [it for it in batch if it.outcome.kind == encoding.SUBSTITUTE], SUBSTITUTED)
    log(w, [it for it in batch if it.outcome.kind == encoding.RESIDUAL], RESIDUAL)


def _residual_page_bytes(w) -> int:
    """Residual pages hold at most what a page of full float32 blocks holds."""
    return w.page_blocks * w.block_rows * w.block_cols * 4


def _write_residual_pages(w, payloads: list[bytes]) -> list[tuple[int, int]]:
    """Lay payloads out in new pages; (page_id, slot) of each."""
    limit = _residual_page_bytes(w)
    where, page, size = [], [], 0

    def flush():
        data = pages.build_page([np.frombuffer(p, np.uint8) for p in page])
        page_id = pages.insert_page(w.conn, w.tables, data, len(page))
        where.extend((page_id, s) for s in range(len(page)))

    for p in payloads:
        if page and (size + len(p) > limit or len(page) >= 65536):
            flush()
            page, size = [], 0
        page.append(p)
        size += len(p)
    if page:
        flush()
    return where


def repack_residuals(w, model_id: int) -> None:
    """Lay the model's residuals out in full pages (steps wrote small ones)."""
    conn, t = w.conn, w.tables
    rows = conn.execute(
        f"SELECT r.tensor_id, r.block_row, r.block_col, r.page_id, r.slot FROM {t.residuals} r"
        f" JOIN {t.tensors} tt ON tt.id = r.tensor_id WHERE tt.model_id = ?"
        " ORDER BY r.tensor_id, r.block_row, r.block_col",
        (model_id,),
    ).fetchall()
    if not rows:
        return
    old_pages = sorted({page for *_, page, _ in rows})
    cache = {}
    payloads = []
    for *_, page, slot in rows:
        if page not in cache:
            cache[page] = pages.read_slots(
                conn.execute(f"SELECT data FROM {t.pages} WHERE id = ?", (page,)).get, page
            )
        payloads.append(bytes(cache[page][slot]))
    slots_held = conn.execute(
        f"SELECT sum(nblocks) FROM {t.pages} WHERE id IN ({','.join(map(str, old_pages))})"
    ).get
    if slots_held == len(rows) and len(old_pages) == -(
        -sum(map(len, payloads)) // _residual_page_bytes(w)
    ):
        return  # already as few pages as can be, none half dead
    conn.executemany(f"DELETE FROM {t.pages} WHERE id = ?", [(p,) for p in old_pages])
    slots = _write_residual_pages(w, payloads)
    conn.executemany(
        f"UPDATE {t.residuals} SET page_id = ?, slot = ? WHERE tensor_id = ?"
        " AND block_row = ? AND block_col = ?",
        [(*slots[k], tid, bi, bj) for k, (tid, bi, bj, _, _) in enumerate(rows)],
    )


def free_dead_blocks(w) -> int:
    """Delete blocks nothing uses any more and compact their pages; the bytes freed."""
    conn, t = w.conn, w.tables
    dead = conn.execute(
        f"SELECT id, page_id, nbytes FROM {t.blocks} WHERE refcount <= 0"
    ).fetchall()
    if not dead:
        return 0
    conn.executemany(f"DELETE FROM {t.blocks} WHERE id = ?", [(b,) for b, _, _ in dead])
    w.compact_pages({page for _, page, _ in dead})
    return sum(n for _, _, n in dead)


def log(w, items: list[Target], outcome: int) -> None:
    w.conn.executemany(
        f"INSERT OR REPLACE INTO {w.tables.dedup}(tensor_id, block_row, block_col,"
        " source_hash, outcome) VALUES (?, ?, ?, ?, ?)",
        [(tid, bi, bj, it.digest, outcome) for it in items for tid, bi, bj in it.entries],
    )


def residual_bytes(w, model_id: int) -> int:
    t = w.tables
    return w.conn.execute(
        f"SELECT coalesce(sum(r.nbytes), 0) FROM {t.residuals} r JOIN {t.tensors} tt"
        " ON tt.id = r.tensor_id WHERE tt.model_id = ?",
        (model_id,),
    ).get


def set_factors(w, tensor_id: int, u: np.ndarray | None, v: np.ndarray | None) -> None:
    """Give a float32 tensor (2-D view rows x cols) the whole-tensor term U @ V.T on top of
    its tiles and their residuals: u (rows x rank) and v (cols x rank), float32, one row of
    <store>_factors (replacing any), int8-coded (sqlite_tensor.factors: the readers add
    factors.as_stored(u, v)). ``None, None`` or rank 0 deletes the row. ValueError naming
    the problem when the shapes do not fit the tensor (nothing written)."""
    conn, t = w.conn, w.tables
    found = conn.execute(
        f"SELECT rows, cols, dtype FROM {t.tensors} WHERE id = ?", (tensor_id,)
    ).fetchone()
    if found is None:
        raise ValueError(f"store {w.name!r} has no tensor with id {tensor_id}")
    rows, cols, dtype = found
    if (u is None) != (v is None):
        raise ValueError(f"tensor {tensor_id}: give both u and v, or neither")
    if u is not None:
        u, v = np.asarray(u), np.asarray(v)
        if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[1]:
            raise ValueError(
                f"tensor {tensor_id}: u {u.shape} and v {v.shape} must be (rows x rank) and"
                f" (cols x rank) of one rank"
            )
    if u is None or u.shape[1] == 0:
        conn.execute(f"DELETE FROM {t.factors} WHERE tensor_id = ?", (tensor_id,))
        return
    rank = u.shape[1]
    if dtype != "float32":
        raise ValueError(f"tensor {tensor_id} is {dtype}; factors apply to float32 tensors only")
    if u.shape[0] != rows or v.shape[0] != cols:
        raise ValueError(
            f"tensor {tensor_id} is {rows} x {cols}: u must be ({rows}, {rank}) and v"
            f" ({cols}, {rank}), got {u.shape} and {v.shape}"
        )
    if rank > min(rows, cols):
        raise ValueError(
            f"tensor {tensor_id} ({rows} x {cols}) takes ranks 1 to {min(rows, cols)}, got {rank}"
        )
    for name, a in (("u", u), ("v", v)):
        if a.dtype != np.float32:
            raise ValueError(f"tensor {tensor_id}: {name} must be float32, got {a.dtype}")
    _, pu, pv = factors.encode(u, v)
    conn.execute(
        f"INSERT OR REPLACE INTO {t.factors}(tensor_id, rank, u, v) VALUES (?, ?, ?, ?)",
        (tensor_id, rank, pu, pv),
    )


def factor_bytes(w, model_id: int) -> int:
    """The bytes of the model's tensors' factors rows (length(u) + length(v))."""
    t = w.tables
    return w.conn.execute(
        f"SELECT coalesce(sum(length(f.u) + length(f.v)), 0) FROM {t.factors} f"
        f" JOIN {t.tensors} tt ON tt.id = f.tensor_id WHERE tt.model_id = ?",
        (model_id,),
    ).get
