"""Page packing (sqlite_tensor.packing): which blocks share a page.

- Every strategy gives a valid packing and respects the lower bounds, on random groups.
- The paper's strategies on hand-worked examples (naive, greedy, classes, two-stage).
- exact against the heuristics on small instances: nothing with as few pages reads less
  than exact, and the default reads at most one page more.
- The model-family figures: two-stage within 2 % of the page bound and 4 % of the read bound;
  affinity on the bound exactly, reading less than two-stage.
- Determinism, evaluate()'s figures, bad input, and 100,000 blocks in 200 groups in time.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlite_tensor import packing
from sqlite_tensor.packing import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    evaluate,
    lower_bounds,
    pack,
    validate,
)
from sqlite_tensor.testing.workloads import family_instance

HEURISTICS = [s for s in STRATEGIES if s != "exact"]
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(pages, groups, capacity):
    """The packing's figures, after checking it independently of packing.validate."""
    flat = [b for page in pages for b in page]
    assert sorted(flat) == sorted(set().union(*map(set, groups.values())))  # each block once
    assert all(0 < len(page) <= capacity for page in pages)
    result = evaluate(pages, groups, capacity)
    bounds = lower_bounds(groups, capacity)
    assert result["total_pages"] == len(pages) >= bounds["total"] == result["lower_bound"]
    page_of = {b: i for i, page in enumerate(pages) for b in page}
    for name, blocks in groups.items():
        reads = len({page_of[b] for b in blocks})
        g = result["groups"][name]
        assert (
            g["pages"]
            == reads
            >= g["bound"]
            == bounds["groups"][name]
            == math.ceil(len(set(blocks)) / capacity)
        )
        assert g["amplification"] == reads / g["bound"]
    assert result["total_reads"] == sum(g["pages"] for g in result["groups"].values())
    assert result["mean_amplification"] == pytest.approx(
        np.mean([g["amplification"] for g in result["groups"].values()])
    )
    assert result["overhead"] == pytest.approx(result["mean_amplification"] - 1)
    return result


def groups_strategy(max_block: int, max_groups: int):
    block_sets = st.sets(st.integers(0, max_block), min_size=1, max_size=max_block + 1)
    return st.lists(block_sets, min_size=1, max_size=max_groups).map(
        lambda sets: {f"g{i}": s for i, s in enumerate(sets)}
    )


# -- validity and bounds -----------------------------------------------------------------------


@HYP
@given(
    groups=groups_strategy(60, 6),
    capacity=st.integers(1, 9),
    offset=st.sampled_from([0, -(2**63), 2**63 - 61, 10**12]),
)
def test_every_strategy_packs_validly(groups, capacity, offset):
    groups = {name: {b + offset for b in blocks} for name, blocks in groups.items()}
    n = len(set().union(*groups.values()))
    for strategy in HEURISTICS + (["exact"] if n <= 12 else []):
        pages = pack(groups, capacity, strategy)
        check(pages, groups, capacity)
        validate(pages, groups, capacity)
    # the strategies that fill pages reach the total bound exactly
    assert len(pack(groups, capacity, "affinity")) == math.ceil(n / capacity)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_edge_instances(strategy):
    for groups, capacity in [
        ({"a": [7]}, 1),
        ({"a": [7]}, 5),
        ({"a": [1, 2, 3], "b": [1, 2, 3]}, 3),
        ({"a": [1, 2], "b": [3, 4]}, 1),
        ({"a": range(10), "b": range(5, 15)}, 100),
    ]:
        check(pack(groups, capacity, strategy), groups, capacity)


# -- the paper's strategies, by hand -----------------------------------------------------------

# three groups; classes: {1..5}: a,b,c  {6,7,8}: a,b  {9}: a  {10,11}: b  {12..14}: c
PAPER = {
    "a": [1, 2, 3, 4, 5, 6, 7, 8, 9],
    "b": [1, 2, 3, 4, 5, 6, 7, 8, 10, 11],
    "c": [1, 2, 3, 4, 5, 12, 13, 14],
}
CLASSES = [[1, 2, 3, 4, 5], [6, 7, 8], [9], [10, 11], [12, 13, 14]]


