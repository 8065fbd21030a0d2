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


class Tables:
    """Quoted names of one store's shadow tables: ``Tables('t').pages == '"t_pages"'``."""

    def __init__(self, store: str):
        self.store = store
        self.pages_unquoted = f"{store}_pages"  # for blob_open, which takes a bare name
        for part in PARTS:
            setattr(self, part, quote(f"{store}_{part}"))
