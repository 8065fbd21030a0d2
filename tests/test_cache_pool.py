"""The serving buffer pool: configure / stats / clear / record, the budget, policy changes,
stale pages, bad settings, the SQL surface (tensor_cache, tensor_cache_stats,
tensor_cache_pages) from Python and from the stock sqlite3 shell, and a recorded serving
run replayed through simulate().

Models are a family in one store (3 x 5 blocks, two a page, so even small weights take
many pages): a base shared by every model, a layer shared within a group, a private head.
"""

from __future__ import annotations

import subprocess
import sys

import apsw
import numpy as np
import pytest
from conftest import SMALL, run_threads
from reference_model import assert_matches

import sqlite_tensor
from sqlite_tensor import cache
from sqlite_tensor.schema import Tables

# The compiled policies configure() takes by name ("python" is given as an object).
SERVING = [p for p in cache.policies() if p != "python"]
N_MODELS, N_GROUPS = 6, 2
LAYERS = [
    {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"},
    {"op": "dense", "weight": "w2", "activation": "tanh"},
    {"op": "dense", "weight": "head", "activation": "softmax"},
]
REQUESTS = [0, 0, 1, 0, 2, 3, 0, 1, 4, 5, 0, 2, 1, 0, 3]  # model per request, skewed to m0
BIG_WINDOW = 10**12  # an aging window no run here reaches: counts never halve


@pytest.fixture
def pool():
    """Leaves the process pool's policy, budget and aging window as they were, and empty."""
    before = cache.stats()
    cache.clear()
    yield
    policy = before["policy"] if before["policy"] in SERVING else cache.DEFAULT_POLICY
    cache.configure(
        policy=policy, budget_bytes=before["budget_bytes"], aging_window=before["aging_window"]
    )
    cache.clear()


def weight(rng, n_out, n_in):
    return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)


def family_arrays(rng, repeat_blocks=False):
    """{model name: arrays} of a family: w1/b1 shared by all, w2 within a group, head private.
    repeat_blocks: the first three block columns of w1 hold one value, so that its tiles are
    one deduplicated block that a layer reads again and again."""
    w1 = weight(rng, 18, 25)
    if repeat_blocks:
        w1[:, :15] = 0.25
    base = {"w1": w1, "b1": (rng.standard_normal(18) * 0.5).astype(np.float32)}
    groups = [weight(rng, 10, 18) for _ in range(N_GROUPS)]
    return {
        f"m{i}": dict(base, w2=groups[i % N_GROUPS], head=weight(rng, 4, 10))
        for i in range(N_MODELS)
    }


def build(path, rng, repeat_blocks=False):
    models = family_arrays(rng, repeat_blocks)
    with sqlite_tensor.Store(path, **SMALL) as store:
        for name, arrays in models.items():
            store.add_model(name, arrays, layers=LAYERS)
    return models


@pytest.fixture
def family(db_path, rng):
    """(store, models, inputs, page bytes by id): a family in a file store."""
    models = build(db_path, rng)
    store = sqlite_tensor.Store(db_path)
    x = rng.standard_normal((3, 25)).astype(np.float32)
    sizes = {p["page_id"]: p["bytes"] for p in store.page_stats()}
    yield store, models, x, sizes
    store.close()


def model_pages(store, model):
    t = Tables(store.name)
    return {
        r[0]
        for r in store.conn.execute(
            f"SELECT DISTINCT b.page_id FROM {t.blocks} b JOIN {t.map} m ON m.block_id = b.id"
            f" JOIN {t.tensors} tt ON tt.id = m.tensor_id JOIN {t.models} mo ON mo.id = tt.model_id"
            " WHERE mo.name = ?",
            (model,),
        )
    }


def serve(store, models, x, requests=REQUESTS, check=None):
    """Run the requests (a batch, then one row, alternately), checking every answer."""
    for k, i in enumerate(requests):
        name = f"m{i}"
        xi = x if k % 2 == 0 else x[k % len(x)]
        assert_matches(store.predict(name, xi), LAYERS, models[name], xi)
        if check is not None:
            check()


def resident_pages(conn):
    return conn.execute(
        "SELECT store_key, page_id, bytes, pins, accesses, last_access, shared,"
        " queue FROM tensor_cache_pages"
    ).fetchall()


