"""A deterministic family of *trained* text classifiers: a base and variants fine-tuned on
related tasks, for benchmarking and testing accuracy-aware approximate deduplication.

It mirrors the netsDB paper's workloads (a word embedding and small dense layers), but is
trained here, in plain numpy, on synthetic text built to behave like the real thing:

- Words follow a Zipf-Mandelbrot frequency, p(rank r) ~ 1 / (r + 2.7) ** zipf. By default
  the vocabulary is **ordered by frequency: row 0 of the embedding is the most frequent
  word** (``frequency_ordered=False`` gives the words a fixed random order instead).
- Each word has a hidden meaning, a ``latent``-dimensional vector (3 by default), which
  fades with rarity (scaled by 1 / (1 + rank / salient)) so that documents are decided by
  words frequent enough to be learnt. A document is a bag of ``min_len``..``max_len``
  words (10-60); its label on task t is the argmax of ``P_t @ (mean meaning of its words)``,
  replaced by a uniformly random class with probability ``label_noise``.
- Task 0 has a random ``P_0``; task i > 0 has ``P_0`` with the meaning space rotated by
  ``task_angle`` degrees in a random plane: related, but a model for one is clearly worse
  on the other.
- ``base`` is trained from random init on task 0 with plenty of data (``base_docs``,
  ``base_epochs``; Adam, and lazy Adam -- SparseAdam's rule -- for the embedding rows a
  batch uses; learning rate decaying linearly to 0). Each ``task-i`` is then fine-tuned
  from the base on task i with a tenth of the data, all weights updated, embedding
  included (SGD with momentum 0.9, linear decay, ``tune_epochs``). Frequent words' rows get
  most of the gradient; rare words' rows move little, and rows no fine-tuning document
  uses do not move at all -- as in real fine-tuned embeddings.

The backward pass is written out here (the embedding-bag mean's gradient goes to the rows
a batch uses through a documents x rows weight matrix). Everything is float32 and drawn
from ``np.random.default_rng([seed, i])`` (i = 0 for the base and the shared vocabulary,
i for task-i): the same arguments give the same arrays.

Every model runs as ``LAYERS`` (the same list for all): the mean of a bag's word
embeddings, Dense(hidden, relu), Dense(classes) giving logits; argmax is the prediction.
Tensors are laid out as PyTorch stores them (Linear weight out x in).

Measured (``python -m sqlite_tensor.testing.trained``, default family: vocab 20000, dim 64,
hidden 128, 4 classes, 4 variants; one core, OPENBLAS_NUM_THREADS=1):

    trained in 6.3-8.6 s (base alone: 4.4 s; each variant: about 0.5 s)
    model      own   base  emb=base  rows>1e-3  rows>1e-2  same   relative ||delta||_F:
                                                                  emb    fc1.w  fc1.b  fc2.w  fc2.b
    base      0.866  0.866   0.866     0.000      0.000   1.000   0      0      0      0      0
    task-1    0.854  0.638   0.831     0.766      0.080   0.042   0.031  0.052  1.78   0.449  7.9
    task-2    0.852  0.651   0.824     0.782      0.082   0.042   0.031  0.048  1.66   0.469  11.8
    task-3    0.850  0.711   0.827     0.768      0.077   0.043   0.032  0.065  1.71   0.432  5.1
    task-4    0.852  0.683   0.833     0.775      0.086   0.042   0.033  0.053  1.83   0.471  10.1

    median over rows of max |delta| by frequency rank:
              [0,100)  [100,1000)  [1000,5000)  [5000,20000)
    task-i    4.0-4.7e-2  1.3-1.4e-2  5.2-5.4e-3  1.8-1.9e-3

- own: the model on its own task's validation set; base: the base model on that set (a
  variant's task costs the base 14-22 points); emb=base: the variant with the base's
  embedding put back (2-3 points lost: the embedding's delta matters; the rest of the
  gap is the dense layers').
- rows>t: fraction of embedding rows whose max |delta| exceeds t; same: rows left
  bit-identical (words no fine-tuning document uses). Every touched row moves a little
  (a rare word's few uses still push it ~2e-3), frequent rows 20x more.
- The biases start at zero, hence their large relative deltas (they are small tensors).
Seeds 1 and 2 give the same picture (base 0.852-0.863; variants 0.843-0.862; base on the
variants' tasks 0.605-0.676).

The small configuration the tests use, ``fine_tuned_family(2, vocab=2048, dim=32,
hidden=32, base_epochs=3, tune_docs=4000, eval_docs=1000)``, trains in 0.7 s: base 0.849,
variants 0.792 and 0.784, the base on their tasks 0.656 and 0.632.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

import numpy as np

LAYERS = [
    {"op": "embedding_bag", "weight": "embedding.weight", "mode": "mean"},
    {"op": "dense", "weight": "fc1.weight", "bias": "fc1.bias", "activation": "relu"},
    {"op": "dense", "weight": "fc2.weight", "bias": "fc2.bias"},
]

_F32 = np.float32
_EMB = "embedding.weight"


@dataclass
class TrainedFamily:
    """What :func:`fine_tuned_family` returns.

    models: {"base", "task-1", ...: {tensor name: float32 array}}, in that order.
    layers: the layer list every model runs as (``LAYERS``).
    validation, test: per model, two held-out sets of its own task, (bags of int64 word
        ids, int64 labels); ``accuracy`` is measured on ``validation``, ``test`` is for
        checking afterwards.
    accuracy: each model's accuracy on its own validation set.
    base_accuracy: the reference model's accuracy on each model's validation set (on the
        first model, the same as its accuracy): what a variant would score if replaced by
        the model it was trained from.
    reference: {model: the model it was trained from, None for the first}: "base" for
        every variant here; a retrained chain's previous version in ``trained_families``.
        Left empty, every model after the first refers to the first.
    """

    models: dict[str, dict[str, np.ndarray]]
    layers: list[dict]
    validation: dict[str, tuple[list[np.ndarray], np.ndarray]]
    test: dict[str, tuple[list[np.ndarray], np.ndarray]]
    accuracy: dict[str, float]
    base_accuracy: dict[str, float]
    reference: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self):
        if not self.reference:
            first = next(iter(self.models), None)
            self.reference = {m: (None if m == first else first) for m in self.models}


# -- the synthetic language -----------------------------------------------------------------


class _World:
    """Word frequencies and meanings, shared by every task, and the tasks' label maps."""

    def __init__(self, rng, vocab, latent, classes, zipf, salient, frequency_ordered):
        ranks = np.arange(vocab, dtype=np.float64)
        p = 1.0 / (ranks + 2.7) ** zipf
        p /= p.sum()
        self.cdf = np.cumsum(p)
        self.id_of_rank = (
            np.arange(vocab) if frequency_ordered else rng.permutation(vocab)
        ).astype(np.int64)
        z = rng.standard_normal((vocab, latent)) / (1.0 + ranks / salient)[:, None]
        z -= p @ z  # centred: the typical document leans to no class
        self.latent = np.empty((vocab, latent), _F32)
        self.latent[self.id_of_rank] = z
        self.p0 = rng.standard_normal((classes, latent))
        self.classes = classes

    def task(self, rng, degrees):
        """P_0 with the meaning space turned by ``degrees`` in a random plane."""
        q, _ = np.linalg.qr(rng.standard_normal((self.p0.shape[1], 2)))
        u, v = q[:, 0], q[:, 1]
        th = np.radians(degrees)
        turn = (
            np.eye(len(u))
            + (np.cos(th) - 1.0) * (np.outer(u, u) + np.outer(v, v))
            + np.sin(th) * (np.outer(v, u) - np.outer(u, v))
        )
        return self.p0 @ turn

    def documents(self, rng, n, min_len, max_len, proj, noise):
        """n documents as a padded id matrix (-1 after each document's end), and labels."""
        lengths = rng.integers(min_len, max_len + 1, n)
        ranks = np.searchsorted(self.cdf, rng.random(int(lengths.sum())), side="right")
        words = self.id_of_rank[np.minimum(ranks, len(self.cdf) - 1)]
        ids = np.full((n, max_len), -1, np.int64)
        ids[np.arange(max_len)[None, :] < lengths[:, None]] = words
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        mean = np.add.reduceat(self.latent[words], starts) / lengths[:, None].astype(_F32)
        labels = np.argmax(mean @ proj.T.astype(_F32), axis=1)
        flip = rng.random(n) < noise
        labels[flip] = rng.integers(0, self.classes, int(flip.sum()))
        return ids, labels.astype(np.int64)


