"""Named policy parameters: listed with their defaults, settable from Python and SQL,
checked with messages naming the parameter, the value and the range, and with a
measurable effect; the registry and docs/cache.md list the same policies and parameters."""

from __future__ import annotations

import re
from pathlib import Path

import apsw
import numpy as np
import pytest

import sqlite_tensor
from sqlite_tensor import _engine, cache
from sqlite_tensor.testing.workloads import family_trace

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cache.md"

# The papers' values, which every figure of docs/cache.md was measured with.
DEFAULTS = {
    "admit-lfu": {"aging_window": 100000},
    "lfu": {"aging_window": 100000},
    "2q": {"kin_fraction": 0.25, "kout_fraction": 0.5},
    "s3fifo": {"small_fraction": 0.1, "ghost_fraction": 0.9, "max_freq": 3, "move_threshold": 1},
}


@pytest.fixture
def pool():
    """The process pool back to its default policy (with its defaults) and settings."""
    before = cache.stats()
    yield
    cache.configure(policy="lru")  # away and back: the default's own defaults again
    cache.configure(
        policy=cache.DEFAULT_POLICY,
        budget_bytes=before["budget_bytes"],
        aging_window=before["aging_window"],
    )
    cache.clear()


def unit_pages(trace):
    return {int(p): (1, 1) for p in np.unique(trace)}


def test_every_policy_lists_its_parameters_with_defaults():
    table = cache.parameters()
    assert list(table) == cache.policies(simulation=True)
    for policy, params in table.items():
        assert {name: spec["default"] for name, spec in params.items()} == DEFAULTS.get(
            policy, {}
        ), policy
        for name, spec in params.items():
            assert set(spec) == {"default", "min", "max", "integer", "doc"}
            assert spec["min"] <= spec["default"] <= spec["max"], (policy, name)
            assert spec["doc"]
            if spec["integer"]:
                assert all(isinstance(spec[k], int) for k in ("default", "min", "max"))
    assert cache.parameters("s3fifo") == table["s3fifo"]
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        cache.parameters("nope")


def test_defaults_given_explicitly_change_nothing():
    trace, pages = family_trace(requests=150, seed=3)
    budget = sum(b for b, _ in pages.values()) // 3
    for policy in cache.policies(simulation=True):
        plain = cache.simulate(trace, pages, policy, budget)
        explicit = cache.simulate(trace, pages, policy, budget, params=DEFAULTS.get(policy, {}))
        assert plain == explicit, policy
        assert plain["params"] == DEFAULTS.get(policy, {})


def hot_and_scan(hot=5, cold=100):
    """Each hot page read twice, `hot` cold pages that fill a budget of 2 * hot, then more
    cold pages read once each, all the hot pages after each."""
    trace = [h for h in range(hot) for _ in (0, 1)] + [500 + c for c in range(hot)]
    for c in range(cold):
        trace += [1000 + c] + list(range(hot))
    return np.array(trace, np.int64)


def test_s3fifo_small_fraction_and_move_threshold_decide_who_survives_a_scan():
    """Budget 10 unit pages. With S a tenth (one page), the hot pages (used once while in
    S) move to M when S first overflows and stay there: the scan passes through S, and
    every hot read but the first of each page hits (5 + 100 * 5). With S the whole budget,
    S never overflows, so evictions come from M: the hot pages go and misses follow. With
    move_threshold 2 a hot page (used once while in S) is not promoted: it is evicted."""
    trace = hot_and_scan()
    pages = unit_pages(trace)
    small = cache.simulate(trace, pages, "s3fifo", 10)
    assert small["hits"] == 5 + 100 * 5
    whole = cache.simulate(trace, pages, "s3fifo", 10, params={"small_fraction": 1.0})
    assert whole["hits"] < small["hits"]
    strict = cache.simulate(trace, pages, "s3fifo", 10, params={"move_threshold": 2})
    assert strict["hits"] < small["hits"]


