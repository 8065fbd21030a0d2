"""The files a model came with, and the model written back out as it came in.

``<store>_files(model_id, path, data)`` (created by the engine: st_store_ddl in
cython/c/st_schema.h) holds, per model:
- its side files (``config.json``, tokenizer files, ``1_Pooling/config.json``, a sharded
  checkpoint's index, ...) by relative path, byte for byte;
- at path ``''`` its layout (JSON, written by :mod:`sqlite_tensor.sources`): which tensor
  files the tensors came in, and for a safetensors file its header exactly as stored
  (``__metadata__`` and padding included) and any bytes of its data buffer that are in no
  tensor. With the tensors' own bytes from the store, that gives each file back byte for
  byte.

A database file is untrusted: every path read back is checked (relative, no ``..``, no
NUL, ...; :func:`sqlite_tensor.sources.check_path`), sizes are bounded before anything
is read, the layout is checked like a file being read (the safetensors header parsed by
the same code), and a folder is written into a fresh directory with O_EXCL|O_NOFOLLOW,
then renamed into place: nothing is ever written outside it, and a failure leaves
nothing behind.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil

import numpy as np

from . import blocks, formats, sources
from .errors import CorruptStoreError, FormatError, TensorStoreError
from .schema import has_shadow_table, quote


def _model_id(store, model: str) -> int:
    from .store.writer import require_model  # here: the store package imports this module

    return require_model(store, model)


LAYOUT_PATH = ""
LAYOUT_VERSION = 1
DEFAULT_WEIGHTS = "model.safetensors"  # a model with no layout (added from arrays)


def _table(store) -> str:
    return quote(f"{store.name}_files")


def has_table(store) -> bool:
    """False for an older store opened read-only (the upgrade adds the table)."""
    return has_shadow_table(store.conn, store.name, "files")


def save(store, model_id: int, source: sources.Source) -> None:
    """Keep a source's files and layout with the model; inside the caller's write."""
    t = _table(store)
    # rows a writer that did not know this table left for an id now reused
    store.conn.execute(f"DELETE FROM {t} WHERE model_id = ?", (model_id,))
    rows = [(model_id, LAYOUT_PATH, json.dumps(source.layout, ensure_ascii=False).encode())]
    rows += [
        (model_id, sources.check_path(p, source.path), data)
        for p, data in sorted(source.files.items())
    ]
    store.conn.executemany(f"INSERT INTO {t}(model_id, path, data) VALUES (?, ?, ?)", rows)


def forget(store, model_id: int) -> None:
    """Drop a model's files; inside the caller's write (Store.drop_model)."""
    if has_table(store):
        store.conn.execute(f"DELETE FROM {_table(store)} WHERE model_id = ?", (model_id,))


def _rows(store, model_id: int, *, with_layout: bool = True) -> dict[str, bytes]:
    """A model's rows, checked before they are read: path, type and size."""
    if not has_table(store):
        return {}
    t = _table(store)
    where = f"store {store.name!r}: {store.name}_files"
    listed = store.conn.execute(
        f"SELECT rowid, typeof(path), CAST(path AS BLOB), typeof(data), length(CAST(data AS BLOB))"
        f" FROM {t} WHERE model_id = ? ORDER BY path LIMIT ?",
        (model_id, sources.MAX_FILES + 2),
    ).fetchall()
    if len(listed) > sources.MAX_FILES + 1:
        raise CorruptStoreError(f"{where}: model {model_id} has over {sources.MAX_FILES} files")
    total = 0
    wanted = []
    for rowid, ptype, raw_path, dtype, size in listed:
        try:
            path = raw_path.decode("utf-8") if ptype == "text" else None
        except UnicodeDecodeError:
            path = None
        if path is None:
            raise CorruptStoreError(f"{where}: row {rowid} has a path that is not UTF-8 text")
        if path != LAYOUT_PATH:
            try:
                sources.check_path(path)
            except FormatError as e:
                raise CorruptStoreError(f"{where}: row {rowid}: {e}") from None
        elif not with_layout:
            continue
        if dtype != "blob":
            raise CorruptStoreError(f"{where}: row {rowid} ({path!r}) holds {dtype}, not a BLOB")
        if size > sources.MAX_FILE_BYTES:
            raise CorruptStoreError(
                f"{where}: {path!r} is {size} bytes (limit {sources.MAX_FILE_BYTES})"
            )
        total += size
        if total > sources.MAX_TOTAL_FILE_BYTES:
            raise CorruptStoreError(
                f"{where}: model {model_id}'s files are over "
                f"{sources.MAX_TOTAL_FILE_BYTES} bytes in all"
            )
        wanted.append((rowid, path))
    return {
        path: store.conn.execute(f"SELECT data FROM {t} WHERE rowid = ?", (rowid,)).get
        for rowid, path in wanted
    }


