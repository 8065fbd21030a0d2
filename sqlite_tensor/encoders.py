"""Transformer encoders: the layer list of a Hugging Face folder, derived from its files.

A folder whose ``config.json`` has ``model_type`` ``bert`` or ``distilbert`` runs as
stored, with no layer list written by hand: adding it (``Store.add_model(path)``) stores the list
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
  one (``predict`` gives ``pooler_output``);
- DistilBERT (``arch`` ``"distilbert"``: no token types, its own tensor names):
  ``DistilBertForSequenceClassification`` pools CLS, then ``pre_classifier`` (ReLU) and
  ``classifier``; ``DistilBertModel`` the CLS row.

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
SUPPORTED = {
    "bert": ("BertModel", "BertForSequenceClassification"),
    "distilbert": ("DistilBertModel", "DistilBertForSequenceClassification"),
}
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
    embedding table's rows); a vector is (n, 1). The names are the engine's, per arch
    (cython/c/st_names.h)."""
    n = _engine.ENCODER_TENSOR_NAMES[layer["arch"]]
    p, h, i = layer["prefix"], layer["hidden"], layer["intermediate"]
    out: dict[str, tuple[int | None, int]] = {}
    for table in ("word", "position", "token_type"):
        if n[table] is not None:
            out[f"{p}{n[table]}.weight"] = (None, h)
    out[f"{p}{n['norm']}.weight"] = (h, 1)
    out[f"{p}{n['norm']}.bias"] = (h, 1)
    for k in range(layer["layers"]):
        b = f"{p}{n['block']}.{k}."
        for part, rows, cols in (
            ("query", h, h),
            ("key", h, h),
            ("value", h, h),
            ("attn_out", h, h),
            ("inter", i, h),
            ("out", h, i),
        ):
            out[f"{b}{n[part]}.weight"] = (rows, cols)
            out[f"{b}{n[part]}.bias"] = (rows, 1)
        for norm in ("attn_norm", "out_norm"):
            out[f"{b}{n[norm]}.weight"] = (h, 1)
            out[f"{b}{n[norm]}.bias"] = (h, 1)
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
    if model_type == "distilbert":
        return _distilbert(files, config, archs, tensors)
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
    layer = _layer(
        "bert",
        config,
        act,
        "num_hidden_layers",
        "num_attention_heads",
        "hidden_size",
        "intermediate_size",
        float(config.get("layer_norm_eps", 1e-12)),
    )
    # the tensors' own prefix: BertModel's files have none, the task heads' "bert."
    layer["prefix"] = _prefix(tensors, ("", "bert."), "bert")
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
    return [_fit_positions(layer, tensors), *head]


def _layer(arch, config, act, n_layers, n_heads, hidden, inter, eps) -> dict:
    try:
        return {
            "op": "encoder",
            "arch": arch,
            "prefix": "",
            "layers": int(config[n_layers]),
            "heads": int(config[n_heads]),
            "hidden": int(config[hidden]),
            "intermediate": int(config[inter]),
            "eps": eps,
            "activation": act,
            "max_tokens": int(config.get("max_position_embeddings", 512)),
            "pooling": "cls",
            "normalize": False,
        }
    except (KeyError, TypeError, ValueError) as e:
        raise UnsupportedModel(f"config.json lacks or mangles a setting ({e!r})") from None


def _prefix(tensors, prefixes, arch) -> str:
    word = _engine.ENCODER_TENSOR_NAMES[arch]["word"] + ".weight"
    for prefix in prefixes:
        if prefix + word in tensors:
            return prefix
    raise UnsupportedModel(f"no {word} (nor {prefixes[-1]}{word}) among the tensors")


def _fit_positions(layer: dict, tensors) -> dict:
    """max_tokens no more than the position embeddings the tensors have."""
    name = f"{layer['prefix']}{_engine.ENCODER_TENSOR_NAMES[layer['arch']]['position']}.weight"
    if name in tensors:
        layer["max_tokens"] = min(layer["max_tokens"], _shape(tensors[name])[0])
    return layer


def _distilbert(files, config, archs, tensors) -> list[dict]:
    """DistilBERT: BERT without token types, its layer norms' eps fixed at 1e-12; the
    classifier pools [CLS], then pre_classifier (ReLU) and classifier."""
    act = config.get("activation", "gelu")
    if act not in ACTIVATIONS:
        raise UnsupportedModel(
            f"config.json has activation {act!r}; the encoder runs {', '.join(ACTIVATIONS)}"
        )
    layer = _layer("distilbert", config, act, "n_layers", "n_heads", "dim", "hidden_dim", 1e-12)
    layer["prefix"] = _prefix(tensors, ("", "distilbert."), "distilbert")
    head: list[dict] = []
    if "modules.json" in files:
        _sentence_transformers(files, layer)
    elif "DistilBertForSequenceClassification" in archs:
        if "pre_classifier.weight" not in tensors or "classifier.weight" not in tensors:
            raise UnsupportedModel(
                "config.json says DistilBertForSequenceClassification but the tensors lack "
                "pre_classifier.weight or classifier.weight"
            )
        head = [
            {
                "op": "dense",
                "weight": "pre_classifier.weight",
                "bias": "pre_classifier.bias",
                "activation": "relu",
            },
            {"op": "dense", "weight": "classifier.weight", "bias": "classifier.bias"},
        ]
    elif archs and not any(a.startswith("DistilBert") for a in archs):
        raise UnsupportedModel(f"config.json has architectures {archs}; supported: {_supported()}")
    return [_fit_positions(layer, tensors), *head]


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
            k
            for k, v in cfg.items()
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
