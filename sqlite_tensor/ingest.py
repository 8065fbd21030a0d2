"""Ingest: one model's tensors into a store, sharing every block already stored.

For each tile: hash it (mmh3, 128-bit); a stored block with that hash is shared only if
its bytes are equal too, so a hash collision can never merge different blocks. New blocks
are appended to fresh pages, ``page_blocks`` to a page, in the order the tensors come, so
one model's private blocks sit together. Reference counts are the number of
(tensor, block_row, block_col) entries that name a block.

Runs inside the caller's write transaction (Store.add_model); it writes only SQL, so a
failure anywhere rolls back everything.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from . import blocks, pages
from .schema import Tables


@dataclass
class IngestReport:
    """What one add_model did."""

    model: str
    tensors: int
    blocks: int            # (tensor, block) entries written
    new_blocks: int        # distinct blocks this model added to the store
    logical_bytes: int     # the model's own size
    new_bytes: int         # bytes of the blocks it added

    @property
    def shared_blocks(self) -> int:
        return self.blocks - self.new_blocks


class _PageWriter:
    """Collects new blocks and writes them a page at a time."""

    def __init__(self, conn, t: Tables, page_blocks: int, next_block_id: int):
        self.conn = conn
        self.t = t
        self.page_blocks = page_blocks
        self.next_block_id = next_block_id
        self.open: list[tuple[int, bytes, np.ndarray]] = []   # (id, hash, tile) not yet written
        self.by_hash: dict[bytes, list[int]] = {}              # hash -> index into self.open

    def add(self, digest: bytes, tile: np.ndarray) -> int:
        block_id = self.next_block_id
        self.next_block_id += 1
        self.by_hash.setdefault(digest, []).append(len(self.open))
        self.open.append((block_id, digest, tile))
        if len(self.open) == self.page_blocks:
            self.flush()
        return block_id

    def find_open(self, digest: bytes, tile: np.ndarray) -> int | None:
        for i in self.by_hash.get(digest, ()):
            block_id, _, other = self.open[i]
            if _same_bytes(other, tile):
                return block_id
        return None

    def flush(self) -> None:
        if not self.open:
            return
        data = pages.build_page([t for _, _, t in self.open])
        self.conn.execute(
            f'INSERT INTO {self.t.pages}(nblocks, nbytes, data) VALUES (?, ?, ?)',
            (len(self.open), len(data), data))
        page_id = self.conn.last_insert_rowid()
        self.conn.executemany(
            f'INSERT INTO {self.t.blocks}(id, hash, nbytes, page_id, slot, refcount)'
            " VALUES (?, ?, ?, ?, ?, 0)",
            [(bid, h, t.nbytes, page_id, slot) for slot, (bid, h, t) in enumerate(self.open)])
        self.open.clear()
        self.by_hash.clear()


def _same_bytes(a, b) -> bool:
    """Equal bytes; a and b are tiles (any dtype, bfloat16 too) or bytes read from a page."""
    a = blocks.byte_view(a) if isinstance(a, np.ndarray) else np.frombuffer(a, np.uint8)
    b = blocks.byte_view(b) if isinstance(b, np.ndarray) else np.frombuffer(b, np.uint8)
    return a.size == b.size and bool(np.array_equal(a, b))


class _StoredBlocks:
    """Looks up blocks already in the store by hash, confirming by bytes."""

    def __init__(self, conn, t: Tables):
        self.conn = conn
        self.t = t
        self.blob = None

    def find(self, digest: bytes, tile: np.ndarray) -> int | None:
        for block_id, nbytes, page_id, slot in self.conn.execute(
                f'SELECT id, nbytes, page_id, slot FROM {self.t.blocks} WHERE hash = ?',
                (digest,)):
            if nbytes == tile.nbytes and _same_bytes(self._read(page_id, slot), tile):
                return block_id
        return None

    def _read(self, page_id: int, slot: int) -> bytes:
        if self.blob is None:
            self.blob = self.conn.blob_open("main", self.t.pages_unquoted, "data", page_id, False)
        else:
            self.blob.reopen(page_id)
        self.blob.seek(0)
        head = self.blob.read(pages.HEADER_BYTES + pages.SLOT_BYTES * (slot + 1))
        offset, length = pages.slot_range(head, slot)
        self.blob.seek(offset)
        return self.blob.read(length)

    def close(self) -> None:
        if self.blob is not None:
            self.blob.close()
            self.blob = None


def ingest_model(conn, t: Tables, model: str, tensors: dict[str, np.ndarray], *,
                 block_rows: int, block_cols: int, page_blocks: int,
                 dtype_names: dict[str, str], hash_block=blocks.block_hash) -> IngestReport:
    """Write model and tensors (already validated, C-contiguous little-endian) to the store."""
    conn.execute(f'INSERT INTO {t.models}(name) VALUES (?)', (model,))
    model_id = conn.last_insert_rowid()
    next_id = conn.execute(f'SELECT coalesce(max(id), 0) + 1 FROM {t.blocks}').get
    writer = _PageWriter(conn, t, page_blocks, next_id)
    stored = _StoredBlocks(conn, t)
    refs: Counter[int] = Counter()
    entries = []
    logical = 0
    try:
        for name, arr in tensors.items():
            rows, cols = blocks.matrix_shape(arr.shape)
            conn.execute(
                f'INSERT INTO {t.tensors}(model_id, name, shape, dtype, rows, cols, nbytes)'
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (model_id, name, json.dumps(list(arr.shape)), dtype_names[name], rows, cols,
                 arr.nbytes))
            tensor_id = conn.last_insert_rowid()
            logical += arr.nbytes
            for bi, bj, tile in blocks.iter_blocks(arr.reshape(rows, cols), block_rows, block_cols):
                digest = hash_block(tile)
                block_id = writer.find_open(digest, tile)
                if block_id is None:
                    block_id = stored.find(digest, tile)
                if block_id is None:
                    block_id = writer.add(digest, tile)
                refs[block_id] += 1
                entries.append((tensor_id, bi, bj, block_id))
        writer.flush()
    finally:
        stored.close()
    conn.executemany(f'INSERT INTO {t.map}(tensor_id, block_row, block_col, block_id)'
                     " VALUES (?, ?, ?, ?)", entries)
    conn.executemany(f'UPDATE {t.blocks} SET refcount = refcount + ? WHERE id = ?',
                     [(n, bid) for bid, n in refs.items()])
    new_blocks = writer.next_block_id - next_id
    new_bytes = conn.execute(
        f'SELECT coalesce(sum(nbytes), 0) FROM {t.blocks} WHERE id >= ?', (next_id,)).get
    return IngestReport(model, len(tensors), len(entries), new_blocks, logical, new_bytes)
