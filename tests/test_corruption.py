"""Damaged stores (changed with raw SQL, defensive mode off, or raw bytes of the file): reads
give a clear 'corrupt' error (CorruptStoreError in Python, SQLITE_CORRUPT in SQL) or the
right answer, never wrong numbers and never a crash, and verify() names the damage.

The harness at the end damages a store at random and counts every read's outcome; its
long run is one command:
    ST_CORRUPTION_RUNS=3000 python -m pytest -q tests/test_corruption.py -k harness -s
"""

from __future__ import annotations

import os
import random
import shutil
import struct

import apsw
import numpy as np
import pytest
from conftest import SMALL, random_array, same, tamperable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_residual_kernels import put_residuals

import sqlite_tensor
from sqlite_tensor import pages as page_format
from sqlite_tensor import residuals

W_SHAPE = (10, 20)  # 4 x 4 grid of 3 x 5 tiles: 16 blocks on 8 pages (2 a page)


def build(conn):
    rng = np.random.default_rng(7)
    store = sqlite_tensor.Store(conn, **SMALL)
    model = {
        "w": random_array(rng, W_SHAPE, np.float32),
        "v": random_array(rng, (4,), np.int16),
    }  # its own page, after w's
    store.add_model("m", model)
    assert store.conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, -1) == 0
    return store, model


@pytest.fixture
def damaged(memdb):
    return build(memdb)


def page_bytes(conn, page_id=1) -> bytearray:
    return bytearray(conn.execute("SELECT data FROM tensors_pages WHERE id = ?", (page_id,)).get)


def set_page(conn, data, page_id=1, seal=False):
    """Write a page's bytes; seal: with a checksum that matches them (damage that a writer
    with a bug could make, which the deeper checks must catch)."""
    if seal:
        data = page_format.seal(bytearray(data), page_id)
    conn.execute("UPDATE tensors_pages SET data = ? WHERE id = ?", (bytes(data), page_id))


def header_slot(conn, slot, offset=None, length=None):
    data = page_bytes(conn)
    pos = page_format.slot_entry_at(data, slot)
    old_off, old_len = page_format.slot_range(data, slot)
    struct.pack_into(
        "<QQ",
        data,
        pos,
        old_off if offset is None else offset,
        old_len if length is None else length,
    )
    set_page(conn, data, seal=True)


def flip_payload(conn):
    data = page_bytes(conn)
    off, _ = page_format.slot_range(bytes(data), 1)
    data[off + 3] ^= 0x40
    set_page(conn, data)


