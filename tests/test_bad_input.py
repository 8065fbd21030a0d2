"""Bad input from Python and SQL: each is a clear exception naming the problem, and nothing
already stored is lost."""

from __future__ import annotations

import apsw
import numpy as np
import pytest
from conftest import dump, random_array, same, snapshot

import sqlite_tensor
from sqlite_tensor import FormatError, NotFoundError, TensorStoreError


@pytest.fixture
def kept(store, rng):
    """A store with one model in it; tests check it survives whatever they throw at it."""
    model = {"w": random_array(rng, (7, 8), np.float32), "b": random_array(rng, (8,), np.int64)}
    store.add_model("kept", model)
    store.kept_model = model
    yield store
    assert store.verify() == []
    for name, arr in model.items():
        assert same(store.get_tensor("kept", name), arr)


# -- add_model -----------------------------------------------------------------------------------


class NotAnArray:
    pass


@pytest.mark.parametrize(
    "model, tensors, exc, message",
    [
        (None, {"w": np.ones(2)}, TypeError, "model name must be a string, got NoneType"),
        (3, {"w": np.ones(2)}, TypeError, "model name must be a string, got int"),
        (b"m", {"w": np.ones(2)}, TypeError, "model name must be a string, got bytes"),
        ("", {"w": np.ones(2)}, ValueError, "model name must not be empty"),
        ("m", [np.ones(2)], TypeError, "tensors must be a mapping .* got list"),
        ("m", 42, TypeError, "tensors must be a mapping .* got int"),
        ("m", None, TypeError, "tensors must be a mapping .* got NoneType"),
        ("m", {}, ValueError, "model 'm' has no tensors"),
        ("m", {1: np.ones(2)}, TypeError, "tensor name must be a string, got int"),
        ("m", {"": np.ones(2)}, ValueError, "tensor name must not be empty"),
        (
            "m",
            {"a": np.ones(2), "a\x00b": np.ones(2)},
            ValueError,
            r"tensor name 'a\\x00b' contains a NUL character",
        ),
        ("m\x00", {"w": np.ones(2)}, ValueError, r"model name 'm\\x00' contains a NUL character"),
        ("m", {"w": [1.0, 2.0]}, TypeError, "tensor 'w' must be a numpy array, got list"),
        ("m", {"w": NotAnArray()}, TypeError, "tensor 'w' must be a numpy array, got NotAnArray"),
        ("m", {"w": "text"}, TypeError, "tensor 'w' must be a numpy array, got str"),
        (
            "m",
            {"ok": np.ones(2), "c": np.ones(3, np.complex64)},
            ValueError,
            "tensor 'c': unsupported dtype complex64",
        ),
        (
            "m",
            {"o": np.array([1, "a"], dtype=object)},
            ValueError,
            "tensor 'o': unsupported dtype object",
        ),
        ("m", {"u": np.array(["abc"])}, ValueError, "tensor 'u': unsupported dtype <U3"),
        (
            "m",
            {"d": np.array(["2024-01-01"], "datetime64[D]")},
            ValueError,
            "tensor 'd': unsupported dtype datetime64",
        ),
        ("m", {"v": np.zeros(3, "V4")}, ValueError, "tensor 'v': unsupported dtype"),
        (
            "m",
            {"r": np.zeros(2, [("a", "f4"), ("b", "i4")])},
            ValueError,
            "tensor 'r': unsupported dtype",
        ),
        ("m", {"f": np.zeros(2, np.longdouble)}, ValueError, "tensor 'f': unsupported dtype"),
        ("m", {"e": np.ones((0,))}, ValueError, r"tensor 'e' has shape \(0,\): zero-size"),
        (
            "m",
            {"e": np.ones((3, 0), np.int8)},
            ValueError,
            r"tensor 'e' has shape \(3, 0\): zero-size",
        ),
        ("m", {"e": np.ones((2, 0, 4))}, ValueError, r"zero-size tensors cannot be stored"),
        ("kept", {"w": np.ones(2)}, ValueError, "model 'kept' already exists in store 'tensors'"),
    ],
)
def test_add_model_refuses(kept, model, tensors, exc, message):
    before = snapshot(kept.conn)
    with pytest.raises(exc, match=message):
        kept.add_model(model, tensors)
    assert snapshot(kept.conn) == before


