"""Page packing: which deduplicated blocks share a page.

A store keeps every distinct block once, in pages of at most ``capacity`` blocks. A *group*
(a model, or a tensor) needs a set of blocks; to use it, the engine reads every page holding
one of them. The packing therefore decides both the store's size (the number of pages) and
the cost of every inference (the pages each group reads). Two lower bounds frame it:

- total pages >= ceil(distinct blocks / capacity);
- a group reads >= ceil(|group| / capacity) pages.

A group's *read amplification* is the pages it reads over its bound; the figures of merit are
the total pages over their bound and the mean amplification over the groups. Minimising reads
with the fewest pages is a bin-packing problem with overlapping items, NP-hard in general.
Blocks that exactly the same groups use form an *equivalence class*; blocks of one class are
interchangeable for every cost here, which is what the better strategies exploit.

Strategies (``STRATEGIES``; every one is deterministic: ties go by block id, then group name):

``naive``
    The store's ingest order: groups in the order given (the order models were added), each
    group's blocks not placed yet, by block id, filling fresh pages (the group's last page may
    be part full), as the store's ingest and the paper's baseline do.
``greedy``
    Greedy-2 of the paper: largest group first (ties by name); its blocks not placed yet,
    the ones most groups use first (ties by block id), fill fresh pages. Pages a group fully
    covers are reused implicitly: its blocks already placed are simply not placed again.
``classes``
    Greedy-1 of the paper: every equivalence class on its own pages, ceil(|class| / capacity)
    of them. Each page is read only by the groups that need all of it, at the price of
    part-full pages.
``two-stage``
    Two-Stage of the paper: stage 1 packs the full pages of every class (floor(|class| /
    capacity) each), stage 2 packs all the leftovers with ``greedy``.
``affinity`` (ours, the default)
    Stage 1 as two-stage. Stage 2 packs the leftovers into exactly ceil(leftovers / capacity)
    pages, so the total is always the lower bound: each page is opened with the leftover
    of the widest class left (the one most groups use) and filled with the leftovers that
    bring the fewest new readers (a class whose groups already read the page costs nothing),
    whole classes before split ones. The leftover pages are then improved, minimising the
    total reads, by a local search (move a class's blocks to another page, taking back as
    many blocks; keep strict gains), a simulated annealing over the same kind of exchanges
    (Kirkpatrick, Gelatt & Vecchi, Science 220, 1983; fixed seed, fixed number of steps, so
    the result is deterministic) and the local search again. Full pages of stage 1 are left
    alone: each is read by exactly the groups that need all of its blocks, and moving their
    blocks gains nothing that the leftover page of the same class cannot.
``exact``
    The optimum for small instances (at most ``EXACT_MAX_BLOCKS`` distinct blocks): the
    fewest total reads (the sum over groups of the pages each reads) among packings with
    exactly ceil(distinct / capacity) pages, as an integer program solved by HiGHS
    (scipy.optimize.milp). Blocks of a class are interchangeable, so it counts blocks of
    each class. While there are at most ``EXACT_MAX_PATTERNS`` possible page contents
    (blocks of each class on a page), the model has a variable a content: how many pages
    hold it (no symmetry between pages at all); otherwise z[c, p] blocks of class c on page
    p with y[g, p] = 1 when group g reads page p, y[g, p] * min(|c|, capacity) >= z[c, p] for
    every class c of g, and pages ordered by load. Most instances of 16 blocks or fewer
    take milliseconds; 30-40 blocks in five or more classes can take seconds to minutes.
    With more pages than the minimum, other strategies may read fewer pages (``classes``
    often does): exact is the optimum at the minimum page count only.

Source of naive (the baseline), greedy, classes and two-stage: L. Zhou et al., *Serving
Deep Learning Models with Deduplication from Relational Databases*, PVLDB 15(10), 2022.

Measured (tests/test_packing.py; ``family_instance``, 12 models of 2000 blocks, capacities
4-16): two-stage uses 0.1-4 % more pages than the bound, affinity exactly the bound, with
35-70 % less read amplification overhead than two-stage (mean amplification - 1). Within
one read of exact on small instances. 100,000 blocks in 200 groups: 2-5 s (annealing and
local search are bounded by step counts, not time).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = [
    "STRATEGIES",
    "DEFAULT_STRATEGY",
    "EXACT_MAX_BLOCKS",
    "pack",
    "lower_bounds",
    "evaluate",
    "validate",
    "family_instance",
]

STRATEGIES = ("naive", "greedy", "classes", "two-stage", "affinity", "exact")
DEFAULT_STRATEGY = "affinity"
EXACT_MAX_BLOCKS = 40
# past this many possible page contents, exact uses the assignment model (see _exact)
EXACT_MAX_PATTERNS = 100_000

# Work limits of affinity's stage 2, deterministic (counted, not timed), so that big
# instances stay fast: past FILL_SCAN classes with leftovers the fill streams them in order
# of their group sets instead of searching them all; the local search evaluates at most
# SEARCH_BUDGET moves a run; the annealing takes ANNEAL_STEPS steps a leftover page, at most
# ANNEAL_MAX_STEPS, and fewer when pages hold many classes (ANNEAL_MAX_WORK class unions).
FILL_SCAN = 1500
SEARCH_BUDGET = 200_000
ANNEAL_STEPS = 4000
ANNEAL_MAX_STEPS = 300_000
ANNEAL_MAX_WORK = 3_000_000
ANNEAL_SEED = 20220610
_NEAR = 0.95  # share of annealing steps aimed at a page a's groups already read
_T0, _T1 = 1.0, 0.05  # annealing temperature, in reads, at the first and the last step

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# -- input -----------------------------------------------------------------------------------


def _check_capacity(capacity) -> int:
    if isinstance(capacity, (bool, np.bool_)) or not isinstance(capacity, (int, np.integer)):
        raise TypeError(f"capacity must be an int (the blocks a page holds), got {capacity!r}")
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1 block a page, got {capacity}")
    return int(capacity)


def _check_ids(what: str, items) -> None:
    """Raise naming the first item of `items` that is not a 64-bit integer block id."""
    for b in items:
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer)):
            raise TypeError(f"block ids must be integers: {what} holds {b!r} ({type(b).__name__})")
        if not _INT64_MIN <= int(b) <= _INT64_MAX:
            raise ValueError(f"block ids must fit in 64 bits: {what} holds {b}")


def _id_array(what: str, items) -> np.ndarray:
    """Block ids as an int64 array, checked (bools, floats and strings are refused even where
    numpy would convert them)."""
    if isinstance(items, np.ndarray):
        arr = items.ravel()
        if arr.dtype.kind in "iu":
            if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _INT64_MAX:
                _check_ids(what, arr.tolist())
            return arr.astype(np.int64, copy=False)
        items = arr.tolist()
    # fast path: plain ints within range (the common case, checked in C-speed loops)
    if all(type(b) is int for b in items) and (
        not len(items) or _INT64_MIN <= min(items) and max(items) <= _INT64_MAX
    ):
        return np.array(items, dtype=np.int64)
    _check_ids(what, items)
    return np.array([int(b) for b in items], dtype=np.int64)


def _group_array(name, group) -> np.ndarray:
    """A group's distinct block ids, sorted (the group is a set: repeats collapse)."""
    if isinstance(group, (str, bytes)) or not isinstance(group, (Iterable, np.ndarray)):
        raise TypeError(
            f"group {name!r} must be an iterable of block ids, got {type(group).__name__}"
        )
    items = group.ravel() if isinstance(group, np.ndarray) else list(group)
    if len(items) == 0:
        raise ValueError(f"group {name!r} has no blocks; every group must need at least one block")
    return np.unique(_id_array(f"group {name!r}", items))


