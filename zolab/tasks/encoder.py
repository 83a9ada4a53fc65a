"""A fast sentence classifier: a transformers encoder (MiniLM-L6 by default) + a linear head (issue 6).

Sentence embedding e(x) = mean of the encoder's last hidden states over the attention mask (the pooling of
sentence-transformers' all-MiniLM-L6-v2); logits = W e(x) + b; loss = cross-entropy; accuracy with
torchmetrics. With ``train_encoder=False`` (default) only the head (384·C + C numbers) is trainable and the
frozen encoder's embeddings are computed once per sentence and cached (for the process, keyed by the model's
path, so the runs of an in-process ``zolab sweep`` share them), so a ZO step costs microseconds: every rule
can be compared on real SST-2 sentences in seconds. ``train_encoder=True`` makes all encoder weights
trainable too (no cache)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from zolab.models import MINILM, load_encoder
from zolab.tasks.base import Task
from zolab.tasks.text import PromptExample

_CACHE: dict[str, dict[str, torch.Tensor]] = {}  # model path -> {sentence: embedding} of frozen encoders


class EncoderClassifier(Task):
    """Args: model (``"all-minilm-l6-v2"``, a folder, or an instance with ``tokenizer``), num_classes,
    train_encoder, seed (the head's initialisation: N(0, 0.01²) weights, zero bias), max_length."""

    def __init__(self, model: Any = MINILM, tokenizer: Any = None, num_classes: int = 2,
                 train_encoder: bool = False, seed: int = 0, max_length: int = 128):
        super().__init__()
        if isinstance(model, str):
            model, tokenizer = load_encoder(model)
        elif tokenizer is None:
            raise ValueError("an encoder instance needs its tokenizer: pass tokenizer=...")
        self.encoder, self.tokenizer = model.requires_grad_(train_encoder), tokenizer
        self.train_encoder, self.max_length = train_encoder, max_length
        gen = torch.Generator().manual_seed(seed)
        hidden = model.config.hidden_size
        self.head = nn.Linear(hidden, num_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(num_classes, hidden, generator=gen) * 0.01)
            self.head.bias.zero_()
        path = getattr(model.config, "_name_or_path", "")
        self._cache = _CACHE.setdefault(path, {}) if path else {}  # an unnamed instance: its own cache

    def _embed(self, texts: list[str]) -> torch.Tensor:
        device = self.head.weight.device
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        hidden = self.encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)

    def embed(self, texts: list[str]) -> torch.Tensor:
        """(N, hidden) sentence embeddings; cached per sentence while the encoder is frozen."""
        if self.train_encoder:
            return self._embed(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            with torch.no_grad():
                for t, e in zip(missing, self._embed(missing)):
                    self._cache[t] = e
        return torch.stack([self._cache[t] for t in texts])

    def _logits_labels(self, batch: list[PromptExample]):
        if not batch or not isinstance(batch[0], PromptExample):
            raise TypeError(f"EncoderClassifier expects a list of PromptExample, got {type(batch).__name__}")
        logits = self.head(self.embed([ex.text for ex in batch]))
        return logits, torch.tensor([ex.label for ex in batch], device=logits.device)

    def loss(self, batch) -> torch.Tensor:
        logits, labels = self._logits_labels(batch)
        return F.cross_entropy(logits, labels)

    def metrics(self, batch) -> dict[str, torch.Tensor]:
        logits, labels = self._logits_labels(batch)
        acc = multiclass_accuracy(logits, labels, num_classes=logits.shape[1], average="micro")
        return {"loss": F.cross_entropy(logits, labels), "acc": acc}

    def batch_size(self, batch) -> int:
        return len(batch)
