"""Layer lists: how to run a stored model.

A model may carry a list of layers, stored with it as JSON in ``<store>_models.layers``
and read by the compiled engine. Each layer is a dict:

    {"op": "dense", "weight": "fc1.weight", "bias": "fc1.bias", "activation": "relu"}
        y = act(x W^T + b), W laid out (out x in) as PyTorch's Linear stores it;
        "transpose": true for W laid out (in x out), as Keras stores it. bias optional.
    {"op": "embedding", "weight": "emb.weight"}
        row lookup: one integer id per input -> that row of W (vocab x dim).
    {"op": "embedding_bag", "weight": "emb.weight", "mode": "mean"}
        a bag of ids per input -> the sum ("sum") or mean ("mean", default) of their rows.
    {"op": "activation", "activation": "softmax"}
        an activation alone.
    {"op": "encoder", "arch": "bert", "prefix": "", "layers": 6, "heads": 12, "hidden": 384,
     "intermediate": 1536, "eps": 1e-12, "activation": "gelu", "max_tokens": 256,
     "pooling": "mean", "normalize": true}
        a transformer encoder (first only): text or token ids -> one pooled (hidden,)
        vector per text; arch "bert" or "distilbert", its tensors named as Hugging Face's
        BertModel / DistilBertModel name them, after prefix (sqlite_tensor.encoders derives this layer from a folder and lists
        its tensors). pooling: mean, cls or max; normalize: L2 after pooling. Defaults:
        prefix "", eps 1e-12, activation gelu, pooling mean, normalize false, max_tokens
        the number of position embeddings.

Activations: identity, relu, sigmoid, tanh, gelu (the exact, erf-based one PyTorch uses
by default), softmax (over each output row). An embedding layer may only come first.

``check_layers`` validates a list against the model's tensors and returns it in
canonical form (every key present), which is what is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _engine

# The engine owns these names (cython/c/st_names.h) and parses stored layer lists with them.
OPS = _engine.LAYER_OPS
ACTIVATIONS = _engine.ACTIVATIONS
BAG_MODES = _engine.BAG_MODES
ENCODER_ARCHS = _engine.ENCODER_ARCHS
ENCODER_POOLINGS = _engine.ENCODER_POOLINGS
ENCODER_LIMITS = _engine.ENCODER_LIMITS
ENCODER_ACTIVATIONS = _engine.ENCODER_ACTIVATIONS
# Weight dtypes the kernels compute with (widened to float32 as they are read).
COMPUTE_DTYPES = _engine.COMPUTE_DTYPES

# An encoder layer's keys, in the order its canonical form is stored.
_ENCODER_KEYS = (
    "op",
    "arch",
    "prefix",
    "layers",
    "heads",
    "hidden",
    "intermediate",
    "eps",
    "activation",
    "max_tokens",
    "pooling",
    "normalize",
)
_KEYS = {
    "dense": {"op", "weight", "bias", "activation", "transpose"},
    "embedding": {"op", "weight"},
    "embedding_bag": {"op", "weight", "mode"},
    "activation": {"op", "activation"},
    "encoder": set(_ENCODER_KEYS),
}


class LayerError(ValueError):
    """A layer list that does not fit the model's tensors."""


def check_layers(
    layers: Sequence[Mapping[str, Any]], tensors: Mapping[str, tuple[tuple[int, ...], str]]
) -> list[dict]:
    """Validate ``layers`` against ``tensors`` (name -> (shape, dtype)); canonical form.

    Raises LayerError naming the layer (by position and op) and what does not fit.
    """
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise LayerError(f"layers must be a list of dicts, got {type(layers).__name__}")
    if not layers:
        raise LayerError("layers must not be empty")
    out = []
    width = None  # features flowing into the next layer; None before the first
    for i, layer in enumerate(layers):
        if not isinstance(layer, Mapping):
            raise LayerError(f"layer {i}: must be a dict, got {type(layer).__name__}")
        op = layer.get("op")
        if op not in OPS:
            raise LayerError(f"layer {i}: unknown op {op!r}; ops are {', '.join(OPS)}")
        where = f"layer {i} ({op})"
        extra = set(layer) - _KEYS[op]
        if extra:
            raise LayerError(
                f"{where}: unknown keys {sorted(extra)}; {op} takes {sorted(_KEYS[op] - {'op'})}"
            )
        if op == "activation":
            if "activation" not in layer:
                raise LayerError(
                    f"{where}: needs an 'activation' (one of {', '.join(ACTIVATIONS)})"
                )
            act = _activation(where, layer["activation"])
            if width is None:
                raise LayerError(f"{where}: a model cannot start with an activation")
            out.append({"op": op, "activation": act})
            continue
        if op == "encoder":
            if i != 0:
                raise LayerError(f"{where}: an encoder can only be the first layer")
            canon = _encoder(where, layer, tensors)
            width = canon["hidden"]
            out.append(canon)
            continue
        weight = layer.get("weight")
        shape = _weight(where, weight, tensors)
        if op in ("embedding", "embedding_bag"):
            if i != 0:
                raise LayerError(f"{where}: an embedding can only be the first layer")
            canon = {"op": op, "weight": weight}
            if op == "embedding_bag":
                mode = layer.get("mode", "mean")
                if mode not in BAG_MODES:
                    raise LayerError(f"{where}: mode must be one of {BAG_MODES}, got {mode!r}")
                canon["mode"] = mode
            width = shape[1]
            out.append(canon)
            continue
        transpose = layer.get("transpose", False)
        if not isinstance(transpose, bool):
            raise LayerError(f"{where}: transpose must be true or false, got {transpose!r}")
        n_in, n_out = (shape[0], shape[1]) if transpose else (shape[1], shape[0])
        layout = "(in x out)" if transpose else "(out x in)"
        if width is not None and n_in != width:
            raise LayerError(
                f"{where}: weight {weight!r} {layout} has shape {shape}, so it takes "
                f"{n_in} features, but the previous layer gives {width}"
            )
        bias = layer.get("bias")
        if bias is not None:
            bshape = _tensor(where, "bias", bias, tensors)[0]
            if tuple(bshape) not in ((n_out,), (1, n_out), (n_out, 1)):
                raise LayerError(
                    f"{where}: bias {bias!r} has shape {tuple(bshape)}; "
                    f"expected ({n_out},) for {n_out} outputs"
                )
        out.append(
            {
                "op": op,
                "weight": weight,
                "bias": bias,
                "activation": _activation(where, layer.get("activation", "identity")),
                "transpose": transpose,
            }
        )
        width = n_out
    return out