# Each: (how to damage the store, a fragment verify() reports)
DAMAGE = {
    "garbage-page": (
        lambda c: set_page(c, b"\xde\xad\xbe\xef" + bytes(range(200))),
        "page 1: not a version-2 page",
    ),
    "garbage-text-page": (
        lambda c: c.execute(  # || makes TEXT, here not even valid UTF-8
            "UPDATE tensors_pages SET data = x'DEADBEEF' || randomblob(length(data)) WHERE id = 1"
        ),
        "page 1: data is text, not a BLOB",
    ),
    "zeroed-page": (
        lambda c: c.execute("UPDATE tensors_pages SET data = zeroblob(length(data)) WHERE id = 1"),
        "page 1: not a version-2 page",
    ),
    "truncated-in-header": (
        lambda c: c.execute("UPDATE tensors_pages SET data = substr(data, 1, 10) WHERE id = 1"),
        "page 1: 10 bytes, shorter than the 16-byte page header",
    ),
    "truncated-in-slot-table": (
        lambda c: c.execute("UPDATE tensors_pages SET data = substr(data, 1, 40) WHERE id = 1"),
        "page 1: 2 slots do not fit",
    ),
    "truncated-in-block": (
        lambda c: c.execute(
            "UPDATE tensors_pages SET data = substr(data, 1, length(data) - 8) WHERE id = 1"
        ),
        "page 1: checksum",
    ),
    "truncated-in-block-resealed": (
        lambda c: set_page(c, page_bytes(c)[:-8], seal=True),
        "page 1: slot 1",
    ),
    "payload-flipped": (flip_payload, "page 1: checksum"),
    "checksum-field-flipped": (
        lambda c: set_page(c, (lambda d: (d.__setitem__(20, d[20] ^ 1), d)[1])(page_bytes(c))),
        "page 1: checksum",
    ),
    "page-copied-into-another-row": (
        lambda c: c.execute(
            "UPDATE tensors_pages SET data = (SELECT data FROM tensors_pages WHERE id = 2) WHERE id = 1"
        ),
        "page 1: checksum",
    ),
    "version-1-page-in-a-version-2-store": (
        lambda c: set_page(
            c,
            page_format.build_v1_page(
                [np.frombuffer(b, np.uint8) for b in page_format.read_slots(bytes(page_bytes(c)))]
            ),
        ),
        "page 1: a version-1 page (no checksum); the store is of version-2 pages",
    ),
    "empty-page": (
        lambda c: c.execute("UPDATE tensors_pages SET data = x'' WHERE id = 1"),
        "page 1: 0 bytes",
    ),
    "page-is-an-integer": (
        lambda c: c.execute("UPDATE tensors_pages SET data = 42 WHERE id = 1"),
        "page 1: data is integer, not a BLOB",
    ),
    "page-is-text": (
        lambda c: c.execute("UPDATE tensors_pages SET data = 'STPG' WHERE id = 1"),
        "page 1: data is text, not a BLOB",
    ),
    "page-deleted": (
        lambda c: c.execute("DELETE FROM tensors_pages WHERE id = 1"),
        "2 blocks name missing pages",
    ),
    "slot-out-of-range": (
        lambda c: c.execute("UPDATE tensors_blocks SET slot = 99 WHERE id = 1"),
        "block 1: slot 99 of page 1 missing",
    ),
    "slot-negative": (
        lambda c: c.execute("UPDATE tensors_blocks SET slot = -1 WHERE id = 1"),
        "block 1: slot -1 of page 1 missing",
    ),
    "slot-past-32-bits": (
        lambda c: c.execute("UPDATE tensors_blocks SET slot = 4294967296 WHERE id = 1"),
        "block 1: slot 4294967296 of page 1 missing",
    ),
    "block-on-a-missing-page": (
        lambda c: c.execute("UPDATE tensors_blocks SET page_id = 999 WHERE id = 1"),
        "1 blocks name missing pages",
    ),
    "header-offset-past-end": (
        lambda c: header_slot(c, 0, offset=10_000),
        "page 1: slot 0 (60 bytes at 10000) runs past",
    ),
    "header-offset-wraps": (
        lambda c: header_slot(c, 0, offset=2**64 - 30),
        "page 1: slot 0 (60 bytes at 18446744073709551586) runs past",
    ),
    "header-wrong-length": (
        lambda c: header_slot(c, 0, length=61),
        "block 1: slot 0 of page 1 missing or wrong size",
    ),
    "header-too-many-slots": (
        lambda c: set_page(
            c, (lambda d: (struct.pack_into("<I", d, 8, 10**6), d)[1])(page_bytes(c)), seal=True
        ),
        "page 1: 1000000 slots do not fit",
    ),
    "map-row-deleted": (
        lambda c: c.execute(
            "DELETE FROM tensors_map WHERE tensor_id = 1 AND block_row = 1 AND block_col = 2"
        ),
        "tensor 1: 15 blocks mapped, grid has 16",
    ),
    "map-row-out-of-grid": (
        lambda c: c.execute(
            "UPDATE tensors_map SET block_row = 4 WHERE tensor_id = 1 AND block_row = 0"
            " AND block_col = 0"
        ),
        "tensor 1: block (4, 0) is outside its 4 x 4 grid",
    ),
    "map-row-far-out-of-grid": (
        lambda c: c.execute(
            "UPDATE tensors_map SET block_row = 4611686018427387904 WHERE tensor_id = 1"
            " AND block_row = 0 AND block_col = 0"
        ),
        "tensor 1: block (4611686018427387904, 0)",
    ),
    "map-names-wrong-size-block": (
        lambda c: c.execute(
            "UPDATE tensors_map SET block_id = (SELECT block_id FROM tensors_map WHERE tensor_id = 2)"
            " WHERE tensor_id = 1 AND block_row = 0 AND block_col = 0"
        ),
        "tensor 1: block (0, 0) has 6 bytes, wrong for a tile of 15 elements",
    ),
    "block-row-deleted": (
        lambda c: c.execute("DELETE FROM tensors_blocks WHERE id = 3"),
        "1 map entries name missing blocks",
    ),
    "tensor-bytes-doubled": (
        lambda c: c.execute("UPDATE tensors_tensors SET nbytes = nbytes * 2 WHERE id = 1"),
        "tensor 1: 10 x 20 in 1600 bytes does not match shape [10, 20] of float32",
    ),
    "tensor-rows-absurd": (
        lambda c: c.execute(
            "UPDATE tensors_tensors SET rows = 4294967296, cols = 4294967296 WHERE id = 1"
        ),
        "tensor 1: 4294967296 x 4294967296 in 800 bytes does not match",
    ),
    "tensor-rows-zero": (
        lambda c: c.execute("UPDATE tensors_tensors SET rows = 0 WHERE id = 1"),
        "tensor 1: 0 x 20",
    ),
    "tensor-itemsize-odd": (
        lambda c: c.execute("UPDATE tensors_tensors SET nbytes = 600 WHERE id = 1"),
        "tensor 1: 10 x 20 in 600 bytes",
    ),
    "tensor-shape-transposed": (
        lambda c: c.execute("UPDATE tensors_tensors SET shape = '[20, 10]' WHERE id = 1"),
        "tensor 1: 10 x 20 in 800 bytes does not match shape [20, 10]",
    ),
}


