"""A sentence classifier: a transformers encoder (MiniLM-L6 by default) + a linear head.

Sentence embedding e(x) = mean of the encoder's last hidden states over the attention mask (the pooling of
sentence-transformers' all-MiniLM-L6-v2); logits = W e(x) + b; loss = cross-entropy; accuracy with
torchmetrics. What is trainable (``mode``):

- ``"head"`` (default): only the head (hidden·C + C numbers); the frozen encoder's embeddings are computed
  once per sentence, in eval mode, and cached for the process (keyed by the model's path, so the runs of an
  in-process ``zolab sweep`` share them): a ZO step costs microseconds.
- ``"full"``: every encoder weight and the head (full fine-tuning; the unused BERT pooler is dropped).
- ``"lora"``: peft LoRA on the encoder's attention (r 8, α 16 on ``query``/``value``, as MeZO's LoRA) and
  the head; the encoder's own weights stay frozen.

The head starts (``head_init``) as N(0, 0.01²) weights and zero bias (``"normal"``, seeded by ``seed``) or
as a zero-shot classifier (``"verbalizer"``): row c = ``head_scale`` · e(v_c)/‖e(v_c)‖ for the label texts
v = ``verbalizer`` (default MeZO's SST-2 verbalizer in its template, "It was terrible." / "It was great."),
bias 0: the analogue of MeZO's prompted start, which an encoder without a language-model head lacks.

Attention is computed by transformers' ``"eager"`` implementation by default: on the CPU its
Hessian-vector products exist (the probes' double backward; SDPA's CPU kernel has no second derivative)
and a MiniLM forward on SST-2 batches costs about the same with either.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from zolab.tasks.base import Task
from zolab.tasks.models import ATTENTIONS, MINILM, load_encoder
from zolab.tasks.text import PromptExample

MODES = ("head", "full", "lora")
HEAD_INITS = ("normal", "verbalizer")
SST2_LABEL_TEXTS = ("It was terrible.", "It was great.")

_CACHE: dict[str, dict[str, torch.Tensor]] = {}  # model path -> {sentence: embedding} of frozen encoders


def _mode(mode: str | None, train_encoder: bool | None) -> str:
    """The mode from ``mode`` and the older ``train_encoder`` flag (True: full, False: head)."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode={mode!r}; allowed: {list(MODES)}")
    if train_encoder is None:
        return mode or "head"
    implied = "full" if train_encoder else "head"
    if mode is not None and mode != implied:
        raise ValueError(f"train_encoder={train_encoder!r} means mode={implied!r} but mode={mode!r} was given: "
                         "pass only mode (allowed: head, full, lora)")
    return implied


class EncoderClassifier(Task):
    """Args: model (``"all-minilm-l6-v2"``, a folder, or an instance with ``tokenizer``), num_classes,
    mode (``"head"``, ``"full"``, ``"lora"``; see module doc), train_encoder (older flag: True = full,
    False = head), head_init (``"normal"``, ``"verbalizer"``), verbalizer (one text per class), head_scale
    (the verbalizer rows' norm, 3.0), lora_r, lora_alpha, lora_targets, seed (the normal head's and LoRA's
    initialisation), max_length, attention (``"eager"``, ``"sdpa"``)."""

    def __init__(self, model: Any = MINILM, tokenizer: Any = None, num_classes: int = 2, mode: str | None = None,
                 train_encoder: bool | None = None, head_init: str = "normal",
                 verbalizer: tuple[str, ...] = SST2_LABEL_TEXTS, head_scale: float = 3.0, lora_r: int = 8,
                 lora_alpha: int = 16, lora_targets: tuple[str, ...] = ("query", "value"), seed: int = 0,
                 max_length: int = 128, attention: str = "eager"):
        super().__init__()
        self.mode = _mode(mode, train_encoder)
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init={head_init!r}; allowed: {list(HEAD_INITS)}")
        if head_init == "verbalizer" and len(verbalizer) != num_classes:
            raise ValueError(f"verbalizer has {len(verbalizer)} texts ({list(verbalizer)}) for num_classes="
                             f"{num_classes}; allowed: one text per class")
        if isinstance(head_scale, bool) or not isinstance(head_scale, int | float) or not head_scale > 0:
            raise ValueError(f"head_scale={head_scale!r}; allowed: a number > 0")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention={attention!r}; allowed: {list(ATTENTIONS)}")
        if isinstance(model, str):
            model, tokenizer = load_encoder(model, attention=attention)
        elif tokenizer is None:
            raise ValueError("an encoder instance needs its tokenizer: pass tokenizer=...")
        else:
            model.set_attn_implementation(attention)
        path = getattr(model.config, "_name_or_path", "")
        if self.mode != "head" and getattr(model, "pooler", None) is not None:
            model.pooler = None  # unused by mean pooling: its weights would be trained (and perturbed) for nothing
        self.encoder, self.tokenizer, self.max_length = model.requires_grad_(self.mode == "full"), tokenizer, max_length
        self.train_encoder = self.mode == "full"  # the older attribute
        hidden = model.config.hidden_size
        self.head = nn.Linear(hidden, num_classes)
        with torch.no_grad():
            if head_init == "normal":
                gen = torch.Generator().manual_seed(seed)
                self.head.weight.copy_(torch.randn(num_classes, hidden, generator=gen) * 0.01)
            else:
                rows = self._embed(list(verbalizer), eval_mode=True)
                self.head.weight.copy_(head_scale * rows / rows.norm(dim=1, keepdim=True))
            self.head.bias.zero_()
        if self.mode == "lora":
            self.encoder = _with_lora(model, lora_r, lora_alpha, lora_targets, seed)
        self._cache = _CACHE.setdefault(path, {}) if path else {}  # an unnamed instance: its own cache

    def _embed(self, texts: list[str], eval_mode: bool = False) -> torch.Tensor:
        device = self.head.weight.device
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        training = self.encoder.training
        if eval_mode:
            self.encoder.eval()
        try:
            hidden = self.encoder(**enc).last_hidden_state
        finally:
            self.encoder.train(training)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)

    def embed(self, texts: list[str]) -> torch.Tensor:
        """(N, hidden) sentence embeddings; in head mode cached per sentence (computed in eval mode)."""
        if self.mode != "head":
            return self._embed(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            with torch.no_grad():
                for t, e in zip(missing, self._embed(missing, eval_mode=True)):
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


def _with_lora(model, r: int, alpha: int, targets, seed: int):
    """``model`` wrapped by peft LoRA (dropout 0; B = 0, so the model is unchanged at the start); only the
    adapter is trainable."""
    from peft import LoraConfig, get_peft_model

    for name, value in (("lora_r", r), ("lora_alpha", alpha)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"lora_targets {missing} name no module of {type(model).__name__}; e.g. 'query', 'value'")
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # LoRA's A initialisation
        return get_peft_model(model, config)
