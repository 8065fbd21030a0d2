"""Tokenization (tensor_tokenize, Store.tokenize): the ids of the Hugging Face `tokenizers`
library for the model's stored tokenizer.json, on the test corpus and on random Unicode,
in every variant BERT models ship; truncation as the files say; the stock sqlite3 shell;
hostile tokenizer files and texts. The reference tokenizers are built by the library
itself (tests/tokenizer_files.py); nothing is downloaded."""

from __future__ import annotations

import json
import os
import random
import subprocess

import apsw
import numpy as np
import pytest
from conftest import tamperable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_folders import hf_folder
from tokenizer_files import CORPUS, bert_tokenizer, trained_vocab, write_tokenizer_files

import sqlite_tensor
from sqlite_tensor.errors import NotFoundError

# model name -> keyword arguments of bert_tokenizer (and the tokenizer_config.json written)
VARIANTS = {
    "uncased": dict(lowercase=True, strip_accents=None),
    "uncased-keep-accents": dict(lowercase=True, strip_accents=False),
    "cased": dict(lowercase=False, strip_accents=None),
    "cased-strip-accents": dict(lowercase=False, strip_accents=True),
    "uncased-strip": dict(lowercase=True, strip_accents=True),
    "truncated": dict(truncation=16),
    "truncated-left": dict(truncation=12, direction="left"),
    "bert-processing": dict(post="bert", truncation=24),
    "no-post-processor": dict(post=None),
    "short-words": dict(max_input_chars_per_word=7),
    "no-clean-no-chinese": dict(clean_text=False, handle_chinese_chars=False),
}
CONFIG_MAX = 20  # "from-config": tokenizer.json without truncation, tokenizer_config.json's
POSITIONS = 24  # "from-model-config": config.json's max_position_embeddings
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))  # hypothesis examples; fuzzed files


@pytest.fixture(scope="module")
def vocab():
    return trained_vocab()


@pytest.fixture(scope="module")
def refs(vocab):
    """name -> the reference tokenizer (with the truncation the files say)."""
    out = {name: bert_tokenizer(vocab, **kw) for name, kw in VARIANTS.items()}
    out["from-config"] = bert_tokenizer(vocab, truncation=CONFIG_MAX)
    out["from-model-config"] = bert_tokenizer(vocab, truncation=POSITIONS)
    return out


@pytest.fixture(scope="module")
def store(vocab, refs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tok")
    s = sqlite_tensor.Store(str(tmp / "tok.sqlite"))
    weights = {"w": np.zeros((4, 4), np.float32)}
    for name, ref in refs.items():
        folder = hf_folder(tmp / name, tensors=weights)
        if name == "from-config":
            write_tokenizer_files(folder, bert_tokenizer(vocab), {"model_max_length": CONFIG_MAX})
        elif name == "from-model-config":  # transformers' "unlimited": the model's positions
            write_tokenizer_files(folder, bert_tokenizer(vocab), {"model_max_length": int(1e30)})
            config = {"model_type": "bert", "max_position_embeddings": POSITIONS}
            (folder / "config.json").write_text(json.dumps(config))
        else:
            write_tokenizer_files(folder, ref)
        s.add_model(name, folder)
    yield s
    s.close()


def expected(ref, texts):
    return [e.ids for e in ref.encode_batch(texts)]


@pytest.mark.parametrize("name", [*VARIANTS, "from-config", "from-model-config"])
def test_corpus_ids_equal_the_tokenizers_library(store, refs, name):
    got = store.tokenize(name, CORPUS)
    want = expected(refs[name], CORPUS)
    for text, g, w in zip(CORPUS, got, want):
        assert g.dtype == np.int64
        assert g.tolist() == w, text[:80]
    # something really happened: unknown words, several pieces, truncation where asked
    flat = [i for w in want for i in w]
    unk = refs[name].token_to_id("[UNK]")
    assert flat.count(unk) >= 3 and len(set(flat)) > 100 or "trunc" in name or "conf" in name


def test_sql_gives_the_same_ids_as_json_and_blob(store, refs):
    for text in CORPUS:
        want = refs["uncased"].encode(text).ids
        js, blob = store.conn.execute(
            "SELECT tensor_tokenize('tensors', 'uncased', ?), "
            "tensor_tokenize('tensors', 'uncased', ?, 'blob')",
            (text, text),
        ).fetchone()
        assert json.loads(js) == want
        assert np.frombuffer(blob, "<i8").tolist() == want


def test_truncation_keeps_the_specials(store, refs):
    long = " ".join(["hello world"] * 50)
    ids = store.tokenize("truncated", long)
    assert len(ids) == 16 and ids[0] == refs["truncated"].token_to_id("[CLS]")
    assert ids[-1] == refs["truncated"].token_to_id("[SEP]")
    assert len(store.tokenize("truncated-left", long)) == 12
    assert len(store.tokenize("from-config", long)) == CONFIG_MAX
    assert len(store.tokenize("from-model-config", long)) == POSITIONS
    assert len(store.tokenize("uncased", long)) > 100  # no truncation: none asked for


def test_padding_and_attention_mask(store, refs):
    texts = ["hello", "", "A man is eating a piece of bread."]
    ids, mask = store.tokenize("uncased", texts, pad=True)
    want = expected(refs["uncased"], texts)
    assert ids.shape == mask.shape == (3, max(map(len, want)))
    for row, m, w in zip(ids, mask, want):
        assert row[: len(w)].tolist() == w and m.tolist() == [1] * len(w) + [0] * (
            len(ids[0]) - len(w)
        )
        assert (row[len(w) :] == refs["uncased"].token_to_id("[PAD]")).all()
    one = store.tokenize("uncased", "hello")
    assert isinstance(one, np.ndarray) and one.tolist() == want[0]


# Random Unicode: every category, combining marks in runs, CJK, text around the special
# tokens' spelling; all of it against the library, batched.
PIECE = st.one_of(
    st.characters(exclude_categories=("Cs",)),
    st.characters(min_codepoint=0x300, max_codepoint=0x36F),
    st.characters(min_codepoint=0x3000, max_codepoint=0x9FFF),
    st.sampled_from(list(" \t\n.,!?'\"-[]()#") + ["[CLS]", "[MASK]", "##", "É", "ß"]),
    st.sampled_from(["hello", "world", "Café", "straße", "eating", "東京"]),
)
TEXT = st.lists(PIECE, max_size=40).map("".join)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(TEXT, min_size=1, max_size=20), st.sampled_from(sorted(VARIANTS)))
def test_random_unicode_ids_equal_the_tokenizers_library(store, refs, texts, name):
    got = store.tokenize(name, texts)
    assert [g.tolist() for g in got] == expected(refs[name], texts)


