"""Scoring on a Dask cluster (sqlite_tensor.dask, issue #16): rows per second with one and
with two worker processes (one thread each) on this machine, beside Store.predict in one
process, all in one run.

The workload is compute-bound, as scoring is: a dense model 256 -> 2048 -> 2048 -> 16
(about 4.7 M multiply-adds a row, 18 MiB of float32 weights) over a feature table of
ROWS rows in Parquet files (PARTITIONS of them), read by the workers themselves; the store
is on a shared path. Both clusters are up for the whole run and are timed in turn, round
by round, so drift on a shared machine moves both; the first job on each (workers open
the store and read its pages into their pools) is timed apart as ``first``.

- ``track_scaling``: rows/s with two workers over rows/s with one (median over rounds of
  the per-round ratio). **Target >= 1.7** on this 2-core machine.
- ``track_rows_per_s``: rows/s of one worker, two workers, and ``Store.predict`` in one
  process (its default threads: one per core) over the same rows.
- ``track_cpu_us_per_row``: the workers' CPU microseconds a row (all workers' processes
  added up): with two workers as with one when nothing is lost to distribution, and
  independent of what else the machine runs, unlike the wall-clock figures.

Also a script: ``python -m asv_bench.benchmarks.bench_dask [rounds]`` prints the figures
(docs/scale-out.md quotes them, with the machine's load).
"""

from __future__ import annotations

import logging
import os
import pickle
import statistics
import sys
import time

import numpy as np

N_IN, HIDDEN, N_OUT = 256, 2048, 16
ROWS, PARTITIONS = 24_576, 16
ROUNDS = 5
FEATURES = [f"f{i}" for i in range(N_IN)]
LAYERS = [
    {"op": "dense", "weight": "fc1.weight", "bias": "fc1.bias", "activation": "relu"},
    {"op": "dense", "weight": "fc2.weight", "bias": "fc2.bias", "activation": "relu"},
    {"op": "dense", "weight": "fc3.weight", "activation": "softmax"},
]


def build(folder: str) -> tuple[str, str, np.ndarray]:
    """The store (one model "scorer") and the Parquet table; returns their paths and x."""
    import pandas as pd

    from sqlite_tensor import Store

    rng = np.random.default_rng(16)
    weights = {
        "fc1.weight": rng.standard_normal((HIDDEN, N_IN), dtype=np.float32) / 16,
        "fc1.bias": rng.standard_normal(HIDDEN, dtype=np.float32) / 4,
        "fc2.weight": rng.standard_normal((HIDDEN, HIDDEN), dtype=np.float32) / 45,
        "fc2.bias": rng.standard_normal(HIDDEN, dtype=np.float32) / 4,
        "fc3.weight": rng.standard_normal((N_OUT, HIDDEN), dtype=np.float32) / 45,
    }
    path = os.path.join(folder, "models.sqlite")
    with Store(path) as store:
        store.add_model("scorer", weights, layers=LAYERS)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    x = rng.standard_normal((ROWS, N_IN), dtype=np.float32)
    table = os.path.join(folder, "features")
    os.makedirs(table)
    step = ROWS // PARTITIONS
    for i in range(PARTITIONS):
        part = pd.DataFrame(x[i * step : (i + 1) * step], columns=FEATURES)
        part.to_parquet(os.path.join(table, f"part-{i:03d}.parquet"), index=False)
    return path, table, x


