"""The docs' plots, tables and quoted figures, drawn from asv results: `make figures`.

    python -m tools.figures            # PNGs into docs/figures/, tables into the docs
    python -m tools.figures --check    # exit 1 if a docs table differs from the results
    python -m tools.figures --cpu      # the CPU description `make bench` gives asv

Reads asv_bench/results/<machine>/*.json. Writing takes, for each benchmark, its newest
measurement on the machine (the one with the newest results unless --machine says) and
records the result files it used in docs/figures/sources.json; --check reads only those
files, so a later `make bench` does not make the committed docs look stale until
`make figures` is run again. Each generated region of a doc lies between
`<!-- figures:NAME begin -->` and `<!-- figures:NAME end -->`; a region the docs have and
this file does not make, or the reverse, is an error. The PNGs are drawn with the Agg
backend at a fixed size, matplotlib's default style and no metadata, so the same results
give the same bytes with the same matplotlib.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import math
import re
import statistics
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "asv_bench" / "results"
DOCS = ROOT / "docs"
FIGURES = DOCS / "figures"
SOURCES = FIGURES / "sources.json"

REGION = re.compile(r"(<!-- figures:([a-z0-9-]+) begin -->\n)(.*?)(<!-- figures:\2 end -->)", re.S)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")

DEFAULT_POLICY = "admit-lfu"
APPROX_METHOD = "residual, lsh"  # Store.dedup's defaults (docs/dedup.md)
FAMILIES = {"DefaultFamily": "vocab 20,000", "LargeFamily": "vocab 100,000"}


class MissingResults(Exception):
    """A figure needs a benchmark the results do not have."""


# -- the results ---------------------------------------------------------------------------


class Results:
    """asv results of one machine: for each benchmark, its newest measurement among the
    given files (by asv's started_at), with the machine's description."""

    def __init__(self, files: list[Path]):
        if not files:
            raise MissingResults(f"no asv results in {RESULTS} (run `make bench`)")
        self.files = sorted(files)
        self._bench: dict[str, tuple[int, Path, dict]] = {}
        machines = set()
        for path in self.files:
            data = json.loads(path.read_text())
            machines.add(data["params"]["machine"])
            columns = data["result_columns"]
            for name, row in data["results"].items():
                entry = dict(zip(columns, row))
                started = entry.get("started_at") or 0
                if name not in self._bench or started >= self._bench[name][0]:
                    self._bench[name] = (started, path, {**entry, "_file": data})
        if len(machines) != 1:
            raise MissingResults(f"results of several machines mixed: {sorted(machines)}")

    @classmethod
    def newest(cls, machine: str | None = None) -> Results:
        dirs = [d for d in sorted(RESULTS.glob("*")) if (d / "machine.json").exists()]
        if machine is not None:
            dirs = [d for d in dirs if d.name == machine]
        files = {d: [f for f in d.glob("*.json") if f.name != "machine.json"] for d in dirs}
        files = {d: fs for d, fs in files.items() if fs}
        if not files:
            raise MissingResults(
                f"no asv results in {RESULTS}" + (f" for machine {machine!r}" if machine else "")
            )
        # the machine whose newest results file is the newest
        best = max(
            files, key=lambda d: max(json.loads(f.read_text())["date"] or 0 for f in files[d])
        )
        return cls(files[best])

    @classmethod
    def recorded(cls) -> Results:
        """The result files named in docs/figures/sources.json."""
        sources = json.loads(SOURCES.read_text())
        return cls([RESULTS / f for f in sources["files"]])

    def used_files(self, names) -> list[str]:
        return sorted({self._bench[n][1].relative_to(RESULTS).as_posix() for n in names})

    def _entry(self, name: str) -> dict:
        if name not in self._bench:
            raise MissingResults(
                f"no results for {name} (run `make bench`, or asv run --bench {name.split('.')[0]})"
            )
        return self._bench[name][2]

    def params(self, name: str) -> list[list]:
        return [[ast.literal_eval(v) for v in values] for values in self._entry(name)["params"]]

    def table(self, name: str) -> dict[tuple, float]:
        """{params tuple: value}; failed or skipped runs are nan."""
        entry = self._entry(name)
        params = self.params(name)
        values = entry["result"]
        if values is None:  # the benchmark failed as a whole
            values = [None] * math.prod(len(p) for p in params)
        elif not params:
            values = [values]
        out = {}
        for key, value in zip(itertools.product(*params), values):
            out[key] = float("nan") if value is None else float(value)
        return out

    def setup_seconds(self, name: str) -> float | None:
        """Seconds the setup_cache of this benchmark's module took in its run."""
        module = name.split(".")[0]
        durations = self._entry(name)["_file"].get("durations", {})
        found = [v for k, v in durations.items() if k.startswith(f"<setup_cache {module}:")]
        return sum(found) if found else None

    def machine(self, names) -> dict:
        """The machine, commit and date of the files these benchmarks came from."""
        files = [self._entry(n)["_file"] for n in names]
        first = files[0]["params"]
        commits = sorted({f["commit_hash"][:8] for f in files})
        return {
            "machine": first["machine"],
            "cpu": first["cpu"],
            "num_cpu": first["num_cpu"],
            "commits": commits,
        }


def cpu_description() -> str:
    """The CPU's model name and its vector extensions, as `make bench` names the machine."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]
    return f"{model}; {' '.join(f for f in wanted if f in flags) or 'no AVX2'}"


def machine_line(info: dict) -> str:
    return (
        f'machine "{info["machine"]}": {info["cpu"]}, {info["num_cpu"]} cores '
        f"(shared), commit {', '.join(info['commits'])}"
    )


# -- the figures ---------------------------------------------------------------------------

POLICY_MISSES = "bench_cache.PolicyMisses.track_vs_opt"
ORACLE = "bench_cache.StaticOracle.track_static_oracle_vs_opt"
OPT_RATIO = "bench_cache.StaticOracle.track_opt_miss_ratio"
BUDGET = "bench_budget.ServingBudget"
AMPLIFICATION = "bench_packing.Strategies.track_mean_amplification"
PAGES_VS_BOUND = "bench_packing.Strategies.track_pages_vs_bound"


def _para(text: str) -> str:
    """A paragraph of prose wrapped as the docs are (links are never cut)."""
    return textwrap.fill(text, 91, break_long_words=False, break_on_hyphens=False)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g} %"


def _seed_stats(results: Results, name: str, *fixed) -> tuple[float, float, float]:
    """Median, min and max over seeds (the last parameter) with the others fixed."""
    values = [v for k, v in results.table(name).items() if k[:-1] == fixed]
    return statistics.median(values), min(values), max(values)


def _policies(results: Results) -> list[str]:
    return results.params(POLICY_MISSES)[0]


def _fractions(results: Results) -> list[float]:
    return results.params(POLICY_MISSES)[1]


def cache_table(results: Results) -> str:
    """docs/cache.md: misses / opt's on family_trace() (seed 0), what
    `python -m sqlite_tensor policies` prints, and the figure over seeds."""
    policies, fractions = _policies(results), _fractions(results)
    misses, oracle = results.table(POLICY_MISSES), results.table(ORACLE)
    lines = [
        _para(
            f"Misses over Belady's of the {len(policies)} policies of `cache.policies()` on "
            "`family_trace()` (12 models, 2,000 requests, 168 distinct pages; budgets are "
            "fractions of the distinct bytes; seed 0, what `python -m sqlite_tensor "
            "policies` prints; asv's `bench_cache.PolicyMisses` and `StaticOracle`, see "
            "[benchmarks](benchmarks.md#buffer-pool)):"
        ),
        "",
        "| budget | " + " | ".join(policies) + " | static oracle |",
        "|---" * (len(policies) + 2) + "|",
    ]
    for f in fractions:
        cells = []
        for p in policies:
            v = f"{misses[p, f, 0]:.2f}"
            cells.append(f"**{v}**" if p == DEFAULT_POLICY else v)
        lines.append(f"| {_pct(f)} | " + " | ".join(cells) + f" | {oracle[f, 0]:.2f} |")
    seeds = results.params(POLICY_MISSES)[2]
    lines += [
        "",
        f"![Misses over Belady's by policy and budget, seeds {min(seeds)} to "
        f"{max(seeds)}](figures/cache_misses.png)",
        "",
        _para(
            "What the misses cost in request latency, against the budget: "
            "[latency plot](figures/latency_budget.png) ([how it was measured]"
            "(benchmarks.md#plots))."
        ),
        "",
    ]
    return "\n".join(lines)


def cache_seeds_table(results: Results) -> str:
    """docs/benchmarks.md, Buffer pool: the same, median over seeds with the range."""
    policies, fractions = _policies(results), _fractions(results)
    seeds = results.params(POLICY_MISSES)[2]

    def cell(stats, fmt=".2f", em=""):
        med, lo, hi = stats
        return f"{em}{med:{fmt}}{em} ({lo:{fmt}} – {hi:{fmt}})"

    lines = [
        "| policy | " + " | ".join(_pct(f) for f in fractions) + " |",
        "|---|" + "---:|" * len(fractions),
    ]
    for p in policies:
        em = "**" if p == DEFAULT_POLICY else ""
        label = f"**`{p}`** (default)" if em else f"`{p}`"
        lines.append(
            f"| {label} | "
            + " | ".join(cell(_seed_stats(results, POLICY_MISSES, p, f), em=em) for f in fractions)
            + " |"
        )
    lines.append(
        "| *static oracle* (`StaticOracle.track_static_oracle_vs_opt`) | "
        + " | ".join(cell(_seed_stats(results, ORACLE, f), em="*") for f in fractions)
        + " |"
    )
    lines.append(
        "| *`opt`'s misses / accesses* (`track_opt_miss_ratio`) | "
        + " | ".join(cell(_seed_stats(results, OPT_RATIO, f), ".3f", em="*") for f in fractions)
        + " |"
    )
    seeds_text = ", ".join(str(s) for s in seeds)
    return (
        _para(
            "**Misses / opt's misses** (`PolicyMisses.track_vs_opt`), budget as a fraction "
            f"of the family's distinct bytes; each cell the median over seeds {seeds_text} "
            "with their range in brackets (generated by `make figures` from the committed "
            "asv results; misses do not depend on timing):"
        )
        + "\n\n"
        + "\n".join(lines)
        + "\n"
    )


def _beats_everywhere(misses, policies, fractions, seed) -> list[float]:
    """The budgets at which the default policy misses less than every other (seed given)."""
    return [
        f
        for f in fractions
        if all(
            misses[DEFAULT_POLICY, f, seed] < misses[p, f, seed]
            for p in policies
            if p != DEFAULT_POLICY
        )
    ]


def _pcts(fractions) -> str:
    return " and ".join(_pct(f) for f in fractions) if fractions else "no budget"


CACHE_TARGET = 1.25  # the default's misses over Belady's aimed at (issue #4)


def cache_reading(results: Results) -> str:
    """docs/cache.md: the paragraph reading the table above it (seed 0)."""
    policies, fractions = _policies(results), _fractions(results)
    misses, oracle = results.table(POLICY_MISSES), results.table(ORACLE)
    beaten = _beats_everywhere(misses, policies, fractions, 0)
    first = (
        "The default beats every other policy at every budget."
        if beaten == fractions
        else f"The default beats every other policy at {_pcts(beaten)}."
    )
    top = max(fractions)
    ratio, floor = misses[DEFAULT_POLICY, top, 0], oracle[top, 0]
    target = "not under" if ratio >= CACHE_TARGET else "under"
    return (
        _para(
            f"{first} At {_pct(top)} it is {ratio:.2f} times Belady's, {target} "
            f"{CACHE_TARGET}. The last column is why. It is the *static oracle*, which caches "
            "the pages with the highest true access counts over the whole trace. When "
            "requests are independent draws, no online policy does better in expectation, "
            f"and at {_pct(top)} even the oracle misses {floor:.2f} times as often as "
            "Belady's. The rest of the gap comes from Belady's knowing which model is "
            "requested next, which no online policy can know."
        )
        + "\n"
    )


BUDGET_PAGES = "bench_cache.StaticOracle.track_budget_pages"
BASE_PAGES = "bench_cache.StaticOracle.track_base_pages"
WHY = {"lfu": "the same counts without admission"}  # what a runner-up's figures mean


def cache_seeds_reading(results: Results) -> str:
    """docs/benchmarks.md, Buffer pool: the bullets reading the seeds table."""
    policies, fractions = _policies(results), _fractions(results)
    seeds = results.params(POLICY_MISSES)[2]
    misses, oracle = results.table(POLICY_MISSES), results.table(ORACLE)
    low, rest = min(fractions), sorted(f for f in fractions if f != min(fractions))
    budget_pages = int(results.table(BUDGET_PAGES)[low, seeds[0]])
    base = int(results.table(BASE_PAGES)[low, seeds[0]])
    opt_ratio = _seed_stats(results, OPT_RATIO, low)[0]
    # policies that miss every access at the low budget: misses / opt = accesses / opt's
    every = [p for p in policies if abs(misses[p, low, seeds[0]] * opt_ratio - 1) < 1e-3]
    partial = [p for p in policies if p not in every and p != DEFAULT_POLICY]
    default_low = _seed_stats(results, POLICY_MISSES, DEFAULT_POLICY, low)
    equals = (
        "equals `opt`"
        if default_low[2] < 1.005
        else f"misses {default_low[0]:.2f} times as often as `opt`"
    )
    if budget_pages < base:
        first = (
            f"- **{_pct(low)}**: the budget ({budget_pages} pages) is smaller than the "
            f"family's shared base ({base} pages), which every request reads in order: a loop "
            "larger than the cache. Every policy that keeps each page it reads then evicts "
            "the base page needed next and misses every access "
            f"({len(every)} of {len(policies)}: {1 / opt_ratio:.2f} = 1 / {opt_ratio:.3f}). "
            f"`{DEFAULT_POLICY}` keeps a page only if its count beats its victim's, so its "
            f"{budget_pages} pages stay base pages and it {equals}; "
            + " and ".join(f"`{p}`" for p in partial)
            + " keep part of the base."
        )
    else:
        first = (
            f"- **{_pct(low)}**: the budget ({budget_pages} pages) holds the family's shared "
            f"base ({base} pages); `{DEFAULT_POLICY}` {equals}."
        )

    def within(f):
        gaps = [misses[DEFAULT_POLICY, f, s] / oracle[f, s] - 1 for s in seeds]
        return f"{min(gaps) * 100:.1f} – {max(gaps) * 100:.1f} % ({_pct(f)})"

    oracle_med = [_seed_stats(results, ORACLE, f)[0] for f in rest]
    opt_top = _seed_stats(results, OPT_RATIO, rest[-1])[0]
    others = [p for p in policies if p != DEFAULT_POLICY]
    runners = sorted(
        others, key=lambda p: sum(_seed_stats(results, POLICY_MISSES, p, f)[0] for f in rest)
    )[:2]

    def runner(p):
        values = ", ".join(f"{_seed_stats(results, POLICY_MISSES, p, f)[0]:.2f}" for f in rest)
        return f"`{p}` ({values}{'; ' + WHY[p] if p in WHY else ''})"

    weighs = (
        f"; it weighs more at {_pct(rest[-1])} because `opt`'s own misses fall to "
        f"{opt_top * 100:.1f} % of accesses"
        if oracle_med[-1] > oracle_med[0]
        else ""
    )
    second = (
        f"- **{_pcts(rest)}**: `{DEFAULT_POLICY}` is within "
        + " and ".join(within(f) for f in rest)
        + " of the static oracle on every seed: it has closed nearly all of its gap to `opt` "
        "that an online policy can close. The rest ("
        + " and ".join(f"{(m - 1) * 100:.0f} %" for m in oracle_med)
        + f" more misses than `opt`) is what only knowing the order of future requests "
        f"buys{weighs}. The next best are " + " and ".join(runner(p) for p in runners) + "."
    )
    return (
        "\n".join(
            textwrap.fill(
                b, 91, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
            )
            for b in (first, second)
        )
        + "\n"
    )


STORE_FAMILIES = {"small": "vocab 4,096", "large": "vocab 32,768"}


def dedup_rows(results: Results) -> list[tuple[str, float, float, float | None]]:
    """(family, separate files, exact dedup, approximate dedup or None) in MiB."""
    rows = []
    logical = results.table("bench_store.Dedup.track_logical_mib")
    physical = results.table("bench_store.Dedup.track_physical_mib")
    for size, label in STORE_FAMILIES.items():
        rows.append(
            (
                f"text classifier, {size} ({label}): 2 frozen, 2 tuned",
                logical[size,],
                physical[size,],
                None,
            )
        )
    for cls, label in FAMILIES.items():
        logical = results.table(f"bench_dedup.{cls}.track_logical_mib")
        physical = results.table(f"bench_dedup.{cls}.track_physical_mib")
        rows.append(
            (
                f"trained, {label}: 4 fully fine-tuned",
                logical["exact",],
                physical["exact",],
                physical[APPROX_METHOD,],
            )
        )
    return rows


def dedup_table(results: Results) -> str:
    """docs/dedup.md: bytes per family, separate files / exact / approximate."""
    lines = [
        _para(
            "Bytes of five models (a base and four variants) per family: the "
            "text-classifier families of `bench_store.Dedup` (untrained; frozen variants "
            "change only the head, tuned ones also 12.5 % of the embedding's rows; exact "
            "dedup only) and the trained families of `bench_dedup` (every weight "
            f"fine-tuned; approximate = `{APPROX_METHOD}`, `Store.dedup`'s default, each "
            "model within its accuracy budget); `track_logical_mib`, "
            "`track_physical_mib`:"
        ),
        "",
        "| family | separate files | exact dedup | approximate dedup | x fewer (exact, approximate) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, logical, exact, approx in dedup_rows(results):
        approx_cell = "not run" if approx is None else f"{approx:.1f} MiB"
        ratios = f"{logical / exact:.2f}" + ("" if approx is None else f", {logical / approx:.2f}")
        lines.append(
            f"| {label} | {logical:.1f} MiB | {exact:.1f} MiB | {approx_cell} | {ratios} |"
        )
    lines += [
        "",
        "![Bytes stored per model family: separate files, exact dedup, approximate "
        "dedup](figures/dedup_bytes.png)",
        "",
    ]
    return "\n".join(lines)


DEDUP_METHODS = {  # bench_dedup's methods (dedup_compare.METHODS) as the docs name them
    "exact": "exact only",
    "substitute, greedy": "substitution, the paper's greedy guard",
    "substitute, lsh": "substitution, budget search, LSH",
    "substitute, exhaustive": "substitution, budget search, exhaustive",
    APPROX_METHOD: "residuals, budget search, LSH (default)",
    "residual, minhash": "residuals, MinHash (MISTIQUE-style)",
    "residual, exhaustive": "residuals, exhaustive",
}
SERVING_TARGET = 1.2  # bench_dedup's target for track_inference_time_vs_exact
DEDUP_FAMILY_NAMES = {"DefaultFamily": "Default family", "LargeFamily": "Large family"}
DEDUP_BLOCK_ROWS = 64  # dedup_compare.STORE_OPTIONS: an embedding block is 64 rows


def _dedup(results: Results, cls: str, track: str) -> dict[str, float]:
    return {k[0]: v for k, v in results.table(f"bench_dedup.{cls}.track_{track}").items()}


def _speed(x: float) -> str:
    """A search time ratio (exhaustive's / this) as the docs say it."""
    if x != x:
        return ""
    if abs(x - 1) < 1e-9:
        return "1"
    return f"{x:.1f}x faster" if x >= 1 else f"{1 / x:.0f}x slower"


def dedup_methods(results: Results) -> str:
    """docs/dedup.md, Figures: a table of every method per trained family."""
    out = []
    for cls, label in FAMILIES.items():
        vocab = int(label.split()[-1].replace(",", ""))
        ratio, drop = (
            _dedup(results, cls, "times_fewer_bytes"),
            _dedup(results, cls, "worst_accuracy_drop"),
        )
        speed = _dedup(results, cls, "search_speedup_over_exhaustive")
        savings = _dedup(results, cls, "savings_vs_exhaustive")
        logical = _dedup(results, cls, "logical_mib")["exact"]
        blocks = -(-vocab // DEDUP_BLOCK_ROWS)
        out += [
            _para(
                f"{DEDUP_FAMILY_NAMES[cls]} (`{cls}`), {label} x 64 ({logical:.1f} MiB as "
                f"five separate models; {blocks:,} embedding blocks a model):"
            ),
            "",
            "| method | x fewer bytes | worst test drop | search vs exhaustive | savings vs exhaustive |",
            "|---|---:|---:|---:|---:|",
        ]
        for method, name in DEDUP_METHODS.items():
            em = "**" if method == APPROX_METHOD else ""
            cells = [
                name,
                f"{ratio[method]:.2f}",
                "0" if method == "exact" else f"{drop[method]:.2f} p",
                _speed(speed[method]),
                "" if savings[method] != savings[method] else f"{savings[method]:.4g}",
            ]
            out.append("| " + " | ".join(f"{em}{c}{em}" if c else c for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def _both(results, track, method, fmt) -> list[str]:
    return [f"{_dedup(results, cls, track)[method]:{fmt}}" for cls in FAMILIES]


def dedup_reading(results: Results) -> str:
    """docs/dedup.md, Figures: the bullets reading the tables (both families)."""
    ratio = _both(results, "times_fewer_bytes", APPROX_METHOD, ".2f")
    worst = max(_dedup(results, c, "worst_accuracy_drop")[APPROX_METHOD] for c in FAMILIES)
    subst = _both(results, "times_fewer_bytes", "substitute, lsh", ".2f")
    paper = _both(results, "times_fewer_bytes", "substitute, greedy", ".2f")
    speed = {
        c: [
            _dedup(results, c, "search_speedup_over_exhaustive")[m]
            for m in ("substitute, lsh", APPROX_METHOD)
        ]
        for c in FAMILIES
    }
    savings = min(
        _dedup(results, c, "savings_vs_exhaustive")[m]
        for c in FAMILIES
        for m in ("substitute, lsh", APPROX_METHOD)
    )
    minhash = [
        1 / _dedup(results, c, "search_speedup_over_exhaustive")["residual, minhash"]
        for c in FAMILIES
    ]
    serving = _both(results, "inference_time_vs_exact", APPROX_METHOD, ".2f")
    blocks = [
        f"{-(-int(lab.split()[-1].replace(',', '')) // DEDUP_BLOCK_ROWS):,}"
        for lab in FAMILIES.values()
    ]
    sd, sl = speed.values()

    def span(xs, fmt=".1f"):
        lo, hi = min(xs), max(xs)
        return f"{lo:{fmt}}-{hi:{fmt}}x" if f"{lo:{fmt}}" != f"{hi:{fmt}}" else f"{lo:{fmt}}x"

    def faster(xs):
        return (
            f"{span(xs)} faster" if min(xs) >= 1 else f"{span(xs, '.2f')} the speed of exhaustive"
        )

    bullets = [
        f"**Bytes.** With residuals the family takes {ratio[0]}x (default) and {ratio[1]}x "
        "(large) fewer physical bytes than the models stored separately, every model within "
        f"{worst:.2f} points of its test accuracy (`track_times_fewer_bytes`, "
        "`track_worst_accuracy_drop`).",
        "**Substitution alone** throws each block's whole difference away, so the same "
        f"budget buys fewer bytes: {subst[0]}x and {subst[1]}x with the budget search, "
        f"{paper[0]}x and {paper[1]}x with the paper's greedy guard (its tolerance, 0.02, "
        "keeps every block that moved more).",
        "**Search** (`track_search_speedup_over_exhaustive`, `track_savings_vs_exhaustive`; "
        "timings, single runs on a noisy machine). The exhaustive baseline is a strong one "
        "(one matrix product per model, |t|^2 + |r|^2 - 2 t.r), so LSH only pays off with "
        f"many blocks: {faster(sd)} on the default family ({blocks[0]} blocks a model), "
        f"{faster(sl)} on the large one ({blocks[1]}), with {savings * 100:.1f} % of "
        "exhaustive's savings or more; the gap grows with the number of blocks (exhaustive "
        "is quadratic). MinHash over binned values finds as much but hashes every value 32 "
        f"times: {span(minhash, '.0f')} slower than exhaustive.",
        "**Serving** (`track_inference_time_vs_exact`, a timing). Every model's test set "
        f"from the deduplicated store (residual LSH) takes {serving[0]} (default) and "
        f"{serving[1]} (large) of the time from the exact store, pages cached "
        + (
            f"(target <= {SERVING_TARGET}: met)."
            if max(map(float, serving)) <= SERVING_TARGET
            else f"(target <= {SERVING_TARGET}: not met in this run, a single timing on a "
            "shared machine)."
        )
        + (
            " Fewer pages to touch, and an embedding builds each residual tile whole once per call."
            if max(map(float, serving)) < 1
            else ""
        ),
    ]
    return (
        "\n".join(
            textwrap.fill(
                "- " + b, 91, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
            )
            for b in bullets
        )
        + "\n"
    )


def dedup_summary(results: Results) -> str:
    """docs/benchmarks.md, Approximate dedup: the figures in one paragraph."""
    info = results.machine([f"bench_dedup.{c}.track_times_fewer_bytes" for c in FAMILIES])
    ratio = _both(results, "times_fewer_bytes", APPROX_METHOD, ".2f")
    drop = _both(results, "worst_accuracy_drop", APPROX_METHOD, ".2f")
    speed = _both(results, "search_speedup_over_exhaustive", APPROX_METHOD, ".1f")
    savings = [
        f"{_dedup(results, c, 'savings_vs_exhaustive')[APPROX_METHOD] * 100:.1f}" for c in FAMILIES
    ]
    serving = _both(results, "inference_time_vs_exact", APPROX_METHOD, ".2f")
    return (
        _para(
            f'Machine "{info["machine"]}" ({info["cpu"]}), commit {", ".join(info["commits"])} '
            f"(generated by `make figures`): residuals with LSH {ratio[0]}x fewer bytes "
            f"(default family) and {ratio[1]}x (large), worst test drop {drop[0]} and {drop[1]} "
            f"points; LSH search {speed[0]}x and {speed[1]}x the speed of exhaustive with "
            f"{savings[0]} % and {savings[1]} % of its savings; serving {serving[0]} and "
            f"{serving[1]} of the exact store's time (timings, single runs). The full tables "
            "and what they mean are in [dedup.md](dedup.md#figures)."
        )
        + "\n"
    )


FAMILY_RUNS = "bench_dedup_families.Families"
FAMILY_METHODS = [  # dedup_families.METHODS (tests/test_figures.py checks these copies)
    "exact",
    "substitution (paper)",
    "low-rank deltas",
    "1-bit deltas",
    "ours",
]
FAMILY_OURS = "ours"
FAMILY_BASELINES = ("low-rank deltas", "1-bit deltas")  # the two per-tensor baselines
FAMILY_FIT = ("text", "mlp-shift")  # trained_families.FIT_FAMILIES
FAMILY_MAX_DROP = 0.005  # dedup_compare.MAX_DROP
GOAL_RATIO, GOAL_DROP = 4.0, 1.0  # bench_dedup_families' targets


def _family_figures(results: Results):
    ratio = results.table(f"{FAMILY_RUNS}.track_times_fewer_bytes")
    drop = results.table(f"{FAMILY_RUNS}.track_worst_test_drop")
    seconds = results.table(f"{FAMILY_RUNS}.track_seconds")
    families, methods, drops = results.params(f"{FAMILY_RUNS}.track_times_fewer_bytes")
    drops = sorted(drops, key=float)  # the budgets as the tables key them, smallest first
    main = next(d for d in drops if float(d) == FAMILY_MAX_DROP)
    return ratio, drop, seconds, families, methods, drops, main


def dedup_families(results: Results) -> str:
    """docs/dedup.md, Figures: every trained family x the baselines at one budget."""
    ratio, drop, seconds, families, methods, _drops, key = _family_figures(results)
    info = results.machine([f"{FAMILY_RUNS}.track_times_fewer_bytes"])
    lines = [
        _para(
            f"Every trained family (`{FAMILY_RUNS}`; `python -m "
            "sqlite_tensor.testing.dedup_families` prints the same), each method given "
            f"`max_drop={FAMILY_MAX_DROP:g}` on the validation sets and judged on the test "
            "sets: x fewer bytes than the five models as separate files, and the worst "
            "model's test accuracy drop in points. Dedup's defaults were fitted on the "
            f"families marked fit ({', '.join(FAMILY_FIT)}) only; the others are held out. "
            f'Machine "{info["machine"]}", commit {", ".join(info["commits"])}.'
        ),
        "",
        "| family | | " + " | ".join(methods) + " |",
        "|---|---|" + "---:|" * len(methods),
    ]
    for f in families:
        cells = []
        for m in methods:
            r, d = ratio[f, m, key], drop[f, m, key]
            em = "**" if m == FAMILY_OURS else ""
            cells.append(f"{em}{r:.2f}x, {d:.2f} p{em}")
        split = "fit" if f in FAMILY_FIT else "held out"
        lines.append(f"| {f} | {split} | " + " | ".join(cells) + " |")
    ours = [(ratio[f, FAMILY_OURS, key], drop[f, FAMILY_OURS, key], f) for f in families]
    worst_ratio = min(ours)
    worst_drop = max(ours, key=lambda o: o[1])
    held = [o for o in ours if o[2] not in FAMILY_FIT]
    time = [seconds[f, FAMILY_OURS, key] for f in families]
    met = worst_ratio[0] >= GOAL_RATIO and worst_drop[1] <= GOAL_DROP
    beats = {  # baseline -> families where ours stores fewer bytes within no larger a drop
        b: [
            f
            for f in families
            if ratio[f, FAMILY_OURS, key] > ratio[f, b, key]
            or drop[f, b, key] > max(drop[f, FAMILY_OURS, key], GOAL_DROP)
        ]
        for b in FAMILY_BASELINES
    }
    lines += [
        "",
        _para(
            f"Worst case of ours over every family: {worst_ratio[0]:.2f}x ({worst_ratio[2]}) "
            f"and {worst_drop[1]:.2f} points lost ({worst_drop[2]}); over the held-out "
            f"families alone, {min(held)[0]:.2f}x and {max(o[1] for o in held):.2f} points. "
            f"The goal, {GOAL_RATIO:g}x with at most {GOAL_DROP:g} point lost on every model "
            f"of every family, is {'met' if met else 'not met'} in this run. "
            + " ".join(
                f"Ours beats {b} on {len(fs)} of {len(families)} families (more x fewer "
                f"bytes, or {b} past {GOAL_DROP:g} point where ours is within it)"
                + (
                    f"; not on {', '.join(f for f in families if f not in fs)}."
                    if len(fs) < len(families)
                    else "."
                )
                for b, fs in beats.items()
            )
            + " A run of ours "
            f"took {min(time):.1f}-{max(time):.1f} s per family (single timings on a shared "
            "machine)."
        ),
        "",
        "![Bytes against worst accuracy drop per method and family](figures/dedup_budget.png)",
    ]
    return "\n".join(lines) + "\n"


def dedup_time(results: Results) -> str:
    """docs/dedup.md, Figures: what a whole dedup call took."""
    seconds = [
        results.table(f"bench_dedup.{c}.track_dedup_seconds")[APPROX_METHOD,] for c in FAMILIES
    ]
    info = results.machine([f"bench_dedup.{c}.track_dedup_seconds" for c in FAMILIES])
    time = (
        "- **Time.** A whole run with the defaults (search, ladders, the budget search's "
        f"validations, clean-up; `track_dedup_seconds`) took {seconds[0]:.1f} s for the "
        f"default family and {seconds[1]:.1f} s for the large one: single timings on a "
        f"shared machine, {info['cpu'].split(';')[0]}, commit {', '.join(info['commits'])}."
    )
    return (
        textwrap.fill(
            time, 91, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
        )
        + "\n"
    )


def packing_figure(results: Results) -> str:
    """docs/packing.md: the picture of the asv figures (capacities of the benchmark)."""
    capacities = results.params(AMPLIFICATION)[1]
    return (
        "![Read amplification and pages over the bound by packing strategy]"
        "(figures/packing_amplification.png)\n\n"
        f"(asv `bench_packing.Strategies`, capacities {', '.join(map(str, capacities))}, "
        "drawn by `make figures`.)\n"
    )


PACKING_DEFAULT = "affinity"  # packing.DEFAULT_STRATEGY (tests/test_figures.py checks)


def packing_table(results: Results) -> str:
    """docs/packing.md, Figures: pages over the bound / amplification by strategy."""
    amp, pages = results.table(AMPLIFICATION), results.table(PAGES_VS_BOUND)
    strategies, capacities, bys = results.params(AMPLIFICATION)
    lines = [
        _para(
            "Total pages over their lower bound / mean read amplification on "
            "`family_instance(seed=0)` (12 models of 2,000 blocks, 75 % of each shared: a "
            "base, sub-families, neighbours), by model and by tensor (4 tensors a model); "
            "asv's `bench_packing.Strategies` (`track_pages_vs_bound`, "
            "`track_mean_amplification`), counts, not timings. The last column is "
            f"{PACKING_DEFAULT}'s amplification overhead (mean amplification - 1) over "
            "two-stage's."
        ),
        "",
        "| groups | capacity | " + " | ".join(strategies) + " | overhead vs two-stage |",
        "|---" * (len(strategies) + 3) + "|",
    ]
    for by in bys:
        for c in capacities:
            cells = []
            for st in strategies:
                cell = f"{pages[st, c, by]:.3f} / {amp[st, c, by]:.4f}"
                cells.append(f"**{cell}**" if st == PACKING_DEFAULT else cell)
            base = amp["two-stage", c, by] - 1
            over = f"{(amp[PACKING_DEFAULT, c, by] - 1) / base:.2f}" if base > 0 else ""
            lines.append(f"| {by} | {c} | " + " | ".join(cells) + f" | {over} |")
    return "\n".join(lines) + "\n"


CHECKS = "bench_checksums"


def _size(nbytes: int) -> str:
    return f"{nbytes // 2**20} MiB" if nbytes >= 2**20 else f"{nbytes // 2**10} KiB"


def checksums_table(results: Results) -> str:
    """docs/benchmarks.md, Page checksums: the asv figures of bench_checksums."""
    cached = results.table(f"{CHECKS}.CachedServing.track_cached_overhead")
    cold = results.table(f"{CHECKS}.ColdRead.track_cold_overhead")
    cold_s = results.table(f"{CHECKS}.ColdRead.time_cold_get_tensor")
    speed = results.table(f"{CHECKS}.Checksum.track_gb_s")
    info = results.machine([f"{CHECKS}.CachedServing.track_cached_overhead"])
    cached_cell = "; ".join(f"n = {n}: {v:.3f}" for (n,), v in cached.items())
    cold_cell = "; ".join(
        f"n = {n} ({_size(4 * n * n)}, {cold_s[n,] * 1e3:.1f} ms checked): {v:.2f}"
        for (n,), v in cold.items()
    )
    speed_cell = "; ".join(f"{_size(b)}: {v:.1f} GB/s" for (b,), v in speed.items())
    return (
        f"| benchmark | figure ({machine_line(info)}; generated by `make figures`) |\n"
        "|---|---|\n"
        "| `CachedServing.track_cached_overhead(n)`: Store.predict, dense n x n + bias, "
        f"batch 1, every page cached, checked s / unchecked s | {cached_cell}. "
        "**Target <= 1.03** |\n"
        "| `ColdRead.track_cold_overhead(n)`: Store.get_tensor of an n x n float32 tensor "
        "with the pool cleared, every page read from SQLite (OS cache warm) and checksummed "
        f"| {cold_cell} |\n"
        f"| `Checksum.track_gb_s(bytes)`: `_engine.page_checksum` on one core | {speed_cell} |\n"
    )


DENSE = "bench_inference.Dense.track_ratio"
DENSE_TARGETS = {1: 0.9, 2: 0.8}  # batch 1, by threads (issue #17)


def dense_table(results: Results) -> str:
    """docs/benchmarks.md, batch 1: asv Dense.track_ratio by size and threads."""
    ratio = results.table(DENSE)
    sizes, batches, threads = results.params(DENSE)
    info = results.machine([DENSE])
    head = " | ".join(f"{n} ({_size(4 * n * n)})" for n in sizes)
    lines = [
        f"| numpy / ours, batch 1 | {head} | target |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for t in threads:
        cells = " | ".join(f"{ratio[n, 1, t]:.2f}" for n in sizes)
        lines.append(
            f"| {t} thread{'s' if t > 1 else ''} | {cells} | >= {DENSE_TARGETS.get(t, '-')} |"
        )
    batch = "; ".join(  # measured at one size only: the others are skipped (nan)
        f"{b} at {n}, {t} thread{'s' if t > 1 else ''}: {ratio[n, b, t]:.2f}"
        for b in batches
        if b > 1
        for n in sizes
        for t in threads
        if not math.isnan(ratio[n, b, t])
    )
    return (
        "\n".join(lines)
        + f"\n\nasv `Dense.track_ratio` ({machine_line(info)}; generated by `make figures`)."
        + (f" Batch {batch}." if batch else "")
        + "\n"
    )


def plots_section(results: Results) -> str:
    """docs/benchmarks.md: every plot, where its numbers come from."""
    timing = results.machine([f"{BUDGET}.track_p50_ms"])
    seconds = results.setup_seconds(f"{BUDGET}.track_p50_ms")
    took = (
        f" `bench_budget` took {seconds / 60:.0f} minutes of that run (all its replays are "
        "in its `setup_cache`), and as long in `make bench`."
        if seconds
        else ""
    )
    return f"""`make figures` (`python -m tools.figures`) draws these from the asv results committed in
`asv_bench/results/` (the files it used are listed in `docs/figures/sources.json`) and
rewrites every table, and every sentence quoting a benchmark's figure, of the docs that
sits between `<!-- figures:... -->` markers; run it after `make bench`.
`tests/test_figures.py` fails when such a region differs from what the committed results
give. Misses, bytes and read amplification do not depend on timing; the latency plot does.

| plot | from |
|---|---|
| [bytes stored per model family](figures/dedup_bytes.png) | `bench_store.Dedup`, `bench_dedup.*Family`: `track_logical_mib`, `track_physical_mib` |
| [bytes against accuracy drop, every trained family](figures/dedup_budget.png) | `bench_dedup_families.Families`: `track_times_fewer_bytes`, `track_worst_test_drop` |
| [misses over Belady's by policy and budget](figures/cache_misses.png) | `bench_cache.PolicyMisses.track_vs_opt`, `StaticOracle` |
| [latency against the pool's budget](figures/latency_budget.png) | `bench_budget.ServingBudget` |
| [read amplification by packing strategy](figures/packing_amplification.png) | `bench_packing.Strategies` |
| [encoder throughput and serving latency](figures/encoders.png) | `bench_encoders.EncoderThroughput`, `EncoderServing` |

![Serving latency against the buffer pool's budget](figures/latency_budget.png)

{_para(f"The latency plot is a timing on a noisy machine shared with other work ({machine_line(timing)}). Each replay serves 200 warm-up requests from an empty pool, then times 1,000 one by one; every policy and budget is replayed {BUDGET_ROUNDS} times, round by round, interleaved so that drift moves them alike. A line is the lowest of the {BUDGET_ROUNDS} replays' median latencies (other work only ever adds time), the band reaches up to their median; compare points side by side, not with another machine. The MiB read per request (right) does not depend on timing: from a cold disk it is the figure that carries over.{took}")}
"""


ENC = "bench_encoders"
ENC_THROUGHPUT = f"{ENC}.EncoderThroughput"
ENC_SERVING = f"{ENC}.EncoderServing"
ENC_DEDUP = f"{ENC}.EncoderFamilyDedup"
ENC_MODELS = f"{ENC}.EncoderFamilyModels.track_score"
ENC_SIDES = {  # bench_encoders.SIDES as the docs name them
    "ours": "sqlite-tensor `Store.embed`",
    "sentence-transformers": "sentence-transformers (PyTorch 2.13 CPU)",
    "torch": "`torch.nn.functional` forward (`testing.torch_bert`)",
}
ENC_THROUGHPUT_BAR = 0.8  # issue 15: at least 0.8x of PyTorch's throughput
ENC_SERVING_BAR = 3.0  # issue 15: at least 3x faster at p50 than loading each model whole
ENC_FAMILY_MAX_DROP = 0.01  # bench_encoders.FAMILY_MAX_DROP (tests/test_figures.py checks)


def encoders_throughput(results: Results) -> str:
    """docs/encoders.md: sentences per second, ours and the PyTorch references."""
    rates = results.table(f"{ENC_THROUGHPUT}.track_sentences_per_s")
    ratio = results.table(f"{ENC_THROUGHPUT}.track_ratio")
    threads, sides = results.params(f"{ENC_THROUGHPUT}.track_sentences_per_s")
    info = results.machine([f"{ENC_THROUGHPUT}.track_sentences_per_s"])
    head = " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads)
    lines = [f"| sentences/s ({machine_line(info)}) | {head} |", "|---|" + "---|" * len(threads)]
    for side in sides:
        cells = " | ".join(f"{rates[t, side]:.1f}" for t in threads)
        lines.append(f"| {ENC_SIDES.get(side, side)} | {cells} |")
    cells = " | ".join(f"**{ratio[t, 'ours']:.2f}**" for t in threads)
    lines.append(
        f"| ours / strongest reference, median over rounds (bar >= {ENC_THROUGHPUT_BAR}) | {cells} |"
    )
    worst = min(ratio[t, "ours"] for t in threads)
    verdict = "meets" if worst >= ENC_THROUGHPUT_BAR else "misses"
    return (
        "\n".join(lines)
        + "\n\n"
        + _para(
            f"Medians of rounds in one asv run, each round timing every side in turn (three calls "
            f"each) with the same thread count (`sqlite_tensor.set_threads`, "
            f"`torch.set_num_threads`), on a machine shared with other work: compare the sides, "
            f"not the absolute rates. The lowest ratio, {worst:.2f}, {verdict} the bar of "
            f"{ENC_THROUGHPUT_BAR}."
        )
        + "\n"
    )


def encoders_serving(results: Results) -> str:
    """docs/encoders.md: p50/p99 per request, 8 fine-tunes under a budget of two models."""
    lat = results.table(f"{ENC_SERVING}.track_latency_ms")
    faster = results.table(f"{ENC_SERVING}.track_times_faster")
    resident = results.table(f"{ENC_SERVING}.track_resident_mb")
    info = results.machine([f"{ENC_SERVING}.track_latency_ms"])
    # one model's bytes: the family's separate copies over its models (all the same size)
    models, _ = results.params(ENC_MODELS)
    one_model = results.table(f"{ENC_DEDUP}.track_mib")["separate",] / len(models)
    label = {
        "budget": "files held to the budget (evicted files leave the OS page cache)",
        "warm": "every file left in the OS page cache (outside the budget)",
    }
    lines = [
        f"| ms per request ({machine_line(info)}) | ours p50 | ours p99 | load whole p50 "
        "| load whole p99 | times faster p50 | times faster p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in ("budget", "warm"):
        lines.append(
            f"| {label[mode]} | {lat[mode, 'ours', 'p50']:.1f} | {lat[mode, 'ours', 'p99']:.1f} "
            f"| {lat[mode, 'load-whole', 'p50']:.1f} | {lat[mode, 'load-whole', 'p99']:.1f} "
            f"| **{faster[mode, 'ours', 'p50']:.1f}** | {faster[mode, 'ours', 'p99']:.1f} |"
        )
    p50 = faster["budget", "ours", "p50"]
    verdict = "meets" if p50 >= ENC_SERVING_BAR else "misses"
    return (
        "\n".join(lines)
        + "\n\n"
        + _para(
            "A request embeds (embedders) or classifies (classifiers) one short test sentence with "
            "one of the 8 fine-tunes, drawn at random (seeded); 400 requests after 40 of warm-up, "
            "one thread, the two sides taking turns over blocks of 40 requests. Ours: one store "
            "holding the base and the family (exact dedup), the buffer pool's budget two models' "
            f"bytes ({2 * one_model:.1f} MiB); the pool held "
            f"{resident['budget', 'ours', 'p50']:.1f} MiB at the end. Load whole: each fine-tune's "
            "safetensors loaded into a `torch.nn.functional` forward, at most two at a time (LRU). "
            f"Held to the budget, ours is {p50:.1f}x faster at p50: it {verdict} the bar of "
            f"{ENC_SERVING_BAR:g}x."
        )
        + "\n"
    )


def _encoder_family_sets() -> tuple[int, int, int]:
    """The default encoder family's train, validation and test sizes, read from its source
    (importing it needs the built package)."""
    source = (ROOT / "sqlite_tensor" / "testing" / "encoder_family.py").read_text()
    found = re.search(r'"default": dict\(n=\((\d+), (\d+), (\d+)\)', source)
    if found is None:
        raise SystemExit("encoder_family.py: no CONFIG['default'] n=(train, val, test) found")
    return tuple(int(g) for g in found.groups())


def encoders_dedup(results: Results) -> str:
    """docs/encoders.md: bytes of the fine-tune family and each model's score."""
    mib = results.table(f"{ENC_DEDUP}.track_mib")
    fewer = results.table(f"{ENC_DEDUP}.track_times_fewer_bytes")
    scores = results.table(ENC_MODELS)
    models, _figures = results.params(ENC_MODELS)
    lines = [
        "| stored | MiB | times fewer bytes than separate copies |",
        "|---|---|---|",
    ]
    names = {
        "separate": "separate copies",
        "exact": "exact dedup",
        "approximate": "approximate dedup",
    }
    for (kind,), v in mib.items():
        lines.append(f"| {names.get(kind, kind)} | {v:.1f} | {fewer[kind,]:.2f} |")
    lines += [
        "",
        "| model | test score before | after | drop | mean cosine of its embeddings after with "
        "its own before |",
        "|---|---|---|---|---|",
    ]
    for m in models:
        before, after, cos = (scores[m, f] for f in ("before", "after", "cosine"))
        cos_cell = "" if cos != cos else f"{cos:.4f}"
        lines.append(f"| {m} | {before:.3f} | {after:.3f} | {before - after:.3f} | {cos_cell} |")
    worst = max(scores[m, "before"] - scores[m, "after"] for m in models)
    _n_train, n_val, n_test = _encoder_family_sets()
    return (
        "\n".join(lines)
        + "\n\n"
        + _para(
            f"Approximate dedup ran with max_drop {ENC_FAMILY_MAX_DROP} on the validation sets "
            f"({n_val:,} sentences: one sentence is {1 / n_val:.4f}); the scores are the test "
            f"sets' ({n_test:,} sentences; embedders: retrieval accuracy; classifiers: accuracy; "
            "the base: agreement with its own embeddings). The largest test drop is "
            f"{worst:.3f}."
        )
        + "\n"
    )


def _label_bar(ax, x, value, text: str, *, fontsize: int = 7, lift: int = 2) -> None:
    """Write text just above the bar at (x, value)."""
    ax.annotate(
        text,
        (x, value),
        ha="center",
        va="bottom",
        fontsize=fontsize,
        xytext=(0, lift),
        textcoords="offset points",
    )


BUDGET_ROUNDS = 5  # bench_budget.ROUNDS (not imported: the benchmarks need the package built)

REGIONS = {
    ("cache.md", "cache-table"): cache_table,
    ("benchmarks.md", "cache-seeds-table"): cache_seeds_table,
    ("benchmarks.md", "plots"): plots_section,
    ("dedup.md", "dedup-bytes"): dedup_table,
    ("dedup.md", "dedup-methods"): dedup_methods,
    ("dedup.md", "dedup-reading"): dedup_reading,
    ("dedup.md", "dedup-families"): dedup_families,
    ("dedup.md", "dedup-time"): dedup_time,
    ("benchmarks.md", "dedup-summary"): dedup_summary,
    ("cache.md", "cache-reading"): cache_reading,
    ("benchmarks.md", "cache-seeds-reading"): cache_seeds_reading,
    ("packing.md", "packing-figure"): packing_figure,
    ("packing.md", "packing-table"): packing_table,
    ("benchmarks.md", "checksums-table"): checksums_table,
    ("encoders.md", "encoders-throughput"): encoders_throughput,
    ("encoders.md", "encoders-serving"): encoders_serving,
    ("encoders.md", "encoders-dedup"): encoders_dedup,
    ("benchmarks.md", "dense-batch1"): dense_table,
}

SOURCE_BENCHMARKS = [
    POLICY_MISSES,
    ORACLE,
    OPT_RATIO,
    AMPLIFICATION,
    PAGES_VS_BOUND,
    *(f"{BUDGET}.track_{n}" for n in ("p50_ms", "p50_best_ms", "read_mib_per_request")),
    *(f"bench_dedup.{c}.track_{n}" for c in FAMILIES for n in ("logical_mib", "physical_mib")),
    "bench_store.Dedup.track_logical_mib",
    "bench_store.Dedup.track_physical_mib",
    *(
        f"bench_dedup.{c}.track_{n}"
        for c in FAMILIES
        for n in (
            "times_fewer_bytes",
            "worst_accuracy_drop",
            "search_speedup_over_exhaustive",
            "savings_vs_exhaustive",
            "inference_time_vs_exact",
        )
    ),
    BUDGET_PAGES,
    BASE_PAGES,
    *(f"{FAMILY_RUNS}.track_{n}" for n in ("times_fewer_bytes", "worst_test_drop", "seconds")),
    *(f"bench_dedup.{c}.track_dedup_seconds" for c in FAMILIES),
    *(
        f"{CHECKS}.{n}"
        for n in (
            "CachedServing.track_cached_overhead",
            "ColdRead.track_cold_overhead",
            "ColdRead.time_cold_get_tensor",
            "Checksum.track_gb_s",
        )
    ),
    f"{ENC_THROUGHPUT}.track_sentences_per_s",
    f"{ENC_THROUGHPUT}.track_ratio",
    *(f"{ENC_SERVING}.track_{n}" for n in ("latency_ms", "times_faster", "resident_mb")),
    *(f"{ENC_DEDUP}.track_{n}" for n in ("mib", "times_fewer_bytes")),
    ENC_MODELS,
    DENSE,
]


# -- the plots -----------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return matplotlib, plt


def _save(fig, name: str) -> bytes:
    import io

    buf = io.BytesIO()
    # no Software/date chunks: the same results give the same bytes
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _colors(policies: list[str]) -> dict[str, str]:
    """The default policy red, the others the rest of matplotlib's cycle, in order."""
    others = [f"C{i}" for i in range(10) if i != 3]
    rest = [p for p in policies if p != DEFAULT_POLICY]
    return {DEFAULT_POLICY: "C3", **{p: others[i % len(others)] for i, p in enumerate(rest)}}


def _footer(fig, text: str, height: float = 0.03) -> None:
    """The plot's source line at the bottom, the axes laid out above its height."""
    fig.text(0.01, 0.01, text, fontsize=7, color="0.35", ha="left", va="bottom")
    fig.tight_layout(rect=(0, height, 1, 1))


def plot_cache_misses(results: Results, plt):
    policies, fractions = _policies(results), _fractions(results)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    x = [f * 100 for f in fractions]
    for i, p in enumerate(policies):
        stats = [_seed_stats(results, POLICY_MISSES, p, f) for f in fractions]
        med = [s[0] for s in stats]
        err = [[m - s[1] for m, s in zip(med, stats)], [s[2] - m for m, s in zip(med, stats)]]
        default = p == DEFAULT_POLICY
        ax.errorbar(
            [v + (i - len(policies) / 2) * 0.35 for v in x],
            med,
            yerr=err,
            marker="o",
            ms=4,
            capsize=2,
            lw=2.5 if default else 1.2,
            zorder=3 if default else 2,
            color=_colors(policies)[p],
            label=f"{p} (default)" if default else p,
        )
    oracle = [_seed_stats(results, ORACLE, f)[0] for f in fractions]
    ax.plot(x, oracle, "k--", lw=1.5, label="static oracle")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x, [_pct(f) for f in fractions])
    ax.set_xlabel("pool budget, fraction of the family's distinct page bytes")
    ax.set_ylabel("misses / Belady's (opt) misses, log scale")
    seeds = results.params(POLICY_MISSES)[2]
    ax.set_title(
        f"Misses against Belady's bound: family_trace, median and range of {len(seeds)} seeds"
    )
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    info = results.machine([POLICY_MISSES])
    _footer(
        fig,
        f"asv bench_cache.PolicyMisses / StaticOracle; simulated misses (not a timing); "
        f"commit {', '.join(info['commits'])}",
    )
    return fig


def plot_latency_budget(results: Results, plt):
    best = results.table(f"{BUDGET}.track_p50_best_ms")
    p50 = results.table(f"{BUDGET}.track_p50_ms")
    read = results.table(f"{BUDGET}.track_read_mib_per_request")
    policies, fractions = results.params(f"{BUDGET}.track_p50_ms")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.6))
    x = [f * 100 for f in fractions]
    for p in policies:
        color = _colors(policies)[p]
        label = f"{p} (default)" if p == DEFAULT_POLICY else p
        lo, mid = [best[p, f] for f in fractions], [p50[p, f] for f in fractions]
        ax.plot(x, lo, "-o", ms=4, color=color, lw=2 if p == DEFAULT_POLICY else 1.2, label=label)
        ax.fill_between(x, lo, mid, color=color, alpha=0.12, lw=0)
        bx.plot(x, [read[p, f] for f in fractions], "-o", ms=4, color=color, label=label)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("pool budget, % of the family's distinct page bytes")
    ax.set_ylabel("median request latency, ms")
    ax.set_title(
        f"Latency: best of {BUDGET_ROUNDS} replays (band: up to their median)", fontsize=10
    )
    ax.legend(fontsize=8)
    bx.set_ylim(bottom=0)
    bx.set_xlabel("pool budget, % of the family's distinct page bytes")
    bx.set_ylabel("MiB read on misses per request")
    bx.set_title("Bytes read per request (not a timing)", fontsize=10)
    bx.legend(fontsize=8)
    for a in (ax, bx):
        a.set_xticks(x, [f"{v:g}" for v in x])
        a.grid(True, alpha=0.3)
    fig.suptitle(
        "Serving 12 MLPs sharing 73 % of their bytes (Store.predict, batch 1, one "
        "kernel thread), against the pool's budget",
        fontsize=10,
    )
    info = results.machine([f"{BUDGET}.track_p50_ms"])
    _footer(fig, f"Timing on a noisy shared machine: {machine_line(info)}", height=0.04)
    return fig


def plot_dedup_bytes(results: Results, plt):
    rows = dedup_rows(results)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    kinds = ["separate files", "exact dedup", f"approximate dedup ({APPROX_METHOD})"]
    width = 0.26
    for j, kind in enumerate(kinds):
        for i, (_label, logical, *stored) in enumerate(rows):
            v = logical if j == 0 else stored[j - 1]
            x = i + (j - 1) * width
            if v is None:
                ax.text(
                    x,
                    0.02,
                    "approximate:\nnot run\n(untrained)",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="0.4",
                    transform=ax.get_xaxis_transform(),
                )
                continue
            ax.bar(x, v, width, color=["0.6", "C0", "C2"][j], label=kind if i == 3 else None)
            _label_bar(ax, x, v, f"{v:.1f}" if j == 0 else f"{v:.1f}\n{logical / v:.2f}x")
    ax.set_xticks(range(len(rows)), [r[0].replace(": ", ":\n") for r in rows], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("MiB stored, five models (log scale)")
    ax.set_title("Bytes stored per model family: a base and four variants", fontsize=10)
    ax.set_ylim(0.5, max(r[1] for r in rows) * 3)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    names = [
        "bench_store.Dedup.track_physical_mib",
        *(f"bench_dedup.{c}.track_physical_mib" for c in FAMILIES),
    ]
    info = results.machine(names)
    _footer(
        fig,
        f"asv bench_store.Dedup, bench_dedup; bytes, not a timing; "
        f"commit {', '.join(info['commits'])}",
    )
    return fig


def plot_dedup_budget(results: Results, plt):
    ratio, drop, _seconds, families, methods, keys, main = _family_figures(results)
    cols = 3
    rows = -(-len(families) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3.4 * rows), squeeze=False)
    style = {m: (f"C{i}", "os^Dv"[i % 5]) for i, m in enumerate(methods)}
    for ax, f in zip(axes.flat, families):
        for m in methods:
            color, marker = style[m]
            pts = [(drop[f, m, k], ratio[f, m, k]) for k in keys]
            pts = [p for p in pts if p[0] == p[0] and p[1] == p[1]]
            if m in (FAMILY_OURS, "low-rank deltas"):  # a setting: one point per budget
                pts.sort()
                ax.plot(*zip(*pts), marker=marker, color=color, label=m, lw=1.2, ms=4)
            else:
                ax.plot(drop[f, m, main], ratio[f, m, main], marker, color=color, label=m, ms=6)
        ax.axhline(GOAL_RATIO, color="0.5", lw=0.8, ls="--")
        ax.axvline(GOAL_DROP, color="0.5", lw=0.8, ls="--")
        split = "fit" if f in FAMILY_FIT else "held out"
        ax.set_title(f"{f} ({split})", fontsize=9)
        ax.set_xlabel("worst test drop (points)", fontsize=8)
        ax.set_ylabel("x fewer bytes", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(families) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    info = results.machine([f"{FAMILY_RUNS}.track_times_fewer_bytes"])
    _footer(
        fig,
        f"asv {FAMILY_RUNS}; budgets {', '.join(f'{float(k):g}' for k in keys)} on "
        f"validation (lines); single points at {FAMILY_MAX_DROP:g}; dashed: 4x, 1 point; "
        f"commit {', '.join(info['commits'])}",
    )
    return fig


def plot_packing(results: Results, plt):
    amp, pages = results.table(AMPLIFICATION), results.table(PAGES_VS_BOUND)
    strategies, capacities, bys = results.params(AMPLIFICATION)
    fig, axes = plt.subplots(2, len(bys), figsize=(10, 6), sharex=True)
    width = 0.8 / len(capacities)
    for col, by in enumerate(bys):
        for row, (table, ylabel) in enumerate(
            [
                (amp, "mean read amplification\n(pages read / bound)"),
                (pages, "total pages / lower bound"),
            ]
        ):
            a = axes[row][col]
            for j, c in enumerate(capacities):
                xs = [i + (j - (len(capacities) - 1) / 2) * width for i in range(len(strategies))]
                values = [table[s, c, by] for s in strategies]
                a.bar(
                    xs,
                    [v - 1 for v in values],
                    width,
                    bottom=1,
                    label=f"capacity {c} blocks a page",
                    color=f"C{j}",
                )
                for xv, v in zip(xs, values):
                    _label_bar(a, xv, v, f"{v:.3f}", fontsize=6, lift=1)
            a.axhline(1.0, color="0.3", lw=0.8)
            top = max(table[s, c, by] for s in strategies for c in capacities)
            a.set_ylim(1.0, 1.0 + max(top - 1.0, 1e-3) * 1.12)  # room for the labels
            a.set_ylabel(ylabel)
            a.grid(True, axis="y", alpha=0.3)
            if row == 0:
                a.set_title(f"groups by {by}")
            a.set_xticks(range(len(strategies)), strategies)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        "Read amplification by packing strategy: family_instance(seed=0), "
        "12 models of 2,000 blocks (1.0 = the bound)",
        fontsize=10,
    )
    _footer(fig, "asv bench_packing.Strategies; counts of pages, not a timing")
    return fig


def plot_encoders(results: Results, plt):
    rates = results.table(f"{ENC_THROUGHPUT}.track_sentences_per_s")
    threads, sides = results.params(f"{ENC_THROUGHPUT}.track_sentences_per_s")
    lat = results.table(f"{ENC_SERVING}.track_latency_ms")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2))
    width = 0.8 / len(sides)
    for j, side in enumerate(sides):
        xs = [i + (j - (len(sides) - 1) / 2) * width for i in range(len(threads))]
        vals = [rates[t, side] for t in threads]
        a.bar(xs, vals, width, color=["C3", "C0", "C1"][j % 3], label=side)
        for x, v in zip(xs, vals):
            _label_bar(a, x, v, f"{v:.1f}")
    a.set_xticks(range(len(threads)), [f"{t} thread{'s' if t > 1 else ''}" for t in threads])
    a.set_ylabel("sentences/s (batch 32 x 128 tokens)")
    a.set_title("Throughput: all-MiniLM-L6-v2", fontsize=10)
    a.legend(fontsize=8, loc="lower right")
    a.grid(True, axis="y", alpha=0.3)
    groups = [("budget", "held to budget"), ("warm", "OS cache warm")]
    for j, (side, color) in enumerate((("ours", "C3"), ("load-whole", "0.5"))):
        for k, pct in enumerate(("p50", "p99")):
            xs = [i + (2 * j + k - 1.5) * 0.2 for i in range(len(groups))]
            vals = [lat[g, side, pct] for g, _ in groups]
            b.bar(
                xs,
                vals,
                0.2,
                color=color,
                alpha=1.0 if pct == "p50" else 0.55,
                label=f"{'ours' if side == 'ours' else 'load each whole'} {pct}",
            )
            for x, v in zip(xs, vals):
                _label_bar(b, x, v, f"{v:.0f}")
    b.set_xticks(range(len(groups)), [g[1] for g in groups])
    b.set_ylabel("ms per request")
    b.set_title("8 fine-tunes, memory of 2 models", fontsize=10)
    b.legend(fontsize=8, loc="upper left")
    b.grid(True, axis="y", alpha=0.3)
    info = results.machine(
        [f"{ENC_THROUGHPUT}.track_sentences_per_s", f"{ENC_SERVING}.track_latency_ms"]
    )
    _footer(
        fig,
        f"asv bench_encoders; timings on a shared machine, compare side by side; "
        f"commit {', '.join(info['commits'])}",
        height=0.04,
    )
    return fig


PLOTS = {
    "cache_misses.png": plot_cache_misses,
    "latency_budget.png": plot_latency_budget,
    "dedup_bytes.png": plot_dedup_bytes,
    "dedup_budget.png": plot_dedup_budget,
    "packing_amplification.png": plot_packing,
    "encoders.png": plot_encoders,
}


def render(results: Results) -> dict[str, bytes]:
    """Every plot's PNG bytes, by file name."""
    matplotlib, plt = _pyplot()
    out = {}
    # matplotlib's defaults, whatever a matplotlibrc says: the same bytes everywhere
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        matplotlib.rcParams["svg.hashsalt"] = "sqlite-tensor"
        for name, draw in PLOTS.items():
            fig = draw(results, plt)
            try:
                out[name] = _save(fig, name)
            finally:
                plt.close(fig)
    return out


# -- the docs ------------------------------------------------------------------------------


def generate(results: Results) -> dict[tuple[str, str], str]:
    return {key: make(results) for key, make in REGIONS.items()}


def rewrite(text: str, doc: str, regions: dict[tuple[str, str], str]) -> str:
    """text with each region of doc replaced by the generated one."""

    def sub(m):
        key = (doc, m.group(2))
        if key not in regions:
            raise SystemExit(f"docs/{doc}: region {m.group(2)!r} is not one tools/figures.py makes")
        return m.group(1) + regions[key] + m.group(4)

    return REGION.sub(sub, text)


def doc_regions(text: str) -> dict[str, str]:
    return {m.group(2): m.group(3) for m in REGION.finditer(text)}


def check_docs(regions) -> list[str]:
    """Problems: a region missing from its doc, or differing from what the results give."""
    problems = []
    for (doc, name), want in regions.items():
        have = doc_regions((DOCS / doc).read_text()).get(name)
        if have is None:
            problems.append(f"docs/{doc} has no region {name!r}")
        elif have != want:
            problems.append(
                f"docs/{doc}, region {name!r}, differs from what the results give "
                f"(run `make figures`)"
            )
    return problems


def referenced_images() -> list[tuple[str, Path]]:
    """(doc, image path) for every PNG a doc shows or links."""
    out = []
    for doc in sorted(DOCS.glob("*.md")):
        for target in IMAGE.findall(doc.read_text()) + re.findall(
            r"\]\((figures/[^)\s]+\.png)\)", doc.read_text()
        ):
            out.append((doc.name, (doc.parent / target).resolve()))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.figures", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare the docs' tables with the recorded results; write nothing",
    )
    parser.add_argument("--machine", help="asv machine name (default: the newest results)")
    parser.add_argument("--cpu", action="store_true", help="print this machine's CPU description")
    args = parser.parse_args(argv)
    if args.cpu:
        print(cpu_description())
        return 0
    try:
        if args.check:
            results = Results.recorded()
            problems = check_docs(generate(results))
            problems += [
                f"docs/{doc} shows {p.relative_to(ROOT)}, which does not exist"
                for doc, p in referenced_images()
                if not p.exists()
            ]
            for p in problems:
                print(p, file=sys.stderr)
            return 1 if problems else 0
        results = Results.newest(args.machine)
        regions = generate(results)
        images = render(results)
    except MissingResults as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    FIGURES.mkdir(exist_ok=True)
    for name, data in images.items():
        path = FIGURES / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            print(f"wrote {path.relative_to(ROOT)}")
    for doc in sorted({d for d, _ in regions}):
        path = DOCS / doc
        text = path.read_text()
        missing = [n for d, n in regions if d == doc and n not in doc_regions(text)]
        if missing:
            print(
                f"{parser.prog}: error: docs/{doc} has no region {missing} "
                f"(add <!-- figures:NAME begin --> ... end --> markers)",
                file=sys.stderr,
            )
            return 1
        new = rewrite(text, doc, regions)
        if new != text:
            path.write_text(new)
            print(f"rewrote docs/{doc}")
    import matplotlib

    sources = {
        "machine": results.machine(SOURCE_BENCHMARKS[:1])["machine"],
        "files": results.used_files(SOURCE_BENCHMARKS),
        "matplotlib": matplotlib.__version__,
    }  # the images' bytes depend on it
    SOURCES.write_text(json.dumps(sources, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
