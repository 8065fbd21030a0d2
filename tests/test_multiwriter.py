"""Several writers and readers on one store, in separate processes: nothing lost, no
wrong read.

Two writer processes add, update and drop models (each writer its own names) and pack and
lossy-dedup the whole store, as fast as they can; reader processes, two threads each,
read models and tensors and predict with them all along, in and out of read
transactions, and check every answer:

- a model read in one transaction is bit-exact one of the states it may have: a version
  its writer wrote (stress_support.version), or a state lossy dedup (or update_model
  carrying dedup's decisions) made of one, which the writer that made it registered,
  having checked that every tile is within dedup's tolerance of the version it came from;
- a tensor read alone is that tensor in one of those states;
- a prediction matches the numpy forward pass of the weights read with it (or, read
  alone, of one of the model's states).

At the end, verify() is clean and each model present is exactly what its writer last
wrote (or a registered dedup state of that version), and each model its writer dropped
is gone. BusyError (a writer waiting past its busy timeout) is counted, not a failure:
nothing is written then. The suite runs it for QUICK_SECONDS; the long run is

    STRESS_SECONDS=300 PYTHONPATH=$PWD python -m pytest -q tests/test_multiwriter.py -s

(it prints minutes, operations, reads, lost and wrong).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
import time

import apsw
import numpy as np
import stress_support as ss

import sqlite_tensor
from sqlite_tensor import blocks

QUICK_SECONDS = 12
WRITERS, READERS, THREADS = 2, 2, 2
NAMES, VERSIONS = 4, 4
PACKINGS = ("greedy", "two-stage", "affinity")


def names_of(writer: int) -> list[str]:
    return [f"w{writer}-{k}" for k in range(NAMES)]


# -- the states a model may have -----------------------------------------------------------------


def _pack_state(tensors) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **tensors)
    return buf.getvalue()


def _unpack_state(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as z:
        return {k: z[k] for k in z.files}


def root_version(name: str, tensors) -> int | None:
    """The version the state is (exactly, or within dedup's tolerance tile by tile)."""
    for v in range(VERSIONS):
        want = ss.version(name, v)
        if set(want) == set(tensors) and all(_within(tensors[k], want[k]) for k in want):
            return v
    return None


def _within(got: np.ndarray, want: np.ndarray) -> bool:
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    rows, cols = blocks.matrix_shape(want.shape)
    g, w = got.reshape(rows, cols), want.reshape(rows, cols)
    br, bc = ss.BLOCKS["block_rows"], ss.BLOCKS["block_cols"]
    for i in range(0, rows, br):
        for j in range(0, cols, bc):
            wt = w[i : i + br, j : j + bc].astype(np.float64)
            err = np.linalg.norm(g[i : i + br, j : j + bc] - wt)
            if err > ss.TOLERANCE * np.linalg.norm(wt) * 1.05 + 1e-6:
                return False
    return True


class Registry:
    """Registered non-exact states (model, root version, digest, tensors) in their own file."""

    def __init__(self, path):
        self.conn = apsw.Connection(str(path))
        self.conn.set_busy_timeout(30000)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS states(model TEXT, root INTEGER,"
            " digest TEXT, data BLOB, PRIMARY KEY(model, digest))"
        )

    def register(self, model: str, tensors) -> str | None:
        """Register a state a writer made; None if it is no version's (a wrong state)."""
        root = root_version(model, tensors)
        if root is None:
            return f"state of {model!r} is within tolerance of none of its versions"
        d = ss.digest(tensors)
        if d != ss.digest(ss.version(model, root)):
            self.conn.execute(
                "INSERT OR IGNORE INTO states VALUES (?, ?, ?, ?)",
                (model, root, d, _pack_state(tensors)),
            )
        return None

    def states(self, model: str) -> dict[str, tuple[int, dict]]:
        """{digest: (root version, tensors)} of every state model may have."""
        out = {ss.digest(ss.version(model, v)): (v, ss.version(model, v)) for v in range(VERSIONS)}
        for root, d, data in self.conn.execute(
            "SELECT root, digest, data FROM states WHERE model = ?", (model,)
        ):
            out[d] = (root, _unpack_state(data))
        return out


# -- writers --------------------------------------------------------------------------------------


def writer(index: int, path: str, registry_path: str, deadline: float, queue) -> None:
    rng = np.random.default_rng(1000 + index)
    store = sqlite_tensor.Store(path)
    registry = Registry(registry_path)
    mine = names_of(index)
    state = {n: 0 for n in mine[:2]}  # what the parent added
    ops = {k: 0 for k in ("add", "update", "drop", "pack", "dedup")}
    busy, wrong, errors = 0, [], []

    def registering_validator(s, model):
        """Called by dedup inside its write transaction, after each step: register the
        model's state as it stands (what a reader may see once dedup commits)."""
        problem = registry.register(model, s.get_model(model))
        if problem:
            wrong.append(f"dedup: {problem}")
        return 1.0

    while time.time() < deadline:
        op = str(rng.choice(list(ops), p=[0.2, 0.3, 0.15, 0.15, 0.2]))
        try:
            if op == "add":
                free = [n for n in mine if n not in state]
                if not free:
                    continue
                name, v = str(rng.choice(free)), int(rng.integers(VERSIONS))
                store.add_model(name, ss.version(name, v), layers=ss.LAYERS)
                state[name] = v
            elif op == "update":
                name = str(rng.choice(sorted(state)))
                v = int((state[name] + rng.integers(1, VERSIONS)) % VERSIONS)
                store.update_model(name, ss.version(name, v))
                state[name] = v
                # update_model keeps dedup's outcome for tiles dedup saw before: the state
                # may be an approximation of v; register it (checked within tolerance)
                store.conn.execute("BEGIN")
                try:
                    problem = registry.register(name, store.get_model(name))
                finally:
                    store.conn.execute("COMMIT")
                if problem:
                    wrong.append(f"update: {problem}")
            elif op == "drop":
                if len(state) < 2:
                    continue
                name = str(rng.choice(sorted(state)))
                store.drop_model(name)
                del state[name]
            elif op == "pack":
                store.pack(str(rng.choice(PACKINGS)), by=str(rng.choice(["model", "tensor"])))
            else:
                store.dedup(validator=registering_validator, max_drop=0.0, tolerance=ss.TOLERANCE)
            ops[op] += 1
        except apsw.BusyError:
            busy += 1  # waited past the busy timeout: nothing was written
        except Exception as e:  # noqa: BLE001 - every other error is reported
            errors.append(f"{op}: {type(e).__name__}: {e}")
    store.close()
    queue.put(
        {
            "writer": index,
            "state": state,
            "ops": ops,
            "busy": busy,
            "wrong": wrong,
            "errors": errors[:20],
            "error_count": len(errors),
        }
    )


# -- readers --------------------------------------------------------------------------------------


def reader(index: int, path: str, registry_path: str, deadline: float, queue) -> None:
    results = []
    threads = [
        threading.Thread(
            target=_read_loop, args=(index * 10 + t, path, registry_path, deadline, results)
        )
        for t in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put({"reader": index, "results": results})


def _read_loop(seed: int, path: str, registry_path: str, deadline: float, results) -> None:
    rng = np.random.default_rng(seed)
    store = sqlite_tensor.Store(path)
    registry = Registry(registry_path)
    known: dict[str, dict] = {}
    counts = {"snapshot": 0, "tensor": 0, "predict": 0, "sql": 0}
    gone, wrong, errors = 0, [], []

    def states(model, accept):
        """The model's states; looked up again (for up to 10 s) until accept(states) holds:
        an updating writer registers the state it made just after committing it."""
        until = time.time() + 10
        while True:
            if model in known and accept(known[model]):
                return True
            known[model] = registry.states(model)
            if accept(known[model]):
                return True
            if time.time() > until:
                return False
            time.sleep(0.2)

    while time.time() < deadline:
        models = store.models()
        if not models:
            continue
        model = str(rng.choice(models))
        x = ss.inputs(int(rng.integers(1 << 30)), n=int(rng.integers(1, 4)))
        kind = str(rng.choice(list(counts)))
        try:
            if kind == "snapshot":  # weights and a prediction in one read transaction
                store.conn.execute("BEGIN")
                try:
                    weights = store.get_model(model)
                    out = store.predict(model, x)
                finally:
                    store.conn.execute("COMMIT")
                d = ss.digest(weights)
                if not states(model, lambda s: d in s):
                    wrong.append(f"{kind} {model}: read a state that is none of its own")
                elif not ss.close(out, ss.forward(weights, x)):
                    wrong.append(f"{kind} {model}: predict disagrees with the weights read with it")
            elif kind == "tensor":  # one tensor, no transaction
                tensor = str(rng.choice(["w1", "b1", "w2", "b2"]))
                got = store.get_tensor(model, tensor).tobytes()
                if not states(
                    model, lambda s: any(t[tensor].tobytes() == got for _, t in s.values())
                ):
                    wrong.append(
                        f"{kind} {model}/{tensor}: read bytes that are none of its states'"
                    )
            else:  # a prediction alone, from Python or from SQL
                if kind == "predict":
                    outs = [(store.predict(model, x), x)]
                else:  # a statement per row: each row is one snapshot, the rows need not be
                    outs = [
                        (
                            np.frombuffer(
                                store.conn.execute(
                                    "SELECT tensor_predict('tensors', ?, ?)",
                                    (model, x[i].tobytes()),
                                ).get,
                                np.float32,
                            ).reshape(1, -1),
                            x[i : i + 1],
                        )
                        for i in range(len(x))
                    ]
                for out, xs in outs:
                    if not states(
                        model,
                        lambda s: any(ss.close(out, ss.forward(t, xs)) for _, t in s.values()),
                    ):
                        wrong.append(f"{kind} {model}: a prediction that fits none of its states")
            counts[kind] += 1
        except sqlite_tensor.NotFoundError:
            gone += 1  # dropped between listing and reading: a clear error
        except apsw.SQLError as e:
            if f"no model '{model}'" not in str(e):  # SQL's word for the same
                errors.append(f"{kind} {model}: {type(e).__name__}: {e}")
            else:
                gone += 1
        except Exception as e:  # noqa: BLE001 - every other error is reported
            errors.append(f"{kind} {model}: {type(e).__name__}: {e}")
    store.close()
    results.append({"reads": counts, "gone": gone, "wrong": wrong, "errors": errors})


# -- the run --------------------------------------------------------------------------------------


def run(tmp_path, seconds: float) -> dict:
    path = tmp_path / "shared.sqlite"
    registry_path = tmp_path / "registry.sqlite"
    with sqlite_tensor.Store(path, **ss.BLOCKS) as store:
        for w in range(WRITERS):
            for name in names_of(w)[:2]:
                store.add_model(name, ss.version(name, 0), layers=ss.LAYERS)
    Registry(registry_path).conn.close()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["numpy", "apsw", "sqlite_tensor", "stress_support"])
    queue = ctx.Queue()
    deadline = time.time() + seconds
    procs = [
        ctx.Process(target=writer, args=(w, str(path), str(registry_path), deadline, queue))
        for w in range(WRITERS)
    ]
    procs += [
        ctx.Process(target=reader, args=(r, str(path), str(registry_path), deadline, queue))
        for r in range(READERS)
    ]
    started = time.time()
    for p in procs:
        p.start()
    reports = [queue.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, f"a process ended with {p.exitcode}"
    minutes = (time.time() - started) / 60
    writers = sorted((r for r in reports if "writer" in r), key=lambda r: r["writer"])
    readers = [res for r in reports if "reader" in r for res in r["results"]]

    # the end: verify, and every model what its writer last wrote
    lost = []
    registry = Registry(registry_path)
    with sqlite_tensor.Store(path) as store:
        problems = store.verify()
        present = set(store.models())
        final = ss.contents(store)
        weights = {m: store.get_model(m) for m in present}
    expected = {name: v for w in writers for name, v in w["state"].items()}
    for name in sorted(present | set(expected)):
        if name not in expected:
            lost.append(f"{name}: present, but its writer dropped it")
        elif name not in present:
            lost.append(
                f"{name}: its writer's last write left it at version {expected[name]},"
                " and it is gone"
            )
        else:
            states = registry.states(name)
            if final[name] not in states or states[final[name]][0] != expected[name]:
                lost.append(
                    f"{name}: holds {'an unknown state' if final[name] not in states else f'a state of version {states[final[name]][0]}'},"
                    f" its writer's last write was version {expected[name]}"
                )
            assert ss.digest(weights[name]) == final[name]
    # Reads in a read transaction ("snapshot") and reads of one call alone ("lone": each
    # statement the call runs may see another commit) are counted apart.
    reader_wrong = [x for r in readers for x in r["wrong"]]
    reader_errors = [x for r in readers for x in r["errors"]]
    return {
        "minutes": minutes,
        "operations": {k: sum(w["ops"][k] for w in writers) for k in writers[0]["ops"]},
        "busy": sum(w["busy"] for w in writers),
        "reads": {k: sum(r["reads"][k] for r in readers) for k in readers[0]["reads"]},
        "gone": sum(r["gone"] for r in readers),
        "verify": problems,
        "lost": lost,
        "writer_wrong": [x for w in writers for x in w["wrong"]],
        "writer_errors": [x for w in writers for x in w["errors"]],
        "writer_error_count": sum(w["error_count"] for w in writers),
        "snapshot_wrong": [x for x in reader_wrong if x.startswith("snapshot ")],
        "snapshot_errors": [x for x in reader_errors if x.startswith("snapshot ")],
        "lone_wrong": [x for x in reader_wrong if not x.startswith("snapshot ")],
        "lone_errors": [x for x in reader_errors if not x.startswith("snapshot ")],
    }


def summary(out) -> str:
    return (
        f"multi-writer: {out['minutes']:.2f} min, operations {out['operations']}"
        f" ({sum(out['operations'].values())}; busy {out['busy']}), reads {out['reads']}"
        f" ({sum(out['reads'].values())}; model gone {out['gone']}), verify problems"
        f" {len(out['verify'])}, lost {len(out['lost'])}, wrong: writers"
        f" {len(out['writer_wrong'])}, snapshot reads {len(out['snapshot_wrong'])}, lone reads"
        f" {len(out['lone_wrong'])}; unexpected errors: writers {out['writer_error_count']},"
        f" snapshot reads {len(out['snapshot_errors'])}, lone reads {len(out['lone_errors'])}"
        f" (lone reads by kind, wrong/errors: {_by_kind(out)})"
    )


def _by_kind(out) -> dict:
    kinds = ("tensor", "predict", "sql")
    return {
        k: (
            sum(x.startswith(k + " ") for x in out["lone_wrong"]),
            sum(x.startswith(k + " ") for x in out["lone_errors"]),
        )
        for k in kinds
    }


def test_writers_and_readers_on_one_store(tmp_path):
    seconds = float(os.environ.get("STRESS_SECONDS", QUICK_SECONDS))
    out = run(tmp_path, seconds)
    print("\n" + summary(out))
    for key in ("lone_wrong", "lone_errors"):
        for line in out[key][:10]:
            print(f"  {key}: {line}")
    assert out["verify"] == []
    assert out["lost"] == []
    assert out["writer_wrong"] == [] and out["snapshot_wrong"] == []
    assert out["writer_errors"] == [] and out["snapshot_errors"] == []
    # the run did what it is for: every kind of write, and reads of every kind
    assert all(n > 0 for n in out["operations"].values()), out["operations"]
    assert all(n > 0 for n in out["reads"].values()), out["reads"]
    # calls outside a transaction: each holds one snapshot for all it reads
    assert out["lone_wrong"] == [] and out["lone_errors"] == []