def test_s3fifo_ghost_fraction_and_2q_fractions_change_behaviour():
    trace, pages = family_trace(requests=300, seed=1)
    budget = sum(b for b, _ in pages.values()) // 3
    hits = {
        f: cache.simulate(trace, pages, "s3fifo", budget, params={"small_fraction": f})["hits"]
        for f in (0.01, 0.1, 0.3)
    }
    assert len(set(hits.values())) == 3, hits
    no_ghosts = cache.simulate(trace, pages, "s3fifo", budget, params={"ghost_fraction": 0})
    assert no_ghosts["hits"] != cache.simulate(trace, pages, "s3fifo", budget)["hits"]
    twoq = {
        f: cache.simulate(trace, pages, "2q", budget, params={"kin_fraction": f})["hits"]
        for f in (0.05, 0.25, 0.75)
    }
    assert len(set(twoq.values())) == 3, twoq


def test_2q_kout_zero_keeps_one_ghost_and_large_kout_more():
    """A1out is at least one page; a page evicted from A1in and read again while it is a
    ghost goes to Am. Unit pages, budget 4 (A1in a quarter: one page)."""
    trace = np.array([1, 2, 3, 4, 5, 1, 6, 2, 7, 3, 1, 2, 3], np.int64)
    pages = unit_pages(trace)
    few = cache.simulate(trace, pages, "2q", 4, params={"kout_fraction": 0})
    many = cache.simulate(trace, pages, "2q", 4, params={"kout_fraction": 10})
    assert many["hits"] > few["hits"]


def test_aging_window_as_a_parameter_is_the_aging_window():
    trace = [0] * 8 + [1] * 12
    pages = unit_pages(trace)
    by_kwarg = cache.simulate(trace, pages, "admit-lfu", 1, aging_window=4)
    by_param = cache.simulate(trace, pages, "admit-lfu", 1, params={"aging_window": 4})
    assert by_kwarg == by_param
    assert by_param["misses"] != cache.simulate(trace, pages, "admit-lfu", 1)["misses"]
    with pytest.raises(ValueError, match=r"aging_window given twice"):
        cache.simulate(trace, pages, "lfu", 1, aging_window=5, params={"aging_window": 4})


def test_configure_sets_keeps_and_resets_parameters(pool):
    s = cache.configure(policy="s3fifo", params={"small_fraction": 0.2})
    assert s["params"] == dict(DEFAULTS["s3fifo"], small_fraction=0.2)
    s = cache.configure(params={"max_freq": 7})  # the policy in force
    assert s["params"] == dict(DEFAULTS["s3fifo"], small_fraction=0.2, max_freq=7)
    assert cache.configure(policy="s3fifo")["params"]["max_freq"] == 7  # already in force
    assert cache.configure(policy="lru")["params"] == {}
    assert cache.configure(policy="s3fifo")["params"] == DEFAULTS["s3fifo"]
    s = cache.configure(policy="lfu", params={"aging_window": 777})
    assert s["aging_window"] == 777 and s["params"] == {"aging_window": 777}
    assert cache.configure(policy="2q")["aging_window"] == 777  # the pool's, kept


def test_changing_a_parameter_drops_the_pages_and_serves_right(pool, db_path, rng):
    arrays = {"w": rng.standard_normal((40, 30)).astype(np.float32)}
    layers = [{"op": "dense", "weight": "w"}]
    x = rng.standard_normal(30).astype(np.float32)
    with sqlite_tensor.Store(db_path, block_rows=8, block_cols=8, page_blocks=2) as store:
        store.add_model("m", arrays, layers=layers)
        cache.configure(policy="2q", budget_bytes=10**7)
        want = store.predict("m", x)
        assert cache.stats()["pages"] > 0
        cache.configure(params={"kin_fraction": 0.5})
        assert cache.stats()["pages"] == 0
        np.testing.assert_array_equal(store.predict("m", x), want)
        assert cache.stats()["pages"] > 0
        cache.configure(params={"kin_fraction": 0.5})  # the same value: nothing to drop
        assert cache.stats()["pages"] > 0


@pytest.mark.parametrize("policy", ["lfu", "admit-lfu"])
def test_a_wider_aging_window_with_pages_resident_evicts_soundly(pool, db_path, rng, policy):
    # Pages counted under a narrow window carry epochs ahead of what a wider one computes
    # now; their counts must read as they are (a negative shift is undefined behaviour:
    # UBSan's asan-test run caught it), and eviction must still serve right answers.
    arrays = {"w": rng.standard_normal((64, 48)).astype(np.float32)}
    layers = [{"op": "dense", "weight": "w"}]
    x = rng.standard_normal(48).astype(np.float32)
    with sqlite_tensor.Store(db_path, block_rows=8, block_cols=8, page_blocks=2) as store:
        store.add_model("m", arrays, layers=layers)
        cache.configure(policy=policy, budget_bytes=10**7, aging_window=2)
        want = store.predict("m", x)
        for _ in range(20):
            store.predict("m", x)
        assert cache.stats()["pages"] > 1
        cache.configure(aging_window=10**6)  # wider: every resident page's epoch is ahead
        cache.configure(budget_bytes=2 * 8 * 8 * 4 * 2)  # evicts by the aged counts
        np.testing.assert_array_equal(store.predict("m", x), want)


