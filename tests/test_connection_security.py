"""A database file cannot make its reader run code or write: SQL's load_extension() is off
wherever the extension is loaded, the package's connections are in defensive mode (shadow
tables read-only to SQL) from before the schema is read, the Python SQL functions that
write are refused in views and triggers, and tensor_dedup's validation query is one
read-only statement."""

from __future__ import annotations

import json
import shutil
import subprocess

import apsw
import numpy as np
import pytest
from conftest import SMALL, dump, random_array, snapshot
from test_hosts import run_python, system_python_with_loading

import sqlite_tensor

LOADABLE = sqlite_tensor.loadable_path()

CANARY_C = r"""
#include <stdio.h>
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1
static void canary(sqlite3_context *c, int n, sqlite3_value **v) { sqlite3_result_int(c, 42); }
int sqlite3_canary_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
  SQLITE_EXTENSION_INIT2(api);
  FILE *f = fopen(CANARY_MARK, "w");   /* the code a file would have run */
  if (f) fclose(f);
  return sqlite3_create_function(db, "canary", 0, SQLITE_UTF8, 0, canary, 0, 0);
}
"""


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    """(path of a loadable library whose load writes a marker file, the marker's path)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the canary extension")
    d = tmp_path_factory.mktemp("canary")
    (d / "canary.c").write_text(CANARY_C)
    mark = d / "ran"
    lib = d / "canary.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", f'-DCANARY_MARK="{mark}"', "-o", str(lib), str(d / "canary.c")],
        check=True,
        capture_output=True,
    )
    return str(lib), mark


@pytest.fixture
def stored(db_path, rng):
    """A store file with one model."""
    with sqlite_tensor.Store(db_path, **SMALL) as store:
        store.add_model("m", {"w": random_array(rng, (7, 11), np.float32)})
    return db_path


def _connections(path):
    """(label, connection, closer) for every way the package gives a connection."""
    plain = apsw.Connection(str(path))
    plain.execute("SELECT count(*) FROM sqlite_schema").get  # the schema read before loading
    by_path = sqlite_tensor.Store(path)
    on_conn = sqlite_tensor.Store(apsw.Connection(str(path)))
    return [
        ("connect", sqlite_tensor.connect(path)),
        ("connect-memory", sqlite_tensor.connect(":memory:")),
        ("load", sqlite_tensor.load(plain)),
        ("Store(path)", by_path.conn),
        ("Store(conn)", on_conn.conn),
    ]


# -- load_extension() -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql", ["SELECT load_extension(?)", "SELECT load_extension(?, 'sqlite3_canary_init')"]
)
def test_sql_load_extension_is_refused_on_every_connection(stored, canary, sql):
    lib, mark = canary
    for label, conn in _connections(stored):
        with pytest.raises(apsw.SQLError, match="not authorized: load_extension\\(\\) is off"):
            conn.execute(sql, (lib,)).get
        # nor through a view (which a file may carry)
        conn.execute(f"CREATE TEMP VIEW sneaky AS SELECT load_extension('{lib}')")
        with pytest.raises(apsw.SQLError):
            conn.execute("SELECT * FROM sneaky").get
        assert not mark.exists(), label
        with pytest.raises(apsw.SQLError, match="no such function: canary"):
            conn.execute("SELECT canary()").get
        assert conn.execute("SELECT tensor_version()").get == sqlite_tensor.__version__
        conn.close()


def test_load_leaves_the_c_api_as_the_caller_had_it(canary):
    lib, mark = canary
    off = sqlite_tensor.load(apsw.Connection(":memory:"))
    assert off.config(apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, -1) == 0  # apsw's default
    with pytest.raises(apsw.ExtensionLoadingError, match="not authorized"):
        off.load_extension(lib)
    on = apsw.Connection(":memory:")
    on.enable_load_extension(True)
    sqlite_tensor.load(on)
    assert on.config(apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, -1) == 1
    with pytest.raises(apsw.SQLError, match="not authorized"):
        on.execute("SELECT load_extension(?)", (lib,)).get
    assert not mark.exists()
    on.load_extension(lib)  # the host's own API still loads what the host chooses
    assert mark.exists() and on.execute("SELECT canary()").get == 42
    mark.unlink()
    off.close()
    on.close()


def test_shell_after_load_refuses_sql_load_extension_and_still_loads(
    sqlite3_shell, clean_env, stored, canary
):
    lib, mark = canary
    script = (
        f".load {LOADABLE}\n"
        f"SELECT load_extension('{lib}');\n"
        "SELECT 'after: ' || tensor_version();\n"
        f".load {lib}\n"  # the shell's own .load still works
        "SELECT 'canary: ' || canary();\n"
    )
    result = subprocess.run(
        [sqlite3_shell, str(stored)],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env,
    )
    assert "not authorized: load_extension() is off" in result.stderr
    assert result.stdout.splitlines() == [f"after: {sqlite_tensor.__version__}", "canary: 42"]
    assert mark.exists()  # by .load, after the refused SQL call (checked in the next test)
    mark.unlink()


def test_shell_sql_load_extension_runs_no_code(sqlite3_shell, clean_env, stored, canary):
    lib, mark = canary
    result = subprocess.run(
        [sqlite3_shell, str(stored)],
        capture_output=True,
        text=True,
        input=f".load {LOADABLE}\nSELECT load_extension('{lib}');\n",
        timeout=60,
        env=clean_env,
    )
    assert "not authorized" in result.stderr and not mark.exists()


def test_stdlib_sqlite3_that_left_loading_on_still_refuses_sql_load_extension(stored, canary):
    """A host that loads the extension and leaves loading enabled: SQL's is still off."""
    python = system_python_with_loading()
    lib, mark = canary
    code = f"""
        import sqlite3
        conn = sqlite3.connect({str(stored)!r})
        conn.enable_load_extension(True)
        conn.load_extension({LOADABLE!r})
        try:
            conn.execute("SELECT load_extension(?)", ({lib!r},)).fetchone()
            print("loaded")
        except sqlite3.Error as e:
            print("refused:", "not authorized" in str(e))
        print(conn.execute("SELECT count(*) FROM tensors").fetchone()[0])
    """
    result = run_python(python, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["refused: True", "1"]
    assert not mark.exists()


# -- defensive mode ---------------------------------------------------------------------------

SHADOW_WRITES = [
    "UPDATE tensors_pages SET nblocks = nblocks",
    "UPDATE tensors_pages SET data = zeroblob(8)",
    "DELETE FROM tensors_blocks",
    "INSERT INTO tensors_map(tensor_id, block_row, block_col, block_id) VALUES (1, 99, 99, 1)",
    "UPDATE tensors_config SET value = 1 WHERE key = 'block_rows'",
    "DROP TABLE tensors_pages",
]


def test_shadow_tables_are_read_only_to_sql_on_every_package_connection(stored, rng):
    for label, conn in _connections(stored):
        if label in ("load", "Store(conn)"):  # the caller's own connection: defensive mode
            conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)  # is its choice, and works once on
        if label == "connect-memory":
            sqlite_tensor.Store(conn).add_model("m", {"w": np.ones((4, 4), np.float32)})
        assert conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, -1) == 1, label
        before = snapshot(conn)
        for sql in SHADOW_WRITES:
            with pytest.raises(apsw.SQLError, match="may not be modified|may not be dropped"):
                conn.execute(sql)
        assert snapshot(conn) == before, label
        # the store's own writes work, and leave defensive mode on
        store = sqlite_tensor.Store(conn)
        store.add_model(f"new-{label}", {"w": random_array(rng, (5, 6), np.float32)})
        store.drop_model(f"new-{label}")
        assert conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, -1) == 1
        assert store.verify() == [], label
        with pytest.raises(apsw.SQLError, match="may not be modified"):
            conn.execute(SHADOW_WRITES[0])
        conn.close()


