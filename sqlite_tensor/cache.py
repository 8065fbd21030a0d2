"""The buffer pool: one per process, shared by every connection; pluggable page replacement.

    import sqlite_tensor.cache as cache
    cache.configure(budget_bytes=256 * 2**20, policy="sieve")
    cache.stats()                      # policy, budget, resident bytes, hits, misses, ...
    cache.simulate(trace, pages, policy="lru", budget_bytes=...)

The policies are compiled code (cython/cache/policy_*.pxi); simulate() replays a trace
through the very same code in a private pool, and also through Belady's optimal policy
("opt"), which needs to know the future and so exists only there. See docs/cache.md.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from . import _engine

DEFAULT_POLICY = "admit-lfu"
SIMULATION_ONLY = tuple(n for n, _, sim, _ in _engine.cache_policies() if sim)


def policies(*, simulation: bool = False) -> list[str]:
    """Names of the replacement policies, the default first; with simulation=True also
    those only simulate() can run (opt)."""
    return [n for n, _, sim, _ in _engine.cache_policies() if simulation or not sim]


def describe() -> dict[str, str]:
    """A one-line summary of each policy, by name."""
    return {n: summary for n, summary, _, _ in _engine.cache_policies()}


def parameters(policy: str | None = None) -> dict:
    """The named parameters of a policy, or of every policy by name (policy=None), each as
    {"default", "min", "max", "integer", "doc"}; the range is inclusive. Set them with
    configure(params=...) or simulate(params=...); stats()["params"] has those in force."""
    table = {n: params for n, _, _, params in _engine.cache_policies()}
    if policy is None:
        return table
    if policy not in table:
        raise ValueError(f"unknown policy {policy!r}; policies are {', '.join(table)}")
    return table[policy]


def configure(
    *,
    budget_bytes: int | None = None,
    policy=None,
    aging_window: int | None = None,
    params: dict | None = None,
) -> dict:
    """Set the process's buffer pool: its byte budget, its replacement policy (changing it
    drops the cached pages), and how many accesses halve the access counts that lfu,
    lru2 and admit-lfu rank by. Returns stats(). SQL: tensor_cache('policy', ...).

    policy is a name from policies(), or an object written in Python:
    ``victim(candidates) -> page_id`` (per eviction; candidates are the unpinned resident
    pages as (page_id, nbytes, shared, accesses, last_access), least recently used first)
    and optionally ``admit(page) -> bool`` (per fault). It is never called per row or on a
    hit, and must not use sqlite-tensor itself. If it raises or names a page that is not a
    candidate, the pool uses LRU's choice for that decision; stats() counts these in
    python_errors and keeps python_last_error.

    params sets named parameters (see parameters()) of the policy given, or of the one in
    force: for example ``configure(policy="s3fifo", params={"small_fraction": 0.2})``. A
    policy set without params gets its defaults (unless it already is the pool's: then its
    values stay); changing a value drops the cached pages, as changing the policy does.
    Every value is checked before anything changes; a bad name or value raises ValueError
    naming it and the allowed range. aging_window, a parameter of lfu and admit-lfu, is the
    pool's setting either way."""
    _engine.cache_configure(
        budget_bytes=budget_bytes, policy=policy, aging_window=aging_window, params=params
    )
    return stats()


def stats() -> dict:
    """policy, budget_bytes, resident_bytes, pages, hits, misses, bypassed (misses the
    policy did not keep), evictions, bytes_read, aging_window, params (the policy's named
    parameters in force), hit_ratio."""
    s = _engine.cache_stats()
    total = s["hits"] + s["misses"]
    s["hit_ratio"] = s["hits"] / total if total else None
    return s


def clear() -> None:
    """Drop every cached page and zero the counters."""
    _engine.cache_clear()


@dataclass
class Trace:
    """Page accesses recorded by record(): page ids and the key of their store."""

    page_ids: np.ndarray
    store_keys: np.ndarray


@contextmanager
def record():
    """Record every page access of the process pool while the block runs:

    with cache.record() as trace:
        store.predict(...)
    cache.simulate(trace.page_ids, store_pages(store), ...)
    """
    trace = Trace(np.zeros(0, np.int64), np.zeros(0, np.uint64))
    _engine.cache_record(True)
    try:
        yield trace
    finally:
        _engine.cache_record(False)
        trace.page_ids, trace.store_keys = _engine.cache_trace()


def store_pages(store) -> dict[int, tuple[int, int]]:
    """page id -> (bytes, models sharing it) of a Store, as simulate() takes them."""
    return {p["page_id"]: (p["bytes"], p["models"]) for p in store.page_stats()}


