"""The C unit tests of cython/c (tests/c), run by `make c-test`: each C file alone with
assert-style checks, under AddressSanitizer + UBSan, and st_parallel_for and the arena
under ThreadSanitizer."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("make") is None, reason="needs gcc and make"
)
def test_c_units():
    # The C tests bring their own sanitizers: a runtime preloaded by `make asan-test`
    # (tools/sanitize.sh) must not reach them (TSan cannot run under a preloaded ASan).
    env = {
        k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.endswith("SAN_OPTIONS")
    }
    run = subprocess.run(
        ["make", "-s", "c-test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "C_TEST_CC": "gcc"},
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "c-test: all passed" in run.stdout
    for name in (
        "half",
        "sign",
        "gemv",
        "arena",
        "parallel",
        "fork",
        "page",
        "guard",
        "memo",
        "wordpiece",
        "encoder",
    ):
        assert run.stdout.count(f"test_st_{name}: ok") >= 2, run.stdout  # plain and ASan
