"""The process pool under concurrent serving: eight threads, each with its own connection to
one file, each running a different model of a family (so they share pages) in a loop, under
a budget of a few pages, while a monitor samples the pool. Every answer must be right, no
thread may hang, unpinned resident bytes never exceed the budget, and the counters add up.
"""

from __future__ import annotations

import threading
import time
from contextlib import closing

import numpy as np
import pytest
from conftest import SMALL
from reference_model import assert_matches

import sqlite_tensor
from sqlite_tensor import cache

THREADS = 8
SECONDS = 1.5
LAYERS = [
    {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"},
    {"op": "dense", "weight": "w2", "activation": "gelu"},
    {"op": "dense", "weight": "head", "activation": "softmax"},
]


@pytest.fixture
def pool():
    before = cache.stats()
    cache.clear()
    yield
    policy = before["policy"] if before["policy"] in cache.policies() else cache.DEFAULT_POLICY
    cache.configure(
        policy=policy, budget_bytes=before["budget_bytes"], aging_window=before["aging_window"]
    )
    cache.clear()


def weight(rng, n_out, n_in):
    return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A file store of THREADS models: w1/b1 shared by all, w2 by pairs, head private; and
    per model an input and its answer (checked against numpy once)."""
    rng = np.random.default_rng(77)
    path = tmp_path_factory.mktemp("stress") / "family.sqlite"
    base = {"w1": weight(rng, 20, 24), "b1": (rng.standard_normal(20) * 0.5).astype(np.float32)}
    pairs = [weight(rng, 12, 20) for _ in range(THREADS // 2)]
    models = {
        f"m{i}": dict(base, w2=pairs[i // 2], head=weight(rng, 5, 12)) for i in range(THREADS)
    }
    with sqlite_tensor.Store(path, **SMALL) as store:
        for name, arrays in models.items():
            store.add_model(name, arrays, layers=LAYERS)
        sizes = [p["bytes"] for p in store.page_stats()]
        answers = {}
        for name in models:
            x = rng.standard_normal((2, 24)).astype(np.float32)
            y = store.predict(name, x)
            assert_matches(y, LAYERS, models[name], x)
            answers[name] = (x, y)
    return path, answers, sizes


@pytest.mark.parametrize("policy", ["admit-lfu", "lru", "s3fifo"])
def test_threads_share_a_small_pool(pool, family, policy):
    path, answers, sizes = family
    budget = 4 * max(sizes)
    cache.configure(policy=policy, budget_bytes=budget)
    cache.clear()
    errors, counts, samples = [], {}, []
    stop = threading.Event()
    barrier = threading.Barrier(THREADS + 1)

    def work(name):
        x, expected = answers[name]
        conn = sqlite_tensor.connect(path)
        try:
            store = sqlite_tensor.Store(conn)
            barrier.wait(timeout=30)
            n = 0
            while not stop.is_set():
                got = store.predict(name, x)
                if not np.array_equal(got, expected):
                    raise AssertionError(f"{name}: {got} != {expected}")
                if n % 5 == 0:  # and through SQL
                    blob = conn.execute(
                        "SELECT tensor_predict('tensors', ?, ?)", (name, x[1].tobytes())
                    ).get
                    if not np.array_equal(np.frombuffer(blob, np.float32), expected[1]):
                        raise AssertionError(f"{name} (SQL): wrong answer")
                n += 1
            counts[name] = n
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((name, repr(e)))
            stop.set()
        finally:
            conn.close()

    def monitor():
        """Snapshots of the resident pages (each taken under the pool's lock)."""
        conn = sqlite_tensor.connect(path)
        try:
            while not stop.is_set():
                rows = conn.execute("SELECT bytes, pins FROM tensor_cache_pages").fetchall()
                samples.append((sum(b for b, _ in rows), sum(b for b, p in rows if p > 0)))
                time.sleep(0.002)
        except BaseException as e:  # noqa: BLE001
            errors.append(("monitor", repr(e)))
        finally:
            conn.close()

    workers = [threading.Thread(target=work, args=(f"m{i}",), daemon=True) for i in range(THREADS)]
    watcher = threading.Thread(target=monitor, daemon=True)
    with cache.record() as trace:
        for t in workers:
            t.start()
        barrier.wait(timeout=30)
        watcher.start()
        time.sleep(SECONDS)
        stop.set()
        for t in workers + [watcher]:
            t.join(timeout=30)
        hung = [t.name for t in workers + [watcher] if t.is_alive()]
    assert not hung, f"threads still running after 30 s (deadlock?): {hung}"
    assert not errors, errors
    assert len(counts) == THREADS and min(counts.values()) > 0, counts

    stats = cache.stats()
    assert stats["policy"] == policy and stats["budget_bytes"] == budget
    # nothing is pinned now: the budget holds
    assert stats["resident_bytes"] <= budget, stats
    with closing(sqlite_tensor.connect(path)) as conn:
        rows = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0), coalesce(max(pins), 0)"
            " FROM tensor_cache_pages"
        ).get
    assert rows == (stats["pages"], stats["resident_bytes"], 0)
    # while the threads ran: resident bytes within the budget plus the bytes pinned
    assert samples
    over = [(total, pinned) for total, pinned in samples if total > budget + pinned]
    assert not over, over[:5]
    # counters: every access a hit or a miss; a miss keeps its page (until evicted, or
    # still resident), is bypassed, or finds that another thread read the page meanwhile
    assert stats["hits"] + stats["misses"] == len(trace.page_ids), stats
    assert stats["misses"] - stats["bypassed"] >= stats["evictions"] + stats["pages"], stats
    assert min(sizes) * stats["misses"] <= stats["bytes_read"] <= max(sizes) * stats["misses"]
    assert stats["evictions"] + stats["bypassed"] > 0, stats
    if policy != "admit-lfu":
        assert stats["bypassed"] == 0, stats
