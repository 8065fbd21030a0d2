"""Scoring a feature table on a Dask cluster (``pip install sqlite-tensor[dask]``).

    import sqlite_tensor.dask as std
    scores = std.predict("features.parquet", "models.sqlite", "tuned", features=["f0", "f1"])
    scores.to_parquet("scores.parquet")      # lazy: nothing runs before compute / to_parquet

What a task carries is a :class:`StoreRef`: the store's path, the model's name and the
version of the model pinned when the job was made (a few hundred bytes). Model bytes never
go through the scheduler: each worker process opens the store itself, read-only, once, and
keeps it open across tasks; the pages it reads go into that process's buffer pool
(``budget_bytes=`` or the Dask setting ``sqlite-tensor.budget-bytes``).

The store reaches the workers in one of two ways (``distribute=``):

- ``"shared"``: every worker opens the same path (a shared or local disk), ``mode=ro``;
  a writer may go on committing to it during the job.
- ``"copy"``: each worker copies the file once to its own local directory, checks the
  copy's SHA-256 against the checksum taken when the job was made, and opens the copy as
  an immutable file (no locks, no change checks: nobody writes a private copy).

A store that changes during a job: the job is pinned to the version of the model it was
made with (:func:`model_version`: its layers, tensors and the hashes of its blocks, so a
``pack`` or another model added does not count as a change). A task that finds another
version raises :class:`StoreChangedError`; no task ever scores with a mix of versions.

Only ``predict`` exists; ``embed`` joins as a second function over the same StoreRef and
per-process cache once the store has encoders (docs/scale-out.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

# absolute imports: this module is sqlite_tensor.dask, these are the real Dask
import apsw
import numpy as np

try:
    import dask
    import dask.dataframe as dd
    import pandas as pd
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sqlite_tensor.dask needs Dask: pip install 'sqlite-tensor[dask]' "
        "(dask[dataframe] and distributed)"
    ) from e

from . import _engine, cache
from .connection import connect
from .errors import CorruptStoreError, TensorStoreError
from .schema import Tables, has_shadow_table
from .store import Store
from .store.writer import require_model

__all__ = [
    "predict",
    "StoreRef",
    "model_version",
    "file_checksum",
    "StoreChangedError",
    "StoreNotVisibleError",
    "DISTRIBUTE",
]

DISTRIBUTE = ("shared", "copy")
BUDGET_SETTING = "sqlite-tensor.budget-bytes"  # dask.config key a worker's config may set
COPY_CHUNK = 4 * 2**20


class StoreChangedError(TensorStoreError):
    """A worker found another version of the model than the job was made with."""


class StoreNotVisibleError(TensorStoreError, FileNotFoundError):
    """The store's path is not a readable file where it has to be read."""


@dataclass(frozen=True)
class StoreRef:
    """What each task carries to find the store: never model bytes.

    ``version`` is :func:`model_version` at submit time; ``checksum`` the file's SHA-256
    (``copy`` only); ``size`` its size in bytes then."""

    path: str
    store: str
    model: str
    version: str
    distribute: str
    checksum: str | None
    size: int
    budget_bytes: int | None = None
    threads: int | None = None
    local_dir: str | None = None


# -- pinning a version ----------------------------------------------------------------------


def model_version(store: Store, model: str) -> str:
    """A hex digest of everything ``model`` computes with, read in one snapshot: its layers,
    its tensors' names, shapes and dtypes, the hash of the block at each tile and each
    residual (with its page's checksum), and each tensor's factors. Two stores that give it
    the same digest give the same outputs. Moving blocks between pages (``pack``) or adding
    other models keeps it. NotFoundError if there is no such model."""
    try:
        return _model_version(store, model)
    except apsw.CorruptError as e:  # a malformed file: the one class for a damaged store
        if isinstance(e, CorruptStoreError):
            raise
        raise CorruptStoreError(str(e).removeprefix("CorruptError: ")) from None


