"""The engine's SQL surface against a hostile file or hostile SQL (issue 10): user-given SQL
in tensor_predict_batch, function and table flags, sizes read from shadow tables, layers
naming missing tensors, memory bounded by the answer, interrupts, JSON output, RENAME and
attached databases. Each case is an SQLite error with a clear message, never a crash."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import apsw
import numpy as np
import pytest
from conftest import SMALL, dump
from hypothesis import given, settings
from hypothesis import strategies as st

import sqlite_tensor

LOADABLE = sqlite_tensor.loadable_path()
RNG = np.random.default_rng(10)
W1 = RNG.standard_normal((9, 4)).astype(np.float32)
B1 = RNG.standard_normal(9).astype(np.float32)
H = RNG.standard_normal((3, 9)).astype(np.float32)
EMB = RNG.standard_normal((17, 6)).astype(np.float32)
BASE = [{"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"}]
HEAD = [{"op": "dense", "weight": "h"}]
X = RNG.standard_normal((5, 4)).astype(np.float32)


def base_ref(x):
    return np.maximum(x.astype(np.float64) @ W1.T + B1, 0)


def build(path):
    """A store 'tensors' with models base (4 -> 9), head (9 -> 3), emb (ids -> 6) and a
    table inp(id, x) of X's rows as float32 BLOBs."""
    with sqlite_tensor.Store(path, **SMALL) as s:
        s.add_model("base", {"w1": W1, "b1": B1}, layers=BASE)
        s.add_model("head", {"h": H}, layers=HEAD)
        s.add_model("emb", {"e": EMB}, layers=[{"op": "embedding", "weight": "e"}])
    conn = sqlite_tensor.connect(path)
    with conn:
        conn.execute("CREATE TABLE inp(id INTEGER PRIMARY KEY, x BLOB)")
        conn.executemany(
            "INSERT INTO inp VALUES (?, ?)", [(i, r.tobytes()) for i, r in enumerate(X)]
        )
    return conn


@pytest.fixture
def conn(db_path):
    c = build(db_path)
    yield c
    c.close()


def engine_only(path=":memory:"):
    """A connection with the engine and nothing else (no Python-defined functions)."""
    c = apsw.Connection(str(path))
    c.enable_load_extension(True)
    c.load_extension(LOADABLE)
    c.enable_load_extension(False)
    return c


def f32(blob):
    return np.frombuffer(blob, np.float32)


def undefended(c):
    """Let plain SQL edit shadow tables (the tests play a hostile file's author)."""
    c.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    return c


def shell(db, *commands, timeout=60):
    r = subprocess.run(
        ["sqlite3", "-batch", str(db), f".load {LOADABLE}", *commands],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": os.environ["PATH"]},
    )
    return r.returncode, r.stdout, r.stderr


needs_shell = pytest.mark.skipif(
    subprocess.run(["which", "sqlite3"], capture_output=True).returncode, reason="no sqlite3 shell"
)


# -- tensor_predict_batch: user-given SQL ----------------------------------------------------

RECURSIVE_VIEW = (
    "CREATE VIEW v AS SELECT id, output FROM "
    "tensor_predict_batch('tensors', 'base', 'SELECT * FROM v')"
)


def test_batch_from_a_view_is_refused_not_a_crash(conn):
    conn.execute(RECURSIVE_VIEW)
    with pytest.raises(apsw.SQLError, match='unsafe use of virtual table "tensor_predict_batch"'):
        conn.execute("SELECT count(*) FROM v").get
    # a harmless view is refused the same way: the table never runs SQL a file brought
    conn.execute(
        "CREATE VIEW w AS SELECT id FROM tensor_predict_batch('tensors', 'base', "
        "'SELECT id, x FROM inp')"
    )
    with pytest.raises(apsw.SQLError, match="unsafe use of virtual table"):
        conn.execute("SELECT count(*) FROM w").get


