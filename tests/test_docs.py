"""Every example in docs/ runs.

- ```sql blocks run in the real sqlite3 shell (`sqlite3 -header`, extension loaded) on a
  fresh copy of the demo database. A following ```output block must equal what the
  shell printed; a following ```error block must be the error it reported.
- ```python blocks of a page run in order, in one namespace per page, in a folder holding
  demo.sqlite (a copy, so examples may change it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import sqlite_tensor
from sqlite_tensor.testing import demo

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
SHELL = shutil.which("sqlite3")


def blocks(page: Path):
    """(kind, text, expectation kind, expectation text) for each code block of a page."""
    found = [(m.group(1), m.group(2)) for m in BLOCK.finditer(page.read_text())]
    for i, (kind, text) in enumerate(found):
        nxt = found[i + 1] if i + 1 < len(found) else (None, None)
        if kind in ("sql", "python"):
            expect = nxt if nxt[0] in ("output", "error") else (None, None)
            yield kind, text, expect[0], expect[1]


SQL_CASES = [
    pytest.param(text, ek, et, id=f"{p.name}:{n}")
    for p in sorted(DOCS.glob("*.md"))
    for n, (kind, text, ek, et) in enumerate(blocks(p))
    if kind == "sql"
]
PY_PAGES = [p for p in sorted(DOCS.glob("*.md")) if any(k == "python" for k, *_ in blocks(p))]


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "demo.sqlite"
    demo.build(str(path))
    return path


def test_docs_have_examples():
    assert len(SQL_CASES) >= 10


@pytest.mark.skipif(SHELL is None, reason="no sqlite3 shell")
@pytest.mark.parametrize("sql, expect_kind, expected", SQL_CASES)
def test_sql_example(sql, expect_kind, expected, demo_db, tmp_path):
    db = tmp_path / "demo.sqlite"
    shutil.copy(demo_db, db)
    script = f".bail on\n.load {sqlite_tensor.loadable_path()}\n{sql}"
    out = subprocess.run(
        [SHELL, "-header", str(db)],
        input=script,
        text=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    if expect_kind == "error":
        assert out.returncode != 0
        assert expected.strip() in out.stderr, out.stderr
        return
    assert out.returncode == 0 and not out.stderr, out.stderr
    if expect_kind == "output":
        assert out.stdout == expected


@pytest.mark.parametrize("page", PY_PAGES, ids=lambda p: p.name)
def test_python_examples(page, demo_db, tmp_path, monkeypatch):
    shutil.copy(demo_db, tmp_path / "demo.sqlite")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for kind, text, _expect_kind, _expected in blocks(page):
        if kind != "python":
            continue
        exec(compile(text, f"{page.name}", "exec"), namespace)
