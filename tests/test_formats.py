"""Tests of sqlite_tensor.formats: bit-exact round trips, interop with the safetensors package,
and one test per malformed-file rule."""

from __future__ import annotations

import io
import json
import math
import os
import zipfile

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlite_tensor import dtypes, formats
from sqlite_tensor.errors import FormatError

NUMPY_NATIVE = [n for n in dtypes.NAMES if n not in ("bfloat16", "float8_e4m3fn", "float8_e5m2")]
ML_DTYPES = ["bfloat16", "float8_e4m3fn", "float8_e5m2"]

# Hypothesis runs many examples per test in one tmp_path; the names it draws must not clash.
HYP = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.array_equal(
        np.ascontiguousarray(a).reshape(-1).view(np.uint8),
        np.ascontiguousarray(b).reshape(-1).view(np.uint8),
    )


def same_tensors(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        same_bits(a[name], b[name])


def random_array(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random bytes viewed as ``name`` — every bit pattern, NaN payloads included."""
    dt = dtypes.numpy_dtype(name)
    n = math.prod(shape) * dt.itemsize
    raw = np.random.default_rng(seed).bytes(n)
    return np.frombuffer(raw, dtype=np.uint8).view(dt).reshape(shape).copy()


shapes = st.lists(st.integers(0, 7), max_size=4).map(tuple)


@st.composite
def arrays(draw, names=dtypes.NAMES) -> np.ndarray:
    return random_array(draw(st.sampled_from(names)), draw(shapes), draw(st.integers(0, 2**32 - 1)))


tensor_names = st.text(min_size=1, max_size=12).filter(lambda s: s != "__metadata__")


def tensor_dicts(names=dtypes.NAMES, keys=tensor_names):
    return st.dictionaries(keys, arrays(names), max_size=4)


_counter = iter(range(10**9))


def fresh(tmp_path, suffix: str) -> str:
    return str(tmp_path / f"f{next(_counter)}{suffix}")


def write_raw_safetensors(
    path, header: object = None, data: bytes = b"", *, header_bytes: bytes | None = None
) -> None:
    hb = header_bytes if header_bytes is not None else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little") + hb + data)


# --------------------------------------------------------------------------- interop


@pytest.mark.parametrize("name", NUMPY_NATIVE)
def test_reads_files_written_by_safetensors(tmp_path, name):
    path = tmp_path / "ref.safetensors"
    tensors = {
        "scalar": random_array(name, (), 1),
        "matrix": random_array(name, (3, 5), 2),
        "empty": random_array(name, (0, 4), 3),
        "z.last": random_array(name, (2, 1, 3), 4),
    }
    safetensors.numpy.save_file(tensors, str(path), metadata={"format": "np", "note": "ünïcode"})
    got, meta = formats.read_safetensors(path)
    same_tensors(got, tensors)
    assert meta == {"format": "np", "note": "ünïcode"}


@pytest.mark.parametrize("name", NUMPY_NATIVE)
def test_files_we_write_load_in_safetensors(tmp_path, name):
    path = str(tmp_path / "ours.safetensors")
    tensors = {
        "b": random_array(name, (4, 3), 5),
        "a": random_array(name, (), 6),
        "c/d": random_array(name, (0,), 7),
    }
    formats.write_safetensors(path, tensors, {"k": "v", "empty": ""})
    same_tensors(safetensors.numpy.load_file(path), tensors)
    with safetensors.safe_open(path, framework="numpy") as f:
        assert f.metadata() == {"k": "v", "empty": ""}
        assert sorted(f.keys()) == sorted(tensors)
        for key in f.keys():
            same_bits(f.get_tensor(key), tensors[key])


def test_mixed_dtypes_load_in_safetensors(tmp_path):
    # Sorting by name puts a 1-byte tensor before an 8-byte one; the reference must still load it.
    path = str(tmp_path / "mixed.safetensors")
    tensors = {n: random_array(n, (3,), i) for i, n in enumerate(NUMPY_NATIVE)}
    formats.write_safetensors(path, tensors)
    same_tensors(safetensors.numpy.load_file(path), tensors)
    with safetensors.safe_open(path, framework="numpy") as f:
        assert f.metadata() is None


@HYP
@given(tensors=tensor_dicts(NUMPY_NATIVE))
def test_interop_both_ways_random(tmp_path, tensors):
    ours, theirs = fresh(tmp_path, ".safetensors"), fresh(tmp_path, ".safetensors")
    formats.write_safetensors(ours, tensors)
    same_tensors(safetensors.numpy.load_file(ours), tensors)
    safetensors.numpy.save_file(tensors, theirs)
    same_tensors(formats.read_safetensors(theirs)[0], tensors)


def test_header_layout(tmp_path):
    path = tmp_path / "layout.safetensors"
    formats.write_safetensors(
        path, {"b": np.zeros(3, np.uint8), "a": np.ones((), np.float64)}, {"m": "1"}
    )
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0
    text = raw[8 : 8 + n].decode()
    assert text == text.rstrip() + " " * (len(text) - len(text.rstrip()))
    header = json.loads(text)
    assert list(header) == ["__metadata__", "a", "b"]  # metadata first, tensors sorted by name
    assert header["a"] == {"dtype": "F64", "shape": [], "data_offsets": [0, 8]}
    assert header["b"] == {"dtype": "U8", "shape": [3], "data_offsets": [8, 11]}
    assert len(raw) == 8 + n + 11


# --------------------------------------------------------------------------- bit exactness


def special_values() -> dict[str, np.ndarray]:
    """NaNs with non-default payloads, signalling NaNs, infinities, -0, subnormals."""
    return {
        "f32": np.array(
            [0x7FC12345, 0xFFA00001, 0x7F800001, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001],
            np.uint32,
        ).view(np.float32),
        "f16": np.array([0x7E01, 0xFC01, 0x7C01, 0x7C00, 0xFC00, 0x8000, 0x0001], np.uint16).view(
            np.float16
        ),
        "f64": np.array(
            [0x7FF8DEADBEEF0001, 0xFFF0000000000001, 0x7FF0000000000000], np.uint64
        ).view(np.float64),
        "bf16": np.array([0x7FC1, 0xFF81, 0x7F81, 0x7F80, 0xFF80, 0x8000, 0x0001], np.uint16).view(
            ml_dtypes.bfloat16
        ),
        "e4m3": np.array([0x7F, 0xFF, 0x80, 0x01, 0x7E], np.uint8).view(ml_dtypes.float8_e4m3fn),
        "e5m2": np.array([0x7D, 0xFE, 0x7F, 0x7C, 0xFC, 0x80, 0x01], np.uint8).view(
            ml_dtypes.float8_e5m2
        ),
    }


def test_special_values_round_trip_safetensors(tmp_path):
    tensors = special_values()
    assert np.isnan(tensors["bf16"][:3].astype(np.float32)).all()
    path = tmp_path / "special.safetensors"
    formats.write_tensors(path, tensors)
    got = formats.read_tensors(path)
    same_tensors(got, tensors)
    assert got["bf16"].dtype == np.dtype(ml_dtypes.bfloat16)


def test_special_values_round_trip_npz(tmp_path):
    tensors = {k: v for k, v in special_values().items() if k in ("f32", "f16", "f64")}
    path = tmp_path / "special.npz"
    formats.write_tensors(path, tensors)
    same_tensors(formats.read_tensors(path), tensors)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_big_endian_input_is_stored_little_endian(tmp_path, suffix):
    be = np.array([0x7FC12345, 1, 0xFF800000], np.uint32).view(np.float32).astype(">f4")
    assert be.dtype.str == ">f4"
    path = tmp_path / f"be{suffix}"
    formats.write_tensors(path, {"x": be, "n": np.arange(5, dtype=">i8")[::2]})
    got = formats.read_tensors(path)
    assert got["x"].dtype.str == "<f4"
    assert got["x"].view(np.uint32).tolist() == [0x7FC12345, 1, 0xFF800000]
    assert got["n"].dtype.str == "<i8" and got["n"].tolist() == [0, 2, 4]


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_non_contiguous_and_scalar_inputs(tmp_path, suffix):
    base = np.arange(24, dtype=np.int16).reshape(4, 6)
    tensors = {"t": base.T, "s": base[::2, 1::3], "scalar": np.float32(2.5)}
    path = tmp_path / f"views{suffix}"
    formats.write_tensors(path, tensors)
    got = formats.read_tensors(path)
    assert got["scalar"].shape == () and got["scalar"].dtype == np.float32
    same_bits(got["t"], np.ascontiguousarray(base.T))
    same_bits(got["s"], np.ascontiguousarray(base[::2, 1::3]))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_arrays_own_their_memory(tmp_path, suffix):
    path = tmp_path / f"own{suffix}"
    formats.write_tensors(
        path, {"a": np.arange(10, dtype=np.float32), "b": np.ones((2, 2), np.int8)}
    )
    got = formats.read_tensors(path)
    os.remove(path)
    for a in got.values():
        assert a.flags.writeable and a.flags.c_contiguous and a.flags.owndata
        a[...] = 0


def test_reads_fortran_order_and_compressed_npz(tmp_path):
    path = tmp_path / "f.npz"
    f_arr = np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4))
    np.savez_compressed(path, f=f_arr, be=np.arange(3, dtype=">u2"))
    got = formats.read_npz(path)
    assert got["f"].flags.c_contiguous
    same_bits(got["f"], np.arange(12, dtype=np.int32).reshape(3, 4))
    assert got["be"].dtype.str == "<u2" and got["be"].tolist() == [0, 1, 2]


def test_npz_interop_with_numpy(tmp_path):
    tensors = {n: random_array(n, (2, 3), i) for i, n in enumerate(NUMPY_NATIVE)}
    tensors["file"] = np.float64(1)  # would clash with np.savez's own parameter name
    path = tmp_path / "ours.npz"
    formats.write_npz(path, tensors)
    with np.load(path, allow_pickle=False) as npz:
        same_tensors({k: npz[k] for k in npz.files}, tensors)


@HYP
@given(
    tensors=tensor_dicts(), metadata=st.none() | st.dictionaries(st.text(), st.text(), max_size=3)
)
def test_safetensors_round_trip_random(tmp_path, tensors, metadata):
    path = fresh(tmp_path, ".safetensors")
    formats.write_safetensors(path, tensors, metadata)
    got, meta = formats.read_safetensors(path)
    same_tensors(got, tensors)
    assert meta == (metadata or {})


@HYP
@given(
    tensors=tensor_dicts(
        NUMPY_NATIVE,
        # no surrogates: names must encode as UTF-8 (the writer refuses them, tested above)
        keys=st.text(
            st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
            min_size=1,
            max_size=12,
        ),
    )
)
def test_npz_round_trip_random(tmp_path, tensors):
    path = fresh(tmp_path, ".NPZ")
    formats.write_tensors(path, tensors)
    same_tensors(formats.read_tensors(path), tensors)


def test_suffix_dispatch_is_case_insensitive_and_accepts_pathlike(tmp_path):
    for suffix in (".SafeTensors", ".Npz"):
        path = tmp_path / f"x{suffix}"
        formats.write_tensors(path, {"a": np.arange(3, dtype=np.uint8)})
        same_bits(formats.read_tensors(str(path))["a"], np.arange(3, dtype=np.uint8))


# --------------------------------------------------------------------------- dispatch / io errors


@pytest.mark.parametrize("name", ["model.pt", "model", "model.safetensors.bak"])
def test_unsupported_suffix(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(FormatError, match=r"unsupported file type .*\.safetensors, \.npz") as e:
        formats.read_tensors(path)
    assert name in str(e.value)
    with pytest.raises(FormatError, match="unsupported file type"):
        formats.write_tensors(path, {})
    assert not path.exists()


@pytest.mark.parametrize("fn", [formats.read_tensors, formats.read_safetensors, formats.read_npz])
def test_missing_file(tmp_path, fn):
    suffix = ".npz" if fn is formats.read_npz else ".safetensors"
    with pytest.raises(FormatError, match=r"nope.* no such file"):
        fn(tmp_path / f"nope{suffix}")


def test_directory_instead_of_file(tmp_path):
    d = tmp_path / "dir.safetensors"
    d.mkdir()
    with pytest.raises(FormatError, match="is a directory"):
        formats.read_tensors(d)


def test_write_into_missing_directory(tmp_path):
    with pytest.raises(FormatError, match="no such directory"):
        formats.write_tensors(tmp_path / "missing" / "x.safetensors", {"a": np.zeros(1)})


def test_npz_refuses_metadata(tmp_path):
    with pytest.raises(FormatError, match="cannot carry metadata"):
        formats.write_tensors(tmp_path / "x.npz", {"a": np.zeros(1)}, {"k": "v"})


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_failed_validation_keeps_old_file(tmp_path, suffix):
    path = tmp_path / f"keep{suffix}"
    formats.write_tensors(path, {"old": np.arange(4, dtype=np.int32)})
    before = path.read_bytes()
    with pytest.raises(FormatError):
        formats.write_tensors(path, {"ok": np.zeros(2), "bad": np.zeros(2, np.complex64)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


def test_failure_during_write_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "boom.safetensors"
    formats.write_tensors(path, {"old": np.arange(4, dtype=np.int32)})
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        formats.write_tensors(path, {"new": np.zeros(1000)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


# --------------------------------------------------------------------------- malformed safetensors

GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def test_good_handmade_file_reads(tmp_path):
    # The baseline the malformed cases below mutate.
    path = tmp_path / "good.safetensors"
    write_raw_safetensors(path, {"x": GOOD_ENTRY}, np.array([1, 2], np.float32).tobytes())
    assert formats.read_tensors(path)["x"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("size", [0, 1, 7])
def test_shorter_than_8_bytes(tmp_path, size):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01" * size)
    with pytest.raises(
        FormatError, match=rf"short\.safetensors: file is {size} bytes, shorter than the 8-byte"
    ):
        formats.read_tensors(path)


def test_header_length_past_end_of_file(tmp_path):
    path = tmp_path / "h.safetensors"
    path.write_bytes((1000).to_bytes(8, "little") + b"{}")
    with pytest.raises(
        FormatError, match=r"header length 1000 runs past the end of the file \(10 bytes\)"
    ):
        formats.read_tensors(path)


def test_header_length_absurd(tmp_path):
    path = tmp_path / "h.safetensors"
    path.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(FormatError, match=r"header length 4611686018427387904 is absurdly large"):
        formats.read_tensors(path)


def test_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(FormatError, match="garbage.safetensors: header length"):
        formats.read_tensors(path)


def test_header_not_utf8(tmp_path):
    path = tmp_path / "h.safetensors"
    write_raw_safetensors(path, header_bytes=b'{"\xff": 1}')
    with pytest.raises(FormatError, match="header is not valid UTF-8"):
        formats.read_tensors(path)


@pytest.mark.parametrize("text", ['{"x": ', "not json", '{"a": 1}}', ""])
def test_header_not_json(tmp_path, text):
    path = tmp_path / "h.safetensors"
    write_raw_safetensors(path, header_bytes=text.encode())
    with pytest.raises(FormatError, match="header is not valid JSON"):
        formats.read_tensors(path)


@pytest.mark.parametrize(
    "header, kind", [([], "array"), ("x", "string"), (3, "number"), (None, "null")]
)
def test_header_not_an_object(tmp_path, header, kind):
    path = tmp_path / "h.safetensors"
    write_raw_safetensors(path, header)
    with pytest.raises(FormatError, match=f"header is a JSON {kind}, expected an object"):
        formats.read_tensors(path)


def test_header_nested_too_deeply(tmp_path):
    path = tmp_path / "h.safetensors"
    write_raw_safetensors(path, header_bytes=b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(FormatError, match="nested too deeply"):
        formats.read_tensors(path)


def test_duplicate_tensor_name(tmp_path):
    path = tmp_path / "dup.safetensors"
    entry = json.dumps(GOOD_ENTRY)
    write_raw_safetensors(
        path, header_bytes=f'{{"w": {entry}, "w": {entry}}}'.encode(), data=bytes(8)
    )
    with pytest.raises(FormatError, match="header has the key 'w' twice"):
        formats.read_tensors(path)


@pytest.mark.parametrize("entry, kind", [([1, 2], "array"), ("F32", "string"), (5, "number")])
def test_entry_not_an_object(tmp_path, entry, kind):
    path = tmp_path / "e.safetensors"
    write_raw_safetensors(path, {"weight": entry})
    with pytest.raises(
        FormatError, match=f"tensor 'weight': entry is a JSON {kind}, expected an object"
    ):
        formats.read_tensors(path)


@pytest.mark.parametrize("missing", [["dtype"], ["shape"], ["data_offsets"], ["dtype", "shape"]])
def test_entry_missing_field(tmp_path, missing):
    path = tmp_path / "e.safetensors"
    entry = {k: v for k, v in GOOD_ENTRY.items() if k not in missing}
    write_raw_safetensors(path, {"weight": entry}, bytes(8))
    with pytest.raises(
        FormatError, match=f"tensor 'weight': entry is missing {', '.join(missing)}$"
    ):
        formats.read_tensors(path)


def test_empty_tensor_name(tmp_path):
    path = tmp_path / "e.safetensors"
    write_raw_safetensors(path, {"": GOOD_ENTRY}, bytes(8))
    with pytest.raises(FormatError, match="empty name"):
        formats.read_tensors(path)


@pytest.mark.parametrize("code", ["F128", "f32", "C64", "STR"])
def test_unknown_dtype_code(tmp_path, code):
    path = tmp_path / "d.safetensors"
    write_raw_safetensors(path, {"w": {**GOOD_ENTRY, "dtype": code}}, bytes(8))
    with pytest.raises(
        FormatError,
        match=rf"tensor 'w': unsupported safetensors dtype '{code}';"
        r" supported: F64, F32, F16, BF16, F8_E4M3",
    ):
        formats.read_tensors(path)


def test_dtype_not_a_string(tmp_path):
    path = tmp_path / "d.safetensors"
    write_raw_safetensors(path, {"w": {**GOOD_ENTRY, "dtype": 32}}, bytes(8))
    with pytest.raises(FormatError, match="tensor 'w': dtype 32 is not a string"):
        formats.read_tensors(path)


@pytest.mark.parametrize("shape", [2, "2", [-2], [2.0], [True, 2], None, {"0": 2}])
def test_bad_shape(tmp_path, shape):
    path = tmp_path / "s.safetensors"
    write_raw_safetensors(path, {"w": {**GOOD_ENTRY, "shape": shape}}, bytes(8))
    with pytest.raises(
        FormatError, match=r"tensor 'w': shape .* is not a list of non-negative integers"
    ):
        formats.read_tensors(path)


@pytest.mark.parametrize("offsets", [[0], [0, 8, 8], [-1, 7], [0.0, 8], [False, 8], "0,8", None])
def test_offsets_not_two_ints(tmp_path, offsets):
    path = tmp_path / "o.safetensors"
    write_raw_safetensors(path, {"w": {**GOOD_ENTRY, "data_offsets": offsets}}, bytes(8))
    with pytest.raises(
        FormatError, match=r"tensor 'w': data_offsets .* is not a list of two non-negative integers"
    ):
        formats.read_tensors(path)


def test_offsets_begin_after_end(tmp_path):
    path = tmp_path / "o.safetensors"
    write_raw_safetensors(path, {"w": {**GOOD_ENTRY, "data_offsets": [8, 0]}}, bytes(8))
    with pytest.raises(FormatError, match=r"tensor 'w': data_offsets \[8, 0\] have begin > end"):
        formats.read_tensors(path)


def test_truncated_data(tmp_path):
    path = tmp_path / "t.safetensors"
    formats.write_tensors(path, {"a": np.zeros(4, np.float32), "w": np.zeros((4, 4), np.float64)})
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(
        FormatError,
        match=r"tensor 'w': data_offsets \[16, 144\] run past the end of the data buffer"
        r" \(143 bytes\); file truncated",
    ):
        formats.read_tensors(path)


@pytest.mark.parametrize(
    "shape, offsets, span, needed",
    [([3], [0, 8], 8, 12), ([1], [0, 8], 8, 4), ([2, 0], [0, 8], 8, 0)],
)
def test_size_mismatch(tmp_path, shape, offsets, span, needed):
    path = tmp_path / "m.safetensors"
    write_raw_safetensors(
        path, {"w": {"dtype": "F32", "shape": shape, "data_offsets": offsets}}, bytes(16)
    )
    with pytest.raises(
        FormatError,
        match=rf"tensor 'w': data_offsets .* span {span} bytes but shape .* of F32 needs {needed}$",
    ):
        formats.read_tensors(path)


def test_overlapping_ranges(tmp_path):
    path = tmp_path / "ov.safetensors"
    header = {
        "a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
        "b": {"dtype": "U8", "shape": [4], "data_offsets": [6, 10]},
        "empty": {
            "dtype": "U8",
            "shape": [0],
            "data_offsets": [4, 4],
        },  # inside 'a' but empty: fine
    }
    write_raw_safetensors(path, header, bytes(10))
    with pytest.raises(FormatError, match=r"tensors 'a' \[0, 8\] and 'b' \[6, 10\] overlap"):
        formats.read_tensors(path)


def test_zero_size_tensors_and_gaps_are_allowed(tmp_path):
    path = tmp_path / "z.safetensors"
    header = {
        "e1": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]},
        "e2": {"dtype": "BF16", "shape": [0], "data_offsets": [0, 0]},
        "x": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
    }
    write_raw_safetensors(path, header, b"\x00\x07\x09")
    got = formats.read_tensors(path)
    assert got["e1"].shape == (0, 3) and got["e2"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert got["x"].tolist() == [7, 9]


@pytest.mark.parametrize(
    "meta, fragment",
    [
        ([], r"__metadata__ is a JSON array, expected an object of strings"),
        ("x", r"__metadata__ is a JSON string"),
        ({"k": 1}, r"__metadata__\['k'\] is a JSON number \(1\), expected a string"),
        ({"k": None}, r"__metadata__\['k'\] is a JSON null"),
        ({"k": {"a": "b"}}, r"__metadata__\['k'\] is a JSON object"),
    ],
)
def test_bad_metadata_in_file(tmp_path, meta, fragment):
    path = tmp_path / "meta.safetensors"
    write_raw_safetensors(path, {"__metadata__": meta, "x": GOOD_ENTRY}, bytes(8))
    with pytest.raises(FormatError, match=fragment):
        formats.read_safetensors(path)


def test_null_metadata_reads_as_empty(tmp_path):
    path = tmp_path / "meta.safetensors"
    write_raw_safetensors(path, {"__metadata__": None, "x": GOOD_ENTRY}, bytes(8))
    assert formats.read_safetensors(path)[1] == {}


# --------------------------------------------------------------------------- writer validation


@pytest.mark.parametrize("name", ["", 3, None, b"w"])
def test_write_bad_tensor_name(tmp_path, name):
    with pytest.raises(FormatError, match="is not a non-empty string"):
        formats.write_safetensors(tmp_path / "w.safetensors", {name: np.zeros(1)})


def test_write_reserved_name(tmp_path):
    with pytest.raises(FormatError, match="'__metadata__' is reserved"):
        formats.write_safetensors(tmp_path / "w.safetensors", {"__metadata__": np.zeros(1)})


def test_write_unencodable_name(tmp_path):
    with pytest.raises(FormatError, match="not encodable as UTF-8"):
        formats.write_safetensors(tmp_path / "w.safetensors", {"bad\ud800": np.zeros(1)})


@pytest.mark.parametrize("value, kind", [([1.0, 2.0], "list"), (3.0, "float"), ("x", "str")])
def test_write_not_an_array(tmp_path, value, kind):
    with pytest.raises(FormatError, match=f"tensor 'w' is a {kind}, expected a numpy array"):
        formats.write_safetensors(tmp_path / "w.safetensors", {"w": value})


@pytest.mark.parametrize(
    "dtype",
    [
        np.complex64,
        np.object_,
        "U3",
        "S2",
        np.float128 if hasattr(np, "float128") else np.longdouble,
        [("a", "i4")],
    ],
)
@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_write_unsupported_dtype(tmp_path, dtype, suffix):
    with pytest.raises(FormatError, match=r"tensor 'w': unsupported dtype .*supported: float64"):
        formats.write_tensors(tmp_path / f"w{suffix}", {"w": np.zeros(2, dtype=dtype)})


@pytest.mark.parametrize("meta", [["k"], {"k": 1}, {1: "v"}, {"k": None}])
def test_write_bad_metadata(tmp_path, meta):
    with pytest.raises(FormatError, match="metadata must"):
        formats.write_safetensors(tmp_path / "w.safetensors", {"w": np.zeros(1)}, meta)


def test_write_tensors_not_a_mapping(tmp_path):
    with pytest.raises(FormatError, match="tensors must be a mapping"):
        formats.write_tensors(tmp_path / "w.safetensors", [np.zeros(1)])


@pytest.mark.parametrize("name", ML_DTYPES)
def test_npz_refuses_ml_dtypes(tmp_path, name):
    path = tmp_path / "w.npz"
    with pytest.raises(
        FormatError, match=rf"tensor 'w' is {name}, which \.npz cannot hold .*\.safetensors"
    ):
        formats.write_tensors(path, {"w": random_array(name, (2,), 0)})
    assert not path.exists()


def test_npz_refuses_nul_in_name(tmp_path):
    with pytest.raises(FormatError, match="contains NUL"):
        formats.write_npz(tmp_path / "w.npz", {"a\0b": np.zeros(1)})


# --------------------------------------------------------------------------- malformed npz


def test_npz_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(np.random.default_rng(1).bytes(1000))
    with pytest.raises(FormatError, match=r"garbage\.npz: not an \.npz file: not a zip archive"):
        formats.read_tensors(path)


def test_npz_that_is_a_single_npy(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(FormatError, match="looks like a single .npy file"):
        formats.read_npz(path)


def test_zip_that_is_not_npz(tmp_path):
    path = tmp_path / "notes.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(FormatError, match=r"notes\.npz: member 'readme.txt' is not a \.npy array"):
        formats.read_npz(path)


def test_npz_member_with_bad_npy_header(tmp_path):
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.npy", b"this is not npy data")
    with pytest.raises(FormatError, match=r"member 'w.npy': not a valid \.npy array"):
        formats.read_npz(path)


def test_npz_member_truncated(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.arange(100, dtype=np.float64))
    path = tmp_path / "trunc.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.npy", buf.getvalue()[:-8])
    with pytest.raises(
        FormatError, match=r"member 'w.npy': shape \[100\] of float64 needs 800 bytes"
    ):
        formats.read_npz(path)


def test_npz_corrupt_zip_data(tmp_path):
    path = tmp_path / "crc.npz"
    formats.write_npz(path, {"w": np.zeros(64, np.uint8)})
    raw = bytearray(path.read_bytes())
    i = raw.index(bytes(64))  # the stored (uncompressed) array data
    raw[i + 10] = 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"member 'w.npy' is corrupt .*CRC"):
        formats.read_npz(path)


def test_npz_object_array(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, good=np.zeros(2), w=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(
        FormatError, match=r"member 'w.npy': holds Python objects \(dtype object\).*unpickling"
    ):
        formats.read_tensors(path)


@pytest.mark.parametrize(
    "array, shown",
    [
        (np.zeros(2, np.complex128), "complex128"),
        (np.array(["ab", "c"]), "<U2"),
        (np.zeros(2, "S3"), "|S3"),
        (np.zeros(2, "m8[s]"), "timedelta64"),
    ],
)
def test_npz_unsupported_member_dtype(tmp_path, array, shown):
    path = tmp_path / "u.npz"
    np.savez(path, w=array)
    with pytest.raises(
        FormatError, match=rf"member 'w.npy': unsupported dtype .*{shown}.*supported: float64"
    ):
        formats.read_npz(path)


def test_npz_bfloat16_saved_by_numpy_gets_a_hint(tmp_path):
    path = tmp_path / "bf.npz"
    np.savez(path, w=np.zeros(2, ml_dtypes.bfloat16))
    with pytest.raises(
        FormatError, match=r"unsupported dtype \|V2.*bfloat16/float8 - use \.safetensors"
    ):
        formats.read_npz(path)


def test_empty_npz(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path)
    assert formats.read_npz(path) == {}
