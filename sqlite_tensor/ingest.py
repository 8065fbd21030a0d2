"""Ingest: one model's tensors into a store, sharing every block already stored.

For each tile: copy it into the open page's next slot (its only copy), hash it there
(mmh3, 128-bit); a stored block with that hash is shared only if its bytes are equal too,
so a hash collision can never merge different blocks, and a shared tile's slot is simply
reused by the next tile. New blocks fill fresh pages, ``page_blocks`` to a page, in the
order the tensors come, so one model's private blocks sit together. Reference counts are the number of
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
    blocks: int  # (tensor, block) entries written
    new_blocks: int  # distinct blocks this model added to the store
    logical_bytes: int  # the model's own size
    new_bytes: int  # bytes of the blocks it added

    @property
    def shared_blocks(self) -> int:
        return self.blocks - self.new_blocks


class _PageWriter:
    """Stages each tile in the open page and writes pages as they fill."""

    def __init__(self, conn, t: Tables, page_blocks: int, max_block_bytes: int, next_block_id: int):
        self.conn = conn
        self.t = t
        self.page_blocks = page_blocks
        self.next_block_id = next_block_id
        self.page = pages.PageBuilder(page_blocks, max_block_bytes)
        self.blocks: list[tuple[int, bytes]] = []  # (id, hash) of the open page's slots
        self.by_hash: dict[bytes, list[int]] = {}  # hash -> slots of the open page

    def stage(self, tile: np.ndarray) -> np.ndarray:
        """Copy a tile (any strides) into the open page's next slot; returns its bytes."""
        return self.page.stage(tile)

    def find_open(self, digest: bytes, staged: np.ndarray) -> int | None:
        for slot in self.by_hash.get(digest, ()):
            if _same_bytes(self.page.staged(slot), staged):
                return self.blocks[slot][0]
        return None

    def add(self, digest: bytes) -> int:
        """Keep the staged tile as a new block; returns its id."""
        block_id = self.next_block_id
        self.next_block_id += 1
        self.by_hash.setdefault(digest, []).append(self.page.commit())
        self.blocks.append((block_id, digest))
        if len(self.page) == self.page_blocks:
            self.flush()
        return block_id

    def flush(self) -> None:
        if not len(self.page):
            return
        page_id = pages.insert_page(self.conn, self.t, self.page.finish(), len(self.page))
        self.conn.executemany(
            f"INSERT INTO {self.t.blocks}(id, hash, nbytes, page_id, slot, refcount)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            [
                (bid, h, n, page_id, slot)
                for slot, ((bid, h), (_, n)) in enumerate(zip(self.blocks, self.page.slots))
            ],
        )
        self.page.reset()
        self.blocks.clear()
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
            f"SELECT id, nbytes, page_id, slot FROM {self.t.blocks} WHERE hash = ?", (digest,)
        ):
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


def ingest_model(
    conn,
    t: Tables,
    model: str,
    tensors: dict[str, np.ndarray],
    *,
    block_rows: int,
    block_cols: int,
    page_blocks: int,
    dtype_names: dict[str, str],
    hash_block=blocks.block_hash,
    progress=None,
) -> IngestReport:
    """Write model and tensors (already validated, C-contiguous little-endian) to the store.
    ``progress(done, total, tensor)``, if given, is called after each tensor."""
    conn.execute(f"INSERT INTO {t.models}(name) VALUES (?)", (model,))
    model_id = conn.last_insert_rowid()
    next_id = conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {t.blocks}").get
    itemsize = max(a.dtype.itemsize for a in tensors.values())
    writer = _PageWriter(conn, t, page_blocks, block_rows * block_cols * itemsize, next_id)
    stored = _StoredBlocks(conn, t)
    refs: Counter[int] = Counter()
    entries = []
    logical = 0
    done = 0
    try:
        for name, arr in tensors.items():
            rows, cols = blocks.matrix_shape(arr.shape)
            conn.execute(
                f"INSERT INTO {t.tensors}(model_id, name, shape, dtype, rows, cols, nbytes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    model_id,
                    name,
                    json.dumps(list(arr.shape)),
                    dtype_names[name],
                    rows,
                    cols,
                    arr.nbytes,
                ),
            )
            tensor_id = conn.last_insert_rowid()
            logical += arr.nbytes
            for bi, bj, tile in blocks.iter_blocks(arr.reshape(rows, cols), block_rows, block_cols):
                staged = writer.stage(tile)  # the one copy of the tile, into its page
                digest = hash_block(staged)
                block_id = writer.find_open(digest, staged)
                if block_id is None:
                    block_id = stored.find(digest, staged)
                if block_id is None:
                    block_id = writer.add(digest)
                refs[block_id] += 1
                entries.append((tensor_id, bi, bj, block_id))
            if progress is not None:
                done += 1
                progress(done, len(tensors), name)
        writer.flush()
    finally:
        stored.close()
    conn.executemany(
        f"INSERT INTO {t.map}(tensor_id, block_row, block_col, block_id) VALUES (?, ?, ?, ?)",
        entries,
    )
    conn.executemany(
        f"UPDATE {t.blocks} SET refcount = refcount + ? WHERE id = ?",
        [(n, bid) for bid, n in refs.items()],
    )
    new_blocks = writer.next_block_id - next_id
    new_bytes = conn.execute(
        f"SELECT coalesce(sum(nbytes), 0) FROM {t.blocks} WHERE id >= ?", (next_id,)
    ).get
    return IngestReport(model, len(tensors), len(entries), new_blocks, logical, new_bytes)
