"""SST-2 and COPA with MeZO's prompts (ALGORITHMS.md §6; Malladi et al., NeurIPS 2023, arXiv 2305.17333).

Data come from a local folder given in the config (GLUE ``train.tsv``/``dev.tsv`` for SST-2, SuperGLUE
``train.jsonl``/``val.jsonl`` for COPA); nothing is downloaded. A seeded permutation of the training split
gives ``n_train`` training and the next ``n_val`` development examples (MeZO: SST-2 1,000 + 500, COPA
300 + 100); the test set is the whole validation split (872 and 100 examples).

Prompts, no demonstrations (MeZO's ``SST2Template`` and ``COPATemplate``):

- SST-2: context ``"<sentence.strip()> It was"``; options ``"<context> terrible"`` (label 0) and
  ``"<context> great"`` (label 1). Trained with the classification loss over the two candidates.
- COPA: the premise right-stripped, one trailing period removed, then ``" because "`` (cause) or
  ``" so "`` (effect); each option appends its alternative with the whole first word lower-cased unless
  it is exactly ``"I"`` (final period kept). Trained with the language-model loss of the correct option.

A rendered example is a ``PromptExample`` (plain strings); tokenization belongs to the model's task
(``zolab.tasks.lm.LMTask``), which scores each option by its mean per-token log-probability.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from torch.utils.data import DataLoader

SST2_VERBALIZER = ("terrible", "great")
LOSSES = ("classification", "lm")


class PromptExample(NamedTuple):
    """One prompted example: ``options[i]`` is the full text for candidate i (context + verbalized answer).

    ``text`` is the raw input (the SST-2 sentence), for encoder classifiers; ``loss`` is the training
    loss MeZO uses for this dataset (``"classification"`` or ``"lm"``). A ``NamedTuple``, so Lightning's
    batch transfer passes it through unchanged.
    """

    context: str
    options: tuple[str, ...]
    label: int
    loss: str
    text: str = ""


# ---------------------------------------------------------------------------------------------- reading
def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        folder = path.parent
        hint = f"; {folder} holds {sorted(p.name for p in folder.iterdir())}" if folder.is_dir() else ""
        raise FileNotFoundError(f"{what}: no file {path}{hint}")
    return path


def read_sst2(path: str | Path) -> list[dict]:
    """Rows of a GLUE SST-2 TSV (header ``sentence\\tlabel``) as ``{"sentence": str, "label": int}``."""
    path = _existing(Path(path), "SST-2")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in ("sentence", "label") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found columns {reader.fieldnames}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if row["label"] not in ("0", "1"):
                raise ValueError(f"{path}, line {line}: label {row['label']!r}; allowed: '0' or '1'")
            rows.append({"sentence": row["sentence"], "label": int(row["label"])})
    return rows


COPA_FIELDS = ("premise", "choice1", "choice2", "question", "label")


def read_copa(path: str | Path) -> list[dict]:
    """Records of a SuperGLUE COPA JSONL file (fields premise, choice1, choice2, question, label)."""
    path = _existing(Path(path), "COPA")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {line}: not JSON ({err})") from None
            missing = [c for c in COPA_FIELDS if c not in row]
            if missing:
                raise ValueError(f"{path}, line {line}: missing column(s) {missing}; found {sorted(row)}")
            if row["question"] not in ("cause", "effect"):
                raise ValueError(f"{path}, line {line}: question {row['question']!r}; allowed: cause, effect")
            if row["label"] not in (0, 1):
                raise ValueError(f"{path}, line {line}: label {row['label']!r}; allowed: 0 or 1")
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- prompts
def sst2_prompt(row: dict) -> PromptExample:
    """MeZO's SST-2 prompt: ``"<sentence> It was"`` + ``" terrible"``/``" great"``."""
    sentence = row["sentence"].strip()
    context = f"{sentence} It was"
    options = tuple(f"{context} {word}" for word in SST2_VERBALIZER)
    return PromptExample(context, options, int(row["label"]), "classification", sentence)


def copa_candidate(choice: str) -> str:
    """The alternative with its whole first word lower-cased unless it is exactly ``"I"`` (MeZO)."""
    words = choice.split(" ")
    if words[0] != "I":
        words[0] = words[0].lower()
    return " ".join(words)