def test_unsupported_dtype_message_lists_the_supported_ones(kept):
    with pytest.raises(ValueError) as info:
        kept.add_model("m", {"c": np.ones(2, np.complex128)})
    for name in ("float32", "bfloat16", "float8_e4m3fn", "uint64", "bool"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        (b"", ".safetensors", "shorter than the 8-byte safetensors header length"),
        (b"\x05\x00\x00\x00\x00\x00\x00\x00{oops", ".safetensors", "header is not valid JSON"),
        (b"garbage" * 20, ".safetensors", "not a safetensors file"),
        (b"PK\x03\x04 this is no zip", ".npz", "not an .npz file"),
        (b"hello", ".npz", "not an .npz file"),
    ],
    ids=["empty", "bad-json", "garbage", "bad-zip", "not-zip"],
)
def test_add_model_from_a_malformed_file(kept, tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    before = snapshot(kept.conn)
    with pytest.raises(FormatError, match=message) as info:
        kept.add_model("m", path)
    assert str(path) in str(info.value)  # names the file
    assert snapshot(kept.conn) == before


def test_add_model_from_files_that_cannot_be_read(kept, tmp_path):
    before = snapshot(kept.conn)
    with pytest.raises(FormatError, match="missing.safetensors: no such file"):
        kept.add_model("m", tmp_path / "missing.safetensors")
    with pytest.raises(FormatError, match="unsupported file type '.txt'"):
        (tmp_path / "weights.txt").write_text("1 2 3")
        kept.add_model("m", tmp_path / "weights.txt")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(FormatError, match="dir.safetensors"):
        kept.add_model("m", tmp_path / "dir.safetensors")
    assert snapshot(kept.conn) == before


def test_add_model_from_npz_with_an_unsupported_member(kept, tmp_path):
    np.savez(tmp_path / "c.npz", ok=np.ones(3), bad=np.ones(3, np.complex64))
    before = snapshot(kept.conn)
    with pytest.raises(FormatError, match="complex64"):
        kept.add_model("m", tmp_path / "c.npz")
    assert snapshot(kept.conn) == before


def test_add_model_from_a_file_with_zero_size_tensors(kept, tmp_path):
    np.savez(tmp_path / "z.npz", ok=np.ones(3), empty=np.ones((0, 4)))
    before = snapshot(kept.conn)
    with pytest.raises(ValueError, match="tensor 'empty' has shape \\(0, 4\\)"):
        kept.add_model("m", tmp_path / "z.npz")
    assert snapshot(kept.conn) == before


def test_array_likes_and_numpy_scalars_are_accepted(kept):
    class ArrayLike:
        def __array__(self, dtype=None, copy=None):
            return np.arange(6, dtype=np.int16).reshape(2, 3)

    kept.add_model("m", {"a": ArrayLike(), "s": np.float64(2.0), "b": np.bool_(True)})
    assert same(kept.get_tensor("m", "a"), np.arange(6, dtype=np.int16).reshape(2, 3))
    assert same(kept.get_tensor("m", "s"), np.array(2.0))
    assert same(kept.get_tensor("m", "b"), np.array(True))


def test_names_with_quotes_and_unicode(memdb):
    store = sqlite_tensor.Store(memdb, 'odd "store" name')
    model = "model 'quoted' \"double\" ünïcode ✓"
    tensors = {
        "layer.0/weight'\"": np.arange(12, dtype=np.float32).reshape(3, 4),
        "名前": np.ones(2, np.int8),
        "semi;colon -- comment": np.zeros(1, np.uint8),
    }
    store.add_model(model, tensors)
    for name, arr in tensors.items():
        assert same(store.get_tensor(model, name), arr)
        assert (
            memdb.execute("SELECT tensor_blob(?, ?, ?)", (store.name, model, name)).get
            == arr.tobytes()
        )
    assert store.models() == [model]
    assert (
        memdb.execute('SELECT count(*) FROM "odd ""store"" name" WHERE model = ?', (model,)).get
        == 3
    )
    assert store.stats()["tensors"] == 3 and store.verify() == []
    store.drop_model(model)
    assert store.models() == []


# -- reading unknown things ----------------------------------------------------------------------


def test_unknown_model_and_tensor(kept, tmp_path):
    before = dump(kept.conn)
    with pytest.raises(NotFoundError, match="no model 'nope' in store 'tensors'; it has 'kept'"):
        kept.get_tensor("nope", "w")
    with pytest.raises(NotFoundError, match="no tensor 'nope' in model 'kept'; it has 'w', 'b'"):
        kept.get_tensor("kept", "nope")
    with pytest.raises(NotFoundError, match="no model 'nope'"):
        kept.tensors("nope")
    with pytest.raises(NotFoundError, match="no model 'nope'"):
        kept.get_model("nope")
    with pytest.raises(NotFoundError, match="no model 'nope'"):
        kept.export_model("nope", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(NotFoundError, match="no model 'nope'"):
        kept.drop_model("nope")
    assert "nope" not in kept and 3 not in kept and "kept" in kept
    # NotFoundError is a KeyError and a TensorStoreError, with a readable str()
    with pytest.raises(KeyError):
        kept.get_tensor("nope", "w")
    with pytest.raises(TensorStoreError) as info:
        kept.get_tensor("nope", "w")
    assert str(info.value).startswith("no model 'nope'")
    assert dump(kept.conn) == before


def test_lookup_arguments_of_the_wrong_type(kept):
    with pytest.raises(TypeError, match="model name must be a string, got int"):
        kept.get_tensor(1, "w")
    with pytest.raises(TypeError, match="tensor name must be a string, got NoneType"):
        kept.get_tensor("kept", None)
    with pytest.raises(ValueError, match="tensor name must not be empty"):
        kept.get_tensor("kept", "")
    with pytest.raises(ValueError, match="contains a NUL character"):
        kept.get_tensor("kept", "w\x00")  # must not read as "w"
    with pytest.raises(TypeError, match="model name must be a string"):
        kept.drop_model(["kept"])
    with pytest.raises(TypeError, match="model name must be a string"):
        kept.tensors(b"kept")


def test_export_to_an_unsupported_suffix(kept, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # a .safetensors or .npz file, or a folder (any other name; issue 13): never a .pt
    with pytest.raises(FormatError, match="not a PyTorch file"):
        kept.export_model("kept", out / "model.pt")
    assert list(out.iterdir()) == []


# -- store options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, exc, message",
    [
        (dict(block_rows=0), ValueError, "block_rows must be from 1 to 65536, got 0"),
        (dict(block_cols=-4), ValueError, "block_cols must be from 1 to 65536, got -4"),
        (dict(page_blocks=70000), ValueError, "page_blocks must be from 1 to 65536, got 70000"),
        (dict(block_rows=65536, block_cols=65536), ValueError, "over the maximum"),
        (dict(block_size=64), TypeError, "unknown store option 'block_size'"),
        (dict(block_rows="3"), TypeError, "store option block_rows must be an integer, got '3'"),
        (dict(block_rows=3.0), TypeError, "store option block_rows must be an integer, got 3.0"),
        (dict(block_rows=True), TypeError, "store option block_rows must be an integer, got True"),
        (dict(block_rows=None), TypeError, "store option block_rows must be an integer, got None"),
    ],
)
def test_bad_store_options_from_python(db, options, exc, message):
    before = dump(db, "s")
    with pytest.raises(exc, match=message):
        sqlite_tensor.Store(db, "s", **options)
    assert dump(db, "s") == before  # no half-made store left behind
    assert db.execute("SELECT count(*) FROM sqlite_schema").get == 0


def test_numpy_integer_options_are_fine(db):
    store = sqlite_tensor.Store(db, "s", block_rows=np.int64(4), page_blocks=np.uint8(3))
    assert (store.block_rows, store.block_cols, store.page_blocks) == (4, 256, 3)


def test_reopening_with_different_options(db):
    sqlite_tensor.Store(db, "s", block_rows=4, block_cols=6)
    with pytest.raises(
        ValueError,
        match="store 's' exists with block_rows=4; it cannot be reopened with block_rows=5",
    ):
        sqlite_tensor.Store(db, "s", block_rows=5)
    with pytest.raises(ValueError, match="page_blocks=4.*page_blocks=8"):
        sqlite_tensor.Store(db, "s", page_blocks=8)
    same_options = sqlite_tensor.Store(db, "s", block_rows=4, block_cols=6, page_blocks=4)
    assert (same_options.block_rows, same_options.block_cols) == (4, 6)
    # table names are case-insensitive in SQLite: this is the same store
    upper = sqlite_tensor.Store(db, "S")
    assert (upper.block_rows, upper.block_cols) == (4, 6)
    upper.add_model("m", {"w": np.ones((5, 7), np.float32)})
    assert same(sqlite_tensor.Store(db, "s").get_tensor("m", "w"), np.ones((5, 7), np.float32))


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE plain(x)",
        "CREATE TABLE plain(tensor_store INTEGER)",  # the module's name as a column
        "CREATE VIRTUAL TABLE plain USING fts5(tensor_store)",
    ],
)
def test_a_table_that_is_not_a_store(db, ddl):
    db.execute(ddl)
    before = dump(db, "plain")
    with pytest.raises(TensorStoreError, match="table 'plain' exists and is not a tensor store"):
        sqlite_tensor.Store(db, "plain")
    assert dump(db, "plain") == before


