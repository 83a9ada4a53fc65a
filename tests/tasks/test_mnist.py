"""MNIST IDX loading, the CNN and its checkpoint (docs/algorithms.md §6)."""

import gzip
import struct
from pathlib import Path

import lightning as L
import pytest
import torch

from zolab.tasks.mnist import MNISTCNN, MNISTClassifier, MNISTDataModule, load_cnn, load_mnist, read_idx

MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


def _write_idx(path, array: torch.Tensor):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + bytes(array.flatten().tolist())))


def test_read_idx_round_trip_and_errors(tmp_path):
    a = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x.gz", a)
    assert torch.equal(read_idx(tmp_path / "x.gz"), a)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path, "test")
    with pytest.raises(ValueError, match="split='val'"):
        load_mnist(tmp_path, "val")


@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data not beside the repo")
def test_test_split_shape_range_and_label_counts():
    images, labels = load_mnist(MNIST, "test")
    assert images.shape == (10000, 1, 28, 28) and images.min() == 0 and images.max() == 1
    # the counts SOURCE.md lists for the test labels
    assert torch.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_cnn_layout_and_log_softmax():
    net = MNISTCNN().eval()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
                     "fc2.weight", "fc2.bias"]
    assert net.fc1.in_features == 9216 and net.fc1.out_features == 128
    out = net(torch.rand(3, 784))  # flat pixels work too
    assert out.shape == (3, 10) and torch.allclose(out.exp().sum(1), torch.ones(3))


@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data not beside the repo")
@pytest.mark.slow
def test_a_few_first_order_steps_learn_and_save_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = MNISTClassifier(save_to=str(tmp_path / "cnn.pt"))
    data = MNISTDataModule(str(MNIST), batch_size=64)
    trainer = L.Trainer(max_steps=20, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, data)
    net = load_cnn(tmp_path / "cnn.pt")  # weights_only=True inside
    x, y = next(iter(data.test_dataloader()))
    with torch.no_grad():
        acc = (net(x).argmax(1) == y).float().mean()
    assert acc > 0.5  # 20 Adadelta steps already beat chance (0.1) by far
