"""Plain-numpy training for the dense families of :mod:`trained_families`: multilayer
perceptrons (dense layers, relu or tanh between them, logits out), softmax cross-entropy,
Adam and SGD with momentum, the learning rate decaying linearly to 0.

One place for the training code every dense family uses. Everything is float32; the
randomness comes from the generator the caller passes, so the same generator state gives
the same arrays. Tensors are laid out as PyTorch stores them: ``fc<i>.weight`` (out x in)
and ``fc<i>.bias``, i = 1..depth.
"""

from __future__ import annotations

import contextlib

import numpy as np

_F32 = np.float32
# activations the training code can differentiate (all of them are store activations)
ACTIVATIONS = ("relu", "tanh")


def one_thread():
    """BLAS on one thread (a context): these batches are small, and on a busy machine extra
    threads only spin (20x slower measured). threadpoolctl is optional (the bench extra)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def names(depth: int) -> list[tuple[str, str]]:
    """(weight, bias) names of a ``depth``-layer perceptron, input side first."""
    return [(f"fc{i}.weight", f"fc{i}.bias") for i in range(1, depth + 1)]


def layers(depth: int, activation: str = "relu") -> list[dict]:
    """The store's layer list of a ``depth``-layer perceptron: ``activation`` after every
    dense layer but the last, which gives logits."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    out = []
    for i, (w, b) in enumerate(names(depth)):
        layer = {"op": "dense", "weight": w, "bias": b}
        if i < depth - 1:
            layer["activation"] = activation
        out.append(layer)
    return out


def init(rng: np.random.Generator, widths) -> dict[str, np.ndarray]:
    """He-initialised weights (zero biases) for widths [n_in, hidden..., n_out]."""
    t = {}
    for (w, b), n_in, n_out in zip(names(len(widths) - 1), widths[:-1], widths[1:]):
        t[w] = (rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)).astype(_F32)
        t[b] = np.zeros(n_out, _F32)
    return t


def depth_of(t) -> int:
    depth = 0
    while f"fc{depth + 1}.weight" in t:
        depth += 1
    return depth


def _act(pre, activation):
    return np.maximum(pre, 0) if activation == "relu" else np.tanh(pre)


def logits(t, x, activation: str = "relu") -> np.ndarray:
    """The perceptron's logits (n, classes) for inputs x (n, n_in), float32."""
    h = np.asarray(x, _F32)
    pairs = names(depth_of(t))
    for i, (w, b) in enumerate(pairs):
        h = h @ t[w].T + t[b]
        if i < len(pairs) - 1:
            h = _act(h, activation)
    return h


def grads(t, x, y, activation: str = "relu", trainable=None) -> dict[str, np.ndarray]:
    """Gradients of the batch's mean softmax cross-entropy for the ``trainable`` tensors
    (all when None). The backward pass stops at the lowest trainable layer."""
    pairs = names(depth_of(t))
    trainable = set(t) if trainable is None else set(trainable)
    lowest = min(i for i, (w, b) in enumerate(pairs) if w in trainable or b in trainable)
    hs = [np.asarray(x, _F32)]  # hs[i]: the input of layer i
    outs = []  # each hidden layer's output after its activation
    for i, (w, b) in enumerate(pairs):
        pre = hs[-1] @ t[w].T + t[b]
        if i < len(pairs) - 1:
            outs.append(_act(pre, activation))
            hs.append(outs[-1])
        else:
            z = pre
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    d = p / _F32(len(y))  # dLoss / dlogits
    g = {}
    for i in range(len(pairs) - 1, lowest - 1, -1):
        w, b = pairs[i]
        if w in trainable:
            g[w] = d.T @ hs[i]
        if b in trainable:
            g[b] = d.sum(0)
        if i > lowest:
            d = d @ t[w]
            out = outs[i - 1]
            d = d * (out > 0) if activation == "relu" else d * (1 - out * out)
    return g


def accuracy(t, x, y, activation: str = "relu", chunk: int = 4096) -> float:
    """Fraction of rows whose largest logit is their label."""
    right = sum(
        int((np.argmax(logits(t, x[i : i + chunk], activation), 1) == y[i : i + chunk]).sum())
        for i in range(0, len(x), chunk)
    )
    return right / len(x)


def train(
    t,
    x,
    y,
    rng: np.random.Generator,
    *,
    epochs: int,
    batch: int,
    lr: float,
    optimizer: str = "adam",
    activation: str = "relu",
    trainable=None,
    momentum: float = 0.9,
):
    """Train ``t`` in place on (x, y) and return it; only the ``trainable`` tensors move
    (all when None), the others stay bit for bit. The learning rate decays linearly from
    ``lr`` to 0. "adam": Adam (0.9, 0.999, 1e-8); "sgd": SGD with ``momentum``."""
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    keys = list(t) if trainable is None else [k for k in t if k in set(trainable)]
    if not keys:
        raise ValueError("nothing to train: no trainable tensor is in the model")
    m = {k: np.zeros_like(t[k]) for k in keys}
    v = {k: np.zeros_like(t[k]) for k in keys}
    b1, b2, eps = 0.9, 0.999, _F32(1e-8)
    steps = epochs * -(-len(x) // batch)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            g = grads(t, x[idx], y[idx], activation, keys)
            rate = _F32(lr * (1.0 - step / steps))
            step += 1
            for k in keys:
                if optimizer == "sgd":
                    m[k] *= _F32(momentum)
                    m[k] += g[k]
                    t[k] -= rate * m[k]
                    continue
                m[k] *= _F32(b1)
                m[k] += _F32(1 - b1) * g[k]
                v[k] *= _F32(b2)
                v[k] += _F32(1 - b2) * g[k] * g[k]
                c1, c2 = _F32(1 - b1**step), _F32(1 - b2**step)
                t[k] -= rate * (m[k] / c1) / (np.sqrt(v[k] / c2) + eps)
    return t