def test_batch_from_a_trigger_is_refused(conn):
    conn.execute(
        "CREATE TABLE log(n); CREATE TRIGGER t AFTER INSERT ON log BEGIN "
        "SELECT count(*) FROM tensor_predict_batch('tensors', 'base', "
        "'DELETE FROM inp RETURNING id, x'); END"
    )
    with pytest.raises(apsw.SQLError, match="unsafe use of virtual table"):
        conn.execute("INSERT INTO log VALUES (1)")
    assert conn.execute("SELECT count(*) FROM inp").get == len(X)


@needs_shell
def test_batch_from_a_view_in_the_shell(db_path):
    build(db_path).close()
    rc, out, err = shell(db_path, RECURSIVE_VIEW + ";", "SELECT count(*) FROM v;")
    assert rc == 1, (rc, out, err)  # an error, not a signal
    assert 'unsafe use of virtual table "tensor_predict_batch"' in err


def test_batch_nesting_is_bounded(conn):
    # a query read from a table that runs itself: no SQL text grows, only the stack would
    q = "SELECT id, output FROM tensor_predict_batch('tensors', 'base', (SELECT s FROM q))"
    conn.execute("CREATE TABLE q(s)")
    conn.execute("INSERT INTO q VALUES (?)", (q,))
    with pytest.raises(apsw.SQLError, match="queries nest 9 deep, over the limit of 8"):
        conn.execute(f"SELECT count(*) FROM ({q})").get


def test_batch_nesting_within_the_limit_works(conn):
    inner = "SELECT id, output FROM tensor_predict_batch(''tensors'', ''base'', ''SELECT id, x FROM inp'')"
    rows = conn.execute(
        f"SELECT id, output FROM tensor_predict_batch('tensors', 'head', '{inner}') ORDER BY id"
    ).fetchall()
    got = np.stack([f32(o) for _, o in rows])
    np.testing.assert_allclose(got, base_ref(X) @ H.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "query, message",
    [
        (
            "SELECT id, x FROM inp; SELECT 1",
            "exactly one statement; extra text after it: 'SELECT 1'",
        ),
        ("SELECT id, x FROM inp; DELETE FROM inp", "extra text after it: 'DELETE FROM inp'"),
        ("SELECT id, x FROM inp; -- c\n /* d */ x", "extra text after it: 'x'"),
        ("", "the query is empty"),
        (" -- only a comment", "the query is empty"),
        ("DELETE FROM inp RETURNING id, x", "the query must only read"),
        ("UPDATE tensors_pages SET data = data RETURNING id, data", "the query must only read"),
        ("INSERT INTO inp(x) VALUES (x'00') RETURNING id, x", "the query must only read"),
        ("PRAGMA wal_checkpoint", "the query must only read"),
        ("SELECT id FROM inp", "two columns"),
        ("SELEC id, x FROM inp", 'the query failed: near "SELEC"'),
    ],
)
def test_batch_query_is_one_read_only_statement(conn, query, message):
    before = dump(conn)
    undefended(conn)  # even where plain SQL could write, the query may not
    with pytest.raises(
        apsw.SQLError, match="tensor_predict_batch: .*" + message.replace("(", r"\(")
    ):
        conn.execute(
            "SELECT * FROM tensor_predict_batch('tensors', 'base', ?)", (query,)
        ).fetchall()
    assert dump(conn) == before
    assert conn.execute("SELECT count(*) FROM inp").get == len(X)


@pytest.mark.parametrize("tail", [";", " ;; ", " -- comment", "; /* c */ ;\n-- d", "/* open"])
def test_batch_query_may_end_with_comments(conn, tail):
    rows = conn.execute(
        "SELECT output FROM tensor_predict_batch('tensors', 'base', ?)",
        ("SELECT id, x FROM inp ORDER BY id" + tail,),
    ).fetchall()
    np.testing.assert_allclose(
        np.stack([f32(o) for (o,) in rows]), base_ref(X), rtol=1e-5, atol=1e-5
    )


