"""Measure candidate store defaults (block shape x page_blocks) and print a table.

    python asv_bench/tune_defaults.py            # about a minute on 2 cores
    python asv_bench/tune_defaults.py --quick    # fewer shapes and repeats, a smoke test
    python asv_bench/tune_defaults.py --dtype float16 --shapes 128x128,256x256 --page-blocks 4,8,16

For each block shape and page size it measures, on fresh files opened like every store
(sqlite_tensor.connect: 64 KiB pages, WAL):

- ingest: Store.add_model of a fresh 32 MiB float32 tensor (4096 x 2048; with --dtype
  float16, 8192 x 2048), MiB/s, and the ratio to a plain insert of the same bytes as BLOBs
  of the same page size;
- read: Store.get_tensor of that tensor, MiB/s (hot OS cache), and the ratio to reading the
  same bytes from a plain table of 1 MiB BLOBs into a fresh array; "engine read" is the
  engine alone (SELECT length(tensor_blob(...)): assembled in SQL, not copied to Python);
- dedup (per block shape): logical / physical bytes of the large text-classifier family
  (5 models, vocab 32768 x dim 128; tuned variants move a contiguous band of the first
  embedding rows: 12.5 % as sqlite_tensor.testing.families has it, 4096 rows, which every candidate
  block height divides; and 10 %, 3277 rows, which none does) and of a "scattered" family
  where each of 4 variants moves a random 1 % of the rows (seeded): there block granularity
  decides how much is shared. The embedding is 128 wide, so wider blocks are cut to 128;
- blocks: distinct blocks the band-12.5 % family stores (a row each in the blocks table).

Figures are medians; the machine is noisy, compare ratios. docs/benchmarks.md records a run
and the defaults chosen from it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmarks.common import (
    MB,
    PLAIN_DDL,
    Store,
    TempDir,
    family,
    fresh_tensor,  # noqa: E402
    ingest_ratio,
    page_chunks,
    plain_insert,
    plain_read,
)

import sqlite_tensor  # noqa: E402
from sqlite_tensor.testing.families import text_classifier_family  # noqa: E402

SHAPES = [(64, 64), (128, 128), (256, 256), (512, 512), (256, 1024)]
PAGE_BLOCKS = [1, 2, 4, 8, 16]


def band_family(tuned_fraction: float) -> dict:
    """The large family with the tuned band at another size (0.1: 3277 rows, which no
    candidate block height divides, so the band's last block row is only partly tuned)."""
    return text_classifier_family(5, vocab=32768, dim=128, hidden=64, tuned_fraction=tuned_fraction)


def scattered_family(fraction: float = 0.01, n_variants: int = 4) -> dict:
    """The large family's base, plus variants that each move a random 1 % of embedding rows."""
    base = family("large")["base"]
    emb = base["embedding.weight"]
    out = {"base": base}
    for i in range(1, n_variants + 1):
        rng = np.random.default_rng([7, i])
        rows = rng.choice(emb.shape[0], int(emb.shape[0] * fraction), replace=False)
        e = emb.copy()
        e[rows] += rng.normal(0.0, 0.01, (len(rows), emb.shape[1])).astype(np.float32)
        out[f"scattered-{i}"] = dict(base, **{"embedding.weight": e})
    return out


def dedup(models: dict, **options) -> tuple[float, int]:
    tmp = TempDir()
    try:
        with Store(tmp.file(), **options) as store:
            for name, tensors in models.items():
                store.add_model(name, tensors)
            stats = store.stats()
            return stats["dedup_ratio"], stats["distinct_blocks"]
    finally:
        tmp.close()


def read_mib_s(arr: np.ndarray, repeats: int, **options) -> tuple[float, float]:
    """MiB/s of Store.get_tensor, and of the engine alone (tensor_blob assembling the
    tensor inside SQL, measured as length(tensor_blob(...)): no copy out to Python)."""
    tmp = TempDir()
    try:
        with Store(tmp.file(), **options) as store:
            store.add_model("m", {"weight": arr})
            assert np.array_equal(store.get_tensor("m", "weight"), arr)  # also warms the cache
            api = _median(lambda: store.get_tensor("m", "weight"), repeats)
            sql = "SELECT length(tensor_blob(?, 'm', 'weight'))"
            engine = _median(lambda: store.conn.execute(sql, (store.name,)).get, repeats)
            return arr.nbytes / MB / api, arr.nbytes / MB / engine
    finally:
        tmp.close()


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain_read_mib_s(arr: np.ndarray, repeats: int) -> float:
    tmp = TempDir()
    try:
        conn = sqlite_tensor.connect(tmp.file())
        conn.execute(PLAIN_DDL)
        plain_insert(conn, page_chunks(arr, MB))
        ids = [r for (r,) in conn.execute("SELECT id FROM plain ORDER BY id")]
        out = np.empty(arr.shape, arr.dtype)
        plain_read(conn, ids, out)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            plain_read(conn, ids, np.empty(arr.shape, arr.dtype))
            times.append(time.perf_counter() - start)
        conn.close()
        return arr.nbytes / MB / statistics.median(times)
    finally:
        tmp.close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 shapes x 3 page sizes, 1 repeat")
    ap.add_argument("--repeats", type=int, default=3, help="ingest repeats (reads: 2x this)")
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16"],
        help="dtype of the ingest/read tensor (float16: half the bytes per block)",
    )
    ap.add_argument("--shapes", help="block shapes to try, e.g. 128x128,256x256")
    ap.add_argument("--page-blocks", help="page_blocks to try, e.g. 4,8")
    args = ap.parse_args(argv)
    shapes, page_blocks, repeats = SHAPES, PAGE_BLOCKS, args.repeats
    if args.quick:
        shapes, page_blocks, repeats = [(128, 128), (256, 256), (512, 512)], [1, 4, 16], 1
    if args.shapes:
        shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    if args.page_blocks:
        page_blocks = [int(n) for n in args.page_blocks.split(",")]

    arr = fresh_tensor(32, cols=2048)
    if args.dtype != "float32":  # same values, half the bytes: 8192 x 2048, 32 MiB
        arr = np.concatenate([arr, fresh_tensor(32, seed=1, cols=2048)]).astype(args.dtype)
    band, band10, scattered = family("large"), band_family(0.1), scattered_family()
    plain_read = plain_read_mib_s(arr, max(5, 2 * repeats))
    print(
        f"# sqlite_tensor {sqlite_tensor.__version__}; {time.strftime('%Y-%m-%d')}; "
        f"{os.cpu_count()} cpus; tensor {arr.shape[0]}x{arr.shape[1]} {arr.dtype} "
        f"({arr.nbytes // MB} MiB); plain read of 1 MiB BLOBs {plain_read:.0f} MiB/s\n"
    )
    print(
        "| block | page_blocks | page KiB | ingest MiB/s | ingest / plain | get_tensor MiB/s |"
        " read / plain | engine read MiB/s | dedup band 12.5% | dedup band 10% |"
        " dedup scattered 1% | family blocks |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for br, bc in shapes:
        d_band, nblocks = dedup(band, block_rows=br, block_cols=bc)
        d_band10, _ = dedup(band10, block_rows=br, block_cols=bc)
        d_scat, _ = dedup(scattered, block_rows=br, block_cols=bc)
        for pb in page_blocks:
            opts = dict(block_rows=br, block_cols=bc, page_blocks=pb)
            ing = ingest_ratio(arr, repeats, **opts)
            read, engine = read_mib_s(arr, max(5, 2 * repeats), **opts)
            page_kib = pb * br * bc * arr.itemsize // 1024
            print(
                f"| {br}x{bc} | {pb} | {page_kib} | {ing['ours_mib_s']:.0f} |"
                f" {ing['ratio']:.2f} | {read:.0f} | {read / plain_read:.2f} | {engine:.0f} |"
                f" {d_band:.2f} | {d_band10:.2f} | {d_scat:.2f} | {nblocks} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
