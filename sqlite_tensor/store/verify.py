"""Store.verify: every invariant of a store, checked with plain SQL over its shadow tables
(not through the engine's readers, so that it judges them), reported as a list of problems."""

from __future__ import annotations

import json

import numpy as np

from .. import _engine, blocks, dtypes, factors, model_files, pages, residuals
from ..layers import LayerError, check_layers
from ..schema import has_shadow_table
from .common import OPTIONS


class Verify:
    """Store.verify (a part of :class:`sqlite_tensor.Store`)."""

    def verify(self) -> list[str]:
        """Check the store's invariants; returns the problems found (empty when sound).

        Reference counts match the map, every tensor maps every block of its grid (each of
        its tile's size) and agrees with its shape and dtype, every block sits in its page at
        the right length and hashes to its recorded hash, and no row names a missing one,
        nor is any block or page orphaned. Every factors row belongs to a float32 tensor and
        has a rank and U, V of its shape. Every page is of a known format with a matching
        checksum (version 2; a version-1 page is reported), and the store's schema is the
        current one.
        """
        has_residuals = has_shadow_table(self.conn, self.name, "residuals")
        config_problems, page_format = self._config_problems()
        return [
            *config_problems,
            *self._block_problems(),
            *self._orphan_problems(has_residuals),
            *self._factor_problems(),
            *self._page_problems(has_residuals, page_format),
            *self._schema_problems(),
            *model_files.problems(self),
        ]

    def _config_problems(self) -> tuple[list[str], int]:
        """The config rows and the schema's version; and the page format to check pages by."""
        t = self._t
        problems = []
        config = dict(self.conn.execute(f"SELECT key, value FROM {t.config}"))
        for key in OPTIONS:
            if config.get(key) != getattr(self, key):
                problems.append(
                    f"config: {key} is {config.get(key)!r}, the store was opened "
                    f"with {getattr(self, key)}"
                )
        page_format = config.get("format_version")
        if page_format not in (1, 2):
            problems.append(f"config: format_version is {page_format!r}; versions are 1 and 2")
            page_format = 2
        if "uid" not in config:
            problems.append(
                "config: no uid (an older store): its pages are never cached;"
                " open the store writable to upgrade it"
            )
        if _engine.store_needs_upgrade(self.conn.sqlite3pointer(), self.name):
            problems.append(
                "schema: older than this sqlite-tensor's (missing tables, index,"
                " uid or version-2 pages); open the store writable to upgrade it"
            )
        return problems, page_format

    def _block_problems(self) -> list[str]:
        """Reference counts, every tensor's grid, shape and dtype, every map entry's tile."""
        t = self._t
        problems = []
        for bid, ref, used in self.conn.execute(
            f"SELECT b.id, b.refcount, (SELECT count(*) FROM {t.map} m WHERE m.block_id = b.id)"
            f" FROM {t.blocks} b"
        ):
            if ref != used or used == 0:
                problems.append(f"block {bid}: refcount {ref}, used {used} times")
        for tid, rows, cols, n in self.conn.execute(
            f"SELECT t.id, t.rows, t.cols, (SELECT count(*) FROM {t.map} m WHERE m.tensor_id = t.id)"
            f" FROM {t.tensors} t"
        ):
            gr, gc = blocks.grid_shape(rows, cols, self.block_rows, self.block_cols)
            if n != gr * gc:
                problems.append(f"tensor {tid}: {n} blocks mapped, grid has {gr * gc}")
        for tid, shape, dtype, rows, cols, nbytes in self.conn.execute(
            f"SELECT id, shape, dtype, rows, cols, nbytes FROM {t.tensors}"
        ):
            try:
                dims = tuple(json.loads(shape))
                want = (
                    blocks.matrix_shape(dims),
                    int(np.prod(dims)) * dtypes.numpy_dtype(dtype).itemsize,
                )
            except (ValueError, TypeError) as e:
                problems.append(f"tensor {tid}: bad shape {shape!r} or dtype {dtype!r} ({e})")
                continue
            if want != ((rows, cols), nbytes):
                problems.append(
                    f"tensor {tid}: {rows} x {cols} in {nbytes} bytes does not match"
                    f" shape {list(dims)} of {dtype}"
                )
        # Every map entry must name a tile inside its tensor's grid, of that tile's size.
        for tid, bi, bj, rows, cols, nbytes, block_bytes in self.conn.execute(
            f"SELECT m.tensor_id, m.block_row, m.block_col, t.rows, t.cols, t.nbytes, b.nbytes"
            f" FROM {t.map} m JOIN {t.tensors} t ON t.id = m.tensor_id"
            f" JOIN {t.blocks} b ON b.id = m.block_id"
        ):
            gr, gc = blocks.grid_shape(rows, cols, self.block_rows, self.block_cols)
            if not (0 <= bi < gr and 0 <= bj < gc):
                problems.append(f"tensor {tid}: block ({bi}, {bj}) is outside its {gr} x {gc} grid")
                continue
            br, bc = blocks.tile_shape(rows, cols, bi, bj, self.block_rows, self.block_cols)
            tile = br * bc
            if block_bytes * rows * cols != tile * nbytes:  # block_bytes == tile * itemsize
                problems.append(
                    f"tensor {tid}: block ({bi}, {bj}) has {block_bytes} bytes,"
                    f" wrong for a tile of {tile} elements"
                )
        return problems

    def _orphan_problems(self, has_residuals: bool) -> list[str]:
        """Rows that name a missing row of another table."""
        t = self._t
        problems = []
        for what, sql in (
            (
                "map entries name missing blocks",
                f"SELECT count(*) FROM {t.map} m WHERE NOT EXISTS"
                f" (SELECT 1 FROM {t.blocks} b WHERE b.id = m.block_id)",
            ),
            (
                "map entries name missing tensors",
                f"SELECT count(*) FROM {t.map} m WHERE NOT EXISTS"
                f" (SELECT 1 FROM {t.tensors} tt WHERE tt.id = m.tensor_id)",
            ),
            (
                "tensors name missing models",
                f"SELECT count(*) FROM {t.tensors} tt WHERE NOT EXISTS"
                f" (SELECT 1 FROM {t.models} mo WHERE mo.id = tt.model_id)",
            ),
            (
                "blocks name missing pages",
                f"SELECT count(*) FROM {t.blocks} b WHERE NOT EXISTS"
                f" (SELECT 1 FROM {t.pages} p WHERE p.id = b.page_id)",
            ),
            (
                "residuals name missing pages",
                f"SELECT count(*) FROM {t.residuals} r WHERE NOT EXISTS"
                f" (SELECT 1 FROM {t.pages} p WHERE p.id = r.page_id)",
            ),
            (
                "residuals have no map entry",
                f"SELECT count(*) FROM {t.residuals} r WHERE NOT EXISTS"
                f" (SELECT 1 FROM {t.map} m WHERE m.tensor_id = r.tensor_id"
                " AND m.block_row = r.block_row AND m.block_col = r.block_col)",
            ),
            (
                "residuals on tensors that are not float32",
                f"SELECT count(*) FROM {t.residuals} r"
                f" JOIN {t.tensors} tt ON tt.id = r.tensor_id WHERE tt.dtype <> 'float32'",
            ),
        ):
            if "residuals" in what and not has_residuals:
                continue  # an older store, read-only: no residuals at all
            n = self.conn.execute(sql).get
            if n:
                problems.append(f"{n} {what}")
        return problems

    def _factor_problems(self) -> list[str]:
        """Every <store>_factors row against its tensor (the engine's readers refuse the
        same rows, each as SQLITE_CORRUPT): float32, 1 <= rank <= min(rows, cols), u and v
        BLOBs of the lengths sqlite_tensor.factors gives, with finite scales; and no row
        without its tensor."""
        if not has_shadow_table(self.conn, self.name, "factors"):
            return []  # an older store, read-only: no factors at all
        t = self._t
        problems = []
        for tid, rank, rank_type, u_type, u, v_type, v, rows, cols, dtype in self.conn.execute(
            f"SELECT f.tensor_id, f.rank, typeof(f.rank), typeof(f.u), f.u, typeof(f.v), f.v,"
            f" tt.rows, tt.cols, tt.dtype FROM {t.factors} f"
            f" LEFT JOIN {t.tensors} tt ON tt.id = f.tensor_id ORDER BY f.tensor_id"
        ):
            where = f"factors of tensor {tid}"
            if rows is None:
                problems.append(f"{where}: no such tensor")
            elif dtype != "float32":
                problems.append(f"{where}: the tensor is {dtype}; factors apply to float32 only")
            elif rank_type != "integer":
                problems.append(f"{where}: rank is {rank_type} {rank!r}, not an integer")
            elif not 1 <= rank <= min(rows, cols):
                problems.append(
                    f"{where}: rank {rank}; a {rows} x {cols} tensor takes 1 to {min(rows, cols)}"
                )
            elif u_type != "blob" or v_type != "blob":
                problems.append(f"{where}: u is {u_type}, v is {v_type}; both must be BLOBs")
            else:
                try:
                    factors.decode(rows, cols, rank, u, v)
                except ValueError as e:
                    problems.append(f"{where}: {e}")
        return problems

    def _page_problems(self, has_residuals: bool, page_format: int) -> list[str]:
        """Every page: its format and checksum, its slots against the blocks and
        residuals that name it, and every block's bytes against its hash."""
        t = self._t
        problems = []
        # typeof and CAST: damaged data may be TEXT that is not even valid UTF-8
        for page_id, nblocks, kind, data in self.conn.execute(
            f"SELECT id, nblocks, typeof(data), CAST(data AS BLOB) FROM {t.pages}"
        ):
            if kind != "blob":
                problems.append(f"page {page_id}: data is {kind}, not a BLOB")
                continue
            try:
                version = pages.header(data).version
                slots = pages.read_slots(data, page_id)  # the checksum too
            except ValueError as e:
                problems.append(f"page {page_id}: {e}")
                continue
            if version == 1:
                problems.append(
                    f"page {page_id}: a version-1 page (no checksum)"
                    + (
                        "; the store is of version-2 pages, which refuses it"
                        if page_format >= 2
                        else "; open the store writable to upgrade it"
                    )
                )
            stored = self.conn.execute(
                f"SELECT id, slot, nbytes, hash FROM {t.blocks} WHERE page_id = ?", (page_id,)
            ).fetchall()
            held = (
                self.conn.execute(
                    f"SELECT r.tensor_id, r.block_row, r.block_col, r.kind, r.param, r.slot, r.nbytes,"
                    f" tt.rows, tt.cols FROM {t.residuals} r JOIN {t.tensors} tt ON tt.id = r.tensor_id"
                    " WHERE r.page_id = ?",
                    (page_id,),
                ).fetchall()
                if has_residuals
                else []
            )
            if not stored and not held:
                problems.append(f"page {page_id}: no blocks")
            if stored and held:
                problems.append(f"page {page_id}: holds blocks and residuals")
            if nblocks != len(slots) or len(stored) + len(held) != len(slots):
                problems.append(
                    f"page {page_id}: nblocks {nblocks}, header has {len(slots)} slots,"
                    f" {len(stored) + len(held)} in use"
                )
            for tid, bi, bj, kind, param, slot, nbytes, rows, cols in held:
                br, bc = blocks.tile_shape(rows, cols, bi, bj, self.block_rows, self.block_cols)
                try:
                    want = residuals.payload_bytes(kind, param, br, bc)
                except ValueError as e:
                    problems.append(f"residual of tensor {tid} ({bi}, {bj}): {e}")
                    continue
                if not 0 <= slot < len(slots) or len(slots[slot]) != nbytes or nbytes != want:
                    problems.append(
                        f"residual of tensor {tid} ({bi}, {bj}): slot {slot} of page"
                        f" {page_id} missing or not {want} bytes"
                    )
                    continue
                try:  # the payload's content (a sparse residual's indices)
                    residuals.decode(kind, param, br, bc, slots[slot])
                except ValueError as e:
                    problems.append(f"residual of tensor {tid} ({bi}, {bj}): {e}")
            for bid, slot, nbytes, digest in stored:
                if not 0 <= slot < len(slots) or len(slots[slot]) != nbytes:
                    problems.append(
                        f"block {bid}: slot {slot} of page {page_id} missing or wrong size"
                    )
                # the store's own hash function (a test may replace it)
                elif self._hash_block(np.frombuffer(slots[slot], np.uint8)) != digest:
                    problems.append(f"block {bid}: bytes do not match its hash")
        return problems

    def _schema_problems(self) -> list[str]:
        """Stored layers that do not fit the model's tensors (a layer naming a missing bias,
        say: set_layers refuses it, but the column may have been written by other means),
        and triggers on shadow tables (the store's writes refuse to run with them)."""
        t = self._t
        problems = []
        for model_id, model, text in self.conn.execute(
            f"SELECT id, name, layers FROM {t.models} WHERE layers IS NOT NULL ORDER BY id"
        ):
            tensors = {}
            for name, shape, dtype in self.conn.execute(
                f"SELECT name, shape, dtype FROM {t.tensors} WHERE model_id = ? ORDER BY id",
                (model_id,),
            ):
                try:
                    tensors[name] = (tuple(json.loads(shape)), dtype)
                except (TypeError, ValueError):
                    pass  # a bad shape is reported above; a layer using it fails below
            try:
                check_layers(json.loads(text), tensors)
            except (LayerError, TypeError, ValueError) as e:
                problems.append(f"model {model!r}: its stored layers do not fit its tensors: {e}")
        for name, table in self._shadow_triggers():
            problems.append(
                f"trigger {name!r} on shadow table {table}: it would run with the "
                "store's writes, which are refused while it is there"
            )
        return problems
