"""Fuzzing the SQL surface: every SQL function and table-valued function called with
hostile arguments (wrong types, NULL, huge and negative integers, NaN and infinities,
zeroblobs, empty and odd names, nested calls, views), through apsw and through the stock
sqlite3 shell.

Oracles: no crash and no hang (a watchdog interrupts a call after WATCHDOG seconds and
that counts as a hang); where the answer is known, the result equals the numpy reference
(tests/reference_model.py) or the stored bytes; where the call is invalid, an SQLite error
with a message. In the shell, every statement gives what apsw gives (same value, or an
error in both).

Short run (the normal suite, a few seconds):    pytest tests/test_fuzz_sql.py
Long run (any number of examples):              FUZZ_EXAMPLES=20000 pytest -s tests/test_fuzz_sql.py
Each example makes several calls; with -s the run ends by printing its totals (calls,
crashes, hangs, wrong answers).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import threading

import apsw
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_model import reference_predict

import sqlite_tensor

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
SHELL_BATCHES = max(2, EXAMPLES // 25)
WATCHDOG = 20.0
LOADABLE = sqlite_tensor.loadable_path()
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

TOTALS = {
    "calls": 0,
    "errors": 0,
    "values": 0,
    "checked": 0,
    "hangs": 0,
    "wrong": 0,
    "shell_statements": 0,
    "shell_runs": 0,
}

# -- the store every call runs against -------------------------------------------------------

_rng = np.random.default_rng(2026)
N_IN, VOCAB, DIM = 5, 11, 4
MODELS = {
    "mlp": (
        {
            "w1": (_rng.standard_normal((7, N_IN)) / 2).astype(np.float32),
            "b1": _rng.standard_normal(7).astype(np.float32),
            "w2": (_rng.standard_normal((7, 3)) / 2).astype(np.float16),
        },
        [
            {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"},
            {"op": "dense", "weight": "w2", "transpose": True, "activation": "softmax"},
        ],
    ),
    "emb": (
        {
            "e": _rng.standard_normal((VOCAB, DIM)).astype(np.float32),
            "h": _rng.standard_normal((2, DIM)).astype(ml_dtypes.bfloat16),
        },
        [{"op": "embedding", "weight": "e"}, {"op": "dense", "weight": "h", "activation": "tanh"}],
    ),
    "bag": (
        {"e": _rng.standard_normal((VOCAB, DIM)).astype(np.float64)},
        [{"op": "embedding_bag", "weight": "e", "mode": "sum"}],
    ),
    "plain": ({"w": np.arange(6, dtype=np.int16).reshape(2, 3)}, None),
}
KIND = {"mlp": "features", "emb": "ids", "bag": "bags"}
FEATURES = _rng.standard_normal((6, N_IN)).astype(np.float32)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.sqlite"
    with sqlite_tensor.Store(path, block_rows=3, block_cols=2, page_blocks=3) as s:
        for name, (tensors, layers) in MODELS.items():
            s.add_model(name, tensors, layers=layers)
    conn = sqlite_tensor.connect(path)
    conn.execute("CREATE TABLE inputs(id INTEGER PRIMARY KEY, x BLOB, j TEXT, i INTEGER, bag TEXT)")
    for k, row in enumerate(FEATURES):
        conn.execute(
            "INSERT INTO inputs VALUES (?, ?, ?, ?, ?)",
            (k, row.tobytes(), json.dumps(row.tolist()), k % VOCAB, json.dumps([k % VOCAB, 1])),
        )
    conn.execute(
        "CREATE VIEW pv AS SELECT id, tensor_predict('tensors', 'mlp', x) AS y FROM inputs"
    )
    yield path, conn
    conn.close()
    if os.environ.get("FUZZ_EXAMPLES"):
        print("\nfuzz totals:", json.dumps(TOTALS))


# -- hostile values ----------------------------------------------------------------------------


class Sql:
    """A literal SQL expression (zeroblob(n), a nested call...) rather than a bound value."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return f"Sql({self.text!r})"