def test_unicode_tables_are_generated_from_the_library():
    """cython/c/st_wordpiece_tables.h is what tools/gen_wordpiece_tables.py makes from the
    installed tokenizers library, asking it about every code point."""
    from tools import gen_wordpiece_tables as gen

    assert gen.HEADER.read_text() == gen.render(*gen.probe()), (
        "regenerate: python -m tools.gen_wordpiece_tables"
    )


def test_every_code_point_alone_matches(store, refs):
    """Each code point between words, in batches: removal, whitespace, punctuation,
    Chinese characters, accents and lowercase as the library does them."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    rng = random.Random(0)
    sample = cps[:0x3400] + rng.sample(cps[0x3400:], 20000)
    texts = ["".join(f"a{chr(c)}é" for c in sample[i : i + 64]) for i in range(0, len(sample), 64)]
    for name in ("uncased", "cased", "no-clean-no-chinese"):
        got = store.tokenize(name, texts)
        assert [g.tolist() for g in got] == expected(refs[name], texts)


# -- bad input ------------------------------------------------------------------------------


def test_text_that_is_not_utf8(store):
    with pytest.raises(
        ValueError, match=r"not valid UTF-8: the sequence at byte offset 2 \(0xFF\) is malformed"
    ):
        store.tokenize("uncased", b"ab\xff")
    with pytest.raises(
        ValueError, match=r"text 1: text is not valid UTF-8: the sequence at byte offset 1 \(0xED\)"
    ):
        store.tokenize("uncased", ["ok", "a\ud800"])  # a lone surrogate
    for bad in (b"\xc0\x80", b"\xe0\x80\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"):
        with pytest.raises(ValueError, match="not valid UTF-8"):
            store.tokenize("uncased", bad)
    with pytest.raises(
        apsw.SQLError,
        match=r"tensor_tokenize: text is not valid UTF-8: the sequence at byte offset 1 \(0xFE\)",
    ):
        store.conn.execute("SELECT tensor_tokenize('tensors', 'uncased', CAST(x'41fe' AS TEXT))")
    with pytest.raises(apsw.SQLError, match=r"argument 3 \(text\) must be text, got a blob"):
        store.conn.execute("SELECT tensor_tokenize('tensors', 'uncased', x'41')")
    with pytest.raises(apsw.SQLError, match=r"argument 4 \(format\) must be 'json' or 'blob'"):
        store.conn.execute("SELECT tensor_tokenize('tensors', 'uncased', 'a', 'csv')")
    with pytest.raises(TypeError, match="text 0 must be str"):
        store.tokenize("uncased", [3])
    assert store.conn.execute("SELECT tensor_tokenize('tensors', 'uncased', NULL)").get is None


def test_missing_model_and_missing_tokenizer(store, tmp_path):
    with pytest.raises(NotFoundError, match="no model 'nope'"):
        store.tokenize("nope", "x")
    with pytest.raises(apsw.SQLError, match="tensor_tokenize: no model 'nope' in store 'tensors'"):
        store.conn.execute("SELECT tensor_tokenize('tensors', 'nope', 'x')")
    s = sqlite_tensor.Store(str(tmp_path / "plain.sqlite"))
    s.add_model("arrays", {"w": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="model 'arrays' has no tokenizer.json"):
        s.tokenize("arrays", "x")


def _edit(tokenizer: dict, path: str, value):
    d = tokenizer
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    if value is _DELETE:
        del d[keys[-1]]
    elif isinstance(d, list):
        d[int(keys[-1])] = value
    else:
        d[keys[-1]] = value
    return tokenizer


_DELETE = object()

# (field, value) -> the message; each refused naming the field
UNSUPPORTED = [
    ("model.type", "BPE", r"model.type is text 'BPE'; only WordPiece"),
    ("normalizer.type", "Sequence", r"normalizer.type is text 'Sequence'; only BertNormalizer"),
    (
        "normalizer.lowercase",
        "yes",
        r"normalizer.lowercase is text 'yes'; it must be true or false",
    ),
    ("pre_tokenizer.type", "Whitespace", r"pre_tokenizer.type is text 'Whitespace'"),
    ("pre_tokenizer", None, r"pre_tokenizer.type is missing"),
    (
        "post_processor.type",
        "RobertaProcessing",
        r"post_processor.type is text 'RobertaProcessing'",
    ),
    ("post_processor.single.1", {"Sequence": {"id": "B", "type_id": 0}}, r"post_processor.single"),
    ("added_tokens.4.normalized", True, r"added_tokens\[4\] \('\[MASK\]'\) is normalized"),
    ("added_tokens.0.lstrip", True, r"added_tokens\[0\] \('\[PAD\]'\) is normalized, or strips"),
    ("added_tokens.1.id", "one", r"added_tokens\[1\] needs a text content and an integer id"),
    ("model.unk_token", "[NOPE]", r"unk_token '\[NOPE\]' is not in the vocab"),
    ("model.unk_token", 7, r"model.unk_token is integer 7; it must be text"),
    ("model.vocab.hello", "5", r"model.vocab\['hello'\] is text; ids must be integers"),
    ("model.vocab.hello", -1, r"vocab token 'hello' has id -1; ids are 0 to 4294967295"),
    ("model.vocab", {}, r"model.vocab is empty"),
    ("model.vocab", [5, 6], r"model.vocab must be an object"),
    ("added_tokens.1", "[UNK]", r"added_tokens\[1\] needs a text content and an integer id"),
    ("post_processor.single.0", "[CLS]", r"post_processor.single is array"),
    ("post_processor.special_tokens.[CLS]", "x", r"special_tokens has no ids for '\[CLS\]'"),
    ("model.max_input_chars_per_word", 1e9, r"max_input_chars_per_word is real"),
    ("model.continuing_subword_prefix", "#" * 40, r"continuing_subword_prefix is 40 bytes"),
    (
        "truncation",
        {"max_length": 2, "strategy": "LongestFirst", "direction": "Right", "stride": 0},
        r"max_length 2 leaves no room for text beside 2 special",
    ),
    ("truncation", {"max_length": 10, "direction": "Up"}, r"truncation.direction is text 'Up'"),
    ("truncation", {"max_length": -4}, r"truncation.max_length is -4; it must be from 1"),
]


@pytest.fixture
def tampered(store, refs):
    """Rewrite model 'scratch''s tokenizer.json as a hostile file would (defensive mode off)."""
    if "scratch" not in store.models():
        store.add_model("scratch", {"w": np.zeros(2, np.float32)})
        (model_id,) = store.conn.execute(
            "SELECT id FROM tensors_models WHERE name = 'scratch'"
        ).fetchone()
        tamperable(store.conn).execute(
            "INSERT INTO tensors_files(model_id, path, data) VALUES (?, 'tokenizer.json', x'')",
            (model_id,),
        )
    good = json.loads(refs["uncased"].to_str())

    def put(data):
        tamperable(store.conn).execute(
            "UPDATE tensors_files SET data = ? WHERE path = 'tokenizer.json' AND model_id ="
            " (SELECT id FROM tensors_models WHERE name = 'scratch')",
            (data if isinstance(data, bytes) else json.dumps(data).encode(),),
        )

    return good, put


