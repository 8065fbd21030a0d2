"""Deduplication: accounting of shared blocks, refcounts and the report figures, checked
against a reference computed here from the arrays alone; forced hash collisions; and
drop_model freeing exactly what nothing else uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import dump, random_array, same

import sqlite_tensor
from sqlite_tensor.schema import Tables
from sqlite_tensor.testing.families import text_classifier_family

# -- a reference model of the accounting ---------------------------------------------------------


def tiles(arr: np.ndarray, br: int, bc: int) -> list[bytes]:
    """The bytes of every tile of a tensor's 2-D view (edge tiles trimmed), row-major."""
    if arr.ndim == 0:
        m = arr.reshape(1, 1)
    elif arr.ndim == 1:
        m = arr.reshape(-1, 1)
    else:
        m = arr.reshape(-1, arr.shape[-1])
    return [
        m[i : i + br, j : j + bc].tobytes()
        for i in range(0, m.shape[0], br)
        for j in range(0, m.shape[1], bc)
    ]


class Reference:
    """What the store should report, from the models' arrays alone."""

    def __init__(self, models: dict[str, dict[str, np.ndarray]], br: int, bc: int, pb: int):
        self.models = models
        self.uses = {
            m: [t for a in ts.values() for t in tiles(a, br, bc)] for m, ts in models.items()
        }
        self.sets = {m: set(u) for m, u in self.uses.items()}
        self.distinct = set().union(*self.sets.values()) if models else set()
        # pages: each model's new blocks fill fresh pages, pb to a page, in ingest order
        seen: set = set()
        self.pages = 0
        self.new_blocks = {}
        for m in models:
            new = {t for t in self.uses[m] if t not in seen}
            seen |= new
            self.new_blocks[m] = len(new)
            self.pages += math.ceil(len(new) / pb)

    def stats(self) -> dict:
        logical = sum(a.nbytes for ts in self.models.values() for a in ts.values())
        physical = sum(len(t) for t in self.distinct)
        return {
            "models": len(self.models),
            "tensors": sum(len(ts) for ts in self.models.values()),
            "logical_bytes": logical,
            "physical_bytes": physical,
            "distinct_blocks": len(self.distinct),
            "dedup_ratio": logical / physical if physical else None,
        }

    def model_stats(self) -> list[dict]:
        out = []
        for m, ts in self.models.items():
            others = set().union(*(s for n, s in self.sets.items() if n != m))
            out.append(
                {
                    "model": m,
                    "tensors": len(ts),
                    "blocks": len(self.sets[m]),
                    "logical_bytes": sum(a.nbytes for a in ts.values()),
                    "physical_bytes": sum(len(t) for t in self.sets[m]),
                    "private_bytes": sum(len(t) for t in self.sets[m] - others),
                }
            )
        return out


def check_against_reference(store, ref: Reference, *, pages=True):
    stats = store.stats()
    want = ref.stats()
    ratio = want.pop("dedup_ratio")
    assert {k: stats[k] for k in want} == want
    if ratio is None:
        assert stats["dedup_ratio"] is None
    else:
        assert stats["dedup_ratio"] == pytest.approx(ratio)
    if pages:
        assert stats["pages"] == ref.pages
    got = [
        {
            k: r[k]
            for k in (
                "model",
                "tensors",
                "blocks",
                "logical_bytes",
                "physical_bytes",
                "private_bytes",
            )
        }
        for r in store.model_stats()
    ]
    assert got == ref.model_stats()
    page_rows = store.page_stats()
    assert len(page_rows) == stats["pages"]
    assert sum(p["blocks"] for p in page_rows) == stats["distinct_blocks"]
    assert sum(p["bytes"] for p in page_rows) == stats["page_bytes"]
    assert all(1 <= p["blocks"] <= store.page_blocks for p in page_rows)
    assert all(p["models"] >= 1 and p["tensors"] >= 1 for p in page_rows)
    # refcounts: how many (tensor, tile) entries use each distinct byte string
    t = Tables(store.name)
    counts = {}
    for u in ref.uses.values():
        for tile in u:
            counts[tile] = counts.get(tile, 0) + 1
    refcounts = sorted(r for (r,) in store.conn.execute(f"SELECT refcount FROM {t.blocks}"))
    assert refcounts == sorted(counts.values())
    assert store.verify() == []
    for m, ts in ref.models.items():
        for name, arr in ts.items():
            assert same(store.get_tensor(m, name), arr), (m, name)


