"""Model folders as people have them on disk, made for tests with the `safetensors`
package (the reference writer, not ours) and numpy: a Hugging Face folder, a sentence-
transformers folder, a sharded checkpoint. Deterministic: the same arguments give the
same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

# all-MiniLM-L6-v2's shapes: 6 layers, hidden 384, intermediate 1536, vocab 30522
MINILM = dict(vocab=30522, hidden=384, layers=6, intermediate=1536, positions=512)


def bert_tensors(
    vocab=1000, hidden=32, layers=2, intermediate=64, positions=64, seed=0
) -> dict[str, np.ndarray]:
    """A BERT-like state dict (names and shapes as transformers writes them): with
    MINILM's sizes, 104 tensors and about 90 MB of float32."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    t = {
        "embeddings.word_embeddings.weight": w(vocab, hidden),
        "embeddings.position_embeddings.weight": w(positions, hidden),
        "embeddings.token_type_embeddings.weight": w(2, hidden),
        "embeddings.LayerNorm.weight": np.ones(hidden, np.float32),
        "embeddings.LayerNorm.bias": np.zeros(hidden, np.float32),
        "embeddings.position_ids": np.arange(positions, dtype=np.int64)[None, :],
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            t[p + f"attention.self.{part}.weight"] = w(hidden, hidden)
            t[p + f"attention.self.{part}.bias"] = w(hidden)
        t[p + "attention.output.dense.weight"] = w(hidden, hidden)
        t[p + "attention.output.dense.bias"] = w(hidden)
        t[p + "attention.output.LayerNorm.weight"] = np.ones(hidden, np.float32)
        t[p + "attention.output.LayerNorm.bias"] = np.zeros(hidden, np.float32)
        t[p + "intermediate.dense.weight"] = w(intermediate, hidden)
        t[p + "intermediate.dense.bias"] = w(intermediate)
        t[p + "output.dense.weight"] = w(hidden, intermediate)
        t[p + "output.dense.bias"] = w(hidden)
        t[p + "output.LayerNorm.weight"] = np.ones(hidden, np.float32)
        t[p + "output.LayerNorm.bias"] = np.zeros(hidden, np.float32)
    t["pooler.dense.weight"] = w(hidden, hidden)
    t["pooler.dense.bias"] = w(hidden)
    return t


SIDE_FILES = {
    "config.json": json.dumps(
        {"architectures": ["BertModel"], "hidden_size": 32, "model_type": "bert"}, indent=2
    )
    + "\n",
    "tokenizer.json": json.dumps(
        {"version": "1.0", "model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "é": 1}}}
    ),
    "tokenizer_config.json": '{"do_lower_case": true}\n',
    "special_tokens_map.json": '{"cls_token": "[CLS]", "sep_token": "[SEP]"}\n',
    "vocab.txt": "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n",
    # sentence-transformers
    "modules.json": json.dumps(
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
        ]
    ),
    "config_sentence_transformers.json": '{"__version__": {"sentence_transformers": "2.2.2"}}',
    "sentence_bert_config.json": '{"max_seq_length": 256, "do_lower_case": false}',
    "1_Pooling/config.json": '{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}',
}


def write_side_files(folder: Path, files=SIDE_FILES) -> None:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")


def hf_folder(folder: Path, tensors=None, metadata=None) -> Path:
    """config.json, model.safetensors (written by the safetensors package, with
    __metadata__) and the tokenizer and sentence-transformers files."""
    metadata = {"format": "pt"} if metadata is None else metadata
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        bert_tensors() if tensors is None else tensors,
        str(folder / "model.safetensors"),
        metadata=metadata,
    )
    write_side_files(folder)
    return folder


def sharded_folder(folder: Path, tensors=None, shards=2, metadata=None) -> Path:
    """model-0000i-of-0000n.safetensors and model.safetensors.index.json, as
    transformers' save_pretrained(max_shard_size=...) writes them, plus config.json."""
    metadata = {"format": "pt"} if metadata is None else metadata
    folder.mkdir(parents=True, exist_ok=True)
    tensors = bert_tensors() if tensors is None else tensors
    names = list(tensors)
    per = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i * per : (i + 1) * per]}
        save_file(part, str(folder / shard), metadata=metadata)
        weight_map.update({n: shard for n in part})
    total = sum(a.nbytes for a in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    (folder / "config.json").write_text(SIDE_FILES["config.json"])
    return folder


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under folder by relative path (for byte-for-byte comparisons)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
