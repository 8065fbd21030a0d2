"""BERT tokenizers made with the Hugging Face `tokenizers` library itself (the reference),
for the tokenization tests and the throughput script: a WordPiece vocabulary trained on a
generated corpus (nothing downloaded), and tokenizer.json files around it in the variants
BERT models ship (cased, uncased, strip_accents true/false/null, truncation, post-
processors). Deterministic: the same arguments give the same files."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import BertWordPieceTokenizer, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# The test corpus: accents, unicode (CJK, emoji, combining marks, RTL), punctuation,
# control characters, empty and whitespace-only strings, very long words, long texts.
CORPUS = [
    "Hello, world! This is a test of the tokenizer.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "Café naïve résumé — déjà vu, über Straße; ÉCOLE Ångström.",
    "e\u0301 e\u0323\u0301 e\u0301\u0323 o\u0308\u0304 \u0344 a\u0360b",  # combining marks
    "東京は日本の首都です。北京欢迎你！서울 한국어 텍스트",
    "Emoji: 😀👍🏽 👨‍👩‍👧 🇫🇷 ❤️ ☕",
    "مرحبا بالعالم، كيف حالك؟ שלום עולם!",
    "İstanbul ΣΊΣΥΦΟΣ σίσυφος Ǆemal ﬁnance Ⅻ ㎏",
    "punctuation: (a) [b] {c} <d> \"e\" 'f' `g` ~h~ ^i^ |j| \\k\\ @l #m $n %o &p *q* +r =s",
    "¿Qué? ¡Sí! «guillemets» „Anführung“ 「かぎ」 …ellipsis… ‐–—―",
    "ctrl\x00chars\x01here\x7f\u200b\u200d\u2060\ufeff\ufffdend\u00ad",
    "tabs\tand\nnew\r\nlines\u00a0nbsp\u2003em\u3000ideographic\u2028sep\x0b\x0c\x85",
    "",
    " ",
    "   \t\n  ",
    "a" * 100,
    "a" * 101,
    "b" * 150 + " short " + "c" * 99 + "d",
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
    "[CLS] [SEP] [MASK]inside[PAD] [UNK]x [cls] [ MASK ]",
    "numbers 3.14159 1,000,000 42nd 2024-01-01 12:30pm $5.99 50%",
    "MiXeD CaSe WoRdS and ALLCAPS TEXT",
    "word " * 400,
    "\U0001d165\U0001d166 \U000e0001 \U000f0000 \U0010fffd \u0378 \u0530",  # Mc, tags, private, unassigned
]

WORDS = (
    "the a of to and in is was for on that with as by at from it his an be this are which or "
    "man eating food bread piece hello world test tokenizer café naïve résumé straße über "
    "ecole ångström déjà vu numbers case words text emoji punctuation istanbul σίσυφος "
    "東 京 日 本 首 都 北 欢 迎 你 서울 한국어 مرحبا שלום token ization play ing ed er est ly"
).split()


def corpus_for_training(n=3000, seed=0) -> list[str]:
    """Generated sentences over WORDS plus random syllables, with the test corpus."""
    rng = random.Random(seed)
    syll = ["ka", "to", "ri", "men", "tion", "ing", "al", "pre", "un", "ble", "ous", "é", "ü"]
    out = list(CORPUS)
    for _ in range(n):
        words = [
            rng.choice(WORDS)
            if rng.random() < 0.7
            else "".join(rng.choice(syll) for _ in range(rng.randint(1, 4)))
            for _ in range(rng.randint(3, 12))
        ]
        out.append(" ".join(w.capitalize() if rng.random() < 0.2 else w for w in words) + ".")
    return out


def trained_vocab(vocab_size=2000, seed=0) -> dict[str, int]:
    """A cased WordPiece vocabulary (accents kept), trained by the tokenizers library."""
    t = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    t.train_from_iterator(
        corpus_for_training(seed=seed), vocab_size=vocab_size, special_tokens=SPECIAL
    )
    return t.get_vocab()


def bert_tokenizer(
    vocab: dict[str, int],
    *,
    lowercase=True,
    strip_accents=None,
    truncation: int | None = None,
    direction="right",
    post="template",
    max_input_chars_per_word=100,
    clean_text=True,
    handle_chinese_chars=True,
) -> Tokenizer:
    """A BERT tokenizer as the library builds one (what transformers converts
    BertTokenizerFast into)."""
    tok = Tokenizer(
        WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=max_input_chars_per_word)
    )
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=clean_text,
        handle_chinese_chars=handle_chinese_chars,
        strip_accents=strip_accents,
        lowercase=lowercase,
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    if post == "template":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )
    elif post == "bert":
        tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    tok.add_special_tokens(SPECIAL)
    if truncation:
        tok.enable_truncation(truncation, direction=direction)
    return tok


def write_tokenizer_files(folder: Path, tok: Tokenizer, tokenizer_config: dict | None = None):
    """tokenizer.json (and tokenizer_config.json) into a model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(tok.to_str(pretty=True))
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
