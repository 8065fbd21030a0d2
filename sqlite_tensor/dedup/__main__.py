"""python -m sqlite_tensor.dedup [n_variants]: every dedup method on the trained family."""
import sys
import time

from ..trained import fine_tuned_family
from .compare import compare, table

started = time.perf_counter()
family = fine_tuned_family(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
print(f"trained family: {len(family.models)} models in {time.perf_counter() - started:.1f} s; "
      "validation accuracy as trained:",
      ", ".join(f"{m} {a:.4f}" for m, a in family.accuracy.items()))
results = compare(family)
print(table(results))
for method, r in results.items():
    if hasattr(r, "accuracy"):
        print(f"{method}: test accuracy " + ", ".join(
            f"{m} {r.accuracy_before[m]:.4f}->{r.accuracy[m]:.4f}" for m in r.accuracy))