def assert_counters_add_up(stats, accesses, sizes):
    """One thread, no writes, started from clear(): every access a hit or a miss; a miss
    reads one page, which is kept (until evicted, or still resident) or bypassed."""
    assert stats["hits"] + stats["misses"] == accesses, stats
    assert stats["misses"] - stats["bypassed"] == stats["evictions"] + stats["pages"], stats
    assert (
        stats["misses"] * min(sizes.values())
        <= stats["bytes_read"]
        <= stats["misses"] * max(sizes.values())
    ), stats


# -- every policy serves, within its budget -------------------------------------------------


def test_serving_policies():
    assert SERVING[0] == cache.DEFAULT_POLICY
    assert set(SERVING) == {
        "admit-lfu",
        "lru",
        "mru",
        "clock",
        "lfu",
        "lru2",
        "2q",
        "s3fifo",
        "sieve",
        "shared",
    }


@pytest.mark.parametrize("policy", SERVING)
@pytest.mark.parametrize("pages", [1, 4, 12])
def test_every_policy_serves_right_answers_within_its_budget(pool, family, policy, pages):
    store, models, x, sizes = family
    budget = pages * max(sizes.values())
    stats = cache.configure(policy=policy, budget_bytes=budget)
    assert (stats["policy"], stats["budget_bytes"]) == (policy, budget)
    cache.clear()

    def within_budget():
        s = cache.stats()
        assert s["resident_bytes"] <= budget, s
        assert s["pages"] * min(sizes.values()) <= budget, s

    with cache.record() as trace:
        serve(store, models, x, check=within_budget)
    stats = cache.stats()
    assert stats["policy"] == policy
    assert_counters_add_up(stats, len(trace.page_ids), sizes)
    assert stats["evictions"] + stats["bypassed"] > 0, stats  # the models do not fit
    if policy != "admit-lfu":
        assert stats["bypassed"] == 0, stats  # no admission
    assert stats["hit_ratio"] == stats["hits"] / (stats["hits"] + stats["misses"])
    rows = resident_pages(store.conn)
    assert len(rows) == stats["pages"]
    assert sum(r[2] for r in rows) == stats["resident_bytes"]
    assert all(r[3] == 0 for r in rows)  # nothing pinned between calls
    assert {r[1] for r in rows} <= set(sizes) and set(trace.page_ids) <= set(sizes)
    assert all(r[2] == sizes[r[1]] for r in rows)
    if policy == "shared":  # the loader asked the store how many models share each page
        sharing = {p["page_id"]: p["models"] for p in store.page_stats()}
        assert all(r[6] == sharing[r[1]] for r in rows), rows


def test_a_budget_holding_the_family_keeps_it(pool, family):
    store, models, x, sizes = family
    for policy in SERVING:
        cache.configure(policy=policy, budget_bytes=sum(sizes.values()))
        cache.clear()
        with cache.record() as trace:
            serve(store, models, x)
        stats = cache.stats()
        read = set(trace.page_ids.tolist())
        assert (stats["misses"], stats["evictions"], stats["bypassed"]) == (len(read), 0, 0), policy
        assert stats["resident_bytes"] == sum(sizes[p] for p in read), policy
        assert stats["bytes_read"] == stats["resident_bytes"], policy


def test_lowering_the_budget_evicts_at_once(pool, family):
    store, models, x, sizes = family
    cache.configure(policy="lru", budget_bytes=sum(sizes.values()))
    serve(store, models, x, requests=range(N_MODELS))
    assert cache.stats()["pages"] == len(sizes)
    small = 3 * max(sizes.values())
    stats = cache.configure(budget_bytes=small)
    assert stats["resident_bytes"] <= small and stats["pages"] >= 3, stats
    assert stats["evictions"] == len(sizes) - stats["pages"]


# -- replaying a recorded run --------------------------------------------------------------


def replay(store, models, x, policy, budget, requests=REQUESTS):
    """Serve from an empty pool while recording; simulate the trace with the same settings.
    Counts never halve in either (BIG_WINDOW): the simulator's clock starts at 0, the
    pool's runs on from earlier tests, and their aging windows would not line up."""
    cache.configure(policy=policy, budget_bytes=budget, aging_window=BIG_WINDOW)
    cache.clear()
    with cache.record() as trace:
        serve(store, models, x, requests)
    live = cache.stats()
    sim = cache.simulate(
        trace.page_ids, cache.store_pages(store), policy, budget, aging_window=BIG_WINDOW
    )
    keys = ("hits", "misses", "bypassed", "evictions", "bytes_read")
    return {k: live[k] for k in keys}, {k: sim[k] for k in keys}, trace


