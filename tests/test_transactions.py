"""Writes are all-or-nothing: a failure anywhere in add_model / drop_model leaves the database
byte for byte as it was, on its own or inside the caller's transaction; defensive mode is
lifted only for the API's own writes."""

from __future__ import annotations

import apsw
import numpy as np
import pytest
from conftest import SMALL, random_array, same, snapshot

import sqlite_tensor
from sqlite_tensor import ingest, pages


class Boom(RuntimeError):
    pass


def fail_on_call(n, real):
    """A stand-in for `real` that raises Boom on its n-th call."""
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise Boom(f"injected failure on call {n}")
        return real(*args, **kwargs)

    wrapper.calls = calls
    return wrapper


@pytest.fixture
def loaded(store, rng):
    """A store holding two models that share blocks."""
    base = {"w": random_array(rng, (9, 11), np.float32), "b": random_array(rng, (11,), np.float32)}
    store.add_model("base", base)
    store.add_model("copy", {"w": base["w"], "b": random_array(rng, (11,), np.float32)})
    return store


def new_model(rng):
    return {
        "w": random_array(rng, (8, 13), np.float32),
        "x": random_array(rng, (4, 4), np.int8),
        "y": random_array(rng, (6, 10), np.float16),
    }


def normal_model(seed):
    """Finite float32 weights (dedup computes with them; random bit patterns overflow)."""
    r = np.random.default_rng(seed)
    return {
        "w": r.normal(0, 1, (8, 13)).astype(np.float32),
        "y": r.normal(0, 1, (6, 10)).astype(np.float32),
    }


NEW_MODEL_PAGES = 8  # new_model's 9 + 2 + 4 distinct 3 x 5 tiles, 2 to a page


