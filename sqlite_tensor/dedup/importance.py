"""The order blocks are examined in: least important first.

The paper's measure: a block's 75th-percentile absolute value, divided by the largest
such value in its tensor (so layers of different scales compare), with the blocks of
larger tensors first. Replacing unimportant blocks first lets the accuracy guard accept
many replacements before the budget is spent.
"""

from __future__ import annotations

import numpy as np


def magnitude(tiles: list[np.ndarray]) -> np.ndarray:
    """Each tile's 75th-percentile absolute value."""
    return np.array([np.percentile(np.abs(t), 75) if t.size else 0.0 for t in tiles])


def examination_order(
    tiles: list[np.ndarray], tensor_ids: np.ndarray, tensor_sizes: np.ndarray
) -> np.ndarray:
    """Indices of tiles in examination order: larger tensors first, then within a tensor
    the least important (normalised magnitude) first."""
    m = magnitude(tiles)
    normalised = np.zeros_like(m)
    for tid in np.unique(tensor_ids):
        mine = tensor_ids == tid
        top = m[mine].max()
        normalised[mine] = m[mine] / top if top > 0 else 0.0
    # lexsort: the last key is the primary one
    return np.lexsort((normalised, -np.asarray(tensor_sizes)))
