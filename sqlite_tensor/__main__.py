"""``python -m sqlite_tensor``: the command line (sqlite_tensor/cli), which the console
script ``sqlite-tensor`` runs too; the usage line names whichever was run."""

from __future__ import annotations

import sys

from .cli import main as _cli_main


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return _cli_main(argv, prog)


if __name__ == "__main__":
    sys.exit(main(prog="python -m sqlite_tensor"))