def _sql_fails(store, table: str, after_rows: int, op: str = "INSERT"):
    """A temp trigger (outside the main database) that aborts writes to a shadow table
    once it holds after_rows rows: a failure in the middle of the SQL itself."""
    store.conn.execute(
        f"CREATE TEMP TRIGGER inject_failure BEFORE {op} ON main.tensors_{table}"
        f" WHEN (SELECT count(*) FROM main.tensors_{table}) >= {after_rows}"
        " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )


def _patch(monkeypatch, target, name, n):
    monkeypatch.setattr(target, name, fail_on_call(n, getattr(target, name)))


# Ways for add_model to fail midway: id -> (set-up returning the tensors, exception)
FAILURES = {
    "bad-dtype": (
        lambda mp, store, rng: {"ok": np.ones((4, 4), np.float32), "bad": np.ones(3, np.complex64)},
        ValueError,
    ),
    "zero-size": (
        lambda mp, store, rng: {"ok": np.ones((4, 4), np.float32), "empty": np.ones((0, 3))},
        ValueError,
    ),
    "second-page": (
        lambda mp, store, rng: (_patch(mp, pages.PageBuilder, "finish", 2), new_model(rng))[1],
        Boom,
    ),
    "last-page": (
        lambda mp, store, rng: (
            _patch(mp, pages.PageBuilder, "finish", NEW_MODEL_PAGES),
            new_model(rng),
        )[1],
        Boom,
    ),
    "hash": (lambda mp, store, rng: (_patch(mp, store, "_hash_block", 9), new_model(rng))[1], Boom),
    "lookup": (
        lambda mp, store, rng: (_patch(mp, ingest._StoredBlocks, "find", 12), new_model(rng))[1],
        Boom,
    ),
    "map": (
        lambda mp, store, rng: (_sql_fails(store, "map", 40), new_model(rng))[1],
        apsw.ConstraintError,
    ),
    "refcounts": (
        lambda mp, store, rng: (_sql_fails(store, "blocks", 0, "UPDATE"), new_model(rng))[1],
        apsw.ConstraintError,
    ),
    "blocks": (
        lambda mp, store, rng: (_sql_fails(store, "blocks", 30), new_model(rng))[1],
        apsw.ConstraintError,
    ),
}


@pytest.mark.parametrize("which", list(FAILURES))
def test_failed_add_model_changes_nothing(loaded, rng, monkeypatch, which):
    store = loaded
    make, exc = FAILURES[which]
    before = snapshot(store.conn)
    with pytest.raises(exc):
        store.add_model("new", make(monkeypatch, store, rng))
    monkeypatch.undo()
    store.conn.execute("DROP TRIGGER IF EXISTS temp.inject_failure")
    assert snapshot(store.conn) == before
    assert not store.conn.in_transaction
    assert store.verify() == []
    # the store still works, and the same model goes in cleanly now
    store.add_model("new", new_model(np.random.default_rng(5)))
    assert store.verify() == []


def test_duplicate_model_name_changes_nothing(loaded, rng):
    before = snapshot(loaded.conn)
    with pytest.raises(ValueError, match="model 'base' already exists in store 'tensors'"):
        loaded.add_model("base", new_model(rng))
    assert snapshot(loaded.conn) == before


def test_injected_failures_really_happen_midway(loaded, rng, monkeypatch):
    """The page-writing failure strikes after some pages were written (not before any)."""
    written = []

    def trace(cursor, sql, bindings):
        if sql.startswith("INSERT INTO") and "_pages" in sql:
            written.append(sql)
        return True

    loaded.conn.exec_trace = trace
    monkeypatch.setattr(pages.PageBuilder, "finish", fail_on_call(3, pages.PageBuilder.finish))
    with pytest.raises(Boom):
        loaded.add_model("new", new_model(rng))
    assert len(written) == 2
    monkeypatch.undo()
    written.clear()
    loaded.add_model("new", new_model(rng))
    assert len(written) == NEW_MODEL_PAGES
    loaded.conn.exec_trace = None


def test_failed_drop_model_changes_nothing(loaded, monkeypatch):
    before = snapshot(loaded.conn)
    # dropping "base" rewrites its pages that "copy" still uses part of
    monkeypatch.setattr(pages.PageBuilder, "finish", fail_on_call(1, pages.PageBuilder.finish))
    with pytest.raises(Boom):
        loaded.drop_model("base")
    monkeypatch.undo()
    assert snapshot(loaded.conn) == before
    assert loaded.models() == ["base", "copy"]
    loaded.drop_model("base")
    assert loaded.verify() == []


def test_failure_inside_an_outer_transaction_rolls_back_only_itself(loaded, rng, monkeypatch):
    conn = loaded.conn
    conn.execute("BEGIN")
    first = new_model(rng)
    loaded.add_model("inside", first)
    conn.execute("CREATE TABLE user_notes(x)")
    conn.execute("INSERT INTO user_notes VALUES ('kept')")
    mid = snapshot(conn)
    monkeypatch.setattr(pages.PageBuilder, "finish", fail_on_call(3, pages.PageBuilder.finish))
    with pytest.raises(Boom):
        loaded.add_model("fails", new_model(rng))
    monkeypatch.undo()
    assert conn.in_transaction  # the caller's transaction is still open
    assert snapshot(conn) == mid
    with pytest.raises(ValueError, match="already exists"):
        loaded.add_model("inside", first)
    assert snapshot(conn) == mid
    conn.execute("COMMIT")
    assert loaded.models() == ["base", "copy", "inside"]
    assert conn.execute("SELECT x FROM user_notes").get == "kept"
    for name, arr in first.items():
        assert same(loaded.get_tensor("inside", name), arr)
    assert loaded.verify() == []


def test_outer_rollback_undoes_api_writes(loaded, rng):
    conn = loaded.conn
    before = snapshot(conn)
    conn.execute("BEGIN")
    loaded.add_model("temp", new_model(rng))
    loaded.drop_model("base")
    assert loaded.models() == ["copy", "temp"]
    conn.execute("ROLLBACK")
    assert snapshot(conn) == before
    assert loaded.verify() == []


def test_inside_apsw_savepoint_context(loaded, rng, monkeypatch):
    conn = loaded.conn
    before = snapshot(conn)
    with pytest.raises(Boom):
        with conn:  # apsw: a savepoint / transaction
            loaded.add_model("a", new_model(rng))
            monkeypatch.setattr(
                pages.PageBuilder, "finish", fail_on_call(1, pages.PageBuilder.finish)
            )
            loaded.add_model("b", new_model(rng))
    monkeypatch.undo()
    assert snapshot(conn) == before  # the context rolled back "a" too
    with conn:
        loaded.add_model("a", new_model(rng))
    assert "a" in loaded
    with conn:
        conn.execute("SAVEPOINT user_sp")
        loaded.add_model("c", new_model(rng))
        conn.execute("ROLLBACK TO user_sp")
        conn.execute("RELEASE user_sp")
    assert "c" not in loaded and loaded.verify() == []


def test_a_second_writer_waits_instead_of_interleaving(db_path, rng):
    one = sqlite_tensor.Store(db_path)
    two = sqlite_tensor.Store(sqlite_tensor.connect(db_path, busy_timeout_ms=50))
    try:
        one.conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(apsw.BusyError):
            two.add_model("m", new_model(rng))
        one.conn.execute("COMMIT")
        two.add_model("m", new_model(rng))
        assert one.models() == ["m"]
    finally:
        one.close()
        two.conn.close()


# -- defensive mode ------------------------------------------------------------------------------


def defensive(conn) -> int:
    return conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, -1)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO tensors_pages(nblocks, nbytes, data) VALUES (1, 3, x'000000')",
        "UPDATE tensors_blocks SET refcount = 99",
        "DELETE FROM tensors_map",
        "INSERT INTO tensors_models(name) VALUES ('sneaky')",
        "UPDATE tensors_config SET value = 7 WHERE key = 'block_rows'",
    ],
)
def test_defensive_mode_protects_shadow_tables_but_not_the_api(loaded, rng, sql):
    conn = loaded.conn
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    before = snapshot(conn)
    with pytest.raises(apsw.SQLError, match="may not be modified"):
        conn.execute(sql)
    assert snapshot(conn) == before
    model = new_model(rng)
    loaded.add_model("new", model)
    assert defensive(conn) == 1
    with pytest.raises(apsw.SQLError, match="may not be modified"):
        conn.execute(sql)  # still protected after the API's write
    loaded.drop_model("base")
    assert defensive(conn) == 1
    with pytest.raises(ValueError):
        loaded.add_model("new", model)  # a failed write restores it too
    assert defensive(conn) == 1
    with pytest.raises(apsw.SQLError, match="may not be modified"):
        conn.execute(sql)
    # reads are unaffected
    assert same(loaded.get_tensor("new", "w"), model["w"])
    assert loaded.verify() == [] and loaded.stats()["models"] == 2


