"""Store's page layout: the groups packing packs, the layout as stored, pack(), and the
rewrite of every page to a new layout."""

from __future__ import annotations

import numpy as np

from .. import pages
from ..errors import TensorStoreError


class Layout:
    """Store's page layout (a part of :class:`sqlite_tensor.Store`)."""

    def block_groups(self, by: str = "model") -> dict[str, set[int]]:
        """The distinct blocks each model (by="model") or tensor (by="tensor", named
        "model/tensor") uses: the groups sqlite_tensor.packing packs."""
        t = self._t
        if by == "model":
            sql = (
                f"SELECT mo.name, m.block_id FROM {t.map} m JOIN {t.tensors} tt ON tt.id = m.tensor_id"
                f" JOIN {t.models} mo ON mo.id = tt.model_id ORDER BY mo.id, tt.id, m.block_row, m.block_col"
            )
        elif by == "tensor":
            sql = (
                f"SELECT mo.name || '/' || tt.name, m.block_id FROM {t.map} m JOIN {t.tensors} tt"
                f" ON tt.id = m.tensor_id JOIN {t.models} mo ON mo.id = tt.model_id"
                " ORDER BY mo.id, tt.id, m.block_row, m.block_col"
            )
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
            f"SELECT page_id, id FROM {self._t.blocks} ORDER BY page_id, slot"
        ):
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
        from .. import packing

        strategy = packing.DEFAULT_STRATEGY if strategy is None else strategy
        result = {"strategy": strategy, "by": by, "pages_written": 0}
        # The layout search may take long: first without the write lock, then again under it
        # only if another writer changed the groups meanwhile.
        groups = self.block_groups(by)
        new = packing.pack(groups, self.page_blocks, strategy) if groups else None
        with self._writing():
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
            result["pages_written"] = self._write_layout(new)
        return result

    def _write_layout(self, layout: list[list[int]]) -> int:
        """Write the pages of layout (block ids) from the blocks' current pages, point the
        blocks at them, delete the old pages. Inside a write transaction."""
        t = self._t
        where = dict(
            (bid, (page, slot))
            for bid, page, slot in self.conn.execute(f"SELECT id, page_id, slot FROM {t.blocks}")
        )
        placed = [bid for page in layout for bid in page]
        if len(placed) != len(set(placed)) or set(placed) != where.keys():
            # every old page is deleted below: a block left out would lose its bytes
            raise TensorStoreError(
                f"store {self.name!r}: a new page layout must place each of the "
                f"{len(where)} blocks once; it places {len(set(placed))} distinct blocks in "
                f"{len(placed)} slots ({len(where.keys() - set(placed))} missing)"
            )
        old_pages = sorted({page for page, _ in where.values()})
        recent: dict[int, list] = {}  # a few old pages' slots (layouts mostly read in order)
        max_block = self.conn.execute(f"SELECT coalesce(max(nbytes), 0) FROM {t.blocks}").get
        builder = pages.PageBuilder(self.page_blocks, max_block)
        for blocks_of_page in layout:
            builder.reset()
            for bid in blocks_of_page:
                page, slot = where[bid]
                if page not in recent:
                    if len(recent) >= 16:
                        recent.pop(next(iter(recent)))
                    data = self.conn.execute(
                        f"SELECT data FROM {t.pages} WHERE id = ?", (page,)
                    ).get
                    recent[page] = pages.read_slots(data, page)
                builder.stage(np.frombuffer(recent[page][slot], np.uint8))
                builder.commit()
            new_page = pages.insert_page(self.conn, t, builder.finish(), len(blocks_of_page))
            self.conn.executemany(
                f"UPDATE {t.blocks} SET page_id = ?, slot = ? WHERE id = ?",
                [(new_page, s, bid) for s, bid in enumerate(blocks_of_page)],
            )
        self.conn.executemany(f"DELETE FROM {t.pages} WHERE id = ?", [(p,) for p in old_pages])
        return len(layout)