def measure(rounds: int = ROUNDS, folder: str | None = None) -> dict:
    """Every figure of this file, from one run (see the module's doc)."""
    import tempfile

    import dask.dataframe as dd
    import distributed

    import sqlite_tensor
    import sqlite_tensor.dask as std
    from sqlite_tensor import Store

    own = folder is None
    folder = folder or tempfile.mkdtemp(prefix="st-bench-dask-")
    path, table, x = build(folder)
    figures: dict = {"rows": ROWS, "partitions": PARTITIONS, "load_before": os.getloadavg()}

    def cluster(n):
        return distributed.LocalCluster(
            processes=True,
            host="127.0.0.1",
            n_workers=n,
            threads_per_worker=1,
            dashboard_address="127.0.0.1:0",  # loopback only, any free port
            silence_logs=logging.ERROR,
        )

    clusters = {n: cluster(n) for n in (1, 2)}
    clients = {n: distributed.Client(c, set_as_default=False) for n, c in clusters.items()}
    try:

        def job(n):
            frame = dd.read_parquet(table)
            return std.predict(frame, path, "scorer", features=FEATURES, client=clients[n])

        def cpu(n) -> float:
            """CPU seconds the workers' processes have used so far, all added up."""
            return sum(clients[n].run(lambda: sum(os.times()[:2])).values())

        cpu_seconds = {1: [], 2: []}
        cpu_client_seconds = {1: [], 2: []}

        def run(n) -> float:
            out = job(n)
            before, before_c = cpu(n), time.process_time()
            start = time.perf_counter()
            result = clients[n].compute(out).result()
            seconds = time.perf_counter() - start
            cpu_client_seconds[n].append(time.process_time() - before_c)
            cpu_seconds[n].append(cpu(n) - before)
            assert result.shape == (ROWS, N_OUT)
            return seconds

        for n in (1, 2):
            figures[f"first_s_{n}"] = run(n)  # open the store, fill the pools
            figures[f"read_once_bytes_{n}"] = sorted(
                clients[n].run(lambda: sqlite_tensor.cache.stats()["bytes_read"]).values()
            )
        for d in (cpu_seconds, cpu_client_seconds):
            d[1].clear(), d[2].clear()
        times = {1: [], 2: []}
        for _ in range(rounds):
            for n in (1, 2):
                times[n].append(run(n))
        figures["read_later_bytes"] = {
            n: sorted(clients[n].run(lambda: sqlite_tensor.cache.stats()["bytes_read"]).values())
            for n in (1, 2)
        }
        graph = dict(job(2).__dask_graph__())
        figures["graph_bytes_per_task"] = len(pickle.dumps(graph, protocol=5)) / len(graph)
        figures["tasks"] = len(graph)
        # Store.predict in this process, the same rows in batches of the same size
        with Store(path, create=False) as store:
            store.predict("scorer", x[:64])  # pages into this process's pool
            for threads, key in ((0, "store_predict"), (1, "store_predict_1thread")):
                sqlite_tensor.set_threads(threads)
                t, c = [], []
                for _ in range(rounds):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    for i in range(0, ROWS, 4096):
                        store.predict("scorer", x[i : i + 4096])
                    t.append(time.perf_counter() - start)
                    c.append(time.process_time() - start_cpu)
                figures[f"rows_per_s_{key}"] = ROWS / statistics.median(t)
                figures[f"cpu_us_per_row_{key}"] = 1e6 * statistics.median(c) / ROWS
            sqlite_tensor.set_threads(0)
        figures["seconds"] = times
        figures["cpu_seconds"] = cpu_seconds
        # cores the workers got: their CPU seconds over the wall seconds (on a shared
        # machine, less than the workers: see docs/scale-out.md on autogroups)
        figures["cores_used"] = {
            n: statistics.median(c / t for c, t in zip(cpu_seconds[n], times[n])) for n in (1, 2)
        }
        figures["cpu_client_s"] = {n: statistics.median(v) for n, v in cpu_client_seconds.items()}
        # the workers' CPU per row: what the job costs whatever else the machine runs
        figures["cpu_us_per_row"] = {
            n: 1e6 * statistics.median(cpu_seconds[n]) / ROWS for n in (1, 2)
        }
        figures["rows_per_s_1"] = ROWS / statistics.median(times[1])
        figures["rows_per_s_2"] = ROWS / statistics.median(times[2])
        figures["scaling"] = statistics.median(a / b for a, b in zip(times[1], times[2]))
        figures["load_after"] = os.getloadavg()
        figures["model_bytes"] = os.path.getsize(path)
    finally:
        for c in clients.values():
            c.close()
        for c in clusters.values():
            c.close()
        if own:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    return figures