def files(store, model: str) -> dict[str, bytes]:
    """The files kept with a model (config.json, tokenizer files, ...), by relative path."""
    return _rows(store, _model_id(store, model), with_layout=False)


def layout(store, model: str) -> dict | None:
    """The model's layout as stored (None for a model added from arrays), checked."""
    model_id = _model_id(store, model)
    raw = _rows(store, model_id).get(LAYOUT_PATH)
    return None if raw is None else _check_layout(store, raw)


def problems(store) -> list[str]:
    """What Store.verify reports about the files table: rows of models that are gone,
    paths or sizes out of bounds, layouts that cannot be read."""
    if not has_table(store):
        return []
    out = []
    t = _table(store)
    orphans = store.conn.execute(
        f"SELECT count(*) FROM {t} f WHERE NOT EXISTS (SELECT 1 FROM"
        f" {quote(store.name + '_models')} m WHERE m.id = f.model_id)"
    ).get
    if orphans:
        out.append(f"{orphans} files name missing models")
    for model_id, name in store.conn.execute(
        f"SELECT id, name FROM {quote(store.name + '_models')} ORDER BY id"
    ).fetchall():
        try:
            raw = _rows(store, model_id).get(LAYOUT_PATH)
            if raw is not None:
                _check_layout(store, raw)
        except CorruptStoreError as e:
            out.append(f"model {name!r}: {e}")
    return out


def _check_layout(store, raw: bytes) -> dict:
    where = f"store {store.name!r}: the layout of a model"

    def bad(what: str):
        return CorruptStoreError(f"{where} is damaged: {what}")

    try:
        lay = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"not JSON ({e})") from None
    if not isinstance(lay, dict) or lay.get("version") != LAYOUT_VERSION:
        raise bad(f"not a version-{LAYOUT_VERSION} layout object")
    entries = lay.get("tensor_files")
    if not isinstance(entries, list) or not entries:
        raise bad("no tensor_files list")
    seen = set()
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("format") not in (
            "safetensors",
            "npz",
            "torch",
        ):
            raise bad(f"tensor file entry {str(entry)[:80]!r}")
        try:
            sources.check_path(entry.get("path"))
        except FormatError as e:
            raise bad(str(e)) from None
        if entry["path"] in seen:
            raise bad(f"{entry['path']!r} twice")
        seen.add(entry["path"])
        if entry["format"] == "safetensors":
            header, data_bytes, gaps = (
                entry.get("header"),
                entry.get("data_bytes"),
                entry.get("gaps", []),
            )
            if (
                not isinstance(header, str)
                or not formats._is_uint(data_bytes)
                or not isinstance(gaps, list)
            ):
                raise bad(f"{entry['path']!r}: no header, data_bytes or gaps")
            if len(header) > formats.MAX_HEADER_BYTES:
                raise bad(
                    f"{entry['path']!r}: a header of {len(header)} characters (limit "
                    f"{formats.MAX_HEADER_BYTES})"
                )
            try:
                entry["_entries"], entry["_metadata"] = formats.parse_safetensors_header(
                    f"{where} ({entry['path']})", header.encode("utf-8"), data_bytes
                )
            except FormatError as e:
                raise bad(str(e)) from None
            decoded = []
            for gap in gaps:
                try:
                    at, data = gap
                    data = base64.b64decode(data, validate=True)
                except (TypeError, ValueError):
                    raise bad(f"{entry['path']!r}: a gap entry {str(gap)[:60]!r}") from None
                if not formats._is_uint(at) or at + len(data) > data_bytes:
                    raise bad(f"{entry['path']!r}: a gap at {at!r} outside the data buffer")
                decoded.append((at, data))
            if sum(len(d) for _, d in decoded) > sources.MAX_GAP_BYTES:
                raise bad(f"{entry['path']!r}: gaps over {sources.MAX_GAP_BYTES} bytes")
            entry["_gaps"] = decoded
        else:
            names = entry.get("tensors")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise bad(f"{entry['path']!r}: no tensor list")
            entry["_names"] = names
    return lay


