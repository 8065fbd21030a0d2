"""The command line: ``sqlite-tensor`` (also ``python -m sqlite_tensor``).

One module per group of commands: models.py (add, export, ls, show, rm, predict, embed),
maintenance.py (stats, verify, pack, vacuum, dedup), info.py (path, version, policies,
demo). Each defines ``register(sub, common)`` (its parsers) and one function per command
taking the parsed arguments and an :class:`Output`; docs/cli.md is the reference.

Every command takes ``--json`` (machine-readable output on stdout); every command that
opens a store takes ``--store NAME``. Bad input is a one-line error on stderr and exit
status 1 (2 for a usage error), and the database is left as it was: commands that only
read open it read-only, and a failed ``add`` removes a file it created.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import apsw

from ..errors import TensorStoreError
from ..layers import LayerError
from . import info, maintenance, models
from .output import Output

GROUPS = (models, maintenance, info)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="sqlite-tensor: deduplicated deep-learning models in a SQLite "
        "file. Every command takes --json; those that open a store take "
        "--store NAME (default: tensors).",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    json_opt = argparse.ArgumentParser(add_help=False)
    json_opt.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    store_opt = argparse.ArgumentParser(add_help=False, parents=[json_opt])
    store_opt.add_argument(
        "--store",
        default="tensors",
        metavar="NAME",
        help="the store (table) in the file (default: tensors)",
    )
    for group in GROUPS:
        group.register(sub, store=store_opt, plain=json_opt)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run one command; returns the exit status. ``prog`` is the name in usage lines
    (default: the program's own file name, as run)."""
    if prog is None:
        prog = os.path.basename(sys.argv[0]) or "sqlite-tensor"
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    out = Output(args.json)
    try:
        return args.run(args, out) or 0
    except BrokenPipeError:  # stdout closed early (| head): the work itself is done
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (TensorStoreError, LayerError, ValueError, OSError, apsw.Error) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, apsw.Error):
            message = (
                message.split(": ", 1)[-1] if message.startswith(type(e).__name__) else message
            )
        print(f"{prog} {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130


def dumps(value) -> str:
    return json.dumps(value, indent=2, default=str)
