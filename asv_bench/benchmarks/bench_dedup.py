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

from threadpoolctl import threadpool_limits

from sqlite_tensor.testing.dedup_compare import METHODS, MethodResult, compare
from sqlite_tensor.testing.trained import fine_tuned_family
from sqlite_tensor.testing.trained_families import EVAL_N


def _figures(vocab):
    with threadpool_limits(1):
        results = compare(fine_tuned_family(4, vocab=vocab, eval_docs=EVAL_N["default"]))
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
