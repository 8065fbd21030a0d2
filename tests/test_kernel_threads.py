"""The kernels' worker threads (st_parallel_for in cython/c/st_parallel.c): started
once and kept, asleep when idle, shared by concurrent callers (a busy set of workers makes
a caller start threads of its own), and usable again in a forked child.

Layers over 2**20 multiply-adds for one input are split over threads; the layer here has
1100 x 1030 of them.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import closing

import numpy as np
import pytest
from conftest import run_threads
from reference_model import assert_matches

import sqlite_tensor
from sqlite_tensor import _engine

LAYERS = [
    {"op": "dense", "weight": "w", "bias": "b", "activation": "relu"},
    {"op": "dense", "weight": "k", "transpose": True},
]


@pytest.fixture
def threads(monkeypatch):
    # these tests are about the pool: batch-1 layers go parallel without the measurement
    # of whether that pays (st_gemv_threads; tests/test_gemv_threads.py)
    monkeypatch.setenv("ST_GEMV_PARALLEL", "always")
    before = _engine.get_threads()
    yield _engine
    _engine.set_threads(before)


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(11)
    arrays = {
        "w": (rng.standard_normal((1100, 1030)) / 32).astype(np.float32),
        "b": rng.standard_normal(1100).astype(np.float32),
        "k": (rng.standard_normal((1100, 900)) / 33).astype(np.float32),
    }
    path = tmp_path / "threads.sqlite"
    with sqlite_tensor.Store(path, block_rows=64, block_cols=48, page_blocks=4) as store:
        store.add_model("m", arrays, layers=LAYERS)
    return path, arrays


def kernel_workers() -> set[int]:
    """Thread ids of the kernels' workers (named st-kernel)."""
    found = set()
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                if f.read().strip() == "st-kernel":
                    found.add(int(t))
        except FileNotFoundError:
            continue
    return found


def cpu_ticks(tids) -> int:
    """User + system clock ticks used so far by those threads of this process."""
    total = 0
    for t in tids:
        try:
            with open(f"/proc/self/task/{t}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_workers_are_kept_and_sleep_when_idle(threads, model):
    path, arrays = model
    x = np.random.default_rng(1).standard_normal(1030).astype(np.float32)
    threads.set_threads(3)
    with sqlite_tensor.Store(path) as store:
        assert_matches(store.predict("m", x), LAYERS, arrays, x)
        workers = kernel_workers()
        assert len(workers) >= 2  # 3 threads: the caller and two workers
        for _ in range(20):
            assert_matches(store.predict("m", x), LAYERS, arrays, x)
        assert kernel_workers() == workers  # the same workers served every call
    before = cpu_ticks(workers)
    time.sleep(0.5)
    assert cpu_ticks(workers) - before <= 5  # idle workers sleep (50 would be a core)


def test_concurrent_callers_share_or_start_their_own(threads, model):
    """Four Python threads run threaded layers at once: one gets the workers, the others
    start threads of their own for their call; every answer is right and none hangs."""
    path, arrays = model
    threads.set_threads(2)
    barrier = threading.Barrier(4)

    def work(seed):
        rng = np.random.default_rng(seed)
        with sqlite_tensor.Store(path) as store:
            barrier.wait()
            for k in range(10):
                x = rng.standard_normal((k % 3 + 1, 1030)).astype(np.float32)
                assert_matches(store.predict("m", x), LAYERS, arrays, x)

    run_threads(work, range(4), timeout=60)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_starts_its_own_workers(threads, model):
    path, arrays = model
    x = np.random.default_rng(2).standard_normal(1030).astype(np.float32)
    threads.set_threads(2)
    with sqlite_tensor.Store(path) as store:
        want = store.predict("m", x)  # the parent's workers exist now
    pid = os.fork()
    if pid == 0:  # the child: only this thread came along
        code = 1
        try:
            with closing(sqlite_tensor.connect(path)) as conn:
                got = sqlite_tensor.Store(conn).predict("m", x)
                code = 0 if np.allclose(got, want, rtol=1e-5, atol=1e-5) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in a threaded layer")
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_workers_are_kept_off_the_callers_cpu(threads, model):
    """Woken by the caller, a worker would be queued on the caller's CPU and wait there for
    it: the workers may run anywhere but on the CPU the caller was last seen on."""
    path, arrays = model
    x = np.random.default_rng(3).standard_normal(1030).astype(np.float32)
    threads.set_threads(2)
    allowed = os.sched_getaffinity(0)
    with sqlite_tensor.Store(path) as store:
        assert_matches(store.predict("m", x), LAYERS, arrays, x)
    workers = kernel_workers()
    assert workers
    for tid in workers:
        mask = os.sched_getaffinity(tid)
        assert mask < allowed and len(allowed - mask) == 1, (mask, allowed)
