"""Dedup methods side by side on one model family: what each saves, what it costs.

    python -m sqlite_tensor.dedup              # the default trained family, all methods

Each method runs on a fresh store holding the family (exact dedup happens as models are
added); accuracy is checked afterwards by running every model from the store on its test
set, which the guard never saw. The figures in docs/dedup.md come from here, and
asv_bench/benchmarks/bench_dedup.py tracks them.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from ..dedup.validators import accuracy

# (label, Store.dedup arguments); None: exact dedup only (what add_model does)
METHODS = {
    "exact": None,
    "substitute, greedy": {"residuals": False, "strategy": "greedy"},  # the paper's method
    "substitute, lsh": {"residuals": False, "search": "lsh"},
    "substitute, exhaustive": {"residuals": False, "search": "exhaustive"},
    "residual, lsh": {"residuals": True, "search": "lsh"},
    "residual, minhash": {"residuals": True, "search": "minhash"},
    "residual, exhaustive": {"residuals": True, "search": "exhaustive"},
}
STORE_OPTIONS = {"block_rows": 64, "block_cols": 64, "page_blocks": 4}
# The budget on the validation sets: half a point below the 1.0 point allowed on held-out
# data. A search that stops where the validation score meets the budget picks the
# configurations whose validation noise is kind: with 10,000-example sets, 0.75 points
# on validation came out as up to 1.45 on test (text-shuffled; 0.93 with the sets swapped).
MAX_DROP = 0.005


@dataclass
class MethodResult:
    method: str
    logical_bytes: int
    physical_bytes: int
    search_seconds: float
    dedup_seconds: float
    accuracy: dict  # model -> test accuracy from the store after dedup
    accuracy_before: dict  # model -> test accuracy as trained
    replaced: int = 0
    residuals: int = 0
    undone: int = 0

    @property
    def ratio(self) -> float:
        return self.logical_bytes / self.physical_bytes

    @property
    def worst_drop(self) -> float:
        return max(self.accuracy_before[m] - self.accuracy[m] for m in self.accuracy)


def load_family(path, family, store_options=STORE_OPTIONS):
    """A fresh store at path holding every model of the family."""
    from ..store import Store

    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    store = Store(path, **store_options)
    for name, tensors in family.models.items():
        store.add_model(name, tensors, layers=family.layers)
    return store


def run_method(
    path, family, method: str, *, max_drop=MAX_DROP, store_options=STORE_OPTIONS, **options
) -> tuple[MethodResult, object]:
    """One method on a fresh store; the result and the store (still open)."""
    store = load_family(path, family, store_options)
    test = {m: accuracy({m: family.test[m][0]}, {m: family.test[m][1]}) for m in family.models}
    before = {m: test[m](store, m) for m in family.models}
    result = MethodResult(
        method,
        store.stats()["logical_bytes"],
        store.stats()["physical_bytes"],
        0.0,
        0.0,
        before,
        before,
    )
    args = METHODS[method]
    if args is not None:
        x = {m: v[0] for m, v in family.validation.items()}
        y = {m: v[1] for m, v in family.validation.items()}
        report = store.dedup(validator=accuracy(x, y), max_drop=max_drop, **{**args, **options})
        result.physical_bytes = report.physical_bytes_after
        result.search_seconds = sum(r.search_seconds for r in report.models)
        result.dedup_seconds = report.seconds
        result.replaced = sum(r.replaced for r in report.models)
        result.residuals = sum(r.residuals for r in report.models)
        result.undone = sum(r.undone for r in report.models)
        result.accuracy = {m: test[m](store, m) for m in family.models}
    return result, store


def inference_ratio(deduped, exact, family, repeats: int = 15) -> float:
    """Median time of serving every model's test set from the deduplicated store over the
    same from the exact store, pages cached, runs alternating."""
    from .. import cache

    cache.configure(budget_bytes=1 << 30)
    bags = {m: family.test[m][0] for m in family.models}

    def serve(store):
        start = time.perf_counter()
        for m in family.models:
            store.predict(m, bags[m])
        return time.perf_counter() - start

    serve(deduped), serve(exact)  # warm the pool
    ratios = [serve(deduped) / serve(exact) for _ in range(repeats)]
    return statistics.median(ratios)


def compare(family, methods=tuple(METHODS), *, max_drop=MAX_DROP, directory=None, **options):
    """Every method on the family; {method: MethodResult}, plus the inference ratio of
    "residual, lsh" over exact (key "inference_ratio") when both ran."""
    out = {}
    # numpy's BLAS starts its threads and buffers on first use: not the first method's cost
    np.ones((256, 256), np.float32) @ np.ones((256, 256), np.float32)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        stores = {}
        for method in methods:
            result, store = run_method(
                os.path.join(tmp, f"{len(stores)}.sqlite"),
                family,
                method,
                max_drop=max_drop,
                **options,
            )
            out[method] = result
            stores[method] = store
        if "exact" in stores and "residual, lsh" in stores:
            out["inference_ratio"] = inference_ratio(
                stores["residual, lsh"], stores["exact"], family
            )
        for store in stores.values():
            store.close()
    return out


def table(results) -> str:
    lines = [
        f"{'method':<24} {'MiB':>7} {'x fewer':>7} {'search s':>8} {'dedup s':>7} "
        f"{'worst drop':>10} {'replaced':>8} {'residual':>8} {'undone':>6}"
    ]
    for method, r in results.items():
        if not isinstance(r, MethodResult):
            continue
        lines.append(
            f"{method:<24} {r.physical_bytes / 2**20:>7.2f} {r.ratio:>7.2f} "
            f"{r.search_seconds:>8.2f} {r.dedup_seconds:>7.2f} "
            f"{100 * r.worst_drop:>9.2f}p {r.replaced:>8} {r.residuals:>8} {r.undone:>6}"
        )
    if "inference_ratio" in results:
        lines.append(
            f"inference, residual lsh over exact (pages cached): {results['inference_ratio']:.2f}"
        )
    return "\n".join(lines)
