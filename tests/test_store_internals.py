"""The store package's boundaries, read from the source (no store is opened):

- nothing outside sqlite_tensor/store/ uses an underscore name of Store (the package's own
  modules and the benchmarks go through Store.writer(); tests through public names, and
  the one documented test hook, _hash_block);
- every package directory is a package setuptools finds, so a wheel holds it;
- the writer seam ends with its transaction.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import setuptools

from sqlite_tensor import Store, TensorStoreError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sqlite_tensor"
STORE_PACKAGE = PACKAGE / "store"
# Store's documented test hook: a test may replace the block hash (collisions must never merge)
TEST_HOOKS = {"_hash_block"}


def store_private_names() -> set[str]:
    """Underscore names of Store: its methods and attributes (class and instance)."""
    names = {n for n in dir(Store) if n.startswith("_") and not n.startswith("__")}
    for path in STORE_PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                names.add(node.attr)
    return names


def private_uses(path: Path, names: set[str]) -> list[str]:
    """`x._name` (x not self) and the string '_name' (setattr, monkeypatch) in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in names
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and node.value in names:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return found


def test_the_scan_finds_private_uses(tmp_path, monkeypatch):
    names = store_private_names()
    # the seam's own targets: if these were not found, the scan below would prove nothing
    assert {
        "_t",
        "_writing",
        "_compact_pages",
        "_model_id",
        "_require_model",
        "_write_layout",
        "_callers_mode",
        "_hash_block",
    } <= names
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    sample = tmp_path / "sample.py"
    sample.write_text(
        "store._t.blocks\nmonkeypatch.setattr(store, '_writing', f)\nself._t = 1\nstore.t\n"
    )
    assert private_uses(sample, names) == ["sample.py:1: ._t", "sample.py:2: '_writing'"]


@pytest.mark.parametrize("where", ["sqlite_tensor", "asv_bench", "tests"])
def test_nothing_outside_store_uses_its_private_names(where):
    names = store_private_names()
    if where == "tests":
        names -= TEST_HOOKS
    files = [
        p
        for p in (ROOT / where).rglob("*.py")
        if STORE_PACKAGE not in p.parents and p.name != Path(__file__).name
    ]
    assert files
    found = [use for p in files for use in private_uses(p, names)]
    assert found == [], "use the StoreWriter seam (Store.writer()) instead:\n" + "\n".join(found)


def test_every_package_directory_ships():
    """A directory of modules without __init__.py, or outside pyproject's include, would be
    left out of the wheel (pyproject.toml: [tool.setuptools.packages.find])."""
    found = set(setuptools.find_packages(str(ROOT), include=["sqlite_tensor", "sqlite_tensor.*"]))
    dirs = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert dirs - found == set()
    assert {
        "sqlite_tensor",
        "sqlite_tensor.store",
        "sqlite_tensor.dedup",
        "sqlite_tensor.testing",
    } <= found


def test_writer_is_one_transaction_and_ends_with_it(tmp_path):
    with Store(str(tmp_path / "w.sqlite"), block_rows=2, block_cols=2, page_blocks=2) as store:
        store.add_model("m", {"w": np.arange(16, dtype=np.float32).reshape(4, 4)})
        layout = store.page_layout()
        with store.writer() as w:
            assert store.conn.in_transaction
            assert w.require_model("m") == w.model_id("m") and w.model_id("x") is None
            assert w.write_layout([b for page in layout for b in [page[::-1]]]) == len(layout)
        assert not store.conn.in_transaction
        assert store.verify() == []
        with pytest.raises(TensorStoreError, match="transaction has ended"):
            w.model_id("m")
        before = store.page_layout()
        with pytest.raises(ZeroDivisionError):
            with store.writer() as w:
                w.write_layout([b for page in before for b in [page[::-1]]])
                1 / 0
        assert store.page_layout() == before and not store.conn.in_transaction


def test_deprecated_aliases_warn_and_give_the_moved_objects():
    """The old paths docs named (families, trained, dedup.compare, cache.family_trace,
    packing.family_instance) still work, with a DeprecationWarning naming the new one."""
    code = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import sqlite_tensor.families as f, sqlite_tensor.trained as t
    from sqlite_tensor.dedup import compare
    from sqlite_tensor import cache, packing, testing
    trace = cache.family_trace(models=2, pages_per_model=2, requests=3)
    groups = packing.family_instance(2, 10, seed=1)
from sqlite_tensor.testing import dedup_compare, families, trained, workloads
assert f is families and t is trained and compare is dedup_compare
assert [list(x) for x in trace[:1]] == [list(x) for x in workloads.family_trace(
    models=2, pages_per_model=2, requests=3)[:1]]
assert groups == workloads.family_instance(2, 10, seed=1)
print(sorted(str(w.message).split()[0] for w in caught
             if issubclass(w.category, DeprecationWarning)))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == str(
        sorted(
            [
                "sqlite_tensor.families",
                "sqlite_tensor.trained",
                "sqlite_tensor.dedup.compare",
                "sqlite_tensor.cache.family_trace",
                "sqlite_tensor.packing.family_instance",
            ]
        )
    )
