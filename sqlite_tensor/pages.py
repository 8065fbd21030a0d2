"""The page format: how blocks are laid out in one page BLOB (format version 2), and the one
place in Python that reads or writes page bytes.

A page is one row of ``<store>_pages``; its ``data`` BLOB holds up to ``page_blocks``
blocks. All integers are little-endian.

Version 2 (written since checksums; ``<store>_config`` ``format_version`` 2):

    offset        size  field
    0             4     magic b"STPG"
    4             4     u32 page format version (2)
    8             4     u32 nslots: blocks in this page
    12            4     u32 header bytes: where block data begins (a multiple of 64)
    16            8     u64 checksum of the whole BLOB (see below)
    24 + 16*i     8     u64 offset of slot i's bytes from the start of the page
    32 + 16*i     8     u64 length of slot i in bytes
    header ...          block bytes, each starting at a multiple of 64, in slot order;
                        the BLOB ends with the last block (no padding after it)

Version 1 (stores written before checksums; read, never written; a writable open upgrades
the store, rewriting each page as version 2 with the same blocks):

    0 magic, 4 u32 version (1), 8 u32 nslots, 12 u32 header bytes,
    16 + 16*i u64 offset, 24 + 16*i u64 length of slot i; no checksum.

The checksum is the engine's ``page_checksum(blob, page_id)``: a 64-bit multiply-rotate
hash over the whole BLOB with bytes 16..23 (the field itself) counted as zero, seeded with
the page's id (the row it belongs in), so a flipped bit anywhere or a page copied into
another row is caught. The engine checks it whenever it reads a page from the database
(into the buffer pool, or for ``tensor_blob`` / ``get_tensor``); the writer seals it when
it inserts or updates a row (``insert_page``, ``update_page``), once the id is known.

A block is the row-major bytes of one (block_rows x block_cols) tile of a tensor's 2-D
view, in the tensor's dtype. Edge tiles are stored trimmed to the tensor (no padding
bytes), so a block's length is rows * cols * itemsize of its own extent; readers know the
extent from the tensor's shape. <store>_blocks names (page, slot) for every block, and the
reader (cython/cache/process_pool.pxi, checks in cython/store/page_reader.pxi) checks
offset and length against the page's size.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import _engine

# The format's numbers are the engine's (cython/c/st_page.h, the one owner); the struct
# layouts below restate them for packing, and tests/test_single_source.py checks they agree.
_FORMAT = _engine.PAGE_FORMAT
MAGIC = _FORMAT["magic"]
VERSION = _FORMAT["version"]
V1_HEADER_BYTES = _FORMAT["v1_header_bytes"]
HEADER_BYTES = _FORMAT["header_bytes"]  # version 2: the slot table starts here
CHECKSUM_AT = _FORMAT["checksum_at"]
SLOT_BYTES = _FORMAT["slot_bytes"]
ALIGN = _FORMAT["align"]

_HEADER = struct.Struct("<4sIII")  # magic, version, nslots, header bytes
_CHECKSUM = struct.Struct("<Q")
_SLOT = struct.Struct("<QQ")  # offset, nbytes


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def slots_at(version: int) -> int:
    """Where the slot table of a page of this version begins."""
    return V1_HEADER_BYTES if version == 1 else HEADER_BYTES


class PageBuilder:
    """Lays blocks out in one page buffer as they come, each copied once, straight into its
    slot (ingest hashes and compares it there, so a duplicate costs no second copy).

    ``stage(tile)`` copies a tile (any strides) into the next free slot and returns its
    bytes; ``commit()`` keeps it, and a staged tile not committed is overwritten by the
    next. Room for the header of ``max_slots`` slots is reserved up front, so the header
    may be a little larger than the slot count needs (its size is in the page header).
    """

    def __init__(self, max_slots: int, max_block_bytes: int):
        self.data_start = _aligned(HEADER_BYTES + SLOT_BYTES * max_slots)
        self.buf = np.empty(self.data_start + max_slots * _aligned(max_block_bytes), np.uint8)
        self.slots: list[tuple[int, int]] = []  # (offset, nbytes) of committed blocks
        self.end = self.data_start  # where the next block goes
        self._staged = 0

    def __len__(self) -> int:
        return len(self.slots)

    def stage(self, tile: np.ndarray) -> np.ndarray:
        self._staged = tile.nbytes
        dest = self.buf[self.end : self.end + tile.nbytes]
        np.copyto(dest.view(tile.dtype).reshape(tile.shape), tile)
        return dest

    def commit(self) -> int:
        """Keep the staged tile; returns its slot."""
        self.slots.append((self.end, self._staged))
        end = self.end + self._staged
        self.end = _aligned(end)
        self.buf[end : self.end] = (
            0  # padding is zeros: a page's bytes are a function of its blocks
        )
        return len(self.slots) - 1

    def staged(self, slot: int) -> np.ndarray:
        offset, n = self.slots[slot]
        return self.buf[offset : offset + n]

    def finish(self) -> memoryview:
        """Write the header (checksum not yet sealed: insert_page / update_page seal it);
        the page's bytes, a writable view into the builder: insert them before the next
        reset."""
        _HEADER.pack_into(self.buf, 0, MAGIC, VERSION, len(self.slots), self.data_start)
        _CHECKSUM.pack_into(self.buf, CHECKSUM_AT, 0)
        for i, (offset, n) in enumerate(self.slots):
            _SLOT.pack_into(self.buf, HEADER_BYTES + SLOT_BYTES * i, offset, n)
        self.buf[HEADER_BYTES + SLOT_BYTES * len(self.slots) : self.data_start] = 0
        last = self.slots[-1][0] + self.slots[-1][1] if self.slots else self.data_start
        return memoryview(self.buf)[:last]

    def reset(self) -> None:
        self.slots.clear()
        self.end = self.data_start


def build_page(blocks: Sequence[np.ndarray]) -> bytearray:
    """Lay the blocks out as one page BLOB (checksum sealed by insert_page / update_page)."""
    builder = PageBuilder(len(blocks), max((b.nbytes for b in blocks), default=0))
    for b in blocks:
        builder.stage(b)
        builder.commit()
    return bytearray(builder.finish())


def build_v1_page(blocks: Sequence[np.ndarray]) -> bytes:
    """A version-1 page (no checksum), as stores were written before checksums: for tests
    of the upgrade and of reading old stores only."""
    start = _aligned(V1_HEADER_BYTES + SLOT_BYTES * len(blocks))
    out = bytearray(start)
    slots = []
    for b in blocks:
        out += bytes(_aligned(len(out)) - len(out))
        slots.append((len(out), b.nbytes))
        out += np.ascontiguousarray(b).reshape(-1).view(np.uint8).tobytes()
    _HEADER.pack_into(out, 0, MAGIC, 1, len(blocks), start)
    for i, (offset, n) in enumerate(slots):
        _SLOT.pack_into(out, V1_HEADER_BYTES + SLOT_BYTES * i, offset, n)
    return bytes(out)


def checksum(page, page_id: int) -> int:
    """The checksum a version-2 page with this id must carry (the engine's function)."""
    return _engine.page_checksum(page, page_id)


def seal(page, page_id: int):
    """Write the checksum for page_id into a version-2 page (a writable buffer, changed in
    place; bytes are copied first). Returns the buffer."""
    if isinstance(page, bytes) or (isinstance(page, memoryview) and page.readonly):
        page = bytearray(page)
    _CHECKSUM.pack_into(page, CHECKSUM_AT, 0)
    _CHECKSUM.pack_into(page, CHECKSUM_AT, checksum(page, page_id))
    return page


def insert_page(conn, tables, page, nblocks: int) -> int:
    """Insert a new page row (sealed with its id, the next one); returns the id. Inside
    the caller's write transaction, so the id cannot be taken meanwhile."""
    page_id = conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {tables.pages}").get
    page = seal(page, page_id)
    conn.execute(
        f"INSERT INTO {tables.pages}(id, nblocks, nbytes, data) VALUES (?, ?, ?, ?)",
        (page_id, nblocks, len(page), page),
    )
    return page_id


def update_page(conn, tables, page_id: int, page, nblocks: int) -> None:
    """Replace a page row's bytes (sealed with its id)."""
    page = seal(page, page_id)
    conn.execute(
        f"UPDATE {tables.pages} SET nblocks = ?, nbytes = ?, data = ? WHERE id = ?",
        (nblocks, len(page), page, page_id),
    )


@dataclass(frozen=True)
class Header:
    version: int
    nslots: int
    data_start: int
    checksum: int | None  # None for version 1


def header(page) -> Header:
    """Parse and check a page's header (ValueError saying what is wrong)."""
    if len(page) < V1_HEADER_BYTES:
        raise ValueError(f"{len(page)} bytes, shorter than the {V1_HEADER_BYTES}-byte page header")
    magic, version, nslots, start = _HEADER.unpack_from(page, 0)
    if magic != MAGIC or version not in (1, 2):
        raise ValueError(
            f"not a version-{VERSION} page (magic {bytes(magic)!r}, version {version})"
        )
    if version == 2 and len(page) < HEADER_BYTES:
        raise ValueError(f"{len(page)} bytes, shorter than the {HEADER_BYTES}-byte page header")
    if slots_at(version) + SLOT_BYTES * nslots > len(page):
        raise ValueError(f"{nslots} slots do not fit in the page's {len(page)} bytes")
    found = _CHECKSUM.unpack_from(page, CHECKSUM_AT)[0] if version == 2 else None
    return Header(version, nslots, start, found)


def slot_range(head, slot: int) -> tuple[int, int]:
    """(offset, length) of a slot, from a page's first HEADER_BYTES + 16 * (slot + 1) bytes
    (or the whole page)."""
    magic, version, nslots, _ = _HEADER.unpack_from(head, 0)
    if magic != MAGIC or version not in (1, 2):
        raise ValueError(
            f"not a version-{VERSION} page (magic {bytes(magic)!r}, version {version})"
        )
    if not 0 <= slot < nslots:
        raise ValueError(f"slot {slot} out of range: the page has {nslots} slots")
    at = slots_at(version) + SLOT_BYTES * slot
    if at + SLOT_BYTES > len(head):
        raise ValueError(f"slot {slot}'s entry lies past the {len(head)} bytes given")
    return _SLOT.unpack_from(head, at)


def slot_entry_at(page, slot: int) -> int:
    """Byte offset of slot's (offset, length) entry in this page (for tools and tests that
    edit headers)."""
    return slots_at(header(page).version) + SLOT_BYTES * slot


def read_slots(page, page_id: int | None = None) -> list[memoryview]:
    """Every block of a page, as memoryviews into it (for repacking and checks). With
    page_id, a version-2 page's checksum is checked too. ValueError names the damage."""
    head = header(page)
    if page_id is not None and head.version == 2:
        want = checksum(page, page_id)
        if want != head.checksum:
            raise ValueError(f"checksum {head.checksum:016x}, the page's bytes give {want:016x}")
    view = memoryview(page)
    out = []
    for i in range(head.nslots):
        off, n = slot_range(page, i)
        if off + n > len(page):
            raise ValueError(
                f"slot {i} ({n} bytes at {off}) runs past the page's {len(page)} bytes"
            )
        out.append(view[off : off + n])
    return out
