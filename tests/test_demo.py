"""The README's `make demo`: `python -m sqlite_tensor demo` runs start to end."""

import subprocess
import sys


def test_demo_runs_and_shows_both_dedups(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sqlite_tensor", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "dedup ratio:" in out  # exact dedup of the generated family
    assert "│ tuned-2" in out  # the shell answered
    assert "Approximate dedup" in out and "physical" in out
    assert "tensor_stats('trained')" in out and "│ 5      │" in out
    assert (tmp_path / "demo.sqlite").exists()


def test_demo_never_overwrites_a_file_it_did_not_make(tmp_path):
    import apsw

    precious = tmp_path / "precious.sqlite"
    conn = apsw.Connection(str(precious))
    conn.execute("CREATE TABLE notes(text); INSERT INTO notes VALUES ('keep me')")
    conn.close()
    before = precious.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "sqlite_tensor", "demo", str(precious)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "was not made by the demo" in done.stderr and "--force" in done.stderr
    assert precious.read_bytes() == before


def test_demo_replaces_its_own_file(tmp_path):
    from sqlite_tensor.testing import demo

    path = tmp_path / "d.sqlite"
    demo.build(str(path), 2)
    assert demo.made_by_demo(path)
    stats = demo.build(str(path), 2)  # a second run replaces the demo's own file
    assert stats["models"] == 2
