"""Deterministic families of small models, for the demo, the tests and the benchmarks.

A family mirrors the paper's sentiment workload: one pretrained word embedding shared by
several text classifiers (embedding -> Dense(hidden, relu) -> Dense(1, sigmoid)), with
weights laid out as PyTorch's Linear stores them (out x in).

- ``base``: the pretrained model.
- ``frozen-<i>``: trained on another task with the embedding frozen: the embedding is
  the base's exactly, the dense head is its own.
- ``tuned-<i>``: the embedding fine-tuned too. Rows are ordered by word frequency and
  fine-tuning moved the most frequent ``tuned_fraction`` of them, so the rest of the
  embedding is still the base's, bit for bit.

Every model runs as ``TEXT_CLASSIFIER_LAYERS``: the mean of a review's word embeddings,
then the two dense layers. Everything is drawn from numpy's seeded generator: the same
arguments give the same bytes on every machine.
"""

from __future__ import annotations

import numpy as np

TEXT_CLASSIFIER_LAYERS = [
    {"op": "embedding_bag", "weight": "embedding.weight", "mode": "mean"},
    {"op": "dense", "weight": "fc1.weight", "bias": "fc1.bias", "activation": "relu"},
    {"op": "dense", "weight": "fc2.weight", "bias": "fc2.bias", "activation": "sigmoid"},
]


def text_classifier(
    rng: np.random.Generator, vocab: int, dim: int, hidden: int, embedding: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """One classifier's tensors; a given embedding is used as it is (shared, not copied)."""
    if embedding is None:
        embedding = rng.normal(0.0, 0.1, (vocab, dim)).astype(np.float32)
    return {
        "embedding.weight": embedding,
        "fc1.weight": (rng.normal(0.0, 1.0, (hidden, dim)) / np.sqrt(dim)).astype(np.float32),
        "fc1.bias": rng.normal(0.0, 0.01, hidden).astype(np.float32),
        "fc2.weight": (rng.normal(0.0, 1.0, (1, hidden)) / np.sqrt(hidden)).astype(np.float32),
        "fc2.bias": np.zeros(1, np.float32),
    }


def text_classifier_family(
    n_models: int = 5,
    *,
    vocab: int = 4096,
    dim: int = 64,
    hidden: int = 16,
    tuned_fraction: float = 0.125,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """``n_models`` classifiers over one embedding: base, then frozen and tuned variants
    alternating. Returns {model name: {tensor name: array}}, in that order."""
    if n_models < 1:
        raise ValueError(f"a family needs at least one model, got n_models={n_models}")
    if not 0.0 <= tuned_fraction <= 1.0:
        raise ValueError(f"tuned_fraction must be within [0, 1], got {tuned_fraction}")
    base = text_classifier(np.random.default_rng([seed, 0]), vocab, dim, hidden)
    family = {"base": base}
    tuned_rows = int(round(vocab * tuned_fraction))
    for i in range(1, n_models):
        rng = np.random.default_rng([seed, i])
        if i % 2:
            family[f"frozen-{i}"] = text_classifier(
                rng, vocab, dim, hidden, base["embedding.weight"]
            )
        else:
            embedding = base["embedding.weight"].copy()
            embedding[:tuned_rows] += rng.normal(0.0, 0.01, (tuned_rows, dim)).astype(np.float32)
            family[f"tuned-{i}"] = text_classifier(rng, vocab, dim, hidden, embedding)
    return family
