"""Store: the Python API of a tensor store (one ``tensor_store`` virtual table).

    >>> import sqlite_tensor, numpy as np
    >>> store = sqlite_tensor.Store("models.sqlite")             # creates table "tensors"
    >>> store.add_model("base", {"w": np.ones((512, 512), np.float32)})
    >>> store.add_model("copy", {"w": np.ones((512, 512), np.float32)})   # shares every block
    >>> store.stats()["dedup_ratio"]
    2.0

Reads go through the compiled engine (``tensor_blob``, the report tables) so SQL and
Python see one implementation. Writes are Python orchestration over the shadow tables,
each one transaction: a failure leaves the database exactly as it was.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import apsw
import numpy as np

from . import _engine, blocks, dtypes, formats, model_files, pages, residuals, sources
from .connection import connect, is_loaded, load
from .errors import CorruptStoreError, NotFoundError, TensorStoreError
from .ingest import IngestReport, ingest_model
from .layers import LayerError, check_layers, to_json
from .schema import PARTS, Tables, quote

OPTIONS = ("block_rows", "block_cols", "page_blocks")


@contextmanager
def _reading():
    """The error contract on read paths: a damaged store is CorruptStoreError, whether the
    engine said so (already one) or SQLite did (apsw.CorruptError: a malformed file, or
    SQLITE_CORRUPT from tensor_blob and the report tables)."""
    try:
        yield
    except CorruptStoreError:
        raise
    except apsw.CorruptError as e:
        raise CorruptStoreError(str(e).removeprefix("CorruptError: ")) from None
    except UnicodeDecodeError as e:   # a text column of a shadow table that is not UTF-8
        raise CorruptStoreError(f"a shadow table holds text that is not UTF-8 ({e})") from None


@contextmanager
def _one_snapshot(conn):
    """The reads inside see one committed state: outside a transaction each statement sees
    its own, and another writer's commit between two of them would mix versions."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor, as listed by Store.tensors()."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