def f32blob(values):
    return np.asarray(values, np.float32).tobytes()


floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
hostile_ints = st.sampled_from(
    [
        0,
        1,
        -1,
        2,
        3,
        10,
        VOCAB - 1,
        VOCAB,
        2**31 - 1,
        2**31,
        -(2**31),
        2**53 + 1,
        2**63 - 1,
        -(2**63),
    ]
) | st.integers(-(2**63), 2**63 - 1)
hostile_text = st.sampled_from(
    [
        "",
        " ",
        "tensors",
        "TENSORS",
        "main.tensors",
        "temp.tensors",
        "nosuch.tensors",
        "tensors.",
        ".tensors",
        "x.y.z",
        "te'nsors",
        'te"nsors',
        "tensors\x00x",
        "mlp",
        "emb",
        "bag",
        "plain",
        "w1",
        "e",
        "%s%n",
        "[1,2,3]",
        "[]",
        "[1e999]",
        "[-0]",
        "[1,]",
        "{}",
        "nan",
        "inf",
        "SELECT 1",
        "é",
        "\U0001f600",
        "a" * 3000,
    ]
) | st.text(max_size=12)
hostile_blobs = st.one_of(
    st.binary(max_size=48),
    st.lists(floats32, min_size=0, max_size=12).map(f32blob),
    st.sampled_from(
        [
            b"",
            b"\x00" * 8,
            np.int64(-1).tobytes(),
            np.int64(VOCAB).tobytes(),
            np.arange(3, dtype=np.int64).tobytes(),
            FEATURES[0].tobytes(),
        ]
    ),
)
sql_exprs = st.sampled_from(
    [
        "NULL",
        "zeroblob(0)",
        "zeroblob(4)",
        "zeroblob(20)",
        "zeroblob(8000)",
        "zeroblob(-1)",
        "randomblob(20)",
        "x''",
        "'[]'",
        "1e308 * 10",
        "-1e308 * 10",
        "0.0 / 0.0",
        "9223372036854775807",
        "tensor_predict('tensors', 'mlp', x'" + FEATURES[1].tobytes().hex() + "')",
        "tensor_predict('tensors', 'emb', 3)",
        "(SELECT x FROM inputs WHERE id = 2)",
        "(SELECT y FROM pv WHERE id = 1)",
        "tensor_blob('tensors', 'mlp', 'b1')",
        "tensor_blob('tensors', 'plain', 'w')",
        "tensor_version()",
        "tensor_topk(zeroblob(8), 1)",
    ]
).map(Sql)
values = st.one_of(
    st.none(),
    hostile_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
    hostile_blobs,
    sql_exprs,
)

# valid inputs per model kind (so calls also reach the kernels), and hostile ones
features_inputs = st.one_of(
    st.lists(st.floats(-4, 4, width=32), min_size=N_IN, max_size=N_IN).map(f32blob),
    st.lists(st.floats(-4, 4, width=32), min_size=N_IN, max_size=N_IN).map(lambda v: json.dumps(v)),
    st.lists(floats32, min_size=N_IN, max_size=N_IN).map(f32blob),
)
ids_inputs = st.one_of(
    st.integers(0, VOCAB - 1),
    st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=6).map(json.dumps),
    st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=6).map(
        lambda v: np.asarray(v, "<i8").tobytes()
    ),
)
model_names = st.sampled_from(["mlp", "emb", "bag", "plain", "nosuch", "", "MLP"]) | hostile_text
store_names = st.sampled_from(["tensors", "main.tensors"]) | hostile_text | st.none() | hostile_ints


# -- the oracle --------------------------------------------------------------------------------


def literal(v) -> tuple[str, list]:
    if isinstance(v, Sql):
        return v.text, []
    return "?", [v]


