"""Command line: ``python -m sqlite_tensor path|version|demo``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sqlite_tensor",
                                     description="sqlite-tensor: models served from SQLite.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("path", help="print the path of the loadable extension (for .load)")
    sub.add_parser("version", help="print the version")
    sub.add_parser("policies", help="rank the buffer pool's policies against Belady's "
                                    "on a model-family trace")
    demo = sub.add_parser("demo", help="store a model family in a SQLite file and query it")
    demo.add_argument("db", nargs="?", default="demo.sqlite",
                      help="file to create (a file the demo made before is replaced)")
    demo.add_argument("--models", type=int, default=5, help="models in the family")
    demo.add_argument("--force", action="store_true",
                      help="replace the file even if the demo did not make it")
    args = parser.parse_args(argv)
    if args.command == "path":
        from .connection import loadable_path
        print(loadable_path())
    elif args.command == "policies":
        from .testing.workloads import print_policy_table
        print_policy_table()
    elif args.command == "version":
        from . import __version__
        print(__version__)
    else:
        from .testing.demo import run
        from .errors import TensorStoreError
        try:
            return run(args.db, args.models, force=args.force)
        except TensorStoreError as e:
            print(f"{parser.prog} demo: error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
