"""Commands on models: add, export, ls, show, rm, predict, embed."""

from __future__ import annotations

import json
import os

import numpy as np

from .. import formats, model_files, sources
from ..errors import FormatError
from ..schema import Tables
from .db import add_db_argument, open_store
from .output import count, mib, table


def register(sub, *, store, plain) -> None:
    p = sub.add_parser(
        "add",
        parents=[store],
        help="add a model from a file or folder",
        description="Add a model: SOURCE is a .safetensors or .npz file, a "
        "Hugging Face folder (config.json + model.safetensors), a sharded "
        "checkpoint (its model.safetensors.index.json or its folder), or a "
        "PyTorch .bin/.pt state dict (needs torch). A folder's other files "
        "(config, tokenizer, ...) are kept with the model. DB is created if "
        "it does not exist.",
    )
    add_db_argument(p)
    p.add_argument("model", metavar="MODEL", help="name of the new model")
    p.add_argument("source", metavar="SOURCE", help="file or folder to read")
    p.add_argument(
        "--layers",
        metavar="FILE.json",
        help="how to run the model: a JSON list of layers (docs/python.md)",
    )
    p.set_defaults(run=add)

    p = sub.add_parser(
        "export",
        parents=[store],
        help="write a model out as it came in",
        description="Write a model out, bit-exact: OUT ending in .safetensors "
        "or .npz is one file; any other OUT is a new folder laid out as the "
        "model came in (its files, shards and index included).",
    )
    add_db_argument(p)
    p.add_argument("model", metavar="MODEL")
    p.add_argument("out", metavar="OUT", help="a .safetensors or .npz file, or a new folder")
    p.set_defaults(run=export)

    p = sub.add_parser(
        "ls",
        parents=[store],
        help="list the models",
        description="One line per model: tensors, logical bytes (its own "
        "size), physical bytes (of the distinct blocks it uses), private "
        "bytes (blocks no other model uses), files kept with it; then the "
        "file's size and free space.",
    )
    add_db_argument(p)
    p.set_defaults(run=ls)

    p = sub.add_parser(
        "show",
        parents=[store],
        help="a model's tensors and files",
        description="A model's tensors (shape, dtype, bytes, blocks, and how "
        "many of those blocks another model shares) and the files kept with it.",
    )
    add_db_argument(p)
    p.add_argument("model", metavar="MODEL")
    p.set_defaults(run=show)

    p = sub.add_parser(
        "rm",
        parents=[store],
        help="remove a model",
        description="Remove a model; blocks no other model uses are freed. "
        "The file keeps its size (see vacuum).",
    )
    add_db_argument(p)
    p.add_argument("model", metavar="MODEL")
    p.set_defaults(run=rm)

    p = sub.add_parser(
        "predict",
        parents=[store],
        help="run a model on inputs",
        description="Run a model (it needs layers) on INPUT: a .npy file, an "
        ".npz file (its array x, or its only array), a .json file (an "
        "array, a list of id lists for bag models, or a list of texts for "
        "encoder models), or a .txt file (one text a line); or on the texts "
        "given with --text. The output goes to stdout as JSON, or with -o to "
        "a .npy file.",
    )
    add_db_argument(p)
    p.add_argument("model", metavar="MODEL")
    _add_input_arguments(p)
    p.set_defaults(run=predict)

    p = sub.add_parser(
        "embed",
        parents=[store],
        help="sentence vectors of an encoder model",
        description="The vectors of an encoder model (a BERT-family folder) for INPUT, "
        "or for the texts given with --text: a .txt file (one text a line), a .json "
        "file (a list of texts, or of token-id lists), .npy or .npz (token ids). The "
        "output goes to stdout as JSON, or with -o to a .npy file.",
    )
    add_db_argument(p)
    p.add_argument("model", metavar="MODEL")
    _add_input_arguments(p)
    p.set_defaults(run=embed)


def _add_input_arguments(p) -> None:
    """INPUT or --text, and -o: what predict and embed read and write."""
    p.add_argument("input", metavar="INPUT", nargs="?")
    p.add_argument(
        "-t",
        "--text",
        action="append",
        metavar="TEXT",
        help="a text to run instead of INPUT (repeat for several)",
    )
    p.add_argument("-o", "--output", metavar="OUT.npy", help="write the output here (.npy)")