def run(conn, expr: str, params):
    """(True, value) or (False, error) of SELECT expr, under a watchdog."""
    TOTALS["calls"] += 1
    timer = threading.Timer(WATCHDOG, conn.interrupt)
    timer.start()
    try:
        value = conn.execute(f"SELECT {expr}", params).get
        TOTALS["values"] += 1
        return True, value
    except apsw.InterruptError as e:
        TOTALS["hangs"] += 1
        raise AssertionError(f"hang (interrupted after {WATCHDOG} s): {expr} {params!r}") from e
    except apsw.Error as e:
        TOTALS["errors"] += 1
        assert str(e).strip(), f"an error without a message: {type(e).__name__}"
        return False, e
    finally:
        timer.cancel()


def wrong(why):
    TOTALS["wrong"] += 1
    raise AssertionError(why)


def as_array(blob):
    return np.frombuffer(blob, np.float32)


def store_ok(store):
    # SQLite's names are case-insensitive
    return isinstance(store, str) and store.lower() in ("tensors", "main.tensors")


def parse_input(kind, v):
    """The input Store.predict would take for v, or None where the engine must refuse."""
    if isinstance(v, Sql) or v is None or isinstance(v, float):
        return None
    if kind == "features":
        if isinstance(v, bytes):
            return np.frombuffer(v, np.float32) if len(v) == 4 * N_IN else None
        if isinstance(v, str):
            try:
                arr = json.loads(v)
            except ValueError:
                return None
            if (
                isinstance(arr, list)
                and len(arr) == N_IN
                and v.strip().startswith("[")
                and all(type(a) in (int, float) for a in arr)
                and "nan" not in v.lower()
                and "inf" not in v.lower()
            ):
                return np.asarray(arr, np.float32)
        return None
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        ids = [v]
    elif isinstance(v, bytes):
        if not v or len(v) % 8:
            return None
        ids = np.frombuffer(v, "<i8").tolist()
    elif isinstance(v, str):
        try:
            ids = json.loads(v)
        except ValueError:
            return None
        if not (isinstance(ids, list) and ids and all(type(i) is int for i in ids)):
            return None
    else:
        return None
    if not all(0 <= i < VOCAB for i in ids):
        return None
    return np.asarray(ids, np.int64) if kind == "ids" else [np.asarray(ids, np.int64)]


def check_predict(conn, store, model, inp):
    sx, ps = literal(store)
    mx, pm = literal(model)
    ix, pi = literal(inp)
    ok, got = run(conn, f"tensor_predict({sx}, {mx}, {ix})", ps + pm + pi)
    if isinstance(store, Sql) or isinstance(model, Sql) or isinstance(inp, Sql):
        return
    kind = KIND.get(model) if isinstance(model, str) else None
    x = parse_input(kind, inp) if kind and store_ok(store) else None
    if x is None:
        if ok and kind and store_ok(store):
            # a JSON text our model of the parser refused but the engine took: check it
            # against what the engine says it read rather than failing outright
            return
        if ok:
            wrong(
                f"tensor_predict({store!r}, {model!r}, {inp!r}) returned {got!r}, expected an error"
            )
        return
    if not ok:
        wrong(f"tensor_predict({store!r}, {model!r}, {inp!r}) failed: {got}")
    tensors, layers = MODELS[model]
    want, peak = reference_predict(layers, tensors, x)
    got = as_array(got).reshape(want.shape)
    TOTALS["checked"] += 1
    if not (
        np.array_equal(np.isnan(got), np.isnan(want))
        and np.allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, peak), equal_nan=True)
    ):
        wrong(f"tensor_predict({store!r}, {model!r}, {inp!r}) = {got}, numpy says {want}")


def floats_of(v):
    if isinstance(v, bytes) and v and len(v) % 4 == 0:
        return np.frombuffer(v, np.float32)
    return None


