"""The stock sqlite3 shell: `.load` the file with and without its suffix, in an environment
with nothing but PATH (no Python set-up at all), and query a store built from Python."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import SMALL, random_array

import sqlite_tensor
from sqlite_tensor.testing.families import text_classifier_family

LOADABLE = sqlite_tensor.loadable_path()
WITHOUT_SUFFIX = LOADABLE.removesuffix(".so")


def shell(sqlite3_shell, env, db, *commands, stdin=None):
    """Run the shell on db with commands as arguments; (returncode, stdout, stderr)."""
    result = subprocess.run(
        [sqlite3_shell, "-batch", str(db), *commands],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def built(db_path):
    """A store built from Python; returns (path, models)."""
    models = text_classifier_family(3, vocab=30, dim=6, hidden=4)
    models["mixed"] = {
        "i8": np.arange(-6, 6, dtype=np.int8).reshape(3, 4),
        "scalar": np.array(2.5, np.float64),
    }
    with sqlite_tensor.Store(db_path, **SMALL) as store:
        for name, tensors in models.items():
            store.add_model(name, tensors)
    return db_path, models


@pytest.mark.parametrize("load", [WITHOUT_SUFFIX, LOADABLE], ids=["no-suffix", "with-suffix"])
def test_shell_queries_a_store_built_from_python(sqlite3_shell, clean_env, built, load):
    path, models = built
    rc, out, err = shell(
        sqlite3_shell,
        clean_env,
        path,
        f".load {load}",
        "SELECT tensor_version();",
        "SELECT models, tensors, logical_bytes, physical_bytes, distinct_blocks, pages"
        " FROM tensor_stats('tensors');",
        "SELECT model, tensor, shape, dtype, nbytes FROM tensors WHERE model = 'mixed';",
        "SELECT hex(tensor_blob('tensors', 'base', 'fc1.bias'));",
        "SELECT hex(data) FROM tensors WHERE model = 'mixed' AND tensor = 'i8';",
        "SELECT count(*) FROM tensor_pages('tensors');",
        "SELECT model, private_bytes FROM tensor_models('tensors');",
    )
    assert rc == 0, err
    assert err == ""
    lines = out.splitlines()
    with sqlite_tensor.Store(path) as store:
        s = store.stats()
        model_rows = store.model_stats()
    assert lines[0] == sqlite_tensor.__version__
    assert lines[1] == "|".join(
        str(s[k])
        for k in (
            "models",
            "tensors",
            "logical_bytes",
            "physical_bytes",
            "distinct_blocks",
            "pages",
        )
    )
    assert lines[2:4] == ["mixed|i8|[3, 4]|int8|12", "mixed|scalar|[]|float64|8"]
    assert lines[4] == models["base"]["fc1.bias"].tobytes().hex().upper()
    assert lines[5] == models["mixed"]["i8"].tobytes().hex().upper()
    assert lines[6] == str(s["pages"])
    assert lines[7:] == [f"{r['model']}|{r['private_bytes']}" for r in model_rows]


def test_shell_query_plan_uses_the_index(sqlite3_shell, clean_env, built):
    path, _ = built
    rc, out, err = shell(
        sqlite3_shell,
        clean_env,
        path,
        f".load {WITHOUT_SUFFIX}",
        "EXPLAIN QUERY PLAN SELECT tensor FROM tensors WHERE model = 'base';",
    )
    assert rc == 0, err
    assert "SCAN tensors VIRTUAL TABLE INDEX 1:" in out


@pytest.mark.parametrize(
    "sql, message",
    [
        (
            "SELECT tensor_blob('tensors', 'base', 'fc3.weight');",
            "tensor_blob: no tensor 'fc3.weight' in model 'base' of store 'tensors'",
        ),
        (
            "SELECT tensor_blob('tensors', 'nobody', 'fc1.weight');",
            "tensor_blob: no model 'nobody' in store 'tensors'",
        ),
        (
            "SELECT tensor_blob('tensors', NULL, 'fc1.weight');",
            "tensor_blob: argument 2 (model) must be text, got NULL",
        ),
        (
            "SELECT * FROM tensor_stats;",
            "tensor_stats: needs a store name, as in SELECT * FROM tensor_stats('tensors')",
        ),
        ("SELECT * FROM tensor_models('nope');", "tensor_models: no tensor store named 'nope'"),
        (
            "CREATE VIRTUAL TABLE broken USING tensor_store(block_rows=0);",
            "tensor_store: block_rows must be from 1 to 65536, got 0",
        ),
        (
            "CREATE VIRTUAL TABLE broken USING tensor_store(block_size=64);",
            "tensor_store: unknown option 'block_size'; options are block_rows, block_cols, page_blocks",
        ),
        ("INSERT INTO tensors(model) VALUES ('x');", "table tensors may not be modified"),
    ],
)
def test_shell_error_messages(sqlite3_shell, clean_env, built, sql, message):
    path, _ = built
    rc, out, err = shell(sqlite3_shell, clean_env, path, f".load {WITHOUT_SUFFIX}", sql)
    assert rc != 0
    assert message in err
    assert out == ""


def test_shell_load_of_a_wrong_path(sqlite3_shell, clean_env, tmp_path):
    rc, out, err = shell(
        sqlite3_shell, clean_env, tmp_path / "x.sqlite", f".load {tmp_path / 'nonexistent'}"
    )
    assert rc != 0 and "nonexistent" in err


def test_shell_creates_a_store_that_python_fills(sqlite3_shell, clean_env, db_path, rng):
    rc, out, err = shell(
        sqlite3_shell,
        clean_env,
        db_path,
        f".load {WITHOUT_SUFFIX}",
        "CREATE VIRTUAL TABLE made_in_shell USING tensor_store(block_rows=4, block_cols=3,"
        " page_blocks=5);",
        "SELECT block_rows, block_cols, page_blocks, models FROM tensor_stats('made_in_shell');",
    )
    assert rc == 0, err
    assert out.splitlines() == ["4|3|5|0"]
    w = random_array(rng, (9, 7), np.float32)
    with sqlite_tensor.Store(db_path, "made_in_shell") as store:
        assert (store.block_rows, store.block_cols, store.page_blocks) == (4, 3, 5)
        store.add_model("m", {"w": w})
    rc, out, err = shell(
        sqlite3_shell,
        clean_env,
        db_path,
        f".load {WITHOUT_SUFFIX}",
        "SELECT hex(tensor_blob('made_in_shell', 'm', 'w'));",
    )
    assert rc == 0, err
    assert out.strip() == w.tobytes().hex().upper()


def test_shell_drop_table_removes_the_shadow_tables(sqlite3_shell, clean_env, built):
    path, _ = built
    rc, out, err = shell(
        sqlite3_shell,
        clean_env,
        path,
        f".load {WITHOUT_SUFFIX}",
        "CREATE TABLE unrelated(x);",
        "DROP TABLE tensors;",
        "SELECT name FROM sqlite_schema ORDER BY name;",
    )
    assert rc == 0, err
    assert out.splitlines() == ["unrelated"]
    conn = sqlite_tensor.connect(path)
    try:
        assert [n for (n,) in conn.execute("SELECT name FROM sqlite_schema")] == ["unrelated"]
    finally:
        conn.close()


def test_shell_reads_while_python_holds_the_database(sqlite3_shell, clean_env, built):
    """WAL: the shell reads a store a Python connection has open (and a model added since)."""
    path, models = built
    with sqlite_tensor.Store(path) as store:
        store.add_model("late", {"w": np.full((2, 2), 7, np.int16)})
        store.conn.execute("BEGIN")  # a reader in Python does not block the shell
        store.models()
        rc, out, err = shell(
            sqlite3_shell,
            clean_env,
            path,
            f".load {WITHOUT_SUFFIX}",
            "SELECT hex(data) FROM tensors WHERE model = 'late';",
        )
        store.conn.execute("COMMIT")
    assert rc == 0, err
    assert out.strip() == np.full((2, 2), 7, np.int16).tobytes().hex().upper()


def test_shell_script_on_stdin(sqlite3_shell, clean_env, built):
    path, models = built
    script = (
        f".load {WITHOUT_SUFFIX}\n.headers on\n"
        "SELECT model, count(*) AS n FROM tensors GROUP BY model ORDER BY model;\n"
    )
    rc, out, err = shell(sqlite3_shell, clean_env, path, stdin=script)
    assert rc == 0, err
    assert out.splitlines() == ["model|n"] + [f"{m}|{len(models[m])}" for m in sorted(models)]
