"""A BERT encoder in plain numpy: the independent reference the engine's encoder is checked
against, and the forward pass the encoder fine-tune family trains with.

It follows the Hugging Face ``BertModel`` layout (tensor names as in ``model.safetensors``,
with an optional prefix such as ``"bert."``) and sentence-transformers' pooling:

    h = LayerNorm(word[ids] + position[0..n) + token_type[types])
    per layer:  a = LayerNorm(h + Wo . attention(Wq h, Wk h, Wv h, padding mask))
                h = LayerNorm(a + W2 . gelu(W1 a))
    pool: mean over real tokens, the [CLS] row, or max; then an optional L2 normalize.

Written for clarity, not speed (float32, with float64 only where a sum needs it). Nothing
here is used by the library itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import erf, sqrt
from pathlib import Path

import numpy as np

try:  # the exact error function, vectorised (math.erf one value at a time takes minutes)
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - scipy is optional
    _erf = np.vectorize(erf, otypes=[np.float64])


@dataclass(frozen=True)
class BertConfig:
    layers: int
    heads: int
    hidden: int
    intermediate: int
    eps: float = 1e-12
    activation: str = "gelu"

    @classmethod
    def from_json(cls, config: dict) -> BertConfig:
        return cls(
            layers=int(config["num_hidden_layers"]),
            heads=int(config["num_attention_heads"]),
            hidden=int(config["hidden_size"]),
            intermediate=int(config["intermediate_size"]),
            eps=float(config.get("layer_norm_eps", 1e-12)),
            activation=str(config.get("hidden_act", "gelu")),
        )


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact, erf-based GELU (BERT's "gelu")."""
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / sqrt(2.0)))).astype(np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x64 - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)


def _linear(x: np.ndarray, w: dict, name: str) -> np.ndarray:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def encode(
    weights: dict[str, np.ndarray],
    config: BertConfig,
    ids: np.ndarray,
    mask: np.ndarray,
    *,
    prefix: str = "",
    token_types: np.ndarray | None = None,
) -> np.ndarray:
    """Token states (batch, tokens, hidden) for ``ids`` (batch, tokens) int, ``mask`` 1 for
    real tokens and 0 for padding."""
    w = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    ids = np.asarray(ids, dtype=np.int64)
    mask = np.asarray(mask, dtype=np.float32)
    b, n = ids.shape
    types = np.zeros_like(ids) if token_types is None else np.asarray(token_types)
    h = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][np.arange(n)][None]
        + w["embeddings.token_type_embeddings.weight"][types]
    )
    h = layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], config.eps)
    heads, d = config.heads, config.hidden // config.heads
    # padding keys get a large negative score, as transformers' extended attention mask does
    bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
    for i in range(config.layers):
        p = f"encoder.layer.{i}."

        def split(t):
            return t.reshape(b, n, heads, d).transpose(0, 2, 1, 3)

        q = split(_linear(h, w, p + "attention.self.query"))
        k = split(_linear(h, w, p + "attention.self.key"))
        v = split(_linear(h, w, p + "attention.self.value"))
        scores = (q @ k.transpose(0, 1, 3, 2)) / np.float32(sqrt(d)) + bias
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, config.hidden)
        a = _linear(ctx, w, p + "attention.output.dense") + h
        a = layer_norm(
            a,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            config.eps,
        )
        f = _linear(gelu(_linear(a, w, p + "intermediate.dense")), w, p + "output.dense") + a
        h = layer_norm(
            f, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], config.eps
        )
    return h.astype(np.float32)


def pool(states: np.ndarray, mask: np.ndarray, mode: str = "mean") -> np.ndarray:
    """Sentence vectors from token states, as sentence-transformers' Pooling does."""
    mask = np.asarray(mask, dtype=np.float32)[..., None]
    if mode == "mean":
        return (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    if mode == "cls":
        return states[:, 0]
    if mode == "max":
        return np.where(mask > 0, states, -1e9).max(axis=1)
    raise ValueError(f"unknown pooling {mode!r}; use mean, cls or max")


def classifier_logits(
    tensors: dict, config: BertConfig, id_rows, prefix: str = "bert."
) -> np.ndarray:
    """BertForSequenceClassification's logits for each row of token ids, one sentence at a
    time (unpadded): the pooler (tanh dense of the first token's state), then the
    classifier."""
    out = []
    for row in id_rows:
        ids = np.array([row])
        states = encode(tensors, config, ids, np.ones_like(ids), prefix=prefix)
        pooled = np.tanh(_linear(states[:, 0], tensors, prefix + "pooler.dense"))
        out.append(_linear(pooled, tensors, "classifier"))
    return np.concatenate(out)


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class SentenceEncoder:
    """A sentence-transformers folder (config.json, model.safetensors, tokenizer.json,
    1_Pooling/config.json, modules.json) run by the numpy reference."""

    def __init__(self, folder):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.config = BertConfig.from_json(json.loads((folder / "config.json").read_text()))
        self.weights = load_file(str(folder / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.pooling = "cls"
        pooling = folder / "1_Pooling" / "config.json"
        if pooling.exists():
            cfg = json.loads(pooling.read_text())
            keys = {
                "mean": "pooling_mode_mean_tokens",
                "cls": "pooling_mode_cls_token",
                "max": "pooling_mode_max_tokens",
            }
            self.pooling = next(mode for mode, key in keys.items() if cfg.get(key))
        modules = folder / "modules.json"
        self.normalize = modules.exists() and any(
            m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text())
        )
        st = folder / "sentence_bert_config.json"
        self.max_tokens = json.loads(st.read_text()).get("max_seq_length") if st.exists() else None

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        tok = self.tokenizer
        if self.max_tokens:
            tok.enable_truncation(self.max_tokens)
        tok.enable_padding()
        enc = tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.float32)
        return ids, mask

    def embed(self, texts: list[str]) -> np.ndarray:
        ids, mask = self.tokenize(texts)
        out = pool(encode(self.weights, self.config, ids, mask), mask, self.pooling)
        return normalize(out) if self.normalize else out