def test_naive_fills_fresh_pages_group_by_group_in_the_given_order():
    assert pack(PAPER, 4, "naive") == [[1, 2, 3, 4], [5, 6, 7, 8], [9], [10, 11], [12, 13, 14]]
    reordered = {"c": PAPER["c"], "a": PAPER["a"], "b": PAPER["b"]}
    assert pack(reordered, 4, "naive") == [[1, 2, 3, 4], [5, 12, 13, 14], [6, 7, 8, 9], [10, 11]]


def test_greedy_takes_the_largest_group_first_and_blocks_by_use():
    # b (10 blocks) first: 1-5 (used by 3) then 6-8 (by 2) then 10, 11; then a's 9; then c's
    assert pack(PAPER, 4, "greedy") == [[1, 2, 3, 4], [5, 6, 7, 8], [10, 11], [9], [12, 13, 14]]
    # ties between groups of one size go by name, whatever the order given
    tie = {"z": [1, 2], "y": [3, 4]}
    assert pack(tie, 2, "greedy") == [[3, 4], [1, 2]]


@pytest.mark.parametrize("capacity", [1, 2, 3, 4, 6])
def test_classes_gives_each_class_its_own_pages(capacity):
    pages = pack(PAPER, capacity, "classes")
    assert len(pages) == sum(math.ceil(len(c) / capacity) for c in CLASSES)
    for cls in CLASSES:
        mine = [p for p in pages if set(p) & set(cls)]
        assert len(mine) == math.ceil(len(cls) / capacity) and all(set(p) <= set(cls) for p in mine)
    check(pages, PAPER, capacity)


@pytest.mark.parametrize("capacity", [2, 3, 4])
def test_two_stage_full_class_pages_then_greedy_leftovers(capacity):
    pages = pack(PAPER, capacity, "two-stage")
    full = [p for p in pages if any(set(p) <= set(c) for c in CLASSES) and len(p) == capacity]
    for cls in CLASSES:
        assert sum(set(p) <= set(cls) for p in full) >= len(cls) // capacity
    if capacity == 4:
        # stage 1: [1,2,3,4]; leftovers 5 | 6,7,8 | 9 | 10,11 | 12,13,14 by greedy (b first)
        assert pages == [[1, 2, 3, 4], [5, 6, 7, 8], [10, 11], [9], [12, 13, 14]]
    check(pages, PAPER, capacity)


def test_lower_bounds():
    assert lower_bounds(PAPER, 4) == {"total": 4, "groups": {"a": 3, "b": 3, "c": 2}}
    assert lower_bounds({"x": {5, 6}}, 1) == {"total": 2, "groups": {"x": 2}}


def test_evaluate_figures():
    pages = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14]]
    r = evaluate(pages, PAPER, 4)
    assert r["total_pages"] == 4 and r["lower_bound"] == 4
    assert r["groups"] == {
        "a": {"pages": 3, "bound": 3, "amplification": 1.0},
        "b": {"pages": 3, "bound": 3, "amplification": 1.0},
        "c": {"pages": 4, "bound": 2, "amplification": 2.0},
    }
    assert r["total_reads"] == 10
    assert r["mean_amplification"] == pytest.approx(4 / 3)
    assert r["overhead"] == pytest.approx(1 / 3)


# -- exact against the heuristics --------------------------------------------------------------


def against_exact(groups, capacity):
    exact = check(pack(groups, capacity, "exact"), groups, capacity)
    assert exact["total_pages"] == exact["lower_bound"]
    for strategy in HEURISTICS:
        r = check(pack(groups, capacity, strategy), groups, capacity)
        if r["total_pages"] == exact["total_pages"]:  # with more pages, fewer reads can be had
            assert r["total_reads"] >= exact["total_reads"], strategy
    default = check(pack(groups, capacity), groups, capacity)
    assert default["total_pages"] == exact["total_pages"]
    assert default["total_reads"] <= exact["total_reads"] + 1
    return exact, default


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=groups_strategy(15, 4), capacity=st.integers(1, 6))
def test_exact_is_never_beaten_and_the_default_is_close(groups, capacity):
    against_exact(groups, capacity)


def random_groups(seed, n, n_groups):
    rng = np.random.default_rng(seed)
    groups = {
        f"g{i}": rng.choice(n, int(rng.integers(1, n + 1)), replace=False).tolist()
        for i in range(n_groups)
    }
    groups["g0"] = list(set(groups["g0"]) | set(range(n)) - set().union(*map(set, groups.values())))
    return groups