@pytest.mark.parametrize(
    "policy, params, error, message",
    [
        (
            "s3fifo",
            {"small_fraction": 1.5},
            ValueError,
            r"^s3fifo's small_fraction must be a number between 0 and 1, got 1\.5$",
        ),
        ("s3fifo", {"small_fraction": -0.1}, ValueError, r"between 0 and 1, got -0\.1"),
        ("s3fifo", {"small_fraction": float("nan")}, ValueError, r"small_fraction .* got nan"),
        (
            "s3fifo",
            {"max_freq": 2.5},
            ValueError,
            r"^s3fifo's max_freq must be a whole number between 1 and 1000, got 2\.5$",
        ),
        (
            "s3fifo",
            {"max_freq": 0},
            ValueError,
            r"max_freq must be a whole number between 1 and 1000, got 0",
        ),
        (
            "s3fifo",
            {"smal_fraction": 0.2},
            ValueError,
            r"^policy 's3fifo' has no parameter 'smal_fraction'; its parameters are small_fraction, "
            r"ghost_fraction, max_freq, move_threshold$",
        ),
        (
            "2q",
            {"kin_fraction": 2},
            ValueError,
            r"^2q's kin_fraction must be a number between 0 and 1, got 2$",
        ),
        ("lru", {"x": 1}, ValueError, r"^policy 'lru' has no parameters, got 'x'$"),
        (
            "lfu",
            {"aging_window": 0},
            ValueError,
            r"lfu's aging_window must be a whole number between 1 and",
        ),
        (
            "s3fifo",
            {"small_fraction": "0.2"},
            TypeError,
            r"s3fifo's small_fraction must be a number, got '0\.2'",
        ),
        (
            "s3fifo",
            {"small_fraction": True},
            TypeError,
            r"small_fraction must be a number, got True",
        ),
        ("s3fifo", [("small_fraction", 0.2)], TypeError, r"params must be a dict .* got list"),
        ("s3fifo", {1: 0.2}, TypeError, r"parameter names are strings, got 1"),
    ],
)
def test_bad_parameters_are_refused_and_change_nothing(pool, policy, params, error, message):
    cache.configure(policy="sieve", budget_bytes=123456)
    before = cache.stats()
    with pytest.raises(error, match=message):
        cache.configure(policy=policy, params=params, budget_bytes=999)
    after = cache.stats()
    assert (after["policy"], after["budget_bytes"], after["params"]) == ("sieve", 123456, {})
    assert after == before
    with pytest.raises(error, match=message):
        cache.simulate([1, 2, 1], {1: (1, 1), 2: (1, 1)}, policy, 1, params=params)


def test_python_policy_has_no_parameters(pool):
    class Oldest:
        def victim(self, candidates):
            return candidates[0][0]

    with pytest.raises(ValueError, match="policy 'python' has no parameters, got 'k'"):
        cache.configure(policy=Oldest(), params={"k": 1})
    assert cache.stats()["policy"] == cache.DEFAULT_POLICY
    assert cache.configure(policy=Oldest(), params={})["params"] == {}


def one(db, sql, *args):
    return db.execute(sql, args).fetchall()[0][0]


def test_parameters_from_sql(pool, db):
    assert one(db, "SELECT tensor_cache('policy', 's3fifo')") == "s3fifo"
    assert (
        one(db, "SELECT tensor_cache('params')")
        == "small_fraction=0.1,ghost_fraction=0.9,max_freq=3,move_threshold=1"
    )
    assert (
        one(db, "SELECT tensor_cache('params', 'small_fraction=0.25,max_freq=5')")
        == "small_fraction=0.25,ghost_fraction=0.9,max_freq=5,move_threshold=1"
    )
    assert cache.stats()["params"] == dict(DEFAULTS["s3fifo"], small_fraction=0.25, max_freq=5)
    assert one(db, "SELECT tensor_cache('params', '')") == one(db, "SELECT tensor_cache('params')")
    one(db, "SELECT tensor_cache('policy', 'admit-lfu')")
    assert one(db, "SELECT tensor_cache('params', 'aging_window=5000')") == "aging_window=5000"
    assert cache.stats()["aging_window"] == 5000
    assert one(db, "SELECT tensor_cache('policy', 'lru')") == "lru"
    assert one(db, "SELECT tensor_cache('params')") == ""