def _encoder(where: str, layer: Mapping[str, Any], tensors) -> dict:
    from .encoders import encoder_tensors

    canon: dict[str, Any] = {"op": "encoder"}
    for key, choices, default in (
        ("arch", ENCODER_ARCHS, None),
        ("activation", ENCODER_ACTIVATIONS, "gelu"),
        ("pooling", ENCODER_POOLINGS, "mean"),
    ):
        value = layer.get(key, default)
        if value not in choices:
            raise LayerError(f"{where}: {key} must be one of {', '.join(choices)}, got {value!r}")
        canon[key] = value
    prefix = layer.get("prefix", "")
    if not isinstance(prefix, str):
        raise LayerError(f"{where}: prefix must be a string, got {prefix!r}")
    canon["prefix"] = prefix
    for key, most in ENCODER_LIMITS.items():
        value = layer.get(key)
        if value is None and key == "max_tokens":
            continue  # from the position embeddings, below
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise LayerError(f"{where}: {key} must be an integer from 1 to {most}, got {value!r}")
        canon[key] = value
    if canon["hidden"] % canon["heads"]:
        raise LayerError(f"{where}: heads {canon['heads']} must divide hidden {canon['hidden']}")
    eps = layer.get("eps", 1e-12)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise LayerError(f"{where}: eps must be a number between 0 and 1, got {eps!r}")
    canon["eps"] = float(eps)
    normalize = layer.get("normalize", False)
    if not isinstance(normalize, bool):
        raise LayerError(f"{where}: normalize must be true or false, got {normalize!r}")
    canon["normalize"] = normalize
    positions = None
    for name, (rows, cols) in encoder_tensors({**canon, "max_tokens": 1}).items():
        shape, _ = _tensor(where, "tensor", name, tensors)
        if cols == 1 and rows is not None:  # a vector
            ok = (
                len(shape) in (1, 2)
                and int(np.prod(shape)) == rows
                and (len(shape) == 1 or 1 in shape)
            )
            want = f"({rows},)"
        else:
            ok = len(shape) == 2 and shape[1] == cols and (rows is None or shape[0] == rows)
            want = f"({'n' if rows is None else rows}, {cols})"
        if not ok:
            raise LayerError(f"{where}: tensor {name!r} has shape {shape}; expected {want}")
        if name.endswith("position_embeddings.weight"):
            positions = shape[0]
    max_tokens = canon.get("max_tokens", min(positions, ENCODER_LIMITS["max_tokens"]))
    if max_tokens > positions:
        raise LayerError(
            f"{where}: max_tokens {max_tokens} is over the model's {positions} position embeddings"
        )
    canon["max_tokens"] = max_tokens
    return {k: canon[k] for k in _ENCODER_KEYS}


def to_json(layers: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(layers), separators=(",", ":"))


def _activation(where: str, act) -> str:
    act = "identity" if act in (None, "linear") else act
    if act not in ACTIVATIONS:
        raise LayerError(
            f"{where}: unknown activation {act!r}; activations are {', '.join(ACTIVATIONS)}"
        )
    return act


def _tensor(where: str, role: str, name, tensors):
    if not isinstance(name, str):
        raise LayerError(f"{where}: {role} must be a tensor name, got {name!r}")
    if name not in tensors:
        raise LayerError(
            f"{where}: {role} {name!r} is not a tensor of this model; it has "
            f"{', '.join(map(repr, list(tensors)[:10]))}"
        )
    shape, dtype = tensors[name]
    if dtype not in COMPUTE_DTYPES:
        raise LayerError(
            f"{where}: {role} {name!r} is {dtype}; inference computes with "
            f"{', '.join(COMPUTE_DTYPES)} weights"
        )
    return tuple(shape), dtype


def _weight(where: str, name, tensors) -> tuple[int, int]:
    shape, _ = _tensor(where, "weight", name, tensors)
    if len(shape) != 2:
        raise LayerError(f"{where}: weight {name!r} must be 2-D, has shape {shape}")
    return shape
