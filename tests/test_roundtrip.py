"""Round trips: every dtype, rank 0..4, shapes that are not multiples of the block shape,
special float values, through the Python API, the SQL surface and tensor files."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from conftest import ALL_DTYPES, SMALL, random_array, same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlite_tensor
from sqlite_tensor import formats

FAST = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

BLOCK_SHAPES = [(1, 1), (3, 5), (2, 7), (4, 4), (5, 3)]


def read_sql(store, model, tensor):
    """The tensor's bytes through both SQL paths, checked to agree."""
    blob = store.conn.execute("SELECT tensor_blob(?, ?, ?)", (store.name, model, tensor)).get
    data = store.conn.execute(
        f'SELECT data FROM "{store.name}" WHERE model = ? AND tensor = ?', (model, tensor)
    ).get
    assert blob == data
    return blob


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_round_trips_bit_exact(memstore, rng, dtype):
    tensors = {
        f"r{rank}": random_array(rng, shape, dtype)
        for rank, shape in enumerate([(), (7,), (4, 11), (2, 5, 6), (3, 2, 4, 7)])
    }
    report = memstore.add_model("m", tensors)
    assert report.tensors == 5
    assert report.logical_bytes == sum(a.nbytes for a in tensors.values())
    for name, arr in tensors.items():
        got = memstore.get_tensor("m", name)
        assert same(got, arr), name
        assert read_sql(memstore, "m", name) == arr.tobytes()
    infos = {i.name: i for i in memstore.tensors("m")}
    assert [i.name for i in memstore.tensors("m")] == list(tensors)
    for name, arr in tensors.items():
        assert infos[name].shape == arr.shape
        assert infos[name].dtype == np.dtype(dtype).name
        assert infos[name].nbytes == arr.nbytes
    assert memstore.verify() == []


def special_values(dtype) -> np.ndarray:
    """NaNs with payloads and signs, infinities, signed zeros, extremes, subnormals."""
    dt = np.dtype(dtype)
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dt.itemsize]
    finfo = ml_dtypes.finfo(dt) if dt.itemsize == 2 and dt != np.float16 else np.finfo(dt)
    vals = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0], dtype=dt)
    extremes = np.array([finfo.max, finfo.min, finfo.tiny, finfo.smallest_subnormal], dtype=dt)
    # NaNs with distinct payloads: all exponent bits set, various mantissas
    one = np.array(1, bits)
    mant = {np.float16: 10, ml_dtypes.bfloat16: 7, np.float32: 23, np.float64: 52}
    m = mant[dt.type]
    exp_all = ((one << (dt.itemsize * 8 - 1)) - one) ^ ((one << m) - one)
    payloads = np.array([exp_all | p for p in (1, 2, 3, (1 << (m - 1)) + 5)], dtype=bits)
    payloads = np.concatenate([payloads, payloads | (one << (dt.itemsize * 8 - 1))])
    return np.concatenate([vals, extremes, payloads.view(dt)])


@pytest.mark.parametrize(
    "dtype",
    [np.float16, ml_dtypes.bfloat16, np.float32, np.float64],
    ids=lambda d: np.dtype(d).name,
)
def test_nan_payloads_and_infinities(memstore, dtype):
    v = special_values(dtype)
    with np.errstate(invalid="ignore"):
        assert np.isnan(v).sum() >= 8
    tensors = {"flat": v, "square": np.resize(v, (7, 9)), "scalar": v[-1:].reshape(())}
    memstore.add_model("special", tensors)
    for name, arr in tensors.items():
        got = memstore.get_tensor("special", name)
        assert same(got, arr)
        # bit patterns, not values: NaN != NaN, but the payload must survive
        np.testing.assert_array_equal(
            got.reshape(-1).view(np.uint8), arr.reshape(-1).view(np.uint8)
        )


@pytest.mark.parametrize(
    "dtype", [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2], ids=lambda d: np.dtype(d).name
)
def test_float8_every_bit_pattern(memstore, dtype):
    every = np.arange(256, dtype=np.uint8).view(dtype)
    memstore.add_model("f8", {"all": every, "grid": every.reshape(16, 16)})
    assert same(memstore.get_tensor("f8", "all"), every)
    assert same(memstore.get_tensor("f8", "grid"), every.reshape(16, 16))


def test_integer_extremes(memstore):
    tensors = {}
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        info = np.iinfo(dt)
        tensors[np.dtype(dt).name] = np.array([info.min, info.max, 0, 1, info.max - 1], dt)
    memstore.add_model("ints", tensors)
    for name, arr in tensors.items():
        assert same(memstore.get_tensor("ints", name), arr)


