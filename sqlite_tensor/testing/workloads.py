"""Seeded workloads for the tests, the benchmarks and the `policies` command: a model
family's serving trace for the buffer pool (family_trace) and a packing instance shaped like
a family of fine-tuned models (family_instance). Same arguments, same result, on every
machine."""

from __future__ import annotations

import math

import numpy as np

from .. import cache


def family_trace(
    *,
    models: int = 12,
    pages_per_model: int = 64,
    shared_fraction: float = 0.75,
    groups: int = 3,
    requests: int = 2000,
    zipf: float = 1.0,
    page_bytes: int = 2**20,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """A serving trace of a model family: (page ids, pages as simulate() takes them).

    Every model reads all its pages in order on each request. shared_fraction of a model's
    pages are the family's base (shared by all models); half the rest are shared within
    one of `groups` groups of models (say, variants fine-tuned alike); the rest are private.
    Requests pick models with Zipf(zipf) popularity, the ranks shuffled by seed.
    """
    if models < 1 or pages_per_model < 1 or requests < 0:
        raise ValueError("models and pages_per_model must be positive, requests >= 0")
    rng = np.random.default_rng(seed)
    n_base = int(round(pages_per_model * shared_fraction))
    n_group = (pages_per_model - n_base) // 2
    n_private = pages_per_model - n_base - n_group
    base = list(range(n_base))
    next_id = n_base
    group_pages = []
    for _ in range(groups):
        group_pages.append(list(range(next_id, next_id + n_group)))
        next_id += n_group
    model_pages, sharing = [], {p: models for p in base}
    members = [0] * groups
    for m in range(models):
        g = m % groups
        members[g] += 1
        private = list(range(next_id, next_id + n_private))
        next_id += n_private
        sharing.update({p: 1 for p in private})
        model_pages.append(base + group_pages[g] + private)
    for g in range(groups):
        sharing.update({p: members[g] for p in group_pages[g]})
    weights = 1.0 / np.arange(1, models + 1) ** zipf
    ranks = rng.permutation(models)
    chosen = rng.choice(models, size=requests, p=weights[ranks] / weights.sum())
    trace = np.concatenate([model_pages[m] for m in chosen]) if requests else np.zeros(0, np.int64)
    pages = {p: (page_bytes, sharing[p]) for p in sharing}
    return trace.astype(np.int64), pages


def family_instance(
    models: int = 12,
    blocks_per_model: int = 2000,
    shared: float = 0.75,
    seed: int = 0,
    by: str = "model",
    tensors: int = 4,
) -> dict[str, set[int]]:
    """A deterministic packing instance shaped like a family of fine-tuned models.

    Models fall into about sqrt(models) sub-families of consecutive models (fine-tunes of one
    checkpoint); each is a retrained version of the one before it in its sub-family. Of a
    model's ``blocks_per_model`` blocks, the ``shared`` fraction is shared: half of it with
    every model (the pretrained base), 30 % within its sub-family and 20 % with its
    neighbours in the sub-family (10 % with each); the rest is private. Every size is jittered
    by up to +-20 % so that classes do not fill pages exactly. Block ids are numbered in
    order of first use, models in order, as a store's ingest numbers them.

    ``by="model"``: one group a model, named ``m<i>``. ``by="tensor"``: one group a tensor,
    named ``m<i>/t<j>``; each of the ``tensors`` tensors (55/25/15/5 % of a model for four, equal
    shares otherwise) is its own family of the same shape, sharing only with the same
    tensor of other models.
    """
    if isinstance(models, bool) or not isinstance(models, int) or models < 1:
        raise ValueError(f"models must be a positive int, got {models!r}")
    if (
        isinstance(blocks_per_model, bool)
        or not isinstance(blocks_per_model, int)
        or blocks_per_model < 1
    ):
        raise ValueError(f"blocks_per_model must be a positive int, got {blocks_per_model!r}")
    if not 0.0 <= shared <= 1.0:
        raise ValueError(f"shared must be within [0, 1], got {shared!r}")
    if by not in ("model", "tensor"):
        raise ValueError(f"by must be 'model' or 'tensor', got {by!r}")
    rng = np.random.default_rng(seed)
    if by == "tensor":
        if isinstance(tensors, bool) or not isinstance(tensors, int) or tensors < 1:
            raise ValueError(f"tensors must be a positive int, got {tensors!r}")
        share = (
            np.array([0.55, 0.25, 0.15, 0.05]) if tensors == 4 else np.full(tensors, 1 / tensors)
        )
        per_tensor, offset = [], 0
        for t in range(tensors):
            fam = family_instance(
                models,
                max(1, round(blocks_per_model * share[t])),
                shared,
                int(rng.integers(2**31)),
                "model",
            )
            per_tensor.append({name: {b + offset for b in ids} for name, ids in fam.items()})
            offset += max(max(ids) for ids in fam.values()) + 1
        return {f"m{i}/t{t}": per_tensor[t][f"m{i}"] for i in range(models) for t in range(tensors)}

    def jitter(x: float) -> int:
        return int(round(x * rng.uniform(0.8, 1.2))) if x > 0 else 0

    n_sub = max(1, round(math.sqrt(models)))
    sub = [[i for i in range(models) if i * n_sub // models == s] for s in range(n_sub)]
    B = blocks_per_model
    parts = [(list(range(models)), jitter(B * shared * 0.5))]  # the base
    for mem in sub:
        if len(mem) > 1:
            parts.append((mem, jitter(B * shared * 0.3)))  # the sub-family
            parts += [([a, b], jitter(B * shared * 0.1)) for a, b in zip(mem, mem[1:])]
    parts += [([i], jitter(B * (1 - shared))) for i in range(models)]  # private
    out, next_id, first = {}, 0, {}
    for i in range(models):
        ids = set()
        for j, (mem, size) in enumerate(parts):
            if i in mem and size:
                if j not in first:
                    first[j] = next_id
                    next_id += size
                ids.update(range(first[j], first[j] + size))
        if not ids:  # all of a tiny model's parts rounded to nothing: give it one block
            ids = {next_id}
            next_id += 1
        out[f"m{i}"] = ids
    return out


BUDGET_FRACTIONS = (0.25, 0.5, 0.75)


def policy_table() -> dict:
    """Misses / Belady's for every policy on family_trace(), at 25/50/75 % of the distinct
    bytes: {accesses, pages, rows: [{budget_fraction, budget_bytes, policy, misses, vs_opt,
    ...}]} (what ``python -m sqlite_tensor policies`` prints, and gives with --json)."""
    trace, pages = family_trace()
    distinct = sum(b for b, _ in pages.values())
    rows = []
    for frac in BUDGET_FRACTIONS:
        budget = int(distinct * frac)
        compared = cache.compare(trace, pages, budget, cache.policies())
        opt = max(next(r["misses"] for r in compared if r["policy"] == "opt"), 1)
        oracle = cache.static_oracle_misses(trace, pages, budget)
        rows += [{"budget_fraction": frac, "budget_bytes": budget, **r} for r in compared]
        rows.append(
            {
                "budget_fraction": frac,
                "budget_bytes": budget,
                "policy": "static-oracle",
                "misses": oracle,
                "vs_opt": oracle / opt,
            }
        )
    return {"accesses": len(trace), "pages": len(pages), "rows": rows}


def print_policy_table() -> None:
    """Print policy_table() as a table: a row per budget, a column per policy."""
    table = policy_table()
    names = cache.policies()  # the serving policies; opt is the denominator
    print(
        f"family_trace(): {table['accesses']} accesses, {table['pages']} distinct pages; "
        "misses / opt"
    )
    print(f"{'budget':>7} " + " ".join(f"{n:>9}" for n in names) + "  static-oracle")
    for frac in BUDGET_FRACTIONS:
        by_name = {r["policy"]: r for r in table["rows"] if r["budget_fraction"] == frac}
        print(
            f"{frac:>7.0%} "
            + " ".join(f"{by_name[n]['vs_opt']:>9.2f}" for n in names)
            + f"  {by_name['static-oracle']['vs_opt']:>13.2f}"
        )
