"""python -m sqlite_tensor.dedup: every dedup method on the trained family, as a table.

python -m sqlite_tensor.dedup                  # the default family (vocab 20,000)
python -m sqlite_tensor.dedup --vocab 100000   # the large one (search speed)

Bytes against accuracy over budgets, and other families and the baselines:
python -m sqlite_tensor.testing.dedup_families --sweep
"""

import argparse
import time

from ..testing.dedup_compare import compare, table
from ..testing.trained import fine_tuned_family
from ..testing.trained_families import EVAL_N

parser = argparse.ArgumentParser(prog="python -m sqlite_tensor.dedup")
parser.add_argument("--variants", type=int, default=4)
parser.add_argument("--vocab", type=int, default=20000)
args = parser.parse_args()

started = time.perf_counter()
family = fine_tuned_family(args.variants, vocab=args.vocab, eval_docs=EVAL_N["default"])
print(
    f"trained family: {len(family.models)} models, vocab {args.vocab}, in "
    f"{time.perf_counter() - started:.1f} s; validation accuracy as trained: "
    + ", ".join(f"{m} {a:.4f}" for m, a in family.accuracy.items())
)
results = compare(family)
print(table(results))
for method, r in results.items():
    if hasattr(r, "accuracy"):
        print(
            f"{method}: test accuracy "
            + ", ".join(f"{m} {r.accuracy_before[m]:.4f}->{r.accuracy[m]:.4f}" for m in r.accuracy)
        )