# -- flags of every function and table -------------------------------------------------------

DETERMINISTIC, DIRECTONLY, INNOCUOUS = 0x800, 0x80000, 0x200000
PURE = DETERMINISTIC | INNOCUOUS
# name, arguments -> flags; docs/security.md explains each
FLAGS = {
    ("tensor_version", 0): PURE,
    ("tensor_argmax", 1): PURE,
    ("tensor_max", 1): PURE,
    ("tensor_topk", 2): PURE,
    ("tensor_json", 1): PURE,
    ("tensor_blob", 3): INNOCUOUS,
    ("tensor_predict", 3): INNOCUOUS,
    ("tensor_tokenize", 3): INNOCUOUS,
    ("tensor_tokenize", 4): INNOCUOUS,
    ("tensor_embed", 3): INNOCUOUS,
    ("tensor_cosine", 2): PURE,
    ("tensor_threads", 0): INNOCUOUS,
    ("tensor_threads", 1): DIRECTONLY,
    ("tensor_cache", 1): DIRECTONLY,
    ("tensor_cache", 2): DIRECTONLY,
}


def test_registered_functions_and_flags_are_exactly_these():
    c = engine_only()
    got = {
        (name, narg): flags & (DETERMINISTIC | DIRECTONLY | INNOCUOUS)
        for name, narg, flags in c.execute(
            "SELECT name, narg, flags FROM pragma_function_list WHERE name LIKE 'tensor%'"
        )
    }
    assert got == FLAGS


def test_flags_hold_in_views_with_trusted_schema_off(conn):
    conn.execute("PRAGMA trusted_schema = OFF")
    ok = {
        "a": "SELECT tensor_argmax(tensor_predict('tensors', 'base', x)) FROM inp",
        "b": "SELECT length(tensor_blob('tensors', 'base', 'w1'))",
        "c": "SELECT model FROM tensors",  # INNOCUOUS table
        "d": "SELECT models FROM tensor_stats('tensors')",  # INNOCUOUS report
        "e": "SELECT tensor_threads()",
    }
    refused = {
        "f": ("SELECT tensor_threads(1)", "unsafe use of tensor_threads()"),
        "g": ("SELECT tensor_cache('budget_bytes')", "unsafe use of tensor_cache()"),
        # the process's pool: a file's view must not see other files' cached pages
        "h": (
            "SELECT * FROM tensor_cache_stats",
            'unsafe use of virtual table "tensor_cache_stats"',
        ),
        "i": (
            "SELECT * FROM tensor_cache_pages",
            'unsafe use of virtual table "tensor_cache_pages"',
        ),
        # empty, there for its lifetime (it finalizes the connection's kept statements)
        "j": (
            "SELECT * FROM _tensor_kept_statements",
            'unsafe use of virtual table "_tensor_kept_statements"',
        ),
    }
    for name, sql in ok.items():
        conn.execute(f"CREATE VIEW v_{name} AS {sql}")
        assert conn.execute(f"SELECT count(*) FROM v_{name}").get >= 1
    for name, (sql, message) in refused.items():
        conn.execute(f"CREATE VIEW v_{name} AS {sql}")
        with pytest.raises(apsw.SQLError, match=message.replace("(", r"\(").replace(")", r"\)")):
            conn.execute(f"SELECT * FROM v_{name}").get


