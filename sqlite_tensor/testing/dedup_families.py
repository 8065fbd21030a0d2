"""Dedup on every trained family, against the baselines, in one run (issue 14's table).

    python -m sqlite_tensor.testing.dedup_families            # the table, max_drop MAX_DROP (0.005)
    python -m sqlite_tensor.testing.dedup_families --sweep    # also bytes against drop
    python -m sqlite_tensor.testing.dedup_families --methods ours --paths   # factors chosen

For each family of :mod:`.trained_families` (default size), each method stores the whole
family and is judged on the test sets, which no method saw:

- ``exact``: exact dedup only (what ``add_model`` does);
- ``substitution (paper)``: ``Store.dedup(residuals=False, strategy="greedy")``, the
  netsDB paper's method (substitute within a tolerance, guarded in steps);
- ``low-rank deltas`` and ``1-bit deltas``: whole-tensor deltas per fine-tuned model, the
  reminis and BitDelta approaches (:mod:`.baselines`, numpy);
- ``ours``: ``Store.dedup`` with its defaults (the budget search).

Every method gets the same budget on the validation sets. The sweep runs the methods with
a setting to spend it on (ours and low-rank deltas) over several budgets: bytes stored
against the worst model's test drop, the plot in docs/dedup.md. ``asv_bench/benchmarks/
bench_dedup_families.py`` records the same figures; tools/figures.py draws them.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

from ..schema import Tables
from . import baselines, nets, trained_families
from .dedup_compare import MAX_DROP, run_method
from .trained_families import FAMILIES, FIT_FAMILIES

# label -> ("store", dedup_compare.METHODS key) or ("baseline", baselines.BASELINES key)
METHODS = {
    "exact": ("store", "exact"),
    "substitution (paper)": ("store", "substitute, greedy"),
    "low-rank deltas": ("baseline", "lowrank-delta"),
    "1-bit deltas": ("baseline", "bitdelta"),
    "ours": ("store", "residual, lsh"),
}
SWEEP_METHODS = ("low-rank deltas", "ours")  # the methods with a setting to spend a budget on
SWEEP_DROPS = (0.0025, 0.005, 0.0075, 0.01, 0.02)


@dataclass
class Row:
    family: str
    method: str
    max_drop: float
    ratio: float  # separate bytes / bytes stored
    worst_drop: float  # the worst model's test accuracy drop, points
    seconds: float  # the method's own time (not the family's training)
    factors: dict | None = None  # a store method's factors: {model: {tensor: rank}}


def run_family(name: str, family, methods=tuple(METHODS), max_drop=MAX_DROP, sweep=()) -> list[Row]:
    """Each method at max_drop on one family, and the sweep's methods at the budgets in
    ``sweep`` too."""
    rows = []
    runs = [(label, max_drop) for label in methods]
    runs += [
        (label, d) for d in sweep if d != max_drop for label in methods if label in SWEEP_METHODS
    ]
    with tempfile.TemporaryDirectory() as tmp, nets.one_thread():
        for label, drop in runs:
            where, key = METHODS[label]
            started = time.perf_counter()
            if where == "store":
                r, store = run_method(os.path.join(tmp, "s.sqlite"), family, key, max_drop=drop)
                factors = _factors(store)
                store.close()
                seconds = r.dedup_seconds
            else:
                r = baselines.run(family, drop, methods=(key,))[key]
                seconds = time.perf_counter() - started
                factors = None
            rows.append(Row(name, label, drop, r.ratio, 100 * r.worst_drop, seconds, factors))
    return rows


def _factors(store) -> dict:
    """{model: {tensor: rank}} of the store's factors rows (the factor path's choices)."""
    out = {m: {} for m in store.models()}
    t = Tables(store.name)
    for model, tensor, rank in store.conn.execute(
        f"SELECT m.name, tt.name, f.rank FROM {t.factors} f JOIN {t.tensors} tt"
        f" ON tt.id = f.tensor_id JOIN {t.models} m ON m.id = tt.model_id ORDER BY m.id, tt.id"
    ):
        out[model][tensor] = rank
    return out


def run(names=tuple(FAMILIES), methods=tuple(METHODS), max_drop=MAX_DROP, sweep=(), size="default"):
    """Rows for every family named; training seconds per family too."""
    rows, trained = [], {}
    for name in names:
        started = time.perf_counter()
        family = FAMILIES[name](size)
        trained[name] = time.perf_counter() - started
        rows += run_family(name, family, methods, max_drop, sweep)
    return rows, trained


def table(rows: list[Row], max_drop: float = MAX_DROP) -> str:
    """Families down, methods across: x fewer bytes / worst test drop / seconds."""
    at = [r for r in rows if r.max_drop == max_drop]
    methods = [m for m in METHODS if any(r.method == m for r in at)]
    families = list(dict.fromkeys(r.family for r in at))
    lines = [
        f"max_drop {max_drop} (validation); each cell: x fewer bytes than separate files, "
        "worst test drop (points), seconds",
        f"{'family':<14} {'split':<8} " + " ".join(f"{m:>24}" for m in methods),
    ]
    for f in families:
        cells = []
        for m in methods:
            r = next(r for r in at if r.family == f and r.method == m)
            cells.append(f"{r.ratio:>6.2f}x {r.worst_drop:>5.2f}p {r.seconds:>6.1f}s")
        split = "fit" if f in FIT_FAMILIES else "held out"
        lines.append(f"{f:<14} {split:<8} " + " ".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="family", help=", ".join(FAMILIES))
    parser.add_argument("--max-drop", type=float, default=MAX_DROP)
    parser.add_argument("--sweep", action="store_true", help="also the budgets of SWEEP_DROPS")
    parser.add_argument("--size", default="default", choices=("default", "small"))
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    parser.add_argument(
        "--paths", action="store_true", help="each model's factors (tensor: rank) as ours stored it"
    )
    parser.add_argument(
        "--eval-n", type=int, help="validation and test examples a model (default: EVAL_N)"
    )
    args = parser.parse_args(argv)
    if args.eval_n is not None:
        if args.eval_n < 1:
            parser.error(f"--eval-n must be at least 1, got {args.eval_n}")
        trained_families.EVAL_N[args.size] = args.eval_n  # this process only
    unknown = [n for n in args.names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; families are {', '.join(FAMILIES)}")
    rows, trained = run(
        args.names or tuple(FAMILIES),
        tuple(args.methods),
        max_drop=args.max_drop,
        sweep=SWEEP_DROPS if args.sweep else (),
        size=args.size,
    )
    print(table(rows, args.max_drop))
    if args.sweep:
        print("\nsweep: method, max_drop, x fewer, worst test drop")
        for r in rows:
            if r.method in SWEEP_METHODS:
                print(
                    f"{r.family:<14} {r.method:<16} {r.max_drop:<7} {r.ratio:>6.2f}x "
                    f"{r.worst_drop:>5.2f}p"
                )
    if args.paths:
        print("\nours, each model's factors (tensor: rank; none: the tiles' path or kept):")
        for r in rows:
            if r.method == "ours" and r.max_drop == args.max_drop:
                for model, ranks in r.factors.items():
                    text = ", ".join(f"{k}: {v}" for k, v in ranks.items()) or "none"
                    print(f"{r.family:<14} {model:<8} {text}")
    print("training seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in trained.items()))


if __name__ == "__main__":
    main()