# -- identical models ----------------------------------------------------------------------------


def test_two_identical_models_take_the_space_of_one(store, rng):
    model = {
        "w": random_array(rng, (10, 12), np.float32),
        "b": random_array(rng, (12,), np.float32),
        "e": random_array(rng, (4, 3, 7), np.int8),
    }
    first = store.add_model("one", model)
    after_one = store.stats()
    pages_one = store.page_stats()
    second = store.add_model("two", {k: v.copy() for k, v in model.items()})
    after_two = store.stats()
    for key in ("physical_bytes", "distinct_blocks", "pages", "page_bytes"):
        assert after_two[key] == after_one[key], key
    assert after_two["logical_bytes"] == 2 * after_one["logical_bytes"]
    assert after_two["dedup_ratio"] == 2.0
    assert after_two["models"] == 2 and after_two["tensors"] == 6
    # the pages themselves are untouched: same ids, same bytes
    assert [(p["page_id"], p["bytes"], p["blocks"]) for p in store.page_stats()] == [
        (p["page_id"], p["bytes"], p["blocks"]) for p in pages_one
    ]
    assert all(p["models"] == 2 for p in store.page_stats())
    assert second.new_blocks == 0 and second.new_bytes == 0
    assert second.blocks == first.blocks == second.shared_blocks
    assert first.new_blocks == first.blocks and first.new_bytes == first.logical_bytes
    for row in store.model_stats():
        assert row["private_bytes"] == 0
        assert row["physical_bytes"] == row["logical_bytes"] == first.logical_bytes
    refcounts = {r for (r,) in store.conn.execute("SELECT refcount FROM tensors_blocks")}
    assert refcounts == {2}
    check_against_reference(store, Reference({"one": model, "two": model}, **_opts(store)))


def _opts(store):
    return {"br": store.block_rows, "bc": store.block_cols, "pb": store.page_blocks}


def test_repeated_tiles_inside_one_tensor_are_stored_once(store):
    zeros = np.zeros((9, 10), np.float32)  # 3 x 2 grid of identical full 3 x 5 tiles
    report = store.add_model("z", {"zeros": zeros})
    assert report.blocks == 6 and report.new_blocks == 1
    assert report.new_bytes == 3 * 5 * 4
    assert store.stats()["distinct_blocks"] == 1
    assert store.conn.execute("SELECT refcount FROM tensors_blocks").get == 6
    assert same(store.get_tensor("z", "zeros"), zeros)


def test_edge_tiles_of_equal_bytes_are_shared_not_confused(store):
    # 4 x 7 zeros: tiles 3x5, 3x2, 1x5, 1x2 (all zero bytes, four different lengths),
    # and a 1-D vector of 3 zeros whose single 3 x 1 tile has 12 bytes
    tensors = {
        "a": np.zeros((4, 7), np.float32),
        "v": np.zeros(3, np.float32),
        "i": np.zeros((2, 5), np.int32),
        "h": np.zeros((6, 5), np.float16),
    }
    store.add_model("m", tensors)
    check_against_reference(store, Reference({"m": tensors}, **_opts(store)))
    assert store.stats()["distinct_blocks"] == len(
        {len(t) for a in tensors.values() for t in tiles(a, 3, 5)}
    )


def test_tiles_shared_across_page_boundaries_within_one_model(db, rng):
    # page_blocks=1: every new block is flushed at once, so later repeats are found in the
    # table (not among the blocks still waiting for a page)
    store = sqlite_tensor.Store(db, "p1", block_rows=2, block_cols=2, page_blocks=1)
    a = random_array(rng, (2, 2), np.uint8)
    b = random_array(rng, (2, 2), np.uint8)
    grid = np.block([[a, b, a], [b, a, b]])
    store.add_model("m", {"grid": grid, "again": grid.copy()})
    ref = Reference({"m": {"grid": grid, "again": grid}}, 2, 2, 1)
    check_against_reference(store, ref)
    assert store.stats()["distinct_blocks"] == 2 and store.stats()["pages"] == 2