def _bags(padded):
    return [row[row >= 0].copy() for row in padded]


# -- the model ------------------------------------------------------------------------------


def _init(rng, vocab, dim, hidden, classes):
    return {
        _EMB: rng.normal(0.0, 0.1, (vocab, dim)).astype(_F32),
        "fc1.weight": (rng.standard_normal((hidden, dim)) * np.sqrt(2.0 / dim)).astype(_F32),
        "fc1.bias": np.zeros(hidden, _F32),
        "fc2.weight": (rng.standard_normal((classes, hidden)) / np.sqrt(hidden)).astype(_F32),
        "fc2.bias": np.zeros(classes, _F32),
    }


def _head(t, x):
    pre = x @ t["fc1.weight"].T + t["fc1.bias"]
    h = np.maximum(pre, 0)
    return pre, h, h @ t["fc2.weight"].T + t["fc2.bias"]


def forward(tensors, bags) -> np.ndarray:
    """Logits (n, classes), float32, of ``LAYERS`` over a list of bags of word ids."""
    if isinstance(bags, np.ndarray) and bags.ndim == 1:
        raise ValueError("bags must be a list of id arrays (one per document), not one array")
    bags = [np.asarray(b).reshape(-1) for b in bags]
    emb = tensors[_EMB]
    if not bags:
        return np.zeros((0, tensors["fc2.weight"].shape[0]), _F32)
    for i, b in enumerate(bags):
        if not len(b):
            raise ValueError(f"bag {i} is empty: a bag needs at least one id")
        if b.dtype.kind not in "iu":
            raise ValueError(f"bag {i}: word ids must be integers, got {b.dtype}")
    lengths = np.array([len(b) for b in bags])
    ids = np.concatenate(bags).astype(np.int64)
    if ids.min() < 0 or ids.max() >= emb.shape[0]:
        raise ValueError(f"word ids must be within [0, {emb.shape[0]})")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    x = np.add.reduceat(emb[ids], starts, axis=0) / lengths[:, None].astype(_F32)
    return _head(tensors, x.astype(_F32))[2]


