"""Bytes against error of each residual encoding on real fine-tune deltas (issue 14).

    python tools/residual_tradeoffs.py                 # the trained text-classifier family
    python tools/residual_tradeoffs.py --family mlp    # an MLP fine-tuned on shifted tasks

Each variant's delta from the base (variant - base, float64) is cut into tiles (64 x 64 by
default, the store's default blocks) and every encoding of residuals.ladder() is measured
with residuals.errors() (which the round-trip tests hold to decode(encode())): bytes as a
fraction of the float32 tiles, error as |delta - decoded|_F / |delta|_F over all tiles of
a tensor group. Also: the share of tiles where a sign residual with one scale per tile is
within 5 % of the error of one with a scale per row.

The mlp family is the issue's shape (2048 -> 1024 -> 16, relu): a base trained with SGD
on a random linear teacher, four variants fine-tuned with SGD on teachers moved by 0.6 of
a random matrix (3000 examples, 3 epochs): full-rank, dense deltas, as a small fine-tune
makes them. It is a measuring aid, not a benchmark family (its accuracies are low).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlite_tensor import residuals  # noqa: E402


def trained_models() -> dict:
    from sqlite_tensor.testing.trained import fine_tuned_family

    return fine_tuned_family().models


def mlp_models(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    D, H, C = 2048, 1024, 16
    teacher = rng.standard_normal((D, C)).astype(np.float32)

    def data(i, n):
        r = np.random.default_rng([seed, 100 + i])
        p = teacher if i == 0 else teacher + 0.6 * r.standard_normal((D, C)).astype(np.float32)
        x = r.standard_normal((n, D)).astype(np.float32)
        return x, np.argmax(x @ p, axis=1)

    def train(W, x, y, epochs, lr):
        W = {k: v.copy() for k, v in W.items()}
        for _ in range(epochs):
            for s in range(0, len(x), 64):
                xb, yb = x[s : s + 64], y[s : s + 64]
                h = np.maximum(xb @ W["w1"].T + W["b1"], 0)
                z = h @ W["w2"].T + W["b2"]
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(len(yb)), yb] -= 1
                p /= len(yb)
                gh = p @ W["w2"]
                gh[h <= 0] = 0
                for k, g in (
                    ("w1", gh.T @ xb),
                    ("b1", gh.sum(0)),
                    ("w2", p.T @ h),
                    ("b2", p.sum(0)),
                ):
                    W[k] -= lr * g
        return W

    init = {
        "w1": (rng.standard_normal((H, D)) / np.sqrt(D)).astype(np.float32),
        "b1": np.zeros(H, np.float32),
        "w2": (rng.standard_normal((C, H)) / np.sqrt(H)).astype(np.float32),
        "b2": np.zeros(C, np.float32),
    }
    base = train(init, *data(0, 9000), 4, 0.05)
    models = {"base": base}
    for i in range(1, 5):
        models[f"task-{i}"] = train(base, *data(i, 3000), 3, 0.02)
    return models


def tiles(a: np.ndarray, tile: int):
    a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    for i in range(0, a.shape[0], tile):
        for j in range(0, a.shape[1], tile):
            yield a[i : i + tile, j : j + tile]


def measure(models: dict, tile: int):
    base = models["base"]
    stacks = defaultdict(list)  # (tensor, extent) -> tiles
    for name, m in models.items():
        if name == "base":
            continue
        for t in m:
            delta = m[t].astype(np.float64) - base[t].astype(np.float64)
            for d in tiles(delta, tile):
                stacks[(t, d.shape)].append(d)
    # tensor -> step -> [bytes, squared error, tiles]
    by_tensor = defaultdict(lambda: defaultdict(lambda: [0, 0.0, 0]))
    dense, norm2, near = defaultdict(int), defaultdict(float), defaultdict(lambda: [0, 0])
    for (t, (rows, cols)), ds in stacks.items():
        d = np.stack(ds)
        dense[t] += d.size * 4
        norm2[t] += float(np.square(d).sum())
        steps, errs = residuals.ladder_errors(d)
        for (kind, param, nbytes), e in zip(steps, errs):
            # sparse steps keep a fraction of the tile: edge tiles join the full ones there
            sparse = kind in (residuals.SPARSE, residuals.SIGN_SPARSE)
            acc = by_tensor[t][(kind, round(param / (rows * cols), 6) if sparse else param)]
            acc[0] += nbytes * len(ds)
            acc[1] += float(np.square(e).sum())
            acc[2] += len(ds)
        tile_e = residuals.errors(residuals.SIGN, residuals.SIGN_TILE, d)
        row_e = residuals.errors(residuals.SIGN, residuals.SIGN_ROW, d)
        near[t][0] += int((tile_e <= 1.05 * row_e).sum())
        near[t][1] += len(ds)
    return by_tensor, dense, norm2, near


def name(kind: int, param) -> str:
    if kind == residuals.SIGN:
        return f"sign ({residuals.SIGN_SCALES[param]} scale)"
    if kind == residuals.QUANTIZED:
        return f"quantized {param}-bit"
    if kind == residuals.LOWRANK:
        return f"low-rank {param}"
    label = "sparse" if kind == residuals.SPARSE else "sign+sparse"
    return f"{label} k={param:.2%} of the tile"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--family", choices=["trained", "mlp"], default="trained")
    ap.add_argument("--tile", type=int, default=64)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    models = trained_models() if args.family == "trained" else mlp_models()
    trained_s = time.perf_counter() - start
    start = time.perf_counter()
    by_tensor, dense, norm2, near = measure(models, args.tile)
    print(
        f"family {args.family}: {len(models) - 1} variants, tiles {args.tile} x {args.tile}"
        f" (trained in {trained_s:.1f} s, measured in {time.perf_counter() - start:.1f} s)"
    )
    for t in sorted(by_tensor, key=lambda t: -dense[t]):
        if norm2[t] == 0:
            continue
        print(
            f"\n{t}: {dense[t] / 4:.0f} weights, |delta|_F {np.sqrt(norm2[t]):.4g};"
            f" sign tile scale within 5 % of row scale on {near[t][0]} of {near[t][1]} tiles"
        )
        print(f"  {'encoding':32s} {'bytes/float32':>13s} {'rel. error':>10s}")
        for (kind, param), (nbytes, err2, n) in sorted(
            by_tensor[t].items(), key=lambda kv: kv[1][0]
        ):
            if n < near[t][1]:  # not on every tile's ladder (a residual as big as the tile)
                continue
            print(
                f"  {name(kind, param):32s} {nbytes / dense[t]:13.4f}"
                f" {np.sqrt(err2 / norm2[t]):10.4f}"
            )


if __name__ == "__main__":
    main()