def test_a_caller_connection_that_read_the_schema_first_is_protected_after_load(stored):
    """load() has SQLite read the schema again: shadow tables are marked as such only when
    their module is known while the schema is parsed."""
    conn = apsw.Connection(str(stored))
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    conn.execute("UPDATE tensors_pages SET nblocks = nblocks")  # unknown module: not protected
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    conn.execute("PRAGMA writable_schema = ON")
    sqlite_tensor.load(conn)
    assert conn.execute("PRAGMA writable_schema").get == 1  # left as the caller had it
    conn.execute("PRAGMA writable_schema = OFF")
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    with pytest.raises(apsw.SQLError, match="may not be modified"):
        conn.execute("UPDATE tensors_pages SET nblocks = nblocks")
    conn.close()


# -- Python SQL functions that write ----------------------------------------------------------


@pytest.fixture
def validation_db(tmp_path):
    """A store with a model to dedup and a validation table; its connection."""
    conn = sqlite_tensor.connect(tmp_path / "v.sqlite")
    store = sqlite_tensor.Store(conn, **SMALL)
    rng = np.random.default_rng(3)
    w = rng.normal(0, 1, (2, 6)).astype(np.float32)
    store.add_model("a", {"w": w}, layers=[{"op": "dense", "weight": "w"}])
    conn.execute("CREATE TABLE validation(model, input, label)")
    conn.executemany(
        "INSERT INTO validation VALUES ('a', ?, ?)",
        [(json.dumps([float(v) for v in rng.normal(0, 1, 6)]), int(i % 2)) for i in range(6)],
    )
    yield conn, tmp_path
    conn.close()