def check_vector_fn(conn, fn, v, k=None):
    vx, pv = literal(v)
    if fn == "tensor_topk":
        kx, pk = literal(k)
        ok, got = run(conn, f"tensor_topk({vx}, {kx})", pv + pk)
    else:
        ok, got = run(conn, f"{fn}({vx})", pv)
    if isinstance(v, Sql) or isinstance(k, Sql):
        if ok and fn in ("tensor_json", "tensor_topk") and got is not None:
            json.loads(got)
        return
    x = floats_of(v)
    valid = x is not None and (fn != "tensor_topk" or (type(k) is int and k >= 1))
    if not valid:
        if ok:
            wrong(f"{fn}({v!r}, {k!r}) returned {got!r}, expected an error")
        return
    if not ok:
        wrong(f"{fn}({v!r}, {k!r}) failed: {got}")
    TOTALS["checked"] += 1
    num = lambda a: None if math.isnan(a) else float(a)  # noqa: E731
    if fn == "tensor_argmax":
        assert got == int(np.argmax(x)), (got, x)
    elif fn == "tensor_max":
        m = x[int(np.argmax(x))]
        assert (got is None and math.isnan(m)) or got == float(m), (got, x)
    elif fn == "tensor_json":
        back = json.loads(got)
        assert [None if b is None else float(np.float32(b)) for b in back] == [num(a) for a in x]
    else:
        back = json.loads(got)
        order = sorted(
            range(len(x)), key=lambda i: (not math.isnan(x[i]), 0 if math.isnan(x[i]) else -x[i], i)
        )[:k]
        assert [i for i, _ in back] == order, (back, order)
        assert [None if s is None else float(np.float32(s)) for _, s in back] == [
            num(x[i]) for i in order
        ]


def check_blob(conn, store, model, tensor):
    sx, ps = literal(store)
    mx, pm = literal(model)
    tx, pt = literal(tensor)
    ok, got = run(conn, f"tensor_blob({sx}, {mx}, {tx})", ps + pm + pt)
    if any(isinstance(a, Sql) for a in (store, model, tensor)):
        return
    known = (
        store_ok(store)
        and isinstance(model, str)
        and model in MODELS
        and isinstance(tensor, str)
        and tensor in MODELS[model][0]
    )
    if known != ok:
        wrong(
            f"tensor_blob({store!r}, {model!r}, {tensor!r}): {'returned' if ok else 'failed'} {got!r}"
        )
    if ok:
        TOTALS["checked"] += 1
        assert got == MODELS[model][0][tensor].tobytes()


BATCH_QUERIES = [
    "SELECT id, x FROM inputs",
    "SELECT id, j FROM inputs",
    "SELECT id, i FROM inputs",
    "SELECT id, bag FROM inputs",
    "SELECT id, y FROM pv",
    "SELECT 1, NULL",
    "SELECT id, x FROM inputs; SELECT 2",
    "DELETE FROM inputs RETURNING id, x",
    "SELECT id FROM inputs",
    "",
    "-- c",
    "SELECT id, x FROM inputs /* c */ ;",
    "SELECT * FROM tensor_predict_batch('tensors', 'mlp', 'SELECT id, x FROM inputs')",
    "WITH RECURSIVE n(k) AS (VALUES(0) UNION ALL SELECT k + 1 FROM n WHERE k < 300)"
    " SELECT k, k % 11 FROM n",
]


def check_batch(conn, store, model, query, batch):
    args = [store, model, query] + ([] if batch is None else [batch])
    lits = [literal(a) for a in args]
    expr = ", ".join(t for t, _ in lits)
    params = [p for _, ps in lits for p in ps]
    TOTALS["calls"] += 1
    timer = threading.Timer(WATCHDOG, conn.interrupt)
    timer.start()
    try:
        rows = conn.execute(
            f"SELECT id, output FROM tensor_predict_batch({expr})", params
        ).fetchall()
        TOTALS["values"] += 1
        ok = True
    except apsw.InterruptError as e:
        TOTALS["hangs"] += 1
        raise AssertionError(f"hang: tensor_predict_batch({args!r})") from e
    except apsw.Error as e:
        TOTALS["errors"] += 1
        assert str(e).strip()
        ok = False
    finally:
        timer.cancel()
    assert conn.execute("SELECT count(*) FROM inputs").get == len(FEATURES), "the query wrote"
    if ok and not (store_ok(store) and model in KIND and isinstance(query, str)):
        if not any(isinstance(a, Sql) for a in args):
            wrong(f"tensor_predict_batch({args!r}) returned {len(rows)} rows, expected an error")
    if ok and model == "mlp" and query == "SELECT id, x FROM inputs" and store_ok(store):
        TOTALS["checked"] += 1
        tensors, layers = MODELS["mlp"]
        want, _ = reference_predict(layers, tensors, FEATURES)
        got = np.stack([as_array(o) for _, o in rows])
        if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            wrong(f"tensor_predict_batch over inputs differs from numpy: {got} vs {want}")


