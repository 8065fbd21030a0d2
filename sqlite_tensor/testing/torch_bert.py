"""A BERT forward in ``torch.nn.functional`` over a safetensors file: the PyTorch reference of
the encoder benchmarks (asv_bench/benchmarks/bench_encoders.py) beside sentence-transformers,
and the "load each fine-tune whole" side of the serving benchmark.

It runs the same layouts as :mod:`.bert_reference` (BertModel, with an optional prefix such
as ``"bert."``; the pooler and classifier of BertForSequenceClassification) with PyTorch's
fused kernels (``F.scaled_dot_product_attention``, ``F.layer_norm``, ``F.gelu``), in
``torch.inference_mode``. Nothing here is used by the library itself; torch is imported
when a model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from .bert_reference import BertConfig


class TorchBert:
    """One folder (config.json + model.safetensors) loaded whole into torch tensors."""

    def __init__(self, folder, *, pooling: str = "mean", normalize: bool = True):
        import torch  # noqa: F401  (fail here, not mid-request)
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        self.config = BertConfig.from_json(config)
        w = load_file(str(folder / "model.safetensors"))
        self.classifier = "classifier.weight" in w
        self.prefix = "bert." if self.classifier else ""
        self.w = w
        self.pooling, self.normalize = pooling, normalize

    def _t(self, name):
        return self.w[self.prefix + name]

    def states(self, ids, mask):
        """Token states (batch, tokens, hidden) for int64 ``ids`` and 0/1 ``mask`` tensors."""
        import torch
        import torch.nn.functional as F

        cfg = self.config
        b, n = ids.shape
        with torch.inference_mode():
            h = (
                F.embedding(ids, self._t("embeddings.word_embeddings.weight"))
                + self._t("embeddings.position_embeddings.weight")[:n]
                + self._t("embeddings.token_type_embeddings.weight")[0]
            )
            h = F.layer_norm(
                h,
                (cfg.hidden,),
                self._t("embeddings.LayerNorm.weight"),
                self._t("embeddings.LayerNorm.bias"),
                cfg.eps,
            )
            heads, d = cfg.heads, cfg.hidden // cfg.heads
            keep = mask.bool()[:, None, None, :]  # padding keys take no attention
            for i in range(cfg.layers):
                p = f"encoder.layer.{i}."

                def lin(x, name, p=p):
                    return F.linear(x, self._t(p + name + ".weight"), self._t(p + name + ".bias"))

                def split(t):
                    return t.view(b, n, heads, d).transpose(1, 2)

                q = split(lin(h, "attention.self.query"))
                k = split(lin(h, "attention.self.key"))
                v = split(lin(h, "attention.self.value"))
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
                ctx = ctx.transpose(1, 2).reshape(b, n, cfg.hidden)
                a = F.layer_norm(
                    lin(ctx, "attention.output.dense") + h,
                    (cfg.hidden,),
                    self._t(p + "attention.output.LayerNorm.weight"),
                    self._t(p + "attention.output.LayerNorm.bias"),
                    cfg.eps,
                )
                f = lin(F.gelu(lin(a, "intermediate.dense")), "output.dense") + a
                h = F.layer_norm(
                    f,
                    (cfg.hidden,),
                    self._t(p + "output.LayerNorm.weight"),
                    self._t(p + "output.LayerNorm.bias"),
                    cfg.eps,
                )
            return h

    def embed(self, ids, mask):
        """Sentence vectors (mean / cls / max pooling, then an optional L2 normalize)."""
        import torch
        import torch.nn.functional as F

        h = self.states(ids, mask)
        with torch.inference_mode():
            m = mask.to(h.dtype)[..., None]
            if self.pooling == "mean":
                out = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            elif self.pooling == "cls":
                out = h[:, 0]
            else:
                out = h.masked_fill(m == 0, -1e9).max(1).values
            return F.normalize(out, dim=-1) if self.normalize else out

    def logits(self, ids, mask):
        """BertForSequenceClassification's logits: tanh pooler on [CLS], then classifier."""
        import torch
        import torch.nn.functional as F

        h = self.states(ids, mask)
        with torch.inference_mode():
            q = torch.tanh(
                F.linear(
                    h[:, 0], self.w["bert.pooler.dense.weight"], self.w["bert.pooler.dense.bias"]
                )
            )
            return F.linear(q, self.w["classifier.weight"], self.w["classifier.bias"])

    def run(self, ids, mask):
        """Logits for a classifier folder, sentence vectors otherwise."""
        return self.logits(ids, mask) if self.classifier else self.embed(ids, mask)


def tokenizer(folder, max_tokens: int | None = None):
    """The folder's tokenizers.Tokenizer, padding per batch (and truncating)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    if max_tokens:
        tok.enable_truncation(max_tokens)
    tok.enable_padding()
    return tok


def encode(tok, texts):
    """(ids, mask) int64 torch tensors for texts."""
    import torch

    enc = tok.encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
    return ids, mask
