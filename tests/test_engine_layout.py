"""The engine's layout (issue #12): its chapters compile in any include order, because every
type or function one chapter uses of another is declared in cython/engine.pxd; module
registration and the Python API keep their names."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CYTHON = ROOT / "cython"


def includes(text: str) -> list[str]:
    return re.findall(r'^include "([^"]+)"$', text, re.M)


def compile_in_order(tmp_path: Path, order: list[str]) -> subprocess.CompletedProcess:
    """Cython (to C only) engine.pyx with its include lines in `order`."""
    tree = tmp_path / "cython"
    shutil.copytree(CYTHON, tree, ignore=shutil.ignore_patterns("*.c", "*.so", "*.h~"))
    for c_file in (CYTHON / "c").glob("*.c"):  # the C files are copied too (not compiled)
        shutil.copy(c_file, tree / "c" / c_file.name)
    text = (CYTHON / "engine.pyx").read_text()
    first = text.index('include "')
    body = re.sub(r'^include "[^"]+"\n', "", text, flags=re.M)
    new = body[:first] + "".join(f'include "{n}"\n' for n in order) + body[first:]
    (tree / "engine.pyx").write_text(new)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cython",
            "-3",
            "-I",
            str(tree),
            str(tree / "engine.pyx"),
            "-o",
            str(tmp_path / "engine.c"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def orders():
    names = includes((CYTHON / "engine.pyx").read_text())
    # cache/'s chapters keep their own relative order (that part is the pool's to arrange):
    # they move as one block among the others.
    cache = [n for n in names if n.startswith("cache/")]
    rest = [n for n in names if not n.startswith("cache/")]
    units = [[n] for n in rest] + [cache]
    yield "reversed", [n for u in reversed(units) for n in u]
    shuffled = list(units)
    random.Random(12).shuffle(shuffled)
    yield "shuffled", [n for u in shuffled for n in u]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs the build tools")
@pytest.mark.parametrize(
    "label,order", list(orders()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_chapters_compile_in_any_order(tmp_path, label, order):
    pytest.importorskip("Cython")
    names = includes((CYTHON / "engine.pyx").read_text())
    assert sorted(order) == sorted(names) and order != names
    run = compile_in_order(tmp_path, order)
    assert run.returncode == 0, f"{label} order {order} fails:\n{run.stderr[-3000:]}"


def test_module_pxd_is_the_interface():
    """Cython finds a module's .pxd by the module's name; the shim must include engine.pxd
    (else the interface would silently not apply to the built module)."""
    shim = (CYTHON / "sqlite_tensor._engine.pxd").read_text()
    assert re.search(r'^include "engine.pxd"$', shim, re.M)
    setup = (ROOT / "setup.py").read_text()
    assert 'ENGINE = "sqlite_tensor._engine"' in setup


def test_no_c_logic_in_string_blocks_outside_cache():
    """C functions live in cython/c/*.c with their C tests; a Cython string block may hold
    data or a one-line macro, not a function body."""
    for path in [
        CYTHON / "engine.pyx",
        *CYTHON.glob("store/*.pxi"),
        *CYTHON.glob("inference/*.pxi"),
        *CYTHON.glob("tokenize/*.pxi"),
        CYTHON / "python_api.pxi",
        CYTHON / "engine.pxd",
    ]:
        text = path.read_text()
        for block in re.findall(r'cdef extern from \*[^:]*:\n\s*"""([\s\S]*?)"""', text):
            assert not re.search(r"\)\s*\{", block), (
                f"C function body in a string block of {path.name}"
            )


def test_module_registration_failure_names_the_module():
    """Module registration is one table; a failure names the module (checked in the source:
    SQLite gives no way to make create_module fail on demand)."""
    text = (CYTHON / "engine.pyx").read_text()
    assert "cannot register virtual table module %s" in text
    assert text.count("sqlite3_create_module_v2(") == 1
