"""The README's `make demo`: `python -m sqlite_tensor demo` runs start to end."""
import subprocess
import sys


def test_demo_runs_and_shows_both_dedups(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sqlite_tensor", "demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "dedup ratio:" in out                      # exact dedup of the generated family
    assert "│ tuned-2" in out                          # the shell answered
    assert "Approximate dedup" in out and "physical" in out
    assert "tensor_stats('trained')" in out and "│ 5      │" in out
    assert (tmp_path / "demo.sqlite").exists()
