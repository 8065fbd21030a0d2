"""Reading and writing tensor files (.safetensors and .npz) bit for bit, without torch.

We parse and write safetensors ourselves instead of going through the ``safetensors``
package: its numpy API cannot hand back bfloat16 or float8 (numpy has no such dtypes; we get
them from ``ml_dtypes``), and its errors do not say which tensor or field is wrong. Every
error here is a :class:`FormatError` naming the file and the problem.

Arrays returned by the readers own their memory (each tensor is read from the file straight
into its own buffer), are writable, C-contiguous and little-endian; the file may be deleted or
overwritten afterwards. Writers replace the target atomically, so a failure never leaves a
half-written file behind.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import BinaryIO, Union

import numpy as np

from . import dtypes
from .errors import FormatError

PathLike = Union[str, "os.PathLike[str]"]

SAFETENSORS_SUFFIX = ".safetensors"
NPZ_SUFFIX = ".npz"
SUFFIXES = (SAFETENSORS_SUFFIX, NPZ_SUFFIX)

# A real header is a few hundred bytes per tensor; anything beyond this is a corrupt length
# field (or not a safetensors file at all), and we refuse before allocating it.
MAX_HEADER_BYTES = 100 * 1024 * 1024

_METADATA_KEY = "__metadata__"
_ENTRY_KEYS = ("dtype", "shape", "data_offsets")
# numpy's .npy format has no code for these; np.save would store them as opaque void bytes.
_NOT_IN_NPZ = frozenset({"bfloat16", "float8_e4m3fn", "float8_e5m2"})


# --------------------------------------------------------------------------- dispatch


def read_tensors(path: PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a ``.safetensors`` or ``.npz`` file (chosen by suffix)."""
    p = _fspath(path)
    if _suffix(p) == SAFETENSORS_SUFFIX:
        return read_safetensors(p)[0]
    return read_npz(p)


def write_tensors(
    path: PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``tensors`` to a ``.safetensors`` or ``.npz`` file (chosen by suffix).

    ``metadata`` is only representable in safetensors; passing a non-empty one for ``.npz``
    is an error rather than a silent loss.
    """
    p = _fspath(path)
    if _suffix(p) == SAFETENSORS_SUFFIX:
        write_safetensors(p, tensors, metadata)
        return
    if metadata:
        raise FormatError(f"{p}: .npz files cannot carry metadata; use {SAFETENSORS_SUFFIX}")
    write_npz(p, tensors)


# --------------------------------------------------------------------------- safetensors


def read_safetensors(path: PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``, tensors in header order.

    ``metadata`` is the header's ``__metadata__`` object (``{}`` when absent).
    """
    tensors, metadata, _, _ = read_safetensors_file(path)
    return tensors, metadata


def read_safetensors_file(
    path: PathLike,
) -> tuple[dict[str, np.ndarray], dict[str, str], bytes, int]:
    """:func:`read_safetensors` plus what it takes to write the same file again byte for
    byte: ``(tensors, metadata, header, data_len)``, ``header`` the JSON header exactly as
    stored (padding included) and ``data_len`` the length of the data buffer after it."""
    p = _fspath(path)
    with _open_for_read(p) as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise FormatError(
                f"{p}: file is {size} bytes, shorter than the 8-byte safetensors header length"
            )
        header_len = int.from_bytes(f.read(8), "little")
        if header_len > MAX_HEADER_BYTES:
            raise FormatError(
                f"{p}: header length {header_len} is absurdly large (limit {MAX_HEADER_BYTES});"
                " not a safetensors file?"
            )
        if 8 + header_len > size:
            raise FormatError(
                f"{p}: header length {header_len} runs past the end of the file ({size} bytes);"
                " truncated or not a safetensors file?"
            )
        raw = f.read(header_len)
        data_start = 8 + header_len
        entries, metadata = _parse_header(p, raw, size - data_start)

        tensors: dict[str, np.ndarray] = {}
        for name, (dt, shape, begin, end) in entries.items():
            arr = _empty(p, f"tensor {name!r}", shape, dt)
            f.seek(data_start + begin)
            if _read_into(f, arr) != end - begin:  # the file shrank under us
                raise FormatError(f"{p}: tensor {name!r}: data ends early; file truncated?")
            tensors[name] = arr
    return tensors, metadata, raw, size - data_start


def parse_safetensors_header(
    where: str, raw: bytes, data_len: int
) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], dict[str, str]]:
    """Check a safetensors JSON header as :func:`read_safetensors` does: ``({name: (dtype
    name, shape, begin, end)}, metadata)``, tensors in header order; FormatError naming
    ``where`` otherwise."""
    entries, metadata = _parse_header(where, raw, data_len)
    return {
        n: (dtypes.name_of(dt), shape, b, e) for n, (dt, shape, b, e) in entries.items()
    }, metadata


