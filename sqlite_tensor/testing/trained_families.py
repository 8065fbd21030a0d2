"""Trained model families with different recipes, for judging dedup on families it was not
tuned on (issue 14). Every family is a :class:`~sqlite_tensor.testing.trained.TrainedFamily`
trained in plain numpy (float32, seeded: the same ``size`` and ``seed`` give the same
arrays), and runs as the store's layer list ``family.layers``.

    FAMILIES[name](size="default" | "small", seed=0) -> TrainedFamily

"small" is for tests (under a second each); "default" for benchmarks (a few seconds each).

The dense families (``mlp-shift``, ``frozen``, ``lr-epochs``, ``retrained``) classify dense
inputs labelled by a hidden teacher (:class:`_World`): a latent vector z (N(mu, I)) is
mixed into ``n_in`` noisy features, x = z A + noise; its label is argmax(P R z), with a
few labels flipped. A task is a rotation R of the latent space (in a random plane) and a
shift mu of the inputs: task 0 is (I, 0); task i is turned and shifted from it. The
training code is :mod:`.nets` (one place for all of them).

Each family's docstring gives its figures, measured with
``python -m sqlite_tensor.testing.trained_families`` (seed 0, default size): each model's
accuracy on its own task's validation set ("own"), its reference model's there ("ref":
the base, or a chain's previous version), and ||delta||_F / ||reference||_F per tensor.
"""

from __future__ import annotations

import time

import numpy as np

from . import nets, trained
from .trained import TrainedFamily

_F32 = np.float32
SIZES = ("default", "small")
# Examples in each validation and test set. A guard that stops where the validation score
# reaches the budget picks configurations whose validation noise happens to be kind: with
# 2,000 examples a 1-point budget on validation came out as 2 points lost on test. 10,000
# keep that noise (and the test's own) to a few tenths of a point.
EVAL_N = {"default": 10000, "small": 1000}


class _World:
    """The hidden teacher shared by a family's tasks: the mixing A, the label map P."""

    def __init__(self, rng, n_in, latent, classes, noise, label_noise):
        self.mix = (rng.standard_normal((latent, n_in)) / np.sqrt(latent)).astype(_F32)
        self.proj = rng.standard_normal((classes, latent))
        self.latent, self.classes = latent, classes
        self.noise, self.label_noise = noise, label_noise

    def turn(self, rng, degrees):
        """A rotation of the latent space by ``degrees`` in a random plane."""
        q, _ = np.linalg.qr(rng.standard_normal((self.latent, 2)))
        u, v = q[:, 0], q[:, 1]
        th = np.radians(degrees)
        return (
            np.eye(self.latent)
            + (np.cos(th) - 1.0) * (np.outer(u, u) + np.outer(v, v))
            + np.sin(th) * (np.outer(v, u) - np.outer(u, v))
        )

    def shift(self, rng, size):
        """An input shift of norm ``size`` (in latent units) in a random direction."""
        d = rng.standard_normal(self.latent)
        return size * d / np.linalg.norm(d)

    def sample(self, rng, n, turn, shift):
        """n inputs (float32, n x n_in) of the task (turn, shift) and their int64 labels."""
        z = rng.standard_normal((n, self.latent)) + shift
        x = z.astype(_F32) @ self.mix
        x += _F32(self.noise) * rng.standard_normal(x.shape, dtype=_F32)
        y = np.argmax(z @ turn.T @ self.proj.T, axis=1)
        flip = rng.random(n) < self.label_noise
        y[flip] = rng.integers(0, self.classes, int(flip.sum()))
        return x, y.astype(np.int64)


def _check(size, seed):
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def _family(world, steps, *, activation, eval_n, chain=False):
    with nets.one_thread():
        return _train_family(world, steps, activation=activation, eval_n=eval_n, chain=chain)


def _train_family(world, steps, *, activation, eval_n, chain=False):
    """Train the models ``steps`` describes and package them.

    steps: [(name, rng, (turn, shift), n_train, train options)], the first trained from
    ``init`` (in its options), the others from the base, or, with ``chain``, each from the
    previous model. Validation and test sets (``eval_n`` each) are drawn from the model's
    own task, after its training data, from its own generator."""
    models, val, test, own, by_ref, reference = {}, {}, {}, {}, {}, {}
    prev = None
    for i, (name, rng, task, n_train, options) in enumerate(steps):
        options = dict(options)
        x, y = world.sample(rng, n_train, *task)
        val[name] = world.sample(rng, eval_n, *task)
        test[name] = world.sample(rng, eval_n, *task)
        if i == 0:
            start = nets.init(rng, options.pop("init"))
            reference[name] = None
        else:
            ref = prev if chain else next(iter(models))
            start = {k: v.copy() for k, v in models[ref].items()}
            reference[name] = ref
        models[name] = nets.train(start, x, y, rng, activation=activation, **options)
        own[name] = nets.accuracy(models[name], *val[name], activation)
        ref_model = models[reference[name] or name]
        by_ref[name] = nets.accuracy(ref_model, *val[name], activation)
        prev = name
    depth = nets.depth_of(models[next(iter(models))])
    return TrainedFamily(models, nets.layers(depth, activation), val, test, own, by_ref, reference)


