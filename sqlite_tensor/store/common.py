"""What every part of the store package shares: the store options, the error contract of
reads, one snapshot for several reads, and the check of a name."""

from __future__ import annotations

from contextlib import contextmanager

import apsw

from ..errors import CorruptStoreError

OPTIONS = ("block_rows", "block_cols", "page_blocks")


@contextmanager
def _reading():
    """The error contract on read paths: a damaged store is CorruptStoreError, whether the
    engine said so (already one) or SQLite did (apsw.CorruptError: a malformed file, or
    SQLITE_CORRUPT from tensor_blob and the report tables)."""
    try:
        yield
    except CorruptStoreError:
        raise
    except apsw.CorruptError as e:
        raise CorruptStoreError(str(e).removeprefix("CorruptError: ")) from None
    except UnicodeDecodeError as e:  # a text column of a shadow table that is not UTF-8
        raise CorruptStoreError(f"a shadow table holds text that is not UTF-8 ({e})") from None


@contextmanager
def _one_snapshot(conn):
    """The reads inside see one committed state: outside a transaction each statement sees
    its own, and another writer's commit between two of them would mix versions."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _check_name(what: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if "\x00" in value:  # SQL functions see C strings: "a\x00b" would be read as "a"
        raise ValueError(f"{what} {value!r} contains a NUL character")
