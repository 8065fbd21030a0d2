"""Exceptions raised by sqlite-tensor's Python API.

Errors raised inside SQLite (by the compiled engine) reach Python as ``apsw.SQLError`` with
the engine's message; the Python layer raises these for what it checks itself.
"""


class TensorStoreError(Exception):
    """Base class of every sqlite-tensor error."""


class FormatError(TensorStoreError, ValueError):
    """A tensor file (.safetensors / .npz) is malformed or holds something we cannot store."""


class NotFoundError(TensorStoreError, KeyError):
    """An unknown store, model or tensor name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