def add(args, out) -> int:
    layers = None
    if args.layers is not None:
        layers = _read_json(args.layers, "layers file")
    with out.progress("reading", unit="B", scale=True) as step:
        source = sources.read_source(args.source, progress=step)
    with (
        open_store(args, write=True, create=True) as store,
        out.progress("storing", unit=" tensors") as step,
    ):
        report = store.add_model(args.model, source, layers=layers, progress=step)
        free = store.free_space()
    data = {
        "model": report.model,
        "source": source.path,
        "kind": source.kind,
        "tensors": report.tensors,
        "blocks": report.blocks,
        "new_blocks": report.new_blocks,
        "logical_bytes": report.logical_bytes,
        "new_bytes": report.new_bytes,
        "files": sorted(source.files),
        "file_bytes": source.file_bytes,
        "skipped": [{"path": p, "bytes": n} for p, n in source.skipped],
        "db_bytes": free["file_bytes"],
    }
    lines = [
        f"added {report.model!r} ({source.kind}): {count(report.tensors, 'tensor')}, "
        f"{mib(report.logical_bytes)}; {report.shared_blocks} of {report.blocks} blocks "
        f"shared, {mib(report.new_bytes)} new"
    ]
    if source.files:
        lines.append(
            f"kept {count(len(source.files), 'file')} ({mib(source.file_bytes)}): "
            + ", ".join(sorted(source.files))
        )
    if source.skipped:
        lines.append(
            "not kept (other copies of the weights): "
            + ", ".join(f"{p} ({mib(n)})" for p, n in source.skipped)
        )
    out.emit(data, "\n".join(lines))
    return 0


def export(args, out) -> int:
    with open_store(args) as store:
        n = len(store.tensors(args.model))
        with out.progress("exporting", unit=" tensors") as step:
            done = model_files.export(store, args.model, args.out, progress=step)
    done["tensors"] = n
    out.emit(
        done,
        f"wrote {args.out} ({done['kind']}): {count(n, 'tensor')}"
        + (f", {done['files']} files" if done["files"] > 1 else "")
        + f", {mib(done['bytes'])}",
    )
    return 0


def _files_per_model(store) -> dict[str, tuple[int, int]]:
    if not model_files.has_table(store):
        return {}
    t = Tables(store.name)
    return {
        name: (n, size)
        for name, n, size in store.conn.execute(
            f"SELECT m.name, count(*), coalesce(sum(length(f.data)), 0) FROM {t.files} f"
            f" JOIN {t.models} m ON m.id = f.model_id WHERE f.path <> ? GROUP BY m.id",
            (model_files.LAYOUT_PATH,),
        )
    }


def ls(args, out) -> int:
    with open_store(args) as store, out.busy(store.conn, "reading"):
        rows = store.model_stats()
        files = _files_per_model(store)
        stats = store.stats()
        free = store.free_space()
    for r in rows:
        r["files"], r["file_bytes"] = files.get(r["model"], (0, 0))
    data = {
        "models": rows,
        "physical_bytes": stats["physical_bytes"],
        "logical_bytes": stats["logical_bytes"],
        **free,
    }
    text = table(
        [
            [
                r["model"],
                r["tensors"],
                mib(r["logical_bytes"]),
                mib(r["physical_bytes"]),
                mib(r["private_bytes"]),
                r["files"],
            ]
            for r in rows
        ],
        ["model", "tensors", "logical", "physical", "private", "files"],
        right={1, 2, 3, 4, 5},
    )
    out.emit(data, text + "\n" + _file_line(args.db, free, len(rows)))
    return 0


def _file_line(db: str, free: dict, models: int) -> str:
    line = f"{count(models, 'model')}; {db}: {mib(free['file_bytes'])}, {free['free_pages']} free pages"
    if free["free_pages"]:
        line += f" ({mib(free['free_bytes'])}; `vacuum` gives them back)"
    return line


