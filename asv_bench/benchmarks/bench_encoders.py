"""Encoders (issue 15): all-MiniLM-L6-v2 and its fine-tunes served from the store, beside
PyTorch in the same run. docs/encoders.md gives the figures.

- Throughput: sentences per second embedding batches of 32 texts of 128 tokens each
  (tokenization included on every side), 1 and 2 threads. Ours: Store.embed. References:
  sentence-transformers' ``SentenceTransformer.encode`` (PyTorch 2.13 CPU) and a
  ``torch.nn.functional`` forward of the same safetensors (sqlite_tensor.testing.torch_bert).
  ``track_ratio`` is ours over the strongest reference of each round (the median over
  rounds; each round times every side in turn), bar >= 0.8.
- Serving under a budget: the 8 fine-tunes of sqlite_tensor.testing.encoder_family (4
  embedders, 4 classifiers), requests of one short text each to a model drawn at random
  (seeded); latency per request, p50 and p99, the sides taking turns over blocks of
  BLOCK requests. Ours: one store holding the family (exact
  dedup), the buffer pool's budget two models' bytes. Reference: each fine-tune loaded whole
  from its safetensors into torch (torch_bert; the tokenizer is shared, as all fine-tunes
  have the same one; the files sit in the OS page cache), at most two loaded at a time
  (LRU) -- the same memory budget. Bar: ours >= 3x faster at p50.

Everything is measured once per run in ``setup_cache`` (one process), the track_ methods
report it.
"""

from __future__ import annotations

import collections
import math
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

THREADS = [1, 2]
BATCH, TOKENS = 32, 128
ROUNDS = 5
REQUESTS = 400
WARMUP = 40
BLOCK = 40
SIDES = ("ours", "sentence-transformers", "torch")


def long_texts(tokenizer, n: int, tokens: int, seed: int = 0) -> list[str]:
    """n texts that tokenize to exactly ``tokens`` ids ([CLS] and [SEP] included)."""
    from sqlite_tensor.testing.encoder_family import sentences

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words: list[str] = []
        while True:
            words += sentences(rng, 1)[0].text.split()
            ids = tokenizer.encode(" ".join(words)).ids
            if len(ids) >= tokens:
                break
        while len(tokenizer.encode(" ".join(words)).ids) > tokens:
            words.pop()
        while len(tokenizer.encode(" ".join(words)).ids) < tokens:
            words.append("a")
        out.append(" ".join(words))
    return out