def mlp_shift(size: str = "default", seed: int = 0) -> TrainedFamily:
    """The issue's family: a base MLP 2048 -> 1024 (relu) -> 16 on task 0 and four variants
    ("task-1".."task-4") fine-tuned from it, every tensor, on tasks turned 45 degrees and
    shifted by 0.5 from task 0.

    Base: Adam (1e-3, decaying), 3 epochs of 6,000 inputs; variants: SGD with momentum
    (0.015), 2 epochs of 1,500 inputs of their task. Latent 8, feature noise 0.5.

    Measured (default size, seed 0)::

        trained in 15.8 s (a quiet machine; 10,000-example validation and test sets)
        model       own    ref  relative ||delta||_F: fc1.w fc1.b fc2.w fc2.b
        base      0.854  0.854  0.000 0.000 0.000 0.000
        task-1    0.818  0.614  0.037 0.169 0.259 0.616
        task-2    0.783  0.675  0.035 0.170 0.260 0.923
        task-3    0.796  0.658  0.033 0.149 0.248 0.860
        task-4    0.811  0.646  0.036 0.192 0.254 1.292
    """
    _check(size, seed)
    small = size == "small"
    widths = [256, 128, 16] if small else [2048, 1024, 16]
    rng0 = np.random.default_rng([seed, 0])
    world = _World(rng0, widths[0], 8, widths[-1], 0.5, 0.03)
    base_opts = dict(init=widths, epochs=3, batch=128, lr=1e-3, optimizer="adam")
    tune_opts = dict(epochs=2, batch=64, lr=0.015, optimizer="sgd")
    steps = [("base", rng0, (np.eye(8), np.zeros(8)), 6000, base_opts)]
    for i in range(1, 5):
        rng = np.random.default_rng([seed, i])
        task = (world.turn(rng, 45.0), world.shift(rng, 0.5))
        steps.append((f"task-{i}", rng, task, 1500, tune_opts))
    return _family(world, steps, activation="relu", eval_n=EVAL_N[size])


def frozen(size: str = "default", seed: int = 0) -> TrainedFamily:
    """Fine-tuning with layers frozen, and a deeper net: 768 -> 512 -> 256 -> 256 -> 10
    (relu). "task-1" and "task-2" are tuned with fc1 frozen, "task-3" and "task-4" with
    fc1 and fc2 frozen: those tensors are the base's bit for bit.

    Base: Adam (1e-3), 3 epochs of 6,000 inputs; variants: Adam (1e-3), 3 epochs of 2,000
    inputs of tasks turned 60 degrees and shifted by 0.5. Latent 10, feature noise 0.5.

    Measured (default size, seed 0)::

        trained in 4.7 s (a quiet machine; 10,000-example validation and test sets)
        model       own    ref  relative ||delta||_F: fc1.w fc1.b fc2.w fc2.b fc3.w fc3.b fc4.w fc4.b
        base      0.857  0.857  0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000
        task-1    0.835  0.665  0.000 0.000 0.099 1.017 0.066 0.926 0.080 1.158
        task-2    0.841  0.621  0.000 0.000 0.101 1.080 0.070 1.083 0.084 1.063
        task-3    0.800  0.618  0.000 0.000 0.000 0.000 0.092 1.305 0.103 1.308
        task-4    0.799  0.623  0.000 0.000 0.000 0.000 0.093 1.561 0.105 1.745
    """
    _check(size, seed)
    small = size == "small"
    widths = [128, 96, 64, 64, 10] if small else [768, 512, 256, 256, 10]
    rng0 = np.random.default_rng([seed, 0])
    world = _World(rng0, widths[0], 10, widths[-1], 0.5, 0.03)
    base_opts = dict(init=widths, epochs=3, batch=128, lr=1e-3, optimizer="adam")
    steps = [("base", rng0, (np.eye(10), np.zeros(10)), 6000, base_opts)]
    tunable = [k for w, b in nets.names(len(widths) - 1) for k in (w, b)]
    for i in range(1, 5):
        rng = np.random.default_rng([seed, i])
        task = (world.turn(rng, 60.0), world.shift(rng, 0.5))
        frozen_layers = 1 if i <= 2 else 2
        opts = dict(
            epochs=3, batch=64, lr=1e-3, optimizer="adam", trainable=tunable[2 * frozen_layers :]
        )
        steps.append((f"task-{i}", rng, task, 2000, opts))
    return _family(world, steps, activation="relu", eval_n=EVAL_N[size])


