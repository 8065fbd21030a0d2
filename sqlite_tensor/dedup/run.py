"""Store.dedup: accuracy-aware approximate deduplication of stored models.

For each model, in the order models were added, its blocks are matched against the
blocks of the models added before it (so variants come to point at their base):

1. **Targets**: the model's float32 blocks not yet examined and not already shared with
   an earlier model; a block another, later model also uses is left alone (replacing it
   here would free nothing).
2. **Candidates** (lsh.py by default; minhash.py and exhaustive.py are the baselines),
   and the block at the same place of the same tensor in each earlier model: the nearest
   by true distance is the block's reference.
3. **Outcome** per block: substitute, residual, or keep. ``strategy="budget"`` (the
   default, budget.py) searches, by the validator, for the fewest bytes within
   ``max_drop`` over every block's ladder of encodings (encoding.Ladder).
   ``strategy="greedy"`` (the paper's guard) takes each block's cheapest outcome within
   ``tolerance`` and applies them least important first (importance.py) in steps, each a
   savepoint; after each step the validator scores the model as stored. A step that drops
   the score by more than ``max_drop`` is rolled back (the weights really are as before)
   and, with ``on_exceed="skip"``, retried in halves down to single blocks, the blocks
   that break the budget alone being skipped; with ``"stop"`` the model ends there.
4. Blocks no entry uses any more are freed and their pages compacted; the model's residual
   payloads are laid out in full residual pages.

The whole run is one transaction: an error anywhere (a validator that raises, say) leaves
the store exactly as it was. Each examined entry is logged in ``<store>_dedup`` with
the hash its block had, so a later run (after :meth:`Store.update_model` say) examines only
entries it has not seen.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .. import blocks, pages
from ..store.writer import require_model
from . import encoding
from .budget import BudgetSearch
from .factor_path import FactorPath
from .importance import examination_order
from .lsh import LSHOptions
from .minhash import MinHashOptions
from .report import DedupReport, ModelReport
from .search import CandidateSearch
from .validators import score
from .writes import (
    KEPT,
    UNDONE,
    Target,
    apply,
    factor_bytes,
    free_dead_blocks,
    log,
    repack_residuals,
    residual_bytes,
)

SEARCHES = ("lsh", "minhash", "exhaustive")
STRATEGIES = ("budget", "greedy")
DEFAULT_TOLERANCE = 0.02  # strategy="greedy" only: budget needs none
DEFAULT_CHECK_EVERY = 32


def dedup(
    store,
    models=None,
    *,
    validator=None,
    max_drop=None,
    residuals=True,
    strategy="budget",
    tolerance=None,
    search="lsh",
    check_every=None,
    on_exceed=None,
    reexamine=False,
    progress=None,
    **search_options,
) -> DedupReport:
    """See Store.dedup."""
    started = time.perf_counter()
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if strategy == "budget":
        for name, value in (("check_every", check_every), ("on_exceed", on_exceed)):
            if value is not None:
                raise TypeError(
                    f"{name}= belongs to strategy='greedy'; the budget search takes none"
                )
    else:
        tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
        check_every = DEFAULT_CHECK_EVERY if check_every is None else check_every
        on_exceed = "skip" if on_exceed is None else on_exceed
    _check_arguments(validator, max_drop, tolerance, search, check_every, on_exceed)
    lossy = tolerance is None or tolerance > 0
    if lossy and validator is None:
        raise TypeError(
            "approximate dedup changes weights: pass validator= (for example "
            "sqlite_tensor.dedup.accuracy(x_val, y_val)) and max_drop=, or tolerance=0 for "
            "exact dedup alone"
        )
    options = _search_options(search, search_options)
    searcher = CandidateSearch(search, options)
    show = _progress(progress)
    if not lossy:  # nothing would change: no write transaction
        report, reports = _start(store, models, validator)
        report.models = list(reports.values())
        report.physical_bytes_after = report.physical_bytes_before
        report.seconds = time.perf_counter() - started
        return report
    # Everything it rewrites is read under the write lock: the models, their blocks, the
    # scores before (another writer's update in between would make them another model's).
    run = _Run(
        validator, max_drop, residuals, strategy, tolerance, searcher, check_every, on_exceed,
        reexamine, show,
    )  # fmt: skip
    with store.writer() as w:
        report, reports = _start(store, models, validator, w)
        for m in reports:
            _dedup_model(w, reports[m], run)
            report.models.append(reports[m])
        report.physical_bytes_after = store.stats()["physical_bytes"]
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _Run:
    """One dedup call's choices, as every model's run needs them."""

    validator: object
    max_drop: float | None
    residuals: bool
    strategy: str
    tolerance: float | None
    searcher: CandidateSearch
    check_every: int | None
    on_exceed: str | None
    reexamine: bool
    progress: object


def _start(store, models, validator, w=None) -> tuple[DedupReport, dict[str, ModelReport]]:
    """The report with the figures before, and each model's report scored (a validator that
    fails does so before anything is written); w: the run's writer, if it writes."""
    names = _model_names(store, models)
    report = DedupReport()
    before = store.stats()
    report.logical_bytes = before["logical_bytes"]
    report.physical_bytes_before = before["physical_bytes"]
    reports = {m: ModelReport(m) for m in names}
    if validator is not None:
        for m in names:
            reports[m].score_before = reports[m].score_after = _score(validator, store, m, w)
            reports[m].validations += 1
    return report, reports