def write_safetensors(
    path: PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a safetensors file: tensors sorted by name, packed back to back, little-endian.

    ``metadata`` (str -> str) becomes the header's ``__metadata__``; ``None`` omits it.
    """
    p = _fspath(path)
    arrays = _check_tensors(p, tensors)
    if _METADATA_KEY in arrays:
        raise FormatError(f"{p}: {_METADATA_KEY!r} is reserved in safetensors, not a tensor name")
    header: dict[str, object] = {}
    if metadata is not None:
        header[_METADATA_KEY] = _check_metadata(p, metadata)  # first, like the reference writer
    names = sorted(arrays)
    offset = 0
    for name in names:
        a = arrays[name]
        header[name] = {
            "dtype": dtypes.to_safetensors(dtypes.name_of(a.dtype)),
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # Pad with spaces (still valid JSON) so the data buffer starts 8-byte aligned.
    raw += b" " * (-len(raw) % 8)
    if len(raw) > MAX_HEADER_BYTES:
        raise FormatError(
            f"{p}: header would be {len(raw)} bytes, over the {MAX_HEADER_BYTES} limit"
        )

    def emit(f: BinaryIO) -> None:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in names:
            f.write(_bytes_view(arrays[name]))

    atomic_write(p, emit)


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads would silently keep the last of two equal keys; a tensor would vanish.
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _parse_header(
    p: str, raw: bytes, data_len: int
) -> tuple[dict[str, tuple[np.dtype, tuple[int, ...], int, int]], dict[str, str]]:
    """Validate the JSON header; return {name: (dtype, shape, begin, end)} and the metadata."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(
            f"{p}: header is not valid UTF-8 ({e.reason} at byte {e.start})"
        ) from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise FormatError(
            f"{p}: header is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    except _DuplicateKey as e:
        raise FormatError(f"{p}: header has the key {e.key!r} twice") from None
    except RecursionError:
        raise FormatError(f"{p}: header JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise FormatError(f"{p}: header is a JSON {_json_kind(header)}, expected an object")

    metadata = _check_header_metadata(p, header.get(_METADATA_KEY))
    entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
    for name, entry in header.items():
        if name == _METADATA_KEY:
            continue
        where = f"{p}: tensor {name!r}"
        if name == "":
            raise FormatError(f"{p}: a tensor has an empty name")
        if not isinstance(entry, dict):
            raise FormatError(
                f"{where}: entry is a JSON {_json_kind(entry)}, expected an object with"
                " dtype, shape and data_offsets"
            )
        missing = [k for k in _ENTRY_KEYS if k not in entry]
        if missing:
            raise FormatError(f"{where}: entry is missing {', '.join(missing)}")

        code = entry["dtype"]
        if not isinstance(code, str):
            raise FormatError(f"{where}: dtype {code!r} is not a string code like 'F32'")
        try:
            dt = dtypes.numpy_dtype(dtypes.from_safetensors(code))
        except ValueError as e:
            raise FormatError(f"{where}: {e}") from None

        shape = entry["shape"]
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise FormatError(f"{where}: shape {shape!r} is not a list of non-negative integers")

        offsets = entry["data_offsets"]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_uint, offsets))):
            raise FormatError(
                f"{where}: data_offsets {offsets!r} is not a list of two non-negative integers"
            )
        begin, end = offsets
        if begin > end:
            raise FormatError(f"{where}: data_offsets {offsets} have begin > end")
        if end > data_len:
            raise FormatError(
                f"{where}: data_offsets {offsets} run past the end of the data buffer"
                f" ({data_len} bytes); file truncated?"
            )
        needed = math.prod(shape) * dt.itemsize
        if end - begin != needed:
            raise FormatError(
                f"{where}: data_offsets {offsets} span {end - begin} bytes but shape {shape}"
                f" of {code} needs {needed}"
            )
        entries[name] = (dt, tuple(shape), begin, end)

    # Two tensors sharing bytes would alias each other; empty ranges share nothing.
    ranges = sorted((b, e, n) for n, (_, _, b, e) in entries.items() if e > b)
    for (b0, e0, n0), (b1, e1, n1) in zip(ranges, ranges[1:]):
        if b1 < e0:
            raise FormatError(
                f"{p}: tensors {n0!r} [{b0}, {e0}] and {n1!r} [{b1}, {e1}] overlap"
                " in the data buffer"
            )
    return entries, metadata


