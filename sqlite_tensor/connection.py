"""Loading the extension into a connection.

One loadable file serves every host: ``loadable_path()`` is the small C loader (see
cython/loader.c) that the sqlite3 shell, apsw and Python's own sqlite3 module all load.
SQLite derives its entry point (``sqlite3_sqlitetensor_init``) from the file name, so no
entry-point argument is needed anywhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import apsw

from .errors import TensorStoreError

_PACKAGE_DIR = Path(__file__).resolve().parent
LOADER_FILE = "libsqlite_tensor.so"
PYTHON_ENTRY_POINT = "sqlite3_sqlitetensor_python_init"


def loadable_path() -> str:
    """Absolute path of the file to ``.load`` (shell) or ``load_extension`` (Python)."""
    path = _PACKAGE_DIR / LOADER_FILE
    if not path.exists():
        raise TensorStoreError(
            f"the compiled extension is missing ({path}): this copy of sqlite_tensor was "
            "not built; install the package with 'pip install <source or wheel>', or in a "
            "source tree build it in place with 'pip install -e .' (see docs/install.md)"
        )
    return str(path)


# The DB-API connection classes of the SQLite bindings load() accepts besides apsw, by
# module: the standard library's and pysqlite3's (pysqlite3-binary on PyPI: a current
# SQLite that can load extensions where the standard module cannot).
_DBAPI_MODULES = ("sqlite3", "pysqlite3.dbapi2", "pysqlite3")


def _dbapi_connection_class(conn):
    for name in _DBAPI_MODULES:
        module = sys.modules.get(name)  # only bindings the process already imported
        cls = getattr(module, "Connection", None)
        if cls is not None and isinstance(conn, cls):
            return cls
    return None


def load(conn):
    """Load the extension into an open connection and return the connection.

    ``conn`` is an ``apsw.Connection`` (the primary API), a standard-library
    ``sqlite3.Connection`` whose Python was built with extension loading, or a
    ``pysqlite3`` connection (subclasses included).

    Afterwards SQL's ``load_extension()`` is off (a view or trigger in a file must not load
    code; the engine refuses it too), while the C-level loading API is left as it was, and
    the schema is read again so that the store modules' shadow tables are known as such
    (defensive mode protects them only then).
    """
    path = loadable_path()
    if isinstance(conn, apsw.Connection):
        c_api = conn.config(apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, -1)
        conn.enable_load_extension(True)
        try:
            # this entry point gives apsw the engine that Python imported (see cython/loader.c)
            conn.load_extension(path, PYTHON_ENTRY_POINT)
        finally:
            conn.enable_load_extension(False)  # both: the C API and SQL's load_extension()
            if c_api:  # the C API alone back as the caller had it
                conn.config(apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 1)
        _reread_schema(conn)
        from . import python_functions

        python_functions.register(conn)
        return conn
    cls = _dbapi_connection_class(conn)
    if cls is not None:
        if not hasattr(conn, "enable_load_extension"):
            raise TensorStoreError(
                f"this Python's {cls.__module__} module was built without extension loading "
                "(no Connection.enable_load_extension); use apsw instead: "
                "sqlite_tensor.connect(path) returns an apsw.Connection with the extension "
                "loaded, or pip install pysqlite3-binary and use pysqlite3 (docs/install.md)"
            )
        conn.enable_load_extension(True)
        try:
            conn.load_extension(path)
        finally:
            conn.enable_load_extension(False)
        _reread_schema(conn)
        return conn
    raise TypeError(
        f"load() takes an apsw.Connection or sqlite3.Connection, got {type(conn).__name__} "
        f"(from module {type(conn).__module__}); pysqlite3 connections are accepted too"
    )


def _reread_schema(conn) -> None:
    """Have SQLite parse the schema again, now that the modules are registered: a table is
    marked a shadow table (read-only to SQL in defensive mode, via xShadowName) only when
    its module is known as the schema is parsed. RESET also turns writable_schema off, so
    it is put back on if the caller had it on."""
    writable = conn.execute("PRAGMA writable_schema").fetchone()[0]
    conn.execute("PRAGMA writable_schema = RESET")
    if writable:
        conn.execute("PRAGMA writable_schema = ON")


def is_loaded(conn: apsw.Connection) -> bool:
    """True when the extension's SQL functions are registered on this connection."""
    try:
        _ = conn.execute("SELECT tensor_version()").get  # a property: runs the statement
        return True
    except apsw.SQLError:
        return False


def connect(
    path: str | os.PathLike,
    *,
    page_size: int = 65536,
    wal: bool = True,
    busy_timeout_ms: int = 5000,
    **kwargs,
) -> apsw.Connection:
    """Open (or create) a database with the extension loaded; returns an apsw.Connection.

    A new file gets ``page_size`` (64 KiB: large page BLOBs read several times faster than
    with SQLite's 4 KiB default) and, with ``wal``, write-ahead logging so readers do not
    block a writer. ``kwargs`` go to ``apsw.Connection`` (flags, vfs, ...).

    The connection is in defensive mode (``SQLITE_DBCONFIG_DEFENSIVE``): SQL cannot write
    the stores' shadow tables (Store's methods can) nor the schema; SQL's
    ``load_extension()`` is off.
    """
    conn = apsw.Connection(os.fspath(path), **kwargs)
    try:
        # Before anything reads the schema: shadow tables read-only to plain SQL (the
        # store's own writes lift it for their transaction only, see Store._writing).
        conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
        conn.set_busy_timeout(busy_timeout_ms)
        load(conn)  # the modules first, so the schema is parsed knowing their shadow tables
        fresh = conn.execute("SELECT count(*) FROM sqlite_schema").get == 0
        if fresh and not conn.readonly("main"):
            conn.execute(f"PRAGMA page_size = {int(page_size)}")
            if wal and os.fspath(path) not in ("", ":memory:"):
                conn.execute("PRAGMA journal_mode = WAL")
    except BaseException:
        conn.close()
        raise
    return conn
