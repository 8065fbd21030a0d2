"""Store's model writes: add, drop (freeing blocks and compacting their pages), update,
and the entry to approximate dedup. Each is one transaction (Transactions._writing)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from .. import blocks, dtypes, encoders, formats, model_files, pages, sources
from ..ingest import IngestReport, ingest_model
from ..layers import LayerError
from .common import _check_name


class Writes:
    """Store's model writes (a part of :class:`sqlite_tensor.Store`)."""

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
        source = (
            sources.read_source(tensors) if isinstance(tensors, (str, os.PathLike)) else tensors
        )
        if isinstance(source, sources.Source):
            tensors = source.tensors
        arrays = _prepare_tensors(name, tensors)
        with self._writing():
            if self._model_id(name) is not None:
                raise ValueError(
                    f"model {name!r} already exists in store {self.name!r}; "
                    "drop it first or choose another name"
                )
            report = self._ingest(name, arrays, progress)
            if isinstance(source, sources.Source):
                model_files.save(self, self._model_id(name), source)
                if layers is None:  # an encoder folder runs as stored (sqlite_tensor.encoders)
                    derived = encoders.derived_layers(source.files, arrays)
                    try:
                        if derived is not None:
                            self._store_layers(name, derived)
                    except LayerError:
                        pass  # tensors that do not fit their config: stored, not runnable
            if layers is not None:
                self._store_layers(name, layers)
            return report

    def _ingest(self, name: str, arrays, progress=None) -> IngestReport:
        """Write model ``name``'s blocks, pages and map rows (inside the caller's transaction)."""
        return ingest_model(
            self.conn,
            self._t,
            name,
            arrays,
            block_rows=self.block_rows,
            block_cols=self.block_cols,
            page_blocks=self.page_blocks,
            dtype_names={k: dtypes.name_of(a.dtype) for k, a in arrays.items()},
            hash_block=self._hash_block,
            progress=progress,
        )

    # Seam for tests: a colliding hash must never merge different blocks.
    _hash_block = staticmethod(blocks.block_hash)

    def vacuum(self) -> dict:
        """Give the file's free pages back to the file system (SQLite's VACUUM, of the whole
        database). Returns the file's bytes before and after, and ``freed``."""
        return model_files.vacuum(self.conn)

    def drop_model(self, name: str) -> dict:
        """Remove a model; blocks no other model uses are freed, and so are their pages
        (pages left part-full are rewritten without the freed blocks).
        Returns counts of what was freed."""
        with self._writing():
            model_id = self._require_model(name)
            model_files.forget(self, model_id)  # update_model's _drop keeps them
            return self._drop(model_id)

    def _drop(self, model_id: int) -> dict:
        t = self._t
        residual_pages = {
            p
            for (p,) in self.conn.execute(
                f"SELECT DISTINCT r.page_id FROM {t.residuals} r JOIN {t.tensors} tt"
                " ON tt.id = r.tensor_id WHERE tt.model_id = ?",
                (model_id,),
            )
        }
        for table in (t.residuals, t.dedup, t.factors):
            self.conn.execute(
                f"DELETE FROM {table} WHERE tensor_id IN"
                f" (SELECT id FROM {t.tensors} WHERE model_id = ?)",
                (model_id,),
            )
        uses = self.conn.execute(
            f"SELECT m.block_id, count(*) FROM {t.map} m JOIN {t.tensors} tt"
            " ON tt.id = m.tensor_id WHERE tt.model_id = ? GROUP BY m.block_id",
            (model_id,),
        ).fetchall()
        self.conn.executemany(
            f"UPDATE {t.blocks} SET refcount = refcount - ? WHERE id = ?",
            [(n, bid) for bid, n in uses],
        )
        self.conn.execute(
            f"DELETE FROM {t.map} WHERE tensor_id IN"
            f" (SELECT id FROM {t.tensors} WHERE model_id = ?)",
            (model_id,),
        )
        self.conn.execute(f"DELETE FROM {t.tensors} WHERE model_id = ?", (model_id,))
        self.conn.execute(f"DELETE FROM {t.models} WHERE id = ?", (model_id,))
        dead = self.conn.execute(
            f"SELECT id, page_id, nbytes FROM {t.blocks} WHERE refcount <= 0"
        ).fetchall()
        self.conn.executemany(f"DELETE FROM {t.blocks} WHERE id = ?", [(b,) for b, _, _ in dead])
        # residual pages hold one model's residuals: drop those no residual names now
        unused = [
            (p,)
            for p in sorted(residual_pages)
            if not self.conn.execute(
                f"SELECT 1 FROM {t.residuals} WHERE page_id = ? LIMIT 1", (p,)
            ).fetchone()
        ]
        self.conn.executemany(f"DELETE FROM {t.pages} WHERE id = ?", unused)
        freed_pages = self._compact_pages({page for _, page, _ in dead})
        return {
            "blocks": len(dead),
            "bytes": sum(n for _, _, n in dead),
            "pages": freed_pages + len(unused),
        }

    def _compact_pages(self, page_ids) -> int:
        """Rewrite pages that lost blocks; delete the ones left empty. Returns pages deleted."""
        t = self._t
        deleted = 0
        for page_id in sorted(page_ids):
            live = self.conn.execute(
                f"SELECT id, slot FROM {t.blocks} WHERE page_id = ? ORDER BY slot", (page_id,)
            ).fetchall()
            if not live:
                self.conn.execute(f"DELETE FROM {t.pages} WHERE id = ?", (page_id,))
                deleted += 1
                continue
            old = self.conn.execute(f"SELECT data FROM {t.pages} WHERE id = ?", (page_id,)).get
            slots = pages.read_slots(old, page_id)
            data = pages.build_page([np.frombuffer(slots[s], np.uint8) for _, s in live])
            pages.update_page(self.conn, t, page_id, data, len(live))
            self.conn.executemany(
                f"UPDATE {t.blocks} SET slot = ? WHERE id = ?",
                [(new, bid) for new, (bid, _) in enumerate(live)],
            )
        return deleted

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
        with self.writer() as w:
            old_id = self._require_model(name)
            old_layers = self.layers(name) if layers is None else layers
            # what dedup decided for each old tile: (tensor name, row, col) -> entry
            decided = {
                (tname, bi, bj): (tid, block, digest, outcome)
                for tname, tid, bi, bj, block, digest, outcome in self.conn.execute(
                    f"SELECT tt.name, d.tensor_id, d.block_row, d.block_col, m.block_id,"
                    f" d.source_hash, d.outcome FROM {t.dedup} d"
                    f" JOIN {t.tensors} tt ON tt.id = d.tensor_id JOIN {t.map} m"
                    " ON m.tensor_id = d.tensor_id AND m.block_row = d.block_row"
                    " AND m.block_col = d.block_col WHERE tt.model_id = ?",
                    (old_id,),
                )
            }
            factors = self._old_factors(old_id, decided)
            staging = f"{name}\x00update"
            report = self._ingest(staging, arrays)
            new_id = self._model_id(staging)
            self._carry_factors(factors, decided, new_id)
            self._carry_decisions(decided, new_id)
            self._drop(old_id)
            self.conn.execute(
                f"UPDATE {t.models} SET id = ?, name = ? WHERE id = ?", (old_id, name, new_id)
            )
            self.conn.execute(
                f"UPDATE {t.tensors} SET model_id = ? WHERE model_id = ?", (old_id, new_id)
            )
            from ..dedup.writes import repack_residuals

            repack_residuals(w, old_id)  # _drop freed the blocks the new tiles left
            if old_layers is not None:
                self._store_layers(name, old_layers)
            return report

    def _old_factors(self, old_id: int, decided: dict) -> dict:
        """The old version's factors rows by tensor name, each with its tiles' digests as
        they were given (dedup's source hash where it replaced a tile, else the block's)."""
        t = self._t
        factors = {
            tname: (rank, u, v, {}, view)
            for tname, rank, u, v, *view in self.conn.execute(
                f"SELECT tt.name, f.rank, f.u, f.v, tt.rows, tt.cols, tt.dtype FROM {t.factors} f"
                f" JOIN {t.tensors} tt"
                " ON tt.id = f.tensor_id WHERE tt.model_id = ?",
                (old_id,),
            )
        }
        if factors:
            for tname, bi, bj, digest in self.conn.execute(
                f"SELECT tt.name, m.block_row, m.block_col, b.hash FROM {t.map} m"
                f" JOIN {t.tensors} tt ON tt.id = m.tensor_id JOIN {t.blocks} b"
                " ON b.id = m.block_id WHERE tt.model_id = ?",
                (old_id,),
            ):
                if tname in factors:
                    old = decided.get((tname, bi, bj))
                    factors[tname][3][(bi, bj)] = digest if old is None else old[2]
        return factors

    def _carry_factors(self, factors: dict, decided: dict, new_id: int) -> None:
        """A tensor's factors go with its tiles' decisions (each tile's residual was chosen
        with U V^T in place): both are carried when every tile of the new version is the
        old one's, else neither (the tensor is stored exactly; the next dedup examines
        it)."""
        t = self._t
        for tname, (rank, u, v, digests, view) in factors.items():
            found = self.conn.execute(
                f"SELECT id, rows, cols, dtype FROM {t.tensors} WHERE model_id = ? AND name = ?",
                (new_id, tname),
            ).fetchone()
            tiles = {}
            if found is not None and list(found[1:]) == view:
                tiles = {
                    (bi, bj): digest
                    for bi, bj, digest in self.conn.execute(
                        f"SELECT m.block_row, m.block_col, b.hash FROM {t.map} m"
                        f" JOIN {t.blocks} b ON b.id = m.block_id WHERE m.tensor_id = ?",
                        (found[0],),
                    )
                }
            if found is not None and tiles == digests:
                self.conn.execute(
                    f"INSERT INTO {t.factors}(tensor_id, rank, u, v) VALUES (?, ?, ?, ?)",
                    (found[0], rank, u, v),
                )
            else:
                for key in [k for k in decided if k[0] == tname]:
                    del decided[key]

    def _carry_decisions(self, decided: dict, new_id: int) -> None:
        """Point the new version's unchanged tiles where dedup pointed the old ones."""
        t = self._t
        moves, refs, moved_residuals, logs = [], {}, [], []
        for tname, tid, bi, bj, block, digest in self.conn.execute(
            f"SELECT tt.name, m.tensor_id, m.block_row, m.block_col, m.block_id, b.hash"
            f" FROM {t.map} m JOIN {t.tensors} tt ON tt.id = m.tensor_id JOIN {t.blocks} b"
            " ON b.id = m.block_id WHERE tt.model_id = ?",
            (new_id,),
        ):
            old = decided.get((tname, bi, bj))
            if old is None or old[2] != digest:
                continue  # a changed tile: the next dedup examines it
            old_tid, old_block, _, outcome = old
            logs.append((tid, bi, bj, digest, outcome))
            if old_block != block:
                moves.append((old_block, tid, bi, bj))
                refs[old_block] = refs.get(old_block, 0) + 1
                refs[block] = refs.get(block, 0) - 1
                moved_residuals.append((tid, old_tid, bi, bj))
        self.conn.executemany(
            f"UPDATE {t.map} SET block_id = ? WHERE tensor_id = ?"
            " AND block_row = ? AND block_col = ?",
            moves,
        )
        self.conn.executemany(
            f"UPDATE {t.blocks} SET refcount = refcount + ? WHERE id = ?",
            [(n, b) for b, n in refs.items()],
        )
        self.conn.executemany(
            f"UPDATE {t.residuals} SET tensor_id = ? WHERE tensor_id = ?"
            " AND block_row = ? AND block_col = ?",
            moved_residuals,
        )
        self.conn.executemany(
            f"INSERT INTO {t.dedup}(tensor_id, block_row, block_col,"
            " source_hash, outcome) VALUES (?, ?, ?, ?, ?)",
            logs,
        )

    def dedup(
        self, models=None, *, validator=None, max_drop=None, residuals: bool = True, **options
    ):
        """Merge nearly identical blocks too, keeping every model within an accuracy budget.

        Each model's float32 blocks are matched against the blocks of the models added
        before it (p-stable LSH candidates and the block at the same place of the same
        tensor). Each block can then be *substituted* by its match, stored as the match
        plus a compact residual that inference applies directly (with ``residuals=True``),
        or kept. ``validator(store, model)`` scores the model as stored (see
        :func:`sqlite_tensor.dedup.accuracy`), and its score may fall by ``max_drop`` at
        most.

        ``strategy="budget"`` (the default) spends that budget: it searches, by the
        validator, for the fewest bytes along a path from every block kept to every block
        substituted, each block taking the cheapest encoding within an error threshold;
        it also tries each tensor as its match plus whole-tensor low-rank factors (int8,
        ranks by one threshold on the delta's energy), and keeps the path that stores fewer
        bytes; a larger ``max_drop`` never stores more bytes. ``tolerance`` (None)
        optionally caps the error any block may take, relative to its norm (the factor
        path, which spreads error over a tensor, is then not taken). ``strategy="greedy"``
        is the paper's guard: each block's cheapest outcome within ``tolerance`` (0.02), least
        important blocks first, ``check_every`` (32) replacements per validation,
        replacements past the budget rolled back (``on_exceed``: "skip" retries in halves
        and skips blocks that break the budget; "stop" ends that model).

        Also: ``search`` ("lsh", or the baselines "minhash" and "exhaustive"),
        ``reexamine`` (look again at entries examined before), ``progress`` (True: a line
        per validation on stderr; or a callable(report, done, total)), and the search's
        own options (LSH: ``bands``, ``hashes_per_band``, ``bucket_width``, ``seed``).
        ``tolerance=0`` is exact dedup alone (no validator needed, nothing written). One
        transaction; returns a :class:`sqlite_tensor.dedup.DedupReport`.
        """
        from ..dedup.run import dedup

        return dedup(
            self, models, validator=validator, max_drop=max_drop, residuals=residuals, **options
        )


def _prepare_tensors(model: str, tensors) -> dict[str, np.ndarray]:
    """Validate the input of add_model: C-contiguous little-endian arrays of stored dtypes."""
    if isinstance(tensors, (str, os.PathLike)):
        tensors = formats.read_tensors(tensors)
    elif not isinstance(tensors, Mapping):
        raise TypeError(
            "tensors must be a mapping of name -> numpy array, or a path to a "
            f".safetensors or .npz file; got {type(tensors).__name__}"
        )
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
            raise ValueError(
                f"tensor {key!r} has shape {arr.shape}: zero-size tensors cannot be stored"
            )
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        # copy(order="C"), not ascontiguousarray: that one turns 0-d arrays into 1-d
        out[key] = arr if arr.flags.c_contiguous else arr.copy(order="C")
    return out
