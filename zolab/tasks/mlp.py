"""MLPClassifier: a small multilayer perceptron trained from scratch on (inputs, labels) tensor batches (testbeds).

The testbeds' model: T1 puts it on cached MiniLM sentence features (384 → 64 → 2, d = 24,770),
T2 on MNIST's pixels (784 → 32 → 10, d = 25,450). logits = ``logit_scale`` · MLP((x − ``input_shift``) /
``input_scale``) with x flattened per example; loss = cross-entropy; accuracy with torchmetrics. The layers start
as PyTorch's ``nn.Linear`` does (Kaiming-uniform weights, uniform biases), drawn from a generator seeded by
``seed``: the start depends on ``seed`` alone, not on the global RNG.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from zolab.tasks.base import Task, check_seed

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
    return value


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r}; allowed: a finite number > 0")
    return float(value)


class MLPClassifier(Task):
    """Args: in_features (numbers per example, after flattening), num_classes (>= 2), hidden (the hidden layers'
    widths; [] is a linear model), activation (``"relu"``, ``"tanh"``, ``"gelu"``), logit_scale (> 0),
    input_shift, input_scale (> 0; e.g. MNIST's 0.1307, 0.3081), seed (the initialisation).

    A batch is ``(x, y)``: x of shape (N, ...) with ``in_features`` numbers per row, y (N,) integer labels."""

    def __init__(self, in_features: int, num_classes: int, hidden: list[int] | tuple[int, ...] = (64,),
                 activation: str = "relu", logit_scale: float = 1.0, input_shift: float = 0.0,
                 input_scale: float = 1.0, seed: int = 0):
        super().__init__()
        _positive_int("in_features", in_features)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes={num_classes!r}; allowed: an integer >= 2")
        if isinstance(hidden, str | int) or not isinstance(hidden, list | tuple):
            raise ValueError(f"hidden={hidden!r}; allowed: a list of widths (integers >= 1), [] for a linear model")
        for i, width in enumerate(hidden):
            _positive_int(f"hidden[{i}]", width)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; allowed: {list(ACTIVATIONS)}")
        self.logit_scale = _positive_float("logit_scale", logit_scale)
        self.input_scale = _positive_float("input_scale", input_scale)
        if isinstance(input_shift, bool) or not isinstance(input_shift, int | float) or not math.isfinite(input_shift):
            raise ValueError(f"input_shift={input_shift!r}; allowed: a finite number")
        self.input_shift = float(input_shift)
        self.in_features, self.num_classes = in_features, num_classes
        widths = [in_features, *hidden, num_classes]
        layers: list[nn.Module] = []
        with torch.random.fork_rng(devices=[]):  # nn.Linear draws from the global RNG: seed it, then restore it
            torch.manual_seed(check_seed("seed", seed))
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
                layers.append(nn.Linear(a, b))
                if i < len(widths) - 2:
                    layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"MLPClassifier(in_features={self.in_features}) got inputs of shape "
                             f"{tuple(x.shape)}: {x.shape[1]} numbers per example")
        x = (x.to(self.net[0].weight.dtype) - self.input_shift) / self.input_scale
        return self.logit_scale * self.net(x)

    def _split(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, list | tuple) or len(batch) != 2 or not all(
                isinstance(t, torch.Tensor) for t in batch):
            raise TypeError(f"MLPClassifier expects a batch (inputs, labels) of two tensors, got "
                            f"{type(batch).__name__}")
        return batch[0], batch[1]

    def loss(self, batch) -> torch.Tensor:
        x, y = self._split(batch)
        return F.cross_entropy(self.logits(x), y)

    def metrics(self, batch) -> dict[str, torch.Tensor]:
        x, y = self._split(batch)
        logits = self.logits(x)
        acc = multiclass_accuracy(logits, y, num_classes=self.num_classes, average="micro")
        return {"loss": F.cross_entropy(logits, y), "acc": acc}

    def batch_size(self, batch) -> int:
        return len(self._split(batch)[1])