def test_scalar_keeps_rank_zero(memstore):
    memstore.add_model("s", {"x": np.float32(2.5), "y": np.array(7, np.int64)})
    x = memstore.get_tensor("s", "x")
    assert x.shape == () and x.dtype == np.float32 and x == 2.5
    assert memstore.tensors("s")[0].shape == ()
    row = memstore.conn.execute(
        "SELECT shape, dtype, nbytes FROM tensors WHERE model = 's' AND tensor = 'y'"
    ).fetchone()
    assert row == ("[]", "int64", 8)


def test_non_contiguous_and_big_endian_inputs(memstore, rng):
    base = rng.standard_normal((6, 8)).astype(np.float32)
    tensors = {
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "fortran": np.asfortranarray(base),
        "big_endian": base.astype(">f4"),
        "big_endian_int": np.arange(10, dtype=">i8"),
        "reversed": base[::-1],
        "unaligned": np.frombuffer(b"\x00" + base.tobytes(), np.float32, count=48, offset=1),
    }
    assert not tensors["unaligned"].flags.aligned
    memstore.add_model("views", tensors)
    for name, arr in tensors.items():
        got = memstore.get_tensor("views", name)
        assert got.dtype.byteorder in ("=", "<", "|")
        np.testing.assert_array_equal(got, arr)
        assert got.tobytes() == np.ascontiguousarray(arr, arr.dtype.newbyteorder("<")).tobytes()


def test_a_model_read_back_goes_in_again(memstore, rng):
    model = {"w": random_array(rng, (7, 9), ml_dtypes.bfloat16), "s": np.array(3, np.uint8)}
    memstore.add_model("m", model)
    report = memstore.add_model("again", memstore.get_model("m"))  # read-only arrays
    assert report.new_blocks == 0
    assert all(same(memstore.get_tensor("again", k), v) for k, v in model.items())


def test_returned_arrays_are_new_and_writable(memstore):
    memstore.add_model("m", {"w": np.ones((4, 4), np.float32)})
    got = memstore.get_tensor("m", "w")
    assert got.flags.writeable and got.flags.c_contiguous and got.flags.owndata
    got[0, 0] = 2  # changes the caller's array only
    assert memstore.get_tensor("m", "w")[0, 0] == 1


# -- hypothesis: shapes against block shapes ---------------------------------------------------

_memory_stores: dict = {}


def shared_store(block_rows, block_cols, page_blocks):
    """One in-memory store per option set, reused across examples (fast)."""
    key = (block_rows, block_cols, page_blocks)
    if key not in _memory_stores:
        conn = sqlite_tensor.connect(":memory:")
        _memory_stores[key] = sqlite_tensor.Store(
            conn, block_rows=block_rows, block_cols=block_cols, page_blocks=page_blocks
        )
    return _memory_stores[key]


shapes = (
    st.lists(st.integers(1, 9), min_size=0, max_size=4)
    .filter(lambda s: int(np.prod(s)) <= 600)
    .map(tuple)
)
_counter = itertools.count()


@FAST
@given(
    shape=shapes,
    dtype=st.sampled_from(ALL_DTYPES),
    block=st.sampled_from(BLOCK_SHAPES),
    page_blocks=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    repeat_rows=st.booleans(),
)
def test_any_shape_round_trips(shape, dtype, block, page_blocks, seed, repeat_rows):
    store = shared_store(*block, page_blocks)
    rng = np.random.default_rng(seed)
    arr = random_array(rng, shape, dtype)
    if repeat_rows and arr.ndim >= 2:
        arr = np.ascontiguousarray(np.broadcast_to(arr[..., :1, :], arr.shape))  # repeated tiles
    other = random_array(rng, (max(1, len(shape)), 3), dtype)
    name = f"m{next(_counter)}"
    store.add_model(name, {"a": arr, "b": other, "a_again": arr})
    assert same(store.get_tensor(name, "a"), arr)
    assert same(store.get_tensor(name, "a_again"), arr)
    assert same(store.get_tensor(name, "b"), other)
    assert read_sql(store, name, "a") == arr.tobytes()
    # and the store stays sound when models come and go
    if next(_counter) % 3 == 0:
        store.drop_model(name)
    assert store.verify() == []


def teardown_module():
    for s in _memory_stores.values():
        s.conn.close()
    _memory_stores.clear()


# -- tensor files --------------------------------------------------------------------------------


