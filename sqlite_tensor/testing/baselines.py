"""Compression baselines outside the store, to compare dedup with (issue 14), in numpy.

    python -m sqlite_tensor.testing.baselines      # every family, default size, the table

Each baseline takes a :class:`~sqlite_tensor.testing.trained.TrainedFamily` and a budget
``max_drop`` (accuracy as a fraction: 0.01 is one point) and returns a
:class:`BaselineResult`: the bytes it stores and each model's test accuracy drop. Like its
paper, each picks its own setting per model on the validation set, and is judged on the
test set:

- ``separate``: every model stored whole (the logical bytes), the reference.
- ``lowrank-delta`` (reminis-style low-rank deltas): a model's reference stored whole,
  each of its 2-D float32 tensors as reference + the rank-r truncated SVD of
  (model - reference). One relative-energy threshold per model picks every tensor's r
  (the smallest r leaving at most that fraction of ||delta||_F^2 out); the threshold is
  the one storing fewest bytes whose validation drop stays within ``max_drop``. A
  tensor costs (m + n) * r * 4 bytes, or m * n * 4 when that is less (its delta whole,
  exact). 1-D tensors (biases) are stored whole.
- ``bitdelta`` (BitDelta, Liu et al. 2024): each 2-D tensor as reference + scale *
  sign(delta) (sign(0) = -1, one bit per weight, the paper's rule), one float32 scale per
  tensor, mean |delta|; ceil(m * n / 8) + 4 bytes. 1-D tensors whole. It has no setting:
  a model whose validation drop exceeds the budget is listed in ``over_budget``, with its
  drop reported as it is.

In every method a tensor equal to its reference's costs nothing (exact dedup, which every
store does), and the first model (a chain's first version) is stored whole. A model's
reference is ``family.reference`` (the base; in a retrained chain the previous version),
as *reconstructed* by the method: deltas are taken against what is stored, as a store's
residual would be, so errors do not pile up along a chain.

Accuracy runs the family's layer list in numpy (:func:`forward`); the tests check it
against ``Store.predict``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import factors
from ..factors import ENERGY_LEFT_OUT  # lowrank-delta's thresholds, as ours
from . import nets
from .trained import TrainedFamily

_F32 = np.float32
METHODS = ("separate", "lowrank-delta", "bitdelta")


# -- running a layer list in numpy ----------------------------------------------------------


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))


_ACT = {
    "identity": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "gelu": _gelu,
    "softmax": lambda x: (lambda e: e / e.sum(1, keepdims=True))(
        np.exp(x - x.max(1, keepdims=True))
    ),
}


def forward(tensors, layers, x) -> np.ndarray:
    """Outputs (n, n_out), float32, of a store layer list (dense, embedding, embedding_bag,
    activation; see sqlite_tensor/layers.py) over a batch: a 2-D float array, an array of
    ids, or a list of id bags, as ``Store.predict`` takes them."""
    h = x
    for i, layer in enumerate(layers):
        op = layer["op"]
        if op == "embedding":
            h = tensors[layer["weight"]][np.asarray(h, np.int64).reshape(-1)]
        elif op == "embedding_bag":
            w = tensors[layer["weight"]]
            bags = [np.asarray(b, np.int64).reshape(-1) for b in h]
            lengths = np.array([len(b) for b in bags])
            if not len(bags) or lengths.min() < 1:
                raise ValueError("embedding_bag needs a non-empty list of non-empty bags")
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            h = np.add.reduceat(w[np.concatenate(bags)], starts, axis=0)
            if layer.get("mode", "mean") == "mean":
                h = h / lengths[:, None].astype(_F32)
        elif op == "dense":
            w = tensors[layer["weight"]]
            h = np.asarray(h, _F32)
            h = h @ w if layer.get("transpose") else h @ w.T
            if layer.get("bias") is not None:
                h = h + tensors[layer["bias"]].reshape(-1)
            h = _ACT[layer.get("activation") or "identity"](h)
        elif op == "activation":
            h = _ACT[layer["activation"]](np.asarray(h, _F32))
        else:
            raise ValueError(f"layer {i}: unknown op {op!r}")
    return np.asarray(h, _F32)


def accuracy(tensors, layers, x, y) -> float:
    """Share of inputs labelled right: argmax of the outputs, or for one output, above 0.5
    after a sigmoid (else above 0), as ``sqlite_tensor.dedup.accuracy`` decides."""
    out = forward(tensors, layers, x)
    if out.shape[1] == 1:
        sigmoid = (layers[-1].get("activation") or "identity") == "sigmoid"
        predicted = (out[:, 0] > (0.5 if sigmoid else 0.0)).astype(np.int64)
    else:
        predicted = out.argmax(1)
    return float(np.mean(predicted == np.asarray(y)))


# -- results --------------------------------------------------------------------------------


@dataclass
class BaselineResult:
    """What a baseline stores and what it costs in accuracy.

    bytes: bytes stored; logical_bytes: every model whole. drop / validation_drop:
    {model: accuracy as trained - accuracy as reconstructed}, on the test / validation
    set (fractions). setting: {model: what the method chose, None if stored whole}.
    over_budget: models whose validation drop exceeds max_drop."""

    method: str
    max_drop: float
    logical_bytes: int
    bytes: int
    drop: dict
    validation_drop: dict
    setting: dict
    over_budget: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.logical_bytes / self.bytes

    @property
    def worst_drop(self) -> float:
        return max(self.drop.values())


def logical_bytes(family: TrainedFamily) -> int:
    return sum(int(a.nbytes) for t in family.models.values() for a in t.values())


# -- the methods ----------------------------------------------------------------------------


def _order(family):
    first = next(iter(family.models))
    return first, [m for m in family.models if m != first]


def _drops(family, recon):
    """(validation drops, test drops) of the reconstructed models."""
    val, test = {}, {}
    for m, t in recon.items():
        for split, out in ((family.validation, val), (family.test, test)):
            x, y = split[m]
            out[m] = accuracy(family.models[m], family.layers, x, y) - accuracy(
                t, family.layers, x, y
            )
    return val, test


def separate(family: TrainedFamily, max_drop: float = 0.01) -> BaselineResult:
    """Every model stored whole."""
    zero = {m: 0.0 for m in family.models}
    total = logical_bytes(family)
    return BaselineResult(
        "separate", max_drop, total, total, dict(zero), dict(zero), {m: None for m in zero}
    )


def _variant_loop(family, max_drop, encode, method):
    """Shared by the delta methods: the first model whole, every other model encoded
    against its reference's reconstruction by ``encode(model, reference tensors)``, which
    returns (tensors, bytes, setting, validation drop)."""
    start = time.perf_counter()
    first, rest = _order(family)
    recon = {first: family.models[first]}
    stored = sum(int(a.nbytes) for a in family.models[first].values())
    setting, val_drop = {first: None}, {first: 0.0}
    for m in rest:
        ref = recon[family.reference[m]]
        recon[m], nbytes, setting[m], val_drop[m] = encode(m, ref)
        stored += nbytes
    _, test_drop = _drops(family, recon)
    return BaselineResult(
        method,
        max_drop,
        logical_bytes(family),
        stored,
        test_drop,
        val_drop,
        setting,
        [m for m in rest if val_drop[m] > max_drop],
        time.perf_counter() - start,
    )


def _whole_or_same(tensor, ref):
    """Bytes of a tensor that no delta encodes: 0 if it equals the reference, else whole."""
    return 0 if np.array_equal(tensor, ref) else int(tensor.nbytes)


def lowrank_delta(family: TrainedFamily, max_drop: float = 0.01) -> BaselineResult:
    """Low-rank deltas, one energy threshold per model chosen on the validation set."""

    def encode(m, ref):
        model = family.models[m]
        x, y = family.validation[m]
        own = accuracy(model, family.layers, x, y)
        deltas, fixed, fixed_bytes = {}, {}, 0
        for k, a in model.items():
            if a.ndim == 2 and not np.array_equal(a, ref[k]):
                deltas[k] = factors.Delta(a - ref[k])
            else:
                fixed[k] = ref[k] if np.array_equal(a, ref[k]) else a
                fixed_bytes += _whole_or_same(a, ref[k])

        def plan(left_out):  # {tensor: rank, or None for the delta whole}, bytes
            ranks, nbytes = {}, fixed_bytes
            for k, d in deltas.items():
                (mm, nn), r = d.delta.shape, d.rank_for(left_out)
                whole = left_out == 0.0 or (mm + nn) * r >= mm * nn
                ranks[k] = None if whole else r
                nbytes += mm * nn * 4 if whole else (mm + nn) * r * 4
            return ranks, nbytes

        plans = sorted((plan(e)[1], -e, e) for e in ENERGY_LEFT_OUT)
        tried = set()
        for nbytes, _, left_out in plans:  # fewest bytes first: the first within budget wins
            ranks, _ = plan(left_out)
            key = tuple(sorted(ranks.items(), key=lambda kv: kv[0]))
            if key in tried:
                continue
            tried.add(key)
            t = dict(fixed)
            for k, r in ranks.items():
                t[k] = model[k] if r is None else ref[k] + deltas[k].truncated(r)
            drop = own - accuracy(t, family.layers, x, y)
            if drop <= max_drop or left_out == 0.0:
                ranks_text = {k: ("whole" if r is None else r) for k, r in ranks.items()}
                return t, nbytes, {"left_out": left_out, "ranks": ranks_text}, drop
        raise AssertionError("unreachable: left_out 0 stores every delta whole")

    return _variant_loop(family, max_drop, encode, "lowrank-delta")


def bitdelta(family: TrainedFamily, max_drop: float = 0.01) -> BaselineResult:
    """One bit per weight of each 2-D delta and one scale per tensor; no setting to choose."""

    def encode(m, ref):
        model = family.models[m]
        t, nbytes = {}, 0
        for k, a in model.items():
            if a.ndim == 2 and not np.array_equal(a, ref[k]):
                delta = a - ref[k]
                scale = _F32(np.mean(np.abs(delta)))
                t[k] = ref[k] + np.where(delta > 0, scale, -scale).astype(_F32)
                nbytes += -(-a.size // 8) + 4
            else:
                t[k] = ref[k] if np.array_equal(a, ref[k]) else a
                nbytes += _whole_or_same(a, ref[k])
        x, y = family.validation[m]
        drop = accuracy(model, family.layers, x, y) - accuracy(t, family.layers, x, y)
        return t, nbytes, "1 bit", drop

    return _variant_loop(family, max_drop, encode, "bitdelta")


BASELINES = {"separate": separate, "lowrank-delta": lowrank_delta, "bitdelta": bitdelta}


def run(family: TrainedFamily, max_drop: float = 0.01, methods=METHODS) -> dict:
    """{method: BaselineResult} for the family."""
    if not (isinstance(max_drop, (int, float)) and 0.0 <= max_drop <= 1.0):
        raise ValueError(f"max_drop must be a fraction within [0, 1], got {max_drop!r}")
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; baselines are {', '.join(BASELINES)}")
    with nets.one_thread():  # comparable times on a shared machine
        return {m: BASELINES[m](family, max_drop) for m in methods}


def table(rows) -> str:
    """rows: [(family name, fit or held out, training seconds, {method: BaselineResult})]."""
    lines = [
        f"{'family':<14} {'split':<8} {'train s':>7} {'MiB':>6} | {'lowrank x':>9} "
        f"{'val':>6} {'test':>6} {'s':>5} | {'bitdelta x':>10} {'val':>6} {'test':>6} {'over':>4}"
    ]
    for name, split, seconds, res in rows:
        lr, bd = res["lowrank-delta"], res["bitdelta"]
        worst_val = [100 * max(r.validation_drop.values()) for r in (lr, bd)]
        lines.append(
            f"{name:<14} {split:<8} {seconds:>7.1f} {res['separate'].bytes / 2**20:>6.2f} | "
            f"{lr.ratio:>9.2f} {worst_val[0]:>5.2f}p {100 * lr.worst_drop:>5.2f}p "
            f"{lr.seconds:>5.1f} | {bd.ratio:>10.2f} {worst_val[1]:>5.2f}p "
            f"{100 * bd.worst_drop:>5.2f}p {len(bd.over_budget):>4}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    import argparse

    from .trained_families import FAMILIES, FIT_FAMILIES, SIZES

    parser = argparse.ArgumentParser(description="the baselines on every trained family")
    parser.add_argument("names", nargs="*", metavar="family", help=", ".join(FAMILIES))
    parser.add_argument("--size", default="default", choices=SIZES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-drop", type=float, default=0.01)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; families are {', '.join(FAMILIES)}")
    rows = []
    for name in args.names or FAMILIES:
        start = time.perf_counter()
        family = FAMILIES[name](args.size, args.seed)
        seconds = time.perf_counter() - start
        split = "fit" if name in FIT_FAMILIES else "held out"
        rows.append((name, split, seconds, run(family, args.max_drop)))
    print(
        f"max_drop {args.max_drop}; x: separate bytes / the method's bytes; val, test: the "
        "worst model's accuracy drop (points) on the validation set (where the setting was "
        "chosen) and on the test set; s: the method's seconds; over: models bitdelta stores "
        "over budget (validation)"
    )
    print(table(rows))
    print("\nbeside the store's dedup: python -m sqlite_tensor.testing.dedup_families")


if __name__ == "__main__":
    main()