def copa_prompt(row: dict) -> PromptExample:
    """MeZO's COPA prompt: premise (one final period dropped) + ``" because "``/``" so "`` + alternative."""
    premise = row["premise"].rstrip()
    if premise.endswith("."):
        premise = premise[:-1]
    context = premise + (" because " if row["question"] == "cause" else " so ")
    options = tuple(context + copa_candidate(row[k]) for k in ("choice1", "choice2"))
    return PromptExample(context, options, int(row["label"]), "lm", row["premise"])


# ---------------------------------------------------------------------------------------------- sampling
def split_train_dev(n: int, n_train: int, n_val: int, seed: int) -> tuple[list[int], list[int]]:
    """MeZO's split: a seeded permutation of the training split; its first ``n_train``, then ``n_val``."""
    for name, value in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}={value!r}; allowed: an integer >= 0")
    if n_train + n_val > n:
        raise ValueError(f"n_train + n_val = {n_train + n_val} exceeds the {n} training examples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm[:n_train], perm[n_train : n_train + n_val]


def _collate(batch: list[PromptExample]) -> list[PromptExample]:
    return batch


class PromptDataModule(L.LightningDataModule):
    """Base of the prompted datasets. Args:

    data_dir: folder with the dataset files (e.g. ``../shared/data/glue-sst2``).
    n_train, n_val: examples drawn from the training split (MeZO's defaults per dataset).
    seed: the permutation's seed (also seeds the shuffling of training batches).
    batch_size: training batch (MeZO: 16); eval_batch_size: validation/test batch.
    n_test: evaluate on the first ``n_test`` validation-split examples (None: all).

    ``val`` is the development sample drawn from the training split; ``test`` is the validation split.
    Batches are lists of ``PromptExample``.
    """

    train_file = val_file = ""
    default_n_train = default_n_val = 0

    def __init__(
        self,
        data_dir: str,
        n_train: int | None = None,
        n_val: int | None = None,
        seed: int = 42,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        n_test: int | None = None,
    ):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
        self.data_dir = Path(data_dir)
        self.n_train = self.default_n_train if n_train is None else n_train
        self.n_val = self.default_n_val if n_val is None else n_val
        self.seed, self.batch_size, self.n_test = seed, batch_size, n_test
        self.eval_batch_size = eval_batch_size
        self.train_set: list[PromptExample] = []
        self.val_set: list[PromptExample] = []
        self.test_set: list[PromptExample] = []

    def read(self, path: Path) -> list[dict]:
        raise NotImplementedError

    def render(self, row: dict) -> PromptExample:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set or self.test_set:
            return
        train_rows = self.read(self.data_dir / self.train_file)
        train_idx, val_idx = split_train_dev(len(train_rows), self.n_train, self.n_val, self.seed)
        self.train_set = [self.render(train_rows[i]) for i in train_idx]
        self.val_set = [self.render(train_rows[i]) for i in val_idx]
        test_rows = self.read(self.data_dir / self.val_file)
        self.test_set = [self.render(r) for r in test_rows[: self.n_test]]

    def train_dataloader(self):
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, self.batch_size, shuffle=True, generator=gen, collate_fn=_collate)

    def val_dataloader(self):
        return DataLoader(self.val_set, self.eval_batch_size, collate_fn=_collate)

    def test_dataloader(self):
        return DataLoader(self.test_set, self.eval_batch_size, collate_fn=_collate)


class SST2DataModule(PromptDataModule):
    """GLUE SST-2 (``train.tsv``, ``dev.tsv``); MeZO: 1,000 train + 500 dev, test on the 872 dev rows."""

    train_file, val_file = "train.tsv", "dev.tsv"
    default_n_train, default_n_val = 1000, 500

    def read(self, path):
        return read_sst2(path)

    def render(self, row):
        return sst2_prompt(row)


class COPADataModule(PromptDataModule):
    """SuperGLUE COPA (``train.jsonl``, ``val.jsonl``); MeZO: 300 train + 100 dev, test on the 100 val."""

    train_file, val_file = "train.jsonl", "val.jsonl"
    default_n_train, default_n_val = 300, 100

    def read(self, path):
        return read_copa(path)

    def render(self, row):
        return copa_prompt(row)