def _score(validator, store, model, w=None) -> float:
    if w is None:  # no write transaction: nothing to give back to the caller
        return score(validator, store, model)
    with w.callers_code():  # the validator is not the store's code
        return score(validator, store, model)


def _check_arguments(validator, max_drop, tolerance, search, check_every, on_exceed) -> None:
    if validator is not None and not callable(validator):
        raise TypeError(
            f"validator must be callable as validator(store, model), got {type(validator).__name__}"
        )
    if validator is not None and max_drop is None:
        raise TypeError("a validator needs max_drop=, the largest drop in its score allowed")
    if max_drop is not None:
        if (
            isinstance(max_drop, bool)
            or not isinstance(max_drop, (int, float, np.integer, np.floating))
            or not math.isfinite(max_drop)
        ):
            raise TypeError(f"max_drop must be a finite number, got {max_drop!r}")
        if max_drop < 0:
            raise ValueError(
                f"max_drop must be >= 0 (a drop in the validator's score), got {max_drop}"
            )
    if tolerance is not None and (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float))
        or not 0 <= tolerance < math.inf
    ):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {', '.join(SEARCHES)}; got {search!r}")
    if check_every is not None and (
        isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1
    ):
        raise ValueError(f"check_every must be a positive integer, got {check_every!r}")
    if on_exceed not in (None, "skip", "stop"):
        raise ValueError(f"on_exceed must be 'skip' or 'stop', got {on_exceed!r}")


def _model_names(store, models) -> list[str]:
    """The models to examine, in the order they were added."""
    known = store.models()
    if models is None:
        return known
    if isinstance(models, str):
        models = [models]
    names = list(models)
    for m in names:
        require_model(store, m)
    order = {m: i for i, m in enumerate(known)}
    return sorted(set(names), key=order.__getitem__)


def _search_options(search: str, given: dict):
    cls = {"lsh": LSHOptions, "minhash": MinHashOptions}.get(search)
    if cls is None:
        if given:
            raise TypeError(f"search='exhaustive' takes no options; got {', '.join(given)}")
        return None
    try:
        return cls(**given)
    except TypeError:
        fields = ", ".join(cls.__dataclass_fields__)
        raise TypeError(
            f"unknown option for search={search!r} in {', '.join(given)}; its options are {fields}"
        ) from None


def _progress(progress):
    if progress is None or progress is False:
        return lambda report, done, total: None
    if progress is True:

        def show(report, done, total):
            print(
                f"dedup {report.model}: {done}/{total} blocks, {report.replaced} replaced, "
                f"{report.undone} undone, score {report.score_after:.4f}",
                file=sys.stderr,
            )

        return show
    if not callable(progress):
        raise TypeError("progress must be True, None or a callable(report, done, total)")
    return progress


# -- one model ------------------------------------------------------------------------------


