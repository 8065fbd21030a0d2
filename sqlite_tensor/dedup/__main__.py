"""python -m sqlite_tensor.dedup: every dedup method on the trained family, as a table.

python -m sqlite_tensor.dedup                  # the default family (vocab 20,000)
python -m sqlite_tensor.dedup --vocab 100000   # the large one (search speed)
python -m sqlite_tensor.dedup --sweep          # bytes vs accuracy over tolerances
"""

import argparse
import os
import tempfile
import time

from ..testing.dedup_compare import SWEEP_METHODS, SWEEP_TOLERANCES, compare, run_method, table
from ..testing.trained import fine_tuned_family

parser = argparse.ArgumentParser(prog="python -m sqlite_tensor.dedup")
parser.add_argument("--variants", type=int, default=4)
parser.add_argument("--vocab", type=int, default=20000)
parser.add_argument(
    "--sweep",
    action="store_true",
    help="substitution and residuals (LSH) at tolerances 0.01 to 0.2",
)
args = parser.parse_args()

started = time.perf_counter()
family = fine_tuned_family(args.variants, vocab=args.vocab)
print(
    f"trained family: {len(family.models)} models, vocab {args.vocab}, in "
    f"{time.perf_counter() - started:.1f} s; validation accuracy as trained: "
    + ", ".join(f"{m} {a:.4f}" for m, a in family.accuracy.items())
)
if args.sweep:
    print(f"{'method':<18} {'tolerance':>9} {'x fewer':>7} {'worst test drop':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for method in SWEEP_METHODS:
            for tolerance in SWEEP_TOLERANCES:
                result, store = run_method(
                    os.path.join(tmp, "s.sqlite"), family, method, tolerance=tolerance
                )
                store.close()
                print(
                    f"{method:<18} {tolerance:>9} {result.ratio:>7.2f} "
                    f"{100 * result.worst_drop:>14.2f}p"
                )
else:
    results = compare(family)
    print(table(results))
    for method, r in results.items():
        if hasattr(r, "accuracy"):
            print(
                f"{method}: test accuracy "
                + ", ".join(
                    f"{m} {r.accuracy_before[m]:.4f}->{r.accuracy[m]:.4f}" for m in r.accuracy
                )
            )
