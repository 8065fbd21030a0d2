"""The element types a store keeps, in one table.

Every stored tensor records its dtype by the numpy-style name in the first column; the
safetensors code is what the file format calls it. Values are kept as raw bytes, so any
dtype here round-trips bit for bit (NaN payloads included). bfloat16 and the float8 types
come from ``ml_dtypes`` (numpy has none of its own).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

# name, safetensors code, numpy dtype
_TABLE = [
    ("float64", "F64", np.dtype(np.float64)),
    ("float32", "F32", np.dtype(np.float32)),
    ("float16", "F16", np.dtype(np.float16)),
    ("bfloat16", "BF16", np.dtype(ml_dtypes.bfloat16)),
    ("float8_e4m3fn", "F8_E4M3", np.dtype(ml_dtypes.float8_e4m3fn)),
    ("float8_e5m2", "F8_E5M2", np.dtype(ml_dtypes.float8_e5m2)),
    ("int64", "I64", np.dtype(np.int64)),
    ("int32", "I32", np.dtype(np.int32)),
    ("int16", "I16", np.dtype(np.int16)),
    ("int8", "I8", np.dtype(np.int8)),
    ("uint64", "U64", np.dtype(np.uint64)),
    ("uint32", "U32", np.dtype(np.uint32)),
    ("uint16", "U16", np.dtype(np.uint16)),
    ("uint8", "U8", np.dtype(np.uint8)),
    ("bool", "BOOL", np.dtype(np.bool_)),
]

NAMES = tuple(name for name, _, _ in _TABLE)
_BY_NAME = {name: dt for name, _, dt in _TABLE}
_BY_CODE = {code: name for name, code, _ in _TABLE}
_CODE_OF = {name: code for name, code, _ in _TABLE}
_NAME_OF_NUMPY = {dt: name for name, _, dt in _TABLE}


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a stored dtype name (``'float32'`` -> ``np.float32``)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; supported: {', '.join(NAMES)}") from None


def name_of(dtype) -> str:
    """The stored name of a numpy dtype; ValueError names the dtype if it is not supported."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">":  # big-endian input is stored little-endian like everything else
        dt = dt.newbyteorder("<")
    try:
        return _NAME_OF_NUMPY[dt]
    except KeyError:
        raise ValueError(
            f"unsupported dtype {dt} ({dt.str}); supported: {', '.join(NAMES)}"
        ) from None


def from_safetensors(code: str) -> str:
    """Stored name of a safetensors dtype code (``'BF16'`` -> ``'bfloat16'``)."""
    try:
        return _BY_CODE[code]
    except KeyError:
        raise ValueError(
            f"unsupported safetensors dtype {code!r}; supported: {', '.join(_BY_CODE)}"
        ) from None


def to_safetensors(name: str) -> str:
    """Safetensors code of a stored dtype name (``'bfloat16'`` -> ``'BF16'``)."""
    numpy_dtype(name)  # raises for unknown names
    return _CODE_OF[name]