def _model_version(store: Store, model: str) -> str:
    t = Tables(store.name)
    conn = store.conn
    digest = hashlib.sha256()
    began = not conn.in_transaction
    if began:
        conn.execute("BEGIN")
    try:
        model_id = require_model(store, model)
        layers = conn.execute(f"SELECT layers FROM {t.models} WHERE id = ?", (model_id,)).get
        digest.update(json.dumps([model, layers]).encode())
        for r in conn.execute(
            f"SELECT id, name, shape, dtype, rows, cols, nbytes FROM {t.tensors}"
            " WHERE model_id = ? ORDER BY id",
            (model_id,),
        ):
            digest.update(repr(r[1:]).encode())
            for block_row, block_col, h in conn.execute(
                f"SELECT m.block_row, m.block_col, b.hash FROM {t.map} m JOIN {t.blocks} b"
                " ON b.id = m.block_id WHERE m.tensor_id = ? ORDER BY m.block_row, m.block_col",
                (r[0],),
            ):
                digest.update(f"{block_row},{block_col}:".encode())
                digest.update(h if isinstance(h, bytes) else repr(h).encode())
            if has_shadow_table(conn, store.name, "residuals"):
                for res in conn.execute(
                    f"SELECT block_row, block_col, kind, param, page_id, slot, nbytes"
                    f" FROM {t.residuals} WHERE tensor_id = ? ORDER BY block_row, block_col",
                    (r[0],),
                ):
                    digest.update(repr(res).encode())
                    digest.update(_page_header(conn, store.name, res[4]))
            if has_shadow_table(conn, store.name, "factors"):
                for fac in conn.execute(
                    f"SELECT rank, u, v FROM {t.factors} WHERE tensor_id = ?", (r[0],)
                ):
                    digest.update(repr(("factors", fac[0])).encode())
                    for part in fac[1:]:  # u, v as stored (any type: the readers judge them)
                        digest.update(part if isinstance(part, bytes) else repr(part).encode())
    finally:
        if began:
            conn.execute("COMMIT")
    return digest.hexdigest()


def _page_header(conn, store: str, page_id: int) -> bytes:
    """The first 24 bytes of a page BLOB (magic, version, slot count, header size, checksum:
    the checksum covers the page's bytes, so it names the residual's content)."""
    try:
        with conn.blob_open("main", f"{store}_pages", "data", page_id, False) as blob:
            return blob.read(24)
    except apsw.SQLError:
        return b"missing"


