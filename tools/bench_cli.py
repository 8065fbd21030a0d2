"""Wall time of `sqlite-tensor add`, `export` and `ls` on a MiniLM-sized model (104 tensors
with all-MiniLM-L6-v2's shapes, about 90 MB of float32, made deterministically by
tests/model_folders.py; nothing is downloaded), each command run as a user runs it (a new
process), median of --runs. Also `add` from each source format, with a real file of each.

    python tools/bench_cli.py [--runs 5]

The figures include the process's start (importing numpy and the package: about 0.4 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from model_folders import MINILM, bert_tensors, folder_bytes, hf_folder, sharded_folder  # noqa: E402


def timed(args: list[str], cwd: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "sqlite_tensor", *args],
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    tmp = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    try:
        tensors = bert_tensors(**MINILM)
        size = sum(a.nbytes for a in tensors.values())
        print(f"MiniLM-sized model: {len(tensors)} tensors, {size / 1e6:.1f} MB")
        hf_folder(tmp / "minilm", tensors)
        results = {}
        for i in range(runs):
            db = tmp / f"m{i}.sqlite"
            results.setdefault("add (HF folder)", []).append(
                timed(["add", str(db), "m", "minilm"], tmp)
            )
            results.setdefault("export (folder)", []).append(
                timed(["export", str(db), "m", f"out{i}"], tmp)
            )
            results.setdefault("ls", []).append(timed(["ls", str(db)], tmp))
            shutil.rmtree(tmp / f"out{i}")
        db = tmp / "m0.sqlite"
        timed(["export", str(db), "m", "check"], tmp)
        same = folder_bytes(tmp / "check") == folder_bytes(tmp / "minilm")
        print(f"exported folder byte for byte the same as the one added: {same}")
        results["export (.safetensors)"] = [
            timed(["export", str(db), "m", f"x{i}.safetensors"], tmp) for i in range(runs)
        ]
        for name, make in sources(tmp, tensors).items():
            path = make()
            results[f"add ({name})"] = [
                timed(["add", str(tmp / f"f{name}{i}.sqlite"), "m", str(path)], tmp)
                for i in range(runs)
            ]
        timed(["version"], tmp)
        results["(process start: version)"] = [timed(["version"], tmp) for _ in range(runs)]
        print(f"{'command':<28} {'median s':>9} {'min s':>7} {'max s':>7}   ({runs} runs)")
        for name, times in results.items():
            print(
                f"{name:<28} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sources(tmp: Path, tensors) -> dict:
    """A real file of each format add reads, made by the format's own writer."""
    import numpy as np
    from safetensors.numpy import save_file

    def safetensors_file():
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        return tmp / "model.safetensors"

    def npz():
        np.savez(tmp / "model.npz", **tensors)
        return tmp / "model.npz"

    def sharded():
        sharded_folder(tmp / "sharded", tensors, shards=2)
        return tmp / "sharded" / "model.safetensors.index.json"

    def torch_bin():
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, tmp / "pytorch_model.bin")
        return tmp / "pytorch_model.bin"

    out = {".safetensors": safetensors_file, ".npz": npz, "sharded index": sharded}
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        out["PyTorch .bin"] = torch_bin
    else:
        print("(torch not installed: no .bin figure)")
    return out


if __name__ == "__main__":
    main()