def _fits(lay: dict, infos) -> bool:
    """Whether the layout's tensors are the model's (names, dtypes, shapes): a model
    replaced by update_model with other tensors is written in a fresh layout instead."""
    have = {i.name: (i.dtype, tuple(i.shape)) for i in infos}
    named = []
    for entry in lay["tensor_files"]:
        if entry["format"] == "safetensors":
            for n, (dt, shape, _, _) in entry["_entries"].items():
                if have.get(n) != (dt, tuple(shape)):
                    return False
                named.append(n)
        else:
            named.extend(entry["_names"])
    return len(named) == len(set(named)) and set(named) == set(have)


def _tensor_bytes(store, model: str, name: str) -> memoryview:
    return memoryview(blocks.byte_view(store.get_tensor(model, name)))


def _safetensors_chunks(store, model: str, entry: dict, tick):
    """The bytes of one safetensors file, piece by piece, as its layout says."""
    header = entry["header"].encode("utf-8")
    yield len(header).to_bytes(8, "little")
    yield header
    pieces = [(b, e, n) for n, (_, _, b, e) in entry["_entries"].items()]
    pieces += [(at, at + len(data), data) for at, data in entry["_gaps"]]
    at = 0
    for b, e, what in sorted(pieces, key=lambda x: (x[0], x[1])):
        if b == e:
            continue
        if b != at:
            raise CorruptStoreError(
                f"store {store.name!r}: the layout of {entry['path']!r} "
                f"leaves bytes [{at}, {b}) of its data buffer unaccounted for"
            )
        if isinstance(what, str):
            data = _tensor_bytes(store, model, what)
            tick(what)
        else:
            data = what
        if len(data) != e - b:
            raise CorruptStoreError(
                f"store {store.name!r}: {entry['path']!r}: {e - b} bytes "
                f"expected at {b}, the store gives {len(data)}"
            )
        yield data
        at = e
    if at != entry["data_bytes"]:
        raise CorruptStoreError(
            f"store {store.name!r}: the layout of {entry['path']!r} ends "
            f"its data at {at} of {entry['data_bytes']} bytes"
        )


def export(store, model: str, out, *, progress=None) -> dict:
    """Write a model out: ``out`` ending in ``.safetensors`` or ``.npz`` is one file (a
    model that came as one safetensors file comes back byte for byte, ``__metadata__``
    included); any other ``out`` is a folder laid out as the model came in, with the files
    kept with it (it must not exist, or be an empty folder). Tensors are bit-exact.
    ``progress(done, total, tensor)`` is called per tensor. Returns what was written:
    ``{"path", "kind", "files", "bytes"}``."""
    p = formats._fspath(out)
    infos = store.tensors(model)  # NotFoundError for an unknown model
    lay = layout(store, model)
    if lay is not None and not _fits(lay, infos):
        lay = None
    state = {"done": 0}

    def tick(name: str) -> None:
        state["done"] += 1
        if progress:
            progress(state["done"], len(infos), name)

    suffix = os.path.splitext(p)[1].lower()
    if suffix in sources.TORCH_SUFFIXES:
        raise FormatError(
            f"{p}: export writes a .safetensors or .npz file or a folder, not a "
            "PyTorch file (torch reads .safetensors: safetensors.torch.load_file)"
        )
    if suffix == formats.SAFETENSORS_SUFFIX:
        entries = lay["tensor_files"] if lay else []
        if len(entries) == 1 and entries[0]["format"] == "safetensors":
            formats.atomic_write(
                p,
                lambda f: [f.write(c) for c in _safetensors_chunks(store, model, entries[0], tick)],
            )
        else:
            metas = [
                json.dumps(e["_metadata"], sort_keys=True)
                for e in entries
                if e["format"] == "safetensors"
            ]
            meta = json.loads(metas[0]) if metas and len(set(metas)) == 1 else None
            formats.write_safetensors(p, _read_all(store, model, infos, tick), meta or None)
        return {"path": p, "kind": "safetensors", "files": 1, "bytes": os.path.getsize(p)}
    if suffix == formats.NPZ_SUFFIX:
        formats.write_npz(p, _read_all(store, model, infos, tick))
        return {"path": p, "kind": "npz", "files": 1, "bytes": os.path.getsize(p)}
    return _export_folder(store, model, p, lay, infos, tick)


def _read_all(store, model, infos, tick) -> dict[str, np.ndarray]:
    out = {}
    for info in infos:
        out[info.name] = store.get_tensor(model, info.name)
        tick(info.name)
    return out


