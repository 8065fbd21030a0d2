"""Read replicas, simulated on this machine (docs/scale-out.md): one writer changes a primary
store (adds models, replaces one, packs pages) and publishes each finished version to
replica files; reader processes, each with its own buffer pool and its own replica, serve
the whole time.

Two ways of feeding a replica, as the replication tools do:
- ``backup``: SQLite's online backup API writes the new version into the replica file in
  place, in one transaction (as a LiteFS or rqlite follower applies changes under its
  readers); page ids the readers have cached come back with other bytes after a pack;
- ``rename``: a full copy is written beside the replica and renamed over it (as a
  Litestream restore or a snapshot download is put in place); a reader notices the new
  file (another inode) and opens it, its open connection still reading the old one.

Every answer must be that of the version the reader read in the same snapshot (the version
number is in the database too), and of no other: a reader never serves a page of a version
it did not open.
"""

from __future__ import annotations

import multiprocessing
import os
import time

import apsw
import numpy as np
import pytest

import sqlite_tensor
from sqlite_tensor import Store

BLOCKS = dict(block_rows=4, block_cols=8, page_blocks=2)  # many small pages: ids get reused
N_IN, HIDDEN, N_OUT = 16, 12, 3
LAYERS = [
    {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"},
    {"op": "dense", "weight": "w2"},
]
X = np.linspace(-1, 1, 4 * N_IN, dtype=np.float32).reshape(4, N_IN)
VERSIONS = 8


def weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((HIDDEN, N_IN), dtype=np.float32),
        "b1": rng.standard_normal(HIDDEN, dtype=np.float32),
        "w2": rng.standard_normal((N_OUT, HIDDEN), dtype=np.float32),
    }


def step(store: Store, v: int) -> None:
    """Version v of the primary: model "m" replaced, a model added, every third one dropped,
    and the pages packed on odd versions (so page ids are reused for other bytes)."""
    if v == 0:
        store.add_model("m", weights(1000), layers=LAYERS)
    else:
        store.update_model("m", weights(1000 + v))
    store.add_model(f"a{v}", weights(v), layers=LAYERS)
    if v % 3 == 2:
        store.drop_model(f"a{v - 1}")
    if v % 2 == 1:
        store.pack()
    store.conn.execute("CREATE TABLE IF NOT EXISTS published(version INTEGER)")
    store.conn.execute("DELETE FROM published")
    store.conn.execute("INSERT INTO published VALUES (?)", (v,))


def publish(primary: apsw.Connection, replica: str, how: str) -> None:
    if how == "backup":
        dest = apsw.Connection(replica)
        dest.set_busy_timeout(10_000)
        try:
            with dest.backup("main", primary, "main") as b:
                b.step(-1)
        finally:
            dest.close()
    else:
        tmp = replica + ".new"
        dest = apsw.Connection(tmp)
        try:
            with dest.backup("main", primary, "main") as b:
                b.step(-1)
            dest.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dest.close()
        os.replace(tmp, replica)


def reader(replica: str, how: str, stop_file: str, queue) -> None:
    """Serve until the stop file appears: each answer is (version, {model: outputs}) read in
    one snapshot. Its own pool, smaller than the store: pages come and go."""
    sqlite_tensor.set_threads(1)
    sqlite_tensor.cache.configure(budget_bytes=16 * 1024)
    # each distinct answer once: {(version, model): {output bytes}}, and how many snapshots
    answers: dict[tuple[int, str], set[bytes]] = {}
    models: dict[int, set[tuple[str, ...]]] = {}
    errors, reopened, served = [], 0, 0

    def open_replica():
        conn = sqlite_tensor.connect(replica, flags=apsw.SQLITE_OPEN_READONLY)
        return Store(conn, create=False), os.stat(replica).st_ino

    store, inode = open_replica()
    queue.put("ready")
    try:
        while not os.path.exists(stop_file):
            if how == "rename" and os.stat(replica).st_ino != inode:
                store.conn.close()
                store, inode = open_replica()  # a node learns of a new file by its inode
                reopened += 1
            try:
                store.conn.execute("BEGIN")  # one snapshot: the version and every answer
                try:
                    version = store.conn.execute("SELECT version FROM published").get
                    out = {m: store.predict(m, X) for m in store.models()}
                finally:
                    store.conn.execute("COMMIT")
                served += 1
                models.setdefault(version, set()).add(tuple(sorted(out)))
                for m, y in out.items():
                    answers.setdefault((version, m), set()).add(y.tobytes())
            except Exception as e:  # noqa: BLE001 - reported, the test fails on any
                errors.append(repr(e))
        stats = sqlite_tensor.cache.stats()
        queue.put(
            {
                "answers": answers,
                "models": models,
                "served": served,
                "errors": errors,
                "reopened": reopened,
                "stats": stats,
            }
        )
    finally:
        store.conn.close()


@pytest.mark.parametrize("how", ["backup", "rename"])
def test_readers_serve_one_version_while_a_writer_publishes(tmp_path, how):
    sqlite_tensor.set_threads(1)
    primary_path = str(tmp_path / "primary.sqlite")
    replicas = [str(tmp_path / f"replica{r}.sqlite") for r in range(2)]
    stop_file = str(tmp_path / "stop")
    expected: dict[int, dict[str, np.ndarray]] = {}
    store = Store(primary_path, **BLOCKS)

    def publish_version(v: int) -> None:
        step(store, v)
        expected[v] = {m: store.predict(m, X) for m in store.models()}
        for replica in replicas:
            publish(store.conn, replica, how)

    publish_version(0)
    ctx = multiprocessing.get_context("forkserver")
    queue = ctx.Queue()
    procs = [ctx.Process(target=reader, args=(r, how, stop_file, queue)) for r in replicas]
    for p in procs:
        p.start()
    try:
        assert [queue.get(timeout=60) for _ in procs] == ["ready"] * len(procs)
        time.sleep(0.25)
        for v in range(1, VERSIONS):
            publish_version(v)
            time.sleep(0.25)
    finally:
        open(stop_file, "w").close()
        reports = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        store.close()
    assert all(p.exitcode == 0 for p in procs)
    for report in reports:
        assert not report["errors"], report["errors"][:3]
        seen = sorted(report["models"])
        assert len(seen) >= 4, seen  # the readers did serve across versions
        assert report["served"] >= len(seen)
        for v, lists in report["models"].items():  # each snapshot: that version's models
            assert lists == {tuple(sorted(expected[v]))}, (v, lists)
        for (v, model), outputs in report["answers"].items():
            for raw in outputs:
                got = np.frombuffer(raw, np.float32).reshape(len(X), N_OUT)
                np.testing.assert_allclose(got, expected[v][model], rtol=1e-6, atol=1e-6)
                if model == "m":  # and not the answer of any other version
                    for other in expected:
                        if other != v:
                            assert not np.allclose(got, expected[other]["m"], rtol=1e-3)
        # the small pool was refilled across versions: pages were read again, not kept stale
        assert report["stats"]["misses"] > len(seen)
        if how == "rename":
            assert report["reopened"] >= 3
