"""Time a dense layer (1024 x 2048) with whole-tensor factors (<store>_factors) against
none: Store.predict, one input and a batch of 64, the store's default tiles and 64 x 64,
medians of many calls taken round-robin (so that a busy machine slows every case alike).

    python tools/factor_speed.py [calls]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlite_tensor  # noqa: E402
from sqlite_tensor.dedup.writes import set_factors  # noqa: E402

RANKS = [0, 8, 32]


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 201
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1024, 2048)).astype(np.float32)
    cases = []
    for tiles in ({}, {"block_rows": 64, "block_cols": 64}):
        for rank in RANKS:
            store = sqlite_tensor.Store(sqlite_tensor.connect(":memory:"), **tiles)
            store.add_model("m", {"w": w}, layers=[{"op": "dense", "weight": "w"}])
            if rank:
                with store.writer() as wr:
                    tid = wr.conn.execute(f"SELECT id FROM {wr.tables.tensors}").get
                    u = rng.standard_normal((1024, rank)).astype(np.float32) * 0.01
                    v = rng.standard_normal((2048, rank)).astype(np.float32) * 0.01
                    set_factors(wr, tid, u, v)
            label = f"{store.block_rows}x{store.block_cols} tiles, rank {rank or 'none'}"
            cases.append((label, store))
    x1 = rng.standard_normal(2048).astype(np.float32)
    x64 = rng.standard_normal((64, 2048)).astype(np.float32)
    times = [([], []) for _ in cases]
    for _ in range(calls):
        for (_, store), (one, batch) in zip(cases, times):
            t = time.perf_counter()
            store.predict("m", x1)
            one.append(time.perf_counter() - t)
            if len(batch) < max(calls // 4, 5):
                t = time.perf_counter()
                store.predict("m", x64)
                batch.append(time.perf_counter() - t)
    print(f"{'case':28s} {'batch 1':>9s} {'batch 64':>9s}")
    for (label, _), (one, batch) in zip(cases, times):
        # the first round warms the pool and the GEMV choice: left out
        print(
            f"{label:28s} {statistics.median(one[1:]) * 1e3:7.3f}ms"
            f" {statistics.median(batch[1:]) * 1e3:7.3f}ms"
        )


if __name__ == "__main__":
    main()