class Scaling:
    """The figures of one measure() run (setup_cache: both clusters once)."""

    timeout = 600
    number = 1
    repeat = 1

    def setup_cache(self):
        return measure()

    def track_scaling(self, figures):
        return figures["scaling"]

    track_scaling.unit = "ratio"

    def track_rows_per_s(self, figures, who):
        return figures[f"rows_per_s_{who}"]

    track_rows_per_s.params = ["1", "2", "store_predict"]
    track_rows_per_s.param_names = ["workers"]
    track_rows_per_s.unit = "rows/s"

    def track_cpu_us_per_row(self, figures, workers):
        return figures["cpu_us_per_row"][int(workers)]

    track_cpu_us_per_row.params = ["1", "2"]
    track_cpu_us_per_row.param_names = ["workers"]
    track_cpu_us_per_row.unit = "us"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    f = measure(rounds)
    load = " ".join(f"{v:.2f}" for v in f["load_before"])
    after = " ".join(f"{v:.2f}" for v in f["load_after"])
    print(f"load average (1, 5, 15 min) before: {load}; after: {after}; cores: {os.cpu_count()}")
    print(f"{f['rows']} rows of {N_IN} features, {f['partitions']} Parquet partitions")
    print(
        f"model {N_IN}->{HIDDEN}->{HIDDEN}->{N_OUT}, store file {f['model_bytes'] / 2**20:.1f} MiB"
    )
    print(
        f"Store.predict, one process, one thread per core: {f['rows_per_s_store_predict']:8.0f} rows/s"
    )
    print(
        f"Store.predict, one process, one thread:          {f['rows_per_s_store_predict_1thread']:8.0f} rows/s"
    )
    print(f"Dask, 1 worker  (1 thread):                      {f['rows_per_s_1']:8.0f} rows/s")
    print(f"Dask, 2 workers (1 thread each):                 {f['rows_per_s_2']:8.0f} rows/s")
    print(f"scaling 2 workers / 1 worker (median of {rounds} rounds): {f['scaling']:.2f}")
    print(f"  per round, seconds 1 worker:  {' '.join(f'{s:.2f}' for s in f['seconds'][1])}")
    print(f"  per round, seconds 2 workers: {' '.join(f'{s:.2f}' for s in f['seconds'][2])}")
    print(
        "workers' CPU per row (all workers added): "
        + ", ".join(
            f"{n} worker{'s' if n > 1 else ''} {f['cpu_us_per_row'][n]:.0f} us" for n in (1, 2)
        )
    )
    print(
        "cores the workers got (their CPU s / wall s): "
        + ", ".join(f"{n} worker(s) {f['cores_used'][n]:.2f}" for n in (1, 2))
    )
    print(
        f"Store.predict CPU per row: {f['cpu_us_per_row_store_predict_1thread']:.0f} us (one thread),"
        f" {f['cpu_us_per_row_store_predict']:.0f} us (one per core)"
    )
    print(
        "CPU a job in this process (client and scheduler: a LocalCluster runs its scheduler"
        " here): " + ", ".join(f"{n} worker(s) {f['cpu_client_s'][n]:.2f} s" for n in (1, 2))
    )
    print(
        f"first job (open, read pages): {f['first_s_1']:.2f} s with 1 worker, {f['first_s_2']:.2f} s with 2"
    )
    print(
        f"pool bytes read per worker after the first job: 1 worker {f['read_once_bytes_1']}, 2 workers {f['read_once_bytes_2']}"
    )
    print(f"pool bytes read per worker after all rounds: {f['read_later_bytes']}")
    print(f"graph: {f['tasks']} tasks, {f['graph_bytes_per_task']:.0f} bytes a task (pickled)")


if __name__ == "__main__":
    main()
