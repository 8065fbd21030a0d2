"""The README's demo: a model family into one SQLite file, its dedup figures, the same
file queried from the stock sqlite3 shell, then approximate dedup of a trained family in
a second store of that file."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import formats
from ..connection import connect, loadable_path
from ..errors import TensorStoreError
from ..store import Store
from .families import TEXT_CLASSIFIER_LAYERS, text_classifier_family

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


# PRAGMA application_id of files the demo makes ("STDM"): only such a file is ever replaced
DEMO_APPLICATION_ID = 0x5354444D


def made_by_demo(path: Path) -> bool:
    """True when path is a SQLite file that the demo created (its application_id says so)."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError:
        return False
    return (
        len(header) == 100
        and header.startswith(b"SQLite format 3\0")
        and int.from_bytes(header[68:72], "big") == DEMO_APPLICATION_ID
    )


def build(
    db_path: str = "demo.sqlite", n_models: int = 5, *, verbose: bool = False, force: bool = False
) -> dict:
    """(Re)create db_path holding the demo family, each model added from a .safetensors
    file as a user would; returns the store's stats(). An existing file is replaced only
    when the demo made it, or with force=True: anything else is an error, file untouched."""
    db = Path(db_path)
    if db.exists() and not force and not made_by_demo(db):
        raise TensorStoreError(
            f"{db} exists and was not made by the demo; not overwriting it "
            "(choose another file, or --force to replace it)"
        )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    conn = connect(db)
    try:
        conn.execute(f"PRAGMA application_id = {DEMO_APPLICATION_ID}")
    finally:
        conn.close()
    family = text_classifier_family(n_models, vocab=16384, dim=128, hidden=32)
    say = print if verbose else (lambda *a, **k: None)
    say(
        f"A family of {len(family)} text classifiers (one shared word embedding), "
        f"each saved as .safetensors, stored in {db}:\n"
    )
    with tempfile.TemporaryDirectory() as tmp, Store(db) as store:
        say(
            f"  {'model':<10} {'tensors':>7} {'blocks':>7} {'new blocks':>10} "
            f"{'model size':>13} {'new bytes':>13}"
        )
        for name, tensors in family.items():
            path = os.path.join(tmp, f"{name}.safetensors")
            formats.write_safetensors(path, tensors)
            r = store.add_model(name, path, layers=TEXT_CLASSIFIER_LAYERS)
            say(
                f"  {name:<10} {r.tensors:>7} {r.blocks:>7} {r.new_blocks:>10} "
                f"{_mib(r.logical_bytes):>13} {_mib(r.new_bytes):>13}"
            )
        return store.stats()


def run(db_path: str = "demo.sqlite", n_models: int = 5, *, force: bool = False) -> int:
    """Build the demo store, print its figures, and query it from the sqlite3 shell."""
    s = build(db_path, n_models, verbose=True, force=force)
    print(
        f"\n  stored separately: {_mib(s['logical_bytes'])}   distinct blocks: "
        f"{_mib(s['physical_bytes'])}   dedup ratio: {s['dedup_ratio']:.2f}x   "
        f"pages: {s['pages']} of up to {s['page_blocks']} blocks of "
        f"{s['block_rows']}x{s['block_cols']}"
    )
    loadable = loadable_path()
    print(f"\nThe same file in the sqlite3 shell:  sqlite3 {db_path}\n")
    print("".join(f"  sqlite> {line}\n" for line in shell_script(loadable).splitlines()))
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        print("(no sqlite3 shell on PATH: apt-get install sqlite3 to run the above)")
        return 0
    out = subprocess.run(
        [sqlite3, str(db_path)],
        input=shell_script(loadable),
        text=True,
        capture_output=True,
        check=False,
    )
    print(out.stdout + out.stderr)
    if out.returncode:
        return out.returncode
    approximate(db_path)
    query = (
        f".load {loadable}\n.mode box\nSELECT models, logical_bytes, physical_bytes,"
        " round(dedup_ratio, 2) AS dedup_ratio FROM tensor_stats('trained');\n"
    )
    print("  sqlite> SELECT ... FROM tensor_stats('trained');")
    out = subprocess.run(
        [sqlite3, str(db_path)], input=query, text=True, capture_output=True, check=False
    )
    print(out.stdout + out.stderr)
    return out.returncode


def approximate(db_path: str) -> None:
    """Train a base classifier and four fine-tuned variants, store them as "trained" in the
    same file, and deduplicate them approximately within one point of accuracy."""
    from ..dedup import accuracy
    from .trained import fine_tuned_family

    print(
        "\nApproximate dedup: a base text classifier and 4 variants fine-tuned on related\n"
        "tasks (trained now, a few seconds), into the store 'trained' of the same file:\n"
    )
    family = fine_tuned_family(4)
    with Store(db_path, "trained", block_rows=64, block_cols=64) as store:
        for name, tensors in family.models.items():
            store.add_model(name, tensors, layers=family.layers)
        x = {m: bags for m, (bags, _) in family.validation.items()}
        y = {m: labels for m, (_, labels) in family.validation.items()}
        report = store.dedup(validator=accuracy(x, y), max_drop=0.0075)
        print("\n".join("  " + line for line in str(report).splitlines()))
        print(
            "\n  test accuracy as trained -> from the deduplicated store: "
            + ", ".join(
                f"{m} {100 * trained_acc:.1f} -> {100 * accuracy({m: bags}, {m: labels})(store, m):.1f}"
                for m, (bags, labels) in family.test.items()
                for trained_acc in [_accuracy(family, m)]
            )
            + "\n"
        )


def _accuracy(family, model: str) -> float:
    from .trained import accuracy

    bags, labels = family.test[model]
    return accuracy(family.models[model], bags, labels)
