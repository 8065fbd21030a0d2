"""Transformer encoders: the layer list of a Hugging Face folder, derived from its files.

A folder whose ``config.json`` has ``model_type`` ``bert`` runs as stored, with no layer
list written by hand: adding it (``Store.add_model(path)``) stores the list
:func:`layers_from_folder` derives. Its first layer is the encoder::

    {"op": "encoder", "arch": "bert", "prefix": "", "layers": 6, "heads": 12,
     "hidden": 384, "intermediate": 1536, "eps": 1e-12, "activation": "gelu",
     "max_tokens": 256, "pooling": "mean", "normalize": true}

It takes text (tokenized with the model's ``tokenizer.json``, truncated to ``max_tokens``
tokens) or token ids, and gives one pooled vector per text (``Store.embed``, SQL
``tensor_embed``). Dense and activation layers may follow it: a head, run by
``Store.predict`` / SQL ``tensor_predict``.

- sentence-transformers folders (``modules.json``): pooling from ``1_Pooling/config.json``
  (mean, cls or max), ``normalize`` when a ``Normalize`` module follows, ``max_tokens`` from
  ``sentence_bert_config.json``'s ``max_seq_length``;
- ``BertForSequenceClassification``: CLS pooling, then the pooler (dense + tanh) and the
  classifier (dense): ``predict`` gives logits;
- ``BertModel`` and other BERT heads: CLS pooling, then the pooler when the folder has
  one (``predict`` gives ``pooler_output``).

Anything else raises :class:`UnsupportedModel` naming what it found and what is
supported; adding such a folder still stores its tensors and files bit-exactly, without
layers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import _engine

# model_type -> the architectures (config.json "architectures") whose own head is run
SUPPORTED = {"bert": ("BertModel", "BertForSequenceClassification")}
# the hidden activations the engine's encoder has (config.json "hidden_act")
ACTIVATIONS = _engine.ENCODER_ACTIVATIONS
POOLINGS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
}


class UnsupportedModel(ValueError):
    """A folder whose architecture the engine cannot run (its tensors can still be stored)."""


def _supported() -> str:
    return "; ".join(f"model_type {t!r} ({', '.join(a)})" for t, a in SUPPORTED.items())


def encoder_tensors(layer: Mapping[str, Any]) -> dict[str, tuple[int | None, int]]:
    """The tensors an encoder layer reads: name -> (rows, cols), rows None for "any" (an
    embedding table's rows); a vector is (n, 1). The engine resolves the same names
    (cython/inference/encoder.pxi)."""
    p, h, i = layer["prefix"], layer["hidden"], layer["intermediate"]
    out: dict[str, tuple[int | None, int]] = {
        f"{p}embeddings.word_embeddings.weight": (None, h),
        f"{p}embeddings.position_embeddings.weight": (None, h),
        f"{p}embeddings.token_type_embeddings.weight": (None, h),
        f"{p}embeddings.LayerNorm.weight": (h, 1),
        f"{p}embeddings.LayerNorm.bias": (h, 1),
    }
    for k in range(layer["layers"]):
        b = f"{p}encoder.layer.{k}."
        for name, rows, cols in (
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ):
            out[f"{b}{name}.weight"] = (rows, cols)
            out[f"{b}{name}.bias"] = (rows, 1)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            out[f"{b}{norm}.weight"] = (h, 1)
            out[f"{b}{norm}.bias"] = (h, 1)
    return out


def _json(files: Mapping[str, bytes], name: str) -> Any:
    try:
        return json.loads(files[name])
    except (ValueError, UnicodeDecodeError) as e:
        raise UnsupportedModel(f"{name} is not valid JSON ({e})") from None


def _shape(t) -> tuple[int, ...]:
    """A tensor's shape, given an array or a (shape, dtype) pair."""
    return tuple(t.shape) if hasattr(t, "shape") else tuple(t[0])


def layers_from_folder(files: Mapping[str, bytes], tensors: Mapping[str, Any]) -> list[dict]:
    """The layer list that runs a Hugging Face folder: ``files`` its side files by relative
    path (config.json, tokenizer.json, modules.json, ...), ``tensors`` its tensors (name ->
    array, or -> (shape, dtype)). Raises :class:`UnsupportedModel` when the folder is not an
    architecture the engine runs, naming what it found and what is supported."""
    if "config.json" not in files:
        raise UnsupportedModel(f"the folder has no config.json; encoders run for {_supported()}")
    config = _json(files, "config.json")
    if not isinstance(config, dict):
        raise UnsupportedModel("config.json must be a JSON object")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise UnsupportedModel(
            f"config.json has model_type {model_type!r}, which the engine cannot run; "
            f"supported: {_supported()}"
        )
    archs = config.get("architectures") or []
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise UnsupportedModel(
            f"config.json has hidden_act {act!r}; the encoder runs {', '.join(ACTIVATIONS)}"
        )
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedModel(
            f"config.json has position_embedding_type {config['position_embedding_type']!r}; "
            "the encoder runs 'absolute'"
        )
    try:
        hidden = int(config["hidden_size"])
        layer = {
            "op": "encoder",
            "arch": "bert",
            "prefix": "",
            "layers": int(config["num_hidden_layers"]),
            "heads": int(config["num_attention_heads"]),
            "hidden": hidden,
            "intermediate": int(config["intermediate_size"]),
            "eps": float(config.get("layer_norm_eps", 1e-12)),
            "activation": act,
            "max_tokens": int(config.get("max_position_embeddings", 512)),
            "pooling": "cls",
            "normalize": False,
        }
    except (KeyError, TypeError, ValueError) as e:
        raise UnsupportedModel(f"config.json lacks or mangles a BERT setting ({e!r})") from None
    # the tensors' own prefix: BertModel's files have none, the task heads' "bert."
    for prefix in ("", "bert."):
        if f"{prefix}embeddings.word_embeddings.weight" in tensors:
            layer["prefix"] = prefix
            break
    else:
        raise UnsupportedModel(
            "no embeddings.word_embeddings.weight (nor bert.embeddings...) among the tensors"
        )
    head: list[dict] = []
    if "modules.json" in files:
        _sentence_transformers(files, layer)
    else:
        p = layer["prefix"]
        if f"{p}pooler.dense.weight" in tensors:
            head.append(
                {
                    "op": "dense",
                    "weight": f"{p}pooler.dense.weight",
                    "bias": f"{p}pooler.dense.bias",
                    "activation": "tanh",
                }
            )
        if "BertForSequenceClassification" in archs:
            if not head or "classifier.weight" not in tensors:
                raise UnsupportedModel(
                    "config.json says BertForSequenceClassification but the tensors lack "
                    f"{p}pooler.dense.weight or classifier.weight"
                )
            head.append({"op": "dense", "weight": "classifier.weight", "bias": "classifier.bias"})
        elif archs and not any(a.startswith("Bert") for a in archs):
            raise UnsupportedModel(
                f"config.json has architectures {archs}; supported: {_supported()}"
            )
    positions = _shape(tensors[f"{layer['prefix']}embeddings.position_embeddings.weight"])[0]
    layer["max_tokens"] = min(layer["max_tokens"], positions)
    return [layer, *head]


def derived_layers(files: Mapping[str, bytes], tensors: Mapping[str, Any]) -> list[dict] | None:
    """layers_from_folder's list, or None for a folder the engine does not run (stored
    without layers; running it says why: :func:`why_not`)."""
    try:
        return layers_from_folder(files, tensors)
    except UnsupportedModel:
        return None


def why_not(files: Mapping[str, bytes], tensors: Mapping[str, Any]) -> str | None:
    """Why a folder has no derived layers (UnsupportedModel's message), or None."""
    try:
        layers_from_folder(files, tensors)
    except UnsupportedModel as e:
        return str(e)
    return None


def _sentence_transformers(files: Mapping[str, bytes], layer: dict) -> None:
    """Pooling, Normalize and max_seq_length of a sentence-transformers folder, into layer."""
    modules = _json(files, "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise UnsupportedModel("modules.json must be a list of objects")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    known = {"Transformer", "Pooling", "Normalize"}
    if set(kinds) - known:
        raise UnsupportedModel(
            f"modules.json has modules {sorted(set(kinds) - known)}; the encoder runs "
            "Transformer, Pooling and Normalize"
        )
    layer["normalize"] = "Normalize" in kinds
    if "Pooling" in kinds:
        path = str(modules[kinds.index("Pooling")].get("path") or "1_Pooling")
        cfg = _json(files, f"{path}/config.json") if f"{path}/config.json" in files else {}
        modes = [m for m, key in POOLINGS.items() if cfg.get(key)]
        others = [
            k for k, v in cfg.items()
            if k.startswith("pooling_mode") and v and k not in POOLINGS.values()
        ]
        if len(modes) != 1 or others:
            raise UnsupportedModel(
                f"{path}/config.json asks for pooling {modes + others}; the encoder pools "
                f"with exactly one of {', '.join(POOLINGS)}"
            )
        layer["pooling"] = modes[0]
    if "sentence_bert_config.json" in files:
        st = _json(files, "sentence_bert_config.json")
        if isinstance(st, dict) and isinstance(st.get("max_seq_length"), int):
            layer["max_tokens"] = min(layer["max_tokens"], st["max_seq_length"])
