"""Tokenization throughput: the engine's C WordPiece (Store.tokenize, SQL tensor_tokenize)
against the Hugging Face `tokenizers` library on one thread, on the same texts and the same
tokenizer.json, side by side in one run (medians of several runs); and the time to load a
BERT-sized (30522-token) tokenizer.json from the store.

    python -m tools.bench_tokenize [--texts 20000] [--runs 5]

Needs `tokenizers` (the test extra). Nothing is downloaded: the vocabulary is trained by
`tokenizers` on generated text (tests/tokenizer_files.py), padded to 30522 tokens.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread for the library too
os.environ["RAYON_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from tokenizer_files import (  # noqa: E402
    CORPUS,
    bert_tokenizer,
    corpus_for_training,
    trained_vocab,
    write_tokenizer_files,
)

import sqlite_tensor  # noqa: E402


def median_rate(fn, n, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    vocab = trained_vocab(vocab_size=8000)
    for i in range(30522 - len(vocab)):  # BERT's vocabulary size
        vocab.setdefault(f"##x{i}", len(vocab))
    ref = bert_tokenizer(vocab, truncation=128)
    texts = (corpus_for_training(n=args.texts, seed=3) + CORPUS)[: args.texts]
    nbytes = sum(len(t.encode()) for t in texts)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bert"
        folder.mkdir()
        weights = {"w": np.zeros(4, np.float32)}
        sqlite_tensor.formats.write_tensors(str(folder / "model.safetensors"), weights)
        write_tokenizer_files(folder, ref)
        store = sqlite_tensor.Store(str(Path(tmp) / "b.sqlite"))
        store.add_model("bert", folder)
        store.conn.execute("CREATE TEMP TABLE texts(body TEXT)")
        store.conn.executemany("INSERT INTO texts VALUES (?)", [(t,) for t in texts])
        # the same ids, first
        assert [a.tolist() for a in store.tokenize("bert", texts[:2000])] == [
            e.ids for e in ref.encode_batch(texts[:2000])
        ]
        loads = []
        for _ in range(args.runs):
            t = time.perf_counter()
            store.conn.execute("SELECT tensor_tokenize('tensors', 'bert', '')").get
            loads.append(time.perf_counter() - t)
        sql = "SELECT count(tensor_tokenize('tensors', 'bert', body)) FROM texts"
        rates = {
            "tokenizers encode_batch (1 thread)": median_rate(
                lambda: ref.encode_batch(texts), len(texts), args.runs
            ),
            "tokenizers encode, one call per text": median_rate(
                lambda: [ref.encode(t) for t in texts], len(texts), args.runs
            ),
            "Store.tokenize (list)": median_rate(
                lambda: store.tokenize("bert", texts), len(texts), args.runs
            ),
            "SQL tensor_tokenize over a table": median_rate(
                lambda: store.conn.execute(sql).get, len(texts), args.runs
            ),
        }
        store.conn.execute("CREATE TABLE main.texts AS SELECT body FROM temp.texts")
        store.close()
        shell = shutil.which("sqlite3")
        if shell:  # the stock shell, no Python: .timer's real time of the same query
            script = f".load {sqlite_tensor.loadable_path()}\n.timer on\n" + (
                f"{sql.replace('FROM texts', 'FROM main.texts')};\n" * args.runs
            )
            out = subprocess.run(
                [shell, str(Path(tmp) / "b.sqlite")],
                input=script,
                capture_output=True,
                text=True,
                env={"PATH": os.environ["PATH"]},
                check=True,
            ).stdout
            real = [float(x) for x in re.findall(r"Run Time: real ([0-9.]+)", out)]
            # the first run also loads the tokenizer, as every statement does
            rates["sqlite3 shell, same query"] = len(texts) / statistics.median(real)
    base = rates["tokenizers encode_batch (1 thread)"]
    print(f"{len(texts)} texts, {nbytes / len(texts):.0f} bytes each on average; vocab 30522")
    print(
        f"load of tokenizer.json in a statement (median): {statistics.median(loads) * 1e3:.1f} ms"
    )
    for name, r in rates.items():
        print(f"  {name:<40} {r:>10,.0f} texts/s  {r / base:5.2f}x")


if __name__ == "__main__":
    main()