def _dedup_model(w, report: ModelReport, run: _Run):
    started = time.perf_counter()
    model_id = w.model_id(report.model)
    items, extents = _targets(w, model_id, run.reexamine)
    refs = _references(w, model_id)
    if not items:
        report.seconds = time.perf_counter() - started
        return
    report.examined = len(items)
    residuals_before = residual_bytes(w, model_id)
    factors_before = factor_bytes(w, model_id)
    read: dict[int, np.ndarray] = {}  # tiles read so far: each block is read once
    if refs:
        before = run.searcher.seconds
        _match(w, items, extents, refs, run.searcher, read)
        report.search_seconds = run.searcher.seconds - before
    if run.strategy == "budget":
        matched = [it for it in items if it.ref]
        log(w, [it for it in items if not it.ref], KEPT)
        if matched:
            ladders = _ladders(w, matched, extents, run.residuals, read)
            # the factor path spreads error over a tensor: not under a per-block tolerance
            factor_path = None
            if run.residuals and run.tolerance is None:
                factor_path = FactorPath(w, matched, read)
            BudgetSearch(
                w, report, ladders, factor_path, run.validator, run.max_drop, run.tolerance,
                run.progress,
            ).run()  # fmt: skip
    else:
        _greedy(w, report, model_id, items, extents, read, run)
    freed = free_dead_blocks(w)
    repack_residuals(w, model_id)
    report.residual_bytes = residual_bytes(w, model_id) - residuals_before
    report.factor_bytes = factor_bytes(w, model_id) - factors_before
    report.bytes_saved = freed - report.residual_bytes - report.factor_bytes
    report.seconds = time.perf_counter() - started


def _greedy(w, report, model_id: int, items, extents, read, run: _Run):
    """strategy="greedy": each block's cheapest outcome within tolerance, applied least
    important first in guarded steps (the paper's method, with residuals optional)."""
    conn, t = w.conn, w.tables
    _decide(w, items, extents, run.tolerance, run.residuals, read)
    todo = [it for it in items if it.outcome is not None and it.outcome.kind != encoding.KEEP]
    kept = [it for it in items if it.outcome is None or it.outcome.kind == encoding.KEEP]
    log(w, kept, KEPT)
    if not todo:
        return
    tiles = _read_tiles(w, {it.block_id: extents[it.block_id] for it in todo}, read)
    sizes = dict(
        conn.execute(f"SELECT id, rows * cols FROM {t.tensors} WHERE model_id = ?", (model_id,))
    )
    order = examination_order(
        [tiles[it.block_id] for it in todo],
        np.array([it.entries[0][0] for it in todo]),
        np.array([sizes[it.entries[0][0]] for it in todo]),
    )
    todo = [todo[i] for i in order]
    _guarded_apply(
        w, report, todo, run.validator, run.max_drop, run.check_every, run.on_exceed, run.progress
    )


def _targets(w, model_id: int, reexamine: bool):
    """The model's blocks to examine, and every block's tile extent (rows, cols)."""
    t = w.tables
    seen = (
        ""
        if reexamine
        else (
            f" AND NOT EXISTS (SELECT 1 FROM {t.dedup} d WHERE d.tensor_id = m.tensor_id"
            " AND d.block_row = m.block_row AND d.block_col = m.block_col)"
        )
    )
    rows = w.conn.execute(
        f"SELECT m.block_id, m.tensor_id, m.block_row, m.block_col, tt.rows, tt.cols, b.hash,"
        f" b.nbytes, b.refcount FROM {t.map} m JOIN {t.tensors} tt ON tt.id = m.tensor_id"
        f" JOIN {t.blocks} b ON b.id = m.block_id WHERE tt.model_id = ? AND tt.dtype = 'float32'"
        f" AND NOT EXISTS (SELECT 1 FROM {t.residuals} r WHERE r.tensor_id = m.tensor_id"
        f" AND r.block_row = m.block_row AND r.block_col = m.block_col){seen}"
        # a tensor with factors is not its tiles: its tiles are not looked at again
        f" AND NOT EXISTS (SELECT 1 FROM {t.factors} f WHERE f.tensor_id = m.tensor_id)"
        f" AND NOT EXISTS (SELECT 1 FROM {t.map} e JOIN {t.tensors} et ON et.id = e.tensor_id"
        f" WHERE e.block_id = m.block_id AND et.model_id <> tt.model_id)"
        " ORDER BY m.tensor_id, m.block_row, m.block_col",
        (model_id,),
    ).fetchall()
    by_block: dict[int, Target] = {}
    extents: dict[int, tuple[int, int]] = {}
    bad = set()
    refcounts: dict[int, int] = {}
    for bid, tid, bi, bj, trows, tcols, digest, nbytes, refcount in rows:
        extent = blocks.tile_shape(trows, tcols, bi, bj, w.block_rows, w.block_cols)
        if bid in extents and extents[bid] != extent:
            bad.add(bid)  # the same bytes used as tiles of two shapes: leave it be
        extents[bid] = extent
        refcounts[bid] = refcount
        item = by_block.setdefault(bid, Target(bid, [], digest, nbytes))
        item.entries.append((tid, bi, bj))
    # every use of the block is this model's (none by another model: the query's last test),
    # and not half examined (some entries logged before): all its entries are here
    items = [
        it for bid, it in by_block.items() if bid not in bad and refcounts[bid] == len(it.entries)
    ]
    return items, extents


