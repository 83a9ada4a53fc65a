"""MNIST: the IDX loader, the CNN of the black-box attack (docs/algorithms.md §6) and its first-order training.

The CNN is conv32–conv64–maxpool–dropout–fc128–fc10 with log-softmax outputs (PyTorch's MNIST example, the
architecture R-AdaZO's attack reuses from Shu et al., 2023; App. B.2); inputs in [0, 1] are normalised
inside the network by (x − 0.1307)/0.3081, so an attacker works in pixel space.

Train it (first order, Lightning, a few minutes on a CPU) and save the weights for the attack::

    python -m zolab.tasks.mnist --config experiments/mnist/train_cnn.yaml

which fits, reports ``test/acc`` on the 10,000 test images and writes ``model.save_to`` (a plain
``state_dict``, loadable with ``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset, random_split
from torchmetrics.classification import MulticlassAccuracy

from zolab.tasks.base import ResumableLoader, as_batch, check_seed, lightning_progress

SPLITS = {"train": "train", "test": "t10k"}
_DTYPES = {0x08: torch.uint8}


def read_idx(path: str | Path) -> torch.Tensor:
    """An IDX file (``.gz`` or raw) as a uint8 tensor of its declared shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MNIST: no file {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a complete gzip file ({type(err).__name__}: {err})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions declared, {len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != torch.Size(shape).numel():
        raise ValueError(f"{path}: header declares shape {shape}, body holds {len(body)} bytes")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def load_mnist(data_dir: str | Path, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64) of the ``train`` or ``test`` split."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; allowed: {list(SPLITS)}")
    folder, prefix = Path(data_dir), SPLITS[split]
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: {images.shape[0]} {split} images but {labels.shape[0]} labels")
    return images.unsqueeze(1).float().div_(255), labels.long()


class MNISTCNN(nn.Module):
    """conv(1→32, 3×3)–ReLU–conv(32→64, 3×3)–ReLU–maxpool 2–dropout 0.25–fc(9216→128)–ReLU–dropout 0.5–
    fc(128→10), log-softmax. Input: images in [0, 1], shape (N, 1, 28, 28) or (N, 784)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.reshape(-1, 1, 28, 28) - 0.1307) / 0.3081
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(self.dropout1(x).flatten(1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


def load_cnn(path: str | Path) -> MNISTCNN:
    """The trained CNN from a ``state_dict`` file, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no CNN checkpoint {path}; train one with `python -m zolab.tasks.mnist --config "
            "experiments/mnist/train_cnn.yaml`"
        )
    net = MNISTCNN()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


class BatchedSubset(Subset):
    """Rows of a ``TensorDataset`` fetched a batch at a time with ``collate_fn=as_batch``: one indexing a batch, the
    same numbers as stacking the rows one by one, which cost more than a ZO step of T2's MLP."""

    def __getitems__(self, rows: list[int]):
        index = torch.as_tensor([self.indices[i] for i in rows], dtype=torch.long)
        return [t[index] for t in self.dataset.tensors]


class MNISTDataModule(L.LightningDataModule):
    """Args: data_dir (the four ``*-ubyte.gz`` files), batch_size, val_size (held out of the 60,000 training
    images by a permutation seeded with ``split_seed``), seed (the training batches' order), eval_batch_size,
    split_seed (None: ``seed``, as before it existed; fix it to keep one validation split across seeds).
    Test: the 10,000 test images."""

    def __init__(self, data_dir: str, batch_size: int = 64, val_size: int = 5000, seed: int = 0,
                 eval_batch_size: int = 1000, split_seed: int | None = None):
        super().__init__()
        check_seed("seed", seed)
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                            ("val_size", val_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
        self.data_dir, self.batch_size, self.val_size, self.seed = data_dir, batch_size, val_size, seed
        self.split_seed = seed if split_seed is None else check_seed("split_seed", split_seed)
        self.eval_batch_size = eval_batch_size

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "test_set"):
            return
        train = TensorDataset(*load_mnist(self.data_dir, "train"))
        if self.val_size >= len(train):
            raise ValueError(f"val_size={self.val_size} leaves no training image of the {len(train)}; allowed: "
                             f"1 to {len(train) - 1}")
        gen = torch.Generator().manual_seed(self.split_seed)
        train_set, self.val_set = random_split(train, [len(train) - self.val_size, self.val_size], gen)
        self.train_set = BatchedSubset(train, train_set.indices)
        self.test_set = TensorDataset(*load_mnist(self.data_dir, "test"))

    def full_batches(self) -> list:
        """The whole training split in its fixed order, in batches of the training batch size: what MeZO-SVRG's
        anchor steps evaluate (n/b forwards each)."""
        images, labels = self.train_set.dataset.tensors
        index = torch.as_tensor(self.train_set.indices)
        return list(zip(images[index].split(self.batch_size), labels[index].split(self.batch_size)))

    def train_dataloader(self):  # resumable mid-epoch: a checkpoint holds the loader's position
        return ResumableLoader(self.train_set, self.batch_size, self.seed, collate_fn=as_batch,
                               trained=lightning_progress(self))

    def val_dataloader(self):
        return DataLoader(self.val_set, self.eval_batch_size)

    def test_dataloader(self):
        return DataLoader(self.test_set, self.eval_batch_size)


class MNISTClassifier(L.LightningModule):
    """First-order training of ``MNISTCNN`` (Adadelta, lr 1.0, γ = 0.7 per epoch: PyTorch's MNIST example).

    Args: lr, gamma, save_to (where ``on_fit_end`` writes the ``state_dict``; None: not saved).
    """

    def __init__(self, lr: float = 1.0, gamma: float = 0.7, save_to: str | None = "runs/mnist/cnn.pt"):
        super().__init__()
        self.save_hyperparameters()
        self.net = MNISTCNN()
        self.val_acc = MulticlassAccuracy(10, average="micro")
        self.test_acc = MulticlassAccuracy(10, average="micro")

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.nll_loss(self.net(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc(self.net(x), y)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self.net(x), y)
        self.log("test/acc", self.test_acc)

    def configure_optimizers(self):
        opt = torch.optim.Adadelta(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, self.hparams.gamma)}

    def on_fit_end(self):
        if self.hparams.save_to and self.trainer.is_global_zero:
            Path(self.hparams.save_to).parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.net.state_dict(), self.hparams.save_to)


def main(args=None):
    """Fit, test and save the CNN from a LightningCLI config (see the module docstring)."""
    from lightning.pytorch.cli import LightningCLI

    cli = LightningCLI(MNISTClassifier, MNISTDataModule, run=False, args=args,
                       save_config_kwargs={"overwrite": True})
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.trainer.test(cli.model, cli.datamodule)
    return cli


if __name__ == "__main__":
    main()
