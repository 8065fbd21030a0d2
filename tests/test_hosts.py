"""Hosts: apsw (the primary API), Python's standard sqlite3 module (this interpreter's and
Debian's /usr/bin/python3), and several connections reading from threads."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import apsw
import numpy as np
import pytest
from conftest import SMALL, random_array, same, tamperable

import sqlite_tensor
from sqlite_tensor import TensorStoreError
from sqlite_tensor.connection import is_loaded
from sqlite_tensor.testing.families import text_classifier_family

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def family_db(db_path):
    """A file database holding a small family; returns (path, models)."""
    models = text_classifier_family(3, vocab=40, dim=9, hidden=5)
    with sqlite_tensor.Store(db_path, **SMALL) as store:
        for name, tensors in models.items():
            store.add_model(name, tensors)
    return db_path, models


# -- apsw ----------------------------------------------------------------------------------------


def test_connect_sets_up_a_fresh_file(db_path):
    conn = sqlite_tensor.connect(db_path)
    try:
        assert conn.execute("PRAGMA page_size").get == 65536
        assert conn.execute("PRAGMA journal_mode").get == "wal"
        assert is_loaded(conn)
    finally:
        conn.close()
    conn = sqlite_tensor.connect(db_path, page_size=4096, wal=False)  # not fresh: unchanged
    try:
        assert conn.execute("PRAGMA page_size").get == 65536
    finally:
        conn.close()


def test_loading_twice_into_one_connection_is_harmless(family_db):
    path, models = family_db
    conn = apsw.Connection(str(path))
    try:
        assert not is_loaded(conn)
        assert sqlite_tensor.load(conn) is conn
        assert sqlite_tensor.load(conn) is conn
        # load() leaves the C API as it found it (off: apsw's default); SQL's is off regardless
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_tensor.loadable_path())  # directly, a third time
        assert is_loaded(conn)
        store = sqlite_tensor.Store(conn)  # already loaded: not loaded again
        for name, arr in models["base"].items():
            assert same(store.get_tensor("base", name), arr)
        assert conn.execute("SELECT models FROM tensor_stats('tensors')").get == 3
    finally:
        conn.close()


def test_store_loads_the_extension_into_a_plain_apsw_connection(family_db):
    path, models = family_db
    conn = apsw.Connection(str(path))
    try:
        store = sqlite_tensor.Store(conn)
        assert is_loaded(conn)
        assert store.models() == list(models)
        store.close()  # not its connection: left open
        assert conn.execute("SELECT count(*) FROM tensors").get == 15
    finally:
        conn.close()


def test_read_only_connection(family_db):
    path, models = family_db
    conn = sqlite_tensor.connect(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        store = sqlite_tensor.Store(conn)
        for name, arr in models["tuned-2"].items():
            assert same(store.get_tensor("tuned-2", name), arr)
        assert store.verify() == []
        with pytest.raises(apsw.ReadOnlyError):
            store.add_model("new", {"w": np.ones(3)})
        assert store.models() == list(models)
    finally:
        conn.close()


def test_many_connections_and_loads(family_db):
    path, models = family_db
    conns = [sqlite_tensor.connect(path) for _ in range(8)]
    try:
        for conn in conns:
            assert (
                conn.execute("SELECT tensor_blob('tensors', 'base', 'fc1.bias')").get
                == models["base"]["fc1.bias"].tobytes()
            )
    finally:
        for conn in conns:
            conn.close()


def test_threads_reading_concurrently(family_db):
    path, models = family_db
    errors = []
    barrier = threading.Barrier(4)

    def reader(i):
        try:
            with sqlite_tensor.Store(path) as store:
                barrier.wait()
                for round_ in range(15):
                    model = list(models)[(i + round_) % len(models)]
                    for name, arr in models[model].items():
                        if not same(store.get_tensor(model, name), arr):
                            errors.append((i, model, name))
                    sql = store.conn.execute(
                        "SELECT data FROM tensors WHERE model = ? AND tensor = 'embedding.weight'",
                        (model,),
                    ).get
                    if sql != models[model]["embedding.weight"].tobytes():
                        errors.append((i, model, "sql"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_readers_see_a_writer_commit(family_db, rng):
    path, models = family_db
    writer = sqlite_tensor.Store(path)
    reader = sqlite_tensor.Store(path)
    try:
        new = {"w": random_array(rng, (5, 5), np.float32)}
        reader.conn.execute("BEGIN")
        assert reader.models() == list(models)  # a read transaction: a snapshot
        writer.add_model("new", new)
        assert "new" not in reader.models()
        reader.conn.execute("COMMIT")
        assert same(reader.get_tensor("new", "w"), new["w"])
    finally:
        writer.close()
        reader.close()


# -- Python's sqlite3 module ---------------------------------------------------------------------


@pytest.mark.skipif(
    hasattr(sqlite3.Connection, "enable_load_extension"),
    reason="this Python's sqlite3 can load extensions",
)
def test_stdlib_sqlite3_without_extension_loading_points_to_apsw():
    conn = sqlite3.connect(":memory:")
    try:
        with pytest.raises(TensorStoreError) as info:
            sqlite_tensor.load(conn)
        message = str(info.value)
        assert "built without extension loading" in message
        assert "apsw" in message and "sqlite_tensor.connect" in message
    finally:
        conn.close()


def run_python(python: str, code: str, *, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else {"PATH": os.environ["PATH"]},
    )


def system_python_with_loading():
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is missing")
    probe = run_python(
        SYSTEM_PYTHON, "import sqlite3; assert hasattr(sqlite3.Connection, 'enable_load_extension')"
    )
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON}'s sqlite3 cannot load extensions")
    return SYSTEM_PYTHON


def test_system_python_sqlite3_loads_the_extension(family_db):
    python = system_python_with_loading()
    path, models = family_db
    code = f"""
        import sqlite3
        conn = sqlite3.connect({str(path)!r})
        conn.enable_load_extension(True)
        conn.load_extension({sqlite_tensor.loadable_path()!r})
        conn.enable_load_extension(False)
        print(conn.execute("SELECT models, tensors, logical_bytes, physical_bytes, distinct_blocks,"
                           " pages FROM tensor_stats('tensors')").fetchone())
        print(conn.execute("SELECT hex(tensor_blob('tensors', 'base', 'fc1.weight'))").fetchone()[0])
        print(conn.execute("SELECT hex(data) FROM tensors WHERE model = 'tuned-2'"
                           " AND tensor = 'embedding.weight'").fetchone()[0])
        print(conn.execute("SELECT count(*) FROM tensor_models('tensors')").fetchone()[0])
        try:
            conn.execute("SELECT tensor_blob('tensors', 'base', 'nope')").fetchone()
        except sqlite3.Error as e:
            print("error:", e)
    """
    result = run_python(python, code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    with sqlite_tensor.Store(path) as store:
        s = store.stats()
    assert lines[0] == str(
        (
            s["models"],
            s["tensors"],
            s["logical_bytes"],
            s["physical_bytes"],
            s["distinct_blocks"],
            s["pages"],
        )
    )
    assert lines[1] == models["base"]["fc1.weight"].tobytes().hex().upper()
    assert lines[2] == models["tuned-2"]["embedding.weight"].tobytes().hex().upper()
    assert lines[3] == "3"
    assert lines[4] == "error: tensor_blob: no tensor 'nope' in model 'base' of store 'tensors'"


def test_system_python_through_sqlite_tensor_load(family_db, tmp_path):
    """sqlite_tensor.load() itself with a sqlite3 module that can load extensions: only the
    connection module is needed, so load it by path (the system Python has no apsw)."""
    python = system_python_with_loading()
    path, models = family_db
    stub = tmp_path / "stub"
    (stub / "apsw").mkdir(parents=True)
    (stub / "apsw" / "__init__.py").write_text(
        "class Connection: pass\nclass CorruptError(Exception): pass\n"
    )
    connection_py = Path(sqlite_tensor.__file__).with_name("connection.py")
    errors_py = Path(sqlite_tensor.__file__).with_name("errors.py")
    pkg = stub / "sqlite_tensor"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "connection.py").write_text(connection_py.read_text())
    (pkg / "errors.py").write_text(errors_py.read_text())
    # the copy must find the real loadable file
    code = f"""
        import sqlite3, sys
        sys.path.insert(0, {str(stub)!r})
        from sqlite_tensor import connection
        connection._PACKAGE_DIR = connection.Path({str(Path(sqlite_tensor.loadable_path()).parent)!r})
        conn = connection.load(sqlite3.connect({str(path)!r}))
        print(conn.execute("SELECT tensor_version()").fetchone()[0])
        print(conn.execute("SELECT count(*) FROM tensors").fetchone()[0])
        try:
            conn.execute("SELECT load_extension('x')")
        except sqlite3.Error as e:
            print("disabled again:", "not authorized" in str(e))
    """
    result = run_python(python, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [sqlite_tensor.__version__, "15", "disabled again: True"]


SECOND_LIBRARY = """
    import ctypes, ctypes.util, sys

    def system_sqlite(db_path, sql):
        # the system libsqlite3, a SQLite library other than apsw's, driven through ctypes
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
        lib.sqlite3_column_text.restype = ctypes.c_char_p
        db, stmt, err = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_char_p()
        assert lib.sqlite3_open(db_path.encode(), ctypes.byref(db)) == 0
        lib.sqlite3_enable_load_extension(db, 1)
        rc = lib.sqlite3_load_extension(db, sqlite_tensor.loadable_path().encode(), None,
                                        ctypes.byref(err))
        assert rc == 0, err.value
        assert lib.sqlite3_prepare_v2(db, sql.encode(), -1, ctypes.byref(stmt), None) == 0
        assert lib.sqlite3_step(stmt) == 100  # SQLITE_ROW
        return lib.sqlite3_column_text(stmt, 0).decode()
