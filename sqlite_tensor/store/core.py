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
import math
import os
import re
from dataclasses import dataclass

import apsw
import numpy as np

from .. import _engine, blocks, dtypes, encoders, model_files
from ..connection import connect, is_loaded, load
from ..errors import CorruptStoreError, NotFoundError, TensorStoreError
from ..layers import check_layers, to_json
from ..schema import Tables, quote
from .common import OPTIONS, _check_name, _one_snapshot, _reading
from .layout import Layout
from .reports import Reports
from .transactions import Transactions
from .verify import Verify
from .writes import Writes


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor, as listed by Store.tensors()."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


class Store(Transactions, Writes, Layout, Reports, Verify):
    """A store of models in a SQLite database, opened or created by name.

    ``conn_or_path`` is an ``apsw.Connection`` (the extension is loaded into it if needed)
    or a database path (opened with :func:`sqlite_tensor.connect`; :meth:`close` closes it).
    ``options`` (``block_rows``, ``block_cols``, ``page_blocks``) apply when the store is
    created; for an existing store they must match what it was created with. With
    ``create=False`` a missing store is a NotFoundError instead.

    The methods live by concern in this package: transactions.py (the write transaction),
    writes.py (add, drop, update, dedup), layout.py (pack), reports.py (figures),
    verify.py (verify); opening, reading and running models are here.
    """

    def __init__(self, conn_or_path, name: str = "tensors", *, create: bool = True, **options: int):
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
            raise TypeError(
                "Store() takes an apsw.Connection or a database path, "
                f"got {type(conn_or_path).__name__}"
            )
        self.name = name
        self._t = Tables(name)
        try:
            self._open_or_create({k: int(v) for k, v in options.items()}, create)
        except BaseException:
            self.close()
            raise

    def _open_or_create(self, options: dict[str, int], create: bool) -> None:
        with _reading():  # a malformed file is a damaged store too
            self._open_store(options, create)

    def _open_store(self, options: dict[str, int], create: bool) -> None:
        # SQLite table names are case-insensitive: "Tensors" opens the store "tensors"
        row = self.conn.execute(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ? COLLATE NOCASE",
            (self.name,),
        ).fetchone()
        if row is None and not create:
            raise NotFoundError(f"no tensor store named {self.name!r}")
        if row is None:
            args = ", ".join(f"{k}={v}" for k, v in options.items())
            try:
                self.conn.execute(
                    f"CREATE VIRTUAL TABLE {quote(self.name)} USING tensor_store({args})"
                )
            except apsw.SQLError as e:
                raise ValueError(str(e).removeprefix("SQLError: ")) from None
        elif not re.search(r'\bUSING\s+["`\[]?tensor_store\b', row[0] or "", re.IGNORECASE):
            # the module name, not just the text anywhere (a column may be called tensor_store)
            raise TensorStoreError(f"table {self.name!r} exists and is not a tensor store")
        config = dict(self.conn.execute(f"SELECT key, value FROM {self._t.config}"))
        missing = [key for key in OPTIONS if not isinstance(config.get(key), int)]
        if missing:  # say so here, not as a KeyError below
            raise CorruptStoreError(
                f"store {self.name!r} is corrupt: {self.name}_config has no"
                f" valid {', '.join(missing)}"
            )
        for key, value in options.items():
            if config[key] != value:
                raise ValueError(
                    f"store {self.name!r} exists with {key}={config[key]}; "
                    f"it cannot be reopened with {key}={value}"
                )
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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Store({self.name!r}, block_rows={self.block_rows}, block_cols={self.block_cols},"
            f" page_blocks={self.page_blocks})"
        )

    # -- writing --------------------------------------------------------------------------------
    # -- reading --------------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Model names, in the order they were added."""
        with _reading():
            return [
                n for (n,) in self.conn.execute(f"SELECT name FROM {self._t.models} ORDER BY id")
            ]

    def __contains__(self, model: str) -> bool:
        return isinstance(model, str) and self._model_id(model) is not None

    def tensors(self, model: str) -> list[TensorInfo]:
        """The tensors of a model, in the order they were added."""
        with _reading():
            model_id = self._require_model(model)
            return [
                TensorInfo(n, tuple(json.loads(s)), d, b)
                for n, s, d, b in self.conn.execute(
                    f"SELECT name, shape, dtype, nbytes FROM {self._t.tensors} WHERE model_id = ?"
                    " ORDER BY id",
                    (model_id,),
                )
            ]

    def get_tensor(self, model: str, tensor: str) -> np.ndarray:
        """A stored tensor, bit for bit as it was added (a new array of its dtype and shape);
        a float32 tensor dedup gave residuals or factors is its effective value, what
        inference computes with."""
        _check_name("model name", model)
        _check_name("tensor name", tensor)
        # +?: a join against a bare parameter is re-prepared at every binding by SQLite
        # (its constant propagation); apsw's statement cache keeps this one as it is
        with _reading(), _one_snapshot(self.conn):
            row = self.conn.execute(
                f"SELECT t.shape, t.dtype, t.nbytes, t.rows, t.cols, t.id FROM {self._t.tensors} t"
                f" JOIN {self._t.models} m"
                " ON m.id = t.model_id WHERE m.name = +? AND t.name = +?",
                (model, tensor),
            ).fetchone()
            if row is None:
                names = [i.name for i in self.tensors(model)]  # raises for an unknown model
                raise NotFoundError(
                    f"no tensor {tensor!r} in model {model!r}; it has "
                    f"{', '.join(map(repr, names[:10]))}{' ...' if len(names) > 10 else ''}"
                )
            out = np.empty(self._stored_shape(tensor, *row[:5]), dtypes.numpy_dtype(row[1]))
            # The engine's read_tensor (what SQL's tensor_blob runs) writes straight into out;
            # it checks the row found here (same transaction) rather than looking it up again.
            _engine.read_tensor_into(
                self.conn.sqlite3pointer(),
                self.name,
                model,
                tensor,
                blocks.byte_view(out),
                found=(row[5], row[3], row[4], row[2]),
            )
        return out

    def _stored_shape(self, tensor: str, shape, dtype, nbytes, rows, cols) -> tuple[int, ...]:
        """A tensor row's shape, checked against its dtype, byte count and 2-D view before
        anything is allocated for it (CorruptStoreError if they disagree)."""
        try:
            dims = tuple(json.loads(shape))
            itemsize = dtypes.numpy_dtype(dtype).itemsize
            ok = (
                all(type(d) is int and d >= 0 for d in dims)
                and math.prod(dims) * itemsize == nbytes
                and blocks.matrix_shape(dims) == (rows, cols)
            )
        except (TypeError, ValueError) as e:
            raise CorruptStoreError(
                f"tensor store {self.name!r} is corrupt: tensor {tensor!r} has"
                f" shape {shape!r} and dtype {dtype!r} ({e})"
            ) from None
        if not ok:
            raise CorruptStoreError(
                f"tensor store {self.name!r} is corrupt: tensor {tensor!r} has"
                f" shape {shape!r} of {dtype}, which does not make the"
                f" {rows} x {cols} elements in {nbytes} bytes its row records"
            )
        return dims

    def get_model(self, model: str) -> dict[str, np.ndarray]:
        """Every tensor of a model, by name (all read in one snapshot)."""
        with _one_snapshot(self.conn):
            return {info.name: self.get_tensor(model, info.name) for info in self.tensors(model)}

    def files(self, model: str) -> dict[str, bytes]:
        """The files kept with a model (config.json, tokenizer files, ...) by relative path."""
        with _reading():
            return model_files.files(self, model)

    def export_model(self, model: str, path) -> dict:
        """Write a model to a .safetensors or .npz file (chosen by suffix), or to a folder
        laid out as it came in, with the files kept with it (see
        sqlite_tensor.model_files.export). Returns what was written."""
        return model_files.export(self, model, path)

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
        self.conn.execute(
            f"UPDATE {self._t.models} SET layers = ? WHERE id = ?",
            (None if canon is None else to_json(canon), model_id),
        )
        return canon

    def layers(self, model: str) -> list[dict] | None:
        """The model's layers as stored, or None."""
        model_id = self._require_model(model)
        text = self.conn.execute(
            f"SELECT layers FROM {self._t.models} WHERE id = ?", (model_id,)
        ).get
        try:
            return None if text is None else json.loads(text)
        except (TypeError, ValueError) as e:
            raise TensorStoreError(
                f"the layers of model {model!r} cannot be read ({e}); set "
                "them again with Store.set_layers"
            ) from None

    def predict(self, model: str, x) -> np.ndarray:
        """Run a model in compiled code over its blocks in the buffer pool.

        Dense models take float features: ``(n_in,)`` gives ``(n_out,)``, ``(batch, n_in)``
        gives ``(batch, n_out)``. Embedding models take an id or an array of ids (one output
        row each); embedding_bag models one bag (a 1-D id array) or a list of bags.
        Returns float32. Wrong shapes or ids are a ValueError naming what was expected.
        """
        return self._run(_engine.predict, model, x)

    def embed(self, model: str, texts) -> np.ndarray:
        """Sentence vectors of an encoder model (one whose first layer is
        ``{"op": "encoder", ...}``; see sqlite_tensor.encoders), computed in the engine over
        the model's blocks in the buffer pool: ``(n, hidden)`` float32 for a list of n
        texts, ``(hidden,)`` for one str. Texts are tokenized with the model's stored
        ``tokenizer.json`` (truncated to the encoder's ``max_tokens``); a list of token-id
        sequences (lists or int arrays, special tokens included) is taken as it is. The
        vector is the encoder's pooled output (normalized when the model says so), the
        same as SQL's ``tensor_embed``; :meth:`predict` runs the layers after it too (a
        classifier's logits). Bad text or ids are a ValueError naming the text."""
        return self._run(_engine.embed, model, texts)

    def _run(self, engine_call, model: str, x):
        """Run a model in the engine. The engine checks the model and its layers in the
        snapshot it runs in (a check here would be another snapshot, and another round
        trip); it raises CorruptStoreError itself."""
        _check_name("model name", model)
        try:
            return engine_call(self.conn.sqlite3pointer(), self.name, model, x)
        except _engine.EngineError as e:
            raise TensorStoreError(str(e)) from None
        except ValueError as e:
            self._explain_run_error(model, e)
            raise

    def _explain_run_error(self, model: str, e: ValueError) -> None:
        """Raise the clearer error for a failed run of model: a missing model (listing the
        store's), or a model without layers (naming its architecture when it came from a
        folder the engine does not run)."""
        if str(e).startswith(f"no model '{model}'"):
            self._require_model(model)  # the message that lists the models
            raise NotFoundError(str(e)) from None  # (it was there again by then)
        if " has no layers" in str(e):
            why = None
            if model_files.has_table(self):
                files = model_files.files(self, model)
                if "config.json" in files:
                    why = encoders.why_not(
                        files, {i.name: (i.shape, i.dtype) for i in self.tensors(model)}
                    )
            raise TensorStoreError(
                f"model {model!r} has no layers"
                + (f": it cannot run as stored, {why}" if why else "")
                + f"; give it some with Store.set_layers({model!r}, [...])"
            ) from None

    def tokenize(self, model: str, texts, *, pad: bool = False):
        """Token ids of texts with the model's stored ``tokenizer.json``, exactly as the
        Hugging Face ``tokenizers`` library gives them (BERT's WordPiece: ``[CLS] ...
        [SEP]``, truncated to the model's maximum length), computed in the engine (the same
        C code as SQL's ``tensor_tokenize``).

        A str gives one int64 array; a list of str a list of arrays; with ``pad=True`` a
        pair ``(ids, attention_mask)`` of ``(n, longest)`` int64 arrays, padded with the
        tokenizer's padding id. Text that is not UTF-8 (bytes, or a str with a lone
        surrogate) is a ValueError naming the byte; an unsupported or damaged
        ``tokenizer.json`` a ValueError naming the field.
        """
        _check_name("model name", model)
        try:
            return _engine.tokenize(self.conn.sqlite3pointer(), self.name, model, texts, pad)
        except _engine.EngineError as e:
            raise TensorStoreError(str(e)) from None
        except ValueError as e:
            if str(e).startswith(f"no model '{model}'"):
                self._require_model(model)  # the message that lists the models
                raise NotFoundError(str(e)) from None
            raise

    # -- helpers --------------------------------------------------------------------------------

    def _model_id(self, name: str) -> int | None:
        row = self.conn.execute(
            f"SELECT id FROM {self._t.models} WHERE name = ?", (name,)
        ).fetchone()
        return row[0] if row else None

    def _require_model(self, name: str) -> int:
        _check_name("model name", name)
        model_id = self._model_id(name)
        if model_id is None:
            known = self.models()
            raise NotFoundError(
                f"no model {name!r} in store {self.name!r}; it has "
                f"{', '.join(map(repr, known[:10])) or 'no models'}"
                f"{' ...' if len(known) > 10 else ''}"
            )
        return model_id