# -- sizes from shadow tables are untrusted --------------------------------------------------


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            "UPDATE tensors_tensors SET rows = 2199023255552, cols = 549755813888 WHERE name = 'w1'",
            "tensor 'w1' .* has rows 2199023255552, cols 549755813888, nbytes 144",
        ),
        (
            "UPDATE tensors_tensors SET rows = 4611686018427387904, cols = 4 WHERE name = 'w1'",
            "rows 4611686018427387904, cols 4",
        ),
        ("UPDATE tensors_tensors SET rows = -9, cols = -4 WHERE name = 'w1'", "rows -9, cols -4"),
        ("UPDATE tensors_tensors SET rows = 0 WHERE name = 'w1'", "rows 0, cols 4"),
        (
            "UPDATE tensors_tensors SET rows = 1, cols = 9 WHERE name = 'b1'",
            r"tensor 2 of tensors_tensors \(1 x 9\) has 2 tiles but tensors_map lists 3",
        ),
        (
            "UPDATE tensors_tensors SET rows = 36, cols = 1 WHERE name = 'w1'",
            "the bias of layer 0 has 9 values for 36 outputs",
        ),
        (
            "UPDATE tensors_models SET layers = json_set(layers, '$[0].op', 'conv') WHERE name = 'base'",
            r"layer 0 of model 'base' is not understood \(op conv\)",
        ),
        (
            "UPDATE tensors_tensors SET nbytes = 1 << 62 WHERE name = 'w1'",
            "nbytes 4611686018427387904",
        ),
        (
            "DELETE FROM tensors_map WHERE tensor_id = 1 AND block_row = 1",
            "has 3 tiles but tensors_map lists 2",
        ),
        (
            "UPDATE tensors_map SET block_row = 1 << 40 WHERE tensor_id = 1 AND block_row = 0 AND block_col = 0",
            "tensors_map row of tensor 1 names tile \\(1099511627776, 0\\)",
        ),
        (
            "UPDATE tensors_blocks SET slot = 1 << 40 WHERE id = (SELECT block_id FROM tensors_map "
            "WHERE tensor_id = 1 LIMIT 1)",
            "slot 1099511627776",
        ),
        (
            "UPDATE tensors_config SET value = 65536 WHERE key IN ('block_rows', 'block_cols')",
            "blocks of 65536 x 65536 in tensors_config",
        ),
        (
            "UPDATE tensors_models SET layers = '[' || substr(replace(hex(zeroblob(100001)), '00', "
            "',{\"op\":\"activation\"}'), 2) || ']' WHERE name = 'base'",
            "lists 100001 layers",
        ),
    ],
)
def test_sizes_from_shadow_tables_are_checked(conn, edit, message):
    undefended(conn).execute(edit)
    with pytest.raises(apsw.CorruptError, match=message):
        conn.execute("SELECT tensor_predict('tensors', 'base', ?)", (X[0].tobytes(),)).get
    with pytest.raises(apsw.CorruptError, match=message):
        conn.execute(
            "SELECT * FROM tensor_predict_batch('tensors', 'base', 'SELECT id, x FROM inp')"
        ).get


def test_a_layer_wider_than_sqlite_can_hold_is_refused(conn):
    # what a shared block makes cheap (a file describing a billion-wide layer whose tiles
    # all name one block), a low limit shows at small scale: 64 floats of activations
    with sqlite_tensor.Store(conn) as s:
        s.add_model(
            "wide",
            {"w": np.ones((64, 4), np.float32), "h": np.ones((1, 64), np.float32)},
            layers=[{"op": "dense", "weight": "w"}, {"op": "dense", "weight": "h"}],
        )
    conn.limit(apsw.SQLITE_LIMIT_LENGTH, 200)
    with pytest.raises(
        apsw.TooBigError,
        match="a row of the model's activations would be 64 x 4 "
        "bytes, over SQLite's length limit of 200",
    ):
        conn.execute("SELECT tensor_predict('tensors', 'wide', ?)", (X[0].tobytes(),)).get


@pytest.mark.parametrize("which, name", [("bias", "nob"), ("weight", "now")])
def test_a_layer_naming_a_missing_tensor_is_corruption(conn, db_path, which, name):
    undefended(conn).execute(
        f"UPDATE tensors_models SET layers = json_set(layers, '$[0].{which}', ?)"
        " WHERE name = 'base'",
        (name,),
    )
    message = (
        f"layer 0 of model 'base' names {which} tensor '{name}', which the model does not have"
    )
    with pytest.raises(apsw.CorruptError, match=message):
        conn.execute("SELECT tensor_predict('tensors', 'base', ?)", (X[0].tobytes(),)).get
    with pytest.raises(apsw.CorruptError, match=message):
        conn.execute(
            "SELECT * FROM tensor_predict_batch('tensors', 'base', 'SELECT id, x FROM inp')"
        ).get
    with sqlite_tensor.Store(db_path) as s, pytest.raises(apsw.CorruptError, match=message):
        s.predict("base", X[0])