# damage to what only get_tensor reads (the shape): tensor_blob's bytes are still right
BYTES_UNAFFECTED = {"tensor-shape-transposed"}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damage_gives_a_corrupt_error_and_verify_reports_it(damaged, how):
    store, model = damaged
    conn = store.conn
    damage, fragment = DAMAGE[how]
    damage(conn)
    with pytest.raises(sqlite_tensor.CorruptStoreError, match="corrupt") as info:
        store.get_tensor("m", "w")
    message = str(info.value)
    if how not in BYTES_UNAFFECTED:
        with pytest.raises(apsw.CorruptError, match="corrupt"):
            conn.execute("SELECT tensor_blob('tensors', 'm', 'w')").get
        with pytest.raises(apsw.CorruptError, match="corrupt"):
            conn.execute("SELECT data FROM tensors WHERE model = 'm' AND tensor = 'w'").get
        with pytest.raises(apsw.CorruptError, match="corrupt"):
            conn.execute("SELECT length(data) FROM tensors").fetchall()
    # the message says where: a page (with its slot) or the tensor
    assert "page 1 of tensors_pages" in message or "tensor 1" in message or "tensors" in message
    problems = store.verify()
    assert any(fragment in p for p in problems), problems
    # the other tensor (on its own page) still reads, and so do the reports
    assert same(store.get_tensor("m", "v"), model["v"])
    assert store.stats()["models"] == 1


@pytest.mark.parametrize("how", ["slot-swapped", "block-moved-page"])
def test_silent_damage_is_caught_by_verify(damaged, how):
    """Shadow-table edits that make a consistent other store (every length right, every
    page intact): reads cannot tell, the block hashes can. The known limit of checksums on
    pages: rows of the shadow tables carry none (docs/architecture.md)."""
    store, _ = damaged
    conn = store.conn
    if how == "slot-swapped":  # blocks 1 and 2 share page 1 and are both 3 x 5 float32
        conn.execute("UPDATE tensors_blocks SET slot = 1 - slot WHERE id IN (1, 2)")
    else:  # block 1 now names the same slot of page 2 (a block of the same size)
        conn.execute("UPDATE tensors_blocks SET page_id = 2 WHERE id = 1")
    got = store.get_tensor("m", "w")  # reads, but wrong
    assert got.shape == W_SHAPE
    problems = store.verify()
    assert any("bytes do not match its hash" in p for p in problems), problems


@pytest.mark.parametrize(
    "sql, shown",
    [
        ("DELETE FROM tensors_config WHERE key = 'block_rows'", "None"),
        ("UPDATE tensors_config SET value = 0 WHERE key = 'block_rows'", "0"),
        (
            "UPDATE tensors_config SET value = 2305843009213693953 WHERE key = 'block_rows'",
            "2305843009213693953",
        ),  # block_rows * block_cols * itemsize would wrap around 2**64
        ("UPDATE tensors_config SET value = 'three' WHERE key = 'block_rows'", "'three'"),
    ],
    ids=["deleted", "zero", "huge", "text"],
)
def test_damaged_config_is_reported(db_path, sql, shown):
    with sqlite_tensor.Store(db_path, **SMALL) as store:
        store.add_model("m", {"w": np.ones((4, 4), np.float32)})
        tamperable(store.conn)
        store.conn.execute(sql)
        assert f"config: block_rows is {shown}, the store was opened with 3" in store.verify()
        with pytest.raises(
            sqlite_tensor.CorruptStoreError,
            match="tensor store 'tensors' is corrupt: no valid block shape in tensors_config",
        ):
            store.get_tensor("m", "w")
    conn = sqlite_tensor.connect(db_path)
    try:
        with pytest.raises(apsw.Error, match="no valid block shape"):
            conn.execute("SELECT * FROM tensors").fetchall()
    finally:
        conn.close()