def show(args, out) -> int:
    with open_store(args) as store, out.busy(store.conn, "reading"):
        infos = store.tensors(args.model)
        t = Tables(store.name)
        counts = {
            name: (n, shared)
            for name, n, shared in store.conn.execute(
                f"SELECT tt.name, count(*), sum(EXISTS (SELECT 1 FROM {t.map} m2 JOIN {t.tensors} t2"
                f" ON t2.id = m2.tensor_id WHERE m2.block_id = m.block_id AND t2.model_id <> tt.model_id))"
                f" FROM {t.tensors} tt JOIN {t.map} m ON m.tensor_id = tt.id"
                f" JOIN {t.models} mo ON mo.id = tt.model_id WHERE mo.name = ? GROUP BY tt.id",
                (args.model,),
            )
        }
        kept = store.files(args.model)
        layers = store.layers(args.model)
    rows = [
        {
            "tensor": i.name,
            "shape": list(i.shape),
            "dtype": i.dtype,
            "nbytes": i.nbytes,
            "blocks": counts.get(i.name, (0, 0))[0],
            "shared_blocks": counts.get(i.name, (0, 0))[1],
        }
        for i in infos
    ]
    data = {
        "model": args.model,
        "tensors": rows,
        "layers": layers,
        "files": [{"path": p, "bytes": len(b)} for p, b in sorted(kept.items())],
    }
    text = table(
        [
            [
                r["tensor"],
                "x".join(map(str, r["shape"])) or "()",
                r["dtype"],
                mib(r["nbytes"]),
                r["blocks"],
                r["shared_blocks"],
            ]
            for r in rows
        ],
        ["tensor", "shape", "dtype", "bytes", "blocks", "shared"],
        right={3, 4, 5},
    )
    total = sum(r["blocks"] for r in rows)
    shared = sum(r["shared_blocks"] for r in rows)
    text += (
        f"\n{count(len(rows), 'tensor')}, {mib(sum(r['nbytes'] for r in rows))}; {shared} of "
        f"{total} blocks shared with other models; "
        + (count(len(layers), "layer") if layers else "no layers")
    )
    if kept:
        text += "\nfiles: " + ", ".join(f"{p} ({mib(len(b))})" for p, b in sorted(kept.items()))
    out.emit(data, text)
    return 0


def rm(args, out) -> int:
    with open_store(args, write=True) as store, out.busy(store.conn, "removing"):
        freed = store.drop_model(args.model)
        free = store.free_space()
        left = len(store.models())
    data = {
        "model": args.model,
        "freed_blocks": freed["blocks"],
        "freed_bytes": freed["bytes"],
        "freed_pages": freed["pages"],
        **free,
    }
    out.emit(
        data,
        f"removed {args.model!r}: {freed['blocks']} blocks ({mib(freed['bytes'])}) "
        f"and {count(freed['pages'], 'page')} freed\n" + _file_line(args.db, free, left),
    )
    return 0


def _read_json(path: str, what: str):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read(sources.MAX_FILE_BYTES))
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file ({what})") from None
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None


def read_input(path: str):
    """A predict or embed INPUT: .npy, .npz (x, or its only array), .json or .txt."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".txt":
        return _read_texts(path)
    if suffix == ".json":
        value = _read_json(path, "input")
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value  # texts, for encoder models
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, list) for v in value)
            and len({len(v) for v in value}) > 1
        ):
            return [np.asarray(v) for v in value]  # bags of different sizes
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiub":
            raise FormatError(f"{path}: not an array of numbers")
        return arr
    if suffix not in (".npy", ".npz"):
        raise FormatError(
            f"{path}: unsupported input type {suffix or '(no suffix)'!r}; "
            "INPUT is .npy, .npz, .json or .txt"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"{path}: not a readable {suffix} file ({e})") from None
    if suffix == ".npy":
        return loaded
    with loaded:
        keys = list(loaded.keys())
        if "x" in keys:
            return loaded["x"]
        if len(keys) == 1:
            return loaded[keys[0]]
    raise FormatError(
        f"{path}: an .npz input needs an array named x (or only one array); "
        f"it has {', '.join(keys) or 'none'}"
    )


def _read_texts(path: str) -> list[str]:
    """A .txt INPUT: one text a line (UTF-8; the line ends are not part of the texts)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(sources.MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    if len(raw) > sources.MAX_FILE_BYTES:
        raise FormatError(f"{path}: over {sources.MAX_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 text (byte {e.start})") from None


def _inputs(args):
    """What INPUT or --text gives (exactly one of them)."""
    if args.output is not None and not args.output.endswith(".npy"):
        raise FormatError(f"{args.output}: -o writes a .npy file")
    if (args.input is None) == (args.text is None):
        raise ValueError("give INPUT or --text (one of them)")
    return args.text if args.text is not None else read_input(args.input)


def predict(args, out) -> int:
    return _run_model(args, out, "predict")


def embed(args, out) -> int:
    return _run_model(args, out, "embed")


def _run_model(args, out, method: str) -> int:
    x = _inputs(args)
    with open_store(args) as store:
        try:
            y = getattr(store, method)(args.model, x)
        except TypeError as e:  # the wrong kind of input for this model
            raise ValueError(str(e)) from None
    if args.output is not None:
        _save_npy(args.output, y)
        out.emit(
            {"model": args.model, "output": args.output, "shape": list(y.shape)},
            f"wrote {args.output}: {y.dtype} {list(y.shape)}",
        )
    else:
        print(json.dumps(y.tolist()))
    return 0


def _save_npy(path: str, y: np.ndarray) -> None:
    """np.save via a temporary file renamed into place (no half-written output)."""
    formats.atomic_write(path, lambda f: np.save(f, y, allow_pickle=False))
