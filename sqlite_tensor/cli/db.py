"""Opening the database for a command: read-only unless the command writes, never created
by a command that does not add, and a file that a failed ``add`` created is removed."""

from __future__ import annotations

import os
from contextlib import contextmanager

import apsw

from ..connection import connect
from ..errors import TensorStoreError
from ..store import Store


def add_db_argument(parser) -> None:
    parser.add_argument("db", metavar="DB", help="the SQLite file")


@contextmanager
def open_store(args, *, write: bool = False, create: bool = False):
    """The store args.store of the file args.db. ``create``: the file and the store may be
    created (and a file created here is removed again if the command fails)."""
    path = args.db
    if os.path.isdir(path):
        raise TensorStoreError(f"{path}: is a directory, not a SQLite file")
    existed = os.path.exists(path)
    if not existed and not create:
        raise TensorStoreError(f"{path}: no such file")
    flags = (
        (apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
        if write
        else apsw.SQLITE_OPEN_READONLY
    )
    conn = None
    try:
        conn = connect(path, flags=flags)
        if write:  # one transaction, the store's creation included: all or nothing
            try:
                conn.execute("BEGIN IMMEDIATE")
            except apsw.BusyError:
                raise TensorStoreError(
                    f"{path}: another connection is writing to it; nothing was written, try again"
                ) from None
        store = Store(conn, args.store, create=create)
        yield store
        if write:
            conn.execute("COMMIT")
    except BaseException:
        if conn is not None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            conn = None
        if not existed:
            for suffix in ("", "-wal", "-shm", "-journal"):
                try:
                    os.unlink(path + suffix)
                except FileNotFoundError:
                    pass
        raise
    finally:
        if conn is not None:
            conn.close()