def test_missing_config_row_on_open(db_path):
    with sqlite_tensor.Store(db_path, **SMALL) as store:
        tamperable(store.conn).execute("DELETE FROM tensors_config WHERE key = 'page_blocks'")
    conn = sqlite_tensor.connect(db_path)
    try:
        with pytest.raises(
            sqlite_tensor.TensorStoreError,
            match="store 'tensors' is corrupt: tensors_config has no valid page_blocks",
        ):
            sqlite_tensor.Store(conn)
    finally:
        conn.close()


def test_missing_shadow_table(memdb):
    store, _ = build(memdb)
    memdb.execute("DROP TABLE tensors_pages")
    with pytest.raises(sqlite_tensor.CorruptStoreError, match="page 1 of tensors_pages is corrupt"):
        store.get_tensor("m", "w")
    with pytest.raises(apsw.SQLError, match="tensors_pages"):
        store.verify()


def test_corruption_inside_a_transaction_does_not_lose_the_transaction(damaged, rng):
    """SQLite makes the rest of a transaction read-only after SQLITE_CORRUPT; a ROLLBACK
    still ends it cleanly and the store is as it was."""
    store, model = damaged
    conn = store.conn
    conn.execute("UPDATE tensors_blocks SET slot = 99 WHERE id = 1")
    conn.execute("BEGIN")
    with pytest.raises(apsw.CorruptError):
        store.get_tensor("m", "w")
    conn.execute("ROLLBACK")
    conn.execute("UPDATE tensors_blocks SET slot = 0 WHERE id = 1")  # repaired
    assert same(store.get_tensor("m", "w"), model["w"]) and store.verify() == []


