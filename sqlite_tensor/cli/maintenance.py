"""Commands on the whole store or file: stats, verify, pack, vacuum, dedup."""

from __future__ import annotations

import os

import numpy as np

from .. import model_files, packing
from ..connection import connect
from ..dedup.run import STRATEGIES
from ..errors import CorruptStoreError, FormatError, TensorStoreError
from ..schema import Tables
from .db import add_db_argument, open_store
from .models import _file_line, _files_per_model
from .output import count, mib


def register(sub, *, store, plain) -> None:
    p = sub.add_parser(
        "stats",
        parents=[store],
        help="the store's totals and the file's free space",
        description="Models, tensors, logical bytes (the models stored "
        "separately), physical bytes (distinct blocks), the dedup ratio, "
        "pages, and the file's size and free pages.",
    )
    add_db_argument(p)
    p.set_defaults(run=stats)

    p = sub.add_parser(
        "verify",
        parents=[store],
        help="check the store; exit status 1 on a problem",
        description="Check the store's invariants (reference counts, every "
        "block in its page with the right hash, page checksums, the files "
        "kept with models) and SQLite's own quick_check. Exit status 1 when "
        "a problem is found, each printed on its own line.",
    )
    add_db_argument(p)
    p.set_defaults(run=verify)

    p = sub.add_parser(
        "pack",
        parents=[store],
        help="lay the pages out again so each model reads few",
        description="Rewrite the pages so that each model (or tensor) reads "
        "few of them (Store.pack; docs/packing.md).",
    )
    add_db_argument(p)
    p.add_argument(
        "--strategy",
        choices=packing.STRATEGIES,
        default=packing.DEFAULT_STRATEGY,
        help=f"packing strategy (default: {packing.DEFAULT_STRATEGY})",
    )
    p.add_argument(
        "--by",
        choices=("model", "tensor"),
        default="model",
        help="pack for reads by model (default) or by tensor",
    )
    p.set_defaults(run=pack)

    p = sub.add_parser(
        "vacuum",
        parents=[plain],
        help="give the file's free pages back",
        description="Give the file's free pages back to the file system "
        "(SQLite's VACUUM, of the whole file: every store in it) and say how "
        "many bytes that was. Dropping or deduplicating models frees pages "
        "inside the file; only this makes the file smaller.",
    )
    add_db_argument(p)
    p.set_defaults(run=vacuum)

    p = sub.add_parser(
        "dedup",
        parents=[store],
        help="approximate dedup within an accuracy budget",
        description="Share nearly identical blocks too, keeping every model "
        "within --max-drop of its accuracy on the validation set "
        "(Store.dedup; docs/dedup.md). The models need layers.",
    )
    add_db_argument(p)
    p.add_argument(
        "--validation",
        required=True,
        metavar="FILE",
        help="an .npz with arrays x and y, or x_<model> and y_<model> per model",
    )
    p.add_argument(
        "--max-drop",
        required=True,
        type=float,
        metavar="X",
        help="largest accuracy drop allowed per model (0.01: one point)",
    )
    p.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="the models to deduplicate (default: every model, or those the validation file names)",
    )
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="budget",
        help="budget: the fewest bytes within --max-drop (default); greedy: the paper's "
        "guard, each block within --tolerance",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        metavar="T",
        help="the largest error a block may take, relative to its norm (budget: no cap "
        "by default; greedy: 0.02)",
    )
    p.set_defaults(run=dedup)


def stats(args, out) -> int:
    with open_store(args) as store, out.busy(store.conn, "reading"):
        s = store.stats()
        free = store.free_space()
        files = _files_per_model(store)
    s["files"] = sum(n for n, _ in files.values())
    s["file_bytes"] = sum(b for _, b in files.values())
    data = {**s, **free}
    text = "\n".join(
        [
            f"models          {s['models']}",
            f"tensors         {s['tensors']}",
            f"logical bytes   {mib(s['logical_bytes'])} ({s['logical_bytes']})",
            f"physical bytes  {mib(s['physical_bytes'])} ({s['physical_bytes']})",
            f"dedup ratio     {s['dedup_ratio']:.2f}x" if s["dedup_ratio"] else "dedup ratio     -",
            f"blocks          {s['distinct_blocks']} of {s['block_rows']}x{s['block_cols']}",
            f"pages           {s['pages']} ({mib(s['page_bytes'])})",
            f"files kept      {s['files']} ({mib(s['file_bytes'])})",
            _file_line(args.db, free, s["models"]),
        ]
    )
    out.emit(data, text)
    return 0