@pytest.mark.parametrize("policy", ["lru", "admit-lfu"])
@pytest.mark.parametrize("pages", [1, 3, 8, 20, 1000])
def test_replaying_a_recorded_run_gives_the_live_counts(pool, family, policy, pages):
    store, models, x, sizes = family
    live, sim, trace = replay(store, models, x, policy, pages * max(sizes.values()))
    assert live == sim
    assert sim["hits"] + sim["misses"] == len(trace.page_ids)


@pytest.mark.parametrize("policy", ["lru", "admit-lfu"])
@pytest.mark.parametrize("pages", [3])
def test_replaying_a_run_that_reads_a_page_again_within_a_layer(pool, db_path, rng, policy, pages):
    """w1's first block columns are one deduplicated block: a layer reads its page at many
    tiles. The dense kernel pins a layer's pages together, so while the layer runs that
    page stays (a hit each time); the simulator pins one access at a time. With a budget
    that holds the pages a layer pins at once the replay is exact; with less (one page)
    it is not, as simulate()'s docstring says: such a replay needs pin/unpin events."""
    models = build(db_path, rng, repeat_blocks=True)
    x = rng.standard_normal((3, 25)).astype(np.float32)
    with sqlite_tensor.Store(db_path) as store:
        with cache.record() as one:
            store.predict("m0", x)
        assert len(one.page_ids) > len(set(one.page_ids.tolist()))  # one request, a page twice
        budget = pages * max(p["bytes"] for p in store.page_stats())
        live, sim, trace = replay(store, models, x, policy, budget)
    assert live == sim


# -- record() ------------------------------------------------------------------------------


def test_record_lists_the_pages_a_model_reads(pool, family):
    store, models, x, sizes = family
    cache.configure(budget_bytes=sum(sizes.values()))
    for name in ("m0", "m3"):
        with cache.record() as trace:
            assert_matches(store.predict(name, x), LAYERS, models[name], x)
        assert set(trace.page_ids.tolist()) == model_pages(store, name)
        assert trace.page_ids.dtype == np.int64 and trace.store_keys.dtype == np.uint64
        assert len(set(trace.store_keys.tolist())) == 1 and trace.store_keys[0] != 0
        key = int(trace.store_keys[0])
    # the key tensor_cache_pages shows (as a signed 64-bit integer)
    assert {r[0] for r in resident_pages(store.conn)} == {key - 2**64 if key >= 2**63 else key}
    # m0 and m3 share w1/b1 pages, not w2 (other group) or head pages
    assert model_pages(store, "m0") & model_pages(store, "m3")
    assert model_pages(store, "m0") != model_pages(store, "m3")


def test_record_counts_every_access_and_nothing_outside(pool, family):
    store, models, x, sizes = family
    store.predict("m1", x)  # before: not recorded
    before = cache.stats()
    with cache.record() as trace:
        serve(store, models, x, requests=[1, 2])
    during = cache.stats()
    store.predict("m2", x)  # after: not recorded
    assert len(trace.page_ids) == (
        during["hits"] + during["misses"] - before["hits"] - before["misses"]
    )
    assert len(trace.page_ids) > 0
    with cache.record() as again:  # a new recording starts empty
        pass
    assert len(again.page_ids) == 0 and len(again.store_keys) == 0


def test_two_stores_have_two_keys(pool, db, rng):
    a = sqlite_tensor.Store(db, "alpha", **SMALL)
    b = sqlite_tensor.Store(db, "beta", **SMALL)
    w = weight(rng, 4, 6)
    layers = [{"op": "dense", "weight": "w"}]
    a.add_model("m", {"w": w}, layers=layers)
    b.add_model("m", {"w": w}, layers=layers)
    with cache.record() as trace:
        a.predict("m", np.ones(6, np.float32))
        b.predict("m", np.ones(6, np.float32))
    keys = trace.store_keys.tolist()
    assert len(set(keys)) == 2 and keys[0] == keys[len(keys) // 2 - 1]


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["opt", "nope", "LRU", "", "python"])
def test_configure_rejects_names_it_cannot_serve_with(pool, name):
    cache.configure(policy="sieve")
    with pytest.raises(ValueError) as info:
        cache.configure(policy=name)
    message = str(info.value)
    if name != "python":
        assert message.startswith(f"unknown policy '{name}'; policies are ")
        offered = message.split("policies are ", 1)[1].split(", ")
        assert offered == SERVING  # not opt, the simulation's
    assert cache.stats()["policy"] == "sieve"


