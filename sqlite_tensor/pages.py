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
reader (cython/page_reader.pxi) checks offset and length against the page's size.
"""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from .blocks import byte_view

MAGIC = b"STPG"
VERSION = 1
HEADER_BYTES = 16
SLOT_BYTES = 16
ALIGN = 64

_HEADER = struct.Struct("<4sIII")
_SLOT = struct.Struct("<QQ")


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def build_page(blocks: Sequence[np.ndarray]) -> bytearray:
    """Lay the blocks (C-contiguous arrays) out as one page BLOB, one copy of each."""
    data_start = _aligned(HEADER_BYTES + SLOT_BYTES * len(blocks))
    offsets = []
    end = data_start
    for b in blocks:
        offsets.append(end)
        end = _aligned(end + b.nbytes)
    last = offsets[-1] + blocks[-1].nbytes if blocks else data_start
    page = bytearray(last)
    _HEADER.pack_into(page, 0, MAGIC, VERSION, len(blocks), data_start)
    view = memoryview(page)
    for i, (b, off) in enumerate(zip(blocks, offsets)):
        _SLOT.pack_into(page, HEADER_BYTES + SLOT_BYTES * i, off, b.nbytes)
        view[off:off + b.nbytes] = byte_view(b)
    return page


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
