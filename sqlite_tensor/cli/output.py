"""What the commands print: JSON or text on stdout, progress bars on stderr.

A progress bar (tqdm) appears only when stderr is a terminal, and only once the work has
taken a second (SQLITE_TENSOR_PROGRESS_DELAY, in seconds, changes that).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager


class Output:
    def __init__(self, as_json: bool):
        self.json = as_json

    def emit(self, data, text: str | None = None) -> None:
        """data as JSON with --json, else text (or nothing)."""
        if self.json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        elif text is not None:
            print(text)

    @contextmanager
    def progress(self, desc: str, *, unit: str = "it", scale: bool = False):
        """A callback(done, total, what) that moves a bar, or None when there is no
        terminal to show it on."""
        if not sys.stderr.isatty():
            yield None
            return
        from tqdm import tqdm

        bars = []  # made at the first call, when the total is known

        def update(done, total, what=None):
            if not bars:
                bars.append(
                    tqdm(
                        desc=desc,
                        total=total or None,
                        unit=unit,
                        unit_scale=scale,
                        unit_divisor=1024 if scale else 1000,
                        delay=_delay(),
                        file=sys.stderr,
                        leave=False,
                        dynamic_ncols=True,
                    )
                )
            bar = bars[0]
            if total and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        try:
            yield update
        finally:
            for bar in bars:
                bar.close()

    @contextmanager
    def busy(self, conn, desc: str):
        """A bar counting SQLite's steps (with the time taken) while conn works on
        something that has no progress of its own (VACUUM, a verify, a pack)."""
        if not sys.stderr.isatty():
            yield
            return
        from tqdm import tqdm

        bar = tqdm(
            desc=desc,
            unit=" steps",
            unit_scale=True,
            delay=_delay(),
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

        def tick() -> bool:
            bar.update(1)
            return False  # go on

        conn.set_progress_handler(tick, 100_000)
        try:
            yield
        finally:
            conn.set_progress_handler(None)
            bar.close()


def _delay() -> float:
    try:
        return float(os.environ.get("SQLITE_TENSOR_PROGRESS_DELAY", "1"))
    except ValueError:
        return 1.0


def count(n: int, word: str) -> str:
    """'1 tensor', '2 tensors'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def mib(n: int) -> str:
    """Bytes for people: 1.5 KiB, 87.2 MiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def table(rows: list[list], headers: list[str], right: set[int] = frozenset()) -> str:
    """Plain aligned columns."""
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in cells
    )
