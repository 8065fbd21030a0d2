"""Approximate dedup on trained families (sqlite_tensor.testing.trained: a base text classifier and
four variants fine-tuned on related tasks), every method side by side
(sqlite_tensor.testing.dedup_compare; `python -m sqlite_tensor.dedup [--vocab 100000]` prints the
same as a table).

Targets: with residuals at least 4x fewer physical bytes than the models stored
separately; at most 1.0 point of test accuracy lost on every model; LSH search at least
10x faster than exhaustive with at least 90 % of its savings; inference on the
deduplicated family at most 1.2x the time of the exact one, pages cached. Single-threaded
BLAS for both searches, so the ratio compares algorithms, not thread counts.
"""

import os
import tempfile

from threadpoolctl import threadpool_limits

from sqlite_tensor.testing.dedup_compare import (
    METHODS,
    SWEEP_METHODS,
    SWEEP_TOLERANCES,
    MethodResult,
    compare,
    run_method,
)
from sqlite_tensor.testing.trained import fine_tuned_family


def _figures(vocab):
    with threadpool_limits(1):
        results = compare(fine_tuned_family(4, vocab=vocab))
    figures = {
        method: {
            "ratio": r.ratio,
            "worst_drop": 100 * r.worst_drop,
            "search_seconds": r.search_seconds,
            "physical": r.physical_bytes,
            "dedup_seconds": r.dedup_seconds,
        }
        for method, r in results.items()
        if isinstance(r, MethodResult)
    }
    figures["inference_ratio"] = results["inference_ratio"]
    return figures


class _Family:
    params = [list(METHODS)]
    param_names = ["method"]
    timeout = 1800

    def track_times_fewer_bytes(self, figures, method):
        return figures[method]["ratio"]

    track_times_fewer_bytes.unit = "logical / physical"

    def track_worst_accuracy_drop(self, figures, method):
        return figures[method]["worst_drop"]

    track_worst_accuracy_drop.unit = "points (test set)"

    def track_search_speedup_over_exhaustive(self, figures, method):
        exhaustive = figures.get(f"{method.split(',')[0]}, exhaustive")
        if method == "exact" or exhaustive is None or not figures[method]["search_seconds"]:
            return float("nan")
        return exhaustive["search_seconds"] / figures[method]["search_seconds"]

    track_search_speedup_over_exhaustive.unit = "exhaustive time / time"

    def track_savings_vs_exhaustive(self, figures, method):
        exhaustive = figures.get(f"{method.split(',')[0]}, exhaustive")
        exact = figures["exact"]["physical"]  # what exact dedup alone leaves
        if method == "exact" or exhaustive is None or exhaustive["physical"] == exact:
            return float("nan")
        return (exact - figures[method]["physical"]) / (exact - exhaustive["physical"])

    track_savings_vs_exhaustive.unit = "bytes saved beyond exact / exhaustive's"

    def track_inference_time_vs_exact(self, figures, method):
        return figures["inference_ratio"] if method == "residual, lsh" else float("nan")

    track_inference_time_vs_exact.unit = "time / exact store's"

    # The bytes themselves, for the bytes-per-family figure (tools/figures.py): what the
    # five models take as separate files (logical) and in the store after each method.
    def track_logical_mib(self, figures, method):
        return figures[method]["ratio"] * figures[method]["physical"] / 2**20

    track_logical_mib.unit = "MiB"

    def track_physical_mib(self, figures, method):
        return figures[method]["physical"] / 2**20

    track_physical_mib.unit = "MiB"

    def track_dedup_seconds(self, figures, method):
        """The whole Store.dedup call (search, decisions, guarded steps with validation,
        clean-up), a timing; nan for exact (no call)."""
        return figures[method]["dedup_seconds"] if method != "exact" else float("nan")

    track_dedup_seconds.unit = "seconds"


# asv keys a setup_cache by where it is written: each family needs its own.
class DefaultFamily(_Family):
    """vocab 20,000 x 64: 25 MiB for five models, 313 embedding blocks each."""

    def setup_cache(self):
        return _figures(20000)


class LargeFamily(_Family):
    """vocab 100,000 x 64: 123 MiB for five models, 1,563 embedding blocks each, where
    the exhaustive search's quadratic cost shows."""

    def setup_cache(self):
        return _figures(100000)


class Sweep:
    """Bytes against accuracy over the guard's tolerance on the default family (vocab
    20,000), substitution and residuals with LSH: what `python -m sqlite_tensor.dedup
    --sweep` prints. track_dedup_seconds: the whole Store.dedup call (search, decisions,
    guarded steps with validation, clean-up), a timing."""

    params = [list(SWEEP_METHODS), list(SWEEP_TOLERANCES)]
    param_names = ["method", "tolerance"]
    timeout = 1800

    def setup_cache(self):
        family = fine_tuned_family(4, vocab=20000)
        out = {}
        with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
            for method in SWEEP_METHODS:
                for tolerance in SWEEP_TOLERANCES:
                    r, store = run_method(
                        os.path.join(tmp, "s.sqlite"), family, method, tolerance=tolerance
                    )
                    store.close()
                    out[method, tolerance] = (r.ratio, 100 * r.worst_drop, r.dedup_seconds)
        return out

    def track_times_fewer_bytes(self, figures, method, tolerance):
        return figures[method, tolerance][0]

    track_times_fewer_bytes.unit = "logical / physical"

    def track_worst_accuracy_drop(self, figures, method, tolerance):
        return figures[method, tolerance][1]

    track_worst_accuracy_drop.unit = "points (test set)"

    def track_dedup_seconds(self, figures, method, tolerance):
        return figures[method, tolerance][2]

    track_dedup_seconds.unit = "seconds"
