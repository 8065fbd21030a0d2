"""The Store API itself: opening and closing, listing, reports' shapes, IngestReport."""

from __future__ import annotations

import apsw
import numpy as np
import pytest
from conftest import SMALL, random_array, same

import sqlite_tensor
from sqlite_tensor import IngestReport, TensorInfo

STATS_KEYS = [
    "models",
    "tensors",
    "logical_bytes",
    "physical_bytes",
    "distinct_blocks",
    "pages",
    "page_bytes",
    "dedup_ratio",
    "block_rows",
    "block_cols",
    "page_blocks",
]
MODEL_KEYS = [
    "model",
    "tensors",
    "blocks",
    "logical_bytes",
    "physical_bytes",
    "private_bytes",
    "pages",
]
PAGE_KEYS = ["page_id", "bytes", "blocks", "models", "tensors"]


def test_defaults_and_repr(memdb):
    store = sqlite_tensor.Store(memdb)
    assert store.name == "tensors"
    assert (store.block_rows, store.block_cols, store.page_blocks) == (256, 256, 4)
    assert repr(store) == "Store('tensors', block_rows=256, block_cols=256, page_blocks=4)"


def test_store_by_path_owns_its_connection(db_path):
    store = sqlite_tensor.Store(db_path, **SMALL)
    conn = store.conn
    store.add_model("m", {"w": np.ones(3, np.float32)})
    store.close()
    assert store.conn is None
    with pytest.raises(apsw.ConnectionClosedError):
        conn.execute("SELECT 1")
    store.close()  # twice is fine
    with sqlite_tensor.Store(str(db_path)) as again:
        assert again.models() == ["m"]
    assert again.conn is None


def test_store_on_a_connection_leaves_it_open(db):
    with sqlite_tensor.Store(db, **SMALL) as store:
        store.add_model("m", {"w": np.ones(3, np.float32)})
    assert db.execute("SELECT count(*) FROM tensors").get == 1
    assert store.conn is db


def test_listing(store, rng):
    a = {
        "z.last": random_array(rng, (2, 3), np.float16),
        "a.first": np.array(1, np.int8),
        "m.mid": random_array(rng, (4, 1, 2), np.uint32),
    }
    store.add_model("second-added", {"x": np.ones(1)})
    store.add_model("a-model", a)
    assert store.models() == ["second-added", "a-model"]  # the order they were added
    assert store.tensors("a-model") == [
        TensorInfo("z.last", (2, 3), "float16", 12),
        TensorInfo("a.first", (), "int8", 1),
        TensorInfo("m.mid", (4, 1, 2), "uint32", 32),
    ]
    assert "a-model" in store and "other" not in store and None not in store
    model = store.get_model("a-model")
    assert list(model) == list(a)
    for name, arr in a.items():
        assert same(model[name], arr)


def test_ingest_report(store, rng):
    w = random_array(rng, (6, 10), np.float32)  # 2 x 2 grid of 3 x 5 tiles
    report = store.add_model("m", {"w": w, "w2": w.copy(), "b": np.zeros(4, np.int8)})
    assert isinstance(report, IngestReport)
    assert report.model == "m" and report.tensors == 3
    assert report.blocks == 4 + 4 + 2  # b: 4 x 1 -> tiles of 3 and 1 rows
    assert report.new_blocks == 4 + 2
    assert report.shared_blocks == 4
    assert report.logical_bytes == 2 * w.nbytes + 4
    assert report.new_bytes == w.nbytes + 4


def test_report_shapes(store, rng):
    assert list(store.stats()) == STATS_KEYS
    store.add_model("m", {"w": random_array(rng, (7, 7), np.float64)})
    stats = store.stats()
    assert list(stats) == STATS_KEYS
    assert (stats["block_rows"], stats["block_cols"], stats["page_blocks"]) == (3, 5, 2)
    assert stats["page_bytes"] > stats["physical_bytes"]  # headers and alignment
    assert [list(r) for r in store.model_stats()] == [MODEL_KEYS]
    rows = store.page_stats()
    assert rows and all(list(r) == PAGE_KEYS for r in rows)
    assert [r["page_id"] for r in rows] == sorted(r["page_id"] for r in rows)


def test_page_layout(store, rng):
    """Pages hold page_blocks blocks at 64-byte aligned offsets, as pages.py documents
    (version 2: the checksum at 16, the slot table at 24). Read byte by byte here on purpose:
    this is the format's own test, independent of pages.py's reader."""
    w = random_array(rng, (3, 10), np.int16)
    store.add_model("m", {"w": w})
    page_id, data = store.conn.execute("SELECT id, data FROM tensors_pages").fetchone()
    assert data[:4] == b"STPG"
    assert int.from_bytes(data[4:8], "little") == 2
    assert int.from_bytes(data[8:12], "little") == 2
    assert int.from_bytes(data[12:16], "little") == 64
    stored = int.from_bytes(data[16:24], "little")
    assert stored == sqlite_tensor.pages.checksum(data, page_id) != 0
    # the checksum counts its own field as zero and is seeded with the page id
    assert stored == sqlite_tensor.pages.checksum(data[:16] + bytes(8) + data[24:], page_id)
    assert stored != sqlite_tensor.pages.checksum(data, page_id + 1)
    off0, len0 = (int.from_bytes(data[24 + i : 32 + i], "little") for i in (0, 8))
    off1, len1 = (int.from_bytes(data[40 + i : 48 + i], "little") for i in (0, 8))
    assert (off0, len0, off1, len1) == (64, 30, 128, 30)
    assert data[64:94] == w[:, :5].tobytes() and data[128:158] == w[:, 5:].tobytes()
    assert len(data) == 158


def test_many_models_and_a_wide_store(memdb, rng):
    store = sqlite_tensor.Store(memdb, "wide", block_rows=64, block_cols=64, page_blocks=8)
    models = {
        f"m{i:02d}": {
            "w": random_array(rng, (100, 70), np.float16),
            "shared": np.arange(500, dtype=np.float32),
        }
        for i in range(12)
    }
    for name, tensors in models.items():
        store.add_model(name, tensors)
    assert store.models() == list(models)
    with pytest.raises(sqlite_tensor.NotFoundError) as info:
        store.get_tensor("zzz", "w")
    assert str(info.value).endswith(" ...")  # lists the first ten models, then "..."
    for name in list(models)[::3]:
        store.drop_model(name)
    for name in store.models():
        assert same(store.get_tensor(name, "w"), models[name]["w"])
    assert store.verify() == []
