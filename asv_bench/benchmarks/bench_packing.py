"""Page packing: how close each strategy comes to the bounds, how fast the default packs,
and what a pack does to serving latency (sqlite_tensor.packing, Store.pack)."""

import os
import shutil

import numpy as np

from sqlite_tensor import Store, cache, packing
from sqlite_tensor.testing import workloads
from sqlite_tensor.testing.families import TEXT_CLASSIFIER_LAYERS, text_classifier_family

from .common import median_time

STRATEGIES = [s for s in packing.STRATEGIES if s != "exact"]  # exact: small instances only


class Strategies:
    """family_instance(seed=0) (12 models of 2,000 blocks, 75 % shared), by model and by
    tensor: total pages over the lower bound, and mean read amplification."""

    params = (STRATEGIES, [4, 8, 16, 64], ["model", "tensor"])  # docs/packing.md's table
    param_names = ["strategy", "capacity", "by"]

    def setup(self, strategy, capacity, by):
        self.groups = workloads.family_instance(seed=0, by=by)
        pages = packing.pack(self.groups, capacity, strategy)
        self.figures = packing.evaluate(pages, self.groups, capacity)

    def track_pages_vs_bound(self, strategy, capacity, by):
        return self.figures["total_pages"] / self.figures["lower_bound"]

    track_pages_vs_bound.unit = "pages / bound"

    def track_mean_amplification(self, strategy, capacity, by):
        return self.figures["mean_amplification"]

    track_mean_amplification.unit = "pages read / bound"


class Speed:
    """Packing a 200-model family (about 134,000 distinct blocks), capacity 8. Target for
    the default: 100,000 blocks in 200 groups under 10 s."""

    params = ["two-stage", packing.DEFAULT_STRATEGY]
    param_names = ["strategy"]
    timeout = 120
    number = 1
    repeat = (1, 3, 60.0)

    def setup(self, strategy):
        self.groups = workloads.family_instance(models=200, blocks_per_model=2000, seed=1)

    def time_pack(self, strategy):
        packing.pack(self.groups, 8, strategy)


class Serving:
    """A text-classifier family whose pages were laid out at random (as a store grows by
    adds and drops), served at a buffer-pool budget of half its bytes, before and after
    Store.pack(): median latency of one request per model, in turn (default policy)."""

    timeout = 300

    def setup_cache(self):
        path = os.path.abspath("packing.sqlite")
        store = Store(path, block_rows=64, block_cols=64, page_blocks=8)
        for name, tensors in text_classifier_family(8, vocab=8192, dim=64, hidden=32).items():
            store.add_model(name, tensors, layers=TEXT_CLASSIFIER_LAYERS)
        blocks = np.array(sorted(b for page in store.page_layout() for b in page))
        np.random.default_rng(0).shuffle(blocks)
        with store.writer() as w:
            w.write_layout([blocks[i : i + 8].tolist() for i in range(0, len(blocks), 8)])
        store.close()
        return path

    def setup(self, path):
        self.store = Store(path)
        self.bags = [np.arange(i, 8192, 97) for i in range(4)]
        half = self.store.stats()["page_bytes"] // 2
        cache.configure(budget_bytes=half)

    def teardown(self, path):
        cache.configure(budget_bytes=512 * 2**20)
        cache.clear()
        self.store.close()

    def _serve(self):
        for model in self.store.models():
            self.store.predict(model, self.bags)

    def track_ms_per_request_before(self, path):
        cache.clear()
        return median_time(self._serve, 5) / len(self.store.models()) * 1e3

    track_ms_per_request_before.unit = "ms"

    def track_ms_per_request_after(self, path):
        packed = path + ".packed.sqlite"  # a copy: the store of setup_cache stays unpacked
        shutil.copy(path, packed)
        store = Store(packed)
        try:
            store.pack()
            cache.clear()
            return (
                median_time(lambda: [store.predict(m, self.bags) for m in store.models()], 5)
                / len(store.models())
                * 1e3
            )
        finally:
            store.close()
            os.remove(packed)

    track_ms_per_request_after.unit = "ms"
