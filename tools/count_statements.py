"""Count the SQL statements the engine runs (its own included, via SQLITE_TRACE_STMT) and
time three read paths: a tensor_store scan with its data column, 100 tensor_predict calls
(one plan load each) and 100 tensor_blob calls. Run it under two builds side by side:

    PYTHONPATH=<tree> python tools/count_statements.py /tmp/rt.sqlite <label>

The store is made on first use (300 small tensors and a one-layer model)."""

import os
import statistics
import sys
import time

import apsw
import numpy as np

import sqlite_tensor

path, label = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
if not os.path.exists(path):
    rng = np.random.default_rng(0)
    with sqlite_tensor.Store(path, block_rows=16, block_cols=16, page_blocks=4) as s:
        s.add_model(
            "m", {f"t{i}": rng.standard_normal((8, 8)).astype(np.float32) for i in range(300)}
        )
        s.add_model(
            "net",
            {"w": rng.standard_normal((16, 32)).astype(np.float32), "b": np.zeros(16, np.float32)},
            layers=[{"op": "dense", "weight": "w", "bias": "b"}],
        )
conn = apsw.Connection(path)
sqlite_tensor.load(conn)
x = np.ones(32, np.float32).tobytes()


def scan():
    conn.execute("SELECT model, tensor, data FROM tensors").fetchall()


def predicts():
    for _ in range(100):
        conn.execute("SELECT tensor_predict('tensors', 'net', ?)", (x,)).get


def blobs():
    for i in range(100):
        conn.execute("SELECT tensor_blob('tensors', 'm', ?)", (f"t{i}",)).get


out = []
for f in (scan, predicts, blobs):
    f()
    n = [0]
    conn.trace_v2(apsw.SQLITE_TRACE_STMT, lambda e: n.__setitem__(0, n[0] + 1))
    f()
    conn.trace_v2(0, None)
    ts = []
    for _ in range(25):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    out.append(f"{f.__name__}: {n[0]} statements, median {statistics.median(ts) * 1e3:.2f} ms")
print(label, " | ".join(out))