def verify(args, out) -> int:
    with open_store(args) as store, out.busy(store.conn, "verifying"):
        try:
            problems = store.verify()
        except CorruptStoreError as e:
            problems = [str(e)]
        quick = [r for (r,) in store.conn.execute("PRAGMA quick_check")]
        if quick != ["ok"]:
            problems += [f"sqlite quick_check: {r}" for r in quick]
        models = len(store.models())
        pages = store.conn.execute(f"SELECT count(*) FROM {Tables(store.name).pages}").get
    out.emit(
        {"ok": not problems, "problems": problems, "models": models, "pages": pages},
        "\n".join(problems)
        if problems
        else f"ok: store {args.store!r}, {count(models, 'model')}, {count(pages, 'page')} checked",
    )
    return 1 if problems else 0


def pack(args, out) -> int:
    with open_store(args, write=True) as store, out.busy(store.conn, "packing"):
        r = store.pack(args.strategy, by=args.by)
        free = store.free_space()
        models = len(store.models())
    data = {**r, **free}
    if r["before"] is None:
        text = "nothing to pack: the store has no models"
    else:
        b, a = r["before"], r["after"]
        text = (
            f"{args.strategy} by {args.by}: {r['pages_written']} pages written; pages "
            f"{b['total_pages']} -> {a['total_pages']}, mean read amplification "
            f"{b['mean_amplification']:.2f} -> {a['mean_amplification']:.2f}\n"
            + _file_line(args.db, free, models)
        )
    out.emit(data, text)
    return 0


def vacuum(args, out) -> int:
    if not os.path.isfile(args.db):
        raise TensorStoreError(f"{args.db}: no such file")
    conn = connect(args.db)
    try:
        with out.busy(conn, "vacuum"):
            r = model_files.vacuum(conn)
    finally:
        conn.close()
    out.emit(
        r,
        f"{args.db}: {mib(r['bytes_before'])} -> {mib(r['bytes_after'])}, "
        f"{mib(r['freed'])} ({r['freed']} bytes) given back",
    )
    return 0


def dedup(args, out) -> int:
    from ..dedup import accuracy

    x, y, named = _validation(args.validation)
    models = args.models or named
    if named and args.models:
        missing = [m for m in args.models if m not in named]
        if missing:
            raise FormatError(
                f"{args.validation}: no x_<model>/y_<model> for {', '.join(map(repr, missing))}"
            )
    try:
        validator = accuracy(x, y)
    except TypeError as e:
        raise FormatError(f"{args.validation}: {e}") from None
    with open_store(args, write=True) as store, out.progress("dedup", unit=" validations") as step:
        report = store.dedup(
            models,
            validator=validator,
            max_drop=args.max_drop,
            strategy=args.strategy,
            tolerance=args.tolerance,
            progress=(lambda rep, done, total: step(done, total)) if step else None,
        )
        free = store.free_space()
        models = len(store.models())
    data = {
        "logical_bytes": report.logical_bytes,
        "physical_bytes_before": report.physical_bytes_before,
        "physical_bytes_after": report.physical_bytes_after,
        "seconds": report.seconds,
        "models": [vars(m) for m in report.models],
        **free,
    }
    out.emit(data, f"{report}\n{_file_line(args.db, free, models)}")
    return 0


def _validation(path: str):
    """x, y (arrays, or dicts by model) and the models named, from a validation .npz."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.keys()}
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"{path}: not a readable .npz file ({e})") from None
    if "x" in arrays and "y" in arrays:
        return arrays["x"], arrays["y"], None
    xs = {k[2:]: v for k, v in arrays.items() if k.startswith("x_")}
    ys = {k[2:]: v for k, v in arrays.items() if k.startswith("y_")}
    if not xs or set(xs) != set(ys):
        raise FormatError(
            f"{path}: a validation file holds x and y, or x_<model> and "
            f"y_<model> for each model; it has {', '.join(arrays) or 'nothing'}"
        )
    return xs, ys, sorted(xs)
