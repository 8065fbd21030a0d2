"""sqlite_tensor.dask on a real dask.distributed LocalCluster: two worker processes, one
thread each, on 127.0.0.1 only, shared by the module's tests.

- outputs equal Store.predict over the whole table, for both ways the store reaches the
  workers (a shared path; a copy on each worker's disk checked by its SHA-256);
- a worker killed in the middle of a partition is survived (Dask retries the task), with
  the same answers;
- the graph the scheduler gets carries the store's path and the model's version, never
  model bytes: the workers read the pages from the file themselves;
- bad input is refused before the job starts; a store changed during a job is detected.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil

import apsw
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import dask  # noqa: E402
import dask.dataframe as dd  # noqa: E402

import sqlite_tensor.dask as std  # noqa: E402
from sqlite_tensor import NotFoundError, Store, TensorStoreError, cache  # noqa: E402

N_IN, HIDDEN, N_OUT, ROWS = 64, 2048, 5, 6000
FEATURES = [f"f{i}" for i in range(N_IN)]


def weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.standard_normal((HIDDEN, N_IN), dtype=np.float32) / 8,
        "fc1.bias": rng.standard_normal(HIDDEN, dtype=np.float32),
        "fc2.weight": rng.standard_normal((N_OUT, HIDDEN), dtype=np.float32) / 32,
    }


LAYERS = [
    {"op": "dense", "weight": "fc1.weight", "bias": "fc1.bias", "activation": "relu"},
    {"op": "dense", "weight": "fc2.weight", "activation": "softmax"},
]


def make_store(path, seed: int = 1) -> None:
    with Store(str(path)) as store:
        store.add_model("m", weights(seed), layers=LAYERS)
        store.add_model("bare", {"w": np.ones((4, 4), np.float32)})  # no layers
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def expected(path, x) -> np.ndarray:
    with Store(str(path), create=False) as store:
        return store.predict("m", x)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        processes=True,
        host="127.0.0.1",
        n_workers=2,
        threads_per_worker=1,
        dashboard_address="127.0.0.1:0",  # loopback only, any free port
        silence_logs=logging.ERROR,
    )
    with cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dask")
    path = folder / "models.sqlite"
    make_store(path)
    x = np.random.default_rng(7).standard_normal((ROWS, N_IN), dtype=np.float32)
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["id"] = np.arange(ROWS) * 3  # an index that is not 0..n-1
    frame = frame.set_index("id")
    return folder, path, frame, expected(path, x)


def same(got, want) -> None:
    """Equal to Store.predict over the whole table, within float32 rounding: the kernels are
    the same, but a batch of another size sums in another order in BLAS."""
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def worker_state(client, fn):
    return list(client.run(fn).values())


@pytest.mark.parametrize("distribute", ["shared", "copy"])
def test_equals_store_predict(client, table, distribute):
    folder, path, frame, want = table
    ddf = dd.from_pandas(frame, npartitions=6)
    out = std.predict(ddf, path, "m", features=FEATURES, distribute=distribute, batch_size=300)
    assert out.npartitions == ddf.npartitions
    got = out.compute()
    assert list(got.columns) == [f"out_{i}" for i in range(N_OUT)]
    assert (got.index == frame.index).all()
    same(got.to_numpy(), want)
    # each worker process holds one open store for the job, kept across its tasks
    where = str(path)
    opened = worker_state(
        client, lambda: sum(k[0] == where and k[2] == distribute for k in std._OPEN)
    )
    assert opened == [1, 1], opened  # one connection each (one thread each), not one a task
    if distribute == "copy":  # one checked copy per worker, on its own disk
        copies = worker_state(
            client,
            lambda dask_worker: [
                f
                for f in os.listdir(os.path.join(dask_worker.local_directory, "sqlite-tensor"))
                if f.endswith(".sqlite")
            ],
        )
        assert all(len(c) == 1 for c in copies), copies


def test_parquet_and_csv_paths(client, table):
    folder, path, frame, want = table
    head = frame.iloc[:1000]
    # (written without its index: dask 2026.8 with pandas 3.1 cannot read a named one back)
    head.reset_index(drop=True).to_parquet(folder / "x.parquet")
    head.to_csv(folder / "x.csv")
    got = std.predict(str(folder / "x.parquet"), path, "m", features=FEATURES).compute()
    same(got.to_numpy(), want[:1000])
    got = std.predict(str(folder / "x.csv"), path, "m", features=FEATURES).compute()
    same(got.to_numpy(), want[:1000])


def test_one_column_of_arrays(client, table):
    folder, path, frame, want = table
    arrays = pd.DataFrame({"x": list(frame.to_numpy()[:500])}, index=frame.index[:500])
    with dask.config.set({"dataframe.convert-string": False}):  # else arrays become text
        ddf = dd.from_pandas(arrays, npartitions=2)
    got = std.predict(ddf, path, "m", features="x").compute()
    same(got.to_numpy(), want[:500])


def test_scheduler_never_carries_model_bytes(client, table):
    folder, path, frame, want = table
    model_bytes = sum(a.nbytes for a in weights(1).values())
    assert model_bytes > 500_000
    out = std.predict(dd.from_pandas(frame, npartitions=4), path, "m", features=FEATURES)
    graph = dict(out.__dask_graph__())
    # what goes to the scheduler: the graph, pickled (the inputs' own partitions included)
    payload = pickle.dumps(graph, protocol=5)
    data_bytes = frame.to_numpy().nbytes
    assert len(payload) < data_bytes + 100_000, (len(payload), data_bytes)
    w = weights(1)["fc1.weight"]
    for row in (0, HIDDEN // 2, HIDDEN - 1):  # no run of any weight row's bytes
        assert w[row].tobytes()[:64] not in payload
    refs = [a for task in graph.values() for a in _walk(task) if isinstance(a, std.StoreRef)]
    assert refs and all(len(pickle.dumps(r)) < 1024 for r in refs)
    client.run(cache.clear)  # the pools empty: what the job reads, it reads from the file
    same(out.compute().to_numpy(), want)
    # the pages came from the file into each worker's own pool
    after = worker_state(client, lambda: cache.stats()["bytes_read"])
    assert all(a >= model_bytes * 0.9 for a in after), after


def _walk(obj, depth=0):
    """Every object reachable through the tuples, lists, dicts and task objects of a graph
    value (enough to find the StoreRef arguments)."""
    if depth > 12:
        return
    yield obj
    children = ()
    if isinstance(obj, (tuple, list, set)):
        children = obj
    elif isinstance(obj, dict):
        children = list(obj.values())
    else:
        for name in ("args", "kwargs", "func", "dependencies", "_data"):
            value = getattr(obj, name, None)
            if value is not None and value is not obj:
                children = (*children, value)
    for child in children:
        yield from _walk(child, depth + 1)


def kill_once(part, flag, partition_info=None):
    """Kills this worker process (no clean-up, as a crash would) when it is the first to take
    the flag file, in the middle of the job's fourth partition."""
    if partition_info and partition_info["number"] == 3:
        try:
            os.rename(flag, flag + ".taken")
        except FileNotFoundError:
            return part
        os._exit(1)
    return part