@pytest.mark.parametrize("name", ["nope", "opt", "python"])
def test_a_bad_policy_name_before_any_connection_is_a_value_error(name):
    """In a fresh interpreter that has not opened a connection yet."""
    code = (
        "import sqlite_tensor.cache as c\n"
        "try:\n"
        f"    c.configure(policy={name!r})\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.startswith("ValueError:")


def test_a_policy_must_be_a_name_or_a_policy_object(pool):
    with pytest.raises(TypeError, match="victim"):
        cache.configure(policy=5)


@pytest.mark.parametrize(
    "budget, error, message",
    [
        (0, ValueError, "budget_bytes must be at least 1, got 0"),
        (-1, ValueError, "budget_bytes must be at least 1, got -1"),
        (True, TypeError, "budget_bytes must be an integer, got True"),
        (False, TypeError, "budget_bytes must be an integer, got False"),
        (1.5, TypeError, r"budget_bytes must be an integer, got 1\.5"),
        ("1000", TypeError, "budget_bytes must be an integer, got '1000'"),
    ],
)
def test_bad_budgets(pool, budget, error, message):
    cache.configure(budget_bytes=12345, policy="lru")
    with pytest.raises(error, match=message):
        cache.configure(budget_bytes=budget, policy="clock")
    stats = cache.stats()
    assert (stats["budget_bytes"], stats["policy"]) == (12345, "lru")  # nothing changed


@pytest.mark.parametrize("window", [0, -5, True, 2.5, "100"])
def test_bad_aging_windows(pool, window):
    cache.configure(aging_window=777)
    with pytest.raises(ValueError, match="aging_window must be a positive number of accesses"):
        cache.configure(aging_window=window)
    assert cache.stats()["aging_window"] == 777


def test_configure_changes_only_what_it_is_given(pool):
    s = cache.configure(policy="2q", budget_bytes=10**6, aging_window=500)
    assert (s["policy"], s["budget_bytes"], s["aging_window"]) == ("2q", 10**6, 500)
    s = cache.configure(budget_bytes=2 * 10**6)
    assert (s["policy"], s["budget_bytes"], s["aging_window"]) == ("2q", 2 * 10**6, 500)
    s = cache.configure()
    assert (s["policy"], s["budget_bytes"], s["aging_window"]) == ("2q", 2 * 10**6, 500)
    assert sqlite_tensor.configure_cache is cache.configure
    assert set(s) >= {
        "policy",
        "budget_bytes",
        "resident_bytes",
        "pages",
        "hits",
        "misses",
        "bypassed",
        "evictions",
        "bytes_read",
        "aging_window",
        "hit_ratio",
    }


def test_changing_the_policy_keeps_the_counters_and_drops_the_pages(pool, family):
    store, models, x, sizes = family
    cache.configure(policy="lru", budget_bytes=sum(sizes.values()))
    serve(store, models, x, requests=[0, 1, 0])
    before = cache.stats()
    assert before["pages"] > 0 and before["hits"] > 0
    assert cache.configure(policy="lru") == before  # the same: nothing happens
    after = cache.configure(policy="s3fifo")
    assert (after["pages"], after["resident_bytes"], after["policy"]) == (0, 0, "s3fifo")
    counters = ("hits", "misses", "bypassed", "evictions", "bytes_read", "budget_bytes")
    assert {k: after[k] for k in counters} == {k: before[k] for k in counters}
    assert resident_pages(store.conn) == []
    serve(store, models, x, requests=[0])  # read again: misses
    again = cache.stats()
    assert again["misses"] == before["misses"] + len(model_pages(store, "m0"))


def test_clear_drops_pages_and_zeroes_counters(pool, family):
    store, models, x, sizes = family
    cache.configure(policy="clock", budget_bytes=5 * max(sizes.values()), aging_window=999)
    serve(store, models, x)
    assert cache.stats()["evictions"] > 0
    cache.clear()
    s = cache.stats()
    assert {
        k: s[k]
        for k in (
            "resident_bytes",
            "pages",
            "hits",
            "misses",
            "bypassed",
            "evictions",
            "bytes_read",
        )
    } == dict.fromkeys(
        ("resident_bytes", "pages", "hits", "misses", "bypassed", "evictions", "bytes_read"), 0
    )
    assert (s["policy"], s["budget_bytes"], s["aging_window"], s["hit_ratio"]) == (
        "clock",
        5 * max(sizes.values()),
        999,
        None,
    )
    with cache.record() as trace:
        assert_matches(store.predict("m4", x), LAYERS, models["m4"], x)
    assert cache.stats()["misses"] == len(set(trace.page_ids.tolist()))  # cold again


# -- stale pages -----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", SERVING)
def test_no_stale_page_after_drop_and_add_under_any_policy(pool, db_path, rng, policy):
    models = build(db_path, rng)
    x = rng.standard_normal((2, 25)).astype(np.float32)
    other = sqlite_tensor.Store(db_path)  # another connection, same process pool
    small = 4 * max(p["bytes"] for p in other.page_stats())
    try:
        for budget in (10**9, small):
            cache.configure(policy=policy, budget_bytes=budget)
            with sqlite_tensor.Store(db_path) as store:
                for s in (store, other):
                    serve(s, models, x, requests=[0, 1, 0])
                fresh = family_arrays(rng)
                for name in ("m0", "m1"):
                    store.drop_model(name)  # pages rewritten or freed, ids reused
                    store.add_model(name, fresh[name], layers=LAYERS)
                    models[name] = fresh[name]
                for s in (store, other):
                    serve(s, models, x, requests=[0, 1, 2, 0])
                    got = s.conn.execute(
                        "SELECT tensor_predict('tensors', 'm1', ?)", (x[1].tobytes(),)
                    ).get
                    assert_matches(
                        np.frombuffer(got, np.float32).copy(), LAYERS, models["m1"], x[1]
                    )
    finally:
        other.close()


# -- SQL -------------------------------------------------------------------------------------


def stats_row(conn):
    cur = conn.cursor()
    cur.execute("SELECT * FROM tensor_cache_stats")
    names = [d[0] for d in cur.get_description()]
    rows = cur.fetchall()
    assert len(rows) == 1
    return dict(zip(names, rows[0]))


def test_tensor_cache_settings_from_sql(pool, db):
    one = lambda sql, *args: db.execute(sql, args).get  # noqa: E731
    cache.configure(policy=cache.DEFAULT_POLICY)
    assert one("SELECT tensor_cache('policy')") == cache.DEFAULT_POLICY
    assert one("SELECT tensor_cache('policy', 'sieve')") == "sieve"
    assert one("SELECT tensor_cache('policy')") == "sieve" == cache.stats()["policy"]
    assert one("SELECT tensor_cache('budget_bytes', ?)", 123456) == 123456
    assert one("SELECT tensor_cache('budget_bytes')") == 123456 == cache.stats()["budget_bytes"]
    for policy in SERVING:
        assert one("SELECT tensor_cache('policy', ?)", policy) == policy == cache.stats()["policy"]
    assert one("SELECT tensor_cache('clear')") == 1


@pytest.mark.parametrize(
    "sql, args, message",
    [
        (
            "SELECT tensor_cache('nope')",
            (),
            "tensor_cache: unknown option 'nope'; options are 'policy', 'budget_bytes', 'clear'",
        ),
        ("SELECT tensor_cache(1)", (), "tensor_cache: the option must be text"),
        (
            "SELECT tensor_cache('policy', 'nope')",
            (),
            "tensor_cache: unknown policy 'nope'; policies are admit-lfu, lru, ",
        ),
        ("SELECT tensor_cache('policy', 'opt')", (), "tensor_cache: unknown policy 'opt'"),
        (
            "SELECT tensor_cache('policy', 7)",
            (),
            "tensor_cache: the policy must be a name, got an integer",
        ),
        ("SELECT tensor_cache('policy', NULL)", (), "tensor_cache: the policy must be a name"),
        ("SELECT tensor_cache('budget_bytes', '1000')", (), "budget_bytes must be an integer"),
        ("SELECT tensor_cache('budget_bytes', 1.5)", (), "budget_bytes must be an integer"),
        ("SELECT tensor_cache('budget_bytes', 0)", (), "budget_bytes must be at least 1, got 0"),
        ("SELECT tensor_cache('budget_bytes', -7)", (), "budget_bytes must be at least 1, got -7"),
    ],
)
def test_tensor_cache_errors_from_sql(pool, db, sql, args, message):
    cache.configure(policy="lru", budget_bytes=99999)
    with pytest.raises(apsw.SQLError) as info:
        db.execute(sql, args).fetchall()
    assert message in str(info.value)
    if "unknown policy" in message:
        offered = str(info.value).split("policies are ", 1)[1].split(", ")
        assert offered == SERVING
    stats = cache.stats()
    assert (stats["policy"], stats["budget_bytes"]) == ("lru", 99999)


def test_cache_tables_agree_with_stats(pool, family):
    store, models, x, sizes = family
    conn = store.conn
    cache.configure(policy="admit-lfu", budget_bytes=6 * max(sizes.values()))
    row = stats_row(conn)
    assert list(row) == [
        "policy",
        "budget_bytes",
        "resident_bytes",
        "pages",
        "hits",
        "misses",
        "bypassed",
        "evictions",
        "bytes_read",
        "hit_ratio",
    ]
    assert row["hit_ratio"] is None and row["pages"] == 0
    serve(store, models, x)
    s, row = cache.stats(), stats_row(conn)
    assert {k: row[k] for k in row} == {k: s[k] for k in row}
    pages = resident_pages(conn)
    assert len(pages) == s["pages"] > 0
    assert sum(p[2] for p in pages) == s["resident_bytes"] <= s["budget_bytes"]
    assert len({p[1] for p in pages}) == len(pages)
    assert all(p[4] >= 1 and p[5] >= 1 for p in pages)  # accesses, last access
    assert (
        conn.execute(
            "SELECT sum(bytes) = (SELECT resident_bytes FROM tensor_cache_stats)"
            " FROM tensor_cache_pages"
        ).get
        == 1
    )
    conn.execute("SELECT tensor_cache('clear')").fetchall()
    assert resident_pages(conn) == []
    row = stats_row(conn)
    assert (row["pages"], row["hits"], row["misses"], row["hit_ratio"]) == (0, 0, 0, None)


SHELL_LOAD = sqlite_tensor.loadable_path()


def test_cache_from_the_sqlite3_shell(sqlite3_shell, clean_env, db_path, rng, pool):
    models = build(db_path, rng)
    x = np.array([0.5, -1.25, 2.0, 0.0, -0.75] * 5, np.float32)
    with sqlite_tensor.Store(db_path) as store:
        expected = store.predict("m0", x)
        budget = 4 * max(p["bytes"] for p in store.page_stats())
    assert_matches(expected, LAYERS, models["m0"], x)
    features = "[" + ", ".join(repr(float(v)) for v in x) + "]"
    predict = f"SELECT hex(tensor_predict('tensors', 'm0', '{features}'));"
    result = subprocess.run(
        [
            sqlite3_shell,
            "-batch",
            str(db_path),
            f".load {SHELL_LOAD}",
            "SELECT tensor_cache('policy'), tensor_cache('budget_bytes');",
            f"SELECT tensor_cache('policy', 'sieve'), tensor_cache('budget_bytes', {budget});",
            predict,
            predict,
            "SELECT policy, budget_bytes, hits, misses, resident_bytes <= budget_bytes,"
            " hits + misses > 0 FROM tensor_cache_stats;",
            "SELECT count(*) > 0, sum(bytes) = (SELECT resident_bytes FROM tensor_cache_stats),"
            " max(pins) FROM tensor_cache_pages;",
            "SELECT tensor_cache('clear');",
            "SELECT pages, hits, misses FROM tensor_cache_stats;",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"{cache.DEFAULT_POLICY}|{512 * 2**20}"  # a fresh process's pool
    assert lines[1] == f"sieve|{budget}"
    assert lines[2] == lines[3] == expected.tobytes().hex().upper()
    policy, budget_s, hits, misses, within, some = lines[4].split("|")
    assert (policy, int(budget_s), within, some) == ("sieve", budget, "1", "1")
    assert int(hits) + int(misses) > 0
    assert lines[5] == "1|1|0"
    assert lines[6] == "1"
    assert lines[7] == "0|0|0"
    # errors name the problem, and the shell goes on (statements from stdin)
    result = subprocess.run(
        [sqlite3_shell, "-batch", str(db_path), "-cmd", f".load {SHELL_LOAD}"],
        input="SELECT tensor_cache('policy', 'opt');\nSELECT tensor_cache('budget_bytes', 'x');\n"
        "SELECT tensor_cache('colour');\nSELECT tensor_cache('policy');\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env,
    )
    assert "unknown policy 'opt'; policies are " + ", ".join(SERVING) + "\n" in result.stderr
    assert "budget_bytes must be an integer" in result.stderr
    assert "unknown option 'colour'" in result.stderr
    assert result.stdout.splitlines() == [cache.DEFAULT_POLICY]


# -- page memory: the huge-page arena (cache/pool.pxi) ----------------------------------------
# Pages of 64 KiB and more are placed in 2 MiB aligned regions marked MADV_HUGEPAGE, at
# 64-byte granularity; smaller ones (every SMALL store above) come from malloc.

ARENA_MIN = 64 * 1024
BIG = dict(block_rows=64, block_cols=128, page_blocks=3)  # 32 KiB blocks: 96 KiB pages
BIG_LAYERS = [
    {"op": "dense", "weight": "w1", "bias": "b1", "activation": "relu"},
    {"op": "dense", "weight": "w2"},
]


def thp_enabled() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


@pytest.fixture
def arena():
    """Leaves the arena switched on, with huge pages, and the pool empty."""
    _engine = sqlite_tensor._engine
    yield _engine
    _engine._page_memory_configure(arena=True, huge=True)
    cache.clear()


@pytest.fixture
def big_model(tmp_path):
    """(path, arrays, x, page bytes by id): two dense layers in pages of about 96 KiB
    (edge pages smaller), and a few inputs."""
    rng = np.random.default_rng(21)
    arrays = {
        "w1": weight(rng, 300, 520),
        "b1": rng.standard_normal(300).astype(np.float32),
        "w2": weight(rng, 70, 300),
    }
    path = tmp_path / "big.sqlite"
    with sqlite_tensor.Store(path, **BIG) as store:
        store.add_model("m", arrays, layers=BIG_LAYERS)
        sizes = {p["page_id"]: p["bytes"] for p in store.page_stats()}
    assert max(sizes.values()) >= ARENA_MIN > min(sizes.values())  # both kinds of page
    return path, arrays, rng.standard_normal((3, 520)).astype(np.float32), sizes


def arena_bytes(sizes, page_ids):
    """What the arena holds for those pages: the large ones, each rounded up to 64 bytes."""
    return sum(-(-sizes[p] // 64) * 64 for p in page_ids if sizes[p] >= ARENA_MIN)


def test_large_pages_live_in_the_arena_and_leave_it(pool, arena, big_model):
    path, arrays, x, sizes = big_model
    before = arena._page_memory_stats()
    assert before["arena"] and before["huge"] and before["in_use_bytes"] == 0
    with sqlite_tensor.Store(path) as store:
        assert_matches(store.predict("m", x), BIG_LAYERS, arrays, x)
        s = cache.stats()
        held = [row[1] for row in resident_pages(store.conn)]
    assert s["pages"] == len(sizes) and s["resident_bytes"] == sum(sizes.values())
    mem = arena._page_memory_stats()
    assert mem["in_use_bytes"] == arena_bytes(sizes, held) > 0
    assert mem["regions"] >= 1 and mem["mapped_bytes"] >= mem["in_use_bytes"]
    assert mem["fallbacks"] == before["fallbacks"]
    if thp_enabled():
        assert mem["huge_regions"] >= 1
    cache.clear()
    mem = arena._page_memory_stats()
    assert mem["in_use_bytes"] == 0 and mem["regions"] <= 1  # the last region is kept, empty


def test_the_budget_counts_page_bytes_under_churn(pool, arena, big_model):
    """A budget of a few pages: pages are placed and freed all the time; the pool stays in
    its budget and the arena holds exactly the resident large pages once nothing is pinned."""
    path, arrays, x, sizes = big_model
    budget = 3 * max(sizes.values())
    cache.configure(policy="lru", budget_bytes=budget)  # lru admits every page: evictions
    with sqlite_tensor.Store(path) as store:
        for k in range(12):
            xi = x if k % 2 else x[k % 3]
            assert_matches(store.predict("m", xi), BIG_LAYERS, arrays, xi)
            s = cache.stats()
            assert s["resident_bytes"] <= budget, s
            held = [row[1] for row in resident_pages(store.conn)]
            assert sum(sizes[p] for p in held) == s["resident_bytes"]
            assert arena._page_memory_stats()["in_use_bytes"] == arena_bytes(sizes, held)
        assert s["evictions"] > 0


def test_without_huge_pages_or_without_the_arena(pool, arena, big_model):
    """Where huge pages cannot be had (or are switched off) regions still serve; with the
    arena off every page comes from malloc. Pages placed before a switch are freed where
    they came from."""
    path, arrays, x, sizes = big_model
    with sqlite_tensor.Store(path) as store:
        assert_matches(store.predict("m", x), BIG_LAYERS, arrays, x)  # placed in regions
        cache.clear()
        assert arena._page_memory_stats()["regions"] <= 1
        arena._page_memory_configure(huge=False)
        assert_matches(store.predict("m", x), BIG_LAYERS, arrays, x)
        mem = arena._page_memory_stats()
        assert not mem["huge"] and mem["in_use_bytes"] > 0
        arena._page_memory_configure(arena=False)  # these pages stay in regions
        assert_matches(store.predict("m", x[0]), BIG_LAYERS, arrays, x[0])
        cache.clear()
        assert arena._page_memory_stats()["in_use_bytes"] == 0
        assert_matches(store.predict("m", x), BIG_LAYERS, arrays, x)  # from malloc now
        mem = arena._page_memory_stats()
        assert mem["in_use_bytes"] == 0 and not mem["arena"]
        arena._page_memory_configure(arena=True)  # freed to malloc, not a region
        cache.clear()
        assert arena._page_memory_stats()["in_use_bytes"] == 0
        assert_matches(store.predict("m", x), BIG_LAYERS, arrays, x)


FALLBACK_CHILD = r"""
import resource, sys
import numpy as np
import sqlite_tensor
from sqlite_tensor import _engine
path, expected = sys.argv[1], sys.argv[2]
store = sqlite_tensor.Store(path)
x = np.load(expected + ".x.npy")
_engine._page_memory_configure(arena=False)   # a first run from malloc starts what it needs
store.predict("m", x)                          # (OpenBLAS's buffers among it) before the limit
_engine.cache_clear()
_engine._page_memory_configure(arena=True)
with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
# room for pages from malloc, none for a region (64 MiB of address space)
resource.setrlimit(resource.RLIMIT_AS, (vm + 24 * 2**20, resource.RLIM_INFINITY))
y = store.predict("m", x)
mem = _engine._page_memory_stats()
np.testing.assert_allclose(y, np.load(expected + ".y.npy"), rtol=1e-5, atol=1e-5)
assert mem["regions"] == 0 and mem["in_use_bytes"] == 0 and mem["fallbacks"] > 0, mem
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_AS semantics")
def test_pages_come_from_malloc_when_no_region_can_be_mapped(big_model, tmp_path):
    path, arrays, x, sizes = big_model
    with sqlite_tensor.Store(path) as store:
        y = store.predict("m", x)
    base = str(tmp_path / "expected")
    np.save(base + ".x.npy", x)
    np.save(base + ".y.npy", y)
    out = subprocess.run(
        [sys.executable, "-c", FALLBACK_CHILD, str(path), base],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


def test_threads_churn_pages_through_the_arena(pool, arena, big_model):
    """Four threads with their own connections under a budget of two pages: pages are
    placed in regions (outside the pool's lock) and freed (inside it) concurrently."""
    import threading

    path, arrays, x, sizes = big_model
    cache.configure(policy="lru", budget_bytes=2 * max(sizes.values()))
    barrier = threading.Barrier(4)

    def work(seed):
        with sqlite_tensor.Store(path) as store:
            barrier.wait()
            for k in range(25):
                xi = x if (k + seed) % 2 else x[(k + seed) % 3]
                assert_matches(store.predict("m", xi), BIG_LAYERS, arrays, xi)

    run_threads(work, range(4), timeout=120)
    with sqlite_tensor.Store(path) as store:
        held = [row[1] for row in resident_pages(store.conn)]
    assert arena._page_memory_stats()["in_use_bytes"] == arena_bytes(sizes, held)
    cache.clear()
    assert arena._page_memory_stats()["in_use_bytes"] == 0