def lr_epochs(size: str = "default", seed: int = 0) -> TrainedFamily:
    """Fine-tuning with a large learning rate for many epochs, and tanh: 1024 -> 512 ->
    256 -> 24 (tanh). Variants "task-1".."task-4" are tuned with Adam at 2e-3 (twice the
    base's peak rate) for 6 epochs, every tensor, on tasks turned 45 degrees and shifted by
    0.5: their deltas are several times those of ``mlp-shift``.

    Base: Adam (1e-3), 3 epochs of 6,000 inputs; variants: 1,500 inputs each. Latent 8,
    feature noise 0.5.

    Measured (default size, seed 0)::

        trained in 6.4 s (a quiet machine; 10,000-example validation and test sets)
        model       own    ref  relative ||delta||_F: fc1.w fc1.b fc2.w fc2.b fc3.w fc3.b
        base      0.839  0.839  0.000 0.000 0.000 0.000 0.000 0.000
        task-1    0.808  0.661  0.274 1.506 0.186 1.673 0.144 4.090
        task-2    0.802  0.626  0.274 1.550 0.186 1.457 0.143 4.045
        task-3    0.800  0.610  0.276 1.493 0.187 1.426 0.143 1.631
        task-4    0.803  0.640  0.278 1.597 0.188 1.448 0.133 1.541
    """
    _check(size, seed)
    small = size == "small"
    widths = [192, 96, 48, 24] if small else [1024, 512, 256, 24]
    rng0 = np.random.default_rng([seed, 0])
    world = _World(rng0, widths[0], 8, widths[-1], 0.5, 0.03)
    base_opts = dict(init=widths, epochs=3, batch=128, lr=1e-3, optimizer="adam")
    tune_opts = dict(epochs=6, batch=64, lr=2e-3, optimizer="adam")
    steps = [("base", rng0, (np.eye(8), np.zeros(8)), 6000, base_opts)]
    for i in range(1, 5):
        rng = np.random.default_rng([seed, i])
        task = (world.turn(rng, 45.0), world.shift(rng, 0.5))
        steps.append((f"task-{i}", rng, task, 1500, tune_opts))
    return _family(world, steps, activation="tanh", eval_n=EVAL_N[size])


def retrained(size: str = "default", seed: int = 0) -> TrainedFamily:
    """Retrained versions of one model, 1024 -> 512 (relu) -> 12: "v1" trained from
    scratch, then each "v<k>" continues training from "v<k-1>" on fresh data that has
    drifted further (the task turns another 30 degrees in a new random plane and the
    inputs shift another 0.4 at every version). ``reference`` is the previous version:
    the delta that matters is v<k> - v<k-1>.

    v1: Adam (1e-3), 3 epochs of 6,000 inputs; v2..v5: Adam (3e-4), 2 epochs of 3,000
    inputs. Latent 8, feature noise 0.5.

    Measured (default size, seed 0)::

        trained in 4.8 s (a quiet machine; 10,000-example validation and test sets)
        model       own    ref  relative ||delta||_F: fc1.w fc1.b fc2.w fc2.b
        v1        0.868  0.868  0.000 0.000 0.000 0.000
        v2        0.866  0.718  0.041 0.265 0.032 0.329
        v3        0.871  0.710  0.041 0.249 0.032 0.310
        v4        0.876  0.760  0.040 0.226 0.029 0.220
        v5        0.867  0.751  0.039 0.210 0.029 0.422
    """
    _check(size, seed)
    small = size == "small"
    widths = [192, 96, 12] if small else [1024, 512, 12]
    rng0 = np.random.default_rng([seed, 0])
    world = _World(rng0, widths[0], 8, widths[-1], 0.5, 0.03)
    first = dict(init=widths, epochs=3, batch=128, lr=1e-3, optimizer="adam")
    again = dict(epochs=2, batch=64, lr=3e-4, optimizer="adam")
    turn, shift = np.eye(8), np.zeros(8)
    steps = [("v1", rng0, (turn, shift), 6000, first)]
    for k in range(2, 6):
        rng = np.random.default_rng([seed, k])
        turn = world.turn(rng, 30.0) @ turn
        shift = shift + world.shift(rng, 0.4)
        steps.append((f"v{k}", rng, (turn, shift), 3000, again))
    return _family(world, steps, activation="relu", eval_n=EVAL_N[size], chain=True)


