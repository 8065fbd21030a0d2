"""The page format: how blocks are laid out in one page BLOB (format version 1).

A page is one row of ``<store>_pages``; its ``data`` BLOB holds up to ``page_blocks``
blocks. All integers are little-endian.

    offset        size  field
    0             4     magic b"STPG"
    4             4     u32 format version (1)
    8             4     u32 nslots: blocks in this page
    12            4     u32 header bytes: where block data begins (a multiple of 64)
    16 + 16*i     8     u64 offset of slot i's bytes from the start of the page
    24 + 16*i     8     u64 length of slot i in bytes
    header ...          block bytes, each starting at a multiple of 64

A block is the row-major bytes of one (block_rows x block_cols) tile of a tensor's 2-D
view, in the tensor's dtype. Edge tiles are stored trimmed to the tensor (no padding
bytes), so a block's length is rows * cols * itemsize of its own extent; readers know the
extent from the tensor's shape. <store>_blocks names (page, slot) for every block, and the
reader (cython/store/page_reader.pxi) checks offset and length against the page's size.
"""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np


MAGIC = b"STPG"
VERSION = 1
HEADER_BYTES = 16
SLOT_BYTES = 16
ALIGN = 64

_HEADER = struct.Struct("<4sIII")
_SLOT = struct.Struct("<QQ")


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


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
        self.slots: list[tuple[int, int]] = []   # (offset, nbytes) of committed blocks
        self.end = self.data_start               # where the next block goes
        self._staged = 0

    def __len__(self) -> int:
        return len(self.slots)

    def stage(self, tile: np.ndarray) -> np.ndarray:
        self._staged = tile.nbytes
        dest = self.buf[self.end:self.end + tile.nbytes]
        np.copyto(dest.view(tile.dtype).reshape(tile.shape), tile)
        return dest

    def commit(self) -> int:
        """Keep the staged tile; returns its slot."""
        self.slots.append((self.end, self._staged))
        self.end = _aligned(self.end + self._staged)
        return len(self.slots) - 1

    def staged(self, slot: int) -> np.ndarray:
        offset, n = self.slots[slot]
        return self.buf[offset:offset + n]

    def finish(self) -> memoryview:
        """Write the header; the page's bytes (a view into the builder: insert them before
        the next reset)."""
        _HEADER.pack_into(self.buf, 0, MAGIC, VERSION, len(self.slots), self.data_start)
        for i, (offset, n) in enumerate(self.slots):
            _SLOT.pack_into(self.buf, HEADER_BYTES + SLOT_BYTES * i, offset, n)
        last = self.slots[-1][0] + self.slots[-1][1] if self.slots else self.data_start
        return memoryview(self.buf)[:last]

    def reset(self) -> None:
        self.slots.clear()
        self.end = self.data_start


def build_page(blocks: Sequence[np.ndarray]) -> bytes:
    """Lay the blocks out as one page BLOB."""
    builder = PageBuilder(len(blocks), max((b.nbytes for b in blocks), default=0))
    for b in blocks:
        builder.stage(b)
        builder.commit()
    return bytes(builder.finish())


def slot_range(header: bytes, slot: int) -> tuple[int, int]:
    """(offset, length) of a slot, from a page's first HEADER_BYTES + 16 * (slot + 1) bytes."""
    magic, version, nslots, _ = _HEADER.unpack_from(header, 0)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not a version-{VERSION} page (magic {magic!r}, version {version})")
    if not 0 <= slot < nslots:
        raise ValueError(f"slot {slot} out of range: the page has {nslots} slots")
    return _SLOT.unpack_from(header, HEADER_BYTES + SLOT_BYTES * slot)


def read_slots(page: bytes) -> list[memoryview]:
    """Every block of a page, as memoryviews into it (for repacking and checks)."""
    # check the header here too: verify() reads damaged pages, and struct's errors say little
    if len(page) < HEADER_BYTES:
        raise ValueError(f"{len(page)} bytes, shorter than the {HEADER_BYTES}-byte page header")
    magic, version, nslots, _ = _HEADER.unpack_from(page, 0)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not a version-{VERSION} page (magic {magic!r}, version {version})")
    if HEADER_BYTES + SLOT_BYTES * nslots > len(page):
        raise ValueError(f"{nslots} slots do not fit in the page's {len(page)} bytes")
    header = bytes(page[: HEADER_BYTES + SLOT_BYTES * nslots])
    view = memoryview(page)
    out = []
    for i in range(nslots):
        off, n = slot_range(header, i)
        if off + n > len(page):
            raise ValueError(f"slot {i} ({n} bytes at {off}) runs past the page's {len(page)} bytes")
        out.append(view[off:off + n])
    return out