class Store:
    """A store of models in a SQLite database, opened or created by name.

    ``conn_or_path`` is an ``apsw.Connection`` (the extension is loaded into it if needed)
    or a database path (opened with :func:`sqlite_tensor.connect`; :meth:`close` closes it).
    ``options`` (``block_rows``, ``block_cols``, ``page_blocks``) apply when the store is
    created; for an existing store they must match what it was created with. With
    ``create=False`` a missing store is a NotFoundError instead.
    """

    def __init__(self, conn_or_path, name: str = "tensors", *, create: bool = True,
                 **options: int):
        if not isinstance(name, str) or not name:
            raise TypeError(f"store name must be a non-empty string, got {name!r}")
        for key, value in options.items():
            if key not in OPTIONS:
                raise TypeError(f"unknown store option {key!r}; options are {', '.join(OPTIONS)}")
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"store option {key} must be an integer, got {value!r}")
        if isinstance(conn_or_path, apsw.Connection):
            self.conn, self._owns_conn = conn_or_path, False
            if not is_loaded(self.conn):
                load(self.conn)
        elif isinstance(conn_or_path, (str, os.PathLike)):
            self.conn, self._owns_conn = connect(conn_or_path), True
        else:
            raise TypeError("Store() takes an apsw.Connection or a database path, "
                            f"got {type(conn_or_path).__name__}")
        self.name = name
        self._t = Tables(name)
        try:
            self._open_or_create({k: int(v) for k, v in options.items()}, create)
        except BaseException:
            self.close()
            raise

    def _open_or_create(self, options: dict[str, int], create: bool) -> None:
        with _reading():   # a malformed file is a damaged store too
            self._open_store(options, create)

    def _open_store(self, options: dict[str, int], create: bool) -> None:
        # SQLite table names are case-insensitive: "Tensors" opens the store "tensors"
        row = self.conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table'"
                                " AND name = ? COLLATE NOCASE", (self.name,)).fetchone()
        if row is None and not create:
            raise NotFoundError(f"no tensor store named {self.name!r}")
        if row is None:
            args = ", ".join(f"{k}={v}" for k, v in options.items())
            try:
                self.conn.execute(f"CREATE VIRTUAL TABLE {quote(self.name)} USING tensor_store({args})")
            except apsw.SQLError as e:
                raise ValueError(str(e).removeprefix("SQLError: ")) from None
        elif not re.search(r'\bUSING\s+["`\[]?tensor_store\b', row[0] or "", re.IGNORECASE):
            # the module name, not just the text anywhere (a column may be called tensor_store)
            raise TensorStoreError(f"table {self.name!r} exists and is not a tensor store")
        config = dict(self.conn.execute(f"SELECT key, value FROM {self._t.config}"))
        missing = [key for key in OPTIONS if not isinstance(config.get(key), int)]
        if missing:  # say so here, not as a KeyError below
            raise CorruptStoreError(f"store {self.name!r} is corrupt: {self.name}_config has no"
                                    f" valid {', '.join(missing)}")
        for key, value in options.items():
            if config[key] != value:
                raise ValueError(f"store {self.name!r} exists with {key}={config[key]}; "
                                 f"it cannot be reopened with {key}={value}")
        self.block_rows = config["block_rows"]
        self.block_cols = config["block_cols"]
        self.page_blocks = config["page_blocks"]
        # An older store (no residual tables or index, no uid, version-1 pages) is brought
        # to the current schema by the engine, which owns it, in one transaction. Read-only
        # it stays as it is: readable, and verify() says what is old.
        db = self.conn.sqlite3pointer()
        if not self.conn.readonly("main") and _engine.store_needs_upgrade(db, self.name):
            with self._writing():
                _engine.upgrade_store(db, self.name)

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection if this Store opened it."""
        if self._owns_conn and getattr(self, "conn", None) is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Store({self.name!r}, block_rows={self.block_rows}, block_cols={self.block_cols},"
                f" page_blocks={self.page_blocks})")

    # -- writing --------------------------------------------------------------------------------

    @contextmanager
    def _writing(self, *, renew: bool = True):
        """One write transaction, or a savepoint inside the caller's transaction; shadow
        tables writable for its span only.

        BEGIN IMMEDIATE takes the write lock first, so every read-modify-write inside reads
        the state it rewrites with no other writer able to commit in between; a writer that
        holds the lock longer than the busy timeout is a BusyError saying so. A store whose
        shadow tables carry triggers is not written (see _refuse_triggers). ``renew=False``:
        the body calls _new_generation itself if it writes at all (pack, when the layout
        changed), so a transaction that finds nothing to do writes nothing.
        """
        conn = self.conn
        nested = conn.in_transaction
        if not nested:
            self._begin()
        try:
            self._refuse_triggers()
            with self._shadow_writable():
                if nested:
                    with conn:  # a savepoint
                        if renew:
                            self._new_generation()
                        yield
                else:
                    if renew:
                        self._new_generation()
                    yield
            if not nested:
                conn.execute("COMMIT")   # may be BUSY in rollback-journal mode: rolled back below
        except BaseException:
            if not nested and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except apsw.BusyError as e:
            raise apsw.BusyError(
                f"store {self.name!r}: another connection holds the database's write lock and "
                f"did not release it within the busy timeout; nothing was written, try again "
                f"({e})") from None

    @contextmanager
    def _shadow_writable(self):
        """Defensive mode makes shadow tables read-only to SQL; the store's own writes lift
        it for their transaction only (the outermost _writing that finds it on)."""
        conn = self.conn
        if not conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, -1):
            yield
            return
        conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
        outer, self._lifted = getattr(self, "_lifted", False), True
        try:
            yield
        finally:
            conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
            self._lifted = outer

    @contextmanager
    def _callers_mode(self):
        """Around code that is not the store's own inside a write (a dedup validator):
        defensive mode back as the caller had it."""
        if not getattr(self, "_lifted", False):
            yield
            return
        self.conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
        try:
            yield
        finally:
            self.conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)

    def _shadow_triggers(self) -> list[tuple[str, str]]:
        """(trigger, table) of the database's triggers on this store's shadow tables. TEMP
        triggers are the connection's own (a database file cannot carry them)."""
        names = [f"{self.name}_{part}".lower() for part in PARTS]
        return self.conn.execute(
            "SELECT name, tbl_name FROM main.sqlite_schema WHERE type = 'trigger'"
            f" AND lower(tbl_name) IN ({', '.join('?' * len(names))}) ORDER BY name",
            names).fetchall()

    def _refuse_triggers(self) -> None:
        """A trigger on a shadow table would run with the store's writes, with defensive
        mode lifted: a database file could ship one to write or call functions as we write.
        Checked under the write lock, so none can appear before the commit."""
        found = self._shadow_triggers()
        if found:
            listed = ", ".join(f"{name!r} on {table}" for name, table in found)
            raise TensorStoreError(
                f"store {self.name!r} is not written: its shadow tables carry triggers "
                f"({listed}), which would run with the store's writes. Look at them "
                "(SELECT sql FROM sqlite_schema WHERE type = 'trigger') and drop them "
                "(DROP TRIGGER ...) to write to this store")

    def _new_generation(self) -> None:
        """Mark the store changed. The buffer pool serves a cached page only while the store's
        generation is the one the page was read at. It changes when a write transaction
        begins and again after pages are rewritten or deleted; a random value (not a
        counter) stays unique even across rolled-back transactions."""
        self.conn.execute(f"UPDATE {self._t.config} SET value = random() WHERE key = 'generation'")

    def add_model(self, name: str, tensors, *, layers=None, progress=None) -> IngestReport:
        """Store a model: ``tensors`` maps names to numpy arrays, or is a path to a
        ``.safetensors`` / ``.npz`` / PyTorch ``.bin``/``.pt`` file, a Hugging Face folder or
        a sharded checkpoint (its index file or folder; see sqlite_tensor.sources), whose
        other files (config.json, tokenizer files, ...) are kept with the model so that
        :meth:`export_model` gives the folder back. Identical blocks already stored are
        shared. ``layers`` (see :meth:`set_layers`) says how to run it; ``progress(done,
        total, tensor)`` is called after each tensor. One transaction: on any error nothing
        is written."""
        _check_name("model name", name)
        source = sources.read_source(tensors) if isinstance(tensors, (str, os.PathLike)) \
            else tensors
        if isinstance(source, sources.Source):
            tensors = source.tensors
        arrays = _prepare_tensors(name, tensors)
        with self._writing():
            if self._model_id(name) is not None:
                raise ValueError(f"model {name!r} already exists in store {self.name!r}; "
                                 "drop it first or choose another name")
            report = ingest_model(
                self.conn, self._t, name, arrays, block_rows=self.block_rows,
                block_cols=self.block_cols, page_blocks=self.page_blocks,
                dtype_names={k: dtypes.name_of(a.dtype) for k, a in arrays.items()},
                hash_block=self._hash_block, progress=progress)
            if isinstance(source, sources.Source):
                model_files.save(self, self._model_id(name), source)
            if layers is not None:
                self._store_layers(name, layers)
            return report

    # Seam for tests: a colliding hash must never merge different blocks.
    _hash_block = staticmethod(blocks.block_hash)

    def drop_model(self, name: str) -> dict:
        """Remove a model; blocks no other model uses are freed, and so are their pages
        (pages left part-full are rewritten without the freed blocks).
        Returns counts of what was freed."""
        with self._writing():
            model_id = self._require_model(name)
            model_files.forget(self, model_id)   # update_model's _drop keeps them
            return self._drop(model_id)

    def _drop(self, model_id: int) -> dict:
        t = self._t
        residual_pages = {p for (p,) in self.conn.execute(
            f"SELECT DISTINCT r.page_id FROM {t.residuals} r JOIN {t.tensors} tt"
            " ON tt.id = r.tensor_id WHERE tt.model_id = ?", (model_id,))}
        for table in (t.residuals, t.dedup):
            self.conn.execute(f"DELETE FROM {table} WHERE tensor_id IN"
                              f" (SELECT id FROM {t.tensors} WHERE model_id = ?)", (model_id,))
        uses = self.conn.execute(
            f"SELECT m.block_id, count(*) FROM {t.map} m JOIN {t.tensors} tt"
            " ON tt.id = m.tensor_id WHERE tt.model_id = ? GROUP BY m.block_id",
            (model_id,)).fetchall()
        self.conn.executemany(f"UPDATE {t.blocks} SET refcount = refcount - ? WHERE id = ?",
                              [(n, bid) for bid, n in uses])
        self.conn.execute(f"DELETE FROM {t.map} WHERE tensor_id IN"
                          f" (SELECT id FROM {t.tensors} WHERE model_id = ?)", (model_id,))
        self.conn.execute(f"DELETE FROM {t.tensors} WHERE model_id = ?", (model_id,))
        self.conn.execute(f"DELETE FROM {t.models} WHERE id = ?", (model_id,))
        dead = self.conn.execute(
            f"SELECT id, page_id, nbytes FROM {t.blocks} WHERE refcount <= 0").fetchall()
        self.conn.executemany(f"DELETE FROM {t.blocks} WHERE id = ?", [(b,) for b, _, _ in dead])
        # residual pages hold one model's residuals: drop those no residual names now
        unused = [(p,) for p in sorted(residual_pages) if not self.conn.execute(
            f"SELECT 1 FROM {t.residuals} WHERE page_id = ? LIMIT 1", (p,)).fetchone()]
        self.conn.executemany(f"DELETE FROM {t.pages} WHERE id = ?", unused)
        freed_pages = self._compact_pages({page for _, page, _ in dead})  # new generation too
        return {"blocks": len(dead), "bytes": sum(n for _, _, n in dead),
                "pages": freed_pages + len(unused)}

    def _compact_pages(self, page_ids) -> int:
        """Rewrite pages that lost blocks; delete the ones left empty. Returns pages deleted."""
        t = self._t
        deleted = 0
        for page_id in sorted(page_ids):
            live = self.conn.execute(f"SELECT id, slot FROM {t.blocks} WHERE page_id = ? ORDER BY slot",
                                     (page_id,)).fetchall()
            if not live:
                self.conn.execute(f"DELETE FROM {t.pages} WHERE id = ?", (page_id,))
                deleted += 1
                continue
            old = self.conn.execute(f"SELECT data FROM {t.pages} WHERE id = ?", (page_id,)).get
            slots = pages.read_slots(old, page_id)
            data = pages.build_page([np.frombuffer(slots[s], np.uint8) for _, s in live])
            pages.update_page(self.conn, t, page_id, data, len(live))
            self.conn.executemany(f"UPDATE {t.blocks} SET slot = ? WHERE id = ?",
                                  [(new, bid) for new, (bid, _) in enumerate(live)])
        # Pages were rewritten or deleted (and their ids may be reused): pages cached since
        # this transaction began are stale too.
        self._new_generation()
        return deleted

    # -- reading --------------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Model names, in the order they were added."""
        with _reading():
            return [n for (n,) in self.conn.execute(f"SELECT name FROM {self._t.models} ORDER BY id")]

    def __contains__(self, model: str) -> bool:
        return isinstance(model, str) and self._model_id(model) is not None

    def tensors(self, model: str) -> list[TensorInfo]:
        """The tensors of a model, in the order they were added."""
        with _reading():
            model_id = self._require_model(model)
            return [TensorInfo(n, tuple(json.loads(s)), d, b) for n, s, d, b in self.conn.execute(
                f"SELECT name, shape, dtype, nbytes FROM {self._t.tensors} WHERE model_id = ?"
                " ORDER BY id", (model_id,))]

    def get_tensor(self, model: str, tensor: str) -> np.ndarray:
        """A stored tensor, bit for bit as it was added (a new array of its dtype and shape)."""
        _check_name("model name", model)
        _check_name("tensor name", tensor)
        with _reading(), _one_snapshot(self.conn):
            row = self.conn.execute(
                f"SELECT t.shape, t.dtype, t.nbytes, t.rows, t.cols FROM {self._t.tensors} t"
                f" JOIN {self._t.models} m"
                " ON m.id = t.model_id WHERE m.name = ? AND t.name = ?", (model, tensor)).fetchone()
            if row is None:
                names = [i.name for i in self.tensors(model)]  # raises for an unknown model
                raise NotFoundError(f"no tensor {tensor!r} in model {model!r}; it has "
                                    f"{', '.join(map(repr, names[:10]))}{' ...' if len(names) > 10 else ''}")
            out = np.empty(self._stored_shape(tensor, *row), dtypes.numpy_dtype(row[1]))
            # The engine's read_tensor (what SQL's tensor_blob runs) writes straight into out.
            _engine.read_tensor_into(self.conn.sqlite3pointer(), self.name, model, tensor,
                                     blocks.byte_view(out))
        return out

    def _stored_shape(self, tensor: str, shape, dtype, nbytes, rows, cols) -> tuple[int, ...]:
        """A tensor row's shape, checked against its dtype, byte count and 2-D view before
        anything is allocated for it (CorruptStoreError if they disagree)."""
        try:
            dims = tuple(json.loads(shape))
            itemsize = dtypes.numpy_dtype(dtype).itemsize
            ok = all(type(d) is int and d >= 0 for d in dims) and \
                int(np.prod(dims, dtype=object)) * itemsize == nbytes and \
                blocks.matrix_shape(dims) == (rows, cols)
        except (TypeError, ValueError) as e:
            raise CorruptStoreError(f"tensor store {self.name!r} is corrupt: tensor {tensor!r} has"
                                    f" shape {shape!r} and dtype {dtype!r} ({e})") from None
        if not ok:
            raise CorruptStoreError(f"tensor store {self.name!r} is corrupt: tensor {tensor!r} has"
                                    f" shape {shape!r} of {dtype}, which does not make the"
                                    f" {rows} x {cols} elements in {nbytes} bytes its row records")
        return dims

    def get_model(self, model: str) -> dict[str, np.ndarray]:
        """Every tensor of a model, by name (all read in one snapshot)."""
        with _one_snapshot(self.conn):
            return {info.name: self.get_tensor(model, info.name) for info in self.tensors(model)}

    def export_model(self, model: str, path) -> dict:
        """Write a model to a .safetensors or .npz file (chosen by suffix), or to a folder
        laid out as it came in, with the files kept with it (see
        sqlite_tensor.model_files.export). Returns what was written."""
        return model_files.export(self, model, path)

    def update_model(self, name: str, tensors, *, layers=None) -> IngestReport:
        """Replace a stored model by a new version of it (a retrained model, say).

        Blocks are stored as add_model stores them. Tiles whose bytes are those a previous
        :meth:`dedup` examined keep its outcome (the shared block, the residual), so the
        next dedup examines only the tiles that changed. The model keeps its place in the
        store's order; ``layers`` replaces its layers (by default they are kept, and must
        fit the new tensors). One transaction."""
        _check_name("model name", name)
        arrays = _prepare_tensors(name, tensors)
        t = self._t
        with self._writing():
            old_id = self._require_model(name)
            old_layers = self.layers(name) if layers is None else layers
            # what dedup decided for each old tile: (tensor name, row, col) -> entry
            decided = {(tname, bi, bj): (tid, block, digest, outcome)
                       for tname, tid, bi, bj, block, digest, outcome in self.conn.execute(
                           f"SELECT tt.name, d.tensor_id, d.block_row, d.block_col, m.block_id,"
                           f" d.source_hash, d.outcome FROM {t.dedup} d"
                           f" JOIN {t.tensors} tt ON tt.id = d.tensor_id JOIN {t.map} m"
                           " ON m.tensor_id = d.tensor_id AND m.block_row = d.block_row"
                           " AND m.block_col = d.block_col WHERE tt.model_id = ?", (old_id,))}
            staging = f"{name}\x00update"
            report = ingest_model(
                self.conn, t, staging, arrays, block_rows=self.block_rows,
                block_cols=self.block_cols, page_blocks=self.page_blocks,
                dtype_names={k: dtypes.name_of(a.dtype) for k, a in arrays.items()},
                hash_block=self._hash_block)
            new_id = self._model_id(staging)
            self._carry_decisions(decided, new_id)
            self._drop(old_id)
            self.conn.execute(f"UPDATE {t.models} SET id = ?, name = ? WHERE id = ?",
                              (old_id, name, new_id))
            self.conn.execute(f"UPDATE {t.tensors} SET model_id = ? WHERE model_id = ?",
                              (old_id, new_id))
            from .dedup.writes import repack_residuals
            repack_residuals(self, old_id)   # _drop freed the blocks the new tiles left
            if old_layers is not None:
                self._store_layers(name, old_layers)
            return report

    def _carry_decisions(self, decided: dict, new_id: int) -> None:
        """Point the new version's unchanged tiles where dedup pointed the old ones."""
        t = self._t
        moves, refs, moved_residuals, logs = [], {}, [], []
        for tname, tid, bi, bj, block, digest in self.conn.execute(
                f"SELECT tt.name, m.tensor_id, m.block_row, m.block_col, m.block_id, b.hash"
                f" FROM {t.map} m JOIN {t.tensors} tt ON tt.id = m.tensor_id JOIN {t.blocks} b"
                " ON b.id = m.block_id WHERE tt.model_id = ?", (new_id,)):
            old = decided.get((tname, bi, bj))
            if old is None or old[2] != digest:
                continue   # a changed tile: the next dedup examines it
            old_tid, old_block, _, outcome = old
            logs.append((tid, bi, bj, digest, outcome))
            if old_block != block:
                moves.append((old_block, tid, bi, bj))
                refs[old_block] = refs.get(old_block, 0) + 1
                refs[block] = refs.get(block, 0) - 1
                moved_residuals.append((tid, old_tid, bi, bj))
        self.conn.executemany(f"UPDATE {t.map} SET block_id = ? WHERE tensor_id = ?"
                              " AND block_row = ? AND block_col = ?", moves)
        self.conn.executemany(f"UPDATE {t.blocks} SET refcount = refcount + ? WHERE id = ?",
                              [(n, b) for b, n in refs.items()])
        self.conn.executemany(f"UPDATE {t.residuals} SET tensor_id = ? WHERE tensor_id = ?"
                              " AND block_row = ? AND block_col = ?", moved_residuals)
        self.conn.executemany(f"INSERT INTO {t.dedup}(tensor_id, block_row, block_col,"
                              " source_hash, outcome) VALUES (?, ?, ?, ?, ?)", logs)

    def dedup(self, models=None, *, validator=None, max_drop=None, residuals: bool = True,
              **options):
        """Merge nearly identical blocks too, keeping every model within an accuracy budget.

        Each model's float32 blocks are matched (p-stable LSH) against the blocks of the
        models added before it. A close block is *substituted* by the shared one, or, with
        ``residuals=True``, kept as the shared block plus a compact residual (low-rank or
        few-bit quantized, whichever is smaller) that inference applies directly;
        ``residuals=False`` is the paper's substitution alone. Least important blocks go
        first; every few replacements ``validator(store, model)`` scores the model as
        stored (see :func:`sqlite_tensor.dedup.accuracy`), and replacements that drop the
        score by more than ``max_drop`` are rolled back.

        Options: ``tolerance`` (0.02: the largest error a replacement may leave, relative
        to the block's norm), ``search`` ("lsh", or the baselines "minhash" and
        "exhaustive"), ``check_every`` (32 replacements per validation at most),
        ``on_exceed`` ("skip": retry in halves and skip blocks that break the budget;
        "stop": end that model), ``reexamine`` (look again at entries examined before),
        ``progress`` (True: a line per step on stderr; or a callable(report, done, total)),
        and the search's own options (LSH: ``bands``, ``hashes_per_band``,
        ``bucket_width``, ``seed``). One transaction; returns a
        :class:`sqlite_tensor.dedup.DedupReport`.
        """
        from .dedup.run import dedup
        return dedup(self, models, validator=validator, max_drop=max_drop, residuals=residuals,
                     **options)

    # -- page layout ----------------------------------------------------------------------------

    def block_groups(self, by: str = "model") -> dict[str, set[int]]:
        """The distinct blocks each model (by="model") or tensor (by="tensor", named
        "model/tensor") uses: the groups sqlite_tensor.packing packs."""
        t = self._t
        if by == "model":
            sql = (f"SELECT mo.name, m.block_id FROM {t.map} m JOIN {t.tensors} tt ON tt.id = m.tensor_id"
                   f" JOIN {t.models} mo ON mo.id = tt.model_id ORDER BY mo.id, tt.id, m.block_row, m.block_col")
        elif by == "tensor":
            sql = (f"SELECT mo.name || '/' || tt.name, m.block_id FROM {t.map} m JOIN {t.tensors} tt"
                   f" ON tt.id = m.tensor_id JOIN {t.models} mo ON mo.id = tt.model_id"
                   " ORDER BY mo.id, tt.id, m.block_row, m.block_col")
        else:
            raise ValueError(f"by must be 'model' or 'tensor', got {by!r}")
        groups: dict[str, set[int]] = {}
        for name, block in self.conn.execute(sql):
            groups.setdefault(name, set()).add(block)
        return groups

    def page_layout(self) -> list[list[int]]:
        """The blocks of every page, page by page (in page id order), slot by slot."""
        layout: dict[int, list[int]] = {}
        for page, block in self.conn.execute(
                f"SELECT page_id, id FROM {self._t.blocks} ORDER BY page_id, slot"):
            layout.setdefault(page, []).append(block)
        return list(layout.values())

    def pack(self, strategy: str | None = None, *, by: str = "model") -> dict:
        """Rewrite the pages so that each model (or tensor) reads few of them: the blocks
        are laid out by sqlite_tensor.packing.pack(strategy) over block_groups(by).

        One transaction (killed halfway, the store is as before); the old pages are freed
        and the buffer pool stops serving them. Packing again when nothing changed writes
        nothing. Returns the strategy, by, pages_written, and the figures (packing.evaluate)
        before and after.
        """
        from . import packing
        strategy = packing.DEFAULT_STRATEGY if strategy is None else strategy
        result = {"strategy": strategy, "by": by, "pages_written": 0}
        # The layout search may take long: first without the write lock, then again under it
        # only if another writer changed the groups meanwhile.
        groups = self.block_groups(by)
        new = packing.pack(groups, self.page_blocks, strategy) if groups else None
        with self._writing(renew=False):
            current = self.block_groups(by)
            if current != groups:
                groups = current
                new = packing.pack(groups, self.page_blocks, strategy) if groups else None
            if not groups:
                result["before"] = result["after"] = None
                return result
            old = self.page_layout()
            result["before"] = packing.evaluate(old, groups, self.page_blocks)
            result["after"] = packing.evaluate(new, groups, self.page_blocks)
            if {frozenset(p) for p in new} == {frozenset(p) for p in old}:
                return result  # the same pages: nothing to write
            self._new_generation()
            result["pages_written"] = self._write_layout(new)
        return result

    def _write_layout(self, layout: list[list[int]]) -> int:
        """Write the pages of layout (block ids) from the blocks' current pages, point the
        blocks at them, delete the old pages. Inside a write transaction."""
        t = self._t
        where = dict((bid, (page, slot)) for bid, page, slot in self.conn.execute(
            f"SELECT id, page_id, slot FROM {t.blocks}"))
        placed = [bid for page in layout for bid in page]
        if len(placed) != len(set(placed)) or set(placed) != where.keys():
            # every old page is deleted below: a block left out would lose its bytes
            raise TensorStoreError(
                f"store {self.name!r}: a new page layout must place each of the "
                f"{len(where)} blocks once; it places {len(set(placed))} distinct blocks in "
                f"{len(placed)} slots ({len(where.keys() - set(placed))} missing)")
        old_pages = sorted({page for page, _ in where.values()})
        recent: dict[int, list] = {}   # a few old pages' slots (layouts mostly read in order)
        max_block = self.conn.execute(f"SELECT coalesce(max(nbytes), 0) FROM {t.blocks}").get
        builder = pages.PageBuilder(self.page_blocks, max_block)
        for blocks_of_page in layout:
            builder.reset()
            for bid in blocks_of_page:
                page, slot = where[bid]
                if page not in recent:
                    if len(recent) >= 16:
                        recent.pop(next(iter(recent)))
                    data = self.conn.execute(f"SELECT data FROM {t.pages} WHERE id = ?", (page,)).get
                    recent[page] = pages.read_slots(data, page)
                builder.stage(np.frombuffer(recent[page][slot], np.uint8))
                builder.commit()
            new_page = pages.insert_page(self.conn, t, builder.finish(), len(blocks_of_page))
            self.conn.executemany(f"UPDATE {t.blocks} SET page_id = ?, slot = ? WHERE id = ?",
                                  [(new_page, s, bid) for s, bid in enumerate(blocks_of_page)])
        self.conn.executemany(f"DELETE FROM {t.pages} WHERE id = ?", [(p,) for p in old_pages])
        self._new_generation()   # pages were deleted (and their ids may be reused)
        return len(layout)

    # -- running models -------------------------------------------------------------------------

    def set_layers(self, model: str, layers) -> list[dict] | None:
        """Say how to run a stored model: a list of layer dicts (see sqlite_tensor.layers),
        checked against the model's tensors (a mismatch is a LayerError naming the layer).
        Returns the canonical list stored; ``None`` removes the layers."""
        with self._writing():
            return self._store_layers(model, layers)

    def _store_layers(self, model: str, layers) -> list[dict] | None:
        model_id = self._require_model(model)
        canon = None
        if layers is not None:
            canon = check_layers(layers, {i.name: (i.shape, i.dtype) for i in self.tensors(model)})
        self.conn.execute(f"UPDATE {self._t.models} SET layers = ? WHERE id = ?",
                          (None if canon is None else to_json(canon), model_id))
        return canon

    def layers(self, model: str) -> list[dict] | None:
        """The model's layers as stored, or None."""
        model_id = self._require_model(model)
        text = self.conn.execute(f"SELECT layers FROM {self._t.models} WHERE id = ?", (model_id,)).get
        try:
            return None if text is None else json.loads(text)
        except (TypeError, ValueError) as e:
            raise TensorStoreError(f"the layers of model {model!r} cannot be read ({e}); set "
                                   "them again with Store.set_layers") from None

    def predict(self, model: str, x) -> np.ndarray:
        """Run a model in compiled code over its blocks in the buffer pool.

        Dense models take float features: ``(n_in,)`` gives ``(n_out,)``, ``(batch, n_in)``
        gives ``(batch, n_out)``. Embedding models take an id or an array of ids (one output
        row each); embedding_bag models one bag (a 1-D id array) or a list of bags.
        Returns float32. Wrong shapes or ids are a ValueError naming what was expected.
        """
        _check_name("model name", model)
        # The engine checks the model and its layers in the snapshot it runs in (a check
        # here would be another snapshot, and another round trip); it raises
        # CorruptStoreError itself.
        try:
            return _engine.predict(self.conn.sqlite3pointer(), self.name, model, x)
        except _engine.EngineError as e:
            raise TensorStoreError(str(e)) from None
        except ValueError as e:
            if str(e).startswith(f"no model '{model}'"):
                self._require_model(model)       # the message that lists the models
                raise NotFoundError(str(e)) from None   # (it was there again by then)
            if " has no layers" in str(e):
                raise TensorStoreError(f"model {model!r} has no layers; give it some with "
                                       f"Store.set_layers({model!r}, [...])") from None
            raise

    # -- figures --------------------------------------------------------------------------------

    def stats(self) -> dict:
        """Totals: models, tensors, logical_bytes (models stored separately), physical_bytes
        (distinct blocks), distinct_blocks, pages, page_bytes, dedup_ratio, block shape."""
        return self._report("tensor_stats")[0]

    def model_stats(self) -> list[dict]:
        """Per model: tensors, blocks, logical, physical and private bytes, pages it reads."""
        return self._report("tensor_models")

    def page_stats(self) -> list[dict]:
        """Per page: bytes, blocks, and how many models and tensors use it."""
        return self._report("tensor_pages")

    def _report(self, table: str) -> list[dict]:
        cursor = self.conn.cursor()
        # names per row: with no rows (an empty store) there is no description to ask for
        cursor.row_trace = lambda cur, row: dict(zip([d[0] for d in cur.get_description()], row))
        with _reading():
            return list(cursor.execute(f"SELECT * FROM {table}(?)", (self.name,)))

    def verify(self) -> list[str]:
        """Check the store's invariants; returns the problems found (empty when sound).

        Reference counts match the map, every tensor maps every block of its grid (each of
        its tile's size) and agrees with its shape and dtype, every block sits in its page at
        the right length and hashes to its recorded hash, and no row names a missing one,
        nor is any block or page orphaned. Every page is of a known format with a matching
        checksum (version 2; a version-1 page is reported), and the store's schema is the
        current one.
        """
        t = self._t
        problems = []
        has_residuals = self.conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND"
                                          " name = ? COLLATE NOCASE",
                                          (f"{self.name}_residuals",)).fetchone() is not None
        config = dict(self.conn.execute(f"SELECT key, value FROM {t.config}"))
        for key in OPTIONS:
            if config.get(key) != getattr(self, key):
                problems.append(f"config: {key} is {config.get(key)!r}, the store was opened "
                                f"with {getattr(self, key)}")
        page_format = config.get("format_version")
        if page_format not in (1, 2):
            problems.append(f"config: format_version is {page_format!r}; versions are 1 and 2")
            page_format = 2
        if "uid" not in config:
            problems.append("config: no uid (an older store): its pages are never cached;"
                            " open the store writable to upgrade it")
        if _engine.store_needs_upgrade(self.conn.sqlite3pointer(), self.name):
            problems.append("schema: older than this sqlite-tensor's (missing tables, index,"
                            " uid or version-2 pages); open the store writable to upgrade it")
        for bid, ref, used in self.conn.execute(
                f"SELECT b.id, b.refcount, (SELECT count(*) FROM {t.map} m WHERE m.block_id = b.id)"
                f" FROM {t.blocks} b"):
            if ref != used or used == 0:
                problems.append(f"block {bid}: refcount {ref}, used {used} times")
        for tid, rows, cols, n in self.conn.execute(
                f"SELECT t.id, t.rows, t.cols, (SELECT count(*) FROM {t.map} m WHERE m.tensor_id = t.id)"
                f" FROM {t.tensors} t"):
            gr, gc = blocks.grid_shape(rows, cols, self.block_rows, self.block_cols)
            if n != gr * gc:
                problems.append(f"tensor {tid}: {n} blocks mapped, grid has {gr * gc}")
        for tid, shape, dtype, rows, cols, nbytes in self.conn.execute(
                f"SELECT id, shape, dtype, rows, cols, nbytes FROM {t.tensors}"):
            try:
                dims = tuple(json.loads(shape))
                want = blocks.matrix_shape(dims), int(np.prod(dims)) * dtypes.numpy_dtype(dtype).itemsize
            except (ValueError, TypeError) as e:
                problems.append(f"tensor {tid}: bad shape {shape!r} or dtype {dtype!r} ({e})")
                continue
            if want != ((rows, cols), nbytes):
                problems.append(f"tensor {tid}: {rows} x {cols} in {nbytes} bytes does not match"
                                f" shape {list(dims)} of {dtype}")
        # Every map entry must name a tile inside its tensor's grid, of that tile's size.
        for tid, bi, bj, rows, cols, nbytes, block_bytes in self.conn.execute(
                f"SELECT m.tensor_id, m.block_row, m.block_col, t.rows, t.cols, t.nbytes, b.nbytes"
                f" FROM {t.map} m JOIN {t.tensors} t ON t.id = m.tensor_id"
                f" JOIN {t.blocks} b ON b.id = m.block_id"):
            gr, gc = blocks.grid_shape(rows, cols, self.block_rows, self.block_cols)
            if not (0 <= bi < gr and 0 <= bj < gc):
                problems.append(f"tensor {tid}: block ({bi}, {bj}) is outside its {gr} x {gc} grid")
                continue
            br, bc = blocks.tile_shape(rows, cols, bi, bj, self.block_rows, self.block_cols)
            tile = br * bc
            if block_bytes * rows * cols != tile * nbytes:  # block_bytes == tile * itemsize
                problems.append(f"tensor {tid}: block ({bi}, {bj}) has {block_bytes} bytes,"
                                f" wrong for a tile of {tile} elements")
        for what, sql in (
                ("map entries name missing blocks", f"SELECT count(*) FROM {t.map} m WHERE NOT EXISTS"
                 f" (SELECT 1 FROM {t.blocks} b WHERE b.id = m.block_id)"),
                ("map entries name missing tensors", f"SELECT count(*) FROM {t.map} m WHERE NOT EXISTS"
                 f" (SELECT 1 FROM {t.tensors} tt WHERE tt.id = m.tensor_id)"),
                ("tensors name missing models", f"SELECT count(*) FROM {t.tensors} tt WHERE NOT EXISTS"
                 f" (SELECT 1 FROM {t.models} mo WHERE mo.id = tt.model_id)"),
                ("blocks name missing pages", f"SELECT count(*) FROM {t.blocks} b WHERE NOT EXISTS"
                 f" (SELECT 1 FROM {t.pages} p WHERE p.id = b.page_id)"),
                ("residuals name missing pages", f"SELECT count(*) FROM {t.residuals} r WHERE NOT EXISTS"
                 f" (SELECT 1 FROM {t.pages} p WHERE p.id = r.page_id)"),
                ("residuals have no map entry", f"SELECT count(*) FROM {t.residuals} r WHERE NOT EXISTS"
                 f" (SELECT 1 FROM {t.map} m WHERE m.tensor_id = r.tensor_id"
                 " AND m.block_row = r.block_row AND m.block_col = r.block_col)"),
                ("residuals on tensors that are not float32", f"SELECT count(*) FROM {t.residuals} r"
                 f" JOIN {t.tensors} tt ON tt.id = r.tensor_id WHERE tt.dtype <> 'float32'")):
            if "residuals" in what and not has_residuals:
                continue   # an older store, read-only: no residuals at all
            n = self.conn.execute(sql).get
            if n:
                problems.append(f"{n} {what}")
        # typeof and CAST: damaged data may be TEXT that is not even valid UTF-8
        for page_id, nblocks, kind, data in self.conn.execute(
                f"SELECT id, nblocks, typeof(data), CAST(data AS BLOB) FROM {t.pages}"):
            if kind != "blob":
                problems.append(f"page {page_id}: data is {kind}, not a BLOB")
                continue
            try:
                version = pages.header(data).version
                slots = pages.read_slots(data, page_id)   # the checksum too
            except ValueError as e:
                problems.append(f"page {page_id}: {e}")
                continue
            if version == 1:
                problems.append(f"page {page_id}: a version-1 page (no checksum)" +
                                ("; the store is of version-2 pages, which refuses it"
                                 if page_format >= 2 else "; open the store writable to upgrade it"))
            stored = self.conn.execute(f"SELECT id, slot, nbytes, hash FROM {t.blocks}"
                                       " WHERE page_id = ?", (page_id,)).fetchall()
            held = self.conn.execute(
                f"SELECT r.tensor_id, r.block_row, r.block_col, r.kind, r.param, r.slot, r.nbytes,"
                f" tt.rows, tt.cols FROM {t.residuals} r JOIN {t.tensors} tt ON tt.id = r.tensor_id"
                " WHERE r.page_id = ?", (page_id,)).fetchall() if has_residuals else []
            if not stored and not held:
                problems.append(f"page {page_id}: no blocks")
            if stored and held:
                problems.append(f"page {page_id}: holds blocks and residuals")
            if nblocks != len(slots) or len(stored) + len(held) != len(slots):
                problems.append(f"page {page_id}: nblocks {nblocks}, header has {len(slots)} slots,"
                                f" {len(stored) + len(held)} in use")
            for tid, bi, bj, kind, param, slot, nbytes, rows, cols in held:
                br, bc = blocks.tile_shape(rows, cols, bi, bj, self.block_rows, self.block_cols)
                try:
                    want = residuals.payload_bytes(kind, param, br, bc)
                except ValueError as e:
                    problems.append(f"residual of tensor {tid} ({bi}, {bj}): {e}")
                    continue
                if not 0 <= slot < len(slots) or len(slots[slot]) != nbytes or nbytes != want:
                    problems.append(f"residual of tensor {tid} ({bi}, {bj}): slot {slot} of page"
                                    f" {page_id} missing or not {want} bytes")
            for bid, slot, nbytes, digest in stored:
                if not 0 <= slot < len(slots) or len(slots[slot]) != nbytes:
                    problems.append(f"block {bid}: slot {slot} of page {page_id} missing or wrong size")
                # the store's own hash function (a test may replace it)
                elif self._hash_block(np.frombuffer(slots[slot], np.uint8)) != digest:
                    problems.append(f"block {bid}: bytes do not match its hash")
        problems.extend(self._schema_problems())
        problems.extend(model_files.problems(self))
        return problems

    def _schema_problems(self) -> list[str]:
        """Stored layers that do not fit the model's tensors (a layer naming a missing bias,
        say: set_layers refuses it, but the column may have been written by other means),
        and triggers on shadow tables (the store's writes refuse to run with them)."""
        t = self._t
        problems = []
        for model_id, model, text in self.conn.execute(
                f"SELECT id, name, layers FROM {t.models} WHERE layers IS NOT NULL ORDER BY id"):
            tensors = {}
            for name, shape, dtype in self.conn.execute(
                    f"SELECT name, shape, dtype FROM {t.tensors} WHERE model_id = ? ORDER BY id",
                    (model_id,)):
                try:
                    tensors[name] = (tuple(json.loads(shape)), dtype)
                except (TypeError, ValueError):
                    pass   # a bad shape is reported above; a layer using it fails below
            try:
                check_layers(json.loads(text), tensors)
            except (LayerError, TypeError, ValueError) as e:
                problems.append(f"model {model!r}: its stored layers do not fit its tensors: {e}")
        for name, table in self._shadow_triggers():
            problems.append(f"trigger {name!r} on shadow table {table}: it would run with the "
                            "store's writes, which are refused while it is there")
        return problems

    # -- helpers --------------------------------------------------------------------------------

    def _model_id(self, name: str) -> int | None:
        row = self.conn.execute(f"SELECT id FROM {self._t.models} WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def _require_model(self, name: str) -> int:
        _check_name("model name", name)
        model_id = self._model_id(name)
        if model_id is None:
            known = self.models()
            raise NotFoundError(f"no model {name!r} in store {self.name!r}; it has "
                                f"{', '.join(map(repr, known[:10])) or 'no models'}"
                                f"{' ...' if len(known) > 10 else ''}")
        return model_id

    # -- files kept with models; the file's free space (sqlite_tensor/model_files.py) --------

    def files(self, model: str) -> dict[str, bytes]:
        """The files kept with a model (config.json, tokenizer files, ...) by relative path."""
        with _reading():
            return model_files.files(self, model)

    def free_space(self) -> dict:
        """The database file's size and free pages: what :meth:`vacuum` would give back
        (dropping or deduplicating models frees pages but does not shrink the file)."""
        return model_files.free_space(self.conn)

    def vacuum(self) -> dict:
        """Give the file's free pages back to the file system (SQLite's VACUUM, of the whole
        database). Returns the file's bytes before and after, and ``freed``."""
        return model_files.vacuum(self.conn)

    # -- end of the files block ------------------------------------------------------------


def _check_name(what: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if "\x00" in value:  # SQL functions see C strings: "a\x00b" would be read as "a"
        raise ValueError(f"{what} {value!r} contains a NUL character")


def _prepare_tensors(model: str, tensors) -> dict[str, np.ndarray]:
    """Validate the input of add_model: C-contiguous little-endian arrays of stored dtypes."""
    if isinstance(tensors, (str, os.PathLike)):
        tensors = formats.read_tensors(tensors)
    elif not isinstance(tensors, Mapping):
        raise TypeError("tensors must be a mapping of name -> numpy array, or a path to a "
                        f".safetensors or .npz file; got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"model {model!r} has no tensors")
    out = {}
    for key, arr in tensors.items():
        _check_name("tensor name", key)
        if not isinstance(arr, np.ndarray):
            if not hasattr(arr, "__array__"):
                raise TypeError(f"tensor {key!r} must be a numpy array, got {type(arr).__name__}")
            arr = np.asarray(arr)
        try:
            dtypes.name_of(arr.dtype)
        except ValueError as e:
            raise ValueError(f"tensor {key!r}: {e}") from None
        if arr.size == 0:
            raise ValueError(f"tensor {key!r} has shape {arr.shape}: zero-size tensors cannot be stored")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        # copy(order="C"), not ascontiguousarray: that one turns 0-d arrays into 1-d
        out[key] = arr if arr.flags.c_contiguous else arr.copy(order="C")
    return out
