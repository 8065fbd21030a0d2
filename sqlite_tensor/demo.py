"""The README's demo: a model family into one SQLite file, its dedup figures, and the
same file queried from the stock sqlite3 shell."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import formats
from .connection import loadable_path
from .families import TEXT_CLASSIFIER_LAYERS, text_classifier_family
from .store import Store

SHELL_QUERIES = """\
SELECT model, tensor, shape, dtype FROM tensors WHERE model = 'tuned-2';
SELECT model, logical_bytes, physical_bytes, private_bytes, pages FROM tensor_models('tensors');
SELECT models, logical_bytes, physical_bytes, round(dedup_ratio, 2) AS dedup_ratio FROM tensor_stats('tensors');
SELECT model, round(tensor_max(tensor_predict('tensors', model, '[12, 7, 301, 4095]')), 4) AS score FROM tensor_models('tensors');
"""


def _mib(n: int) -> str:
    return f"{n / 2**20:8.2f} MiB"


def shell_script(db_loadable: str) -> str:
    """What the demo types into the shell: load the extension, then the queries."""
    return f".load {db_loadable}\n.mode box\n{SHELL_QUERIES}"


def build(db_path: str = "demo.sqlite", n_models: int = 5, *, verbose: bool = False) -> dict:
    """(Re)create db_path holding the demo family, each model added from a .safetensors
    file as a user would; returns the store's stats()."""
    db = Path(db_path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    family = text_classifier_family(n_models, vocab=16384, dim=128, hidden=32)
    say = print if verbose else (lambda *a, **k: None)
    say(f"A family of {len(family)} text classifiers (one shared word embedding), "
        f"each saved as .safetensors, stored in {db}:\n")
    with tempfile.TemporaryDirectory() as tmp, Store(db) as store:
        say(f"  {'model':<10} {'tensors':>7} {'blocks':>7} {'new blocks':>10} "
            f"{'model size':>13} {'new bytes':>13}")
        for name, tensors in family.items():
            path = os.path.join(tmp, f"{name}.safetensors")
            formats.write_safetensors(path, tensors)
            r = store.add_model(name, path, layers=TEXT_CLASSIFIER_LAYERS)
            say(f"  {name:<10} {r.tensors:>7} {r.blocks:>7} {r.new_blocks:>10} "
                f"{_mib(r.logical_bytes):>13} {_mib(r.new_bytes):>13}")
        return store.stats()


def run(db_path: str = "demo.sqlite", n_models: int = 5) -> int:
    """Build the demo store, print its figures, and query it from the sqlite3 shell."""
    s = build(db_path, n_models, verbose=True)
    print(f"\n  stored separately: {_mib(s['logical_bytes'])}   distinct blocks: "
          f"{_mib(s['physical_bytes'])}   dedup ratio: {s['dedup_ratio']:.2f}x   "
          f"pages: {s['pages']} of up to {s['page_blocks']} blocks of "
          f"{s['block_rows']}x{s['block_cols']}")
    loadable = loadable_path()
    print(f"\nThe same file in the sqlite3 shell:  sqlite3 {db_path}\n")
    print("".join(f"  sqlite> {line}\n" for line in shell_script(loadable).splitlines()))
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        print("(no sqlite3 shell on PATH: apt-get install sqlite3 to run the above)")
        return 0
    out = subprocess.run([sqlite3, str(db_path)], input=shell_script(loadable), text=True,
                         capture_output=True, check=False)
    print(out.stdout + out.stderr)
    return out.returncode
