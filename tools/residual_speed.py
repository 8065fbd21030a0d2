"""Time a dense layer (1024 x 2048, 64 x 64 tiles) with a residual of each kind on every
tile against none: Store.predict, one input and a batch of 64, medians of 15 runs taken
round-robin (so that a busy machine slows every kind alike).

    python tools/residual_speed.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_residual_kernels import all_tiles, put_residuals  # noqa: E402

import sqlite_tensor  # noqa: E402
from sqlite_tensor import residuals as R  # noqa: E402

SPECS = [
    None,
    (R.LOWRANK, 2),
    (R.QUANTIZED, 2),
    (R.QUANTIZED, 8),
    (R.SIGN, R.SIGN_TILE),
    (R.SIGN, R.SIGN_ROW),
    (R.SPARSE, 64),
    (R.SIGN_SPARSE, 128),
]


def main() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1024, 2048)).astype(np.float32)
    stores = []
    for spec in SPECS:
        store = sqlite_tensor.Store(sqlite_tensor.connect(":memory:"), block_rows=64, block_cols=64)
        store.add_model("m", {"w": w}, layers=[{"op": "dense", "weight": "w"}])
        if spec:
            kind, param = spec
            put_residuals(
                store,
                "m",
                "w",
                {
                    tile: (kind, param, R.encode(kind, param, rng.standard_normal((64, 64)) * 0.01))
                    for tile in all_tiles(store, w.shape)
                },
            )
        stores.append(store)
    x1 = rng.standard_normal(2048).astype(np.float32)
    x64 = rng.standard_normal((64, 2048)).astype(np.float32)
    times = [([], []) for _ in SPECS]
    for _ in range(16):
        for store, (one, batch) in zip(stores, times):
            t = time.perf_counter()
            store.predict("m", x1)
            one.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.predict("m", x64)
            batch.append(time.perf_counter() - t)
    print(f"{'residual':22s} {'batch 1':>9s} {'batch 64':>9s}")
    for spec, (one, batch) in zip(SPECS, times):
        label = "none" if spec is None else f"{R.KINDS[spec[0]]} {spec[1]}"
        # the first round warms the pool and the GEMV choice: left out
        print(
            f"{label:22s} {statistics.median(one[1:]) * 1e3:7.2f}ms"
            f" {statistics.median(batch[1:]) * 1e3:7.2f}ms"
        )


if __name__ == "__main__":
    main()
