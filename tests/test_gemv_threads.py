"""Threads for batch-1 dense layers (issue #17): a float32 layer for one input goes parallel
only where one against N threads was measured to pay on this CPU (st_gemv_threads in
cython/c/st_gemv.c; ST_GEMV_PARALLEL=always / never skips the measurement). The choice
must never change the answer beyond float rounding, and set_threads(1) must still mean one
thread."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from reference_model import assert_matches

import sqlite_tensor
from sqlite_tensor import _engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def layers_store(tmp_path):
    """Two float32 layers above the parallel threshold (2**20 multiply-adds): one stored
    out x in, one in x out, in odd tiles (edge tiles on both sides)."""
    rng = np.random.default_rng(17)
    arrays = {
        "w": (rng.standard_normal((1100, 1030)) / 32).astype(np.float32),
        "b": rng.standard_normal(1100).astype(np.float32),
        "k": (rng.standard_normal((1100, 1000)) / 33).astype(np.float32),
    }
    layers = [
        {"op": "dense", "weight": "w", "bias": "b", "activation": "relu"},
        {"op": "dense", "weight": "k", "transpose": True},
    ]
    path = tmp_path / "gemv_threads.sqlite"
    with sqlite_tensor.Store(path, block_rows=96, block_cols=80, page_blocks=4) as store:
        store.add_model("m", arrays, layers=layers)
    return path, arrays, layers


@pytest.mark.parametrize("mode", ["auto", "always", "never"])
def test_thread_choice_never_changes_the_answer(layers_store, monkeypatch, mode):
    path, arrays, layers = layers_store
    if mode == "auto":
        monkeypatch.delenv("ST_GEMV_PARALLEL", raising=False)
    else:
        monkeypatch.setenv("ST_GEMV_PARALLEL", mode)
    before = _engine.get_threads()
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(1030).astype(np.float32) for _ in range(3)]
    try:
        with sqlite_tensor.Store(path) as store:
            _engine.set_threads(1)
            one = [store.predict("m", x) for x in xs]
            for n in (2, 3):
                _engine.set_threads(n)
                for x, want in zip(xs, one):
                    got = store.predict("m", x)
                    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
                    assert_matches(got, layers, arrays, x)
    finally:
        _engine.set_threads(before)


def test_set_threads_1_forces_one_thread():
    """In a fresh process (no workers yet), with batch-1 layers forced parallel wherever
    allowed: set_threads(1) starts no worker; set_threads(2) then does (the control)."""
    code = textwrap.dedent("""
        import numpy as np, sqlite_tensor
        from sqlite_tensor import _engine
        rng = np.random.default_rng(0)
        conn = sqlite_tensor.connect(":memory:")
        store = sqlite_tensor.Store(conn, block_rows=128, block_cols=128)
        store.add_model("m", {"w": rng.standard_normal((2048, 2048), dtype=np.float32)},
                        layers=[{"op": "dense", "weight": "w"}])
        x = rng.standard_normal(2048, dtype=np.float32)
        _engine.set_threads(1)
        a = store.predict("m", x)
        print(_engine._kernel_workers())
        _engine.set_threads(2)
        b = store.predict("m", x)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)
        print(_engine._kernel_workers())
    """)
    env = dict(os.environ, ST_GEMV_PARALLEL="always", PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1"]
