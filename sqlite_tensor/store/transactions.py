"""The store's write transactions: BEGIN IMMEDIATE, defensive mode lifted for their span,
triggers on shadow tables refused. One transaction per store change; everything a write
reads, it reads inside that transaction."""

from __future__ import annotations

from contextlib import contextmanager

import apsw

from ..errors import TensorStoreError
from ..schema import PARTS


class Transactions:
    """Store's transaction methods (a part of :class:`sqlite_tensor.Store`)."""

    @contextmanager
    def _writing(self):
        """One write transaction, or a savepoint inside the caller's transaction; shadow
        tables writable for its span only.

        BEGIN IMMEDIATE takes the write lock first, so every read-modify-write inside reads
        the state it rewrites with no other writer able to commit in between; a writer that
        holds the lock longer than the busy timeout is a BusyError saying so. A store whose
        shadow tables carry triggers is not written (see _refuse_triggers). The buffer pool
        notices every change by itself (the connection's data version and change count):
        a transaction that finds nothing to do writes nothing.
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
                        yield
                else:
                    yield
            if not nested:
                conn.execute("COMMIT")  # may be BUSY in rollback-journal mode: rolled back below
        except BaseException:
            if not nested and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def writer(self):
        """The package's internal write seam: ``with store.writer() as w`` is one write
        transaction (a savepoint inside the caller's), and ``w`` a
        :class:`sqlite_tensor.store.StoreWriter` giving the shadow tables, model ids,
        compaction and page layout to code outside Store (dedup, benchmarks)."""
        from .writer import StoreWriter

        with self._writing():
            w = StoreWriter(self)
            try:
                yield w
            finally:
                w._open = False

    def _begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except apsw.BusyError as e:
            raise apsw.BusyError(
                f"store {self.name!r}: another connection holds the database's write lock and "
                f"did not release it within the busy timeout; nothing was written, try again "
                f"({e})"
            ) from None

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
            names,
        ).fetchall()

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
                "(DROP TRIGGER ...) to write to this store"
            )