def file_checksum(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- the per-process side: open once, keep across tasks ------------------------------------

_OPEN: dict[tuple, tuple[Store, list]] = {}
_LOCK = threading.Lock()
_SETTINGS: dict[str, object] = {}


def _uri(path: str, **params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?{query}"


def _local_dir(ref: StoreRef) -> str:
    if ref.local_dir:
        return ref.local_dir
    try:
        from distributed import get_worker

        return get_worker().local_directory
    except (ImportError, ValueError):  # not inside a distributed worker
        return tempfile.gettempdir()


def _local_copy(ref: StoreRef) -> str:
    """This host's copy of the store, made once from ref.path and checked by its SHA-256.
    Copies go to a temporary name first: a half-written copy is never opened."""
    folder = os.path.join(_local_dir(ref), "sqlite-tensor")
    os.makedirs(folder, exist_ok=True)
    dest = os.path.join(folder, f"{ref.checksum}.sqlite")
    if os.path.exists(dest):
        if os.path.getsize(dest) == ref.size and file_checksum(dest) == ref.checksum:
            return dest
        os.unlink(dest)  # a stale or damaged copy: made again below
    _require_file(ref.path, "copy")
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    digest = hashlib.sha256()
    try:
        with open(ref.path, "rb") as src, os.fdopen(fd, "wb") as out:
            while chunk := src.read(COPY_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != ref.checksum:
            raise StoreChangedError(
                f"store {ref.path}: its SHA-256 is now {digest.hexdigest()}, not "
                f"{ref.checksum} as when the job was made; the file changed during the job "
                "(distribute='copy' runs on one version: make the job again)"
            )
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def _require_file(path: str, distribute: str) -> None:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise StoreNotVisibleError(
            f"store {path}: no readable file at this path on this machine "
            f"(distribute={distribute!r} needs the path readable by every worker)"
        )


def _apply_settings(ref: StoreRef) -> None:
    """The process's pool budget and kernel threads, as this job asks (both are
    process-wide, like the pool); set only when they differ from what was set last."""
    with _LOCK:
        _apply_settings_locked(ref)


def _apply_settings_locked(ref: StoreRef) -> None:
    budget = ref.budget_bytes
    if budget is None:
        budget = dask.config.get(BUDGET_SETTING, None)
    if budget is not None and _SETTINGS.get("budget") != int(budget):
        cache.configure(budget_bytes=int(budget))
        _SETTINGS["budget"] = int(budget)
    threads = ref.threads
    if threads is None:
        try:
            from distributed import get_worker

            threads = get_worker().state.nthreads
        except (ImportError, ValueError, AttributeError):
            threads = 0  # outside a worker: one per CPU, the default
    if _SETTINGS.get("threads") != threads:
        _engine.set_threads(int(threads))
        _SETTINGS["threads"] = threads


def _open(ref: StoreRef) -> tuple[Store, list]:
    """The process's open store for ref (one per thread: a connection is used by one task at
    a time), opened read-only on first use and checked against the pinned version. The list
    holds the connection's last seen data_version (shared stores only)."""
    key = (ref.path, ref.store, ref.distribute, ref.checksum, ref.version, threading.get_ident())
    with _LOCK:
        found = _OPEN.get(key)
        if found is not None:
            return found
        # this thread's connection to another version of the same store: a finished job's
        for old in [k for k in _OPEN if k[:3] == key[:3] and k[5] == key[5]]:
            _OPEN.pop(old)[0].conn.close()
        if ref.distribute == "copy":
            local = _local_copy(ref)
            conn = connect(
                _uri(local, immutable=1),
                flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI,
            )
        else:
            _require_file(ref.path, "shared")
            conn = connect(
                _uri(ref.path, mode="ro"), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
            )
        try:
            store = Store(conn, ref.store, create=False)
            if ref.distribute == "copy":  # immutable: checked once for good
                _check_version(store, ref)
        except BaseException:
            conn.close()
            raise
        # a shared store is checked by the first task, in the snapshot it scores in
        found = _OPEN[key] = (store, [None])
        return found


def _data_version(conn) -> int:
    return conn.execute("PRAGMA data_version").get


def _check_version(store: Store, ref: StoreRef) -> None:
    now = model_version(store, ref.model)
    if now != ref.version:
        raise StoreChangedError(
            f"store {ref.path}: model {ref.model!r} is not the version the job was made with "
            f"(version {now[:16]}..., the job pinned {ref.version[:16]}...); the store "
            "changed during the job: make the job again to score with the new version"
            + (
                " (for distribute='copy', checkpoint the WAL into the file first:"
                " PRAGMA wal_checkpoint(TRUNCATE))"
                if ref.distribute == "copy"
                else ""
            )
        )


def close_all() -> None:
    """Close every store this process keeps open (tests; a worker keeps them for its life)."""
    with _LOCK:
        for store, _ in _OPEN.values():
            store.conn.close()
        _OPEN.clear()


# -- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    kind: str  # "dense" (float features), "ids" (embedding), "bags" (embedding_bag);
    # predict() makes "dense" with one column for several features "arrays"
    n_in: int | None
    n_out: int


def _signature(store: Store, model: str) -> _Signature:
    """What the model takes and gives, from its stored layers and tensor shapes."""
    layers = store.layers(model)
    if not layers:
        raise TensorStoreError(
            f"model {model!r} has no layers; give it some with Store.set_layers({model!r}, [...])"
        )
    shapes = {t.name: t.shape for t in store.tensors(model)}
    first = layers[0]
    kind = {"embedding": "ids", "embedding_bag": "bags"}.get(first["op"], "dense")
    n_in, width = None, None
    for layer in layers:
        if layer["op"] == "activation":
            continue
        shape = shapes[layer["weight"]]
        if layer["op"] in ("embedding", "embedding_bag"):
            width = shape[1]
            continue
        lin, lout = (shape[0], shape[1]) if layer.get("transpose") else (shape[1], shape[0])
        if n_in is None and width is None:
            n_in = lin
        width = lout
    return _Signature(kind, n_in, width)


def _features(frame, features) -> list[str]:
    if isinstance(features, str):
        features = [features]
    if not isinstance(features, Sequence) or not features:
        raise TypeError(f"features must be a column name or a list of them, got {features!r}")
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ValueError(
            f"the frame has no column {', '.join(map(repr, missing))} of the features; "
            f"it has {', '.join(map(repr, list(frame.columns)[:20]))}"
        )
    return list(features)


def _inputs(part: pd.DataFrame, features: list[str], kind: str):
    if kind == "bags":
        return [np.asarray(b, dtype=np.int64) for b in part[features[0]]]
    if kind == "ids":
        return part[features[0]].to_numpy(np.int64)
    if kind == "arrays":  # one column whose cells are feature vectors
        return np.stack([np.asarray(v, np.float32) for v in part[features[0]]])
    return np.ascontiguousarray(part[features].to_numpy(np.float32))


def _score(part: pd.DataFrame, ref: StoreRef, features, kind, columns, batch_size) -> pd.DataFrame:
    """One partition's outputs, on a worker."""
    if len(part) == 0:
        return pd.DataFrame(
            np.empty((0, len(columns)), np.float32), index=part.index, columns=columns
        )
    _apply_settings(ref)
    store, seen = _open(ref)
    conn = store.conn
    x = _inputs(part, features, kind)
    out = np.empty((len(part), len(columns)), np.float32)
    conn.execute("BEGIN")  # the version check and every batch in one snapshot
    try:
        if ref.distribute == "shared":
            conn.execute(f"SELECT 1 FROM {Tables(ref.store).config} LIMIT 1").fetchall()
            version = _data_version(conn)
            if version != seen[0]:  # someone committed since the last check
                _check_version(store, ref)
                seen[0] = version
        for start in range(0, len(part), batch_size):
            out[start : start + batch_size] = store.predict(
                ref.model, x[start : start + batch_size]
            )
    finally:
        conn.execute("COMMIT")
    return pd.DataFrame(out, index=part.index, columns=columns)


# -- the client side ----------------------------------------------------------------------------


def _client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _visible_on_workers(client, path: str, distribute: str) -> None:
    """Every worker of the client's cluster can read the file (asked of each worker)."""

    def readable(path=path):
        return os.path.isfile(path) and os.access(path, os.R_OK)

    seen = client.run(readable)
    blind = sorted(w for w, ok in seen.items() if not ok)
    if blind:
        raise StoreNotVisibleError(
            f"store {path}: {len(blind)} of {len(seen)} workers cannot read it "
            f"({', '.join(blind[:5])}); distribute={distribute!r} needs the path readable "
            "by every worker (a shared disk), or copy it to each worker's disk yourself"
        )


def _read(frame):
    if isinstance(frame, dd.DataFrame):
        return frame
    if isinstance(frame, pd.DataFrame):
        return dd.from_pandas(frame, npartitions=1)
    if isinstance(frame, (str, os.PathLike)):
        text = os.fspath(frame)
        if text.endswith(".csv") or "*.csv" in text:
            return dd.read_csv(text)
        return dd.read_parquet(text)
    raise TypeError(
        "frame must be a dask DataFrame, a pandas DataFrame or a Parquet/CSV path, "
        f"got {type(frame).__name__}"
    )


def predict(
    frame,
    store: str | os.PathLike,
    model: str,
    features: str | Sequence[str] = (),
    *,
    batch_size: int = 4096,
    distribute: str = "shared",
    store_name: str = "tensors",
    prefix: str = "out_",
    budget_bytes: int | None = None,
    threads: int | None = None,
    local_dir: str | None = None,
    client=None,
):
    """The model's outputs for every row of ``frame``, as a Dask DataFrame with the frame's
    partitions and index and float32 columns ``out_0 .. out_{n-1}`` (``prefix``).

    ``frame``: a dask DataFrame, a pandas DataFrame, or a Parquet path (a ``.csv`` path or
    glob is read as CSV). ``features``: the input columns in order (a dense model), one
    column of arrays, one integer column of ids (an embedding) or one column of id lists
    (an embedding_bag). ``store``: the SQLite file's path; ``distribute``: ``"shared"`` or
    ``"copy"`` (see the module's doc). ``budget_bytes``: each worker's buffer pool budget
    (else the Dask setting ``sqlite-tensor.budget-bytes``, else the pool's default);
    ``threads``: the engine's threads per worker process (default: the worker's threads).

    Checked before anything runs: the frame has the feature columns, the model exists and
    has layers, the number of features fits it, and (with a distributed client) every
    worker can read the path. The job is pinned to the model's version now: a task that
    finds another raises StoreChangedError.
    """
    if distribute not in DISTRIBUTE:
        raise ValueError(f"distribute must be one of {DISTRIBUTE}, got {distribute!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if budget_bytes is not None and (isinstance(budget_bytes, bool) or budget_bytes < 0):
        raise ValueError(f"budget_bytes must be a non-negative integer, got {budget_bytes!r}")
    if not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be the path of a SQLite file, got {type(store).__name__}")
    path = os.path.abspath(os.fspath(store))
    frame = _read(frame)
    features = _features(frame, features)
    _require_file(path, distribute)
    if distribute == "copy":
        wal = path + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            raise TensorStoreError(
                f"store {path}: its write-ahead log {wal} holds {os.path.getsize(wal)} bytes "
                "not yet in the file, which a copy of the file alone would miss; checkpoint "
                "it first (PRAGMA wal_checkpoint(TRUNCATE)) or use distribute='shared'"
            )
    conn = connect(_uri(path, mode="ro"), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        opened = Store(conn, store_name, create=False)
        conn.execute("BEGIN")
        try:
            version = model_version(opened, model)  # also: NotFoundError for no such model
            signature = _signature(opened, model)
        finally:
            conn.execute("COMMIT")
        checksum = file_checksum(path) if distribute == "copy" else None
        size = os.path.getsize(path)
    finally:
        conn.close()
    kind = signature.kind
    if kind == "dense" and len(features) == 1 and signature.n_in != 1:
        kind = "arrays"
    elif kind == "dense":
        if len(features) != signature.n_in:
            raise ValueError(
                f"model {model!r} takes {signature.n_in} features; {len(features)} columns "
                f"were given ({', '.join(map(repr, features[:10]))})"
            )
    elif len(features) != 1:
        raise ValueError(
            f"model {model!r} starts with an embedding and takes one column of "
            f"{'ids' if signature.kind == 'ids' else 'id lists'}; {len(features)} were given"
        )
    client = client if client is not None else _client()
    if client is not None:
        _visible_on_workers(client, path, distribute)
    ref = StoreRef(
        path=path,
        store=store_name,
        model=model,
        version=version,
        distribute=distribute,
        checksum=checksum,
        size=size,
        budget_bytes=budget_bytes,
        threads=threads,
        local_dir=local_dir,
    )
    columns = [f"{prefix}{i}" for i in range(signature.n_out)]
    meta = pd.DataFrame(
        {c: pd.Series([], dtype=np.float32) for c in columns},
        index=frame._meta.index,
    )
    return frame[features].map_partitions(
        _score,
        ref,
        features,
        kind,
        columns,
        batch_size,
        meta=meta,
        align_dataframes=False,
    )
