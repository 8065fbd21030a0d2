"""fork() while other threads hold or use the engine's locks (cython/c/st_fork.c): the
pool's, the arena's, the views' and the kernel thread pool's. A lock that stayed held in
the child by a thread the child does not have would hang it; each child here must finish
in time. The C unit tests (tests/c/test_st_fork.c) hold each lock in turn; these run the
engine itself.

A child here never reuses its parent's connections (SQLite forbids it), and the one that
runs SQL does so only while the parent's other thread is parked in Python, not in SQLite
(SQLite's own global mutexes have no fork handlers).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from reference_model import assert_matches

import sqlite_tensor
from sqlite_tensor import _engine, cache

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

LAYERS = [
    {"op": "dense", "weight": "w", "bias": "b", "activation": "relu"},
    {"op": "dense", "weight": "k", "transpose": True},
]
# 64 x 128 float32 blocks, three a page: 96 KiB pages, placed in the arena (64 KiB and up)
LAYOUT = dict(block_rows=64, block_cols=128, page_blocks=3)


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(5)
    arrays = {
        "w": (rng.standard_normal((1100, 1030)) / 32).astype(np.float32),
        "b": rng.standard_normal(1100).astype(np.float32),
        "k": (rng.standard_normal((1100, 300)) / 33).astype(np.float32),
    }
    path = tmp_path / "fork.sqlite"
    with sqlite_tensor.Store(path, **LAYOUT) as store:
        store.add_model("m", arrays, layers=LAYERS)
        page = max(p["bytes"] for p in store.page_stats())
    return path, arrays, page


@pytest.fixture
def restore():
    """The pool's policy and budget, and the thread setting, as they were; pool empty."""
    before, threads = cache.stats(), _engine.get_threads()
    cache.clear()
    yield
    policy = before["policy"] if before["policy"] != "python" else cache.DEFAULT_POLICY
    cache.configure(policy=policy, budget_bytes=before["budget_bytes"])
    cache.clear()
    _engine.set_threads(threads)


def child_exit_code(pid: int, timeout: float = 30) -> int:
    """The child's exit code; it is killed and the test fails if it outlives timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child {pid} hung (a lock held across fork?)")


class ParkedPolicy:
    """LRU's choice, but the first victim() call parks its thread - holding the pool's
    lock - until released: the GIL is free meanwhile, so the main thread can fork."""

    def __init__(self):
        self.inside, self.release = threading.Event(), threading.Event()

    def victim(self, candidates):
        if not self.inside.is_set():
            self.inside.set()
            self.release.wait(60)
        return candidates[0][0]


def test_fork_while_a_python_policy_holds_the_pool(restore, model):
    path, arrays, page = model
    x = np.random.default_rng(1).standard_normal(1030).astype(np.float32)
    _engine.set_threads(2)
    policy = ParkedPolicy()
    cache.configure(policy=policy, budget_bytes=4 * page)
    errors = []

    def predict():
        try:
            with sqlite_tensor.Store(path) as store:
                assert_matches(store.predict("m", x), LAYERS, arrays, x)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=predict)
    t.start()
    assert policy.inside.wait(30), "the policy was never asked for a victim"
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: the pool's lock was held by a thread it does not have
        code = 1
        try:
            cache.configure(policy="lru", budget_bytes=64 * page)  # takes the pool's lock
            with sqlite_tensor.Store(path) as store:
                assert_matches(store.predict("m", x), LAYERS, arrays, x)
            code = 0 if _engine._fork_pool_skipped() else 3
        finally:
            os._exit(code)
    waited = time.monotonic() - started
    skipped = _engine._fork_pool_skipped()
    policy.release.set()
    t.join(60)
    assert not t.is_alive() and not errors, errors
    assert child_exit_code(pid) == 0
    # fork waited for the pool's lock for a bounded time, then went on without it
    assert skipped and 0.05 <= waited < 10


def test_forks_while_threads_serve(restore, model):
    """Threads predict under a budget of a few pages (pages loaded, placed in the arena,
    evicted; kernel workers busy) while the main thread forks. Each child takes the pool's
    and the arena's locks (stats, clear) and finds no kernel workers of its own."""
    path, arrays, page = model
    _engine.set_threads(2)
    cache.configure(policy="lru", budget_bytes=3 * page)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 1030)).astype(np.float32)
    inputs = [x, x[0], x[1], x[2]]
    with sqlite_tensor.Store(path) as store:
        want = [store.predict("m", xi) for xi in inputs]
    for xi, w in zip(inputs, want):
        assert_matches(w, LAYERS, arrays, xi)
    stop = threading.Event()
    errors, served = [], [0]

    def serve(seed):
        try:
            with sqlite_tensor.Store(path) as store:
                k = seed
                while not stop.is_set():
                    got = store.predict("m", inputs[k % 4])
                    assert np.array_equal(got, want[k % 4])
                    served[0] += 1
                    k += 1
        except BaseException as e:
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=serve, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    try:
        while served[0] < 2 and not stop.is_set():
            time.sleep(0.01)
        for k in range(8):
            time.sleep(0.03 + 0.01 * k)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    if _engine._kernel_workers() != 0:
                        code = 4
                    else:
                        before = _engine._page_memory_stats()  # the arena's lock
                        cache.stats()  # the pool's lock
                        cache.configure(budget_bytes=2 * page)  # evicts: both
                        cache.clear()
                        after = _engine._page_memory_stats()
                        code = 0 if after["in_use_bytes"] <= before["in_use_bytes"] else 5
                finally:
                    os._exit(code)
            assert child_exit_code(pid) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert served[0] > 2
