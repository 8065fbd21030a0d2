"""One owner per list (issue #12): the names of ops, activations, compute dtypes, bag modes,
residual kinds and bits, and the page format's numbers are written once, in the engine
(cython/c/st_names.h, cython/c/st_page.h); the Python modules use the engine's exports.
Where something is still written twice (a struct layout in Python's struct format and in
C), this checks that the two agree."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from sqlite_tensor import _engine, dtypes, layers, pages, residuals

ROOT = Path(__file__).resolve().parent.parent


def test_python_modules_use_the_engine_lists():
    assert layers.OPS is _engine.LAYER_OPS
    assert layers.ACTIVATIONS is _engine.ACTIVATIONS
    assert layers.BAG_MODES is _engine.BAG_MODES
    assert layers.COMPUTE_DTYPES is _engine.COMPUTE_DTYPES
    assert residuals.BITS is _engine.RESIDUAL_BITS
    assert residuals.KINDS == _engine.RESIDUAL_KINDS
    kinds = (
        residuals.LOWRANK,
        residuals.QUANTIZED,
        residuals.SIGN,
        residuals.SPARSE,
        residuals.SIGN_SPARSE,
    )
    assert kinds == (
        _engine.RESIDUAL_LOWRANK,
        _engine.RESIDUAL_QUANTIZED,
        _engine.RESIDUAL_SIGN,
        _engine.RESIDUAL_SPARSE,
        _engine.RESIDUAL_SIGN_SPARSE,
    )
    assert set(residuals.KINDS) == set(kinds)
    assert residuals.SIGN_SCALES == _engine.RESIDUAL_SIGN_SCALES
    assert set(residuals.SIGN_SCALES) == {residuals.SIGN_TILE, residuals.SIGN_ROW}
    assert residuals.sparse_cap is _engine.residual_sparse_cap
    fmt = _engine.PAGE_FORMAT
    assert (
        pages.MAGIC,
        pages.VERSION,
        pages.V1_HEADER_BYTES,
        pages.HEADER_BYTES,
        pages.CHECKSUM_AT,
        pages.SLOT_BYTES,
        pages.ALIGN,
    ) == (
        fmt["magic"],
        fmt["version"],
        fmt["v1_header_bytes"],
        fmt["header_bytes"],
        fmt["checksum_at"],
        fmt["slot_bytes"],
        fmt["align"],
    )


@pytest.mark.parametrize(
    "module,literals",
    [
        ("layers.py", ['"relu"', '"sigmoid"', '"softmax"', '"bfloat16"', '("sum", "mean")']),
        ("residuals.py", ['"low-rank"', "(2, 4, 8)", '"sign+sparse"', '"tile"', '"row"']),
        ("pages.py", ['b"STPG"', "HEADER_BYTES = 24", "SLOT_BYTES = 16"]),
    ],
)
def test_lists_not_typed_again(module, literals):
    """The modules do not restate a list the engine owns (a second copy could drift)."""
    code = (ROOT / "sqlite_tensor" / module).read_text()
    code = re.sub(r'"""[\s\S]*?"""', "", code)  # docstrings may describe the lists
    code = "\n".join(line.split("#")[0] for line in code.splitlines())
    for lit in literals:
        assert lit not in code, f"{module} types {lit} again; take it from _engine"


@pytest.mark.parametrize(
    "kind,names",
    [
        ("op", "LAYER_OPS"),
        ("activation", "ACTIVATIONS"),
        ("dtype", "COMPUTE_DTYPES"),
        ("bag_mode", "BAG_MODES"),
    ],
)
def test_list_order_is_the_engine_code(kind, names):
    """Each exported list is indexed by the code the plan loader gives the name."""
    for code, name in enumerate(getattr(_engine, names)):
        assert _engine._name_code(kind, name) == code, (kind, name)
    assert _engine._name_code(kind, "no-such-name") == -1


def test_residual_bits_are_what_the_reader_accepts():
    for bits in range(0, 17):
        assert _engine._name_code("residual_bits", str(bits)) == (bits in residuals.BITS)


def test_compute_dtypes_are_stored_dtypes_of_known_width():
    assert set(layers.COMPUTE_DTYPES) <= set(dtypes.NAMES)
    # the engine refuses a tensor whose bytes make another item size (check_tensor_info)
    assert {dtypes.numpy_dtype(n).itemsize for n in dtypes.NAMES} <= {1, 2, 4, 8}


def test_page_struct_layouts_agree_with_the_engine():
    fmt = _engine.PAGE_FORMAT
    assert pages._HEADER.size == fmt["v1_header_bytes"] == fmt["checksum_at"]
    assert pages._HEADER.size + pages._CHECKSUM.size == fmt["header_bytes"]
    assert pages._SLOT.size == fmt["slot_bytes"]
    assert struct.unpack("<I", fmt["magic"])[0] == 0x47505453
    assert fmt["align"] & (fmt["align"] - 1) == 0
    # a page the writer makes carries the engine's numbers where the engine reads them
    page = pages.build_page([np.arange(10, dtype=np.float32), np.arange(3, dtype=np.int8)])
    pages.seal(page, 5)
    magic, version, nslots, start = struct.unpack_from("<4sIII", page, 0)
    assert (magic, version, nslots) == (fmt["magic"], fmt["version"], 2)
    assert start % fmt["align"] == 0
    stored = struct.unpack_from("<Q", page, fmt["checksum_at"])[0]
    assert stored == _engine.page_checksum(bytes(page), 5)
    offset, nbytes = struct.unpack_from("<QQ", page, fmt["header_bytes"] + fmt["slot_bytes"])
    assert nbytes == 3 and offset % fmt["align"] == 0


# The checksum's known answers; tests/c/test_st_page.c asserts the same numbers against the
# C function directly, so the C unit and the value Python writes are one function.
KNOWN = [
    (0, 0, 0x033A41D49818249B),
    (5, 1, 0x3EAFA7E3CAE7E271),
    (24, 42, 0x7E1250BA56EB94D5),
    (31, 42, 0x9DEA6B184CD8054C),
    (32, 42, 0xD851B33E5102D3C9),
    (100, 42, 0x2ECE41C5B3A431D1),
    (4096, 123456789, 0x47D571B2EE8E05BF),
]


@pytest.mark.parametrize("n,page_id,want", KNOWN)
def test_page_checksum_known_values(n, page_id, want):
    data = bytes((i * 7 + 3) & 0xFF for i in range(n))
    assert _engine.page_checksum(data, page_id) == want


def test_page_checksum_constants_match_the_c_test():
    c_test = (ROOT / "tests" / "c" / "test_st_page.c").read_text()
    found = {
        (int(n), int(p), int(h, 16))
        for n, p, h in re.findall(r"\{(\d+), (\d+), 0x([0-9a-f]+)ULL\}", c_test)
    }
    assert found == set(KNOWN)


# Every name sqlite_tensor._engine offered before the split of engine.pyx (issue #12).
ENGINE_API = {
    "EngineError",
    "PLAN_CACHE_SIZE",
    "_CachedPlan",
    "_fork_pool_skipped",
    "_ids",
    "_kernel_workers",
    "_page_memory_configure",
    "_page_memory_stats",
    "_plans",
    "_set_page_checks",
    "cache_clear",
    "cache_configure",
    "cache_policies",
    "cache_record",
    "cache_simulate",
    "cache_stats",
    "cache_trace",
    "effective_threads",
    "get_threads",
    "page_checksum",
    "predict",
    "read_tensor_into",
    "set_threads",
    "shadow_parts",
    "store_needs_upgrade",
    "upgrade_store",
    "version",
}


def test_engine_python_names_kept():
    assert ENGINE_API <= set(dir(_engine))