def _export_folder(store, model: str, p: str, lay, infos, tick) -> dict:
    if os.path.lexists(p) and not (
        os.path.isdir(p) and not os.path.islink(p) and not os.listdir(p)
    ):
        raise FormatError(
            f"{p}: exists; export writes a new folder (give a path that does "
            "not exist, or an empty folder), or a .safetensors / .npz file"
        )
    parent = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(parent):
        raise FormatError(f"{p}: no such directory {parent!r}")
    side = files(store, model)
    if lay is None:
        entries = [{"path": DEFAULT_WEIGHTS, "format": "safetensors", "_fresh": True}]
    else:
        entries = lay["tensor_files"]
    plan: dict[str, object] = {}
    torch_files = sum(e["format"] == "torch" for e in entries)
    for entry in entries:
        path = entry["path"]
        if entry["format"] == "torch":  # torch files come back as one safetensors file
            path = (
                DEFAULT_WEIGHTS
                if torch_files > 1 or path == "pytorch_model.bin"
                else os.path.splitext(path)[0] + formats.SAFETENSORS_SUFFIX
            )
            if path in plan:
                continue
        plan[path] = entry
    for path in side:
        if path in plan:
            raise CorruptStoreError(
                f"store {store.name!r}: model {model!r} keeps a file "
                f"{path!r} that is also one of its tensor files"
            )
        plan[path] = side[path]
    _check_tree(store, list(plan))
    tmp = os.path.join(
        parent, f".{os.path.basename(os.path.abspath(p))}.{secrets.token_hex(6)}.tmp"
    )
    os.mkdir(tmp)
    written = 0
    try:
        for path, what in plan.items():
            target = _new_file_path(tmp, path)
            if isinstance(what, bytes):
                _write_new(target, [what])
            elif what["format"] == "safetensors" and not what.get("_fresh"):
                _write_new(target, _safetensors_chunks(store, model, what, tick))
            elif what["format"] == "npz":
                # formats writes atomically beside the target: a fresh name in our folder
                formats.write_npz(target, {n: _one(store, model, n, tick) for n in what["_names"]})
            else:  # a fresh safetensors file: every tensor (a torch source's shards: one file)
                formats.write_safetensors(target, _read_all(store, model, infos, tick))
            written += os.path.getsize(target)
        os.rename(tmp, p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "path": p,
        "kind": lay["kind"] if lay else "folder",
        "files": len(plan),
        "bytes": written,
    }


def _one(store, model, name, tick):
    a = store.get_tensor(model, name)
    tick(name)
    return a


def _check_tree(store, paths: list[str]) -> None:
    """No path is both a file and a folder of another (a/b and a/b/c)."""
    as_file = set(paths)
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in as_file:
                raise CorruptStoreError(
                    f"store {store.name!r}: {'/'.join(parts[:i])!r} is "
                    f"kept as a file and as the folder of {path!r}"
                )


def _new_file_path(root: str, rel: str) -> str:
    """root/rel, its folders made fresh inside root (checked path: no '..', no '/')."""
    parts = sources.check_path(rel).split("/")
    d = root
    for part in parts[:-1]:
        d = os.path.join(d, part)
        if not os.path.isdir(d) or os.path.islink(d):
            os.mkdir(d)  # FileExistsError if something else is there
    return os.path.join(d, parts[-1])


def _write_new(path: str, chunks) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as f:
        for c in chunks:
            f.write(c)


# -- the file's free space -----------------------------------------------------------------------


def free_space(conn) -> dict:
    """The database file's size and its free pages (what VACUUM would give back)."""
    page_size = conn.execute("PRAGMA page_size").get
    pages = conn.execute("PRAGMA page_count").get
    free = conn.execute("PRAGMA freelist_count").get
    return {
        "page_size": page_size,
        "file_pages": pages,
        "free_pages": free,
        "file_bytes": pages * page_size,
        "free_bytes": free * page_size,
    }


def vacuum(conn) -> dict:
    """VACUUM the database: free pages go back to the file system. Returns the file's
    bytes before and after, and ``freed``."""
    if conn.in_transaction:
        raise TensorStoreError("vacuum cannot run inside a transaction; commit first")
    before = free_space(conn)
    conn.execute("VACUUM")
    if conn.execute("PRAGMA journal_mode").get == "wal":
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    after = free_space(conn)
    return {
        "bytes_before": before["file_bytes"],
        "bytes_after": after["file_bytes"],
        "freed": before["file_bytes"] - after["file_bytes"],
        "free_pages_before": before["free_pages"],
    }