def accuracy(tensors, bags, labels) -> float:
    """Fraction (0..1) of bags whose largest logit is their label."""
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(bags):
        raise ValueError(f"{len(bags)} bags but {len(labels)} labels")
    if not len(labels):
        raise ValueError("no bags to score")
    return float(np.mean(np.argmax(forward(tensors, bags), axis=1) == labels))


def delta_stats(base, variant, threshold: float = 1e-3) -> dict:
    """How far ``variant`` moved from ``base``: ``rows_changed``, the fraction of embedding
    rows whose max |delta| exceeds ``threshold``; ``rows_identical``, the fraction of rows
    bit-identical to the base's; ``relative`` {tensor: ||delta||_F / ||base||_F}."""
    same = (variant[_EMB] == base[_EMB]).all(axis=1)
    delta = np.abs(variant[_EMB] - base[_EMB]).max(axis=1)
    return {
        "rows_changed": float(np.mean(delta > threshold)),
        "rows_identical": float(np.mean(same)),
        "relative": {
            k: float(np.linalg.norm(variant[k] - base[k]) / np.linalg.norm(base[k])) for k in base
        },
    }


def _grads(t, batch, y):
    """Gradients of the batch's mean cross-entropy: the dense tensors', and the embedding's
    as (the rows the batch uses, their gradient)."""
    b = len(batch)
    used = batch >= 0
    n = used.sum(1)
    doc = np.nonzero(used)[0]
    rows, col = np.unique(batch[used], return_inverse=True)
    u = len(rows)
    # share[d, j]: weight of row j in document d's mean (its count / the length)
    share = np.bincount(doc * u + col, weights=1.0 / n[doc], minlength=b * u)
    share = share.reshape(b, u).astype(_F32)
    x = share @ t[_EMB][rows]
    pre, h, logits = _head(t, x)
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    p[np.arange(b), y] -= 1.0
    d = p / _F32(b)
    dh = (d @ t["fc2.weight"]) * (pre > 0)
    g = {"fc2.weight": d.T @ h, "fc2.bias": d.sum(0), "fc1.weight": dh.T @ x, "fc1.bias": dh.sum(0)}
    return g, rows, share.T @ (dh @ t["fc1.weight"])


