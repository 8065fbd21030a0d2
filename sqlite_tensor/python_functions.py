"""SQL functions written in Python, registered on the apsw connections sqlite_tensor loads.

The compiled engine registers everything the sqlite3 shell can use. Operations whose
algorithms live in Python (page packing) are reachable from SQL only where Python runs:

    SELECT tensor_pack('tensors');                          -- the default strategy, by model
    SELECT tensor_pack('tensors', 'two-stage', 'tensor');   -- JSON of the figures
"""
from __future__ import annotations

import json

import apsw

from .errors import TensorStoreError


def register(conn: apsw.Connection) -> None:
    """Register the Python SQL functions on conn."""

    def pack(store, strategy=None, by="model"):
        from .store import Store
        for what, value in (("store", store), ("strategy", strategy), ("by", by)):
            if value is not None and not isinstance(value, str):
                raise apsw.SQLError(f"tensor_pack: {what} must be text, got {type(value).__name__}")
        if store is None:
            raise apsw.SQLError("tensor_pack: the store name is missing (NULL)")
        try:
            # create=False: a pack of a store that is not there must not make one
            result = Store(conn, store, create=False).pack(strategy, by=by)
        except (ValueError, TypeError, KeyError, TensorStoreError) as e:
            raise apsw.SQLError(f"tensor_pack: {e}") from None
        return json.dumps(result)

    conn.create_scalar_function("tensor_pack", pack, -1)
