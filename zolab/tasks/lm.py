"""Fine-tuning a causal language model on prompted examples (MeZO's protocol, docs/algorithms.md §6).

Each option of a ``PromptExample`` is scored as in MeZO (arXiv 2305.17333, App. E): the full text is
tokenized, and the option's tokens are the difference between the tokenized full text and the tokenized
context (both stripped); the option's score is the mean log-probability of those tokens,
s_c = (1/n_c) Σ_{i ∈ option} log p(x_i | x_<i).

- ``"classification"`` loss (SST-2): cross-entropy of softmax(s) against the label;
- ``"lm"`` loss (COPA): −mean log-probability of the correct option's tokens (token-averaged over the
  batch);
- accuracy: arg-max of s (torchmetrics).

Modes (MeZO's three): ``full`` (every weight), ``lora`` (peft LoRA, r = 8, α = 16 on ``q_proj``/``v_proj``)
and ``prefix`` (peft prefix tuning, 5 virtual tokens initialised from the model's own keys and values of
random tokens, MeZO's ``init_by_real_act``). Only tensors with ``requires_grad=True`` reach the optimizer,
so in LoRA/prefix modes the frozen weights are never perturbed.

Efficiency: sequences are left-padded, the input is the full text minus its last token, and only the last
max n_c positions go through the LM head (``logits_to_keep``); candidates whose inputs coincide (SST-2's
one-token verbalizers share the context) are evaluated once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_accuracy

from zolab.tasks.base import Task
from zolab.tasks.models import SMOLLM2, load_causal_lm
from zolab.tasks.text import LOSSES, PromptExample

MODES = ("full", "lora", "prefix")


@dataclass
class Encoded:
    """Tensors of a batch: S distinct input sequences; B examples × C candidates, T = max option length."""

    input_ids: torch.Tensor  # (S, L) left-padded
    attention_mask: torch.Tensor  # (S, L)
    seq_index: torch.Tensor  # (B, C) which sequence scores candidate c of example b
    targets: torch.Tensor  # (B, C, T) option tokens, right-aligned
    target_mask: torch.Tensor  # (B, C, T) bool
    labels: torch.Tensor  # (B,)


def apply_mode(model, mode: str, lora_r: int = 8, lora_alpha: int = 16, lora_targets=("q_proj", "v_proj"),
               num_virtual_tokens: int = 5, seed: int = 0):
    """``model`` ready for ``mode``: full (all trainable) or wrapped by peft (only the adapter trainable)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; allowed: {list(MODES)}")
    if mode == "full":
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    if mode == "lora":
        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules=list(lora_targets),
                            lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # LoRA's A init (B = 0, so the initial model is unchanged)
            return get_peft_model(model, config)
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    peft_model = get_peft_model(model, config)
    _init_prefix_by_real_act(peft_model, num_virtual_tokens, seed)
    return peft_model


@torch.no_grad()
def _init_prefix_by_real_act(peft_model, n: int, seed: int) -> None:
    """MeZO's prefix init: the keys/values the frozen model itself produces for n random vocabulary tokens."""
    base = peft_model.get_base_model()
    vocab = base.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))
    cache = base(input_ids=ids.to(base.device), use_cache=True).past_key_values
    encoder = peft_model.prompt_encoder[peft_model.active_adapter]
    weight = encoder.embedding.weight  # (n, layers·2·kv_heads·head_dim), peft's layout
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    kv = []
    for k, v in layers:  # each (1, heads, n, head_dim) -> (n, heads·head_dim)
        kv += [k[0].transpose(0, 1).reshape(n, -1), v[0].transpose(0, 1).reshape(n, -1)]
    weight.copy_(torch.cat(kv, dim=1).to(weight.dtype))