# -- fuzzing a page ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_page_damage_never_crashes(data):
    conn = tamperable(sqlite_tensor.connect(":memory:"))
    try:
        store, model = build(conn)
        page = page_bytes(conn)
        nslots = page_format.header(page).nslots
        kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "header-field"]))
        if kind == "flip":
            positions = data.draw(st.lists(st.integers(0, len(page) - 1), min_size=1, max_size=6))
            for pos in positions:
                page[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "truncate":
            page = page[: data.draw(st.integers(0, len(page) - 1))]
        elif kind == "extend":
            page += bytes(data.draw(st.integers(1, 200)))
        else:
            field = data.draw(st.integers(0, 4 + 2 * nslots))
            value = data.draw(
                st.sampled_from(
                    [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, len(page), len(page) + 1]
                )
            )
            if field < 4:
                struct.pack_into("<I", page, 4 * field, value & 0xFFFFFFFF)
            else:  # the checksum, then each slot's offset and length
                struct.pack_into("<Q", page, 16 + 8 * (field - 4), value)
        set_page(conn, page)
        for read in (
            lambda: store.get_tensor("m", "w"),
            lambda: conn.execute("SELECT data FROM tensors WHERE tensor = 'w'").get,
        ):
            try:
                got = read()
            except apsw.CorruptError as e:
                assert "corrupt" in str(e)
            else:
                if isinstance(got, np.ndarray):
                    assert got.shape == W_SHAPE
                else:
                    assert len(got) == model["w"].nbytes
        problems = store.verify()  # never raises
        # every page byte is under the checksum: a read is right or an error, never wrong
        assert read_ok(store, model) is not False
        if read_ok(store, model) is None:
            assert problems
        assert same(store.get_tensor("m", "v"), model["v"])
    finally:
        conn.close()


def read_ok(store, model):
    try:
        return same(store.get_tensor("m", "w"), model["w"])
    except apsw.CorruptError:
        return None


# -- the corruption harness --------------------------------------------------------------------
#
# A store with a dense model is damaged at random, one way per run, then read by every path
# (get_tensor, tensor_blob, Store.predict, tensor_predict) with a cold pool. Each read must
# give exactly the answer of the intact store or a corruption error; the count of reads that
# returned wrong numbers must be 0. Damage kinds:
#   page-data     raw byte flips in a page's block bytes (plain SQL, no reseal)
#   page-header   raw byte flips in a page's header or slot table
#   shadow-edit   a column a read depends on set to a random value (plain SQL): tensors'
#                 rows, cols, nbytes, shape; blocks' nbytes; map's grid position; config's
#                 block shape. Not blocks.page_id / slot or map.block_id: re-pointing a
#                 tile at another intact block of its size makes a consistent other store
#                 that no page checksum can see (the known limit, caught by verify's block
#                 hashes: test_silent_damage_is_caught_by_verify)
#   file          raw byte flips anywhere in the database file, outside SQLite's 100-byte
#                 file header (rows of the shadow tables included)
# The weight carries residuals of the kinds whose payload says where to write (sparse,
# sign+sparse) and a sign one, in a residual page that page damage hits like any other;
# shadow-edit changes their kind, param or nbytes (chosen so that no single edit makes
# another valid residual). Not their tile, page or slot: moving a residual to another
# tile or payload of the same size is the re-pointing limit above.

HARNESS_RUNS = int(os.environ.get("ST_CORRUPTION_RUNS", "160"))
HARNESS_LAYERS = [{"op": "dense", "weight": "w", "bias": "b", "activation": "relu"}]
KINDS = ("page-data", "page-header", "shadow-edit", "file")
EDITS = [
    ("tensors", "rows"),
    ("tensors", "cols"),
    ("tensors", "nbytes"),
    ("tensors", "shape"),
    ("blocks", "nbytes"),
    ("map", "block_row"),
    ("map", "block_col"),
    ("config", "value"),
    ("residuals", "kind"),
    ("residuals", "param"),
    ("residuals", "nbytes"),
]
# tile -> (kind, param) of the harness's residuals (3 x 5 tiles): 24, 12 and 15 bytes
HARNESS_RESIDUALS = {
    (0, 0): (residuals.SIGN_SPARSE, 2),
    (1, 1): (residuals.SPARSE, 3),
    (2, 3): (residuals.SIGN, residuals.SIGN_ROW),
}
VALUES = [0, -1, 1, 2, 3, 7, 99, 2**31, 2**32 + 1, 2**62, -(2**63), "'x'", "NULL", "x'00'"]


@pytest.fixture(scope="module")
def harness_template(tmp_path_factory):
    """The intact store (rollback journal, so the file alone is the database) and every
    read's right answer."""
    path = tmp_path_factory.mktemp("harness") / "intact.sqlite"
    rng = np.random.default_rng(11)
    arrays = {
        "w": rng.standard_normal((10, 20)).astype(np.float32),
        "b": rng.standard_normal(10).astype(np.float32),
    }
    conn = sqlite_tensor.connect(path, page_size=4096, wal=False)
    store = sqlite_tensor.Store(conn, **SMALL)
    store.add_model("m", arrays, layers=HARNESS_LAYERS)
    put_residuals(
        store,
        "m",
        "w",
        {
            tile: (kind, param, residuals.encode(kind, param, rng.standard_normal((3, 5))))
            for tile, (kind, param) in HARNESS_RESIDUALS.items()
        },
    )
    x = rng.standard_normal(20).astype(np.float32)
    answers = harness_reads(store, x)
    assert all(isinstance(a, np.ndarray) for a in answers.values())
    conn.close()
    return path, x, answers


def harness_reads(store, x):
    """name -> the read's result (an array) or the exception it raised."""
    conn = store.conn
    reads = {
        "get_tensor": lambda: store.get_tensor("m", "w"),
        "tensor_blob": lambda: np.frombuffer(
            conn.execute("SELECT tensor_blob('tensors', 'm', 'w')").get, np.float32
        ),
        "Store.predict": lambda: store.predict("m", x),
        "tensor_predict": lambda: np.frombuffer(
            conn.execute("SELECT tensor_predict('tensors', 'm', ?)", (x.tobytes(),)).get, np.float32
        ),
    }
    out = {}
    for name, read in reads.items():
        sqlite_tensor.cache.clear()  # the first read after damage comes from the file
        try:
            out[name] = np.array(read(), copy=True)
        except Exception as e:  # judged by the caller
            out[name] = e
    return out


def damage_file(path, kind, rnd):
    """Damage the store at path one way; returns a description."""
    if kind == "file":
        data = bytearray(path.read_bytes())
        spots = [rnd.randrange(100, len(data)) for _ in range(rnd.randint(1, 4))]
        for pos in spots:
            data[pos] ^= rnd.randint(1, 255)
        path.write_bytes(bytes(data))
        return f"file bytes {spots}"
    conn = apsw.Connection(str(path))  # no extension, defensive off: plain SQL
    try:
        if kind == "shadow-edit":
            table, column = rnd.choice(EDITS)
            value = rnd.choice(VALUES)
            tile = rnd.choice(list(HARNESS_RESIDUALS))
            where = {
                "config": "WHERE key IN ('block_rows', 'block_cols')",
                "residuals": f"WHERE block_row = {tile[0]} AND block_col = {tile[1]}",
            }.get(table, "")
            where = where or (
                "WHERE tensor_id = 1 AND block_row = 0 AND block_col = 1"
                if table == "map"
                else f"WHERE rowid = (SELECT rowid FROM tensors_{table}"
                f" ORDER BY {rnd.random()} * rowid % 7 LIMIT 1)"
            )
            try:
                conn.execute(f"UPDATE tensors_{table} SET {column} = {value} {where}")
            except apsw.ConstraintError:  # NOT NULL, or a key taken: no damage this run
                return "none"
            return f"{table}.{column} = {value}"
        page_id = rnd.choice([p for (p,) in conn.execute("SELECT id FROM tensors_pages")])
        page = bytearray(
            conn.execute("SELECT data FROM tensors_pages WHERE id = ?", (page_id,)).get
        )
        start = page_format.header(page).data_start
        lo, hi = (start, len(page)) if kind == "page-data" else (0, start)
        spots = [rnd.randrange(lo, hi) for _ in range(rnd.randint(1, 3))]
        for pos in spots:
            page[pos] ^= rnd.randint(1, 255)
        conn.execute("UPDATE tensors_pages SET data = ? WHERE id = ?", (bytes(page), page_id))
        return f"page {page_id} bytes {spots}"
    finally:
        conn.close()


def judge(result, right):
    """'right', 'corrupt' (the contract's error), 'other-error' (an error of another class)
    or 'WRONG' (numbers that differ from the intact store's)."""
    if isinstance(result, Exception):
        return "corrupt" if isinstance(result, apsw.CorruptError) else "other-error"
    return "right" if result.shape == right.shape and same(result, right) else "WRONG"


def run_harness(template, runs, seed):
    path0, x, answers = template
    counts = {}
    wrong = []
    others = []
    file_others = []
    rnd = random.Random(seed)
    for run in range(runs):
        kind = KINDS[run % len(KINDS)]
        path = path0.with_name(f"run-{seed}-{run}.sqlite")
        shutil.copyfile(path0, path)
        what = damage_file(path, kind, rnd)
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            sqlite_tensor.load(conn)
            try:
                store = sqlite_tensor.Store(conn, create=False)
            except Exception as e:  # the store cannot even be opened: every read fails so
                results = {name: e for name in answers}
            else:
                results = harness_reads(store, x)
        finally:
            conn.close()
            path.unlink()
        for name, result in results.items():
            verdict = judge(result, answers[name])
            counts[(kind, verdict)] = counts.get((kind, verdict), 0) + 1
            if verdict == "WRONG":
                wrong.append((kind, what, name))
            elif verdict == "other-error" and kind != "file":
                others.append((kind, what, name, f"{type(result).__name__}: {result}"))
            elif verdict == "other-error":
                file_others.append((name, f"{type(result).__name__}: {result}"))
    return counts, wrong, others, file_others


def test_harness_no_read_returns_wrong_numbers(harness_template):
    counts, wrong, others, file_others = run_harness(harness_template, HARNESS_RUNS, seed=2026)
    reads = sum(counts.values())
    print(f"\ncorruption harness: {HARNESS_RUNS} runs, {reads} reads:")
    for kind in KINDS:
        print(f"  {kind:12s}", {v: n for (k, v), n in sorted(counts.items()) if k == kind})
    print(
        f"  wrong numbers: {len(wrong)}; non-corruption errors outside raw file flips:"
        f" {len(others)}"
    )
    for o in sorted({(o[2], o[3][:90]) for o in others})[:12]:
        print("   ", o)
    print(
        "  raw file flips, other errors:",
        sorted({f"{n}: {str(e)[:70]}" for n, e in file_others})[:8],
    )
    assert not wrong, wrong[:10]
    # damage the engine can see is reported as corruption by the store's own paths
    assert not [o for o in others if o[2] in ("get_tensor", "tensor_blob")], others[:10]
