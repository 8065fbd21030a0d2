"""SQL functions written in Python, registered on the apsw connections sqlite_tensor loads.

The compiled engine registers everything the sqlite3 shell can use. Operations whose
algorithms live in Python (page packing) are reachable from SQL only where Python runs:

    SELECT tensor_pack('tensors');                          -- the default strategy, by model
    SELECT tensor_pack('tensors', 'two-stage', 'tensor');   -- JSON of the figures
    SELECT tensor_dedup('tensors', 0.01, 'SELECT model, input, label FROM validation');

Both write, so both are SQLITE_DIRECTONLY: a view or trigger (which a database file may
carry) cannot call them. tensor_dedup's validation query must be one read-only SELECT.
"""

from __future__ import annotations

import dataclasses
import json

import apsw
import numpy as np

from .errors import TensorStoreError

# Functions that write: refused in views and triggers, where a file could put a call.
WRITES = apsw.SQLITE_DIRECTONLY
# What the validation query may do when it is prepared (sqlite3_set_authorizer): read.
_QUERY_ACTIONS = {apsw.SQLITE_SELECT, apsw.SQLITE_READ, apsw.SQLITE_FUNCTION, apsw.SQLITE_RECURSIVE}
_REFUSED_FUNCTIONS = {"tensor_pack", "tensor_dedup", "load_extension"}


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

    conn.create_scalar_function("tensor_pack", pack, -1, flags=WRITES)

    def dedup(store, max_drop=None, validation=None, options=None):
        from .dedup import accuracy
        from .store import Store

        if store is None or not isinstance(store, str):
            raise apsw.SQLError("tensor_dedup: the store name must be text")
        if not isinstance(validation, str):
            raise apsw.SQLError(
                "tensor_dedup: the third argument must be a query giving "
                "(model, input, label) rows of validation data"
            )
        try:
            kwargs = json.loads(options) if options is not None else {}
            if not isinstance(kwargs, dict):
                raise ValueError("options must be a JSON object")
            target = Store(conn, store, create=False)
            x, y = _validation_sets(conn, target, validation)
            kwargs.setdefault("models", [m for m in target.models() if m in x] or None)
            report = target.dedup(validator=accuracy(x, y), max_drop=max_drop, **kwargs)
        except (ValueError, TypeError, KeyError, TensorStoreError, apsw.SQLError) as e:
            raise apsw.SQLError(f"tensor_dedup: {e}") from None
        out = dataclasses.asdict(report)
        out["ratio"] = report.ratio
        return json.dumps(out)

    conn.create_scalar_function("tensor_dedup", dedup, -1, flags=WRITES)


def _query_rows(conn, query: str) -> list[tuple]:
    """The rows of query, which must be exactly one read-only statement: it is prepared
    under an authorizer that allows only reading (no ATTACH, PRAGMA, transaction control,
    writes, nor a function that writes), its statement must be read-only
    (sqlite3_stmt_readonly), and a second statement is refused before it runs."""

    def authorize(action, name, name2, database, trigger_or_view):
        if action not in _QUERY_ACTIONS or (
            action == apsw.SQLITE_FUNCTION and name2.lower() in _REFUSED_FUNCTIONS
        ):
            return apsw.SQLITE_DENY
        return apsw.SQLITE_OK

    statements = []

    def one_read_only(cursor, sql, bindings):
        if not cursor.has_vdbe:
            return True  # a trailing comment: nothing to run
        statements.append(sql)
        if len(statements) > 1:
            raise ValueError(
                f"the validation query must be one statement; "
                f"{sql.strip()[:60]!r} follows the first"
            )
        if not cursor.is_readonly:
            raise ValueError(f"the validation query must only read; {sql.strip()[:60]!r} writes")
        return True

    cursor = conn.cursor()
    cursor.exec_trace = one_read_only
    previous = conn.authorizer
    conn.authorizer = authorize
    try:
        # can_cache=False: a statement from the cache would skip the authorizer
        rows = cursor.execute(query, can_cache=False).fetchall()
    except apsw.AuthError as e:
        raise ValueError(f"the validation query may only read (SELECT): {e}") from None
    finally:
        conn.authorizer = previous
        cursor.close()
    return rows


def _validation_sets(conn, store, query: str):
    """{model: inputs}, {model: labels} from a query's (model, input, label) rows. An input
    is a float32 BLOB or a JSON array of features; for an embedding_bag model, a JSON
    array of ids (one bag); for an embedding model, one integer id."""
    rows: dict[str, tuple[list, list]] = {}
    for row in _query_rows(conn, query):
        if len(row) != 3:
            raise ValueError(
                f"the validation query must give 3 columns (model, input, label), got {len(row)}"
            )
        model, value, label = row
        if not isinstance(model, str) or not isinstance(label, int):
            raise ValueError(
                f"validation row ({model!r}, ..., {label!r}): model must be text "
                "and label an integer"
            )
        inputs, labels = rows.setdefault(model, ([], []))
        inputs.append(value)
        labels.append(label)
    if not rows:
        raise ValueError("the validation query gave no rows")
    x, y = {}, {}
    for model, (inputs, labels) in rows.items():
        layers = store.layers(model) or [{}]
        op = layers[0].get("op")
        if op == "embedding_bag":
            x[model] = [np.asarray(_json_list(v, model), np.int64) for v in inputs]
        elif op == "embedding":
            x[model] = np.asarray(inputs, np.int64)
        else:
            x[model] = np.stack(
                [
                    np.frombuffer(v, "<f4")
                    if isinstance(v, bytes)
                    else np.asarray(_json_list(v, model), np.float32)
                    for v in inputs
                ]
            )
        y[model] = np.asarray(labels, np.int64)
    return x, y


def _json_list(value, model):
    items = json.loads(value) if isinstance(value, str) else None
    if not isinstance(items, list):
        raise ValueError(
            f"validation input for model {model!r} must be a JSON array, got {value!r}"
        )
    return items
