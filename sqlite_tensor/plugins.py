"""Plugins for datasette and sqlite-utils (registered as entry points in pyproject.toml).

With sqlite-tensor installed in the same environment, both tools load the extension into
every connection they open, so a file holding a store opens as is (without it, SQLite
refuses the file's schema: "no such module: tensor_store"). ``--load-extension`` with
``python -m sqlite_tensor path`` does the same by hand and is harmless alongside.

datasette lists a table's columns with ``PRAGMA table_xinfo``, which includes the hidden
``data`` column, and selects them all: a store's table page would assemble every tensor
(56 MB for the demo); the page BLOBs of its <store>_pages shadow table are as large. The
wrapper below gives the table pages of both ``?_nocol=data`` unless the request names its
columns itself (``?_col=data`` still shows them).
"""

from __future__ import annotations

import sys
from urllib.parse import parse_qsl, urlencode

from pluggy import HookimplMarker

datasette_hookimpl = HookimplMarker("datasette")
sqlite_utils_hookimpl = HookimplMarker("sqlite_utils")

_warned = False


@datasette_hookimpl
@sqlite_utils_hookimpl
def prepare_connection(conn):
    """Load the extension. If this SQLite cannot load extensions, go on (the tool still
    opens files without stores) and say why once, when the file holds a store."""
    global _warned
    from .connection import load

    try:
        load(conn)
    except Exception as e:  # noqa: BLE001 - a plugin must not take the host down
        if not _warned and _has_store(conn):
            _warned = True
            print(
                f"sqlite-tensor: not loaded, so this file's tensor stores cannot be read: {e}",
                file=sys.stderr,
            )


def _has_store(conn) -> bool:
    try:  # the schema parses without the module: only using the table needs it
        return conn.execute(STORE_TABLES_SQL).fetchone() is not None
    except Exception:  # noqa: BLE001
        return False


STORE_TABLES_SQL = (
    "SELECT name FROM sqlite_schema WHERE type = 'table'"
    " AND sql LIKE 'CREATE VIRTUAL TABLE%USING tensor_store%'"
)


async def _is_store(datasette, database: str, table: str) -> bool:
    """Whether table is a tensor store or its pages table (both have a large `data`)."""
    db = datasette.databases.get(database)
    if db is None:
        return False
    try:
        rows = await db.execute(STORE_TABLES_SQL)
    except Exception:  # noqa: BLE001 - not a database we can read: leave the request alone
        return False
    stores = {row[0] for row in rows}
    return table in stores or table in {f"{name}_pages" for name in stores}


@datasette_hookimpl
def asgi_wrapper(datasette):
    from datasette.utils import tilde_decode

    def wrap(app):
        async def without_data(scope, receive, send):
            if scope.get("type") == "http":
                parts = scope.get("path", "").strip("/").split("/")
                query = parse_qsl(
                    scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
                )
                if len(parts) == 2 and not any(k in ("_col", "_nocol") for k, _ in query):
                    database, table = tilde_decode(parts[0]), tilde_decode(parts[1])
                    for suffix in (".json", ".csv"):
                        if table.endswith(suffix) and await _is_store(
                            datasette, database, table[: -len(suffix)]
                        ):
                            table = table[: -len(suffix)]
                            break
                    if await _is_store(datasette, database, table):
                        query.append(("_nocol", "data"))
                        scope = dict(scope, query_string=urlencode(query).encode("latin-1"))
            await app(scope, receive, send)

        return without_data

    return wrap