def test_bad_store_names_and_connections(db, tmp_path):
    for name in ("", None, 3):
        with pytest.raises(TypeError, match="store name must be a non-empty string"):
            sqlite_tensor.Store(db, name)
    with pytest.raises(TypeError, match="takes an apsw.Connection or a database path, got int"):
        sqlite_tensor.Store(3)
    with pytest.raises(
        TypeError, match="takes an apsw.Connection or sqlite3.Connection, got object"
    ):
        sqlite_tensor.load(object())
    db.execute("CREATE VIEW v AS SELECT 1")
    with pytest.raises(ValueError, match="already exists"):
        sqlite_tensor.Store(db, "v")
    with pytest.raises(apsw.CantOpenError):
        sqlite_tensor.Store(tmp_path / "no" / "such" / "dir.sqlite")
    (tmp_path / "text.sqlite").write_text("this is not a database, " * 100)
    with pytest.raises(apsw.NotADBError):
        sqlite_tensor.Store(tmp_path / "text.sqlite")
    assert (tmp_path / "text.sqlite").read_text() == "this is not a database, " * 100


# -- store options from SQL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        ("block_rows=0", "tensor_store: block_rows must be from 1 to 65536, got 0"),
        ("block_cols=65537", "tensor_store: block_cols must be from 1 to 65536, got 65537"),
        ("page_blocks=-1", "tensor_store: page_blocks must be from 1 to 65536, got -1"),
        (
            "block_size=64",
            "tensor_store: unknown option 'block_size'; options are block_rows,"
            " block_cols, page_blocks",
        ),
        ("block_rows=abc", "tensor_store: option 'block_rows=abc' is not of the form name=integer"),
        ("block_rows=1.5", "tensor_store: option 'block_rows=1.5' is not of the form name=integer"),
        ("block_rows='4'", "is not of the form name=integer"),
        ("block_rows", "tensor_store: option 'block_rows' is not of the form name=integer"),
        ("=4", "is not of the form name=integer"),
        ("block_rows=4, block_rows=8", "tensor_store: option block_rows is given twice"),
        ("block_rows=65536, block_cols=65536, page_blocks=65536", "over the maximum"),
    ],
)
def test_bad_store_options_from_sql(db, args, message):
    with pytest.raises(apsw.SQLError) as info:
        db.execute(f"CREATE VIRTUAL TABLE s USING tensor_store({args})")
    assert message in str(info.value)
    assert db.execute("SELECT count(*) FROM sqlite_schema").get == 0