def _train(t, padded, labels, rng, *, epochs, batch, lr, optimizer, momentum=0.9):
    """Train ``t`` in place, the learning rate decaying linearly to 0.
    "adam": Adam, lazy for the embedding (only the rows a batch uses move, SparseAdam's rule).
    "sgd": SGD with momentum (a row's velocity decays after its last use)."""
    state = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in t.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    steps = epochs * -(-len(padded) // batch)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(padded))
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            g, rows, g_rows = _grads(t, padded[idx], labels[idx])
            rate = _F32(lr * (1.0 - step / steps))
            step += 1
            if optimizer == "adam":
                c1, c2 = _F32(1 - b1**step), _F32(1 - b2**step)
                for k, gk in [*g.items(), (_EMB, g_rows)]:
                    m, v = state[k]
                    if k == _EMB:
                        m, v = m[rows], v[rows]
                    m *= b1
                    m += (1 - b1) * gk
                    v *= b2
                    v += (1 - b2) * gk * gk
                    move = rate * (m / c1) / (np.sqrt(v / c2) + _F32(eps))
                    if k == _EMB:
                        state[k][0][rows], state[k][1][rows] = m, v
                        t[k][rows] -= move
                    else:
                        t[k] -= move
            else:
                g[_EMB] = None
                for k, gk in g.items():
                    v = state[k][0]
                    v *= momentum
                    if gk is None:
                        v[rows] += g_rows
                    else:
                        v += gk
                    t[k] -= rate * v
    return t


def _scored(t, padded, labels, chunk=4096):
    right = sum(
        int((np.argmax(forward(t, _bags(padded[i : i + chunk])), 1) == labels[i : i + chunk]).sum())
        for i in range(0, len(padded), chunk)
    )
    return right / len(padded)


# -- the family -----------------------------------------------------------------------------


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_real(name, value, low, high=None, open_low=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and (high is None or value <= high)
    if not ok:
        bounds = f"{'>' if open_low else '>='} {low}"
        if high is not None:
            bounds += f" and <= {high}"
        raise ValueError(f"{name} must be a number {bounds}, got {value!r}")


def fine_tuned_family(
    n_variants: int = 4,
    *,
    vocab: int = 20000,
    dim: int = 64,
    hidden: int = 128,
    classes: int = 4,
    seed: int = 0,
    latent: int = 3,
    zipf: float = 1.0,
    salient: float = 300.0,
    frequency_ordered: bool = True,
    task_angle: float = 40.0,
    label_noise: float = 0.05,
    min_len: int = 10,
    max_len: int = 60,
    base_docs: int | None = None,
    tune_docs: int | None = None,
    eval_docs: int = 2000,
    base_epochs: int = 2,
    tune_epochs: int = 2,
    base_batch: int = 128,
    tune_batch: int = 128,
    base_lr: float = 3e-3,
    tune_lr: float = 0.2,
) -> TrainedFamily:
    """A trained base text classifier ("base", on task 0) and ``n_variants`` variants
    ("task-1", ...) fine-tuned from it on related tasks; see the module docstring.

    The language: ``vocab`` words of Zipf exponent ``zipf``, meanings of ``latent``
    dimensions fading past rank ``salient``, documents of ``min_len``..``max_len`` words,
    ``classes`` labels with ``label_noise``; tasks turned ``task_angle`` degrees from task 0.
    Training: ``base_docs`` documents (default 5 x ``vocab``, at least 20000) for
    ``base_epochs`` of Adam (``base_lr``, ``base_batch``); ``tune_docs`` (default a tenth of
    ``base_docs``) for ``tune_epochs`` of SGD with momentum (``tune_lr``, ``tune_batch``).
    ``eval_docs``: the size of each validation and each test set.
    Bad arguments raise ValueError."""
    _check_int("n_variants", n_variants, 0)
    for name, value, low in [
        ("vocab", vocab, 2),
        ("dim", dim, 1),
        ("hidden", hidden, 1),
        ("classes", classes, 2),
        ("latent", latent, 1),
        ("min_len", min_len, 1),
        ("max_len", max_len, 1),
        ("eval_docs", eval_docs, 1),
        ("base_epochs", base_epochs, 1),
        ("tune_epochs", tune_epochs, 1),
        ("base_batch", base_batch, 1),
        ("tune_batch", tune_batch, 1),
    ]:
        _check_int(name, value, low)
    _check_int("seed", seed, 0)
    if max_len < min_len:
        raise ValueError(f"max_len ({max_len}) must be >= min_len ({min_len})")
    base_docs = max(5 * vocab, 20000) if base_docs is None else base_docs
    _check_int("base_docs", base_docs, 1)
    tune_docs = max(1, base_docs // 10) if tune_docs is None else tune_docs
    _check_int("tune_docs", tune_docs, 1)
    _check_real("zipf", zipf, 0.0)
    _check_real("salient", salient, 0.0, open_low=True)
    _check_real("task_angle", task_angle, -360.0, 360.0)
    _check_real("label_noise", label_noise, 0.0, 1.0)
    _check_real("base_lr", base_lr, 0.0, open_low=True)
    _check_real("tune_lr", tune_lr, 0.0, open_low=True)

    rng0 = np.random.default_rng([seed, 0])
    world = _World(rng0, vocab, latent, classes, zipf, salient, bool(frequency_ordered))
    models, validation, test, own, by_base = {}, {}, {}, {}, {}
    base = None
    for i in range(n_variants + 1):
        name = "base" if i == 0 else f"task-{i}"
        rng = rng0 if i == 0 else np.random.default_rng([seed, i])
        proj = world.p0 if i == 0 else world.task(rng, task_angle)
        docs = world.documents(
            rng, base_docs if i == 0 else tune_docs, min_len, max_len, proj, label_noise
        )
        val = world.documents(rng, eval_docs, min_len, max_len, proj, label_noise)
        tst = world.documents(rng, eval_docs, min_len, max_len, proj, label_noise)
        if i == 0:
            t = base = _train(
                _init(rng, vocab, dim, hidden, classes),
                *docs,
                rng,
                epochs=base_epochs,
                batch=base_batch,
                lr=base_lr,
                optimizer="adam",
            )
        else:
            t = _train(
                {k: v.copy() for k, v in base.items()},
                *docs,
                rng,
                epochs=tune_epochs,
                batch=tune_batch,
                lr=tune_lr,
                optimizer="sgd",
            )
        models[name] = t
        validation[name] = (_bags(val[0]), val[1])
        test[name] = (_bags(tst[0]), tst[1])
        own[name] = _scored(t, *val)
        by_base[name] = _scored(base, *val)
    return TrainedFamily(models, [dict(layer) for layer in LAYERS], validation, test, own, by_base)


def report(**kwargs) -> str:
    """A table of the family's accuracies and how far each variant moved from the base."""
    start = time.perf_counter()
    family = fine_tuned_family(**kwargs)
    seconds = time.perf_counter() - start
    base = family.models["base"]
    names = list(base)
    lines = [
        f"trained in {seconds:.1f} s",
        "accuracy on the model's own validation set: own (the model), base (the base "
        "model), emb=base (the model with the base's embedding)",
        f"{'model':8} {'own':>6} {'base':>6} {'emb=base':>8} {'rows>1e-3':>9} "
        f"{'rows>1e-2':>9} {'same':>5}  relative ||delta||_F: " + " ".join(names),
    ]
    for name, t in family.models.items():
        stats = delta_stats(base, t)
        reverted = dict(t, **{_EMB: base[_EMB]})
        lines.append(
            f"{name:8} {family.accuracy[name]:6.3f} {family.base_accuracy[name]:6.3f} "
            f"{accuracy(reverted, *family.validation[name]):8.3f} "
            f"{stats['rows_changed']:9.3f} {delta_stats(base, t, 1e-2)['rows_changed']:9.3f} "
            f"{stats['rows_identical']:5.3f}  "
            + " ".join(f"{stats['relative'][k]:.3f}" for k in names)
        )
    if kwargs.get("frequency_ordered", True):
        vocab = len(base[_EMB])
        edges = [e for e in (0, 100, 1000, 5000) if e < vocab] + [vocab]
        bands = list(zip(edges[:-1], edges[1:]))
        lines.append(
            "median over rows of max |delta| by frequency rank: "
            + " ".join(f"[{a},{b})" for a, b in bands)
        )
        for name, t in list(family.models.items())[1:]:
            d = np.abs(t[_EMB] - base[_EMB]).max(axis=1)
            lines.append(f"{name:8} " + " ".join(f"{np.median(d[a:b]):.1e}" for a, b in bands))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
