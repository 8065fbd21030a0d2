"""The store's write seam for the package's own modules (dedup, the benchmarks, tests).

    with store.writer() as w:              # one write transaction (BEGIN IMMEDIATE)
        rows = w.conn.execute(f"SELECT id FROM {w.tables.blocks}").fetchall()
        ...

What a write outside Store needs, under public names: the shadow tables, the model ids,
page compaction and page layout, savepoints, and defensive mode back around code that is
not the store's. Nothing outside the store package uses an
underscore name of Store (tests/test_store_internals.py checks it). A StoreWriter is only
good inside its ``with`` block: everything it reads and writes is in that one transaction.
"""

from __future__ import annotations

from contextlib import contextmanager

from ..errors import TensorStoreError
from ..schema import Tables


def require_model(store, name: str) -> int:
    """The id of the store's model ``name``; NotFoundError naming the store's models when it
    has none of that name. A read: inside a transaction or not."""
    return store._require_model(name)


class StoreWriter:
    """One write transaction of a store (see the module's doc); made by :meth:`Store.writer`.

    ``store`` is the Store, ``conn`` its connection, ``tables`` its shadow tables' quoted
    names (:class:`sqlite_tensor.schema.Tables`), and ``name``, ``block_rows``,
    ``block_cols``, ``page_blocks`` the store's.
    """

    def __init__(self, store):
        self.store = store
        self.conn = store.conn
        self.tables: Tables = store._t
        self.name: str = store.name
        self.block_rows: int = store.block_rows
        self.block_cols: int = store.block_cols
        self.page_blocks: int = store.page_blocks
        self._open = True

    def _check_open(self) -> None:
        if not self._open:
            raise TensorStoreError(
                f"store {self.name!r}: this StoreWriter's transaction has "
                "ended; use it inside its `with store.writer()` block only"
            )

    def model_id(self, name: str) -> int | None:
        """The id of model ``name``, or None."""
        self._check_open()
        return self.store._model_id(name)

    def require_model(self, name: str) -> int:
        """The id of model ``name``; NotFoundError naming the store's models if none."""
        self._check_open()
        return self.store._require_model(name)

    def compact_pages(self, page_ids) -> int:
        """Rewrite the pages ``page_ids`` without their freed blocks (rows already deleted
        from the blocks table); delete those left empty. Returns the pages deleted."""
        self._check_open()
        return self.store._compact_pages(page_ids)

    def write_layout(self, layout: list[list[int]]) -> int:
        """Rewrite every page: ``layout`` lists the block ids of each new page, each block
        once. The blocks point at the new pages, the old ones are deleted. Returns the pages
        written."""
        self._check_open()
        return self.store._write_layout(layout)

    @contextmanager
    def savepoint(self):
        """A savepoint inside this transaction: an exception leaving the block rolls back
        the block's writes only (and passes on)."""
        self._check_open()
        with self.store._writing():
            yield

    @contextmanager
    def callers_code(self):
        """Around code that is not the store's own (a dedup validator): the connection's
        defensive mode as the caller had it, not lifted as for the store's writes."""
        self._check_open()
        with self.store._callers_mode():
            yield
