"""Testbed T1's data: GLUE SST-2 as frozen MiniLM-L6 sentence features, computed once and cached under the runs root.

Every sentence of ``train.tsv`` (67,349) and ``dev.tsv`` (872) is embedded once by the frozen encoder
(``zolab.tasks.feature_cache``: a file per sentence list, named by a content hash, verified on load); a run then
trains a small head (``zolab.tasks.mlp.MLPClassifier``) on (features, labels) tensor batches, so a ZO step costs
about a millisecond. Splits: ``n_val`` training sentences held out by a permutation seeded with ``split_seed``
(``zolab.tasks.text.split_train_dev``: the same held-out sentences as ``SST2DataModule`` with that seed and
n_train = 67,349 − n_val), the next ``n_train`` (default: all the rest) for training; test = the 872 ``dev.tsv``
sentences. ``seed`` shuffles the training batches only (a ``ResumableLoader``: a resumed run continues exactly),
so runs of several seeds share one validation split.

The cache goes to ``cache_dir`` when given, else to ``<runs root>/.cache`` (the trainer's logger's ``save_dir``:
``runs/`` for ``zolab fit``, a sweep's ``--root``), else to ``runs/.cache``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from zolab.tasks.base import ResumableLoader, as_batch, check_seed, lightning_progress
from zolab.tasks.feature_cache import FeatureCache, check_positive
from zolab.tasks.models import MINILM
from zolab.tasks.text import read_sst2, split_train_dev

CACHE_DIR = "runs/.cache"


class TensorRows(Dataset):
    """Rows of (inputs, labels) tensors, fetched a batch at a time (``__getitems__``: one indexing, no per-row
    collation); use with ``collate_fn=as_batch``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise ValueError(f"TensorRows: {len(x)} inputs but {len(y)} labels")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __getitems__(self, rows: list[int]):
        index = torch.as_tensor(rows, dtype=torch.long)
        return self.x[index], self.y[index]


class SST2FeaturesDataModule(L.LightningDataModule):
    """Args:

    data_dir: the GLUE SST-2 folder (``train.tsv``, ``dev.tsv``), e.g. ``../shared/data/glue-sst2``.
    model: the frozen encoder (``"all-minilm-l6-v2"`` or a local transformers folder).
    pooling: ``"mean"``, ``"mean-normalized"`` or ``"cls"`` (``zolab.tasks.feature_cache``); max_length: tokens.
    n_val: training sentences held out for validation (2,000); n_train: training sentences (None: all the rest).
    split_seed: the held-out permutation's seed (fixed across a leaderboard's runs); seed: the batch order's.
    batch_size, eval_batch_size: training and validation/test batches.
    standardize: centre and scale each feature by the training split's mean and standard deviation.
    cache_dir: where features are cached (None: under the runs root, see the module doc).
    encode_batch_size: sentences per encoder forward when the features are computed.
    """

    def __init__(self, data_dir: str, model: str = MINILM, pooling: str = "mean", max_length: int = 128,
                 n_val: int = 2000, n_train: int | None = None, split_seed: int = 42, seed: int = 0,
                 batch_size: int = 64, eval_batch_size: int = 1024, standardize: bool = False,
                 cache_dir: str | None = None, encode_batch_size: int = 256):
        super().__init__()
        check_positive("batch_size", batch_size)
        check_positive("eval_batch_size", eval_batch_size)
        check_positive("n_val", n_val)
        if n_train is not None:
            check_positive("n_train", n_train)
        if not isinstance(standardize, bool):
            raise ValueError(f"standardize={standardize!r}; allowed: true or false")
        self.data_dir, self.model, self.pooling, self.max_length = Path(data_dir), model, pooling, max_length
        self.n_val, self.n_train = n_val, n_train
        self.split_seed, self.seed = check_seed("split_seed", split_seed), check_seed("seed", seed)
        self.batch_size, self.eval_batch_size, self.standardize = batch_size, eval_batch_size, standardize
        self.cache_dir, self.encode_batch_size = cache_dir, encode_batch_size
        FeatureCache(CACHE_DIR, model, pooling, max_length, encode_batch_size)  # bad settings: refused now
        self.train_set = self.val_set = self.test_set = None

    def resolved_cache_dir(self) -> Path:
        """``cache_dir``, else ``<runs root>/.cache`` from the attached trainer's logger, else ``runs/.cache``."""
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        trainer = getattr(self, "trainer", None)
        save_dir = getattr(getattr(trainer, "logger", None), "save_dir", None) if trainer is not None else None
        if save_dir:
            return Path(save_dir) / ".cache"
        if trainer is not None and getattr(trainer, "_default_root_dir", None):
            return Path(trainer.default_root_dir) / ".cache"
        return Path(CACHE_DIR)

    def setup(self, stage: str | None = None) -> None:
        if self.test_set is not None:
            return
        cache = FeatureCache(self.resolved_cache_dir(), self.model, self.pooling, self.max_length,
                             self.encode_batch_size)
        splits = {}
        for name in ("train", "dev"):
            rows = read_sst2(self.data_dir / f"{name}.tsv")
            texts = [r["sentence"].strip() for r in rows]
            x = cache.features(texts, f"{self.data_dir.name}-{name}")
            splits[name] = (x, torch.tensor([r["label"] for r in rows], dtype=torch.long))
        x, y = splits["train"]
        if self.n_val >= len(y):
            raise ValueError(f"n_val={self.n_val} leaves no training sentence of the {len(y)} in "
                             f"{self.data_dir / 'train.tsv'}")
        n_train = len(y) - self.n_val if self.n_train is None else self.n_train
        train_idx, val_idx = split_train_dev(len(y), n_train, self.n_val, self.split_seed)
        train_idx, val_idx = torch.tensor(train_idx), torch.tensor(val_idx)
        test_x, test_y = splits["dev"]
        if self.standardize:  # the training split's statistics, applied to every split
            mean, std = x[train_idx].mean(0), x[train_idx].std(0).clamp_min(1e-6)
            x, test_x = (x - mean) / std, (test_x - mean) / std
        self.train_set = TensorRows(x[train_idx], y[train_idx])
        self.val_set = TensorRows(x[val_idx], y[val_idx])
        self.test_set = TensorRows(test_x, test_y)
        self.train_rows, self.val_rows = train_idx, val_idx  # indices into train.tsv's rows

    def full_batches(self) -> list:
        """The whole training split in its stored order, in batches of the training batch size: what MeZO-SVRG's
        anchor steps evaluate (n/b forwards each)."""
        return list(zip(self.train_set.x.split(self.batch_size), self.train_set.y.split(self.batch_size)))

    def train_dataloader(self):
        return ResumableLoader(self.train_set, self.batch_size, self.seed, collate_fn=as_batch,
                               trained=lightning_progress(self))

    def val_dataloader(self):
        return DataLoader(self.val_set, self.eval_batch_size, collate_fn=as_batch)

    def test_dataloader(self):
        return DataLoader(self.test_set, self.eval_batch_size, collate_fn=as_batch)