def test_worker_killed_mid_job_is_survived(client, table):
    folder, path, frame, want = table
    flag = str(folder / "kill-flag")
    open(flag, "w").close()
    ddf = dd.from_pandas(frame, npartitions=6)
    ddf = ddf.map_partitions(kill_once, flag, meta=ddf._meta)
    before = set(client.scheduler_info()["workers"])
    got = std.predict(ddf, path, "m", features=FEATURES, distribute="copy").compute()
    assert os.path.exists(flag + ".taken")  # a worker did die
    same(got.to_numpy(), want)
    client.wait_for_workers(2, timeout=30)
    assert set(client.scheduler_info()["workers"]) != before  # the nanny started a new one


def test_budget_per_worker(client, table):
    folder, path, frame, want = table
    budget = 3 * 2**20 + 12345
    out = std.predict(
        dd.from_pandas(frame.iloc[:200], npartitions=2),
        path,
        "m",
        features=FEATURES,
        budget_bytes=budget,
    )
    same(out.compute().to_numpy(), want[:200])
    assert budget in worker_state(client, lambda: cache.stats()["budget_bytes"])


# -- refused before the job starts -----------------------------------------------------------


def test_missing_feature_columns(client, table):
    folder, path, frame, _ = table
    ddf = dd.from_pandas(frame[FEATURES[:10]], npartitions=2)
    with pytest.raises(ValueError, match=r"no column 'f10', 'f11'.* of the features"):
        std.predict(ddf, path, "m", features=FEATURES)
    with pytest.raises(ValueError, match=r"takes 64 features; 10 columns"):
        std.predict(ddf, path, "m", features=FEATURES[:10])


