"""What the multi-writer stress test and the kill -9 runs share: the models and their
versions, a numpy reference of their forward pass, and the checks of what a store holds.

A model "<name>" at version v is derived from one base (seeded): some tiles exactly the
base's (shared blocks), some the base's plus a little noise (what lossy dedup merges),
the rest its own. Every process regenerates the same bytes from (name, v).
"""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np

N_IN, HIDDEN, N_OUT = 48, 40, 6
BLOCKS = dict(block_rows=8, block_cols=8, page_blocks=4)
LAYERS = [
    {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"},
    {"op": "dense", "weight": "w2", "bias": "b2"},
]
TOLERANCE = 0.02  # lossy dedup's, relative to a block's norm: the noise below is within it


@cache
def _base(scale: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261130)
    hidden, n_in = HIDDEN * scale, N_IN * scale
    return {
        "w1": rng.normal(0, 0.3, (hidden, n_in)).astype(np.float32),
        "b1": rng.normal(0, 0.1, hidden).astype(np.float32),
        "w2": rng.normal(0, 0.3, (N_OUT, hidden)).astype(np.float32),
        "b2": rng.normal(0, 0.1, N_OUT).astype(np.float32),
    }


@cache
def version(name: str, v: int, scale: int = 1) -> dict[str, np.ndarray]:
    """The tensors of model name at version v (deterministic); scale multiplies the input
    and hidden widths (inputs(..., scale) fits)."""
    seed = int.from_bytes(hashlib.sha256(f"{name}/{v}/{scale}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    out = {}
    for key, base in _base(scale).items():
        arr = base.copy()
        if arr.ndim == 2:
            for i in range(0, arr.shape[0], 8):
                for j in range(0, arr.shape[1], 8):
                    tile = arr[i : i + 8, j : j + 8]
                    kind = rng.integers(0, 3)  # 0: the base's, 1: near it, 2: its own
                    if kind == 1:
                        tile += rng.normal(0, 1e-4, tile.shape).astype(np.float32)
                    elif kind == 2:
                        tile[...] = rng.normal(0, 0.3, tile.shape).astype(np.float32)
        else:
            arr += rng.normal(0, 0.1, arr.shape).astype(np.float32)
        out[key] = arr
    return out


def digest(tensors: dict[str, np.ndarray]) -> str:
    """One model's content: every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        a = tensors[key]
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def forward(tensors: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The reference of LAYERS, in float64."""
    h = np.maximum(x.astype(np.float64) @ tensors["w1"].T.astype(np.float64) + tensors["b1"], 0)
    return h @ tensors["w2"].T.astype(np.float64) + tensors["b2"]


def close(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-4))


def inputs(seed: int, n: int = 3, scale: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, N_IN * scale)).astype(np.float32)


def contents(store) -> dict[str, str]:
    """{model: digest} of everything a store holds (one read transaction)."""
    store.conn.execute("BEGIN")
    try:
        return {m: digest(store.get_model(m)) for m in store.models()}
    finally:
        store.conn.execute("COMMIT")


def always_passes(store, model) -> float:
    """A dedup validator that accepts every replacement (the tolerance bounds the change)."""
    return 1.0


# -- kill -9 ------------------------------------------------------------------------------------

KILL_SCALE = 12  # models big enough that each operation takes a while to kill inside
KILL_MODELS = ("m0", "m1", "m2", "m3")


def kill_prepare(path) -> None:
    """The store every kill run starts from."""
    import sqlite_tensor

    with sqlite_tensor.Store(path, **BLOCKS) as store:
        for name in KILL_MODELS:
            store.add_model(name, version(name, 0, KILL_SCALE), layers=LAYERS)


def kill_operation(store, op: str) -> None:
    """One write of each kind, the same every time (dedup's search is seeded)."""
    if op == "add":
        store.add_model("new", version("new", 0, KILL_SCALE), layers=LAYERS)
    elif op == "update":
        store.update_model("m1", version("m1", 1, KILL_SCALE))
    elif op == "drop":
        store.drop_model("m2")
    elif op == "pack":
        store.pack("greedy", by="tensor")
    elif op == "dedup":
        store.dedup(validator=always_passes, max_drop=0.0, tolerance=TOLERANCE)
    else:
        raise ValueError(op)


def kill_child(path: str, op: str, pipe) -> None:
    """Run op on the store at path, saying "start" just before and "done" just after."""
    import sqlite_tensor

    store = sqlite_tensor.Store(path)
    pipe.send("start")
    kill_operation(store, op)
    pipe.send("done")
    store.close()