@pytest.mark.parametrize(
    "seed, n, n_groups, capacity",
    [(1, 30, 3, 4), (2, 34, 3, 5), (3, 36, 4, 6), (4, 40, 2, 3), (5, 40, 3, 8), (6, 32, 4, 2)],
)
def test_exact_on_30_to_40_blocks(seed, n, n_groups, capacity):
    groups = random_groups(seed, n, n_groups)
    assert len(set().union(*map(set, groups.values()))) == n
    against_exact(groups, capacity)


def test_exact_on_a_small_family():
    # four models: a shared base, two pairs, private blocks; 33 blocks in all
    groups = {
        f"m{i}": set(range(9))
        | set(range(9 + 5 * (i // 2), 14 + 5 * (i // 2)))
        | set(range(19 + 5 * i, 19 + 5 * i + 3 + (i % 2)))
        for i in range(4)
    }
    exact, default = against_exact(groups, 4)
    assert exact["total_reads"] >= sum(lower_bounds(groups, 4)["groups"].values())


def test_exact_refuses_big_instances_and_needs_scipy(monkeypatch):
    with pytest.raises(ValueError, match=r"41 distinct blocks, more than 40"):
        pack({"a": range(41)}, 4, "exact")
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(ImportError, match="exact' needs scipy"):
        pack({"a": range(10), "b": range(5, 12)}, 4, "exact")
    pack({"a": range(10), "b": range(5, 12)}, 4, "affinity")  # the others do not


# -- families ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("capacity", [4, 8, 16])
def test_model_family_figures(seed, capacity):
    groups = family_instance(12, 2000, 0.75, seed=seed)
    two = check(pack(groups, capacity, "two-stage"), groups, capacity)
    assert two["total_pages"] <= 1.02 * two["lower_bound"]
    assert two["mean_amplification"] <= 1.04
    ours = check(pack(groups, capacity, "affinity"), groups, capacity)
    assert ours["total_pages"] == ours["lower_bound"] < two["total_pages"]
    assert ours["total_reads"] < two["total_reads"]
    assert ours["overhead"] <= 0.75 * two["overhead"]


@pytest.mark.parametrize("capacity", [4, 8, 16])
def test_tensor_family_figures(capacity):
    groups = family_instance(12, 2000, 0.75, seed=0, by="tensor")
    assert len(groups) == 48 and "m11/t3" in groups
    two = check(pack(groups, capacity, "two-stage"), groups, capacity)
    ours = check(pack(groups, capacity, "affinity"), groups, capacity)
    assert ours["total_pages"] == ours["lower_bound"] < two["total_pages"]
    assert ours["total_reads"] < two["total_reads"]
    assert ours["overhead"] < two["overhead"]


def test_family_instance():
    a = family_instance(12, 500, 0.6, seed=3)
    assert a == family_instance(12, 500, 0.6, seed=3) != family_instance(12, 500, 0.6, seed=4)
    assert list(a) == [f"m{i}" for i in range(12)]
    base = set.intersection(*a.values())
    assert 0.2 * 500 < len(base) < 0.4 * 500  # 30 % +- 20 % of a model
    assert all(len(s - set().union(*(t for k, t in a.items() if k != n))) for n, s in a.items())
    ids = sorted(set().union(*a.values()))
    assert ids == list(range(len(ids)))  # numbered as ingest does
    (only,) = family_instance(1, 10, 0.0).values()  # private blocks only
    assert only == set(range(len(only))) and 8 <= len(only) <= 12
    with pytest.raises(ValueError, match="by must be"):
        family_instance(by="layer")
    with pytest.raises(ValueError, match="shared"):
        family_instance(shared=1.5)
    with pytest.raises(ValueError, match="models"):
        family_instance(models=0)


def test_determinism():
    groups = family_instance(8, 400, 0.7, seed=5, by="tensor")
    shuffled = {name: sorted(groups[name], reverse=True) for name in reversed(list(groups))}
    for strategy in HEURISTICS:
        first = pack(groups, 8, strategy)
        assert pack(groups, 8, strategy) == first
        if strategy != "naive":  # naive follows the order the groups are given in, by design
            assert pack(shuffled, 8, strategy) == first, strategy
    small = {"a": [3, 1, 2, 9], "b": {2, 3, 4}, "c": (9, 10)}
    assert pack(small, 2, "exact") == pack(small, 2, "exact")
    assert pack({"a": np.array([5, 1, 1, 3])}, 2) == pack({"a": [1, 3, 5]}, 2)


def test_100000_blocks_in_200_groups_in_time():
    groups = family_instance(200, 1500, 0.75, seed=0)
    n = len(set().union(*groups.values()))
    assert len(groups) == 200 and n > 100_000
    start = time.perf_counter()
    pages = pack(groups, 16)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"{DEFAULT_STRATEGY} took {elapsed:.1f} s"
    assert len(pages) == math.ceil(n / 16)
    start = time.perf_counter()
    pack(groups, 16, "two-stage")
    assert time.perf_counter() - start < 30


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "groups, error, message",
    [
        ({}, ValueError, "groups is empty"),
        ([[1, 2]], TypeError, "mapping"),
        ({"a": [1], "empty": []}, ValueError, "group 'empty' has no blocks"),
        ({"a": set()}, ValueError, "group 'a' has no blocks"),
        ({"a": 5}, TypeError, "group 'a' must be an iterable"),
        ({"a": "123"}, TypeError, "group 'a' must be an iterable"),
        ({"a": [1, 2.5]}, TypeError, r"integers: group 'a' holds 2.5 \(float\)"),
        ({"a": [1.0]}, TypeError, r"holds 1.0"),
        ({"a": [1, "x"]}, TypeError, r"holds 'x'"),
        ({"a": [1, True]}, TypeError, r"holds True"),
        ({"a": [None]}, TypeError, r"holds None"),
        ({"a": np.array([1.5])}, TypeError, r"holds 1.5"),
        ({"a": np.array([True])}, TypeError, r"holds True"),
        ({"a": [1, 2**64]}, ValueError, r"64 bits: group 'a' holds 18446744073709551616"),
        ({"a": np.array([2**64 - 1], np.uint64)}, ValueError, "64 bits"),
    ],
)
def test_bad_groups(groups, error, message):
    for call in (
        lambda: pack(groups, 4),
        lambda: lower_bounds(groups, 4),
        lambda: evaluate([[1]], groups, 4),
    ):
        with pytest.raises(error, match=message):
            call()


@pytest.mark.parametrize(
    "capacity, error",
    [
        (0, ValueError),
        (-3, ValueError),
        (2.0, TypeError),
        ("4", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_capacity(capacity, error):
    with pytest.raises(error, match=r"capacity must be"):
        pack({"a": [1]}, capacity)
    with pytest.raises(error, match=r"capacity must be"):
        lower_bounds({"a": [1]}, capacity)
    assert pack({"a": [1, 2, 3]}, np.int64(2)) == [[1, 2], [3]]


def test_unknown_strategy():
    with pytest.raises(
        ValueError,
        match="unknown packing strategy 'best'; strategies are naive, greedy,"
        " classes, two-stage, affinity, exact",
    ):
        pack({"a": [1]}, 4, "best")


@pytest.mark.parametrize(
    "pages, message",
    [
        ([[1, 2, 3], [4, 5]], "page 0 holds 3 blocks, over the capacity of 2"),
        ([[1, 2], [2, 3], [4, 5]], r"block 2 is on more than one page \(pages \[0, 1\]\)"),
        ([[1, 2], [3, 4]], "block 5 of group 'b' is on no page"),
        ([[1, 2], [3, 4], [5, 99]], "block 99 on page 2 is in no group"),
        ([[1, 2], [], [3, 4], [5]], "page 1 is empty"),
        ([], "no pages"),
    ],
)
def test_validate_names_the_problem(pages, message):
    groups = {"a": [1, 2, 3], "b": [3, 4, 5]}
    with pytest.raises(ValueError, match=message):
        validate(pages, groups, 2)
    with pytest.raises(ValueError, match=message):
        evaluate(pages, groups, 2)


def test_validate_types():
    groups = {"a": [1, 2]}
    with pytest.raises(TypeError, match="page 0 holds 1.5"):
        validate([[1.5, 2]], groups, 2)
    with pytest.raises(TypeError, match="page 1 must be a list"):
        validate([[1], 2], groups, 2)
    with pytest.raises(TypeError, match="pages must be a list"):
        validate(7, groups, 2)
    validate([np.array([2, 1])], groups, 2)
    assert packing.EXACT_MAX_BLOCKS == 40 and DEFAULT_STRATEGY in STRATEGIES
