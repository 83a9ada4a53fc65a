"""P-mlp: a LayerNorm MLP pre-trained on digits 0–4, fine-tuned on all ten (sklearn's digits; docs/algorithms.md §6).

The 1,797 bundled 8×8 images (``sklearn.datasets.load_digits``: shipped with the package, nothing downloaded),
pixels / 16, are split by a permutation from ``seed`` into 1,437 training, 180 validation and 180 test images
(80/10/10): the validation split picks checkpoints, the test split is never looked at during a run.

Pre-training runs at construction (Adam, ``pretrain_steps`` = 200 mini-batches of 64 from the training images
of digits 0–4: small next to any run) rather than being cached under the run root: it is a function of the
seed alone, so no cache can go stale or be missing, and every rule starts from the same weights. It runs in
float64 on one thread (a thread count must not change the rounding) from the task's own generator (the global
RNG is untouched), and is then rounded to the task's dtype: float32 and float64 tasks start from the same point.
"""

from __future__ import annotations

import torch
from torch import nn

from zolab.tasks.base import check_seed
from zolab.tasks.proxies import ProxyTask, check_dtype, check_int

HEADS = ("pretrained", "random")
SIZES = (1437, 180, 180)  # train, val, test: 80/10/10 of 1,797


def load_digits_split(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: (images (n, 64) float64 in [0, 1], labels (n,) int64)} for "train", "val", "test"."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    images, labels = load_digits(return_X_y=True)
    x, y = torch.tensor(images / 16.0, dtype=torch.float64), torch.tensor(labels, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    parts = torch.split(order, SIZES)
    return {name: (x[idx], y[idx]) for name, idx in zip(("train", "val", "test"), parts)}


class DigitsFineTune(ProxyTask):
    """P-mlp: 64 → 128 → 128 → 10, each hidden layer Linear, LayerNorm, GELU (smooth, so finite differences
    converge to the directional derivative); 26,634 numbers, all trained. Cross-entropy; metrics loss and acc.

    Start: weights N(0, 1/fan_in), biases 0, LayerNorm (1, 0), then pre-training on digits 0–4 (module
    docstring). ``head="pretrained"`` keeps the pre-trained head (validation accuracy starts near the share of
    digits 0–4, about 50%); ``head="random"`` draws a fresh head (weights N(0, 1/128), bias 0) on the
    pre-trained body: MeZO-SVRG's no-prompt setting. ``pretrain_steps=0``: no pre-training at all.

    Args: head ("pretrained"), pretrain_steps (200), seed (split, start and pre-training order: 0), dtype.
    """

    default_batch_size = 32

    def __init__(self, head: str = "pretrained", pretrain_steps: int = 200, seed: int = 0, dtype: str = "float32"):
        super().__init__()
        name = type(self).__name__
        if head not in HEADS:
            raise ValueError(f"{name}: head={head!r}; allowed: {', '.join(map(repr, HEADS))}")
        check_int(name, "pretrain_steps", pretrain_steps, 0)
        check_seed("seed", seed)
        dt = check_dtype(name, dtype)
        data = load_digits_split(seed)
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own initialisation draws from the global RNG
            net = nn.Sequential(nn.Linear(64, 128), nn.LayerNorm(128), nn.GELU(), nn.Linear(128, 128),
                                nn.LayerNorm(128), nn.GELU(), nn.Linear(128, 10)).double()
        with torch.no_grad():
            for layer in net[0], net[3], net[6]:
                _initialise(layer, gen)
        x, y = data["train"]
        first = y < 5
        _pretrain(net, x[first], y[first], pretrain_steps, gen)
        if head == "random":
            with torch.no_grad():
                _initialise(net[6], gen)
        self.net = net.to(dt)
        for split, (inputs, labels) in data.items():
            self.register_buffer(f"{split}_x", inputs.to(dt), persistent=False)
            self.register_buffer(f"{split}_y", labels, persistent=False)

    @property
    def head(self) -> nn.Linear:
        return self.net[6]

    def _splits(self):
        return {s: (getattr(self, f"{s}_x"), getattr(self, f"{s}_y")) for s in ("train", "val", "test")}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.head.weight.dtype))

    def loss(self, batch) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.logits(x), y)

    def metrics(self, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self.logits(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float().mean()}


def _initialise(layer: nn.Linear, gen: torch.Generator) -> None:
    layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64) / layer.in_features**0.5)
    layer.bias.zero_()


def _pretrain(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, gen: torch.Generator,
              batch: int = 64, lr: float = 3e-3) -> None:
    """Adam on (x, y) for ``steps`` mini-batches drawn without replacement epoch by epoch from ``gen``, in
    float64 on one thread; leaves no ``.grad``."""
    threads = torch.get_num_threads()
    params = list(net.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    order = torch.empty(0, dtype=torch.int64)
    try:
        torch.set_num_threads(1)
        with torch.enable_grad():
            for _ in range(steps):
                if len(order) < batch:
                    order = torch.cat([order, torch.randperm(len(x), generator=gen)])
                idx, order = order[:batch], order[batch:]
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                for p, g in zip(params, torch.autograd.grad(loss, params)):
                    p.grad = g
                opt.step()
    finally:
        torch.set_num_threads(threads)
        for p in params:
            p.grad = None