@pytest.mark.parametrize("field, value, message", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_tokenizer_is_refused_naming_the_field(store, tampered, field, value, message):
    good, put = tampered
    put(_edit(json.loads(json.dumps(good)), field, _DELETE if value is None else value))
    with pytest.raises(ValueError, match=message):
        store.tokenize("scratch", "hello")
    with pytest.raises(apsw.SQLError, match=message):
        store.conn.execute("SELECT tensor_tokenize('tensors', 'scratch', 'hello')")


def test_the_good_file_then_damaged_bytes(store, refs, tampered):
    good, put = tampered
    put(good)
    assert store.tokenize("scratch", "hello").tolist() == refs["uncased"].encode("hello").ids
    put(b'{"model": ')
    with pytest.raises(ValueError, match="tokenizer.json of model 'scratch' is not a valid JSON"):
        store.tokenize("scratch", "hello")
    dup = json.dumps(good).replace('"hello": ', '"hello": 3, "hello": ', 1)
    assert dup.count('"hello"') == 2
    put(dup.encode())
    with pytest.raises(ValueError, match="vocab token 'hello' appears twice"):
        store.tokenize("scratch", "hello")


def _mutations(text: bytes, rng: random.Random, n: int):
    """Damaged copies of a JSON file: flipped bytes, cut short, values replaced by other
    types, deep nesting."""
    doc = json.loads(text)
    others = [None, True, 0, -1, 2**63, 1.5, "", "x" * 300, [], {}, [[[[1]]]], {"a": 1}]
    paths = [
        "model",
        "model.type",
        "model.vocab",
        "model.unk_token",
        "model.continuing_subword_prefix",
        "model.max_input_chars_per_word",
        "normalizer",
        "normalizer.strip_accents",
        "normalizer.clean_text",
        "pre_tokenizer",
        "post_processor",
        "post_processor.single",
        "post_processor.special_tokens",
        "post_processor.special_tokens.[CLS].ids",
        "post_processor.single.0",
        "added_tokens",
        "added_tokens.0",
        "added_tokens.2.content",
        "truncation",
        "padding",
        "model.vocab.[UNK]",
    ]
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            b = bytearray(text)
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            yield bytes(b)
        elif kind == 1:
            yield text[: rng.randrange(len(text))]
        elif kind == 2:
            d = json.loads(json.dumps(doc))
            try:
                _edit(d, rng.choice(paths), rng.choice(others))
            except (KeyError, IndexError, TypeError, ValueError):
                pass
            yield json.dumps(d).encode()
        else:
            yield b'{"model": ' + b"[" * rng.randint(100, 3000) + b"]" * 10 + b"}"


def _fuzz(store, tampered, n, seed):
    good, put = tampered
    rng = random.Random(seed)
    text = json.dumps(good).encode()
    outcomes = {"ok": 0, "refused": 0}
    for data in _mutations(text, rng, n):
        put(data)
        try:
            ids = store.tokenize("scratch", ["hello world", "[CLS] x"])
            assert all(a.dtype == np.int64 for a in ids)
            outcomes["ok"] += 1
        except ValueError as e:
            assert "tokenizer.json" in str(e) or "UTF-8" in str(e), e
            outcomes["refused"] += 1
    return outcomes


def test_fuzzed_tokenizer_files_never_crash(store, tampered):
    """150 damaged files here; the long run: FUZZ_EXAMPLES=5000 pytest tests/test_tokenize.py"""
    outcomes = _fuzz(store, tampered, 2 * EXAMPLES + 30, seed=EXAMPLES)
    assert outcomes["refused"] > EXAMPLES // 4 and outcomes["ok"] >= 1, outcomes


# -- the stock sqlite3 shell: no Python anywhere ---------------------------------------------


def test_shell_tokenizes_like_the_library(sqlite3_shell, clean_env, store, refs, tmp_path):
    texts = [t for t in CORPUS if "\x00" not in t and "\r" not in t][:12]
    db = tmp_path / "texts.sqlite"
    with apsw.Connection(str(db)) as c:
        c.execute("CREATE TABLE texts(id INTEGER PRIMARY KEY, body TEXT)")
        c.executemany("INSERT INTO texts(body) VALUES (?)", [(t,) for t in texts])
    script = (
        f".load {sqlite_tensor.loadable_path()}\n"
        f"ATTACH '{store.conn.filename}' AS m;\n"
        ".mode list\n"
        "SELECT tensor_tokenize('m.tensors', 'cased', body) FROM texts ORDER BY id;\n"
        "SELECT hex(tensor_tokenize('m.tensors', 'cased', 'A man', 'blob'));\n"
    )
    out = subprocess.run(
        [sqlite3_shell, "-batch", ":memory:"],
        input=f"ATTACH '{db}' AS t;\n" + script.replace("FROM texts", "FROM t.texts"),
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env,
    )
    assert out.returncode == 0 and not out.stderr, out.stderr
    lines = out.stdout.splitlines()
    assert [json.loads(x) for x in lines[: len(texts)]] == expected(refs["cased"], texts)
    want = np.array(refs["cased"].encode("A man").ids, "<i8").tobytes().hex().upper()
    assert lines[len(texts)] == want