def test_same_bytes_in_different_dtypes_share_blocks(store):
    f = np.arange(15, dtype=np.float32).reshape(3, 5)
    i = f.view(np.int32)
    u = f.view(np.uint8)  # 3 x 20 bytes: different tiles
    store.add_model("f", {"x": f})
    report = store.add_model("i", {"x": i})
    assert report.new_blocks == 0  # raw bytes are what is stored
    store.add_model("u", {"x": u})
    assert same(store.get_tensor("i", "x"), i)
    assert same(store.get_tensor("f", "x"), f)
    assert same(store.get_tensor("u", "x"), u)
    check_against_reference(
        store, Reference({"f": {"x": f}, "i": {"x": i}, "u": {"x": u}}, **_opts(store))
    )


def test_family_accounting(db):
    family = text_classifier_family(5, vocab=96, dim=20, hidden=6, tuned_fraction=0.25, seed=3)
    store = sqlite_tensor.Store(db, "family", block_rows=8, block_cols=8, page_blocks=3)
    reports = {name: store.add_model(name, tensors) for name, tensors in family.items()}
    ref = Reference(family, 8, 8, 3)
    check_against_reference(store, ref)
    for name, report in reports.items():
        assert report.new_blocks == ref.new_blocks[name], name
    # the frozen models share the whole embedding with base; tuned ones most of it
    emb = family["base"]["embedding.weight"].nbytes
    rows = {r["model"]: r for r in store.model_stats()}
    for name in family:
        if name.startswith("frozen"):
            assert rows[name]["private_bytes"] <= rows[name]["logical_bytes"] - emb
        if name.startswith("tuned"):
            assert rows[name]["private_bytes"] >= 0.25 * emb
    assert store.stats()["dedup_ratio"] > 2.5
    # model_stats' pages: the distinct pages holding the model's blocks
    t = Tables(store.name)
    for name in family:
        want = store.conn.execute(
            f"SELECT count(DISTINCT b.page_id) FROM {t.map} m JOIN {t.tensors} tt ON tt.id ="
            f" m.tensor_id JOIN {t.models} mo ON mo.id = tt.model_id JOIN {t.blocks} b ON"
            " b.id = m.block_id WHERE mo.name = ?",
            (name,),
        ).get
        assert rows[name]["pages"] == want
    # pages of base's embedding are read by every model
    assert max(p["models"] for p in store.page_stats()) == len(family)


# -- forced hash collisions ----------------------------------------------------------------------


class CollidingStore(sqlite_tensor.Store):
    """Every block hashes the same: only the byte comparison keeps blocks apart."""

    _hash_block = staticmethod(lambda tile: b"\x00" * 16)


def test_constant_hash_never_merges_different_blocks(db, rng):
    store = CollidingStore(db, "coll", block_rows=2, block_cols=3, page_blocks=2)
    a = {
        "x": random_array(rng, (5, 7), np.int8),
        "z": np.zeros((3, 4), np.int8),
        "zz": np.zeros((4, 3), np.int16),
        "v": np.zeros(5, np.uint8),
        "s": np.array(0, np.int64),
        "f": random_array(rng, (3, 3), np.float16),
    }
    b = {"x": a["x"].copy(), "y": random_array(rng, (4, 4), np.int8), "z": a["z"]}
    store.add_model("a", a)
    store.add_model("b", b)
    assert len(set(store.conn.execute("SELECT hash FROM coll_blocks"))) == 1  # all collide
    ref = Reference({"a": a, "b": b}, 2, 3, 2)
    check_against_reference(store, ref)
    store.drop_model("a")
    check_against_reference(store, Reference({"b": b}, 2, 3, 2), pages=False)


def test_constant_hash_on_an_instance(memstore, rng):
    memstore._hash_block = lambda tile: b"\xff" * 16
    models = {
        f"m{i}": {
            "w": random_array(rng, (6, 6), np.uint8) % 3,
            "c": np.full((2, 2), i % 2, np.uint8),
        }
        for i in range(4)
    }
    for name, tensors in models.items():
        memstore.add_model(name, tensors)
    check_against_reference(memstore, Reference(models, 3, 5, 2))


# -- drop_model ----------------------------------------------------------------------------------