class _Instance:
    """Checked input: groups as arrays of dense block indices 0..n-1, numbered in block id
    order (``ids[i]`` is the id of block i)."""

    def __init__(self, groups, capacity):
        self.capacity = _check_capacity(capacity)
        if not isinstance(groups, Mapping):
            raise TypeError(
                f"groups must be a mapping of name -> block ids, got {type(groups).__name__}"
            )
        if len(groups) == 0:
            raise ValueError("groups is empty: there is nothing to pack")
        self.names = list(groups)
        arrays = [_group_array(name, groups[name]) for name in self.names]
        self.ids, inverse = np.unique(np.concatenate(arrays), return_inverse=True)
        self.n = len(self.ids)
        self.G = len(self.names)
        self.sizes = np.array([len(a) for a in arrays], np.int64)
        self.members = np.split(inverse.ravel().astype(np.int64), np.cumsum(self.sizes)[:-1])
        self._classes = None
        self._rank = None

    def bound(self, size: int) -> int:
        return -(-int(size) // self.capacity)

    def name_rank(self) -> list[int]:
        """Each group's position when the groups are sorted by name."""
        if self._rank is not None:
            return self._rank
        idx = list(range(self.G))
        try:
            idx.sort(key=lambda i: self.names[i])
        except TypeError:  # names of mixed types: order by type, then repr
            idx.sort(key=lambda i: (type(self.names[i]).__name__, repr(self.names[i])))
        rank = [0] * self.G
        for r, i in enumerate(idx):
            rank[i] = r
        self._rank = rank
        return rank

    def freq(self) -> np.ndarray:
        """How many groups use each block."""
        return np.bincount(np.concatenate(self.members), minlength=self.n)

    def classes(self):
        """Equivalence classes, numbered by their smallest block: (blocks of each class,
        sorted; group mask of each class, a Python int with bit r set for the group whose
        name ranks r-th, so that nothing depends on the order the groups were given in)."""
        if self._classes is None:
            # one bit a group per block, then blocks with equal bit rows are one class
            bits = np.zeros((self.n, (self.G + 7) // 8), np.uint8)
            for g, r in enumerate(self.name_rank()):
                bits[self.members[g], r >> 3] |= np.uint8(1 << (r & 7))
            rows = bits.view(np.dtype((np.void, bits.shape[1]))).ravel()
            _, first, label = np.unique(rows, return_index=True, return_inverse=True)
            order = np.argsort(first, kind="stable")
            renum = np.empty_like(order)
            renum[order] = np.arange(len(order))
            label = renum[label.ravel()]
            by_class = np.argsort(label, kind="stable")
            blocks = np.split(by_class, np.cumsum(np.bincount(label))[:-1])
            masks = [int.from_bytes(bits[b[0]].tobytes(), "little") for b in blocks]
            self._classes = (blocks, masks)
        return self._classes


def _chunks(seq: np.ndarray, capacity: int) -> list[np.ndarray]:
    return [seq[i : i + capacity] for i in range(0, len(seq), capacity)]


# -- the paper's strategies ------------------------------------------------------------------


def _naive(inst: _Instance) -> list[np.ndarray]:
    placed = np.zeros(inst.n, bool)
    pages = []
    for m in inst.members:
        new = m[~placed[m]]
        placed[new] = True
        pages += _chunks(new, inst.capacity)
    return pages


def _greedy(inst: _Instance, members=None, placed=None) -> list[np.ndarray]:
    """Greedy-2 over `members` (default: the groups), skipping blocks already `placed`."""
    members = inst.members if members is None else members
    placed = np.zeros(inst.n, bool) if placed is None else placed
    freq = inst.freq()
    rank = inst.name_rank()
    pages = []
    for g in sorted(range(inst.G), key=lambda g: (-len(members[g]), rank[g])):
        m = members[g]
        new = m[~placed[m]]
        if not len(new):
            continue
        new = new[np.lexsort((new, -freq[new]))]  # most-used first, then by block id
        placed[new] = True
        pages += _chunks(new, inst.capacity)
    return pages


def _classes(inst: _Instance) -> list[np.ndarray]:
    blocks, _ = inst.classes()
    return [page for b in blocks for page in _chunks(b, inst.capacity)]


def _stage1(inst: _Instance):
    """The full pages of every class, and each class's leftover blocks (fewer than a page)."""
    l = inst.capacity
    blocks, _ = inst.classes()
    pages, left = [], []
    for b in blocks:
        full = len(b) // l * l
        pages += _chunks(b[:full], l)
        left.append(b[full:])
    return pages, left


def _two_stage(inst: _Instance) -> list[np.ndarray]:
    pages, left = _stage1(inst)
    placed = np.ones(inst.n, bool)
    placed[np.concatenate(left)] = False
    members = [m[~placed[m]] for m in inst.members]
    return pages + _greedy(inst, members, placed)


# -- affinity: two-stage with a better stage 2 -----------------------------------------------
#
# Stage 2 works on a *layout*: a list of pages, each a dict {class: blocks of it on the page}.
# A page's readers are the union of its classes' group masks; its cost is their number, and
# the total reads of the packing are the full pages' (fixed) plus the sum of these costs.


def _union(page: dict, masks: list[int]) -> int:
    u = 0
    for c in page:
        u |= masks[c]
    return u


def _moved(page: dict, minus: dict, plus: dict) -> dict:
    new = dict(page)
    for c, t in minus.items():
        new[c] -= t
        if not new[c]:
            del new[c]
    for c, t in plus.items():
        new[c] = new.get(c, 0) + t
    return new


def _set_order(masks: list[int], classes) -> list[int]:
    """Classes ordered so that similar group sets are near each other: by their group
    sets read as bit strings, group 0 first, descending; a superset comes before its
    subsets (for nested sets, a depth-first order)."""
    width = max(masks[c].bit_length() for c in classes)
    return sorted(classes, key=lambda c: (-int(format(masks[c], f"0{width}b")[::-1], 2), c))


def _fill(left: dict[int, int], masks: list[int], l: int) -> list[dict]:
    """Leftovers (class -> blocks) into ceil(total / l) pages, all full but the last."""
    rem = dict(left)
    if len(rem) > FILL_SCAN:
        # too many classes to search: stream them in group-set order, pages in turn
        layout, page, room = [], {}, l
        for c in _set_order(masks, rem):
            k = rem[c]
            while k:
                t = min(k, room)
                page[c] = t
                k -= t
                room -= t
                if not room:
                    layout.append(page)
                    page, room = {}, l
        return layout + ([page] if page else [])
    width = {c: masks[c].bit_count() for c in rem}
    seeds = sorted(rem, key=lambda c: (-width[c], -rem[c], c))
    layout, s = [], 0
    while rem:
        while seeds[s] not in rem:
            s += 1
        c, page, room, union = seeds[s], {}, l, 0  # open the page with the widest class
        while True:
            k = min(room, rem[c])
            page[c] = k
            room -= k
            union |= masks[c]
            if k == rem[c]:
                del rem[c]
            else:
                rem[c] -= k
            if not room or not rem:
                break
            # next: fewest new readers; whole classes (largest first) before splitting
            # one (the one with fewest groups, whose other part costs least elsewhere)
            best = None
            for d, r in rem.items():
                fits = r <= room
                key = ((masks[d] & ~union).bit_count(), not fits, -r if fits else width[d], d)
                if best is None or key < best:
                    best, c = key, d
        layout.append(page)
    return layout


def _take_back(page: dict, exclude: int, k: int, target: int, masks: list[int]):
    """k blocks of `page` (none of class `exclude`) to send to a page read by `target`:
    the classes adding fewest readers there first, whole ones before part of one."""
    cands = sorted(
        (c for c in page if c != exclude),
        key=lambda c: ((masks[c] & ~target).bit_count(), page[c] > k, -page[c], c),
    )
    out, need = {}, k
    for c in cands:
        if not need:
            return out
        out[c] = min(need, page[c])
        need -= out[c]
    return out if not need else None


def _local_search(layout: list[dict], masks: list[int], l: int, budget: int) -> None:
    """Strict-improvement moves, in place: take k blocks of class a from page p to page q
    (k = all of a on p, or as many as one class of q holds); when q is full, k of q's
    blocks come back to p. Tried only on pages q that a's groups already read, and only
    where a is free there or its leaving p frees more readers than it adds to q: in any
    improving exchange of two classes one side is such a move. Stops after `budget` units
    of work (a candidate page scanned or a move evaluated): a deterministic bound on time."""
    P = len(layout)
    U = [_union(page, masks) for page in layout]
    cost = [u.bit_count() for u in U]
    load = [sum(page.values()) for page in layout]
    pages_of: dict[int, set[int]] = {}  # group -> the pages it reads
    for p, u in enumerate(U):
        for g in _bits(u):
            pages_of.setdefault(g, set()).add(p)
    for _ in range(30):
        improved = False
        for p in range(P):
            for a in sorted(layout[p]):
                if a not in layout[p]:
                    continue
                have = layout[p][a]
                u_rest = _union([c for c in layout[p] if c != a], masks)
                freed = cost[p] - u_rest.bit_count()
                readers = [pages_of[g] for g in _bits(masks[a])]
                budget -= sum(map(len, readers))  # scanning counts as work too
                if budget <= 0:
                    return
                near = set().union(*readers)
                best = None
                for q in sorted(near):
                    add = (masks[a] & ~U[q]).bit_count()
                    if q == p or (add >= freed and add):
                        continue
                    for k in sorted(
                        {have} | {t for c, t in layout[q].items() if c != a and t < have}
                    ):
                        budget -= 1
                        back = (
                            {}
                            if l - load[q] >= k
                            else _take_back(layout[q], a, k, u_rest if k == have else U[p], masks)
                        )
                        if back is None:
                            continue
                        new_p = _moved(layout[p], {a: k}, back)
                        new_q = _moved(layout[q], back, {a: k})
                        up, uq = _union(new_p, masks), _union(new_q, masks)
                        delta = up.bit_count() + uq.bit_count() - cost[p] - cost[q]
                        if delta < 0 and (best is None or delta < best[0]):
                            best = (delta, q, new_p, new_q, up, uq)
                if best:
                    _, q, new_p, new_q, up, uq = best
                    for page, u in ((p, up), (q, uq)):
                        for g in _bits(U[page] & ~u):
                            pages_of[g].discard(page)
                        for g in _bits(u & ~U[page]):
                            pages_of.setdefault(g, set()).add(page)
                    layout[p], layout[q], U[p], U[q] = new_p, new_q, up, uq
                    cost[p], cost[q] = up.bit_count(), uq.bit_count()
                    load[p], load[q] = sum(new_p.values()), sum(new_q.values())
                    improved = True
                if budget <= 0:
                    return
        if not improved:
            return


def _anneal(layout: list[dict], masks: list[int], l: int, steps: int) -> None:
    """Simulated annealing over block exchanges between leftover pages, in place; ends in
    the best layout met. A step takes t blocks of a random class a of a random page p to a
    page q (half the time one read by a group of a) and, unless q has room, t blocks of
    one of q's classes back. Worse layouts are accepted with probability exp(-delta / T),
    T falling geometrically from 1 read to 0.05."""
    P = len(layout)
    if P < 2 or steps < 1:
        return
    rng = random.Random(ANNEAL_SEED)
    rand, randrange = rng.random, rng.randrange
    U = [_union(page, masks) for page in layout]
    cost = [u.bit_count() for u in U]
    load = [sum(page.values()) for page in layout]
    groups_of: dict[int, list[int]] = {}
    pages_of: dict[int, list[int]] = {}  # group -> pages that may hold it (checked on use)
    for p, u in enumerate(U):
        for g in _bits(u):
            pages_of.setdefault(g, []).append(p)
    current = best = sum(cost)
    undo: list[tuple] = []  # moves made since the best layout
    cool = math.log(_T1 / _T0) / steps
    for step in range(steps):
        p = randrange(P)
        page_p = layout[p]
        a = list(page_p)[randrange(len(page_p))]
        ma = masks[a]
        q = -1
        if rand() < _NEAR:  # a page already read by one of a's groups
            gs = groups_of.get(a)
            if gs is None:
                gs = groups_of[a] = list(_bits(ma))
            near = pages_of[gs[randrange(len(gs))]]
            i = randrange(len(near))
            q = near[i]
            if not U[q] & ma:  # stale entry: drop it
                near[i] = near[-1]
                near.pop()
                q = -1
        if q < 0 or q == p:
            q = randrange(P - 1)
            q += q >= p
        page_q = layout[q]
        others = [c for c in page_q if c != a]
        room = l - load[q]
        have = page_p[a]
        if room and (not others or rand() < 0.3):
            b, t = -1, 1 + randrange(min(room, have))
        elif others:
            b = others[randrange(len(others))]
            most = min(have, page_q[b])
            t = most if rand() < 0.5 else 1 + randrange(most)
        else:
            continue
        # the two pages' readers after the move, without building the pages yet
        up = _union([c for c in page_p if c != a], masks) if t == have else U[p]
        uq = U[q] | ma
        if b >= 0:
            up |= masks[b]
            if t == page_q[b]:
                uq = _union([c for c in page_q if c != b], masks) | ma
        delta = up.bit_count() + uq.bit_count() - cost[p] - cost[q]
        if delta > 0 and rand() >= math.exp(-delta / (_T0 * math.exp(cool * step))):
            continue
        new_p = _moved(page_p, {a: t}, {b: t} if b >= 0 else {})
        new_q = _moved(page_q, {b: t} if b >= 0 else {}, {a: t})
        undo.append((p, page_p, q, page_q))
        for g in _bits(up & ~U[p]):
            pages_of.setdefault(g, []).append(p)
        for g in _bits(uq & ~U[q]):
            pages_of.setdefault(g, []).append(q)
        layout[p], layout[q], U[p], U[q] = new_p, new_q, up, uq
        cost[p], cost[q] = up.bit_count(), uq.bit_count()
        if b < 0:
            load[p] -= t
            load[q] += t
        current += delta
        if current < best:
            best, undo = current, []
    for p, old_p, q, old_q in reversed(undo):  # back to the best layout
        layout[p], layout[q] = old_p, old_q


def _bits(mask: int):
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _affinity(inst: _Instance) -> list[np.ndarray]:
    pages, left = _stage1(inst)
    _, masks = inst.classes()
    l = inst.capacity
    layout = _fill({c: len(b) for c, b in enumerate(left) if len(b)}, masks, l)
    _local_search(layout, masks, l, SEARCH_BUDGET)
    # a step costs about as much as the classes on a page: bound the work, not just the steps
    per_page = sum(map(len, layout)) / len(layout) if layout else 1
    _anneal(
        layout,
        masks,
        l,
        int(min(ANNEAL_STEPS * len(layout), ANNEAL_MAX_STEPS, ANNEAL_MAX_WORK / (1 + per_page))),
    )
    _local_search(layout, masks, l, SEARCH_BUDGET)
    taken = [0] * len(left)  # blocks of a class are interchangeable
    for page in layout:
        out = []
        for c, k in sorted(page.items()):
            out.append(left[c][taken[c] : taken[c] + k])
            taken[c] += k
        pages.append(np.concatenate(out))
    return pages


# -- exact -------------------------------------------------------------------------------------


def _exact(inst: _Instance) -> list[np.ndarray]:
    if inst.n > EXACT_MAX_BLOCKS:
        raise ValueError(
            f"strategy 'exact' solves small instances only: {inst.n} distinct blocks,"
            f" more than {EXACT_MAX_BLOCKS}; use {DEFAULT_STRATEGY!r}"
        )
    l, n = inst.capacity, inst.n
    P = -(-n // l)
    if P == 1 or l == 1:  # one page, or a block a page: nothing to choose
        return _chunks(np.arange(n), l)
    try:
        from scipy.optimize import milp  # noqa: F401  (checked here, used by the two models)
    except ImportError as e:
        raise ImportError(
            "strategy 'exact' needs scipy >= 1.9 (scipy.optimize.milp);"
            " install scipy or use another strategy"
        ) from e
    blocks, masks = inst.classes()
    sizes = [len(b) for b in blocks]
    if _pattern_count(sizes, l) <= EXACT_MAX_PATTERNS:
        counts = _exact_patterns(sizes, masks, l, P)
    else:
        counts = _exact_assignment(inst, sizes, masks, l, P)
    taken = [0] * len(blocks)
    pages = []
    for page in counts:
        out = []
        for c, k in enumerate(page):
            out.append(blocks[c][taken[c] : taken[c] + k])
            taken[c] += k
        pages.append(np.sort(np.concatenate(out)))
    return sorted(pages, key=lambda page: page[0])  # the solver's page order is arbitrary


def _pattern_count(sizes: list[int], l: int) -> int:
    """How many page contents (blocks of each class, 1 to l in all) there are."""
    ways = [1] + [0] * l  # ways[t]: contents of t blocks so far
    for s in sizes:
        ways = [sum(ways[t - k] for k in range(min(s, t) + 1)) for t in range(l + 1)]
    return sum(ways) - 1


def _patterns(sizes: list[int], l: int):
    """Every page content: a tuple of blocks of each class, 1 to l blocks in all."""
    out, k = [], len(sizes)

    def walk(c, room, acc):
        if c == k:
            if room < l:
                out.append(tuple(acc))
            return
        for t in range(min(sizes[c], room) + 1):
            acc.append(t)
            walk(c + 1, room - t, acc)
            acc.pop()

    walk(0, l, [])
    return out


def _solve(cost, A, lo, hi, upper):
    from scipy.optimize import Bounds, LinearConstraint, milp

    res = milp(
        cost,
        constraints=LinearConstraint(A, lo, hi),
        integrality=np.ones(len(cost)),
        bounds=Bounds(np.zeros(len(cost)), upper),
        options={"presolve": False},
    )
    if res.x is None or res.status != 0:
        raise RuntimeError(f"exact packing failed: {res.message}")
    return np.rint(res.x).astype(np.int64)


def _exact_patterns(sizes, masks, l, P) -> list[list[int]]:
    """Pattern model: how many pages of each possible content, P pages in all, every block
    once. A page's readers follow from its content alone, and pages of one content are
    interchangeable, so the model has no symmetry to break."""
    pats = _patterns(sizes, l)
    K = len(sizes)
    A = np.zeros((K + 1, len(pats)))
    A[:K] = np.array(pats).T
    A[K] = 1
    cost = np.array(
        [_union([c for c in range(K) if pat[c]], masks).bit_count() for pat in pats], float
    )
    upper = np.array([min(sizes[c] // t for c, t in enumerate(pat) if t) for pat in pats], float)
    rhs = np.array(sizes + [P], float)
    x = _solve(cost, A, rhs, rhs, upper)
    return [list(pats[i]) for i in np.flatnonzero(x) for _ in range(x[i])]


def _exact_assignment(inst, sizes, masks, l, P) -> list[list[int]]:
    """Assignment model: z[c, p] blocks of class c on page p, y[g, p] = 1 when group g
    reads page p, y[g, p] * min(|c|, l) >= z[c, p] for every class c of g; pages ordered
    by non-increasing load to break their symmetry."""
    from scipy.sparse import coo_array

    K, G = len(sizes), inst.G
    nz = K * P  # z[c, p] at c * P + p; y[g, p] at nz + g * P + p
    rows, cols, vals, lo, hi = [], [], [], [], []

    def row(coefs, low, high):
        for col, v in coefs:
            rows.append(len(lo))
            cols.append(col)
            vals.append(v)
        lo.append(low)
        hi.append(high)

    for c in range(K):  # every block on some page
        row([(c * P + p, 1) for p in range(P)], sizes[c], sizes[c])
    for p in range(P):  # capacity
        row([(c * P + p, 1) for c in range(K)], 0, l)
    for c in range(K):  # a group reads each page holding its blocks
        for g in _bits(masks[c]):
            for p in range(P):
                row([(nz + g * P + p, min(sizes[c], l)), (c * P + p, -1)], 0, np.inf)
    for g, r in enumerate(inst.name_rank()):  # (valid, tightens the relaxation) its bound
        row([(nz + r * P + p, 1) for p in range(P)], inst.bound(inst.sizes[g]), np.inf)
    for p in range(P - 1):  # symmetry: pages by non-increasing load
        row([(c * P + p, 1) for c in range(K)] + [(c * P + p + 1, -1) for c in range(K)], 0, np.inf)
    nvar = nz + G * P
    A = coo_array((vals, (rows, cols)), shape=(len(lo), nvar)).tocsr()
    upper = np.r_[np.repeat(np.minimum(sizes, l), P), np.ones(G * P)].astype(float)
    x = _solve(np.r_[np.zeros(nz), np.ones(G * P)], A, lo, hi, upper)
    return x[:nz].reshape(K, P).T.tolist()


_IMPL = {
    "naive": _naive,
    "greedy": _greedy,
    "classes": _classes,
    "two-stage": _two_stage,
    "affinity": _affinity,
    "exact": _exact,
}


# -- API ---------------------------------------------------------------------------------------


def pack(groups: Mapping, capacity: int, strategy: str = DEFAULT_STRATEGY) -> list[list[int]]:
    """Pack the blocks of `groups` into pages of at most `capacity` blocks.

    `groups` maps a name (a model or a tensor) to the block ids (integers) it needs, any
    iterable, taken as a set; a group with no blocks is an error. Returns the pages, each a
    list of block ids; every block of every group is on exactly one page. The same input
    gives the same output. See the module docstring for the strategies.
    """
    if strategy not in _IMPL:
        raise ValueError(
            f"unknown packing strategy {strategy!r}; strategies are {', '.join(STRATEGIES)}"
        )
    inst = _Instance(groups, capacity)
    return [inst.ids[page].tolist() for page in _IMPL[strategy](inst)]


def lower_bounds(groups: Mapping, capacity: int) -> dict:
    """{"total": ceil(distinct blocks / capacity), "groups": {name: ceil(|group| / capacity)}}."""
    inst = _Instance(groups, capacity)
    return {
        "total": inst.bound(inst.n),
        "groups": {name: inst.bound(s) for name, s in zip(inst.names, inst.sizes)},
    }


def validate(pages, groups: Mapping, capacity: int) -> None:
    """Raise ValueError (TypeError for a non-integer id) unless `pages` packs exactly the
    blocks of `groups`: no page empty or over `capacity`, no block twice, none missing, none
    that no group uses."""
    _validate(pages, _Instance(groups, capacity))


def _validate(pages, inst: _Instance) -> np.ndarray:
    """Checks a packing; returns the page of every block (by dense index)."""
    if isinstance(pages, (str, bytes, Mapping)) or not isinstance(pages, (Iterable, np.ndarray)):
        raise TypeError(
            f"pages must be a list of pages (lists of block ids), got {type(pages).__name__}"
        )
    arrays = []
    for i, page in enumerate(pages):
        if isinstance(page, (str, bytes, Mapping)) or not isinstance(page, (Iterable, np.ndarray)):
            raise TypeError(f"page {i} must be a list of block ids, got {type(page).__name__}")
        items = page.ravel() if isinstance(page, np.ndarray) else list(page)
        if len(items) == 0:
            raise ValueError(f"page {i} is empty")
        if len(items) > inst.capacity:
            raise ValueError(
                f"page {i} holds {len(items)} blocks, over the capacity of {inst.capacity}"
            )
        arrays.append(_id_array(f"page {i}", items))
    if not arrays:
        raise ValueError(f"no pages, but the groups need {inst.n} blocks")
    flat = np.concatenate(arrays)
    page_no = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
    pos = np.minimum(np.searchsorted(inst.ids, flat), inst.n - 1)
    unknown = inst.ids[pos] != flat
    if unknown.any():
        i = int(np.argmax(unknown))
        raise ValueError(f"block {int(flat[i])} on page {int(page_no[i])} is in no group")
    seen = np.bincount(pos, minlength=inst.n)
    if (seen > 1).any():
        b = int(np.argmax(seen > 1))
        raise ValueError(
            f"block {int(inst.ids[b])} is on more than one page"
            f" (pages {page_no[pos == b].tolist()})"
        )
    if (seen == 0).any():
        b = int(np.argmax(seen == 0))
        name = next(inst.names[g] for g, m in enumerate(inst.members) if b in m)
        raise ValueError(f"block {int(inst.ids[b])} of group {name!r} is on no page")
    page_of = np.empty(inst.n, np.int64)
    page_of[pos] = page_no
    return page_of


def evaluate(pages, groups: Mapping, capacity: int) -> dict:
    """Validate a packing (see :func:`validate`) and measure it:

    {"total_pages", "lower_bound", "groups": {name: {"pages": pages it reads, "bound",
    "amplification": pages / bound}}, "mean_amplification" (over groups),
    "total_reads" (sum of the pages the groups read), "overhead" (mean_amplification - 1)}.
    """
    inst = _Instance(groups, capacity)
    page_of = _validate(pages, inst)
    per_group, reads = {}, 0
    for name, m in zip(inst.names, inst.members):
        n_pages = len(np.unique(page_of[m]))
        bound = inst.bound(len(m))
        per_group[name] = {"pages": n_pages, "bound": bound, "amplification": n_pages / bound}
        reads += n_pages
    mean = float(np.mean([v["amplification"] for v in per_group.values()]))
    return {
        "total_pages": int(page_of.max()) + 1,
        "lower_bound": inst.bound(inst.n),
        "groups": per_group,
        "mean_amplification": mean,
        "total_reads": reads,
        "overhead": mean - 1.0,
    }


def family_instance(*args, **kwargs) -> dict[str, set[int]]:
    """Deprecated alias (docs/packing.md named it here): the generator moved to
    :func:`sqlite_tensor.testing.workloads.family_instance`."""
    import warnings

    warnings.warn(
        "sqlite_tensor.packing.family_instance moved to "
        "sqlite_tensor.testing.workloads.family_instance",
        DeprecationWarning,
        stacklevel=2,
    )
    from .testing.workloads import family_instance

    return family_instance(*args, **kwargs)