@pytest.mark.parametrize(
    "call", ["tensor_pack('tensors')", "tensor_dedup('tensors', 0.1, 'SELECT * FROM validation')"]
)
def test_writing_functions_are_refused_in_views_and_triggers(validation_db, call):
    conn, _ = validation_db
    before = dump(conn)  # rows and schema (the file's schema cookie moves with the DDL)
    conn.execute(f"CREATE VIEW v AS SELECT {call}")
    with pytest.raises(apsw.SQLError, match="unsafe use of tensor_"):
        conn.execute("SELECT * FROM v").get
    conn.execute("CREATE TABLE notes(x)")
    conn.execute(f"CREATE TRIGGER t AFTER INSERT ON notes BEGIN SELECT {call}; END")
    with pytest.raises(apsw.SQLError, match="unsafe use of tensor_"):
        conn.execute("INSERT INTO notes VALUES (1)")
    conn.execute("DROP TRIGGER t")
    conn.execute("DROP TABLE notes")
    conn.execute("DROP VIEW v")
    assert dump(conn) == before
    conn.execute(f"SELECT {call}").get  # called directly, it runs


def test_a_view_cannot_attach_a_file_through_tensor_dedup(validation_db):
    """The issue's reproduction: a view that ATTACHed (and so created) a file."""
    conn, tmp = validation_db
    target = tmp / "created.db"
    conn.execute(
        f"CREATE VIEW v AS SELECT tensor_dedup('tensors', 0.1, 'ATTACH ''{target}'' AS x')"
    )
    with pytest.raises(apsw.SQLError, match="unsafe use of tensor_dedup"):
        conn.execute("SELECT * FROM v").get
    assert not target.exists()


