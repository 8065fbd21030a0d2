"""Names of a store's shadow tables, quoted once here for every SQL statement in Python.

The compiled engine owns the schema: it creates and upgrades these tables from st_store_ddl
and declares them with xShadowName from st_shadow_parts (both in cython/c/st_schema.h);
PARTS is the engine's list.
"""

from __future__ import annotations

from . import _engine

PARTS = _engine.shadow_parts()


def quote(identifier: str) -> str:
    """An SQL identifier in double quotes, embedded quotes doubled."""
    return '"' + identifier.replace('"', '""') + '"'


def has_shadow_table(conn, store: str, part: str) -> bool:
    """Whether ``<store>_<part>`` exists: an older store opened read-only may lack the
    tables added since (the writable open upgrades it)."""
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ? COLLATE NOCASE",
            (f"{store}_{part}",),
        ).fetchone()
        is not None
    )


class Tables:
    """Quoted names of one store's shadow tables: ``Tables('t').pages == '"t_pages"'``."""

    def __init__(self, store: str):
        self.store = store
        self.pages_unquoted = f"{store}_pages"  # for blob_open, which takes a bare name
        for part in PARTS:
            setattr(self, part, quote(f"{store}_{part}"))
