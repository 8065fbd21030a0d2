"""Model sources as people have them on disk, read into one model: its tensors, the files
that came with them, and the layout to write the same folder back.

A source is one of:
- a ``.safetensors`` or ``.npz`` file;
- a Hugging Face folder: ``config.json`` and ``model.safetensors`` (or another lone
  ``*.safetensors``, or ``pytorch_model.bin``), with tokenizer and sentence-transformers
  files beside them;
- a sharded checkpoint: ``model.safetensors.index.json`` (or ``pytorch_model.bin.index.json``)
  and the shards it names, given as the index file or its folder (the same thing: the
  folder's other files come too);
- a PyTorch ``.bin`` / ``.pt`` / ``.pth`` state dict, read with ``torch.load(...,
  weights_only=True)`` when torch is installed.

A lone shard (``model-00001-of-00002.safetensors``, or a file an index beside it names)
is refused: stored alone it would be half a model.

Every error is a :class:`FormatError` naming the file and the problem. The layout is
written by :mod:`sqlite_tensor.model_files`, which also checks it when it reads it back.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

from . import dtypes, formats
from .errors import FormatError

INDEX_SUFFIX = ".index.json"
TORCH_SUFFIXES = (".bin", ".pt", ".pth")
# the tensor file of a folder, in order of preference
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
FOLDER_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SHARD_NAME = re.compile(r"-(\d+)-of-(\d+)\.(safetensors|bin)$")
# Other copies of the weights a downloaded folder often holds (TensorFlow, Flax, ONNX,
# OpenVINO, GGUF, ...): not kept, the store holds the weights once, deduplicated.
OTHER_WEIGHTS = (
    ".bin",
    ".pt",
    ".pth",
    ".h5",
    ".msgpack",
    ".onnx",
    ".onnx_data",
    ".ckpt",
    ".gguf",
    ".tflite",
    ".ot",
    ".safetensors",
    ".pb",
)
SKIPPED_DIRS = (".git", ".cache")  # .cache/huggingface: the downloader's bookkeeping

# Bounds on the files kept with a model (also checked when they are read back).
MAX_FILE_BYTES = 256 * 2**20
MAX_FILES = 10_000
MAX_TOTAL_FILE_BYTES = 2**30
MAX_GAP_BYTES = 16 * 2**20  # bytes of a safetensors data buffer that are in no tensor
MAX_PATH_CHARS = 1024


@dataclass
class Source:
    """A model read from disk."""

    path: str
    kind: str  # safetensors, npz, folder, sharded, torch
    tensors: dict[str, np.ndarray]
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> bytes
    layout: dict = field(default_factory=dict)  # how the tensors were laid out in files
    skipped: list[tuple[str, int]] = field(default_factory=list)  # (path, bytes) not kept

    @property
    def file_bytes(self) -> int:
        return sum(len(b) for b in self.files.values())


def check_path(path: object, where: str = "") -> str:
    """A relative path inside a model folder, '/'-separated: no absolute path, no empty,
    '.' or '..' part, no NUL, backslash or control character; else FormatError."""
    prefix = f"{where}: " if where else ""
    if not isinstance(path, str) or not path:
        raise FormatError(f"{prefix}file path {path!r} is not a non-empty string")
    if len(path) > MAX_PATH_CHARS:
        raise FormatError(f"{prefix}file path of {len(path)} characters (limit {MAX_PATH_CHARS})")
    if path.startswith("/"):
        raise FormatError(
            f"{prefix}file path {path!r} is absolute; only paths inside the "
            "model's folder are allowed"
        )
    bad = [c for c in path if c == "\\" or ord(c) < 32 or c == "\x7f"]
    if bad:
        raise FormatError(f"{prefix}file path {path!r} contains {bad[0]!r}, which is not allowed")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise FormatError(
                f"{prefix}file path {path!r} has a {part or 'empty'!r} part; "
                "only plain names inside the model's folder are allowed"
            )
        if len(part.encode("utf-8", "surrogatepass")) > 255:
            raise FormatError(f"{prefix}file path {path!r} has a part over 255 bytes")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{prefix}file path {path!r} is not valid UTF-8") from None
    return path


def read_source(path, *, progress=None) -> Source:
    """Read a model source (see the module's docstring). ``progress(done, total, what)``,
    if given, is called as tensor files are read (bytes)."""
    p = formats._fspath(path)
    if os.path.isdir(p):
        return _read_folder(p, progress)
    if not os.path.exists(p):
        raise FormatError(f"{p}: no such file or folder")
    name = os.path.basename(p)
    if name.endswith(INDEX_SUFFIX):
        return _read_folder(os.path.dirname(os.path.abspath(p)), progress, index=name, shown=p)
    suffix = os.path.splitext(name)[1].lower()
    if suffix in (formats.SAFETENSORS_SUFFIX, *TORCH_SUFFIXES):
        _refuse_lone_shard(p)
    if suffix == formats.SAFETENSORS_SUFFIX:
        tensors, entry = _read_tensor_file(p, name, progress)
        return Source(p, "safetensors", tensors, layout=_layout("safetensors", [entry]))
    if suffix == formats.NPZ_SUFFIX:
        tensors, entry = _read_tensor_file(p, name, progress)
        return Source(p, "npz", tensors, layout=_layout("npz", [entry]))
    if suffix in TORCH_SUFFIXES:
        tensors, entry = _read_tensor_file(p, name, progress)
        return Source(p, "torch", tensors, layout=_layout("torch", [entry]))
    raise FormatError(
        f"{p}: unsupported file type {suffix or '(no suffix)'!r}; a model is a .safetensors, "
        ".npz, .bin/.pt/.pth file, a Hugging Face folder or a sharded checkpoint's "
        "index (*.safetensors.index.json) or folder"
    )


def _layout(kind: str, files: list[dict]) -> dict:
    return {"version": 1, "kind": kind, "tensor_files": files}


def _refuse_lone_shard(p: str) -> None:
    name = os.path.basename(p)
    folder = os.path.dirname(os.path.abspath(p))
    m = SHARD_NAME.search(name)
    index = None
    try:
        for other in sorted(os.listdir(folder)):
            if other.endswith(INDEX_SUFFIX):
                try:
                    with open(os.path.join(folder, other), "rb") as f:
                        weight_map = json.loads(f.read(MAX_FILE_BYTES)).get("weight_map", {})
                    if isinstance(weight_map, dict) and name in weight_map.values():
                        index = other
                        break
                except (OSError, ValueError, AttributeError):
                    continue
    except OSError:
        pass
    if index is not None:
        raise FormatError(
            f"{p}: is one shard of the checkpoint "
            f"{os.path.join(os.path.dirname(p), index)};"
            " stored alone it would be part of a model: add the index file or "
            "its folder instead"
        )
    if m is not None:
        raise FormatError(
            f"{p}: is shard {int(m.group(1))} of {int(m.group(2))} of a sharded "
            "checkpoint; stored alone it would be part of a model: add the "
            "checkpoint's index file (model.safetensors.index.json) or its folder"
        )


def _read_tensor_file(p: str, rel: str, progress) -> tuple[dict[str, np.ndarray], dict]:
    """One file's tensors and its layout entry."""
    size = os.path.getsize(p)
    suffix = os.path.splitext(p)[1].lower()
    if progress:
        progress(0, size, rel)
    if suffix == formats.SAFETENSORS_SUFFIX:
        tensors, _, header, data_len = formats.read_safetensors_file(p)
        entry = {
            "path": rel,
            "format": "safetensors",
            "header": header.decode("utf-8"),
            "data_bytes": data_len,
        }
        gaps = _gaps(p, header, data_len, tensors)
        if gaps:
            entry["gaps"] = gaps
    elif suffix == formats.NPZ_SUFFIX:
        tensors = formats.read_npz(p)
        entry = {"path": rel, "format": "npz", "tensors": list(tensors)}
    else:
        tensors = read_torch(p)
        entry = {"path": rel, "format": "torch", "tensors": list(tensors)}
    if progress:
        progress(size, size, rel)
    return tensors, entry


def _gaps(p: str, header: bytes, data_len: int, tensors) -> list:
    """Bytes of the data buffer in no tensor (writers leave none; kept so that the file
    comes back byte for byte all the same): [[offset, base64], ...]."""
    entries, _ = formats.parse_safetensors_header(p, header, data_len)
    covered = sorted((b, e) for _, _, b, e in entries.values() if e > b)
    holes, at = [], 0
    for b, e in covered + [(data_len, data_len)]:
        if b > at:
            holes.append((at, b))
        at = max(at, e)
    total = sum(e - b for b, e in holes)
    if not total:
        return []
    if total > MAX_GAP_BYTES:
        raise FormatError(
            f"{p}: {total} bytes of its data buffer are in no tensor "
            f"(limit {MAX_GAP_BYTES}); not a file a safetensors writer made"
        )
    out = []
    with open(p, "rb") as f:
        for b, e in holes:
            f.seek(8 + len(header) + b)
            out.append([b, base64.b64encode(f.read(e - b)).decode("ascii")])
    return out


def read_torch(path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict file, read with ``weights_only=True`` (no code
    from the file runs), as numpy arrays of the same dtypes, bit for bit."""
    p = formats._fspath(path)
    try:
        import torch
    except ImportError:
        raise FormatError(
            f"{p}: reading PyTorch .bin/.pt files needs torch, which is not installed: "
            "pip install torch (the CPU build is enough: pip install torch --index-url "
            "https://download.pytorch.org/whl/cpu), or convert the file to .safetensors"
        ) from None
    import pickle

    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FormatError(f"{p}: no such file") from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FormatError(
            f"{p}: refused by torch.load(weights_only=True): it holds more than "
            f"tensors ({first[:200]})"
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for damaged files
        raise FormatError(
            f"{p}: not a PyTorch file torch can read ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})"
        ) from None
    state = obj
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        state = obj["state_dict"]  # a training checkpoint: the weights are in there
    if not isinstance(state, dict) or not state:
        raise FormatError(
            f"{p}: holds a {type(state).__name__}, not a state dict "
            "(a dict of tensor names to tensors)"
        )
    out = {}
    for name, t in state.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise FormatError(
                f"{p}: entry {name!r} is a {type(t).__name__}, not a tensor; "
                "only a flat dict of tensors can be stored"
            )
        out[name] = _torch_to_numpy(p, name, t, torch)
    return out


def _torch_to_numpy(p: str, name: str, t, torch) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    dtype_name = str(t.dtype).removeprefix("torch.")
    if dtype_name not in dtypes.NAMES:
        raise FormatError(
            f"{p}: tensor {name!r} is {t.dtype}; supported: {', '.join(dtypes.NAMES)}"
        )
    target = dtypes.numpy_dtype(dtype_name)
    if dtype_name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        raw = t.view(torch.int16 if target.itemsize == 2 else torch.uint8).numpy()
        return raw.view(target).copy()
    return t.numpy().copy()


def _read_folder(
    folder: str, progress, *, index: str | None = None, shown: str | None = None
) -> Source:
    shown = shown or folder
    names = set(os.listdir(folder))
    if index is None:
        index = next((n for n in FOLDER_INDEXES if n in names), None)
    if index is None:
        indexes = sorted(n for n in names if n.endswith(INDEX_SUFFIX))
        if len(indexes) == 1:
            index = indexes[0]
    if index is not None:
        shards = _shards(os.path.join(folder, index))
        weights, kind = shards, "sharded"
    else:
        weights = [n for n in FOLDER_WEIGHTS if n in names][:1]
        if not weights:
            lone = sorted(n for n in names if n.endswith(formats.SAFETENSORS_SUFFIX))
            if len(lone) == 1:
                weights = lone
        if not weights:
            found = ", ".join(sorted(names)[:12]) or "nothing"
            raise FormatError(
                f"{shown}: no model weights in this folder: expected "
                f"{' or '.join(FOLDER_WEIGHTS + FOLDER_INDEXES)} (found {found})"
            )
        if SHARD_NAME.search(weights[0]):
            _refuse_lone_shard(os.path.join(folder, weights[0]))
        kind = "folder"
    tensors: dict[str, np.ndarray] = {}
    entries = []
    total = sum(os.path.getsize(os.path.join(folder, w)) for w in weights)
    done = 0
    for w in weights:
        step = (lambda d, t, what, base=done: progress(base + d, total, what)) if progress else None
        part, entry = _read_tensor_file(os.path.join(folder, w), w, step)
        done += os.path.getsize(os.path.join(folder, w))
        for tname in part:
            if tname in tensors:
                raise FormatError(
                    f"{shown}: tensor {tname!r} is in two tensor files (the second is {w})"
                )
        tensors.update(part)
        entries.append(entry)
    files, skipped = _side_files(folder, set(weights), shown)
    return Source(shown, kind, tensors, files, _layout(kind, entries), skipped)


def _shards(index_path: str) -> list[str]:
    """The shard files an index names, in order, each checked to be a plain name beside it."""
    try:
        with open(index_path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise FormatError(f"{index_path}: no such file") from None
    if len(raw) > MAX_FILE_BYTES:
        raise FormatError(f"{index_path}: over {MAX_FILE_BYTES} bytes; not an index file")
    try:
        index = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{index_path}: not valid JSON ({e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError(
            f"{index_path}: has no weight_map (tensor name -> shard file); "
            "not a sharded checkpoint's index"
        )
    shards = []
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or "/" in shard or shard in (".", ".."):
            raise FormatError(
                f"{index_path}: weight_map[{tensor!r}] is {shard!r}, not the "
                "name of a file beside the index"
            )
        check_path(shard, index_path)
        if shard not in shards:
            shards.append(shard)
    folder = os.path.dirname(index_path)
    missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
    if missing:
        raise FormatError(
            f"{index_path}: names {len(missing)} shard file(s) that are not "
            f"there: {', '.join(missing[:5])}"
        )
    return sorted(shards)


def _side_files(folder: str, weights: set[str], shown: str) -> tuple[dict[str, bytes], list]:
    """The other files of a model folder (config, tokenizer, ...), by relative path, and
    the ones not kept (other copies of the weights)."""
    files: dict[str, bytes] = {}
    skipped = []
    total = 0
    for root, dirs, names in os.walk(folder):  # symlinked files are read (HF cache)
        rel_root = os.path.relpath(root, folder)
        dirs[:] = sorted(d for d in dirs if not (rel_root == "." and d in SKIPPED_DIRS))
        for n in sorted(names):
            rel = n if rel_root == "." else f"{rel_root.replace(os.sep, '/')}/{n}"
            full = os.path.join(root, n)
            if rel in weights or not os.path.isfile(full):
                continue
            size = os.path.getsize(full)
            if n.lower().endswith(OTHER_WEIGHTS):
                skipped.append((rel, size))
                continue
            check_path(rel, shown)
            if size > MAX_FILE_BYTES:
                raise FormatError(
                    f"{shown}: {rel} is {size} bytes; files kept with a model are "
                    f"at most {MAX_FILE_BYTES} bytes each"
                )
            total += size
            if total > MAX_TOTAL_FILE_BYTES or len(files) >= MAX_FILES:
                raise FormatError(
                    f"{shown}: over {MAX_FILES} files or {MAX_TOTAL_FILE_BYTES} "
                    "bytes besides the weights; is this a model folder?"
                )
            with open(full, "rb") as f:
                files[rel] = f.read()
    return files, skipped
