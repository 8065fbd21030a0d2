"""The docs' generated tables and plots (tools/figures.py, `make figures`): the tables in the
docs are what the committed asv results give, the cache table is what
`python -m sqlite_tensor policies` prints, and every image the docs show exists."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sqlite_tensor import cache
from tools import figures

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def results():
    return figures.Results.recorded()


def test_docs_tables_equal_what_the_committed_results_give(results):
    assert figures.check_docs(figures.generate(results)) == []
    # the same through the command the test stands for
    run = subprocess.run(
        [sys.executable, "-m", "tools.figures", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr


def test_every_referenced_image_exists_and_every_plot_is_shown():
    shown = figures.referenced_images()
    missing = [(doc, str(p)) for doc, p in shown if not p.exists()]
    assert missing == []
    shown_names = {p.name for _, p in shown if p.parent == figures.FIGURES}
    assert set(figures.PLOTS) <= shown_names


def test_check_reports_a_drifted_number_and_a_missing_region(results, tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    shutil.copytree(figures.DOCS, docs)
    monkeypatch.setattr(figures, "DOCS", docs)
    regions = figures.generate(results)
    assert figures.check_docs(regions) == []
    cache_md = docs / "cache.md"
    text = cache_md.read_text()
    table = figures.doc_regions(text)["cache-table"]
    drifted = table.replace("| 25 % |", "| 25 % | 9.99 |", 1)
    assert drifted != table
    cache_md.write_text(text.replace(table, drifted))
    assert any("cache-table" in p for p in figures.check_docs(regions))
    (docs / "dedup.md").write_text("# no region\n")
    assert any("no region 'dedup-bytes'" in p for p in figures.check_docs(regions))


def _printed_policy_table():
    run = subprocess.run(
        [sys.executable, "-m", "sqlite_tensor", "policies"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = run.stdout.splitlines()
    names = lines[1].split()[1:-1]
    rows = {}
    for line in lines[2:]:
        cells = line.split()
        rows[float(cells[0].rstrip("%")) / 100] = dict(zip(names + ["static oracle"], cells[1:]))
    return names, rows


def test_cache_table_is_what_the_policies_command_prints(results):
    """The committed results (asv PolicyMisses, seed 0) against a fresh simulation: the
    docs' table cannot differ from the command (a changed policy needs `make bench` and
    `make figures`)."""
    names, printed = _printed_policy_table()
    assert names == cache.policies() == figures._policies(results)
    misses = results.table(figures.POLICY_MISSES)
    oracle = results.table(figures.ORACLE)
    for fraction, row in printed.items():
        for name in names:
            assert f"{misses[name, fraction, 0]:.2f}" == row[name], (name, fraction)
        assert f"{oracle[fraction, 0]:.2f}" == row["static oracle"], fraction
    # and the number of policies the docs state is the registry's
    table = figures.doc_regions((figures.DOCS / "cache.md").read_text())["cache-table"]
    assert f"the {len(cache.policies())} policies of `cache.policies()`" in table


def test_results_reader_takes_the_newest_and_marks_failures(tmp_path):
    def write(name, started, values):
        data = {
            "commit_hash": name * 8,
            "date": started,
            "env_name": "e",
            "params": {"machine": "m", "cpu": "c", "num_cpu": "2"},
            "result_columns": ["result", "params", "version", "started_at"],
            "results": {"b.C.track_x": [values, [["'a'", "'b'"], ["1"]], "v", started]},
        }
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        return path

    old, new = write("a", 1, [1.0, 2.0]), write("b", 2, [3.0, None])
    table = figures.Results([new, old]).table("b.C.track_x")
    assert table["a", 1] == 3.0 and table["b", 1] != table["b", 1]  # nan
    with pytest.raises(figures.MissingResults, match="b.C.track_y"):
        figures.Results([old]).table("b.C.track_y")


def test_plots_are_deterministic_and_match_the_committed_images(results):
    matplotlib = pytest.importorskip("matplotlib")
    first, second = figures.render(results), figures.render(results)
    assert first == second
    for data in first.values():
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in data
    recorded = json.loads(figures.SOURCES.read_text())
    if recorded.get("matplotlib") != matplotlib.__version__:
        pytest.skip(
            f"images drawn with matplotlib {recorded.get('matplotlib')}, "
            f"this is {matplotlib.__version__}"
        )
    for name, data in first.items():
        assert (figures.FIGURES / name).read_bytes() == data, f"{name}: run `make figures`"


def test_a_drifted_number_in_prose_is_reported(results, tmp_path, monkeypatch):
    """The numbers quoted in sentences are generated regions too: editing one by hand is
    caught like a table cell."""
    docs = tmp_path / "docs"
    shutil.copytree(figures.DOCS, docs)
    monkeypatch.setattr(figures, "DOCS", docs)
    regions = figures.generate(results)
    oracle = results.table(figures.ORACLE)[max(figures._fractions(results)), 0]
    for doc, region, number in [
        ("cache.md", "cache-reading", f"{oracle:.2f}"),
        ("dedup.md", "dedup-reading", "fewer"),
    ]:
        path = docs / doc
        text = path.read_text()
        prose = figures.doc_regions(text)[region]
        assert number in prose
        path.write_text(text.replace(prose, prose.replace(number, "9.99 " + number, 1)))
        assert any(region in p for p in figures.check_docs(regions)), region


def test_prose_quotes_what_the_tables_show(results):
    """The sentences and the tables beside them come from the same results."""
    cache_md = figures.doc_regions((figures.DOCS / "cache.md").read_text())
    top = max(figures._fractions(results))
    row = next(
        r for r in cache_md["cache-table"].splitlines() if r.startswith(f"| {top * 100:g} %")
    )
    default = row.split("|")[2].strip().strip("*")
    assert f"it is {default} times Belady's" in cache_md["cache-reading"]
    dedup_md = figures.doc_regions((figures.DOCS / "dedup.md").read_text())
    for label, logical, _exact, approx in figures.dedup_rows(results):
        if approx is not None:
            assert f"{logical / approx:.2f}x" in dedup_md["dedup-reading"], label
            assert f"**{logical / approx:.2f}**" in dedup_md["dedup-methods"], label


def test_figures_names_what_the_benchmarks_run():
    """tools/figures.py does not import the package; what it copies is checked here."""
    from sqlite_tensor.testing import dedup_compare, dedup_families, trained_families

    assert list(figures.DEDUP_METHODS) == list(dedup_compare.METHODS)
    assert figures.APPROX_METHOD in dedup_compare.METHODS
    assert figures.FAMILY_METHODS == list(dedup_families.METHODS)
    assert figures.FAMILY_OURS in dedup_families.SWEEP_METHODS
    assert figures.FAMILY_FIT == trained_families.FIT_FAMILIES
    assert figures.FAMILY_MAX_DROP == dedup_compare.MAX_DROP
    assert dedup_compare.STORE_OPTIONS["block_rows"] == figures.DEDUP_BLOCK_ROWS
    from sqlite_tensor import packing

    assert figures.PACKING_DEFAULT == packing.DEFAULT_STRATEGY