def test_a_bias_on_an_embedding_is_corruption(conn):
    undefended(conn).execute(
        "UPDATE tensors_models SET layers = json_set(layers, '$[0].bias', 'e') WHERE name = 'emb'"
    )
    with pytest.raises(
        apsw.CorruptError, match="layer 0 of model 'emb' is not dense but names a bias"
    ):
        conn.execute("SELECT tensor_predict('tensors', 'emb', 3)").get


# -- memory follows the answer ---------------------------------------------------------------

MEMORY_CHILD = """
import resource, sys, numpy as np, sqlite_tensor
rng = np.random.default_rng(0)
with sqlite_tensor.Store(sys.argv[1]) as s:
    s.add_model("wide", {"e": rng.standard_normal((16, 1024)).astype(np.float32),
                         "h": rng.standard_normal((4, 1024)).astype(np.float32)},
                layers=[{"op": "embedding", "weight": "e"}, {"op": "dense", "weight": "h"}])
c = sqlite_tensor.connect(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = c.execute("SELECT length(tensor_predict('tensors', 'wide', zeroblob(8000000)))").get
out = np.frombuffer(c.execute("SELECT tensor_predict('tensors', 'wide', x'0300000000000000')").get, np.float32)
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, out.tolist())
"""


def test_memory_is_bounded_by_the_answer(tmp_path):
    # 1M ids through a 1024-wide layer: batch x width would be 8 GiB of activations; the
    # answer is 16 MB. Measured in a child process (ru_maxrss is a process's peak).
    r = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(tmp_path / "m.sqlite")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert r.returncode == 0, r.stderr
    n, grown_kib, _ = r.stdout.split(" ", 2)
    assert int(n) == 1_000_000 * 4 * 4
    assert int(grown_kib) < 400 * 1024, f"peak grew by {int(grown_kib) // 1024} MiB"


def test_results_over_the_length_limit_are_toobig(conn):
    conn.limit(apsw.SQLITE_LIMIT_LENGTH, 100_000)
    with pytest.raises(
        apsw.TooBigError,
        match=r"tensor_predict: the output would be 10000 x 24 "
        r"bytes, over SQLite's length limit of 100000",
    ):
        conn.execute("SELECT tensor_predict('tensors', 'emb', zeroblob(80000))").get
    with pytest.raises(
        apsw.TooBigError,
        match="tensor_json: the result would be longer than SQLite's length limit of 100000",
    ):
        conn.execute("SELECT tensor_json(randomblob(90000))").get
    conn.limit(apsw.SQLITE_LIMIT_LENGTH, 100)
    with pytest.raises(
        apsw.TooBigError,
        match="tensor_blob: the tensor would be 144 x 1 bytes, over SQLite's length limit of 100",
    ):
        conn.execute("SELECT tensor_blob('tensors', 'base', 'w1')").get
    with pytest.raises(apsw.TooBigError, match="the tensor would be 144 x 1 bytes"):
        conn.execute("SELECT data FROM tensors WHERE model = 'base' AND tensor = 'w1'").get


def test_quoted_input_in_a_message_is_never_cut_inside_a_character(conn):
    for text in ("é" * 30, "[1, 2, " + "€" * 30, "x" * 19 + "€€"):
        with pytest.raises(apsw.SQLError) as info:
            conn.execute("SELECT tensor_predict('tensors', 'base', ?)", (text,)).get
        assert "\ufffd" not in str(info.value)
    with pytest.raises(apsw.SQLError, match="extra text after it: 'ééé"):
        conn.execute(
            "SELECT * FROM tensor_predict_batch('tensors', 'base', ?)",
            ("SELECT id, x FROM inp; " + "é" * 50,),
        ).get