# The small size of the embedding_bag recipes (text, text-shuffled): what the tests train.
SMALL_TEXT = dict(vocab=2048, hidden=32, base_epochs=3, tune_docs=4000)


def text(size: str = "default", seed: int = 0) -> TrainedFamily:
    """The embedding_bag text family of :mod:`.trained` (its docstring has the figures)."""
    _check(size, seed)
    with nets.one_thread():
        if size == "small":
            return trained.fine_tuned_family(
                4, dim=32, eval_docs=EVAL_N[size], seed=seed, **SMALL_TEXT
            )
        return trained.fine_tuned_family(4, eval_docs=EVAL_N[size], seed=seed)


def text_shuffled(size: str = "default", seed: int = 0) -> TrainedFamily:
    """An embedding_bag classifier with another recipe than ``text``: the vocabulary in a
    random order (frequent words' rows scattered over the table, not first), 8 classes,
    a wider head (dim 48, hidden 96), tasks turned 30 degrees and fine-tuned for 3 epochs
    (SGD 0.3).

    Measured (default size, seed 0)::

        trained in 4.3 s (a quiet machine; 10,000-example validation and test sets)
        model       own    ref  relative ||delta||_F: embedding.w fc1.w fc1.b fc2.w fc2.b
        base      0.822  0.822  0.000 0.000 0.000 0.000 0.000
        task-1    0.803  0.689  0.071 0.042 0.799 0.278 1.755
        task-2    0.802  0.707  0.070 0.047 0.640 0.302 2.207
        task-3    0.806  0.668  0.070 0.043 0.597 0.306 2.021
        task-4    0.814  0.706  0.073 0.046 0.680 0.308 2.066
    """
    _check(size, seed)
    common = dict(
        frequency_ordered=False,
        classes=8,
        task_angle=30.0,
        tune_epochs=3,
        tune_lr=0.3,
        latent=4,
        seed=seed,
    )
    with nets.one_thread():
        if size == "small":
            return trained.fine_tuned_family(
                4, dim=24, eval_docs=EVAL_N[size], **SMALL_TEXT, **common
            )
        return trained.fine_tuned_family(
            4, vocab=12000, dim=48, hidden=96, eval_docs=EVAL_N[size], **common
        )


FAMILIES = {
    "text": text,
    "mlp-shift": mlp_shift,
    "frozen": frozen,
    "lr-epochs": lr_epochs,
    "retrained": retrained,
    "text-shuffled": text_shuffled,
}
# Dedup's defaults may be fitted on these only. "text" is the family the project has always
# measured itself on; "mlp-shift" is the issue's own example, already looked at when the
# issue was filed, so it cannot honestly be held out. Every other family (other recipes:
# frozen layers, large learning rates, retrained chains, a shuffled vocabulary) is held out:
# report on those, and do not change a default to suit them.
FIT_FAMILIES = ("text", "mlp-shift")
HELD_OUT = tuple(name for name in FAMILIES if name not in FIT_FAMILIES)


def describe(family: TrainedFamily) -> str:
    """Each model's own and reference accuracy and its relative delta per tensor."""
    first = next(iter(family.models))
    names = list(family.models[first])
    lines = [
        f"{'model':8} {'own':>6} {'ref':>6}  relative ||delta||_F: "
        + " ".join(n.replace(".weight", ".w").replace(".bias", ".b") for n in names)
    ]
    for name, t in family.models.items():
        ref = family.models[family.reference[name] or name]
        rel = [np.linalg.norm(t[k] - ref[k]) / max(np.linalg.norm(ref[k]), 1e-12) for k in names]
        lines.append(
            f"{name:8} {family.accuracy[name]:6.3f} {family.base_accuracy[name]:6.3f}  "
            + " ".join(f"{r:.3f}" for r in rel)
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="family", help=", ".join(FAMILIES))
    parser.add_argument("--size", default="default", choices=SIZES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; families are {', '.join(FAMILIES)}")
    for name in args.names or FAMILIES:
        start = time.perf_counter()
        family = FAMILIES[name](args.size, args.seed)
        print(f"{name}: trained in {time.perf_counter() - start:.1f} s")
        print(describe(family))


if __name__ == "__main__":
    main()
