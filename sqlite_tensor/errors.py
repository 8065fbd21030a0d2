"""Exceptions raised by sqlite-tensor's Python API: one root class, one class per kind of fault.

The error contract: the same fault gives the same class from every path (Store methods, the
engine's Python entry points, SQL run through apsw).
- A damaged store (a missing or malformed page, a checksum mismatch, impossible sizes in a
  shadow table) is :class:`CorruptStoreError`; in SQL it is ``SQLITE_CORRUPT`` with a message
  naming the page or row. It is also an ``apsw.CorruptError``, so code written against apsw's
  classes keeps working.
- BUSY, LOCKED, IOERR and NOMEM keep their own apsw classes (``apsw.BusyError``, ...), and
  ``MemoryError`` for NOMEM from the engine's Python entry points.
"""

import apsw


class TensorStoreError(Exception):
    """Base class of every sqlite-tensor error."""


class FormatError(TensorStoreError, ValueError):
    """A tensor file (.safetensors / .npz) is malformed or holds something we cannot store."""


class NotFoundError(TensorStoreError, KeyError):
    """An unknown store, model or tensor name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CorruptStoreError(TensorStoreError, apsw.CorruptError):
    """The store's shadow tables or pages are damaged; the message names what and where."""