REPORTS = ["tensor_stats", "tensor_models", "tensor_pages"]


def check_report(conn, report, store):
    sx, ps = literal(store)
    TOTALS["calls"] += 1
    try:
        rows = conn.execute(f"SELECT * FROM {report}({sx})", ps).fetchall()
        TOTALS["values"] += 1
    except apsw.Error as e:
        TOTALS["errors"] += 1
        assert str(e).strip()
        if store_ok(store):
            wrong(f"{report}({store!r}) failed: {e}")
        return
    if not isinstance(store, Sql) and not store_ok(store):
        wrong(f"{report}({store!r}) returned {rows!r}")
    if report == "tensor_stats" and store_ok(store):
        TOTALS["checked"] += 1
        assert rows[0][0] == len(MODELS)


def check_misc(conn, fn, args):
    lits = [literal(a) for a in args]
    expr = ", ".join(t for t, _ in lits)
    run(conn, f"{fn}({expr})", [p for _, ps in lits for p in ps])


# -- the calls ---------------------------------------------------------------------------------

call = st.one_of(
    st.tuples(
        st.just("predict"), store_names, model_names, st.one_of(values, features_inputs, ids_inputs)
    ),
    st.tuples(
        st.just("predict"),
        st.just("tensors"),
        st.sampled_from(["mlp", "emb", "bag"]),
        st.one_of(features_inputs, ids_inputs, values),
    ),
    st.tuples(st.sampled_from(["tensor_argmax", "tensor_max", "tensor_json"]), values, st.none()),
    st.tuples(
        st.just("tensor_topk"),
        values | st.lists(floats32, max_size=30).map(f32blob),
        hostile_ints | values,
    ),
    st.tuples(st.just("blob"), store_names, model_names, hostile_text | values),
    st.tuples(
        st.just("batch"),
        store_names,
        model_names,
        st.sampled_from(BATCH_QUERIES) | values,
        st.none() | hostile_ints | values,
    ),
    st.tuples(st.just("report"), st.sampled_from(REPORTS), store_names | values),
    st.tuples(
        st.just("misc"),
        st.sampled_from(["tensor_version", "tensor_threads", "tensor_cache"]),
        st.lists(values, max_size=2),
    ),
)


def dispatch(conn, c):
    if c[0] == "predict":
        check_predict(conn, *c[1:])
    elif c[0] in ("tensor_argmax", "tensor_max", "tensor_json", "tensor_topk"):
        check_vector_fn(conn, c[0], c[1], c[2])
    elif c[0] == "blob":
        check_blob(conn, *c[1:])
    elif c[0] == "batch":
        check_batch(conn, *c[1:])
    elif c[0] == "report":
        check_report(conn, *c[1:])
    else:
        fn, args = c[1], c[2]
        if fn == "tensor_threads":
            args = args[:0]  # setting it would change every other test's threads
        if fn == "tensor_cache" and args and args[0] in ("policy", "budget_bytes", "clear"):
            args = args[:1]  # read a setting; never change the process's pool
        if fn == "tensor_cache" and len(args) > 1:
            args = args[:1]
        if fn == "tensor_cache" and not args:
            args = ["budget_bytes"]
        check_misc(conn, fn, args)