def test_a_json_features_array_too_long_stops_early(conn):
    with pytest.raises(apsw.SQLError, match="expected 4 numbers, got a JSON array of more"):
        conn.execute(
            "SELECT tensor_predict('tensors', 'base', '[' || "
            "substr(replace(hex(zeroblob(1000000)), '00', ',1'), 2) || ']')"
        ).get


# -- tensor_topk: O(n log k), JSON for every float ---------------------------------------------


def topk_reference(x, k):
    """Best first: NaN above everything (as argmax), then larger, ties by lower index."""
    order = sorted(
        range(len(x)), key=lambda i: (not math.isnan(x[i]), -x[i] if not math.isnan(x[i]) else 0, i)
    )
    return order[:k]


def json_float(v):
    return None if math.isnan(v) else v


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=40),
    st.integers(1, 50),
)
def test_topk_and_json_match_the_reference(values, k):
    c = _MEM
    x = np.array(values, np.float32)
    topk, js, valid_t, valid_j, argmax = c.execute(
        "SELECT tensor_topk(?1, ?2), tensor_json(?1), json_valid(tensor_topk(?1, ?2)),"
        " json_valid(tensor_json(?1)), tensor_argmax(?1)",
        (x.tobytes(), k),
    ).get
    assert valid_t == valid_j == 1
    got = json.loads(topk)
    assert [i for i, _ in got] == topk_reference(x.tolist(), k)
    # nine significant digits: every float32 reads back exactly
    as_f32 = [None if s is None else float(np.float32(s)) for _, s in got]
    assert as_f32 == [json_float(float(x[i])) for i, _ in got]
    assert [None if v is None else float(np.float32(v)) for v in json.loads(js)] == [
        json_float(float(v)) for v in x
    ]
    assert got[0][0] == argmax == int(np.argmax(x))


_MEM = engine_only()


def test_json_writes_nan_as_null_and_infinities_as_9e999():
    x = np.array([1.5, np.nan, np.inf, -np.inf, 0.0, 3.4028235e38], np.float32)
    js = _MEM.execute("SELECT tensor_json(?)", (x.tobytes(),)).get
    assert js == "[1.5,null,9e999,-9e999,0.0,3.40282347e+38]"
    # both Python's json and SQLite's JSON functions read it back, infinities included
    assert json.loads(js)[1] is None and json.loads(js)[2:4] == [math.inf, -math.inf]
    assert _MEM.execute(
        "SELECT json_valid(?1), json_extract(?1, '$[1]'), json_extract(?1, '$[2]'),"
        " json_extract(?1, '$[3]')",
        (js,),
    ).get == (1, None, math.inf, -math.inf)


def test_topk_of_64k_floats_is_fast():
    x = np.random.default_rng(3).standard_normal(65536).astype(np.float32)
    t = time.perf_counter()
    for k in (10, 1000, 65536):
        got = json.loads(_MEM.execute("SELECT tensor_topk(?, ?)", (x.tobytes(), k)).get)
        assert [i for i, _ in got] == list(np.argsort(-x, kind="stable")[:k])
    assert time.perf_counter() - t < 2.0  # was 20 s for k = n


# -- sqlite3_interrupt stops long calls ------------------------------------------------------


def slow_store(path):
    rng = np.random.default_rng(0)
    with sqlite_tensor.Store(path) as s:
        s.add_model(
            "slow",
            {
                "e": rng.standard_normal((16, 512)).astype(np.float32),
                "w": (rng.standard_normal((512, 512)) / 20).astype(np.float32),
                "h": rng.standard_normal((8, 512)).astype(np.float32),
            },
            layers=[
                {"op": "embedding", "weight": "e"},
                {"op": "dense", "weight": "w", "activation": "relu"},
                {"op": "dense", "weight": "h"},
            ],
        )


