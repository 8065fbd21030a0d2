"""Store.pack: the store's pages rewritten by a packing strategy, in one transaction."""

from __future__ import annotations

import json

import apsw
import numpy as np
import pytest
from conftest import snapshot

import sqlite_tensor
from sqlite_tensor import cache, packing
from sqlite_tensor.testing.families import TEXT_CLASSIFIER_LAYERS, text_classifier_family


def family_store(path, n_models=5, **options):
    store = sqlite_tensor.Store(path, block_rows=64, block_cols=32, page_blocks=4, **options)
    family = text_classifier_family(n_models, vocab=1024, dim=64, hidden=16)
    for name, tensors in family.items():
        store.add_model(name, tensors, layers=TEXT_CLASSIFIER_LAYERS)
    return store, family


def scramble(store, seed=0):
    """Lay the blocks out at random (what pack should then improve on)."""
    blocks = np.array(sorted(b for page in store.page_layout() for b in page))
    np.random.default_rng(seed).shuffle(blocks)
    layout = [
        blocks[i : i + store.page_blocks].tolist() for i in range(0, len(blocks), store.page_blocks)
    ]
    with store.writer() as w:
        w.write_layout(layout)
    assert store.verify() == []


def all_tensors(store):
    return {m: store.get_model(m) for m in store.models()}


def same_models(a, b):
    assert a.keys() == b.keys()
    for m in a:
        assert a[m].keys() == b[m].keys()
        for t in a[m]:
            assert a[m][t].tobytes() == b[m][t].tobytes(), (m, t)


# exact solves instances of at most packing.EXACT_MAX_BLOCKS blocks; a store has more
@pytest.mark.parametrize("strategy", [s for s in packing.STRATEGIES if s != "exact"])
@pytest.mark.parametrize("by", ["model", "tensor"])
def test_pack_keeps_every_tensor_and_reaches_its_figures(tmp_path, strategy, by):
    store, _ = family_store(tmp_path / "s.sqlite")
    before = all_tensors(store)
    result = store.pack(strategy, by=by)
    assert result["strategy"] == strategy and result["by"] == by
    same_models(all_tensors(store), before)
    assert store.verify() == []
    # the figures after are those of the layout now stored
    groups = store.block_groups(by)
    assert result["after"] == packing.evaluate(store.page_layout(), groups, store.page_blocks)
    assert result["after"]["total_pages"] == store.stats()["pages"]
    assert result["after"]["total_pages"] >= result["after"]["lower_bound"]


def test_pack_is_idempotent_and_models_can_be_added_after(tmp_path):
    store, family = family_store(tmp_path / "s.sqlite")
    scramble(store)
    first = store.pack("classes")
    assert first["pages_written"] == first["after"]["total_pages"] > 0
    layout = store.page_layout()
    again = store.pack("classes")
    assert again["pages_written"] == 0 and store.page_layout() == layout
    assert again["before"] == again["after"] == first["after"]
    if {frozenset(p) for p in packing.pack(store.block_groups(), store.page_blocks)} != {
        frozenset(p) for p in layout
    }:
        assert store.pack()["pages_written"] > 0
    extra = {k: v.copy() for k, v in family["tuned-2"].items()}
    extra["fc1.weight"] += 1.0
    store.add_model("late", extra, layers=TEXT_CLASSIFIER_LAYERS)
    assert np.array_equal(store.get_tensor("late", "fc1.weight"), extra["fc1.weight"])
    assert store.pack()["pages_written"] > 0 and store.verify() == []
    assert np.array_equal(store.get_tensor("late", "fc1.weight"), extra["fc1.weight"])


def test_pack_reduces_pages_read_on_a_family(tmp_path):
    store, _ = family_store(tmp_path / "s.sqlite", n_models=6)
    scramble(store)
    result = store.pack()
    assert result["pages_written"] > 0
    assert result["after"]["total_reads"] <= result["before"]["total_reads"]
    assert result["after"]["mean_amplification"] <= result["before"]["mean_amplification"]


def test_a_failure_midway_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    store, _ = family_store(tmp_path / "s.sqlite")
    scramble(store)
    before = snapshot(store.conn)
    calls = {"n": 0}
    real = sqlite_tensor.pages.PageBuilder.finish

    def fail_on_third(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed halfway")
        return real(self)

    monkeypatch.setattr(sqlite_tensor.pages.PageBuilder, "finish", fail_on_third)
    with pytest.raises(RuntimeError, match="killed halfway"):
        store.pack()
    assert snapshot(store.conn) == before
    monkeypatch.undo()
    assert store.pack()["pages_written"] > 0 and store.verify() == []


def test_cached_pages_are_not_served_after_a_pack(tmp_path):
    store, family = family_store(tmp_path / "s.sqlite")
    scramble(store)
    bags = [np.array([1, 5, 9]), np.array([700])]
    want = {m: store.predict(m, bags) for m in store.models()}  # pages now cached
    other = sqlite_tensor.Store(tmp_path / "s.sqlite")  # a second connection
    assert cache.stats()["pages"] > 0
    store.pack()
    for m in store.models():
        np.testing.assert_array_equal(store.predict(m, bags), want[m])
        np.testing.assert_array_equal(other.predict(m, bags), want[m])
    other.close()


def test_pack_from_sql(tmp_path):
    store, _ = family_store(tmp_path / "s.sqlite")
    scramble(store)
    before = all_tensors(store)
    out = json.loads(store.conn.execute("SELECT tensor_pack('tensors')").get)
    assert out["strategy"] == packing.DEFAULT_STRATEGY and out["pages_written"] > 0
    same_models(all_tensors(store), before)
    scramble(store, seed=1)
    out = json.loads(store.conn.execute("SELECT tensor_pack('tensors', 'classes', 'tensor')").get)
    assert (out["strategy"], out["by"]) == ("classes", "tensor")
    assert store.verify() == []
    for sql, message in [
        ("SELECT tensor_pack('tensors', 'no-such')", "unknown packing strategy"),
        ("SELECT tensor_pack('tensors', 'classes', 'layer')", "by must be 'model' or 'tensor'"),
        ("SELECT tensor_pack('nope')", "nope"),
        ("SELECT tensor_pack(NULL)", "store name is missing"),
        ("SELECT tensor_pack(3)", "store must be text"),
    ]:
        with pytest.raises(apsw.Error, match=message):
            store.conn.execute(sql).get
    assert store.verify() == []


def test_pack_bad_arguments(tmp_path):
    store, _ = family_store(tmp_path / "s.sqlite", n_models=2)
    with pytest.raises(ValueError, match="unknown packing strategy"):
        store.pack("no-such")
    with pytest.raises(ValueError, match="by must be 'model' or 'tensor'"):
        store.pack(by="page")
    assert store.verify() == []


def test_pack_an_empty_store(tmp_path):
    store = sqlite_tensor.Store(tmp_path / "e.sqlite")
    assert store.pack() == {
        "strategy": packing.DEFAULT_STRATEGY,
        "by": "model",
        "pages_written": 0,
        "before": None,
        "after": None,
    }