def test_sql_options_with_spaces_and_defaults(db):
    db.execute("CREATE VIRTUAL TABLE s USING tensor_store( block_rows = 7 , page_blocks=2)")
    config = dict(db.execute("SELECT key, value FROM s_config"))
    # uid identifies the store's pages to the buffer pool: a random integer (and no
    # `generation`: the pool notices changes by the connection's view)
    assert isinstance(config.pop("uid"), int)
    assert config == {"format_version": 2, "block_rows": 7, "block_cols": 256, "page_blocks": 2}
    store = sqlite_tensor.Store(db, "s")
    assert (store.block_rows, store.block_cols, store.page_blocks) == (7, 256, 2)


def test_create_fails_cleanly_when_a_shadow_name_is_taken(db):
    db.execute("CREATE TABLE s_map(x)")
    before = dump(db, "s")
    with pytest.raises(apsw.SQLError, match='table "?s_map"? already exists'):
        db.execute("CREATE VIRTUAL TABLE s USING tensor_store")
    assert dump(db, "s") == before  # no partial set of shadow tables
    with pytest.raises(ValueError, match="s_map"):
        sqlite_tensor.Store(db, "s")
    assert dump(db, "s") == before


def test_store_with_newer_format_version_is_refused(db_path):
    with sqlite_tensor.Store(db_path, "s") as store:
        store.conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)  # damage by hand
        store.conn.execute("UPDATE s_config SET value = 3 WHERE key = 'format_version'")
    conn = sqlite_tensor.connect(db_path)
    try:
        with pytest.raises(
            apsw.SQLError,
            match="store 's' has format version 3; this sqlite-tensor reads versions 1 to 2",
        ):
            conn.execute("SELECT * FROM s").fetchall()
    finally:
        conn.close()


def test_store_create_false_refuses_a_missing_store(db):
    with pytest.raises(sqlite_tensor.NotFoundError, match="no tensor store named 'nope'"):
        sqlite_tensor.Store(db, "nope", create=False)
    assert db.execute("SELECT count(*) FROM sqlite_schema").get == 0  # nothing was made
    sqlite_tensor.Store(db, "nope")
    assert sqlite_tensor.Store(db, "NOPE", create=False).name == "NOPE"  # names are case-blind