def test_interrupt_stops_a_long_predict(db_path):
    slow_store(db_path)  # 1M inputs: half a minute of work, uninterrupted
    c = sqlite_tensor.connect(db_path)
    timer = threading.Timer(0.3, c.interrupt)
    t = time.perf_counter()
    timer.start()
    with pytest.raises(apsw.InterruptError, match="tensor_predict: .*interrupted"):
        c.execute("SELECT length(tensor_predict('tensors', 'slow', zeroblob(8000000)))").get
    assert time.perf_counter() - t < 5
    # the connection is fine afterwards
    assert len(c.execute("SELECT tensor_predict('tensors', 'slow', 1)").get) == 32


def test_interrupt_stops_a_long_batch(db_path):
    slow_store(db_path)
    c = sqlite_tensor.connect(db_path)
    timer = threading.Timer(0.3, c.interrupt)
    t = time.perf_counter()
    timer.start()
    with pytest.raises(apsw.InterruptError):
        c.execute(
            "SELECT count(*) FROM tensor_predict_batch('tensors', 'slow', 'WITH RECURSIVE"
            " n(i) AS (VALUES(0) UNION ALL SELECT i + 1 FROM n WHERE i < 100000000)"
            " SELECT i, i % 16 FROM n')"
        ).get
    assert time.perf_counter() - t < 5