def _check_header_metadata(p: str, meta: object) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise FormatError(
            f"{p}: {_METADATA_KEY} is a JSON {_json_kind(meta)}, expected an object of strings"
        )
    for key, value in meta.items():
        if not isinstance(value, str):
            raise FormatError(
                f"{p}: {_METADATA_KEY}[{key!r}] is a JSON {_json_kind(value)} ({value!r}),"
                " expected a string"
            )
    return meta


def _check_metadata(p: str, metadata: object) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise FormatError(
            f"{p}: metadata must be a dict of str to str, got {type(metadata).__name__}"
        )
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise FormatError(
                f"{p}: metadata must map str to str, got {key!r}: {value!r}"
                f" ({type(key).__name__} -> {type(value).__name__})"
            )
        for s in (key, value):
            _check_utf8(p, s, f"metadata entry {key!r}")
        out[key] = value
    return out


def _json_kind(value: object) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _is_uint(value: object) -> bool:
    # JSON true/false arrive as bool, a subclass of int; they are not sizes.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# --------------------------------------------------------------------------- npz


def read_npz(path: PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file (never unpickling anything), in archive order."""
    p = _fspath(path)
    with _open_for_read(p) as f:
        if not zipfile.is_zipfile(f):
            f.seek(0)
            hint = " (it looks like a single .npy file)" if f.read(6) == b"\x93NUMPY" else ""
            raise FormatError(f"{p}: not an .npz file: not a zip archive{hint}")
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
            raise FormatError(f"{p}: not an .npz file: corrupt zip archive ({e})") from None
        with zf:
            tensors: dict[str, np.ndarray] = {}
            for info in zf.infolist():
                member = info.filename
                if info.is_dir() or not member.endswith(".npy"):
                    raise FormatError(
                        f"{p}: member {member!r} is not a .npy array; not an .npz file?"
                    )
                name = member[: -len(".npy")]
                if name in tensors:
                    raise FormatError(f"{p}: member {member!r} appears twice in the archive")
                try:
                    with zf.open(info) as m:
                        tensors[name] = _read_npy_member(p, member, m, info.file_size)
                except (
                    zipfile.BadZipFile,
                    zlib.error,
                    EOFError,
                    NotImplementedError,
                    RuntimeError,
                ) as e:
                    raise FormatError(f"{p}: member {member!r} is corrupt ({e})") from None
    return tensors


def write_npz(path: PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed ``.npz`` (as ``numpy.savez`` does), without pickling.

    bfloat16 / float8 tensors are refused: .npy has no code for them.
    """
    p = _fspath(path)
    arrays = _check_tensors(p, tensors)
    for name, a in arrays.items():
        stored = dtypes.name_of(a.dtype)
        if stored in _NOT_IN_NPZ:
            raise FormatError(
                f"{p}: tensor {name!r} is {stored}, which .npz cannot hold (numpy has no such"
                f" dtype); write a {SAFETENSORS_SUFFIX} file instead"
            )
        if "\0" in name:  # zipfile cuts member names at NUL
            raise FormatError(f"{p}: tensor name {name!r} contains NUL, which .npz cannot hold")

    def emit(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, a in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as m:
                    np.lib.format.write_array(m, a, allow_pickle=False)

    atomic_write(p, emit)


def _read_npy_member(p: str, member: str, m: BinaryIO, member_size: int) -> np.ndarray:
    where = f"{p}: member {member!r}"
    # Parse the header ourselves first so object arrays are refused before any data is read
    # and unsupported dtypes get our message rather than numpy's.
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    try:
        version = np.lib.format.read_magic(m)
        if version not in readers:  # 3.0 exists only for structured dtypes with non-latin-1 names
            raise FormatError(f"{where}: .npy format version {version} is not supported")
        shape, fortran_order, dt = readers[version](m)
    except FormatError:
        raise
    except ValueError as e:
        raise FormatError(f"{where}: not a valid .npy array ({e})") from None
    if dt.hasobject:
        raise FormatError(
            f"{where}: holds Python objects (dtype {dt}), which would need unpickling; refused"
        )
    try:
        dtypes.name_of(dt)
    except ValueError:
        hint = ""
        if dt.kind == "V":
            hint = (
                "; raw bytes, as np.save writes bfloat16/float8 -"
                f" use {SAFETENSORS_SUFFIX} for those"
            )
        raise FormatError(
            f"{where}: unsupported dtype {dt} ({dt.str});"
            f" supported: {', '.join(dtypes.NAMES)}{hint}"
        ) from None
    needed = math.prod(shape) * dt.itemsize
    available = member_size - m.tell()  # checked before allocating: the shape may be a lie
    if needed > available:
        raise FormatError(
            f"{where}: shape {list(shape)} of {dt} needs {needed} bytes, member has {available}"
            " after its header; truncated?"
        )
    arr = _empty(p, f"member {member!r}", shape, dt, order="F" if fortran_order else "C")
    if _read_into(m, arr.T if fortran_order else arr) != needed:
        raise FormatError(f"{where}: data ends early; file truncated?")
    return _little_endian_c(arr)


# --------------------------------------------------------------------------- helpers


def _fspath(path: PathLike) -> str:
    p = os.fspath(path)
    return os.fsdecode(p) if isinstance(p, bytes) else p


def _suffix(p: str) -> str:
    suffix = os.path.splitext(p)[1].lower()
    if suffix not in SUFFIXES:
        raise FormatError(
            f"{p}: unsupported file type {suffix or '(no suffix)'!r};"
            f" supported: {', '.join(SUFFIXES)}"
        )
    return suffix


def _open_for_read(p: str) -> BinaryIO:
    try:
        return open(p, "rb")
    except FileNotFoundError:
        raise FormatError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{p}: is a directory, not a tensor file") from None


def _check_utf8(p: str, s: str, what: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{p}: {what} is not encodable as UTF-8: {s!r}") from None


def _check_tensors(p: str, tensors: object) -> dict[str, np.ndarray]:
    """Validate names and arrays; return them little-endian and C-contiguous, in input order."""
    if not isinstance(tensors, Mapping):
        raise FormatError(
            f"{p}: tensors must be a mapping of name to numpy array, got {type(tensors).__name__}"
        )
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise FormatError(f"{p}: tensor name {name!r} is not a non-empty string")
        _check_utf8(p, name, "tensor name")
        if isinstance(value, np.generic):  # a numpy scalar is a 0-d tensor
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise FormatError(
                f"{p}: tensor {name!r} is a {type(value).__name__}, expected a numpy array"
            )
        try:
            dtypes.name_of(value.dtype)
        except ValueError as e:
            raise FormatError(f"{p}: tensor {name!r}: {e}") from None
        out[name] = _little_endian_c(value)
    return out


def _little_endian_c(a: np.ndarray) -> np.ndarray:
    # byteswap + relabel moves bytes only, so NaN payloads survive (no float conversion).
    if a.dtype.str[0] == ">":
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    # not np.ascontiguousarray: it turns 0-d arrays into shape (1,)
    return a if a.flags.c_contiguous else a.copy(order="C")


def _bytes_view(a: np.ndarray) -> memoryview:
    """The raw bytes of a C-contiguous array, without copying."""
    return memoryview(a.reshape(-1).view(np.uint8))


def _empty(p: str, what: str, shape: tuple[int, ...], dt: np.dtype, order: str = "C") -> np.ndarray:
    try:
        return np.empty(shape, dtype=dt, order=order)
    except (ValueError, OverflowError) as e:  # e.g. more than 64 dimensions
        raise FormatError(
            f"{p}: {what}: cannot make an array of shape {list(shape)}: {e}"
        ) from None


def _read_into(f: BinaryIO, arr: np.ndarray) -> int:
    """Fill the C-contiguous ``arr`` from ``f``; return the number of bytes read."""
    view = _bytes_view(arr)
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            break
        done += n
    return done


def atomic_write(p: str, emit: Callable[[BinaryIO], None]) -> None:
    """Write via a temp file in the target's directory, then rename over the target."""
    directory = os.path.dirname(os.path.abspath(p))
    tmp = os.path.join(directory, f".{os.path.basename(p)}.{secrets.token_hex(6)}.tmp")
    try:
        # os.open with 0o666 lets the umask decide permissions, as a plain open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except FileNotFoundError:
        raise FormatError(f"{p}: no such directory {directory!r}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            emit(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