def _best_of(fn, calls: int = 3) -> float:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def throughput(threads_list=THREADS, rounds: int = ROUNDS) -> dict:
    """{(side, threads): sentences/s (median over rounds)} and {threads: median ratio}."""
    import torch
    from sentence_transformers import SentenceTransformer

    import sqlite_tensor
    from sqlite_tensor import Store
    from sqlite_tensor.testing import torch_bert
    from sqlite_tensor.testing.encoder_family import base_folder

    folder = base_folder()
    tok = torch_bert.tokenizer(folder)
    texts = long_texts(tok, BATCH, TOKENS)
    tmp = tempfile.mkdtemp(prefix="st-bench-enc-")
    try:
        store = Store(os.path.join(tmp, "minilm.sqlite"))
        store.add_model("minilm", str(folder))
        st = SentenceTransformer(str(folder), device="cpu")
        st.max_seq_length = TOKENS
        tb = torch_bert.TorchBert(folder)
        ttok = torch_bert.tokenizer(folder, TOKENS)
        sides = {
            "ours": lambda: store.embed("minilm", texts),
            "sentence-transformers": lambda: st.encode(texts, batch_size=BATCH),
            "torch": lambda: tb.embed(*torch_bert.encode(ttok, texts)),
        }
        rates, ratios = {}, {}
        for threads in threads_list:
            sqlite_tensor.set_threads(threads)
            torch.set_num_threads(threads)
            for fn in sides.values():
                fn()  # warm: pages in the pool, torch's kernels chosen
            per = {s: [] for s in sides}
            rs = []
            for _ in range(rounds):
                r = {s: BATCH / _best_of(fn) for s, fn in sides.items()}
                for s in sides:
                    per[s].append(r[s])
                rs.append(r["ours"] / max(r[s] for s in sides if s != "ours"))
            for s in sides:
                rates[(s, threads)] = statistics.median(per[s])
            ratios[threads] = statistics.median(rs)
        store.close()
        return {"rates": rates, "ratios": ratios}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def drop_from_os_cache(path) -> None:
    """Ask the OS to drop a file's cached pages (those not mapped by anyone)."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class LoadWhole:
    """The reference server: fine-tunes loaded whole from safetensors into torch, at most
    ``capacity`` at a time, least recently used evicted. With ``budget`` the evicted model's
    file also leaves the OS page cache, so that the process and the page cache together
    hold at most ``capacity`` models (otherwise the page cache keeps every file, in memory
    outside the budget, and a load is a page-cache copy)."""

    def __init__(self, folders: dict, capacity: int = 2, budget: bool = True):
        from sqlite_tensor.testing import torch_bert

        self.tb, self.folders, self.capacity = torch_bert, folders, capacity
        self.budget = budget
        self.loaded: collections.OrderedDict = collections.OrderedDict()
        self.tok = torch_bert.tokenizer(next(iter(folders.values())))
        self.loads = 0
        if budget:
            for folder in folders.values():
                drop_from_os_cache(folder / "model.safetensors")

    def __call__(self, model: str, text: str):
        m = self.loaded.pop(model, None)
        if m is None:
            while len(self.loaded) >= self.capacity:
                name, old = self.loaded.popitem(last=False)
                del old  # its tensors (and their file mapping) go here
                if self.budget:
                    drop_from_os_cache(self.folders[name] / "model.safetensors")
            m = self.tb.TorchBert(self.folders[model])
            self.loads += 1
        self.loaded[model] = m
        return m.run(*self.tb.encode(self.tok, [text]))


def serving(requests: int = REQUESTS, seed: int = 0, threads: int = 1, budget: bool = True) -> dict:
    """p50/p99 seconds per request for ours and the load-whole reference, and the figures
    around them (budget, bytes, loads). ``budget``: the reference's evicted files leave the
    OS page cache (see LoadWhole); so does the store's file once warm (its pages are in
    the pool by then; a pool miss would read from disk)."""
    import torch

    import sqlite_tensor
    from sqlite_tensor import cache
    from sqlite_tensor.testing import encoder_family

    fam = encoder_family.build()
    names = list(fam.members)
    rng = np.random.default_rng(seed)
    plan = [(names[i], fam.test_texts[j]) for i, j in zip(
        rng.integers(len(names), size=requests + WARMUP),
        rng.integers(len(fam.test_texts), size=requests + WARMUP),
    )]  # fmt: skip
    tmp = tempfile.mkdtemp(prefix="st-bench-serve-")
    saved = cache.stats()
    try:
        store_path = os.path.join(tmp, "family.sqlite")
        store = encoder_family.store_family(fam, store_path)
        one_model = max(m["logical_bytes"] for m in store.model_stats())
        budget = 2 * one_model
        cache.configure(budget_bytes=budget)
        sqlite_tensor.set_threads(threads)
        torch.set_num_threads(threads)
        kinds = {n: fam.members[n].kind for n in names}

        def ours(model, text):
            if kinds[model] == "classifier":
                return store.predict(model, [text])
            return store.embed(model, [text])

        ref = LoadWhole(fam.folders(), capacity=2, budget=budget)
        lat = {"ours": [], "load-whole": []}
        # in blocks of BLOCK requests, each side over the same block in turn: drift on a
        # shared machine moves both sides, and neither runs in the other's cache wake
        for b0 in range(0, len(plan), BLOCK):
            for side, fn in (("ours", ours), ("load-whole", ref)):
                for k in range(b0, min(b0 + BLOCK, len(plan))):
                    model, text = plan[k]
                    t = time.perf_counter()
                    fn(model, text)
                    if k >= WARMUP:
                        lat[side].append(time.perf_counter() - t)
            if budget and b0 + BLOCK >= WARMUP > b0:
                drop_from_os_cache(store_path)
        stats = cache.stats()
        store_stats = store.stats()
        store.close()
        out = {
            "budget_bytes": budget,
            "resident_bytes": stats["resident_bytes"],
            "physical_bytes": store_stats["physical_bytes"],
            "logical_bytes": store_stats["logical_bytes"],
            "reference_loads": ref.loads,
        }
        for side, xs in lat.items():
            out[(side, "p50")] = float(np.percentile(xs, 50))
            out[(side, "p99")] = float(np.percentile(xs, 99))
        out["p50_ratio"] = out[("load-whole", "p50")] / out[("ours", "p50")]
        out["p99_ratio"] = out[("load-whole", "p99")] / out[("ours", "p99")]
        return out
    finally:
        cache.configure(budget_bytes=saved["budget_bytes"])
        shutil.rmtree(tmp, ignore_errors=True)


class EncoderThroughput:
    params = [THREADS, list(SIDES)]
    param_names = ["threads", "side"]
    timeout = 1800

    def setup_cache(self):
        return throughput()

    def track_sentences_per_s(self, out, threads, side):
        return out["rates"].get((side, threads), math.nan)

    track_sentences_per_s.unit = "sentences/s"

    def track_ratio(self, out, threads, side):
        """Ours over the strongest reference (the side parameter is ignored: one figure
        per thread count, reported on the "ours" row)."""
        return out["ratios"][threads] if side == "ours" else math.nan

    track_ratio.unit = "ours / strongest reference (throughput)"


class EncoderServing:
    """``os_cache``: "budget" (the reference's evicted files leave the OS page cache: the
    bar's setting) or "warm" (every file stays in the OS page cache: the reference's best
    case, holding all 8 models' bytes outside the budget)."""

    params = [["budget", "warm"], ["ours", "load-whole"], ["p50", "p99"]]
    param_names = ["os_cache", "side", "percentile"]
    timeout = 1800

    def setup_cache(self):
        return {"budget": serving(budget=True), "warm": serving(budget=False)}

    def track_latency_ms(self, out, os_cache, side, percentile):
        return 1000.0 * out[os_cache][(side, percentile)]

    track_latency_ms.unit = "ms per request"

    def track_times_faster(self, out, os_cache, side, percentile):
        """Load-whole's latency over ours at that percentile (on the "ours" row)."""
        return out[os_cache][f"{percentile}_ratio"] if side == "ours" else math.nan

    track_times_faster.unit = "reference latency / ours"

    def track_resident_mb(self, out, os_cache, side, percentile):
        """The pool's resident bytes after the run, against its budget (ours only)."""
        return out[os_cache]["resident_bytes"] / 2**20 if side == "ours" else math.nan

    track_resident_mb.unit = "MiB"


FAMILY_MAX_DROP = 0.01


class EncoderFamilyDedup:
    """The family (the base and its 8 fine-tunes) stored with exact dedup (adding them),
    then Store.dedup with the family's validators (sqlite_tensor.testing.encoder_family:
    retrieval accuracy for embedders, accuracy for classifiers, agreement with its own
    embeddings for the base) at max_drop FAMILY_MAX_DROP on the validation sets; drops
    measured on the test sets. ``python -m sqlite_tensor.testing.encoder_family --report``
    prints the same table."""

    params = [["separate", "exact", "approximate"]]
    param_names = ["stored"]
    timeout = 1800

    def setup_cache(self):
        from sqlite_tensor.testing import encoder_family

        fam = encoder_family.build()
        tmp = tempfile.mkdtemp(prefix="st-bench-famdedup-")
        try:
            t = time.perf_counter()
            out = encoder_family.dedup_family(
                fam, os.path.join(tmp, "family.sqlite"), max_drop=FAMILY_MAX_DROP
            )
            seconds = time.perf_counter() - t
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows = {r.model: (r.before, r.after, r.agreement) for r in out["rows"]}
        return {
            "bytes": {
                "separate": out["separate"],
                "exact": out["exact"],
                "approximate": out["approx"],
            },
            "rows": rows,
            "seconds": seconds,
        }

    def track_mib(self, out, stored):
        return out["bytes"][stored] / 2**20

    track_mib.unit = "MiB"

    def track_times_fewer_bytes(self, out, stored):
        return out["bytes"]["separate"] / out["bytes"][stored]

    track_times_fewer_bytes.unit = "separate bytes / bytes stored"

    def track_worst_test_drop(self, out, stored):
        """The largest drop of any model's test score (approximate only; exact is lossless)."""
        if stored != "approximate":
            return 0.0
        return max(b - a for b, a, _ in out["rows"].values())

    track_worst_test_drop.unit = "score (test set)"


class EncoderFamilyModels:
    """Per model of the family: its test score before and after approximate dedup, and
    (embedders) the mean cosine of its embeddings after with its own before."""

    params = [
        [
            "all-MiniLM-L6-v2",
            "emb-topic",
            "emb-topic-sentiment",
            "emb-topic-intent",
            "emb-subject",
            "cls-topic",
            "cls-sentiment",
            "cls-intent",
            "cls-opinion",
        ],
        ["before", "after", "cosine"],
    ]
    param_names = ["model", "figure"]
    timeout = 1800
    setup_cache = EncoderFamilyDedup.setup_cache

    def track_score(self, out, model, figure):
        before, after, cosine = out["rows"][model]
        return {"before": before, "after": after, "cosine": cosine}[figure]

    track_score.unit = "test score"