def test_defensive_mode_inside_an_outer_transaction(loaded, rng):
    conn = loaded.conn
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    conn.execute("BEGIN")
    loaded.add_model("new", new_model(rng))
    assert defensive(conn) == 1
    with pytest.raises(apsw.SQLError, match="may not be modified"):
        conn.execute("DELETE FROM tensors_pages")
    conn.execute("COMMIT")
    assert loaded.models() == ["base", "copy", "new"] and loaded.verify() == []


def test_defensive_off_stays_off(loaded, rng):
    conn = loaded.conn
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    loaded.add_model("new", new_model(rng))
    assert defensive(conn) == 0
    conn.execute("UPDATE tensors_models SET layers = 'x' WHERE name = 'new'")  # allowed


# -- a second writer: every read-modify-write reads under the write lock -----------------------


def test_pack_sees_a_model_committed_while_it_computed_the_layout(db_path, rng, monkeypatch):
    """The layout is searched without the lock; a model another writer commits meanwhile
    is packed too (before, its blocks lost their pages: 'blocks name missing pages')."""
    from sqlite_tensor import packing

    store = sqlite_tensor.Store(db_path, **SMALL)
    other = sqlite_tensor.Store(db_path)
    store.add_model("a", new_model(rng))
    late = new_model(np.random.default_rng(99))
    real, calls = packing.pack, []

    def pack_while_another_writer_commits(groups, capacity, strategy):
        calls.append(sorted(groups))
        if len(calls) == 1:
            other.add_model("late", late)  # commits between the search and the write
        return real(groups, capacity, strategy)

    monkeypatch.setattr(packing, "pack", pack_while_another_writer_commits)
    try:
        result = store.pack("greedy", by="tensor")
        assert calls == [["a/w", "a/x", "a/y"], ["a/w", "a/x", "a/y", "late/w", "late/x", "late/y"]]
        assert result["pages_written"] > 0 and store.verify() == []
        for name, arr in late.items():
            assert same(store.get_tensor("late", name), arr)
    finally:
        other.close()
        store.close()