def _references(w, model_id: int) -> dict[int, tuple[int, int]]:
    """Blocks of the float32 tensors of earlier models, with their tile extents."""
    t = w.tables
    refs = {}
    for bid, trows, tcols, bi, bj in w.conn.execute(
        f"SELECT m.block_id, tt.rows, tt.cols, m.block_row, m.block_col FROM {t.map} m"
        f" JOIN {t.tensors} tt ON tt.id = m.tensor_id WHERE tt.model_id < ?"
        " AND tt.dtype = 'float32'",
        (model_id,),
    ):
        refs.setdefault(bid, blocks.tile_shape(trows, tcols, bi, bj, w.block_rows, w.block_cols))
    return refs


def _read_tiles(
    w, extents: dict[int, tuple[int, int]], read: dict[int, np.ndarray]
) -> dict[int, np.ndarray]:
    """The stored bytes of blocks as float32 tiles, reading each page once; ``read`` holds
    the tiles this model's run read already (they are not read again) and gains the new."""
    t = w.tables
    where = defaultdict(list)
    ids = [b for b in extents if b not in read]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for bid, page, slot in w.conn.execute(
            f"SELECT id, page_id, slot FROM {t.blocks} WHERE id IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            where[page].append((bid, slot))
    for page in sorted(where):
        slots = pages.read_slots(
            w.conn.execute(f"SELECT data FROM {t.pages} WHERE id = ?", (page,)).get, page
        )
        for bid, slot in where[page]:
            read[bid] = np.frombuffer(slots[slot], np.float32).reshape(extents[bid])
    return {b: read[b] for b in extents}


def _match(w, items: list[Target], extents, refs, searcher: CandidateSearch, read: dict) -> None:
    """Set each item's ref to its nearest reference of the same tile extent among the
    search's candidates and the blocks at the same place of the same tensor in earlier
    models (a fine-tune's delta can be too large for the search's keys, never for these)."""
    groups = defaultdict(list)
    for it in items:
        groups[extents[it.block_id]].append(it)
    ref_groups = defaultdict(list)
    for bid, ext in refs.items():
        ref_groups[ext].append(bid)
    places = _same_places(w, items)
    for ext, group in groups.items():
        ref_ids = ref_groups.get(ext)
        if not ref_ids:
            continue

        def load(ids, ext=ext):
            tiles = _read_tiles(w, {b: ext for b in ids}, read)
            return np.stack([tiles[b].ravel() for b in ids])

        ids = [it.block_id for it in group]
        found = searcher.nearest(ids, load(ids), ref_ids, load)
        pairs = [
            (k, c)
            for k, (it, ref) in enumerate(zip(group, found))
            for c in {ref, *places.get(it.block_id, ())}
            if c and refs.get(c) == ext
        ]
        if not pairs:
            continue
        tiles = _read_tiles(w, {**{b: ext for _, b in pairs}, **{b: ext for b in ids}}, read)
        dist = [_distance(tiles[group[k].block_id], tiles[c]) for k, c in pairs]
        best: dict[int, tuple[float, int]] = {}
        for (k, c), d in zip(pairs, dist):
            if k not in best or (d, c) < best[k]:
                best[k] = (d, c)
        for k, (_, c) in best.items():
            group[k].ref = c


def _same_places(w, items: list[Target]) -> dict[int, set[int]]:
    """Target block -> the blocks at the same (row, col) of the tensor of the same name and
    shape in each earlier model."""
    t = w.tables
    where = {(tid, bi, bj): it.block_id for it in items for tid, bi, bj in it.entries}
    out: dict[int, set[int]] = defaultdict(set)
    if not items:
        return out
    model_id = w.conn.execute(
        f"SELECT model_id FROM {t.tensors} WHERE id = ?", (items[0].entries[0][0],)
    ).get
    for tid, bi, bj, other in w.conn.execute(
        f"SELECT m.tensor_id, m.block_row, m.block_col, e.block_id FROM {t.map} m"
        f" JOIN {t.tensors} tt ON tt.id = m.tensor_id"
        f" JOIN {t.tensors} et ON et.name = tt.name AND et.rows = tt.rows AND et.cols = tt.cols"
        "  AND et.model_id < tt.model_id AND et.dtype = 'float32'"
        f" JOIN {t.map} e ON e.tensor_id = et.id AND e.block_row = m.block_row"
        "  AND e.block_col = m.block_col"
        " WHERE tt.model_id = ? AND tt.dtype = 'float32'",
        (model_id,),
    ):
        bid = where.get((tid, bi, bj))
        if bid is not None and other != bid:
            out[bid].add(other)
    return out


def _decide(w, items, extents, tolerance, residuals_allowed, read: dict) -> None:
    """Each matched item's cheapest outcome within tolerance: the greedy guard's decision."""
    matched = [it for it in items if it.ref]
    for ladder in _ladders(w, matched, extents, residuals_allowed, read):
        for it, outcome in zip(ladder.items, ladder.within(tolerance)):
            it.outcome = outcome


def _ladders(w, items, extents, residuals_allowed, read) -> list[encoding.Ladder]:
    """The budget search's rungs for the matched items, one Ladder per tile extent."""
    groups = defaultdict(list)
    for it in items:
        groups[extents[it.block_id]].append(it)
    out = []
    for ext, group in groups.items():
        tiles = _read_tiles(
            w, {**{it.block_id: ext for it in group}, **{it.ref: ext for it in group}}, read
        )
        out.append(
            encoding.Ladder(
                group,
                np.stack([tiles[it.block_id] for it in group]),
                np.stack([tiles[it.ref] for it in group]),
                residuals_allowed=residuals_allowed,
            )
        )
    return out


# -- applying, guarded ----------------------------------------------------------------------


class _Undo(Exception):
    """Raised inside a step's savepoint to roll it back."""


def _guarded_apply(w, report, todo, validator, max_drop, check_every, on_exceed, progress):
    step = check_every
    i = 0
    while i < len(todo):
        batch = todo[i : i + step]
        try:
            with w.savepoint():
                apply(w, batch)
                if validator is not None:
                    value = _score(validator, w.store, report.model, w)
                    report.validations += 1
                    if report.score_before - value > max_drop:
                        raise _Undo
                    report.score_after = value
        except _Undo:
            if on_exceed == "stop" or len(batch) == 1:
                undone = batch if on_exceed == "stop" else batch[:1]
                log(w, undone, UNDONE)
                report.undone += len(undone)
                i += len(undone)
                if on_exceed == "stop":  # the rest is not tried: logged, not counted
                    report.stopped = True
                    log(w, todo[i:], UNDONE)
                    break
            else:
                step = max(1, len(batch) // 2)
            progress(report, i, len(todo))
            continue
        for it in batch:
            if it.outcome.kind == encoding.SUBSTITUTE:
                report.substituted += 1
            else:
                report.residuals += 1
        i += len(batch)
        step = min(check_every, step * 2)
        progress(report, i, len(todo))


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """Squared Euclidean distance, in float64 (float32 squares overflow); inf if not finite."""
    d = float(np.square(a.astype(np.float64) - b).sum())
    return d if math.isfinite(d) else math.inf
