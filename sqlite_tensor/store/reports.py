"""Store's figures: the engine's report tables as lists of dicts."""

from __future__ import annotations

from .. import model_files
from .common import _reading


class Reports:
    """Store's figures (a part of :class:`sqlite_tensor.Store`)."""

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

    def free_space(self) -> dict:
        """The database file's size and free pages: what :meth:`vacuum` would give back
        (dropping or deduplicating models frees pages but does not shrink the file)."""
        return model_files.free_space(self.conn)

    def _report(self, table: str) -> list[dict]:
        cursor = self.conn.cursor()
        # names per row: with no rows (an empty store) there is no description to ask for
        cursor.row_trace = lambda cur, row: dict(zip([d[0] for d in cur.get_description()], row))
        with _reading():
            return list(cursor.execute(f"SELECT * FROM {table}(?)", (self.name,)))
