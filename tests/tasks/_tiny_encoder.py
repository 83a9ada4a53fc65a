"""A tiny random BERT encoder, its word tokenizer and a tiny SST-2 folder, built in code (no files, no network)."""

import torch
from transformers import BertConfig, BertModel

from tests.tasks._tiny import word_tokenizer

GOOD = ["good", "great", "fine", "lovely", "superb", "nice"]
BAD = ["bad", "awful", "dull", "poor", "boring", "weak"]
LABEL_TEXTS = ("It was terrible.", "It was great.")


def sentences(n: int, offset: int = 0) -> list[tuple[str, int]]:
    """(sentence, label) pairs: label 1 sentences use a GOOD word, label 0 a BAD one."""
    out = []
    for i in range(offset, offset + n):
        label = i % 2
        word = (GOOD if label else BAD)[(i // 2) % len(GOOD)]
        out.append((f"the film number {i % 7} was {word} .", label))
    return out


def tiny_bert(seed: int = 0, dropout: float = 0.0):
    """(BertModel with a pooler, tokenizer) over the words of ``sentences`` and the label texts."""
    texts = [s for s, _ in sentences(64)] + list(LABEL_TEXTS)
    tok = word_tokenizer(texts)
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    return BertModel(config).eval(), tok


def sst2_folder(root, n_train: int = 32, n_dev: int = 12):
    """A GLUE-style SST-2 folder (train.tsv, dev.tsv) of ``sentences``; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.tsv", sentences(n_train)), ("dev.tsv", sentences(n_dev, offset=1000))):
        lines = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in rows]
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def saved_bert(root, seed: int = 0, dropout: float = 0.0):
    """``tiny_bert`` saved as a transformers folder (config.json, weights, tokenizer); returns its path."""
    model, tok = tiny_bert(seed, dropout)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root