def test_a_writer_cannot_commit_inside_pack_or_dedup(db_path, rng, monkeypatch):
    """Inside pack's write (the layout searched again) and dedup's (its validator), a second
    writer waits for the lock and, past its busy timeout, gets a BusyError saying so."""
    from sqlite_tensor import packing

    store = sqlite_tensor.Store(db_path, **SMALL)
    other = sqlite_tensor.Store(sqlite_tensor.connect(db_path, busy_timeout_ms=50))
    store.add_model("a", normal_model(1))
    blocked = []

    def try_to_write(*args):
        with pytest.raises(
            apsw.BusyError,
            match="another connection holds the database's write"
            " lock and did not release it within the busy"
            " timeout; nothing was written",
        ):
            other.add_model("intruder", new_model(np.random.default_rng(7)))
        blocked.append(args[-1])

    real = packing.pack

    def pack(groups, capacity, strategy):
        if not blocked:  # the first search, unlocked: another writer commits meanwhile
            other.add_model("late", new_model(np.random.default_rng(8)))
            blocked.append("outside")
        else:  # the second, under the lock
            try_to_write(strategy)
        return real(groups, capacity, strategy)

    monkeypatch.setattr(packing, "pack", pack)
    store.pack("greedy")
    assert blocked == ["outside", "greedy"] and store.verify() == []
    monkeypatch.undo()

    def validator(s, model):
        try_to_write("validator")
        return 1.0

    store.dedup(validator=validator, max_drop=0.0, tolerance=0.5)
    assert "validator" in blocked and "intruder" not in store.models() and store.verify() == []
    other.conn.close()
    store.close()


def test_dedup_reads_the_models_under_the_lock(db_path, rng):
    """Another writer holds the lock and drops a model; dedup, called meanwhile, waits for
    the lock and only then lists and scores the models (listed before, the dropped one was
    scored and then failed the run)."""
    import threading

    store = sqlite_tensor.Store(db_path, **SMALL)
    other = sqlite_tensor.Store(db_path)
    base = normal_model(2)
    store.add_model("a", base)
    store.add_model("b", {k: v + np.float32(1e-3) for k, v in base.items()})
    seen = []

    def validator(s, model):
        seen.append(model)
        return 1.0

    other.conn.execute("BEGIN IMMEDIATE")
    other.drop_model("b")
    commit = threading.Timer(0.3, lambda: other.conn.execute("COMMIT"))
    commit.start()
    try:
        report = store.dedup(validator=validator, max_drop=0.0, tolerance=0.5)
    finally:
        commit.join()
    assert set(seen) == {"a"} and [m.model for m in report.models] == ["a"]
    assert store.models() == ["a"] and store.verify() == []
    other.close()
    store.close()


def test_a_writer_past_its_busy_timeout_writes_nothing(db_path, rng):
    one = sqlite_tensor.Store(db_path, **SMALL)
    two = sqlite_tensor.Store(sqlite_tensor.connect(db_path, busy_timeout_ms=50))
    one.add_model("m", new_model(rng))
    before = snapshot(two.conn)
    one.conn.execute("BEGIN IMMEDIATE")
    for write in (
        lambda: two.add_model("n", new_model(rng)),
        lambda: two.drop_model("m"),
        lambda: two.update_model("m", new_model(rng)),
        lambda: two.pack("greedy"),
        lambda: two.set_layers("m", None),
    ):
        with pytest.raises(apsw.BusyError, match="store 'tensors': another connection holds"):
            write()
        assert not two.conn.in_transaction
    one.conn.execute("COMMIT")
    assert snapshot(two.conn) == before and two.verify() == []
    one.close()
    two.conn.close()


# -- shadow tables with triggers: the store is not written ---------------------------------------


def _hostile_trigger(conn):
    """What a file could carry: a trigger on a shadow table that writes elsewhere."""
    conn.execute("CREATE TABLE IF NOT EXISTS stolen(x)")
    conn.execute(
        "CREATE TRIGGER evil AFTER INSERT ON tensors_pages"
        " BEGIN INSERT INTO stolen VALUES (new.id); END"
    )