@SETTINGS
@given(calls=st.lists(call, min_size=1, max_size=8))
def test_fuzz_sql_calls(db, calls):
    _, conn = db
    for c in calls:
        dispatch(conn, c)


# -- the same through the shell ----------------------------------------------------------------


def shell_literal(v) -> str:
    if isinstance(v, Sql):
        return v.text
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v) if -(2**63) <= v < 2**63 else f"'{v}'"
    if isinstance(v, float):
        if math.isnan(v):
            return "NULL"
        return repr(v) if math.isfinite(v) else ("1e999" if v > 0 else "-1e999")
    if isinstance(v, bytes):
        return f"x'{v.hex()}'"
    return "'" + v.replace("\x00", "").replace("'", "''") + "'"


def shell_expr(c) -> str | None:
    kind = c[0]
    if kind == "predict":
        return f"tensor_predict({', '.join(map(shell_literal, c[1:]))})"
    if kind in ("tensor_argmax", "tensor_max", "tensor_json"):
        return f"{kind}({shell_literal(c[1])})"
    if kind == "tensor_topk":
        return f"tensor_topk({shell_literal(c[1])}, {shell_literal(c[2])})"
    if kind == "blob":
        return f"tensor_blob({', '.join(map(shell_literal, c[1:]))})"
    if kind == "batch":
        args = ", ".join(shell_literal(a) for a in c[1:4] + (() if c[4] is None else (c[4],)))
        return f"(SELECT group_concat(hex(output)) FROM tensor_predict_batch({args}))"
    if kind == "report":
        return (
            f"(SELECT group_concat(quote(models)) FROM {c[1]}({shell_literal(c[2])}))"
            if c[1] == "tensor_stats"
            else None
        )
    return None


@settings(
    max_examples=SHELL_BATCHES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(calls=st.lists(call, min_size=40, max_size=80))
def test_fuzz_through_the_shell(db, calls):
    """A batch of calls through the sqlite3 shell (its own SQLite, 3.40 on Debian): the
    shell ends normally and each statement gives what apsw gives."""
    path, conn = db
    exprs = [e for e in (shell_expr(c) for c in calls) if e is not None and "randomblob" not in e]
    script = [f".load {LOADABLE}", ".bail off", ".mode list", ".nullvalue NULL"]
    for i, e in enumerate(exprs):
        script.append(f"SELECT 'MARK {i}';")
        script.append(f"SELECT quote({e});")
    script.append("SELECT 'MARK end';")
    try:
        r = subprocess.run(
            ["sqlite3", "-batch", str(path)],
            input="\n".join(script) + "\n",
            capture_output=True,
            text=True,
            timeout=120,
            errors="replace",
            env={"PATH": os.environ["PATH"]},
        )
    except FileNotFoundError:
        pytest.skip("no sqlite3 shell")
    TOTALS["shell_runs"] += 1
    TOTALS["shell_statements"] += len(exprs)
    TOTALS["calls"] += len(exprs)
    assert r.returncode in (0, 1), f"the shell died: {r.returncode} {r.stderr[-2000:]}"
    bad = [line for line in r.stderr.splitlines() if "\ufffd" in line]
    assert not bad, f"error messages that are not valid UTF-8: {bad[:3]}"
    assert r.stdout.rstrip().endswith("MARK end"), r.stderr[-2000:]
    out = {}
    current = None
    for line in r.stdout.splitlines():
        if line.startswith("MARK "):
            current = line[5:]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    for i, e in enumerate(exprs):
        shell_lines = out.get(str(i), [])
        try:
            want = conn.execute(f"SELECT quote({e})").get
        except apsw.Error:
            want = None
        if want is None:
            if shell_lines:
                wrong(f"shell gave {shell_lines!r} for {e}; apsw an error")
        elif shell_lines != want.splitlines():
            if "tensor_topk" in e or "tensor_json" in e or "tensor_max" in e:
                continue  # real-number text may differ between SQLite versions' printf
            wrong(f"shell gave {shell_lines!r} for {e}; apsw {want!r}")