def test_unknown_model(client, table):
    folder, path, frame, _ = table
    ddf = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(NotFoundError, match=r"no model 'nope' .* it has 'm', 'bare'"):
        std.predict(ddf, path, "nope", features=FEATURES)
    with pytest.raises(TensorStoreError, match="has no layers"):
        std.predict(ddf, path, "bare", features=FEATURES)


def test_store_path_nobody_sees(client, table):
    folder, path, frame, _ = table
    ddf = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(std.StoreNotVisibleError, match="no readable file"):
        std.predict(ddf, folder / "absent.sqlite", "m", features=FEATURES)


@pytest.mark.parametrize("distribute", ["shared", "copy"])
def test_store_path_workers_cannot_see(client, table, distribute):
    """/proc/self/fd/N is the file here, and nothing in a worker (which has no fd N)."""
    folder, path, frame, _ = table
    fd = os.open(path, os.O_RDONLY)
    high = os.dup2(fd, 917)
    try:
        ddf = dd.from_pandas(frame, npartitions=2)
        with pytest.raises(std.StoreNotVisibleError, match=r"2 of 2 workers cannot read it"):
            std.predict(ddf, f"/proc/self/fd/{high}", "m", features=FEATURES, distribute=distribute)
    finally:
        os.close(high)
        os.close(fd)


def test_copy_refuses_a_wal_not_checkpointed(client, table, tmp_path):
    folder, path, frame, _ = table
    live = tmp_path / "live.sqlite"
    make_store(live)
    writer = Store(str(live))  # stays open: its WAL is not folded back at close
    writer.conn.execute("PRAGMA wal_autocheckpoint = 0")
    writer.add_model("new", weights(3), layers=LAYERS)
    try:
        ddf = dd.from_pandas(frame, npartitions=2)
        with pytest.raises(TensorStoreError, match=r"write-ahead log .* checkpoint it first"):
            std.predict(ddf, live, "m", features=FEATURES, distribute="copy")
    finally:
        writer.close()


# -- a store that changes during a job --------------------------------------------------------


def test_change_of_the_model_during_a_job_is_detected(client, table, tmp_path):
    folder, path, frame, want = table
    live = tmp_path / "live.sqlite"
    shutil.copy(path, live)
    ddf = dd.from_pandas(frame.iloc[:400], npartitions=2)
    job = std.predict(ddf, live, "m", features=FEATURES)  # pinned now
    with Store(str(live)) as store:  # what does not change the model keeps the pin
        store.add_model("other", weights(5), layers=LAYERS)
        store.pack()
    same(job.compute().to_numpy(), want[:400])
    with Store(str(live)) as store:
        store.update_model("m", weights(2))
    with pytest.raises(std.StoreChangedError, match=r"model 'm' is not the version the job"):
        job.compute()
    # a job made now runs on the new version
    new = std.predict(ddf, live, "m", features=FEATURES).compute()
    same(new.to_numpy(), expected(live, frame.to_numpy()[:400]))


def test_copy_of_a_file_changed_during_a_job_is_refused(client, table, tmp_path):
    folder, path, frame, _ = table
    live = tmp_path / "live.sqlite"
    shutil.copy(path, live)
    ddf = dd.from_pandas(frame.iloc[:200], npartitions=2)
    job = std.predict(ddf, live, "m", features=FEATURES, distribute="copy")
    with Store(str(live)) as store:
        store.add_model("other", weights(5), layers=LAYERS)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with pytest.raises(std.StoreChangedError, match=r"SHA-256 is now .* the file changed"):
        job.compute()


def test_not_a_store(client, table, tmp_path):
    folder, path, frame, _ = table
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 500)
    before = junk.read_bytes()
    ddf = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(Exception, match="not a database") as e:
        std.predict(ddf, junk, "m", features=FEATURES)
    assert isinstance(e.value, (apsw.NotADBError, TensorStoreError))
    assert junk.read_bytes() == before  # left as it was