@pytest.mark.parametrize(
    "query, message",
    [
        ("ATTACH '{target}' AS x", "may only read"),
        ("SELECT * FROM validation; ATTACH '{target}' AS x", "must be one statement|may only read"),
        ("SELECT * FROM validation; SELECT * FROM validation", "must be one statement"),
        ("DELETE FROM validation RETURNING model, input, label", "may only read"),
        ("INSERT INTO validation SELECT * FROM validation RETURNING *", "may only read"),
        ("PRAGMA table_info(validation)", "may only read"),
        ("BEGIN", "may only read"),
        (
            "SELECT model, input, label FROM validation WHERE tensor_pack('tensors') IS NOT NULL",
            "not authorized to use function: tensor_pack",
        ),
        ("SELECT model, load_extension('x'), label FROM validation", "not authorized"),
    ],
)
def test_tensor_dedup_runs_exactly_one_read_only_statement(validation_db, query, message):
    conn, tmp = validation_db
    target = tmp / "created.db"
    before = snapshot(conn)
    with pytest.raises(apsw.SQLError, match=f"tensor_dedup: .*({message})"):
        conn.execute("SELECT tensor_dedup('tensors', 0.1, ?)", (query.format(target=target),)).get
    assert not target.exists() and not conn.in_transaction
    assert snapshot(conn) == before
    assert conn.execute("SELECT count(*) FROM validation").get == 6


def test_tensor_dedup_accepts_one_select_with_a_trailing_comment(validation_db):
    conn, _ = validation_db
    out = json.loads(
        conn.execute(
            "SELECT tensor_dedup('tensors', 0.1, 'SELECT model, input, label FROM validation; -- ok')"
        ).get
    )
    assert [m["model"] for m in out["models"]] == ["a"]


def test_the_validation_query_runs_under_a_read_only_authorizer_then_the_callers_is_back(
    validation_db,
):
    conn, _ = validation_db
    seen = []

    def mine(*args):
        seen.append(args[0])
        return apsw.SQLITE_OK

    conn.authorizer = mine
    conn.execute("SELECT tensor_dedup('tensors', 0.1, 'SELECT * FROM validation')").get
    assert conn.authorizer is mine and seen
    conn.authorizer = None


# -- layers naming missing tensors ------------------------------------------------------------


def test_verify_reports_stored_layers_naming_a_missing_tensor(tmp_path):
    with sqlite_tensor.Store(tmp_path / "l.sqlite") as store:
        store.add_model(
            "m",
            {"w": np.ones((3, 4), np.float32), "b": np.zeros(3, np.float32)},
            layers=[{"op": "dense", "weight": "w", "bias": "b"}],
        )
        assert store.verify() == []
        with pytest.raises(
            sqlite_tensor.layers.LayerError,
            match="bias 'nope' is not a tensor of this model; it has 'w', 'b'",
        ):
            store.set_layers("m", [{"op": "dense", "weight": "w", "bias": "nope"}])
        # written by other means (a file made elsewhere, SQL without defensive mode)
        store.conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
        store.conn.execute(
            "UPDATE tensors_models SET layers = ?",
            (
                '[{"op":"dense","weight":"w","bias":"nope","activation":"identity",'
                '"transpose":false}]',
            ),
        )
        assert store.verify() == [
            "model 'm': its stored layers do not fit its tensors: layer 0 (dense): bias 'nope'"
            " is not a tensor of this model; it has 'w', 'b'"
        ]
        store.conn.execute("UPDATE tensors_models SET layers = 'not json'")
        assert store.verify()[0].startswith("model 'm': its stored layers do not fit its tensors:")
        store.set_layers("m", None)
        assert store.verify() == []


def test_update_keeping_layers_that_name_a_tensor_the_new_version_lacks_is_refused(tmp_path):
    with sqlite_tensor.Store(tmp_path / "u.sqlite") as store:
        store.add_model(
            "m",
            {"w": np.ones((3, 4), np.float32), "b": np.zeros(3, np.float32)},
            layers=[{"op": "dense", "weight": "w", "bias": "b"}],
        )
        before = snapshot(store.conn)
        with pytest.raises(sqlite_tensor.layers.LayerError, match="bias 'b' is not a tensor"):
            store.update_model("m", {"w": np.ones((3, 4), np.float32)})
        assert snapshot(store.conn) == before
