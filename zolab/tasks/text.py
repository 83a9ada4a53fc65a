"""SST-2 and COPA with MeZO's prompts (docs/algorithms.md §6; Malladi et al., NeurIPS 2023, arXiv 2305.17333).

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

import json
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from torch.utils.data import DataLoader

from zolab.tasks.base import ResumableLoader, check_seed, lightning_progress

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


def _lines(path: Path) -> list[str]:
    """The file's lines, each decoded as UTF-8; a ValueError names the file and line of a byte that is not."""
    lines = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}, line {number}: not UTF-8 (byte {raw[err.start]:#04x} at column "
                             f"{err.start + 1}: {err.reason})") from None
    return lines


def read_sst2(path: str | Path) -> list[dict]:
    """Rows of a GLUE SST-2 TSV (header ``sentence\tlabel``) as ``{"sentence": str, "label": int}``; a malformed
    file is a ValueError naming the file and line."""
    path = _existing(Path(path), "SST-2")
    lines = _lines(path)
    if not lines:
        raise ValueError(f"{path}: empty file; expected a header line with the columns sentence and label")
    header = lines[0].split("\t")
    missing = [c for c in ("sentence", "label") if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found columns {header}")
    at = {c: header.index(c) for c in ("sentence", "label")}
    rows = []
    for line, text in enumerate(lines[1:], start=2):
        if not text:
            continue  # a blank line (csv's readers skip them too)
        fields = text.split("\t")  # GLUE's TSV: no quoting, so a tab always separates fields
        if len(fields) != len(header):
            raise ValueError(f"{path}, line {line}: {len(fields)} tab-separated field(s), the header has "
                             f"{len(header)} ({header})")
        label = fields[at["label"]]
        if label not in ("0", "1"):
            raise ValueError(f"{path}, line {line}: label {label!r}; allowed: '0' or '1'")
        rows.append({"sentence": fields[at["sentence"]], "label": int(label)})
    return rows


COPA_FIELDS = ("premise", "choice1", "choice2", "question", "label")


def read_copa(path: str | Path) -> list[dict]:
    """Records of a SuperGLUE COPA JSONL file (fields premise, choice1, choice2, question, label); a malformed
    record is a ValueError naming the file and line."""
    path = _existing(Path(path), "COPA")
    rows = []
    for line, raw in enumerate(_lines(path), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {line}: not JSON ({err})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {line}: a JSON {type(row).__name__}; expected an object with "
                             f"{list(COPA_FIELDS)}")
        missing = [c for c in COPA_FIELDS if c not in row]
        if missing:
            raise ValueError(f"{path}, line {line}: missing column(s) {missing}; found {sorted(row)}")
        for key in ("premise", "choice1", "choice2"):
            if not isinstance(row[key], str):
                raise ValueError(f"{path}, line {line}: {key} {row[key]!r}; allowed: a string")
        if row["question"] not in ("cause", "effect"):
            raise ValueError(f"{path}, line {line}: question {row['question']!r}; allowed: cause, effect")
        if isinstance(row["label"], bool) or row["label"] not in (0, 1):
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
def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r}; allowed: an integer >= 0")
    return value


def split_train_dev(n: int, n_train: int, n_val: int, seed: int) -> tuple[list[int], list[int]]:
    """MeZO's split: a seeded permutation of the training split; its first ``n_train``, then ``n_val``."""
    _count("n_train", n_train)
    _count("n_val", n_val)
    check_seed("seed", seed)
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
    seed: the permutation's seed (also seeds the shuffling of training batches), in [0, 2**63).
    batch_size: training batch (MeZO: 16); eval_batch_size: validation/test batch.
    n_test: evaluate on the first ``n_test`` validation-split examples (None: all; more than there are is an
        error).

    ``val`` is the development sample drawn from the training split; ``test`` is the validation split.
    Batches are lists of ``PromptExample``; the training batches come from a ``ResumableLoader``, so a run
    resumed from a mid-epoch checkpoint continues with the batch the uninterrupted run would train next.
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
        self.n_train = _count("n_train", self.default_n_train if n_train is None else n_train)
        self.n_val = _count("n_val", self.default_n_val if n_val is None else n_val)
        self.n_test = None if n_test is None else _count("n_test", n_test)
        self.seed, self.batch_size = check_seed("seed", seed), batch_size
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
        if self.n_test is not None and self.n_test > len(test_rows):
            raise ValueError(f"n_test={self.n_test} exceeds the {len(test_rows)} examples of "
                             f"{self.data_dir / self.val_file}")
        self.test_set = [self.render(r) for r in test_rows[: self.n_test]]

    def train_dataloader(self):
        return ResumableLoader(self.train_set, self.batch_size, self.seed, collate_fn=_collate,
                               trained=lightning_progress(self))

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
