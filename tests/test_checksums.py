"""Page checksums (format version 2) and the one error contract.

The checksum is the engine's own function (pages.checksum calls it): it covers every byte of
a page BLOB, its own field counted as zero, seeded with the page id. A mismatch is
CorruptStoreError in Python and SQLITE_CORRUPT naming the page in SQL, from every read path;
BUSY stays BUSY."""

from __future__ import annotations

import apsw
import numpy as np
import pytest
from conftest import SMALL, random_array, same

import sqlite_tensor
from sqlite_tensor import pages

LAYERS = [{"op": "dense", "weight": "w", "bias": "b", "activation": "identity"}]


def test_checksum_covers_every_byte_and_the_id():
    rng = np.random.default_rng(1)
    for n in list(range(0, 80)) + [255, 256, 257, 4099]:
        data = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        h = pages.checksum(data, 7)
        assert h == pages.checksum(bytes(data), 7) == pages.checksum(memoryview(data), 7)
        assert h != pages.checksum(data, 8)
        for pos in range(n):
            if 16 <= pos < 24 and n >= 24:
                continue
            for bit in (0, 7):
                data[pos] ^= 1 << bit
                assert pages.checksum(data, 7) != h, (n, pos, bit)
                data[pos] ^= 1 << bit
        if n >= 24:  # the checksum field counts as zero: sealing is idempotent
            data[16:24] = b"\xff" * 8
            assert pages.checksum(data, 7) == h
    assert pages.checksum(b"", 1) != pages.checksum(b"", 2)
    # a length change, even by zero bytes, changes it
    assert pages.checksum(bytes(64), 1) != pages.checksum(bytes(65), 1)


def test_sealed_pages_read_and_a_flip_anywhere_is_caught(memdb, rng):
    store = sqlite_tensor.Store(memdb, **SMALL)
    w = random_array(rng, (10, 20), np.float32)
    store.add_model("m", {"w": w, "b": random_array(rng, (10,), np.float32)}, layers=LAYERS)
    page_id, data = memdb.execute(
        "SELECT id, data FROM tensors_pages ORDER BY id LIMIT 1"
    ).fetchone()
    assert pages.read_slots(data, page_id)
    head = pages.header(data)
    assert head.version == 2 and head.checksum == pages.checksum(data, page_id)
    x = np.ones(20, np.float32)
    for pos in (0, 5, 9, 13, 17, 25, 40, head.data_start, head.data_start + 7, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        memdb.execute("UPDATE tensors_pages SET data = ? WHERE id = ?", (bytes(bad), page_id))
        with pytest.raises(
            sqlite_tensor.CorruptStoreError, match=f"page {page_id} of tensors_pages is corrupt"
        ):
            store.get_tensor("m", "w")
        with pytest.raises(
            sqlite_tensor.CorruptStoreError, match=f"page {page_id} of tensors_pages"
        ):
            store.predict("m", x)
        with pytest.raises(apsw.CorruptError, match=f"page {page_id} of tensors_pages is corrupt"):
            memdb.execute("SELECT tensor_blob('tensors', 'm', 'w')").get
        with pytest.raises(apsw.CorruptError, match=f"page {page_id} of tensors_pages"):
            memdb.execute("SELECT tensor_predict('tensors', 'm', ?)", (x.tobytes(),)).get
        assert any(p.startswith(f"page {page_id}: ") for p in store.verify())
    memdb.execute("UPDATE tensors_pages SET data = ? WHERE id = ?", (data, page_id))
    assert same(store.get_tensor("m", "w"), w) and store.verify() == []


def slot_length_61(conn):
    """Page 1's first slot claims 61 bytes (a 3 x 5 float32 tile is 60), checksum resealed:
    an impossible size that only the slot checks can see."""
    data = bytearray(conn.execute("SELECT data FROM tensors_pages WHERE id = 1").get)
    at = pages.slot_entry_at(data, 0) + 8
    data[at : at + 8] = (61).to_bytes(8, "little")
    conn.execute("UPDATE tensors_pages SET data = ? WHERE id = 1", (bytes(pages.seal(data, 1)),))


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: c.execute("DELETE FROM tensors_pages WHERE id = 1"),
        slot_length_61,
        lambda c: c.execute("UPDATE tensors_pages SET data = x'00' WHERE id = 1"),
    ],
    ids=["missing-page", "impossible-size", "not-a-page"],
)
def test_same_damage_same_class_from_every_path(memdb, rng, damage):
    store = sqlite_tensor.Store(memdb, **SMALL)
    store.add_model(
        "m",
        {"w": random_array(rng, (10, 20), np.float32), "b": random_array(rng, (10,), np.float32)},
        layers=LAYERS,
    )
    damage(memdb)
    x = np.ones(20, np.float32)
    for read in (
        lambda: store.get_tensor("m", "w"),
        lambda: store.predict("m", x),
        lambda: store.get_model("m"),
    ):
        with pytest.raises(sqlite_tensor.CorruptStoreError, match="corrupt"):
            read()
    for sql, args in (
        ("SELECT tensor_blob('tensors', 'm', 'w')", ()),
        ("SELECT tensor_predict('tensors', 'm', ?)", (x.tobytes(),)),
    ):
        with pytest.raises(apsw.CorruptError, match="corrupt"):
            memdb.execute(sql, args).get
    assert issubclass(sqlite_tensor.CorruptStoreError, sqlite_tensor.TensorStoreError)


def test_busy_is_busy_not_corruption(tmp_path, rng):
    path = tmp_path / "busy.sqlite"
    conn = sqlite_tensor.connect(path, wal=False, busy_timeout_ms=0)
    store = sqlite_tensor.Store(conn, **SMALL)
    store.add_model(
        "m",
        {"w": random_array(rng, (10, 20), np.float32), "b": random_array(rng, (10,), np.float32)},
        layers=LAYERS,
    )
    other = apsw.Connection(str(path))
    other.execute("BEGIN EXCLUSIVE")
    try:
        for read in (
            lambda: store.get_tensor("m", "w"),
            lambda: store.predict("m", np.ones(20, np.float32)),
        ):
            with pytest.raises(apsw.BusyError):
                read()
        with pytest.raises(apsw.BusyError):
            conn.execute("SELECT tensor_blob('tensors', 'm', 'w')").get
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.get_tensor("m", "w").shape == (10, 20)
    conn.close()