@pytest.mark.parametrize(
    "policy, text, message",
    [
        (
            "s3fifo",
            "small_fraction=1.5",
            "tensor_cache: s3fifo's small_fraction must be a number between 0 and 1, got 1.5",
        ),
        (
            "s3fifo",
            "max_freq=0.5",
            "s3fifo's max_freq must be a whole number between 1 and 1000, got 0.5",
        ),
        ("s3fifo", "small_fraction=abc", "s3fifo's small_fraction must be a number, got 'abc'"),
        ("s3fifo", "small_fraction=0.2x", "s3fifo's small_fraction must be a number, got '0.2x'"),
        (
            "s3fifo",
            "small_fraction",
            "parameters are 'name=value,name=value', got 'small_fraction'",
        ),
        ("s3fifo", "=0.2", "parameters are 'name=value,name=value'"),
        (
            "s3fifo",
            "ghost_fraction=0.5,nope=1",
            "policy 's3fifo' has no parameter 'nope'; its "
            "parameters are small_fraction, ghost_fraction",
        ),
        ("lru", "x=1", "policy 'lru' has no parameters, got 'x'"),
    ],
)
def test_bad_parameters_from_sql(pool, db, policy, text, message):
    one(db, "SELECT tensor_cache('policy', ?)", policy)
    before = one(db, "SELECT tensor_cache('params')")
    with pytest.raises(apsw.SQLError) as info:
        one(db, "SELECT tensor_cache('params', ?)", text)
    assert message in str(info.value)
    assert one(db, "SELECT tensor_cache('params')") == before  # all checked before any is set
    with pytest.raises(
        apsw.SQLError, match="params must be text 'name=value,name=value', got an integer"
    ):
        one(db, "SELECT tensor_cache('params', 7)")


def documented_parameters() -> dict:
    """{policy: {parameter: default}} from the table under "### Policy parameters"."""
    text = DOCS.read_text().split("### Policy parameters", 1)[1].split("\n#", 1)[0]
    out: dict = {}
    for m in re.finditer(r"^\| `([\w-]+)` \| `(\w+)` \| ([\d.]+) \|", text, re.M):
        out.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
    return out


def documented_policies() -> list[str]:
    text = DOCS.read_text().split("## Policies", 1)[1].split("### Policy parameters", 1)[0]
    return re.findall(r"^\| `([\w-]+)`", text, re.M)


def test_registry_and_docs_list_the_same_policies_and_parameters():
    assert documented_policies() == cache.policies(simulation=True)
    registry = {
        policy: {name: float(spec["default"]) for name, spec in params.items()}
        for policy, params in cache.parameters().items()
        if params
    }
    assert documented_parameters() == registry
    text = DOCS.read_text().split("### Policy parameters", 1)[1].split("\n#", 1)[0]
    without = re.search(r"The other policies \(([^)]*)\) have none", text).group(1)
    assert sorted(re.findall(r"`([\w-]+)`", without)) == sorted(
        p for p, params in cache.parameters().items() if not params
    )


def test_the_registry_table_registers_and_each_refusal_has_a_message():
    """On a scratch registry filled by the same table: the table registers cleanly, and a
    name twice, a policy lacking a callback, too many parameters and too many policies
    are each refused with a message naming the policy."""
    got = _engine._cache_registry_refusals()
    assert got["table"] is None
    assert got["twice"] == "cannot register policy 'lru': the name is taken"
    assert got["incomplete"] == (
        "cannot register policy 'incomplete': it lacks one of init, "
        "free, insert, hit, remove, victim"
    )
    assert got["params"] == (
        "cannot register policy 'many': more than 8 parameters (ST_POOL_MAX_PARAMS)"
    )
    assert re.fullmatch(
        r"cannot register policy 'x\d+': the registry holds 32 policies "
        r"\(ST_POOL_MAX_POLICIES\)",
        got["full"],
    )
