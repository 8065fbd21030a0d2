"""Buffer-pool benchmarks: how many misses each replacement policy makes against Belady's
optimum, serving latency of a model family under a budget, and what the pool costs when
every page is cached.

Miss counts come from cache.simulate(), which replays a trace through the pool and policy
code that serves; latencies from Store.predict on a real store. Every timing is a median,
every target a ratio (the machine is noisy). See docs/benchmarks.md, "Buffer pool".
"""

import os
import statistics
import time

import numpy as np

import sqlite_tensor.cache as cache
from sqlite_tensor import Store, _engine
from sqlite_tensor.testing import workloads

from .bench_inference import N, dense_store
from .common import median_time

POLICIES = cache.policies()
FRACTIONS = [0.25, 0.5, 0.75]  # budget, as a fraction of the distinct page bytes
SEEDS = [0, 1, 2]  # of workloads.family_trace: model popularity and requests
DEFAULT_BUDGET = 512 * 2**20  # the process pool's budget when the benchmarks start


def _restore_pool() -> None:
    cache.configure(budget_bytes=DEFAULT_BUDGET, policy=cache.DEFAULT_POLICY)
    cache.clear()


def _budget(pages: dict, fraction: float) -> int:
    """fraction of the distinct bytes of the pages, in bytes."""
    return int(fraction * sum(nbytes for nbytes, _ in pages.values()))


def static_oracle_misses(trace: np.ndarray, pages: dict, budget: int) -> int:
    """Misses of the static oracle: it keeps, from the start, the budget // page-size pages
    with the highest true access counts in the trace, and nothing else. Every access to
    another page misses, and each kept page misses once (cold). With independent requests
    this is the best an online policy can do in expectation: the gap from it to opt is what
    only knowledge of the future closes."""
    sizes = {nbytes for nbytes, _ in pages.values()}
    if len(sizes) != 1:
        raise ValueError("the static oracle is defined for pages of one size")
    k = budget // sizes.pop()
    _, counts = np.unique(trace, return_counts=True)
    kept = np.sort(counts)[::-1][:k]
    return int(len(trace) - kept.sum() + len(kept))


class PolicyMisses:
    """Misses of each policy over Belady's optimum (opt: MIN with bypass, which knows the
    future) on workloads.family_trace(seed): 12 models, 75 % of each model's 64 pages of 1 MiB
    shared by all (the rest half shared within one of 3 groups, half private), Zipf 1.0
    model popularity, 2,000 requests each reading all its model's pages in order (128,000
    accesses, 168 distinct pages). Budget = budget_fraction of the distinct bytes.
    track_vs_opt: misses / opt's misses (1.0 = optimal)."""

    params = (POLICIES, FRACTIONS, SEEDS)
    param_names = ["policy", "budget_fraction", "seed"]
    timeout = 300

    def setup_cache(self):
        opt = {}
        for seed in SEEDS:
            trace, pages = workloads.family_trace(seed=seed)
            for fraction in FRACTIONS:
                opt[seed, fraction] = cache.simulate(trace, pages, "opt", _budget(pages, fraction))[
                    "misses"
                ]
        return opt

    def setup(self, opt, policy, fraction, seed):
        self.trace, self.pages = workloads.family_trace(seed=seed)

    def track_vs_opt(self, opt, policy, fraction, seed):
        result = cache.simulate(self.trace, self.pages, policy, _budget(self.pages, fraction))
        return result["misses"] / opt[seed, fraction]

    track_vs_opt.unit = "misses / opt's"