def simulate(
    trace,
    pages: dict,
    policy: str = DEFAULT_POLICY,
    budget_bytes: int = 0,
    *,
    aging_window: int | None = None,
    params: dict | None = None,
) -> dict:
    """Replay a trace of page ids through a policy with a byte budget.

    pages maps every page id in the trace to (nbytes, number of models sharing it).
    Returns accesses, hits, misses, bypassed, evictions and bytes_read. The policy code is
    the one that serves; "opt" is Belady's MIN (with bypass), the lower bound. params sets
    the policy's named parameters (parameters(policy)); the rest keep their defaults.

    Each access is pinned and unpinned before the next. A live run replays exactly when it
    did the same: single-input predictions and layers whose pages all differ do; a batch
    layer that pins a chunk of pages at once, or a layer that reads one (deduplicated)
    page twice while holding it, can differ under small budgets, since pinned pages are
    not candidates for eviction.
    """
    ids = np.asarray(trace)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise TypeError(
            f"trace must be a 1-D array of page ids, got {ids.dtype} of shape {ids.shape}"
        )
    if (
        isinstance(budget_bytes, bool)
        or not isinstance(budget_bytes, (int, np.integer))
        or budget_bytes < 1
    ):
        raise ValueError(f"budget_bytes must be a positive integer, got {budget_bytes!r}")
    if policy not in policies(simulation=True):
        raise ValueError(
            f"unknown policy {policy!r}; policies are {', '.join(policies(simulation=True))}"
        )
    unique, dense = np.unique(ids.astype(np.int64), return_inverse=True)
    missing = [int(u) for u in unique if int(u) not in pages]
    if missing:
        raise ValueError(f"pages has no entry for page ids {missing[:10]}")
    info = [pages[int(u)] for u in unique]
    nbytes = np.array([b for b, _ in info], np.int64)
    if (nbytes < 1).any():
        raise ValueError("every page needs a positive size in bytes")
    shared = np.array([s for _, s in info], np.int32)
    if aging_window is not None and (
        isinstance(aging_window, bool)
        or not isinstance(aging_window, (int, np.integer))
        or aging_window < 1
    ):
        raise ValueError(
            f"aging_window must be a positive number of accesses, got {aging_window!r}"
        )
    aging = 0 if aging_window is None else int(aging_window)
    return _engine.cache_simulate(
        policy,
        int(budget_bytes),
        np.ascontiguousarray(dense, np.int64),
        next_uses(dense),
        nbytes,
        shared,
        aging,
        params,
    )


def next_uses(trace: np.ndarray) -> np.ndarray:
    """For each access, the position of the next access to the same page (or a sentinel
    larger than any position): what Belady's policy needs to know of the future."""
    n = len(trace)
    out = np.full(n, np.iinfo(np.int64).max, np.int64)
    if n:
        order = np.argsort(trace, kind="stable")  # positions grouped by page, in order
        same = trace[order[1:]] == trace[order[:-1]]
        out[order[:-1][same]] = order[1:][same]
    return out


def compare(trace, pages: dict, budget_bytes: int, names=None, **kwargs) -> list[dict]:
    """simulate() for several policies (default: all, opt included), each result with
    vs_opt = its misses / opt's misses."""
    names = list(names) if names is not None else policies(simulation=True)
    if "opt" not in names:
        names.append("opt")
    results = {n: simulate(trace, pages, n, budget_bytes, **kwargs) for n in names}
    best = max(results["opt"]["misses"], 1)
    for r in results.values():
        r["vs_opt"] = r["misses"] / best
    return [results[n] for n in names]


def family_trace(**kwargs) -> tuple[np.ndarray, dict]:
    """Deprecated alias (docs/cache.md named it here): the generator moved to
    :func:`sqlite_tensor.testing.workloads.family_trace`."""
    import warnings

    warnings.warn(
        "sqlite_tensor.cache.family_trace moved to sqlite_tensor.testing.workloads.family_trace",
        DeprecationWarning,
        stacklevel=2,
    )
    from .testing.workloads import family_trace

    return family_trace(**kwargs)


def static_oracle_misses(trace, pages: dict, budget_bytes: int) -> int:
    """Misses of the static oracle: it caches, from the start, the pages with the most
    accesses over the whole trace (as many as fit), and each of those misses once. When
    requests are independent draws no online policy does better in expectation; the gap
    from it to opt is what only knowing the future buys."""
    ids, counts = np.unique(np.asarray(trace, np.int64), return_counts=True)
    room, kept = budget_bytes, 0
    misses = int(counts.sum())
    for i in np.argsort(-counts, kind="stable"):
        nbytes = pages[int(ids[i])][0]
        if nbytes <= room:
            room -= nbytes
            misses -= int(counts[i]) - 1  # one cold miss, then hits
            kept += 1
    return misses