"""


@pytest.mark.parametrize("first", ["apsw", "system"])
def test_two_sqlite_libraries_in_one_process(family_db, first):
    """apsw's SQLite and the system libsqlite3 in one process, either loading first: each
    gets its own engine (cython/loader.c), both answer, and Store works on apsw."""
    if ctypes_util_find_sqlite() is None:
        pytest.skip("no system libsqlite3")
    path, models = family_db
    sql = "SELECT hex(tensor_blob('tensors', 'base', 'fc1.bias'))"
    code = (
        SECOND_LIBRARY
        + f"""
    import sqlite_tensor
    def via_apsw():
        with sqlite_tensor.Store({str(path)!r}) as store:
            print(store.get_tensor("base", "fc1.bias").tobytes().hex().upper())
            print(store.conn.execute({sql!r}).get)
    if {first!r} == "apsw":
        via_apsw()
    print(system_sqlite({str(path)!r}, {sql!r}))
    via_apsw()
    """
    )
    result = run_python(sys.executable, code, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    want = models["base"]["fc1.bias"].tobytes().hex().upper()
    assert result.stdout.split() == [want] * (5 if first == "apsw" else 3)


def ctypes_util_find_sqlite():
    import ctypes.util

    return ctypes.util.find_library("sqlite3")


# -- pysqlite3 (pysqlite3-binary: a SQLite that loads extensions on any Python) ------------------


def test_pysqlite3_through_sqlite_tensor_load_then_a_store(family_db):
    """The issue's case: the extension loaded into pysqlite3 first, then a Store (apsw) in
    the same process; and a subclass of pysqlite3's Connection is accepted too."""
    pytest.importorskip("pysqlite3")
    path, models = family_db
    code = f"""
        import pysqlite3.dbapi2 as pysqlite3
        import sqlite_tensor

        class Mine(pysqlite3.Connection):
            pass

        conn = sqlite_tensor.load(pysqlite3.connect({str(path)!r}, factory=Mine))
        print(conn.execute("SELECT hex(data) FROM tensors WHERE model = 'tuned-2'"
                           " AND tensor = 'fc1.weight'").fetchone()[0])
        print(conn.execute("SELECT models FROM tensor_stats('tensors')").fetchone()[0])
        with sqlite_tensor.Store({str(path)!r}) as store:
            print(store.get_tensor("tuned-2", "fc1.weight").tobytes().hex().upper())
        print(conn.execute("SELECT count(*) FROM tensors").fetchone()[0])
        try:
            conn.execute("SELECT load_extension('x')")
        except pysqlite3.Error as e:
            print("disabled again:", "not authorized" in str(e))
    """
    result = run_python(sys.executable, code, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    want = models["tuned-2"]["fc1.weight"].tobytes().hex().upper()
    assert result.stdout.splitlines() == [want, "3", want, "15", "disabled again: True"]


def test_load_rejects_other_objects_by_name():
    with pytest.raises(TypeError, match=r"got object \(from module builtins\); pysqlite3"):
        sqlite_tensor.load(object())


def test_select_star_and_reports_never_read_tensor_bytes(family_db):
    """What tools run unasked (SELECT *, the report tables) stays cheap: with every page BLOB
    zeroed, those still answer; only asking for `data` reads pages (and finds them bad)."""
    path, models = family_db
    conn = tamperable(sqlite_tensor.connect(path))  # the pages are zeroed by hand below
    try:
        conn.execute("UPDATE tensors_pages SET data = zeroblob(length(data))")
        assert len(list(conn.execute("SELECT * FROM tensors"))) == 15
        assert len(conn.execute("SELECT * FROM tensors LIMIT 1").get) == 5  # data is hidden
        for report in ("tensor_stats", "tensor_models", "tensor_pages"):
            assert list(conn.execute(f"SELECT * FROM {report}('tensors')"))
        with pytest.raises(apsw.CorruptError, match="tensors_pages is corrupt"):
            conn.execute("SELECT length(data) FROM tensors").get
    finally:
        conn.close()


# -- datasette and sqlite-utils ------------------------------------------------------------------


def tool_env():
    """The test's environment, so the tools import this checkout's sqlite_tensor."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(sqlite_tensor.__file__).parent.parent), env.get("PYTHONPATH", "")]
    )
    return env


def plugin_registered(group: str) -> bool:
    from importlib.metadata import entry_points

    return any(ep.value == "sqlite_tensor.plugins" for ep in entry_points(group=group))


def test_datasette_with_load_extension(family_db, tmp_path):
    """datasette --load-extension: queries through its JSON API on 127.0.0.1; a store's
    table page leaves the data column out (the plugin), ?_col=data still gives it."""
    pytest.importorskip("datasette")
    from test_install import datasette_json

    path, models = family_db
    args = ["--load-extension", sqlite_tensor.loadable_path()]
    if not plugin_registered("datasette"):  # a source tree not pip-installed: by hand
        plugins = tmp_path / "plugins"
        plugins.mkdir()
        (plugins / "st.py").write_text("from sqlite_tensor.plugins import *  # noqa\n")
        args += ["--plugins-dir", plugins]
    name = path.stem
    stats, page, pages, one = datasette_json(
        sys.executable,
        path,
        [
            f"/{name}.json?sql=select+models,+tensors+from+tensor_stats('tensors')&_shape=array",
            f"/{name}/tensors.json?_shape=array",
            f"/{name}/tensors_pages.json?_shape=array",
            f"/{name}/tensors.json?_shape=array&_col=data&model__exact=base&tensor__exact=fc1.bias",
        ],
        cwd=tmp_path,
        args=args,
        env=tool_env(),
    )
    assert stats == [{"models": 3, "tensors": 15}]
    assert len(page) == 15 and all("data" not in row for row in page)
    assert pages and all(set(row) == {"id", "nblocks", "nbytes"} for row in pages)
    assert {(r["model"], r["tensor"]) for r in page} == {(m, t) for m in models for t in models[m]}
    import base64

    assert base64.b64decode(one[0]["data"]["encoded"]) == models["base"]["fc1.bias"].tobytes()


def test_sqlite_utils_with_load_extension(family_db):
    pytest.importorskip("sqlite_utils")
    path, models = family_db
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sqlite_utils",
            "query",
            str(path),
            "select model, count(*) as n from tensors group by model order by model",
            "--load-extension",
            sqlite_tensor.loadable_path(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=tool_env(),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"model": m, "n": len(models[m])} for m in sorted(models)]


@pytest.mark.skipif(
    hasattr(sqlite3.Connection, "enable_load_extension"),
    reason="this Python's sqlite3 can load extensions",
)
def test_plugin_on_a_sqlite3_that_cannot_load_says_why_once(family_db, tmp_path):
    """The datasette/sqlite-utils plugin under a sqlite3 without extension loading: files
    without a store open silently; for a store, one line says why and what to install."""
    path, _ = family_db
    plain = tmp_path / "plain.sqlite"
    sqlite3.connect(plain).execute("CREATE TABLE t(x)").connection.close()
    code = f"""
        import sqlite3
        from sqlite_tensor import plugins
        plugins.prepare_connection(sqlite3.connect({str(plain)!r}))
        for _ in range(3):
            plugins.prepare_connection(sqlite3.connect({str(path)!r}))
    """
    result = run_python(sys.executable, code, env=tool_env())
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "tensor stores cannot be read" in lines[0]
    assert "pip install pysqlite3-binary" in lines[0]
