"""Cutting tensors into blocks, and naming blocks by content.

A tensor of any rank is viewed as 2-D: leading dimensions flattened into rows, a 1-D
tensor as one column, a scalar as 1 x 1. The view is cut into tiles of the store's block
shape, row-major; edge tiles keep their own (smaller) extent.
"""

from __future__ import annotations

from collections.abc import Iterator

import mmh3
import numpy as np


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """Rows and columns of the 2-D view of a tensor of this shape."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], 1
    return int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]


def grid_shape(rows: int, cols: int, block_rows: int, block_cols: int) -> tuple[int, int]:
    """How many block rows and block columns cover a rows x cols matrix."""
    return -(-rows // block_rows), -(-cols // block_cols)


def tile_shape(
    rows: int, cols: int, bi: int, bj: int, block_rows: int, block_cols: int
) -> tuple[int, int]:
    """The extent of tile (bi, bj) of a rows x cols matrix: the block shape, or less at
    the edges (edge tiles are stored trimmed)."""
    return min(block_rows, rows - bi * block_rows), min(block_cols, cols - bj * block_cols)


def iter_blocks(
    matrix: np.ndarray, block_rows: int, block_cols: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (block_row, block_col, tile) in row-major order; tiles are views into the
    matrix (strided unless they span whole rows): the page builder copies them once.
    """
    rows, cols = matrix.shape
    grid_r, grid_c = grid_shape(rows, cols, block_rows, block_cols)
    for bi in range(grid_r):
        band = matrix[bi * block_rows : (bi + 1) * block_rows]
        for bj in range(grid_c):
            tile = band[:, bj * block_cols : (bj + 1) * block_cols]
            yield bi, bj, tile


def byte_view(a: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array as a flat uint8 array (a view, no copy).

    Not memoryview(a).cast("B"): the buffer protocol cannot export ml_dtypes' types
    (bfloat16, float8), so that fails for them.
    """
    return a.reshape(-1).view(np.uint8)


def block_hash(tile: np.ndarray) -> bytes:
    """128-bit MurmurHash3 of a tile's bytes (hashed in place, no copy)."""
    return mmh3.mmh3_x64_128_digest(byte_view(tile))