@needs_shell
def test_interrupt_in_the_shell(db_path):
    """The Debian shell's SQLite (3.40) has no sqlite3_is_interrupted: Ctrl-C still stops
    a long call."""
    slow_store(db_path)
    p = subprocess.Popen(
        [
            "sqlite3",
            "-batch",
            str(db_path),
            f".load {LOADABLE}",
            "SELECT length(tensor_predict('tensors', 'slow', zeroblob(8000000)));",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    time.sleep(1.0)
    t = time.perf_counter()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert time.perf_counter() - t < 5
    assert "tensor_predict: interrupted" in err, (out, err)
    assert out == ""


# -- ALTER TABLE RENAME, attached databases --------------------------------------------------


def test_rename_keeps_the_store_usable_and_droppable(conn):
    before = conn.execute("SELECT tensor_predict('tensors', 'base', ?)", (X[0].tobytes(),)).get
    conn.execute("ALTER TABLE tensors RENAME TO renamed")
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not any(n.startswith("tensors") for n in tables)
    assert {"renamed_models", "renamed_pages", "renamed_tensors", "renamed_config"} <= tables
    assert (
        conn.execute("SELECT tensor_predict('renamed', 'base', ?)", (X[0].tobytes(),)).get == before
    )
    assert conn.execute("SELECT tensor_blob('renamed', 'base', 'w1')").get == W1.tobytes()
    assert conn.execute("SELECT models FROM tensor_stats('renamed')").get == 3
    assert (
        conn.execute("SELECT data FROM renamed WHERE model = 'base' AND tensor = 'b1'").get
        == B1.tobytes()
    )
    with sqlite_tensor.Store(conn, "renamed", create=False) as s:
        assert s.verify() == []
    conn.execute("DROP TABLE renamed")
    assert (
        conn.execute(
            "SELECT group_concat(name) FROM sqlite_master WHERE name LIKE 'renamed%'"
            " OR name LIKE 'tensors%'"
        ).get
        is None
    )
    assert conn.execute("PRAGMA integrity_check").get == "ok"


@needs_shell
def test_rename_in_the_shell(db_path):
    build(db_path).close()
    rc, out, err = shell(
        db_path,
        "ALTER TABLE tensors RENAME TO t2;",
        "SELECT hex(tensor_blob('t2', 'base', 'b1'));",
        "SELECT models FROM tensor_stats('t2');",
        "DROP TABLE t2;",
        "SELECT count(*) FROM sqlite_master WHERE name LIKE 't2%' OR name LIKE 'tensors%';",
    )
    assert rc == 0 and err == "", err
    assert out.split() == [B1.tobytes().hex().upper(), "3", "0"]


def test_a_store_in_an_attached_database(tmp_path):
    build(tmp_path / "other.sqlite").close()
    c = sqlite_tensor.connect(tmp_path / "main.sqlite")
    c.execute("ATTACH ? AS aux", (str(tmp_path / "other.sqlite"),))
    x = X[1].tobytes()
    assert c.execute("SELECT tensor_blob('aux.tensors', 'base', 'w1')").get == W1.tobytes()
    assert (
        c.execute("SELECT data FROM aux.tensors WHERE model = 'base' AND tensor = 'w1'").get
        == W1.tobytes()
    )
    np.testing.assert_allclose(
        f32(c.execute("SELECT tensor_predict('aux.tensors', 'base', ?)", (x,)).get),
        base_ref(X[1]),
        rtol=1e-5,
        atol=1e-5,
    )
    rows = c.execute(
        "SELECT output FROM tensor_predict_batch('aux.tensors', 'base', "
        "'SELECT id, x FROM aux.inp ORDER BY id')"
    ).fetchall()
    np.testing.assert_allclose(
        np.stack([f32(o) for (o,) in rows]), base_ref(X), rtol=1e-5, atol=1e-5
    )
    assert c.execute("SELECT models, tensors FROM tensor_stats('aux.tensors')").get == (3, 4)
    assert [m for (m,) in c.execute("SELECT model FROM tensor_models('aux.tensors')")] == [
        "base",
        "head",
        "emb",
    ]
    assert c.execute("SELECT count(*) FROM tensor_pages('aux.tensors')").get > 0
    # unqualified, the name means main, which has no such store: a clear error
    with pytest.raises(apsw.SQLError, match="no tensor store named 'tensors'"):
        c.execute("SELECT tensor_blob('tensors', 'base', 'w1')").get
    # no database 'nosuch': the whole text is the name
    with pytest.raises(apsw.SQLError, match="no tensor store named 'nosuch.tensors'"):
        c.execute("SELECT * FROM tensor_stats('nosuch.tensors')").get
    # created in the attached database from SQL, renamed and dropped there
    c.execute("CREATE VIRTUAL TABLE aux.fresh USING tensor_store(block_rows=2, block_cols=2)")
    assert c.execute("SELECT models, block_rows FROM tensor_stats('aux.fresh')").get == (0, 2)
    c.execute("ALTER TABLE aux.fresh RENAME TO fresh2")
    assert c.execute("SELECT models FROM tensor_stats('aux.fresh2')").get == 0
    c.execute("DROP TABLE aux.fresh2")
    assert c.execute("SELECT count(*) FROM aux.sqlite_master WHERE name LIKE 'fresh%'").get == 0


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM tensor_stats('tensors' || char(0) || 'x')",
        "SELECT * FROM tensor_models('tensors' || char(0))",
        "SELECT tensor_blob('tensors' || char(0) || 'x', 'base', 'w1')",
        "SELECT tensor_predict('tensors' || char(0), 'base', x'00000000000000000000000000000000')",
        "SELECT * FROM tensor_predict_batch('tensors' || char(0), 'base', 'SELECT id, x FROM inp')",
        "SELECT * FROM tensor_predict_batch('tensors', 'base', 'SELECT id, x FROM inp' || char(0) || 'x')",
    ],
)
def test_a_name_with_a_nul_names_nothing(conn, sql):
    # found by the fuzzer: read as a C string the name was cut at the NUL
    with pytest.raises(apsw.SQLError, match="NUL character"):
        conn.execute(sql).fetchall()


def test_a_dotted_store_name_in_main_still_means_main(memdb):
    memdb.execute('CREATE VIRTUAL TABLE "a.b" USING tensor_store')
    assert memdb.execute("SELECT models FROM tensor_stats('a.b')").get == 0