def mixed_model(rng):
    return {f"{np.dtype(dt).name}.w": random_array(rng, (5, 7), dt) for dt in ALL_DTYPES} | {
        "scalar": np.array(1.5, np.float32),
        "vector": random_array(rng, (13,), np.int16),
        "rank4": random_array(rng, (2, 3, 2, 4), np.float16),
    }


def test_export_safetensors_and_reread(memstore, rng, tmp_path):
    model = mixed_model(rng)
    memstore.add_model("m", model)
    path = tmp_path / "m.safetensors"
    memstore.export_model("m", path)
    back = formats.read_tensors(path)
    assert sorted(back) == sorted(model)
    for name, arr in model.items():
        assert same(back[name], arr), name
    # the safetensors package reads what numpy can represent
    numpy_ok = {
        k: v
        for k, v in model.items()
        if v.dtype.type
        in (
            np.float32,
            np.float16,
            np.float64,
            np.int8,
            np.int16,
            np.int32,
            np.int64,
            np.uint8,
            np.uint16,
            np.uint32,
            np.uint64,
            np.bool_,
        )
    }
    theirs = safetensors.numpy.load_file(str(path)) if len(numpy_ok) == len(model) else None
    if theirs is None:  # bf16/f8 present: check a file of just the numpy dtypes
        memstore.add_model("plain", numpy_ok)
        memstore.export_model("plain", tmp_path / "plain.safetensors")
        theirs = safetensors.numpy.load_file(str(tmp_path / "plain.safetensors"))
    for name, arr in numpy_ok.items():
        assert same(theirs[name], arr), name
    # an exported file re-added as a model is the same model, sharing every block
    report = memstore.add_model("again", path)
    assert report.new_blocks == 0
    for name, arr in model.items():
        assert same(memstore.get_tensor("again", name), arr)


def test_export_npz_and_reread(memstore, rng, tmp_path):
    model = {k: v for k, v in mixed_model(rng).items() if "bfloat16" not in k and "float8" not in k}
    memstore.add_model("m", model)
    path = tmp_path / "m.npz"
    memstore.export_model("m", str(path))
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(model)
        for name, arr in model.items():
            assert same(npz[name], arr), name
    back = formats.read_tensors(path)
    for name, arr in model.items():
        assert same(back[name], arr), name


def test_export_npz_refuses_bfloat16_and_writes_nothing(memstore, tmp_path):
    memstore.add_model("m", {"w": np.ones((2, 2), ml_dtypes.bfloat16)})
    path = tmp_path / "m.npz"
    with pytest.raises(sqlite_tensor.FormatError, match="bfloat16"):
        memstore.export_model("m", path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_add_model_from_a_file_written_by_safetensors(memstore, rng, tmp_path):
    tensors = {
        "embedding.weight": rng.standard_normal((17, 6)).astype(np.float32),
        "fc.bias": rng.standard_normal(6).astype(np.float16),
        "steps": np.array([1, 2, 3], np.int64),
        "mask": np.array([[True, False], [False, True]]),
        "u8": np.arange(30, dtype=np.uint8).reshape(5, 6),
    }
    path = tmp_path / "real.safetensors"
    safetensors.numpy.save_file(tensors, str(path), metadata={"format": "np"})
    report = memstore.add_model("real", path)
    assert report.tensors == len(tensors)
    for name, arr in tensors.items():
        assert same(memstore.get_tensor("real", name), arr), name
    memstore.add_model("real-str", str(path))
    assert memstore.get_model("real-str").keys() == tensors.keys()


def test_add_model_from_npz(memstore, rng, tmp_path):
    tensors = {
        "a": rng.standard_normal((4, 9)),
        "b": np.arange(7, dtype=np.int32),
        "c": np.array(3, np.uint16),
    }
    np.savez(tmp_path / "plain.npz", **tensors)
    np.savez_compressed(tmp_path / "packed.npz", **tensors)
    memstore.add_model("plain", tmp_path / "plain.npz")
    memstore.add_model("packed", tmp_path / "packed.npz")
    for model in ("plain", "packed"):
        got = memstore.get_model(model)
        assert got.keys() == tensors.keys()
        for name, arr in tensors.items():
            assert same(got[name], arr)
    assert memstore.stats()["dedup_ratio"] == 2.0


def test_file_store_persists_across_connections(db_path, rng):
    model = mixed_model(rng)
    with sqlite_tensor.Store(db_path, **SMALL) as s:
        s.add_model("m", model)
    with sqlite_tensor.Store(db_path) as s:  # options come from the store itself
        assert (s.block_rows, s.block_cols, s.page_blocks) == (3, 5, 2)
        for name, arr in model.items():
            assert same(s.get_tensor("m", name), arr)
        assert s.verify() == []