def test_drop_model_frees_only_what_nothing_else_uses(store, rng):
    shared = random_array(rng, (6, 10), np.float32)
    a = {"shared": shared, "own": random_array(rng, (7, 9), np.float32)}
    b = {"shared": shared, "mine": random_array(rng, (3, 5), np.int16)}
    store.add_model("a", a)
    store.add_model("b", b)
    before = store.stats()
    own_tiles = set(tiles(a["own"], 3, 5)) - set(tiles(shared, 3, 5)) - set(tiles(b["mine"], 3, 5))
    freed = store.drop_model("a")
    assert freed["blocks"] == len(own_tiles)
    assert freed["bytes"] == sum(len(t) for t in own_tiles)
    after = store.stats()
    assert after["distinct_blocks"] == before["distinct_blocks"] - freed["blocks"]
    assert after["physical_bytes"] == before["physical_bytes"] - freed["bytes"]
    assert after["pages"] == before["pages"] - freed["pages"]
    assert store.models() == ["b"] and "a" not in store
    check_against_reference(store, Reference({"b": b}, 3, 5, 2), pages=False)
    with pytest.raises(sqlite_tensor.NotFoundError, match="no model 'a'"):
        store.get_tensor("a", "own")


def test_drop_compacts_part_used_pages(db, rng):
    store = sqlite_tensor.Store(db, "c", block_rows=2, block_cols=2, page_blocks=4)
    tiles_ = [random_array(rng, (2, 2), np.float64) for _ in range(8)]
    # a's eight tiles fill two pages; b reuses tiles 1 and 6, one from each page
    a = {"w": np.concatenate(tiles_, axis=1)}
    b = {"w": np.concatenate([tiles_[1], tiles_[6], random_array(rng, (2, 2), np.float64)], axis=1)}
    store.add_model("a", a)
    store.add_model("b", b)
    pages_before = {p["page_id"]: p for p in store.page_stats()}
    assert len(pages_before) == 3
    freed = store.drop_model("a")
    assert freed == {"blocks": 6, "bytes": 6 * 32, "pages": 0}
    pages_after = {p["page_id"]: p for p in store.page_stats()}
    assert set(pages_after) == set(pages_before)  # both part-used pages were kept...
    for pid in (1, 2):  # ...rewritten with just the one live block each
        assert pages_after[pid]["blocks"] == 1
        assert pages_after[pid]["bytes"] < pages_before[pid]["bytes"]
        data = store.conn.execute("SELECT data FROM c_pages WHERE id = ?", (pid,)).get
        assert len(data) == pages_after[pid]["bytes"]
    assert (
        store.conn.execute("SELECT group_concat(slot) FROM c_blocks WHERE page_id IN (1, 2)").get
        == "0,0"
    )
    check_against_reference(store, Reference({"b": b}, 2, 2, 4), pages=False)
    # blocks that moved slots are still found by a later ingest
    report = store.add_model("a-again", a)
    assert report.new_blocks == 6
    check_against_reference(store, Reference({"b": b, "a-again": a}, 2, 2, 4), pages=False)


def test_drop_every_model_empties_the_store(store, rng):
    family = text_classifier_family(3, vocab=20, dim=7, hidden=4)
    for name, tensors in family.items():
        store.add_model(name, tensors)
    for name in reversed(list(family)):
        store.drop_model(name)
        assert store.verify() == []
    stats = store.stats()
    assert {
        k: stats[k]
        for k in (
            "models",
            "tensors",
            "logical_bytes",
            "physical_bytes",
            "distinct_blocks",
            "pages",
            "page_bytes",
        )
    } == dict.fromkeys(
        (
            "models",
            "tensors",
            "logical_bytes",
            "physical_bytes",
            "distinct_blocks",
            "pages",
            "page_bytes",
        ),
        0,
    )
    assert stats["dedup_ratio"] is None
    d = dump(store.conn)
    assert all(d[part] == [] for part in ("models", "tensors", "blocks", "pages", "map"))
    assert store.model_stats() == [] and store.page_stats() == []
    # and the empty store takes models again
    store.add_model("base", family["base"])
    check_against_reference(store, Reference({"base": family["base"]}, 3, 5, 2))


def test_drop_then_re_add_the_same_name(store, rng):
    old = {"w": random_array(rng, (4, 4), np.float32)}
    new = {"w": random_array(rng, (5, 2), np.int8)}
    store.add_model("m", old)
    store.drop_model("m")
    store.add_model("m", new)
    assert same(store.get_tensor("m", "w"), new["w"])
    check_against_reference(store, Reference({"m": new}, 3, 5, 2), pages=False)


def test_drop_unknown_model_changes_nothing(store, rng):
    store.add_model("m", {"w": random_array(rng, (4, 4), np.float32)})
    before = dump(store.conn)
    with pytest.raises(sqlite_tensor.NotFoundError, match="no model 'x' in store 'tensors'.*'m'"):
        store.drop_model("x")
    assert dump(store.conn) == before