class StaticOracle:
    """The same traces and budgets as PolicyMisses, without a policy:
    track_static_oracle_vs_opt: misses of the static oracle that keeps the pages with the
    highest true access counts (static_oracle_misses) over opt's: how much of a policy's gap
    to opt is reachable online (a policy at this figure has closed all of it).
    track_opt_miss_ratio: opt's misses / accesses, the floor the ratios are taken against.
    track_budget_pages, track_base_pages: pages the budget holds, pages every model reads."""

    params = (FRACTIONS, SEEDS)
    param_names = ["budget_fraction", "seed"]
    timeout = 120

    def setup(self, fraction, seed):
        self.trace, self.pages = workloads.family_trace(seed=seed)
        self.budget = _budget(self.pages, fraction)
        self.opt = cache.simulate(self.trace, self.pages, "opt", self.budget)["misses"]

    def track_static_oracle_vs_opt(self, fraction, seed):
        return static_oracle_misses(self.trace, self.pages, self.budget) / self.opt

    track_static_oracle_vs_opt.unit = "misses / opt's"

    def track_opt_miss_ratio(self, fraction, seed):
        return self.opt / len(self.trace)

    track_opt_miss_ratio.unit = "misses / accesses"

    # The trace's shape, for the docs' reading of the figures (tools/figures.py): how many
    # pages the budget holds, and how many the whole family shares (its base).
    def track_budget_pages(self, fraction, seed):
        return self.budget // max(nbytes for nbytes, _ in self.pages.values())

    track_budget_pages.unit = "pages"

    def track_base_pages(self, fraction, seed):
        models = max(sharing for _, sharing in self.pages.values())
        return sum(1 for _, sharing in self.pages.values() if sharing == models)

    track_base_pages.unit = "pages"


class SimulateSpeed:
    """cache.simulate() of the default policy on workloads.family_trace(seed=0) (128,000
    accesses) at half the distinct bytes: the whole call, the Python-side preparation
    (page ids made dense, next uses for opt) included.
    track_accesses_per_s: accesses replayed per second (median of 7 calls)."""

    timeout = 120

    def setup(self):
        self.trace, self.pages = workloads.family_trace(seed=0)
        self.budget = _budget(self.pages, 0.5)

    def _simulate(self):
        return cache.simulate(self.trace, self.pages, cache.DEFAULT_POLICY, self.budget)

    def time_simulate(self):
        self._simulate()

    def track_accesses_per_s(self):
        return len(self.trace) / median_time(self._simulate, 7)

    track_accesses_per_s.unit = "accesses/s"


# -- serving a family under a budget ----------------------------------------------------------

FAMILY_MODELS = 12
FAMILY_GROUPS = 3
WARMUP = 200  # requests served before measuring (the pool fills, counts build up)
REQUESTS = 1000  # requests measured
SERVING_LAYERS = [
    {"op": "dense", "weight": "fc1.weight", "bias": "fc1.bias", "activation": "relu"},
    {"op": "dense", "weight": "fc2.weight", "bias": "fc2.bias", "activation": "relu"},
    {"op": "dense", "weight": "fc3.weight", "bias": "fc3.bias", "activation": "relu"},
    {"op": "dense", "weight": "head.weight", "bias": "head.bias", "activation": "softmax"},
]


def _dense_weight(rng, rows: int, cols: int) -> np.ndarray:
    # astype: dividing by a numpy float64 scalar would promote the weights to float64
    return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)


def _bias(rng, n: int) -> np.ndarray:
    return (rng.standard_normal(n) * 0.01).astype(np.float32)


def serving_family(path: str) -> None:
    """FAMILY_MODELS MLPs 1024 -> 1024 -> 1024 -> 512 -> 512 (float32, PyTorch layout):
    fc1 and fc2 (1024 x 1024, 8 MiB) are the same bytes in every model, fc3 (512 x 1024,
    2 MiB) in every model of one of FAMILY_GROUPS groups (model i in group i % groups), the
    head (512 x 512, 1 MiB) is each model's own. About 73 % of a model's bytes are shared
    by the whole family, like workloads.family_trace's 75 %."""
    rng = np.random.default_rng(20)
    base = {
        "fc1.weight": _dense_weight(rng, 1024, 1024),
        "fc1.bias": _bias(rng, 1024),
        "fc2.weight": _dense_weight(rng, 1024, 1024),
        "fc2.bias": _bias(rng, 1024),
    }
    groups = [
        {"fc3.weight": _dense_weight(rng, 512, 1024), "fc3.bias": _bias(rng, 512)}
        for _ in range(FAMILY_GROUPS)
    ]
    with Store(path) as store:
        for m in range(FAMILY_MODELS):
            head = np.random.default_rng([21, m])
            tensors = {
                **base,
                **groups[m % FAMILY_GROUPS],
                "head.weight": _dense_weight(head, 512, 512),
                "head.bias": _bias(head, 512),
            }
            assert all(t.dtype == np.float32 for t in tensors.values())
            store.add_model(f"m{m:02d}", tensors, layers=SERVING_LAYERS)