@pytest.mark.parametrize("write", ["add", "update", "drop", "pack", "set_layers", "dedup"])
def test_a_store_whose_shadow_tables_carry_triggers_is_not_written(db_path, rng, write):
    with sqlite_tensor.Store(db_path, **SMALL) as store:
        store.add_model("m", normal_model(4))
        store.add_model("m2", normal_model(5))
        store.conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
        _hostile_trigger(store.conn)
    # connect() is in defensive mode, where SQLite refuses such a schema outright
    with pytest.raises(apsw.CorruptError, match="cannot create triggers on shadow tables"):
        sqlite_tensor.Store(db_path)
    # a caller's own connection without defensive mode: the store refuses to write
    store = sqlite_tensor.Store(apsw.Connection(str(db_path)))
    before = snapshot(store.conn)
    calls = {
        "add": lambda: store.add_model("n", normal_model(7)),
        "update": lambda: store.update_model("m", normal_model(6)),
        "drop": lambda: store.drop_model("m"),
        "pack": lambda: store.pack("greedy", by="tensor"),
        "set_layers": lambda: store.set_layers("m", None),
        "dedup": lambda: store.dedup(validator=lambda s, m: 1.0, max_drop=0, tolerance=0.5),
    }
    with pytest.raises(
        sqlite_tensor.TensorStoreError,
        match=r"store 'tensors' is not written: its shadow tables carry triggers"
        r" \('evil' on tensors_pages\), which would run with the store's"
        r" writes",
    ):
        calls[write]()
    assert snapshot(store.conn) == before and not store.conn.in_transaction
    assert store.verify() == [
        "trigger 'evil' on shadow table tensors_pages: it would run with"
        " the store's writes, which are refused while it is there"
    ]
    store.conn.execute("DROP TRIGGER evil")  # allowed in defensive mode
    calls[write]()
    assert store.verify() == [] and store.conn.execute("SELECT count(*) FROM stolen").get == 0
    store.conn.close()


def test_temp_triggers_are_the_connections_own_and_allowed(loaded, rng):
    conn = loaded.conn
    conn.execute("CREATE TEMP TABLE seen(x)")
    conn.execute(
        "CREATE TEMP TRIGGER mine AFTER INSERT ON main.tensors_models"
        " BEGIN INSERT INTO seen VALUES (new.name); END"
    )
    loaded.add_model("new", new_model(rng))
    assert conn.execute("SELECT x FROM seen").fetchall() == [("new",)]
    assert loaded.verify() == []


# -- kill -9 in the middle of each kind of write -------------------------------------------------
#
# The suite kills KILL_RUNS_QUICK writers; the long run is
#     KILL_RUNS=60 PYTHONPATH=$PWD python -m pytest -q tests/test_transactions.py -k kill -s
# (it prints the counts).

KILL_OPS = ("add", "update", "drop", "pack", "dedup")
KILL_RUNS_QUICK = 10


def test_kill_9_in_the_middle_of_a_write_loses_nothing(tmp_path):
    import multiprocessing
    import os
    import shutil
    import signal
    import time

    import stress_support as ss

    runs = int(os.environ.get("KILL_RUNS", KILL_RUNS_QUICK))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["numpy", "apsw", "sqlite_tensor", "stress_support"])
    base = tmp_path / "base.sqlite"
    ss.kill_prepare(base)
    with sqlite_tensor.Store(base) as store:
        before = ss.contents(store)
    # each operation once to its end: the state after it, and how long it takes
    after, seconds = {}, {}
    for op in KILL_OPS:
        path = tmp_path / f"after-{op}.sqlite"
        shutil.copy(base, path)
        with sqlite_tensor.Store(path) as store:
            start = time.perf_counter()
            ss.kill_operation(store, op)
            seconds[op] = time.perf_counter() - start
            after[op] = ss.contents(store)
            assert store.verify() == []
        assert after[op] != before or op == "pack"
    rng = np.random.default_rng(int(os.environ.get("KILL_SEED", 10)))
    counts = {op: {"before": 0, "after": 0, "either": 0, "killed_inside": 0} for op in KILL_OPS}
    for run in range(runs):
        op = KILL_OPS[run % len(KILL_OPS)]
        path = tmp_path / "run.sqlite"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{path}{suffix}"):
                os.remove(f"{path}{suffix}")
        shutil.copy(base, path)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=ss.kill_child, args=(str(path), op, child))
        proc.start()
        assert parent.poll(60) and parent.recv() == "start"
        time.sleep(rng.uniform(0, seconds[op] * 1.1))
        done = parent.poll(0)
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it finished first
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL or (done and proc.exitcode == 0)
        counts[op]["killed_inside"] += not done
        with sqlite_tensor.Store(path) as store:
            assert store.verify() == [], (run, op)
            state = ss.contents(store)
        # all or nothing: the whole store as before the write or as after it
        assert state in (before, after[op]), (run, op)
        # pack keeps the contents: "either" (verify() checked its pages)
        counts[op][
            "either" if before == after[op] else "before" if state == before else "after"
        ] += 1
    print(f"\nkill -9 runs: {runs}; per operation: {counts}")
    assert sum(c["killed_inside"] for c in counts.values()) >= runs // 3