class LMTask(Task):
    """A causal LM scored on prompted options. Args:

    model: ``"smollm2-135m"`` (packaged), a local folder / ``.gguf`` file / cached hub name, or a
        ``PreTrainedModel`` instance (tests); ``tokenizer``: needed with an instance.
    mode: ``"full"``, ``"lora"`` or ``"prefix"``.
    dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (half precisions are for GPUs).
    loss: ``"auto"`` (each dataset's MeZO loss: SST-2 classification, COPA lm), ``"classification"`` or
        ``"lm"``.
    lora_r, lora_alpha, lora_targets: LoRA's rank, α and target modules (MeZO: 8, 16, q/v projections).
    num_virtual_tokens: prefix length (MeZO: 5).
    max_length: inputs are cut to their last ``max_length`` tokens.
    seed: seeds the adapter's initialisation.
    """

    def __init__(
        self,
        model: Any = SMOLLM2,
        tokenizer: Any = None,
        mode: str = "full",
        dtype: str = "float32",
        loss: str = "auto",
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_targets: tuple[str, ...] = ("q_proj", "v_proj"),
        num_virtual_tokens: int = 5,
        max_length: int = 256,
        seed: int = 0,
    ):
        super().__init__()
        if loss not in ("auto", *LOSSES):
            raise ValueError(f"loss={loss!r}; allowed: 'auto', {', '.join(repr(x) for x in LOSSES)}")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; allowed: {list(MODES)}")
        self.model_name = model if isinstance(model, str) else type(model).__name__
        if isinstance(model, str):
            model, loaded = load_causal_lm(model, dtype)
            tokenizer = tokenizer or loaded
        elif tokenizer is None:
            raise ValueError("a model instance needs its tokenizer: pass tokenizer=...")
        self.tokenizer = tokenizer
        self.mode, self.loss_name, self.max_length = mode, loss, max_length
        self.num_virtual_tokens = num_virtual_tokens if mode == "prefix" else 0
        self.model = apply_mode(model, mode, lora_r, lora_alpha, lora_targets, num_virtual_tokens, seed)

    # ------------------------------------------------------------------ encoding
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text.strip())["input_ids"]

    def check_words(self, words) -> None:
        """Raise a ValueError naming any word the tokenizer can only map to its unknown token."""
        unk = getattr(self.tokenizer, "unk_token_id", None)
        for word in words:
            ids = self.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
            if not ids or (unk is not None and unk in ids):
                raise ValueError(f"the tokenizer of {self.model_name} has no token for the word {word!r}")

    def encode(self, batch: list[PromptExample], only_label: bool = False) -> Encoded:
        """Tokenize a batch; ``only_label`` keeps just the correct candidate (the LM loss needs no other)."""
        if not batch or not isinstance(batch[0], PromptExample):
            raise TypeError(f"LMTask expects a list of PromptExample, got {type(batch).__name__}")
        unk = getattr(self.tokenizer, "unk_token_id", None)
        seqs: dict[tuple[int, ...], int] = {}
        index, targets = [], []
        for ex in batch:
            ctx = self._ids(ex.context)
            row_i, row_t = [], []
            for c, option in enumerate(ex.options):
                if only_label and c != ex.label:
                    continue
                full = self._ids(option)
                n = len(full) - len(ctx)
                answer = option[len(ex.context):].strip() if option.startswith(ex.context) else option
                if n <= 0:
                    raise ValueError(f"option {answer!r} adds no token to the context {ex.context!r}")
                if unk is not None and unk in full[-n:]:
                    raise ValueError(
                        f"the tokenizer of {self.model_name} has no token for the verbalizer word or option "
                        f"{answer!r} (it maps to the unknown token)"
                    )
                seq = tuple(full[:-1][-self.max_length:])
                row_i.append(seqs.setdefault(seq, len(seqs)))
                row_t.append(full[-n:])
            index.append(row_i)
            targets.append(row_t)
        length, width = max(map(len, seqs)), max(len(t) for row in targets for t in row)
        ids = torch.zeros(len(seqs), length, dtype=torch.long)
        mask = torch.zeros(len(seqs), length, dtype=torch.long)
        for seq, i in seqs.items():
            ids[i, length - len(seq):] = torch.tensor(seq)
            mask[i, length - len(seq):] = 1
        tgt = torch.zeros(len(batch), len(index[0]), width, dtype=torch.long)
        tmask = torch.zeros(len(batch), len(index[0]), width, dtype=torch.bool)
        for b, row in enumerate(targets):
            for c, t in enumerate(row):
                tgt[b, c, width - len(t):] = torch.tensor(t)
                tmask[b, c, width - len(t):] = True
        labels = torch.tensor([0 if only_label else ex.label for ex in batch])
        return Encoded(ids, mask, torch.tensor(index), tgt, tmask, labels)

    # ------------------------------------------------------------------ scoring
    def token_logprobs(self, enc: Encoded) -> torch.Tensor:
        """(B, C, T) log p of each option token (0 where masked), float32."""
        device = next(self.model.parameters()).device
        mask = enc.attention_mask.to(device)
        width = enc.targets.shape[-1]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0) + self.num_virtual_tokens
        out = self.model(input_ids=enc.input_ids.to(device), attention_mask=mask, position_ids=position_ids,
                         logits_to_keep=width, use_cache=False)
        logp = out.logits[:, -width:].float().log_softmax(-1)  # (S, T, V)
        logp = logp[enc.seq_index.to(device)]  # (B, C, T, V)
        tok = logp.gather(-1, enc.targets.to(device).unsqueeze(-1)).squeeze(-1)
        return tok * enc.target_mask.to(device)

    def scores(self, enc: Encoded, tok: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C) mean log-probability of each option's tokens (from ``tok`` when already computed)."""
        tok = self.token_logprobs(enc) if tok is None else tok
        return tok.sum(-1) / enc.target_mask.to(tok.device).sum(-1)

    def _loss_kind(self, batch: list[PromptExample]) -> str:
        return batch[0].loss if self.loss_name == "auto" else self.loss_name

    def loss(self, batch: list[PromptExample]) -> torch.Tensor:
        if self._loss_kind(batch) == "lm":
            enc = self.encode(batch, only_label=True)
            tok = self.token_logprobs(enc)
            return -tok.sum() / enc.target_mask.sum().to(tok.device)
        enc = self.encode(batch)
        s = self.scores(enc)
        return F.cross_entropy(s, enc.labels.to(s.device))

    def metrics(self, batch: list[PromptExample]) -> dict[str, torch.Tensor]:
        enc = self.encode(batch)
        tok = self.token_logprobs(enc)
        s = self.scores(enc, tok)
        labels = enc.labels.to(s.device)
        if self._loss_kind(batch) == "lm":
            correct = F.one_hot(labels, s.shape[1]).bool()
            loss = -tok[correct].sum() / enc.target_mask.to(s.device)[correct].sum()
        else:
            loss = F.cross_entropy(s, labels)
        acc = multiclass_accuracy(s, labels, num_classes=s.shape[1], average="micro")
        return {"loss": loss, "acc": acc}

    def batch_size(self, batch) -> int:
        return len(batch)
