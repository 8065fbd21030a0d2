"""Loading the extension into a connection.

One loadable file serves every host: ``loadable_path()`` is the small C loader (see
cython/loader.c) that the sqlite3 shell, apsw and Python's own sqlite3 module all load.
SQLite derives its entry point (``sqlite3_sqlitetensor_init``) from the file name, so no
entry-point argument is needed anywhere.
"""
from __future__ import annotations

import os
from pathlib import Path

import apsw

from .errors import TensorStoreError

_PACKAGE_DIR = Path(__file__).resolve().parent
LOADER_FILE = "libsqlite_tensor.so"
ENTRY_POINT = "sqlite3_sqlitetensor_init"


def loadable_path() -> str:
    """Absolute path of the file to ``.load`` (shell) or ``load_extension`` (Python)."""
    path = _PACKAGE_DIR / LOADER_FILE
    if not path.exists():
        raise TensorStoreError(
            f"the compiled extension is missing ({path}); build it with "
            "'pip install --no-build-isolation -e .' in the source tree"
        )
    return str(path)


def load(conn):
    """Load the extension into an open connection and return the connection.

    ``conn`` is an ``apsw.Connection`` (the primary API) or a standard-library
    ``sqlite3.Connection`` whose Python was built with extension loading.
    """
    path = loadable_path()
    if isinstance(conn, apsw.Connection):
        conn.enable_load_extension(True)
        conn.load_extension(path)
        from . import python_functions
        python_functions.register(conn)
        return conn
    if type(conn).__module__ == "sqlite3" and type(conn).__name__ == "Connection":
        if not hasattr(conn, "enable_load_extension"):
            raise TensorStoreError(
                "this Python's sqlite3 module was built without extension loading "
                "(no Connection.enable_load_extension); use apsw instead: "
                "sqlite_tensor.connect(path) returns an apsw.Connection with the extension loaded"
            )
        conn.enable_load_extension(True)
        try:
            conn.load_extension(path)
        finally:
            conn.enable_load_extension(False)
        return conn
    raise TypeError(
        f"load() takes an apsw.Connection or sqlite3.Connection, got {type(conn).__name__}"
    )


def is_loaded(conn: apsw.Connection) -> bool:
    """True when the extension's SQL functions are registered on this connection."""
    try:
        conn.execute("SELECT tensor_version()").get
        return True
    except apsw.SQLError:
        return False


def connect(path: str | os.PathLike, *, page_size: int = 65536, wal: bool = True,
            busy_timeout_ms: int = 5000, **kwargs) -> apsw.Connection:
    """Open (or create) a database with the extension loaded; returns an apsw.Connection.

    A new file gets ``page_size`` (64 KiB: large page BLOBs read several times faster than
    with SQLite's 4 KiB default) and, with ``wal``, write-ahead logging so readers do not
    block a writer. ``kwargs`` go to ``apsw.Connection`` (flags, vfs, ...).
    """
    conn = apsw.Connection(os.fspath(path), **kwargs)
    try:
        conn.set_busy_timeout(busy_timeout_ms)
        fresh = conn.execute("SELECT count(*) FROM sqlite_schema").get == 0
        if fresh and not conn.readonly("main"):
            conn.execute(f"PRAGMA page_size = {int(page_size)}")
            if wal and os.fspath(path) not in ("", ":memory:"):
                conn.execute("PRAGMA journal_mode = WAL")
        load(conn)
    except BaseException:
        conn.close()
        raise
    return conn
