"""Commands about the installation: path, version, policies, demo."""

from __future__ import annotations

import contextlib
import io


def register(sub, *, store, plain) -> None:
    p = sub.add_parser(
        "path", parents=[plain], help="print the path of the loadable extension (for .load)"
    )
    p.set_defaults(run=path)
    p = sub.add_parser("version", parents=[plain], help="print the version")
    p.set_defaults(run=version)
    p = sub.add_parser(
        "policies",
        parents=[plain],
        help="rank the buffer pool's policies against Belady's on a model-family trace",
    )
    p.set_defaults(run=policies)
    p = sub.add_parser(
        "demo",
        parents=[plain],
        help="store a model family in a SQLite file and query it",
        description="Store a model family in DB (default demo.sqlite), show its "
        "dedup figures, query it from the sqlite3 shell, and deduplicate a "
        "trained family approximately. An existing file is replaced only if "
        "the demo made it, or with --force.",
    )
    p.add_argument(
        "db",
        nargs="?",
        default="demo.sqlite",
        metavar="DB",
        help="file to create (default: demo.sqlite)",
    )
    p.add_argument("--models", type=int, default=5, help="models in the family (default: 5)")
    p.add_argument(
        "--force", action="store_true", help="replace the file even if the demo did not make it"
    )
    p.set_defaults(run=demo)


def path(args, out) -> int:
    from ..connection import loadable_path

    p = loadable_path()
    out.emit({"path": p}, p)
    return 0


def version(args, out) -> int:
    from .. import __version__

    out.emit({"version": __version__}, __version__)
    return 0


def policies(args, out) -> int:
    from ..testing import workloads

    if not out.json:
        workloads.print_policy_table()
        return 0
    out.emit(workloads.policy_table())
    return 0


def demo(args, out) -> int:
    from ..testing.demo import run

    if args.models < 1:
        raise ValueError(f"--models must be at least 1, got {args.models}")
    if not out.json:
        return run(args.db, args.models, force=args.force)
    with contextlib.redirect_stdout(io.StringIO()) as said:
        status = run(args.db, args.models, force=args.force)
    from ..store import Store

    with Store(args.db, create=False) as store:
        stats = store.stats()
    out.emit({"db": args.db, "status": status, "stats": stats, "output": said.getvalue()})
    return status