def zipf_requests(n: int, models: int, zipf: float = 1.0, seed: int = 0) -> np.ndarray:
    """n model indexes drawn with Zipf(zipf) popularity, the ranks shuffled by seed (as
    workloads.family_trace draws its requests)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, models + 1) ** zipf
    ranks = rng.permutation(models)
    return rng.choice(models, size=n, p=weights[ranks] / weights.sum())


class ServingLatency:
    """Store.predict of one input (batch 1) per request over the FAMILY_MODELS models of
    serving_family (12 MLPs of 11 MiB sharing fc1, fc2 across the family and fc3 within
    groups: 27 MB of distinct pages), requests drawn by zipf_requests (Zipf 1.0, seed 0),
    buffer pool with `policy` and a budget of half the family's distinct page bytes, pages
    read from SQLite on a miss (OS cache warm). Each replay starts from an empty pool:
    WARMUP requests, then REQUESTS measured, each timed alone. One kernel thread: these
    layers are small enough that a batch-1 request runs faster on one (a server would run
    one request per core), and on a noisy 2-core machine a second thread's scheduling
    delays, not the pool, made the tail.
    track_p50_ms / track_p99_ms: percentiles of request latency (median over 3 replays).
    track_hit_ratio: page hits / page accesses over the measured requests.
    track_read_mib_per_request: bytes read on misses, per measured request.
    (Hits and bytes read do not depend on timing: the same replay gives the same figures.)"""

    params = POLICIES
    param_names = ["policy"]
    timeout = 300
    REPLAYS = 3
    budget_fraction = 0.5

    def setup_cache(self):
        path = os.path.abspath("family.sqlite")
        serving_family(path)
        return path

    def setup(self, path, policy):
        self.store = Store(path)
        self.models = sorted(self.store.models())
        assert len(self.models) == FAMILY_MODELS
        distinct = sum(p["bytes"] for p in self.store.page_stats())
        cache.configure(budget_bytes=int(distinct * self.budget_fraction), policy=policy)
        cache.clear()
        _engine.set_threads(1)
        self.requests = zipf_requests(WARMUP + REQUESTS, FAMILY_MODELS)
        self.x = np.random.default_rng(22).standard_normal(1024, dtype=np.float32)

    def teardown(self, path, policy):
        _engine.set_threads(0)
        _restore_pool()
        self.store.close()

    def _serve(self) -> tuple[np.ndarray, dict, dict]:
        """Latencies (ms) of the measured requests, pool stats before and after them."""
        cache.clear()
        for m in self.requests[:WARMUP]:
            self.store.predict(self.models[m], self.x)
        before = cache.stats()
        latencies = np.empty(REQUESTS)
        for i, m in enumerate(self.requests[WARMUP:]):
            start = time.perf_counter()
            self.store.predict(self.models[m], self.x)
            latencies[i] = time.perf_counter() - start
        return latencies * 1e3, before, cache.stats()

    def _percentile(self, q: float) -> float:
        return statistics.median(
            float(np.percentile(self._serve()[0], q)) for _ in range(self.REPLAYS)
        )

    def track_p50_ms(self, path, policy):
        return self._percentile(50)

    track_p50_ms.unit = "ms"

    def track_p99_ms(self, path, policy):
        return self._percentile(99)

    track_p99_ms.unit = "ms"

    def track_hit_ratio(self, path, policy):
        _, before, after = self._serve()
        hits = after["hits"] - before["hits"]
        return hits / (hits + after["misses"] - before["misses"])

    track_hit_ratio.unit = "hits / accesses"

    def track_read_mib_per_request(self, path, policy):
        _, before, after = self._serve()
        return (after["bytes_read"] - before["bytes_read"]) / 2**20 / REQUESTS

    track_read_mib_per_request.unit = "MiB"


class ServingCached(ServingLatency):
    """The reference for ServingLatency: the same requests with a budget that holds the
    whole family (after the warm-up every access hits), default policy: what the requests
    cost without a single miss."""

    params = [cache.DEFAULT_POLICY]
    budget_fraction = 2.0


# -- what the pool costs ----------------------------------------------------------------------


class PoolOverhead:
    """The pool's cost on a fully cached model: one 4096 x 4096 float32 dense layer with
    bias (bench_inference.dense_store, 64 MiB), batch 1, default threads, every page in the
    pool, `policy`.
    Target: the pool costs at most 5 % over the kernels on the same bytes in memory.

    Derived, not timed as a difference (the difference is below the noise of a predict):
    track_ns_per_access (a): the pool's code per page access when every access hits: the
        page ids one predict pins (recorded with cache.record()), replayed 20,000 times
        through the engine's simulator with a budget that holds them all, i.e. st_pool_access
        (hash lookup, access count, policy hit) + st_pool_unpin; the arrays are prepared
        outside the timing. The simulator's pool is private, so this leaves out the process
        pool's mutex (an uncontended lock + unlock at pin and at unpin).
    track_pins_per_predict (b): page pins one predict makes (length of the recorded trace).
    time_predict_cached / track_predict_ms (c): the predict, every page cached.
    track_pool_overhead_pct = (a) x (b) / (c) x 100."""

    params = POLICIES
    param_names = ["policy"]
    timeout = 300
    REPLAYS = 20000

    def setup_cache(self):
        path = os.path.abspath("dense.sqlite")
        dense_store(path)
        return path

    def setup(self, path, policy):
        self.store = Store(path)
        cache.configure(budget_bytes=DEFAULT_BUDGET, policy=policy)  # holds the 64 MiB
        cache.clear()
        self.x = np.random.default_rng(1).standard_normal(N, dtype=np.float32)
        self.store.predict("model", self.x)
        with cache.record() as trace:
            self.store.predict("model", self.x)
        stats = cache.stats()
        assert stats["misses"] == stats["hits"] == len(trace.page_ids), stats
        self.pins = len(trace.page_ids)
        pages = cache.store_pages(self.store)
        unique, dense = np.unique(np.tile(trace.page_ids, self.REPLAYS), return_inverse=True)
        self.dense = np.ascontiguousarray(dense, np.int64)
        self.next_use = cache.next_uses(self.dense)
        self.nbytes = np.array([pages[int(u)][0] for u in unique], np.int64)
        self.shared = np.array([pages[int(u)][1] for u in unique], np.int32)
        self.policy = policy

    def teardown(self, path, policy):
        _restore_pool()
        self.store.close()

    def _replay(self):
        budget = int(self.nbytes.sum())
        result = _engine.cache_simulate(
            self.policy, budget, self.dense, self.next_use, self.nbytes, self.shared, 0
        )
        assert result["misses"] == len(self.nbytes), result

    def _ns_per_access(self) -> float:
        return median_time(self._replay, 5) / len(self.dense) * 1e9

    def _predict(self):
        self.store.predict("model", self.x)

    def track_ns_per_access(self, path, policy):
        return self._ns_per_access()

    track_ns_per_access.unit = "ns"

    def track_pins_per_predict(self, path, policy):
        return self.pins

    track_pins_per_predict.unit = "pins"

    def time_predict_cached(self, path, policy):
        self._predict()

    def track_predict_ms(self, path, policy):
        return median_time(self._predict, 21) * 1e3

    track_predict_ms.unit = "ms"

    def track_pool_overhead_pct(self, path, policy):
        predict_ns = median_time(self._predict, 21) * 1e9
        return self._ns_per_access() * self.pins / predict_ns * 100

    track_pool_overhead_pct.unit = "%"
